//! The live pipeline's shared counters: smoothed stage latencies, output counts, the capture's state and the last
//! engine error.
//!
//! Owns `MetricsInner` behind one mutex (`Metrics`) and the poison-tolerant `lock`. Receives updates from every stage
//! thread; the control thread reads it to publish `Stats` to the window.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::capture::CaptureStatus;

/// Weight of the newest sample in the smoothed latencies.
const LATENCY_SMOOTHING: f32 = 0.2;

/// Locks a mutex, taking over the data of a thread that panicked while holding it (the counters stay usable).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Exponentially smoothed milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Smoothed(pub(super) Option<f32>);

impl Smoothed {
    pub(super) fn add(&mut self, ms: f32) {
        self.0 = Some(self.0.map_or(ms, |old| old + LATENCY_SMOOTHING * (ms - old)));
    }
}

/// Counters and latencies the stages update and the control thread reports.
#[derive(Default)]
pub(super) struct MetricsInner {
    pub(super) face_ms: Smoothed,
    pub(super) model_ms: Smoothed,
    pub(super) upscale_ms: Smoothed,
    pub(super) glass_to_glass_ms: Smoothed,
    pub(super) outputs: u64,
    pub(super) capture_status: Option<CaptureStatus>,
    pub(super) capture_dropped: u64,
    /// Frames whose face was not found.
    pub(super) no_face: u64,
    pub(super) engine_error: Option<String>,
}

pub(super) type Metrics = Arc<Mutex<MetricsInner>>;
