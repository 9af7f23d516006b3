//! burn's gradients of `mean|prediction − target|` through the whole generator (warp not detached) match the
//! float64 reference gradients, per-tensor, within the l2-relative tolerances of `generator-reference.md`.

mod common;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::burn::BurnExec;
use metaportrait::model::net::{self, GeneratorInputs};
use metaportrait::model::weights::WeightStore;
use metaportrait::runtime::burn_device::exec_device;

/// f32 vs f64 l2-relative tolerance by submodule (the f32 reference itself is off by about half of these).
fn tolerance(key: &str) -> f64 {
    if key.starts_with("dense_motion_network.") {
        5e-2
    } else if key.starts_with("ladder_network.") {
        2e-2
    } else {
        5e-3
    }
}

/// Biases feeding straight into an instance norm / ADAIN have an exact gradient of 0.
fn exact_zero(key: &str) -> bool {
    (key.starts_with("dense_motion_network.hourglass.") || key.starts_with("feature_encoder."))
        && key.ends_with("conv.bias")
}
const ZERO_GRAD_ATOL: f32 = 1e-6;
const F64_LOSS: f64 = 0.540514475280938;
const LOSS_ATOL: f64 = 1e-5;

#[test]
fn gradients_match_float64_reference() {
    let cfg = GeneratorConfig::from_json_file(&common::generator_fixture("tiny_config.json")).expect("config");
    let weights = WeightStore::load_safetensors(&common::generator_fixture("tiny_weights.safetensors")).expect("w");
    let io = common::load("tiny_io.safetensors");
    let reference = common::load("tiny_grads_f64ref.safetensors");

    let device = exec_device(metaportrait::runtime::Device::Cpu).expect("device");
    let mut exec = BurnExec::new(&weights, &device, true);
    let inputs = GeneratorInputs::try_from_fn(|n| Ok(exec.input(io.get(n).expect("input")))).expect("inputs");
    let target = exec.input(io.get("input.target").expect("target"));
    let out = net::generator_forward(&mut exec, &cfg, &inputs).expect("forward");
    let loss = exec.mean_abs(&out.prediction, &target);
    let loss_value = exec.to_host(&loss).data()[0] as f64;
    assert!((loss_value - F64_LOSS).abs() < LOSS_ATOL, "loss {loss_value} vs {F64_LOSS}");
    let grads = exec.backward(&loss).expect("backward");

    let mut failures = Vec::new();
    let mut zero_checked = 0;
    let mut compared = 0;
    let mut worst: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    for (key, expected) in reference.iter().filter(|(k, _)| k.starts_with("grad.")) {
        let param = &key["grad.".len()..];
        let actual = grads.get(param).unwrap_or_else(|| panic!("no gradient for `{param}`"));
        if exact_zero(param) {
            let m = actual.max_abs();
            if m > ZERO_GRAD_ATOL {
                failures.push(format!("{param}: |grad| {m:.2e} should be ~0"));
            }
            zero_checked += 1;
            continue;
        }
        let rel = common::l2_relative(actual, expected);
        let part = param.split('.').next().unwrap_or(param);
        let w = worst.entry(part).or_insert(0.0);
        *w = w.max(rel);
        if rel > tolerance(param) {
            failures.push(format!("{param}: l2-rel {rel:.2e} > {:.0e}", tolerance(param)));
        }
        compared += 1;
    }
    eprintln!("compared {compared} gradients, {zero_checked} exact-zero biases; worst l2-rel per part: {worst:?}");
    assert_eq!(zero_checked, 22, "the reference lists 22 exact-zero conv biases");
    assert_eq!(compared + zero_checked, 386, "every parameter must have a gradient");
    assert!(failures.is_empty(), "gradient mismatches:\n{}", failures.join("\n"));
}
