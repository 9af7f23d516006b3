//! The live app's engine stage: a driving pose → motion transfer onto the selected identity → the engine's 256²
//! frame, handed to the upscale stage.
//!
//! Owns the engine (`LiveEngine`: preview mesh warp or the neural generator), the identity's motion transfer and the
//! motion mode. Receives `DrivingPose`s (newest wins) and `EngineControl`s from the control thread; emits
//! `Generated` frames tagged with their capture instant and model time, newest-wins. An engine error on a frame is
//! reported through the metrics and the frame skipped; the stage stops only when the next stage has gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crossbeam::channel::Receiver;
use image::RgbImage;

use super::face_stage::DrivingPose;
use super::metrics::{Metrics, lock};
use super::{ENGINE_SIDE_PX, NextStageGone, STAGE_POLL};
use crate::face::motion::{MotionMode, MotionTransfer};
use crate::pipeline::channel::{LatestReceiver, LatestSender};
use crate::pipeline::engine::{EngineIdentity, LiveEngine};

/// What the control thread tells the engine stage.
pub(super) enum EngineControl {
    /// Drive this identity from now on.
    Identity(Box<EngineIdentity>),
    /// The shown identity was deleted: stop driving it.
    ClearIdentity,
    MotionMode(MotionMode),
    Recalibrate,
    Tsr(bool),
}

/// Drives the engine with each pose and hands the 256² result to the upscale stage.
pub(super) struct EngineStage {
    pub(super) poses: LatestReceiver<DrivingPose>,
    pub(super) control: Receiver<EngineControl>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) motion_mode: MotionMode,
    pub(super) sink: EngineSink,
}

/// A generated frame on its way to the upscale stage.
pub(super) struct Generated {
    pub(super) picture: RgbImage,
    pub(super) captured: Instant,
    pub(super) model_ms: f32,
    /// Whether the panel's TSR toggle was on for this frame.
    pub(super) upscale: bool,
}

impl EngineStage {
    pub(super) fn run(self) {
        let EngineStage { poses, control, stop, mut motion_mode, sink: mut this } = self;
        let mut motion: Option<MotionTransfer> = None;
        let mut target: Vec<[f32; 3]> = Vec::new();
        let mut generated = RgbImage::new(ENGINE_SIDE_PX, ENGINE_SIDE_PX);
        let mut upscale = false;
        let poses: &Receiver<DrivingPose> = &poses;
        while !stop.load(Ordering::Acquire) {
            crossbeam::select! {
                recv(control) -> control => match control {
                    Ok(EngineControl::Identity(identity)) => {
                        let result = this.engine.set_identity(&identity).map_err(|e| e.to_string()).and_then(
                            |()| MotionTransfer::new(&identity.landmarks, motion_mode).map_err(|e| e.to_string()),
                        );
                        match result {
                            Ok(m) => {
                                target = identity.landmarks.clone();
                                motion = Some(m);
                                lock(&this.metrics).engine_error = None;
                            }
                            Err(e) => lock(&this.metrics).engine_error = Some(format!("identity not usable: {e}")),
                        }
                    }
                    Ok(EngineControl::ClearIdentity) => motion = None,
                    Ok(EngineControl::MotionMode(mode)) => {
                        motion_mode = mode;
                        if let Some(m) = motion.as_mut() {
                            m.set_mode(mode);
                            m.clear_reference();
                        }
                    }
                    Ok(EngineControl::Recalibrate) => {
                        if let Some(m) = motion.as_mut() {
                            m.clear_reference();
                        }
                    }
                    Ok(EngineControl::Tsr(on)) => upscale = on,
                    Err(_) => break,
                },
                recv(poses) -> pose => {
                    let Ok(pose) = pose else { break };
                    let Some(motion) = motion.as_mut() else { continue };
                    if this.render(motion, &pose, &mut target, &mut generated, upscale).is_err() {
                        break;
                    }
                },
                default(STAGE_POLL) => {}
            }
        }
        tracing::debug!("engine: stopped");
    }
}

/// The engine thread's half: the engine and the hand-off to the upscale stage.
pub(super) struct EngineSink {
    pub(super) engine: Box<dyn LiveEngine>,
    pub(super) generated: LatestSender<Generated>,
    pub(super) metrics: Metrics,
}

impl EngineSink {
    /// Renders one pose and hands it on; `Err` only when the upscale stage has gone.
    pub(super) fn render(
        &mut self,
        motion: &mut MotionTransfer,
        pose: &DrivingPose,
        target: &mut [[f32; 3]],
        generated: &mut RgbImage,
        upscale: bool,
    ) -> Result<(), NextStageGone> {
        let started = Instant::now();
        if pose.landmarks.len() != target.len() {
            return Ok(());
        }
        if let Err(error) = motion.transfer(&pose.landmarks, target) {
            tracing::debug!(%error, "engine: motion transfer skipped a frame");
            return Ok(());
        }
        if let Err(error) = self.engine.drive(target, generated) {
            lock(&self.metrics).engine_error = Some(error.to_string());
            return Ok(());
        }
        let model_ms = started.elapsed().as_secs_f32() * 1e3;
        lock(&self.metrics).model_ms.add(model_ms);
        let frame = Generated { picture: generated.clone(), captured: pose.captured, model_ms, upscale };
        self.generated.send(frame).map_err(|_| NextStageGone)
    }
}
