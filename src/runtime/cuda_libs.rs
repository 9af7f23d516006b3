//! The CUDA user-space libraries ONNX Runtime's CUDA provider needs, found beside the ONNX Runtime that was loaded.
//!
//! Owns the list of libraries the provider loads (cuBLAS/cuBLASLt, cuRAND, the CUDA runtime, cuFFT, NVRTC and cuDNN 9
//! with its sub-libraries), their discovery in a runtime root laid out like PyPI's NVIDIA wheels
//! (`<root>/nvidia/cu13/lib`, `<root>/nvidia/cudnn/lib`: what `scripts/provision-ort.sh --gpu` installs in
//! `.runtime/gpu/`, or pip into a site-packages), and loading them by full path, globally, once per process. Receives
//! the path of the loaded `libonnxruntime.so`; emits the loaded set or why it could not be loaded. Once they are in
//! the process, the provider's own dependencies resolve to them by soname, so no `LD_LIBRARY_PATH` is needed.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Directory of the CUDA 13 component wheels, relative to the runtime root.
pub const CUDA_LIB_DIR: &str = "nvidia/cu13/lib";
/// Directory of the cuDNN 9 wheel, relative to the runtime root.
pub const CUDNN_LIB_DIR: &str = "nvidia/cudnn/lib";
/// What the provider links against or opens, in load order (a library before the ones that need it).
pub const CUDA_LIBRARIES: [&str; 6] =
    ["libcudart.so.13", "libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10", "libcufft.so.12", "libnvrtc.so.13"];
/// cuDNN: the front library opens its sub-libraries by name, so all of them are loaded up front.
pub const CUDNN_LIBRARIES: [&str; 8] = [
    "libcudnn_graph.so.9",
    "libcudnn.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
];
/// Further cuDNN sub-libraries of newer releases, loaded when present.
const CUDNN_OPTIONAL_PREFIX: &str = "libcudnn";

/// Why the CUDA libraries could not be put in the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaLibsError {
    /// The runtime root lacks some of the libraries the CUDA provider loads.
    #[error(
        "{root} lacks {missing} (an incomplete GPU runtime); run `bash scripts/provision-ort.sh --gpu`",
        root = root.display(),
        missing = missing.join(", ")
    )]
    Missing {
        /// The runtime root searched.
        root: PathBuf,
        /// The library names not found there.
        missing: Vec<String>,
    },
    /// A library is present but the dynamic loader refused it.
    #[error("cannot load {}: {reason}", path.display())]
    Load {
        /// The library's full path.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
}

/// The libraries of one runtime root, in load order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaLibraryPlan {
    /// The runtime root (`.runtime/gpu/`) the libraries are under.
    pub root: PathBuf,
    /// Full paths, in load order.
    pub libraries: Vec<PathBuf>,
}

/// The runtime root of a `libonnxruntime.so` installed from a wheel: `<root>/onnxruntime/capi/libonnxruntime.so*`.
pub fn runtime_root_of(ort_library: &Path) -> Option<PathBuf> {
    let capi = ort_library.parent()?;
    let package = capi.parent()?;
    (capi.file_name()? == "capi" && package.file_name()? == "onnxruntime")
        .then(|| package.parent().map(Path::to_owned))?
}

/// The libraries to load from `root`. `Ok(None)` when the root has no NVIDIA wheels at all (the CUDA libraries are
/// then expected on the system's loader path, as with a CUDA toolkit install); an error names every library missing
/// from a root that has some.
pub fn plan(root: &Path) -> Result<Option<CudaLibraryPlan>, CudaLibsError> {
    let (cuda_dir, cudnn_dir) = (root.join(CUDA_LIB_DIR), root.join(CUDNN_LIB_DIR));
    if !cuda_dir.is_dir() && !cudnn_dir.is_dir() {
        return Ok(None);
    }
    let mut libraries = Vec::new();
    let mut missing = Vec::new();
    let required =
        CUDA_LIBRARIES.iter().map(|n| (&cuda_dir, *n)).chain(CUDNN_LIBRARIES.iter().map(|n| (&cudnn_dir, *n)));
    for (dir, name) in required {
        let path = dir.join(name);
        if path.is_file() {
            libraries.push(path);
        } else {
            missing.push(format!("{}/{name}", dir.strip_prefix(root).unwrap_or(dir).display()));
        }
    }
    if !missing.is_empty() {
        return Err(CudaLibsError::Missing { root: root.to_owned(), missing });
    }
    let mut extra: Vec<PathBuf> = std::fs::read_dir(&cudnn_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(CUDNN_OPTIONAL_PREFIX) && n.ends_with(".so.9") && !CUDNN_LIBRARIES.contains(&n)
            })
        })
        .collect();
    extra.sort();
    libraries.extend(extra);
    Ok(Some(CudaLibraryPlan { root: root.to_owned(), libraries }))
}

/// Handles of the loaded libraries; kept for the life of the process (the provider needs them until exit).
static LOADED: Mutex<Vec<libloading::os::unix::Library>> = Mutex::new(Vec::new());

/// Loads every library of `plan` by full path with `RTLD_NOW | RTLD_GLOBAL`. A library whose dependencies are not
/// loaded yet is retried after the others, so the order only needs to be roughly right.
pub fn load(plan: &CudaLibraryPlan) -> Result<usize, CudaLibsError> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    let mut pending: Vec<&PathBuf> = plan.libraries.iter().collect();
    let mut handles = Vec::new();
    let mut last_error = None;
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        for path in pending {
            // SAFETY: these are the NVIDIA libraries of the runtime root, whose initialisers only register
            // themselves; no symbol is called through these handles.
            match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
                Ok(lib) => handles.push(lib),
                Err(e) => {
                    last_error = Some(CudaLibsError::Load { path: path.clone(), reason: e.to_string() });
                    still.push(path);
                }
            }
        }
        if still.len() == before {
            let loaded = handles.len();
            keep(handles);
            return Err(last_error.unwrap_or(CudaLibsError::Load {
                path: plan.root.clone(),
                reason: format!("{loaded} of {} libraries loaded", plan.libraries.len()),
            }));
        }
        pending = still;
    }
    let n = handles.len();
    keep(handles);
    Ok(n)
}

fn keep(handles: Vec<libloading::os::unix::Library>) {
    match LOADED.lock() {
        Ok(mut all) => all.extend(handles),
        // A poisoned list only means another thread panicked while holding it; the handles must still live on.
        Err(poisoned) => poisoned.into_inner().extend(handles),
    }
}

/// Puts the CUDA libraries beside `ort_library` in the process, once; later calls return the first outcome.
/// `Ok(None)`: nothing to load there (the system's loader path must provide them).
pub fn ensure_loaded(ort_library: &Path) -> Result<Option<usize>, CudaLibsError> {
    static ONCE: OnceLock<Result<Option<usize>, CudaLibsError>> = OnceLock::new();
    ONCE.get_or_init(|| {
        let Some(root) = runtime_root_of(ort_library) else { return Ok(None) };
        let Some(plan) = plan(&root)? else { return Ok(None) };
        let n = load(&plan)?;
        tracing::debug!(root = %plan.root.display(), libraries = n, "CUDA libraries loaded for ONNX Runtime");
        Ok(Some(n))
    })
    .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("metaportrait-cudalibs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("onnxruntime/capi")).unwrap();
        root
    }

    fn touch(root: &Path, dir: &str, names: &[&str]) {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        for n in names {
            std::fs::write(root.join(dir).join(n), b"not an ELF file").unwrap();
        }
    }

    #[test]
    fn root_is_two_levels_above_a_wheel_library() {
        let lib = Path::new("/x/.runtime/gpu/onnxruntime/capi/libonnxruntime.so.1.31.0");
        assert_eq!(runtime_root_of(lib), Some(PathBuf::from("/x/.runtime/gpu")));
        assert_eq!(runtime_root_of(Path::new("/usr/lib/libonnxruntime.so")), None);
    }

    #[test]
    fn a_root_without_nvidia_wheels_needs_nothing() {
        let root = fake_root("none");
        assert_eq!(plan(&root), Ok(None));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn plan_lists_every_library_in_load_order_and_names_what_is_missing() {
        let root = fake_root("plan");
        touch(&root, CUDA_LIB_DIR, &CUDA_LIBRARIES[1..]);
        touch(&root, CUDNN_LIB_DIR, &CUDNN_LIBRARIES[..7]);
        let err = plan(&root).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("nvidia/cu13/lib/libcudart.so.13"), "{msg}");
        assert!(msg.contains("nvidia/cudnn/lib/libcudnn_engines_runtime_compiled.so.9"), "{msg}");
        assert!(msg.contains("provision-ort.sh --gpu"), "{msg}");

        touch(&root, CUDA_LIB_DIR, &CUDA_LIBRARIES[..1]);
        touch(&root, CUDNN_LIB_DIR, &CUDNN_LIBRARIES[7..]);
        touch(&root, CUDNN_LIB_DIR, &["libcudnn_ext.so.9", "libcudnn_extra.txt"]);
        let p = plan(&root).unwrap().unwrap();
        let names: Vec<String> =
            p.libraries.iter().map(|l| l.file_name().unwrap().to_string_lossy().into_owned()).collect();
        let mut want: Vec<&str> = CUDA_LIBRARIES.iter().chain(CUDNN_LIBRARIES.iter()).copied().collect();
        want.push("libcudnn_ext.so.9");
        assert_eq!(names, want);
        // Not ELF files: loading fails with the path and the loader's reason, and nothing is kept half-done silently.
        let err = load(&p).unwrap_err().to_string();
        assert!(err.contains("cannot load") && err.contains(&root.display().to_string()), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
