//! The inner loop (personalization, meta-training) and Reptile's outer step on the tiny generator.

mod common;

use std::sync::atomic::AtomicBool;

use metaportrait::clip::sample::TrainSample;
use metaportrait::face::condition;
use metaportrait::model::ModelError;
use metaportrait::model::config::GeneratorConfig;
use metaportrait::model::generator::GeneratorModel;
use metaportrait::model::net::{GeneratorInputs, INPUT_NAMES};
use metaportrait::tensor::HostTensor;
use metaportrait::train::adam::{Adam, AdamConfig};
use metaportrait::train::loss::{self, LossWeights};
use metaportrait::train::reduce::{LocalReplicas, SingleReplica};
use metaportrait::train::reptile::{self, InnerLoop, LoopError};
use metaportrait::train::resident::ResidentTrainer;
use metaportrait::train::step::{self, Objective};

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
    metaportrait::runtime::burn_device::exec_device(metaportrait::runtime::Device::Cpu).expect("device")
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
    // The terms are the weighted parts of the total (read back together, in order).
    let parts: f32 = losses[0].terms.iter().map(|(_, v)| v).sum();
    assert!((parts - losses[0].total).abs() <= 1e-4 * losses[0].total, "{:?}", losses[0]);

    let cancelled = AtomicBool::new(true);
    let mut untouched = tiny();
    let err = reptile::inner_loop(&mut untouched, &samples, &run(4), &cancelled, |_| {});
    assert!(matches!(err, Err(LoopError::Cancelled(0))));
    let reference = tiny();
    assert!(untouched.weights.iter().all(|(k, t)| reference.weights.get(k) == Some(t)));
    assert!(matches!(reptile::inner_loop(&mut untouched, &[], &run(1), &never, |_| {}), Err(LoopError::NoSamples)));
}

#[test]
fn the_device_resident_inner_loop_matches_the_host_optimizer() {
    // Same three steps twice: parameters and moments kept on the executor device (`inner_loop`), and the host Adam
    // that uploads parameters and downloads gradients every step. Only float rounding in the update may differ.
    let weights = LossWeights { perceptual: [0.0; 5], ..LossWeights::default() };
    let objective = Objective { weights: &weights, vgg: None };
    let (adam, dev) = (AdamConfig::default(), device());
    let samples = vec![sample(0.0), sample(0.1)];
    let never = AtomicBool::new(false);
    let mut resident = tiny();
    let run = InnerLoop { steps: 3, adam: &adam, device: &dev, objective };
    let resident_losses = reptile::inner_loop(&mut resident, &samples, &run, &never, |_| {}).expect("resident loop");
    let mut host = tiny();
    let mut host_adam = Adam::new(adam.clone());
    let host_losses: Vec<f32> = (0..3)
        .map(|i| step::loss_step(&mut host, &mut host_adam, &dev, &samples[i % 2], objective).expect("host").loss.total)
        .collect();
    for (r, h) in resident_losses.iter().zip(&host_losses) {
        assert!((r.total - h).abs() <= 1e-5 * h.abs().max(1.0), "loss {} vs {h}", r.total);
    }
    let start = tiny();
    let (mut moved, mut disagree, mut total) = (0.0f32, 0usize, 0usize);
    for (key, h) in host.weights.iter() {
        let r = resident.weights.get(key).expect("same keys");
        assert_eq!(r.shape(), h.shape(), "{key}");
        moved = moved.max(h.max_abs_diff(start.weights.get(key).expect("key")).expect("same shape"));
        total += h.len();
        disagree += h.data().iter().zip(r.data()).filter(|(a, b)| (*a - *b).abs() > 2e-6).count();
    }
    // Three Adam steps of lr 2e-4 move parameters by up to ~6e-4, and nearly every element of the two runs agrees to
    // 2e-6. The exceptions (about 1 in 15 000 here) are parameters whose true gradient is zero, such as conv biases
    // feeding a batch norm: Adam normalises float noise to ±lr there, so rounding differences decide the sign.
    assert!(moved > 1e-4, "the steps barely moved the model ({moved})");
    assert!(disagree * 5_000 < total, "{disagree} of {total} elements differ by more than 2e-6");
    // And the two models are equally good: their losses agree to 0.1% of what the three steps gained (7e-6 here).
    let before = step::evaluate_mean(&start, &dev, &samples, objective).expect("eval");
    let after_resident = step::evaluate_mean(&resident, &dev, &samples, objective).expect("eval");
    let after_host = step::evaluate_mean(&host, &dev, &samples, objective).expect("eval");
    let gained = before - after_host;
    assert!(gained > 0.0, "the host steps did not lower the loss ({before} -> {after_host})");
    assert!((after_resident - after_host).abs() < 1e-3 * gained, "{before} -> {after_resident} vs {after_host}");
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

    // The outer step on the device: θ and the outer moments resident, written back by `sync`.
    let mut model = tiny();
    let mut outer = ResidentTrainer::new(reptile::outer_adam_config(), &dev);
    let mut seen = Vec::new();
    let record = |task: usize, p: &reptile::InnerProgress| seen.push((task, p.step, p.total));
    let report =
        reptile::reptile_step(&model, &mut outer, &tasks, &inner, &SingleReplica, &never, record).expect("meta");
    assert_eq!(seen, [(0, 1, 1), (1, 1, 1)], "every inner step of every task is reported with its task");
    assert_eq!((report.tasks_used, report.tasks_skipped, report.applied), (2, 0, true));
    outer.sync(&mut model.weights).expect("sync");
    for (k, t) in expected.weights.iter() {
        let got = model.weights.get(k).expect("key");
        let diff = got.max_abs_diff(t).expect("shape");
        assert!(diff <= 1e-6, "{k}: {diff}");
    }

    // Data-parallel: two replicas with one task each, their mean delta exchanged through the reduce seam, land where
    // one process with both tasks does (`LocalReplicas` hands the second caller the mean of both).
    let exchange = LocalReplicas::new(2);
    let (first, second) = (tiny(), tiny());
    let mut first_outer = ResidentTrainer::new(reptile::outer_adam_config(), &dev);
    let mut second_outer = ResidentTrainer::new(reptile::outer_adam_config(), &dev);
    reptile::reptile_step(&first, &mut first_outer, &tasks[..1], &inner, &exchange, &never, |_, _| {})
        .expect("replica 1");
    reptile::reptile_step(&second, &mut second_outer, &tasks[1..], &inner, &exchange, &never, |_, _| {})
        .expect("replica 2");
    let mut replicated = tiny();
    second_outer.sync(&mut replicated.weights).expect("sync");
    for (k, t) in expected.weights.iter() {
        let diff = replicated.weights.get(k).expect("key").max_abs_diff(t).expect("shape");
        assert!(diff <= 1e-6, "replicated {k}: {diff}");
    }

    // A task whose target is NaN is skipped; the other still updates θ.
    let mut broken = sample(0.0);
    broken.target.data_mut()[0] = f32::NAN;
    let mut model = tiny();
    let mut outer = ResidentTrainer::new(reptile::outer_adam_config(), &dev);
    let report = reptile::reptile_step(
        &model,
        &mut outer,
        &[vec![broken], tasks[0].clone()],
        &inner,
        &SingleReplica,
        &never,
        |_, _| {},
    )
    .expect("meta");
    assert_eq!((report.tasks_used, report.tasks_skipped), (1, 1));
    outer.sync(&mut model.weights).expect("sync");
    assert!(model.weights.iter().all(|(_, t)| t.data().iter().all(|v| v.is_finite())));
}
