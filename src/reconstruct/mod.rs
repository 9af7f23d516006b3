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
    /// A file or folder the layout needs is not there.
    #[error("{path}: {what} is missing")]
    Missing {
        /// Where it should be.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A file is there but unusable.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A landmark file without the 669 official points.
    #[error("{path}: {actual} landmarks, but the official data has {expected} per frame")]
    LandmarkCount {
        /// The file.
        path: PathBuf,
        /// 669.
        expected: usize,
        /// Its count.
        actual: usize,
    },
    /// An identity vector whose size is not the model's id_dim.
    #[error("{path}: an identity vector of {actual} values, but this model's id_dim is {expected}")]
    IdDim {
        /// The file.
        path: PathBuf,
        /// The model's id_dim.
        expected: usize,
        /// The vector's length.
        actual: usize,
    },
    /// No frame in the data folder.
    #[error("{path}: no frames (expected <n>/imgs/*.png beside src_map_dict.pkl)")]
    NoFrames {
        /// The data folder.
        path: PathBuf,
    },
    /// A read or write failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The output folder holds something this command would replace but did not write.
    #[error("{path} already holds {entry}, which reconstruct did not write: choose an empty or new output folder")]
    ForeignOutput {
        /// The output folder.
        path: PathBuf,
        /// The foreign entry.
        entry: String,
    },
    /// The connectivity file is unusable.
    #[error(transparent)]
    Topology(#[from] crate::face::topology::TopologyError),
    /// The conditioning could not be drawn.
    #[error(transparent)]
    Condition(#[from] crate::face::condition::ConditionError),
    /// The generator failed.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The video could not be written.
    #[error(transparent)]
    Record(#[from] crate::record::RecordError),
    /// The generator's output has an unexpected shape.
    #[error("the generator returned a prediction of shape {0:?}, not [1, 3, S, S]")]
    Prediction(Vec<usize>),
    /// The scorer failed on a frame.
    #[error("scoring frame {frame}: {reason}")]
    Score {
        /// The frame's file name.
        frame: String,
        /// The scorer's reason.
        reason: String,
    },
}

impl ReconstructError {
    fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
