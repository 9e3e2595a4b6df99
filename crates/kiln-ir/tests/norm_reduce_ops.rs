//! Shape rules of clip, hard sigmoid, erf, LRN, the mean over axes and broadcast_to: the types
//! they give (worked out by hand) and clear errors for impossible attributes.

use kiln_ir::{Activation, Graph, Op, TensorType, TrainOp};

fn infer(op: Op, x: &[usize]) -> Result<TensorType, String> {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(x.to_vec())).unwrap();
    g.add("y", op, &[x])
        .map(|y| g.node(y).ty.clone())
        .map_err(|e| e.to_string())
}

fn lrn(size: usize, alpha: f32, beta: f32, bias: f32) -> Op {
    Op::Lrn {
        size,
        alpha,
        beta,
        bias,
    }
}

fn mean(axes: &[usize], keepdims: bool) -> Op {
    Op::ReduceMean {
        axes: axes.to_vec(),
        keepdims,
    }
}

#[test]
fn types() {
    let t = |d: &[usize]| TensorType::f32(d.to_vec());
    let act = |a| infer(Op::Activation(a), &[2, 3]).unwrap();
    assert_eq!(act(Activation::Clip { min: 0.0, max: 6.0 }), t(&[2, 3]));
    assert_eq!(
        act(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: f32::INFINITY
        }),
        t(&[2, 3])
    );
    assert_eq!(
        act(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5
        }),
        t(&[2, 3])
    );
    assert_eq!(act(Activation::Erf), t(&[2, 3]));
    assert_eq!(
        infer(lrn(5, 1e-4, 0.75, 1.0), &[1, 96, 55, 55]).unwrap(),
        t(&[1, 96, 55, 55])
    );
    assert_eq!(infer(lrn(7, 1e-4, 0.75, 1.0), &[2, 3]).unwrap(), t(&[2, 3]));
    assert_eq!(
        infer(mean(&[3], true), &[1, 56, 56, 96]).unwrap(),
        t(&[1, 56, 56, 1])
    );
    assert_eq!(infer(mean(&[1, 2], false), &[2, 3, 4, 5]).unwrap(), t(&[2, 5]));
    assert_eq!(infer(mean(&[0, 1], false), &[2, 3]).unwrap(), t(&[]));
    assert_eq!(
        infer(Op::Train(TrainOp::BroadcastTo { shape: vec![2, 3, 4] }), &[3, 1]).unwrap(),
        t(&[2, 3, 4])
    );
}

#[test]
fn impossible_attributes_are_clear_errors() {
    let cases: Vec<(Op, &[usize], &str)> = vec![
        (lrn(0, 1e-4, 0.75, 1.0), &[1, 4, 2, 2], "size must be from 1"),
        (
            lrn(3, -1.0, 0.75, 1.0),
            &[1, 4, 2, 2],
            "alpha must be finite and non-negative",
        ),
        (lrn(3, 1e-4, f32::NAN, 1.0), &[1, 4, 2, 2], "beta must be finite"),
        (
            lrn(3, 1e-4, 0.75, 0.0),
            &[1, 4, 2, 2],
            "bias must be a finite number of at least",
        ),
        (lrn(3, 1e-4, 0.75, 1.0), &[4], "input must be [N, C, …]"),
        (mean(&[], true), &[2, 3], "at least one axis"),
        (mean(&[2], true), &[2, 3], "axis 2 is out of range for rank 2"),
        (mean(&[1, 0], true), &[2, 3], "strictly increasing"),
        (mean(&[1, 1], true), &[2, 3], "strictly increasing"),
        (
            mean(&[1], true),
            &[2, 0],
            "cannot average over axis 1, which is empty",
        ),
        (
            Op::Activation(Activation::Clip { min: 2.0, max: 1.0 }),
            &[2],
            "clip needs min ≤ max",
        ),
        (
            Op::Activation(Activation::Clip {
                min: f32::NAN,
                max: 1.0,
            }),
            &[2],
            "clip bounds must be numbers",
        ),
        (
            Op::Activation(Activation::HardSigmoid {
                alpha: f32::INFINITY,
                beta: 0.5,
            }),
            &[2],
            "hard_sigmoid alpha must be finite",
        ),
        (
            Op::Train(TrainOp::BroadcastTo { shape: vec![4] }),
            &[3],
            "do not broadcast",
        ),
        (
            Op::Train(TrainOp::BroadcastTo { shape: vec![3] }),
            &[2, 3],
            "does not broadcast to shape [3]",
        ),
    ];
    for (op, x, want) in cases {
        let name = op.name();
        let e = infer(op, x).expect_err(name);
        assert!(e.contains(want), "{name}: got `{e}`, want `{want}`");
    }
}

#[test]
fn fused_activations_are_checked_and_parsed() {
    let src = "graph g {\n  input %x: f32[1, 2, 4, 4]\n  param %w: f32[2, 2, 1, 1]\n  %c = conv2d(%x, %w) {activation=clip, min=1.0, max=0.0}\n  output %c\n}\n";
    let e = kiln_ir::text::parse(src).unwrap_err().to_string();
    assert!(e.contains("clip needs min ≤ max"), "{e}");
    let src = src.replace("clip, min=1.0, max=0.0", "mish");
    let e = kiln_ir::text::parse(&src).unwrap_err().to_string();
    assert!(
        e.contains(
            "must be one of relu, leaky_relu, sigmoid, tanh, clip, hard_sigmoid, erf, silu, gelu, hard_swish"
        ),
        "{e}"
    );
    let ok = src.replace("mish", "gelu");
    assert!(kiln_ir::text::parse(&ok).is_ok());
}
