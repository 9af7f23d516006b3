//! `tsr forward` and `tsr keys`: the temporal super-resolution network as files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use metaportrait::model::weights::WeightStore;
use metaportrait::tsr;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::{TsrModel, TsrRunner};

use super::common::{ExecArgs, print_listing, tsr_options};

#[derive(Subcommand, Debug)]
pub enum TsrCommand {
    /// Run the official forward on a clip `input.lq` (1, n, 3, h, w) and write `output` (1, n, 3, 2h, 2w).
    Forward(TsrForwardArgs),
    /// Print the full state dict the TSR network expects as a JSON object {key: [shape…]}.
    Keys {
        /// `official`, `tiny`, or a config JSON file (constructor arguments, bare or under `constructor`).
        #[arg(long, default_value = "official")]
        config: String,
    },
}

impl TsrCommand {
    /// Runs the subcommand.
    pub fn run(&self) -> Result<()> {
        match self {
            Self::Keys { config } => tsr_keys(config),
            Self::Forward(args) => args.run(),
        }
    }
}

#[derive(Args, Debug)]
pub struct TsrForwardArgs {
    /// `official`, `tiny`, or a config JSON file (constructor arguments, bare or under `constructor`).
    #[arg(long)]
    pub config: String,
    /// Weights (safetensors, official key names).
    #[arg(long)]
    pub weights: PathBuf,
    /// Input safetensors holding `input.lq` (1, n, 3, h, w) in [0, 1], h = w = out_size / 2 (or out_size).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output safetensors: `output` (1, n, 3, out_size, out_size).
    #[arg(long)]
    pub output: PathBuf,
    /// Frames per network call; by default the whole clip at once, as the official forward. 16 = the official test.
    #[arg(long)]
    pub chunk: Option<usize>,
    #[command(flatten)]
    pub exec: ExecArgs,
}

fn tsr_keys(config: &str) -> Result<()> {
    print_listing(tsr::runner::expected_entries(&TsrConfig::resolve(config)?)?)
}

impl TsrForwardArgs {
    /// Upsamples the clip and writes the output.
    pub fn run(&self) -> Result<()> {
        let args = self;
        let cfg = TsrConfig::resolve(&args.config)?;
        let model = TsrModel::load(cfg, &args.weights)?;
        let inputs = WeightStore::load_safetensors(&args.inputs)?;
        let lq = inputs
            .get(tsr::net::INPUT_LQ)
            .with_context(|| format!("{} lacks `{}`", args.inputs.display(), tsr::net::INPUT_LQ))?;
        let frames = lq.shape().get(1).copied().unwrap_or(0);
        let mut engine = TsrRunner::new(model, tsr_options(&args.exec))?;
        let started = Instant::now();
        let out = engine.run_clip(lq, args.chunk.unwrap_or(frames))?;
        tracing::info!(
            executor = engine.executor().name(),
            frames,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "tsr"
        );
        let mut store = WeightStore::new();
        store.insert(tsr::net::OUTPUT, out);
        store.save_safetensors(&args.output)?;
        eprintln!("wrote {} ({frames} frames)", args.output.display());
        Ok(())
    }
}
