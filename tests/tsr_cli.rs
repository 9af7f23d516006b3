//! `metaportrait tsr forward` on files: the official IO layout, and clear failures that leave no output behind.

mod common;

use std::process::Command;

use metaportrait::model::weights::WeightStore;
use metaportrait::tensor::HostTensor;

fn forward(weights: &std::path::Path, inputs: &std::path::Path, output: &std::path::Path) -> std::process::Output {
    Command::new(common::bin())
        .args(["tsr", "forward", "--config", "tiny", "--threads", "2", "--weights"])
        .arg(weights)
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(output)
        .output()
        .expect("run")
}

#[test]
fn bad_weights_and_inputs_fail_clearly_without_output() {
    let dir = common::tempdir("tsr-cli");
    let weights = common::tsr_fixture("tsr_tiny_weights.safetensors");
    let io = common::tsr_fixture("tsr_tiny_io.safetensors");

    // A truncated weight file.
    let bytes = std::fs::read(&weights).expect("read");
    std::fs::write(dir.join("cut.safetensors"), &bytes[..bytes.len() / 2]).expect("write");
    let out = forward(&dir.join("cut.safetensors"), &io, &dir.join("a.safetensors"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("cut.safetensors"), "{err}");
    assert!(!dir.join("a.safetensors").exists());

    // Weights of another configuration: every mismatch is named.
    let mut store = WeightStore::load_safetensors(&weights).expect("load");
    store.insert("final_linear.weight", HostTensor::zeros(&[8, 8]));
    store.save_safetensors(&dir.join("wrong.safetensors")).expect("save");
    let out = forward(&dir.join("wrong.safetensors"), &io, &dir.join("b.safetensors"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("final_linear.weight"), "{err}");
    assert!(!dir.join("b.safetensors").exists());

    // Frames of the wrong size.
    let mut bad_io = WeightStore::new();
    bad_io.insert("input.lq", HostTensor::zeros(&[1, 2, 3, 24, 24]));
    bad_io.save_safetensors(&dir.join("bad_io.safetensors")).expect("save");
    let out = forward(&weights, &dir.join("bad_io.safetensors"), &dir.join("c.safetensors"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("input.lq") && err.contains("24"), "{err}");
    assert!(!dir.join("c.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
