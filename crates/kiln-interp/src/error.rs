//! Errors of the interpreter. Every message names the input, weight or node at fault.

use kiln_ir::TensorType;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum InterpError {
    /// A graph input was not fed.
    #[error("missing input `{name}` (expected {expected}); inputs given: {given}")]
    MissingInput {
        name: String,
        expected: Box<TensorType>,
        /// The names that were fed, for spotting a typo.
        given: String,
    },
    /// A name was fed that is not a graph input.
    #[error("unknown input `{name}`: the graph's inputs are {known}")]
    UnknownInput { name: String, known: String },
    /// A graph input was fed a tensor of another dtype or shape.
    #[error("input `{name}`: expected {expected}, got {given}")]
    InputType {
        name: String,
        expected: Box<TensorType>,
        given: Box<TensorType>,
    },
    /// A weight (param or buffer) was not given.
    #[error("missing weight `{name}` (expected {expected})")]
    MissingWeight { name: String, expected: Box<TensorType> },
    /// A weight of another dtype or shape than its node declares.
    #[error("weight `{name}`: expected {expected}, got {given}")]
    WeightType {
        name: String,
        expected: Box<TensorType>,
        given: Box<TensorType>,
    },
    /// The graph's values do not fit in the size limits or in the memory the system gives.
    #[error("{0}")]
    TooLarge(String),
    /// A node could not be computed (e.g. a class id out of range in a loss).
    #[error("node `{node}` ({op}): {message}")]
    Op {
        node: String,
        op: String,
        message: String,
    },
}
