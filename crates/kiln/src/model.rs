//! Loading a model file, chosen by its extension: `.kiln` text IR (the graph only; weights come
//! from `--weights` or a seeded initialization) or `.onnx` (the graph and its weights).

use kiln_ir::{Graph, Tensor, text};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// The largest `.kiln` file read: 256 MiB. A text graph holds no weights (the zoo's largest,
/// VGG-16, is a few KiB), so anything near this is not a model; the cap keeps a huge file or
/// a device (`/dev/zero` behind a `.kiln` name) from being read into memory without end.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Why a model file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Io {
        path: String,
        source: std::io::Error,
    },
    Parse(kiln_ir::ParseError),
    /// An `.onnx` file kiln cannot import; [`kiln_onnx::OnnxError::Unsupported`] lists every
    /// unsupported node.
    Onnx {
        path: String,
        source: kiln_onnx::OnnxError,
    },
    Unsupported {
        path: String,
        reason: String,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "cannot read `{path}`: {source}"),
            LoadError::Parse(e) => write!(f, "{e}"),
            LoadError::Onnx { path, source } => write!(f, "`{path}`: {source}"),
            LoadError::Unsupported { path, reason } => write!(f, "cannot load `{path}`: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// A loaded model: its graph, and the weights the file holds (`None` for `.kiln`).
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub graph: Graph,
    pub weights: Option<HashMap<String, Tensor<f32>>>,
}

/// Loads the model in `path` (graph and, for `.onnx`, weights).
pub fn load(path: &Path) -> Result<LoadedModel, LoadError> {
    let shown = path.display().to_string();
    match path.extension().and_then(|e| e.to_str()) {
        Some("kiln") => {
            let bytes = read_text(path, &shown)?;
            let src = String::from_utf8(bytes).map_err(|e| LoadError::Unsupported {
                path: shown.clone(),
                reason: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            })?;
            let graph = text::parse_named(&src, &shown).map_err(LoadError::Parse)?;
            Ok(LoadedModel { graph, weights: None })
        }
        Some("onnx") => {
            let m = kiln_onnx::load(path).map_err(|source| LoadError::Onnx { path: shown, source })?;
            Ok(LoadedModel {
                graph: m.graph,
                weights: Some(m.weights),
            })
        }
        _ => Err(LoadError::Unsupported {
            path: shown,
            reason: "unknown model format (expected a `.kiln` text IR file or an `.onnx` file)".into(),
        }),
    }
}

/// The bytes of the text file `path`: a regular file of at most [`MAX_TEXT_BYTES`].
fn read_text(path: &Path, shown: &str) -> Result<Vec<u8>, LoadError> {
    let io = |source| LoadError::Io {
        path: shown.to_string(),
        source,
    };
    let too_big = |len: u64| LoadError::Unsupported {
        path: shown.to_string(),
        reason: format!(
            "at least {len} bytes: too big for a text model (the limit is {MAX_TEXT_BYTES} bytes)"
        ),
    };
    // checked before opening: opening a FIFO would block
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(LoadError::Unsupported {
            path: shown.to_string(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_TEXT_BYTES {
        return Err(too_big(meta.len()));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    // the file may have grown since: read one byte past the limit at most
    let mut bytes = Vec::new();
    file.take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Loads the graph in `path` (see [`load`]; an `.onnx` file's weights are dropped).
pub fn load_graph(path: &Path) -> Result<Graph, LoadError> {
    load(path).map(|m| m.graph)
}
