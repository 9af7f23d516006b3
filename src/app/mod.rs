//! The desktop window: the render loop that shows the generated video and the egui side panel that drives the app.
//!
//! Owns the window, its wgpu resources (`video`: the output view's texture and WGSL pipeline) and the egui panel
//! (`panel`, `preview`). Receives output frames, camera previews with landmarks, stats, identity snapshots and
//! personalization progress through the bounded channels of `WindowInputs`; emits `UiCommand`s. It runs on the
//! thread that calls `run_window` (the main thread: the windowing system wants it) and never blocks on another
//! thread: every receive is a `try_recv` that keeps the newest value, every send a `try_send`. `App` is the window's
//! state and its per-pass work (drain the inputs, keyboard shortcuts, the panel and the output view); the panel's
//! drawing lives in `panel`, the camera preview in `preview`, the output view's GPU side in `video`.

mod panel;
mod preview;
mod video;

pub use panel::{SIDE_PANEL_WIDTH_PT, SIDE_PANEL_WIDTH_RANGE_PT, format_elapsed, progress_text};
pub use preview::{CameraPreview, camera_preview_ui};
pub use video::{FrameError, VIDEO_QUAD_WGSL, VideoCallback, VideoQuad, letterbox_scale};

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TryRecvError, TrySendError};
use eframe::egui;

use crate::pipeline::messages::{IdentityEntry, OutputFrame, Progress, Stats, UiCommand, WindowInputs};
use crate::pipeline::settings::UiSettings;

/// Title of the main window (tests find the window by it).
pub const WINDOW_TITLE: &str = "MetaPortrait";
/// Starting size of the window, in points.
const WINDOW_SIZE_PT: [f32; 2] = [1280.0, 800.0];
/// Smallest size that still fits the side panel and a usable view, in points.
const MIN_WINDOW_SIZE_PT: [f32; 2] = [720.0, 480.0];

/// Why the window could not run.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// eframe started without a wgpu render state, so the output view has no GPU to draw with.
    #[error("the window was created without a wgpu renderer")]
    NoWgpu,
    /// The windowing system or eframe failed (no display, no usable GPU adapter, event-loop error).
    #[error("window system: {0}")]
    Window(#[from] eframe::Error),
}

/// Opens the window and runs it until the user closes it (or a `Quit` comes from the window's own controls).
/// Sends `UiCommand::Quit` on the way out and returns the settings the user left, for the caller to persist.
/// The wgpu backend honours `WGPU_BACKEND` (e.g. `vulkan`) and the other `WGPU_*` variables.
pub fn run_window(inputs: WindowInputs) -> Result<UiSettings, WindowError> {
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

/// How often the window looks at its input channels when nothing else wakes it: a little faster than the
/// pipeline's frame rate so a new frame waits at most this long before it is drawn.
pub const INPUT_POLL_INTERVAL: Duration = Duration::from_millis(8);
/// Most values taken from one channel in one pass, so a runaway producer cannot hold the render thread.
const MAX_DRAINED_PER_PASS: usize = 256;
/// How long the recording state may disagree with the recorder's reports before the window adopts them.
const RECORDING_CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// Window over which the shown-frames rate is measured.
const FPS_WINDOW: Duration = Duration::from_secs(1);
/// Keys 1 to 9: select the identity at that position of the library.
pub const IDENTITY_KEYS: [egui::Key; 9] = [
    egui::Key::Num1,
    egui::Key::Num2,
    egui::Key::Num3,
    egui::Key::Num4,
    egui::Key::Num5,
    egui::Key::Num6,
    egui::Key::Num7,
    egui::Key::Num8,
    egui::Key::Num9,
];
/// Starts or stops recording.
pub const RECORD_KEY: egui::Key = egui::Key::R;
/// Recalibrates relative motion on the current driving pose.
pub const RECALIBRATE_KEY: egui::Key = egui::Key::Space;
/// With Ctrl (Cmd on macOS): closes the window.
pub const QUIT_KEY: egui::Key = egui::Key::Q;

/// What one `drain_newest` found.
struct Drained<T> {
    newest: Option<T>,
    /// Values taken but superseded by a newer one in the same pass.
    superseded: u64,
    disconnected: bool,
}

/// Takes everything queued on `rx` without waiting (at most `MAX_DRAINED_PER_PASS`) and keeps the newest.
fn drain_newest<T>(rx: &Receiver<T>) -> Drained<T> {
    let mut drained = Drained { newest: None, superseded: 0, disconnected: false };
    for _ in 0..MAX_DRAINED_PER_PASS {
        match rx.try_recv() {
            Ok(value) => {
                if drained.newest.replace(value).is_some() {
                    drained.superseded += 1;
                }
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                drained.disconnected = true;
                break;
            }
        }
    }
    drained
}

/// The user's recording intent and when it last changed; the recorder's reports (in `Stats`) confirm it.
pub(super) struct RecordingIntent {
    pub on: bool,
    pub since: Instant,
}

/// Rate of frames actually shown, counted over `FPS_WINDOW`.
struct RateMeter {
    window_start: Instant,
    count: u32,
    rate_hz: f32,
}

impl RateMeter {
    fn new() -> Self {
        Self { window_start: Instant::now(), count: 0, rate_hz: 0.0 }
    }

    fn tick(&mut self) {
        self.count += 1;
        let elapsed = self.window_start.elapsed();
        if elapsed >= FPS_WINDOW {
            self.rate_hz = self.count as f32 / elapsed.as_secs_f32();
            self.count = 0;
            self.window_start = Instant::now();
        }
    }
}

/// Everything the window shows and edits.
pub struct App {
    output_rx: Receiver<OutputFrame>,
    preview_rx: Receiver<crate::pipeline::messages::PreviewFrame>,
    stats_rx: Receiver<Stats>,
    identities_rx: Receiver<Vec<IdentityEntry>>,
    progress_rx: Receiver<Option<Progress>>,
    commands: Sender<UiCommand>,

    pub(super) settings: UiSettings,
    /// Newest output frame and its generation (increases by one per frame received).
    frame: Option<(Arc<OutputFrame>, u64)>,
    next_generation: u64,
    /// Output frames received but replaced by a newer one before they could be drawn.
    pub(super) frames_superseded: u64,
    shown_rate: RateMeter,
    pub(super) preview: CameraPreview,
    pub(super) stats: Stats,
    pub(super) identities: Vec<IdentityEntry>,
    pub(super) thumbnails: HashMap<String, egui::TextureHandle>,
    pub(super) progress: Option<Progress>,
    pub(super) recording: RecordingIntent,
    /// Text fields of the panel.
    pub(super) portrait_path: String,
    pub(super) clip_path: String,
    /// `(id, edited name)` while renaming.
    pub(super) rename: Option<(String, String)>,
    /// The rename field was just opened and should take the keyboard.
    pub(super) rename_focus_pending: bool,
    /// Id whose delete button was pressed once and now asks for confirmation.
    pub(super) delete_armed: Option<String>,
    pub(super) commands_dropped: u64,
    /// The output channel's sender is gone: the pipeline stopped.
    pub(super) pipeline_stopped: bool,
    commands_disconnected: bool,
    /// Where `on_exit` leaves the settings for `run_window` to return.
    settings_out: Rc<RefCell<UiSettings>>,
}

impl App {
    /// Builds the app, installs the output view's pipeline into egui-wgpu and announces the starting settings.
    pub(super) fn new(
        cc: &eframe::CreationContext<'_>,
        inputs: WindowInputs,
        settings_out: Rc<RefCell<UiSettings>>,
    ) -> Result<Self, WindowError> {
        let render_state = cc.wgpu_render_state.as_ref().ok_or(WindowError::NoWgpu)?;
        let quad = VideoQuad::new(&render_state.device, &render_state.queue, render_state.target_format);
        render_state.renderer.write().callback_resources.insert(quad);
        tracing::info!(
            adapter = ?render_state.adapter.get_info(),
            target_format = ?render_state.target_format,
            "window: wgpu ready"
        );
        let WindowInputs { output, preview, stats, identities, progress, commands, settings } = inputs;
        let mut app = Self {
            output_rx: output,
            preview_rx: preview,
            stats_rx: stats,
            identities_rx: identities,
            progress_rx: progress,
            commands,
            settings: settings.sanitized(),
            frame: None,
            next_generation: 0,
            frames_superseded: 0,
            shown_rate: RateMeter::new(),
            preview: CameraPreview::default(),
            stats: Stats::default(),
            identities: Vec::new(),
            thumbnails: HashMap::new(),
            progress: None,
            recording: RecordingIntent { on: false, since: Instant::now() },
            portrait_path: String::new(),
            clip_path: String::new(),
            rename: None,
            rename_focus_pending: false,
            delete_armed: None,
            commands_dropped: 0,
            pipeline_stopped: false,
            commands_disconnected: false,
            settings_out,
        };
        app.announce_settings();
        Ok(app)
    }

    /// Tells the pipeline the settings the window starts with, so both agree without a second code path.
    fn announce_settings(&mut self) {
        self.send(UiCommand::SetMotionMode(self.settings.motion_mode));
        self.send(UiCommand::SetSmoothing(self.settings.smoothing));
        self.send(UiCommand::SetTsr(self.settings.tsr_enabled));
        if let Some(id) = self.settings.selected_identity.clone() {
            self.send(UiCommand::SelectIdentity(id));
        }
    }

    /// Queues `command` for the app without waiting; a full or closed channel loses it (logged, counted).
    pub(super) fn send(&mut self, command: UiCommand) {
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(command)) => {
                self.commands_dropped += 1;
                tracing::warn!(?command, "window: command channel full, command dropped");
            }
            Err(TrySendError::Disconnected(command)) => {
                if !self.commands_disconnected {
                    tracing::warn!(?command, "window: nobody receives commands any more");
                }
                self.commands_disconnected = true;
            }
        }
    }

    /// Drains every input channel, keeping the newest value of each. Never waits.
    fn poll_inputs(&mut self, ctx: &egui::Context) {
        let output = drain_newest(&self.output_rx);
        self.frames_superseded += output.superseded;
        if let Some(frame) = output.newest {
            self.frame = Some((Arc::new(frame), self.next_generation));
            self.next_generation += 1;
            self.shown_rate.tick();
        }
        if output.disconnected && !self.pipeline_stopped {
            tracing::info!("window: output channel closed, the pipeline stopped");
            self.pipeline_stopped = true;
        }
        if let Some(frame) = drain_newest(&self.preview_rx).newest {
            self.preview.update(ctx, frame);
        }
        if let Some(stats) = drain_newest(&self.stats_rx).newest {
            self.reconcile_recording(&stats);
            self.stats = stats;
        }
        if let Some(identities) = drain_newest(&self.identities_rx).newest {
            self.set_identities(ctx, identities);
        }
        if let Some(progress) = drain_newest(&self.progress_rx).newest {
            self.progress = progress;
        }
    }

    /// Adopts the recorder's view once the user's intent has had time to take effect and still disagrees.
    fn reconcile_recording(&mut self, stats: &Stats) {
        let recorder_on = stats.recording.is_some();
        if recorder_on != self.recording.on && self.recording.since.elapsed() >= RECORDING_CONFIRM_TIMEOUT {
            tracing::warn!(
                recorder_on,
                "window: recorder state differs from the requested one; following the recorder"
            );
            self.recording = RecordingIntent { on: recorder_on, since: Instant::now() };
        }
    }

    /// Replaces the identity list and rebuilds the thumbnail textures.
    fn set_identities(&mut self, ctx: &egui::Context, identities: Vec<IdentityEntry>) {
        self.thumbnails.clear();
        for entry in &identities {
            let Some(thumb) = &entry.thumbnail else { continue };
            let size_px = [thumb.width as usize, thumb.height as usize];
            if size_px[0] * size_px[1] * 4 != thumb.rgba.len() || size_px.contains(&0) {
                tracing::warn!(id = %entry.id, "window: malformed thumbnail ignored");
                continue;
            }
            let image = egui::ColorImage::from_rgba_unmultiplied(size_px, &thumb.rgba);
            let texture = ctx.load_texture(format!("thumbnail_{}", entry.id), image, egui::TextureOptions::LINEAR);
            self.thumbnails.insert(entry.id.clone(), texture);
        }
        if self.rename.as_ref().is_some_and(|(id, _)| !identities.iter().any(|e| &e.id == id)) {
            self.rename = None;
        }
        self.identities = identities;
    }

    /// Rate of new output frames reaching the window, per second.
    pub(super) fn shown_fps(&self) -> f32 {
        self.shown_rate.rate_hz
    }

    pub(super) fn select_identity(&mut self, id: String) {
        if self.settings.selected_identity.as_ref() != Some(&id) {
            self.delete_armed = None;
            self.rename = None;
        }
        self.settings.selected_identity = Some(id.clone());
        self.send(UiCommand::SelectIdentity(id));
    }

    pub(super) fn toggle_recording(&mut self) {
        let on = !self.recording.on;
        self.send(if on { UiCommand::StartRecording } else { UiCommand::StopRecording });
        tracing::info!(on, "window: recording toggled");
        self.recording = RecordingIntent { on, since: Instant::now() };
    }

    /// Applies Ctrl+Q always, and 1-9, R and Space unless a text field has the keyboard (key repeats and chords
    /// are ignored for those).
    fn shortcuts_ui(&mut self, ctx: &egui::Context) {
        if ctx.input_mut(|input| input.consume_key(egui::Modifiers::COMMAND, QUIT_KEY)) {
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
        }
        if ctx.egui_wants_keyboard_input() {
            return;
        }
        let pressed: Vec<egui::Key> = ctx.input(|input| {
            input
                .events
                .iter()
                .filter_map(|event| match event {
                    egui::Event::Key { key, pressed: true, repeat: false, modifiers, .. } if modifiers.is_none() => {
                        Some(*key)
                    }
                    _ => None,
                })
                .collect()
        });
        for key in pressed {
            if let Some(index) = IDENTITY_KEYS.iter().position(|k| *k == key) {
                if let Some(id) = self.identities.get(index).map(|e| e.id.clone()) {
                    self.select_identity(id);
                }
            } else if key == RECORD_KEY {
                self.toggle_recording();
            } else if key == RECALIBRATE_KEY {
                self.send(UiCommand::Recalibrate);
            }
        }
    }

    /// The central area: the output frame, letterboxed, drawn by `VideoQuad` inside egui's render pass.
    fn output_view_ui(&mut self, ui: &mut egui::Ui) {
        let rect = ui.max_rect();
        let callback = VideoCallback { frame: self.frame.clone(), view_size_pt: [rect.width(), rect.height()] };
        ui.painter().add(eframe::egui_wgpu::Callback::new_paint_callback(rect, callback));
        if self.frame.is_none() || self.pipeline_stopped {
            let text = if self.pipeline_stopped { "pipeline stopped" } else { "waiting for frames…" };
            ui.painter().text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                text,
                egui::FontId::proportional(18.0),
                egui::Color32::GRAY,
            );
        }
    }
}

impl eframe::App for App {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.poll_inputs(ctx);
        ctx.request_repaint_after(INPUT_POLL_INTERVAL);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.shortcuts_ui(&ctx);
        egui::Panel::right("control_panel")
            .resizable(true)
            .default_size(panel::SIDE_PANEL_WIDTH_PT)
            .size_range(panel::SIDE_PANEL_WIDTH_RANGE_PT)
            .show(ui, |ui| self.side_panel_ui(ui));
        egui::CentralPanel::no_frame().show(ui, |ui| self.output_view_ui(ui));
    }

    fn on_exit(&mut self) {
        tracing::info!("window: closing");
        self.send(UiCommand::Quit);
        *self.settings_out.borrow_mut() = self.settings.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_keeps_newest_and_counts_superseded() {
        let (tx, rx) = crossbeam::channel::bounded(4);
        for i in 0..3 {
            tx.send(i).expect("open channel");
        }
        let drained = drain_newest(&rx);
        assert_eq!(drained.newest, Some(2));
        assert_eq!(drained.superseded, 2);
        assert!(!drained.disconnected);
        drop(tx);
        let drained = drain_newest(&rx);
        assert_eq!(drained.newest, None);
        assert!(drained.disconnected);
    }
}
