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
