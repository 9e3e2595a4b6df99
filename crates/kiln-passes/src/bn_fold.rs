//! Batch-norm folding: inference batch norm right after a convolution (read by nothing else)
//! becomes part of that convolution's weights and bias:
//!
//! `s = γ·rsqrt(var + ε)`, `w' = w·s` (per output channel), `b' = (b − mean)·s + β`
//! (`β − mean·s` without a bias).
//!
//! The new weights are computed by ordinary graph ops on the parameters alone — a constant
//! subgraph, which the JIT evaluates once when the weights are loaded — so the fold needs no
//! weight values at compile time and stays exact under `kiln compile --emit optimized`.

use crate::Pass;
use kiln_ir::{BinaryOp, Graph, IrError, Op};

pub struct BnFold;

impl Pass for BnFold {
    fn name(&self) -> &'static str {
        "bn_fold"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            let Op::BatchNorm {
                epsilon,
                activation: None,
            } = graph.node(id).op
            else {
                continue;
            };
            let ins = graph.inputs(id);
            let conv = ins[0];
            let Op::Conv2d(c) = graph.node(conv).op.clone() else {
                continue;
            };
            let stats = [ins[1], ins[2], ins[3], ins[4]];
            let foldable = c.activation.is_none()
                && graph.users(conv) == [id]
                && !graph.outputs().contains(&conv)
                && stats.iter().all(|&s| crate::is_constant(graph, s));
            if !foldable {
                continue;
            }
            let [gamma, beta, mean, var] = stats;
            let cins = graph.inputs(conv);
            let name = graph.node(id).name.clone();
            let co = graph.node(cins[1]).ty.dims()[0] as i64;
            let add = |g: &mut Graph, what: &str, op: Op, ins: &[kiln_ir::NodeId]| {
                g.add(g.fresh_name(&format!("{name}.{what}")), op, ins)
            };
            let r = add(graph, "rsqrt", Op::Rsqrt { epsilon }, &[var])?;
            let s = add(graph, "scale", Op::Binary(BinaryOp::Mul), &[gamma, r])?;
            let s4 = add(
                graph,
                "scale4d",
                Op::Reshape {
                    shape: vec![co, 1, 1, 1],
                },
                &[s],
            )?;
            let w = add(graph, "folded_weight", Op::Binary(BinaryOp::Mul), &[cins[1], s4])?;
            let b = match cins.get(2) {
                Some(&b0) => {
                    let centred = add(graph, "centred", Op::Binary(BinaryOp::Sub), &[b0, mean])?;
                    let scaled = add(graph, "scaled", Op::Binary(BinaryOp::Mul), &[centred, s])?;
                    add(graph, "folded_bias", Op::Binary(BinaryOp::Add), &[scaled, beta])?
                }
                None => {
                    let ms = add(graph, "mean_scaled", Op::Binary(BinaryOp::Mul), &[mean, s])?;
                    add(graph, "folded_bias", Op::Binary(BinaryOp::Sub), &[beta, ms])?
                }
            };
            let folded = add(graph, "conv", Op::Conv2d(c), &[cins[0], w, b])?;
            graph.substitute(id, folded)?;
            graph.remove_if_unused(conv);
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn conv_then_batch_norm_becomes_one_conv_with_folded_weights() {
        check_pass(
            &super::BnFold,
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %g: f32[2]
  param %b: f32[2]
  buffer %m: f32[2]
  buffer %v: f32[2]
  %c = conv2d(%x, %w)
  %bn = batch_norm(%c, %g, %b, %m, %v) {epsilon=0.001}
  output %bn
}",
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %g: f32[2]
  param %b: f32[2]
  buffer %m: f32[2]
  buffer %v: f32[2]
  %bn.rsqrt = rsqrt(%v) {epsilon=0.001}: f32[2]
  %bn.scale = mul(%g, %bn.rsqrt): f32[2]
  %bn.scale4d = reshape(%bn.scale) {shape=[2, 1, 1, 1]}: f32[2, 1, 1, 1]
  %bn.folded_weight = mul(%w, %bn.scale4d): f32[2, 1, 3, 3]
  %bn.mean_scaled = mul(%m, %bn.scale): f32[2]
  %bn.folded_bias = sub(%b, %bn.mean_scaled): f32[2]
  %bn = conv2d(%x, %bn.folded_weight, %bn.folded_bias): f32[1, 2, 2, 2]
  output %bn
}
",
        );
    }

    #[test]
    fn batch_norm_of_an_input_or_a_shared_conv_stays() {
        let src = "graph g {
  input %x: f32[1, 2, 4, 4]
  param %w: f32[2, 2, 1, 1]
  param %g: f32[2]
  param %b: f32[2]
  buffer %m: f32[2]
  buffer %v: f32[2]
  %c = conv2d(%x, %w): f32[1, 2, 4, 4]
  %bn = batch_norm(%c, %g, %b, %m, %v) {epsilon=0.001}: f32[1, 2, 4, 4]
  %bn2 = batch_norm(%x, %g, %b, %m, %v) {epsilon=0.001}: f32[1, 2, 4, 4]
  %y = add(%bn, %c): f32[1, 2, 4, 4]
  %z = add(%y, %bn2): f32[1, 2, 4, 4]
  output %z
}
";
        check_pass(&super::BnFold, src, src);
    }
}
