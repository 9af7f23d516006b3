//! `model forward`, `model keys` and `import-checkpoint`: the generator network as files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::{GeneratorModel, expected_entries};
use metaportrait::model::import;
use metaportrait::model::import::torch::{self as checkpoint, StateDictSelect};
use metaportrait::model::net;
use metaportrait::model::runner::{GeneratorRunner, Stage};
use metaportrait::model::weights::WeightStore;
use metaportrait::tensor::HostTensor;
use metaportrait::tsr;
use metaportrait::tsr::config::TsrConfig;

use super::common::{ExecArgs, engine_options, print_listing};

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Run warp + refine on named input tensors and write the named outputs.
    Forward(ForwardArgs),
    /// Print the full state dict the model expects as a JSON object {key: [shape…]}.
    Keys {
        /// `official`, `tiny`, or a config JSON file.
        #[arg(long, default_value = "official")]
        config: String,
    },
}

impl ModelCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Keys { config } => model_keys(config),
            Self::Forward(args) => args.run(),
        }
    }
}

#[derive(Args, Debug)]
pub struct ForwardArgs {
    /// `official`, `tiny`, or a config JSON file.
    #[arg(long)]
    pub config: String,
    /// Weights (safetensors, official key names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Input tensors (safetensors): input.source, input.source_line, input.driving_line, input.mouth_line,
    /// input.driving_ldmk, input.src_id.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output safetensors: warp.deformation, warp.flow, warp.occlusion_map, warp.deformed, refine.prediction.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub exec: ExecArgs,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The PyTorch checkpoint (zip format, as saved by torch ≥ 1.6).
    pub checkpoint: PathBuf,
    /// Where to write the safetensors weights.
    pub output: PathBuf,
    /// Architecture to validate against: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Which state dict inside the checkpoint (default: `generator`, then `params_ema`, `params`, …).
    #[arg(long)]
    pub key: Option<String>,
    /// Which network the checkpoint holds: `generator` (ckpt_base.pth.tar) or `tsr` (temporal_gfpgan.pth).
    #[arg(long, value_enum, default_value = "generator")]
    pub model: ImportModel,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportModel {
    Generator,
    Tsr,
}

fn model_keys(config: &str) -> Result<()> {
    print_listing(expected_entries(&GeneratorConfig::resolve(config)?)?)
}

impl ForwardArgs {
    /// Runs one frame and writes the outputs.
    pub fn run(&self) -> Result<()> {
        let args = self;
        let cfg = GeneratorConfig::resolve(&args.config)?;
        let model = GeneratorModel::load(cfg, &args.weights)?;
        let inputs = WeightStore::load_safetensors(&args.inputs)?;
        let missing: Vec<&str> = net::INPUT_NAMES.iter().copied().filter(|n| inputs.get(n).is_none()).collect();
        if !missing.is_empty() {
            bail!("{} lacks input tensor(s): {}", args.inputs.display(), missing.join(", "));
        }
        let input_map: BTreeMap<String, HostTensor> = inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut engine = GeneratorRunner::new(&model, &engine_options(&args.exec, Stage::Full))?;
        let started = Instant::now();
        let outputs = engine.run(&input_map)?;
        tracing::info!(
            executor = engine.executor().name(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "forward"
        );
        let mut store = WeightStore::new();
        for name in net::OUTPUT_NAMES {
            let t = outputs.get(name).with_context(|| format!("executor produced no `{name}`"))?;
            store.insert(name, t.clone());
        }
        store.save_safetensors(&args.output)?;
        eprintln!("wrote {} ({} tensors)", args.output.display(), store.len());
        Ok(())
    }
}

impl ImportArgs {
    /// Converts the checkpoint and writes the weights.
    pub fn run(&self) -> Result<()> {
        let args = self;
        let (expected, name) = match args.model {
            ImportModel::Generator => {
                let cfg = GeneratorConfig::resolve(&args.config)?;
                (expected_entries(&cfg)?, cfg.name)
            }
            ImportModel::Tsr => {
                let cfg = TsrConfig::resolve(&args.config)?;
                (tsr::runner::expected_entries(&cfg)?, cfg.name)
            }
        };
        let select = match &args.key {
            Some(k) => StateDictSelect::Key(k.clone()),
            None => StateDictSelect::Auto,
        };
        let tensors = checkpoint::read_torch_checkpoint(&args.checkpoint, &select)
            .with_context(|| format!("reading {}", args.checkpoint.display()))?;
        let store = import::state_dict_to_store(tensors, &expected)
            .with_context(|| format!("{} does not fit the `{name}` config", args.checkpoint.display()))?;
        store.save_safetensors(&args.output)?;
        eprintln!("wrote {} ({} tensors, config `{name}`)", args.output.display(), store.len());
        if args.model == ImportModel::Generator && args.config == "official" {
            eprintln!(
                "note: the official generator was trained on 669-point landmarks from a tracker that is not public and \
                 on identity vectors from an unpublished face-recognition network: it runs as released on the \
                 official preprocessed data (`metaportrait reconstruct --data DIR --weights {}`), not on live or \
                 rendered MediaPipe landmarks",
                args.output.display()
            );
        }
        Ok(())
    }
}
