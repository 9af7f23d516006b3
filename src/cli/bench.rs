//! `bench generator|step|tsr|e2e|face|preview` (and `precision`, in its own file): speed measurements, each ending with one JSON line on stdout.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::{DEFAULT_INIT_SEED, GeneratorModel, synthetic_inputs};
use metaportrait::model::net::GeneratorInputs;
use metaportrait::model::runner::{GeneratorRunner, Stage};
use metaportrait::pipeline::bench::time_e2e;
use metaportrait::rng::SplitMix64;
use metaportrait::runtime::Device;
use metaportrait::tensor::HostTensor;
use metaportrait::train::{
    self,
    adam::{Adam, AdamConfig},
    resident::ResidentTrainer,
};
use metaportrait::tsr;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::{TsrModel, TsrRunner};

use super::common::{ExecArgs, Perceptual, demo_portrait, engine_options, face_mesher, perceptual_vgg, tsr_options};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time the warping network alone and warp + refine, batch 1.
    Generator(BenchGeneratorArgs),
    /// Time one personalization step (burn forward + backward + Adam), batch 1.
    Step(BenchStepArgs),
    /// Time the temporal SR network per frame (offline chunk and the live 3-frame window).
    Tsr(BenchTsrArgs),
    /// Time live frames end to end at 512²: generator then the streaming TSR, one after the other and pipelined.
    E2e(BenchE2eArgs),
    /// Time the face stage per frame: detector, mesh, attention refinement, tracking.
    Face(BenchFaceArgs),
    /// Time the preview engine per 256² frame on the CPU and with wgpu (draw + readback).
    Preview(BenchPreviewArgs),
    /// fp32, TF32 and fp16 side by side on the same frames: time per call and PSNR against fp32.
    Precision(super::bench_precision::BenchPrecisionArgs),
}

impl BenchCommand {
    /// Runs the benchmark.
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Generator(args) => args.run(),
            Self::Step(args) => args.run(),
            Self::Tsr(args) => args.run(),
            Self::E2e(args) => args.run(),
            Self::Face(args) => args.run(),
            Self::Preview(args) => args.run(),
            Self::Precision(args) => args.run(),
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchE2eArgs {
    /// Generator: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Temporal SR: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub tsr_config: String,
    /// Frames timed per mode (after a warm-up).
    #[arg(long, default_value_t = 30)]
    pub frames: usize,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Args, Debug)]
pub struct BenchPreviewArgs {
    /// Timed runs per path (after 10 warm-up runs).
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    #[arg(long)]
    pub models: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchFaceArgs {
    /// Image with one face (default: the bundled portrait).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Timed runs per stage (after 10 warm-up runs).
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    #[arg(long)]
    pub models: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchTsrArgs {
    /// `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Weights to use; random weights of the right shapes otherwise (speed does not depend on values).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Frames per offline call (the official test uses 16).
    #[arg(long, default_value_t = 4)]
    pub frames: usize,
    /// Timed iterations (after one warm-up run).
    #[arg(long, default_value_t = 2)]
    pub iters: usize,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Args, Debug)]
pub struct BenchStepArgs {
    /// `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Timed steps (the first is reported separately as it includes allocation).
    #[arg(long, default_value_t = 2)]
    pub iters: usize,
    /// Where burn trains: `cpu`, `cuda`, `cuda:N` (builds with `--features cuda`) or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Run Adam on the host (every parameter up and every gradient down on each step) instead of keeping parameters
    /// and moments on the device as personalization does; for comparison.
    #[arg(long)]
    pub host_optimizer: bool,
    /// The loss stepped on: `personalization` is what personalization trains (L1, the eye and mouth boxes, and the
    /// VGG-19 pyramid when its weights are found); `l1` is the prediction's L1 alone (lighter, for comparison).
    #[arg(long, value_enum, default_value = "personalization")]
    pub loss: BenchLoss,
    /// VGG-19 weights for the perceptual term (default: the bundled location next to the face-recognition model).
    #[arg(long)]
    pub vgg: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchLoss {
    Personalization,
    L1,
}

#[derive(Args, Debug)]
pub struct BenchGeneratorArgs {
    /// `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Weights to use; random weights of the right shapes otherwise (speed does not depend on values).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Timed iterations per stage (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[command(flatten)]
    pub exec: ExecArgs,
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { samples[n / 2] } else { 0.5 * (samples[n / 2 - 1] + samples[n / 2]) }
}

/// One warm-up call, then the median of `iters` timed calls in milliseconds, behind a progress bar labelled `label`.
fn median_call_ms(label: String, iters: usize, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
    let bar = ProgressBar::new((iters + 1) as u64);
    bar.set_style(ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")?);
    bar.set_message(label);
    call()?;
    bar.inc(1);
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        call()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(median(samples))
}

/// Best and median of timed runs of `f`, in milliseconds, after a warm-up.
fn time_ms(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    const WARMUP: usize = 10;
    for _ in 0..WARMUP {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let best = samples.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((best, median(samples)))
}

impl BenchGeneratorArgs {
    /// Times the warping network and warp + refine.
    pub fn run(&self) -> Result<()> {
        let args = self;
        if args.iters == 0 {
            bail!("--iters must be at least 1");
        }
        let cfg = GeneratorConfig::resolve(&args.config)?;
        let model = match &args.weights {
            Some(path) => GeneratorModel::load(cfg.clone(), path)?,
            None => GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?,
        };
        let inputs = synthetic_inputs(&cfg, DEFAULT_INIT_SEED)?;
        let mut result = serde_json::Map::new();
        for (stage, key) in [(Stage::Warp, "warp_ms"), (Stage::Full, "warp_refine_ms")] {
            let build_started = Instant::now();
            let mut engine = GeneratorRunner::new(&model, &engine_options(&args.exec, stage))?;
            let setup_s = build_started.elapsed().as_secs_f64();
            let label = format!("{key} ({})", engine.executor().name());
            let med = median_call_ms(label, args.iters, || Ok(engine.run(&inputs).map(drop)?))?;
            eprintln!(
                "{key}: median {med:.1} ms over {} runs on {}{} (engine setup {setup_s:.2} s)",
                args.iters,
                engine.placement(),
                if engine.uses_device_buffers() { " with CUDA device buffers" } else { "" }
            );
            result.insert(key.to_owned(), serde_json::json!(med));
            result.extend(engine.placement().json_fields());
        }
        result.insert("config".into(), serde_json::json!(cfg.name));
        result.insert("executor".into(), serde_json::json!(args.exec.executor.name()));
        result.insert("iters".into(), serde_json::json!(args.iters));
        result.insert("threads".into(), serde_json::json!(args.exec.threads));
        println!("{}", serde_json::Value::Object(result));
        Ok(())
    }
}

/// Eye and mouth boxes of `bench step`'s synthetic sample, as (top, bottom, left, right) fractions of the side: where a
/// centred face crop has them. Their placement does not change the work a step does.
const BENCH_EYE_BOX: [f32; 4] = [0.35, 0.47, 0.22, 0.78];

const BENCH_MOUTH_BOX: [f32; 4] = [0.66, 0.80, 0.34, 0.66];

/// A `[1, 1, side, side]` mask, 1 inside `frac` (top, bottom, left, right fractions of the side).
fn box_mask(side: usize, frac: [f32; 4]) -> Result<HostTensor> {
    let at = |f: f32| (f * side as f32).round() as usize;
    let (rows, cols) = (at(frac[0])..at(frac[1]), at(frac[2])..at(frac[3]));
    let data = (0..side * side).map(|i| f32::from(u8::from(rows.contains(&(i / side)) && cols.contains(&(i % side)))));
    Ok(HostTensor::new(vec![1, 1, side, side], data.collect())?)
}

impl BenchStepArgs {
    /// Times personalization steps.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::clip::sample::TrainSample;
        use metaportrait::train::loss::LossWeights;
        use metaportrait::train::step::Objective;
        if args.iters == 0 {
            bail!("--iters must be at least 1");
        }
        let cfg = GeneratorConfig::resolve(&args.config)?;
        let mut model = GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?;
        let host = synthetic_inputs(&cfg, DEFAULT_INIT_SEED)?;
        let inputs = GeneratorInputs::try_from_fn(|n| {
            host.get(n).cloned().ok_or_else(|| metaportrait::model::ModelError::MissingInput(n.to_owned()))
        })?;
        let target = host["input.source"].clone();
        let vgg = match args.loss {
            BenchLoss::Personalization => perceptual_vgg(Perceptual::Auto, args.vgg.as_ref())?,
            BenchLoss::L1 => None,
        };
        let loss_weights = LossWeights::default();
        let objective = Objective { weights: &loss_weights, vgg: vgg.as_ref() };
        let sample = TrainSample {
            inputs: inputs.clone(),
            target: target.clone(),
            eye_mask: box_mask(cfg.image_size, BENCH_EYE_BOX)?,
            mouth_mask: box_mask(cfg.image_size, BENCH_MOUTH_BOX)?,
        };
        let device = metaportrait::runtime::burn_device::exec_device(args.device)?;
        let mut adam = Adam::new(AdamConfig::default());
        let mut resident = ResidentTrainer::new(AdamConfig::default(), &device);
        let bar = ProgressBar::new((args.iters + 1) as u64);
        bar.set_style(ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {elapsed}")?);
        bar.set_message("step (burn)");
        let mut samples = Vec::with_capacity(args.iters + 1);
        let mut losses = Vec::new();
        let mut terms = Vec::new();
        for _ in 0..=args.iters {
            let t = Instant::now();
            let report = match (args.loss, args.host_optimizer) {
                (BenchLoss::L1, true) => train::step::l1_step(&mut model, &mut adam, &device, &inputs, &target)?,
                (BenchLoss::L1, false) => resident.l1_step(&model, &inputs, &target)?,
                (BenchLoss::Personalization, true) => {
                    train::step::loss_step(&mut model, &mut adam, &device, &sample, objective)?
                }
                (BenchLoss::Personalization, false) => resident.loss_step(&model, &sample, objective, Stage::Full)?,
            };
            samples.push(t.elapsed().as_secs_f64());
            losses.push(report.loss.total);
            terms = report.loss.terms.iter().map(|(name, _)| *name).collect();
            bar.inc(1);
        }
        // A personalization ends by reading the trained weights back once: part of its wall time.
        let write_back = Instant::now();
        resident.finish(&mut model.weights)?;
        let write_back_s = write_back.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let steps = samples.len();
        let total_s = samples.iter().sum::<f64>() + write_back_s;
        let first = samples.remove(0);
        let med = median(samples);
        eprintln!(
            "step ({}): first {first:.2} s, median {med:.2} s; {steps} steps in {total_s:.2} s; losses {losses:?}",
            terms.join(" + ")
        );
        let loss = args.loss.to_possible_value().map(|v| v.get_name().to_owned());
        let result = serde_json::json!({
            "config": cfg.name, "executor": "burn", "device": args.device.to_string(), "first_step_s": first,
            "step_s": med, "iters": args.iters, "steps": steps, "total_s": total_s, "losses": losses,
            "optimizer": if args.host_optimizer { "host" } else { "resident" }, "loss": loss, "terms": terms,
        });
        println!("{result}");
        Ok(())
    }
}

impl BenchTsrArgs {
    /// Times the temporal SR network per frame.
    pub fn run(&self) -> Result<()> {
        let args = self;
        if args.iters == 0 || args.frames == 0 {
            bail!("--iters and --frames must be at least 1");
        }
        let cfg = TsrConfig::resolve(&args.config)?;
        let model = match &args.weights {
            Some(path) => TsrModel::load(cfg.clone(), path)?,
            None => TsrModel::random(cfg.clone(), tsr::runner::DEFAULT_INIT_SEED)?,
        };
        let side = cfg.out_size / 2;
        let mut engine = TsrRunner::new(model, tsr_options(&args.exec))?;
        let mut rng = SplitMix64::new(tsr::runner::DEFAULT_INIT_SEED);
        let window = tsr::stream::DEFAULT_HISTORY + 2;
        let mut result = serde_json::Map::new();
        for (frames, key) in [(args.frames, "offline_ms_per_frame"), (window, "stream_ms_per_frame")] {
            let len = frames * 3 * side * side;
            let batch = HostTensor::new(vec![frames, 3, side, side], (0..len).map(|_| rng.uniform() as f32).collect())?;
            let setup = Instant::now();
            engine.prepare(frames, side)?;
            let setup_s = setup.elapsed().as_secs_f64();
            let label = format!("{key} ({})", engine.executor().name());
            let call_ms = median_call_ms(label, args.iters, || Ok(engine.run_frames(&batch).map(drop)?))?;
            // Offline, a call yields `frames` frames; live, each call yields one (the window's target).
            let per_frame = if key == "stream_ms_per_frame" { call_ms } else { call_ms / frames as f64 };
            eprintln!(
                "{key}: {per_frame:.1} ms ({frames} frames per call, median of {}; setup {setup_s:.2} s) on {}",
                args.iters,
                engine.placement()
            );
            result.insert(key.to_owned(), serde_json::json!(per_frame));
        }
        result.extend(engine.placement().json_fields());
        result.insert("config".into(), serde_json::json!(cfg.name));
        result.insert("out_size".into(), serde_json::json!(cfg.out_size));
        result.insert("executor".into(), serde_json::json!(args.exec.executor.name()));
        result.insert("threads".into(), serde_json::json!(args.exec.threads));
        println!("{}", serde_json::Value::Object(result));
        Ok(())
    }
}

impl BenchE2eArgs {
    /// Times live 512² frames through the generator and the streaming TSR, sequential and pipelined.
    pub fn run(&self) -> Result<()> {
        let args = self;
        if args.frames == 0 {
            bail!("--frames must be at least 1");
        }
        let cfg = GeneratorConfig::resolve(&args.config)?;
        let tsr_cfg = TsrConfig::resolve(&args.tsr_config)?;
        if tsr_cfg.out_size != 2 * cfg.image_size {
            bail!(
                "the TSR network outputs {0}², twice the generator's {1}² would be {2}²",
                tsr_cfg.out_size,
                cfg.image_size,
                2 * cfg.image_size
            );
        }
        let model = GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?;
        let mut generator = GeneratorRunner::new(&model, &engine_options(&args.exec, Stage::Full))?;
        let mut upscaler = TsrRunner::new(
            TsrModel::random(tsr_cfg.clone(), tsr::runner::DEFAULT_INIT_SEED)?,
            tsr_options(&args.exec),
        )?;
        let inputs = synthetic_inputs(&cfg, DEFAULT_INIT_SEED)?;
        let times = time_e2e(&mut generator, &mut upscaler, &inputs, cfg.image_size, args.frames)?;
        let (sequential_ms, pipelined_ms) = (times.sequential_ms_per_frame, times.pipelined_ms_per_frame);
        let device = generator.placement().clone();
        eprintln!(
            "{}² end to end on {device}: sequential {sequential_ms:.1} ms/frame ({:.1} fps), pipelined \
             {pipelined_ms:.1} ms/frame ({:.1} fps)",
            tsr_cfg.out_size,
            1e3 / sequential_ms,
            1e3 / pipelined_ms
        );
        let mut result = serde_json::json!({
            "config": cfg.name, "tsr_config": tsr_cfg.name, "out_size": tsr_cfg.out_size,
            "frames": args.frames, "sequential_ms_per_frame": sequential_ms, "pipelined_ms_per_frame": pipelined_ms,
            "sequential_fps": 1e3 / sequential_ms, "pipelined_fps": 1e3 / pipelined_ms,
            "tsr_device": upscaler.placement().describe(),
        });
        if let Some(map) = result.as_object_mut() {
            map.extend(device.json_fields());
        }
        println!("{result}");
        Ok(())
    }
}

impl BenchFaceArgs {
    /// Times the face stage per frame.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::face::{FaceTracker, TrackerOptions};
        if args.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let path = args.image.clone().unwrap_or_else(demo_portrait);
        let image = metaportrait::face::load_image(&path)?;
        let mut mesher = face_mesher(args.models.as_ref())?;
        let detection = *mesher.detect(&image)?.first().with_context(|| format!("no face in {}", path.display()))?;
        let roi = detection.roi();
        mesher.landmarks(&image, &roi, true)?;
        let mut tracker = FaceTracker::new(TrackerOptions::default());
        let mut t_s = 0.0;
        let mut rows = Vec::new();
        rows.push(("detect_ms", time_ms(args.runs, || Ok(mesher.detect(&image).map(drop)?))?));
        rows.push(("mesh_ms", time_ms(args.runs, || Ok(mesher.landmarks(&image, &roi, false).map(drop)?))?));
        rows.push(("refine_ms", time_ms(args.runs, || Ok(mesher.landmarks(&image, &roi, true).map(drop)?))?));
        rows.push((
            "tracking_frame_ms",
            time_ms(args.runs, || {
                t_s += 1.0 / 30.0;
                Ok(tracker.track(&mut mesher, &image, t_s).map(drop)?)
            })?,
        ));
        // Conditioning of one frame: the refined landmarks in a 256² crop → line image and keypoints.
        let refined = mesher.landmarks(&image, &roi, true)?;
        let side = roi.size.max(1.0);
        let pts: Vec<[f32; 2]> = refined
            .points
            .iter()
            .map(|p| [(p[0] - roi.center.x + side / 2.0) / side, (p[1] - roi.center.y + side / 2.0) / side])
            .collect();
        let mut conditioner = metaportrait::face::condition::Conditioner::new(
            metaportrait::face::topology::Topology::mediapipe(),
            metaportrait::face::condition::CONDITION_SIZE,
        )?;
        rows.push((
            "rasterise_ms",
            time_ms(args.runs, || {
                conditioner.keypoints(&pts)?;
                Ok(conditioner.draw(&pts).map(drop)?)
            })?,
        ));
        let mut result = serde_json::Map::new();
        for (name, (best, med)) in rows {
            eprintln!("{name:<20} best {best:7.2} ms  median {med:7.2} ms");
            result.insert(name.into(), serde_json::json!(med));
        }
        result.insert("detector_calls_while_tracking".into(), serde_json::json!(tracker.stats().detector_calls));
        result.insert("runs".into(), serde_json::json!(args.runs));
        println!("{}", serde_json::Value::Object(result));
        Ok(())
    }
}

impl BenchPreviewArgs {
    /// Times the preview engine on the CPU and with wgpu.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::model::preview::MeshWarp;
        use metaportrait::model::preview::gpu::{GpuContext, GpuMeshWarp};
        if args.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let path = demo_portrait();
        let image = metaportrait::face::load_image(&path)?;
        let mut mesher = face_mesher(args.models.as_ref())?;
        let prepared = metaportrait::pipeline::render::prepare_portrait(&mut mesher, &image, &path)?;
        let landmarks: Vec<[f32; 2]> = prepared.landmarks.iter().map(|p| [p[0], p[1]]).collect();
        // A pose that moves every vertex, so no path can take a shortcut.
        let target: Vec<[f32; 2]> = landmarks.iter().map(|p| [p[0] + 3.0, p[1] - 2.0]).collect();
        let mut out = image::RgbImage::new(prepared.crop.width(), prepared.crop.height());
        let mut result = serde_json::Map::new();
        let mut cpu = MeshWarp::new(prepared.crop.clone(), &landmarks)?;
        let (best, med) = time_ms(args.runs, || Ok(cpu.render(&target, &mut out)?))?;
        eprintln!("cpu                  best {best:7.2} ms  median {med:7.2} ms");
        result.insert("cpu_ms".into(), serde_json::json!(med));
        match GpuContext::headless() {
            Ok(gpu) => {
                let name = gpu.adapter_name.clone();
                let mut warp = GpuMeshWarp::new(&gpu, MeshWarp::new(prepared.crop, &landmarks)?);
                let (best, med) = time_ms(args.runs, || Ok(warp.render(&target, &mut out)?))?;
                eprintln!("gpu ({name}) best {best:7.2} ms  median {med:7.2} ms");
                result.insert("gpu_ms".into(), serde_json::json!(med));
                result.insert("gpu_adapter".into(), serde_json::json!(name));
            }
            Err(error) => eprintln!("gpu: not measured ({error})"),
        }
        result.insert("runs".into(), serde_json::json!(args.runs));
        println!("{}", serde_json::Value::Object(result));
        Ok(())
    }
}
