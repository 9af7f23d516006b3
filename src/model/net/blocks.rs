//! Layers shared by the warping and refinement networks, each declaring its parameters by official key and shape.
//!
//! Owns nothing but naming: a layer is a free function taking the executor, the module prefix and the widths, so
//! the same call both builds the computation and declares the state-dict entries it reads.

use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::model::reparam::SnDim;
use crate::tensor::HostTensor;

/// eps of every InstanceNorm2d / LayerNorm2d in the reference.
pub const NORM_EPS: f32 = 1e-5;
/// LeakyReLU slope of the ladder encoder and the SPADE generator.
pub const LRELU_SLOPE: f32 = 0.2;
/// LeakyReLU slope of the dense-motion flow and occlusion heads.
pub const HEAD_LRELU_SLOPE: f32 = 0.1;

/// Convolution geometry: kernel side, stride and padding.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    /// Side of the square kernel, px.
    pub kernel: usize,
    /// Step between output samples, px (2 halves the resolution).
    pub stride: usize,
    /// Zero padding added on every side, px.
    pub pad: usize,
}

/// 3×3, stride 1, padding 1: the most common convolution here.
pub const CONV3: ConvGeom = ConvGeom { kernel: 3, stride: 1, pad: 1 };

/// Plain `nn.Conv2d` with bias: `{prefix}.weight`, `{prefix}.bias`.
pub fn conv<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    cin: usize,
    cout: usize,
    geom: ConvGeom,
) -> Result<O::T, ModelError> {
    let w = ops.param(&format!("{prefix}.weight"), &[cout, cin, geom.kernel, geom.kernel])?;
    let b = ops.param(&format!("{prefix}.bias"), &[cout])?;
    Ok(ops.conv2d(x, &w, Some(&b), geom.stride, geom.pad))
}

/// Spectral-norm `nn.Conv2d`; `bias` says whether the module kept its bias.
pub fn sn_conv<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    cin: usize,
    cout: usize,
    geom: ConvGeom,
    bias: bool,
) -> Result<O::T, ModelError> {
    let w = ops.sn_weight(prefix, SnDim::Dim0, &[cout, cin, geom.kernel, geom.kernel])?;
    let b = if bias { Some(ops.param(&format!("{prefix}.bias"), &[cout])?) } else { None };
    Ok(ops.conv2d(x, &w, b.as_ref(), geom.stride, geom.pad))
}

/// `nn.Linear` with bias on a `[1, fin]` row.
pub fn linear<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, fin: usize, fout: usize) -> Result<O::T, ModelError> {
    let w = ops.param(&format!("{prefix}.weight"), &[fout, fin])?;
    let b = ops.param(&format!("{prefix}.bias"), &[fout])?;
    Ok(ops.linear(x, &w, Some(&b)))
}

/// A `[1, C]` row viewed as per-channel `[1, C, 1, 1]` modulation.
pub fn as_channel_map<O: Ops>(ops: &mut O, row: &O::T) -> O::T {
    let c = ops.shape(row)[1];
    ops.reshape(row, &[1, c, 1, 1])
}

/// `ADAIN(norm_nc, style)` of the dense-motion network: `IN(x) * (1 + gamma) + beta`,
/// with `gamma, beta = mlp_{gamma,beta}(ReLU(mlp_shared(style)))`.
pub fn adain_motion<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    style: &O::T,
    channels: usize,
    style_dim: usize,
    hidden: usize,
) -> Result<O::T, ModelError> {
    let shared = linear(ops, &format!("{prefix}.mlp_shared.0"), style, style_dim, hidden)?;
    let actv = ops.relu(&shared);
    let gamma = linear(ops, &format!("{prefix}.mlp_gamma"), &actv, hidden, channels)?;
    let beta = linear(ops, &format!("{prefix}.mlp_beta"), &actv, hidden, channels)?;
    let gamma = as_channel_map(ops, &gamma);
    let beta = as_channel_map(ops, &beta);
    let normalized = ops.instance_norm(x, NORM_EPS);
    let one_plus_gamma = ops.scale_shift(&gamma, 1.0, 1.0);
    let scaled = ops.mul(&normalized, &one_plus_gamma);
    Ok(ops.add(&scaled, &beta))
}

/// `InstanceNorm2d(affine=True)`: `{prefix}.weight`, `{prefix}.bias` of shape `[C]`.
pub fn instance_norm_affine<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, channels: usize) -> Result<O::T, ModelError> {
    let w = ops.param(&format!("{prefix}.weight"), &[channels])?;
    let b = ops.param(&format!("{prefix}.bias"), &[channels])?;
    let w = ops.reshape(&w, &[1, channels, 1, 1]);
    let b = ops.reshape(&b, &[1, channels, 1, 1]);
    let n = ops.instance_norm(x, NORM_EPS);
    let scaled = ops.mul(&n, &w);
    Ok(ops.add(&scaled, &b))
}

/// `LayerNorm2d`: normalised jointly over (C, H, W), per-channel affine `[C, 1, 1]`.
pub fn layer_norm_2d<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, channels: usize) -> Result<O::T, ModelError> {
    let w = ops.param(&format!("{prefix}.weight"), &[channels, 1, 1])?;
    let b = ops.param(&format!("{prefix}.bias"), &[channels, 1, 1])?;
    let n = ops.layer_norm_chw(x, NORM_EPS);
    let scaled = ops.mul(&n, &w);
    Ok(ops.add(&scaled, &b))
}

/// Resizes only when the size differs (the reference skips same-size interpolation, which is the identity anyway).
pub fn resize_to<O: Ops>(ops: &mut O, x: &O::T, height: usize, width: usize) -> O::T {
    let s = ops.shape(x);
    if s[2] == height && s[3] == width { x.clone() } else { ops.resize_bilinear(x, height, width) }
}

/// `make_coordinate_grid`: `[1, h, w, 2]` with `x_j = 2 j / (w - 1) - 1`, `y_i = 2 i / (h - 1) - 1`
/// (align_corners=True-style coordinates, as the reference builds them, in f32).
pub fn coordinate_grid(height: usize, width: usize) -> HostTensor {
    let (xs, ys) = grid_axes(height, width);
    let mut data = Vec::with_capacity(height * width * 2);
    for y in &ys {
        for x in &xs {
            data.push(*x);
            data.push(*y);
        }
    }
    HostTensor::new(vec![1, height, width, 2], data).unwrap_or_else(|_| HostTensor::zeros(&[1, height, width, 2]))
}

/// The x coordinates of the grid as `[1, 1, 1, w]` and the y coordinates as `[1, 1, h, 1]`.
pub fn coordinate_axes(height: usize, width: usize) -> (HostTensor, HostTensor) {
    let (xs, ys) = grid_axes(height, width);
    let gx = HostTensor::new(vec![1, 1, 1, width], xs).unwrap_or_else(|_| HostTensor::zeros(&[1, 1, 1, width]));
    let gy = HostTensor::new(vec![1, 1, height, 1], ys).unwrap_or_else(|_| HostTensor::zeros(&[1, 1, height, 1]));
    (gx, gy)
}

fn grid_axes(height: usize, width: usize) -> (Vec<f32>, Vec<f32>) {
    let axis = |n: usize| -> Vec<f32> {
        let denom = (n.max(2) - 1) as f32;
        (0..n).map(|i| 2.0 * (i as f32 / denom) - 1.0).collect()
    };
    (axis(width), axis(height))
}

/// `deform_input`: bilinear-resizes the `[1, h', w', 2]` deformation to the input's size when they differ, then
/// samples with reflection padding.
pub fn deform<O: Ops>(ops: &mut O, x: &O::T, deformation: &O::T) -> O::T {
    let xs = ops.shape(x);
    let ds = ops.shape(deformation);
    let grid = if ds[1] == xs[2] && ds[2] == xs[3] {
        deformation.clone()
    } else {
        ops.resize_bilinear_nhwc(deformation, xs[2], xs[3])
    };
    ops.grid_sample_reflect(x, &grid)
}

/// `conv3x3(upsample_nearest2(x))` (pad 1), computed on the low-resolution input with 2.25× fewer multiply-adds.
///
/// After a nearest ×2 upsampling, output pixel `(2i + a, 2j + b)` sees only source rows `i − 1 + a`, `i + a` and
/// columns `j − 1 + b`, `j + b`; the 3×3 taps landing on the same source pixel add up. So each of the 4 phases
/// `(a, b)` is a 2×2 convolution of `x` with summed taps: one convolution with all 4 phase kernels (pad 1, output
/// `(h + 1) × (w + 1)`), a crop per phase, and a depth-to-space interleave. Exact up to summation order.
pub fn up2_conv3<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, cin: usize, cout: usize) -> Result<O::T, ModelError> {
    let w = ops.param(&format!("{prefix}.weight"), &[cout, cin, CONV3.kernel, CONV3.kernel])?;
    let b = ops.param(&format!("{prefix}.bias"), &[cout])?;
    // Phase 0 takes taps {0} and {1, 2}; phase 1 takes {0, 1} and {2} (along one axis).
    let fold = |ops: &mut O, t: &O::T, axis: usize, phase: usize| -> O::T {
        let taps: Vec<O::T> = (0..CONV3.kernel).map(|k| ops.slice(t, axis, k, k + 1)).collect();
        let (first, second) = if phase == 0 {
            (taps[0].clone(), ops.add(&taps[1], &taps[2]))
        } else {
            (ops.add(&taps[0], &taps[1]), taps[2].clone())
        };
        ops.concat(&[&first, &second], axis)
    };
    let mut kernels = Vec::with_capacity(4);
    for a in 0..2 {
        let rows = fold(ops, &w, 2, a);
        for b_phase in 0..2 {
            kernels.push(fold(ops, &rows, 3, b_phase));
        }
    }
    let kernel = ops.concat(&kernels.iter().collect::<Vec<_>>(), 0);
    let bias = ops.concat(&[&b, &b, &b, &b], 0);
    let y = ops.conv2d(x, &kernel, Some(&bias), 1, 1);
    let s = ops.shape(x);
    let (h, wd) = (s[2], s[3]);
    let mut phases = Vec::with_capacity(4);
    for a in 0..2 {
        for b_phase in 0..2 {
            let p = 2 * a + b_phase;
            let c = ops.slice(&y, 1, p * cout, (p + 1) * cout);
            let r = ops.slice(&c, 2, a, a + h);
            phases.push(ops.slice(&r, 3, b_phase, b_phase + wd));
        }
    }
    let stacked = ops.concat(&phases.iter().collect::<Vec<_>>(), 1);
    Ok(ops.depth_to_space2(&stacked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::exec::burn::BurnExec;
    use crate::model::weights::WeightStore;
    use crate::rng::SplitMix64;

    #[test]
    fn up2_conv3_equals_upsample_then_conv() {
        let mut rng = SplitMix64::new(11);
        let (cin, cout, h, w) = (3, 5, 6, 7);
        let mut store = WeightStore::new();
        let weight = HostTensor::new(vec![cout, cin, 3, 3], rng.normal_vec(cout * cin * 9, 0.0, 0.5)).unwrap();
        store.insert("c.weight", weight);
        store.insert("c.bias", HostTensor::new(vec![cout], rng.normal_vec(cout, 0.0, 0.5)).unwrap());
        let x = HostTensor::new(vec![1, cin, h, w], rng.normal_vec(cin * h * w, 0.0, 1.0)).unwrap();

        let device = burn::tensor::Device::flex();
        let mut exec = BurnExec::new(&store, &device, false);
        let xv = exec.input(&x);
        let fast = up2_conv3(&mut exec, "c", &xv, cin, cout).unwrap();
        let up = exec.upsample_nearest2(&xv);
        let slow = conv(&mut exec, "c", &up, cin, cout, CONV3).unwrap();
        let (fast, slow) = (exec.to_host(&fast), exec.to_host(&slow));
        assert_eq!(fast.shape(), &[1, cout, 2 * h, 2 * w]);
        let diff = fast.max_abs_diff(&slow).unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
    }
}
