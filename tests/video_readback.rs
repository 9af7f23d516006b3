//! Headless check of the output view's pipeline: upload a frame to `VideoQuad`, draw it into an offscreen texture,
//! read the texture back and compare with the uploaded pixels (letterbox bars black). Needs a wgpu adapter (Mesa's
//! lavapipe is enough); without one the test prints why and passes, unless `METAPORTRAIT_REQUIRE_WGPU=1` (set by
//! scripts/test.sh).

use eframe::wgpu;
use metaportrait::app::VideoQuad;
use metaportrait::pipeline::messages::{OutputFrame, PixelFormat};

/// Largest per-channel difference allowed between uploaded and read-back texels (filtering at texel centres and
/// sRGB round trips may be off by one).
const TOLERANCE: u8 = 1;
const BLACK: [u8; 4] = [0, 0, 0, 255];

fn gpu() -> Option<(wgpu::Device, wgpu::Queue)> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = match pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())) {
        Ok(adapter) => adapter,
        Err(error) => {
            assert!(std::env::var("METAPORTRAIT_REQUIRE_WGPU").is_err(), "a wgpu adapter is required: {error}");
            eprintln!("skipping: no wgpu adapter ({error})");
            return None;
        }
    };
    eprintln!("adapter: {:?}", adapter.get_info());
    match pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default())) {
        Ok(pair) => Some(pair),
        Err(error) => {
            eprintln!("skipping: no wgpu device ({error})");
            None
        }
    }
}

/// A deterministic pattern where every texel differs from its neighbours.
fn pattern(width: u32, height: u32, format: PixelFormat) -> OutputFrame {
    let mut pixels = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let rgb = [(x * 7 + y * 3) as u8, ((x * 13) ^ (y * 5)) as u8, (x * y + 17) as u8];
            pixels.extend_from_slice(&rgb);
            if format == PixelFormat::Rgba8 {
                pixels.push(200);
            }
        }
    }
    OutputFrame { pixels, format, width, height, timestamp_us: 0, stage_times: Vec::new() }
}

fn expected_rgba(frame: &OutputFrame, x: u32, y: u32) -> [u8; 4] {
    let bpp = frame.format.bytes_per_pixel();
    let i = (y * frame.width + x) as usize * bpp;
    [frame.pixels[i], frame.pixels[i + 1], frame.pixels[i + 2], 255]
}

/// Draws the quad's current frame into a `width x height` target and returns its RGBA8 texels, row by row.
fn render(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    quad: &VideoQuad,
    format: wgpu::TextureFormat,
    width: u32,
    height: u32,
) -> Vec<u8> {
    let target = device.create_texture(&wgpu::TextureDescriptor {
        label: Some("readback_target"),
        size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format,
        usage: wgpu::TextureUsages::RENDER_ATTACHMENT | wgpu::TextureUsages::COPY_SRC,
        view_formats: &[],
    });
    let view = target.create_view(&wgpu::TextureViewDescriptor::default());
    let unpadded_row = width * 4;
    let padded_row = unpadded_row.div_ceil(wgpu::COPY_BYTES_PER_ROW_ALIGNMENT) * wgpu::COPY_BYTES_PER_ROW_ALIGNMENT;
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: u64::from(padded_row * height),
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::MAP_READ,
        mapped_at_creation: false,
    });
    quad.set_viewport(queue, width as f32, height as f32);
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("readback") });
    {
        let mut pass = encoder.begin_render_pass(&wgpu::RenderPassDescriptor {
            label: Some("readback"),
            color_attachments: &[Some(wgpu::RenderPassColorAttachment {
                view: &view,
                depth_slice: None,
                resolve_target: None,
                // Magenta clear: any pixel the quad fails to paint shows up.
                ops: wgpu::Operations {
                    load: wgpu::LoadOp::Clear(wgpu::Color { r: 1.0, g: 0.0, b: 1.0, a: 1.0 }),
                    store: wgpu::StoreOp::Store,
                },
            })],
            depth_stencil_attachment: None,
            timestamp_writes: None,
            occlusion_query_set: None,
            multiview_mask: None,
        });
        quad.draw(&mut pass);
    }
    encoder.copy_texture_to_buffer(
        wgpu::TexelCopyTextureInfo {
            texture: &target,
            mip_level: 0,
            origin: wgpu::Origin3d::ZERO,
            aspect: wgpu::TextureAspect::All,
        },
        wgpu::TexelCopyBufferInfo {
            buffer: &readback,
            layout: wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some(padded_row),
                rows_per_image: Some(height),
            },
        },
        wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
    );
    queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    readback.slice(..).map_async(wgpu::MapMode::Read, move |result| {
        let _ = tx.send(result);
    });
    device.poll(wgpu::PollType::wait_indefinitely()).expect("device poll");
    rx.recv().expect("map callback ran").expect("buffer mapped");
    let mapped = readback.slice(..).get_mapped_range().expect("mapped range");
    let mut texels = Vec::with_capacity((unpadded_row * height) as usize);
    for row in mapped.chunks(padded_row as usize) {
        texels.extend_from_slice(&row[..unpadded_row as usize]);
    }
    texels
}

/// Asserts the picture sits at `origin` with the frame's size and everything around it is black.
fn assert_letterboxed(texels: &[u8], target_w: u32, target_h: u32, frame: &OutputFrame, origin: [u32; 2]) {
    let mut mismatches = 0;
    for y in 0..target_h {
        for x in 0..target_w {
            let i = ((y * target_w + x) * 4) as usize;
            let got = [texels[i], texels[i + 1], texels[i + 2], texels[i + 3]];
            let inside =
                x >= origin[0] && x < origin[0] + frame.width && y >= origin[1] && y < origin[1] + frame.height;
            let want = if inside { expected_rgba(frame, x - origin[0], y - origin[1]) } else { BLACK };
            if got.iter().zip(want).any(|(g, w)| g.abs_diff(w) > TOLERANCE) {
                if mismatches < 5 {
                    eprintln!("pixel ({x}, {y}): got {got:?}, want {want:?}");
                }
                mismatches += 1;
            }
        }
    }
    assert_eq!(mismatches, 0, "{mismatches} pixels differ");
}

#[test]
fn quad_shows_uploaded_frames_letterboxed() {
    let Some((device, queue)) = gpu() else { return };
    for target_format in [wgpu::TextureFormat::Rgba8Unorm, wgpu::TextureFormat::Rgba8UnormSrgb] {
        let mut quad = VideoQuad::new(&device, &queue, target_format);

        // Before any frame: all black.
        let texels = render(&device, &queue, &quad, target_format, 32, 16);
        assert!(texels.chunks(4).all(|t| t == BLACK), "placeholder is not black");

        // Square RGB frame in a wide target: bars left and right, 16 px each.
        let square = pattern(64, 48, PixelFormat::Rgb8);
        quad.upload(&device, &queue, &square, 0).expect("valid frame");
        assert_eq!(quad.frame_size_px(), [64, 48]);
        let texels = render(&device, &queue, &quad, target_format, 96, 48);
        assert_letterboxed(&texels, 96, 48, &square, [16, 0]);

        // Wide RGBA frame in a tall target: bars top and bottom, 16 px each; the texture is recreated.
        let wide = pattern(96, 32, PixelFormat::Rgba8);
        quad.upload(&device, &queue, &wide, 1).expect("valid frame");
        assert_eq!(quad.frame_size_px(), [96, 32]);
        let texels = render(&device, &queue, &quad, target_format, 96, 64);
        assert_letterboxed(&texels, 96, 64, &wide, [0, 16]);

        // Same size again: reuses the texture and shows the new content.
        let mut shifted = pattern(96, 32, PixelFormat::Rgba8);
        shifted.pixels.rotate_left(4);
        quad.upload(&device, &queue, &shifted, 2).expect("valid frame");
        let texels = render(&device, &queue, &quad, target_format, 96, 64);
        assert_letterboxed(&texels, 96, 64, &shifted, [0, 16]);
    }
}

#[test]
fn malformed_frames_are_rejected() {
    let Some((device, queue)) = gpu() else { return };
    let mut quad = VideoQuad::new(&device, &queue, wgpu::TextureFormat::Rgba8Unorm);
    let mut short = pattern(8, 8, PixelFormat::Rgb8);
    short.pixels.pop();
    assert!(quad.upload(&device, &queue, &short, 0).is_err());
    let empty = OutputFrame { width: 0, ..pattern(8, 8, PixelFormat::Rgb8) };
    assert!(quad.upload(&device, &queue, &empty, 1).is_err());
    assert_eq!(quad.frame_size_px(), [1, 1], "a rejected frame leaves the placeholder");
}
