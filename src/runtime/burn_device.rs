//! The devices burn runs on: `cpu` (burn-flex), CUDA (cubecl, with `--features cuda`) and Vulkan (wgpu, with
//! `--features vulkan`), with the same `Device` names the ONNX executor takes.
//!
//! Owns the mapping from a requested `Device` to a burn device, the driver probes that keep cubecl from panicking,
//! and the refusal of software Vulkan adapters. Receives a `Device`; emits burn's device and the one settled on.

use burn::tensor::Device;

use super::{BurnDeviceError, RuntimeError};

const EXECUTOR: &str = "burn";

/// Resolves an executor device spec: `cuda[:N]` needs the `cuda` build feature and a working driver; `auto` takes
/// GPU 0 when both are there and says in one line why not otherwise.
pub fn exec_device(device: super::Device) -> Result<Device, RuntimeError> {
    resolve_device(device).map(|(d, _)| d)
}

/// `exec_device` and the device it settled on (`auto` resolved).
pub fn resolve_device(device: super::Device) -> Result<(Device, super::Device), RuntimeError> {
    use super::Device as Requested;
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
        Requested::Cuda(n) => cuda_device(n).map(|gpu| (gpu, device)).map_err(|reason| RuntimeError::Device {
            executor: EXECUTOR,
            device,
            reason,
        }),
        Requested::Vulkan => vulkan_device().map(|gpu| (gpu, device)).map_err(|reason| RuntimeError::Device {
            executor: EXECUTOR,
            device,
            reason,
        }),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan_device() -> Result<Device, BurnDeviceError> {
    // cubecl panics when no adapter comes up: ask wgpu first, on Vulkan only, as cubecl will.
    use eframe::wgpu;
    let mut descriptor = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    descriptor.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(descriptor);
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .map_err(|e| BurnDeviceError::NoVulkanAdapter(e.to_string()))?;
    let info = adapter.get_info();
    usable_vulkan_adapter(&info.name, info.device_type == wgpu::DeviceType::Cpu)?;
    tracing::info!("burn executor on Vulkan: {} ({:?})", info.name, info.device_type);
    Ok(Device::vulkan(burn::tensor::DeviceKind::DefaultDevice))
}

/// Whether burn may train on this Vulkan adapter. A software rasterizer (Mesa's llvmpipe/lavapipe, what a machine
/// without a GPU reports) crashes compiling cubecl's compute kernels, and would be slower than `--device cpu` anyway.
#[cfg_attr(not(feature = "vulkan"), allow(dead_code))]
fn usable_vulkan_adapter(name: &str, software: bool) -> Result<(), BurnDeviceError> {
    if software {
        return Err(BurnDeviceError::SoftwareAdapter { name: name.to_owned() });
    }
    Ok(())
}

#[cfg(not(feature = "vulkan"))]
fn vulkan_device() -> Result<Device, BurnDeviceError> {
    Err(BurnDeviceError::NoVulkanBackend)
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device, BurnDeviceError> {
    // cubecl's CUDA runtime loads the driver through cudarc, which panics without one: probe first.
    crate::runtime::probe_cuda(ordinal)?;
    Ok(Device::cuda(ordinal))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> Result<Device, BurnDeviceError> {
    Err(BurnDeviceError::NoCudaBackend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_vulkan_adapters_are_refused_with_the_alternative() {
        let err = usable_vulkan_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", true).unwrap_err().to_string();
        assert!(err.contains("llvmpipe") && err.contains("--device cpu"), "{err}");
        assert!(usable_vulkan_adapter("NVIDIA H200", false).is_ok());
    }

    #[test]
    fn device_specs() {
        assert!(exec_device(super::super::Device::Cpu).is_ok());
        assert!(exec_device(super::super::Device::Auto).is_ok());
        if super::super::probe_cuda(0).is_err() || !cfg!(feature = "cuda") {
            let msg = exec_device(super::super::Device::Cuda(0)).unwrap_err().to_string();
            assert!(msg.contains("CUDA") && msg.contains("cuda:0"), "{msg}");
        }
        if !cfg!(feature = "vulkan") {
            let msg = exec_device(super::super::Device::Vulkan).unwrap_err().to_string();
            assert!(msg.contains("--features vulkan"), "{msg}");
        }
    }
}
