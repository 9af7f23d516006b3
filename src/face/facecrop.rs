//! The face crop the generator works in, made the way the official data was (`frame_cropping` in the reference's
//! `train_utils.py`), and its inverse for pasting a generated face back into the frame.
//!
//! Owns `CropBox` (a square in frame pixels) and the resampling into a caller-owned 256² image. Receives a frame and
//! the face's bounding box (from its landmarks); emits the crop, point mappings frame ↔ crop, and frames with a
//! generated crop blended back in. The official policy: side = `int(max(w, h) · expand)` capped at the frame's shorter
//! side, centre = box centre moved up by `offset_y · h`, then shifted so the square stays inside the frame (no
//! padding); it is fixed from the first frame of a clip. Resizing is bilinear with pixel centres at `i + 0.5`
//! (OpenCV's `INTER_LINEAR`).

use image::RgbImage;

/// Crop parameters of the official configs (`crop_expand`, `crop_offset_y`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropPolicy {
    /// Crop side as a multiple of the face box's longer side (`crop_expand`).
    pub expand: f32,
    /// Upward shift of the crop centre as a fraction of the face box height (`crop_offset_y`).
    pub offset_y: f32,
    /// Side of the resampled crop in pixels.
    pub out_size: u32,
}

impl CropPolicy {
    /// The official configs' policy: expand 1.3, offset 0.2, 256² output.
    pub const fn official() -> Self {
        Self { expand: 1.3, offset_y: 0.2, out_size: 256 }
    }
}

/// A square region of a frame, in integer pixels (always inside the frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    /// Left edge in frame pixels.
    pub x: u32,
    /// Top edge in frame pixels.
    pub y: u32,
    /// Width and height in frame pixels.
    pub side: u32,
}

/// A face box in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaceBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub w: f32,
    /// Height.
    pub h: f32,
}

impl FaceBox {
    /// The bounding box of landmarks (pixels); `None` if there are none or they are not finite.
    pub fn of_points(points: &[[f32; 2]]) -> Option<Self> {
        Self::bounding(points.iter().map(|p| [p[0], p[1]]))
    }

    /// `of_points` of landmarks with a z coordinate (ignored), without copying them.
    pub fn of_landmarks(points: &[[f32; 3]]) -> Option<Self> {
        Self::bounding(points.iter().map(|p| [p[0], p[1]]))
    }

    fn bounding(points: impl Iterator<Item = [f32; 2]>) -> Option<Self> {
        let mut lo = [f32::INFINITY; 2];
        let mut hi = [f32::NEG_INFINITY; 2];
        for p in points {
            if !(p[0].is_finite() && p[1].is_finite()) {
                return None;
            }
            for k in 0..2 {
                lo[k] = lo[k].min(p[k]);
                hi[k] = hi[k].max(p[k]);
            }
        }
        (lo[0] <= hi[0]).then(|| Self { x: lo[0], y: lo[1], w: hi[0] - lo[0], h: hi[1] - lo[1] })
    }
}

impl CropBox {
    /// The official crop of a frame `width × height` around `face`.
    pub fn official(face: FaceBox, width: u32, height: u32, policy: &CropPolicy) -> Self {
        let min_side = width.min(height) as i64;
        let box_side = face.w.max(face.h);
        let side = ((box_side * policy.expand) as i64).clamp(1, min_side.max(1));
        let half = side / 2;
        let cx = (face.x + face.w * 0.5) as i64;
        let cy = (face.y + face.h * 0.5 - face.h * policy.offset_y) as i64;
        // The reference clamps the centre so the square lies inside the frame.
        let cx = cx.min(width as i64 - half).max(half);
        let cy = cy.min(height as i64 - half).max(half);
        let side = (2 * half).max(1);
        Self { x: (cx - half).max(0) as u32, y: (cy - half).max(0) as u32, side: side as u32 }
    }

    /// Frame pixel → crop pixel (crop of side `out`).
    pub fn to_crop(&self, p: [f32; 2], out: u32) -> [f32; 2] {
        let s = out as f32 / self.side as f32;
        [(p[0] - self.x as f32) * s, (p[1] - self.y as f32) * s]
    }

    /// Landmarks in frame pixels (z scaled like x) mapped into the crop of side `out`, written into `dst` (cleared
    /// first; its capacity is reused).
    pub fn landmarks_into_crop(&self, points: &[[f32; 3]], out: u32, dst: &mut Vec<[f32; 3]>) {
        let z_scale = out as f32 / self.side as f32;
        dst.clear();
        dst.extend(points.iter().map(|p| {
            let q = self.to_crop([p[0], p[1]], out);
            [q[0], q[1], p[2] * z_scale]
        }));
    }

    /// `landmarks_into_crop` into a new vector.
    pub fn landmarks_to_crop(&self, points: &[[f32; 3]], out: u32) -> Vec<[f32; 3]> {
        let mut dst = Vec::with_capacity(points.len());
        self.landmarks_into_crop(points, out, &mut dst);
        dst
    }

    /// Crop pixel → frame pixel.
    pub fn to_frame(&self, p: [f32; 2], out: u32) -> [f32; 2] {
        let s = self.side as f32 / out as f32;
        [p[0] * s + self.x as f32, p[1] * s + self.y as f32]
    }

    /// Resamples the box into `out` (square), bilinear with pixel centres at `i + 0.5`.
    pub fn crop_into(&self, frame: &RgbImage, out: &mut RgbImage) {
        let n = out.width();
        let scale = self.side as f32 / n as f32;
        for v in 0..out.height() {
            let sy = self.y as f32 + (v as f32 + 0.5) * scale - 0.5;
            for u in 0..n {
                let sx = self.x as f32 + (u as f32 + 0.5) * scale - 0.5;
                out.put_pixel(u, v, image::Rgb(bilinear(frame, sx, sy)));
            }
        }
    }

    /// Blends a generated crop back into `frame` over this box, with a feathered border (`feather_px` in frame
    /// pixels) so the seam does not show.
    pub fn paste_into(&self, crop: &RgbImage, frame: &mut RgbImage, feather_px: f32) {
        let n = crop.width() as f32;
        let scale = n / self.side as f32;
        let (w, h) = frame.dimensions();
        for y in self.y..(self.y + self.side).min(h) {
            for x in self.x..(self.x + self.side).min(w) {
                let (lx, ly) = ((x - self.x) as f32 + 0.5, (y - self.y) as f32 + 0.5);
                let edge = lx.min(ly).min(self.side as f32 - lx).min(self.side as f32 - ly);
                let alpha = if feather_px > 0.0 { (edge / feather_px).clamp(0.0, 1.0) } else { 1.0 };
                let src = bilinear(crop, lx * scale - 0.5, ly * scale - 0.5);
                let dst = frame.get_pixel_mut(x, y);
                for k in 0..3 {
                    dst[k] = (dst[k] as f32 + (src[k] as f32 - dst[k] as f32) * alpha).round() as u8;
                }
            }
        }
    }
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> [u8; 3] {
    let (w, h) = img.dimensions();
    let x = x.clamp(0.0, (w.max(1) - 1) as f32);
    let y = y.clamp(0.0, (h.max(1) - 1) as f32);
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let (a, b, c, d) = (img.get_pixel(x0, y0), img.get_pixel(x1, y0), img.get_pixel(x0, y1), img.get_pixel(x1, y1));
    let mut out = [0u8; 3];
    for k in 0..3 {
        let top = a[k] as f32 * (1.0 - fx) + b[k] as f32 * fx;
        let bottom = c[k] as f32 * (1.0 - fx) + d[k] as f32 * fx;
        out[k] = (top * (1.0 - fy) + bottom * fy).round() as u8;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_official_policy_on_hand_computed_boxes() {
        let p = CropPolicy::official();
        // Box 100×120 at (200, 150) in 640×480: side int(120·1.3) = 156, centre (250, int(210 − 24)) = (250, 186).
        let b = CropBox::official(FaceBox { x: 200.0, y: 150.0, w: 100.0, h: 120.0 }, 640, 480, &p);
        assert_eq!(b, CropBox { x: 172, y: 108, side: 156 });
        // Near the top-left corner the square is pushed inside the frame.
        let b = CropBox::official(FaceBox { x: 0.0, y: 0.0, w: 50.0, h: 50.0 }, 640, 480, &p);
        assert_eq!((b.x, b.y, b.side), (0, 0, 64));
        // A face larger than the frame: capped at the shorter side.
        let b = CropBox::official(FaceBox { x: 0.0, y: 0.0, w: 600.0, h: 600.0 }, 640, 480, &p);
        assert_eq!(b.side, 480);
    }

    #[test]
    fn landmarks_map_into_the_crop_with_z_scaled_like_x() {
        let b = CropBox { x: 100, y: 50, side: 128 };
        let mapped = b.landmarks_to_crop(&[[100.0, 50.0, 4.0], [164.0, 114.0, -2.0]], 256);
        assert_eq!(mapped, vec![[0.0, 0.0, 8.0], [128.0, 128.0, -4.0]]);
        let mut reused = Vec::with_capacity(8);
        b.landmarks_into_crop(&[[228.0, 178.0, 1.0]], 256, &mut reused);
        assert_eq!(reused, vec![[256.0, 256.0, 2.0]]);
    }

    #[test]
    fn mappings_round_trip_and_paste_back_restores_the_frame() {
        // A smooth frame: resampling down and up again must give it back.
        let frame = RgbImage::from_fn(320, 240, |x, y| {
            image::Rgb([(x as f32 * 0.7) as u8, y as u8, ((x + y) as f32 * 0.4 + 20.0 * (x as f32 * 0.05).sin()) as u8])
        });
        let b = CropBox { x: 60, y: 40, side: 128 };
        for p in [[60.0, 40.0], [100.5, 77.25], [187.9, 167.9]] {
            let q = b.to_frame(b.to_crop(p, 256), 256);
            assert!((q[0] - p[0]).abs() < 1e-3 && (q[1] - p[1]).abs() < 1e-3);
        }
        let mut crop = RgbImage::new(256, 256);
        b.crop_into(&frame, &mut crop);
        let mut pasted = frame.clone();
        b.paste_into(&crop, &mut pasted, 0.0);
        let mut worst = 0i32;
        for y in 45..163 {
            for x in 65..183 {
                for k in 0..3 {
                    worst = worst.max((pasted.get_pixel(x, y)[k] as i32 - frame.get_pixel(x, y)[k] as i32).abs());
                }
            }
        }
        assert!(worst <= 2, "paste-back of an unmodified crop differs by {worst}");
        // Feathering keeps the border of the box equal to the frame.
        let black = RgbImage::new(256, 256);
        let mut f2 = frame.clone();
        b.paste_into(&black, &mut f2, 8.0);
        assert!((f2.get_pixel(60, 100)[0] as i32 - frame.get_pixel(60, 100)[0] as i32).abs() <= 10);
        assert_eq!(f2.get_pixel(124, 104), &image::Rgb([0, 0, 0]));
        assert_eq!(f2.get_pixel(10, 10), frame.get_pixel(10, 10));
    }

    #[test]
    fn face_box_of_points() {
        assert_eq!(FaceBox::of_points(&[[1.0, 2.0], [3.0, 7.0]]), Some(FaceBox { x: 1.0, y: 2.0, w: 2.0, h: 5.0 }));
        assert_eq!(FaceBox::of_points(&[]), None);
        assert_eq!(FaceBox::of_points(&[[f32::NAN, 0.0]]), None);
    }
}
