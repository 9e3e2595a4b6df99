//! MatMul by a weight becomes a dense layer. `matmul(x, w)` with `x [… , M, K]` (rank ≥ 2) and
//! `w [K, N]` computed from weights alone (a param, or a constant subgraph, see
//! [`crate::constant_nodes`]) is a fully connected layer applied to every row of `x`:
//!
//! `reshape(dense(reshape(x, [∏ leading, K]), transpose(w, [1, 0])), [… , M, N])`
//!
//! `dense` takes its weight as `[N, K]` (PyTorch `Linear` layout); the transpose reads only
//! weights, so the JIT computes it once when the weights are loaded. A broadcasting `add` of a
//! constant `[N]` bias read from the product alone becomes the dense layer's bias. ONNX
//! exports of transformer-style MLPs (ConvNeXt's pointwise layers among them) are written this
//! way. A rank-1 `x`, a batched `w` and a `w` that depends on a graph input stay `matmul`.

use crate::Pass;
use kiln_ir::{BinaryOp, Graph, IrError, NodeId, Op};

pub struct MatMulDense;

impl Pass for MatMulDense {
    fn name(&self) -> &'static str {
        "matmul_dense"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        let mut constant = crate::constant_nodes(graph);
        for id in graph.topo_order() {
            if !graph.petgraph().contains_node(id) || graph.node(id).op != Op::MatMul {
                continue;
            }
            let ins = graph.inputs(id);
            let [x, w] = ins[..] else { continue };
            let xd = graph.node(x).ty.dims().to_vec();
            let wd = graph.node(w).ty.dims().to_vec();
            let out = graph.node(id).ty.dims().to_vec();
            // a value with no elements is left alone (a reshape dim of 0 means "copy")
            let rewritable = xd.len() >= 2
                && wd.len() == 2
                && constant.contains(&w)
                && !xd.contains(&0)
                && !wd.contains(&0);
            if !rewritable {
                continue;
            }
            let (k, n) = (wd[0], wd[1]);
            let rows: usize = xd[..xd.len() - 1].iter().product();
            let bias = folded_bias(graph, &constant, id, n);
            let name = graph.node(id).name.clone();
            let add = |g: &mut Graph, what: &str, op: Op, ins: &[NodeId]| {
                g.add(g.fresh_name(&format!("{name}.{what}")), op, ins)
            };
            let x2 = if xd.len() == 2 {
                x
            } else {
                let shape = vec![rows as i64, k as i64];
                add(graph, "rows", Op::Reshape { shape }, &[x])?
            };
            let wt = add(graph, "wt", Op::Transpose { perm: vec![1, 0] }, &[w])?;
            constant.insert(wt);
            let mut dense_in = vec![x2, wt];
            dense_in.extend(bias.map(|(_, b)| b));
            let d = add(graph, "dense", Op::Dense, &dense_in)?;
            let y = if xd.len() == 2 {
                d
            } else {
                let shape = out.iter().map(|&v| v as i64).collect();
                add(graph, "out", Op::Reshape { shape }, &[d])?
            };
            match bias {
                Some((sum, _)) => {
                    graph.substitute(sum, y)?;
                    graph.remove_if_unused(id);
                }
                None => graph.substitute(id, y)?,
            }
            changed = true;
        }
        Ok(changed)
    }
}

/// The `add` of `matmul` and a constant `[n]` bias, when `matmul` is read by that add alone
/// (and is not an output) and the add's result has the product's shape: `(add, bias)`.
fn folded_bias(
    graph: &Graph,
    constant: &std::collections::HashSet<NodeId>,
    matmul: NodeId,
    n: usize,
) -> Option<(NodeId, NodeId)> {
    let [sum] = graph.users(matmul)[..] else {
        return None;
    };
    if graph.outputs().contains(&matmul)
        || graph.node(sum).op != Op::Binary(BinaryOp::Add)
        || graph.node(sum).ty != graph.node(matmul).ty
    {
        return None;
    }
    let bias = match graph.inputs(sum)[..] {
        [a, b] if a == matmul && b != matmul => b,
        [a, b] if b == matmul && a != matmul => a,
        _ => return None,
    };
    (constant.contains(&bias) && graph.node(bias).ty.dims() == [n]).then_some((sum, bias))
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn a_4d_matmul_by_a_param_with_a_bias_becomes_one_dense() {
        check_pass(
            &super::MatMulDense,
            "graph g {
  input %x: f32[1, 3, 3, 4]
  param %w: f32[4, 6]
  param %b: f32[6]
  %m = matmul(%x, %w)
  %y = add(%b, %m)
  output %y
}",
            "graph g {
  input %x: f32[1, 3, 3, 4]
  param %w: f32[4, 6]
  param %b: f32[6]
  %m.rows = reshape(%x) {shape=[9, 4]}: f32[9, 4]
  %m.wt = transpose(%w) {perm=[1, 0]}: f32[6, 4]
  %m.dense = dense(%m.rows, %m.wt, %b): f32[9, 6]
  %y = reshape(%m.dense) {shape=[1, 3, 3, 6]}: f32[1, 3, 3, 6]
  output %y
}
",
        );
    }

    /// A weight computed from params is constant too; a 2-D `x` needs no reshapes; a bias
    /// that is not `[N]` (here `[1, 6]`) stays an `add`.
    #[test]
    fn a_2d_matmul_by_a_constant_subgraph_keeps_a_bias_of_another_shape() {
        check_pass(
            &super::MatMulDense,
            "graph g {
  input %x: f32[5, 4]
  param %w: f32[4, 6]
  param %s: f32[4, 6]
  param %b: f32[1, 6]
  %ws = mul(%w, %s)
  %m = matmul(%x, %ws)
  %y = add(%m, %b)
  output %y
}",
            "graph g {
  input %x: f32[5, 4]
  param %w: f32[4, 6]
  param %s: f32[4, 6]
  param %b: f32[1, 6]
  %ws = mul(%w, %s): f32[4, 6]
  %m.wt = transpose(%ws) {perm=[1, 0]}: f32[6, 4]
  %m = dense(%x, %m.wt): f32[5, 6]
  %y = add(%m, %b): f32[5, 6]
  output %y
}
",
        );
    }

    /// A product that is also an output keeps its value: the bias add is not folded into it.
    #[test]
    fn a_product_read_elsewhere_keeps_its_bias_add() {
        check_pass(
            &super::MatMulDense,
            "graph g {
  input %x: f32[2, 2, 4]
  param %w: f32[4, 3]
  param %b: f32[3]
  %m = matmul(%x, %w)
  %y = add(%m, %b)
  output %y
  output %m
}",
            "graph g {
  input %x: f32[2, 2, 4]
  param %w: f32[4, 3]
  param %b: f32[3]
  %m.rows = reshape(%x) {shape=[4, 4]}: f32[4, 4]
  %m.wt = transpose(%w) {perm=[1, 0]}: f32[3, 4]
  %m.dense = dense(%m.rows, %m.wt): f32[4, 3]
  %m = reshape(%m.dense) {shape=[2, 2, 3]}: f32[2, 2, 3]
  %y = add(%m, %b): f32[2, 2, 3]
  output %y
  output %m
}
",
        );
    }

    #[test]
    fn rank_1_x_batched_w_and_input_w_stay_matmul() {
        let src = "graph g {
  input %v: f32[4]
  input %x: f32[2, 3, 4]
  input %wi: f32[4, 3]
  param %w: f32[4, 3]
  param %wb: f32[2, 4, 3]
  param %s: f32[4, 3]
  %a = matmul(%v, %w): f32[3]
  %b = matmul(%x, %wb): f32[2, 3, 3]
  %ws = mul(%wi, %s): f32[4, 3]
  %c = matmul(%x, %ws): f32[2, 3, 3]
  output %a
  output %b
  output %c
}
";
        check_pass(&super::MatMulDense, src, src);
    }
}
