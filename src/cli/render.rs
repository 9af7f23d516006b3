//! `render` and `demo`: a portrait driven offline by a video, an image sequence or the demo's virtual camera.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use metaportrait::capture::open_path;
use metaportrait::pipeline::engine::EngineIdentity;
use metaportrait::pipeline::render::RenderJob;
use metaportrait::tsr;

use super::common::{
    EngineChoice, NeuralArgs, TsrModelArgs, demo_portrait, face_mesher, render_identity, render_with_progress,
};

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

impl RenderArgs {
    /// Renders the clip.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::face::motion::MotionMode;
        use metaportrait::pipeline::engine::{LiveEngine, PreviewEngine};
        let started = Instant::now();
        let mut mesher = face_mesher(args.models.as_ref())?;
        let neural = args.neural.engine == EngineChoice::Neural;
        let identity = render_identity(
            &mut mesher,
            args.source.as_deref(),
            args.identity.as_deref(),
            neural,
            &args.neural.embedder,
        )?;
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
        let opened =
            open_path(&args.driving, args.fps).with_context(|| format!("opening {}", args.driving.display()))?;
        let (mut driving, total) = (opened.source, opened.frames);
        let motion = if args.relative { MotionMode::Relative } else { MotionMode::Absolute };
        let mut tsr = match (args.tsr, args.tsr_model.load()?) {
            (true, Some(model)) => {
                let options = tsr::runner::TsrOptions {
                    device: args.neural.device,
                    precision: args.neural.precision,
                    ..Default::default()
                };
                Some(tsr::runner::TsrRunner::new(model, options)?)
            }
            _ => None,
        };
        let job = RenderJob { motion, output: &args.output, recorder: Default::default(), tsr: tsr.as_mut() };
        let summary = render_with_progress(&mut mesher, &identity, engine.as_mut(), driving.as_mut(), total, job)?;
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
}

/// `demo`: the bundled portrait driven by a swaying virtual camera on it.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where to write the clip.
    #[arg(long, default_value = "out/demo.mp4")]
    pub output: PathBuf,
}

impl DemoArgs {
    /// Renders the demo clip.
    pub fn run(&self) -> Result<()> {
        let output = self.output.as_path();
        use metaportrait::face::motion::MotionMode;
        use metaportrait::pipeline::demo::{DEMO_FRAMES, SwaySource};
        use metaportrait::pipeline::render::prepare_portrait;
        let started = Instant::now();
        let path = demo_portrait();
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
}
