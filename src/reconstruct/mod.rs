//! The official release's inference, reproduced: `base_model/inference.py` run on the official preprocessed data.
//!
//! Owns the three steps of `metaportrait reconstruct`: reading the official inference layout (`layout`), building the
//! generator inputs exactly as the official `PersonalDataset` builds them — the 669-point topology whatever the
//! model's config, since the data has those points (`inputs`) — and running every frame through the generator into
//! `output_256/` plus `out_256.mp4`, staged and renamed into place (`job`). Receives a data folder, a generator
//! model, the official connectivity file and an output folder; emits the pictures, the video, per-frame fidelity
//! against the ground-truth frames, and one-line errors that name the offending file.

pub mod inputs;
pub mod job;
pub mod layout;

use std::path::PathBuf;

/// Why the official data could not be reconstructed. Every data error names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ReconstructError {
    #[error("{path}: {what} is missing")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("{path}: {actual} landmarks, but the official data has {expected} per frame")]
    LandmarkCount { path: PathBuf, expected: usize, actual: usize },
    #[error("{path}: an identity vector of {actual} values, but this model's id_dim is {expected}")]
    IdDim { path: PathBuf, expected: usize, actual: usize },
    #[error("{path}: no frames (expected <n>/imgs/*.png beside src_map_dict.pkl)")]
    NoFrames { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} already holds {entry}, which reconstruct did not write: choose an empty or new output folder")]
    ForeignOutput { path: PathBuf, entry: String },
    #[error(transparent)]
    Topology(#[from] crate::face::topology::TopologyError),
    #[error(transparent)]
    Condition(#[from] crate::face::condition::ConditionError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    #[error("the generator returned a prediction of shape {0:?}, not [1, 3, S, S]")]
    Prediction(Vec<usize>),
    #[error("scoring frame {frame}: {reason}")]
    Score { frame: String, reason: String },
    #[error("cancelled")]
    Cancelled,
}

impl ReconstructError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
