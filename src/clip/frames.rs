//! A personalization clip turned into training frames: face crops with their landmarks, the source frame and the
//! held-out frames.
//!
//! Owns frame sampling (at most `max_frames`, evenly over the clip), the per-clip crop (official policy, fixed from
//! the first frame with a face, as the official data preparation does), the choice of the source frame and of the
//! held-out frames. Receives a `FrameSource` and the face models; emits `ClipFrames`.
//!
//! Source frame: the one that looks most like a neutral portrait — eyes open, mouth closed, face frontal — scored as
//! eye openness (lid gap / eye width, both eyes) minus mouth openness (lip gap / mouth width) minus yaw (how far the
//! nose tip sits from the midpoint of the outer eye corners, per inter-ocular distance). Held-out frames: every
//! `HOLDOUT_EVERY`-th of the others (at least one), so they spread over the clip and are never trained on.

use image::RgbImage;

use crate::capture::{CaptureError, FrameSource};
use crate::face::driver::DriverCrop;
use crate::face::facecrop::CropPolicy;
use crate::face::{FaceError, FaceMesher};

/// Frames used by default (the paper's 48).
pub const DEFAULT_MAX_FRAMES: usize = 48;
/// Fewest usable frames (one source, one held out, one to train on).
pub const MIN_FRAMES: usize = 3;
/// One held-out frame per this many frames.
const HOLDOUT_EVERY: usize = 5;
/// MediaPipe indices: upper/lower lid and corners of each eye, inner lips and mouth corners, nose tip.
const LEFT_EYE: [usize; 4] = [386, 374, 362, 263];
const RIGHT_EYE: [usize; 4] = [159, 145, 33, 133];
const MOUTH: [usize; 4] = [13, 14, 61, 291];
const NOSE_TIP: usize = 1;

/// Why a clip could not be prepared for personalization.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The clip could not be read or decoded.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// Face detection or landmarking failed on a frame.
    #[error(transparent)]
    Face(#[from] FaceError),
    /// Fewer than [`MIN_FRAMES`] sampled frames show a face that can be cropped.
    #[error("the clip has {found} frames with a face; personalization needs at least {MIN_FRAMES}")]
    TooFewFaces {
        /// Sampled frames in which a face was found and cropped.
        found: usize,
    },
}

/// One usable frame: its crop and landmarks in crop pixels (z scaled like x).
#[derive(Clone, Debug)]
pub struct CropFrame {
    /// The face crop, square, at the crop policy's output size.
    pub crop: RgbImage,
    /// Dense face-mesh landmarks `[x, y, z]` in crop pixels.
    pub landmarks: Vec<[f32; 3]>,
    /// Index in the clip.
    pub index: u64,
}

/// What a clip yields for personalization.
#[derive(Debug)]
pub struct ClipFrames {
    /// The sampled frames that show a face, in clip order.
    pub frames: Vec<CropFrame>,
    /// Index into `frames` of the source frame.
    pub source: usize,
    /// Indices into `frames` of the held-out frames.
    pub holdout: Vec<usize>,
    /// The source frame's full picture and landmarks on it (for the identity embedding).
    pub source_picture: RgbImage,
    /// Landmarks `[x, y, z]` of the source frame in `source_picture` pixels.
    pub source_picture_landmarks: Vec<[f32; 3]>,
    /// Frames read from the clip, sampled or not.
    pub frames_read: usize,
    /// Sampled frames skipped for having no face (or one that could not be cropped).
    pub frames_without_face: usize,
}

impl ClipFrames {
    /// Indices of the frames to train on (all but the held-out ones; the source frame trains too, as reconstruction).
    pub fn training(&self) -> Vec<usize> {
        (0..self.frames.len()).filter(|i| !self.holdout.contains(i)).collect()
    }
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

/// How much `landmarks` look like a neutral, frontal portrait (higher is better).
pub fn neutral_score(landmarks: &[[f32; 3]]) -> f32 {
    let p = |i: usize| landmarks.get(i).copied().unwrap_or([0.0; 3]);
    let openness = |[top, bottom, a, b]: [usize; 4]| dist(p(top), p(bottom)) / dist(p(a), p(b)).max(1e-3);
    let eyes = (openness(LEFT_EYE) + openness(RIGHT_EYE)) / 2.0;
    let mouth = openness(MOUTH);
    let (l, r) = (p(LEFT_EYE[3]), p(RIGHT_EYE[2]));
    let mid = [(l[0] + r[0]) / 2.0, (l[1] + r[1]) / 2.0, 0.0];
    let yaw = (p(NOSE_TIP)[0] - mid[0]).abs() / dist(l, r).max(1e-3);
    eyes - mouth - yaw
}

/// Reads up to `max_frames` frames evenly spread over `source` (`total_frames` when known) and prepares them.
pub fn prepare_clip(
    mesher: &mut FaceMesher,
    source: &mut dyn FrameSource,
    total_frames: Option<u64>,
    max_frames: usize,
    progress: impl FnMut(usize),
) -> Result<ClipFrames, ClipError> {
    let size = CropPolicy::official().out_size;
    prepare_clip_at(mesher, source, total_frames, max_frames, size, progress)
}

/// `prepare_clip` with crops of `crop_size`² (the official crop box, resampled to another size: 512² ground truth
/// for temporal SR).
pub fn prepare_clip_at(
    mesher: &mut FaceMesher,
    source: &mut dyn FrameSource,
    total_frames: Option<u64>,
    max_frames: usize,
    crop_size: u32,
    mut progress: impl FnMut(usize),
) -> Result<ClipFrames, ClipError> {
    let mut driver = DriverCrop::new(CropPolicy { out_size: crop_size, ..CropPolicy::official() });
    let stride = total_frames.map_or(1, |n| (n as usize).div_ceil(max_frames.max(1)).max(1));
    let (mut frames, mut pictures) = (Vec::new(), Vec::new());
    let (mut read, mut without_face) = (0usize, 0usize);
    while let Some(frame) = source.next_frame()? {
        let position = read;
        read += 1;
        if position % stride != 0 {
            continue;
        }
        if frames.len() >= max_frames {
            break;
        }
        progress(read);
        let faces = mesher.detect_landmarks(&frame.pixels, true)?;
        let Some(face) = faces.into_iter().next() else {
            without_face += 1;
            continue;
        };
        let (w, h) = frame.pixels.dimensions();
        let Some(crop_box) = driver.place(&face.landmarks.points, w, h) else {
            without_face += 1;
            continue;
        };
        let mut crop = RgbImage::new(driver.out_size(), driver.out_size());
        crop_box.crop_into(&frame.pixels, &mut crop);
        let landmarks = crop_box.landmarks_to_crop(&face.landmarks.points, driver.out_size());
        frames.push(CropFrame { crop, landmarks, index: frame.index });
        pictures.push((frame.pixels, face.landmarks.points));
    }
    if frames.len() < MIN_FRAMES {
        return Err(ClipError::TooFewFaces { found: frames.len() });
    }
    let source = (0..frames.len())
        .max_by(|&a, &b| neutral_score(&frames[a].landmarks).total_cmp(&neutral_score(&frames[b].landmarks)))
        .unwrap_or(0);
    let others: Vec<usize> = (0..frames.len()).filter(|&i| i != source).collect();
    let holdout: Vec<usize> = others.iter().copied().skip(HOLDOUT_EVERY / 2).step_by(HOLDOUT_EVERY).collect();
    let holdout = if holdout.is_empty() { vec![others[others.len() / 2]] } else { holdout };
    let (source_picture, source_picture_landmarks) = pictures.swap_remove(source);
    Ok(ClipFrames {
        frames,
        source,
        holdout,
        source_picture,
        source_picture_landmarks,
        frames_read: read,
        frames_without_face: without_face,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schematic face: eyes with a given lid gap, a mouth with a given lip gap, the nose tip shifted by `yaw`.
    fn face(eye_gap: f32, mouth_gap: f32, yaw: f32) -> Vec<[f32; 3]> {
        let mut p = vec![[0.0f32; 3]; 478];
        for (eye, cx) in [(LEFT_EYE, 140.0), (RIGHT_EYE, 100.0)] {
            p[eye[0]] = [cx, 100.0 - eye_gap / 2.0, 0.0];
            p[eye[1]] = [cx, 100.0 + eye_gap / 2.0, 0.0];
            p[eye[2]] = [cx - 10.0, 100.0, 0.0];
            p[eye[3]] = [cx + 10.0, 100.0, 0.0];
        }
        // Outer corners: 263 (left eye, image right) and 33 (right eye, image left).
        p[263] = [150.0, 100.0, 0.0];
        p[33] = [90.0, 100.0, 0.0];
        p[MOUTH[0]] = [120.0, 160.0 - mouth_gap / 2.0, 0.0];
        p[MOUTH[1]] = [120.0, 160.0 + mouth_gap / 2.0, 0.0];
        p[MOUTH[2]] = [100.0, 160.0, 0.0];
        p[MOUTH[3]] = [140.0, 160.0, 0.0];
        p[NOSE_TIP] = [120.0 + yaw, 130.0, 0.0];
        p
    }

    #[test]
    fn the_neutral_score_prefers_open_eyes_closed_mouth_and_a_frontal_face() {
        let neutral = neutral_score(&face(8.0, 1.0, 0.0));
        assert!(neutral > neutral_score(&face(2.0, 1.0, 0.0)), "blinking");
        assert!(neutral > neutral_score(&face(8.0, 15.0, 0.0)), "talking");
        assert!(neutral > neutral_score(&face(8.0, 1.0, 20.0)), "turned");
    }
}
