//! Weight store: named host tensors with the official state-dict key names.
//!
//! Owns loading and saving safetensors files (saving is atomic: temp file + rename), validation against the keys and
//! shapes an architecture declares (all problems reported at once), and the eval-mode effective weights of
//! spectral-norm and EqualLR modules. Receives file paths or tensors; emits a `WeightStore` the executors read from.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::ModelError;
use super::reparam::{SN_ORIG, SN_U, SN_V, SnDim, equal_lr_scale, spectral_sigma};
use crate::atomic_file::write_atomic;
use crate::tensor::HostTensor;

/// Whether a state-dict entry is a trainable parameter or a buffer (spectral-norm `u`/`v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Trained by gradient descent (weights, biases, spectral-norm `weight_orig`).
    Parameter,
    /// Stored state that is not trained (spectral-norm `weight_u`/`weight_v`).
    Buffer,
}

/// One entry the architecture expects in a state dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedEntry {
    /// The official state-dict key, e.g. `ladder_network.fc.weight`.
    pub key: String,
    /// The shape the stored tensor must have.
    pub shape: Vec<usize>,
    /// Parameter or buffer.
    pub kind: EntryKind,
}

/// Named tensors keyed by their official state-dict names.
#[derive(Clone, Debug, Default)]
pub struct WeightStore {
    tensors: BTreeMap<String, HostTensor>,
}

/// Why bytes are not a usable safetensors file.
#[derive(Debug, thiserror::Error)]
pub enum SafetensorsError {
    /// The header or layout is broken.
    #[error(transparent)]
    Format(#[from] safetensors::SafeTensorError),
    /// A tensor's data cannot be read as floats.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor's key.
        name: String,
        /// Why.
        reason: TensorDecodeError,
    },
}

/// Why one tensor's bytes cannot be read as f32.
#[derive(Debug, thiserror::Error)]
pub enum TensorDecodeError {
    /// Not a floating-point dtype.
    #[error("unsupported dtype {0} (expected a floating-point tensor)")]
    Dtype(String),
    /// The byte count is not a whole number of values.
    #[error("{bytes} bytes is not a whole number of {dtype} values")]
    PartialValue {
        /// Bytes given.
        bytes: usize,
        /// The dtype.
        dtype: String,
    },
    /// The shape does not hold that many values.
    #[error(transparent)]
    Shape(#[from] crate::tensor::ShapeMismatch),
}

impl WeightStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the tensor under `key`.
    pub fn insert(&mut self, key: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(key.into(), tensor);
    }

    /// The tensor under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&HostTensor> {
        self.tensors.get(key)
    }

    /// The tensor under `key`, or `ModelError::MissingWeight`.
    pub fn require(&self, key: &str) -> Result<&HostTensor, ModelError> {
        self.get(key).ok_or_else(|| ModelError::MissingWeight(key.to_owned()))
    }

    /// Number of tensors (keys), not elements.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the store holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Every key and tensor, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &HostTensor)> {
        self.tensors.iter()
    }

    /// Mutable access for optimizers, which update tensors in place by key.
    pub fn tensors_mut(&mut self) -> &mut BTreeMap<String, HostTensor> {
        &mut self.tensors
    }

    /// Takes the tensor under `key` out of the store, if any.
    pub fn remove(&mut self, key: &str) -> Option<HostTensor> {
        self.tensors.remove(key)
    }

    /// Reads every tensor of a safetensors file (f32, f16, bf16 or f64 are converted to f32).
    pub fn load_safetensors(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        Self::from_safetensors_bytes(&bytes)
            .map_err(|e| ModelError::Safetensors { path: path.into(), reason: e.to_string() })
    }

    /// Parses safetensors bytes; the error says what is wrong with the file.
    pub fn from_safetensors_bytes(bytes: &[u8]) -> Result<Self, SafetensorsError> {
        let st = SafeTensors::deserialize(bytes)?;
        let mut store = Self::new();
        for (name, view) in st.tensors() {
            let tensor_err = |reason: TensorDecodeError| SafetensorsError::Tensor { name: name.clone(), reason };
            let data = decode_to_f32(view.dtype(), view.data()).map_err(tensor_err)?;
            let tensor =
                HostTensor::new(view.shape().to_vec(), data).map_err(|e| tensor_err(TensorDecodeError::Shape(e)))?;
            store.insert(name, tensor);
        }
        Ok(store)
    }

    /// Serialises every tensor as f32 safetensors.
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let buffers: Vec<(&String, &HostTensor, Vec<u8>)> =
            self.tensors.iter().map(|(k, t)| (k, t, f32_le_bytes(t.data()))).collect();
        let views = buffers
            .iter()
            .map(|(k, t, bytes)| {
                let view = safetensors::tensor::TensorView::new(Dtype::F32, t.shape().to_vec(), bytes)
                    .map_err(|e| ModelError::Tensor { name: (*k).clone(), reason: e.to_string() })?;
                Ok(((*k).clone(), view))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        safetensors::serialize(views, None)
            .map_err(|e| ModelError::Tensor { name: "<file>".into(), reason: e.to_string() })
    }

    /// Writes the store atomically: a temporary file beside `path`, fsync, then rename over it.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let bytes = self.to_safetensors_bytes()?;
        write_atomic(path, &bytes).map_err(|source| ModelError::Io { path: path.into(), source })
    }

    /// Checks the store against what the architecture expects and lists every problem found:
    /// missing keys, unexpected keys and shape mismatches.
    pub fn validate(&self, expected: &[ExpectedEntry]) -> Result<(), ModelError> {
        let mut problems = Vec::new();
        let mut expected_keys = std::collections::BTreeSet::new();
        for entry in expected {
            expected_keys.insert(entry.key.as_str());
            match self.get(&entry.key) {
                None => problems.push(format!("missing key `{}` (expected shape {:?})", entry.key, entry.shape)),
                Some(t) if t.shape() != entry.shape.as_slice() => {
                    problems.push(format!("key `{}` has shape {:?}, expected {:?}", entry.key, t.shape(), entry.shape))
                }
                Some(_) => {}
            }
        }
        for key in self.tensors.keys() {
            if !expected_keys.contains(key.as_str()) {
                problems.push(format!("unexpected key `{key}`"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(ModelError::WeightMismatch { problems }) }
    }

    /// Eval-mode effective weight of spectral-norm module `prefix`: `weight_orig / σ`, `σ = u · (W_mat v)`.
    pub fn spectral_norm_effective(&self, prefix: &str, dim: SnDim) -> Result<HostTensor, ModelError> {
        let orig = self.require(&format!("{prefix}.{SN_ORIG}"))?;
        let u = self.require(&format!("{prefix}.{SN_U}"))?;
        let v = self.require(&format!("{prefix}.{SN_V}"))?;
        let sigma = spectral_sigma(orig, u.data(), v.data(), dim)
            .map_err(|reason| ModelError::Tensor { name: prefix.to_owned(), reason: reason.to_string() })?;
        let data = orig.data().iter().map(|w| (*w as f64 / sigma) as f32).collect();
        HostTensor::new(orig.shape().to_vec(), data)
            .map_err(|e| ModelError::Tensor { name: prefix.to_owned(), reason: e.to_string() })
    }

    /// Effective weight of EqualLR linear `prefix`: `weight_orig * sqrt(2 / in_features)`.
    pub fn equal_lr_effective(&self, prefix: &str) -> Result<HostTensor, ModelError> {
        let orig = self.require(&format!("{prefix}.{SN_ORIG}"))?;
        let scale = equal_lr_scale(orig.shape());
        let data = orig.data().iter().map(|w| w * scale).collect();
        HostTensor::new(orig.shape().to_vec(), data)
            .map_err(|e| ModelError::Tensor { name: prefix.to_owned(), reason: e.to_string() })
    }
}

/// Standard deviation of the bias noise in random initialisation (keeps activations from being exactly symmetric).
const INIT_BIAS_STD: f32 = 0.01;

/// A deterministic random initialisation for the expected entries, for benchmarks and for training from scratch:
/// weights ~ N(0, 1/fan_in) (EqualLR weights ~ N(0, 1), their scale is applied at run time), biases ~ small noise,
/// normalisation gains 1, and unit random vectors for spectral-norm `u`/`v`.
pub fn random_init(expected: &[ExpectedEntry], seed: u64) -> WeightStore {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut store = WeightStore::new();
    for entry in expected {
        let n: usize = entry.shape.iter().product();
        let key = entry.key.as_str();
        let data = if entry.kind == EntryKind::Buffer {
            let mut v = rng.normal_vec(n, 0.0, 1.0);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
            v.iter_mut().for_each(|x| *x /= norm);
            v
        } else if key.ends_with(".adain.style.linear.bias") {
            // AdaIN style: gamma half first; start from the identity modulation (gamma = 1, beta = 0).
            let mut v = rng.normal_vec(n, 0.0, INIT_BIAS_STD);
            v.iter_mut().take(n / 2).for_each(|x| *x += 1.0);
            v
        } else if key.ends_with(".bias") {
            rng.normal_vec(n, 0.0, INIT_BIAS_STD)
        } else if key.contains(".norm.") && entry.shape.len() == 1 && key.ends_with(".weight")
            || key.contains("reger.0.") && key.ends_with(".weight")
            || key.contains("occlusion_net.0.") && key.ends_with(".weight")
        {
            vec![1.0; n]
        } else if key.contains(".adain.style.linear.") {
            rng.normal_vec(n, 0.0, 1.0)
        } else {
            let fan_in: usize = entry.shape.iter().skip(1).product::<usize>().max(1);
            rng.normal_vec(n, 0.0, (1.0 / fan_in as f32).sqrt())
        };
        // The data length is the shape's product by construction.
        let tensor = HostTensor::new(entry.shape.clone(), data).unwrap_or_else(|_| HostTensor::zeros(&entry.shape));
        store.insert(entry.key.clone(), tensor);
    }
    store
}

fn f32_le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn decode_to_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, TensorDecodeError> {
    let chunks = |n: usize| {
        if !bytes.len().is_multiple_of(n) {
            Err(TensorDecodeError::PartialValue { bytes: bytes.len(), dtype: format!("{dtype:?}") })
        } else {
            Ok(bytes.chunks_exact(n))
        }
    };
    Ok(match dtype {
        Dtype::F32 => chunks(4)?.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => {
            chunks(8)?.map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32).collect()
        }
        Dtype::F16 => chunks(2)?.map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => chunks(2)?.map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(TensorDecodeError::Dtype(format!("{other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_problem() {
        let mut store = WeightStore::new();
        store.insert("a", HostTensor::zeros(&[2, 3]));
        store.insert("extra", HostTensor::zeros(&[1]));
        let expected = vec![
            ExpectedEntry { key: "a".into(), shape: vec![3, 2], kind: EntryKind::Parameter },
            ExpectedEntry { key: "b".into(), shape: vec![4], kind: EntryKind::Buffer },
        ];
        let msg = store.validate(&expected).unwrap_err().to_string();
        assert!(msg.contains("`a` has shape [2, 3], expected [3, 2]"), "{msg}");
        assert!(msg.contains("missing key `b`"), "{msg}");
        assert!(msg.contains("unexpected key `extra`"), "{msg}");
    }

    #[test]
    fn truncated_safetensors_is_a_clear_error() {
        let mut store = WeightStore::new();
        store.insert("x", HostTensor::filled(&[4, 4], 1.5));
        let bytes = store.to_safetensors_bytes().unwrap();
        let back = WeightStore::from_safetensors_bytes(&bytes).unwrap();
        assert_eq!(back.get("x"), store.get("x"));
        assert!(WeightStore::from_safetensors_bytes(&bytes[..bytes.len() - 9]).is_err());
    }
}
