//! Training checkpoints: weights, optimizer moments and a JSON state per step, written so a crash never leaves a
//! checkpoint half-written.
//!
//! Owns the run-folder layout: `ckpt-<step>/{weights,optimizer}.safetensors + state.json`, each staged in a hidden
//! folder and renamed into place, then `latest` rewritten atomically to name it; the previous checkpoint is kept,
//! older ones are removed. Receives weights, optimizer state and any serde state; emits the latest checkpoint back.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::atomic_file::write_atomic;
use crate::model::ModelError;
use crate::model::weights::WeightStore;

const LATEST_FILE: &str = "latest";
const STATE_FILE: &str = "state.json";
const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CHECKPOINT_PREFIX: &str = "ckpt-";
/// Checkpoints kept besides the latest.
const KEEP_PREVIOUS: usize = 1;

/// Why a checkpoint could not be written or read; the previous latest checkpoint stays usable.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or folder of the run could not be read, written, renamed or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The checkpoint's `state.json` is missing or does not parse as the run's state (or the state cannot be
    /// serialized).
    #[error("checkpoint {path}: {reason}")]
    Invalid {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors file of the checkpoint could not be written or read.
    #[error(transparent)]
    Model(#[from] ModelError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

/// A loaded checkpoint.
pub struct Checkpoint<S> {
    /// The run's own state (`state.json`): step, schedule, RNG seed, whatever the trainer saved.
    pub state: S,
    /// Model weights by official key (`weights.safetensors`).
    pub weights: WeightStore,
    /// Optimizer moments (`optimizer.safetensors`), as `Adam::state` writes them.
    pub optimizer: WeightStore,
}

/// The latest checkpoint of `run_dir`, if it has one.
pub fn load_latest<S: DeserializeOwned>(run_dir: &Path) -> Result<Option<Checkpoint<S>>, CheckpointError> {
    let latest = run_dir.join(LATEST_FILE);
    let name = match std::fs::read_to_string(&latest) {
        Ok(name) => name.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CheckpointError::Io { path: latest, source: e }),
    };
    let dir = run_dir.join(&name);
    let bad = |reason: String| CheckpointError::Invalid { path: dir.clone(), reason };
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| bad(e.to_string()))?;
    let state = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let weights = WeightStore::load_safetensors(&dir.join(WEIGHTS_FILE))?;
    let optimizer = WeightStore::load_safetensors(&dir.join(OPTIMIZER_FILE))?;
    Ok(Some(Checkpoint { state, weights, optimizer }))
}

/// Writes the checkpoint of `step` and makes it the latest; returns its folder.
pub fn save<S: Serialize>(
    run_dir: &Path,
    step: u64,
    state: &S,
    weights: &WeightStore,
    optimizer: &WeightStore,
) -> Result<PathBuf, CheckpointError> {
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    let name = format!("{CHECKPOINT_PREFIX}{step:08}");
    let dir = run_dir.join(&name);
    let staging = run_dir.join(format!(".staging-{name}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    weights.save_safetensors(&staging.join(WEIGHTS_FILE))?;
    optimizer.save_safetensors(&staging.join(OPTIMIZER_FILE))?;
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| CheckpointError::Invalid { path: staging.clone(), reason: e.to_string() })?;
    write_atomic(&staging.join(STATE_FILE), text.as_bytes()).map_err(io(&staging))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    let latest = run_dir.join(LATEST_FILE);
    write_atomic(&latest, name.as_bytes()).map_err(io(&latest))?;
    // Older checkpoints beyond the kept ones go (the latest is already committed).
    let mut old: Vec<PathBuf> = std::fs::read_dir(run_dir)
        .map_err(io(run_dir))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(CHECKPOINT_PREFIX)) && *p != dir)
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(KEEP_PREVIOUS);
    for path in old.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
    Ok(dir)
}
