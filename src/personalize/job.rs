//! One personalization: prepared clip frames → training samples → K Adam steps from the base model → an identity.
//!
//! Owns the recipe of the paper and the official code: Adam lr 2e-4 (warping network ×0.1), betas (0.5, 0.999),
//! gradient-norm clip 0.3, K = 24 steps by default over the training frames; loss L1, eye and mouth box L2 (50 each)
//! and the VGG-19 pyramid perceptual loss (10 per layer) when VGG weights are given. Receives the base model, the clip's
//! frames, the identity embedding and a cancel flag; emits a `NewIdentity` (the changed tensors only, as a delta) and
//! a report with the held-out loss before and after. Cancelling leaves nothing behind: the caller's store is only
//! written with a finished result.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::store::{NewIdentity, PersonalizationInfo};
use crate::clip::frames::ClipFrames;
use crate::clip::sample::TrainSample;
use crate::clip::sample::{SampleError, samples};
use crate::model::ModelError;
use crate::model::generator::GeneratorModel;
use crate::model::inputs::{InputBuilder, InputError};
use crate::model::weights::WeightStore;
use crate::tensor::HostTensor;
use crate::train::adam::AdamConfig;
use crate::train::loss::{LossWeights, TERM_EYE, TERM_L1, TERM_MOUTH, TERM_PERCEPTUAL};
use crate::train::reptile::{InnerLoop, InnerProgress, LoopError, inner_loop};
use crate::train::step::{Objective, evaluate_mean_until};
use crate::train::vgg::Vgg19;

/// Why a personalization did not produce an identity.
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeError {
    /// The clip could not be opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The clip.
        path: PathBuf,
        /// Why.
        source: Box<crate::capture::CaptureError>,
    },
    /// The clip could not be read into frames (too few faces, a broken frame).
    #[error("preparing {path}: {source}")]
    Clip {
        /// The clip.
        path: PathBuf,
        /// Why.
        source: Box<crate::clip::frames::ClipError>,
    },
    /// The identity-embedding network is missing or broken.
    #[error("the identity-embedding network is not installed: run `bash scripts/provision-id-model.sh`: {0}")]
    Embedder(crate::face::FaceError),
    /// The face models failed.
    #[error(transparent)]
    Face(#[from] crate::face::FaceError),
    /// The VGG-19 weights of the perceptual loss could not be loaded.
    #[error("loading {path}: {source}")]
    Vgg {
        /// The weights file.
        path: PathBuf,
        /// Why.
        source: Box<ModelError>,
    },
    /// The training device cannot be used.
    #[error(transparent)]
    Device(#[from] crate::runtime::RuntimeError),
    /// Conditioning could not be drawn.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A training sample could not be built.
    #[error(transparent)]
    Sample(#[from] SampleError),
    /// The generator failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The training loop stopped.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// The loss became non-finite.
    #[error("training diverged (non-finite loss); the identity was not saved")]
    Diverged,
}

/// What a personalization did (the `--report` JSON).
#[derive(Clone, Debug, Serialize)]
pub struct PersonalizeReport {
    /// Adam steps taken.
    pub steps: usize,
    /// Wall time of the job (held-out scoring and training, not the clip's reading), in seconds.
    pub seconds: f64,
    /// Mean training loss over the held-out frames with the base weights.
    pub heldout_loss_before: f64,
    /// Mean training loss over the held-out frames with the personalized weights; lower than before if it helped.
    pub heldout_loss_after: f64,
    /// Loss terms used ("l1", "eye", "mouth", "perceptual").
    pub losses: Vec<String>,
    /// Frames trained on.
    pub frames_used: usize,
    /// Frames held out for scoring, never trained on.
    pub frames_heldout: usize,
    /// Frames of the clip read but skipped because no face was found.
    pub frames_without_face: usize,
    /// Clip index of the chosen source frame.
    pub source_frame: u64,
    /// Weight tensors that changed and are stored as the identity's delta.
    pub tensors_changed: usize,
    /// Total training loss of each step, before its update.
    pub loss_per_step: Vec<f32>,
}

/// Where a personalization is: scoring the held-out frames before or after training, or a training step.
#[derive(Clone, Debug)]
pub enum PersonalizeProgress {
    /// Scoring the held-out frames.
    Scoring {
        /// `false` while scoring the base weights, `true` the personalized ones.
        after: bool,
        /// Held-out frames scored so far.
        done: usize,
        /// Held-out frames in all.
        total: usize,
    },
    /// A training step finished.
    Step(InnerProgress),
}

/// Settings of one run.
pub struct PersonalizeJob<'a> {
    /// Display name of the new identity.
    pub name: String,
    /// Adam steps to take (the paper's K).
    pub steps: usize,
    /// Optimizer settings.
    pub adam: AdamConfig,
    /// The perceptual loss's network; without it the perceptual term is left out.
    pub vgg: Option<&'a Vgg19>,
    /// Where training and scoring run.
    pub device: &'a burn::tensor::Device,
    /// SHA-256 of the base weights file, recorded so the delta is only applied to the same base.
    pub base_sha256: Option<String>,
    /// Tag of the embedder that made the identity vector (`face::embed::IdEmbedder::tag`); checked against the
    /// model's and recorded with the identity.
    pub embedder: String,
}

/// The held-out frames and how to score a model on them.
struct HeldOut<'a> {
    samples: &'a [TrainSample],
    objective: Objective<'a>,
    device: &'a burn::tensor::Device,
    cancel: &'a AtomicBool,
}

impl HeldOut<'_> {
    /// The mean held-out loss of `model`, reporting each frame; a cancel ends it as `Cancelled(steps_done)`.
    fn score(
        &self,
        model: &GeneratorModel,
        after: bool,
        steps_done: usize,
        progress: &mut dyn FnMut(&PersonalizeProgress),
    ) -> Result<f64, PersonalizeError> {
        let total = self.samples.len();
        progress(&PersonalizeProgress::Scoring { after, done: 0, total });
        let mean = evaluate_mean_until(model, self.device, self.samples, self.objective, |done| {
            progress(&PersonalizeProgress::Scoring { after, done, total });
            !self.cancel.load(Ordering::Relaxed)
        })?;
        mean.ok_or(PersonalizeError::Loop(LoopError::Cancelled(steps_done)))
    }
}

/// Fine-tunes `base` on the clip and returns the identity to store and the report. `progress` sees every held-out
/// frame scored and every step; `cancel` is honoured between any two of them.
pub fn personalize(
    base: &GeneratorModel,
    clip: &ClipFrames,
    id_vector: Vec<f32>,
    job: &PersonalizeJob<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&PersonalizeProgress),
) -> Result<(NewIdentity, PersonalizeReport), PersonalizeError> {
    let started = Instant::now();
    let mut builder = InputBuilder::new(&base.config)?;
    builder.check_embedder(Some(&job.embedder))?;
    let train = samples(&mut builder, clip, &clip.training(), &id_vector)?;
    let heldout = samples(&mut builder, clip, &clip.holdout, &id_vector)?;
    let weights = if job.vgg.is_some() {
        LossWeights::default()
    } else {
        LossWeights { perceptual: [0.0; crate::train::vgg::VGG_FEATURES], ..LossWeights::default() }
    };
    let objective = Objective { weights: &weights, vgg: job.vgg };
    if cancel.load(Ordering::Relaxed) {
        return Err(PersonalizeError::Loop(LoopError::Cancelled(0)));
    }
    let scorer = HeldOut { samples: &heldout, objective, device: job.device, cancel };
    let before = scorer.score(base, false, 0, &mut progress)?;
    let mut tuned = base.clone();
    let run = InnerLoop { steps: job.steps, adam: &job.adam, device: job.device, objective };
    let losses = inner_loop(&mut tuned, &train, &run, cancel, |p| progress(&PersonalizeProgress::Step(p.clone())))?;
    let after = scorer.score(&tuned, true, losses.len(), &mut progress)?;
    if !after.is_finite() || losses.iter().any(|l| !l.total.is_finite()) {
        return Err(PersonalizeError::Diverged);
    }
    let mut delta = WeightStore::new();
    for (key, tensor) in tuned.weights.iter() {
        if base.weights.get(key).is_none_or(|b| b.data() != tensor.data()) {
            delta.insert(key.clone(), tensor.clone());
        }
    }
    let mut used = vec![TERM_L1, TERM_EYE, TERM_MOUTH];
    if job.vgg.is_some() {
        used.push(TERM_PERCEPTUAL);
    }
    let report = PersonalizeReport {
        steps: losses.len(),
        seconds: started.elapsed().as_secs_f64(),
        heldout_loss_before: before,
        heldout_loss_after: after,
        losses: used.iter().map(|s| (*s).to_owned()).collect(),
        frames_used: train.len(),
        frames_heldout: heldout.len(),
        frames_without_face: clip.frames_without_face,
        source_frame: clip.frames[clip.source].index,
        tensors_changed: delta.len(),
        loss_per_step: losses.iter().map(|l| l.total).collect(),
    };
    let source = &clip.frames[clip.source];
    let n = source.landmarks.len();
    let landmarks = HostTensor::new(vec![n, 3], source.landmarks.iter().flatten().copied().collect())
        .map_err(|e| ModelError::Tensor { name: "source landmarks".into(), reason: format!("{e:?}") })?;
    let identity = NewIdentity {
        name: job.name.clone(),
        portrait: source.crop.clone(),
        landmarks,
        id_vector: Some(id_vector),
        weights_delta: delta,
        base_model_sha256: job.base_sha256.clone(),
        embedder: Some(job.embedder.clone()),
        personalization: Some(PersonalizationInfo {
            steps: report.steps,
            seconds: report.seconds,
            losses: report.losses.clone(),
            heldout_loss_before: before,
            heldout_loss_after: after,
        }),
    };
    Ok((identity, report))
}
