//! Supervised pre-training stages on the dataset, with checkpoints and resume: `train warp`.
//!
//! Owns the per-step draw (an identity, one of its clips, a source and a different driving frame — depending only
//! on the seed and the step, so a resumed run continues exactly), the Adam update and checkpointing. Stage `warp`
//! is the official warping pre-training: only the warping network runs and learns, on the VGG-19 pyramid perceptual
//! loss of the warped source against the driving frame (10 per layer; L1 instead when no VGG weights are given).
//! Receives the initial model, a `Dataset` and a run folder; emits checkpoints (`checkpoint`) and per-step logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::adam::AdamConfig;
use super::dataset::Dataset;
use super::meta::{RunState, StepLog, TrainError, resume_or_start};
use super::step::{Objective, loss_step_on};
use crate::model::engine::{GeneratorModel, Stage};
use crate::model::inputs::InputBuilder;
use crate::personalize::clip::ClipFrames;
use crate::personalize::job::{PersonalizeError, pair_sample};
use crate::rng::SplitMix64;

const STAGE_WARP: &str = "warp";
const STEP_SEED_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// Settings of a supervised run.
pub struct SupervisedTraining<'a> {
    pub dataset: &'a Dataset,
    pub run_dir: &'a Path,
    /// Steps to reach (a resumed run continues up to here).
    pub steps: u64,
    pub adam: AdamConfig,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub objective: Objective<'a>,
    pub device: &'a burn::tensor::Device,
}

/// Runs (or resumes) the warping pre-training until `steps`; `progress` sees every step.
pub fn train_warp(
    mut model: GeneratorModel,
    run: &SupervisedTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
) -> Result<(GeneratorModel, RunState), TrainError> {
    let (mut state, mut adam) = resume_or_start(run.run_dir, STAGE_WARP, &mut model, run.adam.clone(), run.seed)?;
    let mut builder = InputBuilder::new(&model.config).map_err(PersonalizeError::from)?;
    let mut cache: BTreeMap<PathBuf, (ClipFrames, Vec<f32>)> = BTreeMap::new();
    while state.step < run.steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let step = state.step + 1;
        let mut rng = SplitMix64::new(state.seed ^ step.wrapping_mul(STEP_SEED_MIX));
        let (_, clips) = &run.dataset.identities[(rng.next_u64() % run.dataset.identities.len() as u64) as usize];
        let clip_ref = &clips[(rng.next_u64() % clips.len() as u64) as usize];
        if !cache.contains_key(&clip_ref.dir) {
            cache.insert(clip_ref.dir.clone(), Dataset::load_clip(clip_ref)?);
        }
        let Some((clip, id_vector)) = cache.get(&clip_ref.dir) else { continue };
        let n = clip.frames.len() as u64;
        let source = (rng.next_u64() % n) as usize;
        // A different driving frame when the clip has one.
        let driving = if n > 1 { ((source as u64 + 1 + rng.next_u64() % (n - 1)) % n) as usize } else { source };
        let sample = pair_sample(&mut builder, clip, source, driving, id_vector)?;
        let report = loss_step_on(&mut model, &mut adam, run.device, &sample, run.objective, Stage::Warp)?;
        state.step = step;
        let log = StepLog { step, loss: f64::from(report.loss.total), meta: None };
        progress(&log);
        state.log.push(log);
        if step % run.checkpoint_every.max(1) == 0 || step == run.steps {
            super::checkpoint::save(run.run_dir, step, &state, &model.weights, &adam.state().1)?;
        }
    }
    Ok((model, state))
}
