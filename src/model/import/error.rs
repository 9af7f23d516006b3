//! What can go wrong reading a PyTorch checkpoint: the container, the pickle, the tensors.

use std::path::PathBuf;

/// Why a checkpoint cannot be read (nothing in it is ever executed).
#[derive(Debug, thiserror::Error)]
pub enum TorchCheckpointError {
    /// The checkpoint file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A pre-1.6 checkpoint written by `torch.save` without the zip container; re-saving it with a recent torch
    /// fixes it.
    #[error(
        "this is a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported: re-save it with a recent torch"
    )]
    LegacyFormat,
    /// The file is not a readable PyTorch zip archive (no zip header, broken or truncated entries, no `data.pkl`);
    /// the text says which.
    #[error("not a PyTorch zip checkpoint: {0}")]
    Archive(String),
    #[error("pickle opcode 0x{opcode:02x} at byte {offset} is not allowed in a checkpoint")]
    /// The pickle uses an opcode outside the safe subset this reader interprets.
    UnknownOpcode {
        /// The opcode byte.
        opcode: u8,
        /// Its position in `data.pkl`, bytes.
        offset: usize,
    },
    /// The pickle names a Python global (`module.name`) that is not a known tensor or container constructor;
    /// loading it could run code, so the file is refused.
    #[error("checkpoint references `{0}`: refusing to load (only tensors, dicts and plain values are allowed)")]
    ForbiddenGlobal(String),
    #[error("malformed pickle at byte {offset}: {reason}")]
    /// The pickle is structurally broken (stack underflow, truncated argument, an operation on the wrong type).
    Malformed {
        /// Position of the offending opcode in `data.pkl`, bytes.
        offset: usize,
        /// What was wrong there.
        reason: String,
    },
    #[error("tensor `{name}`: {reason}")]
    /// A tensor's view does not fit its storage.
    Tensor {
        /// The tensor's state-dict key.
        name: String,
        /// How the layout is inconsistent.
        reason: TensorLayoutError,
    },
    /// No dict of tensors was found where the state dict was looked for; the text lists the keys tried and the
    /// checkpoint's top-level keys.
    #[error("no state dict found: {0}")]
    NoStateDict(String),
    #[error("not a plain dict of names to integers or strings: {0}")]
    /// A pickle that should be a plain dict of names to integers or strings holds something else.
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
