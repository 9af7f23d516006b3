//! Runs a [`FrameSource`] on its own thread and hands the newest frame to the consumer.
//!
//! Owns the capture thread, a bounded crossbeam channel (capacity 1–2) and the shared status.
//! Receives an *opener* closure that builds the source on the capture thread (a webcam handle
//! must live on the thread that reads it) and [`CaptureOptions`]; emits frames through
//! [`CaptureThread::frames`], a [`CaptureStatus`] the UI can show, and [`CaptureStats`].
//!
//! Back-pressure: when the consumer is slower than the source, the oldest queued frame is thrown
//! away so the consumer always sees the newest one; each thrown-away frame counts as a drop.
//! A camera that is missing or vanishes is retried every `retry_interval_ms` while the status says
//! [`CaptureStatus::CameraLost`]; other errors end the thread with [`CaptureStatus::Failed`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError, bounded};

use super::{CaptureError, Frame, FrameSource, WebcamConfig, WebcamSource};

/// Longest single sleep while waiting, so that `stop` is noticed quickly.
const STOP_POLL_MS: u64 = 10;
/// Longest wait for one frame's timestamp when pacing in real time.
const MAX_FRAME_WAIT_MS: u64 = 1_000;
/// Channel capacity bounds.
const MIN_CHANNEL_CAPACITY: usize = 1;
const MAX_CHANNEL_CAPACITY: usize = 2;
/// Default wait between attempts to reopen a lost camera.
pub const DEFAULT_RETRY_INTERVAL_MS: u64 = 1_000;

/// How frames are released in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Release each frame at its timestamp (files play at normal speed; cameras are paced anyway).
    RealTime,
    /// Release frames as fast as the source produces them (with newest-wins dropping).
    Unpaced,
}

/// Settings for [`CaptureThread`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Whether frames are released at their timestamps or as fast as they come.
    pub pacing: Pacing,
    /// Frames held for the consumer, clamped to 1..=2.
    pub channel_capacity: usize,
    /// Wait before reopening a missing or lost camera.
    pub retry_interval_ms: u64,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self { pacing: Pacing::RealTime, channel_capacity: 1, retry_interval_ms: DEFAULT_RETRY_INTERVAL_MS }
    }
}

/// What the capture thread is doing, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureStatus {
    /// Opening the source.
    Starting,
    /// Delivering frames.
    Running,
    /// The source has no more frames.
    Ended,
    /// The camera is missing or stopped; another attempt follows in `retry_in_ms`.
    CameraLost {
        /// Milliseconds until the next attempt to reopen the camera.
        retry_in_ms: u64,
    },
    /// An error ended capture; the message is meant for the user.
    Failed(String),
    /// [`CaptureThread::stop`] was called.
    Stopped,
}

/// Frame counters of a capture thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaptureStats {
    /// Frames read from the source.
    pub frames_captured: u64,
    /// Frames thrown away because the consumer had not taken the previous one yet.
    pub frames_dropped: u64,
    /// Index of the newest frame put into the channel.
    pub newest_index: Option<u64>,
}

struct Shared {
    stop: AtomicBool,
    captured: AtomicU64,
    dropped: AtomicU64,
    /// Newest index + 1 (0 = none yet).
    newest_plus_one: AtomicU64,
    status: Mutex<CaptureStatus>,
    /// When each of the newest frames was captured (index, instant): the start of glass-to-glass latency. Bounded
    /// by `CAPTURE_TIMES` and allocated once.
    capture_times: Mutex<std::collections::VecDeque<(u64, Instant)>>,
}

/// Capture instants kept: more than any pipeline holds frames in flight.
const CAPTURE_TIMES: usize = 16;

impl Shared {
    fn set_status(&self, status: CaptureStatus) {
        tracing::debug!(?status, "capture status");
        *self.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = status;
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sleeps up to `duration`, returning early (false) when stop is requested.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(STOP_POLL_MS)));
        }
    }
}

/// Builds a source on the capture thread; called again after a retryable failure.
pub type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// A frame source running on its own thread.
pub struct CaptureThread {
    frames: Receiver<Frame>,
    shared: Arc<Shared>,
    join: Option<JoinHandle<()>>,
}

impl CaptureThread {
    /// Starts a thread named `name` that calls `opener` and streams the source's frames.
    pub fn spawn<F>(name: &str, opener: F, options: CaptureOptions) -> Result<Self, CaptureError>
    where
        F: FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send + 'static,
    {
        let capacity = options.channel_capacity.clamp(MIN_CHANNEL_CAPACITY, MAX_CHANNEL_CAPACITY);
        let (tx, rx) = bounded(capacity);
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            newest_plus_one: AtomicU64::new(0),
            status: Mutex::new(CaptureStatus::Starting),
            capture_times: Mutex::new(std::collections::VecDeque::with_capacity(CAPTURE_TIMES)),
        });
        let worker = Worker { shared: Arc::clone(&shared), tx, drain: rx.clone(), options };
        let opener: SourceOpener = Box::new(opener);
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || worker.run(opener))
            .map_err(|e| CaptureError::InvalidSetting(format!("cannot start capture thread: {e}")))?;
        Ok(Self { frames: rx, shared, join: Some(join) })
    }

    /// Starts capturing from a webcam; the camera is opened (and reopened) on the capture thread.
    pub fn webcam(config: WebcamConfig, options: CaptureOptions) -> Result<Self, CaptureError> {
        Self::spawn(
            "capture-webcam",
            move || WebcamSource::open(config).map(|s| Box::new(s) as Box<dyn FrameSource>),
            options,
        )
    }

    /// The channel that carries frames (newest wins).
    pub fn frames(&self) -> &Receiver<Frame> {
        &self.frames
    }

    /// The newest frame available now, if any; never blocks.
    pub fn try_latest(&self) -> Option<Frame> {
        let mut newest = None;
        while let Ok(frame) = self.frames.try_recv() {
            newest = Some(frame);
        }
        newest
    }

    /// Waits up to `timeout` for a frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Frame> {
        self.frames.recv_timeout(timeout).ok()
    }

    /// When frame `index` was captured: the moment the source delivered it (a file played in real time: the moment
    /// it was due), before it waited in the channel. `None` once it is older than the last few frames.
    pub fn captured_at(&self, index: u64) -> Option<Instant> {
        let times = self.shared.capture_times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        times.iter().rev().find(|(i, _)| *i == index).map(|(_, t)| *t)
    }

    /// Current status.
    pub fn status(&self) -> CaptureStatus {
        self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Current counters.
    pub fn stats(&self) -> CaptureStats {
        let newest = self.shared.newest_plus_one.load(Ordering::Relaxed);
        CaptureStats {
            frames_captured: self.shared.captured.load(Ordering::Relaxed),
            frames_dropped: self.shared.dropped.load(Ordering::Relaxed),
            newest_index: newest.checked_sub(1),
        }
    }

    /// Stops the thread, waits for it and returns the final status.
    pub fn stop(mut self) -> CaptureStatus {
        self.shutdown();
        self.status()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(join) = self.join.take()
            && join.join().is_err()
        {
            self.shared.set_status(CaptureStatus::Failed("capture thread panicked".into()));
        }
    }
}

impl Drop for CaptureThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    shared: Arc<Shared>,
    tx: Sender<Frame>,
    /// A receiver kept by the producer to throw away the stale frame when the channel is full.
    drain: Receiver<Frame>,
    options: CaptureOptions,
}

impl Worker {
    fn run(self, mut opener: SourceOpener) {
        let retry = Duration::from_millis(self.options.retry_interval_ms);
        'open: while !self.shared.stopping() {
            let mut source = match opener() {
                Ok(source) => source,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(
                        "capture source unavailable, retrying in {} ms: {e}",
                        self.options.retry_interval_ms
                    );
                    self.shared.set_status(CaptureStatus::CameraLost { retry_in_ms: self.options.retry_interval_ms });
                    self.shared.sleep(retry);
                    continue 'open;
                }
                Err(e) => {
                    tracing::error!("cannot open capture source: {e}");
                    self.shared.set_status(CaptureStatus::Failed(e.to_string()));
                    return;
                }
            };
            self.shared.set_status(CaptureStatus::Running);
            let mut clock: Option<(Instant, i64)> = None;
            loop {
                if self.shared.stopping() {
                    break 'open;
                }
                match source.next_frame() {
                    Ok(Some(frame)) => {
                        if self.options.pacing == Pacing::RealTime && !self.pace(&mut clock, frame.timestamp_us) {
                            break 'open;
                        }
                        self.stamp(frame.index);
                        self.send_newest(frame);
                    }
                    Ok(None) => {
                        self.shared.set_status(CaptureStatus::Ended);
                        return;
                    }
                    Err(e) if e.is_retryable() => {
                        tracing::warn!("capture source lost, retrying in {} ms: {e}", self.options.retry_interval_ms);
                        drop(source);
                        self.shared
                            .set_status(CaptureStatus::CameraLost { retry_in_ms: self.options.retry_interval_ms });
                        self.shared.sleep(retry);
                        continue 'open;
                    }
                    Err(e) => {
                        tracing::error!("capture failed: {e}");
                        self.shared.set_status(CaptureStatus::Failed(e.to_string()));
                        return;
                    }
                }
            }
        }
        self.shared.set_status(CaptureStatus::Stopped);
    }

    /// Waits until the frame at `timestamp_us` is due; `false` when stop was requested meanwhile.
    ///
    /// `clock` pairs a wall-clock instant with the timestamp shown at that instant. A jump of more
    /// than [`MAX_FRAME_WAIT_MS`] (a gap in the file, a clock reset) re-bases the clock instead of
    /// stalling.
    fn pace(&self, clock: &mut Option<(Instant, i64)>, timestamp_us: i64) -> bool {
        let now = Instant::now();
        let (start, first_us) = *clock.get_or_insert((now, timestamp_us));
        let offset_us = u64::try_from(timestamp_us.saturating_sub(first_us)).unwrap_or(0);
        let due = start.checked_add(Duration::from_micros(offset_us));
        let wait = due.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
        if wait > Duration::from_millis(MAX_FRAME_WAIT_MS) {
            *clock = Some((now, timestamp_us));
            return !self.shared.stopping();
        }
        self.shared.sleep(wait)
    }

    /// Records that frame `index` is captured now (the oldest record makes room; nothing is allocated).
    fn stamp(&self, index: u64) {
        let mut times = self.shared.capture_times.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if times.len() == CAPTURE_TIMES {
            times.pop_front();
        }
        times.push_back((index, Instant::now()));
    }

    fn send_newest(&self, frame: Frame) {
        let index = frame.index;
        self.shared.captured.fetch_add(1, Ordering::Relaxed);
        let mut pending = frame;
        loop {
            match self.tx.try_send(pending) {
                Ok(()) => {
                    self.shared.newest_plus_one.store(index + 1, Ordering::Relaxed);
                    return;
                }
                Err(TrySendError::Full(back)) => {
                    if self.drain.try_recv().is_ok() {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    pending = back;
                }
                // Unreachable while we hold `drain`, but never spin.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}
