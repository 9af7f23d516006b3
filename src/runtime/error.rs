//! What can go wrong in the runtime layer: loading ONNX Runtime, running its sessions, and reaching a CUDA device.
//!
//! Owns `RuntimeError` (every fallible call of `runtime::ort` and `runtime::cuda_io`) and `CudaError` (why a GPU
//! cannot be used). Higher layers wrap them (`ModelError::Runtime`, `FaceError::Runtime`) instead of this layer
//! knowing theirs.

/// ONNX Runtime could not be loaded, or one of its calls failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The shared library could not be found or loaded; `reason` lists what was tried and the fix.
    #[error("executor `ort` failed: {reason}")]
    Library {
        /// What was tried and how to fix it.
        reason: String,
    },
    /// An ONNX Runtime call failed.
    #[error("executor `ort` failed: {context}: {message}")]
    Ort {
        /// What was being done (`run failed`, `input \`x\``, …).
        context: String,
        /// ONNX Runtime's own message.
        message: String,
    },
    /// A CUDA call failed.
    #[error("executor `ort` failed: {0}")]
    Cuda(#[from] CudaError),
    /// The device asked for cannot run this executor.
    #[error("executor `{executor}` failed: device `{device}`: {reason}")]
    Device {
        /// `burn` or `ort`.
        executor: &'static str,
        /// The device asked for.
        device: super::Device,
        /// Why it cannot be used, and what to use instead.
        reason: BurnDeviceError,
    },
}

impl RuntimeError {
    /// The library could not be found or loaded, for `reason`.
    pub fn library(reason: impl Into<String>) -> Self {
        Self::Library { reason: reason.into() }
    }

    /// An ONNX Runtime failure while doing `context`.
    pub fn ort(context: &str, message: impl std::fmt::Display) -> Self {
        Self::Ort { context: context.to_owned(), message: message.to_string() }
    }
}

/// Why a CUDA device cannot be used, or a CUDA call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    /// `libcuda.so` is not installed.
    #[error("no CUDA driver library (libcuda.so) could be loaded")]
    NoDriver,
    /// The driver library loaded but lacks symbols cudarc needs.
    #[error("the CUDA driver library is unusable (missing symbols)")]
    DriverUnusable,
    /// `cuInit` or the device count failed.
    #[error("the CUDA driver failed to initialise: {0}")]
    Init(String),
    /// The ordinal is past the devices present.
    #[error("CUDA device {ordinal} does not exist ({count} device(s) found)")]
    NoSuchDevice {
        /// The device asked for.
        ordinal: usize,
        /// How many the driver reports.
        count: i32,
    },
    /// ONNX Runtime cannot run on the GPU: every unmet condition (driver, the provider in the loaded build, the CUDA
    /// libraries beside it), each with its fix. Empty when CUDA was not asked for.
    #[error("{}", conditions.join("; "))]
    Unmet {
        /// What is missing, one sentence each.
        conditions: Vec<String>,
    },
    /// A driver or binding call failed.
    #[error("{context}: {message}")]
    Call {
        /// What was being done.
        context: String,
        /// The driver's message.
        message: String,
    },
}

impl CudaError {
    /// A failed call while doing `context`.
    pub fn call(context: &str, message: impl std::fmt::Display) -> Self {
        Self::Call { context: context.to_owned(), message: message.to_string() }
    }
}

/// Why burn cannot run on the device asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BurnDeviceError {
    /// Built without `--features vulkan`.
    #[error("this build has no Vulkan backend for burn (rebuild with `--features vulkan`)")]
    NoVulkanBackend,
    /// No Vulkan adapter came up.
    #[error("no Vulkan adapter: {0}")]
    NoVulkanAdapter(String),
    /// The only adapter is a software rasterizer.
    #[error(
        "the only Vulkan adapter is `{name}`, a software rasterizer on the CPU: use `--device cpu` (burn's CPU \
         backend is faster, and this adapter cannot run burn's kernels)"
    )]
    SoftwareAdapter {
        /// The adapter's name.
        name: String,
    },
    /// Built without `--features cuda`.
    #[error(
        "this build has no CUDA backend for burn (rebuild with `--features cuda`: cubecl's CUDA runtime, loaded at \
         run time, no CUDA toolkit needed to build); use `cpu`, or the ONNX executor for GPU inference"
    )]
    NoCudaBackend,
    /// The CUDA driver or device is missing.
    #[error(transparent)]
    Cuda(#[from] CudaError),
}
