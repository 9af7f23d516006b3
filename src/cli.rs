//! Command-line interface: clap definitions and the wiring from each subcommand to the library.
//!
//! Owns argument parsing, progress bars and printing; every computation lives in the library modules. Receives the
//! process arguments; emits files, JSON on stdout and human-readable progress on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::pipeline::engine::EngineIdentity;
use metaportrait::pipeline::render::RenderJob;

use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::ExecutorKind;
use metaportrait::model::generator::{DEFAULT_INIT_SEED, GeneratorModel};
use metaportrait::model::import;
use metaportrait::model::import::torch::{self as checkpoint, StateDictSelect};
use metaportrait::model::net::{self, GeneratorInputs};
use metaportrait::model::runner::{GeneratorRunner, RunnerOptions, Stage};
use metaportrait::model::weights::WeightStore;
use metaportrait::personalize::store::IdentityStore;
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
use metaportrait::tsr::runner::{TsrModel, TsrOptions, TsrRunner};

mod embedder;
mod identities_add;
mod reconstruct;

/// The bundled portrait (public domain, see assets/README.md).
const DEMO_PORTRAIT: &str = "assets/portrait.png";

#[derive(Parser, Debug)]
#[command(name = "metaportrait", version, about = "Identity-preserving talking-head generation (MetaPortrait)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and run the generator network.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Drive a portrait with a video or an image sequence and write an MP4 (one frame per driving frame).
    Render(RenderArgs),
    /// Render the bundled portrait, driven by a swaying virtual camera on it, into out/demo.mp4.
    Demo {
        /// Where to write the clip.
        #[arg(long, default_value = "out/demo.mp4")]
        output: PathBuf,
    },
    /// Open the desktop window and puppeteer a portrait from a webcam or a video file.
    Live(LiveArgs),
    /// Draw the generator's conditioning (landmark-line image, 58 keypoints) from landmarks.
    Condition(ConditionArgs),
    /// Detect faces and their dense landmarks (MediaPipe FaceMesh) in an image.
    Landmarks(LandmarksArgs),
    /// Inspect and run the temporal super-resolution network (256² → 512²).
    #[command(subcommand)]
    Tsr(TsrCommand),
    /// Convert an official PyTorch checkpoint (.pth/.pth.tar) into a safetensors weight file, safely.
    ImportCheckpoint(ImportArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage the identity library (in $METAPORTRAIT_HOME or the platform data directory).
    #[command(subcommand)]
    Identities(IdentitiesCommand),
    /// Fine-tune the base model on a short clip of one person and add the result as an identity.
    Personalize(PersonalizeArgs),
    /// Build a training dataset (face crops + cached landmarks) from videos or frame folders.
    Prepare(PrepareArgs),
    /// Train the generator.
    #[command(subcommand)]
    Train(TrainCommand),
    /// Run the official inference on the official preprocessed data (self-reconstruction, PSNR/SSIM per frame).
    Reconstruct(reconstruct::ReconstructArgs),
}

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
    pub embedder: embedder::EmbedderArgs,
}

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
    pub embedder: embedder::EmbedderArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perceptual {
    Auto,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// List identities (broken ones are listed with the reason and never loaded).
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete an identity (by id or display name).
    Remove { name: String },
    /// Write an identity to a single archive file.
    Export { name: String, file: PathBuf },
    /// Add the identity stored in an archive file made by `export`.
    Import { file: PathBuf },
    /// Add a portrait as an identity, with its identity vector from an embedder or from a `.npy` file.
    Add(identities_add::AddArgs),
}

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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// Zero-weights mesh warp of the portrait's landmark mesh.
    Preview,
    /// The MetaPortrait generator (needs --weights).
    Neural,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The portrait to animate (PNG or JPEG with one face).
    #[arg(long, required_unless_present = "identity", conflicts_with = "identity")]
    pub source: Option<PathBuf>,
    /// Animate an identity of the library instead of `--source` (the neural engine needs one with an embedding).
    #[arg(long)]
    pub identity: Option<String>,
    /// Driving video (MP4/H.264), a directory of frames, or one image.
    #[arg(long)]
    pub driving: PathBuf,
    /// Output MP4 (H.264); written as `*.partial.mp4` and renamed when complete.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub neural: NeuralArgs,
    /// Transfer the driver's motion relative to its first frame (keeps the portrait's face shape).
    #[arg(long)]
    pub relative: bool,
    /// Frame rate of an image-directory driving input.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f64,
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Upsample the output 256² → 512² with the temporal SR network (chunks of 16 frames, as the official test).
    #[arg(long, requires = "tsr_weights")]
    pub tsr: bool,
    #[command(flatten)]
    pub tsr_model: TsrModelArgs,
}

/// The engine choice and, for `neural`, the generator's files and device.
#[derive(Args, Debug)]
pub struct NeuralArgs {
    #[arg(long, value_enum, default_value = "preview")]
    pub engine: EngineChoice,
    /// Generator weights (safetensors) for `--engine neural`.
    #[arg(long, required_if_eq("engine", "neural"))]
    pub weights: Option<PathBuf>,
    /// Generator architecture for `--engine neural`: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub config: String,
    /// Device of the neural engine: `cpu`, `cuda[:N]` or `auto`.
    #[arg(long, default_value = "auto")]
    pub device: Device,
    #[command(flatten)]
    pub embedder: embedder::EmbedderArgs,
}

impl NeuralArgs {
    /// The generator and its weights file, with `--engine neural`.
    fn model(&self) -> Result<Option<(GeneratorModel, &std::path::Path)>> {
        if self.engine != EngineChoice::Neural {
            return Ok(None);
        }
        let weights = self.weights.as_deref().context("--engine neural needs --weights W.safetensors")?;
        let model = GeneratorModel::load(GeneratorConfig::resolve(&self.config)?, weights)
            .with_context(|| format!("loading {}", weights.display()))?;
        Ok(Some((model, weights)))
    }

    /// The MetaPortrait generator on ONNX Runtime on `--device`.
    fn engine(&self, model: GeneratorModel) -> Result<metaportrait::pipeline::engine::NeuralEngine> {
        let options = RunnerOptions { device: self.device, ..RunnerOptions::default() };
        Ok(metaportrait::pipeline::engine::NeuralEngine::new(model, options)?)
    }
}

/// The temporal SR network's files.
#[derive(Args, Debug)]
pub struct TsrModelArgs {
    /// Temporal SR architecture: `official`, `tiny`, or a config JSON file.
    #[arg(long, default_value = "official")]
    pub tsr_config: String,
    /// Temporal SR weights (safetensors; `import-checkpoint --model tsr` converts the official ones).
    #[arg(long)]
    pub tsr_weights: Option<PathBuf>,
}

impl TsrModelArgs {
    /// The network, when weights were given.
    fn load(&self) -> Result<Option<tsr::runner::TsrModel>> {
        let Some(weights) = &self.tsr_weights else { return Ok(None) };
        let model = tsr::runner::TsrModel::load(TsrConfig::resolve(&self.tsr_config)?, weights)
            .with_context(|| format!("loading {}", weights.display()))?;
        Ok(Some(model))
    }
}

#[derive(Args, Debug)]
pub struct LiveArgs {
    /// Webcam index (`/dev/video<N>`); the default input.
    #[arg(long, conflicts_with = "input")]
    pub camera: Option<u32>,
    /// Drive from a video file (MP4/H.264), a directory of frames or one image instead of a webcam.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Play `--input` once instead of looping it.
    #[arg(long, requires = "input")]
    pub once: bool,
    /// Where the preview engine draws: `auto` uses wgpu when an adapter exists, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub preview_device: metaportrait::pipeline::engine::PreviewDevice,
    #[command(flatten)]
    pub neural: NeuralArgs,
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Adam steps of "personalize from a clip" in the panel (with `--engine neural`).
    #[arg(long, default_value_t = metaportrait::train::reptile::DEFAULT_INNER_STEPS)]
    pub personalize_steps: usize,
    /// The panel's TSR toggle runs this network (one frame of look-ahead); without it, a bicubic upscale.
    #[command(flatten)]
    pub tsr_model: TsrModelArgs,
}

#[derive(Args, Debug)]
pub struct ConditionArgs {
    /// Landmarks normalised to the face crop: a `.npy` (N, 2|3) array (669 points: the official topology, as in the
    /// official example data; 478: MediaPipe), or the JSON of `landmarks --refine --json` (first face).
    pub landmarks: PathBuf,
    /// The official `dense_669_connectivity.tsv` (required for 669-point landmarks).
    #[arg(long)]
    pub connectivity: Option<PathBuf>,
    /// Where to write the landmark-line image (PNG, RGB).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the 58 role keypoints (in [-1, 1]) as JSON.
    #[arg(long)]
    pub keypoints: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub size: usize,
}

#[derive(Args, Debug)]
pub struct LandmarksArgs {
    /// A PNG or JPEG image.
    pub image: PathBuf,
    /// 478 points (irises refined by the attention mesh) instead of 468.
    #[arg(long)]
    pub refine: bool,
    /// Print JSON: {"width", "height", "faces": [{"score", "box": [x, y, w, h], "landmarks": [[x, y, z], …]}]}.
    #[arg(long)]
    pub json: bool,
    /// Directory with the face models and their SHA256SUMS (default: $METAPORTRAIT_MODELS or models/).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available, else the CPU with one log line).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

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

#[derive(Args, Debug, Clone)]
pub struct ExecArgs {
    /// `ort` (fast inference) or `burn` (differentiable).
    #[arg(long, default_value = "ort")]
    pub executor: ExecutorKind,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (falls back to the CPU with a log line).
    #[arg(long, default_value = "auto")]
    pub device: Device,
    /// Intra-op threads; 0 = all cores.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
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

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Model(ModelCommand::Keys { config }) => model_keys(&config),
        Command::Model(ModelCommand::Forward(args)) => model_forward(&args),
        Command::Landmarks(args) => landmarks(&args),
        Command::Condition(args) => condition(&args),
        Command::Render(args) => render(&args),
        Command::Demo { output } => demo(&output),
        Command::Live(args) => live(&args),
        Command::Bench(BenchCommand::Face(args)) => bench_face(&args),
        Command::Bench(BenchCommand::Preview(args)) => bench_preview(&args),
        Command::Tsr(TsrCommand::Keys { config }) => tsr_keys(&config),
        Command::Tsr(TsrCommand::Forward(args)) => tsr_forward(&args),
        Command::ImportCheckpoint(args) => import_checkpoint(&args),
        Command::Identities(cmd) => identities(cmd),
        Command::Personalize(args) => personalize(&args),
        Command::Prepare(args) => prepare(&args),
        Command::Train(TrainCommand::Meta(args)) => train_meta(&args),
        Command::Train(TrainCommand::Warp(args)) => train_warp(&args),
        Command::Train(TrainCommand::Full(args)) => train_full(&args),
        Command::Train(TrainCommand::Tsr(args)) => train_tsr(&args),
        Command::Bench(BenchCommand::Generator(args)) => bench_generator(&args),
        Command::Bench(BenchCommand::Step(args)) => bench_step(&args),
        Command::Bench(BenchCommand::Tsr(args)) => bench_tsr(&args),
        Command::Bench(BenchCommand::E2e(args)) => bench_e2e(&args),
        Command::Reconstruct(args) => reconstruct::run(&args),
    }
}

fn print_listing(entries: Vec<metaportrait::model::weights::ExpectedEntry>) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> =
        entries.into_iter().map(|e| (e.key, serde_json::json!(e.shape))).collect();
    println!("{}", serde_json::to_string_pretty(&map)?);
    Ok(())
}

fn model_keys(config: &str) -> Result<()> {
    print_listing(metaportrait::model::generator::expected_entries(&GeneratorConfig::resolve(config)?)?)
}

fn tsr_keys(config: &str) -> Result<()> {
    print_listing(tsr::runner::expected_entries(&TsrConfig::resolve(config)?)?)
}

fn tsr_options(exec: &ExecArgs) -> TsrOptions {
    TsrOptions { executor: exec.executor, device: exec.device, threads: exec.threads, taps: false }
}

fn tsr_forward(args: &TsrForwardArgs) -> Result<()> {
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

fn engine_options(exec: &ExecArgs, stage: Stage) -> RunnerOptions {
    RunnerOptions { executor: exec.executor, device: exec.device, threads: exec.threads, stage, taps: false }
}

fn model_forward(args: &ForwardArgs) -> Result<()> {
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
    tracing::info!(executor = engine.executor().name(), elapsed_ms = started.elapsed().as_millis() as u64, "forward");
    let mut store = WeightStore::new();
    for name in net::OUTPUT_NAMES {
        let t = outputs.get(name).with_context(|| format!("executor produced no `{name}`"))?;
        store.insert(name, t.clone());
    }
    store.save_safetensors(&args.output)?;
    eprintln!("wrote {} ({} tensors)", args.output.display(), store.len());
    Ok(())
}

fn import_checkpoint(args: &ImportArgs) -> Result<()> {
    let (expected, name) = match args.model {
        ImportModel::Generator => {
            let cfg = GeneratorConfig::resolve(&args.config)?;
            (metaportrait::model::generator::expected_entries(&cfg)?, cfg.name)
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
             on identity vectors from an unpublished face-recognition network: it runs as released on the official \
             preprocessed data (`metaportrait reconstruct --data DIR --weights {}`), not on live or rendered \
             MediaPipe landmarks",
            args.output.display()
        );
    }
    Ok(())
}

/// Synthetic inputs with the right shapes and value ranges.
fn synthetic_inputs(cfg: &GeneratorConfig) -> Result<BTreeMap<String, HostTensor>> {
    let mut rng = SplitMix64::new(DEFAULT_INIT_SEED);
    let mut out = BTreeMap::new();
    for (name, shape) in net::INPUT_NAMES.iter().zip(net::input_shapes(cfg)) {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.uniform() as f32).collect();
        out.insert((*name).to_owned(), HostTensor::new(shape, data)?);
    }
    Ok(out)
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

fn bench_generator(args: &BenchGeneratorArgs) -> Result<()> {
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let cfg = GeneratorConfig::resolve(&args.config)?;
    let model = match &args.weights {
        Some(path) => GeneratorModel::load(cfg.clone(), path)?,
        None => GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?,
    };
    let inputs = synthetic_inputs(&cfg)?;
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
            engine.device(),
            if engine.uses_device_buffers() { " with CUDA device buffers" } else { "" }
        );
        result.insert(key.to_owned(), serde_json::json!(med));
        result.insert("device".into(), serde_json::json!(engine.device().to_string()));
    }
    result.insert("config".into(), serde_json::json!(cfg.name));
    result.insert("executor".into(), serde_json::json!(args.exec.executor.name()));
    result.insert("iters".into(), serde_json::json!(args.iters));
    result.insert("threads".into(), serde_json::json!(args.exec.threads));
    println!("{}", serde_json::Value::Object(result));
    Ok(())
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

fn bench_step(args: &BenchStepArgs) -> Result<()> {
    use metaportrait::clip::sample::TrainSample;
    use metaportrait::train::loss::LossWeights;
    use metaportrait::train::step::Objective;
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let cfg = GeneratorConfig::resolve(&args.config)?;
    let mut model = GeneratorModel::random(cfg.clone(), DEFAULT_INIT_SEED)?;
    let host = synthetic_inputs(&cfg)?;
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

fn bench_tsr(args: &BenchTsrArgs) -> Result<()> {
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
            "{key}: {per_frame:.1} ms ({frames} frames per call, median of {}; setup {setup_s:.2} s)",
            args.iters
        );
        result.insert(key.to_owned(), serde_json::json!(per_frame));
    }
    result.insert("config".into(), serde_json::json!(cfg.name));
    result.insert("out_size".into(), serde_json::json!(cfg.out_size));
    result.insert("executor".into(), serde_json::json!(args.exec.executor.name()));
    result.insert("threads".into(), serde_json::json!(args.exec.threads));
    println!("{}", serde_json::Value::Object(result));
    Ok(())
}

/// Live frames through generator and streaming TSR: sequentially (as one engine thread would) and pipelined (the
/// generator's thread hands each prediction to the TSR's through a one-slot channel). Random weights, one fixed set
/// of inputs; speed does not depend on values.
fn bench_e2e(args: &BenchE2eArgs) -> Result<()> {
    const WARM_UP_FRAMES: usize = 3;
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
    let mut upscaler =
        TsrRunner::new(TsrModel::random(tsr_cfg.clone(), tsr::runner::DEFAULT_INIT_SEED)?, tsr_options(&args.exec))?;
    let inputs = synthetic_inputs(&cfg)?;
    let window = tsr::stream::DEFAULT_HISTORY + 2;
    for frames in [window - 1, window] {
        upscaler.prepare(frames, cfg.image_size)?;
    }
    let frame_of = |out: BTreeMap<String, HostTensor>| -> Result<HostTensor> {
        let prediction = out.get(net::OUTPUT_PREDICTION).context("the generator returned no prediction")?;
        Ok(HostTensor::new(prediction.shape()[1..].to_vec(), prediction.data().to_vec())?)
    };
    let total = WARM_UP_FRAMES + args.frames;

    let mut stream = tsr::stream::TsrStream::new(tsr::stream::DEFAULT_HISTORY);
    let mut started = Instant::now();
    for k in 0..total {
        if k == WARM_UP_FRAMES {
            started = Instant::now();
        }
        let frame = frame_of(generator.run(&inputs)?)?;
        stream.push(&mut upscaler, frame, k)?;
    }
    let sequential_ms = started.elapsed().as_secs_f64() * 1e3 / args.frames as f64;

    let mut stream = tsr::stream::TsrStream::new(tsr::stream::DEFAULT_HISTORY);
    let pipelined_ms = std::thread::scope(|scope| -> Result<f64> {
        let (tx, rx) = crossbeam::channel::bounded::<HostTensor>(1);
        let producer = scope.spawn(|| -> Result<()> {
            let tx = tx;
            for _ in 0..total {
                let frame = frame_of(generator.run(&inputs)?)?;
                if tx.send(frame).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut started = Instant::now();
        for k in 0..total {
            let frame = rx.recv().context("the generator thread stopped")?;
            if k == WARM_UP_FRAMES {
                started = Instant::now();
            }
            stream.push(&mut upscaler, frame, k)?;
        }
        let ms = started.elapsed().as_secs_f64() * 1e3 / args.frames as f64;
        producer.join().map_err(|_| anyhow::anyhow!("the generator thread panicked"))??;
        Ok(ms)
    })?;
    let device = generator.device();
    eprintln!(
        "{}² end to end on {device}: sequential {sequential_ms:.1} ms/frame ({:.1} fps), pipelined {pipelined_ms:.1} \
         ms/frame ({:.1} fps)",
        tsr_cfg.out_size,
        1e3 / sequential_ms,
        1e3 / pipelined_ms
    );
    let result = serde_json::json!({
        "config": cfg.name, "tsr_config": tsr_cfg.name, "out_size": tsr_cfg.out_size, "device": device.to_string(),
        "frames": args.frames, "sequential_ms_per_frame": sequential_ms, "pipelined_ms_per_frame": pipelined_ms,
        "sequential_fps": 1e3 / sequential_ms, "pipelined_fps": 1e3 / pipelined_ms,
    });
    println!("{result}");
    Ok(())
}

fn identity_store() -> Result<IdentityStore> {
    let home = metaportrait::home::data_home()?;
    Ok(IdentityStore::open(&metaportrait::home::identities_dir(&home)?)?)
}

/// Resolves a user-given name to an id: an exact id, else a unique display-name match.
fn resolve_identity(store: &IdentityStore, name: &str) -> Result<String> {
    let list = store.list()?;
    if list.iter().any(|e| e.id == name) {
        return Ok(name.to_owned());
    }
    let matches: Vec<&str> =
        list.iter().filter(|e| e.meta.as_ref().is_ok_and(|m| m.name == name)).map(|e| e.id.as_str()).collect();
    match matches.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => bail!("no identity named `{name}` (see `metaportrait identities list`)"),
        many => bail!("`{name}` is ambiguous: ids {}", many.join(", ")),
    }
}

fn identities(cmd: IdentitiesCommand) -> Result<()> {
    let store = identity_store()?;
    match cmd {
        IdentitiesCommand::List { json } => {
            let list = store.list()?;
            if json {
                let rows: Vec<serde_json::Value> = list
                    .iter()
                    .map(|e| match &e.meta {
                        Ok(m) => serde_json::json!({
                            "id": e.id, "name": m.name, "ok": true, "created_unix_s": m.created_unix_s,
                            "personalized": m.personalization.is_some(),
                            "embedder": m.embedder.as_deref().unwrap_or(metaportrait::face::embed::DLIB_EMBEDDER_TAG),
                        }),
                        Err(err) => serde_json::json!({"id": e.id, "ok": false, "error": err.to_string()}),
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if list.is_empty() {
                eprintln!("no identities in {}", store.root().display());
            } else {
                for e in &list {
                    match &e.meta {
                        Ok(m) => {
                            let kind = if m.personalization.is_some() { "personalized" } else { "portrait" };
                            let embedder =
                                m.embedder.as_deref().unwrap_or(metaportrait::face::embed::DLIB_EMBEDDER_TAG);
                            println!("{:<24} {:<32} {kind:<12} {embedder}", e.id, m.name);
                        }
                        Err(err) => println!("{:<24} BROKEN: {err}", e.id),
                    }
                }
            }
        }
        IdentitiesCommand::Remove { name } => {
            let id = resolve_identity(&store, &name)?;
            store.remove(&id)?;
            eprintln!("removed `{id}`");
        }
        IdentitiesCommand::Export { name, file } => {
            let id = resolve_identity(&store, &name)?;
            store.export(&id, &file)?;
            eprintln!("exported `{id}` to {}", file.display());
        }
        IdentitiesCommand::Import { file } => {
            let id = store.import(&file).with_context(|| format!("importing {}", file.display()))?;
            eprintln!("imported as `{id}`");
        }
        IdentitiesCommand::Add(args) => identities_add::run(&store, &args)?,
    }
    Ok(())
}

fn face_mesher(models: Option<&PathBuf>) -> Result<metaportrait::face::FaceMesher> {
    face_mesher_on(models, Device::Cpu)
}

fn face_mesher_on(models: Option<&PathBuf>, device: Device) -> Result<metaportrait::face::FaceMesher> {
    use metaportrait::face::{FaceMesher, FaceMesherOptions, FaceModelPaths};
    let dir = models.cloned().unwrap_or_else(metaportrait::face::default_models_dir);
    let mut options = FaceMesherOptions::default();
    options.session.device = device;
    Ok(FaceMesher::new(&FaceModelPaths::in_dir(&dir), options)?)
}

fn landmarks(args: &LandmarksArgs) -> Result<()> {
    let image = metaportrait::face::load_image(&args.image)?;
    let mut mesher = face_mesher_on(args.models.as_ref(), args.device)?;
    let faces = mesher.detect_landmarks(&image, args.refine)?;
    if args.json {
        let faces: Vec<serde_json::Value> = faces
            .iter()
            .map(|f| serde_json::json!({"score": f.score, "box": f.bbox_xywh(), "landmarks": f.landmarks.points}))
            .collect();
        println!("{}", serde_json::json!({"width": image.width(), "height": image.height(), "faces": faces}));
    } else if faces.is_empty() {
        println!("{}: no face", args.image.display());
    } else {
        for (i, f) in faces.iter().enumerate() {
            let [x, y, w, h] = f.bbox_xywh();
            let n = f.landmarks.points.len();
            println!("face {i}: score {:.3}, box ({x:.1}, {y:.1}, {w:.1}×{h:.1}) px, {n} landmarks", f.score);
        }
    }
    Ok(())
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

fn bench_face(args: &BenchFaceArgs) -> Result<()> {
    use metaportrait::face::{FaceTracker, TrackerOptions};
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let path = args.image.clone().unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEMO_PORTRAIT));
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

fn bench_preview(args: &BenchPreviewArgs) -> Result<()> {
    use metaportrait::model::preview::MeshWarp;
    use metaportrait::model::preview::gpu::{GpuContext, GpuMeshWarp};
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEMO_PORTRAIT);
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

fn open_driving(
    path: &std::path::Path,
    fps: f64,
) -> Result<(Box<dyn metaportrait::capture::FrameSource>, Option<u64>)> {
    use metaportrait::capture::{ImageSequenceSource, StillImageSource, StillRepeat, VideoFileSource};
    if path.is_dir() {
        let src = ImageSequenceSource::open(path, fps)?;
        let n = src.files().len() as u64;
        return Ok((Box::new(src), Some(n)));
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
        return Ok((Box::new(StillImageSource::open(path, StillRepeat::Once)?), Some(1)));
    }
    let src = VideoFileSource::open(path)?;
    let n = src.sample_count() as u64;
    Ok((Box::new(src), Some(n)))
}

/// The identity to drive: from the library (`--identity`) or prepared from a portrait file.
fn render_identity(
    mesher: &mut metaportrait::face::FaceMesher,
    source: Option<&std::path::Path>,
    identity: Option<&str>,
    with_embedding: bool,
    embedder: &embedder::EmbedderArgs,
) -> Result<EngineIdentity> {
    if let Some(name) = identity {
        let store = identity_store()?;
        let id = resolve_identity(&store, name)?;
        let loaded = store.load(&id)?;
        let landmarks = match loaded.landmarks.shape() {
            [_, 3] => loaded.landmarks.data().chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            shape => bail!("identity `{id}` has landmarks of shape {shape:?}; expected [n, 3]"),
        };
        return Ok(EngineIdentity {
            portrait: loaded.portrait,
            landmarks,
            id_vector: loaded.id_vector,
            weights_delta: loaded.weights_delta,
            embedder: loaded.meta.embedder,
        });
    }
    let path = source.context("--source or --identity is required")?;
    let portrait = metaportrait::face::load_image(path)?;
    let prepared = metaportrait::pipeline::render::prepare_portrait(mesher, &portrait, path)?;
    let (id_vector, tag) = if with_embedding {
        let mut embedder = embedder.open()?;
        (Some(embedder.embed(&portrait, &prepared.frame_landmarks)?), Some(embedder.tag().to_owned()))
    } else {
        (None, None)
    };
    Ok(EngineIdentity { id_vector, embedder: tag, ..EngineIdentity::portrait_only(prepared.crop, prepared.landmarks) })
}

/// Where `scripts/provision-id-model.sh` puts the VGG-19 weights.
fn default_vgg_path() -> PathBuf {
    metaportrait::face::embed::default_id_model_path().with_file_name("vgg19_features_torchvision_norm.safetensors")
}

fn personalize(args: &PersonalizeArgs) -> Result<()> {
    use metaportrait::clip::frames::prepare_clip;
    use metaportrait::personalize::job::{PersonalizeJob, PersonalizeProgress, personalize};
    if args.steps == 0 || args.frames < metaportrait::clip::frames::MIN_FRAMES {
        bail!("--steps must be at least 1 and --frames at least {}", metaportrait::clip::frames::MIN_FRAMES);
    }
    let store = identity_store()?;
    let config = GeneratorConfig::resolve(&args.config)?;
    let base =
        GeneratorModel::load(config, &args.weights).with_context(|| format!("loading {}", args.weights.display()))?;
    let base_sha256 = metaportrait::checksum::sha256_file(&args.weights)
        .with_context(|| format!("reading {}", args.weights.display()))?;
    let vgg = perceptual_vgg(args.perceptual, args.vgg.as_ref())?;
    let mut embedder = args.embedder.open()?;
    let (mut clip_source, total) = open_driving(&args.clip, metaportrait::pipeline::live::IMAGE_DIR_FPS)
        .with_context(|| format!("opening {}", args.clip.display()))?;
    let mut mesher = face_mesher(args.models.as_ref())?;
    let bar = ProgressBar::new(total.unwrap_or(0));
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} frames {elapsed}")?);
    bar.set_message("reading the clip");
    let clip = prepare_clip(&mut mesher, clip_source.as_mut(), total, args.frames, |n| bar.set_position(n as u64))
        .with_context(|| format!("preparing {}", args.clip.display()))?;
    bar.finish_and_clear();
    let id_vector = embedder.embed(&clip.source_picture, &clip.source_picture_landmarks)?;
    eprintln!(
        "{} frames with a face ({} without), source frame {}, {} held out",
        clip.frames.len(),
        clip.frames_without_face,
        clip.frames[clip.source].index,
        clip.holdout.len()
    );
    let device = metaportrait::runtime::burn_device::exec_device(args.device)?;
    let job = PersonalizeJob {
        name: args.name.clone(),
        steps: args.steps,
        adam: metaportrait::train::adam::AdamConfig::default(),
        vgg: vgg.as_ref(),
        device: &device,
        base_sha256: Some(base_sha256),
        embedder: embedder.tag().to_owned(),
    };
    let bar = ProgressBar::new(clip.holdout.len() as u64);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed} ETA {eta}")?);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let mut phase = None;
    let (identity, report) = personalize(&base, &clip, id_vector, &job, &cancel, |p| {
        // A new phase restarts the bar, so its elapsed time and ETA are the phase's own.
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

/// The VGG-19 of `--perceptual auto` (the provisioned weights, when present).
fn perceptual_vgg(choice: Perceptual, explicit: Option<&PathBuf>) -> Result<Option<metaportrait::train::vgg::Vgg19>> {
    use metaportrait::train::vgg::Vgg19;
    let path = match (choice, explicit) {
        (Perceptual::Off, _) => return Ok(None),
        (Perceptual::Auto, Some(path)) => path.clone(),
        (Perceptual::Auto, None) => {
            let path = default_vgg_path();
            if !path.is_file() {
                eprintln!("no VGG-19 weights at {}: training without the perceptual loss", path.display());
                return Ok(None);
            }
            path
        }
    };
    Ok(Some(Vgg19::load(&path).with_context(|| format!("loading {}", path.display()))?))
}

fn prepare(args: &PrepareArgs) -> Result<()> {
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
            let (mut source, total) = open_driving(clip_path, metaportrait::pipeline::live::IMAGE_DIR_FPS)?;
            // Without a frame count the sampler keeps every frame until it has enough.
            let spread_over = if args.consecutive { None } else { total };
            let clip = prepare_clip_at(&mut mesher, source.as_mut(), spread_over, args.frames, args.crop_size, |_| {})?;
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

fn train_warp(args: &TrainWarpArgs) -> Result<()> {
    use metaportrait::train::loss::LossWeights;
    use metaportrait::train::supervised::train_warp;
    let setup = TrainSetup::new(&args.common)?;
    // The official warping stage: perceptual loss only (L1 stands in without VGG weights).
    let weights = if setup.vgg.is_some() {
        LossWeights { l1: 0.0, eye: 0.0, mouth: 0.0, ..LossWeights::default() }
    } else {
        LossWeights { l1: 1.0, eye: 0.0, mouth: 0.0, perceptual: [0.0; 5] }
    };
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

fn train_full(args: &TrainFullArgs) -> Result<()> {
    use metaportrait::train::discriminator::discriminator_adam_config;
    use metaportrait::train::discriminator::{self, DiscriminatorConfig};
    use metaportrait::train::supervised::{Discriminator, FullTraining, train_full};
    let setup = TrainSetup::new(&args.common)?;
    let config = DiscriminatorConfig::resolve(&args.discriminator)?;
    let image_size = setup.model.config.image_size;
    let weights = match &args.discriminator_weights {
        Some(path) => {
            let store = WeightStore::load_safetensors(path).with_context(|| format!("loading {}", path.display()))?;
            store.validate(&discriminator::expected_entries(&config, image_size)?).with_context(|| {
                format!("{} does not fit the `{}` discriminator", path.display(), args.discriminator)
            })?;
            store
        }
        None => discriminator::random_weights(&config, image_size, args.common.seed)?,
    };
    let loss_weights = if setup.vgg.is_some() {
        metaportrait::train::loss::LossWeights::default()
    } else {
        metaportrait::train::loss::LossWeights { perceptual: [0.0; 5], ..Default::default() }
    };
    let run = FullTraining {
        common: setup.supervised(&args.common, args.steps, &loss_weights),
        adversarial: Default::default(),
        warp_perceptual: metaportrait::train::loss::LossWeights::default().perceptual,
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

fn train_tsr(args: &TrainTsrArgs) -> Result<()> {
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

fn train_meta(args: &TrainMetaArgs) -> Result<()> {
    use metaportrait::train::meta::{MetaTraining, meta_train};
    let setup = TrainSetup::new(&args.common)?;
    let weights = if setup.vgg.is_some() {
        metaportrait::train::loss::LossWeights::default()
    } else {
        metaportrait::train::loss::LossWeights { perceptual: [0.0; 5], ..Default::default() }
    };
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
            bar.set_message(format!("meta · inner loss {:.4} → {:.4}", meta.inner_loss_first, meta.inner_loss_last));
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

fn render(args: &RenderArgs) -> Result<()> {
    use metaportrait::face::motion::MotionMode;
    use metaportrait::pipeline::engine::{LiveEngine, PreviewEngine};
    let started = Instant::now();
    let mut mesher = face_mesher(args.models.as_ref())?;
    let neural = args.neural.engine == EngineChoice::Neural;
    let identity =
        render_identity(&mut mesher, args.source.as_deref(), args.identity.as_deref(), neural, &args.neural.embedder)?;
    let mut engine: Box<dyn LiveEngine> = match args.neural.model()? {
        None => Box::new(PreviewEngine::new()),
        Some((model, _)) => {
            if identity.id_vector.is_none() {
                bail!(
                    "--engine neural needs an identity embedding and this library identity has none (it was added \
                     before the identity-embedding network was installed); add the portrait again, or use \
                     --engine preview"
                );
            }
            Box::new(args.neural.engine(model)?)
        }
    };
    let engine_name = engine.name();
    let (mut driving, total) =
        open_driving(&args.driving, args.fps).with_context(|| format!("opening {}", args.driving.display()))?;
    let motion = if args.relative { MotionMode::Relative } else { MotionMode::Absolute };
    let mut tsr = match (args.tsr, args.tsr_model.load()?) {
        (true, Some(model)) => {
            let options = tsr::runner::TsrOptions { device: args.neural.device, ..Default::default() };
            Some(tsr::runner::TsrRunner::new(model, options)?)
        }
        _ => None,
    };
    let job = RenderJob { motion, output: &args.output, recorder: Default::default(), tsr: tsr.as_mut() };
    let summary =
        render_with_progress(&mut mesher, &identity, engine.as_mut(), driving.as_mut(), total.unwrap_or(0), job)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "rendered {} frames ({} without a driving face) to {} in {secs:.1} s ({:.1} fps, engine {engine_name})",
        summary.frames,
        summary.frames_without_face,
        summary.recording.path.as_deref().unwrap_or(&args.output).display(),
        summary.frames as f64 / secs.max(1e-9),
    );
    Ok(())
}

fn live(args: &LiveArgs) -> Result<()> {
    use metaportrait::pipeline::live::{LiveConfig, LiveInput, start};
    use metaportrait::pipeline::settings::UiSettings;
    let home = metaportrait::home::data_home()?;
    let settings_path = metaportrait::home::settings_path(&home);
    let settings = UiSettings::load(&settings_path);
    let input = match &args.input {
        Some(path) => LiveInput::File { path: path.clone(), looped: !args.once },
        None => LiveInput::Camera(args.camera.unwrap_or(0)),
    };
    let models_dir = args.models.clone().unwrap_or_else(metaportrait::face::default_models_dir);
    let id_model = args.neural.embedder.path();
    let (engine, personalize): (Box<dyn metaportrait::pipeline::engine::LiveEngine>, _) = match args.neural.model()? {
        Some((model, weights)) => {
            let vgg = Some(default_vgg_path()).filter(|p| p.is_file());
            let base = metaportrait::pipeline::personalizer::PersonalizeBase {
                model: std::sync::Arc::new(model.clone()),
                weights_sha256: metaportrait::checksum::sha256_file(weights)
                    .with_context(|| format!("reading {}", weights.display()))?,
                models_dir: models_dir.clone(),
                id_model: id_model.clone(),
                vgg,
                steps: args.personalize_steps.max(1),
            };
            (Box::new(args.neural.engine(model)?), Some(base))
        }
        None => {
            tracing::info!("{}", metaportrait::pipeline::engine::NEURAL_WEIGHTS_HINT);
            (metaportrait::pipeline::engine::preview_engine(args.preview_device)?, None)
        }
    };
    let config = LiveConfig {
        input,
        models_dir,
        home: home.clone(),
        default_portrait: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEMO_PORTRAIT)),
        id_model,
        recorder: Default::default(),
        personalize,
        tsr: args.tsr_model.load()?,
        tsr_device: args.neural.device,
    };
    let (pipeline, inputs) = start(config, engine, settings)?;
    let result = metaportrait::app::run_window(inputs);
    pipeline.shutdown();
    let settings = result?;
    settings.save(&settings_path).with_context(|| format!("saving settings to {}", settings_path.display()))?;
    tracing::info!(path = %settings_path.display(), "settings saved");
    Ok(())
}

fn demo(output: &std::path::Path) -> Result<()> {
    use metaportrait::face::motion::MotionMode;
    use metaportrait::pipeline::demo::{DEMO_FRAMES, SwaySource};
    use metaportrait::pipeline::render::prepare_portrait;
    let started = Instant::now();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEMO_PORTRAIT);
    let portrait = metaportrait::face::load_image(&path)?;
    let mut mesher = face_mesher(None)?;
    let face =
        mesher.detect_landmarks(&portrait, false)?.into_iter().next().context("no face in the bundled portrait")?;
    let [x, y, w, h] = face.bbox_xywh();
    let prepared = prepare_portrait(&mut mesher, &portrait, &path)?;
    let mut driving = SwaySource::new(portrait, [x + w / 2.0, y + h / 2.0], DEMO_FRAMES);
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let identity = EngineIdentity::portrait_only(prepared.crop, prepared.landmarks);
    let mut engine = metaportrait::pipeline::engine::PreviewEngine::new();
    let job = RenderJob { motion: MotionMode::Relative, output, recorder: Default::default(), tsr: None };
    let summary = render_with_progress(&mut mesher, &identity, &mut engine, &mut driving, DEMO_FRAMES, job)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "demo: {} frames of the bundled portrait driven by a swaying virtual camera, engine preview, written to {} \
         in {secs:.1} s",
        summary.frames,
        summary.recording.path.as_deref().unwrap_or(output).display()
    );
    Ok(())
}

fn condition(args: &ConditionArgs) -> Result<()> {
    use metaportrait::face::condition::Conditioner;
    use metaportrait::face::topology::{MEDIAPIPE_POINTS, OFFICIAL_POINTS, Topology};
    let is_json = args.landmarks.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let points: Vec<[f32; 2]> = if is_json {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&args.landmarks).with_context(|| format!("reading {}", args.landmarks.display()))?,
        )
        .with_context(|| format!("{} is not JSON", args.landmarks.display()))?;
        let (w, h) = (v["width"].as_f64().unwrap_or(0.0), v["height"].as_f64().unwrap_or(0.0));
        let face = v["faces"].get(0).with_context(|| format!("{} has no face", args.landmarks.display()))?;
        if w <= 0.0 || h <= 0.0 {
            bail!("{}: width/height missing", args.landmarks.display());
        }
        let pts = face["landmarks"].as_array().context("no landmarks array")?;
        pts.iter()
            .map(|p| Some([(p.get(0)?.as_f64()? / w) as f32, (p.get(1)?.as_f64()? / h) as f32]))
            .collect::<Option<Vec<_>>>()
            .context("landmarks must be [x, y, z] numbers")?
    } else {
        metaportrait::face::npy::read_points(&args.landmarks)?
    };
    let topology = match points.len() {
        OFFICIAL_POINTS => {
            let tsv = args
                .connectivity
                .as_ref()
                .context("669-point landmarks need --connectivity dense_669_connectivity.tsv")?;
            Topology::official(tsv)?
        }
        MEDIAPIPE_POINTS => Topology::mediapipe(),
        n => bail!("{n} landmarks: expected {OFFICIAL_POINTS} (official) or {MEDIAPIPE_POINTS} (MediaPipe, refined)"),
    };
    let mut conditioner = Conditioner::new(topology, args.size)?;
    let keypoints = conditioner.keypoints(&points)?;
    let canvas = conditioner.draw(&points)?;
    let image = image::RgbImage::from_raw(canvas.width() as u32, canvas.height() as u32, canvas.as_bytes().to_vec())
        .context("canvas size")?;
    let mut png = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    metaportrait::atomic_file::write_atomic(&args.output, &png)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(path) = &args.keypoints {
        let json = serde_json::json!({ "topology": conditioner.topology().name, "keypoints": keypoints.to_vec() });
        metaportrait::atomic_file::write_atomic(path, json.to_string().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote {} ({} topology, {} edges)",
        args.output.display(),
        conditioner.topology().name,
        conditioner.topology().edges.len()
    );
    Ok(())
}

/// Offline render behind a progress bar (`render`, `demo`).
fn render_with_progress(
    mesher: &mut metaportrait::face::FaceMesher,
    identity: &EngineIdentity,
    engine: &mut dyn metaportrait::pipeline::engine::LiveEngine,
    driving: &mut dyn metaportrait::capture::FrameSource,
    total_frames: u64,
    job: RenderJob<'_>,
) -> Result<metaportrait::pipeline::render::RenderSummary> {
    use metaportrait::pipeline::render::render_clip;
    let bar = ProgressBar::new(total_frames);
    bar.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} frames {elapsed} ETA {eta}")?);
    bar.set_message(format!("render ({})", engine.name()));
    let summary = render_clip(mesher, identity, engine, driving, job, |n| bar.set_position(n))?;
    bar.finish_and_clear();
    Ok(summary)
}
