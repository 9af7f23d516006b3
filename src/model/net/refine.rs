//! The ID-preserving refinement network: feature-encoder hourglass, deformed feature pyramid with occlusion, gaze
//! heatmaps and landmark lines, and the SPADE generator whose blocks fuse SPADE with identity AdaIN.
//!
//! Receives the conditioning inputs and the warping stage's outputs; emits the refined frame in [-1, 1].

use super::blocks::{self, CONV3, LRELU_SLOPE, NORM_EPS};
use super::{GeneratorInputs, WarpOutputs};
use crate::model::ModelError;
use crate::model::config::{
    GAZE_KP_END, GAZE_KP_START, GeneratorConfig, IMAGE_CHANNELS, KP_VARIANCE, SPADE_BLOCKS, SPADE_SEED_SIDE,
};
use crate::model::ops::Ops;
use crate::model::reparam::SnDim;

const ENCODER: &str = "feature_encoder";
const FUSE: &str = "fuse_high_res";
const SPADE_G: &str = "SPDAE_G";
/// SPADE blocks in order, with the width multiplier (of `spade_conv_dim`) of their input and output.
const SPADE_LAYOUT: [(&str, usize, usize); SPADE_BLOCKS] = [
    ("head_0", 16, 16),
    ("G_middle_0", 16, 16),
    ("G_middle_1", 16, 16),
    ("up_0", 16, 8),
    ("up_1", 8, 4),
    ("up_2", 4, 2),
    ("up_3", 2, 1),
];
/// Pyramid level feeding each SPADE block (the first four share the coarsest level).
const SPADE_LEVEL: [usize; SPADE_BLOCKS] = [0, 0, 0, 0, 1, 2, 3];

/// Feature-encoder hourglass (instance norm with affine, no AdaIN); returns the pyramid coarsest first, with the
/// finest level concatenated with the source and fused back to `encoder_block_expansion` channels.
fn feature_pyramid<O: Ops>(ops: &mut O, cfg: &GeneratorConfig, source: &O::T) -> Result<Vec<O::T>, ModelError> {
    let (be, mf, n) = (cfg.encoder_block_expansion, cfg.encoder_max_features, cfg.encoder_num_blocks);
    let width = |i: usize| mf.min(be << i);
    let in_relu = |ops: &mut O, prefix: &str, h: &O::T, cout: usize| -> Result<O::T, ModelError> {
        let h = blocks::instance_norm_affine(ops, &format!("{prefix}.norm"), h, cout)?;
        Ok(ops.relu(&h))
    };

    let mut skips = vec![source.clone()];
    let mut cin = IMAGE_CHANNELS;
    for i in 0..n {
        let cout = width(i + 1);
        let prefix = format!("{ENCODER}.encoder.down_blocks.{i}");
        let h = blocks::conv(ops, &format!("{prefix}.conv"), &skips[i], cin, cout, CONV3)?;
        let h = in_relu(ops, &prefix, &h, cout)?;
        skips.push(ops.avg_pool2(&h));
        cin = cout;
    }

    let mut levels = vec![skips[n].clone()];
    let mut h = skips[n].clone();
    for (j, level) in (0..n).rev().enumerate() {
        let up_in = if level == n - 1 { width(level + 1) } else { 2 * width(level + 1) };
        let up_out = width(level);
        let prefix = format!("{ENCODER}.decoder.up_blocks.{j}");
        let up = blocks::up2_conv3(ops, &format!("{prefix}.conv"), &h, up_in, up_out)?;
        let up = in_relu(ops, &prefix, &up, up_out)?;
        h = ops.concat(&[&up, &skips[level]], 1);
        levels.push(if level == 0 { h.clone() } else { up });
    }
    for (i, level) in levels.iter().enumerate() {
        ops.tap(&format!("inter.feature_encoder.level{i}"), level);
    }
    let finest = levels.len() - 1;
    let fused = blocks::conv(ops, FUSE, &levels[finest], width(0) + IMAGE_CHANNELS, width(0), CONV3)?;
    ops.tap("inter.feature_encoder.fused_level3", &fused);
    levels[finest] = fused;
    Ok(levels)
}

/// `kp2gaussian(kp, (h, w), 0.005)[:, 29:37]`: one Gaussian heatmap per gaze keypoint.
fn gaze_heatmaps<O: Ops>(ops: &mut O, kp: &O::T, height: usize, width: usize) -> O::T {
    let count = GAZE_KP_END - GAZE_KP_START;
    let gaze = ops.slice(kp, 1, GAZE_KP_START, GAZE_KP_END);
    let kx = ops.slice(&gaze, 2, 0, 1);
    let ky = ops.slice(&gaze, 2, 1, 2);
    let kx = ops.reshape(&kx, &[1, count, 1, 1]);
    let ky = ops.reshape(&ky, &[1, count, 1, 1]);
    let (gx, gy) = blocks::coordinate_axes(height, width);
    let gx = ops.constant(gx);
    let gy = ops.constant(gy);
    let dx = ops.sub(&gx, &kx);
    let dy = ops.sub(&gy, &ky);
    let dx2 = ops.mul(&dx, &dx);
    let dy2 = ops.mul(&dy, &dy);
    let d2 = ops.add(&dx2, &dy2);
    let arg = ops.scale_shift(&d2, -0.5 / KP_VARIANCE, 0.0);
    ops.exp(&arg)
}

/// The 4 SPADE condition maps: deformed features, occlusion, gaze heatmaps and (chain-resized) line images.
fn spade_inputs<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    inputs: &GeneratorInputs<O::T>,
    warp: &WarpOutputs<O::T>,
) -> Result<Vec<O::T>, ModelError> {
    let pyramid = feature_pyramid(ops, cfg, &inputs.source)?;
    // The reference reassigns the resized line images each level, so every level resamples the previous one.
    let mut ldmk_line = ops.concat(&[&inputs.source_line, &inputs.driving_line], 1);
    let mut mouth_line = inputs.mouth_line.clone();
    let mut out = Vec::with_capacity(pyramid.len());
    for (i, feat) in pyramid.iter().enumerate() {
        let s = ops.shape(feat);
        let (h, w) = (s[2], s[3]);
        let deformed = blocks::deform(ops, feat, &warp.deformation);
        let occ = blocks::resize_to(ops, &warp.occlusion_map, h, w);
        let gaze = gaze_heatmaps(ops, &inputs.driving_ldmk, h, w);
        ldmk_line = ops.resize_bilinear(&ldmk_line, h, w);
        mouth_line = ops.resize_bilinear(&mouth_line, h, w);
        let level = ops.concat(&[&deformed, &occ, &gaze, &ldmk_line, &mouth_line], 1);
        ops.tap(&format!("inter.spade_input.level{i}"), &level);
        out.push(level);
    }
    Ok(out)
}

/// Per-block context: the condition map at the block's resolution and the identity vector.
struct SpadeContext<'a, T> {
    seg: &'a T,
    label_nc: usize,
    id: &'a T,
    id_dim: usize,
    hidden: usize,
}

/// Convolution whose weights are the output-channel concatenation of several modules reading the same input
/// (`{prefix}.weight`/`.bias` each `[cout, cin, k, k]`/`[cout]`): one pass over the input instead of several. Returns
/// one slice per module. The parameters stay separate, so the state dict and gradients are unchanged.
fn fused_conv<O: Ops>(
    ops: &mut O,
    prefixes: &[String],
    x: &O::T,
    cin: usize,
    cout: usize,
) -> Result<Vec<O::T>, ModelError> {
    let mut weights = Vec::with_capacity(prefixes.len());
    let mut biases = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        weights.push(ops.param(&format!("{prefix}.weight"), &[cout, cin, CONV3.kernel, CONV3.kernel])?);
        biases.push(ops.param(&format!("{prefix}.bias"), &[cout])?);
    }
    if prefixes.len() == 1 {
        return Ok(vec![ops.conv2d(x, &weights[0], Some(&biases[0]), CONV3.stride, CONV3.pad)]);
    }
    let w = ops.concat(&weights.iter().collect::<Vec<_>>(), 0);
    let b = ops.concat(&biases.iter().collect::<Vec<_>>(), 0);
    let y = ops.conv2d(x, &w, Some(&b), CONV3.stride, CONV3.pad);
    Ok((0..prefixes.len()).map(|i| ops.slice(&y, 1, i * cout, (i + 1) * cout)).collect())
}

/// The first SPADE layer (`mlp_shared`: conv + ReLU on the condition map) of several norms of one block at once.
fn spade_shared<O: Ops>(
    ops: &mut O,
    norm_prefixes: &[String],
    ctx: &SpadeContext<'_, O::T>,
) -> Result<Vec<O::T>, ModelError> {
    let prefixes: Vec<String> = norm_prefixes.iter().map(|p| format!("{p}.mlp_shared.0")).collect();
    let shared = fused_conv(ops, &prefixes, ctx.seg, ctx.label_nc, ctx.hidden)?;
    Ok(shared.iter().map(|h| ops.relu(h)).collect())
}

/// "spadeinstance3x3id": `att * SPADE(x) + (1 - att) * AdaIN(x, id)`, attention computed on the raw input.
/// `actv` is this norm's `mlp_shared` output (see `spade_shared`).
fn spade_norm<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    channels: usize,
    actv: &O::T,
    ctx: &SpadeContext<'_, O::T>,
) -> Result<O::T, ModelError> {
    let normalized = ops.instance_norm(x, NORM_EPS);

    let heads = [format!("{prefix}.mlp_gamma"), format!("{prefix}.mlp_beta")];
    let gamma_beta = fused_conv(ops, &heads, actv, ctx.hidden, channels)?;
    let one_plus_gamma = ops.scale_shift(&gamma_beta[0], 1.0, 1.0);
    let spade = ops.mul(&normalized, &one_plus_gamma);
    let spade = ops.add(&spade, &gamma_beta[1]);

    let att = blocks::conv(ops, &format!("{prefix}.mlp_attention.0"), x, channels, 1, CONV3)?;
    let att = ops.sigmoid(&att);

    let style_prefix = format!("{prefix}.adain.style.linear");
    let w = ops.equal_lr_weight(&style_prefix, &[2 * channels, ctx.id_dim])?;
    let b = ops.param(&format!("{style_prefix}.bias"), &[2 * channels])?;
    let style = ops.linear(ctx.id, &w, Some(&b));
    let a_gamma = ops.slice(&style, 1, 0, channels);
    let a_beta = ops.slice(&style, 1, channels, 2 * channels);
    let a_gamma = blocks::as_channel_map(ops, &a_gamma);
    let a_beta = blocks::as_channel_map(ops, &a_beta);
    let adain = ops.mul(&normalized, &a_gamma);
    let adain = ops.add(&adain, &a_beta);

    // att * spade + (1 - att) * adain == adain + att * (spade - adain)
    let diff = ops.sub(&spade, &adain);
    let mixed = ops.mul(&att, &diff);
    Ok(ops.add(&adain, &mixed))
}

/// `SPADEResnetBlock(fin, fout)`: learned 1×1 shortcut (no bias, no activation) iff the widths differ.
fn spade_block<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    fin: usize,
    fout: usize,
    ctx: &SpadeContext<'_, O::T>,
) -> Result<O::T, ModelError> {
    let fmid = fin.min(fout);
    let learned_shortcut = fin != fout;
    let mut norms = vec![format!("{prefix}.norm_0"), format!("{prefix}.norm_1")];
    if learned_shortcut {
        norms.push(format!("{prefix}.norm_s"));
    }
    // All norms of the block read the same condition map.
    let actv = spade_shared(ops, &norms, ctx)?;
    let shortcut = if learned_shortcut {
        let n = spade_norm(ops, &norms[2], x, fin, &actv[2], ctx)?;
        let geom = blocks::ConvGeom { kernel: 1, stride: 1, pad: 0 };
        blocks::sn_conv(ops, &format!("{prefix}.conv_s"), &n, fin, fout, geom, false)?
    } else {
        x.clone()
    };
    let n0 = spade_norm(ops, &norms[0], x, fin, &actv[0], ctx)?;
    let a0 = ops.leaky_relu(&n0, LRELU_SLOPE);
    let dx = blocks::sn_conv(ops, &format!("{prefix}.conv_0"), &a0, fin, fmid, CONV3, true)?;
    let n1 = spade_norm(ops, &norms[1], &dx, fmid, &actv[1], ctx)?;
    let a1 = ops.leaky_relu(&n1, LRELU_SLOPE);
    let dx = blocks::sn_conv(ops, &format!("{prefix}.conv_1"), &a1, fmid, fout, CONV3, true)?;
    Ok(ops.add(&shortcut, &dx))
}

/// `SPADEGenerator`: a 4×4 seed from the identity vector, seven SPADE blocks with ×2 bilinear upsampling between
/// them, then LeakyReLU → 3×3 conv → tanh.
fn spade_generator<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    pyramid: &[O::T],
    src_id: &O::T,
) -> Result<O::T, ModelError> {
    let nf = cfg.spade_conv_dim;
    let d = cfg.id_dim;
    let seed_c = 16 * nf;
    let seed_area = SPADE_SEED_SIDE * SPADE_SEED_SIDE;

    // ConvTranspose2d(D, 16nf, 4) on a 1×1 input is a matrix product with the weight viewed as [D, 16nf·16].
    let w = ops.sn_weight(&format!("{SPADE_G}.conv1"), SnDim::Dim1, &[d, seed_c, SPADE_SEED_SIDE, SPADE_SEED_SIDE])?;
    let b = ops.param(&format!("{SPADE_G}.conv1.bias"), &[seed_c])?;
    let w_mat = ops.reshape(&w, &[d, seed_c * seed_area]);
    let seed = ops.matmul(src_id, &w_mat);
    let seed = ops.reshape(&seed, &[1, seed_c, SPADE_SEED_SIDE, SPADE_SEED_SIDE]);
    let b = ops.reshape(&b, &[1, seed_c, 1, 1]);
    let mut x = ops.add(&seed, &b);
    ops.tap("inter.spade.conv1", &x);

    let label_nc = cfg.spade_label_channels();
    for (i, (name, fin, fout)) in SPADE_LAYOUT.iter().enumerate() {
        if i > 0 {
            let s = ops.shape(&x);
            x = ops.resize_bilinear(&x, 2 * s[2], 2 * s[3]);
        }
        let s = ops.shape(&x);
        let seg = blocks::resize_to(ops, &pyramid[SPADE_LEVEL[i]], s[2], s[3]);
        let ctx = SpadeContext { seg: &seg, label_nc: label_nc[i], id: src_id, id_dim: d, hidden: cfg.spade_hidden };
        x = spade_block(ops, &format!("{SPADE_G}.{name}"), &x, fin * nf, fout * nf, &ctx)?;
        ops.tap(&format!("inter.spade.{name}"), &x);
    }
    let x = ops.leaky_relu(&x, LRELU_SLOPE);
    let x = blocks::conv(ops, &format!("{SPADE_G}.conv_img"), &x, nf, IMAGE_CHANNELS, CONV3)?;
    ops.tap("inter.spade.conv_img_pre_tanh", &x);
    Ok(ops.tanh(&x))
}

/// `foward_refine` [sic in the reference]: the refinement stage.
pub fn refine_forward<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    inputs: &GeneratorInputs<O::T>,
    warp: &WarpOutputs<O::T>,
) -> Result<O::T, ModelError> {
    let pyramid = spade_inputs(ops, cfg, inputs, warp)?;
    spade_generator(ops, cfg, &pyramid, &inputs.src_id)
}
