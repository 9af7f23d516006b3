//! The operator vocabulary the generator is written in.
//!
//! Owns the `Ops` trait: every network in `model::net` is written once against it, and each executor implements it —
//! burn tensors (`model::burn_exec`, differentiable, for training and personalization) and an ONNX graph builder
//! (`model::onnx`, for fast inference through ONNX Runtime). Receives tensor handles of the executor's own type;
//! emits new handles. Shapes are static and known to both executors, so the network code can ask for them.
//!
//! Conventions shared by all implementations (they are PyTorch's, because the reference is PyTorch):
//! * images are NCHW; the warping grid is NHWC with `[..., 0] = x` and `[..., 1] = y` in `[-1, 1]`;
//! * binary element-wise ops broadcast NumPy-style (right-aligned, size-1 dims stretch);
//! * ranks are at most 4.

use crate::model::ModelError;
use crate::model::reparam::SnDim;
use crate::model::weights::EntryKind;
use crate::tensor::HostTensor;

/// Executor interface. `T` is a cheap-to-clone handle to a tensor (or to a value in a graph being built).
///
/// A network is written once, generically, and every executor gives it its own meaning: the shape executor derives
/// the state dict it declares, burn computes it (with gradients when trainable), the ONNX builder records it.
///
/// ```
/// use metaportrait::model::ModelError;
/// use metaportrait::model::exec::burn::BurnExec;
/// use metaportrait::model::exec::shape::ShapeOps;
/// use metaportrait::model::ops::Ops;
/// use metaportrait::model::weights::WeightStore;
/// use metaportrait::tensor::HostTensor;
///
/// /// 3×3 convolution → ReLU, written once for every executor.
/// fn block<O: Ops>(ops: &mut O, x: &O::T) -> Result<O::T, ModelError> {
///     let w = ops.param("block.weight", &[8, 3, 3, 3])?;
///     let b = ops.param("block.bias", &[8])?;
///     let y = ops.conv2d(x, &w, Some(&b), 1, 1);
///     Ok(ops.relu(&y))
/// }
///
/// // Shapes: the state dict the block declares and its output shape.
/// let mut shapes = ShapeOps::new();
/// let out = block(&mut shapes, &vec![1, 3, 16, 16])?;
/// assert_eq!(out, vec![1, 8, 16, 16]);
/// let keys: Vec<_> = shapes.entries().iter().map(|e| (e.key.as_str(), e.shape.clone())).collect();
/// assert_eq!(keys, [("block.weight", vec![8, 3, 3, 3]), ("block.bias", vec![8])]);
///
/// // Values: the same code on burn tensors, with weights from a store.
/// let mut store = WeightStore::new();
/// store.insert("block.weight", HostTensor::filled(&[8, 3, 3, 3], 0.1));
/// store.insert("block.bias", HostTensor::filled(&[8], -1.0));
/// let mut exec = BurnExec::new(&store, &burn::tensor::Device::flex(), false);
/// let x = exec.input(&HostTensor::filled(&[1, 3, 16, 16], 1.0));
/// let y = block(&mut exec, &x)?;
/// let y = exec.to_host(&y);
/// // Inside the image each output sums 27 products of 0.1, minus the bias of 1: ReLU(1.7).
/// assert!((y.data()[8 * 16 + 8] - 1.7).abs() < 1e-5);
/// # Ok::<(), ModelError>(())
/// ```
pub trait Ops {
    /// The executor's tensor handle; cloning it must not copy the data.
    type T: Clone;

    /// Static shape of a tensor.
    fn shape(&self, x: &Self::T) -> Vec<usize>;

    /// A raw state-dict parameter, by its official key, with the shape the architecture declares for it.
    fn param(&mut self, key: &str, shape: &[usize]) -> Result<Self::T, ModelError>;
    /// Effective weight of a spectrally-normalised module `prefix` in eval mode:
    /// `weight_orig / (u · (W_mat v))` with the stored `weight_u`/`weight_v` buffers (no power iteration).
    /// `shape` is the shape of `weight_orig`.
    fn sn_weight(&mut self, prefix: &str, dim: SnDim, shape: &[usize]) -> Result<Self::T, ModelError>;
    /// Effective weight of an equalised-learning-rate linear `prefix`: `weight_orig * sqrt(2 / in_features)`.
    fn equal_lr_weight(&mut self, prefix: &str, shape: &[usize]) -> Result<Self::T, ModelError>;
    /// A parameter whose state-dict shape `stored` differs from the shape the network computes with, `view` (same
    /// element count, rank ≤ 4) — e.g. StyleGAN2's modulated-conv weights, stored as `[1, out, in, k, k]`.
    fn param_view(&mut self, key: &str, stored: &[usize], view: &[usize]) -> Result<Self::T, ModelError>;
    /// A state-dict entry the architecture owns but its forward pass never reads (heads whose outputs are discarded,
    /// noise buffers that are zeroed). It belongs to the listing and is validated with the rest; executors skip it.
    fn declare(&mut self, _key: &str, _shape: &[usize], _kind: EntryKind) -> Result<(), ModelError> {
        Ok(())
    }
    /// A constant (coordinate grids, scale vectors).
    fn constant(&mut self, value: HostTensor) -> Self::T;

    /// Records a named intermediate so parity tests can compare it; executors may ignore it.
    fn tap(&mut self, _name: &str, _x: &Self::T) {}

    /// 2-D convolution, square kernel, NCHW input, weight `[out, in, k, k]`, symmetric zero padding.
    fn conv2d(&mut self, x: &Self::T, w: &Self::T, b: Option<&Self::T>, stride: usize, pad: usize) -> Self::T;
    /// `x @ w^T + b` for `x: [n, in]`, `w: [out, in]`, `b: [out]`.
    fn linear(&mut self, x: &Self::T, w: &Self::T, b: Option<&Self::T>) -> Self::T;
    /// Plain matrix product of two rank-2 tensors.
    fn matmul(&mut self, a: &Self::T, b: &Self::T) -> Self::T;

    /// Instance normalisation without affine parameters (biased variance over H×W).
    fn instance_norm(&mut self, x: &Self::T, eps: f32) -> Self::T;
    /// Normalisation jointly over (C, H, W) of each sample, without affine parameters.
    fn layer_norm_chw(&mut self, x: &Self::T, eps: f32) -> Self::T;

    /// Element-wise `max(x, 0)`.
    fn relu(&mut self, x: &Self::T) -> Self::T;
    /// Element-wise `x` where `x ≥ 0`, `slope · x` elsewhere.
    fn leaky_relu(&mut self, x: &Self::T, slope: f32) -> Self::T;
    /// Element-wise logistic `1 / (1 + e^−x)`, in (0, 1).
    fn sigmoid(&mut self, x: &Self::T) -> Self::T;
    /// Element-wise hyperbolic tangent, in (−1, 1).
    fn tanh(&mut self, x: &Self::T) -> Self::T;
    /// Element-wise `e^x`.
    fn exp(&mut self, x: &Self::T) -> Self::T;
    /// Element-wise square root (NaN for negative inputs).
    fn sqrt(&mut self, x: &Self::T) -> Self::T;
    /// Element-wise absolute value.
    fn abs(&mut self, x: &Self::T) -> Self::T;

    /// Element-wise `a + b`, broadcasting.
    fn add(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    /// Element-wise `a − b`, broadcasting.
    fn sub(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    /// Element-wise `a · b`, broadcasting.
    fn mul(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    /// Element-wise `a / b`, broadcasting.
    fn div(&mut self, a: &Self::T, b: &Self::T) -> Self::T;
    /// `x * scale + offset` with scalars.
    fn scale_shift(&mut self, x: &Self::T, scale: f32, offset: f32) -> Self::T;
    /// Sum over one axis, keeping it with size 1.
    fn sum_keepdim(&mut self, x: &Self::T, axis: usize) -> Self::T;

    /// 2×2 average pooling, stride 2, no padding.
    fn avg_pool2(&mut self, x: &Self::T) -> Self::T;
    /// 2×2 max pooling, stride 2, no padding (floor: an odd last row/column is dropped, as PyTorch's default).
    fn max_pool2(&mut self, x: &Self::T) -> Self::T;
    /// Nearest ×2 upsampling (PyTorch's legacy `nearest`: pixel repeat).
    fn upsample_nearest2(&mut self, x: &Self::T) -> Self::T;
    /// Depth-to-space with block 2, DCR order: input channel `(2a + b)·C + c` at `(i, j)` goes to output channel `c`
    /// at `(2i + a, 2j + b)` (ONNX `DepthToSpace`, mode DCR; PyTorch's `pixel_shuffle` uses the other order).
    fn depth_to_space2(&mut self, x: &Self::T) -> Self::T;
    /// Bilinear resize of an NCHW tensor, `align_corners = False`, no antialiasing (PyTorch's `F.interpolate`).
    fn resize_bilinear(&mut self, x: &Self::T, height: usize, width: usize) -> Self::T;
    /// `resize_bilinear` of a channels-last `[N, H, W, C]` tensor (a sampling grid), as permute → resize → permute.
    fn resize_bilinear_nhwc(&mut self, x: &Self::T, height: usize, width: usize) -> Self::T {
        let nchw = self.permute(x, &[0, 3, 1, 2]);
        let resized = self.resize_bilinear(&nchw, height, width);
        self.permute(&resized, &[0, 2, 3, 1])
    }
    /// `F.grid_sample(x, grid, mode='bilinear', padding_mode='reflection', align_corners=False)`.
    fn grid_sample_reflect(&mut self, x: &Self::T, grid: &Self::T) -> Self::T;

    /// Joins tensors along `axis`; all other dims must agree.
    fn concat(&mut self, xs: &[&Self::T], axis: usize) -> Self::T;
    /// `x[.., start..end, ..]` along `axis`.
    fn slice(&mut self, x: &Self::T, axis: usize, start: usize, end: usize) -> Self::T;
    /// The same row-major data viewed with another shape of equal element count.
    fn reshape(&mut self, x: &Self::T, shape: &[usize]) -> Self::T;
    /// Reorders axes so that output dim `i` is input dim `perm[i]`.
    fn permute(&mut self, x: &Self::T, perm: &[usize]) -> Self::T;
}
