//! Dense (fully connected) layers and batched, broadcasting matrix products.

use super::{Args, dot, load_f, split, store_f};
use crate::codegen::Emitter;
use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::F32;

pub(super) fn dense(e: &mut Emitter, a: &Args) {
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
pub(super) struct MatMulDims {
    batch: Vec<usize>,
    a_batch_strides: Vec<usize>,
    b_batch_strides: Vec<usize>,
    m: usize,
    k: usize,
    n: usize,
}

impl MatMulDims {
    pub(super) fn rows(&self) -> usize {
        self.batch.iter().product::<usize>() * self.m
    }
}

pub(super) fn matmul_dims(ad: &[usize], bd: &[usize]) -> MatMulDims {
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

pub(super) fn matmul(e: &mut Emitter, a: &Args) {
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
