//! ONNX Runtime: finding the shared library, the process-wide environment, and inference sessions.
//!
//! Owns the library search (`ORT_DYLIB_PATH` → `METAPORTRAIT_RUNTIME_DIR` → the project's `.runtime/` → python3's
//! `onnxruntime` package), the one-time `ort::init_from`, and `OrtSession`: a session built from in-memory model
//! bytes with a fixed threading policy and an optional CUDA execution provider that falls back to the CPU with one
//! warning. Receives model bytes and named `HostTensor`s; emits every graph output as a `HostTensor`. Errors are
//! `RuntimeError`s.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::cuda_io::CudaIo;
use super::ort_api::append_cuda;
pub use super::ort_api::{CUDA_GRAPH_ENV, CUDA_TF32_ENV};
use super::{Device, RuntimeError, probe_cuda};
use crate::tensor::HostTensor;

/// Explicit path of the library file (the variable `ort` itself honours).
pub const ENV_DYLIB_PATH: &str = "ORT_DYLIB_PATH";
/// A directory holding the library, directly or as `onnxruntime/capi/` (a pip `--target` install).
pub const ENV_RUNTIME_DIR: &str = "METAPORTRAIT_RUNTIME_DIR";
/// Project-local install made by `scripts/provision-ort.sh`.
pub const LOCAL_RUNTIME_DIR: &str = ".runtime";
/// The command that installs the library; quoted in every "not found" error.
pub const PROVISION_FIX: &str = "bash scripts/provision-ort.sh";
const LIB_PREFIX: &str = "libonnxruntime.so";
/// Where the pip wheel keeps the library, relative to the package's parent directory.
const WHEEL_CAPI: &str = "onnxruntime/capi";
const PYTHON_LOCATE: &str = "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))";
fn ort_error(context: &str, e: impl Display) -> RuntimeError {
    RuntimeError::ort(context, e)
}

/// The first `libonnxruntime.so*` in `dir` (sorted, so the choice is stable).
fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(LIB_PREFIX)))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Where to look, in order; split from the process environment so the search is testable.
#[derive(Clone, Debug, Default)]
pub struct LibrarySearch {
    /// An explicit library file (`ORT_DYLIB_PATH`); when set it is the only candidate, and a missing file is an error.
    pub dylib_path: Option<PathBuf>,
    /// A directory holding the library directly or as `onnxruntime/capi/` (`METAPORTRAIT_RUNTIME_DIR`).
    pub runtime_dir: Option<PathBuf>,
    /// Roots that may hold `.runtime/onnxruntime/capi/`.
    pub project_roots: Vec<PathBuf>,
    /// Ask python3 where its `onnxruntime` package is.
    pub python: bool,
}

impl LibrarySearch {
    /// The search this process uses: environment variables, the current and the build directory, then python3.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let mut project_roots: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
        project_roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        Self { dylib_path: var(ENV_DYLIB_PATH), runtime_dir: var(ENV_RUNTIME_DIR), project_roots, python: true }
    }

    /// Resolves the library path; the error lists what was tried and the one-line fix.
    pub fn locate(&self) -> Result<PathBuf, RuntimeError> {
        self.find()
    }

    /// The library path, or what was tried and the fix.
    fn find(&self) -> Result<PathBuf, RuntimeError> {
        if let Some(path) = &self.dylib_path {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(RuntimeError::library(format!(
                    "ONNX Runtime not found: {ENV_DYLIB_PATH}={} is not a file; unset it, or run `{PROVISION_FIX}`",
                    path.display()
                )))
            };
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(dir) = &self.runtime_dir {
            dirs.extend([dir.join(WHEEL_CAPI), dir.clone()]);
        }
        for root in &self.project_roots {
            let dir = root.join(LOCAL_RUNTIME_DIR).join(WHEEL_CAPI);
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        if let Some(lib) = dirs.iter().find_map(|d| library_in(d)) {
            return Ok(lib);
        }
        let mut tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        if self.python {
            match python_package_dir() {
                Some(pkg) => match library_in(&pkg.join("capi")) {
                    Some(lib) => return Ok(lib),
                    None => tried.push(pkg.join("capi").display().to_string()),
                },
                None => tried.push("python3's `onnxruntime` package (not installed)".into()),
            }
        }
        Err(RuntimeError::library(format!(
            "ONNX Runtime not found (no {LIB_PREFIX}* in {}); run `{PROVISION_FIX}` (or set {ENV_DYLIB_PATH} to the \
             library file)",
            tried.join(", ")
        )))
    }
}

fn python_package_dir() -> Option<PathBuf> {
    let out = Command::new("python3").args(["-c", PYTHON_LOCATE]).output().ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !dir.trim().is_empty()).then(|| PathBuf::from(dir.trim()))
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<Environment, RuntimeError> {
    static ENV: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = LibrarySearch::from_env().find()?;
        // `ort::init()` would panic without a library; `init_from` reports instead.
        let builder =
            ort::init_from(&path).map_err(|e| RuntimeError::library(format!("cannot load {}: {e}", path.display())))?;
        let env = builder
            .with_name("metaportrait")
            .with_telemetry(false)
            .build()
            .map_err(|e| RuntimeError::library(e.to_string()))?;
        tracing::debug!(library = %path.display(), "ONNX Runtime loaded");
        Ok(env)
    })
    .clone()
}

/// Session settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// Intra-op threads; 0 lets ONNX Runtime use one per physical core.
    pub threads: usize,
    /// The device asked for; Vulkan, and CUDA that cannot be used, fall back to the CPU (see `OrtSession::device`).
    pub device: Device,
}

/// An ONNX Runtime session over one model.
pub struct OrtSession {
    session: Session,
    device: Device,
    /// CUDA sessions: the device buffers bound to every input and output, made on the first run (their shapes come
    /// from it). `Failed` after a binding could not be made: runs then go through ONNX Runtime's own copies.
    cuda_io: CudaBinding,
}

enum CudaBinding {
    NotOnCuda,
    Pending(usize),
    Bound(Box<CudaIo>),
    Failed,
}

impl OrtSession {
    /// Builds a session from serialised model bytes. CUDA (asked for, or `Auto`) that cannot be used falls back to
    /// the CPU with a single warning saying why.
    pub fn from_bytes(model: &[u8], opts: &SessionOptions) -> Result<Self, RuntimeError> {
        let env = environment()?;
        let ordinal = match opts.device {
            Device::Cpu => None,
            Device::Vulkan => {
                report_cpu_fallback(opts.device, "ONNX Runtime has no Vulkan execution provider");
                None
            }
            Device::Cuda(n) => Some(n),
            Device::Auto => Some(0),
        };
        if let Some(n) = ordinal {
            let attempt = probe_cuda(n).map_err(RuntimeError::from).and_then(|()| {
                let mut builder = base_builder(&env, opts.threads)?;
                append_cuda(&mut builder, n)?;
                builder.commit_from_memory(model).map_err(|e| ort_error("cannot create the CUDA session", e))
            });
            match attempt {
                Ok(session) => {
                    return Ok(Self { session, device: Device::Cuda(n), cuda_io: CudaBinding::Pending(n) });
                }
                Err(RuntimeError::Cuda(why)) => report_cpu_fallback(opts.device, &why.to_string()),
                Err(why) => report_cpu_fallback(opts.device, &why.to_string()),
            }
        }
        let session = base_builder(&env, opts.threads)?
            .commit_from_memory(model)
            .map_err(|e| ort_error("cannot create the session", e))?;
        Ok(Self { session, device: Device::Cpu, cuda_io: CudaBinding::NotOnCuda })
    }

    /// The device the session actually runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The model's graph input names, in declaration order.
    pub fn input_names(&self) -> Vec<String> {
        self.session.inputs().iter().map(|o| o.name().to_owned()).collect()
    }

    /// The model's graph output names, in declaration order (the keys `run` returns).
    pub fn output_names(&self) -> Vec<String> {
        self.session.outputs().iter().map(|o| o.name().to_owned()).collect()
    }

    /// Whether runs go through CUDA device buffers bound to the session (known after the first run).
    pub fn uses_device_buffers(&self) -> bool {
        matches!(self.cuda_io, CudaBinding::Bound(_))
    }

    /// Runs the model on named float inputs and returns every output. On the CPU the inputs are viewed in place; on
    /// CUDA they are copied into device buffers bound once to the session.
    pub fn run(&mut self, inputs: &[(&str, &HostTensor)]) -> Result<BTreeMap<String, HostTensor>, RuntimeError> {
        if let CudaBinding::Pending(ordinal) = self.cuda_io {
            self.cuda_io = match CudaIo::new(&self.session, ordinal, inputs) {
                Ok(io) => {
                    tracing::debug!("ONNX Runtime inputs and outputs bound to CUDA device buffers");
                    CudaBinding::Bound(Box::new(io))
                }
                Err(why) => {
                    tracing::warn!("CUDA IoBinding unavailable, ONNX Runtime copies the tensors itself: {why}");
                    CudaBinding::Failed
                }
            };
        }
        if let CudaBinding::Bound(io) = &mut self.cuda_io {
            return io.run(&mut self.session, inputs).map_err(|why| ort_error("CUDA run", why));
        }
        let values = inputs
            .iter()
            .map(|(name, t)| {
                let view = TensorRef::from_array_view((t.shape(), t.data()))
                    .map_err(|e| ort_error(&format!("input `{name}`"), e))?;
                Ok((Cow::Borrowed(*name), SessionInputValue::from(view)))
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let outputs = self.session.run(values).map_err(|e| ort_error("run failed", e))?;
        outputs
            .iter()
            .map(|(name, value)| {
                let (shape, data) =
                    value.try_extract_tensor::<f32>().map_err(|e| ort_error(&format!("output `{name}`"), e))?;
                let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                let t = HostTensor::new(shape, data.to_vec()).map_err(|e| ort_error(&format!("output `{name}`"), e))?;
                Ok((name.to_owned(), t))
            })
            .collect()
    }
}

/// Threads: `threads` intra-op, 1 inter-op (the graph is a chain), no spinning (it burns cores between frames and
/// starves other work on small machines); all graph optimisations, including the NCHWc layout transforms.
fn base_builder(env: &Environment, threads: usize) -> Result<SessionBuilder, RuntimeError> {
    let step = |e: ort::Error<SessionBuilder>| ort_error("session options", e);
    let builder = Session::builder(env)
        .map_err(|e| ort_error("session options", e))?
        .with_intra_threads(threads)
        .map_err(step)?
        .with_inter_threads(1)
        .map_err(step)?
        .with_intra_op_spinning(false)
        .map_err(step)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(step)?;
    match std::env::var_os(PROFILE_ENV) {
        // Per-node timings for performance work: ONNX Runtime writes a Chrome-trace JSON with this prefix when the
        // session ends.
        Some(prefix) => builder.with_profiling(prefix).map_err(step),
        None => Ok(builder),
    }
}

/// Says once per process why a CUDA request runs on the CPU: a warning when CUDA was asked for explicitly, an
/// information line for `auto` (where the CPU is an expected outcome).
fn report_cpu_fallback(device: Device, why: &str) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    match device {
        Device::Auto => tracing::info!("device `auto`: running ONNX Runtime on the CPU ({why})"),
        _ => tracing::warn!("device `{device}` requested, running ONNX Runtime on the CPU: {why}"),
    }
}

/// Environment variable: file prefix for ONNX Runtime's per-node profile (unset: no profiling).
pub const PROFILE_ENV: &str = "METAPORTRAIT_ORT_PROFILE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_error_gives_the_fix() {
        let empty = std::env::temp_dir().join(format!("metaportrait-no-ort-{}", std::process::id()));
        let search = LibrarySearch {
            dylib_path: None,
            runtime_dir: Some(empty.clone()),
            project_roots: vec![empty.clone()],
            python: false,
        };
        let msg = search.locate().unwrap_err().to_string();
        assert!(msg.contains(PROVISION_FIX), "{msg}");
        assert!(msg.contains("executor `ort`"), "{msg}");
        assert!(msg.contains(&empty.display().to_string()), "{msg}");

        let bad_file = LibrarySearch { dylib_path: Some(empty.join("libonnxruntime.so")), ..Default::default() };
        let msg = bad_file.locate().unwrap_err().to_string();
        assert!(msg.contains(ENV_DYLIB_PATH) && msg.contains(PROVISION_FIX), "{msg}");
    }

    #[test]
    fn finds_a_pip_target_install() {
        let root = std::env::temp_dir().join(format!("metaportrait-fake-ort-{}", std::process::id()));
        let capi = root.join(LOCAL_RUNTIME_DIR).join(WHEEL_CAPI);
        std::fs::create_dir_all(&capi).unwrap();
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.31.0"), b"").unwrap();
        let search =
            LibrarySearch { project_roots: vec![PathBuf::from("/nonexistent"), root.clone()], ..Default::default() };
        assert_eq!(search.locate().unwrap(), capi.join("libonnxruntime.so.1.31.0"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn provisioned_library_loads() {
        // `scripts/provision-ort.sh` must have run (the project's test script does it first).
        environment().unwrap();
    }
}
