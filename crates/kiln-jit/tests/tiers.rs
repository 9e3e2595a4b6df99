//! The kernel tiers (`JitOptions::gemm_tier`): the direct kernels of each Rust tier (AVX-512
//! and AVX2: windowed and global pooling, depthwise convolution, dense), the GEMM
//! micro-kernels of every tier and the portable Cranelift code must each equal the
//! interpreter. Every case runs on every tier this CPU runs (`Tier::runnable`). Shapes are
//! wide enough for several vector registers of columns (16 or 8), a partial last register and
//! border columns; column strides 1, 2 and 3 take the three load paths (a load, two loads
//! keeping the even lanes, a gather). Pooling must match bit for bit, NaNs included.

use kiln_ir::{
    Activation, BinaryOp, Conv2d, Graph, Op, Padding, Pool2d, PoolKind, ReduceKind, Tensor, TensorType, Value,
};
use kiln_jit::JitOptions;
use kiln_jit::gemm::{DirectConv, PatchGeom, Tier};
use kiln_jit::simd::Isa;
use kiln_runtime::check::jit_matches_interpreter_with;
use proptest::prelude::*;

mod common;
use common::one_op;
use std::collections::HashMap;

fn options(tier: Tier) -> JitOptions {
    JitOptions {
        gemm_tier: tier,
        threads: 1,
        ..JitOptions::default()
    }
}

/// The graph on random inputs and weights equals the interpreter on every runnable tier.
fn check(graph: &Graph, seed: u64) {
    for tier in Tier::runnable() {
        if let Err(e) = jit_matches_interpreter_with(graph, seed, &options(tier)) {
            panic!("tier {tier:?}: {e}");
        }
    }
}

fn padding() -> impl Strategy<Value = Padding> {
    prop_oneof![
        proptest::array::uniform4(0usize..3).prop_map(Padding::Explicit),
        Just(Padding::Valid),
        Just(Padding::SameUpper),
    ]
}

/// `n` floats from `seed`: mostly in `[−4, 4)`, with NaNs, infinities and signed zeros about
/// once in `special` (never when `special` is 0).
fn data(n: usize, seed: u64, special: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if special > 0 && (s >> 8).is_multiple_of(special) {
                [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0][(s >> 40) as usize % 6]
            } else {
                ((s >> 40) % 8000) as f32 / 1000.0 - 4.0
            }
        })
        .collect()
}

/// Runs the weightless one-input `graph` on `x` on every runnable tier: each output element
/// bit for bit the interpreter's (any NaN for a NaN).
fn bitwise_on_every_tier(graph: &Graph, x: Tensor<f32>) {
    let inputs = HashMap::from([("x".to_string(), Value::F(x))]);
    let want = kiln_interp::run::<f32>(graph, &inputs, &HashMap::new()).unwrap();
    let want = want[0].1.as_f().unwrap();
    for tier in Tier::runnable() {
        let mut m = kiln_runtime::compile(graph, &options(tier)).unwrap();
        m.set_weights(&HashMap::new()).unwrap();
        let got = m.run(&inputs).unwrap();
        let got = got[0].1.as_f().unwrap();
        assert_eq!(want.shape(), got.shape());
        for (i, (a, b)) in want.data().iter().zip(got.data()).enumerate() {
            assert!(
                a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                "{tier:?} element {i}: interpreter {a}, JIT {b}\n{}",
                kiln_ir::text::print(graph)
            );
        }
    }
}

fn pool_kind() -> impl Strategy<Value = PoolKind> {
    prop_oneof![
        Just(PoolKind::Max),
        Just(PoolKind::Sum),
        any::<bool>().prop_map(|c| PoolKind::Avg { count_include_pad: c })
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Windowed pooling, bit for bit, on inputs with NaNs, infinities and signed zeros.
    #[test]
    fn pool2d(c in 1usize..3, h in 1usize..6, w in 1usize..80, k in (1usize..4, 1usize..4),
              s in (1usize..3, 1usize..4), d in (1usize..3, 1usize..3), pad in padding(), ceil in any::<bool>(),
              kind in pool_kind(), seed in any::<u64>(), special in prop_oneof![Just(0u64), Just(7), Just(60)]) {
        let op = Op::Pool2d(Pool2d { kind, kernel: [k.0, k.1], stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, ceil_mode: ceil });
        let graph = one_op(op, TensorType::f32([1, c, h, w]), &[]);
        prop_assume!(graph.is_some());
        let x = Tensor::new([1, c, h, w], data(c * h * w, seed, special)).unwrap();
        bitwise_on_every_tier(&graph.unwrap(), x);
    }

    #[test]
    fn global_pool(c in 1usize..4, h in 1usize..14, w in 1usize..14, max in any::<bool>(), seed in any::<u64>()) {
        let op = Op::GlobalPool(if max { ReduceKind::Max } else { ReduceKind::Avg });
        check(&one_op(op, TensorType::f32([2, c, h, w]), &[]).unwrap(), seed);
    }

    /// Global max pooling with NaNs and infinities: the first NaN wins, as in the interpreter.
    #[test]
    fn global_max_pool_special_values(c in 1usize..4, h in 1usize..14, w in 1usize..14, seed in any::<u64>(),
                                      special in prop_oneof![Just(5u64), Just(40), Just(300)]) {
        let graph = one_op(Op::GlobalPool(ReduceKind::Max), TensorType::f32([2, c, h, w]), &[]).unwrap();
        let x = Tensor::new([2, c, h, w], data(2 * c * h * w, seed, special)).unwrap();
        bitwise_on_every_tier(&graph, x);
    }

    /// One input channel per group: depthwise (with a channel multiplier) and single-channel,
    /// with every kind of fused activation.
    #[test]
    fn depthwise(n in 1usize..3, g in 1usize..4, og in 1usize..4, h in 1usize..12, w in 1usize..75,
                 kh in 1usize..6, kw in 1usize..6, s in (1usize..4, 1usize..4), d in (1usize..3, 1usize..3),
                 pad in padding(), bias in any::<bool>(),
                 act in prop_oneof![Just(None), Just(Some(Activation::Relu)),
                                    (-1.0f32..1.0).prop_map(|alpha| Some(Activation::LeakyRelu { alpha })),
                                    Just(Some(Activation::Clip { min: 0.0, max: 6.0 })),
                                    Just(Some(Activation::Sigmoid)), Just(Some(Activation::Tanh)),
                                    Just(Some(Activation::HardSigmoid { alpha: 0.2, beta: 0.5 })),
                                    Just(Some(Activation::Erf)), Just(Some(Activation::Silu)),
                                    Just(Some(Activation::Gelu)), Just(Some(Activation::HardSwish))],
                 seed in any::<u64>()) {
        let op = Op::Conv2d(Conv2d { stride: [s.0, s.1], dilation: [d.0, d.1], padding: pad, groups: g, activation: act });
        let mut params = vec![TensorType::f32([og * g, 1, kh, kw])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, g, h, w]), &params);
        prop_assume!(graph.is_some());
        check(&graph.unwrap(), seed);
    }

    /// Convolutions through im2col and the GEMM driver: products narrower and shorter than a
    /// tile, several tiles, groups, strides and every kind of fused activation; up to 32
    /// output channels per group the Rust tiers' small-convolution kernel runs them.
    #[test]
    fn conv_gemm(n in 1usize..3, g in 1usize..3, ig in 1usize..5, og in prop_oneof![1usize..20, 33usize..50], h in 1usize..12,
                 w in 1usize..40, k in 1usize..4, s in 1usize..3, pad in padding(), bias in any::<bool>(),
                 act in proptest::sample::select(ACTIVATIONS.to_vec()),
                 seed in any::<u64>()) {
        let op = Op::Conv2d(Conv2d { stride: [s, s], dilation: [1, 1], padding: pad, groups: g, activation: act });
        let mut params = vec![TensorType::f32([og * g, ig, k, k])];
        if bias { params.push(TensorType::f32([og * g])); }
        let graph = one_op(op, TensorType::f32([n, ig * g, h, w]), &params);
        prop_assume!(graph.is_some());
        check(&graph.unwrap(), seed);
    }

    /// Dense layers at batch sizes around the row tiles (4) and input widths around the
    /// registers (8, 16) and their multiples.
    #[test]
    fn dense(n in 1usize..10, i in prop_oneof![1usize..40, 40usize..300], o in 1usize..20, bias in any::<bool>(),
             seed in any::<u64>()) {
        let mut params = vec![TensorType::f32([o, i])];
        if bias { params.push(TensorType::f32([o])); }
        check(&one_op(Op::Dense, TensorType::f32([n, i]), &params).unwrap(), seed);
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
    bitwise_on_every_tier(&graph, x);
}

/// Paddings wider than the kernels' table of border windows, and windows larger than the
/// input: the border taps come from the closed form.
#[test]
fn wide_paddings_on_every_tier() {
    for kind in [
        PoolKind::Max,
        PoolKind::Sum,
        PoolKind::Avg {
            count_include_pad: true,
        },
        PoolKind::Avg {
            count_include_pad: false,
        },
    ] {
        for (k, pad, s) in [(21, 10, 1), (23, 11, 2), (12, 11, 3)] {
            let p = Pool2d {
                padding: Padding::uniform(pad),
                ..Pool2d::new(kind, [k, k], [s, s])
            };
            let graph = one_op(Op::Pool2d(p), TensorType::f32([1, 2, 13, 50]), &[]).unwrap();
            let x = Tensor::new([1, 2, 13, 50], data(2 * 13 * 50, k as u64, 50)).unwrap();
            bitwise_on_every_tier(&graph, x);
        }
    }
    for (k, pad, s, d) in [(3, 12, 1, 1), (5, 20, 2, 2), (3, 9, 3, 1)] {
        let op = Op::Conv2d(Conv2d {
            stride: [s, s],
            dilation: [d, d],
            padding: Padding::uniform(pad),
            groups: 3,
            activation: Some(Activation::Relu),
        });
        let params = [TensorType::f32([6, 1, k, k]), TensorType::f32([6])];
        let graph = one_op(op, TensorType::f32([2, 3, 11, 45]), &params).unwrap();
        check(&graph, k as u64);
    }
}

/// Depthwise convolutions with NaNs, infinities and signed zeros in the inputs, and in the
/// weights of some channels: the zero-padded vector path of the Rust tiers (finite kernels)
/// and the row driver (a kernel with a non-finite weight, where a padding zero times it would
/// be NaN) each give the interpreter's value: the same NaNs and infinities, and finite values
/// within rounding (the interpreter multiplies and adds, the tiers fuse them).
#[test]
fn depthwise_special_values_on_every_tier() {
    for (i, (h, w, k, s, d, pad)) in [
        (9, 37, 3, 1, 1, 1),
        (8, 40, 3, 2, 1, 1),
        (7, 20, 5, 1, 2, 4),
        (12, 33, 3, 2, 2, 0),
        (5, 70, 1, 1, 1, 2),
        (11, 29, 5, 1, 1, 2),
        (14, 45, 5, 2, 1, 2),
        (9, 20, 3, 1, 1, 1),
        // twenty planes: channel 0's block of planes takes the row driver, the rest blocks
        (7, 7, 3, 1, 1, 1),
        (14, 14, 5, 1, 1, 2),
        (9, 30, 7, 1, 1, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let (c, og) = if i < 8 { (3, 2) } else { (10, 2) };
        let op = Op::Conv2d(Conv2d {
            stride: [s, s],
            dilation: [d, d],
            padding: Padding::uniform(pad),
            groups: c,
            activation: [
                None,
                Some(Activation::Relu),
                Some(Activation::Clip { min: 0.0, max: 6.0 }),
                Some(Activation::Sigmoid),
                Some(Activation::Tanh),
            ][i % 5],
        });
        let params = [TensorType::f32([c * og, 1, k, k]), TensorType::f32([c * og])];
        let graph = one_op(op, TensorType::f32([2, c, h, w]), &params).unwrap();
        let x = Tensor::new([2, c, h, w], data(2 * c * h * w, i as u64 + 7, 40)).unwrap();
        // channel 0's kernel gets one special value in four (most likely a non-finite one),
        // the others none
        let mut kernel = data(c * og * k * k, i as u64 + 99, 0);
        for (j, v) in data(k * k, i as u64 + 5, 4).into_iter().enumerate() {
            kernel[j] = v;
        }
        let weights = HashMap::from([
            ("p0".to_string(), Tensor::new([c * og, 1, k, k], kernel).unwrap()),
            (
                "p1".to_string(),
                Tensor::new([c * og], data(c * og, i as u64 + 3, 0)).unwrap(),
            ),
        ]);
        let inputs = HashMap::from([("x".to_string(), Value::F(x))]);
        let want = kiln_interp::run::<f32>(&graph, &inputs, &weights).unwrap();
        let want = want[0].1.as_f().unwrap();
        for tier in Tier::runnable() {
            let mut m = kiln_runtime::compile(&graph, &options(tier)).unwrap();
            m.set_weights(&weights).unwrap();
            let got = m.run(&inputs).unwrap();
            let got = got[0].1.as_f().unwrap();
            for (e, (a, b)) in want.data().iter().zip(got.data()).enumerate() {
                // at most 25 products of magnitude ≤ 16 each: 1e-3 is far above their rounding
                let close = a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-3;
                assert!(
                    a == b || (a.is_nan() && b.is_nan()) || close,
                    "case {i}, {tier:?}, element {e}: interpreter {a}, JIT {b}"
                );
            }
        }
    }
}

/// A depthwise convolution `(batch, channels, multiplier, h, w, kh, kw, stride, dilation,
/// padding [top, left, bottom, right])`.
type DwCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 4],
);

/// Depthwise convolutions on every path of the Rust tiers' ring of padded rows, on 1 and 2
/// threads: 3×3 and 5×5 kernels (their unrolled passes, at row strides 1 and 2 and column
/// strides 1 and 2: the shifted taps of AVX-512 and the loads of AVX2), other kernels and
/// dilations (the general pass), widths around the registers (7 to 113: partial last
/// registers, a single one, several), heights that leave a partial last pass of rows,
/// uneven paddings, a channel multiplier, batches, and every kind of activation.
#[test]
fn depthwise_ring_paths_on_every_tier() {
    let cases: [DwCase; 16] = [
        (1, 4, 1, 56, 56, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 3, 1, 23, 113, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (2, 3, 2, 17, 57, 3, 3, [2, 2], [1, 1], [1, 1, 1, 1]),
        (1, 2, 1, 14, 112, 3, 3, [2, 2], [1, 1], [0, 1, 1, 0]),
        (1, 5, 1, 7, 7, 5, 5, [1, 1], [1, 1], [2, 2, 2, 2]),
        (1, 3, 1, 15, 33, 5, 5, [2, 2], [1, 1], [2, 1, 2, 2]),
        (2, 2, 1, 28, 28, 5, 5, [1, 1], [1, 1], [2, 2, 2, 2]),
        (1, 4, 1, 9, 15, 3, 3, [1, 1], [1, 1], [0, 0, 0, 0]),
        (1, 3, 1, 11, 40, 3, 3, [1, 2], [1, 1], [1, 1, 1, 1]),
        (1, 3, 1, 12, 41, 3, 3, [2, 1], [1, 1], [1, 0, 0, 1]),
        (1, 3, 1, 13, 37, 5, 5, [1, 2], [1, 1], [2, 2, 1, 2]),
        (1, 2, 3, 10, 30, 3, 3, [1, 1], [2, 2], [2, 2, 2, 2]),
        (1, 3, 1, 9, 50, 7, 7, [1, 1], [1, 1], [3, 3, 3, 3]),
        (1, 2, 1, 8, 31, 3, 5, [1, 2], [1, 1], [1, 2, 1, 2]),
        (1, 2, 1, 14, 14, 3, 3, [3, 3], [1, 1], [1, 1, 1, 1]),
        (1, 3, 1, 16, 17, 1, 1, [1, 1], [1, 1], [0, 0, 0, 0]),
    ];
    check_depthwise_cases(&cases);
}

/// Depthwise convolutions of eight planes and more on the Rust tiers' channel-interleaved
/// path (`direct.rs`' `depthwise_channels`, blocks of eight planes on AVX2 and sixteen on
/// AVX-512: output rows of at most 32 pixels, or, on AVX2, any at column stride 2; on AVX-512
/// rows of at most 16, or of up to 32 that the ring does not take (column stride 3), or of up
/// to 64 for kernels of more than 25 taps at column stride 1, eight outputs of a row at a time at stride 1), on
/// 1 and 2 threads: the unrolled 3×3 and 5×5 windows at column strides 1 and 2, the general
/// one (other kernels, column dilation, strides past 2), rows of fewer than eight pixels
/// (loaded eight pixels of the plane at a time) and of eight or more (eight of the row at a
/// time, the last eight overlapping), planes and outputs of fewer than eight floats, kernels
/// of fewer than eight taps (their weights laid out one by one), plane counts that leave a
/// last block of one to fifteen planes, a channel multiplier and batches (a block's planes
/// crossing from one image to the next), wide rows at column stride 2 (on AVX-512 its own
/// ring's), and every kind of activation. The Cranelift tier runs the same cases.
#[test]
fn depthwise_channel_blocks_on_every_tier() {
    let cases: [DwCase; 20] = [
        (1, 16, 1, 7, 7, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 9, 1, 20, 70, 3, 3, [3, 3], [1, 1], [1, 1, 1, 1]),
        (1, 24, 1, 14, 14, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 9, 1, 28, 28, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (2, 5, 1, 14, 14, 3, 3, [2, 2], [1, 1], [1, 1, 1, 1]),
        (1, 11, 1, 21, 70, 3, 3, [2, 2], [1, 1], [0, 1, 1, 0]),
        (1, 8, 1, 14, 14, 5, 5, [1, 1], [1, 1], [2, 2, 2, 2]),
        (1, 13, 1, 15, 29, 5, 5, [2, 2], [1, 1], [2, 1, 2, 2]),
        (3, 3, 2, 9, 9, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 10, 1, 12, 20, 3, 3, [1, 1], [2, 2], [2, 2, 2, 2]),
        (1, 9, 1, 11, 17, 3, 5, [1, 1], [1, 1], [1, 2, 1, 2]),
        (1, 12, 1, 13, 13, 7, 7, [1, 1], [1, 1], [3, 3, 3, 3]),
        (1, 17, 1, 14, 14, 3, 3, [3, 3], [1, 1], [1, 1, 1, 1]),
        (2, 7, 1, 2, 3, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 9, 1, 4, 4, 3, 3, [2, 2], [1, 1], [0, 0, 0, 0]),
        (1, 8, 1, 16, 17, 1, 1, [1, 1], [1, 1], [0, 0, 0, 0]),
        (2, 150, 2, 7, 7, 3, 3, [1, 1], [1, 1], [1, 1, 1, 1]),
        (1, 27, 1, 9, 9, 2, 2, [1, 1], [1, 1], [0, 1, 1, 0]),
        (1, 18, 1, 12, 56, 7, 7, [1, 1], [1, 1], [3, 3, 3, 3]),
        (2, 21, 1, 10, 40, 7, 7, [1, 1], [1, 1], [3, 2, 3, 3]),
    ];
    check_depthwise_cases(&cases);
}

/// Every kind of activation a convolution fuses, and none: the cases below take them in turn.
const ACTIVATIONS: [Option<Activation>; 8] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Clip { min: 0.0, max: 6.0 }),
    Some(Activation::LeakyRelu { alpha: 0.1 }),
    Some(Activation::Sigmoid),
    Some(Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.5,
    }),
    Some(Activation::Tanh),
    Some(Activation::Clip {
        min: -1.5,
        max: f32::INFINITY,
    }),
];

/// Each depthwise case (with a bias and the activations in turn) equals the interpreter on
/// every runnable tier, on 1 and 2 threads.
fn check_depthwise_cases(cases: &[DwCase]) {
    let acts = ACTIVATIONS;
    for (i, &(n, c, m, h, w, kh, kw, s, d, pad)) in cases.iter().enumerate() {
        let op = Op::Conv2d(Conv2d {
            stride: s,
            dilation: d,
            padding: Padding::Explicit(pad),
            groups: c,
            activation: acts[i % acts.len()],
        });
        let params = [TensorType::f32([c * m, 1, kh, kw]), TensorType::f32([c * m])];
        let graph = one_op(op, TensorType::f32([n, c, h, w]), &params).unwrap();
        check_tiers_and_threads(&graph, i as u64, &format!("case {i} {:?}", cases[i]));
    }
}

/// A convolution `(batch, channels, groups, outputs, h, w, kernel, stride, dilation,
/// padding)` with a bias and, when `residual`, a residual input added and a ReLU after it
/// (which the passes fuse into the GEMM's epilogue).
type ConvCase = (
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    [usize; 4],
);

/// The case's convolution with a bias, then the residual (an input) when `residual`, then
/// `act`: the fusion pass makes them one node, which the kernels finish as they store C.
fn conv_graph((n, c, g, o, h, w, k, s, d, pad): ConvCase, residual: bool, act: Option<Activation>) -> Graph {
    let mut graph = Graph::new();
    let x = graph.input("x", TensorType::f32([n, c, h, w])).unwrap();
    let wt = graph.param("w", TensorType::f32([o, c / g, k, k])).unwrap();
    let b = graph.param("b", TensorType::f32([o])).unwrap();
    let conv = Op::Conv2d(Conv2d {
        stride: [s, s],
        dilation: [d, d],
        padding: Padding::Explicit(pad),
        groups: g,
        activation: None,
    });
    let mut out = graph.add("conv", conv, &[x, wt, b]).unwrap();
    if residual {
        let dims = graph.node(out).ty.dims().to_vec();
        let r = graph.input("r", TensorType::f32(dims)).unwrap();
        out = graph.add("sum", Op::Binary(BinaryOp::Add), &[out, r]).unwrap();
    }
    if let Some(a) = act {
        out = graph.add("out", Op::Activation(a), &[out]).unwrap();
    }
    graph.mark_output(out).unwrap();
    graph
}

/// `graph` equals the interpreter on every runnable tier, on 1 and 2 threads (`what` names
/// the case in a failure).
fn check_tiers_and_threads(graph: &Graph, seed: u64, what: &str) {
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            let opts = JitOptions {
                threads,
                ..options(tier)
            };
            if let Err(e) = jit_matches_interpreter_with(graph, seed + threads as u64, &opts) {
                panic!("{what}, {tier:?}, {threads} threads: {e}");
            }
        }
    }
}

/// Each case's graph equals the interpreter on every runnable tier, on 1 and 2 threads; the
/// cases take the activations in turn (the ReLU after each residual, the others as often).
fn check_conv_cases(cases: &[ConvCase], residual: impl Fn(usize) -> bool) {
    for (i, &case) in cases.iter().enumerate() {
        let act = if residual(i) && i % 2 == 0 {
            Some(Activation::Relu)
        } else {
            ACTIVATIONS[(i / 2 + i) % ACTIVATIONS.len()]
        };
        let graph = conv_graph(case, residual(i), act);
        check_tiers_and_threads(&graph, (i * 7) as u64, &format!("case {i} {case:?}"));
    }
}

/// Whether the tier of `isa` runs a case with more than two registers of output channels per
/// group directly (`gemm::DirectConv::pays`) rather than as a GEMM.
fn runs_direct(isa: Isa, case: ConvCase) -> bool {
    DirectConv::pays(isa, &geometry(case), case.1 / case.2)
}

/// Whether `tier` compiles a case (no residual, no activation) to the direct kernel: the
/// compiler's choice, which [`runs_direct`] gives as the rule alone.
fn compiles_direct(tier: Tier, case: ConvCase) -> bool {
    compiles_to(tier, case, "direct conv")
}

/// Whether `tier` compiles a case (no residual, no activation) to a kernel of `form`
/// (`GemmDesc::form`).
fn compiles_to(tier: Tier, case: ConvCase, form: &str) -> bool {
    let compiled = kiln_jit::compile(&conv_graph(case, false, None), &options(tier)).unwrap();
    compiled.kernels().iter().any(|k| k.form == Some(form))
}

/// A case's patch geometry.
fn geometry((_, _, _, _, h, w, k, s, d, pad): ConvCase) -> PatchGeom {
    let span = |n: usize, lo: usize, hi: usize| (n + lo + hi - d * (k - 1) - 1) / s + 1;
    PatchGeom {
        h,
        w,
        kh: k,
        kw: k,
        stride: [s, s],
        dilation: [d, d],
        pad: [pad[0], pad[1]],
        oh: span(h, pad[0], pad[2]),
        ow: span(w, pad[1], pad[3]),
    }
}

/// Pointwise (1 × 1, stride 1) convolutions, whose B is the image itself as a plain matrix:
/// on AVX-512 a product of at most 32 output channels and 1024 pixels or more reads B's rows
/// in place (the tiles' twins over a table of row starts), more channels pack them; edge strips
/// (pixels not a multiple of the tile's columns), batches, several K blocks (300 channels in)
/// and the residual, on every tier and 1 and 2 threads.
#[test]
fn pointwise_convolutions_on_every_tier() {
    let p = [0; 4];
    let cases = [
        (1, 24, 1, 16, 32, 40, 1, 1, 1, p),
        (2, 40, 1, 32, 33, 33, 1, 1, 1, p),
        (1, 8, 1, 24, 30, 37, 1, 1, 1, p),
        (1, 300, 1, 20, 32, 33, 1, 1, 1, p),
        (1, 16, 1, 33, 32, 33, 1, 1, 1, p),
        (1, 12, 1, 7, 16, 9, 1, 1, 1, p),
    ];
    check_conv_cases(&cases, |i| i % 2 == 1);
}

/// Pointwise convolutions on small maps, whose plain B the Rust tiers compute transposed
/// (`Swap::for_matrix`: 49 pixels pad to 64 columns of either main tile, 50 rows of AVX2's
/// transposed one; on AVX-512 196 pixels too, 224 columns against 198 rows, except where the
/// transpose saves less than a twentieth: 80 channels): a batch, groups,
/// output channels not a multiple of the tile (70, 200), pixels not a multiple of its rows
/// (33, 49), several K blocks (600 channels in), the bias, the residual and the ReLU, on every
/// tier and 1 and 2 threads; each tier's choice asserted where this CPU runs it.
#[test]
fn pointwise_convolutions_on_small_maps_on_every_tier() {
    let p = [0; 4];
    let cases = [
        (1, 32, 1, 64, 7, 7, 1, 1, 1, p),
        (2, 24, 2, 160, 7, 7, 1, 1, 1, p),
        (1, 600, 1, 70, 3, 11, 1, 1, 1, p),
        (1, 16, 1, 200, 7, 7, 1, 1, 1, p),
        (1, 40, 1, 256, 14, 14, 1, 1, 1, p),
        (1, 24, 1, 80, 14, 14, 1, 1, 1, p),
    ];
    if Isa::Avx2.available() {
        let kernel = |m: usize, n: usize| Tier::Avx2.kernel(m, n).expect("the AVX2 tier's tile");
        for (_, _, g, o, h, w, ..) in cases {
            let (m, n) = (o / g, h * w);
            // (196 pixels: 198 rows against 208 columns, not a tenth less)
            assert_eq!(
                kiln_jit::gemm::Swap::for_matrix(&kernel(m, n), m, n).is_some(),
                n != 196,
                "{m} × {n} on AVX2"
            );
        }
    }
    if Isa::Avx512.available() {
        let kernel = |m: usize, n: usize| Tier::Avx512.kernel(m, n).expect("the AVX-512 tier's tile");
        for (_, _, g, o, h, w, ..) in cases {
            let (m, n) = (o / g, h * w);
            // (200 channels of 49 pixels: 204 × 64 padded plain, 49 × 240 on 7 × 48
            // transposed, 9.9 % less; 80 of 196: 84 × 224 plain, 196 × 96 on 7 × 48, the
            // same)
            assert_eq!(
                kiln_jit::gemm::Swap::for_matrix(&kernel(m, n), m, n).is_some(),
                (m, n) != (80, 196),
                "{m} × {n} on AVX-512"
            );
        }
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
}

/// Pointwise convolutions on one-pixel maps (a squeeze-and-excitation's: C is `[M, 1]` per
/// image, whose epilogue the Rust tiers run as one row of `M` floats, a register of output
/// channels at a time): SE-like shapes both ways (1152 ← 48, 48 ← 1152), output channels in
/// whole registers and a partial one (37, 70, 1152), a batch, groups, several K blocks (600
/// channels in), the bias, the residual and the activations, on every tier and 1 and 2
/// threads.
#[test]
fn pointwise_convolutions_on_one_pixel_on_every_tier() {
    let p = [0; 4];
    let cases = [
        (1, 48, 1, 1152, 1, 1, 1, 1, 1, p),
        (1, 1152, 1, 48, 1, 1, 1, 1, 1, p),
        (2, 20, 1, 37, 1, 1, 1, 1, 1, p),
        (1, 600, 1, 70, 1, 1, 1, 1, 1, p),
        (2, 24, 2, 40, 1, 1, 1, 1, 1, p),
        (1, 16, 1, 17, 1, 1, 1, 1, 1, p),
        (3, 8, 1, 33, 1, 1, 1, 1, 1, p),
        (1, 64, 1, 96, 1, 1, 1, 1, 1, p),
    ];
    check_conv_cases(&cases, |i| i % 3 != 2);
}

/// Pointwise convolutions on maps of at most 289 pixels, which AVX-512 runs directly
/// (`DirectConv::for_pointwise`: B read as one row of pixels per image, 32 channels in or
/// more, or at most 32 out; asserted), reading the images themselves into at most 256 output
/// channels, else a copy (`DirectConv::in_place`; asserted): a batch, channels in not a
/// multiple of 8 (300, 40), output channels in blocks of four registers and a partial one
/// (100 = 64 + 32 + 4), few output channels (24), more than 256 (264, from a copy), exactly
/// 289 pixels (17 × 17, in a batch of two); and beside them the shapes that stay GEMMs (324
/// pixels, 24 channels in, groups), the bias, the residual and the ReLU, on every tier and 1
/// and 2 threads.
#[test]
fn pointwise_convolutions_on_small_maps_run_directly_on_avx512() {
    let p = [0; 4];
    let cases = [
        (2, 96, 1, 80, 7, 7, 1, 1, 1, p),
        (1, 64, 1, 100, 16, 16, 1, 1, 1, p),
        (1, 300, 1, 40, 13, 13, 1, 1, 1, p),
        (1, 72, 1, 24, 9, 9, 1, 1, 1, p),
        (2, 128, 1, 64, 17, 17, 1, 1, 1, p),
        (1, 72, 1, 264, 7, 7, 1, 1, 1, p),
        (1, 40, 1, 240, 14, 14, 1, 1, 1, p),
        (1, 64, 1, 64, 18, 18, 1, 1, 1, p),
        (1, 24, 1, 96, 7, 7, 1, 1, 1, p),
        (1, 128, 2, 96, 7, 7, 1, 1, 1, p),
    ];
    // (cases 1 and 6, 64 and 40 channels in on 16 × 16 and 14 × 14, take the row kernel,
    // which reads in place whatever the output channels: `pointwise_convolutions_by_rows`)
    let by_rows = |i: usize| i == 1 || i == 6;
    for (i, (_, c, g, o, h, w, ..)) in cases.into_iter().enumerate().filter(|&(_, case)| case.2 == 1) {
        let direct = DirectConv::for_pointwise(Isa::Avx512, c / g, o / g, h * w);
        assert_eq!(direct.is_some(), i < 7, "case {i}: {o} ← {c} on {h} × {w}");
        if let Some((dc, _)) = direct {
            let in_place = o / g <= DirectConv::IN_PLACE_ROWS || by_rows(i);
            assert_eq!((dc.in_place, dc.pad_len == 0), (in_place, in_place), "case {i}");
            assert_eq!(dc.row_kernel, by_rows(i), "case {i}");
        }
        assert!(
            DirectConv::for_pointwise(Isa::Avx2, c / g, o / g, h * w).is_none(),
            "case {i} on AVX2"
        );
    }
    // and the compiler takes the rule: the AVX-512 tier's kernel of each case is a direct
    // kernel exactly for the first seven (not for 324 pixels, 24 channels in, two groups)
    if Isa::Avx512.available() {
        for (i, &case) in cases.iter().enumerate() {
            assert_eq!(
                compiles_direct(Tier::Avx512, case),
                i < 7 && !by_rows(i),
                "case {i} {case:?}"
            );
            assert_eq!(
                compiles_to(Tier::Avx512, case, "row conv"),
                by_rows(i),
                "case {i} {case:?}"
            );
        }
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
}

/// Asserts that the first `direct` of `cases` (pointwise convolutions) run directly on
/// AVX-512 reading their images in place, by `DirectConv::for_pointwise`'s rule and by the
/// compiled form on one and two threads, and the others not; then checks them all on every
/// tier ([`check_conv_cases`]).
fn pointwise_cases_run_directly(cases: &[ConvCase], direct: usize) {
    for (i, &(_, c, _, o, h, w, ..)) in cases.iter().enumerate() {
        let form = DirectConv::for_pointwise(Isa::Avx512, c, o, h * w);
        assert_eq!(form.is_some(), i < direct, "case {i}: {o} ← {c} on {h} × {w}");
        if let Some((dc, _)) = form {
            assert!(dc.in_place && !dc.row_kernel, "case {i}");
        }
    }
    if Isa::Avx512.available() {
        for (i, &case) in cases.iter().enumerate() {
            assert_eq!(
                compiles_direct(Tier::Avx512, case),
                i < direct,
                "case {i} {case:?}"
            );
            let two = JitOptions {
                threads: 2,
                ..options(Tier::Avx512)
            };
            let compiled = kiln_jit::compile(&conv_graph(case, false, None), &two).unwrap();
            assert_eq!(
                compiled.kernels().iter().any(|k| k.form == Some("direct conv")),
                i < direct,
                "case {i} on two threads"
            );
        }
    }
    check_conv_cases(cases, |i| i % 2 == 0);
}

/// Deep pointwise convolutions on maps of up to 784 pixels, which AVX-512 runs directly
/// (`DirectConv::POINTWISE_PIXELS_DEEP`: at least 192 channels in, 64 or 128 out, fewer than
/// 65536 weights; asserted with the rule and the compiled form on one and two threads),
/// reading the images in place: 28 × 28 into 64 and 128 channels, 27 × 27 in a batch of two,
/// 300 channels in (several chunks of taps); and beside them the ones that stay GEMMs (96
/// channels out, 128 in, 29 × 29, 128 ← 512). The bias, the residual and the activations in
/// turn, on every tier and 1 and 2 threads.
#[test]
fn deep_pointwise_convolutions_on_28_by_28_run_directly() {
    let p = [0; 4];
    let cases = [
        (1, 256, 1, 64, 28, 28, 1, 1, 1, p),
        (1, 192, 1, 128, 28, 28, 1, 1, 1, p),
        (2, 300, 1, 64, 27, 27, 1, 1, 1, p),
        (1, 256, 1, 96, 28, 28, 1, 1, 1, p),
        (1, 128, 1, 64, 28, 28, 1, 1, 1, p),
        (1, 256, 1, 64, 29, 29, 1, 1, 1, p),
        (1, 512, 1, 128, 28, 28, 1, 1, 1, p),
    ];
    pointwise_cases_run_directly(&cases, 3);
}

/// Pointwise convolutions into at most 32 channels from at least 128 on maps of up to 784
/// pixels, which AVX-512 runs directly (`DirectConv::POINTWISE_FEW_K`; asserted with the rule
/// and the compiled form on one and two threads), reading the images in place: 32 ← 192 on
/// 28 × 28, 16 ← 256 (one register of channels), 24 ← 128 on 27 × 27 in a batch of two (a
/// partial register), 32 ← 300 (several chunks of taps); and beside them the ones that stay
/// GEMMs (35 × 35, 96 channels in, 33 channels out). The bias, the residual and the
/// activations in turn, on every tier and 1 and 2 threads.
#[test]
fn pointwise_convolutions_into_few_channels_on_28_by_28_run_directly() {
    let p = [0; 4];
    let cases = [
        (1, 192, 1, 32, 28, 28, 1, 1, 1, p),
        (1, 256, 1, 16, 28, 28, 1, 1, 1, p),
        (2, 128, 1, 24, 27, 27, 1, 1, 1, p),
        (1, 300, 1, 32, 28, 28, 1, 1, 1, p),
        (1, 192, 1, 32, 35, 35, 1, 1, 1, p),
        (1, 96, 1, 32, 28, 28, 1, 1, 1, p),
        (1, 192, 1, 33, 28, 28, 1, 1, 1, p),
    ];
    pointwise_cases_run_directly(&cases, 4);
}

/// Pointwise convolutions that AVX-512 runs on the row kernel (`DirectConv::pointwise_by_rows`:
/// pixels in the registers, the images read in place; asserted with the compiled form): maps
/// of 100, 121, 169, 196, 64 and 289 pixels (a row's last register partial, or whole), output
/// channels in uneven blocks of five (37, 21, 3) and more than 256 (300), a batch of two, 16 to
/// 64 channels in; and beside them the shapes it leaves to the other kernels (7 × 7, whose
/// registers would waste a third of their lanes; 160 channels in, whose span's floats would
/// not stay in L1): the bias, the residual and the activations in turn, on every tier and 1
/// and 2 threads (the 300 output channels split between them in panels of 32, the batch of
/// two by images, a row of pixels in runs of whole registers: `gemm_threads.rs`).
#[test]
fn pointwise_convolutions_by_rows() {
    let p = [0; 4];
    let cases = [
        (1, 32, 1, 300, 10, 10, 1, 1, 1, p),
        (2, 64, 1, 37, 14, 14, 1, 1, 1, p),
        (1, 48, 1, 21, 17, 17, 1, 1, 1, p),
        (1, 16, 1, 8, 8, 8, 1, 1, 1, p),
        (1, 24, 1, 3, 11, 11, 1, 1, 1, p),
        (1, 40, 1, 70, 13, 13, 1, 1, 1, p),
        (1, 64, 1, 40, 7, 7, 1, 1, 1, p),
        (1, 160, 1, 48, 14, 14, 1, 1, 1, p),
    ];
    if Isa::Avx512.available() {
        for (i, &(_, c, _, _, h, w, ..)) in cases.iter().enumerate() {
            let takes = i < 6;
            assert_eq!(
                DirectConv::pointwise_by_rows(Isa::Avx512, c, h * w).is_some(),
                takes,
                "case {i}"
            );
            assert_eq!(compiles_to(Tier::Avx512, cases[i], "row conv"), takes, "case {i}");
        }
    }
    assert!(
        cases
            .iter()
            .all(|&(_, c, _, _, h, w, ..)| DirectConv::pointwise_by_rows(Isa::Avx2, c, h * w).is_none())
    );
    check_conv_cases(&cases, |i| i % 2 == 1);
}

/// 1 × 1 downsamples (stride 2) whose output has at most 256 pixels, which AVX-512 runs
/// directly (`DirectConv::pays`; asserted, and that the compiler takes it) from a copy (not in
/// place: asserted): outputs of 7 × 7 (from 13 × 13 and 14 × 14), 8 × 8 in a batch of two, 16
/// × 16 (exactly 256 pixels), output channels in a partial register; and a downsample to 17
/// × 17 that stays a GEMM; the bias, the residual and the ReLU, on every tier and 1 and 2
/// threads. AVX2 runs none directly.
#[test]
fn small_downsamples_run_directly_on_avx512() {
    let p = [0; 4];
    let cases = [
        (1, 96, 1, 80, 13, 13, 1, 2, 1, p),
        (1, 256, 1, 200, 14, 14, 1, 2, 1, p),
        (2, 64, 1, 72, 16, 16, 1, 2, 1, p),
        (1, 64, 1, 128, 32, 32, 1, 2, 1, p),
        (1, 64, 1, 128, 34, 34, 1, 2, 1, p),
    ];
    for (i, &case) in cases.iter().enumerate() {
        assert_eq!(
            runs_direct(Isa::Avx512, case),
            i < 4,
            "case {i} {case:?} on AVX-512"
        );
        assert!(!runs_direct(Isa::Avx2, case), "case {i} {case:?} on AVX2");
        if let Some(dc) = DirectConv::new(Isa::Avx512, &geometry(case), case.1, case.3) {
            assert!(!dc.in_place && dc.pad_len > 0, "case {i} {case:?} copied");
        }
        if Isa::Avx512.available() {
            assert_eq!(
                compiles_direct(Tier::Avx512, case),
                i < 4,
                "case {i} {case:?} compiled for AVX-512"
            );
        }
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
}

/// Convolutions of images with at most four channels (a network's stem) with output rows at
/// least two registers wide, which the Rust tiers run on the row kernel
/// (`DirectConv::by_rows`: pixels in the registers, over the phase copy; asserted, and that
/// the compiler takes it) — on AVX2 into more than two registers of output channels with
/// fewer than 64 taps, on AVX-512 into any number of them with fewer than 160: strides 1, 2
/// and 3, a dilation, a 1 × 1 kernel, uneven paddings, one to four channels, output channels
/// in blocks of five and four (16, 32, 33, 37, 41, 48, 64), rows ending in a partial register
/// and rows exactly two registers wide, a batch, two groups, a 7 × 7 kernel over 3 channels
/// (147 taps); and beside them shapes that do not take it (five channels, rows narrower than
/// two registers, 363 taps; on AVX2 147 taps and 16 or 32 output channels); the bias, the
/// residual and the activations, on every tier and 1 and 2 threads.
#[test]
fn stems_run_by_rows_on_the_rust_tiers() {
    let cases = [
        (1, 3, 1, 64, 31, 69, 3, 2, 1, [0, 0, 0, 0]),
        (2, 3, 1, 48, 40, 80, 3, 2, 1, [1, 1, 1, 1]),
        (1, 3, 1, 33, 20, 70, 3, 2, 1, [1, 1, 1, 1]),
        (1, 3, 1, 64, 9, 66, 3, 1, 1, [1, 0, 1, 2]),
        (1, 1, 1, 37, 12, 50, 5, 1, 2, [2, 2, 2, 2]),
        (1, 4, 1, 40, 10, 100, 3, 3, 1, [1, 1, 1, 1]),
        (1, 2, 1, 36, 8, 64, 1, 2, 1, [0, 0, 0, 0]),
        (1, 6, 2, 80, 8, 70, 3, 1, 1, [1, 1, 1, 1]),
        (1, 3, 1, 41, 6, 32, 3, 1, 1, [1, 1, 1, 1]),
        (1, 5, 1, 40, 9, 70, 3, 1, 1, [1, 1, 1, 1]),
        (1, 3, 1, 40, 9, 30, 3, 1, 1, [1, 1, 1, 1]),
        (1, 3, 1, 64, 20, 70, 7, 2, 1, [3, 3, 3, 3]),
        (1, 3, 1, 32, 20, 70, 3, 2, 1, [1, 1, 1, 1]),
        (1, 3, 1, 16, 12, 66, 3, 2, 1, [1, 1, 1, 1]),
        (1, 3, 1, 64, 30, 160, 11, 4, 1, [2, 2, 2, 2]),
    ];
    for isa in [Isa::Avx512, Isa::Avx2].into_iter().filter(|isa| isa.available()) {
        for (i, &case) in cases.iter().enumerate() {
            let (channels, groups, outputs) = (case.1, case.2, case.3);
            let g = geometry(case);
            // (rows of 32 pixels are two registers on AVX-512; 30 are two on AVX2 only)
            // (AVX-512 takes any number of output channels and up to 159 taps)
            let takes =
                i < 9 || (i == 10 && isa == Isa::Avx2) || ((11..=13).contains(&i) && isa == Isa::Avx512);
            let dc = DirectConv::by_rows(isa, &g, channels / groups, outputs / groups);
            assert_eq!(
                dc.is_some() && dc.unwrap().phases.is_some(),
                takes,
                "case {i} {case:?} on {isa:?}"
            );
            let tier = if isa == Isa::Avx512 {
                Tier::Avx512
            } else {
                Tier::Avx2
            };
            assert_eq!(
                compiles_to(tier, case, "row conv"),
                takes,
                "case {i} {case:?} compiled for {isa:?}"
            );
        }
    }
    check_conv_cases(&cases, |i| i % 3 == 1);
}

/// Convolutions on the GEMM driver's wide products (output rows computed `wp` columns apart
/// over a zero-padded copy of the image, split into phases for a stride, then moved into
/// place; more than 32 output channels per group, so that the GEMM runs them): strides 1 to 3,
/// dilations,
/// groups, batches, uneven paddings, the bias, the residual and the ReLU fused into the
/// epilogue, on 1 and 2 threads (row and column splits), and shapes just inside and outside
/// the wide form's limit (at most one dropped column in eight). None of them runs directly on
/// the AVX2 or the AVX-512 tier (asserted).
#[test]
fn wide_convolutions_on_every_tier() {
    let cases = [
        (2, 7, 1, 40, 20, 31, 3, 1, 1, [1, 1, 1, 1]),
        (1, 6, 2, 80, 17, 37, 3, 1, 2, [2, 1, 0, 3]),
        (2, 2, 1, 48, 9, 16, 5, 1, 1, [2, 2, 2, 2]),
        (1, 14, 2, 96, 14, 14, 3, 1, 1, [1, 1, 1, 1]),
        (1, 4, 1, 36, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (3, 2, 1, 130, 5, 38, 2, 1, 3, [0, 0, 1, 2]),
        // strides: the image split into phases, one per row and column residue (16 and 14
        // output columns at stride 2: too few for AVX2's direct blocks; fewer than 64 taps,
        // which AVX-512 leaves to the GEMM)
        (1, 1, 1, 40, 30, 32, 7, 2, 1, [3, 3, 3, 3]),
        (2, 8, 2, 80, 15, 33, 3, 2, 1, [1, 0, 1, 1]),
        (1, 12, 1, 48, 14, 28, 1, 2, 1, [0, 0, 0, 0]),
        // no wide column dropped (a 2 × 2 kernel at stride 2, as the 1 × 1 above): the
        // product computed in C itself
        (2, 6, 1, 40, 12, 26, 2, 2, 1, [1, 1, 1, 1]),
        (1, 5, 1, 34, 20, 61, 3, 3, 2, [2, 1, 2, 2]),
        (2, 4, 1, 64, 11, 40, 4, 3, 1, [1, 2, 0, 1]),
        // more taps than the direct form takes (1025 channels × 9: more than AVX2's 1152
        // and AVX-512's 9216)
        (1, 1025, 1, 40, 6, 24, 3, 1, 1, [1, 1, 1, 1]),
        // more than 1024 output pixels: a wide product whose rows of B the AVX-512 tiles
        // read in place too, and a 1 × 1's plain matrix, which they pack
        (1, 7, 1, 40, 36, 31, 3, 1, 1, [1, 1, 1, 1]),
        (1, 12, 1, 48, 34, 31, 1, 1, 1, [0, 0, 0, 0]),
    ];
    for case in cases {
        for isa in [Isa::Avx2, Isa::Avx512] {
            assert!(!runs_direct(isa, case), "{case:?} runs directly on {isa:?}");
        }
    }
    check_conv_cases(&cases, |_| true);
}

/// Convolutions with more taps than the direct form took before it took up to 9216 on
/// AVX-512 (3 × 3 over 1024 channels, Wide ResNet's last stage): 600 channels × 9 (5400 taps)
/// and 1024 × 9, at stride 1 and 2, with the bias, the residual and an activation, on every
/// tier (the AVX2 and Cranelift tiers run them as GEMMs) and on 1 and 2 threads, bit for bit
/// against the interpreter.
#[test]
fn direct_convolutions_up_to_9216_taps_on_every_tier() {
    let cases = [
        (1, 600, 1, 64, 5, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 1024, 1, 48, 7, 7, 3, 2, 1, [1, 1, 1, 1]),
    ];
    for case in cases {
        assert!(
            runs_direct(Isa::Avx512, case),
            "{case:?} does not run directly on Avx512"
        );
    }
    check_conv_cases(&cases, |_| true);
}

/// Convolutions with more than two registers of output channels that the AVX2 tier runs
/// directly (`gemm::DirectConv`: stride 1, or 2 with a kernel wider than 1 × 1, at most 576 taps or
/// 1152 with a copy that fits L2, rows that fill its pixel blocks; asserted) over a
/// copy of the image with its channels in blocks of 8, the weights in panels of 16 channels
/// packed ahead, or laid out per call where they are not constant (the weights an input):
/// channel counts below 8 (a plane per channel), not a multiple of 8, output channels ending
/// in a partial panel and a partial register, groups, batches, dilations, uneven paddings, a
/// 2 × 2 kernel, rows longer than the kernel's segment, taps in several chunks, the bias,
/// the residual and the ReLU fused, on 1 and 2 threads (splits at panels of channels and at
/// output rows, each thread copying the rows it reads). The AVX-512 tier runs the cases with
/// at least 64 taps directly too (blocks of four registers, 64 channels, where more than 48
/// are left; asserted for the last eight, the last three of which AVX2 runs as GEMMs; the first
/// of them, and the one before them, have weights larger than L2, which the kernel asks for
/// a chunk ahead, in smaller chunks on the smaller map); the
/// Cranelift tier runs them as GEMMs.
#[test]
fn direct_convolutions_on_every_tier() {
    let cases = [
        (2, 8, 1, 40, 20, 30, 3, 1, 1, [1, 1, 1, 1]),
        (1, 6, 2, 80, 17, 45, 3, 1, 2, [2, 1, 0, 3]),
        (3, 2, 1, 130, 5, 60, 2, 1, 3, [0, 0, 1, 2]),
        (1, 16, 1, 32, 12, 12, 3, 1, 1, [1, 1, 1, 1]),
        (1, 12, 1, 24, 9, 30, 3, 1, 1, [0, 0, 0, 0]),
        (1, 5, 1, 20, 6, 36, 5, 1, 1, [2, 2, 2, 2]),
        (2, 33, 1, 64, 8, 24, 3, 1, 1, [1, 1, 1, 1]),
        // the most taps it takes whatever the copy: 64 channels × 9
        (1, 64, 1, 48, 6, 24, 3, 1, 1, [1, 1, 1, 1]),
        // more taps, taken where the padded copy fits L2 (100 KB: any host's)
        (1, 96, 1, 40, 8, 24, 3, 1, 1, [1, 1, 1, 1]),
        // stride 2 over blocks of 8 channels (an odd width: the last pixel's taps reach the
        // copy's last column), and with a dilation and uneven padding
        (1, 16, 1, 40, 15, 47, 3, 2, 1, [1, 1, 1, 1]),
        (2, 8, 1, 36, 16, 25, 3, 2, 2, [2, 1, 1, 2]),
        // stride 2 with more than 576 taps (72 channels × 9), its copy small
        (1, 72, 1, 40, 9, 47, 3, 2, 1, [1, 1, 1, 1]),
        // stride 2 over planes (3 channels, a 7 × 7 kernel: a stem)
        (1, 3, 1, 40, 30, 44, 7, 2, 1, [3, 3, 3, 3]),
        // rows longer than a segment (60 pixels: 60 + 10, and 60 + 60 + 5), taps in two
        // chunks (24 channels × 9 = 144 + 72), blocks of four, two and one registers
        (1, 8, 1, 40, 5, 70, 3, 1, 1, [1, 1, 1, 1]),
        (1, 24, 1, 56, 4, 125, 3, 1, 1, [1, 1, 1, 1]),
        // rows longer than AVX-512's segment (224 pixels: 224 + 6; AVX2's 60: 3 · 60 + 50),
        // blocks of four registers and one
        (1, 8, 1, 72, 3, 230, 3, 1, 1, [1, 1, 1, 1]),
        // a row's last pixels one more than a block, in two blocks (AVX2's four registers by
        // 55 = 3 · 17 + 2 + 2, AVX-512's two by 17 = 8 + 5 + 4)
        (1, 16, 1, 32, 3, 55, 3, 1, 1, [1, 1, 1, 1]),
        (1, 16, 1, 32, 5, 17, 3, 1, 1, [1, 1, 1, 1]),
        // weights larger than L2 (1024 channels × 1152 taps, 4.7 MB), asked for a chunk
        // ahead: on a map of more than 64 pixels in chunks of 144 taps, on one of 60 in
        // chunks of 72 (`DirectConv::STREAMED_CHUNK`)
        (1, 128, 1, 1024, 6, 11, 3, 1, 1, [1, 1, 1, 1]),
        (1, 128, 1, 1024, 5, 12, 3, 1, 1, [1, 1, 1, 1]),
        // AVX-512's blocks of four registers, then two and a partial one (100 = 64 + 32 +
        // 4), a row of two segments, at stride 1 and 2
        (1, 16, 1, 100, 6, 70, 3, 1, 1, [1, 1, 1, 1]),
        (1, 8, 1, 80, 9, 30, 3, 1, 1, [1, 1, 1, 1]),
        (2, 8, 1, 64, 15, 47, 3, 2, 1, [1, 1, 1, 1]),
        (1, 40, 1, 72, 7, 24, 3, 1, 2, [2, 1, 2, 2]),
        // rows that fill AVX2's blocks badly, which AVX-512 takes (whole rows per segment,
        // a row's last seven pixels in blocks of four and three): 7 = 4 + 3, 13 = 6 + 4 + 3
        // and 14 = 6 + 6 + 2
        (1, 16, 1, 64, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 16, 1, 64, 6, 13, 3, 1, 1, [1, 1, 1, 1]),
        (2, 9, 1, 50, 14, 14, 3, 1, 1, [1, 1, 1, 1]),
    ];
    let avx512_only = 3;
    for &case in &cases[..cases.len() - avx512_only] {
        assert!(
            runs_direct(Isa::Avx2, case),
            "{case:?} does not run directly on AVX2"
        );
    }
    for &case in &cases[cases.len() - 8..] {
        assert!(
            runs_direct(Isa::Avx512, case) && case.3 > 48,
            "{case:?} does not run directly on AVX-512 in blocks of four registers"
        );
    }
    let long = (1, 8, 1, 72, 3, 230, 3, 1, 1, [1, 1, 1, 1]);
    assert!(
        cases.contains(&long) && runs_direct(Isa::Avx512, long),
        "{long:?} does not run directly on AVX-512"
    );
    for (big, chunk) in [(cases[cases.len() - 9], 144), (cases[cases.len() - 8], 72)] {
        assert!(
            runs_direct(Isa::Avx512, big),
            "{big:?} does not run directly on AVX-512"
        );
        for isa in [Isa::Avx2, Isa::Avx512] {
            if let Some(direct) = DirectConv::new(isa, &geometry(big), big.1, big.3) {
                assert!(
                    direct.prefetch && direct.chunk == chunk,
                    "{big:?} does not prefetch its weights in chunks of {chunk} taps on {isa:?}"
                );
            }
        }
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
    // the weights an input: laid out by the driver on every call
    for (i, &(n, c, g, o, h, w, k, s, d, pad)) in cases.iter().enumerate().take(3) {
        let mut graph = Graph::new();
        let x = graph.input("x", TensorType::f32([n, c, h, w])).unwrap();
        let wt = graph.input("w", TensorType::f32([o, c / g, k, k])).unwrap();
        let conv = Op::Conv2d(Conv2d {
            stride: [s, s],
            dilation: [d, d],
            padding: Padding::Explicit(pad),
            groups: g,
            activation: None,
        });
        let y = graph.add("conv", conv, &[x, wt]).unwrap();
        graph.mark_output(y).unwrap();
        check_tiers_and_threads(&graph, (i * 11) as u64, &format!("weights as an input, case {i}"));
    }
}

/// A long activation (SiLU, GELU, sigmoid) after a direct convolution goes over the finished
/// rows of each segment's worth of pixels, after the bias and the residual (`direct_conv`);
/// equal the interpreter on every tier, on 1 and 2 threads: rows of several segments, a
/// stride-2 stem over 3 planes (on AVX-512 the row kernel: SiLU in its blocks, GELU and
/// sigmoid over each span's stored rows, `conv_rows::in_block`), and weights larger than L2
/// (the activation after the whole job).
#[test]
fn long_activations_after_direct_convolutions() {
    let cases = [
        (1, 8, 1, 72, 3, 230, 3, 1, 1, [1, 1, 1, 1]),
        (1, 3, 1, 40, 30, 44, 7, 2, 1, [3, 3, 3, 3]),
        (1, 128, 1, 1024, 5, 12, 3, 1, 1, [1, 1, 1, 1]),
    ];
    let acts = [Activation::Silu, Activation::Gelu, Activation::Sigmoid];
    for (i, &case) in cases.iter().enumerate() {
        for (a, act) in acts.into_iter().enumerate() {
            let graph = conv_graph(case, a != 1, Some(act));
            check_tiers_and_threads(&graph, (i * 3 + a) as u64, &format!("{case:?}, {act:?}"));
        }
    }
}

/// Direct convolutions whose padded copies are larger than this host's L2 (128 channels of 68
/// × 68 padded pixels, 2.4 MB, 1152 taps; 32 channels of 132 × 132, 2.2 MB, 288 taps) run on
/// AVX-512 band by band (`DirectConv::band`: whole output rows whose padded rows fill at most
/// half of L2, each band's rows copied just before its pixels run; asserted where L2 is
/// smaller than the copy), with the bias, the residual and the ReLU finished by the kernel as
/// it stores the sums; equal the interpreter on every tier, on 1 and 2 threads (each thread
/// its half of the rows, in bands), with 8 output channels (a register's half: direct
/// whatever the copy) and with 40 (direct on AVX-512 for its 1152 and 288 taps: in bands
/// from 256).
#[test]
fn direct_convolutions_over_copies_larger_than_l2_run_in_bands() {
    let cases = [
        (1, 128, 1, 8, 66, 66, 3, 1, 1, [1, 1, 1, 1]),
        (1, 128, 1, 40, 66, 66, 3, 1, 1, [1, 1, 1, 1]),
        (1, 32, 1, 40, 130, 130, 3, 1, 1, [1, 1, 1, 1]),
    ];
    let l2 = kiln_jit::gemm::cache_size(2).unwrap_or(1 << 20);
    for &case in cases.iter().filter(|_| Isa::Avx512.available()) {
        let Some(direct) = DirectConv::new(Isa::Avx512, &geometry(case), case.1, case.3) else {
            panic!("{case:?} does not run directly on AVX-512");
        };
        // (the channels, in blocks of 8, by the padded rows and columns; 4 bytes each)
        let (ow, wp, hp) = (case.5, case.5 + 2, case.4 + 2);
        let row = case.1 * wp * 4;
        if row * hp > l2 {
            let rows = direct.band / ow;
            assert!(
                direct.band % ow == 0
                    && (1..case.4).contains(&rows)
                    && (rows + 2) * row <= (l2 / 2).max(3 * row),
                "{case:?}: a band of {} pixels (L2 {l2})",
                direct.band
            );
        } else {
            assert_eq!(
                direct.band,
                case.4 * ow,
                "{case:?}: the whole copy fits L2 ({l2})"
            );
        }
    }
    check_conv_cases(&cases, |_| true);
}

/// Pointwise GEMMs whose C is larger than half of this host's L2 run their tiles in row bands
/// (`gemm::row_bands`), and each band goes through the epilogue (the bias, the residual, the
/// activation) as soon as its last K block is done: 128 output channels from 16 channels in
/// (one K block) and from 300 (several where the tile's K blocks are shallower, as the AVX-512
/// tiles' 128: the band is finished only after the last), 40 from 16 (a shallow product, C
/// larger than L2), and a 1 × 1 downsample into 128 channels, a wide product on the Rust
/// tiers (each band moved from the item's scratch into C); each with the residual and a ReLU,
/// and without a residual; equal the interpreter on every tier, on 1 and 2 threads. None runs
/// directly on any tier (asserted).
#[test]
fn gemms_in_row_bands_finish_each_band_as_it_is_done() {
    let l2 = kiln_jit::gemm::cache_size(2).unwrap_or(1 << 20);
    // a square map whose C (`outputs` channels of side² floats) exceeds `bytes`
    let side = |outputs: usize, bytes: usize| (bytes / (outputs * 4)).isqrt() + 3;
    let (deep, shallow) = (side(128, l2 / 2), side(40, l2));
    let cases = [
        (1, 16, 1, 128, deep, deep, 1, 1, 1, [0, 0, 0, 0]),
        (1, 300, 1, 128, deep, deep, 1, 1, 1, [0, 0, 0, 0]),
        (1, 16, 1, 40, shallow, shallow, 1, 1, 1, [0, 0, 0, 0]),
        (1, 24, 1, 128, 2 * deep, 2 * deep, 1, 2, 1, [0, 0, 0, 0]),
    ];
    for &case in &cases {
        for tier in Tier::runnable() {
            assert!(!compiles_direct(tier, case), "{case:?} runs directly on {tier:?}");
        }
    }
    for tier in Tier::runnable().into_iter().filter(|&t| t != Tier::Cranelift) {
        assert!(
            compiles_to(tier, cases[3], "wide gemm"),
            "{:?} is no wide GEMM on {tier:?}",
            cases[3]
        );
    }
    check_conv_cases(&cases, |_| true);
    check_conv_cases(&cases, |_| false);
}

/// The band floor on AVX-512: a 3 × 3 convolution whose padded copy is larger than this host's
/// L2 runs directly (in bands) from 256 taps (32 channels: 288), not with 144 (16 channels),
/// which stays a GEMM; with a copy that fits L2, 144 taps run directly. The rule alone
/// (`DirectConv::pays`), on any host.
#[test]
fn avx512_direct_convolutions_in_bands_take_256_taps() {
    let l2 = kiln_jit::gemm::cache_size(2).unwrap_or(1 << 20);
    for (channels, in_bands) in [(16, false), (32, true)] {
        // a square map whose padded copy (channels × side², 4 bytes each) exceeds L2
        let side = (l2 / (channels * 4)).isqrt() + 8;
        let big = (1, channels, 1, 64, side, side, 3, 1, 1, [1, 1, 1, 1]);
        assert_eq!(runs_direct(Isa::Avx512, big), in_bands, "{big:?} (L2 {l2})");
    }
    let small = (1, 16, 1, 64, 55, 55, 3, 1, 1, [1, 1, 1, 1]);
    assert!(runs_direct(Isa::Avx512, small), "{small:?} (L2 {l2})");
}

/// Convolutions whose products are narrow (few output pixels for their channels), which the
/// Rust tiers compute transposed (`gemm::Swap`: pixels as the tile's rows, output channels as
/// its columns, the scratch block transposed into C): 7 × 7 outputs (the AVX-512 7 × 48 tile),
/// 3 × 3 (the AVX2 tier's too), odd channel counts, groups, batches, strides, dilations,
/// uneven paddings, a 1 × 1 kernel, the bias, the residual and the ReLU fused, on 1 and 2
/// threads (a row split at a tile of channels, a column split at a tile of pixels). Each
/// has fewer than 64 taps per group, which the AVX-512 tier leaves to the GEMM (asserted).
#[test]
fn transposed_convolutions_on_every_tier() {
    let cases = [
        (2, 7, 1, 40, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 6, 2, 90, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 7, 1, 64, 5, 5, 3, 1, 1, [0, 0, 0, 0]),
        (1, 7, 1, 48, 14, 14, 3, 2, 1, [1, 1, 1, 1]),
        (1, 4, 1, 64, 7, 7, 3, 1, 2, [2, 1, 2, 3]),
        (1, 32, 1, 64, 14, 14, 1, 2, 1, [0, 0, 0, 0]),
        (3, 5, 1, 37, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 4, 1, 512, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 7, 1, 64, 10, 10, 3, 1, 1, [1, 1, 1, 1]),
        (2, 6, 3, 105, 6, 8, 3, 1, 1, [1, 0, 0, 1]),
    ];
    for case in cases {
        assert!(
            !runs_direct(Isa::Avx512, case),
            "{case:?} runs directly on AVX-512"
        );
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
}

/// Convolutions with few output channels per group, which the Rust tiers run with the
/// small-convolution kernel (vectorized over output channels) instead of the GEMM: every
/// channel count from a quarter of a register to two registers, and on AVX2 up to four
/// registers for kernels wider than 1 × 1 (asserted), on maps the blocks of pixels do not
/// fill; strides 1 to 3, dilations, groups, uneven paddings, the bias, the residual and the
/// ReLU fused, on 1 and 2 threads.
#[test]
fn small_convolutions_on_every_tier() {
    let cases = [
        (2, 6, 1, 16, 14, 14, 5, 1, 1, [0, 0, 0, 0]),
        (3, 1, 1, 6, 28, 28, 5, 1, 1, [2, 2, 2, 2]),
        (1, 4, 2, 24, 11, 23, 3, 2, 1, [1, 0, 2, 1]),
        (2, 3, 1, 9, 9, 31, 3, 3, 2, [2, 2, 2, 2]),
        (1, 8, 4, 64, 10, 17, 3, 1, 2, [0, 3, 1, 0]),
        (1, 2, 1, 32, 6, 40, 1, 2, 1, [0, 0, 0, 0]),
        (2, 5, 1, 12, 3, 3, 3, 1, 1, [1, 1, 1, 1]),
        (1, 16, 1, 32, 14, 14, 3, 1, 1, [1, 1, 1, 1]),
        (2, 10, 1, 24, 7, 7, 3, 1, 1, [1, 1, 1, 1]),
        (1, 8, 2, 40, 9, 13, 3, 2, 1, [1, 0, 1, 1]),
    ];
    if Isa::Avx2.available() {
        for case in &cases[cases.len() - 3..] {
            let (channels, groups, outputs) = (case.1, case.2, case.3);
            let direct = DirectConv::new(Isa::Avx2, &geometry(*case), channels / groups, outputs / groups);
            assert!(direct.is_some(), "{case:?} does not run directly on AVX2");
        }
    }
    check_conv_cases(&cases, |i| i % 2 == 0);
}

/// Matrix products over the 49 pixels of 7 × 7 maps (`[1, 7, 7, k] · [k, n]`, ConvNeXt's
/// last stage), which AVX-512 runs on its 7 × 48 tile: columns that are and are not a
/// multiple of 48, several K blocks, on every tier and 1 and 2 threads. Products whose weights
/// fit L2 run on the direct dense kernel at 49 rows; the last case's weights are larger than
/// this host's L2, so that the Rust tiers run it on the GEMM driver (asserted), A's rows read
/// in place by the 7 × 48 tile's twin on AVX-512.
#[test]
fn matrix_products_over_forty_nine_rows_on_every_tier() {
    if Isa::Avx512.available() {
        let tile = Tier::Avx512.kernel(49, 3072).map(|k| (k.mr, k.nr));
        assert_eq!(tile, Some((7, 48)), "[49, 768] · [768, 3072] on AVX-512");
    }
    let l2 = kiln_jit::gemm::cache_size(2).unwrap_or(1 << 20);
    let over_l2 = (l2 / (4 * 300) + 1).next_multiple_of(48) + 5;
    let cases = [(96, 384), (300, 200), (40, 100), (300, over_l2)];
    for (i, (k, n)) in cases.into_iter().enumerate() {
        let graph = one_op(
            Op::MatMul,
            TensorType::f32([1, 7, 7, k]),
            &[TensorType::f32([k, n])],
        )
        .unwrap();
        check_tiers_and_threads(&graph, i as u64, &format!("[49, {k}] · [{k}, {n}]"));
        if n == over_l2 {
            for tier in Tier::runnable().into_iter().filter(|&t| t != Tier::Cranelift) {
                let compiled = kiln_jit::compile(&graph, &options(tier)).unwrap();
                let forms: Vec<_> = compiled.kernels().iter().map(|k| k.form).collect();
                assert!(
                    forms.contains(&Some("gemm")),
                    "[49, {k}] · [{k}, {n}], {tier:?}: {forms:?}"
                );
            }
        }
    }
}

/// Dense layers the GEMM driver runs (`x [N, I]` as A, the weights read transposed as B,
/// packed when they are set, the bias per column in the epilogue): enough rows, or from two
/// rows weights larger than any L2 (over 2 MiB); widths around the tiles and the registers,
/// with and without a bias, on every tier, 1 and 2 threads (row and column splits).
#[test]
fn dense_layers_on_the_gemm_driver_on_every_tier() {
    for (i, (n, inputs, outputs, bias)) in [
        (128, 1, 1, true),
        (130, 37, 45, true),
        (300, 96, 384, false),
        (129, 400, 17, true),
        (256, 16, 1000, true),
        (1000, 3, 64, false),
        (2, 1024, 600, true),
        (5, 700, 1001, false),
        (49, 768, 705, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut params = vec![TensorType::f32([outputs, inputs])];
        if bias {
            params.push(TensorType::f32([outputs]));
        }
        let graph = one_op(Op::Dense, TensorType::f32([n, inputs]), &params).unwrap();
        check_tiers_and_threads(&graph, (i * 5) as u64, &format!("case {i}"));
        // the Rust tiers run it on the driver, the weights packed by a `prep` kernel
        for tier in Tier::runnable().into_iter().filter(|&t| t != Tier::Cranelift) {
            let compiled = kiln_jit::compile(&graph, &options(tier)).unwrap();
            let forms: Vec<_> = compiled.kernels().iter().map(|k| (k.prep, k.form)).collect();
            assert!(
                forms.contains(&(false, Some("gemm"))) && forms.contains(&(true, None)),
                "case {i}, {tier:?}: {forms:?}"
            );
        }
    }
}
