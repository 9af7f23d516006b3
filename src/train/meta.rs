//! Meta-training (`train meta`): Reptile over the dataset's identities, with checkpoints and resume.
//!
//! Owns the outer loop: per outer step, draw `tasks_per_step` identities (one clip each, a support set of its frames),
//! run `reptile::reptile_step` (K inner Adam steps per task from a copy of θ; outer Adam lr 2e-5, betas (0.5, 0.999),
//! clip 0.3 on the mean of θ − θ′; non-finite tasks skipped; θ and its moments stay on the device), log, and
//! checkpoint (`checkpoint`: staged, renamed, `latest` rewritten atomically). Receives the initial model, a `Dataset` and a run folder; emits checkpoints, so
//! a killed run resumes from its last checkpoint.
//! The draw of step s depends only on (seed, s), so a resumed run continues exactly as the uninterrupted one would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::adam::{Adam, AdamConfig};
use super::dataset::{ClipRef, Dataset, DatasetError};
use super::reduce::GradientReduce;
use super::reptile::{InnerLoop, InnerProgress, LoopError, MetaReport, outer_adam_config, reptile_step};
use super::resident::ResidentTrainer;
use super::step::Objective;
use crate::clip::frames::ClipFrames;
use crate::clip::sample::{SampleError, TrainSample, samples};
use crate::model::ModelError;
use crate::model::generator::GeneratorModel;
use crate::model::inputs::InputBuilder;
use crate::rng::SplitMix64;

const STEP_SEED_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Why a training run (any stage) stopped; its last checkpoint stays resumable.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The dataset or one of its clips could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A network failed (forward, backward, weights that do not fit the architecture).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An inner loop stopped (an empty support set, a cancel, a model error inside it).
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// A training sample could not be built from a clip.
    #[error(transparent)]
    Samples(#[from] SampleError),
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] super::checkpoint::CheckpointError),
    /// The run folder or one of the run's files cannot be used: a checkpoint of another stage or architecture, an
    /// unusable optimizer state, clips that do not fit the network, settings that contradict each other.
    #[error("{path}: {reason}")]
    Run {
        /// The run folder, clip folder or file concerned.
        path: PathBuf,
        /// What is wrong and, where there is one, the fix.
        reason: String,
    },
}

/// One training step as logged (`state.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    /// The step (1-based).
    pub step: u64,
    /// The step's loss (meta: the mean last inner-step loss).
    pub loss: f64,
    /// The Reptile details of a meta-training step (`None` in other stages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaLog>,
    /// The adversarial terms of a step with a discriminator (`None` without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adversarial: Option<AdversarialLog>,
}

/// The adversarial terms of a joint (`full`) step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdversarialLog {
    /// The generator's LSGAN term.
    pub generator_gan: f64,
    /// The generator's feature-matching term.
    pub feature_matching: f64,
    /// The discriminator's LSGAN loss before its update.
    pub discriminator: f64,
}

/// What a Reptile outer step did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaLog {
    /// Tasks whose inner loop counted towards the outer update.
    pub tasks_used: usize,
    /// Tasks dropped because their inner loop produced non-finite values.
    pub tasks_skipped: usize,
    /// Mean over used tasks of the first inner step's loss.
    pub inner_loss_first: f64,
    /// Mean over used tasks of the last inner step's loss (below the first when the inner loop learns).
    pub inner_loss_last: f64,
}

/// `state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// The training stage ("warp", "full", "meta", "tsr"); a folder only resumes a run of the same stage.
    pub stage: String,
    /// Steps completed.
    pub step: u64,
    /// Seed of the run's draws, kept from its start so a resumed run draws as the uninterrupted one.
    pub seed: u64,
    /// The architecture, so a run cannot resume with another one.
    pub config: serde_json::Value,
    /// Every completed step's log, in order.
    pub log: Vec<StepLog>,
}

/// Settings of a meta-training run.
pub struct MetaTraining<'a> {
    /// The prepared clips tasks are drawn from.
    pub dataset: &'a Dataset,
    /// Where checkpoints go and whence a run resumes.
    pub run_dir: &'a Path,
    /// Outer steps to reach (a resumed run continues up to here).
    pub outer_steps: u64,
    /// Identities (one clip each) per outer step.
    pub tasks_per_step: usize,
    /// Adam steps of each inner loop (K).
    pub inner_steps: usize,
    /// The inner loops' optimizer settings (a fresh Adam per task).
    pub inner_adam: AdamConfig,
    /// Frames per support set (drawn from the clip, source excluded).
    pub support_frames: usize,
    /// Outer steps between checkpoints (the last step is always checkpointed).
    pub checkpoint_every: u64,
    /// Seed of the task and support-set draws (a resumed run keeps its original one).
    pub seed: u64,
    /// The inner loops' loss.
    pub objective: Objective<'a>,
    /// Where θ, the inner loops and the outer update run.
    pub device: &'a burn::tensor::Device,
    /// The data-parallel seam: each outer step's mean θ − θ′ passes through it (replicas would split the tasks).
    pub reduce: &'a dyn GradientReduce,
}

/// The latest checkpoint of `run_dir` when it holds a `stage` run of `config`; `None` for a folder without one. A
/// run of another stage or configuration is refused (`what` names what must match) rather than resumed by mistake.
pub fn matching_checkpoint(
    run_dir: &Path,
    stage: &str,
    config: &serde_json::Value,
    what: &str,
) -> Result<Option<super::checkpoint::Checkpoint<RunState>>, TrainError> {
    let Some(checkpoint) = super::checkpoint::load_latest::<RunState>(run_dir)? else { return Ok(None) };
    if checkpoint.state.stage != stage || &checkpoint.state.config != config {
        return Err(TrainError::Run {
            path: run_dir.into(),
            reason: format!(
                "the run folder holds a `{}` run of another {what}; use a new --out",
                checkpoint.state.stage
            ),
        });
    }
    Ok(Some(checkpoint))
}

/// What a generator run folder must match.
pub const GENERATOR_RUN_MATCH: &str = "architecture or stage";

/// The run's state and optimizer from the latest checkpoint in `run_dir` (loading its weights into `model`), or a
/// fresh start. A folder made by another stage or architecture is refused rather than resumed by mistake.
pub fn resume_or_start(
    run_dir: &Path,
    stage: &str,
    model: &mut GeneratorModel,
    adam: AdamConfig,
    seed: u64,
) -> Result<(RunState, Adam), TrainError> {
    let run_err = |reason: String| TrainError::Run { path: run_dir.into(), reason };
    let config = serde_json::to_value(&model.config).map_err(|e| run_err(e.to_string()))?;
    let Some(checkpoint) = matching_checkpoint(run_dir, stage, &config, GENERATOR_RUN_MATCH)? else {
        let state = RunState { stage: stage.into(), step: 0, seed, config, log: Vec::new() };
        return Ok((state, Adam::new(adam)));
    };
    let state = checkpoint.state;
    *model = GeneratorModel::new(model.config.clone(), checkpoint.weights)?;
    let adam = Adam::from_state(adam, state.step, &checkpoint.optimizer).map_err(|e| run_err(e.to_string()))?;
    tracing::info!(stage, step = state.step, "training: resuming");
    Ok((state, adam))
}

/// The clips drawn for outer step `step` (depends only on the seed and the step).
pub fn draw_tasks(dataset: &Dataset, seed: u64, step: u64, tasks: usize) -> Vec<&ClipRef> {
    let mut rng = SplitMix64::new(seed ^ step.wrapping_mul(STEP_SEED_MIX));
    (0..tasks).map(|_| dataset.pick_clip(&mut rng)).collect()
}

/// Where a run is inside an outer step: one outer step is `tasks_per_step` inner loops, minutes apart on a CPU.
#[derive(Clone, Debug)]
pub struct InnerStepProgress {
    /// The outer step under way (1-based).
    pub outer_step: u64,
    /// The task (0-based) of `tasks` whose inner loop took this step.
    pub task: usize,
    /// Tasks in this outer step.
    pub tasks: usize,
    /// The inner step itself.
    pub inner: InnerProgress,
}

/// Runs (or resumes) meta-training until `outer_steps`; `progress` sees every finished outer step and `inner` every
/// inner step.
pub fn meta_train(
    mut model: GeneratorModel,
    run: &MetaTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
    mut inner_progress: impl FnMut(&InnerStepProgress),
) -> Result<(GeneratorModel, RunState), TrainError> {
    let (mut state, outer_adam) = resume_or_start(run.run_dir, "meta", &mut model, outer_adam_config(), run.seed)?;
    // θ and the outer moments stay on the device; the host weights are written at checkpoints and at the end.
    let mut outer = ResidentTrainer::from_adam(&outer_adam, run.device);
    let mut builder = InputBuilder::new(&model.config).map_err(SampleError::from)?;
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
        let report: MetaReport = reptile_step(&model, &mut outer, &tasks, &inner, run.reduce, cancel, |task, p| {
            inner_progress(&InnerStepProgress { outer_step: step, task, tasks: tasks.len(), inner: p.clone() })
        })?;
        state.step = step;
        let log = StepLog {
            step,
            loss: report.inner_loss_last,
            meta: Some(MetaLog {
                tasks_used: report.tasks_used,
                tasks_skipped: report.tasks_skipped,
                inner_loss_first: report.inner_loss_first,
                inner_loss_last: report.inner_loss_last,
            }),
            adversarial: None,
        };
        tracing::info!(?log, "meta-training step");
        progress(&log);
        state.log.push(log);
        if step % run.checkpoint_every.max(1) == 0 || step == run.outer_steps {
            outer.sync(&mut model.weights)?;
            super::checkpoint::save(run.run_dir, step, &state, &model.weights, &outer.to_adam()?.state().1)?;
        }
    }
    outer.sync(&mut model.weights)?;
    Ok((model, state))
}
