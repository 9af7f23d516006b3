//! A pickle reader that executes nothing: the subset of the pickle protocol a PyTorch state dict is made of.
//!
//! Owns a minimal pickle virtual machine that understands only dicts, lists, tuples, strings, numbers, tensors and
//! their storages, and resolves globals against a short allow-list implemented natively here. An unknown opcode or
//! global is an error naming it. Receives the pickle bytes; emits a `Value` tree whose tensors are references into
//! storages that `import::torch` materialises.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::error::TorchCheckpointError;

/// Element types of PyTorch storages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StorageDtype {
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

    pub(super) fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    pub(super) fn read(self, b: &[u8]) -> f32 {
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
pub(super) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageDtype),
}

fn resolve_global(module: &str, name: &str) -> Result<Global, TorchCheckpointError> {
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", class) => StorageDtype::from_storage_class(class)
            .map(Global::Storage)
            .ok_or_else(|| TorchCheckpointError::ForbiddenGlobal(format!("{module}.{name}"))),
        _ => Err(TorchCheckpointError::ForbiddenGlobal(format!("{module}.{name}"))),
    }
}

#[derive(Clone, Debug)]
pub(super) struct StorageRef {
    pub(super) key: String,
    pub(super) dtype: StorageDtype,
}

#[derive(Clone, Debug)]
pub(super) struct TensorRef {
    pub(super) storage: StorageRef,
    pub(super) offset: usize,
    pub(super) size: Vec<usize>,
    pub(super) stride: Vec<usize>,
}

type Shared<T> = Rc<RefCell<T>>;

/// Pickle values. Containers are shared so that memo references alias (and never copy) them.
#[derive(Clone, Debug)]
pub(super) enum Value {
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

pub(super) mod op {
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

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Machine<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }
    }

    fn malformed(&self, reason: impl Into<String>) -> TorchCheckpointError {
        TorchCheckpointError::Malformed { offset: self.pos, reason: reason.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchCheckpointError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.data.len());
        let Some(end) = end else {
            return Err(self.malformed(format!("needs {n} more bytes but the pickle ends")));
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, TorchCheckpointError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, TorchCheckpointError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, TorchCheckpointError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    fn line(&mut self) -> Result<&'a str, TorchCheckpointError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().position(|b| *b == b'\n') else {
            return Err(self.malformed("unterminated GLOBAL name"));
        };
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| self.malformed("GLOBAL name is not UTF-8"))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn text(&mut self, n: usize) -> Result<Value, TorchCheckpointError> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| self.malformed("string is not UTF-8"))?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> Result<Value, TorchCheckpointError> {
        self.stack.pop().ok_or_else(|| self.malformed("stack underflow"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, TorchCheckpointError> {
        let mark = self.marks.pop().ok_or_else(|| self.malformed("no MARK to pop to"))?;
        if mark > self.stack.len() {
            return Err(self.malformed("MARK above the stack top"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value, TorchCheckpointError> {
        let pos = self.pos;
        self.stack.last_mut().ok_or(TorchCheckpointError::Malformed { offset: pos, reason: "stack underflow".into() })
    }

    fn memo_put(&mut self, index: u32) -> Result<(), TorchCheckpointError> {
        let v = self.stack.last().cloned().ok_or_else(|| self.malformed("PUT on an empty stack"))?;
        self.memo.insert(index, v);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), TorchCheckpointError> {
        let v = self.memo.get(&index).cloned().ok_or_else(|| self.malformed(format!("memo {index} is not set")))?;
        self.stack.push(v);
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), TorchCheckpointError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("SETITEMS with an odd number of values"));
        }
        let pos = self.pos;
        let Value::Dict(d) = self.top()? else {
            return Err(TorchCheckpointError::Malformed { offset: pos, reason: "SETITEM(S) on a non-dict".into() });
        };
        let d = d.clone();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.borrow_mut().push((k, v));
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Value>) -> Result<(), TorchCheckpointError> {
        let pos = self.pos;
        let Value::List(l) = self.top()? else {
            return Err(TorchCheckpointError::Malformed { offset: pos, reason: "APPEND(S) on a non-list".into() });
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    /// Calls an allow-listed global natively.
    fn call(&self, func: &Global, args: &[Value]) -> Result<Value, TorchCheckpointError> {
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

    fn as_index(&self, v: &Value) -> Result<usize, TorchCheckpointError> {
        match v {
            Value::Int(i) => usize::try_from(*i).map_err(|_| self.malformed(format!("negative index {i}"))),
            _ => Err(self.malformed("expected an integer")),
        }
    }

    fn as_index_tuple(&self, v: &Value) -> Result<Vec<usize>, TorchCheckpointError> {
        match v {
            Value::Tuple(items) => items.iter().map(|i| self.as_index(i)).collect(),
            _ => Err(self.malformed("expected a tuple of integers")),
        }
    }

    /// `('storage', storage_type, key, location, numel)`.
    fn persistent_load(&self, pid: Value) -> Result<Value, TorchCheckpointError> {
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

    pub(super) fn run(mut self) -> Result<Value, TorchCheckpointError> {
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
                _ => return Err(TorchCheckpointError::UnknownOpcode { opcode, offset }),
            }
        }
    }
}
