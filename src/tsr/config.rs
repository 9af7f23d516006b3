//! Temporal super-resolution configuration, in the official constructor-argument schema.
//!
//! Owns `TsrConfig` — the arguments of `GFPGANv1Clean_UnetWindow(...)` as written in `tsr_info.json` and the official
//! option files — its presets (`official`, `tiny`), and every width derived from it (U-Net and StyleGAN2 channel
//! tables, number of levels and latents). Receives a preset name, a JSON file (either the bare constructor object or
//! `{"constructor": {...}}`) or a JSON string; emits a validated config. Missing fields take the Python constructor's
//! defaults, so any file the official code accepts means the same thing here.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::ModelError;

/// A temporal SR configuration the network cannot be built for.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TsrConfigError {
    /// The output side is not a power of two from 8 up.
    #[error("out_size must be a power of two ≥ {}, got {out_size}", 2 * SEED_SIDE)]
    OutSize {
        /// The configured side.
        out_size: usize,
    },
    /// No style features.
    #[error("num_style_feat must be positive")]
    NumStyleFeat,
    /// The width multiplier is not a positive number.
    #[error("narrow must be a positive number, got {narrow}")]
    Narrow {
        /// The configured multiplier.
        narrow: f64,
    },
    /// Another temporal module than the released one.
    #[error("temp_type `{temp_type}` is not supported (only `{TEMP_TYPE_UNET_WINDOW}`, the released model's)")]
    TempType {
        /// The configured type.
        temp_type: String,
    },
    /// A noise setting other than zero or stored.
    #[error(
        "randomize_noise {randomize_noise} is not supported (use \"zero\", as released, or false for the stored noise)"
    )]
    Noise {
        /// The configured value, as JSON.
        randomize_noise: String,
    },
    /// `sft_half = false`.
    #[error("sft_half = false is not supported (the reference cannot run it with temp_type unet_window)")]
    SftHalf,
    /// The width multiplier leaves a level without channels.
    #[error("narrow {narrow} leaves no channels at {side}×{side}")]
    NoChannels {
        /// The configured multiplier.
        narrow: f64,
        /// The level's side.
        side: usize,
    },
    /// SFT needs the decoder twice as wide as the U-Net.
    #[error(
        "narrow {narrow} gives {decoder} decoder channels at {side}×{side}, not twice the U-Net's {unet} as SFT needs"
    )]
    SftChannels {
        /// The configured multiplier.
        narrow: f64,
        /// The level's side.
        side: usize,
        /// Decoder channels there.
        decoder: usize,
        /// U-Net channels there.
        unet: usize,
    },
}

/// The only temporal mixing the released model uses (`temp_type`); the others need modules it does not have.
pub const TEMP_TYPE_UNET_WINDOW: &str = "unet_window";
/// `randomize_noise = "zero"`: the StyleGAN2 noise inputs are zeros (the released setting; deterministic).
pub const NOISE_ZERO: &str = "zero";
/// Side of the StyleGAN2 constant input and of the U-Net bottleneck.
pub const SEED_SIDE: usize = 4;
/// log2 of `SEED_SIDE`.
const SEED_LOG2: u32 = 2;
/// Negative slope of every leaky ReLU in the network.
pub const LEAKY_SLOPE: f32 = 0.2;
/// Temporal window of every mixing block: frames t−1, t, t+1.
pub const WINDOW_FRAMES: usize = 3;
/// Frames per chunk in the official offline test (`val.temp_psz`).
pub const OFFICIAL_CHUNK_FRAMES: usize = 16;

/// How the StyleGAN2 noise inputs are filled (`randomize_noise`). `true` (fresh random noise per call) is refused:
/// it makes outputs non-reproducible and the released model is used with zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseMode {
    /// `"zero"`: no noise.
    Zero,
    /// `false`: the stored `noises.noise{i}` buffers.
    Stored,
}

/// Arguments of `GFPGANv1Clean_UnetWindow`. Field names are the Python argument names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TsrConfig {
    /// Label of the configuration (`official`, `tiny`, or a JSON file's stem); not a constructor argument, so
    /// `to_json` leaves it out, and the network ignores it.
    #[serde(default = "default_name", skip_serializing)]
    pub name: String,
    /// Side of the square output frames, px (512 released); a power of two ≥ 8. Inputs are this side or half of it.
    pub out_size: usize,
    /// Length of one StyleGAN2 latent (the style feature width).
    #[serde(default = "default_num_style_feat")]
    pub num_style_feat: usize,
    /// StyleGAN2 width multiplier of the 64² and finer levels.
    #[serde(default = "default_channel_multiplier")]
    pub channel_multiplier: usize,
    /// Linear layers of the StyleGAN2 style MLP (skipped when `input_is_latent`).
    #[serde(default = "default_num_mlp")]
    pub num_mlp: usize,
    /// Whether the U-Net's style code is used as the latents directly, without normalisation and the style MLP.
    #[serde(default)]
    pub input_is_latent: bool,
    /// Whether every StyleGAN2 layer gets its own latent (`num_latent` of them) rather than one shared latent.
    #[serde(default)]
    pub different_w: bool,
    /// Width multiplier (> 0) of the decoder's channel table; the U-Net uses half of it.
    #[serde(default = "default_narrow")]
    pub narrow: f64,
    /// Whether SFT modulates only the second half of the decoder's channels; must be `true`.
    #[serde(default)]
    pub sft_half: bool,
    /// The noise setting as the Python constructor takes it: `"zero"` (released) or `false` (stored buffers); read
    /// it through `noise_mode`.
    #[serde(default = "default_randomize_noise")]
    pub randomize_noise: serde_json::Value,
    /// The temporal mixing module; must be `TEMP_TYPE_UNET_WINDOW`.
    #[serde(default = "default_temp_type")]
    pub temp_type: String,
    // Training-time switches: accepted so official files load, without effect on the forward pass.
    /// Training: keep the StyleGAN2 decoder frozen. No effect on the forward pass.
    #[serde(default = "default_true")]
    pub fix_decoder: bool,
    /// Training: also return the intermediate RGB images. No effect on the forward pass.
    #[serde(default = "default_true")]
    pub return_rgb: bool,
    /// Training: the reference constructor's initialisation switch. No effect on the forward pass.
    #[serde(default = "default_true")]
    pub zero_out_init: bool,
}

fn default_name() -> String {
    "custom".to_owned()
}
fn default_num_style_feat() -> usize {
    512
}
fn default_channel_multiplier() -> usize {
    1
}
fn default_num_mlp() -> usize {
    8
}
fn default_narrow() -> f64 {
    1.0
}
fn default_randomize_noise() -> serde_json::Value {
    serde_json::Value::String(NOISE_ZERO.to_owned())
}
fn default_temp_type() -> String {
    TEMP_TYPE_UNET_WINDOW.to_owned()
}
fn default_true() -> bool {
    true
}

/// Key under which `tsr_info.json` nests the constructor arguments.
const CONSTRUCTOR_KEY: &str = "constructor";

impl TsrConfig {
    /// The released temporal SR model (`sr_model/options/test/same_id.yml`).
    pub fn official() -> Self {
        Self {
            name: "official".into(),
            out_size: 512,
            num_style_feat: 512,
            channel_multiplier: 2,
            num_mlp: 8,
            input_is_latent: true,
            different_w: true,
            narrow: 1.0,
            sft_half: true,
            randomize_noise: default_randomize_noise(),
            temp_type: default_temp_type(),
            fix_decoder: true,
            return_rgb: false,
            zero_out_init: true,
        }
    }

    /// The parity-fixture size: 64² output, every width divided by 16.
    pub fn tiny() -> Self {
        Self { name: "tiny".into(), out_size: 64, num_style_feat: 32, narrow: 0.0625, ..Self::official() }
    }

    /// `official`, `tiny`, or a path to a JSON file.
    pub fn resolve(spec: &str) -> Result<Self, ModelError> {
        match spec {
            "official" => Ok(Self::official()),
            "tiny" => Ok(Self::tiny()),
            path => Self::from_json_file(Path::new(path)),
        }
    }

    /// Reads and validates a JSON file (bare constructor arguments or under `constructor`); a config without a
    /// `name` is named after the file's stem.
    pub fn from_json_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        let mut cfg = Self::from_json_str(&text, &path.display().to_string())?;
        if cfg.name == default_name() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(default_name);
        }
        Ok(cfg)
    }

    /// Parses constructor arguments (bare or under `constructor`); `origin` names the source in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self, ModelError> {
        let bad = |reason: String| ModelError::Config { origin: origin.to_owned(), reason };
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(inner) = value.get_mut(CONSTRUCTOR_KEY) {
            value = inner.take();
        }
        let cfg: TsrConfig = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(|e| ModelError::Config { origin: origin.to_owned(), reason: e.to_string() })?;
        Ok(cfg)
    }

    /// The constructor arguments as a JSON object (written into weight-file metadata).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), TsrConfigError> {
        if !self.out_size.is_power_of_two() || self.out_size < 2 * SEED_SIDE {
            return Err(TsrConfigError::OutSize { out_size: self.out_size });
        }
        if self.num_style_feat == 0 {
            return Err(TsrConfigError::NumStyleFeat);
        }
        if !(self.narrow.is_finite() && self.narrow > 0.0) {
            return Err(TsrConfigError::Narrow { narrow: self.narrow });
        }
        if self.temp_type != TEMP_TYPE_UNET_WINDOW {
            return Err(TsrConfigError::TempType { temp_type: self.temp_type.clone() });
        }
        self.noise_mode()?;
        if !self.sft_half {
            // The reference sizes its up-path temporal windows for 2× channels then, and its forward fails.
            return Err(TsrConfigError::SftHalf);
        }
        for side in (SEED_LOG2..=self.log_size()).map(|l| 1usize << l) {
            if self.unet_channels(side) == 0 {
                return Err(TsrConfigError::NoChannels { narrow: self.narrow, side });
            }
            if side > SEED_SIDE && self.decoder_channels(side) != 2 * self.unet_channels(side) {
                return Err(TsrConfigError::SftChannels {
                    narrow: self.narrow,
                    side,
                    decoder: self.decoder_channels(side),
                    unet: self.unet_channels(side),
                });
            }
        }
        Ok(())
    }

    /// How the network's noise inputs are set.
    pub fn noise_mode(&self) -> Result<NoiseMode, TsrConfigError> {
        match &self.randomize_noise {
            serde_json::Value::String(s) if s == NOISE_ZERO => Ok(NoiseMode::Zero),
            serde_json::Value::Bool(false) => Ok(NoiseMode::Stored),
            other => Err(TsrConfigError::Noise { randomize_noise: other.to_string() }),
        }
    }

    /// log2 of the output side.
    pub fn log_size(&self) -> u32 {
        self.out_size.trailing_zeros()
    }

    /// Number of U-Net levels (down blocks = up blocks = SFT levels): `log_size − 2`.
    pub fn levels(&self) -> usize {
        (self.log_size() - SEED_LOG2) as usize
    }

    /// StyleGAN2 latents per image: `2·log_size − 2`.
    pub fn num_latent(&self) -> usize {
        2 * self.log_size() as usize - 2
    }

    /// StyleGAN2 conv layers (one per noise buffer): `2·levels + 1`.
    pub fn num_style_layers(&self) -> usize {
        2 * self.levels() + 1
    }

    /// Width of the style code `final_linear` emits per frame.
    pub fn style_code_len(&self) -> usize {
        if self.different_w { self.num_latent() * self.num_style_feat } else { self.num_style_feat }
    }

    /// The channel table shared by the U-Net (`narrow / 2`) and the decoder (`narrow`), with Python's float
    /// arithmetic and `int()` truncation in the same order as the reference.
    fn channel_table(&self, side: usize, narrow: f64) -> usize {
        let cm = self.channel_multiplier as f64;
        let value = match side {
            4..=32 => 512.0 * narrow,
            64 => 256.0 * cm * narrow,
            128 => 128.0 * cm * narrow,
            256 => 64.0 * cm * narrow,
            512 => 32.0 * cm * narrow,
            1024 => 16.0 * cm * narrow,
            // Larger sides keep halving, as the table would if extended.
            _ => 16.0 * cm * narrow * 1024.0 / side as f64,
        };
        value as usize
    }

    /// U-Net channels at a side (`narrow · 0.5`).
    pub fn unet_channels(&self, side: usize) -> usize {
        self.channel_table(side, self.narrow * 0.5)
    }

    /// StyleGAN2 decoder channels at a side.
    pub fn decoder_channels(&self, side: usize) -> usize {
        self.channel_table(side, self.narrow)
    }

    /// Channels of each SFT scale/shift map at a side: the U-Net's, i.e. half the decoder's (`sft_half`).
    pub fn sft_channels(&self, side: usize) -> usize {
        self.unet_channels(side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_widths() {
        let official = TsrConfig::official();
        assert_eq!((official.levels(), official.num_latent(), official.style_code_len()), (7, 16, 8192));
        assert_eq!(official.unet_channels(512), 32);
        assert_eq!(official.unet_channels(4), 256);
        assert_eq!(official.decoder_channels(64), 512);
        let tiny = TsrConfig::tiny();
        assert_eq!((tiny.levels(), tiny.num_latent(), tiny.style_code_len()), (4, 10, 320));
        assert!((4usize..=64).filter(|s| s.is_power_of_two()).all(|s| tiny.unet_channels(s) == 16));
        assert_eq!(tiny.decoder_channels(64), 32);
    }

    #[test]
    fn files_load_bare_or_wrapped_with_python_defaults() {
        let json = r#"{"out_size": 64, "narrow": 0.0625, "num_style_feat": 32, "sft_half": true}"#;
        let bare = TsrConfig::from_json_str(json, "t").unwrap();
        assert_eq!(bare.channel_multiplier, 1);
        assert!(!bare.different_w && !bare.input_is_latent);
        assert_eq!(bare.noise_mode(), Ok(NoiseMode::Zero));
        let wrapped = format!(r#"{{"constructor": {}, "parameters": 1}}"#, TsrConfig::tiny().to_json());
        let tiny = TsrConfig::from_json_str(&wrapped, "t").unwrap();
        assert_eq!(TsrConfig { name: "tiny".into(), ..tiny }, TsrConfig::tiny());
    }

    #[test]
    fn invalid_configs_are_refused_with_the_reason() {
        let cases = [
            (r#"{"out_size": 96}"#, "power of two"),
            (r#"{"out_size": 64}"#, "sft_half"),
            (r#"{"out_size": 64, "sft_half": true, "temp_type": "recurrent"}"#, "temp_type"),
            (r#"{"out_size": 64, "sft_half": true, "randomize_noise": true}"#, "randomize_noise"),
            (r#"{"out_size": 64, "sft_half": true, "narrow": 0.001}"#, "no channels"),
            (r#"{"out_size": 64, "sft_half": true, "narrow": 0.3}"#, "twice"),
            (r#"{"out_size": 64, "narrow": -1}"#, "positive"),
            (r#"{"size": 64}"#, "out_size"),
        ];
        for (json, needle) in cases {
            let msg = TsrConfig::from_json_str(json, "case").unwrap_err().to_string();
            assert!(msg.contains(needle), "{json}: {msg}");
        }
    }
}
