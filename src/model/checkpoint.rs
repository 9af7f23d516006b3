//! Safe reader for PyTorch checkpoints (`torch.save` zip format, torch ≥ 1.6).
//!
//! Owns a minimal pickle virtual machine that understands only what a state dict is made of — dicts, lists,
//! tuples, strings, numbers, tensors and their storages — and resolves globals against a short allow-list that is
//! implemented natively here. Nothing in the file is ever executed: an unknown opcode or global is an error naming
//! it. Receives a file (or its bytes) and which state dict to take; emits that state dict's tensors as contiguous
//! f32 host tensors, in file order. Only the storages of the selected tensors are read from the archive.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

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

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "this is a legacy (pre-1.6, non-zip) PyTorch checkpoint, which is not supported: re-save it with a recent torch"
    )]
    LegacyFormat,
    #[error("not a PyTorch zip checkpoint: {0}")]
    Archive(String),
    #[error("pickle opcode 0x{opcode:02x} at byte {offset} is not allowed in a checkpoint")]
    UnknownOpcode { opcode: u8, offset: usize },
    #[error("checkpoint references `{0}`: refusing to load (only tensors, dicts and plain values are allowed)")]
    ForbiddenGlobal(String),
    #[error("malformed pickle at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    #[error("no state dict found: {0}")]
    NoStateDict(String),
    #[error("not a plain dict of names to integers or strings: {0}")]
    NotPlainDict(String),
}

/// Element types of PyTorch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "FloatStorage" => Self::F32,
            "DoubleStorage" => Self::F64,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    fn read(self, b: &[u8]) -> f32 {
        match self {
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            Self::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            Self::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            Self::I64 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            Self::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Self::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
            Self::I8 => b[0] as i8 as f32,
            Self::U8 | Self::Bool => b[0] as f32,
        }
    }
}

/// Globals a checkpoint may reference; each is implemented natively.
#[derive(Clone, Debug, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDtype),
}

fn resolve_global(module: &str, name: &str) -> Result<Global, CheckpointError> {
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", class) => StorageDtype::from_storage_class(class)
            .map(Global::Storage)
            .ok_or_else(|| CheckpointError::ForbiddenGlobal(format!("{module}.{name}"))),
        _ => Err(CheckpointError::ForbiddenGlobal(format!("{module}.{name}"))),
    }
}

#[derive(Clone, Debug)]
struct StorageRef {
    key: String,
    dtype: StorageDtype,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

type Shared<T> = Rc<RefCell<T>>;

/// Pickle values. Containers are shared so that memo references alias (and never copy) them.
#[derive(Clone, Debug)]
enum Value {
    None,
    /// Booleans, floats and byte strings: legal in a checkpoint (optimizer settings, flags) but never part of a
    /// tensor, so their contents are not kept.
    Opaque,
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<[Value]>),
    List(Shared<Vec<Value>>),
    Dict(Shared<Vec<(Value, Value)>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const REDUCE: u8 = b'R';
    pub const BUILD: u8 = b'b';
    pub const NEWOBJ: u8 = 0x81;
    pub const BINPERSID: u8 = b'Q';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
}

/// The highest pickle protocol whose framing we understand.
const MAX_PROTOCOL: u8 = 5;
/// `LONG1` integers wider than this cannot be a size, stride or offset.
const MAX_LONG1_BYTES: usize = 8;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }
    }

    fn malformed(&self, reason: impl Into<String>) -> CheckpointError {
        CheckpointError::Malformed { offset: self.pos, reason: reason.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return Err(self.malformed(format!("needs {n} more bytes but the pickle ends")));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn line(&mut self) -> Result<&'a str, CheckpointError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|b| *b == b'\n') else {
            return Err(self.malformed("unterminated GLOBAL name"));
        };
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.malformed("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<Value, CheckpointError> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| self.malformed("string is not UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> Result<Value, CheckpointError> {
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, CheckpointError> {
        let mark = self.marks.pop().ok_or_else(|| self.malformed("no MARK to pop to"))?;
        if mark > self.stack.len() {
            return Err(self.malformed("MARK above the stack top"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, CheckpointError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(CheckpointError::Malformed { offset: pos, reason: "stack underflow".into() })
    }

    fn memo_put(&mut self, index: u32) -> Result<(), CheckpointError> {
        let v = self.stack.last().cloned().ok_or_else(|| self.malformed("PUT on an empty stack"))?;
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), CheckpointError> {
        let v = self.memo.get(&index).cloned().ok_or_else(|| self.malformed(format!("memo {index} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), CheckpointError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        let pos = self.pos;
        let Value::Dict(d) = self.top()? else {
            return Err(CheckpointError::Malformed { offset: pos, reason: "SETITEM(S) on a non-dict".into() });
        };
        let d = d.clone();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Value>) -> Result<(), CheckpointError> {
        let pos = self.pos;
        let Value::List(l) = self.top()? else {
            return Err(CheckpointError::Malformed { offset: pos, reason: "APPEND(S) on a non-list".into() });
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    /// Calls an allow-listed global natively.
    fn call(&self, func: &Global, args: &[Value]) -> Result<Value, CheckpointError> {
        match func {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
            Global::RebuildTensorV2 => {
                let [Value::Storage(storage), offset, size, stride, ..] = args else {
                    return Err(self.malformed("_rebuild_tensor_v2 needs (storage, offset, size, stride, …)"));
                };
                let offset = self.as_index(offset)?;
                let size = self.as_index_tuple(size)?;
                let stride = self.as_index_tuple(stride)?;
                if size.len() != stride.len() {
                    return Err(self.malformed("tensor size and stride have different ranks"));
                }
                Ok(Value::Tensor(Rc::new(TensorRef { storage: (**storage).clone(), offset, size, stride })))
            }
            Global::RebuildParameter => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => Err(self.malformed("_rebuild_parameter needs a tensor")),
            },
            other => Err(self.malformed(format!("{other:?} cannot be called with these arguments"))),
        }
    }

    fn as_index(&self, v: &Value) -> Result<usize, CheckpointError> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| self.malformed(format!("negative index {i}"))),
            _ => Err(self.malformed("expected an integer")),
        }
    }

    fn as_index_tuple(&self, v: &Value) -> Result<Vec<usize>, CheckpointError> {
        match v {
            Value::Tuple(items) => items.iter().map(|i| self.as_index(i)).collect(),
            _ => Err(self.malformed("expected a tuple of integers")),
        }
    }

    /// `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&self, pid: Value) -> Result<Value, CheckpointError> {
        let Value::Tuple(items) = pid else {
            return Err(self.malformed("persistent id is not a tuple"));
        };
        match &items[..] {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), _location, _numel]
                if &**tag == "storage" =>
            {
                Ok(Value::Storage(Rc::new(StorageRef { key: key.to_string(), dtype: *dtype })))
            }
            _ => Err(self.malformed("unsupported persistent id (expected a typed storage reference)")),
        }
    }

    fn run(mut self) -> Result<Value, CheckpointError> {
        loop {
            let offset = self.pos;
            let opcode = self.u8()?;
            match opcode {
                op::PROTO => {
                    let v = self.u8()?;
                    if v > MAX_PROTOCOL {
                        return Err(self.malformed(format!("pickle protocol {v} is not supported")));
                    }
                }
                op::FRAME => {
                    self.u64()?;
                }
                op::STOP => return self.pop(),
                op::MARK => self.marks.push(self.stack.len()),
                op::EMPTY_DICT => self.stack.push(Value::Dict(Rc::new(RefCell::new(Vec::new())))),
                op::EMPTY_LIST => self.stack.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                op::EMPTY_TUPLE => self.stack.push(Value::Tuple(Rc::from(Vec::new()))),
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = (opcode - op::TUPLE1 + 1) as usize;
                    if self.stack.len() < n {
                        return Err(self.malformed("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::from(items)));
                }
                op::BINUNICODE => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                op::SHORT_BINUNICODE => {
                    let n = self.u8()? as usize;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                op::BINUNICODE8 => {
                    let n = usize::try_from(self.u64()?).map_err(|_| self.malformed("string too long"))?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                op::SHORT_BINBYTES | op::BINBYTES => {
                    let n = if opcode == op::SHORT_BINBYTES { self.u8()? as usize } else { self.u32()? as usize };
                    self.take(n)?;
                    self.stack.push(Value::Opaque);
                }
                op::BININT => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                op::BININT2 => {
                    let b = self.take(2)?;
                    self.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                op::LONG1 => {
                    let n = self.u8()? as usize;
                    if n > MAX_LONG1_BYTES {
                        return Err(self.malformed(format!("{n}-byte integer is too large")));
                    }
                    let b = self.take(n)?;
                    let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)));
                }
                op::BINFLOAT => {
                    self.take(8)?;
                    self.stack.push(Value::Opaque);
                }
                op::NONE => self.stack.push(Value::None),
                op::NEWTRUE | op::NEWFALSE => self.stack.push(Value::Opaque),
                op::BINPUT => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?;
                }
                op::LONG_BINPUT => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                op::MEMOIZE => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.malformed("memo overflow"))?;
                    self.memo_put(i)?;
                }
                op::BINGET => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?;
                }
                op::LONG_BINGET => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(resolve_global(module, name)?));
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.malformed("STACK_GLOBAL needs two strings"));
                    };
                    self.stack.push(Value::Global(resolve_global(&module, &name)?));
                }
                op::REDUCE | op::NEWOBJ => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let (Value::Global(func), Value::Tuple(args)) = (func, args) else {
                        return Err(self.malformed("REDUCE needs a global and an argument tuple"));
                    };
                    let v = self.call(&func, &args)?;
                    self.stack.push(v);
                }
                op::BUILD => {
                    // Object state (e.g. a state dict's `_metadata`) carries no tensors we need; it is dropped
                    // rather than applied, so nothing can be set on anything.
                    self.pop()?;
                    self.top()?;
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v);
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                op::APPEND => {
                    let v = self.pop()?;
                    self.append_items(vec![v])?;
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                _ => return Err(CheckpointError::UnknownOpcode { opcode, offset }),
            }
        }
    }
}

/// Reads the state dict selected by `select` from a checkpoint file.
pub fn read_torch_checkpoint(
    path: &Path,
    select: &StateDictSelect,
) -> Result<Vec<(String, HostTensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.into(), source })?;
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
) -> Result<Vec<(String, HostTensor)>, CheckpointError> {
    if !bytes.starts_with(ZIP_MAGIC) {
        if bytes.starts_with(LEGACY_PICKLE_MAGIC) {
            return Err(CheckpointError::LegacyFormat);
        }
        return Err(CheckpointError::Archive("the file does not start with a zip header".into()));
    }
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| CheckpointError::Archive(format!("broken zip: {e}")))?;
    let pkl_name = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .filter(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .min_by_key(String::len)
        .ok_or_else(|| CheckpointError::Archive("no data.pkl in the archive".into()))?;
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
        let tensor = materialize(&t, raw).map_err(|reason| CheckpointError::Tensor { name: name.clone(), reason })?;
        out.push((name, tensor));
    }
    Ok(out)
}

/// A value of a plain pickled dict (see `read_plain_dict`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlainValue {
    Int(i64),
    Str(String),
}

/// Reads a bare pickle (what `pickle.dump` writes; no torch archive) whose root is a dict of `str` keys to `int` or
/// `str` values, in file order. The same allow-list machine runs it, so nothing in the file is executed; any other
/// object (a numpy scalar, a float, a nested container) is refused with the key it sits under.
pub fn read_plain_dict(bytes: &[u8]) -> Result<Vec<(String, PlainValue)>, CheckpointError> {
    let root = Machine::new(bytes).run()?;
    let entries =
        dict_entries(&root).ok_or_else(|| CheckpointError::NotPlainDict("the root object is not a dict".into()))?;
    entries
        .into_iter()
        .map(|(k, v)| {
            let Value::Str(k) = k else {
                return Err(CheckpointError::NotPlainDict("a key is not a string".into()));
            };
            let v = match v {
                Value::Int(i) => PlainValue::Int(i),
                Value::Str(s) => PlainValue::Str(s.to_string()),
                _ => {
                    return Err(CheckpointError::NotPlainDict(format!("the value of `{k}` is not an int or a string")));
                }
            };
            Ok((k.to_string(), v))
        })
        .collect()
}

fn read_entry(archive: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, CheckpointError> {
    let mut file =
        archive.by_name(name).map_err(|e| CheckpointError::Archive(format!("entry `{name}` is unreadable: {e}")))?;
    let mut buf = Vec::with_capacity(usize::try_from(file.size()).unwrap_or(0).min(1 << 30));
    file.read_to_end(&mut buf).map_err(|e| CheckpointError::Archive(format!("entry `{name}` is truncated: {e}")))?;
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

fn select_state_dict(root: &Value, select: &StateDictSelect) -> Result<Vec<(String, TensorRef)>, CheckpointError> {
    let candidates: Vec<String> = match select {
        StateDictSelect::Key(k) => vec![k.clone()],
        StateDictSelect::FirstOf(keys) => keys.clone(),
        StateDictSelect::Root => Vec::new(),
        StateDictSelect::Auto => AUTO_KEYS.iter().map(|k| (*k).to_owned()).collect(),
    };
    for key in &candidates {
        if let Some(v) = lookup(root, key) {
            return as_state_dict(&v).ok_or_else(|| {
                CheckpointError::NoStateDict(format!("`{key}` is not a dict of tensors ({})", top_level_keys(root)))
            });
        }
    }
    if matches!(select, StateDictSelect::Root | StateDictSelect::Auto)
        && let Some(sd) = as_state_dict(root)
    {
        return Ok(sd);
    }
    let wanted = if candidates.is_empty() { "a root state dict".to_owned() } else { candidates.join(" / ") };
    Err(CheckpointError::NoStateDict(format!("looked for {wanted}; {}", top_level_keys(root))))
}

/// Copies a (possibly strided) tensor view out of its storage bytes into a contiguous f32 tensor.
fn materialize(t: &TensorRef, raw: &[u8]) -> Result<HostTensor, String> {
    let elem = t.storage.dtype.size();
    let storage_len = raw.len() / elem;
    let count = t.size.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).ok_or("tensor size overflows")?;
    if count > 0 {
        let extent = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (d, s)| (d - 1).checked_mul(*s).and_then(|x| acc.checked_add(x)))
            .ok_or("tensor extent overflows")?;
        if extent >= storage_len {
            return Err(format!(
                "view reaches element {extent} but its storage `{}` holds {storage_len}",
                t.storage.key
            ));
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
    HostTensor::new(t.size.clone(), data).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
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
        assert!(matches!(err, CheckpointError::ForbiddenGlobal(ref g) if g == "os.system"), "{err}");
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
        assert!(matches!(err, CheckpointError::UnknownOpcode { opcode: b'i', offset: 2 }), "{err}");
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
        assert!(matches!(err, CheckpointError::Archive(_)), "{err}");
        let err = read_torch_checkpoint_bytes(&[op::PROTO, 2, 0x8a, 0x0a], &StateDictSelect::Auto).unwrap_err();
        assert!(matches!(err, CheckpointError::LegacyFormat), "{err}");
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
