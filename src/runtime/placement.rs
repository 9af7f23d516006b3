//! Where an inference session really runs, and at what precision, against what was asked for.
//!
//! Owns `Precision` (`fp32`, `tf32`, `fp16`: the `--precision` flag) and `Placement`: the device and precision in use,
//! the ones requested, and why they differ (CUDA asked for but missing, a CUDA-only precision on the CPU). Receives
//! a requested device and precision and the outcome of probing CUDA; emits the placement every report prints (the
//! panel's device line, `bench` JSON, logs), so none of them shows the request instead of the device in use.

use std::fmt;
use std::str::FromStr;

use super::Device;

/// Arithmetic the inference graphs run in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Precision {
    /// Full float32 everywhere (what the parity fixtures need).
    #[default]
    Fp32,
    /// float32 tensors, TF32 tensor-core math in CUDA convolutions and matrix products (~1e-3 relative).
    Tf32,
    /// float16 weights and activations on CUDA, normalisation statistics in float32; inputs and outputs stay float32.
    Fp16,
}

impl Precision {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Tf32 => "tf32",
            Self::Fp16 => "fp16",
        }
    }

    /// Whether the graph itself is emitted in float16 (the other precisions share the float32 graph).
    pub fn half_graph(self) -> bool {
        self == Self::Fp16
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a precision name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (expected `fp32`, `tf32` or `fp16`)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Self::Fp32),
            "tf32" => Ok(Self::Tf32),
            "fp16" | "f16" | "float16" | "half" => Ok(Self::Fp16),
            _ => Err(UnknownPrecision(s.to_owned())),
        }
    }
}

/// The device and precision a session runs with, beside the ones that were asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The device asked for.
    pub requested: Device,
    /// The precision asked for.
    pub requested_precision: Precision,
    /// `Cpu` or `Cuda(n)`: where the work runs.
    pub device: Device,
    /// The arithmetic the work runs in.
    pub precision: Precision,
    /// Why `device`/`precision` differ from the request (also set for `auto` resolved to the CPU).
    pub note: Option<String>,
}

impl Placement {
    /// A placement that is exactly the request.
    pub fn as_requested(device: Device, precision: Precision) -> Self {
        Self { requested: device, requested_precision: precision, device, precision, note: None }
    }

    /// Resolves a request once CUDA's availability is known (`cuda`: `Ok(ordinal)` when the GPU and ONNX Runtime's
    /// CUDA provider are usable, else why not). TF32 and fp16 are CUDA precisions: on the CPU the session runs fp32,
    /// except fp16 asked for explicitly on the CPU, which runs as asked (ONNX Runtime casts around the operators its
    /// CPU provider lacks in float16; slow, for checking the half-precision graph without a GPU).
    pub fn resolve(requested: Device, precision: Precision, cuda: Result<usize, super::CudaError>) -> Self {
        let mut notes = Vec::new();
        let device = match (requested, cuda) {
            (Device::Cpu, _) => Device::Cpu,
            (Device::Vulkan, _) => {
                notes.push("ONNX Runtime has no Vulkan execution provider".to_owned());
                Device::Cpu
            }
            (Device::Cuda(_) | Device::Auto, Ok(n)) => Device::Cuda(n),
            (Device::Cuda(_) | Device::Auto, Err(why)) => {
                notes.push(why.to_string());
                Device::Cpu
            }
        };
        let in_use = match (device, precision) {
            (Device::Cuda(_), p) => p,
            (_, Precision::Fp16) if requested == Device::Cpu => Precision::Fp16,
            (_, Precision::Fp32) => Precision::Fp32,
            (_, p) => {
                notes.push(format!("{p} needs CUDA"));
                Precision::Fp32
            }
        };
        let note = (!notes.is_empty()).then(|| notes.join("; "));
        Self { requested, requested_precision: precision, device, precision: in_use, note }
    }

    /// The same placement after the session could not be created on CUDA and runs on the CPU instead.
    pub fn fell_back(&self, why: super::CudaError) -> Self {
        Self::resolve(self.requested, self.requested_precision, Err(why))
    }

    /// Whether the session runs where and how it was asked to (`auto` counts as asking for either).
    pub fn is_as_requested(&self) -> bool {
        let device_ok = self.device == self.requested || self.requested == Device::Auto;
        device_ok && self.precision == self.requested_precision
    }

    /// One line for the panel and logs: `cuda:0, fp16`, or `cpu, fp32 (cuda:0 requested: why)`.
    pub fn describe(&self) -> String {
        let main = format!("{}, {}", self.device, self.precision);
        match (&self.note, self.is_as_requested()) {
            (Some(why), false) => {
                format!("{main} ({} {} requested: {why})", self.requested, self.requested_precision)
            }
            (Some(why), true) => format!("{main} ({why})"),
            (None, _) => main,
        }
    }

    /// The fields every `bench` JSON carries: `device`, `precision`, `requested_device`, `requested_precision`,
    /// `fallback_reason` (null when none).
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("device".into(), self.device.to_string().into());
        m.insert("precision".into(), self.precision.name().into());
        m.insert("requested_device".into(), self.requested.to_string().into());
        m.insert("requested_precision".into(), self.requested_precision.name().into());
        m.insert("fallback_reason".into(), self.note.clone().map_or(serde_json::Value::Null, Into::into));
        m
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::CudaError;

    fn unmet(why: &str) -> CudaError {
        CudaError::Unmet { conditions: vec![why.to_owned()] }
    }

    #[test]
    fn precisions_parse_and_print() {
        for (text, p) in [("fp32", Precision::Fp32), ("TF32", Precision::Tf32), ("half", Precision::Fp16)] {
            assert_eq!(text.parse::<Precision>(), Ok(p));
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        let err = "bf17".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("bf17") && err.contains("fp16"), "{err}");
        assert!(Precision::Fp16.half_graph() && !Precision::Tf32.half_graph());
    }

    #[test]
    fn cuda_asked_and_missing_runs_fp32_on_the_cpu_and_says_why() {
        let why = "no CUDA driver library (libcuda.so) could be loaded";
        let p = Placement::resolve(Device::Cuda(0), Precision::Fp16, Err(unmet(why)));
        assert_eq!((p.device, p.precision), (Device::Cpu, Precision::Fp32));
        assert!(!p.is_as_requested());
        let line = p.describe();
        assert!(line.starts_with("cpu, fp32 (cuda:0 fp16 requested: "), "{line}");
        assert!(line.contains(why) && line.contains("fp16 needs CUDA"), "{line}");
        let json = p.json_fields();
        assert_eq!(json["device"], "cpu");
        assert_eq!(json["requested_device"], "cuda:0");
        assert_eq!(json["requested_precision"], "fp16");
        assert!(json["fallback_reason"].as_str().is_some_and(|r| r.contains(why)));
    }

    #[test]
    fn requests_that_can_be_met_are_reported_as_they_are() {
        let p = Placement::resolve(Device::Cuda(1), Precision::Tf32, Ok(1));
        assert_eq!(p, Placement::as_requested(Device::Cuda(1), Precision::Tf32));
        assert_eq!(p.describe(), "cuda:1, tf32");
        assert_eq!(p.json_fields()["fallback_reason"], serde_json::Value::Null);
        // `auto` on a machine without CUDA: the CPU is an expected outcome, the reason still shown.
        let auto = Placement::resolve(Device::Auto, Precision::Fp32, Err(unmet("no GPU")));
        assert!(auto.is_as_requested());
        assert_eq!(auto.describe(), "cpu, fp32 (no GPU)");
        // fp16 asked for on the CPU explicitly runs as asked; TF32 cannot.
        let half = Placement::resolve(Device::Cpu, Precision::Fp16, Err(unmet("unused")));
        assert_eq!((half.device, half.precision, half.note.as_deref()), (Device::Cpu, Precision::Fp16, None));
        let tf32 = Placement::resolve(Device::Cpu, Precision::Tf32, Ok(0));
        assert_eq!((tf32.device, tf32.precision), (Device::Cpu, Precision::Fp32));
        assert_eq!(tf32.describe(), "cpu, fp32 (cpu tf32 requested: tf32 needs CUDA)");
        let vulkan = Placement::resolve(Device::Vulkan, Precision::Fp32, Ok(0));
        assert!(vulkan.describe().contains("no Vulkan execution provider"));
        // A session that failed on CUDA after the probe passed.
        let fell = p.fell_back(unmet("out of memory"));
        assert_eq!((fell.device, fell.precision), (Device::Cpu, Precision::Fp32));
        assert!(fell.describe().contains("out of memory"));
    }
}
