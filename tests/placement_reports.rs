//! Every report says where the work really ran: `bench` JSON and the neural engine's device line (the panel's) when
//! CUDA was asked for and is missing. (No machine here has 64 GPUs, so `cuda:63` is missing on a GPU machine too.)

use std::process::Command;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::runner::RunnerOptions;
use metaportrait::pipeline::engine::{LiveEngine, NeuralEngine};
use metaportrait::runtime::{Device, Precision};

const MISSING_GPU: &str = "cuda:63";

fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_metaportrait")).arg("bench").args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    // The human-readable lines on stderr name the device in use too.
    assert!(stderr.contains("cpu, "), "stderr does not say cpu: {stderr}");
    serde_json::from_str(last).expect("JSON")
}

fn assert_fell_back(json: &serde_json::Value, precision: &str) {
    assert_eq!(json["device"], "cpu", "{json}");
    assert_eq!(json["requested_device"], MISSING_GPU, "{json}");
    assert_eq!(json["requested_precision"], precision, "{json}");
    assert_eq!(json["precision"], "fp32", "{json}");
    let why = json["fallback_reason"].as_str().unwrap_or_default();
    assert!(why.contains("CUDA"), "fallback_reason {why:?}");
}

#[test]
fn bench_reports_the_device_in_use_when_cuda_is_missing() {
    let generator = bench_json(&[
        "generator",
        "--config",
        "tiny",
        "--device",
        MISSING_GPU,
        "--iters",
        "1",
        "--threads",
        "2",
        "--precision",
        "fp16",
    ]);
    assert_fell_back(&generator, "fp16");
    assert!(generator["warp_refine_ms"].as_f64().is_some_and(|ms| ms > 0.0));
    let tsr = bench_json(&[
        "tsr",
        "--config",
        "tiny",
        "--device",
        MISSING_GPU,
        "--iters",
        "1",
        "--frames",
        "2",
        "--threads",
        "2",
    ]);
    assert_fell_back(&tsr, "fp32");
    // As asked: no reason, the same device.
    let cpu = bench_json(&["generator", "--config", "tiny", "--device", "cpu", "--iters", "1", "--threads", "2"]);
    assert_eq!((cpu["device"].as_str(), cpu["requested_device"].as_str()), (Some("cpu"), Some("cpu")));
    assert!(cpu["fallback_reason"].is_null(), "{cpu}");
}

#[test]
fn the_neural_engine_names_the_device_it_runs_on() {
    let model = GeneratorModel::random(GeneratorConfig::tiny(), 7).expect("model");
    let options = RunnerOptions { device: Device::Cuda(63), precision: Precision::Tf32, ..Default::default() };
    let engine = NeuralEngine::new(model.clone(), options).expect("falls back to the CPU");
    let line = engine.device();
    assert!(line.starts_with("cpu, fp32 (cuda:63 tf32 requested: "), "{line}");
    assert!(line.contains("CUDA"), "{line}");
    let cpu = NeuralEngine::new(model, RunnerOptions { device: Device::Cpu, ..Default::default() }).expect("cpu");
    assert_eq!(cpu.device(), "cpu, fp32");
}
