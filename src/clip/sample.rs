//! Training samples drawn from a clip: the source frame posed as another frame, with that frame as the target.
//!
//! Owns `TrainSample` (a driving frame's generator conditioning, the real frame and its eye/mouth box masks) and how
//! samples are paired from a clip. Receives `ClipFrames`, an identity vector and an `InputBuilder` (the generator's
//! conditioning); emits host-tensor samples that personalization, base training, Reptile and TSR data preparation
//! share.

use super::frames::ClipFrames;
use crate::face::condition::{eye_mask, mouth_mask};
use crate::model::inputs::{InputBuilder, InputError};
use crate::model::net::GeneratorInputs;
use crate::tensor::HostTensor;

/// A sample could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The conditioning could not be drawn for a frame.
    #[error(transparent)]
    Input(#[from] InputError),
}

/// One training example: a driving frame's conditioning, the real frame, and its eye/mouth box masks.
#[derive(Clone, Debug)]
pub struct TrainSample {
    /// The generator's conditioning: the source crop posed with the driving frame's landmarks.
    pub inputs: GeneratorInputs<HostTensor>,
    /// `[1, 3, S, S]` in [0, 1].
    pub target: HostTensor,
    /// `[1, 1, S, S]`.
    pub eye_mask: HostTensor,
    /// `[1, 1, S, S]`, 1 inside the driving frame's mouth box and 0 elsewhere.
    pub mouth_mask: HostTensor,
}

fn keypoints_of(ldmk: &HostTensor) -> crate::face::condition::Keypoints58 {
    let mut kp = [[0.0f32; 2]; crate::model::config::NUM_KEYPOINTS];
    for (k, c) in kp.iter_mut().zip(ldmk.data().chunks_exact(2)) {
        *k = [c[0], c[1]];
    }
    kp
}

/// Training samples: the source frame posed as each listed frame, with that frame as the target.
pub fn samples(
    builder: &mut InputBuilder,
    clip: &ClipFrames,
    indices: &[usize],
    id_vector: &[f32],
) -> Result<Vec<TrainSample>, SampleError> {
    indices.iter().map(|&i| pair_sample(builder, clip, clip.source, i, id_vector)).collect()
}

/// One training sample: frame `source` of the clip posed as frame `driving`, with `driving` as the target.
pub fn pair_sample(
    builder: &mut InputBuilder,
    clip: &ClipFrames,
    source: usize,
    driving: usize,
    id_vector: &[f32],
) -> Result<TrainSample, SampleError> {
    let (source, frame) = (&clip.frames[source], &clip.frames[driving]);
    let side = source.crop.width() as f32;
    let inputs = builder.frame(&source.crop, &source.landmarks, &frame.landmarks, id_vector, side)?;
    let kp = keypoints_of(&inputs.driving_ldmk);
    let size = builder.size();
    Ok(TrainSample {
        target: builder.image(&frame.crop),
        eye_mask: eye_mask(&kp, size),
        mouth_mask: mouth_mask(&kp, size),
        inputs,
    })
}
