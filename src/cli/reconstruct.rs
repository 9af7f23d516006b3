//! `metaportrait reconstruct`: the official inference (`base_model/inference.py`) on the official preprocessed data.
//!
//! Owns the command's arguments, its progress bar and summary line; the work is `metaportrait::reconstruct`.
//! Receives the data folder, weights, config and output folder; emits `OUT/output_256/*.png`, `OUT/out_256.mp4` and
//! `OUT/metrics.json`, one summary line on stderr and the summary as JSON on stdout.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::ExecutorKind;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions, Stage};
use metaportrait::reconstruct::job::{FrameScores, reconstruct};
use metaportrait::reconstruct::layout::OfficialData;
use metaportrait::runtime::Device;

/// The official connectivity file's name (in the official repository: `base_model/utils/`).
const CONNECTIVITY_FILE: &str = "dense_669_connectivity.tsv";

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    /// The official inference data: `<n>/imgs/*.png`, `<n>/ldmks/*_ldmk.npy`, `src_<n>.png`, `src_<n>_ldmk.npy`,
    /// `src_<n>_id.npy` and `src_map_dict.pkl`.
    #[arg(long)]
    pub data: PathBuf,
    /// Generator weights (safetensors; `import-checkpoint` converts the official `ckpt_base.pth.tar`).
    #[arg(long)]
    pub weights: PathBuf,
    /// Generator architecture: `official`, `tiny`, or a config JSON file. The data's 669-point landmarks are drawn
    /// whatever the config's conditioning says; its id_dim must match the data's identity vectors.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Output folder: `output_256/`, `out_256.mp4`, `metrics.json` (replaced if it holds only those).
    #[arg(long)]
    pub output: PathBuf,
    /// The official `dense_669_connectivity.tsv` (default: the one in `--data`, if any).
    #[arg(long)]
    pub connectivity: Option<PathBuf>,
    /// `ort` (fast inference) or `burn`.
    #[arg(long, default_value = "ort")]
    pub executor: ExecutorKind,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Intra-op threads; 0 = all cores.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

fn connectivity(args: &ReconstructArgs) -> Result<PathBuf> {
    if let Some(path) = &args.connectivity {
        return Ok(path.clone());
    }
    let beside = args.data.join(CONNECTIVITY_FILE);
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "the 669-point data needs the official connectivity file: pass --connectivity PATH/{CONNECTIVITY_FILE} \
         (in the official repository under base_model/utils/) or put it in {}",
        args.data.display()
    )
}

/// Fidelity of a generated frame against its ground truth.
// TODO(h15): wire `metaportrait::eval` (PSNR, SSIM) here once it is merged.
fn score(_prediction: &image::RgbImage, _truth: &image::RgbImage) -> Result<FrameScores, std::convert::Infallible> {
    Ok(FrameScores { psnr_db: f64::NAN, ssim: f64::NAN })
}
const METRIC: &str = "not computed in this build";

impl ReconstructArgs {
    pub fn run(&self) -> Result<()> {
        run(self)
    }
}

fn run(args: &ReconstructArgs) -> Result<()> {
    let config = GeneratorConfig::resolve(&args.config)?;
    let data = OfficialData::open(&args.data)?;
    let connectivity = connectivity(args)?;
    if !data.skipped.is_empty() {
        tracing::warn!(
            count = data.skipped.len(),
            first = %data.skipped[0].display(),
            "frames whose names start with s, r, c or _ are skipped, as the official loader's glob skips them"
        );
    }
    let model = GeneratorModel::load(config.clone(), &args.weights)
        .with_context(|| format!("loading {}", args.weights.display()))?;
    let options = RunnerOptions {
        executor: args.executor,
        device: args.device,
        threads: args.threads,
        stage: Stage::Full,
        taps: false,
        ..RunnerOptions::default()
    };
    let mut engine = GeneratorRunner::new(&model, &options)?;
    let bar = ProgressBar::new(data.frames.len() as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} frames {elapsed} ETA {eta}")?);
    bar.set_message(format!("reconstruct ({}, {})", engine.executor().name(), engine.placement()));
    let summary = reconstruct(&data, &config, &mut engine, &connectivity, &args.output, METRIC, score, |done| {
        bar.set_position(done.index as u64 + 1);
        if done.scores.psnr_db.is_finite() {
            bar.println(format!("{}: PSNR {:.2} dB, SSIM {:.4}", done.name, done.scores.psnr_db, done.scores.ssim));
        }
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{} frames from {} in {:.1} s → {} (PSNR {:.2} dB, SSIM {:.4} mean)",
        summary.frames,
        display(&args.data),
        summary.seconds,
        display(&args.output),
        summary.mean_psnr_db,
        summary.mean_ssim
    );
    println!(
        "{}",
        serde_json::json!({
            "frames": summary.frames, "mean_psnr_db": summary.mean_psnr_db, "mean_ssim": summary.mean_ssim,
            "seconds": summary.seconds, "output": args.output, "metric": summary.metric,
        })
    );
    Ok(())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
