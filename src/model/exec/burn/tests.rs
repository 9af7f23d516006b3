//! Each op and its gradient against naive references of PyTorch's semantics.

use super::*;
use crate::model::ops::Ops;
use crate::rng::SplitMix64;

const FWD_TOL: f64 = 1e-5;
/// Relative (to the largest finite-difference entry) tolerance of the gradient checks.
const GRAD_RTOL: f64 = 1e-2;
/// Central-difference step; the references run in f64, so it can be small enough to miss the kinks.
const FD_STEP: f64 = 1e-5;

fn rand(rng: &mut SplitMix64, shape: &[usize], lo: f64, hi: f64) -> HostTensor {
    let n = shape.iter().product();
    let data = (0..n).map(|_| (lo + (hi - lo) * rng.uniform()) as f32).collect();
    HostTensor::new(shape.to_vec(), data).unwrap()
}

fn f64s(t: &HostTensor) -> Vec<f64> {
    t.data().iter().map(|v| *v as f64).collect()
}

/// A non-trainable executor on plain flex and a trainable one on autodiff: burn routes some ops (grid_sample)
/// differently on the two, so forward checks run on both.
fn both(store: &WeightStore) -> [BurnExec<'_>; 2] {
    [BurnExec::new(store, &Device::flex(), false), BurnExec::new(store, &Device::flex(), true)]
}

fn assert_close(what: &str, got: &HostTensor, shape: &[usize], want: &[f64], tol: f64) {
    assert_eq!(got.shape(), shape, "{what}: shape");
    let err = got.data().iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
    assert!(err <= tol, "{what}: max abs diff {err:e} > {tol:e}");
}

/// Checks an autodiff gradient against central differences of the f64 reference loss `f`.
fn check_grad(what: &str, grad: &HostTensor, at: &[f64], f: impl Fn(&[f64]) -> f64) {
    let mut p = at.to_vec();
    let fd: Vec<f64> = (0..p.len())
        .map(|i| {
            p[i] = at[i] + FD_STEP;
            let hi = f(&p);
            p[i] = at[i] - FD_STEP;
            let lo = f(&p);
            p[i] = at[i];
            (hi - lo) / (2.0 * FD_STEP)
        })
        .collect();
    let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "{what}: degenerate check (gradient ≈ 0)");
    let err = grad.data().iter().zip(&fd).map(|(g, d)| (*g as f64 - d).abs()).fold(0.0, f64::max);
    assert!(err <= GRAD_RTOL * scale, "{what}: gradient error {err:e} vs scale {scale:e}");
}

/// `sum(out ⊙ r)`: a loss whose gradient w.r.t. `out` is `r`, so every output element is exercised.
fn weighted_sum(exec: &mut BurnExec<'_>, out: &BurnValue, r: &HostTensor) -> BurnValue {
    let r = exec.input(r);
    BurnValue::new((out.t.clone() * r.t).sum().reshape([1, 1, 1, 1]), 1)
}

fn dot(a: &[f64], b: &HostTensor) -> f64 {
    a.iter().zip(b.data()).map(|(x, y)| x * *y as f64).sum()
}

// ---- naive references of the PyTorch semantics (f64, NCHW) ----

fn ref_conv(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], b: &[f64], s: usize, p: usize) -> Vec<f64> {
    let ([n, c, h, wd], [o, _, k, _]) = (xs, ws);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
    let mut out = vec![0.0; n * o * oh * ow];
    for (ni, oi, y, xo) in iter4([n, o, oh, ow]) {
        let mut acc = b[oi];
        for (ci, ky, kx) in (0..c).flat_map(|ci| (0..k).flat_map(move |ky| (0..k).map(move |kx| (ci, ky, kx)))) {
            let (iy, ix) = ((y * s + ky) as isize - p as isize, (xo * s + kx) as isize - p as isize);
            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                acc += x[((ni * c + ci) * h + iy as usize) * wd + ix as usize] * w[((oi * c + ci) * k + ky) * k + kx];
            }
        }
        out[((ni * o + oi) * oh + y) * ow + xo] = acc;
    }
    out
}

fn iter4(d: [usize; 4]) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..d[0]).flat_map(move |a| {
        (0..d[1]).flat_map(move |b| (0..d[2]).flat_map(move |c| (0..d[3]).map(move |e| (a, b, c, e))))
    })
}

/// `F.interpolate(mode='bilinear', align_corners=False)`: `s = max((d+0.5)·in/out - 0.5, 0)`.
fn ref_resize(x: &[f64], [n, c, h, w]: [usize; 4], oh: usize, ow: usize) -> Vec<f64> {
    let taps = |d: usize, inn: usize, out: usize| {
        let s = ((d as f64 + 0.5) * inn as f64 / out as f64 - 0.5).max(0.0);
        let i0 = s.floor() as usize;
        (i0, (i0 + 1).min(inn - 1), s - i0 as f64)
    };
    let mut out = vec![0.0; n * c * oh * ow];
    for (ni, ci, y, xo) in iter4([n, c, oh, ow]) {
        let ((y0, y1, ly), (x0, x1, lx)) = (taps(y, h, oh), taps(xo, w, ow));
        let at = |yy: usize, xx: usize| x[((ni * c + ci) * h + yy) * w + xx];
        out[((ni * c + ci) * oh + y) * ow + xo] =
            (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
    }
    out
}

/// PyTorch's `grid_sampler_compute_source_index` for reflection padding, align_corners=False.
fn ref_source_index(g: f64, size: usize) -> f64 {
    crate::model::testing::reflect_clip(((g + 1.0) * size as f64 - 1.0) / 2.0, size)
}

fn ref_grid_sample(x: &[f64], [n, c, h, w]: [usize; 4], grid: &[f64], [ho, wo]: [usize; 2]) -> Vec<f64> {
    let mut out = vec![0.0; n * c * ho * wo];
    for (ni, ci, y, xo) in iter4([n, c, ho, wo]) {
        let g = ((ni * ho + y) * wo + xo) * 2;
        let (px, py) = (ref_source_index(grid[g], w), ref_source_index(grid[g + 1], h));
        let (x0, y0) = (px.floor(), py.floor());
        let (lx, ly) = (px - x0, py - y0);
        let at = |yy: f64, xx: f64| {
            let inside = xx >= 0.0 && yy >= 0.0 && (xx as usize) < w && (yy as usize) < h;
            if inside { x[((ni * c + ci) * h + yy as usize) * w + xx as usize] } else { 0.0 }
        };
        out[((ni * c + ci) * ho + y) * wo + xo] = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x0 + 1.0))
            + ly * ((1.0 - lx) * at(y0 + 1.0, x0) + lx * at(y0 + 1.0, x0 + 1.0));
    }
    out
}

fn ref_avg_pool2(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    iter4([n, c, h / 2, w / 2])
        .map(|(ni, ci, y, xo)| {
            let at = |dy: usize, dx: usize| x[((ni * c + ci) * h + 2 * y + dy) * w + 2 * xo + dx];
            (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) / 4.0
        })
        .collect()
}

fn ref_max_pool2(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    iter4([n, c, h / 2, w / 2])
        .map(|(ni, ci, y, xo)| {
            let at = |dy: usize, dx: usize| x[((ni * c + ci) * h + 2 * y + dy) * w + 2 * xo + dx];
            at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1))
        })
        .collect()
}

fn ref_nearest2(x: &[f64], [n, c, h, w]: [usize; 4]) -> Vec<f64> {
    iter4([n, c, 2 * h, 2 * w]).map(|(ni, ci, y, xo)| x[((ni * c + ci) * h + y / 2) * w + xo / 2]).collect()
}

/// Normalises consecutive groups of `group` elements with their biased variance.
fn ref_norm(x: &[f64], group: usize, eps: f64) -> Vec<f64> {
    x.chunks(group)
        .flat_map(|g| {
            let mean = g.iter().sum::<f64>() / group as f64;
            let var = g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / group as f64;
            g.iter().map(move |v| (v - mean) / (var + eps).sqrt())
        })
        .collect()
}

fn store_of(entries: &[(&str, &HostTensor)]) -> WeightStore {
    let mut store = WeightStore::new();
    for (k, t) in entries {
        store.insert(*k, (*t).clone());
    }
    store
}

// ---- forward parity ----

#[test]
fn resize_bilinear_matches_pytorch() {
    let mut rng = SplitMix64::new(1);
    for (shape, oh, ow) in
        [([1, 2, 32, 32], 4, 4), ([1, 2, 4, 4], 8, 8), ([1, 1, 64, 64], 256, 256), ([2, 1, 5, 7], 3, 9)]
    {
        let x = rand(&mut rng, &shape, -1.0, 1.0);
        let want = ref_resize(&f64s(&x), shape, oh, ow);
        let store = WeightStore::new();
        let separable = BurnExec::new(&store, &Device::flex(), true).with_separable_resize(true);
        for mut exec in both(&store).into_iter().chain([separable]) {
            let xv = exec.input(&x);
            let y = exec.resize_bilinear(&xv, oh, ow);
            assert_close("resize", &exec.to_host(&y), &[shape[0], shape[1], oh, ow], &want, FWD_TOL);
        }
    }
}

#[test]
fn channels_last_resize_equals_permute_resize_permute() {
    let mut rng = SplitMix64::new(11);
    let x = rand(&mut rng, &[1, 5, 4, 2], -1.0, 1.0);
    let r = rand(&mut rng, &[1, 9, 7, 2], -1.0, 1.0);
    let store = store_of(&[("x", &x)]);
    let run = |separable: bool| {
        let mut exec = BurnExec::new(&store, &Device::flex(), true).with_separable_resize(separable);
        let xv = exec.param("x", &[1, 5, 4, 2]).unwrap();
        let y = exec.resize_bilinear_nhwc(&xv, 9, 7);
        let loss = weighted_sum(&mut exec, &y, &r);
        (exec.to_host(&y), exec.backward(&loss).unwrap().remove("x").unwrap())
    };
    let ((y0, g0), (y1, g1)) = (run(false), run(true));
    assert_eq!(y1.shape(), [1, 9, 7, 2]);
    assert_close("nhwc resize", &y1, &[1, 9, 7, 2], &f64s(&y0), FWD_TOL);
    assert_close("nhwc resize d/dx", &g1, &[1, 5, 4, 2], &f64s(&g0), FWD_TOL);
}

#[test]
fn grid_sample_reflect_matches_pytorch_outside_the_unit_square() {
    let mut rng = SplitMix64::new(2);
    let xs = [2, 3, 5, 6];
    let x = rand(&mut rng, &xs, -1.0, 1.0);
    // Up to ±3.5 covers single and double reflections and the clipped half-pixel band.
    let grid = rand(&mut rng, &[2, 4, 7, 2], -3.5, 3.5);
    let want = ref_grid_sample(&f64s(&x), xs, &f64s(&grid), [4, 7]);
    for mut exec in both(&WeightStore::new()) {
        let (xv, gv) = (exec.input(&x), exec.input(&grid));
        let y = exec.grid_sample_reflect(&xv, &gv);
        assert_close("grid_sample", &exec.to_host(&y), &[2, 3, 4, 7], &want, FWD_TOL);
    }
}

#[test]
fn norms_match_pytorch() {
    let mut rng = SplitMix64::new(3);
    // A variance of the order of eps makes the placement of eps (inside the square root) matter.
    let x = rand(&mut rng, &[2, 3, 4, 5], -0.005, 0.008);
    let (inst, layer) = (ref_norm(&f64s(&x), 20, 1e-5), ref_norm(&f64s(&x), 60, 1e-5));
    for mut exec in both(&WeightStore::new()) {
        let xv = exec.input(&x);
        let (i, l) = (exec.instance_norm(&xv, 1e-5), exec.layer_norm_chw(&xv, 1e-5));
        assert_close("instance_norm", &exec.to_host(&i), &[2, 3, 4, 5], &inst, FWD_TOL);
        assert_close("layer_norm", &exec.to_host(&l), &[2, 3, 4, 5], &layer, FWD_TOL);
    }
}

#[test]
fn conv_pool_and_nearest_match_pytorch() {
    let mut rng = SplitMix64::new(4);
    let (xs, ws) = ([2, 3, 7, 6], [4, 3, 3, 3]);
    let (x, w, b) = (rand(&mut rng, &xs, -1.0, 1.0), rand(&mut rng, &ws, -1.0, 1.0), rand(&mut rng, &[4], -1.0, 1.0));
    let want = ref_conv(&f64s(&x), xs, &f64s(&w), ws, &f64s(&b), 2, 1);
    let xd = f64s(&x);
    let (pool, near) = (ref_avg_pool2(&xd, xs), ref_nearest2(&xd, xs));
    for mut exec in both(&WeightStore::new()) {
        let (xv, wv, bv) = (exec.input(&x), exec.input(&w), exec.input(&b));
        let y = exec.conv2d(&xv, &wv, Some(&bv), 2, 1);
        assert_close("conv2d", &exec.to_host(&y), &[2, 4, 4, 3], &want, FWD_TOL);
        let p = exec.avg_pool2(&xv);
        assert_close("avg_pool2", &exec.to_host(&p), &[2, 3, 3, 3], &pool, FWD_TOL);
        let u = exec.upsample_nearest2(&xv);
        assert_close("nearest", &exec.to_host(&u), &[2, 3, 14, 12], &near, 0.0);
        let m = exec.max_pool2(&xv);
        assert_close("max_pool2", &exec.to_host(&m), &[2, 3, 3, 3], &ref_max_pool2(&xd, xs), 0.0);
        let a = exec.abs(&xv);
        let abs: Vec<f64> = xd.iter().map(|v| v.abs()).collect();
        assert_close("abs", &exec.to_host(&a), &xs, &abs, 0.0);
    }
}

#[test]
fn shape_ops_linear_and_broadcasting() {
    let mut rng = SplitMix64::new(5);
    let (a, b) = (rand(&mut rng, &[2, 3, 4], -1.0, 1.0), rand(&mut rng, &[3, 1], 0.5, 1.5));
    let (x, w, bias) =
        (rand(&mut rng, &[2, 5], -1.0, 1.0), rand(&mut rng, &[3, 5], -1.0, 1.0), rand(&mut rng, &[3], -1.0, 1.0));
    let (ad, bd) = (f64s(&a), f64s(&b));
    let (xd, wd, bsd) = (f64s(&x), f64s(&w), f64s(&bias));
    let store = WeightStore::new();
    let mut exec = BurnExec::new(&store, &Device::flex(), false);
    let (av, bv) = (exec.input(&a), exec.input(&b));
    let want: Vec<f64> = (0..24).map(|i| ad[i] / bd[(i / 4) % 3] - bd[(i / 4) % 3]).collect();
    let q = exec.div(&av, &bv);
    let q = exec.sub(&q, &bv);
    assert_close("broadcast", &exec.to_host(&q), &[2, 3, 4], &want, FWD_TOL);
    let s = exec.sum_keepdim(&av, 1);
    let want: Vec<f64> = (0..8).map(|i| (0..3).map(|j| ad[(i / 4) * 12 + j * 4 + i % 4]).sum()).collect();
    assert_close("sum_keepdim", &exec.to_host(&s), &[2, 1, 4], &want, FWD_TOL);
    let p = exec.permute(&av, &[2, 0, 1]);
    let want: Vec<f64> = (0..24).map(|i| ad[((i / 3) % 2) * 12 + (i % 3) * 4 + i / 6]).collect();
    assert_close("permute", &exec.to_host(&p), &[4, 2, 3], &want, 0.0);
    let r = exec.reshape(&p, &[8, 3]);
    assert_close("reshape", &exec.to_host(&r), &[8, 3], &want, 0.0);
    let sl = exec.slice(&av, 2, 1, 3);
    let c = exec.concat(&[&sl, &av], 2);
    let want: Vec<f64> = (0..36)
        .map(|i| (i / 6, i % 6))
        .map(|(r, k)| if k < 2 { ad[r * 4 + k + 1] } else { ad[r * 4 + k - 2] })
        .collect();
    assert_close("slice+concat", &exec.to_host(&c), &[2, 3, 6], &want, 0.0);
    let (xv, wv, bv) = (exec.input(&x), exec.input(&w), exec.input(&bias));
    let y = exec.linear(&xv, &wv, Some(&bv));
    let want: Vec<f64> =
        (0..6).map(|i| bsd[i % 3] + (0..5).map(|k| xd[(i / 3) * 5 + k] * wd[(i % 3) * 5 + k]).sum::<f64>()).collect();
    assert_close("linear", &exec.to_host(&y), &[2, 3], &want, FWD_TOL);
    let wt = exec.permute(&wv, &[1, 0]);
    let m = exec.matmul(&xv, &wt);
    let m = exec.add(&m, &bv);
    assert_close("matmul", &exec.to_host(&m), &[2, 3], &want, FWD_TOL);
    let e = exec.scale_shift(&xv, 2.0, -1.0);
    let e = exec.exp(&e);
    let want: Vec<f64> = xd.iter().map(|v| (2.0 * v - 1.0).exp()).collect();
    assert_close("scale_shift+exp", &exec.to_host(&e), &[2, 5], &want, FWD_TOL);
}

// ---- gradients ----

#[test]
fn grid_sample_gradients_reach_input_and_grid() {
    let mut rng = SplitMix64::new(6);
    let xs = [1, 2, 4, 5];
    let (x, grid) = (rand(&mut rng, &xs, -1.0, 1.0), rand(&mut rng, &[1, 3, 4, 2], -2.5, 2.5));
    let r = rand(&mut rng, &[1, 2, 3, 4], -1.0, 1.0);
    let store = store_of(&[("x", &x), ("grid", &grid)]);
    let mut exec = BurnExec::new(&store, &Device::flex(), true);
    let (xv, gv) = (exec.param("x", &xs).unwrap(), exec.param("grid", &[1, 3, 4, 2]).unwrap());
    let y = exec.grid_sample_reflect(&xv, &gv);
    let loss = weighted_sum(&mut exec, &y, &r);
    let grads = exec.backward(&loss).unwrap();
    let (xd, gd) = (f64s(&x), f64s(&grid));
    check_grad("d/dx", &grads["x"], &xd, |p| dot(&ref_grid_sample(p, xs, &gd, [3, 4]), &r));
    check_grad("d/dgrid", &grads["grid"], &gd, |p| dot(&ref_grid_sample(&xd, xs, p, [3, 4]), &r));
}

#[test]
fn resize_instance_norm_and_conv_gradients() {
    let mut rng = SplitMix64::new(7);
    let xs = [1, 2, 6, 5];
    let (x, w, b) =
        (rand(&mut rng, &xs, -1.0, 1.0), rand(&mut rng, &[3, 2, 3, 3], -1.0, 1.0), rand(&mut rng, &[3], -1.0, 1.0));
    let store = store_of(&[("x", &x), ("w", &w), ("b", &b)]);
    let (xd, wd, bd) = (f64s(&x), f64s(&w), f64s(&b));

    for (oh, ow) in [(3, 2), (9, 11)] {
        let r = rand(&mut rng, &[1, 2, oh, ow], -1.0, 1.0);
        for separable in [false, true] {
            let mut exec = BurnExec::new(&store, &Device::flex(), true).with_separable_resize(separable);
            let xv = exec.param("x", &xs).unwrap();
            let y = exec.resize_bilinear(&xv, oh, ow);
            let loss = weighted_sum(&mut exec, &y, &r);
            let g = exec.backward(&loss).unwrap();
            check_grad("resize d/dx", &g["x"], &xd, |p| dot(&ref_resize(p, xs, oh, ow), &r));
        }
    }

    let r = rand(&mut rng, &xs, -1.0, 1.0);
    let mut exec = BurnExec::new(&store, &Device::flex(), true);
    let xv = exec.param("x", &xs).unwrap();
    let y = exec.instance_norm(&xv, 1e-5);
    let loss = weighted_sum(&mut exec, &y, &r);
    let g = exec.backward(&loss).unwrap();
    check_grad("instance_norm d/dx", &g["x"], &xd, |p| dot(&ref_norm(p, 30, 1e-5), &r));

    let ws = [3, 2, 3, 3];
    let r = rand(&mut rng, &[1, 3, 3, 3], -1.0, 1.0);
    let mut exec = BurnExec::new(&store, &Device::flex(), true);
    let (xv, wv, bv) = (exec.param("x", &xs).unwrap(), exec.param("w", &ws).unwrap(), exec.param("b", &[3]).unwrap());
    let y = exec.conv2d(&xv, &wv, Some(&bv), 2, 1);
    let loss = weighted_sum(&mut exec, &y, &r);
    let g = exec.backward(&loss).unwrap();
    check_grad("conv d/dx", &g["x"], &xd, |p| dot(&ref_conv(p, xs, &wd, ws, &bd, 2, 1), &r));
    check_grad("conv d/dw", &g["w"], &wd, |p| dot(&ref_conv(&xd, xs, p, ws, &bd, 2, 1), &r));
    check_grad("conv d/db", &g["b"], &bd, |p| dot(&ref_conv(&xd, xs, &wd, ws, p, 2, 1), &r));
}

#[test]
fn pooling_activation_and_layer_norm_chain_gradient() {
    let mut rng = SplitMix64::new(11);
    let xs = [1, 2, 4, 6];
    let (x, r) = (rand(&mut rng, &xs, -1.0, 1.0), rand(&mut rng, &xs, -1.0, 1.0));
    let store = store_of(&[("x", &x)]);
    let mut exec = BurnExec::new(&store, &Device::flex(), true);
    let xv = exec.param("x", &xs).unwrap();
    let y = exec.upsample_nearest2(&xv);
    let y = exec.leaky_relu(&y, 0.2);
    let y = exec.avg_pool2(&y);
    let y = exec.layer_norm_chw(&y, 1e-5);
    let y = exec.tanh(&y);
    let loss = weighted_sum(&mut exec, &y, &r);
    let g = exec.backward(&loss).unwrap();
    let f = |p: &[f64]| {
        let up: Vec<f64> = ref_nearest2(p, xs).iter().map(|v| if *v > 0.0 { *v } else { 0.2 * v }).collect();
        let y: Vec<f64> = ref_norm(&ref_avg_pool2(&up, [1, 2, 8, 12]), 48, 1e-5).iter().map(|v| v.tanh()).collect();
        dot(&y, &r)
    };
    check_grad("chain d/dx", &g["x"], &f64s(&x), f);
}

#[test]
fn broadcast_gradient_is_reduced_onto_the_small_operand() {
    let mut rng = SplitMix64::new(8);
    let (a, b, r) = (
        rand(&mut rng, &[2, 3, 4], -1.0, 1.0),
        rand(&mut rng, &[3, 1], 0.5, 1.5),
        rand(&mut rng, &[2, 3, 4], -1.0, 1.0),
    );
    let store = store_of(&[("a", &a), ("b", &b)]);
    let mut exec = BurnExec::new(&store, &Device::flex(), true);
    let (av, bv) = (exec.param("a", &[2, 3, 4]).unwrap(), exec.param("b", &[3, 1]).unwrap());
    let y = exec.mul(&av, &bv);
    let y = exec.add(&y, &bv);
    let loss = weighted_sum(&mut exec, &y, &r);
    let g = exec.backward(&loss).unwrap();
    let ad = f64s(&a);
    let f = |p: &[f64]| (0..24).map(|i| (ad[i] * p[(i / 4) % 3] + p[(i / 4) % 3]) * r.data()[i] as f64).sum();
    assert_eq!(g["b"].shape(), &[3, 1]);
    check_grad("d/db", &g["b"], &f64s(&b), f);
}

/// `orig / σ(orig)` with σ = u · (W_mat v), for the two SN layouts.
fn ref_sn(orig: &[f64], shape: [usize; 4], dim: SnDim, u: &[f64], v: &[f64]) -> Vec<f64> {
    let [a, b, kh, kw] = shape;
    let inner = kh * kw;
    let mut sigma = 0.0;
    for (i, o) in orig.iter().enumerate() {
        let (d0, d1, k) = (i / (b * inner), (i / inner) % b, i % inner);
        let (row, col) = match dim {
            SnDim::Dim0 => (d0, d1 * inner + k),
            SnDim::Dim1 => (d1, d0 * inner + k),
        };
        sigma += u[row] * o * v[col];
    }
    let _ = a;
    orig.iter().map(|o| o / sigma).collect()
}

#[test]
fn spectral_norm_weight_and_its_gradient() {
    let mut rng = SplitMix64::new(9);
    for (shape, dim) in [([4, 2, 3, 3], SnDim::Dim0), ([2, 3, 2, 2], SnDim::Dim1)] {
        let orig = rand(&mut rng, &shape, -1.0, 1.0);
        let (rows, cols) = dim.uv_lengths(&shape);
        let (u, v) = (rand(&mut rng, &[rows], 0.2, 1.0), rand(&mut rng, &[cols], 0.2, 1.0));
        let store = store_of(&[("m.weight_orig", &orig), ("m.weight_u", &u), ("m.weight_v", &v)]);
        let r = rand(&mut rng, &shape, -1.0, 1.0);
        let (od, ud, vd) = (f64s(&orig), f64s(&u), f64s(&v));
        let want = store.spectral_norm_effective("m", dim).unwrap();
        for mut exec in both(&store) {
            let w = exec.sn_weight("m", dim, &shape).unwrap();
            let got = exec.to_host(&w);
            assert!(got.max_abs_diff(&want).unwrap() <= 1e-5 * want.max_abs(), "{dim:?} forward");
            if exec.trainable {
                let loss = weighted_sum(&mut exec, &w, &r);
                let g = exec.backward(&loss).unwrap();
                check_grad("d/dweight_orig", &g["m.weight_orig"], &od, |p| dot(&ref_sn(p, shape, dim, &ud, &vd), &r));
                assert_eq!(g.len(), 1, "only weight_orig is a leaf");
                // A second training step on the same executor: fresh graph, same leaves, same gradient.
                let w = exec.sn_weight("m", dim, &shape).unwrap();
                let loss = weighted_sum(&mut exec, &w, &r);
                let again = exec.backward(&loss).unwrap();
                assert_eq!(again["m.weight_orig"], g["m.weight_orig"]);
            }
        }
    }
}

#[test]
fn equal_lr_scales_by_fan_in() {
    let mut rng = SplitMix64::new(10);
    let orig = rand(&mut rng, &[6, 8], -1.0, 1.0);
    let store = store_of(&[("s.weight_orig", &orig)]);
    let want: Vec<f64> = f64s(&orig).iter().map(|v| v * (2.0f64 / 8.0).sqrt()).collect();
    let mut exec = BurnExec::new(&store, &Device::flex(), false);
    let w = exec.equal_lr_weight("s", &[6, 8]).unwrap();
    assert_close("equal_lr", &exec.to_host(&w), &[6, 8], &want, FWD_TOL);
}

// ---- parameter handling and errors ----

#[test]
fn params_are_checked_cached_and_replaceable() {
    let x = HostTensor::filled(&[2, 3], 1.0);
    let store = store_of(&[("p", &x)]);
    let mut exec = BurnExec::new(&store, &Device::flex(), true).with_taps(true);
    assert!(matches!(exec.param("missing", &[1]), Err(ModelError::MissingWeight(_))));
    let msg = exec.param("p", &[3, 2]).unwrap_err().to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
    let p = exec.param("p", &[2, 3]).unwrap();
    exec.tap("p", &p);
    assert_eq!(exec.take_taps()["p"], x);
    assert!(exec.set_param("p", &HostTensor::zeros(&[6])).is_err());
    exec.set_param("p", &HostTensor::filled(&[2, 3], 2.0)).unwrap();
    let p = exec.param("p", &[2, 3]).unwrap();
    let target = exec.input(&HostTensor::zeros(&[2, 3]));
    let loss = exec.mean_abs(&p, &target);
    assert_eq!(exec.to_host(&loss).data(), &[2.0]);
    let g = exec.backward(&loss).unwrap();
    assert_close("d|p|/dp", &g["p"], &[2, 3], &[1.0 / 6.0; 6], 1e-7);

    let mut frozen = BurnExec::new(&store, &Device::flex(), false);
    let p = frozen.param("p", &[2, 3]).unwrap();
    let loss = frozen.mean_abs(&p, &p);
    assert!(frozen.backward(&loss).is_err());
}
