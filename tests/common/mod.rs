//! Shared helpers for the integration tests: where the reference fixtures live and how tensors are compared.
#![allow(dead_code)]

use std::path::PathBuf;

use metaportrait::model::weights::WeightStore;
use metaportrait::tensor::HostTensor;

/// `../shared/fixtures` beside the checkout (override with `METAPORTRAIT_SHARED`).
pub fn fixtures_dir() -> PathBuf {
    let shared = std::env::var_os("METAPORTRAIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"));
    shared.join("fixtures")
}

pub fn generator_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("generator").join(name)
}

pub fn load(name: &str) -> WeightStore {
    let path = generator_fixture(name);
    WeightStore::load_safetensors(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// max |a - b| and max |b|.
pub fn diff_stats(actual: &HostTensor, expected: &HostTensor) -> (f32, f32) {
    assert_eq!(actual.shape(), expected.shape(), "shape mismatch");
    let diff = actual.max_abs_diff(expected).unwrap_or(f32::INFINITY);
    (diff, expected.max_abs())
}

/// ‖a − b‖₂ / ‖b‖₂ in f64.
pub fn l2_relative(actual: &HostTensor, expected: &HostTensor) -> f64 {
    assert_eq!(actual.shape(), expected.shape(), "shape mismatch");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in actual.data().iter().zip(expected.data()) {
        num += (*a as f64 - *b as f64).powi(2);
        den += (*b as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metaportrait"))
}

/// A fresh per-process scratch directory for a test.
pub fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mp-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

pub fn tsr_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("tsr").join(name)
}

pub fn load_tsr(name: &str) -> WeightStore {
    let path = tsr_fixture(name);
    WeightStore::load_safetensors(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The tiny fixture generator with `id_dim` 128: writes its config and weights into `dir`.
pub fn tiny_id128(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(generator_fixture("tiny_config.json")).expect("config")).expect("json");
    config["id_dim"] = serde_json::json!(128);
    let config_path = dir.join("tiny_id128.json");
    std::fs::write(&config_path, config.to_string()).expect("write config");
    let fixture = load("tiny_weights.safetensors");
    let mut model = metaportrait::model::generator::GeneratorModel::random(
        metaportrait::model::config::GeneratorConfig::from_json_file(&config_path).expect("config"),
        11,
    )
    .expect("model");
    let mut reused = 0;
    for (key, tensor) in model.weights.tensors_mut().iter_mut() {
        if let Some(f) = fixture.get(key).filter(|f| f.shape() == tensor.shape()) {
            *tensor = f.clone();
            reused += 1;
        }
    }
    // Only the identity AdaIN's input layers (one linear per SPADE norm) depend on id_dim.
    assert!(reused + 24 >= fixture.len(), "only {reused} of {} fixture tensors kept", fixture.len());
    let weights_path = dir.join("tiny_id128.safetensors");
    model.weights.save_safetensors(&weights_path).expect("weights");
    (config_path, weights_path)
}

/// A directory with the official example frames `imgs_0_*` (one person).
pub fn example_clip(dir: &std::path::Path) -> PathBuf {
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).expect("mkdir");
    let faces = fixtures_dir().join("faces/images");
    for entry in std::fs::read_dir(&faces).expect("faces") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with("imgs_0_") {
            std::fs::copy(&path, clip.join(&name)).expect("copy");
        }
    }
    clip
}

/// Copies the fixture face images whose names start with `prefix` (frames of one person) into `dir`.
#[allow(dead_code)]
pub fn fixture_frames(prefix: &str, dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for entry in std::fs::read_dir(fixtures_dir().join("faces/images")).expect("faces") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        if name.starts_with(prefix) {
            std::fs::copy(&path, dir.join(&name)).expect("copy");
        }
    }
}

/// A training run's latest checkpoint: `state.json`, weights and optimizer state.
pub struct LatestCheckpoint {
    pub state: serde_json::Value,
    pub weights: WeightStore,
    pub optimizer: WeightStore,
}

pub fn latest_checkpoint(run_dir: &std::path::Path) -> LatestCheckpoint {
    let name = std::fs::read_to_string(run_dir.join("latest")).expect("latest");
    let dir = run_dir.join(name.trim());
    LatestCheckpoint {
        state: serde_json::from_slice(&std::fs::read(dir.join("state.json")).expect("state")).expect("json"),
        weights: WeightStore::load_safetensors(&dir.join("weights.safetensors")).expect("weights"),
        optimizer: WeightStore::load_safetensors(&dir.join("optimizer.safetensors")).expect("optimizer"),
    }
}

/// Largest element difference between two stores with the same keys.
pub fn max_store_diff(a: &WeightStore, b: &WeightStore) -> f32 {
    a.iter().map(|(k, t)| t.max_abs_diff(b.get(k).expect("same keys")).unwrap_or(f32::INFINITY)).fold(0.0, f32::max)
}
