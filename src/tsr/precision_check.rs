//! TF32 and float16 against float32 for the temporal SR network on the same frames and device (`bench precision
//! --tsr-config`).
//!
//! Owns the TSR side of the comparison. Receives a TSR network and one batch of frames; emits one
//! `model::precision_check::ModeReport` per precision, with the placement each really ran with.

use crate::model::ModelError;
use crate::model::precision_check::{ModeReport, psnr_db, timed, with_reference};
use crate::runtime::{Device, Precision};
use crate::tensor::HostTensor;

use super::runner::{TsrModel, TsrOptions, TsrRunner};

/// The TSR network on one batch of frames `[n, 3, h, w]` in [0, 1] at each precision.
pub fn compare_tsr(
    model: &TsrModel,
    frames: &HostTensor,
    device: Device,
    threads: usize,
    iters: usize,
    precisions: &[Precision],
) -> Result<Vec<ModeReport>, ModelError> {
    let mut reference: Option<HostTensor> = None;
    let mut reports = Vec::new();
    for precision in with_reference(precisions) {
        let opts = TsrOptions { device, threads, precision, ..Default::default() };
        let mut engine = TsrRunner::new(model.clone(), opts)?;
        let (ms, mut out) = timed(iters, || engine.run_frames(frames))?;
        let out = out.remove(super::net::OUTPUT).ok_or_else(|| ModelError::Executor {
            executor: "ort",
            reason: "the TSR graph produced no output".into(),
        })?;
        let (psnr, max_abs) = match &reference {
            None => (None, None),
            Some(r) => (Some(psnr_db(&out, r, 0.0, 1.0)), out.max_abs_diff(r)),
        };
        let placement = engine.placement().clone();
        let output_max_abs = out.max_abs();
        reports.push(ModeReport {
            precision,
            placement,
            ms,
            psnr_db: psnr,
            max_abs,
            grid_max_abs: None,
            output_max_abs,
        });
        if reference.is_none() {
            reference = Some(out);
        }
    }
    Ok(reports)
}
