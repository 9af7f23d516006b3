//! The generator reproduces the official PyTorch forward on the tiny fixture, with both executors.
//!
//! Tolerances (from `shared/docs/generator-reference.md`): outputs 1e-4 absolute; intermediates 3e-4 absolute or
//! 1e-4 of the tensor's max-abs, whichever is larger.

mod common;

use std::collections::BTreeMap;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::ExecutorKind;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::net::{INPUT_NAMES, OUTPUT_NAMES};
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions, Stage};
use metaportrait::runtime::Device;
use metaportrait::tensor::HostTensor;

const OUTPUT_ATOL: f32 = 1e-4;
const INTER_ATOL: f32 = 3e-4;
const INTER_RTOL: f32 = 1e-4;

fn tiny_model() -> GeneratorModel {
    let cfg = GeneratorConfig::from_json_file(&common::generator_fixture("tiny_config.json")).expect("tiny config");
    GeneratorModel::load(cfg, &common::generator_fixture("tiny_weights.safetensors")).expect("tiny weights")
}

fn run(executor: ExecutorKind) -> BTreeMap<String, HostTensor> {
    let model = tiny_model();
    let io = common::load("tiny_io.safetensors");
    let inputs: BTreeMap<String, HostTensor> =
        INPUT_NAMES.iter().map(|n| ((*n).to_owned(), io.get(n).expect("fixture input").clone())).collect();
    let opts = RunnerOptions { executor, device: Device::Cpu, threads: 2, stage: Stage::Full, taps: true };
    let mut engine = GeneratorRunner::new(&model, &opts).expect("engine");
    engine.run(&inputs).expect("forward")
}

fn check(executor: ExecutorKind) {
    let out = run(executor);
    let io = common::load("tiny_io.safetensors");
    let debug = common::load("tiny_debug.safetensors");
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for name in OUTPUT_NAMES {
        let (diff, scale) = common::diff_stats(&out[name], io.get(name).expect("fixture output"));
        report.push(format!("{name}: {diff:.2e} (max {scale:.2})"));
        if diff > OUTPUT_ATOL {
            failures.push(name.to_owned());
        }
    }
    let mut compared = 0;
    for (name, expected) in io.iter().chain(debug.iter()).filter(|(k, _)| k.starts_with("inter.")) {
        let actual = out.get(name.as_str()).unwrap_or_else(|| panic!("{} produced no `{name}`", executor.name()));
        let (diff, scale) = common::diff_stats(actual, expected);
        report.push(format!("{name}: {diff:.2e} (max {scale:.2})"));
        if diff > INTER_ATOL.max(INTER_RTOL * scale) {
            failures.push(name.clone());
        }
        compared += 1;
    }
    eprintln!("{} parity:\n  {}", executor.name(), report.join("\n  "));
    assert!(compared >= 20, "only {compared} intermediates compared");
    assert!(failures.is_empty(), "{} out of tolerance: {failures:?}", executor.name());
}

#[test]
fn ort_matches_reference_outputs_and_intermediates() {
    check(ExecutorKind::Ort);
}

#[test]
fn burn_matches_reference_outputs_and_intermediates() {
    check(ExecutorKind::Burn);
}
