//! Face alignment primitives shared by the embedders' chips: the least-squares 2-D similarity between point sets
//! and bilinear sampling with black outside the picture.
//!
//! Owns `Similarity2` and `sample_black_border`. Receives point sets and pictures; emits transforms and samples.
//! `face::embed` (dlib's 150² chip) and `face::arcface` (the 112² ArcFace chip) build on them.

use image::RgbImage;

/// A 2-D similarity `p ↦ [a −b; b a]·p + t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity2 {
    /// Scale times the cosine of the rotation.
    pub a: f64,
    /// Scale times the sine of the rotation.
    pub b: f64,
    /// Translation.
    pub t: [f64; 2],
}

impl Similarity2 {
    /// The least-squares similarity taking `src` onto `dst` (Umeyama's without reflection; in 2-D the complex
    /// least-squares solution `c = Σ conj(s)·d / Σ|s|²` on centred points).
    pub fn fit(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Self> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let mean = |p: &[[f64; 2]]| {
            let s = p[..n].iter().fold([0.0, 0.0], |acc, q| [acc[0] + q[0], acc[1] + q[1]]);
            [s[0] / n as f64, s[1] / n as f64]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut re, mut im, mut var) = (0.0, 0.0, 0.0);
        for (s, d) in src[..n].iter().zip(&dst[..n]) {
            let (sx, sy, dx, dy) = (s[0] - ms[0], s[1] - ms[1], d[0] - md[0], d[1] - md[1]);
            re += sx * dx + sy * dy;
            im += sx * dy - sy * dx;
            var += sx * sx + sy * sy;
        }
        if var.is_nan() || var <= 0.0 {
            return None;
        }
        let (a, b) = (re / var, im / var);
        let t = [md[0] - (a * ms[0] - b * ms[1]), md[1] - (b * ms[0] + a * ms[1])];
        Some(Self { a, b, t })
    }

    /// The image of `p`.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.a * p[0] - self.b * p[1] + self.t[0], self.b * p[0] + self.a * p[1] + self.t[1]]
    }

    /// Image pixels per chip pixel.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }
}

/// Bilinear sample with black outside the image (dlib's border), pixel centres at integers.
pub fn sample_black_border(img: &RgbImage, x: f64, y: f64) -> [f64; 3] {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let mut out = [0.0; 3];
    for (dy, wy) in [(0, 1.0 - fy), (1, fy)] {
        for (dx, wx) in [(0, 1.0 - fx), (1, fx)] {
            let (xi, yi) = (x0 + dx, y0 + dy);
            if xi < 0 || yi < 0 || xi >= w || yi >= h {
                continue;
            }
            let p = img.get_pixel(xi as u32, yi as u32);
            for c in 0..3 {
                out[c] += f64::from(p[c]) * wx * wy;
            }
        }
    }
    out
}
