//! The desktop window: the render loop that shows the generated video and the egui side panel that drives the app.
//!
//! Owns the window, its wgpu resources (`video`: the output view's texture and WGSL pipeline) and the egui panel
//! (`panel`, `preview`). Receives output frames, camera previews with landmarks, stats, identity snapshots and
//! personalization progress through the bounded channels of `WindowInputs`; emits `UiCommand`s. It runs on the
//! thread that calls `run_window` (the main thread: the windowing system wants it) and never blocks on another
//! thread: every receive is a `try_recv` that keeps the newest value, every send a `try_send`.

mod app;
mod messages;
mod panel;
mod preview;
mod settings;
mod video;

pub use app::{App, IDENTITY_KEYS, INPUT_POLL_INTERVAL, QUIT_KEY, RECALIBRATE_KEY, RECORD_KEY};
pub use messages::{
    IdentityEntry, MotionMode, OutputFrame, PixelFormat, PreviewFrame, Progress, RecordingStatus, StageTime, Stats,
    Thumbnail, UiCommand, WindowInputs,
};
pub use panel::{SIDE_PANEL_WIDTH_PT, SIDE_PANEL_WIDTH_RANGE_PT, format_elapsed, progress_text};
pub use preview::{CameraPreview, camera_preview_ui};
pub use settings::{DEFAULT_SMOOTHING, SMOOTHING_RANGE, UiSettings};
pub use video::{FrameError, VIDEO_QUAD_WGSL, VideoCallback, VideoQuad, letterbox_scale};

use std::cell::RefCell;
use std::rc::Rc;

use eframe::egui;

/// Title of the main window (tests find the window by it).
pub const WINDOW_TITLE: &str = "MetaPortrait";
/// Starting size of the window, in points.
const WINDOW_SIZE_PT: [f32; 2] = [1280.0, 800.0];
/// Smallest size that still fits the side panel and a usable view, in points.
const MIN_WINDOW_SIZE_PT: [f32; 2] = [720.0, 480.0];

/// Why the window could not run.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the window was created without a wgpu renderer")]
    NoWgpu,
    #[error("window system: {0}")]
    Window(#[from] eframe::Error),
}

/// Opens the window and runs it until the user closes it (or a `Quit` comes from the window's own controls).
/// Sends `UiCommand::Quit` on the way out and returns the settings the user left, for the caller to persist.
/// The wgpu backend honours `WGPU_BACKEND` (e.g. `vulkan`) and the other `WGPU_*` variables.
pub fn run_window(inputs: WindowInputs) -> Result<UiSettings, RenderError> {
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title(WINDOW_TITLE)
            .with_app_id("metaportrait")
            .with_inner_size(WINDOW_SIZE_PT)
            .with_min_inner_size(MIN_WINDOW_SIZE_PT),
        renderer: eframe::Renderer::Wgpu,
        // One frame in flight instead of eframe's default two: the view is latency-bound, its GPU work is tiny.
        wgpu_options: eframe::WgpuConfiguration { surface: eframe::SurfaceConfig::LOW_LATENCY, ..Default::default() },
        ..Default::default()
    };
    let settings_out = Rc::new(RefCell::new(inputs.settings.clone()));
    let app_settings_out = Rc::clone(&settings_out);
    tracing::info!("window: opening");
    eframe::run_native(
        WINDOW_TITLE,
        options,
        Box::new(move |cc| Ok(Box::new(App::new(cc, inputs, app_settings_out)?) as Box<dyn eframe::App>)),
    )?;
    Ok(settings_out.take())
}
