//! The inner loop shared by personalization and meta-training, and Reptile's outer update.
//!
//! Owns the loop structure: K Adam steps on a support set from a starting model (inner loop), and Reptile's outer
//! step — per task (identity), run the inner loop from a copy of θ, take θ − θ′, average over tasks and apply it as
//! a gradient to θ with the outer Adam (lr 2e-5, betas (0.5, 0.999), clip 0.3), all on the executor's device.
//! Receives a base model and tasks of `TrainSample`s; emits updated weights, per-step losses through a callback, and
//! reports. Non-finite inner results are dropped (the task is skipped, counted) so one bad clip cannot poison θ.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Device;

use crate::model::ModelError;
use crate::model::exec::burn::BurnValue;
use crate::model::generator::GeneratorModel;
use crate::model::runner::Stage;

use super::adam::AdamConfig;
use super::reduce::GradientReduce;
use super::resident::{DeviceSum, ResidentTrainer};
use super::step::{LossReport, Objective};
use crate::clip::sample::TrainSample;

/// Inner steps of the paper's personalization and of the meta-training inner loop.
pub const DEFAULT_INNER_STEPS: usize = 24;
/// Outer learning rate of the official meta-training config (`lr_generator`).
pub const OUTER_LR: f32 = 2e-5;

/// The outer optimizer's configuration: Adam lr 2e-5, betas (0.5, 0.999), clip 0.3, warping network ×0.1.
pub fn outer_adam_config() -> AdamConfig {
    AdamConfig { lr: OUTER_LR, ..AdamConfig::default() }
}

/// One inner step as reported to progress callbacks.
#[derive(Clone, Debug)]
pub struct InnerProgress {
    /// Steps done, counted from 1.
    pub step: usize,
    /// Steps the loop takes (K).
    pub total: usize,
    /// The step's loss, before its update.
    pub loss: LossReport,
}

/// Why an inner loop ended early.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The cancel flag was set; carries the steps completed. The model is left as it was.
    #[error("cancelled after {0} steps")]
    Cancelled(usize),
    /// There was no sample to train on.
    #[error("the support set is empty")]
    NoSamples,
    /// A forward, backward or update failed on the device.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// How an inner loop runs: K steps of a fresh Adam on a loss, on a device.
#[derive(Clone, Copy)]
pub struct InnerLoop<'a> {
    /// Adam steps to take (K); the samples are cycled in order.
    pub steps: usize,
    /// Settings of the fresh optimizer each loop starts.
    pub adam: &'a AdamConfig,
    /// Where the parameters, gradients and moments live during the loop.
    pub device: &'a Device,
    /// The loss minimised.
    pub objective: Objective<'a>,
}

/// K Adam steps on `samples` (cycled in order) starting from `model`; `model` is updated in place. Checks `cancel`
/// before every step; a cancelled loop leaves `model` as it was (the trained values never left the device).
pub fn inner_loop(
    model: &mut GeneratorModel,
    samples: &[TrainSample],
    run: &InnerLoop<'_>,
    cancel: &AtomicBool,
    progress: impl FnMut(&InnerProgress),
) -> Result<Vec<LossReport>, LoopError> {
    // The parameters and moments stay on the device for the whole loop; `model` is written once at the end.
    let mut trainer = ResidentTrainer::new(run.adam.clone(), run.device);
    let losses = run_inner(&mut trainer, model, samples, run, cancel, progress)?;
    trainer.finish(&mut model.weights)?;
    Ok(losses)
}

/// The steps of an inner loop on `trainer` (parameters it does not hold yet come from `model`).
fn run_inner(
    trainer: &mut ResidentTrainer,
    model: &GeneratorModel,
    samples: &[TrainSample],
    run: &InnerLoop<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&InnerProgress),
) -> Result<Vec<LossReport>, LoopError> {
    if samples.is_empty() {
        return Err(LoopError::NoSamples);
    }
    let mut losses = Vec::with_capacity(run.steps);
    for step in 0..run.steps {
        if cancel.load(Ordering::Relaxed) {
            return Err(LoopError::Cancelled(step));
        }
        let report = trainer.loss_step(model, &samples[step % samples.len()], run.objective, Stage::Full)?;
        progress(&InnerProgress { step: step + 1, total: run.steps, loss: report.loss.clone() });
        losses.push(report.loss);
    }
    Ok(losses)
}

/// What one outer step did.
#[derive(Clone, Debug)]
pub struct MetaReport {
    /// Tasks whose θ − θ′ went into the update.
    pub tasks_used: usize,
    /// Tasks dropped because their inner loop produced non-finite losses or weights.
    pub tasks_skipped: usize,
    /// Mean over used tasks of the first and last inner-step loss.
    pub inner_loss_first: f64,
    /// See `inner_loss_first` (NaN when no task was used).
    pub inner_loss_last: f64,
    /// Whether the outer Adam applied the update (false when no task was used or the mean delta was not finite).
    pub applied: bool,
}

/// One Reptile outer step over `tasks` (each a support set of one identity). θ lives in `outer` (the outer Adam's
/// resident parameters; keys it has not seen yet come from `base`, whose host weights are only read): every inner
/// loop starts from a device copy of it, θ − θ′ is summed on the device, and the mean goes through the outer Adam
/// there too. Nothing crosses to the host but losses and one finiteness check per task; `outer.sync` writes θ back.
/// `on_inner` sees every inner step with the index of its task.
pub fn reptile_step(
    base: &GeneratorModel,
    outer: &mut ResidentTrainer,
    tasks: &[Vec<TrainSample>],
    inner: &InnerLoop<'_>,
    reduce: &dyn GradientReduce,
    cancel: &AtomicBool,
    mut on_inner: impl FnMut(usize, &InnerProgress),
) -> Result<MetaReport, LoopError> {
    let mut delta = DeviceSum::default();
    let mut skipped = 0usize;
    let (mut first_sum, mut last_sum) = (0.0f64, 0.0f64);
    for (index, task) in tasks.iter().enumerate() {
        let mut fast = ResidentTrainer::new(inner.adam.clone(), inner.device).starting_from(outer.params());
        let losses = run_inner(&mut fast, base, task, inner, cancel, |p| on_inner(index, p))?;
        let finite_losses = losses.iter().all(|l| l.total.is_finite());
        if !finite_losses || !fast.trained_all_finite()? {
            tracing::warn!("meta step: skipping a task whose inner loop produced non-finite values");
            skipped += 1;
            continue;
        }
        first_sum += losses.first().map_or(0.0, |l| l.total as f64);
        last_sum += losses.last().map_or(0.0, |l| l.total as f64);
        let mut task_delta = Vec::new();
        for key in fast.trained_keys() {
            let Some(theta_prime) = fast.params().get(key) else { continue };
            let theta = outer.resident_or_upload(&base.weights, key, &theta_prime.shape())?;
            task_delta.push((key.clone(), BurnValue::new(theta.t.clone() - theta_prime.t.clone(), theta.rank)));
        }
        delta.add(task_delta);
    }
    let used = delta.terms();
    if used == 0 {
        return Ok(MetaReport {
            tasks_used: 0,
            tasks_skipped: skipped,
            inner_loss_first: f64::NAN,
            inner_loss_last: f64::NAN,
            applied: false,
        });
    }
    let mut mean = delta.mean();
    reduce.all_reduce_device(&mut mean)?;
    let stats = outer.apply_gradients(&mean)?;
    Ok(MetaReport {
        tasks_used: used,
        tasks_skipped: skipped,
        inner_loss_first: first_sum / used as f64,
        inner_loss_last: last_sum / used as f64,
        applied: stats.applied,
    })
}
