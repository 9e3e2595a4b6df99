//! The Rust tiers of the direct kernels: calls from a kernel into the Rust kernels of
//! `crate::direct` (pooling, depthwise convolution, dense) for the tier's instruction set, with
//! descriptions built at compile time.

use super::conv::conv_blocked;
use super::{Args, dims4, validated};
use crate::codegen::Emitter;
use crate::direct::{self, Kernels};
use cranelift_codegen::ir::InstBuilder;
use kiln_ir::{Activation, PoolKind, ReduceKind};

/// The kernel calls the Rust function `f(desc, arena, begin, end)` with `desc` stored in a
/// stack slot of the kernel (its words are compile-time constants).
pub(super) fn call_direct<D: direct::Words>(e: &mut Emitter, a: &Args, f: usize, desc: &D) {
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

/// The Rust kernels of the tier `a` runs on this host; `None`: the Cranelift tier.
pub(super) fn direct_kernels(a: &Args) -> Option<Kernels> {
    direct::kernels(a.tier.isa())
}

/// A byte offset as a description word.
fn word(off: usize) -> u64 {
    off as u64
}

/// Whether the direct depthwise kernel runs this convolution: one input channel per group
/// (depthwise, or a single-channel input), and not the register-blocked path (whose scratch
/// the plan reserved). It applies any fused activation itself.
pub(super) fn depthwise_fits_direct(c: &kiln_ir::Conv2d, w: &[usize]) -> bool {
    w[1] == 1 && !conv_blocked(c, w)
}

pub(super) fn pool2d_direct(e: &mut Emitter, a: &Args, k: Kernels, p: &kiln_ir::Pool2d) {
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
    call_direct(e, a, k.pool2d as usize, &d);
}

pub(super) fn global_pool_direct(e: &mut Emitter, a: &Args, k: Kernels, kind: ReduceKind) {
    let [n, c, h, w] = dims4(a.dims(0));
    let d = direct::GlobalPoolDesc {
        x: word(a.src(0)),
        y: word(a.dst()),
        planes: word(n * c),
        len: word(h * w),
        max: u64::from(kind == ReduceKind::Max),
    };
    call_direct(e, a, k.global_pool as usize, &d);
}

pub(super) fn depthwise_conv_direct(e: &mut Emitter, a: &Args, k: Kernels, c: &kiln_ir::Conv2d) {
    let (x, w) = (a.dims(0), a.dims(1));
    let geom = validated(c.geometry(x, [w[2], w[3]]));
    let (act, pa, pb) = crate::elementwise_kernels::code(c.activation);
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
        a: pa,
        b: pb,
        win: direct::WindowDesc::new(&geom),
    };
    call_direct(e, a, k.depthwise as usize, &d);
}

pub(super) fn dense_direct(e: &mut Emitter, a: &Args, k: Kernels) {
    let d = direct::DenseDesc {
        x: word(a.src(0)),
        w: word(a.src(1)),
        bias: a.ins.get(2).map_or(direct::NO_BIAS, |s| word(s.0.offset)),
        y: word(a.dst()),
        batch: word(a.dims(0)[0]),
        inputs: word(a.dims(0)[1]),
        outputs: word(a.odims()[1]),
    };
    call_direct(e, a, k.dense as usize, &d);
}

/// An inference batch norm on the tier's kernel (`direct::batch_norm`), over `n·c` planes.
pub(super) fn batch_norm_direct(
    e: &mut Emitter,
    a: &Args,
    k: Kernels,
    eps: f32,
    activation: Option<Activation>,
) {
    let d = a.dims(0);
    let (act, act_a, act_b) = crate::elementwise_kernels::code(activation);
    let desc = direct::NormDesc {
        x: word(a.src(0)),
        scale: word(a.src(1)),
        bias: word(a.src(2)),
        mean: word(a.src(3)),
        var: word(a.src(4)),
        y: word(a.dst()),
        planes: word(d[0] * d[1]),
        channels: word(d[1]),
        plane: word(d[2..].iter().product()),
        eps: u64::from(eps.to_bits()),
        act,
        act_a,
        act_b,
    };
    call_direct(e, a, k.batch_norm as usize, &desc);
}
