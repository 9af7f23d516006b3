//! `train warp|meta|full|tsr`: the training stages, each resumable from its run folder.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::weights::WeightStore;
use metaportrait::runtime::Device;
use metaportrait::train::loss::LossWeights;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::TsrModel;

use super::common::{Perceptual, perceptual_vgg};

#[derive(Subcommand, Debug)]
pub enum TrainCommand {
    /// Warping pre-training: the warping network alone, perceptual loss on the warped source.
    Warp(TrainWarpArgs),
    /// Reptile meta-training: K inner Adam steps per identity, the mean of θ − θ′ applied by the outer Adam.
    Meta(TrainMetaArgs),
    /// Joint training of the whole generator against the patch discriminator (LSGAN, feature matching 10,
    /// perceptual on prediction and warped source, eye/mouth 50).
    Full(TrainFullArgs),
    /// Temporal-SR training (official recipe: 0.1·L1 + VGG perceptual + style 50, Adam 1e-4, frozen decoder, EMA) on
    /// a dataset prepared with `--crop-size` = the network's output size. `--config`/`--weights` name the TSR network.
    Tsr(TrainTsrArgs),
}

impl TrainCommand {
    /// Runs the stage.
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Warp(args) => args.run(),
            Self::Meta(args) => args.run(),
            Self::Full(args) => args.run(),
            Self::Tsr(args) => args.run(),
        }
    }
}

#[derive(Args, Debug)]
pub struct TrainTsrArgs {
    #[command(flatten)]
    pub common: TrainCommonArgs,
    /// Steps to reach.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Consecutive dataset frames per training clip (the official 6).
    #[arg(long, default_value_t = metaportrait::train::tsr::DEFAULT_FRAMES)]
    pub frames: usize,
    /// Clips per step; their gradients are averaged.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Steps of the cosine learning-rate decay (1e-4 → 1e-7).
    #[arg(long, default_value_t = metaportrait::train::tsr::LR_PERIOD)]
    pub lr_period: u64,
    /// Weight of an LSGAN term from a patch discriminator on every output frame (0: none, the released recipe).
    #[arg(long, default_value_t = 0.0)]
    pub gan_weight: f32,
    /// The patch discriminator's widths when `--gan-weight` > 0: `official` or `tiny`.
    #[arg(long, default_value = "official")]
    pub discriminator: String,
}

#[derive(Args, Debug)]
pub struct TrainFullArgs {
    #[command(flatten)]
    pub common: TrainCommonArgs,
    /// Steps to reach.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Discriminator widths: `official` (one scale, 32 → 512 channels, 4 blocks) or `tiny`.
    #[arg(long, default_value = "official")]
    pub discriminator: String,
    /// Initial discriminator weights (safetensors with the official `discs.…` keys); the official random
    /// initialisation without.
    #[arg(long)]
    pub discriminator_weights: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TrainWarpArgs {
    #[command(flatten)]
    pub common: TrainCommonArgs,
    /// Steps to reach.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
}

#[derive(Args, Debug)]
pub struct TrainMetaArgs {
    #[command(flatten)]
    pub common: TrainCommonArgs,
    /// Outer steps to reach.
    #[arg(long, default_value_t = 1000)]
    pub steps: u64,
    /// Identities per outer step.
    #[arg(long, default_value_t = 4)]
    pub tasks: usize,
    /// Inner Adam steps per identity (K).
    #[arg(long, default_value_t = metaportrait::train::reptile::DEFAULT_INNER_STEPS)]
    pub inner_steps: usize,
    /// Frames per support set.
    #[arg(long, default_value_t = 8)]
    pub support: usize,
}

/// What every training stage takes.
#[derive(Args, Debug)]
pub struct TrainCommonArgs {
    /// Dataset made by `prepare`.
    #[arg(long)]
    pub data: PathBuf,
    /// Generator architecture: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Initial weights (e.g. the base model); random initialisation without.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Run folder: checkpoints go here, and a run there is resumed.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub perceptual: Perceptual,
    /// Where burn trains: `cpu`, `cuda`, `cuda:N` (builds with `--features cuda`) or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
}

/// The dataset, initial model, VGG-19 and loss weights every stage starts from.
struct TrainSetup {
    dataset: metaportrait::train::dataset::Dataset,
    model: GeneratorModel,
    vgg: Option<metaportrait::train::vgg::Vgg19>,
    device: burn::tensor::Device,
}

impl TrainSetup {
    fn new(args: &TrainCommonArgs) -> Result<Self> {
        let dataset = metaportrait::train::dataset::Dataset::open(&args.data)?;
        let config = GeneratorConfig::resolve(&args.config)?;
        let model = match &args.weights {
            Some(path) => GeneratorModel::load(config, path).with_context(|| format!("loading {}", path.display()))?,
            None => GeneratorModel::random(config, metaportrait::model::generator::DEFAULT_INIT_SEED)?,
        };
        let vgg = perceptual_vgg(args.perceptual, None)?;
        let device = metaportrait::runtime::burn_device::exec_device(args.device)?;
        eprintln!(
            "training on {} identities ({} clips) into {}",
            dataset.identities.len(),
            dataset.identities.iter().map(|(_, c)| c.len()).sum::<usize>(),
            args.out.display()
        );
        Ok(Self { dataset, model, vgg, device })
    }

    /// The settings of a supervised stage (`warp`, `full`) on this setup.
    fn supervised<'a>(
        &'a self,
        args: &'a TrainCommonArgs,
        steps: u64,
        weights: &'a metaportrait::train::loss::LossWeights,
    ) -> metaportrait::train::supervised::SupervisedTraining<'a> {
        metaportrait::train::supervised::SupervisedTraining {
            dataset: &self.dataset,
            run_dir: &args.out,
            steps,
            adam: Default::default(),
            checkpoint_every: args.checkpoint_every,
            seed: args.seed,
            objective: metaportrait::train::step::Objective { weights, vgg: self.vgg.as_ref() },
            device: &self.device,
        }
    }

    fn bar(steps: u64) -> Result<ProgressBar> {
        let bar = ProgressBar::new(steps);
        bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] step {pos}/{len} {elapsed} ETA {eta}")?);
        Ok(bar)
    }
}

impl TrainWarpArgs {
    /// Trains (or resumes) the warping stage.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::train::supervised::train_warp;
        let setup = TrainSetup::new(&args.common)?;
        let weights = LossWeights::warp_stage(setup.vgg.is_some());
        let run = setup.supervised(&args.common, args.steps, &weights);
        let bar = TrainSetup::bar(args.steps)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let (_, state) = train_warp(setup.model.clone(), &run, &cancel, |log| {
            bar.set_position(log.step);
            bar.set_message(format!("warp · loss {:.4}", log.loss));
        })?;
        bar.finish_and_clear();
        eprintln!("warp training at step {} (checkpoints in {})", state.step, args.common.out.display());
        Ok(())
    }
}

impl TrainFullArgs {
    /// Trains (or resumes) the joint stage.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::train::discriminator::discriminator_adam_config;
        use metaportrait::train::discriminator::{self, DiscriminatorConfig};
        use metaportrait::train::supervised::{Discriminator, FullTraining, train_full};
        let setup = TrainSetup::new(&args.common)?;
        let config = DiscriminatorConfig::resolve(&args.discriminator)?;
        let image_size = setup.model.config.image_size;
        let weights = match &args.discriminator_weights {
            Some(path) => {
                let store =
                    WeightStore::load_safetensors(path).with_context(|| format!("loading {}", path.display()))?;
                store.validate(&discriminator::expected_entries(&config, image_size)?).with_context(|| {
                    format!("{} does not fit the `{}` discriminator", path.display(), args.discriminator)
                })?;
                store
            }
            None => discriminator::random_weights(&config, image_size, args.common.seed)?,
        };
        let loss_weights = LossWeights::generator(setup.vgg.is_some());
        let run = FullTraining {
            common: setup.supervised(&args.common, args.steps, &loss_weights),
            adversarial: Default::default(),
            warp_perceptual: LossWeights::default().perceptual,
            discriminator_adam: discriminator_adam_config(),
            reduce: &metaportrait::train::reduce::SingleReplica,
        };
        let bar = TrainSetup::bar(args.steps)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let disc = Discriminator { config, weights };
        let (_, _, state) = train_full(setup.model.clone(), disc, &run, &cancel, |log| {
            bar.set_position(log.step);
            if let Some(adv) = &log.adversarial {
                bar.set_message(format!(
                    "full · G {:.4} (gan {:.3}, fm {:.3}) · D {:.3}",
                    log.loss, adv.generator_gan, adv.feature_matching, adv.discriminator
                ));
            }
        })?;
        bar.finish_and_clear();
        eprintln!("joint training at step {} (checkpoints in {})", state.step, args.common.out.display());
        Ok(())
    }
}

impl TrainTsrArgs {
    /// Trains (or resumes) the temporal SR network.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::train::discriminator::{self, DiscriminatorConfig};
        use metaportrait::train::tsr::{TsrGan, TsrTraining, train_tsr, tsr_adam_config};
        let common = &args.common;
        let dataset = metaportrait::train::dataset::Dataset::open(&common.data)?;
        let config = TsrConfig::resolve(&common.config)?;
        let model = match &common.weights {
            Some(path) => TsrModel::load(config, path).with_context(|| format!("loading {}", path.display()))?,
            None => TsrModel::random(config, metaportrait::tsr::runner::DEFAULT_INIT_SEED)?,
        };
        let vgg = perceptual_vgg(common.perceptual, None)?;
        let device = metaportrait::runtime::burn_device::exec_device(common.device)?;
        if args.frames == 0 {
            bail!("--frames must be at least 1");
        }
        if !(args.gan_weight >= 0.0 && args.gan_weight.is_finite()) {
            bail!("--gan-weight must be a finite number ≥ 0");
        }
        let gan = if args.gan_weight > 0.0 {
            let config = DiscriminatorConfig::resolve(&args.discriminator)?;
            let weights = discriminator::random_weights(&config, model.config.out_size, common.seed)?;
            Some(TsrGan { config, weights, adam: metaportrait::train::adam::Adam::new(tsr_adam_config()) })
        } else {
            None
        };
        eprintln!(
            "TSR training on {} clips into {} ({})",
            dataset.identities.iter().map(|(_, c)| c.len()).sum::<usize>(),
            common.out.display(),
            if vgg.is_some() { "L1 + perceptual + style" } else { "L1 only: no VGG-19 weights" }
        );
        let with_lq = dataset
            .identities
            .iter()
            .flat_map(|(_, clips)| clips)
            .filter(|c| c.dir.join(metaportrait::train::tsr::LQ_DIR).is_dir())
            .count();
        eprintln!("inputs: generator outputs (lq/) for {with_lq} clips, 2×2-averaged crops for the others");
        let run = TsrTraining {
            dataset: &dataset,
            run_dir: &common.out,
            steps: args.steps,
            frames: args.frames,
            batch: args.batch.max(1),
            lr_period: args.lr_period,
            checkpoint_every: common.checkpoint_every,
            seed: common.seed,
            vgg: vgg.as_ref(),
            device: &device,
            gan_weight: args.gan_weight,
            reduce: &metaportrait::train::reduce::SingleReplica,
        };
        let bar = TrainSetup::bar(args.steps)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let (_, ema, state) = train_tsr(model, gan, &run, &cancel, |log| {
            bar.set_position(log.step);
            bar.set_message(format!("tsr · loss {:.4}", log.loss));
        })?;
        bar.finish_and_clear();
        let ema_path = common.out.join("ema.safetensors");
        ema.save_safetensors(&ema_path).with_context(|| format!("writing {}", ema_path.display()))?;
        eprintln!(
            "TSR training at step {} (checkpoints in {}; EMA weights for --tsr-weights: {})",
            state.step,
            common.out.display(),
            ema_path.display()
        );
        Ok(())
    }
}

impl TrainMetaArgs {
    /// Meta-trains (or resumes) with Reptile.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::train::meta::{MetaTraining, meta_train};
        let setup = TrainSetup::new(&args.common)?;
        let weights = LossWeights::generator(setup.vgg.is_some());
        let run = MetaTraining {
            dataset: &setup.dataset,
            run_dir: &args.common.out,
            outer_steps: args.steps,
            tasks_per_step: args.tasks.max(1),
            inner_steps: args.inner_steps.max(1),
            inner_adam: Default::default(),
            support_frames: args.support.max(1),
            checkpoint_every: args.common.checkpoint_every,
            seed: args.common.seed,
            objective: metaportrait::train::step::Objective { weights: &weights, vgg: setup.vgg.as_ref() },
            device: &setup.device,
            reduce: &metaportrait::train::reduce::SingleReplica,
        };
        let bar = TrainSetup::bar(args.steps)?;
        let cancel = std::sync::atomic::AtomicBool::new(false);
        let on_step = |log: &metaportrait::train::meta::StepLog| {
            bar.set_position(log.step);
            if let Some(meta) = &log.meta {
                bar.set_message(format!(
                    "meta · inner loss {:.4} → {:.4}",
                    meta.inner_loss_first, meta.inner_loss_last
                ));
            }
        };
        // An outer step is tasks × K inner steps: say where it is, so a long step does not look stuck.
        let on_inner = |p: &metaportrait::train::meta::InnerStepProgress| {
            bar.set_message(format!(
                "meta · step {} · task {}/{} · inner {}/{} · loss {:.4}",
                p.outer_step,
                p.task + 1,
                p.tasks,
                p.inner.step,
                p.inner.total,
                p.inner.loss.total
            ));
        };
        let (_, state) = meta_train(setup.model.clone(), &run, &cancel, on_step, on_inner)?;
        bar.finish_and_clear();
        eprintln!("meta-training at step {} (checkpoints in {})", state.step, args.common.out.display());
        Ok(())
    }
}
