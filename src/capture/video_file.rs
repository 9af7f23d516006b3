//! Video file source: H.264 in MP4 (classic or fragmented), decoded with OpenH264.
//!
//! Owns one open file, its parsed [`VideoTrack`](super::mp4_demux::VideoTrack) and an OpenH264
//! decoder. Receives a path; emits RGB [`Frame`]s in presentation order. The decoder runs with
//! `Flush::NoFlush` so that Main/High profile streams with B-frames are reordered by the decoder
//! rather than flushed early; at the end of the samples the remaining pictures are drained with
//! `flush_remaining`. Decoded pictures come out in presentation order, so each one takes the
//! smallest presentation time still pending. A file that ends early yields every complete frame,
//! then [`CaptureError::Truncated`] once, then `None`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::formats::YUVSource;

use super::avc::{avcc_to_annex_b, parameter_sets_to_annex_b};
use super::mp4_demux::{SampleRef, VideoTrack, read_video_track, ticks_to_us};
use super::yuv::i420_to_rgb;
use super::{CaptureError, Frame, FrameSize, FrameSource};

/// Frame rate reported when the file gives no usable timing.
const FALLBACK_FRAME_RATE_HZ: f64 = 30.0;
/// Consecutive undecodable samples after which we give up on the file.
const MAX_CONSECUTIVE_DECODE_ERRORS: u32 = 30;

/// Decodes an H.264 MP4 file frame by frame.
pub struct VideoFileSource {
    path: PathBuf,
    file: File,
    track: VideoTrack,
    decoder: Decoder,
    next_sample: usize,
    /// Presentation times (µs) of samples sent to the decoder whose pictures have not come out yet.
    pending_pts_us: BinaryHeap<Reverse<i64>>,
    ready: VecDeque<Frame>,
    next_index: u64,
    drained: bool,
    /// The end of the file was cut off; reported once after the last frame.
    truncation_pending: bool,
    /// Set once "no frames" has been reported for a file whose samples all failed to decode.
    reported_empty: bool,
    /// An error ended the source; later calls return `None`.
    failed: bool,
    consecutive_errors: u32,
    sample_buf: Vec<u8>,
    annex_b: Vec<u8>,
}

impl VideoFileSource {
    /// Opens and indexes `path`. Fails for unreadable, non-MP4, non-H.264 and frame-less files.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let track = read_video_track(&path)?;
        if track.samples.is_empty() {
            if track.truncated {
                return Err(CaptureError::Truncated { path, decoded_frames: 0 });
            }
            return Err(CaptureError::NoFrames { path });
        }
        let file = File::open(&path).map_err(|source| CaptureError::Io { path: path.clone(), source })?;
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        let decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
            .map_err(|e| CaptureError::Decode { path: path.clone(), message: e.to_string() })?;
        tracing::debug!(
            path = %path.display(),
            samples = track.samples.len(),
            width = track.width,
            height = track.height,
            fragmented = track.fragmented,
            truncated = track.truncated,
            "opened video file"
        );
        let truncation_pending = track.truncated;
        Ok(Self {
            path,
            file,
            track,
            decoder,
            next_sample: 0,
            pending_pts_us: BinaryHeap::new(),
            ready: VecDeque::new(),
            next_index: 0,
            drained: false,
            truncation_pending,
            reported_empty: false,
            failed: false,
            consecutive_errors: 0,
            sample_buf: Vec::new(),
            annex_b: Vec::new(),
        })
    }

    /// Number of complete samples (compressed frames) in the file.
    pub fn sample_count(&self) -> usize {
        self.track.samples.len()
    }

    /// Whether the file ended early (for example, a recording that was killed).
    pub fn is_truncated(&self) -> bool {
        self.track.truncated
    }

    /// Duration of the track in microseconds.
    pub fn duration_us(&self) -> i64 {
        ticks_to_us(self.track.duration_ticks, self.track.timescale)
    }

    fn decode_error(&self, message: impl Into<String>) -> CaptureError {
        CaptureError::Decode { path: self.path.clone(), message: message.into() }
    }

    /// Reads one sample and feeds it to the decoder; queues any picture that comes out.
    fn feed_sample(&mut self, sample: SampleRef) -> Result<(), CaptureError> {
        let size = usize::try_from(sample.size_bytes).unwrap_or(usize::MAX);
        self.sample_buf.resize(size, 0);
        let read =
            self.file.seek(SeekFrom::Start(sample.offset)).and_then(|_| self.file.read_exact(&mut self.sample_buf));
        if let Err(source) = read {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                // The file shrank under us: treat like truncation.
                self.truncation_pending = true;
                self.next_sample = self.track.samples.len();
                return Ok(());
            }
            return Err(CaptureError::Io { path: self.path.clone(), source });
        }
        self.annex_b.clear();
        if self.next_sample == 1 || sample.is_sync {
            parameter_sets_to_annex_b(self.track.avc.sps.iter().chain(self.track.avc.pps.iter()), &mut self.annex_b);
        }
        if let Err(e) = avcc_to_annex_b(&self.sample_buf, self.track.avc.nal_length_size, &mut self.annex_b) {
            tracing::warn!(path = %self.path.display(), sample = self.next_sample - 1, "skipping malformed sample: {e}");
            return self.count_error(e.to_string());
        }
        let pts_us = self.track.presentation_time_us(&sample);
        self.pending_pts_us.push(Reverse(pts_us));
        match self.decoder.decode(&self.annex_b) {
            Ok(Some(yuv)) => {
                let pixels = yuv_to_rgb(&yuv);
                self.consecutive_errors = 0;
                self.emit(pixels);
                Ok(())
            }
            Ok(None) => {
                self.consecutive_errors = 0;
                Ok(())
            }
            Err(e) => {
                // This sample's picture is lost; forget its presentation time.
                remove_value(&mut self.pending_pts_us, pts_us);
                tracing::warn!(path = %self.path.display(), sample = self.next_sample - 1, "decoder rejected sample: {e}");
                self.count_error(e.to_string())
            }
        }
    }

    fn count_error(&mut self, message: String) -> Result<(), CaptureError> {
        self.consecutive_errors += 1;
        if self.consecutive_errors >= MAX_CONSECUTIVE_DECODE_ERRORS {
            return Err(self.decode_error(format!(
                "{} samples in a row failed to decode; last: {message}",
                self.consecutive_errors
            )));
        }
        Ok(())
    }

    fn emit(&mut self, pixels: image::RgbImage) {
        let timestamp_us = match self.pending_pts_us.pop() {
            Some(Reverse(pts)) => pts,
            None => {
                // More pictures than samples: should not happen; continue the timeline.
                let step = (1e6 / self.frame_rate_hz()).round() as i64;
                self.ready.back().map_or(0, |f| f.timestamp_us.saturating_add(step))
            }
        };
        self.ready.push_back(Frame { pixels, timestamp_us, index: self.next_index });
        self.next_index += 1;
    }

    fn drain_decoder(&mut self) -> Result<(), CaptureError> {
        let pictures: Vec<image::RgbImage> = match self.decoder.flush_remaining() {
            Ok(list) => list.iter().map(yuv_to_rgb).collect(),
            Err(e) => return Err(self.decode_error(format!("flushing the last pictures failed: {e}"))),
        };
        for pixels in pictures {
            self.emit(pixels);
        }
        Ok(())
    }
}

impl FrameSource for VideoFileSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.failed {
            return Ok(None);
        }
        let result = self.next_frame_inner();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn frame_rate_hz(&self) -> f64 {
        let seconds = self.track.duration_ticks as f64 / f64::from(self.track.timescale.max(1));
        let rate = self.track.samples.len() as f64 / seconds;
        if rate.is_finite() && rate > 0.0 { rate } else { FALLBACK_FRAME_RATE_HZ }
    }

    fn size(&self) -> FrameSize {
        FrameSize::new(self.track.width, self.track.height)
    }
}

impl VideoFileSource {
    fn next_frame_inner(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Ok(Some(frame));
            }
            if let Some(&sample) = self.track.samples.get(self.next_sample) {
                self.next_sample += 1;
                self.feed_sample(sample)?;
                continue;
            }
            if !self.drained {
                self.drained = true;
                self.drain_decoder()?;
                continue;
            }
            if self.truncation_pending {
                self.truncation_pending = false;
                if self.next_index == 0 {
                    tracing::warn!(path = %self.path.display(), "truncated file produced no frames");
                }
                return Err(CaptureError::Truncated { path: self.path.clone(), decoded_frames: self.next_index });
            }
            if self.next_index == 0 && !self.reported_empty {
                self.reported_empty = true;
                return Err(CaptureError::NoFrames { path: self.path.clone() });
            }
            return Ok(None);
        }
    }
}

/// Converts a decoded I420 picture into an RGB image (black if the decoder's planes are short).
fn yuv_to_rgb(yuv: &DecodedYUV<'_>) -> image::RgbImage {
    i420_to_rgb(yuv).unwrap_or_else(|| {
        let (w, h) = yuv.dimensions();
        tracing::warn!(width = w, height = h, "decoded picture has short planes");
        image::RgbImage::new(u32::try_from(w).unwrap_or(0), u32::try_from(h).unwrap_or(0))
    })
}

/// Removes one occurrence of `value` from the heap.
fn remove_value(heap: &mut BinaryHeap<Reverse<i64>>, value: i64) {
    let mut items = std::mem::take(heap).into_vec();
    if let Some(pos) = items.iter().position(|Reverse(v)| *v == value) {
        items.swap_remove(pos);
    }
    *heap = BinaryHeap::from(items);
}
