//! Personalization from a clip file, end to end: the one entry point of `metaportrait personalize` and of the
//! panel's "personalize from a clip".
//!
//! Owns the order of the work and its cancel points: open the clip, read its frames (up to `max_frames`, spread
//! over it), embed the source frame, then the fine-tuning job. Receives the base model, a `ClipRequest` and a cancel
//! flag (honoured between any two frames or steps, the clip's reading included: `LoopError::Cancelled`); emits
//! progress through every phase
//! and the identity to store with its report. It stores nothing itself, so a cancelled or failed run leaves the
//! library as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::job::{PersonalizeError, PersonalizeJob, PersonalizeProgress, PersonalizeReport, personalize};
use super::store::NewIdentity;
use crate::capture::{CaptureError, Frame, FrameSize, FrameSource, IMAGE_DIR_FPS, open_path};
use crate::clip::frames::prepare_clip;
use crate::face::FaceMesher;
use crate::face::embed::IdEmbedder;
use crate::model::generator::GeneratorModel;
use crate::runtime::Device;
use crate::train::adam::AdamConfig;
use crate::train::reptile::LoopError;
use crate::train::vgg::Vgg19;

/// What to personalize from, and with what.
#[derive(Clone, Debug)]
pub struct ClipRequest {
    /// A video, a directory of frames or one image of the person.
    pub clip: PathBuf,
    /// Display name of the identity.
    pub name: String,
    /// Frames taken from the clip, spread evenly over it.
    pub max_frames: usize,
    /// Adam steps (the paper's K).
    pub steps: usize,
    /// The face detector and landmark models.
    pub models_dir: PathBuf,
    /// The identity-embedding network.
    pub id_model: PathBuf,
    /// VGG-19 weights of the perceptual loss; without, training uses the other terms.
    pub vgg: Option<PathBuf>,
    /// Where training runs.
    pub device: Device,
    /// SHA-256 of the base weights file, recorded with the delta.
    pub base_sha256: Option<String>,
}

/// The clip as read: how many frames were used and which ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipSummary {
    /// Frames with a face, used.
    pub frames: usize,
    /// Frames read without a face.
    pub frames_without_face: usize,
    /// Clip index of the source frame.
    pub source_index: u64,
    /// Frames held out for scoring.
    pub heldout: usize,
}

/// Where a personalization from a clip is.
#[derive(Clone, Debug)]
pub enum ClipProgress {
    /// Reading the clip: frames read so far of `total`.
    Reading {
        /// Frames read.
        frames: usize,
        /// Frames in the clip.
        total: u64,
    },
    /// The clip is read.
    ClipReady(ClipSummary),
    /// The fine-tuning job (scoring, steps).
    Job(PersonalizeProgress),
}

/// A frame source that ends early once `cancel` is set, so reading a long clip stops promptly.
struct UntilCancelled<'a> {
    inner: Box<dyn FrameSource>,
    cancel: &'a AtomicBool,
}

impl FrameSource for UntilCancelled<'_> {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.cancel.load(Ordering::Acquire) { Ok(None) } else { self.inner.next_frame() }
    }

    fn frame_rate_hz(&self) -> f64 {
        self.inner.frame_rate_hz()
    }

    fn size(&self) -> FrameSize {
        self.inner.size()
    }
}

fn open_error(path: &Path) -> impl Fn(CaptureError) -> PersonalizeError + '_ {
    move |source| PersonalizeError::Open { path: path.to_path_buf(), source: Box::new(source) }
}

/// Personalizes `base` from the clip of `request`. `progress` sees the clip's reading, its summary, every held-out
/// frame scored and every step; `cancel` ends the run at the next of them with `LoopError::Cancelled`.
pub fn personalize_clip(
    base: &GeneratorModel,
    request: &ClipRequest,
    cancel: &AtomicBool,
    mut progress: impl FnMut(&ClipProgress),
) -> Result<(NewIdentity, PersonalizeReport), PersonalizeError> {
    let vgg = match &request.vgg {
        Some(path) => Some(
            Vgg19::load(path)
                .map_err(|source| PersonalizeError::Vgg { path: path.clone(), source: Box::new(source) })?,
        ),
        None => None,
    };
    let mut embedder = IdEmbedder::new(&request.id_model).map_err(PersonalizeError::Embedder)?;
    let opened = open_path(&request.clip, IMAGE_DIR_FPS).map_err(open_error(&request.clip))?;
    let mut mesher = FaceMesher::from_dir(&request.models_dir)?;
    let total = opened.frames;
    let mut source = UntilCancelled { inner: opened.source, cancel };
    let clip = prepare_clip(&mut mesher, &mut source, Some(total), request.max_frames, |frames| {
        progress(&ClipProgress::Reading { frames, total })
    });
    if cancel.load(Ordering::Acquire) {
        return Err(PersonalizeError::Loop(LoopError::Cancelled(0)));
    }
    let clip =
        clip.map_err(|source| PersonalizeError::Clip { path: request.clip.clone(), source: Box::new(source) })?;
    let id_vector = embedder.embed(&clip.source_picture, &clip.source_picture_landmarks)?;
    progress(&ClipProgress::ClipReady(ClipSummary {
        frames: clip.frames.len(),
        frames_without_face: clip.frames_without_face,
        source_index: clip.frames[clip.source].index,
        heldout: clip.holdout.len(),
    }));
    let device = crate::runtime::burn_device::exec_device(request.device)?;
    let job = PersonalizeJob {
        name: request.name.clone(),
        steps: request.steps,
        adam: AdamConfig::default(),
        vgg: vgg.as_ref(),
        device: &device,
        base_sha256: request.base_sha256.clone(),
        embedder: embedder.tag().to_owned(),
    };
    personalize(base, &clip, id_vector, &job, cancel, |p| progress(&ClipProgress::Job(p.clone())))
}
