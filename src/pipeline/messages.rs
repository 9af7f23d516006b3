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
    /// Wall time the stage spent, in milliseconds.
    pub latency_ms: f32,
}

/// A generated frame for the main view.
#[derive(Clone, Debug)]
pub struct OutputFrame {
    /// `width * height * format.bytes_per_pixel()` bytes; a frame of any other length is skipped with a warning.
    pub pixels: Vec<u8>,
    /// Layout of `pixels`.
    pub format: PixelFormat,
    /// Width, in pixels.
    pub width: u32,
    /// Height, in pixels.
    pub height: u32,
    /// Capture time of the camera frame this output was generated from, on the pipeline's clock, in microseconds.
    pub timestamp_us: u64,
    /// What each stage spent on this frame, in pipeline order.
    pub stage_times: Vec<StageTime>,
}

/// A camera frame for the small preview, with the face landmarks detected on it.
#[derive(Clone, Debug)]
pub struct PreviewFrame {
    /// `width * height * format.bytes_per_pixel()` bytes.
    pub pixels: Vec<u8>,
    /// Layout of `pixels`.
    pub format: PixelFormat,
    /// Width, in pixels.
    pub width: u32,
    /// Height, in pixels.
    pub height: u32,
    /// Landmark positions in image pixels (x right, y down, origin at the top-left corner).
    pub landmarks: Vec<[f32; 2]>,
}

/// What the recorder is writing, as reported by it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordingStatus {
    /// Name of the file being written (without its directory).
    pub file_name: String,
    /// Length recorded so far, in seconds.
    pub elapsed_s: f64,
}

/// Pipeline health, sent a few times a second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Output frames per second.
    pub fps: f32,
    /// Recent latency of each stage, in pipeline order.
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
    /// `width * height * 4` bytes.
    pub rgba: Vec<u8>,
    /// Width, in pixels.
    pub width: u32,
    /// Height, in pixels.
    pub height: u32,
}

/// One identity of the library, as listed in the panel.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityEntry {
    /// The identity store's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The portrait, scaled down (`None`: it could not be loaded, e.g. a corrupt identity).
    pub thumbnail: Option<Thumbnail>,
}

/// What a running personalization is doing, phase by phase, so the panel can show (and cancel) all of it.
#[derive(Clone, Debug, PartialEq)]
pub enum Progress {
    /// Reading and meshing the clip: `frames` read so far.
    ReadingClip {
        /// Frames read so far.
        frames: u32,
    },
    /// Measuring the held-out loss before (`after` false) or after training: `done` of `total` frames.
    Scoring {
        /// `false` before training, `true` after.
        after: bool,
        /// Held-out frames scored so far.
        done: u32,
        /// Held-out frames in all.
        total: u32,
    },
    /// Training step `step` of `total` and its loss.
    Training {
        /// Steps done, counted from 1.
        step: u32,
        /// Steps the run takes.
        total: u32,
        /// Total training loss of that step.
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
    /// Animate the identity with this id.
    SelectIdentity(String),
    /// Add a new identity from a portrait image file (its face is found and cropped).
    AddPortrait(std::path::PathBuf),
    /// Change an identity's display name (its id stays).
    RenameIdentity {
        /// The identity's id.
        id: String,
        /// The new display name.
        name: String,
    },
    /// Delete the identity with this id from the library.
    DeleteIdentity(String),
    /// Personalize the selected identity from a video clip.
    PersonalizeFromClip {
        /// The identity to replace with the personalized one.
        id: String,
        /// The clip: a video, a directory of frames or one image.
        clip: std::path::PathBuf,
    },
    /// Stop the running personalization; the identity stays as it was.
    CancelPersonalize,
    /// Switch how driving motion is applied.
    SetMotionMode(MotionMode),
    /// Forget the driver's crop and the motion reference and take them again from the next frames.
    Recalibrate,
    /// Temporal smoothing strength in `0.0..=1.0`.
    SetSmoothing(f32),
    /// Turn temporal super-resolution (256 → 512) on or off.
    SetTsr(bool),
    /// Start recording the output to a new file in the user's recordings directory.
    StartRecording,
    /// Finish the recording in progress.
    StopRecording,
    /// The window is closing.
    Quit,
}

/// Channels the window is started with. Make every one bounded: the window drains each to its newest value on
/// every pass and never waits on any, and a full `commands` channel costs the dropped command (logged).
pub struct WindowInputs {
    /// Generated frames for the main view.
    pub output: Receiver<OutputFrame>,
    /// Camera frames with landmarks for the small preview.
    pub preview: Receiver<PreviewFrame>,
    /// Pipeline health.
    pub stats: Receiver<Stats>,
    /// Complete snapshots of the identity library, sent whenever it changes.
    pub identities: Receiver<Vec<IdentityEntry>>,
    /// `Some` while personalizing; `None` once it finished or was cancelled.
    pub progress: Receiver<Option<Progress>>,
    /// Where the window's requests go.
    pub commands: Sender<UiCommand>,
    /// Settings to start with (restored by the caller).
    pub settings: super::settings::UiSettings,
}
