//! The command-line interface of the model: the state-dict listing, `model forward`, clear errors on bad input, and
//! what `bench step` reports.

mod common;

use std::process::Command;

use metaportrait::model::weights::WeightStore;
use metaportrait::tensor::HostTensor;

#[test]
fn model_keys_equals_official_state_dict_listing() {
    let out = Command::new(common::bin()).args(["model", "keys", "--config", "official"]).output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json object");
    let text = std::fs::read_to_string(common::generator_fixture("official_state_dict_shapes.json")).expect("fixture");
    let official: serde_json::Value = serde_json::from_str(&text).expect("fixture json");
    let sd = official["state_dict"].as_object().expect("state_dict");
    assert_eq!(ours.len(), 436);
    assert_eq!(ours.len(), sd.len());
    let mut params = 0u64;
    for (key, entry) in sd {
        assert_eq!(ours.get(key), Some(&entry["shape"]), "key `{key}`");
        if entry["kind"] == "parameter" {
            params +=
                entry["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().unwrap_or(0)).product::<u64>();
        }
    }
    assert_eq!(params, 130_212_376);
}

fn forward_cmd(dir: &std::path::Path, weights: &std::path::Path, executor: &str) -> std::process::Output {
    forward_with_inputs(dir, weights, &common::generator_fixture("tiny_io.safetensors"), executor)
}

fn forward_with_inputs(
    dir: &std::path::Path,
    weights: &std::path::Path,
    inputs: &std::path::Path,
    executor: &str,
) -> std::process::Output {
    Command::new(common::bin())
        .args(["model", "forward", "--config"])
        .arg(common::generator_fixture("tiny_config.json"))
        .arg("--weights")
        .arg(weights)
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(dir.join("out.safetensors"))
        .args(["--executor", executor, "--device", "cpu"])
        .output()
        .expect("run")
}

#[test]
fn forward_cli_writes_reference_outputs() {
    let dir = common::tempdir("forward");
    for executor in ["ort", "burn"] {
        let out = forward_cmd(&dir, &common::generator_fixture("tiny_weights.safetensors"), executor);
        assert!(out.status.success(), "{executor}: {}", String::from_utf8_lossy(&out.stderr));
        let written = WeightStore::load_safetensors(&dir.join("out.safetensors")).expect("output");
        let io = common::load("tiny_io.safetensors");
        for name in ["warp.deformation", "warp.flow", "warp.occlusion_map", "warp.deformed", "refine.prediction"] {
            let diff = written.get(name).expect(name).max_abs_diff(io.get(name).expect(name)).expect("shape");
            assert!(diff <= 1e-4, "{executor} {name}: {diff}");
        }
    }
}

#[test]
fn bad_weights_are_reported_with_every_problem() {
    let dir = common::tempdir("badweights");
    let mut store = common::load("tiny_weights.safetensors");
    store.remove("fuse_high_res.bias").expect("key");
    store.insert("bogus.weight", HostTensor::zeros(&[2]));
    store.insert("SPDAE_G.conv_img.weight", HostTensor::zeros(&[3, 5, 3, 3]));
    let path = dir.join("bad.safetensors");
    store.save_safetensors(&path).expect("save");
    let out = forward_cmd(&dir, &path, "ort");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing key `fuse_high_res.bias`"), "{err}");
    assert!(err.contains("unexpected key `bogus.weight`"), "{err}");
    assert!(err.contains("key `SPDAE_G.conv_img.weight` has shape [3, 5, 3, 3], expected [3, 4, 3, 3]"), "{err}");
    assert!(!dir.join("out.safetensors").exists(), "no output may be written on failure");

    let bytes = std::fs::read(common::generator_fixture("tiny_weights.safetensors")).expect("read");
    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let out = forward_cmd(&dir, &truncated, "ort");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("truncated.safetensors") && err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn wrong_input_shapes_are_reported_by_both_executors() {
    let dir = common::tempdir("badinputs");
    let mut io = common::load("tiny_io.safetensors");
    io.insert("input.source", HostTensor::zeros(&[1, 3, 128, 128]));
    io.remove("input.src_id").expect("fixture has src_id");
    let inputs = dir.join("inputs.safetensors");
    io.save_safetensors(&inputs).expect("save");
    for executor in ["ort", "burn"] {
        let out = forward_with_inputs(&dir, &common::generator_fixture("tiny_weights.safetensors"), &inputs, executor);
        assert!(!out.status.success(), "{executor}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("lacks input tensor(s): input.src_id"), "{executor}: {err}");
    }
    io.insert("input.src_id", HostTensor::zeros(&[1, 32]));
    io.save_safetensors(&inputs).expect("save");
    for executor in ["ort", "burn"] {
        let out = forward_with_inputs(&dir, &common::generator_fixture("tiny_weights.safetensors"), &inputs, executor);
        assert!(!out.status.success(), "{executor}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("input `input.source` has shape [1, 3, 128, 128], expected [1, 3, 256, 256]"),
            "{executor}: {err}"
        );
        assert!(!err.contains("panicked"), "{executor}: {err}");
    }
    assert!(!dir.join("out.safetensors").exists());
}

#[test]
fn bench_step_reports_a_whole_loop_with_either_optimizer_and_loss() {
    let run = |extra: &[&str]| -> (serde_json::Value, String) {
        let mut args = vec!["bench", "step", "--config", "tiny", "--iters", "1", "--device", "cpu"];
        args.extend(extra);
        let out = Command::new(common::bin()).args(&args).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        (serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("json"), stderr)
    };
    let (resident, stderr) = run(&[]);
    let (host, _) = run(&["--host-optimizer"]);
    let (l1, _) = run(&["--loss", "l1"]);
    for (report, optimizer) in [(&resident, "resident"), (&host, "host"), (&l1, "resident")] {
        assert_eq!(report["optimizer"], optimizer);
        assert_eq!(report["steps"], 2, "--iters 1 runs one untimed-for-the-median step and one more");
        let f = |k: &str| report[k].as_f64().unwrap_or_else(|| panic!("{k} in {report}"));
        // The loop's total holds the first step and at least the other's time.
        assert!(f("total_s") >= f("first_step_s") + f("step_s") - 1e-9, "{report}");
        let losses: Vec<f64> = report["losses"].as_array().expect("losses").iter().filter_map(|v| v.as_f64()).collect();
        assert_eq!(losses.len(), 2);
        assert!(losses.iter().all(|l| l.is_finite() && *l > 0.0), "{report}");
    }
    // By default the step trains personalization's loss: the boxes always, the perceptual pyramid when VGG-19 is
    // there (the bench says when it is not).
    let terms = |r: &serde_json::Value| -> Vec<String> {
        r["terms"].as_array().expect("terms").iter().filter_map(|t| t.as_str().map(str::to_owned)).collect()
    };
    let vgg_present = !stderr.contains("no VGG-19 weights");
    let mut expected = vec!["eye", "mouth", "l1"];
    if vgg_present {
        expected.insert(0, "perceptual");
    }
    assert_eq!(
        (resident["loss"].as_str(), terms(&resident)),
        (Some("personalization"), expected.iter().map(|t| t.to_string()).collect())
    );
    assert_eq!((l1["loss"].as_str(), terms(&l1)), (Some("l1"), vec!["l1".to_owned()]));
    // Both optimizers start from the same weights and sample, so the first loss is the same number.
    assert_eq!(resident["losses"][0], host["losses"][0]);
    assert_ne!(resident["losses"][0], l1["losses"][0], "the two losses are different functions");
}
