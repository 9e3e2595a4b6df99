//! Reading a `TensorProto`'s data: `raw_data` (little-endian), the typed fields
//! (`float_data`, `int32_data`, `int64_data`, `double_data`), or an external file next to the
//! model. Floats become `f32`, integers and booleans `i64` (shapes, pads, axes).

use crate::error::{OnnxError, Result};
use crate::proto::{TensorProto, data_type as dt};
use std::path::{Component, Path};

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

/// Largest tensor kiln reads (elements): 2³¹, far above any CNN weight, so a corrupt dims
/// field is an error rather than a huge allocation.
const MAX_ELEMENTS: usize = 1 << 31;

/// Reads `t`; `base_dir` is where external data files are looked up (`None`: not allowed).
pub fn read(t: &TensorProto, base_dir: Option<&Path>) -> Result<Const> {
    let name = if t.name.is_empty() { "<unnamed>" } else { &t.name };
    let mut dims = Vec::with_capacity(t.dims.len());
    let mut numel: usize = 1;
    for &d in &t.dims {
        let d =
            usize::try_from(d).map_err(|_| err(name, format!("negative dimension {d} in {:?}", t.dims)))?;
        numel = numel
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| err(name, format!("dims {:?} hold more than 2^31 elements", t.dims)))?;
        dims.push(d);
    }
    let external;
    let raw: Option<&[u8]> = if t.data_location == 1 {
        external = read_external(t, name, base_dir)?;
        Some(&external)
    } else if !t.raw_data.is_empty() || numel == 0 {
        Some(&t.raw_data)
    } else {
        None
    };
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
            let chunks = bytes.chunks_exact(width);
            match t.data_type {
                dt::FLOAT => ConstData::F32(
                    chunks
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
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
                dt::INT64 => ConstData::I64(
                    chunks
                        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
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

fn read_external(t: &TensorProto, name: &str, base_dir: Option<&Path>) -> Result<Vec<u8>> {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.as_str())
    };
    let location = get("location").ok_or_else(|| err(name, "external data without a `location`"))?;
    let rel = Path::new(location);
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(err(
            name,
            format!("external data location `{location}` must be a relative path below the model's folder"),
        ));
    }
    let base = base_dir.ok_or_else(|| {
        err(
            name,
            format!("external data `{location}` needs the model's folder (load the model from a file)"),
        )
    })?;
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
    let path = base.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| {
        err(
            name,
            format!("cannot read external data `{}`: {e}", path.display()),
        )
    })?;
    let start = usize::try_from(offset).ok().filter(|&o| o <= bytes.len());
    let start = start.ok_or_else(|| {
        err(
            name,
            format!(
                "offset {offset} is past the end of `{location}` ({} bytes)",
                bytes.len()
            ),
        )
    })?;
    let end = match length {
        None => bytes.len(),
        Some(l) => usize::try_from(l)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| {
                err(
                    name,
                    format!(
                        "offset {offset} + length {l} is past the end of `{location}` ({} bytes)",
                        bytes.len()
                    ),
                )
            })?,
    };
    Ok(bytes[start..end].to_vec())
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
        assert!(e.contains("2^31"), "{e}");
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
