//! Personalization: turning a short clip of a person into a selectable identity, and the identity library.
//!
//! Owns the identity store format (`store`), clip preparation (`clip`: crops, landmarks, source and held-out
//! frames) and the fine-tuning job (`job`: K Adam steps from the base model, report). Receives a clip, the base
//! model and an identity embedding; emits identities the pipeline and the panel can select.

pub mod from_clip;
pub mod job;
pub mod store;
