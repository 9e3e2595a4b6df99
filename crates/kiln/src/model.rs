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

/// A loaded model: its graph, the weights the file holds (`None` for `.kiln`), and the
/// names its inputs and outputs have in the file.
///
/// An `.onnx` file names its values freely (`0`, `input.1`, `gpu_0/data_0`); the graph IR's
/// node names are sanitized (`_0`, `gpu_0_data_0`), and an output produced by an `Identity`
/// or `Dropout` is the node of the value it aliases. What a user types and reads is the
/// file's names ([`LoadedModel::input_names`], [`LoadedModel::output_names`]);
/// [`LoadedModel::input_node`] and [`LoadedModel::output_node`] map them to the IR's.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub graph: Graph,
    pub weights: Option<HashMap<String, Tensor<f32>>>,
    /// `(file name, IR node name)` of each graph input, in the file's order (for `.kiln` both
    /// are the node's name).
    pub inputs: Vec<(String, String)>,
    /// `(file name, IR node name)` of each graph output, in the file's order. Two file
    /// outputs may share one IR node (an `Identity` between them).
    pub outputs: Vec<(String, String)>,
}

impl LoadedModel {
    /// A model of `graph` whose names are its nodes' names (a `.kiln` file, a built graph).
    pub fn from_graph(graph: Graph, weights: Option<HashMap<String, Tensor<f32>>>) -> Self {
        let names = |ids: &[kiln_ir::NodeId]| {
            ids.iter()
                .map(|&id| (graph.node(id).name.clone(), graph.node(id).name.clone()))
                .collect::<Vec<_>>()
        };
        let inputs = names(&graph.graph_inputs());
        let outputs = names(graph.outputs());
        LoadedModel {
            graph,
            weights,
            inputs,
            outputs,
        }
    }

    /// The inputs' names as the file gives them, in the file's order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The outputs' names as the file gives them, in the file's order.
    pub fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(f, _)| f.clone()).collect()
    }

    /// The IR node of the input the file calls `name`.
    pub fn input_node(&self, name: &str) -> Option<&str> {
        lookup(&self.inputs, name)
    }

    /// The IR node of the output the file calls `name`.
    pub fn output_node(&self, name: &str) -> Option<&str> {
        lookup(&self.outputs, name)
    }

    /// The file's name of the input node `node` (the IR name itself if it is not an input).
    pub fn input_name_of<'a>(&'a self, node: &'a str) -> &'a str {
        self.inputs
            .iter()
            .find(|(_, n)| n == node)
            .map_or(node, |(f, _)| f.as_str())
    }

    /// The model with batch size `n` (dim 0 of every input; see [`Graph::with_batch`]); the
    /// names are kept.
    pub fn with_batch(self, n: usize) -> Result<Self, kiln_ir::IrError> {
        Ok(LoadedModel {
            graph: self.graph.with_batch(n)?,
            ..self
        })
    }

    /// Each file output, in the file's order, with its value taken from `results` (what an
    /// engine returns: `(IR node name, value)`); an output sharing a node with another gets a
    /// copy. `None` when `results` lacks an output's node.
    pub fn name_outputs<V: Clone>(&self, results: &[(String, V)]) -> Option<Vec<(String, V)>> {
        self.outputs
            .iter()
            .map(|(file, node)| {
                results
                    .iter()
                    .find(|(n, _)| n == node)
                    .map(|(_, v)| (file.clone(), v.clone()))
            })
            .collect()
    }

    /// `(file name, IR name)` pairs that differ: what a listing of the IR's nodes needs to
    /// say so that its names can be found in the file. Empty for a `.kiln` model.
    pub fn renamed(&self) -> Vec<(&'static str, &str, &str)> {
        let inputs = self.inputs.iter().map(|p| ("input", p));
        let outputs = self.outputs.iter().map(|p| ("output", p));
        inputs
            .chain(outputs)
            .filter(|(_, (f, n))| f != n)
            .map(|(what, (f, n))| (what, f.as_str(), n.as_str()))
            .collect()
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(f, _)| f == name).map(|(_, n)| n.as_str())
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
            Ok(LoadedModel::from_graph(graph, None))
        }
        Some("onnx") => {
            let m = kiln_onnx::load(path).map_err(|source| LoadError::Onnx { path: shown, source })?;
            Ok(LoadedModel {
                graph: m.graph,
                weights: Some(m.weights),
                inputs: m.inputs,
                outputs: m.outputs,
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
