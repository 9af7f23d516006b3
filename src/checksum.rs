//! SHA-256 digests of files and bytes, and `sha256sum`-format manifests.
//!
//! Owns nothing: receives bytes, paths or manifest text; emits lowercase hex digests and the digest a manifest lists
//! for a file name. Used to verify shipped models (`models/SHA256SUMS`) and identity files.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The digest a `sha256sum` manifest lists for `file_name` (`<hex>  <name>` or `<hex> *<name>` lines).
pub fn manifest_entry(manifest: &str, file_name: &str) -> Option<String> {
    manifest.lines().find_map(|line| {
        let (digest, name) = line.trim().split_once(char::is_whitespace)?;
        let name = name.trim_start().trim_start_matches('*');
        (name == file_name && digest.len() == 64).then(|| digest.to_ascii_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_manifests() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let manifest = format!("{}  a.onnx\n{} *b.onnx\n", "0".repeat(64), "F".repeat(64));
        assert_eq!(manifest_entry(&manifest, "a.onnx"), Some("0".repeat(64)));
        assert_eq!(manifest_entry(&manifest, "b.onnx"), Some("f".repeat(64)));
        assert_eq!(manifest_entry(&manifest, "c.onnx"), None);
    }
}
