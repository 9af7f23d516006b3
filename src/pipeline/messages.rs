//! The messages that cross the render thread's boundary, and the channel bundle it is started with.
//!
//! Owns no behaviour, only the shapes: frames and snapshots that other threads send to the window (`OutputFrame`,
//! `PreviewFrame`, `Stats`, identity snapshots, personalization `Progress`), and the `UiCommand`s the window sends
//! back. Every channel is a bounded crossbeam channel; the window only ever `try_recv`s and `try_send`s on them.

use crossbeam::channel::{Receiver, Sender};

/// Layout of a frame's `pixels`: tightly packed rows, top row first, 8 bits per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// Red, green, blue, alpha (alpha is ignored by the main view).
    Rgba8,
    /// Red, green, blue.
    Rgb8,
}

impl PixelFormat {
    /// Bytes one pixel takes in this layout.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Rgba8 => 4,
            Self::Rgb8 => 3,
        }
    }
}

/// Time one pipeline stage spent on a frame.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTime {
    /// Stage name as shown in the panel ("capture", "face", "model", "tsr", ...).
    pub stage: &'static str,
    pub latency_ms: f32,
}

/// A generated frame for the main view.
#[derive(Clone, Debug)]
pub struct OutputFrame {
    /// `width * height * format.bytes_per_pixel()` bytes; a frame of any other length is skipped with a warning.
    pub pixels: Vec<u8>,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Capture time of the camera frame this output was generated from, on the pipeline's clock.
    pub timestamp_us: u64,
    pub stage_times: Vec<StageTime>,
}

/// A camera frame for the small preview, with the face landmarks detected on it.
#[derive(Clone, Debug)]
pub struct PreviewFrame {
    pub pixels: Vec<u8>,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Landmark positions in image pixels (x right, y down, origin at the top-left corner).
    pub landmarks: Vec<[f32; 2]>,
}

/// What the recorder is writing, as reported by it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingStatus {
    pub file_name: String,
    pub elapsed_s: f64,
}

/// Pipeline health, sent a few times a second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Output frames per second.
    pub fps: f32,
    pub stage_latency: Vec<StageTime>,
    /// Camera capture to frame on screen, when the pipeline can measure it.
    pub glass_to_glass_ms: Option<f32>,
    /// Frames the pipeline dropped since it started.
    pub dropped_frames: u64,
    /// Inference engine ("onnx", "burn", "preview", ...).
    pub engine: String,
    /// Compute device the engine runs on.
    pub device: String,
    /// `Some` while the recorder is writing a file.
    pub recording: Option<RecordingStatus>,
    /// Where the driving video comes from and its state ("camera 0 · camera lost, retrying in 1.0 s").
    pub source: String,
    /// The latest message for the user (an error or a confirmation), while it is fresh.
    pub notice: Option<String>,
    /// Advice that stays while it applies (e.g. how to install the neural engine's weights).
    pub hint: Option<String>,
}

/// An RGBA8 thumbnail, tightly packed, top row first.
#[derive(Clone, Debug, PartialEq)]
pub struct Thumbnail {
    pub rgba: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// One identity of the library, as listed in the panel.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityEntry {
    /// The identity store's id.
    pub id: String,
    pub name: String,
    pub thumbnail: Option<Thumbnail>,
}

/// What a running personalization is doing, phase by phase, so the panel can show (and cancel) all of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Reading and meshing the clip: `frames` read so far.
    ReadingClip { frames: u32 },
    /// Measuring the held-out loss before (`after` false) or after training: `done` of `total` frames.
    Scoring { after: bool, done: u32, total: u32 },
    /// Training step `step` of `total` and its loss.
    Training {
        step: u32,
        total: u32,
        loss: f32,
        /// Estimated seconds left, once the trainer can tell.
        eta_s: Option<f32>,
    },
}

impl Progress {
    /// How far the current phase is, in [0, 1]; `None` when its length is unknown (reading the clip).
    pub fn fraction(&self) -> Option<f32> {
        let of = |done: u32, total: u32| if total == 0 { 0.0 } else { (done as f32 / total as f32).clamp(0.0, 1.0) };
        match *self {
            Self::ReadingClip { .. } => None,
            Self::Scoring { done, total, .. } => Some(of(done, total)),
            Self::Training { step, total, .. } => Some(of(step, total)),
        }
    }
}

/// How driving motion is applied to the portrait (defined by the face stage).
pub use crate::face::motion::MotionMode;

/// A request from the window to the rest of the app.
#[derive(Clone, Debug, PartialEq)]
pub enum UiCommand {
    SelectIdentity(String),
    AddPortrait(std::path::PathBuf),
    RenameIdentity {
        id: String,
        name: String,
    },
    DeleteIdentity(String),
    /// Personalize the selected identity from a video clip.
    PersonalizeFromClip {
        id: String,
        clip: std::path::PathBuf,
    },
    CancelPersonalize,
    SetMotionMode(MotionMode),
    Recalibrate,
    /// Temporal smoothing strength in `0.0..=1.0`.
    SetSmoothing(f32),
    SetTsr(bool),
    StartRecording,
    StopRecording,
    /// The window is closing.
    Quit,
}

/// Channels the window is started with. Make every one bounded: the window drains each to its newest value on
/// every pass and never waits on any, and a full `commands` channel costs the dropped command (logged).
pub struct WindowInputs {
    pub output: Receiver<OutputFrame>,
    pub preview: Receiver<PreviewFrame>,
    pub stats: Receiver<Stats>,
    /// Complete snapshots of the identity library, sent whenever it changes.
    pub identities: Receiver<Vec<IdentityEntry>>,
    /// `Some` while personalizing; `None` once it finished or was cancelled.
    pub progress: Receiver<Option<Progress>>,
    pub commands: Sender<UiCommand>,
    /// Settings to start with (restored by the caller).
    pub settings: super::settings::UiSettings,
}
