//! The inner loop (personalization, meta-training) and Reptile's outer step on the tiny generator.

mod common;

use std::sync::atomic::AtomicBool;

use metaportrait::face::condition;
use metaportrait::model::ModelError;
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::engine::GeneratorModel;
use metaportrait::model::net::{GeneratorInputs, INPUT_NAMES};
use metaportrait::tensor::HostTensor;
use metaportrait::train::adam::{Adam, AdamConfig};
use metaportrait::train::loss::{self, LossWeights};
use metaportrait::train::reptile::{self, InnerLoop, LoopError};
use metaportrait::train::step::{self, Objective, TrainSample};

fn tiny() -> GeneratorModel {
    let cfg = GeneratorConfig::from_json_file(&common::generator_fixture("tiny_config.json")).expect("config");
    GeneratorModel::load(cfg, &common::generator_fixture("tiny_weights.safetensors")).expect("weights")
}

fn sample(shift: f32) -> TrainSample {
    let io = common::load("tiny_io.safetensors");
    let inputs =
        GeneratorInputs::try_from_fn(|n| io.get(n).cloned().ok_or_else(|| ModelError::MissingInput(n.to_owned())))
            .expect("inputs");
    assert_eq!(INPUT_NAMES.len(), 6);
    let mut target = io.get("input.target").expect("target").clone();
    target.data_mut().iter_mut().for_each(|v| *v = (*v + shift).clamp(0.0, 1.0));
    let mut kp = [[0.0f32; 2]; 58];
    for (k, c) in kp.iter_mut().zip(inputs.driving_ldmk.data().chunks(2)) {
        *k = [c[0], c[1]];
    }
    TrainSample { inputs, target, eye_mask: condition::eye_mask(&kp, 256), mouth_mask: condition::mouth_mask(&kp, 256) }
}

fn device() -> burn::tensor::Device {
    metaportrait::model::burn_exec::exec_device(metaportrait::runtime::Device::Cpu).expect("device")
}

#[test]
fn the_inner_loop_lowers_the_loss_and_can_be_cancelled() {
    let weights = LossWeights { perceptual: [0.0; 5], ..LossWeights::default() };
    let objective = Objective { weights: &weights, vgg: None };
    let (adam, dev) = (AdamConfig::default(), device());
    let run = |steps| InnerLoop { steps, adam: &adam, device: &dev, objective };
    let samples = vec![sample(0.0)];
    let mut model = tiny();
    let before = step::evaluate_mean(&model, &device(), &samples, objective).expect("eval");
    let mut seen = Vec::new();
    let never = AtomicBool::new(false);
    let losses =
        reptile::inner_loop(&mut model, &samples, &run(3), &never, |p| seen.push((p.step, p.total))).expect("loop");
    let after = step::evaluate_mean(&model, &device(), &samples, objective).expect("eval");
    assert_eq!(seen, vec![(1, 3), (2, 3), (3, 3)]);
    assert!((losses[0].total as f64 - before).abs() < 1e-4 * before.max(1.0), "first step sees the start model");
    assert!(after < before, "loss {before} -> {after}");
    assert!(losses[0].terms.iter().any(|(n, _)| *n == loss::TERM_EYE));

    let cancelled = AtomicBool::new(true);
    let mut untouched = tiny();
    let err = reptile::inner_loop(&mut untouched, &samples, &run(4), &cancelled, |_| {});
    assert!(matches!(err, Err(LoopError::Cancelled(0))));
    let reference = tiny();
    assert!(untouched.weights.iter().all(|(k, t)| reference.weights.get(k) == Some(t)));
    assert!(matches!(reptile::inner_loop(&mut untouched, &[], &run(1), &never, |_| {}), Err(LoopError::NoSamples)));
}

#[test]
fn reptile_applies_the_mean_task_delta_through_the_outer_adam_and_skips_broken_tasks() {
    let weights = LossWeights { perceptual: [0.0; 5], eye: 0.0, mouth: 0.0, ..LossWeights::default() };
    let objective = Objective { weights: &weights, vgg: None };
    let never = AtomicBool::new(false);
    let tasks = vec![vec![sample(0.0)], vec![sample(0.1)]];
    let (adam, dev) = (AdamConfig::default(), device());
    let inner = InnerLoop { steps: 1, adam: &adam, device: &dev, objective };

    // By hand: each task from θ, the mean of θ − θ′, one outer Adam step.
    let base = tiny();
    let mut expected = base.clone();
    let mut mean: std::collections::BTreeMap<String, HostTensor> = Default::default();
    for task in &tasks {
        let mut fast = base.clone();
        reptile::inner_loop(&mut fast, task, &inner, &never, |_| {}).expect("inner");
        for (k, theta) in base.weights.iter() {
            let prime = fast.weights.get(k).expect("key");
            if prime.data() == theta.data() {
                continue;
            }
            let d = mean.entry(k.clone()).or_insert_with(|| HostTensor::zeros(theta.shape()));
            for ((acc, a), b) in d.data_mut().iter_mut().zip(theta.data()).zip(prime.data()) {
                *acc += (a - b) / 2.0;
            }
        }
    }
    assert!(mean.keys().any(|k| k.starts_with("SPDAE_G.")) && mean.keys().any(|k| k.starts_with("dense_motion")));
    assert!(!mean.keys().any(|k| k.ends_with("weight_u")), "buffers are not meta-learned");
    Adam::new(reptile::outer_adam_config()).step(expected.weights.tensors_mut(), &mean);

    let mut model = tiny();
    let mut outer = Adam::new(reptile::outer_adam_config());
    let report = reptile::reptile_step(&mut model, &mut outer, &tasks, &inner, &never).expect("meta");
    assert_eq!((report.tasks_used, report.tasks_skipped, report.applied), (2, 0, true));
    for (k, t) in expected.weights.iter() {
        let got = model.weights.get(k).expect("key");
        let diff = got.max_abs_diff(t).expect("shape");
        assert!(diff <= 1e-6, "{k}: {diff}");
    }

    // A task whose target is NaN is skipped; the other still updates θ.
    let mut broken = sample(0.0);
    broken.target.data_mut()[0] = f32::NAN;
    let mut model = tiny();
    let mut outer = Adam::new(reptile::outer_adam_config());
    let report =
        reptile::reptile_step(&mut model, &mut outer, &[vec![broken], tasks[0].clone()], &inner, &never).expect("meta");
    assert_eq!((report.tasks_used, report.tasks_skipped), (1, 1));
    assert!(model.weights.iter().all(|(_, t)| t.data().iter().all(|v| v.is_finite())));
}
