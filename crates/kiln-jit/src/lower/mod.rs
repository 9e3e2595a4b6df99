//! Lowering: each op of the graph becomes one kernel `fn(arena, begin, end)` over its outermost
//! parallel loop (two for a convolution that first copies its input into a padded scratch:
//! `phases`). This file is the one place that states each op's lowering; `emit` writes a
//! kernel's body and returns that loop's size from the same exhaustive match over `Op`.
//!
//! All offsets and sizes are compile-time constants taken from shapes that were validated when
//! the graph was built, so every load and store is in bounds by construction: every value has
//! at most `kiln_ir::limits::MAX_ELEMENTS` (2³¹) elements and every window fits its padded
//! input, so the `i64` index arithmetic below cannot overflow, and the plan (`plan.rs`, checked
//! against `MAX_BYTES`) gives each value a slot of its full size. An index read from memory
//! (max-pool ids, class ids) is range-checked before use.
//!
//! The emitted code's size never grows with a shape or an attribute value: loops run over
//! every extent, and a loop is unrolled only below a small constant bound (`UNROLL_TAPS`,
//! `UNROLL_KW`), so a hostile kernel size or output size cannot blow up compile time or memory.

use crate::codegen::Emitter;
use crate::direct_avx512 as direct;
use crate::gemm::{BArena, Blocking, GemmDesc, MicroKernel, PatchGeom};
use crate::plan::{Slot, is_view};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use kiln_ir::geometry::Window2d;
use kiln_ir::shape::normalize_axis;
use kiln_ir::{
    Activation, BinaryOp, DType, Gemm, Im2Col, LossKind, Op, PoolKind, ReduceKind, TensorType, TrainOp,
};

/// What a kernel reads and writes.
pub struct Args<'a> {
    pub arena: Value,
    pub begin: Value,
    pub end: Value,
    pub ins: &'a [(Slot, TensorType)],
    pub out: (Slot, &'a TensorType),
    /// Scratch memory of the node (`scratch_len` elements), if it asked for any.
    pub scratch: Option<Slot>,
    /// The driver's description of a `gemm` node (see `gemm_desc`); it outlives the code.
    pub gemm: Option<&'a GemmDesc>,
    /// The byte offset of the node's status word (`plan::Plan::status`), for kernels that can
    /// fail at run time (`has_status`).
    pub status: Option<usize>,
    /// The kernel tier: `Auto` calls the AVX-512 kernels of `direct_avx512` where the CPU
    /// has them (pooling, depthwise convolution, dense).
    pub tier: crate::gemm::Tier,
}

/// Whether the op's kernel can fail at run time and reports it in a status word: an index read
/// from memory that is out of range (a scatter's id outside the plane, a loss's class id), and
/// the GEMM driver (Rust code called from the kernel, which must not unwind into it).
pub fn has_status(op: &Op) -> bool {
    matches!(
        op,
        Op::Train(TrainOp::ScatterIds { .. })
            | Op::Gemm(_)
            | Op::Loss(LossKind::CrossEntropy | LossKind::Nll)
            | Op::Train(TrainOp::LossGrad(LossKind::CrossEntropy | LossKind::Nll))
    )
}

/// Records the bad index `id` (an i64 from an `i32`) read at position `pos` (< 2³¹) in the
/// status word at byte `status`: `pos << 32 | id as u32`, by an atomic unsigned minimum, so
/// the lowest failing position wins whatever the threads' order (the interpreter reports the
/// first). `JitModel::run` decodes it into the interpreter's error.
pub(crate) fn report_bad_index(e: &mut Emitter, arena: Value, status: usize, pos: Value, id: Value) {
    let hi = e.b.ins().ishl_imm_s(pos, 32);
    let low = e.b.ins().ireduce(I32, id);
    let low = e.b.ins().uextend(cranelift_codegen::ir::types::I64, low);
    let code = e.b.ins().bor(hi, low);
    let word = e.b.ins().iadd_imm_s(arena, status as i64);
    e.b.ins().atomic_rmw(
        cranelift_codegen::ir::types::I64,
        crate::codegen::mem(),
        cranelift_codegen::ir::AtomicRmwOp::Umin,
        word,
        code,
    );
}

/// `then` when `cond` holds, else `otherwise`.
pub(crate) fn if_else(
    e: &mut Emitter,
    cond: Value,
    then: impl FnOnce(&mut Emitter),
    otherwise: impl FnOnce(&mut Emitter),
) {
    let (t, f, join) = (e.b.create_block(), e.b.create_block(), e.b.create_block());
    e.b.ins().brif(cond, t, &[], f, &[]);
    e.b.switch_to_block(t);
    then(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(f);
    otherwise(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(join);
}

impl Args<'_> {
    pub(crate) fn dims(&self, i: usize) -> &[usize] {
        self.ins[i].1.dims()
    }
    pub(crate) fn src(&self, i: usize) -> usize {
        self.ins[i].0.offset
    }
    pub(crate) fn dst(&self) -> usize {
        self.out.0.offset
    }
    pub(crate) fn odims(&self) -> &[usize] {
        self.out.1.dims()
    }
}

/// Whether the op needs a kernel: sources have their data put in the arena, and views
/// (flatten, reshape, inference-mode dropout) share their input's storage.
pub fn needs_kernel(op: &Op) -> bool {
    !matches!(op, Op::Input(_) | Op::Param { .. }) && !is_view(op)
}

/// The window geometry of a node of a graph: shape inference computed the same geometry
/// (`kiln_ir::geometry`) when the node was added and refused it if it failed, so this cannot
/// fail for a node of a `Graph`.
pub(crate) fn validated(g: Result<Window2d, String>) -> Window2d {
    g.expect("the window geometry was checked by shape inference when the node was added")
}

/// The explicit `[top, left, bottom, right]` padding of a convolution.
fn conv_pads(c: &kiln_ir::Conv2d, x: &[usize], w: &[usize]) -> [usize; 4] {
    validated(c.geometry(x, [w[2], w[3]])).pad
}

/// Elements of scratch memory the op's kernels need: the zero-padded copy of the input of a
/// register-blocked convolution (so every column of every row is interior), followed by
/// `SLACK` elements that a last, partial column block may read at stride 1 (a full vector
/// load whose extra lanes are computed and dropped; at other strides it loads only its
/// columns). Taken when the convolution pads or its output width is not a multiple of 4.
/// Checked arithmetic: an error when the padded copy has more than `MAX_ELEMENTS` elements.
pub fn scratch_len(op: &Op, ins: &[&TensorType], out: &TensorType) -> Result<usize, String> {
    match op {
        Op::Conv2d(c) if conv_blocked(c, ins[1].dims()) => {
            let (x, p) = (ins[0].dims(), conv_pads(c, ins[0].dims(), ins[1].dims()));
            if p == [0; 4] && out.dims()[3].is_multiple_of(4) {
                return Ok(0);
            }
            let hp = x[2].checked_add(p[0]).and_then(|v| v.checked_add(p[2]));
            let wp = x[3].checked_add(p[1]).and_then(|v| v.checked_add(p[3]));
            let padded = match (hp, wp) {
                (Some(hp), Some(wp)) => kiln_ir::limits::check_dims(&[x[0], x[1], hp, wp])?,
                _ => return Err(format!("the padding {p:?} of an input {x:?} overflows")),
            };
            // ≤ 2³¹ + SLACK: no overflow
            Ok(padded + SLACK)
        }
        _ => Ok(0),
    }
}

/// Elements after a blocked convolution's padded input copy: a stride-1 vector load of the
/// last partial block reads at most 3 elements past the last row.
const SLACK: usize = 4;

/// How many kernels the op lowers to, run one after the other (`emit`'s `phase`).
pub fn phases(op: &Op, ins: &[&TensorType], out: &TensorType) -> usize {
    if matches!(scratch_len(op, ins, out), Ok(n) if n > 0) {
        2
    } else {
        1
    }
}

/// Writes the body of the op's kernel number `phase` and returns the size of its outermost
/// parallel loop (the `end` the entry passes). Each arm picks a lowering and states its extent
/// together, so the two cannot disagree.
pub fn emit(e: &mut Emitter, op: &Op, a: &Args, phase: usize) -> usize {
    let od = a.odims().to_vec();
    let numel = a.out.1.shape.numel();
    let planes = || od[0] * od[1];
    match op {
        Op::Input(_) | Op::Param { .. } | Op::Flatten { .. } | Op::Reshape { .. } | Op::Dropout { .. } => 0,
        Op::Conv2d(c) if conv_blocked(c, a.dims(1)) && a.scratch.is_some() => {
            let pads = conv_pads(c, a.dims(0), a.dims(1));
            let scratch = a.scratch.expect("checked");
            let x = a.dims(0);
            if phase == 0 {
                pad_planes(e, a, pads, scratch.offset);
                return x[0] * x[1];
            }
            let padded = TensorType::f32([x[0], x[1], x[2] + pads[0] + pads[2], x[3] + pads[1] + pads[3]]);
            let mut ins = a.ins.to_vec();
            ins[0] = (scratch, padded);
            let inner = Args {
                ins: &ins,
                scratch: None,
                ..*a
            };
            conv2d_blocked(
                e,
                &inner,
                &kiln_ir::Conv2d {
                    padding: kiln_ir::Padding::Explicit([0; 4]),
                    ..c.clone()
                },
                true,
            );
            planes() / CO_BLOCK
        }
        Op::Conv2d(c) if conv_blocked(c, a.dims(1)) => {
            conv2d_blocked(e, a, c, false);
            planes() / CO_BLOCK
        }
        Op::Conv2d(c) if a.tier.direct() && depthwise_direct(c, a.dims(1)) => {
            depthwise_avx512(e, a, c);
            planes()
        }
        Op::Conv2d(c) => {
            conv2d(e, a, c);
            planes()
        }
        Op::ConvTranspose2d(c) => {
            conv_transpose2d(e, a, c);
            planes()
        }
        Op::Pool2d(p) if a.tier.direct() => {
            pool2d_avx512(e, a, p);
            planes()
        }
        Op::Pool2d(p) => {
            pool2d(e, a, p);
            planes()
        }
        Op::GlobalPool(kind) if a.tier.direct() => {
            global_pool_avx512(e, a, *kind);
            planes()
        }
        Op::GlobalPool(kind) => {
            global_pool(e, a, *kind);
            planes()
        }
        Op::AdaptivePool { kind, output } => {
            adaptive_pool(e, a, *kind, *output);
            planes()
        }
        Op::Activation(act) => {
            let act = *act;
            map_unary(e, a, &move |e, ty, x| activation(e, ty, x, act));
            numel
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            softmax(e, a, *axis, matches!(op, Op::LogSoftmax { .. }));
            let ax = normalize_axis(*axis, od.len(), false).unwrap_or(0);
            numel / od[ax].max(1)
        }
        Op::Dense if a.tier.direct() => {
            dense_avx512(e, a);
            od[1]
        }
        Op::Dense => {
            dense(e, a);
            planes()
        }
        Op::MatMul => {
            matmul(e, a);
            matmul_dims(a.dims(0), a.dims(1)).rows()
        }
        Op::Transpose { perm } => {
            transpose(e, a, perm);
            numel
        }
        Op::Binary(b) if crate::lower_reduce::binary_by_rows(a) => {
            let op = *b;
            crate::lower_reduce::binary_rows(e, a, &move |e, x, y| apply_binary(e, op, x, y))
        }
        Op::Binary(b) => {
            binary(e, a, *b);
            numel
        }
        Op::Concat { axis } => {
            concat(e, a, *axis);
            let ax = normalize_axis(*axis, od.len(), false).unwrap_or(0);
            od[..ax].iter().product()
        }
        Op::BatchNorm { epsilon } => {
            batch_norm(e, a, *epsilon);
            planes()
        }
        Op::Loss(kind) => {
            loss(e, a, *kind);
            1
        }
        Op::Im2Col(c) => {
            im2col(e, a, c);
            a.dims(0)[0] * a.dims(0)[1] * c.kernel[0] * c.kernel[1]
        }
        Op::Gemm(_) => {
            let d = a.gemm.expect("compile builds a GemmDesc for every gemm node");
            call_gemm_driver(e, a, d);
            d.items()
        }
        Op::Rsqrt { epsilon } => {
            let eps = *epsilon;
            map_unary(e, a, &move |e, ty, x| {
                let eps = e.constant(ty, eps);
                let one = e.constant(ty, 1.0);
                let s = e.b.ins().fadd(x, eps);
                let s = e.b.ins().sqrt(s);
                e.b.ins().fdiv(one, s)
            });
            numel
        }
        Op::Lrn { .. } | Op::ReduceMean { .. } => crate::lower_reduce::emit(e, op, a),
        Op::Slice { axis, start, .. } => {
            let ax = normalize_axis(*axis, a.odims().len(), false).unwrap_or(0);
            crate::lower_train::slice(e, a, ax, *start);
            numel
        }
        Op::Scale { factor } => {
            crate::lower_train::scale(e, a, *factor);
            numel
        }
        Op::Train(t) => crate::lower_train::emit(e, t, a),
    }
}

// ---------------------------------------------------------------------------------------------
// im2col + GEMM

/// The geometry of an `im2col` over an input of dims `x`.
pub fn patch_geom(c: &Im2Col, x: &[usize], out: &[usize]) -> PatchGeom {
    let p = c.padding;
    let ow = validated(c.geometry(x)).output[1];
    PatchGeom {
        h: x[2],
        w: x[3],
        kh: c.kernel[0],
        kw: c.kernel[1],
        stride: c.stride,
        dilation: c.dilation,
        pad: [p[0], p[1]],
        oh: out[2].checked_div(ow).unwrap_or(0),
        ow,
    }
}

/// The driver's description of a `gemm` node whose inputs live at `ins` and output at `out`;
/// `patches` is the `im2col` (its attributes and its input) when B is one the driver packs
/// from directly. `want` is how many work items to aim for (a few per thread); `status` is the
/// byte offset of the node's status word. An error when the micro-kernel's tile does not fit
/// the driver (`MicroKernel::check`): refused at compile time rather than at run time.
pub fn gemm_desc(
    g: &Gemm,
    ins: &[(Slot, TensorType)],
    out: Slot,
    patches: Option<(&Im2Col, Slot, &TensorType)>,
    kernel: MicroKernel,
    want: usize,
    status: usize,
) -> Result<GemmDesc, String> {
    let (ad, bd) = (ins[0].1.dims(), ins[1].1.dims());
    // the AVX-512 tier has tiles of several shapes: the one that pads this product least
    #[cfg(target_arch = "x86_64")]
    let kernel = if (kernel.mr, kernel.nr) == (crate::gemm_avx512::MR, crate::gemm_avx512::NR) {
        crate::gemm_avx512::tile_for(ad[0] / g.groups.max(1), bd[2])
    } else {
        kernel
    };
    kernel.check()?;
    let b = match patches {
        Some((c, slot, ty)) => BArena::Patches {
            offset: slot.offset,
            channels: ty.dims()[1],
            geom: patch_geom(c, ty.dims(), bd),
        },
        None => BArena::Matrix {
            offset: ins[1].0.offset,
        },
    };
    let mut d = GemmDesc {
        kernel,
        epilogue: None,
        blocking: Blocking::for_host(&kernel),
        batch: bd[0],
        groups: g.groups,
        mg: ad[0] / g.groups,
        kg: ad[1],
        l: bd[2],
        a: ins[0].0.offset,
        b,
        c: out.offset,
        bias: g.bias.then(|| ins[2].0.offset),
        residual: g.residual.then(|| ins[ins.len() - 1].0.offset),
        m_step: 1,
        n_step: 1,
        status,
    };
    d.split(want);
    Ok(d)
}

/// The `gemm` kernel: a call to the Rust driver with the node's description.
fn call_gemm_driver(e: &mut Emitter, a: &Args, d: &GemmDesc) {
    let mut sig = cranelift_codegen::ir::Signature::new(e.b.func.signature.call_conv);
    for _ in 0..4 {
        sig.params.push(cranelift_codegen::ir::AbiParam::new(
            cranelift_codegen::ir::types::I64,
        ));
    }
    let sig = e.b.import_signature(sig);
    let f = e.iconst(crate::gemm::kiln_gemm_run as *const () as usize as i64);
    let desc = e.iconst(d as *const GemmDesc as usize as i64);
    e.b.ins().call_indirect(sig, f, &[desc, a.arena, a.begin, a.end]);
}

/// A `gemm` node's epilogue `fn(c, residual, bias, rows, cols, ld_bytes)` (`gemm::EpilogueFn`):
/// adds the bias and the residual and applies the activation, on a block of C the driver has
/// just finished, four columns at a time.
pub fn emit_gemm_epilogue(e: &mut Emitter, p: &[Value], g: &Gemm) {
    let [c, res, bias, rows, cols, ld] = [p[0], p[1], p[2], p[3], p[4], p[5]];
    let zero = e.iconst(0);
    let vend = vector_split(e, zero, cols);
    e.for_range(zero, rows, 1, |e, r| {
        let row_off = e.b.ins().imul(r, ld);
        let crow = e.b.ins().iadd(c, row_off);
        let rrow = e.b.ins().iadd(res, row_off);
        let bv = if g.bias {
            let at = e.addr(bias, r, 4);
            Some(e.load(F32, at))
        } else {
            None
        };
        for (lo, hi, step, ty) in [(zero, vend, 4, F32X4), (vend, cols, 1, F32)] {
            e.for_range(lo, hi, step, |e, j| {
                let pc = e.addr(crow, j, 4);
                let mut v = e.load(ty, pc);
                if let Some(b) = bv {
                    let b = if ty == F32X4 { e.b.ins().splat(F32X4, b) } else { b };
                    v = e.b.ins().fadd(v, b);
                }
                if g.residual {
                    let pr = e.addr(rrow, j, 4);
                    let rv = e.load(ty, pr);
                    v = e.b.ins().fadd(v, rv);
                }
                let v = epilogue(e, ty, v, g.activation);
                e.store(v, pc);
            });
        }
    });
}

/// A materialized patch matrix (an `im2col` read by something other than a `gemm`),
/// parallel over its rows `(n, c, i, j)`.
fn im2col(e: &mut Emitter, a: &Args, c: &Im2Col) {
    let x = a.dims(0).to_vec();
    let g = patch_geom(c, &x, a.odims());
    let (src, dst, arena) = (a.src(0), a.dst(), a.arena);
    let l = (g.oh * g.ow) as i64;
    e.for_range(a.begin, a.end, 1, |e, row| {
        let ix = split(e, row, &[x[0] * x[1], g.kh, g.kw]);
        let (plane, i, j) = (ix[0], ix[1], ix[2]);
        let base = e.b.ins().imul_imm_s(plane, (g.h * g.w) as i64);
        let out_row = e.b.ins().imul_imm_s(row, l);
        e.for_const(0, g.oh as i64, |e, oy| {
            let iy = e.b.ins().imul_imm_s(oy, g.stride[0] as i64);
            let t = e.b.ins().imul_imm_s(i, g.dilation[0] as i64);
            let iy = e.b.ins().iadd(iy, t);
            let iy = e.b.ins().iadd_imm_s(iy, -(g.pad[0] as i64));
            let row_ok = in_range(e, iy, g.h);
            e.for_const(0, g.ow as i64, |e, ox| {
                let ixx = e.b.ins().imul_imm_s(ox, g.stride[1] as i64);
                let t = e.b.ins().imul_imm_s(j, g.dilation[1] as i64);
                let ixx = e.b.ins().iadd(ixx, t);
                let ixx = e.b.ins().iadd_imm_s(ixx, -(g.pad[1] as i64));
                let col_ok = in_range(e, ixx, g.w);
                let ok = e.b.ins().band(row_ok, col_ok);
                let zero = e.fconst(0.0);
                let v = e.var(F32, zero);
                e.if_then(ok, |e| {
                    let at = e.b.ins().imul_imm_s(iy, g.w as i64);
                    let at = e.b.ins().iadd(at, ixx);
                    let at = e.b.ins().iadd(at, base);
                    let x = load_f(e, arena, src, at);
                    e.b.def_var(v, x);
                });
                let col = e.b.ins().imul_imm_s(oy, g.ow as i64);
                let col = e.b.ins().iadd(col, ox);
                let col = e.b.ins().iadd(col, out_row);
                let val = e.b.use_var(v);
                store_f(e, arena, dst, col, val);
            });
        });
    });
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Splits a flat index into its coordinates for `dims` (row-major).
pub(crate) fn split(e: &mut Emitter, idx: Value, dims: &[usize]) -> Vec<Value> {
    let mut out = vec![idx; dims.len()];
    let mut rest = idx;
    for (i, &d) in dims.iter().enumerate().rev() {
        if i == 0 {
            out[0] = rest;
        } else {
            out[i] = e.b.ins().urem_imm_s(rest, d as i64);
            rest = e.b.ins().udiv_imm_s(rest, d as i64);
        }
    }
    out
}

fn hsum(e: &mut Emitter, v: Value) -> Value {
    let l0 = e.b.ins().extractlane(v, 0);
    let l1 = e.b.ins().extractlane(v, 1);
    let l2 = e.b.ins().extractlane(v, 2);
    let l3 = e.b.ins().extractlane(v, 3);
    let s0 = e.b.ins().fadd(l0, l1);
    let s1 = e.b.ins().fadd(l2, l3);
    e.b.ins().fadd(s0, s1)
}

/// `[begin, vend)` in steps of 4 and `[vend, end)` one by one.
fn vector_split(e: &mut Emitter, begin: Value, end: Value) -> Value {
    let len = e.b.ins().isub(end, begin);
    let vlen = e.b.ins().band_imm_s(len, !3);
    e.b.ins().iadd(begin, vlen)
}

type UnaryFn<'f> = &'f dyn Fn(&mut Emitter, Type, Value) -> Value;

fn map_unary(e: &mut Emitter, a: &Args, f: UnaryFn) {
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

fn activation(e: &mut Emitter, ty: Type, x: Value, act: Activation) -> Value {
    match act {
        Activation::Relu => e.relu(ty, x),
        Activation::LeakyRelu { alpha } => {
            let al = e.constant(ty, alpha);
            let zero = e.constant(ty, 0.0);
            let neg = e.b.ins().fmul(x, al);
            e.select_lt(ty, x, zero, neg, x)
        }
        Activation::Sigmoid => {
            let nx = e.b.ins().fneg(x);
            let ex = e.exp(ty, nx);
            let one = e.constant(ty, 1.0);
            let d = e.b.ins().fadd(one, ex);
            e.b.ins().fdiv(one, d)
        }
        Activation::Tanh => {
            // tanh x = 1 − 2/(e^{2x} + 1), which cancels near 0 (a relative error of 1e-3 at
            // x = 1e-4, and x/tanh(x) then differs from the interpreter's); below |x| = 1/8 the
            // odd Taylor polynomial to x⁷ (truncation below 2e-9 relative) instead
            let two = e.constant(ty, 2.0);
            let one = e.constant(ty, 1.0);
            let x2 = e.b.ins().fmul(x, two);
            let ex = e.exp(ty, x2);
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
        Activation::Clip { .. } | Activation::HardSigmoid { .. } | Activation::Erf => {
            crate::lower_reduce::activation(e, ty, x, act)
        }
    }
}

/// `ln(x)` for scalar `x > 0`: `x = 2ᵏ·m` with `m ∈ [√½, √2)`, `ln m = 2·atanh((m−1)/(m+1))`.
fn ln(e: &mut Emitter, x: Value) -> Value {
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

pub(crate) fn load_f(e: &mut Emitter, arena: Value, off: usize, idx: Value) -> Value {
    let p = e.elem(arena, off, idx);
    e.load(F32, p)
}

pub(crate) fn store_f(e: &mut Emitter, arena: Value, off: usize, idx: Value, v: Value) {
    let p = e.elem(arena, off, idx);
    e.store(v, p);
}

/// `acc += Σ_i x[xo + i]·w[wo + i]` over `len` contiguous elements, vectorized.
pub(crate) fn dot(e: &mut Emitter, arena: Value, x: (usize, Value), w: (usize, Value), len: usize) -> Value {
    let zero = e.vconst(0.0);
    let acc = e.var(F32X4, zero);
    let vlen = (len / 4 * 4) as i64;
    let (lo, hi) = (e.iconst(0), e.iconst(vlen));
    e.for_range(lo, hi, 4, |e, i| {
        let xi = e.b.ins().iadd(x.1, i);
        let wi = e.b.ins().iadd(w.1, i);
        let px = e.elem(arena, x.0, xi);
        let pw = e.elem(arena, w.0, wi);
        let xv = e.load(F32X4, px);
        let wv = e.load(F32X4, pw);
        let s = e.b.use_var(acc);
        let s = e.b.ins().fma(xv, wv, s);
        e.b.def_var(acc, s);
    });
    let v = e.b.use_var(acc);
    let total = hsum(e, v);
    let tacc = e.var(F32, total);
    let (lo, hi) = (e.iconst(vlen), e.iconst(len as i64));
    e.for_range(lo, hi, 1, |e, i| {
        let xi = e.b.ins().iadd(x.1, i);
        let wi = e.b.ins().iadd(w.1, i);
        let xv = load_f(e, arena, x.0, xi);
        let wv = load_f(e, arena, w.0, wi);
        let s = e.b.use_var(tacc);
        let s = e.b.ins().fma(xv, wv, s);
        e.b.def_var(tacc, s);
    });
    e.b.use_var(tacc)
}

/// `lo ≤ v < lo + n` tested as one unsigned compare of `v − lo` against `n`.
pub(crate) fn in_range(e: &mut Emitter, v: Value, n: usize) -> Value {
    let nn = e.iconst(n as i64);
    e.b.ins().icmp(IntCC::UnsignedLessThan, v, nn)
}

// ---------------------------------------------------------------------------------------------
// convolution

/// A convolution's fused activation applied to `v` (`F32` or `F32X4`) before it is stored.
fn epilogue(e: &mut Emitter, ty: Type, v: Value, act: Option<Activation>) -> Value {
    match act {
        Some(a) => activation(e, ty, v, a),
        None => v,
    }
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
        let rows = window_taps(e, y, (g.s[0], g.d[0]), (g.pad[0], 0), g.h, g.kh);
        let (c0, c1) = if ty == F32X4 {
            (e.iconst(0), e.iconst(g.kw as i64))
        } else {
            let cols = window_taps(e, x, (g.s[1], g.d[1]), (g.pad[1], 0), g.w, g.kw);
            (cols.lo, cols.hi)
        };
        e.for_const(0, g.cg as i64, |e, ci| {
            let xc = e.b.ins().imul_imm_s(ci, (g.h * g.w) as i64);
            let xc = e.b.ins().iadd(x_base, xc);
            let wc = e.b.ins().imul_imm_s(ci, (g.kh * g.kw) as i64);
            let wc = e.b.ins().iadd(w_base, wc);
            e.for_range(rows.lo, rows.hi, 1, |e, ky| {
                let t = e.b.ins().imul_imm_s(ky, g.d[0] as i64);
                let ih = e.b.ins().iadd(rows.start, t);
                let row = e.b.ins().imul_imm_s(ih, g.w as i64);
                let row = e.b.ins().iadd(row, xc);
                e.for_range(c0, c1, 1, |e, kx| {
                    let iw = e.b.ins().imul_imm_s(x, g.s[1] as i64);
                    let t = e.b.ins().imul_imm_s(kx, g.d[1] as i64);
                    let iw = e.b.ins().iadd(iw, t);
                    let iw = e.b.ins().iadd_imm_s(iw, -(g.pad[1] as i64));
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
        let ys = e.b.ins().imul_imm_s(y, g.s[0] as i64);
        let xs = e.b.ins().imul_imm_s(x, g.s[1] as i64);
        e.for_const(0, g.cg as i64, |e, ci| {
            let xc = e.b.ins().imul_imm_s(ci, (g.h * g.w) as i64);
            let xc = e.b.ins().iadd(x_base, xc);
            let wc = e.b.ins().imul_imm_s(ci, (g.kh * g.kw) as i64);
            let wc = e.b.ins().iadd(w_base, wc);
            for ky in 0..g.kh {
                let ih = e.b.ins().iadd_imm_s(ys, (ky * g.d[0]) as i64 - g.pad[0] as i64);
                let ok = in_range(e, ih, g.h);
                e.if_then(ok, |e| {
                    let row = e.b.ins().imul_imm_s(ih, g.w as i64);
                    let row = e.b.ins().iadd(row, xc);
                    let row = e.b.ins().iadd(row, xs);
                    for kx in 0..g.kw {
                        let xi = e.b.ins().iadd_imm_s(row, (kx * g.d[1]) as i64 - g.pad[1] as i64);
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
fn conv2d(e: &mut Emitter, a: &Args, c: &kiln_ir::Conv2d) {
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
const CO_BLOCK: usize = 4;
/// Output columns per register block (two `f32x4`).
const X_BLOCK: usize = 8;

/// Whether a convolution takes the register-blocked path: each group's output channels come
/// in whole blocks of `CO_BLOCK`.
fn conv_blocked(c: &kiln_ir::Conv2d, w: &[usize]) -> bool {
    (w[0] / c.groups.max(1)).is_multiple_of(CO_BLOCK)
}

/// Register-blocked direct convolution, parallel over (batch, block of 4 output channels).
/// Interior columns (every tap inside the row) are computed 4 channels × 8 columns at a time:
/// 8 `f32x4` accumulators, each input vector reused by 4 broadcast weights. The border
/// columns take the scalar path of [`ConvGeom::accumulate`].
/// `tail`: the input is a scratch copy followed by the slack `scratch_len` reserves, so a
/// last partial block may read past the end of a row.
fn conv2d_blocked(e: &mut Emitter, a: &Args, c: &kiln_ir::Conv2d, tail: bool) {
    let geom = ConvGeom::new(a, c);
    let ConvGeom {
        h,
        w,
        kh,
        kw,
        cg,
        s,
        d,
        pad: [ph, pw],
        ..
    } = geom;
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
                let x0 = e.b.ins().imul_imm_s(x, s[1] as i64);
                let x0 = e.b.ins().iadd_imm_s(x0, -(pw as i64));
                // the kernel rows inside the input only (a tall padding costs nothing)
                let rows = window_taps(e, y, (s[0], d[0]), (ph, 0), h, kh);
                e.for_const(0, cg as i64, |e, ci| {
                    let xc = e.b.ins().imul_imm_s(ci, (h * w) as i64);
                    let xc = e.b.ins().iadd(x_base, xc);
                    let wc = e.b.ins().imul_imm_s(ci, (kh * kw) as i64);
                    e.for_range(rows.lo, rows.hi, 1, |e, ky| {
                        let t = e.b.ins().imul_imm_s(ky, d[0] as i64);
                        let ih = e.b.ins().iadd(rows.start, t);
                        {
                            let row = e.b.ins().imul_imm_s(ih, w as i64);
                            let row = e.b.ins().iadd(row, xc);
                            let row = e.b.ins().iadd(row, x0);
                            let wk = e.b.ins().imul_imm_s(ky, kw as i64);
                            let wk = e.b.ins().iadd(wk, wc);
                            taps(e, kw, UNROLL_KW, |e, kx| {
                                let col = kx.add_scaled(e, row, d[1]);
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
/// convolution along one axis, and whether it exists: `o + pad − k·d` must be a non-negative
/// multiple of the stride `s` whose quotient is below the input size `n`.
fn transposed_tap(
    e: &mut Emitter,
    o: Value,
    k: Value,
    pad: usize,
    d: usize,
    s: usize,
    n: usize,
) -> (Value, Value) {
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
fn transposed_taps(
    e: &mut Emitter,
    o: Value,
    pad: usize,
    (s, d): (usize, usize),
    n: usize,
    k: usize,
) -> (Value, Value) {
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

fn conv_transpose2d(e: &mut Emitter, a: &Args, c: &kiln_ir::ConvTranspose2d) {
    let [_, ci, h, w] = dims4(a.dims(0));
    let [_, cog, kh, kw] = dims4(a.dims(1));
    let [_, co, oh, ow] = dims4(a.odims());
    let cig = ci / c.groups;
    let (arena, xo, wo, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let bias = a.ins.get(2).map(|s| s.0.offset);
    let (s, d, p) = (c.stride, c.dilation, c.padding);
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
                let (ky0, ky1) = transposed_taps(e, y, p[0], (s[0], d[0]), h, kh);
                let (kx0, kx1) = transposed_taps(e, x, p[1], (s[1], d[1]), w, kw);
                e.for_range(ky0, ky1, 1, |e, ky| {
                    let (q, ok) = transposed_tap(e, y, ky, p[0], d[0], s[0], h);
                    e.if_then(ok, |e| {
                        e.for_range(kx0, kx1, 1, |e, kx| {
                            let (qx, ok) = transposed_tap(e, x, kx, p[1], d[1], s[1], w);
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

pub(crate) fn dims4(d: &[usize]) -> [usize; 4] {
    [d[0], d[1], d[2], d[3]]
}

/// Copies each input plane into the zero-padded plane at `dst` (padding `[t, l, b, r]`).
fn pad_planes(e: &mut Emitter, a: &Args, p: [usize; 4], dst: usize) {
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

// ---------------------------------------------------------------------------------------------
// pooling

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
    let os = e.b.ins().imul_imm_s(o, s as i64);
    let start = e.b.ins().iadd_imm_s(os, -(pad_begin as i64));
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
    // padded = min(⌈(P − o·s)/d⌉, kernel), or 0 when P ≤ o·s, for P the padded size
    let p = e.iconst((n + pad_begin + pad_end) as i64);
    let rp = e.b.ins().isub(p, os);
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
        let ih = e.b.ins().imul_imm_s(ky, d[0] as i64);
        let ih = e.b.ins().iadd(rows.start, ih);
        e.for_range(cols.lo, cols.hi, 1, |e, kx| {
            let iw = e.b.ins().imul_imm_s(kx, d[1] as i64);
            let iw = e.b.ins().iadd(cols.start, iw);
            body(e, ih, iw);
        });
    });
}

/// Pooling, parallel over planes; each window visits its real taps only (`window_taps`), and
/// average pooling divides by the count of real or padded taps, in closed form.
fn pool2d(e: &mut Emitter, a: &Args, p: &kiln_ir::Pool2d) {
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

fn global_pool(e: &mut Emitter, a: &Args, kind: ReduceKind) {
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
fn adaptive_pool(e: &mut Emitter, a: &Args, kind: ReduceKind, output: [usize; 2]) {
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

// ---------------------------------------------------------------------------------------------
// softmax, dense, matmul

/// The maximum `m` of `len` elements of the tensor at `off` (element `j` at index `at(j)`) and
/// `Σ exp(x − m)`, both NaN-propagating; with `store`, each `exp(x − m)` is also written to the
/// tensor at `store`, same index. The numerically stable core of softmax and cross-entropy.
pub(crate) fn max_and_sum_exp(
    e: &mut Emitter,
    arena: Value,
    off: usize,
    len: usize,
    at: &dyn Fn(&mut Emitter, Value) -> Value,
    store: Option<usize>,
) -> (Value, Value) {
    let ninf = e.fconst(f32::NEG_INFINITY);
    let mx = e.var(F32, ninf);
    e.for_const(0, len as i64, |e, j| {
        let k = at(e, j);
        let v = load_f(e, arena, off, k);
        let m = e.b.use_var(mx);
        let m = e.max_nan(m, v);
        e.b.def_var(mx, m);
    });
    let m = e.b.use_var(mx);
    let zero = e.fconst(0.0);
    let sum = e.var(F32, zero);
    e.for_const(0, len as i64, |e, j| {
        let k = at(e, j);
        let v = load_f(e, arena, off, k);
        let t = e.b.ins().fsub(v, m);
        let ex = e.exp(F32, t);
        if let Some(out) = store {
            store_f(e, arena, out, k, ex);
        }
        let acc = e.b.use_var(sum);
        let acc = e.b.ins().fadd(acc, ex);
        e.b.def_var(sum, acc);
    });
    (m, e.b.use_var(sum))
}

fn softmax(e: &mut Emitter, a: &Args, axis: i64, log: bool) {
    let d = a.odims();
    let ax = normalize_axis(axis, d.len(), false).unwrap_or(0);
    let len = d[ax];
    let inner: usize = d[ax + 1..].iter().product();
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, row| {
        // row = outer·inner + i; element j of the row is at outer·len·inner + j·inner + i
        let outer = e.b.ins().udiv_imm_s(row, inner as i64);
        let i = e.b.ins().urem_imm_s(row, inner as i64);
        let base = e.b.ins().imul_imm_s(outer, (len * inner) as i64);
        let base = e.b.ins().iadd(base, i);
        let at = |e: &mut Emitter, j: Value| {
            let t = e.b.ins().imul_imm_s(j, inner as i64);
            e.b.ins().iadd(base, t)
        };
        let (m, s) = max_and_sum_exp(e, arena, xo, len, &at, (!log).then_some(yo));
        let lse = if log { ln(e, s) } else { s };
        e.for_const(0, len as i64, |e, j| {
            let k = at(e, j);
            let v = if log {
                let v = load_f(e, arena, xo, k);
                let t = e.b.ins().fsub(v, m);
                e.b.ins().fsub(t, lse)
            } else {
                let v = load_f(e, arena, yo, k);
                e.b.ins().fdiv(v, s)
            };
            store_f(e, arena, yo, k, v);
        });
    });
}

fn dense(e: &mut Emitter, a: &Args) {
    let i_len = a.dims(0)[1];
    let o_len = a.odims()[1];
    let (arena, xo, wo, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let bias = a.ins.get(2).map(|s| s.0.offset);
    e.for_range(a.begin, a.end, 1, |e, idx| {
        let n = e.b.ins().udiv_imm_s(idx, o_len as i64);
        let o = e.b.ins().urem_imm_s(idx, o_len as i64);
        let xr = e.b.ins().imul_imm_s(n, i_len as i64);
        let wr = e.b.ins().imul_imm_s(o, i_len as i64);
        let mut v = dot(e, arena, (xo, xr), (wo, wr), i_len);
        if let Some(bo) = bias {
            let b = load_f(e, arena, bo, o);
            v = e.b.ins().fadd(v, b);
        }
        store_f(e, arena, yo, idx, v);
    });
}

/// Matmul operands seen as batches of matrices: `a [batch…, m, k]`, `b [batch…, k, n]`.
struct MatMulDims {
    batch: Vec<usize>,
    a_batch_strides: Vec<usize>,
    b_batch_strides: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

impl MatMulDims {
    fn rows(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m
    }
}

fn matmul_dims(ad: &[usize], bd: &[usize]) -> MatMulDims {
    let a: Vec<usize> = if ad.len() == 1 {
        vec![1, ad[0]]
    } else {
        ad.to_vec()
    };
    let b: Vec<usize> = if bd.len() == 1 {
        vec![bd[0], 1]
    } else {
        bd.to_vec()
    };
    let (m, k, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
    let (ab, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
    let r = ab.len().max(bb.len());
    let pad = |x: &[usize]| -> Vec<usize> {
        let mut v = vec![1; r - x.len()];
        v.extend_from_slice(x);
        v
    };
    let (ab, bb) = (pad(ab), pad(bb));
    // broadcast: equal dims, or a 1 that takes the other's size (which may be 0: not `max`)
    let batch: Vec<usize> = ab
        .iter()
        .zip(&bb)
        .map(|(&x, &y)| if x == 1 { y } else { x })
        .collect();
    let strides = |x: &[usize], mat: usize| -> Vec<usize> {
        let mut s = vec![0; r];
        let mut acc = mat;
        for i in (0..r).rev() {
            s[i] = if x[i] == 1 { 0 } else { acc };
            acc *= x[i];
        }
        s
    };
    MatMulDims {
        a_batch_strides: strides(&ab, m * k),
        b_batch_strides: strides(&bb, k * n),
        batch,
        m,
        k,
        n,
    }
}

fn matmul(e: &mut Emitter, a: &Args) {
    let md = matmul_dims(a.dims(0), a.dims(1));
    let (arena, ao, bo, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let (m, k, n) = (md.m, md.k, md.n);
    e.for_range(a.begin, a.end, 1, |e, row| {
        let bidx = e.b.ins().udiv_imm_s(row, m as i64);
        let i = e.b.ins().urem_imm_s(row, m as i64);
        let coords = split(e, bidx, &md.batch);
        let mut a_off = e.b.ins().imul_imm_s(i, k as i64);
        let mut b_off = e.iconst(0);
        for (c, (&sa, &sb)) in coords
            .iter()
            .zip(md.a_batch_strides.iter().zip(&md.b_batch_strides))
        {
            let t = e.b.ins().imul_imm_s(*c, sa as i64);
            a_off = e.b.ins().iadd(a_off, t);
            let t = e.b.ins().imul_imm_s(*c, sb as i64);
            b_off = e.b.ins().iadd(b_off, t);
        }
        let y_row = e.b.ins().imul_imm_s(row, n as i64);
        e.for_const(0, n as i64, |e, j| {
            let zero = e.fconst(0.0);
            let acc = e.var(F32, zero);
            e.for_const(0, k as i64, |e, kk| {
                let ai = e.b.ins().iadd(a_off, kk);
                let bi = e.b.ins().imul_imm_s(kk, n as i64);
                let bi = e.b.ins().iadd(bi, j);
                let bi = e.b.ins().iadd(bi, b_off);
                let av = load_f(e, arena, ao, ai);
                let bv = load_f(e, arena, bo, bi);
                let s = e.b.use_var(acc);
                let s = e.b.ins().fma(av, bv, s);
                e.b.def_var(acc, s);
            });
            let yi = e.b.ins().iadd(y_row, j);
            let v = e.b.use_var(acc);
            store_f(e, arena, yo, yi, v);
        });
    });
}

// ---------------------------------------------------------------------------------------------
// layout and elementwise

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

fn binary(e: &mut Emitter, a: &Args, op: BinaryOp) {
    let apply = move |e: &mut Emitter, x: Value, y: Value| apply_binary(e, op, x, y);
    let od = a.odims().to_vec();
    let (arena, xo, yo, zo) = (a.arena, a.src(0), a.src(1), a.dst());
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

fn transpose(e: &mut Emitter, a: &Args, perm: &[usize]) {
    let od = a.odims().to_vec();
    let in_strides = kiln_ir::Shape::new(a.dims(0)).strides();
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, i| {
        let c = split(e, i, &od);
        let mut xi = e.iconst(0);
        for (k, ci) in c.iter().enumerate() {
            let t = e.b.ins().imul_imm_s(*ci, in_strides[perm[k]] as i64);
            xi = e.b.ins().iadd(xi, t);
        }
        // i32 tensors move as raw bits, so one f32 copy serves both dtypes
        let v = load_f(e, arena, xo, xi);
        store_f(e, arena, yo, i, v);
    });
}

fn copy(e: &mut Emitter, arena: Value, from: (usize, Value), to: (usize, Value), len: usize) {
    let vlen = (len / 4 * 4) as i64;
    for (lo, hi, step, ty) in [(0, vlen, 4, F32X4), (vlen, len as i64, 1, F32)] {
        let (l, h) = (e.iconst(lo), e.iconst(hi));
        e.for_range(l, h, step, |e, j| {
            let fi = e.b.ins().iadd(from.1, j);
            let ti = e.b.ins().iadd(to.1, j);
            let p = e.elem(arena, from.0, fi);
            let v = e.load(ty, p);
            let q = e.elem(arena, to.0, ti);
            e.store(v, q);
        });
    }
}

fn concat(e: &mut Emitter, a: &Args, axis: i64) {
    let od = a.odims();
    let ax = normalize_axis(axis, od.len(), false).unwrap_or(0);
    let tail: usize = od[ax + 1..].iter().product();
    let total = od[ax] * tail;
    let parts: Vec<(usize, usize)> = a
        .ins
        .iter()
        .map(|(s, t)| (s.offset, t.dims()[ax] * tail))
        .collect();
    let (arena, yo) = (a.arena, a.dst());
    e.for_range(a.begin, a.end, 1, |e, o| {
        let mut at = 0usize;
        for &(src, len) in &parts {
            let fi = e.b.ins().imul_imm_s(o, len as i64);
            let ti = e.b.ins().imul_imm_s(o, total as i64);
            let ti = e.b.ins().iadd_imm_s(ti, at as i64);
            copy(e, arena, (src, fi), (yo, ti), len);
            at += len;
        }
    });
}

fn batch_norm(e: &mut Emitter, a: &Args, eps: f32) {
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
                let q = e.elem(arena, yo, i);
                e.store(y, q);
            });
        }
    });
}

// ---------------------------------------------------------------------------------------------
// losses

fn loss(e: &mut Emitter, a: &Args, kind: LossKind) {
    let (arena, po, to, yo) = (a.arena, a.src(0), a.src(1), a.dst());
    let zero = e.fconst(0.0);
    let acc = e.var(F32, zero);
    let pd = a.dims(0).to_vec();
    let count = match kind {
        LossKind::Mse => {
            let n = a.ins[0].1.shape.numel();
            e.for_const(0, n as i64, |e, i| {
                let p = load_f(e, arena, po, i);
                let t = load_f(e, arena, to, i);
                let d = e.b.ins().fsub(p, t);
                let s = e.b.use_var(acc);
                let s = e.b.ins().fma(d, d, s);
                e.b.def_var(acc, s);
            });
            n
        }
        LossKind::CrossEntropy | LossKind::Nll => {
            let (n, k) = (pd[0], pd[1]);
            let ids = a.ins[1].1.dtype == DType::I32;
            e.for_const(0, n as i64, |e, r| {
                let row = e.b.ins().imul_imm_s(r, k as i64);
                // log-probabilities: z − logsumexp(z) for cross-entropy, z itself for nll
                let lse = if kind == LossKind::CrossEntropy {
                    let at = |e: &mut Emitter, c: Value| e.b.ins().iadd(row, c);
                    let (m, sum) = max_and_sum_exp(e, arena, po, k, &at, None);
                    let l = ln(e, sum);
                    e.b.ins().fadd(m, l)
                } else {
                    e.fconst(0.0)
                };
                if ids {
                    let p = e.elem(arena, to, r);
                    let id = e.b.ins().sload32(crate::codegen::mem(), p, 0);
                    // ids fed as inputs were range-checked before the run; ids computed in the
                    // graph are checked here, and a bad one fails the run
                    let ok = in_range(e, id, k);
                    let status = a
                        .status
                        .expect("the plan gives every classification loss a status word");
                    if_else(
                        e,
                        ok,
                        |e| {
                            let i = e.b.ins().iadd(row, id);
                            let z = load_f(e, arena, po, i);
                            let l = e.b.ins().fsub(lse, z);
                            let s = e.b.use_var(acc);
                            let s = e.b.ins().fadd(s, l);
                            e.b.def_var(acc, s);
                        },
                        |e| report_bad_index(e, arena, status, r, id),
                    );
                } else {
                    e.for_const(0, k as i64, |e, c| {
                        let i = e.b.ins().iadd(row, c);
                        let z = load_f(e, arena, po, i);
                        let y = load_f(e, arena, to, i);
                        let l = e.b.ins().fsub(lse, z);
                        let s = e.b.use_var(acc);
                        let s = e.b.ins().fma(y, l, s);
                        e.b.def_var(acc, s);
                    });
                }
            });
            n
        }
    };
    // the mean: over all elements for mse, over the batch for the classification losses
    let s = e.b.use_var(acc);
    let c = e.fconst(count as f32);
    let v = e.b.ins().fdiv(s, c);
    let i0 = e.iconst(0);
    store_f(e, arena, yo, i0, v);
}

// ---------------------------------------------------------------------------------------------
// the AVX-512 tier of the direct kernels (`direct_avx512`)

/// The kernel calls the Rust function `f(desc, arena, begin, end)` with `desc` stored in a
/// stack slot of the kernel (its words are compile-time constants).
fn call_direct<D: direct::Words>(e: &mut Emitter, a: &Args, f: usize, desc: &D) {
    use cranelift_codegen::ir::types::I64;
    use cranelift_codegen::ir::{AbiParam, StackSlotData, StackSlotKind};
    let words = desc.words();
    let slot = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (words.len() * 8) as u32,
        3,
    ));
    let p = e.b.ins().stack_addr(I64, slot, 0);
    for (i, &w) in words.iter().enumerate() {
        let v = e.iconst(w as i64);
        e.b.ins().store(crate::codegen::mem(), v, p, (i * 8) as i32);
    }
    let mut sig = cranelift_codegen::ir::Signature::new(e.b.func.signature.call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    let sig = e.b.import_signature(sig);
    let f = e.iconst(f as i64);
    e.b.ins().call_indirect(sig, f, &[p, a.arena, a.begin, a.end]);
}

/// A byte offset as a description word.
fn word(off: usize) -> u64 {
    off as u64
}

/// Whether the AVX-512 depthwise kernel runs this convolution: one input channel per group
/// (depthwise, or a single-channel input), an activation it applies itself, and not the
/// register-blocked path (whose scratch the plan reserved).
fn depthwise_direct(c: &kiln_ir::Conv2d, w: &[usize]) -> bool {
    w[1] == 1
        && !conv_blocked(c, w)
        && matches!(
            c.activation,
            None | Some(Activation::Relu | Activation::LeakyRelu { .. })
        )
}

fn pool2d_avx512(e: &mut Emitter, a: &Args, p: &kiln_ir::Pool2d) {
    let geom = validated(p.geometry(a.dims(0)));
    let kind = match p.kind {
        PoolKind::Max => direct::POOL_MAX,
        PoolKind::Sum => direct::POOL_SUM,
        PoolKind::Avg {
            count_include_pad: false,
        } => direct::POOL_AVG,
        PoolKind::Avg {
            count_include_pad: true,
        } => direct::POOL_AVG_WITH_PAD,
    };
    let d = direct::PoolDesc {
        x: word(a.src(0)),
        y: word(a.dst()),
        planes: word(a.odims()[0] * a.odims()[1]),
        kind,
        win: direct::WindowDesc::new(&geom),
    };
    call_direct(e, a, direct::kiln_pool2d as *const () as usize, &d);
}

fn global_pool_avx512(e: &mut Emitter, a: &Args, kind: ReduceKind) {
    let [n, c, h, w] = dims4(a.dims(0));
    let d = direct::GlobalPoolDesc {
        x: word(a.src(0)),
        y: word(a.dst()),
        planes: word(n * c),
        len: word(h * w),
        max: u64::from(kind == ReduceKind::Max),
    };
    call_direct(e, a, direct::kiln_global_pool as *const () as usize, &d);
}

fn depthwise_avx512(e: &mut Emitter, a: &Args, c: &kiln_ir::Conv2d) {
    let (x, w) = (a.dims(0), a.dims(1));
    let geom = validated(c.geometry(x, [w[2], w[3]]));
    let (act, alpha) = match c.activation {
        Some(Activation::Relu) => (direct::ACT_RELU, 0.0),
        Some(Activation::LeakyRelu { alpha }) => (direct::ACT_LEAKY_RELU, alpha),
        _ => (direct::ACT_NONE, 0.0),
    };
    let d = direct::DepthwiseDesc {
        x: word(a.src(0)),
        w: word(a.src(1)),
        bias: a.ins.get(2).map_or(direct::NO_BIAS, |s| word(s.0.offset)),
        y: word(a.dst()),
        planes: word(a.odims()[0] * a.odims()[1]),
        cin: word(x[1]),
        cout: word(w[0]),
        cog: word(w[0] / c.groups),
        act,
        alpha: u64::from(alpha.to_bits()),
        win: direct::WindowDesc::new(&geom),
    };
    call_direct(e, a, direct::kiln_depthwise as *const () as usize, &d);
}

fn dense_avx512(e: &mut Emitter, a: &Args) {
    let d = direct::DenseDesc {
        x: word(a.src(0)),
        w: word(a.src(1)),
        bias: a.ins.get(2).map_or(direct::NO_BIAS, |s| word(s.0.offset)),
        y: word(a.dst()),
        batch: word(a.dims(0)[0]),
        inputs: word(a.dims(0)[1]),
        outputs: word(a.odims()[1]),
    };
    call_direct(e, a, direct::kiln_dense as *const () as usize, &d);
}
