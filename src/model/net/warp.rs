//! The warping network: ladder encoder (identity-agnostic style), dense-motion hourglass, flow and occlusion heads.
//!
//! Receives the source image and the landmark-line images; emits the 64² deformation grid, the normalised flow, the
//! 256² occlusion map and the source warped by that deformation (`WarpOutputs`).

use super::blocks::{self, CONV3, ConvGeom, HEAD_LRELU_SLOPE, LRELU_SLOPE, NORM_EPS};
use super::{GeneratorInputs, WarpOutputs};
use crate::model::ModelError;
use crate::model::config::{GeneratorConfig, IMAGE_CHANNELS, LADDER_FINAL_SIDE, LADDER_LAYERS, LDMK_LINE_CHANNELS};
use crate::model::ops::Ops;
use crate::tensor::HostTensor;

const LADDER: &str = "ladder_network";
const MOTION: &str = "dense_motion_network";
/// Guard added to the style norm: `z / (‖z‖ + 1e-5)`.
const STYLE_NORM_EPS: f32 = 1e-5;
/// Flow and occlusion heads use 7×7 convolutions.
const HEAD_CONV: ConvGeom = ConvGeom { kernel: 7, stride: 1, pad: 3 };
/// Every ladder layer halves the resolution.
const LADDER_CONV: ConvGeom = ConvGeom { kernel: 3, stride: 2, pad: 1 };

/// Channels entering the warping network: source RGB + source line + driving line.
pub fn warp_input_channels() -> usize {
    IMAGE_CHANNELS + LDMK_LINE_CHANNELS
}

/// `LadderEncoder`: six stride-2 spectral-norm convolutions with instance norm, then a linear map to a unit style.
fn ladder_encoder<O: Ops>(ops: &mut O, cfg: &GeneratorConfig, x: &O::T) -> Result<O::T, ModelError> {
    let nef = cfg.ladder_nef;
    let widths = [nef, 2 * nef, 4 * nef, 8 * nef, 8 * nef, 8 * nef];
    let mut h = x.clone();
    let mut cin = warp_input_channels();
    for (i, cout) in widths.iter().copied().enumerate().take(LADDER_LAYERS) {
        if i > 0 {
            h = ops.leaky_relu(&h, LRELU_SLOPE);
        }
        h = blocks::sn_conv(ops, &format!("{LADDER}.layer{}.0", i + 1), &h, cin, cout, LADDER_CONV, false)?;
        h = ops.instance_norm(&h, NORM_EPS);
        cin = cout;
    }
    h = ops.leaky_relu(&h, LRELU_SLOPE);
    let flat = cin * LADDER_FINAL_SIDE * LADDER_FINAL_SIDE;
    let flat_h = ops.reshape(&h, &[1, flat]);
    let z = blocks::linear(ops, &format!("{LADDER}.fc"), &flat_h, flat, cfg.ladder_z_dim)?;
    let squared = ops.mul(&z, &z);
    let sum = ops.sum_keepdim(&squared, 1);
    let norm = ops.sqrt(&sum);
    let denom = ops.scale_shift(&norm, 1.0, STYLE_NORM_EPS);
    Ok(ops.div(&z, &denom))
}

/// conv3×3 → ADAIN → ReLU, the body shared by Down/Up/SameBlock2d of the dense-motion hourglass.
fn conv_adain_relu<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    prefix: &str,
    x: &O::T,
    style: &O::T,
    cin: usize,
    cout: usize,
) -> Result<O::T, ModelError> {
    let h = blocks::conv(ops, &format!("{prefix}.conv"), x, cin, cout, CONV3)?;
    adain_relu(ops, cfg, prefix, &h, style, cout)
}

/// ADAIN (`{prefix}.norm`) → ReLU; the Up blocks reach it through `blocks::up2_conv3`.
fn adain_relu<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    prefix: &str,
    h: &O::T,
    style: &O::T,
    channels: usize,
) -> Result<O::T, ModelError> {
    let norm = format!("{prefix}.norm");
    let h = blocks::adain_motion(ops, &norm, h, style, channels, cfg.motion_adain_c, cfg.adain_hidden)?;
    Ok(ops.relu(&h))
}

/// Dense-motion hourglass with ADAIN everywhere; returns the 64² decoder output.
fn motion_hourglass<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    input: &O::T,
    style: &O::T,
) -> Result<O::T, ModelError> {
    let enc = format!("{MOTION}.hourglass.encoder.down_blocks");
    let dec = format!("{MOTION}.hourglass.decoder.up_blocks");
    let n = cfg.motion_num_blocks;

    let mut skips = vec![input.clone()];
    let mut cin = warp_input_channels();
    for i in 0..n {
        let cout = cfg.motion_down_channels(i);
        let prefix = format!("{enc}.{i}");
        let h = conv_adain_relu(ops, cfg, &prefix, &skips[i], style, cin, cout)?;
        let h = ops.avg_pool2(&h);
        let h = conv_adain_relu(ops, cfg, &format!("{prefix}.SameBlock2d"), &h, style, cout, cout)?;
        ops.tap(&format!("inter.motion.down{i}"), &h);
        skips.push(h);
        cin = cout;
    }

    // Up blocks are built for hourglass levels n-1 down to dec_lease; the deepest takes the bottleneck alone,
    // the others the concatenation of the previous up output and its skip.
    let mut h = skips[n].clone();
    for (j, level) in (cfg.motion_dec_lease..n).rev().enumerate() {
        let width = cfg.motion_down_channels(level);
        let up_in = if level == n - 1 { width } else { 2 * width };
        let up_out = cfg.motion_down_channels(level - 1);
        let prefix = format!("{dec}.{j}");
        let up = blocks::up2_conv3(ops, &format!("{prefix}.conv"), &h, up_in, up_out)?;
        let up = adain_relu(ops, cfg, &prefix, &up, style, up_out)?;
        let up = conv_adain_relu(ops, cfg, &format!("{prefix}.SameBlock2d"), &up, style, up_out, up_out)?;
        ops.tap(&format!("inter.motion.up{j}"), &up);
        h = ops.concat(&[&up, &skips[level]], 1);
    }
    Ok(h)
}

/// Channels of the hourglass output (last up block + its skip).
fn hourglass_out_channels(cfg: &GeneratorConfig) -> usize {
    2 * cfg.motion_down_channels(cfg.motion_dec_lease - 1)
}

/// LayerNorm2d → LeakyReLU(0.1) → 7×7 conv: the flow (`reger`) and occlusion heads.
fn motion_head<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, cin: usize, cout: usize) -> Result<O::T, ModelError> {
    let h = blocks::layer_norm_2d(ops, &format!("{prefix}.0"), x, cin)?;
    let h = ops.leaky_relu(&h, HEAD_LRELU_SLOPE);
    blocks::conv(ops, &format!("{prefix}.2"), &h, cin, cout, HEAD_CONV)
}

/// `forward_warp`: the full warping stage.
pub fn warp_forward<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    inputs: &GeneratorInputs<O::T>,
) -> Result<WarpOutputs<O::T>, ModelError> {
    let ldmk_line = ops.concat(&[&inputs.source_line, &inputs.driving_line], 1);
    let input_t = ops.concat(&[&inputs.source, &ldmk_line], 1);

    let style = ladder_encoder(ops, cfg, &input_t)?;
    ops.tap("inter.ladder_style", &style);

    let features = motion_hourglass(ops, cfg, &input_t, &style)?;
    ops.tap("inter.motion.hourglass", &features);
    let c = hourglass_out_channels(cfg);

    let flow_pixels = motion_head(ops, &format!("{MOTION}.reger"), &features, c, 2)?;
    ops.tap("inter.motion.flow_pixels", &flow_pixels);
    let fs = ops.shape(&flow_pixels);
    let (fh, fw) = (fs[2], fs[3]);
    // flow_norm = 2 * (flow_x / (W - 1), flow_y / (H - 1)).
    let scale = HostTensor::new(vec![1, 2, 1, 1], vec![2.0 / (fw - 1) as f32, 2.0 / (fh - 1) as f32])
        .map_err(|e| ModelError::Tensor { name: "flow scale".into(), reason: e.to_string() })?;
    let scale = ops.constant(scale);
    let flow = ops.mul(&flow_pixels, &scale);

    let grid = ops.constant(blocks::coordinate_grid(fh, fw));
    let flow_nhwc = ops.permute(&flow, &[0, 2, 3, 1]);
    let deformation = ops.add(&grid, &flow_nhwc);

    let occ_logits = motion_head(ops, &format!("{MOTION}.occlusion_net"), &features, c, 1)?;
    ops.tap("inter.motion.occlusion_logits", &occ_logits);
    let occ = ops.sigmoid(&occ_logits);
    let is = ops.shape(&input_t);
    let occlusion_map = blocks::resize_to(ops, &occ, is[2], is[3]);

    let deformed = blocks::deform(ops, &inputs.source, &deformation);
    Ok(WarpOutputs { deformation, flow, occlusion_map, deformed })
}
