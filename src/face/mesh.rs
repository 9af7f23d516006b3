//! Dense face landmarks: MediaPipe's 468-point mesh and the 478-point attention mesh on ONNX Runtime.
//!
//! Owns the two landmark sessions and their decoding. Each receives an `RgbImage` and a `Roi`, samples the ROI into a
//! 192² crop (edge convention, replicated border, values in [0, 1]), runs the model and back-projects the crop-pixel
//! outputs into image pixels (z scaled like x). The attention model's extra outputs (lips 80, eyes 71 + 71, irises
//! 5 + 5, all x/y only) overwrite mesh points and append the ten iris points following MediaPipe's
//! `tensors_to_face_landmarks_with_attention.pbtxt` (v0.10.14): lips and eyes keep the mesh z, iris z is the mean z
//! of its eye's 16 contour points. Emits `FaceLandmarks` with the face-presence score.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;

use super::crop::{Border, RANGE_UNIT, crop_tensor};
use super::geometry::sigmoid_clipped;
use super::roi::Roi;
use super::{FaceError, load_session};
use crate::runtime::ort::{OrtSession, SessionOptions};
use crate::tensor::HostTensor;

/// Side of the landmark models' square input.
pub const MESH_INPUT_SIZE: usize = 192;
/// Points of the plain face mesh.
pub const NUM_MESH_POINTS: usize = 468;
/// Points of the refined mesh: the 468 plus five per iris.
pub const NUM_REFINED_POINTS: usize = 478;
/// Points per iris (centre first, then right, top, left, bottom edges).
pub const NUM_IRIS_POINTS: usize = 5;
/// Default presence threshold on the sigmoid of the face-flag logit.
pub const MIN_PRESENCE: f32 = 0.5;
/// Presence logits are clamped like detector logits before the sigmoid.
const PRESENCE_CLIP: f32 = 100.0;
const XYZ: usize = 3;
const XY: usize = 2;
/// Output names of the converted 468-point model (looked up first; sizes decide otherwise).
const MESH_OUTPUT: &str = "conv2d_21";
const PRESENCE_OUTPUT: &str = "conv2d_31";

/// Attention-model lips: model point i overwrites mesh point `LIPS[i]` (x, y only).
pub const LIPS: [usize; 80] = [
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409, 78, 95, 88, 178, 87, 14,
    317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415, 76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306,
    184, 74, 73, 72, 11, 302, 303, 304, 408, 62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292, 183, 42, 41, 38, 12,
    268, 271, 272, 407,
];
/// Attention-model "left eye" (MediaPipe's naming; the subject's right eye, image left when upright).
pub const LEFT_EYE: [usize; 71] = [
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173, 130, 25, 110, 24, 23, 22, 26, 112,
    243, 247, 30, 29, 27, 28, 56, 190, 226, 31, 228, 229, 230, 231, 232, 233, 244, 113, 225, 224, 223, 222, 221, 189,
    35, 124, 46, 53, 52, 65, 143, 111, 117, 118, 119, 120, 121, 128, 245, 156, 70, 63, 105, 66, 107, 55, 193,
];
/// Attention-model "right eye".
pub const RIGHT_EYE: [usize; 71] = [
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 359, 255, 339, 254, 253, 252, 256,
    341, 463, 467, 260, 259, 257, 258, 286, 414, 446, 261, 448, 449, 450, 451, 452, 453, 464, 342, 445, 444, 443, 442,
    441, 413, 265, 353, 276, 283, 282, 295, 372, 340, 346, 347, 348, 349, 350, 357, 465, 383, 300, 293, 334, 296, 336,
    285, 417,
];
/// The first 16 eye points (lower and upper contour) give their iris its z.
pub const EYE_CONTOUR_LEN: usize = 16;
/// First refined index of the left iris (468..473).
pub const LEFT_IRIS_START: usize = NUM_MESH_POINTS;
/// First refined index of the right iris (473..478).
pub const RIGHT_IRIS_START: usize = NUM_MESH_POINTS + NUM_IRIS_POINTS;

/// Landmarks of one face, in image pixels (z scaled like x, origin near the face centre).
#[derive(Clone, Debug, PartialEq)]
pub struct FaceLandmarks {
    /// 468 or 478 points, MediaPipe's order.
    pub points: Vec<[f32; 3]>,
    /// Sigmoid of the model's face-flag logit.
    pub presence: f32,
    /// The ROI the model looked at.
    pub roi: Roi,
}

impl FaceLandmarks {
    /// Whether the model believes a face is in the ROI.
    pub fn is_present(&self, min_presence: f32) -> bool {
        self.presence >= min_presence
    }
}

/// Back-projects `points` (x, y, z in crop pixels) into image pixels.
pub fn back_project(crop_points: &[[f32; 3]], roi: &Roi) -> Vec<[f32; 3]> {
    crop_points.iter().map(|&p| roi.project(p, MESH_INPUT_SIZE as f32)).collect()
}

fn triples(data: &[f32]) -> Vec<[f32; 3]> {
    data.chunks_exact(XYZ).map(|c| [c[0], c[1], c[2]]).collect()
}

/// x, y of `count` points stored with 2 (x, y) or 3 (x, y, z) values each.
fn xy_points(tensor: &HostTensor, count: usize) -> Vec<[f32; 2]> {
    let stride = tensor.len() / count.max(1);
    tensor.data().chunks_exact(stride.max(XY)).map(|c| [c[0], c[1]]).collect()
}

fn output_error(model: &str, reason: String) -> FaceError {
    FaceError::ModelOutput { model: model.into(), reason }
}

fn single_value(tensor: Option<&HostTensor>, model: &str) -> Result<f32, FaceError> {
    tensor
        .and_then(|t| t.data().first().copied())
        .ok_or_else(|| output_error(model, "no face-presence output (one value)".into()))
}

/// The input name of a landmark session.
fn first_input(session: &OrtSession, path: &Path) -> Result<String, FaceError> {
    session
        .input_names()
        .into_iter()
        .next()
        .ok_or_else(|| output_error(&path.display().to_string(), "the model has no input".into()))
}

/// A mesh network's session: both mesh models run on the same crop of a region of interest.
struct RoiSession {
    session: OrtSession,
    input: String,
    calls: u64,
    /// The model's name in errors.
    model: &'static str,
}

impl RoiSession {
    fn from_file(path: &Path, options: &SessionOptions, model: &'static str) -> Result<Self, FaceError> {
        let session = load_session(path, options)?;
        let input = first_input(&session, path)?;
        Ok(Self { session, input, calls: 0, model })
    }

    /// The raw outputs on the `MESH_INPUT_SIZE`² crop of `roi` (edges replicated, values in [0, 1]).
    fn run(&mut self, image: &RgbImage, roi: &Roi) -> Result<BTreeMap<String, HostTensor>, FaceError> {
        let input = crop_tensor(image, roi, MESH_INPUT_SIZE, Border::Replicate, RANGE_UNIT);
        self.calls += 1;
        self.session
            .run(&[(self.input.as_str(), &input)])
            .map_err(|cause| FaceError::Runtime { model: self.model.into(), cause })
    }
}

/// MediaPipe's 468-point face mesh.
pub struct MeshModel {
    session: RoiSession,
}

const MESH_MODEL: &str = "face mesh";

impl MeshModel {
    /// Loads and checksums the model file and opens its ONNX Runtime session.
    pub fn from_file(path: &Path, options: &SessionOptions) -> Result<Self, FaceError> {
        Ok(Self { session: RoiSession::from_file(path, options, MESH_MODEL)? })
    }

    /// How many times the model has run.
    pub fn calls(&self) -> u64 {
        self.session.calls
    }

    /// The 468 landmarks in `roi`, in image pixels.
    pub fn infer(&mut self, image: &RgbImage, roi: &Roi) -> Result<FaceLandmarks, FaceError> {
        let outputs = self.session.run(image, roi)?;
        let by_len = |len: usize| outputs.values().find(|t| t.len() == len);
        let mesh = outputs
            .get(MESH_OUTPUT)
            .or_else(|| by_len(NUM_MESH_POINTS * XYZ))
            .filter(|t| t.len() == NUM_MESH_POINTS * XYZ)
            .ok_or_else(|| output_error(MESH_MODEL, format!("no {}-value mesh output in {outputs:?}", 1404)))?;
        let presence = single_value(outputs.get(PRESENCE_OUTPUT).or_else(|| by_len(1)), MESH_MODEL)?;
        Ok(FaceLandmarks {
            points: back_project(&triples(mesh.data()), roi),
            presence: sigmoid_clipped(presence, PRESENCE_CLIP),
            roi: *roi,
        })
    }
}

/// The raw outputs of the attention model, in crop pixels, sorted into their roles.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOutputs {
    /// The 468 mesh points `[x, y, z]`, z scaled like x.
    pub mesh: Vec<[f32; 3]>,
    /// 80 lip points, in the order of [`LIPS`].
    pub lips: Vec<[f32; 2]>,
    /// 71 points of MediaPipe's "left eye", in the order of [`LEFT_EYE`].
    pub left_eye: Vec<[f32; 2]>,
    /// 71 points of MediaPipe's "right eye", in the order of [`RIGHT_EYE`].
    pub right_eye: Vec<[f32; 2]>,
    /// The five points of the iris inside `left_eye` (centre first).
    pub left_iris: Vec<[f32; 2]>,
    /// The five points of the iris inside `right_eye` (centre first).
    pub right_iris: Vec<[f32; 2]>,
    /// Face presence probability (the converted model applies the sigmoid itself).
    pub presence: f32,
}

const ATTENTION_MODEL: &str = "attention face mesh";

/// Squared distance between refinement points and the mesh points they would overwrite.
fn table_distance(points: &[[f32; 2]], table: &[usize], mesh: &[[f32; 3]]) -> f32 {
    points
        .iter()
        .zip(table)
        .filter_map(|(p, &i)| mesh.get(i).map(|m| (p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)))
        .sum()
}

/// A model probability, clamped into [0, 1]; NaN counts as absent.
fn probability(value: f32) -> f32 {
    if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) }
}

fn centroid(points: &[[f32; 2]]) -> [f32; 2] {
    let n = points.len().max(1) as f32;
    let (x, y) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    [x / n, y / n]
}

/// Output names of the converted attention model (TF.js graph → ONNX).
const ATTENTION_MESH: &str = "output_mesh_identity";
const ATTENTION_LIPS: &str = "output_lips";
const ATTENTION_LEFT_EYE: &str = "output_left_eye";
const ATTENTION_RIGHT_EYE: &str = "output_right_eye";
const ATTENTION_LEFT_IRIS: &str = "output_left_iris";
const ATTENTION_RIGHT_IRIS: &str = "output_right_iris";
/// Face flag of the attention model: the TF.js graph ends in a sigmoid, so this is already a probability.
const ATTENTION_PRESENCE: &str = "output_faceflag";

impl AttentionOutputs {
    /// Sorts the model's outputs into their roles: by the converted model's output names when they are all there
    /// with the right sizes, otherwise by size, telling the two eyes (and the two irises) apart by which assignment
    /// lies closer to the mesh points they refine.
    pub fn from_outputs(outputs: &BTreeMap<String, HostTensor>) -> Result<Self, FaceError> {
        match Self::by_name(outputs) {
            Some(parsed) => Ok(parsed),
            None => Self::by_size(outputs),
        }
    }

    fn by_name(outputs: &BTreeMap<String, HostTensor>) -> Option<Self> {
        let points = |name: &str, count: usize| {
            outputs.get(name).filter(|t| t.len() == count * XY || t.len() == count * XYZ).map(|t| xy_points(t, count))
        };
        let mesh = outputs.get(ATTENTION_MESH).filter(|t| t.len() == NUM_MESH_POINTS * XYZ)?;
        let presence = outputs.get(ATTENTION_PRESENCE).filter(|t| t.len() == 1)?;
        Some(Self {
            mesh: triples(mesh.data()),
            lips: points(ATTENTION_LIPS, LIPS.len())?,
            left_eye: points(ATTENTION_LEFT_EYE, LEFT_EYE.len())?,
            right_eye: points(ATTENTION_RIGHT_EYE, RIGHT_EYE.len())?,
            left_iris: points(ATTENTION_LEFT_IRIS, NUM_IRIS_POINTS)?,
            right_iris: points(ATTENTION_RIGHT_IRIS, NUM_IRIS_POINTS)?,
            presence: probability(presence.data()[0]),
        })
    }

    fn by_size(outputs: &BTreeMap<String, HostTensor>) -> Result<Self, FaceError> {
        let of_len = |len: usize| outputs.values().filter(move |t| t.len() == len);
        // Refinement outputs carry x, y (the TFLite model) or x, y, z (some conversions) per point.
        let of_points =
            |count: usize| outputs.values().filter(move |t| t.len() == count * XY || t.len() == count * XYZ);
        let mesh = of_len(NUM_MESH_POINTS * XYZ).next();
        let lips = of_points(LIPS.len()).next();
        let eyes: Vec<&HostTensor> = of_points(LEFT_EYE.len()).collect();
        let irises: Vec<&HostTensor> = of_points(NUM_IRIS_POINTS).collect();
        let presence = of_len(1).next();
        let (Some(mesh), Some(lips), [eye_a, eye_b], [iris_a, iris_b], Some(presence)) =
            (mesh, lips, eyes.as_slice(), irises.as_slice(), presence)
        else {
            return Err(output_error(
                ATTENTION_MODEL,
                format!(
                    "expected mesh (1404), lips (80 points), eyes (2 × 71), irises (2 × 5) and presence (1), got {outputs:?}"
                ),
            ));
        };
        let mesh = triples(mesh.data());
        let (eye_a, eye_b) = (xy_points(eye_a, LEFT_EYE.len()), xy_points(eye_b, RIGHT_EYE.len()));
        let straight = table_distance(&eye_a, &LEFT_EYE, &mesh) + table_distance(&eye_b, &RIGHT_EYE, &mesh);
        let swapped = table_distance(&eye_b, &LEFT_EYE, &mesh) + table_distance(&eye_a, &RIGHT_EYE, &mesh);
        let (left_eye, right_eye) = if straight <= swapped { (eye_a, eye_b) } else { (eye_b, eye_a) };
        // An iris belongs to the eye whose contour centre is nearer to its centre point.
        let (iris_a, iris_b) = (xy_points(iris_a, NUM_IRIS_POINTS), xy_points(iris_b, NUM_IRIS_POINTS));
        let left_centre = centroid(&left_eye[..EYE_CONTOUR_LEN]);
        let dist = |iris: &[[f32; 2]]| (iris[0][0] - left_centre[0]).powi(2) + (iris[0][1] - left_centre[1]).powi(2);
        let (left_iris, right_iris) = if dist(&iris_a) <= dist(&iris_b) { (iris_a, iris_b) } else { (iris_b, iris_a) };
        Ok(Self {
            mesh,
            lips: xy_points(lips, LIPS.len()),
            left_eye,
            right_eye,
            left_iris,
            right_iris,
            presence: probability(presence.data()[0]),
        })
    }

    /// The 478 refined points in crop pixels.
    pub fn refine(&self) -> Vec<[f32; 3]> {
        let mut points = self.mesh.clone();
        points.resize(NUM_REFINED_POINTS, [0.0; 3]);
        for (values, table) in
            [(&self.lips, &LIPS[..]), (&self.left_eye, &LEFT_EYE[..]), (&self.right_eye, &RIGHT_EYE[..])]
        {
            for (p, &i) in values.iter().zip(table) {
                points[i][0] = p[0];
                points[i][1] = p[1];
            }
        }
        for (iris, start, eye) in
            [(&self.left_iris, LEFT_IRIS_START, &LEFT_EYE), (&self.right_iris, RIGHT_IRIS_START, &RIGHT_EYE)]
        {
            let z = eye[..EYE_CONTOUR_LEN].iter().map(|&i| points[i][2]).sum::<f32>() / EYE_CONTOUR_LEN as f32;
            for (k, p) in iris.iter().enumerate() {
                points[start + k] = [p[0], p[1], z];
            }
        }
        points
    }
}

/// MediaPipe's 478-point attention mesh (refined lips, eyes and irises).
pub struct AttentionMeshModel {
    session: RoiSession,
}

impl AttentionMeshModel {
    /// Loads and checksums the model file and opens its ONNX Runtime session.
    pub fn from_file(path: &Path, options: &SessionOptions) -> Result<Self, FaceError> {
        Ok(Self { session: RoiSession::from_file(path, options, ATTENTION_MODEL)? })
    }

    /// How many times the model has run.
    pub fn calls(&self) -> u64 {
        self.session.calls
    }

    /// The 478 refined landmarks in `roi`, in image pixels.
    pub fn infer(&mut self, image: &RgbImage, roi: &Roi) -> Result<FaceLandmarks, FaceError> {
        let outputs = self.session.run(image, roi)?;
        let parsed = AttentionOutputs::from_outputs(&outputs)?;
        Ok(FaceLandmarks { points: back_project(&parsed.refine(), roi), presence: parsed.presence, roi: *roi })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::geometry::Point2;

    #[test]
    fn tables_are_disjoint_and_in_range() {
        let mut seen = std::collections::BTreeSet::new();
        for &i in LIPS.iter().chain(&LEFT_EYE).chain(&RIGHT_EYE) {
            assert!(i < NUM_MESH_POINTS);
            assert!(seen.insert(i), "index {i} refined twice");
        }
    }

    fn tensor(values: Vec<f32>) -> HostTensor {
        HostTensor::new(vec![1, values.len()], values).unwrap()
    }

    /// A fake mesh where point i sits at (i, 2i, 3) and the refinement outputs sit near their targets.
    fn fake_outputs(swap_eyes: bool, with_z: bool) -> BTreeMap<String, HostTensor> {
        let mesh: Vec<f32> = (0..NUM_MESH_POINTS).flat_map(|i| [i as f32, 2.0 * i as f32, 3.0]).collect();
        let near = |table: &[usize], d: f32| -> Vec<f32> {
            let point = |i: usize| [i as f32 + d, 2.0 * i as f32 + d, -9.0];
            table.iter().flat_map(|&i| point(i).into_iter().take(if with_z { 3 } else { 2 })).collect()
        };
        let (left, right) = (near(&LEFT_EYE, 0.5), near(&RIGHT_EYE, 0.5));
        let iris = |table: &[usize]| -> Vec<f32> {
            let c = centroid(&table[..EYE_CONTOUR_LEN].iter().map(|&i| [i as f32, 2.0 * i as f32]).collect::<Vec<_>>());
            let point = |k: usize| [c[0] + k as f32, c[1], -9.0];
            (0..NUM_IRIS_POINTS).flat_map(|k| point(k).into_iter().take(if with_z { 3 } else { 2 })).collect()
        };
        let mut out = BTreeMap::new();
        out.insert("a_mesh".to_owned(), tensor(mesh));
        out.insert("b_lips".to_owned(), tensor(near(&LIPS, 0.25)));
        let (first, second) = if swap_eyes { (right, left) } else { (left, right) };
        out.insert("c_eye".to_owned(), tensor(first));
        out.insert("d_eye".to_owned(), tensor(second));
        out.insert("e_iris".to_owned(), tensor(iris(&RIGHT_EYE)));
        out.insert("f_iris".to_owned(), tensor(iris(&LEFT_EYE)));
        out.insert("g_flag".to_owned(), tensor(vec![0.75]));
        out
    }

    #[test]
    fn refinement_overwrites_xy_and_averages_iris_z() {
        for (swap, with_z) in [(false, false), (true, false), (false, true), (true, true)] {
            let parsed = AttentionOutputs::from_outputs(&fake_outputs(swap, with_z)).unwrap();
            let refined = parsed.refine();
            assert_eq!(refined.len(), NUM_REFINED_POINTS);
            assert_eq!(refined[LIPS[0]], [LIPS[0] as f32 + 0.25, 2.0 * LIPS[0] as f32 + 0.25, 3.0]);
            assert_eq!(refined[LEFT_EYE[3]], [LEFT_EYE[3] as f32 + 0.5, 2.0 * LEFT_EYE[3] as f32 + 0.5, 3.0]);
            assert_eq!(refined[RIGHT_EYE[3]][0], RIGHT_EYE[3] as f32 + 0.5);
            assert_eq!(refined[1], [1.0, 2.0, 3.0], "untouched mesh point");
            // Irises: the left one (near the 33… contour) lands at 468, with the eye contour's mean z.
            let left_c = centroid(&LEFT_EYE[..16].iter().map(|&i| [i as f32, 2.0 * i as f32]).collect::<Vec<_>>());
            assert_eq!(refined[LEFT_IRIS_START][0], left_c[0]);
            assert_eq!(refined[LEFT_IRIS_START + 2][0], left_c[0] + 2.0);
            assert!((refined[RIGHT_IRIS_START][2] - 3.0).abs() < 1e-6);
            assert_eq!(parsed.presence, 0.75);
        }
    }

    #[test]
    fn converted_model_names_win_over_geometry() {
        // Named outputs are taken as named, even when the geometry would pair them the other way.
        let unnamed = fake_outputs(true, false);
        let rename = [
            ("a_mesh", ATTENTION_MESH),
            ("b_lips", ATTENTION_LIPS),
            ("c_eye", ATTENTION_LEFT_EYE),
            ("d_eye", ATTENTION_RIGHT_EYE),
            ("e_iris", ATTENTION_RIGHT_IRIS),
            ("f_iris", ATTENTION_LEFT_IRIS),
            ("g_flag", ATTENTION_PRESENCE),
        ];
        let named: BTreeMap<String, HostTensor> =
            rename.iter().map(|(from, to)| ((*to).to_owned(), unnamed[*from].clone())).collect();
        let by_name = AttentionOutputs::from_outputs(&named).unwrap();
        let by_size = AttentionOutputs::from_outputs(&unnamed).unwrap();
        assert_eq!(by_name.left_eye, by_size.right_eye, "c_eye holds the right-eye values in this fake");
        assert_eq!(by_name.left_iris, by_size.left_iris);
        assert_eq!(probability(f32::NAN), 0.0);
        assert_eq!(probability(3.0), 1.0);
    }

    #[test]
    fn missing_outputs_are_an_error() {
        let mut outputs = fake_outputs(false, false);
        outputs.remove("d_eye");
        assert!(matches!(AttentionOutputs::from_outputs(&outputs), Err(FaceError::ModelOutput { .. })));
    }

    #[test]
    fn back_projection_scales_and_rotates() {
        let roi = Roi { center: Point2::new(10.0, 20.0), size: 96.0, rotation: std::f32::consts::PI };
        let p = back_project(&[[0.0, 0.0, 192.0]], &roi);
        // Crop top-left, turned by 180°, lands bottom-right of the centre.
        assert!((p[0][0] - 58.0).abs() < 1e-4 && (p[0][1] - 68.0).abs() < 1e-4 && (p[0][2] - 96.0).abs() < 1e-4);
    }
}
