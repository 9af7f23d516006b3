//! Landmark topologies: which points are joined by the coloured lines the generator sees, in which colour, and which
//! points play the 58 role keypoints. Defined once here; the rasteriser, the masks and the trainers read them.
//!
//! Owns two topologies. `Topology::mediapipe()` is built on MediaPipe's 478-point mesh. Its edges are the mesh's
//! feature contours — lips (outer and inner), eyes, eyebrows, irises, face oval and nose — and deliberately not the
//! tessellation: the generator reads the *shape* of expression and pose from these lines (the official 669-point
//! topology is also contours, ~616 edges), while the ~2,500 tessellation edges would fill the face with a colour
//! texture that carries identity and leaks the driver's face shape. Irises are included because gaze is driven by
//! them. `Topology::official(tsv)` is the official 669-point topology (connectivity file given by the user) with the
//! official 58 keypoint indices and its palette reproduced bit for bit (Python's `random.seed(0); random.shuffle`).
//! Receives nothing at run time but an optional connectivity path; emits `Topology` values.
//!
//! Role keypoints (positions in the 58, as the official data uses them): 1–4 left eye box (left, right, top, bottom),
//! 5–8 right eye box, 14/15 mouth left/right, 56/57 mouth top/bottom, 29–32 and 33–36 the gaze points of the left
//! and right eye. "Left" is the image's left here. For MediaPipe the gaze points are the four iris edge points of
//! each eye; the other positions spread over the brows, nose and face oval.

use std::path::Path;

/// Number of role keypoints fed to the generator.
pub const NUM_KEYPOINTS: usize = 58;
/// Role positions within the 58 keypoints: the image-left eye box (left, right, top, bottom).
pub const LEFT_EYE_BOX: [usize; 4] = [1, 2, 3, 4];
/// The image-right eye box (left, right, top, bottom).
pub const RIGHT_EYE_BOX: [usize; 4] = [5, 6, 7, 8];
/// The mouth's left corner.
pub const MOUTH_LEFT: usize = 14;
/// The mouth's right corner.
pub const MOUTH_RIGHT: usize = 15;
/// The top of the mouth.
pub const MOUTH_TOP: usize = 56;
/// The bottom of the mouth.
pub const MOUTH_BOTTOM: usize = 57;
/// The gaze points: four of the image-left eye (29–32), then four of the image-right eye (33–36).
pub const GAZE: std::ops::Range<usize> = 29..37;

/// An edge between two landmark indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge(pub usize, pub usize);

/// An RGB colour of a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb8(pub [u8; 3]);

/// Edges, their colours, and the role keypoints, for one landmark layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    /// Short identifier (`mediapipe` or `official`), used in messages.
    pub name: &'static str,
    /// Landmarks a set must have for this topology.
    pub num_points: usize,
    /// The lines drawn, as pairs of landmark indices.
    pub edges: Vec<Edge>,
    /// One colour per edge, same order.
    pub palette: Vec<Rgb8>,
    /// Landmark index of each of the 58 role keypoints.
    pub keypoints: [usize; NUM_KEYPOINTS],
}

/// Why the official connectivity file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The connectivity file could not be read.
    #[error("cannot read connectivity file {path}: {source}")]
    Io {
        /// The connectivity file.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A line of the connectivity file is not a pair of indices below 669, or the file has no edges.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The connectivity file.
        path: std::path::PathBuf,
        /// 1-based line number; 0 when the problem concerns the whole file.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// MediaPipe mesh size with the refined irises.
pub const MEDIAPIPE_POINTS: usize = 478;

/// MediaPipe contours as polylines (consecutive indices are joined). Facts of the mesh layout
/// (`face_mesh_connections.py` of MediaPipe 0.10.14); grouped and ordered here by feature.
const MEDIAPIPE_POLYLINES: [&[usize]; 17] = [
    // Lips: outer lower, outer upper, inner lower, inner upper.
    &[61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291],
    &[61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291],
    &[78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308],
    &[78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308],
    // Image-left eye (MediaPipe's "right eye"): lower, upper.
    &[33, 7, 163, 144, 145, 153, 154, 155, 133],
    &[33, 246, 161, 160, 159, 158, 157, 173, 133],
    // Image-right eye: lower, upper.
    &[263, 249, 390, 373, 374, 380, 381, 382, 362],
    &[263, 466, 388, 387, 386, 385, 384, 398, 362],
    // Eyebrows (lower and upper edge of each).
    &[46, 53, 52, 65, 55],
    &[70, 63, 105, 66, 107],
    &[276, 283, 282, 295, 285],
    &[300, 293, 334, 296, 336],
    // Irises (closed).
    &[469, 470, 471, 472, 469],
    &[474, 475, 476, 477, 474],
    // Face oval (closed).
    &[
        10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149,
        150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109, 10,
    ],
    // Nose: bridge to tip, and the base around the nostrils.
    &[168, 6, 197, 195, 5, 4, 1, 19, 94, 2],
    &[98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115, 48, 64, 98],
];

/// MediaPipe landmark of each role keypoint position.
const MEDIAPIPE_KEYPOINTS: [usize; NUM_KEYPOINTS] = [
    1, // 0: nose tip
    33, 133, 159, 145, // 1–4: image-left eye box (left, right, top, bottom)
    362, 263, 386, 374, // 5–8: image-right eye box
    70, 105, 107, 336, 334, // 9–13: brows
    61, 291, // 14, 15: mouth corners
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, // 16–28: face oval, top and right side
    470, 471, 472, 469, // 29–32: image-left iris: top, outer, bottom, inner (the official rings' order)
    477, 474, 475, 476, // 33–36: image-right iris: bottom, outer, top, inner
    365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, // 37–54: oval
    6,   // 55: nose bridge
    0,   // 56: mouth top (upper lip)
    17,  // 57: mouth bottom (lower lip)
];

/// The official `ldmk_idx` (`meta_portrait_256_eval.yaml`): the 58 keypoints within the 669-point topology.
const OFFICIAL_KEYPOINTS: [usize; NUM_KEYPOINTS] = [
    521, 505, 338, 398, 347, 35, 191, 30, 32, 207, 630, 629, 319, 4, 541, 61, 637, 660, 638, 587, 273, 590, 269, 432,
    118, 327, 12, 373, 58, 619, 466, 469, 464, 308, 152, 305, 150, 411, 635, 634, 564, 250, 443, 129, 364, 322, 49, 7,
    361, 105, 434, 120, 500, 186, 575, 261, 636, 74,
];
/// Points of the official dense topology.
pub const OFFICIAL_POINTS: usize = 669;

impl Topology {
    /// Contours of MediaPipe's 478-point mesh (see the module documentation for the choice).
    pub fn mediapipe() -> Self {
        let edges: Vec<Edge> =
            MEDIAPIPE_POLYLINES.iter().flat_map(|line| line.windows(2).map(|w| Edge(w[0], w[1]))).collect();
        let palette = official_palette(edges.len());
        Self { name: "mediapipe", num_points: MEDIAPIPE_POINTS, edges, palette, keypoints: MEDIAPIPE_KEYPOINTS }
    }

    /// The official 669-point topology from its connectivity file (`dense_669_connectivity.tsv`: one
    /// `from to` pair per line).
    pub fn official(connectivity: &Path) -> Result<Self, TopologyError> {
        let text = std::fs::read_to_string(connectivity)
            .map_err(|source| TopologyError::Io { path: connectivity.to_path_buf(), source })?;
        let parse_err =
            |line: usize, reason: String| TopologyError::Parse { path: connectivity.to_path_buf(), line, reason };
        let mut edges = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [a, b] = fields[..] else {
                return Err(parse_err(n + 1, format!("expected two indices, got {line:?}")));
            };
            let index = |s: &str| -> Result<usize, TopologyError> {
                let v: usize = s.parse().map_err(|_| parse_err(n + 1, format!("`{s}` is not an index")))?;
                if v >= OFFICIAL_POINTS {
                    return Err(parse_err(n + 1, format!("index {v} is outside 0..{OFFICIAL_POINTS}")));
                }
                Ok(v)
            };
            edges.push(Edge(index(a)?, index(b)?));
        }
        if edges.is_empty() {
            return Err(parse_err(0, "no edges".into()));
        }
        let palette = official_palette(edges.len());
        Ok(Self { name: "official", num_points: OFFICIAL_POINTS, edges, palette, keypoints: OFFICIAL_KEYPOINTS })
    }

    /// The 58 role keypoints of `landmarks` (normalised to [0, 1]) as `2·p − 1` in [−1, 1].
    pub fn keypoints58(&self, landmarks01: &[[f32; 2]]) -> Option<[[f32; 2]; NUM_KEYPOINTS]> {
        let mut out = [[0.0; 2]; NUM_KEYPOINTS];
        for (o, &i) in out.iter_mut().zip(&self.keypoints) {
            let p = landmarks01.get(i)?;
            *o = [2.0 * p[0] - 1.0, 2.0 * p[1] - 1.0];
        }
        Some(out)
    }
}

/// The official palette for `edges` edges: the colour cube with step `int(255 / edges^(1/3))`, its last `edges`
/// entries, shuffled by Python's `random.seed(0); random.shuffle`.
pub fn official_palette(edges: usize) -> Vec<Rgb8> {
    let cube_root = (edges as f64).powf(1.0 / 3.0);
    let step = ((255.0 / cube_root) as usize).max(1);
    let mut colours = Vec::new();
    for r in (0..255).step_by(step) {
        for g in (0..255).step_by(step) {
            for b in (0..255).step_by(step) {
                colours.push(Rgb8([r as u8, g as u8, b as u8]));
            }
        }
    }
    let mut colours = colours.split_off(colours.len().saturating_sub(edges));
    PyRandom::seed_u32(0).shuffle(&mut colours);
    // Fewer colours than edges (tiny topologies): repeat, as indexing the Python list would fail instead.
    let n = colours.len().max(1);
    (0..edges).map(|i| colours.get(i % n).copied().unwrap_or(Rgb8([255, 255, 255]))).collect()
}

/// CPython's `random.Random`: MT19937 seeded with `init_by_array`, `getrandbits`, `_randbelow` and `shuffle`, so
/// shuffles made in the reference are reproduced exactly.
pub struct PyRandom {
    state: [u32; 624],
    index: usize,
}

impl PyRandom {
    /// `random.seed(n)` for a non-negative integer below 2³².
    pub fn seed_u32(seed: u32) -> Self {
        let mut rng = Self { state: [0; 624], index: 624 };
        rng.init_by_array(&[seed]);
        rng
    }

    fn init_genrand(&mut self, s: u32) {
        self.state[0] = s;
        for i in 1..624 {
            let prev = self.state[i - 1];
            self.state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        self.index = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        let n = 624;
        for _ in 0..n.max(key.len()) {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= n {
                self.state[0] = self.state[n - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..n - 1 {
            let prev = self.state[i - 1];
            self.state[i] = (self.state[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= n {
                self.state[0] = self.state[n - 1];
                i = 1;
            }
        }
        self.state[0] = 0x8000_0000;
        self.index = 624;
    }

    fn next_u32(&mut self) -> u32 {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        if self.index >= 624 {
            for k in 0..624 {
                let y = (self.state[k] & UPPER) | (self.state[(k + 1) % 624] & LOWER);
                let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
                self.state[k] = self.state[(k + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for 1 ≤ k ≤ 32.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.next_u32() >> (32 - k)
    }

    /// `_randbelow(n)` (rejection sampling on `n.bit_length()` bits), n ≥ 1 and below 2³².
    pub fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// `random.shuffle(x)`.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.randbelow(i as u32 + 1) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_random_matches_cpython() {
        // `random.seed(0); [random.getrandbits(32) for _ in range(3)]` in CPython.
        let mut r = PyRandom::seed_u32(0);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [3_626_764_237, 1_654_615_998, 3_255_389_356]);
        // `random.seed(0); x = list(range(10)); random.shuffle(x); x` in CPython.
        let mut x: Vec<u32> = (0..10).collect();
        PyRandom::seed_u32(0).shuffle(&mut x);
        assert_eq!(x, [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]);
    }

    #[test]
    fn mediapipe_topology_is_well_formed() {
        let t = Topology::mediapipe();
        assert_eq!(t.edges.len(), 157);
        assert_eq!(t.palette.len(), t.edges.len());
        assert!(t.edges.iter().all(|Edge(a, b)| *a < MEDIAPIPE_POINTS && *b < MEDIAPIPE_POINTS && a != b));
        assert!(t.keypoints.iter().all(|k| *k < MEDIAPIPE_POINTS));
        let mut distinct = t.keypoints.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), NUM_KEYPOINTS, "every role keypoint is a different landmark");
        // Gaze points are the iris points; eye boxes use eye contour points.
        assert!(t.keypoints[GAZE].iter().all(|k| (468..478).contains(k)));
        let mut pts = vec![[0.5f32, 0.5]; MEDIAPIPE_POINTS];
        pts[t.keypoints[MOUTH_LEFT]] = [0.0, 1.0];
        let kp = t.keypoints58(&pts).unwrap();
        assert_eq!(kp[MOUTH_LEFT], [-1.0, 1.0]);
        assert_eq!(kp[0], [0.0, 0.0]);
        assert!(t.keypoints58(&pts[..468]).is_none(), "irises are required");
    }

    #[test]
    fn bad_connectivity_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("mp-topology-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (text, needle) in [("1 2\n3\n", ":2:"), ("1 x\n", "not an index"), ("1 669\n", "outside"), ("", "no edges")]
        {
            let path = dir.join("c.tsv");
            std::fs::write(&path, text).unwrap();
            let msg = Topology::official(&path).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text:?}: {msg}");
        }
        assert!(Topology::official(&dir.join("missing.tsv")).unwrap_err().to_string().contains("missing.tsv"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
