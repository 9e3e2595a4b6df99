//! Removes ops that compute nothing at inference: dropout (the identity outside training),
//! and reshapes, flattens and transposes whose output is their input unchanged. Readers are
//! pointed at the input; a removed node that is a graph output stays (outputs keep their
//! names), and `dead_code` deletes the rest.

use crate::Pass;
use kiln_ir::{Graph, IrError, Op};

pub struct Noop;

/// Whether `op` returns its input as it is.
fn is_noop(op: &Op, input: &kiln_ir::TensorType, output: &kiln_ir::TensorType) -> bool {
    match op {
        Op::Dropout { .. } => true,
        Op::Reshape { .. } | Op::Flatten { .. } => input == output,
        Op::Transpose { perm } => perm.iter().enumerate().all(|(i, &p)| i == p),
        _ => false,
    }
}

impl Pass for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            let ins = graph.inputs(id);
            let node = graph.node(id);
            let [x] = ins[..] else { continue };
            if is_noop(&node.op, &graph.node(x).ty, &node.ty) && !graph.users(id).is_empty() {
                graph.replace_uses(id, x)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    /// Each no-op's readers move to its input, so a chain collapses onto `%x` in one pass; the
    /// bypassed nodes are left for `dead_code`.
    #[test]
    fn dropout_and_identity_layouts_disappear() {
        check_pass(
            &super::Noop,
            "graph g {
  input %x: f32[2, 3]
  %d = dropout(%x) {ratio=0.5}
  %r = reshape(%d) {shape=[2, 3]}
  %t = transpose(%r) {perm=[0, 1]}
  %f = flatten(%t)
  %y = relu(%f)
  output %y
}",
            "graph g {
  input %x: f32[2, 3]
  %d = dropout(%x) {ratio=0.5}: f32[2, 3]
  %r = reshape(%x) {shape=[2, 3]}: f32[2, 3]
  %t = transpose(%x) {perm=[0, 1]}: f32[2, 3]
  %f = flatten(%x): f32[2, 3]
  %y = relu(%x): f32[2, 3]
  output %y
}
",
        );
    }

    #[test]
    fn real_reshapes_and_outputs_stay() {
        check_pass(
            &super::Noop,
            "graph g {
  input %x: f32[2, 3]
  %r = reshape(%x) {shape=[3, 2]}
  %t = transpose(%r) {perm=[1, 0]}
  %o = dropout(%t) {ratio=0.1}
  output %o
}",
            "graph g {
  input %x: f32[2, 3]
  %r = reshape(%x) {shape=[3, 2]}: f32[3, 2]
  %t = transpose(%r) {perm=[1, 0]}: f32[2, 3]
  %o = dropout(%t) {ratio=0.1}: f32[2, 3]
  output %o
}
",
        );
    }
}
