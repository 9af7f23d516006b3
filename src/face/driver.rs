//! The driver's face crop, defined once for every path that crops a driving or training face: the official crop
//! policy's square, fixed from the first face of a clip (as the official data preparation does) until recalibrated.
//!
//! Owns `DriverCrop` (the policy and the fixed box) and `DriverTracker` (a `FaceTracker` with a `DriverCrop`: what
//! `live` and `render` follow a driver with). Receives landmarks in frame pixels (or frames and a `FaceMesher`);
//! emits the crop box and, on request, landmarks in crop pixels. Clip preparation for personalization and datasets
//! uses `DriverCrop` on per-frame detections, since its frames are spread too far apart to track.

use image::RgbImage;

use super::facecrop::{CropBox, CropPolicy, FaceBox};
use super::tracker::{FaceTracker, TrackedFrame, TrackerOptions, TrackerStats};
use super::{FaceError, FaceMesher};

/// The official crop box of a clip's driver: placed on the first face, then fixed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriverCrop {
    policy: CropPolicy,
    fixed: Option<CropBox>,
}

impl DriverCrop {
    /// A crop with `policy`, not placed yet.
    pub fn new(policy: CropPolicy) -> Self {
        Self { policy, fixed: None }
    }

    /// The official policy (box × 1.3, centre raised by 0.2 of its height, 256² output).
    pub fn official() -> Self {
        Self::new(CropPolicy::official())
    }

    /// The policy in use.
    pub fn policy(&self) -> &CropPolicy {
        &self.policy
    }

    /// Side of the crop image in pixels.
    pub fn out_size(&self) -> u32 {
        self.policy.out_size
    }

    /// The crop box for a face with `landmarks` (frame pixels) in a `width × height` frame: the box placed on the
    /// first face and kept since. `None` when the landmarks are empty or not finite (nothing is placed then).
    pub fn place(&mut self, landmarks: &[[f32; 3]], width: u32, height: u32) -> Option<CropBox> {
        if let Some(fixed) = self.fixed {
            return FaceBox::of_landmarks(landmarks).map(|_| fixed);
        }
        let face = FaceBox::of_landmarks(landmarks)?;
        let placed = CropBox::official(face, width, height, &self.policy);
        self.fixed = Some(placed);
        Some(placed)
    }

    /// The box placed so far.
    pub fn placed(&self) -> Option<CropBox> {
        self.fixed
    }

    /// Forgets the box: the next face places a new one.
    pub fn recalibrate(&mut self) {
        self.fixed = None;
    }
}

/// A driver followed through a video: the face tracker and the fixed crop box.
pub struct DriverTracker {
    tracker: FaceTracker,
    crop: DriverCrop,
}

/// One tracked frame and, when it has a usable face, the driver's crop box.
pub struct DriverFrame {
    /// The tracker's output (the face in frame pixels).
    pub tracked: TrackedFrame,
    /// The crop box, when the frame has a face with finite landmarks.
    pub crop: Option<CropBox>,
}

impl DriverTracker {
    /// A tracker with `options` and the official crop policy.
    pub fn new(options: TrackerOptions) -> Self {
        Self { tracker: FaceTracker::new(options), crop: DriverCrop::official() }
    }

    /// New tracker settings (smoothing); the crop box is kept.
    pub fn set_options(&mut self, options: TrackerOptions) {
        self.tracker = FaceTracker::new(options);
    }

    /// Starts over: the tracker searches again and the next face places a new crop box.
    pub fn recalibrate(&mut self) {
        self.crop.recalibrate();
        self.tracker.reset();
    }

    /// Side of the crop image in pixels.
    pub fn out_size(&self) -> u32 {
        self.crop.out_size()
    }

    /// The tracker's counters.
    pub fn stats(&self) -> TrackerStats {
        self.tracker.stats()
    }

    /// Tracks the driver in `image` (at `time_s`) and places its crop box.
    pub fn track(&mut self, mesher: &mut FaceMesher, image: &RgbImage, time_s: f64) -> Result<DriverFrame, FaceError> {
        let tracked = self.tracker.track(mesher, image, time_s)?;
        let crop = match &tracked.face {
            Some(face) => self.crop.place(&face.landmarks.points, image.width(), image.height()),
            None => None,
        };
        Ok(DriverFrame { tracked, crop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x: f32, y: f32, side: f32) -> Vec<[f32; 3]> {
        vec![[x, y, 0.0], [x + side, y + side, 1.0]]
    }

    #[test]
    fn the_first_face_fixes_the_box_until_recalibrated() {
        let mut crop = DriverCrop::official();
        let first = crop.place(&square(100.0, 100.0, 50.0), 640, 480).expect("placed");
        assert_eq!(first, CropBox::official(FaceBox { x: 100.0, y: 100.0, w: 50.0, h: 50.0 }, 640, 480, crop.policy()));
        // A moved face keeps the clip's box.
        assert_eq!(crop.place(&square(300.0, 200.0, 80.0), 640, 480), Some(first));
        crop.recalibrate();
        let moved = crop.place(&square(300.0, 200.0, 80.0), 640, 480).expect("placed");
        assert_ne!(moved, first);
    }

    #[test]
    fn faces_without_finite_landmarks_place_nothing() {
        let mut crop = DriverCrop::official();
        assert_eq!(crop.place(&[], 640, 480), None);
        assert_eq!(crop.place(&[[f32::NAN, 1.0, 0.0]], 640, 480), None);
        assert_eq!(crop.placed(), None);
    }
}
