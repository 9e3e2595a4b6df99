//! The elementwise activations on every kernel tier (`JitOptions::gemm_tier`): the Rust
//! kernels of the AVX-512 and AVX2 tiers (`kiln_jit::elementwise_kernels`) and the portable
//! Cranelift code must each equal the interpreter within the JIT's tolerance
//! (`kiln_runtime::check::ATOL`, `RTOL`), and NaN, ±∞ and ±0 must come out as the interpreter gives
//! them. Lengths run over every remainder of the registers (1 to 69: four registers of 16 are
//! 64) and long values that two threads split at an odd element; the Rust tiers must also
//! give the Cranelift tier's bits, since they compute the same operations in the same order.
//! Binary ops (`add`, `sub`, `mul`, `div`, same-shape and broadcasting) run on the same
//! kernels' file: one IEEE operation each, so every tier gives the interpreter's bits.
//! Softmax and log-softmax (`kiln_jit::softmax_kernels` on the Rust tiers) run over every axis
//! of shapes around the registers, within the tolerance.

use kiln_ir::{Activation, BinaryOp, Graph, Op, Tensor, TensorType, Value};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use kiln_runtime::check::{ATOL, RTOL, jit_matches_interpreter_with};
use std::collections::HashMap;

/// Every activation, with parameters that put inputs on both sides of each bound.
const ACTS: [Activation; 11] = [
    Activation::Relu,
    Activation::LeakyRelu { alpha: 0.1 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Clip { min: 0.0, max: 6.0 },
    Activation::Clip {
        min: f32::NEG_INFINITY,
        max: 1.5,
    },
    Activation::HardSigmoid {
        alpha: 1.0 / 6.0,
        beta: 0.5,
    },
    Activation::Erf,
    Activation::Silu,
    Activation::Gelu,
    Activation::HardSwish,
];

/// Lengths around the registers (8 and 16 lanes, four registers per step) and long ones.
fn lengths() -> impl Iterator<Item = usize> {
    (1..70).chain([255, 1000, 16 * 1024 + 3, 100_003])
}

fn options(tier: Tier, threads: usize) -> JitOptions {
    JitOptions {
        gemm_tier: tier,
        threads,
        ..JitOptions::default()
    }
}

/// `act` over an input `[1, n]`.
fn one_activation(act: Activation, n: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([1, n])).unwrap();
    let y = g.add("y", Op::Activation(act), &[x]).unwrap();
    g.mark_output(y).unwrap();
    g
}

/// `n` floats: mostly in `[−12, 12)` (both tails of every exp), with NaN, ±∞, ±0, huge,
/// tiny and subnormal values about once in `special` (never when `special` is 0).
fn data(n: usize, seed: u64, special: u64) -> Vec<f32> {
    const SPECIALS: [f32; 16] = [
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        100.0,
        -100.0,
        1e30,
        -1e30,
        1e-3,
        -1e-8,
        1e-40,
        -1e-40,
        88.5,
        -88.5,
    ];
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if special > 0 && (s >> 8).is_multiple_of(special) {
                SPECIALS[(s >> 40) as usize % SPECIALS.len()]
            } else {
                ((s >> 40) % 24_000) as f32 / 1000.0 - 12.0
            }
        })
        .collect()
}

/// The graph's only output on `x` through the JIT.
fn jit(graph: &Graph, x: &Tensor<f32>, options: &JitOptions) -> Tensor<f32> {
    let inputs = HashMap::from([("x".to_string(), Value::F(x.clone()))]);
    let mut m = kiln_runtime::compile(graph, options).unwrap();
    m.set_weights(&HashMap::new()).unwrap();
    let got = m.run(&inputs).unwrap();
    got[0].1.as_f().unwrap().clone()
}

/// `got` against the interpreter's `want` on input `x`: any NaN for a NaN, the same bits for
/// an infinite or zero result and for a non-finite or zero input, else within the tolerance.
fn assert_close(x: &[f32], want: &[f32], got: &[f32], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}");
    for (i, ((&x, &a), &b)) in x.iter().zip(want).zip(got).enumerate() {
        let ok = if a.is_nan() {
            b.is_nan()
        } else if a.is_infinite() || a == 0.0 || !x.is_finite() || x == 0.0 {
            a.to_bits() == b.to_bits()
        } else {
            (a - b).abs() <= ATOL + RTOL * a.abs()
        };
        assert!(ok, "{what}: element {i}: x = {x:e}, interpreter {a:e}, JIT {b:e}");
    }
}

/// The same bits, any NaN for a NaN.
fn assert_same_bits(want: &[f32], got: &[f32], what: &str) {
    for (i, (&a, &b)) in want.iter().zip(got).enumerate() {
        assert!(
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            "{what}: element {i}: Cranelift tier {a:e}, Rust tier {b:e}"
        );
    }
}

/// Every activation, every length, every runnable tier, 1 and 2 threads, on inputs with
/// special values: close to the interpreter, and the Rust tiers bit for bit the Cranelift
/// tier.
#[test]
fn every_activation_every_length_every_tier() {
    for act in ACTS {
        for n in lengths() {
            let graph = one_activation(act, n);
            let xs = data(n, n as u64 * 7919 + 1, 9);
            let x = Tensor::new([1, n], xs.clone()).unwrap();
            let inputs = HashMap::from([("x".to_string(), Value::F(x.clone()))]);
            let want = kiln_interp::run::<f32>(&graph, &inputs, &HashMap::new()).unwrap();
            let want = want[0].1.as_f().unwrap().data().to_vec();
            let portable = jit(&graph, &x, &options(Tier::Cranelift, 1));
            for tier in Tier::runnable() {
                for threads in [1, 2] {
                    let got = jit(&graph, &x, &options(tier, threads));
                    let what = format!("{} n={n} {tier:?} threads={threads}", act.name());
                    assert_close(&xs, &want, got.data(), &what);
                    assert_same_bits(portable.data(), got.data(), &what);
                }
            }
        }
    }
}

/// The check the other JIT tests use (seeded inputs and `jit_matches_interpreter_with`), on
/// every tier and both thread counts.
#[test]
fn seeded_inputs_match_the_interpreter() {
    for act in ACTS {
        for n in [1, 15, 17, 63, 65, 4099, 40_000] {
            let graph = one_activation(act, n);
            for tier in Tier::runnable() {
                for threads in [1, 2] {
                    if let Err(e) = jit_matches_interpreter_with(&graph, n as u64, &options(tier, threads)) {
                        panic!("{} {tier:?} threads={threads}: {e}", act.name());
                    }
                }
            }
        }
    }
}

/// Each special value alone, through every activation on every tier: the interpreter's bits
/// (any NaN for a NaN) where the result is exact (NaN, ±∞, ±0, a saturated ±1 or 0).
#[test]
fn special_values_as_the_interpreter() {
    let xs = vec![
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
        200.0,
        -200.0,
    ];
    let n = xs.len();
    let x = Tensor::new([1, n], xs.clone()).unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(x.clone()))]);
    for act in ACTS {
        let graph = one_activation(act, n);
        let want = kiln_interp::run::<f32>(&graph, &inputs, &HashMap::new()).unwrap();
        let want = want[0].1.as_f().unwrap().data().to_vec();
        for tier in Tier::runnable() {
            let got = jit(&graph, &x, &options(tier, 1));
            assert_close(&xs, &want, got.data(), &format!("{} {tier:?}", act.name()));
        }
    }
}

/// A chain of every activation (each written over the value it reads, as the plan places
/// them) and SiLU / HardSwish products, long enough for two threads.
#[test]
fn chain_in_place_two_threads() {
    let n = 3 * 16 * 1024 + 5;
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([1, n])).unwrap();
    let s = g.add("s", Op::Activation(Activation::Sigmoid), &[x]).unwrap();
    let mut v = g.add("silu", Op::Binary(BinaryOp::Mul), &[x, s]).unwrap();
    for (i, act) in ACTS.into_iter().enumerate() {
        v = g.add(format!("a{i}"), Op::Activation(act), &[v]).unwrap();
    }
    let hs = g
        .add(
            "hs",
            Op::Activation(Activation::HardSigmoid {
                alpha: 1.0 / 6.0,
                beta: 0.5,
            }),
            &[v],
        )
        .unwrap();
    let y = g.add("hswish", Op::Binary(BinaryOp::Mul), &[v, hs]).unwrap();
    g.mark_output(y).unwrap();
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            if let Err(e) = jit_matches_interpreter_with(&g, 3, &options(tier, threads)) {
                panic!("{tier:?} threads={threads}: {e}");
            }
        }
    }
}

/// Same-shape `add`, `sub`, `mul`, `div` (`y` the second operand: a param), every length,
/// every tier, 1 and 2 threads, NaN, ±∞ and ±0 among the operands: the interpreter's bits.
#[test]
fn same_shape_binary_ops_bit_for_bit() {
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for n in lengths() {
            let seeds = [n as u64 + 5, n as u64 * 31 + 2];
            binary_bit_for_bit(op, &[1, n], &[1, n], seeds, 7);
        }
    }
}

/// `x op w`, `x` an input of dims `xd` and `w` a param of dims `wd` (seeded data with NaN,
/// ±∞ and ±0 about once in `special`), on every tier, 1 and 2 threads: the interpreter's bits.
fn binary_bit_for_bit(op: BinaryOp, xd: &[usize], wd: &[usize], [sx, sw]: [u64; 2], special: u64) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(xd.to_vec())).unwrap();
    let w = g.param("w", TensorType::f32(wd.to_vec())).unwrap();
    let z = g.add("z", Op::Binary(op), &[x, w]).unwrap();
    g.mark_output(z).unwrap();
    let (nx, nw) = (xd.iter().product::<usize>(), wd.iter().product::<usize>());
    let xs = Tensor::new(xd.to_vec(), data(nx, sx, special)).unwrap();
    let ws = Tensor::new(wd.to_vec(), data(nw, sw, special)).unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(xs))]);
    let weights = HashMap::from([("w".to_string(), ws)]);
    let want = kiln_interp::run::<f32>(&g, &inputs, &weights).unwrap();
    let want = want[0].1.as_f().unwrap();
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            let mut m = kiln_runtime::compile(&g, &options(tier, threads)).unwrap();
            m.set_weights(&weights).unwrap();
            let got = m.run(&inputs).unwrap();
            let what = format!("{op:?} {xd:?} {wd:?} {tier:?} threads={threads}");
            assert_same_bits(want.data(), got[0].1.as_f().unwrap().data(), &what);
        }
    }
}

/// Broadcasting `add`, `sub`, `mul`, `div` (either operand the smaller, as input or param)
/// on every tier, 1 and 2 threads (which split rows at odd elements): the interpreter's bits.
/// The shapes cover each way the Rust tiers read an operand in rows (a squeeze-and-excitation
/// scale per channel, a bias over a batch, a batch-wise operand, an outer product, a scalar, a
/// lower rank) and one they do not (an operand varying along two axes apart), which keeps the
/// general loop.
#[test]
fn broadcast_binary_ops_bit_for_bit() {
    let shapes: [(&[usize], &[usize]); 10] = [
        (&[1, 5, 7, 7], &[1, 5, 1, 1]),
        (&[1, 37, 13, 13], &[1, 37, 1, 1]),
        (&[1, 144, 56, 56], &[1, 144, 1, 1]),
        (&[2, 3, 4, 5], &[3, 1, 1]),
        (&[2, 3, 4, 5], &[2, 1, 4, 5]),
        (&[4, 1], &[1, 67]),
        (&[3, 1, 5], &[1, 4, 1]),
        (&[2, 3, 17], &[17]),
        (&[2, 3, 9], &[1]),
        (&[3, 1, 4, 1], &[1, 2, 1, 5]),
    ];
    for (a, b) in shapes {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            for (xd, wd) in [(a, b), (b, a)] {
                let (nx, nw) = (xd.iter().product::<usize>(), wd.iter().product::<usize>());
                binary_bit_for_bit(op, xd, wd, [nx as u64 + 3, nw as u64 * 7 + 1], 7);
            }
        }
    }
}

/// A product written over one of its operands (SiLU's `x·sigmoid(x)` over the sigmoid, and
/// `x·x` over nothing but itself) on every tier: the interpreter's bits.
#[test]
fn products_in_place() {
    let n = 2 * 16 * 1024 + 9;
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([2, n])).unwrap();
    let s = g.add("s", Op::Activation(Activation::Relu), &[x]).unwrap();
    let p = g.add("p", Op::Binary(BinaryOp::Mul), &[s, x]).unwrap();
    let q = g.add("q", Op::Binary(BinaryOp::Mul), &[p, p]).unwrap();
    let r = g.add("r", Op::Binary(BinaryOp::Sub), &[q, s]).unwrap();
    g.mark_output(r).unwrap();
    let xs = Tensor::new([2, n], data(2 * n, 11, 13)).unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(xs.clone()))]);
    let want = kiln_interp::run::<f32>(&g, &inputs, &HashMap::new()).unwrap();
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            let got = jit(&g, &xs, &options(tier, threads));
            let what = format!("{tier:?} threads={threads}");
            assert_same_bits(want[0].1.as_f().unwrap().data(), got.data(), &what);
        }
    }
}

/// Inference batch norm (`x·k + (bias − k·mean)`, `k = scale / √(var + ε)` per channel) on
/// every tier, 1 and 2 threads: planes of every remainder of the registers (1, 7, 9, 17, 49,
/// 3136 floats), a batch, a 2-D input (planes of one float). With NaN, ±∞ and ±0 among the
/// inputs and the scales, the Rust tiers give the Cranelift tier's bits (each channel's `k`
/// and shift with the same roundings, one FMA per float); on seeded inputs every tier is
/// within the JIT's tolerance of the interpreter, which computes `(x − mean) / √(var + ε) ·
/// scale + bias`.
#[test]
fn batch_norm_every_tier() {
    let shapes: [&[usize]; 7] = [
        &[1, 3, 1, 1],
        &[2, 5, 1, 7],
        &[1, 4, 3, 3],
        &[2, 3, 17],
        &[1, 6, 7, 7],
        &[1, 2, 56, 56],
        &[3, 11],
    ];
    let acts = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu { alpha: 0.1 }),
        Some(Activation::Clip { min: 0.0, max: 6.0 }),
        Some(Activation::Sigmoid),
    ];
    for (s, dims) in shapes.into_iter().enumerate() {
        let activation = acts[s % acts.len()];
        let c = dims[1];
        let mut g = Graph::new();
        let x = g.input("x", TensorType::f32(dims.to_vec())).unwrap();
        let ps: Vec<_> = ["scale", "bias", "mean", "var"]
            .iter()
            .map(|n| g.param(*n, TensorType::f32([c])).unwrap())
            .collect();
        let ins = [x, ps[0], ps[1], ps[2], ps[3]];
        let y = g
            .add(
                "y",
                Op::BatchNorm {
                    epsilon: 1e-5,
                    activation,
                },
                &ins,
            )
            .unwrap();
        g.mark_output(y).unwrap();
        let n = dims.iter().product::<usize>();
        let xs = Tensor::new(dims.to_vec(), data(n, s as u64 + 1, 9)).unwrap();
        let inputs = HashMap::from([("x".to_string(), Value::F(xs))]);
        let mut weights = HashMap::new();
        for (i, name) in ["scale", "bias", "mean", "var"].iter().enumerate() {
            // (the variance non-negative; the scales with special values now and then)
            let v = data(c, (s * 4 + i) as u64 + 11, if i == 0 { 3 } else { 0 });
            let v = if i == 3 {
                v.iter().map(|x| x.abs()).collect()
            } else {
                v
            };
            weights.insert(name.to_string(), Tensor::new(vec![c], v).unwrap());
        }
        let run = |tier: Tier, threads: usize| {
            let mut m = kiln_runtime::compile(&g, &options(tier, threads)).unwrap();
            m.set_weights(&weights).unwrap();
            let got = m.run(&inputs).unwrap();
            got[0].1.as_f().unwrap().clone()
        };
        let want = run(Tier::Cranelift, 1);
        for tier in Tier::runnable() {
            for threads in [1, 2] {
                let what = format!("batch norm {dims:?} {activation:?} {tier:?} threads={threads}");
                assert_same_bits(want.data(), run(tier, threads).data(), &what);
                if let Err(e) = jit_matches_interpreter_with(&g, s as u64, &options(tier, threads)) {
                    panic!("{what}: {e}");
                }
            }
        }
    }
}

/// Softmax and log-softmax (the Rust tiers' `softmax_kernels`, the Cranelift tier's rows) over
/// every axis of shapes around the registers: rows of contiguous elements (the last axis: 1
/// to 1000 elements, a partial last register, four registers per step) and rows whose
/// elements lie apart (a register of rows at a time: 1 to 69 rows per outer position, split
/// by two threads), with and without special values (a row with a NaN is NaN throughout, a
/// row with +∞ too, −∞ and ±1e30 are ordinary), on every tier and 1 and 2 threads: within the
/// tolerance of the interpreter, NaN where it is NaN; each row's softmax sums to 1.
#[test]
fn softmax_every_axis_every_tier() {
    let shapes: [&[usize]; 9] = [
        &[64, 1000],
        &[3, 37],
        &[1, 1],
        &[2, 69],
        &[5, 16],
        &[2, 5, 7, 3],
        &[1, 17, 9],
        &[4, 33, 2, 2],
        &[1, 10, 23, 3],
    ];
    for dims in shapes {
        for axis in 0..dims.len() {
            for log in [false, true] {
                let mut graph = Graph::new();
                let x = graph.input("x", TensorType::f32(dims.to_vec())).unwrap();
                let op = if log {
                    Op::LogSoftmax { axis: axis as i64 }
                } else {
                    Op::Softmax { axis: axis as i64 }
                };
                let y = graph.add("y", op, &[x]).unwrap();
                graph.mark_output(y).unwrap();
                let n: usize = dims.iter().product();
                for special in [0, 23] {
                    let xs = data(n, n as u64 * 31 + axis as u64, special);
                    let x = Tensor::new(dims.to_vec(), xs).unwrap();
                    let inputs = HashMap::from([("x".to_string(), Value::F(x.clone()))]);
                    let want = kiln_interp::run::<f32>(&graph, &inputs, &HashMap::new()).unwrap();
                    let want = want[0].1.as_f().unwrap().data().to_vec();
                    for tier in Tier::runnable() {
                        for threads in [1, 2] {
                            let got = jit(&graph, &x, &options(tier, threads));
                            let what = format!(
                                "{dims:?} axis {axis} log {log} special {special} {tier:?} threads={threads}"
                            );
                            for (i, (&a, &b)) in want.iter().zip(got.data()).enumerate() {
                                let ok = if a.is_nan() || a.is_infinite() {
                                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                                } else {
                                    (a - b).abs() <= ATOL + RTOL * a.abs()
                                };
                                assert!(ok, "{what}: element {i}: interpreter {a:e}, JIT {b:e}");
                            }
                            if !log && special == 0 {
                                // each row sums to 1: the rows are the positions of the other axes
                                let inner: usize = dims[axis + 1..].iter().product();
                                let len = dims[axis];
                                for r in 0..n / len {
                                    let at = |j: usize| (r / inner) * len * inner + j * inner + r % inner;
                                    let s: f32 = (0..len).map(|j| got.data()[at(j)]).sum();
                                    assert!((s - 1.0).abs() < 1e-4, "{what}: row {r} sums to {s}");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
