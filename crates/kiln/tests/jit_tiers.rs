//! The kernel tiers (`JitOptions::gemm_tier`): the AVX-512 direct kernels (pooling, global
//! pooling, depthwise convolution, dense) and the portable Cranelift code must each equal the
//! interpreter. Shapes are wide enough for several 16-column vector blocks, a masked last
//! block and border columns; strides 1, 2 and 3 take the three load paths (a load, two loads
//! and a permute, a gather). On a host without AVX-512 both tiers run the Cranelift code.

use kiln::check::jit_matches_interpreter_with;
use kiln::ir::{
    Activation, Conv2d, Graph, Op, Padding, Pool2d, PoolKind, ReduceKind, Tensor, TensorType, Value,
};
use kiln::jit::JitOptions;
use kiln::jit::gemm::Tier;
use proptest::prelude::*;
use std::collections::HashMap;

fn options(auto: bool) -> JitOptions {
    JitOptions {
        gemm_tier: if auto { Tier::Auto } else { Tier::Cranelift },
        threads: 1,
        ..JitOptions::default()
    }
}

fn check(graph: &Graph, seed: u64, auto: bool) {
    if let Err(e) = jit_matches_interpreter_with(graph, seed, &options(auto)) {
        panic!("tier {}: {e}", if auto { "auto" } else { "cranelift" });
    }
}

/// A one-op graph over an input of type `x` and params of types `params`; `None` when shape
/// inference rejects it.
fn one_op(op: Op, x: TensorType, params: &[TensorType]) -> Option<Graph> {
    let mut g = Graph::new();
    let mut ins = vec![g.input("x", x).ok()?];
    for (i, p) in params.iter().enumerate() {
        ins.push(g.param(format!("p{i}"), p.clone()).ok()?);
    }
    let y = g.add("y", op, &ins).ok()?;
    g.mark_output(y).ok()?;
    Some(g)
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        proptest::array::uniform4(0usize..3).prop_map(Padding::Explicit),
        Just(Padding::Valid),
        Just(Padding::SameUpper),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn pool2d(c in 1usize..3, h in 1usize..6, w in 1usize..80, k in (1usize..4, 1usize..4),
              s in (1usize..3, 1usize..4), d in (1usize..3, 1usize..3), pad in padding(), ceil in any::<bool>(),
              kind in prop_oneof![Just(PoolKind::Max), Just(PoolKind::Sum),
                                  any::<bool>().prop_map(|c| PoolKind::Avg { count_include_pad: c })],
              seed in any::<u64>(), auto in any::<bool>()) {
        let op = Op::Pool2d(Pool2d { kind, kernel: [k.0, k.1], stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, ceil_mode: ceil });
        let graph = one_op(op, TensorType::f32([1, c, h, w]), &[]);
        prop_assume!(graph.is_some());
        check(&graph.unwrap(), seed, auto);
    }

    #[test]
    fn global_pool(c in 1usize..4, h in 1usize..12, w in 1usize..12, max in any::<bool>(), seed in any::<u64>(),
                   auto in any::<bool>()) {
        let op = Op::GlobalPool(if max { ReduceKind::Max } else { ReduceKind::Avg });
        check(&one_op(op, TensorType::f32([2, c, h, w]), &[]).unwrap(), seed, auto);
    }

    /// One input channel per group: depthwise (with a channel multiplier) and single-channel.
    #[test]
    fn depthwise(n in 1usize..3, g in 1usize..4, og in 1usize..4, h in 1usize..6, w in 1usize..75,
                 kh in 1usize..4, kw in 1usize..4, s in (1usize..3, 1usize..4), d in (1usize..3, 1usize..3),
                 pad in padding(), bias in any::<bool>(),
                 act in prop_oneof![Just(None), Just(Some(Activation::Relu)),
                                    (-1.0f32..1.0).prop_map(|alpha| Some(Activation::LeakyRelu { alpha }))],
                 seed in any::<u64>(), auto in any::<bool>()) {
        let op = Op::Conv2d(Conv2d { stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, groups: g, activation: act });
        let mut params = vec![TensorType::f32([og * g, 1, kh, kw])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, g, h, w]), &params);
        prop_assume!(graph.is_some());
        check(&graph.unwrap(), seed, auto);
    }

    #[test]
    fn dense(n in 1usize..10, i in 1usize..40, o in 1usize..14, bias in any::<bool>(), seed in any::<u64>(),
             auto in any::<bool>()) {
        let mut params = vec![TensorType::f32([o, i])];
        if bias { params.push(TensorType::f32([o])); }
        check(&one_op(Op::Dense, TensorType::f32([n, i]), &params).unwrap(), seed, auto);
    }
}

/// NaNs in max pooling windows: a NaN wins, whichever tap it is on (vector and border columns).
#[test]
fn max_pool_nan_wins_on_every_tier() {
    let p = Pool2d {
        padding: Padding::uniform(1),
        ..Pool2d::new(PoolKind::Max, [3, 3], [2, 2])
    };
    let graph = one_op(Op::Pool2d(p), TensorType::f32([1, 2, 9, 70]), &[]).unwrap();
    let data: Vec<f32> = (0..2 * 9 * 70)
        .map(|i| {
            if i % 37 == 5 {
                f32::NAN
            } else {
                (i % 11) as f32 - 5.0
            }
        })
        .collect();
    let x = Tensor::new([1, 2, 9, 70], data).unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(x))]);
    let want = kiln::interp::run::<f32>(&graph, &inputs, &HashMap::new()).unwrap();
    for auto in [true, false] {
        let mut m = kiln::jit::compile(&graph, &options(auto)).unwrap();
        m.set_weights(&HashMap::new()).unwrap();
        let got = m.run(&inputs).unwrap();
        let (w, g) = (want[0].1.as_f().unwrap(), got[0].1.as_f().unwrap());
        assert!(w.data().iter().any(|v| v.is_nan()));
        for (i, (a, b)) in w.data().iter().zip(g.data()).enumerate() {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "auto={auto} element {i}: {a} vs {b}"
            );
        }
    }
}
