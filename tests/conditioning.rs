//! Conditioning against the official topology fixture: the 669-point palette reproduced exactly, the keypoint
//! indices, and line images from real landmarks.

mod common;

use metaportrait::face::condition::{CONDITION_SIZE, Conditioner};
use metaportrait::face::raster::Rgb;
use metaportrait::face::topology::{NUM_KEYPOINTS, OFFICIAL_POINTS, Topology};

fn topology_dir() -> std::path::PathBuf {
    common::fixtures_dir().join("official-topology")
}

#[test]
fn official_palette_and_indices_equal_the_reference() {
    let t = Topology::official(&topology_dir().join("dense_669_connectivity.tsv")).expect("topology");
    let palette: serde_json::Value =
        serde_json::from_slice(&std::fs::read(topology_dir().join("official_palette.json")).expect("read"))
            .expect("json");
    assert_eq!(t.edges.len() as u64, palette["num_edges"].as_u64().expect("count"));
    let expected: Vec<[u8; 3]> = serde_json::from_value(palette["palette_rgb"].clone()).expect("palette");
    let ours: Vec<[u8; 3]> = t.palette.iter().map(|c| c.0).collect();
    assert_eq!(ours, expected);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(topology_dir().join("official_topology.json")).expect("read"))
            .expect("json");
    let idx: Vec<usize> = serde_json::from_value(info["ldmk_idx"].clone()).expect("ldmk_idx");
    assert_eq!(t.keypoints.to_vec(), idx);
    assert_eq!(info["num_landmarks"].as_u64(), Some(OFFICIAL_POINTS as u64));
    assert_eq!(idx.len(), NUM_KEYPOINTS);
}

#[test]
fn mediapipe_line_images_from_real_landmarks() {
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(common::fixtures_dir().join("faces").join("mediapipe").join("imgs_0_00000002.json"))
            .expect("read"),
    )
    .expect("json");
    let pts: Vec<[f32; 2]> = json["face_mesh_refined"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| [p[0].as_f64().unwrap_or(0.0) as f32, p[1].as_f64().unwrap_or(0.0) as f32])
        .collect();
    // As in a face crop: the face fills most of the frame.
    let (lo_x, lo_y) = pts.iter().fold((f32::MAX, f32::MAX), |(a, b), p| (a.min(p[0]), b.min(p[1])));
    let span = pts.iter().map(|p| (p[0] - lo_x).max(p[1] - lo_y)).fold(0.0f32, f32::max);
    let pts: Vec<[f32; 2]> =
        pts.iter().map(|p| [0.1 + 0.8 * (p[0] - lo_x) / span, 0.1 + 0.8 * (p[1] - lo_y) / span]).collect();
    let mut c = Conditioner::new(Topology::mediapipe(), CONDITION_SIZE).expect("canvas");
    let palette = c.topology().palette.clone();
    let canvas = c.draw(&pts).expect("draw");
    // Every pixel is black or a blend towards the palette; the face outline spans most of the face.
    let lit: Vec<(usize, usize)> = (0..CONDITION_SIZE)
        .flat_map(|y| (0..CONDITION_SIZE).map(move |x| (x, y)))
        .filter(|&(x, y)| canvas.pixel(x, y).is_some_and(|p| p != Rgb::new(0, 0, 0)))
        .collect();
    assert!(lit.len() > 500, "{} pixels", lit.len());
    // Each edge's midpoint carries (about 0.9 of) its own colour, unless a later edge crossed it.
    let edges = c.topology().edges.clone();
    let canvas = c.draw(&pts).expect("draw");
    let px = |p: [f32; 2]| [(p[0] * 256.0) as i64, (p[1] * 256.0) as i64];
    let coloured = edges
        .iter()
        .zip(&palette)
        .filter(|(e, colour)| {
            let (a, b) = (px(pts[e.0]), px(pts[e.1]));
            let (mx, my) = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2);
            // Some pixel next to the midpoint is the edge's colour at a coverage of at least a half.
            (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dx, dy))).any(|(dx, dy)| {
                let p = canvas.pixel((mx + dx) as usize, (my + dy) as usize).unwrap_or_default();
                let got = [p.r, p.g, p.b].map(f32::from);
                let c = colour.0.map(f32::from);
                let alpha = (0..3).map(|k| got[k] * c[k]).sum::<f32>() / (0..3).map(|k| c[k] * c[k]).sum::<f32>();
                alpha >= 0.5 && (0..3).all(|k| (got[k] - alpha * c[k]).abs() <= 12.0)
            })
        })
        .count();
    assert!(coloured * 10 >= edges.len() * 9, "{coloured} of {} edges show their colour", edges.len());
    let kp = c.keypoints(&pts).expect("keypoints");
    // The image-left eye box lies left of the image-right one; the mouth is below both.
    assert!(kp[2][0] < kp[5][0]);
    assert!(kp[56][1] > kp[3][1] && kp[57][1] > kp[56][1]);
}
