//! wgpu building blocks shared by the GPU preview engine (`model::preview::gpu`) and the output view
//! (`render::video`): both draw one sampled RGBA8 texture with a linear clamp-to-edge sampler and one uniform buffer.
//!
//! Owns nothing; receives a device and the few things that differ (labels, texture size and usage, which shader
//! stage reads the uniform); emits the wgpu objects, so the binding layout (0 texture, 1 sampler, 2 uniform) that the
//! shaders `mesh_warp.wgsl` and `video_quad.wgsl` declare is written down once.

use eframe::wgpu;

/// Binding slots of the texture/sampler/uniform group, as the shaders declare them.
const TEXTURE_BINDING: u32 = 0;
const SAMPLER_BINDING: u32 = 1;
const UNIFORM_BINDING: u32 = 2;

/// The bind-group layout: a filterable 2-D float texture and a filtering sampler for the fragment stage, and a
/// uniform buffer for `uniform_stages` (`uniform_min_size`: the size the shader expects, checked by wgpu when given).
pub fn textured_layout(
    device: &wgpu::Device,
    label: &str,
    uniform_stages: wgpu::ShaderStages,
    uniform_min_size: Option<wgpu::BufferSize>,
) -> wgpu::BindGroupLayout {
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: TEXTURE_BINDING,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Texture {
                    multisampled: false,
                    sample_type: wgpu::TextureSampleType::Float { filterable: true },
                    view_dimension: wgpu::TextureViewDimension::D2,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: SAMPLER_BINDING,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: UNIFORM_BINDING,
                visibility: uniform_stages,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: uniform_min_size,
                },
                count: None,
            },
        ],
    })
}

/// A bind group of `textured_layout`.
pub fn textured_bind_group(
    device: &wgpu::Device,
    label: &str,
    layout: &wgpu::BindGroupLayout,
    view: &wgpu::TextureView,
    sampler: &wgpu::Sampler,
    uniform: &wgpu::Buffer,
) -> wgpu::BindGroup {
    device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout,
        entries: &[
            wgpu::BindGroupEntry { binding: TEXTURE_BINDING, resource: wgpu::BindingResource::TextureView(view) },
            wgpu::BindGroupEntry { binding: SAMPLER_BINDING, resource: wgpu::BindingResource::Sampler(sampler) },
            wgpu::BindGroupEntry { binding: UNIFORM_BINDING, resource: uniform.as_entire_binding() },
        ],
    })
}

/// Bilinear filtering, clamped at the edges: texels near the border are not blended with the opposite side.
pub fn linear_clamp_sampler(device: &wgpu::Device, label: &str) -> wgpu::Sampler {
    device.create_sampler(&wgpu::SamplerDescriptor {
        label: Some(label),
        address_mode_u: wgpu::AddressMode::ClampToEdge,
        address_mode_v: wgpu::AddressMode::ClampToEdge,
        mag_filter: wgpu::FilterMode::Linear,
        min_filter: wgpu::FilterMode::Linear,
        ..Default::default()
    })
}

/// A single-sample, single-mip 2-D texture.
pub fn texture_2d(
    device: &wgpu::Device,
    label: &str,
    width: u32,
    height: u32,
    format: wgpu::TextureFormat,
    usage: wgpu::TextureUsages,
) -> wgpu::Texture {
    device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage,
        view_formats: &[],
    })
}
