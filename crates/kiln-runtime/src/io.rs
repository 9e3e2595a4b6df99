//! Tensors in and out of files: single tensors as NumPy `.npy`, weights as safetensors.

#![forbid(unsafe_code)]

use kiln_ir::{DType, Tensor, TensorType, Value};
use npyz::WriterBuilder;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IoError {
    // The I/O error is part of the message (not a `source`), so a chain prints it once.
    #[error("cannot read `{path}`: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("cannot write `{path}`: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("`{path}` is not a valid {format} file: {reason}")]
    Format {
        path: String,
        format: &'static str,
        reason: String,
    },
    #[error("`{path}`: {what} has element type {dtype}; kiln reads {supported}")]
    Dtype {
        path: String,
        what: String,
        dtype: String,
        supported: &'static str,
    },
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    std::fs::write(path, bytes).map_err(|error| IoError::Write {
        path: path.display().to_string(),
        error,
    })
}

/// The longest `.npy` header kiln reads, in bytes. NumPy writes headers of under 200 bytes for
/// any array kiln reads (and by default refuses to read headers over 10,000 bytes).
pub const MAX_NPY_HEADER: usize = 1 << 16;

/// What a `.npy` header says: the element type, the order and the shape.
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// A parser of the Python dict literal of a `.npy` header:
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
struct DictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl DictParser<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        let found = match self.s.get(self.pos) {
            Some(&c) if c.is_ascii_graphic() => format!("`{}`", c as char),
            Some(&c) => format!("byte 0x{c:02x}"),
            None => "the end of the header".into(),
        };
        Err(format!(
            "header dict, character {}: expected {what}, found {found}",
            self.pos + 1
        ))
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(&format!("`{}`", c as char))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => return self.err("a quoted string"),
        };
        let start = self.pos + 1;
        let Some(len) = self.s[start..].iter().position(|&c| c == q) else {
            self.pos = self.s.len();
            return self.err(&format!("the closing {}", q as char));
        };
        self.pos = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn word(&mut self) -> &str {
        self.skip_ws();
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    fn bool(&mut self) -> Result<bool, String> {
        let at = self.pos;
        match self.word() {
            "True" => Ok(true),
            "False" => Ok(false),
            _ => {
                self.pos = at;
                self.skip_ws();
                self.err("True or False")
            }
        }
    }

    /// A tuple of non-negative integers (`()`, `(3,)`, `(2, 3)`; Python 2's `3L` too).
    fn shape(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            if self.peek() == Some(b')') {
                self.pos += 1;
                return Ok(dims);
            }
            if dims.len() > kiln_ir::limits::MAX_RANK {
                return Err(format!(
                    "the shape has more than {} dims (the limit)",
                    kiln_ir::limits::MAX_RANK
                ));
            }
            let at = self.pos;
            let w = self.word().to_string();
            let digits = w.strip_suffix('L').unwrap_or(&w);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                self.pos = at;
                self.skip_ws();
                return self.err("a dim (a non-negative integer) or `)`");
            }
            let d: usize = digits.parse().map_err(|_| {
                format!(
                    "dim {digits} is above the limit of {} elements per tensor",
                    kiln_ir::limits::MAX_ELEMENTS
                )
            })?;
            dims.push(d);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b')') => {}
                _ => return self.err("`,` or `)`"),
            }
        }
    }

    fn header(&mut self) -> Result<NpyHeader, String> {
        let (mut descr, mut fortran_order, mut shape) = (None, None, None);
        self.expect(b'{')?;
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                break;
            }
            let key = self.string()?;
            self.expect(b':')?;
            let dup = match key.as_str() {
                "descr" => {
                    if self.peek() == Some(b'[') {
                        return Err("a structured dtype (a list of fields) is not a tensor".into());
                    }
                    descr.replace(self.string()?).is_some()
                }
                "fortran_order" => fortran_order.replace(self.bool()?).is_some(),
                "shape" => shape.replace(self.shape()?).is_some(),
                other => return Err(format!("unknown key `{other}` in the header dict")),
            };
            if dup {
                return Err(format!("key `{key}` appears twice in the header dict"));
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return self.err("`,` or `}`"),
            }
        }
        if self.peek().is_some() {
            return self.err("the end of the header after the dict");
        }
        let missing = |k: &str| format!("the header dict has no `{k}`");
        Ok(NpyHeader {
            descr: descr.ok_or_else(|| missing("descr"))?,
            fortran_order: fortran_order.ok_or_else(|| missing("fortran_order"))?,
            shape: shape.ok_or_else(|| missing("shape"))?,
        })
    }
}

/// The items of `it` (`n` of them) in a vector allocated fallibly: memory the machine does
/// not have is an error, not an abort.
pub(crate) fn try_collect<T>(n: usize, it: impl Iterator<Item = T>) -> Result<Vec<T>, String> {
    let mut v = Vec::new();
    try_reserve(&mut v, n)?;
    v.extend(it);
    Ok(v)
}

/// Reserves room for `n` more items, or says that there is no memory for them.
pub(crate) fn try_reserve<T>(v: &mut Vec<T>, n: usize) -> Result<(), String> {
    v.try_reserve_exact(n).map_err(|_| {
        format!(
            "cannot allocate {n} × {} bytes: out of memory",
            std::mem::size_of::<T>()
        )
    })
}

/// Reads into `buf` until it is full or the reader ends; returns how many bytes were read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a `.npy` file: `float32` and `float64` become f32 tensors, `int32` and `int64`
/// (class ids, as NumPy writes them by default) become i32 tensors.
///
/// The header is checked first (at most [`MAX_NPY_HEADER`] bytes, the shape within
/// [`kiln_ir::limits`], a supported dtype, C order), then the size of the data it promises
/// against the file, before the data is read: a file holds exactly that many bytes after its
/// header, no fewer and no more.
pub fn read_npy(path: &Path) -> Result<Value<f32>, IoError> {
    match npy(path, true)? {
        Npy::Value(v) => Ok(v),
        // `npy(_, true)` always reads the data
        Npy::Type(t) => Err(IoError::Format {
            path: path.display().to_string(),
            format: ".npy",
            reason: format!("the data of {t} was not read"),
        }),
    }
}

/// The type of the tensor a `.npy` file holds, as [`read_npy`] would read it (`float32` and
/// `float64` as f32, `int32` and `int64` as i32), from its header alone: the file is checked
/// as [`read_npy`] checks it (its length against the header included) but its data is not
/// read. Lets a caller refuse a file of the wrong shape before reading it.
pub fn read_npy_type(path: &Path) -> Result<TensorType, IoError> {
    match npy(path, false)? {
        Npy::Type(t) => Ok(t),
        Npy::Value(v) => Ok(v.ty()),
    }
}

enum Npy {
    Type(TensorType),
    Value(Value<f32>),
}

fn npy(path: &Path, read_data: bool) -> Result<Npy, IoError> {
    let shown = path.display().to_string();
    let rerr = |error: std::io::Error| IoError::Read {
        path: shown.clone(),
        error,
    };
    let bad = |reason: String| IoError::Format {
        path: shown.clone(),
        format: ".npy",
        reason,
    };
    let file = std::fs::File::open(path).map_err(rerr)?;
    let file_len = file
        .metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len());
    let mut r = std::io::BufReader::new(file);

    // magic, version, header length
    let mut pre = [0u8; 8];
    let n = read_up_to(&mut r, &mut pre).map_err(rerr)?;
    if n < 8 || &pre[..6] != b"\x93NUMPY" {
        return Err(bad(
            "it does not start with the .npy magic string `\\x93NUMPY` and a version".into(),
        ));
    }
    let len_bytes = match pre[6] {
        1 => 2,
        2 | 3 => 4,
        v => {
            return Err(bad(format!(
                "format version {v}.{} (kiln reads versions 1.0, 2.0 and 3.0)",
                pre[7]
            )));
        }
    };
    let mut lb = [0u8; 4];
    if read_up_to(&mut r, &mut lb[..len_bytes]).map_err(rerr)? < len_bytes {
        return Err(bad("the file ends inside the header length".into()));
    }
    let header_len = u32::from_le_bytes(lb) as usize;
    if header_len > MAX_NPY_HEADER {
        return Err(bad(format!(
            "a header of {header_len} bytes is above the limit of {MAX_NPY_HEADER}"
        )));
    }
    let mut header = vec![0u8; header_len];
    let got = read_up_to(&mut r, &mut header).map_err(rerr)?;
    if got < header_len {
        return Err(bad(format!(
            "the file ends inside the header ({got} of {header_len} bytes)"
        )));
    }
    let h = DictParser { s: &header, pos: 0 }.header().map_err(bad)?;
    let numel = kiln_ir::limits::check_dims(&h.shape).map_err(|e| bad(format!("header shape: {e}")))?;
    // (kind, item size); `=` is native order, little-endian on every host kiln runs on
    let descr = h.descr.trim_start_matches(['<', '=', '|']);
    let kind = match (h.descr.as_bytes().first(), descr) {
        (Some(b'<' | b'='), "f4" | "f8" | "i4" | "i8") => descr,
        _ => {
            return Err(IoError::Dtype {
                path: shown,
                what: "the array".into(),
                dtype: h.descr,
                supported: "float32, float64, int32 and int64 (little-endian: <f4, <f8, <i4, <i8)",
            });
        }
    };
    let item = if kind.ends_with('8') { 8 } else { 4 };
    if h.fortran_order && h.shape.iter().filter(|&&d| d > 1).count() > 1 {
        return Err(bad(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let need = kiln_ir::limits::check_bytes(numel, item, "the data").map_err(bad)?;
    let data_start = (6 + 2 + len_bytes + header_len) as u64;
    let mismatch = |have: u64| {
        bad(if have < need as u64 {
            format!(
                "truncated: shape {:?} of {} needs {need} bytes of data after the header, the file has {have}",
                h.shape, h.descr
            )
        } else {
            format!(
                "{} bytes after the end of the data (shape {:?} of {} is {need} bytes)",
                have - need as u64,
                h.shape,
                h.descr
            )
        })
    };
    if let Some(len) = file_len {
        let have = len.saturating_sub(data_start);
        if have != need as u64 {
            return Err(mismatch(have));
        }
    }
    if !read_data {
        let dtype = if kind.starts_with('f') {
            DType::F32
        } else {
            DType::I32
        };
        return Ok(Npy::Type(TensorType::new(dtype, h.shape)));
    }
    // at most `need + 1` bytes are read whatever the file is (a pipe, a file growing meanwhile)
    let mut data = Vec::new();
    try_reserve(&mut data, need.saturating_add(1)).map_err(&bad)?;
    r.take(need as u64 + 1).read_to_end(&mut data).map_err(rerr)?;
    if data.len() != need {
        return Err(mismatch(data.len() as u64));
    }
    let value = match kind {
        "f4" => Tensor::new(
            h.shape,
            try_collect(
                numel,
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            )
            .map_err(&bad)?,
        )
        .map(Value::F),
        "f8" => {
            let v = try_collect(
                numel,
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
            )
            .map_err(&bad)?;
            drop(data);
            Tensor::new(h.shape, v).map(Value::F)
        }
        "i4" => Tensor::new(
            h.shape,
            try_collect(
                numel,
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            )
            .map_err(&bad)?,
        )
        .map(Value::I),
        _ => {
            let mut v = Vec::new();
            try_reserve(&mut v, numel).map_err(&bad)?;
            for (i, c) in data.chunks_exact(8).enumerate() {
                let x = i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                v.push(
                    i32::try_from(x)
                        .map_err(|_| bad(format!("element {i}: integer {x} does not fit in i32")))?,
                );
            }
            drop(data);
            Tensor::new(h.shape, v).map(Value::I)
        }
    };
    value.map(Npy::Value).map_err(|e| bad(e.to_string()))
}

/// Writes a tensor as `.npy` (`float32` or `int32`, C order).
pub fn write_npy(path: &Path, value: &Value<f32>) -> Result<(), IoError> {
    let shape: Vec<u64> = value.shape().dims().iter().map(|&d| d as u64).collect();
    let mut buf = Vec::new();
    let shown = path.display().to_string();
    let werr = |error: std::io::Error| IoError::Write {
        path: shown.clone(),
        error,
    };
    match value {
        Value::F(t) => npy_bytes(&shape, t.data(), &mut buf).map_err(werr)?,
        Value::I(t) => npy_bytes(&shape, t.data(), &mut buf).map_err(werr)?,
    }
    write(path, &buf)
}

/// Appends the `.npy` encoding of `data` with `shape` to `buf`.
fn npy_bytes<T: npyz::AutoSerialize + Copy>(
    shape: &[u64],
    data: &[T],
    buf: &mut Vec<u8>,
) -> std::io::Result<()> {
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(buf)
        .begin_nd()?;
    w.extend(data.iter().copied())?;
    w.finish()
}

/// safetensors' own limit on the JSON header: 100 MB.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// A JSON value of a safetensors header (numbers kept as written).
enum Json {
    Null,
    Bool,
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

/// A JSON parser for safetensors headers: nesting at most 32 deep (a header nests 3 deep).
struct JsonParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl JsonParser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("header JSON, byte {}: expected {what}", self.pos + 8))
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 32 {
            return Err("header JSON nests deeper than 32 levels".into());
        }
        self.ws();
        match self.s.get(self.pos) {
            Some(b'{') => {
                self.pos += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    let Json::Str(k) = self.value(depth + 1)? else {
                        return self.err("a string key");
                    };
                    self.ws();
                    if self.s.get(self.pos) != Some(&b':') {
                        return self.err("`:`");
                    }
                    self.pos += 1;
                    fields.push((k, self.value(depth + 1)?));
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Obj(fields));
                        }
                        _ => return self.err("`,` or `}`"),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.ws();
                if self.s.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.s.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Arr(items));
                        }
                        _ => return self.err("`,` or `]`"),
                    }
                }
            }
            Some(b'"') => {
                self.pos += 1;
                let mut out = Vec::new();
                loop {
                    match self.s.get(self.pos) {
                        None => return self.err("the end of a string"),
                        Some(b'"') => break,
                        Some(b'\\') => {
                            // kept as written: only the keys of a header matter here, and
                            // safetensors decodes the names itself afterwards
                            out.extend(&self.s[self.pos..(self.pos + 2).min(self.s.len())]);
                            self.pos += 2;
                        }
                        Some(&c) => {
                            out.push(c);
                            self.pos += 1;
                        }
                    }
                }
                self.pos += 1;
                Ok(Json::Str(String::from_utf8_lossy(&out).into_owned()))
            }
            Some(c) if c.is_ascii_digit() || *c == b'-' => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.pos += 1;
                }
                Ok(Json::Num(
                    String::from_utf8_lossy(&self.s[start..self.pos]).into_owned(),
                ))
            }
            _ => {
                for (word, v) in [("true", Json::Bool), ("false", Json::Bool), ("null", Json::Null)] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(v);
                    }
                }
                self.err("a JSON value")
            }
        }
    }
}

/// From a safetensors header: checks every tensor's dtype (F32 or F64), shape (within
/// [`kiln_ir::limits`]) and data size, and the total of the weights as f32; returns the length
/// of the data section the header promises.
fn safetensors_data_len(header: &[u8], shown: &str) -> Result<u64, IoError> {
    let bad = |reason: String| IoError::Format {
        path: shown.to_string(),
        format: "safetensors",
        reason,
    };
    let mut p = JsonParser { s: header, pos: 0 };
    let Json::Obj(fields) = p.value(0).map_err(&bad)? else {
        return Err(bad("the header is not a JSON object".into()));
    };
    let int = |j: &Json| match j {
        Json::Num(n) => n.parse::<u64>().ok(),
        _ => None,
    };
    let (mut end, mut total) = (0u64, 0usize);
    for (name, info) in &fields {
        if name == "__metadata__" {
            continue;
        }
        let tbad = |reason: &str| bad(format!("tensor `{name}`: {reason}"));
        let Json::Obj(info) = info else {
            return Err(tbad("not a JSON object"));
        };
        let get = |k: &str| info.iter().find(|(n, _)| n == k).map(|(_, v)| v);
        let dtype = match get("dtype") {
            Some(Json::Str(d)) => d.clone(),
            _ => return Err(tbad("no `dtype`")),
        };
        let size = match dtype.as_str() {
            "F32" => 4,
            "F64" => 8,
            _ => {
                return Err(IoError::Dtype {
                    path: shown.to_string(),
                    what: format!("tensor `{name}`"),
                    dtype,
                    supported: "F32 and F64",
                });
            }
        };
        let Some(Json::Arr(dims)) = get("shape") else {
            return Err(tbad("no `shape` array"));
        };
        if dims.len() > kiln_ir::limits::MAX_RANK {
            return Err(tbad(&format!(
                "shape: rank {} is above the limit of {} dims",
                dims.len(),
                kiln_ir::limits::MAX_RANK
            )));
        }
        let dims: Vec<usize> = dims
            .iter()
            .map(|d| int(d).and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| tbad("shape: a dim is not a non-negative integer"))?;
        let numel = kiln_ir::limits::check_dims(&dims).map_err(|e| tbad(&format!("shape: {e}")))?;
        let offsets = match get("data_offsets") {
            Some(Json::Arr(o)) if o.len() == 2 => (int(&o[0]), int(&o[1])),
            _ => (None, None),
        };
        let (Some(a), Some(b)) = offsets else {
            return Err(tbad("no `data_offsets` [BEGIN, END]"));
        };
        let bytes = kiln_ir::limits::check_bytes(numel, size, &format!("tensor `{name}`")).map_err(&bad)?;
        if b.checked_sub(a) != Some(bytes as u64) {
            return Err(tbad(&format!(
                "data_offsets [{a}, {b}] do not hold the {bytes} bytes of {dtype} {dims:?}"
            )));
        }
        let f32_bytes = kiln_ir::limits::check_bytes(numel, 4, &format!("tensor `{name}`")).map_err(&bad)?;
        total = kiln_ir::limits::add_bytes(total, f32_bytes, "the weights").map_err(&bad)?;
        end = end.max(b);
    }
    Ok(end)
}

/// Reads every tensor of a safetensors file as f32 (F32 stored; F64 converted).
///
/// The header is read first (at most 100 MB, safetensors' limit) and every tensor's shape
/// checked against [`kiln_ir::limits`] and the total size of the weights against
/// [`kiln_ir::limits::MAX_BYTES`]; then the file must be exactly as long as the header says
/// (at most one byte more is ever read, whatever the file is), and safetensors itself checks
/// the offsets.
pub fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor<f32>>, IoError> {
    let shown = path.display().to_string();
    let bad = |reason: String| IoError::Format {
        path: shown.clone(),
        format: "safetensors",
        reason,
    };
    let rerr = |error: std::io::Error| IoError::Read {
        path: shown.clone(),
        error,
    };
    let file = std::fs::File::open(path).map_err(rerr)?;
    let file_len = file
        .metadata()
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len());
    let mut r = std::io::BufReader::new(file);
    let mut bytes = vec![0u8; 8];
    if read_up_to(&mut r, &mut bytes).map_err(rerr)? < 8 {
        return Err(bad("the file ends inside the 8-byte header length".into()));
    }
    let n = u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ]);
    if n > MAX_SAFETENSORS_HEADER {
        return Err(bad(format!(
            "a header of {n} bytes is above the limit of {MAX_SAFETENSORS_HEADER}"
        )));
    }
    (&mut r).take(n).read_to_end(&mut bytes).map_err(rerr)?;
    if bytes.len() as u64 != 8 + n {
        return Err(bad(format!(
            "the file ends inside the header ({} of {n} bytes)",
            bytes.len() - 8
        )));
    }
    let data_len = safetensors_data_len(&bytes[8..], &shown)?;
    let want = 8 + n + data_len;
    let mismatch = |have: u64| {
        bad(format!(
            "the header promises {want} bytes in all, the file has {}{have}",
            if have > want { "at least " } else { "" }
        ))
    };
    if let Some(len) = file_len
        && len != want
    {
        return Err(mismatch(len));
    }
    try_reserve(&mut bytes, usize::try_from(data_len + 1).unwrap_or(usize::MAX)).map_err(&bad)?;
    r.take(data_len + 1).read_to_end(&mut bytes).map_err(rerr)?;
    if bytes.len() as u64 != want {
        return Err(mismatch(bytes.len() as u64));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = st.tensors();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    // validate everything first
    let mut total = 0usize;
    for (name, view) in &tensors {
        let numel = kiln_ir::limits::check_dims(view.shape())
            .map_err(|e| bad(format!("tensor `{name}`: shape: {e}")))?;
        if !matches!(view.dtype(), safetensors::Dtype::F32 | safetensors::Dtype::F64) {
            return Err(IoError::Dtype {
                path: shown,
                what: format!("tensor `{name}`"),
                dtype: format!("{:?}", view.dtype()),
                supported: "F32 and F64",
            });
        }
        let bytes = kiln_ir::limits::check_bytes(numel, 4, &format!("tensor `{name}`")).map_err(&bad)?;
        total = kiln_ir::limits::add_bytes(total, bytes, "the weights").map_err(&bad)?;
    }
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, view) in tensors {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => try_collect(
                data.len() / 4,
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            _ => try_collect(
                data.len() / 8,
                data.chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
            ),
        }
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let t = Tensor::new(view.shape().to_vec(), values).map_err(|_| {
            bad(format!(
                "tensor `{name}` holds the wrong number of elements for its shape"
            ))
        })?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Writes `tensors` as a safetensors file of F32 tensors.
pub fn save_safetensors(path: &Path, tensors: &HashMap<String, Tensor<f32>>) -> Result<(), IoError> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data().iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.dims().to_vec(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IoError::Format {
            path: path.display().to_string(),
            format: "safetensors",
            reason: e.to_string(),
        })?;
    let out = safetensors::serialize(views, None).map_err(|e| IoError::Format {
        path: path.display().to_string(),
        format: "safetensors",
        reason: e.to_string(),
    })?;
    write(path, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file under the system's temporary folder, removed when the test ends.
    struct Tmp(std::path::PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        Tmp(std::env::temp_dir().join(format!("kiln-io-{}-{name}", std::process::id())))
    }

    #[test]
    fn npy_round_trips_f32_and_i32() {
        let t = tmp("a.npy");
        let p = &t.0;
        let v = Value::F(Tensor::new([2, 3], vec![1.0, -2.5, 3.0, 0.0, 1e-7, 6.0]).unwrap());
        write_npy(p, &v).unwrap();
        assert_eq!(read_npy(p).unwrap(), v);
        let i = Value::I(Tensor::new([4], vec![0, 3, -1, 7]).unwrap());
        write_npy(p, &i).unwrap();
        assert_eq!(read_npy(p).unwrap(), i);
    }

    /// A `.npy` written byte by byte as NumPy 1.x writes `np.arange(3, dtype=np.int64)`.
    #[test]
    fn reads_numpy_int64_written_by_numpy() {
        let mut f = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }";
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        f.extend((h.len() as u16).to_le_bytes());
        f.extend(h.as_bytes());
        for x in 0i64..3 {
            f.extend(x.to_le_bytes());
        }
        let t = tmp("i8.npy");
        let p = &t.0;
        std::fs::write(p, f).unwrap();
        assert_eq!(
            read_npy(p).unwrap(),
            Value::I(Tensor::new([3], vec![0, 1, 2]).unwrap())
        );
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let t = tmp("junk.npy");
        let p = &t.0;
        std::fs::write(p, b"not a numpy file").unwrap();
        let e = read_npy(p).unwrap_err().to_string();
        assert!(e.contains("junk.npy") && e.contains(".npy"), "{e}");
        let e = read_npy(Path::new("/nonexistent.npy")).unwrap_err().to_string();
        assert!(e.contains("cannot read `/nonexistent.npy`"), "{e}");
        let t = tmp("junk.safetensors");
        let p = &t.0;
        std::fs::write(p, b"\x01\x02").unwrap();
        let e = load_safetensors(p).unwrap_err().to_string();
        assert!(e.contains("junk.safetensors") && e.contains("safetensors"), "{e}");
    }

    #[test]
    fn safetensors_round_trip() {
        let t = tmp("w.safetensors");
        let p = &t.0;
        let w = HashMap::from([
            (
                "conv1.weight".to_string(),
                Tensor::new([2, 1, 1, 1], vec![0.5, -1.0]).unwrap(),
            ),
            (
                "fc.bias".to_string(),
                Tensor::new([3], vec![1.0, 2.0, 3.0]).unwrap(),
            ),
        ]);
        save_safetensors(p, &w).unwrap();
        assert_eq!(load_safetensors(p).unwrap(), w);
    }
}
