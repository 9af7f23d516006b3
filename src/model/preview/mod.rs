//! The preview engine: drives a portrait with zero learned weights by warping its triangulated landmark mesh.
//!
//! Owns the portrait pixels, its landmark mesh (Delaunay over the landmarks plus fixed frame anchors, computed once
//! per portrait) and the per-frame target vertices. Receives driving landmarks already mapped into the portrait's
//! frame (motion transfer happens upstream); emits the warped portrait into a caller-owned image, allocation-free.
//! Each output pixel inside a target triangle samples the portrait at the same barycentric position of the source
//! triangle (bilinear); anchors on the frame border keep the background still and the whole frame covered. This is
//! the CPU path; `gpu::GpuMeshWarp` draws the same mesh as textured triangles with wgpu.

pub mod delaunay;
pub mod gpu;

use image::RgbImage;

use delaunay::{Triangle, triangulate};

/// Anchors per image side (corners included once), pinning the background.
const ANCHORS_PER_SIDE: usize = 4;
/// Tolerance of the inside test, in barycentric units, so pixels on shared edges are not missed.
const EDGE_EPS: f32 = 1e-4;

/// Why a portrait cannot be meshed or a frame cannot be warped.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    /// Fewer than 3 of the portrait's landmarks are finite, so there is no face to mesh; the value is how many are.
    #[error("the portrait has {0} usable landmarks; at least 3 are needed to build a mesh")]
    TooFewLandmarks(usize),
    /// The driving frame has another number of landmarks than the portrait the mesh was built from.
    #[error("driving landmarks: {actual} points for a portrait mesh of {expected}")]
    LandmarkCount {
        /// The portrait's landmark count.
        expected: usize,
        /// Landmarks in the driving frame.
        actual: usize,
    },
    /// The caller's output image is not the portrait's size.
    #[error("output image is {actual_w}×{actual_h}, the portrait is {expected_w}×{expected_h}")]
    OutputSize {
        /// The portrait's width, px.
        expected_w: u32,
        /// The portrait's height, px.
        expected_h: u32,
        /// The output image's width, px.
        actual_w: u32,
        /// The output image's height, px.
        actual_h: u32,
    },
}

/// A portrait prepared for mesh-warp driving.
pub struct MeshWarp {
    portrait: RgbImage,
    landmark_count: usize,
    /// Landmarks then anchors, portrait pixels (pixel centres at `i + 0.5`).
    source: Vec<[f32; 2]>,
    triangles: Vec<Triangle>,
    /// Per-frame vertex targets (reused).
    target: Vec<[f32; 2]>,
}

/// Fixed points along the frame border (pixel-edge coordinates), so every pixel is inside the mesh.
fn border_anchors(width: u32, height: u32) -> Vec<[f32; 2]> {
    let (w, h) = (width as f32, height as f32);
    let mut out = Vec::with_capacity(4 * ANCHORS_PER_SIDE);
    for k in 0..ANCHORS_PER_SIDE {
        let t = k as f32 / ANCHORS_PER_SIDE as f32;
        out.extend([[t * w, 0.0], [w, t * h], [w - t * w, h], [0.0, h - t * h]]);
    }
    out
}

impl MeshWarp {
    /// `landmarks` are the portrait's own landmarks in its pixel coordinates.
    pub fn new(portrait: RgbImage, landmarks: &[[f32; 2]]) -> Result<Self, PreviewError> {
        let usable = landmarks.iter().filter(|p| p.iter().all(|v| v.is_finite())).count();
        if usable < 3 {
            return Err(PreviewError::TooFewLandmarks(usable));
        }
        let mut source = landmarks.to_vec();
        source.extend(border_anchors(portrait.width(), portrait.height()));
        let triangles = triangulate(&source);
        let target = source.clone();
        Ok(Self { portrait, landmark_count: landmarks.len(), source, triangles, target })
    }

    /// The portrait the mesh samples from.
    pub fn portrait(&self) -> &RgbImage {
        &self.portrait
    }

    /// The mesh's triangles, as indices into `source` (and into the per-frame targets).
    pub fn triangles(&self) -> &[Triangle] {
        &self.triangles
    }

    /// Mesh vertices in the portrait: the landmarks, then the border anchors (pixel coordinates).
    pub fn source(&self) -> &[[f32; 2]] {
        &self.source
    }

    /// Mesh vertices of the last `set_targets` (initially the source).
    pub fn targets(&self) -> &[[f32; 2]] {
        &self.target
    }

    /// Moves the landmark vertices to `driving` (same count and order as the portrait's landmarks); a non-finite
    /// point keeps the portrait's position rather than tearing the mesh. Anchors never move.
    pub fn set_targets(&mut self, driving: &[[f32; 2]]) -> Result<(), PreviewError> {
        if driving.len() != self.landmark_count {
            return Err(PreviewError::LandmarkCount { expected: self.landmark_count, actual: driving.len() });
        }
        for (t, (d, s)) in self.target.iter_mut().zip(driving.iter().zip(&self.source)) {
            *t = if d.iter().all(|v| v.is_finite()) { *d } else { *s };
        }
        Ok(())
    }

    /// Renders the portrait with its landmarks moved to `driving` (same count and order as the portrait's).
    pub fn render(&mut self, driving: &[[f32; 2]], out: &mut RgbImage) -> Result<(), PreviewError> {
        let (w, h) = self.portrait.dimensions();
        if out.dimensions() != (w, h) {
            return Err(PreviewError::OutputSize {
                expected_w: w,
                expected_h: h,
                actual_w: out.width(),
                actual_h: out.height(),
            });
        }
        self.set_targets(driving)?;
        out.copy_from_slice(&self.portrait);
        for tri in &self.triangles {
            self.fill_triangle(*tri, out);
        }
        Ok(())
    }

    fn fill_triangle(&self, Triangle([a, b, c]): Triangle, out: &mut RgbImage) {
        let (ta, tb, tc) = (self.target[a], self.target[b], self.target[c]);
        let area = delaunay::orient(ta, tb, tc);
        if area.abs() < 1e-6 {
            return;
        }
        let (w, h) = out.dimensions();
        let min_x = ta[0].min(tb[0]).min(tc[0]).floor().max(0.0) as u32;
        let min_y = ta[1].min(tb[1]).min(tc[1]).floor().max(0.0) as u32;
        let max_x = (ta[0].max(tb[0]).max(tc[0]).ceil().max(0.0) as u32).min(w);
        let max_y = (ta[1].max(tb[1]).max(tc[1]).ceil().max(0.0) as u32).min(h);
        let (sa, sb, sc) = (self.source[a], self.source[b], self.source[c]);
        let inv = 1.0 / area;
        for y in min_y..max_y {
            let py = y as f32 + 0.5;
            for x in min_x..max_x {
                let p = [x as f32 + 0.5, py];
                let wa = delaunay::orient(tb, tc, p) * inv;
                let wb = delaunay::orient(tc, ta, p) * inv;
                let wc = 1.0 - wa - wb;
                if wa < -EDGE_EPS || wb < -EDGE_EPS || wc < -EDGE_EPS {
                    continue;
                }
                let sx = wa * sa[0] + wb * sb[0] + wc * sc[0];
                let sy = wa * sa[1] + wb * sb[1] + wc * sc[1];
                out.put_pixel(x, y, image::Rgb(sample_bilinear(&self.portrait, sx - 0.5, sy - 0.5)));
            }
        }
    }
}

/// Bilinear sample at continuous pixel-index coordinates (pixel `i` at `i`), clamped at the border.
fn sample_bilinear(img: &RgbImage, x: f32, y: f32) -> [u8; 3] {
    let (w, h) = img.dimensions();
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (p00, p10, p01, p11) =
        (img.get_pixel(x0, y0), img.get_pixel(x1, y0), img.get_pixel(x0, y1), img.get_pixel(x1, y1));
    let mut out = [0u8; 3];
    for (k, v) in out.iter_mut().enumerate() {
        let top = p00[k] as f32 * (1.0 - fx) + p10[k] as f32 * fx;
        let bottom = p01[k] as f32 * (1.0 - fx) + p11[k] as f32 * fx;
        *v = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured test portrait and a ring of "landmarks" around its centre.
    fn portrait() -> (RgbImage, Vec<[f32; 2]>) {
        let img = RgbImage::from_fn(96, 80, |x, y| {
            image::Rgb([(x * 5 % 256) as u8, (y * 7 % 256) as u8, ((x * y) % 251) as u8])
        });
        let mut pts = Vec::new();
        for ring in 1..=3 {
            for k in 0..16 {
                let a = k as f32 / 16.0 * std::f32::consts::TAU;
                let r = 8.0 * ring as f32;
                pts.push([48.0 + r * a.cos(), 40.0 + r * a.sin()]);
            }
        }
        pts.push([48.0, 40.0]);
        (img, pts)
    }

    #[test]
    fn identity_driving_reproduces_the_portrait_exactly() {
        let (img, pts) = portrait();
        let mut warp = MeshWarp::new(img.clone(), &pts).unwrap();
        let mut out = RgbImage::new(96, 80);
        warp.render(&pts, &mut out).unwrap();
        assert_eq!(out, img);
    }

    #[test]
    fn a_translated_face_moves_its_pixels_and_keeps_the_background() {
        let (img, pts) = portrait();
        let mut warp = MeshWarp::new(img.clone(), &pts).unwrap();
        let moved: Vec<[f32; 2]> = pts.iter().map(|p| [p[0] + 3.0, p[1] - 2.0]).collect();
        let mut out = RgbImage::new(96, 80);
        warp.render(&moved, &mut out).unwrap();
        // Inside the inner ring everything shifted by (3, −2) exactly.
        for y in 34..44 {
            for x in 42..54 {
                assert_eq!(out.get_pixel(x + 3, y - 2), img.get_pixel(x, y), "({x}, {y})");
            }
        }
        // The frame corners are anchored.
        assert_eq!(out.get_pixel(0, 0), img.get_pixel(0, 0));
        assert_eq!(out.get_pixel(95, 79), img.get_pixel(95, 79));
        assert_ne!(out, img);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (img, pts) = portrait();
        assert!(matches!(MeshWarp::new(img.clone(), &pts[..2]), Err(PreviewError::TooFewLandmarks(2))));
        let mut warp = MeshWarp::new(img, &pts).unwrap();
        let mut out = RgbImage::new(96, 80);
        assert!(matches!(warp.render(&pts[1..], &mut out), Err(PreviewError::LandmarkCount { .. })));
        let mut small = RgbImage::new(10, 10);
        assert!(matches!(warp.render(&pts, &mut small), Err(PreviewError::OutputSize { .. })));
        // A NaN landmark stays put instead of tearing the mesh.
        let mut lost = pts.clone();
        lost[0] = [f32::NAN, f32::NAN];
        warp.render(&lost, &mut out).unwrap();
        assert_eq!(&out, warp.portrait());
    }
}
