//! One `reconstruct` run: every official data frame through the generator, written as `inference.py` writes it.
//!
//! Owns the output folder's life. Everything is written into a staging folder beside the output
//! (`.<name>.reconstruct-staging`) and renamed into place at the end, so a failed or killed run never leaves a
//! half-written result (a leftover staging folder is removed by the next run). An existing output folder is
//! replaced only when it holds nothing but what this command writes. Receives an opened `OfficialData`, a generator
//! engine, the official connectivity file and a scorer for fidelity; emits `output_256/<frame stem>.png` (the
//! prediction as `clip(v·255, 0, 255)` truncated to 8 bits, as the official script saves it), `out_256.mp4` (our
//! H.264 recorder at the official 23.98 fps, frames in data order), `metrics.json` (PSNR/SSIM of each frame against
//! its ground-truth frame), and a progress event per frame.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use super::ReconstructError;
use super::inputs::OfficialInputBuilder;
use super::layout::OfficialData;
use crate::capture::Frame;
use crate::model::config::GeneratorConfig;
use crate::model::net::OUTPUT_PREDICTION;
use crate::model::runner::GeneratorRunner;
use crate::record::{PushOutcome, Recorder, RecorderConfig};
use crate::tensor::HostTensor;

/// Frame rate of the official `out_256.mp4` (`ImageSequenceClip(img_list, 23.98)`).
pub const OFFICIAL_FPS: f64 = 23.98;
/// Folder of the generated pictures.
pub const PICTURES_DIR: &str = "output_256";
/// The video of the generated pictures.
pub const VIDEO_FILE: &str = "out_256.mp4";
/// Per-frame fidelity.
pub const METRICS_FILE: &str = "metrics.json";
const STAGING_SUFFIX: &str = ".reconstruct-staging";
const OLD_SUFFIX: &str = ".reconstruct-old";
/// Offline recording waits for the encoder rather than dropping frames.
const ENCODER_BACKOFF: std::time::Duration = std::time::Duration::from_millis(2);

/// Fidelity of one generated frame against its ground truth.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FrameScores {
    /// PSNR in dB.
    pub psnr_db: f64,
    /// SSIM.
    pub ssim: f64,
}

/// One finished frame, for progress display.
#[derive(Clone, Debug)]
pub struct FrameDone<'a> {
    /// Position in the data order, from 0.
    pub index: usize,
    /// Frames in the run.
    pub total: usize,
    /// The frame's file name.
    pub name: &'a str,
    /// Its fidelity.
    pub scores: FrameScores,
}

/// A frame's line in `metrics.json`.
#[derive(Clone, Debug, Serialize)]
pub struct FrameReport {
    /// The frame's file name.
    pub frame: String,
    /// Its source index.
    pub source: String,
    /// PSNR in dB.
    pub psnr_db: f64,
    /// SSIM.
    pub ssim: f64,
}

/// What a run wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ReconstructSummary {
    /// Frames generated.
    pub frames: usize,
    /// Mean PSNR over the frames, dB.
    pub mean_psnr_db: f64,
    /// Mean SSIM over the frames.
    pub mean_ssim: f64,
    /// Wall time of the run.
    pub seconds: f64,
    /// How PSNR and SSIM were computed (from the scorer).
    pub metric: String,
    /// Every frame's scores, in data order.
    pub per_frame: Vec<FrameReport>,
}

/// The official way a prediction becomes 8 bits: `np.clip(v * 255, 0, 255).astype(np.uint8)`, which truncates.
pub fn prediction_to_official_u8(prediction: &HostTensor) -> Result<RgbImage, ReconstructError> {
    let &[1, 3, h, w] = prediction.shape() else {
        return Err(ReconstructError::Prediction(prediction.shape().to_vec()));
    };
    let plane = h * w;
    let data = prediction.data();
    let to_u8 = |v: f32| (v * 255.0).clamp(0.0, 255.0) as u8;
    Ok(RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([to_u8(data[i]), to_u8(data[plane + i]), to_u8(data[2 * plane + i])])
    }))
}

fn sibling(output: &Path, suffix: &str) -> PathBuf {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}{suffix}"))
}

/// Refuses an output folder holding anything this command does not write (it would be replaced).
fn check_output(output: &Path) -> Result<(), ReconstructError> {
    if !output.exists() {
        return Ok(());
    }
    if !output.is_dir() {
        return Err(ReconstructError::ForeignOutput { path: output.into(), entry: "a file of that name".into() });
    }
    for entry in std::fs::read_dir(output).map_err(ReconstructError::io(output))? {
        let entry = entry.map_err(ReconstructError::io(output))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ![PICTURES_DIR, VIDEO_FILE, METRICS_FILE].contains(&name.as_str()) {
            return Err(ReconstructError::ForeignOutput { path: output.into(), entry: format!("`{name}`") });
        }
    }
    Ok(())
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), ReconstructError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ReconstructError::Io { path: dir.into(), source: e }),
        _ => Ok(()),
    }
}

/// Moves the finished staging folder to `output`, replacing a previous result.
fn publish(staging: &Path, output: &Path) -> Result<(), ReconstructError> {
    let old = sibling(output, OLD_SUFFIX);
    remove_dir_if_exists(&old)?;
    let had_previous = output.exists();
    if had_previous {
        std::fs::rename(output, &old).map_err(ReconstructError::io(output))?;
    }
    if let Err(e) = std::fs::rename(staging, output) {
        if had_previous {
            // Put the previous result back rather than leave nothing.
            let _ = std::fs::rename(&old, output);
        }
        return Err(ReconstructError::Io { path: output.into(), source: e });
    }
    remove_dir_if_exists(&old)
}

fn push_blocking(recorder: &Recorder, frame: Frame) -> Result<(), ReconstructError> {
    loop {
        match recorder.push(frame.clone()) {
            PushOutcome::Queued => return Ok(()),
            PushOutcome::Dropped => std::thread::sleep(ENCODER_BACKOFF),
            PushOutcome::NotRecording => {
                return Err(ReconstructError::Record(crate::record::RecordError::Encoder(format!(
                    "the recorder stopped: {:?}",
                    recorder.state()
                ))));
            }
        }
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Runs every frame of `data` through `engine` (a full-stage generator for `config`) into `output`.
/// `score(prediction, ground_truth)` gives each frame's fidelity; `metric` describes it for `metrics.json`.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct<E: std::fmt::Display>(
    data: &OfficialData,
    config: &GeneratorConfig,
    engine: &mut GeneratorRunner,
    connectivity: &Path,
    output: &Path,
    metric: &str,
    mut score: impl FnMut(&RgbImage, &RgbImage) -> Result<FrameScores, E>,
    mut progress: impl FnMut(&FrameDone<'_>),
) -> Result<ReconstructSummary, ReconstructError> {
    check_output(output)?;
    data.validate(config.id_dim)?;
    let mut builder = OfficialInputBuilder::new(config, connectivity)?;
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(ReconstructError::io(parent))?;
    }
    let staging = sibling(output, STAGING_SUFFIX);
    remove_dir_if_exists(&staging)?;
    let result = (|| {
        let pictures = staging.join(PICTURES_DIR);
        std::fs::create_dir_all(&pictures).map_err(ReconstructError::io(&pictures))?;
        let started = Instant::now();
        let recorder = Recorder::start(
            staging.join(VIDEO_FILE),
            RecorderConfig { frame_rate_hint_hz: OFFICIAL_FPS, ..RecorderConfig::default() },
        )?;
        let mut reports = Vec::with_capacity(data.frames.len());
        let mut named = std::collections::BTreeMap::new();
        for (index, frame) in data.frames.iter().enumerate() {
            let built = builder.frame(data, frame)?;
            for (name, tensor) in built.inputs.named() {
                named.insert(name.to_owned(), tensor.clone());
            }
            let outputs = engine.run(&named)?;
            let prediction = outputs.get(OUTPUT_PREDICTION).ok_or_else(|| ReconstructError::Prediction(Vec::new()))?;
            let picture = prediction_to_official_u8(prediction)?;
            let stem = Path::new(&frame.name).file_stem().map(|s| s.to_string_lossy().into_owned());
            let path = pictures.join(format!("{}.png", stem.unwrap_or_else(|| frame.name.clone())));
            picture
                .save_with_format(&path, image::ImageFormat::Png)
                .map_err(|e| ReconstructError::BadFile { path: path.clone(), reason: e.to_string() })?;
            let scores = score(&picture, &built.ground_truth)
                .map_err(|e| ReconstructError::Score { frame: frame.name.clone(), reason: e.to_string() })?;
            let timestamp_us = (index as f64 * 1e6 / OFFICIAL_FPS).round() as i64;
            push_blocking(&recorder, Frame { pixels: picture, timestamp_us, index: index as u64 })?;
            progress(&FrameDone { index, total: data.frames.len(), name: &frame.name, scores });
            reports.push(FrameReport {
                frame: frame.name.clone(),
                source: frame.source.clone(),
                psnr_db: scores.psnr_db,
                ssim: scores.ssim,
            });
        }
        recorder.stop()?;
        let summary = ReconstructSummary {
            frames: reports.len(),
            mean_psnr_db: mean(reports.iter().map(|r| r.psnr_db)),
            mean_ssim: mean(reports.iter().map(|r| r.ssim)),
            seconds: started.elapsed().as_secs_f64(),
            metric: metric.to_owned(),
            per_frame: reports,
        };
        let json = serde_json::to_vec_pretty(&summary)
            .map_err(|e| ReconstructError::BadFile { path: staging.join(METRICS_FILE), reason: e.to_string() })?;
        std::fs::write(staging.join(METRICS_FILE), json).map_err(ReconstructError::io(staging.join(METRICS_FILE)))?;
        publish(&staging, output)?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_truncated_like_the_official_script() {
        let t = HostTensor::new(vec![1, 3, 1, 2], vec![0.999, -0.2, 0.5, 1.7, 0.00392, 0.0039216]).unwrap();
        let img = prediction_to_official_u8(&t).unwrap();
        // 0.999·255 = 254.7 → 254 (not rounded); 0.5·255 = 127.5 → 127.
        assert_eq!(img.get_pixel(0, 0).0, [254, 127, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 255, 1]);
        assert!(prediction_to_official_u8(&HostTensor::zeros(&[3, 2, 2])).is_err());
    }

    #[test]
    fn only_our_own_outputs_are_replaced() {
        let dir = std::env::temp_dir().join(format!("mp-reconstruct-out-{}", std::process::id()));
        let out = dir.join("result");
        std::fs::create_dir_all(out.join(PICTURES_DIR)).unwrap();
        std::fs::write(out.join(VIDEO_FILE), b"x").unwrap();
        check_output(&out).expect("ours");
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        let err = check_output(&out).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
