//! The GEMM glue: an `im2col` materialized as a patch matrix, a `gemm` node's description
//! for the Rust driver (`crate::gemm`), the call into it, and its fused epilogue.

use super::conv::Tap;
use super::elementwise::epilogue;
use super::window::WindowAxis;
use super::{Args, in_range, load_f, split, store_f, validated, vector_split};
use crate::codegen::Emitter;
use crate::gemm::{BArena, Blocking, GemmDesc, MicroKernel, PatchGeom};
use crate::plan::Slot;
use cranelift_codegen::ir::types::{F32, F32X4};
use cranelift_codegen::ir::{InstBuilder, Value};
use kiln_ir::{Gemm, Im2Col, TensorType};

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
    kernel.check()?;
    let b = match patches {
        Some((c, slot, ty)) => {
            let geom = patch_geom(c, ty.dims(), bd);
            let channels = ty.dims()[1];
            let shifted = crate::gemm::Shifted::for_patches(&geom, channels / g.groups.max(1));
            // a narrow product computed transposed, where that pads it less than its wide
            // form, or no more than its gathered patches
            let swap = crate::gemm::Swap::for_product(
                &kernel,
                ad[0] / g.groups.max(1),
                bd[2],
                shifted.map(|s| s.cols),
            );
            BArena::Patches {
                offset: slot.offset,
                channels,
                geom,
                shifted: shifted.filter(|_| swap.is_none()),
                swap,
            }
        }
        // a plain B computed transposed where that pads it clearly less (`Swap::for_matrix`)
        None => match crate::gemm::Swap::for_matrix(&kernel, ad[0] / g.groups.max(1), bd[2]) {
            Some(swap) => BArena::Patches {
                offset: ins[1].0.offset,
                channels: ad[1].saturating_mul(g.groups),
                geom: PatchGeom::matrix(bd[2]),
                shifted: None,
                swap: Some(swap),
            },
            None => BArena::Matrix {
                offset: ins[1].0.offset,
            },
        },
    };
    let mut d = GemmDesc {
        kernel,
        epilogue: None,
        act: crate::elementwise_kernels::Act::NONE,
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
        // set by the compiler when A is computed from the weights alone (`Gemms::add`)
        a_packed: None,
        b_packed: None,
        status,
        // set by the compiler on a Rust tier (`DirectConv::new`)
        direct: None,
        bias_cols: false,
    };
    d.split(want);
    Ok(d)
}

/// The `gemm` kernel: a call to the Rust driver with the node's description.
pub(super) fn call_gemm_driver(e: &mut Emitter, a: &Args, d: &GemmDesc) {
    crate::gemm::emit_driver_call(e, crate::gemm::kiln_gemm_run, d, [a.arena, a.begin, a.end]);
}

/// A `gemm` node's epilogue `fn(c, src, residual, bias, rows, cols, ld_bytes, src_ld_bytes)`
/// (`gemm::EpilogueFn`): on a block of C the driver has just finished, read from `src` (C
/// itself, or the scratch of a wide product), adds the bias and the residual, applies the
/// activation and writes C, four columns at a time.
pub fn emit_gemm_epilogue(e: &mut Emitter, p: &[Value], g: &Gemm) {
    let [c, src, res, bias, rows, cols, ld, src_ld] = [p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]];
    let zero = e.iconst(0);
    let vend = vector_split(e, zero, cols);
    e.for_range(zero, rows, 1, |e, r| {
        let row_off = e.b.ins().imul(r, ld);
        let crow = e.b.ins().iadd(c, row_off);
        let rrow = e.b.ins().iadd(res, row_off);
        let src_off = e.b.ins().imul(r, src_ld);
        let srow = e.b.ins().iadd(src, src_off);
        let bv = if g.bias {
            let at = e.addr(bias, r, 4);
            Some(e.load(F32, at))
        } else {
            None
        };
        for (lo, hi, step, ty) in [(zero, vend, 4, F32X4), (vend, cols, 1, F32)] {
            e.for_range(lo, hi, step, |e, j| {
                let pc = e.addr(crow, j, 4);
                let ps = e.addr(srow, j, 4);
                let mut v = e.load(ty, ps);
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
pub(super) fn im2col(e: &mut Emitter, a: &Args, c: &Im2Col) {
    let x = a.dims(0).to_vec();
    let g = patch_geom(c, &x, a.odims());
    let (src, dst, arena) = (a.src(0), a.dst(), a.arena);
    let l = (g.oh * g.ow) as i64;
    let [ay, ax] = [0, 1].map(|i| WindowAxis {
        s: g.stride[i],
        d: g.dilation[i],
        pad: g.pad[i],
    });
    e.for_range(a.begin, a.end, 1, |e, row| {
        let ix = split(e, row, &[x[0] * x[1], g.kh, g.kw]);
        let (plane, i, j) = (ix[0], ix[1], ix[2]);
        let base = e.b.ins().imul_imm_s(plane, (g.h * g.w) as i64);
        let out_row = e.b.ins().imul_imm_s(row, l);
        e.for_const(0, g.oh as i64, |e, oy| {
            let iy = ay.start(e, oy);
            let iy = ay.tap(e, iy, Tap::Var(i));
            let row_ok = in_range(e, iy, g.h);
            e.for_const(0, g.ow as i64, |e, ox| {
                let ixx = ax.start(e, ox);
                let ixx = ax.tap(e, ixx, Tap::Var(j));
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
