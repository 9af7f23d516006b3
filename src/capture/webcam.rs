//! Webcam source through `nokhwa` (Video4Linux on Linux).
//!
//! Owns one open camera stream. Receives a [`WebcamConfig`]; emits RGB [`Frame`]s stamped with
//! the time since the first frame. The camera handle must be created on the thread that reads it,
//! so [`WebcamSource::open`] is meant to be called inside a [`CaptureThread`](super::CaptureThread)
//! opener. A missing or busy camera is [`CaptureError::CameraUnavailable`]; a camera that stops
//! delivering is [`CaptureError::CameraLost`]; both are retryable and never panic.
//!
//! Pixel formats: MJPEG (decoded with `image`), YUYV, NV12, RGB, BGR and grey are converted here,
//! so nokhwa's `decoding` feature (and its C JPEG library) is not needed.

use std::time::Instant;

use nokhwa::Camera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType, Resolution};

use super::{CaptureError, Frame, FrameSize, FrameSource};

/// Camera settings; the camera picks the closest mode it supports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WebcamConfig {
    /// Device index (`/dev/video<index>` on Linux).
    pub index: u32,
    /// Requested picture size in pixels.
    pub size: FrameSize,
    /// Requested frames per second.
    pub frame_rate_hz: u32,
}

impl Default for WebcamConfig {
    fn default() -> Self {
        Self { index: 0, size: FrameSize::new(640, 480), frame_rate_hz: 30 }
    }
}

/// A live camera stream.
pub struct WebcamSource {
    camera: Camera,
    index: u32,
    size: FrameSize,
    frame_rate_hz: f64,
    started: Option<Instant>,
    next_index: u64,
}

impl WebcamSource {
    /// Opens the camera and starts streaming. Call this on the thread that will read frames.
    pub fn open(config: WebcamConfig) -> Result<Self, CaptureError> {
        let index = config.index;
        #[cfg(target_os = "linux")]
        {
            let device = format!("/dev/video{index}");
            if !std::path::Path::new(&device).exists() {
                return Err(CaptureError::CameraUnavailable {
                    index,
                    message: format!("no camera device {device}; connect a webcam or pick another camera"),
                });
            }
        }
        let wanted = CameraFormat::new(
            Resolution::new(config.size.width, config.size.height),
            FrameFormat::MJPEG,
            config.frame_rate_hz,
        );
        let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
        let unavailable = |e: nokhwa::NokhwaError| CaptureError::CameraUnavailable {
            index,
            message: format!("{e} (is it connected and not in use by another program?)"),
        };
        let mut camera = Camera::new(CameraIndex::Index(index), request).map_err(unavailable)?;
        camera.open_stream().map_err(unavailable)?;
        let format = camera.camera_format();
        let size = FrameSize::new(format.width(), format.height());
        tracing::info!(index, %size, fps = format.frame_rate(), pixel_format = %format.format(), "camera opened");
        Ok(Self {
            camera,
            index,
            size,
            frame_rate_hz: f64::from(format.frame_rate().max(1)),
            started: None,
            next_index: 0,
        })
    }
}

impl FrameSource for WebcamSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let index = self.index;
        let buffer = self.camera.frame().map_err(|e| CaptureError::CameraLost { index, message: e.to_string() })?;
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        let res = buffer.resolution();
        let pixels = convert_to_rgb(buffer.buffer(), buffer.source_frame_format(), res.width(), res.height())
            .map_err(|format| CaptureError::UnsupportedCameraFormat { index, format: format.to_string() })?;
        let frame = Frame {
            pixels,
            timestamp_us: now.duration_since(started).as_micros().min(i64::MAX as u128) as i64,
            index: self.next_index,
        };
        self.next_index += 1;
        Ok(Some(frame))
    }

    fn frame_rate_hz(&self) -> f64 {
        self.frame_rate_hz
    }

    fn size(&self) -> FrameSize {
        self.size
    }
}

impl Drop for WebcamSource {
    fn drop(&mut self) {
        if let Err(e) = self.camera.stop_stream() {
            tracing::debug!(index = self.index, "closing camera stream: {e}");
        }
    }
}

/// A camera buffer that cannot be turned into RGB.
#[derive(Debug, thiserror::Error)]
enum CameraBufferError {
    /// The buffer is smaller than its format and size need.
    #[error("{format} buffer of {bytes} bytes for {width}x{height}")]
    Size { format: String, bytes: usize, width: u32, height: u32 },
    /// The JPEG does not decode.
    #[error("MJPEG ({0})")]
    Mjpeg(String),
}

/// Converts one camera buffer into RGB; `Err` names a format (or size) we cannot handle.
fn convert_to_rgb(
    data: &[u8],
    format: FrameFormat,
    width: u32,
    height: u32,
) -> Result<image::RgbImage, CameraBufferError> {
    let (w, h) = (width as usize, height as usize);
    let bad_size = || CameraBufferError::Size { format: format.to_string(), bytes: data.len(), width, height };
    let rgb = match format {
        FrameFormat::MJPEG => {
            return image::load_from_memory_with_format(data, image::ImageFormat::Jpeg)
                .map(|img| img.into_rgb8())
                .map_err(|e| CameraBufferError::Mjpeg(e.to_string()));
        }
        FrameFormat::RAWRGB => data.get(..w * h * 3).ok_or_else(bad_size)?.to_vec(),
        FrameFormat::RAWBGR => {
            data.get(..w * h * 3).ok_or_else(bad_size)?.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect()
        }
        FrameFormat::GRAY => data.get(..w * h).ok_or_else(bad_size)?.iter().flat_map(|&g| [g, g, g]).collect(),
        FrameFormat::YUYV => {
            let src = data.get(..w * h * 2).ok_or_else(bad_size)?;
            let mut out = Vec::with_capacity(w * h * 3);
            for px in src.chunks_exact(4) {
                let (y0, u, y1, v) = (px[0], px[1], px[2], px[3]);
                out.extend_from_slice(&yuv_to_rgb_pixel(y0, u, v));
                out.extend_from_slice(&yuv_to_rgb_pixel(y1, u, v));
            }
            out
        }
        FrameFormat::NV12 => {
            let src = data.get(..w * h + w * h / 2).ok_or_else(bad_size)?;
            let (luma, chroma) = src.split_at(w * h);
            let mut out = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                for x in 0..w {
                    let c = (y / 2) * w + (x / 2) * 2;
                    let (u, v) = (chroma.get(c).copied().unwrap_or(128), chroma.get(c + 1).copied().unwrap_or(128));
                    out.extend_from_slice(&yuv_to_rgb_pixel(luma[y * w + x], u, v));
                }
            }
            out
        }
    };
    image::RgbImage::from_raw(width, height, rgb).ok_or_else(bad_size)
}

/// BT.601 limited-range YCbCr to RGB for one pixel.
fn yuv_to_rgb_pixel(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 1.164 * (f32::from(y) - 16.0);
    let d = f32::from(u) - 128.0;
    let e = f32::from(v) - 128.0;
    let clamp = |x: f32| x.round().clamp(0.0, 255.0) as u8;
    [clamp(c + 1.596 * e), clamp(c - 0.392 * d - 0.813 * e), clamp(c + 2.017 * d)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_camera_is_a_clear_error() {
        let config = WebcamConfig { index: 97, ..WebcamConfig::default() };
        match WebcamSource::open(config) {
            Err(e @ CaptureError::CameraUnavailable { .. }) => {
                assert!(e.is_retryable());
                assert!(e.to_string().contains("camera 97"), "{e}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("camera 97 unexpectedly present"),
        }
    }

    #[test]
    fn yuyv_grey_converts() {
        let data = [128u8, 128, 128, 128];
        let rgb = convert_to_rgb(&data, FrameFormat::YUYV, 2, 1).unwrap_or_default();
        assert_eq!(rgb.as_raw().len(), 6);
        assert!(rgb.as_raw().iter().all(|&v| (128..=132).contains(&v)));
    }
}
