//! Errors of the IR layer. Every message names where the problem is.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum IrError {
    /// Shape inference rejected a node.
    #[error("node `{node}` ({op}): {message}; input types: {inputs}")]
    Shape {
        node: String,
        op: String,
        inputs: String,
        message: String,
    },
    #[error("node name `{0}` is used twice")]
    DuplicateName(String),
    #[error("node `{node}`: unknown node `{name}`")]
    UnknownNode { node: String, name: String },
    #[error("`{0}` is not a valid node name (letters, digits, `_` and `.`, not starting with a digit)")]
    BadName(String),
    /// A size above the limits of `kiln_ir::limits`, or one the machine cannot allocate.
    #[error("{0}")]
    TooLarge(String),
    #[error("the graph has no outputs")]
    NoOutputs,
    #[error("{0}")]
    Parse(#[from] ParseError),
}

/// A syntax or semantic error in text IR, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

pub type Result<T, E = IrError> = std::result::Result<T, E>;
