//! Pooling against hand-computed values, and avg pooling's divisor against PyTorch's formula.

#[macro_use]
mod common;

use common::{assert_close, random, seq, t};
use kiln_interp::Float;
use kiln_interp::pool::{adaptive_pool, global_pool, max_pool2d_argmax, pool2d};
use kiln_ir::{Padding, Pool2d, PoolKind, ReduceKind, Tensor};
use proptest::prelude::*;

const MAX: PoolKind = PoolKind::Max;
const SUM: PoolKind = PoolKind::Sum;
const AVG_PAD: PoolKind = PoolKind::Avg {
    count_include_pad: true,
};
const AVG_NOPAD: PoolKind = PoolKind::Avg {
    count_include_pad: false,
};

fn pool(kind: PoolKind, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 4], ceil: bool) -> Pool2d {
    Pool2d {
        padding: Padding::Explicit(padding),
        ceil_mode: ceil,
        ..Pool2d::new(kind, kernel, stride)
    }
}

/// x = 1..16 on 4×4, 2×2 windows with stride 2: top-left elements 1, 3, 9, 11; a window with
/// top-left v holds v, v+1, v+4, v+5 (max v+5, sum 4v+10).
fn basic_2x2<T: Float>() {
    let x = seq::<T>(&[1, 1, 4, 4]);
    let run = |k| pool2d(&x, &pool(k, [2, 2], [2, 2], [0; 4], false)).unwrap();
    assert_close(&run(MAX), &[1, 1, 2, 2], &[6.0, 8.0, 14.0, 16.0]);
    assert_close(&run(SUM), &[1, 1, 2, 2], &[14.0, 22.0, 46.0, 54.0]);
    assert_close(&run(AVG_PAD), &[1, 1, 2, 2], &[3.5, 5.5, 11.5, 13.5]);
    assert_close(&run(AVG_NOPAD), &[1, 1, 2, 2], &[3.5, 5.5, 11.5, 13.5]);
}

/// Overlapping windows (kernel 3 > stride 1) on 1..16: the maxima are the bottom-right
/// elements 11, 12, 15, 16. Also checks batch and channel planes are pooled separately.
fn overlapping_and_planes<T: Float>() {
    let mut data: Vec<f64> = (1..=16).map(f64::from).collect();
    data.extend((1..=16).map(|v| -f64::from(v)));
    let x = t::<T>(&[2, 1, 4, 4], &data);
    let y = pool2d(&x, &pool(MAX, [3, 3], [1, 1], [0; 4], false)).unwrap();
    // second plane: max of negated values = −(min) = −(top-left) = −1, −2, −5, −6
    assert_close(
        &y,
        &[2, 1, 2, 2],
        &[11.0, 12.0, 15.0, 16.0, -1.0, -2.0, -5.0, -6.0],
    );
}

/// 3×3 windows, stride 1, padding 1 on x = [[1,2,3],[4,5,6],[7,8,9]]. Window sums:
/// ```text
/// 12 21 16
/// 27 45 33
/// 24 39 28
/// ```
/// With padding counted every divisor is 9; without, the real counts 4 6 4 / 6 9 6 / 4 6 4.
fn count_include_pad<T: Float>() {
    let x = seq::<T>(&[1, 1, 3, 3]);
    let sums = [12.0, 21.0, 16.0, 27.0, 45.0, 33.0, 24.0, 39.0, 28.0];
    let counts = [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0];
    let run = |k| pool2d(&x, &pool(k, [3, 3], [1, 1], [1; 4], false)).unwrap();
    assert_close(&run(SUM), &[1, 1, 3, 3], &sums);
    assert_close(&run(AVG_PAD), &[1, 1, 3, 3], &sums.map(|s| s / 9.0));
    let nopad: Vec<f64> = sums.iter().zip(counts).map(|(s, c)| s / c).collect();
    assert_close(&run(AVG_NOPAD), &[1, 1, 3, 3], &nopad);
}

/// Ceil mode along the width, x = [1..6], kernel 3, stride 2, padding 1 on both sides:
/// padded `_ 1 2 3 4 5 6 _` (8 wide). Floor gives ⌊5/2⌋+1 = 3 windows, ceil ⌈5/2⌉+1 = 4; the
/// 4th starts at padded 6 (inside the input) and covers 6, the end padding, and one position
/// past the padded input:
/// windows `[_,1,2] [2,3,4] [4,5,6] [6,_,·]`.
/// PyTorch's divisor with padding counted: `min(start+3, 6+1) − start` for start = −1, 1, 3, 5
/// → 3, 3, 3, 2.
fn ceil_mode<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 6]);
    let run = |k, ceil| pool2d(&x, &pool(k, [1, 3], [1, 2], [0, 1, 0, 1], ceil)).unwrap();
    assert_close(&run(MAX, false), &[1, 1, 1, 3], &[2.0, 4.0, 6.0]);
    assert_close(&run(MAX, true), &[1, 1, 1, 4], &[2.0, 4.0, 6.0, 6.0]);
    assert_close(&run(SUM, true), &[1, 1, 1, 4], &[3.0, 9.0, 15.0, 6.0]);
    assert_close(&run(AVG_PAD, true), &[1, 1, 1, 4], &[1.0, 3.0, 5.0, 3.0]);
    assert_close(&run(AVG_NOPAD, true), &[1, 1, 1, 4], &[1.5, 3.0, 5.0, 6.0]);
}

/// Ceil mode's dropped window: x = [1..5], kernel 2, stride 2, padding 1 both sides, padded
/// `_ 1 2 3 4 5 _` (7 wide). ⌈5/2⌉+1 = 4 windows, but the 4th would start at padded 6, in the
/// end padding, so it is dropped: 3 windows `[_,1] [2,3] [4,5]`, as in floor mode.
fn ceil_mode_drops_last_window<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 5]);
    for ceil in [false, true] {
        let run = |k| pool2d(&x, &pool(k, [1, 2], [1, 2], [0, 1, 0, 1], ceil)).unwrap();
        assert_close(&run(MAX), &[1, 1, 1, 3], &[1.0, 3.0, 5.0]);
        assert_close(&run(AVG_PAD), &[1, 1, 1, 3], &[0.5, 2.5, 4.5]);
        assert_close(&run(AVG_NOPAD), &[1, 1, 1, 3], &[1.0, 2.5, 4.5]);
    }
    // Without padding, ceil mode on x = [1..5], kernel 2, stride 2 keeps a partial last window [5].
    let p = pool(AVG_NOPAD, [1, 2], [1, 2], [0; 4], true);
    assert_close(&pool2d(&x, &p).unwrap(), &[1, 1, 1, 3], &[1.5, 3.5, 5.0]);
}

/// Dilation 2 along the width of [1..5], kernel 2: windows (0,2), (1,3), (2,4).
fn dilation<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 5]);
    let p = |k| Pool2d {
        dilation: [1, 2],
        ..Pool2d::new(k, [1, 2], [1, 1])
    };
    assert_close(&pool2d(&x, &p(MAX)).unwrap(), &[1, 1, 1, 3], &[3.0, 4.0, 5.0]);
    assert_close(&pool2d(&x, &p(SUM)).unwrap(), &[1, 1, 1, 3], &[4.0, 6.0, 8.0]);
    assert_close(
        &pool2d(&x, &p(AVG_NOPAD)).unwrap(),
        &[1, 1, 1, 3],
        &[2.0, 3.0, 4.0],
    );
}

/// Same-padded pooling resolves the padding with the shape rule: width 5, kernel 2, stride 2
/// → 3 outputs, one padding column, at the end (upper) or the beginning (lower).
fn same_padding<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 5]);
    let p = |pad| Pool2d {
        padding: pad,
        ..Pool2d::new(SUM, [1, 2], [1, 2])
    };
    assert_close(
        &pool2d(&x, &p(Padding::SameUpper)).unwrap(),
        &[1, 1, 1, 3],
        &[3.0, 7.0, 5.0],
    );
    assert_close(
        &pool2d(&x, &p(Padding::SameLower)).unwrap(),
        &[1, 1, 1, 3],
        &[1.0, 5.0, 9.0],
    );
}

/// Ties go to the first maximum in row-major window order, padding never wins, and the argmax
/// is the winner's in-plane index `ih·W + iw`.
fn max_ties_and_argmax<T: Float>() {
    // all equal: the first element of each window
    let x = t::<T>(&[1, 1, 2, 4], &[5.0; 8]);
    let p = pool(MAX, [2, 2], [2, 2], [0; 4], false);
    assert_close(&pool2d(&x, &p).unwrap(), &[1, 1, 1, 2], &[5.0, 5.0]);
    assert_eq!(max_pool2d_argmax(&x, &p).unwrap().data(), &[0, 2]);
    // 3×3 window with the maximum 9 at (0,2) and at (1,0): row-major order picks (0,2) = 2
    // (column-major would pick (1,0) = 3)
    let x = t::<T>(&[1, 1, 3, 3], &[1.0, 2.0, 9.0, 9.0, 0.0, 0.0, 0.0, 0.0, 9.0]);
    let p = pool(MAX, [3, 3], [1, 1], [0; 4], false);
    assert_eq!(max_pool2d_argmax(&x, &p).unwrap().data(), &[2]);
    // all −1 with padding 1: the zero padding must not win; each window's first real element does
    let x = t::<T>(&[1, 1, 2, 2], &[-1.0; 4]);
    let p = pool(MAX, [2, 2], [1, 1], [1; 4], false);
    assert_close(&pool2d(&x, &p).unwrap(), &[1, 1, 3, 3], &[-1.0; 9]);
    assert_eq!(
        max_pool2d_argmax(&x, &p).unwrap().data(),
        &[0, 0, 1, 0, 0, 1, 2, 2, 3]
    );
    // distinct values: the argmax points at the maximum
    let x = seq::<T>(&[1, 1, 4, 4]);
    let p = pool(MAX, [2, 2], [2, 2], [0; 4], false);
    assert_eq!(max_pool2d_argmax(&x, &p).unwrap().data(), &[5, 7, 13, 15]);
    assert_eq!(max_pool2d_argmax(&x, &p).unwrap().dims(), &[1, 1, 2, 2]);
    // argmax is for max pooling only
    assert!(max_pool2d_argmax(&x, &pool(SUM, [2, 2], [2, 2], [0; 4], false)).is_err());
}

/// Planes [1,2,3,4] and [−1,−5,−2,−3]: max 4, −1; mean 2.5, −2.75.
fn global<T: Float>() {
    let x = t::<T>(&[1, 2, 2, 2], &[1.0, 2.0, 3.0, 4.0, -1.0, -5.0, -2.0, -3.0]);
    assert_close(
        &global_pool(&x, ReduceKind::Max).unwrap(),
        &[1, 2, 1, 1],
        &[4.0, -1.0],
    );
    assert_close(
        &global_pool(&x, ReduceKind::Avg).unwrap(),
        &[1, 2, 1, 1],
        &[2.5, -2.75],
    );
}

/// Adaptive 5 → 3: windows [0,2), [1,4), [3,5) of [1..5] (they overlap); 2 → 3: [0,1), [0,2),
/// [1,2); 4×4 → 2×2 is the plain 2×2 pool.
fn adaptive<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 5]);
    assert_close(
        &adaptive_pool(&x, ReduceKind::Avg, [1, 3]).unwrap(),
        &[1, 1, 1, 3],
        &[1.5, 3.0, 4.5],
    );
    assert_close(
        &adaptive_pool(&x, ReduceKind::Max, [1, 3]).unwrap(),
        &[1, 1, 1, 3],
        &[2.0, 4.0, 5.0],
    );
    let x = t::<T>(&[1, 1, 1, 2], &[1.0, 3.0]);
    assert_close(
        &adaptive_pool(&x, ReduceKind::Avg, [1, 3]).unwrap(),
        &[1, 1, 1, 3],
        &[1.0, 2.0, 3.0],
    );
    let x = seq::<T>(&[1, 1, 4, 4]);
    let y = adaptive_pool(&x, ReduceKind::Avg, [2, 2]).unwrap();
    assert_close(&y, &[1, 1, 2, 2], &[3.5, 5.5, 11.5, 13.5]);
    // 5×5 → 3×3 on both axes: rows and columns use the windows above. x = 1..25, v = 5r + c + 1;
    // window rows [0,2) cols [0,2): mean of 1, 2, 6, 7 = 4
    let x = seq::<T>(&[1, 1, 5, 5]);
    let y = adaptive_pool(&x, ReduceKind::Avg, [3, 3]).unwrap();
    let win = [(0.0, 2.0), (1.0, 4.0), (3.0, 5.0)];
    let mean = |(a, b): (f64, f64)| (a + b - 1.0) / 2.0; // mean index of [a, b)
    let mut want = Vec::new();
    for r in win {
        for c in win {
            want.push(5.0 * mean(r) + mean(c) + 1.0);
        }
    }
    assert_close(&y, &[1, 1, 3, 3], &want);
    assert_eq!(want[0], 4.0);
}

/// With dilation a window can miss the input entirely: width 1, kernel 2, dilation 3, padding
/// 1 left and 2 right: padded `_ x _ _`, taps at padded 0 and 3, both padding. The shape rule
/// rejects it, so the kernel never has to invent a value for an empty window.
fn window_of_only_padding<T: Float>() {
    let x = t::<T>(&[1, 1, 1, 1], &[7.0]);
    let p = Pool2d {
        dilation: [1, 3],
        padding: Padding::Explicit([0, 1, 0, 2]),
        ..Pool2d::new(MAX, [1, 2], [1, 1])
    };
    let err = pool2d(&x, &p).unwrap_err();
    assert!(err.contains("holds only padding"), "{err}");
    assert!(max_pool2d_argmax(&x, &p).is_err());
}

both! {
    pool_window_of_only_padding => window_of_only_padding,
    pool_basic_2x2 => basic_2x2,
    pool_overlapping_and_planes => overlapping_and_planes,
    pool_count_include_pad => count_include_pad,
    pool_ceil_mode => ceil_mode,
    pool_ceil_mode_drops_last_window => ceil_mode_drops_last_window,
    pool_dilation => dilation,
    pool_same_padding => same_padding,
    pool_max_ties_and_argmax => max_ties_and_argmax,
    pool_global => global,
    pool_adaptive => adaptive,
}

/// Average pooling as PyTorch's `avg_pool2d` computes it (dilation 1), written out from its
/// source: the window `[hstart, hend)` is clipped to the padded input for the divisor when
/// padding is counted, and to the real input for the sum and the other divisor.
fn torch_avg_pool(
    x: &Tensor<f64>,
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 4],
    out: [usize; 2],
    include: bool,
) -> Vec<f64> {
    let [n, c, h, w] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let (h, w) = (h as isize, w as isize);
    let mut y = Vec::new();
    for plane in 0..n * c {
        for oh in 0..out[0] as isize {
            for ow in 0..out[1] as isize {
                let mut hstart = oh * s[0] as isize - p[0] as isize;
                let mut wstart = ow * s[1] as isize - p[1] as isize;
                let mut hend = (hstart + k[0] as isize).min(h + p[2] as isize);
                let mut wend = (wstart + k[1] as isize).min(w + p[3] as isize);
                let pool_size = (hend - hstart) * (wend - wstart);
                hstart = hstart.max(0);
                wstart = wstart.max(0);
                hend = hend.min(h);
                wend = wend.min(w);
                let mut sum = 0.0;
                for ih in hstart..hend {
                    for iw in wstart..wend {
                        sum += x.data()[plane * (h * w) as usize + (ih * w + iw) as usize];
                    }
                }
                let div = if include {
                    pool_size
                } else {
                    (hend - hstart) * (wend - wstart)
                };
                y.push(sum / div as f64);
            }
        }
    }
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn avg_pool_matches_pytorch_formula(
        h in 1usize..8, w in 1usize..8, k in (1usize..4, 1usize..4), s in (1usize..4, 1usize..4),
        p in (0usize..3, 0usize..3, 0usize..3, 0usize..3), ceil: bool, include: bool, seed in 0u64..100,
    ) {
        let pad = [p.0, p.1, p.2, p.3];
        let x = random::<f64>(&[2, 2, h, w], seed);
        let kind = PoolKind::Avg { count_include_pad: include };
        let Ok(y) = pool2d(&x, &pool(kind, [k.0, k.1], [s.0, s.1], pad, ceil)) else { return Ok(()) };
        let want = torch_avg_pool(&x, [k.0, k.1], [s.0, s.1], pad, [y.dims()[2], y.dims()[3]], include);
        for (a, b) in y.data().iter().zip(&want) {
            prop_assert!((a - b).abs() < 1e-12, "{} vs {}", a, b);
        }
    }
}
