//! The burn executor: the generator on burn tensors, differentiable, for personalization and as a second inference
//! path.
//!
//! Owns `BurnExec` (the `Ops` implementation) and its parameter leaves. Receives a `WeightStore`, from which each
//! parameter is materialised on first request and then cached by its official key, and host inputs. Emits burn
//! handles (`BurnValue`), host copies of them, named taps and, after `backward`, the gradient of every parameter leaf
//! by official key — for spectral-norm and EqualLR modules that is `prefix.weight_orig`, because their effective
//! weights are built from it with differentiable ops. Op semantics are PyTorch's (see `ops`); the tests check each
//! one, and its gradient, against a naive reference.

use std::collections::BTreeMap;

use burn::tensor::activation;
use burn::tensor::module::{avg_pool2d, conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{
    AvgPoolOptions, ConvOptions, GridSampleOptions, GridSamplePaddingMode, InterpolateMode, InterpolateOptions,
    MaxPoolOptions,
};
use burn::tensor::{Device, Tensor, TensorData};

use crate::model::ModelError;
use crate::model::ops::{Ops, SnDim};
use crate::model::weights::{SN_ORIG, SN_U, SN_V, WeightStore, equal_lr_scale, spectral_sigma};
use crate::tensor::HostTensor;

const EXECUTOR: &str = "burn";
/// Every value is stored as a rank-4 burn tensor; `Ops` ranks go up to this.
const MAX_RANK: usize = 4;

/// A tensor handle: a 4-D burn tensor whose last `rank` dims are the logical shape (leading dims are 1).
/// Right-aligned padding makes burn's size-1 broadcasting coincide with NumPy's for mixed ranks.
#[derive(Clone, Debug)]
pub struct BurnValue {
    pub t: Tensor<MAX_RANK>,
    pub rank: usize,
}

impl BurnValue {
    pub fn new(t: Tensor<MAX_RANK>, rank: usize) -> Self {
        debug_assert!((1..=MAX_RANK).contains(&rank), "rank {rank} outside 1..=4");
        Self { t, rank }
    }

    pub fn shape(&self) -> Vec<usize> {
        self.t.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// Offset that turns a logical axis into a dim of the 4-D tensor.
    fn off(&self) -> usize {
        MAX_RANK - self.rank
    }
}

/// Left-pads a shape with 1s to rank 4; rank 0 (a scalar) becomes logical rank 1.
fn pad4(shape: &[usize]) -> Option<([usize; MAX_RANK], usize)> {
    let rank = shape.len().max(1);
    if rank > MAX_RANK {
        return None;
    }
    let mut dims = [1; MAX_RANK];
    dims[MAX_RANK - shape.len()..].copy_from_slice(shape);
    Some((dims, rank))
}

/// Resolves an executor device spec: `cuda[:N]` needs the `cuda` build feature and a working driver; `auto` takes
/// GPU 0 when both are there and says in one line why not otherwise.
pub fn exec_device(device: crate::runtime::Device) -> Result<Device, ModelError> {
    resolve_device(device).map(|(d, _)| d)
}

/// `exec_device` and the device it settled on (`auto` resolved).
pub fn resolve_device(device: crate::runtime::Device) -> Result<(Device, crate::runtime::Device), ModelError> {
    use crate::runtime::Device as Requested;
    match device {
        Requested::Cpu => Ok((Device::flex(), Requested::Cpu)),
        Requested::Auto => match cuda_device(0) {
            Ok(gpu) => {
                tracing::info!("burn executor: running on CUDA GPU 0");
                Ok((gpu, Requested::Cuda(0)))
            }
            Err(why) => {
                tracing::info!("burn executor: running on the CPU (flex): {why}");
                Ok((Device::flex(), Requested::Cpu))
            }
        },
        Requested::Cuda(n) => cuda_device(n)
            .map(|gpu| (gpu, device))
            .map_err(|why| ModelError::Executor { executor: EXECUTOR, reason: format!("device `{device}`: {why}") }),
        Requested::Vulkan => vulkan_device()
            .map(|gpu| (gpu, device))
            .map_err(|why| ModelError::Executor { executor: EXECUTOR, reason: format!("device `{device}`: {why}") }),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan_device() -> Result<Device, String> {
    // cubecl panics when no adapter comes up: ask wgpu first, on Vulkan only, as cubecl will.
    use eframe::wgpu;
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(descriptor);
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| format!("no Vulkan adapter: {e}"))?;
    let info = adapter.get_info();
    usable_vulkan_adapter(&info.name, info.device_type == wgpu::DeviceType::Cpu)?;
    tracing::info!("burn executor on Vulkan: {} ({:?})", info.name, info.device_type);
    Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice))
}

/// Whether burn may train on this Vulkan adapter. A software rasterizer (Mesa's llvmpipe/lavapipe, what a machine
/// without a GPU reports) crashes compiling cubecl's compute kernels, and would be slower than `--device cpu` anyway.
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
fn usable_vulkan_adapter(name: &str, software: bool) -> Result<(), String> {
    if software {
        return Err(format!(
            "the only Vulkan adapter is `{name}`, a software rasterizer on the CPU: use `--device cpu` (burn's CPU \
             backend is faster, and this adapter cannot run burn's kernels)"
        ));
    }
    Ok(())
}

#[cfg(not(feature = "vulkan"))]
fn vulkan_device() -> Result<Device, String> {
    Err("this build has no Vulkan backend for burn (rebuild with `--features vulkan`)".into())
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device, String> {
    // cubecl's CUDA runtime loads the driver through cudarc, which panics without one: probe first.
    crate::runtime::probe_cuda(ordinal)?;
    Ok(Device::cuda(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device, String> {
    Err("this build has no CUDA backend for burn (rebuild with `--features cuda`: cubecl's CUDA runtime, loaded at \
         run time, no CUDA toolkit needed to build); use `cpu`, or the ONNX executor for GPU inference"
        .into())
}

/// PyTorch's bilinear resampling (align_corners = false, no antialias) from `input` to `output` samples as a dense
/// `[output, input]` matrix (`transposed`: `[input, output]`), row-major. Each row holds the two taps of one output
/// sample: source `(i + ½)·input/output − ½`, clamped at 0, neighbours clamped at the last sample.
pub fn bilinear_matrix(input: usize, output: usize, transposed: bool) -> Vec<f32> {
    let mut m = vec![0.0f32; input * output];
    let scale = input as f64 / output.max(1) as f64;
    for i in 0..output {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let frac = (src - i0 as f64) as f32;
        for (j, weight) in [(i0, 1.0 - frac), (i1, frac)] {
            let at = if transposed { j * output + i } else { i * input + j };
            m[at] += weight;
        }
    }
    m
}

/// `Ops` on burn tensors. With `trainable`, parameters are autodiff leaves and `backward` returns their gradients.
pub struct BurnExec<'s> {
    /// Borrowed, not copied: only the entries a forward asks for are ever read (and uploaded).
    store: &'s WeightStore,
    /// A second network's weights in the same graph (the discriminator behind the generator while training), looked
    /// up when `store` lacks a key. The key sets are disjoint.
    extra: Option<&'s WeightStore>,
    /// Parameters already on the device (a training run's current values), preferred over the stores: a step
    /// builds its leaves from these without a host round trip.
    resident: Vec<&'s BTreeMap<String, BurnValue>>,
    device: Device,
    trainable: bool,
    /// Bilinear resizes as two matrix products (`R_h · x · R_wᵀ`) instead of burn's interpolate: cubecl's kernels (the
    /// Vulkan and CUDA backends) have no bilinear backward, matrix products differentiate everywhere. On by default
    /// off the CPU backend.
    separable_resize: bool,
    /// Leaves by official key (for SN/EqualLR modules: `prefix.weight_orig`).
    params: BTreeMap<String, BurnValue>,
    /// Effective SN weights by prefix, only when nothing is trainable: while training, backward consumes the graph
    /// they hang on, so each forward rebuilds them from the leaves.
    effective: BTreeMap<String, BurnValue>,
    /// Spectral-norm `(u, v)` constants by prefix.
    sn_uv: BTreeMap<String, (BurnValue, BurnValue)>,
    taps: Option<BTreeMap<String, HostTensor>>,
}

impl<'s> BurnExec<'s> {
    /// `trainable` puts the parameters on `device.autodiff()` and marks them as requiring gradients.
    pub fn new(store: &'s WeightStore, device: &Device, trainable: bool) -> Self {
        let separable_resize = *device != Device::flex();
        let device = if trainable { device.clone().autodiff() } else { device.clone() };
        Self {
            store,
            extra: None,
            resident: Vec::new(),
            device,
            trainable,
            separable_resize,
            params: BTreeMap::new(),
            effective: BTreeMap::new(),
            sn_uv: BTreeMap::new(),
            taps: None,
        }
    }

    /// An executor over two networks' weights at once, e.g. a generator whose output a discriminator judges: one
    /// graph, so gradients flow from the second network's loss back into the first.
    pub fn joint(store: &'s WeightStore, extra: &'s WeightStore, device: &Device, trainable: bool) -> Self {
        Self { extra: Some(extra), ..Self::new(store, device, trainable) }
    }

    /// Takes parameters from `resident` (device tensors without autodiff, by official key) before the stores. Their
    /// shapes are the leaf shapes the architecture asks for. May be given once per network of a joint executor.
    pub fn with_resident(mut self, resident: &'s BTreeMap<String, BurnValue>) -> Self {
        self.resident.push(resident);
        self
    }

    /// Forces the matrix-product form of bilinear resizing on or off (see `separable_resize`).
    pub fn with_separable_resize(mut self, enabled: bool) -> Self {
        self.separable_resize = enabled;
        self
    }

    /// Enables recording of `tap`ped intermediates as host copies.
    pub fn with_taps(mut self, enabled: bool) -> Self {
        self.taps = enabled.then(BTreeMap::new);
        self
    }

    pub fn take_taps(&mut self) -> BTreeMap<String, HostTensor> {
        self.taps.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A constant input (no gradient).
    pub fn input(&mut self, t: &HostTensor) -> BurnValue {
        let (dims, rank) = pad4(t.shape()).unwrap_or_else(|| panic!("input of rank {} > 4", t.shape().len()));
        BurnValue::new(Tensor::from_data(TensorData::new(t.data().to_vec(), dims), &self.device), rank)
    }

    /// Host copy with the logical shape.
    pub fn to_host(&self, v: &BurnValue) -> HostTensor {
        host_copy(v)
    }

    /// `mean(|a - b|)` as a rank-1 tensor of one element (PyTorch's L1 loss).
    pub fn mean_abs(&mut self, a: &BurnValue, b: &BurnValue) -> BurnValue {
        let m = (a.t.clone() - b.t.clone()).abs().mean();
        BurnValue::new(m.reshape([1, 1, 1, 1]), 1)
    }

    /// Back-propagates from a one-element `loss` and returns the gradient of every parameter leaf created so far, by
    /// official key (zeros for leaves the loss does not depend on). Consumes the recorded graph: run a new forward
    /// before the next call.
    pub fn backward(&self, loss: &BurnValue) -> Result<BTreeMap<String, HostTensor>, ModelError> {
        Ok(self.backward_device(loss)?.iter().map(|(key, g)| (key.clone(), host_copy(g))).collect())
    }

    /// `backward` with the gradients left on the device (tensors without autodiff), shaped like their leaves.
    pub fn backward_device(&self, loss: &BurnValue) -> Result<BTreeMap<String, BurnValue>, ModelError> {
        let fail = |reason: &str| Err(ModelError::Executor { executor: EXECUTOR, reason: reason.to_owned() });
        if !self.trainable {
            return fail("backward needs an executor created with trainable = true");
        }
        if loss.t.shape().num_elements() != 1 {
            return fail("the loss must have exactly one element");
        }
        if !loss.t.is_tracked() {
            return fail("the loss does not depend on any trainable parameter");
        }
        let grads = loss.t.backward();
        Ok(self
            .params
            .iter()
            .map(|(key, p)| {
                let g = p.t.grad(&grads).unwrap_or_else(|| p.t.zeros_like().without_autodiff());
                (key.clone(), BurnValue::new(g, p.rank))
            })
            .collect())
    }

    /// Parameter leaves created so far, by official key.
    pub fn params(&self) -> &BTreeMap<String, BurnValue> {
        &self.params
    }

    /// Host copies of all parameter leaves (e.g. to write personalised weights back into a `WeightStore`).
    pub fn params_to_host(&self) -> BTreeMap<String, HostTensor> {
        self.params.iter().map(|(k, p)| (k.clone(), host_copy(p))).collect()
    }

    /// Replaces a parameter's value with host data (a fresh leaf). If the leaf exists its shape must not change.
    pub fn set_param(&mut self, key: &str, value: &HostTensor) -> Result<(), ModelError> {
        let value = device_copy(value, &self.device)
            .map_err(|_| ModelError::Tensor { name: key.to_owned(), reason: "rank above 4".into() })?;
        self.replace_param(key, value)
    }

    /// Like `set_param` with a burn value (no host round trip): its graph history is dropped and it becomes a leaf.
    pub fn replace_param(&mut self, key: &str, value: BurnValue) -> Result<(), ModelError> {
        if let Some(old) = self.params.get(key)
            && old.shape() != value.shape()
        {
            return Err(ModelError::Tensor {
                name: key.to_owned(),
                reason: format!("new value has shape {:?}, the parameter has {:?}", value.shape(), old.shape()),
            });
        }
        let leaf = self.make_leaf(value.t.without_autodiff());
        self.params.insert(key.to_owned(), BurnValue::new(leaf, value.rank));
        // Effective weights derived from the old value are stale.
        self.effective.clear();
        Ok(())
    }

    fn make_leaf(&self, t: Tensor<MAX_RANK>) -> Tensor<MAX_RANK> {
        if self.trainable { t.autodiff().require_grad() } else { t }
    }

    /// The leaf for `key`, created from the store on first use; its shape must be `shape`.
    fn leaf(&mut self, key: &str, shape: &[usize]) -> Result<BurnValue, ModelError> {
        self.leaf_view(key, shape, shape)
    }

    /// The leaf of `key`, stored as `stored`, held (and differentiated) with shape `view`.
    fn leaf_view(&mut self, key: &str, stored: &[usize], shape: &[usize]) -> Result<BurnValue, ModelError> {
        let mismatch = |have: &[usize]| ModelError::Tensor {
            name: key.to_owned(),
            reason: format!("has shape {have:?}, the architecture declares {stored:?}"),
        };
        if let Some(p) = self.params.get(key) {
            return if p.shape() == shape { Ok(p.clone()) } else { Err(mismatch(&p.shape())) };
        }
        if let Some(p) = self.resident.iter().find_map(|r| r.get(key)) {
            if p.shape() != shape {
                return Err(mismatch(&p.shape()));
            }
            let value = BurnValue::new(self.make_leaf(p.t.clone()), p.rank);
            self.params.insert(key.to_owned(), value.clone());
            return Ok(value);
        }
        let host = match (self.store.get(key), self.extra) {
            (Some(host), _) => host,
            (None, Some(extra)) => extra.require(key)?,
            (None, None) => self.store.require(key)?,
        };
        if host.shape() != stored || host.len() != shape.iter().product::<usize>() {
            return Err(mismatch(host.shape()));
        }
        let (dims, rank) =
            pad4(shape).ok_or_else(|| ModelError::Tensor { name: key.to_owned(), reason: "rank above 4".into() })?;
        let t = Tensor::from_data(TensorData::new(host.data().to_vec(), dims), &self.device);
        let value = BurnValue::new(self.make_leaf(t), rank);
        self.params.insert(key.to_owned(), value.clone());
        Ok(value)
    }

    /// The stored power-iteration vectors of SN module `prefix` as `u: [1, rows]`, `v: [cols, 1]` constants,
    /// validated (lengths, usable σ) against the stored weight the first time.
    fn sn_vectors(&mut self, prefix: &str, dim: SnDim, shape: &[usize]) -> Result<(BurnValue, BurnValue), ModelError> {
        if let Some(uv) = self.sn_uv.get(prefix) {
            return Ok(uv.clone());
        }
        let err = |reason: String| ModelError::Tensor { name: prefix.to_owned(), reason };
        let orig = self.store.require(&format!("{prefix}.{SN_ORIG}"))?;
        let u = self.store.require(&format!("{prefix}.{SN_U}"))?;
        let v = self.store.require(&format!("{prefix}.{SN_V}"))?;
        spectral_sigma(orig, u.data(), v.data(), dim).map_err(err)?;
        let (rows, cols) = dim.uv_lengths(shape);
        let u = HostTensor::new(vec![1, rows], u.data().to_vec()).map_err(|e| err(e.to_string()))?;
        let v = HostTensor::new(vec![cols, 1], v.data().to_vec()).map_err(|e| err(e.to_string()))?;
        let uv = (self.input(&u), self.input(&v));
        self.sn_uv.insert(prefix.to_owned(), uv.clone());
        Ok(uv)
    }
}

/// A device copy of a host tensor (no autodiff on a plain device), as `BurnExec` holds values.
pub fn device_copy(host: &HostTensor, device: &Device) -> Result<BurnValue, ModelError> {
    let (dims, rank) = pad4(host.shape())
        .ok_or_else(|| ModelError::Tensor { name: "device copy".into(), reason: "rank above 4".into() })?;
    Ok(BurnValue::new(Tensor::from_data(TensorData::new(host.data().to_vec(), dims), device), rank))
}

/// Host copy of a burn value with its logical shape (a readback: on a GPU it waits for the queue).
pub fn host_copy(v: &BurnValue) -> HostTensor {
    // Readback of a CPU f32 tensor cannot fail short of a broken backend, so there is no error to pass on.
    let data = v.t.clone().try_into_vec_as::<f32>().unwrap_or_else(|e| panic!("burn readback failed: {e:?}"));
    HostTensor::new(v.shape(), data).unwrap_or_else(|e| panic!("burn tensor with inconsistent shape: {e}"))
}

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

#[cfg(test)]
mod tests {
    use super::*;
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
                    acc +=
                        x[((ni * c + ci) * h + iy as usize) * wd + ix as usize] * w[((oi * c + ci) * k + ky) * k + kx];
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
            out[((ni * c + ci) * oh + y) * ow + xo] = (1.0 - ly) * ((1.0 - lx) * at(y0, x0) + lx * at(y0, x1))
                + ly * ((1.0 - lx) * at(y1, x0) + lx * at(y1, x1));
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
        let (x, w, b) =
            (rand(&mut rng, &xs, -1.0, 1.0), rand(&mut rng, &ws, -1.0, 1.0), rand(&mut rng, &[4], -1.0, 1.0));
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
        let want: Vec<f64> = (0..6)
            .map(|i| bsd[i % 3] + (0..5).map(|k| xd[(i / 3) * 5 + k] * wd[(i % 3) * 5 + k]).sum::<f64>())
            .collect();
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
        let (xv, wv, bv) =
            (exec.param("x", &xs).unwrap(), exec.param("w", &ws).unwrap(), exec.param("b", &[3]).unwrap());
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
                    check_grad("d/dweight_orig", &g["m.weight_orig"], &od, |p| {
                        dot(&ref_sn(p, shape, dim, &ud, &vd), &r)
                    });
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
    fn software_vulkan_adapters_are_refused_with_the_alternative() {
        let err = usable_vulkan_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", true).unwrap_err();
        assert!(err.contains("llvmpipe") && err.contains("--device cpu"), "{err}");
        assert!(usable_vulkan_adapter("NVIDIA H200", false).is_ok());
    }

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

    #[test]
    fn device_specs() {
        assert!(exec_device(crate::runtime::Device::Cpu).is_ok());
        assert!(exec_device(crate::runtime::Device::Auto).is_ok());
        if crate::runtime::probe_cuda(0).is_err() || !cfg!(feature = "cuda") {
            let msg = exec_device(crate::runtime::Device::Cuda(0)).unwrap_err().to_string();
            assert!(msg.contains("CUDA") && msg.contains("cuda:0"), "{msg}");
        }
        if !cfg!(feature = "vulkan") {
            let msg = exec_device(crate::runtime::Device::Vulkan).unwrap_err().to_string();
            assert!(msg.contains("--features vulkan"), "{msg}");
        }
    }
}
