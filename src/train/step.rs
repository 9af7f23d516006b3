//! Supervised generator steps: forward on burn with gradients, the training loss against a target frame, backward,
//! Adam — and the same loss without gradients for evaluation.
//!
//! Receives a model (its weights are updated in place), an optimizer and one training sample (the frame's inputs,
//! target and eye/mouth masks); emits the loss, its terms and gradient statistics. Personalization, base training
//! and Reptile build their loops from these.

use burn::tensor::Device;

use crate::model::ModelError;
use crate::model::exec::burn::{BurnExec, BurnValue};
use crate::model::generator::GeneratorModel;
use crate::model::net::{self, GeneratorInputs};
use crate::model::runner::Stage;
use crate::tensor::HostTensor;

use super::adam::{Adam, StepStats};
use super::loss::{self, LossWeights};
use super::vgg::Vgg19;
use crate::clip::sample::TrainSample;

/// A loss value and its terms.
#[derive(Clone, Debug, PartialEq)]
pub struct LossReport {
    /// The weighted total.
    pub total: f32,
    /// Each weighted term by its `TERM_*` name (see `loss::generator_loss`).
    pub terms: Vec<(&'static str, f32)>,
}

/// Result of one step.
#[derive(Clone, Debug)]
pub struct StepReport {
    /// Loss before the update.
    pub loss: LossReport,
    /// Gradient norm and whether the update was applied.
    pub stats: StepStats,
}

/// What the loss is made of.
#[derive(Clone, Copy)]
pub struct Objective<'a> {
    /// Weight of each term.
    pub weights: &'a LossWeights,
    /// The perceptual loss's network; `None` leaves the perceptual term out whatever its weights.
    pub vgg: Option<&'a Vgg19>,
}

fn first(t: &HostTensor) -> f32 {
    t.data().first().copied().unwrap_or(f32::NAN)
}

/// The loss of `sample` on the stage's output: the refined prediction (`Full`) or the warped source (`Warp`, the
/// official warping pre-training, which runs only the warping network).
pub(crate) fn forward_loss(
    exec: &mut BurnExec<'_>,
    model: &GeneratorModel,
    sample: &TrainSample,
    objective: Objective<'_>,
    stage: Stage,
) -> Result<(BurnValue, LossReport), ModelError> {
    let ins = sample.inputs.map(|t| exec.input(t));
    let target = exec.input(&sample.target);
    let (eye, mouth) = (exec.input(&sample.eye_mask), exec.input(&sample.mouth_mask));
    let output = match stage {
        Stage::Full => net::generator_forward(exec, &model.config, &ins)?.prediction,
        Stage::Warp => net::warp::warp_forward(exec, &model.config, &ins)?.deformed,
    };
    let terms = loss::generator_loss(exec, objective.weights, objective.vgg, &output, &target, &eye, &mouth)?;
    let report = read_report(exec, &terms.total, &terms.terms);
    Ok((terms.total, report))
}

/// The loss and its terms in one readback (each readback waits for the device, so not one per term).
pub(crate) fn read_report(
    exec: &mut BurnExec<'_>,
    total: &BurnValue,
    terms: &[(&'static str, BurnValue)],
) -> LossReport {
    use crate::model::ops::Ops;
    let values: Vec<BurnValue> = std::iter::once(total).chain(terms.iter().map(|(_, t)| t)).cloned().collect();
    let all = exec.concat(&values.iter().collect::<Vec<_>>(), 0);
    let host = exec.to_host(&all);
    let at = |i: usize| host.data().get(i).copied().unwrap_or(f32::NAN);
    LossReport { total: at(0), terms: terms.iter().enumerate().map(|(i, (name, _))| (*name, at(i + 1))).collect() }
}

/// The training loss of `sample`, its gradients, and one Adam update of `model` on the host (the reference the
/// device-resident `ResidentTrainer::loss_step` is tested against).
pub fn loss_step(
    model: &mut GeneratorModel,
    adam: &mut Adam,
    device: &Device,
    sample: &TrainSample,
    objective: Objective<'_>,
) -> Result<StepReport, ModelError> {
    let (grads, loss) = {
        let mut exec = BurnExec::new(&model.weights, device, true);
        let (total, report) = forward_loss(&mut exec, model, sample, objective, Stage::Full)?;
        (exec.backward(&total)?, report)
    };
    let stats = adam.step(model.weights.tensors_mut(), &grads);
    Ok(StepReport { loss, stats })
}

/// Mean loss over samples (the held-out measure of personalization). One executor serves every sample, so the
/// weights are uploaded once.
pub fn evaluate_mean(
    model: &GeneratorModel,
    device: &Device,
    samples: &[TrainSample],
    objective: Objective<'_>,
) -> Result<f64, ModelError> {
    Ok(evaluate_mean_until(model, device, samples, objective, |_| true)?.unwrap_or(f64::NAN))
}

/// `evaluate_mean` that calls `keep_going(samples done)` after each sample and stops with `None` when it says no
/// (progress and cancellation).
pub fn evaluate_mean_until(
    model: &GeneratorModel,
    device: &Device,
    samples: &[TrainSample],
    objective: Objective<'_>,
    mut keep_going: impl FnMut(usize) -> bool,
) -> Result<Option<f64>, ModelError> {
    let mut exec = BurnExec::new(&model.weights, device, false);
    let mut sum = 0.0f64;
    for (i, s) in samples.iter().enumerate() {
        sum += forward_loss(&mut exec, model, s, objective, Stage::Full)?.1.total as f64;
        if !keep_going(i + 1) {
            return Ok(None);
        }
    }
    Ok(Some(sum / samples.len().max(1) as f64))
}

/// `mean|G(inputs) − target|` (the loss of `bench step`).
pub(crate) fn forward_l1(
    exec: &mut BurnExec<'_>,
    model: &GeneratorModel,
    inputs: &GeneratorInputs<HostTensor>,
    target: &HostTensor,
) -> Result<(BurnValue, LossReport), ModelError> {
    let ins = inputs.map(|t| exec.input(t));
    let target = exec.input(target);
    let out = net::generator_forward(exec, &model.config, &ins)?;
    let loss = exec.mean_abs(&out.prediction, &target);
    let value = first(&exec.to_host(&loss));
    Ok((loss, LossReport { total: value, terms: vec![(loss::TERM_L1, value)] }))
}

/// `forward_l1` and one Adam update on the host.
pub fn l1_step(
    model: &mut GeneratorModel,
    adam: &mut Adam,
    device: &Device,
    inputs: &GeneratorInputs<HostTensor>,
    target: &HostTensor,
) -> Result<StepReport, ModelError> {
    let (grads, loss) = {
        let mut exec = BurnExec::new(&model.weights, device, true);
        let (total, report) = forward_l1(&mut exec, model, inputs, target)?;
        (exec.backward(&total)?, report)
    };
    let stats = adam.step(model.weights.tensors_mut(), &grads);
    Ok(StepReport { loss, stats })
}
