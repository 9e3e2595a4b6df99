//! Errors of the ONNX importer. Every message names the file part it is about (node, value,
//! tensor), never a protobuf `Debug` dump.

use std::fmt;
use thiserror::Error;

/// One node kiln cannot import, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The node's name, or `#i` (its index in the graph) when it has none.
    pub node: String,
    pub op_type: String,
    /// The opset of the node's domain that the model imports.
    pub opset: i64,
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node `{}` ({}, opset {}): {}",
            self.node, self.op_type, self.opset, self.reason
        )
    }
}

#[derive(Debug, Error)]
pub enum OnnxError {
    #[error("cannot read `{path}`: {source}")]
    Io { path: String, source: std::io::Error },
    /// The bytes are not a protobuf `ModelProto` (truncated, corrupt, or another format).
    #[error("not a valid ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The model is readable but not a model kiln can build (no graph, no opset, …).
    #[error("invalid ONNX model: {0}")]
    Model(String),
    /// An initializer or constant whose data cannot be read.
    #[error("tensor `{name}`: {reason}")]
    Tensor { name: String, reason: String },
    /// A graph input kiln cannot feed (not a float tensor, a symbolic non-batch dim, …).
    #[error("graph input `{name}`: {reason}")]
    Input { name: String, reason: String },
    /// A node reads a value no earlier node, initializer or graph input produces.
    #[error(
        "node `{node}` ({op_type}): input `{value}` is not produced by an earlier node, an initializer or a graph input"
    )]
    MissingValue {
        node: String,
        op_type: String,
        value: String,
    },
    /// A node whose attributes or inputs break the ONNX operator's own rules.
    #[error("node `{node}` ({op_type}): {reason}")]
    Invalid {
        node: String,
        op_type: String,
        reason: String,
    },
    /// Every node of the model kiln does not support, all at once.
    #[error("{}", list_unsupported(.0))]
    Unsupported(Vec<Unsupported>),
}

fn list_unsupported(list: &[Unsupported]) -> String {
    let mut s = format!(
        "{} unsupported node{}:",
        list.len(),
        if list.len() == 1 { "" } else { "s" }
    );
    for u in list {
        s.push_str("\n  ");
        s.push_str(&u.to_string());
    }
    s
}

pub type Result<T, E = OnnxError> = std::result::Result<T, E>;
