//! `Ops` on burn tensors: each op of the vocabulary as burn calls, with PyTorch's semantics (see `model::ops`).
//!
//! Owns the op bodies of `BurnExec`. Receives `BurnValue` handles; emits new ones on the same device (with autodiff
//! when the executor is trainable).

use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{
    AvgPoolOptions, ConvOptions, GridSampleOptions, GridSamplePaddingMode, InterpolateMode, InterpolateOptions,
    MaxPoolOptions,
};
use burn::tensor::{Tensor, TensorData};

use super::{BurnExec, BurnValue, MAX_RANK, bilinear_matrix, host_copy, pad4};
use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::model::reparam::{SN_ORIG, SnDim, equal_lr_scale};
use crate::tensor::HostTensor;

/// Result rank of a broadcasting binary op.
fn broadcast_result(a: &BurnValue, b: &BurnValue, t: Tensor<MAX_RANK>) -> BurnValue {
    BurnValue::new(t, a.rank.max(b.rank))
}

impl Ops for BurnExec<'_> {
    type T = BurnValue;

    fn shape(&self, x: &BurnValue) -> Vec<usize> {
        x.shape()
    }

    fn param(&mut self, key: &str, shape: &[usize]) -> Result<BurnValue, ModelError> {
        self.leaf(key, shape)
    }

    /// The leaf (and so its gradient) has the `view` shape.
    fn param_view(&mut self, key: &str, stored: &[usize], view: &[usize]) -> Result<BurnValue, ModelError> {
        self.leaf_view(key, stored, view)
    }

    fn sn_weight(&mut self, prefix: &str, dim: SnDim, shape: &[usize]) -> Result<BurnValue, ModelError> {
        if let Some(w) = self.effective.get(prefix) {
            return Ok(w.clone());
        }
        let orig_key = format!("{prefix}.{SN_ORIG}");
        let orig = self.leaf(&orig_key, shape)?;
        if orig.rank < 2 {
            return Err(ModelError::Tensor {
                name: orig_key,
                reason: "spectral norm needs a weight of rank ≥ 2".into(),
            });
        }
        let (u, v) = self.sn_vectors(prefix, dim, shape)?;
        let (rows, cols) = dim.uv_lengths(shape);
        let w = orig.t.clone();
        let mat = match dim {
            SnDim::Dim0 => w,
            SnDim::Dim1 => {
                let o = orig.off();
                let mut perm = [0, 1, 2, 3];
                perm.swap(o, o + 1);
                w.permute(perm)
            }
        }
        .reshape([1, 1, rows, cols]);
        // σ = u · (W_mat v), kept in the graph so the gradient reaches weight_orig through it too.
        let sigma = u.t.matmul(mat.matmul(v.t));
        let eff = BurnValue::new(orig.t / sigma, orig.rank);
        if !self.trainable {
            self.effective.insert(prefix.to_owned(), eff.clone());
        }
        Ok(eff)
    }

    fn equal_lr_weight(&mut self, prefix: &str, shape: &[usize]) -> Result<BurnValue, ModelError> {
        let orig = self.leaf(&format!("{prefix}.{SN_ORIG}"), shape)?;
        Ok(BurnValue::new(orig.t.mul_scalar(equal_lr_scale(shape)), orig.rank))
    }

    fn constant(&mut self, value: HostTensor) -> BurnValue {
        self.input(&value)
    }

    fn tap(&mut self, name: &str, x: &BurnValue) {
        if let Some(taps) = self.taps.as_mut() {
            taps.insert(name.to_owned(), host_copy(x));
        }
    }

    fn conv2d(&mut self, x: &BurnValue, w: &BurnValue, b: Option<&BurnValue>, stride: usize, pad: usize) -> BurnValue {
        let bias = b.map(|b| b.t.clone().reshape([b.t.dims()[MAX_RANK - 1]]));
        let options = ConvOptions::new([stride; 2], [pad; 2], [1; 2], 1);
        BurnValue::new(conv2d(x.t.clone(), w.t.clone(), bias, options), MAX_RANK)
    }

    fn linear(&mut self, x: &BurnValue, w: &BurnValue, b: Option<&BurnValue>) -> BurnValue {
        let y = x.t.clone().matmul(w.t.clone().transpose());
        BurnValue::new(if let Some(b) = b { y + b.t.clone() } else { y }, x.rank)
    }

    fn matmul(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        broadcast_result(a, b, a.t.clone().matmul(b.t.clone()))
    }

    fn instance_norm(&mut self, x: &BurnValue, eps: f32) -> BurnValue {
        BurnValue::new(normalize(x.t.clone(), &[2, 3], eps), x.rank)
    }

    fn layer_norm_chw(&mut self, x: &BurnValue, eps: f32) -> BurnValue {
        BurnValue::new(normalize(x.t.clone(), &[1, 2, 3], eps), x.rank)
    }

    fn relu(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(activation::relu(x.t.clone()), x.rank)
    }

    fn abs(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(x.t.clone().abs(), x.rank)
    }

    fn leaky_relu(&mut self, x: &BurnValue, slope: f32) -> BurnValue {
        BurnValue::new(activation::leaky_relu(x.t.clone(), slope as f64), x.rank)
    }

    fn sigmoid(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(activation::sigmoid(x.t.clone()), x.rank)
    }

    fn tanh(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(x.t.clone().tanh(), x.rank)
    }

    fn exp(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(x.t.clone().exp(), x.rank)
    }

    fn sqrt(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(x.t.clone().sqrt(), x.rank)
    }

    fn add(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        broadcast_result(a, b, a.t.clone() + b.t.clone())
    }

    fn sub(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        broadcast_result(a, b, a.t.clone() - b.t.clone())
    }

    fn mul(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        broadcast_result(a, b, a.t.clone() * b.t.clone())
    }

    fn div(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        broadcast_result(a, b, a.t.clone() / b.t.clone())
    }

    fn scale_shift(&mut self, x: &BurnValue, scale: f32, offset: f32) -> BurnValue {
        BurnValue::new(x.t.clone().mul_scalar(scale).add_scalar(offset), x.rank)
    }

    fn sum_keepdim(&mut self, x: &BurnValue, axis: usize) -> BurnValue {
        BurnValue::new(x.t.clone().sum_dim(axis + x.off()), x.rank)
    }

    fn avg_pool2(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(avg_pool2d(x.t.clone(), AvgPoolOptions::new([2, 2])), x.rank)
    }

    fn max_pool2(&mut self, x: &BurnValue) -> BurnValue {
        BurnValue::new(max_pool2d(x.t.clone(), MaxPoolOptions::new([2, 2])), x.rank)
    }

    fn upsample_nearest2(&mut self, x: &BurnValue) -> BurnValue {
        let [_, _, h, w] = x.t.dims();
        // burn's `Nearest` maps output o to floor(o·in/out), PyTorch's legacy nearest.
        let options = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]);
        BurnValue::new(interpolate(x.t.clone(), options), x.rank)
    }

    fn depth_to_space2(&mut self, x: &BurnValue) -> BurnValue {
        let [n, c4, h, w] = x.t.dims();
        let c = c4 / 4;
        // [n, (a, b, c), h, w] → [n, c, h, a, w, b] → [n, c, 2h, 2w]
        let t: Tensor<6> = x.t.clone().reshape([n, 2, 2, c, h, w]);
        let t = t.permute([0, 3, 4, 1, 5, 2]);
        BurnValue::new(t.reshape([n, c, 2 * h, 2 * w]), x.rank)
    }

    fn resize_bilinear(&mut self, x: &BurnValue, height: usize, width: usize) -> BurnValue {
        if self.separable_resize {
            // Full-size operands: cubecl's matrix product mis-reads broadcast (stride-0) batch dimensions.
            let [n, c, h, w] = x.t.dims();
            let batch = |m: Vec<f32>| m.repeat(n * c);
            let rows = Tensor::<MAX_RANK>::from_data(
                TensorData::new(batch(bilinear_matrix(h, height, false)), [n, c, height, h]),
                &self.device,
            );
            let cols_t = Tensor::<MAX_RANK>::from_data(
                TensorData::new(batch(bilinear_matrix(w, width, true)), [n, c, w, width]),
                &self.device,
            );
            return BurnValue::new(rows.matmul(x.t.clone()).matmul(cols_t), x.rank);
        }
        // `InterpolateOptions::new` defaults to align_corners = true; PyTorch's default is false.
        let options = InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(false)
            .with_output_size([height, width]);
        BurnValue::new(interpolate(x.t.clone(), options), x.rank)
    }

    fn resize_bilinear_nhwc(&mut self, x: &BurnValue, height: usize, width: usize) -> BurnValue {
        if !self.separable_resize {
            let nchw = self.permute(x, &[0, 3, 1, 2]);
            let resized = self.resize_bilinear(&nchw, height, width);
            return self.permute(&resized, &[0, 2, 3, 1]);
        }
        // Channels last, both products run on contiguous operands (cubecl's matrix product misreads permuted ones):
        // rows over `[n, 1, h, w·c]`, then columns over `[n, H, w, c]`.
        let [n, h, w, c] = x.t.dims();
        let rows = Tensor::<MAX_RANK>::from_data(
            TensorData::new(bilinear_matrix(h, height, false).repeat(n), [n, 1, height, h]),
            &self.device,
        );
        let cols = Tensor::<MAX_RANK>::from_data(
            TensorData::new(bilinear_matrix(w, width, false).repeat(n * height), [n, height, width, w]),
            &self.device,
        );
        let by_rows = rows.matmul(x.t.clone().reshape([n, 1, h, w * c])).reshape([n, height, w, c]);
        BurnValue::new(cols.matmul(by_rows), x.rank)
    }

    fn grid_sample_reflect(&mut self, x: &BurnValue, grid: &BurnValue) -> BurnValue {
        let options = GridSampleOptions::new(InterpolateMode::Bilinear)
            .with_padding_mode(GridSamplePaddingMode::Reflection)
            .with_align_corners(false);
        BurnValue::new(x.t.clone().grid_sample_2d(grid.t.clone(), options), MAX_RANK)
    }

    fn concat(&mut self, xs: &[&BurnValue], axis: usize) -> BurnValue {
        let rank = xs.first().map_or(MAX_RANK, |x| x.rank);
        let parts = xs.iter().map(|x| x.t.clone()).collect();
        BurnValue::new(Tensor::cat(parts, axis + MAX_RANK - rank), rank)
    }

    fn slice(&mut self, x: &BurnValue, axis: usize, start: usize, end: usize) -> BurnValue {
        BurnValue::new(x.t.clone().narrow(axis + x.off(), start, end - start), x.rank)
    }

    fn reshape(&mut self, x: &BurnValue, shape: &[usize]) -> BurnValue {
        let (dims, rank) = pad4(shape).unwrap_or_else(|| panic!("reshape to rank {} > 4", shape.len()));
        BurnValue::new(x.t.clone().reshape(dims), rank)
    }

    fn permute(&mut self, x: &BurnValue, perm: &[usize]) -> BurnValue {
        assert_eq!(perm.len(), x.rank, "permutation {perm:?} for a rank-{} tensor", x.rank);
        let off = x.off();
        let mut full = [0, 1, 2, 3];
        for (i, p) in perm.iter().enumerate() {
            full[off + i] = off + p;
        }
        BurnValue::new(x.t.clone().permute(full), x.rank)
    }
}

/// `(x - mean) / sqrt(var + eps)` over `dims`, with the biased variance (PyTorch's instance/layer norm).
fn normalize(x: Tensor<MAX_RANK>, dims: &[usize], eps: f32) -> Tensor<MAX_RANK> {
    let centered = x.clone() - x.mean_dims(dims);
    let var = (centered.clone() * centered.clone()).mean_dims(dims);
    centered / var.add_scalar(eps).sqrt()
}
