//! Training machinery shared by personalization and (meta-)training: optimizers, training steps, the dataset on
//! disk (`dataset`) and the meta-training run with checkpoints (`meta`).
//!
//! Owns optimizer state, on the host (`adam`) or on the executor's device for a run of steps (`resident`). Receives
//! parameters and their gradients by official key; emits updated parameters and per-step statistics.

pub mod adam;
pub mod checkpoint;
pub mod dataset;
pub mod discriminator;
pub mod loss;
pub mod meta;
pub mod reduce;
pub mod reptile;
pub mod resident;
pub mod step;
pub mod supervised;
pub mod tsr;
pub mod vgg;
