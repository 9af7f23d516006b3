//! The temporal SR engine: a validated TSR model bound to an executor, run on clips or chunks of frames.
//!
//! Owns `TsrModel` (config + weights checked against the architecture's listing), the ONNX graphs built from the one
//! architecture definition (one ONNX Runtime session per batch geometry, built on first use and kept), and the
//! official offline chunking. Receives frames as `[n, 3, h, w]` host tensors in [0, 1]; emits `[n, 3, S, S]`.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::TsrConfig;
use super::net::{self, RGB};
use crate::model::ModelError;
use crate::model::exec::ExecutorKind;
use crate::model::exec::burn::BurnExec;
use crate::model::exec::onnx::OnnxBuilder;
use crate::model::exec::shape::ShapeOps;
use crate::model::weights::{ExpectedEntry, WeightStore, random_init};
use crate::runtime::ort::OrtSession;
use crate::runtime::{Device, Placement, Precision};
use crate::tensor::HostTensor;

/// Graph input name (the frames as a batch).
const GRAPH_INPUT: &str = "frames";
/// Seed of the deterministic initialisation used when no weights are given.
pub const DEFAULT_INIT_SEED: u64 = 0x5453;

/// Every state-dict entry of the architecture for `cfg`, in the reference's order.
pub fn expected_entries(cfg: &TsrConfig) -> Result<Vec<ExpectedEntry>, ModelError> {
    let mut ops = ShapeOps::new();
    let side = cfg.out_size / 2;
    net::tsr_forward(&mut ops, cfg, &vec![1, RGB, side, side])?;
    if let Some(err) = ops.take_error() {
        return Err(err);
    }
    Ok(ops.into_entries())
}

/// A TSR configuration with weights that match it.
#[derive(Clone, Debug)]
pub struct TsrModel {
    /// The constructor arguments the network is built with.
    pub config: TsrConfig,
    /// Weights holding every entry the architecture declares for `config`, with those shapes (checked by `new`).
    pub weights: WeightStore,
}

impl TsrModel {
    /// Pairs a config with weights after checking every key and shape.
    pub fn new(config: TsrConfig, weights: WeightStore) -> Result<Self, ModelError> {
        weights.validate(&expected_entries(&config)?)?;
        Ok(Self { config, weights })
    }

    /// Reads a safetensors weight file and pairs it with `config` (checked as in `new`).
    pub fn load(config: TsrConfig, path: &Path) -> Result<Self, ModelError> {
        Self::new(config, WeightStore::load_safetensors(path)?)
    }

    /// Deterministic random weights (benchmarks).
    pub fn random(config: TsrConfig, seed: u64) -> Result<Self, ModelError> {
        let weights = random_init(&expected_entries(&config)?, seed);
        Ok(Self { config, weights })
    }
}

/// Executor settings for the TSR engine.
#[derive(Clone, Debug)]
pub struct TsrOptions {
    /// Which executor runs the network (ONNX Runtime by default).
    pub executor: ExecutorKind,
    /// The device asked for: ONNX Runtime falls back to the CPU when CUDA is unusable, burn refuses a device it
    /// cannot open; `auto` takes CUDA GPU 0 when usable.
    pub device: Device,
    /// Intra-op threads (ONNX Runtime); 0 lets the runtime decide.
    pub threads: usize,
    /// Also return the named intermediates (`inter.*`).
    pub taps: bool,
    /// `--precision` (ONNX Runtime): fp32, TF32 or the float16 graph.
    pub precision: Precision,
    /// The range of the frames given to the network (`Signed`: the generator's prediction as it is).
    pub input_range: net::InputRange,
}

impl Default for TsrOptions {
    fn default() -> Self {
        Self {
            executor: ExecutorKind::Ort,
            device: Device::Cpu,
            threads: 0,
            taps: false,
            precision: Precision::Fp32,
            input_range: net::InputRange::Unit,
        }
    }
}

/// Batch geometry a session is built for: frames per call and input side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Geometry {
    frames: usize,
    side: usize,
}

/// A TSR model ready to run batches of frames.
pub struct TsrRunner {
    model: TsrModel,
    opts: TsrOptions,
    /// ONNX Runtime sessions by geometry; graphs have static shapes, so each batch size gets its own.
    sessions: BTreeMap<Geometry, OrtSession>,
    /// Where the sessions run: planned at construction, then what the first session really got.
    placement: Placement,
    /// burn's staged input and last output (ONNX Runtime's are bound to its sessions).
    burn_staged: (HostTensor, HostTensor),
}

impl TsrRunner {
    /// Binds `model` to the executor and device of `opts`. ONNX sessions are built lazily, one per batch geometry
    /// (frames per call, input side), on first use.
    pub fn new(model: TsrModel, opts: TsrOptions) -> Result<Self, ModelError> {
        let placement = match opts.executor {
            ExecutorKind::Burn => {
                let (_, runs_on) = crate::runtime::burn_device::resolve_device(opts.device)?;
                crate::model::runner::burn_placement(opts.device, opts.precision, runs_on)
            }
            ExecutorKind::Ort => crate::runtime::ort::plan_placement(opts.device, opts.precision),
        };
        let empty = || HostTensor::zeros(&[0]);
        Ok(Self { model, opts, sessions: BTreeMap::new(), placement, burn_staged: (empty(), empty()) })
    }

    /// Where and at what precision the network runs, against what was asked for, and why they differ.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// The model's configuration.
    pub fn config(&self) -> &TsrConfig {
        &self.model.config
    }

    /// The executor running the batches.
    pub fn executor(&self) -> ExecutorKind {
        self.opts.executor
    }

    /// Checks `[n, 3, h, w]` with an accepted side and returns its geometry.
    fn geometry(&self, frames: &HostTensor) -> Result<Geometry, ModelError> {
        let s = frames.shape();
        let cfg = &self.model.config;
        if s.len() != 4 || s[0] == 0 || s[1] != RGB || s[2] != s[3] || !net::input_side_ok(cfg, s[2]) {
            let half = cfg.out_size / 2;
            return Err(ModelError::InputShape {
                name: net::INPUT_LQ.into(),
                expected: vec![s.first().copied().unwrap_or(1).max(1), RGB, half, half],
                actual: s.to_vec(),
            });
        }
        Ok(Geometry { frames: s[0], side: s[2] })
    }

    /// Builds the session for a geometry ahead of time (so the first live frame does not pay for it).
    pub fn prepare(&mut self, frames: usize, side: usize) -> Result<(), ModelError> {
        if self.opts.executor == ExecutorKind::Ort {
            self.session(Geometry { frames, side })?;
        }
        Ok(())
    }

    fn session(&mut self, geom: Geometry) -> Result<&mut OrtSession, ModelError> {
        if !self.sessions.contains_key(&geom) {
            let (model, opts) = (&self.model, &self.opts);
            let build = |p: Precision| build_onnx_in(model, geom.frames, geom.side, opts.taps, p, opts.input_range);
            let (session, placement) =
                crate::model::runner::ort_session(opts.device, opts.precision, opts.threads, build)?;
            if self.sessions.is_empty() {
                self.placement = placement;
            }
            self.sessions.insert(geom, session);
        }
        self.sessions
            .get_mut(&geom)
            .ok_or_else(|| ModelError::Executor { executor: "ort", reason: "no session".into() })
    }

    /// The bound input `[frames, 3, side, side]` of that geometry's session, to fill in place before `run_staged`
    /// (ONNX Runtime; with burn a kept buffer).
    pub fn staged_frames(&mut self, frames: usize, side: usize) -> Result<&mut [f32], ModelError> {
        let geom = Geometry { frames, side };
        match self.opts.executor {
            ExecutorKind::Ort => Ok(self.session(geom)?.staged_input(GRAPH_INPUT)?),
            ExecutorKind::Burn => {
                let len = frames * RGB * side * side;
                if self.burn_staged.0.len() != len {
                    self.burn_staged.0 = HostTensor::zeros(&[frames, RGB, side, side]);
                }
                Ok(self.burn_staged.0.data_mut())
            }
        }
    }

    /// On CUDA, writes frame `k` of that geometry's staged input from a device frame (the generator's prediction,
    /// with `InputRange::Signed`), without a host round trip; `Ok(false)` when the sessions do not run on CUDA
    /// buffers (write `staged_frames` instead).
    pub fn stage_frame_from_device(
        &mut self,
        frames: usize,
        side: usize,
        k: usize,
        frame: &crate::runtime::cuda_io::DeviceFrame,
    ) -> Result<bool, ModelError> {
        if self.opts.executor != ExecutorKind::Ort {
            return Ok(false);
        }
        let session = self.session(Geometry { frames, side })?;
        session.staged_input(GRAPH_INPUT)?; // binds the buffers on first use
        let Some(io) = session.staged_cuda() else { return Ok(false) };
        io.fill_input_from_frame(GRAPH_INPUT, k * RGB * side * side, frame)
            .map(|()| true)
            .map_err(|e| ModelError::Runtime(crate::runtime::RuntimeError::Cuda(e)))
    }

    /// Runs that geometry on its staged input without allocating (ONNX Runtime) and returns `[frames, 3, S, S]`.
    pub fn run_staged(&mut self, frames: usize, side: usize) -> Result<&HostTensor, ModelError> {
        let geom = Geometry { frames, side };
        let no_output = || ModelError::Executor { executor: "ort", reason: "the graph produced no output".into() };
        match self.opts.executor {
            ExecutorKind::Ort => {
                let session = self.session(geom)?;
                session.run_staged()?;
                session.staged_output(net::OUTPUT).ok_or_else(no_output)
            }
            ExecutorKind::Burn => {
                let input = std::mem::replace(&mut self.burn_staged.0, HostTensor::zeros(&[0]));
                let result = self.run_frames(&input);
                self.burn_staged.0 = input;
                self.burn_staged.1 = result?.remove(net::OUTPUT).ok_or_else(no_output)?;
                Ok(&self.burn_staged.1)
            }
        }
    }

    /// Runs `[n, 3, h, w]` frames of one clip; returns `output` `[n, 3, S, S]` (+ taps when enabled).
    pub fn run_frames(&mut self, frames: &HostTensor) -> Result<BTreeMap<String, HostTensor>, ModelError> {
        let geom = self.geometry(frames)?;
        match self.opts.executor {
            ExecutorKind::Ort => {
                let session = self.session(geom)?;
                let mut out = session.run(&[(GRAPH_INPUT, frames)])?;
                if !out.contains_key(net::OUTPUT) {
                    return Err(ModelError::Executor {
                        executor: "ort",
                        reason: "the graph produced no output".into(),
                    });
                }
                out.retain(|k, _| k == net::OUTPUT || k.starts_with("inter."));
                Ok(out)
            }
            ExecutorKind::Burn => {
                let device = crate::runtime::burn_device::exec_device(self.opts.device)?;
                let mut exec = BurnExec::new(&self.model.weights, &device, false).with_taps(self.opts.taps);
                let x = exec.input(frames);
                let y = net::tsr_forward_from(&mut exec, &self.model.config, &x, self.opts.input_range)?;
                let mut out = exec.take_taps();
                out.insert(net::OUTPUT.to_owned(), exec.to_host(&y));
                Ok(out)
            }
        }
    }

    /// The official offline path: a clip `(1, n, 3, h, w)` cut into chunks of `chunk` frames (the last may be
    /// shorter), each run on its own; returns `(1, n, 3, S, S)`. `chunk ≥ n` runs the clip in one call.
    pub fn run_clip(&mut self, lq: &HostTensor, chunk: usize) -> Result<HostTensor, ModelError> {
        let s = lq.shape();
        if s.len() != 5 || s[0] != 1 || s[1] == 0 {
            return Err(ModelError::Tensor {
                name: net::INPUT_LQ.into(),
                reason: format!("expected (1, n, 3, h, w) with n ≥ 1 (batch must be 1), got {s:?}"),
            });
        }
        let (n, frame_len) = (s[1], s[2..].iter().product::<usize>());
        let chunk = chunk.max(1);
        let mut data = Vec::new();
        let mut out_frame_shape = Vec::new();
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let slice = lq.data()[start * frame_len..end * frame_len].to_vec();
            let frames = HostTensor::new([&[end - start][..], &s[2..]].concat(), slice)
                .map_err(|e| ModelError::Tensor { name: net::INPUT_LQ.into(), reason: e.to_string() })?;
            let out = self.run_frames(&frames)?.remove(net::OUTPUT).unwrap_or_else(|| HostTensor::zeros(&[0]));
            out_frame_shape = out.shape()[1..].to_vec();
            data.extend_from_slice(out.data());
        }
        HostTensor::new([&[1, n][..], &out_frame_shape].concat(), data)
            .map_err(|e| ModelError::Tensor { name: net::OUTPUT.into(), reason: e.to_string() })
    }
}

/// The ONNX graph of the TSR network for `frames` frames of side `side`, weights as initializers.
pub fn build_onnx(model: &TsrModel, frames: usize, side: usize, taps: bool) -> Result<Vec<u8>, ModelError> {
    build_onnx_at(model, frames, side, taps, Precision::Fp32)
}

/// `build_onnx` at a precision: `Fp16` emits the float16 graph (float32 input and output).
pub fn build_onnx_at(
    model: &TsrModel,
    frames: usize,
    side: usize,
    taps: bool,
    precision: Precision,
) -> Result<Vec<u8>, ModelError> {
    build_onnx_in(model, frames, side, taps, precision, net::InputRange::Unit)
}

/// `build_onnx_at` for frames in `range`.
pub fn build_onnx_in(
    model: &TsrModel,
    frames: usize,
    side: usize,
    taps: bool,
    precision: Precision,
    range: net::InputRange,
) -> Result<Vec<u8>, ModelError> {
    let mut b = OnnxBuilder::new(&model.weights).with_taps(taps).with_half(precision.half_graph());
    let x = b.input(GRAPH_INPUT, &[frames, RGB, side, side]);
    let y = net::tsr_forward_from(&mut b, &model.config, &x, range)?;
    b.output(net::OUTPUT, &y);
    b.finish()
}
