//! `metaportrait landmarks IMAGE [--refine] --json`: the interface outside checks use.

mod common;

use std::process::Command;

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(common::bin()).arg("landmarks").args(args).output().expect("run")
}

#[test]
fn json_matches_mediapipe_in_image_pixels() {
    let faces = common::fixtures_dir().join("faces");
    let image = faces.join("images").join("synth_astronaut_portrait384x512.png");
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(faces.join("mediapipe").join("synth_astronaut_portrait384x512.json")).expect("read"),
    )
    .expect("json");
    for (refine, key, count, tol_px) in [(false, "face_mesh_468", 468, 0.1), (true, "face_mesh_refined", 478, 0.2)] {
        let mut args = vec![image.as_os_str(), "--json".as_ref()];
        if refine {
            args.push("--refine".as_ref());
        }
        let out = run(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
        let (w, h) = (got["width"].as_f64().expect("width"), got["height"].as_f64().expect("height"));
        assert_eq!((w, h), (384.0, 512.0));
        let faces = got["faces"].as_array().expect("faces");
        assert_eq!(faces.len(), 1);
        assert!(faces[0]["score"].as_f64().expect("score") > 0.5);
        assert_eq!(faces[0]["box"].as_array().expect("box").len(), 4);
        let points = faces[0]["landmarks"].as_array().expect("landmarks");
        assert_eq!(points.len(), count);
        let expected = reference[key].as_array().expect("reference");
        let mut sum = 0.0;
        for (p, e) in points.iter().zip(expected) {
            let (px, py) = (p[0].as_f64().unwrap_or(f64::NAN), p[1].as_f64().unwrap_or(f64::NAN));
            let (ex, ey) = (e[0].as_f64().unwrap_or(f64::NAN) * w, e[1].as_f64().unwrap_or(f64::NAN) * h);
            sum += ((px - ex).powi(2) + (py - ey).powi(2)).sqrt();
            // z is scaled like x.
            let ez = e[2].as_f64().unwrap_or(f64::NAN) * w;
            assert!((p[2].as_f64().unwrap_or(f64::NAN) - ez).abs() < 1.0, "z {p:?} vs {ez}");
        }
        let mean = sum / count as f64;
        assert!(mean <= tol_px, "{key}: mean error {mean} px");
    }
}

#[test]
fn bad_images_fail_and_faceless_images_are_empty() {
    let dir = common::tempdir("landmarks-cli");
    let src = common::fixtures_dir().join("faces").join("images").join("astronaut.png");
    let bytes = std::fs::read(&src).expect("read");
    std::fs::write(dir.join("cut.png"), &bytes[..bytes.len() / 3]).expect("write");
    let out = run(&[dir.join("cut.png").as_os_str(), "--json".as_ref()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cut.png"));
    let blank = image::RgbImage::from_pixel(200, 150, image::Rgb([128, 128, 128]));
    blank.save(dir.join("blank.png")).expect("save");
    let out = run(&[dir.join("blank.png").as_os_str(), "--json".as_ref()]);
    assert!(out.status.success());
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(got["faces"].as_array().map(Vec::len), Some(0));
    std::fs::remove_dir_all(&dir).ok();
}
