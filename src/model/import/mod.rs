//! Conversion of official PyTorch checkpoints into our safetensors weight files.
//!
//! Owns the mapping from a checkpoint's state dict to the keys the architecture expects: `module.` prefixes from
//! data-parallel training are dropped, and checkpoints whose spectral norm was removed (a plain `weight` where
//! `weight_orig`/`weight_u`/`weight_v` are expected) are restored so the eval-mode weight is exactly that `weight`. Receives the
//! tensors read by `torch` (the container) and `pickle` (the safe unpickler); emits a validated `WeightStore`.

mod error;
pub mod pickle;
pub mod plain;
pub mod torch;

pub use error::TorchCheckpointError;

use super::ModelError;
use super::reparam::{SN_ORIG, SN_U, SN_V, SnDim, power_iteration};
use super::weights::{EntryKind, ExpectedEntry, WeightStore};
use crate::tensor::HostTensor;

/// Prefix added by `nn.DataParallel` / DDP wrappers.
const DATA_PARALLEL_PREFIX: &str = "module.";
/// Power iterations used to rebuild `u`/`v` for a checkpoint without spectral norm.
const SN_REBUILD_ITERATIONS: usize = 50;
/// The only spectral-norm module whose matrix view is taken along dim 1 (a transposed convolution).
const SN_DIM1_SUFFIX: &str = "SPDAE_G.conv1";

/// Maps checkpoint tensors onto the expected entries and validates the result (all problems reported at once).
pub fn state_dict_to_store(
    tensors: Vec<(String, HostTensor)>,
    expected: &[ExpectedEntry],
) -> Result<WeightStore, ModelError> {
    let mut store = WeightStore::new();
    for (key, tensor) in tensors {
        let key = key.strip_prefix(DATA_PARALLEL_PREFIX).map(str::to_owned).unwrap_or(key);
        store.insert(key, tensor);
    }
    restore_spectral_norm(&mut store, expected)?;
    store.validate(expected)?;
    Ok(store)
}

/// For every expected spectral-norm module that arrived as a plain `weight` W, stores `weight_orig = W` with the
/// top singular vectors as `v` and `u / σ`. Eval-mode SN divides by `u·(W v)`, which is invariant to the scale of
/// `weight_orig`, so the normalisation must live in `u`: with `u·(W v) = 1` the effective weight is W itself.
fn restore_spectral_norm(store: &mut WeightStore, expected: &[ExpectedEntry]) -> Result<(), ModelError> {
    let orig_suffix = format!(".{SN_ORIG}");
    for entry in expected.iter().filter(|e| e.kind == EntryKind::Parameter && e.key.ends_with(&orig_suffix)) {
        let prefix = &entry.key[..entry.key.len() - orig_suffix.len()];
        let u_key = format!("{prefix}.{SN_U}");
        let is_sn = expected.iter().any(|e| e.key == u_key);
        let plain_key = format!("{prefix}.weight");
        if !is_sn || store.get(&entry.key).is_some() {
            continue;
        }
        let Some(weight) = store.remove(&plain_key) else { continue };
        let dim = if prefix.ends_with(SN_DIM1_SUFFIX) { SnDim::Dim1 } else { SnDim::Dim0 };
        let (u, v) = power_iteration(&weight, dim, SN_REBUILD_ITERATIONS);
        let sigma = super::reparam::spectral_sigma(&weight, &u, &v, dim)
            .map_err(|reason| ModelError::Tensor { name: plain_key.clone(), reason: reason.to_string() })?;
        let u: Vec<f32> = u.iter().map(|x| (*x as f64 / sigma) as f32).collect();
        let to_tensor = |shape: Vec<usize>, data: Vec<f32>| {
            HostTensor::new(shape, data)
                .map_err(|e| ModelError::Tensor { name: plain_key.clone(), reason: e.to_string() })
        };
        let (u_len, v_len) = (u.len(), v.len());
        store.insert(entry.key.clone(), weight);
        store.insert(u_key, to_tensor(vec![u_len], u)?);
        store.insert(format!("{prefix}.{SN_V}"), to_tensor(vec![v_len], v)?);
    }
    Ok(())
}
