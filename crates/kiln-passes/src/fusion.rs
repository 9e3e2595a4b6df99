//! Conv + activation fusion: an activation whose only input is a convolution read by nothing
//! else becomes that convolution's epilogue (`Conv2d::activation`), applied by the JIT while
//! the output is still in registers. Bias is already part of the convolution. The activation
//! node is bypassed (readers move to the convolution) and left for `dead_code`; an activation
//! that is a graph output is kept, so outputs keep their names.

use crate::Pass;
use kiln_ir::{Graph, IrError, Op};

pub struct Fusion;

impl Pass for Fusion {
    fn name(&self) -> &'static str {
        "fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            let Op::Activation(act) = graph.node(id).op else {
                continue;
            };
            let [conv] = graph.inputs(id)[..] else { continue };
            let Op::Conv2d(c) = &graph.node(conv).op else {
                continue;
            };
            let fusable = c.activation.is_none()
                && graph.users(conv) == [id]
                && !graph.outputs().contains(&conv)
                && !graph.outputs().contains(&id);
            if fusable {
                let fused = Op::Conv2d(kiln_ir::Conv2d {
                    activation: Some(act),
                    ..c.clone()
                });
                graph.set_op(conv, fused)?;
                graph.replace_uses(id, conv)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn conv_then_relu_becomes_one_conv() {
        check_pass(
            &super::Fusion,
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %b: f32[2]
  %c = conv2d(%x, %w, %b) {padding=[1, 1, 1, 1]}
  %r = relu(%c)
  %y = sigmoid(%r)
  output %y
}",
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %b: f32[2]
  %c = conv2d(%x, %w, %b) {padding=[1, 1, 1, 1], activation=relu}: f32[1, 2, 4, 4]
  %r = relu(%c): f32[1, 2, 4, 4]
  %y = sigmoid(%c): f32[1, 2, 4, 4]
  output %y
}
",
        );
    }

    #[test]
    fn shared_convs_outputs_and_second_activations_stay() {
        check_pass(
            &super::Fusion,
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 1, 1]
  %c1 = conv2d(%x, %w)
  %r1 = relu(%c1)
  %t1 = tanh(%c1)
  %c2 = conv2d(%x, %w) {activation=leaky_relu, alpha=0.2}
  %r2 = relu(%c2)
  %c3 = conv2d(%x, %w)
  %r3 = relu(%c3)
  %s = add(%r1, %t1)
  %s2 = add(%s, %r2)
  output %s2
  output %r3
}",
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 1, 1]
  %c1 = conv2d(%x, %w): f32[1, 2, 4, 4]
  %r1 = relu(%c1): f32[1, 2, 4, 4]
  %t1 = tanh(%c1): f32[1, 2, 4, 4]
  %c2 = conv2d(%x, %w) {activation=leaky_relu, alpha=0.2}: f32[1, 2, 4, 4]
  %r2 = relu(%c2): f32[1, 2, 4, 4]
  %c3 = conv2d(%x, %w): f32[1, 2, 4, 4]
  %r3 = relu(%c3): f32[1, 2, 4, 4]
  %s = add(%r1, %t1): f32[1, 2, 4, 4]
  %s2 = add(%s, %r2): f32[1, 2, 4, 4]
  output %s2
  output %r3
}
",
        );
    }
}
