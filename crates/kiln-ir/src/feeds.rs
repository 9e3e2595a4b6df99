//! The one check of a run's inputs against a graph, shared by the interpreter and the JIT:
//! every graph input fed once, by name, with a value of its type, and nothing else fed.

use crate::{Graph, NodeId, Op, TensorType, Value};
use thiserror::Error;

/// Why a run's inputs do not fit the graph. Every message names the input at fault.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FeedError {
    /// A graph input was not fed.
    #[error("missing input `{name}` (expected {expected}); inputs given: {given}")]
    Missing {
        name: String,
        expected: Box<TensorType>,
        /// The names that were fed, for spotting a typo.
        given: String,
    },
    /// A name was fed that is not a graph input.
    #[error("unknown input `{name}`: the graph's inputs are {known}")]
    Unknown { name: String, known: String },
    /// A graph input was fed a tensor of another dtype or shape.
    #[error("input `{name}`: expected {expected}, got {given}")]
    Type {
        name: String,
        expected: Box<TensorType>,
        given: Box<TensorType>,
    },
    /// A graph input was fed twice.
    #[error("input `{name}` is given more than once")]
    Twice { name: String },
}

/// `names` sorted and quoted, `none` when empty.
fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut names: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    names.sort();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Checks `inputs` (`(name, value)` pairs) against `graph`'s inputs and returns each input node
/// with its value, in `graph.graph_inputs()` order. Errors, checked in this order: a graph
/// input not given or given a value of another dtype or shape (in input order), a name that is
/// not a graph input (the first in sorted order), a name given twice.
pub fn check_inputs<'a, T: Clone>(
    graph: &Graph,
    inputs: &[(&str, &'a Value<T>)],
) -> Result<Vec<(NodeId, &'a Value<T>)>, FeedError> {
    let ids = graph.graph_inputs();
    let mut fed: Vec<&str> = inputs.iter().map(|(n, _)| *n).collect();
    fed.sort_unstable();
    let mut out = Vec::with_capacity(ids.len());
    for &id in &ids {
        let node = graph.node(id);
        let Some(&(_, v)) = inputs.iter().find(|(n, _)| *n == node.name) else {
            return Err(FeedError::Missing {
                name: node.name.clone(),
                expected: Box::new(node.ty.clone()),
                given: listed(fed.iter().copied()),
            });
        };
        if v.ty() != node.ty {
            return Err(FeedError::Type {
                name: node.name.clone(),
                expected: Box::new(node.ty.clone()),
                given: Box::new(v.ty()),
            });
        }
        out.push((id, v));
    }
    for name in &fed {
        let is_input = graph
            .find(name)
            .is_some_and(|id| matches!(graph.node(id).op, Op::Input(_)));
        if !is_input {
            return Err(FeedError::Unknown {
                name: name.to_string(),
                known: listed(ids.iter().map(|&i| graph.node(i).name.as_str())),
            });
        }
    }
    if let Some(w) = fed.windows(2).find(|w| w[0] == w[1]) {
        return Err(FeedError::Twice {
            name: w[0].to_string(),
        });
    }
    Ok(out)
}
