//! The op-by-op lowering of `OnnxBuilder`: each `Ops` call becomes the ONNX operators whose ONNX Runtime kernels
//! match PyTorch's semantics (the notes on each op say how).
//!
//! Owns nothing but the mapping. Receives the network's op calls through `Ops`; emits nodes and initializers into the
//! parent builder's graph (its private helpers: `node`, `binary`, `cast`, the attribute constructors).

use super::*;

impl Ops for OnnxBuilder<'_> {
    type T = OnnxValue;

    fn shape(&self, x: &OnnxValue) -> Vec<usize> {
        x.shape.clone()
    }

    fn param(&mut self, key: &str, shape: &[usize]) -> Result<OnnxValue, ModelError> {
        let init_key = InitKey::Param(key.to_owned());
        if let Some(v) = self.cached(&init_key, key, shape) {
            return v;
        }
        let t = self.weights.require(key)?;
        self.baked(init_key, key.to_owned(), t, shape)
    }

    fn param_view(&mut self, key: &str, stored: &[usize], view: &[usize]) -> Result<OnnxValue, ModelError> {
        let init_key = InitKey::Param(key.to_owned());
        if let Some(v) = self.cached(&init_key, key, view) {
            return v;
        }
        let t = self.weights.require(key)?;
        if t.shape() != stored || t.len() != view.iter().product::<usize>() {
            return Err(ModelError::Tensor {
                name: key.to_owned(),
                reason: format!("stored shape {:?} cannot be used as {stored:?} viewed as {view:?}", t.shape()),
            });
        }
        let (elem, raw) = self.float_data(t.data());
        Ok(self.initializer(init_key, key.to_owned(), view, elem, raw))
    }

    fn sn_weight(&mut self, prefix: &str, dim: SnDim, shape: &[usize]) -> Result<OnnxValue, ModelError> {
        let init_key = InitKey::SpectralNorm(prefix.to_owned());
        let name = format!("{prefix}.weight");
        if let Some(v) = self.cached(&init_key, &name, shape) {
            return v;
        }
        let t = self.weights.spectral_norm_effective(prefix, dim)?;
        self.baked(init_key, name, &t, shape)
    }

    fn equal_lr_weight(&mut self, prefix: &str, shape: &[usize]) -> Result<OnnxValue, ModelError> {
        let init_key = InitKey::EqualLr(prefix.to_owned());
        let name = format!("{prefix}.weight");
        if let Some(v) = self.cached(&init_key, &name, shape) {
            return v;
        }
        let t = self.weights.equal_lr_effective(prefix)?;
        self.baked(init_key, name, &t, shape)
    }

    fn constant(&mut self, value: HostTensor) -> OnnxValue {
        self.const_f32(&value)
    }

    fn tap(&mut self, name: &str, x: &OnnxValue) {
        if self.taps {
            self.output(name, x);
        }
    }

    fn conv2d(&mut self, x: &OnnxValue, w: &OnnxValue, b: Option<&OnnxValue>, stride: usize, pad: usize) -> OnnxValue {
        let s = shape::conv2d_shape(&x.shape, &w.shape, b.map(|b| b.shape.as_slice()), stride, pad);
        let s = self.checked(s, &x.shape);
        let (p, st) = (pad as i64, stride as i64);
        let kernel = dims_i64(w.shape.get(2..).unwrap_or_default());
        let attrs = vec![
            attr_ints(attr::KERNEL_SHAPE, &kernel),
            attr_ints(attr::STRIDES, &[st, st]),
            attr_ints(attr::PADS, &[p, p, p, p]),
            attr_ints(attr::DILATIONS, &[1, 1]),
            attr_int(attr::GROUP, 1),
        ];
        match b {
            Some(b) => self.node("Conv", &[&x.name, &w.name, &b.name], attrs, s),
            None => self.node("Conv", &[&x.name, &w.name], attrs, s),
        }
    }

    fn linear(&mut self, x: &OnnxValue, w: &OnnxValue, b: Option<&OnnxValue>) -> OnnxValue {
        let s = shape::linear_shape(&x.shape, &w.shape, b.map(|b| b.shape.as_slice()));
        let s = self.checked(s, &x.shape);
        let attrs = vec![attr_int(attr::TRANS_B, 1)];
        match b {
            Some(b) => self.node("Gemm", &[&x.name, &w.name, &b.name], attrs, s),
            None => self.node("Gemm", &[&x.name, &w.name], attrs, s),
        }
    }

    fn matmul(&mut self, a: &OnnxValue, b: &OnnxValue) -> OnnxValue {
        let s = shape::matmul_shape(&a.shape, &b.shape);
        let s = self.checked(s, &a.shape);
        self.node("MatMul", &[&a.name, &b.name], vec![], s)
    }

    fn instance_norm(&mut self, x: &OnnxValue, eps: f32) -> OnnxValue {
        let s = shape::norm_shape("instance_norm", &x.shape);
        let _ = self.checked(s, &x.shape);
        self.normalize_groups(x, eps)
    }

    /// The joint (C, H, W) normalisation is the group normalisation of the `[n, 1, c·h, w]` view.
    fn layer_norm_chw(&mut self, x: &OnnxValue, eps: f32) -> OnnxValue {
        let s = shape::norm_shape("layer_norm_chw", &x.shape);
        let s = self.checked(s, &[1, 1, 1, 1]);
        let view = self.reshape(x, &[s[0], 1, s[1] * s[2], s[3]]);
        let normed = self.normalize_groups(&view, eps);
        self.reshape(&normed, &x.shape)
    }

    fn relu(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Relu", x, vec![])
    }

    fn abs(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Abs", x, vec![])
    }

    fn leaky_relu(&mut self, x: &OnnxValue, slope: f32) -> OnnxValue {
        self.unary("LeakyRelu", x, vec![attr_float(attr::ALPHA, slope)])
    }

    fn sigmoid(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Sigmoid", x, vec![])
    }

    fn tanh(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Tanh", x, vec![])
    }

    fn exp(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Exp", x, vec![])
    }

    fn sqrt(&mut self, x: &OnnxValue) -> OnnxValue {
        self.unary("Sqrt", x, vec![])
    }

    fn add(&mut self, a: &OnnxValue, b: &OnnxValue) -> OnnxValue {
        self.binary("Add", a, b)
    }

    fn sub(&mut self, a: &OnnxValue, b: &OnnxValue) -> OnnxValue {
        self.binary("Sub", a, b)
    }

    fn mul(&mut self, a: &OnnxValue, b: &OnnxValue) -> OnnxValue {
        self.binary("Mul", a, b)
    }

    fn div(&mut self, a: &OnnxValue, b: &OnnxValue) -> OnnxValue {
        self.binary("Div", a, b)
    }

    fn scale_shift(&mut self, x: &OnnxValue, scale: f32, offset: f32) -> OnnxValue {
        let mut y = x.clone();
        if scale != 1.0 {
            let s = self.scalar(scale);
            y = self.binary("Mul", &y, &s);
        }
        if offset != 0.0 {
            let o = self.scalar(offset);
            y = self.binary("Add", &y, &o);
        }
        y
    }

    fn sum_keepdim(&mut self, x: &OnnxValue, axis: usize) -> OnnxValue {
        let s = shape::reduce_keepdim_shape(&x.shape, axis);
        let s = self.checked(s, &x.shape);
        let axes = self.const_i64(&[axis as i64]);
        self.node("ReduceSum", &[&x.name, &axes.name], vec![attr_int(attr::KEEPDIMS, 1)], s)
    }

    fn avg_pool2(&mut self, x: &OnnxValue) -> OnnxValue {
        let s = shape::avg_pool2_shape(&x.shape);
        let s = self.checked(s, &x.shape);
        let attrs = vec![attr_ints(attr::KERNEL_SHAPE, &[2, 2]), attr_ints(attr::STRIDES, &[2, 2])];
        self.node("AveragePool", &[&x.name], attrs, s)
    }

    fn max_pool2(&mut self, x: &OnnxValue) -> OnnxValue {
        let s = shape::avg_pool2_shape(&x.shape);
        let s = self.checked(s, &x.shape);
        let attrs = vec![attr_ints(attr::KERNEL_SHAPE, &[2, 2]), attr_ints(attr::STRIDES, &[2, 2])];
        self.node("MaxPool", &[&x.name], attrs, s)
    }

    /// `asymmetric` + `floor`: source index `floor(d · in / out)` = `d / 2`, PyTorch's legacy nearest.
    fn upsample_nearest2(&mut self, x: &OnnxValue) -> OnnxValue {
        let s = shape::upsample2_shape(&x.shape);
        let s = self.checked(s, &x.shape);
        let attrs = vec![
            attr_str(attr::MODE, "nearest"),
            attr_str(attr::COORDINATE_MODE, "asymmetric"),
            attr_str(attr::NEAREST_MODE, "floor"),
        ];
        self.resize(x, s, attrs)
    }

    fn depth_to_space2(&mut self, x: &OnnxValue) -> OnnxValue {
        let s = shape::depth_to_space2_shape(&x.shape);
        let s = self.checked(s, &x.shape);
        let attrs = vec![attr_int(attr::BLOCKSIZE, 2), attr_str(attr::MODE, "DCR")];
        self.node("DepthToSpace", &[&x.name], attrs, s)
    }

    /// `half_pixel` is PyTorch's `align_corners=False` mapping `(d + 0.5) · in / out − 0.5` (also for an output of
    /// size 1, unlike `pytorch_half_pixel`); ONNX Runtime clamps negative source coordinates to 0 as PyTorch does.
    fn resize_bilinear(&mut self, x: &OnnxValue, height: usize, width: usize) -> OnnxValue {
        let s = shape::resize_shape(&x.shape, height, width);
        let s = self.checked(s, &x.shape);
        let attrs = vec![attr_str(attr::MODE, "linear"), attr_str(attr::COORDINATE_MODE, "half_pixel")];
        self.resize(x, s, attrs)
    }

    /// Opset-16 `GridSample`; its reflection padding reflects about [-0.5, size - 0.5] and re-reflects the
    /// out-of-range corner taps, which equals PyTorch's reflect-then-clip.
    fn grid_sample_reflect(&mut self, x: &OnnxValue, grid: &OnnxValue) -> OnnxValue {
        let s = shape::grid_sample_shape(&x.shape, &grid.shape);
        let s = self.checked(s, &x.shape);
        let attrs = vec![
            attr_str(attr::MODE, "bilinear"),
            attr_str(attr::PADDING_MODE, "reflection"),
            attr_int(attr::ALIGN_CORNERS, 0),
        ];
        if self.half {
            let (x, grid) = (self.cast(x, data_type::FLOAT), self.cast(grid, data_type::FLOAT));
            let y = self.node("GridSample", &[&x.name, &grid.name], attrs, s);
            return self.cast(&y, data_type::FLOAT16);
        }
        self.node("GridSample", &[&x.name, &grid.name], attrs, s)
    }

    fn concat(&mut self, xs: &[&OnnxValue], axis: usize) -> OnnxValue {
        let shapes: Vec<&[usize]> = xs.iter().map(|x| x.shape.as_slice()).collect();
        let s = shape::concat_shape(&shapes, axis);
        let s = self.checked(s, shapes.first().copied().unwrap_or_default());
        let names: Vec<&str> = xs.iter().map(|x| x.name.as_str()).collect();
        self.node("Concat", &names, vec![attr_int(attr::AXIS, axis as i64)], s)
    }

    fn slice(&mut self, x: &OnnxValue, axis: usize, start: usize, end: usize) -> OnnxValue {
        let s = shape::slice_shape(&x.shape, axis, start, end);
        let s = self.checked(s, &x.shape);
        if s == x.shape {
            return x.clone();
        }
        let starts = self.const_i64(&[start as i64]);
        let ends = self.const_i64(&[end as i64]);
        let axes = self.const_i64(&[axis as i64]);
        self.node("Slice", &[&x.name, &starts.name, &ends.name, &axes.name], vec![], s)
    }

    fn reshape(&mut self, x: &OnnxValue, shape: &[usize]) -> OnnxValue {
        let s = shape::reshape_shape(&x.shape, shape);
        let s = self.checked(s, shape);
        if s == x.shape {
            return x.clone();
        }
        let target = self.const_i64(&dims_i64(&s));
        self.node("Reshape", &[&x.name, &target.name], vec![], s)
    }

    fn permute(&mut self, x: &OnnxValue, perm: &[usize]) -> OnnxValue {
        let s = shape::permute_shape(&x.shape, perm);
        let s = self.checked(s, &x.shape);
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return x.clone();
        }
        let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        self.node("Transpose", &[&x.name], vec![attr_ints(attr::PERM, &perm)], s)
    }
}
