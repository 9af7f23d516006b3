//! CUDA device buffers bound to an ONNX Runtime session (IoBinding), so a CUDA session never stages its tensors
//! through ONNX Runtime's own per-run host copies.
//!
//! Owns one device buffer per graph input and output, allocated once with `cudarc` in the primary context of the
//! session's GPU (the context ONNX Runtime's CUDA provider runs in, so the pointers are valid for both), the
//! `IoBinding` that points the session at them, and reused host buffers for the outputs. Receives host tensors each
//! run (copied into the input buffers); emits the outputs copied back into those host buffers. Weights and every
//! intermediate stay on the GPU; per frame only the inputs and the outputs cross the bus, and nothing is allocated.
//!
//! Staged mode (`new_staged`): the caller writes inputs in place into host staging buffers and only inputs written
//! since the last run are uploaded — an identity's constant inputs cross the bus once per identity, the pose's every
//! frame; only the outputs asked for are downloaded; an input can be filled device-to-device from another session's
//! output (`fill_input_from`), so a frame handed from one network to the next never visits the host.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtrMut};
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::TensorRefMut;

use super::CudaError;
use super::ort_api::{bind_input_in_place, static_shape};
use crate::tensor::HostTensor;

/// One graph input or output and the device buffer that holds it.
struct DeviceTensor {
    name: String,
    shape: Vec<usize>,
    buffer: CudaSlice<f32>,
}

/// A frame in GPU memory handed from one session's thread to another's (the generator's prediction to the TSR), so
/// it never visits the host. Allocated once by `CudaIo::output_into_frame` and reused.
pub struct DeviceFrame {
    /// The frame's values, row-major in `shape`.
    pub buffer: CudaSlice<f32>,
    /// The tensor shape (`[1, 3, side, side]` for a prediction).
    pub shape: Vec<usize>,
}

/// A session's inputs and outputs living in CUDA memory.
pub struct CudaIo {
    // Declared first so it is dropped first: the binding holds ONNX Runtime values that point into the buffers.
    binding: IoBinding,
    inputs: Vec<DeviceTensor>,
    outputs: Vec<DeviceTensor>,
    host_outputs: Vec<HostTensor>,
    stream: Arc<CudaStream>,
    /// Staged mode: host copies of the inputs (empty otherwise), which of them changed since the last upload, and
    /// which outputs to download.
    staging: Vec<HostTensor>,
    dirty: Vec<bool>,
    download: Vec<bool>,
}

fn driver(context: &str, e: impl std::fmt::Display) -> CudaError {
    CudaError::call(context, e)
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
            device_inputs.push(allocate(
                outlet.name(),
                static_shape(outlet.name(), outlet.dtype(), given).map_err(|e| driver("shape", e))?,
            )?);
        }
        let mut device_outputs = Vec::new();
        for outlet in session.outputs() {
            device_outputs.push(allocate(
                outlet.name(),
                static_shape(outlet.name(), outlet.dtype(), None).map_err(|e| driver("shape", e))?,
            )?);
        }
        for t in &mut device_inputs {
            let value = device_value(&memory, &stream, &t.name, &mut t.buffer, &t.shape)?;
            bind_input_in_place(&mut binding, &t.name, &value).map_err(|e| driver("binding", e))?;
        }
        for t in &mut device_outputs {
            let value = device_value(&memory, &stream, &t.name, &mut t.buffer, &t.shape)?;
            binding.bind_output(&t.name, value).map_err(|e| driver(&format!("binding output `{}`", t.name), e))?;
        }
        let host_outputs = device_outputs.iter().map(|t| HostTensor::zeros(&t.shape)).collect::<Vec<_>>();
        let download = vec![true; device_outputs.len()];
        Ok(Self {
            binding,
            inputs: device_inputs,
            outputs: device_outputs,
            host_outputs,
            stream,
            staging: Vec::new(),
            dirty: Vec::new(),
            download,
        })
    }

    /// Staged mode (see the module doc): buffers for every input and output at the graph's static shapes.
    pub fn new_staged(session: &Session, ordinal: usize) -> Result<Self, CudaError> {
        let mut io = Self::new(session, ordinal, &[])?;
        io.staging = io.inputs.iter().map(|t| HostTensor::zeros(&t.shape)).collect();
        io.dirty = vec![true; io.inputs.len()];
        Ok(io)
    }

    /// The host copy of input `name`, to be written in place; it is uploaded before the next `run_staged`.
    pub fn staged_input(&mut self, name: &str) -> Option<&mut [f32]> {
        let i = self.inputs.iter().position(|t| t.name == name)?;
        let t = self.staging.get_mut(i)?;
        self.dirty[i] = true;
        Some(t.data_mut())
    }

    /// Downloads only these outputs after each staged run (the others stay on the GPU); unknown names are ignored.
    pub fn download_only(&mut self, names: &[&str]) {
        for (flag, t) in self.download.iter_mut().zip(&self.outputs) {
            *flag = names.contains(&t.name.as_str());
        }
    }

    /// Copies `len` values of `other`'s output `output` (from `src_offset`) into this session's input `input` (at
    /// `dst_offset`) on the GPU, in stream order with both sessions' runs; the input is then not re-uploaded from its
    /// host copy. Both sessions must be on the same GPU.
    pub fn fill_input_from(
        &mut self,
        input: &str,
        dst_offset: usize,
        other: &CudaIo,
        output: &str,
        src_offset: usize,
        len: usize,
    ) -> Result<(), CudaError> {
        let src = other.outputs.iter().find(|t| t.name == output).ok_or_else(|| driver(output, "no such output"))?;
        let i = self.inputs.iter().position(|t| t.name == input).ok_or_else(|| driver(input, "no such input"))?;
        let dst = &mut self.inputs[i];
        if src_offset + len > src.buffer.len() || dst_offset + len > dst.buffer.len() {
            return Err(driver(
                &format!("copying {len} values from `{output}`+{src_offset} to `{input}`+{dst_offset}"),
                "out of range",
            ));
        }
        let from = src.buffer.slice(src_offset..src_offset + len);
        let mut to = dst.buffer.slice_mut(dst_offset..dst_offset + len);
        self.stream.memcpy_dtod(&from, &mut to).map_err(|e| driver(&format!("device copy into `{input}`"), e))?;
        if let Some(flag) = self.dirty.get_mut(i) {
            *flag = false;
        }
        Ok(())
    }

    /// Uploads the inputs written since the last run, runs `session` on the bound buffers (no allocation) and
    /// downloads the outputs chosen by `download_only` into the host buffers `output` reads.
    pub fn run_staged(&mut self, session: &Session) -> Result<(), CudaError> {
        for ((slot, host), dirty) in self.inputs.iter_mut().zip(&self.staging).zip(&mut self.dirty) {
            if std::mem::take(dirty) {
                let name = &slot.name;
                self.stream
                    .memcpy_htod(host.data(), &mut slot.buffer)
                    .map_err(|e| driver(&format!("upload `{name}`"), e))?;
            }
        }
        self.stream.synchronize().map_err(|e| driver("upload", e))?;
        super::ort_api::run_with_binding(session, &self.binding).map_err(|e| driver("staged run", e))?;
        for ((slot, host), wanted) in self.outputs.iter().zip(&mut self.host_outputs).zip(&self.download) {
            if *wanted {
                self.stream
                    .memcpy_dtoh(&slot.buffer, host.data_mut())
                    .map_err(|e| driver(&format!("download `{}`", slot.name), e))?;
            }
        }
        self.stream.synchronize().map_err(|e| driver("download", e))
    }

    /// Copies output `name` of the last run into `frame` on the GPU (allocating it on first use), and waits for the
    /// copy, so the frame can go to another thread while this session runs its next frame.
    pub fn output_into_frame(&self, name: &str, frame: &mut Option<DeviceFrame>) -> Result<(), CudaError> {
        let src = self.outputs.iter().find(|t| t.name == name).ok_or_else(|| driver(name, "no such output"))?;
        if frame.as_ref().is_none_or(|f| f.shape != src.shape) {
            let buffer = self.stream.alloc_zeros::<f32>(src.buffer.len()).map_err(|e| driver("hand-off frame", e))?;
            *frame = Some(DeviceFrame { buffer, shape: src.shape.clone() });
        }
        let dst = frame.as_mut().ok_or_else(|| driver("hand-off frame", "missing"))?;
        self.stream.memcpy_dtod(&src.buffer, &mut dst.buffer).map_err(|e| driver(&format!("copying `{name}`"), e))?;
        self.stream.synchronize().map_err(|e| driver("hand-off", e))
    }

    /// Copies `frame` into input `input` at `dst_offset` on the GPU (the input is then not re-uploaded from its host
    /// copy before the next staged run: fill an input either from the host or from the GPU within one run, since an
    /// upload replaces the whole buffer).
    pub fn fill_input_from_frame(
        &mut self,
        input: &str,
        dst_offset: usize,
        frame: &DeviceFrame,
    ) -> Result<(), CudaError> {
        let i = self.inputs.iter().position(|t| t.name == input).ok_or_else(|| driver(input, "no such input"))?;
        let len = frame.buffer.len();
        let dst = &mut self.inputs[i];
        if dst_offset + len > dst.buffer.len() {
            return Err(driver(&format!("a {len}-value frame at {dst_offset} into `{input}`"), "does not fit"));
        }
        let mut to = dst.buffer.slice_mut(dst_offset..dst_offset + len);
        self.stream
            .memcpy_dtod(&frame.buffer, &mut to)
            .map_err(|e| driver(&format!("device copy into `{input}`"), e))?;
        if let Some(flag) = self.dirty.get_mut(i) {
            *flag = false;
        }
        Ok(())
    }

    /// Output `name` as last downloaded.
    pub fn output(&self, name: &str) -> Option<&HostTensor> {
        self.outputs.iter().position(|t| t.name == name).and_then(|i| self.host_outputs.get(i))
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
