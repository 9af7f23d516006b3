//! Plain pickled dicts (what `pickle.dump` writes for a dict of names to numbers or strings, e.g. the official data's
//! `src_map_dict.pkl`), read by the same allow-list machine as checkpoints, so nothing in the file runs.
//!
//! Owns the plain-dict view of a pickle. Receives pickle bytes (no torch archive around them); emits the dict's
//! `str` keys with `int` or `str` values in file order, or an error naming what is not plain (a numpy scalar, a
//! float, a nested container, a global outside the allow-list).

use super::error::TorchCheckpointError;
use super::pickle::{Machine, Value};

/// A value of a plain pickled dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlainValue {
    /// A Python `int`.
    Int(i64),
    /// A Python `str`.
    Str(String),
}

/// Reads a bare pickle whose root is a dict of `str` keys to `int` or `str` values.
pub fn read_plain_dict(bytes: &[u8]) -> Result<Vec<(String, PlainValue)>, TorchCheckpointError> {
    let root = Machine::new(bytes).run()?;
    let not_plain = |reason: String| TorchCheckpointError::NotPlainDict(reason);
    let Value::Dict(entries) = root else {
        return Err(not_plain("the root object is not a dict".into()));
    };
    let entries = entries.borrow().clone();
    entries
        .into_iter()
        .map(|(k, v)| {
            let Value::Str(k) = k else {
                return Err(not_plain("a key is not a string".into()));
            };
            let v = match v {
                Value::Int(i) => PlainValue::Int(i),
                Value::Str(s) => PlainValue::Str(s.to_string()),
                _ => return Err(not_plain(format!("the value of `{k}` is not an int or a string"))),
            };
            Ok((k.to_string(), v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_dicts_are_read_and_anything_else_is_named() {
        // pickle.dumps({'a': 0, 'b': '1'}, protocol=2)
        let ok = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x00X\x01\x00\x00\x00bX\x01\x00\x00\x001u.";
        assert_eq!(
            read_plain_dict(ok).unwrap(),
            [("a".to_owned(), PlainValue::Int(0)), ("b".to_owned(), PlainValue::Str("1".into()))]
        );
        // {'a': 1.5}
        let float = b"\x80\x02}q\x00X\x01\x00\x00\x00aG?\xf8\x00\x00\x00\x00\x00\x00s.";
        assert!(read_plain_dict(float).unwrap_err().to_string().contains("`a`"));
        // [] and os.system('true')
        assert!(read_plain_dict(b"\x80\x02]q\x00.").unwrap_err().to_string().contains("not a dict"));
        let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R.";
        assert!(read_plain_dict(evil).unwrap_err().to_string().contains("os.system"));
    }
}
