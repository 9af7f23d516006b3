//! The live app's face stage: the capture thread's newest frame → the tracked driver → a pose for the engine stage
//! and a preview for the window.
//!
//! Owns the driver tracker (`face::driver::DriverTracker`: tracking, the official crop fixed from the first face,
//! recalibration) and the smoothing setting. Receives frames from the `CaptureThread` and `FaceControl`s from the
//! control thread; emits `DrivingPose`s (landmarks in the driver's crop, tagged with the instant the frame was
//! taken from the capture thread) and subsampled `PreviewFrame`s, both newest-wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam::channel::Receiver;
use image::RgbImage;

use super::STAGE_POLL;
use super::metrics::{Metrics, lock};
use crate::capture::CaptureThread;
use crate::face::driver::DriverTracker;
use crate::face::filter::OneEuroParams;
use crate::face::{FaceMesher, TrackerOptions};
use crate::pipeline::channel::LatestSender;
use crate::pipeline::messages::{PixelFormat, PreviewFrame};

/// Widest camera preview sent to the window; larger frames are subsampled.
const PREVIEW_MAX_WIDTH_PX: u32 = 320;
/// One-Euro cutoff at rest for smoothing 0 (lightest) and 1 (strongest), in Hz.
const SMOOTHING_CUTOFF_RANGE_HZ: (f32, f32) = (8.0, 0.3);

/// A tracked driving pose on its way to the engine.
pub(super) struct DrivingPose {
    /// Landmarks in the driver's crop, crop pixels (z scaled like x).
    pub(super) landmarks: Vec<[f32; 3]>,
    /// When the camera frame reached the pipeline.
    pub(super) captured: Instant,
}

/// What the control thread tells the face stage.
pub(super) enum FaceControl {
    /// Forget the driver's crop and search again (the panel's recalibrate).
    Recalibrate,
    /// New landmark smoothing strength (see `smoothing_params`).
    SetSmoothing(f32),
}

/// The smoothing slider's value as One-Euro settings (`None`: raw landmarks).
pub fn smoothing_params(smoothing: f32) -> Option<OneEuroParams> {
    if smoothing.is_nan() || smoothing <= 0.0 {
        return None;
    }
    let s = smoothing.min(1.0);
    let (light, strong) = SMOOTHING_CUTOFF_RANGE_HZ;
    Some(OneEuroParams { min_cutoff: light + (strong - light) * s, ..OneEuroParams::default() })
}

/// The face stage thread's state.
pub(super) struct FaceStage {
    pub(super) capture: CaptureThread,
    pub(super) mesher: FaceMesher,
    pub(super) poses: LatestSender<DrivingPose>,
    pub(super) preview: LatestSender<PreviewFrame>,
    pub(super) control: Receiver<FaceControl>,
    pub(super) metrics: Metrics,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) smoothing: f32,
}

impl FaceStage {
    fn options(smoothing: f32) -> TrackerOptions {
        TrackerOptions { refine: true, smoothing: smoothing_params(smoothing) }
    }

    pub(super) fn run(mut self) {
        let mut driver = DriverTracker::new(Self::options(self.smoothing));
        while !self.stop.load(Ordering::Acquire) {
            for control in self.control.try_iter() {
                match control {
                    FaceControl::Recalibrate => driver.recalibrate(),
                    FaceControl::SetSmoothing(s) => driver.set_options(Self::options(s)),
                }
            }
            {
                let stats = self.capture.stats();
                let mut m = lock(&self.metrics);
                m.capture_status = Some(self.capture.status());
                m.capture_dropped = stats.frames_dropped;
            }
            let Some(frame) = self.capture.recv_timeout(STAGE_POLL) else { continue };
            // Glass-to-glass starts when the source delivered the frame, not when this thread took it.
            let captured = self.capture.captured_at(frame.index).unwrap_or_else(Instant::now);
            let taken = Instant::now();
            let driven = match driver.track(&mut self.mesher, &frame.pixels, frame.timestamp_us as f64 * 1e-6) {
                Ok(driven) => driven,
                Err(error) => {
                    tracing::warn!(%error, "face: tracking failed on a frame");
                    continue;
                }
            };
            let face_ms = taken.elapsed().as_secs_f32() * 1e3;
            let landmarks = driven.tracked.face.as_ref().map(|f| f.landmarks.points.as_slice()).unwrap_or(&[]);
            if self.preview.send(preview_of(&frame.pixels, landmarks)).is_err() {
                break;
            }
            let mut m = lock(&self.metrics);
            m.face_ms.add(face_ms);
            let Some(face) = driven.tracked.face else {
                m.no_face += 1;
                continue;
            };
            drop(m);
            let Some(crop) = driven.crop else { continue };
            let landmarks = crop.landmarks_to_crop(&face.landmarks.points, driver.out_size());
            if self.poses.send(DrivingPose { landmarks, captured }).is_err() {
                break;
            }
        }
        let status = self.capture.stop();
        tracing::debug!(?status, "face: stopped");
    }
}

/// The camera frame subsampled to at most `PREVIEW_MAX_WIDTH_PX` wide, with its landmarks scaled to match.
fn preview_of(frame: &RgbImage, landmarks: &[[f32; 3]]) -> PreviewFrame {
    let (w, h) = frame.dimensions();
    let step = w.div_ceil(PREVIEW_MAX_WIDTH_PX).max(1);
    let (pw, ph) = (w / step, h / step);
    let mut pixels = Vec::with_capacity((pw * ph * 3) as usize);
    for y in 0..ph {
        for x in 0..pw {
            pixels.extend_from_slice(&frame.get_pixel(x * step, y * step).0);
        }
    }
    let scale = 1.0 / step as f32;
    PreviewFrame {
        pixels,
        format: PixelFormat::Rgb8,
        width: pw,
        height: ph,
        landmarks: landmarks.iter().map(|p| [p[0] * scale, p[1] * scale]).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_maps_onto_one_euro_cutoffs() {
        assert_eq!(smoothing_params(0.0), None);
        assert_eq!(smoothing_params(f32::NAN), None);
        let light = smoothing_params(0.1).expect("on").min_cutoff;
        let strong = smoothing_params(1.0).expect("on").min_cutoff;
        assert!(light > strong && strong > 0.0, "{light} {strong}");
    }

    #[test]
    fn preview_is_subsampled_with_its_landmarks() {
        let frame = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 0]));
        let p = preview_of(&frame, &[[100.0, 50.0, 1.0]]);
        assert_eq!((p.width, p.height, p.pixels.len()), (320, 240, 320 * 240 * 3));
        assert_eq!(p.landmarks, vec![[50.0, 25.0]]);
        assert_eq!(&p.pixels[3..6], &[2, 0, 0]);
    }
}
