//! Meta-training (`train meta`): Reptile over the dataset's identities, with checkpoints and resume.
//!
//! Owns the outer loop: per outer step, draw `tasks_per_step` identities (one clip each, a support set of its frames),
//! run `reptile::reptile_step` (K inner Adam steps per task from a copy of θ; outer Adam lr 2e-5, betas (0.5, 0.999),
//! clip 0.3 on the mean of θ − θ′; non-finite tasks skipped), log, and checkpoint. Receives the initial model, a
//! `Dataset` and a run folder; emits checkpoints there — `ckpt-<step>/{weights,optimizer}.safetensors + state.json`,
//! each staged and renamed, then `latest` rewritten atomically — so a killed run resumes from its last checkpoint.
//! The draw of step s depends only on (seed, s), so a resumed run continues exactly as the uninterrupted one would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::adam::{Adam, AdamConfig};
use super::dataset::{ClipRef, Dataset, DatasetError};
use super::reptile::{InnerLoop, LoopError, MetaReport, outer_adam_config, reptile_step};
use super::step::{Objective, TrainSample};
use crate::model::ModelError;
use crate::model::engine::GeneratorModel;
use crate::model::inputs::InputBuilder;
use crate::model::weights::{WeightStore, write_atomic};
use crate::personalize::clip::ClipFrames;
use crate::personalize::job::{PersonalizeError, samples};
use crate::rng::SplitMix64;

const LATEST_FILE: &str = "latest";
const STATE_FILE: &str = "state.json";
const WEIGHTS_FILE: &str = "weights.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const CHECKPOINT_PREFIX: &str = "ckpt-";
/// Checkpoints kept besides the latest.
const KEEP_PREVIOUS: usize = 1;
const STEP_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Samples(#[from] PersonalizeError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
}

/// One outer step as logged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub tasks_used: usize,
    pub tasks_skipped: usize,
    pub inner_loss_first: f64,
    pub inner_loss_last: f64,
}

/// `state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub stage: String,
    pub step: u64,
    pub seed: u64,
    /// The architecture, so a run cannot resume with another one.
    pub config: serde_json::Value,
    pub log: Vec<StepLog>,
}

/// Settings of a meta-training run.
pub struct MetaTraining<'a> {
    pub dataset: &'a Dataset,
    pub run_dir: &'a Path,
    /// Outer steps to reach (a resumed run continues up to here).
    pub outer_steps: u64,
    pub tasks_per_step: usize,
    pub inner_steps: usize,
    pub inner_adam: AdamConfig,
    /// Frames per support set (drawn from the clip, source excluded).
    pub support_frames: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub objective: Objective<'a>,
    pub device: &'a burn::tensor::Device,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// The latest checkpoint of a run folder, if any: its state, weights and optimizer.
pub fn load_latest(run_dir: &Path) -> Result<Option<(RunState, WeightStore, WeightStore)>, TrainError> {
    let latest = run_dir.join(LATEST_FILE);
    let name = match std::fs::read_to_string(&latest) {
        Ok(name) => name.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::Io { path: latest, source: e }),
    };
    let dir = run_dir.join(&name);
    let bad = |reason: String| TrainError::Checkpoint { path: dir.clone(), reason };
    let text = std::fs::read_to_string(dir.join(STATE_FILE)).map_err(|e| bad(e.to_string()))?;
    let state: RunState = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let weights = WeightStore::load_safetensors(&dir.join(WEIGHTS_FILE))?;
    let optimizer = WeightStore::load_safetensors(&dir.join(OPTIMIZER_FILE))?;
    Ok(Some((state, weights, optimizer)))
}

fn save_checkpoint(
    run_dir: &Path,
    state: &RunState,
    model: &GeneratorModel,
    outer: &Adam,
) -> Result<PathBuf, TrainError> {
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    let name = format!("{CHECKPOINT_PREFIX}{:08}", state.step);
    let dir = run_dir.join(&name);
    let staging = run_dir.join(format!(".staging-{name}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    model.weights.save_safetensors(&staging.join(WEIGHTS_FILE))?;
    outer.state().1.save_safetensors(&staging.join(OPTIMIZER_FILE))?;
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| TrainError::Checkpoint { path: staging.clone(), reason: e.to_string() })?;
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

/// The clips drawn for outer step `step` (depends only on the seed and the step).
pub fn draw_tasks(dataset: &Dataset, seed: u64, step: u64, tasks: usize) -> Vec<&ClipRef> {
    let mut rng = SplitMix64::new(seed ^ step.wrapping_mul(STEP_SEED_MIX));
    (0..tasks)
        .map(|_| {
            let (_, clips) = &dataset.identities[(rng.next_u64() % dataset.identities.len() as u64) as usize];
            &clips[(rng.next_u64() % clips.len() as u64) as usize]
        })
        .collect()
}

/// Runs (or resumes) meta-training until `outer_steps`; `progress` sees every finished outer step.
pub fn meta_train(
    mut model: GeneratorModel,
    run: &MetaTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
) -> Result<(GeneratorModel, RunState), TrainError> {
    let config_json = serde_json::to_value(&model.config)
        .map_err(|e| TrainError::Checkpoint { path: run.run_dir.into(), reason: e.to_string() })?;
    let (mut state, mut outer) = match load_latest(run.run_dir)? {
        Some((state, weights, optimizer)) => {
            if state.stage != "meta" || state.config != config_json {
                return Err(TrainError::Checkpoint {
                    path: run.run_dir.into(),
                    reason: "the run folder holds another stage or architecture; use a new --out".into(),
                });
            }
            model = GeneratorModel::new(model.config.clone(), weights)?;
            let outer = Adam::from_state(outer_adam_config(), state.step, &optimizer)
                .map_err(|reason| TrainError::Checkpoint { path: run.run_dir.into(), reason })?;
            tracing::info!(step = state.step, "meta-training: resuming");
            (state, outer)
        }
        None => (
            RunState { stage: "meta".into(), step: 0, seed: run.seed, config: config_json, log: Vec::new() },
            Adam::new(outer_adam_config()),
        ),
    };
    let mut builder = InputBuilder::new(&model.config).map_err(PersonalizeError::from)?;
    let mut cache: BTreeMap<PathBuf, (ClipFrames, Vec<f32>)> = BTreeMap::new();
    let inner =
        InnerLoop { steps: run.inner_steps, adam: &run.inner_adam, device: run.device, objective: run.objective };
    while state.step < run.outer_steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let step = state.step + 1;
        let mut tasks: Vec<Vec<TrainSample>> = Vec::new();
        for (k, clip_ref) in draw_tasks(run.dataset, state.seed, step, run.tasks_per_step).into_iter().enumerate() {
            if !cache.contains_key(&clip_ref.dir) {
                cache.insert(clip_ref.dir.clone(), Dataset::load_clip(clip_ref)?);
            }
            let Some((clip, id_vector)) = cache.get(&clip_ref.dir) else { continue };
            let mut rng = SplitMix64::new(state.seed ^ step.wrapping_mul(STEP_SEED_MIX) ^ (k as u64 + 1));
            let mut others: Vec<usize> = (0..clip.frames.len()).filter(|&i| i != clip.source).collect();
            // Partial Fisher–Yates: a deterministic random support set.
            let take = run.support_frames.clamp(1, others.len().max(1));
            for i in 0..take.min(others.len()) {
                let j = i + (rng.next_u64() % (others.len() - i) as u64) as usize;
                others.swap(i, j);
            }
            others.truncate(take);
            tasks.push(samples(&mut builder, clip, &others, id_vector)?);
        }
        let report: MetaReport = reptile_step(&mut model, &mut outer, &tasks, &inner, cancel)?;
        state.step = step;
        let log = StepLog {
            step,
            tasks_used: report.tasks_used,
            tasks_skipped: report.tasks_skipped,
            inner_loss_first: report.inner_loss_first,
            inner_loss_last: report.inner_loss_last,
        };
        tracing::info!(?log, "meta-training step");
        progress(&log);
        state.log.push(log);
        if step % run.checkpoint_every.max(1) == 0 || step == run.outer_steps {
            save_checkpoint(run.run_dir, &state, &model, &outer)?;
        }
    }
    Ok((model, state))
}
