//! Data movement: transpose, contiguous copy, concatenation.

use super::{Args, load_f, split, store_f};
use crate::codegen::Emitter;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::shape::normalize_axis;

pub(super) fn transpose(e: &mut Emitter, a: &Args, perm: &[usize]) {
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

pub(super) fn concat(e: &mut Emitter, a: &Args, axis: i64) {
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
