//! Extreme but valid graphs through the JIT and the interpreter (they must agree), and bad data
//! read at run time (both engines must refuse it alike). Hostile graphs compiled and run alone
//! (limits, code size, API misuse) are in `crates/kiln-runtime/tests/hostile.rs`.

use kiln_ir::{Conv2d, Graph, Op, Padding, Tensor, TensorType, TrainOp, Value, text};
use kiln_runtime::check::jit_matches_interpreter;
use std::collections::HashMap;

#[track_caller]
fn agree(g: &Graph) {
    for seed in [1, 2] {
        if let Err(e) = jit_matches_interpreter(g, seed) {
            panic!("{e}");
        }
    }
}

#[track_caller]
fn agree_text(src: &str) {
    agree(&text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}")));
}

/// Adaptive pooling is a loop over the output grid with run-time windows: a 256×256 output
/// of an 8×8 input (once 65536 unrolled windows and an abort while compiling) and windows
/// that do not divide evenly.
#[test]
fn adaptive_pooling_over_any_output_grid() {
    for (kind, h, w, oh, ow) in [
        ("avg", 8, 8, 256, 256),
        ("max", 8, 8, 256, 3),
        ("avg", 7, 5, 3, 4),
        ("max", 7, 5, 10, 13),
        ("avg", 1, 9, 1, 2),
    ] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[2, 3, {h}, {w}]
  %y = adaptive_{kind}_pool2d(%x) {{output=[{oh}, {ow}]}}
  output %y
}}"
        ));
    }
}

/// A blocked convolution (output channels in fours) with a padded input and an output width
/// that is not a multiple of 4 runs its last columns as a partial block over a scratch copy.
/// With a huge stride that block once gathered its unused lanes `stride` elements apart, far
/// outside the arena.
#[test]
fn blocked_convolution_with_a_huge_stride() {
    for stride in ["2", "1000", "2147483648"] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[1, 2, 3, 7]
  param %w: f32[4, 2, 3, 3]
  %y = conv2d(%x, %w) {{stride=[1, {stride}], padding=[1, 1, 1, 1]}}
  output %y
}}"
        ));
    }
}

/// Kernels wider than the unroll bound take the loop over their column taps.
#[test]
fn blocked_convolution_with_a_wide_kernel() {
    for (stride, pad) in [(1, "[1, 2, 1, 3]"), (2, "[0, 0, 0, 0]"), (1, "[0, 0, 0, 0]")] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[1, 2, 3, 41]
  param %w: f32[8, 2, 3, 20]
  param %b: f32[8]
  %y = conv2d(%x, %w, %b) {{stride=[1, {stride}], padding={pad}}}
  output %y
}}"
        ));
    }
}

/// `conv2d_weight_grad` of a kernel above the unroll bound (loops over its taps, valid output
/// ranges computed at run time), with strides, dilations and padding.
#[test]
fn conv_weight_grad_of_a_big_kernel() {
    for (kernel, stride, dilation, pad, groups) in [
        ([9, 9], [1, 1], [1, 1], [0, 0, 0, 0], 1),
        ([9, 9], [2, 1], [1, 2], [3, 2, 1, 4], 1),
        ([3, 30], [1, 3], [2, 1], [2, 5, 0, 7], 2),
    ] {
        let x = TensorType::f32([2, 4, 12, 40]);
        let conv = Conv2d {
            stride,
            dilation,
            padding: Padding::Explicit(pad),
            groups,
            activation: None,
        };
        // dy's type: the convolution's output
        let mut fwd = Graph::new();
        let xi = fwd.input("x", x.clone()).unwrap();
        let w = fwd
            .param("w", TensorType::f32([6, 4 / groups, kernel[0], kernel[1]]))
            .unwrap();
        let y = fwd.add("y", Op::Conv2d(conv.clone()), &[xi, w]).unwrap();
        let dy = fwd.node(y).ty.clone();
        let mut g = Graph::new();
        let xi = g.input("x", x).unwrap();
        let di = g.input("dy", dy).unwrap();
        let dw = g
            .add(
                "dw",
                Op::Train(TrainOp::ConvWeightGrad { conv, kernel }),
                &[xi, di],
            )
            .unwrap();
        g.mark_output(dw).unwrap();
        agree(&g);
    }
}

/// `dilate_pad2d` with crops, pads and strides that put some or all input elements outside.
#[test]
fn dilate_pad_with_crops() {
    for (stride, pad) in [
        ("[3, 2]", "[-2, 1, 0, -3]"),
        ("[50, 1]", "[-40, 0, 0, 0]"),
        ("[1, 1]", "[-3, 0, 2, 0]"),
        ("[7, 7]", "[0, -6, 0, -6]"),
    ] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[1, 2, 3, 3]
  %y = dilate_pad2d(%x) {{stride={stride}, padding={pad}}}
  output %y
}}"
        ));
    }
}

/// Max-pool backward scattering by ids that are outside the plane: the interpreter and the
/// JIT refuse them with the same error (the first bad position), on one thread or two.
#[test]
fn scatter_ids_outside_the_plane_fail_alike() {
    let g = text::parse(
        "graph g {
  input %dy: f32[2, 2, 2, 2]
  input %ids: i32[2, 2, 2, 2]
  %dx = scatter_ids2d(%dy, %ids) {size=[2, 3]}
  output %dx
}",
    )
    .unwrap();
    let feeds = |ids: Vec<i32>| {
        HashMap::from([
            ("dy".to_string(), Value::F(Tensor::full([2, 2, 2, 2], 1.5f32))),
            (
                "ids".to_string(),
                Value::I(Tensor::new([2, 2, 2, 2], ids).unwrap()),
            ),
        ])
    };
    let weights = HashMap::new();
    for threads in [1, 2] {
        let options = kiln_jit::JitOptions {
            threads,
            ..Default::default()
        };
        let m = kiln_runtime::compile(&g, &options).unwrap();
        for bad in [6, -1, i32::MAX, i32::MIN] {
            let mut ids: Vec<i32> = (0..16).map(|i| i % 6).collect();
            ids[11] = bad;
            ids[13] = 7;
            let f = feeds(ids);
            let want = kiln_interp::run::<f32>(&g, &f, &weights).unwrap_err().to_string();
            let got = m.run(&f).unwrap_err().to_string();
            assert_eq!(got, want);
            assert!(got.contains(&format!("id {bad} at position 11")), "{got}");
        }
        // good ids: the same gradients
        let f = feeds((0..16).map(|i| (i * 5) % 6).collect());
        let want = kiln_interp::run::<f32>(&g, &f, &weights).unwrap();
        let got = m.run(&f).unwrap();
        assert_eq!(got[0].1.as_f().unwrap().data(), want[0].1.as_f().unwrap().data());
    }
}

/// Values with a zero dim (which the limits allow): whatever shape inference accepts, the
/// engines agree and nothing divides by a zero dim.
#[test]
fn zero_sized_values() {
    let cases = [
        ("f32[1, 1, 4, 4]", "adaptive_avg_pool2d(%x) {output=[0, 3]}"),
        ("f32[1, 1, 4, 4]", "adaptive_max_pool2d(%x) {output=[2, 0]}"),
        ("f32[0, 2, 4, 4]", "adaptive_max_pool2d(%x) {output=[2, 2]}"),
        ("f32[1, 0, 4, 4]", "adaptive_avg_pool2d(%x) {output=[3, 2]}"),
        ("f32[1, 2, 0, 4]", "adaptive_avg_pool2d(%x) {output=[3, 2]}"),
        ("f32[1, 2, 0, 4]", "global_max_pool(%x)"),
        ("f32[1, 2, 0, 0]", "global_avg_pool(%x)"),
        ("f32[0, 2, 5, 5]", "max_pool2d(%x) {kernel=[2, 2]}"),
        ("f32[1, 0, 5, 5]", "avg_pool2d(%x) {kernel=[2, 2]}"),
        ("f32[2, 0, 3]", "softmax(%x) {axis=1}"),
        ("f32[2, 3, 0]", "log_softmax(%x) {axis=1}"),
        ("f32[0, 3]", "relu(%x)"),
        ("f32[2, 0, 3]", "transpose(%x) {perm=[2, 0, 1]}"),
    ];
    for (ty, op) in cases {
        let src = format!("graph g {{\n  input %x: {ty}\n  %y = {op}\n  output %y\n}}");
        if let Ok(g) = text::parse(&src) {
            eprintln!("accepted: {op} on {ty}");
            agree(&g);
        }
    }
    let convs = [
        ("f32[0, 1, 5, 5]", "f32[4, 1, 3, 3]", "{padding=[1, 1, 1, 1]}"),
        ("f32[1, 4, 5, 5]", "f32[0, 4, 3, 3]", "{padding=[1, 1, 1, 1]}"),
        ("f32[1, 0, 5, 5]", "f32[4, 0, 3, 3]", "{padding=[1, 1, 1, 1]}"),
        ("f32[1, 1, 5, 5]", "f32[5, 1, 3, 3]", "{stride=[2147483648, 1]}"),
        ("f32[2, 0]", "f32[4, 0]", ""),
    ];
    for (x, w, attrs) in convs {
        let op = if x.matches(',').count() == 1 {
            "dense"
        } else {
            "conv2d"
        };
        let src = format!(
            "graph g {{\n  input %x: {x}\n  param %w: {w}\n  %y = {op}(%x, %w) {attrs}\n  output %y\n}}"
        );
        if let Ok(g) = text::parse(&src) {
            eprintln!("accepted: {op} {x} {w} {attrs}");
            agree(&g);
        }
    }
}

/// Attributes at the limits (strides and dilations of 2³¹ where only one window fits, a huge
/// padding that is all outside): the engines agree.
#[test]
fn attributes_at_the_limits() {
    let big = "2147483648";
    let cases = [
        (
            "f32[1, 2, 3, 3]",
            "",
            format!("max_pool2d(%x) {{kernel=[2, 2], stride=[{big}, {big}]}}"),
        ),
        (
            "f32[1, 2, 3, 3]",
            "",
            format!("avg_pool2d(%x) {{kernel=[3, 3], stride=[{big}, 1], padding=[1, 1, 1, 1]}}"),
        ),
        (
            "f32[1, 2, 3, 9]",
            "",
            format!("max_pool2d(%x) {{kernel=[1, 2], stride=[1, 1], dilation=[{big}, 8]}}"),
        ),
        (
            "f32[1, 1, 3, 9]",
            "f32[4, 1, 1, 1]",
            format!("conv2d(%x, %w) {{dilation=[{big}, {big}], stride=[2, {big}]}}"),
        ),
        (
            "f32[1, 1, 1, 3]",
            "f32[1, 2, 2, 2]",
            format!("conv_transpose2d(%x, %w) {{stride=[{big}, 2]}}"),
        ),
        (
            "f32[1, 1, 2, 2]",
            "f32[1, 1, 2, 2]",
            "conv2d(%x, %w) {padding=[1000, 1000, 1000, 1000]}".to_string(),
        ),
    ];
    for (x, w, op) in cases {
        let param = if w.is_empty() {
            String::new()
        } else {
            format!("  param %w: {w}\n")
        };
        let src = format!("graph g {{\n  input %x: {x}\n{param}  %y = {op}\n  output %y\n}}");
        match text::parse(&src) {
            Ok(g) => agree(&g),
            Err(e) => panic!("refused: {op}: {e}"),
        }
    }
}

/// The training graph (backward ops: conv weight gradient of a big kernel, dilate-pad, max-pool
/// ids and their scatter at a huge stride, adaptive pooling backward over a big grid) agrees
/// between the engines.
#[test]
fn training_graph_with_extreme_attributes() {
    let g = text::parse(
        "graph g {
  input %x: f32[2, 2, 10, 12]
  param %c1.w: f32[4, 2, 9, 9]
  %c1 = conv2d(%x, %c1.w) {padding=[2, 2, 2, 2], stride=[1, 2]}
  %p = max_pool2d(%c1) {kernel=[2, 2], stride=[2147483648, 1]}
  %a = adaptive_avg_pool2d(%c1) {output=[40, 40]}
  %am = adaptive_max_pool2d(%a) {output=[7, 3]}
  %f1 = flatten(%p)
  %f2 = flatten(%am)
  %cat = concat(%f1, %f2) {axis=1}
  param %fc.w: f32[3, 96]
  %y = dense(%cat, %fc.w)
  output %y
}",
    )
    .unwrap();
    let t = kiln_autodiff::differentiate(
        &g,
        kiln_autodiff::Loss::cross_entropy(),
        Some(kiln_autodiff::Optimizer::sgd(0.1)),
    )
    .unwrap();
    agree(&t.graph);
}

/// Class ids computed in the graph (here through a reshape and a transpose, so not checked as
/// inputs before the run) that are out of range fail both engines alike, in the loss and in
/// its gradient.
#[test]
fn computed_class_ids_out_of_range_fail_alike() {
    for op in [
        "cross_entropy_loss",
        "nll_loss",
        "cross_entropy_loss_grad",
        "nll_loss_grad",
    ] {
        let src = format!(
            "graph g {{
  input %x: f32[3, 4]
  input %t: i32[3, 1]
  %tt = transpose(%t) {{perm=[1, 0]}}
  %ids = reshape(%tt) {{shape=[3]}}
  %loss = {op}(%x, %ids)
  output %loss
}}"
        );
        let g = text::parse(&src).unwrap();
        let feeds = |ids: Vec<i32>| {
            HashMap::from([
                ("x".to_string(), Value::F(Tensor::full([3, 4], 0.25f32))),
                ("t".to_string(), Value::I(Tensor::new([3, 1], ids).unwrap())),
            ])
        };
        for threads in [1, 2] {
            let options = kiln_jit::JitOptions {
                threads,
                ..Default::default()
            };
            let m = kiln_runtime::compile(&g, &options).unwrap();
            for ids in [vec![0, 4, 9], vec![3, 1, -1], vec![i32::MIN, 0, 0]] {
                let f = feeds(ids);
                let want = kiln_interp::run::<f32>(&g, &f, &HashMap::new())
                    .unwrap_err()
                    .to_string();
                let got = m.run(&f).unwrap_err().to_string();
                assert_eq!(got, want, "{op}");
            }
            let f = feeds(vec![3, 0, 2]);
            let want = kiln_interp::run::<f32>(&g, &f, &HashMap::new()).unwrap();
            let got = m.run(&f).unwrap();
            let (w, v) = (want[0].1.as_f().unwrap(), got[0].1.as_f().unwrap());
            for (a, b) in w.data().iter().zip(v.data()) {
                assert!((a - b).abs() < 1e-5, "{op}: {a} vs {b}");
            }
        }
    }
}

/// Convolutions whose windows are mostly padding (big kernels over small inputs) visit only
/// the taps that reach the input, and agree with the interpreter; transposed ones likewise.
#[test]
fn convolutions_with_big_kernels_over_small_inputs() {
    for (co, attrs) in [
        (4, "padding=[39, 29, 39, 29]"),
        (3, "padding=[39, 29, 39, 29]"),
        (4, "padding=[20, 40, 30, 10], stride=[3, 2]"),
        (3, "padding=[39, 58, 39, 58], dilation=[1, 2], stride=[2, 5]"),
    ] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[1, 2, 3, 5]
  param %w: f32[{co}, 2, 40, 30]
  param %b: f32[{co}]
  %y = conv2d(%x, %w, %b) {{{attrs}}}
  output %y
}}"
        ));
    }
    for attrs in [
        "",
        "stride=[3, 2], dilation=[1, 2]",
        "stride=[2, 2], padding=[5, 6, 7, 8]",
    ] {
        agree_text(&format!(
            "graph g {{
  input %x: f32[1, 2, 2, 3]
  param %w: f32[2, 3, 30, 20]
  %y = conv_transpose2d(%x, %w) {{{attrs}}}
  output %y
}}"
        ));
    }
}

/// `x / tanh(x)` near 0 (the random graphs found it): the JIT's tanh keeps its relative
/// precision there, so the engines agree.
#[test]
fn tanh_near_zero() {
    let g = text::parse(
        "graph g {
  input %x: f32[1, 41]
  %t = tanh(%x)
  %y = div(%x, %t)
  output %t
  output %y
}",
    )
    .unwrap();
    let xs: Vec<f32> = (0..41i32)
        .map(|i| {
            let k = i - 20;
            k.signum() as f32 * 10f32.powf(-(k.abs() as f32) / 3.0)
        })
        .map(|x| if x == 0.0 { 1e-30 } else { x })
        .collect();
    let f = HashMap::from([(
        "x".to_string(),
        Value::F(Tensor::new([1, 41], xs.clone()).unwrap()),
    )]);
    let m = kiln_runtime::compile(&g, &Default::default()).unwrap();
    let out = m.run(&f).unwrap();
    let (t, y) = (out[0].1.as_f().unwrap().data(), out[1].1.as_f().unwrap().data());
    for (i, &x) in xs.iter().enumerate() {
        let want = f64::from(x).tanh();
        let rel = (f64::from(t[i]) - want).abs() / want.abs();
        assert!(rel < 1e-6, "tanh({x}) = {} vs {want}", t[i]);
        let q = f64::from(x) / want;
        assert!(
            (f64::from(y[i]) - q).abs() / q < 2e-6,
            "x/tanh(x) at {x}: {}",
            y[i]
        );
    }
}
