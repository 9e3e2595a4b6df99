//! The training ops (backward graph and optimizer updates) in the text IR: every one parses,
//! gets the type its shape rule gives (expected values worked out by hand below), prints and
//! parses back to an equal graph; impossible attributes are errors naming the node.

use kiln_ir::text::{self, TRAINING_OP_NAMES};
use std::collections::BTreeSet;

const SRC: &str = r#"
graph train_ops {
  input %x: f32[2, 4, 7, 7]
  input %dy: f32[2, 6, 4, 4]
  input %pd: f32[2, 4, 3, 3]
  input %z: f32[3, 5]
  input %labels: i32[3]
  param %w: f32[6, 2, 3, 3]
  buffer %t: f32[]
  param %c4: f32[4]
  %rot = rot180(%w) {groups=2}: f32[4, 3, 3, 3]
  %dw = conv2d_weight_grad(%x, %dy) {kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1], groups=2}: f32[6, 2, 3, 3]
  %dil = dilate_pad2d(%dy) {stride=[2, 2], padding=[1, 1, 2, -1]}: f32[2, 6, 10, 7]
  %ids = max_pool2d_ids(%x) {kernel=[3, 3], stride=[2, 2]}: i32[2, 4, 3, 3]
  %aids = adaptive_max_pool2d_ids(%x) {output=[2, 3]}: i32[2, 4, 2, 3]
  %sc = scatter_ids2d(%pd, %ids) {size=[7, 7]}: f32[2, 4, 7, 7]
  %ag = avg_pool2d_grad(%pd) {kernel=[3, 3], stride=[2, 2], count_include_pad=true, input=[7, 7]}: f32[2, 4, 7, 7]
  %sg = sum_pool2d_grad(%pd) {kernel=[3, 3], stride=[2, 2], input=[7, 7]}: f32[2, 4, 7, 7]
  %aag = adaptive_avg_pool2d_grad(%pd) {input=[5, 6]}: f32[2, 4, 5, 6]
  %rg = relu_grad(%x, %x): f32[2, 4, 7, 7]
  %lg = leaky_relu_grad(%x, %x) {alpha=0.1}: f32[2, 4, 7, 7]
  %sgm = sigmoid_grad(%x, %x): f32[2, 4, 7, 7]
  %th = tanh_grad(%x, %x): f32[2, 4, 7, 7]
  %cg = clip_grad(%x, %x) {min=0.0, max=6.0}: f32[2, 4, 7, 7]
  %cg2 = clip_grad(%x, %x) {min=+inf}: f32[2, 4, 7, 7]
  %hsg = hard_sigmoid_grad(%x, %x) {alpha=0.16666667, beta=0.5}: f32[2, 4, 7, 7]
  %eg = erf_grad(%x, %x): f32[2, 4, 7, 7]
  %bt = broadcast_to(%c4) {shape=[2, 3, 4]}: f32[2, 3, 4]
  %lrg = lrn_grad(%x, %x) {size=3, alpha=0.5, bias=2.0}: f32[2, 4, 7, 7]
  %smg = softmax_grad(%z, %z) {axis=-1}: f32[3, 5]
  %lsg = log_softmax_grad(%z, %z) {axis=1}: f32[3, 5]
  %rs = reduce_sum_to(%x) {shape=[4, 1, 1]}: f32[4, 1, 1]
  %mg = mse_loss_grad(%z, %z): f32[3, 5]
  %ceg = cross_entropy_loss_grad(%z, %labels): f32[3, 5]
  %ng = nll_loss_grad(%z, %z): f32[3, 5]
  %sl = slice(%x) {axis=1, start=1, end=3}: f32[2, 2, 7, 7]
  %neg = scale(%z) {factor=-1.0}: f32[3, 5]
  %v = sgd_velocity(%w, %dw, %w) {momentum=0.9, weight_decay=0.0001}: f32[6, 2, 3, 3]
  %p1 = sgd_param(%w, %v) {lr=0.1, weight_decay=0.0}: f32[6, 2, 3, 3]
  %m = adam_moment(%w, %dw, %w) {beta=0.9, weight_decay=0.0, squared=false}: f32[6, 2, 3, 3]
  %m2 = adam_moment(%w, %dw, %w) {beta=0.999, weight_decay=0.0, squared=true}: f32[6, 2, 3, 3]
  %t1 = step_count(%t): f32[]
  %p2 = adam_param(%w, %m, %m2, %t1) {lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8}: f32[6, 2, 3, 3]
  %dr = dropout_train(%x, %t) {ratio=0.25, seed=7}: f32[2, 4, 7, 7]
  %bn = batch_norm_train(%x, %c4, %c4) {epsilon=1e-5}: f32[2, 4, 7, 7]
  %bng = batch_norm_grad(%x, %c4, %x) {epsilon=0.001}: f32[2, 4, 7, 7]
  %bns = batch_norm_scale_grad(%x, %x) {epsilon=1e-5}: f32[4]
  %bm = batch_mean(%x) {epsilon=1e-5}: f32[4]
  %bv = batch_var(%x) {epsilon=1e-5}: f32[4]
  output %rot
  output %dil
  output %aids
  output %sc
  output %ag
  output %sg
  output %aag
  output %rg
  output %lg
  output %sgm
  output %th
  output %cg
  output %cg2
  output %hsg
  output %eg
  output %bt
  output %lrg
  output %smg
  output %lsg
  output %rs
  output %mg
  output %ceg
  output %ng
  output %sl
  output %neg
  output %p1
  output %p2
  output %dr
  output %bn
  output %bng
  output %bns
  output %bm
  output %bv
}
"#;

#[test]
fn every_training_op_parses_with_its_type_and_roundtrips() {
    let g = text::parse(SRC).unwrap_or_else(|e| panic!("{e}"));
    let printed = text::print(&g);
    // The printer writes each node's type after it: the snippet's hand-written types are what
    // the shape rules inferred, and the printed text is the snippet itself.
    let want: Vec<&str> = SRC.trim().lines().map(str::trim).collect();
    let got: Vec<&str> = printed.trim().lines().map(str::trim).collect();
    assert_eq!(got, want);
    assert_eq!(text::parse(&printed).unwrap(), g);
    let names: BTreeSet<&str> = g
        .topo_order()
        .into_iter()
        .map(|id| g.node(id).op.name())
        .collect();
    for op in TRAINING_OP_NAMES {
        assert!(names.contains(op), "snippet misses `{op}`");
    }
    assert!(g.topo_order().into_iter().all(|id| {
        let op = &g.node(id).op;
        op.is_training() == TRAINING_OP_NAMES.contains(&op.name())
    }));
}

fn err(body: &str) -> String {
    let src = format!(
        "graph bad {{\n  input %x: f32[2, 4, 7, 7]\n  input %dy: f32[2, 6, 4, 4]\n  input %z: f32[3, 5]\n  param %w: f32[6, 2, 3, 3]\n{body}\n}}\n"
    );
    match text::parse(&src) {
        Ok(_) => panic!("parsed:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn impossible_training_ops_are_errors_naming_the_node() {
    let cases = [
        (
            "  %a = conv2d_weight_grad(%x, %dy) {kernel=[3, 3], groups=2}",
            "the convolution's output is f32[2, 6, 5, 5], but the delta is f32[2, 6, 4, 4]",
        ),
        (
            "  %a = rot180(%w) {groups=4}",
            "groups 4 must divide the output channels 6",
        ),
        (
            "  %a = dilate_pad2d(%x) {stride=[1, 1], padding=[0, 0, -7, 0]}",
            "leaves spatial axis 0 of size 0",
        ),
        (
            "  %a = scatter_ids2d(%x, %x) {size=[9, 9]}",
            "ids must be i32[2, 4, 7, 7]",
        ),
        ("  %a = reduce_sum_to(%x) {shape=[3, 1, 1]}", "do not broadcast"),
        (
            "  %a = reduce_sum_to(%x) {shape=[3, 2, 4, 7, 7]}",
            "does not broadcast to the input's [2, 4, 7, 7]",
        ),
        (
            "  %a = slice(%x) {axis=1, start=2, end=5}",
            "outside axis 1 of size 4",
        ),
        ("  %a = relu_grad(%x, %z)", "the delta must be f32[2, 4, 7, 7]"),
        (
            "  %a = clip_grad(%x, %x) {min=2.0, max=1.0}",
            "clip needs min ≤ max",
        ),
        ("  %a = erf_grad(%x, %z)", "the delta must be f32[2, 4, 7, 7]"),
        (
            "  %a = broadcast_to(%x) {shape=[2, 3, 7, 7]}",
            "do not broadcast (axis 1: 4 vs 3)",
        ),
        (
            "  %a = broadcast_to(%z) {shape=[5]}",
            "does not broadcast to shape [5]",
        ),
        (
            "  %a = lrn_grad(%x, %z) {size=3}",
            "the delta must be f32[2, 4, 7, 7]",
        ),
        ("  %a = lrn_grad(%x, %x) {size=0}", "size must be from 1"),
        (
            "  %a = avg_pool2d_grad(%dy) {kernel=[2, 2], stride=[2, 2], input=[7, 7]}",
            "pooling an input f32[2, 6, 7, 7] gives f32[2, 6, 3, 3], but the delta is f32[2, 6, 4, 4]",
        ),
        (
            "  %a = adam_param(%w, %w, %w, %w)",
            "the step count (input 3) must be f32[]",
        ),
        ("  %a = sgd_param(%w, %dy)", "input 1 must be f32[6, 2, 3, 3]"),
        ("  %a = step_count(%w)", "the step count must be a scalar"),
        (
            "  %a = dropout_train(%x, %w) {ratio=0.5}",
            "the step count (input 1) must be f32[]",
        ),
        (
            "  %a = dropout_train(%x, %x) {ratio=1.0}",
            "ratio must be in [0, 1)",
        ),
        ("  %a = batch_norm_train(%x, %w, %w)", "scale must have shape [4]"),
        (
            "  %a = batch_norm_scale_grad(%x, %dy)",
            "the delta must be f32[2, 4, 7, 7]",
        ),
    ];
    for (body, want) in cases {
        let e = err(body);
        assert!(
            e.contains("`a`") && e.contains(want),
            "{body}\n  gave: {e}\n  want: {want}"
        );
    }
}
