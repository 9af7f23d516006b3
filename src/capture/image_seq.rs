//! Image sources: a directory of PNG/JPEG frames, or one still picture.
//!
//! Owns the directory listing (natural name order, so `frame2` comes before `frame10`) and the
//! timing of frames, which images do not carry: frame `i` is shown at `i / frame_rate_hz`.
//! Receives a directory or file path and a frame rate; emits RGB [`Frame`]s.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use super::{CaptureError, Frame, FrameSize, FrameSource, MICROS_PER_SECOND};

/// Frame rate used for image sequences when the caller gives none.
pub const DEFAULT_SEQUENCE_FRAME_RATE_HZ: f64 = 30.0;
/// File extensions (lower case) that are read as frames.
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn frame_time_us(index: u64, frame_rate_hz: f64) -> i64 {
    (index as f64 * MICROS_PER_SECOND as f64 / frame_rate_hz).round() as i64
}

fn check_frame_rate(frame_rate_hz: f64) -> Result<(), CaptureError> {
    if frame_rate_hz.is_finite() && frame_rate_hz > 0.0 {
        Ok(())
    } else {
        Err(CaptureError::InvalidSetting(format!("frame rate must be a positive number, got {frame_rate_hz}")))
    }
}

fn load_rgb(path: &Path) -> Result<image::RgbImage, CaptureError> {
    let reader =
        image::ImageReader::open(path).map_err(|source| CaptureError::Io { path: path.to_path_buf(), source })?;
    let reader =
        reader.with_guessed_format().map_err(|source| CaptureError::Io { path: path.to_path_buf(), source })?;
    let decoded =
        reader.decode().map_err(|e| CaptureError::Image { path: path.to_path_buf(), message: e.to_string() })?;
    Ok(decoded.into_rgb8())
}

/// Compares two names so that runs of digits compare by numeric value ("img2" < "img10").
///
/// Non-digit runs compare case-insensitively; ties fall back to the plain byte order so the
/// ordering is total and stable.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut ai, mut bi) = (a.char_indices().peekable(), b.char_indices().peekable());
    loop {
        match (ai.peek().copied(), bi.peek().copied()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((_, ca)), Some((_, cb))) => {
                if ca.is_ascii_digit() && cb.is_ascii_digit() {
                    let da = take_digits(&mut ai);
                    let db = take_digits(&mut bi);
                    let (ta, tb) = (da.trim_start_matches('0'), db.trim_start_matches('0'));
                    let ord = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                    if ord != Ordering::Equal {
                        return ord;
                    }
                } else {
                    let ord = ca.to_lowercase().cmp(cb.to_lowercase());
                    if ord != Ordering::Equal {
                        return ord;
                    }
                    ai.next();
                    bi.next();
                }
            }
        }
    }
}

fn take_digits(it: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> String {
    let mut s = String::new();
    while let Some((_, c)) = it.peek().copied() {
        if !c.is_ascii_digit() {
            break;
        }
        s.push(c);
        it.next();
    }
    s
}

/// Frames read from the PNG/JPEG files of a directory, in natural name order.
pub struct ImageSequenceSource {
    dir: PathBuf,
    files: Vec<PathBuf>,
    frame_rate_hz: f64,
    size: FrameSize,
    next: usize,
    /// The first image, decoded while opening to learn the size.
    first: Option<image::RgbImage>,
}

impl ImageSequenceSource {
    /// Lists `dir`; fails when it is unreadable, has no images, or the first image is unreadable.
    pub fn open(dir: impl AsRef<Path>, frame_rate_hz: f64) -> Result<Self, CaptureError> {
        check_frame_rate(frame_rate_hz)?;
        let dir = dir.as_ref().to_path_buf();
        let io_err = |source| CaptureError::Io { path: dir.clone(), source };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
            if is_image && path.is_file() {
                files.push(path);
            }
        }
        files.sort_by(|a, b| {
            let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            natural_cmp(&name(a), &name(b))
        });
        let Some(first_path) = files.first() else {
            return Err(CaptureError::NoImages { path: dir });
        };
        let first = load_rgb(first_path)?;
        tracing::debug!(dir = %dir.display(), images = files.len(), "opened image sequence");
        Ok(Self { size: FrameSize::of(&first), dir, files, frame_rate_hz, next: 0, first: Some(first) })
    }

    /// The image files in the order they are played.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The directory being played.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl FrameSource for ImageSequenceSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let Some(path) = self.files.get(self.next) else {
            return Ok(None);
        };
        let pixels = match self.first.take() {
            Some(first) => first,
            None => load_rgb(path)?,
        };
        let actual = FrameSize::of(&pixels);
        if actual != self.size {
            return Err(CaptureError::SizeMismatch { path: path.clone(), expected: self.size, actual });
        }
        let index = self.next as u64;
        self.next += 1;
        Ok(Some(Frame { pixels, timestamp_us: frame_time_us(index, self.frame_rate_hz), index }))
    }

    fn frame_rate_hz(&self) -> f64 {
        self.frame_rate_hz
    }

    fn size(&self) -> FrameSize {
        self.size
    }
}

/// How often a still image is delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StillRepeat {
    /// One frame, then the end.
    Once,
    /// The same picture forever, at this rate.
    Forever {
        /// Frames per second; must be positive and finite.
        frame_rate_hz: f64,
    },
}

/// One picture, delivered once or repeated.
pub struct StillImageSource {
    pixels: image::RgbImage,
    repeat: StillRepeat,
    next_index: u64,
}

impl StillImageSource {
    /// Loads `path` (PNG or JPEG).
    pub fn open(path: impl AsRef<Path>, repeat: StillRepeat) -> Result<Self, CaptureError> {
        if let StillRepeat::Forever { frame_rate_hz } = repeat {
            check_frame_rate(frame_rate_hz)?;
        }
        Ok(Self { pixels: load_rgb(path.as_ref())?, repeat, next_index: 0 })
    }

    /// Wraps an image already in memory.
    pub fn from_image(pixels: image::RgbImage, repeat: StillRepeat) -> Self {
        Self { pixels, repeat, next_index: 0 }
    }
}

impl FrameSource for StillImageSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        let index = self.next_index;
        if self.repeat == StillRepeat::Once && index > 0 {
            return Ok(None);
        }
        self.next_index += 1;
        Ok(Some(Frame { pixels: self.pixels.clone(), timestamp_us: frame_time_us(index, self.frame_rate_hz()), index }))
    }

    fn frame_rate_hz(&self) -> f64 {
        match self.repeat {
            StillRepeat::Once => DEFAULT_SEQUENCE_FRAME_RATE_HZ,
            StillRepeat::Forever { frame_rate_hz } => frame_rate_hz,
        }
    }

    fn size(&self) -> FrameSize {
        FrameSize::of(&self.pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_puts_2_before_10() {
        let mut names = vec!["f10.png", "f2.png", "f1.png", "F3.png", "f002.png", "a.png"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, vec!["a.png", "f1.png", "f002.png", "f2.png", "F3.png", "f10.png"]);
    }

    #[test]
    fn frame_times_follow_rate() {
        assert_eq!(frame_time_us(3, 30.0), 100_000);
        assert_eq!(frame_time_us(0, 25.0), 0);
    }
}
