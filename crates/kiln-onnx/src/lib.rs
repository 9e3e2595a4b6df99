//! kiln's ONNX importer: reads an `.onnx` file (protobuf, decoded with prost; no `protoc`)
//! and maps the CNN operator subset onto kiln's graph IR, with the file's initializers and
//! constants as the weights.
//!
//! ```no_run
//! let model = kiln_onnx::load("resnet18.onnx")?;
//! println!("{} nodes, {} weights", model.graph.len(), model.weights.len());
//! # Ok::<(), kiln_onnx::OnnxError>(())
//! ```
//!
//! What is supported, operator by operator, is in `docs/onnx.md`. Anything else is an
//! [`OnnxError::Unsupported`] that lists every unsupported node of the model at once.

#![forbid(unsafe_code)]

pub mod error;
pub mod export;
mod import;
mod ops;
pub mod proto;
mod skim;
pub mod tensor;

pub use error::{OnnxError, Result, Unsupported};
pub use export::{ExportError, export};
pub use import::{MAX_FOLDED_ELEMENTS, MAX_OPSET, OnnxModel, sanitize};
/// The protobuf crate of [`proto`]'s messages, so that a user can encode and decode them
/// (`kiln_onnx::prost::Message`) without depending on the same version of it.
pub use prost;

use std::collections::HashMap;
use std::path::Path;

/// Reads and imports the model at `path`; external tensor data is looked up next to it.
/// The path must be a regular file (not a FIFO or a device, which could block or never end)
/// of less than 2 GiB (protobuf's limit; larger models keep their weights in external data).
pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel> {
    let path = path.as_ref();
    let io = |source: std::io::Error| OnnxError::Io {
        path: path.display().to_string(),
        source,
    };
    let bad = |what: String| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let file = tensor::open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let len = meta.len();
    if len >= 1 << 31 {
        return Err(bad(format!(
            "{len} bytes; an ONNX file is a protobuf message of less than 2 GiB (weights beyond that go in external data files)"
        )));
    }
    let mut reader = tensor::Reader::new(path.parent());
    reader.allow_input(len as usize);
    // the file without its large tensor data, which the reader then takes from the file
    // straight into the weights; a file the skim does not expect is read whole
    if let Some(s) = skim::skim(&file, len)
        && let Ok(model) = <proto::ModelProto as prost::Message>::decode(&s.skeleton[..])
    {
        return import::import_model(&model, reader.with_model_file(file, s.ranges), &HashMap::new());
    }
    std::io::Seek::rewind(&mut &file).map_err(io)?;
    let mut bytes = Vec::with_capacity(len as usize);
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, len), &mut bytes).map_err(io)?;
    let model = <proto::ModelProto as prost::Message>::decode(&bytes[..])?;
    import::import_model(&model, reader, &HashMap::new())
}

/// Imports a model from its bytes; `base_dir` is the folder of external tensor data (`None`:
/// a model with external data is an error).
pub fn load_bytes(bytes: &[u8], base_dir: Option<&Path>) -> Result<OnnxModel> {
    import::import(bytes, base_dir, &HashMap::new())
}

/// As [`load_bytes`], with the graph inputs named in `bound` fixed to constant values. kiln's
/// shapes are static, so an input that an op reads as a shape, pads or axes (a `Reshape` whose
/// shape is a graph input) can only be imported with its value known: bound here.
pub fn load_bytes_bound(
    bytes: &[u8],
    base_dir: Option<&Path>,
    bound: &HashMap<String, tensor::Const>,
) -> Result<OnnxModel> {
    import::import(bytes, base_dir, bound)
}

/// Reads a serialized `TensorProto` as a constant of its own element type (floats as `f32`,
/// integers and booleans as `i64`).
pub fn read_const_bytes(bytes: &[u8]) -> Result<tensor::Const> {
    let t = <proto::TensorProto as prost::Message>::decode(bytes)?;
    tensor::read(&t, None)
}

/// Reads a serialized `TensorProto` (the `input_0.pb` / `output_0.pb` files of ONNX's test
/// data sets) as an `f32` tensor; integer tensors are converted.
pub fn read_tensor_bytes(bytes: &[u8]) -> Result<kiln_ir::Tensor<f32>> {
    let t = <proto::TensorProto as prost::Message>::decode(bytes)?;
    let c = tensor::read(&t, None)?;
    let data = match c.data {
        tensor::ConstData::F32(v) => v,
        tensor::ConstData::I64(v) => v.into_iter().map(|x| x as f32).collect(),
    };
    kiln_ir::Tensor::new(c.dims, data).map_err(|_| OnnxError::Tensor {
        name: t.name,
        reason: "data length does not match its dims".into(),
    })
}
