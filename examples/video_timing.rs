//! Prints H.264 encode and decode time per frame at 512x512 (no `cargo bench` needed).
//!
//! Run: `cargo run --release --example video_timing [frames]`. Records a smooth moving pattern
//! with the real [`Recorder`] settings, then decodes the file with [`VideoFileSource`].

use std::time::Instant;

use metaportrait::capture::{Frame, FrameSource, VideoFileSource};
use metaportrait::record::encoder::{EncoderSettings, H264Encoder};
use metaportrait::record::{Recorder, RecorderConfig};

const SIDE_PX: u32 = 512;
const FRAME_RATE_HZ: f64 = 30.0;
const DEFAULT_FRAMES: u64 = 150;

fn pattern(index: u64) -> image::RgbImage {
    let t = index as f32;
    image::RgbImage::from_fn(SIDE_PX, SIDE_PX, |x, y| {
        let (xf, yf) = (x as f32, y as f32);
        let r = 128.0 + 70.0 * ((xf + 3.0 * t) / 37.0).sin() * ((yf - t) / 91.0).cos();
        let g = 128.0 + 60.0 * ((yf - 2.0 * t) / 53.0).cos();
        let b = 120.0 + 50.0 * ((xf + yf + 5.0 * t) / 71.0).sin();
        image::Rgb([r as u8, g as u8, b as u8])
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frames: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(DEFAULT_FRAMES);
    let bitrate_bps = std::env::var("VIDEO_BITRATE_BPS").ok().and_then(|v| v.parse().ok());
    let defaults = RecorderConfig::default();
    let config = RecorderConfig { bitrate_bps: bitrate_bps.unwrap_or(defaults.bitrate_bps), ..defaults };
    let pictures: Vec<image::RgbImage> = (0..frames).map(pattern).collect();

    // Encoder alone (what the recorder thread spends per frame).
    let settings = EncoderSettings { bitrate_bps: config.bitrate_bps, frame_rate_hint_hz: config.frame_rate_hint_hz };
    let mut encoder = H264Encoder::new(metaportrait::capture::FrameSize::new(SIDE_PX, SIDE_PX), settings)?;
    let start = Instant::now();
    let mut bytes = 0usize;
    for (i, p) in pictures.iter().enumerate() {
        bytes += encoder.encode(p, i % 60 == 0)?.avcc.len();
    }
    let encode_ms = start.elapsed().as_secs_f64() * 1e3 / frames as f64;

    // Full recorder path into a file, then decode.
    let dir = std::env::temp_dir().join(format!("video_timing_{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("timing.mp4");
    let recorder = Recorder::start(&path, RecorderConfig { queue_frames: frames as usize + 1, ..config })?;
    let start = Instant::now();
    for (i, p) in pictures.iter().enumerate() {
        let timestamp_us = (i as f64 * 1e6 / FRAME_RATE_HZ) as i64;
        recorder.push(Frame { pixels: p.clone(), timestamp_us, index: i as u64 });
    }
    let summary = recorder.stop()?;
    let record_ms = start.elapsed().as_secs_f64() * 1e3 / frames as f64;

    let mut source = VideoFileSource::open(&path)?;
    let mut decoded = 0u64;
    let mut psnr_sum = 0.0;
    let mut psnr_min = f64::INFINITY;
    let mut decode_s = 0.0;
    loop {
        let call = Instant::now();
        let Some(frame) = source.next_frame()? else { break };
        decode_s += call.elapsed().as_secs_f64();
        let Some(original) = pictures.get(frame.index as usize) else { break };
        let mse: f64 = frame
            .pixels
            .as_raw()
            .iter()
            .zip(original.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
            / original.as_raw().len() as f64;
        let psnr = 10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10();
        psnr_sum += psnr;
        psnr_min = psnr_min.min(psnr);
        decoded += 1;
    }
    let decode_ms = decode_s * 1e3 / decoded.max(1) as f64;
    println!("{SIDE_PX}x{SIDE_PX}, {frames} frames, bitrate target {} bit/s", config.bitrate_bps);
    println!(
        "encode (H264Encoder only):   {encode_ms:.2} ms/frame, {:.2} Mbit/s at 30 fps",
        bytes as f64 * 8.0 * 30.0 / frames as f64 / 1e6
    );
    println!(
        "record (thread + fMP4 file): {record_ms:.2} ms/frame wall, {} frames, {} bytes",
        summary.frames_written, summary.bytes_written
    );
    println!("decode (file → RGB frames):   {decode_ms:.2} ms/frame, {decoded} frames");
    println!("PSNR vs originals: min {psnr_min:.2} dB, mean {:.2} dB", psnr_sum / decoded.max(1) as f64);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
