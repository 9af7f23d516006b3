//! Host buffers bound once to a CPU ONNX Runtime session, so a frame runs without a single allocation of ours.
//!
//! Owns one host tensor per graph input and output, the `IoBinding` pointing the session at them (inputs bound
//! through the C API so ONNX Runtime reads them in place instead of cloning them), and the run through
//! `RunWithBinding` directly (the `ort` wrapper's `run_binding` collects the outputs into fresh vectors on every
//! call). Receives input values written in place by the caller (`input_mut`); emits the outputs in the bound buffers
//! (`output`). The CUDA counterpart with the same shape of API is `cuda_io::CudaIo`'s staged mode.

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::TensorRefMut;

use super::RuntimeError;
use super::ort_api::{bind_input_in_place, run_with_binding, static_shape};
use crate::tensor::HostTensor;

/// A CPU session's inputs and outputs in host memory bound to it.
pub struct HostIo {
    // Declared first so it is dropped first: the binding holds ONNX Runtime values that point into the buffers.
    binding: IoBinding,
    /// Boxed so the heap blocks the binding points into never move.
    inputs: Vec<(String, Box<HostTensor>)>,
    outputs: Vec<(String, Box<HostTensor>)>,
}

fn failed(context: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::ort(context, e)
}

/// An ONNX Runtime tensor viewing `t`'s host buffer.
fn host_value<'a>(
    memory: &MemoryInfo,
    name: &str,
    t: &'a mut HostTensor,
) -> Result<TensorRefMut<'a, f32>, RuntimeError> {
    let shape = t.shape().to_vec();
    let ptr = t.data_mut().as_mut_ptr();
    // SAFETY: the pointer addresses the tensor's element count of f32 in host memory; the tensor is boxed in the
    // same `HostIo` as the binding holding the value, never resized, and dropped after the binding.
    unsafe { TensorRefMut::from_raw(memory.clone(), ptr.cast(), shape.into()) }
        .map_err(|e| failed(&format!("host tensor `{name}`"), e))
}

impl HostIo {
    /// Allocates and binds every input and output of `session` (static shapes from the graph).
    pub fn new(session: &Session) -> Result<Self, RuntimeError> {
        let memory = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Device, MemoryType::Default)
            .map_err(|e| failed("memory info", e))?;
        let mut binding = session.create_binding().map_err(|e| failed("IoBinding", e))?;
        let mut inputs = Vec::new();
        for outlet in session.inputs() {
            let shape = static_shape(outlet.name(), outlet.dtype(), None)?;
            inputs.push((outlet.name().to_owned(), Box::new(HostTensor::zeros(&shape))));
        }
        let mut outputs = Vec::new();
        for outlet in session.outputs() {
            let shape = static_shape(outlet.name(), outlet.dtype(), None)?;
            outputs.push((outlet.name().to_owned(), Box::new(HostTensor::zeros(&shape))));
        }
        for (name, t) in &mut inputs {
            let value = host_value(&memory, name, t)?;
            bind_input_in_place(&mut binding, name, &value)?;
        }
        for (name, t) in &mut outputs {
            let value = host_value(&memory, name, t)?;
            binding.bind_output(name.as_str(), value).map_err(|e| failed(&format!("binding output `{name}`"), e))?;
        }
        Ok(Self { binding, inputs, outputs })
    }

    /// The bound buffer of input `name`, to be written in place before `run`.
    pub fn input_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        self.inputs.iter_mut().find(|(n, _)| n == name).map(|(_, t)| t.data_mut())
    }

    /// Runs `session` on the bound buffers; the outputs are in place when it returns.
    pub fn run(&mut self, session: &Session) -> Result<(), RuntimeError> {
        run_with_binding(session, &self.binding)
    }

    /// Output `name` of the last run.
    pub fn output(&self, name: &str) -> Option<&HostTensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t.as_ref())
    }
}
