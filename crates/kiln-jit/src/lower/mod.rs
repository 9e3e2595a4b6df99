//! Lowering: each op of the graph becomes one kernel `fn(arena, begin, end)` over its outermost
//! parallel loop (two for a convolution that first copies its input into a padded scratch:
//! `phases`). This module is the one place that states each op's lowering, one file per op
//! family (`conv`, `window`, `gemm`, `linear`, `elementwise`, `layout`, `softmax_loss`,
//! `direct`); `emit` writes a kernel's body and returns that loop's size from the same
//! exhaustive match over `Op`.
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

mod conv;
mod direct;
mod elementwise;
mod gemm;
mod layout;
mod linear;
mod softmax_loss;
mod window;

use crate::codegen::Emitter;
use crate::gemm::GemmDesc;
use crate::plan::{Slot, is_view};
use conv::{CO_BLOCK, conv_blocked, conv_pads, conv_transpose2d, conv2d, conv2d_blocked, pad_planes};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I32};
use cranelift_codegen::ir::{InstBuilder, Value};
use direct::{
    batch_norm_direct, dense_direct, depthwise_conv_direct, depthwise_fits_direct, direct_kernels,
    global_pool_direct, pool2d_direct,
};
use elementwise::{activation_kernel, apply_binary, batch_norm, binary, map_unary};
pub(crate) use elementwise::{broadcast_strides, sigmoid};
use gemm::{call_gemm_driver, im2col};
pub use gemm::{emit_gemm_epilogue, gemm_desc, patch_geom};
use kiln_ir::geometry::Window2d;
use kiln_ir::shape::normalize_axis;
use kiln_ir::{LossKind, Op, TensorType, TrainOp};
use layout::{concat, transpose};
use linear::{dense, matmul, matmul_dims};
pub(crate) use softmax_loss::max_and_sum_exp;
use softmax_loss::{loss, softmax};
pub(crate) use window::{adaptive_bounds, for_each_tap, real_taps, window_taps};
use window::{adaptive_pool, global_pool, pool2d};

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
    /// The kernel tier: its instruction set's Rust kernels of `crate::direct` (pooling,
    /// depthwise convolution, dense) where it has them (`Auto`: the widest set the CPU has).
    pub tier: crate::gemm::Tier,
}

/// Whether the op's kernel can fail at run time and reports it in a status word: an index read
/// from memory that is out of range (a scatter's id outside the plane, a loss's class id), and
/// the GEMM drivers of `gemm` and `conv2d_weight_grad` (Rust code called from the kernel,
/// which must not unwind into it).
pub fn has_status(op: &Op) -> bool {
    matches!(
        op,
        Op::Train(TrainOp::ScatterIds { .. } | TrainOp::ConvWeightGrad { .. })
            | Op::Gemm(_)
            | Op::Dense
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

/// The size of a kernel's outermost parallel loop (the `end` the entry passes), and the
/// fewest of its indices worth one call (a slice of fewer costs as much: the Rust tiers pool
/// and convolve depthwise a register's lanes of planes at a time, a slice of one plane as a
/// whole block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: usize,
    pub grain: usize,
}

/// The planes the Rust tiers' pooling and depthwise kernels take per block of channels
/// (`direct::channel_block`, a register's lanes: eight on AVX2, sixteen on AVX-512): their
/// kernels' grain.
fn channel_grain(a: &Args) -> usize {
    a.tier.isa().lanes()
}

/// Writes the body of the op's kernel number `phase` and returns the size of its outermost
/// parallel loop and its grain ([`Extent`]). Each arm picks a lowering and states its extent
/// together, so the two cannot disagree.
pub fn emit(e: &mut Emitter, op: &Op, a: &Args, phase: usize) -> Extent {
    let mut grain = 1;
    let len = emit_body(e, op, a, phase, &mut grain);
    Extent { len, grain }
}

/// [`emit`]'s body: the extent, and the grain where it is not 1.
fn emit_body(e: &mut Emitter, op: &Op, a: &Args, phase: usize, grain: &mut usize) -> usize {
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
        Op::Conv2d(c)
            if depthwise_fits_direct(c, a.dims(1))
                && let Some(k) = direct_kernels(a) =>
        {
            depthwise_conv_direct(e, a, k, c);
            *grain = channel_grain(a);
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
        Op::Pool2d(p) if let Some(k) = direct_kernels(a) => {
            pool2d_direct(e, a, k, p);
            *grain = channel_grain(a);
            planes()
        }
        Op::Pool2d(p) => {
            pool2d(e, a, p);
            planes()
        }
        Op::GlobalPool(kind) if let Some(k) = direct_kernels(a) => {
            global_pool_direct(e, a, k, *kind);
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
            activation_kernel(e, a, *act);
            numel
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            softmax(e, a, *axis, matches!(op, Op::LogSoftmax { .. }));
            let ax = normalize_axis(*axis, od.len(), false).unwrap_or(0);
            numel / od[ax].max(1)
        }
        Op::Dense if let Some(d) = a.gemm => {
            // a large batch: the GEMM driver (`Gemms::add_dense`)
            call_gemm_driver(e, a, d);
            d.items()
        }
        Op::Dense if let Some(k) = direct_kernels(a) => {
            dense_direct(e, a, k);
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
        Op::Transpose { perm } => transpose(e, a, perm),
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
        Op::BatchNorm { epsilon, activation } if let Some(k) = direct_kernels(a) => {
            batch_norm_direct(e, a, k, *epsilon, *activation);
            planes()
        }
        Op::BatchNorm { epsilon, activation } => {
            batch_norm(e, a, *epsilon, *activation);
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
            layout::slice(e, a, ax, *start)
        }
        Op::Scale { factor } => {
            crate::lower_train::scale(e, a, *factor);
            numel
        }
        Op::Train(t) => crate::lower_train::emit(e, t, a),
    }
}

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

pub(crate) fn dims4(d: &[usize]) -> [usize; 4] {
    [d[0], d[1], d[2], d[3]]
}
