//! ONNX Runtime: finding the shared library, the process-wide environment, and inference sessions.
//!
//! Owns the library search (`ORT_DYLIB_PATH` → `METAPORTRAIT_RUNTIME_DIR` → the project's `.runtime/gpu/` (the CUDA
//! build, `provision-ort.sh --gpu`) then `.runtime/` → python3's `onnxruntime` package), the one-time
//! `ort::init_from`, the CUDA readiness probe (driver and device, a build with the CUDA provider, its libraries loaded
//! from beside the library: `cuda_libs`), and `OrtSession`: a session built from in-memory model bytes with a fixed
//! threading policy and an optional CUDA execution provider that falls back to the CPU with one warning, recording
//! where it really runs (`Placement`). Receives model bytes and named `HostTensor`s; emits every graph output as a
//! `HostTensor`. Errors are `RuntimeError`s.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ort::AsPointer;
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;

use super::cuda_io::CudaIo;
pub use super::ort_api::{CUDA_GRAPH_ENV, CUDA_TF32_ENV};
use super::ort_api::{append_cuda, status_result};
use super::placement::{Placement, Precision};
use super::{CudaError, Device, RuntimeError, probe_cuda};
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
/// The GPU build's install root inside `.runtime/` (`scripts/provision-ort.sh --gpu`), searched first.
pub const LOCAL_GPU_SUBDIR: &str = "gpu";
/// The command that installs the GPU build and its CUDA libraries.
pub const PROVISION_GPU_FIX: &str = "bash scripts/provision-ort.sh --gpu";
/// ONNX Runtime's name for its CUDA provider in `GetAvailableProviders`.
const CUDA_PROVIDER: &str = "CUDAExecutionProvider";
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
            let local = root.join(LOCAL_RUNTIME_DIR);
            for dir in [local.join(LOCAL_GPU_SUBDIR).join(WHEEL_CAPI), local.join(WHEEL_CAPI)] {
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
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

/// Path of the ONNX Runtime library this process loaded (set by `environment`).
static LIBRARY_PATH: OnceLock<PathBuf> = OnceLock::new();

/// The ONNX Runtime library this process loaded, once `environment` has succeeded.
pub fn library_path() -> Option<&'static Path> {
    LIBRARY_PATH.get().map(PathBuf::as_path)
}

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<Environment, RuntimeError> {
    static ENV: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = LibrarySearch::from_env().find()?;
        let _ = LIBRARY_PATH.set(path.clone());
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
    /// The precision asked for: `Tf32` turns on the CUDA provider's TF32 math; for `Fp16` the model bytes must be
    /// the half graph wherever `plan_placement` says the session runs in fp16 (callers whose session then lands
    /// elsewhere rebuild in fp32: `placement().precision` says which).
    pub precision: Precision,
}

/// The names of the execution providers the loaded ONNX Runtime build has.
pub fn available_providers() -> Result<Vec<String>, RuntimeError> {
    environment()?;
    let api = ort::api();
    let mut list: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut len: std::ffi::c_int = 0;
    // SAFETY: out-pointers for an array of `len` C strings owned by ONNX Runtime, released below.
    status_result(unsafe { (api.GetAvailableProviders)(&mut list, &mut len) })
        .map_err(|e| ort_error("listing execution providers", e))?;
    let names = (0..len.max(0) as usize)
        // SAFETY: `list` holds `len` valid NUL-terminated strings until released.
        .map(|i| unsafe { std::ffi::CStr::from_ptr(*list.add(i)) }.to_string_lossy().into_owned())
        .collect();
    // SAFETY: released once with the length it came with.
    let _ = status_result(unsafe { (api.ReleaseAvailableProviders)(list, len) });
    Ok(names)
}

/// Whether CUDA GPU `ordinal` can run ONNX Runtime sessions: the driver sees the device, the loaded build has the
/// CUDA provider, and the CUDA libraries found beside it (`.runtime/gpu/nvidia/…`) are loaded into the process.
/// Every unmet condition is named, with the command that fixes the ones this project can fix.
pub fn cuda_ready(ordinal: usize) -> Result<usize, CudaError> {
    let mut problems = Vec::new();
    if let Err(why) = probe_cuda(ordinal) {
        problems.push(why.to_string());
    }
    match available_providers() {
        Ok(list) if list.iter().any(|p| p == CUDA_PROVIDER) => {
            if let Some(lib) = library_path()
                && let Err(e) = super::cuda_libs::ensure_loaded(lib)
            {
                problems.push(e.to_string());
            }
        }
        Ok(_) => problems.push(format!(
            "the ONNX Runtime loaded ({}) is the CPU build; run `{PROVISION_GPU_FIX}`",
            library_path().map_or_else(|| "?".into(), |p| p.display().to_string())
        )),
        Err(e) => problems.push(e.to_string()),
    }
    if problems.is_empty() { Ok(ordinal) } else { Err(CudaError::Unmet { conditions: problems }) }
}

/// Where a session for `device` at `precision` will run, known before its graph is built (so a half graph is only
/// emitted for CUDA). The session itself may still fall back (`OrtSession::placement` has the final word).
pub fn plan_placement(device: Device, precision: Precision) -> Placement {
    let cuda = match device {
        Device::Cuda(n) => cuda_ready(n),
        Device::Auto => cuda_ready(0),
        Device::Cpu | Device::Vulkan => Err(CudaError::Unmet { conditions: Vec::new() }),
    };
    Placement::resolve(device, precision, cuda)
}

/// An ONNX Runtime session over one model.
pub struct OrtSession {
    session: Session,
    device: Device,
    placement: Placement,
    /// CUDA sessions: the device buffers bound to every input and output, made on the first run (their shapes come
    /// from it). `Failed` after a binding could not be made: runs then go through ONNX Runtime's own copies.
    cuda_io: CudaBinding,
    /// Buffers bound once for allocation-free runs (`staged_input`, `run_staged`, `staged_output`).
    staged: Option<Staged>,
}

/// The bound buffers of the staged mode: host memory on the CPU, device buffers with host staging on CUDA.
enum Staged {
    Host(Box<super::host_io::HostIo>),
    Cuda(Box<CudaIo>),
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
        let mut fallback = None;
        if let Some(n) = ordinal {
            let attempt = cuda_ready(n).and_then(|_| {
                let mut builder =
                    base_builder(&env, opts.threads).map_err(|e| CudaError::call("CUDA session options", e))?;
                append_cuda(&mut builder, n, opts.precision)?;
                builder.commit_from_memory(model).map_err(|e| CudaError::call("cannot create the CUDA session", e))
            });
            match attempt {
                Ok(session) => {
                    let placement = Placement::resolve(opts.device, opts.precision, Ok(n));
                    let cuda_io = CudaBinding::Pending(n);
                    return Ok(Self { session, device: Device::Cuda(n), placement, cuda_io, staged: None });
                }
                Err(why) => {
                    report_cpu_fallback(opts.device, &why.to_string());
                    fallback = Some(why);
                }
            }
        }
        let mut builder = base_builder(&env, opts.threads)?;
        if opts.precision.half_graph() {
            // The CPU provider lacks most float16 kernels: its optimiser warns once per node it cannot fold, and the
            // casts it inserts instead are expected here.
            builder =
                builder.with_log_level(ort::logging::LogLevel::Error).map_err(|e| ort_error("session options", e))?;
        }
        let session = builder.commit_from_memory(model).map_err(|e| ort_error("cannot create the session", e))?;
        let placement = Placement::resolve(
            opts.device,
            opts.precision,
            Err(fallback.unwrap_or(CudaError::Unmet { conditions: Vec::new() })),
        );
        Ok(Self { session, device: Device::Cpu, placement, cuda_io: CudaBinding::NotOnCuda, staged: None })
    }

    fn staged(&mut self) -> Result<&mut Staged, RuntimeError> {
        if self.staged.is_none() {
            let cuda = match self.device {
                Device::Cuda(n) => match CudaIo::new_staged(&self.session, n) {
                    Ok(io) => Some(Staged::Cuda(Box::new(io))),
                    Err(why) => {
                        tracing::warn!("CUDA staged buffers unavailable, binding host memory instead: {why}");
                        None
                    }
                },
                _ => None,
            };
            let staged = match cuda {
                Some(s) => s,
                None => Staged::Host(Box::new(super::host_io::HostIo::new(&self.session)?)),
            };
            self.staged = Some(staged);
        }
        self.staged.as_mut().ok_or_else(|| ort_error("staged buffers", "missing"))
    }

    /// The staged buffer of input `name` (bound on first use), written in place before `run_staged`. On CUDA only
    /// inputs asked for here since the last run are uploaded, so constant inputs cross the bus once.
    pub fn staged_input(&mut self, name: &str) -> Result<&mut [f32], RuntimeError> {
        let missing = || ort_error(&format!("input `{name}`"), "the graph has no such input");
        match self.staged()? {
            Staged::Host(io) => io.input_mut(name).ok_or_else(missing),
            Staged::Cuda(io) => io.staged_input(name).ok_or_else(missing),
        }
    }

    /// On CUDA, downloads only these outputs after each staged run; the CPU's outputs are always in place.
    pub fn download_only(&mut self, names: &[&str]) -> Result<(), RuntimeError> {
        if let Staged::Cuda(io) = self.staged()? {
            io.download_only(names);
        }
        Ok(())
    }

    /// Runs on the staged buffers without allocating; read the results with `staged_output`.
    pub fn run_staged(&mut self) -> Result<(), RuntimeError> {
        self.staged()?;
        match self.staged.as_mut() {
            Some(Staged::Host(io)) => io.run(&self.session),
            Some(Staged::Cuda(io)) => io.run_staged(&self.session).map_err(RuntimeError::from),
            None => Err(ort_error("staged run", "no staged buffers")),
        }
    }

    /// Output `name` of the last staged run (`None` before the first, or for an unknown name).
    pub fn staged_output(&self, name: &str) -> Option<&HostTensor> {
        match self.staged.as_ref()? {
            Staged::Host(io) => io.output(name),
            Staged::Cuda(io) => io.output(name),
        }
    }

    /// The device buffers of the staged mode on CUDA (for device-to-device hand-offs between sessions).
    pub fn staged_cuda(&mut self) -> Option<&mut CudaIo> {
        match self.staged.as_mut()? {
            Staged::Cuda(io) => Some(io),
            Staged::Host(_) => None,
        }
    }

    /// The device the session actually runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Where and at what precision the session runs, against what was asked for, and why they differ.
    pub fn placement(&self) -> &Placement {
        &self.placement
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
    let builder = if std::env::var(LEAN_MEMORY_ENV).is_ok_and(|v| v == "1") {
        let mut builder = builder.with_memory_pattern(false).map_err(step)?;
        // SAFETY: the session options pointer comes from a live builder.
        let status = unsafe { (ort::api().DisableCpuMemArena)(builder.ptr_mut()) };
        status_result(status).map_err(|e| ort_error("session options", e))?;
        builder
    } else {
        builder
    };
    match std::env::var_os(PROFILE_ENV) {
        // Per-node timings for performance work: ONNX Runtime writes a Chrome-trace JSON with this prefix when the
        // session ends.
        Some(prefix) => builder.with_profiling(prefix).map_err(step),
        None => Ok(builder),
    }
}

/// `1`: CPU sessions without ONNX Runtime's memory arena and pre-planned memory pattern (allocations freed after each
/// run instead of kept for the next): less resident memory, for measuring how much the arena holds.
pub const LEAN_MEMORY_ENV: &str = "METAPORTRAIT_ORT_LEAN_MEMORY";

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
