//! `prepare`: a folder of videos (or frame folders) per identity becomes a training dataset.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::capture::{IMAGE_DIR_FPS, open_path};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions};
use metaportrait::runtime::Device;

use super::common::face_mesher;

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Source folder: `<identity>/<clip>.mp4` or `<identity>/<clip>/` (frames), one person per identity folder.
    #[arg(long)]
    pub videos: PathBuf,
    /// Dataset folder to write (`<identity>/<clip>/frame_*.png + clip.json`); prepared clips are kept and skipped.
    #[arg(long)]
    pub out: PathBuf,
    /// Frames kept per clip, evenly spread (see `--consecutive`).
    #[arg(long, default_value_t = metaportrait::clip::frames::DEFAULT_MAX_FRAMES)]
    pub frames: usize,
    /// Keep the first `--frames` frames in a row instead of spreading them over the clip: temporal SR learns from
    /// frame-to-frame motion, so TSR datasets want consecutive video frames.
    #[arg(long)]
    pub consecutive: bool,
    /// Side of the face crops: 256 for the generator stages, the TSR output size (512) for `train tsr`.
    #[arg(long, default_value_t = 256)]
    pub crop_size: u32,
    /// Base generator weights: also render each clip's frames through it into `lq/` (the inputs of `train tsr`, as
    /// the official TSR training reads them); clips that have `lq/` are skipped.
    #[arg(long)]
    pub lq_weights: Option<PathBuf>,
    /// Architecture of `--lq-weights`: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub lq_config: String,
    #[arg(long)]
    pub models: Option<PathBuf>,
    #[command(flatten)]
    pub embedder: super::embedder::EmbedderArgs,
}

impl PrepareArgs {
    /// Prepares every clip not prepared yet.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::clip::frames::prepare_clip_at;
        use metaportrait::train::dataset::write_clip;
        let mut sources = Vec::new();
        for identity in std::fs::read_dir(&args.videos).with_context(|| format!("reading {}", args.videos.display()))? {
            let identity = identity?.path();
            if !identity.is_dir() {
                continue;
            }
            for clip in std::fs::read_dir(&identity)? {
                sources.push((identity.clone(), clip?.path()));
            }
        }
        sources.sort();
        if sources.is_empty() {
            bail!("{} has no <identity>/<clip> entries", args.videos.display());
        }
        let mut mesher = face_mesher(args.models.as_ref())?;
        let mut embedder = args.embedder.open()?;
        let bar = ProgressBar::new(sources.len() as u64);
        bar.set_style(ProgressStyle::with_template("prepare [{bar:30}] {pos}/{len} clips {elapsed} ETA {eta} {msg}")?);
        let (mut written, mut kept, mut failed) = (0, 0, 0);
        for (identity, clip_path) in &sources {
            let id_name = identity.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let clip_name = clip_path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let out = args.out.join(&id_name).join(&clip_name);
            bar.set_message(format!("{id_name}/{clip_name}"));
            if out.join(metaportrait::train::dataset::CLIP_FILE).is_file() {
                kept += 1;
                bar.inc(1);
                continue;
            }
            let result = (|| -> Result<()> {
                let mut opened = open_path(clip_path, IMAGE_DIR_FPS)?;
                // Without a frame count the sampler keeps every frame until it has enough.
                let spread_over = if args.consecutive { None } else { Some(opened.frames) };
                let clip = prepare_clip_at(
                    &mut mesher,
                    opened.source.as_mut(),
                    spread_over,
                    args.frames,
                    args.crop_size,
                    |_| {},
                )?;
                let id_vector = embedder.embed(&clip.source_picture, &clip.source_picture_landmarks)?;
                write_clip(&out, &clip, &id_vector)?;
                Ok(())
            })();
            match result {
                Ok(()) => written += 1,
                Err(error) => {
                    failed += 1;
                    bar.suspend(|| eprintln!("skipping {}: {error:#}", clip_path.display()));
                }
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        eprintln!("prepared {written} clips into {} ({kept} already there, {failed} skipped)", args.out.display());
        if written + kept == 0 {
            bail!("no clip could be prepared");
        }
        if let Some(weights) = &args.lq_weights {
            render_lq_frames(&args.out, weights, &args.lq_config)?;
        }
        Ok(())
    }
}

/// `prepare --lq-weights`: the generator's reconstruction of every clip's frames, for clips without `lq/`.
fn render_lq_frames(data: &std::path::Path, weights: &std::path::Path, config: &str) -> Result<()> {
    use metaportrait::train::tsr::{LQ_DIR, render_lq};
    let model = GeneratorModel::load(GeneratorConfig::resolve(config)?, weights)
        .with_context(|| format!("loading {}", weights.display()))?;
    let mut engine = GeneratorRunner::new(&model, &RunnerOptions { device: Device::Auto, ..Default::default() })?;
    let dataset = metaportrait::train::dataset::Dataset::open(data)?;
    let todo: Vec<_> =
        dataset.identities.iter().flat_map(|(_, clips)| clips).filter(|c| !c.dir.join(LQ_DIR).is_dir()).collect();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(ProgressStyle::with_template("generator outputs [{bar:30}] {pos}/{len} clips {elapsed} ETA {eta}")?);
    let mut frames = 0;
    for clip in &todo {
        frames += render_lq(&clip.dir, &mut engine, &model.config)
            .with_context(|| format!("rendering {}", clip.dir.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    eprintln!("rendered {frames} generator frames into `{LQ_DIR}/` of {} clips", todo.len());
    Ok(())
}
