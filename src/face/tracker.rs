//! Following one face through a video.
//!
//! Owns the tracking state between frames: like MediaPipe's face-landmark graph it does not re-detect every frame
//! but derives the next ROI from the current landmarks (`Roi::from_landmarks`), and runs the detector only when there
//! is no ROI yet or the landmark model's presence score drops below the threshold. Among several detected faces it
//! follows the largest. A face keeps its id while tracked and when a re-detection overlaps where it was lost.
//! Landmarks pass through a One-Euro filter (on by default here; stills use `FaceMesher` directly, unfiltered).
//! Receives frames with timestamps and a `FaceMesher` to run the models; emits a `TrackedFrame` per frame
//! (`TrackState::NoFace` when there is no face — never an error for that) and keeps call counters.

use image::RgbImage;

use super::detect::Detection;
use super::filter::{LandmarkSmoother, OneEuroParams};
use super::geometry::{Point2, Rect};
use super::mesh::FaceLandmarks;
use super::roi::Roi;
use super::{FaceError, FaceMesher};

/// A re-detected face overlapping the lost one's landmark box by more than this IoU keeps the old id.
pub const SAME_FACE_IOU: f32 = 0.3;

/// Tracker settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerOptions {
    /// Run the 478-point attention model instead of the 468-point mesh.
    pub refine: bool,
    /// Landmark smoothing; `None` turns it off.
    pub smoothing: Option<OneEuroParams>,
}

impl Default for TrackerOptions {
    fn default() -> Self {
        Self { refine: false, smoothing: Some(OneEuroParams::default()) }
    }
}

/// Where the tracker stands after a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackState {
    /// No frame processed yet (or just reset): the next frame runs the detector.
    Searching,
    /// A face is being followed; the next frame reuses its landmark ROI.
    Tracking {
        /// Id of the followed face (see [`TrackedFace::id`]).
        face_id: u64,
    },
    /// The last frame had no face; the next frame runs the detector again.
    NoFace,
}

/// The followed face in one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedFace {
    /// Stable while the face is followed.
    pub id: u64,
    /// Smoothed landmarks (equal to `raw` when smoothing is off), image pixels.
    pub landmarks: FaceLandmarks,
    /// The model's landmarks before smoothing.
    pub raw: Vec<[f32; 3]>,
    /// Bounding box of the (smoothed) landmarks.
    pub bbox: Rect,
    /// The detection this frame started from, when the detector ran.
    pub detection: Option<Detection>,
}

/// The tracker's output for one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackedFrame {
    /// The tracker's state after this frame.
    pub state: TrackState,
    /// The face found in this frame; `None` when there was none.
    pub face: Option<TrackedFace>,
    /// Whether the detector ran on this frame.
    pub detector_ran: bool,
}

/// Running counts, for checking that tracking saves detector calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// Frames processed.
    pub frames: u64,
    /// Detector runs: frames with no face to follow, or whose followed face was lost.
    pub detector_calls: u64,
    /// Landmark-model runs, including those that found the face gone.
    pub landmark_calls: u64,
    /// Times the presence score dropped while tracking.
    pub track_losses: u64,
    /// Distinct face ids handed out.
    pub faces_started: u64,
}

/// Video face tracker (one face: the largest when several are detected).
pub struct FaceTracker {
    options: TrackerOptions,
    state: TrackState,
    roi: Option<Roi>,
    /// Landmark box of the last tracked face, to keep its id across a re-detection.
    last_bbox: Option<Rect>,
    smoother: Option<LandmarkSmoother>,
    next_id: u64,
    stats: TrackerStats,
}

fn landmark_box(points: &[[f32; 3]]) -> Option<Rect> {
    Rect::bounding(points.iter().map(|p| Point2::new(p[0], p[1])))
}

impl FaceTracker {
    /// A tracker with no face yet: the first frame runs the detector.
    pub fn new(options: TrackerOptions) -> Self {
        Self {
            options,
            state: TrackState::Searching,
            roi: None,
            last_bbox: None,
            smoother: options.smoothing.map(LandmarkSmoother::new),
            next_id: 1,
            stats: TrackerStats::default(),
        }
    }

    /// Where the tracker stands after the last frame.
    pub fn state(&self) -> TrackState {
        self.state
    }

    /// Counters since the tracker was created (not cleared by [`FaceTracker::reset`]).
    pub fn stats(&self) -> TrackerStats {
        self.stats
    }

    /// The ROI the next frame will use, if any.
    pub fn next_roi(&self) -> Option<Roi> {
        self.roi
    }

    /// Forgets the face: the next frame runs the detector and starts a new id.
    pub fn reset(&mut self) {
        self.state = TrackState::Searching;
        self.roi = None;
        self.last_bbox = None;
        if let Some(s) = &mut self.smoother {
            s.reset();
        }
    }

    /// Processes one frame seen at `time_s` (seconds, increasing).
    pub fn track(&mut self, mesher: &mut FaceMesher, image: &RgbImage, time_s: f64) -> Result<TrackedFrame, FaceError> {
        self.stats.frames += 1;
        let min_presence = mesher.options().min_presence;
        let previous_id = match self.state {
            TrackState::Tracking { face_id } => Some(face_id),
            _ => None,
        };
        // 1. Follow the previous ROI.
        if let (Some(roi), Some(id)) = (self.roi, previous_id) {
            let landmarks = self.run_landmarks(mesher, image, &roi)?;
            if landmarks.is_present(min_presence) {
                return Ok(self.accept(id, landmarks, None, time_s, false));
            }
            self.stats.track_losses += 1;
        }
        // 2. (Re-)detect and take the largest face.
        self.stats.detector_calls += 1;
        let detections = mesher.detect(image)?;
        let Some(detection) = detections.into_iter().max_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area())) else {
            return Ok(self.lose());
        };
        let landmarks = self.run_landmarks(mesher, image, &detection.roi())?;
        if !landmarks.is_present(min_presence) {
            return Ok(self.lose());
        }
        let same_face = self.last_bbox.is_some_and(|b| b.iou(&detection.bbox) > SAME_FACE_IOU);
        let id = match previous_id {
            Some(id) if same_face => id,
            _ => {
                if let Some(s) = &mut self.smoother {
                    s.reset();
                }
                self.new_id()
            }
        };
        Ok(self.accept(id, landmarks, Some(detection), time_s, true))
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.stats.faces_started += 1;
        id
    }

    fn run_landmarks(
        &mut self,
        mesher: &mut FaceMesher,
        image: &RgbImage,
        roi: &Roi,
    ) -> Result<FaceLandmarks, FaceError> {
        self.stats.landmark_calls += 1;
        mesher.landmarks(image, roi, self.options.refine)
    }

    fn accept(
        &mut self,
        id: u64,
        landmarks: FaceLandmarks,
        detection: Option<Detection>,
        time_s: f64,
        detector_ran: bool,
    ) -> TrackedFrame {
        self.roi = Roi::from_landmarks(&landmarks.points);
        let raw = landmarks.points.clone();
        self.last_bbox = landmark_box(&raw);
        let points = match &mut self.smoother {
            Some(s) => s.apply(&raw, time_s),
            None => raw.clone(),
        };
        let bbox = landmark_box(&points).unwrap_or_default();
        self.state = if self.roi.is_some() { TrackState::Tracking { face_id: id } } else { TrackState::NoFace };
        let face = TrackedFace { id, landmarks: FaceLandmarks { points, ..landmarks }, raw, bbox, detection };
        TrackedFrame { state: self.state, face: Some(face), detector_ran }
    }

    fn lose(&mut self) -> TrackedFrame {
        self.state = TrackState::NoFace;
        self.roi = None;
        if let Some(s) = &mut self.smoother {
            s.reset();
        }
        TrackedFrame { state: self.state, face: None, detector_ran: true }
    }
}
