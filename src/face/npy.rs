//! Landmark arrays stored as NumPy `.npy` files, as the official example data ships them (`*_ldmk.npy`: `(669, 2)`
//! float32, normalised to [0, 1]).
//!
//! Owns a minimal, strict `.npy` reader: format versions 1–3, little-endian `f4`/`f8`, C order; landmarks are 2-D
//! `(N, 2|3)`, other arrays (identity vectors) any shape. Receives bytes or a path; emits points or a flat array.
//! Anything else (pickled objects, big-endian, Fortran order, other shapes) is refused with the reason — nothing in
//! the file is ever executed or unpickled.

use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why a `.npy` landmark file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The `.npy` file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The bytes are not an `.npy` array this reader accepts; the text names the offending part (magic, version,
    /// dtype, order, shape or data length).
    #[error("not a usable .npy landmark file: {0}")]
    Format(String),
}

/// The landmarks of a `.npy` file as `(x, y)` pairs (a third column, if any, is dropped).
pub fn read_points(path: &Path) -> Result<Vec<[f32; 2]>, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: path.into(), source })?;
    parse_points(&bytes)
}

fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

/// A float array of any shape from a `.npy` file, as f32 in C order.
#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    /// The array's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// Every value in C order, converted to f32.
    pub data: Vec<f32>,
}

/// Reads a `.npy` float array of any shape (identity vectors, landmarks).
pub fn read_array(path: &Path) -> Result<NpyArray, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io { path: path.into(), source })?;
    parse_array(&bytes)
}

/// One vector from a `.npy` file (identity vectors): any shape with at most one axis longer than 1, e.g. `(D,)` or
/// `(1, D)` as the official data stores them; finite; not all zero.
pub fn read_vector(path: &Path) -> Result<Vec<f32>, NpyError> {
    let array = read_array(path)?;
    if array.data.is_empty() || array.shape.iter().filter(|d| **d != 1).count() > 1 {
        return Err(NpyError::Format(format!("shape {:?} is not one vector", array.shape)));
    }
    if array.data.iter().any(|v| !v.is_finite()) || array.data.iter().all(|v| *v == 0.0) {
        return Err(NpyError::Format("the vector is zero or not finite".into()));
    }
    Ok(array.data)
}

/// Parses `.npy` bytes holding a little-endian float32/float64 array in C order, of any shape.
pub fn parse_array(bytes: &[u8]) -> Result<NpyArray, NpyError> {
    let bad = |m: &str| NpyError::Format(m.to_owned());
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(NpyError::Format(format!("format version {v} is not supported"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = header_value(header, "descr").ok_or_else(|| bad("no descr"))?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(NpyError::Format(format!(
            "dtype {} is not little-endian float32/float64",
            &descr[..descr.len().min(8)]
        )));
    };
    let fortran = header_value(header, "fortran_order").ok_or_else(|| bad("no fortran_order"))?;
    if !fortran.starts_with("False") {
        return Err(bad("Fortran-ordered arrays are not supported"));
    }
    let shape = header_value(header, "shape").ok_or_else(|| bad("no shape"))?;
    let inner = shape.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| bad("malformed shape"))?;
    let dims: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| NpyError::Format(format!("shape entry `{s}`"))))
        .collect::<Result<_, _>>()?;
    let count = dims.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or_else(|| bad("shape overflows"))?;
    let data = &bytes[start + header_len..];
    let need = count.checked_mul(width).ok_or_else(|| bad("shape overflows"))?;
    if data.len() < need {
        return Err(NpyError::Format(format!(
            "{} data bytes for an array of shape {dims:?} of {width}-byte floats",
            data.len()
        )));
    }
    let values = data[..need]
        .chunks_exact(width)
        .map(|b| match b {
            [a, b, c, d] => f32::from_le_bytes([*a, *b, *c, *d]),
            _ => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        })
        .collect();
    Ok(NpyArray { shape: dims, data: values })
}

/// Parses `.npy` bytes holding an `(N, 2)` or `(N, 3)` float array.
pub fn parse_points(bytes: &[u8]) -> Result<Vec<[f32; 2]>, NpyError> {
    let array = parse_array(bytes)?;
    let [n, cols] = array.shape[..] else {
        return Err(NpyError::Format(format!("shape {:?} is not (N, 2) or (N, 3)", array.shape)));
    };
    if !(2..=3).contains(&cols) || n == 0 {
        return Err(NpyError::Format(format!("shape {:?} is not (N, 2) or (N, 3)", array.shape)));
    }
    Ok(array.data.chunks_exact(cols).map(|r| [r[0], r[1]]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn reads_float32_and_float64_points() {
        let data: Vec<u8> = [0.25f32, 0.5, 0.75, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse_points(&npy("<f4", "(2, 2)", &data)).unwrap(), vec![[0.25, 0.5], [0.75, 1.0]]);
        let data: Vec<u8> = [0.1f64, 0.2, 9.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(parse_points(&npy("<f8", "(1, 3)", &data)).unwrap(), vec![[0.1, 0.2]]);
    }

    #[test]
    fn reads_arrays_of_any_shape() {
        let data: Vec<u8> = [1.0f32, -2.0, 3.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = parse_array(&npy("<f4", "(1, 3)", &data)).unwrap();
        assert_eq!((a.shape, a.data), (vec![1, 3], vec![1.0, -2.0, 3.5]));
        let a = parse_array(&npy("<f4", "(3,)", &data)).unwrap();
        assert_eq!(a.shape, vec![3]);
        assert!(parse_array(&npy("<f4", "(2, 3)", &data)).unwrap_err().to_string().contains("data bytes"));
    }

    #[test]
    fn refuses_everything_else_with_the_reason() {
        let data = vec![0u8; 64];
        let cases = [
            (npy("|O", "(2, 2)", &data), "dtype"),
            (npy(">f4", "(2, 2)", &data), "dtype"),
            (npy("<f4", "(4,)", &data), "shape"),
            (npy("<f4", "(2, 5)", &data), "shape"),
            (npy("<f4", "(100, 2)", &data), "data bytes"),
            (b"PK\x03\x04 zip".to_vec(), "magic"),
        ];
        for (bytes, needle) in cases {
            let msg = parse_points(&bytes).unwrap_err().to_string();
            assert!(msg.contains(needle), "{msg}");
        }
        let mut fortran = npy("<f4", "(1, 2)", &[0; 8]);
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        assert!(parse_points(&fortran).unwrap_err().to_string().contains("Fortran"));
    }
}
