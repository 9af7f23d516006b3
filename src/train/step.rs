//! One supervised generator step: forward on burn with gradients, L1 loss against a target frame, backward, Adam.
//!
//! Receives a model (its weights are updated in place), an optimizer and one frame's inputs with its target; emits
//! the loss and gradient statistics. Personalization and training build their loops from this.

use burn::tensor::Device;

use crate::model::ModelError;
use crate::model::burn_exec::BurnExec;
use crate::model::engine::GeneratorModel;
use crate::model::net::{self, GeneratorInputs};
use crate::tensor::HostTensor;

use super::adam::{Adam, StepStats};

/// Result of one step.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Loss before the update.
    pub loss: f32,
    pub stats: StepStats,
}

/// `mean|G(inputs) − target|`, its gradients, and one Adam update of `model`.
pub fn l1_step(
    model: &mut GeneratorModel,
    adam: &mut Adam,
    device: &Device,
    inputs: &GeneratorInputs<HostTensor>,
    target: &HostTensor,
) -> Result<StepReport, ModelError> {
    let (grads, loss) = {
        let mut exec = BurnExec::new(&model.weights, device, true);
        let ins = inputs.map(|t| exec.input(t));
        let target = exec.input(target);
        let out = net::generator_forward(&mut exec, &model.config, &ins)?;
        let loss = exec.mean_abs(&out.prediction, &target);
        let loss_value = exec.to_host(&loss).data().first().copied().unwrap_or(f32::NAN);
        (exec.backward(&loss)?, loss_value)
    };
    let stats = adam.step(model.weights.tensors_mut(), &grads);
    Ok(StepReport { loss, stats })
}
