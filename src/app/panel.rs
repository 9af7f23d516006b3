//! The side panel: identity library, personalization, motion and output controls, recording, live stats and the
//! camera preview.
//!
//! Owns only layout: every `*_ui` function here reads the `App`'s state, edits its settings and text fields, and
//! emits `UiCommand`s through `App::send` (never blocking). Receives nothing itself; what it shows was drained from
//! the input channels by `App`.

use eframe::egui;

use super::preview::camera_preview_ui;
use super::{App, RECALIBRATE_KEY, RECORD_KEY};
use crate::pipeline::messages::{MotionMode, Progress, UiCommand};
use crate::pipeline::settings::SMOOTHING_RANGE;

/// Starting width of the side panel, in points.
pub const SIDE_PANEL_WIDTH_PT: f32 = 320.0;
/// Widths the user may drag the side panel to, in points.
pub const SIDE_PANEL_WIDTH_RANGE_PT: std::ops::RangeInclusive<f32> = 260.0..=480.0;
/// Edge of an identity thumbnail, in points.
const THUMBNAIL_SIZE_PT: f32 = 32.0;
/// Colour of buttons that destroy something.
const DANGER_COLOR: egui::Color32 = egui::Color32::from_rgb(200, 60, 60);
/// Messages from the app (errors and confirmations).
const NOTICE_COLOR: egui::Color32 = egui::Color32::from_rgb(230, 170, 60);
/// Colour of the recording indicator.
const RECORDING_COLOR: egui::Color32 = egui::Color32::from_rgb(230, 40, 40);
const SECONDS_PER_MINUTE: f64 = 60.0;

/// `mm:ss` for a duration in seconds (negative or non-finite shows as 00:00).
pub fn format_elapsed(elapsed_s: f64) -> String {
    let total_s = if elapsed_s.is_finite() { elapsed_s.max(0.0).floor() } else { 0.0 };
    let minutes = (total_s / SECONDS_PER_MINUTE).floor();
    let seconds = total_s - minutes * SECONDS_PER_MINUTE;
    format!("{minutes:02.0}:{seconds:02.0}")
}

/// One line summarising where a personalization is.
pub fn progress_text(progress: &Progress) -> String {
    match *progress {
        Progress::ReadingClip { frames } => format!("reading the clip · {frames} frames"),
        Progress::Scoring { after, done, total } => {
            let when = if after { "after" } else { "before" };
            format!("held-out loss {when} training · {done}/{total}")
        }
        Progress::Training { step, total, loss, eta_s } => {
            let eta = eta_s.map_or_else(|| "ETA …".to_owned(), |s| format!("ETA {}", format_elapsed(f64::from(s))));
            format!("step {step}/{total} · loss {loss:.4} · {eta}")
        }
    }
}

impl App {
    /// The whole panel, scrollable.
    pub(super) fn side_panel_ui(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical().show(ui, |ui| {
            ui.heading("MetaPortrait");
            self.device_ui(ui);
            ui.separator();
            self.camera_ui(ui);
            ui.separator();
            self.identities_ui(ui);
            ui.separator();
            self.personalize_ui(ui);
            ui.separator();
            self.motion_ui(ui);
            ui.separator();
            self.recording_ui(ui);
            ui.separator();
            self.stats_ui(ui);
        });
    }

    /// Camera preview with the landmark overlay and its toggle.
    fn camera_ui(&mut self, ui: &mut egui::Ui) {
        camera_preview_ui(ui, &self.preview, self.settings.show_landmarks);
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.settings.show_landmarks, "Landmarks");
            ui.weak(format!("{} points", self.preview.landmarks_px().len()));
        });
    }

    fn device_ui(&self, ui: &mut egui::Ui) {
        let or_unknown = |s: &str| if s.is_empty() { "—".to_owned() } else { s.to_owned() };
        egui::Grid::new("device_grid").num_columns(2).show(ui, |ui| {
            ui.label("Engine");
            ui.label(or_unknown(&self.stats.engine));
            ui.end_row();
            ui.label("Device");
            ui.label(or_unknown(&self.stats.device));
            ui.end_row();
            ui.label("Input");
            ui.label(or_unknown(&self.stats.source));
            ui.end_row();
        });
        if let Some(hint) = &self.stats.hint {
            ui.add(egui::Label::new(egui::RichText::new(hint).weak()).wrap());
        }
        if let Some(notice) = &self.stats.notice {
            ui.add(egui::Label::new(egui::RichText::new(notice).color(NOTICE_COLOR)).wrap());
        }
        if self.pipeline_stopped {
            ui.colored_label(DANGER_COLOR, "The pipeline has stopped.");
        }
    }

    /// Library list (thumbnail, shortcut number, name), actions on the selected identity, and adding a portrait.
    fn identities_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Identities");
        if self.identities.is_empty() {
            ui.weak("No identities yet: add a portrait below.");
        }
        let mut clicked = None;
        for (index, entry) in self.identities.iter().enumerate() {
            ui.horizontal(|ui| {
                let size = egui::vec2(THUMBNAIL_SIZE_PT, THUMBNAIL_SIZE_PT);
                match self.thumbnails.get(&entry.id) {
                    Some(texture) => {
                        ui.add(egui::Image::new(egui::load::SizedTexture::new(texture.id(), size)));
                    }
                    None => {
                        let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                        ui.painter().rect_filled(rect, 2.0, egui::Color32::from_gray(40));
                    }
                }
                let selected = self.settings.selected_identity.as_ref() == Some(&entry.id);
                let label = if index < super::IDENTITY_KEYS.len() {
                    format!("{}  {}", index + 1, entry.name)
                } else {
                    entry.name.clone()
                };
                if ui.selectable_label(selected, label).clicked() {
                    clicked = Some(entry.id.clone());
                }
            });
        }
        if let Some(id) = clicked {
            self.select_identity(id);
        }
        self.selected_identity_actions_ui(ui);
        ui.horizontal(|ui| {
            ui.add(
                egui::TextEdit::singleline(&mut self.portrait_path)
                    .hint_text("portrait image path")
                    .desired_width(200.0),
            );
            let path = self.portrait_path.trim().to_owned();
            if ui.add_enabled(!path.is_empty(), egui::Button::new("Add")).clicked() {
                self.send(UiCommand::AddPortrait(path.into()));
                self.portrait_path.clear();
            }
        });
    }

    /// Rename (Enter saves, Escape cancels) and delete (with a confirming second click) for the selected identity.
    fn selected_identity_actions_ui(&mut self, ui: &mut egui::Ui) {
        let Some(id) = self.settings.selected_identity.clone() else { return };
        let Some(name) = self.identities.iter().find(|e| e.id == id).map(|e| e.name.clone()) else { return };
        if let Some((rename_id, new_name)) = &mut self.rename {
            let mut outcome = None;
            let focus_pending = std::mem::take(&mut self.rename_focus_pending);
            ui.horizontal(|ui| {
                let field = ui.add(egui::TextEdit::singleline(new_name).desired_width(160.0));
                if focus_pending {
                    field.request_focus();
                }
                let (enter, escape) = ui.input(|i| (i.key_pressed(egui::Key::Enter), i.key_pressed(egui::Key::Escape)));
                let save = ui.button("Save").clicked() || (field.lost_focus() && enter);
                if save && !new_name.trim().is_empty() {
                    outcome = Some(Some(UiCommand::RenameIdentity {
                        id: rename_id.clone(),
                        name: new_name.trim().to_owned(),
                    }));
                }
                if ui.button("Cancel").clicked() || (field.lost_focus() && escape) {
                    outcome = Some(None);
                }
            });
            if let Some(command) = outcome {
                self.rename = None;
                if let Some(command) = command {
                    self.send(command);
                }
            }
            return;
        }
        ui.horizontal(|ui| {
            if ui.button("Rename").clicked() {
                self.rename = Some((id.clone(), name.clone()));
                self.rename_focus_pending = true;
            }
            let armed = self.delete_armed.as_ref() == Some(&id);
            let text = if armed { format!("Really delete {name}?") } else { "Delete".to_owned() };
            let button = egui::Button::new(egui::RichText::new(text).color(if armed {
                egui::Color32::WHITE
            } else {
                DANGER_COLOR
            }));
            let button = if armed { button.fill(DANGER_COLOR) } else { button };
            if ui.add(button).clicked() {
                if armed {
                    self.delete_armed = None;
                    self.settings.selected_identity = None;
                    self.send(UiCommand::DeleteIdentity(id.clone()));
                } else {
                    self.delete_armed = Some(id.clone());
                }
            }
        });
    }

    /// Personalize the selected identity from a clip; progress bar and cancel while it runs.
    fn personalize_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Personalize");
        if let Some(progress) = self.progress.clone() {
            let bar = match progress.fraction() {
                Some(fraction) => egui::ProgressBar::new(fraction),
                // Unknown length: an animated bar says it is working.
                None => egui::ProgressBar::new(0.0).animate(true),
            };
            ui.add(bar.text(progress_text(&progress)));
            if ui.button("Cancel").clicked() {
                self.send(UiCommand::CancelPersonalize);
            }
            return;
        }
        ui.add(
            egui::TextEdit::singleline(&mut self.clip_path).hint_text("video clip path").desired_width(f32::INFINITY),
        );
        let clip = self.clip_path.trim().to_owned();
        let selected = self.settings.selected_identity.clone();
        let enabled = !clip.is_empty() && selected.is_some();
        let response = ui.add_enabled(enabled, egui::Button::new("Personalize selected identity from clip"));
        if let (true, Some(id)) = (response.clicked(), selected) {
            self.send(UiCommand::PersonalizeFromClip { id, clip: clip.into() });
        }
    }

    /// Motion mode, recalibration, smoothing and TSR.
    fn motion_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Motion");
        let before = self.settings.motion_mode;
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.settings.motion_mode, MotionMode::Relative, "Relative");
            ui.radio_value(&mut self.settings.motion_mode, MotionMode::Absolute, "Absolute");
        });
        if self.settings.motion_mode != before {
            self.send(UiCommand::SetMotionMode(self.settings.motion_mode));
        }
        if ui.button(format!("Recalibrate ({})", RECALIBRATE_KEY.name())).clicked() {
            self.send(UiCommand::Recalibrate);
        }
        let smoothing = ui.add(egui::Slider::new(&mut self.settings.smoothing, SMOOTHING_RANGE).text("Smoothing"));
        if smoothing.changed() {
            self.send(UiCommand::SetSmoothing(self.settings.smoothing));
        }
        if ui.checkbox(&mut self.settings.tsr_enabled, "Temporal super-resolution").changed() {
            self.send(UiCommand::SetTsr(self.settings.tsr_enabled));
        }
    }

    /// Start/stop button, file name and elapsed time.
    fn recording_ui(&mut self, ui: &mut egui::Ui) {
        ui.strong("Recording");
        let text = if self.recording.on {
            format!("Stop recording ({})", RECORD_KEY.name())
        } else {
            format!("Start recording ({})", RECORD_KEY.name())
        };
        if ui.button(text).clicked() {
            self.toggle_recording();
        }
        match (&self.stats.recording, self.recording.on) {
            (Some(status), _) => {
                ui.colored_label(
                    RECORDING_COLOR,
                    format!("REC  {}  {}", status.file_name, format_elapsed(status.elapsed_s)),
                );
            }
            (None, true) => {
                ui.weak(format!("starting… {}", format_elapsed(self.recording.since.elapsed().as_secs_f64())));
            }
            (None, false) => {
                ui.weak("not recording");
            }
        }
    }

    /// Frame rates, per-stage latency, glass-to-glass latency and drops.
    fn stats_ui(&self, ui: &mut egui::Ui) {
        ui.strong("Stats");
        egui::Grid::new("stats_grid").num_columns(2).striped(true).show(ui, |ui| {
            ui.label("Pipeline fps");
            ui.label(format!("{:.1}", self.stats.fps));
            ui.end_row();
            ui.label("Shown fps");
            ui.label(format!("{:.1}", self.shown_fps()));
            ui.end_row();
            ui.label("Glass to glass");
            ui.label(self.stats.glass_to_glass_ms.map_or_else(|| "—".to_owned(), |ms| format!("{ms:.1} ms")));
            ui.end_row();
            ui.label("Dropped (pipeline)");
            ui.label(self.stats.dropped_frames.to_string());
            ui.end_row();
            ui.label("Dropped (window)");
            ui.label(self.frames_superseded.to_string());
            ui.end_row();
            if self.commands_dropped > 0 {
                ui.label("Commands dropped");
                ui.label(self.commands_dropped.to_string());
                ui.end_row();
            }
        });
        if !self.stats.stage_latency.is_empty() {
            let stages: Vec<String> =
                self.stats.stage_latency.iter().map(|s| format!("{} {:.1}", s.stage, s.latency_ms)).collect();
            ui.add(egui::Label::new(format!("Stages (ms): {}", stages.join(" · "))).wrap());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_is_minutes_and_seconds() {
        assert_eq!(format_elapsed(0.0), "00:00");
        assert_eq!(format_elapsed(75.9), "01:15");
        assert_eq!(format_elapsed(-3.0), "00:00");
        assert_eq!(format_elapsed(f64::NAN), "00:00");
    }

    #[test]
    fn progress_text_names_each_phase() {
        let training = Progress::Training { step: 3, total: 10, loss: 0.5, eta_s: Some(61.0) };
        assert_eq!(progress_text(&training), "step 3/10 · loss 0.5000 · ETA 01:01");
        assert_eq!(training.fraction(), Some(0.3));
        let reading = Progress::ReadingClip { frames: 12 };
        assert_eq!(progress_text(&reading), "reading the clip · 12 frames");
        assert_eq!(reading.fraction(), None);
        let scoring = Progress::Scoring { after: true, done: 1, total: 4 };
        assert_eq!(progress_text(&scoring), "held-out loss after training · 1/4");
        assert_eq!(scoring.fraction(), Some(0.25));
        assert_eq!(Progress::Scoring { after: false, done: 0, total: 0 }.fraction(), Some(0.0));
    }
}
