//! Removes every node no output depends on, except graph inputs (the caller feeds them by
//! name, so they stay part of the model's interface even when unread).

use crate::Pass;
use kiln_ir::{Graph, IrError, Op};

pub struct DeadCode;

impl Pass for DeadCode {
    fn name(&self) -> &'static str {
        "dead_code"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let live = graph.live_nodes();
        let mut changed = false;
        // readers first, so each node is unused by the time it is reached
        for id in graph.topo_order().into_iter().rev() {
            if !live.contains(&id) && !matches!(graph.node(id).op, Op::Input(_)) {
                changed |= graph.remove_if_unused(id);
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn unread_nodes_and_weights_go_inputs_stay() {
        check_pass(
            &super::DeadCode,
            "graph g {
  input %x: f32[1, 4]
  input %unused: f32[3]
  param %w: f32[2, 4]
  param %w_dead: f32[5, 4]
  %y = dense(%x, %w)
  %dead = dense(%x, %w_dead)
  %dead2 = relu(%dead)
  output %y
}",
            "graph g {
  input %x: f32[1, 4]
  input %unused: f32[3]
  param %w: f32[2, 4]
  %y = dense(%x, %w): f32[1, 2]
  output %y
}
",
        );
    }
}
