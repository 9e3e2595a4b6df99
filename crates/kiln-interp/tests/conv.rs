//! conv2d and conv_transpose2d against hand-computed values, and the adjoint identity
//! `<conv(x), y> = <x, conv_transpose(y)>`.

#[macro_use]
mod common;

use common::{assert_close, random, seq, t};
use kiln_interp::Float;
use kiln_interp::conv::{conv_transpose2d, conv2d};
use kiln_ir::{Conv2d, ConvTranspose2d, Padding, Tensor};
use proptest::prelude::*;

fn conv(stride: [usize; 2], dilation: [usize; 2], padding: Padding, groups: usize) -> Conv2d {
    Conv2d {
        stride,
        dilation,
        padding,
        groups,
        activation: None,
    }
}

/// x = 1..16 on 4×4, w = [[1,2],[3,4]], stride 2, bias 0.5. A window whose top-left element
/// is v sums v + 2(v+1) + 3(v+4) + 4(v+5) = 10v + 34; top-left elements are 1, 3, 9, 11.
fn stride_and_bias<T: Float>() {
    let x = seq::<T>(&[1, 1, 4, 4]);
    let w = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t::<T>(&[1], &[0.5]);
    let y = conv2d(&x, &w, Some(&b), &conv([2, 2], [1, 1], Padding::Valid, 1)).unwrap();
    assert_close(&y, &[1, 1, 2, 2], &[44.5, 64.5, 124.5, 144.5]);
}

/// Identity 1×1 kernel: each padding side shows up as a row/column of zeros on that side only.
fn padding_each_side<T: Float>() {
    let x = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = t::<T>(&[1, 1, 1, 1], &[1.0]);
    let run = |p: [usize; 4]| conv2d(&x, &w, None, &conv([1, 1], [1, 1], Padding::Explicit(p), 1)).unwrap();
    assert_close(&run([1, 0, 0, 0]), &[1, 1, 3, 2], &[0.0, 0.0, 1.0, 2.0, 3.0, 4.0]); // top
    assert_close(&run([0, 1, 0, 0]), &[1, 1, 2, 3], &[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]); // left
    assert_close(&run([0, 0, 1, 0]), &[1, 1, 3, 2], &[1.0, 2.0, 3.0, 4.0, 0.0, 0.0]); // bottom
    assert_close(&run([0, 0, 0, 1]), &[1, 1, 2, 3], &[1.0, 2.0, 0.0, 3.0, 4.0, 0.0]); // right
}

/// 2×2 ones over [[1,2],[3,4]] padded top 1, right 2:
/// ```text
/// 0 0 0 0
/// 1 2 0 0
/// 3 4 0 0
/// ```
fn asymmetric_padding<T: Float>() {
    let x = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = t::<T>(&[1, 1, 2, 2], &[1.0; 4]);
    let y = conv2d(
        &x,
        &w,
        None,
        &conv([1, 1], [1, 1], Padding::Explicit([1, 0, 0, 2]), 1),
    )
    .unwrap();
    assert_close(&y, &[1, 1, 2, 3], &[3.0, 2.0, 0.0, 10.0, 6.0, 0.0]);
}

/// Dilation 2: taps at v, v+2, v+8, v+10 of x = 1..16 on 4×4, weights 1..4:
/// v + 2(v+2) + 3(v+8) + 4(v+10) = 10v + 68, for v = 1, 2, 5, 6.
fn dilation<T: Float>() {
    let x = seq::<T>(&[1, 1, 4, 4]);
    let w = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let y = conv2d(&x, &w, None, &conv([1, 1], [2, 2], Padding::Valid, 1)).unwrap();
    assert_close(&y, &[1, 1, 2, 2], &[78.0, 88.0, 118.0, 128.0]);
}

/// Batch 2, 2 → 3 channels, 1×1 kernel: a per-pixel matrix product plus bias.
fn batch_and_channels<T: Float>() {
    let x = t::<T>(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
    let w = t::<T>(&[3, 2, 1, 1], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let b = t::<T>(&[3], &[0.0, 0.0, 10.0]);
    let y = conv2d(&x, &w, Some(&b), &Conv2d::default()).unwrap();
    assert_close(&y, &[2, 3, 1, 1], &[1.0, 2.0, 13.0, 3.0, 4.0, 17.0]);
}

/// Groups 2 over 4 channels [1, 2, 3, 4]: outputs 0, 1 see channels 0, 1; outputs 2, 3 see 2, 3.
fn groups<T: Float>() {
    let x = t::<T>(&[1, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
    let g = conv([1, 1], [1, 1], Padding::Valid, 2);
    let w = t::<T>(&[2, 2, 1, 1], &[1.0, 10.0, 100.0, 1000.0]);
    assert_close(&conv2d(&x, &w, None, &g).unwrap(), &[1, 2, 1, 1], &[21.0, 4300.0]);
    let w = t::<T>(&[4, 2, 1, 1], &[1.0, 1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0]);
    assert_close(
        &conv2d(&x, &w, None, &g).unwrap(),
        &[1, 4, 1, 1],
        &[3.0, -1.0, 7.0, -1.0],
    );
}

/// Depthwise (groups = C = 2) 2×2 kernels on 3×3 planes: channel 0 = 1..9 with a ones kernel
/// (2×2 window sums 12, 16, 24, 28); channel 1 = 10·(1..9) with [[1,2],[3,4]]: 10·(10v + 27)
/// for top-left v = 1, 2, 4, 5.
fn depthwise<T: Float>() {
    let mut data: Vec<f64> = (1..=9).map(f64::from).collect();
    data.extend((1..=9).map(|v| 10.0 * f64::from(v)));
    let x = t::<T>(&[1, 2, 3, 3], &data);
    let w = t::<T>(&[2, 1, 2, 2], &[1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 4.0]);
    let y = conv2d(&x, &w, None, &conv([1, 1], [1, 1], Padding::Valid, 2)).unwrap();
    assert_close(
        &y,
        &[1, 2, 2, 2],
        &[12.0, 16.0, 24.0, 28.0, 370.0, 470.0, 670.0, 770.0],
    );
}

/// Width 5, kernel [1, 10], stride 2: `same` gives 3 outputs and a total padding of
/// 2·2 + 2 − 5 = 1, at the end for same_upper and at the beginning for same_lower.
fn same_upper_vs_lower<T: Float>() {
    let x = seq::<T>(&[1, 1, 1, 5]);
    let w = t::<T>(&[1, 1, 1, 2], &[1.0, 10.0]);
    let up = conv2d(&x, &w, None, &conv([1, 2], [1, 1], Padding::SameUpper, 1)).unwrap();
    // windows [1,2], [3,4], [5,pad]
    assert_close(&up, &[1, 1, 1, 3], &[21.0, 43.0, 5.0]);
    let low = conv2d(&x, &w, None, &conv([1, 2], [1, 1], Padding::SameLower, 1)).unwrap();
    // windows [pad,1], [2,3], [4,5]
    assert_close(&low, &[1, 1, 1, 3], &[10.0, 32.0, 54.0]);
}

/// A kernel as large as the input is a dense layer over the flattened input.
fn full_kernel_is_dense<T: Float>() {
    let x = random::<T>(&[2, 3, 4, 5], 1);
    let w = random::<T>(&[6, 3, 4, 5], 2);
    let y = conv2d(&x, &w, None, &Conv2d::default()).unwrap();
    let mut want = Vec::new();
    for n in 0..2 {
        for o in 0..6 {
            let xs = &x.data()[n * 60..(n + 1) * 60];
            let ws = &w.data()[o * 60..(o + 1) * 60];
            want.push(
                xs.iter()
                    .zip(ws)
                    .map(|(a, b)| a.to_f64() * b.to_f64())
                    .sum::<f64>(),
            );
        }
    }
    let tol = if std::mem::size_of::<T>() == 4 {
        1e-5
    } else {
        1e-12
    };
    for (g, w) in y.data().iter().zip(&want) {
        assert!((g.to_f64() - w).abs() < tol, "{g} vs {w}");
    }
    assert_eq!(y.dims(), &[2, 6, 1, 1]);
}

fn tconv(stride: usize, padding: [usize; 4], output_padding: usize) -> ConvTranspose2d {
    ConvTranspose2d {
        stride: [stride; 2],
        padding,
        output_padding: [output_padding; 2],
        ..ConvTranspose2d::default()
    }
}

/// x = [[1,2],[3,4]], w = [[1,2],[3,4]], stride 2: each input pastes its scaled kernel into
/// its own 2×2 block of the 4×4 output:
/// ```text
/// 1  2  2  4
/// 3  4  6  8
/// 3  6  4  8
/// 9 12 12 16
/// ```
/// Padding crops that full output; output_padding extends it (here the extension is rows and
/// columns the padding had cropped, so they hold values).
fn transpose_stride_padding_output_padding<T: Float>() {
    let x = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let full = [
        1.0, 2.0, 2.0, 4.0, 3.0, 4.0, 6.0, 8.0, 3.0, 6.0, 4.0, 8.0, 9.0, 12.0, 12.0, 16.0,
    ];
    let y = conv_transpose2d(&x, &w, None, &tconv(2, [0; 4], 0)).unwrap();
    assert_close(&y, &[1, 1, 4, 4], &full);
    // padding 1 on every side: the centre 2×2
    let y = conv_transpose2d(&x, &w, None, &tconv(2, [1; 4], 0)).unwrap();
    assert_close(&y, &[1, 1, 2, 2], &[4.0, 6.0, 6.0, 4.0]);
    // padding 1 and output_padding 1: size 2·1 + 2 − 2 + 1 = 3, rows/cols 1..4 of the full output
    let y = conv_transpose2d(&x, &w, None, &tconv(2, [1; 4], 1)).unwrap();
    assert_close(
        &y,
        &[1, 1, 3, 3],
        &[4.0, 6.0, 8.0, 6.0, 4.0, 8.0, 12.0, 12.0, 16.0],
    );
    // top padding only: rows 1..4, all columns
    let y = conv_transpose2d(&x, &w, None, &tconv(2, [1, 0, 0, 0], 0)).unwrap();
    assert_close(&y, &[1, 1, 3, 4], &full[4..]);
    // output_padding without padding: one more row and column that nothing reaches: the bias
    let b = t::<T>(&[1], &[0.5]);
    let y = conv_transpose2d(&x, &w, Some(&b), &tconv(2, [0; 4], 1)).unwrap();
    let mut want = Vec::new();
    for r in 0..5 {
        for c in 0..5 {
            want.push(0.5 + if r < 4 && c < 4 { full[r * 4 + c] } else { 0.0 });
        }
    }
    assert_close(&y, &[1, 1, 5, 5], &want);
}

/// Stride 1 makes the pasted kernels overlap and add up: [[1,2],[3,4]] with a 2×2 ones kernel.
fn transpose_overlap<T: Float>() {
    let x = t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = t::<T>(&[1, 1, 2, 2], &[1.0; 4]);
    let y = conv_transpose2d(&x, &w, None, &ConvTranspose2d::default()).unwrap();
    assert_close(&y, &[1, 1, 3, 3], &[1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]);
}

/// Dilation 2 spreads the kernel taps: x = [1, 2], w = [1, 10] → positions 0, 2 get 1, 10 and
/// positions 1, 3 get 2, 20. Groups 2: each channel is scaled by its own 1×1 kernel.
fn transpose_dilation_groups<T: Float>() {
    let x = t::<T>(&[1, 1, 1, 2], &[1.0, 2.0]);
    let w = t::<T>(&[1, 1, 1, 2], &[1.0, 10.0]);
    let a = ConvTranspose2d {
        dilation: [1, 2],
        ..ConvTranspose2d::default()
    };
    assert_close(
        &conv_transpose2d(&x, &w, None, &a).unwrap(),
        &[1, 1, 1, 4],
        &[1.0, 2.0, 10.0, 20.0],
    );
    let x = t::<T>(&[1, 2, 1, 1], &[1.0, 2.0]);
    let w = t::<T>(&[2, 1, 1, 1], &[3.0, 5.0]);
    let a = ConvTranspose2d {
        groups: 2,
        ..ConvTranspose2d::default()
    };
    assert_close(
        &conv_transpose2d(&x, &w, None, &a).unwrap(),
        &[1, 2, 1, 1],
        &[3.0, 10.0],
    );
    // groups 2 with 2 outputs per group: input channel c feeds outputs 2c, 2c+1
    let w = t::<T>(&[2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
    assert_close(
        &conv_transpose2d(&x, &w, None, &a).unwrap(),
        &[1, 4, 1, 1],
        &[1.0, 2.0, 6.0, 8.0],
    );
}

both! {
    conv_stride_and_bias => stride_and_bias,
    conv_padding_each_side => padding_each_side,
    conv_asymmetric_padding => asymmetric_padding,
    conv_dilation => dilation,
    conv_batch_and_channels => batch_and_channels,
    conv_groups => groups,
    conv_depthwise => depthwise,
    conv_same_upper_vs_lower => same_upper_vs_lower,
    conv_full_kernel_is_dense => full_kernel_is_dense,
    tconv_stride_padding_output_padding => transpose_stride_padding_output_padding,
    tconv_overlap => transpose_overlap,
    tconv_dilation_groups => transpose_dilation_groups,
}

fn dot(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    a.data().iter().zip(b.data()).map(|(x, y)| x * y).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// conv_transpose2d is the adjoint of conv2d with the same weight, stride, dilation,
    /// padding and groups, when output_padding restores the input size:
    /// `<conv(x), y> = <x, conv_transpose(y)>`.
    #[test]
    fn conv_transpose_is_adjoint_of_conv(
        n in 1usize..3, g in 1usize..3, cig in 1usize..3, cog in 1usize..3,
        h in 1usize..7, w in 1usize..7, kh in 1usize..4, kw in 1usize..4,
        s in (1usize..4, 1usize..4), d in (1usize..3, 1usize..3),
        p in (0usize..3, 0usize..3, 0usize..3, 0usize..3), seed in 0u64..1000,
    ) {
        let pad = [p.0, p.1, p.2, p.3];
        let attrs = Conv2d {
            stride: [s.0, s.1],
            dilation: [d.0, d.1],
            padding: Padding::Explicit(pad),
            groups: g,
            activation: None,
        };
        let x = random::<f64>(&[n, g * cig, h, w], seed);
        let wt = random::<f64>(&[g * cog, cig, kh, kw], seed + 1);
        let Ok(cx) = conv2d(&x, &wt, None, &attrs) else {
            // kernel larger than the padded input: not a valid convolution
            return Ok(());
        };
        let y = random::<f64>(cx.dims(), seed + 2);
        // output_padding = the rows the convolution's floor division left over
        let spans = [h + p.0 + p.2 - (d.0 * (kh - 1) + 1), w + p.1 + p.3 - (d.1 * (kw - 1) + 1)];
        let t_attrs = ConvTranspose2d {
            stride: attrs.stride,
            dilation: attrs.dilation,
            padding: pad,
            output_padding: [spans[0] % s.0, spans[1] % s.1],
            groups: g,
        };
        let ty = conv_transpose2d(&y, &wt, None, &t_attrs).unwrap();
        prop_assert_eq!(ty.dims(), x.dims());
        let (lhs, rhs) = (dot(&cx, &y), dot(&x, &ty));
        prop_assert!((lhs - rhs).abs() <= 1e-10 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
    }
}
