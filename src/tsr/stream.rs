//! The live TSR stage: a sliding window over the frame stream with one frame of look-ahead.
//!
//! Owns the frames still needed by the window (at most `history + 2`) and the reusable batch buffer. Receives
//! generated frames `[3, h, w]` in [0, 1], each with a caller tag (timestamp, index); emits each frame's SR result
//! `[3, S, S]` with its tag once the next frame has arrived (+1 frame of latency), and the last one on `finish`.
//!
//! Frame t is computed from the clip `[t − history, …, t, t + 1]` (cut at the stream's ends) exactly as the official
//! forward runs a clip, replicate padding included; `history = 1` gives every temporal window of the first level its
//! true neighbours. The official offline test instead runs disjoint 16-frame chunks; each network level widens the
//! temporal reach by one frame (2·levels in all: 14 at 512²), so no one-frame-latency scheme can equal it on moving
//! content — the offline path is `TsrRunner::run_clip`; this stage equals it wherever the clips coincide (a still
//! scene, or a clip no longer than the window), which the tests check.

use std::collections::VecDeque;

use super::net::{self, RGB};
use super::runner::TsrRunner;
use crate::model::ModelError;
use crate::tensor::HostTensor;

/// Past frames in each window by default.
pub const DEFAULT_HISTORY: usize = 1;

/// One SR result.
#[derive(Clone, Debug)]
pub struct StreamOutput<Tag> {
    /// `[3, S, S]`, about [0, 1] (not clamped, as the reference).
    pub image: HostTensor,
    /// The tag the frame was pushed with.
    pub tag: Tag,
}

/// The sliding-window TSR stage of one stream. Call `finish` at the end of a clip (or before switching sources).
pub struct TsrStream<Tag> {
    history: usize,
    /// Frames `[3, h, w]` from `t − history` to the newest; the frame awaiting output is the one before the newest.
    window: VecDeque<(HostTensor, Tag)>,
    batch: Vec<f32>,
}

impl<Tag: Clone> TsrStream<Tag> {
    /// An empty stream whose windows hold `history` past frames besides the current and the next one.
    pub fn new(history: usize) -> Self {
        Self { history, window: VecDeque::with_capacity(history + 2), batch: Vec::new() }
    }

    /// Frames per network call in the steady state.
    pub fn window_frames(&self) -> usize {
        self.history + 2
    }

    /// Adds the newest frame; returns the previous frame's result.
    pub fn push(
        &mut self,
        engine: &mut TsrRunner,
        frame: HostTensor,
        tag: Tag,
    ) -> Result<Option<StreamOutput<Tag>>, ModelError> {
        let s = frame.shape();
        if s.len() != 3 || s[0] != RGB {
            return Err(ModelError::InputShape {
                name: "tsr frame".into(),
                expected: vec![RGB, 0, 0],
                actual: s.to_vec(),
            });
        }
        if let Some((first, _)) = self.window.front()
            && first.shape() != frame.shape()
        {
            // Frames of different sizes cannot share a clip; the caller must `finish` the old one first.
            return Err(ModelError::InputShape {
                name: "tsr frame".into(),
                expected: first.shape().to_vec(),
                actual: frame.shape().to_vec(),
            });
        }
        self.window.push_back((frame, tag));
        if self.window.len() < 2 {
            return Ok(None);
        }
        let target = self.window.len() - 2;
        let out = self.run(engine, 0..self.window.len(), target)?;
        while self.window.len() > self.history + 1 {
            self.window.pop_front();
        }
        Ok(Some(out))
    }

    /// Emits the last frame's result (computed with no future frame, as at the end of a clip) and resets the stream.
    pub fn finish(&mut self, engine: &mut TsrRunner) -> Result<Option<StreamOutput<Tag>>, ModelError> {
        let out = if self.window.is_empty() {
            None
        } else {
            let len = self.window.len();
            let start = len.saturating_sub(self.history + 1);
            Some(self.run(engine, start..len, len - 1)?)
        };
        self.window.clear();
        Ok(out)
    }

    /// Runs the buffered frames `range` as one clip and returns frame `target`'s result.
    fn run(
        &mut self,
        engine: &mut TsrRunner,
        range: std::ops::Range<usize>,
        target: usize,
    ) -> Result<StreamOutput<Tag>, ModelError> {
        let frame_shape = self.window[target].0.shape().to_vec();
        self.batch.clear();
        for (frame, _) in self.window.range(range.clone()) {
            self.batch.extend_from_slice(frame.data());
        }
        let shape = [&[range.len()][..], &frame_shape].concat();
        let frames = HostTensor::new(shape, std::mem::take(&mut self.batch))
            .map_err(|e| ModelError::Tensor { name: "tsr window".into(), reason: e.to_string() })?;
        let result = engine.run_frames(&frames);
        self.batch = frames.into_data();
        let out = result?
            .remove(net::OUTPUT)
            .ok_or_else(|| ModelError::Executor { executor: "tsr", reason: "no output".into() })?;
        let per_frame = out.len() / range.len().max(1);
        let k = target - range.start;
        let image = HostTensor::new(out.shape()[1..].to_vec(), out.data()[k * per_frame..(k + 1) * per_frame].to_vec())
            .map_err(|e| ModelError::Tensor { name: net::OUTPUT.into(), reason: e.to_string() })?;
        Ok(StreamOutput { image, tag: self.window[target].1.clone() })
    }
}
