//! Window taps in closed form, and the pooling lowerings built on them: windowed, global and
//! adaptive pooling.

use super::conv::Tap;
use super::{Args, dims4, load_f, store_f, validated};
use crate::codegen::Emitter;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::{PoolKind, ReduceKind};

/// One axis of a window: tap `k` of the window of output position `o` reads input position
/// `o·s − pad + k·d`, where `pad` is the padding before the input, so the position may lie in
/// the padding. The one statement of this index arithmetic for the lowerings of convolution,
/// `im2col` and pooling ([`window_taps`] bounds the taps that land inside the input). Positions
/// lie within a padded input of at most 2³¹ elements, or a stride past its end in ceil mode:
/// no overflow in `i64`.
#[derive(Clone, Copy)]
pub(crate) struct WindowAxis {
    /// The stride `s`.
    pub s: usize,
    /// The dilation `d`.
    pub d: usize,
    /// The padding before the input.
    pub pad: usize,
}

impl WindowAxis {
    /// `o·s − pad`: the input position of tap 0 of output position `o`'s window.
    pub(crate) fn start(self, e: &mut Emitter, o: Value) -> Value {
        let os = e.b.ins().imul_imm_s(o, self.s as i64);
        e.b.ins().iadd_imm_s(os, -(self.pad as i64))
    }

    /// `at + k·d`: tap `k` of the window whose tap 0 is at `at` (a `start`, or a flat index
    /// built on one).
    pub(crate) fn tap(self, e: &mut Emitter, at: Value, k: Tap) -> Value {
        k.add_scaled(e, at, self.d)
    }
}

/// The taps of one window along one axis, for output index `o` (a run-time value): the window
/// starts at input position `start = o·s − pad_begin` and tap `k` reads `start + k·d`.
pub(crate) struct WindowTaps {
    pub start: Value,
    /// The taps `[lo, hi)` that fall inside the input `[0, n)` (empty when `hi ≤ lo`).
    pub lo: Value,
    pub hi: Value,
    /// How many taps fall inside the padded input `[−pad_begin, n + pad_end)`.
    pub padded: Value,
}

/// `WindowTaps` in closed form — the IR form of `kiln_ir::geometry::Window2d::taps`, whose
/// test checks the formulas against the tap-by-tap definition — so that a kernel loops over a
/// window's real taps only: a pooling window is an attribute (up to 2³¹ taps, nearly all of
/// them padding, for a few bytes of text IR), and visiting every tap would hang the run. The values involved (`o·s`, `pad`,
/// `n`, `k·d`) are positions within a padded input of at most 2³¹ elements (a window start
/// may lie a stride past its end in ceil mode): no overflow in `i64`.
pub(crate) fn window_taps(
    e: &mut Emitter,
    o: Value,
    (s, d): (usize, usize),
    (pad_begin, pad_end): (usize, usize),
    n: usize,
    kernel: usize,
) -> WindowTaps {
    let zero = e.iconst(0);
    let k = e.iconst(kernel as i64);
    let start = WindowAxis { s, d, pad: pad_begin }.start(e, o);
    // lo = ⌈max(−start, 0)/d⌉
    let neg = e.b.ins().isub(zero, start);
    let before = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, start, 0);
    let t = e.b.ins().select(before, neg, zero);
    let lo = div_ceil_imm(e, t, d);
    // hi = min(⌊(n − 1 − start)/d⌋ + 1, kernel), or 0 when n − 1 − start < 0
    let last = e.iconst(n as i64 - 1);
    let r = e.b.ins().isub(last, start);
    let q = div_imm(e, r, d);
    let q = e.b.ins().iadd_imm_s(q, 1);
    let over = e.b.ins().icmp(IntCC::SignedGreaterThan, q, k);
    let q = e.b.ins().select(over, k, q);
    let none = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
    let hi = e.b.ins().select(none, zero, q);
    // padded = min(⌈(P − o·s)/d⌉, kernel), or 0 when P ≤ o·s, for P the padded size:
    // P − o·s = n + pad_end − start
    let p = e.iconst((n + pad_end) as i64);
    let rp = e.b.ins().isub(p, start);
    let qp = div_ceil_imm(e, rp, d);
    let over = e.b.ins().icmp(IntCC::SignedGreaterThan, qp, k);
    let qp = e.b.ins().select(over, k, qp);
    let none = e.b.ins().icmp_imm_s(IntCC::SignedLessThanOrEqual, rp, 0);
    let padded = e.b.ins().select(none, zero, qp);
    WindowTaps {
        start,
        lo,
        hi,
        padded,
    }
}

/// `v / d` for a non-negative `v` (only its sign-independent use matters: callers select
/// another value when `v < 0`); no division at all for `d = 1`, the common dilation, since
/// `opt_level=none` keeps a `udiv` by 1 (tens of cycles per window).
fn div_imm(e: &mut Emitter, v: Value, d: usize) -> Value {
    if d == 1 {
        v
    } else {
        e.b.ins().udiv_imm_s(v, d as i64)
    }
}

/// `⌈v / d⌉` for a non-negative `v`, with no division for `d = 1`.
fn div_ceil_imm(e: &mut Emitter, v: Value, d: usize) -> Value {
    if d == 1 {
        v
    } else {
        let t = e.b.ins().iadd_imm_s(v, d as i64 - 1);
        e.b.ins().udiv_imm_s(t, d as i64)
    }
}

/// `max(hi − lo, 0)`: the number of real taps.
pub(crate) fn real_taps(e: &mut Emitter, t: &WindowTaps) -> Value {
    let zero = e.iconst(0);
    let n = e.b.ins().isub(t.hi, t.lo);
    let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, n, 0);
    e.b.ins().select(neg, zero, n)
}

/// `body(ih, iw)` for every real tap of the window `(rows, cols)`, rows then columns ascending.
pub(crate) fn for_each_tap(
    e: &mut Emitter,
    (rows, cols): (&WindowTaps, &WindowTaps),
    d: [usize; 2],
    mut body: impl FnMut(&mut Emitter, Value, Value),
) {
    e.for_range(rows.lo, rows.hi, 1, |e, ky| {
        let ih = Tap::Var(ky).add_scaled(e, rows.start, d[0]);
        e.for_range(cols.lo, cols.hi, 1, |e, kx| {
            let iw = Tap::Var(kx).add_scaled(e, cols.start, d[1]);
            body(e, ih, iw);
        });
    });
}

/// Pooling, parallel over planes; each window visits its real taps only (`window_taps`), and
/// average pooling divides by the count of real or padded taps, in closed form.
pub(super) fn pool2d(e: &mut Emitter, a: &Args, p: &kiln_ir::Pool2d) {
    let [_, _, h, w] = dims4(a.dims(0));
    let [_, _, oh, ow] = dims4(a.odims());
    let [kh, kw] = p.kernel;
    let (s, d) = (p.stride, p.dilation);
    let geom = validated(p.geometry(a.dims(0)));
    let (padh, padw) = (geom.pads(0), geom.pads(1));
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    let kind = p.kind;
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let x_base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        let y_base = e.b.ins().imul_imm_s(plane, (oh * ow) as i64);
        e.for_const(0, oh as i64, |e, y| {
            let rows = window_taps(e, y, (s[0], d[0]), padh, h, kh);
            e.for_const(0, ow as i64, |e, x| {
                let cols = window_taps(e, x, (s[1], d[1]), padw, w, kw);
                let init = if kind == PoolKind::Max {
                    e.fconst(f32::NEG_INFINITY)
                } else {
                    e.fconst(0.0)
                };
                let acc = e.var(F32, init);
                for_each_tap(e, (&rows, &cols), d, |e, ih, iw| {
                    pool_step(e, (arena, xo, x_base, w), (ih, iw), acc, kind == PoolKind::Max);
                });
                let mut v = e.b.use_var(acc);
                if let PoolKind::Avg { count_include_pad } = kind {
                    let cnt = if count_include_pad {
                        e.b.ins().imul(rows.padded, cols.padded)
                    } else {
                        let (r, c) = (real_taps(e, &rows), real_taps(e, &cols));
                        e.b.ins().imul(r, c)
                    };
                    let cnt = e.b.ins().fcvt_from_sint(F32, cnt);
                    v = e.b.ins().fdiv(v, cnt);
                }
                let yi = e.b.ins().imul_imm_s(y, ow as i64);
                let yi = e.b.ins().iadd(yi, x);
                let yi = e.b.ins().iadd(yi, y_base);
                store_f(e, arena, yo, yi, v);
            });
        });
    });
}

#[allow(clippy::too_many_arguments)]
/// Folds input element `(ih, iw)` of the plane at `x_base` (row width `w`) into `acc`: the
/// maximum (strictly greater replaces, so the first maximum wins; a NaN wins) or the sum.
fn pool_step(
    e: &mut Emitter,
    (arena, xo, x_base, w): (Value, usize, Value, usize),
    (ih, iw): (Value, Value),
    acc: cranelift_frontend::Variable,
    max: bool,
) {
    let xi = e.b.ins().imul_imm_s(ih, w as i64);
    let xi = e.b.ins().iadd(xi, iw);
    let xi = e.b.ins().iadd(xi, x_base);
    let v = load_f(e, arena, xo, xi);
    let cur = e.b.use_var(acc);
    let nv = if max {
        e.max_nan(cur, v)
    } else {
        e.b.ins().fadd(cur, v)
    };
    e.b.def_var(acc, nv);
}

#[allow(clippy::too_many_arguments)]
fn reduce_window(
    e: &mut Emitter,
    arena: Value,
    xo: usize,
    x_base: Value,
    w: usize,
    rows: (Value, Value),
    cols: (Value, Value),
    kind: ReduceKind,
) -> Value {
    let init = if kind == ReduceKind::Max {
        e.fconst(f32::NEG_INFINITY)
    } else {
        e.fconst(0.0)
    };
    let acc = e.var(F32, init);
    e.for_range(rows.0, rows.1, 1, |e, ih| {
        e.for_range(cols.0, cols.1, 1, |e, iw| {
            pool_step(e, (arena, xo, x_base, w), (ih, iw), acc, kind == ReduceKind::Max);
        });
    });
    let v = e.b.use_var(acc);
    if kind == ReduceKind::Avg {
        let nr = e.b.ins().isub(rows.1, rows.0);
        let nc = e.b.ins().isub(cols.1, cols.0);
        let cnt = e.b.ins().imul(nr, nc);
        let cnt = e.b.ins().fcvt_from_sint(F32, cnt);
        e.b.ins().fdiv(v, cnt)
    } else {
        v
    }
}

pub(super) fn global_pool(e: &mut Emitter, a: &Args, kind: ReduceKind) {
    let [_, _, h, w] = dims4(a.dims(0));
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let x_base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        let (r0, r1, c0, c1) = (e.iconst(0), e.iconst(h as i64), e.iconst(0), e.iconst(w as i64));
        let v = reduce_window(e, arena, xo, x_base, w, (r0, r1), (c0, c1), kind);
        store_f(e, arena, yo, plane, v);
    });
}

/// Adaptive window `[⌊i·n/out⌋, ⌈(i+1)·n/out⌉)` of output index `i` (a run-time value), as
/// `kiln_ir`'s `adaptive_window`. `i < out` and `i·n + n + out ≤ 2·(out·n) + n`, with `out`
/// and `n` dims of tensors (≤ 2³¹ each): far inside `i64`.
pub(crate) fn adaptive_bounds(e: &mut Emitter, i: Value, n: usize, out: usize) -> (Value, Value) {
    let t = e.b.ins().imul_imm_s(i, n as i64);
    let lo = e.b.ins().udiv_imm_s(t, out as i64);
    let t = e.b.ins().iadd_imm_s(t, (n + out - 1) as i64);
    let hi = e.b.ins().udiv_imm_s(t, out as i64);
    (lo, hi)
}

/// Adaptive pooling, parallel over planes: loops over the output grid with each window's
/// bounds computed at run time, so the code does not grow with the output size.
pub(super) fn adaptive_pool(e: &mut Emitter, a: &Args, kind: ReduceKind, output: [usize; 2]) {
    let [_, _, h, w] = dims4(a.dims(0));
    let [oh, ow] = output;
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let x_base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        let y_base = e.b.ins().imul_imm_s(plane, (oh * ow) as i64);
        e.for_const(0, oh as i64, |e, y| {
            let rows = adaptive_bounds(e, y, h, oh);
            let y_row = e.b.ins().imul_imm_s(y, ow as i64);
            let y_row = e.b.ins().iadd(y_row, y_base);
            e.for_const(0, ow as i64, |e, x| {
                let cols = adaptive_bounds(e, x, w, ow);
                let v = reduce_window(e, arena, xo, x_base, w, rows, cols, kind);
                let yi = e.b.ins().iadd(y_row, x);
                store_f(e, arena, yo, yi, v);
            });
        });
    });
}
