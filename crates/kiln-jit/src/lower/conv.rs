//! Direct convolution (scalar, vector and register-blocked), transposed convolution, and the
//! zero-padded input copy of the blocked path.

use super::elementwise::epilogue;
use super::layout::copy;
use super::window::{WindowAxis, window_taps};
use super::{Args, dims4, in_range, load_f, store_f, validated};
use crate::codegen::Emitter;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// The explicit `[top, left, bottom, right]` padding of a convolution.
pub(super) fn conv_pads(c: &kiln_ir::Conv2d, x: &[usize], w: &[usize]) -> [usize; 4] {
    validated(c.geometry(x, [w[2], w[3]])).pad
}

/// Compile-time geometry of a direct convolution.
struct ConvGeom {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    cg: usize,
    s: [usize; 2],
    d: [usize; 2],
    pad: [usize; 2],
    xo: usize,
    wo: usize,
}

impl ConvGeom {
    fn new(a: &Args, c: &kiln_ir::Conv2d) -> ConvGeom {
        let (x, w) = (a.dims(0), a.dims(1));
        let p = conv_pads(c, x, w);
        ConvGeom {
            h: x[2],
            w: x[3],
            kh: w[2],
            kw: w[3],
            cg: w[1],
            s: c.stride,
            d: c.dilation,
            pad: [p[0], p[1]],
            xo: a.src(0),
            wo: a.src(1),
        }
    }

    /// The window along axis `a` (0: rows, 1: columns).
    fn axis(&self, a: usize) -> WindowAxis {
        WindowAxis {
            s: self.s[a],
            d: self.d[a],
            pad: self.pad[a],
        }
    }

    /// The output columns `[lo, hi)` whose taps all fall inside the row:
    /// `x·s − pad ≥ 0` and `x·s − pad + (kw−1)·d ≤ w − 1`; empty when there are none.
    fn interior(&self, ow: usize) -> (usize, usize) {
        let (s, pad) = (self.s[1], self.pad[1]);
        let lo = pad.div_ceil(s).min(ow);
        let reach = (self.kw - 1) * self.d[1];
        let hi = if self.w - 1 + pad >= reach {
            ((self.w - 1 + pad - reach) / s + 1).min(ow)
        } else {
            lo
        };
        (lo, hi.max(lo))
    }

    /// Accumulates output point(s) `(y, x..x+lanes)` into `acc`, where `ty` is `F32` (one point)
    /// or `F32X4` (four neighbouring columns at stride 1, all taps known to be inside the row).
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &self,
        e: &mut Emitter,
        arena: Value,
        x_base: Value,
        w_base: Value,
        y: Value,
        x: Value,
        acc: cranelift_frontend::Variable,
        ty: Type,
    ) {
        let g = self;
        if ty == F32X4 && g.kh * g.kw <= UNROLL_TAPS {
            return g.accumulate_unrolled(e, arena, x_base, w_base, y, x, acc);
        }
        // only the taps inside the input (`window_taps`): with a big padding most of a border
        // window is padding, and visiting it would cost kernel-size steps per output; the
        // vector path's columns are interior, so all their column taps are inside
        let (ay, ax) = (g.axis(0), g.axis(1));
        let rows = window_taps(e, y, (g.s[0], g.d[0]), (g.pad[0], 0), g.h, g.kh);
        let (c0, c1, x0) = if ty == F32X4 {
            (e.iconst(0), e.iconst(g.kw as i64), ax.start(e, x))
        } else {
            let cols = window_taps(e, x, (g.s[1], g.d[1]), (g.pad[1], 0), g.w, g.kw);
            (cols.lo, cols.hi, cols.start)
        };
        e.for_const(0, g.cg as i64, |e, ci| {
            let xc = e.b.ins().imul_imm_s(ci, (g.h * g.w) as i64);
            let xc = e.b.ins().iadd(x_base, xc);
            let wc = e.b.ins().imul_imm_s(ci, (g.kh * g.kw) as i64);
            let wc = e.b.ins().iadd(w_base, wc);
            e.for_range(rows.lo, rows.hi, 1, |e, ky| {
                let ih = ay.tap(e, rows.start, Tap::Var(ky));
                let row = e.b.ins().imul_imm_s(ih, g.w as i64);
                let row = e.b.ins().iadd(row, xc);
                e.for_range(c0, c1, 1, |e, kx| {
                    let iw = ax.tap(e, x0, Tap::Var(kx));
                    let xi = e.b.ins().iadd(row, iw);
                    let wi = e.b.ins().imul_imm_s(ky, g.kw as i64);
                    let wi = e.b.ins().iadd(wi, kx);
                    let wi = e.b.ins().iadd(wi, wc);
                    let px = e.elem(arena, g.xo, xi);
                    let xv = e.load(ty, px);
                    let wv = load_f(e, arena, g.wo, wi);
                    let wv = if ty == F32X4 {
                        e.b.ins().splat(F32X4, wv)
                    } else {
                        wv
                    };
                    let s = e.b.use_var(acc);
                    let s = e.b.ins().fma(xv, wv, s);
                    e.b.def_var(acc, s);
                });
            });
        });
    }
}

/// Kernels with at most this many taps have their tap loops unrolled in the vector path.
const UNROLL_TAPS: usize = 49;

/// Kernel widths up to this have their column taps unrolled in the blocked convolution; wider
/// ones (any width is valid over a padded input) take a loop, so code size stays bounded.
pub(crate) const UNROLL_KW: usize = 16;

/// A tap index: a constant when its loop is unrolled, a loop variable otherwise.
#[derive(Clone, Copy)]
pub(crate) enum Tap {
    Const(usize),
    Var(Value),
}

impl Tap {
    /// `base + tap·scale` (a constant offset when unrolled). `tap·scale` is a position inside
    /// a window that fits its padded input (< 2³¹), so it fits `i64`.
    pub(crate) fn add_scaled(self, e: &mut Emitter, base: Value, scale: usize) -> Value {
        match self {
            Tap::Const(k) => e.b.ins().iadd_imm_s(base, (k * scale) as i64),
            Tap::Var(k) => {
                let t = e.b.ins().imul_imm_s(k, scale as i64);
                e.b.ins().iadd(base, t)
            }
        }
    }
}

/// `body(k)` for `k in 0..n`: unrolled (constant `k`) when `n ≤ limit`, else one loop.
pub(crate) fn taps(e: &mut Emitter, n: usize, limit: usize, mut body: impl FnMut(&mut Emitter, Tap)) {
    if n <= limit {
        for k in 0..n {
            body(e, Tap::Const(k));
        }
    } else {
        e.for_const(0, n as i64, |e, k| body(e, Tap::Var(k)));
    }
}

impl ConvGeom {
    /// `accumulate` for four interior columns `x..x+4` (at any stride) with the tap loops
    /// unrolled: every tap offset is a constant, so a tap is one (or, at stride > 1, four
    /// gathered) load, a weight broadcast and an FMA. Rows are still checked.
    #[allow(clippy::too_many_arguments)]
    fn accumulate_unrolled(
        &self,
        e: &mut Emitter,
        arena: Value,
        x_base: Value,
        w_base: Value,
        y: Value,
        x: Value,
        acc: cranelift_frontend::Variable,
    ) {
        let g = self;
        let (ay, ax) = (g.axis(0), g.axis(1));
        let (y0, x0) = (ay.start(e, y), ax.start(e, x));
        e.for_const(0, g.cg as i64, |e, ci| {
            let xc = e.b.ins().imul_imm_s(ci, (g.h * g.w) as i64);
            let xc = e.b.ins().iadd(x_base, xc);
            let wc = e.b.ins().imul_imm_s(ci, (g.kh * g.kw) as i64);
            let wc = e.b.ins().iadd(w_base, wc);
            for ky in 0..g.kh {
                let ih = ay.tap(e, y0, Tap::Const(ky));
                let ok = in_range(e, ih, g.h);
                e.if_then(ok, |e| {
                    let row = e.b.ins().imul_imm_s(ih, g.w as i64);
                    let row = e.b.ins().iadd(row, xc);
                    let row = e.b.ins().iadd(row, x0);
                    for kx in 0..g.kw {
                        let xi = ax.tap(e, row, Tap::Const(kx));
                        let xv = load4(e, arena, g.xo, xi, g.s[1], 4);
                        let wi = e.b.ins().iadd_imm_s(wc, (ky * g.kw + kx) as i64);
                        let wv = load_f(e, arena, g.wo, wi);
                        let wv = e.b.ins().splat(F32X4, wv);
                        let sum = e.b.use_var(acc);
                        let sum = e.b.ins().fma(xv, wv, sum);
                        e.b.def_var(acc, sum);
                    }
                });
            }
        });
    }
}

/// Direct convolution, parallel over (batch, output channel). Where the stride along the
/// width is 1, the columns whose taps all fall inside the row are computed four at a time
/// with `f32x4` FMAs; the borders and other strides take the scalar path.
pub(super) fn conv2d(e: &mut Emitter, a: &Args, c: &kiln_ir::Conv2d) {
    let geom = ConvGeom::new(a, c);
    let ConvGeom { h, w, kh, kw, cg, .. } = geom;
    let [_, ch, _, _] = dims4(a.dims(0));
    let co = a.dims(1)[0];
    let [_, _, oh, ow] = dims4(a.odims());
    let cog = co / c.groups;
    // interior columns in whole vectors: at stride 1 always; at other strides (gathered
    // lanes) when the tap loops are unrolled
    let (lo, hi) = if c.stride[1] == 1 || kh * kw <= UNROLL_TAPS {
        let (lo, hi) = geom.interior(ow);
        (lo, lo + (hi - lo) / 4 * 4)
    } else {
        (0, 0)
    };
    let (arena, yo) = (a.arena, a.dst());
    let bias = a.ins.get(2).map(|s| s.0.offset);
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let n = e.b.ins().udiv_imm_s(idx, co as i64);
        let o = e.b.ins().urem_imm_s(idx, co as i64);
        let g = e.b.ins().udiv_imm_s(o, cog as i64);
        let nch = e.b.ins().imul_imm_s(n, ch as i64);
        let gc = e.b.ins().imul_imm_s(g, cg as i64);
        let x_plane0 = e.b.ins().iadd(nch, gc);
        let x_base = e.b.ins().imul_imm_s(x_plane0, (h * w) as i64);
        let w_base = e.b.ins().imul_imm_s(o, (cg * kh * kw) as i64);
        let y_base = e.b.ins().imul_imm_s(idx, (oh * ow) as i64);
        let b0 = match bias {
            Some(bo) => load_f(e, arena, bo, o),
            None => e.fconst(0.0),
        };
        e.for_const(0, oh as i64, |e, y| {
            let y_row = e.b.ins().imul_imm_s(y, ow as i64);
            let y_row = e.b.ins().iadd(y_row, y_base);
            for (from, to, step, ty) in [(0, lo, 1, F32), (lo, hi, 4, F32X4), (hi, ow, 1, F32)] {
                if from >= to {
                    continue;
                }
                let (f, t) = (e.iconst(from as i64), e.iconst(to as i64));
                e.for_range(f, t, step, |e, x| {
                    let init = if ty == F32X4 {
                        e.b.ins().splat(F32X4, b0)
                    } else {
                        b0
                    };
                    let acc = e.var(ty, init);
                    geom.accumulate(e, arena, x_base, w_base, y, x, acc, ty);
                    let yi = e.b.ins().iadd(y_row, x);
                    let v = e.b.use_var(acc);
                    let v = epilogue(e, ty, v, c.activation);
                    let p = e.elem(arena, yo, yi);
                    e.store(v, p);
                });
            }
        });
    });
}

/// Output channels per register block of the blocked convolution.
pub(super) const CO_BLOCK: usize = 4;

/// Output columns per register block (two `f32x4`).
const X_BLOCK: usize = 8;

/// Whether a convolution takes the register-blocked path: each group's output channels come
/// in whole blocks of `CO_BLOCK`.
pub(super) fn conv_blocked(c: &kiln_ir::Conv2d, w: &[usize]) -> bool {
    (w[0] / c.groups.max(1)).is_multiple_of(CO_BLOCK)
}

/// Register-blocked direct convolution, parallel over (batch, block of 4 output channels).
/// Interior columns (every tap inside the row) are computed 4 channels × 8 columns at a time:
/// 8 `f32x4` accumulators, each input vector reused by 4 broadcast weights. The border
/// columns take the scalar path of [`ConvGeom::accumulate`].
/// `tail`: the input is a scratch copy followed by the slack `scratch_len` reserves, so a
/// last partial block may read past the end of a row.
pub(super) fn conv2d_blocked(e: &mut Emitter, a: &Args, c: &kiln_ir::Conv2d, tail: bool) {
    let geom = ConvGeom::new(a, c);
    let ConvGeom {
        h,
        w,
        kh,
        kw,
        cg,
        s,
        d,
        pad: [ph, _],
        ..
    } = geom;
    let (ay, ax) = (geom.axis(0), geom.axis(1));
    let [_, ch, _, _] = dims4(a.dims(0));
    let co = a.dims(1)[0];
    let [_, _, oh, ow] = dims4(a.odims());
    let cog = co / c.groups;
    let blocks = co / CO_BLOCK;
    let (lo, hi) = geom.interior(ow);
    let vend = lo + (hi - lo) / X_BLOCK * X_BLOCK;
    let vend4 = vend + (hi - vend) / 4 * 4;
    let (arena, xo, wo, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let bias = a.ins.get(2).map(|s| s.0.offset);
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let n = e.b.ins().udiv_imm_s(idx, blocks as i64);
        let cb = e.b.ins().urem_imm_s(idx, blocks as i64);
        let o0 = e.b.ins().imul_imm_s(cb, CO_BLOCK as i64);
        let g = e.b.ins().udiv_imm_s(o0, cog as i64);
        let nch = e.b.ins().imul_imm_s(n, ch as i64);
        let gc = e.b.ins().imul_imm_s(g, cg as i64);
        let x_plane0 = e.b.ins().iadd(nch, gc);
        let x_base = e.b.ins().imul_imm_s(x_plane0, (h * w) as i64);
        let mut w_base = Vec::with_capacity(CO_BLOCK);
        let mut y_base = Vec::with_capacity(CO_BLOCK);
        let mut b0 = Vec::with_capacity(CO_BLOCK);
        let nco = e.b.ins().imul_imm_s(n, co as i64);
        for j in 0..CO_BLOCK {
            let o = e.b.ins().iadd_imm_s(o0, j as i64);
            w_base.push(e.b.ins().imul_imm_s(o, (cg * kh * kw) as i64));
            let plane = e.b.ins().iadd(nco, o);
            y_base.push(e.b.ins().imul_imm_s(plane, (oh * ow) as i64));
            b0.push(match bias {
                Some(bo) => load_f(e, arena, bo, o),
                None => e.fconst(0.0),
            });
        }
        e.for_const(0, oh as i64, |e, y| {
            // interior: 4 channels × 8 columns in registers, then a block of 4 columns, then
            // (over a padded scratch input with slack) a partial block of the last columns
            let block = |e: &mut Emitter, x: Value, nv: usize, lanes: usize| {
                let mut acc = Vec::with_capacity(CO_BLOCK * nv);
                for &bj in &b0 {
                    let bv = e.b.ins().splat(F32X4, bj);
                    for _ in 0..nv {
                        acc.push(e.var(F32X4, bv));
                    }
                }
                let x0 = ax.start(e, x);
                // the kernel rows inside the input only (a tall padding costs nothing)
                let rows = window_taps(e, y, (s[0], d[0]), (ph, 0), h, kh);
                e.for_const(0, cg as i64, |e, ci| {
                    let xc = e.b.ins().imul_imm_s(ci, (h * w) as i64);
                    let xc = e.b.ins().iadd(x_base, xc);
                    let wc = e.b.ins().imul_imm_s(ci, (kh * kw) as i64);
                    e.for_range(rows.lo, rows.hi, 1, |e, ky| {
                        let ih = ay.tap(e, rows.start, Tap::Var(ky));
                        {
                            let row = e.b.ins().imul_imm_s(ih, w as i64);
                            let row = e.b.ins().iadd(row, xc);
                            let row = e.b.ins().iadd(row, x0);
                            let wk = e.b.ins().imul_imm_s(ky, kw as i64);
                            let wk = e.b.ins().iadd(wk, wc);
                            taps(e, kw, UNROLL_KW, |e, kx| {
                                let col = ax.tap(e, row, kx);
                                let xv: Vec<Value> = (0..nv)
                                    .map(|v| {
                                        let start = e.b.ins().iadd_imm_s(col, (v * 4 * s[1]) as i64);
                                        let live = lanes.saturating_sub(4 * v).min(4);
                                        load4(e, arena, xo, start, s[1], live)
                                    })
                                    .collect();
                                for j in 0..CO_BLOCK {
                                    let wi = e.b.ins().iadd(wk, w_base[j]);
                                    let wi = kx.add_scaled(e, wi, 1);
                                    let p = e.elem(arena, wo, wi);
                                    let wsc = e.load(F32, p);
                                    for (v, &xvv) in xv.iter().enumerate() {
                                        let wv = e.b.ins().splat(F32X4, wsc);
                                        let cur = e.b.use_var(acc[nv * j + v]);
                                        let nvv = e.b.ins().fma(xvv, wv, cur);
                                        e.b.def_var(acc[nv * j + v], nvv);
                                    }
                                }
                            });
                        }
                    });
                });
                for j in 0..CO_BLOCK {
                    let yr = e.b.ins().imul_imm_s(y, ow as i64);
                    let yr = e.b.ins().iadd(yr, y_base[j]);
                    let yr = e.b.ins().iadd(yr, x);
                    for v in 0..nv {
                        let val = e.b.use_var(acc[nv * j + v]);
                        let val = epilogue(e, F32X4, val, c.activation);
                        if lanes >= 4 * (v + 1) {
                            let yi = e.b.ins().iadd_imm_s(yr, (v * 4) as i64);
                            let p = e.elem(arena, yo, yi);
                            e.store(val, p);
                        } else {
                            // a partial block: only the first `lanes` columns exist
                            for lane in 0..lanes.saturating_sub(v * 4) {
                                let yi = e.b.ins().iadd_imm_s(yr, (v * 4 + lane) as i64);
                                let one = e.b.ins().extractlane(val, lane as u8);
                                store_f(e, arena, yo, yi, one);
                            }
                        }
                    }
                }
            };
            for (from, to, nv) in [(lo, vend, 2usize), (vend, vend4, 1)] {
                if from < to {
                    let (f, t) = (e.iconst(from as i64), e.iconst(to as i64));
                    e.for_range(f, t, (4 * nv) as i64, |e, x| block(e, x, nv, 4 * nv));
                }
            }
            if tail && vend4 < ow {
                let x = e.iconst(vend4 as i64);
                block(e, x, 1, ow - vend4);
            }
            // borders (and what is left of the interior): one point, one channel at a time
            let right = if tail { ow } else { vend4 };
            for (from, to) in [(0, lo), (right, ow)] {
                if from >= to {
                    continue;
                }
                let (f, t) = (e.iconst(from as i64), e.iconst(to as i64));
                e.for_range(f, t, 1, |e, x| {
                    for j in 0..CO_BLOCK {
                        let acc = e.var(F32, b0[j]);
                        geom.accumulate(e, arena, x_base, w_base[j], y, x, acc, F32);
                        let yi = e.b.ins().imul_imm_s(y, ow as i64);
                        let yi = e.b.ins().iadd(yi, y_base[j]);
                        let yi = e.b.ins().iadd(yi, x);
                        let v = e.b.use_var(acc);
                        let v = epilogue(e, F32, v, c.activation);
                        store_f(e, arena, yo, yi, v);
                    }
                });
            }
        });
    });
}

/// Four f32 at `start`, `start + stride`, … as one vector (one load when `stride == 1`).
/// At other strides only the first `lanes` (1 to 4) are gathered, the others repeat the
/// first: a partial block never reads past its last column (which may lie `3·stride` before
/// the end of the buffer, and strides are unbounded).
fn load4(e: &mut Emitter, arena: Value, off: usize, start: Value, stride: usize, lanes: usize) -> Value {
    if stride == 1 {
        let p = e.elem(arena, off, start);
        return e.load(F32X4, p);
    }
    let first = load_f(e, arena, off, start);
    let mut v = e.b.ins().splat(F32X4, first);
    for lane in 1..lanes.min(4) {
        // lane·stride ≤ the last column's input index < 2³¹: no overflow
        let i = e.b.ins().iadd_imm_s(start, (lane * stride) as i64);
        let x = load_f(e, arena, off, i);
        v = e.b.ins().insertlane(v, x, lane as u8);
    }
    v
}

/// The input index feeding output coordinate `o` through kernel tap `k` of a transposed
/// convolution along one axis, and whether it exists: the `axis` window of input position `q`
/// reaches `o` through tap `k` when `q·s − pad + k·d = o`, so `o + pad − k·d` must be a
/// non-negative multiple of the stride `s` whose quotient is below the input size `n`.
fn transposed_tap(e: &mut Emitter, axis: WindowAxis, o: Value, k: Value, n: usize) -> (Value, Value) {
    let WindowAxis { s, d, pad } = axis;
    let t = e.b.ins().iadd_imm_s(o, pad as i64);
    let kd = e.b.ins().imul_imm_s(k, d as i64);
    let t = e.b.ins().isub(t, kd);
    let q = e.b.ins().sdiv_imm_s(t, s as i64);
    let r = e.b.ins().srem_imm_s(t, s as i64);
    let zero = e.iconst(0);
    let exact = e.b.ins().icmp(IntCC::Equal, r, zero);
    let inside = in_range(e, q, n);
    let nonneg = e.b.ins().icmp(IntCC::SignedGreaterThanOrEqual, t, zero);
    let ok = e.b.ins().band(exact, inside);
    (q, e.b.ins().band(ok, nonneg))
}

/// The taps `[lo, hi)` of a transposed convolution's output coordinate `o` that can reach an
/// input position (`transposed_tap` still checks each for the stride): `o + pad − k·d` must lie
/// in `[0, (n − 1)·s]`. A big kernel over a small input (an output that is mostly the kernel's
/// reach) then costs a step per reachable tap, not per tap. `(n − 1)·s`, `o + pad` and `k·d`
/// are positions of the output or of the window (< 2³¹): no overflow.
fn transposed_taps(e: &mut Emitter, axis: WindowAxis, o: Value, n: usize, k: usize) -> (Value, Value) {
    let WindowAxis { s, d, pad } = axis;
    let zero = e.iconst(0);
    let kk = e.iconst(k as i64);
    let t = e.b.ins().iadd_imm_s(o, pad as i64);
    // hi = min(⌊t/d⌋ + 1, k)
    let q = e.b.ins().udiv_imm_s(t, d as i64);
    let q = e.b.ins().iadd_imm_s(q, 1);
    let over = e.b.ins().icmp(IntCC::SignedGreaterThan, q, kk);
    let hi = e.b.ins().select(over, kk, q);
    // lo = ⌈max(t − (n − 1)·s, 0)/d⌉
    let reach = if n > 1 {
        (n - 1).saturating_mul(s).min(i64::MAX as usize / 2)
    } else {
        0
    };
    let u = e.b.ins().iadd_imm_s(t, -(reach as i64));
    let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, u, 0);
    let u = e.b.ins().select(neg, zero, u);
    let u = e.b.ins().iadd_imm_s(u, d as i64 - 1);
    let lo = e.b.ins().udiv_imm_s(u, d as i64);
    (lo, hi)
}

pub(super) fn conv_transpose2d(e: &mut Emitter, a: &Args, c: &kiln_ir::ConvTranspose2d) {
    let [_, ci, h, w] = dims4(a.dims(0));
    let [_, cog, kh, kw] = dims4(a.dims(1));
    let [_, co, oh, ow] = dims4(a.odims());
    let cig = ci / c.groups;
    let (arena, xo, wo, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let bias = a.ins.get(2).map(|s| s.0.offset);
    let [ay, ax] = [0, 1].map(|i| WindowAxis {
        s: c.stride[i],
        d: c.dilation[i],
        pad: c.padding[i],
    });
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let n = e.b.ins().udiv_imm_s(idx, co as i64);
        let o = e.b.ins().urem_imm_s(idx, co as i64);
        let g = e.b.ins().udiv_imm_s(o, cog as i64);
        let oc = e.b.ins().urem_imm_s(o, cog as i64);
        let nci = e.b.ins().imul_imm_s(n, ci as i64);
        let gci = e.b.ins().imul_imm_s(g, cig as i64);
        let c0 = e.b.ins().iadd(nci, gci); // plane of the group's first input channel
        let wc0 = e.b.ins().imul_imm_s(g, cig as i64); // its row in w
        let y_base = e.b.ins().imul_imm_s(idx, (oh * ow) as i64);
        let b0 = match bias {
            Some(bo) => load_f(e, arena, bo, o),
            None => e.fconst(0.0),
        };
        e.for_const(0, oh as i64, |e, y| {
            e.for_const(0, ow as i64, |e, x| {
                let acc = e.var(F32, b0);
                let (ky0, ky1) = transposed_taps(e, ay, y, h, kh);
                let (kx0, kx1) = transposed_taps(e, ax, x, w, kw);
                e.for_range(ky0, ky1, 1, |e, ky| {
                    let (q, ok) = transposed_tap(e, ay, y, ky, h);
                    e.if_then(ok, |e| {
                        e.for_range(kx0, kx1, 1, |e, kx| {
                            let (qx, ok) = transposed_tap(e, ax, x, kx, w);
                            e.if_then(ok, |e| {
                                e.for_const(0, cig as i64, |e, cc| {
                                    let plane = e.b.ins().iadd(c0, cc);
                                    let xi = e.b.ins().imul_imm_s(plane, (h * w) as i64);
                                    let r = e.b.ins().imul_imm_s(q, w as i64);
                                    let xi = e.b.ins().iadd(xi, r);
                                    let xi = e.b.ins().iadd(xi, qx);
                                    // w[ci, oc, ky, kx]
                                    let wr = e.b.ins().iadd(wc0, cc);
                                    let wi = e.b.ins().imul_imm_s(wr, cog as i64);
                                    let wi = e.b.ins().iadd(wi, oc);
                                    let wi = e.b.ins().imul_imm_s(wi, (kh * kw) as i64);
                                    let t = e.b.ins().imul_imm_s(ky, kw as i64);
                                    let wi = e.b.ins().iadd(wi, t);
                                    let wi = e.b.ins().iadd(wi, kx);
                                    let xv = load_f(e, arena, xo, xi);
                                    let wv = load_f(e, arena, wo, wi);
                                    let sacc = e.b.use_var(acc);
                                    let sacc = e.b.ins().fma(xv, wv, sacc);
                                    e.b.def_var(acc, sacc);
                                });
                            });
                        });
                    });
                });
                let yi = e.b.ins().imul_imm_s(y, ow as i64);
                let yi = e.b.ins().iadd(yi, x);
                let yi = e.b.ins().iadd(yi, y_base);
                let v = e.b.use_var(acc);
                store_f(e, arena, yo, yi, v);
            });
        });
    });
}

/// Copies each input plane into the zero-padded plane at `dst` (padding `[t, l, b, r]`).
pub(super) fn pad_planes(e: &mut Emitter, a: &Args, p: [usize; 4], dst: usize) {
    let [_, _, h, w] = dims4(a.dims(0));
    let (hp, wp) = (h + p[0] + p[2], w + p[1] + p[3]);
    let (arena, xo) = (a.arena, a.src(0));
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let src = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        let out = e.b.ins().imul_imm_s(plane, (hp * wp) as i64);
        e.for_const(0, hp as i64, |e, r| {
            let row = e.b.ins().imul_imm_s(r, wp as i64);
            let row = e.b.ins().iadd(row, out);
            zero_fill(e, arena, dst, row, wp);
            let ih = e.b.ins().iadd_imm_s(r, -(p[0] as i64));
            let inside = in_range(e, ih, h);
            e.if_then(inside, |e| {
                let from = e.b.ins().imul_imm_s(ih, w as i64);
                let from = e.b.ins().iadd(from, src);
                let to = e.b.ins().iadd_imm_s(row, p[1] as i64);
                copy(e, arena, (xo, from), (dst, to), w);
            });
        });
    });
}

/// `len` zeros from element `start` of the tensor at `off`.
fn zero_fill(e: &mut Emitter, arena: Value, off: usize, start: Value, len: usize) {
    let vlen = (len / 4 * 4) as i64;
    for (lo, hi, step, ty) in [(0, vlen, 4, F32X4), (vlen, len as i64, 1, F32)] {
        let (l, h) = (e.iconst(lo), e.iconst(hi));
        let z = e.constant(ty, 0.0);
        e.for_range(l, h, step, |e, j| {
            let i = e.b.ins().iadd(start, j);
            let q = e.elem(arena, off, i);
            e.store(z, q);
        });
    }
}
