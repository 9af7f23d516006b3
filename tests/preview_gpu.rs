//! Headless wgpu readback of the preview engine: the portrait's landmark mesh drawn with wgpu (`GpuMeshWarp`) equals
//! the CPU path (`MeshWarp`) on the bundled portrait with its real landmarks. Needs a wgpu adapter (Mesa's lavapipe is
//! enough); without one the test says why and passes, unless `METAPORTRAIT_REQUIRE_WGPU=1` (set by scripts/test.sh).

use std::path::PathBuf;

use image::RgbImage;
use metaportrait::face::FaceMesher;
use metaportrait::model::preview::MeshWarp;
use metaportrait::model::preview::gpu::{GpuContext, GpuError, GpuMeshWarp};
use metaportrait::pipeline::render::prepare_portrait;

/// Mean absolute difference per channel allowed between the two paths (bilinear weights are quantised on the GPU).
const MEAN_TOLERANCE: f64 = 0.5;
/// Share of pixels allowed to differ by more than `OUTLIER_LEVELS` (pixels on triangle edges may fall on either
/// side of an edge in the two rasterisers).
const OUTLIER_SHARE: f64 = 0.005;
const OUTLIER_LEVELS: u8 = 8;

fn gpu() -> Option<GpuContext> {
    match GpuContext::headless() {
        Ok(gpu) => {
            eprintln!("adapter: {}", gpu.adapter_name);
            Some(gpu)
        }
        Err(error) => {
            assert!(std::env::var("METAPORTRAIT_REQUIRE_WGPU").is_err(), "a wgpu adapter is required: {error}");
            eprintln!("skipping: {error}");
            None
        }
    }
}

fn portrait() -> (RgbImage, Vec<[f32; 2]>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("assets/portrait.png");
    let image = metaportrait::face::load_image(&path).expect("bundled portrait");
    let mut mesher = FaceMesher::from_dir(&root.join("models")).expect("face models");
    let prepared = prepare_portrait(&mut mesher, &image, &path).expect("a face");
    (prepared.crop, prepared.landmarks.iter().map(|p| [p[0], p[1]]).collect())
}

/// The landmarks turned by 6° about their centroid, shifted, and with a smooth per-point wobble (a new expression).
fn posed(landmarks: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let n = landmarks.len() as f32;
    let cx = landmarks.iter().map(|p| p[0]).sum::<f32>() / n;
    let cy = landmarks.iter().map(|p| p[1]).sum::<f32>() / n;
    let (s, c) = 6f32.to_radians().sin_cos();
    landmarks
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (dx, dy) = (p[0] - cx, p[1] - cy);
            let wobble = 1.5 * (i as f32 * 0.37).sin();
            [cx + c * dx - s * dy + 4.0 + wobble, cy + s * dx + c * dy - 3.0 - wobble]
        })
        .collect()
}

fn compare(a: &RgbImage, b: &RgbImage) -> (f64, f64) {
    let sum: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| f64::from(x.abs_diff(*y))).sum();
    let outliers = a.pixels().zip(b.pixels()).filter(|(p, q)| (0..3).any(|k| p[k].abs_diff(q[k]) > OUTLIER_LEVELS));
    let pixels = f64::from(a.width() * a.height());
    (sum / a.as_raw().len() as f64, outliers.count() as f64 / pixels)
}

#[test]
fn gpu_mesh_warp_matches_the_cpu_path() {
    let Some(gpu) = gpu() else { return };
    let (crop, landmarks) = portrait();
    let mut cpu = MeshWarp::new(crop.clone(), &landmarks).expect("mesh");
    let mut on_gpu = GpuMeshWarp::new(&gpu, MeshWarp::new(crop.clone(), &landmarks).expect("mesh"));
    let (w, h) = crop.dimensions();
    let (mut from_cpu, mut from_gpu) = (RgbImage::new(w, h), RgbImage::new(w, h));

    on_gpu.render(&landmarks, &mut from_gpu).expect("renders");
    let (mean, outliers) = compare(&from_gpu, &crop);
    eprintln!("at rest: GPU vs portrait mean {mean:.4}, outliers {:.4}%", outliers * 100.0);
    assert!(mean < MEAN_TOLERANCE && outliers < OUTLIER_SHARE, "at rest the GPU path must reproduce the portrait");

    let target = posed(&landmarks);
    cpu.render(&target, &mut from_cpu).expect("renders");
    on_gpu.render(&target, &mut from_gpu).expect("renders");
    let (mean, outliers) = compare(&from_gpu, &from_cpu);
    eprintln!("posed: GPU vs CPU mean {mean:.4}, outliers {:.4}%", outliers * 100.0);
    assert!(mean < MEAN_TOLERANCE, "mean difference {mean}");
    assert!(outliers < OUTLIER_SHARE, "{:.3}% of pixels differ by more than {OUTLIER_LEVELS}", outliers * 100.0);
    let (moved, _) = compare(&from_gpu, &crop);
    assert!(moved > 2.0, "the posed frame barely differs from the portrait ({moved})");
}

#[test]
fn gpu_mesh_warp_rejects_bad_inputs() {
    let Some(gpu) = gpu() else { return };
    let crop = RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8 * 4, y as u8 * 5, 7]));
    let ring: Vec<[f32; 2]> =
        (0..10).map(|i| i as f32 * 0.628).map(|a| [32.0 + 12.0 * a.cos(), 24.0 + 10.0 * a.sin()]).collect();
    let mut warp = GpuMeshWarp::new(&gpu, MeshWarp::new(crop, &ring).expect("mesh"));
    let mut out = RgbImage::new(64, 48);
    assert!(matches!(warp.render(&ring[..9], &mut out), Err(GpuError::Preview(_))));
    let mut wrong = RgbImage::new(10, 10);
    let err = warp.render(&ring, &mut wrong).expect_err("wrong output size");
    assert!(err.to_string().contains("10×10"), "{err}");
    // A lost (non-finite) landmark keeps its portrait position instead of tearing the mesh.
    let mut lost = ring.clone();
    lost[3] = [f32::NAN, f32::NAN];
    warp.render(&lost, &mut out).expect("renders");
    let mut at_rest = RgbImage::new(64, 48);
    warp.render(&ring, &mut at_rest).expect("renders");
    assert_eq!(out, at_rest);
}
