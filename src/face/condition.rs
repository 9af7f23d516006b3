//! The generator's conditioning from landmarks: the coloured landmark-line image, the 58 role keypoints, and the
//! eye and mouth box masks — as the official data loader builds them.
//!
//! Owns a reusable canvas per size. Receives landmarks normalised to the face crop ([0, 1], x then y) and a
//! `Topology`; emits the line image (`[1, 3, S, S]` in [0, 1]), keypoints in [−1, 1] (`2p − 1`), and masks
//! `[1, 1, S, S]`: each eye box (role keypoints 1–4 and 5–8) or the mouth box (14, 15, 56, 57) padded by 3 px (eyes) or 5 px (mouth),
//! corners at `int((v + 1)·S/2)`. The mouth line is the driving line times the mouth mask.

use super::raster::{PixelPoint, RasterError, Rgb, RgbCanvas};
use super::topology::{
    Edge, LEFT_EYE_BOX, MOUTH_BOTTOM, MOUTH_LEFT, MOUTH_RIGHT, MOUTH_TOP, NUM_KEYPOINTS, RIGHT_EYE_BOX, Topology,
};
use crate::tensor::HostTensor;

/// Side of the generator's conditioning images.
pub const CONDITION_SIZE: usize = 256;
/// Padding of the official boxes, in pixels (`get_focal_mask`: 3, `get_mouth_area`: 5).
const EYE_PAD_PX: i64 = 3;
const MOUTH_PAD_PX: i64 = 5;

/// Why a conditioning image could not be drawn.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConditionError {
    /// Fewer landmarks were given than the topology needs.
    #[error("{actual} landmarks for the `{topology}` topology, which needs {expected}")]
    LandmarkCount {
        /// Name of the topology in use.
        topology: &'static str,
        /// Landmarks the topology needs (at least).
        expected: usize,
        /// Landmarks given.
        actual: usize,
    },
    /// The canvas size is invalid or an output buffer has the wrong length.
    #[error(transparent)]
    Raster(#[from] RasterError),
}

/// Role keypoints in [−1, 1].
pub type Keypoints58 = [[f32; 2]; NUM_KEYPOINTS];

/// Draws line images for one topology, reusing its canvas.
pub struct Conditioner {
    topology: Topology,
    canvas: RgbCanvas,
}

impl Conditioner {
    /// A conditioner drawing `size`² line images for `topology`; fails for a size the rasteriser refuses.
    pub fn new(topology: Topology, size: usize) -> Result<Self, ConditionError> {
        Ok(Self { topology, canvas: RgbCanvas::new(size, size)? })
    }

    /// The landmark topology this conditioner draws.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    fn check(&self, landmarks01: &[[f32; 2]]) -> Result<(), ConditionError> {
        if landmarks01.len() < self.topology.num_points {
            return Err(ConditionError::LandmarkCount {
                topology: self.topology.name,
                expected: self.topology.num_points,
                actual: landmarks01.len(),
            });
        }
        Ok(())
    }

    /// The line image of `landmarks01`: edge i in colour i, endpoints at `int(v · S)` as the reference draws them.
    pub fn draw(&mut self, landmarks01: &[[f32; 2]]) -> Result<&RgbCanvas, ConditionError> {
        self.check(landmarks01)?;
        let size = self.canvas.width() as f32;
        // int(v · size): truncation toward zero; `as` saturates far-off points instead of wrapping.
        let px = |p: [f32; 2]| PixelPoint::new((p[0] * size) as i32, (p[1] * size) as i32);
        self.canvas.clear();
        for (Edge(from, to), colour) in self.topology.edges.iter().zip(&self.topology.palette) {
            let [r, g, b] = colour.0;
            self.canvas.draw_line_aa(px(landmarks01[*from]), px(landmarks01[*to]), Rgb::new(r, g, b));
        }
        Ok(&self.canvas)
    }

    /// The 58 role keypoints in [−1, 1].
    pub fn keypoints(&self, landmarks01: &[[f32; 2]]) -> Result<Keypoints58, ConditionError> {
        self.check(landmarks01)?;
        self.topology.keypoints58(landmarks01).ok_or(ConditionError::LandmarkCount {
            topology: self.topology.name,
            expected: self.topology.num_points,
            actual: landmarks01.len(),
        })
    }
}

/// A canvas as `[1, 3, S, S]` in [0, 1] (`/255`), written into `out` (reshaped when its size differs).
pub fn canvas_to_tensor(canvas: &RgbCanvas, out: &mut HostTensor) -> Result<(), ConditionError> {
    let (w, h) = (canvas.width(), canvas.height());
    if out.shape() != [1, 3, h, w] {
        *out = HostTensor::zeros(&[1, 3, h, w]);
    }
    canvas.write_planar_unit(out.data_mut())?;
    Ok(())
}

/// Pixel rows `y0..y1` and columns `x0..x1` of one box (keypoint indices left, right, top, bottom) in an `S × S` map.
fn box_rect(keypoints: &Keypoints58, size: usize, [l, r, t, b]: [usize; 4], pad: i64) -> [usize; 4] {
    let s = size as i64;
    // int((v + 1)·S/2): truncation toward zero, as Python's int().
    let px = |v: f32| ((v as f64 + 1.0) * size as f64 / 2.0) as i64;
    let (x0, x1) = ((px(keypoints[l][0]) - pad).max(0), (px(keypoints[r][0]) + pad + 1).min(s));
    let (y0, y1) = ((px(keypoints[t][1]) - pad).max(0), (px(keypoints[b][1]) + pad + 1).min(s));
    [y0, y1.max(y0), x0, x1.max(x0)].map(|v| v as usize)
}

fn box_mask(keypoints: &Keypoints58, size: usize, boxes: &[[usize; 4]], pad: i64) -> HostTensor {
    let mut mask = HostTensor::zeros(&[1, 1, size, size]);
    let data = mask.data_mut();
    for &corners in boxes {
        let [y0, y1, x0, x1] = box_rect(keypoints, size, corners, pad);
        for y in y0..y1 {
            data[y * size + x0..y * size + x1].fill(1.0);
        }
    }
    mask
}

/// Both eye boxes (`get_focal_mask` with `eye_enhance`).
pub fn eye_mask(keypoints: &Keypoints58, size: usize) -> HostTensor {
    box_mask(keypoints, size, &[LEFT_EYE_BOX, RIGHT_EYE_BOX], EYE_PAD_PX)
}

/// The mouth box (`get_mouth_area`).
pub fn mouth_mask(keypoints: &Keypoints58, size: usize) -> HostTensor {
    box_mask(keypoints, size, &[[MOUTH_LEFT, MOUTH_RIGHT, MOUTH_TOP, MOUTH_BOTTOM]], MOUTH_PAD_PX)
}

/// `mouth_line(line, mouth_mask(keypoints, S))` written into `out` (`[1, 3, S, S]`, like `line`) without building
/// the mask: the line inside the mouth box, zero elsewhere.
pub fn mouth_line_into(line: &HostTensor, keypoints: &Keypoints58, out: &mut HostTensor) {
    let size = line.shape().last().copied().unwrap_or(0);
    let plane = size * size;
    let [y0, y1, x0, x1] = box_rect(keypoints, size, [MOUTH_LEFT, MOUTH_RIGHT, MOUTH_TOP, MOUTH_BOTTOM], MOUTH_PAD_PX);
    out.data_mut().fill(0.0);
    for c in 0..line.len() / plane.max(1) {
        for y in y0..y1 {
            let row = c * plane + y * size;
            out.data_mut()[row + x0..row + x1].copy_from_slice(&line.data()[row + x0..row + x1]);
        }
    }
}

/// `driving_line × mouth_mask`, broadcast over the colour channels.
pub fn mouth_line(line: &HostTensor, mouth_mask: &HostTensor) -> HostTensor {
    let mut out = line.clone();
    let plane = mouth_mask.len();
    for (i, v) in out.data_mut().iter_mut().enumerate() {
        *v *= mouth_mask.data()[i % plane.max(1)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::topology::MEDIAPIPE_POINTS;

    #[test]
    fn masks_follow_the_official_boxes() {
        let mut kp = [[0.0f32; 2]; NUM_KEYPOINTS];
        kp[1] = [-0.5, 0.0];
        kp[2] = [-0.25, 0.0];
        kp[3] = [0.0, -0.5];
        kp[4] = [0.0, -0.25];
        kp[5] = [0.25, 0.0];
        kp[6] = [0.5, 0.0];
        kp[7] = [0.0, -0.5];
        kp[8] = [0.0, -0.25];
        let m = eye_mask(&kp, 64);
        let at = |x: usize, y: usize| m.data()[y * 64 + x];
        // Left box: x, y in [16 − 3, 24 + 3].
        assert_eq!((at(13, 13), at(27, 27), at(12, 13), at(28, 20)), (1.0, 1.0, 0.0, 0.0));
        assert_eq!(m.data().iter().sum::<f32>(), 2.0 * 15.0 * 15.0);
        // Boxes at the border are clipped.
        kp[MOUTH_LEFT] = [-1.0, 0.0];
        kp[MOUTH_RIGHT] = [-0.9, 0.0];
        kp[MOUTH_TOP] = [0.0, 0.9];
        kp[MOUTH_BOTTOM] = [0.0, 1.0];
        // x: [0, 3 + 5 + 1), y: [60 − 5, 64), the mouth pad being 5.
        let mouth = mouth_mask(&kp, 64);
        assert_eq!(mouth.data().iter().sum::<f32>(), 9.0 * 9.0);
        let line = HostTensor::filled(&[1, 3, 64, 64], 0.5);
        let ml = mouth_line(&line, &mouth);
        assert_eq!(ml.data().iter().sum::<f32>(), 3.0 * 0.5 * 81.0);
    }

    #[test]
    fn draws_every_edge_in_its_colour_and_refuses_short_landmark_sets() {
        let mut c = Conditioner::new(Topology::mediapipe(), CONDITION_SIZE).unwrap();
        // A ring of points: every edge gets drawn somewhere on the canvas.
        let pts: Vec<[f32; 2]> = (0..MEDIAPIPE_POINTS)
            .map(|i| {
                let a = i as f32 * 0.7;
                [0.5 + 0.3 * a.cos(), 0.5 + 0.3 * a.sin()]
            })
            .collect();
        let canvas = c.draw(&pts).unwrap();
        let lit = canvas.as_bytes().chunks_exact(3).filter(|p| p.iter().any(|v| *v > 0)).count();
        assert!(lit > 1000, "{lit} pixels drawn");
        let mut t = HostTensor::zeros(&[1]);
        canvas_to_tensor(canvas, &mut t).unwrap();
        assert_eq!(t.shape(), &[1, 3, 256, 256]);
        assert!(t.data().iter().all(|v| (0.0..=1.0).contains(v)));
        let kp = c.keypoints(&pts).unwrap();
        assert!(kp.iter().all(|p| p.iter().all(|v| (-1.0..=1.0).contains(v))));
        assert!(matches!(c.draw(&pts[..468]), Err(ConditionError::LandmarkCount { expected: 478, .. })));
    }
}
