//! The small camera preview in the side panel, with the detected face landmarks drawn over it as dots.
//!
//! Owns the preview's egui texture (replaced in place when a new camera frame arrives) and the landmark list of that
//! frame. Receives `PreviewFrame`s from the app's input polling; emits egui shapes only.

use eframe::egui;

use crate::pipeline::messages::{PixelFormat, PreviewFrame};

/// Landmark dot radius, in points.
const LANDMARK_RADIUS_PT: f32 = 1.5;
/// Landmark dot colour: a green that reads on skin and on dark backgrounds.
const LANDMARK_COLOR: egui::Color32 = egui::Color32::from_rgb(80, 255, 120);
/// Tallest the preview gets, in points (it is as wide as the panel allows within that).
const PREVIEW_MAX_HEIGHT_PT: f32 = 120.0;
/// Height reserved before the first camera frame, in points.
const EMPTY_PREVIEW_HEIGHT_PT: f32 = 120.0;

/// The preview texture and what is drawn over it.
#[derive(Default)]
pub struct CameraPreview {
    texture: Option<egui::TextureHandle>,
    size_px: [usize; 2],
    landmarks_px: Vec<[f32; 2]>,
}

impl CameraPreview {
    /// Replaces the shown camera frame. A frame whose pixel count does not match its size is skipped with a warning.
    pub fn update(&mut self, ctx: &egui::Context, frame: PreviewFrame) {
        let size_px = [frame.width as usize, frame.height as usize];
        let expected = size_px[0] * size_px[1] * frame.format.bytes_per_pixel();
        if size_px[0] == 0 || size_px[1] == 0 || frame.pixels.len() != expected {
            tracing::warn!(
                width = frame.width,
                height = frame.height,
                bytes = frame.pixels.len(),
                expected,
                "camera preview: malformed frame skipped"
            );
            return;
        }
        let image = match frame.format {
            PixelFormat::Rgba8 => egui::ColorImage::from_rgba_unmultiplied(size_px, &frame.pixels),
            PixelFormat::Rgb8 => egui::ColorImage::from_rgb(size_px, &frame.pixels),
        };
        match &mut self.texture {
            Some(texture) => texture.set(image, egui::TextureOptions::LINEAR),
            None => self.texture = Some(ctx.load_texture("camera_preview", image, egui::TextureOptions::LINEAR)),
        }
        self.size_px = size_px;
        self.landmarks_px = frame.landmarks;
    }

    /// Landmarks of the frame now shown, in image pixels.
    pub fn landmarks_px(&self) -> &[[f32; 2]] {
        &self.landmarks_px
    }
}

/// Draws the camera preview as large as the available width and `PREVIEW_MAX_HEIGHT_PT` allow, keeping its aspect
/// ratio, with the landmark dots over it when `show_landmarks`.
pub fn camera_preview_ui(ui: &mut egui::Ui, preview: &CameraPreview, show_landmarks: bool) {
    let width_pt = ui.available_width();
    let Some(texture) = &preview.texture else {
        let (rect, _) = ui.allocate_exact_size(egui::vec2(width_pt, EMPTY_PREVIEW_HEIGHT_PT), egui::Sense::hover());
        ui.painter().rect_filled(rect, 0.0, egui::Color32::from_gray(24));
        ui.painter().text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            "no camera frame yet",
            egui::FontId::proportional(12.0),
            egui::Color32::GRAY,
        );
        return;
    };
    let [w_px, h_px] = preview.size_px.map(|s| s as f32);
    let scale = (width_pt / w_px).min(PREVIEW_MAX_HEIGHT_PT / h_px);
    let size_pt = egui::vec2(w_px * scale, h_px * scale);
    let response =
        ui.vertical_centered(|ui| ui.add(egui::Image::new(egui::load::SizedTexture::new(texture.id(), size_pt)))).inner;
    if !show_landmarks {
        return;
    }
    let rect = response.rect;
    let painter = ui.painter_at(rect);
    for [x, y] in preview.landmarks_px.iter().copied() {
        let point = rect.min + egui::vec2(x / w_px * rect.width(), y / h_px * rect.height());
        painter.circle_filled(point, LANDMARK_RADIUS_PT, LANDMARK_COLOR);
    }
}
