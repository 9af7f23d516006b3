//! Adam with PyTorch's update rule, global gradient-norm clipping and per-module learning-rate multipliers.
//!
//! Owns the first/second moment estimates per parameter key. Receives parameters and gradients as host tensors;
//! updates the parameters in place and reports the gradient norm. A step whose gradients are not finite is
//! skipped (parameters and moments untouched) rather than poisoning the model.

use std::collections::BTreeMap;

use crate::tensor::HostTensor;

/// Guard of `torch.nn.utils.clip_grad_norm_`: `coef = max_norm / (norm + 1e-6)`.
const CLIP_EPS: f64 = 1e-6;

/// Hyper-parameters. Defaults are the paper's personalization inner loop.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Base learning rate, before the per-module multipliers.
    pub lr: f32,
    /// Decay of the first-moment (mean) estimate.
    pub beta1: f32,
    /// Decay of the second-moment (uncentred variance) estimate.
    pub beta2: f32,
    /// Added to the denominator `√v̂` so small second moments cannot blow up the step.
    pub eps: f32,
    /// Clip the global L2 norm of all gradients to this value (`None`: no clipping).
    pub clip_grad_norm: Option<f32>,
    /// `(key prefix, multiplier)`: the first matching prefix scales the learning rate of a parameter.
    pub lr_multipliers: Vec<(String, f32)>,
}

/// Learning rate of the personalization inner loop (refinement network; the warping network gets ×0.1).
pub const PERSONALIZE_LR: f32 = 2e-4;
/// The warping network's learning-rate multiplier during personalization.
pub const WARP_LR_MULTIPLIER: f32 = 0.1;
/// Gradient-norm clip of the official training code.
pub const CLIP_GRAD_NORM: f32 = 0.3;

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            lr: PERSONALIZE_LR,
            beta1: 0.5,
            beta2: 0.999,
            eps: 1e-8,
            clip_grad_norm: Some(CLIP_GRAD_NORM),
            lr_multipliers: vec![
                ("ladder_network.".into(), WARP_LR_MULTIPLIER),
                ("dense_motion_network.".into(), WARP_LR_MULTIPLIER),
            ],
        }
    }
}

impl AdamConfig {
    /// The learning rate of parameter `key` (the first matching multiplier prefix applies).
    pub fn lr_for(&self, key: &str) -> f32 {
        let mult = self.lr_multipliers.iter().find(|(p, _)| key.starts_with(p.as_str())).map_or(1.0, |m| m.1);
        self.lr * mult
    }

    /// The factor every gradient is scaled by when their global norm is `grad_norm` (1 without clipping).
    pub fn clip_coefficient(&self, grad_norm: f64) -> f32 {
        match self.clip_grad_norm {
            Some(max) => {
                let coef = max as f64 / (grad_norm + CLIP_EPS);
                if coef < 1.0 { coef as f32 } else { 1.0 }
            }
            None => 1.0,
        }
    }

    /// Bias corrections of update number `step` (from 1): `(1 − β1ᵗ, √(1 − β2ᵗ))`.
    pub fn bias_corrections(&self, step: u64) -> (f64, f64) {
        let t = i32::try_from(step).unwrap_or(i32::MAX);
        (1.0 - (self.beta1 as f64).powi(t), (1.0 - (self.beta2 as f64).powi(t)).sqrt())
    }
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Global L2 norm of the gradients before clipping.
    pub grad_norm: f64,
    /// Whether the update was applied (false when the gradients were not finite).
    pub applied: bool,
}

#[derive(Clone, Debug)]
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// An optimizer state that cannot be resumed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdamStateError {
    /// A first moment without its second.
    #[error("optimizer state lacks `v.{0}`")]
    MissingSecondMoment(String),
    /// The two moments of a key have different lengths.
    #[error("optimizer moments of `{0}` differ in length")]
    LengthMismatch(String),
}

/// Adam state.
#[derive(Clone, Debug)]
pub struct Adam {
    config: AdamConfig,
    step: u64,
    moments: BTreeMap<String, Moments>,
}

impl Adam {
    /// A fresh optimizer: no moments, no steps taken.
    pub fn new(config: AdamConfig) -> Self {
        Self { config, step: 0, moments: BTreeMap::new() }
    }

    /// Sets the base learning rate (schedules); per-module multipliers still apply.
    pub fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    /// Updates applied so far (skipped non-finite steps not counted); the `t` of the next bias correction minus 1.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The moments as tensors (`m.<key>`, `v.<key>`, flat) and the step count, for checkpoints.
    pub fn state(&self) -> (u64, crate::model::weights::WeightStore) {
        let mut store = crate::model::weights::WeightStore::new();
        for (key, moments) in &self.moments {
            for (prefix, values) in [("m.", &moments.m), ("v.", &moments.v)] {
                if let Ok(t) = HostTensor::new(vec![values.len()], values.clone()) {
                    store.insert(format!("{prefix}{key}"), t);
                }
            }
        }
        (self.step, store)
    }

    /// Adam resumed from `state` (as returned by `state`); a key with only one of its moments is an error.
    pub fn from_state(
        config: AdamConfig,
        step: u64,
        state: &crate::model::weights::WeightStore,
    ) -> Result<Self, AdamStateError> {
        let mut moments = BTreeMap::new();
        for (name, m) in state.iter() {
            let Some(key) = name.strip_prefix("m.") else { continue };
            let v =
                state.get(&format!("v.{key}")).ok_or_else(|| AdamStateError::MissingSecondMoment(key.to_owned()))?;
            if v.len() != m.len() {
                return Err(AdamStateError::LengthMismatch(key.to_owned()));
            }
            moments.insert(key.to_owned(), Moments { m: m.data().to_vec(), v: v.data().to_vec() });
        }
        Ok(Self { config, step, moments })
    }

    /// The hyper-parameters, with the learning rate last given to `set_lr`.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Applies one update to every parameter that has a gradient. Parameters without one are left alone.
    pub fn step(
        &mut self,
        params: &mut BTreeMap<String, HostTensor>,
        grads: &BTreeMap<String, HostTensor>,
    ) -> StepStats {
        let sum_sq: f64 = grads.values().flat_map(|g| g.data()).map(|x| (*x as f64) * (*x as f64)).sum();
        let grad_norm = sum_sq.sqrt();
        if !grad_norm.is_finite() {
            tracing::warn!("skipping an optimizer step: non-finite gradient norm");
            return StepStats { grad_norm, applied: false };
        }
        let clip = self.config.clip_coefficient(grad_norm);
        self.step += 1;
        let (b1, b2) = (self.config.beta1, self.config.beta2);
        let (bias1, bias2_sqrt) = self.config.bias_corrections(self.step);
        for (key, grad) in grads {
            let Some(param) = params.get_mut(key) else { continue };
            if param.shape() != grad.shape() {
                tracing::warn!(key, "gradient shape differs from parameter shape; parameter left unchanged");
                continue;
            }
            let step_size = (self.config.lr_for(key) as f64 / bias1) as f32;
            let n = param.len();
            let moments =
                self.moments.entry(key.clone()).or_insert_with(|| Moments { m: vec![0.0; n], v: vec![0.0; n] });
            for (((p, g), m), v) in
                param.data_mut().iter_mut().zip(grad.data()).zip(moments.m.iter_mut()).zip(moments.v.iter_mut())
            {
                let g = g * clip;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let denom = (v.sqrt() as f64 / bias2_sqrt) as f32 + self.config.eps;
                *p -= step_size * *m / denom;
            }
        }
        StepStats { grad_norm, applied: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_resumes_identically() {
        let mut params: BTreeMap<String, HostTensor> = [("w".to_owned(), t(&[1.0, -2.0, 0.5]))].into();
        let grads: BTreeMap<String, HostTensor> = [("w".to_owned(), t(&[0.1, 0.2, -0.3]))].into();
        let mut a = Adam::new(AdamConfig::default());
        a.step(&mut params, &grads);
        let (step, state) = a.state();
        let mut b = Adam::from_state(AdamConfig::default(), step, &state).expect("restores");
        let mut pa = params.clone();
        let mut pb = params.clone();
        a.step(&mut pa, &grads);
        b.step(&mut pb, &grads);
        assert_eq!(pa["w"].data(), pb["w"].data());
        let mut broken = state.clone();
        broken.remove("v.w");
        assert!(Adam::from_state(AdamConfig::default(), step, &broken).is_err());
    }

    fn t(v: &[f32]) -> HostTensor {
        HostTensor::new(vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn two_steps_match_hand_computed_adam() {
        // lr 0.1, betas (0.5, 0.999), eps 1e-8, no clipping, one scalar parameter p0 = 1.
        let cfg = AdamConfig { lr: 0.1, clip_grad_norm: None, lr_multipliers: vec![], ..AdamConfig::default() };
        let mut adam = Adam::new(cfg);
        let mut params = BTreeMap::from([("w".to_owned(), t(&[1.0]))]);
        // Step 1, g = 0.2: m = 0.1, v = 4e-5; m̂ = 0.2, v̂ = 0.04 → p = 1 − 0.1·0.2/(0.2 + 1e-8) = 0.9 (+5e-9).
        adam.step(&mut params, &BTreeMap::from([("w".to_owned(), t(&[0.2]))]));
        assert!((params["w"].data()[0] - 0.9).abs() < 1e-6, "{}", params["w"].data()[0]);
        // Step 2, g = −0.4: m = 0.05 − 0.2 = −0.15, v = 0.999·4e-5 + 0.001·0.16 = 1.9996e-4;
        // m̂ = −0.15/0.75 = −0.2, v̂ = 1.9996e-4/(1 − 0.999²) = 0.100030…; p = 0.9 + 0.1·0.2/0.316275 = 0.963236.
        adam.step(&mut params, &BTreeMap::from([("w".to_owned(), t(&[-0.4]))]));
        let v_hat: f64 = 1.9996e-4 / (1.0 - 0.999f64 * 0.999);
        let expected = 0.9 + 0.1 * 0.2 / v_hat.sqrt();
        assert!((params["w"].data()[0] as f64 - expected).abs() < 1e-5, "{} vs {expected}", params["w"].data()[0]);
    }

    #[test]
    fn clipping_scales_the_global_norm_and_multipliers_apply() {
        let cfg = AdamConfig {
            lr: 1.0,
            beta1: 0.0,
            beta2: 0.0,
            eps: 1.0,
            clip_grad_norm: Some(0.3),
            lr_multipliers: vec![("warp.".into(), 0.1)],
        };
        let mut adam = Adam::new(cfg);
        let mut params = BTreeMap::from([("warp.a".to_owned(), t(&[0.0])), ("refine.b".to_owned(), t(&[0.0]))]);
        let grads = BTreeMap::from([("warp.a".to_owned(), t(&[3.0])), ("refine.b".to_owned(), t(&[4.0]))]);
        let stats = adam.step(&mut params, &grads);
        assert!((stats.grad_norm - 5.0).abs() < 1e-12);
        // With β = 0 and eps = 1 each update is lr·ĝ/(|ĝ| + 1) with ĝ = g·0.3/5 (clipped): 0.18 and 0.24.
        assert!((params["warp.a"].data()[0] + 0.1 * 0.18 / 1.18).abs() < 1e-6, "{}", params["warp.a"].data()[0]);
        assert!((params["refine.b"].data()[0] + 0.24 / 1.24).abs() < 1e-6, "{}", params["refine.b"].data()[0]);
    }

    #[test]
    fn non_finite_gradients_skip_the_step() {
        let mut adam = Adam::new(AdamConfig::default());
        let mut params = BTreeMap::from([("w".to_owned(), t(&[1.0, 2.0]))]);
        let stats = adam.step(&mut params, &BTreeMap::from([("w".to_owned(), t(&[f32::NAN, 1.0]))]));
        assert!(!stats.applied);
        assert_eq!(params["w"].data(), &[1.0, 2.0]);
        assert_eq!(adam.steps_taken(), 0);
    }
}
