//! Bad input gets a clear error that says what and where, never a panic.
//!
//! Graph rules (shape inference) are checked twice: through the text parser — the message
//! carries `file:line:column` of the node, its name, its op and its input types — and through
//! `Graph::add` / the builder, whose `IrError::Shape` carries the same facts. Syntax and
//! reference errors are checked for the exact position of the offending token.

use kiln_ir::builder::{Conv, ConvTranspose, Network};
use kiln_ir::text::{self, parse_named};
use kiln_ir::{
    Activation, BinaryOp, Conv2d, ConvTranspose2d, Graph, IrError, LossKind, Op, Padding, Pool2d, PoolKind,
    TensorType,
};

const FILE: &str = "bad.kiln";

/// The error of parsing `src`, as `file:line:column: message`.
fn parse_err(src: &str) -> String {
    match parse_named(src, FILE) {
        Ok(g) => panic!("expected an error, but it parsed:\n{}", text::print(&g)),
        Err(e) => e.to_string(),
    }
}

fn assert_contains(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "message does not mention `{n}`:\n{msg}");
    }
}

/// `src` fails at `line:col` with a message mentioning every needle.
#[track_caller]
fn fails_at(src: &str, line: usize, col: usize, needles: &[&str]) {
    let msg = parse_err(src);
    let at = format!("{FILE}:{line}:{col}: ");
    assert!(
        msg.starts_with(&at),
        "expected the error at {at}, got:\n{msg}\n--- source ---\n{src}"
    );
    assert_contains(&msg, needles);
}

// ---------------------------------------------------------------------------------------------
// Graph rules, through the parser and through `Graph::add`

/// A graph rule violated by the node `%y = <node>` over the source nodes declared in `sources`
/// (one per line). Checked through the text parser and through `Graph::add`.
struct Rule {
    sources: &'static str,
    /// The text of the offending node, after `%y = `.
    node: &'static str,
    /// The same node for `Graph::add`: its op and its arguments by name.
    op: Op,
    args: &'static [&'static str],
    /// What the message must say beyond the node's name, op and input types.
    needles: &'static [&'static str],
}

impl Rule {
    #[track_caller]
    fn check(&self) {
        let types = self.types();
        // Through the parser: the error points at the node's `%y`.
        let src = format!(
            "graph g {{\n{}\n  %y = {}\n  output %y\n}}\n",
            self.sources, self.node
        );
        let line = self.sources.lines().count() + 2;
        let mut needles = vec!["node `y`", self.op.name(), types.as_str()];
        needles.extend(self.needles);
        fails_at(&src, line, 3, &needles);
        // Through `Graph::add`, on the same sources.
        let mut g = self.source_graph();
        let ids: Vec<_> = self
            .args
            .iter()
            .map(|a| g.find(a).expect("declared source"))
            .collect();
        let e = g
            .add("y", self.op.clone(), &ids)
            .expect_err("Graph::add must reject the node");
        assert!(matches!(e, IrError::Shape { .. }), "{e:?}");
        assert_contains(&e.to_string(), &needles);
        assert!(g.find("y").is_none(), "a rejected node must not be added");
    }

    fn source_graph(&self) -> Graph {
        let first = self.sources.split(['%', ':']).nth(1).expect("a source");
        let src = format!("graph g {{\n{}\n  output %{first}\n}}\n", self.sources);
        text::parse(&src).unwrap_or_else(|e| panic!("sources must parse: {e}"))
    }

    /// The argument types as messages list them: `f32[1, 4, 8, 8], f32[6, 4, 3, 3]`.
    fn types(&self) -> String {
        let g = self.source_graph();
        let t: Vec<String> = self
            .args
            .iter()
            .map(|a| g.node(g.find(a).unwrap()).ty.to_string())
            .collect();
        t.join(", ")
    }
}

const X_W: &str = "  input %x: f32[1, 4, 8, 8]\n  param %w: f32[6, 4, 3, 3]";

fn conv(f: impl FnOnce(&mut Conv2d)) -> Op {
    let mut c = Conv2d::default();
    f(&mut c);
    Op::Conv2d(c)
}

fn deconv(f: impl FnOnce(&mut ConvTranspose2d)) -> Op {
    let mut c = ConvTranspose2d::default();
    f(&mut c);
    Op::ConvTranspose2d(c)
}

#[test]
fn stride_zero() {
    Rule {
        sources: X_W,
        node: "conv2d(%x, %w) {stride=[0, 1]}",
        op: conv(|c| c.stride = [0, 1]),
        args: &["x", "w"],
        needles: &["stride must be at least 1", "[0, 1]"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]",
        node: "max_pool2d(%x) {kernel=[2, 2], stride=[1, 0]}",
        op: Op::Pool2d(Pool2d::new(PoolKind::Max, [2, 2], [1, 0])),
        args: &["x"],
        needles: &["stride must be at least 1"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 3, 3]\n  param %w: f32[4, 2, 3, 3]",
        node: "conv_transpose2d(%x, %w) {stride=[0, 0]}",
        op: deconv(|c| c.stride = [0, 0]),
        args: &["x", "w"],
        needles: &["stride must be at least 1"],
    }
    .check();
}

#[test]
fn dilation_zero() {
    Rule {
        sources: X_W,
        node: "conv2d(%x, %w) {dilation=[1, 0]}",
        op: conv(|c| c.dilation = [1, 0]),
        args: &["x", "w"],
        needles: &["dilation must be at least 1"],
    }
    .check();
    let mut p = Pool2d::new(PoolKind::Sum, [2, 2], [1, 1]);
    p.dilation = [0, 1];
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]",
        node: "sum_pool2d(%x) {kernel=[2, 2], stride=[1, 1], dilation=[0, 1]}",
        op: Op::Pool2d(p),
        args: &["x"],
        needles: &["dilation must be at least 1"],
    }
    .check();
}

#[test]
fn kernel_larger_than_padded_input() {
    Rule {
        sources: "  input %x: f32[1, 4, 2, 8]\n  param %w: f32[6, 4, 3, 3]",
        node: "conv2d(%x, %w)",
        op: conv(|_| {}),
        args: &["x", "w"],
        needles: &["kernel extent 3", "larger than the padded input 2"],
    }
    .check();
    // Dilation counts: a 3-tap kernel with dilation 4 spans 9 > 8.
    Rule {
        sources: X_W,
        node: "conv2d(%x, %w) {dilation=[4, 4], padding=[0, 0, 0, 0]}",
        op: conv(|c| c.dilation = [4, 4]),
        args: &["x", "w"],
        needles: &["kernel extent 9", "dilation 4", "padded input 8"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 2, 2]",
        node: "avg_pool2d(%x) {kernel=[3, 3], stride=[1, 1]}",
        op: Op::Pool2d(Pool2d::new(
            PoolKind::Avg {
                count_include_pad: false,
            },
            [3, 3],
            [1, 1],
        )),
        args: &["x"],
        needles: &["kernel extent 3", "padded input 2"],
    }
    .check();
}

#[test]
fn groups_must_divide_channels() {
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]\n  param %w: f32[6, 1, 3, 3]",
        node: "conv2d(%x, %w) {groups=3}",
        op: conv(|c| c.groups = 3),
        args: &["x", "w"],
        needles: &["groups 3 must divide the input channels 4"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]\n  param %w: f32[5, 2, 3, 3]",
        node: "conv2d(%x, %w) {groups=2}",
        op: conv(|c| c.groups = 2),
        args: &["x", "w"],
        needles: &["output channels 5"],
    }
    .check();
    Rule {
        sources: X_W,
        node: "conv2d(%x, %w) {groups=0}",
        op: conv(|c| c.groups = 0),
        args: &["x", "w"],
        needles: &["groups 0"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 3, 3]\n  param %w: f32[4, 2, 3, 3]",
        node: "conv_transpose2d(%x, %w) {groups=3}",
        op: deconv(|c| c.groups = 3),
        args: &["x", "w"],
        needles: &["groups 3 must divide the input channels 4"],
    }
    .check();
    // Through the builder: a depthwise-like layer with groups that do not divide C.
    let mut net = Network::new("n");
    let x = net.input("x", [1, 4, 8, 8]).unwrap();
    let e = net
        .named("dw")
        .conv2d(x, Conv::new(4, [3, 3]).groups(3))
        .unwrap_err();
    assert_contains(
        &e.to_string(),
        &["node `dw`", "conv2d", "groups 3 must divide the input channels 4"],
    );
}

#[test]
fn weight_with_wrong_channels_per_group() {
    Rule {
        sources: X_W,
        node: "conv2d(%x, %w) {groups=2}",
        op: conv(|c| c.groups = 2),
        args: &["x", "w"],
        needles: &["weight must have C/groups = 2 input channels, got 4"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 3, 3]\n  param %w: f32[3, 2, 3, 3]",
        node: "conv_transpose2d(%x, %w)",
        op: deconv(|_| {}),
        args: &["x", "w"],
        needles: &["weight must have 4 input channels", "got 3"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]\n  param %w: f32[6, 4, 3]",
        node: "conv2d(%x, %w)",
        op: conv(|_| {}),
        args: &["x", "w"],
        needles: &["weight must have rank 4", "[6, 4, 3]"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]\n  param %w: f32[6, 4, 3, 3]\n  param %b: f32[5]",
        node: "conv2d(%x, %w, %b)",
        op: conv(|_| {}),
        args: &["x", "w", "b"],
        needles: &["bias must have shape [6], got [5]"],
    }
    .check();
}

#[test]
fn concat_of_mismatched_shapes() {
    Rule {
        sources: "  input %a: f32[1, 4, 8, 8]\n  input %b: f32[1, 2, 6, 8]",
        node: "concat(%a, %b) {axis=1}",
        op: Op::Concat { axis: 1 },
        args: &["a", "b"],
        needles: &["input 1 is f32[1, 2, 6, 8]", "along axis 1"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[1, 4, 8, 8]\n  input %b: f32[1, 4, 8]",
        node: "concat(%a, %b) {axis=-1}",
        op: Op::Concat { axis: -1 },
        args: &["a", "b"],
        needles: &["input 1 is f32[1, 4, 8]"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[1, 4, 8, 8]",
        node: "concat(%a, %a) {axis=4}",
        op: Op::Concat { axis: 4 },
        args: &["a", "a"],
        needles: &["axis 4 is out of range for rank 4"],
    }
    .check();
}

#[test]
fn bad_broadcast() {
    Rule {
        sources: "  input %a: f32[1, 4, 8, 8]\n  param %b: f32[3]",
        node: "add(%a, %b)",
        op: Op::Binary(BinaryOp::Add),
        args: &["a", "b"],
        needles: &["do not broadcast", "8 vs 3"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3]\n  input %b: i32[2, 3]",
        node: "mul(%a, %b)",
        op: Op::Binary(BinaryOp::Mul),
        args: &["a", "b"],
        needles: &["right operand must be f32, got i32"],
    }
    .check();
}

#[test]
fn reshape_to_a_wrong_element_count() {
    Rule {
        sources: "  input %a: f32[2, 3, 4]",
        node: "reshape(%a) {shape=[5, 5]}",
        op: Op::Reshape { shape: vec![5, 5] },
        args: &["a"],
        needles: &["cannot reshape 24 elements into [5, 5] (25 elements)"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3, 4]",
        node: "reshape(%a) {shape=[5, -1]}",
        op: Op::Reshape { shape: vec![5, -1] },
        args: &["a"],
        needles: &["cannot infer the -1 dim: 24 elements into [5, -1]"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3, 4]",
        node: "reshape(%a) {shape=[-1, -1]}",
        op: Op::Reshape { shape: vec![-1, -1] },
        args: &["a"],
        needles: &["at most one -1"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3, 4]",
        node: "reshape(%a) {shape=[-2, 12]}",
        op: Op::Reshape { shape: vec![-2, 12] },
        args: &["a"],
        needles: &["invalid target dim -2"],
    }
    .check();
}

#[test]
fn transpose_with_a_non_permutation() {
    for perm in [vec![0, 0, 1], vec![0, 1], vec![0, 1, 3]] {
        let node = format!("transpose(%a) {{perm={perm:?}}}");
        Rule {
            sources: "  input %a: f32[2, 3, 4]",
            node: Box::leak(node.into_boxed_str()),
            op: Op::Transpose { perm: perm.clone() },
            args: &["a"],
            needles: &["is not a permutation of the 3 axes"],
        }
        .check();
    }
}

#[test]
fn dense_with_mismatched_features() {
    Rule {
        sources: "  input %a: f32[2, 10]\n  param %w: f32[5, 12]",
        node: "dense(%a, %w)",
        op: Op::Dense,
        args: &["a", "w"],
        needles: &["weight [O, I] must have I = 10", "got [5, 12]"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3, 4]\n  param %w: f32[5, 12]",
        node: "dense(%a, %w)",
        op: Op::Dense,
        args: &["a", "w"],
        needles: &["input must have rank 2, got [2, 3, 4]"],
    }
    .check();
    Rule {
        sources: "  input %a: f32[2, 3]\n  param %b: f32[4, 5]",
        node: "matmul(%a, %b)",
        op: Op::MatMul,
        args: &["a", "b"],
        needles: &["inner dimensions differ: 3 vs 4"],
    }
    .check();
}

#[test]
fn loss_with_a_wrong_target() {
    Rule {
        sources: "  input %z: f32[2, 5]\n  input %t: i32[3]",
        node: "cross_entropy_loss(%z, %t)",
        op: Op::Loss(LossKind::CrossEntropy),
        args: &["z", "t"],
        needles: &["target must be class ids i32[2] or probabilities f32[2, 5], got i32[3]"],
    }
    .check();
    Rule {
        sources: "  input %z: f32[2, 5]\n  input %t: f32[2, 4]",
        node: "nll_loss(%z, %t)",
        op: Op::Loss(LossKind::Nll),
        args: &["z", "t"],
        needles: &["got f32[2, 4]"],
    }
    .check();
    Rule {
        sources: "  input %z: f32[2, 5]\n  input %t: i32[2, 5]",
        node: "mse_loss(%z, %t)",
        op: Op::Loss(LossKind::Mse),
        args: &["z", "t"],
        needles: &["target must be f32 of the prediction's shape [2, 5], got i32[2, 5]"],
    }
    .check();
    Rule {
        sources: "  input %z: f32[2, 5, 1]\n  input %t: i32[2]",
        node: "cross_entropy_loss(%z, %t)",
        op: Op::Loss(LossKind::CrossEntropy),
        args: &["z", "t"],
        needles: &["prediction must be [N, K]"],
    }
    .check();
}

#[test]
fn pooling_padding_not_smaller_than_kernel() {
    let mut p = Pool2d::new(PoolKind::Max, [2, 2], [1, 1]);
    p.padding = Padding::Explicit([2, 0, 0, 0]);
    Rule {
        sources: "  input %x: f32[1, 4, 8, 8]",
        node: "max_pool2d(%x) {kernel=[2, 2], stride=[1, 1], padding=[2, 0, 0, 0]}",
        op: Op::Pool2d(p),
        args: &["x"],
        needles: &["padding (2, 0) on spatial axis 0 must be smaller than the kernel extent 2"],
    }
    .check();
}

#[test]
fn output_padding_not_smaller_than_stride() {
    Rule {
        sources: "  input %x: f32[1, 4, 3, 3]\n  param %w: f32[4, 2, 3, 3]",
        node: "conv_transpose2d(%x, %w) {stride=[2, 2], output_padding=[2, 0]}",
        op: deconv(|c| {
            c.stride = [2, 2];
            c.output_padding = [2, 0];
        }),
        args: &["x", "w"],
        needles: &["output_padding 2 must be smaller than stride 2 or dilation 1"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 4, 3, 3]\n  param %w: f32[4, 2, 1, 1]",
        node: "conv_transpose2d(%x, %w) {padding=[2, 2, 2, 2]}",
        op: deconv(|c| c.padding = [2; 4]),
        args: &["x", "w"],
        needles: &["padding 4 removes the whole output of size 3"],
    }
    .check();
}

#[test]
fn other_attribute_values_out_of_range() {
    Rule {
        sources: "  input %x: f32[2, 3]",
        node: "softmax(%x) {axis=2}",
        op: Op::Softmax { axis: 2 },
        args: &["x"],
        needles: &["axis 2 is out of range for rank 2 (allowed -2 to 1)"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[2, 3]",
        node: "dropout(%x) {ratio=1.0}",
        op: Op::Dropout { ratio: 1.0, seed: 0 },
        args: &["x"],
        needles: &["ratio must be in [0, 1), got 1"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[2, 3]",
        node: "batch_norm(%x, %x, %x, %x, %x) {epsilon=-1.0}",
        op: Op::BatchNorm {
            epsilon: -1.0,
            activation: None,
        },
        args: &["x", "x", "x", "x", "x"],
        needles: &["epsilon must be finite and non-negative"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[2, 3]",
        node: "leaky_relu(%x) {alpha=1e39}",
        op: Op::Activation(Activation::LeakyRelu { alpha: f32::INFINITY }),
        args: &["x"],
        needles: &["alpha must be finite, got inf"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[1, 2, 4, 4]",
        node: "adaptive_avg_pool2d(%x) {output=[0, 2]}",
        op: Op::AdaptivePool {
            kind: kiln_ir::ReduceKind::Avg,
            output: [0, 2],
        },
        args: &["x"],
        needles: &["output size must be at least 1"],
    }
    .check();
    Rule {
        sources: "  input %x: f32[2, 3]",
        node: "relu(%x, %x)",
        op: Op::Activation(Activation::Relu),
        args: &["x", "x"],
        needles: &["takes 1 inputs, got 2"],
    }
    .check();
}

#[test]
fn builder_errors_name_the_layer() {
    let mut net = Network::new("n");
    let x = net.input("x", [1, 3, 4, 4]).unwrap();
    let e = net
        .named("up")
        .conv_transpose2d(x, ConvTranspose::new(2, [3, 3]).stride(2).output_padding(2));
    assert_contains(
        &e.unwrap_err().to_string(),
        &["node `up`", "conv_transpose2d", "output_padding 2"],
    );
    let e = net.named("big").conv2d(x, Conv::new(2, [5, 5]));
    assert_contains(
        &e.unwrap_err().to_string(),
        &["node `big`", "kernel extent 5", "padded input 4"],
    );
    let e = net.named("s0").conv2d(x, Conv::new(2, [1, 1]).stride(0));
    assert_contains(
        &e.unwrap_err().to_string(),
        &["node `s0`", "stride must be at least 1"],
    );
    let e = net.reshape(x, &[7]).unwrap_err().to_string();
    assert_contains(&e, &["reshape", "cannot reshape 48 elements into [7]"]);
    let e = net.transpose(x, &[0, 1, 1, 2]).unwrap_err().to_string();
    assert_contains(&e, &["transpose", "not a permutation"]);
    let flat = net.flatten(x).unwrap();
    let e = net.dropout(flat, 1.5).unwrap_err().to_string();
    assert_contains(&e, &["dropout", "ratio must be in [0, 1)"]);
    // Names: duplicates and malformed names.
    assert_eq!(
        net.input("x", [1]).unwrap_err(),
        IrError::DuplicateName("x".into())
    );
    let e = net.input("1x", [1]).unwrap_err().to_string();
    assert_contains(&e, &["`1x` is not a valid node name"]);
    // A network without outputs.
    assert_eq!(net.finish().unwrap_err(), IrError::NoOutputs);
}

#[test]
fn graph_add_rejects_unknown_ids() {
    let mut a = Graph::new();
    let x = a.input("x", TensorType::f32([1, 2])).unwrap();
    let _ = a.input("y", TensorType::f32([1, 2])).unwrap();
    let mut b = Graph::new();
    b.input("only", TensorType::f32([1, 2])).unwrap();
    let stranger = a.find("y").unwrap();
    let e = b
        .add("r", Op::Activation(Activation::Relu), &[stranger])
        .unwrap_err();
    assert_contains(&e.to_string(), &["node `r`", "unknown node `#1`"]);
    assert!(b.mark_output(stranger).is_err());
    assert!(
        b.add("r", Op::Activation(Activation::Relu), &[x]).is_ok(),
        "id 0 exists in both"
    );
}

// ---------------------------------------------------------------------------------------------
// Text errors: the position of the offending token

#[test]
fn unknown_op_name() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = convolution(%x)\n  output %y\n}\n",
        3,
        8,
        &["unknown op `convolution`", "known ops: conv2d"],
    );
    // Source keywords are not ops.
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = input(%x)\n  output %y\n}\n",
        3,
        8,
        &["unknown op `input`"],
    );
}

#[test]
fn unknown_attribute() {
    fails_at(
        "graph g {\n  input %x: f32[1, 1, 4, 4]\n  %y = max_pool2d(%x) {kernel=[2, 2], stride=[2, 2], strides=[1, 1]}\n  output %y\n}\n",
        3,
        54,
        &["`max_pool2d` has no attribute `strides`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {alpha=0.2}\n  output %y\n}\n",
        3,
        18,
        &["`relu` has no attribute `alpha`"],
    );
    // count_include_pad belongs to average pooling only.
    fails_at(
        "graph g {\n  input %x: f32[1, 1, 4, 4]\n  %y = max_pool2d(%x) {kernel=[2, 2], stride=[2, 2],\n      count_include_pad=true}\n  output %y\n}\n",
        4,
        7,
        &["has no attribute `count_include_pad`"],
    );
}

#[test]
fn missing_required_attribute() {
    fails_at(
        "graph g {\n  input %x: f32[1, 1, 4, 4]\n  %y = avg_pool2d(%x) {stride=[2, 2]}\n  output %y\n}\n",
        3,
        8,
        &["missing attribute `kernel`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1, 1]\n  %y = concat(%x, %x)\n  output %y\n}\n",
        3,
        8,
        &["missing attribute `axis`"],
    );
    for (op, attr) in [
        ("reshape", "shape"),
        ("transpose", "perm"),
        ("adaptive_max_pool2d", "output"),
    ] {
        let src = format!("graph g {{\n  input %x: f32[1, 1, 2, 2]\n  %y = {op}(%x)\n  output %y\n}}\n");
        fails_at(&src, 3, 8, &[&format!("missing attribute `{attr}`")]);
    }
}

#[test]
fn attribute_of_the_wrong_kind() {
    let node = |attrs: &str| {
        format!(
            "graph g {{\n  input %x: f32[1, 2, 4, 4]\n  param %w: f32[2, 1, 3, 3]\n  %y = conv2d(%x, %w) {{{attrs}}}\n  output %y\n}}\n"
        )
    };
    // The column of the value: `  %y = conv2d(%x, %w) {` is 23 characters.
    fails_at(
        &node("groups=[2]"),
        4,
        31,
        &["attribute `groups` must be a non-negative integer, got [2]"],
    );
    fails_at(
        &node("groups=2.5"),
        4,
        31,
        &["attribute `groups` must be a non-negative integer, got `2.5`"],
    );
    fails_at(
        &node("groups=-2"),
        4,
        31,
        &["attribute `groups` must be a non-negative integer, got `-2`"],
    );
    fails_at(
        &node("stride=2"),
        4,
        31,
        &["attribute `stride` must be a list of 2 integers, got `2`"],
    );
    fails_at(
        &node("stride=[1, 1, 1]"),
        4,
        31,
        &["attribute `stride` must be a list of 2 integers, got [1, 1, 1]"],
    );
    fails_at(
        &node("stride=[1, -1]"),
        4,
        31,
        &["attribute `stride` must not be negative, got -1"],
    );
    fails_at(
        &node("padding=3"),
        4,
        32,
        &["attribute `padding` must be a list of 4 integers, got `3`"],
    );
    fails_at(
        &node("padding=sideways"),
        4,
        32,
        &[
            "attribute `padding` must be [top, left, bottom, right], valid, same_upper or same_lower, got `sideways`",
        ],
    );
    fails_at(
        &node("stride=[1, 1], groups=x"),
        4,
        46,
        &["attribute `groups` must be a non-negative integer, got `x`"],
    );
    let pool = |attrs: &str| {
        format!(
            "graph g {{\n  input %x: f32[1, 2, 4, 4]\n  %y = avg_pool2d(%x) {{kernel=[2, 2], stride=[2, 2], {attrs}}}\n  output %y\n}}\n"
        )
    };
    fails_at(
        &pool("ceil_mode=1"),
        3,
        64,
        &["attribute `ceil_mode` must be true or false, got `1`"],
    );
    fails_at(
        &pool("count_include_pad=yes"),
        3,
        72,
        &["attribute `count_include_pad` must be true or false, got `yes`"],
    );
    let act = |attrs: &str| {
        format!("graph g {{\n  input %x: f32[1]\n  %y = leaky_relu(%x) {{{attrs}}}\n  output %y\n}}\n")
    };
    fails_at(
        &act("alpha=true"),
        3,
        30,
        &["attribute `alpha` must be a number, got `true`"],
    );
    fails_at(
        &act("alpha=[1]"),
        3,
        30,
        &["attribute `alpha` must be a number, got [1]"],
    );
    let sm = |attrs: &str| {
        format!("graph g {{\n  input %x: f32[1]\n  %y = softmax(%x) {{{attrs}}}\n  output %y\n}}\n")
    };
    fails_at(
        &sm("axis=0.5"),
        3,
        26,
        &["attribute `axis` must be an integer, got `0.5`"],
    );
    let tr = |attrs: &str| {
        format!("graph g {{\n  input %x: f32[1]\n  %y = transpose(%x) {{{attrs}}}\n  output %y\n}}\n")
    };
    fails_at(
        &tr("perm=[-1]"),
        3,
        28,
        &["attribute `perm` must not be negative, got -1"],
    );
    let dr = |attrs: &str| {
        format!("graph g {{\n  input %x: f32[1]\n  %y = dropout(%x) {{{attrs}}}\n  output %y\n}}\n")
    };
    fails_at(
        &dr("seed=-1"),
        3,
        26,
        &["attribute `seed` must be a non-negative integer, got `-1`"],
    );
    // The same attribute twice: at its second name.
    fails_at(
        &dr("ratio=0.1, ratio=0.2"),
        3,
        32,
        &["attribute `ratio` given twice"],
    );
    // A list element that is not an integer: at that element.
    fails_at(&tr("perm=[0, 1.5]"), 3, 32, &["expected an integer, found `1.5`"]);
}

#[test]
fn unknown_node_reference() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = add(%x, %nope)\n  output %y\n}\n",
        3,
        16,
        &["unknown node `%nope`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  output %z\n}\n",
        3,
        10,
        &["unknown node `%z`"],
    );
}

#[test]
fn use_before_definition() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %a = relu(%b)\n  %b = relu(%x)\n  output %a\n}\n",
        3,
        13,
        &["unknown node `%b`", "defined before use"],
    );
    // A node cannot read itself.
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %a = relu(%a)\n  output %a\n}\n",
        3,
        13,
        &["unknown node `%a`"],
    );
}

#[test]
fn duplicate_node_name() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %x = relu(%x)\n  output %x\n}\n",
        3,
        3,
        &["node name `x` is used twice"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  param %x: f32[1]\n  output %x\n}\n",
        3,
        9,
        &["node name `x` is used twice"],
    );
}

#[test]
fn bad_node_name() {
    fails_at(
        "graph g {\n  input %1x: f32[1]\n  output %1x\n}\n",
        2,
        9,
        &["`1x` is not a valid node name"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %.y = relu(%x)\n  output %x\n}\n",
        3,
        3,
        &["`.y` is not a valid node name"],
    );
}

#[test]
fn declared_type_differs_from_inferred() {
    fails_at(
        "graph g {\n  input %x: f32[1, 4, 8, 8]\n  %y = relu(%x): f32[1, 4, 8, 9]\n  output %y\n}\n",
        3,
        18,
        &[
            "node `y`",
            "declared type f32[1, 4, 8, 9] differs from the inferred type f32[1, 4, 8, 8]",
        ],
    );
    fails_at(
        "graph g {\n  input %x: f32[2, 5]\n  %y = mse_loss(%x, %x): f32[1]\n  output %y\n}\n",
        3,
        26,
        &["declared type f32[1] differs from the inferred type f32[]"],
    );
}

#[test]
fn malformed_tokens() {
    fails_at(
        "graph g {\n  input %x: f32[1.2.3]\n}\n",
        2,
        17,
        &["`1.2.3` is not a number"],
    );
    fails_at(
        "graph g {\n  input % x: f32[1]\n}\n",
        2,
        9,
        &["expected a node name after `%`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  $y = relu(%x)\n}\n",
        3,
        3,
        &["unexpected character `$`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {alpha=1e}\n}\n",
        3,
        24,
        &["`1e` is not a number"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {alpha=-}\n}\n",
        3,
        24,
        &["`-` is not a number"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1, x]\n}\n",
        2,
        20,
        &["expected a dimension, found `x`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1 2]\n}\n",
        2,
        19,
        &["expected `,` or `]`, found number `2`"],
    );
    fails_at(
        "graph g {\n  input %x: f64[1]\n}\n",
        2,
        13,
        &["unknown element type `f64` (expected f32 or i32)"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1, -3]\n}\n",
        2,
        20,
        &["dimension -3 is negative"],
    );
    fails_at(
        "graph g {\n  input %x: f32[99999999999999999999]\n}\n",
        2,
        17,
        &["expected a dimension (an integer from 0 to 18446744073709551615), found `99999999999999999999`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[2.5]\n}\n",
        2,
        17,
        &["expected a dimension", "found `2.5`"],
    );
    fails_at(
        "graph g {\n  input %x f32[1]\n}\n",
        2,
        12,
        &["expected `:`, found `f32`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y relu(%x)\n}\n",
        3,
        6,
        &["expected `=`, found `relu`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x %x)\n}\n",
        3,
        16,
        &["expected `,` or `)`, found `%x`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {axis 1}\n}\n",
        3,
        23,
        &["expected `=`, found number `1`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {a=(}\n}\n",
        3,
        20,
        &["expected an attribute value, found `(`"],
    );
    fails_at(
        "graph g {\n  relu %x\n}\n",
        2,
        3,
        &["expected `input`, `param`, `buffer`, `output`, `%name = …` or `}`, found `relu`"],
    );
    fails_at("graph {\n}\n", 1, 7, &["expected the graph's name, found `{`"]);
    fails_at(
        "  # a comment first\n  model g {}\n",
        2,
        3,
        &["expected `graph`, found `model`"],
    );
}

#[test]
fn missing_closing_brace() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  output %x\n",
        4,
        1,
        &["expected `input`, `param`, `buffer`, `output`, `%name = …` or `}`, found end of file"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x) {alpha=0.1",
        3,
        27,
        &["expected `,` or `}`, found end of file"],
    );
}

#[test]
fn trailing_garbage() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  output %x\n}\n}\n",
        5,
        1,
        &["expected end of file after the graph's `}`, found `}`"],
    );
    fails_at(
        "graph g {\n  input %x: f32[1]\n  output %x\n} graph h {}\n",
        4,
        3,
        &["expected end of file", "found `graph`"],
    );
    // Comments after the graph are fine.
    assert!(text::parse("graph g {\n  input %x: f32[1]\n  output %x\n}\n# the end\n").is_ok());
}

#[test]
fn empty_file() {
    fails_at("", 1, 1, &["expected `graph`, found end of file"]);
    fails_at(
        "\n\n   # only a comment\n",
        4,
        1,
        &["expected `graph`, found end of file"],
    );
}

#[test]
fn no_output() {
    fails_at(
        "graph g {\n  input %x: f32[1]\n  %y = relu(%x)\n}\n",
        4,
        1,
        &["graph `g` declares no `output`"],
    );
    fails_at("graph empty {}", 1, 14, &["graph `empty` declares no `output`"]);
}

#[test]
fn invalid_utf8() {
    let bytes = b"graph g {\n  input %x: f32[1]\n  %\xff\xfey = relu(%x)\n}\n";
    let src = String::from_utf8_lossy(bytes);
    // `%` followed by no name characters, at the `%`.
    fails_at(&src, 3, 3, &["expected a node name after `%`"]);
    let bytes = b"graph g {\n  input %x: f32[1]\n  \xc3\x28 %y = relu(%x)\n}\n";
    let src = String::from_utf8_lossy(bytes);
    fails_at(&src, 3, 3, &["unexpected character `\u{fffd}`"]);
    // Columns count characters, not bytes: `é` is one column.
    fails_at(
        "graph g {\n  input %é: f32[1]\n}\n",
        2,
        9,
        &["expected a node name after `%`"],
    );
    fails_at(
        "graph g { # é\n  input %x: f32[1] é\n}\n",
        2,
        20,
        &["unexpected character `é`"],
    );
    // Invalid UTF-8 inside a comment is harmless.
    let bytes = b"graph g { # \xff\xff\n  input %x: f32[1]\n  output %x\n}\n";
    assert!(text::parse(&String::from_utf8_lossy(bytes)).is_ok());
}

#[test]
fn errors_name_the_file() {
    let e = parse_named("graph g {", "models/broken.kiln").unwrap_err();
    assert_eq!(e.file, "models/broken.kiln");
    assert_eq!((e.line, e.column), (1, 10));
    assert!(e.to_string().starts_with("models/broken.kiln:1:10: "), "{e}");
    assert!(
        text::parse("")
            .unwrap_err()
            .to_string()
            .starts_with("<text>:1:1: ")
    );
}
