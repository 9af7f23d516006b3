//! The demo's driving sequence: the bundled portrait filmed by a virtual camera while the head sways and nods.
//!
//! Owns a `FrameSource` that renders each frame on demand from one still image — a rotation, a shift and a slight
//! zoom about the face that vary smoothly over the clip — so the demo needs no second video asset and every
//! pixel of it comes from the public-domain portrait. Receives the still and the clip length; emits frames at a
//! fixed rate with exact timestamps.

use image::RgbImage;

use crate::capture::{CaptureError, Frame, FrameSize, FrameSource};

/// Frame rate of the demo clip.
pub const DEMO_FPS: f64 = 25.0;
/// Length of the demo clip.
pub const DEMO_FRAMES: u64 = 75;
/// Side of the virtual camera's frames.
const CAMERA_SIDE: u32 = 384;
/// Peak head roll (radians), sway (pixels) and nod (pixels) of the motion.
const ROLL_RAD: f32 = 0.14;
const SWAY_PX: f32 = 14.0;
const NOD_PX: f32 = 8.0;

/// A virtual camera looking at `still` around `centre`, with a smooth head motion.
pub struct SwaySource {
    still: RgbImage,
    centre: [f32; 2],
    frames: u64,
    next: u64,
}

impl SwaySource {
    /// `centre` is the face centre in `still` pixels (the camera frames it).
    pub fn new(still: RgbImage, centre: [f32; 2], frames: u64) -> Self {
        Self { still, centre, frames, next: 0 }
    }

    fn render(&self, t: u64) -> RgbImage {
        let phase = t as f32 / DEMO_FPS as f32;
        let angle = ROLL_RAD * (phase * 1.7).sin();
        let (dx, dy) = (SWAY_PX * (phase * 1.1).sin(), NOD_PX * (phase * 2.3).sin());
        let (s, c) = angle.sin_cos();
        let (w, h) = self.still.dimensions();
        let half = CAMERA_SIDE as f32 / 2.0;
        RgbImage::from_fn(CAMERA_SIDE, CAMERA_SIDE, |x, y| {
            let (u, v) = (x as f32 - half - dx, y as f32 - half - dy);
            let sx = (self.centre[0] + c * u - s * v).clamp(0.0, (w - 1) as f32);
            let sy = (self.centre[1] + s * u + c * v).clamp(0.0, (h - 1) as f32);
            *self.still.get_pixel(sx as u32, sy as u32)
        })
    }
}

impl FrameSource for SwaySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next >= self.frames {
            return Ok(None);
        }
        let t = self.next;
        self.next += 1;
        let timestamp_us = (t as f64 * 1e6 / DEMO_FPS).round() as i64;
        Ok(Some(Frame { pixels: self.render(t), timestamp_us, index: t }))
    }

    fn frame_rate_hz(&self) -> f64 {
        DEMO_FPS
    }

    fn size(&self) -> FrameSize {
        FrameSize { width: CAMERA_SIDE, height: CAMERA_SIDE }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_move_and_are_timed() {
        let still = RgbImage::from_fn(100, 100, |x, y| image::Rgb([x as u8 * 2, y as u8 * 2, 0]));
        let mut src = SwaySource::new(still, [50.0, 50.0], 3);
        let f0 = src.next_frame().unwrap().unwrap();
        let f1 = src.next_frame().unwrap().unwrap();
        assert_eq!((f0.timestamp_us, f1.timestamp_us, f1.index), (0, 40_000, 1));
        assert_ne!(f0.pixels, f1.pixels);
        assert!(src.next_frame().unwrap().is_some());
        assert!(src.next_frame().unwrap().is_none());
    }
}
