//! `personalize`: a short clip of a person becomes a personalized identity in the library.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::runtime::Device;

use super::common::{Perceptual, identity_store, perceptual_vgg_path};

#[derive(Args, Debug)]
pub struct PersonalizeArgs {
    /// A video (MP4/H.264) or a directory of frames of one person (a few seconds).
    #[arg(long)]
    pub clip: PathBuf,
    /// Display name of the new identity.
    #[arg(long)]
    pub name: String,
    /// Base generator architecture: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Base generator weights (safetensors) trained on MediaPipe landmarks; the official checkpoint as released
    /// needs its own 669-point landmarks and only runs under `reconstruct`.
    #[arg(long)]
    pub weights: PathBuf,
    /// Adam steps (the paper's K).
    #[arg(long, default_value_t = metaportrait::train::reptile::DEFAULT_INNER_STEPS)]
    pub steps: usize,
    /// Frames taken from the clip, evenly spread (the paper uses 48).
    #[arg(long, default_value_t = metaportrait::clip::frames::DEFAULT_MAX_FRAMES)]
    pub frames: usize,
    /// VGG-19 perceptual loss: `auto` uses the provisioned weights when present, `off` trains without it.
    #[arg(long, value_enum, default_value = "auto")]
    pub perceptual: Perceptual,
    /// VGG-19 weights (torchvision keys) instead of the provisioned ones.
    #[arg(long)]
    pub vgg: Option<PathBuf>,
    /// Write the report (steps, seconds, held-out loss before/after, losses used) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Where burn trains: `cpu`, `cuda`, `cuda:N` (builds with `--features cuda`) or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    #[command(flatten)]
    pub embedder: super::embedder::EmbedderArgs,
}

impl PersonalizeArgs {
    /// Personalizes the base model on the clip and adds the identity to the library.
    pub fn run(&self) -> Result<()> {
        use metaportrait::clip::frames::MIN_FRAMES;
        use metaportrait::personalize::from_clip::{ClipProgress, ClipRequest, personalize_clip};
        use metaportrait::personalize::job::PersonalizeProgress;
        let args = self;
        if args.steps == 0 || args.frames < MIN_FRAMES {
            bail!("--steps must be at least 1 and --frames at least {MIN_FRAMES}");
        }
        let store = identity_store()?;
        let config = GeneratorConfig::resolve(&args.config)?;
        let base = GeneratorModel::load(config, &args.weights)
            .with_context(|| format!("loading {}", args.weights.display()))?;
        let base_sha256 = metaportrait::checksum::sha256_file(&args.weights)
            .with_context(|| format!("reading {}", args.weights.display()))?;
        let request = ClipRequest {
            clip: args.clip.clone(),
            name: args.name.clone(),
            max_frames: args.frames,
            steps: args.steps,
            models_dir: args.models.clone().unwrap_or_else(metaportrait::face::default_models_dir),
            id_model: args.embedder.path(),
            vgg: perceptual_vgg_path(args.perceptual, args.vgg.as_ref()),
            device: args.device,
            base_sha256: Some(base_sha256),
        };
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} frames {elapsed}")?);
        bar.set_message("reading the clip");
        let cancel = std::sync::atomic::AtomicBool::new(false);
        // A new phase restarts the bar, so its elapsed time and ETA are the phase's own.
        let mut phase = None;
        let (identity, report) = personalize_clip(&base, &request, &cancel, |p| match p {
            ClipProgress::Reading { frames, total } => {
                bar.set_length(*total);
                bar.set_position(*frames as u64);
            }
            ClipProgress::ClipReady(clip) => {
                bar.finish_and_clear();
                eprintln!(
                    "{} frames with a face ({} without), source frame {}, {} held out",
                    clip.frames, clip.frames_without_face, clip.source_index, clip.heldout
                );
                if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} ETA {eta}") {
                    bar.set_style(style);
                }
            }
            ClipProgress::Job(p) => {
                let (this_phase, done, total) = match p {
                    PersonalizeProgress::Scoring { after, done, total } => (Some(*after), *done, *total),
                    PersonalizeProgress::Step(s) => (None, s.step, s.total),
                };
                if phase != Some(this_phase) {
                    phase = Some(this_phase);
                    bar.reset();
                    bar.set_length(total as u64);
                }
                bar.set_position(done as u64);
                bar.set_message(match p {
                    PersonalizeProgress::Scoring { after: false, .. } => "held-out loss before".to_owned(),
                    PersonalizeProgress::Scoring { after: true, .. } => "held-out loss after".to_owned(),
                    PersonalizeProgress::Step(s) => format!("personalizing · loss {:.4}", s.loss.total),
                });
            }
        })?;
        bar.finish_and_clear();
        let id = store.add(&identity)?;
        if let Some(path) = &args.report {
            metaportrait::atomic_file::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!(
            "identity `{id}` ({}) added: {} steps in {:.1} s, held-out loss {:.4} → {:.4} ({}), {} tensors changed",
            args.name,
            report.steps,
            report.seconds,
            report.heldout_loss_before,
            report.heldout_loss_after,
            report.losses.join(" + "),
            report.tensors_changed
        );
        Ok(())
    }
}
