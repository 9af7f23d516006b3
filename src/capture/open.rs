//! Opening a frame source from a path: a video file, a directory of frames, or one still image.
//!
//! Owns the choice of source by what the path is (a directory → `ImageSequenceSource`, `.png`/`.jpg`/`.jpeg` →
//! `StillImageSource` played once, anything else → `VideoFileSource`). Receives a path and the frame rate to give an
//! image directory; emits the source and how many frames it will yield. `live`, `render`, `personalize`, `prepare`
//! and the panel's personalization all open their inputs here.

use std::path::Path;

use super::{CaptureError, FrameSource, ImageSequenceSource, StillImageSource, StillRepeat, VideoFileSource};

/// Frame rate given to an image directory when the user gave none (`live --input DIR`, personalization clips,
/// datasets).
pub const IMAGE_DIR_FPS: f64 = 25.0;

/// A source opened from a path, with the number of frames it will yield.
pub struct OpenedSource {
    /// The frames.
    pub source: Box<dyn FrameSource>,
    /// Frames the source holds (samples of a video, files of a directory, 1 for a still).
    pub frames: u64,
}

/// Opens `path` as a directory of frames (played at `image_dir_fps`), a still image (once) or a video file.
pub fn open_path(path: &Path, image_dir_fps: f64) -> Result<OpenedSource, CaptureError> {
    if path.is_dir() {
        let source = ImageSequenceSource::open(path, image_dir_fps)?;
        let frames = source.files().len() as u64;
        return Ok(OpenedSource { source: Box::new(source), frames });
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        return Ok(OpenedSource { source: Box::new(StillImageSource::open(path, StillRepeat::Once)?), frames: 1 });
    }
    let source = VideoFileSource::open(path)?;
    let frames = source.sample_count() as u64;
    Ok(OpenedSource { source: Box::new(source), frames })
}
