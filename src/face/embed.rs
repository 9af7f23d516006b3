//! Identity embeddings for the refinement network's AdaIN: dlib's face-recognition ResNet (CC0, from PyPI
//! `face-recognition-models`, converted to ONNX by `scripts/id-model/`) on a face chip aligned from MediaPipe points,
//! or a user-supplied ArcFace-style network (`--embedder FILE.onnx`, chip in `face::arcface`).
//!
//! Owns the alignment — dlib's `get_face_chip(img, shape5, size = 150, padding = 0.25)`: the least-squares
//! similarity (rotation, uniform scale, translation) taking dlib's 5-point chip template onto 5 MediaPipe landmarks,
//! then bilinear sampling with black outside the image and, when the chip shrinks the face, an average of
//! ⌈scale⌉² sub-samples standing in for dlib's pyramid — and the embedding session. A network file with our dlib
//! conversion's interface (input `image`, output `embedding_unit`) is run as dlib's; any other is taken as
//! ArcFace-style (first input `[1, 3, 112, 112]`, first output `[1, D]`, any D). Each embedder has a tag recorded with
//! the vectors it makes (`dlib-resnet-v1`, or `arcface-` + the first 16 hex digits of the file's SHA-256), so models
//! and identities from different embedders are never mixed. Receives a picture and its MediaPipe landmarks (image
//! pixels); emits the unit-norm descriptor.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::FaceError;
use super::align::{Similarity2, sample_black_border};
use crate::runtime::ort::{OrtSession, SessionOptions};
use crate::tensor::HostTensor;

/// File name of the converted network.
pub const ID_MODEL_FILE: &str = "dlib_face_recognition_resnet_v1.onnx";
/// Environment variable naming the network file.
pub const ID_MODEL_ENV: &str = "METAPORTRAIT_ID_MODEL";
/// Length of the descriptor.
pub const EMBEDDING_DIM: usize = 128;
/// Tag of the provisioned network in identities and model configs (`GeneratorConfig::embedder`).
pub const DLIB_EMBEDDER_TAG: &str = "dlib-resnet-v1";
/// Side of the aligned chip the network reads.
pub const CHIP_SIDE_PX: usize = 150;
/// dlib's padding around the template's unit square (fraction of its side).
const CHIP_PADDING: f64 = 0.25;
/// dlib's 5-point template in the unit square, in shape_predictor_5 order.
const DLIB5_TEMPLATE: [[f64; 2]; 5] = [
    [0.859_567_459_599_2, 0.213_498_153_801_4],
    [0.646_060_476_410_4, 0.228_967_438_767_7],
    [0.120_575_062_078_9, 0.213_727_452_684_8],
    [0.334_085_061_371_2, 0.229_064_240_324_2],
    [0.490_112_313_567_9, 0.627_797_531_647_5],
];
/// MediaPipe FaceMesh indices of the same points: the eye on the image's right (outer, inner corner), the eye on the
/// image's left (outer, inner), and the nose base (subnasale, 2 — not the tip, 1).
pub const MEDIAPIPE_DLIB5: [usize; 5] = [263, 362, 33, 133, 2];
const INPUT_NAME: &str = "image";
const OUTPUT_NAME: &str = "embedding_unit";

/// `$METAPORTRAIT_ID_MODEL`, else where `scripts/provision-id-model.sh` puts it (`.runtime/id-model/` in the
/// current directory, then in the source tree).
pub fn default_id_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os(ID_MODEL_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let local = Path::new(".runtime/id-model").join(ID_MODEL_FILE);
    if local.is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".runtime/id-model").join(ID_MODEL_FILE)
}

/// dlib's template in chip pixels.
fn template_px() -> [[f64; 2]; 5] {
    DLIB5_TEMPLATE.map(|[x, y]| {
        let side = CHIP_SIDE_PX as f64;
        [(CHIP_PADDING + x) / (2.0 * CHIP_PADDING + 1.0) * side, (CHIP_PADDING + y) / (2.0 * CHIP_PADDING + 1.0) * side]
    })
}

/// The 5 alignment points of MediaPipe landmarks (image pixels), in dlib's order.
pub fn dlib5_points(landmarks: &[[f32; 3]]) -> Option<[[f64; 2]; 5]> {
    let mut out = [[0.0; 2]; 5];
    for (o, &i) in out.iter_mut().zip(&MEDIAPIPE_DLIB5) {
        let p = landmarks.get(i)?;
        *o = [f64::from(p[0]), f64::from(p[1])];
    }
    Some(out)
}

/// The aligned `[3, 150, 150]` chip (RGB, 0..255, planar) for the network, written into `out`.
pub fn face_chip(img: &RgbImage, points: &[[f64; 2]; 5], out: &mut Vec<f32>) -> Result<(), FaceError> {
    let m = Similarity2::fit(&template_px(), points).ok_or_else(|| FaceError::ModelOutput {
        model: "face alignment".into(),
        reason: "the 5 alignment landmarks coincide".into(),
    })?;
    let k = m.scale().ceil().max(1.0) as usize;
    let offsets: Vec<f64> = (0..k).map(|i| (i as f64 + 0.5) / k as f64 - 0.5).collect();
    let plane = CHIP_SIDE_PX * CHIP_SIDE_PX;
    out.clear();
    out.resize(3 * plane, 0.0);
    let norm = 1.0 / (k * k) as f64;
    for row in 0..CHIP_SIDE_PX {
        for col in 0..CHIP_SIDE_PX {
            let mut acc = [0.0; 3];
            for oy in &offsets {
                for ox in &offsets {
                    let [x, y] = m.apply([col as f64 + ox, row as f64 + oy]);
                    let v = sample_black_border(img, x, y);
                    for c in 0..3 {
                        acc[c] += v[c];
                    }
                }
            }
            for c in 0..3 {
                out[c * plane + row * CHIP_SIDE_PX + col] = (acc[c] * norm) as f32;
            }
        }
    }
    Ok(())
}

/// How a network file is fed and read.
enum EmbedderKind {
    /// Our dlib conversion: 150² chip in 0..255, output `embedding_unit` `[1, 128]`, already unit-norm.
    Dlib,
    /// ArcFace-style: 112² chip in [−1, 1]; the output is normalised here.
    ArcFace { input: String, output: String },
}

/// Tag of an ArcFace-style network: `arcface-` and the start of its file's SHA-256.
pub fn arcface_tag(model_bytes: &[u8]) -> String {
    format!("arcface-{}", &crate::checksum::sha256_hex(model_bytes)[..16])
}

/// An identity-embedding network and its chip buffer.
pub struct IdEmbedder {
    session: OrtSession,
    path: PathBuf,
    kind: EmbedderKind,
    tag: String,
    chip: HostTensor,
    scratch: Vec<f32>,
}

impl IdEmbedder {
    /// Opens the network at `path` (see `default_id_model_path`), recognising which kind it is by its interface.
    pub fn new(path: &Path) -> Result<Self, FaceError> {
        let bytes = std::fs::read(path).map_err(|source| FaceError::ModelFile { path: path.to_path_buf(), source })?;
        let session = OrtSession::from_bytes(&bytes, &SessionOptions::default())
            .map_err(|cause| FaceError::Runtime { model: path.display().to_string(), cause })?;
        let (inputs, outputs) = (session.input_names(), session.output_names());
        let (kind, tag, side) = if inputs == [INPUT_NAME] && outputs.iter().any(|o| o == OUTPUT_NAME) {
            (EmbedderKind::Dlib, DLIB_EMBEDDER_TAG.to_owned(), CHIP_SIDE_PX)
        } else {
            let (Some(input), Some(output)) = (inputs.first(), outputs.first()) else {
                return Err(FaceError::ModelOutput {
                    model: path.display().to_string(),
                    reason: "the network has no input or no output".into(),
                });
            };
            let kind = EmbedderKind::ArcFace { input: input.clone(), output: output.clone() };
            (kind, arcface_tag(&bytes), super::arcface::ARCFACE_SIDE_PX)
        };
        Ok(Self {
            session,
            path: path.to_path_buf(),
            kind,
            tag,
            chip: HostTensor::zeros(&[1, 3, side, side]),
            scratch: Vec::new(),
        })
    }

    /// The tag recorded with this network's vectors (`dlib-resnet-v1` or `arcface-…`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The unit-norm descriptor of the face whose MediaPipe landmarks (image pixels) are `landmarks`.
    pub fn embed(&mut self, img: &RgbImage, landmarks: &[[f32; 3]]) -> Result<Vec<f32>, FaceError> {
        let too_few = || FaceError::ModelOutput {
            model: "face alignment".into(),
            reason: format!("{} landmarks; the MediaPipe mesh (468 or 478) is needed", landmarks.len()),
        };
        let model = self.path.display().to_string();
        match &self.kind {
            EmbedderKind::Dlib => {
                let points = dlib5_points(landmarks).ok_or_else(too_few)?;
                face_chip(img, &points, &mut self.scratch)?;
                self.chip.data_mut().copy_from_slice(&self.scratch);
                let outputs = self
                    .session
                    .run(&[(INPUT_NAME, &self.chip)])
                    .map_err(|cause| FaceError::Runtime { model: model.clone(), cause })?;
                let embedding =
                    outputs.get(OUTPUT_NAME).filter(|t| t.shape() == [1, EMBEDDING_DIM]).ok_or_else(|| {
                        FaceError::ModelOutput { model, reason: format!("no `{OUTPUT_NAME}` [1, 128] output") }
                    })?;
                Ok(embedding.data().to_vec())
            }
            EmbedderKind::ArcFace { input, output } => {
                let points = super::arcface::arcface5_points(landmarks).ok_or_else(too_few)?;
                super::arcface::arcface_chip(img, &points, &mut self.scratch)?;
                self.chip.data_mut().copy_from_slice(&self.scratch);
                let outputs = self
                    .session
                    .run(&[(input.as_str(), &self.chip)])
                    .map_err(|cause| FaceError::Runtime { model: model.clone(), cause })?;
                let raw = outputs.get(output.as_str()).ok_or_else(|| FaceError::ModelOutput {
                    model: model.clone(),
                    reason: format!("no `{output}` output"),
                })?;
                let shape = raw.shape();
                if shape.is_empty() || shape[..shape.len() - 1].iter().any(|d| *d != 1) {
                    return Err(FaceError::ModelOutput {
                        model,
                        reason: format!("output `{output}` has shape {shape:?}; one vector [1, D] is expected"),
                    });
                }
                let norm = raw.data().iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
                if !(norm.is_finite() && norm > 0.0) {
                    return Err(FaceError::ModelOutput { model, reason: "the embedding is zero or not finite".into() });
                }
                Ok(raw.data().iter().map(|v| (f64::from(*v) / norm) as f32).collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_similarity() {
        let truth = Similarity2 { a: 1.7 * 0.3f64.cos(), b: 1.7 * 0.3f64.sin(), t: [12.5, -4.0] };
        let src = template_px();
        let dst = src.map(|p| truth.apply(p));
        let fit = Similarity2::fit(&src, &dst).expect("fits");
        assert!((fit.a - truth.a).abs() < 1e-12 && (fit.b - truth.b).abs() < 1e-12);
        assert!((fit.t[0] - truth.t[0]).abs() < 1e-9 && (fit.t[1] - truth.t[1]).abs() < 1e-9);
        assert!((fit.scale() - 1.7).abs() < 1e-12);
        assert!(Similarity2::fit(&[[1.0, 1.0]; 5], &dst).is_none());
    }

    #[test]
    fn the_template_lands_on_dlibs_chip_points() {
        let t = template_px();
        // Values from dlib's get_face_chip_details at size 150, padding 0.25.
        assert!((t[0][0] - 110.956).abs() < 1e-2 && (t[0][1] - 46.350).abs() < 1e-2);
        assert!((t[4][0] - 74.006).abs() < 1e-2 && (t[4][1] - 87.780).abs() < 1e-2);
    }

    #[test]
    fn an_image_equal_to_the_chip_frame_is_copied_and_outside_is_black() {
        // With the points exactly at the template, the chip samples the image 1:1.
        let img = RgbImage::from_fn(150, 150, |x, y| image::Rgb([x as u8, y as u8, 77]));
        let points = template_px();
        let mut chip = Vec::new();
        face_chip(&img, &points, &mut chip).expect("chip");
        let plane = CHIP_SIDE_PX * CHIP_SIDE_PX;
        assert_eq!(chip[10 * CHIP_SIDE_PX + 20], 20.0);
        assert_eq!(chip[plane + 10 * CHIP_SIDE_PX + 20], 10.0);
        // Shifted by 200 px the face leaves the image: black.
        let shifted = points.map(|[x, y]| [x + 200.0, y]);
        face_chip(&img, &shifted, &mut chip).expect("chip");
        assert!(chip.iter().all(|&v| v == 0.0));
    }
}
