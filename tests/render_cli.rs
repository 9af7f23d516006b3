//! `metaportrait render` end to end: a driving clip made here (our encoder, and ffmpeg's x264 High profile with
//! B-frames when ffmpeg is installed) drives the bundled portrait; the output is checked frame by frame.

mod common;
mod video_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use metaportrait::capture::{Frame, FrameSource, VideoFileSource};
use metaportrait::record::{Recorder, RecorderConfig};

const FRAMES: usize = 24;
const FPS: f64 = 25.0;

fn portrait() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets").join("portrait.png")
}

/// The portrait, turned and shifted a little more each frame (a head moving in front of the camera), 320×320.
fn driving_frame(base: &RgbImage, t: usize) -> RgbImage {
    let angle = 0.12 * (t as f32 * 0.5).sin();
    let shift = 6.0 * (t as f32 * 0.3).sin();
    let (w, h) = (320u32, 320u32);
    let (cx, cy) = (256.0f32, 200.0f32);
    let (s, c) = angle.sin_cos();
    RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - 160.0 - shift, y as f32 - 160.0);
        let (sx, sy) = (cx + c * dx - s * dy, cy + s * dx + c * dy);
        let (sx, sy) = (sx.clamp(0.0, 511.0) as u32, sy.clamp(0.0, 511.0) as u32);
        *base.get_pixel(sx, sy)
    })
}

fn decode_all(path: &Path) -> Vec<Frame> {
    let mut src = VideoFileSource::open(path).expect("open output");
    let mut out = Vec::new();
    while let Some(f) = src.next_frame().expect("decode") {
        out.push(f);
    }
    out
}

fn render(driving: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(["render", "--source"])
        .arg(portrait())
        .arg("--driving")
        .arg(driving)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .expect("run")
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    a.as_raw().iter().zip(b.as_raw()).map(|(p, q)| (*p as f64 - *q as f64).abs()).sum::<f64>() / a.as_raw().len() as f64
}

fn check_output(path: &Path, driving_timestamps: &[i64]) {
    let frames = decode_all(path);
    assert_eq!(frames.len(), driving_timestamps.len(), "one output frame per driving frame");
    assert!(frames.iter().all(|f| f.pixels.dimensions() == (256, 256)));
    for (f, t) in frames.iter().zip(driving_timestamps) {
        assert!((f.timestamp_us - t).abs() <= 1_000, "timestamp {} vs driving {t}", f.timestamp_us);
    }
    // The portrait moves with the driver: frames differ from the first, and consecutive frames are related.
    let moved = frames.iter().map(|f| mean_abs_diff(&f.pixels, &frames[0].pixels)).fold(0.0, f64::max);
    assert!(moved > 3.0, "output barely changes (max mean diff {moved})");
    if video_common::have_tool("ffprobe") {
        let probe = video_common::ffprobe(path).expect("ffprobe runs");
        assert_eq!(
            (probe.codec.as_str(), probe.frames as usize),
            ("h264", driving_timestamps.len()),
            "{}",
            probe.stderr
        );
    }
}

#[test]
fn renders_a_clip_from_our_encoder_and_from_x264_high_profile() {
    let dir = common::tempdir("render-cli");
    let base = image::open(portrait()).expect("portrait").to_rgb8();
    let clip = dir.join("driving.mp4");
    let stamps = write_driving_clip(&clip, FRAMES);
    let out = render(&clip, &dir.join("out.mp4"), &["--relative"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("rendered {FRAMES} frames")));
    check_output(&dir.join("out.mp4"), &stamps);

    if video_common::have_tool("ffmpeg") {
        let frames_dir = dir.join("frames");
        std::fs::create_dir_all(&frames_dir).expect("mkdir");
        for t in 0..FRAMES {
            driving_frame(&base, t).save(frames_dir.join(format!("f{t:03}.png"))).expect("png");
        }
        let x264 = dir.join("x264.mp4");
        let pattern = frames_dir.join("f%03d.png");
        video_common::ffmpeg(&[
            "-framerate",
            "25",
            "-i",
            pattern.to_str().expect("utf8"),
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-bf",
            "3",
            "-pix_fmt",
            "yuv420p",
            x264.to_str().expect("utf8"),
        ]);
        let out = render(&x264, &dir.join("out_x264.mp4"), &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check_output(&dir.join("out_x264.mp4"), &stamps);
        // An image directory drives the same way.
        let out = render(&frames_dir, &dir.join("out_dir.mp4"), &["--fps", "25"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check_output(&dir.join("out_dir.mp4"), &stamps);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    let dir = common::tempdir("render-bad");
    std::fs::write(dir.join("garbage.mp4"), b"not a video at all").expect("write");
    let out = render(&dir.join("garbage.mp4"), &dir.join("a.mp4"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("garbage.mp4"));
    // A portrait without a face.
    RgbImage::from_pixel(200, 200, image::Rgb([90, 90, 90])).save(dir.join("blank.png")).expect("png");
    let out = Command::new(common::bin())
        .args(["render", "--source"])
        .arg(dir.join("blank.png"))
        .arg("--driving")
        .arg(portrait())
        .arg("--output")
        .arg(dir.join("b.mp4"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no face"), "{}", String::from_utf8_lossy(&out.stderr));
    let left: Vec<_> = std::fs::read_dir(&dir).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().ends_with(".mp4") || n == "garbage.mp4"), "{left:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn demo_renders_the_bundled_portrait() {
    let dir = common::tempdir("demo");
    let out = Command::new(common::bin()).arg("demo").arg("--output").arg(dir.join("demo.mp4")).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames = decode_all(&dir.join("demo.mp4"));
    assert_eq!(frames.len() as u64, metaportrait::pipeline::demo::DEMO_FRAMES);
    let moved = frames.iter().map(|f| mean_abs_diff(&f.pixels, &frames[0].pixels)).fold(0.0, f64::max);
    assert!(moved > 3.0, "the demo portrait does not move ({moved})");
    std::fs::remove_dir_all(&dir).ok();
}

/// Encodes `frames` driving frames of the moving portrait into `path`; returns their timestamps.
fn write_driving_clip(path: &Path, frames: usize) -> Vec<i64> {
    let base = image::open(portrait()).expect("portrait").to_rgb8();
    let recorder = Recorder::start(path, RecorderConfig::default()).expect("recorder");
    let mut stamps = Vec::new();
    for t in 0..frames {
        let ts = (t as f64 * 1e6 / FPS) as i64;
        stamps.push(ts);
        while !matches!(
            recorder.push(Frame { pixels: driving_frame(&base, t), timestamp_us: ts, index: t as u64 }),
            metaportrait::record::PushOutcome::Queued
        ) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    recorder.stop().expect("finish driving clip");
    stamps
}

#[test]
fn the_neural_engine_renders_a_library_identity_with_the_tiny_generator() {
    use metaportrait::model::weights::WeightStore;
    use metaportrait::personalize::store::{IdentityStore, NewIdentity};
    use metaportrait::tensor::HostTensor;
    const NEURAL_FRAMES: usize = 8;
    let dir = common::tempdir("render-neural");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/generator");
    // An identity with an embedding of the tiny model's id_dim (the fixture's source identity vector).
    let home = dir.join("home");
    let io = WeightStore::load_safetensors(&fixtures.join("tiny_io.safetensors")).expect("fixture io");
    let id_vector = io.get("input.src_id").expect("src_id").data().to_vec();
    let mut mesher =
        metaportrait::face::FaceMesher::from_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
            .expect("face models");
    let image = metaportrait::face::load_image(&portrait()).expect("portrait");
    let prepared =
        metaportrait::pipeline::render::prepare_portrait(&mut mesher, &image, &portrait()).expect("portrait face");
    let n = prepared.landmarks.len();
    let store = IdentityStore::open(&home.join("identities")).expect("store");
    store
        .add(&NewIdentity {
            name: "Ada".into(),
            portrait: prepared.crop,
            landmarks: HostTensor::new(vec![n, 3], prepared.landmarks.iter().flatten().copied().collect()).unwrap(),
            id_vector: Some(id_vector),
            weights_delta: WeightStore::new(),
            base_model_sha256: None,
            personalization: None,
            embedder: None,
        })
        .expect("identity added");
    let clip = dir.join("driving.mp4");
    let stamps = write_driving_clip(&clip, NEURAL_FRAMES);
    let neural = |extra: &[&str]| {
        Command::new(common::bin())
            .env("METAPORTRAIT_HOME", &home)
            .arg("render")
            .args(extra)
            .arg("--driving")
            .arg(&clip)
            .args(["--engine", "neural", "--device", "cpu", "--config"])
            .arg(fixtures.join("tiny_config.json"))
            .arg("--weights")
            .arg(fixtures.join("tiny_weights.safetensors"))
            .output()
            .expect("run")
    };
    let output = dir.join("neural.mp4");
    let out = neural(&["--identity", "Ada", "--output", output.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("engine neural"), "{stderr}");
    let frames = decode_all(&output);
    assert_eq!(frames.len(), NEURAL_FRAMES);
    for (f, t) in frames.iter().zip(&stamps) {
        assert_eq!(f.pixels.dimensions(), (256, 256));
        assert!((f.timestamp_us - t).abs() <= 1_000);
    }
    let moved = frames.iter().map(|f| mean_abs_diff(&f.pixels, &frames[0].pixels)).fold(0.0, f64::max);
    eprintln!("neural: largest mean difference from the first frame {moved:.3}");
    assert!(moved > 2.0, "the generator's output ignores the driving pose (max mean diff {moved})");

    // A plain portrait has no embedding: refused with the reason, nothing written.
    let refused = dir.join("refused.mp4");
    let src = portrait();
    let out = neural(&["--source", src.to_str().expect("utf8"), "--output", refused.to_str().expect("utf8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("identity embedding"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!refused.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn render_tsr_upsamples_every_frame_to_512_in_chunks() {
    use metaportrait::tsr::config::TsrConfig;
    use metaportrait::tsr::runner::TsrModel;
    // 20 frames: one full 16-frame chunk and a shorter last one.
    const TSR_FRAMES: usize = 20;
    let dir = common::tempdir("render-tsr");
    let clip = dir.join("driving.mp4");
    let stamps = write_driving_clip(&clip, TSR_FRAMES);
    // The tiny TSR widths at the real 256 → 512 geometry, deterministic random weights.
    let config = TsrConfig { out_size: 512, ..TsrConfig::tiny() };
    let config_path = dir.join("tsr512.json");
    std::fs::write(&config_path, serde_json::to_string(&config).expect("json")).expect("write");
    let model = TsrModel::random(config, 3).expect("model");
    let weights = dir.join("tsr512.safetensors");
    model.weights.save_safetensors(&weights).expect("weights");
    let output = dir.join("tsr.mp4");
    let out = render(
        &clip,
        &output,
        &[
            "--tsr",
            "--tsr-config",
            config_path.to_str().expect("utf8"),
            "--tsr-weights",
            weights.to_str().expect("utf8"),
        ],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let frames = decode_all(&output);
    assert_eq!(frames.len(), TSR_FRAMES, "one output frame per driving frame");
    for (f, t) in frames.iter().zip(&stamps) {
        assert_eq!(f.pixels.dimensions(), (512, 512));
        assert!((f.timestamp_us - t).abs() <= 1_000);
    }
    // The frames are the network's: the same network run here (16-frame chunks) on the plain render's frames
    // matches the TSR render far better than a bicubic upscale does (both sides went through the H.264 codec).
    let plain = dir.join("plain.mp4");
    let out = render(&clip, &plain, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let low = decode_all(&plain);
    let mut lq = Vec::new();
    for f in &low {
        let plane = (f.pixels.width() * f.pixels.height()) as usize;
        let mut planar = vec![0.0f32; 3 * plane];
        for (i, p) in f.pixels.pixels().enumerate() {
            for c in 0..3 {
                planar[c * plane + i] = f32::from(p[c]) / 255.0;
            }
        }
        lq.extend(planar);
    }
    let lq = metaportrait::tensor::HostTensor::new(vec![1, TSR_FRAMES, 3, 256, 256], lq).expect("lq");
    let model = TsrModel::load(TsrConfig::from_json_file(&config_path).expect("config"), &weights).expect("weights");
    let mut engine = metaportrait::tsr::runner::TsrRunner::new(model, Default::default()).expect("engine");
    let sr = engine.run_clip(&lq, 16).expect("sr");
    let plane = 512 * 512;
    let (mut network_db, mut bicubic_db) = (0.0, 0.0);
    for (k, (f, l)) in frames.iter().zip(&low).enumerate() {
        let base = k * 3 * plane;
        let v = |c: usize, i: usize| (sr.data()[base + c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8;
        let expected = RgbImage::from_fn(512, 512, |x, y| {
            let i = (y * 512 + x) as usize;
            image::Rgb([v(0, i), v(1, i), v(2, i)])
        });
        network_db += video_common::psnr_db(&f.pixels, &expected) / TSR_FRAMES as f64;
        let bicubic = image::imageops::resize(&l.pixels, 512, 512, image::imageops::FilterType::CatmullRom);
        bicubic_db += video_common::psnr_db(&f.pixels, &bicubic) / TSR_FRAMES as f64;
    }
    eprintln!("TSR render vs network on the plain render: {network_db:.1} dB; vs bicubic: {bicubic_db:.1} dB");
    assert!(
        network_db > 28.0 && network_db > bicubic_db + 6.0,
        "network {network_db:.1} dB, bicubic {bicubic_db:.1} dB"
    );

    // --tsr without weights is refused by the argument parser.
    let refused = render(&clip, &dir.join("refused.mp4"), &["--tsr"]);
    assert!(!refused.status.success());
    assert!(!dir.join("refused.mp4").exists());
    std::fs::remove_dir_all(&dir).ok();
}
