//! The generator runner: a configured, validated model bound to an executor and a device.
//!
//! Owns the choice of executor (ONNX Runtime for speed, burn for gradients), the conversion of the architecture into
//! an ONNX graph with the current weights, and reusable sessions. Receives a `GeneratorModel` and named host
//! tensors (`INPUT_NAMES`); emits named host tensors (`OUTPUT_NAMES`, plus intermediates when taps are on).

use std::collections::BTreeMap;

use super::ModelError;
use super::exec::ExecutorKind;
use super::exec::burn::BurnExec;
use super::exec::onnx::OnnxBuilder;
use super::generator::GeneratorModel;
use super::net::{self, GeneratorInputs, INPUT_NAMES};
use crate::runtime::Device;
use crate::runtime::ort::{OrtSession, SessionOptions};
use crate::tensor::HostTensor;

/// How much of the generator to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The warping network only (`warp.*` outputs).
    Warp,
    /// Warp and refine.
    Full,
}

/// Executor settings.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Which executor runs the networks (ONNX Runtime by default).
    pub executor: ExecutorKind,
    /// The device asked for: ONNX Runtime falls back to the CPU when CUDA is unusable, burn refuses a device it
    /// cannot open; `auto` takes CUDA GPU 0 when usable.
    pub device: Device,
    /// Intra-op threads (ONNX Runtime); 0 lets the runtime decide.
    pub threads: usize,
    /// How much of the generator to run (and so which outputs come back).
    pub stage: Stage,
    /// Also return the named intermediates (`inter.*`) for parity checks.
    pub taps: bool,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self { executor: ExecutorKind::Ort, device: Device::Cpu, threads: 0, stage: Stage::Full, taps: false }
    }
}

/// A generator ready to run frames.
pub struct GeneratorRunner {
    /// Expected input shapes, in `INPUT_NAMES` order: inputs are checked before any executor sees them.
    input_shapes: [Vec<usize>; INPUT_NAMES.len()],
    backend: Backend,
}

enum Backend {
    Ort { session: OrtSession },
    Burn { model: GeneratorModel, device: burn::tensor::Device, runs_on: Device, stage: Stage, taps: bool },
}

impl GeneratorRunner {
    /// Binds `model` to the executor and device of `opts`; for ONNX Runtime this builds the graph with the current
    /// weights and opens the session.
    pub fn new(model: &GeneratorModel, opts: &RunnerOptions) -> Result<Self, ModelError> {
        let backend = match opts.executor {
            ExecutorKind::Ort => {
                let graph = build_onnx(model, opts.stage, opts.taps)?;
                let session_opts = SessionOptions { threads: opts.threads, device: opts.device };
                Backend::Ort { session: OrtSession::from_bytes(&graph, &session_opts)? }
            }
            ExecutorKind::Burn => {
                let (device, runs_on) = crate::runtime::burn_device::resolve_device(opts.device)?;
                Backend::Burn { model: model.clone(), device, runs_on, stage: opts.stage, taps: opts.taps }
            }
        };
        Ok(Self { input_shapes: net::input_shapes(&model.config), backend })
    }

    /// The executor running the frames.
    pub fn executor(&self) -> ExecutorKind {
        match self.backend {
            Backend::Ort { .. } => ExecutorKind::Ort,
            Backend::Burn { .. } => ExecutorKind::Burn,
        }
    }

    /// Where the frames actually run (`auto` resolved, CUDA requests that fell back to the CPU shown as `cpu`).
    pub fn device(&self) -> Device {
        match &self.backend {
            Backend::Ort { session } => session.device(),
            Backend::Burn { runs_on, .. } => *runs_on,
        }
    }

    /// Whether the ONNX session reads and writes CUDA device buffers (IoBinding); known after the first run.
    pub fn uses_device_buffers(&self) -> bool {
        matches!(&self.backend, Backend::Ort { session } if session.uses_device_buffers())
    }

    /// Runs one frame. `inputs` must hold every name in `INPUT_NAMES` with its shape (extra entries are ignored).
    pub fn run(&mut self, inputs: &BTreeMap<String, HostTensor>) -> Result<BTreeMap<String, HostTensor>, ModelError> {
        for (name, expected) in INPUT_NAMES.iter().zip(&self.input_shapes) {
            let t = inputs.get(*name).ok_or_else(|| ModelError::MissingInput((*name).to_owned()))?;
            if t.shape() != expected.as_slice() {
                return Err(ModelError::InputShape {
                    name: (*name).to_owned(),
                    expected: expected.clone(),
                    actual: t.shape().to_vec(),
                });
            }
        }
        let get = |name: &str| inputs.get(name).ok_or_else(|| ModelError::MissingInput(name.to_owned()));
        match &mut self.backend {
            Backend::Ort { session } => {
                let named = INPUT_NAMES.iter().map(|n| Ok((*n, get(n)?))).collect::<Result<Vec<_>, ModelError>>()?;
                Ok(session.run(&named)?)
            }
            Backend::Burn { model, device, stage, taps, .. } => {
                let mut exec = BurnExec::new(&model.weights, device, false).with_taps(*taps);
                let ins = GeneratorInputs::try_from_fn(|n| Ok(exec.input(get(n)?)))?;
                let mut out = BTreeMap::new();
                match stage {
                    Stage::Warp => {
                        let warp = net::warp::warp_forward(&mut exec, &model.config, &ins)?;
                        let named = [
                            (net::OUTPUT_DEFORMATION, &warp.deformation),
                            (net::OUTPUT_FLOW, &warp.flow),
                            (net::OUTPUT_OCCLUSION, &warp.occlusion_map),
                            (net::OUTPUT_DEFORMED, &warp.deformed),
                        ];
                        for (name, v) in named {
                            out.insert(name.to_owned(), exec.to_host(v));
                        }
                    }
                    Stage::Full => {
                        let outs = net::generator_forward(&mut exec, &model.config, &ins)?;
                        for (name, v) in outs.named() {
                            out.insert(name.to_owned(), exec.to_host(v));
                        }
                    }
                }
                out.extend(exec.take_taps());
                Ok(out)
            }
        }
    }
}

/// Emits the ONNX graph of the generator (or of its warping stage) with the model's weights as initializers.
pub fn build_onnx(model: &GeneratorModel, stage: Stage, taps: bool) -> Result<Vec<u8>, ModelError> {
    let cfg = &model.config;
    let mut b = OnnxBuilder::new(&model.weights).with_taps(taps);
    let inputs = GeneratorInputs::from_spec(cfg, |name, shape| b.input(name, shape));
    match stage {
        Stage::Warp => {
            let warp = net::warp::warp_forward(&mut b, cfg, &inputs)?;
            b.output(net::OUTPUT_DEFORMATION, &warp.deformation);
            b.output(net::OUTPUT_FLOW, &warp.flow);
            b.output(net::OUTPUT_OCCLUSION, &warp.occlusion_map);
            b.output(net::OUTPUT_DEFORMED, &warp.deformed);
        }
        Stage::Full => {
            let outs = net::generator_forward(&mut b, cfg, &inputs)?;
            for (name, v) in outs.named() {
                b.output(name, v);
            }
        }
    }
    b.finish()
}
