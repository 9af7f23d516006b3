//! `bench precision`: the generator (and optionally the TSR network) at fp32 and at each other precision on the same
//! frames and device: time per call, PSNR against fp32, and the placement each really ran with. Receives the model
//! files or configs and optional real frames; emits a progress report on stderr and one JSON line on stdout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::{DEFAULT_INIT_SEED, GeneratorModel, synthetic_inputs};
use metaportrait::model::net;
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions};
use metaportrait::model::weights::WeightStore;
use metaportrait::runtime::{Device, Precision};
use metaportrait::tensor::HostTensor;
use metaportrait::tsr;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::TsrModel;

/// `bench precision`'s flags.
#[derive(Args, Debug)]
pub struct BenchPrecisionArgs {
    /// Generator: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Generator weights; random weights of the right shapes otherwise, with their spectral norms settled (power
    /// iteration) so the network behaves like a trained one.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Frames to run: a safetensors file with the generator's `input.*` tensors (e.g. the fixture's real frames;
    /// an `input.src_id` of another size is replaced by a fixed unit vector). Synthetic inputs otherwise.
    #[arg(long)]
    pub inputs: Option<PathBuf>,
    /// Also compare the TSR network (`official`, `tiny`, a config JSON, or `none`) on the 3-frame live window of the
    /// generator's fp32 frames.
    #[arg(long, default_value = "none")]
    pub tsr_config: String,
    /// TSR weights; random otherwise.
    #[arg(long)]
    pub tsr_weights: Option<PathBuf>,
    /// Precisions compared with fp32.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "tf32,fp16")]
    pub precisions: Vec<Precision>,
    /// Timed calls per precision (after one warm-up call).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Intra-op threads; 0 = all cores.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

/// The generator's inputs from a safetensors file (`input.src_id` of another width replaced by a fixed unit vector).
fn inputs_from_file(cfg: &GeneratorConfig, path: &Path) -> Result<(BTreeMap<String, HostTensor>, bool)> {
    let store = WeightStore::load_safetensors(path)?;
    let mut out = BTreeMap::new();
    let mut substituted = false;
    for (name, shape) in net::INPUT_NAMES.iter().zip(net::input_shapes(cfg)) {
        let t = store.get(name).with_context(|| format!("{} lacks `{name}`", path.display()))?;
        if t.shape() == shape.as_slice() {
            out.insert((*name).to_owned(), t.clone());
        } else if *name == "input.src_id" {
            let raw: Vec<f32> = (0..cfg.id_dim).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            out.insert((*name).to_owned(), HostTensor::new(shape, raw.iter().map(|v| v / norm).collect())?);
            substituted = true;
        } else {
            bail!("`{name}` in {} has shape {:?}, the config needs {shape:?}", path.display(), t.shape());
        }
    }
    Ok((out, substituted))
}

/// `frames` (`[3, 3, side, side]`) subsampled to the `want`² input a TSR network of another size reads.
fn frames_for_tsr(frames: HostTensor, side: usize, want: usize) -> Result<HostTensor> {
    if want == side {
        return Ok(frames);
    }
    if want == 0 || !side.is_multiple_of(want) {
        bail!("the TSR network reads {want}² frames, which {side}² frames cannot be subsampled to");
    }
    let step = side / want;
    let data = (0..9 * want * want)
        .map(|i| {
            let (plane, y, x) = (i / (want * want), i / want % want, i % want);
            frames.data()[(plane * side + y * step) * side + x * step]
        })
        .collect();
    Ok(HostTensor::new(vec![3, 3, want, want], data)?)
}

impl BenchPrecisionArgs {
    /// Compares the precisions and prints the JSON line.
    pub fn run(&self) -> Result<()> {
        use metaportrait::model::precision_check::{self, FP16_DEFAULT_MIN_PSNR_DB, ModeReport};
        let args = self;
        if args.iters == 0 {
            bail!("--iters must be at least 1");
        }
        let cfg = GeneratorConfig::resolve(&args.config)?;
        let model = match &args.weights {
            Some(path) => GeneratorModel::load(cfg.clone(), path)?,
            None => {
                let mut model = GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?;
                use metaportrait::model::sn_settle::{SETTLE_ITERATIONS, settle_spectral_norms};
                settle_spectral_norms(&mut model.weights, SETTLE_ITERATIONS);
                model
            }
        };
        let (inputs, substituted) = match &args.inputs {
            Some(path) => inputs_from_file(&cfg, path)?,
            None => (synthetic_inputs(&cfg, DEFAULT_INIT_SEED)?, false),
        };
        let modes = |reports: &[ModeReport]| -> serde_json::Value {
            reports.iter().map(|r| (r.precision.name().to_owned(), r.to_json())).collect()
        };
        let show = |what: &str, reports: &[ModeReport]| {
            for r in reports {
                let psnr = r.psnr_db.map_or_else(|| "reference".to_owned(), |db| format!("PSNR {db:.1} dB"));
                eprintln!("{what} {}: {:.2} ms, {psnr} ({})", r.precision, r.ms, r.placement);
            }
            if let Some(first) = reports.first().filter(|r| !r.output_in_image_range()) {
                eprintln!(
                    "{what}: the fp32 frames reach |x| = {:.1e}, not an image: these weights do not behave like \
                     trained ones, so the PSNR says nothing about fp16 (give real weights)",
                    first.output_max_abs
                );
            }
        };
        let generator = precision_check::compare_generator(
            &model,
            &inputs,
            args.device,
            args.threads,
            args.iters,
            &args.precisions,
        )?;
        show("generator", &generator);
        let fp16 = generator.iter().find(|r| r.placement.precision == Precision::Fp16 && r.psnr_db.is_some());
        let mut result = serde_json::json!({
            "config": cfg.name, "weights": if args.weights.is_some() { "file" } else { "random, spectral norms settled" },
            "inputs": match (&args.inputs, substituted) {
                (None, _) => "synthetic", (Some(_), false) => "file", (Some(_), true) => "file, src_id substituted",
            },
            "iters": args.iters, "threads": args.threads, "generator": modes(&generator),
            "fp16_psnr_db": fp16.and_then(|r| r.psnr_db), "fp16_min_psnr_db": FP16_DEFAULT_MIN_PSNR_DB,
            "fp16_meets_default_bar": fp16.and_then(|r| r.psnr_db).map(|db| db >= FP16_DEFAULT_MIN_PSNR_DB),
            "generator_output_in_image_range": generator.first().map(ModeReport::output_in_image_range),
        });
        if args.tsr_config != "none" {
            let tsr_cfg = TsrConfig::resolve(&args.tsr_config)?;
            let tsr_model = match &args.tsr_weights {
                Some(path) => TsrModel::load(tsr_cfg.clone(), path)?,
                None => TsrModel::random(tsr_cfg.clone(), tsr::runner::DEFAULT_INIT_SEED)?,
            };
            // The live window's three frames: the fp32 generator frame at three slightly different driving poses.
            let options = RunnerOptions { device: args.device, threads: args.threads, ..RunnerOptions::default() };
            let mut engine = GeneratorRunner::new(&model, &options)?;
            let side = cfg.image_size;
            let mut frames = Vec::with_capacity(3 * 3 * side * side);
            for k in 0..3 {
                let mut moved = inputs.clone();
                if let Some(ldmk) = moved.get_mut("input.driving_ldmk") {
                    ldmk.data_mut().iter_mut().for_each(|v| *v += 0.01 * k as f32);
                }
                let out = engine.run(&moved)?;
                let pred = out.get(net::OUTPUT_PREDICTION).context("no prediction")?;
                frames.extend(pred.data().iter().map(|v| (v + 1.0) * 0.5));
            }
            let frames = HostTensor::new(vec![3, 3, side, side], frames)?;
            let frames = frames_for_tsr(frames, side, tsr_cfg.out_size / 2)?;
            let tsr_reports = tsr::precision_check::compare_tsr(
                &tsr_model,
                &frames,
                args.device,
                args.threads,
                args.iters,
                &args.precisions,
            )?;
            show("tsr", &tsr_reports);
            if let Some(map) = result.as_object_mut() {
                map.insert("tsr_config".into(), tsr_cfg.name.clone().into());
                map.insert("tsr".into(), modes(&tsr_reports));
                map.insert(
                    "tsr_output_in_image_range".into(),
                    tsr_reports.first().map(ModeReport::output_in_image_range).into(),
                );
            }
        }
        println!("{result}");
        Ok(())
    }
}
