//! The live app's threads: capture → face → engine → upscale (temporal SR) → window and recorder, plus the control
//! thread that answers the window.
//!
//! ```text
//!  camera/file ──CaptureThread──▶ face_stage ──DrivingPose──▶ engine_stage ──Generated──▶ upscale_stage ──▶ window
//!  (newest frame kept)            tracker, crop   (latest 1)    motion + engine  (latest 1)   TSR/bicubic     (latest 2)
//!                                      │                            ▲                             │
//!                                      └─PreviewFrame─▶ window      │                             └──▶ recorder
//!  window ──UiCommand (bounded 64)──▶ control ──EngineControl/FaceControl (bounded 16)──┘          (own thread,
//!                                      │  identities, personalization, recording, stats             drops when late)
//!                                      └──Stats, identities, Progress (latest 1)──▶ window
//! ```
//!
//! Owns the wiring (`start`): which channel joins which stages and with what policy. Every frame hand-off is a
//! `channel::latest` channel (newest wins), so a slow stage drops stale frames — counted, not queued — and latency
//! stays bounded; control messages go through bounded channels and are dropped with a warning when full. Generator
//! and temporal SR run in separate threads so that on a GPU they overlap. Each frame carries the instant its source
//! delivered it (the capture thread stamps it, `CaptureThread::captured_at`); glass-to-glass latency is measured from there to the moment the finished frame is handed to the
//! window. Receives a `LiveConfig` (input, models, data home), an engine and the restored window settings; emits the
//! `WindowInputs` bundle the window runs on and a `LivePipeline` handle to stop it.

mod control;
mod engine_stage;
mod face_stage;
mod metrics;
mod recording;
mod upscale_stage;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel;

pub use control::AddPortraitError;
use control::Control;
use engine_stage::{EngineSink, EngineStage, Generated};
pub use face_stage::smoothing_params;
use face_stage::{DrivingPose, FaceStage};
use metrics::MetricsInner;
use recording::RecordingSlot;
pub use recording::{RecordingStartError, unique_recording_path};
use upscale_stage::{LiveTsr, OutputSink, UpscaleStage};

use super::channel::latest;
use super::engine::LiveEngine;
use super::looping::LoopingSource;
use super::messages::{IdentityEntry, OutputFrame, PreviewFrame, Progress, Stats, WindowInputs};
use super::settings::UiSettings;
use crate::capture::{
    CaptureError, CaptureOptions, CaptureThread, FrameSource, IMAGE_DIR_FPS, WebcamConfig, WebcamSource, open_path,
};
use crate::face::{FaceError, FaceMesher};
use crate::personalize::store::IdentityStore;
use crate::record::RecorderConfig;

/// Side of the generated picture (the generator's resolution).
const ENGINE_SIDE_PX: u32 = 256;
/// Side of the picture when temporal super-resolution is on.
const UPSCALED_SIDE_PX: u32 = 512;
/// Longest wait of a stage thread before it checks for shutdown.
const STAGE_POLL: Duration = Duration::from_millis(20);
/// Capacity of the window's input channels (the window keeps the newest).
const WINDOW_CHANNEL_CAPACITY: usize = 2;
const COMMAND_CHANNEL_CAPACITY: usize = 64;
const CONTROL_CHANNEL_CAPACITY: usize = 16;

/// A stage's hand-off failed because the next stage (or the window) has gone: the stage ends.
#[derive(Debug)]
struct NextStageGone;

/// Where the driving video comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveInput {
    /// A webcam (`/dev/video<index>` on Linux); a missing camera is retried.
    Camera(u32),
    /// A video file, an image directory or a still image, played in real time; `looped` replays it forever.
    File {
        /// The file or directory.
        path: PathBuf,
        /// Replay from the start at the end instead of stopping.
        looped: bool,
    },
}

/// Everything the live pipeline needs besides the engine.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    /// The driving video.
    pub input: LiveInput,
    /// Face detector and landmark models.
    pub models_dir: PathBuf,
    /// The user's data directory (identities, recordings).
    pub home: PathBuf,
    /// Added as the first identity when the library is empty, so a first run shows something.
    pub default_portrait: Option<PathBuf>,
    /// The identity-embedding network (see `face::embed::default_id_model_path`).
    pub id_model: PathBuf,
    /// Settings of the recordings the panel starts.
    pub recorder: RecorderConfig,
    /// What "personalize from a clip" fine-tunes (the neural engine's base); `None` with the preview engine.
    pub personalize: Option<super::personalizer::PersonalizeBase>,
    /// The temporal SR network for the TSR toggle (a sliding window, one frame of look-ahead); `None`: bicubic.
    pub tsr: Option<crate::tsr::runner::TsrModel>,
    /// Where the TSR network runs (the neural engine's device: on CUDA its sessions use device buffers too).
    pub tsr_device: crate::runtime::Device,
}

/// Why the live pipeline could not start; nothing is left running.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The face detector or landmark models could not be loaded.
    #[error(transparent)]
    Face(#[from] FaceError),
    /// The driving input could not be opened.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The identity library could not be opened.
    #[error(transparent)]
    Identity(#[from] crate::personalize::store::IdentityError),
    /// The user's data directory is unusable.
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    /// The temporal SR network could not be loaded or prepared.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The operating system refused a stage thread (named first).
    #[error("cannot start the {0} thread: {1}")]
    Spawn(&'static str, std::io::Error),
}

/// The running pipeline. Dropping it without `shutdown` leaves the threads to stop on their own once the window's
/// channels close.
pub struct LivePipeline {
    /// Zero of the pipeline clock that `OutputFrame::timestamp_us` counts from.
    epoch: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    _channels: Box<dyn Send>,
}

impl LivePipeline {
    /// Stops every stage (finishing a running recording) and waits for the threads.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        for handle in self.threads.drain(..) {
            let name = handle.thread().name().unwrap_or("?").to_owned();
            if handle.join().is_err() {
                tracing::error!(thread = name, "live: a pipeline thread panicked");
            }
        }
    }

    /// The instant `OutputFrame::timestamp_us` counts from: `epoch + timestamp_us` is when the frame's camera
    /// picture reached the pipeline.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Whether every stage thread has ended (after `UiCommand::Quit` or a fatal error).
    pub fn is_finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }
}

/// Opens a file input (video, image directory at `IMAGE_DIR_FPS`, or a still).
fn open_file(path: &Path) -> Result<Box<dyn FrameSource>, CaptureError> {
    Ok(open_path(path, IMAGE_DIR_FPS)?.source)
}

/// Opens the input once on this thread (so a bad file fails `start` with its own message), then starts the capture
/// thread on it.
fn start_capture(input: &LiveInput) -> Result<(CaptureThread, String), LiveError> {
    match input {
        LiveInput::Camera(index) => {
            let config = WebcamConfig { index: *index, ..WebcamConfig::default() };
            let thread = CaptureThread::spawn(
                "capture",
                move || WebcamSource::open(config).map(|s| Box::new(s) as Box<dyn FrameSource>),
                CaptureOptions::default(),
            )?;
            Ok((thread, format!("camera {index}")))
        }
        LiveInput::File { path, looped } => {
            open_file(path)?;
            let (path_for_thread, looped) = (path.clone(), *looped);
            let opener = move || -> Result<Box<dyn FrameSource>, CaptureError> {
                if looped {
                    let clip_path = path_for_thread.clone();
                    Ok(Box::new(LoopingSource::new(Box::new(move || open_file(&clip_path)))?))
                } else {
                    open_file(&path_for_thread)
                }
            };
            let thread = CaptureThread::spawn("capture", opener, CaptureOptions::default())?;
            let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
            Ok((thread, format!("file {name}")))
        }
    }
}

/// Starts every stage and returns the pipeline and the window's inputs. `settings` are the restored window
/// settings; when they name no usable identity, the first identity of the library is selected.
pub fn start(
    config: LiveConfig,
    engine: Box<dyn LiveEngine>,
    mut settings: UiSettings,
) -> Result<(LivePipeline, WindowInputs), LiveError> {
    let face_mesher = FaceMesher::from_dir(&config.models_dir)?;
    let portrait_mesher = FaceMesher::from_dir(&config.models_dir)?;
    let store = IdentityStore::open(&crate::home::identities_dir(&config.home)?)?;
    let (pose_tx, pose_rx) = latest::<DrivingPose>(1);
    let (output_tx, output_rx) = latest::<OutputFrame>(WINDOW_CHANNEL_CAPACITY);
    // Generator → upscaler: newest wins, so a slow temporal SR drops generated frames instead of queueing latency.
    let (generated_tx, generated_rx) = latest::<Generated>(1);
    let (preview_tx, preview_rx) = latest::<PreviewFrame>(WINDOW_CHANNEL_CAPACITY);
    let (stats_tx, stats_rx) = latest::<Stats>(1);
    let (identities_tx, identities_rx) = latest::<Vec<IdentityEntry>>(1);
    let (progress_tx, progress_rx) = latest::<Option<Progress>>(1);
    let (engine_tx, engine_rx) = channel::bounded(CONTROL_CHANNEL_CAPACITY);
    let (face_tx, face_rx) = channel::bounded(CONTROL_CHANNEL_CAPACITY);
    let (command_tx, command_rx) = channel::bounded(COMMAND_CHANNEL_CAPACITY);
    let embedder = match crate::face::embed::IdEmbedder::new(&config.id_model) {
        Ok(embedder) => Some(embedder),
        Err(error) => {
            tracing::warn!(
                %error,
                "identity-embedding network not available: portraits are added without an embedding, which the \
                 neural engine needs (install it with `bash scripts/provision-id-model.sh`)"
            );
            None
        }
    };
    let mut control = Control {
        store,
        personalize_base: config.personalize.clone(),
        personalizing: None,
        selected: None,
        mesher: portrait_mesher,
        embedder,
        home: config.home.clone(),
        recorder_config: config.recorder,
        recording: RecordingSlot::default(),
        metrics: Arc::new(Mutex::new(MetricsInner::default())),
        engine_tx,
        face_tx,
        identities_tx,
        progress_tx,
        stats_tx,
        source_name: String::new(),
        engine_name: engine.name(),
        engine_device: engine.device(),
        notice: None,
        pose_drops: pose_tx.clone(),
        output_drops: output_tx.clone(),
        generated_drops: generated_tx.clone(),
        stats_window: (Instant::now(), 0),
    };
    if let Some(portrait) = &config.default_portrait {
        control.add_default_identity(portrait);
    }
    let listing = control.identity_entries();
    if settings.selected_identity.as_ref().is_none_or(|id| !listing.iter().any(|e| &e.id == id)) {
        settings.selected_identity = listing.first().map(|e| e.id.clone());
    }
    // Identities change only through the control thread, so one snapshot now and one per edit suffice.
    control.publish_identities(listing);
    let (capture, source_name) = start_capture(&config.input)?;
    control.source_name = source_name;
    let tsr = match config.tsr {
        Some(model) => {
            let options = crate::tsr::runner::TsrOptions { device: config.tsr_device, ..Default::default() };
            let mut engine = crate::tsr::runner::TsrRunner::new(model, options)?;
            let stream = crate::tsr::stream::TsrStream::new(crate::tsr::stream::DEFAULT_HISTORY);
            // Build the sessions of the window's two geometries now (a clip's start, then the steady state), so the
            // toggle does not stall the first frames.
            for frames in [stream.window_frames() - 1, stream.window_frames()] {
                engine.prepare(frames, ENGINE_SIDE_PX as usize)?;
            }
            Some(LiveTsr { engine, stream })
        }
        None => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();

    let face = FaceStage {
        capture,
        mesher: face_mesher,
        poses: pose_tx,
        preview: preview_tx,
        control: face_rx,
        metrics: Arc::clone(&control.metrics),
        stop: Arc::clone(&stop),
        smoothing: settings.smoothing,
    };
    let engine_stage = EngineStage {
        poses: pose_rx,
        control: engine_rx,
        stop: Arc::clone(&stop),
        motion_mode: settings.motion_mode,
        sink: EngineSink { engine, generated: generated_tx, metrics: Arc::clone(&control.metrics) },
    };
    let upscale_stage = UpscaleStage {
        frames: generated_rx,
        stop: Arc::clone(&stop),
        sink: OutputSink {
            epoch,
            tsr,
            output: output_tx,
            recording: control.recording.clone(),
            metrics: Arc::clone(&control.metrics),
        },
    };
    tracing::info!(engine = control.engine_name, device = control.engine_device, "live: engine");
    let mut threads = Vec::new();
    let spawn = |name: &'static str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new().name(name.into()).spawn(f).map_err(|e| LiveError::Spawn(name, e))
    };
    threads.push(spawn("face", Box::new(move || face.run()))?);
    threads.push(spawn("engine", Box::new(move || engine_stage.run()))?);
    threads.push(spawn("upscale", Box::new(move || upscale_stage.run()))?);
    let control_stop = Arc::clone(&stop);
    threads.push(spawn("control", Box::new(move || control.run(command_rx, control_stop)))?);
    tracing::info!("live: pipeline started");
    let inputs = WindowInputs {
        output: (*output_rx).clone(),
        preview: (*preview_rx).clone(),
        stats: (*stats_rx).clone(),
        identities: (*identities_rx).clone(),
        progress: (*progress_rx).clone(),
        commands: command_tx,
        settings,
    };
    // The window holds plain crossbeam receivers; the `LatestReceiver`s live in the pipeline until shutdown, since a
    // dropped `LatestReceiver` tells its senders that the stage has gone.
    let channels = Box::new((output_rx, preview_rx, stats_rx, identities_rx, progress_rx));
    Ok((LivePipeline { epoch, stop, threads, _channels: channels }, inputs))
}
