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
use crate::face::driver::{DriverCrop, DriverTracker};
use crate::face::motion::{MotionMode, MotionTransfer};
use crate::face::{FaceError, FaceMesher, TrackerOptions};
use crate::model::inputs::{planar_unit_to_image, write_planar_unit};
use crate::model::preview::PreviewError;
use crate::pipeline::engine::{EngineError, EngineIdentity, LiveEngine};
use crate::record::{PushOutcome, RecordError, Recorder, RecorderConfig, RecordingSummary};

/// How long to wait for the encoder when its queue is full (offline rendering never drops frames).
const ENCODER_BACKOFF: std::time::Duration = std::time::Duration::from_millis(2);

/// Why an offline render failed. The output file is only as complete as the recorder left it (see `RecordError`).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The portrait cannot be driven: no face in it, non-finite landmarks, or landmarks motion transfer rejects.
    #[error("portrait {path}: {reason}")]
    Portrait {
        /// The portrait file (the output file when motion transfer rejects the identity's landmarks).
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The face detector or landmark models failed.
    #[error(transparent)]
    Face(#[from] FaceError),
    /// A driving frame could not be read.
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    /// The preview mesh warp failed.
    #[error(transparent)]
    Preview(#[from] PreviewError),
    /// The engine rejected the identity or failed on a frame.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The output file could not be started or finished.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The driving input ended before its first frame.
    #[error("the driving input has no frames")]
    NoFrames,
    /// No driving frame had a face, so nothing moved.
    #[error("no face was found in any driving frame")]
    NoDrivingFace,
    /// The recorder stopped taking frames mid-render (its state, in words).
    #[error("the recorder stopped: {0}")]
    RecorderStopped(String),
    /// Temporal super-resolution got or returned tensors of the wrong shape.
    #[error("temporal super-resolution: {0}")]
    Tsr(String),
    /// The temporal SR network failed to run.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
}

/// What the render produced.
#[derive(Debug)]
pub struct RenderSummary {
    /// Output frames written: one per driving frame.
    pub frames: u64,
    /// Driving frames without a detected face (their output holds the last pose).
    pub frames_without_face: u64,
    /// What the recorder wrote.
    pub recording: RecordingSummary,
}

/// The portrait prepared for driving: its 256² crop and landmarks in crop pixels (z scaled like x).
pub struct PreparedPortrait {
    /// The 256² crop.
    pub crop: RgbImage,
    /// Landmarks in crop pixels (z scaled like x).
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
    let mut driver = DriverCrop::official();
    let faces = mesher.detect_landmarks(portrait, true)?;
    let face =
        faces.first().ok_or_else(|| RenderError::Portrait { path: path.into(), reason: "no face found".into() })?;
    if faces.len() > 1 {
        tracing::warn!(faces = faces.len(), "the portrait has several faces; using the largest");
    }
    let crop_box = driver
        .place(&face.landmarks.points, portrait.width(), portrait.height())
        .ok_or_else(|| RenderError::Portrait { path: path.into(), reason: "landmarks are not finite".into() })?;
    let side = driver.out_size();
    let mut crop = RgbImage::new(side, side);
    crop_box.crop_into(portrait, &mut crop);
    // Landmarks of the crop itself (the network saw them at this scale), falling back to the mapped ones.
    let landmarks = match mesher.detect_landmarks(&crop, true)?.first() {
        Some(f) => f.landmarks.points.clone(),
        None => crop_box.landmarks_to_crop(&face.landmarks.points, side),
    };
    Ok(PreparedPortrait { crop, landmarks, frame_landmarks: face.landmarks.points.clone() })
}

/// Frames per temporal-SR call offline, as the official test script.
pub const TSR_CHUNK_FRAMES: usize = 16;

/// Settings of one offline render.
pub struct RenderJob<'a> {
    /// How driving motion is applied to the portrait.
    pub motion: MotionMode,
    /// The video file to write.
    pub output: &'a Path,
    /// Encoder settings of the output.
    pub recorder: RecorderConfig,
    /// Temporal super-resolution of the generated frames (256² → 512²) in chunks of `TSR_CHUNK_FRAMES`.
    pub tsr: Option<&'a mut crate::tsr::runner::TsrRunner>,
}

/// Offline temporal SR: buffers generated frames and upsamples them a chunk at a time (each chunk is its own clip,
/// with the official replicate padding at its ends), handing the results to the recorder in order.
struct ChunkedTsr<'a> {
    engine: &'a mut crate::tsr::runner::TsrRunner,
    pending: Vec<Frame>,
}

impl ChunkedTsr<'_> {
    fn push(&mut self, frame: Frame, recorder: &Recorder) -> Result<(), RenderError> {
        self.pending.push(frame);
        if self.pending.len() >= TSR_CHUNK_FRAMES { self.flush(recorder) } else { Ok(()) }
    }

    fn flush(&mut self, recorder: &Recorder) -> Result<(), RenderError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let (w, h) = self.pending[0].pixels.dimensions();
        let plane = (w * h) as usize;
        let mut data = vec![0.0f32; self.pending.len() * 3 * plane];
        for (frame, dst) in self.pending.iter().zip(data.chunks_exact_mut(3 * plane)) {
            write_planar_unit(&frame.pixels, dst);
        }
        let batch = crate::tensor::HostTensor::new(vec![self.pending.len(), 3, h as usize, w as usize], data)
            .map_err(|e| RenderError::Tsr(e.to_string()))?;
        let out = self
            .engine
            .run_frames(&batch)?
            .remove(crate::tsr::net::OUTPUT)
            .ok_or_else(|| RenderError::Tsr("the network returned no output".into()))?;
        let &[n, 3, oh, ow] = out.shape() else {
            return Err(RenderError::Tsr(format!("unexpected output shape {:?}", out.shape())));
        };
        for (frame, data) in self.pending.drain(..).zip(out.data().chunks_exact(3 * oh * ow)).take(n) {
            push_blocking(recorder, Frame { pixels: planar_unit_to_image(data, ow, oh), ..frame })?;
        }
        Ok(())
    }
}

/// Drives `identity` with every frame of `driving` through `engine`, writing the result; `progress(frames_done)`
/// after each frame.
pub fn render_clip(
    mesher: &mut FaceMesher,
    identity: &EngineIdentity,
    engine: &mut dyn LiveEngine,
    driving: &mut dyn FrameSource,
    job: RenderJob<'_>,
    mut progress: impl FnMut(u64),
) -> Result<RenderSummary, RenderError> {
    let mut driver = DriverTracker::new(TrackerOptions { refine: true, ..TrackerOptions::default() });
    let mut tsr = job.tsr.map(|engine| ChunkedTsr { engine, pending: Vec::with_capacity(TSR_CHUNK_FRAMES) });
    let size = driver.out_size();
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
    let mut target3 = portrait.landmarks.clone();
    let mut driving_crop_pts = vec![[0.0f32; 3]; portrait.landmarks.len()];
    let mut out = RgbImage::new(size, size);
    let recorder = Recorder::start(job.output, job.recorder)?;
    let (mut frames, mut without_face) = (0u64, 0u64);
    let mut any_face = false;
    let result = (|| -> Result<(), RenderError> {
        while let Some(frame) = driving.next_frame()? {
            let driven = driver.track(mesher, &frame.pixels, frame.timestamp_us as f64 * 1e-6)?;
            match (driven.tracked.face, driven.crop) {
                (Some(face), Some(crop_box)) if face.landmarks.points.len() == driving_crop_pts.len() => {
                    crop_box.landmarks_into_crop(&face.landmarks.points, size, &mut driving_crop_pts);
                    motion.transfer(&driving_crop_pts, &mut target3).map_err(motion_err)?;
                    any_face = true;
                }
                _ => without_face += 1,
            }
            engine.drive(&target3, &mut out)?;
            let generated = Frame { pixels: out.clone(), timestamp_us: frame.timestamp_us, index: frame.index };
            match tsr.as_mut() {
                Some(tsr) => tsr.push(generated, &recorder)?,
                None => push_blocking(&recorder, generated)?,
            }
            frames += 1;
            progress(frames);
        }
        if let Some(tsr) = tsr.as_mut() {
            tsr.flush(&recorder)?;
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
