//! Reading a `TensorProto`'s data: `raw_data` (little-endian), the typed fields
//! (`float_data`, `int32_data`, `int64_data`, `double_data`), or an external file next to the
//! model. Floats become `f32`, integers and booleans `i64` (shapes, pads, axes).

use crate::error::{OnnxError, Result};
use crate::proto::{TensorProto, data_type as dt};
use kiln_ir::limits;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use zerocopy::IntoBytes;

/// A constant known at import time.
#[derive(Debug, Clone, PartialEq)]
pub struct Const {
    pub dims: Vec<usize>,
    pub data: ConstData,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConstData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Const {
    pub fn f32(dims: Vec<usize>, data: Vec<f32>) -> Const {
        Const {
            dims,
            data: ConstData::F32(data),
        }
    }
    pub fn i64(dims: Vec<usize>, data: Vec<i64>) -> Const {
        Const {
            dims,
            data: ConstData::I64(data),
        }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            ConstData::F32(v) => v.len(),
            ConstData::I64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            ConstData::F32(v) => Some(v),
            ConstData::I64(_) => None,
        }
    }
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            ConstData::I64(v) => Some(v),
            ConstData::F32(_) => None,
        }
    }
}

fn err(name: &str, reason: impl Into<String>) -> OnnxError {
    OnnxError::Tensor {
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// Reads `t` on its own; `base_dir` is where external data files are looked up (`None`: not
/// allowed). An import reads through one [`Reader`] instead, so that every external data file
/// is opened once and the bytes of all its constants are counted together.
pub fn read(t: &TensorProto, base_dir: Option<&Path>) -> Result<Const> {
    Reader::new(base_dir).read(t)
}

/// The bytes of constants an import may hold without reading any input: room for folded
/// constants (ConstantOfShape fills) and the copies of a small model. 256 MiB.
pub const BASE_ALLOWANCE: usize = 256 << 20;

/// How many bytes of constants an import may hold per byte of input (the model file and its
/// external data files, each file counted once): 16. A model's weights are held about three
/// times over at most (the decoded constant, the weight, a transposed copy for `Gemm`), and
/// FLOAT16 data doubles in size; a hostile file that references the same bytes again and
/// again runs into this bound instead of allocating gigabytes.
pub const BYTES_PER_INPUT_BYTE: usize = 16;

/// Reads the tensors of one model: opens each external data file once (keyed by its real
/// path) and counts the bytes of every constant it returns or is [charged](Reader::charge)
/// for, checked before anything is allocated, against the smaller of a hard limit
/// ([`kiln_ir::limits::MAX_BYTES`] unless [set](Reader::with_budget)) and an allowance that
/// grows with the input: [`BASE_ALLOWANCE`] plus [`BYTES_PER_INPUT_BYTE`] per byte of the
/// model file ([`Reader::allow_input`]) and of each external data file opened.
#[derive(Debug)]
pub struct Reader {
    base: Option<PathBuf>,
    /// The model's folder with symlinks resolved, found on first use.
    real_base: Option<PathBuf>,
    /// Open external data files by real path, with their length.
    files: HashMap<PathBuf, (File, u64)>,
    opened: usize,
    used: usize,
    budget: usize,
    allowance: usize,
    /// The model file and where in it the `raw_data` that [`crate::load`] left out of the
    /// decoded model lies ([`TensorProto::kiln_raw_data_at`]).
    model_file: Option<(File, Vec<(u64, u64)>)>,
}

impl Reader {
    pub fn new(base_dir: Option<&Path>) -> Reader {
        Reader {
            base: base_dir.map(Path::to_path_buf),
            real_base: None,
            files: HashMap::new(),
            opened: 0,
            used: 0,
            budget: limits::MAX_BYTES,
            allowance: BASE_ALLOWANCE,
            model_file: None,
        }
    }

    /// The same reader taking the `raw_data` of a tensor with
    /// [`kiln_raw_data_at`](TensorProto::kiln_raw_data_at) `i` from bytes
    /// `ranges[i].0 .. ranges[i].0 + ranges[i].1` of `file`, the model file (which
    /// [`Reader::allow_input`] must count).
    pub(crate) fn with_model_file(mut self, file: File, ranges: Vec<(u64, u64)>) -> Reader {
        self.model_file = Some((file, ranges));
        self
    }

    /// The same reader with a hard limit of `bytes` for all the constants it reads or is
    /// charged for (the allowance still applies).
    pub fn with_budget(mut self, bytes: usize) -> Reader {
        self.budget = bytes;
        self
    }

    /// Raises the allowance for `bytes` of input read (the model file's size).
    pub fn allow_input(&mut self, bytes: usize) {
        self.allowance = self
            .allowance
            .saturating_add(bytes.saturating_mul(BYTES_PER_INPUT_BYTE));
    }

    /// How many external data files were opened (each at most once).
    pub fn files_opened(&self) -> usize {
        self.opened
    }

    /// Bytes counted so far.
    pub fn bytes_used(&self) -> usize {
        self.used
    }

    /// The most bytes the constants may take now: the hard limit or the allowance.
    pub fn limit(&self) -> usize {
        self.budget.min(self.allowance)
    }

    /// Counts `bytes` more against the budget; call it *before* allocating them.
    pub fn charge(&mut self, bytes: usize, what: &str) -> std::result::Result<(), String> {
        let total = limits::add_bytes(self.used, bytes, what)?;
        if total > self.limit() {
            return Err(format!(
                "{what}: {bytes} more bytes would bring the constants the import holds to {total} bytes, above the limit of {} bytes for this model ({} MiB plus {BYTES_PER_INPUT_BYTE} per byte of the model and its external data, at most {})",
                self.limit(),
                BASE_ALLOWANCE >> 20,
                self.budget
            ));
        }
        self.used = total;
        Ok(())
    }

    /// Reads `t`'s data. Its dims are checked against kiln's size limits and its bytes
    /// charged before any of it is copied or read from a file.
    pub fn read(&mut self, t: &TensorProto) -> Result<Const> {
        let name = if t.name.is_empty() { "<unnamed>" } else { &t.name };
        let dims = t
            .dims
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| err(name, format!("negative dimension {d} in {:?}", t.dims)))
            })
            .collect::<Result<Vec<usize>>>()?;
        let numel = limits::check_dims(&dims).map_err(|e| err(name, format!("dims {:?}: {e}", t.dims)))?;
        let width = match t.data_type {
            dt::FLOAT | dt::INT32 => 4,
            dt::INT64 | dt::DOUBLE => 8,
            dt::INT8 | dt::UINT8 | dt::BOOL => 1,
            dt::INT16 | dt::UINT16 | dt::FLOAT16 => 2,
            other => {
                return Err(err(
                    name,
                    format!("{} tensors are not supported", dt::name(other)),
                ));
            }
        };
        // what it will hold: f32 for floats, i64 for integers
        let held = if matches!(t.data_type, dt::FLOAT | dt::DOUBLE | dt::FLOAT16) {
            4
        } else {
            8
        };
        let held = limits::check_bytes(numel, held, "its data").map_err(|e| err(name, e))?;
        let declared = limits::check_bytes(numel, width, "its data").map_err(|e| err(name, e))?;
        let before = self.used;
        let in_model_file = t
            .kiln_raw_data_at
            .and_then(|i| self.model_file.as_ref()?.1.get(usize::try_from(i).ok()?).copied());
        let data = if t.data_location == 1 {
            // the file's size is checked (and raises the allowance) before the charge
            self.read_external(t, name, declared, width, held)
                .map(|data| Const { dims, data })
        } else if let Some((offset, len)) = in_model_file {
            // raw data that `load` left in the model file: checked as if it were here
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            check_len(t, name, numel, width, Some(len))?;
            self.charge(held, "its data").map_err(|e| err(name, e))?;
            let (file, _) = self
                .model_file
                .as_ref()
                .ok_or_else(|| err(name, "no model file"))?;
            read_range(file, offset, declared, t.data_type, width)
                .map(|data| Const { dims, data })
                .map_err(|e| err(name, format!("cannot read its data from the model file: {e}")))
        } else {
            let raw = (!t.raw_data.is_empty() || numel == 0).then_some(&t.raw_data[..]);
            check_len(t, name, numel, width, raw.map(<[u8]>::len))?;
            self.charge(held, "its data").map_err(|e| err(name, e))?;
            decode(t, name, dims, numel, width, raw)
        };
        if data.is_err() {
            // nothing is held
            self.used = before;
        }
        data
    }

    /// The values in bytes `offset .. offset + length` of the external data file of `t`,
    /// which must be exactly `declared` bytes (its dims times its element `width`), checked
    /// before reading: that range is read, nothing else.
    fn read_external(
        &mut self,
        t: &TensorProto,
        name: &str,
        declared: usize,
        width: usize,
        held: usize,
    ) -> Result<ConstData> {
        let get = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key == k)
                .map(|e| e.value.as_str())
        };
        let location = get("location").ok_or_else(|| err(name, "external data without a `location`"))?;
        let rel = Path::new(location);
        if location.is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(err(
                name,
                format!(
                    "external data location `{location}` must be a relative path below the model's folder"
                ),
            ));
        }
        let number = |k: &str| -> Result<Option<u64>> {
            get(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| err(name, format!("external data `{k}` is `{v}`, not a byte count")))
                })
                .transpose()
        };
        let offset = number("offset")?.unwrap_or(0);
        let length = number("length")?;
        if let Some(l) = length
            && l != declared as u64
        {
            return Err(err(
                name,
                format!(
                    "external data `{location}`: length {l} bytes, but dims {:?} of {} need {declared} bytes",
                    t.dims,
                    dt::name(t.data_type)
                ),
            ));
        }
        let (real, len) = self.open(name, location)?;
        let past = |what: String| {
            err(
                name,
                format!(
                    "{what} is past the end of `{location}` ({len} bytes); dims {:?} of {} need {declared} bytes",
                    t.dims,
                    dt::name(t.data_type)
                ),
            )
        };
        if offset > len {
            return Err(past(format!("offset {offset}")));
        }
        if length.is_none() && len - offset != declared as u64 {
            return Err(err(
                name,
                format!(
                    "external data `{location}` holds {} bytes from offset {offset} to its end (no `length`), but dims {:?} of {} need {declared} bytes",
                    len - offset,
                    t.dims,
                    dt::name(t.data_type)
                ),
            ));
        }
        if len - offset < declared as u64 {
            return Err(past(format!("offset {offset} + length {declared}")));
        }
        self.charge(held, "its data").map_err(|e| err(name, e))?;
        read_range(&self.files[&real].0, offset, declared, t.data_type, width)
            .map_err(|e| err(name, format!("cannot read external data `{location}`: {e}")))
    }

    /// The real path of `location` (a key of `files`) and its length, the file opened on
    /// first use: its real path (symlinks resolved) must be below the model's real folder,
    /// and it must be a regular file (not a FIFO, a device or a folder).
    fn open(&mut self, name: &str, location: &str) -> Result<(PathBuf, u64)> {
        let base = self.base.as_deref().ok_or_else(|| {
            err(
                name,
                format!("external data `{location}` needs the model's folder (load the model from a file)"),
            )
        })?;
        let real_base = match &self.real_base {
            Some(b) => b.clone(),
            None => {
                let base = if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base
                };
                let b = base.canonicalize().map_err(|e| {
                    err(
                        name,
                        format!("cannot resolve the model's folder `{}`: {e}", base.display()),
                    )
                })?;
                self.real_base = Some(b.clone());
                b
            }
        };
        let cannot =
            |e: &dyn std::fmt::Display| err(name, format!("cannot read external data `{location}`: {e}"));
        let real = real_base.join(location).canonicalize().map_err(|e| cannot(&e))?;
        if real == real_base || !real.starts_with(&real_base) {
            return Err(err(
                name,
                format!(
                    "external data `{location}` resolves to a path outside the model's folder (through a symlink)"
                ),
            ));
        }
        if !self.files.contains_key(&real) {
            // a FIFO or device would block or never end: only regular files, checked before
            // opening and again on the open handle (the path may have changed in between),
            // which is opened non-blocking so that even a FIFO swapped in cannot hang the open
            if !std::fs::metadata(&real).map_err(|e| cannot(&e))?.is_file() {
                return Err(err(
                    name,
                    format!("external data `{location}` is not a regular file"),
                ));
            }
            let file = open_nonblocking(&real).map_err(|e| cannot(&e))?;
            let meta = file.metadata().map_err(|e| cannot(&e))?;
            if !meta.is_file() {
                return Err(err(
                    name,
                    format!("external data `{location}` is not a regular file"),
                ));
            }
            self.opened += 1;
            self.allow_input(usize::try_from(meta.len()).unwrap_or(usize::MAX));
            self.files.insert(real.clone(), (file, meta.len()));
        }
        let len = self.files[&real].1;
        Ok((real, len))
    }
}

/// The `declared` bytes at `offset` of `file`: little-endian elements of `data_type`, `width`
/// bytes each. FLOAT and INT64 data is read straight into the values it becomes (one copy,
/// from the file); other types through their bytes.
fn read_range(
    file: &File,
    offset: u64,
    declared: usize,
    data_type: i32,
    width: usize,
) -> std::io::Result<ConstData> {
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut f = f.take(declared as u64);
    Ok(match data_type {
        dt::FLOAT => {
            let mut v = vec![0f32; declared / 4];
            f.read_exact(v.as_mut_bytes())?;
            f32_from_le(&mut v);
            ConstData::F32(v)
        }
        dt::INT64 => {
            let mut v = vec![0i64; declared / 8];
            f.read_exact(v.as_mut_bytes())?;
            i64_from_le(&mut v);
            ConstData::I64(v)
        }
        _ => {
            let mut bytes = vec![0u8; declared];
            f.read_exact(&mut bytes)?;
            decode_raw(data_type, width, &bytes)
        }
    })
}

/// Opens `path` for reading without blocking on a FIFO (its type is checked by the caller).
#[cfg(unix)]
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK (libc is not a dependency): no effect on a regular file, and opening a FIFO
    // returns at once instead of waiting for a writer
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const O_NONBLOCK: i32 = 0o4000;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const O_NONBLOCK: i32 = 0x0004;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
pub(crate) fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// That raw data of `raw` bytes (or, without it, `t`'s typed field) holds exactly `numel`
/// elements.
fn check_len(t: &TensorProto, name: &str, numel: usize, width: usize, raw: Option<usize>) -> Result<()> {
    let n = match raw {
        Some(bytes) if bytes % width != 0 => {
            return Err(err(
                name,
                format!("raw data of {bytes} bytes is not a whole number of {width}-byte elements"),
            ));
        }
        Some(bytes) => bytes / width,
        None => match t.data_type {
            dt::FLOAT => t.float_data.len(),
            dt::DOUBLE => t.double_data.len(),
            dt::INT64 => t.int64_data.len(),
            _ => t.int32_data.len(),
        },
    };
    if n != numel {
        return Err(err(
            name,
            format!("dims {:?} need {numel} elements, the data holds {n}", t.dims),
        ));
    }
    Ok(())
}

/// The elements of `t` from `raw` (little-endian bytes) or its typed fields, `numel` of them.
fn decode(
    t: &TensorProto,
    name: &str,
    dims: Vec<usize>,
    numel: usize,
    width: usize,
    raw: Option<&[u8]>,
) -> Result<Const> {
    let count = |n: usize| -> Result<()> {
        if n != numel {
            return Err(err(
                name,
                format!("dims {:?} need {numel} elements, the data holds {n}", t.dims),
            ));
        }
        Ok(())
    };
    let data = match raw {
        Some(bytes) => {
            if bytes.len() % width != 0 {
                return Err(err(
                    name,
                    format!(
                        "raw data of {} bytes is not a whole number of {width}-byte elements",
                        bytes.len()
                    ),
                ));
            }
            count(bytes.len() / width)?;
            decode_raw(t.data_type, width, bytes)
        }
        None => match t.data_type {
            dt::FLOAT => {
                count(t.float_data.len())?;
                ConstData::F32(t.float_data.clone())
            }
            dt::DOUBLE => {
                count(t.double_data.len())?;
                ConstData::F32(t.double_data.iter().map(|&x| x as f32).collect())
            }
            dt::INT64 => {
                count(t.int64_data.len())?;
                ConstData::I64(t.int64_data.clone())
            }
            dt::FLOAT16 => {
                count(t.int32_data.len())?;
                ConstData::F32(t.int32_data.iter().map(|&b| f16_to_f32(b as u16)).collect())
            }
            _ => {
                count(t.int32_data.len())?;
                ConstData::I64(t.int32_data.iter().map(|&x| i64::from(x)).collect())
            }
        },
    };
    Ok(Const { dims, data })
}

/// Little-endian elements of `data_type`, `width` bytes each (`bytes.len()` a multiple of
/// it), as the values kiln holds: FLOAT and INT64 in one bulk copy, the rest converted.
fn decode_raw(data_type: i32, width: usize, bytes: &[u8]) -> ConstData {
    let chunks = bytes.chunks_exact(width);
    match data_type {
        dt::FLOAT => {
            let mut v = vec![0f32; bytes.len() / 4];
            v.as_mut_bytes().copy_from_slice(bytes);
            f32_from_le(&mut v);
            ConstData::F32(v)
        }
        dt::INT64 => {
            let mut v = vec![0i64; bytes.len() / 8];
            v.as_mut_bytes().copy_from_slice(bytes);
            i64_from_le(&mut v);
            ConstData::I64(v)
        }
        dt::DOUBLE => ConstData::F32(
            chunks
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
        ),
        dt::FLOAT16 => ConstData::F32(
            chunks
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        dt::INT32 => ConstData::I64(
            chunks
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        dt::INT16 => ConstData::I64(
            chunks
                .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        dt::UINT16 => ConstData::I64(
            chunks
                .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        dt::INT8 => ConstData::I64(chunks.map(|c| i64::from(c[0] as i8)).collect()),
        _ => ConstData::I64(chunks.map(|c| i64::from(c[0])).collect()), // UINT8, BOOL
    }
}

/// Values copied from little-endian bytes, put in host order (nothing to do on a
/// little-endian host).
fn f32_from_le(v: &mut [f32]) {
    if cfg!(target_endian = "big") {
        for x in v {
            *x = f32::from_bits(u32::from_le(x.to_bits()));
        }
    }
}

/// As [`f32_from_le`].
fn i64_from_le(v: &mut [i64]) {
    if cfg!(target_endian = "big") {
        for x in v {
            *x = i64::from_le(*x);
        }
    }
}

/// IEEE half precision to `f32`.
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::StringStringEntryProto;

    fn floats(dims: &[i64], v: &[f32]) -> TensorProto {
        TensorProto {
            name: "w".into(),
            dims: dims.to_vec(),
            data_type: dt::FLOAT,
            float_data: v.to_vec(),
            ..TensorProto::default()
        }
    }

    #[test]
    fn raw_and_typed_fields_agree() {
        let typed = floats(&[2], &[1.5, -2.0]);
        let raw = TensorProto {
            float_data: vec![],
            raw_data: [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat(),
            ..typed.clone()
        };
        assert_eq!(read(&typed, None).unwrap(), read(&raw, None).unwrap());
        let i = TensorProto {
            data_type: dt::INT64,
            int64_data: vec![3, -1],
            ..floats(&[2], &[])
        };
        assert_eq!(read(&i, None).unwrap(), Const::i64(vec![2], vec![3, -1]));
        let d = TensorProto {
            data_type: dt::DOUBLE,
            double_data: vec![0.25],
            ..floats(&[1], &[])
        };
        assert_eq!(read(&d, None).unwrap(), Const::f32(vec![1], vec![0.25]));
    }

    #[test]
    fn half_precision() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn wrong_lengths_and_types_are_errors() {
        let e = read(&floats(&[3], &[1.0]), None).unwrap_err().to_string();
        assert!(e.contains("tensor `w`") && e.contains("need 3 elements"), "{e}");
        let e = read(&floats(&[-1], &[]), None).unwrap_err().to_string();
        assert!(e.contains("negative dimension"), "{e}");
        let e = read(&floats(&[1 << 20, 1 << 20], &[]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("above the limit"), "{e}");
        let s = TensorProto {
            data_type: 8,
            ..floats(&[1], &[])
        };
        let e = read(&s, None).unwrap_err().to_string();
        assert!(e.contains("STRING tensors are not supported"), "{e}");
        let odd = TensorProto {
            raw_data: vec![0; 5],
            ..floats(&[1], &[])
        };
        assert!(read(&odd, None).unwrap_err().to_string().contains("5 bytes"));
    }

    #[test]
    fn external_data_next_to_the_model() {
        let dir = std::env::temp_dir().join(format!("kiln-onnx-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bytes: Vec<u8> = [9.0f32, 1.0, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(dir.join("w.bin"), &bytes).unwrap();
        let entry = |k: &str, v: &str| StringStringEntryProto {
            key: k.into(),
            value: v.into(),
        };
        let t = TensorProto {
            data_location: 1,
            external_data: vec![
                entry("location", "w.bin"),
                entry("offset", "4"),
                entry("length", "8"),
            ],
            ..floats(&[2], &[])
        };
        assert_eq!(read(&t, Some(&dir)).unwrap(), Const::f32(vec![2], vec![1.0, 2.0]));
        let e = read(&t, None).unwrap_err().to_string();
        assert!(e.contains("needs the model's folder"), "{e}");
        let past = TensorProto {
            external_data: vec![
                entry("location", "w.bin"),
                entry("offset", "8"),
                entry("length", "8"),
            ],
            ..t.clone()
        };
        assert!(
            read(&past, Some(&dir))
                .unwrap_err()
                .to_string()
                .contains("past the end")
        );
        let escape = TensorProto {
            external_data: vec![entry("location", "../w.bin")],
            ..t.clone()
        };
        assert!(
            read(&escape, Some(&dir))
                .unwrap_err()
                .to_string()
                .contains("relative path below")
        );
        let missing = TensorProto {
            external_data: vec![entry("location", "nope.bin")],
            ..t
        };
        assert!(
            read(&missing, Some(&dir))
                .unwrap_err()
                .to_string()
                .contains("cannot read external data")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
