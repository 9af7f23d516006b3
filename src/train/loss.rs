//! The generator's training loss, as the official `GeneratorFullModel.forward_refine` computes it.
//!
//! Owns the image pyramid (anti-aliased downsampling: a Gaussian blur of σ = (1/scale − 1)/2 with a kernel of
//! 2·round(4σ)+1 taps, zero padding, then nearest subsampling) and the loss terms over it: VGG-19 perceptual
//! (`Σ_scale Σ_layer w_l · mean|φ_l(G) − φ_l(T)|`, when VGG weights are given), eye and mouth box losses
//! (`w · Σ_scale Σ (G − T)²·M / (Σ M + 1e-6)`, the mask nearest-resized to each scale) and L1 at full resolution.
//! Receives the prediction and target `[1, 3, S, S]` (both in [0, 1]) and the eye/mouth masks `[1, 1, S, S]` (built by
//! `face::condition`) as
//! executor values; emits the weighted total and each named term (one-element tensors).

use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::tensor::HostTensor;

use super::vgg::{VGG_FEATURES, Vgg19};

/// Pyramid scales of the official configs (`train.scales`), as subsampling strides.
pub const PYRAMID_STRIDES: [usize; 4] = [1, 2, 4, 8];
/// Denominator guard of the masked losses.
const MASK_EPS: f32 = 1e-6;

/// Loss weights (`train.loss_weights` of the official meta-training config, plus L1).
#[derive(Clone, Debug, PartialEq)]
pub struct LossWeights {
    /// Weight of `mean|G − T|` at full resolution (0: the term is left out).
    pub l1: f32,
    /// Weight of the eye-box loss (0: left out).
    pub eye: f32,
    /// Weight of the mouth-box loss (0: left out).
    pub mouth: f32,
    /// Per VGG layer (relu1_1 … relu5_1).
    pub perceptual: [f32; VGG_FEATURES],
}

impl Default for LossWeights {
    fn default() -> Self {
        Self { l1: 1.0, eye: 50.0, mouth: 50.0, perceptual: [10.0; VGG_FEATURES] }
    }
}

impl LossWeights {
    /// The official joint, meta and personalization objective: L1, eye and mouth boxes (50 each), and the VGG-19
    /// pyramid perceptual loss (10 per layer) when VGG weights are present (`with_vgg`), else without it.
    pub fn generator(with_vgg: bool) -> Self {
        if with_vgg { Self::default() } else { Self { perceptual: [0.0; VGG_FEATURES], ..Self::default() } }
    }

    /// The official warping pre-training: the perceptual loss of the warped source alone; L1 stands in for it
    /// without VGG weights.
    pub fn warp_stage(with_vgg: bool) -> Self {
        if with_vgg {
            Self { l1: 0.0, eye: 0.0, mouth: 0.0, ..Self::default() }
        } else {
            Self { l1: 1.0, eye: 0.0, mouth: 0.0, perceptual: [0.0; VGG_FEATURES] }
        }
    }
}

/// Names of the loss terms, as reported: the L1 term.
pub const TERM_L1: &str = "l1";
/// The eye-box term.
pub const TERM_EYE: &str = "eye";
/// The mouth-box term.
pub const TERM_MOUTH: &str = "mouth";
/// The VGG-19 pyramid perceptual term.
pub const TERM_PERCEPTUAL: &str = "perceptual";

/// The weighted total and its terms.
pub struct LossTerms<T> {
    /// Sum of the terms (what is differentiated), a one-element tensor.
    pub total: T,
    /// Each weighted term by its `TERM_*` name; terms of weight 0 are absent.
    pub terms: Vec<(&'static str, T)>,
}

/// The depthwise Gaussian of the anti-aliased downsampling by `stride`, as a `[c, c, k, k]` block-diagonal kernel
/// (so a plain convolution applies it per channel), and its padding.
pub fn antialias_kernel(channels: usize, stride: usize) -> (HostTensor, usize) {
    let scale = 1.0 / stride as f64;
    let sigma = (1.0 / scale - 1.0) / 2.0;
    // Python's round() on these values (k·2 exactly) agrees with f64::round.
    let size = 2 * (sigma * 4.0).round() as usize + 1;
    let mean = (size - 1) as f32 / 2.0;
    let sigma = sigma as f32;
    let g: Vec<f32> = (0..size).map(|i| (-((i as f32 - mean).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = g.iter().flat_map(|a| g.iter().map(move |b| a * b)).sum();
    let mut data = vec![0.0f32; channels * channels * size * size];
    for c in 0..channels {
        for (y, gy) in g.iter().enumerate() {
            for (x, gx) in g.iter().enumerate() {
                data[((c * channels + c) * size + y) * size + x] = gy * gx / total;
            }
        }
    }
    let kernel =
        HostTensor::new(vec![channels, channels, size, size], data).unwrap_or_else(|_| HostTensor::zeros(&[0]));
    (kernel, size / 2)
}

/// `x` at one pyramid level: blurred and subsampled by `stride` (identity at 1).
pub fn pyramid_level<O: Ops>(ops: &mut O, x: &O::T, stride: usize) -> O::T {
    if stride == 1 {
        return x.clone();
    }
    let c = ops.shape(x)[1];
    let (kernel, pad) = antialias_kernel(c, stride);
    let k = ops.constant(kernel);
    ops.conv2d(x, &k, None, stride, pad)
}

/// Nearest subsampling by `stride` (`F.interpolate(mode='nearest', size=S/stride)` picks pixel `stride·i`).
fn subsample<O: Ops>(ops: &mut O, x: &O::T, stride: usize) -> O::T {
    if stride == 1 {
        return x.clone();
    }
    let c = ops.shape(x)[1];
    let mut eye = vec![0.0f32; c * c];
    (0..c).for_each(|i| eye[i * c + i] = 1.0);
    let pick = ops.constant(HostTensor::new(vec![c, c, 1, 1], eye).unwrap_or_else(|_| HostTensor::zeros(&[0])));
    ops.conv2d(x, &pick, None, stride, 0)
}

/// Sum of every element, as a one-element tensor.
pub fn sum_all<O: Ops>(ops: &mut O, x: &O::T) -> O::T {
    let n: usize = ops.shape(x).iter().product();
    let flat = ops.reshape(x, &[1, n]);
    let s = ops.sum_keepdim(&flat, 1);
    ops.reshape(&s, &[1])
}

/// Mean of every element, as a one-element tensor.
pub fn mean_all<O: Ops>(ops: &mut O, x: &O::T) -> O::T {
    let n: usize = ops.shape(x).iter().product();
    let s = sum_all(ops, x);
    ops.scale_shift(&s, 1.0 / n.max(1) as f32, 0.0)
}

/// `mean|a − b|`.
pub fn l1<O: Ops>(ops: &mut O, a: &O::T, b: &O::T) -> O::T {
    let d = ops.sub(a, b);
    let d = ops.abs(&d);
    mean_all(ops, &d)
}

/// `Σ (a − b)²·m / (Σ m + eps)` with a one-channel mask broadcast over the image channels.
pub fn masked_mse<O: Ops>(ops: &mut O, a: &O::T, b: &O::T, mask: &O::T) -> O::T {
    let d = ops.sub(a, b);
    let d2 = ops.mul(&d, &d);
    let weighted = ops.mul(&d2, mask);
    let num = sum_all(ops, &weighted);
    let den = sum_all(ops, mask);
    let den = ops.scale_shift(&den, 1.0, MASK_EPS);
    ops.div(&num, &den)
}

/// The loss of one prediction. `vgg: None` drops the perceptual term (reported by its absence).
pub fn generator_loss<O: Ops>(
    ops: &mut O,
    weights: &LossWeights,
    vgg: Option<&Vgg19>,
    prediction: &O::T,
    target: &O::T,
    eye_mask: &O::T,
    mouth_mask: &O::T,
) -> Result<LossTerms<O::T>, ModelError> {
    let mut terms = Vec::new();
    let (mut perceptual, mut eye, mut mouth) = (Vec::new(), Vec::new(), Vec::new());
    for stride in PYRAMID_STRIDES {
        let g = pyramid_level(ops, prediction, stride);
        let t = pyramid_level(ops, target, stride);
        if let Some(vgg) = vgg {
            let (fg, ft) = (vgg.features(ops, &g)?, vgg.features(ops, &t)?);
            for ((a, b), w) in fg.iter().zip(&ft).zip(weights.perceptual) {
                if w != 0.0 {
                    let v = l1(ops, a, b);
                    perceptual.push(ops.scale_shift(&v, w, 0.0));
                }
            }
        }
        if weights.eye != 0.0 {
            let m = subsample(ops, eye_mask, stride);
            eye.push(masked_mse(ops, &g, &t, &m));
        }
        if weights.mouth != 0.0 {
            let m = subsample(ops, mouth_mask, stride);
            mouth.push(masked_mse(ops, &g, &t, &m));
        }
    }
    let mut sum = |ops: &mut O, parts: Vec<O::T>, w: f32, name: &'static str| {
        if let Some(first) = parts.first() {
            let total = parts[1..].iter().fold(first.clone(), |acc, p| ops.add(&acc, p));
            terms.push((name, ops.scale_shift(&total, w, 0.0)));
        }
    };
    sum(ops, perceptual, 1.0, TERM_PERCEPTUAL);
    sum(ops, eye, weights.eye, TERM_EYE);
    sum(ops, mouth, weights.mouth, TERM_MOUTH);
    if weights.l1 != 0.0 {
        let v = l1(ops, prediction, target);
        terms.push((TERM_L1, ops.scale_shift(&v, weights.l1, 0.0)));
    }
    let Some((_, first)) = terms.first() else {
        return Err(ModelError::Config { origin: "loss".into(), reason: "every loss weight is zero".into() });
    };
    let mut total = first.clone();
    for (_, t) in &terms[1..] {
        total = ops.add(&total, t);
    }
    Ok(LossTerms { total, terms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::exec::burn::BurnExec;
    use crate::model::weights::WeightStore;

    #[test]
    fn antialias_kernels_match_the_reference_sizes_and_sum_to_one() {
        for (stride, size) in [(2, 5), (4, 13), (8, 29)] {
            let (k, pad) = antialias_kernel(3, stride);
            assert_eq!(k.shape(), &[3, 3, size, size]);
            assert_eq!(pad, size / 2);
            let per_channel: f32 = k.data()[..size * size].iter().sum();
            assert!((per_channel - 1.0).abs() < 1e-5);
            // Off-diagonal blocks are zero: channels do not mix.
            assert!(k.data()[size * size..2 * size * size].iter().all(|v| *v == 0.0));
        }
    }

    #[test]
    fn losses_are_zero_on_equal_images_and_match_hand_values() {
        let store = WeightStore::new();
        let mut exec = BurnExec::new(&store, &burn::tensor::Device::flex(), false);
        let a = HostTensor::filled(&[1, 3, 16, 16], 0.5);
        let mut b = a.clone();
        b.data_mut()[0] = 0.9; // one pixel of channel 0, at (0, 0)
        let mut mask = HostTensor::zeros(&[1, 1, 16, 16]);
        mask.data_mut()[0] = 1.0;
        mask.data_mut()[1] = 1.0;
        let (av, bv, mv) = (exec.input(&a), exec.input(&b), exec.input(&mask));
        let w = LossWeights { perceptual: [0.0; 5], ..LossWeights::default() };
        let same = generator_loss(&mut exec, &w, None, &av, &av, &mv, &mv).unwrap();
        assert_eq!(exec.to_host(&same.total).data(), &[0.0]);
        let diff = generator_loss(&mut exec, &w, None, &bv, &av, &mv, &mv).unwrap();
        let term = |name: &str| {
            let (_, t) = diff.terms.iter().find(|(n, _)| *n == name).unwrap();
            exec.to_host(t).data()[0]
        };
        assert!((term(TERM_L1) - 0.4 / (3.0 * 256.0)).abs() < 1e-7);
        // At full resolution: 0.16 over 2 mask pixels; at stride 2, 4 and 8 the blurred difference at (0, 0).
        let full = 0.16 / 2.0;
        assert!(term(TERM_EYE) > 50.0 * full && term(TERM_EYE) < 50.0 * (full + 3.0 * 0.16));
        assert_eq!(term(TERM_EYE), term(TERM_MOUTH));
        let total = exec.to_host(&diff.total).data()[0];
        assert!((total - (term(TERM_L1) + term(TERM_EYE) + term(TERM_MOUTH))).abs() < 1e-5);
        let none = LossWeights { l1: 0.0, eye: 0.0, mouth: 0.0, perceptual: [0.0; 5] };
        assert!(generator_loss(&mut exec, &none, None, &av, &bv, &mv, &mv).is_err());
    }
}
