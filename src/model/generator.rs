//! The generator as data: a configuration paired with weights that match it.
//!
//! Owns `GeneratorModel` (validated on construction), the state-dict listing the architecture declares for a config
//! (`expected_entries`, derived by the shape executor from the one network definition) and the deterministic random
//! initialisation. Receives configs, weight stores or files; emits validated models.

use std::path::Path;

use super::ModelError;
use super::config::GeneratorConfig;
use super::exec::shape::ShapeOps;
use super::net::{self, GeneratorInputs};
use super::weights::{ExpectedEntry, WeightStore};

/// A configuration with weights that match it.
#[derive(Clone, Debug)]
pub struct GeneratorModel {
    /// The widths the networks are built with.
    pub config: GeneratorConfig,
    /// Weights holding every entry `expected_entries(&config)` lists, with those shapes (checked by `new`; keep it so
    /// when replacing tensors).
    pub weights: WeightStore,
}

/// Every state-dict entry the architecture declares for `cfg`, in declaration order.
pub fn expected_entries(cfg: &GeneratorConfig) -> Result<Vec<ExpectedEntry>, ModelError> {
    let mut ops = ShapeOps::new();
    let inputs = GeneratorInputs::from_spec(cfg, |_, shape| shape.to_vec());
    net::generator_forward(&mut ops, cfg, &inputs)?;
    if let Some(err) = ops.take_error() {
        return Err(err);
    }
    Ok(ops.into_entries())
}

/// Seed of the deterministic initialisation used when no weights are given.
pub const DEFAULT_INIT_SEED: u64 = 0x4D50;

impl GeneratorModel {
    /// Pairs a config with weights after checking every key and shape.
    pub fn new(config: GeneratorConfig, weights: WeightStore) -> Result<Self, ModelError> {
        weights.validate(&expected_entries(&config)?)?;
        Ok(Self { config, weights })
    }

    /// Loads weights from a safetensors file and validates them against the config.
    pub fn load(config: GeneratorConfig, weights_path: &Path) -> Result<Self, ModelError> {
        let weights = WeightStore::load_safetensors(weights_path)?;
        Self::new(config, weights)
    }

    /// Deterministic random weights (benchmarks, training from scratch).
    pub fn random(config: GeneratorConfig, seed: u64) -> Result<Self, ModelError> {
        let weights = super::weights::random_init(&expected_entries(&config)?, seed);
        Ok(Self { config, weights })
    }
}

/// Inputs of the right shapes with values uniform in [0, 1), drawn from `seed` (benchmarks: speed does not depend on
/// values).
pub fn synthetic_inputs(
    cfg: &GeneratorConfig,
    seed: u64,
) -> Result<std::collections::BTreeMap<String, crate::tensor::HostTensor>, ModelError> {
    let mut rng = crate::rng::SplitMix64::new(seed);
    let mut out = std::collections::BTreeMap::new();
    for (name, shape) in net::INPUT_NAMES.iter().zip(net::input_shapes(cfg)) {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.uniform() as f32).collect();
        let tensor = crate::tensor::HostTensor::new(shape, data)
            .map_err(|e| ModelError::Tensor { name: (*name).to_owned(), reason: e.to_string() })?;
        out.insert((*name).to_owned(), tensor);
    }
    Ok(out)
}
