//! The live app's threads: capture → face → engine → upscale (temporal SR) → window/recorder, plus the control thread
//! that answers the window. Generator and temporal SR run in separate threads so that on a GPU they overlap (the
//! generator works on frame t + 1 while the TSR network works on frame t).
//!
//! Owns stage wiring, the identity library's use by the app, recording start/stop and the pipeline's statistics.
//! Receives a `LiveConfig` (input, models, data home), an engine and the restored window settings; emits the
//! `WindowInputs` bundle the window runs on. Every stage hands work to the next through a `channel::latest` channel
//! (newest wins), so a slow stage drops stale frames — counted, not queued — and latency stays bounded. Each frame
//! carries the instant it left the capture thread; glass-to-glass latency is measured from there to the moment the
//! finished frame is handed to the window.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender};
use image::RgbImage;

use super::channel::{LatestReceiver, LatestSender, latest};
use super::engine::{EngineIdentity, LiveEngine, NEURAL_WEIGHTS_HINT};
use super::looping::LoopingSource;
use super::render::prepare_portrait;
use crate::capture::{
    CaptureError, CaptureOptions, CaptureStatus, CaptureThread, Frame, FrameSource, ImageSequenceSource,
    StillImageSource, StillRepeat, VideoFileSource, WebcamConfig, WebcamSource,
};
use crate::face::facecrop::{CropBox, CropPolicy, FaceBox};
use crate::face::filter::OneEuroParams;
use crate::face::motion::{MotionMode, MotionTransfer};
use crate::face::{FaceError, FaceMesher, FaceTracker, TrackerOptions};
use crate::model::inputs::{planar_unit_to_image, write_planar_unit};
use crate::personalize::store::{IdentityStore, NewIdentity};
use crate::pipeline::messages::{
    IdentityEntry, OutputFrame, PixelFormat, PreviewFrame, Progress, RecordingStatus, StageTime, Stats, Thumbnail,
    UiCommand, WindowInputs,
};
use crate::pipeline::settings::UiSettings;
use crate::record::{PushOutcome, Recorder, RecorderConfig, RecorderState};
use crate::tensor::HostTensor;

/// Frame rate assumed for an image directory given to `live --input`.
pub const IMAGE_DIR_FPS: f64 = 25.0;
/// Side of the generated picture (the generator's resolution).
const ENGINE_SIDE_PX: u32 = 256;
/// Side of the picture when temporal super-resolution is on.
const UPSCALED_SIDE_PX: u32 = 512;
/// Widest camera preview sent to the window; larger frames are subsampled.
const PREVIEW_MAX_WIDTH_PX: u32 = 320;
const THUMBNAIL_SIDE_PX: u32 = 64;
/// How often stats go to the window.
const STATS_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait of a stage thread before it checks for shutdown.
const STAGE_POLL: Duration = Duration::from_millis(20);
/// How long a message stays in the panel.
const NOTICE_DURATION: Duration = Duration::from_secs(15);
/// Weight of the newest sample in the smoothed latencies.
const LATENCY_SMOOTHING: f32 = 0.2;
/// Capacity of the window's input channels (the window keeps the newest).
const WINDOW_CHANNEL_CAPACITY: usize = 2;
const COMMAND_CHANNEL_CAPACITY: usize = 64;
const CONTROL_CHANNEL_CAPACITY: usize = 16;
/// One-Euro cutoff at rest for smoothing 0 (lightest) and 1 (strongest), in Hz.
const SMOOTHING_CUTOFF_RANGE_HZ: (f32, f32) = (8.0, 0.3);
/// Display name of the identity made from the bundled portrait on first run.
const DEFAULT_IDENTITY_NAME: &str = "Astronaut";

/// Where the driving video comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveInput {
    /// A webcam (`/dev/video<index>` on Linux); a missing camera is retried.
    Camera(u32),
    /// A video file, an image directory or a still image, played in real time; `looped` replays it forever.
    File { path: PathBuf, looped: bool },
}

/// Everything the live pipeline needs besides the engine.
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub input: LiveInput,
    /// Face detector and landmark models.
    pub models_dir: PathBuf,
    /// The user's data directory (identities, recordings).
    pub home: PathBuf,
    /// Added as the first identity when the library is empty, so a first run shows something.
    pub default_portrait: Option<PathBuf>,
    /// The identity-embedding network (see `face::embed::default_id_model_path`).
    pub id_model: PathBuf,
    pub recorder: RecorderConfig,
    /// What "personalize from a clip" fine-tunes (the neural engine's base); `None` with the preview engine.
    pub personalize: Option<super::personalizer::PersonalizeBase>,
    /// The temporal SR network for the TSR toggle (a sliding window, one frame of look-ahead); `None`: bicubic.
    pub tsr: Option<crate::tsr::runner::TsrModel>,
    /// Where the TSR network runs (the neural engine's device: on CUDA its sessions use device buffers too).
    pub tsr_device: crate::runtime::Device,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Face(#[from] FaceError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Identity(#[from] crate::personalize::store::IdentityError),
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
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

/// A tracked driving pose on its way to the engine.
struct DrivingPose {
    /// Landmarks in the driver's crop, crop pixels (z scaled like x).
    landmarks: Vec<[f32; 3]>,
    /// When the camera frame reached the pipeline.
    captured: Instant,
}

enum FaceControl {
    Recalibrate,
    SetSmoothing(f32),
}

enum EngineControl {
    Identity(Box<EngineIdentity>),
    /// The shown identity was deleted: stop driving it.
    ClearIdentity,
    MotionMode(MotionMode),
    Recalibrate,
    Tsr(bool),
}

/// A recording in progress, shared by the engine thread (pushes frames) and the control thread (starts/stops).
struct ActiveRecording {
    recorder: Recorder,
    path: PathBuf,
    started: Instant,
    last_timestamp_us: i64,
    next_index: u64,
}

type RecordingSlot = Arc<Mutex<Option<ActiveRecording>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exponentially smoothed milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Smoothed(Option<f32>);

impl Smoothed {
    fn add(&mut self, ms: f32) {
        self.0 = Some(self.0.map_or(ms, |old| old + LATENCY_SMOOTHING * (ms - old)));
    }
}

/// Counters and latencies the stages update and the control thread reports.
#[derive(Default)]
struct MetricsInner {
    face_ms: Smoothed,
    model_ms: Smoothed,
    upscale_ms: Smoothed,
    glass_to_glass_ms: Smoothed,
    outputs: u64,
    capture_status: Option<CaptureStatus>,
    capture_dropped: u64,
    /// Frames whose face was not found.
    no_face: u64,
    engine_error: Option<String>,
}

type Metrics = Arc<Mutex<MetricsInner>>;

/// The smoothing slider's value as One-Euro settings (`None`: raw landmarks).
pub fn smoothing_params(smoothing: f32) -> Option<OneEuroParams> {
    if smoothing.is_nan() || smoothing <= 0.0 {
        return None;
    }
    let s = smoothing.min(1.0);
    let (light, strong) = SMOOTHING_CUTOFF_RANGE_HZ;
    Some(OneEuroParams { min_cutoff: light + (strong - light) * s, ..OneEuroParams::default() })
}

pub(crate) fn open_file_source(path: &Path) -> Result<Box<dyn FrameSource>, CaptureError> {
    if path.is_dir() {
        return Ok(Box::new(ImageSequenceSource::open(path, IMAGE_DIR_FPS)?));
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        return Ok(Box::new(StillImageSource::open(path, StillRepeat::Once)?));
    }
    Ok(Box::new(VideoFileSource::open(path)?))
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
            open_file_source(path)?;
            let (path_for_thread, looped) = (path.clone(), *looped);
            let opener = move || -> Result<Box<dyn FrameSource>, CaptureError> {
                if looped {
                    let clip_path = path_for_thread.clone();
                    Ok(Box::new(LoopingSource::new(Box::new(move || open_file_source(&clip_path)))?))
                } else {
                    open_file_source(&path_for_thread)
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
        recording: Arc::new(Mutex::new(None)),
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
            recording: Arc::clone(&control.recording),
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

struct FaceStage {
    capture: CaptureThread,
    mesher: FaceMesher,
    poses: LatestSender<DrivingPose>,
    preview: LatestSender<PreviewFrame>,
    control: Receiver<FaceControl>,
    metrics: Metrics,
    stop: Arc<AtomicBool>,
    smoothing: f32,
}

impl FaceStage {
    fn tracker(smoothing: f32) -> FaceTracker {
        FaceTracker::new(TrackerOptions { refine: true, smoothing: smoothing_params(smoothing) })
    }

    fn run(mut self) {
        let policy = CropPolicy::official();
        let mut tracker = Self::tracker(self.smoothing);
        // The driver's crop is fixed from the first face (the official per-clip policy) until recalibrated.
        let mut crop_box: Option<CropBox> = None;
        let mut flat: Vec<[f32; 2]> = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            for control in self.control.try_iter() {
                match control {
                    FaceControl::Recalibrate => {
                        crop_box = None;
                        tracker.reset();
                    }
                    FaceControl::SetSmoothing(s) => tracker = Self::tracker(s),
                }
            }
            {
                let stats = self.capture.stats();
                let mut m = lock(&self.metrics);
                m.capture_status = Some(self.capture.status());
                m.capture_dropped = stats.frames_dropped;
            }
            let Some(frame) = self.capture.recv_timeout(STAGE_POLL) else { continue };
            let captured = Instant::now();
            let tracked = match tracker.track(&mut self.mesher, &frame.pixels, frame.timestamp_us as f64 * 1e-6) {
                Ok(tracked) => tracked,
                Err(error) => {
                    tracing::warn!(%error, "face: tracking failed on a frame");
                    continue;
                }
            };
            let face_ms = captured.elapsed().as_secs_f32() * 1e3;
            let landmarks = tracked.face.as_ref().map(|f| f.landmarks.points.as_slice()).unwrap_or(&[]);
            if self.preview.send(preview_of(&frame.pixels, landmarks)).is_err() {
                break;
            }
            let mut m = lock(&self.metrics);
            m.face_ms.add(face_ms);
            let Some(face) = tracked.face else {
                m.no_face += 1;
                continue;
            };
            drop(m);
            flat.clear();
            flat.extend(face.landmarks.points.iter().map(|p| [p[0], p[1]]));
            let Some(face_box) = FaceBox::of_points(&flat) else { continue };
            let (w, h) = frame.pixels.dimensions();
            let crop = *crop_box.get_or_insert_with(|| CropBox::official(face_box, w, h, &policy));
            let landmarks = crop.landmarks_to_crop(&face.landmarks.points, policy.out_size);
            if self.poses.send(DrivingPose { landmarks, captured }).is_err() {
                break;
            }
        }
        let status = self.capture.stop();
        tracing::debug!(?status, "face: stopped");
    }
}

/// The camera frame subsampled to at most `PREVIEW_MAX_WIDTH_PX` wide, with its landmarks scaled to match.
fn preview_of(frame: &RgbImage, landmarks: &[[f32; 3]]) -> PreviewFrame {
    let (w, h) = frame.dimensions();
    let step = w.div_ceil(PREVIEW_MAX_WIDTH_PX).max(1);
    let (pw, ph) = (w / step, h / step);
    let mut pixels = Vec::with_capacity((pw * ph * 3) as usize);
    for y in 0..ph {
        for x in 0..pw {
            pixels.extend_from_slice(&frame.get_pixel(x * step, y * step).0);
        }
    }
    let scale = 1.0 / step as f32;
    PreviewFrame {
        pixels,
        format: PixelFormat::Rgb8,
        width: pw,
        height: ph,
        landmarks: landmarks.iter().map(|p| [p[0] * scale, p[1] * scale]).collect(),
    }
}

/// Drives the engine with each pose and hands the 256² result to the upscale stage.
struct EngineStage {
    poses: LatestReceiver<DrivingPose>,
    control: Receiver<EngineControl>,
    stop: Arc<AtomicBool>,
    motion_mode: MotionMode,
    sink: EngineSink,
}

/// A generated frame on its way to the upscale stage.
struct Generated {
    picture: RgbImage,
    captured: Instant,
    model_ms: f32,
    /// Whether the panel's TSR toggle was on for this frame.
    upscale: bool,
}

/// Upscales (temporal SR or bicubic, or not at all), records and shows generated frames. Its own thread, so on a
/// GPU the generator works on frame t + 1 while the TSR network works on frame t.
struct UpscaleStage {
    frames: LatestReceiver<Generated>,
    stop: Arc<AtomicBool>,
    sink: OutputSink,
}

/// The TSR network streaming over the generated frames; each output is the previous frame's (tagged with its capture
/// time), so it adds one frame of latency.
struct LiveTsr {
    engine: crate::tsr::runner::TsrRunner,
    stream: crate::tsr::stream::TsrStream<Instant>,
}

impl LiveTsr {
    fn restart(&mut self) {
        self.stream = crate::tsr::stream::TsrStream::new(crate::tsr::stream::DEFAULT_HISTORY);
    }
}

/// Where finished frames go.
struct OutputSink {
    epoch: Instant,
    tsr: Option<LiveTsr>,
    output: LatestSender<OutputFrame>,
    recording: RecordingSlot,
    metrics: Metrics,
}

impl EngineStage {
    fn run(self) {
        let EngineStage { poses, control, stop, mut motion_mode, sink: mut this } = self;
        let mut motion: Option<MotionTransfer> = None;
        let mut target: Vec<[f32; 3]> = Vec::new();
        let mut generated = RgbImage::new(ENGINE_SIDE_PX, ENGINE_SIDE_PX);
        let mut upscale = false;
        let poses: &Receiver<DrivingPose> = &poses;
        while !stop.load(Ordering::Acquire) {
            crossbeam::select! {
                recv(control) -> control => match control {
                    Ok(EngineControl::Identity(identity)) => {
                        let result = this.engine.set_identity(&identity).map_err(|e| e.to_string()).and_then(
                            |()| MotionTransfer::new(&identity.landmarks, motion_mode).map_err(|e| e.to_string()),
                        );
                        match result {
                            Ok(m) => {
                                target = identity.landmarks.clone();
                                motion = Some(m);
                                lock(&this.metrics).engine_error = None;
                            }
                            Err(e) => lock(&this.metrics).engine_error = Some(format!("identity not usable: {e}")),
                        }
                    }
                    Ok(EngineControl::ClearIdentity) => motion = None,
                    Ok(EngineControl::MotionMode(mode)) => {
                        motion_mode = mode;
                        if let Some(m) = motion.as_mut() {
                            m.set_mode(mode);
                            m.clear_reference();
                        }
                    }
                    Ok(EngineControl::Recalibrate) => {
                        if let Some(m) = motion.as_mut() {
                            m.clear_reference();
                        }
                    }
                    Ok(EngineControl::Tsr(on)) => upscale = on,
                    Err(_) => break,
                },
                recv(poses) -> pose => {
                    let Ok(pose) = pose else { break };
                    let Some(motion) = motion.as_mut() else { continue };
                    if this.render(motion, &pose, &mut target, &mut generated, upscale).is_err() {
                        break;
                    }
                },
                default(STAGE_POLL) => {}
            }
        }
        tracing::debug!("engine: stopped");
    }
}

/// The engine thread's half: the engine and the hand-off to the upscale stage.
struct EngineSink {
    engine: Box<dyn LiveEngine>,
    generated: LatestSender<Generated>,
    metrics: Metrics,
}

impl EngineSink {
    /// Renders one pose and hands it on; `Err` only when the upscale stage has gone.
    fn render(
        &mut self,
        motion: &mut MotionTransfer,
        pose: &DrivingPose,
        target: &mut [[f32; 3]],
        generated: &mut RgbImage,
        upscale: bool,
    ) -> Result<(), ()> {
        let started = Instant::now();
        if pose.landmarks.len() != target.len() {
            return Ok(());
        }
        if let Err(error) = motion.transfer(&pose.landmarks, target) {
            tracing::debug!(%error, "engine: motion transfer skipped a frame");
            return Ok(());
        }
        if let Err(error) = self.engine.drive(target, generated) {
            lock(&self.metrics).engine_error = Some(error.to_string());
            return Ok(());
        }
        let model_ms = started.elapsed().as_secs_f32() * 1e3;
        lock(&self.metrics).model_ms.add(model_ms);
        let frame = Generated { picture: generated.clone(), captured: pose.captured, model_ms, upscale };
        self.generated.send(frame).map_err(drop)
    }
}

impl UpscaleStage {
    fn run(self) {
        let UpscaleStage { frames, stop, sink: mut this } = self;
        let mut upscaling = false;
        while !stop.load(Ordering::Acquire) {
            match frames.recv_timeout(STAGE_POLL) {
                Ok(frame) => {
                    if frame.upscale != upscaling {
                        // A toggle starts a new clip for the temporal window.
                        upscaling = frame.upscale;
                        if let Some(tsr) = this.tsr.as_mut() {
                            tsr.restart();
                        }
                    }
                    if this.finish(frame).is_err() {
                        break;
                    }
                }
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::debug!("upscale: stopped");
    }
}

impl OutputSink {
    /// Upscales, records and shows one generated frame; `Err` only when the window has gone.
    fn finish(&mut self, generated: Generated) -> Result<(), ()> {
        let Generated { picture: generated, captured: generated_at, model_ms, upscale } = generated;
        let mut stage_times = vec![StageTime { stage: "model", latency_ms: model_ms }];
        let upscale_started = Instant::now();
        let mut captured = generated_at;
        let picture = match (upscale, self.tsr.as_mut()) {
            (true, Some(tsr)) => {
                let (w, h) = (generated.width() as usize, generated.height() as usize);
                let mut frame = HostTensor::zeros(&[3, h, w]);
                write_planar_unit(&generated, frame.data_mut());
                match tsr.stream.push(&mut tsr.engine, frame, generated_at) {
                    Ok(Some(out)) => {
                        captured = out.tag;
                        let (h, w) = (out.image.shape()[1], out.image.shape()[2]);
                        planar_unit_to_image(out.image.data(), w, h)
                    }
                    // The window needs its next frame before the first output.
                    Ok(None) => return Ok(()),
                    Err(error) => {
                        lock(&self.metrics).engine_error = Some(format!("temporal SR: {error}"));
                        tsr.restart();
                        return Ok(());
                    }
                }
            }
            (true, None) => image::imageops::resize(
                &generated,
                UPSCALED_SIDE_PX,
                UPSCALED_SIDE_PX,
                image::imageops::FilterType::CatmullRom,
            ),
            (false, _) => generated,
        };
        let upscale_ms = upscale.then(|| upscale_started.elapsed().as_secs_f32() * 1e3);
        if let Some(ms) = upscale_ms {
            stage_times.push(StageTime { stage: "tsr", latency_ms: ms });
        }
        self.record(&picture, captured);
        let (width, height) = picture.dimensions();
        let glass_to_glass_ms = captured.elapsed().as_secs_f32() * 1e3;
        let frame = OutputFrame {
            pixels: picture.into_raw(),
            format: PixelFormat::Rgb8,
            width,
            height,
            timestamp_us: captured.saturating_duration_since(self.epoch).as_micros() as u64,
            stage_times,
        };
        {
            let mut m = lock(&self.metrics);
            if let Some(ms) = upscale_ms {
                m.upscale_ms.add(ms);
            }
            m.glass_to_glass_ms.add(glass_to_glass_ms);
            m.outputs += 1;
        }
        self.output.send(frame).map_err(drop)
    }

    /// Hands the frame to the recorder without waiting (a lagging encoder drops and counts it).
    fn record(&self, picture: &RgbImage, captured: Instant) {
        let mut slot = lock(&self.recording);
        let Some(active) = slot.as_mut() else { return };
        let since_start = captured.saturating_duration_since(active.started).as_micros() as i64;
        let timestamp_us = since_start.max(active.last_timestamp_us + 1);
        let frame = Frame { pixels: picture.clone(), timestamp_us, index: active.next_index };
        if active.recorder.push(frame) == PushOutcome::Queued {
            active.last_timestamp_us = timestamp_us;
            active.next_index += 1;
        }
    }
}

/// The control thread's state: answers the window's commands, owns the identity library and the recorder's
/// lifecycle, and publishes stats.
struct Control {
    store: IdentityStore,
    personalize_base: Option<super::personalizer::PersonalizeBase>,
    personalizing: Option<super::personalizer::Running>,
    /// The identity the engine shows, to reload it when it is personalized.
    selected: Option<String>,
    mesher: FaceMesher,
    /// The identity-embedding network, when installed (portraits get an embedding for the neural engine).
    embedder: Option<crate::face::embed::IdEmbedder>,
    home: PathBuf,
    recorder_config: RecorderConfig,
    recording: RecordingSlot,
    metrics: Metrics,
    engine_tx: Sender<EngineControl>,
    face_tx: Sender<FaceControl>,
    identities_tx: LatestSender<Vec<IdentityEntry>>,
    progress_tx: LatestSender<Option<Progress>>,
    stats_tx: LatestSender<Stats>,
    source_name: String,
    engine_name: String,
    engine_device: String,
    notice: Option<(String, Instant)>,
    /// Sending halves kept only to read their drop counters.
    pose_drops: LatestSender<DrivingPose>,
    output_drops: LatestSender<OutputFrame>,
    generated_drops: LatestSender<Generated>,
    /// Start of the current fps window and the output count then.
    stats_window: (Instant, u64),
}

impl Control {
    fn run(mut self, commands: Receiver<UiCommand>, stop: Arc<AtomicBool>) {
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
                Err(message) => self.notify(message),
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
        match super::personalizer::Running::start(base, id, name.clone(), clip.clone(), self.progress_tx.clone()) {
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
        let Some(result) = self.personalizing.as_mut().and_then(super::personalizer::Running::poll) else { return };
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
            Err(message) => self.notify(message),
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
        match self.store.load(id) {
            Ok(identity) => {
                let shape = identity.landmarks.shape().to_vec();
                let landmarks: Vec<[f32; 3]> = match shape.as_slice() {
                    [_, 3] => identity.landmarks.data().chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
                    _ => {
                        self.notify(format!("identity `{id}` has landmarks of shape {shape:?}; expected [n, 3]"));
                        return;
                    }
                };
                tracing::info!(id, name = identity.meta.name, "live: identity selected");
                self.selected = Some(id.to_owned());
                self.to_engine(EngineControl::Identity(Box::new(EngineIdentity {
                    portrait: identity.portrait,
                    landmarks,
                    id_vector: identity.id_vector,
                    weights_delta: identity.weights_delta,
                    embedder: identity.meta.embedder,
                })));
            }
            Err(error) => self.notify(format!("cannot use identity `{id}`: {error}")),
        }
    }

    /// Crops a portrait, finds its landmarks and adds it to the library; the message on error is for the user.
    fn add_portrait(&mut self, path: &Path, name: Option<&str>) -> Result<String, String> {
        let image = crate::face::load_image(path).map_err(|e| format!("cannot add portrait: {e}"))?;
        let prepared =
            prepare_portrait(&mut self.mesher, &image, path).map_err(|e| format!("cannot add portrait: {e}"))?;
        let id_vector = match self.embedder.as_mut() {
            Some(embedder) => Some(
                embedder
                    .embed(&image, &prepared.frame_landmarks)
                    .map_err(|e| format!("cannot add portrait: identity embedding: {e}"))?,
            ),
            None => None,
        };
        let n = prepared.landmarks.len();
        let landmarks = HostTensor::new(vec![n, 3], prepared.landmarks.iter().flatten().copied().collect())
            .map_err(|e| format!("cannot add portrait: {e:?}"))?;
        let name = name.map(str::to_owned).unwrap_or_else(|| {
            path.file_stem().map_or_else(|| "portrait".to_owned(), |s| s.to_string_lossy().into_owned())
        });
        self.store
            .add(&NewIdentity {
                name,
                portrait: prepared.crop,
                landmarks,
                id_vector,
                weights_delta: Default::default(),
                base_model_sha256: None,
                personalization: None,
                embedder: self.embedder.as_ref().map(|e| e.tag().to_owned()),
            })
            .map_err(|e| format!("cannot add portrait: {e}"))
    }

    fn add_default_identity(&mut self, portrait: &Path) {
        match self.store.list() {
            Ok(list) if list.is_empty() => match self.add_portrait(portrait, Some(DEFAULT_IDENTITY_NAME)) {
                Ok(id) => tracing::info!(id, "live: added the bundled portrait to the empty library"),
                Err(message) => tracing::warn!("{message}"),
            },
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "live: cannot list identities"),
        }
    }

    /// The library as the panel lists it; unusable identities are listed with the reason in their name.
    fn identity_entries(&self) -> Vec<IdentityEntry> {
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

    fn publish_identities(&self, entries: Vec<IdentityEntry>) {
        self.identities_tx.send(entries).ok();
    }

    fn refresh_identities(&self) {
        self.publish_identities(self.identity_entries());
    }

    fn start_recording(&mut self) {
        if lock(&self.recording).is_some() {
            return;
        }
        let dir = match crate::home::recordings_dir(&self.home) {
            Ok(dir) => dir,
            Err(error) => return self.notify(format!("cannot record: {error}")),
        };
        let path = unique_recording_path(&dir, std::time::SystemTime::now());
        match Recorder::start(&path, self.recorder_config) {
            Ok(recorder) => {
                tracing::info!(path = %path.display(), "live: recording started");
                *lock(&self.recording) = Some(ActiveRecording {
                    recorder,
                    path,
                    started: Instant::now(),
                    last_timestamp_us: -1,
                    next_index: 0,
                });
            }
            Err(error) => self.notify(format!("cannot record: {error}")),
        }
    }

    /// Finishes the recording (outside the slot's lock, so the engine never waits on the encoder).
    fn stop_recording(&mut self) {
        let Some(active) = lock(&self.recording).take() else { return };
        let path = active.path.clone();
        match active.recorder.stop() {
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
        let failed = match lock(&self.recording).as_ref().map(|a| a.recorder.state()) {
            Some(RecorderState::Failed(reason)) => Some(reason),
            _ => None,
        };
        if let Some(reason) = failed {
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
        let recording = lock(&self.recording).as_ref().map(|a| RecordingStatus {
            file_name: a.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            elapsed_s: a.started.elapsed().as_secs_f64(),
        });
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

fn thumbnail_of(portrait: &RgbImage) -> Thumbnail {
    let small = image::imageops::thumbnail(portrait, THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX);
    let rgba = image::DynamicImage::ImageRgb8(small).into_rgba8();
    Thumbnail { width: rgba.width(), height: rgba.height(), rgba: rgba.into_raw() }
}

/// `recording-YYYYMMDD-HHMMSS.mp4` (UTC) in `dir`, with a counter when that name is taken.
pub fn unique_recording_path(dir: &Path, now: std::time::SystemTime) -> PathBuf {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = utc_stamp(secs);
    let mut path = dir.join(format!("recording-{stamp}.mp4"));
    let mut n = 2;
    while path.exists() || crate::record::partial_path_for(&path).exists() {
        path = dir.join(format!("recording-{stamp}-{n}.mp4"));
        n += 1;
    }
    path
}

/// `YYYYMMDD-HHMMSS` of a UNIX time, UTC (civil-from-days, proleptic Gregorian).
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs_of_day = unix_s % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        secs_of_day / 3_600,
        secs_of_day % 3_600 / 60,
        secs_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_match_known_dates() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_796_053_599), "20261130-154639");
    }

    #[test]
    fn recording_names_never_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_796_053_599);
        let first = unique_recording_path(dir.path(), now);
        assert_eq!(first.file_name().and_then(|n| n.to_str()), Some("recording-20261130-154639.mp4"));
        std::fs::write(&first, b"x").expect("write");
        let second = unique_recording_path(dir.path(), now);
        assert_eq!(second.file_name().and_then(|n| n.to_str()), Some("recording-20261130-154639-2.mp4"));
    }

    #[test]
    fn smoothing_maps_onto_one_euro_cutoffs() {
        assert_eq!(smoothing_params(0.0), None);
        assert_eq!(smoothing_params(f32::NAN), None);
        let light = smoothing_params(0.1).expect("on").min_cutoff;
        let strong = smoothing_params(1.0).expect("on").min_cutoff;
        assert!(light > strong && strong > 0.0, "{light} {strong}");
    }

    #[test]
    fn preview_is_subsampled_with_its_landmarks() {
        let frame = RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 0]));
        let p = preview_of(&frame, &[[100.0, 50.0, 1.0]]);
        assert_eq!((p.width, p.height, p.pixels.len()), (320, 240, 320 * 240 * 3));
        assert_eq!(p.landmarks, vec![[50.0, 25.0]]);
        assert_eq!(&p.pixels[3..6], &[2, 0, 0]);
    }
}
