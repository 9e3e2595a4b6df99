//! Per-channel affine folding: a multiplication or an addition by a constant that holds one
//! value per channel (shape `[C, 1, 1]` or `[1, C, 1, 1]` against an `N × C × H × W` value —
//! Caffe's `Scale` layer, as the onnx model zoo's DenseNet and Inception files write it after
//! each batch norm) becomes part of the node before it, when that node is read by nothing
//! else:
//!
//! - after an inference batch norm: `γ' = γ·s`, `β' = β·s` for `·s`; `β' = β + t` for `+ t`;
//! - after a convolution without a fused activation: `w' = w·s` (per output channel),
//!   `b' = b·s` for `·s`; `b' = b + t` (or `t` without a bias) for `+ t`.
//!
//! As in batch-norm folding, the new parameters are graph ops on the constants alone, which
//! the JIT evaluates once when the weights are loaded: the multiplication or addition over the
//! whole activation (a pass over memory, and a kernel, each) is gone. The products round once
//! more or less than the graph as written (`(x·γ)·s` against `x·(γ·s)`), as the batch-norm
//! fold's do.

use crate::Pass;
use kiln_ir::{BinaryOp, Graph, IrError, NodeId, Op};

pub struct AffineFold;

impl Pass for AffineFold {
    fn name(&self) -> &'static str {
        "affine_fold"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let mut constant = crate::constant_nodes(graph);
        for id in graph.topo_order() {
            let Op::Binary(op @ (BinaryOp::Mul | BinaryOp::Add)) = graph.node(id).op else {
                continue;
            };
            let ins = graph.inputs(id);
            // the value and the per-channel constant, in either order
            let Some((x, k, channels)) =
                [(ins[0], ins[1]), (ins[1], ins[0])]
                    .into_iter()
                    .find_map(|(x, k)| {
                        let both = constant.contains(&k) && !constant.contains(&x);
                        both.then(|| per_channel(graph, x, k))
                            .flatten()
                            .map(|c| (x, k, c))
                    })
            else {
                continue;
            };
            if graph.users(x) != [id] || graph.outputs().contains(&x) {
                continue;
            }
            let name = graph.node(id).name.clone();
            let add = |g: &mut Graph, what: &str, op: Op, ins: &[NodeId]| {
                g.add(g.fresh_name(&format!("{name}.{what}")), op, ins)
            };
            let mul_op = Op::Binary(BinaryOp::Mul);
            let folded = match graph.node(x).op.clone() {
                Op::BatchNorm {
                    epsilon,
                    activation: None,
                } => {
                    let bn = graph.inputs(x);
                    let [gamma, beta] = [bn[1], bn[2]];
                    if !constant.contains(&gamma) || !constant.contains(&beta) {
                        continue;
                    }
                    let flat = add(
                        graph,
                        "flat",
                        Op::Reshape {
                            shape: vec![channels],
                        },
                        &[k],
                    )?;
                    let (gamma, beta) = if op == BinaryOp::Mul {
                        let g2 = add(graph, "gamma", mul_op.clone(), &[gamma, flat])?;
                        (g2, add(graph, "beta", mul_op, &[beta, flat])?)
                    } else {
                        (
                            gamma,
                            add(graph, "beta", Op::Binary(BinaryOp::Add), &[beta, flat])?,
                        )
                    };
                    add(
                        graph,
                        "batch_norm",
                        Op::BatchNorm {
                            epsilon,
                            activation: None,
                        },
                        &[bn[0], gamma, beta, bn[3], bn[4]],
                    )?
                }
                Op::Conv2d(c) if c.activation.is_none() => {
                    let cins = graph.inputs(x);
                    if !cins[1..].iter().all(|i| constant.contains(i)) {
                        continue;
                    }
                    let flat = |g: &mut Graph| {
                        add(
                            g,
                            "flat",
                            Op::Reshape {
                                shape: vec![channels],
                            },
                            &[k],
                        )
                    };
                    let (w, b) = if op == BinaryOp::Mul {
                        let k4 = add(
                            graph,
                            "scale4d",
                            Op::Reshape {
                                shape: vec![channels, 1, 1, 1],
                            },
                            &[k],
                        )?;
                        let w = add(graph, "weight", mul_op.clone(), &[cins[1], k4])?;
                        let b = match cins.get(2) {
                            Some(&b) => {
                                let f = flat(graph)?;
                                Some(add(graph, "bias", mul_op, &[b, f])?)
                            }
                            None => None,
                        };
                        (w, b)
                    } else {
                        let flat = flat(graph)?;
                        let b = match cins.get(2) {
                            Some(&b) => add(graph, "bias", Op::Binary(BinaryOp::Add), &[b, flat])?,
                            None => flat,
                        };
                        (cins[1], Some(b))
                    };
                    let mut new_ins = vec![cins[0], w];
                    new_ins.extend(b);
                    add(graph, "conv", Op::Conv2d(c), &new_ins)?
                }
                _ => continue,
            };
            graph.substitute(id, folded)?;
            graph.remove_if_unused(x);
            changed = true;
            // the folded parameters are constants too: an addition after this product folds
            // in the same run
            constant = crate::constant_nodes(graph);
        }
        Ok(changed)
    }
}

/// The channel count `C` when `k` holds one value per channel of `x` (an `N × C × H × W`
/// value): `k`'s dims, aligned to the right, are 1 everywhere but axis 1, where they are `C`.
fn per_channel(graph: &Graph, x: NodeId, k: NodeId) -> Option<i64> {
    let (xd, kd) = (graph.node(x).ty.dims(), graph.node(k).ty.dims());
    if xd.len() != 4 || kd.len() > 4 || kd.is_empty() {
        return None;
    }
    let padded: Vec<usize> = std::iter::repeat_n(1, 4 - kd.len())
        .chain(kd.iter().copied())
        .collect();
    let ok = padded[1] == xd[1] && padded.iter().enumerate().all(|(i, &d)| i == 1 || d == 1);
    ok.then(|| i64::try_from(xd[1]).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn a_scale_and_shift_after_a_batch_norm_fold_into_it() {
        check_pass(
            &super::AffineFold,
            "graph g {
  input %x: f32[1, 2, 4, 4]
  param %g: f32[2]
  param %b: f32[2]
  buffer %m: f32[2]
  buffer %v: f32[2]
  param %s: f32[2, 1, 1]
  param %t: f32[1, 2, 1, 1]
  %bn = batch_norm(%x, %g, %b, %m, %v) {epsilon=0.001}
  %scaled = mul(%s, %bn)
  %shifted = add(%scaled, %t)
  %y = relu(%shifted)
  output %y
}",
            "graph g {
  input %x: f32[1, 2, 4, 4]
  param %g: f32[2]
  param %b: f32[2]
  buffer %m: f32[2]
  buffer %v: f32[2]
  param %s: f32[2, 1, 1]
  param %t: f32[1, 2, 1, 1]
  %shifted.flat = reshape(%t) {shape=[2]}: f32[2]
  %scaled.flat = reshape(%s) {shape=[2]}: f32[2]
  %scaled.gamma = mul(%g, %scaled.flat): f32[2]
  %scaled.beta = mul(%b, %scaled.flat): f32[2]
  %shifted.beta = add(%scaled.beta, %shifted.flat): f32[2]
  %shifted = batch_norm(%x, %scaled.gamma, %shifted.beta, %m, %v) {epsilon=0.001}: f32[1, 2, 4, 4]
  %y = relu(%shifted): f32[1, 2, 4, 4]
  output %y
}
",
        );
    }

    #[test]
    fn a_scale_and_shift_after_a_convolution_fold_into_its_weights_and_bias() {
        check_pass(
            &super::AffineFold,
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %s: f32[2, 1, 1]
  param %t: f32[2, 1, 1]
  %c = conv2d(%x, %w)
  %scaled = mul(%c, %s)
  %shifted = add(%t, %scaled)
  output %shifted
}",
            "graph g {
  input %x: f32[1, 1, 4, 4]
  param %w: f32[2, 1, 3, 3]
  param %s: f32[2, 1, 1]
  param %t: f32[2, 1, 1]
  %shifted.flat = reshape(%t) {shape=[2]}: f32[2]
  %scaled.scale4d = reshape(%s) {shape=[2, 1, 1, 1]}: f32[2, 1, 1, 1]
  %scaled.weight = mul(%w, %scaled.scale4d): f32[2, 1, 3, 3]
  %shifted = conv2d(%x, %scaled.weight, %shifted.flat): f32[1, 2, 2, 2]
  output %shifted
}
",
        );
    }

    /// A constant that is not one value per channel, a node read twice, an input: unchanged.
    #[test]
    fn other_broadcasts_and_shared_values_stay() {
        let src = "graph g {
  input %x: f32[1, 2, 4, 4]
  param %w: f32[2, 2, 1, 1]
  param %row: f32[4]
  param %s: f32[2, 1, 1]
  %c = conv2d(%x, %w): f32[1, 2, 4, 4]
  %a = mul(%c, %row): f32[1, 2, 4, 4]
  %c2 = conv2d(%x, %w): f32[1, 2, 4, 4]
  %b = mul(%c2, %s): f32[1, 2, 4, 4]
  %d = add(%b, %c2): f32[1, 2, 4, 4]
  %e = mul(%x, %s): f32[1, 2, 4, 4]
  %y = add(%a, %d): f32[1, 2, 4, 4]
  %z = add(%y, %e): f32[1, 2, 4, 4]
  output %z
}
";
        check_pass(&super::AffineFold, src, src);
    }
}
