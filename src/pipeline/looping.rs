//! A file source that plays forever: when the clip ends it is reopened and its timestamps continue.
//!
//! Owns the reopening and the timestamp offset. Receives an opener (called once per pass); emits the clip's frames
//! pass after pass with increasing timestamps and indices, so a live session driven from a file behaves like a camera
//! that never stops. A clip that yields no frame at all ends the source instead of spinning.

use crate::capture::{CaptureError, Frame, FrameSize, FrameSource, MICROS_PER_SECOND};

/// Builds a fresh pass of the clip.
pub type ClipOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// Replays a clip endlessly.
pub struct LoopingSource {
    open: ClipOpener,
    current: Box<dyn FrameSource>,
    /// Added to the current pass's timestamps.
    offset_us: i64,
    /// Timestamp of the last frame emitted, on the looped clock.
    last_us: Option<i64>,
    next_index: u64,
    /// Frames emitted by the current pass.
    pass_frames: u64,
}

impl LoopingSource {
    /// Opens the first pass now, so a missing or broken file is reported at once.
    pub fn new(mut open: ClipOpener) -> Result<Self, CaptureError> {
        let current = open()?;
        Ok(Self { open, current, offset_us: 0, last_us: None, next_index: 0, pass_frames: 0 })
    }

    fn frame_period_us(&self) -> i64 {
        let rate = self.current.frame_rate_hz();
        if rate.is_finite() && rate > 0.0 { (MICROS_PER_SECOND as f64 / rate).round() as i64 } else { 0 }
    }
}

impl FrameSource for LoopingSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        // At most one reopen per call: a clip that is empty on a fresh pass ends the source.
        for _ in 0..2 {
            if let Some(mut frame) = self.current.next_frame()? {
                frame.timestamp_us += self.offset_us;
                if let Some(last) = self.last_us {
                    // Keep time strictly increasing even if a pass starts at a negative or repeated timestamp.
                    frame.timestamp_us = frame.timestamp_us.max(last + 1);
                }
                frame.index = self.next_index;
                self.next_index += 1;
                self.pass_frames += 1;
                self.last_us = Some(frame.timestamp_us);
                return Ok(Some(frame));
            }
            if self.pass_frames == 0 {
                return Ok(None);
            }
            let period = self.frame_period_us();
            self.current = (self.open)()?;
            self.offset_us = self.last_us.map_or(0, |last| last + period);
            self.pass_frames = 0;
            tracing::debug!(offset_us = self.offset_us, "looping source: clip restarted");
        }
        Ok(None)
    }

    fn frame_rate_hz(&self) -> f64 {
        self.current.frame_rate_hz()
    }

    fn size(&self) -> FrameSize {
        self.current.size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{StillImageSource, StillRepeat};

    struct Clip {
        frames: u64,
        next: u64,
    }

    impl FrameSource for Clip {
        fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
            if self.next >= self.frames {
                return Ok(None);
            }
            let t = self.next;
            self.next += 1;
            Ok(Some(Frame { pixels: image::RgbImage::new(2, 2), timestamp_us: t as i64 * 40_000, index: t }))
        }
        fn frame_rate_hz(&self) -> f64 {
            25.0
        }
        fn size(&self) -> FrameSize {
            FrameSize::new(2, 2)
        }
    }

    #[test]
    fn passes_continue_the_clock_and_the_index() {
        let mut src =
            LoopingSource::new(Box::new(|| Ok(Box::new(Clip { frames: 3, next: 0 }) as Box<dyn FrameSource>)))
                .expect("opens");
        let frames: Vec<Frame> = (0..7).map(|_| src.next_frame().expect("reads").expect("never ends")).collect();
        let times: Vec<i64> = frames.iter().map(|f| f.timestamp_us).collect();
        assert_eq!(times, [0, 40_000, 80_000, 120_000, 160_000, 200_000, 240_000]);
        assert_eq!(frames.iter().map(|f| f.index).collect::<Vec<_>>(), (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_clip_ends_instead_of_spinning() {
        let mut src =
            LoopingSource::new(Box::new(|| Ok(Box::new(Clip { frames: 0, next: 0 }) as Box<dyn FrameSource>)))
                .expect("opens");
        assert!(src.next_frame().expect("reads").is_none());
    }

    #[test]
    fn a_failing_reopen_is_reported() {
        let mut opened = 0;
        let mut src = LoopingSource::new(Box::new(move || {
            opened += 1;
            if opened > 1 {
                return Err(CaptureError::InvalidSetting("gone".into()));
            }
            Ok(Box::new(StillImageSource::from_image(image::RgbImage::new(2, 2), StillRepeat::Once))
                as Box<dyn FrameSource>)
        }))
        .expect("opens");
        assert!(src.next_frame().expect("first frame").is_some());
        assert!(src.next_frame().is_err());
    }
}
