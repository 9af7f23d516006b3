//! The generator architecture, defined once against `Ops` and shared by every executor.
//!
//! Owns the tensor layout of the generator's inputs and outputs (names and shapes, used by the CLI, the ONNX graph
//! and the tests) and the two stages: `warp` (ladder encoder + dense motion) and `refine` (feature pyramid + SPADE).
//! Receives `GeneratorInputs` of executor handles; emits `WarpOutputs` and the refined prediction.

pub mod blocks;
pub mod refine;
pub mod warp;

use super::ModelError;
use super::config::{GeneratorConfig, IMAGE_CHANNELS, MOTION_SIDE, MOUTH_LINE_CHANNELS, NUM_KEYPOINTS};
use super::ops::Ops;

/// Conditioning inputs of one frame, batch 1.
#[derive(Clone, Debug)]
pub struct GeneratorInputs<T> {
    /// Portrait `[1, 3, S, S]` in [0, 1].
    pub source: T,
    /// Landmark-line image of the portrait `[1, 3, S, S]` in [0, 1].
    pub source_line: T,
    /// Landmark-line image of the driving frame `[1, 3, S, S]` in [0, 1].
    pub driving_line: T,
    /// Driving line × mouth-box mask `[1, 3, S, S]`.
    pub mouth_line: T,
    /// Driving role keypoints `[1, 58, 2]` in [-1, 1], `[..., 0] = x`.
    pub driving_ldmk: T,
    /// Unit-norm identity embedding `[1, id_dim]`.
    pub src_id: T,
}

/// Outputs of the warping stage.
#[derive(Clone, Debug)]
pub struct WarpOutputs<T> {
    /// `[1, 64, 64, 2]` sampling grid, NHWC, `[..., 0] = x`.
    pub deformation: T,
    /// `[1, 2, 64, 64]` normalised flow.
    pub flow: T,
    /// `[1, 1, S, S]` occlusion in (0, 1).
    pub occlusion_map: T,
    /// `[1, 3, S, S]` source warped by the deformation.
    pub deformed: T,
}

/// Everything the generator produces for one frame.
#[derive(Clone, Debug)]
pub struct GeneratorOutputs<T> {
    /// The warping stage's outputs (deformation, flow, occlusion, warped source).
    pub warp: WarpOutputs<T>,
    /// `[1, 3, S, S]` refined frame in [-1, 1].
    pub prediction: T,
}

/// Tensor names of the generator's inputs (fixture and CLI names), in `GeneratorInputs` field order.
pub const INPUT_NAMES: [&str; 6] = [
    "input.source",
    "input.source_line",
    "input.driving_line",
    "input.mouth_line",
    "input.driving_ldmk",
    "input.src_id",
];
/// Tensor name of `WarpOutputs::deformation`.
pub const OUTPUT_DEFORMATION: &str = "warp.deformation";
/// Tensor name of `WarpOutputs::flow`.
pub const OUTPUT_FLOW: &str = "warp.flow";
/// Tensor name of `WarpOutputs::occlusion_map`.
pub const OUTPUT_OCCLUSION: &str = "warp.occlusion_map";
/// Tensor name of `WarpOutputs::deformed`.
pub const OUTPUT_DEFORMED: &str = "warp.deformed";
/// Tensor name of `GeneratorOutputs::prediction`, the refined frame.
pub const OUTPUT_PREDICTION: &str = "refine.prediction";
/// Tensor names of the generator's outputs (fixture and CLI names), warp first, in `output_shapes` order.
pub const OUTPUT_NAMES: [&str; 5] =
    [OUTPUT_DEFORMATION, OUTPUT_FLOW, OUTPUT_OCCLUSION, OUTPUT_DEFORMED, OUTPUT_PREDICTION];

/// Shapes of the inputs, in `INPUT_NAMES` order.
pub fn input_shapes(cfg: &GeneratorConfig) -> [Vec<usize>; 6] {
    let s = cfg.image_size;
    let image = vec![1, IMAGE_CHANNELS, s, s];
    [
        image.clone(),
        image.clone(),
        image.clone(),
        vec![1, MOUTH_LINE_CHANNELS, s, s],
        vec![1, NUM_KEYPOINTS, 2],
        vec![1, cfg.id_dim],
    ]
}

/// Shapes of the outputs, in `OUTPUT_NAMES` order.
pub fn output_shapes(cfg: &GeneratorConfig) -> [Vec<usize>; 5] {
    let s = cfg.image_size;
    [
        vec![1, MOTION_SIDE, MOTION_SIDE, 2],
        vec![1, 2, MOTION_SIDE, MOTION_SIDE],
        vec![1, 1, s, s],
        vec![1, IMAGE_CHANNELS, s, s],
        vec![1, IMAGE_CHANNELS, s, s],
    ]
}

impl<T> GeneratorInputs<T> {
    /// Builds each input from its name and declared shape (`INPUT_NAMES`, `input_shapes`).
    pub fn from_spec(cfg: &GeneratorConfig, mut make: impl FnMut(&str, &[usize]) -> T) -> Self {
        let [s0, s1, s2, s3, s4, s5] = input_shapes(cfg);
        Self {
            source: make(INPUT_NAMES[0], &s0),
            source_line: make(INPUT_NAMES[1], &s1),
            driving_line: make(INPUT_NAMES[2], &s2),
            mouth_line: make(INPUT_NAMES[3], &s3),
            driving_ldmk: make(INPUT_NAMES[4], &s4),
            src_id: make(INPUT_NAMES[5], &s5),
        }
    }

    /// Every input with its tensor name, in `INPUT_NAMES` order.
    pub fn named(&self) -> [(&'static str, &T); 6] {
        [
            (INPUT_NAMES[0], &self.source),
            (INPUT_NAMES[1], &self.source_line),
            (INPUT_NAMES[2], &self.driving_line),
            (INPUT_NAMES[3], &self.mouth_line),
            (INPUT_NAMES[4], &self.driving_ldmk),
            (INPUT_NAMES[5], &self.src_id),
        ]
    }

    /// Converts every input, e.g. host tensors into executor handles.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> GeneratorInputs<U> {
        GeneratorInputs {
            source: f(&self.source),
            source_line: f(&self.source_line),
            driving_line: f(&self.driving_line),
            mouth_line: f(&self.mouth_line),
            driving_ldmk: f(&self.driving_ldmk),
            src_id: f(&self.src_id),
        }
    }

    /// Builds the inputs from a lookup by tensor name (`INPUT_NAMES`).
    pub fn try_from_fn(mut get: impl FnMut(&str) -> Result<T, ModelError>) -> Result<Self, ModelError> {
        Ok(Self {
            source: get(INPUT_NAMES[0])?,
            source_line: get(INPUT_NAMES[1])?,
            driving_line: get(INPUT_NAMES[2])?,
            mouth_line: get(INPUT_NAMES[3])?,
            driving_ldmk: get(INPUT_NAMES[4])?,
            src_id: get(INPUT_NAMES[5])?,
        })
    }
}

impl<T> GeneratorOutputs<T> {
    /// The outputs paired with their tensor names (`OUTPUT_NAMES` order).
    pub fn named(&self) -> [(&'static str, &T); 5] {
        [
            (OUTPUT_DEFORMATION, &self.warp.deformation),
            (OUTPUT_FLOW, &self.warp.flow),
            (OUTPUT_OCCLUSION, &self.warp.occlusion_map),
            (OUTPUT_DEFORMED, &self.warp.deformed),
            (OUTPUT_PREDICTION, &self.prediction),
        ]
    }
}

/// Warp then refine. Gradients flow through the warping outputs into both stages (nothing is detached).
pub fn generator_forward<O: Ops>(
    ops: &mut O,
    cfg: &GeneratorConfig,
    inputs: &GeneratorInputs<O::T>,
) -> Result<GeneratorOutputs<O::T>, ModelError> {
    let warp = warp::warp_forward(ops, cfg, inputs)?;
    let prediction = refine::refine_forward(ops, cfg, inputs, &warp)?;
    Ok(GeneratorOutputs { warp, prediction })
}
