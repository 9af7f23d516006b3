//! Helpers shared by the integration tests: synthetic frames, PSNR, and ffmpeg/ffprobe calls.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use metaportrait::capture::Frame;

/// Side of one index-code block in pixels.
pub const CODE_BLOCK_PX: u32 = 32;
/// Bits of the frame index drawn into the picture.
pub const CODE_BITS: u32 = 12;
const CODE_ON: u8 = 230;
const CODE_OFF: u8 = 25;

/// A smooth moving pattern with the frame index drawn as a row of black/white blocks at the top.
pub fn synthetic_frame(index: u64, width: u32, height: u32) -> image::RgbImage {
    let t = index as f32;
    image::RgbImage::from_fn(width, height, |x, y| {
        if y < CODE_BLOCK_PX && x < CODE_BITS * CODE_BLOCK_PX {
            let bit = x / CODE_BLOCK_PX;
            let v = if (index >> bit) & 1 == 1 { CODE_ON } else { CODE_OFF };
            return image::Rgb([v, v, v]);
        }
        let (xf, yf) = (x as f32, y as f32);
        let r = 128.0 + 70.0 * ((xf + 3.0 * t) / 37.0).sin() * ((yf - t) / 91.0).cos();
        let g = 128.0 + 60.0 * ((yf - 2.0 * t) / 53.0).cos();
        let b = 120.0 + 50.0 * ((xf + yf + 5.0 * t) / 71.0).sin();
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

pub fn synthetic(index: u64, width: u32, height: u32, frame_rate_hz: f64) -> Frame {
    Frame {
        pixels: synthetic_frame(index, width, height),
        timestamp_us: (index as f64 * 1e6 / frame_rate_hz).round() as i64,
        index,
    }
}

/// Reads back the index drawn by [`synthetic_frame`].
pub fn read_code(img: &image::RgbImage) -> u64 {
    let mut value = 0u64;
    for bit in 0..CODE_BITS {
        let (x0, y0) = (bit * CODE_BLOCK_PX + 8, 8);
        let mut sum = 0u32;
        for y in y0..y0 + 16 {
            for x in x0..x0 + 16 {
                sum += u32::from(img.get_pixel(x, y)[1]);
            }
        }
        if sum / 256 > 128 {
            value |= 1 << bit;
        }
    }
    value
}

/// Peak signal-to-noise ratio over all RGB samples, in dB.
pub fn psnr_db(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let mse: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(&p, &q)| (f64::from(p) - f64::from(q)).powi(2)).sum::<f64>()
        / a.as_raw().len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

/// Whether a command-line tool runs; prints a skip note when not.
pub fn have_tool(tool: &str) -> bool {
    let ok = Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIP: {tool} is not installed (apt-get install -y ffmpeg); skipping the checks that need it");
    }
    ok
}

/// Runs ffmpeg with the given arguments (quiet, overwrite); panics with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Codec name and decoded frame count of the first video stream, as ffprobe sees them.
pub struct ProbeResult {
    pub codec: String,
    pub frames: u64,
    pub stderr: String,
}

pub fn ffprobe(path: &Path) -> Option<ProbeResult> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames", "-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut codec = String::new();
    let mut frames = 0;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("codec_name=") {
            codec = v.to_string();
        }
        if let Some(v) = line.strip_prefix("nb_read_frames=") {
            frames = v.trim().parse().unwrap_or(0);
        }
    }
    Some(ProbeResult { codec, frames, stderr: String::from_utf8_lossy(&out.stderr).into_owned() })
}

/// A `Write` into a shared buffer, so a test can inspect what a recorder wrote.
pub struct SharedSink(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
