//! A pickle *parser* (never an interpreter) for PyTorch checkpoints and TorchScript archives.
//!
//! Hand-written because the Rust pickle crates (`serde-pickle`) either reject the opcodes and
//! persistent ids PyTorch writes or resolve globals generically; we need an allow-list that refuses
//! code by construction and hands back tensor references for the zip's storages.
//!
//! Only the opcodes PyTorch writes are understood, and only an allow-list of globals is accepted:
//! containers (`collections.OrderedDict`), tensor rebuild functions and storage types, and
//! TorchScript module class names (`__torch__.…`, which are inert names here). Any other global —
//! `os.system`, `builtins.eval`, a pickled `nn.Module` class — is refused with an error naming it.
//! Nothing from the file is ever called.

use std::collections::HashMap;

/// A value built from the pickle stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// An allow-listed global, `module.name`.
    Global(String),
    /// An instance of a TorchScript module class with its attribute state.
    Object {
        class: String,
        state: Box<Value>,
    },
    /// A storage reference (`BINPERSID` of `('storage', type, key, location, numel)`).
    Storage {
        dtype: StorageType,
        key: String,
    },
    Tensor(TensorRef),
    Mark,
}

/// Element type of a storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageType {
    fn from_name(name: &str) -> Option<StorageType> {
        Some(match name {
            "FloatStorage" | "float32" | "float" => StorageType::F32,
            "HalfStorage" | "float16" | "half" => StorageType::F16,
            "BFloat16Storage" | "bfloat16" => StorageType::BF16,
            "DoubleStorage" | "float64" | "double" => StorageType::F64,
            "LongStorage" | "int64" | "long" => StorageType::I64,
            "IntStorage" | "int32" | "int" => StorageType::I32,
            "ShortStorage" | "int16" => StorageType::I16,
            "CharStorage" | "int8" => StorageType::I8,
            "ByteStorage" | "uint8" => StorageType::U8,
            "BoolStorage" | "bool" => StorageType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            StorageType::F64 | StorageType::I64 => 8,
            StorageType::F32 | StorageType::I32 => 4,
            StorageType::F16 | StorageType::BF16 | StorageType::I16 => 2,
            StorageType::I8 | StorageType::U8 | StorageType::Bool => 1,
        }
    }
}

/// A tensor view into a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub dtype: StorageType,
    pub storage_key: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq)]
pub enum PickleError {
    /// A global outside the allow-list.
    UnsafeGlobal(String),
    Malformed(String),
}

fn allowed_global(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor_v2" | "_rebuild_parameter" | "_rebuild_parameter_with_state"
        ),
        "torch" => StorageType::from_name(name).is_some(),
        "torch.jit._pickle" => name.starts_with("build_") || name == "restore_type_tag",
        _ => module == "__torch__" || module.starts_with("__torch__."),
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end =
            end.ok_or_else(|| PickleError::Malformed(format!("truncated at byte {}", self.pos)))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        while self.pos < self.data.len() && self.data[self.pos] != b'\n' {
            self.pos += 1;
        }
        let s = String::from_utf8_lossy(&self.data[start..self.pos]).into_owned();
        self.take(1)?;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, PickleError> {
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| PickleError::Malformed("invalid UTF-8 string".into()))
    }
}

fn malformed(msg: &str) -> PickleError {
    PickleError::Malformed(msg.to_owned())
}

fn as_usize_list(v: &Value) -> Result<Vec<usize>, PickleError> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) if *n >= 0 => Ok(*n as usize),
                _ => Err(malformed(
                    "tensor size/stride is not a list of non-negative ints",
                )),
            })
            .collect(),
        _ => Err(malformed("tensor size/stride is not a tuple")),
    }
}

/// Apply an allow-listed callable to its arguments (no code runs: each is a known constructor).
fn reduce(func: &str, args: Vec<Value>) -> Result<Value, PickleError> {
    match func {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" => {
            let (
                Some(Value::Storage { dtype, key }),
                Some(Value::Int(offset)),
                Some(size),
                Some(stride),
            ) = (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err(malformed("_rebuild_tensor_v2 with unexpected arguments"));
            };
            let offset = usize::try_from(*offset)
                .map_err(|_| malformed("tensor storage offset is negative"))?;
            Ok(Value::Tensor(TensorRef {
                dtype: *dtype,
                storage_key: key.clone(),
                offset,
                shape: as_usize_list(size)?,
                strides: as_usize_list(stride)?,
            }))
        }
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => args
            .into_iter()
            .next()
            .ok_or_else(|| malformed("_rebuild_parameter without data")),
        f if f.starts_with("torch.jit._pickle.") => args
            .into_iter()
            .next()
            .ok_or_else(|| malformed("torch.jit._pickle call without arguments")),
        class => Ok(Value::Object {
            class: class.to_owned(),
            state: Box::new(Value::None),
        }),
    }
}

fn pop_mark(stack: &mut Vec<Value>) -> Result<Vec<Value>, PickleError> {
    let mark = stack
        .iter()
        .rposition(|v| *v == Value::Mark)
        .ok_or_else(|| malformed("MARK missing"))?;
    let items = stack.split_off(mark + 1);
    stack.pop();
    Ok(items)
}

fn pop(stack: &mut Vec<Value>) -> Result<Value, PickleError> {
    stack.pop().ok_or_else(|| malformed("stack underflow"))
}

fn global(module: &str, name: &str) -> Result<Value, PickleError> {
    if allowed_global(module, name) {
        Ok(Value::Global(format!("{module}.{name}")))
    } else {
        Err(PickleError::UnsafeGlobal(format!("{module}.{name}")))
    }
}

/// Parse a pickle into a value tree.
///
/// One function on purpose: it is the pickle virtual machine, a single `match` over opcodes on
/// one stack, read beside Python's `pickletools` opcode table; split up, the table would scatter.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    let mut r = Reader { data, pos: 0 };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            } // PROTO
            0x95 => {
                r.u64()?;
            } // FRAME
            b'.' => return pop(&mut stack),
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(global(&module, &name)?);
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(global(&m, &n)?),
                    _ => return Err(malformed("STACK_GLOBAL without strings")),
                }
            }
            b'(' => stack.push(Value::Mark),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(malformed("stack underflow"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Dict(pairs(items)?));
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return Err(malformed("SETITEM on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(pairs(items)?),
                    _ => return Err(malformed("SETITEMS on a non-dict")),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err(malformed("APPEND on a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(malformed("APPENDS on a non-list")),
                }
            }
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'J' => stack.push(Value::Int(r.u32()? as i32 as i64)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.u32()? as usize
                };
                let bytes = r.take(n)?;
                if n > 8 {
                    return Err(malformed("integer wider than 64 bits"));
                }
                let mut buf = [if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                    0xff
                } else {
                    0
                }; 8];
                buf[..n].copy_from_slice(bytes);
                stack.push(Value::Int(i64::from_le_bytes(buf)));
            }
            b'G' => stack.push(Value::Float(f64::from_be_bytes(
                r.take(8)?.try_into().expect("8 bytes"),
            ))),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            0x8d => {
                let n = r.u64()? as usize;
                stack.push(Value::Str(r.string(n)?));
            }
            b'B' | b'C' | 0x8e => {
                let n = match op {
                    b'B' => r.u32()? as usize,
                    b'C' => r.u8()? as usize,
                    _ => r.u64()? as usize,
                };
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'q' | b'r' => {
                let idx = if op == b'q' { r.u8()? as u32 } else { r.u32()? };
                memo.insert(
                    idx,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| malformed("PUT on empty stack"))?,
                );
            }
            0x94 => {
                let idx = memo.len() as u32;
                memo.insert(
                    idx,
                    stack
                        .last()
                        .cloned()
                        .ok_or_else(|| malformed("MEMOIZE on empty stack"))?,
                );
            }
            b'h' | b'j' => {
                let idx = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                stack.push(
                    memo.get(&idx)
                        .cloned()
                        .ok_or_else(|| malformed("GET of unknown memo"))?,
                );
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => stack.push(
                stack
                    .last()
                    .cloned()
                    .ok_or_else(|| malformed("DUP on empty stack"))?,
            ),
            b'R' | 0x81 => {
                let args = match pop(&mut stack)? {
                    Value::Tuple(a) => a,
                    _ => return Err(malformed("REDUCE/NEWOBJ arguments are not a tuple")),
                };
                let func = match pop(&mut stack)? {
                    Value::Global(g) => g,
                    other => return Err(malformed(&format!("call of a non-global {other:?}"))),
                };
                stack.push(reduce(&func, args)?);
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Object { state: s, .. }) => **s = state,
                    Some(_) => {} // state of a dict or tensor (metadata): not needed
                    None => return Err(malformed("BUILD on empty stack")),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                let Value::Tuple(items) = pid else {
                    return Err(malformed("persistent id is not a tuple"));
                };
                match items.as_slice() {
                    [Value::Str(kind), Value::Global(ty), Value::Str(key), ..]
                        if kind == "storage" =>
                    {
                        let name = ty.rsplit('.').next().unwrap_or("");
                        let dtype = StorageType::from_name(name)
                            .ok_or_else(|| malformed(&format!("unsupported storage type {ty}")))?;
                        stack.push(Value::Storage {
                            dtype,
                            key: key.clone(),
                        });
                    }
                    _ => return Err(malformed("unsupported persistent id")),
                }
            }
            other => {
                return Err(malformed(&format!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    r.pos - 1
                )));
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(malformed("odd number of dict items"));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// Every tensor in the tree with its dotted path: dict keys and TorchScript attribute names.
pub fn collect_tensors(v: &Value, prefix: &str, out: &mut Vec<(String, TensorRef)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Tensor(t) => out.push((prefix.to_owned(), t.clone())),
        Value::Dict(items) => {
            for (k, v) in items {
                if let Value::Str(k) = k {
                    collect_tensors(v, &join(k), out);
                }
            }
        }
        Value::Object { state, .. } => collect_tensors(state, prefix, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
