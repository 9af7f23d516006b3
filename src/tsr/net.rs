//! The temporal super-resolution architecture (`GFPGANv1Clean_UnetWindow`), defined once against `Ops`.
//!
//! Owns the dataflow of the official forward pass and the state-dict layout it reads. Receives `n` consecutive frames
//! of one clip as a batch `[n, 3, h, w]` in [0, 1] (the official `(1, n, 3, h, w)` without its batch-of-one axis) and
//! emits `[n, 3, S, S]` in about [0, 1] (not clamped), `S = out_size`. Frames are independent except in the temporal
//! windows, where each level mixes frames t−1, t, t+1 with replicate padding at the ends of the batch.
//!
//! Exact rewrites (same function, less work or fewer ops, checked against the reference by the parity tests):
//! * modulated convolutions scale the *input* by the style and the *output* by the demodulation factor instead of
//!   building a per-frame weight — `conv(x, W·s)·d = conv(x·s, W)·d` — so every frame shares one weight;
//! * the up-ResBlock's 1×1 skip convolution runs before the bilinear upsample (both are linear and the skip has no
//!   bias), on a quarter of the pixels.

use super::config::{LEAKY_SLOPE, NoiseMode, SEED_SIDE, TsrConfig};
use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::model::weights::EntryKind;

/// Name of the input tensor in IO files: `(1, n, 3, h, w)` in [0, 1].
pub const INPUT_LQ: &str = "input.lq";
/// Name of the output tensor in IO files: `(1, n, 3, S, S)`.
pub const OUTPUT: &str = "output";
/// Tap: the style code `[n, style_code_len]`.
pub const TAP_STYLE_CODE: &str = "inter.style_code";
/// RGB channels.
pub const RGB: usize = 3;
/// eps of StyleGAN2's demodulation.
const DEMOD_EPS: f32 = 1e-8;
/// eps of `NormStyleCode`.
const STYLE_NORM_EPS: f32 = 1e-8;

/// Tap names of level `i`.
pub fn tap_window_down_delta(i: usize) -> String {
    format!("inter.window_down{i}_delta")
}
/// Tap: the SFT scale map of up level `i`.
pub fn tap_condition_scale(i: usize) -> String {
    format!("inter.condition_scale{i}")
}
/// Tap: the SFT shift map of up level `i`.
pub fn tap_condition_shift(i: usize) -> String {
    format!("inter.condition_shift{i}")
}

/// Accepted input sides: `S/2` (upsampled ×2 first, the released use) or `S`.
pub fn input_side_ok(cfg: &TsrConfig, side: usize) -> bool {
    side == cfg.out_size || 2 * side == cfg.out_size
}

/// U-Net side after down block `i` (`i = 0` is the first block): `S / 2^(i+1)`.
fn down_side(cfg: &TsrConfig, i: usize) -> usize {
    cfg.out_size >> (i + 1)
}

/// Side produced by up block / SFT level `i`: `8 · 2^i`.
fn up_side(i: usize) -> usize {
    (2 * SEED_SIDE) << i
}

/// Declares the whole state dict in the reference's registration order, so listings match the official one entry
/// for entry; the forward pass then requests (and thereby cross-checks) the entries it reads.
fn declare_layout<O: Ops>(ops: &mut O, cfg: &TsrConfig) -> Result<(), ModelError> {
    use EntryKind::{Buffer, Parameter};
    let mut p = |key: String, shape: &[usize]| ops.declare(&key, shape, Parameter);
    let s = cfg.out_size;
    let (levels, nsf) = (cfg.levels(), cfg.num_style_feat);
    p("conv_body_first.weight".into(), &[cfg.unet_channels(s), RGB, 1, 1])?;
    p("conv_body_first.bias".into(), &[cfg.unet_channels(s)])?;
    for i in 0..levels {
        let (cin, cout) = (cfg.unet_channels(s >> i), cfg.unet_channels(down_side(cfg, i)));
        resblock_layout(&mut p, &format!("conv_body_down.{i}"), cin, cout)?;
    }
    for i in 0..levels {
        let c = cfg.unet_channels(down_side(cfg, i));
        window_layout(&mut p, &format!("window_down.{i}"), c)?;
    }
    let c4 = cfg.unet_channels(SEED_SIDE);
    p("final_conv.weight".into(), &[c4, c4, 3, 3])?;
    p("final_conv.bias".into(), &[c4])?;
    for i in 0..levels {
        let (cin, cout) = (cfg.unet_channels(up_side(i) / 2), cfg.unet_channels(up_side(i)));
        resblock_layout(&mut p, &format!("conv_body_up.{i}"), cin, cout)?;
    }
    for i in 0..levels {
        p(format!("toRGB.{i}.weight"), &[RGB, cfg.unet_channels(up_side(i)), 1, 1])?;
        p(format!("toRGB.{i}.bias"), &[RGB])?;
    }
    p("final_linear.weight".into(), &[cfg.style_code_len(), c4 * SEED_SIDE * SEED_SIDE])?;
    p("final_linear.bias".into(), &[cfg.style_code_len()])?;
    // StyleGAN2 decoder. `style_mlp` is Sequential(NormStyleCode, (Linear, LeakyReLU) × num_mlp): linears at 1, 3, …
    for k in 0..cfg.num_mlp {
        p(format!("stylegan_decoder.style_mlp.{}.weight", 2 * k + 1), &[nsf, nsf])?;
        p(format!("stylegan_decoder.style_mlp.{}.bias", 2 * k + 1), &[nsf])?;
    }
    let d4 = cfg.decoder_channels(SEED_SIDE);
    p("stylegan_decoder.constant_input.weight".into(), &[1, d4, SEED_SIDE, SEED_SIDE])?;
    style_conv_layout(&mut p, "stylegan_decoder.style_conv1", d4, d4, 3, nsf)?;
    to_rgb_layout(&mut p, "stylegan_decoder.to_rgb1", d4, nsf)?;
    let mut cin = d4;
    for i in 0..levels {
        let cout = cfg.decoder_channels(up_side(i));
        style_conv_layout(&mut p, &format!("stylegan_decoder.style_convs.{}", 2 * i), cin, cout, 3, nsf)?;
        style_conv_layout(&mut p, &format!("stylegan_decoder.style_convs.{}", 2 * i + 1), cout, cout, 3, nsf)?;
        cin = cout;
    }
    for i in 0..levels {
        to_rgb_layout(&mut p, &format!("stylegan_decoder.to_rgbs.{i}"), cfg.decoder_channels(up_side(i)), nsf)?;
    }
    for layer in 0..cfg.num_style_layers() {
        let side = 1usize << ((layer + 5) / 2);
        ops.declare(&format!("stylegan_decoder.noises.noise{layer}"), &[1, 1, side, side], Buffer)?;
    }
    let mut p = |key: String, shape: &[usize]| ops.declare(&key, shape, Parameter);
    for head in ["condition_scale", "condition_shift"] {
        for i in 0..levels {
            let (c, sft) = (cfg.unet_channels(up_side(i)), cfg.sft_channels(up_side(i)));
            p(format!("{head}.{i}.0.weight"), &[c, c, 3, 3])?;
            p(format!("{head}.{i}.0.bias"), &[c])?;
            p(format!("{head}.{i}.2.weight"), &[sft, c, 3, 3])?;
            p(format!("{head}.{i}.2.bias"), &[sft])?;
        }
    }
    for i in 0..levels {
        window_layout(&mut p, &format!("recurrent_forward.{i}"), cfg.sft_channels(up_side(i)))?;
    }
    Ok(())
}

type Declare<'a> = dyn FnMut(String, &[usize]) -> Result<(), ModelError> + 'a;

fn resblock_layout(p: &mut Declare<'_>, prefix: &str, cin: usize, cout: usize) -> Result<(), ModelError> {
    p(format!("{prefix}.conv1.weight"), &[cin, cin, 3, 3])?;
    p(format!("{prefix}.conv1.bias"), &[cin])?;
    p(format!("{prefix}.conv2.weight"), &[cout, cin, 3, 3])?;
    p(format!("{prefix}.conv2.bias"), &[cout])?;
    p(format!("{prefix}.skip.weight"), &[cout, cin, 1, 1])
}

fn window_layout(p: &mut Declare<'_>, prefix: &str, c: usize) -> Result<(), ModelError> {
    let wide = c * super::config::WINDOW_FRAMES;
    p(format!("{prefix}.conv1.weight"), &[wide, wide, 3, 3])?;
    p(format!("{prefix}.conv1.bias"), &[wide])?;
    p(format!("{prefix}.conv2.weight"), &[c, wide, 3, 3])?;
    p(format!("{prefix}.conv2.bias"), &[c])
}

fn modulated_layout(p: &mut Declare<'_>, prefix: &str, cin: usize, cout: usize, k: usize, nsf: usize) -> ModResult {
    p(format!("{prefix}.modulated_conv.weight"), &[1, cout, cin, k, k])?;
    p(format!("{prefix}.modulated_conv.modulation.weight"), &[cin, nsf])?;
    p(format!("{prefix}.modulated_conv.modulation.bias"), &[cin])
}

type ModResult = Result<(), ModelError>;

fn style_conv_layout(p: &mut Declare<'_>, prefix: &str, cin: usize, cout: usize, k: usize, nsf: usize) -> ModResult {
    p(format!("{prefix}.weight"), &[1])?;
    p(format!("{prefix}.bias"), &[1, cout, 1, 1])?;
    modulated_layout(p, prefix, cin, cout, k, nsf)
}

fn to_rgb_layout(p: &mut Declare<'_>, prefix: &str, cin: usize, nsf: usize) -> ModResult {
    p(format!("{prefix}.bias"), &[1, RGB, 1, 1])?;
    modulated_layout(p, prefix, cin, RGB, 1, nsf)
}

/// `nn.Conv2d(cin, cout, k, padding=k/2)`, with or without bias.
fn conv<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, cin: usize, cout: usize, k: usize, bias: bool) -> ConvResult<O> {
    let w = ops.param(&format!("{prefix}.weight"), &[cout, cin, k, k])?;
    let b = if bias { Some(ops.param(&format!("{prefix}.bias"), &[cout])?) } else { None };
    Ok(ops.conv2d(x, &w, b.as_ref(), 1, k / 2))
}

type ConvResult<O> = Result<<O as Ops>::T, ModelError>;

fn resize_by<O: Ops>(ops: &mut O, x: &O::T, up: bool) -> O::T {
    let s = ops.shape(x);
    let (h, w) = if up { (s[2] * 2, s[3] * 2) } else { (s[2] / 2, s[3] / 2) };
    ops.resize_bilinear(x, h, w)
}

/// `ResBlock(cin, cout, mode)`: conv3 → lrelu → resize → conv3 → lrelu, plus resize → 1×1 skip.
fn resblock<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, cin: usize, cout: usize, up: bool) -> ConvResult<O> {
    let h = conv(ops, &format!("{prefix}.conv1"), x, cin, cin, 3, true)?;
    let h = ops.leaky_relu(&h, LEAKY_SLOPE);
    let h = resize_by(ops, &h, up);
    let h = conv(ops, &format!("{prefix}.conv2"), &h, cin, cout, 3, true)?;
    let h = ops.leaky_relu(&h, LEAKY_SLOPE);
    let skip = if up {
        let s = conv(ops, &format!("{prefix}.skip"), x, cin, cout, 1, false)?;
        resize_by(ops, &s, true)
    } else {
        let s = resize_by(ops, x, false);
        conv(ops, &format!("{prefix}.skip"), &s, cin, cout, 1, false)?
    };
    Ok(ops.add(&h, &skip))
}

/// Frames `[t−1, t, t+1]` of a `[n, c, h, w]` batch stacked on channels, replicate-padded at both ends.
fn temporal_neighbours<O: Ops>(ops: &mut O, x: &O::T) -> O::T {
    let n = ops.shape(x)[0];
    if n == 1 {
        return ops.concat(&[x, x, x], 1);
    }
    let first = ops.slice(x, 0, 0, 1);
    let last = ops.slice(x, 0, n - 1, n);
    let head = ops.slice(x, 0, 0, n - 1);
    let tail = ops.slice(x, 0, 1, n);
    let prev = ops.concat(&[&first, &head], 0);
    let next = ops.concat(&[&tail, &last], 0);
    ops.concat(&[&prev, x, &next], 1)
}

/// `unet_window` / `unet_window_down`: `ConvReLUConv(3c → c)` over the temporal neighbours, plus the input.
fn window<O: Ops>(ops: &mut O, prefix: &str, x: &O::T, c: usize, tap: Option<&str>) -> ConvResult<O> {
    let wide = c * super::config::WINDOW_FRAMES;
    let stacked = temporal_neighbours(ops, x);
    let h = conv(ops, &format!("{prefix}.conv1"), &stacked, wide, wide, 3, true)?;
    let h = ops.leaky_relu(&h, LEAKY_SLOPE);
    let delta = conv(ops, &format!("{prefix}.conv2"), &h, wide, c, 3, true)?;
    if let Some(name) = tap {
        ops.tap(name, &delta);
    }
    Ok(ops.add(&delta, x))
}

/// A modulated convolution (`ModulatedConv2d`) with an extra constant `gain` folded into the output scale.
struct Modulated<'a> {
    prefix: &'a str,
    cin: usize,
    cout: usize,
    kernel: usize,
    demodulate: bool,
    upsample: bool,
    gain: f32,
}

impl Modulated<'_> {
    /// `x: [n or 1, cin, h, w]`, `latent: [n, nsf]` → `[n, cout, h', w']`.
    fn forward<O: Ops>(&self, ops: &mut O, x: &O::T, latent: &O::T, nsf: usize) -> ConvResult<O> {
        let (prefix, cin, cout, k) = (self.prefix, self.cin, self.cout, self.kernel);
        let mw = ops.param(&format!("{prefix}.modulated_conv.modulation.weight"), &[cin, nsf])?;
        let mb = ops.param(&format!("{prefix}.modulated_conv.modulation.bias"), &[cin])?;
        let style = ops.linear(latent, &mw, Some(&mb));
        let n = ops.shape(&style)[0];
        let weight =
            ops.param_view(&format!("{prefix}.modulated_conv.weight"), &[1, cout, cin, k, k], &[cout, cin, k, k])?;
        let style_map = ops.reshape(&style, &[n, cin, 1, 1]);
        let mut h = ops.mul(x, &style_map);
        if self.upsample {
            h = resize_by(ops, &h, true);
        }
        let y = ops.conv2d(&h, &weight, None, 1, k / 2);
        let scale = if self.demodulate {
            // d[b, o] = rsqrt(Σ_i s[b,i]² · Σ_kk W[o,i,kk]² + eps)
            let w2 = ops.mul(&weight, &weight);
            let w2 = ops.reshape(&w2, &[cout, cin, k * k]);
            let w2 = ops.sum_keepdim(&w2, 2);
            let w2 = ops.reshape(&w2, &[cout, cin]);
            let s2 = ops.mul(&style, &style);
            let energy = ops.linear(&s2, &w2, None);
            let energy = ops.scale_shift(&energy, 1.0, DEMOD_EPS);
            let root = ops.sqrt(&energy);
            let gain = ops.constant(crate::tensor::HostTensor::filled(&[1, 1], self.gain));
            let d = ops.div(&gain, &root);
            Some(ops.reshape(&d, &[n, cout, 1, 1]))
        } else {
            None
        };
        Ok(match scale {
            Some(d) => ops.mul(&y, &d),
            None if self.gain != 1.0 => ops.scale_shift(&y, self.gain, 0.0),
            None => y,
        })
    }
}

/// `StyleConv`: modulated conv ×√2 (+ zero noise) + bias → leaky ReLU.
fn style_conv<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    latent: &O::T,
    (cin, cout): (usize, usize),
    upsample: bool,
    nsf: usize,
) -> ConvResult<O> {
    let m = Modulated { prefix, cin, cout, kernel: 3, demodulate: true, upsample, gain: std::f32::consts::SQRT_2 };
    let y = m.forward(ops, x, latent, nsf)?;
    let bias = ops.param(&format!("{prefix}.bias"), &[1, cout, 1, 1])?;
    let y = ops.add(&y, &bias);
    Ok(ops.leaky_relu(&y, LEAKY_SLOPE))
}

/// `ToRGB`: modulated 1×1 conv without demodulation + bias (+ the upsampled previous image).
fn to_rgb<O: Ops>(
    ops: &mut O,
    prefix: &str,
    x: &O::T,
    latent: &O::T,
    cin: usize,
    skip: Option<&O::T>,
    nsf: usize,
) -> ConvResult<O> {
    let m = Modulated { prefix, cin, cout: RGB, kernel: 1, demodulate: false, upsample: false, gain: 1.0 };
    let y = m.forward(ops, x, latent, nsf)?;
    let bias = ops.param(&format!("{prefix}.bias"), &[1, RGB, 1, 1])?;
    let y = ops.add(&y, &bias);
    Ok(match skip {
        Some(s) => {
            let s = resize_by(ops, s, true);
            ops.add(&y, &s)
        }
        None => y,
    })
}

/// The per-layer latents `[n, nsf]` from the style code, through the style MLP unless `input_is_latent`.
fn latents<O: Ops>(ops: &mut O, cfg: &TsrConfig, style_code: &O::T) -> Result<Vec<O::T>, ModelError> {
    let n = ops.shape(style_code)[0];
    let (nsf, count) = (cfg.num_style_feat, cfg.num_latent());
    let per_layer = if cfg.different_w { count } else { 1 };
    let mut code = ops.reshape(style_code, &[n, per_layer, nsf]);
    if !cfg.input_is_latent {
        // NormStyleCode normalises over dim 1 — the latent index for a `[n, L, nsf]` code, as the reference does.
        let axis = if cfg.different_w { 1 } else { 2 };
        let sq = ops.mul(&code, &code);
        let mean = ops.sum_keepdim(&sq, axis);
        let dim = if cfg.different_w { per_layer } else { nsf };
        let mean = ops.scale_shift(&mean, 1.0 / dim as f32, STYLE_NORM_EPS);
        let root = ops.sqrt(&mean);
        code = ops.div(&code, &root);
        let mut flat = ops.reshape(&code, &[n * per_layer, nsf]);
        for k in 0..cfg.num_mlp {
            let prefix = format!("stylegan_decoder.style_mlp.{}", 2 * k + 1);
            let w = ops.param(&format!("{prefix}.weight"), &[nsf, nsf])?;
            let b = ops.param(&format!("{prefix}.bias"), &[nsf])?;
            flat = ops.linear(&flat, &w, Some(&b));
            flat = ops.leaky_relu(&flat, LEAKY_SLOPE);
        }
        code = ops.reshape(&flat, &[n, per_layer, nsf]);
    }
    Ok((0..count)
        .map(|i| {
            let at = if cfg.different_w { i } else { 0 };
            let row = ops.slice(&code, 1, at, at + 1);
            ops.reshape(&row, &[n, nsf])
        })
        .collect())
}

/// SFT on the second half of the channels (`sft_half`, the only mode the reference can run).
fn sft<O: Ops>(ops: &mut O, x: &O::T, scale: &O::T, shift: &O::T) -> O::T {
    let c = ops.shape(x)[1];
    let same = ops.slice(x, 1, 0, c / 2);
    let rest = ops.slice(x, 1, c / 2, c);
    let rest = ops.mul(&rest, scale);
    let rest = ops.add(&rest, shift);
    ops.concat(&[&same, &rest], 1)
}

/// How the frames entering the network are scaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InputRange {
    /// [0, 1] images, as the official forward takes them (mapped to [−1, 1] first).
    #[default]
    Unit,
    /// The generator's prediction as it comes out of it, in about [−1, 1]: clipped to [−1, 1] — what the official
    /// pipeline's 8-bit frames amount to, short of the 8-bit rounding — so it can be handed over on the GPU as is.
    Signed,
}

/// The official forward: `[n, 3, h, w]` in [0, 1] → `[n, 3, S, S]`.
pub fn tsr_forward<O: Ops>(ops: &mut O, cfg: &TsrConfig, frames: &O::T) -> Result<O::T, ModelError> {
    tsr_forward_from(ops, cfg, frames, InputRange::Unit)
}

/// `tsr_forward` on frames in `range`.
pub fn tsr_forward_from<O: Ops>(
    ops: &mut O,
    cfg: &TsrConfig,
    frames: &O::T,
    range: InputRange,
) -> Result<O::T, ModelError> {
    declare_layout(ops, cfg)?;
    if cfg.noise_mode().map_err(|e| ModelError::Config { origin: cfg.name.clone(), reason: e.to_string() })?
        != NoiseMode::Zero
    {
        return Err(ModelError::Config { origin: cfg.name.clone(), reason: "only zero noise is implemented".into() });
    }
    let shape = ops.shape(frames);
    let (s, levels, nsf) = (cfg.out_size, cfg.levels(), cfg.num_style_feat);
    if shape.len() != 4 || shape[1] != RGB || shape[2] != shape[3] || !input_side_ok(cfg, shape[2]) {
        return Err(ModelError::InputShape {
            name: INPUT_LQ.into(),
            expected: vec![shape.first().copied().unwrap_or(1), RGB, s / 2, s / 2],
            actual: shape,
        });
    }
    let n = shape[0];
    let mut x = match range {
        InputRange::Unit => ops.scale_shift(frames, 2.0, -1.0),
        // clip(x, −1, 1) = relu(x + 1) − relu(x − 1) − 1
        InputRange::Signed => {
            let low = ops.scale_shift(frames, 1.0, 1.0);
            let low = ops.relu(&low);
            let high = ops.scale_shift(frames, 1.0, -1.0);
            let high = ops.relu(&high);
            let d = ops.sub(&low, &high);
            ops.scale_shift(&d, 1.0, -1.0)
        }
    };
    if shape[2] != s {
        x = ops.resize_bilinear(&x, s, s);
    }
    let feat = conv(ops, "conv_body_first", &x, RGB, cfg.unet_channels(s), 1, true)?;
    let mut feat = ops.leaky_relu(&feat, LEAKY_SLOPE);
    let mut skips = Vec::with_capacity(levels);
    for i in 0..levels {
        let (cin, cout) = (cfg.unet_channels(s >> i), cfg.unet_channels(down_side(cfg, i)));
        feat = resblock(ops, &format!("conv_body_down.{i}"), &feat, cin, cout, false)?;
        feat = window(ops, &format!("window_down.{i}"), &feat, cout, Some(&tap_window_down_delta(i)))?;
        skips.push(feat.clone());
    }
    let c4 = cfg.unet_channels(SEED_SIDE);
    let h = conv(ops, "final_conv", &feat, c4, c4, 3, true)?;
    let mut feat = ops.leaky_relu(&h, LEAKY_SLOPE);
    let flat = ops.reshape(&feat, &[n, c4 * SEED_SIDE * SEED_SIDE]);
    let lw = ops.param("final_linear.weight", &[cfg.style_code_len(), c4 * SEED_SIDE * SEED_SIDE])?;
    let lb = ops.param("final_linear.bias", &[cfg.style_code_len()])?;
    let style_code = ops.linear(&flat, &lw, Some(&lb));
    ops.tap(TAP_STYLE_CODE, &style_code);

    let mut conditions = Vec::with_capacity(levels);
    for (i, skip) in skips.iter().rev().enumerate() {
        feat = ops.add(&feat, skip);
        let (cin, cout) = (cfg.unet_channels(up_side(i) / 2), cfg.unet_channels(up_side(i)));
        feat = resblock(ops, &format!("conv_body_up.{i}"), &feat, cin, cout, true)?;
        let sft_c = cfg.sft_channels(up_side(i));
        feat = window(ops, &format!("recurrent_forward.{i}"), &feat, sft_c, None)?;
        let head = |ops: &mut O, name: &str| -> ConvResult<O> {
            let h = conv(ops, &format!("{name}.{i}.0"), &feat, cout, cout, 3, true)?;
            let h = ops.leaky_relu(&h, LEAKY_SLOPE);
            conv(ops, &format!("{name}.{i}.2"), &h, cout, sft_c, 3, true)
        };
        let scale = head(ops, "condition_scale")?;
        ops.tap(&tap_condition_scale(i), &scale);
        let shift = head(ops, "condition_shift")?;
        ops.tap(&tap_condition_shift(i), &shift);
        conditions.push((scale, shift));
    }

    let latent = latents(ops, cfg, &style_code)?;
    let d4 = cfg.decoder_channels(SEED_SIDE);
    let constant = ops.param("stylegan_decoder.constant_input.weight", &[1, d4, SEED_SIDE, SEED_SIDE])?;
    let mut out = style_conv(ops, "stylegan_decoder.style_conv1", &constant, &latent[0], (d4, d4), false, nsf)?;
    let mut image = to_rgb(ops, "stylegan_decoder.to_rgb1", &out, &latent[1], d4, None, nsf)?;
    let mut cin = d4;
    for (i, (scale, shift)) in conditions.iter().enumerate() {
        let cout = cfg.decoder_channels(up_side(i));
        let l = 2 * i + 1;
        let prefix = |k: usize| format!("stylegan_decoder.style_convs.{k}");
        out = style_conv(ops, &prefix(2 * i), &out, &latent[l], (cin, cout), true, nsf)?;
        out = sft(ops, &out, scale, shift);
        out = style_conv(ops, &prefix(2 * i + 1), &out, &latent[l + 1], (cout, cout), false, nsf)?;
        image = to_rgb(ops, &format!("stylegan_decoder.to_rgbs.{i}"), &out, &latent[l + 2], cout, Some(&image), nsf)?;
        cin = cout;
    }
    Ok(ops.scale_shift(&image, 0.5, 0.5))
}
