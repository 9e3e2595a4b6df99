//! Data movement: transpose, slice, concatenation, contiguous copy. Each is a strided copy. On
//! the Rust tiers (AVX2, AVX-512) the kernel calls `layout_kernels::kiln_copy_avx2` with a
//! [`CopyDesc`] (block copies of the contiguous runs, register-tiled 2-D transposes); on the
//! Cranelift tier it copies contiguous runs with `f32x4` loads and stores, and only a transpose
//! that moves the last axis goes element by element. Each function returns its kernel's
//! parallel extent.

use super::{Args, load_f, split, store_f};
use crate::codegen::Emitter;
use crate::layout_kernels::{CopyDesc, strides};
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::shape::normalize_axis;

/// Whether the node's copies run on the Rust kernel (the tier is AVX2 or AVX-512; every
/// AVX-512 CPU has AVX2).
fn rust_tier(a: &Args) -> bool {
    use crate::simd::Isa;
    cfg!(target_arch = "x86_64") && matches!(a.tier.isa(), Isa::Avx2 | Isa::Avx512) && Isa::Avx2.available()
}

/// The kernel calls the Rust copy with `d`.
fn call_copy(e: &mut Emitter, a: &Args, d: &CopyDesc) {
    #[cfg(target_arch = "x86_64")]
    super::direct::call_direct(
        e,
        a,
        crate::layout_kernels::kiln_copy_avx2 as *const () as usize,
        d,
    );
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (e, a, d);
}

pub(super) fn transpose(e: &mut Emitter, a: &Args, perm: &[usize]) -> usize {
    let od = a.odims().to_vec();
    let in_strides = strides(a.dims(0));
    // the input stride of each output axis
    let xs: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    if rust_tier(a)
        && let Some(d) = CopyDesc::new(a.src(0), a.dst(), &od, &xs, &strides(&od))
    {
        call_copy(e, a, &d);
        return d.items();
    }
    // the trailing axes the permutation leaves in place are one contiguous run on both sides;
    // when the last axis moves, each output row is read at the stride of its input axis
    let kept = perm
        .iter()
        .enumerate()
        .rev()
        .take_while(|&(i, &p)| i == p)
        .count();
    let outer = od.len().saturating_sub(kept.max(1));
    let run: usize = od[outer..].iter().product();
    let step = xs.last().copied().unwrap_or(1);
    let (arena, xo, yo) = (a.arena, a.src(0), a.dst());
    e.for_range(a.begin, a.end, 1, |e, o| {
        let c = split(e, o, &od[..outer]);
        let mut xi = e.iconst(0);
        for (k, ci) in c.iter().enumerate() {
            let t = e.b.ins().imul_imm_s(*ci, xs[k] as i64);
            xi = e.b.ins().iadd(xi, t);
        }
        let yi = e.b.ins().imul_imm_s(o, run as i64);
        if kept > 0 {
            copy(e, arena, (xo, xi), (yo, yi), run);
        } else {
            let (lo, hi) = (e.iconst(0), e.iconst(run as i64));
            e.for_range(lo, hi, 1, |e, j| {
                let t = e.b.ins().imul_imm_s(j, step as i64);
                let xj = e.b.ins().iadd(xi, t);
                let yj = e.b.ins().iadd(yi, j);
                // i32 tensors move as raw bits, so one f32 copy serves both dtypes
                let v = load_f(e, arena, xo, xj);
                store_f(e, arena, yo, yj, v);
            });
        }
    });
    od[..outer].iter().product()
}

/// `len` contiguous elements from element `from.1` of the value at byte `from.0` to element
/// `to.1` of the value at byte `to.0`, four at a time (bits: f32 and i32 alike).
pub(super) fn copy(e: &mut Emitter, arena: Value, from: (usize, Value), to: (usize, Value), len: usize) {
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

/// `rows` copies of `len` elements, row `o` from `x + o·xstride` to `y + o·ystride` (elements
/// after the byte offsets `x`, `y`), over the kernel's range of rows.
fn copy_rows(
    e: &mut Emitter,
    a: &Args,
    x: usize,
    y: usize,
    len: usize,
    strides: (usize, usize),
    rows: usize,
) {
    if rust_tier(a) {
        call_copy(e, a, &CopyDesc::rows(x, y, rows, len, strides.0, strides.1));
        return;
    }
    let arena = a.arena;
    e.for_range(a.begin, a.end, 1, |e, o| {
        let fi = e.b.ins().imul_imm_s(o, strides.0 as i64);
        let ti = e.b.ins().imul_imm_s(o, strides.1 as i64);
        copy(e, arena, (x, fi), (y, ti), len);
    });
}

/// Elements `[start, start + od[ax])` of axis `ax`: one contiguous run per index of the axes
/// before it. The parallel range is those runs.
pub(super) fn slice(e: &mut Emitter, a: &Args, ax: usize, start: usize) -> usize {
    let (xd, od) = (a.dims(0), a.odims());
    let tail: usize = od[ax + 1..].iter().product();
    let rows: usize = od[..ax].iter().product();
    let len = od[ax] * tail;
    let x = a.src(0) + start * tail * 4;
    copy_rows(e, a, x, a.dst(), len, (xd[ax] * tail, len), rows);
    rows
}

/// Each input is a run of `d[ax]·tail` elements per index of the axes before `ax`. The
/// parallel range is those indices.
pub(super) fn concat(e: &mut Emitter, a: &Args, axis: i64) {
    let od = a.odims();
    let ax = normalize_axis(axis, od.len(), false).unwrap_or(0);
    let tail: usize = od[ax + 1..].iter().product();
    let rows: usize = od[..ax].iter().product();
    let total = od[ax] * tail;
    let mut at = 0usize;
    for (s, t) in a.ins {
        let len = t.dims()[ax] * tail;
        // an input the memory plan placed in its slice (`Plan::slices`) is there already
        if rows != 1 || s.offset != a.dst() + at * 4 {
            copy_rows(e, a, s.offset, a.dst() + at * 4, len, (len, total), rows);
        }
        at += len;
    }
}
