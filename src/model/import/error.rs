//! What can go wrong reading a PyTorch checkpoint: the container, the pickle, the tensors.

use std::path::PathBuf;

/// Why a checkpoint cannot be read (nothing in it is ever executed).
#[derive(Debug, thiserror::Error)]
pub enum TorchCheckpointError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "this is a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported: re-save it with a recent torch"
    )]
    LegacyFormat,
    #[error("not a PyTorch zip checkpoint: {0}")]
    Archive(String),
    #[error("pickle opcode 0x{opcode:02x} at byte {offset} is not allowed in a checkpoint")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("checkpoint references `{0}`: refusing to load (only tensors, dicts and plain values are allowed)")]
    ForbiddenGlobal(String),
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: TensorLayoutError },
    #[error("no state dict found: {0}")]
    NoStateDict(String),
    #[error("not a plain dict of names to integers or strings: {0}")]
    NotPlainDict(String),
}

/// Why a tensor view cannot be read out of its storage.
#[derive(Debug, thiserror::Error)]
pub enum TensorLayoutError {
    /// The element count overflows.
    #[error("tensor size overflows")]
    SizeOverflow,
    /// The last element's position overflows.
    #[error("tensor extent overflows")]
    ExtentOverflow,
    /// The view reaches past its storage.
    #[error("view reaches element {extent} but its storage `{storage}` holds {storage_len}")]
    OutsideStorage {
        /// Highest element the view reads.
        extent: usize,
        /// The storage's record name.
        storage: String,
        /// Elements in the storage.
        storage_len: usize,
    },
    /// Shape and data disagree.
    #[error(transparent)]
    Shape(#[from] crate::tensor::ShapeMismatch),
}
