//! Supervised pre-training stages on the dataset, with checkpoints and resume: `train warp` and `train full`.
//!
//! Owns the per-step draw (an identity, one of its clips, a source and a different driving frame — depending only
//! on the seed and the step, so a resumed run continues exactly), the Adam updates (parameters and moments resident
//! on the training device between checkpoints, `resident`) and checkpointing. Stage `warp`
//! is the official warping pre-training: only the warping network runs and learns, on the VGG-19 pyramid perceptual
//! loss of the warped source against the driving frame (10 per layer; L1 instead when no VGG weights are given).
//! Stage `full` is the official joint stage: the whole generator on its loss (perceptual on the prediction and on
//! the warped source, eye and mouth boxes 50, L1) plus the patch discriminator's LSGAN and feature-matching terms,
//! then one discriminator step on the detached prediction (`discriminator`); both Adam lr 2e-4, betas (0.5, 0.999),
//! clip 0.3. As in the official loop, the generator step's clip norm also counts the discriminator's gradients of
//! that step, which are then not applied. Receives the initial model, a `Dataset` and a run folder; emits
//! checkpoints (`checkpoint`; the discriminator's weights and moments ride along under its `discs.` keys) and
//! per-step logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::adam::{Adam, AdamConfig};
use super::dataset::Dataset;
use super::discriminator::{
    AdversarialWeights, DiscriminatorConfig, discriminator_forward, discriminator_loss, generator_adversarial, join,
    split_joint,
};
use super::loss::{self, LossWeights};
use super::meta::{
    AdversarialLog, GENERATOR_RUN_MATCH, RunState, StepLog, TrainError, matching_checkpoint, resume_or_start,
};
use super::reduce::GradientReduce;
use super::resident::{Joint, ResidentTrainer};
use super::step::{Objective, read_report};
use crate::clip::frames::ClipFrames;
use crate::clip::sample::{SampleError, TrainSample, pair_sample};
use crate::model::exec::burn::BurnValue;
use crate::model::generator::GeneratorModel;
use crate::model::inputs::InputBuilder;
use crate::model::net;
use crate::model::ops::Ops;
use crate::model::runner::Stage;
use crate::model::weights::WeightStore;
use crate::rng::SplitMix64;

const STAGE_WARP: &str = "warp";
const STAGE_FULL: &str = "full";
const STEP_SEED_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// Settings of a supervised run.
pub struct SupervisedTraining<'a> {
    /// The prepared clips pairs are drawn from.
    pub dataset: &'a Dataset,
    /// Where checkpoints go and whence a run resumes.
    pub run_dir: &'a Path,
    /// Steps to reach (a resumed run continues up to here).
    pub steps: u64,
    /// The generator's optimizer settings.
    pub adam: AdamConfig,
    /// Steps between checkpoints (the last step is always checkpointed).
    pub checkpoint_every: u64,
    /// Seed of the per-step draws (a resumed run keeps its original one).
    pub seed: u64,
    /// The generator's loss (on the warped source in stage `warp`, on the prediction in stage `full`).
    pub objective: Objective<'a>,
    /// Where the networks, their gradients and the optimizer state live.
    pub device: &'a burn::tensor::Device,
}

/// Runs (or resumes) the warping pre-training until `steps`; `progress` sees every step.
pub fn train_warp(
    mut model: GeneratorModel,
    run: &SupervisedTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
) -> Result<(GeneratorModel, RunState), TrainError> {
    let (mut state, adam) = resume_or_start(run.run_dir, STAGE_WARP, &mut model, run.adam.clone(), run.seed)?;
    // Parameters and moments stay on the training device between checkpoints.
    let mut trainer = ResidentTrainer::from_adam(&adam, run.device);
    let mut draw = PairDraw::new(&model, run.dataset)?;
    while state.step < run.steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let step = state.step + 1;
        let sample = draw.sample(state.seed, step)?;
        let report = trainer.loss_step(&model, &sample, run.objective, Stage::Warp)?;
        state.step = step;
        let log = StepLog { step, loss: f64::from(report.loss.total), meta: None, adversarial: None };
        progress(&log);
        state.log.push(log);
        if step % run.checkpoint_every.max(1) == 0 || step == run.steps {
            trainer.sync(&mut model.weights)?;
            super::checkpoint::save(run.run_dir, step, &state, &model.weights, &trainer.to_adam()?.state().1)?;
        }
    }
    trainer.finish(&mut model.weights)?;
    Ok((model, state))
}

/// The draw of a step: an identity, one of its clips, a source and a different driving frame, depending only on the
/// seed and the step. Clips are loaded once and kept.
struct PairDraw<'d> {
    dataset: &'d Dataset,
    builder: InputBuilder,
    cache: BTreeMap<PathBuf, (ClipFrames, Vec<f32>)>,
}

impl<'d> PairDraw<'d> {
    fn new(model: &GeneratorModel, dataset: &'d Dataset) -> Result<Self, TrainError> {
        let builder = InputBuilder::new(&model.config).map_err(SampleError::from)?;
        Ok(Self { dataset, builder, cache: BTreeMap::new() })
    }

    fn sample(&mut self, seed: u64, step: u64) -> Result<TrainSample, TrainError> {
        let mut rng = SplitMix64::new(seed ^ step.wrapping_mul(STEP_SEED_MIX));
        let clip_ref = self.dataset.pick_clip(&mut rng);
        if !self.cache.contains_key(&clip_ref.dir) {
            self.cache.insert(clip_ref.dir.clone(), Dataset::load_clip(clip_ref)?);
        }
        let (clip, id_vector) = self.cache.get(&clip_ref.dir).ok_or_else(|| TrainError::Run {
            path: clip_ref.dir.clone(),
            reason: "clip vanished from the cache".into(),
        })?;
        let n = clip.frames.len() as u64;
        let source = (rng.next_u64() % n) as usize;
        // A different driving frame when the clip has one.
        let driving = if n > 1 { ((source as u64 + 1 + rng.next_u64() % (n - 1)) % n) as usize } else { source };
        Ok(pair_sample(&mut self.builder, clip, source, driving, id_vector)?)
    }
}

/// The discriminator of a `full` run.
#[derive(Clone, Debug)]
pub struct Discriminator {
    /// Its widths and scales.
    pub config: DiscriminatorConfig,
    /// Its weights under the official `discs.` keys.
    pub weights: WeightStore,
}

/// Settings of the joint stage besides the common ones.
pub struct FullTraining<'a> {
    /// Dataset, run folder, steps, the generator's optimizer and loss, device.
    pub common: SupervisedTraining<'a>,
    /// Weights of the LSGAN and feature-matching terms.
    pub adversarial: AdversarialWeights,
    /// Perceptual weight per VGG layer on the warped source (`warp_perceptual`; ignored without VGG weights).
    pub warp_perceptual: [f32; 5],
    /// The discriminator's optimizer settings.
    pub discriminator_adam: AdamConfig,
    /// The data-parallel seam: each step's gradients (generator and discriminator) pass through it.
    pub reduce: &'a dyn GradientReduce,
}

/// Names of the adversarial terms in the generator step's report.
const TERM_GAN: &str = "gan";
const TERM_FEATURE_MATCHING: &str = "feature_matching";

/// One joint step: the generator's update (its loss plus the adversarial terms), then the discriminator's on the
/// detached prediction, each by its trainer on the device. Returns the generator's loss and the adversarial log.
pub fn full_step(
    model: &GeneratorModel,
    disc: &Discriminator,
    trainers: (&mut ResidentTrainer, &mut ResidentTrainer),
    sample: &TrainSample,
    run: &FullTraining<'_>,
) -> Result<(f32, AdversarialLog), TrainError> {
    let (generator, discriminator) = trainers;
    let objective = run.common.objective;
    let joint = Joint { store: &disc.weights, resident: discriminator.params() };
    let (g_report, prediction) = generator.step_joint(&model.weights, Some(joint), run.reduce, |exec| {
        let ins = sample.inputs.map(|t| exec.input(t));
        let target = exec.input(&sample.target);
        let (eye, mouth) = (exec.input(&sample.eye_mask), exec.input(&sample.mouth_mask));
        let outs = net::generator_forward(exec, &model.config, &ins)?;
        let terms =
            loss::generator_loss(exec, objective.weights, objective.vgg, &outs.prediction, &target, &eye, &mouth)?;
        let mut total = terms.total;
        if let Some(vgg) = objective.vgg {
            let warp_weights = LossWeights { l1: 0.0, eye: 0.0, mouth: 0.0, perceptual: run.warp_perceptual };
            let warp =
                loss::generator_loss(exec, &warp_weights, Some(vgg), &outs.warp.deformed, &target, &eye, &mouth)?;
            total = exec.add(&total, &warp.total);
        }
        let real = discriminator_forward(exec, &disc.config, &target)?;
        let fake = discriminator_forward(exec, &disc.config, &outs.prediction)?;
        let adv = generator_adversarial(exec, &run.adversarial, &real, &fake);
        total = exec.add(&total, &adv.gan);
        total = exec.add(&total, &adv.feature_matching);
        let report = read_report(exec, &total, &[(TERM_GAN, adv.gan), (TERM_FEATURE_MATCHING, adv.feature_matching)]);
        // The discriminator judges the prediction as a constant: no autodiff history.
        let prediction = BurnValue::new(outs.prediction.t.clone().without_autodiff(), outs.prediction.rank);
        Ok((total, report, prediction))
    })?;
    let (d_report, ()) = discriminator.step_joint(&disc.weights, None, run.reduce, |exec| {
        let real_image = exec.input(&sample.target);
        let real = discriminator_forward(exec, &disc.config, &real_image)?;
        let fake = discriminator_forward(exec, &disc.config, &prediction)?;
        let loss = discriminator_loss(exec, &run.adversarial, &real, &fake);
        let report = read_report(exec, &loss, &[]);
        Ok((loss, report, ()))
    })?;
    let term =
        |name: &str| g_report.loss.terms.iter().find(|(n, _)| *n == name).map_or(f64::NAN, |(_, v)| f64::from(*v));
    let log = AdversarialLog {
        generator_gan: term(TERM_GAN),
        feature_matching: term(TERM_FEATURE_MATCHING),
        discriminator: f64::from(d_report.loss.total),
    };
    Ok((g_report.loss.total, log))
}

/// Runs (or resumes) the joint stage until `steps`; `progress` sees every step.
pub fn train_full(
    mut model: GeneratorModel,
    mut disc: Discriminator,
    run: &FullTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
) -> Result<(GeneratorModel, Discriminator, RunState), TrainError> {
    let common = &run.common;
    let (mut state, adam_g, adam_d) = resume_full(common, &mut model, &mut disc, run.discriminator_adam.clone())?;
    // Both networks' parameters and moments stay on the training device between checkpoints.
    let mut generator = ResidentTrainer::from_adam(&adam_g, common.device);
    let mut discriminator = ResidentTrainer::from_adam(&adam_d, common.device);
    let mut draw = PairDraw::new(&model, common.dataset)?;
    while state.step < common.steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let step = state.step + 1;
        let sample = draw.sample(state.seed, step)?;
        let (loss, adversarial) = full_step(&model, &disc, (&mut generator, &mut discriminator), &sample, run)?;
        state.step = step;
        let log = StepLog { step, loss: f64::from(loss), meta: None, adversarial: Some(adversarial) };
        tracing::info!(?log, "full training step");
        progress(&log);
        state.log.push(log);
        if step % common.checkpoint_every.max(1) == 0 || step == common.steps {
            generator.sync(&mut model.weights)?;
            discriminator.sync(&mut disc.weights)?;
            let weights = join(&model.weights, &disc.weights);
            let moments = join(&generator.to_adam()?.state().1, &discriminator.to_adam()?.state().1);
            super::checkpoint::save(common.run_dir, step, &state, &weights, &moments)?;
        }
    }
    generator.finish(&mut model.weights)?;
    discriminator.finish(&mut disc.weights)?;
    Ok((model, disc, state))
}

/// `resume_or_start` for the joint stage: the checkpoint holds both networks and both optimizers.
fn resume_full(
    run: &SupervisedTraining<'_>,
    model: &mut GeneratorModel,
    disc: &mut Discriminator,
    d_adam: AdamConfig,
) -> Result<(RunState, Adam, Adam), TrainError> {
    let run_err = |reason: String| TrainError::Run { path: run.run_dir.into(), reason };
    let config = serde_json::to_value(&model.config).map_err(|e| run_err(e.to_string()))?;
    let Some(checkpoint) = matching_checkpoint(run.run_dir, STAGE_FULL, &config, GENERATOR_RUN_MATCH)? else {
        let (state, adam_g) = resume_or_start(run.run_dir, STAGE_FULL, model, run.adam.clone(), run.seed)?;
        return Ok((state, adam_g, Adam::new(d_adam)));
    };
    let (g_weights, d_weights) = split_joint(checkpoint.weights);
    let (g_moments, d_moments) = split_joint(checkpoint.optimizer);
    let expected = super::discriminator::expected_entries(&disc.config, model.config.image_size)?;
    d_weights.validate(&expected)?;
    *model = GeneratorModel::new(model.config.clone(), g_weights)?;
    disc.weights = d_weights;
    let step = checkpoint.state.step;
    let adam_g = Adam::from_state(run.adam.clone(), step, &g_moments).map_err(|e| run_err(e.to_string()))?;
    let adam_d = Adam::from_state(d_adam, step, &d_moments).map_err(|e| run_err(e.to_string()))?;
    tracing::info!(step, "training: resuming the joint stage");
    Ok((checkpoint.state, adam_g, adam_d))
}
