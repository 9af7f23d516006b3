//! Training state kept on the executor's device for a run of steps: the parameters being trained and Adam's moments.
//!
//! Owns device copies of every parameter a step has touched and their first/second moments. Receives the model's
//! host weights (each parameter is uploaded once, the first time a forward asks for it) and, per step, a forward
//! that builds the loss; backward, global-norm clipping and the Adam update all run on the device, and only the loss
//! terms and one vector of per-tensor squared gradient norms come back. Emits step reports, and on `finish` writes
//! the trained parameters into the host store once. The update rule is `adam::Adam`'s (checked against it in the
//! tests); the host optimizer moves every parameter up and every gradient down on each step, which on a GPU costs
//! more than the arithmetic.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};

use crate::model::ModelError;
use crate::model::burn_exec::{BurnExec, BurnValue, host_copy};
use crate::model::engine::{GeneratorModel, Stage};
use crate::model::weights::WeightStore;
use crate::tensor::HostTensor;

use super::adam::{AdamConfig, StepStats};
use super::step::{LossReport, Objective, StepReport, TrainSample, forward_l1, forward_loss};

/// Adam's moment estimates of one parameter, shaped like its leaf.
struct Moments {
    m: BurnValue,
    v: BurnValue,
}

/// Parameters and optimizer state on one device.
pub struct ResidentTrainer {
    device: Device,
    config: AdamConfig,
    /// Updates applied so far (skipped steps do not count, as in `Adam`).
    step: u64,
    /// Current values by official key, without autodiff.
    params: BTreeMap<String, BurnValue>,
    moments: BTreeMap<String, Moments>,
}

impl ResidentTrainer {
    /// A fresh optimizer on `device` (the plain device; steps add autodiff themselves).
    pub fn new(config: AdamConfig, device: &Device) -> Self {
        Self { device: device.clone(), config, step: 0, params: BTreeMap::new(), moments: BTreeMap::new() }
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One step: `forward` builds the loss on an executor whose leaves are the resident parameters (parameters it
    /// has not seen yet come from `store`), then backward and an Adam update, all on the device.
    pub fn step<F>(&mut self, store: &WeightStore, forward: F) -> Result<StepReport, ModelError>
    where
        F: FnOnce(&mut BurnExec<'_>) -> Result<(BurnValue, LossReport), ModelError>,
    {
        let (grads, loss, fresh) = {
            let mut exec = BurnExec::new(store, &self.device, true).with_resident(&self.params);
            let (total, loss) = forward(&mut exec)?;
            let grads = exec.backward_device(&total)?;
            let fresh: Vec<(String, BurnValue)> = exec
                .params()
                .iter()
                .filter(|(key, _)| !self.params.contains_key(*key))
                .map(|(key, p)| (key.clone(), BurnValue::new(p.t.clone().without_autodiff(), p.rank)))
                .collect();
            (grads, loss, fresh)
        };
        self.params.extend(fresh);
        let stats = self.apply(&grads)?;
        Ok(StepReport { loss, stats })
    }

    /// `step::loss_step_on` on the device: the training loss of `sample` on the stage's output.
    pub fn loss_step(
        &mut self,
        model: &GeneratorModel,
        sample: &TrainSample,
        objective: Objective<'_>,
        stage: Stage,
    ) -> Result<StepReport, ModelError> {
        self.step(&model.weights, |exec| forward_loss(exec, model, sample, objective, stage))
    }

    /// `step::l1_step` on the device (the loss of `bench step`).
    pub fn l1_step(
        &mut self,
        model: &GeneratorModel,
        inputs: &crate::model::net::GeneratorInputs<HostTensor>,
        target: &HostTensor,
    ) -> Result<StepReport, ModelError> {
        self.step(&model.weights, |exec| forward_l1(exec, model, inputs, target))
    }

    /// Clips the gradients by their global norm and applies one Adam update; a non-finite norm skips the step and
    /// leaves parameters and moments as they were.
    fn apply(&mut self, grads: &BTreeMap<String, BurnValue>) -> Result<StepStats, ModelError> {
        let grad_norm = self.global_norm(grads)?;
        if !grad_norm.is_finite() {
            tracing::warn!("skipping an optimizer step: non-finite gradient norm");
            return Ok(StepStats { grad_norm, applied: false });
        }
        let clip = self.config.clip_coefficient(grad_norm);
        self.step += 1;
        let (b1, b2, eps) = (self.config.beta1, self.config.beta2, self.config.eps);
        let (bias1, bias2_sqrt) = self.config.bias_corrections(self.step);
        for (key, grad) in grads {
            let Some(param) = self.params.get_mut(key) else { continue };
            if param.shape() != grad.shape() {
                tracing::warn!(key, "gradient shape differs from parameter shape; parameter left unchanged");
                continue;
            }
            let step_size = (self.config.lr_for(key) as f64 / bias1) as f32;
            let moments = self.moments.entry(key.clone()).or_insert_with(|| Moments {
                m: BurnValue::new(param.t.zeros_like(), param.rank),
                v: BurnValue::new(param.t.zeros_like(), param.rank),
            });
            let g = grad.t.clone().mul_scalar(clip);
            let m = moments.m.t.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
            let v = moments.v.t.clone().mul_scalar(b2) + g.square().mul_scalar(1.0 - b2);
            let denom = v.clone().sqrt().div_scalar(bias2_sqrt as f32).add_scalar(eps);
            param.t = param.t.clone() - m.clone().mul_scalar(step_size) / denom;
            moments.m.t = m;
            moments.v.t = v;
        }
        Ok(StepStats { grad_norm, applied: true })
    }

    /// √Σ‖g‖² over all gradients: one squared norm per tensor on the device, one readback, the sum in f64.
    fn global_norm(&self, grads: &BTreeMap<String, BurnValue>) -> Result<f64, ModelError> {
        if grads.is_empty() {
            return Ok(0.0);
        }
        let per_tensor: Vec<Tensor<1>> = grads.values().map(|g| g.t.clone().square().sum()).collect();
        let sums = Tensor::cat(per_tensor, 0).try_into_vec_as::<f32>().map_err(|e| ModelError::Executor {
            executor: "burn",
            reason: format!("reading the gradient norms back failed: {e:?}"),
        })?;
        Ok(sums.iter().map(|s| *s as f64).sum::<f64>().sqrt())
    }

    /// Writes the trained parameters into `store` (each in the shape the store holds it in) and ends the run.
    pub fn finish(self, store: &mut WeightStore) -> Result<(), ModelError> {
        for (key, value) in &self.params {
            let host = host_copy(value);
            let shape = store.get(key).map_or_else(|| host.shape().to_vec(), |old| old.shape().to_vec());
            let host = host
                .reshaped(shape)
                .map_err(|e| ModelError::Tensor { name: key.clone(), reason: format!("writing back: {e}") })?;
            store.insert(key.clone(), host);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::adam::Adam;

    fn scalar_loss(exec: &mut BurnExec<'_>) -> Result<(BurnValue, LossReport), ModelError> {
        use crate::model::ops::Ops;
        // loss = mean|w − target| + mean|b − 1|: gradients ±1/n, easy to reason about, different per element.
        let w = exec.param("w", &[2, 3])?;
        let b = exec.param("b", &[3])?;
        let target = exec.input(&HostTensor::new(vec![2, 3], vec![0.5, -1.0, 2.0, 0.0, 0.25, -0.75]).unwrap());
        let ones = exec.input(&HostTensor::filled(&[3], 1.0));
        let lw = exec.mean_abs(&w, &target);
        let lb = exec.mean_abs(&b, &ones);
        let total = exec.add(&lw, &lb);
        let value = exec.to_host(&total).data()[0];
        Ok((total, LossReport { total: value, terms: vec![] }))
    }

    fn store() -> WeightStore {
        let mut s = WeightStore::new();
        s.insert("w", HostTensor::new(vec![2, 3], vec![1.0, 2.0, -3.0, 0.5, 0.0, 4.0]).unwrap());
        s.insert("b", HostTensor::new(vec![3], vec![0.0, 3.0, -1.0]).unwrap());
        s
    }

    #[test]
    fn matches_the_host_optimizer_step_for_step() {
        let config = AdamConfig {
            lr: 0.05,
            clip_grad_norm: Some(0.3),
            lr_multipliers: vec![("b".into(), 0.1)],
            ..AdamConfig::default()
        };
        let device = Device::flex();
        let mut host_store = store();
        let mut host_adam = Adam::new(config.clone());
        let mut resident = ResidentTrainer::new(config, &device);
        let resident_base = store();
        for _ in 0..5 {
            let grads = {
                let mut exec = BurnExec::new(&host_store, &device, true);
                let (total, _) = scalar_loss(&mut exec).unwrap();
                exec.backward(&total).unwrap()
            };
            let host_stats = host_adam.step(host_store.tensors_mut(), &grads);
            let stats = resident.step(&resident_base, scalar_loss).unwrap();
            assert!(stats.stats.applied);
            assert!((stats.stats.grad_norm - host_stats.grad_norm).abs() < 1e-6 * host_stats.grad_norm.max(1.0));
        }
        assert_eq!(resident.steps_taken(), 5);
        let mut written = store();
        resident.finish(&mut written).unwrap();
        for key in ["w", "b"] {
            let (a, b) = (&written.get(key).unwrap(), &host_store.get(key).unwrap());
            assert_eq!(a.shape(), b.shape());
            let diff = a.max_abs_diff(b).unwrap();
            assert!(diff < 1e-6, "{key}: resident and host Adam differ by {diff}");
            // Five steps of lr 0.05 (×0.1 for b) moved every element.
            assert!(a.data().iter().zip(store().get(key).unwrap().data()).all(|(x, y)| x != y), "{key} did not move");
        }
    }

    #[test]
    fn non_finite_gradients_skip_the_step_and_keep_the_parameters() {
        use crate::model::ops::Ops;
        // loss = mean|w²|: its gradient is NaN wherever w is.
        let squares = |exec: &mut BurnExec<'_>| -> Result<(BurnValue, LossReport), ModelError> {
            let w = exec.param("w", &[2, 3])?;
            let sq = exec.mul(&w, &w);
            let zeros = exec.input(&HostTensor::zeros(&[2, 3]));
            let total = exec.mean_abs(&sq, &zeros);
            Ok((total, LossReport { total: 0.0, terms: vec![] }))
        };
        let device = Device::flex();
        let mut s = store();
        s.insert("w", HostTensor::new(vec![2, 3], vec![f32::NAN, 2.0, -3.0, 0.5, 0.0, 4.0]).unwrap());
        let mut resident = ResidentTrainer::new(AdamConfig::default(), &device);
        let report = resident.step(&s, squares).unwrap();
        assert!(!report.stats.applied);
        assert!(!report.stats.grad_norm.is_finite());
        assert_eq!(resident.steps_taken(), 0);
        let mut written = store();
        resident.finish(&mut written).unwrap();
        let w = written.get("w").unwrap().data();
        assert!(w[0].is_nan() && w[1..] == [2.0, -3.0, 0.5, 0.0, 4.0], "parameters changed: {w:?}");
    }
}
