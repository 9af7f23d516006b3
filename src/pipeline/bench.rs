//! The live path's end-to-end benchmark at 512²: generator then streaming temporal SR, one after the other (as one
//! engine thread would run them) and pipelined (the generator's thread hands each prediction to the TSR's through a
//! one-slot channel, as the live app's engine and upscale stages do).
//!
//! Owns the timing loops. Receives a generator and a TSR runner (random weights: speed does not depend on values) and
//! one fixed set of inputs; emits milliseconds per frame for both schedules.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::model::ModelError;
use crate::model::net;
use crate::model::runner::GeneratorRunner;
use crate::tensor::HostTensor;
use crate::tsr::runner::TsrRunner;
use crate::tsr::stream::{DEFAULT_HISTORY, TsrStream};

/// Frames run before the clock starts (sessions warm up, allocators settle).
pub const WARM_UP_FRAMES: usize = 3;

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    /// `frames` was 0.
    #[error("--frames must be at least 1")]
    NoFrames,
    /// A network failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The generator returned no prediction.
    #[error("the generator returned no prediction")]
    NoPrediction,
    /// The generator's thread ended early.
    #[error("the generator thread stopped")]
    GeneratorStopped,
    /// The generator's thread panicked.
    #[error("the generator thread panicked")]
    GeneratorPanicked,
}

/// Milliseconds per finished 512² frame.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct E2eTimes {
    /// Generator then TSR on one thread.
    pub sequential_ms_per_frame: f64,
    /// Generator and TSR on two threads joined by a one-slot channel.
    pub pipelined_ms_per_frame: f64,
}

fn prediction_frame(out: BTreeMap<String, HostTensor>) -> Result<HostTensor, E2eError> {
    let prediction = out.get(net::OUTPUT_PREDICTION).ok_or(E2eError::NoPrediction)?;
    HostTensor::new(prediction.shape()[1..].to_vec(), prediction.data().to_vec())
        .map_err(|e| E2eError::Model(ModelError::Tensor { name: net::OUTPUT_PREDICTION.into(), reason: e.to_string() }))
}

/// Times `frames` frames (after `WARM_UP_FRAMES`) through `generator` and `upscaler` on `inputs`, both schedules.
/// The upscaler's sessions for the window's two geometries are built first.
pub fn time_e2e(
    generator: &mut GeneratorRunner,
    upscaler: &mut TsrRunner,
    inputs: &BTreeMap<String, HostTensor>,
    image_size: usize,
    frames: usize,
) -> Result<E2eTimes, E2eError> {
    if frames == 0 {
        return Err(E2eError::NoFrames);
    }
    let window = DEFAULT_HISTORY + 2;
    for n in [window - 1, window] {
        upscaler.prepare(n, image_size)?;
    }
    let total = WARM_UP_FRAMES + frames;

    let mut stream = TsrStream::new(DEFAULT_HISTORY);
    let mut started = Instant::now();
    for k in 0..total {
        if k == WARM_UP_FRAMES {
            started = Instant::now();
        }
        let frame = prediction_frame(generator.run(inputs)?)?;
        stream.push(upscaler, frame, k)?;
    }
    let sequential_ms_per_frame = started.elapsed().as_secs_f64() * 1e3 / frames as f64;

    let mut stream = TsrStream::new(DEFAULT_HISTORY);
    let pipelined_ms_per_frame = std::thread::scope(|scope| -> Result<f64, E2eError> {
        let (tx, rx) = crossbeam::channel::bounded::<HostTensor>(1);
        let producer = scope.spawn(|| -> Result<(), E2eError> {
            let tx = tx;
            for _ in 0..total {
                let frame = prediction_frame(generator.run(inputs)?)?;
                if tx.send(frame).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut started = Instant::now();
        for k in 0..total {
            let frame = rx.recv().map_err(|_| E2eError::GeneratorStopped)?;
            if k == WARM_UP_FRAMES {
                started = Instant::now();
            }
            stream.push(upscaler, frame, k)?;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / frames as f64;
        producer.join().map_err(|_| E2eError::GeneratorPanicked)??;
        Ok(ms)
    })?;
    Ok(E2eTimes { sequential_ms_per_frame, pipelined_ms_per_frame })
}
