//! `live`: the desktop window puppeteering an identity from a webcam or a file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::common::{NeuralArgs, TsrModelArgs, default_vgg_path, demo_portrait};

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

impl LiveArgs {
    /// Runs the window until the user closes it, then saves the settings.
    pub fn run(&self) -> Result<()> {
        let args = self;
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
        let (engine, personalize): (Box<dyn metaportrait::pipeline::engine::LiveEngine>, _) =
            match args.neural.model()? {
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
            default_portrait: Some(demo_portrait()),
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
}
