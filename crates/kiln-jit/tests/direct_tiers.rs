//! The direct kernels' paths of the Rust tiers (`direct.rs`) against the interpreter, bit for
//! bit, on every tier this CPU runs and on 1 and 2 threads: windowed pooling over the ring of
//! padded rows (column strides 1 and 2, 2×2 and 3×3 windows and the generic pass, dilations,
//! ceil mode, uneven paddings, planes narrower than a register, partial last passes, a
//! register stored whole past its row's end, NaN planes sent back to the row driver), and the
//! shapes that stay on the row driver (windows larger than the input, column strides past 2,
//! unpadded windows of at most four taps), 2×2 s2 windows that tile the input exactly,
//! small planes pooled eight at a time (channel-interleaved), max pooling of planes whose
//! rows fit registers, max pooling 3×3 s2 of planes with wide rows, and sums and averages
//! over flat planes.

use kiln_ir::{Graph, Op, Padding, Pool2d, PoolKind, Tensor, TensorType, Value};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use std::collections::HashMap;

/// `n` floats from `seed`: mostly in `[−4, 4)` on a coarse grid (so windows hold ties), with
/// NaNs, infinities and signed zeros about once in `special` (never when `special` is 0).
fn data(n: usize, seed: u64, special: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if special > 0 && (s >> 8).is_multiple_of(special) {
                [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0][(s >> 40) as usize % 6]
            } else if (s >> 20).is_multiple_of(5) {
                // signed zeros among the ties
                if (s >> 30) & 1 == 0 { 0.0 } else { -0.0 }
            } else {
                ((s >> 40) % 64) as f32 / 8.0 - 4.0
            }
        })
        .collect()
}

/// A pooling graph over an input of `dims`; `None` when shape inference rejects it.
fn try_pool_graph(p: Pool2d, dims: [usize; 4]) -> Option<Graph> {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(dims)).ok()?;
    let y = g.add("y", Op::Pool2d(p), &[x]).ok()?;
    g.mark_output(y).ok()?;
    Some(g)
}

fn pool_graph(p: Pool2d, dims: [usize; 4]) -> Graph {
    try_pool_graph(p.clone(), dims).unwrap_or_else(|| panic!("{p:?} on {dims:?}"))
}

/// `graph` on `x` equals the interpreter bit for bit (any NaN for a NaN) on every runnable
/// tier, on 1 and 2 threads.
fn bitwise(graph: &Graph, x: Tensor<f32>, what: &str) {
    let inputs = HashMap::from([("x".to_string(), Value::F(x))]);
    let want = kiln_interp::run::<f32>(graph, &inputs, &HashMap::new()).unwrap();
    let want = want[0].1.as_f().unwrap();
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            let opts = JitOptions {
                gemm_tier: tier,
                threads,
                ..JitOptions::default()
            };
            let mut m = kiln_runtime::compile(graph, &opts).unwrap();
            m.set_weights(&HashMap::new()).unwrap();
            let got = m.run(&inputs).unwrap();
            let got = got[0].1.as_f().unwrap();
            assert_eq!(want.shape(), got.shape(), "{what}");
            for (i, (a, b)) in want.data().iter().zip(got.data()).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{what}, {tier:?}, {threads} threads, element {i}: interpreter {a:?}, JIT {b:?}"
                );
            }
        }
    }
}

/// `(planes, h, w, kernel, stride, dilation, padding [top, left, bottom, right], ceil)`.
type PoolCase = (
    usize,
    usize,
    usize,
    [usize; 2],
    [usize; 2],
    [usize; 2],
    [usize; 4],
    bool,
);

#[test]
fn pooling_ring_paths_on_every_tier() {
    let cases: [PoolCase; 21] = [
        // ResNet-18's stem pool, and narrower images of it
        (3, 36, 36, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        // SqueezeNet's (no padding, odd input) and ceil mode
        (3, 27, 27, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (3, 28, 29, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
        // Inception's: 3×3 s1 p1 on small planes (one register, a partial one), and s2 with
        // the padding at the end only
        (20, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (6, 14, 14, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (5, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], false),
        // 2×2 s2, even and odd sizes (unpadded: the row driver), and padded (the ring)
        (4, 10, 10, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (4, 11, 13, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (4, 11, 13, [2, 2], [2, 2], [1, 1], [1, 1, 0, 0], false),
        // wide rows: several groups of registers, a partial last one
        (2, 9, 61, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (2, 10, 77, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        // mixed strides, the generic pass (other windows, dilations, row strides)
        (3, 12, 20, [3, 3], [1, 2], [1, 1], [1, 0, 1, 1], false),
        (3, 12, 20, [3, 3], [2, 1], [1, 1], [0, 1, 1, 0], false),
        (3, 13, 19, [2, 3], [1, 1], [1, 1], [1, 1, 0, 2], false),
        (3, 15, 21, [3, 3], [1, 1], [2, 2], [2, 2, 2, 2], false),
        (3, 15, 21, [3, 2], [3, 2], [1, 2], [1, 1, 2, 1], true),
        (2, 9, 9, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], false),
        // a row narrower than a register, 1×1 windows, a single output
        (9, 3, 3, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (4, 6, 5, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], false),
        (4, 3, 3, [3, 3], [1, 1], [1, 1], [0, 0, 0, 0], false),
        // enough planes for two threads' slices (16K outputs): registers stored whole past
        // their row's end up to the end of a slice
        (96, 15, 15, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
    ];
    let kinds = [
        PoolKind::Max,
        PoolKind::Sum,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    // two images, so planes run past a batch
    check_pool_kinds(&cases, &kinds, |planes| [2, planes / 2 + planes % 2], false);
}

/// Every case of `cases` with every kind of `kinds` over an input of `batch(planes)` images
/// and channels, bit for bit ([`bitwise`]) on grid values without and with specials, and,
/// with `fine`, on values whose sums round ([`fine`]).
fn check_pool_kinds(
    cases: &[PoolCase],
    kinds: &[PoolKind],
    batch: impl Fn(usize) -> [usize; 2],
    fine_values: bool,
) {
    for (i, &(planes, h, w, kernel, stride, dilation, pad, ceil)) in cases.iter().enumerate() {
        for (j, &kind) in kinds.iter().enumerate() {
            let p = Pool2d {
                kind,
                kernel,
                stride,
                dilation,
                padding: Padding::Explicit(pad),
                ceil_mode: ceil,
            };
            let [n, c] = batch(planes);
            let dims = [n, c, h, w];
            let graph = pool_graph(p, dims);
            let len = dims.iter().product();
            let seed = (i * 8 + j) as u64;
            for special in [0, 97] {
                let x = Tensor::new(dims, data(len, seed + special, special)).unwrap();
                bitwise(
                    &graph,
                    x,
                    &format!("case {i} {:?}, kind {kind:?}, special {special}", cases[i]),
                );
            }
            if fine_values {
                let x = Tensor::new(dims, fine(len, seed)).unwrap();
                bitwise(
                    &graph,
                    x,
                    &format!("case {i} {:?}, kind {kind:?}, fine", cases[i]),
                );
            }
        }
    }
}

/// 2×2 s2 windows that tile the input exactly (`direct.rs`' `pool_tiles`): rows of outputs
/// narrower than a register (stored whole over the next rows, exactly at the end of a
/// thread's slice and of the tensor), exactly one register, one and a bit (an overlapping
/// last register), 1×1 outputs, plane counts that are no multiple of 8 split across two
/// threads at any plane, NaN planes sent back to the row driver.
#[test]
fn pooling_exact_tiles_on_every_tier() {
    // (batch, channels, h, w)
    let cases = [
        (1, 1, 2, 2),
        (3, 5, 2, 2),
        (2, 3, 4, 6),
        (64, 6, 28, 28),
        (7, 143, 10, 10),
        (3, 7, 16, 16),
        (2, 5, 6, 18),
        (2, 3, 2, 34),
        (1, 3, 12, 64),
        (5, 1, 14, 2),
        // enough outputs for two threads, 1×1 planes
        (17, 1001, 2, 2),
        (1, 2049, 2, 14),
    ];
    let kinds = [
        PoolKind::Max,
        PoolKind::Sum,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    for (i, &(n, c, h, w)) in cases.iter().enumerate() {
        for (j, &kind) in kinds.iter().enumerate() {
            let graph = pool_graph(Pool2d::new(kind, [2, 2], [2, 2]), [n, c, h, w]);
            let len = n * c * h * w;
            for special in [0, 97] {
                let x = Tensor::new([n, c, h, w], data(len, (i * 8 + j) as u64 + special, special)).unwrap();
                bitwise(
                    &graph,
                    x,
                    &format!("{n}×{c}×{h}×{w}, kind {kind:?}, special {special}"),
                );
            }
        }
        // a NaN in a few planes only, the last input float among them
        let graph = pool_graph(Pool2d::new(PoolKind::Max, [2, 2], [2, 2]), [n, c, h, w]);
        let len = n * c * h * w;
        let mut x = data(len, i as u64, 0);
        for at in [0, len / 3, len - 1] {
            x[at] = f32::NAN;
        }
        bitwise(
            &graph,
            Tensor::new([n, c, h, w], x).unwrap(),
            &format!("{n}×{c}×{h}×{w}, NaN planes"),
        );
    }
}

/// Small planes, and planes pooled at column stride 2, pooled eight at a time,
/// channel-interleaved (`direct.rs`' `pool_channels`): rows of fewer and of more than eight
/// pixels, planes of fewer than eight floats (1×1, 2×3), outputs of fewer than eight, plane counts
/// that are no multiple of 8 (a last block of one to seven planes), slices of two threads that
/// start and end at any plane, a window over the whole plane, paddings, strides, dilations,
/// ceil mode and every kind. The AVX-512 tier runs this path in AVX2's registers for its
/// narrow rows (its wide rows at column stride 2 take its own ring).
#[test]
fn pooling_channel_blocks_on_every_tier() {
    // (batch, channels, h, w, kernel, stride, dilation, pad, ceil)
    type Case = (
        usize,
        usize,
        usize,
        usize,
        [usize; 2],
        [usize; 2],
        [usize; 2],
        [usize; 4],
        bool,
    );
    let cases: [Case; 16] = [
        (1, 8, 1, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0], false),
        // one window over the whole plane (ResNet-50's last pooling, 7 × 7 on 7 × 7)
        (1, 21, 7, 7, [7, 7], [1, 1], [1, 1], [0, 0, 0, 0], false),
        // rows of 28 outputs; a last window reaching past the input (ceil mode)
        (1, 9, 28, 28, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (2, 9, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (3, 5, 1, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (2, 9, 2, 3, [2, 2], [1, 1], [1, 1], [0, 0, 0, 0], false),
        (2, 11, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (1, 13, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (3, 7, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 1, 1], true),
        (2, 9, 9, 11, [3, 2], [2, 1], [2, 1], [2, 1, 1, 0], false),
        (1, 17, 5, 5, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], false),
        // two threads' slices (16K outputs and more), ending at any plane
        (3, 341, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (5, 203, 4, 4, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        // column stride 2 on rows wider than 32 outputs, and 5 × 5 windows there
        (1, 9, 20, 75, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true),
        (2, 8, 9, 81, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (1, 10, 13, 90, [5, 5], [1, 2], [1, 1], [2, 2, 2, 2], false),
    ];
    let kinds = [
        PoolKind::Max,
        PoolKind::Sum,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    for (i, &(n, c, h, w, kernel, stride, dilation, pad, ceil)) in cases.iter().enumerate() {
        for (j, &kind) in kinds.iter().enumerate() {
            let p = Pool2d {
                kind,
                kernel,
                stride,
                dilation,
                padding: Padding::Explicit(pad),
                ceil_mode: ceil,
            };
            let dims = [n, c, h, w];
            let graph = pool_graph(p, dims);
            let len = dims.iter().product();
            for special in [0, 97] {
                let x = Tensor::new(dims, data(len, (i * 8 + j) as u64 + special, special)).unwrap();
                bitwise(
                    &graph,
                    x,
                    &format!("case {i} {:?}, kind {kind:?}, special {special}", cases[i]),
                );
            }
            // values whose sums round, so that the order of each window's taps shows
            let x = Tensor::new(dims, fine(len, (i * 8 + j) as u64)).unwrap();
            bitwise(
                &graph,
                x,
                &format!("case {i} {:?}, kind {kind:?}, fine", cases[i]),
            );
        }
    }
}

/// `n` floats from `seed` in `[−4, 4)` with every bit of their mantissas random (sums of a
/// few of them round, unlike those of [`data`]'s grid).
fn fine(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
        })
        .collect()
}

/// Sums and averages over the flat planes (`direct.rs`' `pool_flat`, AVX-512: stride 1, as
/// many outputs per row as inputs, at most 1296 outputs per plane): Inception's 3 × 3 s1 p1
/// averages on 17 × 17, 35 × 35 and 8 × 8, planes of a multiple of sixteen outputs and of
/// one more, a plane of one pixel, uneven rows of padding, dilation, padding wider than the
/// plane, 5 × 5 windows, one-row and one-column kernels, and two threads' slices of many
/// planes; every kind of sum on grid values (ties, signed zeros, NaNs and infinities) and on
/// values whose sums round (the order of each window's taps shows).
#[test]
fn sum_pooling_flat_planes_on_every_tier() {
    let cases: [PoolCase; 12] = [
        (5, 17, 17, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (3, 35, 35, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (9, 8, 8, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (4, 9, 16, [2, 2], [1, 1], [1, 1], [1, 0, 0, 1], false),
        (4, 7, 7, [5, 5], [1, 1], [1, 1], [2, 2, 2, 2], false),
        (6, 1, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (3, 3, 20, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (5, 5, 9, [3, 3], [1, 1], [2, 2], [0, 2, 4, 2], false),
        (5, 2, 6, [3, 1], [1, 1], [1, 1], [2, 0, 0, 0], false),
        (5, 4, 3, [1, 5], [1, 1], [1, 3], [0, 6, 0, 6], false),
        (3, 13, 13, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], true),
        (301, 14, 14, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
    ];
    let kinds = [
        PoolKind::Sum,
        PoolKind::Avg {
            count_include_pad: false,
        },
        PoolKind::Avg {
            count_include_pad: true,
        },
    ];
    check_pool_kinds(&cases, &kinds, |planes| [1, planes], true);
}

/// Max pooling of planes whose rows fit registers (`direct.rs`' `pool_small`, AVX-512: output
/// rows of at most 16 columns, input rows of at most 31): rows of exactly 16 outputs and of 31
/// inputs (the last lane left for −∞), a second register of one float (17), one register
/// (7, 13), 64 rows and 65 (past the path: the ring or the channel blocks), 2 × 2 and 3 × 3
/// windows at strides 1 and 2, dilation, uneven paddings, ceil mode, windows whose last
/// column is padding, NaN planes, ties and signed zeros, and two threads' slices.
#[test]
fn max_pooling_small_planes_on_every_tier() {
    let cases: [PoolCase; 12] = [
        (7, 16, 16, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (9, 31, 31, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (9, 31, 31, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (5, 17, 17, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (11, 7, 7, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1], false),
        (11, 7, 7, [2, 2], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (6, 13, 13, [2, 2], [1, 1], [1, 1], [0, 0, 1, 1], false),
        (300, 14, 14, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (4, 64, 20, [3, 3], [1, 2], [1, 1], [1, 0, 1, 2], false),
        (4, 65, 20, [3, 3], [1, 2], [1, 1], [1, 0, 1, 2], false),
        (5, 20, 25, [3, 3], [2, 2], [2, 2], [2, 1, 0, 2], false),
        (3, 9, 28, [3, 3], [1, 2], [1, 1], [0, 1, 1, 0], true),
    ];
    max_pool_cases(&cases);
}

/// Max pooling 3 × 3 at stride 2 of planes with rows wider than a register (`direct.rs`'
/// `pool_wide`, AVX-512: separable, no copy): ResNet's stem pool (padding 1), SqueezeNet's
/// (odd rows, ceil mode: the last window's third column past the row), Inception's (no
/// padding, odd rows), uneven paddings on either side, 17 outputs (a second register of one
/// column), 32 (two whole registers), 256 (the most registers) and 257 (past the path: the
/// ring), rows of one and two inputs below the window, NaN planes, ties and signed zeros, and
/// two threads' slices.
#[test]
fn max_pooling_wide_planes_on_every_tier() {
    let cases: [PoolCase; 12] = [
        (3, 40, 112, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (3, 23, 111, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], true),
        (2, 21, 147, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (4, 9, 35, [3, 3], [2, 2], [1, 1], [1, 0, 0, 1], false),
        (4, 10, 36, [3, 3], [2, 2], [1, 1], [0, 1, 1, 0], true),
        (5, 6, 35, [3, 3], [2, 2], [1, 1], [0, 1, 1, 1], false),
        (3, 5, 64, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (3, 4, 65, [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], false),
        (2, 3, 512, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (2, 3, 514, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (1, 1, 40, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], false),
        (130, 9, 40, [3, 3], [2, 2], [1, 1], [1, 1, 1, 1], true),
    ];
    max_pool_cases(&cases);
}

/// Max pooling of each case of `cases` over one image, bit for bit ([`bitwise`]) on grid values
/// without and with specials (NaNs, infinities, signed zeros).
fn max_pool_cases(cases: &[PoolCase]) {
    for (i, &(planes, h, w, kernel, stride, dilation, pad, ceil)) in cases.iter().enumerate() {
        let p = Pool2d {
            kind: PoolKind::Max,
            kernel,
            stride,
            dilation,
            padding: Padding::Explicit(pad),
            ceil_mode: ceil,
        };
        let dims = [1, planes, h, w];
        let graph = pool_graph(p, dims);
        let len = dims.iter().product();
        for special in [0, 97] {
            let x = Tensor::new(dims, data(len, i as u64 + special, special)).unwrap();
            bitwise(&graph, x, &format!("case {i} {:?}, special {special}", cases[i]));
        }
    }
}

/// A NaN in one plane of a max pooling: that plane is computed again with the interpreter's
/// NaN rule, the others (and both threads' slices) keep the ring's values.
#[test]
fn max_pooling_nan_planes_on_every_tier() {
    for (h, w, s) in [(7, 7, 1), (14, 14, 2), (20, 40, 2)] {
        let p = Pool2d {
            padding: Padding::uniform(1),
            ..Pool2d::new(PoolKind::Max, [3, 3], [s, s])
        };
        let dims = [1, 200, h, w];
        let graph = pool_graph(p, dims);
        let n: usize = dims.iter().product();
        let mut x = data(n, 5, 0);
        for plane in [0, 3, 101, 199] {
            x[plane * h * w + (plane * 7) % (h * w)] = f32::NAN;
        }
        // both infinities in one plane and lane: a needless recompute, the same values
        x[50 * h * w] = f32::INFINITY;
        x[50 * h * w + w] = f32::NEG_INFINITY;
        bitwise(&graph, Tensor::new(dims, x).unwrap(), &format!("{h}×{w} s{s}"));
    }
}

/// Shapes that stay on the row driver: windows larger than the input, a column stride of 3
/// (paddings as wide as the window are in `tiers.rs`' `wide_paddings_on_every_tier`).
#[test]
fn pooling_row_driver_shapes_on_every_tier() {
    for (k, s, pad, h, w) in [
        (5, 1, 2, 3, 20),
        (7, 1, 3, 5, 30),
        (3, 3, 1, 9, 40),
        (3, 4, 1, 8, 50),
    ] {
        for kind in [
            PoolKind::Max,
            PoolKind::Avg {
                count_include_pad: false,
            },
        ] {
            let p = Pool2d {
                padding: Padding::uniform(pad),
                ..Pool2d::new(kind, [k, k], [s, s])
            };
            let graph = try_pool_graph(p.clone(), [1, 3, h, w]).unwrap_or_else(|| panic!("{p:?}"));
            let x = Tensor::new([1, 3, h, w], data(3 * h * w, k as u64, 40)).unwrap();
            bitwise(&graph, x, &format!("k {k} s {s} pad {pad} {h}×{w} {kind:?}"));
        }
    }
}
