//! The float16 variants of the generator and TSR graphs (`--precision fp16`, meant for CUDA), checked without a GPU:
//! their structure (float16 inside, float32 at the edges, statistics in float32), and their output on the CPU — where
//! ONNX Runtime casts around the operators its CPU provider lacks in float16, so every intermediate is still rounded to
//! float16 — against the float32 graph on the fixture's real frames. Also: a precision or device that cannot be had
//! is reported as what runs instead.

mod common;

use std::collections::BTreeMap;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::onnx::proto::{ModelProto, data_type, type_proto};
use metaportrait::model::generator::{DEFAULT_INIT_SEED, GeneratorModel};
use metaportrait::model::net::{INPUT_NAMES, OUTPUT_DEFORMATION, OUTPUT_PREDICTION};
use metaportrait::model::runner::{self, GeneratorRunner, RunnerOptions, Stage};
use metaportrait::model::sn_settle::{SETTLE_ITERATIONS, settle_spectral_norms};
use metaportrait::model::weights::WeightStore;
use metaportrait::runtime::{Device, Precision};
use metaportrait::tensor::HostTensor;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::{TsrModel, TsrOptions, TsrRunner};
use prost::Message;

/// PSNR of the half graph's frames against the float32 graph's, on [0, 1] images. Measured on this machine's CPU:
/// see the assertions' messages (the tiny fixture's widths, real frames).
const MIN_PSNR_DB: f64 = 40.0;

fn tiny_model() -> GeneratorModel {
    let cfg = GeneratorConfig::from_json_file(&common::generator_fixture("tiny_config.json")).expect("tiny config");
    GeneratorModel::load(cfg, &common::generator_fixture("tiny_weights.safetensors")).expect("tiny weights")
}

fn fixture_inputs() -> BTreeMap<String, HostTensor> {
    let io = common::load("tiny_io.safetensors");
    INPUT_NAMES.iter().map(|n| ((*n).to_owned(), io.get(n).expect("fixture input").clone())).collect()
}

/// PSNR in dB of `a` against `b`, both mapped to [0, 1] by `(x − lo) / (hi − lo)`.
fn psnr(a: &HostTensor, b: &HostTensor, lo: f32, hi: f32) -> f64 {
    let range = (hi - lo) as f64;
    let mse = a.data().iter().zip(b.data()).map(|(x, y)| ((*x as f64 - *y as f64) / range).powi(2)).sum::<f64>()
        / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}

fn elem_type(v: &metaportrait::model::exec::onnx::proto::ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => t.elem_type,
    }
}

#[test]
fn half_graph_is_float16_inside_and_float32_at_its_edges() {
    let model = tiny_model();
    let bytes = runner::build_onnx_at(&model, Stage::Full, false, Precision::Fp16).expect("half graph");
    let full = runner::build_onnx_at(&model, Stage::Full, false, Precision::Fp32).expect("float graph");
    let graph = ModelProto::decode(bytes.as_slice()).expect("decodes").graph.expect("graph");

    assert!(graph.input.iter().chain(&graph.output).all(|v| elem_type(v) == Some(data_type::FLOAT)));
    let kinds: Vec<i32> = graph.initializer.iter().filter_map(|t| t.data_type).collect();
    assert!(kinds.contains(&data_type::FLOAT16));
    assert!(!kinds.contains(&data_type::FLOAT), "a float32 initializer in the half graph");
    // Half the bytes of the weights, give or take the graph itself.
    let ratio = bytes.len() as f64 / full.len() as f64;
    assert!((0.45..0.56).contains(&ratio), "half graph is {ratio:.3} of the float graph");

    let cast_to = |node: &metaportrait::model::exec::onnx::proto::NodeProto| {
        (node.op_type.as_deref() == Some("Cast")).then(|| node.attribute.iter().find_map(|a| a.i)).flatten()
    };
    for input in &graph.input {
        let name = input.name.as_deref().unwrap_or_default();
        let users: Vec<_> = graph.node.iter().filter(|n| n.input.iter().any(|i| i == name)).collect();
        assert!(!users.is_empty(), "{name} unused");
        assert!(users.iter().all(|n| cast_to(n) == Some(data_type::FLOAT16.into())), "{name} not cast to float16");
    }
    for output in &graph.output {
        let name = output.name.as_deref().unwrap_or_default();
        let maker = graph.node.iter().find(|n| n.output.iter().any(|o| o == name)).expect("output producer");
        assert_eq!(cast_to(maker), Some(data_type::FLOAT.into()), "{name} not cast back to float32");
    }
    // Every normalisation's statistics and every grid sample run in float32 between casts.
    let producer = |name: &str| graph.node.iter().find(|n| n.output.iter().any(|o| o == name));
    let samplers: Vec<_> = graph.node.iter().filter(|n| n.op_type.as_deref() == Some("GridSample")).collect();
    assert!(!samplers.is_empty());
    for s in samplers {
        for input in &s.input {
            let p = producer(input).expect("grid sample input producer");
            assert_eq!(cast_to(p), Some(data_type::FLOAT.into()), "grid sample reads float16 `{input}`");
        }
    }
    let squares: Vec<_> = graph.node.iter().filter(|n| n.op_type.as_deref() == Some("ReduceSumSquare")).collect();
    assert!(!squares.is_empty());
    for sq in squares {
        // ReduceSumSquare(Sub(x32, mean)) where x32 = Cast(x, float32).
        let sub = producer(&sq.input[0]).expect("centered");
        let x = producer(&sub.input[0]).expect("normalised input");
        assert_eq!(cast_to(x), Some(data_type::FLOAT.into()), "sum of squares over float16 values");
    }
}

#[test]
fn half_generator_on_the_cpu_stays_close_to_float32() {
    let model = tiny_model();
    let inputs = fixture_inputs();
    let run = |precision| {
        let opts = RunnerOptions { device: Device::Cpu, threads: 2, precision, ..Default::default() };
        let mut engine = GeneratorRunner::new(&model, &opts).expect("engine");
        assert_eq!(engine.placement().precision, precision, "{}", engine.placement());
        assert_eq!(engine.placement().device, Device::Cpu);
        engine.run(&inputs).expect("forward")
    };
    let (half, full) = (run(Precision::Fp16), run(Precision::Fp32));
    let prediction = psnr(&half[OUTPUT_PREDICTION], &full[OUTPUT_PREDICTION], -1.0, 1.0);
    let grid = half[OUTPUT_DEFORMATION].max_abs_diff(&full[OUTPUT_DEFORMATION]).expect("same shape");
    eprintln!(
        "fp16 vs fp32 (tiny fixture, real frames, CPU): prediction PSNR {prediction:.1} dB, grid |diff| {grid:.1e}"
    );
    assert!(prediction >= MIN_PSNR_DB, "prediction PSNR {prediction:.1} dB < {MIN_PSNR_DB}");
    // One float16 ulp at 1 is 1e-3 (a quarter pixel at 256²); the grid goes through many such roundings.
    assert!(grid < 2e-2, "deformation moved by {grid}");
    assert!(prediction < 120.0, "the half graph gave float32's exact output: it did not run in float16");
}

#[test]
fn half_tsr_on_the_cpu_stays_close_to_float32() {
    let cfg = TsrConfig::tiny();
    let model = TsrModel::load(cfg, &common::fixtures_dir().join("tsr/tsr_tiny_weights.safetensors")).expect("tsr");
    let io = WeightStore::load_safetensors(&common::fixtures_dir().join("tsr/tsr_tiny_io.safetensors")).expect("io");
    let lq = io.get("input.lq").expect("input.lq");
    let run = |precision| {
        let opts = TsrOptions { device: Device::Cpu, threads: 2, precision, ..Default::default() };
        let mut engine = TsrRunner::new(model.clone(), opts).expect("engine");
        let out = engine.run_clip(lq, lq.shape()[1]).expect("forward");
        assert_eq!(engine.placement().precision, precision);
        out
    };
    let db = psnr(&run(Precision::Fp16), &run(Precision::Fp32), 0.0, 1.0);
    eprintln!("fp16 vs fp32 TSR (tiny fixture, CPU): PSNR {db:.1} dB");
    assert!((MIN_PSNR_DB..120.0).contains(&db), "TSR PSNR {db:.1} dB");
}

#[test]
fn cuda_precisions_asked_for_without_cuda_run_fp32_on_the_cpu_and_say_why() {
    let model = tiny_model();
    // No machine here has 64 GPUs, so this holds on a GPU machine too.
    for (device, precision) in [(Device::Cuda(63), Precision::Fp16), (Device::Cuda(63), Precision::Tf32)] {
        let opts = RunnerOptions { device, precision, threads: 2, ..Default::default() };
        let mut engine = GeneratorRunner::new(&model, &opts).expect("engine falls back");
        let p = engine.placement().clone();
        assert_eq!((p.device, p.precision), (Device::Cpu, Precision::Fp32), "{p}");
        assert_eq!((p.requested, p.requested_precision), (device, precision));
        let line = p.describe();
        assert!(line.starts_with("cpu, fp32 (cuda:63"), "{line}");
        assert!(line.contains("CUDA"), "the reason names CUDA: {line}");
        // The fallback session runs the float32 graph: the fixture's numbers, not float16's.
        let out = engine.run(&fixture_inputs()).expect("forward");
        let want = common::load("tiny_io.safetensors");
        let diff = out[OUTPUT_PREDICTION].max_abs_diff(want.get(OUTPUT_PREDICTION).expect("reference")).unwrap();
        assert!(diff <= 1e-4, "{diff}");
    }
    let tsr = TsrRunner::new(
        TsrModel::random(TsrConfig::tiny(), 1).expect("tsr"),
        TsrOptions { device: Device::Cuda(63), precision: Precision::Fp16, ..Default::default() },
    )
    .expect("tsr engine");
    assert_eq!((tsr.placement().device, tsr.placement().precision), (Device::Cpu, Precision::Fp32));
    assert!(tsr.placement().note.as_deref().is_some_and(|n| n.contains("CUDA")), "{}", tsr.placement());
}

/// The official widths (random weights: no released checkpoint here) on the fixture's real frames; slow on the CPU,
/// so run by hand: `cargo test --release --test fp16_graphs -- --ignored --nocapture`.
#[test]
#[ignore]
fn official_half_generator_psnr_on_real_frames() {
    let cfg = GeneratorConfig::official();
    let mut model = GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED).expect("official model");
    if std::env::var_os("FP16_RAW_SN").is_none() {
        settle_spectral_norms(&mut model.weights, SETTLE_ITERATIONS);
    }
    let mut inputs = fixture_inputs();
    let id: Vec<f32> = (0..cfg.id_dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
    let norm = id.iter().map(|v| v * v).sum::<f32>().sqrt();
    let id = HostTensor::new(vec![1, cfg.id_dim], id.iter().map(|v| v / norm).collect()).expect("id");
    inputs.insert("input.src_id".into(), id);
    let run = |precision| {
        let taps = std::env::var_os("FP16_TAPS").is_some();
        let opts = RunnerOptions { device: Device::Cpu, threads: 2, precision, taps, ..Default::default() };
        let mut engine = GeneratorRunner::new(&model, &opts).expect("engine");
        let started = std::time::Instant::now();
        let out = engine.run(&inputs).expect("forward");
        eprintln!("{precision}: first run {:.2} s", started.elapsed().as_secs_f64());
        out
    };
    let (half, full) = (run(Precision::Fp16), run(Precision::Fp32));
    for (k, v) in &full {
        let rel = common::l2_relative(&half[k], v);
        eprintln!("  {k}: l2-rel {rel:.2e}, max |ref| {:.3e}", v.max_abs());
    }
    let db = psnr(&half[OUTPUT_PREDICTION], &full[OUTPUT_PREDICTION], -1.0, 1.0);
    let grid = half[OUTPUT_DEFORMATION].max_abs_diff(&full[OUTPUT_DEFORMATION]).expect("same shape");
    eprintln!(
        "fp16 vs fp32 (official widths, random weights, real frames, CPU): PSNR {db:.1} dB, grid |diff| {grid:.1e}"
    );
    assert!(db >= MIN_PSNR_DB, "{db:.1} dB");
}

/// Where the official TSR's float32 activations peak (float16 overflows past 65504); run by hand.
#[test]
#[ignore]
fn official_tsr_activation_ranges() {
    let model = TsrModel::random(TsrConfig::official(), 0x5453).expect("official tsr");
    let frames = HostTensor::new(vec![1, 3, 256, 256], (0..3 * 256 * 256).map(|i| (i % 251) as f32 / 251.0).collect())
        .expect("frames");
    for precision in [Precision::Fp32, Precision::Fp16] {
        let opts = TsrOptions { device: Device::Cpu, threads: 2, precision, taps: true, ..Default::default() };
        let mut engine = TsrRunner::new(model.clone(), opts).expect("engine");
        let out = engine.run_frames(&frames).expect("forward");
        for (k, v) in &out {
            let finite = v.data().iter().all(|x| x.is_finite());
            eprintln!("{precision} {k}: max |x| {:.3e} finite {finite}", v.max_abs());
        }
    }
}
