//! Helpers shared by kiln-jit's test files (each includes this module with `mod common;`).

use kiln_ir::{Graph, Op, TensorType};

/// A one-op graph: `op` over a fresh input `x` of type `x` and fresh params `p0`, `p1`, … of
/// types `params`; `None` when shape inference rejects the combination (a strategy then skips
/// it).
pub fn one_op(op: Op, x: TensorType, params: &[TensorType]) -> Option<Graph> {
    let mut g = Graph::new();
    let mut ins = vec![g.input("x", x).ok()?];
    for (i, p) in params.iter().enumerate() {
        ins.push(g.param(format!("p{i}"), p.clone()).ok()?);
    }
    let y = g.add("y", op, &ins).ok()?;
    g.mark_output(y).ok()?;
    Some(g)
}
