//! Generator configuration: every width of the warping and refinement networks.
//!
//! Owns the one configuration schema (the fixture config JSON schema; unknown fields are ignored so the fixture files
//! load as they are) and the two presets, `official` and `tiny`. Receives a preset name or a JSON path; emits a
//! validated `GeneratorConfig` from which every layer width is derived, plus what the weights were trained on: the
//! landmark topology of their conditioning and the face embedder of their identity vectors (both default to ours —
//! MediaPipe and the provisioned dlib network — so existing JSON files keep their meaning; the `official` preset
//! names the release's 669-point landmarks and private embedder).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Channels of the landmark-line condition: source line + driving line, RGB each.
pub const LDMK_LINE_CHANNELS: usize = 6;
/// Channels of the mouth-line condition (RGB).
pub const MOUTH_LINE_CHANNELS: usize = 3;
/// Image channels (RGB).
pub const IMAGE_CHANNELS: usize = 3;
/// Number of role keypoints fed as `driving_ldmk`.
pub const NUM_KEYPOINTS: usize = 58;
/// Gaze heatmaps are drawn for keypoints `GAZE_KP_START..GAZE_KP_END`.
pub const GAZE_KP_START: usize = 29;
/// One past the last gaze keypoint (8 gaze heatmaps).
pub const GAZE_KP_END: usize = 37;
/// Variance of the gaze Gaussian heatmaps, in normalised coordinates.
pub const KP_VARIANCE: f32 = 0.005;
/// Extra SPADE label channels beyond the deformed features: occlusion 1 + gaze 8 + landmark lines 6 + mouth line 3.
pub const LABEL_NC_EXTRA: usize = 1 + (GAZE_KP_END - GAZE_KP_START) + LDMK_LINE_CHANNELS + MOUTH_LINE_CHANNELS;
/// Number of SPADE resnet blocks (head_0, G_middle_0, G_middle_1, up_0..up_3).
pub const SPADE_BLOCKS: usize = 7;
/// Number of stride-2 layers in the ladder encoder.
pub const LADDER_LAYERS: usize = 6;
/// Spatial side of the ladder encoder's last feature map (256 / 2^6).
pub const LADDER_FINAL_SIDE: usize = 4;
/// Side of the 4×4 seed produced by the SPADE generator's transposed convolution.
pub const SPADE_SEED_SIDE: usize = 4;
/// Side of the dense-motion flow field.
pub const MOTION_SIDE: usize = 64;

/// The landmark layout a model's line images and keypoints were drawn from in training, so the one live and
/// offline rendering must draw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Conditioning {
    /// MediaPipe's 478-point mesh (our tracker): every model this project trains or adapts.
    #[default]
    Mediapipe,
    /// The official 669-point dense landmarks of the released data, from a tracker that is not public: only the
    /// official preprocessed data has them (`reconstruct`).
    Official669,
}

impl Conditioning {
    /// The name used in config files and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mediapipe => "mediapipe",
            Self::Official669 => "official669",
        }
    }
}

/// Embedder tag of the released weights' identity vectors: a face-recognition network that was never published.
pub const OFFICIAL_EMBEDDER: &str = "official-release";

fn default_embedder() -> String {
    crate::face::embed::DLIB_EMBEDDER_TAG.to_owned()
}

/// A generator configuration the dataflow cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A width or count is zero.
    #[error("`{field}` must be positive")]
    NotPositive {
        /// The field.
        field: &'static str,
    },
    /// The image size is not the one the networks are built for.
    #[error("image_size {image_size} is not supported (only {SUPPORTED_IMAGE_SIZE})")]
    ImageSize {
        /// The configured size.
        image_size: usize,
    },
    /// The dense-motion hourglass has another depth.
    #[error("the dense-motion hourglass must have 5 blocks and dec_lease 2 (64² flow at 256²)")]
    Hourglass,
    /// The feature encoder has another depth.
    #[error("the feature encoder must have 3 blocks (4 pyramid levels 32..256)")]
    EncoderBlocks,
    /// The ladder style does not fit the ADAIN layers.
    #[error(
        "motion_adain_c ({motion_adain_c}) must equal ladder_z_dim ({ladder_z_dim}): the ladder style drives every ADAIN"
    )]
    AdainChannels {
        /// `motion_adain_c`.
        motion_adain_c: usize,
        /// `ladder_z_dim`.
        ladder_z_dim: usize,
    },
}

/// All widths of the generator. Field names follow the fixture config JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Label of the configuration (`official`, `tiny`; `custom` when a JSON file omits it); the networks ignore it.
    #[serde(default = "default_name")]
    pub name: String,
    /// Side of the square source, driving and output images, px; only `SUPPORTED_IMAGE_SIZE` (256) is accepted.
    pub image_size: usize,
    /// Width of the ladder encoder's first layer; its six layers have 1, 2, 4, 8, 8 and 8 times this many channels.
    pub ladder_nef: usize,
    /// Length of the unit style vector the ladder encoder emits.
    pub ladder_z_dim: usize,
    /// Base width of the dense-motion hourglass: down block `i` has
    /// `min(motion_max_features, motion_block_expansion · 2^(i+1))` channels.
    pub motion_block_expansion: usize,
    /// Upper bound on every dense-motion hourglass width.
    pub motion_max_features: usize,
    /// Down blocks of the dense-motion hourglass; must be 5.
    pub motion_num_blocks: usize,
    /// Finest hourglass levels the dense-motion decoder skips, so the flow stays at 64² for 256² images; must be 2.
    pub motion_dec_lease: usize,
    /// Style length the dense-motion ADAIN layers read; must equal `ladder_z_dim`.
    pub motion_adain_c: usize,
    /// Hidden width of the style MLP inside each dense-motion ADAIN.
    pub adain_hidden: usize,
    /// Base width of the feature encoder: level `i` has `min(encoder_max_features, encoder_block_expansion · 2^i)`
    /// channels.
    pub encoder_block_expansion: usize,
    /// Upper bound on every feature-encoder width.
    pub encoder_max_features: usize,
    /// Down blocks of the feature encoder; must be 3 (four pyramid levels, 32² to 256²).
    pub encoder_num_blocks: usize,
    /// Base width `nf` of the SPADE generator: its blocks go from 16·nf channels at the 4×4 seed down to nf.
    pub spade_conv_dim: usize,
    /// Hidden width of the shared conv each SPADE norm applies to its label map.
    pub spade_hidden: usize,
    /// Length of the identity embedding (`src_id`) that seeds the SPADE generator and drives its AdaIN.
    pub id_dim: usize,
    /// Landmark layout of the conditioning (`"mediapipe"` when absent).
    #[serde(default)]
    pub conditioning: Conditioning,
    /// Which face embedder made the identity vectors the weights were trained with (`face::embed` tags; the
    /// provisioned dlib network when absent). Identities made by another embedder are refused.
    #[serde(default = "default_embedder")]
    pub embedder: String,
}

fn default_name() -> String {
    "custom".to_owned()
}

/// The image side the networks are built for; other sizes are resized by the ladder encoder in the reference but the
/// rest of the dataflow (64² motion, 4 pyramid levels) assumes it.
pub const SUPPORTED_IMAGE_SIZE: usize = 256;

impl GeneratorConfig {
    /// The configuration of the released MetaPortrait checkpoint (`meta_portrait_256_eval.yaml`).
    pub fn official() -> Self {
        Self {
            name: "official".into(),
            image_size: 256,
            ladder_nef: 64,
            ladder_z_dim: 512,
            motion_block_expansion: 64,
            motion_max_features: 1024,
            motion_num_blocks: 5,
            motion_dec_lease: 2,
            motion_adain_c: 512,
            adain_hidden: 128,
            encoder_block_expansion: 64,
            encoder_max_features: 512,
            encoder_num_blocks: 3,
            spade_conv_dim: 32,
            spade_hidden: 128,
            id_dim: 256,
            conditioning: Conditioning::Official669,
            embedder: OFFICIAL_EMBEDDER.to_owned(),
        }
    }

    /// A narrow configuration for tests and quick experiments (the parity fixture's widths).
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            image_size: 256,
            ladder_nef: 8,
            ladder_z_dim: 32,
            motion_block_expansion: 8,
            motion_max_features: 64,
            motion_num_blocks: 5,
            motion_dec_lease: 2,
            motion_adain_c: 32,
            adain_hidden: 16,
            encoder_block_expansion: 8,
            encoder_max_features: 64,
            encoder_num_blocks: 3,
            spade_conv_dim: 4,
            spade_hidden: 16,
            id_dim: 32,
            conditioning: Conditioning::Mediapipe,
            embedder: default_embedder(),
        }
    }

    /// `official`, `tiny`, or a path to a JSON file in the fixture schema.
    pub fn resolve(spec: &str) -> Result<Self, ModelError> {
        match spec {
            "official" => Ok(Self::official()),
            "tiny" => Ok(Self::tiny()),
            path => Self::from_json_file(Path::new(path)),
        }
    }

    /// Reads and validates a JSON file in the fixture schema.
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses and validates JSON text in the fixture schema; `origin` names where it came from in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let cfg: Self = serde_json::from_str(text)
            .map_err(|e| ModelError::Config { origin: origin.to_owned(), reason: e.to_string() })?;
        cfg.validate().map_err(|e| ModelError::Config { origin: origin.to_owned(), reason: e.to_string() })?;
        Ok(cfg)
    }

    /// Checks the structural assumptions the dataflow relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("ladder_nef", self.ladder_nef),
            ("ladder_z_dim", self.ladder_z_dim),
            ("motion_block_expansion", self.motion_block_expansion),
            ("motion_max_features", self.motion_max_features),
            ("motion_adain_c", self.motion_adain_c),
            ("adain_hidden", self.adain_hidden),
            ("encoder_block_expansion", self.encoder_block_expansion),
            ("encoder_max_features", self.encoder_max_features),
            ("spade_conv_dim", self.spade_conv_dim),
            ("spade_hidden", self.spade_hidden),
            ("id_dim", self.id_dim),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::NotPositive { field: name });
        }
        if self.image_size != SUPPORTED_IMAGE_SIZE {
            return Err(ConfigError::ImageSize { image_size: self.image_size });
        }
        if self.motion_num_blocks != 5 || self.motion_dec_lease != 2 {
            return Err(ConfigError::Hourglass);
        }
        if self.encoder_num_blocks != 3 {
            return Err(ConfigError::EncoderBlocks);
        }
        if self.motion_adain_c != self.ladder_z_dim {
            return Err(ConfigError::AdainChannels {
                motion_adain_c: self.motion_adain_c,
                ladder_z_dim: self.ladder_z_dim,
            });
        }
        Ok(())
    }

    /// Channel count of dense-motion down block `i` (0-based).
    pub fn motion_down_channels(&self, i: usize) -> usize {
        self.motion_max_features.min(self.motion_block_expansion << (i + 1))
    }

    /// Channels of the feature-encoder pyramid, coarsest (32²) first, after `fuse_high_res` at the finest level.
    pub fn feature_pyramid_channels(&self) -> Vec<usize> {
        let n = self.encoder_num_blocks;
        let mut out = vec![self.encoder_max_features.min(self.encoder_block_expansion << n)];
        for i in (0..n).rev() {
            out.push(self.encoder_max_features.min(self.encoder_block_expansion << i));
        }
        out
    }

    /// SPADE label channels per block: pyramid level 0 for the first four blocks, then levels 1..3.
    pub fn spade_label_channels(&self) -> [usize; SPADE_BLOCKS] {
        let p = self.feature_pyramid_channels();
        let level = [0, 0, 0, 0, 1, 2, 3];
        level.map(|l| p[l] + LABEL_NC_EXTRA)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_widths_match_the_reference_tables() {
        let official = GeneratorConfig::official();
        assert_eq!(official.feature_pyramid_channels(), vec![512, 256, 128, 64]);
        assert_eq!(official.spade_label_channels(), [530, 530, 530, 530, 274, 146, 82]);
        let tiny = GeneratorConfig::tiny();
        assert_eq!(tiny.feature_pyramid_channels(), vec![64, 32, 16, 8]);
        assert_eq!(tiny.spade_label_channels(), [82, 82, 82, 82, 50, 34, 26]);
    }

    #[test]
    fn rejects_inconsistent_configs() {
        let mut cfg = GeneratorConfig::tiny();
        cfg.motion_adain_c = 7;
        assert!(cfg.validate().unwrap_err().to_string().contains("motion_adain_c"));
        let err = GeneratorConfig::from_json_str("{\"image_size\": 256}", "inline").unwrap_err();
        assert!(err.to_string().contains("missing field"), "{err}");
    }

    #[test]
    fn conditioning_and_embedder_default_to_ours_and_round_trip() {
        let mut json = serde_json::to_value(GeneratorConfig::tiny()).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("conditioning");
        obj.remove("embedder");
        let cfg = GeneratorConfig::from_json_str(&json.to_string(), "inline").unwrap();
        assert_eq!(cfg, GeneratorConfig::tiny());
        assert_eq!(cfg.conditioning, Conditioning::Mediapipe);
        let official = serde_json::to_string(&GeneratorConfig::official()).unwrap();
        assert!(official.contains("\"conditioning\":\"official669\""), "{official}");
        assert_eq!(GeneratorConfig::from_json_str(&official, "inline").unwrap(), GeneratorConfig::official());
    }
}
