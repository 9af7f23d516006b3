//! Recording: H.264 encoding of frames into a crash-safe fragmented MP4 file.
//!
//! Owns the recorder thread, its bounded input queue, the encoder ([`encoder`]) and the fMP4
//! muxer ([`fmp4`]). Receives [`Frame`]s through [`Recorder::push`], which never blocks (a frame
//! that does not fit in the queue is dropped and counted); emits a file and, on
//! [`Recorder::stop`], a [`RecordingSummary`].
//!
//! **Timing.** Frame timestamps are used as they are (variable frame rate is fine): the first
//! frame is time 0 and each frame is shown until the next one's timestamp. Timestamps that do not
//! increase are moved 1/90000 s after their predecessor. The last frame lasts as long as the one
//! before it.
//!
//! **Crash safety and recovery rule.** The file is written as `<name>.partial.mp4` (see
//! [`partial_path_for`]): an init segment, then one `moof`+`mdat` fragment per keyframe interval
//! (a keyframe is forced every `keyframe_interval_ms`, 2 s by default). Each fragment is written
//! in one piece, flushed and `fdatasync`ed. On a clean [`Recorder::stop`] the file is renamed to
//! the requested name. After a crash, SIGKILL or power cut, `<name>.partial.mp4` is a valid MP4
//! that plays (ffmpeg/ffprobe/our reader) up to its last whole fragment, i.e. it loses at most the
//! last ~2 s; [`recover_partial`] cuts off a half-written last fragment and renames it to
//! `<name>.mp4`. A write error (disk full) stops the recording, cuts the file back to its last
//! whole fragment, renames it like a clean stop and reports the error with the summary.

pub mod encoder;
pub mod fmp4;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};

use crate::capture::{Frame, FrameSize, MICROS_PER_SECOND};
use encoder::{EncoderSettings, H264Encoder};
use fmp4::{EncodedSample, FragmentPolicy, FragmentedMp4Writer, TIMESCALE_HZ, TrackParams};

/// Suffix of a recording that is still being written (or was interrupted).
pub const PARTIAL_SUFFIX: &str = ".partial.mp4";
/// Default distance between keyframes, which is also the most a crash can lose.
pub const DEFAULT_KEYFRAME_INTERVAL_MS: u32 = 2_000;
/// Default target bit rate (bits per second) handed to OpenH264.
///
/// With frame skipping off (so no frame is ever lost) OpenH264 0.9 does not enforce the target;
/// it encodes at near-constant quality: ~1.2 Mbit/s and 40–42 dB PSNR for 512x512 at 30 fps.
pub const DEFAULT_BITRATE_BPS: u32 = 8_000_000;
/// Default input queue length in frames.
pub const DEFAULT_QUEUE_FRAMES: usize = 8;
/// Default frame-rate hint for rate control.
pub const DEFAULT_FRAME_RATE_HINT_HZ: f64 = 30.0;
/// A fragment is cut even without a keyframe after this many keyframe intervals.
const MAX_FRAGMENT_INTERVALS: u64 = 2;
/// A keyframe starts a new fragment only if the current one is at least this fraction of the interval.
const MIN_FRAGMENT_FRACTION: f64 = 0.5;

/// Recorder settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecorderConfig {
    /// Bit-rate target (see [`DEFAULT_BITRATE_BPS`] for how OpenH264 treats it).
    pub bitrate_bps: u32,
    /// Distance between keyframes, which is also the fragment length and the most a crash loses.
    pub keyframe_interval_ms: u32,
    /// Frames waiting for the encoder before `push` starts dropping.
    pub queue_frames: usize,
    /// Expected frames per second, for rate control and the length of a lone last frame; must be
    /// positive.
    pub frame_rate_hint_hz: f64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: DEFAULT_BITRATE_BPS,
            keyframe_interval_ms: DEFAULT_KEYFRAME_INTERVAL_MS,
            queue_frames: DEFAULT_QUEUE_FRAMES,
            frame_rate_hint_hz: DEFAULT_FRAME_RATE_HINT_HZ,
        }
    }
}

/// What the recorder is doing, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecorderState {
    /// Accepting and encoding frames.
    Recording,
    /// Finished cleanly.
    Finished,
    /// Stopped by an error; what was written before it stays playable.
    Failed(String),
}

/// Result of [`Recorder::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The frame is waiting for the encoder.
    Queued,
    /// The encoder is behind; the frame was dropped and counted.
    Dropped,
    /// The recorder has stopped (error or stop); the frame was discarded.
    NotRecording,
}

/// Live counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecorderStats {
    /// Frames the encoder has compressed so far, including those not yet on disk.
    pub frames_encoded: u64,
    /// Frames inside whole fragments on disk: these survive a crash.
    pub frames_durable: u64,
    /// Frames dropped because the queue was full or their size differed from the first frame.
    pub frames_dropped: u64,
    /// Bytes of whole fragments (and the init segment) written so far.
    pub bytes_written: u64,
}

/// What a finished (or failed) recording contains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordingSummary {
    /// Where the file is (`None` for custom writers).
    pub path: Option<PathBuf>,
    /// Frames in the file.
    pub frames_written: u64,
    /// Duration of the file in microseconds.
    pub duration_us: i64,
    /// Frames dropped because the encoder lagged or had the wrong size.
    pub frames_dropped: u64,
    /// Size of the file in bytes.
    pub bytes_written: u64,
}

/// Recording errors.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The `.partial.mp4` file could not be created (missing directory, no permission, ...).
    #[error("cannot create recording file {path}: {source}")]
    CreateFile {
        /// The file that was to be created.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The first frame has a size H.264 cannot encode; nothing was recorded.
    #[error("frames of {size} cannot be encoded: H.264 needs even, non-zero sides up to 3840x2160")]
    InvalidFrameSize {
        /// Size of the offending frame in pixels.
        size: FrameSize,
    },
    /// A frame handed to the encoder differs in size from the first one.
    #[error("frame size changed from {expected} to {actual} during recording")]
    FrameSizeChanged {
        /// Size of the first frame, which the encoder was set up for.
        expected: FrameSize,
        /// Size of this frame.
        actual: FrameSize,
    },
    /// OpenH264 could not be set up or failed to encode a frame; the text is its explanation.
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    /// Writing to the file failed (disk full, I/O error); the file was cut back to its last whole
    /// fragment and kept.
    #[error("writing the recording failed ({message}); {} frames up to that point are kept", summary.frames_written)]
    Write {
        /// The operating system's error.
        message: String,
        /// What the kept file contains.
        summary: Box<RecordingSummary>,
    },
    /// Renaming the finished file, or repairing a partial one, failed on the file system.
    #[error("cannot finish recording {path}: {source}")]
    Finalize {
        /// The file being renamed or repaired.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The encoder thread panicked; the `.partial.mp4` file is left in place for
    /// [`recover_partial`].
    #[error("the recorder thread crashed")]
    ThreadPanicked,
    /// A [`RecorderConfig`] value is unusable (zero bit rate or keyframe interval, non-positive
    /// frame rate), or the recorder thread could not be started.
    #[error("invalid recorder setting: {0}")]
    InvalidSetting(String),
    /// [`recover_partial`] was given a file that is not an interrupted recording with a whole init
    /// segment.
    #[error("{path} is not a recoverable recording: {reason}")]
    NotRecoverable {
        /// The file given.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
}

/// `out.mp4` → `out.partial.mp4`.
pub fn partial_path_for(target: &Path) -> PathBuf {
    let stem = target.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!("{stem}{PARTIAL_SUFFIX}"))
}

/// Destination of the encoded bytes: a file (synced, truncatable) or any writer.
enum Sink {
    File(File),
    Writer(Box<dyn Write + Send>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::File(f) => f.write(buf),
            Self::Writer(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::File(f) => f.flush(),
            Self::Writer(w) => w.flush(),
        }
    }
}

impl Sink {
    fn sync(&mut self) -> std::io::Result<()> {
        match self {
            Self::File(f) => f.sync_data(),
            Self::Writer(w) => w.flush(),
        }
    }

    /// Cuts a file back to `len` bytes (drops a half-written fragment).
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        match self {
            Self::File(f) => f.set_len(len),
            Self::Writer(_) => Ok(()),
        }
    }
}

struct Shared {
    encoded: AtomicU64,
    durable: AtomicU64,
    dropped: AtomicU64,
    bytes: AtomicU64,
    state: Mutex<RecorderState>,
}

impl Shared {
    fn set_state(&self, state: RecorderState) {
        *self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }
}

/// Where a file recording lives.
#[derive(Debug, Clone)]
struct FileTarget {
    target: PathBuf,
    partial: PathBuf,
}

type WorkerResult = Result<RecordingSummary, RecordError>;

/// Encodes frames on its own thread into a fragmented MP4.
pub struct Recorder {
    tx: Option<Sender<Frame>>,
    shared: Arc<Shared>,
    join: Option<JoinHandle<WorkerResult>>,
}

impl Recorder {
    /// Starts recording into `path` (written as `<stem>.partial.mp4` until [`stop`](Self::stop)).
    pub fn start(path: impl AsRef<Path>, config: RecorderConfig) -> Result<Self, RecordError> {
        let target = path.as_ref().to_path_buf();
        let partial = partial_path_for(&target);
        let file =
            File::create(&partial).map_err(|source| RecordError::CreateFile { path: partial.clone(), source })?;
        tracing::info!(path = %partial.display(), "recording started");
        Self::spawn(Sink::File(file), Some(FileTarget { target, partial }), config)
    }

    /// Starts recording into any writer (no rename, no fsync); used for tests and streaming.
    pub fn start_with_writer<W: Write + Send + 'static>(
        writer: W,
        config: RecorderConfig,
    ) -> Result<Self, RecordError> {
        Self::spawn(Sink::Writer(Box::new(writer)), None, config)
    }

    fn spawn(sink: Sink, target: Option<FileTarget>, config: RecorderConfig) -> Result<Self, RecordError> {
        if config.keyframe_interval_ms == 0
            || config.frame_rate_hint_hz.is_nan()
            || config.frame_rate_hint_hz <= 0.0
            || config.bitrate_bps == 0
        {
            return Err(RecordError::InvalidSetting(format!("{config:?}")));
        }
        let (tx, rx) = bounded(config.queue_frames.max(1));
        let shared = Arc::new(Shared {
            encoded: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            state: Mutex::new(RecorderState::Recording),
        });
        let worker_shared = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run_worker(rx, sink, target, config, &worker_shared))
            .map_err(|e| RecordError::InvalidSetting(format!("cannot start recorder thread: {e}")))?;
        Ok(Self { tx: Some(tx), shared, join: Some(join) })
    }

    /// Hands a frame to the encoder thread; never blocks.
    pub fn push(&self, frame: Frame) -> PushOutcome {
        let Some(tx) = &self.tx else { return PushOutcome::NotRecording };
        match tx.try_send(frame) {
            Ok(()) => PushOutcome::Queued,
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                PushOutcome::Dropped
            }
            Err(TrySendError::Disconnected(_)) => PushOutcome::NotRecording,
        }
    }

    /// Current state.
    pub fn state(&self) -> RecorderState {
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Current counters.
    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            frames_encoded: self.shared.encoded.load(Ordering::Relaxed),
            frames_durable: self.shared.durable.load(Ordering::Relaxed),
            frames_dropped: self.shared.dropped.load(Ordering::Relaxed),
            bytes_written: self.shared.bytes.load(Ordering::Relaxed),
        }
    }

    /// Encodes what is queued, finishes the file, renames it and returns the summary.
    pub fn stop(mut self) -> Result<RecordingSummary, RecordError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<RecordingSummary, RecordError> {
        self.tx = None; // closes the queue; the worker drains it and ends
        let Some(join) = self.join.take() else { return Err(RecordError::ThreadPanicked) };
        let result = join.join().map_err(|_| RecordError::ThreadPanicked)?;
        let state = match &result {
            Ok(_) => RecorderState::Finished,
            Err(e) => RecorderState::Failed(e.to_string()),
        };
        self.shared.set_state(state);
        result
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.join.is_some()
            && let Err(e) = self.finish()
        {
            tracing::error!("recording ended with an error: {e}");
        }
    }
}

/// Encoder thread state.
struct Worker<'a> {
    config: RecorderConfig,
    shared: &'a Shared,
    encoder: Option<H264Encoder>,
    muxer: Option<FragmentedMp4Writer<Sink>>,
    /// Sink kept until the first keyframe gives us SPS/PPS for the init segment.
    sink: Option<Sink>,
    first_timestamp_us: Option<i64>,
    last_keyframe_ticks: Option<u64>,
    last_ticks: Option<u64>,
    size_warned: bool,
}

fn run_worker(
    rx: Receiver<Frame>,
    sink: Sink,
    target: Option<FileTarget>,
    config: RecorderConfig,
    shared: &Shared,
) -> WorkerResult {
    let mut worker = Worker {
        config,
        shared,
        encoder: None,
        muxer: None,
        sink: Some(sink),
        first_timestamp_us: None,
        last_keyframe_ticks: None,
        last_ticks: None,
        size_warned: false,
    };
    let mut failure: Option<RecordError> = None;
    for frame in &rx {
        if let Err(e) = worker.handle(frame) {
            tracing::error!("recording stopped: {e}");
            shared.set_state(RecorderState::Failed(e.to_string()));
            failure = Some(e);
            break;
        }
    }
    drop(rx); // further pushes report NotRecording
    worker.close(target, failure)
}

impl Worker<'_> {
    fn handle(&mut self, frame: Frame) -> Result<(), RecordError> {
        let size = FrameSize::of(&frame.pixels);
        if self.encoder.is_none() {
            let settings = EncoderSettings {
                bitrate_bps: self.config.bitrate_bps,
                frame_rate_hint_hz: self.config.frame_rate_hint_hz,
            };
            self.encoder = Some(H264Encoder::new(size, settings)?);
        }
        let Some(encoder) = self.encoder.as_mut() else { return Ok(()) };
        if encoder.size() != size {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.size_warned {
                self.size_warned = true;
                tracing::warn!(expected = %encoder.size(), actual = %size, "dropping frames whose size differs from the first frame");
            }
            return Ok(());
        }
        let first_us = *self.first_timestamp_us.get_or_insert(frame.timestamp_us);
        let relative_us = u64::try_from(frame.timestamp_us.saturating_sub(first_us)).unwrap_or(0);
        let half_us = MICROS_PER_SECOND as u128 / 2;
        let mut ticks =
            ((u128::from(relative_us) * u128::from(TIMESCALE_HZ) + half_us) / MICROS_PER_SECOND as u128) as u64;
        if let Some(last) = self.last_ticks {
            ticks = ticks.max(last + 1);
        }
        self.last_ticks = Some(ticks);
        let interval_ticks = u64::from(self.config.keyframe_interval_ms) * u64::from(TIMESCALE_HZ) / 1_000;
        let force_keyframe = self.last_keyframe_ticks.is_none_or(|k| ticks.saturating_sub(k) >= interval_ticks);
        let picture = encoder.encode(&frame.pixels, force_keyframe)?;
        if picture.is_keyframe {
            self.last_keyframe_ticks = Some(ticks);
        }
        self.shared.encoded.fetch_add(1, Ordering::Relaxed);

        if self.muxer.is_none() {
            let Some((sps, pps)) = encoder.parameter_sets() else {
                return Err(RecordError::Encoder("the first encoded frame carried no SPS/PPS".into()));
            };
            let params = TrackParams { size, timescale: TIMESCALE_HZ, sps: sps.to_vec(), pps: pps.to_vec() };
            let policy = FragmentPolicy {
                min_fragment_ticks: (interval_ticks as f64 * MIN_FRAGMENT_FRACTION) as u64,
                max_fragment_ticks: interval_ticks * MAX_FRAGMENT_INTERVALS,
                fallback_duration_ticks: (f64::from(TIMESCALE_HZ) / self.config.frame_rate_hint_hz).round() as u32,
            };
            let Some(sink) = self.sink.take() else { return Ok(()) };
            let muxer = FragmentedMp4Writer::new(sink, &params, policy).map_err(|e| self.write_error(&e, None))?;
            self.shared.bytes.store(muxer.bytes_written(), Ordering::Relaxed);
            self.muxer = Some(muxer);
        }
        let Some(muxer) = self.muxer.as_mut() else { return Ok(()) };
        let sample = EncodedSample { data: picture.avcc, decode_time_ticks: ticks, is_sync: picture.is_keyframe };
        match muxer.push(sample) {
            Ok(true) => {
                if let Err(e) = muxer.get_mut().sync() {
                    tracing::warn!("fdatasync of recording failed: {e}");
                }
                self.shared.durable.store(muxer.samples_written(), Ordering::Relaxed);
                self.shared.bytes.store(muxer.bytes_written(), Ordering::Relaxed);
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => {
                let (frames, end) = (muxer.samples_written(), muxer.written_end_ticks());
                Err(self.write_error(&e, Some((frames, end))))
            }
        }
    }

    fn write_error(&self, e: &std::io::Error, written: Option<(u64, u64)>) -> RecordError {
        let (frames_written, end_ticks) = written.unwrap_or((0, 0));
        RecordError::Write {
            message: e.to_string(),
            summary: Box::new(RecordingSummary {
                path: None,
                frames_written,
                duration_us: ticks_to_us(end_ticks),
                frames_dropped: self.shared.dropped.load(Ordering::Relaxed),
                bytes_written: self.shared.bytes.load(Ordering::Relaxed),
            }),
        }
    }

    /// Finishes the file after the queue closed or an error; renames file recordings.
    fn close(mut self, target: Option<FileTarget>, failure: Option<RecordError>) -> WorkerResult {
        let mut failure = failure;
        let mut summary =
            RecordingSummary { frames_dropped: self.shared.dropped.load(Ordering::Relaxed), ..Default::default() };
        if let Some(mut muxer) = self.muxer.take() {
            summary.frames_written = muxer.samples_written();
            summary.duration_us = ticks_to_us(muxer.written_end_ticks());
            summary.bytes_written = muxer.bytes_written();
            if failure.is_some() {
                // Drop the half-written fragment so the file ends on a whole box.
                let good_len = muxer.bytes_written();
                let sink = muxer.get_mut();
                if let Err(e) = sink.truncate(good_len).and_then(|()| sink.sync()) {
                    tracing::warn!("could not trim the failed recording: {e}");
                }
            } else {
                match muxer.finish() {
                    Ok(()) => {
                        if let Err(e) = muxer.get_mut().sync() {
                            tracing::warn!("fdatasync of recording failed: {e}");
                        }
                        summary.frames_written = muxer.samples_written();
                        summary.duration_us = ticks_to_us(muxer.written_end_ticks());
                        summary.bytes_written = muxer.bytes_written();
                    }
                    Err(e) => {
                        let good_len = muxer.bytes_written();
                        let sink = muxer.get_mut();
                        if let Err(trim) = sink.truncate(good_len).and_then(|()| sink.sync()) {
                            tracing::warn!("could not trim the failed recording: {trim}");
                        }
                        failure =
                            Some(self.write_error(&e, Some((muxer.samples_written(), muxer.written_end_ticks()))));
                    }
                }
            }
        }
        self.shared.durable.store(summary.frames_written, Ordering::Relaxed);
        if let Some(t) = &target
            && self.encoder.is_none()
            && failure.is_none()
        {
            // No frame ever arrived: leave no empty file behind.
            if let Err(e) = std::fs::remove_file(&t.partial) {
                tracing::warn!("could not remove empty recording {}: {e}", t.partial.display());
            }
            return Ok(summary);
        }
        if let Some(t) = &target {
            summary.path = Some(t.partial.clone());
            match std::fs::rename(&t.partial, &t.target) {
                Ok(()) => summary.path = Some(t.target.clone()),
                Err(e) if failure.is_none() => {
                    return Err(RecordError::Finalize { path: t.target.clone(), source: e });
                }
                Err(e) => tracing::warn!("could not rename {}: {e}", t.partial.display()),
            }
            tracing::info!(path = %t.target.display(), frames = summary.frames_written, "recording closed");
        }
        match failure {
            None => Ok(summary),
            Some(RecordError::Write { message, summary: partial }) => {
                let merged = RecordingSummary { path: summary.path, ..*partial };
                Err(RecordError::Write { message, summary: Box::new(merged) })
            }
            Some(other) => Err(other),
        }
    }
}

fn ticks_to_us(ticks: u64) -> i64 {
    i64::try_from(u128::from(ticks) * MICROS_PER_SECOND as u128 / u128::from(TIMESCALE_HZ)).unwrap_or(i64::MAX)
}

/// What [`recover_partial`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRecording {
    /// The repaired file, `<name>.mp4`.
    pub path: PathBuf,
    /// Bytes of a half-written last fragment that were cut off.
    pub bytes_removed: u64,
}

/// Turns an interrupted `<name>.partial.mp4` into a clean `<name>.mp4`.
///
/// Keeps the init segment and every whole `moof`+`mdat` pair, cuts off anything after them,
/// and renames the file. Fails when the file has no init segment (nothing playable).
pub fn recover_partial(partial: &Path) -> Result<RecoveredRecording, RecordError> {
    let not = |reason: &str| RecordError::NotRecoverable { path: partial.to_path_buf(), reason: reason.into() };
    let name = partial.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some(stem) = name.strip_suffix(PARTIAL_SUFFIX) else {
        return Err(not("the name does not end in .partial.mp4"));
    };
    let io = |source| RecordError::Finalize { path: partial.to_path_buf(), source };
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(partial).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let boxes = crate::capture::mp4_demux::scan_top_level_boxes(&mut file, len).map_err(io)?;
    let has_moov = boxes.iter().any(|b| &b.kind == b"moov" && !b.truncated);
    if !has_moov {
        return Err(not("the init segment (moov) is missing or incomplete"));
    }
    // Keep up to the end of the last complete mdat that follows a complete moof (or the moov).
    let mut keep = 0u64;
    for b in boxes.iter().take_while(|b| !b.truncated) {
        if matches!(&b.kind, b"ftyp" | b"moov" | b"mdat") {
            keep = b.offset + b.size_bytes;
        }
    }
    file.set_len(keep).map_err(io)?;
    file.sync_all().map_err(io)?;
    let target = partial.with_file_name(format!("{stem}.mp4"));
    std::fs::rename(partial, &target).map_err(io)?;
    Ok(RecoveredRecording { path: target, bytes_removed: len - keep })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_name_keeps_directory() {
        assert_eq!(partial_path_for(Path::new("/tmp/a/take1.mp4")), PathBuf::from("/tmp/a/take1.partial.mp4"));
    }
}
