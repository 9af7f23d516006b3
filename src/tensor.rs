//! Host tensors: the plain `f32` array type that crosses module boundaries.
//!
//! Owns nothing but a shape and a row-major buffer. Weight files, checkpoint importers, the ONNX builder and the
//! parity tests all exchange `HostTensor`s, so no stage depends on an executor's tensor type to read or write data.

use std::fmt;

/// A dense row-major `f32` tensor living in host memory.
#[derive(Clone, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// The element count of a shape did not match the buffer it was paired with.
#[derive(Debug, thiserror::Error)]
#[error("shape {shape:?} holds {expected} elements but {actual} values were given")]
pub struct ShapeMismatch {
    /// The requested shape.
    pub shape: Vec<usize>,
    /// Elements the shape holds (the product of its dimensions).
    pub expected: usize,
    /// Elements actually supplied.
    pub actual: usize,
}

impl HostTensor {
    /// Pairs a shape with its data, checking that the element counts agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ShapeMismatch> {
        let expected = shape.iter().product::<usize>();
        if expected != data.len() {
            return Err(ShapeMismatch { shape, expected, actual: data.len() });
        }
        Ok(Self { shape, data })
    }

    /// A tensor of `shape` filled with 0.
    pub fn zeros(shape: &[usize]) -> Self {
        Self { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// A tensor of `shape` with every element set to `value`.
    pub fn filled(shape: &[usize], value: f32) -> Self {
        Self { shape: shape.to_vec(), data: vec![value; shape.iter().product()] }
    }

    /// Dimensions, outermost first (e.g. NCHW for images and feature maps).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Elements in row-major order (last dimension fastest).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Elements in row-major order, writable in place; the shape cannot change.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The row-major element buffer, dropping the shape without copying.
    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// Number of elements (the product of the shape; 1 for a scalar of shape `[]`).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements (some dimension is 0).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The same data viewed with another shape of equal element count.
    pub fn reshaped(self, shape: Vec<usize>) -> Result<Self, ShapeMismatch> {
        Self::new(shape, self.data)
    }

    /// Largest absolute element (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    }

    /// Largest absolute element-wise difference; `None` when the shapes differ.
    pub fn max_abs_diff(&self, other: &HostTensor) -> Option<f32> {
        if self.shape != other.shape {
            return None;
        }
        Some(self.data.iter().zip(&other.data).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())))
    }
}

impl fmt::Debug for HostTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostTensor{:?}", self.shape)
    }
}
