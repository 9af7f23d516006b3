//! Safe reader for PyTorch checkpoints (`torch.save` zip format, torch ≥ 1.6).
//!
//! Owns the zip container (its one pickle and the storage records), the choice of the state dict inside, and the
//! materialisation of tensors from their storages. The pickle itself is read by `import::pickle`, which executes
//! nothing. Receives a file (or its bytes) and which state dict to take; emits that state dict's tensors as
//! contiguous f32 host tensors, in file order. Only the storages of the selected tensors are read from the archive.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;

use super::error::{TensorLayoutError, TorchCheckpointError};
use super::pickle::{Machine, TensorRef, Value, op};
use crate::tensor::HostTensor;

/// Which state dict to take from a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateDictSelect {
    /// The value under this top-level key (e.g. `generator`).
    Key(String),
    /// The first of these top-level keys that exists (e.g. `params_ema`, then `params`).
    FirstOf(Vec<String>),
    /// The top-level object is itself the state dict.
    Root,
    /// `generator`, `params_ema`, `params`, `state_dict`, `model`; else the root if it holds tensors.
    Auto,
}

/// Keys tried, in order, by `StateDictSelect::Auto`.
pub const AUTO_KEYS: [&str; 5] = ["generator", "params_ema", "params", "state_dict", "model"];

/// Reads the state dict selected by `select` from a checkpoint file.
pub fn read_torch_checkpoint(
    path: &Path,
    select: &StateDictSelect,
) -> Result<Vec<(String, HostTensor)>, TorchCheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| TorchCheckpointError::Io { path: path.into(), source })?;
    read_torch_checkpoint_bytes(&bytes, select)
}

/// Zip archives start with a local file header.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
/// Legacy `torch.save` output starts with a pickled magic number (protocol 2).
const LEGACY_PICKLE_MAGIC: &[u8] = &[op::PROTO, 2];

/// Reads the state dict selected by `select` from checkpoint bytes.
pub fn read_torch_checkpoint_bytes(
    bytes: &[u8],
    select: &StateDictSelect,
) -> Result<Vec<(String, HostTensor)>, TorchCheckpointError> {
    if !bytes.starts_with(ZIP_MAGIC) {
        if bytes.starts_with(LEGACY_PICKLE_MAGIC) {
            return Err(TorchCheckpointError::LegacyFormat);
        }
        return Err(TorchCheckpointError::Archive("the file does not start with a zip header".into()));
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| TorchCheckpointError::Archive(format!("broken zip: {e}")))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .min_by_key(String::len)
        .ok_or_else(|| TorchCheckpointError::Archive("no data.pkl in the archive".into()))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let pickle = read_entry(&mut archive, &pkl_name)?;
    let root = Machine::new(&pickle).run()?;
    let state = select_state_dict(&root, select)?;

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(state.len());
    for (name, t) in state {
        if !storages.contains_key(&t.storage.key) {
            let data = read_entry(&mut archive, &format!("{prefix}data/{}", t.storage.key))?;
            storages.insert(t.storage.key.clone(), data);
        }
        let raw = storages.get(&t.storage.key).map(Vec::as_slice).unwrap_or_default();
        let tensor =
            materialize(&t, raw).map_err(|reason| TorchCheckpointError::Tensor { name: name.clone(), reason })?;
        out.push((name, tensor));
    }
    Ok(out)
}

fn read_entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, TorchCheckpointError> {
    let mut file = archive
        .by_name(name)
        .map_err(|e| TorchCheckpointError::Archive(format!("entry `{name}` is unreadable: {e}")))?;
    let mut buf = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(1 << 30));
    file.read_to_end(&mut buf)
        .map_err(|e| TorchCheckpointError::Archive(format!("entry `{name}` is truncated: {e}")))?;
    Ok(buf)
}

fn dict_entries(v: &Value) -> Option<Vec<(Value, Value)>> {
    match v {
        Value::Dict(d) => Some(d.borrow().clone()),
        _ => None,
    }
}

fn lookup(root: &Value, key: &str) -> Option<Value> {
    dict_entries(root)?.into_iter().find(|(k, _)| matches!(k, Value::Str(s) if &**s == key)).map(|(_, v)| v)
}

/// The `(name, tensor)` entries of a dict, if every value is a tensor (non-tensor entries make it not a state dict).
fn as_state_dict(v: &Value) -> Option<Vec<(String, TensorRef)>> {
    let entries = dict_entries(v)?;
    let mut out = Vec::with_capacity(entries.len());
    for (k, v) in entries {
        match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => out.push((k.to_string(), (*t).clone())),
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

fn top_level_keys(root: &Value) -> String {
    let keys: Vec<String> = dict_entries(root)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, _)| match k {
            Value::Str(s) => Some(format!("`{s}`")),
            _ => None,
        })
        .collect();
    if keys.is_empty() { "the checkpoint is not a dict".into() } else { format!("top-level keys: {}", keys.join(", ")) }
}

fn select_state_dict(root: &Value, select: &StateDictSelect) -> Result<Vec<(String, TensorRef)>, TorchCheckpointError> {
    let candidates: Vec<String> = match select {
        StateDictSelect::Key(k) => vec![k.clone()],
        StateDictSelect::FirstOf(keys) => keys.clone(),
        StateDictSelect::Root => Vec::new(),
        StateDictSelect::Auto => AUTO_KEYS.iter().map(|k| (*k).to_owned()).collect(),
    };
    for key in &candidates {
        if let Some(v) = lookup(root, key) {
            return as_state_dict(&v).ok_or_else(|| {
                TorchCheckpointError::NoStateDict(format!(
                    "`{key}` is not a dict of tensors ({})",
                    top_level_keys(root)
                ))
            });
        }
    }
    if matches!(select, StateDictSelect::Root | StateDictSelect::Auto)
        && let Some(sd) = as_state_dict(root)
    {
        return Ok(sd);
    }
    let wanted = if candidates.is_empty() { "a root state dict".to_owned() } else { candidates.join(" / ") };
    Err(TorchCheckpointError::NoStateDict(format!("looked for {wanted}; {}", top_level_keys(root))))
}

/// Copies a (possibly strided) tensor view out of its storage bytes into a contiguous f32 tensor.
fn materialize(t: &TensorRef, raw: &[u8]) -> Result<HostTensor, TensorLayoutError> {
    let elem = t.storage.dtype.size();
    let storage_len = raw.len() / elem;
    let count = t.size.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or(TensorLayoutError::SizeOverflow)?;
    if count > 0 {
        let extent = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (d, s)| (d - 1).checked_mul(*s).and_then(|x| acc.checked_add(x)))
            .ok_or(TensorLayoutError::ExtentOverflow)?;
        if extent >= storage_len {
            return Err(TensorLayoutError::OutsideStorage { extent, storage: t.storage.key.clone(), storage_len });
        }
    }
    let mut data = Vec::with_capacity(count);
    let mut index = vec![0usize; t.size.len()];
    for _ in 0..count {
        let flat = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        data.push(t.storage.dtype.read(&raw[flat * elem..(flat + 1) * elem]));
        for axis in (0..index.len()).rev() {
            index[axis] += 1;
            if index[axis] < t.size[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    Ok(HostTensor::new(t.size.clone(), data)?)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn data_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/checkpoints")
    }

    /// Compares a read state dict with the JSON the generator script wrote beside the checkpoint.
    fn assert_matches_expected(tensors: &[(String, HostTensor)], json_name: &str) {
        let text = std::fs::read_to_string(data_dir().join(json_name)).unwrap();
        let expected: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        let expected_names: Vec<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(names.len(), expected_names.len());
        for (name, t) in tensors {
            let e = &expected[name];
            let shape: Vec<usize> =
                e["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let values: Vec<f32> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(t.shape(), shape.as_slice(), "{name}");
            assert_eq!(t.data(), values.as_slice(), "{name}");
        }
    }

    #[test]
    fn reads_generator_state_dict_with_views_shared_storages_and_parameters() {
        let path = data_dir().join("generator_small.pth");
        let tensors = read_torch_checkpoint(&path, &StateDictSelect::Auto).unwrap();
        let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["conv.weight", "conv.bias", "t.weight", "shared.a", "shared.b"], "file order is kept");
        assert_matches_expected(&tensors, "generator_small.json");
        // The transposed view of [[0,1,2],[3,4,5]].
        assert_eq!(tensors[2].1.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn selects_params_ema_and_converts_half_precision() {
        let path = data_dir().join("tsr_small.pth");
        let select = StateDictSelect::FirstOf(vec!["params_ema".into(), "params".into()]);
        let tensors = read_torch_checkpoint(&path, &select).unwrap();
        assert_matches_expected(&tensors, "tsr_small.json");
        let plain = read_torch_checkpoint(&path, &StateDictSelect::Key("params".into())).unwrap();
        assert_eq!(plain[0].1.data(), &[9.0; 4]);
        let err = read_torch_checkpoint(&path, &StateDictSelect::Key("generator".into())).unwrap_err().to_string();
        assert!(err.contains("`params`") && err.contains("`params_ema`"), "{err}");
    }

    /// Replaces `data.pkl` inside a valid checkpoint.
    fn with_pickle(pickle: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut out = Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("archive/data.pkl", opts).unwrap();
        zip.write_all(pickle).unwrap();
        zip.start_file("archive/data/0", opts).unwrap();
        zip.write_all(&[0u8; 16]).unwrap();
        zip.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn refuses_globals_outside_the_allow_list_without_running_them() {
        // The classic payload: os.system('echo pwned') via GLOBAL + REDUCE.
        let mut p = vec![op::PROTO, 2, op::GLOBAL];
        p.extend_from_slice(b"os\nsystem\n");
        p.extend_from_slice(&[op::SHORT_BINUNICODE, 10]);
        p.extend_from_slice(b"echo pwned");
        p.extend_from_slice(&[op::TUPLE1, op::REDUCE, op::STOP]);
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(matches!(err, TorchCheckpointError::ForbiddenGlobal(ref g) if g == "os.system"), "{err}");
        assert!(err.to_string().contains("refusing to load"));
        // The same through STACK_GLOBAL, and a torch-looking but non-allow-listed name.
        let mut p = vec![op::PROTO, 4, op::SHORT_BINUNICODE, 8];
        p.extend_from_slice(b"builtins");
        p.extend_from_slice(&[op::SHORT_BINUNICODE, 4]);
        p.extend_from_slice(b"eval");
        p.extend_from_slice(&[op::STACK_GLOBAL, op::STOP]);
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(err.to_string().contains("`builtins.eval`"), "{err}");
        let mut p = vec![op::PROTO, 2, op::GLOBAL];
        p.extend_from_slice(b"torch\nload\n");
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(err.to_string().contains("`torch.load`"), "{err}");
    }

    #[test]
    fn unknown_opcodes_and_truncation_are_named() {
        // INST ('i') would instantiate an arbitrary class: not allowed.
        let p = [op::PROTO, 2, b'i', b'o', b's', b'\n'];
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(matches!(err, TorchCheckpointError::UnknownOpcode { opcode: b'i', offset: 2 }), "{err}");
        let p = [op::PROTO, 2, op::BINUNICODE, 0xff, 0xff, 0, 0, b'a'];
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(err.to_string().contains("pickle ends"), "{err}");
        let p = [op::PROTO, 2, op::BINGET, 9, op::STOP];
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Auto).unwrap_err();
        assert!(err.to_string().contains("memo 9 is not set"), "{err}");
    }

    #[test]
    fn truncated_and_legacy_files_are_clear_errors() {
        let bytes = std::fs::read(data_dir().join("generator_small.pth")).unwrap();
        let err = read_torch_checkpoint_bytes(&bytes[..bytes.len() - 40], &StateDictSelect::Auto).unwrap_err();
        assert!(matches!(err, TorchCheckpointError::Archive(_)), "{err}");
        let err = read_torch_checkpoint_bytes(&[op::PROTO, 2, 0x8a, 0x0a], &StateDictSelect::Auto).unwrap_err();
        assert!(matches!(err, TorchCheckpointError::LegacyFormat), "{err}");
        let err = read_torch_checkpoint_bytes(b"hello", &StateDictSelect::Auto).unwrap_err();
        assert!(err.to_string().contains("zip header"), "{err}");
    }

    #[test]
    fn views_outside_their_storage_are_rejected() {
        // {'w': _rebuild_tensor_v2(storage(4 floats in a 16-byte file), offset 3, size (2,), stride (1,))}
        let mut p = vec![op::PROTO, 2, op::EMPTY_DICT, op::SHORT_BINUNICODE, 1, b'w', op::GLOBAL];
        p.extend_from_slice(b"torch._utils\n_rebuild_tensor_v2\n");
        p.extend_from_slice(&[op::MARK, op::MARK, op::SHORT_BINUNICODE, 7]);
        p.extend_from_slice(b"storage");
        p.push(op::GLOBAL);
        p.extend_from_slice(b"torch\nFloatStorage\n");
        p.extend_from_slice(&[op::SHORT_BINUNICODE, 1, b'0', op::SHORT_BINUNICODE, 3]);
        p.extend_from_slice(b"cpu");
        p.extend_from_slice(&[op::BININT1, 4, op::TUPLE, op::BINPERSID, op::BININT1, 3]);
        p.extend_from_slice(&[op::BININT1, 2, op::TUPLE1, op::BININT1, 1, op::TUPLE1, op::NEWFALSE, op::NONE]);
        p.extend_from_slice(&[op::TUPLE, op::REDUCE, op::SETITEM, op::STOP]);
        let err = read_torch_checkpoint_bytes(&with_pickle(&p), &StateDictSelect::Root).unwrap_err();
        assert!(err.to_string().contains("reaches element 4 but its storage `0` holds 4"), "{err}");
    }
}
