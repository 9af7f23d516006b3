//! MetaPortrait: real-time identity-preserving talking-head generation.
//!
//! The crate is organised by pipeline stage (see `../shared/docs/architecture.md`); the binary in `main.rs` only
//! wires command-line arguments to these modules.

#![warn(missing_docs)]

pub mod app;
pub mod atomic_file;
pub mod capture;
pub mod checksum;
pub mod clip;
pub mod face;
pub mod home;
pub mod model;
pub mod personalize;
pub mod pipeline;
pub mod reconstruct;
pub mod record;
pub mod rng;
pub mod runtime;
pub mod tensor;
pub mod train;
pub mod tsr;
pub mod wgpu_kit;
