//! Regions of interest: the rotated square a landmark model looks at, and the maths around it.
//!
//! Owns `Roi` (centre, side and rotation, in image pixels) and MediaPipe's rules for building one: from a face
//! detection (eye-to-eye rotation, box centre, longest side × 1.5) and, for tracking, from the previous frame's
//! landmarks (their bounding box, rotation from points 33 → 263, longest side × 1.5, as in
//! `face_landmark_landmarks_to_roi.pbtxt`). Also maps points between the model's crop and the image
//! (`Roi::project`). Receives detections and landmarks in pixels; emits `Roi`s and projected points.

use super::geometry::{Point2, Rect, normalize_radians};

/// Both ROI rules enlarge the face box by this factor (`RectTransformationCalculator` scale_x / scale_y).
pub const ROI_SCALE: f32 = 1.5;
/// Landmark index of the subject's right eye outer corner: start of the rotation vector for landmark ROIs.
pub const ROTATION_START_LANDMARK: usize = 33;
/// Landmark index of the subject's left eye outer corner: end of the rotation vector for landmark ROIs.
pub const ROTATION_END_LANDMARK: usize = 263;
/// Both rules align the rotation vector with the x axis (`rotation_vector_target_angle_degrees: 0`).
const TARGET_ANGLE: f32 = 0.0;

/// A square region of an image, rotated about its centre. Pixels; rotation in radians, positive turns the ROI's
/// x axis towards the image's +y (clockwise on screen).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Roi {
    /// Centre of the square in image pixels.
    pub center: Point2,
    /// Side length of the square.
    pub size: f32,
    /// Rotation about the centre in radians (positive is clockwise on screen).
    pub rotation: f32,
}

/// A ROI expressed like MediaPipe's `NormalizedRect` (centre and size divided by the image size).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NormalizedRoi {
    /// Centre x as a fraction of the image width.
    pub x_center: f32,
    /// Centre y as a fraction of the image height.
    pub y_center: f32,
    /// Side as a fraction of the image width.
    pub width: f32,
    /// Side as a fraction of the image height.
    pub height: f32,
    /// Rotation in radians, as in [`Roi::rotation`].
    pub rotation: f32,
}

/// MediaPipe's `DetectionsToRectsCalculator` rotation: the angle that turns the vector `from → to` onto the x axis.
fn rotation_between(from: Point2, to: Point2) -> f32 {
    normalize_radians(TARGET_ANGLE - (-(to.y - from.y)).atan2(to.x - from.x))
}

impl Roi {
    /// The landmark ROI of a detected face box (in pixels): box centre, rotation from the right-eye keypoint to the
    /// left-eye keypoint, square side = longest box side × `ROI_SCALE` (see `Detection::roi`).
    pub fn from_box_and_eyes(bbox: &Rect, right_eye: Point2, left_eye: Point2) -> Self {
        Self::around_box(bbox, rotation_between(right_eye, left_eye))
    }

    /// The next frame's ROI from this frame's landmarks (pixels, at least `ROTATION_END_LANDMARK + 1` of them):
    /// their bounding box, rotation from landmark 33 to landmark 263, square side = longest side × `ROI_SCALE`.
    /// `None` when there are too few landmarks or they are not finite.
    pub fn from_landmarks(points: &[[f32; 3]]) -> Option<Self> {
        let start = points.get(ROTATION_START_LANDMARK)?;
        let end = points.get(ROTATION_END_LANDMARK)?;
        let bbox = Rect::bounding(points.iter().map(|p| Point2::new(p[0], p[1])))?;
        let rotation = rotation_between(Point2::new(start[0], start[1]), Point2::new(end[0], end[1]));
        Some(Self::around_box(&bbox, rotation))
    }

    fn around_box(bbox: &Rect, rotation: f32) -> Self {
        Self { center: bbox.center(), size: bbox.width.max(bbox.height) * ROI_SCALE, rotation }
    }

    /// The ROI divided by the image size, for comparison with MediaPipe's `NormalizedRect`.
    pub fn normalized(&self, image_width: u32, image_height: u32) -> NormalizedRoi {
        let (w, h) = (image_width as f32, image_height as f32);
        NormalizedRoi {
            x_center: self.center.x / w,
            y_center: self.center.y / h,
            width: self.size / w,
            height: self.size / h,
            rotation: self.rotation,
        }
    }

    /// Maps a point from a `crop_size`² model crop of this ROI to image pixels (MediaPipe's
    /// `LandmarkProjectionCalculator`): p = lm / crop − 0.5, rotated by the ROI rotation, scaled by the side, moved to
    /// the centre. z is scaled like x: z / crop × side.
    pub fn project(&self, crop_point: [f32; 3], crop_size: f32) -> [f32; 3] {
        let (sin, cos) = self.rotation.sin_cos();
        let x = crop_point[0] / crop_size - 0.5;
        let y = crop_point[1] / crop_size - 0.5;
        [
            (cos * x - sin * y) * self.size + self.center.x,
            (sin * x + cos * y) * self.size + self.center.y,
            crop_point[2] / crop_size * self.size,
        ]
    }

    /// The image position that the crop's (`u`, `v`) samples under the edge convention: the ROI's edges map to the
    /// crop's edges, so integer `u` lands at c + R·(u·side/crop − side/2, …).
    pub fn sample_position(&self, u: f64, v: f64, crop_size: f64) -> (f64, f64) {
        let (sin, cos) = f64::from(self.rotation).sin_cos();
        let side = f64::from(self.size);
        let lx = u * side / crop_size - side / 2.0;
        let ly = v * side / crop_size - side / 2.0;
        (f64::from(self.center.x) + cos * lx - sin * ly, f64::from(self.center.y) + sin * lx + cos * ly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::FRAC_PI_2;

    #[test]
    fn projection_maps_crop_centre_and_corners() {
        let roi = Roi { center: Point2::new(100.0, 50.0), size: 40.0, rotation: FRAC_PI_2 };
        let c = roi.project([96.0, 96.0, 19.2], 192.0);
        assert!((c[0] - 100.0).abs() < 1e-4 && (c[1] - 50.0).abs() < 1e-4);
        assert!((c[2] - 4.0).abs() < 1e-5, "z scales like x");
        // The crop's right edge midpoint: local (+20, 0) turned by +90° points down the image.
        let r = roi.project([192.0, 96.0, 0.0], 192.0);
        assert!((r[0] - 100.0).abs() < 1e-4 && (r[1] - 70.0).abs() < 1e-4, "{r:?}");
    }

    #[test]
    fn projection_and_sampling_agree() {
        let roi = Roi { center: Point2::new(33.0, 71.0), size: 57.0, rotation: 0.4 };
        for (u, v) in [(0.0, 0.0), (13.0, 150.0), (191.0, 7.0)] {
            let p = roi.project([u as f32, v as f32, 0.0], 192.0);
            let (x, y) = roi.sample_position(u, v, 192.0);
            assert!((f64::from(p[0]) - x).abs() < 1e-3 && (f64::from(p[1]) - y).abs() < 1e-3);
        }
    }

    #[test]
    fn landmark_roi_uses_eye_corners_and_bounding_box() {
        let mut points = vec![[50.0, 50.0, 0.0]; 468];
        points[0] = [0.0, 0.0, 0.0];
        points[1] = [100.0, 60.0, 0.0];
        // Eye corners on a line rising to the right by 45° on screen (y down).
        points[ROTATION_START_LANDMARK] = [20.0, 40.0, 0.0];
        points[ROTATION_END_LANDMARK] = [40.0, 20.0, 0.0];
        let roi = Roi::from_landmarks(&points).unwrap();
        assert!((roi.center.x - 50.0).abs() < 1e-5 && (roi.center.y - 30.0).abs() < 1e-5);
        assert!((roi.size - 150.0).abs() < 1e-4);
        assert!((roi.rotation + std::f32::consts::FRAC_PI_4).abs() < 1e-6, "{}", roi.rotation);
        assert_eq!(Roi::from_landmarks(&points[..100]), None);
    }
}
