//! The multi-scale patch discriminator of the official base-model training, and its LSGAN and feature-matching
//! losses.
//!
//! Owns the discriminator's architecture (written once against `Ops`, like the generator, so it is differentiable on
//! burn and listable by `ShapeOps`), its state-dict keys (the official `discs.<scale>.…` names, so the official
//! `discriminator` state dict loads), its random initialisation and the adversarial loss terms. Receives images in
//! [0, 1] (`[1, 3, S, S]`); emits per-scale patch maps and the intermediate feature maps feature matching compares.
//!
//! Per scale (the official `Discriminator`, Pix2Pix-like, no spectral norm, no keypoint input): `num_blocks` down
//! blocks of conv 4×4 (stride 1, no padding, bias) → instance norm with affine (all but the first block) → leaky
//! ReLU 0.2 → 2×2 average pooling (all but the last block), channels `min(max_features, block_expansion·2^(i+1))`,
//! then a 1×1 conv to one channel. Scale s sees the anti-aliased pyramid level of the image (σ = (1/s − 1)/2), as
//! the generator's perceptual loss does. The official configuration uses the single scale 1 with 32 → 64…512.

use crate::model::ModelError;
use crate::model::exec::shape::ShapeOps;
use crate::model::net::blocks::{self, ConvGeom};
use crate::model::ops::Ops;
use crate::model::weights::{ExpectedEntry, WeightStore};
use crate::rng::SplitMix64;
use crate::tensor::HostTensor;

use super::adam::AdamConfig;
use super::loss::{mean_all, pyramid_level};

/// Key prefix of the discriminator's entries (its official module name), also in joint checkpoints.
pub const DISCRIMINATOR_PREFIX: &str = "discs.";
/// Slope of the leaky ReLUs.
const LEAKY_SLOPE: f32 = 0.2;
const DOWN_KERNEL: usize = 4;
/// Standard deviation of the official initialisation (`xavier_normal_` with gain 0.02 on every conv).
const INIT_GAIN: f64 = 0.02;

/// Discriminator widths and scales (the official `model.discriminator` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscriminatorConfig {
    /// Channels of the input image (3: RGB).
    pub image_channels: usize,
    /// Output channels of the first down block, halved (later blocks double it, up to `max_features`).
    pub block_expansion: usize,
    /// Cap on any block's channels.
    pub max_features: usize,
    /// Down blocks per scale (also the number of feature maps feature matching compares).
    pub num_blocks: usize,
    /// Pyramid strides the scales look at (1 = full resolution, 2 = half, …).
    pub strides: Vec<usize>,
}

impl DiscriminatorConfig {
    /// `meta_portrait_256_pretrain_full.yaml`: scales `[1]`, block_expansion 32, max_features 512, num_blocks 4.
    pub fn official() -> Self {
        Self { image_channels: 3, block_expansion: 32, max_features: 512, num_blocks: 4, strides: vec![1] }
    }

    /// Small widths for tests: same structure, two scales (so the multi-scale path is exercised).
    pub fn tiny() -> Self {
        Self { image_channels: 3, block_expansion: 4, max_features: 16, num_blocks: 4, strides: vec![1, 2] }
    }

    /// `official` or `tiny`.
    pub fn resolve(name: &str) -> Result<Self, ModelError> {
        match name {
            "official" => Ok(Self::official()),
            "tiny" => Ok(Self::tiny()),
            other => Err(ModelError::Config {
                origin: "discriminator".into(),
                reason: format!("unknown discriminator `{other}` (expected `official` or `tiny`)"),
            }),
        }
    }

    fn channels_out(&self, block: usize) -> usize {
        self.max_features.min(self.block_expansion << (block + 1))
    }

    fn channels_in(&self, block: usize) -> usize {
        if block == 0 { self.image_channels } else { self.max_features.min(self.block_expansion << block) }
    }
}

/// The official module key of a scale: `str(scale).replace('.', '-')` — `1`, `0-5`, `0-25`, …
pub fn scale_key(stride: usize) -> String {
    if stride <= 1 {
        return "1".into();
    }
    format!("{}", 1.0 / stride as f64).replace('.', "-")
}

/// One scale's verdict: the patch map and the feature map after every down block.
pub struct ScaleOutput<T> {
    /// Output of each down block, in order (`num_blocks` maps).
    pub features: Vec<T>,
    /// The patch map `[1, 1, h, w]`: one real/fake score per patch (LSGAN: 1 real, 0 fake).
    pub prediction: T,
}

/// Runs every scale on `image` (`[1, C, S, S]` in [0, 1]).
pub fn discriminator_forward<O: Ops>(
    ops: &mut O,
    cfg: &DiscriminatorConfig,
    image: &O::T,
) -> Result<Vec<ScaleOutput<O::T>>, ModelError> {
    let mut outputs = Vec::with_capacity(cfg.strides.len());
    for &stride in &cfg.strides {
        let prefix = format!("discs.{}", scale_key(stride));
        let mut x = pyramid_level(ops, image, stride);
        let mut features = Vec::with_capacity(cfg.num_blocks);
        for block in 0..cfg.num_blocks {
            let p = format!("{prefix}.down_blocks.{block}");
            let geom = ConvGeom { kernel: DOWN_KERNEL, stride: 1, pad: 0 };
            let cout = cfg.channels_out(block);
            x = blocks::conv(ops, &format!("{p}.conv"), &x, cfg.channels_in(block), cout, geom)?;
            if block != 0 {
                x = blocks::instance_norm_affine(ops, &format!("{p}.norm"), &x, cout)?;
            }
            x = ops.leaky_relu(&x, LEAKY_SLOPE);
            if block + 1 != cfg.num_blocks {
                x = ops.avg_pool2(&x);
            }
            features.push(x.clone());
        }
        let last = cfg.channels_out(cfg.num_blocks - 1);
        let geom = ConvGeom { kernel: 1, stride: 1, pad: 0 };
        let prediction = blocks::conv(ops, &format!("{prefix}.conv"), &x, last, 1, geom)?;
        outputs.push(ScaleOutput { features, prediction });
    }
    Ok(outputs)
}

/// Every state-dict entry of the discriminator for `image_size`² inputs, in declaration order.
pub fn expected_entries(cfg: &DiscriminatorConfig, image_size: usize) -> Result<Vec<ExpectedEntry>, ModelError> {
    let mut ops = ShapeOps::new();
    let image = vec![1, cfg.image_channels, image_size, image_size];
    discriminator_forward(&mut ops, cfg, &image)?;
    if let Some(err) = ops.take_error() {
        return Err(err);
    }
    Ok(ops.into_entries())
}

/// The official initialisation: every conv weight `N(0, (0.02·√(2/(fan_in + fan_out)))²)` (xavier normal, gain
/// 0.02), conv biases 0, instance-norm scales 1 and shifts 0 (PyTorch's defaults; the official init skips them).
pub fn random_weights(cfg: &DiscriminatorConfig, image_size: usize, seed: u64) -> Result<WeightStore, ModelError> {
    let mut rng = SplitMix64::new(seed);
    let mut store = WeightStore::new();
    for entry in expected_entries(cfg, image_size)? {
        let n: usize = entry.shape.iter().product();
        let data = if entry.key.ends_with(".conv.weight") {
            let receptive: usize = entry.shape[2..].iter().product();
            let fan_in = entry.shape[1] * receptive;
            let fan_out = entry.shape[0] * receptive;
            let std = INIT_GAIN * (2.0 / (fan_in + fan_out) as f64).sqrt();
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        } else if entry.key.ends_with(".norm.weight") {
            vec![1.0; n]
        } else {
            vec![0.0; n]
        };
        store.insert(
            entry.key.clone(),
            HostTensor::new(entry.shape.clone(), data)
                .map_err(|e| ModelError::Tensor { name: entry.key.clone(), reason: e.to_string() })?,
        );
    }
    Ok(store)
}

/// Splits a checkpoint store of a run with a discriminator into the other network's entries and the discriminator's
/// (weights, or optimizer moments `m.`/`v.` of either).
pub fn split_joint(mut store: WeightStore) -> (WeightStore, WeightStore) {
    let (mut generator, mut discriminator) = (WeightStore::new(), WeightStore::new());
    for (key, t) in std::mem::take(store.tensors_mut()) {
        let bare = key.strip_prefix("m.").or_else(|| key.strip_prefix("v.")).unwrap_or(&key);
        if bare.starts_with(DISCRIMINATOR_PREFIX) {
            discriminator.insert(key, t);
        } else {
            generator.insert(key, t);
        }
    }
    (generator, discriminator)
}

/// One store holding both networks' entries (their keys are disjoint).
pub fn join(a: &WeightStore, b: &WeightStore) -> WeightStore {
    let mut joint = a.clone();
    for (key, t) in b.iter() {
        joint.insert(key.clone(), t.clone());
    }
    joint
}

/// Adversarial loss weights (`train_params.loss_weights` of the official full stage).
#[derive(Clone, Debug, PartialEq)]
pub struct AdversarialWeights {
    /// `generator_gan`.
    pub generator_gan: f32,
    /// `discriminator_gan`.
    pub discriminator_gan: f32,
    /// `feature_matching`, one weight per down block.
    pub feature_matching: Vec<f32>,
}

impl Default for AdversarialWeights {
    fn default() -> Self {
        Self { generator_gan: 1.0, discriminator_gan: 1.0, feature_matching: vec![10.0; 4] }
    }
}

/// The generator's adversarial terms: LSGAN `Σ_scales w·mean((1 − D(fake))²)` and feature matching
/// `Σ_scales Σ_blocks w_i·mean|F_i(real) − F_i(fake)|`.
pub struct GeneratorAdversarial<T> {
    /// The LSGAN term (already weighted), a one-element tensor.
    pub gan: T,
    /// The feature-matching term (already weighted), a one-element tensor.
    pub feature_matching: T,
}

/// Both generator terms from the discriminator's outputs on the real and the generated image (scales in the same
/// order); a missing term is 0.
pub fn generator_adversarial<O: Ops>(
    ops: &mut O,
    weights: &AdversarialWeights,
    real: &[ScaleOutput<O::T>],
    fake: &[ScaleOutput<O::T>],
) -> GeneratorAdversarial<O::T> {
    let gan = lsgan_generator(ops, weights.generator_gan, fake);
    let mut fm: Option<O::T> = None;
    for (r, f) in real.iter().zip(fake) {
        for ((fr, ff), w) in r.features.iter().zip(&f.features).zip(&weights.feature_matching) {
            let diff = ops.sub(fr, ff);
            let abs = ops.abs(&diff);
            let term = mean_all(ops, &abs);
            let term = ops.scale_shift(&term, *w, 0.0);
            fm = Some(match fm {
                Some(acc) => ops.add(&acc, &term),
                None => term,
            });
        }
    }
    let feature_matching = fm.unwrap_or_else(|| ops.constant(HostTensor::zeros(&[1])));
    GeneratorAdversarial { gan, feature_matching }
}

/// The generator's LSGAN term alone: `Σ_scales weight·mean((1 − D(fake))²)`.
pub fn lsgan_generator<O: Ops>(ops: &mut O, weight: f32, fake: &[ScaleOutput<O::T>]) -> O::T {
    let mut gan: Option<O::T> = None;
    for f in fake {
        let miss = ops.scale_shift(&f.prediction, -1.0, 1.0);
        let sq = ops.mul(&miss, &miss);
        let term = mean_all(ops, &sq);
        let term = ops.scale_shift(&term, weight, 0.0);
        gan = Some(match gan {
            Some(acc) => ops.add(&acc, &term),
            None => term,
        });
    }
    gan.unwrap_or_else(|| ops.constant(HostTensor::zeros(&[1])))
}

/// The discriminator's LSGAN loss `Σ_scales w·mean((1 − D(real))² + D(fake)²)`.
pub fn discriminator_loss<O: Ops>(
    ops: &mut O,
    weights: &AdversarialWeights,
    real: &[ScaleOutput<O::T>],
    fake: &[ScaleOutput<O::T>],
) -> O::T {
    let mut total: Option<O::T> = None;
    for (r, f) in real.iter().zip(fake) {
        let miss = ops.scale_shift(&r.prediction, -1.0, 1.0);
        let real_sq = ops.mul(&miss, &miss);
        let fake_sq = ops.mul(&f.prediction, &f.prediction);
        let both = ops.add(&real_sq, &fake_sq);
        let term = mean_all(ops, &both);
        let term = ops.scale_shift(&term, weights.discriminator_gan, 0.0);
        total = Some(match total {
            Some(acc) => ops.add(&acc, &term),
            None => term,
        });
    }
    total.unwrap_or_else(|| ops.constant(HostTensor::zeros(&[1])))
}

/// The discriminator optimizer of the official code: Adam lr 2e-4, betas (0.5, 0.999), clip 0.3, no per-module
/// multipliers.
pub fn discriminator_adam_config() -> AdamConfig {
    AdamConfig { lr_multipliers: Vec::new(), ..AdamConfig::default() }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::model::exec::burn::BurnExec;
    use crate::train::adam::Adam;

    #[test]
    fn official_listing_and_patch_map_size() {
        let cfg = DiscriminatorConfig::official();
        let entries = expected_entries(&cfg, 256).unwrap();
        let listing: Vec<(String, Vec<usize>)> = entries.into_iter().map(|e| (e.key, e.shape)).collect();
        let mut want: Vec<(String, Vec<usize>)> = Vec::new();
        let widths = [(3, 64), (64, 128), (128, 256), (256, 512)];
        for (i, (cin, cout)) in widths.into_iter().enumerate() {
            want.push((format!("discs.1.down_blocks.{i}.conv.weight"), vec![cout, cin, 4, 4]));
            want.push((format!("discs.1.down_blocks.{i}.conv.bias"), vec![cout]));
            if i > 0 {
                want.push((format!("discs.1.down_blocks.{i}.norm.weight"), vec![cout]));
                want.push((format!("discs.1.down_blocks.{i}.norm.bias"), vec![cout]));
            }
        }
        want.push(("discs.1.conv.weight".into(), vec![1, 512, 1, 1]));
        want.push(("discs.1.conv.bias".into(), vec![1]));
        assert_eq!(listing, want);

        let mut ops = ShapeOps::new();
        let out = discriminator_forward(&mut ops, &cfg, &vec![1, 3, 256, 256]).unwrap();
        // 256 → conv4 253 → pool 126 → 123 → 61 → 58 → 29 → 26 (no pooling after the last block).
        let sizes: Vec<Vec<usize>> = out[0].features.clone();
        assert_eq!(sizes, [vec![1, 64, 126, 126], vec![1, 128, 61, 61], vec![1, 256, 29, 29], vec![1, 512, 26, 26]]);
        assert_eq!(out[0].prediction, vec![1, 1, 26, 26]);
        assert_eq!([scale_key(1), scale_key(2), scale_key(4)], ["1", "0-5", "0-25"]);
    }

    #[test]
    fn lsgan_and_feature_matching_match_hand_values() {
        let store = WeightStore::new();
        let mut exec = BurnExec::new(&store, &Device::flex(), false);
        let mut constant = |v: f32, shape: &[usize]| {
            exec.input(&HostTensor::new(shape.to_vec(), vec![v; shape.iter().product()]).unwrap())
        };
        let real = vec![ScaleOutput {
            features: vec![constant(0.3, &[1, 2, 3, 3])],
            prediction: constant(0.25, &[1, 1, 4, 4]),
        }];
        let fake = vec![ScaleOutput {
            features: vec![constant(0.1, &[1, 2, 3, 3])],
            prediction: constant(0.5, &[1, 1, 4, 4]),
        }];
        let weights = AdversarialWeights { generator_gan: 2.0, discriminator_gan: 3.0, feature_matching: vec![10.0] };
        let g = generator_adversarial(&mut exec, &weights, &real, &fake);
        let value = |exec: &BurnExec<'_>, t| exec.to_host(t).data()[0];
        // 2·(1 − 0.5)² = 0.5; 10·|0.3 − 0.1| = 2; 3·((1 − 0.25)² + 0.5²) = 3·0.8125.
        assert!((value(&exec, &g.gan) - 0.5).abs() < 1e-6);
        assert!((value(&exec, &g.feature_matching) - 2.0).abs() < 1e-5);
        let d = discriminator_loss(&mut exec, &weights, &real, &fake);
        assert!((value(&exec, &d) - 2.4375).abs() < 1e-5);
    }

    #[test]
    fn discriminator_steps_separate_real_from_fake() {
        let cfg = DiscriminatorConfig::tiny();
        // The half-resolution scale needs ≥ 64 pixels for four unpadded 4×4 convolutions and three poolings.
        const SIZE: usize = 128;
        let mut weights = random_weights(&cfg, SIZE, 5).unwrap();
        let mut rng = SplitMix64::new(9);
        let n = 3 * SIZE * SIZE;
        let real = HostTensor::new(vec![1, 3, SIZE, SIZE], (0..n).map(|_| rng.uniform() as f32).collect()).unwrap();
        let fake = HostTensor::new(vec![1, 3, SIZE, SIZE], vec![0.5; n]).unwrap();
        let adv = AdversarialWeights::default();
        let mut adam = Adam::new(discriminator_adam_config());
        let mut losses = Vec::new();
        for _ in 0..6 {
            let (grads, loss) = {
                let mut exec = BurnExec::new(&weights, &Device::flex(), true);
                let (r, f) = (exec.input(&real), exec.input(&fake));
                let (dr, df) = (
                    discriminator_forward(&mut exec, &cfg, &r).unwrap(),
                    discriminator_forward(&mut exec, &cfg, &f).unwrap(),
                );
                let loss = discriminator_loss(&mut exec, &adv, &dr, &df);
                (exec.backward(&loss).unwrap(), exec.to_host(&loss).data()[0])
            };
            assert_eq!(grads.len(), expected_entries(&cfg, SIZE).unwrap().len(), "every parameter gets a gradient");
            adam.step(weights.tensors_mut(), &grads);
            losses.push(loss);
        }
        assert!(losses[5] < losses[0], "{losses:?}");
    }
}
