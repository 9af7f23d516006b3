//! The MetaPortrait generator: configuration, weights, the networks and their executors.
//!
//! Owns the one architecture definition (`net`, written against `ops::Ops`), the configuration schema (`config`),
//! the weight store and its validation (`weights`), safe import of official PyTorch checkpoints (`checkpoint`),
//! and the two executors: burn (`burn_exec`, differentiable) and ONNX Runtime (`onnx`, fast inference).
//! Receives conditioning tensors (`GeneratorInputs`); emits the warped image, flow, occlusion and the refined frame.

pub mod config;
pub mod exec;
pub mod generator;
pub mod import;
pub mod inputs;
pub mod net;
pub mod ops;
pub mod preview;
pub mod reparam;
pub mod runner;
pub mod weights;

#[cfg(test)]
pub(crate) mod testing;

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading or running the generator.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid model config {origin}: {reason}")]
    Config { origin: String, reason: String },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("weights do not match the model config:\n{}", .problems.join("\n"))]
    WeightMismatch { problems: Vec<String> },
    #[error("weight `{0}` is missing")]
    MissingWeight(String),
    #[error("input `{0}` is missing")]
    MissingInput(String),
    #[error("input `{name}` has shape {actual:?}, expected {expected:?}")]
    InputShape { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    #[error("executor `{executor}` failed: {reason}")]
    Executor { executor: &'static str, reason: String },
    /// The cause is the whole message (ONNX Runtime's errors already say `executor \`ort\``).
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}
