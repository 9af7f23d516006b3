//! TF32 and float16 against float32 on the same frames and device: the figures `bench precision` reports and
//! `scripts/gpu-check.sh` records before fp16 may become the CUDA default (it needs ≥ 40 dB on the official config).
//!
//! Owns the comparison: one engine per precision on the same device, the float32 run as the reference, the median
//! time per call and the PSNR of each other precision's frames against it. Receives a generator with its inputs;
//! emits one `ModeReport` per precision, each with the placement it really ran with. The TSR network's comparison
//! (`tsr::precision_check`) reuses the report and the timing.

use std::collections::BTreeMap;
use std::time::Instant;

use super::ModelError;
use super::generator::GeneratorModel;
use super::net::{OUTPUT_DEFORMATION, OUTPUT_PREDICTION};
use super::runner::{GeneratorRunner, RunnerOptions, Stage};
use crate::runtime::{Device, Placement, Precision};
use crate::tensor::HostTensor;

/// The PSNR fp16 must reach against fp32 on the official config before it may become the CUDA default.
pub const FP16_DEFAULT_MIN_PSNR_DB: f64 = 40.0;

/// One precision's outcome.
#[derive(Clone, Debug)]
pub struct ModeReport {
    /// The precision asked for.
    pub precision: Precision,
    /// Where it really ran (a precision the device cannot do runs as something else, and says so).
    pub placement: Placement,
    /// Median milliseconds per call after one warm-up call.
    pub ms: f64,
    /// PSNR in dB of its frames against the float32 run's (`None` for the float32 run itself).
    pub psnr_db: Option<f64>,
    /// Largest absolute difference of its frames from the float32 run's.
    pub max_abs: Option<f32>,
    /// Generator only: largest difference of the sampling grid (normalised coordinates).
    pub grid_max_abs: Option<f32>,
    /// Largest absolute value of its frames: frames are images (about [-1, 1] or [0, 1]); far beyond that, the weights
    /// are not a trained network's (random TSR weights reach 10⁵) and the PSNR says nothing about float16.
    pub output_max_abs: f32,
}

impl ModeReport {
    /// Whether the frames look like images (|x| ≤ 2) rather than the blow-up of untrained weights.
    pub fn output_in_image_range(&self) -> bool {
        self.output_max_abs.is_finite() && self.output_max_abs <= 2.0
    }
}

impl ModeReport {
    /// The report as JSON, with the placement's fields.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = self.placement.json_fields();
        m.insert("ms".into(), self.ms.into());
        m.insert("psnr_db".into(), self.psnr_db.map_or(serde_json::Value::Null, Into::into));
        m.insert("max_abs".into(), self.max_abs.map_or(serde_json::Value::Null, Into::into));
        if let Some(g) = self.grid_max_abs {
            m.insert("grid_max_abs".into(), g.into());
        }
        m.insert("output_max_abs".into(), self.output_max_abs.into());
        serde_json::Value::Object(m)
    }
}

/// PSNR in dB of `a` against `b`, both mapped to [0, 1] by `(x − lo) / (hi − lo)`; infinite for equal tensors.
pub fn psnr_db(a: &HostTensor, b: &HostTensor, lo: f32, hi: f32) -> f64 {
    let range = f64::from(hi - lo);
    let n = a.len().min(b.len()).max(1) as f64;
    let mse: f64 =
        a.data().iter().zip(b.data()).map(|(x, y)| ((f64::from(*x) - f64::from(*y)) / range).powi(2)).sum::<f64>() / n;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// One warm-up call, then the median of `iters` calls in milliseconds; returns it with the last call's output.
pub(crate) fn timed<T>(iters: usize, mut call: impl FnMut() -> Result<T, ModelError>) -> Result<(f64, T), ModelError> {
    let mut out = call()?;
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        out = call()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(samples), out))
}

/// Float32 first (the reference), then each other precision in `precisions`, on `device`.
pub(crate) fn with_reference(precisions: &[Precision]) -> Vec<Precision> {
    let mut order = vec![Precision::Fp32];
    order.extend(precisions.iter().copied().filter(|p| *p != Precision::Fp32));
    order
}

/// The generator (warp + refine) at each precision on the same inputs.
pub fn compare_generator(
    model: &GeneratorModel,
    inputs: &BTreeMap<String, HostTensor>,
    device: Device,
    threads: usize,
    iters: usize,
    precisions: &[Precision],
) -> Result<Vec<ModeReport>, ModelError> {
    let mut reference: Option<BTreeMap<String, HostTensor>> = None;
    let mut reports = Vec::new();
    for precision in with_reference(precisions) {
        let opts = RunnerOptions { device, threads, precision, stage: Stage::Full, ..Default::default() };
        let mut engine = GeneratorRunner::new(model, &opts)?;
        let (ms, out) = timed(iters, || engine.run(inputs))?;
        let (psnr, max_abs, grid) = match &reference {
            None => (None, None, None),
            Some(r) => {
                let (a, b) = (&out[OUTPUT_PREDICTION], &r[OUTPUT_PREDICTION]);
                let grid = out[OUTPUT_DEFORMATION].max_abs_diff(&r[OUTPUT_DEFORMATION]);
                (Some(psnr_db(a, b, -1.0, 1.0)), a.max_abs_diff(b), grid)
            }
        };
        reports.push(ModeReport {
            precision,
            placement: engine.placement().clone(),
            ms,
            psnr_db: psnr,
            max_abs,
            grid_max_abs: grid,
            output_max_abs: out[OUTPUT_PREDICTION].max_abs(),
        });
        if reference.is_none() {
            reference = Some(out);
        }
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_known_errors() {
        let a = HostTensor::new(vec![4], vec![0.0, 0.5, 1.0, 0.25]).unwrap();
        assert_eq!(psnr_db(&a, &a, 0.0, 1.0), f64::INFINITY);
        let b = HostTensor::new(vec![4], vec![0.1, 0.6, 1.1, 0.35]).unwrap();
        // mse 0.01 on [0, 1] → 20 dB; the same values read on [-1, 1] are half the relative error → +6.02 dB.
        assert!((psnr_db(&a, &b, 0.0, 1.0) - 20.0).abs() < 1e-4);
        assert!((psnr_db(&a, &b, -1.0, 1.0) - 26.0206).abs() < 1e-3);
    }

    #[test]
    fn the_reference_runs_first_and_once() {
        let order = with_reference(&[Precision::Fp16, Precision::Fp32, Precision::Tf32]);
        assert_eq!(order, [Precision::Fp32, Precision::Fp16, Precision::Tf32]);
    }
}
