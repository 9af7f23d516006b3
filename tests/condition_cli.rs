//! `metaportrait condition`: line images from official `.npy` landmarks (669 points, official topology and palette)
//! and from `landmarks --json` output (MediaPipe topology).

mod common;

use std::process::Command;

fn write_npy(path: &std::path::Path, points: &[[f32; 2]]) {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, 2), }}", points.len());
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(points.iter().flat_map(|p| p.iter().flat_map(|v| v.to_le_bytes())));
    std::fs::write(path, out).expect("write npy");
}

#[test]
fn official_npy_landmarks_draw_with_the_official_palette() {
    let dir = common::tempdir("condition-cli");
    // 669 points on a spiral inside the crop.
    let pts: Vec<[f32; 2]> = (0..669)
        .map(|i| {
            let a = i as f32 * 0.05;
            let r = 0.05 + 0.35 * i as f32 / 669.0;
            [0.5 + r * a.cos(), 0.5 + r * a.sin()]
        })
        .collect();
    write_npy(&dir.join("ldmk.npy"), &pts);
    let tsv = common::fixtures_dir().join("official-topology").join("dense_669_connectivity.tsv");
    let out = Command::new(common::bin())
        .arg("condition")
        .arg(dir.join("ldmk.npy"))
        .arg("--connectivity")
        .arg(&tsv)
        .arg("--output")
        .arg(dir.join("line.png"))
        .arg("--keypoints")
        .arg(dir.join("kp.json"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(dir.join("line.png")).expect("png").to_rgb8();
    assert_eq!(img.dimensions(), (256, 256));
    let lit = img.pixels().filter(|p| p.0 != [0, 0, 0]).count();
    assert!(lit > 2000, "{lit} pixels drawn");
    let kp: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("kp.json")).expect("kp")).expect("json");
    assert_eq!(kp["topology"], "official");
    let first = &kp["keypoints"][0];
    // Keypoint 0 is ldmk_idx[0] = 521, mapped by 2p − 1.
    let expected = [2.0 * pts[521][0] - 1.0, 2.0 * pts[521][1] - 1.0];
    assert!((first[0].as_f64().expect("x") as f32 - expected[0]).abs() < 1e-5);
    assert!((first[1].as_f64().expect("y") as f32 - expected[1]).abs() < 1e-5);
    // Without the connectivity file the command says what is missing.
    let out = Command::new(common::bin())
        .arg("condition")
        .arg(dir.join("ldmk.npy"))
        .arg("--output")
        .arg(dir.join("x.png"))
        .output()
        .expect("run");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--connectivity"));
    assert!(!dir.join("x.png").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn mediapipe_landmarks_json_draws_the_mediapipe_topology() {
    let dir = common::tempdir("condition-mp");
    let image = common::fixtures_dir().join("faces").join("images").join("final_0_00000002.png");
    let out =
        Command::new(common::bin()).arg("landmarks").arg(&image).args(["--refine", "--json"]).output().expect("run");
    assert!(out.status.success());
    std::fs::write(dir.join("lm.json"), &out.stdout).expect("write");
    let out = Command::new(common::bin())
        .arg("condition")
        .arg(dir.join("lm.json"))
        .arg("--output")
        .arg(dir.join("line.png"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mediapipe topology, 157 edges"));
    std::fs::remove_dir_all(&dir).ok();
}
