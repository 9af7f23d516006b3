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
use crate::runtime::Device;
use crate::runtime::ort::{OrtSession, SessionOptions};
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
}

impl Default for TsrOptions {
    fn default() -> Self {
        Self { executor: ExecutorKind::Ort, device: Device::Cpu, threads: 0, taps: false }
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
}

impl TsrRunner {
    /// Binds `model` to the executor and device of `opts`. ONNX sessions are built lazily, one per batch geometry
    /// (frames per call, input side), on first use.
    pub fn new(model: TsrModel, opts: TsrOptions) -> Result<Self, ModelError> {
        if opts.executor == ExecutorKind::Burn {
            crate::runtime::burn_device::exec_device(opts.device)?;
        }
        Ok(Self { model, opts, sessions: BTreeMap::new() })
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
            let graph = build_onnx(&self.model, geom.frames, geom.side, self.opts.taps)?;
            let session_opts = SessionOptions { threads: self.opts.threads, device: self.opts.device };
            let session = OrtSession::from_bytes(&graph, &session_opts)?;
            self.sessions.insert(geom, session);
        }
        self.sessions
            .get_mut(&geom)
            .ok_or_else(|| ModelError::Executor { executor: "ort", reason: "no session".into() })
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
                let y = net::tsr_forward(&mut exec, &self.model.config, &x)?;
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
    let mut b = OnnxBuilder::new(&model.weights).with_taps(taps);
    let x = b.input(GRAPH_INPUT, &[frames, RGB, side, side]);
    let y = net::tsr_forward(&mut b, &model.config, &x)?;
    b.output(net::OUTPUT, &y);
    b.finish()
}
