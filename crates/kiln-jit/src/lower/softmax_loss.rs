//! Softmax and log-softmax, and the losses (mean squared error, cross-entropy, nll).

use super::elementwise::ln;
use super::{Args, if_else, in_range, load_f, report_bad_index, store_f};
use crate::codegen::Emitter;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::shape::normalize_axis;
use kiln_ir::{DType, LossKind};

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

/// A softmax node's kernel: on the AVX-512 and AVX2 tiers a call into `softmax_kernels`, on
/// the Cranelift tier one row at a time in scalars. The parallel range is the rows either way.
pub(super) fn softmax(e: &mut Emitter, a: &Args, axis: i64, log: bool) {
    let d = a.odims();
    let ax = normalize_axis(axis, d.len(), false).unwrap_or(0);
    if let Some(f) = crate::softmax_kernels::entry(a.tier.isa()) {
        let desc = crate::softmax_kernels::SoftmaxDesc::new(a.src(0), a.dst(), d, ax, log);
        super::direct::call_direct(e, a, f as usize, &desc);
        return;
    }
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

pub(super) fn loss(e: &mut Emitter, a: &Args, kind: LossKind) {
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
