//! Face detection with MediaPipe's short-range BlazeFace model on ONNX Runtime.
//!
//! Owns the detector session and its fixed post-processing: letterboxing the frame into a black-bordered 128² square
//! (bilinear, values px/127.5 − 1), the 896 SSD anchors (16×16×2 then 8×8×6), box and keypoint decoding, sigmoid
//! scores (logits clamped to ±100) kept at ≥ 0.5, weighted non-maximum suppression at IoU 0.3, and the map back from
//! the padded square to image pixels. Receives an `RgbImage`; emits `Detection`s in image pixels, highest score first.

use std::path::Path;

use image::RgbImage;

use super::crop::{Border, RANGE_SIGNED, crop_tensor};
use super::geometry::{Point2, Rect, sigmoid_clipped};
use super::roi::Roi;
use super::{FaceError, load_session};
use crate::runtime::ort::{OrtSession, SessionOptions};

/// Side of the detector's square input.
pub const DETECTOR_INPUT_SIZE: usize = 128;
/// Number of SSD anchors (and of rows in each output).
pub const NUM_ANCHORS: usize = 896;
/// Keypoints per detection.
pub const NUM_KEYPOINTS: usize = 6;
/// Values per regressor row: box (dx, dy, w, h) then (x, y) per keypoint.
pub const NUM_COORDS: usize = 4 + 2 * NUM_KEYPOINTS;
/// Keypoint order: subject's right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
pub const KEYPOINT_RIGHT_EYE: usize = 0;
/// Index of the subject's left eye in [`Detection::keypoints`].
pub const KEYPOINT_LEFT_EYE: usize = 1;
/// Default minimum detection score (after the sigmoid).
pub const MIN_SCORE: f32 = 0.5;
/// Logits are clamped to ±this before the sigmoid (`score_clipping_thresh`).
pub const SCORE_CLIP: f32 = 100.0;
/// Weighted NMS merges detections overlapping the best one by more than this IoU.
pub const NMS_IOU_THRESHOLD: f32 = 0.3;
/// Anchor grids: (cells per side, anchors per cell). Strides 8 then 16 (three layers of 2 anchors merged).
const ANCHOR_GRIDS: [(usize, usize); 2] = [(16, 2), (8, 6)];
/// Regressor values are in input pixels: divide by the input size to get normalised offsets.
const COORD_SCALE: f32 = DETECTOR_INPUT_SIZE as f32;
const REGRESSORS_OUTPUT: &str = "regressors";
const SCORES_OUTPUT: &str = "classificators";

/// One detected face.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Detection {
    /// Sigmoid of the classifier logit, in [0, 1].
    pub score: f32,
    /// Axis-aligned face box, in image pixels once returned by [`FaceDetector::detect`].
    pub bbox: Rect,
    /// See `KEYPOINT_*` for the order.
    pub keypoints: [Point2; NUM_KEYPOINTS],
}

impl Detection {
    /// The same detection with every coordinate mapped by `f`.
    fn map(&self, f: impl Fn(Point2) -> Point2) -> Self {
        let top_left = f(Point2::new(self.bbox.x, self.bbox.y));
        let bottom_right = f(Point2::new(self.bbox.x + self.bbox.width, self.bbox.y + self.bbox.height));
        Self {
            score: self.score,
            bbox: Rect::new(top_left.x, top_left.y, bottom_right.x - top_left.x, bottom_right.y - top_left.y),
            keypoints: self.keypoints.map(f),
        }
    }
}

/// Anchor centres in normalised input coordinates, in the model's output order (row-major cells, anchors of one
/// cell adjacent). Anchor width and height are fixed to 1, so only centres matter.
pub fn anchors() -> Vec<Point2> {
    let mut out = Vec::with_capacity(NUM_ANCHORS);
    for (cells, per_cell) in ANCHOR_GRIDS {
        for y in 0..cells {
            for x in 0..cells {
                let centre = Point2::new((x as f32 + 0.5) / cells as f32, (y as f32 + 0.5) / cells as f32);
                out.extend(std::iter::repeat_n(centre, per_cell));
            }
        }
    }
    out
}

/// Decodes raw outputs (`regressors` rows of `NUM_COORDS`, one logit per anchor) into detections with score ≥
/// `min_score`, in normalised coordinates of the detector's square input. Rows beyond the shorter input are ignored.
pub fn decode(regressors: &[f32], logits: &[f32], anchors: &[Point2], min_score: f32) -> Vec<Detection> {
    regressors
        .chunks_exact(NUM_COORDS)
        .zip(logits)
        .zip(anchors)
        .filter_map(|((row, &logit), anchor)| {
            let score = sigmoid_clipped(logit, SCORE_CLIP);
            if score < min_score || score.is_nan() {
                return None;
            }
            let cx = row[0] / COORD_SCALE + anchor.x;
            let cy = row[1] / COORD_SCALE + anchor.y;
            let (w, h) = (row[2] / COORD_SCALE, row[3] / COORD_SCALE);
            let keypoints = std::array::from_fn(|k| {
                Point2::new(row[4 + 2 * k] / COORD_SCALE + anchor.x, row[5 + 2 * k] / COORD_SCALE + anchor.y)
            });
            Some(Detection { score, bbox: Rect::new(cx - w / 2.0, cy - h / 2.0, w, h), keypoints })
        })
        .collect()
}

/// MediaPipe's weighted non-maximum suppression: repeatedly takes the best remaining detection, gathers every
/// remaining detection whose IoU with it exceeds `iou_threshold` (itself included), and emits their score-weighted
/// average box and keypoints with the best score.
pub fn weighted_nms(mut detections: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    let mut remaining = detections.into_iter();
    while let Some(best) = remaining.next() {
        // The best detection always belongs to its own cluster (even a degenerate box, whose IoU with itself is 0).
        let (mut cluster, rest): (Vec<Detection>, Vec<Detection>) =
            remaining.partition(|d| d.bbox.iou(&best.bbox) > iou_threshold);
        cluster.insert(0, best);
        out.push(weighted_average(&cluster, best.score));
        remaining = rest.into_iter();
    }
    out
}

fn weighted_average(cluster: &[Detection], score: f32) -> Detection {
    let total: f32 = cluster.iter().map(|d| d.score).sum();
    let (mut x0, mut y0, mut x1, mut y1) = (0.0, 0.0, 0.0, 0.0);
    let mut keypoints = [Point2::default(); NUM_KEYPOINTS];
    for d in cluster {
        let w = d.score;
        x0 += d.bbox.x * w;
        y0 += d.bbox.y * w;
        x1 += (d.bbox.x + d.bbox.width) * w;
        y1 += (d.bbox.y + d.bbox.height) * w;
        for (acc, k) in keypoints.iter_mut().zip(&d.keypoints) {
            acc.x += k.x * w;
            acc.y += k.y * w;
        }
    }
    let (x0, y0, x1, y1) = (x0 / total, y0 / total, x1 / total, y1 / total);
    Detection {
        score,
        bbox: Rect::new(x0, y0, x1 - x0, y1 - y0),
        keypoints: keypoints.map(|k| Point2::new(k.x / total, k.y / total)),
    }
}

impl Detection {
    /// The landmark ROI MediaPipe builds for this detection (in pixels).
    pub fn roi(&self) -> Roi {
        Roi::from_box_and_eyes(&self.bbox, self.keypoints[KEYPOINT_RIGHT_EYE], self.keypoints[KEYPOINT_LEFT_EYE])
    }
}

/// The centred square of side max(W, H) that the frame is letterboxed into: a ROI whose crop is the detector input.
pub fn letterbox_roi(image_width: u32, image_height: u32) -> Roi {
    let (w, h) = (image_width as f32, image_height as f32);
    Roi { center: Point2::new(w / 2.0, h / 2.0), size: w.max(h), rotation: 0.0 }
}

/// Maps a detection from normalised letterbox coordinates to image pixels.
pub fn unletterbox(detection: &Detection, letterbox: &Roi) -> Detection {
    let origin = Point2::new(letterbox.center.x - letterbox.size / 2.0, letterbox.center.y - letterbox.size / 2.0);
    detection.map(|p| Point2::new(p.x * letterbox.size + origin.x, p.y * letterbox.size + origin.y))
}

/// The BlazeFace short-range detector.
pub struct FaceDetector {
    session: OrtSession,
    input: String,
    anchors: Vec<Point2>,
    min_score: f32,
    calls: u64,
}

impl FaceDetector {
    /// Loads the model file.
    pub fn from_file(path: &Path, options: &SessionOptions) -> Result<Self, FaceError> {
        let session = load_session(path, options)?;
        let input = session.input_names().into_iter().next().ok_or_else(|| FaceError::ModelOutput {
            model: path.display().to_string(),
            reason: "the model has no input".into(),
        })?;
        Ok(Self { session, input, anchors: anchors(), min_score: MIN_SCORE, calls: 0 })
    }

    /// Changes the minimum score (default `MIN_SCORE`).
    pub fn set_min_score(&mut self, min_score: f32) {
        self.min_score = min_score;
    }

    /// How many times the model has run.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Detects faces; coordinates in image pixels, highest score first. An empty image has no faces.
    pub fn detect(&mut self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        if image.width() == 0 || image.height() == 0 {
            return Ok(Vec::new());
        }
        let letterbox = letterbox_roi(image.width(), image.height());
        let input = crop_tensor(image, &letterbox, DETECTOR_INPUT_SIZE, Border::Zero, RANGE_SIGNED);
        self.calls += 1;
        let outputs = self
            .session
            .run(&[(self.input.as_str(), &input)])
            .map_err(|cause| FaceError::Runtime { model: "face detector".into(), cause })?;
        // Prefer the documented names; otherwise tell the two outputs apart by size.
        let by_len = |len: usize| outputs.values().find(|t| t.len() == len);
        let regressors = outputs.get(REGRESSORS_OUTPUT).or_else(|| by_len(NUM_ANCHORS * NUM_COORDS));
        let logits = outputs.get(SCORES_OUTPUT).or_else(|| by_len(NUM_ANCHORS));
        let (Some(regressors), Some(logits)) = (regressors, logits) else {
            return Err(FaceError::ModelOutput {
                model: "face detector".into(),
                reason: format!(
                    "expected [1,{NUM_ANCHORS},{NUM_COORDS}] and [1,{NUM_ANCHORS},1] outputs, got {outputs:?}"
                ),
            });
        };
        if regressors.len() != NUM_ANCHORS * NUM_COORDS || logits.len() != NUM_ANCHORS {
            return Err(FaceError::ModelOutput {
                model: "face detector".into(),
                reason: format!(
                    "output sizes {} and {} do not match {NUM_ANCHORS} anchors",
                    regressors.len(),
                    logits.len()
                ),
            });
        }
        let raw = decode(regressors.data(), logits.data(), &self.anchors, self.min_score);
        Ok(weighted_nms(raw, NMS_IOU_THRESHOLD).iter().map(|d| unletterbox(d, &letterbox)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout() {
        let a = anchors();
        assert_eq!(a.len(), NUM_ANCHORS);
        assert_eq!(a[0], Point2::new(0.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], Point2::new(1.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[511], Point2::new(15.5 / 16.0, 15.5 / 16.0));
        assert_eq!(a[512], Point2::new(0.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[517], a[512]);
        assert_eq!(a[518], Point2::new(1.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[895], Point2::new(7.5 / 8.0, 7.5 / 8.0));
    }

    fn row(dx: f32, dy: f32, w: f32, h: f32) -> [f32; NUM_COORDS] {
        let mut r = [0.0; NUM_COORDS];
        r[..4].copy_from_slice(&[dx, dy, w, h]);
        for k in 0..NUM_KEYPOINTS {
            r[4 + 2 * k] = dx + k as f32;
            r[5 + 2 * k] = dy - k as f32;
        }
        r
    }

    #[test]
    fn decoding_offsets_anchor_centres() {
        let anchors = [Point2::new(0.25, 0.75), Point2::new(0.5, 0.5)];
        let regressors: Vec<f32> = [row(12.8, -6.4, 32.0, 64.0), row(0.0, 0.0, 10.0, 10.0)].concat();
        let logits = [2.0, -3.0];
        let d = decode(&regressors, &logits, &anchors, MIN_SCORE);
        assert_eq!(d.len(), 1, "the second anchor scores below 0.5");
        let d = d[0];
        assert!((d.score - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6);
        // Centre (0.35, 0.7), size (0.25, 0.5).
        assert!((d.bbox.x - 0.225).abs() < 1e-6 && (d.bbox.y - 0.45).abs() < 1e-6);
        assert!((d.bbox.width - 0.25).abs() < 1e-6 && (d.bbox.height - 0.5).abs() < 1e-6);
        assert!((d.keypoints[2].x - (0.35 + 2.0 / 128.0)).abs() < 1e-6);
        assert!((d.keypoints[2].y - (0.7 - 2.0 / 128.0)).abs() < 1e-6);
    }

    #[test]
    fn huge_logits_do_not_overflow() {
        let anchors = [Point2::new(0.5, 0.5)];
        let d = decode(&row(0.0, 0.0, 1.0, 1.0), &[1e30], &anchors, MIN_SCORE);
        assert_eq!(d.len(), 1);
        assert!(d[0].score.is_finite());
        assert!(decode(&row(0.0, 0.0, 1.0, 1.0), &[f32::NAN], &anchors, MIN_SCORE).is_empty());
    }

    fn det(score: f32, x: f32, y: f32, size: f32) -> Detection {
        Detection { score, bbox: Rect::new(x, y, size, size), keypoints: [Point2::new(x, y); NUM_KEYPOINTS] }
    }

    #[test]
    fn weighted_nms_averages_overlapping_boxes() {
        let dets = vec![det(0.6, 0.1, 0.1, 0.2), det(0.9, 0.12, 0.1, 0.2), det(0.8, 0.7, 0.7, 0.1)];
        let out = weighted_nms(dets, NMS_IOU_THRESHOLD);
        assert_eq!(out.len(), 2);
        // Best score is kept; box is the score-weighted mean of the first two.
        assert_eq!(out[0].score, 0.9);
        let x = (0.6 * 0.1 + 0.9 * 0.12) / 1.5;
        assert!((out[0].bbox.x - x).abs() < 1e-6 && (out[0].keypoints[0].x - x).abs() < 1e-6);
        assert!((out[0].bbox.width - 0.2).abs() < 1e-6);
        assert_eq!(out[1].score, 0.8);
        assert!((out[1].bbox.width - 0.1).abs() < 1e-6 && (out[1].bbox.x - 0.7).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_boxes_at_the_threshold_apart() {
        // IoU exactly 1/3 > 0.3: merged. IoU 1/7 < 0.3: separate.
        let a = det(0.9, 0.0, 0.0, 0.2);
        let merged = weighted_nms(vec![a, det(0.8, 0.1, 0.0, 0.2)], NMS_IOU_THRESHOLD);
        assert_eq!(merged.len(), 1);
        let separate = weighted_nms(vec![a, det(0.8, 0.1, 0.1, 0.2)], NMS_IOU_THRESHOLD);
        assert_eq!(separate.len(), 2);
        let degenerate = weighted_nms(vec![det(0.9, 0.0, 0.0, 0.0)], NMS_IOU_THRESHOLD);
        assert_eq!(degenerate.len(), 1);
    }

    #[test]
    fn letterbox_round_trip() {
        // A 384×512 portrait sits in a 512² square with 64-px bars left and right.
        let lb = letterbox_roi(384, 512);
        assert_eq!(lb.size, 512.0);
        let d = unletterbox(&det(0.9, 0.125, 0.5, 0.25), &lb);
        assert!((d.bbox.x - 0.0).abs() < 1e-4 && (d.bbox.y - 256.0).abs() < 1e-4);
        assert!((d.bbox.width - 128.0).abs() < 1e-4 && (d.keypoints[0].x).abs() < 1e-4);
    }
}
