//! Motion transfer: which landmarks drive the portrait, given the driver's landmarks.
//!
//! Owns the portrait's landmarks, the driver's neutral (reference) frame and a reusable output buffer. Receives
//! driving landmarks in the driver's crop coordinates; emits target landmarks in the portrait's crop coordinates.
//! `Absolute` passes the driver's landmarks through (both crops share the official framing). `Relative` moves the
//! portrait by the driver's *change* since the reference frame: `portrait + S·(driving − reference)`, where S is the
//! rotation and scale of the similarity that maps the reference face onto the portrait face, fitted (Umeyama, least
//! squares) on points that expressions do not move — eye corners, nose bridge and tip, forehead top, cheek sides and
//! chin. Mouth and brows are left out of the fit on purpose: they are what the driver animates. This keeps the
//! portrait's own face shape (another person's jaw or eye spacing does not leak in) while head motion and expression
//! carry over, scaled to the portrait's face size and turned to its head roll.

/// MediaPipe points that stay put under expressions, used to align faces.
pub const STABLE_POINTS: [usize; 10] = [33, 133, 362, 263, 168, 6, 1, 10, 234, 454];

/// How driving landmarks become portrait landmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum MotionMode {
    Absolute,
    #[default]
    Relative,
}

/// `y ≈ scale·R(angle)·x + translation`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Similarity {
    pub scale: f32,
    pub angle: f32,
    pub translation: [f32; 2],
}

impl Similarity {
    pub const IDENTITY: Self = Self { scale: 1.0, angle: 0.0, translation: [0.0, 0.0] };

    /// Applies rotation and scale only (for displacements).
    pub fn linear(&self, v: [f32; 2]) -> [f32; 2] {
        let (s, c) = self.angle.sin_cos();
        [self.scale * (c * v[0] - s * v[1]), self.scale * (s * v[0] + c * v[1])]
    }

    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let l = self.linear(p);
        [l[0] + self.translation[0], l[1] + self.translation[1]]
    }

    /// Least-squares similarity from `src` to `dst` (Umeyama in 2-D). `None` when the source points coincide.
    pub fn fit(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Option<Self> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let mean = |pts: &[[f32; 2]]| {
            let s = pts[..n].iter().fold([0.0f64; 2], |a, p| [a[0] + p[0] as f64, a[1] + p[1] as f64]);
            [s[0] / n as f64, s[1] / n as f64]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut dot, mut cross, mut norm) = (0.0f64, 0.0f64, 0.0f64);
        for (p, q) in src[..n].iter().zip(&dst[..n]) {
            let (x, y) = ([p[0] as f64 - ms[0], p[1] as f64 - ms[1]], [q[0] as f64 - md[0], q[1] as f64 - md[1]]);
            dot += x[0] * y[0] + x[1] * y[1];
            cross += x[0] * y[1] - x[1] * y[0];
            norm += x[0] * x[0] + x[1] * x[1];
        }
        if norm < 1e-12 {
            return None;
        }
        let angle = cross.atan2(dot);
        let scale = (dot * dot + cross * cross).sqrt() / norm;
        let partial = Self { scale: scale as f32, angle: angle as f32, translation: [0.0, 0.0] };
        let r = partial.linear([ms[0] as f32, ms[1] as f32]);
        Some(Self { translation: [md[0] as f32 - r[0], md[1] as f32 - r[1]], ..partial })
    }
}

/// Motion transfer for one portrait.
pub struct MotionTransfer {
    mode: MotionMode,
    portrait: Vec<[f32; 2]>,
    reference: Option<Vec<[f32; 2]>>,
    to_portrait: Similarity,
    out: Vec<[f32; 2]>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MotionError {
    #[error("driving frame has {actual} landmarks, the portrait {expected}")]
    LandmarkCount { expected: usize, actual: usize },
}

fn stable(points: &[[f32; 2]]) -> Vec<[f32; 2]> {
    STABLE_POINTS.iter().filter_map(|&i| points.get(i).copied()).collect()
}

impl MotionTransfer {
    pub fn new(portrait: Vec<[f32; 2]>, mode: MotionMode) -> Self {
        let out = portrait.clone();
        Self { mode, portrait, reference: None, to_portrait: Similarity::IDENTITY, out }
    }

    pub fn mode(&self) -> MotionMode {
        self.mode
    }

    pub fn set_mode(&mut self, mode: MotionMode) {
        self.mode = mode;
    }

    /// Makes `reference` the driver's neutral frame (the next frame is used when none was set).
    pub fn recalibrate(&mut self, reference: &[[f32; 2]]) {
        self.to_portrait = Similarity::fit(&stable(reference), &stable(&self.portrait)).unwrap_or(Similarity::IDENTITY);
        self.reference = Some(reference.to_vec());
    }

    /// Forgets the reference; the next driving frame becomes it.
    pub fn reset_reference(&mut self) {
        self.reference = None;
    }

    /// The portrait's target landmarks for this driving frame.
    pub fn transfer(&mut self, driving: &[[f32; 2]]) -> Result<&[[f32; 2]], MotionError> {
        if driving.len() != self.portrait.len() {
            return Err(MotionError::LandmarkCount { expected: self.portrait.len(), actual: driving.len() });
        }
        match self.mode {
            MotionMode::Absolute => self.out.copy_from_slice(driving),
            MotionMode::Relative => {
                if self.reference.is_none() {
                    self.recalibrate(driving);
                }
                let reference = self.reference.as_deref().unwrap_or(driving);
                for ((o, p), (d, r)) in self.out.iter_mut().zip(&self.portrait).zip(driving.iter().zip(reference)) {
                    let delta = self.to_portrait.linear([d[0] - r[0], d[1] - r[1]]);
                    *o = [p[0] + delta[0], p[1] + delta[1]];
                }
            }
        }
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic 478-point "face": stable points on a fixed layout, the rest on a ring; `width` stretches it.
    fn face(width: f32, mouth_open: f32) -> Vec<[f32; 2]> {
        let mut pts: Vec<[f32; 2]> = (0..478)
            .map(|i| {
                let a = i as f32 * 0.37;
                [128.0 + width * 60.0 * a.cos(), 128.0 + 70.0 * a.sin()]
            })
            .collect();
        pts[14] = [128.0, 170.0 + mouth_open];
        pts
    }

    fn close(a: [f32; 2], b: [f32; 2], tol: f32) -> bool {
        (a[0] - b[0]).abs() <= tol && (a[1] - b[1]).abs() <= tol
    }

    #[test]
    fn fit_recovers_a_similarity() {
        let src: Vec<[f32; 2]> = (0..10).map(|i| [i as f32 * 3.0, (i * i) as f32 * 0.5]).collect();
        let truth = Similarity { scale: 1.7, angle: 0.3, translation: [5.0, -2.0] };
        let dst: Vec<[f32; 2]> = src.iter().map(|p| truth.apply(*p)).collect();
        let fit = Similarity::fit(&src, &dst).unwrap();
        assert!((fit.scale - 1.7).abs() < 1e-4 && (fit.angle - 0.3).abs() < 1e-4);
        assert!(close(fit.translation, [5.0, -2.0], 1e-3));
        assert!(Similarity::fit(&[[1.0, 1.0], [1.0, 1.0]], &[[0.0, 0.0], [2.0, 2.0]]).is_none());
    }

    #[test]
    fn relative_mode_keeps_the_portrait_shape_and_moves_it_by_the_drivers_change() {
        let portrait = face(1.0, 0.0);
        // The driver has a wider face than the portrait.
        let neutral = face(1.4, 0.0);
        let mut m = MotionTransfer::new(portrait.clone(), MotionMode::Relative);
        m.recalibrate(&neutral);
        // Driving == reference → the portrait itself, not the driver's shape.
        let out = m.transfer(&neutral).unwrap().to_vec();
        assert!(out.iter().zip(&portrait).all(|(o, p)| close(*o, *p, 1e-4)));
        // The driver opens the mouth by 20 px; the portrait's mouth opens by a similar, scaled amount.
        let open = face(1.4, 20.0);
        let out = m.transfer(&open).unwrap().to_vec();
        let moved = out[14][1] - portrait[14][1];
        assert!(moved > 10.0 && moved < 25.0, "mouth moved {moved}");
        assert!(close(out[33], portrait[33], 1e-4), "unmoved points stay");
        // A head translation of the driver translates the portrait (scaled).
        let shifted: Vec<[f32; 2]> = neutral.iter().map(|p| [p[0] + 10.0, p[1]]).collect();
        let out = m.transfer(&shifted).unwrap().to_vec();
        assert!(out.iter().zip(&portrait).all(|(o, p)| (o[0] - p[0] - out[0][0] + portrait[0][0]).abs() < 1e-3));
        assert!(out[0][0] > portrait[0][0] + 5.0);
    }

    #[test]
    fn absolute_mode_and_bad_counts() {
        let mut m = MotionTransfer::new(face(1.0, 0.0), MotionMode::Absolute);
        let d = face(1.3, 5.0);
        assert_eq!(m.transfer(&d).unwrap(), d.as_slice());
        assert!(matches!(m.transfer(&d[..10]), Err(MotionError::LandmarkCount { .. })));
        // Relative without a reference takes the first frame as neutral.
        let mut m = MotionTransfer::new(face(1.0, 0.0), MotionMode::Relative);
        assert_eq!(m.transfer(&d).unwrap(), face(1.0, 0.0).as_slice());
    }
}
