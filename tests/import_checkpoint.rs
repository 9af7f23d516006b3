//! `import-checkpoint` turns a PyTorch-format checkpoint of the generator into our safetensors weights, including
//! checkpoints with spectral norm removed, and refuses malformed ones with a clear message.
//!
//! The checkpoints are written here in torch's zip + pickle layout (protocol 2, persistent storage ids,
//! `_rebuild_tensor_v2` reductions, an OrderedDict state dict under `generator`).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;

use metaportrait::model::reparam::SnDim;
use metaportrait::model::weights::WeightStore;
use metaportrait::tensor::HostTensor;

/// Writes the handful of pickle opcodes a state-dict checkpoint needs.
struct PickleWriter {
    out: Vec<u8>,
}

impl PickleWriter {
    fn str(&mut self, s: &str) {
        self.out.push(b'X');
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        self.out.push(b'J');
        self.out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    fn global(&mut self, module: &str, name: &str) {
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn int_tuple(&mut self, v: &[usize]) {
        self.out.push(b'(');
        v.iter().for_each(|d| self.int(*d));
        self.out.push(b't');
    }
    fn tensor(&mut self, key: usize, t: &HostTensor) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.out.push(b'(');
        self.out.push(b'(');
        self.str("storage");
        self.global("torch", "FloatStorage");
        self.str(&key.to_string());
        self.str("cpu");
        self.int(t.len());
        self.out.extend_from_slice(b"tQ");
        self.int(0);
        self.int_tuple(t.shape());
        let mut stride = vec![1usize; t.shape().len()];
        for i in (0..t.shape().len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * t.shape()[i + 1];
        }
        self.int_tuple(&stride);
        self.out.push(0x89); // NEWFALSE: requires_grad
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(b")R"); // backward hooks: OrderedDict()
        self.out.extend_from_slice(b"tR");
    }
}

/// `{'generator': OrderedDict(entries), 'epoch': 3}` as a torch zip checkpoint.
fn write_checkpoint(path: &Path, entries: &[(String, HostTensor)]) {
    write_state_dicts(path, &[("generator", entries)]);
}

/// `{name: OrderedDict(entries), …, 'epoch': 3}` as a torch zip checkpoint (storages numbered across dicts).
fn write_state_dicts(path: &Path, dicts: &[(&str, &[(String, HostTensor)])]) {
    let mut p = PickleWriter { out: vec![0x80, 2, b'}', b'('] };
    let mut storages = Vec::new();
    for (dict_name, entries) in dicts {
        p.str(dict_name);
        p.global("collections", "OrderedDict");
        p.out.extend_from_slice(b")R(");
        for (name, t) in entries.iter() {
            p.str(name);
            p.tensor(storages.len(), t);
            storages.push(t);
        }
        p.out.push(b'u');
    }
    p.str("epoch");
    p.int(3);
    p.out.extend_from_slice(b"u.");

    let file = std::fs::File::create(path).expect("create");
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("ckpt/data.pkl", opts).expect("zip");
    zip.write_all(&p.out).expect("zip");
    for (i, t) in storages.iter().enumerate() {
        zip.start_file(format!("ckpt/data/{i}"), opts).expect("zip");
        let bytes: Vec<u8> = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes).expect("zip");
    }
    zip.start_file("ckpt/version", opts).expect("zip");
    zip.write_all(b"3\n").expect("zip");
    zip.finish().expect("zip");
}

fn import(ckpt: &Path, out: &Path) -> std::process::Output {
    Command::new(common::bin())
        .arg("import-checkpoint")
        .arg(ckpt)
        .arg(out)
        .arg("--config")
        .arg(common::generator_fixture("tiny_config.json"))
        .output()
        .expect("run")
}

#[test]
fn imports_the_generator_state_dict_bit_exactly() {
    let dir = common::tempdir("exact");
    let weights = common::load("tiny_weights.safetensors");
    // Data-parallel training saves keys with a `module.` prefix.
    let entries: Vec<(String, HostTensor)> = weights.iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
    write_checkpoint(&dir.join("ckpt.pth"), &entries);
    let out = import(&dir.join("ckpt.pth"), &dir.join("w.safetensors"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported = WeightStore::load_safetensors(&dir.join("w.safetensors")).expect("imported");
    assert_eq!(imported.len(), weights.len());
    for (k, v) in weights.iter() {
        assert_eq!(imported.get(k), Some(v), "{k}");
    }
}

#[test]
fn imports_a_checkpoint_without_spectral_norm_preserving_the_model() {
    let dir = common::tempdir("nosn");
    let weights = common::load("tiny_weights.safetensors");
    // Replace every spectral-norm triple by its eval-mode weight, as `remove_spectral_norm` does.
    let mut entries = Vec::new();
    for (k, v) in weights.iter() {
        if let Some(prefix) = k.strip_suffix(".weight_orig") {
            if weights.get(&format!("{prefix}.weight_u")).is_some() {
                let dim = if prefix == "SPDAE_G.conv1" { SnDim::Dim1 } else { SnDim::Dim0 };
                let w = weights.spectral_norm_effective(prefix, dim).expect("sn");
                entries.push((format!("{prefix}.weight"), w));
                continue;
            }
        } else if k.ends_with(".weight_u") || k.ends_with(".weight_v") {
            continue;
        }
        entries.push((k.clone(), v.clone()));
    }
    write_checkpoint(&dir.join("nosn.pth"), &entries);
    let out = import(&dir.join("nosn.pth"), &dir.join("w.safetensors"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The restored model computes the reference outputs.
    let out = Command::new(common::bin())
        .args(["model", "forward", "--config"])
        .arg(common::generator_fixture("tiny_config.json"))
        .arg("--weights")
        .arg(dir.join("w.safetensors"))
        .arg("--inputs")
        .arg(common::generator_fixture("tiny_io.safetensors"))
        .arg("--output")
        .arg(dir.join("out.safetensors"))
        .args(["--device", "cpu"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = WeightStore::load_safetensors(&dir.join("out.safetensors")).expect("out");
    let io = common::load("tiny_io.safetensors");
    let diff = got.get("refine.prediction").expect("p").max_abs_diff(io.get("refine.prediction").expect("p"));
    assert!(diff.expect("shape") <= 1e-4, "{diff:?}");
}

#[test]
fn wrong_shapes_and_malformed_files_are_refused_without_output() {
    let dir = common::tempdir("bad");
    let weights = common::load("tiny_weights.safetensors");
    let entries: Vec<(String, HostTensor)> = weights
        .iter()
        .filter(|(k, _)| *k != "fuse_high_res.bias")
        .map(|(k, v)| {
            let t = if k == "ladder_network.fc.weight" { HostTensor::zeros(&[3, 3]) } else { v.clone() };
            (k.clone(), t)
        })
        .collect();
    write_checkpoint(&dir.join("bad.pth"), &entries);
    let out = import(&dir.join("bad.pth"), &dir.join("w.safetensors"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing key `fuse_high_res.bias`"), "{err}");
    assert!(err.contains("key `ladder_network.fc.weight` has shape [3, 3]"), "{err}");
    assert!(!dir.join("w.safetensors").exists());

    std::fs::write(dir.join("garbage.pth"), b"PK\x03\x04 definitely not a zip").expect("write");
    let out = import(&dir.join("garbage.pth"), &dir.join("w.safetensors"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("garbage.pth") && err.contains("zip"), "{err}");
    assert!(!dir.join("w.safetensors").exists());
}

/// The official `temporal_gfpgan.pth` layout: `params` and `params_ema` state dicts; EMA weights are the default.
#[test]
fn imports_the_tsr_checkpoint_ema_weights_and_runs_them() {
    let dir = common::tempdir("import-tsr");
    let ema = common::load_tsr("tsr_tiny_weights.safetensors");
    let ema: Vec<(String, HostTensor)> = ema.iter().map(|(k, v)| (format!("module.{k}"), v.clone())).collect();
    let raw: Vec<(String, HostTensor)> =
        ema.iter().map(|(k, v)| (k.clone(), HostTensor::filled(v.shape(), 0.5))).collect();
    write_state_dicts(&dir.join("temporal_gfpgan.pth"), &[("params", &raw), ("params_ema", &ema)]);
    let run = |extra: &[&str], out: &str| {
        Command::new(common::bin())
            .args(["import-checkpoint", "--model", "tsr", "--config", "tiny"])
            .arg(dir.join("temporal_gfpgan.pth"))
            .arg(dir.join(out))
            .args(extra)
            .output()
            .expect("run")
    };
    let out = run(&[], "ema.safetensors");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported = WeightStore::load_safetensors(&dir.join("ema.safetensors")).expect("load");
    for (key, tensor) in &ema {
        assert_eq!(imported.get(key.strip_prefix("module.").unwrap_or(key)), Some(tensor), "{key}");
    }
    let out = run(&["--key", "params"], "raw.safetensors");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw_store = WeightStore::load_safetensors(&dir.join("raw.safetensors")).expect("load");
    assert!(raw_store.iter().all(|(_, t)| t.data().iter().all(|v| *v == 0.5)));

    // The imported EMA weights reproduce the official forward through the CLI.
    let out = Command::new(common::bin())
        .args(["tsr", "forward", "--config", "tiny", "--threads", "2"])
        .arg("--weights")
        .arg(dir.join("ema.safetensors"))
        .arg("--inputs")
        .arg(common::tsr_fixture("tsr_tiny_io.safetensors"))
        .arg("--output")
        .arg(dir.join("out.safetensors"))
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = WeightStore::load_safetensors(&dir.join("out.safetensors")).expect("load");
    let io = common::load_tsr("tsr_tiny_io.safetensors");
    let (diff, scale) = common::diff_stats(got.get("output").expect("output"), io.get("output").expect("fixture"));
    assert!(diff <= 1e-4 * scale.max(1.0), "output differs by {diff}");

    // The generator config refuses a TSR checkpoint, naming the problem.
    let out = Command::new(common::bin())
        .args(["import-checkpoint", "--config", "tiny"])
        .arg(dir.join("temporal_gfpgan.pth"))
        .arg(dir.join("wrong.safetensors"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(!dir.join("wrong.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
