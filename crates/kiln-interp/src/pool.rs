//! Pooling: windowed max / average / sum (padding, dilation, ceil mode), global, adaptive.
//!
//! Windowed pooling, per spatial axis: output index `o` has taps at padded coordinates
//! `o·s + i·d` for `i < k`; a tap is *real* when it lands inside the input (after removing the
//! begin padding), *padding* when it lands in the begin/end padding, and in ceil mode the last
//! window may also reach *past* the padded input. A 2-D tap is real when it is real on both axes.
//!
//! - **max**: the maximum over the real taps (padding counts as −∞, so it never wins); ties go
//!   to the first maximum in row-major window order; a NaN propagates (as PyTorch).
//! - **sum**: the sum over the real taps (padding adds zero).
//! - **avg**: the sum divided by
//!   - with `count_include_pad`: the number of taps inside the *padded* input, i.e. PyTorch's
//!     `(min(h_start + k, H + pad_end) − h_start) · (same for w)` with `h_start = o·s − pad_begin`
//!     (for dilation 1; with dilation the taps, not the extent, are counted). Taps past the
//!     padded input in ceil mode are not counted.
//!   - without: the number of real taps.
//!
//! Every window covers at least one real element: the shape rule rejects attributes where a
//! (dilated) window would hold only padding. Should one reach these kernels anyway, max gives
//! −∞ (argmax −1), sum 0, and avg without padding counted 0/0 = NaN — never a panic.

use crate::Float;
use crate::conv::dims4;
use crate::util::out_shape;
use kiln_ir::geometry::{Window2d, WindowTaps, adaptive_window};
use kiln_ir::{Op, Pool2d, PoolKind, ReduceKind, Tensor, TrainOp};

/// The taps of one pooling window along one axis (`kiln_ir`'s `Window2d::taps`, ranges rather
/// than lists, so a huge kernel costs no memory) with its dilation.
#[derive(Debug, Clone, Copy)]
struct AxisWindow {
    taps: WindowTaps,
    step: usize,
}

impl AxisWindow {
    fn real(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.taps.real()).map(|j| self.taps.first + j * self.step)
    }
}

/// For each output index along axis `a`, its window's taps.
fn axis_windows(g: &Window2d, a: usize) -> Vec<AxisWindow> {
    (0..g.output[a])
        .map(|o| AxisWindow {
            taps: g.taps(a, o),
            step: g.dilation[a],
        })
        .collect()
}

/// The result of one window: the reduced value and, for max, the winner's in-plane index.
fn reduce_window<T: Float>(
    plane: &[T],
    w: usize,
    rows: &AxisWindow,
    cols: &AxisWindow,
    kind: PoolKind,
) -> (T, Option<usize>) {
    let mut acc = match kind {
        PoolKind::Max => T::neg_infinity(),
        PoolKind::Avg { .. } | PoolKind::Sum => T::zero(),
    };
    let mut arg = None;
    for ih in rows.real() {
        for iw in cols.real() {
            let idx = ih * w + iw;
            let v = plane[idx];
            match kind {
                PoolKind::Max => {
                    // Strictly greater: the first maximum in row-major window order wins.
                    if arg.is_none() || v > acc || (v.is_nan() && !acc.is_nan()) {
                        acc = v;
                        arg = Some(idx);
                    }
                }
                PoolKind::Avg { .. } | PoolKind::Sum => acc += v,
            }
        }
    }
    match kind {
        PoolKind::Avg { count_include_pad } => {
            let count = if count_include_pad {
                rows.taps.padded * cols.taps.padded
            } else {
                rows.taps.real() * cols.taps.real()
            };
            (acc / T::from_usize(count), None)
        }
        PoolKind::Max | PoolKind::Sum => (acc, arg),
    }
}

/// Runs `f(value, argmax)` for every window of `x`, in the row-major order of the output.
fn for_each_window<T: Float>(
    x: &Tensor<T>,
    p: &Pool2d,
    mut f: impl FnMut(T, Option<usize>),
) -> Result<kiln_ir::Shape, String> {
    let out = out_shape(&Op::Pool2d(p.clone()), &[x.shape()])?;
    let [n, c, h, w] = dims4(x.dims());
    let g = p.geometry(&[n, c, h, w])?;
    let (rows, cols) = (axis_windows(&g, 0), axis_windows(&g, 1));
    for plane_i in 0..n * c {
        let plane = &x.data()[plane_i * h * w..(plane_i + 1) * h * w];
        for r in &rows {
            for col in &cols {
                let (v, arg) = reduce_window(plane, w, r, col, p.kind);
                f(v, arg);
            }
        }
    }
    Ok(out)
}

/// Windowed max / avg / sum pooling of `x [N, C, H, W]` (see the module docs for the rules).
pub fn pool2d<T: Float>(x: &Tensor<T>, p: &Pool2d) -> Result<Tensor<T>, String> {
    let mut vals = Vec::new();
    let out = for_each_window(x, p, |v, _| vals.push(v))?;
    Ok(Tensor::new(out, vals).expect("one value per window, in row-major order"))
}

/// For max pooling `p` of `x`: the in-plane flat index `ih·W + iw` of each window's winning
/// element (the first maximum in row-major window order), shaped as the pooled output; −1
/// for a window with no real element. What max pooling's backward scatters to.
pub fn max_pool2d_argmax<T: Float>(x: &Tensor<T>, p: &Pool2d) -> Result<Tensor<i32>, String> {
    if p.kind != PoolKind::Max {
        return Err(format!("argmax needs max pooling, got {:?}", p.kind));
    }
    let mut ids = Vec::new();
    let out = for_each_window(x, p, |_, arg| {
        ids.push(arg.map_or(-1, |i| i32::try_from(i).unwrap_or(i32::MAX)))
    })?;
    Ok(Tensor::new(out, ids).expect("one id per window, in row-major order"))
}

/// Reduces the window `rows × cols` of one plane (row-major order, first maximum wins).
fn reduce_region<T: Float>(
    plane: &[T],
    w: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    kind: ReduceKind,
) -> T {
    let mut acc = match kind {
        ReduceKind::Max => T::neg_infinity(),
        ReduceKind::Avg => T::zero(),
    };
    for ih in rows.0..rows.1 {
        for iw in cols.0..cols.1 {
            let v = plane[ih * w + iw];
            match kind {
                ReduceKind::Max => {
                    if v > acc || (v.is_nan() && !acc.is_nan()) {
                        acc = v;
                    }
                }
                ReduceKind::Avg => acc += v,
            }
        }
    }
    match kind {
        ReduceKind::Max => acc,
        ReduceKind::Avg => acc / T::from_usize((rows.1 - rows.0) * (cols.1 - cols.0)),
    }
}

/// Global max / average pooling: each plane of `x [N, C, H, W]` reduced to `[N, C, 1, 1]`.
pub fn global_pool<T: Float>(x: &Tensor<T>, kind: ReduceKind) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::GlobalPool(kind), &[x.shape()])?;
    let [n, c, h, w] = dims4(x.dims());
    let vals = (0..n * c)
        .map(|i| reduce_region(&x.data()[i * h * w..(i + 1) * h * w], w, (0, h), (0, w), kind))
        .collect();
    Ok(Tensor::new(out, vals).expect("one value per plane"))
}

/// Adaptive max / average pooling of `x [N, C, H, W]` to `[N, C, out_h, out_w]`: output
/// `(i, j)` reduces rows `[⌊i·H/out_h⌋, ⌈(i+1)·H/out_h⌉)` × the same for columns
/// ([`adaptive_window`], PyTorch's rule; windows may overlap when the size does not divide).
pub fn adaptive_pool<T: Float>(
    x: &Tensor<T>,
    kind: ReduceKind,
    output: [usize; 2],
) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::AdaptivePool { kind, output }, &[x.shape()])?;
    let [n, c, h, w] = dims4(x.dims());
    let mut vals = Vec::with_capacity(out.numel());
    for pi in 0..n * c {
        let plane = &x.data()[pi * h * w..(pi + 1) * h * w];
        for i in 0..output[0] {
            for j in 0..output[1] {
                let rows = adaptive_window(i, h, output[0]);
                let cols = adaptive_window(j, w, output[1]);
                vals.push(reduce_region(plane, w, rows, cols, kind));
            }
        }
    }
    Ok(Tensor::new(out, vals).expect("one value per window"))
}

// ---------------------------------------------------------------------------------------------
// Backward

/// For adaptive max pooling of `x` to `output`: the in-plane index `ih·W + iw` of each
/// window's maximum (first maximum in row-major order; a NaN wins as in the forward pass).
pub fn adaptive_max_ids<T: Float>(x: &Tensor<T>, output: [usize; 2]) -> Result<Tensor<i32>, String> {
    let out = out_shape(&Op::Train(TrainOp::AdaptiveMaxPoolIds { output }), &[x.shape()])?;
    let [n, c, h, w] = dims4(x.dims());
    let mut ids = Vec::with_capacity(out.numel());
    for pi in 0..n * c {
        let plane = &x.data()[pi * h * w..(pi + 1) * h * w];
        for i in 0..output[0] {
            for j in 0..output[1] {
                let (rows, cols) = (adaptive_window(i, h, output[0]), adaptive_window(j, w, output[1]));
                let mut best: Option<(T, usize)> = None;
                for ih in rows.0..rows.1 {
                    for iw in cols.0..cols.1 {
                        let v = plane[ih * w + iw];
                        let wins = match best {
                            None => true,
                            Some((acc, _)) => v > acc || (v.is_nan() && !acc.is_nan()),
                        };
                        if wins {
                            best = Some((v, ih * w + iw));
                        }
                    }
                }
                let id = best.map_or(-1, |(_, k)| i32::try_from(k).unwrap_or(i32::MAX));
                ids.push(id);
            }
        }
    }
    Ok(Tensor::new(out, ids).expect("one id per window"))
}

/// Max pooling's backward: `dx[n, c, id] += dy[n, c, oh, ow]` for `id = ids[n, c, oh, ow]`
/// (an in-plane index), into planes of `size`; overlapping windows accumulate. An id outside
/// the plane is an error.
pub fn scatter_ids<T: Float>(
    dy: &Tensor<T>,
    ids: &Tensor<i32>,
    size: [usize; 2],
) -> Result<Tensor<T>, String> {
    let dy_t = kiln_ir::TensorType::f32(dy.shape().clone());
    let ids_t = kiln_ir::TensorType::i32(ids.shape().clone());
    let out = kiln_ir::shape::infer(&Op::Train(TrainOp::ScatterIds { size }), &[&dy_t, &ids_t])?.shape;
    let [n, c, oh, ow] = dims4(dy.dims());
    let plane_len = size[0] * size[1];
    let mut dx = Tensor::full(out, T::zero());
    for pi in 0..n * c {
        for k in 0..oh * ow {
            let at = pi * oh * ow + k;
            let id = ids.data()[at];
            let idx = usize::try_from(id)
                .ok()
                .filter(|&i| i < plane_len)
                .ok_or_else(|| format!("id {id} at position {at} is outside the plane of {plane_len}"))?;
            dx.data_mut()[pi * plane_len + idx] += dy.data()[at];
        }
    }
    Ok(dx)
}

/// The backward of average or sum pooling `p` over an input of spatial size `input`: each
/// `dy` element is added to every real tap of its window, divided (average) by the count the
/// forward pass divided by.
pub fn pool2d_grad<T: Float>(dy: &Tensor<T>, p: &Pool2d, input: [usize; 2]) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::Train(TrainOp::Pool2dGrad {
            pool: p.clone(),
            input,
        }),
        &[dy.shape()],
    )?;
    let [n, c, oh_n, ow_n] = dims4(dy.dims());
    let [h, w] = input;
    let g = p.geometry(&[n, c, h, w])?;
    let (rows, cols) = (axis_windows(&g, 0), axis_windows(&g, 1));
    let mut dx = Tensor::full(out, T::zero());
    for pi in 0..n * c {
        for (oh, r) in rows.iter().enumerate() {
            for (ow, col) in cols.iter().enumerate() {
                let (real, padded) = (r.taps.real() * col.taps.real(), r.taps.padded * col.taps.padded);
                let g = dy.data()[(pi * oh_n + oh) * ow_n + ow];
                let share = match p.kind {
                    PoolKind::Avg {
                        count_include_pad: true,
                    } => g / T::from_usize(padded),
                    PoolKind::Avg {
                        count_include_pad: false,
                    } => g / T::from_usize(real),
                    PoolKind::Sum | PoolKind::Max => g,
                };
                for ih in r.real() {
                    for iw in col.real() {
                        dx.data_mut()[(pi * h + ih) * w + iw] += share;
                    }
                }
            }
        }
    }
    Ok(dx)
}

/// The backward of adaptive average pooling from `dy [N, C, OH, OW]` to an input of spatial
/// size `input`: each delta shared equally among its window.
pub fn adaptive_avg_pool_grad<T: Float>(dy: &Tensor<T>, input: [usize; 2]) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::Train(TrainOp::AdaptiveAvgPoolGrad { input }), &[dy.shape()])?;
    let [n, c, oh_n, ow_n] = dims4(dy.dims());
    let [h, w] = input;
    let mut dx = Tensor::full(out, T::zero());
    for pi in 0..n * c {
        for i in 0..oh_n {
            for j in 0..ow_n {
                let (rows, cols) = (adaptive_window(i, h, oh_n), adaptive_window(j, w, ow_n));
                let count = (rows.1 - rows.0) * (cols.1 - cols.0);
                let share = dy.data()[(pi * oh_n + i) * ow_n + j] / T::from_usize(count);
                for ih in rows.0..rows.1 {
                    for iw in cols.0..cols.1 {
                        dx.data_mut()[(pi * h + ih) * w + iw] += share;
                    }
                }
            }
        }
    }
    Ok(dx)
}
