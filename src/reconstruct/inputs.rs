//! The generator inputs of one official data frame, exactly as `PersonalDataset.__getitem__` builds them.
//!
//! Owns the per-source cache and the steps: pictures opened as RGB and resized to 256² with Pillow's bicubic filter
//! (`face::pil_resize`), then `/255`; landmark-line images drawn from the 669 points in [0, 1] with the official
//! topology and palette (`face::condition`, endpoints at `int(v·256)`); the 58 keypoints `2v − 1` at the official
//! `ldmk_idx`; the mouth line as the driving line inside the mouth box; and the identity vector as stored — the
//! official loader does not normalise it. Receives an `OfficialData` entry; emits `GeneratorInputs<HostTensor>` and
//! the 256² ground-truth picture (the driving frame as the loader sees it).

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;

use super::ReconstructError;
use super::layout::{FrameEntry, OfficialData, SourceEntry, read_id_vector, read_landmarks};
use crate::face::condition::{Conditioner, canvas_to_tensor, mouth_line, mouth_mask};
use crate::face::pil_resize::resize_bicubic;
use crate::face::topology::Topology;
use crate::model::config::{GeneratorConfig, IMAGE_CHANNELS, NUM_KEYPOINTS};
use crate::model::inputs::write_planar_unit;
use crate::model::net::GeneratorInputs;
use crate::tensor::HostTensor;

/// One frame's inputs and its ground truth.
pub struct OfficialFrame {
    /// The generator's six inputs.
    pub inputs: GeneratorInputs<HostTensor>,
    /// The driving frame resized to the model's side (what the official loader calls `driving`).
    pub ground_truth: RgbImage,
}

/// The source-side tensors, shared by every frame of a source.
#[derive(Clone)]
struct SourceInputs {
    source: HostTensor,
    source_line: HostTensor,
    src_id: HostTensor,
}

/// Builds official-data inputs with the 669-point topology, caching each source's tensors.
pub struct OfficialInputBuilder {
    size: usize,
    id_dim: usize,
    conditioner: Conditioner,
    sources: BTreeMap<String, SourceInputs>,
}

/// Opens a picture as 8-bit RGB and resizes it as the official loader does.
pub fn load_picture(path: &Path, size: usize) -> Result<RgbImage, ReconstructError> {
    let picture = image::open(path)
        .map_err(|e| ReconstructError::BadFile { path: path.into(), reason: format!("unreadable picture: {e}") })?
        .to_rgb8();
    Ok(resize_bicubic(&picture, size as u32, size as u32))
}

fn picture_tensor(picture: &RgbImage, size: usize) -> HostTensor {
    let mut out = HostTensor::zeros(&[1, IMAGE_CHANNELS, size, size]);
    write_planar_unit(picture, out.data_mut());
    out
}

impl OfficialInputBuilder {
    /// A builder for `config`'s side and id_dim, drawing with the official topology of `connectivity`
    /// (`dense_669_connectivity.tsv`).
    pub fn new(config: &GeneratorConfig, connectivity: &Path) -> Result<Self, ReconstructError> {
        Ok(Self {
            size: config.image_size,
            id_dim: config.id_dim,
            conditioner: Conditioner::new(Topology::official(connectivity)?, config.image_size)?,
            sources: BTreeMap::new(),
        })
    }

    fn line(&mut self, points: &[[f32; 2]]) -> Result<HostTensor, ReconstructError> {
        let mut out = HostTensor::zeros(&[1, IMAGE_CHANNELS, self.size, self.size]);
        canvas_to_tensor(self.conditioner.draw(points)?, &mut out)?;
        Ok(out)
    }

    fn source(&mut self, key: &str, entry: &SourceEntry) -> Result<SourceInputs, ReconstructError> {
        if let Some(cached) = self.sources.get(key) {
            return Ok(cached.clone());
        }
        let picture = load_picture(&entry.image, self.size)?;
        let points = read_landmarks(&entry.landmarks)?;
        let id = read_id_vector(&entry.id_vector, self.id_dim)?;
        let built = SourceInputs {
            source: picture_tensor(&picture, self.size),
            source_line: self.line(&points)?,
            src_id: HostTensor::new(vec![1, self.id_dim], id)
                .map_err(|e| ReconstructError::BadFile { path: entry.id_vector.clone(), reason: e.to_string() })?,
        };
        self.sources.insert(key.to_owned(), built.clone());
        Ok(built)
    }

    /// The inputs and ground truth of `frame` of `data`.
    pub fn frame(&mut self, data: &OfficialData, frame: &FrameEntry) -> Result<OfficialFrame, ReconstructError> {
        let entry = data.sources.get(&frame.source).ok_or_else(|| ReconstructError::Missing {
            path: data.root.join(format!("src_{}.png", frame.source)),
            what: "the source picture",
        })?;
        let source = self.source(&frame.source, entry)?;
        let ground_truth = load_picture(&frame.image, self.size)?;
        let points = read_landmarks(&frame.landmarks)?;
        let driving_line = self.line(&points)?;
        let keypoints = self.conditioner.keypoints(&points)?;
        let mouth = mouth_line(&driving_line, &mouth_mask(&keypoints, self.size));
        let driving_ldmk = HostTensor::new(vec![1, NUM_KEYPOINTS, 2], keypoints.iter().flatten().copied().collect())
            .map_err(|e| ReconstructError::BadFile { path: frame.landmarks.clone(), reason: e.to_string() })?;
        Ok(OfficialFrame {
            inputs: GeneratorInputs {
                source: source.source,
                source_line: source.source_line,
                driving_line,
                mouth_line: mouth,
                driving_ldmk,
                src_id: source.src_id,
            },
            ground_truth,
        })
    }
}
