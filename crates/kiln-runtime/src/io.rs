//! Tensors in and out of files: single tensors as NumPy `.npy`, weights as safetensors.

use kiln_ir::{Tensor, Value};
use npyz::WriterBuilder;
use std::collections::HashMap;
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

fn read(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(|error| IoError::Read {
        path: path.display().to_string(),
        error,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    std::fs::write(path, bytes).map_err(|error| IoError::Write {
        path: path.display().to_string(),
        error,
    })
}

/// Reads a `.npy` file: `float32` and `float64` become f32 tensors, `int32` and `int64`
/// (class ids, as NumPy writes them by default) become i32 tensors.
pub fn read_npy(path: &Path) -> Result<Value<f32>, IoError> {
    let bytes = read(path)?;
    let shown = path.display().to_string();
    let bad = |reason: String| IoError::Format {
        path: shown.clone(),
        format: ".npy",
        reason,
    };
    let npy = npyz::NpyFile::new(&bytes[..]).map_err(|e| bad(e.to_string()))?;
    if npy.order() != npyz::Order::C {
        return Err(bad(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        ));
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} is too large"))))
        .collect::<Result<_, _>>()?;
    let descr = match npy.dtype() {
        npyz::DType::Plain(ts) => ts.to_string(),
        other => return Err(bad(format!("structured dtype {} is not a tensor", other.descr()))),
    };
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("shape overflows".into()))?;
    let tensor_of = |data_len: usize| -> Result<(), IoError> {
        if data_len != numel {
            return Err(IoError::Format {
                path: shown.clone(),
                format: ".npy",
                reason: format!("shape {shape:?} needs {numel} elements, the file holds {data_len}"),
            });
        }
        Ok(())
    };
    let err = |e: std::io::Error| bad(e.to_string());
    let value = match descr.as_str() {
        "<f4" | "=f4" => {
            let v: Vec<f32> = npy.into_vec().map_err(err)?;
            tensor_of(v.len())?;
            Value::F(Tensor::new(shape, v).expect("length checked"))
        }
        "<f8" | "=f8" => {
            let v: Vec<f64> = npy.into_vec().map_err(err)?;
            tensor_of(v.len())?;
            Value::F(Tensor::new(shape, v.into_iter().map(|x| x as f32).collect()).expect("length checked"))
        }
        "<i4" | "=i4" => {
            let v: Vec<i32> = npy.into_vec().map_err(err)?;
            tensor_of(v.len())?;
            Value::I(Tensor::new(shape, v).expect("length checked"))
        }
        "<i8" | "=i8" => {
            let v: Vec<i64> = npy.into_vec().map_err(err)?;
            tensor_of(v.len())?;
            let v = v
                .into_iter()
                .map(|x| i32::try_from(x).map_err(|_| bad(format!("integer {x} does not fit in i32"))))
                .collect::<Result<Vec<i32>, _>>()?;
            Value::I(Tensor::new(shape, v).expect("length checked"))
        }
        other => {
            return Err(IoError::Dtype {
                path: shown,
                what: "the array".into(),
                dtype: other.to_string(),
                supported: "float32, float64, int32 and int64 (little-endian)",
            });
        }
    };
    Ok(value)
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

/// Reads every tensor of a safetensors file as f32 (F32 stored; F64 and F16/BF16 converted).
pub fn load_safetensors(path: &Path) -> Result<HashMap<String, Tensor<f32>>, IoError> {
    let bytes = read(path)?;
    let shown = path.display().to_string();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| IoError::Format {
        path: shown.clone(),
        format: "safetensors",
        reason: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            other => {
                return Err(IoError::Dtype {
                    path: shown,
                    what: format!("tensor `{name}`"),
                    dtype: format!("{other:?}"),
                    supported: "F32 and F64",
                });
            }
        };
        let t = Tensor::new(view.shape().to_vec(), values).ok_or_else(|| IoError::Format {
            path: shown.clone(),
            format: "safetensors",
            reason: format!("tensor `{name}` holds the wrong number of elements for its shape"),
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

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-io-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    #[test]
    fn npy_round_trips_f32_and_i32() {
        let p = tmp("a.npy");
        let v = Value::F(Tensor::new([2, 3], vec![1.0, -2.5, 3.0, 0.0, 1e-7, 6.0]).unwrap());
        write_npy(&p, &v).unwrap();
        assert_eq!(read_npy(&p).unwrap(), v);
        let i = Value::I(Tensor::new([4], vec![0, 3, -1, 7]).unwrap());
        write_npy(&p, &i).unwrap();
        assert_eq!(read_npy(&p).unwrap(), i);
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
        let p = tmp("i8.npy");
        std::fs::write(&p, f).unwrap();
        assert_eq!(
            read_npy(&p).unwrap(),
            Value::I(Tensor::new([3], vec![0, 1, 2]).unwrap())
        );
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file() {
        let p = tmp("junk.npy");
        std::fs::write(&p, b"not a numpy file").unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(e.contains("junk.npy") && e.contains(".npy"), "{e}");
        let e = read_npy(Path::new("/nonexistent.npy")).unwrap_err().to_string();
        assert!(e.contains("cannot read `/nonexistent.npy`"), "{e}");
        let p = tmp("junk.safetensors");
        std::fs::write(&p, b"\x01\x02").unwrap();
        let e = load_safetensors(&p).unwrap_err().to_string();
        assert!(e.contains("junk.safetensors") && e.contains("safetensors"), "{e}");
    }

    #[test]
    fn safetensors_round_trip() {
        let p = tmp("w.safetensors");
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
        save_safetensors(&p, &w).unwrap();
        assert_eq!(load_safetensors(&p).unwrap(), w);
    }
}
