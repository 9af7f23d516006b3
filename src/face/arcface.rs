//! The face chip of ArcFace-style recognition networks (insightface's convention), for embedders given as a file.
//!
//! Owns the alignment: the standard 5-point template of the 112² ArcFace chip (eye centres, nose tip, mouth
//! corners, image-left first), the least-squares similarity taking it onto the same 5 points of a MediaPipe mesh
//! (iris centres when the mesh is refined, else the midpoint of each eye's corners), bilinear sampling with black
//! outside the picture (as `cv2.warpAffine(..., borderValue=0)`), and the input normalisation `(v − 127.5) / 127.5`
//! in RGB, planar. Receives a picture and its MediaPipe landmarks (image pixels); emits the `[1, 3, 112, 112]` input.
//! The network's output (any length) is L2-normalised by `face::embed::IdEmbedder`.

use image::RgbImage;

use super::FaceError;
use super::align::{Similarity2, sample_black_border};

/// Side of the chip ArcFace-style networks read.
pub const ARCFACE_SIDE_PX: usize = 112;
/// insightface's `arcface_dst`: image-left eye, image-right eye, nose tip, image-left and image-right mouth corner,
/// in 112² chip pixels.
pub const ARCFACE_TEMPLATE: [[f64; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];
/// Mean and scale of the input normalisation.
const PIXEL_MEAN: f32 = 127.5;
const PIXEL_SCALE: f32 = 1.0 / 127.5;
/// MediaPipe eye corners (image-left eye: outer, inner; image-right eye: inner, outer).
const LEFT_EYE_CORNERS: [usize; 2] = [33, 133];
const RIGHT_EYE_CORNERS: [usize; 2] = [362, 263];
/// MediaPipe iris centres of the refined mesh (image-left, image-right).
const IRIS_CENTRES: [usize; 2] = [468, 473];
const NOSE_TIP: usize = 1;
const MOUTH_CORNERS: [usize; 2] = [61, 291];

/// The 5 template points of a MediaPipe mesh (image pixels), in the template's order.
pub fn arcface5_points(landmarks: &[[f32; 3]]) -> Option<[[f64; 2]; 5]> {
    let p = |i: usize| landmarks.get(i).map(|q| [f64::from(q[0]), f64::from(q[1])]);
    let mid = |[a, b]: [usize; 2]| {
        Some({
            let (a, b) = (p(a)?, p(b)?);
            [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0]
        })
    };
    let (left_eye, right_eye) = if landmarks.len() > IRIS_CENTRES[1] {
        (p(IRIS_CENTRES[0])?, p(IRIS_CENTRES[1])?)
    } else {
        (mid(LEFT_EYE_CORNERS)?, mid(RIGHT_EYE_CORNERS)?)
    };
    Some([left_eye, right_eye, p(NOSE_TIP)?, p(MOUTH_CORNERS[0])?, p(MOUTH_CORNERS[1])?])
}

/// The normalised `[3, 112, 112]` chip (planar RGB) of the face at `points`, written into `out`.
pub fn arcface_chip(img: &RgbImage, points: &[[f64; 2]; 5], out: &mut Vec<f32>) -> Result<(), FaceError> {
    let m = Similarity2::fit(&ARCFACE_TEMPLATE, points).ok_or_else(|| FaceError::ModelOutput {
        model: "face alignment".into(),
        reason: "the 5 alignment landmarks coincide".into(),
    })?;
    let plane = ARCFACE_SIDE_PX * ARCFACE_SIDE_PX;
    out.clear();
    out.resize(3 * plane, 0.0);
    for row in 0..ARCFACE_SIDE_PX {
        for col in 0..ARCFACE_SIDE_PX {
            let [x, y] = m.apply([col as f64, row as f64]);
            let v = sample_black_border(img, x, y);
            for (c, value) in v.iter().enumerate() {
                out[c * plane + row * ARCFACE_SIDE_PX + col] = (*value as f32 - PIXEL_MEAN) * PIXEL_SCALE;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_face_at_the_template_is_copied_and_normalised() {
        // Points exactly at the template (scaled by 2, shifted): the chip samples every second pixel.
        let img = RgbImage::from_fn(300, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 200]));
        let points = ARCFACE_TEMPLATE.map(|[x, y]| [2.0 * x + 10.0, 2.0 * y + 20.0]);
        let mut chip = Vec::new();
        arcface_chip(&img, &points, &mut chip).unwrap();
        let plane = ARCFACE_SIDE_PX * ARCFACE_SIDE_PX;
        let at = |c: usize, row: usize, col: usize| chip[c * plane + row * ARCFACE_SIDE_PX + col];
        assert!((at(0, 5, 7) - (24.0 - 127.5) / 127.5).abs() < 1e-4, "{}", at(0, 5, 7));
        assert!((at(1, 5, 7) - (30.0 - 127.5) / 127.5).abs() < 1e-4);
        assert!((at(2, 50, 50) - (200.0 - 127.5) / 127.5).abs() < 1e-4);
        // Far outside the picture: black, i.e. −1.
        let away = points.map(|[x, y]| [x + 1000.0, y]);
        arcface_chip(&img, &away, &mut chip).unwrap();
        assert!(chip.iter().all(|v| (*v + 1.0).abs() < 1e-6));
    }

    #[test]
    fn points_come_from_the_irises_when_the_mesh_is_refined() {
        let mut mesh = vec![[0.0f32; 3]; 478];
        mesh[468] = [10.0, 20.0, 0.0];
        mesh[473] = [30.0, 20.0, 0.0];
        mesh[33] = [8.0, 22.0, 0.0];
        mesh[133] = [14.0, 22.0, 0.0];
        assert_eq!(arcface5_points(&mesh).unwrap()[0], [10.0, 20.0]);
        assert_eq!(arcface5_points(&mesh[..468]).unwrap()[0], [11.0, 22.0]);
        assert!(arcface5_points(&mesh[..100]).is_none());
    }
}
