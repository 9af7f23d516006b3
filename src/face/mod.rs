//! Face perception: dense facial landmarks from RGB frames, reproducing MediaPipe FaceMesh (v0.10.14) on ONNX Runtime.
//!
//! Owns the pipeline detector → ROI → mesh (→ attention refinement) and its video tracking: `detect` (BlazeFace
//! short-range), `roi` and `crop` (rotated square crops with MediaPipe's edge convention), `mesh` (468-point mesh,
//! 478-point attention mesh), `tracker` (ROI from landmarks between frames, re-detection on loss) and `filter`
//! (One-Euro smoothing). `FaceMesher` is the facade for still images. Receives `image::RgbImage` frames (and the
//! three ONNX model files); emits `Face`s with landmarks in image pixels (z scaled like x), largest face first.
//! Errors are `FaceError`: an undecodable image, a missing or unreadable model file, ONNX Runtime failures, or model
//! outputs of the wrong shape. A frame without a face is not an error.

pub mod align;
pub mod arcface;
pub mod condition;
pub mod crop;
pub mod detect;
pub mod driver;
pub mod embed;
pub mod facecrop;
pub mod filter;
pub mod geometry;
pub mod landmarks_json;
pub mod mesh;
pub mod motion;
pub mod npy;
pub mod pil_resize;
pub mod raster;
pub mod roi;
pub mod topology;
pub mod tracker;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::runtime::RuntimeError;
use crate::runtime::ort::{OrtSession, SessionOptions};
pub use detect::{Detection, FaceDetector};
pub use geometry::{Point2, Rect};
pub use mesh::{AttentionMeshModel, FaceLandmarks, MeshModel};
pub use roi::Roi;
pub use tracker::{FaceTracker, TrackState, TrackedFace, TrackedFrame, TrackerOptions, TrackerStats};

/// File name of the BlazeFace short-range detector model inside the models directory.
pub const DETECTOR_FILE: &str = "face_detection_short_range.onnx";
/// File name of the 468-point face mesh model.
pub const MESH_FILE: &str = "face_landmark.onnx";
/// File name of the 478-point attention mesh model (refined eyes, lips and irises).
pub const ATTENTION_FILE: &str = "face_landmark_with_attention.onnx";
/// Intra-op threads per model: measured fastest on small CPUs, and leaves cores for the rest of the app.
pub const DEFAULT_THREADS: usize = 1;

/// Everything that can go wrong in the face stage.
#[derive(Debug, thiserror::Error)]
pub enum FaceError {
    /// The bytes are not a PNG or JPEG image the decoder understands.
    #[error("cannot decode image {origin}: {source}")]
    Image {
        /// Where the bytes came from (a path or a description), for the message.
        origin: String,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// An image file could not be read.
    #[error("cannot read image {path}: {source}")]
    ImageFile {
        /// The image file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A face model file is missing or cannot be read.
    #[error("face model {path} is missing or unreadable: {source}")]
    ModelFile {
        /// The model file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A face model file is not the one listed in the checksum manifest (or the manifest is missing or does not
    /// list it), so it is refused rather than run.
    #[error(
        "face model {path} does not match {manifest} ({reason}); restore it with `git checkout models/` or \
         rebuild it with `bash scripts/convert-face-models.sh`"
    )]
    ModelChecksum {
        /// The model file.
        path: PathBuf,
        /// The `SHA256SUMS` manifest it was checked against.
        manifest: PathBuf,
        /// What did not match: unreadable manifest, no entry, or the two digests.
        reason: String,
    },
    /// ONNX Runtime failed to load or run a model.
    ///
    /// The cause is part of the message (not a `source`), so `{:#}` chains do not print it twice.
    #[error("{model}: {cause}")]
    Runtime {
        /// The model's file path or name.
        model: String,
        /// The runtime's error.
        cause: RuntimeError,
    },
    /// A model has inputs or outputs of an unexpected number, shape or size (a wrong or damaged model file), or a
    /// stage got landmarks it cannot use (too few points, coinciding alignment points).
    #[error("{model} returned unexpected outputs: {reason}")]
    ModelOutput {
        /// The model's file path, or the stage that failed.
        model: String,
        /// What is wrong.
        reason: String,
    },
}

/// The manifest beside the models that lists their SHA-256 (`sha256sum` format).
pub const CHECKSUM_FILE: &str = "SHA256SUMS";
/// Environment variable naming the models directory.
pub const MODELS_ENV: &str = "METAPORTRAIT_MODELS";

/// Where the face models are: `$METAPORTRAIT_MODELS`, else `models/` in the current directory, else the source
/// tree's `models/` (for `cargo run` from anywhere).
pub fn default_models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(MODELS_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("models");
    if local.join(DETECTOR_FILE).is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

/// Checks `bytes` of the model at `path` against the `SHA256SUMS` in its directory.
fn verify_checksum(path: &Path, bytes: &[u8]) -> Result<(), FaceError> {
    let manifest = path.with_file_name(CHECKSUM_FILE);
    let fail =
        |reason: String| FaceError::ModelChecksum { path: path.to_path_buf(), manifest: manifest.clone(), reason };
    let text = std::fs::read_to_string(&manifest).map_err(|e| fail(format!("cannot read the manifest: {e}")))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let expected = crate::checksum::manifest_entry(&text, &name).ok_or_else(|| fail("not listed".into()))?;
    let actual = crate::checksum::sha256_hex(bytes);
    if actual != expected {
        return Err(fail(format!("SHA-256 {actual}, expected {expected}")));
    }
    Ok(())
}

/// Reads a model file, verifies it against `SHA256SUMS` and builds its ONNX Runtime session.
pub(crate) fn load_session(path: &Path, options: &SessionOptions) -> Result<OrtSession, FaceError> {
    let bytes = std::fs::read(path).map_err(|source| FaceError::ModelFile { path: path.to_path_buf(), source })?;
    verify_checksum(path, &bytes)?;
    OrtSession::from_bytes(&bytes, options)
        .map_err(|cause| FaceError::Runtime { model: path.display().to_string(), cause })
}

/// Decodes an encoded image (PNG or JPEG) into RGB; `origin` names it in errors.
pub fn decode_image(bytes: &[u8], origin: &str) -> Result<RgbImage, FaceError> {
    image::load_from_memory(bytes)
        .map(|img| img.to_rgb8())
        .map_err(|source| FaceError::Image { origin: origin.to_owned(), source })
}

/// Reads and decodes an image file into RGB.
pub fn load_image(path: &Path) -> Result<RgbImage, FaceError> {
    let bytes = std::fs::read(path).map_err(|source| FaceError::ImageFile { path: path.to_path_buf(), source })?;
    decode_image(&bytes, &path.display().to_string())
}

/// Where the three model files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaceModelPaths {
    /// The BlazeFace detector ([`DETECTOR_FILE`]).
    pub detector: PathBuf,
    /// The 468-point mesh model ([`MESH_FILE`]).
    pub mesh: PathBuf,
    /// The 478-point attention mesh model ([`ATTENTION_FILE`]); loaded on the first refined request.
    pub attention: PathBuf,
}

impl FaceModelPaths {
    /// The standard file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { detector: dir.join(DETECTOR_FILE), mesh: dir.join(MESH_FILE), attention: dir.join(ATTENTION_FILE) }
    }
}

/// Settings of the still-image pipeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceMesherOptions {
    /// ONNX Runtime settings shared by the three models.
    pub session: SessionOptions,
    /// Minimum detector score (sigmoid).
    pub min_detection_score: f32,
    /// Minimum landmark-model presence (sigmoid).
    pub min_presence: f32,
    /// At most this many faces per image (the highest-scoring detections).
    pub max_faces: usize,
}

/// Up to this many faces per image by default.
pub const DEFAULT_MAX_FACES: usize = 4;

impl Default for FaceMesherOptions {
    fn default() -> Self {
        Self {
            session: SessionOptions { threads: DEFAULT_THREADS, ..Default::default() },
            min_detection_score: detect::MIN_SCORE,
            min_presence: mesh::MIN_PRESENCE,
            max_faces: DEFAULT_MAX_FACES,
        }
    }
}

/// One face in a still image.
#[derive(Clone, Debug, PartialEq)]
pub struct Face {
    /// Detector score.
    pub score: f32,
    /// Detector box in image pixels.
    pub bbox: Rect,
    /// 468 (or, refined, 478) landmarks in image pixels; z scaled like x.
    pub landmarks: FaceLandmarks,
    /// The full detection (box and the six keypoints).
    pub detection: Detection,
}

impl Face {
    /// The box as `[x, y, width, height]` in pixels.
    pub fn bbox_xywh(&self) -> [f32; 4] {
        self.bbox.to_xywh()
    }
}

/// Still-image facade over the detector and the landmark models.
pub struct FaceMesher {
    options: FaceMesherOptions,
    detector: FaceDetector,
    mesh: MeshModel,
    attention_path: PathBuf,
    attention: Option<AttentionMeshModel>,
}

impl FaceMesher {
    /// Loads the detector and the 468-point mesh; the attention model waits for the first refined request.
    pub fn new(paths: &FaceModelPaths, options: FaceMesherOptions) -> Result<Self, FaceError> {
        let mut detector = FaceDetector::from_file(&paths.detector, &options.session)?;
        detector.set_min_score(options.min_detection_score);
        let mesh = MeshModel::from_file(&paths.mesh, &options.session)?;
        Ok(Self { options, detector, mesh, attention_path: paths.attention.clone(), attention: None })
    }

    /// Default options, models in `dir` under their standard names.
    pub fn from_dir(dir: &Path) -> Result<Self, FaceError> {
        Self::new(&FaceModelPaths::in_dir(dir), FaceMesherOptions::default())
    }

    /// The settings this mesher was built with.
    pub fn options(&self) -> &FaceMesherOptions {
        &self.options
    }

    /// Detector runs so far.
    pub fn detector_calls(&self) -> u64 {
        self.detector.calls()
    }

    /// Landmark-model runs so far (both models).
    pub fn landmark_calls(&self) -> u64 {
        self.mesh.calls() + self.attention.as_ref().map_or(0, AttentionMeshModel::calls)
    }

    /// Face detections in pixels, highest score first.
    pub fn detect(&mut self, image: &RgbImage) -> Result<Vec<Detection>, FaceError> {
        self.detector.detect(image)
    }

    /// Landmarks inside `roi`: 468 points, or 478 when `refine`.
    pub fn landmarks(&mut self, image: &RgbImage, roi: &Roi, refine: bool) -> Result<FaceLandmarks, FaceError> {
        if !refine {
            return self.mesh.infer(image, roi);
        }
        let attention = match &mut self.attention {
            Some(model) => model,
            slot @ None => slot.insert(AttentionMeshModel::from_file(&self.attention_path, &self.options.session)?),
        };
        attention.infer(image, roi)
    }

    /// Every face in a still image (up to `max_faces`), largest box first. No face gives an empty list.
    pub fn detect_landmarks(&mut self, image: &RgbImage, refine: bool) -> Result<Vec<Face>, FaceError> {
        let detections = self.detect(image)?;
        let mut faces = Vec::new();
        for detection in detections.into_iter().take(self.options.max_faces) {
            let landmarks = self.landmarks(image, &detection.roi(), refine)?;
            if landmarks.is_present(self.options.min_presence) {
                faces.push(Face { score: detection.score, bbox: detection.bbox, landmarks, detection });
            }
        }
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        Ok(faces)
    }
}
