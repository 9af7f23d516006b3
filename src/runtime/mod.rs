//! Inference runtimes and the devices they run on.
//!
//! Owns the `Device` choice shared by the CLI and the executors (parsed from `cpu`, `cuda`, `cuda:N`, `auto`), a
//! panic-free probe of the CUDA driver, and ONNX Runtime (`ort`): locating its shared library (and, for its CUDA
//! provider, the CUDA libraries beside it: `cuda_libs`), the process-wide environment, and sessions that run
//! serialised ONNX models on `HostTensor`s, each knowing where and at what precision it really runs (`placement`).

pub mod burn_device;
pub mod cuda_io;
pub mod cuda_libs;
mod error;
pub mod host_io;
pub mod ort;
mod ort_api;
pub mod placement;

pub use error::{BurnDeviceError, CudaError, RuntimeError};
pub use placement::{Placement, Precision};

use std::fmt;
use std::str::FromStr;

/// Where to run inference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The host CPU (always available).
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal.
    Cuda(usize),
    /// The default Vulkan adapter (burn's wgpu backend, SPIR-V kernels; builds with `--features vulkan`). ONNX
    /// Runtime has no Vulkan provider and runs such requests on the CPU.
    Vulkan,
    /// CUDA GPU 0 when usable, the CPU otherwise.
    Auto,
}

/// A device name that is not `cpu`, `cuda`, `cuda:N`, `vulkan` or `auto`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown device `{0}` (expected `cpu`, `cuda`, `cuda:N`, `vulkan` or `auto`)")]
pub struct DeviceParseError(pub String);

impl FromStr for Device {
    type Err = DeviceParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "auto" => Ok(Self::Auto),
            "vulkan" => Ok(Self::Vulkan),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| DeviceParseError(s.to_owned())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Auto => f.write_str("auto"),
            Self::Vulkan => f.write_str("vulkan"),
        }
    }
}

/// Checks that CUDA GPU `ordinal` exists, without panicking: cudarc's dynamic loader panics when the driver library
/// is absent, so its presence is checked first and the remaining calls run under `catch_unwind`.
pub fn probe_cuda(ordinal: usize) -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen the driver library by its usual names and drops the handle.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    let count = std::panic::catch_unwind(cudarc::driver::CudaContext::device_count)
        .map_err(|_| CudaError::DriverUnusable)?
        .map_err(|e| CudaError::Init(e.to_string()))?;
    if ordinal >= count.max(0) as usize {
        return Err(CudaError::NoSuchDevice { ordinal, count });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        for (text, device) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("CUDA:3", Device::Cuda(3)),
            ("auto", Device::Auto),
            ("vulkan", Device::Vulkan),
        ] {
            assert_eq!(text.parse::<Device>(), Ok(device));
        }
        assert_eq!(Device::Cuda(2).to_string().parse::<Device>(), Ok(Device::Cuda(2)));
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1"] {
            let msg = bad.parse::<Device>().unwrap_err().to_string();
            assert!(msg.contains("cuda:N"), "{msg}");
        }
    }

    #[test]
    fn cuda_probe_never_panics() {
        // Whatever this machine has, the probe answers instead of unwinding.
        let _ = probe_cuda(0);
        assert!(probe_cuda(usize::MAX).is_err());
    }
}
