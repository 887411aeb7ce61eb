//! A deliberately small pickle reader for the `data.pkl` inside a `torch.save` zip.
//!
//! A pickle is a program; one from the internet is untrusted. This reader runs none of it: it
//! knows the opcodes `torch.save` emits for a state dict, recognises the handful of torch
//! globals that rebuild tensors, and turns every other global into an inert value. It never
//! allocates more than the input could describe, and shares memoised values instead of copying
//! them, so a small hostile pickle cannot grow without bound.
//!
//! Why not candle's `pickle` module or `serde-pickle`: candle's reader panics on short tuples,
//! allocates string lengths before checking them, deep-copies memo entries (a "billion laughs"
//! pickle exhausts memory), and resolves storage paths through the filesystem; serde-pickle has no
//! persistent ids, which is how torch points at tensor data.

use std::collections::HashMap;
use std::rc::Rc;

/// A torch storage type, from its class name (`FloatStorage`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
    F64,
    /// Any other storage (`ByteStorage` for the old `attn.bias` masks, `LongStorage`, …).
    Other(String),
}

impl StorageType {
    fn from_class(name: &str) -> Self {
        match name {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Bytes per element, for the types a model can use.
    pub fn size(&self) -> Option<usize> {
        match self {
            Self::F32 => Some(4),
            Self::F16 | Self::BF16 => Some(2),
            Self::F64 => Some(8),
            Self::Other(_) => None,
        }
    }
}

/// Where a tensor's elements are: a storage (a file `data/<key>` in the zip) and a strided view.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub storage_key: String,
    pub storage_type: StorageType,
    /// Elements in the storage, as the pickle declares it.
    pub storage_len: usize,
    /// Offset of the first element, in elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Int(i64),
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<std::cell::RefCell<Vec<Value>>>),
    Dict(Rc<std::cell::RefCell<Vec<(Value, Value)>>>),
    Global(Rc<str>, Rc<str>),
    Storage(Rc<(StorageType, String, usize)>),
    Tensor(Rc<TensorRef>),
    /// A value no tensor needs (bools, floats, bytes), or the result of something this reader
    /// refuses to run.
    Opaque,
}

/// Why a pickle could not be read; the message says where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError(pub String);

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, PickleError>;

/// Nesting and memo bounds; a state dict of GPT-2 needs a few hundred of each.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Reads a `torch.save`d state dict and lists its tensors by name. Entries that are not tensors
/// (the `_metadata` attribute, Python objects) are skipped.
pub fn read_state_dict(data: &[u8]) -> Result<Vec<(String, TensorRef)>> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let root = m.run()?;
    let dict = match root {
        Value::Dict(d) => d,
        _ => {
            return Err(PickleError(
                "the pickle does not hold a dict of tensors".into(),
            ))
        }
    };
    // Some trainers save {"state_dict": {...}} or {"model": {...}}: look one level down.
    let entries = dict.borrow().clone();
    if !entries.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
        for (k, v) in &entries {
            if let (Value::Str(k), Value::Dict(_)) = (k, v) {
                if matches!(&**k, "state_dict" | "model" | "module") {
                    return Ok(tensors_of(v));
                }
            }
        }
    }
    Ok(tensors_of(&Value::Dict(dict)))
}

fn tensors_of(v: &Value) -> Vec<(String, TensorRef)> {
    let Value::Dict(d) = v else { return Vec::new() };
    d.borrow()
        .iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.to_string(), (**t).clone())),
            _ => None,
        })
        .collect()
}

impl<'a> Machine<'a> {
    fn err<T>(&self, what: impl std::fmt::Display) -> Result<T> {
        Err(PickleError(format!("pickle byte {}: {what}", self.pos)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.data.len() - self.pos {
            return self.err(format!("needs {n} more bytes, the data ends first"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64_len(&mut self) -> Result<usize> {
        let n = u64::from_le_bytes(self.take(8)?.try_into().unwrap());
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text line");
        };
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).or_else(|_| self.err("text line is not UTF-8"))
    }

    fn string(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.into())),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn push(&mut self, v: Value) -> Result<()> {
        if self.stack.len() >= MAX_STACK {
            return self.err("stack too deep");
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return self.err("stack underflow past a mark");
        }
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let Some(m) = self.marks.pop() else {
            return self.err("no mark");
        };
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(v) => Ok(v),
            None => Err(PickleError(format!(
                "pickle byte {}: stack is empty",
                self.pos
            ))),
        }
    }

    fn memo_put(&mut self, key: u32) -> Result<()> {
        if self.memo.len() >= MAX_MEMO {
            return self.err("memo too large");
        }
        let v = match self.stack.last() {
            Some(v) => v.clone(),
            None => return self.err("memo put on an empty stack"),
        };
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<()> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo key {key} was never stored")),
        }
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME: a hint for buffering only
                }
                b'.' => {
                    // STOP
                    return match self.stack.pop() {
                        Some(v) => Ok(v),
                        None => self.err("STOP on an empty stack"),
                    };
                }
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.push(Value::None)?,
                0x88 | 0x89 => self.push(Value::Opaque)?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = self.u8()? as usize;
                    if n > 8 {
                        return self.err("integer wider than 64 bits");
                    }
                    let bytes = self.take(n)?;
                    let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                        [0xff; 8]
                    } else {
                        [0; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'I' => {
                    // INT as text; protocol 0, also how True/False were once written
                    let line = self.line()?;
                    let v = match line {
                        "01" | "00" => Value::Opaque, // True / False
                        s => match s.parse() {
                            Ok(i) => Value::Int(i),
                            Err(_) => return self.err("bad INT"),
                        },
                    };
                    self.push(v)?
                }
                b'G' => {
                    self.take(8)?; // BINFLOAT
                    self.push(Value::Opaque)?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = self.u64_len()?;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                b'C' | b'B' | 0x8e => {
                    let n = match op {
                        b'C' => self.u8()? as usize,
                        b'B' => self.u32()? as usize,
                        _ => self.u64_len()?,
                    };
                    self.take(n)?;
                    self.push(Value::Opaque)?
                }
                b')' => self.push(Value::Tuple(Rc::new(Vec::new())))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(Rc::new(items)))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return self.err("stack underflow in TUPLE");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(Rc::new(items)))?
                }
                b']' => self.push(Value::List(Default::default()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(Rc::new(items.into())))?
                }
                b'}' => self.push(Value::Dict(Default::default()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items).or_else(|e| self.err(e))?;
                    self.push(Value::Dict(Rc::new(pairs.into())))?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        _ => return self.err("APPEND to something that is not a list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        _ => return self.err("APPENDS to something that is not a list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        _ => return self.err("SETITEM on something that is not a dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items).or_else(|e| self.err(e))?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().extend(new),
                        _ => return self.err("SETITEMS on something that is not a dict"),
                    }
                }
                b'q' => {
                    let k = self.u8()?;
                    self.memo_put(k.into())?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32; // MEMOIZE
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()?;
                    self.memo_get(k.into())?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(module.into(), name.into()))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n))?,
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?
                }
                0x81 => {
                    // NEWOBJ: cls.__new__(cls, *args), never run
                    self.pop()?;
                    self.pop()?;
                    self.push(Value::Opaque)?
                }
                b'b' => {
                    // BUILD: object state (an OrderedDict's `_metadata`, …) is not needed
                    self.pop()?;
                    self.top()?;
                }
                other => {
                    return self.err(format!("opcode 0x{other:02x} is not used by torch.save"))
                }
            }
        }
    }

    /// torch's persistent id for tensor data: `('storage', <StorageClass>, key, location, numel)`.
    fn persistent_load(&self, pid: Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            return self.err("persistent id is not a tuple");
        };
        match t.as_slice() {
            [Value::Str(kind), Value::Global(_, class), Value::Str(key), _location, Value::Int(n), ..]
                if &**kind == "storage" =>
            {
                let n = usize::try_from(*n).or_else(|_| self.err("negative storage size"))?;
                Ok(Value::Storage(Rc::new((
                    StorageType::from_class(class),
                    key.to_string(),
                    n,
                ))))
            }
            _ => self.err("persistent id is not a torch storage"),
        }
    }

    /// Applies one of the known tensor-rebuilding torch functions; anything else is not run.
    fn reduce(&self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(module, name) = callable else {
            return Ok(Value::Opaque);
        };
        let Value::Tuple(args) = args else {
            return self.err("REDUCE arguments are not a tuple");
        };
        match (&*module, &*name) {
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                // (storage, storage_offset, size, stride, ...)
                let [Value::Storage(s), Value::Int(offset), Value::Tuple(size), Value::Tuple(stride), ..] =
                    args.as_slice()
                else {
                    return self.err("unexpected arguments to _rebuild_tensor_v2");
                };
                let dims = |t: &[Value]| -> Result<Vec<usize>> {
                    t.iter()
                        .map(|v| match v {
                            Value::Int(i) if *i >= 0 => Ok(*i as usize),
                            _ => self.err("tensor size or stride is not a non-negative int"),
                        })
                        .collect()
                };
                let shape = dims(size)?;
                let stride = dims(stride)?;
                if shape.len() != stride.len() {
                    return self.err("tensor size and stride differ in rank");
                }
                let (storage_type, storage_key, storage_len) = (**s).clone();
                Ok(Value::Tensor(Rc::new(TensorRef {
                    storage_key,
                    storage_type,
                    storage_len,
                    offset: usize::try_from(*offset).or_else(|_| self.err("negative offset"))?,
                    shape,
                    stride,
                })))
            }
            ("torch._utils", "_rebuild_parameter")
            | ("torch._utils", "_rebuild_parameter_with_state") => match args.first() {
                Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                _ => self.err("_rebuild_parameter without a tensor"),
            },
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, new_type, args, state): apply func to args when func is a rebuild
                match args.as_slice() {
                    [func, _, inner, ..] => self.reduce(func.clone(), inner.clone()),
                    _ => self.err("unexpected arguments to _rebuild_from_type_v2"),
                }
            }
            ("collections", "OrderedDict") => Ok(Value::Dict(Default::default())),
            _ => Ok(Value::Opaque),
        }
    }
}

fn pairs(mut items: Vec<Value>) -> std::result::Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.drain(..);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x80",
            b"X\xff\xff\xff\xff",
            b"(t",
            b"h\x05",
            b"\x8a\x09",
            b"R",
        ] {
            assert!(read_state_dict(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memo_sharing_does_not_blow_up() {
        // ']' then repeatedly: put, get, get, tuple2 -> each level doubles a naive copy.
        let mut p = vec![0x80, 2, b']'];
        for _ in 0..60 {
            p.extend_from_slice(&[b'q', 0, b'h', 0, 0x86]);
        }
        p.extend_from_slice(b"}.");
        assert!(read_state_dict(&p).unwrap().is_empty());
    }

    #[test]
    fn unknown_globals_are_never_called() {
        // os.system('x') as REDUCE: becomes an inert value inside a dict.
        let p = b"}X\x01\x00\x00\x00acos\nsystem\nX\x01\x00\x00\x00x\x85Rs.";
        assert!(read_state_dict(p).unwrap().is_empty());
    }
}
