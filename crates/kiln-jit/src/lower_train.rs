//! Lowering of the training ops (the backward graph of `kiln-autodiff` and the optimizers'
//! updates), kept apart from the forward lowerings of `lower.rs`. Every training op has a
//! kernel here; `emit` writes it and returns its parallel extent, like `lower::emit`. The
//! forward ops `Slice` and `Scale` (which autodiff also emits) keep their kernels here too
//! ([`slice()`], [`scale()`]); `lower::emit` calls them.
//!
//! A convolution's weight gradient runs on the packed GEMM driver (`gemm_train`: one GEMM per
//! group, the batch summed in its K loop); the loops of `conv_weight_grad` remain for a node
//! without a status word. The other kernels are plain loop nests, written for correctness
//! first (the JIT-vs-interpreter tests compare them): gathers parallel over output elements
//! (max-pool ids over planes, as the forward pooling), and scatters
//! (max-pool and pooling backward) parallel over planes so that each thread owns what it
//! writes. An index read from memory (max-pool ids, class ids) is range-checked before use; a
//! scatter whose id is outside the plane records it in its status word, and the run fails as
//! the interpreter's does. Code size never grows with a shape or attribute: tap loops are
//! unrolled only for small kernels (`UNROLL_GRAD_TAPS`).

use crate::codegen::{Emitter, mem};
use crate::direct::Words;
use crate::gemm_train::WgradDesc;
use crate::lower::{
    Args, adaptive_bounds, dims4, dot, for_each_tap, if_else, in_range, load_f, max_and_sum_exp, real_taps,
    report_bad_index, split, store_f, window_taps,
};
use crate::train_kernels::{self as tk, IdsDesc, ScatterDesc, SumDesc};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32, I64};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, StackSlotData, StackSlotKind, Type, Value};
use cranelift_frontend::Variable;
use kiln_ir::shape::normalize_axis;
use kiln_ir::{Activation, BnPart, Conv2d, DType, LossKind, Op, Pool2d, PoolKind, TrainOp, Update};

/// Whether the training op has a lowering here (all of them do).
pub fn supported(op: &Op) -> bool {
    op.is_training()
}

/// Writes the kernel of a training op and returns its parallel extent.
pub fn emit(e: &mut Emitter, op: &TrainOp, a: &Args) -> usize {
    let numel = a.out.1.shape.numel();
    let od = a.out.1.dims().to_vec();
    let planes = || od[0] * od[1];
    match op {
        TrainOp::Rot180 { .. } if rust_kernels(a).is_some() => {
            let [c_out, cg, kh, kw] = dims4(a.dims(0));
            let [rows, cog, _, _] = dims4(a.odims());
            let d = tk::Rot180Desc {
                w: a.src(0) as u64,
                y: a.dst() as u64,
                groups: (c_out / cog.max(1)) as u64,
                cg: cg as u64,
                cog: cog as u64,
                taps: (kh * kw) as u64,
            };
            let f: tk::Entry<tk::Rot180Desc> = tk::rot180;
            call_rust(e, a, f as usize, &d);
            rows
        }
        TrainOp::Rot180 { .. } => {
            rot180(e, a);
            numel
        }
        TrainOp::DilatePad { stride, padding } => {
            dilate_pad(e, a, *stride, *padding);
            planes()
        }
        TrainOp::ConvWeightGrad { conv, .. } if let Some(d) = direct_wgrad_desc(a, conv) => {
            let k = rust_kernels(a).expect("direct_wgrad_desc found the kernels");
            call_rust(e, a, k.wgrad as usize, &d);
            d.items() as usize
        }
        TrainOp::ConvWeightGrad { conv, .. } => match wgrad_desc(a, conv) {
            Some(d) => {
                call_wgrad_driver(e, a, &d);
                d.items()
            }
            None => {
                conv_weight_grad(e, a, conv);
                od[0] * od[1]
            }
        },
        TrainOp::MaxPoolIds(p) if let Some(k) = rust_kernels(a) => {
            let geom = crate::lower::validated(p.geometry(a.dims(0)));
            let d = IdsDesc {
                x: a.src(0) as u64,
                ids: a.dst() as u64,
                planes: planes() as u64,
                win: crate::direct::WindowDesc::new(&geom),
            };
            call_rust(e, a, k.max_pool_ids as usize, &d);
            planes()
        }
        TrainOp::MaxPoolIds(p) => {
            max_pool_ids(e, a, p);
            planes()
        }
        TrainOp::AdaptiveMaxPoolIds { output } => {
            adaptive_max_ids(e, a, *output);
            numel
        }
        TrainOp::ScatterIds { .. } if let Some(k) = rust_kernels(a) => {
            let [_, _, oh, ow] = dims4(a.dims(0));
            let [_, _, h, w] = dims4(a.odims());
            let d = ScatterDesc {
                dy: a.src(0) as u64,
                ids: a.src(1) as u64,
                dx: a.dst() as u64,
                status: a
                    .status
                    .expect("the plan gives every scatter_ids2d a status word")
                    as u64,
                planes: planes() as u64,
                len: (oh * ow) as u64,
                plane: (h * w) as u64,
            };
            call_rust(e, a, k.scatter_ids as usize, &d);
            planes()
        }
        TrainOp::ScatterIds { .. } => {
            scatter_ids(e, a);
            planes()
        }
        TrainOp::Pool2dGrad { pool, .. } => {
            pool2d_grad(e, a, pool);
            planes()
        }
        TrainOp::AdaptiveAvgPoolGrad { .. } => {
            adaptive_avg_grad(e, a);
            planes()
        }
        TrainOp::ActivationGrad(act) => {
            activation_grad(e, a, *act);
            numel
        }
        TrainOp::SoftmaxGrad { axis } | TrainOp::LogSoftmaxGrad { axis } => {
            let ax = normalize_axis(*axis, od.len(), false).unwrap_or(0);
            softmax_grad(e, a, ax, matches!(op, TrainOp::LogSoftmaxGrad { .. }));
            numel / od[ax].max(1)
        }
        TrainOp::ReduceSumTo { .. }
            if let Some(k) = rust_kernels(a)
                && let Some(d) = sum_desc(a) =>
        {
            call_rust(e, a, k.sum as usize, &d);
            numel
        }
        TrainOp::ReduceSumTo { .. } => {
            reduce_sum_to(e, a);
            numel
        }
        TrainOp::BroadcastTo { .. } => {
            crate::lower_reduce::broadcast_to(e, a);
            numel
        }
        TrainOp::LrnGrad {
            size,
            alpha,
            beta,
            bias,
        } => crate::lower_reduce::lrn_grad_kernel(e, a, *size, *alpha, *beta, *bias),
        TrainOp::LossGrad(kind) => {
            loss_grad(e, a, *kind);
            if *kind == LossKind::Mse { numel } else { od[0] }
        }
        TrainOp::Update(u) => {
            update(e, a, *u);
            numel
        }
        TrainOp::DropoutTrain { ratio, seed } => {
            dropout_train(e, a, *ratio, *seed);
            numel
        }
        TrainOp::BatchNormTrain { part, epsilon } if let Some(k) = rust_kernels(a) => {
            let d = a.dims(0);
            let src = |i: usize| a.ins.get(i).map_or(0, |s| s.0.offset as u64);
            let desc = tk::BnDesc {
                x: a.src(0) as u64,
                a: src(1),
                b: src(2),
                y: a.dst() as u64,
                n: d[0] as u64,
                c: d[1] as u64,
                inner: d[2..].iter().product::<usize>() as u64,
                part: match part {
                    BnPart::Forward => tk::BN_FORWARD,
                    BnPart::GradX => tk::BN_GRAD_X,
                    BnPart::GradScale => tk::BN_GRAD_SCALE,
                    BnPart::Mean => tk::BN_MEAN,
                    BnPart::Var => tk::BN_VAR,
                },
                eps: u64::from(epsilon.to_bits()),
            };
            call_rust(e, a, k.batch_norm as usize, &desc);
            d[1]
        }
        TrainOp::BatchNormTrain { part, epsilon } => {
            batch_norm_train(e, a, *part, *epsilon);
            a.dims(0)[1]
        }
    }
}

/// The Rust kernels of the tier `a` runs on this host; `None`: the Cranelift tier.
fn rust_kernels(a: &Args) -> Option<tk::Kernels> {
    tk::kernels(a.tier.isa())
}

/// The kernel calls the Rust function `f(desc, arena, begin, end)` with `desc` stored in a
/// stack slot of the kernel (its words are compile-time constants).
fn call_rust<D: Words>(e: &mut Emitter, a: &Args, f: usize, desc: &D) {
    let words = desc.words();
    let slot = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (words.len() * 8) as u32,
        3,
    ));
    for (i, &w) in words.iter().enumerate() {
        let v = e.iconst(w as i64);
        e.b.ins().stack_store(I64, v, slot, (i * 8) as i32);
    }
    let p = e.b.ins().stack_addr(I64, slot, 0);
    let mut sig = Signature::new(e.b.func.signature.call_conv);
    sig.params.extend([AbiParam::new(I64); 4]);
    let sig = e.b.import_signature(sig);
    let f = e.iconst(f as i64);
    e.b.ins().call_indirect(sig, f, &[p, a.arena, a.begin, a.end]);
}

/// `reduce_sum_to`'s description when it sums every axis but at most one (`[A, C, B] → [C]`:
/// a convolution's or dense layer's bias gradient), else `None` (the loops run it).
fn sum_desc(a: &Args) -> Option<SumDesc> {
    let xd = a.dims(0);
    let sd = a.odims();
    let mut aligned = vec![1usize; xd.len().checked_sub(sd.len())?];
    aligned.extend(sd);
    let kept: Vec<usize> = (0..xd.len()).filter(|&k| aligned[k] > 1).collect();
    let (outer, c, inner) = match kept[..] {
        [] => (1, 1, xd.iter().product::<usize>()),
        [k] => (
            xd[..k].iter().product::<usize>(),
            xd[k],
            xd[k + 1..].iter().product::<usize>(),
        ),
        _ => return None,
    };
    Some(SumDesc {
        x: a.src(0) as u64,
        y: a.dst() as u64,
        outer: outer as u64,
        c: c as u64,
        inner: inner as u64,
    })
}

/// The most `dw` elements per group (output × input channels) a weight gradient takes the
/// direct Rust kernel with rather than the GEMM driver (when its columns have stride 1).
const DIRECT_WGRAD_PAIRS: usize = 128;

/// The direct weight-gradient kernel's description (`train_kernels`), on the Rust tiers:
/// along the kernel's column taps for a kernel wider than the delta (column dilation 1: the
/// data gradient `kiln-autodiff` writes as a weight gradient), else along the delta's columns
/// for a convolution with stride 1 along the columns and a small product (fewer than
/// `WGRAD_MIN_ROWS` output channels per group, or at most `DIRECT_WGRAD_PAIRS` channel pairs).
fn direct_wgrad_desc(a: &Args, conv: &Conv2d) -> Option<tk::WgradDesc> {
    let status = a.status?;
    let k = rust_kernels(a)?;
    let [n, c_in, h, w] = dims4(a.dims(0));
    let [_, c_out, oh, ow] = dims4(a.dims(1));
    let [_, cg, kh, kw] = dims4(a.odims());
    let og = c_out / conv.groups;
    let mode = if conv.dilation[1] == 1 && kw > ow {
        tk::WGRAD_ALONG_TAPS
    } else if conv.stride[1] == 1 && (og < WGRAD_MIN_ROWS || og * cg <= DIRECT_WGRAD_PAIRS) {
        tk::WGRAD_ALONG_X
    } else {
        return None;
    };
    let geom = crate::lower::validated(conv.geometry(a.dims(0), [kh, kw]));
    let u = |v: usize| v as u64;
    Some(tk::WgradDesc {
        x: u(a.src(0)),
        dy: u(a.src(1)),
        dw: u(a.dst()),
        status: u(status),
        batch: u(n),
        groups: u(conv.groups),
        c_in: u(c_in),
        h: u(h),
        w: u(w),
        c_out: u(c_out),
        oh: u(oh),
        ow: u(ow),
        kh: u(kh),
        kw: u(kw),
        stride: conv.stride.map(u),
        dilation: conv.dilation.map(u),
        pad: [u(geom.pad_begin(0)), u(geom.pad_begin(1))],
        mo: u(k.wgrad_mo),
        mode,
    })
}

/// `y = factor·x` (the forward op `Scale`, lowered here beside the elementwise helper it uses).
pub fn scale(e: &mut Emitter, a: &Args, factor: f32) {
    elementwise(e, a, 1, &move |e, ty, x| {
        let c = e.constant(ty, factor);
        e.b.ins().fmul(c, x[0])
    });
}

// ---------------------------------------------------------------------------------------------
// helpers

/// The row-major offset of `idx` in a tensor of `dims`.
fn offset(e: &mut Emitter, idx: &[Value], dims: &[usize]) -> Value {
    let mut off = e.iconst(0);
    for (&i, &d) in idx.iter().zip(dims) {
        off = e.b.ins().imul_imm_s(off, d as i64);
        off = e.b.ins().iadd(off, i);
    }
    off
}

fn add_to(e: &mut Emitter, acc: Variable, v: Value) {
    let s = e.b.use_var(acc);
    let s = e.b.ins().fadd(s, v);
    e.b.def_var(acc, s);
}

/// `y[i] = f(x0[i], x1[i], …)` over the first `n` inputs (each of the output's shape; any
/// further input is not read here), four elements at a time (`F32X4`) and the rest one by one
/// (`F32`): `f` gets the type to build its constants in.
fn elementwise(e: &mut Emitter, a: &Args, n: usize, f: &dyn Fn(&mut Emitter, Type, &[Value]) -> Value) {
    let (arena, dst) = (a.arena, a.dst());
    let srcs: Vec<usize> = a.ins[..n].iter().map(|(s, _)| s.offset).collect();
    let len = e.b.ins().isub(a.end, a.begin);
    let vlen = e.b.ins().band_imm_s(len, !3);
    let vend = e.b.ins().iadd(a.begin, vlen);
    for (lo, hi, step, ty) in [(a.begin, vend, 4, F32X4), (vend, a.end, 1, F32)] {
        e.for_range(lo, hi, step, |e, i| {
            let xs: Vec<Value> = srcs
                .iter()
                .map(|&s| {
                    let p = e.elem(arena, s, i);
                    e.load(ty, p)
                })
                .collect();
            let y = f(e, ty, &xs);
            let q = e.elem(arena, dst, i);
            e.store(y, q);
        });
    }
}

/// Sets `len` elements of the tensor at `off`, from index `start`, to zero.
fn zero(e: &mut Emitter, arena: Value, off: usize, start: Value, len: usize) {
    let z = e.fconst(0.0);
    e.for_const(0, len as i64, |e, i| {
        let j = e.b.ins().iadd(start, i);
        store_f(e, arena, off, j, z);
    });
}

/// `dst[base + idx] += v`.
fn accumulate(e: &mut Emitter, arena: Value, dst: usize, idx: Value, v: Value) {
    let cur = load_f(e, arena, dst, idx);
    let s = e.b.ins().fadd(cur, v);
    store_f(e, arena, dst, idx, s);
}

// ---------------------------------------------------------------------------------------------
// convolution pieces

/// `y[g·cg + c, o, i, j] = w[g·cog + o, c, kh−1−i, kw−1−j]`: the group `g` of an output
/// channel is its index over `cg` (the groups are implied by the shapes).
fn rot180(e: &mut Emitter, a: &Args) {
    let [_, cg, kh, kw] = dims4(a.dims(0));
    let od = a.odims().to_vec();
    let cog = od[1];
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, flat| {
        let ix = split(e, flat, &od);
        let g = e.b.ins().udiv_imm_s(ix[0], cg as i64);
        let c = e.b.ins().urem_imm_s(ix[0], cg as i64);
        let go = e.b.ins().imul_imm_s(g, cog as i64);
        let o = e.b.ins().iadd(go, ix[1]);
        let (kh1, kw1) = (e.iconst(kh as i64 - 1), e.iconst(kw as i64 - 1));
        let ri = e.b.ins().isub(kh1, ix[2]);
        let rj = e.b.ins().isub(kw1, ix[3]);
        let at = offset(e, &[o, c, ri, rj], &[0, cg, kh, kw]);
        let v = load_f(e, arena, src, at);
        store_f(e, arena, dst, flat, v);
    });
}

/// Per plane: zero the output, then copy each input element that lands inside it to
/// `(ih·s_h + top, iw·s_w + left)`; the ranges of such `ih`, `iw` are compile-time constants.
fn dilate_pad(e: &mut Emitter, a: &Args, stride: [usize; 2], padding: [i64; 4]) {
    let [_, _, h, w] = dims4(a.dims(0));
    let [_, _, oh, ow] = dims4(a.odims());
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    // input indices i with 0 ≤ i·s + pad < out, in closed form (i·s + pad grows with i)
    let range = |n: usize, s: usize, pad: i64, out: usize| {
        let (n, s, pad, out) = (n as i128, s.max(1) as i128, i128::from(pad), out as i128);
        let ceil_div = |v: i128| if v <= 0 { 0 } else { (v + s - 1) / s };
        let lo = ceil_div(-pad).min(n);
        let hi = ceil_div(out - pad).clamp(lo, n);
        (lo as usize, hi as usize)
    };
    let (h0, h1) = range(h, stride[0], padding[0], oh);
    let (w0, w1) = range(w, stride[1], padding[1], ow);
    // Only when some element lands inside: then `ih·s + pad` and `iw·s + pad` are positions of
    // the output (< 2³¹) for some ih, iw, so the constants below fit (a stride or padding that
    // puts everything outside may be as large as the text IR allows).
    let copies = h0 < h1 && w0 < w1;
    let row_step = (stride[0] as i128 * ow as i128) as i64;
    let first = (i128::from(padding[0]) * ow as i128 + i128::from(padding[1])) as i64;
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let ybase = e.b.ins().imul_imm_s(plane, (oh * ow) as i64);
        zero(e, arena, dst, ybase, oh * ow);
        if !copies {
            return;
        }
        let xbase = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        e.for_const(h0 as i64, h1 as i64, |e, ih| {
            let xr = e.b.ins().imul_imm_s(ih, w as i64);
            let xr = e.b.ins().iadd(xbase, xr);
            let yr = e.b.ins().imul_imm_s(ih, row_step);
            let yr = e.b.ins().iadd_imm_s(yr, first);
            let yr = e.b.ins().iadd(ybase, yr);
            e.for_const(w0 as i64, w1 as i64, |e, iw| {
                let xi = e.b.ins().iadd(xr, iw);
                let yc = e.b.ins().imul_imm_s(iw, stride[1] as i64);
                let yi = e.b.ins().iadd(yr, yc);
                let v = load_f(e, arena, src, xi);
                store_f(e, arena, dst, yi, v);
            });
        });
    });
}

/// The output positions `[lo, hi)` of one axis whose tap `k` lands inside the input
/// (`o·s + k·d − pad ∈ [0, n)`), computed at compile time.
fn valid_outputs(out: usize, n: usize, s: usize, d: usize, k: usize, pad: usize) -> (usize, usize) {
    let off = k * d;
    let lo = pad.saturating_sub(off).div_ceil(s);
    // o·s + off − pad ≤ n − 1  ⇔  o ≤ (n − 1 + pad − off)/s
    let hi = match (n - 1 + pad).checked_sub(off) {
        Some(v) => (v / s + 1).min(out),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// Kernels with more taps than this take `conv_weight_grad_loops` (code of constant size)
/// instead of one unrolled block per tap.
const UNROLL_GRAD_TAPS: usize = 64;

/// What `conv_weight_grad_loops` needs of the shapes and attributes.
struct GradGeom {
    /// `[n, c_in, h, w]` of the input.
    x: [usize; 4],
    /// `[c_out, oh, ow]` of the output gradient.
    dy: [usize; 3],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
    /// Top and left padding.
    pad: [usize; 2],
    /// Byte offsets of x, dy and dw.
    offsets: [usize; 3],
}

/// `valid_outputs` at run time, for a tap `k` that is a loop variable: `[lo, hi)` with
/// `lo = ⌈max(pad − k·d, 0)/s⌉` and `hi = min(⌊(n − 1 + pad − k·d)/s⌋ + 1, out)` (0 when the
/// numerator is negative); an empty range may have `hi < lo`. `k·d` and `pad` are below 2³¹
/// (the window fits its padded input), so nothing overflows.
fn valid_outputs_at(
    e: &mut Emitter,
    k: Value,
    n: usize,
    out: usize,
    s: usize,
    d: usize,
    pad: usize,
) -> (Value, Value) {
    let off = e.b.ins().imul_imm_s(k, d as i64);
    let zero = e.iconst(0);
    let padv = e.iconst(pad as i64);
    let t = e.b.ins().isub(padv, off);
    let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, t, 0);
    let t = e.b.ins().select(neg, zero, t);
    let q = e.b.ins().udiv_imm_s(t, s as i64);
    let r = e.b.ins().urem_imm_s(t, s as i64);
    let up = e.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
    let up = e.b.ins().uextend(I64, up);
    let lo = e.b.ins().iadd(q, up);
    let top = e.iconst((n - 1 + pad) as i64);
    let v = e.b.ins().isub(top, off);
    let q = e.b.ins().udiv_imm_s(v, s as i64);
    let q = e.b.ins().iadd_imm_s(q, 1);
    let outv = e.iconst(out as i64);
    let over = e.b.ins().icmp(IntCC::SignedGreaterThan, q, outv);
    let q = e.b.ins().select(over, outv, q);
    let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, v, 0);
    let hi = e.b.ins().select(neg, zero, q);
    (lo, hi)
}

/// The body of `conv_weight_grad` for the pair `(o, c)` with loops over the kernel taps and
/// run-time ranges of valid outputs per tap (a scalar dot product per row).
fn conv_weight_grad_loops(e: &mut Emitter, arena: Value, g: &GradGeom, pair: Value, o: Value, ch: Value) {
    let [n, c_in, h, w] = g.x;
    let [c_out, oh, ow] = g.dy;
    let [kh, kw] = g.k;
    let (s, d, [pt, pl]) = (g.s, g.d, g.pad);
    let [xo, dyo, dst] = g.offsets;
    let at0 = e.b.ins().imul_imm_s(pair, (kh * kw) as i64);
    e.for_const(0, kh as i64, |e, i| {
        let (y0, y1) = valid_outputs_at(e, i, h, oh, s[0], d[0], pt);
        // the input row of output row y is y·s + i·d − pt
        let row_off = e.b.ins().imul_imm_s(i, d[0] as i64);
        let row_off = e.b.ins().iadd_imm_s(row_off, -(pt as i64));
        e.for_const(0, kw as i64, |e, j| {
            let (x0, x1) = valid_outputs_at(e, j, w, ow, s[1], d[1], pl);
            let col_off = e.b.ins().imul_imm_s(j, d[1] as i64);
            let col_off = e.b.ins().iadd_imm_s(col_off, -(pl as i64));
            let zero = e.fconst(0.0);
            let acc = e.var(F32, zero);
            e.for_const(0, n as i64, |e, b| {
                let x_plane = offset(e, &[b, ch], &[0, c_in]);
                let x_plane = e.b.ins().imul_imm_s(x_plane, (h * w) as i64);
                let dy_plane = offset(e, &[b, o], &[0, c_out]);
                let dy_plane = e.b.ins().imul_imm_s(dy_plane, (oh * ow) as i64);
                e.for_range(y0, y1, 1, |e, y| {
                    let ih = e.b.ins().imul_imm_s(y, s[0] as i64);
                    let ih = e.b.ins().iadd(ih, row_off);
                    let xr = e.b.ins().imul_imm_s(ih, w as i64);
                    let xr = e.b.ins().iadd(x_plane, xr);
                    let xr = e.b.ins().iadd(xr, col_off);
                    let yr = e.b.ins().imul_imm_s(y, ow as i64);
                    let yr = e.b.ins().iadd(dy_plane, yr);
                    e.for_range(x0, x1, 1, |e, x| {
                        let xk = e.b.ins().imul_imm_s(x, s[1] as i64);
                        let xk = e.b.ins().iadd(xr, xk);
                        let yk = e.b.ins().iadd(yr, x);
                        let xv = load_f(e, arena, xo, xk);
                        let gv = load_f(e, arena, dyo, yk);
                        let t = e.b.use_var(acc);
                        let t = e.b.ins().fma(xv, gv, t);
                        e.b.def_var(acc, t);
                    });
                });
            });
            let at = e.b.ins().imul_imm_s(i, kw as i64);
            let at = e.b.ins().iadd(at, j);
            let at = e.b.ins().iadd(at0, at);
            let v = e.b.use_var(acc);
            store_f(e, arena, dst, at, v);
        });
    });
}

/// Work items a weight gradient's GEMM aims for: blocks of `dw`'s columns (each item packs
/// its own columns of the patch matrix, so a column split repeats only the delta's packing).
const WGRAD_ITEMS: usize = 4;

/// The fewest output channels per group a weight gradient takes the GEMM driver with.
const WGRAD_MIN_ROWS: usize = 8;

/// The GEMM driver's description of a weight gradient (`gemm_train`), or `None` where the
/// loops below run it: when the node has no status word for the driver to report in, when
/// it has fewer than `WGRAD_MIN_ROWS` output channels per group, or when no micro-kernel can
/// be had.
fn wgrad_desc(a: &Args, conv: &Conv2d) -> Option<WgradDesc> {
    let status = a.status?;
    let [n, c_in, h, w] = dims4(a.dims(0));
    let [_, c_out, oh, ow] = dims4(a.dims(1));
    let [_, cg, kh, kw] = dims4(a.odims());
    // fewer output channels per group than this: each packed patch element would feed too
    // few FMAs (measured on LeNet-5's conv1, 6 channels: the loops were faster)
    if c_out / conv.groups < WGRAD_MIN_ROWS {
        return None;
    }
    let geom = crate::lower::validated(conv.geometry(a.dims(0), [kh, kw]));
    let kern = crate::gemm_train::micro_kernel(a.tier, c_out / conv.groups, cg * kh * kw).ok()?;
    kern.check().ok()?;
    let bl = crate::gemm::Blocking::for_host(&kern);
    let mut d = WgradDesc {
        kernel: kern.f as usize,
        mr: kern.mr,
        nr: kern.nr,
        mc: bl.mc,
        kc: bl.kc,
        nc: bl.nc,
        batch: n,
        groups: conv.groups,
        c_in,
        h,
        w,
        c_out,
        oh,
        ow,
        kh,
        kw,
        stride: conv.stride,
        dilation: conv.dilation,
        pad: [geom.pad_begin(0), geom.pad_begin(1)],
        x: a.src(0),
        dy: a.src(1),
        dw: a.dst(),
        status,
        m_step: 1,
        n_step: 1,
    };
    d.split(WGRAD_ITEMS);
    Some(d)
}

/// The weight gradient's kernel: the description written to the kernel's stack frame, then a
/// call to the driver with it.
fn call_wgrad_driver(e: &mut Emitter, a: &Args, d: &WgradDesc) {
    let words = d.words();
    let slot = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (words.len() * 8) as u32,
        3,
    ));
    for (i, &w) in words.iter().enumerate() {
        let v = e.iconst(w as i64);
        e.b.ins().stack_store(I64, v, slot, (i * 8) as i32);
    }
    let desc = e.b.ins().stack_addr(I64, slot, 0);
    let mut sig = Signature::new(e.b.func.signature.call_conv);
    sig.params.extend([AbiParam::new(I64); 4]);
    let sig = e.b.import_signature(sig);
    let f = e.iconst(crate::gemm_train::kiln_conv_wgrad_run as *const () as usize as i64);
    e.b.ins().call_indirect(sig, f, &[desc, a.arena, a.begin, a.end]);
}

/// `dw[o, c, i, j]` without the GEMM driver, parallel over the `(o, c)` pairs; the kernel taps `(i, j)` are unrolled,
/// so each tap's valid output rows and columns are compile-time ranges (no test per tap), and
/// with stride 1 the row products are vectorized dot products.
fn conv_weight_grad(e: &mut Emitter, a: &Args, conv: &Conv2d) {
    let [n, c_in, h, w] = dims4(a.dims(0));
    let [_, c_out, oh, ow] = dims4(a.dims(1));
    let [_, cg, kh, kw] = dims4(a.odims());
    let (s, d) = (conv.stride, conv.dilation);
    let geom = crate::lower::validated(conv.geometry(a.dims(0), [kh, kw]));
    let (pt, pl) = (geom.pad_begin(0), geom.pad_begin(1));
    let co_per_group = c_out / conv.groups;
    let (arena, xo, dyo, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    e.for_range(a.begin, a.end, 1, |e, pair| {
        let o = e.b.ins().udiv_imm_s(pair, cg as i64);
        let ic = e.b.ins().urem_imm_s(pair, cg as i64);
        let g = e.b.ins().udiv_imm_s(o, co_per_group as i64);
        let gc = e.b.ins().imul_imm_s(g, cg as i64);
        let ch = e.b.ins().iadd(gc, ic);
        if kh * kw > UNROLL_GRAD_TAPS {
            let geom = GradGeom {
                x: [n, c_in, h, w],
                dy: [c_out, oh, ow],
                k: [kh, kw],
                s,
                d,
                pad: [pt, pl],
                offsets: [xo, dyo, dst],
            };
            return conv_weight_grad_loops(e, arena, &geom, pair, o, ch);
        }
        for i in 0..kh {
            let (y0, y1) = valid_outputs(oh, h, s[0], d[0], i, pt);
            for j in 0..kw {
                let (x0, x1) = valid_outputs(ow, w, s[1], d[1], j, pl);
                let zero = e.fconst(0.0);
                let acc = e.var(F32, zero);
                if y0 < y1 && x0 < x1 {
                    e.for_const(0, n as i64, |e, b| {
                        let x_plane = offset(e, &[b, ch], &[0, c_in]);
                        let x_plane = e.b.ins().imul_imm_s(x_plane, (h * w) as i64);
                        let dy_plane = offset(e, &[b, o], &[0, c_out]);
                        let dy_plane = e.b.ins().imul_imm_s(dy_plane, (oh * ow) as i64);
                        e.for_const(y0 as i64, y1 as i64, |e, y| {
                            // input row of output row y, and its first column
                            let ih = e.b.ins().imul_imm_s(y, s[0] as i64);
                            let ih = e.b.ins().iadd_imm_s(ih, (i * d[0]) as i64 - pt as i64);
                            let xr = e.b.ins().imul_imm_s(ih, w as i64);
                            let xr = e.b.ins().iadd(x_plane, xr);
                            let yr = e.b.ins().imul_imm_s(y, ow as i64);
                            let yr = e.b.ins().iadd(dy_plane, yr);
                            let col0 = (x0 * s[1] + j * d[1]) as i64 - pl as i64;
                            let x_start = e.b.ins().iadd_imm_s(xr, col0);
                            let y_start = e.b.ins().iadd_imm_s(yr, x0 as i64);
                            let v = if s[1] == 1 {
                                dot(e, arena, (xo, x_start), (dyo, y_start), x1 - x0)
                            } else {
                                let zero = e.fconst(0.0);
                                let r = e.var(F32, zero);
                                e.for_const(0, (x1 - x0) as i64, |e, k| {
                                    let xk = e.b.ins().imul_imm_s(k, s[1] as i64);
                                    let xk = e.b.ins().iadd(x_start, xk);
                                    let yk = e.b.ins().iadd(y_start, k);
                                    let xv = load_f(e, arena, xo, xk);
                                    let gv = load_f(e, arena, dyo, yk);
                                    let t = e.b.use_var(r);
                                    let t = e.b.ins().fma(xv, gv, t);
                                    e.b.def_var(r, t);
                                });
                                e.b.use_var(r)
                            };
                            add_to(e, acc, v);
                        });
                    });
                }
                let at = e.b.ins().imul_imm_s(pair, (kh * kw) as i64);
                let at = e.b.ins().iadd_imm_s(at, (i * kw + j) as i64);
                let v = e.b.use_var(acc);
                store_f(e, arena, dst, at, v);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// pooling backward

/// Folds element `idx` (value `v`) into a running argmax: it wins when there is none yet, when
/// it is strictly greater (so the first maximum stays), or when it is the first NaN.
fn argmax_step(e: &mut Emitter, best: Variable, arg: Variable, v: Value, idx: Value) {
    let b = e.b.use_var(best);
    let cur = e.b.use_var(arg);
    let none = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, cur, 0);
    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, b);
    let v_nan = e.b.ins().fcmp(FloatCC::Unordered, v, v);
    let b_num = e.b.ins().fcmp(FloatCC::Ordered, b, b);
    let nan_wins = e.b.ins().band(v_nan, b_num);
    let wins = e.b.ins().bor(none, gt);
    let wins = e.b.ins().bor(wins, nan_wins);
    let nb = e.b.ins().select(wins, v, b);
    let na = e.b.ins().select(wins, idx, cur);
    e.b.def_var(best, nb);
    e.b.def_var(arg, na);
}

fn store_id(e: &mut Emitter, arena: Value, dst: usize, flat: Value, arg: Variable) {
    let id = e.b.use_var(arg);
    let id = e.b.ins().ireduce(I32, id);
    let p = e.elem(arena, dst, flat);
    e.b.ins().store(mem(), id, p, 0);
}

/// The argmax of each window, over its real taps only (`lower::window_taps`: a window of 2³¹
/// taps that are nearly all padding costs its real ones, not 2³¹ steps), parallel over
/// planes like the forward pooling: each output row's taps are found once for the row.
fn max_pool_ids(e: &mut Emitter, a: &Args, p: &Pool2d) {
    let [_, _, h, w] = dims4(a.dims(0));
    let [_, _, oh, ow] = dims4(a.odims());
    let [kh, kw] = p.kernel;
    let (s, d) = (p.stride, p.dilation);
    let geom = crate::lower::validated(p.geometry(a.dims(0)));
    let (padh, padw) = (geom.pads(0), geom.pads(1));
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        let ybase = e.b.ins().imul_imm_s(plane, (oh * ow) as i64);
        e.for_const(0, oh as i64, |e, y| {
            let rows = window_taps(e, y, (s[0], d[0]), padh, h, kh);
            let yr = e.b.ins().imul_imm_s(y, ow as i64);
            let yr = e.b.ins().iadd(ybase, yr);
            e.for_const(0, ow as i64, |e, x| {
                let cols = window_taps(e, x, (s[1], d[1]), padw, w, kw);
                let ninf = e.fconst(f32::NEG_INFINITY);
                let best = e.var(F32, ninf);
                let minus = e.b.ins().iconst(I64, -1);
                let arg = e.var(I64, minus);
                for_each_tap(e, (&rows, &cols), d, |e, ih, iw| {
                    let idx = offset(e, &[ih, iw], &[h, w]);
                    let at = e.b.ins().iadd(base, idx);
                    let v = load_f(e, arena, src, at);
                    argmax_step(e, best, arg, v, idx);
                });
                let flat = e.b.ins().iadd(yr, x);
                store_id(e, arena, dst, flat, arg);
            });
        });
    });
}

fn adaptive_max_ids(e: &mut Emitter, a: &Args, output: [usize; 2]) {
    let [n, c, h, w] = dims4(a.dims(0));
    let [oh, ow] = output;
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, flat| {
        let ix = split(e, flat, &[n * c, oh, ow]);
        let ninf = e.fconst(f32::NEG_INFINITY);
        let best = e.var(F32, ninf);
        let minus = e.b.ins().iconst(I64, -1);
        let arg = e.var(I64, minus);
        let base = e.b.ins().imul_imm_s(ix[0], (h * w) as i64);
        let (r0, r1) = adaptive_bounds(e, ix[1], h, oh);
        let (c0, c1) = adaptive_bounds(e, ix[2], w, ow);
        e.for_range(r0, r1, 1, |e, ih| {
            e.for_range(c0, c1, 1, |e, iw| {
                let idx = offset(e, &[ih, iw], &[h, w]);
                let at = e.b.ins().iadd(base, idx);
                let v = load_f(e, arena, src, at);
                argmax_step(e, best, arg, v, idx);
            });
        });
        store_id(e, arena, dst, flat, arg);
    });
}

/// `dx[plane, id] += dy[plane, k]` for `id = ids[plane, k]`, parallel over planes. An id
/// outside the plane is not used: the kernel records `position << 32 | id as u32` in its
/// status word with an atomic unsigned minimum (so the lowest failing position wins whatever
/// the threads' order, as the interpreter reports the first one), and `run` turns it into
/// the interpreter's error. Positions are below 2³¹ (the ids tensor's size), so they fit.
fn scatter_ids(e: &mut Emitter, a: &Args) {
    let [_, _, oh, ow] = dims4(a.dims(0));
    let [_, _, h, w] = dims4(a.odims());
    let (arena, dyo, ido, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    let status = a
        .status
        .expect("the plan gives every scatter_ids2d a status word");
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        zero(e, arena, dst, base, h * w);
        let ybase = e.b.ins().imul_imm_s(plane, (oh * ow) as i64);
        e.for_const(0, (oh * ow) as i64, |e, k| {
            let at = e.b.ins().iadd(ybase, k);
            let p = e.elem(arena, ido, at);
            let id = e.b.ins().sload32(mem(), p, 0);
            let ok = in_range(e, id, h * w);
            if_else(
                e,
                ok,
                |e| {
                    let g = load_f(e, arena, dyo, at);
                    let to = e.b.ins().iadd(base, id);
                    accumulate(e, arena, dst, to, g);
                },
                |e| report_bad_index(e, arena, status, at, id),
            );
        });
    });
}

/// Average or sum pooling's backward, parallel over planes: each `dy` element is shared among
/// its window's real taps (`lower::window_taps`, counts in closed form).
fn pool2d_grad(e: &mut Emitter, a: &Args, p: &Pool2d) {
    let [_, _, oh, ow] = dims4(a.dims(0));
    let [_, _, h, w] = dims4(a.odims());
    let [kh, kw] = p.kernel;
    let (s, d) = (p.stride, p.dilation);
    let geom = crate::lower::validated(p.geometry(a.odims()));
    let (padh, padw) = (geom.pads(0), geom.pads(1));
    let (arena, dyo, dst) = (a.arena, a.src(0), a.dst());
    let kind = p.kind;
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        zero(e, arena, dst, base, h * w);
        e.for_const(0, oh as i64, |e, y| {
            let rows = window_taps(e, y, (s[0], d[0]), padh, h, kh);
            e.for_const(0, ow as i64, |e, x| {
                let cols = window_taps(e, x, (s[1], d[1]), padw, w, kw);
                let yi = offset(e, &[plane, y, x], &[0, oh, ow]);
                let g = load_f(e, arena, dyo, yi);
                let share = match kind {
                    PoolKind::Avg { count_include_pad } => {
                        // the divisor: taps inside the padded input, or real taps
                        let n = if count_include_pad {
                            e.b.ins().imul(rows.padded, cols.padded)
                        } else {
                            let (r, c) = (real_taps(e, &rows), real_taps(e, &cols));
                            e.b.ins().imul(r, c)
                        };
                        let n = e.b.ins().fcvt_from_sint(F32, n);
                        e.b.ins().fdiv(g, n)
                    }
                    PoolKind::Sum | PoolKind::Max => g,
                };
                for_each_tap(e, (&rows, &cols), d, |e, ih, iw| {
                    let idx = offset(e, &[ih, iw], &[h, w]);
                    let to = e.b.ins().iadd(base, idx);
                    accumulate(e, arena, dst, to, share);
                });
            });
        });
    });
}

fn adaptive_avg_grad(e: &mut Emitter, a: &Args) {
    let [_, _, oh, ow] = dims4(a.dims(0));
    let [_, _, h, w] = dims4(a.odims());
    let (arena, dyo, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, plane| {
        let base = e.b.ins().imul_imm_s(plane, (h * w) as i64);
        zero(e, arena, dst, base, h * w);
        e.for_const(0, oh as i64, |e, y| {
            let (r0, r1) = adaptive_bounds(e, y, h, oh);
            e.for_const(0, ow as i64, |e, x| {
                let (c0, c1) = adaptive_bounds(e, x, w, ow);
                let nr = e.b.ins().isub(r1, r0);
                let nc = e.b.ins().isub(c1, c0);
                let cnt = e.b.ins().imul(nr, nc);
                let cnt = e.b.ins().fcvt_from_sint(F32, cnt);
                let yi = offset(e, &[plane, y, x], &[0, oh, ow]);
                let g = load_f(e, arena, dyo, yi);
                let share = e.b.ins().fdiv(g, cnt);
                e.for_range(r0, r1, 1, |e, ih| {
                    e.for_range(c0, c1, 1, |e, iw| {
                        let idx = offset(e, &[ih, iw], &[h, w]);
                        let to = e.b.ins().iadd(base, idx);
                        accumulate(e, arena, dst, to, share);
                    });
                });
            });
        });
    });
}

// ---------------------------------------------------------------------------------------------
// elementwise and reductions

fn activation_grad(e: &mut Emitter, a: &Args, act: Activation) {
    elementwise(e, a, 2, &move |e, ty, v| {
        let (y, g) = (v[0], v[1]);
        let one = e.constant(ty, 1.0);
        match act {
            Activation::Relu | Activation::LeakyRelu { .. } => {
                let alpha = match act {
                    Activation::LeakyRelu { alpha } => alpha,
                    _ => 0.0,
                };
                let al = e.constant(ty, alpha);
                let neg = e.b.ins().fmul(g, al);
                let zero = e.constant(ty, 0.0);
                // 0 < y ? g : g·alpha (a NaN y takes g·alpha, as the interpreter's `y > 0`)
                e.select_lt(ty, zero, y, g, neg)
            }
            Activation::Sigmoid => {
                let gy = e.b.ins().fmul(g, y);
                let om = e.b.ins().fsub(one, y);
                e.b.ins().fmul(gy, om)
            }
            Activation::Tanh => {
                let yy = e.b.ins().fmul(y, y);
                let om = e.b.ins().fsub(one, yy);
                e.b.ins().fmul(g, om)
            }
            Activation::Clip { .. }
            | Activation::HardSigmoid { .. }
            | Activation::Erf
            | Activation::Silu
            | Activation::Gelu
            | Activation::HardSwish => crate::lower_reduce::activation_grad(e, ty, act, y, g),
        }
    });
}

fn softmax_grad(e: &mut Emitter, a: &Args, ax: usize, log: bool) {
    let d = a.odims().to_vec();
    let (len, inner) = (d[ax], d[ax + 1..].iter().product::<usize>());
    let (arena, yo, go, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    e.for_range(a.begin, a.end, 1, |e, r| {
        let o = e.b.ins().udiv_imm_s(r, inner as i64);
        let i = e.b.ins().urem_imm_s(r, inner as i64);
        let row = e.b.ins().imul_imm_s(o, (len * inner) as i64);
        let row = e.b.ins().iadd(row, i);
        let at = |e: &mut Emitter, k: Value| {
            let t = e.b.ins().imul_imm_s(k, inner as i64);
            e.b.ins().iadd(row, t)
        };
        let zero = e.fconst(0.0);
        let acc = e.var(F32, zero);
        e.for_const(0, len as i64, |e, k| {
            let j = at(e, k);
            let g = load_f(e, arena, go, j);
            let v = if log {
                g
            } else {
                let y = load_f(e, arena, yo, j);
                e.b.ins().fmul(y, g)
            };
            add_to(e, acc, v);
        });
        let s = e.b.use_var(acc);
        e.for_const(0, len as i64, |e, k| {
            let j = at(e, k);
            let g = load_f(e, arena, go, j);
            let y = load_f(e, arena, yo, j);
            let v = if log {
                let p = e.exp(F32, y);
                let t = e.b.ins().fmul(p, s);
                e.b.ins().fsub(g, t)
            } else {
                let t = e.b.ins().fsub(g, s);
                e.b.ins().fmul(y, t)
            };
            store_f(e, arena, dst, j, v);
        });
    });
}

fn reduce_sum_to(e: &mut Emitter, a: &Args) {
    let xd = a.dims(0).to_vec();
    let sd = a.odims().to_vec();
    let r = xd.len();
    let mut aligned = vec![1usize; r - sd.len()];
    aligned.extend(&sd);
    // the summed axes: size 1 in the result, larger in the input
    let reduced: Vec<usize> = (0..r).filter(|&k| aligned[k] == 1 && xd[k] > 1).collect();
    let xstrides: Vec<usize> = (0..r).map(|k| xd[k + 1..].iter().product()).collect();
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, flat| {
        let ix = split(e, flat, &aligned);
        // the input offset of the output element (index 0 on the summed axes)
        let kept: Vec<Value> = (0..r)
            .map(|k| if reduced.contains(&k) { e.iconst(0) } else { ix[k] })
            .collect();
        let base = offset(e, &kept, &xd);
        let zero = e.fconst(0.0);
        let acc = e.var(F32, zero);
        sum_axes(e, (arena, src), base, &reduced, &xd, &xstrides, acc);
        let v = e.b.use_var(acc);
        store_f(e, arena, dst, flat, v);
    });
}

/// `acc += Σ x[base + Σ_a i_a·stride_a]` over the axes `axes` (one loop nest, no divisions).
fn sum_axes(
    e: &mut Emitter,
    (arena, src): (Value, usize),
    base: Value,
    axes: &[usize],
    dims: &[usize],
    strides: &[usize],
    acc: Variable,
) {
    match axes.split_first() {
        None => {
            let v = load_f(e, arena, src, base);
            add_to(e, acc, v);
        }
        Some((&k, rest)) => e.for_const(0, dims[k] as i64, |e, i| {
            let t = e.b.ins().imul_imm_s(i, strides[k] as i64);
            let b = e.b.ins().iadd(base, t);
            sum_axes(e, (arena, src), b, rest, dims, strides, acc);
        }),
    }
}

fn loss_grad(e: &mut Emitter, a: &Args, kind: LossKind) {
    let pd = a.dims(0).to_vec();
    let (arena, po, to, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    if kind == LossKind::Mse {
        let k = 2.0 / a.ins[0].1.shape.numel() as f32;
        elementwise(e, a, 2, &move |e, ty, v| {
            let d = e.b.ins().fsub(v[0], v[1]);
            let c = e.constant(ty, k);
            e.b.ins().fmul(c, d)
        });
        return;
    }
    let (n, k) = (pd[0], pd[1]);
    let ids = a.ins[1].1.dtype == DType::I32;
    let inv_n = 1.0 / n as f32;
    e.for_range(a.begin, a.end, 1, |e, r| {
        let row = e.b.ins().imul_imm_s(r, k as i64);
        let id = if ids {
            let p = e.elem(arena, to, r);
            let id = e.b.ins().sload32(mem(), p, 0);
            // a class id outside 0..k (computed in the graph: fed ones were checked before the
            // run) fails the run, as in the interpreter
            let kk = e.iconst(k as i64);
            let bad = e.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, id, kk);
            let status = a
                .status
                .expect("the plan gives every classification loss a status word");
            e.if_then(bad, |e| report_bad_index(e, arena, status, r, id));
            Some(id)
        } else {
            None
        };
        let target = |e: &mut Emitter, c: Value| -> Value {
            match id {
                Some(id) => {
                    let hit = e.b.ins().icmp(IntCC::Equal, c, id);
                    let one = e.fconst(1.0);
                    let zero = e.fconst(0.0);
                    e.b.ins().select(hit, one, zero)
                }
                None => {
                    let i = e.b.ins().iadd(row, c);
                    load_f(e, arena, to, i)
                }
            }
        };
        let (m, sum, mass) = if kind == LossKind::CrossEntropy {
            let at = |e: &mut Emitter, c: Value| e.b.ins().iadd(row, c);
            let (m, sum) = max_and_sum_exp(e, arena, po, k, &at, None);
            let mass = if ids {
                e.fconst(1.0)
            } else {
                let zero = e.fconst(0.0);
                let acc = e.var(F32, zero);
                e.for_const(0, k as i64, |e, c| {
                    let y = target(e, c);
                    add_to(e, acc, y);
                });
                e.b.use_var(acc)
            };
            (m, sum, mass)
        } else {
            let z = e.fconst(0.0);
            (z, z, z)
        };
        e.for_const(0, k as i64, |e, c| {
            let i = e.b.ins().iadd(row, c);
            let y = target(e, c);
            let v = if kind == LossKind::CrossEntropy {
                let z = load_f(e, arena, po, i);
                let t = e.b.ins().fsub(z, m);
                let ex = e.exp(F32, t);
                let p = e.b.ins().fdiv(ex, sum);
                let pm = e.b.ins().fmul(p, mass);
                e.b.ins().fsub(pm, y)
            } else {
                e.b.ins().fneg(y)
            };
            let c = e.fconst(inv_n);
            let v = e.b.ins().fmul(v, c);
            store_f(e, arena, dst, i, v);
        });
    });
}

pub fn slice(e: &mut Emitter, a: &Args, ax: usize, start: usize) {
    let xd = a.dims(0).to_vec();
    let od = a.odims().to_vec();
    let (arena, src, dst) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, flat| {
        let mut ix = split(e, flat, &od);
        ix[ax] = e.b.ins().iadd_imm_s(ix[ax], start as i64);
        let at = offset(e, &ix, &xd);
        // a bit copy: f32 and i32 alike
        let p = e.elem(arena, src, at);
        let v = e.b.ins().load(I32, mem(), p, 0);
        let q = e.elem(arena, dst, flat);
        e.b.ins().store(mem(), v, q, 0);
    });
}

fn update(e: &mut Emitter, a: &Args, u: Update) {
    match u {
        Update::Count => elementwise(e, a, 1, &|e, ty, v| {
            let one = e.constant(ty, 1.0);
            e.b.ins().fadd(v[0], one)
        }),
        Update::SgdVelocity {
            momentum,
            weight_decay,
        } => elementwise(e, a, 3, &move |e, ty, v| {
            let (p, g, vel) = (v[0], v[1], v[2]);
            let (m, wd) = (e.constant(ty, momentum), e.constant(ty, weight_decay));
            let t = e.b.ins().fmul(m, vel);
            let t = e.b.ins().fadd(t, g);
            let u = e.b.ins().fmul(wd, p);
            e.b.ins().fadd(t, u)
        }),
        Update::SgdParam { lr, weight_decay } => elementwise(e, a, 2, &move |e, ty, v| {
            let (p, d) = (v[0], v[1]);
            let (l, wd) = (e.constant(ty, lr), e.constant(ty, weight_decay));
            let t = e.b.ins().fmul(wd, p);
            let t = e.b.ins().fadd(d, t);
            let t = e.b.ins().fmul(l, t);
            e.b.ins().fsub(p, t)
        }),
        Update::AdamMoment {
            beta,
            weight_decay,
            squared,
        } => elementwise(e, a, 3, &move |e, ty, v| {
            let (p, g, m) = (v[0], v[1], v[2]);
            let (b, wd) = (e.constant(ty, beta), e.constant(ty, weight_decay));
            let omb = e.constant(ty, 1.0 - beta);
            let t = e.b.ins().fmul(wd, p);
            let gi = e.b.ins().fadd(g, t);
            let gi = if squared { e.b.ins().fmul(gi, gi) } else { gi };
            let t = e.b.ins().fmul(b, m);
            let u = e.b.ins().fmul(omb, gi);
            e.b.ins().fadd(t, u)
        }),
        Update::AdamParam {
            lr,
            beta1,
            beta2,
            eps,
        } => {
            // the bias corrections 1 − βᵗ = 1 − e^{t·ln β}, once per kernel
            let (arena, t_off) = (a.arena, a.src(3));
            let z = e.iconst(0);
            let t = load_f(e, arena, t_off, z);
            let correction = |e: &mut Emitter, beta: f32| {
                let lb = e.fconst(f64::from(beta).ln() as f32);
                let x = e.b.ins().fmul(t, lb);
                let p = e.exp(F32, x);
                let one = e.fconst(1.0);
                e.b.ins().fsub(one, p)
            };
            let bc1 = correction(e, beta1);
            let bc2 = correction(e, beta2);
            // p, m, v elementwise; the step count (input 3) is a scalar, read above
            elementwise(e, a, 3, &move |e, ty, v| {
                let (p, m, vv) = (v[0], v[1], v[2]);
                let (c1, c2) = if ty == F32X4 {
                    (e.b.ins().splat(F32X4, bc1), e.b.ins().splat(F32X4, bc2))
                } else {
                    (bc1, bc2)
                };
                let mh = e.b.ins().fdiv(m, c1);
                let vh = e.b.ins().fdiv(vv, c2);
                let sq = e.b.ins().sqrt(vh);
                let ep = e.constant(ty, eps);
                let den = e.b.ins().fadd(sq, ep);
                let step = e.b.ins().fdiv(mh, den);
                let l = e.constant(ty, lr);
                let step = e.b.ins().fmul(l, step);
                e.b.ins().fsub(p, step)
            });
        }
    }
}

/// Training-mode dropout: the mask of `kiln_ir::op::dropout_keep`, the same integer hash.
fn dropout_train(e: &mut Emitter, a: &Args, ratio: f32, seed: u64) {
    use kiln_ir::op::{DROPOUT_INDEX_MUL, DROPOUT_STEP_MUL, dropout_threshold};
    let (arena, xo, so, dst) = (a.arena, a.src(0), a.src(1), a.dst());
    let z = e.iconst(0);
    let step = load_f(e, arena, so, z);
    let step = e.b.ins().fcvt_to_uint_sat(I64, step);
    let sm = e.b.ins().iconst(I64, DROPOUT_STEP_MUL as i64);
    let base = e.b.ins().imul(step, sm);
    let base = e.b.ins().iadd_imm_s(base, seed as i64);
    let scale = (1.0 / (1.0 - f64::from(ratio))) as f32;
    let threshold = dropout_threshold(ratio) as i64;
    e.for_range(a.begin, a.end, 1, |e, i| {
        let im = e.b.ins().iconst(I64, DROPOUT_INDEX_MUL as i64);
        let t = e.b.ins().imul(i, im);
        let h = e.b.ins().iadd(base, t);
        // SplitMix64's finalizer
        let h = e.b.ins().iadd_imm_s(h, 0x9E37_79B9_7F4A_7C15u64 as i64);
        let mix = |e: &mut Emitter, h: Value, shift: i64, mul: u64| {
            let s = e.b.ins().ushr_imm_s(h, shift);
            let x = e.b.ins().bxor(h, s);
            let m = e.b.ins().iconst(I64, mul as i64);
            e.b.ins().imul(x, m)
        };
        let h = mix(e, h, 30, 0xBF58_476D_1CE4_E5B9);
        let h = mix(e, h, 27, 0x94D0_49BB_1331_11EB);
        let s = e.b.ins().ushr_imm_s(h, 31);
        let h = e.b.ins().bxor(h, s);
        let top = e.b.ins().ushr_imm_s(h, 40);
        let keep =
            e.b.ins()
                .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, top, threshold);
        let x = load_f(e, arena, xo, i);
        let c = e.fconst(scale);
        let y = e.b.ins().fmul(x, c);
        let zero = e.fconst(0.0);
        let y = e.b.ins().select(keep, y, zero);
        store_f(e, arena, dst, i, y);
    });
}

/// Batch norm in training mode, parallel over channels: the statistics in two passes over the
/// channel's elements, then the piece's own pass (see `kiln_ir::BnPart`).
fn batch_norm_train(e: &mut Emitter, a: &Args, part: BnPart, eps: f32) {
    let d = a.dims(0).to_vec();
    let (n, c, inner) = (d[0], d[1], d[2..].iter().product::<usize>());
    let m = n * inner;
    let (arena, xo, dst) = (a.arena, a.src(0), a.dst());
    // `f(index)` for every element of channel `ch`
    let each = |e: &mut Emitter, ch: Value, f: &mut dyn FnMut(&mut Emitter, Value)| {
        e.for_const(0, n as i64, |e, b| {
            let base = e.b.ins().imul_imm_s(b, c as i64);
            let base = e.b.ins().iadd(base, ch);
            let base = e.b.ins().imul_imm_s(base, inner as i64);
            e.for_const(0, inner as i64, |e, i| {
                let at = e.b.ins().iadd(base, i);
                f(e, at);
            });
        });
    };
    let sum = |e: &mut Emitter, ch: Value, term: &dyn Fn(&mut Emitter, Value) -> Value| {
        let zero = e.fconst(0.0);
        let acc = e.var(F32, zero);
        each(e, ch, &mut |e, at| {
            let v = term(e, at);
            add_to(e, acc, v);
        });
        e.b.use_var(acc)
    };
    e.for_range(a.begin, a.end, 1, |e, ch| {
        let mf = e.fconst(m as f32);
        let s = sum(e, ch, &|e, at| load_f(e, arena, xo, at));
        let mean = e.b.ins().fdiv(s, mf);
        let q = sum(e, ch, &|e, at| {
            let x = load_f(e, arena, xo, at);
            let d = e.b.ins().fsub(x, mean);
            e.b.ins().fmul(d, d)
        });
        let var = e.b.ins().fdiv(q, mf);
        let ev = e.fconst(eps);
        let t = e.b.ins().fadd(var, ev);
        let t = e.b.ins().sqrt(t);
        let one = e.fconst(1.0);
        let inv = e.b.ins().fdiv(one, t);
        let xhat = move |e: &mut Emitter, at: Value| {
            let x = load_f(e, arena, xo, at);
            let d = e.b.ins().fsub(x, mean);
            e.b.ins().fmul(d, inv)
        };
        match part {
            BnPart::Forward => {
                let (so, bo) = (a.src(1), a.src(2));
                let sc = load_f(e, arena, so, ch);
                let bi = load_f(e, arena, bo, ch);
                each(e, ch, &mut |e, at| {
                    let xh = xhat(e, at);
                    let y = e.b.ins().fma(sc, xh, bi);
                    store_f(e, arena, dst, at, y);
                });
            }
            BnPart::GradX => {
                let (so, go) = (a.src(1), a.src(2));
                let sdy = sum(e, ch, &|e, at| load_f(e, arena, go, at));
                let dot = sum(e, ch, &|e, at| {
                    let g = load_f(e, arena, go, at);
                    let xh = xhat(e, at);
                    e.b.ins().fmul(g, xh)
                });
                let mdy = e.b.ins().fdiv(sdy, mf);
                let mdot = e.b.ins().fdiv(dot, mf);
                let sc = load_f(e, arena, so, ch);
                let k = e.b.ins().fmul(sc, inv);
                each(e, ch, &mut |e, at| {
                    let g = load_f(e, arena, go, at);
                    let xh = xhat(e, at);
                    let t = e.b.ins().fsub(g, mdy);
                    let u = e.b.ins().fmul(xh, mdot);
                    let t = e.b.ins().fsub(t, u);
                    let y = e.b.ins().fmul(k, t);
                    store_f(e, arena, dst, at, y);
                });
            }
            BnPart::GradScale => {
                let go = a.src(1);
                let dot = sum(e, ch, &|e, at| {
                    let g = load_f(e, arena, go, at);
                    let xh = xhat(e, at);
                    e.b.ins().fmul(g, xh)
                });
                store_f(e, arena, dst, ch, dot);
            }
            BnPart::Mean => store_f(e, arena, dst, ch, mean),
            BnPart::Var => {
                let k = e.fconst(m as f32 / m.saturating_sub(1).max(1) as f32);
                let v = e.b.ins().fmul(var, k);
                store_f(e, arena, dst, ch, v);
            }
        }
    });
}
