//! `scripts/provision-ort.sh --gpu` without downloading anything: the plan it prints (`--dry-run`), an install from a
//! directory of small stand-in wheels with the real package names, versions and file layout (the script's own pinned
//! set), where the files land, that a re-run is a no-op, that an incomplete set is refused without leaving anything
//! half-made — and that the binary's library search and CUDA-library plan find exactly what the script installs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metaportrait::runtime::cuda_libs::{self, CUDA_LIB_DIR, CUDA_LIBRARIES, CUDNN_LIB_DIR, CUDNN_LIBRARIES};
use metaportrait::runtime::ort::LibrarySearch;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/provision-ort.sh");

fn provision(target: &Path, wheels: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .env("METAPORTRAIT_RUNTIME_TARGET", target)
        .env("METAPORTRAIT_WHEELS", wheels)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .output()
        .expect("bash runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `(requirement, [files])` per package, from `--dry-run`.
fn plan(target: &Path, wheels: &Path) -> (Vec<(String, Vec<String>)>, String) {
    let out = provision(target, wheels, &["--gpu", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut packages: Vec<(String, Vec<String>)> = Vec::new();
    let mut state = String::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["package", req] => packages.push(((*req).to_owned(), Vec::new())),
            ["file", path, req] => {
                let entry = packages.iter_mut().find(|(r, _)| r == req).expect("file of a listed package");
                entry.1.push((*path).to_owned());
            }
            ["state", rest @ ..] => state = rest.join(" "),
            _ => {}
        }
    }
    (packages, state)
}

/// A minimal wheel that pip installs: the files (each a few bytes) and a dist-info.
fn write_wheel(dir: &Path, requirement: &str, files: &[String]) {
    let (name, version) = requirement.split_once("==").expect("pinned requirement");
    let dist = format!("{}-{version}", name.replace('-', "_"));
    let path = dir.join(format!("{dist}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).expect("wheel file"));
    let opts = zip::write::SimpleFileOptions::default();
    let mut record = String::new();
    let mut add = |zip: &mut zip::ZipWriter<std::fs::File>, name: &str, body: &[u8]| {
        zip.start_file(name, opts).expect("zip entry");
        zip.write_all(body).expect("zip write");
        record.push_str(&format!("{name},,\n"));
    };
    for f in files {
        add(&mut zip, f, format!("stand-in for {f}").as_bytes());
    }
    add(
        &mut zip,
        &format!("{dist}.dist-info/METADATA"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").as_bytes(),
    );
    add(
        &mut zip,
        &format!("{dist}.dist-info/WHEEL"),
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    record.push_str(&format!("{dist}.dist-info/RECORD,,\n"));
    zip.start_file(format!("{dist}.dist-info/RECORD"), opts).expect("record");
    zip.write_all(record.as_bytes()).expect("record write");
    zip.finish().expect("zip finish");
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metaportrait-provision-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn pip_available() -> bool {
    Command::new("python3").args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn gpu_provisioning_installs_the_planned_files_once_and_the_binary_finds_them() {
    assert!(pip_available(), "python3 -m pip is needed (scripts/system-deps.sh installs python3-pip)");
    let root = scratch("ok");
    let (target, wheels, empty) = (root.join(".runtime"), root.join("wheels"), root.join("no-wheels"));
    std::fs::create_dir_all(&wheels).unwrap();
    std::fs::create_dir_all(&empty).unwrap();

    let (packages, state) = plan(&target, &empty);
    assert_eq!(state, "missing");
    let names: Vec<&str> = packages.iter().map(|(r, _)| r.split("==").next().unwrap()).collect();
    for needed in ["onnxruntime-gpu", "nvidia-cuda-runtime", "nvidia-cublas", "nvidia-curand", "nvidia-cudnn-cu13"] {
        assert!(names.contains(&needed), "{needed} not in the plan {names:?}");
    }
    // The plan covers every library the binary loads before the CUDA provider.
    let planned: Vec<&String> = packages.iter().flat_map(|(_, f)| f).collect();
    for lib in CUDA_LIBRARIES
        .iter()
        .map(|l| format!("{CUDA_LIB_DIR}/{l}"))
        .chain(CUDNN_LIBRARIES.iter().map(|l| format!("{CUDNN_LIB_DIR}/{l}")))
    {
        assert!(planned.contains(&&lib), "{lib} is loaded by the binary but not installed by the script");
    }
    for (req, files) in &packages {
        write_wheel(&wheels, req, files);
    }

    let out = provision(&target, &wheels, &["--gpu"]);
    assert!(out.status.success(), "{}", text(&out));
    let gpu = target.join("gpu");
    for f in &planned {
        assert!(gpu.join(f).is_file(), "{f} not installed");
    }
    let manifest = std::fs::read_to_string(gpu.join("provisioned.txt")).expect("manifest");
    assert_eq!(manifest.lines().collect::<Vec<_>>(), packages.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>());
    assert!(!target.join("gpu.partial").exists(), "staging left behind");
    assert_eq!(plan(&target, &empty).1, "provisioned");

    // Re-run: nothing to do, so no wheel source is needed and nothing is touched.
    let lib = gpu.join(&packages[0].1[0]);
    let before = std::fs::metadata(&lib).unwrap().modified().unwrap();
    let again = provision(&target, &empty, &["--gpu"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already provisioned"), "{}", text(&again));
    assert_eq!(std::fs::metadata(&lib).unwrap().modified().unwrap(), before);

    // The binary prefers the GPU build over a CPU one beside it, and plans to load every CUDA library found there.
    let cpu_capi = target.join("onnxruntime/capi");
    std::fs::create_dir_all(&cpu_capi).unwrap();
    std::fs::write(cpu_capi.join("libonnxruntime.so.1.31.0"), b"cpu").unwrap();
    let search = LibrarySearch { project_roots: vec![root.clone()], ..Default::default() };
    let found = search.locate().expect("library found");
    assert!(found.starts_with(&gpu), "{} is not the GPU build", found.display());
    let runtime_root = cuda_libs::runtime_root_of(&found).expect("wheel layout");
    assert_eq!(runtime_root, gpu);
    let libs = cuda_libs::plan(&runtime_root).expect("complete").expect("CUDA libraries present");
    assert_eq!(libs.libraries.len(), CUDA_LIBRARIES.len() + CUDNN_LIBRARIES.len());

    // A file removed by hand: the state says which, and the next run installs the set again.
    std::fs::remove_file(gpu.join(CUDNN_LIB_DIR).join("libcudnn_ops.so.9")).unwrap();
    assert!(plan(&target, &empty).1.starts_with("incomplete"), "a missing library goes unnoticed");
    assert!(cuda_libs::plan(&gpu).is_err());
    let repair = provision(&target, &wheels, &["--gpu"]);
    assert!(repair.status.success(), "{}", text(&repair));
    assert_eq!(plan(&target, &empty).1, "provisioned");

    // The default (CPU) provisioning is untouched by all this: its plan is the CPU wheel in .runtime/onnxruntime.
    let cpu = provision(&target, &empty, &["--dry-run"]);
    let cpu_text = String::from_utf8_lossy(&cpu.stdout);
    assert!(cpu_text.contains("package onnxruntime==") && !cpu_text.contains("onnxruntime-gpu"), "{cpu_text}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_incomplete_wheel_set_is_refused_and_leaves_nothing() {
    assert!(pip_available(), "python3 -m pip is needed (scripts/system-deps.sh installs python3-pip)");
    let root = scratch("bad");
    let (target, wheels) = (root.join(".runtime"), root.join("wheels"));
    std::fs::create_dir_all(&wheels).unwrap();
    let (packages, _) = plan(&target, &wheels);
    for (req, files) in &packages {
        // cuDNN's wheel without its cnn sub-library.
        let kept: Vec<String> = files.iter().filter(|f| !f.ends_with("libcudnn_cnn.so.9")).cloned().collect();
        write_wheel(&wheels, req, &kept);
    }
    let out = provision(&target, &wheels, &["--gpu"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("libcudnn_cnn.so.9"), "{}", text(&out));
    assert!(!target.join("gpu").exists() && !target.join("gpu.partial").exists(), "a half-made GPU runtime was left");
    let usage = provision(&target, &wheels, &["--cuda"]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    std::fs::remove_dir_all(&root).unwrap();
}
