//! Elementwise lowerings: unary maps and activations, broadcasting binary ops, batch
//! normalization (inference), and the epilogue that fuses an activation into a producer. On
//! the AVX-512 and AVX2 tiers, activation nodes and the binary ops whose operands read in
//! rows (same-shape, per-channel, per-image) call the Rust kernels of `elementwise_kernels`
//! instead.

use super::{Args, load_f, split, store_f, vector_split};
use crate::codegen::Emitter;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::{Activation, BinaryOp};

type UnaryFn<'f> = &'f dyn Fn(&mut Emitter, Type, Value) -> Value;

pub(super) fn map_unary(e: &mut Emitter, a: &Args, f: UnaryFn) {
    let (src, dst, arena) = (a.src(0), a.dst(), a.arena);
    let vend = vector_split(e, a.begin, a.end);
    for (lo, hi, step, ty) in [(a.begin, vend, 4, F32X4), (vend, a.end, 1, F32)] {
        e.for_range(lo, hi, step, |e, i| {
            let p = e.elem(arena, src, i);
            let x = e.load(ty, p);
            let y = f(e, ty, x);
            let q = e.elem(arena, dst, i);
            e.store(y, q);
        });
    }
}

/// An activation node's kernel: on the AVX-512 and AVX2 tiers a call into
/// `elementwise_kernels` (the tier's registers, the same arithmetic), on the Cranelift tier
/// [`activation`] mapped over `f32x4`. The parallel range is the elements either way.
pub(super) fn activation_kernel(e: &mut Emitter, a: &Args, act: Activation) {
    if let Some(f) = crate::elementwise_kernels::entry(a.tier.isa()) {
        let len = a.out.1.shape.numel();
        let d = crate::elementwise_kernels::UnaryDesc::new(a.src(0), a.dst(), len, act);
        super::direct::call_direct(e, a, f as usize, &d);
        return;
    }
    map_unary(e, a, &move |e, ty, x| activation(e, ty, x, act));
}

/// `1/(1 + e^{−x})` (sigmoid, and SiLU's factor and its backward's): `e^{−x}` clamped, but
/// `+∞` where it overflows; where it underflows, `1 + e^{−87}` is 1 as `1 + 0` is.
pub(crate) fn sigmoid(e: &mut Emitter, ty: Type, x: Value) -> Value {
    let nx = e.b.ins().fneg(x);
    let ex = e.exp_clamped(ty, nx);
    let ex = e.exp_overflow(ty, nx, ex);
    let one = e.constant(ty, 1.0);
    let d = e.b.ins().fadd(one, ex);
    e.b.ins().fdiv(one, d)
}

pub(super) fn activation(e: &mut Emitter, ty: Type, x: Value, act: Activation) -> Value {
    match act {
        Activation::Relu => e.relu(ty, x),
        Activation::LeakyRelu { alpha } => {
            let al = e.constant(ty, alpha);
            let zero = e.constant(ty, 0.0);
            let neg = e.b.ins().fmul(x, al);
            e.select_lt(ty, x, zero, neg, x)
        }
        Activation::Sigmoid => sigmoid(e, ty, x),
        Activation::Tanh => {
            // tanh x = 1 − 2/(e^{2x} + 1), which cancels near 0 (a relative error of 1e-3 at
            // x = 1e-4, and x/tanh(x) then differs from the interpreter's); below |x| = 1/8 the
            // odd Taylor polynomial to x⁷ (truncation below 2e-9 relative) instead
            let two = e.constant(ty, 2.0);
            let one = e.constant(ty, 1.0);
            let x2 = e.b.ins().fmul(x, two);
            // clamped: 2/(e^{88} + 1) rounds 1 − q to 1 as 2/∞ does
            let ex = e.exp_clamped(ty, x2);
            let d = e.b.ins().fadd(ex, one);
            let q = e.b.ins().fdiv(two, d);
            let big = e.b.ins().fsub(one, q);
            let xx = e.b.ins().fmul(x, x);
            let mut p = e.constant(ty, -17.0 / 315.0);
            for c in [2.0 / 15.0, -1.0 / 3.0, 1.0] {
                let cc = e.constant(ty, c);
                p = e.b.ins().fma(p, xx, cc);
            }
            let small = e.b.ins().fmul(x, p);
            let ax = e.b.ins().fabs(x);
            let limit = e.constant(ty, 0.125);
            e.select_lt(ty, ax, limit, small, big)
        }
        // `x · sigmoid(x)`, the product of the graph the `silu` pass rewrites
        Activation::Silu => {
            let s = sigmoid(e, ty, x);
            e.b.ins().fmul(x, s)
        }
        Activation::Clip { .. }
        | Activation::HardSigmoid { .. }
        | Activation::Erf
        | Activation::Gelu
        | Activation::HardSwish => crate::lower_reduce::activation(e, ty, x, act),
    }
}

/// `ln(x)` for scalar `x > 0`: `x = 2ᵏ·m` with `m ∈ [√½, √2)`, `ln m = 2·atanh((m−1)/(m+1))`.
pub(super) fn ln(e: &mut Emitter, x: Value) -> Value {
    let bits = e.b.ins().bitcast(I32, crate::codegen::lanes(), x);
    // Shift the mantissa range to [√½, √2) by biasing with the bits of √½ (0x3f3504f3).
    let off = e.b.ins().iadd_imm_s(bits, -0x3f35_04f3);
    let k = e.b.ins().sshr_imm_s(off, 23);
    let kbits = e.b.ins().ishl_imm_s(k, 23);
    let mbits = e.b.ins().isub(bits, kbits);
    let m = e.b.ins().bitcast(F32, crate::codegen::lanes(), mbits);
    let one = e.fconst(1.0);
    let num = e.b.ins().fsub(m, one);
    let den = e.b.ins().fadd(m, one);
    let z = e.b.ins().fdiv(num, den);
    let z2 = e.b.ins().fmul(z, z);
    let mut p = e.fconst(1.0 / 11.0);
    for c in [1.0 / 9.0, 1.0 / 7.0, 1.0 / 5.0, 1.0 / 3.0, 1.0] {
        let cc = e.fconst(c);
        p = e.b.ins().fma(p, z2, cc);
    }
    let two = e.fconst(2.0);
    let zp = e.b.ins().fmul(z, p);
    let lnm = e.b.ins().fmul(zp, two);
    let kf = e.b.ins().fcvt_from_sint(F32, k);
    let ln2 = e.fconst(std::f32::consts::LN_2);
    let r = e.b.ins().fma(kf, ln2, lnm);
    // ln(NaN) = NaN; ln(+∞) = +∞ (the bit trick would give finite numbers)
    let nan = e.b.ins().fcmp(FloatCC::Unordered, x, x);
    let r = e.b.ins().select(nan, x, r);
    let inf = e.fconst(f32::INFINITY);
    let is_inf = e.b.ins().fcmp(FloatCC::Equal, x, inf);
    e.b.ins().select(is_inf, x, r)
}

/// A convolution's fused activation applied to `v` (`F32` or `F32X4`) before it is stored.
pub(super) fn epilogue(e: &mut Emitter, ty: Type, v: Value, act: Option<Activation>) -> Value {
    match act {
        Some(a) => activation(e, ty, v, a),
        None => v,
    }
}

/// Row-major strides of `dims`, aligned to the output's rank with 0 for broadcast axes.
pub(crate) fn broadcast_strides(dims: &[usize], rank: usize) -> Vec<usize> {
    let mut s = vec![0; rank];
    let mut acc = 1;
    for i in (0..dims.len()).rev() {
        let o = rank - dims.len() + i;
        s[o] = if dims[i] == 1 { 0 } else { acc };
        acc *= dims[i];
    }
    s
}

/// `op(x, y)` on `F32` or `F32X4` values.
pub(crate) fn apply_binary(e: &mut Emitter, op: BinaryOp, x: Value, y: Value) -> Value {
    match op {
        BinaryOp::Add => e.b.ins().fadd(x, y),
        BinaryOp::Sub => e.b.ins().fsub(x, y),
        BinaryOp::Mul => e.b.ins().fmul(x, y),
        BinaryOp::Div => e.b.ins().fdiv(x, y),
    }
}

/// A binary op. On the AVX-512 and AVX2 tiers it goes to the kernel of
/// `elementwise_kernels` (the same IEEE operation: the same bits) when each operand is read
/// in rows as `BinaryDesc` describes: same-shape operands, and the broadcasts of real
/// networks (a per-channel scale or bias).
pub(super) fn binary(e: &mut Emitter, a: &Args, op: BinaryOp) {
    use crate::elementwise_kernels::{BinaryDesc, binary_entry};
    let apply = move |e: &mut Emitter, x: Value, y: Value| apply_binary(e, op, x, y);
    let od = a.odims().to_vec();
    let (arena, xo, yo, zo) = (a.arena, a.src(0), a.src(1), a.dst());
    if let Some(f) = binary_entry(a.tier.isa())
        && let Some(d) = BinaryDesc::broadcast((xo, yo, zo), &od, a.dims(0), a.dims(1), op)
    {
        super::direct::call_direct(e, a, f as usize, &d);
        return;
    }
    if a.dims(0) == od.as_slice() && a.dims(1) == od.as_slice() {
        let vend = vector_split(e, a.begin, a.end);
        for (lo, hi, step, ty) in [(a.begin, vend, 4, F32X4), (vend, a.end, 1, F32)] {
            e.for_range(lo, hi, step, |e, i| {
                let p = e.elem(arena, xo, i);
                let x = e.load(ty, p);
                let q = e.elem(arena, yo, i);
                let y = e.load(ty, q);
                let z = apply(e, x, y);
                let r = e.elem(arena, zo, i);
                e.store(z, r);
            });
        }
        return;
    }
    let sx = broadcast_strides(a.dims(0), od.len());
    let sy = broadcast_strides(a.dims(1), od.len());
    e.for_range(a.begin, a.end, 1, |e, i| {
        let c = split(e, i, &od);
        let mut xi = e.iconst(0);
        let mut yi = e.iconst(0);
        for (k, ci) in c.iter().enumerate() {
            let t = e.b.ins().imul_imm_s(*ci, sx[k] as i64);
            xi = e.b.ins().iadd(xi, t);
            let t = e.b.ins().imul_imm_s(*ci, sy[k] as i64);
            yi = e.b.ins().iadd(yi, t);
        }
        let x = load_f(e, arena, xo, xi);
        let y = load_f(e, arena, yo, yi);
        let z = apply(e, x, y);
        store_f(e, arena, zo, i, z);
    });
}

pub(super) fn batch_norm(e: &mut Emitter, a: &Args, eps: f32, act: Option<Activation>) {
    let d = a.dims(0);
    let ch = d[1];
    let plane: usize = d[2..].iter().product();
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    let [so, bo, mo, vo] = [a.src(1), a.src(2), a.src(3), a.src(4)];
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let c = e.b.ins().urem_imm_s(idx, ch as i64);
        let scale = load_f(e, arena, so, c);
        let bias = load_f(e, arena, bo, c);
        let mean = load_f(e, arena, mo, c);
        let var = load_f(e, arena, vo, c);
        let epsv = e.fconst(eps);
        let t = e.b.ins().fadd(var, epsv);
        let t = e.b.ins().sqrt(t);
        let k = e.b.ins().fdiv(scale, t);
        let km = e.b.ins().fmul(k, mean);
        let shift = e.b.ins().fsub(bias, km);
        let base = e.b.ins().imul_imm_s(idx, plane as i64);
        let vlen = (plane / 4 * 4) as i64;
        for (lo, hi, step, ty) in [(0, vlen, 4, F32X4), (vlen, plane as i64, 1, F32)] {
            let (kk, ss) = if ty == F32X4 {
                (e.b.ins().splat(F32X4, k), e.b.ins().splat(F32X4, shift))
            } else {
                (k, shift)
            };
            let (l, h) = (e.iconst(lo), e.iconst(hi));
            e.for_range(l, h, step, |e, j| {
                let i = e.b.ins().iadd(base, j);
                let p = e.elem(arena, xo, i);
                let x = e.load(ty, p);
                let y = e.b.ins().fma(x, kk, ss);
                let y = epilogue(e, ty, y, act);
                let q = e.elem(arena, yo, i);
                e.store(y, q);
            });
        }
    });
}
