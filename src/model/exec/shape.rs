//! Static shape inference and the state-dict listing it makes possible.
//!
//! Owns one pure function per operator (`conv2d_shape`, `resize_shape`, `broadcast_shape`, …), shared by every
//! executor that needs output shapes before running anything (the ONNX builder), and `ShapeOps`, an `Ops` whose
//! tensors are bare shapes. Running a network through `ShapeOps` receives nothing but the input shapes and emits the
//! ordered list of state-dict entries the architecture requests (`model keys`, weight-file validation) plus the first
//! shape error, since `Ops`' tensor methods cannot fail.

use std::collections::HashMap;

use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::model::reparam::{SN_ORIG, SN_U, SN_V, SnDim};
use crate::model::weights::{EntryKind, ExpectedEntry};
use crate::tensor::HostTensor;

/// Highest rank any `Ops` tensor may have (see `ops`).
pub const MAX_RANK: usize = 4;

fn err(op: &str, reason: impl Into<String>) -> ModelError {
    ModelError::Tensor { name: op.to_owned(), reason: reason.into() }
}

fn expect_rank(op: &str, what: &str, shape: &[usize], rank: usize) -> Result<(), ModelError> {
    if shape.len() == rank { Ok(()) } else { Err(err(op, format!("{what} must have rank {rank}, got {shape:?}"))) }
}

fn expect_axis(op: &str, shape: &[usize], axis: usize) -> Result<(), ModelError> {
    if axis < shape.len() { Ok(()) } else { Err(err(op, format!("axis {axis} is out of range for {shape:?}"))) }
}

/// NumPy broadcasting: right-aligned, size-1 dims stretch.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ModelError> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            _ => Err(err("broadcast", format!("shapes {a:?} and {b:?} are not broadcastable"))),
        })
        .collect()
}

/// `[n, c, h, w]` convolved with `[o, c, kh, kw]`, symmetric zero padding.
pub fn conv2d_shape(
    x: &[usize],
    w: &[usize],
    bias: Option<&[usize]>,
    stride: usize,
    pad: usize,
) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "conv2d";
    expect_rank(OP, "input", x, 4)?;
    expect_rank(OP, "weight", w, 4)?;
    if w[1] != x[1] {
        return Err(err(OP, format!("weight {w:?} expects {} input channels, input is {x:?}", w[1])));
    }
    if let Some(b) = bias
        && b != [w[0]]
    {
        return Err(err(OP, format!("bias {b:?} does not match weight {w:?}")));
    }
    if stride == 0 {
        return Err(err(OP, "stride must be positive"));
    }
    let out = |size: usize, k: usize| {
        (size + 2 * pad)
            .checked_sub(k)
            .map(|s| s / stride + 1)
            .filter(|_| k > 0)
            .ok_or_else(|| err(OP, format!("kernel {k} does not fit input {x:?} with padding {pad}")))
    };
    Ok(vec![x[0], w[0], out(x[2], w[2])?, out(x[3], w[3])?])
}

/// `[n, in] @ [out, in]^T + [out]`.
pub fn linear_shape(x: &[usize], w: &[usize], bias: Option<&[usize]>) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "linear";
    expect_rank(OP, "input", x, 2)?;
    expect_rank(OP, "weight", w, 2)?;
    if x[1] != w[1] {
        return Err(err(OP, format!("input {x:?} does not match weight {w:?}")));
    }
    if let Some(b) = bias
        && b != [w[0]]
    {
        return Err(err(OP, format!("bias {b:?} does not match weight {w:?}")));
    }
    Ok(vec![x[0], w[0]])
}

/// `[m, k] @ [k, n]`.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "matmul";
    expect_rank(OP, "lhs", a, 2)?;
    expect_rank(OP, "rhs", b, 2)?;
    if a[1] != b[0] {
        return Err(err(OP, format!("cannot multiply {a:?} by {b:?}")));
    }
    Ok(vec![a[0], b[1]])
}

/// Normalisations over the trailing dims of an NCHW tensor keep its shape.
pub fn norm_shape(op: &str, x: &[usize]) -> Result<Vec<usize>, ModelError> {
    expect_rank(op, "input", x, 4)?;
    Ok(x.to_vec())
}

/// Reduction over one axis, keeping it with size 1.
pub fn reduce_keepdim_shape(x: &[usize], axis: usize) -> Result<Vec<usize>, ModelError> {
    expect_axis("sum_keepdim", x, axis)?;
    let mut out = x.to_vec();
    out[axis] = 1;
    Ok(out)
}

/// 2×2 average pooling, stride 2, no padding (floor).
pub fn avg_pool2_shape(x: &[usize]) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "avg_pool2";
    expect_rank(OP, "input", x, 4)?;
    if x[2] < 2 || x[3] < 2 {
        return Err(err(OP, format!("input {x:?} is smaller than the 2×2 window")));
    }
    Ok(vec![x[0], x[1], x[2] / 2, x[3] / 2])
}

/// Nearest ×2 upsampling.
pub fn upsample2_shape(x: &[usize]) -> Result<Vec<usize>, ModelError> {
    expect_rank("upsample_nearest2", "input", x, 4)?;
    Ok(vec![x[0], x[1], 2 * x[2], 2 * x[3]])
}

/// Depth-to-space with block 2: `[n, 4c, h, w]` → `[n, c, 2h, 2w]`.
pub fn depth_to_space2_shape(x: &[usize]) -> Result<Vec<usize>, ModelError> {
    expect_rank("depth_to_space2", "input", x, 4)?;
    if !x[1].is_multiple_of(4) {
        return Err(err("depth_to_space2", format!("{} channels are not a multiple of 4", x[1])));
    }
    Ok(vec![x[0], x[1] / 4, 2 * x[2], 2 * x[3]])
}

/// Bilinear resize of an NCHW tensor to `height × width`.
pub fn resize_shape(x: &[usize], height: usize, width: usize) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "resize_bilinear";
    expect_rank(OP, "input", x, 4)?;
    if height == 0 || width == 0 || x[2] == 0 || x[3] == 0 {
        return Err(err(OP, format!("cannot resize {x:?} to {height}×{width}")));
    }
    Ok(vec![x[0], x[1], height, width])
}

/// `grid_sample` of `[n, c, h, w]` at a `[n, ho, wo, 2]` grid.
pub fn grid_sample_shape(x: &[usize], grid: &[usize]) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "grid_sample";
    expect_rank(OP, "input", x, 4)?;
    expect_rank(OP, "grid", grid, 4)?;
    if grid[0] != x[0] || grid[3] != 2 {
        return Err(err(OP, format!("grid {grid:?} does not fit input {x:?} (expected [{}, h, w, 2])", x[0])));
    }
    Ok(vec![x[0], x[1], grid[1], grid[2]])
}

/// Concatenation along `axis`; every other dim must agree.
pub fn concat_shape(xs: &[&[usize]], axis: usize) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "concat";
    let first = xs.first().ok_or_else(|| err(OP, "nothing to concatenate"))?;
    expect_axis(OP, first, axis)?;
    let mut out = first.to_vec();
    for x in &xs[1..] {
        let compatible =
            x.len() == first.len() && x.iter().zip(first.iter()).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if !compatible {
            return Err(err(OP, format!("{x:?} does not match {first:?} outside axis {axis}")));
        }
        out[axis] += x[axis];
    }
    Ok(out)
}

/// `x[.., start..end, ..]` along `axis`.
pub fn slice_shape(x: &[usize], axis: usize, start: usize, end: usize) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "slice";
    expect_axis(OP, x, axis)?;
    if start > end || end > x[axis] {
        return Err(err(OP, format!("range {start}..{end} is out of bounds for axis {axis} of {x:?}")));
    }
    let mut out = x.to_vec();
    out[axis] = end - start;
    Ok(out)
}

/// A view with the same element count.
pub fn reshape_shape(x: &[usize], shape: &[usize]) -> Result<Vec<usize>, ModelError> {
    const OP: &str = "reshape";
    if shape.len() > MAX_RANK {
        return Err(err(OP, format!("target {shape:?} has rank above {MAX_RANK}")));
    }
    if x.iter().product::<usize>() != shape.iter().product::<usize>() {
        return Err(err(OP, format!("cannot view {x:?} as {shape:?}")));
    }
    Ok(shape.to_vec())
}

/// Axes reordered so that output dim `i` is input dim `perm[i]`.
pub fn permute_shape(x: &[usize], perm: &[usize]) -> Result<Vec<usize>, ModelError> {
    let mut seen = vec![false; x.len()];
    let valid = perm.len() == x.len() && perm.iter().all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return Err(err("permute", format!("{perm:?} is not a permutation of the axes of {x:?}")));
    }
    Ok(perm.iter().map(|&p| x[p]).collect())
}

/// `Ops` on shapes only: records the requested state-dict entries and the first shape error.
#[derive(Debug, Default)]
pub struct ShapeOps {
    entries: Vec<ExpectedEntry>,
    index: HashMap<String, usize>,
    error: Option<ModelError>,
}

impl ShapeOps {
    /// A recorder with no entries and no error yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entries requested so far, in request order.
    pub fn entries(&self) -> &[ExpectedEntry] {
        &self.entries
    }

    /// The entries requested, in request order, consuming the recorder.
    pub fn into_entries(self) -> Vec<ExpectedEntry> {
        self.entries
    }

    /// The first shape error met by an infallible op, if any.
    pub fn error(&self) -> Option<&ModelError> {
        self.error.as_ref()
    }

    /// Moves the first shape error out (for callers that must return it by value: `ModelError` is not `Clone`).
    pub fn take_error(&mut self) -> Option<ModelError> {
        self.error.take()
    }

    /// Adds an entry once; a second request must agree on shape and kind.
    fn record(&mut self, key: String, shape: &[usize], kind: EntryKind) -> Result<(), ModelError> {
        if let Some(&i) = self.index.get(&key) {
            let seen = &self.entries[i];
            if seen.shape != shape || seen.kind != kind {
                return Err(err(
                    &key,
                    format!("requested as {kind:?} {shape:?} after {:?} {:?}", seen.kind, seen.shape),
                ));
            }
            return Ok(());
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push(ExpectedEntry { key, shape: shape.to_vec(), kind });
        Ok(())
    }

    /// Keeps the shape, or records the error and carries on with `fallback` so the walk reaches every parameter.
    fn check(&mut self, shape: Result<Vec<usize>, ModelError>, fallback: &[usize]) -> Vec<usize> {
        shape.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            fallback.to_vec()
        })
    }

    fn binary(&mut self, a: &[usize], b: &[usize]) -> Vec<usize> {
        let s = broadcast_shape(a, b);
        self.check(s, a)
    }
}

impl Ops for ShapeOps {
    type T = Vec<usize>;

    fn shape(&self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn param(&mut self, key: &str, shape: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.record(key.to_owned(), shape, EntryKind::Parameter)?;
        Ok(shape.to_vec())
    }

    fn sn_weight(&mut self, prefix: &str, dim: SnDim, shape: &[usize]) -> Result<Vec<usize>, ModelError> {
        if shape.len() < 2 || shape.contains(&0) {
            return Err(err(prefix, format!("spectral norm needs a non-empty weight of rank ≥ 2, got {shape:?}")));
        }
        let (u, v) = dim.uv_lengths(shape);
        self.record(format!("{prefix}.{SN_ORIG}"), shape, EntryKind::Parameter)?;
        self.record(format!("{prefix}.{SN_U}"), &[u], EntryKind::Buffer)?;
        self.record(format!("{prefix}.{SN_V}"), &[v], EntryKind::Buffer)?;
        Ok(shape.to_vec())
    }

    fn equal_lr_weight(&mut self, prefix: &str, shape: &[usize]) -> Result<Vec<usize>, ModelError> {
        self.record(format!("{prefix}.{SN_ORIG}"), shape, EntryKind::Parameter)?;
        Ok(shape.to_vec())
    }

    fn param_view(&mut self, key: &str, stored: &[usize], view: &[usize]) -> Result<Vec<usize>, ModelError> {
        if stored.iter().product::<usize>() != view.iter().product::<usize>() || view.len() > MAX_RANK {
            return Err(err(key, format!("cannot view {stored:?} as {view:?}")));
        }
        self.record(key.to_owned(), stored, EntryKind::Parameter)?;
        Ok(view.to_vec())
    }

    fn declare(&mut self, key: &str, shape: &[usize], kind: EntryKind) -> Result<(), ModelError> {
        self.record(key.to_owned(), shape, kind)
    }

    fn constant(&mut self, value: HostTensor) -> Vec<usize> {
        value.shape().to_vec()
    }

    fn conv2d(
        &mut self,
        x: &Vec<usize>,
        w: &Vec<usize>,
        b: Option<&Vec<usize>>,
        stride: usize,
        pad: usize,
    ) -> Vec<usize> {
        let s = conv2d_shape(x, w, b.map(Vec::as_slice), stride, pad);
        self.check(s, x)
    }

    fn linear(&mut self, x: &Vec<usize>, w: &Vec<usize>, b: Option<&Vec<usize>>) -> Vec<usize> {
        let s = linear_shape(x, w, b.map(Vec::as_slice));
        self.check(s, x)
    }

    fn matmul(&mut self, a: &Vec<usize>, b: &Vec<usize>) -> Vec<usize> {
        let s = matmul_shape(a, b);
        self.check(s, a)
    }

    fn instance_norm(&mut self, x: &Vec<usize>, _eps: f32) -> Vec<usize> {
        let s = norm_shape("instance_norm", x);
        self.check(s, x)
    }

    fn layer_norm_chw(&mut self, x: &Vec<usize>, _eps: f32) -> Vec<usize> {
        let s = norm_shape("layer_norm_chw", x);
        self.check(s, x)
    }

    fn relu(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn abs(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn leaky_relu(&mut self, x: &Vec<usize>, _slope: f32) -> Vec<usize> {
        x.clone()
    }

    fn sigmoid(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn tanh(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn exp(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn sqrt(&mut self, x: &Vec<usize>) -> Vec<usize> {
        x.clone()
    }

    fn add(&mut self, a: &Vec<usize>, b: &Vec<usize>) -> Vec<usize> {
        self.binary(a, b)
    }

    fn sub(&mut self, a: &Vec<usize>, b: &Vec<usize>) -> Vec<usize> {
        self.binary(a, b)
    }

    fn mul(&mut self, a: &Vec<usize>, b: &Vec<usize>) -> Vec<usize> {
        self.binary(a, b)
    }

    fn div(&mut self, a: &Vec<usize>, b: &Vec<usize>) -> Vec<usize> {
        self.binary(a, b)
    }

    fn scale_shift(&mut self, x: &Vec<usize>, _scale: f32, _offset: f32) -> Vec<usize> {
        x.clone()
    }

    fn sum_keepdim(&mut self, x: &Vec<usize>, axis: usize) -> Vec<usize> {
        let s = reduce_keepdim_shape(x, axis);
        self.check(s, x)
    }

    fn avg_pool2(&mut self, x: &Vec<usize>) -> Vec<usize> {
        let s = avg_pool2_shape(x);
        self.check(s, x)
    }

    fn max_pool2(&mut self, x: &Vec<usize>) -> Vec<usize> {
        let s = avg_pool2_shape(x);
        self.check(s, x)
    }

    fn upsample_nearest2(&mut self, x: &Vec<usize>) -> Vec<usize> {
        let s = upsample2_shape(x);
        self.check(s, x)
    }

    fn depth_to_space2(&mut self, x: &Vec<usize>) -> Vec<usize> {
        let s = depth_to_space2_shape(x);
        self.check(s, x)
    }

    fn resize_bilinear(&mut self, x: &Vec<usize>, height: usize, width: usize) -> Vec<usize> {
        let s = resize_shape(x, height, width);
        self.check(s, x)
    }

    fn grid_sample_reflect(&mut self, x: &Vec<usize>, grid: &Vec<usize>) -> Vec<usize> {
        let s = grid_sample_shape(x, grid);
        self.check(s, x)
    }

    fn concat(&mut self, xs: &[&Vec<usize>], axis: usize) -> Vec<usize> {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.as_slice()).collect();
        let s = concat_shape(&shapes, axis);
        self.check(s, shapes.first().copied().unwrap_or_default())
    }

    fn slice(&mut self, x: &Vec<usize>, axis: usize, start: usize, end: usize) -> Vec<usize> {
        let s = slice_shape(x, axis, start, end);
        self.check(s, x)
    }

    fn reshape(&mut self, x: &Vec<usize>, shape: &[usize]) -> Vec<usize> {
        let s = reshape_shape(x, shape);
        self.check(s, shape)
    }

    fn permute(&mut self, x: &Vec<usize>, perm: &[usize]) -> Vec<usize> {
        let s = permute_shape(x, perm);
        self.check(s, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, shape: &[usize], kind: EntryKind) -> ExpectedEntry {
        ExpectedEntry { key: key.into(), shape: shape.to_vec(), kind }
    }

    #[test]
    fn records_sn_and_equal_lr_entries_once_in_request_order() {
        let mut ops = ShapeOps::new();
        ops.param("g.conv1.bias", &[256]).unwrap();
        ops.sn_weight("g.conv1", SnDim::Dim1, &[512, 256, 4, 4]).unwrap();
        ops.sn_weight("g.head.conv_0", SnDim::Dim0, &[64, 32, 3, 3]).unwrap();
        ops.equal_lr_weight("g.adain.style.linear", &[1024, 256]).unwrap();
        // A second request of the same keys adds nothing.
        ops.sn_weight("g.conv1", SnDim::Dim1, &[512, 256, 4, 4]).unwrap();
        ops.param("g.conv1.bias", &[256]).unwrap();
        let expected = vec![
            entry("g.conv1.bias", &[256], EntryKind::Parameter),
            entry("g.conv1.weight_orig", &[512, 256, 4, 4], EntryKind::Parameter),
            entry("g.conv1.weight_u", &[256], EntryKind::Buffer),
            entry("g.conv1.weight_v", &[512 * 16], EntryKind::Buffer),
            entry("g.head.conv_0.weight_orig", &[64, 32, 3, 3], EntryKind::Parameter),
            entry("g.head.conv_0.weight_u", &[64], EntryKind::Buffer),
            entry("g.head.conv_0.weight_v", &[32 * 9], EntryKind::Buffer),
            entry("g.adain.style.linear.weight_orig", &[1024, 256], EntryKind::Parameter),
        ];
        assert!(ops.error().is_none());
        assert_eq!(ops.into_entries(), expected);
    }

    #[test]
    fn conflicting_requests_are_errors() {
        let mut ops = ShapeOps::new();
        ops.param("a.weight", &[2, 3]).unwrap();
        let msg = ops.param("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(msg.contains("a.weight"), "{msg}");
        assert!(ops.sn_weight("b", SnDim::Dim0, &[4]).is_err());
    }

    #[test]
    fn first_shape_error_is_kept_and_shapes_flow_on() {
        let mut ops = ShapeOps::new();
        let x = vec![1, 3, 8, 8];
        let w = ops.param("c.weight", &[16, 4, 3, 3]).unwrap();
        let y = ops.conv2d(&x, &w, None, 1, 1);
        assert_eq!(y, x, "best-effort shape");
        let _ = ops.reshape(&x, &[5]);
        let msg = ops.error().map(ToString::to_string).unwrap_or_default();
        assert!(msg.contains("conv2d"), "{msg}");
        assert_eq!(ops.entries().len(), 1);
    }

    #[test]
    fn op_shapes() {
        assert_eq!(conv2d_shape(&[1, 3, 32, 32], &[8, 3, 3, 3], Some(&[8]), 2, 1).unwrap(), [1, 8, 16, 16]);
        assert_eq!(conv2d_shape(&[1, 512, 64, 64], &[2, 512, 7, 7], None, 1, 3).unwrap(), [1, 2, 64, 64]);
        assert!(conv2d_shape(&[1, 3, 2, 2], &[8, 3, 7, 7], None, 1, 0).is_err());
        assert_eq!(broadcast_shape(&[1, 3, 4, 4], &[3, 1, 1]).unwrap(), [1, 3, 4, 4]);
        assert_eq!(broadcast_shape(&[2, 1], &[1, 5]).unwrap(), [2, 5]);
        assert!(broadcast_shape(&[2, 3], &[4, 3]).is_err());
        assert_eq!(resize_shape(&[1, 2, 64, 64], 256, 256).unwrap(), [1, 2, 256, 256]);
        assert_eq!(grid_sample_shape(&[1, 3, 256, 256], &[1, 64, 64, 2]).unwrap(), [1, 3, 64, 64]);
        assert_eq!(concat_shape(&[&[1, 2, 4, 4], &[1, 5, 4, 4]], 1).unwrap(), [1, 7, 4, 4]);
        assert!(concat_shape(&[&[1, 2, 4, 4], &[1, 5, 4, 3]], 1).is_err());
        assert_eq!(slice_shape(&[1, 6, 4, 4], 1, 2, 5).unwrap(), [1, 3, 4, 4]);
        assert!(slice_shape(&[1, 6, 4, 4], 1, 2, 7).is_err());
        assert_eq!(permute_shape(&[1, 2, 3, 4], &[0, 2, 3, 1]).unwrap(), [1, 3, 4, 2]);
        assert!(permute_shape(&[1, 2, 3, 4], &[0, 2, 2, 1]).is_err());
        assert_eq!(reshape_shape(&[1, 512], &[1, 32, 4, 4]).unwrap(), [1, 32, 4, 4]);
        assert_eq!(linear_shape(&[1, 256], &[1024, 256], Some(&[1024])).unwrap(), [1, 1024]);
        assert_eq!(matmul_shape(&[1, 256], &[256, 8192]).unwrap(), [1, 8192]);
        assert_eq!(avg_pool2_shape(&[1, 3, 7, 9]).unwrap(), [1, 3, 3, 4]);
        assert_eq!(upsample2_shape(&[1, 3, 7, 9]).unwrap(), [1, 3, 14, 18]);
        assert_eq!(reduce_keepdim_shape(&[1, 58, 64, 64], 1).unwrap(), [1, 1, 64, 64]);
    }
}
