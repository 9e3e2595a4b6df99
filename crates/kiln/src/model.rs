//! Loading a model file: `.kiln` text IR today; `.onnx` arrives with the ONNX importer.

use kiln_ir::{Graph, text};
use std::path::Path;

/// Why a model file could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Io { path: String, source: std::io::Error },
    Parse(kiln_ir::ParseError),
    Unsupported { path: String, reason: String },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io { path, source } => write!(f, "cannot read `{path}`: {source}"),
            LoadError::Parse(e) => write!(f, "{e}"),
            LoadError::Unsupported { path, reason } => write!(f, "cannot load `{path}`: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Loads the graph in `path`, chosen by its extension.
pub fn load_graph(path: &Path) -> Result<Graph, LoadError> {
    let shown = path.display().to_string();
    match path.extension().and_then(|e| e.to_str()) {
        Some("kiln") => {
            let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
                path: shown.clone(),
                source,
            })?;
            let src = String::from_utf8(bytes).map_err(|e| LoadError::Unsupported {
                path: shown.clone(),
                reason: format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            })?;
            text::parse_named(&src, &shown).map_err(LoadError::Parse)
        }
        Some("onnx") => Err(LoadError::Unsupported {
            path: shown,
            reason: "ONNX import is not implemented yet; use a `.kiln` text IR file".into(),
        }),
        _ => Err(LoadError::Unsupported {
            path: shown,
            reason: "unknown model format (expected a `.kiln` text IR file)".into(),
        }),
    }
}
