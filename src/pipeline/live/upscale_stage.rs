//! The live app's upscale stage: a generated 256² frame → (temporal SR, bicubic, or as it is) → the window and the
//! recorder. Its own thread, so on a GPU the generator works on frame t + 1 while the TSR network works on frame t.
//!
//! Owns the live TSR window (`TsrStream` over the `TsrRunner`, restarted when the toggle changes) and the hand-off of
//! finished frames. Receives `Generated` frames (newest wins); emits `OutputFrame`s to the window (newest wins) and
//! every shown frame to the recording slot, and the tsr and glass-to-glass latencies to the metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::engine_stage::Generated;
use super::metrics::{Metrics, lock};
use super::recording::RecordingSlot;
use super::{NextStageGone, STAGE_POLL, UPSCALED_SIDE_PX};
use crate::model::inputs::{planar_unit_to_image, write_planar_unit};
use crate::pipeline::channel::{LatestReceiver, LatestSender};
use crate::pipeline::messages::{OutputFrame, PixelFormat, StageTime};
use crate::tensor::HostTensor;

/// Upscales (temporal SR or bicubic, or not at all), records and shows generated frames. Its own thread, so on a
/// GPU the generator works on frame t + 1 while the TSR network works on frame t.
pub(super) struct UpscaleStage {
    pub(super) frames: LatestReceiver<Generated>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) sink: OutputSink,
}

/// The TSR network streaming over the generated frames; each output is the previous frame's (tagged with its capture
/// time), so it adds one frame of latency.
pub(super) struct LiveTsr {
    pub(super) engine: crate::tsr::runner::TsrRunner,
    pub(super) stream: crate::tsr::stream::TsrStream<Instant>,
}

impl LiveTsr {
    pub(super) fn restart(&mut self) {
        self.stream = crate::tsr::stream::TsrStream::new(crate::tsr::stream::DEFAULT_HISTORY);
    }
}

/// Where finished frames go.
pub(super) struct OutputSink {
    pub(super) epoch: Instant,
    pub(super) tsr: Option<LiveTsr>,
    pub(super) output: LatestSender<OutputFrame>,
    pub(super) recording: RecordingSlot,
    pub(super) metrics: Metrics,
}

impl UpscaleStage {
    pub(super) fn run(self) {
        let UpscaleStage { frames, stop, sink: mut this } = self;
        let mut upscaling = false;
        while !stop.load(Ordering::Acquire) {
            match frames.recv_timeout(STAGE_POLL) {
                Ok(frame) => {
                    if frame.upscale != upscaling {
                        // A toggle starts a new clip for the temporal window.
                        upscaling = frame.upscale;
                        if let Some(tsr) = this.tsr.as_mut() {
                            tsr.restart();
                        }
                    }
                    if this.finish(frame).is_err() {
                        break;
                    }
                }
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::debug!("upscale: stopped");
    }
}

impl OutputSink {
    /// Upscales, records and shows one generated frame; `Err` only when the window has gone.
    pub(super) fn finish(&mut self, generated: Generated) -> Result<(), NextStageGone> {
        let Generated { picture: generated, captured: generated_at, model_ms, upscale } = generated;
        let mut stage_times = vec![StageTime { stage: "model", latency_ms: model_ms }];
        let upscale_started = Instant::now();
        let mut captured = generated_at;
        let picture = match (upscale, self.tsr.as_mut()) {
            (true, Some(tsr)) => {
                let (w, h) = (generated.width() as usize, generated.height() as usize);
                let mut frame = HostTensor::zeros(&[3, h, w]);
                write_planar_unit(&generated, frame.data_mut());
                match tsr.stream.push(&mut tsr.engine, frame, generated_at) {
                    Ok(Some(out)) => {
                        captured = out.tag;
                        let (h, w) = (out.image.shape()[1], out.image.shape()[2]);
                        planar_unit_to_image(out.image.data(), w, h)
                    }
                    // The window needs its next frame before the first output.
                    Ok(None) => return Ok(()),
                    Err(error) => {
                        lock(&self.metrics).engine_error = Some(format!("temporal SR: {error}"));
                        tsr.restart();
                        return Ok(());
                    }
                }
            }
            (true, None) => image::imageops::resize(
                &generated,
                UPSCALED_SIDE_PX,
                UPSCALED_SIDE_PX,
                image::imageops::FilterType::CatmullRom,
            ),
            (false, _) => generated,
        };
        let upscale_ms = upscale.then(|| upscale_started.elapsed().as_secs_f32() * 1e3);
        if let Some(ms) = upscale_ms {
            stage_times.push(StageTime { stage: "tsr", latency_ms: ms });
        }
        self.recording.record(&picture, captured);
        let (width, height) = picture.dimensions();
        let glass_to_glass_ms = captured.elapsed().as_secs_f32() * 1e3;
        let frame = OutputFrame {
            pixels: picture.into_raw(),
            format: PixelFormat::Rgb8,
            width,
            height,
            timestamp_us: captured.saturating_duration_since(self.epoch).as_micros() as u64,
            stage_times,
        };
        {
            let mut m = lock(&self.metrics);
            if let Some(ms) = upscale_ms {
                m.upscale_ms.add(ms);
            }
            m.glass_to_glass_ms.add(glass_to_glass_ms);
            m.outputs += 1;
        }
        self.output.send(frame).map_err(|_| NextStageGone)
    }
}
