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

use burn::tensor::{Device, Tensor, TensorData};

use crate::model::ModelError;
use crate::model::reparam::{SN_ORIG, SN_U, SN_V, SnDim, spectral_sigma};
use crate::model::weights::WeightStore;
use crate::tensor::HostTensor;

const EXECUTOR: &str = "burn";
/// Every value is stored as a rank-4 burn tensor; `Ops` ranks go up to this.
const MAX_RANK: usize = 4;

/// A tensor handle: a 4-D burn tensor whose last `rank` dims are the logical shape (leading dims are 1).
/// Right-aligned padding makes burn's size-1 broadcasting coincide with NumPy's for mixed ranks.
#[derive(Clone, Debug)]
pub struct BurnValue {
    /// The padded 4-D tensor; its leading `4 - rank` dims are 1.
    pub t: Tensor<MAX_RANK>,
    /// The logical rank, 1..=4.
    pub rank: usize,
}

impl BurnValue {
    /// Wraps a padded 4-D tensor whose last `rank` dims are the logical shape (`rank` in 1..=4).
    pub fn new(t: Tensor<MAX_RANK>, rank: usize) -> Self {
        debug_assert!((1..=MAX_RANK).contains(&rank), "rank {rank} outside 1..=4");
        Self { t, rank }
    }

    /// The logical shape (the last `rank` dims).
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

    /// The intermediates recorded since the last call, by tap name, leaving none behind (empty when taps are off).
    pub fn take_taps(&mut self) -> BTreeMap<String, HostTensor> {
        self.taps.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The burn device every value and parameter leaf lives on.
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
        spectral_sigma(orig, u.data(), v.data(), dim).map_err(|e| err(e.to_string()))?;
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

mod ops_impl;

#[cfg(test)]
mod tests;
