#!/usr/bin/env python3
"""PyTorch reference of the MetaPortrait generator, the temporal SR network and one personalization step.

Owns an independent PyTorch implementation, written from ../shared/docs/generator-reference.md and the project's
README (personalization recipe, loss weights, the TSR's constructor schema) rather than from the official code, of:
  * the generator (warping network: ladder encoder + dense-motion hourglass; refinement network: feature pyramid +
    SPADE/AdaIN generator), in the plain form the official code runs it (nearest x2 then conv, one convolution per
    SPADE head), reading our safetensors files with the official key names;
  * the temporal SR network GFPGANv1Clean_UnetWindow (released configuration: latent input, one w per layer,
    SFT on half the channels, zero noise), with StyleGAN2's per-sample modulated weights as grouped convolutions;
  * one personalization step: L1 + eye/mouth box L2 x50 + the VGG-19 pyramid perceptual loss x10 per layer, Adam
    (lr 2e-4, warping network x0.1, betas (0.5, 0.999)), global gradient-norm clip 0.3.
Receives fixture files (`check`) or a configuration name (`generator`, `tsr`, `step`); emits a parity report or
timings, the last stdout line always one JSON object.

  python3 scripts/torch_reference.py check [--fixtures ../shared/fixtures]
  python3 scripts/torch_reference.py generator [--config official|tiny|CFG.json] [--device cpu|cuda] [--threads N]
        [--iters N] [--modes fp32,tf32,bf16,fp16]
  python3 scripts/torch_reference.py tsr [--config official|tiny|CFG.json] [--frames 4] ...
  python3 scripts/torch_reference.py step [--config official] [--vgg VGG.safetensors] [--iters N] [--modes fp32,bf16]

Not run by CI: PyPI's only Linux x86-64 torch is the CUDA build (a 540 MB wheel plus ~3 GB of NVIDIA wheels; the CPU
wheels live on PyTorch's own index, which CI cannot reach), too heavy for a parity check of a reference script. Run
`check` by hand (`pip install torch safetensors numpy`) or on a GPU machine through scripts/gpu-check.sh.

Modes: `fp32` is strict float32 (TF32 off for convolutions and matrix products), `tf32` allows TF32 on CUDA (what
PyTorch does for cuDNN convolutions by default), `bf16`/`fp16` run under `torch.autocast`. On the CPU only `fp32`
(and `bf16`, if asked) make sense. Weights are random with the official shapes unless `--weights` is given; speed
does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

NORM_EPS = 1e-5
LRELU = 0.2
HEAD_LRELU = 0.1
KP_VARIANCE = 0.005
GAZE = (29, 37)
NUM_KP = 58
MOTION_SIDE = 64

GENERATOR_PRESETS = {
    "official": dict(image_size=256, ladder_nef=64, ladder_z_dim=512, motion_block_expansion=64,
                     motion_max_features=1024, motion_num_blocks=5, motion_dec_lease=2, motion_adain_c=512,
                     adain_hidden=128, encoder_block_expansion=64, encoder_max_features=512, encoder_num_blocks=3,
                     spade_conv_dim=32, spade_hidden=128, id_dim=256),
    "tiny": dict(image_size=256, ladder_nef=8, ladder_z_dim=32, motion_block_expansion=8, motion_max_features=64,
                 motion_num_blocks=5, motion_dec_lease=2, motion_adain_c=32, adain_hidden=16,
                 encoder_block_expansion=8, encoder_max_features=64, encoder_num_blocks=3, spade_conv_dim=4,
                 spade_hidden=16, id_dim=32),
}
TSR_DEFAULTS = dict(num_style_feat=512, channel_multiplier=1, num_mlp=8, input_is_latent=False, different_w=False,
                    narrow=1.0, sft_half=False, randomize_noise="zero", temp_type="unet_window")
TSR_PRESETS = {
    "official": dict(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8, input_is_latent=True,
                     different_w=True, narrow=1.0, sft_half=True, randomize_noise="zero", temp_type="unet_window"),
}
TSR_PRESETS["tiny"] = dict(TSR_PRESETS["official"], out_size=64, num_style_feat=32, narrow=0.0625)
SPADE_LAYOUT = [("head_0", 16, 16), ("G_middle_0", 16, 16), ("G_middle_1", 16, 16), ("up_0", 16, 8),
                ("up_1", 8, 4), ("up_2", 4, 2), ("up_3", 2, 1)]
SPADE_LEVEL = [0, 0, 0, 0, 1, 2, 3]
WARP_PREFIXES = ("ladder_network.", "dense_motion_network.")
# Personalization (README "personalize"; src/train/adam.rs, src/train/loss.rs).
LR, WARP_LR_MULT, BETAS, CLIP = 2e-4, 0.1, (0.5, 0.999), 0.3
LOSS_EYE, LOSS_MOUTH, LOSS_VGG = 50.0, 50.0, 10.0
PYRAMID_STRIDES = (1, 2, 4, 8)
MASK_EPS = 1e-6
# `bench step`'s synthetic boxes (top, bottom, left, right fractions), so both benches do the same work.
EYE_BOX, MOUTH_BOX = (0.35, 0.47, 0.22, 0.78), (0.66, 0.80, 0.34, 0.66)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision vgg19().features up to relu5_1: ("c", index, cin, cout), ("p",) max pool, ("t",) loss tap.
VGG_LAYERS = [("c", 0, 3, 64), ("t",), ("c", 2, 64, 64), ("p",), ("c", 5, 64, 128), ("t",), ("c", 7, 128, 128),
              ("p",), ("c", 10, 128, 256), ("t",), ("c", 12, 256, 256), ("c", 14, 256, 256), ("c", 16, 256, 256),
              ("p",), ("c", 19, 256, 512), ("t",), ("c", 21, 512, 512), ("c", 23, 512, 512), ("c", 25, 512, 512),
              ("p",), ("c", 28, 512, 512), ("t",)]


# ---------------------------------------------------------------------------------------------------------------
# Parameters by official key


class Params:
    """State-dict entries by official key. With `init`, an entry asked for the first time is created at random with
    the shape the network asks for (so the network code is also the layout, as in the Rust `Ops::param`)."""

    def __init__(self, tensors=None, init=False, seed=0, device="cpu"):
        self.t = dict(tensors or {})
        self.init = init
        self.gen = torch.Generator().manual_seed(seed)
        self.device = device
        self.used = set()
        self.buffers = set()

    def __call__(self, key, shape, buffer=False):
        shape = tuple(int(s) for s in shape)
        if key not in self.t:
            if not self.init:
                raise KeyError(f"missing weight `{key}` {list(shape)}")
            self.t[key] = self._random(key, shape, buffer).to(self.device)
        t = self.t[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"`{key}` has shape {list(t.shape)}, the network needs {list(shape)}")
        self.used.add(key)
        if buffer:
            self.buffers.add(key)
        return t

    def _random(self, key, shape, buffer):
        g = self.gen
        if buffer:  # spectral-norm u / v: random unit vectors
            v = torch.randn(shape, generator=g)
            return v / v.norm()
        if key.endswith(".bias"):
            return 0.1 * torch.randn(shape, generator=g)
        if key.endswith("weight_orig") and ".adain.style.linear" in key:  # EqualLR: N(0, 1), scaled in forward
            return torch.randn(shape, generator=g)
        if len(shape) == 1 or (len(shape) == 3 and shape[1:] == (1, 1)):  # norm affine weights
            return 1.0 + 0.1 * torch.randn(shape, generator=g)
        if key.endswith("style_conv1.weight") or (key.startswith("stylegan_decoder.style_convs") and shape == (1,)):
            return torch.zeros(shape)  # the noise strengths (noise is zero anyway)
        if key.endswith("constant_input.weight"):
            return torch.randn(shape, generator=g)
        if key == "SPDAE_G.conv1.weight_orig":  # ConvTranspose2d: [in, out, k, k]
            fan_in = shape[0]
        elif len(shape) == 5:  # modulated conv [1, out, in, k, k]
            fan_in = shape[2] * shape[3] * shape[4]
        else:
            fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) / math.sqrt(fan_in)

    def trainable(self):
        """Every parameter the forward read (spectral-norm u / v are buffers and stay fixed)."""
        return {k: v for k, v in self.t.items() if k in self.used and k not in self.buffers}


def load_safetensors(path, device="cpu"):
    from safetensors.torch import load_file
    return {k: v.to(device) for k, v in load_file(str(path)).items()}


# ---------------------------------------------------------------------------------------------------------------
# Generator


def conv(P, prefix, x, cin, cout, k=3, stride=1, pad=None, bias=True):
    w = P(f"{prefix}.weight", (cout, cin, k, k))
    b = P(f"{prefix}.bias", (cout,)) if bias else None
    return F.conv2d(x, w, b, stride, k // 2 if pad is None else pad)


def sn_weight(P, prefix, shape, dim=0):
    """Spectral norm in eval mode: weight_orig / (u . (W_mat v)) with the stored u, v (no power iteration)."""
    w = P(f"{prefix}.weight_orig", shape)
    rows = shape[dim]
    u = P(f"{prefix}.weight_u", (rows,), buffer=True)
    v = P(f"{prefix}.weight_v", (math.prod(shape) // rows,), buffer=True)
    mat = w.reshape(rows, -1) if dim == 0 else w.transpose(0, 1).reshape(rows, -1)
    return w / torch.dot(u, mat @ v)


def sn_conv(P, prefix, x, cin, cout, k=3, stride=1, pad=None, bias=True):
    w = sn_weight(P, prefix, (cout, cin, k, k))
    b = P(f"{prefix}.bias", (cout,)) if bias else None
    return F.conv2d(x, w, b, stride, k // 2 if pad is None else pad)


def linear(P, prefix, x, fin, fout):
    return F.linear(x, P(f"{prefix}.weight", (fout, fin)), P(f"{prefix}.bias", (fout,)))


def bilinear(x, h, w):
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def resize_to(x, h, w):
    return x if x.shape[2:] == (h, w) else bilinear(x, h, w)


def coordinate_grid(h, w, device, dtype=torch.float32):
    xs = 2 * (torch.arange(w, dtype=dtype, device=device) / (w - 1)) - 1
    ys = 2 * (torch.arange(h, dtype=dtype, device=device) / (h - 1)) - 1
    return xs, ys


def deform(x, deformation):
    if deformation.shape[1:3] != x.shape[2:]:
        deformation = bilinear(deformation.permute(0, 3, 1, 2), x.shape[2], x.shape[3]).permute(0, 2, 3, 1)
    return F.grid_sample(x, deformation, mode="bilinear", padding_mode="reflection", align_corners=False)


def motion_channels(cfg, i):
    return min(cfg["motion_max_features"], cfg["motion_block_expansion"] << (i + 1))


def ladder_encoder(P, cfg, x):
    nef = cfg["ladder_nef"]
    h, cin = x, x.shape[1]
    for i, cout in enumerate([nef, 2 * nef, 4 * nef, 8 * nef, 8 * nef, 8 * nef]):
        if i > 0:
            h = F.leaky_relu(h, LRELU)
        h = F.instance_norm(sn_conv(P, f"ladder_network.layer{i + 1}.0", h, cin, cout, stride=2, bias=False),
                            eps=NORM_EPS)
        cin = cout
    h = F.leaky_relu(h, LRELU).flatten(1)
    z = linear(P, "ladder_network.fc", h, h.shape[1], cfg["ladder_z_dim"])
    return z / (z.norm(dim=1, keepdim=True) + 1e-5)


def adain_motion(P, cfg, prefix, x, style, channels):
    hidden, zdim = cfg["adain_hidden"], cfg["motion_adain_c"]
    a = F.relu(linear(P, f"{prefix}.mlp_shared.0", style, zdim, hidden))
    gamma = linear(P, f"{prefix}.mlp_gamma", a, hidden, channels)[:, :, None, None]
    beta = linear(P, f"{prefix}.mlp_beta", a, hidden, channels)[:, :, None, None]
    return F.instance_norm(x, eps=NORM_EPS) * (1 + gamma) + beta


def conv_adain_relu(P, cfg, prefix, x, style, cin, cout):
    return F.relu(adain_motion(P, cfg, f"{prefix}.norm", conv(P, f"{prefix}.conv", x, cin, cout), style, cout))


def motion_hourglass(P, cfg, x, style):
    enc, dec = "dense_motion_network.hourglass.encoder.down_blocks", "dense_motion_network.hourglass.decoder.up_blocks"
    n = cfg["motion_num_blocks"]
    skips, cin = [x], x.shape[1]
    for i in range(n):
        cout = motion_channels(cfg, i)
        h = conv_adain_relu(P, cfg, f"{enc}.{i}", skips[i], style, cin, cout)
        h = F.avg_pool2d(h, 2)
        skips.append(conv_adain_relu(P, cfg, f"{enc}.{i}.SameBlock2d", h, style, cout, cout))
        cin = cout
    h = skips[n]
    for j, level in enumerate(reversed(range(cfg["motion_dec_lease"], n))):
        width = motion_channels(cfg, level)
        up_in, up_out = (width if level == n - 1 else 2 * width), motion_channels(cfg, level - 1)
        up = F.interpolate(h, scale_factor=2)  # legacy nearest: a pixel repeat
        up = conv_adain_relu(P, cfg, f"{dec}.{j}", up, style, up_in, up_out)
        up = conv_adain_relu(P, cfg, f"{dec}.{j}.SameBlock2d", up, style, up_out, up_out)
        h = torch.cat([up, skips[level]], 1)
    return h


def motion_head(P, prefix, x, cin, cout):
    c = x.shape[1]
    h = F.layer_norm(x, x.shape[1:], eps=NORM_EPS) * P(f"{prefix}.0.weight", (c, 1, 1)) + P(f"{prefix}.0.bias",
                                                                                             (c, 1, 1))
    return conv(P, f"{prefix}.2", F.leaky_relu(h, HEAD_LRELU), cin, cout, k=7)


def warp_forward(P, cfg, inp):
    input_t = torch.cat([inp["input.source"], inp["input.source_line"], inp["input.driving_line"]], 1)
    style = ladder_encoder(P, cfg, input_t)
    feats = motion_hourglass(P, cfg, input_t, style)
    c = feats.shape[1]
    flow_px = motion_head(P, "dense_motion_network.reger", feats, c, 2)
    fh, fw = flow_px.shape[2:]
    flow = 2 * torch.cat([flow_px[:, 0:1] / (fw - 1), flow_px[:, 1:2] / (fh - 1)], 1)
    xs, ys = coordinate_grid(fh, fw, flow.device, flow.dtype)
    grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), -1)[None]
    deformation = grid + flow.permute(0, 2, 3, 1)
    occ = torch.sigmoid(motion_head(P, "dense_motion_network.occlusion_net", feats, c, 1))
    occlusion = resize_to(occ, input_t.shape[2], input_t.shape[3])
    deformed = deform(inp["input.source"], deformation)
    return {"warp.deformation": deformation, "warp.flow": flow, "warp.occlusion_map": occlusion,
            "warp.deformed": deformed}


def feature_pyramid(P, cfg, source):
    be, mf, n = cfg["encoder_block_expansion"], cfg["encoder_max_features"], cfg["encoder_num_blocks"]

    def width(i):
        return min(mf, be << i)

    def in_relu(prefix, h, c):
        return F.relu(F.instance_norm(h, weight=P(f"{prefix}.norm.weight", (c,)), bias=P(f"{prefix}.norm.bias", (c,)),
                                      eps=NORM_EPS))

    skips, cin = [source], source.shape[1]
    for i in range(n):
        pre = f"feature_encoder.encoder.down_blocks.{i}"
        h = in_relu(pre, conv(P, f"{pre}.conv", skips[i], cin, width(i + 1)), width(i + 1))
        skips.append(F.avg_pool2d(h, 2))
        cin = width(i + 1)
    levels, h = [skips[n]], skips[n]
    for j, level in enumerate(reversed(range(n))):
        pre = f"feature_encoder.decoder.up_blocks.{j}"
        up_in = width(level + 1) if level == n - 1 else 2 * width(level + 1)
        up = F.interpolate(h, scale_factor=2)
        up = in_relu(pre, conv(P, f"{pre}.conv", up, up_in, width(level)), width(level))
        h = torch.cat([up, skips[level]], 1)
        levels.append(h if level == 0 else up)
    levels[-1] = conv(P, "fuse_high_res", levels[-1], width(0) + source.shape[1], width(0))
    return levels


def gaze_heatmaps(kp, h, w):
    g = kp[:, GAZE[0]:GAZE[1]]
    xs, ys = coordinate_grid(h, w, kp.device, kp.dtype)
    dx = xs[None, None, None, :] - g[:, :, 0, None, None]
    dy = ys[None, None, :, None] - g[:, :, 1, None, None]
    return torch.exp(-0.5 * (dx * dx + dy * dy) / KP_VARIANCE)


def spade_norm(P, cfg, prefix, x, channels, seg, src_id):
    hidden, d = cfg["spade_hidden"], src_id.shape[1]
    n = F.instance_norm(x, eps=NORM_EPS)
    a = F.relu(conv(P, f"{prefix}.mlp_shared.0", seg, seg.shape[1], hidden))
    spade = n * (1 + conv(P, f"{prefix}.mlp_gamma", a, hidden, channels)) + conv(P, f"{prefix}.mlp_beta", a, hidden,
                                                                                   channels)
    att = torch.sigmoid(conv(P, f"{prefix}.mlp_attention.0", x, channels, 1))
    style_w = P(f"{prefix}.adain.style.linear.weight_orig", (2 * channels, d)) * math.sqrt(2.0 / d)
    style = F.linear(src_id, style_w, P(f"{prefix}.adain.style.linear.bias", (2 * channels,)))
    gamma, beta = style.chunk(2, dim=1)
    adain = gamma[:, :, None, None] * n + beta[:, :, None, None]
    return att * spade + (1 - att) * adain


def spade_block(P, cfg, prefix, x, fin, fout, seg, src_id):
    fmid = min(fin, fout)
    if fin != fout:
        xs = F.conv2d(spade_norm(P, cfg, f"{prefix}.norm_s", x, fin, seg, src_id),
                      sn_weight(P, f"{prefix}.conv_s", (fout, fin, 1, 1)))
    else:
        xs = x
    dx = sn_conv(P, f"{prefix}.conv_0", F.leaky_relu(spade_norm(P, cfg, f"{prefix}.norm_0", x, fin, seg, src_id),
                                                     LRELU), fin, fmid)
    dx = sn_conv(P, f"{prefix}.conv_1", F.leaky_relu(spade_norm(P, cfg, f"{prefix}.norm_1", dx, fmid, seg, src_id),
                                                     LRELU), fmid, fout)
    return xs + dx


def refine_forward(P, cfg, inp, warp):
    pyramid = feature_pyramid(P, cfg, inp["input.source"])
    ldmk = torch.cat([inp["input.source_line"], inp["input.driving_line"]], 1)
    mouth = inp["input.mouth_line"]
    segs = []
    for feat in pyramid:
        h, w = feat.shape[2:]
        # The reference reassigns the resized line images, so each level resamples the previous level's.
        ldmk, mouth = bilinear(ldmk, h, w), bilinear(mouth, h, w)
        segs.append(torch.cat([deform(feat, warp["warp.deformation"]), resize_to(warp["warp.occlusion_map"], h, w),
                               gaze_heatmaps(inp["input.driving_ldmk"], h, w), ldmk, mouth], 1))
    nf, src_id = cfg["spade_conv_dim"], inp["input.src_id"]
    d = src_id.shape[1]
    w = sn_weight(P, "SPDAE_G.conv1", (d, 16 * nf, 4, 4), dim=1)
    x = F.conv_transpose2d(src_id.view(1, d, 1, 1), w, P("SPDAE_G.conv1.bias", (16 * nf,)))
    for i, (name, fin, fout) in enumerate(SPADE_LAYOUT):
        if i > 0:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        seg = resize_to(segs[SPADE_LEVEL[i]], x.shape[2], x.shape[3])
        x = spade_block(P, cfg, f"SPDAE_G.{name}", x, fin * nf, fout * nf, seg, src_id)
    x = conv(P, "SPDAE_G.conv_img", F.leaky_relu(x, LRELU), nf, 3)
    return torch.tanh(x)


def generator_forward(P, cfg, inp, stage="full"):
    warp = warp_forward(P, cfg, inp)
    if stage == "warp":
        return warp
    return dict(warp, **{"refine.prediction": refine_forward(P, cfg, inp, warp)})


def generator_config(spec):
    if spec in GENERATOR_PRESETS:
        return dict(GENERATOR_PRESETS[spec])
    data = json.loads(Path(spec).read_text())
    return {k: data[k] for k in GENERATOR_PRESETS["official"]}


def synthetic_inputs(cfg, device, seed=0x4D50):
    g = torch.Generator().manual_seed(seed)
    s = cfg["image_size"]
    shapes = {"input.source": (1, 3, s, s), "input.source_line": (1, 3, s, s), "input.driving_line": (1, 3, s, s),
              "input.mouth_line": (1, 3, s, s), "input.driving_ldmk": (1, NUM_KP, 2), "input.src_id": (1, cfg["id_dim"])}
    out = {k: torch.rand(v, generator=g) for k, v in shapes.items()}
    out["input.driving_ldmk"] = out["input.driving_ldmk"] * 1.6 - 0.8
    out["input.src_id"] = out["input.src_id"] / out["input.src_id"].norm()
    return {k: v.to(device) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# Temporal SR (GFPGANv1Clean_UnetWindow, released configuration)


class TsrConfig:
    def __init__(self, args):
        a = dict(TSR_DEFAULTS, **args)
        self.__dict__.update(a)
        if not (a["input_is_latent"] and a["different_w"] and a["sft_half"] and a["randomize_noise"] == "zero"
                and a["temp_type"] == "unet_window"):
            raise ValueError("the reference implements the released TSR configuration only (latent input, "
                             "different_w, sft_half, zero noise, unet_window)")
        self.log_size = int(math.log2(self.out_size))
        self.levels = self.log_size - 2
        self.num_latent = 2 * self.log_size - 2

    def _table(self, side, narrow):
        cm = float(self.channel_multiplier)
        if 4 <= side <= 32:
            v = 512.0 * narrow
        elif side in (64, 128, 256, 512, 1024):
            v = {64: 256.0, 128: 128.0, 256: 64.0, 512: 32.0, 1024: 16.0}[side] * cm * narrow
        else:
            v = 16.0 * cm * narrow * 1024.0 / side
        return int(v)

    def unet(self, side):
        return self._table(side, self.narrow * 0.5)

    def decoder(self, side):
        return self._table(side, self.narrow)


def tsr_config(spec):
    if spec in TSR_PRESETS:
        return TsrConfig(TSR_PRESETS[spec])
    data = json.loads(Path(spec).read_text())
    data = data.get("constructor", data)
    keys = set(TSR_DEFAULTS) | {"out_size"}
    return TsrConfig({k: v for k, v in data.items() if k in keys})


def resblock(P, prefix, x, cin, cout, up):
    scale = 2.0 if up else 0.5
    h = F.leaky_relu(conv(P, f"{prefix}.conv1", x, cin, cin), LRELU)
    h = F.interpolate(h, scale_factor=scale, mode="bilinear", align_corners=False)
    h = F.leaky_relu(conv(P, f"{prefix}.conv2", h, cin, cout), LRELU)
    skip = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return h + conv(P, f"{prefix}.skip", skip, cin, cout, k=1, bias=False)


def temporal_window(P, prefix, x, c):
    """ConvReLUConv over frames [t-1, t, t+1] stacked on channels (replicate padding), plus the input."""
    prev = torch.cat([x[:1], x[:-1]], 0)
    nxt = torch.cat([x[1:], x[-1:]], 0)
    h = F.leaky_relu(conv(P, f"{prefix}.conv1", torch.cat([prev, x, nxt], 1), 3 * c, 3 * c), LRELU)
    return x + conv(P, f"{prefix}.conv2", h, 3 * c, c)


def modulated_conv(P, prefix, x, latent, cin, cout, k, demodulate, upsample, nsf):
    b = latent.shape[0]
    style = linear(P, f"{prefix}.modulated_conv.modulation", latent, nsf, cin)
    weight = P(f"{prefix}.modulated_conv.weight", (1, cout, cin, k, k)) * style.view(b, 1, cin, 1, 1)
    if demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, cout, 1, 1, 1)
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    if x.shape[0] != b:
        x = x.expand(b, -1, -1, -1)
    h, w = x.shape[2:]
    out = F.conv2d(x.reshape(1, b * cin, h, w), weight.reshape(b * cout, cin, k, k), padding=k // 2, groups=b)
    return out.view(b, cout, h, w)


def style_conv(P, prefix, x, latent, cin, cout, upsample, nsf):
    out = modulated_conv(P, prefix, x, latent, cin, cout, 3, True, upsample, nsf) * math.sqrt(2.0)
    return F.leaky_relu(out + P(f"{prefix}.bias", (1, cout, 1, 1)), LRELU)  # + zero noise


def to_rgb(P, prefix, x, latent, cin, skip, nsf):
    out = modulated_conv(P, prefix, x, latent, cin, 3, 1, False, False, nsf) + P(f"{prefix}.bias", (1, 3, 1, 1))
    if skip is not None:
        out = out + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
    return out


def tsr_forward(P, cfg, frames):
    """[n, 3, h, w] in [0, 1] (the official (1, n, 3, h, w) without its batch of one) -> [n, 3, S, S]."""
    s, nsf, levels = cfg.out_size, cfg.num_style_feat, cfg.levels
    n = frames.shape[0]
    x = frames * 2 - 1
    if x.shape[2] != s:
        x = bilinear(x, s, s)
    feat = F.leaky_relu(conv(P, "conv_body_first", x, 3, cfg.unet(s), k=1), LRELU)
    skips = []
    for i in range(levels):
        cin, cout = cfg.unet(s >> i), cfg.unet(s >> (i + 1))
        feat = resblock(P, f"conv_body_down.{i}", feat, cin, cout, up=False)
        feat = temporal_window(P, f"window_down.{i}", feat, cout)
        skips.append(feat)
    c4 = cfg.unet(4)
    feat = F.leaky_relu(conv(P, "final_conv", feat, c4, c4), LRELU)
    style_code = linear(P, "final_linear", feat.flatten(1), c4 * 16, cfg.num_latent * nsf)
    conditions = []
    for i, skip in enumerate(reversed(skips)):
        side = 8 << i
        cin, cout = cfg.unet(side // 2), cfg.unet(side)
        feat = resblock(P, f"conv_body_up.{i}", feat + skip, cin, cout, up=True)
        feat = temporal_window(P, f"recurrent_forward.{i}", feat, cout)
        heads = []
        for name in ("condition_scale", "condition_shift"):
            h = F.leaky_relu(conv(P, f"{name}.{i}.0", feat, cout, cout), LRELU)
            heads.append(conv(P, f"{name}.{i}.2", h, cout, cfg.unet(side)))
        conditions.append(heads)
    latent = style_code.view(n, cfg.num_latent, nsf)
    d4 = cfg.decoder(4)
    out = P("stylegan_decoder.constant_input.weight", (1, d4, 4, 4))
    out = style_conv(P, "stylegan_decoder.style_conv1", out, latent[:, 0], d4, d4, False, nsf)
    image = to_rgb(P, "stylegan_decoder.to_rgb1", out, latent[:, 1], d4, None, nsf)
    cin = d4
    for i, (scale, shift) in enumerate(conditions):
        cout, li = cfg.decoder(8 << i), 2 * i + 1
        out = style_conv(P, f"stylegan_decoder.style_convs.{2 * i}", out, latent[:, li], cin, cout, True, nsf)
        half = cout // 2
        out = torch.cat([out[:, :half], out[:, half:] * scale + shift], 1)
        out = style_conv(P, f"stylegan_decoder.style_convs.{2 * i + 1}", out, latent[:, li + 1], cout, cout, False,
                         nsf)
        image = to_rgb(P, f"stylegan_decoder.to_rgbs.{i}", out, latent[:, li + 2], cout, image, nsf)
        cin = cout
    return image * 0.5 + 0.5


# ---------------------------------------------------------------------------------------------------------------
# Personalization loss and step


def antialias(x, stride):
    if stride == 1:
        return x
    sigma = (stride - 1) / 2.0
    size = 2 * round(sigma * 4) + 1
    ax = torch.arange(size, dtype=torch.float32, device=x.device) - (size - 1) / 2
    g = torch.exp(-(ax ** 2) / (2 * sigma * sigma))
    k = g[:, None] * g[None, :]
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, size, size), stride=stride, padding=size // 2, groups=c)


def vgg_features(P, x):
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    h, out = (x - mean) / std, []
    for layer in VGG_LAYERS:
        if layer[0] == "c":
            _, i, cin, cout = layer
            h = F.relu(conv(P, f"features.{i}", h, cin, cout))
        elif layer[0] == "p":
            h = F.max_pool2d(h, 2)
        else:
            out.append(h)
    return out


def masked_mse(a, b, m):
    return ((a - b) ** 2 * m).sum() / (m.sum() + MASK_EPS)


def personalization_loss(pred, target, eye, mouth, vgg):
    terms = {"l1": (pred - target).abs().mean()}
    perceptual, eye_t, mouth_t = [], [], []
    for stride in PYRAMID_STRIDES:
        g, t = antialias(pred, stride), antialias(target, stride)
        if vgg is not None:
            for fg, ft in zip(vgg_features(vgg, g), vgg_features(vgg, t)):
                perceptual.append(LOSS_VGG * (fg - ft).abs().mean())
        eye_t.append(masked_mse(g, t, eye[:, :, ::stride, ::stride]))
        mouth_t.append(masked_mse(g, t, mouth[:, :, ::stride, ::stride]))
    if perceptual:
        terms["perceptual"] = sum(perceptual)
    terms["eye"], terms["mouth"] = LOSS_EYE * sum(eye_t), LOSS_MOUTH * sum(mouth_t)
    return sum(terms.values()), terms


def box_mask(side, frac, device):
    m = torch.zeros(1, 1, side, side, device=device)
    r0, r1, c0, c1 = (round(f * side) for f in frac)
    m[:, :, r0:r1, c0:c1] = 1
    return m


def make_optimizer(P):
    params = P.trainable()
    for v in params.values():
        v.requires_grad_(True)
    warp = [v for k, v in params.items() if k.startswith(WARP_PREFIXES)]
    rest = [v for k, v in params.items() if not k.startswith(WARP_PREFIXES)]
    groups = [{"params": rest, "lr": LR}, {"params": warp, "lr": LR * WARP_LR_MULT}]
    return torch.optim.Adam(groups, lr=LR, betas=BETAS, eps=1e-8), list(params.values())


# ---------------------------------------------------------------------------------------------------------------
# Timing


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def set_mode(mode, device):
    """Precision switches; returns the autocast context factory."""
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if dtype is None:
        return lambda: torch.autocast(kind, enabled=False)
    return lambda: torch.autocast(kind, dtype=dtype)


def median_ms(call, iters, device, warmup=1):
    for _ in range(warmup):
        call()
    sync(device)
    samples = []
    for _ in range(iters):
        t = time.perf_counter()
        call()
        sync(device)
        samples.append((time.perf_counter() - t) * 1e3)
    return statistics.median(samples), samples


def setup(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch.cuda.is_available() is False")
    torch.backends.cudnn.benchmark = True


def environment(args):
    env = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads()}
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    return env


def modes_of(args):
    default = "fp32,tf32,bf16,fp16" if args.device.startswith("cuda") else "fp32"
    modes = (args.modes or default).split(",")
    bad = [m for m in modes if m not in ("fp32", "tf32", "bf16", "fp16")]
    if bad:
        raise SystemExit(f"error: unknown mode(s) {bad} (fp32, tf32, bf16, fp16)")
    return modes


def best_of(results, key):
    timed = {m: r[key] for m, r in results.items() if r.get(key) is not None}
    if not timed:
        return None, None
    mode = min(timed, key=timed.get)
    return mode, timed[mode]


def cmd_generator(args):
    setup(args)
    cfg = generator_config(args.config)
    tensors = load_safetensors(args.weights, args.device) if args.weights else None
    P = Params(tensors, init=tensors is None, device=args.device)
    inp = synthetic_inputs(cfg, args.device)
    results = {}
    with torch.no_grad():
        generator_forward(P, cfg, inp)  # creates random weights on first use
        for mode in modes_of(args):
            ctx = set_mode(mode, args.device)
            row = {}
            for stage, key in (("warp", "warp_ms"), ("full", "warp_refine_ms")):
                def call(stage=stage):
                    with ctx():
                        generator_forward(P, cfg, inp, stage)
                row[key], _ = median_ms(call, args.iters, args.device, warmup=args.warmup)
            print(f"{mode}: warp {row['warp_ms']:.2f} ms, warp + refine {row['warp_refine_ms']:.2f} ms",
                  file=sys.stderr)
            results[mode] = row
    mode, ms = best_of(results, "warp_refine_ms")
    print(json.dumps({"bench": "torch generator", "config": args.config, "iters": args.iters, **environment(args),
                      "modes": results, "best_mode": mode, "best_warp_refine_ms": ms}))


def cmd_tsr(args):
    setup(args)
    cfg = tsr_config(args.config)
    tensors = load_safetensors(args.weights, args.device) if args.weights else None
    P = Params(tensors, init=tensors is None, device=args.device, seed=0x5453)
    side = cfg.out_size // 2
    g = torch.Generator().manual_seed(0x5453)
    results = {}
    with torch.no_grad():
        tsr_forward(P, cfg, torch.rand(1, 3, side, side, generator=g).to(args.device))
        for mode in modes_of(args):
            ctx = set_mode(mode, args.device)
            row = {}
            for frames, key in ((args.frames, "offline_ms_per_frame"), (3, "stream_ms_per_frame")):
                batch = torch.rand(frames, 3, side, side, generator=g).to(args.device)

                def call(batch=batch):
                    with ctx():
                        tsr_forward(P, cfg, batch)
                ms, _ = median_ms(call, args.iters, args.device, warmup=args.warmup)
                # Offline a call yields `frames` frames; the live 3-frame window yields one.
                row[key] = ms / frames if key == "offline_ms_per_frame" else ms
            print(f"{mode}: offline {row['offline_ms_per_frame']:.2f} ms/frame, live window "
                  f"{row['stream_ms_per_frame']:.2f} ms/frame", file=sys.stderr)
            results[mode] = row
    mode, ms = best_of(results, "stream_ms_per_frame")
    print(json.dumps({"bench": "torch tsr", "config": args.config, "out_size": cfg.out_size, "frames": args.frames,
                      "iters": args.iters, **environment(args), "modes": results, "best_mode": mode,
                      "best_stream_ms_per_frame": ms}))


def cmd_step(args):
    setup(args)
    cfg = generator_config(args.config)
    s = cfg["image_size"]
    P = Params(init=True, device=args.device)
    inp = synthetic_inputs(cfg, args.device)
    target = inp["input.source"]
    eye, mouth = box_mask(s, EYE_BOX, args.device), box_mask(s, MOUTH_BOX, args.device)
    vgg = None
    if args.vgg != "off":
        tensors = load_safetensors(args.vgg, args.device) if args.vgg != "random" else None
        vgg = Params(tensors, init=tensors is None, device=args.device, seed=19)
    with torch.no_grad():
        generator_forward(P, cfg, inp)  # creates the weights
        if vgg is not None:
            vgg_features(vgg, target)
    opt, params = make_optimizer(P)
    results = {}
    for mode in modes_of(args):
        if mode == "fp16":
            print("fp16: skipped (a training step in fp16 needs loss scaling; use bf16)", file=sys.stderr)
            continue
        ctx = set_mode(mode, args.device)
        losses = []

        def step():
            opt.zero_grad(set_to_none=True)
            with ctx():
                pred = generator_forward(P, cfg, inp)["refine.prediction"]
                total, terms = personalization_loss(pred.float(), target, eye, mouth, vgg)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            opt.step()
            losses.append(float(total.detach()))
            return terms

        t = time.perf_counter()
        terms = step()
        sync(args.device)
        first_s = time.perf_counter() - t
        ms, samples = median_ms(step, args.iters, args.device, warmup=0)
        results[mode] = {"first_step_s": first_s, "step_s": ms / 1e3, "total_s": first_s + sum(samples) / 1e3,
                         "steps": args.iters + 1, "losses": losses}
        print(f"{mode}: first step {first_s:.2f} s, median {ms / 1e3:.3f} s over {args.iters}", file=sys.stderr)
    mode, best = best_of(results, "step_s")
    vgg_kind = "off" if vgg is None else ("random" if args.vgg == "random" else "file")
    print(json.dumps({"bench": "torch step", "config": args.config, "iters": args.iters, **environment(args),
                      "loss": list(terms.keys()), "vgg": vgg_kind, "optimizer": "torch.optim.Adam",
                      "modes": results, "best_mode": mode, "best_step_s": best}))


# ---------------------------------------------------------------------------------------------------------------
# Parity against the fixtures


GRAD_TOL = {"dense_motion_network": 5e-2, "ladder_network": 2e-2}
GRAD_TOL_REST = 5e-3
OUTPUT_TOL = 1e-4


def cmd_check(args):
    torch.set_num_threads(args.threads or torch.get_num_threads())
    fx = Path(args.fixtures)
    report, ok = {}, True
    cfg = generator_config(str(fx / "generator" / "tiny_config.json"))
    P = Params(load_safetensors(fx / "generator" / "tiny_weights.safetensors"))
    io = load_safetensors(fx / "generator" / "tiny_io.safetensors")
    inp = {k: v for k, v in io.items() if k.startswith("input.") and k != "input.target" and k != "input.mouth_mask"}
    with torch.no_grad():
        out = generator_forward(P, cfg, inp)
    worst = max(float((out[k] - io[k]).abs().max()) for k in out)
    report["generator_outputs_max_abs"] = worst
    ok &= worst <= OUTPUT_TOL
    unused = sorted(set(P.t) - P.used)
    report["generator_unused_weights"] = unused
    ok &= not unused
    print(f"generator outputs: max |diff| {worst:.2e} (tolerance {OUTPUT_TOL:.0e})", file=sys.stderr)

    # Gradients of mean|prediction - target| against the float64 reference (eval mode: SN u, v fixed).
    grads_ref = load_safetensors(fx / "generator" / "tiny_grads_f64ref.safetensors")
    params = P.trainable()
    for v in params.values():
        v.requires_grad_(True)
    pred = generator_forward(P, cfg, inp)["refine.prediction"]
    loss = (pred - io["input.target"]).abs().mean()
    loss.backward()
    loss = loss.detach()
    worst_rel, failed = 0.0, []
    for key, v in params.items():
        ref = grads_ref[f"grad.{key}"]
        g = v.grad if v.grad is not None else torch.zeros_like(v)
        if float(ref.abs().max()) < 1e-6:  # biases feeding a normalisation: exact gradient 0
            rel, passed = float(g.abs().max()), float(g.abs().max()) <= 1e-6
        else:
            rel = float((g - ref).norm() / ref.norm())
            tol = next((t for p, t in GRAD_TOL.items() if key.startswith(p)), GRAD_TOL_REST)
            passed = rel <= tol
            worst_rel = max(worst_rel, rel)
        if not passed:
            failed.append(f"{key}: {rel:.2e}")
    report["generator_loss"] = float(loss)
    report["generator_grads_worst_l2_rel"] = worst_rel
    report["generator_grads_failed"] = failed
    ok &= not failed and abs(float(loss) - 0.5405144691467285) < 1e-5
    print(f"generator gradients: worst l2-relative {worst_rel:.2e}, {len(failed)} over tolerance; loss {float(loss):.7f}",
          file=sys.stderr)

    tcfg = TsrConfig(json.loads((fx / "tsr" / "tsr_info.json").read_text())["tiny"]["constructor"])
    TP = Params(load_safetensors(fx / "tsr" / "tsr_tiny_weights.safetensors"))
    tio = load_safetensors(fx / "tsr" / "tsr_tiny_io.safetensors")
    with torch.no_grad():
        y = tsr_forward(TP, tcfg, tio["input.lq"][0])
    scale = max(1.0, float(tio["output"].abs().max()))
    tsr_diff = float((y - tio["output"][0]).abs().max())
    report["tsr_output_max_abs"] = tsr_diff
    ok &= tsr_diff <= OUTPUT_TOL * scale
    unused = sorted(set(TP.t) - TP.used)
    # The style MLP (latent input), the U-Net's toRGB heads, the noise buffers and their strengths (the noise is
    # zero) do not affect the output.
    by_design = ("stylegan_decoder.style_mlp.", "toRGB.", "stylegan_decoder.noises.")
    unexpected = [k for k in unused if not (k.startswith(by_design) or (k.startswith("stylegan_decoder.style_conv")
                                                                          and k.endswith(".weight")))]
    report["tsr_unused_unexpected"] = unexpected
    ok &= not unexpected
    print(f"tsr output: max |diff| {tsr_diff:.2e} (tolerance {OUTPUT_TOL * scale:.0e}); {len(unused)} entries unused "
          "by design", file=sys.stderr)
    report["pass"] = bool(ok)
    print(json.dumps(report))
    return 0 if ok else 1


def main(argv=None):
    here = Path(__file__).resolve().parent.parent
    default_fixtures = os.environ.get("METAPORTRAIT_SHARED", str(here.parent / "shared")) + "/fixtures"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="parity against ../shared/fixtures (generator outputs and gradients, TSR)")
    c.add_argument("--fixtures", default=default_fixtures)
    c.add_argument("--threads", type=int, default=0)
    for name, helptext in (("generator", "time warp and warp + refine"), ("tsr", "time the TSR network per frame"),
                           ("step", "time one personalization step")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--config", default="official")
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=0)
        p.add_argument("--iters", type=int, default=5 if name != "step" else 2)
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--modes", default=None, help="comma-separated: fp32,tf32,bf16,fp16")
        if name in ("generator", "tsr"):
            p.add_argument("--weights", default=None)
        if name == "tsr":
            p.add_argument("--frames", type=int, default=4)
        if name == "step":
            default_vgg = here / ".runtime" / "id-model" / "vgg19_features_torchvision_norm.safetensors"
            p.add_argument("--vgg", default=str(default_vgg) if default_vgg.exists() else "random",
                           help="VGG-19 safetensors (torchvision keys), `random` (same shapes) or `off`")
    args = ap.parse_args(argv)
    if args.cmd == "check":
        return cmd_check(args)
    if getattr(args, "iters", 1) < 1:
        raise SystemExit("error: --iters must be at least 1")
    {"generator": cmd_generator, "tsr": cmd_tsr, "step": cmd_step}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
