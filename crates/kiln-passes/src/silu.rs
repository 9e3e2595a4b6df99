//! SiLU recognition. ONNX has no SiLU before opset 24's `Swish`, so PyTorch exports
//! `nn.SiLU` (EfficientNet's, RegNet's, YOLO's activation) as `Mul(x, Sigmoid(x))`: two
//! elementwise passes over the map and a sigmoid map that lives until the product. Here the
//! pair becomes one `silu(x)` activation, which `fusion` then makes the epilogue of the
//! convolution or GEMM before it, as it does a ReLU.
//!
//! The product must read the sigmoid of its other operand, both of the product's shape (no
//! broadcast), and the sigmoid must be read by the product alone and not be an output. The
//! bits do not change: `silu(x)` is defined as `x · sigmoid(x)`, and a product's operands
//! commute exactly. The sigmoid node becomes the `silu` and takes the product's name, so
//! outputs keep their names.

use crate::Pass;
use kiln_ir::{Activation, BinaryOp, Graph, IrError, NodeId, Op};

pub struct Silu;

impl Pass for Silu {
    fn name(&self) -> &'static str {
        "silu"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            if !graph.petgraph().contains_node(id) {
                continue;
            }
            if let Some(s) = sigmoid_factor(graph, id) {
                graph.set_op(s, Op::Activation(Activation::Silu))?;
                graph.substitute(id, s)?;
                changed = true;
            }
        }
        Ok(changed)
    }
}

/// The sigmoid `s` when `id` is `Mul(x, s)` or `Mul(s, x)` with `s = Sigmoid(x)`, all three
/// of one type, and `s` read by `id` alone and not an output.
fn sigmoid_factor(graph: &Graph, id: NodeId) -> Option<NodeId> {
    if !matches!(graph.node(id).op, Op::Binary(BinaryOp::Mul)) {
        return None;
    }
    let [p, q] = graph.inputs(id)[..] else {
        return None;
    };
    let ty = &graph.node(id).ty;
    [(p, q), (q, p)].into_iter().find_map(|(x, s)| {
        let fits = matches!(graph.node(s).op, Op::Activation(Activation::Sigmoid))
            && graph.inputs(s) == [x]
            && graph.users(s) == [id]
            && !graph.outputs().contains(&s)
            && graph.node(x).ty == *ty
            && graph.node(s).ty == *ty;
        fits.then_some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::Silu;
    use crate::testing::check_pass;

    #[test]
    fn a_product_with_its_own_sigmoid_becomes_silu_either_way_round() {
        check_pass(
            &Silu,
            "graph g {
  input %x: f32[1, 4, 3, 3]
  %s = sigmoid(%x)
  %y = mul(%x, %s)
  %t = sigmoid(%y)
  %z = mul(%t, %y)
  output %z
}",
            "graph g {
  input %x: f32[1, 4, 3, 3]
  %y = silu(%x): f32[1, 4, 3, 3]
  %z = silu(%y): f32[1, 4, 3, 3]
  output %z
}
",
        );
    }

    #[test]
    fn shared_and_output_sigmoids_and_other_products_stay() {
        // `%s` is read twice, `%u` is an output, `%v` is the sigmoid of another tensor, and
        // `%f` multiplies by a gate of another shape (squeeze-and-excitation's product)
        check_pass(
            &Silu,
            "graph g {
  input %x: f32[1, 4, 3, 3]
  input %w: f32[1, 4, 1, 1]
  %s = sigmoid(%x)
  %a = mul(%x, %s)
  %b = add(%s, %a)
  %u = sigmoid(%x)
  %c = mul(%x, %u)
  %v = sigmoid(%b)
  %d = mul(%x, %v)
  %r = sigmoid(%w)
  %f = mul(%x, %r)
  output %b
  output %u
  output %c
  output %d
  output %f
}",
            "graph g {
  input %x: f32[1, 4, 3, 3]
  input %w: f32[1, 4, 1, 1]
  %s = sigmoid(%x): f32[1, 4, 3, 3]
  %a = mul(%x, %s): f32[1, 4, 3, 3]
  %b = add(%s, %a): f32[1, 4, 3, 3]
  %u = sigmoid(%x): f32[1, 4, 3, 3]
  %c = mul(%x, %u): f32[1, 4, 3, 3]
  %v = sigmoid(%b): f32[1, 4, 3, 3]
  %d = mul(%x, %v): f32[1, 4, 3, 3]
  %r = sigmoid(%w): f32[1, 4, 1, 1]
  %f = mul(%x, %r): f32[1, 4, 3, 3]
  output %b
  output %u
  output %c
  output %d
  output %f
}
",
        );
    }
}
