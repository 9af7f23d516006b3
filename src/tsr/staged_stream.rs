//! The live TSR window without allocation: `stream::TsrStream`'s sliding window, with the frames kept in fixed slots
//! and each window assembled straight into the network's bound input.
//!
//! Owns `history + 2` frame slots (allocated once) and the order of the frames in them. Receives generated frames as
//! `[3, h, w]` slices (in the engine's input range) with a `Copy` tag; emits the previous frame's SR result as a slice
//! of the engine's bound output (valid until the next call) once the next frame has arrived, and the last one on
//! `finish` — the same windows, and so the same numbers, as `TsrStream`.

use std::collections::VecDeque;

use super::net::RGB;
use super::runner::TsrRunner;
use crate::model::ModelError;

/// A sliding-window TSR stage whose frames never allocate.
pub struct StagedTsrStream<Tag> {
    history: usize,
    side: usize,
    slots: Vec<Vec<f32>>,
    tags: Vec<Option<Tag>>,
    /// Slot indices from the oldest frame in the window to the newest.
    order: VecDeque<usize>,
}

impl<Tag: Copy> StagedTsrStream<Tag> {
    /// A window of `history` past frames and one of look-ahead over `side × side` frames.
    pub fn new(history: usize, side: usize) -> Self {
        let n = history + 2;
        Self {
            history,
            side,
            slots: (0..n).map(|_| vec![0.0; RGB * side * side]).collect(),
            tags: vec![None; n],
            order: VecDeque::with_capacity(n),
        }
    }

    /// Frames per network call in the steady state.
    pub fn window_frames(&self) -> usize {
        self.history + 2
    }

    /// Adds the newest frame (`3 · side²` values); returns the previous frame's result `[3, S, S]` and its tag.
    pub fn push<'e>(
        &mut self,
        engine: &'e mut TsrRunner,
        frame: &[f32],
        tag: Tag,
    ) -> Result<Option<(&'e [f32], Tag)>, ModelError> {
        if frame.len() != RGB * self.side * self.side {
            return Err(ModelError::InputShape {
                name: "tsr frame".into(),
                expected: vec![RGB, self.side, self.side],
                actual: vec![frame.len()],
            });
        }
        let free = (0..self.slots.len()).find(|i| !self.order.contains(i)).unwrap_or(0);
        self.slots[free].copy_from_slice(frame);
        self.tags[free] = Some(tag);
        self.order.push_back(free);
        if self.order.len() < 2 {
            return Ok(None);
        }
        let (count, target) = (self.order.len(), self.order.len() - 2);
        let out = self.run(engine, 0, count, target)?;
        while self.order.len() > self.history + 1 {
            self.order.pop_front();
        }
        Ok(Some(out))
    }

    /// The last frame's result (no future frame, as at the end of a clip); the stream starts afresh after it.
    pub fn finish<'e>(&mut self, engine: &'e mut TsrRunner) -> Result<Option<(&'e [f32], Tag)>, ModelError> {
        let len = self.order.len();
        let out = if len == 0 {
            None
        } else {
            let start = len.saturating_sub(self.history + 1);
            Some(self.run(engine, start, len - start, len - 1)?)
        };
        self.order.clear();
        Ok(out)
    }

    /// Runs window frames `start..start + count` as one clip and returns frame `target`'s result.
    fn run<'e>(
        &mut self,
        engine: &'e mut TsrRunner,
        start: usize,
        count: usize,
        target: usize,
    ) -> Result<(&'e [f32], Tag), ModelError> {
        let frame_len = RGB * self.side * self.side;
        let input = engine.staged_frames(count, self.side)?;
        for (k, &slot) in self.order.range(start..start + count).enumerate() {
            input[k * frame_len..(k + 1) * frame_len].copy_from_slice(&self.slots[slot]);
        }
        let tag = self.tags[self.order[target]].ok_or_else(|| ModelError::Tensor {
            name: "tsr window".into(),
            reason: "a frame without its tag".into(),
        })?;
        let out = engine.run_staged(count, self.side)?;
        let per_frame = out.len() / count.max(1);
        let k = target - start;
        Ok((&out.data()[k * per_frame..(k + 1) * per_frame], tag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use crate::runtime::Device;
    use crate::tensor::HostTensor;
    use crate::tsr::config::TsrConfig;
    use crate::tsr::runner::{TsrModel, TsrOptions};
    use crate::tsr::stream::TsrStream;

    #[test]
    fn staged_windows_equal_the_plain_stream() {
        let model = TsrModel::random(TsrConfig::tiny(), 3).unwrap();
        let opts = TsrOptions { device: Device::Cpu, threads: 1, ..Default::default() };
        let (mut a, mut b) =
            (TsrRunner::new(model.clone(), opts.clone()).unwrap(), TsrRunner::new(model, opts).unwrap());
        let side = 32;
        let mut plain = TsrStream::new(1);
        let mut staged = StagedTsrStream::new(1, side);
        let mut rng = SplitMix64::new(9);
        let mut compared = 0;
        for t in 0..5usize {
            let data: Vec<f32> = (0..3 * side * side).map(|_| rng.uniform() as f32).collect();
            let want = plain.push(&mut a, HostTensor::new(vec![3, side, side], data.clone()).unwrap(), t).unwrap();
            let got = staged.push(&mut b, &data, t).unwrap();
            match (want, got) {
                (None, None) => {}
                (Some(w), Some((g, tag))) => {
                    assert_eq!(w.tag, tag);
                    let diff = w.image.data().iter().zip(g).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                    assert!(diff <= 1e-6, "frame {tag}: {diff}");
                    compared += 1;
                }
                _ => panic!("the streams disagree on when frame {t}'s result is out"),
            }
        }
        let (w, g) = (plain.finish(&mut a).unwrap().unwrap(), staged.finish(&mut b).unwrap().unwrap());
        assert_eq!((w.tag, g.1), (4, 4));
        assert!(w.image.data().iter().zip(g.0).all(|(x, y)| (x - y).abs() <= 1e-6));
        assert_eq!(compared, 4);
        assert!(staged.push(&mut b, &[0.0; 5], 9).is_err(), "a frame of the wrong size is refused");
    }
}
