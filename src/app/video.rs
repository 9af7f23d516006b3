//! The main output view on the GPU: one texture holding the newest output frame and the WGSL pipeline that draws it
//! letterboxed into a viewport.
//!
//! Owns `VideoQuad` (pipeline, sampler, letterbox uniform and the frame texture, reused while the frame size stays the
//! same) and `VideoCallback`, the egui paint callback that lets egui-wgpu draw it inside the central panel. Receives
//! `OutputFrame`s and viewport sizes; emits draw calls into whichever render pass it is given (egui's, or an
//! offscreen one in tests).

use std::sync::Arc;

use eframe::egui_wgpu::{self, CallbackResources, ScreenDescriptor};
use eframe::wgpu;

use crate::pipeline::messages::{OutputFrame, PixelFormat};
use crate::wgpu_kit;

/// The output-view shader (`shaders/video_quad.wgsl`).
pub const VIDEO_QUAD_WGSL: &str = include_str!("../../shaders/video_quad.wgsl");

/// The frame texture always holds RGBA8 texels.
const TEXTURE_BYTES_PER_PIXEL: u32 = 4;
/// Opaque alpha for frames that arrive as RGB.
const OPAQUE_ALPHA: u8 = u8::MAX;
/// Vertices of the single full-viewport triangle drawn by `vs_main`.
const FULL_VIEWPORT_TRIANGLE_VERTICES: u32 = 3;

/// Why a frame could not be shown.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A side is zero or larger than the GPU's largest 2D texture.
    #[error("frame is {width}x{height}; both sides must be between 1 and {max_side} pixels")]
    BadSize {
        /// Frame width, in pixels.
        width: u32,
        /// Frame height, in pixels.
        height: u32,
        /// The device's `max_texture_dimension_2d`, in pixels.
        max_side: u32,
    },
    /// The pixel buffer's length does not match `width * height * bytes_per_pixel`.
    #[error("frame of {width}x{height} {format:?} needs {expected} bytes, got {actual}")]
    BadLength {
        /// Frame width, in pixels.
        width: u32,
        /// Frame height, in pixels.
        height: u32,
        /// Layout the frame claims for its pixels.
        format: PixelFormat,
        /// Byte count the size and format call for.
        expected: usize,
        /// Byte count the frame carries.
        actual: usize,
    },
}

/// Uniform block of `video_quad.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct LetterboxUniform {
    scale: [f32; 2],
    _pad: [f32; 2],
}

/// Half-extent of a `frame_w x frame_h` picture fitted inside a `view_w x view_h` viewport, in normalized device
/// coordinates: 1 on the axis the picture fills, less on the other. Degenerate sizes give `[1, 1]` (stretch).
pub fn letterbox_scale(frame_w_px: f32, frame_h_px: f32, view_w_px: f32, view_h_px: f32) -> [f32; 2] {
    let sizes = [frame_w_px, frame_h_px, view_w_px, view_h_px];
    if sizes.iter().any(|s| !s.is_finite() || *s <= 0.0) {
        return [1.0, 1.0];
    }
    let frame_aspect = frame_w_px / frame_h_px;
    let view_aspect = view_w_px / view_h_px;
    if frame_aspect > view_aspect { [1.0, view_aspect / frame_aspect] } else { [frame_aspect / view_aspect, 1.0] }
}

/// The frame texture and the bind group that samples it.
struct FrameTexture {
    /// Kept alive for the bind group's view; written with `queue.write_texture`.
    texture: wgpu::Texture,
    bind_group: wgpu::BindGroup,
    width: u32,
    height: u32,
}

/// GPU state of the output view.
pub struct VideoQuad {
    pipeline: wgpu::RenderPipeline,
    bind_group_layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    letterbox: wgpu::Buffer,
    /// RGBA8, in the sRGB flavour iff the render target is sRGB, so texels reach the target unchanged.
    texture_format: wgpu::TextureFormat,
    frame: FrameTexture,
    /// Generation of the frame in `frame` (`None`: the black placeholder).
    shown_generation: Option<u64>,
    /// Reused RGB to RGBA conversion buffer.
    rgba_scratch: Vec<u8>,
    max_side_px: u32,
}

impl VideoQuad {
    /// Builds the pipeline for render passes whose single color target has `target_format` (no depth, 1 sample).
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, target_format: wgpu::TextureFormat) -> Self {
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("video_quad"),
            source: wgpu::ShaderSource::Wgsl(VIDEO_QUAD_WGSL.into()),
        });
        let bind_group_layout = wgpu_kit::textured_layout(
            device,
            "video_quad",
            wgpu::ShaderStages::FRAGMENT,
            wgpu::BufferSize::new(size_of::<LetterboxUniform>() as u64),
        );
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("video_quad"),
            bind_group_layouts: &[Some(&bind_group_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("video_quad"),
            layout: Some(&layout),
            vertex: wgpu::VertexState {
                module: &module,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            fragment: Some(wgpu::FragmentState {
                module: &module,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format: target_format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            multiview_mask: None,
            cache: None,
        });
        let sampler = wgpu_kit::linear_clamp_sampler(device, "video_quad");
        let letterbox = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("video_quad_letterbox"),
            size: size_of::<LetterboxUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let texture_format =
            if target_format.is_srgb() { wgpu::TextureFormat::Rgba8UnormSrgb } else { wgpu::TextureFormat::Rgba8Unorm };
        let frame = create_frame_texture(device, &bind_group_layout, &sampler, &letterbox, texture_format, 1, 1);
        // Placeholder until the first frame: one opaque black texel.
        write_frame_texture(queue, &frame, &[0, 0, 0, OPAQUE_ALPHA]);
        let max_side_px = device.limits().max_texture_dimension_2d;
        let quad = Self {
            pipeline,
            bind_group_layout,
            sampler,
            letterbox,
            texture_format,
            frame,
            shown_generation: None,
            rgba_scratch: Vec::new(),
            max_side_px,
        };
        quad.set_viewport(queue, 1.0, 1.0);
        quad
    }

    /// Size of the texture now shown, `[width, height]` in pixels.
    pub fn frame_size_px(&self) -> [u32; 2] {
        [self.frame.width, self.frame.height]
    }

    /// Copies `frame` into the frame texture, recreating the texture only when the size changed. A frame whose
    /// `generation` is the one already shown is not uploaded again.
    pub fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        frame: &OutputFrame,
        generation: u64,
    ) -> Result<(), FrameError> {
        if self.shown_generation == Some(generation) {
            return Ok(());
        }
        let (width, height) = (frame.width, frame.height);
        if width == 0 || height == 0 || width > self.max_side_px || height > self.max_side_px {
            return Err(FrameError::BadSize { width, height, max_side: self.max_side_px });
        }
        let pixel_count = width as usize * height as usize;
        let expected = pixel_count * frame.format.bytes_per_pixel();
        if frame.pixels.len() != expected {
            return Err(FrameError::BadLength {
                width,
                height,
                format: frame.format,
                expected,
                actual: frame.pixels.len(),
            });
        }
        if self.frame.width != width || self.frame.height != height {
            tracing::debug!(width, height, "output view: frame size changed, recreating texture");
            self.frame = create_frame_texture(
                device,
                &self.bind_group_layout,
                &self.sampler,
                &self.letterbox,
                self.texture_format,
                width,
                height,
            );
        }
        match frame.format {
            PixelFormat::Rgba8 => write_frame_texture(queue, &self.frame, &frame.pixels),
            PixelFormat::Rgb8 => {
                self.rgba_scratch.clear();
                self.rgba_scratch.reserve(pixel_count * TEXTURE_BYTES_PER_PIXEL as usize);
                for rgb in frame.pixels.chunks_exact(3) {
                    self.rgba_scratch.extend_from_slice(rgb);
                    self.rgba_scratch.push(OPAQUE_ALPHA);
                }
                write_frame_texture(queue, &self.frame, &self.rgba_scratch);
            }
        }
        self.shown_generation = Some(generation);
        Ok(())
    }

    /// Sets the letterbox for a viewport of `width x height` (any unit: only the aspect ratio matters).
    pub fn set_viewport(&self, queue: &wgpu::Queue, view_w: f32, view_h: f32) {
        let scale = letterbox_scale(self.frame.width as f32, self.frame.height as f32, view_w, view_h);
        queue.write_buffer(&self.letterbox, 0, bytemuck::bytes_of(&LetterboxUniform { scale, _pad: [0.0; 2] }));
    }

    /// Draws the frame into the pass's current viewport, painting every pixel of it (bars black).
    pub fn draw(&self, pass: &mut wgpu::RenderPass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.frame.bind_group, &[]);
        pass.draw(0..FULL_VIEWPORT_TRIANGLE_VERTICES, 0..1);
    }
}

fn create_frame_texture(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    sampler: &wgpu::Sampler,
    letterbox: &wgpu::Buffer,
    format: wgpu::TextureFormat,
    width: u32,
    height: u32,
) -> FrameTexture {
    let usage = wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST;
    let texture = wgpu_kit::texture_2d(device, "video_quad_frame", width, height, format, usage);
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let bind_group = wgpu_kit::textured_bind_group(device, "video_quad_frame", layout, &view, sampler, letterbox);
    FrameTexture { texture, bind_group, width, height }
}

/// `rgba` must hold exactly `width * height` RGBA8 texels (checked by the callers).
fn write_frame_texture(queue: &wgpu::Queue, frame: &FrameTexture, rgba: &[u8]) {
    queue.write_texture(
        wgpu::TexelCopyTextureInfo {
            texture: &frame.texture,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        rgba,
        wgpu::TexelCopyBufferLayout {
            offset: 0,
            bytes_per_row: Some(TEXTURE_BYTES_PER_PIXEL * frame.width),
            rows_per_image: Some(frame.height),
        },
        wgpu::Extent3d { width: frame.width, height: frame.height, depth_or_array_layers: 1 },
    );
}

/// egui paint callback drawing the `VideoQuad` stored in egui-wgpu's callback resources. Built on every ui pass;
/// carries the newest frame (shared, not copied) and uploads it in `prepare` unless it is already on the GPU.
pub struct VideoCallback {
    /// Newest output frame and its generation (a frame whose generation is already on the GPU is not re-uploaded);
    /// `None` before the first frame.
    pub frame: Option<(Arc<OutputFrame>, u64)>,
    /// Size of the callback's rect, in points (only its aspect ratio is used).
    pub view_size_pt: [f32; 2],
}

impl egui_wgpu::CallbackTrait for VideoCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen_descriptor: &ScreenDescriptor,
        _egui_encoder: &mut wgpu::CommandEncoder,
        callback_resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(quad) = callback_resources.get_mut::<VideoQuad>() else {
            tracing::warn!("output view: pipeline missing from the callback resources");
            return Vec::new();
        };
        if let Some((frame, generation)) = &self.frame
            && let Err(error) = quad.upload(device, queue, frame, *generation)
        {
            tracing::warn!(%error, "output view: frame skipped");
        }
        quad.set_viewport(queue, self.view_size_pt[0], self.view_size_pt[1]);
        Vec::new()
    }

    fn paint(
        &self,
        _info: eframe::egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        callback_resources: &CallbackResources,
    ) {
        if let Some(quad) = callback_resources.get::<VideoQuad>() {
            quad.draw(render_pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_frame_in_square_view_gets_bars_top_and_bottom() {
        assert_eq!(letterbox_scale(200.0, 100.0, 100.0, 100.0), [1.0, 0.5]);
    }

    #[test]
    fn square_frame_in_wide_view_gets_bars_left_and_right() {
        assert_eq!(letterbox_scale(64.0, 64.0, 96.0, 64.0), [64.0 / 96.0, 1.0]);
    }

    #[test]
    fn degenerate_sizes_stretch() {
        assert_eq!(letterbox_scale(0.0, 10.0, 10.0, 10.0), [1.0, 1.0]);
        assert_eq!(letterbox_scale(10.0, 10.0, f32::NAN, 10.0), [1.0, 1.0]);
    }
}
