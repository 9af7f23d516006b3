//! Motion transfer: the landmarks the portrait should take, given the driver's landmarks.
//!
//! Owns the portrait's landmarks, the driver's neutral reference frame, the alignment between them and the choice of
//! stable points (`STABLE_POINTS`). Receives driving landmarks (468 or 478 MediaPipe points, `[f32; 3]` in the
//! driver's crop pixels, z scaled like x); emits target landmarks in the portrait's crop pixels into a caller-owned
//! slice (no allocation per frame), plus the head motion it applied (`HeadMotion`).
//!
//! `Absolute` passes the driving landmarks through: both crops share the official framing, so this is the official
//! behaviour, but the driver's face shape replaces the portrait's. `Relative` keeps the portrait's shape and moves it
//! by the driver's change since the reference frame, split in two parts:
//! - head motion: the similarity G (in-plane rotation, uniform scale, translation) mapping the reference onto the
//!   current driving frame on the stable points; the portrait gets the same motion expressed in its own frame,
//!   G_p = S ∘ G ∘ S⁻¹, where S is the similarity mapping the reference face onto the portrait face;
//! - expression: what is left after undoing G, e = G⁻¹(driving) − reference, turned and scaled into the portrait's
//!   frame by S's linear part.
//!
//! Result: `portrait_i' = G_p(portrait_i + S_lin·e_i)`. A driver that only moves its head moves the portrait by an
//! exact similarity (no shape leak); an expression moves the same points of the portrait by the driver's offsets,
//! scaled by the ratio of face sizes and turned by the relative roll. Out-of-plane turns (yaw, pitch) are not a 2-D
//! similarity, so they arrive as offsets, as in first-order-model's relative mode. z follows x and y: a similarity
//! scales it and adds nothing.
//!
//! Fits are closed-form least squares (Umeyama 1991 in 2-D, proper rotations only), in f64.

use thiserror::Error;

/// MediaPipe mesh points that ride on the skull, used to fit every similarity.
///
/// - eye corners (canthi) 33, 133, 362, 263: tied to bone by ligaments, unmoved by blinks and barely by smiles;
/// - nose bridge 168, 6, 197, 195, 5: bone and cartilage;
/// - the upper half of the face oval, forehead to cheekbones (10, 338, 297, 332, 284, 251, 389, 356, 454, 109, 67,
///   103, 54, 21, 162, 127, 234).
///
/// Left out on purpose: lips, chin and the lower oval (the jaw opens), cheeks (smiles), brows (raised), eyelids
/// (blinks), nose tip and wings (they follow the upper lip) — what the driver animates must not shift the alignment.
/// Together the chosen points span the face left to right and forehead to nose, so rotation and scale are well
/// conditioned.
pub const STABLE_POINTS: [usize; 26] = [
    33, 133, 362, 263, // eye corners
    168, 6, 197, 195, 5, // nose bridge
    10, 338, 297, 332, 284, 251, 389, 356, 454, 109, 67, 103, 54, 21, 162, 127, 234, // upper face oval
];

/// Fewest anchors a similarity can be fitted from.
const MIN_ANCHORS: usize = 2;
/// Anchor spread (mean squared distance to their centroid, px²) below which a fit is refused.
const MIN_SPREAD_PX2: f64 = 1e-6;

/// Why landmarks could not be transferred.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum MotionError {
    /// A landmark set is too short for one of the anchor indices (for example a non-MediaPipe landmark set).
    #[error("{got} landmarks, but anchor index {anchor} needs at least {}", anchor + 1)]
    AnchorOutOfRange {
        /// The anchor index that does not exist.
        anchor: usize,
        /// Landmarks in the set.
        got: usize,
    },
    /// Fewer than two anchors were given; a similarity needs at least two points.
    #[error("need at least {MIN_ANCHORS} anchors, got {0}")]
    TooFewAnchors(usize),
    /// The driving landmarks (or the output slice) differ in length from the portrait's.
    #[error("{got} landmarks where {expected} were expected")]
    LengthMismatch {
        /// Length of the portrait's landmark set.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The landmark at this index has a NaN or infinite coordinate.
    #[error("landmark {0} is not finite")]
    NonFinite(usize),
    /// The anchors collapse onto one point (or the fit has zero scale), so no rotation or scale can be recovered.
    #[error("anchor points coincide; no similarity can be fitted")]
    Degenerate,
}

/// How driving landmarks become portrait landmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum MotionMode {
    /// Driving landmarks as they are (official; the driver's face shape shows).
    Absolute,
    /// The portrait moved by the driver's change since the reference frame.
    #[default]
    Relative,
}

/// A 2-D similarity extended to landmarks: (x, y) ↦ s·R(θ)·(x, y) + t, z ↦ s·z. Stored as
/// `a = s·cos θ`, `b = s·sin θ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    a: f64,
    b: f64,
    tx: f64,
    ty: f64,
}

impl Default for Similarity {
    fn default() -> Self {
        Self::identity()
    }
}

impl Similarity {
    /// The map that leaves every point where it is.
    pub const fn identity() -> Self {
        Self { a: 1.0, b: 0.0, tx: 0.0, ty: 0.0 }
    }

    /// From a scale, a counter-clockwise angle in radians (in image axes: y down, so clockwise on screen) and a
    /// translation.
    pub fn new(scale: f32, angle: f32, translation: [f32; 2]) -> Self {
        let (s, th) = (f64::from(scale), f64::from(angle));
        Self { a: s * th.cos(), b: s * th.sin(), tx: f64::from(translation[0]), ty: f64::from(translation[1]) }
    }

    /// The uniform scale factor `s`.
    pub fn scale(&self) -> f32 {
        self.a.hypot(self.b) as f32
    }

    /// The rotation `θ` in radians, in [−π, π], counter-clockwise in image axes (see [`Similarity::new`]).
    pub fn angle(&self) -> f32 {
        self.b.atan2(self.a) as f32
    }

    /// The translation `t`, in the same pixels as the points.
    pub fn translation(&self) -> [f32; 2] {
        [self.tx as f32, self.ty as f32]
    }

    /// The least-squares similarity mapping `from[k]` onto `to[k]` for k in `anchors` (x, y only).
    pub fn fit(from: &[[f32; 3]], to: &[[f32; 3]], anchors: &[usize]) -> Result<Self, MotionError> {
        if anchors.len() < MIN_ANCHORS {
            return Err(MotionError::TooFewAnchors(anchors.len()));
        }
        for &k in anchors {
            let got = from.len().min(to.len());
            if k >= got {
                return Err(MotionError::AnchorOutOfRange { anchor: k, got });
            }
        }
        let n = anchors.len() as f64;
        let (mut fx, mut fy, mut gx, mut gy) = (0.0, 0.0, 0.0, 0.0);
        for &k in anchors {
            fx += f64::from(from[k][0]);
            fy += f64::from(from[k][1]);
            gx += f64::from(to[k][0]);
            gy += f64::from(to[k][1]);
        }
        let (fx, fy, gx, gy) = (fx / n, fy / n, gx / n, gy / n);
        // With complex numbers p = x + iy: c = Σ conj(p')·q' / Σ|p'|² minimises Σ|q' − c·p'|² (p', q' centred).
        let (mut spread, mut re, mut im) = (0.0, 0.0, 0.0);
        for &k in anchors {
            let (px, py) = (f64::from(from[k][0]) - fx, f64::from(from[k][1]) - fy);
            let (qx, qy) = (f64::from(to[k][0]) - gx, f64::from(to[k][1]) - gy);
            spread += px * px + py * py;
            re += px * qx + py * qy;
            im += px * qy - py * qx;
        }
        if spread / n < MIN_SPREAD_PX2 || !(re.is_finite() && im.is_finite()) {
            return Err(MotionError::Degenerate);
        }
        let (a, b) = (re / spread, im / spread);
        if a.hypot(b) * spread.sqrt() < MIN_SPREAD_PX2 {
            return Err(MotionError::Degenerate);
        }
        Ok(Self { a, b, tx: gx - (a * fx - b * fy), ty: gy - (b * fx + a * fy) })
    }

    /// The mapped point.
    pub fn apply(&self, p: [f32; 3]) -> [f32; 3] {
        let l = self.apply_linear(p);
        [(f64::from(l[0]) + self.tx) as f32, (f64::from(l[1]) + self.ty) as f32, l[2]]
    }

    /// The mapped offset (rotation and scale, no translation).
    pub fn apply_linear(&self, d: [f32; 3]) -> [f32; 3] {
        let (x, y, z) = (f64::from(d[0]), f64::from(d[1]), f64::from(d[2]));
        [(self.a * x - self.b * y) as f32, (self.b * x + self.a * y) as f32, (self.a.hypot(self.b) * z) as f32]
    }

    /// The inverse map, or `None` for a zero scale.
    pub fn inverse(&self) -> Option<Self> {
        let norm = self.a * self.a + self.b * self.b;
        if !(norm.is_finite() && norm > 0.0) {
            return None;
        }
        let (a, b) = (self.a / norm, -self.b / norm);
        Some(Self { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }

    /// `self` after `first`: p ↦ self(first(p)).
    pub fn after(&self, first: &Self) -> Self {
        Self {
            a: self.a * first.a - self.b * first.b,
            b: self.b * first.a + self.a * first.b,
            tx: self.a * first.tx - self.b * first.ty + self.tx,
            ty: self.b * first.tx + self.a * first.ty + self.ty,
        }
    }
}

/// The head motion a transfer applied: of the driver (reference → now, driver crop) and of the portrait
/// (portrait crop). Both identity in `Absolute` mode.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct HeadMotion {
    /// The driver's head motion G from the reference frame to the current frame, in driver crop pixels.
    pub driver: Similarity,
    /// The same motion applied to the portrait, G_p, in portrait crop pixels.
    pub portrait: Similarity,
}

fn check_finite(points: &[[f32; 3]]) -> Result<(), MotionError> {
    match points.iter().position(|p| !p.iter().all(|v| v.is_finite())) {
        Some(index) => Err(MotionError::NonFinite(index)),
        None => Ok(()),
    }
}

fn check_len(expected: usize, got: usize) -> Result<(), MotionError> {
    if expected == got { Ok(()) } else { Err(MotionError::LengthMismatch { expected, got }) }
}

/// Relative transfer in one call: `out_i = G_p(portrait_i + S_lin·(G⁻¹(driving_i) − reference_i))` (see the module
/// docs). All slices must have the same length; `to_portrait` is the fitted reference → portrait similarity.
fn relative_into(
    portrait: &[[f32; 3]],
    reference: &[[f32; 3]],
    to_portrait: &Similarity,
    anchors: &[usize],
    driving: &[[f32; 3]],
    out: &mut [[f32; 3]],
) -> Result<HeadMotion, MotionError> {
    let head = Similarity::fit(reference, driving, anchors)?;
    let undo_head = head.inverse().ok_or(MotionError::Degenerate)?;
    let from_portrait = to_portrait.inverse().ok_or(MotionError::Degenerate)?;
    let portrait_head = to_portrait.after(&head).after(&from_portrait);
    for (((o, p), r), d) in out.iter_mut().zip(portrait).zip(reference).zip(driving) {
        let neutral = undo_head.apply(*d);
        let expression = to_portrait.apply_linear([neutral[0] - r[0], neutral[1] - r[1], neutral[2] - r[2]]);
        *o = portrait_head.apply([p[0] + expression[0], p[1] + expression[1], p[2] + expression[2]]);
    }
    Ok(HeadMotion { driver: head, portrait: portrait_head })
}

/// Driving → portrait landmark transfer with a neutral reference frame.
#[derive(Clone, Debug, PartialEq)]
pub struct MotionTransfer {
    mode: MotionMode,
    anchors: Vec<usize>,
    portrait: Vec<[f32; 3]>,
    /// The driver's neutral frame; empty until calibrated.
    reference: Vec<[f32; 3]>,
    /// Reference → portrait similarity (identity until calibrated).
    to_portrait: Similarity,
}

impl MotionTransfer {
    /// A transfer onto `portrait` (crop pixels) aligned on `STABLE_POINTS`.
    pub fn new(portrait: &[[f32; 3]], mode: MotionMode) -> Result<Self, MotionError> {
        Self::with_anchors(portrait, mode, &STABLE_POINTS)
    }

    /// A transfer aligned on the given point indices instead of `STABLE_POINTS`.
    pub fn with_anchors(portrait: &[[f32; 3]], mode: MotionMode, anchors: &[usize]) -> Result<Self, MotionError> {
        if anchors.len() < MIN_ANCHORS {
            return Err(MotionError::TooFewAnchors(anchors.len()));
        }
        let mut transfer = Self {
            mode,
            anchors: anchors.to_vec(),
            portrait: Vec::with_capacity(portrait.len()),
            reference: Vec::with_capacity(portrait.len()),
            to_portrait: Similarity::identity(),
        };
        transfer.set_portrait(portrait)?;
        Ok(transfer)
    }

    /// How driving landmarks are turned into portrait landmarks.
    pub fn mode(&self) -> MotionMode {
        self.mode
    }

    /// Switches between absolute and relative transfer; the reference frame is kept.
    pub fn set_mode(&mut self, mode: MotionMode) {
        self.mode = mode;
    }

    /// The portrait's landmarks, in its crop pixels.
    pub fn portrait(&self) -> &[[f32; 3]] {
        &self.portrait
    }

    /// The reference frame, if calibrated.
    pub fn reference(&self) -> Option<&[[f32; 3]]> {
        if self.reference.is_empty() { None } else { Some(&self.reference) }
    }

    /// The fitted reference → portrait similarity (identity until calibrated).
    pub fn reference_to_portrait(&self) -> Similarity {
        self.to_portrait
    }

    /// Replace the portrait (keeps the reference if it still fits).
    pub fn set_portrait(&mut self, portrait: &[[f32; 3]]) -> Result<(), MotionError> {
        check_finite(portrait)?;
        if let Some(&anchor) = self.anchors.iter().find(|&&k| k >= portrait.len()) {
            return Err(MotionError::AnchorOutOfRange { anchor, got: portrait.len() });
        }
        if self.reference.len() == portrait.len() {
            self.to_portrait = Similarity::fit(&self.reference, portrait, &self.anchors)?;
        } else {
            self.reference.clear();
            self.to_portrait = Similarity::identity();
        }
        self.portrait.clear();
        self.portrait.extend_from_slice(portrait);
        Ok(())
    }

    /// Take `reference` (the driver's neutral frame) as the zero of the motion: driving with it yields the portrait.
    pub fn recalibrate(&mut self, reference: &[[f32; 3]]) -> Result<(), MotionError> {
        check_len(self.portrait.len(), reference.len())?;
        check_finite(reference)?;
        self.to_portrait = Similarity::fit(reference, &self.portrait, &self.anchors)?;
        self.reference.clear();
        self.reference.extend_from_slice(reference);
        Ok(())
    }

    /// Forget the reference: the next `Relative` transfer recalibrates on its driving frame.
    pub fn clear_reference(&mut self) {
        self.reference.clear();
        self.to_portrait = Similarity::identity();
    }

    /// The target landmarks for `driving`, written into `out` (both the portrait's length). In `Relative` mode an
    /// uncalibrated transfer first takes `driving` as the reference (so the first frame yields the portrait).
    pub fn transfer(&mut self, driving: &[[f32; 3]], out: &mut [[f32; 3]]) -> Result<HeadMotion, MotionError> {
        check_len(self.portrait.len(), driving.len())?;
        check_len(self.portrait.len(), out.len())?;
        check_finite(driving)?;
        match self.mode {
            MotionMode::Absolute => {
                out.copy_from_slice(driving);
                Ok(HeadMotion::default())
            }
            MotionMode::Relative => {
                if self.reference.is_empty() {
                    self.recalibrate(driving)?;
                }
                relative_into(&self.portrait, &self.reference, &self.to_portrait, &self.anchors, driving, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL_PX: f32 = 1e-3;
    /// Points moved by the synthetic mouth opening (MediaPipe lower-lip and chin points).
    const MOUTH: [usize; 8] = [14, 17, 84, 87, 178, 317, 314, 402];

    /// Deterministic pseudo-random numbers in [0, 1).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// A synthetic 478-point "face": points spread over an ellipse in a 256² crop, anchors included.
    fn driver_face() -> Vec<[f32; 3]> {
        let mut rng = Lcg(7);
        (0..478)
            .map(|_| {
                let (r, t) = (rng.next().sqrt(), rng.next() * std::f32::consts::TAU);
                [128.0 + 70.0 * r * t.cos(), 130.0 + 90.0 * r * t.sin(), 20.0 * (rng.next() - 0.5)]
            })
            .collect()
    }

    /// Another person: wider, shorter, with its own per-point irregularities, smaller and elsewhere in the crop.
    fn other_face(base: &[[f32; 3]]) -> Vec<[f32; 3]> {
        let mut rng = Lcg(99);
        base.iter()
            .map(|p| {
                let (x, y) = (p[0] - 128.0, p[1] - 130.0);
                [
                    120.0 + 0.8 * 1.3 * x + 6.0 * (rng.next() - 0.5),
                    140.0 + 0.8 * 0.85 * y + 6.0 * (rng.next() - 0.5),
                    0.8 * p[2],
                ]
            })
            .collect()
    }

    fn map_all(s: &Similarity, pts: &[[f32; 3]]) -> Vec<[f32; 3]> {
        pts.iter().map(|p| s.apply(*p)).collect()
    }

    fn assert_close(a: &[[f32; 3]], b: &[[f32; 3]], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            for c in 0..3 {
                assert!((p[c] - q[c]).abs() <= tol, "point {i}: {p:?} vs {q:?}");
            }
        }
    }

    /// Largest distance from `b` to the best similarity image of `a` over all points (0 = same shape).
    fn shape_residual(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
        let all: Vec<usize> = (0..a.len()).collect();
        let s = Similarity::fit(a, b, &all).expect("fit");
        a.iter()
            .zip(b)
            .map(|(p, q)| {
                let m = s.apply(*p);
                (m[0] - q[0]).hypot(m[1] - q[1])
            })
            .fold(0.0, f32::max)
    }

    fn head_motion() -> Similarity {
        // 12° roll, 10 % closer, moved right and up, as a rotation about the face centre.
        let about = [128.0f32, 130.0];
        let rot = Similarity::new(1.1, 12f32.to_radians(), [0.0, 0.0]);
        let c = rot.apply([about[0], about[1], 0.0]);
        Similarity::new(1.1, 12f32.to_radians(), [about[0] - c[0] + 9.0, about[1] - c[1] - 4.0])
    }

    #[test]
    fn similarity_fit_recovers_parameters_and_composes() {
        let base = driver_face();
        let s = Similarity::new(0.7, -0.4, [30.0, -12.0]);
        let moved = map_all(&s, &base);
        let fit = Similarity::fit(&base, &moved, &STABLE_POINTS).expect("fit");
        assert!((fit.scale() - 0.7).abs() < 1e-5 && (fit.angle() + 0.4).abs() < 1e-5, "{fit:?}");
        let t = fit.translation();
        assert!((t[0] - 30.0).abs() < 1e-3 && (t[1] + 12.0).abs() < 1e-3);
        let inv = fit.inverse().expect("invertible");
        assert_close(&map_all(&inv, &moved), &base, TOL_PX);
        let twice = s.after(&s);
        let expect: Vec<_> = base.iter().map(|p| s.apply(s.apply(*p))).collect();
        assert_close(&map_all(&twice, &base), &expect, TOL_PX);
        // z follows the scale.
        assert!((s.apply([0.0, 0.0, 10.0])[2] - 7.0).abs() < 1e-5);
    }

    #[test]
    fn identity_when_driving_equals_reference() {
        let driver = driver_face();
        let portrait = other_face(&driver);
        let mut mt = MotionTransfer::new(&portrait, MotionMode::Relative).expect("transfer");
        mt.recalibrate(&driver).expect("calibrate");
        let mut out = vec![[0.0; 3]; portrait.len()];
        let head = mt.transfer(&driver, &mut out).expect("transfer");
        assert_close(&out, &portrait, TOL_PX);
        assert!((head.driver.scale() - 1.0).abs() < 1e-6 && head.driver.angle().abs() < 1e-6);
    }

    #[test]
    fn head_similarity_transfers_as_similarity_of_portrait() {
        let driver = driver_face();
        let g = head_motion();
        let driving = map_all(&g, &driver);
        // Same-shape portrait (a similarity of the driver) and a different-shape one.
        let same_shape = map_all(&Similarity::new(0.6, 0.3, [40.0, 20.0]), &driver);
        for portrait in [same_shape, other_face(&driver)] {
            let mut mt = MotionTransfer::new(&portrait, MotionMode::Relative).expect("transfer");
            mt.recalibrate(&driver).expect("calibrate");
            let mut out = vec![[0.0; 3]; portrait.len()];
            let head = mt.transfer(&driving, &mut out).expect("transfer");
            // The portrait moved rigidly: same roll and scale change as the driver…
            assert!((head.portrait.scale() - 1.1).abs() < 1e-4, "{:?}", head.portrait);
            assert!((head.portrait.angle() - 12f32.to_radians()).abs() < 1e-4);
            assert_close(&out, &map_all(&head.portrait, &portrait), TOL_PX);
            // …and keeps its own shape exactly.
            assert!(shape_residual(&portrait, &out) < 2e-3);
            // The translation is the driver's, carried into the portrait's frame: the motion of the portrait point
            // that corresponds to the driver's face centre is the driver's offset scaled and turned by S.
            let s = mt.reference_to_portrait();
            let centre = [128.0, 130.0, 0.0];
            let moved_driver = g.apply(centre);
            let offset = s.apply_linear([moved_driver[0] - centre[0], moved_driver[1] - centre[1], 0.0]);
            let pc = s.apply(centre);
            let pm = head.portrait.apply(pc);
            assert!((pm[0] - pc[0] - offset[0]).abs() < 1e-3 && (pm[1] - pc[1] - offset[1]).abs() < 1e-3);
        }
    }

    #[test]
    fn mouth_opening_appears_scaled_in_portrait() {
        let driver = driver_face();
        // Portrait half the driver's size and rolled by 90°: the mouth delta must shrink and turn with it.
        let to_portrait = Similarity::new(0.5, std::f32::consts::FRAC_PI_2, [200.0, 60.0]);
        let portrait = map_all(&to_portrait, &driver);
        let mut driving = driver.clone();
        for &k in &MOUTH {
            driving[k][1] += 12.0;
        }
        let mut mt = MotionTransfer::new(&portrait, MotionMode::Relative).expect("transfer");
        mt.recalibrate(&driver).expect("calibrate");
        let mut out = vec![[0.0; 3]; portrait.len()];
        mt.transfer(&driving, &mut out).expect("transfer");
        for (i, (o, p)) in out.iter().zip(&portrait).enumerate() {
            let (dx, dy) = (o[0] - p[0], o[1] - p[1]);
            if MOUTH.contains(&i) {
                // (0, 12) scaled by 0.5 and turned by +90° (x' = −y) → (−6, 0).
                assert!((dx + 6.0).abs() < TOL_PX && dy.abs() < TOL_PX, "point {i}: ({dx}, {dy})");
            } else {
                assert!(dx.abs() < TOL_PX && dy.abs() < TOL_PX, "point {i} moved ({dx}, {dy})");
            }
        }
    }

    #[test]
    fn other_face_shape_does_not_leak() {
        let driver = driver_face();
        let portrait = other_face(&driver);
        // Different shapes to begin with.
        assert!(shape_residual(&driver, &portrait) > 10.0);
        let g = head_motion();
        let mut driving = driver.clone();
        for &k in &MOUTH {
            driving[k][1] += 10.0;
        }
        let driving = map_all(&g, &driving);
        let mut relative = vec![[0.0; 3]; portrait.len()];
        let mut absolute = vec![[0.0; 3]; portrait.len()];
        let mut mt = MotionTransfer::new(&portrait, MotionMode::Relative).expect("transfer");
        mt.recalibrate(&driver).expect("calibrate");
        let head = mt.transfer(&driving, &mut relative).expect("transfer");
        mt.set_mode(MotionMode::Absolute);
        mt.transfer(&driving, &mut absolute).expect("transfer");
        assert_close(&absolute, &driving, 0.0);
        let still: Vec<usize> = (0..portrait.len()).filter(|i| !MOUTH.contains(i)).collect();
        let pick = |v: &[[f32; 3]]| still.iter().map(|&i| v[i]).collect::<Vec<_>>();
        // Relative: every non-animated point is the portrait moved rigidly (its own shape).
        assert_close(&pick(&relative), &pick(&map_all(&head.portrait, &portrait)), TOL_PX);
        assert!(shape_residual(&pick(&portrait), &pick(&relative)) < 2e-3);
        // Absolute: the driver's shape replaces it.
        assert!(shape_residual(&pick(&portrait), &pick(&absolute)) > 10.0);
        // The mouth moved by the driver's 10 px scaled to the portrait (S scale) and then moved with the head.
        let s = mt.reference_to_portrait();
        assert!((s.scale() - 0.8).abs() < 0.1 && s.angle().abs() < 0.05, "{s:?}");
        let delta = s.apply_linear([0.0, 10.0, 0.0]);
        for &k in &MOUTH {
            let p = portrait[k];
            let expect = head.portrait.apply([p[0] + delta[0], p[1] + delta[1], p[2] + delta[2]]);
            let got = relative[k];
            assert!((got[0] - expect[0]).abs() < TOL_PX && (got[1] - expect[1]).abs() < TOL_PX, "{k}: {got:?}");
        }
    }

    #[test]
    fn first_relative_frame_calibrates_and_recalibrate_moves_zero() {
        let driver = driver_face();
        let portrait = other_face(&driver);
        let mut mt = MotionTransfer::new(&portrait, MotionMode::Relative).expect("transfer");
        assert!(mt.reference().is_none());
        let mut out = vec![[0.0; 3]; portrait.len()];
        let moved = map_all(&head_motion(), &driver);
        mt.transfer(&moved, &mut out).expect("transfer");
        assert_close(&out, &portrait, TOL_PX);
        // Back to the original pose reads as the inverse head motion.
        mt.transfer(&driver, &mut out).expect("transfer");
        assert!(shape_residual(&portrait, &out) < 2e-3);
        assert!(out.iter().zip(&portrait).any(|(o, p)| (o[0] - p[0]).abs() > 1.0));
        // Recalibrating on the current frame makes it the zero again.
        mt.recalibrate(&driver).expect("calibrate");
        mt.transfer(&driver, &mut out).expect("transfer");
        assert_close(&out, &portrait, TOL_PX);
        mt.clear_reference();
        assert!(mt.reference().is_none());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let driver = driver_face();
        let few = &driver[..100];
        assert!(matches!(MotionTransfer::new(few, MotionMode::Relative), Err(MotionError::AnchorOutOfRange { .. })));
        assert_eq!(
            MotionTransfer::with_anchors(&driver, MotionMode::Relative, &[1]),
            Err(MotionError::TooFewAnchors(1))
        );
        let mut mt = MotionTransfer::new(&driver, MotionMode::Relative).expect("transfer");
        let mut out = vec![[0.0; 3]; driver.len()];
        assert!(matches!(mt.transfer(&driver[..468], &mut out), Err(MotionError::LengthMismatch { .. })));
        assert!(matches!(mt.transfer(&driver, &mut out[..3]), Err(MotionError::LengthMismatch { .. })));
        let mut bad = driver.clone();
        bad[5][1] = f32::NAN;
        assert_eq!(mt.recalibrate(&bad), Err(MotionError::NonFinite(5)));
        let flat = vec![[3.0f32, 4.0, 0.0]; driver.len()];
        assert_eq!(mt.recalibrate(&flat), Err(MotionError::Degenerate));
        // A failed recalibration leaves the transfer usable and uncalibrated.
        assert!(mt.reference().is_none());
        mt.transfer(&driver, &mut out).expect("transfer");
        assert_close(&out, &driver, TOL_PX);
    }
}
