//! A matmul by a weight matrix (as ONNX writes a transformer-style MLP) through the full
//! pipeline, where `matmul_dense` makes it a dense layer: the JIT equals the interpreter,
//! which runs the graph as written.

use kiln::ir::{Op, text};

/// ConvNeXt's pointwise MLP in miniature: `[1, 4, 4, 8] × [8, 12] + b`, GELU-free (a relu),
/// then back down by a weight computed from two params, with the bias on the left.
const MLP: &str = "graph g {
  input %x: f32[1, 4, 4, 8]
  param %w1: f32[8, 12]
  param %b1: f32[12]
  param %w2: f32[12, 8]
  param %s2: f32[12, 8]
  param %b2: f32[8]
  %m1 = matmul(%x, %w1)
  %a1 = add(%m1, %b1)
  %h = relu(%a1)
  %w2s = mul(%w2, %s2)
  %m2 = matmul(%h, %w2s)
  %y = add(%b2, %m2)
  output %y
}";

#[test]
fn a_matmul_by_weights_runs_as_dense_and_matches_the_interpreter() {
    let graph = text::parse(MLP).unwrap();
    let opt = kiln::passes::optimize(&graph, kiln::passes::OptLevel::Full).unwrap();
    let ops: Vec<&Op> = opt.topo_order().into_iter().map(|id| &opt.node(id).op).collect();
    assert!(!ops.contains(&&Op::MatMul), "{}", text::print(&opt));
    assert_eq!(ops.iter().filter(|op| ***op == Op::Dense).count(), 2);
    // both bias adds became dense biases
    assert!(
        !ops.iter()
            .any(|op| matches!(op, Op::Binary(kiln::ir::BinaryOp::Add))),
        "{}",
        text::print(&opt)
    );
    for seed in 0..4 {
        if let Err(e) = kiln::check::jit_matches_interpreter(&graph, seed) {
            panic!("{e}")
        }
    }
}
