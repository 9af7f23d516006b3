//! What several commands share: the engine and executor flags, the temporal SR network's files, the face models,
//! the identity library, the VGG-19 of the perceptual loss, and the offline render behind a progress bar.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::exec::ExecutorKind;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::runner::{RunnerOptions, Stage};
use metaportrait::personalize::store::IdentityStore;
use metaportrait::pipeline::engine::EngineIdentity;
use metaportrait::pipeline::render::RenderJob;
use metaportrait::runtime::{Device, Precision};
use metaportrait::tsr;
use metaportrait::tsr::config::TsrConfig;
use metaportrait::tsr::runner::TsrOptions;

/// The bundled portrait (public domain, see assets/README.md).
pub(crate) const DEMO_PORTRAIT: &str = "assets/portrait.png";

/// The bundled portrait's path in the source tree.
pub(crate) fn demo_portrait() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(DEMO_PORTRAIT)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perceptual {
    Auto,
    Off,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// Zero-weights mesh warp of the portrait's landmark mesh.
    Preview,
    /// The MetaPortrait generator (needs --weights).
    Neural,
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
    /// Arithmetic of the neural engine and the TSR network: `fp32`, `tf32` or `fp16` (CUDA).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
    #[command(flatten)]
    pub embedder: super::embedder::EmbedderArgs,
}

impl NeuralArgs {
    /// The generator and its weights file, with `--engine neural`.
    pub(crate) fn model(&self) -> Result<Option<(GeneratorModel, &std::path::Path)>> {
        if self.engine != EngineChoice::Neural {
            return Ok(None);
        }
        let weights = self.weights.as_deref().context("--engine neural needs --weights W.safetensors")?;
        let model = GeneratorModel::load(GeneratorConfig::resolve(&self.config)?, weights)
            .with_context(|| format!("loading {}", weights.display()))?;
        Ok(Some((model, weights)))
    }

    /// The MetaPortrait generator on ONNX Runtime on `--device`.
    pub(crate) fn engine(&self, model: GeneratorModel) -> Result<metaportrait::pipeline::engine::NeuralEngine> {
        let options = RunnerOptions { device: self.device, precision: self.precision, ..RunnerOptions::default() };
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
    pub(crate) fn load(&self) -> Result<Option<tsr::runner::TsrModel>> {
        let Some(weights) = &self.tsr_weights else { return Ok(None) };
        let model = tsr::runner::TsrModel::load(TsrConfig::resolve(&self.tsr_config)?, weights)
            .with_context(|| format!("loading {}", weights.display()))?;
        Ok(Some(model))
    }
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
    /// ONNX Runtime arithmetic: `fp32`, `tf32` (CUDA convolutions and matrix products) or `fp16` (the float16
    /// graph; CUDA, or the CPU when `--device cpu` is given explicitly). Reports say what ran.
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: Precision,
}

pub(crate) fn print_listing(entries: Vec<metaportrait::model::weights::ExpectedEntry>) -> Result<()> {
    let map: serde_json::Map<String, serde_json::Value> =
        entries.into_iter().map(|e| (e.key, serde_json::json!(e.shape))).collect();
    println!("{}", serde_json::to_string_pretty(&map)?);
    Ok(())
}

pub(crate) fn engine_options(exec: &ExecArgs, stage: Stage) -> RunnerOptions {
    RunnerOptions {
        executor: exec.executor,
        device: exec.device,
        threads: exec.threads,
        stage,
        taps: false,
        precision: exec.precision,
    }
}

pub(crate) fn tsr_options(exec: &ExecArgs) -> TsrOptions {
    TsrOptions {
        executor: exec.executor,
        device: exec.device,
        threads: exec.threads,
        taps: false,
        precision: exec.precision,
        ..TsrOptions::default()
    }
}

pub(crate) fn identity_store() -> Result<IdentityStore> {
    let home = metaportrait::home::data_home()?;
    Ok(IdentityStore::open(&metaportrait::home::identities_dir(&home)?)?)
}

/// Resolves a user-given name to an id: an exact id, else a unique display-name match.
pub(crate) fn resolve_identity(store: &IdentityStore, name: &str) -> Result<String> {
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

pub(crate) fn face_mesher(models: Option<&PathBuf>) -> Result<metaportrait::face::FaceMesher> {
    face_mesher_on(models, Device::Cpu)
}

pub(crate) fn face_mesher_on(models: Option<&PathBuf>, device: Device) -> Result<metaportrait::face::FaceMesher> {
    use metaportrait::face::{FaceMesher, FaceMesherOptions, FaceModelPaths};
    let dir = models.cloned().unwrap_or_else(metaportrait::face::default_models_dir);
    let mut options = FaceMesherOptions::default();
    options.session.device = device;
    Ok(FaceMesher::new(&FaceModelPaths::in_dir(&dir), options)?)
}

/// The identity to drive: from the library (`--identity`) or prepared from a portrait file.
pub(crate) fn render_identity(
    mesher: &mut metaportrait::face::FaceMesher,
    source: Option<&std::path::Path>,
    identity: Option<&str>,
    with_embedding: bool,
    embedder: &super::embedder::EmbedderArgs,
) -> Result<EngineIdentity> {
    if let Some(name) = identity {
        let store = identity_store()?;
        let id = resolve_identity(&store, name)?;
        return Ok(EngineIdentity::from_library(&id, store.load(&id)?)?);
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
pub(crate) fn default_vgg_path() -> PathBuf {
    metaportrait::face::embed::default_id_model_path().with_file_name("vgg19_features_torchvision_norm.safetensors")
}

/// Where the VGG-19 of the perceptual loss comes from: `--vgg`, else (with `--perceptual auto`) the provisioned
/// weights when present; `None` trains without the perceptual term (said once on stderr when the weights are missing).
pub(crate) fn perceptual_vgg_path(choice: Perceptual, explicit: Option<&PathBuf>) -> Option<PathBuf> {
    match (choice, explicit) {
        (Perceptual::Off, _) => None,
        (Perceptual::Auto, Some(path)) => Some(path.clone()),
        (Perceptual::Auto, None) => {
            let path = default_vgg_path();
            if path.is_file() {
                Some(path)
            } else {
                eprintln!("no VGG-19 weights at {}: training without the perceptual loss", path.display());
                None
            }
        }
    }
}

/// The VGG-19 of `perceptual_vgg_path`, loaded.
pub(crate) fn perceptual_vgg(
    choice: Perceptual,
    explicit: Option<&PathBuf>,
) -> Result<Option<metaportrait::train::vgg::Vgg19>> {
    use metaportrait::train::vgg::Vgg19;
    let Some(path) = perceptual_vgg_path(choice, explicit) else { return Ok(None) };
    Ok(Some(Vgg19::load(&path).with_context(|| format!("loading {}", path.display()))?))
}

/// Offline render behind a progress bar (`render`, `demo`).
pub(crate) fn render_with_progress(
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
