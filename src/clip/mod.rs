//! A person's clip as training material, shared by personalization and training (below both).
//!
//! Owns `frames` (a clip read into face crops with landmarks, the neutral source frame and the held-out frames) and
//! `sample` (training samples paired from those frames). Receives a `FrameSource` and the face models; emits
//! `ClipFrames` and `TrainSample`s.

pub mod frames;
pub mod sample;
