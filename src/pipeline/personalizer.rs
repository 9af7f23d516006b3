//! Personalization from the window: the panel's "personalize from a clip" run on its own thread.
//!
//! Owns the worker thread, its cancel flag and its result channel. Receives the base model (the neural engine's
//! weights), the clip, the identity to personalize and the models it needs; emits `Progress` to the panel through
//! every phase (reading the clip, scoring the held-out frames, each training step, scoring again) and, when done, the
//! finished identity for the control thread to store (which replaces the selected identity atomically). Cancelling
//! stops at the next frame or step in any phase and stores nothing, so the identity stays as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{Receiver, TryRecvError, bounded};

use super::channel::LatestSender;
use super::messages::Progress;
use crate::clip::frames::DEFAULT_MAX_FRAMES;
use crate::model::generator::GeneratorModel;
use crate::personalize::from_clip::{ClipProgress, ClipRequest, personalize_clip};
use crate::personalize::job::{PersonalizeError, PersonalizeProgress, PersonalizeReport};
use crate::personalize::store::NewIdentity;
use crate::train::reptile::LoopError;

/// What the window's personalization fine-tunes and with what.
#[derive(Clone, Debug)]
pub struct PersonalizeBase {
    /// The base generator every personalization starts from (shared with the neural engine, never modified).
    pub model: Arc<GeneratorModel>,
    /// SHA-256 of the base weights file.
    pub weights_sha256: String,
    /// The face detector and landmark models.
    pub models_dir: PathBuf,
    /// The identity-embedding network.
    pub id_model: PathBuf,
    /// VGG-19 weights for the perceptual loss, when installed.
    pub vgg: Option<PathBuf>,
    /// Adam steps per personalization (the paper's K).
    pub steps: usize,
}

/// A finished personalization: the identity it personalized, the new contents and the report.
pub struct Finished {
    /// The identity that was personalized (to be replaced).
    pub id: String,
    /// Its new contents.
    pub identity: NewIdentity,
    /// What the run did.
    pub report: PersonalizeReport,
}

/// A personalization in progress.
pub struct Running {
    /// The identity being personalized.
    pub id: String,
    cancel: Arc<AtomicBool>,
    done: Receiver<Result<Finished, PersonalizeEnd>>,
    join: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts personalizing identity `id` (named `name`) from `clip`; progress goes to `progress`.
    pub fn start(
        base: PersonalizeBase,
        id: String,
        name: String,
        clip: PathBuf,
        progress: LatestSender<Option<Progress>>,
    ) -> std::io::Result<Self> {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, done) = bounded(1);
        let (worker_cancel, worker_id) = (Arc::clone(&cancel), id.clone());
        let join = std::thread::Builder::new().name("personalize".into()).spawn(move || {
            let result = run(&base, worker_id, name, &clip, &worker_cancel, &progress);
            let _ = tx.send(result);
        })?;
        Ok(Self { id, cancel, done, join: Some(join) })
    }

    /// Asks the worker to stop at its next frame or step; `poll` then reports `PersonalizeEnd::Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// The result once the worker has finished (`None` while it runs).
    pub fn poll(&mut self) -> Option<Result<Finished, PersonalizeEnd>> {
        match self.done.try_recv() {
            Ok(result) => {
                if let Some(join) = self.join.take() {
                    let _ = join.join();
                }
                Some(result)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(PersonalizeEnd::WorkerStopped)),
        }
    }

    /// Cancels and waits for the worker (shutdown).
    pub fn stop(mut self) {
        self.cancel();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// How a personalization ended without an identity (the text is the panel's notice).
#[derive(Debug, thiserror::Error)]
pub enum PersonalizeEnd {
    /// The user cancelled.
    #[error("personalization cancelled; the identity is unchanged")]
    Cancelled,
    /// Something failed.
    #[error("personalization failed: {0}")]
    Failed(PersonalizeError),
    /// The worker thread ended without a result (it panicked).
    #[error("the personalization thread stopped unexpectedly")]
    WorkerStopped,
}

fn run(
    base: &PersonalizeBase,
    id: String,
    name: String,
    clip_path: &std::path::Path,
    cancel: &AtomicBool,
    progress: &LatestSender<Option<Progress>>,
) -> Result<Finished, PersonalizeEnd> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let request = ClipRequest {
        clip: clip_path.to_path_buf(),
        name,
        max_frames: DEFAULT_MAX_FRAMES,
        steps: base.steps,
        models_dir: base.models_dir.clone(),
        id_model: base.id_model.clone(),
        vgg: base.vgg.clone(),
        device: crate::runtime::Device::Auto,
        base_sha256: Some(base.weights_sha256.clone()),
    };
    // The ETA counts training time only: from the end of the first held-out scoring.
    let mut training_since = Instant::now();
    let (identity, report) = personalize_clip(&base.model, &request, cancel, |p| {
        let shown = match p {
            ClipProgress::Reading { frames, .. } => Progress::ReadingClip { frames: count(*frames) },
            ClipProgress::ClipReady(_) => return,
            ClipProgress::Job(PersonalizeProgress::Scoring { after, done, total }) => {
                if !after && done == total {
                    training_since = Instant::now();
                }
                Progress::Scoring { after: *after, done: count(*done), total: count(*total) }
            }
            ClipProgress::Job(PersonalizeProgress::Step(step)) => {
                let (done, total) = (count(step.step), count(step.total));
                let per_step_s = training_since.elapsed().as_secs_f32() / done.max(1) as f32;
                let eta_s = Some(per_step_s * total.saturating_sub(done) as f32);
                Progress::Training { step: done, total, loss: step.loss.total, eta_s }
            }
        };
        progress.send(Some(shown)).ok();
    })
    .map_err(|e| match e {
        PersonalizeError::Loop(LoopError::Cancelled(_)) => PersonalizeEnd::Cancelled,
        other => PersonalizeEnd::Failed(other),
    })?;
    Ok(Finished { id, identity, report })
}
