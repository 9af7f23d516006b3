//! The ONNX executor's graph side: the generator lowered to an ONNX model for ONNX Runtime.
//!
//! Owns the protobuf schema subset (`proto`) and the `Ops` implementation that records a graph (`builder`).
//! Receives the architecture's op calls and a `WeightStore`; emits serialised model bytes with the current weights
//! as initializers, which `runtime::ort::OrtSession` runs. The tests run each op through ONNX Runtime and compare it
//! with a naive implementation of PyTorch's semantics.

pub mod builder;
pub mod proto;

pub use builder::{IR_VERSION, OPSET_VERSION, OnnxBuilder, OnnxValue, PRODUCER_NAME};

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use prost::Message;

    use super::proto::ModelProto;
    use super::*;
    use crate::model::ops::Ops;
    use crate::model::reparam::SnDim;
    use crate::model::weights::WeightStore;
    use crate::rng::SplitMix64;
    use crate::runtime::Device;
    use crate::runtime::ort::{OrtSession, SessionOptions};
    use crate::tensor::HostTensor;

    const TOL: f32 = 1e-5;
    /// Normalised outputs are O(1), so the statistics must be near exact.
    const NORM_TOL: f32 = 1e-6;

    fn random(shape: &[usize], lo: f32, hi: f32, seed: u64) -> HostTensor {
        let mut rng = SplitMix64::new(seed);
        let n = shape.iter().product();
        let data = (0..n).map(|_| lo + (hi - lo) * rng.uniform() as f32).collect();
        HostTensor::new(shape.to_vec(), data).unwrap()
    }

    fn session(bytes: &[u8], device: Device) -> OrtSession {
        OrtSession::from_bytes(bytes, &SessionOptions { threads: 1, device }).unwrap()
    }

    /// Builds `y = f(inputs)` as a one-output graph and runs it on the CPU.
    fn run_graph(
        store: &WeightStore,
        inputs: &[(&str, &HostTensor)],
        f: impl FnOnce(&mut OnnxBuilder, &[OnnxValue]) -> OnnxValue,
    ) -> HostTensor {
        let mut b = OnnxBuilder::new(store);
        let vals: Vec<OnnxValue> = inputs.iter().map(|(n, t)| b.input(n, t.shape())).collect();
        let y = f(&mut b, &vals);
        b.output("out", &y);
        let mut out = session(&b.finish().unwrap(), Device::Cpu).run(inputs).unwrap();
        out.remove("out").unwrap()
    }

    fn run_unary(x: &HostTensor, f: impl FnOnce(&mut OnnxBuilder, &OnnxValue) -> OnnxValue) -> HostTensor {
        run_graph(&WeightStore::new(), &[("x", x)], |b, v| f(b, &v[0]))
    }

    fn assert_close(got: &HostTensor, want: &HostTensor, tol: f32, what: &str) {
        let diff = got.max_abs_diff(want).unwrap_or_else(|| panic!("{what}: {got:?} vs {want:?}"));
        assert!(diff <= tol, "{what}: max abs diff {diff} > {tol}");
    }

    fn tensor(shape: &[usize], data: Vec<f64>) -> HostTensor {
        HostTensor::new(shape.to_vec(), data.into_iter().map(|v| v as f32).collect()).unwrap()
    }

    // ---- naive references of the PyTorch semantics (f64) ----

    /// `F.interpolate(mode='bilinear', align_corners=False)` along one axis: (i0, i1, λ1) per output index.
    fn bilinear_taps(inp: usize, out: usize) -> Vec<(usize, usize, f64)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let s = (scale * (d as f32 + 0.5) - 0.5).max(0.0) as f64;
                let i0 = s.floor() as usize;
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f64)
            })
            .collect()
    }

    fn ref_resize(x: &HostTensor, oh: usize, ow: usize) -> HostTensor {
        let [n, c, h, w] = x.shape().try_into().unwrap();
        let (ty, tx) = (bilinear_taps(h, oh), bilinear_taps(w, ow));
        let at = |p: usize, i: usize, j: usize| x.data()[(p * h + i) * w + j] as f64;
        let mut out = Vec::new();
        for p in 0..n * c {
            for &(y0, y1, ly) in &ty {
                for &(x0, x1, lx) in &tx {
                    let top = at(p, y0, x0) * (1.0 - lx) + at(p, y0, x1) * lx;
                    let bottom = at(p, y1, x0) * (1.0 - lx) + at(p, y1, x1) * lx;
                    out.push(top * (1.0 - ly) + bottom * ly);
                }
            }
        }
        tensor(&[n, c, oh, ow], out)
    }

    fn ref_nearest2(x: &HostTensor) -> HostTensor {
        let [n, c, h, w] = x.shape().try_into().unwrap();
        let mut out = Vec::new();
        for p in 0..n * c {
            for i in 0..2 * h {
                for j in 0..2 * w {
                    out.push(x.data()[(p * h + i / 2) * w + j / 2] as f64);
                }
            }
        }
        tensor(&[n, c, 2 * h, 2 * w], out)
    }

    use crate::model::testing::reflect_clip;

    fn ref_grid_sample(x: &HostTensor, grid: &HostTensor) -> HostTensor {
        let [n, c, h, w] = x.shape().try_into().unwrap();
        let [_, oh, ow, _] = grid.shape().try_into().unwrap();
        let mut out = vec![0.0; n * c * oh * ow];
        for b in 0..n {
            for i in 0..oh {
                for j in 0..ow {
                    let g = &grid.data()[((b * oh + i) * ow + j) * 2..][..2];
                    let ix = reflect_clip(((g[0] as f64 + 1.0) * w as f64 - 1.0) / 2.0, w);
                    let iy = reflect_clip(((g[1] as f64 + 1.0) * h as f64 - 1.0) / 2.0, h);
                    let (x0, y0) = (ix.floor(), iy.floor());
                    let (lx, ly) = (ix - x0, iy - y0);
                    for ch in 0..c {
                        let px = |yy: f64, xx: f64| {
                            let (yy, xx) = (yy as usize, xx as usize);
                            if yy < h && xx < w { x.data()[((b * c + ch) * h + yy) * w + xx] as f64 } else { 0.0 }
                        };
                        out[((b * c + ch) * oh + i) * ow + j] = px(y0, x0) * (1.0 - lx) * (1.0 - ly)
                            + px(y0, x0 + 1.0) * lx * (1.0 - ly)
                            + px(y0 + 1.0, x0) * (1.0 - lx) * ly
                            + px(y0 + 1.0, x0 + 1.0) * lx * ly;
                    }
                }
            }
        }
        tensor(&[n, c, oh, ow], out)
    }

    /// Normalises consecutive groups of `group` elements (two-pass biased variance).
    fn ref_normalize(x: &HostTensor, group: usize, eps: f64) -> HostTensor {
        let out = x
            .data()
            .chunks(group)
            .flat_map(|g| {
                let mean = g.iter().map(|&v| v as f64).sum::<f64>() / group as f64;
                let var = g.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / group as f64;
                g.iter().map(move |&v| (v as f64 - mean) / (var + eps).sqrt()).collect::<Vec<_>>()
            })
            .collect();
        tensor(x.shape(), out)
    }

    fn ref_conv(x: &HostTensor, wt: &HostTensor, b: Option<&HostTensor>, stride: usize, pad: usize) -> HostTensor {
        let [n, c, h, w] = x.shape().try_into().unwrap();
        let [o, _, k, _] = wt.shape().try_into().unwrap();
        let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        let mut out = Vec::new();
        for bi in 0..n {
            for oc in 0..o {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = b.map_or(0.0, |b| b.data()[oc] as f64);
                        for ic in 0..c {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let (y, xx) = (
                                        (i * stride + ki) as isize - pad as isize,
                                        (j * stride + kj) as isize - pad as isize,
                                    );
                                    if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                        acc += x.data()[((bi * c + ic) * h + y as usize) * w + xx as usize] as f64
                                            * wt.data()[((oc * c + ic) * k + ki) * k + kj] as f64;
                                    }
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        tensor(&[n, o, oh, ow], out)
    }

    // ---- one-op graphs against the references ----

    #[test]
    fn resize_bilinear_matches_pytorch() {
        for (shape, oh, ow, seed) in [
            ([1, 3, 32, 32], 4, 4, 1),     // strong downsampling: taps skip pixels
            ([1, 2, 7, 5], 14, 10, 2),     // ×2 upsampling: borders hit the negative-coordinate clamp
            ([2, 2, 64, 64], 256, 256, 3), // the deformation resize
            ([1, 1, 5, 9], 7, 4, 4),       // non-integer ratios, mixed directions
            ([1, 1, 3, 3], 1, 1, 5),       // a single output pixel samples the centre
        ] {
            let x = random(&shape, -1.0, 1.0, seed);
            let got = run_unary(&x, |b, v| b.resize_bilinear(v, oh, ow));
            assert_close(&got, &ref_resize(&x, oh, ow), TOL, &format!("resize {shape:?} → {oh}×{ow}"));
        }
    }

    #[test]
    fn upsample_nearest2_repeats_pixels() {
        let x = random(&[1, 3, 5, 7], -1.0, 1.0, 6);
        let got = run_unary(&x, |b, v| b.upsample_nearest2(v));
        assert_close(&got, &ref_nearest2(&x), 0.0, "nearest ×2");
    }

    #[test]
    fn grid_sample_reflection_matches_pytorch() {
        let x = random(&[2, 3, 9, 11], -1.0, 1.0, 7);
        // Far outside [-1, 1] so coordinates reflect more than once; plus exact borders and corners.
        let mut grid = random(&[2, 6, 7, 2], -3.2, 3.2, 8);
        grid.data_mut()[..8].copy_from_slice(&[-1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 0.0, 0.0]);
        let got =
            run_graph(&WeightStore::new(), &[("x", &x), ("grid", &grid)], |b, v| b.grid_sample_reflect(&v[0], &v[1]));
        assert_close(&got, &ref_grid_sample(&x, &grid), TOL, "grid_sample reflection");
    }

    #[test]
    fn instance_and_layer_norm_match_pytorch() {
        // Groups of 16K and 256K elements off zero mean: f32 accumulation (ONNX Runtime's InstanceNormalization)
        // misses this tolerance by 4×.
        let x = random(&[1, 16, 128, 128], 1.0, 5.0, 9);
        let got = run_unary(&x, |b, v| b.instance_norm(v, 1e-5));
        assert_close(&got, &ref_normalize(&x, 128 * 128, 1e-5), NORM_TOL, "instance norm");
        let got = run_unary(&x, |b, v| b.layer_norm_chw(v, 1e-5));
        assert_close(&got, &ref_normalize(&x, 16 * 128 * 128, 1e-5), NORM_TOL, "layer norm");
        let small = random(&[2, 3, 5, 4], -1.0, 3.0, 26);
        let got = run_unary(&small, |b, v| b.instance_norm(v, 1e-5));
        assert_close(&got, &ref_normalize(&small, 5 * 4, 1e-5), NORM_TOL, "instance norm, small");
    }

    #[test]
    fn conv_linear_and_pool_match_pytorch() {
        let x = random(&[1, 3, 9, 10], -1.0, 1.0, 10);
        let mut store = WeightStore::new();
        store.insert("c.weight", random(&[5, 3, 3, 3], -0.5, 0.5, 11));
        store.insert("c.bias", random(&[5], -0.5, 0.5, 12));
        let got = run_graph(&store, &[("x", &x)], |b, v| {
            let w = b.param("c.weight", &[5, 3, 3, 3]).unwrap();
            let bias = b.param("c.bias", &[5]).unwrap();
            b.conv2d(&v[0], &w, Some(&bias), 2, 1)
        });
        let want = ref_conv(&x, store.get("c.weight").unwrap(), store.get("c.bias"), 2, 1);
        assert_close(&got, &want, TOL, "conv stride 2 pad 1");

        let xl = random(&[2, 6], -1.0, 1.0, 13);
        store.insert("l.weight", random(&[4, 6], -1.0, 1.0, 14));
        store.insert("l.bias", random(&[4], -1.0, 1.0, 15));
        let got = run_graph(&store, &[("x", &xl)], |b, v| {
            let w = b.param("l.weight", &[4, 6]).unwrap();
            let bias = b.param("l.bias", &[4]).unwrap();
            b.linear(&v[0], &w, Some(&bias))
        });
        let (w, bias, xd) = (store.get("l.weight").unwrap().data(), store.get("l.bias").unwrap().data(), xl.data());
        let want = (0..2)
            .flat_map(|r| {
                (0..4).map(move |o| {
                    bias[o] as f64 + (0..6).map(|i| xd[r * 6 + i] as f64 * w[o * 6 + i] as f64).sum::<f64>()
                })
            })
            .collect();
        assert_close(&got, &tensor(&[2, 4], want), TOL, "linear");

        let xp = random(&[1, 2, 7, 6], -1.0, 1.0, 16);
        let got = run_unary(&xp, |b, v| b.avg_pool2(v));
        let d = xp.data();
        let want = (0..2)
            .flat_map(|c| (0..3).flat_map(move |i| (0..3).map(move |j| (c, i, j))))
            .map(|(c, i, j)| {
                let at = |y: usize, x: usize| d[(c * 7 + y) * 6 + x] as f64;
                (at(2 * i, 2 * j) + at(2 * i, 2 * j + 1) + at(2 * i + 1, 2 * j) + at(2 * i + 1, 2 * j + 1)) / 4.0
            })
            .collect();
        assert_close(&got, &tensor(&[1, 2, 3, 3], want), TOL, "avg pool");
        let got = run_unary(&xp, |b, v| b.max_pool2(v));
        let want = (0..2)
            .flat_map(|c| (0..3).flat_map(move |i| (0..3).map(move |j| (c, i, j))))
            .map(|(c, i, j)| {
                let at = |y: usize, x: usize| d[(c * 7 + y) * 6 + x] as f64;
                at(2 * i, 2 * j).max(at(2 * i, 2 * j + 1)).max(at(2 * i + 1, 2 * j)).max(at(2 * i + 1, 2 * j + 1))
            })
            .collect();
        assert_close(&got, &tensor(&[1, 2, 3, 3], want), 0.0, "max pool");
        let got = run_unary(&xp, |b, v| b.abs(v));
        assert_close(&got, &tensor(&[1, 2, 7, 6], d.iter().map(|v| v.abs() as f64).collect()), 0.0, "abs");
    }

    #[test]
    fn elementwise_and_layout_ops() {
        let x = random(&[1, 3, 2, 4], 0.1, 2.0, 17);
        let y = random(&[3, 1, 1], -1.0, 1.0, 18);
        let got = run_graph(&WeightStore::new(), &[("x", &x), ("y", &y)], |b, v| {
            let (x, y) = (&v[0], &v[1]);
            let s = b.add(x, y); // broadcast [1,3,2,4] + [3,1,1]
            let s = b.mul(&s, x);
            let s = b.sub(&s, y);
            let s = b.div(&s, x);
            let s = b.scale_shift(&s, 0.5, -0.25);
            let s = b.leaky_relu(&s, 0.2);
            let r = b.relu(x);
            let r = b.sqrt(&r);
            let e = b.exp(&s);
            let t = b.tanh(&e);
            let g = b.sigmoid(&t);
            let m = b.add(&g, &r);
            let m = b.slice(&m, 1, 1, 3); // [1,2,2,4]
            let m = b.concat(&[&m, x], 1); // [1,5,2,4]
            let m = b.sum_keepdim(&m, 1); // [1,1,2,4]
            let m = b.permute(&m, &[0, 3, 2, 1]); // [1,4,2,1]
            let m = b.reshape(&m, &[4, 2]);
            let k = b.constant(HostTensor::new(vec![2, 3], vec![1.0, -2.0, 0.5, 3.0, 0.25, -1.0]).unwrap());
            b.matmul(&m, &k) // [4,3]
        });
        let (xd, yd) = (x.data(), y.data());
        let at = |c: usize, i: usize, j: usize| xd[(c * 2 + i) * 4 + j] as f64;
        let m = |c: usize, i: usize, j: usize| {
            let (xv, yv) = (at(c, i, j), yd[c] as f64);
            let s = (((xv + yv) * xv - yv) / xv) * 0.5 - 0.25;
            let s = if s >= 0.0 { s } else { 0.2 * s };
            1.0 / (1.0 + (-(s.exp().tanh())).exp()) + xv.sqrt()
        };
        let summed =
            |i: usize, j: usize| (1..3).map(|c| m(c, i, j)).sum::<f64>() + (0..3).map(|c| at(c, i, j)).sum::<f64>();
        let k = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]];
        // After the permute to [1, 4, 2, 1] and the reshape, row r is j = r and column q is i = q.
        let want =
            (0..4).flat_map(|r| (0..3).map(move |col| (0..2).map(|q| summed(q, r) * k[q][col]).sum::<f64>())).collect();
        assert_close(&got, &tensor(&[4, 3], want), TOL, "elementwise chain");
    }

    #[test]
    fn effective_weights_are_baked_and_params_deduplicated() {
        let mut store = WeightStore::new();
        store.insert("sn.weight_orig", random(&[4, 3, 3, 3], -1.0, 1.0, 19));
        store.insert("sn.weight_u", random(&[4], 0.1, 1.0, 20));
        store.insert("sn.weight_v", random(&[27], 0.1, 1.0, 21));
        store.insert("eq.weight_orig", random(&[5, 8], -1.0, 1.0, 22));
        let x = random(&[1, 3, 6, 6], -1.0, 1.0, 23);
        let xl = random(&[1, 8], -1.0, 1.0, 24);

        let mut b = OnnxBuilder::new(&store).with_taps(true);
        let xv = b.input("x", x.shape());
        let xlv = b.input("xl", xl.shape());
        let w = b.sn_weight("sn", SnDim::Dim0, &[4, 3, 3, 3]).unwrap();
        let again = b.sn_weight("sn", SnDim::Dim0, &[4, 3, 3, 3]).unwrap();
        assert_eq!(w, again);
        let conv = b.conv2d(&xv, &w, None, 1, 1);
        b.tap("inter.conv", &conv);
        let we = b.equal_lr_weight("eq", &[5, 8]).unwrap();
        let lin = b.linear(&xlv, &we, None);
        assert!(b.sn_weight("sn", SnDim::Dim0, &[4, 27]).is_err(), "a second request must agree on the shape");
        assert!(b.param("missing.weight", &[1]).is_err());
        b.output("conv", &conv);
        b.output("lin", &lin);
        let bytes = b.finish().unwrap();

        let model = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!((model.ir_version, model.producer_name.as_deref()), (Some(IR_VERSION), Some(PRODUCER_NAME)));
        assert_eq!(model.opset_import[0].version, Some(OPSET_VERSION));
        let graph = model.graph.unwrap();
        assert_eq!(graph.initializer.len(), 2, "one initializer per effective weight");

        let out = session(&bytes, Device::Cpu).run(&[("x", &x), ("xl", &xl)]).unwrap();
        let w_eff = store.spectral_norm_effective("sn", SnDim::Dim0).unwrap();
        assert_close(&out["conv"], &ref_conv(&x, &w_eff, None, 1, 1), TOL, "SN conv");
        assert_close(&out["inter.conv"], &out["conv"], 0.0, "tap");
        let we = store.equal_lr_effective("eq").unwrap();
        let want = (0..5).map(|o| (0..8).map(|i| xl.data()[i] as f64 * we.data()[o * 8 + i] as f64).sum()).collect();
        assert_close(&out["lin"], &tensor(&[1, 5], want), TOL, "EqualLR linear");
    }

    #[test]
    fn taps_are_outputs_only_when_enabled() {
        let store = WeightStore::new();
        let build = |taps: bool| {
            let mut b = OnnxBuilder::new(&store).with_taps(taps);
            let x = b.input("x", &[1, 2]);
            let y = b.relu(&x);
            b.tap("inter.relu", &y);
            b.output("y", &y);
            b.finish().unwrap()
        };
        let x = random(&[1, 2], -1.0, 1.0, 25);
        let names =
            |bytes: &[u8]| -> BTreeMap<String, HostTensor> { session(bytes, Device::Auto).run(&[("x", &x)]).unwrap() };
        assert_eq!(names(&build(false)).keys().collect::<Vec<_>>(), ["y"]);
        assert_eq!(names(&build(true)).keys().collect::<Vec<_>>(), ["inter.relu", "y"]);
    }

    #[test]
    fn requests_no_provider_can_serve_run_on_the_cpu() {
        let store = WeightStore::new();
        let mut b = OnnxBuilder::new(&store);
        let x = b.input("x", &[1, 3]);
        let y = b.relu(&x);
        b.output("y", &y);
        let bytes = b.finish().unwrap();
        let x = random(&[1, 3], -1.0, 1.0, 26);
        let want = session(&bytes, Device::Cpu).run(&[("x", &x)]).unwrap();
        // No Vulkan provider exists; no machine here has 64 GPUs.
        for device in [Device::Vulkan, Device::Cuda(63)] {
            let mut s = session(&bytes, device);
            assert_eq!(s.device(), Device::Cpu, "{device}");
            assert_eq!(s.run(&[("x", &x)]).unwrap()["y"], want["y"], "{device}");
            assert!(!s.uses_device_buffers());
        }
    }

    #[test]
    fn build_errors_surface_in_finish() {
        let mut store = WeightStore::new();
        store.insert("w", HostTensor::zeros(&[2, 3]));
        let mut b = OnnxBuilder::new(&store);
        let msg = b.param("w", &[3, 2]).unwrap_err().to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("[3, 2]"), "{msg}");
        let x = b.input("x", &[1, 3, 4, 4]);
        let bad = b.reshape(&x, &[5]);
        b.output("y", &bad);
        let msg = b.finish().unwrap_err().to_string();
        assert!(msg.contains("reshape"), "{msg}");
    }
}
