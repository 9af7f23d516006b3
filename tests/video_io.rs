//! End-to-end tests of capture and recording: our writer → our reader, ffmpeg-made files,
//! SIGKILL and disk-full survival, bad inputs, image folders and capture back-pressure.

mod video_common;
use video_common as common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ffmpeg, ffprobe, have_tool, psnr_db, read_code, synthetic};
use metaportrait::capture::{
    CaptureError, CaptureOptions, CaptureStatus, CaptureThread, Frame, FrameSize, FrameSource, ImageSequenceSource,
    Pacing, StillImageSource, StillRepeat, VideoFileSource, WebcamConfig,
};
use metaportrait::record::{
    PushOutcome, RecordError, Recorder, RecorderConfig, RecorderState, partial_path_for, recover_partial,
};

const SIDE_PX: u32 = 512;
const FPS: f64 = 30.0;
const MIN_PSNR_DB: f64 = 38.0;

/// Reads every frame; returns the frames and the error that ended reading, if any.
fn read_all(source: &mut dyn FrameSource) -> (Vec<Frame>, Option<CaptureError>) {
    let mut frames = Vec::new();
    loop {
        match source.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => {
                // After a reported error the source must end.
                assert!(matches!(source.next_frame(), Ok(None)), "source continued after {e}");
                return (frames, Some(e));
            }
        }
    }
}

fn record_synthetic(path: &Path, count: u64) -> metaportrait::record::RecordingSummary {
    let config = RecorderConfig { queue_frames: count as usize + 1, ..RecorderConfig::default() };
    let recorder = Recorder::start(path, config).expect("start recorder");
    assert!(partial_path_for(path).exists(), "recording must be written under the partial name");
    for i in 0..count {
        assert_eq!(recorder.push(synthetic(i, SIDE_PX, SIDE_PX, FPS)), PushOutcome::Queued);
    }
    let summary = recorder.stop().expect("stop recorder");
    assert!(!partial_path_for(path).exists(), "partial file must be renamed on clean stop");
    summary
}

#[test]
fn round_trip_through_our_writer_and_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("round_trip.mp4");
    const FRAMES: u64 = 150; // 5 s: three fragments
    let summary = record_synthetic(&path, FRAMES);
    assert_eq!(summary.frames_written, FRAMES);
    assert_eq!(summary.frames_dropped, 0);
    assert_eq!(summary.path.as_deref(), Some(path.as_path()));
    assert!((summary.duration_us - 5_000_000).abs() < 40_000, "duration {} us", summary.duration_us);

    let mut source = VideoFileSource::open(&path).expect("open our recording");
    assert_eq!(source.size(), FrameSize::new(SIDE_PX, SIDE_PX));
    assert!((source.frame_rate_hz() - FPS).abs() < 0.1, "rate {}", source.frame_rate_hz());
    let (frames, err) = read_all(&mut source);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(frames.len() as u64, FRAMES);
    let mut psnrs = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let i = i as u64;
        assert_eq!(f.index, i);
        assert_eq!(read_code(&f.pixels), i, "frame order");
        let expected_us = (i as f64 * 1e6 / FPS).round() as i64;
        assert!((f.timestamp_us - expected_us).abs() <= 20, "frame {i}: {} vs {expected_us}", f.timestamp_us);
        psnrs.push(psnr_db(&f.pixels, &synthetic(i, SIDE_PX, SIDE_PX, FPS).pixels));
    }
    let min = psnrs.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = psnrs.iter().sum::<f64>() / psnrs.len() as f64;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "round trip: {FRAMES} frames {SIDE_PX}x{SIDE_PX}, PSNR min {min:.2} dB mean {mean:.2} dB, {bytes} bytes ({:.2} Mbit/s)",
        bytes as f64 * 8.0 / 5.0 / 1e6
    );
    assert!(min >= MIN_PSNR_DB, "minimum PSNR {min:.2} dB");

    if have_tool("ffprobe") {
        let probe = ffprobe(&path).expect("ffprobe runs");
        println!("ffprobe: codec {} frames {} {}", probe.codec, probe.frames, probe.stderr);
        assert_eq!(probe.codec, "h264");
        assert_eq!(probe.frames, FRAMES);
        assert!(probe.stderr.trim().is_empty(), "ffprobe complained: {}", probe.stderr);
    }
}

#[test]
fn high_profile_b_frames_decode_in_presentation_order() {
    if !have_tool("ffmpeg") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x264_high_bf3.mp4");
    let p = path.to_string_lossy().into_owned();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-profile:v",
        "high",
        "-bf",
        "3",
        "-pix_fmt",
        "yuv420p",
        &p,
    ]);
    // Reference pictures decoded by ffmpeg, in presentation order.
    let raw = dir.path().join("ref.rgb");
    ffmpeg(&["-i", &p, "-f", "rawvideo", "-pix_fmt", "rgb24", &raw.to_string_lossy()]);
    let raw_bytes = std::fs::read(&raw).expect("read reference frames");
    let frame_bytes = 320 * 240 * 3;
    let references: Vec<image::RgbImage> =
        raw_bytes.chunks_exact(frame_bytes).filter_map(|c| image::RgbImage::from_raw(320, 240, c.to_vec())).collect();
    assert_eq!(references.len(), 50);

    let mut source = VideoFileSource::open(&path).expect("open x264 file");
    let (frames, err) = read_all(&mut source);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(frames.len(), 50, "all frames decoded");
    let mut min_psnr = f64::INFINITY;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(FrameSize::of(&f.pixels), FrameSize::new(320, 240));
        if i > 0 {
            assert!(f.timestamp_us > frames[i - 1].timestamp_us, "timestamps increase at {i}");
            assert_eq!(f.timestamp_us - frames[i - 1].timestamp_us, 40_000);
        }
        let own = psnr_db(&f.pixels, &references[i]);
        min_psnr = min_psnr.min(own);
        // Presentation order: each frame matches its own reference better than its neighbours'.
        for j in [i.wrapping_sub(1), i + 1] {
            if let Some(other) = references.get(j) {
                assert!(own > psnr_db(&f.pixels, other), "frame {i} looks like frame {j}");
            }
        }
    }
    assert_eq!(frames[0].timestamp_us, 0);
    println!("x264 high/B-frames: 50 frames, PSNR vs ffmpeg decode min {min_psnr:.2} dB");
    assert!(min_psnr > 30.0);
}

/// Env var that turns the test binary into the SIGKILL child.
const CHILD_ENV: &str = "VIDEO_SIGKILL_CHILD_OUT";

/// Child half of the SIGKILL test: records paced frames forever, printing its counters.
#[test]
fn sigkill_child_writer() {
    let Ok(out) = std::env::var(CHILD_ENV) else { return };
    let recorder = Recorder::start(&out, RecorderConfig::default()).expect("child: start recorder");
    let start = Instant::now();
    let mut stdout = std::io::stdout();
    for i in 0u64.. {
        let due = start + Duration::from_secs_f64(i as f64 / FPS);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        recorder.push(synthetic(i, SIDE_PX, SIDE_PX, FPS));
        let s = recorder.stats();
        let _ = writeln!(stdout, "STATS pushed={} encoded={} durable={}", i + 1, s.frames_encoded, s.frames_durable);
        let _ = stdout.flush();
    }
}

#[test]
fn sigkill_leaves_a_playable_partial_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("killed.mp4");
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["sigkill_child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &target)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let last = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    let stdout = child.stdout.take().expect("child stdout");
    let reader = {
        let last = Arc::clone(&last);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(rest) = line.strip_prefix("STATS ") else { continue };
                let v: Vec<u64> = rest.split(' ').filter_map(|kv| kv.split('=').nth(1)?.parse().ok()).collect();
                if let [pushed, encoded, durable] = v[..] {
                    *last.lock().expect("lock") = (pushed, encoded, durable);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(5_500));
    child.kill().expect("SIGKILL child"); // std sends SIGKILL on Unix
    let _ = child.wait();
    let _ = reader.join();
    let (pushed, encoded, durable) = *last.lock().expect("lock");
    let partial = partial_path_for(&target);
    assert!(partial.exists() && !target.exists(), "killed recording stays under the partial name");
    let two_seconds = (2.0 * FPS) as u64;

    let mut source = VideoFileSource::open(&partial).expect("our reader opens the killed recording");
    let (frames, err) = read_all(&mut source);
    println!(
        "SIGKILL: pushed {pushed}, encoded {encoded}, durable {durable}; our reader decoded {} frames (truncated: {}, end error: {:?})",
        frames.len(),
        source.is_truncated(),
        err.as_ref().map(ToString::to_string)
    );
    assert!(encoded >= 100, "child recorded too little ({encoded})");
    assert!(frames.len() as u64 >= durable, "lost frames that were reported durable");
    assert!(frames.len() as u64 + two_seconds + 5 >= encoded, "lost more than ~2 s");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(read_code(&f.pixels), i as u64);
    }
    if have_tool("ffprobe") {
        let probe = ffprobe(&partial).expect("ffprobe runs");
        println!("SIGKILL: ffprobe codec {} frames {}", probe.codec, probe.frames);
        assert_eq!(probe.codec, "h264");
        assert!(probe.frames >= durable && probe.frames + two_seconds + 5 >= encoded);
    }
    let recovered = recover_partial(&partial).expect("recover");
    assert_eq!(recovered.path, target);
    let mut source = VideoFileSource::open(&target).expect("open recovered file");
    assert!(!source.is_truncated(), "recovered file ends on a whole fragment");
    let (again, err) = read_all(&mut source);
    assert!(err.is_none());
    assert!(again.len() as u64 >= durable);
    println!("SIGKILL: recovered file has {} frames, {} trailing bytes removed", again.len(), recovered.bytes_removed);
}

/// A writer that accepts `limit` bytes, then fails like a full disk.
struct FullDisk {
    bytes: Arc<Mutex<Vec<u8>>>,
    limit: usize,
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.bytes.lock().map_err(|_| std::io::Error::other("poisoned"))?;
        let room = self.limit.saturating_sub(bytes.len());
        if room == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"));
        }
        let n = room.min(buf.len());
        bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_error_stops_recording_and_keeps_a_playable_prefix() {
    const FRAMES: u64 = 240; // 8 s
    let config = RecorderConfig { queue_frames: FRAMES as usize, ..RecorderConfig::default() };
    // Measure the full size first, then fail at 60 % of it (inside a fragment).
    let full = Arc::new(Mutex::new(Vec::new()));
    let recorder =
        Recorder::start_with_writer(FullDisk { bytes: Arc::clone(&full), limit: usize::MAX }, config).expect("start");
    for i in 0..FRAMES {
        recorder.push(synthetic(i, SIDE_PX, SIDE_PX, FPS));
    }
    recorder.stop().expect("unlimited recording succeeds");
    let full_len = full.lock().expect("lock").len();

    let kept = Arc::new(Mutex::new(Vec::new()));
    let limit = full_len * 6 / 10;
    let recorder = Recorder::start_with_writer(FullDisk { bytes: Arc::clone(&kept), limit }, config).expect("start");
    for i in 0..FRAMES {
        recorder.push(synthetic(i, SIDE_PX, SIDE_PX, FPS));
    }
    // The failure shows up as a state while recording.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(recorder.state(), RecorderState::Failed(_)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        matches!(recorder.state(), RecorderState::Failed(ref m) if m.contains("No space")),
        "{:?}",
        recorder.state()
    );
    assert_eq!(recorder.push(synthetic(0, SIDE_PX, SIDE_PX, FPS)), PushOutcome::NotRecording);
    let err = recorder.stop().expect_err("the write error is reported");
    let RecordError::Write { message, summary } = &err else { panic!("unexpected error {err}") };
    println!("disk full after {limit} of {full_len} bytes: {err}");
    assert!(message.contains("No space"));
    assert!(summary.frames_written > 0 && summary.frames_written < FRAMES);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("disk_full.mp4");
    std::fs::write(&path, kept.lock().expect("lock").as_slice()).expect("save bytes");
    let mut source = VideoFileSource::open(&path).expect("the written prefix opens");
    let (frames, end) = read_all(&mut source);
    println!(
        "disk full: summary says {} frames; our reader decoded {} ({end:?})",
        summary.frames_written,
        frames.len()
    );
    assert!(frames.len() as u64 >= summary.frames_written);
    assert!(matches!(end, Some(CaptureError::Truncated { .. })), "cut-off fragment is reported as truncation");
    if have_tool("ffprobe") {
        let probe = ffprobe(&path).expect("ffprobe runs");
        println!("disk full: ffprobe counts {} frames", probe.frames);
        assert!(probe.frames >= summary.frames_written);
    }

    // The same bytes left behind as a partial recording: recovery trims the cut-off fragment.
    let partial = dir.path().join("crashed.partial.mp4");
    std::fs::copy(&path, &partial).expect("copy");
    let recovered = recover_partial(&partial).expect("recover");
    assert_eq!(recovered.path, dir.path().join("crashed.mp4"));
    assert!(recovered.bytes_removed > 0);
    let mut source = VideoFileSource::open(&recovered.path).expect("open recovered");
    assert!(!source.is_truncated());
    let (frames, end) = read_all(&mut source);
    assert!(end.is_none());
    assert_eq!(frames.len() as u64, summary.frames_written);
    println!("disk full: recovery removed {} bytes, {} frames remain", recovered.bytes_removed, frames.len());
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.mp4");
    let err = VideoFileSource::open(&missing).err().expect("missing file fails");
    assert!(matches!(err, CaptureError::Io { .. }), "{err}");
    println!("missing: {err}");

    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>()).expect("write");
    let err = VideoFileSource::open(&garbage).err().expect("garbage fails");
    assert!(matches!(err, CaptureError::NotMp4 { .. }), "{err}");
    println!("garbage: {err}");

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").expect("write");
    let err = VideoFileSource::open(&empty).err().expect("empty fails");
    assert!(matches!(err, CaptureError::NotMp4 { .. }), "{err}");

    // An MP4 with a video track but no frames: a recording stopped before its first frame.
    let zero = dir.path().join("zero_frames.mp4");
    let recorder = Recorder::start(&zero, RecorderConfig::default()).expect("start");
    let summary = recorder.stop().expect("stop");
    assert_eq!(summary.frames_written, 0);
    assert!(
        summary.path.is_none() && !zero.exists() && !partial_path_for(&zero).exists(),
        "empty recordings leave no file"
    );
    let params = metaportrait::record::fmp4::TrackParams {
        size: FrameSize::new(64, 64),
        timescale: metaportrait::record::fmp4::TIMESCALE_HZ,
        sps: vec![0x67, 0x42, 0xC0, 0x1E, 0xD9],
        pps: vec![0x68, 0xCE, 0x3C, 0x80],
    };
    std::fs::write(&zero, metaportrait::record::fmp4::build_init_segment(&params).expect("init")).expect("write");
    let err = VideoFileSource::open(&zero).err().expect("zero frames fails");
    assert!(matches!(err, CaptureError::NoFrames { .. }), "{err}");
    println!("zero frames: {err}");

    if !have_tool("ffmpeg") {
        return;
    }
    let src = |name: &str, extra: &[&str]| -> PathBuf {
        let p = dir.path().join(name);
        let mut args = vec!["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "4"];
        args.extend_from_slice(extra);
        let ps = p.to_string_lossy().into_owned();
        args.push(&ps);
        ffmpeg(&args);
        p
    };
    // Classic MP4 with the index at the end, cut in half: no index at all.
    let tail = src("moov_at_end.mp4", &["-c:v", "libx264", "-pix_fmt", "yuv420p"]);
    let bytes = std::fs::read(&tail).expect("read");
    std::fs::write(&tail, &bytes[..bytes.len() / 2]).expect("truncate");
    let err = VideoFileSource::open(&tail).err().expect("truncated fails");
    assert!(matches!(err, CaptureError::Truncated { decoded_frames: 0, .. }), "{err}");
    println!("truncated (moov at end): {err}");

    // Index at the front, data cut: decode what is there, then report.
    let front = src("faststart.mp4", &["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]);
    let bytes = std::fs::read(&front).expect("read");
    std::fs::write(&front, &bytes[..bytes.len() * 6 / 10]).expect("truncate");
    let mut source = VideoFileSource::open(&front).expect("index is intact");
    let (frames, err) = read_all(&mut source);
    println!("truncated (faststart): {} of 100 frames, then {:?}", frames.len(), err.as_ref().map(ToString::to_string));
    assert!(!frames.is_empty() && frames.len() < 100);
    assert!(
        matches!(err, Some(CaptureError::Truncated { decoded_frames, .. }) if decoded_frames == frames.len() as u64)
    );

    let mpeg4 = src("mpeg4.mp4", &["-c:v", "mpeg4"]);
    let err = VideoFileSource::open(&mpeg4).err().expect("mpeg4 fails");
    assert!(matches!(&err, CaptureError::UnsupportedCodec { codec, .. } if codec == "mp4v"), "{err}");
    println!("unsupported: {err}");
}

#[test]
fn image_folder_plays_in_natural_order_and_still_images_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, shade) in [("f10.png", 10u8), ("f2.png", 2), ("f1.png", 1), ("notes.txt", 0)] {
        let path = dir.path().join(name);
        if name.ends_with(".png") {
            image::RgbImage::from_pixel(8, 6, image::Rgb([shade, shade, shade])).save(&path).expect("save png");
        } else {
            std::fs::write(&path, b"not an image").expect("write");
        }
    }
    let mut seq = ImageSequenceSource::open(dir.path(), 25.0).expect("open folder");
    assert_eq!(seq.size(), FrameSize::new(8, 6));
    let (frames, err) = read_all(&mut seq);
    assert!(err.is_none());
    let shades: Vec<u8> = frames.iter().map(|f| f.pixels.get_pixel(0, 0)[0]).collect();
    assert_eq!(shades, vec![1, 2, 10]);
    let times: Vec<i64> = frames.iter().map(|f| f.timestamp_us).collect();
    assert_eq!(times, vec![0, 40_000, 80_000]);

    let empty = tempfile::tempdir().expect("tempdir");
    assert!(matches!(ImageSequenceSource::open(empty.path(), 30.0), Err(CaptureError::NoImages { .. })));

    let still_path = dir.path().join("f2.png");
    let mut once = StillImageSource::open(&still_path, StillRepeat::Once).expect("open still");
    assert!(matches!(once.next_frame(), Ok(Some(_))));
    assert!(matches!(once.next_frame(), Ok(None)));
    let mut forever = StillImageSource::open(&still_path, StillRepeat::Forever { frame_rate_hz: 10.0 }).expect("open");
    let times: Vec<i64> = (0..3).filter_map(|_| forever.next_frame().ok().flatten()).map(|f| f.timestamp_us).collect();
    assert_eq!(times, vec![0, 100_000, 200_000]);
    let bad = dir.path().join("notes.txt");
    assert!(matches!(StillImageSource::open(&bad, StillRepeat::Once), Err(CaptureError::Image { .. })));
}

/// A fast synthetic source that notes when each frame was produced.
struct FastSource {
    next: u64,
    limit: u64,
    produced: Arc<Mutex<Vec<Instant>>>,
}

const FAST_SOURCE_HZ: f64 = 200.0;

impl FrameSource for FastSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.next >= self.limit {
            return Ok(None);
        }
        let index = self.next;
        self.next += 1;
        self.produced.lock().map_err(|_| CaptureError::InvalidSetting("poisoned".into()))?.push(Instant::now());
        Ok(Some(Frame {
            pixels: image::RgbImage::new(4, 4),
            timestamp_us: (index as f64 * 1e6 / FAST_SOURCE_HZ) as i64,
            index,
        }))
    }

    fn frame_rate_hz(&self) -> f64 {
        FAST_SOURCE_HZ
    }

    fn size(&self) -> FrameSize {
        FrameSize::new(4, 4)
    }
}

#[test]
fn slow_consumer_gets_newest_frames_with_bounded_latency() {
    const CONSUMER_MS: u64 = 50;
    let produced = Arc::new(Mutex::new(Vec::new()));
    let opener_log = Arc::clone(&produced);
    let capture = CaptureThread::spawn(
        "test-capture",
        move || {
            Ok(Box::new(FastSource { next: 0, limit: 400, produced: Arc::clone(&opener_log) }) as Box<dyn FrameSource>)
        },
        CaptureOptions { pacing: Pacing::RealTime, channel_capacity: 1, ..CaptureOptions::default() },
    )
    .expect("spawn");
    let mut received = Vec::new();
    let mut worst_latency_ms = 0.0f64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1_500) {
        let Some(frame) = capture.recv_timeout(Duration::from_millis(200)) else { break };
        let now = Instant::now();
        let made = produced.lock().expect("lock")[frame.index as usize];
        worst_latency_ms = worst_latency_ms.max(now.duration_since(made).as_secs_f64() * 1e3);
        // The capture instant (where glass-to-glass starts): after the source made the frame, before it was taken.
        let stamped = capture.captured_at(frame.index).expect("capture instant of a fresh frame");
        assert!(stamped >= made && stamped <= now, "frame {} stamped outside [made, taken]", frame.index);
        received.push(frame.index);
        std::thread::sleep(Duration::from_millis(CONSUMER_MS));
    }
    let stats = capture.stats();
    println!(
        "back-pressure: received {} frames, stats {stats:?}, worst latency {worst_latency_ms:.1} ms",
        received.len()
    );
    assert!(received.windows(2).all(|w| w[0] < w[1]), "frames arrive in order");
    assert!(stats.frames_dropped > 100, "stale frames are dropped");
    assert!(worst_latency_ms < (CONSUMER_MS + 30) as f64, "latency bounded by one consumer period");
    assert!(stats.frames_captured >= stats.frames_dropped + received.len() as u64);
    let status = capture.stop();
    assert!(matches!(status, CaptureStatus::Ended | CaptureStatus::Stopped), "{status:?}");
}

#[test]
fn missing_webcam_reports_camera_lost_and_stops_cleanly() {
    let options = CaptureOptions { retry_interval_ms: 100, ..CaptureOptions::default() };
    let capture = CaptureThread::webcam(WebcamConfig { index: 77, ..WebcamConfig::default() }, options).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(5);
    while capture.status() == CaptureStatus::Starting && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(capture.status(), CaptureStatus::CameraLost { retry_in_ms: 100 });
    assert!(capture.recv_timeout(Duration::from_millis(50)).is_none());
    assert_eq!(capture.stop(), CaptureStatus::Stopped);
}

#[test]
fn push_never_blocks_and_counts_drops_when_the_encoder_lags() {
    const FRAMES: u64 = 60;
    let config = RecorderConfig { queue_frames: 2, ..RecorderConfig::default() };
    let sink = Arc::new(Mutex::new(Vec::new()));
    let recorder = Recorder::start_with_writer(common::SharedSink(Arc::clone(&sink)), config).expect("start");
    let pictures: Vec<Frame> = (0..FRAMES).map(|i| synthetic(i, SIDE_PX, SIDE_PX, FPS)).collect();
    let mut dropped = 0u64;
    let mut worst_push_ms = 0.0f64;
    let burst = Instant::now();
    for frame in pictures {
        let t = Instant::now();
        if recorder.push(frame) == PushOutcome::Dropped {
            dropped += 1;
        }
        worst_push_ms = worst_push_ms.max(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean_push_ms = burst.elapsed().as_secs_f64() * 1e3 / FRAMES as f64;
    let summary = recorder.stop().expect("stop");
    println!(
        "lagging encoder: {dropped} of {FRAMES} dropped, push mean {mean_push_ms:.3} ms worst {worst_push_ms:.3} ms, {summary:?}"
    );
    assert!(dropped > 0, "a burst larger than the queue must drop");
    assert_eq!(summary.frames_dropped, dropped);
    assert_eq!(summary.frames_written + dropped, FRAMES);
    // One encode takes ~4 ms; a blocking push would average at least that.
    assert!(mean_push_ms < 1.0, "push must not wait for the encoder");
    assert!(worst_push_ms < 50.0, "push must not block");
}

#[test]
fn variable_frame_rate_timestamps_survive_the_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vfr.mp4");
    // Irregular gaps, a repeated timestamp and a non-zero start.
    let times_us: [i64; 8] = [5_000_000, 5_010_000, 5_050_000, 5_050_000, 5_051_000, 5_200_000, 7_500_000, 7_533_333];
    let recorder =
        Recorder::start(&path, RecorderConfig { queue_frames: 16, ..RecorderConfig::default() }).expect("start");
    for (i, &t) in times_us.iter().enumerate() {
        let mut frame = synthetic(i as u64, 128, 96, FPS);
        frame.timestamp_us = t;
        assert_eq!(recorder.push(frame), PushOutcome::Queued);
    }
    let summary = recorder.stop().expect("stop");
    assert_eq!(summary.frames_written, times_us.len() as u64);
    let mut source = VideoFileSource::open(&path).expect("open");
    let (frames, err) = read_all(&mut source);
    assert!(err.is_none());
    let got: Vec<i64> = frames.iter().map(|f| f.timestamp_us).collect();
    println!("VFR: wrote {times_us:?}, read {got:?}");
    const TICK_US: i64 = 12; // one 90 kHz tick, rounded up
    for (i, (&want, &have)) in times_us.iter().zip(&got).enumerate() {
        let want = want - times_us[0];
        // The repeated timestamp is moved one tick later.
        let slack = if i == 3 { 2 * TICK_US } else { TICK_US };
        assert!((have - want).abs() <= slack, "frame {i}: wrote {want} read {have}");
    }
}

#[test]
fn file_source_plays_in_real_time_on_a_capture_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("thread.mp4");
    const FRAMES: u64 = 30;
    let recorder =
        Recorder::start(&path, RecorderConfig { queue_frames: 64, ..RecorderConfig::default() }).expect("start");
    for i in 0..FRAMES {
        recorder.push(synthetic(i, 128, 96, FPS));
    }
    recorder.stop().expect("stop");
    let opener_path = path.clone();
    let capture = CaptureThread::spawn(
        "test-file",
        move || VideoFileSource::open(&opener_path).map(|s| Box::new(s) as Box<dyn FrameSource>),
        CaptureOptions::default(),
    )
    .expect("spawn");
    let start = Instant::now();
    let mut indices = Vec::new();
    while let Some(frame) = capture.recv_timeout(Duration::from_millis(500)) {
        indices.push(frame.index);
    }
    let elapsed_ms = start.elapsed().as_millis();
    println!("file on capture thread: {} frames in {elapsed_ms} ms, status {:?}", indices.len(), capture.status());
    assert_eq!(capture.status(), CaptureStatus::Ended);
    assert_eq!(indices, (0..FRAMES).collect::<Vec<_>>(), "a fast consumer sees every frame");
    assert!(elapsed_ms >= 900, "30 frames at 30 fps take about a second");
    let bad = CaptureThread::spawn(
        "test-bad-file",
        || VideoFileSource::open("/nonexistent/x.mp4").map(|s| Box::new(s) as Box<dyn FrameSource>),
        CaptureOptions::default(),
    )
    .expect("spawn");
    std::thread::sleep(Duration::from_millis(200));
    assert!(matches!(bad.status(), CaptureStatus::Failed(ref m) if m.contains("/nonexistent/x.mp4")));
}

#[test]
fn damaged_headers_and_cuts_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clean.mp4");
    let recorder =
        Recorder::start(&path, RecorderConfig { queue_frames: 128, ..RecorderConfig::default() }).expect("start");
    for i in 0..90 {
        recorder.push(synthetic(i, 64, 48, FPS));
    }
    recorder.stop().expect("stop");
    let clean = std::fs::read(&path).expect("read");
    let damaged = dir.path().join("damaged.mp4");
    let mut state = 0x2545_F491_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut opened = 0;
    for round in 0..400 {
        let mut bytes = clean.clone();
        if round % 4 == 0 {
            bytes.truncate(next() as usize % clean.len());
        } else {
            // Flip bytes in the metadata-heavy start and at a random moof.
            for _ in 0..1 + round % 3 {
                let pos = if round % 2 == 0 { next() as usize % 1200 } else { next() as usize % clean.len() };
                if let Some(b) = bytes.get_mut(pos) {
                    *b ^= 1 << (next() % 8);
                }
            }
        }
        std::fs::write(&damaged, &bytes).expect("write");
        let Ok(track) = metaportrait::capture::mp4_demux::read_video_track(&damaged) else { continue };
        opened += 1;
        assert!(track.samples.len() <= 90 || round % 4 != 0);
        // Decode everything that opens: bit flips inside slices must not crash OpenH264 either.
        if let Ok(mut source) = VideoFileSource::open(&damaged) {
            let (frames, _) = read_all(&mut source);
            assert!(frames.len() <= 90);
        }
    }
    println!("damaged inputs: {opened} of 400 still parsed, none panicked");
}
