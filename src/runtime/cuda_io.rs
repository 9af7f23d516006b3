//! CUDA device buffers bound to an ONNX Runtime session (IoBinding), so a CUDA session never stages its tensors
//! through ONNX Runtime's own per-run host copies.
//!
//! Owns one device buffer per graph input and output, allocated once with `cudarc` in the primary context of the
//! session's GPU (the context ONNX Runtime's CUDA provider runs in, so the pointers are valid for both), the
//! `IoBinding` that points the session at them, and reused host buffers for the outputs. Receives host tensors each
//! run (copied into the input buffers); emits the outputs copied back into those host buffers. Weights and every
//! intermediate stay on the GPU; per frame only the inputs and the outputs cross the bus, and nothing is allocated.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtrMut};
use ort::AsPointer;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::{TensorRefMut, ValueType};

use super::CudaError;
use crate::tensor::HostTensor;

/// One graph input or output and the device buffer that holds it.
struct DeviceTensor {
    name: String,
    shape: Vec<usize>,
    buffer: CudaSlice<f32>,
}

/// A session's inputs and outputs living in CUDA memory.
pub struct CudaIo {
    // Declared first so it is dropped first: the binding holds ONNX Runtime values that point into the buffers.
    binding: IoBinding,
    inputs: Vec<DeviceTensor>,
    outputs: Vec<DeviceTensor>,
    host_outputs: Vec<HostTensor>,
    stream: Arc<CudaStream>,
}

fn driver(context: &str, e: impl std::fmt::Display) -> CudaError {
    CudaError::call(context, e)
}

/// Static float shape of a graph input or output; dynamic dimensions are taken from `given` when known.
fn static_shape(name: &str, dtype: &ValueType, given: Option<&[usize]>) -> Result<Vec<usize>, CudaError> {
    if let Some(shape) = given {
        return Ok(shape.to_vec());
    }
    let ValueType::Tensor { shape, .. } = dtype else {
        return Err(driver(&format!("`{name}`"), "not a tensor"));
    };
    shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| driver(&format!("`{name}`"), format!("dynamic dimension ({shape})"))))
        .collect()
}

impl CudaIo {
    /// Allocates and binds every input (shapes from `inputs`) and output (shapes from the graph) of `session` on
    /// CUDA GPU `ordinal`.
    pub fn new(session: &Session, ordinal: usize, inputs: &[(&str, &HostTensor)]) -> Result<Self, CudaError> {
        let context = CudaContext::new(ordinal).map_err(|e| driver("CUDA context", e))?;
        let stream = context.default_stream();
        let memory = MemoryInfo::new(
            AllocationDevice::CUDA,
            i32::try_from(ordinal).map_err(|e| driver("device ordinal", e))?,
            AllocatorType::Device,
            MemoryType::Default,
        )
        .map_err(|e| driver("memory info", e))?;
        let mut binding = session.create_binding().map_err(|e| driver("IoBinding", e))?;
        let allocate = |name: &str, shape: Vec<usize>| -> Result<DeviceTensor, CudaError> {
            let len = shape.iter().product::<usize>().max(1);
            let buffer = stream.alloc_zeros::<f32>(len).map_err(|e| driver(&format!("allocating `{name}`"), e))?;
            Ok(DeviceTensor { name: name.to_owned(), shape, buffer })
        };
        let mut device_inputs = Vec::new();
        for outlet in session.inputs() {
            let given = inputs.iter().find(|(n, _)| *n == outlet.name()).map(|(_, t)| t.shape());
            device_inputs.push(allocate(outlet.name(), static_shape(outlet.name(), outlet.dtype(), given)?)?);
        }
        let mut device_outputs = Vec::new();
        for outlet in session.outputs() {
            device_outputs.push(allocate(outlet.name(), static_shape(outlet.name(), outlet.dtype(), None)?)?);
        }
        for t in &mut device_inputs {
            let value = device_value(&memory, &stream, &t.name, &mut t.buffer, &t.shape)?;
            bind_input_in_place(&mut binding, &t.name, &value)?;
        }
        for t in &mut device_outputs {
            let value = device_value(&memory, &stream, &t.name, &mut t.buffer, &t.shape)?;
            binding.bind_output(&t.name, value).map_err(|e| driver(&format!("binding output `{}`", t.name), e))?;
        }
        let host_outputs = device_outputs.iter().map(|t| HostTensor::zeros(&t.shape)).collect::<Vec<_>>();
        Ok(Self { binding, inputs: device_inputs, outputs: device_outputs, host_outputs, stream })
    }

    /// Copies `inputs` to the GPU, runs `session` on the bound buffers and copies every output back.
    pub fn run(
        &mut self,
        session: &mut Session,
        inputs: &[(&str, &HostTensor)],
    ) -> Result<BTreeMap<String, HostTensor>, CudaError> {
        for (name, t) in inputs {
            let Some(slot) = self.inputs.iter_mut().find(|s| s.name == *name) else {
                continue;
            };
            if t.shape() != slot.shape.as_slice() {
                return Err(driver(
                    &format!("input `{name}`"),
                    format!("shape {:?}, the binding {:?}", t.shape(), slot.shape),
                ));
            }
            self.stream.memcpy_htod(t.data(), &mut slot.buffer).map_err(|e| driver(&format!("upload `{name}`"), e))?;
        }
        // ONNX Runtime runs on its own stream: the uploads must have landed before it starts. It synchronises its
        // stream before `run_binding` returns, so the outputs are complete afterwards.
        self.stream.synchronize().map_err(|e| driver("upload", e))?;
        session.run_binding(&self.binding).map_err(|e| driver("run failed", e))?;
        for (slot, host) in self.outputs.iter().zip(&mut self.host_outputs) {
            self.stream
                .memcpy_dtoh(&slot.buffer, host.data_mut())
                .map_err(|e| driver(&format!("download `{}`", slot.name), e))?;
        }
        self.stream.synchronize().map_err(|e| driver("download", e))?;
        Ok(self.outputs.iter().zip(&self.host_outputs).map(|(s, h)| (s.name.clone(), h.clone())).collect())
    }
}

/// Binds `value` as input `name` without a copy. `IoBinding::bind_input` clones values that borrow their memory,
/// and ONNX Runtime cannot clone into CUDA memory; here the borrowing is the point. The binding keeps its own
/// reference to the value, whose memory (a `CudaIo` buffer) outlives the binding.
fn bind_input_in_place(binding: &mut IoBinding, name: &str, value: &TensorRefMut<'_, f32>) -> Result<(), CudaError> {
    let api = ort::api();
    let c_name = std::ffi::CString::new(name).map_err(|e| driver("input name", e))?;
    // SAFETY: the binding and the value are live ONNX Runtime objects; the name is NUL-terminated and outlives the
    // call, which copies what it keeps.
    let status = unsafe { (api.BindInput)(binding.ptr_mut(), c_name.as_ptr(), value.ptr()) };
    super::ort_api::status_result(status).map_err(|msg| driver(&format!("binding input `{name}`"), msg))
}

/// An ONNX Runtime tensor viewing `t`'s device buffer.
fn device_value<'a>(
    memory: &MemoryInfo,
    stream: &Arc<CudaStream>,
    name: &str,
    buffer: &'a mut CudaSlice<f32>,
    shape: &[usize],
) -> Result<TensorRefMut<'a, f32>, CudaError> {
    let (ptr, _synced) = buffer.device_ptr_mut(stream);
    // SAFETY: the pointer addresses `shape`'s element count of f32 in this GPU's memory, described by `memory`;
    // the buffer lives in the same `CudaIo` as the binding holding the value and is dropped after it.
    unsafe { TensorRefMut::from_raw(memory.clone(), ptr as *mut std::ffi::c_void, shape.into()) }
        .map_err(|e| driver(&format!("device tensor `{name}`"), e))
}
