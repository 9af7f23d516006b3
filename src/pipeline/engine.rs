//! The live pipeline's inference engines behind one trait.
//!
//! Owns `LiveEngine` and its zero-weights implementations (the portrait's landmark mesh warped onto the target
//! landmarks): `PreviewEngine` on the CPU and `GpuPreviewEngine` drawing the mesh with wgpu; `preview_engine` picks
//! one for a `PreviewDevice`. Receives the identity (its 256² crop and landmarks in crop pixels) and, per
//! frame, the target landmarks after motion transfer; emits the generated 256² picture into a buffer the caller
//! reuses. The neural MetaPortrait generator plugs in here once an identity carries an embedding.

use image::RgbImage;

use crate::model::preview::gpu::{GpuContext, GpuError, GpuMeshWarp};
use crate::model::preview::{MeshWarp, PreviewError};

/// Why an engine could not take an identity or produce a frame.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no identity is selected")]
    NoIdentity,
    #[error(transparent)]
    Preview(#[from] PreviewError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error("{0}")]
    Other(String),
}

/// An engine that animates one identity at a time.
pub trait LiveEngine: Send {
    /// Name shown in the panel and logs, e.g. "preview (mesh warp)".
    fn name(&self) -> String;
    /// Compute device, e.g. "cpu".
    fn device(&self) -> String;
    /// Switches to an identity: its crop and its landmarks in crop pixels.
    fn set_identity(&mut self, portrait: &RgbImage, landmarks: &[[f32; 3]]) -> Result<(), EngineError>;
    /// Renders the identity posed as `target` (crop pixels, one point per identity landmark) into `out`.
    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError>;
}

/// Tells the user how to get the neural engine; shown while the preview engine runs.
pub const NEURAL_WEIGHTS_HINT: &str = "preview engine (mesh warp, no neural weights installed): convert the official \
     checkpoint with `metaportrait import-checkpoint` to use the MetaPortrait generator";

/// The zero-weights engine: a triangulated mesh warp of the portrait.
#[derive(Default)]
pub struct PreviewEngine {
    warp: Option<MeshWarp>,
    /// `target` without z, reused every frame.
    target_2d: Vec<[f32; 2]>,
}

impl PreviewEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl LiveEngine for PreviewEngine {
    fn name(&self) -> String {
        "preview (mesh warp)".into()
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn set_identity(&mut self, portrait: &RgbImage, landmarks: &[[f32; 3]]) -> Result<(), EngineError> {
        let flat: Vec<[f32; 2]> = landmarks.iter().map(|p| [p[0], p[1]]).collect();
        self.warp = Some(MeshWarp::new(portrait.clone(), &flat)?);
        Ok(())
    }

    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError> {
        let warp = self.warp.as_mut().ok_or(EngineError::NoIdentity)?;
        self.target_2d.clear();
        self.target_2d.extend(target.iter().map(|p| [p[0], p[1]]));
        warp.render(&self.target_2d, out)?;
        Ok(())
    }
}

/// The GPU path of the preview engine.
pub struct GpuPreviewEngine {
    gpu: GpuContext,
    warp: Option<GpuMeshWarp>,
    target_2d: Vec<[f32; 2]>,
}

impl GpuPreviewEngine {
    pub fn new(gpu: GpuContext) -> Self {
        Self { gpu, warp: None, target_2d: Vec::new() }
    }
}

impl LiveEngine for GpuPreviewEngine {
    fn name(&self) -> String {
        "preview (mesh warp)".into()
    }

    fn device(&self) -> String {
        format!("gpu: {}", self.gpu.adapter_name)
    }

    fn set_identity(&mut self, portrait: &RgbImage, landmarks: &[[f32; 3]]) -> Result<(), EngineError> {
        let flat: Vec<[f32; 2]> = landmarks.iter().map(|p| [p[0], p[1]]).collect();
        self.warp = Some(GpuMeshWarp::new(&self.gpu, MeshWarp::new(portrait.clone(), &flat)?));
        Ok(())
    }

    fn drive(&mut self, target: &[[f32; 3]], out: &mut RgbImage) -> Result<(), EngineError> {
        let warp = self.warp.as_mut().ok_or(EngineError::NoIdentity)?;
        self.target_2d.clear();
        self.target_2d.extend(target.iter().map(|p| [p[0], p[1]]));
        warp.render(&self.target_2d, out)?;
        Ok(())
    }
}

/// Where the preview engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PreviewDevice {
    /// wgpu when an adapter exists (even a software one, which still beats the CPU path), else the CPU.
    #[default]
    Auto,
    Cpu,
    /// wgpu, or an error when no adapter exists.
    Gpu,
}

/// The preview engine for `device`; `Auto` falls back to the CPU with one log line saying why.
pub fn preview_engine(device: PreviewDevice) -> Result<Box<dyn LiveEngine>, EngineError> {
    match device {
        PreviewDevice::Cpu => Ok(Box::new(PreviewEngine::new())),
        PreviewDevice::Gpu => Ok(Box::new(GpuPreviewEngine::new(GpuContext::headless()?))),
        PreviewDevice::Auto => match GpuContext::headless() {
            Ok(gpu) => Ok(Box::new(GpuPreviewEngine::new(gpu))),
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
        engine.set_identity(&portrait, &landmarks).expect("identity");
        engine.drive(&landmarks, &mut out).expect("renders");
        assert_eq!(out, portrait);
        let moved: Vec<[f32; 3]> = landmarks.iter().map(|p| [p[0] + 3.0, p[1], p[2]]).collect();
        engine.drive(&moved, &mut out).expect("renders");
        assert_ne!(out, portrait);
    }
}
