//! Pillow's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB pictures, reproduced to the byte: the official data
//! loaders (`PersonalDataset`, `PersonalMetaDataset`) resize every frame and source picture this way before `/255`.
//!
//! Owns the separable convolution resampler of Pillow's `Resample.c` for the bicubic filter (`a = −0.5`, support 2,
//! widened by the scale when shrinking, so it antialiases): per output pixel a window of source pixels centred at
//! `(x + 0.5)·scale`, weights normalised to sum 1 and then turned into fixed point with 22 fractional bits; a
//! horizontal pass over only the rows the vertical pass reads, then a vertical pass, each rounding
//! (`+ 2²¹`, arithmetic shift) and clamping to 0..=255. Receives an `RgbImage` and an output size; emits a new
//! `RgbImage`. A picture already at the requested size is returned unchanged, as Pillow copies it.

use image::RgbImage;

/// Fractional bits of Pillow's 8-bit coefficients (`32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;
/// Support of the bicubic kernel in source pixels at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;
/// The kernel's `a` (Pillow uses −0.5, OpenCV −0.75).
const BICUBIC_A: f64 = -0.5;
const CHANNELS: usize = 3;

fn bicubic(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    } else {
        0.0
    }
}

/// The taps of one axis: for each output pixel the first source pixel, how many follow, and their fixed-point
/// weights (`ksize` slots each).
struct Taps {
    ksize: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut first = Vec::with_capacity(out_size);
    let mut count = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; negative starts are clamped to 0 right after.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize - xmin;
        let mut total = 0.0;
        for (x, slot) in k.iter_mut().enumerate().take(xmax) {
            *slot = bicubic((x as f64 + xmin as f64 - center + 0.5) / filter_scale);
            total += *slot;
        }
        for (x, w) in k.iter().enumerate().take(xmax) {
            let v = if total != 0.0 { w / total } else { *w };
            let fixed = v * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if v < 0.0 { (fixed - 0.5) as i32 } else { (fixed + 0.5) as i32 };
        }
        first.push(xmin);
        count.push(xmax);
    }
    Taps { ksize, first, count, weights }
}

/// Rounds a fixed-point sum to 8 bits as Pillow's `clip8` does.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((width, height), Image.BICUBIC)` of an RGB picture.
pub fn resize_bicubic(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    if (in_w, in_h) == (out_w, out_h) || in_w == 0 || in_h == 0 || out_w == 0 || out_h == 0 {
        return if (in_w, in_h) == (out_w, out_h) { src.clone() } else { RgbImage::new(width, height) };
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    let horizontal = taps(in_w, out_w);
    let vertical = taps(in_h, out_h);
    // Rows the vertical pass reads; the horizontal pass only computes those.
    let row_first = vertical.first[0];
    let row_last = vertical.first[out_h - 1] + vertical.count[out_h - 1];
    let src_px = src.as_raw();

    let (mid_w, mid_rows, mid): (usize, usize, std::borrow::Cow<'_, [u8]>) = if in_w != out_w {
        let rows = row_last - row_first;
        let mut buf = vec![0u8; rows * out_w * CHANNELS];
        for r in 0..rows {
            let line = &src_px[(r + row_first) * in_w * CHANNELS..(r + row_first + 1) * in_w * CHANNELS];
            for xx in 0..out_w {
                let k = &horizontal.weights[xx * horizontal.ksize..][..horizontal.count[xx]];
                let mut acc = [half; CHANNELS];
                for (x, w) in k.iter().enumerate() {
                    let p = &line[(horizontal.first[xx] + x) * CHANNELS..][..CHANNELS];
                    for c in 0..CHANNELS {
                        acc[c] += i32::from(p[c]) * w;
                    }
                }
                for c in 0..CHANNELS {
                    buf[(r * out_w + xx) * CHANNELS + c] = clip8(acc[c]);
                }
            }
        }
        (out_w, rows, std::borrow::Cow::Owned(buf))
    } else {
        // Width unchanged: the vertical pass reads the source rows directly (offset by `row_first` below).
        (in_w, in_h, std::borrow::Cow::Borrowed(src_px.as_slice()))
    };
    let offset = if in_w != out_w { row_first } else { 0 };
    if in_h == out_h {
        return RgbImage::from_raw(width, height, mid.into_owned()).unwrap_or_else(|| RgbImage::new(width, height));
    }
    debug_assert!(mid_rows + offset >= row_last);
    let mut out = vec![0u8; out_w * out_h * CHANNELS];
    for yy in 0..out_h {
        let k = &vertical.weights[yy * vertical.ksize..][..vertical.count[yy]];
        let y0 = vertical.first[yy] - offset;
        for xx in 0..mid_w {
            let mut acc = [half; CHANNELS];
            for (y, w) in k.iter().enumerate() {
                let p = &mid[((y0 + y) * mid_w + xx) * CHANNELS..][..CHANNELS];
                for c in 0..CHANNELS {
                    acc[c] += i32::from(p[c]) * w;
                }
            }
            for c in 0..CHANNELS {
                out[(yy * out_w + xx) * CHANNELS + c] = clip8(acc[c]);
            }
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| RgbImage::new(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_is_pillows_bicubic() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(2.0), 0.0);
        // ((1.5 − 5)·1.5 + 8)·1.5 − 4 = 0.125, times a = −0.5.
        assert!((bicubic(1.5) + 0.0625).abs() < 1e-12);
        assert!((bicubic(-0.5) - 0.5625).abs() < 1e-12);
    }

    #[test]
    fn halving_uses_a_widened_normalised_window() {
        let t = taps(8, 4);
        // Scale 2: support 4, ksize 9; the first output pixel's window is clipped at the left border.
        assert_eq!(t.ksize, 9);
        assert_eq!((t.first[0], t.count[0]), (0, 5));
        assert_eq!((t.first[1], t.count[1]), (0, 7));
        for xx in 0..4 {
            let sum: i64 = t.weights[xx * t.ksize..][..t.count[xx]].iter().map(|w| i64::from(*w)).sum();
            assert!((sum - (1 << PRECISION_BITS)).abs() <= 4, "{xx}: {sum}");
        }
    }

    #[test]
    fn flat_pictures_stay_flat_and_same_size_is_a_copy() {
        let flat = RgbImage::from_pixel(40, 30, image::Rgb([200, 17, 90]));
        let small = resize_bicubic(&flat, 17, 11);
        assert!(small.pixels().all(|p| p.0 == [200, 17, 90]));
        let big = resize_bicubic(&flat, 64, 64);
        assert!(big.pixels().all(|p| p.0 == [200, 17, 90]));
        let ramp = RgbImage::from_fn(9, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 20) as u8, 0]));
        assert_eq!(resize_bicubic(&ramp, 9, 9), ramp);
    }
}
