//! ONNX Runtime's C API where the `ort` crate has no typed call: status results, the CUDA execution provider
//! (whose typed form exists only with `ort`'s `cuda` feature), binding an input in place, and running on a binding
//! without collecting its outputs.
//!
//! Owns the raw calls and their safety reasoning. Receives session builders and bindings from `runtime::ort`,
//! `runtime::host_io` and `runtime::cuda_io`; emits plain results.

use std::ffi::{CStr, CString};

use ort::AsPointer;
use ort::session::builder::SessionBuilder;

use ort::session::{IoBinding, Session};
use ort::value::{TensorRefMut, ValueType};

use super::{CudaError, RuntimeError};

fn failed(context: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::ort(context, e)
}

/// CUDA provider option selecting the GPU.
const CUDA_DEVICE_ID: &str = "device_id";
/// CUDA provider option allowing TF32 tensor-core math in convolutions and matrix products.
const CUDA_USE_TF32: &str = "use_tf32";
/// `1` lets CUDA sessions use TF32 (faster on Ampere and later, ~1e-3 relative error, PyTorch's default for cuDNN
/// convolutions); anything else keeps full fp32, which the parity fixtures need.
pub const CUDA_TF32_ENV: &str = "METAPORTRAIT_CUDA_TF32";
/// CUDA provider option replaying the whole run as one captured CUDA graph (needs fixed device buffers: IoBinding).
const CUDA_ENABLE_GRAPH: &str = "enable_cuda_graph";
/// `1` captures each CUDA session's run as a CUDA graph on its first run and replays it after: one launch per frame
/// instead of one per node.
pub const CUDA_GRAPH_ENV: &str = "METAPORTRAIT_CUDA_GRAPH";

/// The message of a failed ONNX Runtime C API call.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct OrtStatus(pub(crate) String);

/// An `OrtStatus` from a raw C API call as a result, releasing it.
pub(crate) fn status_result(status: ort::sys::OrtStatusPtr) -> Result<(), OrtStatus> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status is a valid OrtStatus whose message lives until it is released.
    let msg = unsafe { CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned() };
    // SAFETY: released exactly once, after its message was copied.
    unsafe { (api.ReleaseStatus)(status.0) };
    Err(OrtStatus(msg))
}

/// Appends the CUDA execution provider through the C API, because `ort`'s typed `ep::CUDA` exists only with its `cuda`
/// Cargo feature. Fails when the loaded build has no CUDA provider (the CPU wheel) or the provider cannot load.
/// `precision` `Tf32` turns on TF32 math (as does `METAPORTRAIT_CUDA_TF32=1`).
pub(crate) fn append_cuda(
    builder: &mut SessionBuilder,
    ordinal: usize,
    precision: super::Precision,
) -> Result<(), CudaError> {
    let api = ort::api();
    let check =
        |status| status_result(status).map_err(|msg| CudaError::call("CUDA execution provider unavailable", msg));
    let mut options = std::ptr::null_mut();
    // SAFETY: `options` is an out-pointer; on success it owns an OrtCUDAProviderOptionsV2 released below.
    check(unsafe { (api.CreateCUDAProviderOptions)(&mut options) })?;
    let env_on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let flag = |name: &str| u8::from(env_on(name)).to_string();
    let tf32 = precision == super::Precision::Tf32 || env_on(CUDA_TF32_ENV);
    let pairs = [
        (CUDA_DEVICE_ID, ordinal.to_string()),
        (CUDA_USE_TF32, u8::from(tf32).to_string()),
        (CUDA_ENABLE_GRAPH, flag(CUDA_GRAPH_ENV)),
    ];
    let owned = pairs
        .iter()
        .map(|(k, v)| Ok((CString::new(*k)?, CString::new(v.as_str())?)))
        .collect::<Result<Vec<_>, std::ffi::NulError>>()
        .map_err(|e| CudaError::call("CUDA provider options", e))?;
    let keys: Vec<_> = owned.iter().map(|(k, _)| k.as_ptr()).collect();
    let values: Vec<_> = owned.iter().map(|(_, v)| v.as_ptr()).collect();
    // SAFETY: `options` is live; the key/value arrays hold `keys.len()` NUL-terminated strings each and outlive the
    // call; the session options pointer comes from a live builder.
    let result = check(unsafe { (api.UpdateCUDAProviderOptions)(options, keys.as_ptr(), values.as_ptr(), keys.len()) })
        .and_then(|()| {
            check(unsafe { (api.SessionOptionsAppendExecutionProvider_CUDA_V2)(builder.ptr_mut(), options) })
        });
    // SAFETY: created above, released once; the session options keep their own copy.
    unsafe { (api.ReleaseCUDAProviderOptions)(options) };
    result
}

/// Static float shape of a graph input or output; dynamic dimensions are taken from `given` when known.
pub(crate) fn static_shape(name: &str, dtype: &ValueType, given: Option<&[usize]>) -> Result<Vec<usize>, RuntimeError> {
    if let Some(shape) = given {
        return Ok(shape.to_vec());
    }
    let ValueType::Tensor { shape, .. } = dtype else {
        return Err(failed(&format!("`{name}`"), "not a tensor"));
    };
    shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| failed(&format!("`{name}`"), format!("dynamic dimension ({shape})"))))
        .collect()
}

/// Binds `value` as input `name` without a copy. `IoBinding::bind_input` clones values that borrow their memory,
/// and ONNX Runtime cannot clone into CUDA memory; here the borrowing is the point. The binding keeps its own
/// reference to the value, whose memory (a `CudaIo` buffer) outlives the binding.
pub(crate) fn bind_input_in_place(
    binding: &mut IoBinding,
    name: &str,
    value: &TensorRefMut<'_, f32>,
) -> Result<(), RuntimeError> {
    let api = ort::api();
    let c_name = std::ffi::CString::new(name).map_err(|e| failed("input name", e))?;
    // SAFETY: the binding and the value are live ONNX Runtime objects; the name is NUL-terminated and outlives the
    // call, which copies what it keeps.
    let status = unsafe { (api.BindInput)(binding.ptr_mut(), c_name.as_ptr(), value.ptr()) };
    status_result(status).map_err(|msg| failed(&format!("binding input `{name}`"), msg))
}

/// `RunWithBinding` through the C API: the outputs land in the bound buffers and nothing is collected.
pub(crate) fn run_with_binding(session: &Session, binding: &IoBinding) -> Result<(), RuntimeError> {
    let api = ort::api();
    // SAFETY: both are live ONNX Runtime objects owned by the caller for the duration of the call; the run options
    // may be null. ONNX Runtime only reads the session object through this pointer.
    let status = unsafe { (api.RunWithBinding)(session.ptr().cast_mut(), std::ptr::null(), binding.ptr()) };
    status_result(status).map_err(|msg| failed("run failed", msg))
}
