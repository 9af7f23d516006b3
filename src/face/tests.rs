//! End-to-end checks of the face stage against MediaPipe 0.10.14's recorded outputs.
//!
//! Fixtures come from `$METAPORTRAIT_SHARED/fixtures/faces` (default `../shared` beside the crate); models from
//! `$METAPORTRAIT_FACE_MODELS` (default `<crate>/models`). Per-image errors are printed (`--nocapture`).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::Deserialize;

use super::crop::{Border, crop_rgb};
use super::detect::{Detection, NUM_KEYPOINTS};
use super::geometry::{Point2, Rect};
use super::mesh::{NUM_MESH_POINTS, NUM_REFINED_POINTS};
use super::roi::Roi;
use super::tracker::{FaceTracker, TrackState, TrackerOptions};
use super::{FaceError, FaceMesher, FaceMesherOptions, FaceModelPaths, load_image};

const SHARED_ENV: &str = "METAPORTRAIT_SHARED";
const MODELS_ENV: &str = "METAPORTRAIT_FACE_MODELS";

/// Required accuracy of the 468-point mesh against MediaPipe (pixels, x and y).
const MESH_MEAN_TOL: f32 = 0.1;
const MESH_MAX_TOL: f32 = 1.0;
/// Required mean accuracy of the refined 478 points.
const REFINED_MEAN_TOL: f32 = 0.2;
/// Detector box corners and keypoints against MediaPipe (pixels) and score. Measured: ≤ 0.0002 px, score ≤ 1e-5.
const DETECTION_PX_TOL: f32 = 0.02;
const DETECTION_SCORE_TOL: f32 = 1e-3;
/// ROI from our own detection against MediaPipe's ROI: centre/size in pixels, rotation in radians.
/// Measured: ≤ 0.0002 px, ≤ 1e-5 rad.
const ROI_PX_TOL: f32 = 0.02;
const ROI_ROTATION_TOL: f32 = 1e-3;
/// ROI maths from MediaPipe's own detection (normalised units, radians): float rounding only.
const ROI_EXACT_TOL: f32 = 1e-5;

fn fixtures_dir() -> PathBuf {
    let shared = std::env::var_os(SHARED_ENV)
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("shared"), PathBuf::from);
    shared.join("fixtures").join("faces")
}

fn models_dir() -> PathBuf {
    std::env::var_os(MODELS_ENV).map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models"), PathBuf::from)
}

#[derive(Deserialize)]
struct RecordedDetection {
    score: Vec<f32>,
    bbox_xmin_ymin_w_h: [f32; 4],
    keypoints: Vec<[f32; 2]>,
}

#[derive(Deserialize)]
struct RecordedRoi {
    x_center: f32,
    y_center: f32,
    width: f32,
    height: f32,
    rotation: f32,
}

#[derive(Deserialize)]
struct RecordedDebug {
    detection: RecordedDetection,
    roi_norm: RecordedRoi,
}

#[derive(Deserialize)]
struct Recorded {
    width: u32,
    height: u32,
    face_mesh_468: Vec<[f32; 3]>,
    face_mesh_refined: Vec<[f32; 3]>,
    face_detection: Vec<RecordedDetection>,
    face_mesh_468_debug: RecordedDebug,
}

struct Fixture {
    name: String,
    image: PathBuf,
    recorded: Recorded,
}

impl Recorded {
    /// Normalised points to pixels (z scales like x).
    fn pixels(&self, points: &[[f32; 3]]) -> Vec<[f32; 3]> {
        let (w, h) = (self.width as f32, self.height as f32);
        points.iter().map(|p| [p[0] * w, p[1] * h, p[2] * w]).collect()
    }

    fn detection_pixels(&self, d: &RecordedDetection) -> Detection {
        let (w, h) = (self.width as f32, self.height as f32);
        let [x, y, bw, bh] = d.bbox_xmin_ymin_w_h;
        let mut keypoints = [Point2::default(); NUM_KEYPOINTS];
        for (k, p) in keypoints.iter_mut().zip(&d.keypoints) {
            *k = Point2::new(p[0] * w, p[1] * h);
        }
        Detection { score: d.score[0], bbox: Rect::new(x * w, y * h, bw * w, bh * h), keypoints }
    }
}

fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("images"))
        .unwrap_or_else(|e| panic!("fixtures missing at {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".png")).map(str::to_owned))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no fixture images in {}", dir.display());
    names
        .into_iter()
        .map(|name| {
            let json = dir.join("mediapipe").join(format!("{name}.json"));
            let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            let recorded = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            Fixture { image: dir.join("images").join(format!("{name}.png")), name, recorded }
        })
        .collect()
}

fn mesher() -> FaceMesher {
    let dir = models_dir();
    FaceMesher::from_dir(&dir).unwrap_or_else(|e| panic!("face models in {} (set {MODELS_ENV}): {e}", dir.display()))
}

/// Mean and max x/y distance in pixels.
fn point_errors(ours: &[[f32; 3]], theirs: &[[f32; 3]]) -> (f32, f32) {
    assert_eq!(ours.len(), theirs.len());
    let d: Vec<f32> = ours.iter().zip(theirs).map(|(a, b)| (a[0] - b[0]).hypot(a[1] - b[1])).collect();
    (d.iter().sum::<f32>() / d.len() as f32, d.iter().fold(0.0, |m: f32, &v| m.max(v)))
}

/// Largest corner or keypoint distance between two detections, in pixels.
fn detection_error(a: &Detection, b: &Detection) -> f32 {
    let corners = |d: &Detection| {
        [Point2::new(d.bbox.x, d.bbox.y), Point2::new(d.bbox.x + d.bbox.width, d.bbox.y + d.bbox.height)]
    };
    let box_err = corners(a).into_iter().zip(corners(b)).map(|(p, q)| p.distance(q));
    let kp_err = a.keypoints.iter().zip(&b.keypoints).map(|(p, q)| p.distance(*q));
    box_err.chain(kp_err).fold(0.0, f32::max)
}

#[test]
fn roi_from_recorded_detection_matches_mediapipe() {
    for f in fixtures() {
        let r = &f.recorded;
        let detection = r.detection_pixels(&r.face_mesh_468_debug.detection);
        let ours = detection.roi().normalized(r.width, r.height);
        let want = &r.face_mesh_468_debug.roi_norm;
        let errs = [
            ours.x_center - want.x_center,
            ours.y_center - want.y_center,
            ours.width - want.width,
            ours.height - want.height,
            ours.rotation - want.rotation,
        ];
        let worst = errs.iter().fold(0.0f32, |m, e| m.max(e.abs()));
        assert!(worst < ROI_EXACT_TOL, "{}: ROI differs by {errs:?}", f.name);
    }
}

#[test]
fn mesh_468_matches_mediapipe_on_every_fixture() {
    let mut mesher = mesher();
    let mut failures = Vec::new();
    for f in fixtures() {
        let image = load_image(&f.image).unwrap();
        let faces = mesher.detect_landmarks(&image, false).unwrap();
        let Some(face) = faces.first() else {
            failures.push(format!("{}: no face found", f.name));
            continue;
        };
        assert_eq!(face.landmarks.points.len(), NUM_MESH_POINTS);
        let (mean, max) = point_errors(&face.landmarks.points, &f.recorded.pixels(&f.recorded.face_mesh_468));
        println!("mesh468 {:<36} mean {mean:.4} px  max {max:.4} px", f.name);
        if mean > MESH_MEAN_TOL || max > MESH_MAX_TOL {
            failures.push(format!("{}: mean {mean:.4} max {max:.4}", f.name));
        }
    }
    assert!(failures.is_empty(), "468-point mesh off MediaPipe: {failures:#?}");
}

#[test]
fn refined_478_matches_mediapipe_on_every_fixture() {
    let mut mesher = mesher();
    let mut failures = Vec::new();
    for f in fixtures() {
        let image = load_image(&f.image).unwrap();
        let faces = mesher.detect_landmarks(&image, true).unwrap();
        let Some(face) = faces.first() else {
            failures.push(format!("{}: no face found", f.name));
            continue;
        };
        assert_eq!(face.landmarks.points.len(), NUM_REFINED_POINTS);
        let want = f.recorded.pixels(&f.recorded.face_mesh_refined);
        let (mean, max) = point_errors(&face.landmarks.points, &want);
        let (iris_mean, iris_max) = point_errors(&face.landmarks.points[NUM_MESH_POINTS..], &want[NUM_MESH_POINTS..]);
        println!(
            "refined {:<36} mean {mean:.4} px  max {max:.4} px  (iris mean {iris_mean:.4} max {iris_max:.4})",
            f.name
        );
        if mean > REFINED_MEAN_TOL {
            failures.push(format!("{}: mean {mean:.4} max {max:.4}", f.name));
        }
    }
    assert!(failures.is_empty(), "478-point mesh off MediaPipe: {failures:#?}");
}

#[test]
fn detector_and_roi_match_mediapipe() {
    let mut mesher = mesher();
    let mut failures = Vec::new();
    for f in fixtures() {
        let r = &f.recorded;
        let image = load_image(&f.image).unwrap();
        let ours = mesher.detect(&image).unwrap();
        if ours.len() != r.face_detection.len() {
            failures.push(format!("{}: {} detections, MediaPipe {}", f.name, ours.len(), r.face_detection.len()));
            continue;
        }
        for (d, want) in ours.iter().zip(&r.face_detection) {
            let want = r.detection_pixels(want);
            let err = detection_error(d, &want);
            let score_err = (d.score - want.score).abs();
            let roi = d.roi();
            let want_roi = &r.face_mesh_468_debug.roi_norm;
            let (w, h) = (r.width as f32, r.height as f32);
            let centre_err = roi.center.distance(Point2::new(want_roi.x_center * w, want_roi.y_center * h));
            let size_err = (roi.size - want_roi.width * w).abs();
            let rot_err = (roi.rotation - want_roi.rotation).abs();
            println!(
                "detect  {:<36} box/keypoints max {err:.4} px  score {score_err:.5}  roi centre {centre_err:.4} px \
                 size {size_err:.4} px rot {rot_err:.5} rad",
                f.name
            );
            if err > DETECTION_PX_TOL || score_err > DETECTION_SCORE_TOL {
                failures.push(format!("{}: detection off by {err:.4} px, score {score_err:.5}", f.name));
            }
            if centre_err > ROI_PX_TOL || size_err > ROI_PX_TOL || rot_err > ROI_ROTATION_TOL {
                failures.push(format!("{}: ROI off: {centre_err:.4} px, {size_err:.4} px, {rot_err:.5} rad", f.name));
            }
        }
    }
    assert!(failures.is_empty(), "detector off MediaPipe: {failures:#?}");
}

/// A deterministic xorshift stream for noise.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Roughly Gaussian (sum of four uniforms), zero mean, given standard deviation.
    fn gauss(&mut self, std: f32) -> f32 {
        let sum: f32 = (0..4).map(|_| (self.next() % 10_000) as f32 / 10_000.0).sum();
        (sum - 2.0) * std * 3.0f32.sqrt()
    }
}

#[test]
fn blank_and_noise_images_have_no_face() {
    let mut mesher = mesher();
    let blank = RgbImage::from_pixel(320, 240, Rgb([128, 128, 128]));
    assert!(mesher.detect_landmarks(&blank, false).unwrap().is_empty());
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let noisy = RgbImage::from_fn(256, 256, |_, _| Rgb([0, 0, 0].map(|_: u8| (noise.next() % 256) as u8)));
    assert!(mesher.detect_landmarks(&noisy, false).unwrap().is_empty());
    // Both landmark models report no face in an empty ROI (the tracker's cue to re-detect).
    let roi = Roi { center: Point2::new(160.0, 120.0), size: 150.0, rotation: 0.0 };
    for refine in [false, true] {
        let presence = mesher.landmarks(&blank, &roi, refine).unwrap().presence;
        assert!(presence < mesher.options().min_presence, "refine {refine}: presence {presence} on a blank ROI");
    }
    // Degenerate frames are not errors either.
    assert!(mesher.detect_landmarks(&RgbImage::new(0, 0), true).unwrap().is_empty());
}

#[test]
fn two_faces_come_largest_first() {
    const SMALL_SIDE: u32 = 320;
    let dir = fixtures_dir().join("images");
    let big = load_image(&dir.join("imgs_0_00000002.png")).unwrap();
    let small_src = load_image(&dir.join("imgs_0_00000003.png")).unwrap();
    let small = image::imageops::resize(&small_src, SMALL_SIDE, SMALL_SIDE, image::imageops::FilterType::Triangle);
    // The smaller face goes on the left so that order by position would not pass by chance.
    let mut canvas = RgbImage::from_pixel(SMALL_SIDE + big.width(), big.height(), Rgb([0, 0, 0]));
    image::imageops::replace(&mut canvas, &small, 0, i64::from((big.height() - SMALL_SIDE) / 2));
    image::imageops::replace(&mut canvas, &big, i64::from(SMALL_SIDE), 0);
    let mut mesher = mesher();
    let faces = mesher.detect_landmarks(&canvas, false).unwrap();
    println!("two faces: {:?}", faces.iter().map(|f| (f.score, f.bbox)).collect::<Vec<_>>());
    assert_eq!(faces.len(), 2, "{:?}", faces.iter().map(|f| f.bbox).collect::<Vec<_>>());
    assert!(faces[0].bbox.area() > faces[1].bbox.area());
    let split = SMALL_SIDE as f32;
    assert!(faces[0].bbox.center().x > split, "the big face is on the right");
    assert!(faces[1].bbox.center().x < split);
}

#[test]
fn truncated_png_is_a_clear_error() {
    let src = fixtures_dir().join("images").join("astronaut.png");
    let bytes = std::fs::read(&src).unwrap();
    let path = std::env::temp_dir().join(format!("face-truncated-{}.png", std::process::id()));
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_image(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    assert!(matches!(err, FaceError::Image { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("face-truncated") && msg.contains("cannot decode"), "{msg}");
    let missing = load_image(Path::new("/nonexistent/face.png")).unwrap_err();
    assert!(matches!(missing, FaceError::ImageFile { .. }), "{missing:?}");
}

#[test]
fn missing_model_file_is_a_clear_error() {
    let paths = FaceModelPaths::in_dir(Path::new("/nonexistent-models"));
    let Err(err) = FaceMesher::new(&paths, FaceMesherOptions::default()) else { panic!("loaded from nowhere") };
    assert!(matches!(err, FaceError::ModelFile { .. }), "{err:?}");
    assert!(err.to_string().contains("face_detection_short_range.onnx"), "{err}");
}

#[test]
fn a_tampered_or_unlisted_model_is_refused_with_the_fix() {
    let dir = std::env::temp_dir().join(format!("mp-face-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [super::DETECTOR_FILE, super::MESH_FILE, super::ATTENTION_FILE, super::CHECKSUM_FILE] {
        std::fs::copy(models_dir().join(name), dir.join(name)).unwrap();
    }
    assert!(FaceMesher::new(&FaceModelPaths::in_dir(&dir), FaceMesherOptions::default()).is_ok());
    let mesh = dir.join(super::MESH_FILE);
    let mut bytes = std::fs::read(&mesh).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&mesh, bytes).unwrap();
    let Err(err) = FaceMesher::new(&FaceModelPaths::in_dir(&dir), FaceMesherOptions::default()) else {
        panic!("loaded a tampered model")
    };
    assert!(matches!(err, FaceError::ModelChecksum { .. }), "{err:?}");
    assert!(err.to_string().contains("convert-face-models.sh"), "{err}");
    std::fs::write(dir.join(super::CHECKSUM_FILE), "").unwrap();
    let Err(err) = FaceMesher::new(&FaceModelPaths::in_dir(&dir), FaceMesherOptions::default()) else {
        panic!("loaded an unlisted model")
    };
    assert!(err.to_string().contains("not listed"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `image` shifted by `shift` pixels and turned by `angle` radians about its centre (edges replicated).
fn moved(image: &RgbImage, shift: Point2, angle: f32) -> RgbImage {
    let (w, h) = (image.width(), image.height());
    let roi = Roi {
        center: Point2::new(w as f32 / 2.0 - shift.x, h as f32 / 2.0 - shift.y),
        size: w as f32,
        rotation: angle,
    };
    let bytes = crop_rgb(image, &roi, w as usize, Border::Replicate);
    RgbImage::from_raw(w, w, bytes).unwrap()
}

#[test]
fn tracking_keeps_the_id_and_skips_the_detector() {
    const FRAMES: usize = 20;
    let image = load_image(&fixtures_dir().join("images").join("astronaut.png")).unwrap();
    let mut mesher = mesher();
    let mut tracker = FaceTracker::new(TrackerOptions::default());
    assert_eq!(tracker.state(), TrackState::Searching);
    let mut ids = Vec::new();
    for i in 0..FRAMES {
        let frame = moved(&image, Point2::new(1.5 * i as f32, 0.8 * i as f32), 0.01 * i as f32);
        let out = tracker.track(&mut mesher, &frame, i as f64 / 30.0).unwrap();
        let face = out.face.unwrap_or_else(|| panic!("frame {i}: face lost ({:?})", out.state));
        assert_eq!(out.state, TrackState::Tracking { face_id: face.id });
        ids.push(face.id);
    }
    let stats = tracker.stats();
    println!("tracking: {stats:?}");
    assert!(ids.iter().all(|&id| id == ids[0]), "ids changed: {ids:?}");
    assert!(stats.detector_calls < FRAMES as u64, "{stats:?}");
    assert_eq!(stats.detector_calls, 1, "a smoothly moving face needs one detection: {stats:?}");
    // A blank frame loses the face without an error; the face after it gets a new id.
    let blank = RgbImage::from_pixel(image.width(), image.height(), Rgb([90, 90, 90]));
    let out = tracker.track(&mut mesher, &blank, 1.0).unwrap();
    assert_eq!(out.state, TrackState::NoFace);
    assert!(out.face.is_none() && out.detector_ran);
    let out = tracker.track(&mut mesher, &image, 1.1).unwrap();
    assert!(out.detector_ran);
    assert!(out.face.is_some_and(|f| f.id != ids[0]));
}

/// Mean over landmarks of the per-coordinate standard deviation across frames (x and y, pixels).
fn jitter(frames: &[Vec<[f32; 3]>]) -> f32 {
    let n = frames.len() as f32;
    let points = frames[0].len();
    let mut total = 0.0;
    for i in 0..points {
        for k in 0..2 {
            let mean = frames.iter().map(|f| f[i][k]).sum::<f32>() / n;
            total += (frames.iter().map(|f| (f[i][k] - mean).powi(2)).sum::<f32>() / n).sqrt();
        }
    }
    total / (2 * points) as f32
}

#[test]
fn one_euro_reduces_jitter_of_a_still_face() {
    const FRAMES: usize = 40;
    const WARMUP: usize = 5;
    const PIXEL_NOISE_STD: f32 = 12.0;
    // Measured: 0.234 px raw, 0.103 px smoothed with the default settings.
    const JITTER_RATIO_MAX: f32 = 0.75;
    let image = load_image(&fixtures_dir().join("images").join("astronaut.png")).unwrap();
    let mut mesher = mesher();
    let mut tracker = FaceTracker::new(TrackerOptions::default());
    let mut noise = Noise(42);
    let (mut raw, mut smooth) = (Vec::new(), Vec::new());
    for i in 0..FRAMES {
        let mut frame = image.clone();
        for px in frame.pixels_mut() {
            for c in px.0.iter_mut() {
                *c = (f32::from(*c) + noise.gauss(PIXEL_NOISE_STD)).round().clamp(0.0, 255.0) as u8;
            }
        }
        let out = tracker.track(&mut mesher, &frame, i as f64 / 30.0).unwrap();
        let face = out.face.unwrap_or_else(|| panic!("frame {i}: no face"));
        if i >= WARMUP {
            raw.push(face.raw);
            smooth.push(face.landmarks.points);
        }
    }
    let (raw_jitter, smooth_jitter) = (jitter(&raw), jitter(&smooth));
    println!("landmark jitter: raw {raw_jitter:.4} px, One-Euro {smooth_jitter:.4} px");
    assert!(smooth_jitter < JITTER_RATIO_MAX * raw_jitter, "raw {raw_jitter}, smoothed {smooth_jitter}");
}
