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
use crate::runtime::ort::{OrtSession, SessionOptions};
use crate::runtime::{Device, Placement, Precision};
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
    /// `--precision`: fp32, TF32 or the float16 graph (CUDA; see `Placement::resolve` for the CPU). ONNX Runtime only.
    pub precision: Precision,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            executor: ExecutorKind::Ort,
            device: Device::Cpu,
            threads: 0,
            stage: Stage::Full,
            taps: false,
            precision: Precision::Fp32,
        }
    }
}

/// A generator ready to run frames.
pub struct GeneratorRunner {
    /// Expected input shapes, in `INPUT_NAMES` order: inputs are checked before any executor sees them.
    input_shapes: [Vec<usize>; INPUT_NAMES.len()],
    backend: Backend,
    placement: Placement,
    /// burn's staged mode: the inputs written so far and the last run's outputs (ONNX Runtime keeps its own).
    burn_staged: (BTreeMap<String, HostTensor>, BTreeMap<String, HostTensor>),
}

enum Backend {
    Ort { session: OrtSession },
    Burn { model: GeneratorModel, device: burn::tensor::Device, runs_on: Device, stage: Stage, taps: bool },
}

impl GeneratorRunner {
    /// Binds `model` to the executor and device of `opts`; for ONNX Runtime this builds the graph with the current
    /// weights and opens the session.
    pub fn new(model: &GeneratorModel, opts: &RunnerOptions) -> Result<Self, ModelError> {
        let (backend, placement) = match opts.executor {
            ExecutorKind::Ort => {
                let build = |p: Precision| build_onnx_at(model, opts.stage, opts.taps, p);
                let (session, placement) = ort_session(opts.device, opts.precision, opts.threads, build)?;
                (Backend::Ort { session }, placement)
            }
            ExecutorKind::Burn => {
                let (device, runs_on) = crate::runtime::burn_device::resolve_device(opts.device)?;
                let placement = burn_placement(opts.device, opts.precision, runs_on);
                (Backend::Burn { model: model.clone(), device, runs_on, stage: opts.stage, taps: opts.taps }, placement)
            }
        };
        if !placement.is_as_requested() {
            tracing::info!(placement = %placement, "generator engine");
        }
        Ok(Self { input_shapes: net::input_shapes(&model.config), backend, placement, burn_staged: Default::default() })
    }

    /// Writes input `name` (one of `INPUT_NAMES`, its full length) for the following `run_staged` calls: with ONNX
    /// Runtime straight into the buffer bound to the session, so an input written once per identity is uploaded once
    /// on CUDA and the per-frame inputs are copied without allocating.
    pub fn stage(&mut self, name: &str, values: &[f32]) -> Result<(), ModelError> {
        let k = INPUT_NAMES.iter().position(|n| *n == name).ok_or_else(|| ModelError::MissingInput(name.to_owned()))?;
        let shape = &self.input_shapes[k];
        if values.len() != shape.iter().product::<usize>() {
            return Err(ModelError::InputShape {
                name: name.to_owned(),
                expected: shape.clone(),
                actual: vec![values.len()],
            });
        }
        match &mut self.backend {
            Backend::Ort { session } => session.staged_input(name)?.copy_from_slice(values),
            Backend::Burn { .. } => {
                let t = HostTensor::new(shape.clone(), values.to_vec())
                    .map_err(|e| ModelError::Tensor { name: name.to_owned(), reason: e.to_string() })?;
                self.burn_staged.0.insert(name.to_owned(), t);
            }
        }
        Ok(())
    }

    /// Only these outputs are needed from `run_staged` (on CUDA the others stay on the GPU).
    pub fn stage_outputs(&mut self, names: &[&str]) -> Result<(), ModelError> {
        match &mut self.backend {
            Backend::Ort { session } => Ok(session.download_only(names)?),
            Backend::Burn { .. } => Ok(()),
        }
    }

    /// Runs on the staged inputs (every input must have been staged once); read results with `staged_output`.
    pub fn run_staged(&mut self) -> Result<(), ModelError> {
        match &mut self.backend {
            Backend::Ort { session } => Ok(session.run_staged()?),
            Backend::Burn { .. } => {
                let inputs = std::mem::take(&mut self.burn_staged.0);
                let result = self.run(&inputs);
                self.burn_staged.0 = inputs;
                self.burn_staged.1 = result?;
                Ok(())
            }
        }
    }

    /// On CUDA, copies output `name` of the last `run_staged` into a device frame for another session (the TSR)
    /// without a host round trip; `Ok(false)` when the engine does not run on CUDA buffers (use `staged_output`).
    pub fn output_to_device(
        &mut self,
        name: &str,
        frame: &mut Option<crate::runtime::cuda_io::DeviceFrame>,
    ) -> Result<bool, ModelError> {
        let Backend::Ort { session } = &mut self.backend else { return Ok(false) };
        let Some(io) = session.staged_cuda() else { return Ok(false) };
        io.output_into_frame(name, frame)
            .map(|()| true)
            .map_err(|e| ModelError::Runtime(crate::runtime::RuntimeError::Cuda(e)))
    }

    /// Output `name` of the last `run_staged`.
    pub fn staged_output(&self, name: &str) -> Option<&HostTensor> {
        match &self.backend {
            Backend::Ort { session } => session.staged_output(name),
            Backend::Burn { .. } => self.burn_staged.1.get(name),
        }
    }

    /// Where and at what precision the frames run, against what was asked for, and why they differ.
    pub fn placement(&self) -> &Placement {
        &self.placement
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

/// An ONNX Runtime session for a graph `build` emits at a precision: the placement is planned first (a half graph
/// only where fp16 will run), and a session that then falls back from CUDA to the CPU gets the graph again in the
/// precision it runs. Returns the session and the placement measured against the request.
pub fn ort_session(
    device: Device,
    precision: Precision,
    threads: usize,
    build: impl Fn(Precision) -> Result<Vec<u8>, ModelError>,
) -> Result<(OrtSession, Placement), ModelError> {
    let plan = crate::runtime::ort::plan_placement(device, precision);
    let session = OrtSession::from_bytes(&build(plan.precision)?, &SessionOptions { threads, device, precision })?;
    let placement = session.placement().clone();
    if placement.precision == plan.precision {
        return Ok((session, placement));
    }
    let again = SessionOptions { threads, device: placement.device, precision: placement.precision };
    Ok((OrtSession::from_bytes(&build(placement.precision)?, &again)?, placement))
}

/// burn computes in float32 on the device it resolved to.
pub fn burn_placement(requested: Device, precision: Precision, runs_on: Device) -> Placement {
    let mut notes = Vec::new();
    if runs_on != requested && requested != Device::Auto {
        notes.push(format!("burn runs on {runs_on}"));
    }
    if precision != Precision::Fp32 {
        notes.push(format!("{precision} is an ONNX Runtime precision; burn computes in fp32"));
    }
    let note = (!notes.is_empty()).then(|| notes.join("; "));
    Placement { requested, requested_precision: precision, device: runs_on, precision: Precision::Fp32, note }
}

/// Emits the ONNX graph of the generator (or of its warping stage) with the model's weights as initializers.
pub fn build_onnx(model: &GeneratorModel, stage: Stage, taps: bool) -> Result<Vec<u8>, ModelError> {
    build_onnx_at(model, stage, taps, Precision::Fp32)
}

/// `build_onnx` at a precision: `Fp16` emits the float16 graph (float32 inputs and outputs).
pub fn build_onnx_at(
    model: &GeneratorModel,
    stage: Stage,
    taps: bool,
    precision: Precision,
) -> Result<Vec<u8>, ModelError> {
    let cfg = &model.config;
    let mut b = OnnxBuilder::new(&model.weights).with_taps(taps).with_half(precision.half_graph());
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
