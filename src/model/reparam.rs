//! The two weight reparametrisations of the official networks, defined once for every executor and the importer.
//!
//! Owns spectral normalisation in eval mode (the SN matrix view `SnDim`, σ = u · (W_mat v) from the stored `u`, `v`
//! buffers, power iteration for checkpoints whose SN was removed) and StyleGAN2's equalised learning rate (the
//! `sqrt(2 / fan_in)` scale). Receives raw `weight_orig` tensors and buffers; emits σ, scales and vectors. The
//! executors build the same formulas from their own ops so that gradients flow to `weight_orig`.

use crate::tensor::HostTensor;

/// How a spectrally-normalised weight is flattened into the matrix whose top singular value divides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnDim {
    /// `Conv2d`/`Linear`: `W.reshape(out, -1)`.
    Dim0,
    /// `ConvTranspose2d` (weight `[in, out, kh, kw]`): `W.permute(1, 0, 2, 3).reshape(out, -1)`.
    Dim1,
}

impl SnDim {
    /// Lengths of the `weight_u` and `weight_v` buffers for a `weight_orig` of this shape.
    pub fn uv_lengths(self, weight_shape: &[usize]) -> (usize, usize) {
        let total: usize = weight_shape.iter().product();
        let rows = match self {
            SnDim::Dim0 => weight_shape[0],
            SnDim::Dim1 => weight_shape[1],
        };
        (rows, total / rows.max(1))
    }
}

/// Spectral-norm suffixes in the official state dict.
pub const SN_ORIG: &str = "weight_orig";
/// Suffix of the stored left singular vector estimate (length: rows of the SN matrix).
pub const SN_U: &str = "weight_u";
/// Suffix of the stored right singular vector estimate (length: columns of the SN matrix).
pub const SN_V: &str = "weight_v";
/// Guard of `F.normalize`, used when (re)computing power-iteration vectors.
const NORMALIZE_EPS: f64 = 1e-12;

/// Why a spectral-norm weight cannot be normalised.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ReparamError {
    /// Spectral norm needs a matrix view.
    #[error("spectral norm needs a weight of rank ≥ 2, got {shape:?}")]
    Rank {
        /// The weight's shape.
        shape: Vec<usize>,
    },
    /// The stored `u`/`v` buffers do not fit the weight.
    #[error("u/v have lengths {u}/{v}, expected {rows}/{cols} for weight {shape:?}")]
    VectorLengths {
        /// Length of `weight_u`.
        u: usize,
        /// Length of `weight_v`.
        v: usize,
        /// Rows of the SN matrix.
        rows: usize,
        /// Columns of the SN matrix.
        cols: usize,
        /// The weight's shape.
        shape: Vec<usize>,
    },
    /// σ came out zero or not finite.
    #[error("spectral norm σ = {sigma} is not usable")]
    Sigma {
        /// The computed σ.
        sigma: f64,
    },
}

/// `sqrt(2 / fan_in)` with the reference's fan_in = `size(1) * weight[0][0].numel()`.
pub fn equal_lr_scale(weight_shape: &[usize]) -> f32 {
    let fan_in: usize = weight_shape.iter().skip(1).product();
    (2.0 / fan_in.max(1) as f64).sqrt() as f32
}

/// Row `r` of the SN matrix view, as an iterator over the flat indices of `weight_orig`.
fn sn_row_indices(shape: &[usize], dim: SnDim, r: usize) -> Box<dyn Iterator<Item = usize> + '_> {
    match dim {
        SnDim::Dim0 => {
            let cols: usize = shape[1..].iter().product();
            Box::new((0..cols).map(move |c| r * cols + c))
        }
        SnDim::Dim1 => {
            // W is [in, out, k...]; the matrix is W.permute(1, 0, ...).reshape(out, in * k).
            let inner: usize = shape[2..].iter().product();
            let out = shape[1];
            Box::new((0..shape[0]).flat_map(move |i| (0..inner).map(move |k| (i * out + r) * inner + k)))
        }
    }
}

/// σ = u · (W_mat v), computed in f64.
pub fn spectral_sigma(orig: &HostTensor, u: &[f32], v: &[f32], dim: SnDim) -> Result<f64, ReparamError> {
    let shape = orig.shape();
    if shape.len() < 2 {
        return Err(ReparamError::Rank { shape: shape.to_vec() });
    }
    let (rows, cols) = dim.uv_lengths(shape);
    if u.len() != rows || v.len() != cols {
        return Err(ReparamError::VectorLengths { u: u.len(), v: v.len(), rows, cols, shape: shape.to_vec() });
    }
    let w = orig.data();
    let mut sigma = 0.0f64;
    for (r, ur) in u.iter().enumerate() {
        let row: f64 = sn_row_indices(shape, dim, r).zip(v).map(|(i, vc)| w[i] as f64 * *vc as f64).sum();
        sigma += *ur as f64 * row;
    }
    if !sigma.is_finite() || sigma == 0.0 {
        return Err(ReparamError::Sigma { sigma });
    }
    Ok(sigma)
}

/// Power-iteration vectors `(u, v)` for a plain weight, used when a checkpoint had spectral norm removed: the
/// importer stores `weight_orig = W·σ` so that the eval-mode effective weight is exactly `W` again.
pub fn power_iteration(weight: &HostTensor, dim: SnDim, iterations: usize) -> (Vec<f32>, Vec<f32>) {
    let shape = weight.shape();
    let (rows, cols) = dim.uv_lengths(shape);
    let w = weight.data();
    let mut u = vec![1.0f64 / (rows as f64).sqrt(); rows];
    let mut v = vec![0.0f64; cols];
    for _ in 0..iterations.max(1) {
        v.iter_mut().for_each(|x| *x = 0.0);
        for (r, ur) in u.iter().enumerate() {
            for (c, i) in sn_row_indices(shape, dim, r).enumerate() {
                v[c] += w[i] as f64 * ur;
            }
        }
        normalize(&mut v);
        for (r, ur) in u.iter_mut().enumerate() {
            *ur = sn_row_indices(shape, dim, r).zip(&v).map(|(i, vc)| w[i] as f64 * vc).sum();
        }
        normalize(&mut u);
    }
    (u.iter().map(|x| *x as f32).collect(), v.iter().map(|x| *x as f32).collect())
}

fn normalize(x: &mut [f64]) {
    let n = x.iter().map(|a| a * a).sum::<f64>().sqrt().max(NORMALIZE_EPS);
    x.iter_mut().for_each(|a| *a /= n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_dim1_matches_explicit_permutation() {
        // W [in=2, out=3, 1, 2]; the SN matrix is W.permute(1,0,2,3).reshape(3, 4).
        let w = HostTensor::new(vec![2, 3, 1, 2], (0..12).map(|i| i as f32 * 0.5 - 2.0).collect()).unwrap();
        let u = [0.3f32, -0.2, 0.9];
        let v = [0.1f32, 0.4, -0.5, 0.7];
        let mut expected = 0.0f64;
        for (o, uo) in u.iter().enumerate() {
            for i in 0..2 {
                for k in 0..2 {
                    let flat = (i * 3 + o) * 2 + k;
                    expected += *uo as f64 * w.data()[flat] as f64 * v[i * 2 + k] as f64;
                }
            }
        }
        let sigma = spectral_sigma(&w, &u, &v, SnDim::Dim1).unwrap();
        assert!((sigma - expected).abs() < 1e-12);
    }

    #[test]
    fn power_iteration_recovers_the_top_singular_value() {
        // diag(3, 1) as a 2x2 "conv" weight [2, 2, 1, 1].
        let w = HostTensor::new(vec![2, 2, 1, 1], vec![3.0, 0.0, 0.0, 1.0]).unwrap();
        let (u, v) = power_iteration(&w, SnDim::Dim0, 30);
        let sigma = spectral_sigma(&w, &u, &v, SnDim::Dim0).unwrap();
        assert!((sigma - 3.0).abs() < 1e-6, "{sigma}");
    }
}
