//! The executors of the one architecture definition, side by side: each implements `model::ops::Ops`.
//!
//! Owns `burn` (burn tensors with autodiff: the differentiable reference, personalization and training), `onnx`
//! (records the forward as an ONNX graph that `runtime::ort` runs: fast inference) and `shape` (shapes only: derives
//! the state-dict listing every weight file is validated against). Receives the networks' op calls; emits each
//! executor's own values.

pub mod burn;
pub mod onnx;
pub mod shape;

use std::str::FromStr;

/// Which executor runs the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutorKind {
    /// ONNX Runtime on a graph emitted from the architecture definition (the fast path).
    #[default]
    Ort,
    /// burn tensors (differentiable; used for personalization and training).
    Burn,
}

/// An executor name that is not `ort` or `burn`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor `{0}` (expected `ort` or `burn`)")]
pub struct ExecutorParseError(pub String);

impl FromStr for ExecutorKind {
    type Err = ExecutorParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ort" => Ok(Self::Ort),
            "burn" => Ok(Self::Burn),
            other => Err(ExecutorParseError(other.to_owned())),
        }
    }
}

impl ExecutorKind {
    /// The name `from_str` accepts (`ort` or `burn`), as the CLI and reports spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ort => "ort",
            Self::Burn => "burn",
        }
    }
}
