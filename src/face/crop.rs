//! Resampling a rotated ROI of an RGB frame into a square model input.
//!
//! Owns the one sampler every model input goes through, reproducing what MediaPipe's CPU `ImageToTensorCalculator`
//! does with OpenCV: the ROI's edges map to the tensor's edges (`boxPoints` → `warpPerspective`), so output pixel
//! (u, v) reads the image at c + R·(u·side/n − side/2, v·side/n − side/2); the position is quantised to 1/32 pixel
//! and blended with 15-bit fixed-point bilinear weights into `u8` (OpenCV's `INTER_LINEAR` for 8-bit images), then
//! scaled to floats. Borders are zeros (detector letterbox) or the replicated edge (landmark crops). Receives an
//! `RgbImage` and a `Roi`; emits `n`×`n` RGB bytes or an NHWC `HostTensor` [1, n, n, 3].

use image::RgbImage;

use super::roi::Roi;
use crate::tensor::HostTensor;

const CHANNELS: usize = 3;
/// OpenCV `INTER_BITS`: sample positions are quantised to 1/2^5 pixel.
const INTER_BITS: u32 = 5;
const INTER_TAB_SIZE: i64 = 1 << INTER_BITS;
/// OpenCV `INTER_REMAP_COEF_BITS`: bilinear weights are 15-bit fixed point.
const COEF_BITS: u32 = 15;
const COEF_ROUND: i64 = 1 << (COEF_BITS - 1);
/// Per-axis weight unit: the product of two axis weights (each in 1/32) times this gives 2^15.
const AXIS_WEIGHT_SCALE: i64 = (1 << COEF_BITS) / (INTER_TAB_SIZE * INTER_TAB_SIZE);

/// What samples outside the image read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Border {
    /// Black (the detector's letterbox).
    Zero,
    /// The nearest edge pixel (landmark and iris crops).
    Replicate,
}

/// Affine map from [0, 255] bytes to model input values: value = byte × scale + offset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValueRange {
    /// Factor applied to the byte value.
    pub scale: f32,
    /// Added after scaling.
    pub offset: f32,
}

/// Bytes to [−1, 1] (the detector): px / 127.5 − 1.
pub const RANGE_SIGNED: ValueRange = ValueRange { scale: 1.0 / 127.5, offset: -1.0 };
/// Bytes to [0, 1] (the landmark models).
pub const RANGE_UNIT: ValueRange = ValueRange { scale: 1.0 / 255.0, offset: 0.0 };

/// Samples the `roi` of `image` into an `out_size`² RGB byte buffer (row-major, interleaved).
pub fn crop_rgb(image: &RgbImage, roi: &Roi, out_size: usize, border: Border) -> Vec<u8> {
    let (width, height) = (i64::from(image.width()), i64::from(image.height()));
    let raw = image.as_raw();
    let mut out = vec![0u8; out_size * out_size * CHANNELS];
    if width == 0 || height == 0 {
        return out;
    }
    let pixel = |x: i64, y: i64| -> Option<usize> {
        let (x, y) = match border {
            Border::Replicate => (x.clamp(0, width - 1), y.clamp(0, height - 1)),
            Border::Zero if x < 0 || y < 0 || x >= width || y >= height => return None,
            Border::Zero => (x, y),
        };
        // In range by construction; the offset fits in usize because the image buffer does.
        Some(((y * width + x) as usize) * CHANNELS)
    };
    let sampler = Sampler::new(roi, out_size);
    for v in 0..out_size {
        for u in 0..out_size {
            let (sx, sy) = sampler.position(u, v);
            let (qx, qy) = (quantise(sx), quantise(sy));
            let (ix, iy) = (qx >> INTER_BITS, qy >> INTER_BITS);
            let (fx, fy) = (qx & (INTER_TAB_SIZE - 1), qy & (INTER_TAB_SIZE - 1));
            let weights = [
                (INTER_TAB_SIZE - fx) * (INTER_TAB_SIZE - fy) * AXIS_WEIGHT_SCALE,
                fx * (INTER_TAB_SIZE - fy) * AXIS_WEIGHT_SCALE,
                (INTER_TAB_SIZE - fx) * fy * AXIS_WEIGHT_SCALE,
                fx * fy * AXIS_WEIGHT_SCALE,
            ];
            let dst = (v * out_size + u) * CHANNELS;
            let inside = ix >= 0 && iy >= 0 && ix + 1 < width && iy + 1 < height;
            if inside {
                // Common case: all four neighbours exist, no border rule needed.
                let at = ((iy * width + ix) as usize) * CHANNELS;
                let below = at + (width as usize) * CHANNELS;
                for c in 0..CHANNELS {
                    let sum = i64::from(raw[at + c]) * weights[0]
                        + i64::from(raw[at + CHANNELS + c]) * weights[1]
                        + i64::from(raw[below + c]) * weights[2]
                        + i64::from(raw[below + CHANNELS + c]) * weights[3];
                    out[dst + c] = fixed_to_byte(sum);
                }
            } else {
                let taps = [pixel(ix, iy), pixel(ix + 1, iy), pixel(ix, iy + 1), pixel(ix + 1, iy + 1)];
                for c in 0..CHANNELS {
                    let sum: i64 =
                        taps.iter().zip(weights).filter_map(|(at, w)| at.map(|i| i64::from(raw[i + c]) * w)).sum();
                    out[dst + c] = fixed_to_byte(sum);
                }
            }
        }
    }
    out
}

/// The edge-convention map from crop pixels to image positions, with the ROI's trigonometry done once.
struct Sampler {
    cos: f64,
    sin: f64,
    /// Image pixels per crop pixel.
    step: f64,
    half: f64,
    cx: f64,
    cy: f64,
}

impl Sampler {
    fn new(roi: &Roi, out_size: usize) -> Self {
        let (sin, cos) = f64::from(roi.rotation).sin_cos();
        let side = f64::from(roi.size);
        Self {
            cos,
            sin,
            step: side / out_size.max(1) as f64,
            half: side / 2.0,
            cx: f64::from(roi.center.x),
            cy: f64::from(roi.center.y),
        }
    }

    /// Same formula as `Roi::sample_position`.
    fn position(&self, u: usize, v: usize) -> (f64, f64) {
        let lx = u as f64 * self.step - self.half;
        let ly = v as f64 * self.step - self.half;
        (self.cx + self.cos * lx - self.sin * ly, self.cy + self.sin * lx + self.cos * ly)
    }
}

/// A 15-bit fixed-point blend rounded to a byte.
fn fixed_to_byte(sum: i64) -> u8 {
    ((sum + COEF_ROUND) >> COEF_BITS).clamp(0, i64::from(u8::MAX)) as u8
}

/// A position in 1/32 pixel, rounded half to even like OpenCV's `saturate_cast<int>(double)`; far-away positions
/// (and NaN) saturate, reading the border either way.
fn quantise(position: f64) -> i64 {
    const LIMIT: f64 = (i32::MAX / 2) as f64;
    // Adding and subtracting 1.5·2^52 rounds half to even in the FPU's default mode for |x| < 2^51, without the
    // library call `round_ties_even` becomes on baseline x86-64.
    const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
    let scaled = (position * INTER_TAB_SIZE as f64).clamp(-LIMIT, LIMIT);
    ((scaled + ROUND_MAGIC) - ROUND_MAGIC) as i64
}

/// Samples the `roi` into an NHWC float tensor [1, `out_size`, `out_size`, 3] with values mapped by `range`.
pub fn crop_tensor(image: &RgbImage, roi: &Roi, out_size: usize, border: Border, range: ValueRange) -> HostTensor {
    let bytes = crop_rgb(image, roi, out_size, border);
    let mut tensor = HostTensor::zeros(&[1, out_size, out_size, CHANNELS]);
    for (dst, &b) in tensor.data_mut().iter_mut().zip(&bytes) {
        *dst = f32::from(b) * range.scale + range.offset;
    }
    tensor
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::geometry::Point2;

    /// R = x, G = y, B = 7.
    fn ramp(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]))
    }

    #[test]
    fn edges_map_to_edges() {
        // A 128-px ROI centred at (128, 128) into 64 px: integer u reads x = 64 + 2u exactly. A half-pixel-centre
        // convention would read 64.5 + 2u instead.
        let image = ramp(256, 256);
        let roi = Roi { center: Point2::new(128.0, 128.0), size: 128.0, rotation: 0.0 };
        let out = crop_rgb(&image, &roi, 64, Border::Replicate);
        for (u, v) in [(0usize, 0usize), (10, 3), (63, 63)] {
            let px = &out[(v * 64 + u) * 3..][..3];
            assert_eq!(px, &[(64 + 2 * u) as u8, (64 + 2 * v) as u8, 7], "at ({u}, {v})");
        }
    }

    #[test]
    fn half_pixel_positions_blend() {
        let image = ramp(64, 64);
        // Scale 1, centre shifted by half a pixel: every sample sits halfway between two columns.
        let roi = Roi { center: Point2::new(32.5, 32.0), size: 32.0, rotation: 0.0 };
        let out = crop_rgb(&image, &roi, 32, Border::Replicate);
        // u = 0 reads x = 16.5 → (16 + 17) / 2 = 16.5 → rounds to 17 (ties go up in the fixed-point sum).
        assert_eq!(out[0], 17);
        assert_eq!(out[1], 16);
    }

    #[test]
    fn rotation_turns_the_crop_x_axis_down_the_image() {
        let image = ramp(200, 200);
        let roi = Roi { center: Point2::new(100.0, 100.0), size: 64.0, rotation: std::f32::consts::FRAC_PI_2 };
        let out = crop_rgb(&image, &roi, 64, Border::Replicate);
        // Crop (u, v) reads local (u − 32, v − 32) turned by 90°: image (100 − (v − 32), 100 + (u − 32)).
        for (u, v) in [(0usize, 0usize), (40, 10), (63, 5)] {
            let px = &out[(v * 64 + u) * 3..][..2];
            let want = [(132 - v as i32) as u8, (68 + u as i32) as u8];
            assert_eq!(px, &want, "at ({u}, {v})");
        }
    }

    #[test]
    fn borders_are_zero_or_replicated() {
        let image = RgbImage::from_pixel(10, 10, image::Rgb([200, 100, 50]));
        // A 40-px ROI around the 10-px image: the outer ring lies outside.
        let roi = Roi { center: Point2::new(5.0, 5.0), size: 40.0, rotation: 0.0 };
        let zero = crop_rgb(&image, &roi, 40, Border::Zero);
        let replicate = crop_rgb(&image, &roi, 40, Border::Replicate);
        assert_eq!(&zero[..3], &[0, 0, 0]);
        assert_eq!(&replicate[..3], &[200, 100, 50]);
        let centre = (20 * 40 + 20) * 3;
        assert_eq!(&zero[centre..centre + 3], &[200, 100, 50]);
    }

    #[test]
    fn tensor_values_follow_the_range() {
        let image = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 51]));
        let roi = Roi { center: Point2::new(2.0, 2.0), size: 4.0, rotation: 0.0 };
        let t = crop_tensor(&image, &roi, 2, Border::Replicate, RANGE_SIGNED);
        assert_eq!(t.shape(), &[1, 2, 2, 3]);
        assert!((t.data()[0] - 1.0).abs() < 1e-6 && (t.data()[1] + 1.0).abs() < 1e-6);
        let t = crop_tensor(&image, &roi, 2, Border::Replicate, RANGE_UNIT);
        assert!((t.data()[2] - 0.2).abs() < 1e-6);
    }

    #[test]
    fn sampler_matches_roi_positions() {
        let roi = Roi { center: Point2::new(31.0, 77.0), size: 123.0, rotation: -0.7 };
        let sampler = Sampler::new(&roi, 192);
        for (u, v) in [(0usize, 0usize), (5, 190), (191, 191)] {
            let (a, b) = (sampler.position(u, v), roi.sample_position(u as f64, v as f64, 192.0));
            assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
        }
    }

    #[test]
    fn quantisation_rounds_half_to_even() {
        assert_eq!(quantise(0.5 / 32.0), 0);
        assert_eq!(quantise(1.5 / 32.0), 2);
        assert_eq!(quantise(-0.5 / 32.0), 0);
        assert_eq!(quantise(-1.5 / 32.0), -2);
        assert_eq!(quantise(10.3), (10.3f64 * 32.0).round_ties_even() as i64);
        assert_eq!(quantise(f64::INFINITY), i64::from(i32::MAX / 2));
        assert_eq!(quantise(f64::NAN), 0);
    }

    #[test]
    fn empty_image_gives_black() {
        let image = RgbImage::new(0, 0);
        let out = crop_rgb(&image, &Roi { size: 8.0, ..Default::default() }, 4, Border::Replicate);
        assert!(out.iter().all(|&b| b == 0));
    }
}
