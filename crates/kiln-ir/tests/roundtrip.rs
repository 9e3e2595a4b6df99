//! The text IR round-trips: `parse(print(g)) == g` and printing again gives the same text, for
//! random valid graphs (the generator of `kiln_ir::random`, shared with the fuzz targets) and
//! for hand-written snippets that use every op name and every attribute form.

use kiln_ir::random::graph_from_bytes;
use kiln_ir::text::{self, OP_NAMES};
use kiln_ir::{Activation, Graph, Op, Padding, PoolKind};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The proptest strategy of random valid graphs: bytes decoded by `graph_from_bytes`, so a
/// failing case shrinks by shrinking its bytes.
fn graphs() -> impl Strategy<Value = Graph> {
    proptest::collection::vec(any::<u8>(), 0..400).prop_map(|b| graph_from_bytes(&b))
}

fn assert_roundtrip(g: &Graph) -> String {
    let s = text::print(g);
    let back = text::parse(&s).unwrap_or_else(|e| panic!("{e}\n--- printed text ---\n{s}"));
    assert_eq!(&back, g, "parsed graph differs from the printed one:\n{s}");
    assert_eq!(
        text::print(&back),
        s,
        "printing the parsed graph gives other text"
    );
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_roundtrip(g in graphs()) {
        assert_roundtrip(&g);
    }

    /// Float attributes print as the shortest text that parses back to the same `f32`.
    #[test]
    fn float_attributes_roundtrip(alpha in any::<f32>(), eps in any::<f32>(), ratio in 0f32..1.0, seed in any::<u64>()) {
        prop_assume!(alpha.is_finite() && eps.is_finite());
        let src = format!(
            "graph f {{\n  input %x: f32[1, 2, 3, 3]\n  param %s: f32[2]\n  buffer %m: f32[2]\n\
               %a = leaky_relu(%x) {{alpha={:?}}}\n\
               %b = batch_norm(%a, %s, %s, %m, %m) {{epsilon={:?}}}\n\
               %c = dropout(%b) {{ratio={:?}, seed={}}}\n\
               %d = batch_norm(%c, %s, %s, %m, %m) {{epsilon={:?}, activation=leaky_relu, alpha={:?}}}\n  output %d\n}}\n",
            alpha, eps.abs(), ratio, seed, eps.abs(), alpha
        );
        let g = text::parse(&src).unwrap();
        assert_roundtrip(&g);
        let op = |n: &str| g.node(g.find(n).unwrap()).op.clone();
        prop_assert_eq!(op("a"), Op::Activation(Activation::LeakyRelu { alpha }));
        prop_assert_eq!(op("b"), Op::BatchNorm { epsilon: eps.abs(), activation: None });
        prop_assert_eq!(op("c"), Op::Dropout { ratio, seed });
        prop_assert_eq!(
            op("d"),
            Op::BatchNorm { epsilon: eps.abs(), activation: Some(Activation::LeakyRelu { alpha }) }
        );
    }
}

#[test]
fn decoding_is_deterministic_and_total() {
    for bytes in [&[][..], &[0; 64], &[255; 64], &[7, 200, 13, 99, 1, 0, 255, 128]] {
        let g = graph_from_bytes(bytes);
        assert_eq!(g, graph_from_bytes(bytes));
        assert!(!g.outputs().is_empty());
        assert!(g.len() >= 2, "an input and at least one computed node");
        assert_roundtrip(&g);
    }
}

/// A small deterministic byte stream (xorshift), so the coverage check needs no proptest.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The generator reaches every op and every attribute form, so the round-trip property (and
/// the fuzz target built on the same generator) exercises all of them.
#[test]
fn generator_covers_every_op_and_attribute_form() {
    let mut ops = BTreeSet::new();
    let mut forms = BTreeSet::new();
    let mut max_nodes = 0;
    for seed in 0..3000 {
        let g = graph_from_bytes(&bytes(seed, 300));
        max_nodes = max_nodes.max(g.len());
        for id in g.topo_order() {
            let n = g.node(id);
            ops.insert(n.op.name());
            let inputs = g.inputs(id);
            let ty = |i: usize| &g.node(inputs[i]).ty;
            let mut form = |cond: bool, name: &'static str| {
                if cond {
                    forms.insert(name);
                }
            };
            match &n.op {
                Op::Conv2d(c) => {
                    let ch = ty(0).dims()[1];
                    form(c.groups == ch && ch > 1, "depthwise");
                    form(c.groups > 1 && c.groups < ch, "grouped");
                    form(c.stride[0] != c.stride[1], "anisotropic stride");
                    form(c.dilation != [1, 1], "dilated conv");
                    form(inputs.len() == 3, "conv bias");
                    form(
                        matches!(c.padding, Padding::Explicit(p) if p[0] != p[2]),
                        "asymmetric padding",
                    );
                    form(c.padding == Padding::Valid, "valid");
                    form(c.padding == Padding::SameUpper, "same_upper");
                    form(c.padding == Padding::SameLower, "same_lower");
                }
                Op::ConvTranspose2d(c) => {
                    form(c.output_padding != [0, 0], "output_padding");
                    form(c.groups > 1, "grouped conv_transpose");
                    form(c.stride != [1, 1], "strided conv_transpose");
                    form(c.padding != [0; 4], "conv_transpose padding");
                }
                Op::Pool2d(p) => {
                    form(p.ceil_mode, "ceil_mode");
                    form(
                        p.kind
                            == PoolKind::Avg {
                                count_include_pad: true,
                            },
                        "count_include_pad",
                    );
                    form(p.kernel[0] > p.stride[0], "overlapping windows");
                    form(p.padding == Padding::SameLower, "pool same_lower");
                    form(
                        matches!(p.padding, Padding::Explicit(q) if q != [0; 4]),
                        "pool padding",
                    );
                    form(p.dilation != [1, 1], "dilated pool");
                }
                Op::Activation(Activation::LeakyRelu { alpha }) => form(*alpha < 0.0, "negative alpha"),
                Op::Softmax { axis } | Op::LogSoftmax { axis } => form(*axis < 0, "negative softmax axis"),
                Op::Concat { axis } => {
                    form(*axis < 0, "negative concat axis");
                    form(inputs.len() >= 3, "concat of 3+");
                }
                Op::Reshape { shape } => {
                    form(shape.contains(&-1), "reshape -1");
                    form(shape.contains(&0), "reshape 0");
                }
                Op::Dropout { seed, .. } => form(*seed != 0, "dropout seed"),
                Op::Loss(_) => {
                    form(ty(1).dtype == kiln_ir::DType::I32, "i32 target");
                    form(ty(1).dtype == kiln_ir::DType::F32, "f32 target");
                }
                Op::Binary(_) => {
                    form(ty(0).shape != ty(1).shape, "broadcast");
                    form(inputs[0] != inputs[1] && ty(0).shape == ty(1).shape, "residual");
                }
                Op::MatMul => form(ty(0).rank() > 2 || ty(1).rank() > 2, "batched matmul"),
                _ => {}
            }
            form(
                n.name.contains('.') && n.op.source_type().is_none(),
                "dotted node name",
            );
        }
        form_multi_output(&g, &mut forms);
    }
    let missing: Vec<_> = OP_NAMES.iter().filter(|o| !ops.contains(**o)).collect();
    assert!(missing.is_empty(), "the generator never made {missing:?}");
    for o in ["input", "param", "buffer"] {
        assert!(ops.contains(o), "the generator never made {o}");
    }
    let want = [
        "depthwise",
        "grouped",
        "anisotropic stride",
        "dilated conv",
        "conv bias",
        "asymmetric padding",
        "valid",
        "same_upper",
        "same_lower",
        "output_padding",
        "grouped conv_transpose",
        "strided conv_transpose",
        "conv_transpose padding",
        "ceil_mode",
        "count_include_pad",
        "overlapping windows",
        "pool same_lower",
        "pool padding",
        "dilated pool",
        "negative alpha",
        "negative softmax axis",
        "negative concat axis",
        "concat of 3+",
        "reshape -1",
        "reshape 0",
        "dropout seed",
        "i32 target",
        "f32 target",
        "broadcast",
        "residual",
        "batched matmul",
        "dotted node name",
        "several outputs",
    ];
    let missing: Vec<_> = want.iter().filter(|f| !forms.contains(**f)).collect();
    assert!(missing.is_empty(), "the generator never made {missing:?}");
    assert!(max_nodes <= 200, "graphs stay small, got {max_nodes} nodes");
}

fn form_multi_output(g: &Graph, forms: &mut BTreeSet<&'static str>) {
    if g.outputs().len() > 1 {
        forms.insert("several outputs");
    }
}

/// Every value the generator makes stays within its size bounds.
#[test]
fn generated_shapes_stay_small() {
    for seed in 0..1000 {
        let g = graph_from_bytes(&bytes(seed, 300));
        for id in g.topo_order() {
            let n = g.node(id);
            if n.op.source_type().is_some() {
                continue;
            }
            let t = &n.ty;
            assert!(
                t.shape.numel() <= kiln_ir::random::MAX_ELEMENTS,
                "{}: {t}",
                n.name
            );
            if t.rank() >= 3 {
                assert!(t.dims().iter().all(|&d| d <= 9), "{}: {t}", n.name);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written snippets

/// Parses `src`, checks the round trip, and returns the graph.
fn parse_rt(src: &str) -> Graph {
    let g = text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    assert_roundtrip(&g);
    g
}

#[test]
fn every_op_name_and_attribute_form_parses_and_roundtrips() {
    let src = r#"
# A graph that uses every op of the text IR.
# Comments and blank lines are ignored.

graph every_op {
  input %x: f32[2, 4, 8, 8]      # trailing comment
  input %labels: i32[2]
  input %probs: f32[2, 5]
  param %w: f32[6, 4, 3, 3]
  param %b: f32[6]
  param %wg: f32[6, 2, 3, 3]
  param %wd: f32[4, 1, 3, 3]
  param %wt: f32[6, 2, 2, 2]
  buffer %mean: f32[6]
  buffer %var: f32[6]
  param %fc.weight: f32[5, 54]
  param %fc.bias: f32[5]
  param %w2d: f32[6, 36]
  param %wg2d: f32[6, 18]
  input %c1r: f32[2, 6, 28]

  %c1 = conv2d(%x, %w, %b) {padding=[1, 2, 0, 1], stride=[2, 1], dilation=[1, 2]}: f32[2, 6, 4, 7]
  %c2 = conv2d(%x, %w) {padding=valid}: f32[2, 6, 6, 6]
  %c3 = conv2d(%x, %wg) {padding=same_upper, stride=[2, 2], groups=2}
  %c4 = conv2d(%x, %wd) {padding=same_lower, groups=4}
  %c5 = conv2d(%x, %w) {padding=same}
  %ic = im2col(%x) {kernel=[3, 3], stride=[2, 1], dilation=[1, 2], padding=[1, 2, 0, 1]}: f32[2, 36, 28]
  %gm = gemm(%w2d, %ic, %b, %c1r) {bias=true, residual=true, activation=leaky_relu, alpha=0.5}: f32[2, 6, 28]
  %gg = gemm(%wg2d, %ic) {groups=2}: f32[2, 6, 28]
  %rsq = rsqrt(%var) {epsilon=0.001}: f32[6]
  %t1 = conv_transpose2d(%c2, %wt, %b) {stride=[2, 2], padding=[1, 1, 0, 0], output_padding=[1, 0], groups=3}
  %t2 = conv_transpose2d(%c2, %wt) {dilation=[2, 1], groups=3}
  %p1 = max_pool2d(%c2) {kernel=[3, 3], stride=[2, 2], ceil_mode=true}
  %p2 = avg_pool2d(%c2) {kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1], count_include_pad=true}
  %p3 = avg_pool2d(%c2) {kernel=[2, 2], stride=[2, 2], count_include_pad=false, ceil_mode=false}
  %p4 = sum_pool2d(%c2) {kernel=[2, 3], stride=[1, 2], dilation=[2, 1], padding=same_upper}
  %p5 = max_pool2d(%c2) {kernel=[2, 2], stride=[2, 2], padding=valid}
  %g1 = global_max_pool(%c2)
  %g2 = global_avg_pool(%c2)
  %a1 = adaptive_max_pool2d(%c2) {output=[2, 3]}
  %a2 = adaptive_avg_pool2d(%c2) {output=[1, 1]}
  %r1 = relu(%p1)
  %r2 = leaky_relu(%r1) {alpha=0.2}
  %r3 = leaky_relu(%r2)
  %r4 = sigmoid(%r3)
  %r5 = tanh(%r4)
  %r6 = clip(%r5) {min=0.0, max=6.0}
  %r7 = clip(%r6) {min=-inf}
  %r8 = clip(%r7) {max=0.5}
  %r9 = hard_sigmoid(%r8) {alpha=0.16666667, beta=0.5}
  %r10 = hard_sigmoid(%r9)
  %r11 = erf(%r10)
  %lr = lrn(%r11) {size=5, alpha=0.0001, beta=0.75, bias=2.0}
  %lr2 = lrn(%lr) {size=2}
  %bn = batch_norm(%lr2, %b, %b, %mean, %var) {epsilon=1e-05}
  %rm = reduce_mean(%bn) {axes=[1, 3]}: f32[2, 1, 3, 1]
  %rm2 = reduce_mean(%bn) {axes=[0, 1, 2, 3], keepdims=false}: f32[]
  %cga = conv2d(%x, %w) {activation=clip, min=0.0, max=6.0}
  %cgb = conv2d(%x, %w) {activation=hard_sigmoid, alpha=0.2, beta=0.5}
  %gme = gemm(%wg2d, %ic) {groups=2, activation=erf}: f32[2, 6, 28]
  %d1 = dropout(%bn) {ratio=0.25, seed=42}
  %d2 = dropout(%d1)
  %s1 = softmax(%d2) {axis=1}
  %s2 = log_softmax(%d2) {axis=-3}
  %f1 = flatten(%s1): f32[2, 54]
  %f2 = flatten(%s2) {axis=-1}
  %fc = dense(%f1, %fc.weight, %fc.bias)
  %fc2 = dense(%f1, %fc.weight)
  %mm = matmul(%s1, %s2)
  %rs = reshape(%f1) {shape=[0, -1, 3]}
  %tr = transpose(%rs) {perm=[2, 0, 1]}
  %ad = add(%c2, %b.col)
  %sb = sub(%a1, %a1)
  %ml = mul(%g1, %g2)
  %dv = div(%fc, %fc2)
  %cat = concat(%c1, %c1) {axis=-3}
  %cat1 = concat(%g1, %g2, %g1) {axis=1}
  %lsm = log_softmax(%fc) {axis=-1}
  %l1 = mse_loss(%fc, %probs)
  %l2 = cross_entropy_loss(%fc, %labels)
  %l3 = cross_entropy_loss(%fc, %probs)
  %l4 = nll_loss(%lsm, %labels)
  output %l1
  output %l2
  output %l3
  output %l4
  output %c3
  output %c4
  output %c5
  output %t1
  output %t2
  output %p2
  output %p3
  output %p4
  output %p5
  output %f2
  output %mm
  output %tr
  output %ad
  output %sb
  output %ml
  output %dv
  output %cat
  output %cat1
  output %gm
  output %gg
  output %rsq
  output %rm
  output %rm2
  output %cga
  output %cgb
  output %gme
}
"#;
    // `%b.col` does not exist yet: add a [6, 1, 1] weight to make `add` broadcast.
    let src = src.replace("  buffer %mean", "  param %b.col: f32[6, 1, 1]\n  buffer %mean");
    let g = parse_rt(&src);
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for id in g.topo_order() {
        names.insert(g.node(id).op.name());
    }
    for op in OP_NAMES {
        assert!(names.contains(op), "snippet misses `{op}`");
    }
    let ty = |n: &str| g.node(g.find(n).unwrap()).ty.to_string();
    assert_eq!(ty("c3"), "f32[2, 6, 4, 4]");
    assert_eq!(ty("c4"), "f32[2, 4, 8, 8]");
    assert_eq!(ty("t1"), "f32[2, 6, 12, 11]");
    assert_eq!(ty("p1"), "f32[2, 6, 3, 3]");
    assert_eq!(ty("rs"), "f32[2, 18, 3]");
    assert_eq!(ty("tr"), "f32[3, 2, 18]");
    assert_eq!(ty("mm"), "f32[2, 6, 3, 3]");
    assert_eq!(ty("cat"), "f32[2, 12, 4, 7]");
    assert_eq!(ty("l4"), "f32[]");
}

#[test]
fn printer_normalizes_defaults_and_spelling() {
    // `same` is `same_upper`; default attributes disappear; `+3` and `3` are the same number.
    let g = parse_rt(
        "graph n {\n input %x: f32[1, 1, 4, 4]\n param %w: f32[1, 1, 3, 3]\n\
         %y = conv2d(%x, %w) {padding=same, stride=[+1, 1], dilation=[1, 1], groups=1}\n\
         %z = flatten(%y) {axis=1}\n output %z\n}",
    );
    let s = text::print(&g);
    assert!(
        s.contains("%y = conv2d(%x, %w) {padding=same_upper}: f32[1, 1, 4, 4]"),
        "{s}"
    );
    assert!(s.contains("%z = flatten(%y): f32[1, 16]"), "{s}");
}

#[test]
fn attribute_order_and_spacing_do_not_matter() {
    let a = parse_rt(
        "graph g{input %x:f32[1,2,5,5] %p=max_pool2d(%x){stride=[1,1],kernel=[2,2],ceil_mode=true}output %p}",
    );
    let b = parse_rt(
        "graph g {\n\n  input %x : f32 [ 1 , 2 , 5 , 5 ]\n  %p = max_pool2d ( %x ) { kernel = [2, 2] ,\n stride = [1, 1], ceil_mode = true } : f32[1, 2, 4, 4]\n  output %p\n}\n",
    );
    assert_eq!(a, b);
}

#[test]
fn empty_attribute_braces_and_concat_of_one() {
    let g = parse_rt(
        "graph g {\n input %x: f32[2, 3]\n %r = relu(%x) {}\n %c = concat(%r) {axis=0}\n output %c\n}\n",
    );
    assert_eq!(g.len(), 3);
}

#[test]
fn scalars_and_empty_lists() {
    // Rank-0 values and an empty permutation round-trip.
    let g = parse_rt(
        "graph g {\n input %s: f32[]\n %t = transpose(%s) {perm=[]}\n %r = reshape(%t) {shape=[1, 1]}\n\
         %f = flatten(%s) {axis=0}\n output %r\n output %f\n}\n",
    );
    assert_eq!(g.node(g.find("f").unwrap()).ty.to_string(), "f32[1, 1]");
}

#[test]
fn leaky_relu_with_default_alpha_prints_it() {
    let g = parse_rt("graph g {\n input %x: f32[1]\n %y = leaky_relu(%x)\n output %y\n}\n");
    let id = g.find("y").unwrap();
    assert_eq!(
        g.node(id).op,
        Op::Activation(Activation::LeakyRelu { alpha: 0.01 })
    );
    assert!(text::print(&g).contains("leaky_relu(%x) {alpha=0.01}"));
}

// ---------------------------------------------------------------------------------------------
// Extreme mode: hostile dims and attributes (see `kiln_ir::random`'s module docs)

use kiln_ir::random::{Mode, graph_from_bytes_with};

/// What the `random_graph` fuzz target checks of an extreme graph: the generator returns a
/// clean `Err` (the graph's refusal), or a graph that verifies, round-trips and summarizes.
fn check_extreme(bytes: &[u8]) -> Result<Graph, String> {
    match graph_from_bytes_with(bytes, Mode::Extreme) {
        Ok(g) => {
            g.verify().unwrap_or_else(|e| panic!("{e}\n{}", text::print(&g)));
            assert!(!g.outputs().is_empty());
            assert_roundtrip(&g);
            let _ = kiln_ir::summary::summarize(&g).to_string();
            Ok(g)
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            Err(msg)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn extreme_graphs_are_valid_or_clean_errors(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = check_extreme(&b);
    }
}

/// Normal mode through `graph_from_bytes_with` is `graph_from_bytes`, and never an `Err`.
#[test]
fn normal_mode_is_the_plain_generator() {
    for seed in 0..300 {
        let b = bytes(seed, 300);
        assert_eq!(
            graph_from_bytes_with(&b, Mode::Normal).unwrap(),
            graph_from_bytes(&b)
        );
    }
}

/// Extreme mode makes both refused and accepted graphs, and accepted ones with extreme
/// attributes in them (so the round trip and the summary see them).
#[test]
fn extreme_mode_makes_errors_and_graphs_with_extreme_values() {
    let (mut ok, mut err, mut big_attr, mut big_value) = (0, 0, 0, 0);
    for seed in 0..1500 {
        match check_extreme(&bytes(seed, 300)) {
            Ok(g) => {
                ok += 1;
                let s = text::print(&g);
                if ["2147483647", "2147483648", "4294967296", "9223372036854775807"]
                    .iter()
                    .any(|n| s.contains(&format!("{n}]")) || s.contains(&format!("{n},")))
                {
                    big_attr += 1;
                }
                if g.topo_order()
                    .iter()
                    .any(|&n| g.node(n).ty.shape.numel() > 1 << 20)
                {
                    big_value += 1;
                }
            }
            Err(_) => err += 1,
        }
    }
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
    assert!(big_attr > 3, "{big_attr} graphs with an extreme attribute or dim");
    assert!(
        big_value > 0,
        "{big_value} graphs with a value above 2^20 elements"
    );
}
