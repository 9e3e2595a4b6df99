//! A direct convolution whose output only another direct convolution reads stores it straight
//! into the padded copy in blocks of 8 channels that the reader would make of it
//! (`GemmDesc::chain_layout`, `Gemms::chain`): the reader copies nothing, the writer
//! transposes nothing. On every runnable tier and on 1 to 4 threads each chain equals the
//! interpreter and every thread count gives the one-thread bits; on AVX-512 the compiled
//! kernels say which pairs were chained, and the pairs that must not be (an output read
//! twice or by the caller, an activation the blocked store does not apply, a copy that drops
//! the image's last rows) are not.

mod common;

use common::check_threads;
use kiln_ir::{Activation, BinaryOp, Conv2d, Graph, NodeId, Op, Padding, TensorType};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;

/// A convolution: `(outputs, kernel, stride, padding, dilation)`.
type Conv = (usize, usize, usize, usize, usize);

/// What reads the first convolution's output besides the second.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Also {
    Nothing,
    /// A residual add after the second (its output read twice).
    Residual,
    /// The caller (a graph output).
    Output,
}

/// Convolution `(o, k, s, p, d)` named `name` over `x`, with a bias.
fn conv(g: &mut Graph, name: &str, x: NodeId, (o, k, s, p, d): Conv) -> NodeId {
    let ci = g.node(x).ty.dims()[1];
    let w = g
        .param(format!("{name}.w"), TensorType::f32([o, ci, k, k]))
        .unwrap();
    let bias = g.param(format!("{name}.b"), TensorType::f32([o])).unwrap();
    let op = Op::Conv2d(Conv2d {
        stride: [s, s],
        dilation: [d, d],
        padding: Padding::Explicit([p; 4]),
        groups: 1,
        activation: None,
    });
    g.add(name, op, &[x, w, bias]).unwrap()
}

/// `x [n, c, h, w]` → conv `a` + bias + `act` → conv `b` + bias + ReLU → output.
fn chain(n: usize, c: usize, hw: [usize; 2], a: Conv, act: Activation, b: Conv, also: Also) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([n, c, hw[0], hw[1]])).unwrap();
    let y = conv(&mut g, "a", x, a);
    let y = g.add("a.act", Op::Activation(act), &[y]).unwrap();
    let z = conv(&mut g, "b", y, b);
    let mut z = g.add("b.relu", Op::Activation(Activation::Relu), &[z]).unwrap();
    match also {
        Also::Nothing => {}
        Also::Residual => {
            z = g.add("sum", Op::Binary(BinaryOp::Add), &[z, y]).unwrap();
        }
        Also::Output => g.mark_output(y).unwrap(),
    }
    g.mark_output(z).unwrap();
    g
}

/// The forms of the two convolutions' kernels on AVX-512 at `threads` threads; `None` where
/// this CPU lacks AVX-512.
fn forms(graph: &Graph, threads: usize) -> Option<Vec<&'static str>> {
    if !Tier::Avx512.available() {
        return None;
    }
    let opts = JitOptions {
        gemm_tier: Tier::Avx512,
        threads,
        ..JitOptions::default()
    };
    let compiled = kiln_jit::compile(graph, &opts).unwrap();
    Some(
        compiled
            .kernels()
            .iter()
            .filter(|k| !k.prep)
            .filter_map(|k| k.form)
            .collect(),
    )
}

/// Chains that AVX-512 runs blocked: 3 × 3 into 3 × 3 (64 channels; 36, which fill 8-channel
/// blocks partly, on a map of odd sides), a deep pointwise product (its image read as one row
/// of pixels) into a 3 × 3, a batch of two, a strided and a dilated reader.
#[test]
fn chained_direct_convolutions_equal_the_interpreter() {
    let relu = Activation::Relu;
    let cases: [(usize, usize, [usize; 2], Conv, Conv); 6] = [
        (1, 64, [20, 20], (64, 3, 1, 1, 1), (64, 3, 1, 1, 1)),
        (1, 16, [15, 17], (36, 3, 1, 1, 1), (64, 3, 1, 1, 1)),
        (1, 256, [14, 14], (64, 1, 1, 0, 1), (96, 3, 1, 1, 1)),
        (2, 32, [12, 12], (64, 3, 1, 1, 1), (48, 3, 1, 1, 1)),
        (1, 64, [16, 16], (64, 3, 1, 1, 1), (128, 3, 2, 1, 1)),
        (1, 48, [18, 18], (64, 3, 1, 1, 1), (64, 3, 1, 2, 2)),
    ];
    for (i, &(n, c, hw, a, b)) in cases.iter().enumerate() {
        let graph = chain(n, c, hw, a, relu, b, Also::Nothing);
        let what = format!("case {i}: {n} × {c} × {hw:?}, {a:?} then {b:?}");
        for threads in [1, 2] {
            if let Some(f) = forms(&graph, threads) {
                assert_eq!(
                    f,
                    ["direct conv, blocked out", "direct conv, blocked in"],
                    "{what}, {threads} threads"
                );
            }
        }
        check_threads(&graph, 40 + i as u64, &what);
    }
}

/// Pairs that keep C's rows: the first output read again (by a residual add, or as a graph
/// output), a sigmoid (an activation the blocked store leaves to a pass over C's rows), a
/// strided 1 × 1 reader whose copy leaves out the image's last row and column (16 × 16 read
/// at stride 2: 15 × 15 of it). Each still
/// equals the interpreter.
#[test]
fn pairs_that_are_not_chained_keep_their_layouts() {
    let (relu, sigmoid) = (Activation::Relu, Activation::Sigmoid);
    let cases: [(Activation, Conv, Also); 4] = [
        (relu, (64, 3, 1, 1, 1), Also::Residual),
        (relu, (64, 3, 1, 1, 1), Also::Output),
        (sigmoid, (64, 3, 1, 1, 1), Also::Nothing),
        (relu, (256, 1, 2, 0, 1), Also::Nothing),
    ];
    for (i, &(act, b, also)) in cases.iter().enumerate() {
        let graph = chain(1, 64, [16, 16], (64, 3, 1, 1, 1), act, b, also);
        let what = format!("case {i}: {act:?}, then {b:?}, {also:?}");
        if let Some(f) = forms(&graph, 1) {
            assert!(f.iter().all(|f| !f.contains("blocked")), "{what}: {f:?}");
        }
        check_threads(&graph, 50 + i as u64, &what);
    }
}

/// Chains in sequence: three 3 × 3s in a row (the middle one reads one copy and writes the
/// next), then, after a residual add that reads the input again, two more of the same layout
/// as the first pair, whose copy takes a place whose readers have run (`Gemms::chain`): one
/// place written by two writers in a run.
#[test]
fn chains_in_sequence_share_their_places() {
    let k3 = (64, 3, 1, 1, 1);
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([1, 64, 13, 13])).unwrap();
    let mut y = x;
    for name in ["a", "b", "c"] {
        let t = conv(&mut g, name, y, k3);
        y = g
            .add(format!("{name}.relu"), Op::Activation(Activation::Relu), &[t])
            .unwrap();
    }
    let mut z = g.add("sum", Op::Binary(BinaryOp::Add), &[y, x]).unwrap();
    for name in ["d", "e"] {
        let t = conv(&mut g, name, z, k3);
        z = g
            .add(format!("{name}.relu"), Op::Activation(Activation::Relu), &[t])
            .unwrap();
    }
    g.mark_output(z).unwrap();
    if let Some(f) = forms(&g, 2) {
        assert_eq!(
            f.iter().filter(|f| f.contains("conv")).collect::<Vec<_>>(),
            [
                &"direct conv, blocked out",
                &"direct conv, blocked in and out",
                &"direct conv, blocked in",
                &"direct conv, blocked out",
                &"direct conv, blocked in",
            ]
        );
    }
    check_threads(&g, 60, "five chained 3 × 3s");
}
