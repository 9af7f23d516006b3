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
pub mod precision_check;
pub mod preview;
pub mod reparam;
pub mod runner;
pub mod sn_settle;
pub mod weights;

#[cfg(test)]
pub(crate) mod testing;

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading or running the generator.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config or weight file could not be read, or a weight file could not be written.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A model config is not valid JSON in its schema, or asks for something the networks cannot do.
    #[error("invalid model config {origin}: {reason}")]
    Config {
        /// Where the config came from: a path, a config's name, or a label for inline text.
        origin: String,
        /// The parse or validation failure.
        reason: String,
    },
    /// A weight file is not a readable safetensors file (bad header, truncated data, unsupported dtype).
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors {
        /// The weight file.
        path: PathBuf,
        /// What the safetensors reader reported.
        reason: String,
    },
    /// A weight store does not fit the architecture the config describes: missing, unexpected or misshaped keys.
    #[error("weights do not match the model config:\n{}", .problems.join("\n"))]
    WeightMismatch {
        /// One line per offending key, all of them at once.
        problems: Vec<String>,
    },
    /// The network asked for a parameter (by official key) that the weight store does not hold.
    #[error("weight `{0}` is missing")]
    MissingWeight(String),
    /// A named network input was not supplied.
    #[error("input `{0}` is missing")]
    MissingInput(String),
    #[error("input `{name}` has shape {actual:?}, expected {expected:?}")]
    /// A network input has the wrong shape for the configured model.
    InputShape {
        /// The input's name.
        name: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape supplied.
        actual: Vec<usize>,
    },
    #[error("tensor `{name}`: {reason}")]
    /// A named tensor (a weight, input, output or graph value) is unusable: wrong shape or rank, inconsistent data.
    Tensor {
        /// The tensor's key or name (`<onnx graph>`, `<file>` where no single tensor is at fault).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    #[error("executor `{executor}` failed: {reason}")]
    /// An executor could not run the network or returned nothing usable (no session or output, a backward pass it
    /// cannot take, a failed readback).
    Executor {
        /// Which executor or engine failed (`ort`, `burn`, …).
        executor: &'static str,
        /// What failed.
        reason: String,
    },
    /// The cause is the whole message (ONNX Runtime's errors already say `executor \`ort\``).
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}
