//! Epilogue fusion. What a convolution or GEMM does to its output on the way out becomes part
//! of its kernel, applied by the JIT while the output tile is still in registers or cache:
//!
//! - an activation whose only input is a convolution, a `gemm` (directly or through the
//!   reshape the im2col pass puts after it) or an inference batch norm (a pre-activation
//!   network's `relu(bn(x))`, DenseNet's) read by nothing else becomes its `activation`;
//! - a residual `add` of a `gemm`'s output and another tensor of the same shape becomes the
//!   `gemm`'s `residual` input (the epilogue order is bias, residual, activation, so a
//!   ResNet block's `relu(bn(conv(h)) + shortcut)` ends as one kernel once batch norm is folded).
//!
//! Bias is already part of both ops. Replaced nodes are bypassed and left for `dead_code`.

use crate::Pass;
use kiln_ir::{Graph, IrError, NodeId, Op};

pub struct Fusion;

impl Pass for Fusion {
    fn name(&self) -> &'static str {
        "fusion"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            if !graph.petgraph().contains_node(id) {
                continue;
            }
            changed |= match graph.node(id).op {
                Op::Activation(_) => fuse_activation(graph, id)?,
                Op::Binary(kiln_ir::BinaryOp::Add) => fuse_residual(graph, id)?,
                _ => false,
            };
        }
        Ok(changed)
    }
}

/// Whether `id` is read by `user` alone and is not an output.
fn only_for(graph: &Graph, id: NodeId, user: NodeId) -> bool {
    graph.users(id) == [user] && !graph.outputs().contains(&id)
}

/// The `gemm` behind `v` as seen by `user`: `v` itself, or `v = reshape(gemm)`; every node of
/// the chain read only by the next.
fn gemm_behind(graph: &Graph, v: NodeId, user: NodeId) -> Option<(NodeId, Option<NodeId>)> {
    if !only_for(graph, v, user) {
        return None;
    }
    match graph.node(v).op {
        Op::Gemm(_) => Some((v, None)),
        Op::Reshape { .. } => {
            let g = graph.inputs(v)[0];
            (matches!(graph.node(g).op, Op::Gemm(_)) && only_for(graph, g, v)).then_some((g, Some(v)))
        }
        _ => None,
    }
}

fn fuse_activation(graph: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    let Op::Activation(act) = graph.node(id).op else {
        return Ok(false);
    };
    let [src] = graph.inputs(id)[..] else {
        return Ok(false);
    };
    match graph.node(src).op.clone() {
        Op::BatchNorm {
            epsilon,
            activation: None,
        } if only_for(graph, src, id) => {
            graph.set_op(
                src,
                Op::BatchNorm {
                    epsilon,
                    activation: Some(act),
                },
            )?;
        }
        Op::Conv2d(c) if c.activation.is_none() && only_for(graph, src, id) => {
            graph.set_op(
                src,
                Op::Conv2d(kiln_ir::Conv2d {
                    activation: Some(act),
                    ..c
                }),
            )?;
        }
        _ => match gemm_behind(graph, src, id) {
            Some((g, _)) => {
                let Op::Gemm(attrs) = graph.node(g).op.clone() else {
                    unreachable!("gemm_behind returns gemms")
                };
                if attrs.activation.is_some() {
                    return Ok(false);
                }
                graph.set_op(
                    g,
                    Op::Gemm(kiln_ir::Gemm {
                        activation: Some(act),
                        ..attrs
                    }),
                )?;
            }
            None => return Ok(false),
        },
    }
    graph.substitute(id, src)?;
    Ok(true)
}

fn fuse_residual(graph: &mut Graph, id: NodeId) -> Result<bool, IrError> {
    let ins = graph.inputs(id);
    let [p, q] = ins[..] else { return Ok(false) };
    let ty = graph.node(id).ty.clone();
    for (main, other) in [(p, q), (q, p)] {
        if main == other || graph.node(other).ty != ty || graph.node(main).ty != ty {
            continue;
        }
        let Some((g, reshape)) = gemm_behind(graph, main, id) else {
            continue;
        };
        let Op::Gemm(attrs) = graph.node(g).op.clone() else {
            continue;
        };
        if attrs.residual || attrs.activation.is_some() {
            continue;
        }
        let name = graph.node(id).name.clone();
        let gty = graph.node(g).ty.clone();
        let residual = if reshape.is_some() {
            let shape = gty.dims().iter().map(|&d| d as i64).collect();
            graph.add(
                graph.fresh_name(&format!("{name}.residual")),
                Op::Reshape { shape },
                &[other],
            )?
        } else {
            other
        };
        let mut gin = graph.inputs(g);
        gin.push(residual);
        let fused = Op::Gemm(kiln_ir::Gemm {
            residual: true,
            ..attrs
        });
        let g2 = graph.add(graph.fresh_name(&format!("{name}.gemm")), fused, &gin)?;
        let out = match reshape {
            Some(_) => {
                let shape = ty.dims().iter().map(|&d| d as i64).collect();
                graph.add(
                    graph.fresh_name(&format!("{name}.out")),
                    Op::Reshape { shape },
                    &[g2],
                )?
            }
            None => g2,
        };
        graph.substitute(id, out)?;
        return Ok(true);
    }
    Ok(false)
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
  %r = conv2d(%x, %w, %b) {padding=[1, 1, 1, 1], activation=relu}: f32[1, 2, 4, 4]
  %y = sigmoid(%r): f32[1, 2, 4, 4]
  output %y
}
",
        );
    }

    #[test]
    fn batch_norm_then_relu_becomes_one_batch_norm_unless_shared() {
        check_pass(
            &super::Fusion,
            "graph g {
  input %x: f32[1, 2, 4, 4]
  param %s: f32[2]
  %n1 = batch_norm(%x, %s, %s, %s, %s)
  %r1 = relu(%n1)
  %n2 = batch_norm(%r1, %s, %s, %s, %s)
  %r2 = relu(%n2)
  %t2 = tanh(%n2)
  %y = add(%r2, %t2)
  output %y
}",
            "graph g {
  input %x: f32[1, 2, 4, 4]
  param %s: f32[2]
  %r1 = batch_norm(%x, %s, %s, %s, %s) {epsilon=1e-5, activation=relu}: f32[1, 2, 4, 4]
  %n2 = batch_norm(%r1, %s, %s, %s, %s) {epsilon=1e-5}: f32[1, 2, 4, 4]
  %r2 = relu(%n2): f32[1, 2, 4, 4]
  %t2 = tanh(%n2): f32[1, 2, 4, 4]
  %y = add(%r2, %t2): f32[1, 2, 4, 4]
  output %y
}
",
        );
    }

    #[test]
    fn shared_convs_and_second_activations_stay_outputs_keep_their_names() {
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
  %r3 = conv2d(%x, %w) {activation=relu}: f32[1, 2, 4, 4]
  %s = add(%r1, %t1): f32[1, 2, 4, 4]
  %s2 = add(%s, %r2): f32[1, 2, 4, 4]
  output %s2
  output %r3
}
",
        );
    }

    #[test]
    fn residual_add_then_relu_become_one_gemm() {
        check_pass(
            &super::Fusion,
            "graph g {
  input %x: f32[1, 2, 2, 2]
  param %w: f32[2, 2]
  param %b: f32[2]
  %cols = reshape(%x) {shape=[1, 2, 4]}
  %gm = gemm(%w, %cols, %b) {bias=true}
  %c = reshape(%gm) {shape=[1, 2, 2, 2]}
  %s = add(%x, %c)
  %r = relu(%s)
  output %r
}",
            "graph g {
  input %x: f32[1, 2, 2, 2]
  param %w: f32[2, 2]
  param %b: f32[2]
  %cols = reshape(%x) {shape=[1, 2, 4]}: f32[1, 2, 4]
  %gm = gemm(%w, %cols, %b) {bias=true}: f32[1, 2, 4]
  %c = reshape(%gm) {shape=[1, 2, 2, 2]}: f32[1, 2, 2, 2]
  %s.residual = reshape(%x) {shape=[1, 2, 4]}: f32[1, 2, 4]
  %s.gemm = gemm(%w, %cols, %b, %s.residual) {bias=true, residual=true, activation=relu}: f32[1, 2, 4]
  %r = reshape(%s.gemm) {shape=[1, 2, 2, 2]}: f32[1, 2, 2, 2]
  output %r
}
",
        );
    }

    #[test]
    fn a_broadcast_add_or_an_activated_gemm_takes_no_residual() {
        let src = "graph g {
  input %x: f32[1, 2, 4]
  input %y: f32[2, 1]
  param %w: f32[2, 2]
  %gm = gemm(%w, %x) {activation=tanh}: f32[1, 2, 4]
  %s = add(%gm, %x): f32[1, 2, 4]
  %g2 = gemm(%w, %x): f32[1, 2, 4]
  %t = add(%g2, %y): f32[1, 2, 4]
  %u = add(%s, %t): f32[1, 2, 4]
  output %u
}
";
        check_pass(&super::Fusion, src, src);
    }
}
