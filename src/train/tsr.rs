//! Temporal-SR training (`train tsr`): the official recipe (`sr_model/options/train/train_sr_hdtf.yml`) on the
//! dataset layout.
//!
//! Owns the draw of a training clip, the TSR loss, the optimizer with its schedule, the weight EMA and the run's
//! checkpoints. Receives a `TsrModel`, a `Dataset` prepared with crops of the network's output size (`prepare
//! --crop-size 512` for the official configuration) and a run folder; emits checkpoints (weights, Adam moments and the
//! EMA under `ema.` keys, `state.json`) that resume exactly, and per-step logs.
//!
//! - Clip: a random clip of the dataset and `frames` consecutive frames of it from a random start, all flipped
//!   horizontally or none (the official augmentation). Ground truth: the crops. Input: the base model's
//!   reconstruction of each frame when the clip has an `lq/` folder (`render_lq`, the official training input),
//!   else the crops averaged 2×2.
//! - Loss: 0.1·L1 + perceptual 1·Σ w_l·L1 + style 50·Σ w_l·L1(Gram) on VGG-19 conv1_2, conv2_2, conv3_4, conv4_4 and
//!   conv5_4 before their ReLU (w = 0.1, 0.1, 1, 1, 1; Gram `F·Fᵀ/(c·h·w)` per frame), with BasicSR's `range_norm`
//!   applied to images already in [0, 1] (so VGG sees [0.5, 1]), as the official run did. L1 alone without VGG.
//! - Adam lr 1e-4, betas (0.9, 0.99), no clipping, cosine decay to 1e-7 over `lr_period` steps; the StyleGAN2
//!   decoder stays frozen (`fix_decoder`, `opt_rm_param`); the EMA (0.999) is what the official code ships.
//! - `batch` clips per step: their gradients are averaged on the device and passed through `GradientReduce` (the
//!   data-parallel seam) before the update. Parameters, Adam moments and the EMA stay on the training device
//!   (`resident`) between checkpoints.
//! - Optionally (`gan_weight` > 0; the released configuration has none, GFPGAN's recipe had one) a patch
//!   discriminator (`discriminator`) judges every output frame: the LSGAN term `gan_weight·mean((1 − D(out))²)`
//!   joins the loss, and after the network's update the discriminator takes its own step on the detached output
//!   (same optimizer settings). Its weights and moments ride along in the checkpoints under `discs.` keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::adam::{Adam, AdamConfig};
use super::checkpoint;
use super::dataset::Dataset;
use super::discriminator::{
    AdversarialWeights, DISCRIMINATOR_PREFIX, DiscriminatorConfig, discriminator_forward, discriminator_loss, join,
    lsgan_generator, split_joint,
};
use super::loss::{LossTerms, l1, mean_all};
use super::meta::{RunState, StepLog, TrainError};
use super::reduce::GradientReduce;
use super::resident::{DeviceSum, Joint, ResidentEma, ResidentTrainer};
use super::step::{LossReport, read_report};
use super::vgg::{TSR_LAYERS, Vgg19};
use crate::clip::frames::ClipFrames;
use crate::model::ModelError;
use crate::model::exec::burn::BurnValue;
use crate::model::inputs::write_planar_unit;
use crate::model::ops::Ops;
use crate::model::weights::WeightStore;
use crate::rng::SplitMix64;
use crate::tensor::HostTensor;
use crate::tsr::net::{RGB, tsr_forward};
use crate::tsr::runner::TsrModel;

const STAGE_TSR: &str = "tsr";
const STEP_SEED_MIX: u64 = 0xA24B_AED4_963E_E407;
/// Parameters the official run leaves out of the optimizer.
pub const FROZEN_PREFIX: &str = "stylegan_decoder.";
/// Decay of the weight EMA per step (`ema_decay` of the official run).
pub const EMA_DECAY: f32 = 0.999;
/// Key prefix of the EMA in the optimizer store of a checkpoint.
pub const EMA_PREFIX: &str = "ema.";
/// Starting learning rate of the cosine schedule.
pub const LR: f32 = 1e-4;
/// Learning rate the cosine schedule ends at (`eta_min`).
pub const LR_MIN: f32 = 1e-7;
/// `CosineAnnealingRestartLR` period of the official run (= its total iterations).
pub const LR_PERIOD: u64 = 300_000;
/// Weight of the L1 pixel term.
pub const PIXEL_WEIGHT: f32 = 0.1;
/// Weight of the VGG-19 perceptual term.
pub const PERCEPTUAL_WEIGHT: f32 = 1.0;
/// Weight of the Gram-matrix style term.
pub const STYLE_WEIGHT: f32 = 50.0;
/// Frames per training clip in the official run.
pub const DEFAULT_FRAMES: usize = 6;

/// Name of the L1 pixel term in a step's report.
pub const TERM_PIXEL: &str = "pixel";
/// Name of the perceptual term in a step's report.
pub const TERM_PERCEPTUAL: &str = "perceptual";
/// Name of the style term in a step's report.
pub const TERM_STYLE: &str = "style";

/// The official optimizer: Adam lr 1e-4, betas (0.9, 0.99), no gradient clipping.
pub fn tsr_adam_config() -> AdamConfig {
    AdamConfig { lr: LR, beta1: 0.9, beta2: 0.99, eps: 1e-8, clip_grad_norm: None, lr_multipliers: Vec::new() }
}

/// Learning rate at `step` (1-based) of a cosine decay from `LR` to `LR_MIN` over `period` steps.
pub fn cosine_lr(step: u64, period: u64) -> f32 {
    let t = (step.saturating_sub(1) as f64 / period.max(1) as f64).min(1.0);
    (LR_MIN as f64 + (LR - LR_MIN) as f64 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
}

/// Settings of a `train tsr` run.
pub struct TsrTraining<'a> {
    /// The prepared clips, cropped at the network's output size.
    pub dataset: &'a Dataset,
    /// Where checkpoints go and whence a run resumes.
    pub run_dir: &'a Path,
    /// Steps to reach (a resumed run continues up to here).
    pub steps: u64,
    /// Consecutive frames per training clip (`DEFAULT_FRAMES` in the official run).
    pub frames: usize,
    /// Clips per step (their mean gradient is applied).
    pub batch: usize,
    /// Steps of the cosine decay from `LR` to `LR_MIN` (`LR_PERIOD` in the official run).
    pub lr_period: u64,
    /// Steps between checkpoints (the last step is always checkpointed).
    pub checkpoint_every: u64,
    /// Seed of the clip, start-frame and flip draws (a resumed run keeps its original one).
    pub seed: u64,
    /// The perceptual and style losses' network; `None`: L1 alone.
    pub vgg: Option<&'a Vgg19>,
    /// Where the network, its gradients, the optimizer state and the EMA live.
    pub device: &'a burn::tensor::Device,
    /// Weight of the LSGAN term (0: no discriminator, the released configuration).
    pub gan_weight: f32,
    /// The data-parallel seam: a step's mean gradients (network and discriminator) pass through it.
    pub reduce: &'a dyn GradientReduce,
}

/// The discriminator of a TSR run with a GAN term, and its optimizer.
pub struct TsrGan {
    /// Its widths and scales.
    pub config: DiscriminatorConfig,
    /// Its weights under the `discs.` keys.
    pub weights: WeightStore,
    /// Its optimizer (restored from the checkpoint on resume).
    pub adam: Adam,
}

/// A training clip: input frames `[n, 3, S/2, S/2]` and ground truth `[n, 3, S, S]`, in [0, 1].
pub struct TsrClip {
    /// The network's input frames, `[n, 3, S/2, S/2]`.
    pub lq: HostTensor,
    /// The frames it should output, `[n, 3, S, S]`.
    pub gt: HostTensor,
}

/// `[n, 3, s, s]` → `[n, 3, s/2, s/2]` by averaging 2×2 blocks.
pub fn downscale2(t: &HostTensor) -> Result<HostTensor, ModelError> {
    let s = t.shape();
    let (planes, h, w) = (s[0] * s[1], s[2], s[3]);
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; planes * oh * ow];
    let data = t.data();
    for p in 0..planes {
        for y in 0..oh {
            for x in 0..ow {
                let at = |dy: usize, dx: usize| data[p * h * w + (2 * y + dy) * w + 2 * x + dx];
                out[p * oh * ow + y * ow + x] = 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
            }
        }
    }
    HostTensor::new(vec![s[0], s[1], oh, ow], out)
        .map_err(|e| ModelError::Tensor { name: "tsr input".into(), reason: e.to_string() })
}

/// `pictures` (all `side`²) as `[n, 3, side, side]` in [0, 1], optionally mirrored.
fn stack<'p>(
    pictures: impl Iterator<Item = &'p image::RgbImage>,
    n: usize,
    side: usize,
    flip: bool,
) -> Result<HostTensor, ModelError> {
    let plane = side * side;
    let mut data = vec![0.0f32; n * RGB * plane];
    for (k, picture) in pictures.enumerate().take(n) {
        let dst = &mut data[k * RGB * plane..(k + 1) * RGB * plane];
        write_planar_unit(picture, dst);
        if flip {
            for row in dst.chunks_mut(side) {
                row.reverse();
            }
        }
    }
    HostTensor::new(vec![n, RGB, side, side], data)
        .map_err(|e| ModelError::Tensor { name: "tsr clip".into(), reason: e.to_string() })
}

/// The clip of `frames` consecutive frames of `clip` starting at `start`, optionally mirrored: the crops as ground
/// truth, and as input the matching `lq` pictures (half the crops' side) when given, else the crops averaged 2×2.
pub fn clip_tensors(
    clip: &ClipFrames,
    lq: Option<&[image::RgbImage]>,
    start: usize,
    frames: usize,
    flip: bool,
) -> Result<TsrClip, ModelError> {
    let side = clip.frames.first().map_or(0, |f| f.crop.width() as usize);
    let gt = stack(clip.frames[start..start + frames].iter().map(|f| &f.crop), frames, side, flip)?;
    let lq = match lq {
        Some(pictures) => stack(pictures[start..start + frames].iter(), frames, side / 2, flip)?,
        None => downscale2(&gt)?,
    };
    Ok(TsrClip { lq, gt })
}

/// Folder of a clip's generator outputs (`render_lq`), named like its crops.
pub const LQ_DIR: &str = "lq";

/// Renders the base model's reconstruction of every frame of the prepared clip in `clip_dir` into `lq/` — the
/// clip's source frame driven by each frame's landmarks, at the generator's size — as the official TSR training
/// reads it. Written to a staging folder and renamed, so `lq/` is complete or absent. Returns the frames written.
pub fn render_lq(
    clip_dir: &Path,
    engine: &mut crate::model::runner::GeneratorRunner,
    config: &crate::model::config::GeneratorConfig,
) -> Result<usize, TrainError> {
    use crate::model::inputs::{InputBuilder, prediction_to_image};
    let clip_ref = super::dataset::ClipRef { identity: String::new(), dir: clip_dir.to_path_buf() };
    let (clip, id_vector) = Dataset::load_clip(&clip_ref)?;
    let io = |path: &Path, e: &dyn std::fmt::Display| TrainError::Run { path: path.into(), reason: e.to_string() };
    let staging = clip_dir.join(format!(".{LQ_DIR}.staging-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| io(&staging, &e))?;
    let mut builder = InputBuilder::new(config).map_err(crate::clip::sample::SampleError::from)?;
    let mut picture = image::RgbImage::new(config.image_size as u32, config.image_size as u32);
    let mut named = BTreeMap::new();
    for k in 0..clip.frames.len() {
        let sample = crate::clip::sample::pair_sample(&mut builder, &clip, clip.source, k, &id_vector)?;
        for (name, value) in sample.inputs.named() {
            named.insert(name.to_owned(), value.clone());
        }
        let out = engine.run(&named)?;
        let prediction = out.get(crate::model::net::OUTPUT_PREDICTION).ok_or_else(|| {
            TrainError::Model(ModelError::Executor { executor: "generator", reason: "no prediction".into() })
        })?;
        prediction_to_image(prediction, &mut picture).map_err(|e| io(clip_dir, &e))?;
        let path = staging.join(super::dataset::frame_file(k));
        picture.save(&path).map_err(|e| io(&path, &e))?;
    }
    let target = clip_dir.join(LQ_DIR);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(|e| io(&target, &e))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| io(&target, &e))?;
    Ok(clip.frames.len())
}

/// A clip's `lq/` frames when it has them, resized to `side` when the generator's size differs.
fn load_lq(clip_dir: &Path, frames: usize, side: u32) -> Result<Option<Vec<image::RgbImage>>, TrainError> {
    let dir = clip_dir.join(LQ_DIR);
    if !dir.is_dir() {
        return Ok(None);
    }
    (0..frames)
        .map(|k| {
            let path = dir.join(super::dataset::frame_file(k));
            let picture = image::open(&path)
                .map_err(|e| TrainError::Run { path: path.clone(), reason: e.to_string() })?
                .into_rgb8();
            Ok(if picture.dimensions() == (side, side) {
                picture
            } else {
                image::imageops::resize(&picture, side, side, image::imageops::FilterType::Triangle)
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Gram matrices `F·Fᵀ/(c·h·w)` of `[n, c, h, w]` features, `[n, c, c]`.
fn gram<O: Ops>(ops: &mut O, f: &O::T) -> O::T {
    let s = ops.shape(f);
    let (n, c, hw) = (s[0], s[1], s[2] * s[3]);
    let flat = ops.reshape(f, &[n, c, hw]);
    let flat_t = ops.permute(&flat, &[0, 2, 1]);
    let g = ops.matmul(&flat, &flat_t);
    ops.scale_shift(&g, 1.0 / (c * hw) as f32, 0.0)
}

/// The TSR loss of `out` against `gt` (both `[n, 3, S, S]`) and its named terms.
pub fn tsr_loss<O: Ops>(
    ops: &mut O,
    vgg: Option<&Vgg19>,
    out: &O::T,
    gt: &O::T,
) -> Result<LossTerms<O::T>, ModelError> {
    let pixel = l1(ops, out, gt);
    let pixel = ops.scale_shift(&pixel, PIXEL_WEIGHT, 0.0);
    let mut terms = vec![(TERM_PIXEL, pixel.clone())];
    let mut total = pixel;
    if let Some(vgg) = vgg {
        // BasicSR's `range_norm` maps [-1, 1] to [0, 1]; the official run fed it [0, 1].
        let (o, g) = (ops.scale_shift(out, 0.5, 0.5), ops.scale_shift(gt, 0.5, 0.5));
        let taps: Vec<usize> = TSR_LAYERS.iter().map(|(i, _)| *i).collect();
        let (fo, fg) = (vgg.conv_features(ops, &o, &taps)?, vgg.conv_features(ops, &g, &taps)?);
        let (mut perceptual, mut style): (Option<O::T>, Option<O::T>) = (None, None);
        for ((a, b), (_, w)) in fo.iter().zip(&fg).zip(TSR_LAYERS) {
            let p = l1(ops, a, b);
            let p = ops.scale_shift(&p, w, 0.0);
            perceptual = Some(match perceptual {
                Some(acc) => ops.add(&acc, &p),
                None => p,
            });
            let (ga, gb) = (gram(ops, a), gram(ops, b));
            let d = ops.sub(&ga, &gb);
            let d = ops.abs(&d);
            let st = mean_all(ops, &d);
            let st = ops.scale_shift(&st, w, 0.0);
            style = Some(match style {
                Some(acc) => ops.add(&acc, &st),
                None => st,
            });
        }
        if let (Some(p), Some(st)) = (perceptual, style) {
            let p = ops.scale_shift(&p, PERCEPTUAL_WEIGHT, 0.0);
            let st = ops.scale_shift(&st, STYLE_WEIGHT, 0.0);
            total = ops.add(&total, &p);
            total = ops.add(&total, &st);
            terms.push((TERM_PERCEPTUAL, p));
            terms.push((TERM_STYLE, st));
        }
    }
    Ok(LossTerms { total, terms })
}

/// The discriminator's part in a TSR step: its host weights (for leaves not yet resident), its trainer and the
/// LSGAN weight.
pub struct GanStep<'a> {
    /// The discriminator's configuration and host weights.
    pub gan: &'a TsrGan,
    /// Its device-resident parameters and optimizer.
    pub trainer: &'a mut ResidentTrainer,
    /// Weight of the LSGAN term in the network's loss.
    pub weight: f32,
}

/// One update from `clips` on the device (their gradients averaged there, then passed through `reduce`, the
/// data-parallel seam), then, with a GAN term, one discriminator update on the detached outputs; returns the mean
/// loss of the network.
pub fn tsr_step(
    model: &TsrModel,
    trainer: &mut ResidentTrainer,
    clips: &[TsrClip],
    vgg: Option<&Vgg19>,
    reduce: &dyn GradientReduce,
    mut gan: Option<GanStep<'_>>,
) -> Result<f64, TrainError> {
    let mut loss_sum = 0.0f64;
    let mut grads_sum = DeviceSum::default();
    let mut outputs = Vec::new();
    for clip in clips {
        let joint = gan.as_ref().map(|g| Joint { store: &g.gan.weights, resident: g.trainer.params() });
        let adversary = gan.as_ref().map(|g| (&g.gan.config, g.weight));
        let (mut grads, loss, output) = trainer.gradients(&model.weights, joint, |exec| {
            let x = exec.input(&clip.lq);
            let out = tsr_forward(exec, &model.config, &x)?;
            let gt = exec.input(&clip.gt);
            let mut total = tsr_loss(exec, vgg, &out, &gt)?.total;
            if let Some((config, weight)) = adversary {
                let fake = discriminator_forward(exec, config, &out)?;
                let term = lsgan_generator(exec, weight, &fake);
                total = exec.add(&total, &term);
            }
            let report = read_report(exec, &total, &[]);
            // The discriminator judges the output as a constant: no autodiff history.
            let output = BurnValue::new(out.t.clone().without_autodiff(), out.rank);
            Ok((total, report, output))
        })?;
        loss_sum += f64::from(loss.total);
        grads.retain(|key, _| !key.starts_with(FROZEN_PREFIX) && !key.starts_with(DISCRIMINATOR_PREFIX));
        grads_sum.add(grads);
        if gan.is_some() {
            outputs.push(output);
        }
    }
    let mut mean_grads = grads_sum.mean();
    reduce.all_reduce_device(&mut mean_grads)?;
    trainer.apply_gradients(&mean_grads)?;
    if let Some(g) = gan.as_mut() {
        let adversarial = AdversarialWeights::default();
        let mut d_sum = DeviceSum::default();
        for (clip, fake_image) in clips.iter().zip(&outputs) {
            let (grads, _, ()) = g.trainer.gradients(&g.gan.weights, None, |exec| {
                let real_image = exec.input(&clip.gt);
                let real = discriminator_forward(exec, &g.gan.config, &real_image)?;
                let fake = discriminator_forward(exec, &g.gan.config, fake_image)?;
                let loss = discriminator_loss(exec, &adversarial, &real, &fake);
                Ok((loss, LossReport { total: f32::NAN, terms: Vec::new() }, ()))
            })?;
            d_sum.add(grads);
        }
        let mut d_grads = d_sum.mean();
        reduce.all_reduce_device(&mut d_grads)?;
        g.trainer.apply_gradients(&d_grads)?;
    }
    Ok(loss_sum / clips.len().max(1) as f64)
}

/// Draws the clips of `step` (depending only on the seed and the step).
struct ClipDraw<'d> {
    dataset: &'d Dataset,
    cache: BTreeMap<PathBuf, (ClipFrames, Option<Vec<image::RgbImage>>)>,
    out_size: usize,
}

impl ClipDraw<'_> {
    fn draw(&mut self, seed: u64, step: u64, batch: usize, frames: usize) -> Result<Vec<TsrClip>, TrainError> {
        let mut rng = SplitMix64::new(seed ^ step.wrapping_mul(STEP_SEED_MIX));
        let mut clips = Vec::with_capacity(batch);
        for _ in 0..batch {
            let clip_ref = self.dataset.pick_clip(&mut rng);
            if !self.cache.contains_key(&clip_ref.dir) {
                let (clip, _) = Dataset::load_clip(clip_ref)?;
                let side = clip.frames.first().map_or(0, |f| f.crop.width() as usize);
                if side != self.out_size {
                    return Err(TrainError::Run {
                        path: clip_ref.dir.clone(),
                        reason: format!(
                            "crops are {side}², the TSR network outputs {0}²: prepare the dataset with \
                             `--crop-size {0}`",
                            self.out_size
                        ),
                    });
                }
                if clip.frames.len() < frames {
                    return Err(TrainError::Run {
                        path: clip_ref.dir.clone(),
                        reason: format!("{} frames, a training clip needs {frames}", clip.frames.len()),
                    });
                }
                if clip.frames.windows(2).any(|w| w[1].index != w[0].index + 1) {
                    tracing::warn!(
                        "{}: the frames are not consecutive video frames, so the temporal model sees jumps between \
                         them; prepare TSR datasets with `prepare --consecutive`",
                        clip_ref.dir.display()
                    );
                }
                let lq = load_lq(&clip_ref.dir, clip.frames.len(), (self.out_size / 2) as u32)?;
                self.cache.insert(clip_ref.dir.clone(), (clip, lq));
            }
            let (clip, lq) = &self.cache[&clip_ref.dir];
            let start = (rng.next_u64() % (clip.frames.len() - frames + 1) as u64) as usize;
            let flip = rng.next_u64() & 1 == 1;
            clips.push(clip_tensors(clip, lq.as_deref(), start, frames, flip)?);
        }
        Ok(clips)
    }
}

/// Runs (or resumes) TSR training until `steps`; `progress` sees every step. Returns the model, its EMA and the
/// run's state.
/// `gan` is the discriminator to start from when `run.gan_weight` > 0 (its optimizer state is restored on resume).
pub fn train_tsr(
    mut model: TsrModel,
    mut gan: Option<TsrGan>,
    run: &TsrTraining<'_>,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&StepLog),
) -> Result<(TsrModel, WeightStore, RunState), TrainError> {
    if (run.gan_weight > 0.0) != gan.is_some() {
        return Err(TrainError::Run {
            path: run.run_dir.into(),
            reason: "a GAN term needs a discriminator, and a discriminator needs a GAN weight".into(),
        });
    }
    let (mut state, adam, mut ema_host) = resume_or_start(run, &mut model, gan.as_mut())?;
    // Parameters, moments and the EMA stay on the device; the host copies are written at checkpoints and at the end.
    let mut trainer = ResidentTrainer::from_adam(&adam, run.device);
    let mut d_trainer = gan.as_ref().map(|d| ResidentTrainer::from_adam(&d.adam, run.device));
    let mut ema = ResidentEma::new(EMA_DECAY);
    let mut draw = ClipDraw { dataset: run.dataset, cache: BTreeMap::new(), out_size: model.config.out_size };
    while state.step < run.steps {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let step = state.step + 1;
        let clips = draw.draw(state.seed, step, run.batch.max(1), run.frames)?;
        let lr = cosine_lr(step, run.lr_period);
        trainer.set_lr(lr);
        if let Some(d) = d_trainer.as_mut() {
            d.set_lr(lr);
        }
        let gan_step = match (gan.as_ref(), d_trainer.as_mut()) {
            (Some(gan), Some(trainer)) => Some(GanStep { gan, trainer, weight: run.gan_weight }),
            _ => None,
        };
        let loss = tsr_step(&model, &mut trainer, &clips, run.vgg, run.reduce, gan_step)?;
        ema.update(&trainer, &ema_host)?;
        state.step = step;
        let log = StepLog { step, loss, meta: None, adversarial: None };
        tracing::info!(?log, "tsr training step");
        progress(&log);
        state.log.push(log);
        if step % run.checkpoint_every.max(1) == 0 || step == run.steps {
            trainer.sync(&mut model.weights)?;
            ema.sync(&mut ema_host)?;
            let mut optimizer = trainer.to_adam()?.state().1;
            for (key, t) in ema_host.iter() {
                optimizer.insert(format!("{EMA_PREFIX}{key}"), t.clone());
            }
            let (weights, optimizer) = match (gan.as_mut(), d_trainer.as_ref()) {
                (Some(d), Some(d_trainer)) => {
                    d_trainer.sync(&mut d.weights)?;
                    d.adam = d_trainer.to_adam()?;
                    (join(&model.weights, &d.weights), join(&optimizer, &d.adam.state().1))
                }
                _ => (model.weights.clone(), optimizer),
            };
            checkpoint::save(run.run_dir, step, &state, &weights, &optimizer)?;
        }
    }
    trainer.sync(&mut model.weights)?;
    ema.sync(&mut ema_host)?;
    Ok((model, ema_host, state))
}

/// What a run folder must match: the network's configuration and the GAN settings.
fn run_config(run: &TsrTraining<'_>, model: &TsrModel, gan: Option<&TsrGan>) -> Result<serde_json::Value, TrainError> {
    let network: serde_json::Value = serde_json::from_str(&model.config.to_json())
        .map_err(|e| TrainError::Run { path: run.run_dir.into(), reason: e.to_string() })?;
    Ok(serde_json::json!({
        "network": network,
        "gan_weight": run.gan_weight,
        "discriminator": gan.map(|d| format!("{:?}", d.config)),
    }))
}

fn resume_or_start(
    run: &TsrTraining<'_>,
    model: &mut TsrModel,
    gan: Option<&mut TsrGan>,
) -> Result<(RunState, Adam, WeightStore), TrainError> {
    let run_err = |reason: String| TrainError::Run { path: run.run_dir.into(), reason };
    let config = run_config(run, model, gan.as_deref())?;
    let what = "architecture, stage or GAN setting";
    let Some(ckpt) = super::meta::matching_checkpoint(run.run_dir, STAGE_TSR, &config, what)? else {
        let state = RunState { stage: STAGE_TSR.into(), step: 0, seed: run.seed, config, log: Vec::new() };
        return Ok((state, Adam::new(tsr_adam_config()), model.weights.clone()));
    };
    let step = ckpt.state.step;
    let (weights, d_weights) = split_joint(ckpt.weights);
    let (optimizer, d_moments) = split_joint(ckpt.optimizer);
    *model = TsrModel::new(model.config.clone(), weights)?;
    if let Some(d) = gan {
        d_weights.validate(&super::discriminator::expected_entries(&d.config, model.config.out_size)?)?;
        d.weights = d_weights;
        d.adam = Adam::from_state(tsr_adam_config(), step, &d_moments).map_err(|e| run_err(e.to_string()))?;
    }
    let mut ema = WeightStore::new();
    for (key, t) in optimizer.iter() {
        if let Some(bare) = key.strip_prefix(EMA_PREFIX) {
            ema.insert(bare.to_owned(), t.clone());
        }
    }
    let adam = Adam::from_state(tsr_adam_config(), step, &optimizer).map_err(|e| run_err(e.to_string()))?;
    tracing::info!(step, "training: resuming TSR");
    Ok((ckpt.state, adam, ema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_ends_at_the_floor() {
        assert_eq!(cosine_lr(1, 100), LR);
        assert!((cosine_lr(51, 100) - (LR + LR_MIN) / 2.0).abs() < 1e-9);
        assert!((cosine_lr(101, 100) - LR_MIN).abs() < 1e-12);
        assert!((cosine_lr(5000, 100) - LR_MIN).abs() < 1e-12, "stays at the floor past the period");
    }

    #[test]
    fn clips_take_generator_outputs_as_inputs_when_given() {
        use crate::clip::frames::CropFrame;
        let frame = |v: u8| CropFrame {
            crop: image::RgbImage::from_fn(4, 4, |x, _| image::Rgb([v + x as u8, 0, 0])),
            landmarks: Vec::new(),
            index: 0,
        };
        let clip = ClipFrames {
            frames: vec![frame(0), frame(10), frame(20)],
            source: 0,
            holdout: Vec::new(),
            source_picture: image::RgbImage::new(1, 1),
            source_picture_landmarks: Vec::new(),
            frames_read: 3,
            frames_without_face: 0,
        };
        let lq: Vec<image::RgbImage> =
            (0..3).map(|k| image::RgbImage::from_fn(2, 2, |x, _| image::Rgb([100 + 10 * k + x as u8, 0, 0]))).collect();
        let with_lq = clip_tensors(&clip, Some(&lq), 1, 2, true).unwrap();
        assert_eq!(with_lq.gt.shape(), [2, 3, 4, 4]);
        assert_eq!(with_lq.lq.shape(), [2, 3, 2, 2]);
        // Frame 1's generator output, mirrored: red 111 then 110 on each row.
        assert_eq!(&with_lq.lq.data()[..2], [111.0 / 255.0, 110.0 / 255.0]);
        // Ground truth mirrored too: frame 1's row 10, 11, 12, 13 reversed.
        assert_eq!(with_lq.gt.data()[0], 13.0 / 255.0);
        let averaged = clip_tensors(&clip, None, 1, 2, false).unwrap();
        assert!((averaged.lq.data()[0] - 10.5 / 255.0).abs() < 1e-7);
    }

    #[test]
    fn downscale_averages_blocks() {
        let t = HostTensor::new(vec![1, 1, 2, 4], vec![0.0, 1.0, 2.0, 2.0, 1.0, 2.0, 4.0, 4.0]).unwrap();
        assert_eq!(downscale2(&t).unwrap().data(), [1.0, 3.0]);
    }

    #[test]
    fn the_device_ema_moves_towards_the_trained_weights_from_where_the_run_started() {
        use crate::model::ModelError;
        use crate::model::exec::burn::BurnExec;
        // loss = mean|w − 0| + mean|b − 0|: each Adam step (lr 0.5, no clip) moves every element by 0.5 towards 0.
        let forward = |exec: &mut BurnExec<'_>| -> Result<(BurnValue, LossReport), ModelError> {
            let w = exec.param("w", &[2])?;
            let b = exec.param("b", &[1])?;
            let (zw, zb) = (exec.input(&HostTensor::zeros(&[2])), exec.input(&HostTensor::zeros(&[1])));
            let (lw, lb) = (exec.mean_abs(&w, &zw), exec.mean_abs(&b, &zb));
            Ok((exec.add(&lw, &lb), LossReport { total: 0.0, terms: Vec::new() }))
        };
        let mut weights = WeightStore::new();
        weights.insert("w", HostTensor::new(vec![2], vec![2.0, -2.0]).unwrap());
        weights.insert("b", HostTensor::new(vec![1], vec![5.0]).unwrap());
        // A resumed run's average for `w`; `b` has none and starts from its value after the first step.
        let mut ema_host = WeightStore::new();
        ema_host.insert("w", HostTensor::new(vec![2], vec![1.0, 1.0]).unwrap());
        ema_host.insert("frozen", HostTensor::new(vec![1], vec![7.0]).unwrap());
        let device = burn::tensor::Device::flex();
        let config = AdamConfig { lr: 0.5, clip_grad_norm: None, ..tsr_adam_config() };
        let mut trainer = ResidentTrainer::new(config, &device);
        let mut ema = ResidentEma::new(0.75);
        trainer.step(&weights, forward).unwrap();
        ema.update(&trainer, &ema_host).unwrap();
        ema.sync(&mut ema_host).unwrap();
        // w: 0.75·1 + 0.25·(2 − 0.5) and 0.75·1 + 0.25·(−2 + 0.5); b: its value after the step.
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close(ema_host.get("w").unwrap().data(), &[1.125, 0.375]), "{:?}", ema_host.get("w"));
        assert!(close(ema_host.get("b").unwrap().data(), &[4.5]), "{:?}", ema_host.get("b"));
        assert_eq!(ema_host.get("frozen").unwrap().data(), [7.0], "entries never trained are kept");
        trainer.step(&weights, forward).unwrap();
        ema.update(&trainer, &ema_host).unwrap();
        ema.sync(&mut ema_host).unwrap();
        assert!(close(ema_host.get("w").unwrap().data(), &[0.75 * 1.125 + 0.25, 0.75 * 0.375 - 0.25]));
        assert!(close(ema_host.get("b").unwrap().data(), &[0.75 * 4.5 + 0.25 * 4.0]));
    }
}
