//! Small 2-D geometry shared by the perception stage.
//!
//! Owns the plain value types every face module exchanges: `Point2` (a position in pixels or normalised units),
//! `Rect` (axis-aligned, top-left corner plus size) with its area and intersection-over-union, and the angle
//! normalisation MediaPipe applies to ROI rotations. Receives and emits plain `f32`s; no allocation, no errors.

use std::f32::consts::PI;

/// A 2-D point.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Point2 {
    /// Horizontal coordinate, growing to the right.
    pub x: f32,
    /// Vertical coordinate, growing downwards.
    pub y: f32,
}

impl Point2 {
    /// A point from its coordinates.
    pub const fn new(x: f32, y: f32) -> Self {
        Self { x, y }
    }

    /// Euclidean distance to `other`.
    pub fn distance(self, other: Point2) -> f32 {
        (self.x - other.x).hypot(self.y - other.y)
    }
}

/// An axis-aligned rectangle: top-left corner (`x`, `y`) and size.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rect {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Extent to the right of `x`; may be negative or zero for a degenerate box.
    pub width: f32,
    /// Extent below `y`; may be negative or zero for a degenerate box.
    pub height: f32,
}

impl Rect {
    /// A rectangle from its top-left corner and size.
    pub const fn new(x: f32, y: f32, width: f32, height: f32) -> Self {
        Self { x, y, width, height }
    }

    /// The tightest rectangle around `points`; `None` when there are none or a coordinate is not finite.
    pub fn bounding(points: impl IntoIterator<Item = Point2>) -> Option<Self> {
        let mut iter = points.into_iter();
        let first = iter.next()?;
        let (mut x0, mut y0, mut x1, mut y1) = (first.x, first.y, first.x, first.y);
        for p in iter {
            x0 = x0.min(p.x);
            y0 = y0.min(p.y);
            x1 = x1.max(p.x);
            y1 = y1.max(p.y);
        }
        let rect = Self::new(x0, y0, x1 - x0, y1 - y0);
        [x0, y0, x1, y1].iter().all(|v| v.is_finite()).then_some(rect)
    }

    /// The midpoint of the rectangle.
    pub fn center(&self) -> Point2 {
        Point2::new(self.x + self.width / 2.0, self.y + self.height / 2.0)
    }

    /// Width × height, with negative sides counted as zero.
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    /// `[x, y, width, height]`.
    pub fn to_xywh(&self) -> [f32; 4] {
        [self.x, self.y, self.width, self.height]
    }

    /// The same rectangle with every coordinate multiplied by `sx` (x, width) and `sy` (y, height).
    pub fn scaled(&self, sx: f32, sy: f32) -> Self {
        Self::new(self.x * sx, self.y * sy, self.width * sx, self.height * sy)
    }

    /// Intersection over union; 0 when the rectangles do not overlap or both are empty.
    pub fn iou(&self, other: &Rect) -> f32 {
        let ix = (self.x + self.width).min(other.x + other.width) - self.x.max(other.x);
        let iy = (self.y + self.height).min(other.y + other.height) - self.y.max(other.y);
        if ix <= 0.0 || iy <= 0.0 {
            return 0.0;
        }
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }
}

/// Wraps an angle into [−π, π), as MediaPipe's `NormalizeRadians` does.
pub fn normalize_radians(angle: f32) -> f32 {
    angle - 2.0 * PI * ((angle + PI) / (2.0 * PI)).floor()
}

/// Numerically safe logistic function: the logit is clamped to ±`clip` first (MediaPipe's score clipping).
pub fn sigmoid_clipped(logit: f32, clip: f32) -> f32 {
    1.0 / (1.0 + (-logit.clamp(-clip, clip)).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_rectangles() {
        let a = Rect::new(0.0, 0.0, 2.0, 2.0);
        let b = Rect::new(1.0, 1.0, 2.0, 2.0);
        assert!((a.iou(&b) - 1.0 / 7.0).abs() < 1e-6);
        assert_eq!(a.iou(&Rect::new(5.0, 5.0, 1.0, 1.0)), 0.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn radians_wrap_into_half_open_range() {
        assert!((normalize_radians(3.0 * PI / 2.0) + PI / 2.0).abs() < 1e-5);
        assert!((normalize_radians(-3.0 * PI / 2.0) - PI / 2.0).abs() < 1e-5);
        assert!((normalize_radians(0.3) - 0.3).abs() < 1e-7);
    }

    #[test]
    fn bounding_box_rejects_empty_and_nan() {
        assert_eq!(Rect::bounding([]), None);
        assert_eq!(Rect::bounding([Point2::new(f32::NAN, 0.0)]), None);
        let r = Rect::bounding([Point2::new(1.0, 5.0), Point2::new(3.0, 2.0)]);
        assert_eq!(r, Some(Rect::new(1.0, 2.0, 2.0, 3.0)));
    }

    #[test]
    fn sigmoid_survives_extreme_logits() {
        assert!(sigmoid_clipped(1e9, 100.0) > 0.999);
        assert!(sigmoid_clipped(-1e9, 100.0) < 1e-30);
        assert!((sigmoid_clipped(0.0, 100.0) - 0.5).abs() < 1e-7);
    }
}
