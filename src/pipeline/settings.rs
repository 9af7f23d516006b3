//! The user's window settings: what the panel's controls are set to.
//!
//! Owns `UiSettings`, a plain serde struct. The window starts from the settings in `WindowInputs`, announces them to
//! the pipeline as `UiCommand`s, edits them as the user works the controls, and returns the final value from
//! `run_window` so the caller can persist it with `save` (atomic) and restore it with `load`.

use serde::{Deserialize, Serialize};

use crate::face::motion::MotionMode;

/// Smoothing strength when nothing was saved: light enough to keep expressions, strong enough to hide jitter.
pub const DEFAULT_SMOOTHING: f32 = 0.5;
/// Range of the smoothing slider (0: raw landmarks, 1: strongest temporal filter).
pub const SMOOTHING_RANGE: std::ops::RangeInclusive<f32> = 0.0..=1.0;

/// Everything the panel lets the user set. Unknown or missing fields fall back to their defaults when
/// deserializing, so saved files survive adding a setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UiSettings {
    /// Id of the identity to animate; `None` until the user picks one.
    pub selected_identity: Option<String>,
    /// How driving motion is applied to the portrait.
    pub motion_mode: MotionMode,
    /// In `SMOOTHING_RANGE`.
    pub smoothing: f32,
    /// Temporal super-resolution on the output.
    pub tsr_enabled: bool,
    /// Draw the landmark dots over the camera preview.
    pub show_landmarks: bool,
}

impl Default for UiSettings {
    fn default() -> Self {
        Self {
            selected_identity: None,
            motion_mode: MotionMode::default(),
            smoothing: DEFAULT_SMOOTHING,
            tsr_enabled: true,
            show_landmarks: true,
        }
    }
}

impl UiSettings {
    /// The same settings with every value brought into its valid range (a hand-edited file may hold anything).
    pub fn sanitized(mut self) -> Self {
        self.smoothing = if self.smoothing.is_finite() {
            self.smoothing.clamp(*SMOOTHING_RANGE.start(), *SMOOTHING_RANGE.end())
        } else {
            DEFAULT_SMOOTHING
        };
        self
    }
}

impl UiSettings {
    /// The settings saved at `path`: defaults when there is no file yet; a file that cannot be read or parsed is
    /// reported, moved aside to `<path>.bad` (so the user's edits are not lost) and replaced by defaults.
    pub fn load(path: &std::path::Path) -> Self {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "settings: cannot read; using defaults");
                return Self::default();
            }
        };
        match serde_json::from_str::<Self>(&text) {
            Ok(settings) => settings.sanitized(),
            Err(error) => {
                let aside = path.with_extension("json.bad");
                tracing::warn!(
                    path = %path.display(), %error, aside = %aside.display(),
                    "settings: not valid; moved aside, using defaults"
                );
                let _ = std::fs::rename(path, &aside);
                Self::default()
            }
        }
    }

    /// Writes the settings to `path` atomically (a crash leaves the old file or the new one).
    pub fn save(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::atomic_file::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_a_corrupt_file_is_kept_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        assert_eq!(UiSettings::load(&path), UiSettings::default());
        let settings = UiSettings { smoothing: 0.2, tsr_enabled: false, ..UiSettings::default() };
        settings.save(&path).expect("saves");
        assert_eq!(UiSettings::load(&path), settings);
        std::fs::write(&path, b"{not json").expect("write");
        assert_eq!(UiSettings::load(&path), UiSettings::default());
        assert_eq!(std::fs::read(dir.path().join("settings.json.bad")).expect("kept aside"), b"{not json");
    }

    #[test]
    fn missing_fields_take_defaults() {
        let parsed: UiSettings = serde_json::from_str(r#"{"smoothing": 0.25}"#).expect("valid json");
        assert_eq!(parsed, UiSettings { smoothing: 0.25, ..UiSettings::default() });
    }

    #[test]
    fn round_trips_through_json() {
        let settings = UiSettings {
            selected_identity: Some("ada".into()),
            motion_mode: MotionMode::Absolute,
            smoothing: 0.75,
            tsr_enabled: false,
            show_landmarks: false,
        };
        let text = serde_json::to_string(&settings).expect("serializable");
        assert_eq!(serde_json::from_str::<UiSettings>(&text).expect("parses"), settings);
    }

    #[test]
    fn sanitized_clamps_smoothing() {
        assert_eq!(UiSettings { smoothing: 7.0, ..UiSettings::default() }.sanitized().smoothing, 1.0);
        assert_eq!(
            UiSettings { smoothing: f32::NAN, ..UiSettings::default() }.sanitized().smoothing,
            DEFAULT_SMOOTHING
        );
    }
}
