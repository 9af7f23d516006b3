//! Demo of the window with a synthetic pipeline: a producer thread sends a moving pattern at ~30 fps, a camera
//! preview with landmarks, stats and a fake identity library; a command thread answers the window's `UiCommand`s.
//!
//! Prints `COMMAND <command>` for every command and `RECORDING_STARTED` when recording starts, and with
//! `--marker PATH` also writes that file then, so tests can drive it from outside. Prints `FINAL_SETTINGS <json>`
//! when the window closes. `--personalizing` starts with a fake personalization running (30 s of progress).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use metaportrait::app::run_window;
use metaportrait::pipeline::messages::{
    IdentityEntry, OutputFrame, PixelFormat, PreviewFrame, Progress, RecordingStatus, StageTime, Stats, Thumbnail,
    UiCommand, WindowInputs,
};
use metaportrait::pipeline::settings::UiSettings;

const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const STATS_INTERVAL: Duration = Duration::from_millis(250);
const OUTPUT_SIZE_PX: [u32; 2] = [512, 384];
const PREVIEW_SIZE_PX: [u32; 2] = [160, 120];
const THUMBNAIL_SIZE_PX: u32 = 48;
const LANDMARK_COUNT: usize = 68;
const FRAME_CHANNEL_CAPACITY: usize = 2;
const COMMAND_CHANNEL_CAPACITY: usize = 64;
/// Steps of the fake personalization, one per frame.
const PERSONALIZE_STEPS: u32 = 900;
const DEMO_NAMES: [&str; 4] = ["Ada", "Grace", "Alan", "Edsger"];

/// State shared by the producer and the command thread.
struct Demo {
    identities: Vec<IdentityEntry>,
    identities_dirty: bool,
    selected: usize,
    recording_since: Option<Instant>,
    personalize_step: Option<u32>,
    next_id: u32,
}

/// Sends `value`, evicting the oldest queued value when the channel is full (newest wins, never blocks).
fn send_latest<T>(tx: &Sender<T>, evict: &Receiver<T>, mut value: T) -> bool {
    loop {
        match tx.try_send(value) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(v)) => {
                value = v;
                let _ = evict.try_recv();
            }
        }
    }
}

fn thumbnail(seed: u32) -> Thumbnail {
    let hue = [(220, 80, 80), (80, 200, 90), (80, 120, 230), (220, 190, 60)][seed as usize % 4];
    let mut rgba = Vec::with_capacity((THUMBNAIL_SIZE_PX * THUMBNAIL_SIZE_PX * 4) as usize);
    for y in 0..THUMBNAIL_SIZE_PX {
        for x in 0..THUMBNAIL_SIZE_PX {
            let d = (x as i32 - 24).pow(2) + (y as i32 - 20).pow(2);
            let face = d < 14 * 14;
            let (r, g, b) = if face { (240, 210, 180) } else { hue };
            rgba.extend_from_slice(&[r, g, b, 255]);
        }
    }
    Thumbnail { rgba, width: THUMBNAIL_SIZE_PX, height: THUMBNAIL_SIZE_PX }
}

fn identity(n: u32, name: &str) -> IdentityEntry {
    IdentityEntry { id: format!("id-{n}"), name: name.to_owned(), thumbnail: Some(thumbnail(n)) }
}

/// The moving test pattern: diagonal colour bands scrolling right and a white disc sweeping across.
fn output_frame(t: u64, tint: u8, timestamp_us: u64) -> OutputFrame {
    let [w, h] = OUTPUT_SIZE_PX;
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    let phase = (t * 6) as u32;
    let disc_x = ((t * 8) % u64::from(w)) as i64;
    let disc_y = i64::from(h / 2);
    for y in 0..h {
        for x in 0..w {
            let dx = i64::from(x) - disc_x;
            let dy = i64::from(y) - disc_y;
            if dx * dx + dy * dy < 40 * 40 {
                pixels.extend_from_slice(&[255, 255, 255]);
            } else {
                let band = ((x + y + phase) / 32 % 2) as u8;
                pixels.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, tint.wrapping_add(band * 90)]);
            }
        }
    }
    OutputFrame {
        pixels,
        format: PixelFormat::Rgb8,
        width: w,
        height: h,
        timestamp_us,
        stage_times: vec![StageTime { stage: "model", latency_ms: 12.0 }],
    }
}

fn preview_frame(t: u64) -> PreviewFrame {
    let [w, h] = PREVIEW_SIZE_PX;
    let mut pixels = Vec::with_capacity((w * h * 4) as usize);
    for y in 0..h {
        for x in 0..w {
            let v = ((x ^ y) & 0x1f) as u8 + 40;
            pixels.extend_from_slice(&[v, v, v + 20, 255]);
        }
    }
    let cx = w as f32 / 2.0 + 20.0 * (t as f32 * 0.1).sin();
    let cy = h as f32 / 2.0;
    let landmarks = (0..LANDMARK_COUNT)
        .map(|i| {
            let a = i as f32 / LANDMARK_COUNT as f32 * std::f32::consts::TAU;
            [cx + 30.0 * a.cos(), cy + 40.0 * a.sin()]
        })
        .collect();
    PreviewFrame { pixels, format: PixelFormat::Rgba8, width: w, height: h, landmarks }
}

fn lock(demo: &Mutex<Demo>) -> std::sync::MutexGuard<'_, Demo> {
    demo.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Producer {
    output: (Sender<OutputFrame>, Receiver<OutputFrame>),
    preview: (Sender<PreviewFrame>, Receiver<PreviewFrame>),
    stats: (Sender<Stats>, Receiver<Stats>),
    identities: (Sender<Vec<IdentityEntry>>, Receiver<Vec<IdentityEntry>>),
    progress: (Sender<Option<Progress>>, Receiver<Option<Progress>>),
}

fn produce(p: Producer, demo: Arc<Mutex<Demo>>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut last_stats = start;
    let mut next_tick = start;
    let mut t = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let (tint, identities, recording_since, progress) = {
            let mut d = lock(&demo);
            let tint = (d.selected as u8).wrapping_mul(60);
            let identities = std::mem::take(&mut d.identities_dirty).then(|| d.identities.clone());
            let progress = d.personalize_step.map(|step| {
                let next = step + 1;
                d.personalize_step = (next < PERSONALIZE_STEPS).then_some(next);
                (next < PERSONALIZE_STEPS).then(|| Progress::Training {
                    step: next,
                    total: PERSONALIZE_STEPS,
                    loss: 1.0 / (1.0 + next as f32),
                    eta_s: Some((PERSONALIZE_STEPS - next) as f32 * FRAME_INTERVAL.as_secs_f32()),
                })
            });
            (tint, identities, d.recording_since, progress)
        };
        let timestamp_us = start.elapsed().as_micros() as u64;
        if !send_latest(&p.output.0, &p.output.1, output_frame(t, tint, timestamp_us)) {
            break;
        }
        send_latest(&p.preview.0, &p.preview.1, preview_frame(t));
        if let Some(list) = identities {
            send_latest(&p.identities.0, &p.identities.1, list);
        }
        if let Some(progress) = progress {
            send_latest(&p.progress.0, &p.progress.1, progress);
        }
        if last_stats.elapsed() >= STATS_INTERVAL {
            last_stats = Instant::now();
            let stats = Stats {
                fps: 1.0 / FRAME_INTERVAL.as_secs_f32(),
                stage_latency: vec![
                    StageTime { stage: "capture", latency_ms: 2.0 },
                    StageTime { stage: "face", latency_ms: 4.5 },
                    StageTime { stage: "model", latency_ms: 12.0 },
                    StageTime { stage: "tsr", latency_ms: 3.0 },
                ],
                glass_to_glass_ms: Some(58.0),
                dropped_frames: t / 100,
                engine: "synthetic".into(),
                device: "cpu (demo)".into(),
                recording: recording_since.map(|since| RecordingStatus {
                    file_name: "demo-recording.mp4".into(),
                    elapsed_s: since.elapsed().as_secs_f64(),
                }),
                source: "synthetic pattern · running".into(),
                notice: None,
                hint: None,
            };
            send_latest(&p.stats.0, &p.stats.1, stats);
        }
        t += 1;
        next_tick += FRAME_INTERVAL;
        let now = Instant::now();
        if next_tick > now {
            thread::sleep(next_tick - now);
        } else {
            next_tick = now;
        }
    }
}

fn handle_commands(
    commands: Receiver<UiCommand>,
    demo: Arc<Mutex<Demo>>,
    stop: Arc<AtomicBool>,
    marker: Option<PathBuf>,
) {
    for command in commands.iter() {
        println!("COMMAND {command:?}");
        let mut d = lock(&demo);
        match command {
            UiCommand::SelectIdentity(id) => {
                if let Some(i) = d.identities.iter().position(|e| e.id == id) {
                    d.selected = i;
                }
            }
            UiCommand::AddPortrait(path) => {
                let n = d.next_id;
                d.next_id += 1;
                let name = path.file_stem().map_or_else(|| format!("new {n}"), |s| s.to_string_lossy().into_owned());
                d.identities.push(identity(n, &name));
                d.identities_dirty = true;
            }
            UiCommand::RenameIdentity { id, name } => {
                if let Some(entry) = d.identities.iter_mut().find(|e| e.id == id) {
                    entry.name = name;
                }
                d.identities_dirty = true;
            }
            UiCommand::DeleteIdentity(id) => {
                d.identities.retain(|e| e.id != id);
                d.identities_dirty = true;
            }
            UiCommand::PersonalizeFromClip { .. } => d.personalize_step = Some(0),
            UiCommand::CancelPersonalize => d.personalize_step = None,
            UiCommand::StartRecording => {
                d.recording_since = Some(Instant::now());
                println!("RECORDING_STARTED");
                if let Some(path) = &marker
                    && let Err(error) = std::fs::write(path, "recording\n")
                {
                    eprintln!("cannot write marker {}: {error}", path.display());
                }
            }
            UiCommand::StopRecording => {
                d.recording_since = None;
                println!("RECORDING_STOPPED");
            }
            UiCommand::Quit => {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            UiCommand::SetMotionMode(_)
            | UiCommand::Recalibrate
            | UiCommand::SetSmoothing(_)
            | UiCommand::SetTsr(_) => {}
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,wgpu=warn,naga=warn".into()),
        )
        .init();
    let mut marker = None;
    let mut personalizing = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--marker" => marker = args.next().map(PathBuf::from),
            "--personalizing" => personalizing = true,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: window_demo [--marker PATH] [--personalizing]"
                )
                .into());
            }
        }
    }
    let identities: Vec<_> = DEMO_NAMES.iter().zip(0..).map(|(name, n)| identity(n, name)).collect();
    let demo = Arc::new(Mutex::new(Demo {
        identities,
        identities_dirty: true,
        selected: 0,
        recording_since: None,
        personalize_step: personalizing.then_some(0),
        next_id: DEMO_NAMES.len() as u32,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = Producer {
        output: channel::bounded(FRAME_CHANNEL_CAPACITY),
        preview: channel::bounded(FRAME_CHANNEL_CAPACITY),
        stats: channel::bounded(1),
        identities: channel::bounded(1),
        progress: channel::bounded(1),
    };
    let (command_tx, command_rx) = channel::bounded(COMMAND_CHANNEL_CAPACITY);
    let inputs = WindowInputs {
        output: producer.output.1.clone(),
        preview: producer.preview.1.clone(),
        stats: producer.stats.1.clone(),
        identities: producer.identities.1.clone(),
        progress: producer.progress.1.clone(),
        commands: command_tx,
        settings: UiSettings::default(),
    };
    let producer_thread = {
        let (demo, stop) = (Arc::clone(&demo), Arc::clone(&stop));
        thread::Builder::new().name("demo-producer".into()).spawn(move || produce(producer, demo, stop))?
    };
    let command_thread = {
        let (demo, stop) = (Arc::clone(&demo), Arc::clone(&stop));
        thread::Builder::new()
            .name("demo-commands".into())
            .spawn(move || handle_commands(command_rx, demo, stop, marker))?
    };
    let result = run_window(inputs);
    stop.store(true, Ordering::Relaxed);
    let settings = result?;
    println!("FINAL_SETTINGS {}", serde_json::to_string(&settings)?);
    if producer_thread.join().is_err() || command_thread.join().is_err() {
        return Err("a demo thread panicked".into());
    }
    Ok(())
}
