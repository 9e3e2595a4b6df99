//! Removes data movement the graph does not need:
//!
//! - a transpose of a transpose is one transpose of the first one's input, by the composed
//!   permutation (output axis `k` reads axis `p1[p2[k]]`), and nothing at all when the two
//!   cancel (`A` then `A⁻¹`: readers are pointed at the input);
//! - a transpose that moves only axes of size 1 (the other axes keep their order) does not move
//!   an element: it becomes a reshape, which is a view (no kernel, no copy). ConvNeXt's
//!   LayerNorm on its `[1, 768, 1, 1]` head is written as two such transposes.
//!
//! A graph output keeps its name (a cancelling pair there becomes a reshape of the input, a
//! view); the bypassed inner transpose is left for `dead_code` when nothing else reads it.

use crate::Pass;
use kiln_ir::{Graph, IrError, Op};

pub struct Layout;

/// Whether `perm` over `dims` keeps every axis longer than 1 in its order.
fn moves_only_unit_axes(perm: &[usize], dims: &[usize]) -> bool {
    let kept: Vec<usize> = perm
        .iter()
        .copied()
        .filter(|&p| dims.get(p) != Some(&1))
        .collect();
    kept.windows(2).all(|w| w[0] < w[1])
}

impl Pass for Layout {
    fn name(&self) -> &'static str {
        "layout"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            if !graph.petgraph().contains_node(id) {
                continue;
            }
            let Op::Transpose { perm: p2 } = graph.node(id).op.clone() else {
                continue;
            };
            let [u] = graph.inputs(id)[..] else { continue };
            if let Op::Transpose { perm: p1 } = &graph.node(u).op {
                let [x] = graph.inputs(u)[..] else { continue };
                let composed: Vec<usize> = p2.iter().map(|&k| p1[k]).collect();
                let cancels = composed.iter().enumerate().all(|(i, &p)| i == p);
                if cancels && !graph.outputs().contains(&id) {
                    graph.replace_uses(id, x)?;
                } else {
                    // an output keeps its name: a view of the input when the pair cancels
                    let op = if cancels {
                        let shape = graph.node(x).ty.dims().iter().map(|&d| d as i64).collect();
                        Op::Reshape { shape }
                    } else {
                        Op::Transpose { perm: composed }
                    };
                    let name = graph.fresh_name(&graph.node(id).name);
                    let t = graph.add(name, op, &[x])?;
                    graph.substitute(id, t)?;
                }
                changed = true;
                continue;
            }
            let dims = graph.node(u).ty.dims().to_vec();
            if moves_only_unit_axes(&p2, &dims) {
                let shape = graph.node(id).ty.dims().iter().map(|&d| d as i64).collect();
                graph.set_op(id, Op::Reshape { shape })?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::moves_only_unit_axes;
    use crate::testing::check_pass;

    #[test]
    fn unit_axes() {
        assert!(moves_only_unit_axes(&[0, 2, 3, 1], &[1, 768, 1, 1]));
        assert!(moves_only_unit_axes(&[1, 0, 2], &[1, 5, 6]));
        assert!(!moves_only_unit_axes(&[0, 2, 1], &[1, 5, 6]));
        assert!(!moves_only_unit_axes(&[1, 0], &[2, 2]));
    }

    /// NCHW → NHWC → NCHW cancels; its readers read `%x`. Two transposes in a row become one.
    #[test]
    fn inverse_pairs_vanish_and_chains_compose() {
        check_pass(
            &super::Layout,
            "graph g {
  input %x: f32[2, 3, 4, 5]
  %a = transpose(%x) {perm=[0, 2, 3, 1]}
  %b = transpose(%a) {perm=[0, 3, 1, 2]}
  %y = relu(%b)
  %c = transpose(%a) {perm=[1, 0, 2, 3]}
  output %y
  output %c
}",
            "graph g {
  input %x: f32[2, 3, 4, 5]
  %a = transpose(%x) {perm=[0, 2, 3, 1]}: f32[2, 4, 5, 3]
  %b = transpose(%a) {perm=[0, 3, 1, 2]}: f32[2, 3, 4, 5]
  %y = relu(%x): f32[2, 3, 4, 5]
  %c = transpose(%x) {perm=[2, 0, 3, 1]}: f32[4, 2, 5, 3]
  output %y
  output %c
}
",
        );
    }

    /// A transpose of `[1, 768, 1, 1]` moves nothing: a reshape. One that moves a longer axis
    /// past another stays.
    #[test]
    fn unit_axis_moves_become_reshapes() {
        check_pass(
            &super::Layout,
            "graph g {
  input %x: f32[1, 768, 1, 1]
  input %z: f32[1, 2, 3]
  %a = transpose(%x) {perm=[0, 2, 3, 1]}
  %y = relu(%a)
  %b = transpose(%z) {perm=[0, 2, 1]}
  output %y
  output %b
}",
            "graph g {
  input %x: f32[1, 768, 1, 1]
  input %z: f32[1, 2, 3]
  %a = reshape(%x) {shape=[1, 1, 1, 768]}: f32[1, 1, 1, 768]
  %y = relu(%a): f32[1, 1, 1, 768]
  %b = transpose(%z) {perm=[0, 2, 1]}: f32[1, 3, 2]
  output %y
  output %b
}
",
        );
    }

    /// A cancelling pair that is itself the output becomes a view of the input under the
    /// output's name.
    #[test]
    fn a_cancelling_output_becomes_a_view() {
        check_pass(
            &super::Layout,
            "graph g {
  input %x: f32[2, 3]
  %a = transpose(%x) {perm=[1, 0]}
  %b = transpose(%a) {perm=[1, 0]}
  output %b
}",
            "graph g {
  input %x: f32[2, 3]
  %a = transpose(%x) {perm=[1, 0]}: f32[3, 2]
  %b = reshape(%x) {shape=[2, 3]}: f32[2, 3]
  output %b
}
",
        );
    }
}
