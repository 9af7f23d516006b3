//! Training state kept on the executor's device for a run of steps: the parameters being trained and Adam's moments.
//!
//! Owns device copies of every parameter a step has touched and their first/second moments. Receives the model's
//! host weights (each parameter is uploaded once, the first time a forward asks for it) and, per step, a forward
//! that builds the loss; backward, the gradient all-reduce (`reduce`), global-norm clipping and the Adam update all
//! run on the device, and only the loss terms and one vector of per-tensor squared gradient norms come back. Emits
//! step reports; `sync` writes the trained parameters into the host store (checkpoints, the end of a run) and
//! `to_adam`/`from_adam` convert the optimizer state to and from the host optimizer's checkpoint form. The update
//! rule is `adam::Adam`'s (checked against it in the tests); the host optimizer moves every parameter up and every
//! gradient down on each step, which on a GPU costs more than the arithmetic.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};

use crate::model::ModelError;
use crate::model::exec::burn::{BurnExec, BurnValue, device_copy, host_copy};
use crate::model::generator::GeneratorModel;
use crate::model::runner::Stage;
use crate::model::weights::WeightStore;
use crate::tensor::HostTensor;

use super::adam::{Adam, AdamConfig, StepStats};
use super::reduce::{GradientReduce, SingleReplica};
use super::step::{LossReport, Objective, StepReport, forward_l1, forward_loss};
use crate::clip::sample::TrainSample;

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
    /// Moments of a resumed optimizer (flat, `m.<key>`/`v.<key>` as `Adam::state` writes them), uploaded when their
    /// parameter first gets a gradient.
    restored: WeightStore,
}

/// A second network in a step's graph: its host weights and its trainer's resident values. Its parameters get
/// gradients (and count in the clip norm, as in the official joint step) but are not this trainer's to update.
#[derive(Clone, Copy)]
pub struct Joint<'a> {
    /// The second network's host weights (for leaves not yet resident).
    pub store: &'a WeightStore,
    /// Its trainer's current device values, which take precedence over `store`.
    pub resident: &'a BTreeMap<String, BurnValue>,
}

impl ResidentTrainer {
    /// A fresh optimizer on `device` (the plain device; steps add autodiff themselves).
    pub fn new(config: AdamConfig, device: &Device) -> Self {
        Self {
            device: device.clone(),
            config,
            step: 0,
            params: BTreeMap::new(),
            moments: BTreeMap::new(),
            restored: WeightStore::new(),
        }
    }

    /// Continues a host optimizer (a resumed checkpoint): its configuration, step count and moments.
    pub fn from_adam(adam: &Adam, device: &Device) -> Self {
        let (step, restored) = adam.state();
        Self { step, restored, ..Self::new(adam.config().clone(), device) }
    }

    /// The host optimizer in the same state (for checkpoints).
    pub fn to_adam(&self) -> Result<Adam, ModelError> {
        let mut state = self.restored.clone();
        for (key, moments) in &self.moments {
            for (prefix, value) in [("m.", &moments.m), ("v.", &moments.v)] {
                let host = host_copy(value);
                let flat = host
                    .reshaped(vec![value.t.shape().num_elements()])
                    .map_err(|e| ModelError::Tensor { name: format!("{prefix}{key}"), reason: e.to_string() })?;
                state.insert(format!("{prefix}{key}"), flat);
            }
        }
        Adam::from_state(self.config.clone(), self.step, &state)
            .map_err(|reason| ModelError::Tensor { name: "optimizer state".into(), reason: reason.to_string() })
    }

    /// The same optimizer starting from parameter values already on the device (Reptile's inner loop starts from
    /// the outer trainer's θ without a round trip through the host). Keys it lacks still come from the store.
    pub fn starting_from(mut self, params: &BTreeMap<String, BurnValue>) -> Self {
        self.params = params.clone();
        self
    }

    /// The current values of the parameters trained so far, by official key.
    pub fn params(&self) -> &BTreeMap<String, BurnValue> {
        &self.params
    }

    /// Keys whose parameters have received a gradient (and so have moments); buffers never do.
    pub fn trained_keys(&self) -> impl Iterator<Item = &String> {
        self.moments.keys()
    }

    /// The resident value of `key`, uploaded from `store` in `shape` (the leaf shape a forward used) the first time.
    pub fn resident_or_upload(
        &mut self,
        store: &WeightStore,
        key: &str,
        shape: &[usize],
    ) -> Result<&BurnValue, ModelError> {
        if !self.params.contains_key(key) {
            let host = store
                .get(key)
                .ok_or_else(|| ModelError::Tensor { name: key.into(), reason: "missing from the weights".into() })?;
            let value = upload_shaped(host, shape, &self.device, key, "")?;
            self.params.insert(key.to_owned(), value);
        }
        self.params.get(key).ok_or_else(|| ModelError::Tensor { name: key.into(), reason: "not resident".into() })
    }

    /// One Adam update with gradients computed elsewhere (Reptile's mean θ − θ′), clipped by their global norm like
    /// a step's; every key must already be resident (`resident_or_upload`).
    pub fn apply_gradients(&mut self, grads: &BTreeMap<String, BurnValue>) -> Result<StepStats, ModelError> {
        if let Some(missing) = grads.keys().find(|k| !self.params.contains_key(*k)) {
            return Err(ModelError::Tensor {
                name: missing.clone(),
                reason: "gradient for a parameter that is not resident".into(),
            });
        }
        self.apply(grads)
    }

    /// Whether every element of the trained parameters is finite: one sum per tensor on the device, one readback (a
    /// sum is finite exactly when its terms are, short of an overflow that only a diverged run reaches).
    pub fn trained_all_finite(&self) -> Result<bool, ModelError> {
        let sums = self.trained_keys().filter_map(|k| self.params.get(k)).map(|p| p.t.clone().sum()).collect();
        Ok(read_scalars(sums, "parameter sums")?.iter().all(|s| s.is_finite()))
    }

    /// Updates applied so far (skipped non-finite steps not counted), resumed ones included.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One step: `forward` builds the loss on an executor whose leaves are the resident parameters (parameters it
    /// has not seen yet come from `store`), then backward and an Adam update, all on the device.
    pub fn step<F>(&mut self, store: &WeightStore, forward: F) -> Result<StepReport, ModelError>
    where
        F: FnOnce(&mut BurnExec<'_>) -> Result<(BurnValue, LossReport), ModelError>,
    {
        let forward = |exec: &mut BurnExec<'_>| forward(exec).map(|(total, loss)| (total, loss, ()));
        Ok(self.step_joint(store, None, &SingleReplica, forward)?.0)
    }

    /// `step` with a second network in the graph (`joint`), the gradients passed through `reduce` before the update,
    /// and whatever else the forward wants to hand out (`X`, e.g. a detached prediction).
    pub fn step_joint<F, X>(
        &mut self,
        store: &WeightStore,
        joint: Option<Joint<'_>>,
        reduce: &dyn GradientReduce,
        forward: F,
    ) -> Result<(StepReport, X), ModelError>
    where
        F: FnOnce(&mut BurnExec<'_>) -> Result<(BurnValue, LossReport, X), ModelError>,
    {
        let (mut grads, loss, extra) = self.gradients(store, joint, forward)?;
        reduce.all_reduce_device(&mut grads)?;
        let stats = self.apply(&grads)?;
        Ok((StepReport { loss, stats }, extra))
    }

    /// Forward and backward without an update (for steps that average several of them): the gradients by key, this
    /// network's and a joint one's, on the device; the loss; the forward's extra. Leaves of this network seen for the
    /// first time become resident.
    pub fn gradients<F, X>(
        &mut self,
        store: &WeightStore,
        joint: Option<Joint<'_>>,
        forward: F,
    ) -> Result<(BTreeMap<String, BurnValue>, LossReport, X), ModelError>
    where
        F: FnOnce(&mut BurnExec<'_>) -> Result<(BurnValue, LossReport, X), ModelError>,
    {
        let (grads, loss, extra, fresh) = {
            let mut exec = match joint {
                Some(other) => BurnExec::joint(store, other.store, &self.device, true).with_resident(other.resident),
                None => BurnExec::new(store, &self.device, true),
            }
            .with_resident(&self.params);
            let (total, loss, extra) = forward(&mut exec)?;
            let grads = exec.backward_device(&total)?;
            // Leaves of this network seen for the first time; the joint network's stay its trainer's.
            let fresh: Vec<(String, BurnValue)> = exec
                .params()
                .iter()
                .filter(|(key, _)| !self.params.contains_key(*key) && store.get(key).is_some())
                .map(|(key, p)| (key.clone(), BurnValue::new(p.t.clone().without_autodiff(), p.rank)))
                .collect();
            (grads, loss, extra, fresh)
        };
        self.params.extend(fresh);
        Ok((grads, loss, extra))
    }

    /// Sets the learning rate of the next updates (a schedule).
    pub fn set_lr(&mut self, lr: f32) {
        self.config.lr = lr;
    }

    /// The training loss of `sample` on the stage's output (`Warp`: only the warping network runs, gets gradients and
    /// moves) and one update, on the device.
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
            if !self.moments.contains_key(key) {
                let first = Moments {
                    m: restored_moment(&mut self.restored, "m.", key, param)?,
                    v: restored_moment(&mut self.restored, "v.", key, param)?,
                };
                self.moments.insert(key.clone(), first);
            }
            let Some(moments) = self.moments.get_mut(key) else { continue };
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
        let per_tensor = grads.values().map(|g| g.t.clone().square().sum()).collect();
        let sums = read_scalars(per_tensor, "gradient norms")?;
        Ok(sums.iter().map(|s| *s as f64).sum::<f64>().sqrt())
    }

    /// Writes the trained parameters into `store` (each in the shape the store holds it in) and ends the run.
    pub fn finish(self, store: &mut WeightStore) -> Result<(), ModelError> {
        self.sync(store)
    }

    /// Writes the trained parameters into `store` (each in the shape the store holds it in); training goes on.
    pub fn sync(&self, store: &mut WeightStore) -> Result<(), ModelError> {
        write_back(&self.params, store)
    }
}

/// Reads `values` back into `store`, each in the shape the store already holds it in (a leaf may be shaped
/// differently from its stored tensor).
fn write_back(values: &BTreeMap<String, BurnValue>, store: &mut WeightStore) -> Result<(), ModelError> {
    for (key, value) in values {
        let host = host_copy(value);
        let shape = store.get(key).map_or_else(|| host.shape().to_vec(), |old| old.shape().to_vec());
        let host = host
            .reshaped(shape)
            .map_err(|e| ModelError::Tensor { name: key.clone(), reason: format!("writing back: {e}") })?;
        store.insert(key.clone(), host);
    }
    Ok(())
}

/// A running sum of per-key tensors on the device: the gradients of a step's several clips, or Reptile's θ − θ′ over
/// its tasks. Tensors of a key must all have one shape.
#[derive(Default)]
pub struct DeviceSum {
    terms: usize,
    sum: BTreeMap<String, BurnValue>,
}

impl DeviceSum {
    /// Adds one term (a map by key; keys may differ between terms).
    pub fn add(&mut self, term: impl IntoIterator<Item = (String, BurnValue)>) {
        self.terms += 1;
        for (key, value) in term {
            match self.sum.get_mut(&key) {
                Some(acc) => acc.t = acc.t.clone() + value.t,
                None => {
                    self.sum.insert(key, value);
                }
            }
        }
    }

    /// Terms added so far.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// The element-wise mean over the terms added (a key missing from a term counts as zero there).
    pub fn mean(self) -> BTreeMap<String, BurnValue> {
        let scale = 1.0 / self.terms.max(1) as f32;
        self.sum.into_iter().map(|(key, v)| (key, BurnValue::new(v.t.mul_scalar(scale), v.rank))).collect()
    }
}

/// An exponential moving average of a trainer's parameters, kept beside them on the device.
pub struct ResidentEma {
    decay: f32,
    values: BTreeMap<String, BurnValue>,
}

impl ResidentEma {
    /// An empty average with per-update `decay` (e.g. `tsr::EMA_DECAY`); parameters join it on their first update.
    pub fn new(decay: f32) -> Self {
        Self { decay, values: BTreeMap::new() }
    }

    /// `ema ← d·ema + (1 − d)·θ` for every parameter `trainer` has updated. A parameter new to the average starts
    /// from its entry in `start` (the average a run resumed with, or the weights it started from), else from its
    /// current value.
    pub fn update(&mut self, trainer: &ResidentTrainer, start: &WeightStore) -> Result<(), ModelError> {
        let d = self.decay;
        for key in trainer.trained_keys() {
            let Some(theta) = trainer.params().get(key) else { continue };
            let previous = match (self.values.remove(key), start.get(key)) {
                (Some(v), _) => v,
                (None, Some(host)) => upload_shaped(host, &theta.shape(), &theta.t.device(), key, "EMA: ")?,
                (None, None) => theta.clone(),
            };
            let next = previous.t.mul_scalar(d) + theta.t.clone().mul_scalar(1.0 - d);
            self.values.insert(key.clone(), BurnValue::new(next, theta.rank));
        }
        Ok(())
    }

    /// Writes the average into `store` (each tensor in the shape the store holds it in); parameters never updated
    /// keep their entry there.
    pub fn sync(&self, store: &mut WeightStore) -> Result<(), ModelError> {
        write_back(&self.values, store)
    }
}

/// A device copy of `host` in `shape` (a leaf's shape, which may differ from the stored one); a size mismatch is
/// reported under `name`, after `context`.
fn upload_shaped(
    host: &HostTensor,
    shape: &[usize],
    device: &Device,
    name: &str,
    context: &str,
) -> Result<BurnValue, ModelError> {
    let shaped = host
        .clone()
        .reshaped(shape.to_vec())
        .map_err(|e| ModelError::Tensor { name: name.to_owned(), reason: format!("{context}{e}") })?;
    device_copy(&shaped, device)
}

/// One scalar per tensor, read back in a single transfer (each readback waits for the device).
fn read_scalars(scalars: Vec<Tensor<1>>, what: &str) -> Result<Vec<f32>, ModelError> {
    if scalars.is_empty() {
        return Ok(Vec::new());
    }
    Tensor::cat(scalars, 0).try_into_vec_as::<f32>().map_err(|e| ModelError::Executor {
        executor: "burn",
        reason: format!("reading the {what} back failed: {e:?}"),
    })
}

/// A moment estimate of `param` to start from: the resumed optimizer's (`prefix` `m.` or `v.`), else zeros.
fn restored_moment(
    restored: &mut WeightStore,
    prefix: &str,
    key: &str,
    param: &BurnValue,
) -> Result<BurnValue, ModelError> {
    let name = format!("{prefix}{key}");
    match restored.remove(&name) {
        Some(flat) => upload_shaped(
            &flat,
            &param.shape(),
            &param.t.device(),
            &name,
            "the resumed optimizer state does not fit the parameter: ",
        ),
        None => Ok(BurnValue::new(param.t.zeros_like(), param.rank)),
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
    fn external_gradients_update_like_the_host_optimizer_and_need_resident_parameters() {
        let device = Device::flex();
        let config = AdamConfig { lr: 0.1, clip_grad_norm: Some(0.3), ..AdamConfig::default() };
        let base = store();
        let grad = HostTensor::new(vec![2, 3], vec![0.5, -0.25, 1.0, 0.0, 2.0, -1.0]).unwrap();
        let mut resident = ResidentTrainer::new(config.clone(), &device);
        let grads = BTreeMap::from([("w".to_owned(), device_copy(&grad, &device).unwrap())]);
        let err = resident.apply_gradients(&grads).unwrap_err();
        assert!(err.to_string().contains("not resident"), "{err}");
        // Uploaded in the leaf shape asked for, once.
        assert_eq!(resident.resident_or_upload(&base, "w", &[3, 2]).unwrap().shape(), [3, 2]);
        assert_eq!(resident.resident_or_upload(&base, "w", &[3, 2]).unwrap().shape(), [3, 2]);
        assert!(resident.resident_or_upload(&base, "nope", &[1]).is_err());
        let grads = BTreeMap::from([(
            "w".to_owned(),
            device_copy(&grad.clone().reshaped(vec![3, 2]).unwrap(), &device).unwrap(),
        )]);
        let mut host_weights = store();
        let mut host = Adam::new(config);
        for _ in 0..3 {
            assert!(resident.apply_gradients(&grads).unwrap().applied);
            host.step(host_weights.tensors_mut(), &BTreeMap::from([("w".to_owned(), grad.clone())]));
        }
        assert_eq!(resident.trained_keys().collect::<Vec<_>>(), ["w"]);
        assert!(resident.trained_all_finite().unwrap());
        let mut written = store();
        resident.sync(&mut written).unwrap();
        let diff = written.get("w").unwrap().max_abs_diff(host_weights.get("w").unwrap()).unwrap();
        assert!(diff < 1e-6, "{diff}");
        assert_eq!(written.get("w").unwrap().shape(), [2, 3], "written back in the store's shape");
    }

    #[test]
    fn a_device_sum_averages_over_its_terms_with_missing_keys_as_zero() {
        let device = Device::flex();
        let term = |pairs: &[(&str, &[f32])]| -> Vec<(String, BurnValue)> {
            let value = |v: &[f32]| device_copy(&HostTensor::new(vec![v.len()], v.to_vec()).unwrap(), &device).unwrap();
            pairs.iter().map(|(k, v)| ((*k).to_owned(), value(v))).collect()
        };
        let mut sum = DeviceSum::default();
        sum.add(term(&[("a", &[1.0, 2.0]), ("b", &[4.0])]));
        sum.add(term(&[("a", &[3.0, -2.0])]));
        assert_eq!(sum.terms(), 2);
        let mean = sum.mean();
        assert_eq!(host_copy(&mean["a"]).data(), [2.0, 0.0]);
        assert_eq!(host_copy(&mean["b"]).data(), [2.0], "absent from the second term: counted as zero");
    }

    #[test]
    fn a_trained_parameter_that_went_non_finite_is_reported() {
        let device = Device::flex();
        let base = store();
        let mut start = BTreeMap::new();
        let b = HostTensor::new(vec![3], vec![f32::INFINITY, 3.0, -1.0]).unwrap();
        start.insert("b".to_owned(), device_copy(&b, &device).unwrap());
        // A fresh trainer has trained nothing yet.
        assert!(ResidentTrainer::new(AdamConfig::default(), &device).trained_all_finite().unwrap());
        let mut finite = ResidentTrainer::new(AdamConfig::default(), &device);
        finite.step(&base, scalar_loss).unwrap();
        assert!(finite.trained_all_finite().unwrap());
        // Started from a resident `b` holding +inf: its gradient (the sign) is finite, the step applies and b stays
        // infinite, which the check must see.
        let mut broken = ResidentTrainer::new(AdamConfig::default(), &device).starting_from(&start);
        assert!(broken.step(&base, scalar_loss).unwrap().stats.applied);
        assert!(broken.trained_keys().any(|k| k == "b"));
        assert!(!broken.trained_all_finite().unwrap());
    }

    #[test]
    fn a_run_resumed_through_the_host_optimizer_state_continues_exactly() {
        let device = Device::flex();
        let config = AdamConfig { lr: 0.05, ..AdamConfig::default() };
        let base = store();
        let mut straight = ResidentTrainer::new(config.clone(), &device);
        for _ in 0..4 {
            straight.step(&base, scalar_loss).unwrap();
        }
        let mut first = ResidentTrainer::new(config.clone(), &device);
        for _ in 0..2 {
            first.step(&base, scalar_loss).unwrap();
        }
        // What a checkpoint holds: the weights and the host optimizer's flat moments.
        let mut halfway = store();
        first.sync(&mut halfway).unwrap();
        let (step, moments) = first.to_adam().unwrap().state();
        assert_eq!((step, moments.len()), (2, 4), "m and v of both parameters");
        let adam = Adam::from_state(config, step, &moments).unwrap();
        let mut resumed = ResidentTrainer::from_adam(&adam, &device);
        for _ in 0..2 {
            resumed.step(&halfway, scalar_loss).unwrap();
        }
        let (mut a, mut b) = (store(), store());
        straight.finish(&mut a).unwrap();
        resumed.finish(&mut b).unwrap();
        for key in ["w", "b"] {
            assert_eq!(a.get(key).unwrap().data(), b.get(key).unwrap().data(), "{key}");
            assert_ne!(a.get(key).unwrap().data(), halfway.get(key).unwrap().data(), "{key} moved after resuming");
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
