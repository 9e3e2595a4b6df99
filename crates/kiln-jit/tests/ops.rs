//! Every forward op, with random valid attributes and shapes, through the JIT and the
//! interpreter: the outputs must agree (tolerance in `kiln_runtime::check`).

use kiln_ir::{
    Activation, BinaryOp, Conv2d, ConvTranspose2d, Graph, LossKind, Op, Padding, Pool2d, PoolKind,
    ReduceKind, TensorType,
};
use kiln_runtime::check::jit_matches_interpreter;
use proptest::prelude::*;

mod common;
use common::one_op;

fn check_graph(graph: &Graph, seed: u64) {
    if let Err(e) = jit_matches_interpreter(graph, seed) {
        panic!("{e}");
    }
}

/// No activation half the time, else a fused one (the conv epilogue).
fn activation() -> impl Strategy<Value = Option<Activation>> {
    prop_oneof![
        Just(None),
        Just(None),
        Just(Some(Activation::Relu)),
        (-1.0f32..1.0).prop_map(|alpha| Some(Activation::LeakyRelu { alpha })),
        Just(Some(Activation::Sigmoid)),
        Just(Some(Activation::Tanh)),
        Just(Some(Activation::Clip { min: 0.0, max: 6.0 })),
        Just(Some(Activation::HardSigmoid {
            alpha: 1.0 / 6.0,
            beta: 0.5
        })),
        Just(Some(Activation::Erf)),
        Just(Some(Activation::Silu)),
        Just(Some(Activation::Gelu)),
        Just(Some(Activation::HardSwish)),
    ]
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        proptest::array::uniform4(0usize..3).prop_map(Padding::Explicit),
        Just(Padding::Valid),
        Just(Padding::SameUpper),
        Just(Padding::SameLower),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv2d(n in 1usize..3, cg in 1usize..4, g in 1usize..4, og in 1usize..3, h in 1usize..10, w in 1usize..10,
              kh in 1usize..4, kw in 1usize..4, s in (1usize..4, 1usize..4), d in (1usize..3, 1usize..3),
              pad in padding(), bias in any::<bool>(), act in activation(), seed in any::<u64>()) {
        let op = Op::Conv2d(Conv2d { stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, groups: g, activation: act });
        let mut params = vec![TensorType::f32([og * g, cg, kh, kw])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, cg * g, h, w]), &params);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    /// Output channels in blocks of 4 per group and rows wide enough for 8-column register
    /// blocks: the blocked kernel, its borders and its leftover columns.
    #[test]
    fn conv2d_blocked(n in 1usize..3, cg in 1usize..4, g in 1usize..3, og in prop_oneof![Just(4usize), Just(8)],
                      h in 1usize..8, w in 8usize..26, kh in 1usize..4, kw in 1usize..5, s in (1usize..3, 1usize..3),
                      d in (1usize..3, 1usize..3), pad in padding(), bias in any::<bool>(), act in activation(), seed in any::<u64>()) {
        let op = Op::Conv2d(Conv2d { stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, groups: g, activation: act });
        let mut params = vec![TensorType::f32([og * g, cg, kh, kw])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, cg * g, h, w]), &params);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    #[test]
    fn conv_transpose2d(n in 1usize..3, cg in 1usize..3, g in 1usize..3, og in 1usize..3, h in 1usize..6, w in 1usize..6,
                        kh in 1usize..4, kw in 1usize..4, s in (1usize..4, 1usize..4), d in (1usize..3, 1usize..3),
                        pad in proptest::array::uniform4(0usize..3), op_pad in (0usize..3, 0usize..3),
                        bias in any::<bool>(), seed in any::<u64>()) {
        let op = Op::ConvTranspose2d(ConvTranspose2d {
            stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, output_padding: [op_pad.0, op_pad.1], groups: g,
        });
        let mut params = vec![TensorType::f32([cg * g, og, kh, kw])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, cg * g, h, w]), &params);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    #[test]
    fn pool2d(n in 1usize..3, c in 1usize..4, h in 1usize..10, w in 1usize..10, k in (1usize..4, 1usize..4),
              s in (1usize..4, 1usize..4), d in (1usize..3, 1usize..3), pad in padding(), ceil in any::<bool>(),
              kind in prop_oneof![Just(PoolKind::Max), Just(PoolKind::Sum),
                                  any::<bool>().prop_map(|c| PoolKind::Avg { count_include_pad: c })],
              seed in any::<u64>()) {
        let op = Op::Pool2d(Pool2d { kind, kernel: [k.0, k.1], stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, ceil_mode: ceil });
        let graph = one_op(op, TensorType::f32([n, c, h, w]), &[]);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    #[test]
    fn global_and_adaptive_pool(n in 1usize..3, c in 1usize..4, h in 1usize..10, w in 1usize..10,
                                out in (1usize..6, 1usize..6), max in any::<bool>(), adaptive in any::<bool>(),
                                seed in any::<u64>()) {
        let kind = if max { ReduceKind::Max } else { ReduceKind::Avg };
        let op = if adaptive { Op::AdaptivePool { kind, output: [out.0, out.1] } } else { Op::GlobalPool(kind) };
        check_graph(&one_op(op, TensorType::f32([n, c, h, w]), &[]).unwrap(), seed);
    }

    #[test]
    fn activations(dims in proptest::collection::vec(1usize..7, 1..5), which in 0usize..11, alpha in -1.0f32..1.0,
                   bound in -1.0f32..1.0, seed in any::<u64>()) {
        let act = [
            Activation::Relu,
            Activation::LeakyRelu { alpha },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Clip { min: bound.min(alpha), max: bound.max(alpha) },
            Activation::Clip { min: f32::NEG_INFINITY, max: bound },
            Activation::HardSigmoid { alpha, beta: bound },
            Activation::Erf,
            Activation::Silu,
            Activation::Gelu,
            Activation::HardSwish,
        ][which];
        check_graph(&one_op(Op::Activation(act), TensorType::f32(dims), &[]).unwrap(), seed);
    }

    /// LRN across channels: odd and even windows, wider than the channels, ranks 2 to 5,
    /// planes with and without a leftover of the vector width.
    #[test]
    fn lrn(n in 1usize..3, c in 1usize..7, rest in proptest::collection::vec(1usize..7, 0..3), size in 1usize..8,
           consts in 0usize..3, seed in any::<u64>()) {
        let (alpha, beta, bias) = [(1e-4, 0.75, 1.0), (0.8, 0.75, 2.0), (0.5, -0.5, 0.7)][consts];
        let mut dims = vec![n, c];
        dims.extend(rest);
        check_graph(&one_op(Op::Lrn { size, alpha, beta, bias }, TensorType::f32(dims), &[]).unwrap(), seed);
    }

    /// The mean over any increasing set of axes (adjacent ones merged, a contiguous innermost
    /// run by fours), kept or removed.
    #[test]
    fn reduce_mean(dims in proptest::collection::vec(1usize..7, 1..5), mask in 1usize..32, keepdims in any::<bool>(),
                   seed in any::<u64>()) {
        let axes: Vec<usize> = (0..dims.len()).filter(|a| mask & (1 << a) != 0).collect();
        prop_assume!(!axes.is_empty());
        check_graph(&one_op(Op::ReduceMean { axes, keepdims }, TensorType::f32(dims), &[]).unwrap(), seed);
    }

    #[test]
    fn softmax(dims in proptest::collection::vec(1usize..7, 1..5), axis in -4i64..4, log in any::<bool>(),
               seed in any::<u64>()) {
        let op = if log { Op::LogSoftmax { axis } } else { Op::Softmax { axis } };
        let graph = one_op(op, TensorType::f32(dims), &[]);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    #[test]
    fn dense(n in 1usize..4, i in 1usize..20, o in 1usize..9, bias in any::<bool>(), seed in any::<u64>()) {
        let mut params = vec![TensorType::f32([o, i])];
        if bias { params.push(TensorType::f32([o])); }
        check_graph(&one_op(Op::Dense, TensorType::f32([n, i]), &params).unwrap(), seed);
    }

    #[test]
    fn matmul(a in proptest::collection::vec(1usize..4, 1..4), b in proptest::collection::vec(1usize..4, 1..4),
              seed in any::<u64>()) {
        let graph = one_op(Op::MatMul, TensorType::f32(a), &[TensorType::f32(b)]);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    #[test]
    fn binary(a in proptest::collection::vec(1usize..4, 0..4), b in proptest::collection::vec(1usize..4, 0..4),
              which in 0usize..4, seed in any::<u64>()) {
        let op = Op::Binary([BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][which]);
        let graph = one_op(op, TensorType::f32(a), &[TensorType::f32(b)]);
        prop_assume!(graph.is_some());
        check_graph(&graph.unwrap(), seed);
    }

    /// Broadcasts whose rows are long enough to walk by rows: one operand of the output's
    /// shape, the other with some axes 1 or missing (either side), rows with and without a
    /// leftover of the vector width.
    #[test]
    fn binary_by_rows(dims in proptest::collection::vec(1usize..9, 1..5), ones in 1usize..32, drop in 0usize..3,
                      swap in any::<bool>(), which in 0usize..4, seed in any::<u64>()) {
        let small: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| if ones & (1 << i) != 0 { 1 } else { d })
            .skip(drop.min(dims.len() - 1))
            .collect();
        let (a, b) = if swap { (small, dims) } else { (dims, small) };
        let op = Op::Binary([BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div][which]);
        check_graph(&one_op(op, TensorType::f32(a), &[TensorType::f32(b)]).unwrap(), seed);
    }

    #[test]
    fn layout(dims in proptest::collection::vec(1usize..5, 1..5), perm_seed in any::<u64>(), which in 0usize..4,
              seed in any::<u64>()) {
        let r = dims.len();
        let mut perm: Vec<usize> = (0..r).collect();
        let mut s = perm_seed;
        for i in (1..r).rev() { perm.swap(i, (s % (i as u64 + 1)) as usize); s /= 7; }
        let op = match which {
            0 => Op::Transpose { perm },
            1 => Op::Flatten { axis: (perm_seed % (r as u64 + 1)) as i64 },
            2 => Op::Reshape { shape: vec![-1] },
            _ => Op::Dropout { ratio: 0.5, seed: 1 },
        };
        // a relu after the view, so the view's storage is read by a kernel too
        let mut g = one_op(op, TensorType::f32(dims), &[]).unwrap();
        let y = g.find("y").unwrap();
        let z = g.add("z", Op::Activation(Activation::Relu), &[y]).unwrap();
        g.mark_output(z).unwrap();
        check_graph(&g, seed);
    }

    #[test]
    fn concat(a in proptest::collection::vec(1usize..4, 1..5), extra in 1usize..4, parts in 1usize..4,
              axis in 0usize..4, seed in any::<u64>()) {
        let axis = axis % a.len();
        let mut g = Graph::new();
        let mut ins = Vec::new();
        for p in 0..parts {
            let mut d = a.clone();
            d[axis] = extra + p;
            ins.push(g.input(format!("x{p}"), TensorType::f32(d)).unwrap());
        }
        let y = g.add("y", Op::Concat { axis: axis as i64 }, &ins).unwrap();
        g.mark_output(y).unwrap();
        check_graph(&g, seed);
    }

    #[test]
    fn batch_norm(n in 1usize..3, c in 1usize..5, rest in proptest::collection::vec(1usize..6, 0..3), seed in any::<u64>()) {
        let mut dims = vec![n, c];
        dims.extend(rest);
        let p = TensorType::f32([c]);
        let op = Op::BatchNorm { epsilon: 1e-5, activation: None };
        check_graph(&one_op(op, TensorType::f32(dims), &[p.clone(), p.clone(), p.clone(), p]).unwrap(), seed);
    }

    #[test]
    fn losses(n in 1usize..5, k in 1usize..7, which in 0usize..3, ids in any::<bool>(), seed in any::<u64>()) {
        let mut g = Graph::new();
        let x = g.input("x", TensorType::f32([n, k])).unwrap();
        let kind = [LossKind::Mse, LossKind::CrossEntropy, LossKind::Nll][which];
        let t = match (kind, ids) {
            (LossKind::Mse, _) | (_, false) => g.input("t", TensorType::f32([n, k])).unwrap(),
            _ => g.input("t", TensorType::i32([n])).unwrap(),
        };
        let y = g.add("y", Op::Loss(kind), &[x, t]).unwrap();
        g.mark_output(y).unwrap();
        check_graph(&g, seed);
    }
}

/// The layout and broadcasting shapes of real networks, at their real sizes (a
/// transformer's LayerNorm and MLP on NHWC, ShuffleNet's channel shuffle) or, for the matmul,
/// with fewer rows.
#[test]
fn shapes_of_real_networks() {
    let src = r#"
graph real_shapes {
  input %x: f32[1, 56, 56, 96]
  input %h: f32[1, 8, 8, 96]
  param %w: f32[96, 384]
  input %s: f32[1, 116, 28, 28]
  param %scale: f32[96]
  param %bias: f32[96]
  %m = reduce_mean(%x) {axes=[3]}
  %d = sub(%x, %m)
  %dd = mul(%d, %d)
  %v = reduce_mean(%dd) {axes=[3]}
  %r = rsqrt(%v) {epsilon=1e-06}
  %n = mul(%d, %r)
  %ns = mul(%n, %scale)
  %ln = add(%ns, %bias)
  %mlp = matmul(%h, %w): f32[1, 8, 8, 384]
  %r5 = reshape(%s) {shape=[1, 2, 58, 28, 28]}
  %t5 = transpose(%r5) {perm=[0, 2, 1, 3, 4]}: f32[1, 58, 2, 28, 28]
  %sh = reshape(%t5) {shape=[1, 116, 28, 28]}
  %lrn = lrn(%s) {size=5, alpha=0.0001, beta=0.75, bias=1.0}
  output %ln
  output %mlp
  output %sh
  output %lrn
}
"#;
    check_graph(&kiln_ir::text::parse(src).unwrap(), 7);
}

/// The JIT's erf against the correctly rounded one (the interpreter in f64, libm's) on a
/// dense grid over [−6, 6] and at the special values: within 1e-7 absolute, far inside the
/// engines' usual tolerance.
#[test]
fn jit_erf_is_accurate() {
    use kiln_ir::{Tensor, Value};
    use std::collections::HashMap;
    let n = 120_001;
    let mut xs: Vec<f32> = (0..n).map(|i| -6.0 + 12.0 * i as f32 / (n - 1) as f32).collect();
    xs.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
    ]);
    let len = xs.len();
    let g = one_op(Op::Activation(Activation::Erf), TensorType::f32([len]), &[]).unwrap();
    let mut m = kiln_runtime::compile(&g, &Default::default()).unwrap();
    m.set_weights(&HashMap::new()).unwrap();
    let feed = HashMap::from([("x".to_string(), Value::F(Tensor::new([len], xs.clone()).unwrap()))]);
    let got = m.run(&feed).unwrap();
    let got = got[0].1.as_f().unwrap().data().to_vec();
    let xs64: Vec<f64> = xs.iter().map(|&v| f64::from(v)).collect();
    let feed64 = HashMap::from([("x".to_string(), Value::F(Tensor::new([len], xs64).unwrap()))]);
    let want = kiln_interp::run::<f64>(&g, &feed64, &HashMap::new()).unwrap();
    let want = want[0].1.as_f().unwrap().data().to_vec();
    let mut worst = (0.0f64, 0.0f32);
    for ((&x, &y), &w) in xs.iter().zip(&got).zip(&want) {
        let err = (f64::from(y) - w).abs();
        if err > worst.0 {
            worst = (err, x);
        }
    }
    assert!(worst.0 <= 1e-7, "erf off by {:e} at x = {}", worst.0, worst.1);
    let nan = one_op(Op::Activation(Activation::Erf), TensorType::f32([1]), &[]).unwrap();
    let mut m = kiln_runtime::compile(&nan, &Default::default()).unwrap();
    m.set_weights(&HashMap::new()).unwrap();
    let feed = HashMap::from([(
        "x".to_string(),
        Value::F(Tensor::new([1], vec![f32::NAN]).unwrap()),
    )]);
    assert!(m.run(&feed).unwrap()[0].1.as_f().unwrap().data()[0].is_nan());
}
