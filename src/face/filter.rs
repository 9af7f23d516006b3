//! Temporal smoothing of landmarks with the One-Euro filter.
//!
//! Owns `OneEuroFilter` (one scalar, MediaPipe's variant: the speed that raises the cutoff is measured in object sizes
//! per second, so the same settings work at any face size) and `LandmarkSmoother` (one filter per coordinate of every
//! landmark, with the face size taken from the landmarks' bounding box). Receives landmark sets with timestamps in
//! seconds; emits smoothed copies. Timestamps that do not increase pass values through unchanged.

use std::f32::consts::PI;

use super::geometry::{Point2, Rect};

/// MediaPipe's face-landmark smoothing settings (`face_landmarks_smoothing.pbtxt`): the cutoff at rest, in Hz.
pub const DEFAULT_MIN_CUTOFF: f32 = 0.05;
/// MediaPipe's cutoff rise per (object size per second).
pub const DEFAULT_BETA: f32 = 80.0;
/// MediaPipe's cutoff of the speed estimate, in Hz.
pub const DEFAULT_D_CUTOFF: f32 = 1.0;
/// Rate assumed before two timestamps have been seen.
const INITIAL_FREQUENCY: f32 = 30.0;

/// One-Euro filter settings. Cutoffs in Hz; `beta` per (object size per second).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneEuroParams {
    /// Cutoff at rest: lower removes more jitter from a still face.
    pub min_cutoff: f32,
    /// How fast the cutoff rises with speed: higher lags less behind fast motion.
    pub beta: f32,
    /// Cutoff of the speed estimate.
    pub d_cutoff: f32,
}

impl Default for OneEuroParams {
    fn default() -> Self {
        Self { min_cutoff: DEFAULT_MIN_CUTOFF, beta: DEFAULT_BETA, d_cutoff: DEFAULT_D_CUTOFF }
    }
}

fn alpha(cutoff: f32, frequency: f32) -> f32 {
    let tau = 1.0 / (2.0 * PI * cutoff.max(f32::EPSILON));
    let period = 1.0 / frequency;
    1.0 / (1.0 + tau / period)
}

#[derive(Clone, Copy, Debug, Default)]
struct LowPass {
    /// (last raw input, last output)
    state: Option<(f32, f32)>,
}

impl LowPass {
    fn apply(&mut self, value: f32, alpha: f32) -> f32 {
        let out = match self.state {
            Some((_, prev)) => alpha * value + (1.0 - alpha) * prev,
            None => value,
        };
        self.state = Some((value, out));
        out
    }

    fn last_raw(&self) -> Option<f32> {
        self.state.map(|(raw, _)| raw)
    }
}

/// A One-Euro filter over one scalar.
#[derive(Clone, Debug)]
pub struct OneEuroFilter {
    params: OneEuroParams,
    frequency: f32,
    last_time: Option<f64>,
    x: LowPass,
    dx: LowPass,
}

impl OneEuroFilter {
    /// A filter with no history; it assumes 30 Hz until it has seen two timestamps.
    pub fn new(params: OneEuroParams) -> Self {
        Self { params, frequency: INITIAL_FREQUENCY, last_time: None, x: LowPass::default(), dx: LowPass::default() }
    }

    /// Filters `value` seen at `time_s`; `value_scale` converts value units to object sizes (1 / object size).
    pub fn apply(&mut self, value: f32, time_s: f64, value_scale: f32) -> f32 {
        if let Some(last) = self.last_time {
            if time_s <= last {
                return value;
            }
            self.frequency = (1.0 / (time_s - last)) as f32;
        }
        self.last_time = Some(time_s);
        let speed = self.x.last_raw().map_or(0.0, |prev| (value - prev) * value_scale * self.frequency);
        let smoothed_speed = self.dx.apply(speed, alpha(self.params.d_cutoff, self.frequency));
        let cutoff = self.params.min_cutoff + self.params.beta * smoothed_speed.abs();
        self.x.apply(value, alpha(cutoff, self.frequency))
    }
}

/// One-Euro filters over every coordinate of a landmark set.
#[derive(Clone, Debug)]
pub struct LandmarkSmoother {
    params: OneEuroParams,
    filters: Vec<[OneEuroFilter; 3]>,
}

impl LandmarkSmoother {
    /// A smoother with no history; its filters are created for the first landmark set.
    pub fn new(params: OneEuroParams) -> Self {
        Self { params, filters: Vec::new() }
    }

    /// The settings every coordinate's filter uses.
    pub fn params(&self) -> OneEuroParams {
        self.params
    }

    /// Forgets the history (a new face, or a gap in tracking).
    pub fn reset(&mut self) {
        self.filters.clear();
    }

    /// Smooths `points` (pixels) seen at `time_s`. A change in the number of points restarts the filters.
    pub fn apply(&mut self, points: &[[f32; 3]], time_s: f64) -> Vec<[f32; 3]> {
        if self.filters.len() != points.len() {
            let filter = OneEuroFilter::new(self.params);
            self.filters = vec![[filter.clone(), filter.clone(), filter]; points.len()];
        }
        // Object size: mean side of the landmarks' bounding box (MediaPipe's `object_scale`).
        let bbox = Rect::bounding(points.iter().map(|p| Point2::new(p[0], p[1])));
        let size = bbox.map_or(0.0, |b| (b.width + b.height) / 2.0);
        let scale = if size > 0.0 { 1.0 / size } else { 1.0 };
        points
            .iter()
            .zip(&mut self.filters)
            .map(|(p, f)| std::array::from_fn(|k| f[k].apply(p[k], time_s, scale)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn still_noise_is_damped_and_steps_are_followed() {
        let mut f = OneEuroFilter::new(OneEuroParams::default());
        let mut out = Vec::new();
        for i in 0..60 {
            let noise = if i % 2 == 0 { 1.0 } else { -1.0 };
            out.push(f.apply(100.0 + noise, f64::from(i) / 30.0, 1.0 / 100.0));
        }
        let spread = out[30..].iter().fold(0.0f32, |m, v| m.max((v - 100.0).abs()));
        assert!(spread < 0.5, "alternating ±1 noise should shrink, got ±{spread}");
        // A large fast move raises the cutoff: the filter catches up within a few frames.
        let mut last = 0.0;
        for i in 60..70 {
            last = f.apply(200.0, f64::from(i) / 30.0, 1.0 / 100.0);
        }
        assert!((last - 200.0).abs() < 5.0, "{last}");
    }

    #[test]
    fn repeated_timestamps_pass_through() {
        let mut f = OneEuroFilter::new(OneEuroParams::default());
        assert_eq!(f.apply(1.0, 1.0, 1.0), 1.0);
        assert_eq!(f.apply(5.0, 1.0, 1.0), 5.0);
        assert_eq!(f.apply(7.0, 0.5, 1.0), 7.0);
    }

    #[test]
    fn smoother_restarts_on_new_point_count() {
        let mut s = LandmarkSmoother::new(OneEuroParams::default());
        let a = s.apply(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], 0.0);
        assert_eq!(a, vec![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let b = s.apply(&[[9.0, 9.0, 9.0]], 0.1);
        assert_eq!(b, vec![[9.0, 9.0, 9.0]]);
    }
}
