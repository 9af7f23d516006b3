//! Personalization: turning a short clip of a person into a selectable identity, and the identity library.
//!
//! Owns the identity store format (`store`). Receives portraits, their landmarks, identity vectors and fine-tuned
//! weight deltas; emits identities the pipeline and the panel can select.

pub mod store;
