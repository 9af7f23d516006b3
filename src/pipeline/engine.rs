//! The live pipeline's inference engines behind one trait.
//!
//! Owns `LiveEngine` and its two implementations: `PreviewEngine`, zero weights — the portrait's landmark mesh
//! warped onto the target landmarks, drawn on the CPU or with wgpu (`preview_engine` picks for a `PreviewDevice`) —
//! and `NeuralEngine`, the MetaPortrait generator. Receives the identity (its 256² crop, landmarks in crop pixels,
//! embedding and weight delta) and, per frame, the target landmarks after motion transfer; emits the generated 256²
//! picture into a buffer the caller reuses.

use image::RgbImage;

use crate::model::preview::gpu::{GpuContext, GpuError, GpuMeshWarp};
use crate::model::preview::{MeshWarp, PreviewError};
use crate::personalize::store::Identity;

/// Why an engine could not take an identity or produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `drive` was called before any identity was set.
    #[error("no identity is selected")]
    NoIdentity,
    /// The CPU mesh warp rejected the identity or the target landmarks.
    #[error(transparent)]
    Preview(#[from] PreviewError),
    /// The wgpu mesh warp failed (no adapter, device lost, readback failed).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The generator failed to build its sessions (e.g. with the identity's weight delta) or to run.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// The generator's conditioning could not be built from the identity or the target landmarks.
    #[error(transparent)]
    Input(#[from] crate::model::inputs::InputError),
    /// The identity was stored without an embedding.
    #[error(
        "this identity has no identity embedding, which the neural engine needs (personalize it, or use the preview engine)"
    )]
    NoIdVector,
    /// Anything else the engine could not do, said in words (e.g. the generator returned no prediction).
    #[error("{0}")]
    Other(String),
}

/// What an engine needs of an identity.
#[derive(Clone, Debug)]
pub struct EngineIdentity {
    /// The portrait crop.
    pub portrait: RgbImage,
    /// Its landmarks in crop pixels (z scaled like x).
    pub landmarks: Vec<[f32; 3]>,
    /// Identity embedding for the neural engine's AdaIN (`None`: not computed).
    pub id_vector: Option<Vec<f32>>,
    /// Personalized weights replacing base tensors, by official key (empty: the base model).
    pub weights_delta: crate::model::weights::WeightStore,
    /// Tag of the embedder that made `id_vector` (`None`: an identity from before tags, i.e. the dlib network).
    pub embedder: Option<String>,
}

/// A library identity whose landmarks are not a `[n, 3]` table.
#[derive(Debug, thiserror::Error)]
#[error("identity `{id}` has landmarks of shape {shape:?}; expected [n, 3]")]
pub struct LandmarkShapeError {
    /// The identity's id.
    pub id: String,
    /// The shape found.
    pub shape: Vec<usize>,
}

impl EngineIdentity {
    /// An identity with only a portrait and its landmarks (all the preview engine needs).
    pub fn portrait_only(portrait: RgbImage, landmarks: Vec<[f32; 3]>) -> Self {
        Self { portrait, landmarks, id_vector: None, weights_delta: Default::default(), embedder: None }
    }

    /// What the engines need of library identity `id`.
    pub fn from_library(id: &str, identity: Identity) -> Result<Self, LandmarkShapeError> {
        let landmarks = match identity.landmarks.shape() {
            [_, 3] => identity.landmarks.data().chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            shape => return Err(LandmarkShapeError { id: id.to_owned(), shape: shape.to_vec() }),
        };
        Ok(Self {
            portrait: identity.portrait,
            landmarks,
            id_vector: identity.id_vector,
            weights_delta: identity.weights_delta,
            embedder: identity.meta.embedder,
        })
    }
}

/// An engine that animates one identity at a time.
pub trait LiveEngine: Send {
    /// Name shown in the panel and logs, e.g. "preview (mesh warp)".
    fn name(&self) -> String;
    /// Compute device, e.g. "cpu".
    fn device(&self) -> String;
    /// Switches to an identity.
    fn set_identity(&mut self, identity: &EngineIdentity) -> Result<(), EngineError>;
    /// Renders the identity posed as `target` (crop pixels, one point per identity landmark) into `out`.
    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError>;
}

/// Tells the user how to get the neural engine; shown while the preview engine runs.
pub const NEURAL_WEIGHTS_HINT: &str = "preview engine (mesh warp, no neural weights installed): the neural engine \
     needs generator weights trained on MediaPipe landmarks (`metaportrait train`); the official checkpoint \
     (converted by `metaportrait import-checkpoint`) runs as released only on the official preprocessed data \
     (`metaportrait reconstruct`)";

/// The portrait's mesh on the device that draws it.
enum Warp {
    Cpu(MeshWarp),
    Gpu(Box<GpuMeshWarp>),
}

/// The zero-weights engine: a triangulated mesh warp of the portrait, drawn on the CPU or with wgpu.
#[derive(Default)]
pub struct PreviewEngine {
    /// `Some`: draw with wgpu on this device.
    gpu: Option<GpuContext>,
    warp: Option<Warp>,
    /// `target` without z, reused every frame.
    target_2d: Vec<[f32; 2]>,
}

impl PreviewEngine {
    /// The CPU path.
    pub fn new() -> Self {
        Self::default()
    }

    /// The wgpu path on `gpu`.
    pub fn on_gpu(gpu: GpuContext) -> Self {
        Self { gpu: Some(gpu), ..Self::default() }
    }
}

impl LiveEngine for PreviewEngine {
    fn name(&self) -> String {
        "preview (mesh warp)".into()
    }

    fn device(&self) -> String {
        self.gpu.as_ref().map_or_else(|| "cpu".into(), |gpu| format!("gpu: {}", gpu.adapter_name))
    }

    fn set_identity(&mut self, identity: &EngineIdentity) -> Result<(), EngineError> {
        let flat: Vec<[f32; 2]> = identity.landmarks.iter().map(|p| [p[0], p[1]]).collect();
        let mesh = MeshWarp::new(identity.portrait.clone(), &flat)?;
        self.warp = Some(match &self.gpu {
            Some(gpu) => Warp::Gpu(Box::new(GpuMeshWarp::new(gpu, mesh))),
            None => Warp::Cpu(mesh),
        });
        Ok(())
    }

    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError> {
        let warp = self.warp.as_mut().ok_or(EngineError::NoIdentity)?;
        self.target_2d.clear();
        self.target_2d.extend(target.iter().map(|p| [p[0], p[1]]));
        match warp {
            Warp::Cpu(mesh) => mesh.render(&self.target_2d, out)?,
            Warp::Gpu(mesh) => mesh.render(&self.target_2d, out)?,
        }
        Ok(())
    }
}

/// The MetaPortrait generator (warping + refinement networks) on ONNX Runtime.
pub struct NeuralEngine {
    base: crate::model::generator::GeneratorModel,
    options: crate::model::runner::RunnerOptions,
    engine: crate::model::runner::GeneratorRunner,
    /// Whether `engine` runs personalized weights (rebuilt from `base` when an identity without a delta follows).
    personalized: bool,
    inputs: crate::model::inputs::InputBuilder,
    /// Whether an identity's constant inputs (source, source line, id) are staged in the engine: they are written
    /// once per identity, and only the pose's inputs every frame, so a frame allocates nothing.
    has_identity: bool,
    crop_side_px: f32,
}

impl NeuralEngine {
    /// Builds the ONNX Runtime session for `model` (the graph is emitted from the architecture definition).
    pub fn new(
        model: crate::model::generator::GeneratorModel,
        options: crate::model::runner::RunnerOptions,
    ) -> Result<Self, EngineError> {
        let engine = crate::model::runner::GeneratorRunner::new(&model, &options)?;
        let inputs = crate::model::inputs::InputBuilder::new(&model.config)?;
        Ok(Self { base: model, options, engine, personalized: false, inputs, has_identity: false, crop_side_px: 0.0 })
    }

    /// Stages the identity's constant inputs and the outputs a frame needs in the (new) engine.
    fn stage_identity(
        &mut self,
        fixed: &crate::model::net::GeneratorInputs<crate::tensor::HostTensor>,
    ) -> Result<(), EngineError> {
        use crate::model::net::OUTPUT_PREDICTION;
        for (name, value) in fixed.named() {
            self.engine.stage(name, value.data())?;
        }
        self.engine.stage_outputs(&[OUTPUT_PREDICTION])?;
        Ok(())
    }

    fn rebuild(&mut self, delta: &crate::model::weights::WeightStore) -> Result<(), EngineError> {
        let mut weights = self.base.weights.clone();
        for (key, tensor) in delta.iter() {
            weights.insert(key.clone(), tensor.clone());
        }
        let model = crate::model::generator::GeneratorModel::new(self.base.config.clone(), weights)?;
        self.engine = crate::model::runner::GeneratorRunner::new(&model, &self.options)?;
        self.personalized = !delta.is_empty();
        Ok(())
    }
}

impl LiveEngine for NeuralEngine {
    fn name(&self) -> String {
        "neural (MetaPortrait generator, ONNX Runtime)".into()
    }

    /// The device and precision the generator really runs on (a CUDA request that fell back says so and why).
    fn device(&self) -> String {
        self.engine.placement().describe()
    }

    fn set_identity(&mut self, identity: &EngineIdentity) -> Result<(), EngineError> {
        let id = identity.id_vector.as_deref().ok_or(EngineError::NoIdVector)?;
        self.inputs.check_embedder(identity.embedder.as_deref())?;
        if !identity.weights_delta.is_empty() || self.personalized {
            self.rebuild(&identity.weights_delta)?;
        }
        let crop_side_px = identity.portrait.width() as f32;
        self.has_identity = false;
        let frame =
            self.inputs.frame(&identity.portrait, &identity.landmarks, &identity.landmarks, id, crop_side_px)?;
        self.stage_identity(&frame)?;
        self.crop_side_px = crop_side_px;
        self.has_identity = true;
        Ok(())
    }

    /// One frame without allocating: the pose's three inputs are drawn into reused buffers and copied into the
    /// engine's bound inputs, and the prediction is converted in place into `out`.
    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError> {
        use crate::model::net::{INPUT_NAMES, OUTPUT_PREDICTION};
        if !self.has_identity {
            return Err(EngineError::NoIdentity);
        }
        let pose = self.inputs.driving_into(target, self.crop_side_px)?;
        // INPUT_NAMES[2..5]: driving line, mouth line, keypoints — the order `driving_into` returns them in.
        for (name, value) in INPUT_NAMES[2..5].iter().zip(pose) {
            self.engine.stage(name, value.data())?;
        }
        self.engine.run_staged()?;
        let prediction = self
            .engine
            .staged_output(OUTPUT_PREDICTION)
            .ok_or_else(|| EngineError::Other("the generator returned no prediction".into()))?;
        crate::model::inputs::prediction_to_image(prediction, out)?;
        Ok(())
    }
}

/// Where the preview engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PreviewDevice {
    /// wgpu when an adapter exists (even a software one, which still beats the CPU path), else the CPU.
    #[default]
    Auto,
    /// The CPU rasterizer, whatever adapters exist.
    Cpu,
    /// wgpu, or an error when no adapter exists.
    Gpu,
}

/// The preview engine for `device`; `Auto` falls back to the CPU with one log line saying why.
pub fn preview_engine(device: PreviewDevice) -> Result<Box<dyn LiveEngine>, EngineError> {
    match device {
        PreviewDevice::Cpu => Ok(Box::new(PreviewEngine::new())),
        PreviewDevice::Gpu => Ok(Box::new(PreviewEngine::on_gpu(GpuContext::headless()?))),
        PreviewDevice::Auto => match GpuContext::headless() {
            Ok(gpu) => Ok(Box::new(PreviewEngine::on_gpu(gpu))),
            Err(reason) => {
                tracing::info!(%reason, "preview engine on the CPU");
                Ok(Box::new(PreviewEngine::new()))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_engine_needs_an_identity_and_reproduces_it_at_rest() {
        let mut engine = PreviewEngine::new();
        let mut out = RgbImage::new(64, 64);
        assert!(matches!(engine.drive(&[], &mut out), Err(EngineError::NoIdentity)));
        let portrait = RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * 4) as u8, (y * 4) as u8, 90]));
        let landmarks: Vec<[f32; 3]> = (0..12)
            .map(|i| i as f32 * std::f32::consts::FRAC_PI_6)
            .map(|a| [32.0 + 14.0 * a.cos(), 32.0 + 18.0 * a.sin(), 0.0])
            .collect();
        engine.set_identity(&EngineIdentity::portrait_only(portrait.clone(), landmarks.clone())).expect("identity");
        engine.drive(&landmarks, &mut out).expect("renders");
        assert_eq!(out, portrait);
        let moved: Vec<[f32; 3]> = landmarks.iter().map(|p| [p[0] + 3.0, p[1], p[2]]).collect();
        engine.drive(&moved, &mut out).expect("renders");
        assert_ne!(out, portrait);
    }
}
