//! Training machinery shared by personalization and (meta-)training: optimizers and training steps.
//!
//! Owns optimizer state. Receives parameters and their gradients by official key (host tensors, as the burn
//! executor returns them); emits updated parameters and per-step statistics.

pub mod adam;
pub mod loss;
pub mod reptile;
pub mod step;
pub mod vgg;
