//! Sliding-window geometry: the one place that resolves padding and computes window and output
//! sizes, with checked arithmetic. The shape rules, the interpreter, the passes, autodiff and
//! the JIT all ask the attribute structs for a [`Window2d`] instead of recomputing it.
//!
//! A `Window2d` that exists satisfies, on each spatial axis `a`:
//! `input[a] ≥ 1`, `kernel[a], stride[a], dilation[a] ≥ 1`,
//! `extent(a) = dilation·(kernel − 1) + 1 ≤ padded(a) = input + pad_begin + pad_end ≤
//! limits::MAX_ELEMENTS`, and every window starts at `o·stride ≤ padded(a) − extent(a)` for
//! `o < output[a]`. So every position generated code derives from it
//! (`o·stride + j·dilation − pad_begin`) lies in `[−pad_begin, padded)`, far inside `i64`.

use crate::limits::MAX_ELEMENTS;
use crate::op::{Conv2d, Im2Col, Padding, Pool2d};

type R<T> = Result<T, String>;

/// The resolved geometry of a 2-D sliding window (convolution, pooling, patches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window2d {
    /// Input height and width.
    pub input: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Resolved padding, `[top, left, bottom, right]`.
    pub pad: [usize; 4],
    /// Output height and width.
    pub output: [usize; 2],
}

impl Window2d {
    /// The padding before axis `a` (0: top, 1: left).
    pub fn pad_begin(&self, a: usize) -> usize {
        self.pad[a]
    }
    /// The padding after axis `a` (0: bottom, 1: right).
    pub fn pad_end(&self, a: usize) -> usize {
        self.pad[a + 2]
    }
    /// `(begin, end)` padding of axis `a`.
    pub fn pads(&self, a: usize) -> (usize, usize) {
        (self.pad[a], self.pad[a + 2])
    }
    /// The span of one window on axis `a`: `dilation·(kernel − 1) + 1`.
    pub fn extent(&self, a: usize) -> usize {
        self.dilation[a] * (self.kernel[a] - 1) + 1
    }
    /// The padded size of axis `a`.
    pub fn padded(&self, a: usize) -> usize {
        self.input[a] + self.pad[a] + self.pad[a + 2]
    }
    /// Padded positions on axis `a` after the end of the last window (rows no window reads);
    /// 0 when, in ceil mode, the last window reaches past the end padding.
    pub fn tail(&self, a: usize) -> usize {
        self.padded(a)
            .saturating_sub(self.extent(a) + (self.output[a] - 1) * self.stride[a])
    }
    /// The input position of tap `j` of window `o` on axis `a`, or `None` in the padding.
    pub fn input_pos(&self, a: usize, o: usize, j: usize) -> Option<usize> {
        (o * self.stride[a] + j * self.dilation[a])
            .checked_sub(self.pad[a])
            .filter(|&p| p < self.input[a])
    }
    /// The taps of window `o` on axis `a` that matter, in closed form (a kernel may have 2³¹
    /// taps, nearly all padding): tap `j` is at padded position `t + j·d` (`t = o·s`), real
    /// when that lies in `[pb, pb + n)`, so the real taps are `lo..hi`, the first at input
    /// position `first`, and `padded` taps lie inside the padded input. The interpreter walks
    /// these ranges; the JIT emits the same formulas (`lower::window_taps`).
    pub fn taps(&self, a: usize, o: usize) -> WindowTaps {
        let (n, k, d, pb) = (self.input[a], self.kernel[a], self.dilation[a], self.pad[a]);
        let t = o * self.stride[a];
        let lo = pb.saturating_sub(t).div_ceil(d).min(k);
        let hi = (pb + n).saturating_sub(t).div_ceil(d).min(k).max(lo);
        WindowTaps {
            first: (t + lo * d).saturating_sub(pb),
            lo,
            hi,
            padded: self.padded(a).saturating_sub(t).div_ceil(d).min(k),
        }
    }
    /// The explicit-padding `im2col` whose patches this window reads.
    pub fn im2col(&self) -> Im2Col {
        Im2Col {
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            padding: self.pad,
        }
    }
}

/// The taps of one window along one axis ([`Window2d::taps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowTaps {
    /// The input position of the first real tap (meaningful when `lo < hi`).
    pub first: usize,
    /// The real taps are `lo..hi` (`hi ≥ lo`).
    pub lo: usize,
    pub hi: usize,
    /// How many taps lie inside the padded input (real or padding).
    pub padded: usize,
}

impl WindowTaps {
    /// The number of real taps.
    pub fn real(&self) -> usize {
        self.hi - self.lo
    }
}

/// The extent of a kernel of size `k` with dilation `d`, `d·(k−1) + 1`, or an error when it
/// overflows.
pub(crate) fn checked_extent(k: usize, d: usize) -> R<usize> {
    d.checked_mul(k.saturating_sub(1))
        .and_then(|e| e.checked_add(1))
        .ok_or_else(|| format!("kernel extent of kernel {k} with dilation {d} overflows"))
}

/// `(begin, end)` padding of one axis of size `n` (`axis` 0 is height, 1 width).
fn resolve(padding: Padding, axis: usize, n: usize, k: usize, s: usize, d: usize) -> R<(usize, usize)> {
    Ok(match padding {
        Padding::Explicit(p) => (p[axis], p[axis + 2]),
        Padding::Valid => (0, 0),
        Padding::SameUpper | Padding::SameLower => {
            let out = n.div_ceil(s);
            let total = out
                .saturating_sub(1)
                .checked_mul(s)
                .and_then(|v| v.checked_add(checked_extent(k, d).ok()?))
                .ok_or_else(|| format!("`same` padding of axis {axis} (size {n}, kernel {k}, stride {s}, dilation {d}) overflows"))?
                .saturating_sub(n);
            let small = total / 2;
            if padding == Padding::SameUpper {
                (small, total - small)
            } else {
                (total - small, small)
            }
        }
    })
}

/// The output size of one axis: `⌊(padded − extent)/s⌋ + 1`, or with `ceil` rounding up, in
/// which case a last window starting beyond `n + pad_begin` (entirely in the end padding) is
/// dropped.
fn out_size(n: usize, k: usize, s: usize, d: usize, pad: (usize, usize), ceil: bool) -> R<usize> {
    let padded = n
        .checked_add(pad.0)
        .and_then(|p| p.checked_add(pad.1))
        .ok_or_else(|| format!("padded size {n} + {} + {} overflows", pad.0, pad.1))?;
    if padded > MAX_ELEMENTS {
        return Err(format!(
            "padded size {padded} ({n} + {} + {}) is above the limit of {MAX_ELEMENTS} elements",
            pad.0, pad.1
        ));
    }
    let ke = checked_extent(k, d)?;
    if ke > padded {
        return Err(format!(
            "kernel extent {ke} (kernel {k}, dilation {d}) is larger than the padded input {padded} ({n} + {} + {})",
            pad.0, pad.1
        ));
    }
    let span = padded - ke;
    let mut out = if ceil { span.div_ceil(s) + 1 } else { span / s + 1 };
    if ceil && (out - 1) * s >= n + pad.0 {
        out -= 1;
    }
    Ok(out)
}

/// The geometry of a window over the spatial dims `input` (checked).
pub fn window2d(
    padding: Padding,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    ceil: bool,
) -> R<Window2d> {
    for (v, what) in [(kernel, "kernel"), (stride, "stride"), (dilation, "dilation")] {
        if v.contains(&0) {
            return Err(format!("{what} must be at least 1, got {v:?}"));
        }
        if v.iter().any(|&x| x > MAX_ELEMENTS) {
            return Err(format!("{what} {v:?} is above the limit of {MAX_ELEMENTS}"));
        }
    }
    if input.contains(&0) {
        return Err(format!(
            "the input has an empty spatial axis ({}x{})",
            input[0], input[1]
        ));
    }
    let mut w = Window2d {
        input,
        kernel,
        stride,
        dilation,
        pad: [0; 4],
        output: [0; 2],
    };
    for a in 0..2 {
        let (pb, pe) = resolve(padding, a, input[a], kernel[a], stride[a], dilation[a])?;
        w.pad[a] = pb;
        w.pad[a + 2] = pe;
        w.output[a] = out_size(input[a], kernel[a], stride[a], dilation[a], (pb, pe), ceil)?;
    }
    Ok(w)
}

/// `[h, w]` of NCHW dims, or an error when the rank is not 4.
fn spatial(x: &[usize]) -> R<[usize; 2]> {
    match x {
        [_, _, h, w] => Ok([*h, *w]),
        _ => Err(format!("input must have rank 4, got {x:?}")),
    }
}

impl Conv2d {
    /// The window of this convolution over an input of NCHW dims `x` with a `kernel` of
    /// `[kh, kw]`.
    pub fn geometry(&self, x: &[usize], kernel: [usize; 2]) -> R<Window2d> {
        window2d(
            self.padding,
            spatial(x)?,
            kernel,
            self.stride,
            self.dilation,
            false,
        )
    }
}

impl Pool2d {
    /// The window of this pooling over an input of NCHW dims `x`. Also checks that the padding
    /// is smaller than the window's extent and that no window holds only padding.
    pub fn geometry(&self, x: &[usize]) -> R<Window2d> {
        let g = window2d(
            self.padding,
            spatial(x)?,
            self.kernel,
            self.stride,
            self.dilation,
            self.ceil_mode,
        )?;
        for a in 0..2 {
            let (pad, ke) = (g.pads(a), g.extent(a));
            if pad.0 >= ke || pad.1 >= ke {
                return Err(format!(
                    "padding {pad:?} on spatial axis {a} must be smaller than the kernel extent {ke}, or a window would hold only padding"
                ));
            }
            if let Some(i) = all_padding_window(&g, a)? {
                return Err(format!(
                    "window {i} on spatial axis {a} holds only padding (kernel {}, dilation {}, padding {pad:?}, input {})",
                    g.kernel[a], g.dilation[a], g.input[a]
                ));
            }
        }
        Ok(g)
    }
}

/// The most windows [`all_padding_window`] examines one by one before it refuses the pooling
/// as too costly to check.
const MAX_WINDOWS_CHECKED: usize = 1 << 20;

/// The first window on axis `a` that holds only padding, if any, for a pooling whose padding
/// is smaller than its extent.
///
/// Windows starting at or after the input's first element start inside it (the end padding is
/// smaller than the extent, and ceil mode drops a window starting in it), so only the windows
/// starting in the begin padding, at `t = i·s < pb`, can hold only padding. Their last tap is
/// at `t + extent − 1 ≥ pb`, so the first tap at or after the input's start is inside the
/// window, at input position `(t − pb) mod d`: the window is all padding exactly when that is
/// `≥ n`. That needs `d > n`; then the residues repeat every `d / gcd(s, d)` windows, so at
/// most that many are examined, each in O(1) with [`Window2d::taps`] (a pooling needing more
/// than [`MAX_WINDOWS_CHECKED`] is refused).
fn all_padding_window(g: &Window2d, a: usize) -> R<Option<usize>> {
    let (n, s, d, pb) = (g.input[a], g.stride[a], g.dilation[a], g.pad[a]);
    if d <= n {
        return Ok(None);
    }
    let in_begin_pad = g.output[a].min(pb.div_ceil(s));
    let period = d / gcd(s, d);
    let count = in_begin_pad.min(period);
    if count > MAX_WINDOWS_CHECKED {
        return Err(format!(
            "dilation {d} over an input of {n} on spatial axis {a}, with stride {s} and padding {pb}: \
             taps wider apart than the input leave {count} windows to check for holding only padding \
             (above the limit of {MAX_WINDOWS_CHECKED})"
        ));
    }
    Ok((0..count).find(|&i| g.taps(a, i).real() == 0))
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Im2Col {
    /// The window of these patches over an input of NCHW dims `x`.
    pub fn geometry(&self, x: &[usize]) -> R<Window2d> {
        window2d(
            Padding::Explicit(self.padding),
            spatial(x)?,
            self.kernel,
            self.stride,
            self.dilation,
            false,
        )
    }
}

/// Why a transposed convolution cannot produce a requested output size
/// ([`conv_transpose_fit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransposedFit {
    /// An output size does not fit in `usize` (the message says which).
    Overflow(String),
    /// The requested size exceeds the full output by the stride (and dilation) or more: more
    /// output padding than a transposed convolution can have.
    TooLarge,
}

/// The padding `[top, left, bottom, right]` and output padding with which a transposed
/// convolution over spatial dims `input` produces `target` (ONNX's `output_shape`), or with
/// `target == None` `input·stride` (`SAME_UPPER` / `SAME_LOWER`, "same" as the inverse of a
/// strided convolution). The full output `s·(n − 1) + output_padding + d·(k − 1) + 1` minus the
/// target is cut off, half at each end, the odd row or column at the end when `upper`
/// (`SAME_UPPER`), else at the beginning. A target larger than the full output becomes
/// output padding (rows and columns of bias only, as ONNX Runtime does) when that stays below
/// the stride and dilation.
pub fn conv_transpose_fit(
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    output_padding: [usize; 2],
    target: Option<[usize; 2]>,
    upper: bool,
) -> Result<([usize; 4], [usize; 2]), TransposedFit> {
    let target = match target {
        Some(t) => t,
        None => {
            let out = |a: usize| {
                input[a].checked_mul(stride[a]).ok_or_else(|| {
                    TransposedFit::Overflow(format!("input {input:?} times strides {stride:?} overflows"))
                })
            };
            [out(0)?, out(1)?]
        }
    };
    // the output size before padding, in i128: every factor is below 2^64, so nothing here
    // overflows, however large the attributes
    let full = |a: usize| -> i128 {
        stride[a] as i128 * (input[a] as i128 - 1)
            + output_padding[a] as i128
            + (kernel[a] as i128 - 1) * dilation[a] as i128
            + 1
    };
    let mut pads = [0usize; 4];
    let mut output_padding = output_padding;
    for a in 0..2 {
        let total = full(a) - target[a] as i128;
        if total < 0 {
            let extra = output_padding[a] as i128 - total;
            if extra >= stride[a].max(dilation[a]) as i128 {
                return Err(TransposedFit::TooLarge);
            }
            // below a usize stride, so it fits
            output_padding[a] = extra as usize;
            continue;
        }
        let total = usize::try_from(total).map_err(|_| {
            TransposedFit::Overflow(format!(
                "the full output ({} along spatial axis {a}) is too large",
                full(a)
            ))
        })?;
        let (begin, end) = if upper {
            (total / 2, total - total / 2)
        } else {
            (total - total / 2, total / 2)
        };
        pads[a] = begin;
        pads[a + 2] = end;
    }
    Ok((pads, output_padding))
}

/// The input window `[start, end)` of adaptive pooling's output index `i` over `n` inputs and
/// `out` outputs (PyTorch's rule). Requires `i < out`, `n, out ≤ limits::MAX_ELEMENTS`, so the
/// products fit.
pub fn adaptive_window(i: usize, n: usize, out: usize) -> (usize, usize) {
    ((i * n) / out, ((i + 1) * n).div_ceil(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_same_cuts_the_odd_row_where_asked() {
        // input 3, stride 2, kernel 4: full output 2·2 + 3 + 1 = 8, target 6, 2 cut
        let fit = |upper, target| conv_transpose_fit([3, 3], [4, 3], [2, 2], [1, 1], [0, 0], target, upper);
        assert_eq!(fit(true, None), Ok(([1, 0, 1, 1], [0, 0])));
        assert_eq!(fit(false, None), Ok(([1, 1, 1, 0], [0, 0])));
        // one more than the full output [8, 7]: output padding
        assert_eq!(fit(true, Some([9, 8])), Ok(([0, 0, 0, 0], [1, 1])));
        assert_eq!(fit(true, Some([10, 7])), Err(TransposedFit::TooLarge));
        let huge = conv_transpose_fit([2, 2], [1, 1], [usize::MAX, 1], [1, 1], [0, 0], None, true);
        assert!(matches!(huge, Err(TransposedFit::Overflow(_))));
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_where_asked() {
        let up = window2d(Padding::SameUpper, [5, 5], [2, 2], [1, 1], [1, 1], false).unwrap();
        assert_eq!((up.pad, up.output), ([0, 0, 1, 1], [5, 5]));
        let low = window2d(Padding::SameLower, [5, 5], [2, 2], [1, 1], [1, 1], false).unwrap();
        assert_eq!(low.pad, [1, 1, 0, 0]);
    }

    #[test]
    fn ceil_mode_drops_a_window_in_the_end_padding() {
        // 5 inputs, kernel 2, stride 2, ceil: windows at 0, 2, 4 (the last one half padding).
        let g = window2d(Padding::Valid, [5, 5], [2, 2], [2, 2], [1, 1], true).unwrap();
        assert_eq!(g.output, [3, 3]);
        assert_eq!(g.tail(0), 0);
        let g = window2d(Padding::Valid, [5, 5], [2, 2], [2, 2], [1, 1], false).unwrap();
        assert_eq!((g.output, g.tail(0)), ([2, 2], 1));
    }

    #[test]
    fn taps_in_padding_have_no_input_position() {
        let g = window2d(
            Padding::Explicit([1, 1, 1, 1]),
            [3, 3],
            [3, 3],
            [1, 1],
            [1, 1],
            false,
        )
        .unwrap();
        assert_eq!(g.input_pos(0, 0, 0), None);
        assert_eq!(g.input_pos(0, 0, 1), Some(0));
        assert_eq!(g.input_pos(0, 2, 2), None);
    }

    #[test]
    fn all_padding_windows_in_closed_form_equal_tap_by_tap() {
        for n in 1..6 {
            for k in 1..5 {
                for s in 1..5 {
                    for d in 1..7 {
                        let ke = d * (k - 1) + 1;
                        for pb in 0..ke {
                            for pe in 0..ke {
                                let Ok(g) = window2d(
                                    Padding::Explicit([pb, 0, pe, 0]),
                                    [n, 1],
                                    [k, 1],
                                    [s, 1],
                                    [d, 1],
                                    false,
                                ) else {
                                    continue;
                                };
                                let by_taps = (0..g.output[0])
                                    .find(|&i| (0..k).all(|j| g.input_pos(0, i, j).is_none()));
                                assert_eq!(
                                    all_padding_window(&g, 0).unwrap(),
                                    by_taps,
                                    "n {n} k {k} s {s} d {d} pads {pb} {pe}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn taps_in_closed_form_equal_the_definition() {
        for n in 1..6 {
            for k in 1..5 {
                for s in 1..4 {
                    for d in 1..5 {
                        for pb in 0..4 {
                            for pe in 0..4 {
                                let Ok(g) = window2d(
                                    Padding::Explicit([pb, 0, pe, 0]),
                                    [n, 1],
                                    [k, 1],
                                    [s, 1],
                                    [d, 1],
                                    true,
                                ) else {
                                    continue;
                                };
                                for o in 0..g.output[0] {
                                    let real: Vec<usize> =
                                        (0..k).filter_map(|j| g.input_pos(0, o, j)).collect();
                                    let padded = (0..k).filter(|&j| o * s + j * d < g.padded(0)).count();
                                    let t = g.taps(0, o);
                                    let walked: Vec<usize> = (0..t.real()).map(|j| t.first + j * d).collect();
                                    assert_eq!(
                                        (walked, t.padded),
                                        (real, padded),
                                        "n {n} k {k} s {s} d {d} pads {pb} {pe} o {o}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn huge_pooling_kernels_are_checked_quickly() {
        // kernel 2^29 + 1 with padding 2^29: was ~2^57 tap tests
        let p = Pool2d {
            padding: Padding::Explicit([1 << 29, 0, 1 << 29, 0]),
            ..Pool2d::new(crate::op::PoolKind::Max, [(1 << 29) + 1, 1], [1, 1])
        };
        assert!(p.geometry(&[1, 1, 4, 4]).is_ok());
        let p = Pool2d::new(crate::op::PoolKind::Max, [3, 1 << 31], [1, 1]);
        assert!(p.geometry(&[1, 1, 4, 1 << 31]).is_ok());
        // taps 2^30 apart over one input row, begin padding 2^30: refused as too costly
        let p = Pool2d {
            dilation: [1 << 30, 1],
            padding: Padding::Explicit([1 << 30, 0, (1 << 30) - 1, 0]),
            ..Pool2d::new(crate::op::PoolKind::Max, [2, 1], [1, 1])
        };
        let e = p.geometry(&[1, 1, 1, 1]).unwrap_err();
        assert!(e.contains("windows to check"), "{e}");
    }

    #[test]
    fn absurd_attributes_are_errors() {
        let big = usize::MAX / 2;
        assert!(window2d(Padding::Explicit([big; 4]), [4, 4], [3, 3], [1, 1], [1, 1], false).is_err());
        assert!(
            window2d(
                Padding::Explicit([1 << 31; 4]),
                [4, 4],
                [3, 3],
                [1, 1],
                [1, 1],
                false
            )
            .is_err()
        );
        assert!(window2d(Padding::Valid, [4, 4], [3, 3], [1, 1], [big, 1], false).is_err());
        assert!(window2d(Padding::SameUpper, [4, 4], [3, 3], [big, 1], [big, 1], false).is_err());
        assert!(window2d(Padding::Valid, [4, 4], [0, 3], [1, 1], [1, 1], false).is_err());
        assert!(window2d(Padding::Valid, [0, 4], [1, 1], [1, 1], [1, 1], false).is_err());
    }
}
