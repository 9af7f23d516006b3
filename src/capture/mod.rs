//! Video capture: everything that turns an outside picture source into a stream of [`Frame`]s.
//!
//! This module owns the shared [`Frame`] type, the [`FrameSource`] trait and its implementations
//! (H.264 MP4 files, image sequences, still images, webcams) plus [`CaptureThread`], which runs a
//! source on its own thread and hands the newest frame to the UI/pipeline. It receives paths or
//! camera settings from the caller and emits frames (RGB pixels, presentation time in µs, index)
//! or a [`CaptureError`] that says in plain words what went wrong.

mod avc;
mod image_seq;
pub mod mp4_demux;
mod open;
mod thread;
mod video_file;
mod webcam;
pub mod yuv;

use std::path::PathBuf;

pub use image_seq::{DEFAULT_SEQUENCE_FRAME_RATE_HZ, ImageSequenceSource, StillImageSource, StillRepeat, natural_cmp};
pub use open::{IMAGE_DIR_FPS, OpenedSource, open_path};
pub use thread::{CaptureOptions, CaptureStats, CaptureStatus, CaptureThread, Pacing};
pub use video_file::VideoFileSource;
pub use webcam::{WebcamConfig, WebcamSource};

/// Microseconds in one second, for timestamp conversions.
pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// One decoded picture with its presentation time.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The picture, 8-bit RGB.
    pub pixels: image::RgbImage,
    /// Presentation time in microseconds from the start of the source.
    pub timestamp_us: i64,
    /// Position of this frame in the source's output order, from 0.
    pub index: u64,
}

/// Width and height of a picture in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameSize {
    /// Horizontal extent in pixels.
    pub width: u32,
    /// Vertical extent in pixels.
    pub height: u32,
}

impl FrameSize {
    /// Builds a size from width and height in pixels.
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    /// Size of an existing image.
    pub fn of(image: &image::RgbImage) -> Self {
        Self { width: image.width(), height: image.height() }
    }
}

impl std::fmt::Display for FrameSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// A producer of frames: a file, a directory of images, a still picture or a camera.
pub trait FrameSource {
    /// The next frame in presentation order, `Ok(None)` at the end of the source.
    ///
    /// After an error that ends the source (for example [`CaptureError::Truncated`]) the following
    /// call returns `Ok(None)`.
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError>;

    /// Nominal frame rate in frames per second (an average for variable-rate files).
    fn frame_rate_hz(&self) -> f64;

    /// Picture size announced by the source; frames normally have this size.
    fn size(&self) -> FrameSize;
}

impl<S: FrameSource + ?Sized> FrameSource for Box<S> {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        (**self).next_frame()
    }

    fn frame_rate_hz(&self) -> f64 {
        (**self).frame_rate_hz()
    }

    fn size(&self) -> FrameSize {
        (**self).size()
    }
}

/// Everything that can go wrong while opening or reading a source.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file or directory could not be opened or read (missing, no permission, disk error).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start like an ISO-BMFF (MP4) file, so it is some other format.
    #[error("{path} is not an MP4 video ({reason})")]
    NotMp4 {
        /// The file being opened.
        path: PathBuf,
        /// What was found instead of an MP4 structure.
        reason: String,
    },
    /// The file is an MP4, but its boxes or sample tables contradict each other.
    #[error("{path} is damaged: {reason}")]
    Corrupt {
        /// The file being read.
        path: PathBuf,
        /// Which structure is broken and how.
        reason: String,
    },
    /// The MP4 holds no video track (for example an audio-only file).
    #[error("{path} has no video track")]
    NoVideoTrack {
        /// The file being opened.
        path: PathBuf,
    },
    /// The video track lists no samples, or none of them decoded to a picture.
    #[error("{path} contains no video frames")]
    NoFrames {
        /// The file being opened.
        path: PathBuf,
    },
    /// The video track is not H.264, the only codec decoded here.
    #[error("{path} uses the video codec '{codec}', but only H.264 (avc1/avc3) is supported")]
    UnsupportedCodec {
        /// The file being opened.
        path: PathBuf,
        /// The sample entry type found, such as `hvc1`.
        codec: String,
    },
    /// The file ends in the middle of the video; the frames before the cut were delivered.
    /// The source ends after this error.
    #[error("{path} ends early (truncated or still being written): {decoded_frames} frames could be read")]
    Truncated {
        /// The file being read.
        path: PathBuf,
        /// Frames delivered before the end of the data.
        decoded_frames: u64,
    },
    /// The H.264 decoder rejected the bitstream.
    #[error("H.264 decoding of {path} failed: {message}")]
    Decode {
        /// The file being decoded.
        path: PathBuf,
        /// The decoder's explanation.
        message: String,
    },
    /// A directory given as an image sequence holds no PNG or JPEG file.
    #[error("{path} contains no PNG or JPEG images")]
    NoImages {
        /// The directory searched.
        path: PathBuf,
    },
    /// A still image or sequence image could not be decoded.
    #[error("cannot decode image {path}: {message}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// The decoder's explanation.
        message: String,
    },
    /// An image in a sequence differs in size from the first one; sequences must have one size.
    #[error("image {path} is {actual}, but the sequence started with {expected}")]
    SizeMismatch {
        /// The image that differs.
        path: PathBuf,
        /// Size of the first image of the sequence.
        expected: FrameSize,
        /// Size of this image.
        actual: FrameSize,
    },
    /// A caller-supplied setting is unusable (for example a frame rate that is not positive), or
    /// the capture thread could not be started; the text says which.
    #[error("invalid capture setting: {0}")]
    InvalidSetting(String),
    /// The camera is missing, busy or refused to open; retryable.
    #[error("camera {index} is not available: {message}")]
    CameraUnavailable {
        /// Device index of the camera.
        index: u32,
        /// Why opening failed, with a hint for the user.
        message: String,
    },
    /// An open camera stopped delivering frames (unplugged, driver error); retryable.
    #[error("camera {index} stopped delivering frames: {message}")]
    CameraLost {
        /// Device index of the camera.
        index: u32,
        /// The driver's explanation.
        message: String,
    },
    /// The camera sends frames in a pixel format that cannot be converted to RGB here.
    #[error("camera {index} delivers pixel format {format}, which is not supported")]
    UnsupportedCameraFormat {
        /// Device index of the camera.
        index: u32,
        /// The camera's pixel format name, such as `H264`.
        format: String,
    },
}

impl CaptureError {
    /// Whether trying again later may help (a camera that is busy, unplugged or not yet present).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::CameraUnavailable { .. } | Self::CameraLost { .. })
    }
}
