//! The generator's inputs built from pictures and landmarks: the bridge between the face stage and the networks.
//!
//! Owns the conversion rules (the reference doc's "io tensors"): images as `[1, 3, S, S]` in [0, 1]; landmark-line
//! images drawn by the face stage's `Conditioner`; the mouth line as the driving line inside the mouth box; the 58
//! keypoints in [−1, 1] as `[1, 58, 2]`; the identity vector as `[1, id_dim]` with unit L2 norm. Receives a portrait
//! crop, its landmarks and per-frame target landmarks (crop pixels); emits `GeneratorInputs<HostTensor>` for an
//! engine, and turns `refine.prediction` back into an 8-bit picture (the official inference clips it to [0, 1] and
//! scales by 255: training targets are images / 255, even though the last activation is a tanh). Used by the neural engine and
//! by personalization, so both feed the networks identically.

use image::RgbImage;

use super::config::{Conditioning, GeneratorConfig, IMAGE_CHANNELS, NUM_KEYPOINTS};
use super::net::GeneratorInputs;
use crate::face::condition::{ConditionError, Conditioner, canvas_to_tensor, mouth_line, mouth_line_into, mouth_mask};
use crate::face::topology::Topology;
use crate::tensor::HostTensor;

/// Why inputs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The landmark-line images could not be drawn (wrong landmark count for the topology, a bad canvas).
    #[error(transparent)]
    Condition(#[from] ConditionError),
    /// The identity vector's length is not the model's `id_dim`: the weights expect another embedding.
    #[error(
        "the identity vector has {actual} values but this model's id_dim is {expected}: the weights were trained \
         with another identity embedding (the provisioned one is the 128-d dlib descriptor; `--embedder FILE.onnx` \
         and `identities add --id-vector FILE.npy` give others)"
    )]
    IdDim {
        /// The model's `id_dim`.
        expected: usize,
        /// Values in the identity vector given.
        actual: usize,
    },
    /// The identity vector cannot be normalised to unit length (all zeros, NaN or infinite values).
    #[error("the identity vector is zero or not finite")]
    IdNorm,
    /// The network's `refine.prediction` is not a single `[1, 3, S, S]` image, so it cannot become a picture.
    #[error("the prediction has shape {0:?}; expected [1, 3, S, S]")]
    PredictionShape(Vec<usize>),
    #[error(
        "this model was trained on the official 669-point landmarks (config `{config}`, conditioning `official669`), \
         which no public tracker produces, while this path draws MediaPipe landmarks: run it on the official \
         preprocessed data with `metaportrait reconstruct`, or use weights trained on MediaPipe landmarks"
    )]
    /// The model's config says `official669`, which MediaPipe cannot provide.
    UnavailableConditioning {
        /// The config's name.
        config: String,
    },
    #[error(
        "the identity vector was made by the face embedder `{actual}`, but this model (config `{config}`) was \
         trained with `{expected}`: embed the portrait again with that embedder (`--embedder`), or use a model \
         trained with `{actual}`"
    )]
    /// The identity's vector comes from another embedder than the model's.
    EmbedderMismatch {
        /// The config's name.
        config: String,
        /// The model's embedder tag.
        expected: String,
        /// The identity's embedder tag.
        actual: String,
    },
}

/// Embedder tag of identity vectors given as a file without naming their embedder (`identities add --id-vector`):
/// the user vouches for them, so any model whose id_dim fits accepts them (with a log line).
pub const EXTERNAL_EMBEDDER: &str = "external";

/// Builds generator inputs at the model's resolution with one conditioner (reused buffers) from MediaPipe landmarks,
/// for models whose config says they were trained on them.
pub struct InputBuilder {
    size: usize,
    id_dim: usize,
    /// The model's config name and embedder tag, for `check_embedder`.
    config_name: String,
    embedder: String,
    conditioner: Conditioner,
    /// Reused landmark buffer in [0, 1].
    unit: Vec<[f32; 2]>,
    /// The per-frame inputs `driving_into` writes: driving line, mouth line, keypoints.
    pose: [HostTensor; 3],
}

impl InputBuilder {
    /// A builder for `config`'s image side and `id_dim`, with the MediaPipe landmark topology; refused for a model
    /// trained on a topology MediaPipe cannot provide.
    pub fn new(config: &GeneratorConfig) -> Result<Self, InputError> {
        if config.conditioning != Conditioning::Mediapipe {
            return Err(InputError::UnavailableConditioning { config: config.name.clone() });
        }
        let size = config.image_size;
        Ok(Self {
            size,
            id_dim: config.id_dim,
            config_name: config.name.clone(),
            embedder: config.embedder.clone(),
            conditioner: Conditioner::new(Topology::mediapipe(), size)?,
            unit: Vec::new(),
            pose: [
                HostTensor::zeros(&[1, IMAGE_CHANNELS, size, size]),
                HostTensor::zeros(&[1, IMAGE_CHANNELS, size, size]),
                HostTensor::zeros(&[1, NUM_KEYPOINTS, 2]),
            ],
        })
    }

    /// `driving` without allocating: the driving line, mouth line and keypoints written into buffers kept here and
    /// returned in that order (valid until the next call).
    pub fn driving_into(&mut self, driving: &[[f32; 3]], crop_side_px: f32) -> Result<&[HostTensor; 3], InputError> {
        self.load_unit(driving, crop_side_px);
        let [line, mouth, ldmk] = &mut self.pose;
        canvas_to_tensor(self.conditioner.draw(&self.unit)?, line)?;
        let keypoints = self.conditioner.keypoints(&self.unit)?;
        mouth_line_into(line, &keypoints, mouth);
        for (dst, src) in ldmk.data_mut().iter_mut().zip(keypoints.iter().flatten()) {
            *dst = *src;
        }
        Ok(&self.pose)
    }

    /// Side of the pictures the model works on.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The picture as `[1, 3, S, S]` in [0, 1], resized to the model's side when needed.
    pub fn image(&self, picture: &RgbImage) -> HostTensor {
        let side = self.size as u32;
        let resized;
        let picture = if picture.dimensions() == (side, side) {
            picture
        } else {
            resized = image::imageops::resize(picture, side, side, image::imageops::FilterType::Triangle);
            &resized
        };
        let mut out = HostTensor::zeros(&[1, IMAGE_CHANNELS, self.size, self.size]);
        write_planar_unit(picture, out.data_mut());
        out
    }

    /// Checks that identity vectors made by embedder `tag` suit this model. `None` is an identity from before
    /// embedders were recorded, when the provisioned dlib network was the only one.
    pub fn check_embedder(&self, tag: Option<&str>) -> Result<(), InputError> {
        let tag = tag.unwrap_or(crate::face::embed::DLIB_EMBEDDER_TAG);
        if tag == EXTERNAL_EMBEDDER {
            tracing::info!(
                model = self.embedder,
                "identity vector from a file of unnamed origin: only its size is checked"
            );
            return Ok(());
        }
        if tag != self.embedder {
            return Err(InputError::EmbedderMismatch {
                config: self.config_name.clone(),
                expected: self.embedder.clone(),
                actual: tag.to_owned(),
            });
        }
        Ok(())
    }

    /// `[1, id_dim]` with unit L2 norm.
    pub fn id_vector(&self, id: &[f32]) -> Result<HostTensor, InputError> {
        if id.len() != self.id_dim {
            return Err(InputError::IdDim { expected: self.id_dim, actual: id.len() });
        }
        let norm = id.iter().map(|v| v * v).sum::<f32>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(InputError::IdNorm);
        }
        HostTensor::new(vec![1, self.id_dim], id.iter().map(|v| v / norm).collect()).map_err(|_| InputError::IdNorm)
    }

    fn load_unit(&mut self, landmarks_px: &[[f32; 3]], crop_side_px: f32) {
        self.unit.clear();
        self.unit.extend(landmarks_px.iter().map(|p| [p[0] / crop_side_px, p[1] / crop_side_px]));
    }

    /// The landmark-line image of `landmarks_px` (pixels of a `crop_side_px` crop) as `[1, 3, S, S]`.
    pub fn line(&mut self, landmarks_px: &[[f32; 3]], crop_side_px: f32) -> Result<HostTensor, InputError> {
        self.load_unit(landmarks_px, crop_side_px);
        let mut out = HostTensor::zeros(&[1, IMAGE_CHANNELS, self.size, self.size]);
        canvas_to_tensor(self.conditioner.draw(&self.unit)?, &mut out)?;
        Ok(out)
    }

    /// Every input for one frame: the portrait (`source`, its landmarks) posed as `driving` (all landmarks in pixels
    /// of a `crop_side_px` crop), with identity `id`.
    pub fn frame(
        &mut self,
        source: &RgbImage,
        source_landmarks: &[[f32; 3]],
        driving: &[[f32; 3]],
        id: &[f32],
        crop_side_px: f32,
    ) -> Result<GeneratorInputs<HostTensor>, InputError> {
        let src_id = self.id_vector(id)?;
        let source_line = self.line(source_landmarks, crop_side_px)?;
        let (driving_line, mouth_line, driving_ldmk) = self.driving(driving, crop_side_px)?;
        Ok(GeneratorInputs { source: self.image(source), source_line, driving_line, mouth_line, driving_ldmk, src_id })
    }

    /// The per-frame inputs of a pose: driving line, mouth line and keypoints.
    pub fn driving(
        &mut self,
        driving: &[[f32; 3]],
        crop_side_px: f32,
    ) -> Result<(HostTensor, HostTensor, HostTensor), InputError> {
        let line = self.line(driving, crop_side_px)?;
        let keypoints = self.conditioner.keypoints(&self.unit)?;
        let mouth = mouth_line(&line, &mouth_mask(&keypoints, self.size));
        let ldmk = HostTensor::new(vec![1, NUM_KEYPOINTS, 2], keypoints.iter().flatten().copied().collect())
            .unwrap_or_else(|_| HostTensor::zeros(&[1, NUM_KEYPOINTS, 2]));
        Ok((line, mouth, ldmk))
    }
}

/// Writes `picture` into `dst` as planar RGB in [0, 1] (`/255`), the layout of every network input; `dst` holds
/// `3 · width · height` values.
pub fn write_planar_unit(picture: &RgbImage, dst: &mut [f32]) {
    let plane = (picture.width() * picture.height()) as usize;
    for (i, p) in picture.pixels().enumerate() {
        for c in 0..IMAGE_CHANNELS {
            dst[c * plane + i] = f32::from(p[c]) / 255.0;
        }
    }
}

/// `clip(v, 0, 1) · 255`, rounded: one network output value as an 8-bit level.
fn unit_to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Planar RGB of a `width × height` picture (about [0, 1]) as 8 bits: `clip(v, 0, 1) · 255`, as the official code
/// saves network outputs.
pub fn planar_unit_to_image(data: &[f32], width: usize, height: usize) -> RgbImage {
    let plane = width * height;
    let to_u8 = unit_to_u8;
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let i = y as usize * width + x as usize;
        image::Rgb([to_u8(data[i]), to_u8(data[plane + i]), to_u8(data[2 * plane + i])])
    })
}

/// `refine.prediction` (`[1, 3, S, S]`) as an 8-bit picture (`planar_unit_to_image`), written into `out` (resized
/// when its size differs from S).
pub fn prediction_to_image(prediction: &HostTensor, out: &mut RgbImage) -> Result<(), InputError> {
    let &[1, 3, h, w] = prediction.shape() else {
        return Err(InputError::PredictionShape(prediction.shape().to_vec()));
    };
    if out.dimensions() == (w as u32, h as u32) {
        // In place: no picture is allocated per frame.
        let (data, plane) = (prediction.data(), w * h);
        let to_u8 = unit_to_u8;
        for (i, px) in out.pixels_mut().enumerate() {
            px.0 = [to_u8(data[i]), to_u8(data[plane + i]), to_u8(data[2 * plane + i])];
        }
        return Ok(());
    }
    let picture = planar_unit_to_image(prediction.data(), w, h);
    {
        *out = image::imageops::resize(&picture, out.width(), out.height(), image::imageops::FilterType::Triangle);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> InputBuilder {
        InputBuilder::new(&GeneratorConfig::resolve("tiny").expect("tiny preset")).expect("builder")
    }

    #[test]
    fn id_vectors_are_normalised_and_checked() {
        let b = builder();
        let id: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let t = b.id_vector(&id).expect("valid");
        let norm = t.data().iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert!(matches!(b.id_vector(&id[..31]), Err(InputError::IdDim { expected: 32, actual: 31 })));
        assert!(matches!(b.id_vector(&[0.0; 32]), Err(InputError::IdNorm)));
    }

    #[test]
    fn identities_from_another_embedder_are_refused() {
        let b = builder();
        assert!(b.check_embedder(Some(crate::face::embed::DLIB_EMBEDDER_TAG)).is_ok());
        assert!(b.check_embedder(None).is_ok(), "untagged identities come from the dlib network");
        assert!(b.check_embedder(Some(EXTERNAL_EMBEDDER)).is_ok());
        let err = b.check_embedder(Some("arcface-0123456789abcdef")).unwrap_err().to_string();
        assert!(err.contains("arcface-0123456789abcdef") && err.contains("dlib-resnet-v1"), "{err}");
    }

    #[test]
    fn models_trained_on_the_official_landmarks_are_refused_with_the_way_out() {
        let err = InputBuilder::new(&GeneratorConfig::official()).err().expect("refused").to_string();
        assert!(err.contains("669") && err.contains("reconstruct"), "{err}");
    }

    #[test]
    fn images_are_planar_unit_range_and_predictions_round_trip() {
        let b = builder();
        let picture = RgbImage::from_fn(256, 256, |x, y| image::Rgb([x as u8, y as u8, 200]));
        let t = b.image(&picture);
        assert_eq!(t.shape(), [1, 3, 256, 256]);
        assert_eq!(t.data()[256 + 7], 7.0 / 255.0);
        assert_eq!(t.data()[2 * 65536], 200.0 / 255.0);
        let mut back = RgbImage::new(256, 256);
        prediction_to_image(&t, &mut back).expect("converts");
        assert_eq!(back, picture);
        let out_of_range = HostTensor::new(vec![1, 3, 1, 1], vec![-0.5, 1.5, 0.5]).unwrap();
        let mut px = RgbImage::new(1, 1);
        prediction_to_image(&out_of_range, &mut px).expect("converts");
        assert_eq!(px.get_pixel(0, 0).0, [0, 255, 128]);
        assert!(prediction_to_image(&HostTensor::zeros(&[3, 4]), &mut back).is_err());
    }
}
