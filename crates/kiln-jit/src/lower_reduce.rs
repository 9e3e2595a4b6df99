//! Lowering of local response normalization (`lrn`, `lrn_grad`), the mean over axes
//! (`reduce_mean`) and its adjoint (`broadcast_to`), of broadcasting add / sub / mul / div by
//! rows, and of the activations clip, hard sigmoid and erf (forward and backward), with the
//! math they need: erf's polynomial forms, and `ln` and powers on `f32` and `f32x4`.
//!
//! As everywhere in the JIT, every extent and stride is a compile-time constant from shapes
//! validated when the graph was built; loop bounds that depend on the channel (LRN's window)
//! are clipped to the channel range at run time, so every access is in bounds.

use crate::codegen::{Emitter, lanes};
use crate::lower::{Args, broadcast_strides, split};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I32X4};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::{Activation, Op};

/// Writes the kernel of one of this file's forward ops and returns its parallel extent
/// (`lower::emit` sends only these ops here; `lower_train::emit` calls [`lrn_grad_kernel`] and
/// [`broadcast_to`] itself).
pub fn emit(e: &mut Emitter, op: &Op, a: &Args) -> usize {
    let od = a.odims().to_vec();
    let numel = a.out.1.shape.numel();
    match op {
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            lrn(e, a, Lrn::new(*size, *alpha, *beta, *bias, a.dims(0)));
            od[0] * od[1]
        }
        Op::ReduceMean { axes, .. } => {
            reduce_mean(e, a, axes);
            numel
        }
        _ => 0,
    }
}

// ---------------------------------------------------------------------------------------------
// math on f32 and f32x4

/// A constant of the integer type of the same lanes as `ty` (`I32` or `I32X4`).
fn iconst32(e: &mut Emitter, ty: Type, v: i32) -> Value {
    let c = e.b.ins().iconst(I32, i64::from(v));
    if ty == F32X4 { e.b.ins().splat(I32X4, c) } else { c }
}

/// `cond ? t : f` for the result of an `fcmp` of type `ty`'s lanes.
fn select(e: &mut Emitter, ty: Type, cond: Value, t: Value, f: Value) -> Value {
    if ty == F32X4 {
        let mask = e.b.ins().bitcast(F32X4, lanes(), cond);
        e.b.ins().bitselect(mask, t, f)
    } else {
        e.b.ins().select(cond, t, f)
    }
}

/// `ln x` for normal `x > 0`, `+∞` for `+∞` and NaN for NaN: `x = 2ᵏ·m` with `m ∈ [√½, √2)`,
/// `ln m = 2·atanh((m−1)/(m+1))` by its odd series to the 11th power (truncation below 1e-10).
fn ln(e: &mut Emitter, ty: Type, x: Value) -> Value {
    let ity = if ty == F32X4 { I32X4 } else { I32 };
    let bits = e.b.ins().bitcast(ity, lanes(), x);
    // shift the mantissa range to [√½, √2) by biasing with the bits of √½ (0x3f3504f3)
    let sqrt_half = iconst32(e, ty, 0x3f35_04f3);
    let off = e.b.ins().isub(bits, sqrt_half);
    let k = e.b.ins().sshr_imm_s(off, 23);
    let kbits = e.b.ins().ishl_imm_s(k, 23);
    let mbits = e.b.ins().isub(bits, kbits);
    let m = e.b.ins().bitcast(ty, lanes(), mbits);
    let one = e.constant(ty, 1.0);
    let num = e.b.ins().fsub(m, one);
    let den = e.b.ins().fadd(m, one);
    let z = e.b.ins().fdiv(num, den);
    let z2 = e.b.ins().fmul(z, z);
    let mut p = e.constant(ty, 1.0 / 11.0);
    for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        let cc = e.constant(ty, c);
        p = e.b.ins().fma(p, z2, cc);
    }
    let two = e.constant(ty, 2.0);
    let zp = e.b.ins().fmul(z, p);
    let lnm = e.b.ins().fmul(zp, two);
    let kf = e.b.ins().fcvt_from_sint(ty, k);
    let ln2 = e.constant(ty, std::f32::consts::LN_2);
    let r = e.b.ins().fma(kf, ln2, lnm);
    let nan = e.b.ins().fcmp(FloatCC::Unordered, x, x);
    let r = select(e, ty, nan, x, r);
    let inf = e.constant(ty, f32::INFINITY);
    let is_inf = e.b.ins().fcmp(FloatCC::Equal, x, inf);
    select(e, ty, is_inf, x, r)
}

/// `x^p` for `x ≥` the smallest normal f32 (or `+∞`, NaN), as `exp(p·ln x)`.
fn pow(e: &mut Emitter, ty: Type, x: Value, p: f32) -> Value {
    if p == 0.0 {
        return e.constant(ty, 1.0);
    }
    let l = ln(e, ty, x);
    let pc = e.constant(ty, p);
    let t = e.b.ins().fmul(l, pc);
    e.exp(ty, t)
}

/// The error function in two pieces (N. Juffa's single-precision `erff`, whose polynomials
/// are accurate to 2.1e-8 in exact arithmetic; with f32 rounding and this JIT's `exp`, within
/// 1e-7 of the true value): for `|x| ≤ 0.927734375` the odd form `x + x·P(x²)`, above it
/// `sign(x)·(1 − e^{R(|x|)})` with `R(t) ≈ ln erfc(t)`, where the subtraction from 1 loses
/// nothing. Both are computed and the lanes pick one; NaN stays NaN, ±∞ gives ±1.
pub(crate) fn erf(e: &mut Emitter, ty: Type, x: Value) -> Value {
    let t = e.b.ins().fabs(x);
    let s = e.b.ins().fmul(x, x);
    // near 0
    let mut p = e.constant(ty, -5.967_617e-4);
    for c in [
        4.991_194_2e-3,
        -2.676_813_5e-2,
        1.128_199_25e-1,
        -3.761_253_4e-1,
        1.283_791_7e-1,
    ] {
        let cc = e.constant(ty, c);
        p = e.b.ins().fma(p, s, cc);
    }
    let near = e.b.ins().fma(p, x, x);
    // the tails
    let fma = |e: &mut Emitter, a: Value, b: Value, c: f32| {
        let cc = e.constant(ty, c);
        e.b.ins().fma(a, b, cc)
    };
    let c0 = e.constant(ty, -1.728_534_7e-5);
    let r = fma(e, c0, t, 3.831_971_3e-4);
    let c1 = e.constant(ty, -3.883_964_4e-3);
    let u = fma(e, c1, t, 2.425_462_2e-2);
    let r = e.b.ins().fma(r, s, u);
    let r = fma(e, r, t, -1.067_778_8e-1);
    let r = fma(e, r, t, -6.348_467e-1);
    let r = fma(e, r, t, -1.287_175_1e-1);
    let nt = e.b.ins().fneg(t);
    let r = e.b.ins().fma(r, t, nt);
    // clamped: 1 − e^{−87} is 1 as 1 − 0 is
    let ex = e.exp_clamped(ty, r);
    let one = e.constant(ty, 1.0);
    let tail = e.b.ins().fsub(one, ex);
    let neg_tail = e.b.ins().fneg(tail);
    let zero = e.constant(ty, 0.0);
    let tail = e.select_lt(ty, x, zero, neg_tail, tail);
    // 475/512
    let bound = e.constant(ty, 0.927_734_4);
    e.select_lt(ty, bound, t, tail, near)
}

/// `x` clamped to `[lo, hi]` as the interpreter does: below `lo` is `lo`, above `hi` is `hi`,
/// NaN stays NaN.
fn clip(e: &mut Emitter, ty: Type, x: Value, lo: f32, hi: f32) -> Value {
    let (l, h) = (e.constant(ty, lo), e.constant(ty, hi));
    let v = e.max(ty, x, l);
    e.min(ty, v, h)
}

/// `max(0, min(1, alpha·x + beta))` in two roundings, as the interpreter.
fn hard_sigmoid(e: &mut Emitter, ty: Type, x: Value, [alpha, beta]: [f32; 2]) -> Value {
    let (a, b) = (e.constant(ty, alpha), e.constant(ty, beta));
    let v = e.b.ins().fmul(x, a);
    let v = e.b.ins().fadd(v, b);
    clip(e, ty, v, 0.0, 1.0)
}

/// The activations lowered here: clip, hard sigmoid, erf, GELU and HardSwish
/// (`lower::activation` sends them).
pub(crate) fn activation(e: &mut Emitter, ty: Type, x: Value, act: Activation) -> Value {
    match act {
        Activation::Clip { min, max } => clip(e, ty, x, min, max),
        Activation::HardSigmoid { alpha, beta } => hard_sigmoid(e, ty, x, [alpha, beta]),
        Activation::Erf => erf(e, ty, x),
        // (x + x·erf(c·x))·0.5, the operations of the graph it stands for
        Activation::Gelu => {
            let c = e.constant(ty, Activation::GELU_C);
            let cx = e.b.ins().fmul(c, x);
            let er = erf(e, ty, cx);
            let xs = e.b.ins().fmul(x, er);
            let s = e.b.ins().fadd(x, xs);
            let half = e.constant(ty, 0.5);
            e.b.ins().fmul(half, s)
        }
        Activation::HardSwish => {
            let h = hard_sigmoid(e, ty, x, Activation::HARD_SWISH);
            e.b.ins().fmul(x, h)
        }
        Activation::Relu
        | Activation::LeakyRelu { .. }
        | Activation::Sigmoid
        | Activation::Tanh
        | Activation::Silu => {
            unreachable!("lower::activation lowers {} itself", act.name())
        }
    }
}

/// The backward of clip, hard sigmoid, erf, SiLU, GELU and HardSwish
/// (`lower_train::activation_grad` sends them): from the forward output `v` (clip, hard
/// sigmoid) or input (the others) and the delta `g`, in the interpreter's order.
pub(crate) fn activation_grad(e: &mut Emitter, ty: Type, act: Activation, v: Value, g: Value) -> Value {
    let zero = e.constant(ty, 0.0);
    // g·slope where lo < v < hi, else 0 (a NaN v gives 0, as the interpreter's test)
    let inside = |e: &mut Emitter, lo: f32, hi: f32, slope: Value| {
        let (l, h) = (e.constant(ty, lo), e.constant(ty, hi));
        let t = e.select_lt(ty, l, v, slope, zero);
        e.select_lt(ty, v, h, t, zero)
    };
    match act {
        Activation::Clip { min, max } => inside(e, min, max, g),
        Activation::HardSigmoid { alpha, .. } => {
            let a = e.constant(ty, alpha);
            let ga = e.b.ins().fmul(g, a);
            inside(e, 0.0, 1.0, ga)
        }
        Activation::Erf => {
            let c = e.constant(ty, std::f32::consts::FRAC_2_SQRT_PI);
            let gc = e.b.ins().fmul(g, c);
            let x2 = e.b.ins().fmul(v, v);
            let nx2 = e.b.ins().fneg(x2);
            let ex = e.exp(ty, nx2);
            e.b.ins().fmul(gc, ex)
        }
        Activation::Silu => {
            // g·s·(1 + x·(1 − s)), s = sigmoid(x), in the interpreter's order
            let one = e.constant(ty, 1.0);
            let s = crate::lower::sigmoid(e, ty, v);
            let gs = e.b.ins().fmul(g, s);
            let om = e.b.ins().fsub(one, s);
            let xom = e.b.ins().fmul(v, om);
            let t = e.b.ins().fadd(one, xom);
            e.b.ins().fmul(gs, t)
        }
        Activation::Gelu => {
            // g·(1 + erf(c·x) + x·c·2/√π·e^{−(c·x)²})·0.5
            let c = e.constant(ty, Activation::GELU_C);
            let k = e.constant(ty, std::f32::consts::FRAC_2_SQRT_PI);
            let one = e.constant(ty, 1.0);
            let cx = e.b.ins().fmul(c, v);
            let er = erf(e, ty, cx);
            let sq = e.b.ins().fmul(cx, cx);
            let nsq = e.b.ins().fneg(sq);
            let ex = e.exp(ty, nsq);
            let xc = e.b.ins().fmul(v, c);
            let xck = e.b.ins().fmul(xc, k);
            let t = e.b.ins().fmul(xck, ex);
            let s = e.b.ins().fadd(one, er);
            let slope = e.b.ins().fadd(s, t);
            let gs = e.b.ins().fmul(g, slope);
            let half = e.constant(ty, 0.5);
            e.b.ins().fmul(gs, half)
        }
        Activation::HardSwish => {
            // g·(h + x·alpha) where 0 < alpha·x + beta < 1, else g·h
            let [alpha, beta] = Activation::HARD_SWISH;
            let (a, b) = (e.constant(ty, alpha), e.constant(ty, beta));
            let xa = e.b.ins().fmul(v, a);
            let z = e.b.ins().fadd(xa, b);
            let h = clip(e, ty, z, 0.0, 1.0);
            let inner = e.b.ins().fadd(h, xa);
            let (lo, hi) = (e.constant(ty, 0.0), e.constant(ty, 1.0));
            let t = e.select_lt(ty, lo, z, inner, h);
            let slope = e.select_lt(ty, z, hi, t, h);
            e.b.ins().fmul(g, slope)
        }
        Activation::Relu | Activation::LeakyRelu { .. } | Activation::Sigmoid | Activation::Tanh => {
            unreachable!("lower_train::activation_grad lowers {} itself", act.name())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LRN

/// LRN's constants over `x [N, C, …]` seen as `[N, C, S]`.
#[derive(Clone, Copy)]
struct Lrn {
    c: usize,
    s: usize,
    /// The window of channel `c` is `[c − lo, c + hi]`.
    lo: usize,
    hi: usize,
    /// `alpha/size`.
    scale: f32,
    beta: f32,
    bias: f32,
    /// `2·alpha·beta/size`.
    coef: f32,
}

impl Lrn {
    fn new(size: usize, alpha: f32, beta: f32, bias: f32, x: &[usize]) -> Lrn {
        let lo = (size - 1) / 2;
        Lrn {
            c: x[1],
            s: x[2..].iter().product(),
            lo,
            hi: size - 1 - lo,
            scale: (f64::from(alpha) / size as f64) as f32,
            beta,
            bias,
            coef: (2.0 * f64::from(alpha) * f64::from(beta) / size as f64) as f32,
        }
    }

    /// The channels `[max(0, c − below), min(C, c + above + 1))` as run-time values.
    fn range(&self, e: &mut Emitter, c: Value, below: usize, above: usize) -> (Value, Value) {
        let zero = e.iconst(0);
        let first = e.b.ins().iadd_imm_s(c, -(below as i64));
        let neg = e.b.ins().icmp(IntCC::SignedLessThan, first, zero);
        let first = e.b.ins().select(neg, zero, first);
        let cn = e.iconst(self.c as i64);
        let end = e.b.ins().iadd_imm_s(c, above as i64 + 1);
        let past = e.b.ins().icmp(IntCC::SignedGreaterThan, end, cn);
        let end = e.b.ins().select(past, cn, end);
        (first, end)
    }

    /// The base `bias + alpha/size·Σ_{c' ∈ W(c)} x[plane0 + c'·S + p]²` (lanes `p..p+4` for
    /// a vector `ty`) of the input `x = (arena, byte offset)`.
    fn base(&self, e: &mut Emitter, ty: Type, x: (Value, usize), plane0: Value, c: Value, p: Value) -> Value {
        let (first, end) = self.range(e, c, self.lo, self.hi);
        let zero = e.constant(ty, 0.0);
        let acc = e.var(ty, zero);
        let s = self.s as i64;
        e.for_range(first, end, 1, |e, k| {
            let i = e.b.ins().imul_imm_s(k, s);
            let i = e.b.ins().iadd(i, plane0);
            let i = e.b.ins().iadd(i, p);
            let addr = e.elem(x.0, x.1, i);
            let v = e.load(ty, addr);
            let sum = e.b.use_var(acc);
            let sum = e.b.ins().fma(v, v, sum);
            e.b.def_var(acc, sum);
        });
        let sum = e.b.use_var(acc);
        let (sc, b) = (e.constant(ty, self.scale), e.constant(ty, self.bias));
        e.b.ins().fma(sum, sc, b)
    }
}

/// `body(ty, p)` over the positions `p` of a plane of `s` elements: by fours, then one by one.
fn over_plane(e: &mut Emitter, s: usize, mut body: impl FnMut(&mut Emitter, Type, Value)) {
    let vlen = (s / 4 * 4) as i64;
    for (lo, hi, step, ty) in [(0, vlen, 4, F32X4), (vlen, s as i64, 1, F32)] {
        let (l, h) = (e.iconst(lo), e.iconst(hi));
        e.for_range(l, h, step, |e, p| body(e, ty, p));
    }
}

/// The plane `(n, c)` of parallel index `idx`: `c` and the offset of `x[n, 0, 0]`.
fn plane(e: &mut Emitter, l: &Lrn, idx: Value) -> (Value, Value) {
    let n = e.b.ins().udiv_imm_s(idx, l.c as i64);
    let c = e.b.ins().urem_imm_s(idx, l.c as i64);
    let plane0 = e.b.ins().imul_imm_s(n, (l.c * l.s) as i64);
    (c, plane0)
}

/// One plane `(n, c)` per parallel index: `y = x · base^{−beta}`, vectorized along the plane.
fn lrn(e: &mut Emitter, a: &Args, l: Lrn) {
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let (c, plane0) = plane(e, &l, idx);
        let row = e.b.ins().imul_imm_s(idx, l.s as i64);
        over_plane(e, l.s, |e, ty, p| {
            let s = l.base(e, ty, (arena, xo), plane0, c, p);
            let f = pow(e, ty, s, -l.beta);
            let i = e.b.ins().iadd(row, p);
            let xa = e.elem(arena, xo, i);
            let x = e.load(ty, xa);
            let y = e.b.ins().fmul(x, f);
            let ya = e.elem(arena, yo, i);
            e.store(y, ya);
        });
    });
}

/// One plane `(n, k)` per parallel index:
/// `dx_k = dy_k·s_k^{−beta} − coef·x_k·Σ_{c : k ∈ W(c)} dy_c·x_c·s_c^{−beta−1}`, each `s_c`
/// recomputed from its window (no scratch; `min(size, C)²` loads per element).
/// The kernel of `LrnGrad` (same attributes as `Lrn`); returns its parallel extent.
pub fn lrn_grad_kernel(e: &mut Emitter, a: &Args, size: usize, alpha: f32, beta: f32, bias: f32) -> usize {
    lrn_grad(e, a, Lrn::new(size, alpha, beta, bias, a.dims(0)));
    a.odims()[0] * a.odims()[1]
}

fn lrn_grad(e: &mut Emitter, a: &Args, l: Lrn) {
    let (arena, xo, go, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let (k, plane0) = plane(e, &l, idx);
        let row = e.b.ins().imul_imm_s(idx, l.s as i64);
        over_plane(e, l.s, |e, ty, p| {
            let (first, end) = l.range(e, k, l.hi, l.lo);
            let zero = e.constant(ty, 0.0);
            let acc = e.var(ty, zero);
            e.for_range(first, end, 1, |e, c| {
                let s = l.base(e, ty, (arena, xo), plane0, c, p);
                let f = pow(e, ty, s, -l.beta - 1.0);
                let i = e.b.ins().imul_imm_s(c, l.s as i64);
                let i = e.b.ins().iadd(i, plane0);
                let i = e.b.ins().iadd(i, p);
                let (xa, ga) = (e.elem(arena, xo, i), e.elem(arena, go, i));
                let (x, g) = (e.load(ty, xa), e.load(ty, ga));
                let t = e.b.ins().fmul(g, x);
                let sum = e.b.use_var(acc);
                let sum = e.b.ins().fma(t, f, sum);
                e.b.def_var(acc, sum);
            });
            let s = l.base(e, ty, (arena, xo), plane0, k, p);
            let f = pow(e, ty, s, -l.beta);
            let i = e.b.ins().iadd(row, p);
            let (xa, ga) = (e.elem(arena, xo, i), e.elem(arena, go, i));
            let (x, g) = (e.load(ty, xa), e.load(ty, ga));
            let direct = e.b.ins().fmul(g, f);
            let coef = e.constant(ty, l.coef);
            let cx = e.b.ins().fmul(coef, x);
            let sum = e.b.use_var(acc);
            let cross = e.b.ins().fmul(cx, sum);
            let dx = e.b.ins().fsub(direct, cross);
            let da = e.elem(arena, dst, i);
            e.store(dx, da);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// reduce_mean and broadcast_to

/// One output element per parallel index: the sum over the reduced axes by a loop nest (one
/// loop per run of adjacent reduced axes, merged; a contiguous innermost run by fours), divided
/// by the number of elements.
fn reduce_mean(e: &mut Emitter, a: &Args, axes: &[usize]) {
    let xd = a.dims(0).to_vec();
    let strides = kiln_ir::Shape::new(&xd).strides();
    // the output index's coordinates over the kept axes, and their strides in x
    let kept: Vec<usize> = (0..xd.len()).filter(|i| !axes.contains(i)).collect();
    let kept_dims: Vec<usize> = kept.iter().map(|&i| xd[i]).collect();
    // runs of adjacent reduced axes: (extent, stride of the run's last axis)
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (j, &ax) in axes.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if j > 0 && axes[j - 1] + 1 == ax => {
                r.0 *= xd[ax];
                r.1 = strides[ax];
            }
            _ => runs.push((xd[ax], strides[ax])),
        }
    }
    let count: usize = axes.iter().map(|&ax| xd[ax]).product();
    let inv = (1.0 / count as f64) as f32;
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, o| {
        let coords = split(e, o, &kept_dims);
        let mut base = e.iconst(0);
        for (c, &ax) in coords.iter().zip(&kept) {
            let t = e.b.ins().imul_imm_s(*c, strides[ax] as i64);
            base = e.b.ins().iadd(base, t);
        }
        let zero = e.fconst(0.0);
        let acc = e.var(F32, zero);
        sum_runs(e, arena, xo, base, &runs, acc);
        let sum = e.b.use_var(acc);
        let invc = e.fconst(inv);
        let mean = e.b.ins().fmul(sum, invc);
        let ya = e.elem(arena, yo, o);
        e.store(mean, ya);
    });
}

/// Adds `x[base + Σ i_r·stride_r]` over every index of `runs` into the scalar `acc`.
fn sum_runs(
    e: &mut Emitter,
    arena: Value,
    xo: usize,
    base: Value,
    runs: &[(usize, usize)],
    acc: cranelift_frontend::Variable,
) {
    if let [(n0, s0), rest @ ..] = runs
        && !rest.is_empty()
    {
        // the outer runs as loops, the innermost run last (row-major order)
        e.for_const(0, *n0 as i64, |e, i| {
            let off = e.b.ins().imul_imm_s(i, *s0 as i64);
            let b = e.b.ins().iadd(base, off);
            sum_runs(e, arena, xo, b, rest, acc);
        });
        return;
    }
    let (n, stride) = runs[0];
    let add = |e: &mut Emitter, v: Value| {
        let s = e.b.use_var(acc);
        let s = e.b.ins().fadd(s, v);
        e.b.def_var(acc, s);
    };
    if stride != 1 {
        e.for_const(0, n as i64, |e, i| {
            let j = e.b.ins().imul_imm_s(i, stride as i64);
            let j = e.b.ins().iadd(base, j);
            let p = e.elem(arena, xo, j);
            let v = e.load(F32, p);
            add(e, v);
        });
        return;
    }
    // contiguous: by fours into a vector, then the tail
    let zero = e.vconst(0.0);
    let vacc = e.var(F32X4, zero);
    let vlen = (n / 4 * 4) as i64;
    let (l, h) = (e.iconst(0), e.iconst(vlen));
    e.for_range(l, h, 4, |e, i| {
        let j = e.b.ins().iadd(base, i);
        let p = e.elem(arena, xo, j);
        let v = e.load(F32X4, p);
        let s = e.b.use_var(vacc);
        let s = e.b.ins().fadd(s, v);
        e.b.def_var(vacc, s);
    });
    let v = e.b.use_var(vacc);
    let l: Vec<Value> = (0..4u8).map(|k| e.b.ins().extractlane(v, k)).collect();
    let s0 = e.b.ins().fadd(l[0], l[1]);
    let s1 = e.b.ins().fadd(l[2], l[3]);
    let part = e.b.ins().fadd(s0, s1);
    add(e, part);
    e.for_const(vlen, n as i64, |e, i| {
        let j = e.b.ins().iadd(base, i);
        let p = e.elem(arena, xo, j);
        let v = e.load(F32, p);
        add(e, v);
    });
}

/// One output element per parallel index, read from the input element broadcasting maps it
/// from.
pub fn broadcast_to(e: &mut Emitter, a: &Args) {
    let od = a.odims().to_vec();
    let sx = broadcast_strides(a.dims(0), od.len());
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, i| {
        let c = split(e, i, &od);
        let mut xi = e.iconst(0);
        for (k, ci) in c.iter().enumerate() {
            if sx[k] != 0 {
                let t = e.b.ins().imul_imm_s(*ci, sx[k] as i64);
                xi = e.b.ins().iadd(xi, t);
            }
        }
        let p = e.elem(arena, xo, xi);
        let v = e.load(F32, p);
        let q = e.elem(arena, yo, i);
        e.store(v, q);
    });
}

// ---------------------------------------------------------------------------------------------
// broadcasting binary ops by rows

/// How a broadcasting binary op walks its output by rows: the innermost `len` elements of
/// every row (the last axis, merged with the axes before it while each operand either runs
/// on contiguously or repeats one element) read each operand contiguously (`step` 1) or as one
/// repeated element (`step` 0).
struct Rows {
    /// The output's axes outside the rows.
    outer: Vec<usize>,
    /// Each operand's strides along those axes (0 for a broadcast axis).
    strides: [Vec<usize>; 2],
    len: usize,
    step: [usize; 2],
}

impl Rows {
    /// The row walk of a binary op whose operands differ in shape (a broadcast), or `None`
    /// when the op's general per-element walk is as good (operands of the output's shape, or
    /// rows shorter than a vector).
    fn of(a: &Args) -> Option<Rows> {
        let od = a.odims();
        let r = od.len();
        if r == 0 || (a.dims(0) == od && a.dims(1) == od) {
            return None;
        }
        let s = [broadcast_strides(a.dims(0), r), broadcast_strides(a.dims(1), r)];
        let step = [s[0][r - 1].min(1), s[1][r - 1].min(1)];
        let mut len = od[r - 1];
        let mut first = r - 1;
        // an axis of size 1 merges whatever its strides; otherwise each operand must go on
        // contiguously (stride = the run so far) or repeat (stride 0, as inside the run)
        while first > 0 {
            let i = first - 1;
            let fits = (0..2).all(|k| od[i] == 1 || s[k][i] == len * step[k]);
            if !fits {
                break;
            }
            len *= od[i];
            first = i;
        }
        (len >= 4).then(|| Rows {
            outer: od[..first].to_vec(),
            strides: [s[0][..first].to_vec(), s[1][..first].to_vec()],
            len,
            step,
        })
    }
}

/// Whether a broadcasting binary op is lowered by rows here (`lower::emit` asks).
pub(crate) fn binary_by_rows(a: &Args) -> bool {
    Rows::of(a).is_some()
}

/// A broadcasting binary op, one row per parallel index: the row's operand offsets from its
/// outer coordinates, then the row by fours (a repeated operand splatted) and its tail.
/// Returns the number of rows.
pub(crate) fn binary_rows(
    e: &mut Emitter,
    a: &Args,
    apply: &dyn Fn(&mut Emitter, Value, Value) -> Value,
) -> usize {
    let rows = Rows::of(a).expect("lower::emit checks binary_by_rows first");
    let (arena, srcs, zo) = (a.arena, [a.src(0), a.src(1)], a.dst());
    let len = rows.len;
    e.for_range(a.begin, a.end, 1, |e, row| {
        let c = split(e, row, &rows.outer);
        let mut base = [e.iconst(0), e.iconst(0)];
        for (k, b) in base.iter_mut().enumerate() {
            for (ci, &st) in c.iter().zip(&rows.strides[k]) {
                if st != 0 {
                    let t = e.b.ins().imul_imm_s(*ci, st as i64);
                    *b = e.b.ins().iadd(*b, t);
                }
            }
        }
        let out = e.b.ins().imul_imm_s(row, len as i64);
        // a repeated operand's one element, loaded once per row
        let splat: Vec<Option<Value>> = (0..2)
            .map(|k| {
                (rows.step[k] == 0).then(|| {
                    let p = e.elem(arena, srcs[k], base[k]);
                    e.load(F32, p)
                })
            })
            .collect();
        let vlen = (len / 4 * 4) as i64;
        for (lo, hi, step, ty) in [(0, vlen, 4, F32X4), (vlen, len as i64, 1, F32)] {
            let (l, h) = (e.iconst(lo), e.iconst(hi));
            e.for_range(l, h, step, |e, j| {
                let v: Vec<Value> = (0..2)
                    .map(|k| match splat[k] {
                        Some(s) if ty == F32X4 => e.b.ins().splat(F32X4, s),
                        Some(s) => s,
                        None => {
                            let i = e.b.ins().iadd(base[k], j);
                            let p = e.elem(arena, srcs[k], i);
                            e.load(ty, p)
                        }
                    })
                    .collect();
                let z = apply(e, v[0], v[1]);
                let i = e.b.ins().iadd(out, j);
                let q = e.elem(arena, zo, i);
                e.store(z, q);
            });
        }
    });
    rows.outer.iter().product()
}
