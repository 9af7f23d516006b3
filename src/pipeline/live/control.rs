//! The live app's control thread: answers the window's commands, owns the identity library as the app uses it,
//! the panel's personalization and the recording's lifecycle, and publishes stats.
//!
//! Owns `Control`. Receives `UiCommand`s from the window (bounded) and a stats tick; emits `EngineControl` and
//! `FaceControl` to the stages (dropped with a warning when their queues are full), identity snapshots, progress and
//! `Stats` to the window (newest wins), and user-facing notices (kept in the stats for `NOTICE_DURATION`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use image::RgbImage;

use super::engine_stage::{EngineControl, Generated};
use super::face_stage::{DrivingPose, FaceControl};
use super::metrics::{Metrics, lock};
use super::recording::RecordingSlot;
use crate::capture::CaptureStatus;
use crate::face::FaceMesher;
use crate::personalize::store::{IdentityStore, NewIdentity};
use crate::pipeline::channel::LatestSender;
use crate::pipeline::engine::{EngineIdentity, NEURAL_WEIGHTS_HINT};
use crate::pipeline::messages::{IdentityEntry, OutputFrame, Progress, StageTime, Stats, Thumbnail, UiCommand};
use crate::pipeline::render::prepare_portrait;
use crate::record::RecorderConfig;
use crate::tensor::HostTensor;

/// How often stats go to the window.
pub(super) const STATS_INTERVAL: Duration = Duration::from_millis(250);
/// How long a message stays in the panel.
const NOTICE_DURATION: Duration = Duration::from_secs(15);
const THUMBNAIL_SIDE_PX: u32 = 64;
/// Display name of the identity made from the bundled portrait on first run.
const DEFAULT_IDENTITY_NAME: &str = "Astronaut";

/// Why a portrait could not be added to the library (the panel shows the message).
#[derive(Debug, thiserror::Error)]
pub enum AddPortraitError {
    /// The file is not a readable image.
    #[error("cannot add portrait: {0}")]
    Image(#[from] crate::face::FaceError),
    /// No usable face in it.
    #[error("cannot add portrait: {0}")]
    Prepare(#[from] crate::pipeline::render::RenderError),
    /// The identity embedding failed.
    #[error("cannot add portrait: identity embedding: {0}")]
    Embedding(crate::face::FaceError),
    /// The landmarks do not form a tensor.
    #[error("cannot add portrait: {0}")]
    Landmarks(#[from] crate::tensor::ShapeMismatch),
    /// The library could not store it.
    #[error("cannot add portrait: {0}")]
    Store(#[from] crate::personalize::store::IdentityError),
}

/// The control thread's state: answers the window's commands, owns the identity library and the recorder's
/// lifecycle, and publishes stats.
pub(super) struct Control {
    pub(super) store: IdentityStore,
    pub(super) personalize_base: Option<crate::pipeline::personalizer::PersonalizeBase>,
    pub(super) personalizing: Option<crate::pipeline::personalizer::Running>,
    /// The identity the engine shows, to reload it when it is personalized.
    pub(super) selected: Option<String>,
    pub(super) mesher: FaceMesher,
    /// The identity-embedding network, when installed (portraits get an embedding for the neural engine).
    pub(super) embedder: Option<crate::face::embed::IdEmbedder>,
    pub(super) home: PathBuf,
    pub(super) recorder_config: RecorderConfig,
    pub(super) recording: RecordingSlot,
    pub(super) metrics: Metrics,
    pub(super) engine_tx: Sender<EngineControl>,
    pub(super) face_tx: Sender<FaceControl>,
    pub(super) identities_tx: LatestSender<Vec<IdentityEntry>>,
    pub(super) progress_tx: LatestSender<Option<Progress>>,
    pub(super) stats_tx: LatestSender<Stats>,
    pub(super) source_name: String,
    pub(super) engine_name: String,
    pub(super) engine_device: String,
    pub(super) notice: Option<(String, Instant)>,
    /// Sending halves kept only to read their drop counters.
    pub(super) pose_drops: LatestSender<DrivingPose>,
    pub(super) output_drops: LatestSender<OutputFrame>,
    pub(super) generated_drops: LatestSender<Generated>,
    /// Start of the current fps window and the output count then.
    pub(super) stats_window: (Instant, u64),
}

impl Control {
    pub(super) fn run(mut self, commands: Receiver<UiCommand>, stop: Arc<AtomicBool>) {
        let ticker = channel::tick(STATS_INTERVAL);
        loop {
            crossbeam::select! {
                recv(commands) -> command => match command {
                    Ok(UiCommand::Quit) | Err(_) => break,
                    Ok(command) => self.handle(command),
                },
                recv(ticker) -> _ => {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    self.check_recorder();
                    self.check_personalize();
                    self.publish_stats();
                }
            }
        }
        self.stop_recording();
        if let Some(running) = self.personalizing.take() {
            running.stop();
        }
        stop.store(true, Ordering::Release);
        tracing::info!("live: pipeline stopping");
    }

    fn notify(&mut self, message: impl Into<String>) {
        let message = message.into();
        tracing::info!("{message}");
        self.notice = Some((message, Instant::now()));
    }

    fn handle(&mut self, command: UiCommand) {
        tracing::debug!(?command, "live: command");
        match command {
            UiCommand::SelectIdentity(id) => self.select(&id),
            UiCommand::AddPortrait(path) => match self.add_portrait(&path, None) {
                Ok(id) => {
                    self.notify(format!("added identity `{id}` from {}", path.display()));
                    self.refresh_identities();
                }
                Err(error) => self.notify(error.to_string()),
            },
            UiCommand::RenameIdentity { id, name } => {
                if let Err(error) = self.store.rename(&id, &name) {
                    self.notify(format!("rename failed: {error}"));
                }
                self.refresh_identities();
            }
            UiCommand::DeleteIdentity(id) => {
                match self.store.remove(&id) {
                    Ok(()) if self.selected.as_deref() == Some(id.as_str()) => {
                        // Its frames must stop too, not only its entry in the list.
                        self.selected = None;
                        self.to_engine(EngineControl::ClearIdentity);
                        self.notify(format!("deleted identity `{id}`; select another to drive"));
                    }
                    Ok(()) => self.notify(format!("deleted identity `{id}`")),
                    Err(error) => self.notify(format!("delete failed: {error}")),
                }
                self.refresh_identities();
            }
            UiCommand::PersonalizeFromClip { id, clip } => self.start_personalize(id, clip),
            UiCommand::CancelPersonalize => {
                if let Some(running) = &self.personalizing {
                    running.cancel();
                }
            }
            UiCommand::SetMotionMode(mode) => self.to_engine(EngineControl::MotionMode(mode)),
            UiCommand::Recalibrate => {
                self.to_face(FaceControl::Recalibrate);
                self.to_engine(EngineControl::Recalibrate);
            }
            UiCommand::SetSmoothing(s) => self.to_face(FaceControl::SetSmoothing(s)),
            UiCommand::SetTsr(on) => self.to_engine(EngineControl::Tsr(on)),
            UiCommand::StartRecording => self.start_recording(),
            UiCommand::StopRecording => self.stop_recording(),
            UiCommand::Quit => {}
        }
    }

    fn start_personalize(&mut self, id: String, clip: PathBuf) {
        if self.personalizing.is_some() {
            return self.notify("a personalization is already running");
        }
        let Some(base) = self.personalize_base.clone() else {
            self.progress_tx.send(None).ok();
            return self.notify(
                "personalization fine-tunes the neural generator: start `live --engine neural --weights W` to use it",
            );
        };
        let name = match self.store.load(&id) {
            Ok(identity) => identity.meta.name,
            Err(error) => return self.notify(format!("cannot personalize `{id}`: {error}")),
        };
        match crate::pipeline::personalizer::Running::start(
            base,
            id,
            name.clone(),
            clip.clone(),
            self.progress_tx.clone(),
        ) {
            Ok(running) => {
                // The bar (and its Cancel button) shows at once, before the worker has read a frame.
                self.progress_tx.send(Some(Progress::ReadingClip { frames: 0 })).ok();
                self.notify(format!("personalizing `{name}` from {}", clip.display()));
                self.personalizing = Some(running);
            }
            Err(error) => self.notify(format!("cannot start personalization: {error}")),
        }
    }

    /// Stores a finished personalization (replacing the identity atomically) or reports why it ended.
    fn check_personalize(&mut self) {
        let Some(result) = self.personalizing.as_mut().and_then(crate::pipeline::personalizer::Running::poll) else {
            return;
        };
        self.personalizing = None;
        self.progress_tx.send(None).ok();
        match result {
            Ok(finished) => match self.store.replace(&finished.id, &finished.identity) {
                Ok(()) => {
                    let r = &finished.report;
                    self.notify(format!(
                        "personalized `{}`: {} steps in {:.0} s, held-out loss {:.4} → {:.4}",
                        finished.identity.name, r.steps, r.seconds, r.heldout_loss_before, r.heldout_loss_after
                    ));
                    self.refresh_identities();
                    if self.selected.as_deref() == Some(finished.id.as_str()) {
                        self.select(&finished.id);
                    }
                }
                Err(error) => self.notify(format!("personalization finished but could not be saved: {error}")),
            },
            Err(end) => self.notify(end.to_string()),
        }
    }

    fn to_engine(&self, control: EngineControl) {
        if self.engine_tx.try_send(control).is_err() {
            tracing::warn!("live: engine control queue full or closed; setting dropped");
        }
    }

    fn to_face(&self, control: FaceControl) {
        if self.face_tx.try_send(control).is_err() {
            tracing::warn!("live: face control queue full or closed; setting dropped");
        }
    }

    fn select(&mut self, id: &str) {
        let identity = match self.store.load(id) {
            Ok(identity) => identity,
            Err(error) => return self.notify(format!("cannot use identity `{id}`: {error}")),
        };
        let name = identity.meta.name.clone();
        match EngineIdentity::from_library(id, identity) {
            Ok(identity) => {
                tracing::info!(id, name, "live: identity selected");
                self.selected = Some(id.to_owned());
                self.to_engine(EngineControl::Identity(Box::new(identity)));
            }
            Err(error) => self.notify(error.to_string()),
        }
    }

    /// Crops a portrait, finds its landmarks, embeds it when the embedder is installed and adds it to the library.
    pub(super) fn add_portrait(&mut self, path: &Path, name: Option<&str>) -> Result<String, AddPortraitError> {
        let image = crate::face::load_image(path)?;
        let prepared = prepare_portrait(&mut self.mesher, &image, path)?;
        let id_vector = match self.embedder.as_mut() {
            Some(embedder) => {
                Some(embedder.embed(&image, &prepared.frame_landmarks).map_err(AddPortraitError::Embedding)?)
            }
            None => None,
        };
        let n = prepared.landmarks.len();
        let landmarks = HostTensor::new(vec![n, 3], prepared.landmarks.iter().flatten().copied().collect())?;
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            path.file_stem().map_or_else(|| "portrait".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        Ok(self.store.add(&NewIdentity {
            name,
            portrait: prepared.crop,
            landmarks,
            id_vector,
            weights_delta: Default::default(),
            base_model_sha256: None,
            personalization: None,
            embedder: self.embedder.as_ref().map(|e| e.tag().to_owned()),
        })?)
    }

    pub(super) fn add_default_identity(&mut self, portrait: &Path) {
        match self.store.list() {
            Ok(list) if list.is_empty() => match self.add_portrait(portrait, Some(DEFAULT_IDENTITY_NAME)) {
                Ok(id) => tracing::info!(id, "live: added the bundled portrait to the empty library"),
                Err(error) => tracing::warn!("{error}"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "live: cannot list identities"),
        }
    }

    /// The library as the panel lists it; unusable identities are listed with the reason in their name.
    pub(super) fn identity_entries(&self) -> Vec<IdentityEntry> {
        let list = match self.store.list() {
            Ok(list) => list,
            Err(error) => {
                tracing::warn!(%error, "live: cannot list identities");
                return Vec::new();
            }
        };
        list.into_iter()
            .map(|entry| match entry.meta {
                Ok(meta) => {
                    let thumbnail = self.store.load(&entry.id).ok().map(|identity| thumbnail_of(&identity.portrait));
                    IdentityEntry { id: entry.id, name: meta.name, thumbnail }
                }
                Err(error) => {
                    tracing::warn!(id = entry.id, %error, "live: identity is unusable");
                    IdentityEntry { name: format!("{} (unusable)", entry.id), id: entry.id, thumbnail: None }
                }
            })
            .collect()
    }

    pub(super) fn publish_identities(&self, entries: Vec<IdentityEntry>) {
        self.identities_tx.send(entries).ok();
    }

    fn refresh_identities(&self) {
        self.publish_identities(self.identity_entries());
    }

    fn start_recording(&mut self) {
        match self.recording.start(&self.home, self.recorder_config) {
            Ok(Some(path)) => tracing::info!(path = %path.display(), "live: recording started"),
            Ok(None) => {}
            Err(error) => self.notify(format!("cannot record: {error}")),
        }
    }

    /// Finishes the recording (the upscale stage never waits on the encoder meanwhile).
    fn stop_recording(&mut self) {
        let Some((path, result)) = self.recording.stop() else { return };
        match result {
            Ok(summary) => self.notify(format!(
                "saved {} ({} frames, {:.1} s)",
                path.display(),
                summary.frames_written,
                summary.duration_us as f64 * 1e-6
            )),
            Err(error) => self.notify(format!("recording stopped with an error: {error}; what was written is kept")),
        }
    }

    /// A recorder that failed (disk full, write error) is stopped and the user told.
    fn check_recorder(&mut self) {
        if let Some(reason) = self.recording.failure() {
            tracing::error!(reason, "live: recorder failed");
            self.stop_recording();
            self.notify(format!("recording stopped: {reason}; what was written is kept"));
        }
    }

    fn publish_stats(&mut self) {
        let m = lock(&self.metrics);
        let now = Instant::now();
        let (since, outputs_then) = self.stats_window;
        let elapsed_s = now.duration_since(since).as_secs_f32().max(f32::EPSILON);
        let fps = (m.outputs - outputs_then) as f32 / elapsed_s;
        self.stats_window = (now, m.outputs);
        let mut stage_latency = Vec::new();
        for (stage, value) in [("face", m.face_ms), ("model", m.model_ms), ("tsr", m.upscale_ms)] {
            if let Some(ms) = value.0 {
                stage_latency.push(StageTime { stage, latency_ms: ms });
            }
        }
        let dropped_frames = m.capture_dropped
            + self.pose_drops.dropped()
            + self.generated_drops.dropped()
            + self.output_drops.dropped();
        let source = match &m.capture_status {
            Some(status) => format!("{} · {}", self.source_name, describe_capture(status)),
            None => self.source_name.clone(),
        };
        let engine_error = m.engine_error.clone();
        let glass_to_glass_ms = m.glass_to_glass_ms.0;
        drop(m);
        let recording = self.recording.status();
        let notice = engine_error.or_else(|| {
            self.notice.as_ref().filter(|(_, at)| at.elapsed() < NOTICE_DURATION).map(|(text, _)| text.clone())
        });
        let stats = Stats {
            fps,
            stage_latency,
            glass_to_glass_ms,
            dropped_frames,
            engine: self.engine_name.clone(),
            device: self.engine_device.clone(),
            recording,
            source,
            notice,
            hint: (self.engine_name.starts_with("preview")).then(|| NEURAL_WEIGHTS_HINT.to_owned()),
        };
        self.stats_tx.send(stats).ok();
    }
}

fn describe_capture(status: &CaptureStatus) -> String {
    match status {
        CaptureStatus::Starting => "starting".into(),
        CaptureStatus::Running => "running".into(),
        CaptureStatus::Ended => "ended".into(),
        CaptureStatus::CameraLost { retry_in_ms } => {
            format!("camera lost, retrying in {:.1} s", *retry_in_ms as f64 / 1e3)
        }
        CaptureStatus::Failed(message) => format!("failed: {message}"),
        CaptureStatus::Stopped => "stopped".into(),
    }
}

/// The panel's identity thumbnail of a portrait.
fn thumbnail_of(portrait: &RgbImage) -> Thumbnail {
    let small = image::imageops::thumbnail(portrait, THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX);
    let rgba = image::DynamicImage::ImageRgb8(small).into_rgba8();
    Thumbnail { width: rgba.width(), height: rgba.height(), rgba: rgba.into_raw() }
}
