//! The live pipeline without a window: this test plays the window's part on the same channels (`WindowInputs`).
//! A real H.264 clip of a real person (the official example frames, encoded here) drives the bundled portrait
//! through the capture, face and engine threads; recording goes through the real encoder into the data home.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use metaportrait::capture::{Frame, FrameSource, VideoFileSource};
use metaportrait::pipeline::engine::{EngineError, EngineIdentity, LiveEngine, PreviewEngine};
use metaportrait::pipeline::live::{LiveConfig, LiveInput, LivePipeline, start};
use metaportrait::pipeline::messages::{OutputFrame, Stats, UiCommand, WindowInputs};
use metaportrait::pipeline::settings::UiSettings;
use metaportrait::record::{PushOutcome, Recorder, RecorderConfig};

const CLIP_FPS: f64 = 25.0;

/// The tests of this file run one at a time: each starts a whole pipeline (several threads and ONNX Runtime
/// sessions) and some measure latency, which would otherwise depend on how the others load the 2 cores.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Encodes the official example frames `imgs_0_*` (one person, moving) into an MP4 at 25 fps.
fn driving_clip(dir: &Path) -> PathBuf {
    let faces = repo().join("../shared/fixtures/faces/images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&faces)
        .expect("fixture faces")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("imgs_0_")))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "expected the official example frames in {}", faces.display());
    let path = dir.join("driving.mp4");
    let recorder = Recorder::start(&path, RecorderConfig::default()).expect("recorder");
    for (i, file) in files.iter().enumerate() {
        let pixels = image::open(file).expect("fixture image").to_rgb8();
        let frame = Frame { pixels, timestamp_us: (i as f64 * 1e6 / CLIP_FPS) as i64, index: i as u64 };
        while recorder.push(frame.clone()) == PushOutcome::Dropped {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    recorder.stop().expect("clip written");
    path
}

fn config_with_home(home: &Path, input: LiveInput) -> LiveConfig {
    LiveConfig {
        input,
        models_dir: repo().join("models"),
        home: home.to_path_buf(),
        default_portrait: Some(repo().join("assets/portrait.png")),
        id_model: metaportrait::face::embed::default_id_model_path(),
        personalize: None,
        tsr: None,
        tsr_device: metaportrait::runtime::Device::Cpu,
        recorder: RecorderConfig::default(),
    }
}

/// Plays the window: announces the settings like the window does and collects what the pipeline sends.
struct FakeWindow {
    inputs: WindowInputs,
    frames: Vec<(OutputFrame, Instant)>,
    stats: Vec<Stats>,
    progress: Vec<Option<metaportrait::pipeline::messages::Progress>>,
}

impl FakeWindow {
    fn new(inputs: WindowInputs) -> Self {
        let s = &inputs.settings;
        for command in
            [UiCommand::SetMotionMode(s.motion_mode), UiCommand::SetSmoothing(s.smoothing), UiCommand::SetTsr(false)]
                .into_iter()
                .chain(s.selected_identity.clone().map(UiCommand::SelectIdentity))
        {
            inputs.commands.send(command).expect("pipeline listens");
        }
        Self { inputs, frames: Vec::new(), stats: Vec::new(), progress: Vec::new() }
    }

    fn send(&self, command: UiCommand) {
        self.inputs.commands.send(command).expect("pipeline listens");
    }

    /// Collects output frames and stats for `duration`.
    fn pump(&mut self, duration: Duration) {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            crossbeam::select! {
                recv(self.inputs.output) -> frame => if let Ok(frame) = frame { self.frames.push((frame, Instant::now())) },
                recv(self.inputs.stats) -> stats => if let Ok(stats) = stats { self.stats.push(stats) },
                recv(self.inputs.progress) -> p => if let Ok(p) = p { self.progress.push(p) },
                default(Duration::from_millis(20)) => {}
            }
        }
    }

    /// Pumps until at least `n` frames have arrived or `timeout` passes: for checks that frames come at all, where a
    /// slow machine only delays the first one (the neural engine warms up on its first frame).
    fn pump_until_frames(&mut self, n: usize, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.frames.len() < n && Instant::now() < until {
            self.pump(Duration::from_millis(100));
        }
    }

    /// Pumps until the newest notice contains `text` (or `timeout` passes); returns that notice.
    fn wait_for_notice(&mut self, text: &str, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            self.pump(Duration::from_millis(200));
            if let Some(notice) = self.stats.last().and_then(|s| s.notice.clone()).filter(|n| n.contains(text)) {
                return Some(notice);
            }
        }
        None
    }

    /// Quits like the window does and checks that every stage stops promptly.
    fn quit(self, pipeline: LivePipeline) {
        self.send(UiCommand::Quit);
        let started = Instant::now();
        pipeline.shutdown();
        assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
    }
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()).sum::<f64>() / a.len() as f64
}

#[test]
fn a_clip_drives_the_portrait_and_a_recording_is_a_real_video() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = driving_clip(dir.path());
    let home = dir.path().join("home");
    let (pipeline, inputs) = start(
        config_with_home(&home, LiveInput::File { path: clip, looped: true }),
        Box::new(PreviewEngine::new()),
        UiSettings::default(),
    )
    .expect("pipeline starts");
    assert_eq!(inputs.settings.selected_identity.as_deref(), Some("astronaut"), "the bundled portrait is selected");
    let identities = inputs.identities.recv_timeout(Duration::from_secs(5)).expect("an identity snapshot");
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0].name, "Astronaut");
    assert!(identities[0].thumbnail.as_ref().is_some_and(|t| t.rgba.len() == (t.width * t.height * 4) as usize));
    let mut window = FakeWindow::new(inputs);
    window.pump(Duration::from_secs(3));

    let frames = &window.frames;
    assert!(frames.len() >= 20, "only {} output frames in 3 s from a 25 fps clip", frames.len());
    for (frame, _) in frames {
        assert_eq!((frame.width, frame.height, frame.pixels.len()), (256, 256, 256 * 256 * 3));
    }
    let first = &frames[0].0.pixels;
    let most_moved = frames.iter().map(|(f, _)| mean_abs_diff(first, &f.pixels)).fold(0.0, f64::max);
    assert!(most_moved > 1.0, "the portrait does not move (largest mean difference {most_moved:.3})");
    let timestamps: Vec<u64> = frames.iter().map(|(f, _)| f.timestamp_us).collect();
    assert!(timestamps.windows(2).all(|w| w[0] < w[1]), "output frames are out of capture order");

    let stats = window.stats.last().expect("stats arrive").clone();
    assert!(stats.fps > 5.0, "pipeline fps {}", stats.fps);
    let stages: Vec<&str> = stats.stage_latency.iter().map(|s| s.stage).collect();
    assert_eq!(stages, ["face", "model"], "per-stage latency");
    let g2g = stats.glass_to_glass_ms.expect("glass-to-glass latency");
    assert!(g2g > 0.0 && g2g < 500.0, "glass to glass {g2g} ms");
    assert!(stats.source.starts_with("file driving.mp4 · running"), "source {:?}", stats.source);
    assert_eq!(stats.engine, "preview (mesh warp)");
    assert!(stats.hint.as_deref().is_some_and(|h| h.contains("import-checkpoint")));

    // TSR on: the output switches to 512².
    window.send(UiCommand::SetTsr(true));
    window.frames.clear();
    window.pump(Duration::from_millis(800));
    let (last, _) = window.frames.last().expect("frames after the TSR toggle");
    assert_eq!((last.width, last.height), (512, 512));

    window.send(UiCommand::StartRecording);
    window.pump(Duration::from_secs(2));
    assert!(window.stats.last().and_then(|s| s.recording.as_ref()).is_some(), "stats report the recording");
    window.send(UiCommand::StopRecording);
    window.pump(Duration::from_millis(500));
    let recordings: Vec<PathBuf> =
        std::fs::read_dir(home.join("recordings")).expect("recordings dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert!(!recordings[0].to_string_lossy().contains(".partial"), "{recordings:?}");
    let mut video = VideoFileSource::open(&recordings[0]).expect("the recording opens");
    let mut decoded = 0;
    while let Some(frame) = video.next_frame().expect("decodes") {
        assert_eq!(frame.pixels.dimensions(), (512, 512));
        decoded += 1;
    }
    assert!(decoded >= 20, "only {decoded} frames recorded in 2 s");

    // Deleting the identity on screen stops its frames (the panel clears its selection itself).
    window.send(UiCommand::DeleteIdentity("astronaut".into()));
    let notice = window.wait_for_notice("deleted identity `astronaut`", Duration::from_secs(3));
    assert!(notice.is_some_and(|n| n.contains("select another")), "no deletion notice");
    window.pump(Duration::from_millis(300));
    window.frames.clear();
    window.pump(Duration::from_millis(700));
    assert!(window.frames.is_empty(), "{} frames of a deleted identity", window.frames.len());
    window.quit(pipeline);
}

/// Wraps the preview engine with a fixed delay: a deliberately slow inference stage.
struct SlowEngine {
    inner: PreviewEngine,
    delay: Duration,
}

impl LiveEngine for SlowEngine {
    fn name(&self) -> String {
        "slow".into()
    }
    fn device(&self) -> String {
        "cpu".into()
    }
    fn set_identity(&mut self, identity: &EngineIdentity) -> Result<(), EngineError> {
        self.inner.set_identity(identity)
    }
    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError> {
        std::thread::sleep(self.delay);
        self.inner.drive(target, out)
    }
}

#[test]
fn a_slow_engine_drops_stale_frames_instead_of_queueing_latency() {
    let _serial = serial();
    const DELAY: Duration = Duration::from_millis(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = driving_clip(dir.path());
    let (pipeline, inputs) = start(
        config_with_home(&dir.path().join("home"), LiveInput::File { path: clip, looped: true }),
        Box::new(SlowEngine { inner: PreviewEngine::new(), delay: DELAY }),
        UiSettings::default(),
    )
    .expect("pipeline starts");
    let epoch = pipeline.epoch();
    let mut window = FakeWindow::new(inputs);
    window.pump(Duration::from_secs(4));
    // Skip the first frames (identity upload, model warm-up), then look at latency from capture to output.
    let latencies_ms: Vec<f64> = window
        .frames
        .iter()
        .skip(3)
        .map(|(f, at)| at.duration_since(epoch + Duration::from_micros(f.timestamp_us)).as_secs_f64() * 1e3)
        .collect();
    assert!(latencies_ms.len() >= 8, "only {} frames", latencies_ms.len());
    let worst = latencies_ms.iter().copied().fold(0.0, f64::max);
    // One engine period plus one capture period plus face time and slack; a queue would grow by ~160 ms per frame.
    assert!(worst < 2.0 * DELAY.as_secs_f64() * 1e3 + 150.0, "latency grew to {worst:.0} ms: {latencies_ms:?}");
    let first_half = latencies_ms[..latencies_ms.len() / 2].iter().sum::<f64>() / (latencies_ms.len() / 2) as f64;
    let second_half = latencies_ms[latencies_ms.len() / 2..].iter().sum::<f64>()
        / (latencies_ms.len() - latencies_ms.len() / 2) as f64;
    assert!(second_half < first_half + 100.0, "latency trends upward: {latencies_ms:?}");
    let stats = window.stats.last().expect("stats").clone();
    assert!(stats.dropped_frames >= 20, "a 5 fps engine on a 25 fps clip must drop frames: {}", stats.dropped_frames);
    window.quit(pipeline);
}

#[test]
fn a_missing_camera_is_a_visible_retrying_state() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let (pipeline, inputs) = start(
        config_with_home(dir.path(), LiveInput::Camera(97)),
        Box::new(PreviewEngine::new()),
        UiSettings::default(),
    )
    .expect("a missing camera does not stop the app");
    let mut window = FakeWindow::new(inputs);
    window.pump(Duration::from_millis(1500));
    let source = window.stats.last().map(|s| s.source.clone()).unwrap_or_default();
    assert!(source.starts_with("camera 97 · camera lost, retrying in"), "source {source:?}");
    assert!(window.frames.is_empty());
    window.quit(pipeline);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.mp4");
    let err = start(
        config_with_home(dir.path(), LiveInput::File { path: missing.clone(), looped: true }),
        Box::new(PreviewEngine::new()),
        UiSettings::default(),
    )
    .err()
    .expect("a missing file fails");
    assert!(err.to_string().contains("nope.mp4"), "{err}");
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, b"definitely not a video").expect("write");
    let err = start(
        config_with_home(dir.path(), LiveInput::File { path: garbage, looped: true }),
        Box::new(PreviewEngine::new()),
        UiSettings::default(),
    )
    .err()
    .expect("a corrupt file fails");
    assert!(err.to_string().contains("garbage.mp4"), "{err}");
}

#[test]
fn the_neural_engine_runs_live_and_explains_an_unusable_embedding() {
    let _serial = serial();
    use metaportrait::model::config::GeneratorConfig;
    use metaportrait::model::generator::GeneratorModel;
    use metaportrait::model::runner::RunnerOptions;
    use metaportrait::model::weights::WeightStore;
    use metaportrait::personalize::store::{IdentityStore, NewIdentity};
    use metaportrait::pipeline::engine::NeuralEngine;
    let fixtures = repo().join("../shared/fixtures/generator");
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = driving_clip(dir.path());
    let home = dir.path().join("home");
    // The bundled portrait's identity (added by the pipeline) and a copy with an embedding of the tiny model's size.
    let config = GeneratorConfig::from_json_file(&fixtures.join("tiny_config.json")).expect("tiny config");
    let model = GeneratorModel::load(config, &fixtures.join("tiny_weights.safetensors")).expect("tiny weights");
    // CUDA asked for on a GPU that no machine here has: the panel must show the CPU it really runs on, and why.
    let cuda = metaportrait::runtime::Device::Cuda(63);
    let engine = NeuralEngine::new(model, RunnerOptions { device: cuda, ..Default::default() }).expect("engine");
    let (pipeline, inputs) = start(
        config_with_home(&home, LiveInput::File { path: clip, looped: true }),
        Box::new(engine),
        UiSettings::default(),
    )
    .expect("pipeline starts");
    let mut window = FakeWindow::new(inputs);
    window.pump(Duration::from_millis(1500));
    // The bundled portrait's identity carries the 128-d face-recognition embedding; the tiny model expects 32.
    assert!(window.frames.is_empty(), "an identity with the wrong embedding size must not animate");
    let notice = window.stats.last().and_then(|s| s.notice.clone()).unwrap_or_default();
    assert!(notice.contains("128 values but this model's id_dim is 32"), "notice {notice:?}");
    assert!(window.stats.last().is_some_and(|s| s.hint.is_none()), "no install hint once the neural engine runs");

    let store = IdentityStore::open(&home.join("identities")).expect("store");
    let plain = store.load("astronaut").expect("the bundled identity");
    let io = WeightStore::load_safetensors(&fixtures.join("tiny_io.safetensors")).expect("fixture io");
    let id = store
        .add(&NewIdentity {
            name: "Astronaut (embedded)".into(),
            portrait: plain.portrait,
            landmarks: plain.landmarks,
            id_vector: Some(io.get("input.src_id").expect("src_id").data().to_vec()),
            weights_delta: WeightStore::new(),
            base_model_sha256: None,
            personalization: None,
            embedder: None,
        })
        .expect("identity added");
    window.send(UiCommand::SelectIdentity(id));
    window.pump(Duration::from_secs(3));
    assert!(window.frames.len() >= 5, "only {} neural frames in 3 s", window.frames.len());
    assert!(window.frames.iter().all(|(f, _)| (f.width, f.height) == (256, 256)));
    let stats = window.stats.last().expect("stats");
    assert!(stats.engine.starts_with("neural"), "{}", stats.engine);
    assert!(stats.device.starts_with("cpu, fp32 (cuda:63 fp32 requested: "), "panel device {:?}", stats.device);
    window.quit(pipeline);
}

#[test]
fn personalizing_from_the_panel_replaces_the_identity_and_cancel_keeps_it() {
    let _serial = serial();
    use metaportrait::model::config::GeneratorConfig;
    use metaportrait::model::generator::GeneratorModel;
    use metaportrait::model::runner::RunnerOptions;
    use metaportrait::personalize::store::IdentityStore;
    use metaportrait::pipeline::engine::NeuralEngine;
    use metaportrait::pipeline::personalizer::PersonalizeBase;
    const STEPS: usize = 3;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, weights) = common::tiny_id128(dir.path());
    let clip = common::example_clip(dir.path());
    let driving = driving_clip(dir.path());
    let home = dir.path().join("home");
    let model =
        GeneratorModel::load(GeneratorConfig::from_json_file(&config).expect("config"), &weights).expect("model");
    let mut live_config = config_with_home(&home, LiveInput::File { path: driving, looped: true });
    live_config.personalize = Some(PersonalizeBase {
        model: std::sync::Arc::new(model.clone()),
        weights_sha256: metaportrait::checksum::sha256_file(&weights).expect("sha"),
        models_dir: repo().join("models"),
        id_model: metaportrait::face::embed::default_id_model_path(),
        vgg: None,
        steps: STEPS,
    });
    let engine = NeuralEngine::new(model, RunnerOptions::default()).expect("engine");
    let (pipeline, inputs) = start(live_config, Box::new(engine), UiSettings::default()).expect("pipeline starts");
    let mut window = FakeWindow::new(inputs);
    window.pump_until_frames(1, Duration::from_secs(30));
    assert!(!window.frames.is_empty(), "the bundled portrait (128-d embedding) animates with an id_dim-128 model");
    let store = IdentityStore::open(&home.join("identities")).expect("store");
    let before = store.load("astronaut").expect("identity");
    assert!(before.meta.personalization.is_none());

    // Cancel right away: the job stops before its first step and the identity stays as it was.
    window.send(UiCommand::PersonalizeFromClip { id: "astronaut".into(), clip: clip.clone() });
    window.send(UiCommand::CancelPersonalize);
    let notice = window.wait_for_notice("cancelled", Duration::from_secs(60));
    assert!(notice.is_some(), "no cancel notice; last: {:?}", window.stats.last().and_then(|s| s.notice.clone()));
    let after_cancel = store.load("astronaut").expect("identity");
    assert_eq!(after_cancel.meta, before.meta, "cancel must leave the identity untouched");

    // A full run: progress reaches the panel, then the identity is replaced by the personalized one.
    window.progress.clear();
    window.send(UiCommand::PersonalizeFromClip { id: "astronaut".into(), clip });
    let notice = window.wait_for_notice("personalized", Duration::from_secs(120));
    assert!(notice.is_some(), "no completion notice; last: {:?}", window.stats.last().and_then(|s| s.notice.clone()));
    // Phases arrive in order (the channel keeps only the newest, so some updates may be skipped): reading the clip,
    // held-out scoring, training steps, scoring again; then the bar is cleared.
    use metaportrait::pipeline::messages::Progress;
    let rank = |p: &Progress| match p {
        Progress::ReadingClip { .. } => 0,
        Progress::Scoring { after: false, .. } => 1,
        Progress::Training { .. } => 2,
        Progress::Scoring { after: true, .. } => 3,
    };
    let seen: Vec<&Progress> = window.progress.iter().flatten().collect();
    assert!(seen.windows(2).all(|w| rank(w[0]) <= rank(w[1])), "phases out of order: {seen:?}");
    // Scoring a frame and a training step each take long enough for the panel to see every phase after reading.
    assert!((1..=3).all(|r| seen.iter().any(|p| rank(p) == r)), "a phase is missing: {seen:?}");
    let steps: Vec<u32> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Training { step, total, loss, .. } => {
                assert!(*total == STEPS as u32 && loss.is_finite(), "{p:?}");
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert!(!steps.is_empty() && steps.iter().all(|&s| (1..=STEPS as u32).contains(&s)), "progress {seen:?}");
    assert!(matches!(window.progress.last(), Some(None)), "the progress bar is cleared at the end");
    let personalized = store.load("astronaut").expect("identity");
    let info = personalized.meta.personalization.as_ref().expect("personalization recorded");
    assert_eq!(info.steps, STEPS);
    assert_eq!(personalized.meta.name, "Astronaut", "the name is kept");
    assert!(!personalized.weights_delta.is_empty());
    // The selected identity is reloaded with its delta and keeps animating.
    window.frames.clear();
    window.pump_until_frames(1, Duration::from_secs(30));
    assert!(!window.frames.is_empty(), "no frames after the personalized identity was loaded");
    window.quit(pipeline);
}

#[test]
fn the_tsr_toggle_streams_the_network_at_512() {
    let _serial = serial();
    use metaportrait::tsr::config::TsrConfig;
    use metaportrait::tsr::runner::TsrModel;
    let dir = tempfile::tempdir().expect("tempdir");
    let clip = driving_clip(dir.path());
    let mut config = config_with_home(&dir.path().join("home"), LiveInput::File { path: clip, looped: true });
    // The tiny TSR widths at the real 256 → 512 geometry.
    config.tsr = Some(TsrModel::random(TsrConfig { out_size: 512, ..TsrConfig::tiny() }, 5).expect("tsr"));
    let (pipeline, inputs) = start(config, Box::new(PreviewEngine::new()), UiSettings::default()).expect("starts");
    let mut window = FakeWindow::new(inputs);
    window.pump(Duration::from_millis(800));
    assert!(window.frames.iter().all(|(f, _)| f.width == 256), "TSR starts off in this test");
    window.send(UiCommand::SetTsr(true));
    window.frames.clear();
    let until = Instant::now() + Duration::from_secs(30);
    while window.frames.iter().filter(|(f, _)| f.width == 512).count() < 3 && Instant::now() < until {
        window.pump(Duration::from_millis(200));
    }
    let sr: Vec<&OutputFrame> = window.frames.iter().map(|(f, _)| f).filter(|f| f.width == 512).collect();
    assert!(sr.len() >= 3, "only {} TSR frames in 30 s", sr.len());
    assert!(sr.iter().all(|f| (f.width, f.height, f.pixels.len()) == (512, 512, 512 * 512 * 3)));
    assert!(sr.windows(2).all(|w| w[0].timestamp_us < w[1].timestamp_us), "TSR output out of order");
    let stats = window.stats.last().expect("stats");
    assert!(stats.stage_latency.iter().any(|s| s.stage == "tsr"), "{:?}", stats.stage_latency);
    assert!(stats.notice.is_none(), "{:?}", stats.notice);
    window.quit(pipeline);
}
