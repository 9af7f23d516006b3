//! Offline rendering: a portrait driven by a video or an image sequence, written to an MP4 — one output frame per
//! driving frame, at the driving frame's timestamp.
//!
//! Owns the per-clip state: the identity, the driver's static crop box (official policy, fixed from the first frame
//! with a face), the tracker and motion transfer. Receives frames from a `FrameSource` and an engine behind the
//! `LiveEngine` trait (preview or neural); emits 256² frames to the recorder and a summary. Every driving frame produces an output: when the
//! driver's face is lost the last target pose is held, so the output's timing always matches the input's.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::capture::{Frame, FrameSource};
use crate::face::facecrop::{CropBox, CropPolicy, FaceBox};
use crate::face::motion::{MotionMode, MotionTransfer};
use crate::face::{FaceError, FaceMesher, FaceTracker, TrackerOptions};
use crate::model::preview::PreviewError;
use crate::pipeline::engine::{EngineError, EngineIdentity, LiveEngine};
use crate::record::{PushOutcome, RecordError, Recorder, RecorderConfig, RecordingSummary};

/// How long to wait for the encoder when its queue is full (offline rendering never drops frames).
const ENCODER_BACKOFF: std::time::Duration = std::time::Duration::from_millis(2);

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("portrait {path}: {reason}")]
    Portrait { path: PathBuf, reason: String },
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error(transparent)]
    Preview(#[from] PreviewError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the driving input has no frames")]
    NoFrames,
    #[error("no face was found in any driving frame")]
    NoDrivingFace,
    #[error("the recorder stopped: {0}")]
    RecorderStopped(String),
}

/// What the render produced.
#[derive(Debug)]
pub struct RenderSummary {
    pub frames: u64,
    /// Driving frames without a detected face (their output holds the last pose).
    pub frames_without_face: u64,
    pub recording: RecordingSummary,
}

/// The portrait prepared for driving: its 256² crop and landmarks in crop pixels (z scaled like x).
pub struct PreparedPortrait {
    pub crop: RgbImage,
    pub landmarks: Vec<[f32; 3]>,
    /// The landmarks on the original picture (for the identity embedding, which aligns its own chip).
    pub frame_landmarks: Vec<[f32; 3]>,
}

/// Crops the portrait with the official policy and finds its landmarks (478, refined).
pub fn prepare_portrait(
    mesher: &mut FaceMesher,
    portrait: &RgbImage,
    path: &Path,
) -> Result<PreparedPortrait, RenderError> {
    let policy = CropPolicy::official();
    let faces = mesher.detect_landmarks(portrait, true)?;
    let face =
        faces.first().ok_or_else(|| RenderError::Portrait { path: path.into(), reason: "no face found".into() })?;
    if faces.len() > 1 {
        tracing::warn!(faces = faces.len(), "the portrait has several faces; using the largest");
    }
    let points: Vec<[f32; 2]> = face.landmarks.points.iter().map(|p| [p[0], p[1]]).collect();
    let face_box = FaceBox::of_points(&points)
        .ok_or_else(|| RenderError::Portrait { path: path.into(), reason: "landmarks are not finite".into() })?;
    let crop_box = CropBox::official(face_box, portrait.width(), portrait.height(), &policy);
    let mut crop = RgbImage::new(policy.out_size, policy.out_size);
    crop_box.crop_into(portrait, &mut crop);
    // Landmarks of the crop itself (the network saw them at this scale), falling back to the mapped ones.
    let scale = policy.out_size as f32 / crop_box.side as f32;
    let landmarks = match mesher.detect_landmarks(&crop, true)?.first() {
        Some(f) => f.landmarks.points.clone(),
        None => face
            .landmarks
            .points
            .iter()
            .map(|p| {
                let q = crop_box.to_crop([p[0], p[1]], policy.out_size);
                [q[0], q[1], p[2] * scale]
            })
            .collect(),
    };
    Ok(PreparedPortrait { crop, landmarks, frame_landmarks: face.landmarks.points.clone() })
}

/// Settings of one offline render.
pub struct RenderJob<'a> {
    pub motion: MotionMode,
    pub output: &'a Path,
    pub recorder: RecorderConfig,
}

/// Drives `identity` with every frame of `driving` through `engine`, writing the result; `progress(frames_done)`
/// after each frame.
pub fn render_clip(
    mesher: &mut FaceMesher,
    identity: &EngineIdentity,
    engine: &mut dyn LiveEngine,
    driving: &mut dyn FrameSource,
    job: &RenderJob<'_>,
    mut progress: impl FnMut(u64),
) -> Result<RenderSummary, RenderError> {
    let policy = CropPolicy::official();
    let size = policy.out_size;
    engine.set_identity(identity)?;
    let portrait = PreparedPortrait {
        crop: identity.portrait.clone(),
        landmarks: identity.landmarks.clone(),
        frame_landmarks: Vec::new(),
    };
    let motion_err = |e: crate::face::motion::MotionError| RenderError::Portrait {
        path: job.output.into(),
        reason: format!("motion transfer: {e}"),
    };
    let mut motion = MotionTransfer::new(&portrait.landmarks, job.motion).map_err(motion_err)?;
    let mut tracker = FaceTracker::new(TrackerOptions { refine: true, ..TrackerOptions::default() });
    let mut driver_box: Option<CropBox> = None;
    let mut target3 = portrait.landmarks.clone();
    let mut driving_crop_pts = vec![[0.0f32; 3]; portrait.landmarks.len()];
    let mut out = RgbImage::new(size, size);
    let recorder = Recorder::start(job.output, job.recorder)?;
    let (mut frames, mut without_face) = (0u64, 0u64);
    let mut any_face = false;
    let result = (|| -> Result<(), RenderError> {
        while let Some(frame) = driving.next_frame()? {
            let tracked = tracker.track(mesher, &frame.pixels, frame.timestamp_us as f64 * 1e-6)?;
            match tracked.face {
                Some(face) if face.landmarks.points.len() == driving_crop_pts.len() => {
                    let pts: Vec<[f32; 2]> = face.landmarks.points.iter().map(|p| [p[0], p[1]]).collect();
                    let crop_box = *driver_box.get_or_insert_with(|| {
                        let b = FaceBox::of_points(&pts).unwrap_or(FaceBox { x: 0.0, y: 0.0, w: 1.0, h: 1.0 });
                        CropBox::official(b, frame.pixels.width(), frame.pixels.height(), &policy)
                    });
                    let z_scale = size as f32 / crop_box.side as f32;
                    for ((d, p), raw) in driving_crop_pts.iter_mut().zip(&pts).zip(&face.landmarks.points) {
                        let q = crop_box.to_crop(*p, size);
                        *d = [q[0], q[1], raw[2] * z_scale];
                    }
                    motion.transfer(&driving_crop_pts, &mut target3).map_err(motion_err)?;
                    any_face = true;
                }
                _ => without_face += 1,
            }
            engine.drive(&target3, &mut out)?;
            push_blocking(
                &recorder,
                Frame { pixels: out.clone(), timestamp_us: frame.timestamp_us, index: frame.index },
            )?;
            frames += 1;
            progress(frames);
        }
        Ok(())
    })();
    let recording = recorder.stop();
    result?;
    let recording = recording?;
    if frames == 0 {
        return Err(RenderError::NoFrames);
    }
    if !any_face {
        return Err(RenderError::NoDrivingFace);
    }
    Ok(RenderSummary { frames, frames_without_face: without_face, recording })
}

/// Offline rendering waits for the encoder instead of dropping.
fn push_blocking(recorder: &Recorder, frame: Frame) -> Result<(), RenderError> {
    loop {
        match recorder.push(frame.clone()) {
            PushOutcome::Queued => return Ok(()),
            PushOutcome::Dropped => std::thread::sleep(ENCODER_BACKOFF),
            PushOutcome::NotRecording => return Err(RenderError::RecorderStopped(format!("{:?}", recorder.state()))),
        }
    }
}
