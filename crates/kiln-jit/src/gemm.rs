//! The GEMM path: `C = A·B` with packed panels, cache blocking and a register-blocked
//! micro-kernel.
//!
//! The micro-kernel is the one piece that must run at the FMA peak; it is emitted with
//! Cranelift (`emit_micro_kernel`: a 4×12 tile of `f32x4` accumulators, the K loop unrolled 16
//! times, one fresh broadcast per FMA so the destructive `vfmadd213ps` consumes it — the form
//! the Cranelift notes measured at 96% of the 128-bit peak). Everything around it — the
//! blocking loops, packing A and B into panels, edge tiles — is the safe Rust driver below,
//! written once for every B source (a plain row-major matrix, or image patches packed straight
//! from the input of a convolution: the im2col matrix is never materialized). The driver
//! calls the micro-kernel through a [`MicroKernel`] value, so another tier (an AVX-512 kernel
//! written in Rust, say) plugs in beside the Cranelift one without touching the driver.

use crate::JitError;
use crate::codegen::{self, Emitter};
use crate::elementwise_kernels::Act;
use crate::simd::Isa;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{AbiParam, InstBuilder, Value};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};
use std::cell::RefCell;

/// `fn(kc, a, b, c, ldc_bytes, accumulate)`: `C[MR×NR] (+)= Apanel[kc×MR]ᵀ · Bpanel[kc×NR]`,
/// where `C` rows are `ldc_bytes` apart; with `accumulate == 0` the old `C` is overwritten.
pub type MicroKernelFn = unsafe extern "C" fn(i64, *const f32, *const f32, *mut f32, i64, i64);

/// `fn(kc, a, b, off, c, ldc_bytes, accumulate)`: a [`MicroKernelFn`] whose B is read where it
/// lies, row `k` (`NR` floats) at `b + off[k]`, instead of from a packed panel.
pub type RowsKernelFn = unsafe extern "C" fn(i64, *const f32, *const f32, *const usize, *mut f32, i64, i64);

/// `fn(kc, a, lda, b, c, ldc_bytes, accumulate)`: a [`MicroKernelFn`] whose A is read where it
/// lies, tile row `i`'s element `k` at `a + i·lda + k`, instead of from a packed panel.
pub type AInPlaceFn = unsafe extern "C" fn(i64, *const f32, i64, *const f32, *mut f32, i64, i64);

/// A micro-kernel tier: its tile and its code.
#[derive(Debug, Clone, Copy)]
pub struct MicroKernel {
    pub mr: usize,
    pub nr: usize,
    pub f: MicroKernelFn,
}

/// The largest tile (`mr·nr` floats) the driver's edge-tile buffer holds.
pub const MAX_TILE: usize = 512;
/// The most tile rows `pack_a` reads side by side (a transposed product's B panels are
/// packed as A panels of its tile's columns: up to 64).
pub const MAX_MR: usize = 64;

// The Cranelift tile fits the driver's buffers (the Rust tiers' are checked in `gemm_simd`).
const _: () = assert!(MR * NR <= MAX_TILE && MR <= MAX_MR);

impl MicroKernel {
    /// Whether the driver can run this tile: `1 ≤ mr ≤ MAX_MR`, `nr ≥ 1`, `mr·nr ≤ MAX_TILE`.
    /// The driver's unsafe code (the edge tile written into a stack buffer, the rows of a
    /// packed A panel) relies on it; `gemm` checks it in release builds too.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.mr == 0 || self.nr == 0 || self.mr > MAX_MR || self.mr * self.nr > MAX_TILE {
            return Err("the micro-kernel's tile does not fit the driver's buffers");
        }
        Ok(())
    }
}

/// The Cranelift tier's tile: 4 rows × 12 columns (3 `f32x4` per row) = 12 accumulators,
/// leaving 3 of the 16 xmm registers for B vectors and one for the broadcast.
pub const MR: usize = 5;
pub const NR: usize = 8;
const UNROLL: usize = 8;

/// Declares and defines the Cranelift micro-kernel in `module`.
pub fn define_micro_kernel(module: &mut JITModule, name: &str) -> Result<FuncId, JitError> {
    let mut sig = module.make_signature();
    for _ in 0..6 {
        sig.params.push(AbiParam::new(I64));
    }
    let id = module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| JitError::Codegen(format!("declaring {name}: {e}")))?;
    codegen::define(module, id, sig, false, |e, p, _| {
        emit_micro_kernel(e, p, MR, NR, UNROLL)
    })?;
    Ok(id)
}

fn emit_micro_kernel(e: &mut Emitter, p: &[Value], mr: usize, nr: usize, unroll: usize) {
    let [kc, a, b, c, ldc, accumulate] = [p[0], p[1], p[2], p[3], p[4], p[5]];
    let zero = e.vconst(0.0);
    let acc: Vec<_> = (0..mr * nr / 4).map(|_| e.var(F32X4, zero)).collect();
    let pa = e.var(I64, a);
    let pb = e.var(I64, b);
    // One K step `u` of the tile, reading A at byte `u·16` and B at `u·48` from the pointers.
    let step = |e: &mut Emitter, u: usize| {
        let (a_ptr, b_ptr) = (e.b.use_var(pa), e.b.use_var(pb));
        let bv: Vec<Value> = (0..nr / 4)
            .map(|v| {
                e.b.ins()
                    .load(F32X4, codegen::mem(), b_ptr, ((u * nr + v * 4) * 4) as i32)
            })
            .collect();
        for r in 0..mr {
            for (v, &bvec) in bv.iter().enumerate() {
                // a fresh broadcast per FMA: it becomes `vbroadcastss m32` and dies in the FMA
                let s =
                    e.b.ins()
                        .load(F32, codegen::mem(), a_ptr, ((u * mr + r) * 4) as i32);
                let s = e.b.ins().splat(F32X4, s);
                let old = e.b.use_var(acc[r * nr / 4 + v]);
                let new = e.b.ins().fma(s, bvec, old);
                e.b.def_var(acc[r * nr / 4 + v], new);
            }
        }
    };
    let advance = |e: &mut Emitter, steps: usize| {
        let (a_ptr, b_ptr) = (e.b.use_var(pa), e.b.use_var(pb));
        let a2 = e.b.ins().iadd_imm_s(a_ptr, (steps * mr * 4) as i64);
        let b2 = e.b.ins().iadd_imm_s(b_ptr, (steps * nr * 4) as i64);
        e.b.def_var(pa, a2);
        e.b.def_var(pb, b2);
    };
    // the unrolled loop over whole groups of unroll steps, then the remaining steps one by one
    let groups_end = e.b.ins().band_imm_s(kc, !(unroll as i64 - 1));
    let z = e.iconst(0);
    e.for_range(z, groups_end, unroll as i64, |e, _| {
        for u in 0..unroll {
            step(e, u);
        }
        advance(e, unroll);
    });
    e.for_range(groups_end, kc, 1, |e, _| {
        step(e, 0);
        advance(e, 1);
    });
    let store = |e: &mut Emitter, add: bool| {
        for r in 0..mr {
            let row = e.b.ins().imul_imm_s(ldc, r as i64);
            let row = e.b.ins().iadd(c, row);
            for v in 0..nr / 4 {
                let mut x = e.b.use_var(acc[r * nr / 4 + v]);
                if add {
                    let old = e.b.ins().load(F32X4, codegen::mem(), row, (v * 16) as i32);
                    x = e.b.ins().fadd(x, old);
                }
                e.b.ins().store(codegen::mem(), x, row, (v * 16) as i32);
            }
        }
    };
    let add = e.b.create_block();
    let overwrite = e.b.create_block();
    let done = e.b.create_block();
    let zero_i = e.iconst(0);
    let c_add = e.b.ins().icmp(IntCC::NotEqual, accumulate, zero_i);
    e.b.ins().brif(c_add, add, &[], overwrite, &[]);
    e.b.switch_to_block(add);
    store(e, true);
    e.b.ins().jump(done, &[]);
    e.b.switch_to_block(overwrite);
    store(e, false);
    e.b.ins().jump(done, &[]);
    e.b.switch_to_block(done);
}

/// Cache blocking: `kc` rows of K per packed panel, `mc` rows of A and `nc` columns of B per
/// block (multiples of the tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocking {
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
}

impl Blocking {
    /// Chosen for the host's caches (sysfs on Linux; 32 KiB / 1 MiB otherwise): a B
    /// micro-panel (`kc × NR`) and an A micro-panel fill half of L1, the packed A block
    /// (`mc × kc`) a quarter of L2, and the packed B block (`kc × nc`) lives in L3.
    pub fn for_host(kern: &MicroKernel) -> Blocking {
        let l1 = cache_size(1).unwrap_or(32 << 10);
        let l2 = cache_size(2).unwrap_or(1 << 20);
        Blocking::for_caches(l1, l2, kern.mr, kern.nr)
    }

    pub fn for_caches(l1: usize, l2: usize, mr: usize, nr: usize) -> Blocking {
        let kc = (l1 / 2 / ((mr + nr) * 4)).clamp(128, 512) / 16 * 16;
        let mc = (l2 / 4 / (kc * 4)).clamp(mr, 256) / mr * mr;
        // B blocks stream from L3; wide ones mean A is packed fewer times (measured: 424
        // columns 47–49 GFLOP/s on sgemm 1024³, 1024 columns 50–52, 2048 the same)
        let nc = 1024 / nr * nr;
        Blocking { mc, kc, nc }
    }
}

/// The size in bytes of the level-`level` data (or unified) cache of CPU 0 (read from sysfs
/// once per process).
pub fn cache_size(level: u32) -> Option<usize> {
    static SIZES: std::sync::OnceLock<[Option<usize>; 4]> = std::sync::OnceLock::new();
    let sizes = SIZES.get_or_init(|| [0, 1, 2, 3].map(read_cache_size));
    sizes.get(level as usize).copied().flatten()
}

/// [`cache_size`] from sysfs.
fn read_cache_size(level: u32) -> Option<usize> {
    let dir = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").ok()?;
    for entry in dir.flatten() {
        let p = entry.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        // (the directory holds files besides the caches' `indexN` directories: `uevent`)
        let (Some(l), Some(kind), Some(s)) = (read("level"), read("type"), read("size")) else {
            continue;
        };
        if l.parse::<u32>().ok() != Some(level) || kind == "Instruction" {
            continue;
        }
        let (num, mult) = match s.strip_suffix('K') {
            Some(n) => (n, 1 << 10),
            None => match s.strip_suffix('M') {
                Some(n) => (n, 1 << 20),
                None => (s.as_str(), 1),
            },
        };
        return num.parse::<usize>().ok().map(|n| n * mult);
    }
    None
}

/// Where B comes from.
#[derive(Debug, Clone, Copy)]
pub enum BSource {
    /// Row-major `k × n` at `ptr`, rows `ld` elements apart.
    Matrix { ptr: *const f32, ld: usize },
    /// The transpose of the row-major `n × k` matrix at `ptr` (rows `ld` apart): element
    /// `(k, j)` at `ptr[j·ld + k]` (a dense layer's weights `[O, I]` as its `I × O` B).
    MatrixT { ptr: *const f32, ld: usize },
    /// The patch matrix of a convolution over one image's channels `[c0, c0 + …)`:
    /// row `(c, i, j)`, column `(y, x)` holds `image[c][y·s − pad + i·d][x·s − pad + j·d]`, or 0.
    Patches { ptr: *const f32, geom: PatchGeom },
    /// The wide patch matrix of a convolution ([`Shifted`]) over the zero-padded phases of its
    /// image at `ptr` (`plane` floats per phase, rows `wp` apart, phases `(c, py, px)` in
    /// order): row `(c, i, j)` is the run of floats from phase `(c, i·dh mod s_h, j·dw mod
    /// s_w)`'s element `(⌊i·dh/s_h⌋, ⌊j·dw/s_w⌋)`, a plain copy to pack.
    Shifted {
        ptr: *const f32,
        plane: usize,
        wp: usize,
        kh: usize,
        kw: usize,
        stride: [usize; 2],
        dilation: [usize; 2],
    },
}

impl BSource {
    /// Where row `kk` of B starts, from `ptr`, for the sources whose rows are runs of floats
    /// (column `j` at the start + `j`): a row-major matrix, and a wide patch matrix (row `(c, i,
    /// j)` in the padded copy). `None` for the others.
    #[inline(always)]
    fn row_start(&self, kk: usize) -> Option<usize> {
        match *self {
            BSource::Matrix { ld, .. } => Some(kk * ld),
            BSource::Shifted {
                plane,
                wp,
                kh,
                kw,
                stride: [sy, sx],
                dilation: [dh, dw],
                ..
            } => {
                let (c, i, j) = (kk / (kh * kw), kk / kw % kh, kk % kw);
                let (ty, tx) = (i * dh, j * dw);
                Some(((c * sy + ty % sy) * sx + tx % sx) * plane + ty / sy * wp + tx / sx)
            }
            BSource::MatrixT { .. } | BSource::Patches { .. } => None,
        }
    }

    /// Where B's rows are read from, when they are runs ([`BSource::row_start`]).
    fn runs(&self) -> Option<*const f32> {
        match *self {
            BSource::Matrix { ptr, .. } | BSource::Shifted { ptr, .. } => Some(ptr),
            BSource::MatrixT { .. } | BSource::Patches { .. } => None,
        }
    }
}

/// Where the macro-kernel's B block is.
#[derive(Clone, Copy)]
pub(crate) enum BPanels<'a> {
    /// Packed as micro-panels of `nr` columns (`pack_b`'s layout), run with the tile's
    /// [`MicroKernelFn`].
    Packed(&'a [f32]),
    /// Read in place by the tile's [`RowsKernelFn`]: row `k` (of the K block), column `j`
    /// (of the product) at `ptr + off[k] + j`, every whole tile of columns; a last strip of
    /// fewer than `nr` columns from the packed panel `edge` (reading a whole tile there would
    /// go past the source's end).
    Rows {
        ptr: *const f32,
        off: &'a [usize],
        f: RowsKernelFn,
        edge: &'a [f32],
    },
}

/// A block's A panels as `macro_kernel` reads them.
#[derive(Clone, Copy)]
pub(crate) enum APanels<'a> {
    /// Packed as micro-panels of `mr` rows (`pack_a`'s layout).
    Packed(&'a [f32]),
    /// Read in place by the tile's [`AInPlaceFn`]: the block's row `i`, element `k` (of the K
    /// block) at `ptr + i·lda + k`, every whole tile of rows; a last panel of fewer than `mr`
    /// rows from the packed panel `edge` (a whole tile there would read past A's rows).
    InPlace {
        ptr: *const f32,
        lda: usize,
        f: AInPlaceFn,
        edge: &'a [f32],
    },
}

/// A stride-1 convolution's GEMM over *wide* columns: output rows `wp` columns apart instead
/// of `ow`, the `wp − ow` columns past each row's end computed and dropped. Over a zero-padded
/// copy of the image, `hp × wp` per channel (input row `iy` at row `iy + top`, column `ix` at
/// `ix + left`), every row of that patch matrix is one run of the copy, shifted by its tap,
/// so B is packed with plain copies instead of gathering patches row segment by row segment
/// (the patch packing was a fifth of ResNet-18's time). The finished blocks are moved into C
/// (the wide columns dropped) before the epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shifted {
    pub hp: usize,
    pub wp: usize,
    /// The wide columns, `oh·wp`.
    pub cols: usize,
    /// The floats of the padded copy of one image's group of channels, slack included.
    pub len: usize,
    /// The channels of that group.
    pub channels: usize,
}

impl Shifted {
    /// The most floats a padded copy may take (64 MiB).
    const MAX_LEN: usize = 1 << 24;

    /// The wide form of the patches of `g` over `channels` channels, where it pays: at most
    /// one column in eight dropped, a copy within [`Shifted::MAX_LEN`]. With a stride `s`, the
    /// copy is split into `s_h·s_w` phases (phase `(py, px)` holds the padded image's rows
    /// `≡ py` and columns `≡ px` mod the stride), so that tap `(i, j)` of output `(y, x)` is
    /// element `(y + ⌊i·dh/s_h⌋, x + ⌊j·dw/s_w⌋)` of phase `(i·dh mod s_h, j·dw mod s_w)`: a
    /// run again.
    pub fn for_patches(g: &PatchGeom, channels: usize) -> Option<Shifted> {
        let sh = Shifted::phases(g, channels)?;
        // (the columns past each row's end: wp − ow of wp)
        (sh.wp.checked_sub(g.ow)?.checked_mul(8)? <= sh.wp).then_some(sh)
    }

    /// The phase copy of [`Shifted::for_patches`] whatever the columns it drops (the row
    /// kernel's, `DirectConv::by_rows`, which drops none), within [`Shifted::MAX_LEN`].
    pub fn phases(g: &PatchGeom, channels: usize) -> Option<Shifted> {
        let [sy, sx] = g.stride;
        if sy == 0 || sx == 0 || g.oh == 0 || g.ow == 0 || g.kh == 0 || g.kw == 0 {
            return None;
        }
        let ext_h = (g.kh - 1).checked_mul(g.dilation[0])? / sy;
        let ext_w = (g.kw - 1).checked_mul(g.dilation[1])? / sx;
        let (hp, wp) = (g.oh.checked_add(ext_h)?, g.ow.checked_add(ext_w)?);
        // the last row's run reaches ext_w floats past the last phase's copy
        let len = channels
            .checked_mul(sy)?
            .checked_mul(sx)?
            .checked_mul(hp)?
            .checked_mul(wp)?
            .checked_add(ext_w)?;
        (len <= Shifted::MAX_LEN).then_some(Shifted {
            hp,
            wp,
            cols: g.oh.checked_mul(wp)?,
            len,
            channels,
        })
    }

    /// Where tap `(i, j)` of channel `ch` of output pixel `(0, 0)` lies in the phase copy:
    /// phase `(ch, i·dh mod s_h, j·dw mod s_w)`, row `⌊i·dh/s_h⌋`, column `⌊j·dw/s_w⌋`
    /// (`ch < channels`, `i < kh`, `j < kw`, whose offsets lie within [`Shifted::len`], so
    /// the sum cannot overflow). Output pixel `(y, x)`'s tap is `y·wp + x` further.
    pub fn tap_offset(&self, g: &PatchGeom, ch: usize, i: usize, j: usize) -> usize {
        let [sy, sx] = g.stride;
        let (di, dj) = (i * g.dilation[0], j * g.dilation[1]);
        (((ch * sy + di % sy) * sx + dj % sx) * self.hp + di / sy) * self.wp + dj / sx
    }

    /// One past the furthest float of the copy the row kernel reads over all output pixels
    /// of `g` with registers of `lanes` pixels (`conv_rows::direct_conv_rows`): a register
    /// from the last row's last pixel (`(oh − 1)·wp + ow − 1`) at the furthest tap. `None` on
    /// overflow.
    pub fn row_reach(&self, g: &PatchGeom, lanes: usize) -> Option<usize> {
        let furthest = (0..self.channels)
            .flat_map(|ch| (0..g.kh).flat_map(move |i| (0..g.kw).map(move |j| (ch, i, j))))
            .map(|(ch, i, j)| self.tap_offset(g, ch, i, j))
            .max()?;
        furthest
            .checked_add(g.oh.checked_sub(1)?.checked_mul(self.wp)?)?
            .checked_add(g.ow)?
            .checked_add(lanes)
    }

    /// The padded rows `[r0, r1)` of each channel (of each phase, at a stride: a phase's row
    /// `r` is the padded image's row `r·s_h + p_y`) that the wide columns `cols` read: their
    /// output rows and the `⌊(kh − 1)·dh / s_h⌋` below, and one more, whose first floats the
    /// runs of the wide columns past the last output row's end reach (wide columns that are
    /// dropped). A thread given part of the columns copies only these (ResNet's and VGG's
    /// threads each copied the whole image).
    pub fn copy_rows(&self, g: &PatchGeom, cols: [usize; 2]) -> [usize; 2] {
        if g.stride[0] == 0 || cols[0] >= cols[1] || self.wp == 0 {
            return [0, self.hp];
        }
        let ext_h = (g.kh.saturating_sub(1)).saturating_mul(g.dilation[0]) / g.stride[0];
        let (y0, y1) = (cols[0] / self.wp, (cols[1] - 1) / self.wp);
        [
            y0.min(self.hp),
            y1.saturating_add(ext_h).saturating_add(2).min(self.hp),
        ]
    }
}

/// The geometry of a convolution's patch matrix (one image, one group's channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchGeom {
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Top and left padding.
    pub pad: [usize; 2],
    pub oh: usize,
    pub ow: usize,
}

impl PatchGeom {
    /// A plain `k × cols` matrix B as the patches of a 1 × 1 kernel over a 1 × `cols` image of
    /// `k` channels: patch row `c` at pixel `x` is `B[c][x]`, so the drivers of patch matrices
    /// compute the same product from it (as [`Swap`] does for a 1 × 1 convolution's image).
    pub fn matrix(cols: usize) -> PatchGeom {
        PatchGeom {
            h: 1,
            w: cols,
            kh: 1,
            kw: 1,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [0, 0],
            oh: 1,
            ow: cols,
        }
    }

    /// The rows and columns of the padded image the output's taps cover, from the first:
    /// `(o − 1)·s + (k − 1)·d + 1` each; `None` without outputs or taps, or on overflow.
    pub fn spans(&self) -> Option<[usize; 2]> {
        let span = |o: usize, s: usize, k: usize, d: usize| -> Option<usize> {
            o.checked_sub(1)?
                .checked_mul(s)?
                .checked_add(k.checked_sub(1)?.checked_mul(d)?)?
                .checked_add(1)
        };
        Some([
            span(self.oh, self.stride[0], self.kh, self.dilation[0])?,
            span(self.ow, self.stride[1], self.kw, self.dilation[1])?,
        ])
    }
}

/// One GEMM: `C[m×n] = A[m×k]·B[k×n]`, A row-major with rows `lda` apart, C with rows `ldc`
/// apart; after the last K block each finished `mc × nc` block of C is handed to `epilogue`.
pub struct Problem<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: *const f32,
    pub lda: usize,
    pub b: BSource,
    pub c: *mut f32,
    pub ldc: usize,
    pub epilogue: Option<&'a dyn Fn(Block)>,
}

impl Problem<'_> {
    /// The problem of packing an `m × k` A at `a` (rows `k` apart) alone ([`pack_a_whole`]):
    /// no B, no C.
    pub fn a_only(a: *const f32, m: usize, k: usize) -> Problem<'static> {
        Problem {
            m,
            n: 0,
            k,
            a,
            lda: k,
            b: BSource::Matrix {
                ptr: std::ptr::null(),
                ld: 0,
            },
            c: std::ptr::null_mut(),
            ldc: 0,
            epilogue: None,
        }
    }
}

/// A finished block of C: rows `[m0, m0 + rows)`, columns `[n0, n0 + cols)`.
#[derive(Debug, Clone, Copy)]
pub struct Block {
    pub m0: usize,
    pub rows: usize,
    pub n0: usize,
    pub cols: usize,
}

/// 64-byte aligned floats for packed panels.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line([f32; 16]);

thread_local! {
    /// Per-thread packing buffers (A block, B block), grown on demand and kept.
    pub(crate) static PACK: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub(crate) fn floats(v: &mut Vec<Line>, len: usize) -> &mut [f32] {
    let lines = len.div_ceil(16);
    if v.len() < lines {
        v.resize(lines, Line([0.0; 16]));
    }
    // SAFETY: `Line` is 16 plain f32s; the slice covers `len ≤ lines·16` of them.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<f32>(), len) }
}

/// Computes the blocks `[m0, m1) × [n0, n1)` of `p` (the whole K range). An error, before
/// anything is touched, when the tile or the blocking does not fit the driver's buffers or
/// the ranges are not inside `m × n`.
///
/// # Safety
/// `p.a` must be valid for reads of `m × lda` floats (`lda ≥ k`), `p.b` for its whole source,
/// and `p.c` for reads and writes of `m × ldc` floats (`ldc ≥ n`), with no other thread
/// touching the rows and columns of C written here.
pub unsafe fn gemm(
    kern: &MicroKernel,
    bl: &Blocking,
    p: &Problem,
    rows: [usize; 2],
    cols: [usize; 2],
) -> Result<(), &'static str> {
    // SAFETY: forwarded from the caller.
    unsafe { gemm_with(kern, bl, p, rows, cols, [None, None]) }
}

/// K in equal blocks of at most `kc` (no short last block to pay C's update for): the step.
fn k_step(k: usize, kc: usize) -> usize {
    k.div_ceil(k.div_ceil(kc).max(1)).max(1)
}

/// The floats of an operand packed whole: `m` rows of A (or columns of B) and depth `k`, for
/// tiles of `mr` rows (or columns) ([`pack_a_whole`], [`pack_b_whole`]); its rows padded to
/// whole tiles; `None` on overflow.
pub fn packed_len(m: usize, k: usize, mr: usize) -> Option<usize> {
    m.div_ceil(mr.max(1)).checked_mul(mr)?.checked_mul(k)
}

/// Packs all of `p`'s A for `kern`'s tiles under the blocking `bl`, as [`gemm_with`] reads it:
/// the K block at `pc` (of `k_step(k, bl.kc)` rows) is `pack_a`'s layout of rows `[0, m)`
/// (padded to whole tiles: `mp` rows) at `out[pc·mp..]`. An error when `out` is not
/// [`packed_len`] floats or the tile does not fit the driver.
///
/// # Safety
/// `p.a` must be valid for reads of `m × lda` floats (`lda ≥ k`).
pub unsafe fn pack_a_whole(
    kern: &MicroKernel,
    bl: &Blocking,
    p: &Problem,
    out: &mut [f32],
) -> Result<(), &'static str> {
    kern.check()?;
    if bl.kc == 0 || Some(out.len()) != packed_len(p.m, p.k, kern.mr) {
        return Err("a packed A of the wrong size");
    }
    let mp = p.m.div_ceil(kern.mr) * kern.mr;
    let kstep = k_step(p.k, bl.kc);
    for pc in (0..p.k).step_by(kstep) {
        let kc = kstep.min(p.k - pc);
        // SAFETY: forwarded from the caller; the block holds mp·kc floats (pc·mp + mp·kc ≤ mp·k).
        unsafe { pack_a(p, &mut out[pc * mp..(pc + kc) * mp], 0, p.m, pc, kc, kern.mr) };
    }
    Ok(())
}

/// Packs all of B (`k × n`, from `b`) for tiles of `nr` columns under the blocking `bl`, as
/// [`gemm_with`] reads it: the K block at `pc` (of `k_step(k, bl.kc)` rows) is `pack_b`'s
/// layout of columns `[0, n)` (padded to whole tiles: `np` columns) at `out[pc·np..]`. An
/// error when `out` is not [`packed_len`]`(n, k, nr)` floats.
///
/// # Safety
/// `b` must be valid for reads of its `k × n` elements.
pub unsafe fn pack_b_whole(
    nr: usize,
    bl: &Blocking,
    b: &BSource,
    [k, n]: [usize; 2],
    out: &mut [f32],
) -> Result<(), &'static str> {
    if nr == 0 || bl.kc == 0 || Some(out.len()) != packed_len(n, k, nr) {
        return Err("a packed B of the wrong size");
    }
    let np = n.div_ceil(nr) * nr;
    let kstep = k_step(k, bl.kc);
    for pc in (0..k).step_by(kstep) {
        let kc = kstep.min(k - pc);
        // SAFETY: forwarded from the caller; the block holds np·kc floats (pc·np + np·kc ≤ np·k).
        unsafe { pack_b(b, &mut out[pc * np..(pc + kc) * np], 0, n, pc, kc, nr) };
    }
    Ok(())
}

/// [`gemm`], reading A from `a_packed` (all of A packed by [`pack_a_whole`] for this kernel and
/// blocking) instead of packing it, when given, and B from `b_packed` (all of B packed by
/// [`pack_b_whole`]) likewise. An error when a packed operand has the wrong size or `rows`
/// (`cols`) does not start at a tile boundary.
///
/// # Safety
/// As [`gemm`].
pub unsafe fn gemm_with(
    kern: &MicroKernel,
    bl: &Blocking,
    p: &Problem,
    rows: [usize; 2],
    cols: [usize; 2],
    [a_packed, b_packed]: [Option<&[f32]>; 2],
) -> Result<(), &'static str> {
    kern.check()?;
    if bl.mc == 0 || bl.kc == 0 || bl.nc == 0 {
        return Err("an empty cache block");
    }
    if rows[0] > rows[1] || rows[1] > p.m || cols[0] > cols[1] || cols[1] > p.n {
        return Err("rows or columns outside the product");
    }
    let (mr, nr) = (kern.mr, kern.nr);
    if let Some(ap) = a_packed
        && (Some(ap.len()) != packed_len(p.m, p.k, mr)
            || (rows[0] < rows[1] && !rows[0].is_multiple_of(mr))
            || !bl.mc.is_multiple_of(mr))
    {
        return Err("a packed A of the wrong size, or rows off the tiles");
    }
    if let Some(bp) = b_packed
        && (Some(bp.len()) != packed_len(p.n, p.k, nr)
            || (cols[0] < cols[1] && !cols[0].is_multiple_of(nr))
            || !bl.nc.is_multiple_of(nr))
    {
        return Err("a packed B of the wrong size, or columns off the tiles");
    }
    let (mp, np) = (p.m.div_ceil(mr) * mr, p.n.div_ceil(nr) * nr);
    // B's rows read where they lie by the tile's twin that takes them so, instead of packed:
    // a wide patch matrix (packing was an eighth of a 3 × 3 convolution's time, and the tile
    // reads the copy as fast), and a matrix of at most 128 rows of A, where a packed panel
    // would serve few tiles. Measured on the EPYC Zen 3 (AVX2, one thread, each convolution
    // alone, ms): 3 × 3 64 → 64 on 56 × 56 3.12 → 2.83, 128 → 128 on 28 × 28 2.95 → 2.83,
    // the 7 × 7 s2 stem 3.35 → 3.11; 1 × 1 64 ← 256 on 56 × 56 1.36 → 1.28, 128 ← 256 on
    // 28 × 28 0.61 → 0.59, but 256 ← 64 on 56 × 56 1.23 → 1.31 and 512 ← 128 on 28 × 28 1.14
    // → 1.17 (a matrix's rows, a whole row apart, crowd a few of L1's sets). On AVX-512 (a
    // 2-vCPU Intel Xeon, family 6 model 207, the median of 4–10 alternating pairs of
    // processes, one thread): wide patch matrices, 3 × 3 128 → 128 on 112 × 112 0.86, VGG-19
    // 0.89–0.94, SqueezeNet 0.95–0.98; but on products of fewer columns ResNet-18 1.02–1.04
    // (its 3 × 3s on 14 × 14, 1.86 → 1.93 ms each), so from 1024 columns only; and plain
    // matrices of at most 32 rows of A only, where each B element feeds so few FMAs that
    // packing it costs as much as the product (SqueezeNet's 16-channel 1 × 1s on 55 × 55: 16 ←
    // 128 0.20 → 0.11 ms, SqueezeNet 0.98; up to 64 rows: ResNet-50 0.99, Inception v2 1.035;
    // 1 × 1 64 ← 256 on 56 × 56 0.86 and then 1.01, the MobileNet block's 64 ← 32 on 112 × 112
    // 1.08, with the epilogue a pass over each block), and more rows over a shallow B
    // ([`shallow_in_place`])
    let avx512 = crate::gemm_simd::isa_of(kern) == Some(Isa::Avx512);
    let in_place = match p.b {
        _ if b_packed.is_some() => None,
        BSource::Matrix { .. } if p.m > 128 || (avx512 && p.m > 32 && !shallow_in_place(p)) => None,
        _ if avx512 && p.n < 1024 => None,
        _ => p.b.runs().zip(crate::gemm_simd::rows_kernel(kern)),
    };
    let mut off = Vec::new();
    // A's rows read in place by the tile's twin that takes them so, instead of packed per
    // run, where B is packed (a dense layer's or a matrix product's activations: packing
    // them, a transpose of every row into the panels, took 12–17 % of ConvNeXt-T's products)
    let a_in_place = match (a_packed, in_place) {
        (None, None) => crate::gemm_simd::a_in_place_kernel(kern),
        _ => None,
    };
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let kstep = k_step(p.k, bl.kc);
        // BLIS order: a B block is packed once per (jc, pc) and reused by every A block
        for jc in (cols[0]..cols[1]).step_by(bl.nc) {
            let nc = bl.nc.min(cols[1] - jc);
            for pc in (0..p.k).step_by(kstep) {
                let kc = kstep.min(p.k - pc);
                let bpack = match (b_packed, in_place) {
                    // jc is a multiple of nr (cols[0] and nc are): its panels start at jc·kc in
                    // the K block at pc·np and take ⌈nc/nr⌉·nr·kc floats, jc + that ≤ np
                    (Some(bp), _) => {
                        BPanels::Packed(&bp[pc * np + jc * kc..pc * np + (jc + nc.div_ceil(nr) * nr) * kc])
                    }
                    (None, Some((ptr, f))) => {
                        off.clear();
                        off.extend((pc..pc + kc).filter_map(|kk| p.b.row_start(kk)));
                        let whole = nc / nr * nr;
                        let edge = floats(bbuf, if whole < nc { nr * kc } else { 0 });
                        // SAFETY: forwarded from the caller (columns jc + whole..jc + nc).
                        unsafe { pack_b(&p.b, edge, jc + whole, nc - whole, pc, kc, nr) };
                        BPanels::Rows {
                            ptr,
                            off: &off,
                            f,
                            edge,
                        }
                    }
                    (None, None) => {
                        let bpack = floats(bbuf, nc.div_ceil(nr) * nr * kc);
                        // SAFETY: forwarded from the caller.
                        unsafe { pack_b(&p.b, bpack, jc, nc, pc, kc, nr) };
                        BPanels::Packed(bpack)
                    }
                };
                for ic in (rows[0]..rows[1]).step_by(bl.mc) {
                    let mc = bl.mc.min(rows[1] - ic);
                    let apack = match (a_packed, a_in_place) {
                        // ic is a multiple of mr (rows[0] and mc are): its panels start at ic·kc
                        // in the K block at pc·mp and take ⌈mc/mr⌉·mr·kc floats, ic + that ≤ mp
                        (Some(ap), _) => APanels::Packed(
                            &ap[pc * mp + ic * kc..pc * mp + (ic + mc.div_ceil(mr) * mr) * kc],
                        ),
                        (None, Some(f)) => {
                            let whole = mc / mr * mr;
                            let edge = floats(abuf, if whole < mc { mr * kc } else { 0 });
                            // SAFETY: forwarded from the caller (rows ic + whole..ic + mc).
                            unsafe { pack_a(p, edge, ic + whole, mc - whole, pc, kc, mr) };
                            APanels::InPlace {
                                // row ic < m, column pc < k ≤ lda: inside A
                                ptr: p.a.wrapping_add(ic * p.lda + pc),
                                lda: p.lda,
                                f,
                                edge,
                            }
                        }
                        (None, None) => {
                            let apack = floats(abuf, mc.div_ceil(mr) * mr * kc);
                            // SAFETY: forwarded from the caller.
                            unsafe { pack_a(p, apack, ic, mc, pc, kc, mr) };
                            APanels::Packed(apack)
                        }
                    };
                    // the epilogue of each band of rows (`row_bands`) or, where C fits L2, strip of
                    // columns follows its last K block's tiles (`early_epilogue`), while its part of
                    // C is in L1 (a band) or L1 and L2 (a strip), instead of a pass over the whole block (1 MB at 256 rows), by then
                    // partly out of L2 (`macro_kernel`'s `band_done`). Measured on an Intel Xeon
                    // (family 6 model 167, L2 2 MiB; one thread, `kiln bench --profile`, ms,
                    // alternated), bands: alone with the caches evicted between runs (a 16 MB ReLU
                    // beside it), 1 × 1 256 ← 64 on 56 × 56 + residual + ReLU 1.04–1.08 →
                    // 0.98–1.01, 512 ← 128 on 28 × 28 0.85–0.89 → 0.80–0.85; in ResNet-50's profile
                    // each of its 256 ← 64 0.02–0.09 faster, 512 ← 128 0.02–0.04; MobileNet v2's 96
                    // ← 16 on 112 × 112 0.48 → 0.45, 144 ← 24 on 56 × 56 0.21 → 0.19. Strips, on a
                    // 2-vCPU Intel Xeon (family 6 model 207, L2 2 MiB; one thread, each convolution
                    // alone with its bias and ReLU, six alternations, the fastest run): 1 × 1 48 ←
                    // 16 on 56 × 56 0.054 → 0.047, 72 ← 24 on 28 × 28 0.027 → 0.025, 96 ← 32 on 56
                    // × 56 0.170 → 0.161, 240 ← 40 on 28 × 28 0.120 → 0.117, 64 ← 256 on 56 × 56
                    // and 128 ← 512 on 28 × 28 alike; MNASNet 0.5's GEMMs in its profile 0.93–0.98
                    // (five alternations), MobileNet v2's and ResNet-50's alike
                    let done = (pc + kc == p.k && early_epilogue(p))
                        .then_some(p.epilogue)
                        .flatten();
                    // SAFETY: forwarded from the caller.
                    unsafe { macro_kernel(kern, p, apack, bpack, [ic, mc], [jc, nc], kc, pc > 0, done) };
                }
            }
            if p.k == 0 {
                for r in rows[0]..rows[1] {
                    // SAFETY: row r < m, columns < n ≤ ldc: inside C.
                    unsafe { std::ptr::write_bytes(p.c.wrapping_add(r * p.ldc + jc), 0, nc) };
                }
            }
            // (with no K block, no tile ran: the zeros' epilogue here)
            if let Some(f) = p.epilogue.filter(|_| p.k == 0 || !early_epilogue(p)) {
                for ic in (rows[0]..rows[1]).step_by(bl.mc) {
                    f(Block {
                        m0: ic,
                        rows: bl.mc.min(rows[1] - ic),
                        n0: jc,
                        cols: nc,
                    });
                }
            }
        }
    });
    Ok(())
}

/// The tile loops over one packed A block and one packed B block; each band of rows (`mr`
/// rows by the block's columns, [`row_bands`]) or strip of columns (the block's rows by `nr`
/// columns) handed to `band_done` as soon as its tiles are done (where it is `Some`: the
/// product's last K block).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn macro_kernel(
    kern: &MicroKernel,
    p: &Problem,
    a: APanels,
    b: BPanels,
    [ic, mc]: [usize; 2],
    [jc, nc]: [usize; 2],
    kc: usize,
    accumulate: bool,
    band_done: Option<&dyn Fn(Block)>,
) {
    let (mr, nr) = (kern.mr, kern.nr);
    // mr·nr ≤ MAX_TILE: `gemm` checked `kern.check()` before calling
    let mut tmp = [0.0f32; MAX_TILE];
    if let BPanels::Rows { off, edge, .. } = b {
        assert!(off.len() == kc && (nc.is_multiple_of(nr) || edge.len() >= nr * kc));
    }
    if let APanels::InPlace { edge, .. } = a {
        // (B's rows in place and A's in place have no tile that takes both)
        assert!(matches!(b, BPanels::Packed(_)) && (mc.is_multiple_of(mr) || edge.len() >= mr * kc));
    }
    // the tile over the A panels at `ap` (A's rows in place, `lda` apart, where `Some`) and
    // B's columns from `jr`, into C at `c`
    let run =
        |ap: *const f32, ain: Option<(usize, AInPlaceFn)>, jr: usize, c: *mut f32, ldc: usize, acc: bool| {
            let (ldc, acc) = ((ldc * 4) as i64, acc as i64);
            // SAFETY (every arm): the panels are zero-padded to whole tiles (`floats` sized them
            // `⌈mc/mr⌉·mr·kc` and `⌈nc/nr⌉·nr·kc`), so `ap` has kc·mr floats and a packed B panel
            // kc·nr; A's rows in place are mr whole rows of the block (`tile` below); C as the
            // caller says.
            match b {
                BPanels::Packed(bpack) => unsafe {
                    let bp = bpack[jr / nr * nr * kc..].as_ptr();
                    match ain {
                        Some((lda, f)) => f(kc as i64, ap, lda as i64, bp, c, ldc, acc),
                        None => (kern.f)(kc as i64, ap, bp, c, ldc, acc),
                    }
                },
                // columns jc + jr..jc + jr + nr ≤ jc + nc, in the block: inside each row of B
                // (the caller's contract with the source); off holds kc offsets (asserted)
                BPanels::Rows { ptr, off, f, .. } if jr + nr <= nc => unsafe {
                    f(
                        kc as i64,
                        ap,
                        ptr.wrapping_add(jc + jr),
                        off.as_ptr(),
                        c,
                        ldc,
                        acc,
                    )
                },
                // the last strip, short: its packed panel (asserted above)
                BPanels::Rows { edge, .. } => unsafe { (kern.f)(kc as i64, ap, edge.as_ptr(), c, ldc, acc) },
            }
        };
    // the tile at row `ir`, column `jr` of the block
    let mut tile = |ir: usize, jr: usize| {
        let cols = nr.min(nc - jr);
        let rows = mr.min(mc - ir);
        let (ap, ain) = match a {
            APanels::Packed(apack) => (apack[ir / mr * mr * kc..].as_ptr(), None),
            // rows ic + ir..ic + ir + mr ≤ ic + mc ≤ m: inside A
            APanels::InPlace { ptr, lda, f, .. } if rows == mr => {
                (ptr.wrapping_add(ir * lda), Some((lda, f)))
            }
            // the last rows, fewer than a tile: their packed panel (asserted above)
            APanels::InPlace { edge, .. } => (edge.as_ptr(), None),
        };
        // SAFETY: `gemm` checked `[ic, ic + mc) ⊆ [0, m)` and `[jc, jc + nc) ⊆ [0, n)`, so
        // row ic + ir < m and column jc + jr < n ≤ ldc are inside C.
        // (wrapping: a wide product's C is its item's scratch, `p.c` placed so that the
        // item's first row and column land on the scratch's start, `run_items`)
        let c = p.c.wrapping_add((ic + ir) * p.ldc + jc + jr);
        if rows == mr && cols == nr {
            // the full tile's rows and columns are inside C
            run(ap, ain, jr, c, p.ldc, accumulate);
        } else {
            // an edge tile: compute the whole tile into `tmp` (mr·nr floats), keep the
            // part inside C
            run(ap, ain, jr, tmp.as_mut_ptr(), nr, false);
            for (r, src) in tmp.chunks_exact(nr).take(rows).enumerate() {
                let src = &src[..cols];
                // SAFETY: row r of the tile's valid part of C, its first `cols` columns (no
                // other thread writes this item's rows and columns, and `tmp` is local).
                let dst = unsafe { std::slice::from_raw_parts_mut(c.add(r * p.ldc), cols) };
                // (slices, not an element pointer and `accumulate` read per element: the
                // copy of a 4 × 64 edge tile took a twentieth of 1 × 1 256 ← 64 on 56 × 56)
                if accumulate {
                    dst.iter_mut().zip(src).for_each(|(d, &t)| *d += t);
                } else {
                    dst.copy_from_slice(src);
                }
            }
        }
    };
    if row_bands(p.m, p.n, p.k) {
        for ir in (0..mc).step_by(mr) {
            for jr in (0..nc).step_by(nr) {
                tile(ir, jr);
            }
            if let Some(f) = band_done {
                f(Block {
                    m0: ic + ir,
                    rows: mr.min(mc - ir),
                    n0: jc,
                    cols: nc,
                });
            }
        }
    } else {
        for jr in (0..nc).step_by(nr) {
            for ir in (0..mc).step_by(mr) {
                tile(ir, jr);
            }
            if let Some(f) = band_done {
                f(Block {
                    m0: ic,
                    rows: mc,
                    n0: jc + jr,
                    cols: nr.min(nc - jr),
                });
            }
        }
    }
}

/// Whether an AVX-512 product over a plain B of more than 32 rows of A reads B's rows in place
/// (the tile's twin that takes them so) instead of packed: where the product is at most
/// [`IN_PLACE_K`] deep, runs in column strips (not [`row_bands`]) and its C fits L2
/// ([`c_fits_l2`]), so that a strip's B (`k` rows of a tile's columns) stays in L1 through
/// every tile of the strip, and each of B's few floats per FMA is not copied first. Measured
/// on a 2-vCPU Intel Xeon (family 6 model 207; one thread, each 1 × 1 convolution alone with
/// its bias and ReLU, the fastest of six alternations, packed → in place): 48 ← 16 on 56 × 56
/// 0.047 → 0.039 ms, 96 ← 32 on 56 × 56 0.160 → 0.143, 64 ← 16 on 55 × 55 0.073 → 0.068; 72
/// ← 24 on 28 × 28, 128 ← 32 on 27 × 27 and 120 ← 40 on 28 × 28 alike; but in row bands 96 ←
/// 16 on 112 × 112 0.45 → 0.57 (each band reads B again, from memory).
fn shallow_in_place(p: &Problem) -> bool {
    p.k <= IN_PLACE_K && !row_bands(p.m, p.n, p.k) && c_fits_l2(p)
}

/// Whether the product's C fits L2: where it does not (and the tiles run in column strips),
/// a strip's rows of C, a whole row of the image apart, may crowd a few of L1's sets (a 112 ×
/// 112 map's rows are 49 KiB apart: 64 rows of a strip fall in 16 of 64 sets), and its
/// epilogue as it finishes and B read in place both lost (1 × 1 64 ← 32 on 112 × 112, the
/// MobileNet block's: 0.505 → 0.538 ms with the strip's epilogue, at two threads the block
/// 0.400 → 0.43 with both).
fn c_fits_l2(p: &Problem) -> bool {
    p.m.saturating_mul(p.n).saturating_mul(4) <= cache_size(2).unwrap_or(1 << 20)
}

/// Whether the epilogue of a product follows each band of rows or strip of columns as soon
/// as its last tiles are done (`macro_kernel`'s `band_done`), rather than one pass over each
/// finished block: in row bands ([`row_bands`]), and in column strips where C fits L2
/// ([`c_fits_l2`]).
fn early_epilogue(p: &Problem) -> bool {
    row_bands(p.m, p.n, p.k) || c_fits_l2(p)
}

/// The deepest product over more than 32 rows of A that [`shallow_in_place`] reads in place on
/// AVX-512.
const IN_PLACE_K: usize = 32;

/// Whether `macro_kernel` runs the tiles of an `m × n × k` product's blocks in row bands
/// (each band of `mr` rows across the block's columns) instead of column strips (each strip
/// of `nr` columns down the block's rows, so that a B panel serves every A panel from L1):
/// where C does not fit L2 and the product is so shallow that storing C outweighs its FMAs
/// (K of at most [`BAND_K`]), and where C is more than half of L2 and a strip would run down
/// [`BAND_M`] rows or more, each a page or more from the last. Each row of C is then written
/// along its lines, which the prefetchers follow, instead of `nr` columns at a time. Every
/// tile computes the same sums in either order.
fn row_bands(m: usize, n: usize, k: usize) -> bool {
    let c_bytes = m.saturating_mul(n).saturating_mul(4);
    let l2 = cache_size(2).unwrap_or(1 << 20);
    (k <= BAND_K && c_bytes > l2) || (m >= BAND_M && c_bytes.saturating_mul(2) > l2)
}

/// The deepest product [`row_bands`] takes whatever its rows. Measured on a 2-vCPU Intel Xeon
/// (family 6 model 167, L2 2 MiB), one thread, 1 × 1 convolutions + bias + ReLU alone (`kiln
/// bench --profile`, ms, strips → bands, alternated): 96 ← 16 on 112 × 112 0.465–0.471 →
/// 0.390–0.396, with SiLU 0.81–0.83 → 0.74–0.75; 144 ← 16 0.68–0.73 → 0.55–0.61; 192 ← 16
/// 0.91 → 0.75; 96 ← 24 0.55–0.59 → 0.50–0.57; 96 ← 16 on 80 × 80 0.224–0.237 →
/// 0.195–0.200, on 100 × 100 0.37 → 0.31. Alike or up to 7 % slower in bands where C fits L2
/// (96 ← 16 on 64 × 64 and 56 × 56, 144 ← 24 on 56 × 56), and 3–8 % slower from K = 32 where
/// the product has fewer than [`BAND_M`] rows (64 ← 32 on 112 × 112, the MobileNet block's,
/// 0.419–0.425 → 0.430–0.444 in its network; 96 ← 32 on 112 × 112).
const BAND_K: usize = 24;

/// The fewest rows from which a product whose C is more than half of L2 runs in row bands
/// at any depth ([`row_bands`]). In networks (the same host and thread, `kiln bench
/// --profile`, each shape's kernels summed, two runs each, strips → bands, ms): ResNet-50's
/// 1 × 1 256 ← 64 on 56 × 56 with the residual 3.45–3.57 → 2.75–2.82 (four of them; C 3.2 MB),
/// its projection 1.18–1.22 → 0.82, 512 ← 128 on 28 × 28 with the residual 3.06–3.08 →
/// 2.93–2.96, 128 ← 256 on 56 × 56 1.47 → 1.40–1.44 (its GEMMs 14.7 → 13.3–13.5 in all);
/// DenseNet-121's 128 ← k on 56 × 56 alike. Products of fewer rows lose (MobileNet v2's
/// 192 ← 32 on 28 × 28 0.207–0.209 → 0.220–0.222 in bands, C 0.6 MB).
const BAND_M: usize = 128;

/// Packs A's block `[ic, ic + mc) × [pc, pc + kc)` as micro-panels of `mr` rows: element
/// `(i, k)` of panel `q` at `q·mr·kc + k·mr + i`; rows past `m` are zero. Each panel is the
/// transpose of its rows ([`transpose_block`]: 4 × 4 and 2 × 4 blocks in registers). Measured
/// on a 512 × 4608 A, a scalar loop took two thirds of the GEMM's time; on a 2-vCPU Intel
/// Xeon (family 6 model 207), one thread, a dense layer `[784, 768] · [768, 192]` on the
/// 6 × 64 tile (alone, `kiln bench --profile`, ms) spent a third of its time in the scalar
/// loop the 6-row panels took before.
unsafe fn pack_a(p: &Problem, out: &mut [f32], ic: usize, mc: usize, pc: usize, kc: usize, mr: usize) {
    for q in 0..mc.div_ceil(mr) {
        let panel = &mut out[q * mr * kc..(q + 1) * mr * kc];
        let live = mr.min(mc - q * mr);
        // SAFETY: rows ic + q·mr .. + live ≤ m, columns pc..pc + kc ≤ k ≤ lda; the panel
        // holds the kc × mr transpose (live ≤ mr columns of it written).
        unsafe {
            transpose_block(
                p.a.add((ic + q * mr) * p.lda + pc),
                p.lda,
                panel.as_mut_ptr(),
                mr,
                [live, kc],
            )
        };
        if live < mr {
            for dst in panel.chunks_exact_mut(mr) {
                dst[live..].fill(0.0);
            }
        }
    }
}

/// Writes the transpose of the `rows × cols` block at `src` (rows `lds` floats apart) to `dst`
/// (rows `ldd` apart): `dst[j·ldd + i] = src[i·lds + j]`. On x86-64 in 4 × 4 blocks, four
/// rows' 4 columns loaded, transposed in registers and stored as 4 rows' 4 columns, a block
/// column of `dst`'s rows at a time (each written along its lines), then the rows left two at
/// a time as 2 × 4 blocks (the 6- and 7-row panels of `pack_a`); the edges one float at a time.
///
/// # Safety
/// `src` valid for reading and `dst` for writing those floats, not overlapping.
unsafe fn transpose_block(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, [rows, cols]: [usize; 2]) {
    // the rows of whole 4 × 4 blocks, then of whole 2 × 4 blocks, and the columns of both,
    // which the registers transpose
    #[cfg(target_arch = "x86_64")]
    let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
    #[cfg(target_arch = "x86_64")]
    let r2 = r4 + (rows - r4) / 2 * 2;
    #[cfg(not(target_arch = "x86_64"))]
    let (r2, c4) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    for j in (0..c4).step_by(4) {
        use std::arch::x86_64::*;
        for i in (0..r4).step_by(4) {
            // SAFETY: rows i..i + 4 ≤ rows, columns j..j + 4 ≤ cols of the source; the stores
            // at rows j..j + 4, columns i..i + 4 of the destination.
            unsafe {
                let mut x = [0, 1, 2, 3].map(|t| _mm_loadu_ps(src.add((i + t) * lds + j)));
                let [x0, x1, x2, x3] = &mut x;
                _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
                for (t, v) in x.iter().enumerate() {
                    _mm_storeu_ps(dst.add((j + t) * ldd + i), *v);
                }
            }
        }
        for i in (r4..r2).step_by(2) {
            // SAFETY: rows i, i + 1 < rows, columns j..j + 4 ≤ cols of the source; the 8-byte
            // stores at rows j..j + 4, columns i, i + 1 of the destination.
            unsafe {
                let (a, b) = (
                    _mm_loadu_ps(src.add(i * lds + j)),
                    _mm_loadu_ps(src.add((i + 1) * lds + j)),
                );
                // (a0 b0 a1 b1), (a2 b2 a3 b3): destination rows j, j + 1 and j + 2, j + 3
                let (lo, hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
                for (t, v) in [lo, _mm_movehl_ps(lo, lo), hi, _mm_movehl_ps(hi, hi)]
                    .into_iter()
                    .enumerate()
                {
                    _mm_storel_epi64(dst.add((j + t) * ldd + i).cast::<__m128i>(), _mm_castps_si128(v));
                }
            }
        }
    }
    // the rest: columns past c4 of the rows up to r2, and every column of the rows past r2
    for i in 0..rows {
        for j in if i < r2 { c4 } else { 0 }..cols {
            // SAFETY: row i < rows, column j < cols.
            unsafe { *dst.add(j * ldd + i) = *src.add(i * lds + j) };
        }
    }
}

/// Copies the first `N` floats of `src` to `dst` (both hold at least `N`) as one fixed-size
/// copy.
#[inline(always)]
fn copy_fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
    let d: &mut [f32; N] = (&mut dst[..N]).try_into().expect("N floats");
    d.copy_from_slice(&src[..N]);
}

/// Copies `src` into row `k` of a packed B block from column `j` on (see `pack_b`), one
/// micro-panel piece at a time; `None` writes that many zeros.
#[inline(always)]
fn put_row(out: &mut [f32], kc: usize, nr: usize, k: usize, mut j: usize, len: usize, src: Option<&[f32]>) {
    let mut i = 0;
    while i < len {
        let r = j % nr;
        let n = (nr - r).min(len - i);
        let at = j / nr * nr * kc + k * nr + r;
        match src {
            // a whole micro-panel row of the common tiles (8, 16 and 24 columns: Cranelift
            // and AVX2; 32, 48 and 64: AVX-512): fixed-size copies of at most 32 floats, no
            // memcpy call (a copy of 48 or 64 floats became one; on a 2-vCPU Intel Xeon,
            // family 6 model 207, one thread, 1 × 1 64 ← 256 on 56 × 56 on the 6 × 64 tile
            // alone 0.847–0.856 → 0.830–0.837 ms)
            Some(s) if n == 8 => copy_fixed::<8>(&mut out[at..], &s[i..]),
            Some(s) if n == 16 => copy_fixed::<16>(&mut out[at..], &s[i..]),
            Some(s) if n == 24 => copy_fixed::<24>(&mut out[at..], &s[i..]),
            Some(s) if n == 32 => copy_fixed::<32>(&mut out[at..], &s[i..]),
            Some(s) if n == 48 => {
                copy_fixed::<32>(&mut out[at..], &s[i..]);
                copy_fixed::<16>(&mut out[at + 32..], &s[i + 32..]);
            }
            Some(s) if n == 64 => {
                copy_fixed::<32>(&mut out[at..], &s[i..]);
                copy_fixed::<32>(&mut out[at + 32..], &s[i + 32..]);
            }
            Some(s) => out[at..at + n].copy_from_slice(&s[i..i + n]),
            None => out[at..at + n].fill(0.0),
        }
        i += n;
        j += n;
    }
}

/// Packs B's block `[pc, pc + kc) × [jc, jc + nc)` as micro-panels of `nr` columns: element
/// `(k, j)` of panel `q` at `q·nr·kc + k·nr + j`; columns past `n` are zero.
unsafe fn pack_b(b: &BSource, out: &mut [f32], jc: usize, nc: usize, pc: usize, kc: usize, nr: usize) {
    // each tile width as a constant, so that `put_row`'s `j / nr` and `j % nr` are no
    // divisions (measured: they were most of a small convolution's packing time)
    // SAFETY (every arm): forwarded from the caller.
    unsafe {
        match nr {
            6 => pack_b_nr(b, out, jc, nc, pc, kc, 6),
            7 => pack_b_nr(b, out, jc, nc, pc, kc, 7),
            8 => pack_b_nr(b, out, jc, nc, pc, kc, 8),
            12 => pack_b_nr(b, out, jc, nc, pc, kc, 12),
            16 => pack_b_nr(b, out, jc, nc, pc, kc, 16),
            24 => pack_b_nr(b, out, jc, nc, pc, kc, 24),
            32 => pack_b_nr(b, out, jc, nc, pc, kc, 32),
            48 => pack_b_nr(b, out, jc, nc, pc, kc, 48),
            64 => pack_b_nr(b, out, jc, nc, pc, kc, 64),
            _ => pack_b_nr(b, out, jc, nc, pc, kc, nr),
        }
    }
}

/// The body of `pack_b`, inlined into each of its constant tile widths.
#[inline(always)]
unsafe fn pack_b_nr(b: &BSource, out: &mut [f32], jc: usize, nc: usize, pc: usize, kc: usize, nr: usize) {
    let padded = nc.div_ceil(nr) * nr;
    match *b {
        BSource::Matrix { ptr, ld } => {
            for k in 0..kc {
                // SAFETY: row pc + k < K, columns jc..jc + nc ≤ n ≤ ld.
                let row = unsafe { std::slice::from_raw_parts(ptr.add((pc + k) * ld + jc), nc) };
                put_row(out, kc, nr, k, 0, nc, Some(row));
                put_row(out, kc, nr, k, nc, padded - nc, None);
            }
        }
        BSource::MatrixT { ptr, ld } => {
            // column j of B is row jc + j of the matrix: read along it, write down the panel
            for q in 0..padded / nr {
                let panel = &mut out[q * nr * kc..(q + 1) * nr * kc];
                for r in 0..nr {
                    let j = q * nr + r;
                    if j >= nc {
                        for k in 0..kc {
                            panel[k * nr + r] = 0.0;
                        }
                        continue;
                    }
                    // SAFETY: row jc + j < n of the matrix, columns pc..pc + kc ≤ k ≤ ld.
                    let row = unsafe { std::slice::from_raw_parts(ptr.add((jc + j) * ld + pc), kc) };
                    for (k, &v) in row.iter().enumerate() {
                        panel[k * nr + r] = v;
                    }
                }
            }
        }
        BSource::Shifted { ptr, .. } => {
            for k in 0..kc {
                let at = b.row_start(pc + k).unwrap_or(0);
                // SAFETY: row pc + k of the wide patch matrix from column jc: the caller's
                // copy holds every wide column of every row (`Shifted::len`).
                let row = unsafe { std::slice::from_raw_parts(ptr.add(at + jc), nc) };
                put_row(out, kc, nr, k, 0, nc, Some(row));
                put_row(out, kc, nr, k, nc, padded - nc, None);
            }
        }
        BSource::Patches { ptr, geom: g } => {
            let s = g.stride[1];
            let mut gathered = Vec::with_capacity(if s > 1 { g.ow } else { 0 });
            for k in 0..kc {
                let kk = pc + k;
                let (c, i, j) = (kk / (g.kh * g.kw), kk / g.kw % g.kh, kk % g.kw);
                // SAFETY: channel c of the image (the caller passes this group's channels).
                let plane = unsafe { std::slice::from_raw_parts(ptr.add(c * g.h * g.w), g.h * g.w) };
                // the output columns x whose tap x·s + xoff falls inside the row: [xa, xb)
                let xoff = (j * g.dilation[1]) as isize - g.pad[1] as isize;
                let xa = if xoff >= 0 { 0 } else { (-xoff) as usize }.div_ceil(s).min(g.ow);
                let xb = if (g.w as isize) > xoff {
                    (g.w as isize - xoff) as usize
                } else {
                    0
                }
                .div_ceil(s)
                .clamp(xa, g.ow);
                // columns jc..jc + nc, one output row segment at a time
                let mut col = jc;
                while col < jc + nc {
                    let (y, x0) = (col / g.ow, col % g.ow);
                    let x1 = g.ow.min(x0 + (jc + nc - col));
                    let iy = (y * g.stride[0] + i * g.dilation[0]) as isize - g.pad[0] as isize;
                    let dst0 = col - jc;
                    if (0..g.h as isize).contains(&iy) {
                        let row = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                        let (a, b) = (xa.clamp(x0, x1), xb.clamp(x0, x1));
                        put_row(out, kc, nr, k, dst0, a - x0, None);
                        if b > a {
                            let first = ((a * s) as isize + xoff) as usize;
                            let src = if s == 1 {
                                &row[first..first + (b - a)]
                            } else {
                                gathered.clear();
                                gathered.extend(row[first..].iter().step_by(s).take(b - a));
                                &gathered[..]
                            };
                            put_row(out, kc, nr, k, dst0 + (a - x0), b - a, Some(src));
                        }
                        put_row(out, kc, nr, k, dst0 + (b - x0), x1 - b, None);
                    } else {
                        put_row(out, kc, nr, k, dst0, x1 - x0, None);
                    }
                    col += x1 - x0;
                }
                put_row(out, kc, nr, k, nc, padded - nc, None);
            }
        }
    }
}

/// `fn(c, src, residual, bias, rows, cols, ld_bytes, src_ld_bytes, act)`: a `gemm` node's
/// epilogue over a finished block of C (rows `ld_bytes` apart; the residual block has the
/// same layout; `bias` points at the block's first row's bias), reading the block from `src`
/// (rows `src_ld_bytes` apart): C itself, or the scratch a wide product computed it in, so
/// that moving the block out and finishing it is one pass. Emitted per node by
/// `lower::emit_gemm_epilogue` (which has the node's activation built in and ignores `act`),
/// or a Rust tier's, which applies `act` ([`GemmDesc::act`]).
pub type EpilogueFn =
    unsafe extern "C" fn(*mut f32, *const f32, *const f32, *const f32, i64, i64, i64, i64, *const Act);

/// Where a `gemm` node's B lives in the arena.
#[derive(Debug, Clone, Copy)]
pub enum BArena {
    /// `[N, K, L]` at this byte offset.
    Matrix { offset: usize },
    /// The transpose of the `[L, K]` matrix at this byte offset (a dense layer's weights;
    /// one image, one group).
    MatrixT { offset: usize },
    /// Patches of the image `[N, C, H, W]` at this byte offset (an `im2col` the GEMM packs
    /// from directly).
    Patches {
        offset: usize,
        channels: usize,
        geom: PatchGeom,
        /// The wide form of the product, where it pays ([`Shifted::for_patches`]).
        shifted: Option<Shifted>,
        /// The product computed transposed, where that pads it clearly less ([`Swap`]); it
        /// takes precedence over `shifted`.
        swap: Option<Swap>,
    },
}

/// A convolution's product `C = A·B` (output channels × pixels) computed transposed, `Cᵀ =
/// Bᵀ·Aᵀ` (pixels × output channels), on a tile whose rows are pixels and whose columns are
/// output channels: for narrow products (ResNet-18's `layer4`: 512 channels, 49 pixels),
/// which a tile 32, 48 or 64 pixels wide fills badly, while 512 channels fill it. The patches
/// are packed as the A panels (`pack_b` lays out `mr` columns of B as a panel of `mr` rows of
/// Bᵀ), the weights as the B panels (`pack_a` lays out `nr` rows of A as a panel of `nr`
/// columns of Aᵀ; packed once ahead like any A, [`GemmDesc::a_packed`]), the K blocks
/// accumulate into a pixel-major scratch block, and the finished block is transposed into C
/// before the epilogue. Every element is the same chain of FMAs as the plain product's under
/// the same blocking.
#[derive(Debug, Clone, Copy)]
pub struct Swap {
    /// The tile of the transposed product: `mr` pixels × `nr` output channels.
    pub kernel: MicroKernel,
    pub blocking: Blocking,
}

impl Swap {
    /// The transposed form of an `m × n` product whose plain tile is `plain` (a Rust tier's) and
    /// which as it is computes `wide` columns (`gemm::Shifted`) or gathers its patches (`None`),
    /// where it pays (`gemm_simd::swap_tile_for`) and all `n` pixels are one block of the
    /// transposed product (so that the weights stream through once: ResNet-18's `layer1`, 64
    /// channels × 3136 pixels, which a 6 × 64 tile pads less, took 1.34 ms transposed instead
    /// of 1.04); `None` otherwise.
    pub fn for_product(plain: &MicroKernel, m: usize, n: usize, wide: Option<usize>) -> Option<Swap> {
        let isa = crate::gemm_simd::isa_of(plain)?;
        let kernel = crate::gemm_simd::swap_tile_for(isa, m, n, wide)?;
        // (L2 taken as at least 1 MiB: the transposed products were measured on the EPYC Zen
        // 3, whose 512 KiB were read as 1 MiB then, with ResNet's 14 × 14 maps in one block)
        let blocking = Swap::blocking(&kernel, cache_size(2).unwrap_or(1 << 20).max(1 << 20));
        (n <= blocking.mc).then_some(Swap { kernel, blocking })
    }

    /// The transposed form of an `m × n` product whose B is a plain matrix (a 1 × 1
    /// convolution's image, `k × n`), on a Rust tier, where its tile pads the product a clear
    /// share less than the tier's main tile pads it as it is ([`Swap::for_product`]'s tile,
    /// [`crate::gemm_simd::saves_enough`]: a tenth on AVX2, a twentieth on AVX-512):
    /// B is then read as the patches of a 1 × 1 kernel ([`PatchGeom::matrix`]). AVX2:
    /// ResNet-50's 1 × 1s on 7 × 7 maps (2048 ← 512 with the residual, 512 ← 2048; 49 pixels,
    /// which the plain product ran on 8 × 8 tiles) took 3.2–3.4 ms each instead of 4.2–4.3,
    /// measured on the 2-vCPU AMD EPYC Zen 1 (L2 512 KiB), one thread; on 14 × 14 maps (196
    /// pixels, padded to 198 against 208: not a tenth) transposed 0.97–1.04 of the plain time,
    /// so not there. AVX-512 (12 × 32 plain, 7 × 48 or 6 × 64 transposed), on the 2-vCPU AMD
    /// EPYC Zen 4 (L1 32 KiB, L2 1 MiB), one thread, each alone, ms: 512 ← 2048 on 7 × 7
    /// 1.40–1.42 → 1.14–1.17, 2048 ← 512 1.29–1.32 → 1.12–1.17; on 14 × 14 (224 padded
    /// columns against 198 rows) 512 ← 1024 2.26 → 2.04–2.06, 256 ← 1024 1.20–1.21 →
    /// 1.18, 1024 ← 256 1.13–1.16 → 1.09.
    pub fn for_matrix(plain: &MicroKernel, m: usize, n: usize) -> Option<Swap> {
        let isa = crate::gemm_simd::isa_of(plain)?;
        let main = crate::gemm_simd::tiles(isa).first()?;
        let swap = Swap::for_product(plain, m, n, None)?;
        let padded = crate::gemm_simd::padded;
        crate::gemm_simd::saves_enough(isa, padded(&swap.kernel, n, m), padded(main, m, n)).then_some(swap)
    }

    /// K blocks 512 deep, so that the scratch block (read and written once per K block) and
    /// the narrow tiles' edges cost little (measured on ResNet-18's `layer4` in the network:
    /// 1.19 ms at kc = 128, 1.12 at 512, 1.11 at 1152; alone in L3 all alike), and the pixels'
    /// panels in half of L2, so that a map of up to 252 pixels (with 1 MiB of L2) is one block
    /// and the weights stream through once.
    fn blocking(kern: &MicroKernel, l2: usize) -> Blocking {
        let kc = 512;
        let mr = kern.mr.max(1);
        Blocking {
            mc: (l2 / 2 / (kc * 4)).max(mr) / mr * mr,
            kc,
            nc: (1024 / kern.nr.max(1)).max(1) * kern.nr,
        }
    }

    /// The transposed product's B panels as `pack_a` lays them out: a tile of `nr` rows.
    fn b_packing(&self) -> MicroKernel {
        MicroKernel {
            mr: self.kernel.nr,
            nr: self.kernel.mr,
            f: self.kernel.f,
        }
    }
}

/// Everything the driver needs to run one `gemm` node over the arena; built at compile time
/// from validated shapes and the memory plan. Its work is cut into `items()` pieces —
/// (image, group, row block, column block) — that threads take in contiguous ranges.
pub struct GemmDesc {
    pub kernel: MicroKernel,
    pub epilogue: Option<EpilogueFn>,
    /// The activation a Rust tier's epilogue (or a direct convolution's finishing store)
    /// applies.
    pub act: Act,
    pub blocking: Blocking,
    pub batch: usize,
    pub groups: usize,
    /// Rows, depth and columns of one group's product.
    pub mg: usize,
    pub kg: usize,
    pub l: usize,
    pub a: usize,
    pub b: BArena,
    pub c: usize,
    pub bias: Option<usize>,
    pub residual: Option<usize>,
    /// Rows and columns per work item.
    pub m_step: usize,
    pub n_step: usize,
    /// Where A (the weights) lives packed whole, when it is computed from the weights alone:
    /// the byte offset of `groups` packings of [`packed_len`]`(mg, kg, mr)` floats each,
    /// written by [`kiln_gemm_pack`] (a `prep` kernel: run when the weights are set or
    /// changed) and read by every run instead of packing A again.
    pub a_packed: Option<usize>,
    /// Where B lives packed whole, when it is a plain matrix (one image, one group) computed
    /// from the weights alone, as a dense layer's weights are: the byte offset of
    /// [`packed_len`]`(l, kg, nr)` floats, written by [`kiln_gemm_pack`] with A's packing and
    /// read by every run instead of packing B per block.
    pub b_packed: Option<usize>,
    /// Byte offset of the node's status word (`plan::Plan::status`, 8-byte aligned): the
    /// driver stores a failure there instead of unwinding into JIT code.
    pub status: usize,
    /// The direct kernel that runs the product instead of the micro-kernel, for the patches of
    /// a convolution with few output channels or of a shape where it pays
    /// ([`DirectConv::new`]).
    pub direct: Option<DirectConv>,
    /// Whether the bias has a value per column (a dense layer's) rather than per row.
    pub bias_cols: bool,
}

/// A convolution computed directly by the tier's kernel (`direct::direct_conv`) instead of as
/// a product of its patches, vectorized over the output channels, over a zero-padded copy of
/// the image the driver makes per item (of the rows the item reads); the weights are read in
/// panels of `panel` channels, packed once when the weights are set ([`GemmDesc::a_packed`]),
/// or else laid out tap-major by the driver per call. No patch is packed. It runs products
/// whose A has too few rows (output channels) for a GEMM tile to fill, and the stride-1
/// convolutions where it was measured faster than the GEMM ([`DirectConv::pays`]).
#[derive(Clone, Copy)]
pub struct DirectConv {
    pub f: crate::direct::DirectConvFn,
    pub lanes: usize,
    /// The channels of a packed weight panel: two registers.
    pub panel: usize,
    /// The padded copy's channels per block (`NCHWc`, [`pad_copy_blocked`]): 8, or 1 (planes)
    /// for fewer than 8 channels.
    pub cb: usize,
    /// The padded copy: `hp × wp` per channel, `pad_len` floats with the slack.
    pub hp: usize,
    pub wp: usize,
    pub pad_len: usize,
    /// The taps the kernel sums per pass over a segment of an output row
    /// ([`crate::direct::DirectConvJob::chunk`]): whole blocks of the copy's channels, about
    /// [`DirectConv::CHUNK`] taps.
    pub chunk: usize,
    /// Whether the weights are larger than L2: they come from memory on every run, so the
    /// kernel takes each block of output channels through all the pixels (its weights read
    /// once) and asks for each chunk's weights a chunk ahead (the first pixel block of a chunk
    /// would wait for them). Measured on AVX-512 (a 2-vCPU Intel Xeon, family 6 model
    /// 207, L2 2 MiB; the median of 8 alternating pairs of processes, one thread): six 3 × 3
    /// 512 → 512 on 7 × 7 in a chain (9.4 MB of weights each) 0.90 of the time without,
    /// eight 256 → 256 on 14 × 14 0.95; where the weights fit (the VGG block, the dilated
    /// convolution) asking cost 6–9 %, so they do not.
    pub prefetch: bool,
    /// The output pixels per band: whole output rows, their padded rows of the image at most
    /// half of L2 (all of them where the whole copy fits L2). The driver copies a band's rows
    /// just before its pixels run, so that the kernel reads them from L2.
    pub band: usize,
    /// Whether the kernel finishes C itself as it stores the sums (the bias, then the
    /// residual, then the node's activation, [`GemmDesc::act`]: the node's epilogue, whose
    /// pass over C is then skipped); where not, the node's epilogue runs after the kernel.
    pub finish: bool,
    /// For an image of few channels, the phase copy the row kernel reads
    /// (`conv_rows::direct_conv_rows`, [`DirectConv::by_rows`]; `hp`, `wp` are its phases'):
    /// `f` is that kernel. `None`: the channel-vectorized kernel over the blocked copy.
    pub phases: Option<Shifted>,
    /// Whether the kernel reads the image itself, not a copy (`cb` 1, `pad_len` 0): a 1 × 1
    /// kernel at stride 1 without padding, whose copy would hold the image's planes as they
    /// are, into at most [`DirectConv::IN_PLACE_ROWS`] output channels (into any number on the
    /// row kernel, [`DirectConv::pointwise_by_rows`]). The kernel reads no
    /// pixel past a row's last (a row's last pixels run in a block of as many), so the planes
    /// alone hold every tap; `run_direct` checks the job's last tap against them.
    pub in_place: bool,
    /// The row kernel's order ([`crate::direct::DirectConvJob::span`]); 0 for the
    /// channel-vectorized kernel.
    pub span: usize,
    /// Whether `f` is the row kernel (`conv_rows::direct_conv_rows`): a stem over its phase
    /// copy ([`DirectConv::by_rows`]), or a pointwise product over the image itself
    /// ([`DirectConv::for_pointwise`]).
    pub row_kernel: bool,
}

impl DirectConv {
    /// The most output channels per group it takes on `isa` whatever the map and the depth:
    /// two registers' worth. The tiles have 4 to 12 rows, and 32 rows are two or three of
    /// them, where packing the patches costs more than the FMAs; on AVX2, whose tiles read a
    /// wide patch matrix in place (`gemm_simd::rows_kernel`), 16 for a 1 × 1 kernel (measured
    /// on the EPYC Zen 3, one thread, with the earlier kernel over one plane per channel in
    /// 4-pixel blocks: the dilated 3 × 3 32 → 32 on 64 × 64 1.03 ms direct, 0.99 as a GEMM on
    /// the 4 × 16 tile; the present kernel runs that one faster than the GEMM, and
    /// [`DirectConv::pays`] takes it and the other shapes where that was measured), and four
    /// registers, 32, for wider kernels, which the present kernel runs in blocks of four
    /// registers by 3 pixels: measured on the EPYC Zen 3 (each convolution alone, one
    /// thread, ms, GEMM → direct), DenseNet-121's 3 × 3 32 ← 128 on 7 × 7 (transposed)
    /// 0.095–0.112 → 0.048, on 14 × 14 (transposed) 0.23 → 0.16–0.19, on 56 × 56 (wide, a
    /// copy of 1.7 MB, three times L2) 2.91–3.03 → 2.53–2.57, 32 ← 256 on 14 × 14 (2304 taps)
    /// 0.46 → 0.33.
    pub fn max_rows(isa: Isa, g: &PatchGeom) -> usize {
        let regs = if isa == Isa::Avx2 && g.kh.saturating_mul(g.kw) > 1 {
            4
        } else {
            2
        };
        regs * isa.lanes()
    }
    /// The most floats of a padded copy (64 MiB).
    const MAX_PAD: usize = 1 << 24;
    /// About the taps per chunk of a direct convolution: 16 channels of a 3 × 3 kernel (with
    /// AVX2's four registers of channels, 18 KiB of weights, which stay in L1 with the rows of
    /// the image they read, however many taps the convolution has). Measured on the EPYC Zen 3
    /// against no chunks (all taps per pass), the median of alternating runs: 0.95–1.02 of its
    /// time (3 × 3 128 → 128 on 28 × 28 0.95 and 1.01, 64 → 64 on 56 × 56 0.99–1.01, the
    /// dilated 1.00, SqueezeNet 0.99, ResNet-18 0.99, the VGG block 1.02); 8 channels per chunk
    /// 1.05 on 128 → 128 on 28 × 28.
    pub const CHUNK: usize = 128;
    /// About the taps per chunk where the weights are larger than L2
    /// ([`DirectConv::prefetch`]) and the map has at most [`DirectConv::STREAMED_PIXELS`]
    /// pixels: 8 channels of a 3 × 3 kernel (72 taps), 64 of a 1 × 1. Measured on AVX-512 (a
    /// 2-vCPU Intel Xeon, family 6 model 167, L1d 48 KiB, L2 2 MiB; one thread, CPU time, ms,
    /// [`DirectConv::CHUNK`] → this, four alternations): each convolution alone, 3 × 3 512 →
    /// 512 on 7 × 7 1.74–1.76 → 1.63–1.66, 1024 → 1024 on 7 × 7 7.69–8.40 → 6.63–7.17, s2
    /// 512 ← 256 to 7 × 7 0.93 → 0.87–0.88, 1 × 1 2048 ← 512 on 7 × 7 0.79 → 0.76, 512 ← 2048
    /// 0.83 → 0.79, 2048 ← 1024 1.56 → 1.50; in ResNet-18's profile its four 3 × 3s on 7 × 7
    /// (weights read from memory there) 2.14 → 1.68–1.72 ms each and 1.11 → 0.88 (the s2
    /// one), the median run 27.7 → 26.4 (six alternations of the network: 28.1 → 26.4). On
    /// larger maps it gains nothing (3 × 3 256 → 256 and 512 → 512 on 14 × 14 0.99–1.00, 1 ×
    /// 1 1024 → 1024 on 14 × 14 0.99, ResNet-18 with its 14 × 14 ones too 1.00) or loses (512
    /// → 512 on 28 × 28 24.2 → 24.6). On AVX2, whose chunks hold half the channels (18 KiB of
    /// a 3 × 3's weights, not 36), alike (the 3 × 3 512 → 512 on 7 × 7 2.73–2.90 → 2.77–2.81,
    /// 1 × 1 512 ← 2048 1.17–1.38 → 1.16–1.19).
    pub const STREAMED_CHUNK: usize = 64;
    /// The most output pixels per map for which streamed weights take
    /// [`DirectConv::STREAMED_CHUNK`]: 8 × 8 (the 7 × 7 maps of the last stage of ResNets).
    pub const STREAMED_PIXELS: usize = 64;

    /// Whether a convolution with more than [`DirectConv::max_rows`] output channels runs
    /// directly on `isa` rather than as a GEMM: at stride 1, or at stride 2 with a kernel
    /// wider than 1 × 1, where the output rows fill blocks of 6 pixels (AVX2's blocks of two
    /// registers, AVX-512's of four; AVX2's 3-pixel blocks fill as well) to nine tenths at
    /// least (12 of 12 pixels, 28 of 30, 56 of 60, 64 of 66, not 14 of 18); on AVX2 with at
    /// most 576 taps (channels × kernel), or at most 1152 where the padded copy of the image
    /// fits L2 (four times L2 at stride 2); on AVX-512 with 64 to 9216 taps (32 for a 1 × 1
    /// kernel at stride 1) whatever the copy
    /// (a copy larger than L2 in bands of rows whose copy fits half of it,
    /// [`DirectConv::band`]), and with a kernel
    /// wider than 1 × 1 whatever the width of the rows (a row's last pixels run in a block of
    /// as many: 3 × 3 128 → 128 on 14 × 14 0.81 of the GEMM's time, on 7 × 7 0.79, 64 → 64
    /// on 13 × 13 0.73, Inception v2 0.93, SqueezeNet and Inception v1 0.98; 1 × 1s on 14 ×
    /// 14 and 7 × 7 0.98–1.01).
    ///
    /// Measured on AVX-512 (a 2-vCPU Intel Xeon, family 6 model 207, L2 2 MiB, though until
    /// [`cache_size`] read it the limits took 1 MiB; direct / GEMM, the median of 10
    /// alternating pairs of processes, one thread): 3 × 3 64 → 64 on 56 × 56 0.87–0.88, 128 →
    /// 128 on 28 × 28 0.86, 96 → 128 on 28 × 28 0.86, 32 → 64 on 112 × 112 0.89, 64 ← 8 on 56
    /// × 56 0.94, s2 128 ← 64 and 128 ← 128 on 56 × 56 0.85 and 0.87, the 7 × 7 s2 stem
    /// 0.94–0.97; the VGG block 0.88–0.90, ResNet-18 0.91–0.96, Inception v1 and v2
    /// 0.95–0.98, ResNet-50 0.97, DenseNet-121 0.98, SqueezeNet 0.99; the 1 × 1s within 2 %
    /// either way. With L2 read as 2 MiB, VGG-19's 3 × 3 512 → 512 on 28 × 28 (a 1.8 MB copy)
    /// runs directly in 0.74 of the GEMM's time (one profile). From 1152 to 4608 taps (each
    /// block of output channels over all the pixels, the weights larger than L2 asked for
    /// ahead, [`DirectConv::prefetch`]): six 3 × 3 512 → 512 on 7 × 7 in a chain 0.81–0.84 of
    /// the GEMM's time, eight 256 → 256 on 14 × 14 0.99, ResNet-18 0.94–0.96 (two threads
    /// 0.92), ResNet-50 0.97–0.98 (two threads 0.93) (with up to 4608 taps before those two:
    /// 1.00 and 0.98 on one map, ResNet-18 1.01). Up to 9216 taps (3 × 3 over 1024 channels),
    /// on an Intel Xeon (family 6 model 167, L2 2 MiB; Wide ResNet-50-2's profile, two
    /// alternations, transposed GEMM → direct, ms): its 3 × 3 1024 → 1024 on 7 × 7 10.23–10.44
    /// → 8.39–8.78 (ONNX Runtime's 8.38), the s2 one 10.88–11.02 → 8.97–9.47, the network's
    /// median run 173.2–173.9 → 166.2–169.0. Not taken: fewer than 64 taps (SqueezeNet's
    /// 3 × 3 s2 64 ← 3, 27 taps, 1.3–1.5: the stores of its cold output outweigh its few
    /// FMAs) and, copied whole, copies larger than L2 (VGG-19's 64 → 128 on 112 × 112 1.05, 64 → 64 on 224 ×
    /// 224 1.00; VGG-19 with them 1.11; with the present kernel 3 × 3 256 → 256 on 56 × 56
    /// 0.89 and 128 → 128 on 112 × 112 0.92 alone, but VGG-19 with them 1.02–1.06). In bands
    /// (each band's rows copied just before its pixels run, read from L2, not from memory),
    /// with 1024 taps or more: 128 → 128 on 112 × 112 0.93–0.99 (one pair set 1.09), 256 →
    /// 256 on 56 × 56 0.96–1.02, VGG-19 0.92–1.00 (two threads 0.88 and 1.09: noise of a host
    /// in two speeds); with 576 taps (64 → 64 on 224 × 224) 1.09 there. On an AMD EPYC Zen 4
    /// (family 25 model 17, L2 1 MiB; each convolution alone, one thread, ms, GEMM → direct
    /// in bands, two runs) fewer taps pay too: 3 × 3 64 → 64 on 224 × 224 (576 taps) 38.6–39.0
    /// → 35.7–36.1, 128 ← 64 on 112 × 112 18.7–19.8 → 17.2–17.6, 96 ← 64 on 112 × 112
    /// 13.9–14.5 → 13.1–13.2, 64 ← 32 on 112 × 112 (288) 4.65 → 4.33–4.51, on 147 × 147 8.24–8.30
    /// → 7.68–7.95, 128 ← 16 on 224 × 224 (144) 23.3–23.5 → 19.9; in their networks (the median
    /// of 4 alternating pairs of processes, CPU time) VGG-19 0.992, Inception v3 0.985,
    /// VGG-11-BN 1.004 (0.98–1.02). On an Intel Xeon with AMX and AVX-512-FP16 (family 6
    /// model 167, L2 2 MiB, two full-width FMA units: 240 GFLOP/s per core), banded, the same
    /// 128 ← 16 on 224 × 224 (144 taps) takes 17.7–19.7 ms where the wide GEMM takes 13.1–14.0
    /// (three alternations), while 288 taps (64 ← 32 on 147 × 147 5.12–5.42 → 4.86–5.17) and
    /// 576 (128 ← 64 on 112 × 112 11.2–11.5 → 10.5–11.1; 64 → 64 on 224 × 224 24.1–27.2 →
    /// 24.0–26.9) still pay: in bands, from 256 taps. Copied whole (the copy within L2),
    /// 144 taps pay there too: 64 ← 16 on 55 × 55 0.39 → 0.34, 128 ← 16 on 112 × 112 3.36–3.44
    /// → 3.14–3.25. There too, 1 × 1 downsamples (stride 2) whose output has at most
    /// [`DirectConv::DOWNSAMPLE_PIXELS`] pixels run directly, whatever their rows fill (`kiln
    /// bench --profile` of each network, twice each, ms, GEMM → direct): ResNet-50's 2048 ←
    /// 1024 to 7 × 7 2.30–2.33 → 1.84–1.86 (ONNX Runtime 1.84–1.88), its 1024 ← 512 to 14 × 14
    /// 1.63–1.72 → 1.65–1.70; ResNet-18's 512 ← 256 to 7 × 7 0.168–0.176 → 0.142–0.147, 256 ←
    /// 128 to 14 × 14 0.141–0.144 → 0.129–0.133; to 28 × 28 they stay GEMMs.
    ///
    /// On AVX2 (EPYC Zen 3, L2 512 KiB, which the limits took as 1 MiB until [`cache_size`]
    /// read it): the tap and copy limits were measured with the kernel before the present
    /// one, which streamed all of a block's weights per 6 pixels;
    /// the present kernel (taps in L1-sized chunks) was measured on 14 × 14 maps and up to
    /// 2304 taps without a gain (3 × 3 256 → 256 on 14 × 14 1.06, Inception v1, v2 and
    /// DenseNet-121 1.00–1.01), so they stay. Measured on the EPYC Zen 3 (direct /
    /// GEMM time, the median of 30–300 alternating pairs in one process, one thread unless
    /// said): up to 1152 taps, 3 × 3 128 → 128 on 28 × 28 (a 460 KB copy, L2 512 KiB) 0.93
    /// (three runs), 96 → 128 on 28 × 28 0.90, 128 → 32 on 28 × 28 (DenseNet's) 0.86,
    /// ResNet-18 0.97–0.99 (two threads 0.98–0.99), DenseNet-121 0.97–0.99; but where the copy
    /// is larger than L2, 128 → 32 on 56 × 56 0.98 and VGG-19's 128 → 128 on 112 × 112 1.24
    /// (every block of 16 output channels streams the copy from L3). At stride 2, ResNet-50's
    /// 3 × 3 s2 128 ← 128 on 56 × 56 (1152 taps, a 1.66 MB copy) 0.83, ResNet-18's 3 × 3 s2
    /// 128 ← 64 on 56 × 56 0.81–0.86 (two threads 0.81), but its 1 × 1 s2 downsample 128 ← 64
    /// 1.31; over fewer than 8 channels (planes) with the present kernel, SqueezeNet's 3 × 3 s2
    /// 64 ← 3 on 224 × 224 0.90 (two threads 0.92), the 7 × 7 s2 stem of ResNet-18 1.01 (two
    /// threads 0.96; with the kernel before, 1.64 and 1.09); at stride 1, the dilated 3 × 3 32
    /// → 32 on 64 × 64 0.82–0.95 alone, in its network 0.84–0.94 (two threads 0.83–0.93), the
    /// VGG block 0.97–0.98 (two threads 1.01–1.07), 16 → 32 on 12 × 12 0.80, 64 → 64 on 56 × 56
    /// 0.97–1.01; ResNet-18, ResNet-50 and VGG-19 within 1.5 % either way. With more taps (the
    /// kernel before): 128 → 128 on 28 × 28 0.92–1.00 alone, but VGG-19 with every convolution
    /// direct 1.23; on 14 × 14 (blocks 6, 6 and 2) 64 → 96 1.15, 48 → 192 on 13 × 13 1.25.
    pub fn pays(isa: Isa, g: &PatchGeom, channels: usize) -> bool {
        // the pixels of the blocks the rows must fill: AVX2's blocks of two registers (its
        // blocks of four, half as wide, fill as well), AVX-512's of four
        let p = match isa {
            Isa::Avx512 => crate::direct::quad_block(isa.lanes()),
            _ => crate::direct::pixel_block(isa.lanes()),
        };
        // a 1 × 1 downsample (stride 2) on AVX-512 whose output is small
        let downsample = isa == Isa::Avx512
            && g.stride == [2, 2]
            && g.kh.saturating_mul(g.kw) == 1
            && g.oh.saturating_mul(g.ow) <= DirectConv::DOWNSAMPLE_PIXELS;
        let strided = g.stride == [2, 2] && (g.kh.saturating_mul(g.kw) > 1 || downsample);
        let taps = channels.saturating_mul(g.kh).saturating_mul(g.kw);
        // a pointwise kernel (read in place where its output channels are few, no copy) pays
        // from 32 channels in on AVX-512 (one thread, each alone with its bias and ReLU, ms,
        // transposed GEMM → direct: on 14 × 14, 288 ← 48 0.051–0.052 → 0.049–0.050, 240 ← 40
        // 0.045 → 0.039, 192 ← 32 0.026 either way, 144 ← 24 and 96 ← 16 too; MNASNet's
        // five of them in its profile 0.255 → 0.228), other kernels from 64 taps
        let floor = if g.kh.saturating_mul(g.kw) == 1 && g.stride == [1, 1] {
            32
        } else {
            64
        };
        // the padded copy of the image the taps read, in bytes
        let copy = g
            .spans()
            .and_then(|[hp, wp]| channels.checked_mul(hp)?.checked_mul(wp)?.checked_mul(4));
        // (at stride 2 the wide product reads four phases of a copy as large, and loses more)
        let fits = cache_size(2)
            .unwrap_or(1 << 20)
            .saturating_mul(if strided { 4 } else { 1 });
        let fits_l2 = copy.is_some_and(|c| c <= fits);
        let taps_ok = match isa {
            Isa::Avx2 => taps <= 576 || (taps <= 1152 && fits_l2),
            // (in bands, 144 taps lost to the wide GEMM on a host with two full-width FMA
            // units where 288 paid: the doc above)
            Isa::Avx512 => (floor..=9216).contains(&taps) && (fits_l2 || taps >= 256),
            Isa::Cranelift => false,
        };
        // (AVX-512 runs a row's last pixels in a smaller block, which pays for kernels wider
        // than 1 × 1 however the rows fill the blocks)
        let fills = g.ow * 10 >= g.ow.div_ceil(p) * p * 9;
        taps_ok
            && (g.stride == [1, 1] || strided)
            && (fills || (isa == Isa::Avx512 && g.kh.saturating_mul(g.kw) > 1) || downsample)
    }

    /// The direct form of the patches of `g` over `channels` channels for `rows` output
    /// channels, on `isa`'s kernels; `None` where the product stays a GEMM.
    pub fn new(isa: Isa, g: &PatchGeom, channels: usize, rows: usize) -> Option<DirectConv> {
        let k = crate::direct::kernels(isa)?;
        if let Some(dc) = DirectConv::by_rows(isa, g, channels, rows) {
            return Some(dc);
        }
        // at least half the lanes of the channel registers used (measured on LeNet-5's conv1,
        // 6 channels: the GEMM was faster on AVX-512's 16 lanes, slower on AVX2's 8)
        let lanes = isa.lanes();
        if rows == 0
            || (rows > DirectConv::max_rows(isa, g) && !DirectConv::pays(isa, g, channels))
            || rows * 2 < rows.div_ceil(lanes.max(1)) * lanes
            || g.oh == 0
            || g.ow == 0
            || g.kh == 0
            || g.kw == 0
        {
            return None;
        }
        let [hp, wp] = g.spans()?;
        // a pointwise kernel into few channels reads the image itself ([`DirectConv::in_place`])
        let in_place = g.kh == 1
            && g.kw == 1
            && g.stride == [1, 1]
            && g.pad == [0, 0]
            && [hp, wp] == [g.h, g.w]
            && rows <= DirectConv::IN_PLACE_ROWS;
        // the channels side by side in blocks of 8 (a block of pixels reads a few whole lines
        // per row of taps, not a line per channel)
        let cb = if channels >= BLOCK && !in_place { BLOCK } else { 1 };
        // the copy (none in place), with its slack: room for a block of pixels past a row's
        // end (the kernel runs a row's last pixels in a block of as many and reads none there;
        // kept as a margin)
        let pad_len = if in_place {
            0
        } else {
            let slack = (crate::direct::DIRECT_CONV_PIXELS - 1)
                .checked_mul(g.stride[1])?
                .checked_mul(cb)?;
            channels
                .div_ceil(cb)
                .checked_mul(cb)?
                .checked_mul(hp)?
                .checked_mul(wp)?
                .checked_add(slack)?
        };
        let taps = g.kh.checked_mul(g.kw)?;
        let prefetch = channels
            .saturating_mul(taps)
            .saturating_mul(rows.next_multiple_of(lanes))
            .saturating_mul(4)
            > cache_size(2).unwrap_or(1 << 20);
        // whole blocks of channels' taps, at least one block
        let per_chunk = if prefetch && g.oh.saturating_mul(g.ow) <= DirectConv::STREAMED_PIXELS {
            DirectConv::STREAMED_CHUNK
        } else {
            DirectConv::CHUNK
        };
        let chunk = (per_chunk / taps).max(1).next_multiple_of(cb).checked_mul(taps)?;
        // (an image read in place is not copied, so not in bands)
        let band = if in_place {
            g.oh.checked_mul(g.ow)?
        } else {
            DirectConv::band_of(isa, g, channels.div_ceil(cb).checked_mul(cb)?, [hp, wp])?
        };
        (pad_len <= DirectConv::MAX_PAD).then_some(DirectConv {
            f: k.direct_conv,
            lanes,
            panel: 2 * lanes,
            cb,
            hp,
            wp,
            pad_len,
            chunk,
            prefetch,
            band,
            finish: false,
            phases: None,
            in_place,
            span: 0,
            row_kernel: false,
        })
    }

    /// The most output channels of a pointwise convolution that reads its image in place
    /// ([`DirectConv::in_place`]) rather than from a copy in blocks of 8 channels. Measured on
    /// AVX-512 (an Intel Xeon, family 6 model 167; one thread, each convolution alone with its
    /// bias and ReLU, `kiln bench --profile`, ms, two alternations, copy → in place): on 14 ×
    /// 14, 32 ← 512 0.057 → 0.042 (ONNX Runtime's NCHWc kernel 0.037), 48 ← 240 0.042 → 0.036
    /// (0.026), 64 ← 512 0.088 → 0.075 (0.067), 128 ← 512 0.176 → 0.165, 192 ← 480 0.236–0.240 →
    /// 0.231, 256 ← 528 0.347 → 0.340, 256 ← 1024 0.670–0.674 → 0.662–0.667; on 7 × 7, 96 ←
    /// 576 0.042 → 0.037 (0.030), 384 ← 832 0.206–0.209 → 0.207; but 512 ← 1024 on 14 × 14
    /// 1.324 → 1.337–1.348, and in ResNet-50's profile 512 ← 1024 1.39 → 1.45. The copy, a
    /// gather of eight planes per line, was a fifth of the smaller ones' time; the more
    /// blocks of output channels read the image again, the more its blocked lines pay (a
    /// 1 × 1 at stride 2 read in place: 1024 ← 512 to 14 × 14 1.49–1.52 → 1.64–1.79, so those
    /// keep their copy).
    pub const IN_PLACE_ROWS: usize = 256;

    /// The most channels of an image the row kernel takes ([`DirectConv::by_rows`]).
    pub const ROW_CHANNELS_MAX: usize = 4;

    /// The taps below which the row kernel takes a stem on AVX-512 ([`DirectConv::by_rows`]):
    /// 160, a 7 × 7 kernel over 3 channels (147) and less, not AlexNet's 11 × 11 (363).
    pub const ROW_TAPS_AVX512: usize = 160;

    /// The direct form of the patches of `g` over `channels` channels on the row kernel
    /// (`conv_rows::direct_conv_rows`: output pixels in the registers, a block of pixels by
    /// five channels summing every tap in registers and stored straight into C), over the
    /// phase copy of a wide product ([`Shifted::phases`]), where it pays: a network's
    /// stem (at most [`DirectConv::ROW_CHANNELS_MAX`] channels), its output rows at least two
    /// registers wide, the copy within L2 — on AVX-512 into any number of output channels with
    /// fewer than [`DirectConv::ROW_TAPS_AVX512`] taps, on AVX2 into more output channels than
    /// [`DirectConv::max_rows`] with fewer than 64 taps. `None` elsewhere.
    ///
    /// Measured on an Intel Xeon (family 6 model 167; one thread, each convolution alone with
    /// its bias and ReLU, ms, five alternating pairs of processes, the form it replaces →
    /// rows): AVX-512 3 × 3 s2 64 ← 3 to 111 × 111 (SqueezeNet 1.1's) 0.68 (wide GEMM) → 0.45–
    /// 0.54, 3 × 3 64 ← 3 on 224 × 224 (VGG's) 2.16–2.24 (wide GEMM) → 2.01–2.09; AVX2 the
    /// same 3.39 → 2.81–2.91 (channel-vectorized) and 0.75 → 0.75. Where the
    /// channel-vectorized kernel runs a stem it stays (AVX-512, five pairs): 7 × 7 s2 64 ← 3
    /// (ResNet's) 1.78–1.81 against 1.80–1.84 by rows, 3 × 3 s2 32 ← 3 on 299 × 299 0.65–0.67
    /// against 0.66–0.69, 16 ← 3 on 224 × 224 0.22 against 0.21–0.23. On an Intel Xeon of
    /// family 6 model 207 (the same cores, L2 2 MiB; one thread, each convolution alone with
    /// its bias and ReLU, `kiln bench --profile`, ms, three or four alternations,
    /// channel-vectorized → rows) the row kernel wins them all: 3 × 3 s2 16 ← 3 on 224 × 224
    /// 0.211 → 0.167, 24 ← 3 0.29–0.30 → 0.22, 32 ← 3 0.325 → 0.278, 32 ← 3 on 299 × 299 (no
    /// padding) 0.64 → 0.545, 7 × 7 s2 64 ← 3 1.77–1.79 → 1.62–1.66; AlexNet's 11 × 11 s4 64 ← 3
    /// (363 taps) stays a GEMM (1.13–1.14 against 1.27–1.28 by rows).
    pub fn by_rows(isa: Isa, g: &PatchGeom, channels: usize, rows: usize) -> Option<DirectConv> {
        let k = crate::direct::kernels(isa)?;
        let lanes = isa.lanes();
        let taps = channels.checked_mul(g.kh)?.checked_mul(g.kw)?;
        // (AVX-512: any number of output channels, up to a 7 × 7 kernel over 3 channels)
        let (rows_ok, most_taps) = match isa {
            Isa::Avx512 => (true, DirectConv::ROW_TAPS_AVX512),
            _ => (rows > DirectConv::max_rows(isa, g), 64),
        };
        if rows == 0
            || channels == 0
            || channels > DirectConv::ROW_CHANNELS_MAX
            || !rows_ok
            || taps >= most_taps
            || g.ow < 2 * lanes
        {
            return None;
        }
        let sh = Shifted::phases(g, channels)?;
        let pad_len = sh.len.checked_add(crate::conv_rows::row_slack(lanes))?;
        // every read of the kernel within the copy and its slack, or another form
        if pad_len.checked_mul(4)? > cache_size(2).unwrap_or(1 << 20) || sh.row_reach(g, lanes)? > pad_len {
            return None;
        }
        Some(DirectConv {
            f: k.direct_conv_rows,
            lanes,
            panel: 2 * lanes,
            cb: 1,
            hp: sh.hp,
            wp: sh.wp,
            pad_len,
            chunk: taps,
            prefetch: false,
            band: g.oh.checked_mul(g.ow)?,
            finish: false,
            phases: Some(sh),
            in_place: false,
            // (all of an output row before the next where the weights are small)
            span: if taps.saturating_mul(rows).saturating_mul(4) <= crate::conv_rows::ROWS_FIRST_WEIGHTS {
                usize::MAX
            } else {
                0
            },
            row_kernel: true,
        })
    }

    /// The most pixels per image of a pointwise product that runs directly
    /// ([`DirectConv::for_pointwise`]): a 17 × 17 map (289), where the transposed GEMM it
    /// replaces gathers and packs its B per run. Measured on an Intel Xeon (family 6 model
    /// 167; one thread, `kiln bench --profile`, ms): alone, transposed GEMM → direct, 192 ← 768
    /// on 17 × 17 0.620–0.639 → 0.603–0.627, 160 ← 768 0.520–0.523 → 0.504–0.511, 128 ← 768
    /// 0.419–0.423 → 0.385–0.389, 64 ← 64 0.022–0.024 → 0.022; in Inception v3's profile (three
    /// alternations) each of its 1 × 1s on 17 × 17 over 768 channels 0.04–0.10 faster (192 ←
    /// 768 0.74–0.77 → 0.64–0.71). On 20 × 20 (400 pixels) the plain GEMM still wins: 192 ← 768
    /// 0.79–0.81 → 0.85 (but 128 ← 256, a transposed GEMM, 0.198 → 0.187).
    pub const POINTWISE_PIXELS: usize = 289;

    /// The most pixels per image of a pointwise product that runs directly when it is deep
    /// (at least [`DirectConv::POINTWISE_DEEP_K`] channels in, fewer than
    /// [`DirectConv::POINTWISE_DEEP_WEIGHTS`] weights) into 64 or 128 output channels
    /// (one or two of the kernel's blocks of four registers on AVX-512): a 28 × 28 map (784).
    /// Measured on an Intel Xeon (family 6 model 207, L2 2 MiB; one thread, each convolution
    /// alone with its bias and ReLU, `kiln bench --profile`, the fastest of five alternations,
    /// ms, GEMM → direct): on 28 × 28, 64 ← 256 0.199 → 0.177, 64 ← 192 0.148 → 0.132, 64 ←
    /// 480 0.388 → 0.341, 128 ← 256 0.372 → 0.351, 128 ← 320 0.468 → 0.440, 128 ← 416 0.618 →
    /// 0.590, 128 ← 512 0.775 → 0.767; on 27 × 27, 64 ← 256 0.190 → 0.162. Not taken: fewer
    /// channels in (128 ← 128 0.19 → 0.26, 64 ← 64 0.052 → 0.055, 128 ← 32 on 27 × 27 0.073 →
    /// 0.077), other numbers of output channels (96 ← 192 0.209 → 0.217, 256 ← 128 0.37 →
    /// 0.48, 512 ← 128 0.71 → 0.84: the blocks of two registers, or the image read again per
    /// block), and 35 × 35 maps (64 ← 288 0.362 → 0.425, 48 ← 256 0.255 → 0.347).
    pub const POINTWISE_PIXELS_DEEP: usize = 784;

    /// The fewest channels in of a deep pointwise product ([`DirectConv::POINTWISE_PIXELS_DEEP`]).
    pub const POINTWISE_DEEP_K: usize = 192;

    /// The fewest channels in of a pointwise product into at most [`DirectConv::max_rows`]
    /// channels that runs directly on up to [`DirectConv::POINTWISE_PIXELS_DEEP`] pixels,
    /// rather than as a GEMM that reads its B in place. Measured on an Intel Xeon (family 6
    /// model 167; one thread, each convolution alone with its bias and ReLU, `kiln bench
    /// --profile`, ms, two alternations, GEMM → direct): 32 ← 192 on 28 × 28 0.088–0.093 →
    /// 0.077, 32 ← 256 on 28 × 28 0.120 → 0.103, 32 ← 128 on 27 × 27 0.057–0.058 → 0.052; not
    /// on larger maps (32 ← 192 on 35 × 35 0.128–0.130 → 0.135, 16 ← 128 on 55 × 55
    /// 0.146–0.153 → 0.216, 24 ← 144 on 56 × 56 0.192–0.197 → 0.319–0.321, 24 ← 96 on 56 × 56
    /// 0.132 → 0.190–0.211, 16 ← 64 on 55 × 55 0.059 → 0.074–0.084, 16 ← 32 on 112 × 112
    /// 0.149–0.152 → 0.200). The least channels in measured on a small map is 128: below it
    /// the products stay GEMMs unmeasured.
    pub const POINTWISE_FEW_K: usize = 128;

    /// The weights (floats) a deep pointwise product stays below
    /// ([`DirectConv::POINTWISE_PIXELS_DEEP`]): 128 ← 512 on 28 × 28 was no faster directly
    /// (0.99 of the GEMM's time alone; ResNet-50's three in its profile 2.32 → 2.35 ms, four
    /// alternations).
    pub const POINTWISE_DEEP_WEIGHTS: usize = 1 << 16;

    /// The most output pixels per image of a 1 × 1 downsample (stride 2) that runs directly
    /// on AVX-512 ([`DirectConv::pays`], which gives the measurements): 16 × 16 (256).
    pub const DOWNSAMPLE_PIXELS: usize = 256;

    /// The direct form of a pointwise product — B the images themselves, `k` channels by `l`
    /// pixels each, as a 1 × 1, stride-1 convolution's, read as one row of `l` pixels
    /// ([`PatchGeom::matrix`]) — for `rows` output channels, with that geometry: on AVX-512
    /// over at most [`DirectConv::POINTWISE_PIXELS`] pixels (at most
    /// [`DirectConv::POINTWISE_PIXELS_DEEP`] for deep products into 64 or 128 channels, and
    /// for products into at most two registers of channels from
    /// [`DirectConv::POINTWISE_FEW_K`] channels or more): the
    /// row kernel where
    /// [`DirectConv::pointwise_by_rows`] takes it (few channels in), else the
    /// channel-vectorized kernel where [`DirectConv::new`] takes it (32 to 9216 channels in,
    /// or few output channels). `None` where the product stays a GEMM.
    ///
    /// Measured on an Intel Xeon (family 6 model 167, L2 2 MiB; one thread, each convolution
    /// alone with its bias and ReLU, two alternations, ms, GEMM → direct): on 7 × 7, 352 ← 1024
    /// 0.250 and 0.249 → 0.236 and 0.223, 128 ← 1024 0.096 and 0.092 → 0.088 and 0.091, 512 ←
    /// 512 0.179 → 0.171 and 0.175, 2048 ← 512 0.771 and 0.721 → 0.741 and 0.705, 512 ← 2048
    /// 0.765 and 0.786 → 0.778 and 0.790; on 13 × 13, 1000 ← 512 1.24 and 1.18 → 1.16 and
    /// 1.13, 64 ← 512 0.095 and 0.091 → 0.086 and 0.084; on 14 × 14, 1024 ← 256 0.713 and
    /// 0.719 → 0.683 and 0.673, 256 ← 1024 and 128 ← 576 within 2 %. In a network the gain is
    /// larger (the GEMM's transposed product gathers and packs its B per run): Inception v2's
    /// 1 × 1s on 7 × 7 over 1024 channels (eight of them; `kiln bench --profile`, once each) 2.36 →
    /// 1.74 ms, ResNet-50's 2048 ← 512 and 512 ← 2048 on 7 × 7 5.62 → 4.54 ms, its 1024 ← 256
    /// and 256 ← 1024 on 14 × 14 9.14 → 8.30. On 28 × 28 (784 pixels) the GEMM won there: 64 ←
    /// 256 0.200 → 0.215, 128 ← 512 0.685 → 0.750, 512 ← 128 0.67–0.69 → 0.71–0.78 (on the
    /// family 6 model 207 host, with the present kernel, the deep products into 64 or 128
    /// channels run directly: [`DirectConv::POINTWISE_PIXELS_DEEP`]); on 56 × 56
    /// (ResNet-50's 256 ← 64 and 64 ← 256) 0.96 → 1.5 and 0.85 → 1.03.
    pub fn for_pointwise(isa: Isa, k: usize, rows: usize, l: usize) -> Option<(DirectConv, PatchGeom)> {
        if isa != Isa::Avx512 {
            return None;
        }
        let geom = PatchGeom::matrix(l);
        if let Some(dc) = DirectConv::pointwise_by_rows(isa, k, l) {
            return Some((dc, geom));
        }
        // (on larger maps, deep products into one or two blocks of four registers of channels;
        // threads share them by runs of pixels, `GemmDesc::split`)
        let deep = l <= DirectConv::POINTWISE_PIXELS_DEEP
            && k >= DirectConv::POINTWISE_DEEP_K
            && rows.is_multiple_of(4 * isa.lanes())
            && rows <= 8 * isa.lanes()
            && rows.saturating_mul(k) < DirectConv::POINTWISE_DEEP_WEIGHTS;
        // (and products into few channels, at most two registers, from many channels in)
        let few = l <= DirectConv::POINTWISE_PIXELS_DEEP
            && k >= DirectConv::POINTWISE_FEW_K
            && rows <= DirectConv::max_rows(isa, &geom);
        if l > DirectConv::POINTWISE_PIXELS && !deep && !few {
            return None;
        }
        Some((DirectConv::new(isa, &geom, k, rows)?, geom))
    }

    /// The row kernel (`conv_rows::direct_conv_rows`: pixels in the registers, stored straight
    /// into C's rows, no transposition) for a pointwise product over `k` channels of `l` pixels
    /// read in place, where it pays on AVX-512: at most [`DirectConv::POINTWISE_PIXELS`] pixels,
    /// whose registers waste at most an eighth of their lanes (13 × 13, 14 × 14, 17 × 17, 10 ×
    /// 10, not 7 × 7), and few enough channels that the image's floats of a span of
    /// [`crate::conv_rows::row_registers`] registers of pixels fill at most half of L1 (96 on
    /// an L1d of 48 KiB): every block of output channels then takes such a span
    /// ([`DirectConv::span`]) from L1 before the next span. `None` elsewhere.
    ///
    /// Measured on AVX-512 (an Intel Xeon, family 6 model 207, L1d 48 KiB; one thread, each
    /// convolution alone with its bias and ReLU, `kiln bench --profile`, ms, two alternations,
    /// channel-vectorized → rows): on 14 × 14, 576 ← 96 0.165–0.168 → 0.156–0.157, 384 ← 64
    /// 0.083 → 0.075, 480 ← 80 0.120–0.121 → 0.111–0.113, 288 ← 48 0.054 → 0.045, 240 ← 40
    /// 0.040 → 0.035, 192 ← 32 0.028 → 0.023–0.025; on 13 × 13, 256 ← 64 0.048–0.051 → 0.042,
    /// 192 ← 48 0.032–0.038 → 0.027; on 10 × 10, 480 ← 80 0.063 → 0.060. Where it does not pay:
    /// 672 ← 112 on 14 × 14 0.220 either way, 768 ← 128 on 17 × 17 0.44 → 0.53 (a span of
    /// three registers), 96 ← 576 0.138 → 0.21 (the span's floats from L2), 576 ← 96 on 7 × 7
    /// 0.045 → 0.049 (49 pixels in four registers); on larger maps, against the GEMM, 144 ← 24
    /// on 56 × 56 0.186 → 0.212, 512 ← 128 on 28 × 28 0.70 → 0.73.
    pub fn pointwise_by_rows(isa: Isa, k: usize, l: usize) -> Option<DirectConv> {
        let kern = crate::direct::kernels(isa)?;
        let lanes = isa.lanes();
        let step = crate::conv_rows::row_registers(lanes).checked_mul(lanes)?;
        let l1 = cache_size(1).unwrap_or(32 << 10);
        let span = (l1 / 2 / k.checked_mul(4)?.max(1)) / step * step;
        if isa != Isa::Avx512
            || k == 0
            || l == 0
            || l > DirectConv::POINTWISE_PIXELS
            || l.div_ceil(lanes).checked_mul(lanes)?.checked_mul(8)? > l.checked_mul(9)?
            || span < step
        {
            return None;
        }
        Some(DirectConv {
            f: kern.direct_conv_rows,
            lanes,
            panel: 2 * lanes,
            cb: 1,
            hp: 1,
            wp: l,
            pad_len: 0,
            chunk: k,
            prefetch: false,
            band: l,
            finish: false,
            phases: None,
            in_place: true,
            span,
            row_kernel: true,
        })
    }

    /// [`DirectConv::band`] for a copy of `channels` planes of `hp × wp` on `isa`: bands on
    /// AVX-512 only (on the AVX2 tier, 3 × 3 64 → 64 on 224 × 224 in bands took 1.04 of the
    /// time of one copy, VGG-19 1.00; measured on the Intel Xeon of [`DirectConv::pays`]).
    fn band_of(isa: Isa, g: &PatchGeom, channels: usize, [hp, wp]: [usize; 2]) -> Option<usize> {
        let all = g.oh.checked_mul(g.ow)?;
        let l2 = cache_size(2).unwrap_or(1 << 20);
        let row = channels.checked_mul(wp)?.checked_mul(4)?.max(1);
        if isa != Isa::Avx512 || row.checked_mul(hp)? <= l2 {
            return Some(all);
        }
        // output rows r read (r − 1)·stride + the kernel's extent padded rows
        let extent = (g.kh.max(1) - 1).checked_mul(g.dilation[0])? + 1;
        let rows = (l2 / 2 / row).saturating_sub(extent) / g.stride[0].max(1) + 1;
        rows.min(g.oh).checked_mul(g.ow)
    }

    /// The padded rows `[r0, r1)` of the copy the output pixels `cols` (`y·ow + x`) read (of
    /// each phase, for the row kernel: a phase's row `r` is the padded image's row `r·s_h +
    /// p_y`).
    fn copy_rows(&self, g: &PatchGeom, cols: [usize; 2]) -> [usize; 2] {
        if cols[0] >= cols[1] || g.ow == 0 {
            return [0, 0];
        }
        let (y0, y1) = (cols[0] / g.ow, (cols[1] - 1) / g.ow);
        if self.phases.is_some() {
            let ext_h = (g.kh.max(1) - 1) * g.dilation[0] / g.stride[0].max(1);
            return [y0.min(self.hp), (y1 + ext_h + 1).min(self.hp)];
        }
        let r1 = y1 * g.stride[0] + (g.kh.max(1) - 1) * g.dilation[0] + 1;
        [(y0 * g.stride[0]).min(self.hp), r1.min(self.hp)]
    }
}

impl GemmDesc {
    /// One group's product of A at `a` and `b` into C at `c` (the item's: `mg × l`, rows `l`
    /// apart), each finished block handed to `done`.
    fn problem<'a>(&self, a: *const f32, b: BSource, c: *mut f32, done: &'a dyn Fn(Block)) -> Problem<'a> {
        Problem {
            m: self.mg,
            n: self.l,
            k: self.kg,
            a,
            lda: self.kg,
            b,
            c,
            ldc: self.l,
            epilogue: Some(done),
        }
    }

    fn m_blocks(&self) -> usize {
        self.mg.div_ceil(self.m_step).max(1)
    }
    fn n_blocks(&self) -> usize {
        self.cols().div_ceil(self.n_step).max(1)
    }

    /// The columns of one group's product as the driver computes them: `l`, or the wide
    /// columns of a [`Shifted`] product.
    pub fn cols(&self) -> usize {
        match self.b {
            BArena::Patches {
                shifted: Some(sh),
                swap: None,
                ..
            } => sh.cols,
            _ => self.l,
        }
    }

    /// The number of independent work items.
    pub fn items(&self) -> usize {
        self.batch * self.groups * self.m_blocks() * self.n_blocks()
    }

    /// Whether a thread may run its items in many small calls at little extra cost: not when
    /// the product is cut along its rows alone, where every call prepares all of its image's
    /// columns of B again (packs them, or copies the padded image), and the more calls the
    /// more of that (ResNet-18's 14×14 and 7×7 convolutions were 7–10 % slower on two threads
    /// run in three or four calls each than in one; the 1×1 of layer4 2.3×).
    pub fn fine_slices(&self) -> bool {
        self.m_blocks() == 1 || self.n_blocks() > 1
    }

    /// How the driver computes the product, as the profile names it: `direct conv` (the
    /// tier's direct kernel, [`DirectConv`]), `row conv` (its row kernel,
    /// [`DirectConv::by_rows`]), `transposed gemm` ([`Swap`]), `wide gemm`
    /// ([`Shifted`]) or `gemm` (the tiles over packed or in-place panels of B).
    pub fn form(&self) -> &'static str {
        match (self.direct, self.swap(), self.b) {
            (Some(DirectConv { row_kernel: true, .. }), _, _) => "row conv",
            (Some(_), _, _) => "direct conv",
            (None, Some(_), _) => "transposed gemm",
            (None, None, BArena::Patches { shifted: Some(_), .. }) => "wide gemm",
            _ => "gemm",
        }
    }

    /// The transposed form of the product ([`Swap`]), when it runs (not a direct convolution).
    pub fn swap(&self) -> Option<Swap> {
        match self.b {
            BArena::Patches { swap, .. } if self.direct.is_none() => swap,
            _ => None,
        }
    }

    /// The tile and blocking A is packed for: the kernel's, a transposed product's B panels,
    /// or a direct convolution's weight panels (one K block: every tap of a panel's channels
    /// together, `DirectConvJob::wt`'s layout).
    fn a_packing(&self) -> (MicroKernel, Blocking) {
        match (self.direct, self.swap()) {
            (Some(dc), _) => (
                MicroKernel {
                    mr: dc.panel,
                    nr: 1,
                    f: self.kernel.f,
                },
                Blocking {
                    kc: self.kg.max(1),
                    ..self.blocking
                },
            ),
            (None, Some(sw)) => (sw.b_packing(), sw.blocking),
            (None, None) => (self.kernel, self.blocking),
        }
    }

    /// The floats of one group's packed A ([`GemmDesc::a_packed`]); `None` on overflow.
    pub fn packed_a_group(&self) -> Option<usize> {
        packed_len(self.mg, self.kg, self.a_packing().0.mr)
    }

    /// The bytes of all groups' packed A, rounded to whole 64-byte lines; `None` on overflow.
    pub fn packed_a_bytes(&self) -> Option<usize> {
        self.packed_a_group()?
            .checked_mul(self.groups)?
            .checked_mul(4)?
            .checked_next_multiple_of(64)
    }

    /// B as the driver reads it for image `n` and group `g` of the arena at `arena`: the plain
    /// matrix's (`kg × l`), the transposed matrix's (one image and group only), or the image
    /// the patches are gathered from.
    fn b_source(&self, arena: *mut u8, n: usize, g: usize) -> Result<BSource, &'static str> {
        let at = |off: usize| arena.wrapping_add(off).cast::<f32>();
        Ok(match self.b {
            BArena::Matrix { offset } => BSource::Matrix {
                ptr: at(offset).wrapping_add((n * self.groups + g) * self.kg * self.l),
                ld: self.l,
            },
            BArena::MatrixT { offset } => {
                if (self.batch, self.groups) != (1, 1) {
                    return Err("a transposed B with images or groups");
                }
                BSource::MatrixT {
                    ptr: at(offset),
                    ld: self.kg,
                }
            }
            BArena::Patches {
                offset,
                channels,
                geom,
                ..
            } => BSource::Patches {
                ptr: at(offset).wrapping_add((n * channels + g * (channels / self.groups)) * geom.h * geom.w),
                geom,
            },
        })
    }

    /// The bytes of B packed whole ([`GemmDesc::b_packed`]), rounded to whole 64-byte lines;
    /// `None` where B cannot be packed ahead (not a plain matrix of one image and group: a
    /// patch matrix, or a transposed product) or on overflow.
    pub fn packed_b_bytes(&self) -> Option<usize> {
        let plain = matches!(self.b, BArena::Matrix { .. } | BArena::MatrixT { .. });
        if !plain || (self.batch, self.groups) != (1, 1) || self.direct.is_some() {
            return None;
        }
        packed_len(self.l, self.kg, self.kernel.nr)?
            .checked_mul(4)?
            .checked_next_multiple_of(64)
    }

    /// Splits the work so that there are at least `want` items when the product allows it:
    /// columns are cut at the blocking's `nc`, then halved (each half keeping at least 4
    /// tiles) or the rows halved (each half keeping at least 4·MR rows). Every thread packs
    /// the columns of B of its items and streams their rows of A (packing them too unless A is
    /// packed ahead, [`GemmDesc::a_packed`]), so the side that is cut is the one whose operand
    /// is the cheaper to go through twice: the columns when A (rows × depth) is the smaller
    /// operand, as in the early layers of a CNN (64 channels × 3136 pixels), else the rows (512
    /// channels × 49 pixels); a transposed product ([`Swap`]) its rows (output channels) first
    /// whatever its shape, since a thread given some of its pixels streams all the weights and
    /// copies the whole padded image in every call it makes (measured on the EPYC Zen 3, two
    /// threads, Inception v2's 3 × 3s of 96 to 192 channels on 14 × 14 alone: 1.53–1.70× over
    /// one thread cut by pixels, 1.60–1.83× by channels; paired, Inception v2 0.973 and 0.975,
    /// v1 0.980, v3 1.014 and 0.986, GoogLeNet 1.012 and 1.005). With more than one item
    /// wanted, a side that is cut is then cut at every tile (a thread runs its adjacent items
    /// as one block, `run_items`), so that the threads' shares differ by at most a tile.
    pub fn split(&mut self, want: usize) {
        // column blocks of (nearly) equal width, so that threads get equal shares; a transposed
        // product's rows (C's) are its tile's columns and the other way round, and it computes
        // all its columns (C's) at once
        // (a direct convolution's: panels of channels, and whole output rows, so that its
        // pixel blocks do not end early — but a single output row, as a pointwise product's
        // images are read, in runs of whole pixel blocks: the row kernel's registers, the
        // channel kernel's blocks of two registers; a pixel's sum does not depend on the run
        // it is in, so the results do not depend on the cut)
        let (mr, nr, cols) = match (self.direct, self.swap(), self.b) {
            (Some(dc), _, BArena::Patches { geom, .. }) if geom.oh == 1 => {
                let run = if dc.row_kernel {
                    dc.lanes
                } else {
                    crate::direct::pixel_block(dc.lanes)
                };
                (dc.panel, run.max(1), self.cols())
            }
            (Some(dc), _, BArena::Patches { geom, .. }) => (dc.panel, geom.ow.max(1), self.cols()),
            (None, Some(sw), _) => (sw.kernel.nr, sw.kernel.mr, self.cols()),
            _ => (self.kernel.mr, self.kernel.nr, self.cols()),
        };
        let nc = if self.swap().is_some() || self.direct.is_some() {
            cols.max(1)
        } else {
            self.blocking.nc
        };
        let blocks = cols.div_ceil(nc).max(1);
        self.n_step = cols.div_ceil(blocks).div_ceil(nr).max(1) * nr;
        self.m_step = self.mg.max(1);
        let cols_first = self.mg <= cols && self.swap().is_none();
        while self.items() < want {
            // (a direct convolution's items need no packing, so it is cut down to two panels or
            // runs a side: at two threads DenseNet-121's 1 × 1s into 128 channels and 3 × 3s
            // into 32 on 7 × 7, which ran on one thread, 0.064–0.130 → 0.045–0.075 ms and
            // 0.042 → 0.031 each, the network 0.96–0.97 of the time)
            let least = if self.direct.is_some() { 2 } else { 8 };
            let (rows_ok, cols_ok) = (self.m_step >= least * mr, self.n_step >= least * nr);
            if cols_ok && (cols_first || !rows_ok) {
                self.n_step = (self.n_step / 2).div_ceil(nr) * nr;
            } else if rows_ok {
                self.m_step = (self.m_step / 2).div_ceil(mr) * mr;
            } else {
                break;
            }
        }
        // `run_items` runs a thread's adjacent items as one block, so items cost nothing
        // apart: where the work is split along one side, one tile per item, and the threads'
        // shares (contiguous ranges of items) come out even to a tile (ResNet-18's layer2 as 4 items of 14, 14, 14 and 11 tiles gave one thread
        // 28 tiles and the other 25; conv1's 13 items gave one 7 and the other 6)
        if want > 1 {
            match (self.m_blocks() > 1, self.n_blocks() > 1) {
                (true, false) => self.m_step = mr,
                (false, true) => self.n_step = nr,
                _ => {}
            }
        }
    }
}

/// Which kernel tier a model's GEMMs and direct kernels (pooling, depthwise, dense) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// The best this CPU has ([`Isa::host`]).
    #[default]
    Auto,
    /// The AVX-512 kernels (compiling fails where the CPU lacks AVX-512F).
    Avx512,
    /// The AVX2 + FMA kernels (compiling fails where the CPU lacks them).
    Avx2,
    /// The Cranelift `f32x4` kernels, on any host the JIT runs on.
    Cranelift,
}

impl Tier {
    /// Every tier, `Auto` first.
    pub const ALL: [Tier; 4] = [Tier::Auto, Tier::Avx512, Tier::Avx2, Tier::Cranelift];

    /// The instruction set this choice runs on this host.
    pub fn isa(self) -> Isa {
        match self {
            Tier::Auto => Isa::host(),
            Tier::Avx512 => Isa::Avx512,
            Tier::Avx2 => Isa::Avx2,
            Tier::Cranelift => Isa::Cranelift,
        }
    }

    /// Whether this CPU can run this choice.
    pub fn available(self) -> bool {
        self.isa().available()
    }

    /// The forced tiers (not `Auto`) this CPU can run: what tests alternate over.
    pub fn runnable() -> Vec<Tier> {
        Tier::ALL[1..].iter().copied().filter(|t| t.available()).collect()
    }

    /// The main AVX-512 tile, when this choice runs the AVX-512 tier on this host.
    pub fn avx512(self) -> Option<MicroKernel> {
        match self.isa() {
            Isa::Avx512 => self.main_kernel(),
            _ => None,
        }
    }

    /// The main (fastest per element) tile of the Rust tier this choice runs on this host;
    /// `None` when it runs the Cranelift kernel.
    pub fn main_kernel(self) -> Option<MicroKernel> {
        crate::gemm_simd::tiles(self.isa()).first().copied()
    }

    /// The Rust micro-kernel this choice runs on this host for an `m × n` product (the tile
    /// of its set that pads the product least: [`crate::gemm_simd::tile_for`]); `None` when
    /// it runs the Cranelift kernel.
    pub fn kernel(self, m: usize, n: usize) -> Option<MicroKernel> {
        crate::gemm_simd::tile_for(self.isa(), m, n)
    }
}

/// A stand-in micro-kernel until the real one is finalized (never called; infallible).
pub extern "C" fn unset_kernel(_: i64, _: *const f32, _: *const f32, _: *mut f32, _: i64, _: i64) {}

/// The status a failed driver run stores (anything but `plan::STATUS_OK` means failure).
pub const STATUS_FAILED: u64 = 0;

/// Runs the work items `[begin, end)` of the `gemm` described by `desc` over `arena`; the
/// JIT'd kernel of a `gemm` node calls this. It never unwinds into the JIT frames that call it
/// (they have no unwind tables: a panic crossing them aborts the process): a panic, or an
/// item range or tile the driver cannot run, stores `STATUS_FAILED` in the node's status word,
/// which `JitModel::run` turns into an error.
///
/// # Safety
/// `desc` must point to a live `GemmDesc` built for this arena's plan, and `arena` to the
/// model's arena, with no other thread writing the rows and columns of these items.
pub unsafe extern "C" fn kiln_gemm_run(desc: *const GemmDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { &*desc };
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller.
        unsafe { run_items(d, arena, begin, end) }
    }));
    if !matches!(ok, Ok(Ok(()))) {
        // SAFETY: the status word is 8 bytes at an 8-byte aligned offset of the arena
        // (`plan::plan`), and only touched atomically while kernels run.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(arena.add(d.status).cast::<u64>()) };
        word.store(STATUS_FAILED, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Every padded row of an image ([`copy_needed`]).
const WHOLE: [usize; 2] = [0, usize::MAX];

/// Whether a thread's padded copy of image and group `ng` must be made for an item that reads
/// its padded rows `need`: not when the copy it holds (`held`: image and group, rows) has
/// them. Records the copy about to be made.
fn copy_needed(held: &mut ((usize, usize), [usize; 2]), ng: (usize, usize), need: [usize; 2]) -> bool {
    let has = held.0 == ng && held.1[0] <= need[0] && need[1] <= held.1[1];
    if !has {
        *held = (ng, need);
    }
    !has
}

/// The body of `kiln_gemm_run`.
///
/// # Safety
/// As `kiln_gemm_run`.
unsafe fn run_items(d: &GemmDesc, arena: *mut u8, begin: i64, end: i64) -> Result<(), &'static str> {
    let (mb, nb) = (d.m_blocks(), d.n_blocks());
    // the JIT passes a slice of `[0, items())`; anything else is refused, not run
    let (Ok(begin), Ok(end)) = (usize::try_from(begin), usize::try_from(end)) else {
        return Err("a negative work item");
    };
    if begin > end || end > d.items() || d.groups == 0 {
        return Err("work items outside the product");
    }
    let at = |off: usize| arena.wrapping_add(off).cast::<f32>();
    // a direct convolution's buffers for this call, and the group whose weights they hold
    let mut direct = d.direct.map(|_| (DIRECT.take(), usize::MAX));
    // the (image, group) whose padded copy this thread's buffers hold, made in this call (the
    // items of an image are consecutive: one copy per image and group, not per item), and
    // its padded rows (a wide product's thread copies those of its columns)
    let mut copied = ((usize::MAX, usize::MAX), [0, 0]);
    // adjacent items of one image and group run as one block (whole rows of blocks, or a run
    // of columns in one row): a thread given several items packs the B (or a transposed
    // product's patches, or a direct convolution's copy) they share once, not once per item; each
    // element is the same chain of FMAs either way (the blocks start on the same tiles and K
    // is cut the same), so the results do not depend on the thread count
    let mut item = begin;
    while item < end {
        let (j, rest) = (item % nb, item / nb);
        let (i, rest) = (rest % mb, rest / mb);
        let (g, n) = (rest % d.groups, rest / d.groups);
        let full = if j == 0 {
            ((end - item) / nb).min(mb - i)
        } else {
            0
        };
        let (rows, cols, next) = if full > 0 {
            let rows = [i * d.m_step, ((i + full) * d.m_step).min(d.mg)];
            (rows, [0, d.cols()], item + full * nb)
        } else {
            let j1 = nb.min(j + (end - item));
            let rows = [i * d.m_step, ((i + 1) * d.m_step).min(d.mg)];
            (
                rows,
                [j * d.n_step, (j1 * d.n_step).min(d.cols())],
                item + (j1 - j),
            )
        };
        item = next;
        let c = at(d.c).wrapping_add((n * d.groups + g) * d.mg * d.l);
        let res = d
            .residual
            .map(|r| at(r).wrapping_add((n * d.groups + g) * d.mg * d.l));
        let bias = d.bias.map(|o| at(o).wrapping_add(g * d.mg));
        // finishes a block of C: rows × cols from (m0, col), rows `l` apart, read from C or
        // from `src` (the block's first element, rows `ld` floats apart: a wide product's
        // scratch), through the epilogue when there is one (the bias from the block's first
        // row, or its first column with `bias_cols`), else copied from `src`
        let epilogue_at =
            |m0: usize, col: usize, rows: usize, cols: usize, src: Option<(*const f32, usize)>| {
                let off = m0 * d.l + col;
                let dst = c.wrapping_add(off);
                if let Some(f) = d.epilogue {
                    let first = if d.bias_cols { col } else { m0 };
                    let (src, src_ld) = src.unwrap_or((dst.cast_const(), d.l));
                    // SAFETY: the block lies inside this item's rows and columns of C (and of the
                    // residual, which has C's layout); the bias has a value per row; `src` holds
                    // the block (the caller's word) or is C.
                    unsafe {
                        f(
                            dst,
                            src,
                            res.map_or(std::ptr::null(), |r| r.wrapping_add(off).cast_const()),
                            bias.map_or(std::ptr::null(), |b| b.wrapping_add(first).cast_const()),
                            rows as i64,
                            cols as i64,
                            (d.l * 4) as i64,
                            (src_ld * 4) as i64,
                            &d.act,
                        )
                    }
                } else if let Some((src, src_ld)) = src {
                    for r in 0..rows {
                        // SAFETY: as above, row r of the block in `src` and in C, which do not
                        // overlap (a scratch of its own).
                        unsafe { std::ptr::copy_nonoverlapping(src.add(r * src_ld), dst.add(r * d.l), cols) };
                    }
                }
            };
        let a_packed = match (d.a_packed, d.packed_a_group()) {
            // SAFETY: `Gemms::add` reserved `packed_a_bytes()` at this offset of the arena,
            // `groups` packings of `len` floats, and `g < groups`; runs only read them.
            (Some(off), Some(len)) => Some(unsafe { std::slice::from_raw_parts(at(off).add(g * len), len) }),
            (Some(_), None) => return Err("a packed A too big"),
            (None, _) => None,
        };
        let a = at(d.a).wrapping_add(g * d.mg * d.kg);
        if let (
            Some(dc),
            Some((bufs, held)),
            BArena::Patches {
                offset,
                channels,
                geom,
                ..
            },
        ) = (d.direct, direct.as_mut(), d.b)
        {
            let image = at(offset).wrapping_add((n * channels + g * (channels / d.groups)) * geom.h * geom.w);
            // band by band, each band's rows of the copy made just before its pixels run
            let band = dc.band.max(1);
            let mut c0 = cols[0];
            while c0 < cols[1] {
                let c1 = cols[1].min((c0 / band + 1) * band);
                let need = dc.copy_rows(&geom, [c0, c1]);
                let image = (
                    image.cast_const(),
                    copy_needed(&mut copied, (n, g), need).then_some(need),
                );
                // SAFETY: as below; the image is this item's group of channels, `a` its
                // weights, `[c0, c1)` inside the item's columns, the bias and the residual
                // this group's (C's layout).
                unsafe {
                    run_direct(
                        d,
                        &dc,
                        [rows, [c0, c1]],
                        (a, a_packed, g),
                        held,
                        image,
                        &geom,
                        channels / d.groups,
                        (c, bias, res),
                        bufs,
                    )
                }?;
                if !dc.finish {
                    epilogue_at(rows[0], c0, rows[1] - rows[0], c1 - c0, None);
                }
                c0 = c1;
            }
            continue;
        }
        if let (
            Some(sw),
            BArena::Patches {
                offset,
                channels,
                geom,
                ..
            },
        ) = (d.swap(), d.b)
        {
            let image = at(offset).wrapping_add((n * channels + g * (channels / d.groups)) * geom.h * geom.w);
            let fresh = copy_needed(&mut copied, (n, g), WHOLE);
            // SAFETY: as below; the image is this item's group of channels.
            unsafe {
                run_swapped(
                    d,
                    &sw,
                    [rows, cols],
                    a,
                    a_packed,
                    (image.cast_const(), fresh),
                    &geom,
                    channels / d.groups,
                    c,
                )
            }?;
            epilogue_at(rows[0], cols[0], rows[1] - rows[0], cols[1] - cols[0], None);
            continue;
        }
        if let BArena::Patches {
            offset,
            channels,
            geom,
            shifted: Some(sh),
            ..
        } = d.b
        {
            let image = at(offset).wrapping_add((n * channels + g * (channels / d.groups)) * geom.h * geom.w);
            let need = sh.copy_rows(&geom, cols);
            let image = copy_needed(&mut copied, (n, g), need).then_some((image.cast_const(), need));
            // SAFETY: as below; the image is this item's group of channels.
            unsafe { run_shifted(d, [rows, cols], a, a_packed, image, &geom, &sh, (c, &epilogue_at)) }?;
            continue;
        }
        let b = d.b_source(arena, n, g)?;
        let b_packed = match d.b_packed {
            // SAFETY: `Gemms::add_dense` reserved `packed_b_bytes()` at this offset of the
            // arena (one image, one group: `n = g = 0`); runs only read it.
            Some(off) => match packed_len(d.l, d.kg, d.kernel.nr) {
                Some(len) if (d.batch, d.groups) == (1, 1) => {
                    Some(unsafe { std::slice::from_raw_parts(at(off), len) })
                }
                _ => return Err("a packed B of images or groups, or too big"),
            },
            None => None,
        };
        let epilogue = |blk: Block| epilogue_at(blk.m0, blk.n0, blk.rows, blk.cols, None);
        let p = d.problem(a, b, c, &epilogue);
        // SAFETY: in bounds of the arena: `d` was built by `lower::gemm_desc` from the node's
        // shapes (each ≤ 2³¹ elements by kiln_ir::limits) and the slots of the checked plan:
        // A is `groups·mg × kg` at `d.a`, B `batch·groups × kg × l` (or the image of the
        // patches) at its offset, C and the residual `batch·groups × mg × l` at theirs, and
        // `n < batch`, `g < groups`, `rows ⊆ [0, mg)`, `cols ⊆ [0, l)` by the item decoding
        // above (`item < end ≤ items()`, a merged run ends at `mb` rows of blocks or `nb`
        // columns of blocks, clamped to `mg` and `cols()`), so every pointer formed here stays in
        // its value's slot.
        unsafe { gemm_with(&d.kernel, &d.blocking, &p, rows, cols, [a_packed, b_packed]) }?;
    }
    if let Some((bufs, _)) = direct {
        DIRECT.set(bufs);
    }
    Ok(())
}

/// A direct convolution's buffers: the padded copy, the weights tap-major (when they are not
/// packed ahead), the taps' offsets.
type DirectBufs = (Vec<Line>, Vec<Line>, Vec<usize>);

thread_local! {
    /// Each thread's buffers for direct convolutions ([`DirectConv`]).
    static DIRECT: std::cell::Cell<DirectBufs> = const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One work item of a direct convolution ([`DirectConv`]): rows `rows` (output channels of
/// group `g`, weights at `a`, `mg × kg`, or packed in panels in `a_packed`) and output pixels
/// `cols` of C (`c`, rows `l` apart), from `image` (`channels` planes of the group) when the
/// buffers do not already hold the padded rows it names, finished with the group's `bias`
/// and `res`idual where the kernel finishes C ([`DirectConv::finish`]). Without packed
/// weights, they are laid out tap-major again only when the group differs from `held`'s.
///
/// # Safety
/// As `run_items`: `a`, `image`, `c`, `bias` and `res` point at this item's weights, image,
/// C, bias (a float per row) and residual (C's layout) in the arena; `dc` was made for this
/// node's geometry and `channels`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_direct(
    d: &GemmDesc,
    dc: &DirectConv,
    [rows, cols]: [[usize; 2]; 2],
    (a, a_packed, g): (*const f32, Option<&[f32]>, usize),
    held: &mut usize,
    (image, need): (*const f32, Option<[usize; 2]>),
    geom: &PatchGeom,
    channels: usize,
    (c, bias, res): (*mut f32, Option<*mut f32>, Option<*mut f32>),
    (pad, wt_buf, off): &mut DirectBufs,
) -> Result<(), &'static str> {
    if rows[0] > rows[1] || rows[1] > d.mg || cols[0] > cols[1] || cols[1] > d.l || dc.lanes == 0 {
        return Err("rows or columns outside the direct convolution");
    }
    if channels.checked_mul(geom.kh * geom.kw) != Some(d.kg) {
        return Err("a direct convolution's depth is not its taps");
    }
    // the row kernel's reads were bounded for this geometry's pixels (`Shifted::row_reach`)
    if let Some(sh) = &dc.phases
        && (geom.oh.checked_mul(geom.ow) != Some(d.l)
            || sh.channels != channels
            || dc.hp != sh.hp
            || dc.wp != sh.wp)
    {
        return Err("a row convolution made for another geometry");
    }
    // packed: panels of `dc.panel` channels; else one panel of all (tap-major)
    let pw = match a_packed {
        Some(_) => dc.panel,
        None => d.mg.div_ceil(dc.lanes) * dc.lanes,
    };
    if pw == 0 || !pw.is_multiple_of(dc.lanes) {
        return Err("a direct convolution's weight panels are not whole registers");
    }
    let opad = d.mg.div_ceil(pw) * pw;
    let wt: &[f32] = match a_packed {
        Some(ap) if ap.len() == opad * d.kg => ap,
        Some(_) => return Err("a direct convolution's packed weights of the wrong size"),
        None => {
            let wt = floats(wt_buf, d.kg * opad);
            if *held != g {
                // SAFETY: A is this group's mg × kg weights (`run_items`).
                let a = unsafe { std::slice::from_raw_parts(a, d.mg * d.kg) };
                for (k, row) in wt.chunks_exact_mut(opad).enumerate() {
                    for (o, v) in row.iter_mut().enumerate() {
                        *v = if o < d.mg { a[o * d.kg + k] } else { 0.0 };
                    }
                }
            }
            wt
        }
    };
    let cb = dc.cb.max(1);
    let [sy, sx] = geom.stride;
    if *held != g {
        off.clear();
        for ch in 0..channels {
            for i in 0..geom.kh {
                for j in 0..geom.kw {
                    off.push(match &dc.phases {
                        Some(sh) => sh.tap_offset(geom, ch, i, j),
                        None => {
                            let (di, dj) = (i * geom.dilation[0], j * geom.dilation[1]);
                            ((ch / cb * dc.hp + di) * dc.wp + dj) * cb + ch % cb
                        }
                    });
                }
            }
        }
        *held = g;
    }
    let pad: &[f32] = if dc.in_place {
        if [dc.hp, dc.wp, cb] != [geom.h, geom.w, 1] {
            return Err("a direct convolution in place made for another geometry");
        }
        let len = channels
            .checked_mul(geom.h)
            .and_then(|v| v.checked_mul(geom.w))
            .ok_or("a direct convolution's image too large")?;
        // SAFETY: the image holds `channels` planes of h × w floats (the caller's word).
        unsafe { std::slice::from_raw_parts(image, len) }
    } else {
        let pad = floats(pad, dc.pad_len);
        match (need, dc.phases) {
            // SAFETY: forwarded from the caller.
            (Some(need), Some(_)) => unsafe { phase_copy(image, channels, geom, [dc.hp, dc.wp], need, pad) },
            // SAFETY: forwarded from the caller.
            (Some(need), None) => unsafe {
                pad_copy_blocked(
                    image,
                    channels,
                    cb,
                    [geom.h, geom.w],
                    geom.pad,
                    [dc.hp, dc.wp],
                    need,
                    pad,
                )
            },
            (None, _) => {}
        }
        pad
    };
    let steps = match dc.phases {
        Some(_) => [dc.wp, 1],
        None => [sy * dc.wp * cb, sx * cb],
    };
    // the channel-vectorized kernel reads the taps of the job's pixels, none past a row's
    // last: the farthest is the last tap (the last channel's, of the last block, its last
    // row and column: `off` grows with the block, then the row and column, then the channel
    // in the block) of the last row's last pixel (the row kernel's reach was checked with its
    // geometry, `Shifted::row_reach`)
    if dc.phases.is_none() && cols[0] < cols[1] {
        debug_assert_eq!(off.last(), off.iter().max());
        let last = (cols[1] - 1) / geom.ow.max(1);
        let reach = off.last().and_then(|&o| {
            o.checked_add(last.checked_mul(steps[0])?)?
                .checked_add((geom.ow - 1).checked_mul(steps[1])?)
        });
        if reach.is_none_or(|r| r >= pad.len()) {
            return Err("a direct convolution's taps outside its image");
        }
    }
    let job = crate::direct::DirectConvJob {
        pad,
        steps,
        off,
        wt,
        pw,
        opad,
        rows,
        cols,
        ow: geom.ow,
        c,
        l: d.l,
        chunk: dc.chunk,
        prefetch: dc.prefetch,
        finish: dc.finish.then(|| crate::direct::Finish {
            bias: bias.map_or(std::ptr::null(), |b| b.cast_const()),
            res: res.map_or(std::ptr::null(), |r| r.cast_const()),
            act: d.act,
        }),
        span: dc.span,
    };
    // SAFETY: the job's pointers and sizes as `direct::direct_conv` requires: C's rows and
    // columns of the item, the padded copy with its slack (`DirectConv::new`) holding the rows
    // the item's pixels read (`DirectConv::copy_rows`), or the image itself, every tap of the
    // job's pixels inside it (checked above), the weights `kg·opad` floats in panels
    // of `pw` (a multiple of the lanes); the kernel's set is this CPU's (`direct::kernels`
    // checked it).
    unsafe { (dc.f)(&job) };
    Ok(())
}

/// `out` as the zero-padded copy of `channels` planes of `h × w` floats at `image`: `hp × wp`
/// per channel, input row `iy` at row `iy + top` and column `ix` at `ix + left` (clipped to
/// the copy), zeros elsewhere, including the floats past the last channel's plane; only the
/// padded rows `[r0, r1)` of each channel are written (the others keep what they held).
///
/// # Safety
/// `image` holds `channels·h·w` floats.
unsafe fn pad_copy(
    image: *const f32,
    channels: usize,
    hw: [usize; 2],
    pad: [usize; 2],
    hwp: [usize; 2],
    rows: [usize; 2],
    out: &mut [f32],
) {
    // SAFETY: forwarded from the caller.
    unsafe { pad_copy_blocked(image, channels, 1, hw, pad, hwp, rows, out) }
}

/// The channels of a block of a direct convolution's copy ([`pad_copy_blocked`]).
pub(crate) const BLOCK: usize = 8;

/// [`pad_copy`] with the channels in blocks of `cb`, each block's `cb` channels side by side
/// (`NCHWc`): channel `c`'s padded element `(r, q)` at `((c / cb)·hp + r)·wp·cb + q·cb + c %
/// cb`; the channels past the last (to a whole block) are zero. At `cb = 1` the planes of
/// [`pad_copy`].
///
/// # Safety
/// `image` holds `channels·h·w` floats.
#[allow(clippy::too_many_arguments)]
unsafe fn pad_copy_blocked(
    image: *const f32,
    channels: usize,
    cb: usize,
    [h, w]: [usize; 2],
    [top, left]: [usize; 2],
    [hp, wp]: [usize; 2],
    [r0, r1]: [usize; 2],
    out: &mut [f32],
) {
    let cb = cb.max(1);
    let n = w.min(wp.saturating_sub(left));
    let planes = channels
        .div_ceil(cb)
        .saturating_mul(hp)
        .saturating_mul(wp)
        .saturating_mul(cb)
        .min(out.len());
    for (br, row) in out[..planes].chunks_exact_mut((wp * cb).max(1)).enumerate() {
        let (b, r) = (br / hp.max(1), br % hp.max(1));
        if r < r0 || r >= r1 {
            continue;
        }
        let iy = r.wrapping_sub(top);
        if iy >= h || n == 0 {
            row.fill(0.0);
            continue;
        }
        row[..left * cb].fill(0.0);
        let inside = &mut row[left * cb..(left + n) * cb];
        if cb == BLOCK && (b + 1) * BLOCK <= channels {
            // a whole block, pixel by pixel: each line of the copy written once, from the
            // block's rows read side by side (a channel at a time wrote every line of the
            // row `cb` times: 14 % of the dilated 3 × 3 32 → 32 on 64 × 64, 1.6 ns a float)
            // SAFETY: row iy < h of channels b·cb + c < channels of the image hold w ≥ n floats.
            let src: [&[f32]; BLOCK] = std::array::from_fn(|c| unsafe {
                std::slice::from_raw_parts(image.add(((b * cb + c) * h + iy) * w), n)
            });
            for (x, px) in inside.chunks_exact_mut(BLOCK).enumerate() {
                for (d, s) in px.iter_mut().zip(&src) {
                    *d = s[x];
                }
            }
            row[(left + n) * cb..].fill(0.0);
            continue;
        }
        for c in 0..cb {
            let ch = b * cb + c;
            if ch >= channels {
                inside.iter_mut().skip(c).step_by(cb).for_each(|v| *v = 0.0);
                continue;
            }
            // SAFETY: row iy < h of channel ch < channels of the image holds w ≥ n floats.
            let src = unsafe { std::slice::from_raw_parts(image.add((ch * h + iy) * w), n) };
            if cb == 1 {
                inside.copy_from_slice(src);
            } else {
                for (d, &v) in inside.iter_mut().skip(c).step_by(cb).zip(src) {
                    *d = v;
                }
            }
        }
        row[(left + n) * cb..].fill(0.0);
    }
    out[planes..].fill(0.0);
}

/// `out` as the zero-padded phases of `channels` planes of the image at `image` for the
/// stride of `g` ([`Shifted::for_patches`]): phase `(c, py, px)`, `hp × wp` floats, holds the
/// padded image's element `(r·s_h + py, q·s_w + px)` at `(r, q)`, the floats past the last
/// phase zero; of the phases a tap reads, only the rows `[r0, r1)` are written, and the phases
/// no tap reads (three of four of a 1×1 kernel's at stride 2) not at all: all keep what they
/// held, which only the wide columns past a row's end read, and those are dropped. (Zeroing
/// them on every call was 6 % of a 1×1 stride-2 convolution's time on one thread and 20 % on
/// two, where each thread zeroed all of them.)
///
/// # Safety
/// `image` holds `channels·h·w` floats.
unsafe fn phase_copy(
    image: *const f32,
    channels: usize,
    g: &PatchGeom,
    [hp, wp]: [usize; 2],
    [r0, r1]: [usize; 2],
    out: &mut [f32],
) {
    let [sy, sx] = g.stride;
    let [top, left] = g.pad;
    let plane = hp * wp;
    let used = |p: usize, k: usize, d: usize, s: usize| (0..k).any(|i| i * d % s == p);
    let mut done = 0;
    for c in 0..channels {
        for py in 0..sy {
            for px in 0..sx {
                let at = ((c * sy + py) * sx + px) * plane;
                let Some(ph) = out.get_mut(at..at + plane) else {
                    break;
                };
                done = at + plane;
                if !used(py, g.kh, g.dilation[0], sy) || !used(px, g.kw, g.dilation[1], sx) {
                    continue;
                }
                for (r, row) in ph.chunks_exact_mut(wp.max(1)).enumerate() {
                    if r < r0 || r >= r1 {
                        continue;
                    }
                    let iy = (r * sy + py).wrapping_sub(top);
                    if iy >= g.h {
                        row.fill(0.0);
                        continue;
                    }
                    // SAFETY: row iy < h of channel c < channels holds w floats.
                    let src = unsafe { std::slice::from_raw_parts(image.add((c * g.h + iy) * g.w), g.w) };
                    // the columns q whose input column q·sx + px − left is inside the row
                    let lo = left.saturating_sub(px).div_ceil(sx).min(row.len());
                    let hi = (g.w + left).saturating_sub(px).div_ceil(sx).clamp(lo, row.len());
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    if lo < hi {
                        strided_copy(&mut row[lo..hi], &src[lo * sx + px - left..], sx);
                    }
                }
            }
        }
    }
    out[done..].fill(0.0);
}

/// `dst[k] = src[k·step]` for every `k` (`src` holds at least `(dst.len() − 1)·step + 1`
/// floats): at step 1 a plain copy (the iterator loop took 28 % of the time of a 1 × 1 64 ← 16
/// on 55 × 55 tried on the row kernel), at step 2 sixteen at a time from two loads and a
/// permute where the CPU has AVX-512 ([`evens_avx512`]), eight where it has AVX2
/// ([`evens_avx2`]), then four at a time from two loads and a shuffle (SSE, every x86-64 has
/// it). A stem's phase copy at stride 2 is such copies: with SSE alone it took 28 % of the
/// 3 × 3 s2 16 ← 3 stem on 224 × 224 (Intel Xeon, family 6 model 207, one thread).
fn strided_copy(dst: &mut [f32], src: &[f32], step: usize) {
    if step == 1 {
        let n = dst.len().min(src.len());
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    if step == 2 {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_shuffle_ps, _mm_storeu_ps};
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            k = unsafe { evens_avx512(dst, src) };
        } else if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            k = unsafe { evens_avx2(dst, src) };
        }
        while k + 4 <= dst.len() && 2 * k + 8 <= src.len() {
            // SAFETY: floats 2k..2k + 8 of src and k..k + 4 of dst, inside both (the loop's
            // condition); SSE is part of x86-64.
            unsafe {
                let (a, b) = (
                    _mm_loadu_ps(src.as_ptr().add(2 * k)),
                    _mm_loadu_ps(src.as_ptr().add(2 * k + 4)),
                );
                _mm_storeu_ps(dst.as_mut_ptr().add(k), _mm_shuffle_ps::<0b10_00_10_00>(a, b));
            }
            k += 4;
        }
    }
    for (v, x) in dst[k..]
        .iter_mut()
        .zip(src[k * step..].iter().step_by(step.max(1)))
    {
        *v = *x;
    }
}

/// `dst[k] = src[2k]` for the first `k` of `dst` that whole registers of `S` reach while
/// `src` holds their `2·LANES` floats: the even lanes of two registers
/// ([`Simd::even_lanes`](crate::simd::Simd::even_lanes), as the depthwise and pooling rings
/// split their rows); returns that `k` (a multiple of `LANES`).
///
/// # Safety
/// The CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn evens<S: crate::simd::Simd>(dst: &mut [f32], src: &[f32]) -> usize {
    let l = S::LANES;
    let mut k = 0;
    while k + l <= dst.len() && 2 * k + 2 * l <= src.len() {
        // SAFETY: floats 2k..2k + 2·LANES of src and k..k + LANES of dst, inside both (the
        // loop's condition); the set is the caller's.
        unsafe {
            let (a, b) = (
                S::load(src.as_ptr().add(2 * k)),
                S::load(src.as_ptr().add(2 * k + l)),
            );
            S::store(dst.as_mut_ptr().add(k), S::order_even(S::even_lanes(a, b)));
        }
        k += l;
    }
    k
}

/// [`evens`] sixteen at a time with AVX-512.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn evens_avx512(dst: &mut [f32], src: &[f32]) -> usize {
    // SAFETY: the caller's.
    unsafe { evens::<crate::simd::Avx512>(dst, src) }
}

/// [`evens`] eight at a time with AVX2.
///
/// # Safety
/// The CPU has AVX2 and FMA (the set `simd::Avx2` stands for).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn evens_avx2(dst: &mut [f32], src: &[f32]) -> usize {
    // SAFETY: the caller's.
    unsafe { evens::<crate::simd::Avx2>(dst, src) }
}

/// A transposed product's buffers: the scratch block, the padded copy of the image, and the
/// offsets of the taps and of the pixels in that copy.
type SwapBufs = (Vec<Line>, Vec<Line>, Vec<usize>, Vec<usize>);

thread_local! {
    /// Each thread's buffers for transposed products ([`Swap`]).
    static SWAPPED: std::cell::Cell<SwapBufs> =
        const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

/// Packs the transposed product's A block — the patches' pixels `[ic, ic + mc)` × taps `[pc,
/// pc + kc)` — as panels of `mr` pixels: element `(k, i)` of panel `q` at `q·mr·kc + k·mr +
/// i` is `pad[tap[pc + k] + pix[ic + q·mr + i]]`, zero past the last pixel. One load per
/// element from the padded copy, no bounds to work out per row segment (the patch packing
/// took a fifth of `layer4`'s time with `pack_b`'s segments of 7 pixels).
#[inline(always)]
fn pack_gathered<const MR: usize>(pad: &[f32], tap: &[usize], pix: &[usize], out: &mut [f32]) {
    let kc = tap.len();
    for (panel, pix) in out.chunks_exact_mut(MR * kc).zip(pix.chunks(MR)) {
        if let Ok(pix) = <&[usize; MR]>::try_from(pix) {
            // the panel's pixels one run of the copy (stride 1, one output row): a row of the
            // panel is a fixed-size copy
            if pix[MR - 1] == pix[0] + (MR - 1) && pix.windows(2).all(|w| w[1] > w[0]) {
                let p0 = pix[0];
                for (dst, &t) in panel.chunks_exact_mut(MR).zip(tap) {
                    let src: &[f32; MR] = pad[t + p0..t + p0 + MR].try_into().expect("MR floats");
                    dst.copy_from_slice(src);
                }
                continue;
            }
            for (dst, &t) in panel.chunks_exact_mut(MR).zip(tap) {
                for (d, &p) in dst.iter_mut().zip(pix) {
                    *d = pad[t + p];
                }
            }
        } else {
            for (dst, &t) in panel.chunks_exact_mut(MR).zip(tap) {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = pix.get(i).map_or(0.0, |&p| pad[t + p]);
                }
            }
        }
    }
}

/// The tile heights [`pack_gathered_mr`] packs with a fixed-size copy (its arms); every
/// transposed product's tile is one of them (`gemm_simd`'s tests), since any other falls to
/// the per-element path, several times slower.
#[cfg(test)]
pub(crate) const GATHERED_MR: [usize; 6] = [4, 5, 6, 7, 8, 12];

/// [`pack_gathered`] for a run-time `mr` (the tiles' as constants, listed in `GATHERED_MR`
/// for the tests).
fn pack_gathered_mr(mr: usize, pad: &[f32], tap: &[usize], pix: &[usize], out: &mut [f32]) {
    match mr {
        4 => pack_gathered::<4>(pad, tap, pix, out),
        5 => pack_gathered::<5>(pad, tap, pix, out),
        6 => pack_gathered::<6>(pad, tap, pix, out),
        7 => pack_gathered::<7>(pad, tap, pix, out),
        8 => pack_gathered::<8>(pad, tap, pix, out),
        12 => pack_gathered::<12>(pad, tap, pix, out),
        _ => {
            let kc = tap.len();
            for (panel, pix) in out.chunks_exact_mut(mr * kc).zip(pix.chunks(mr)) {
                for (dst, &t) in panel.chunks_exact_mut(mr).zip(tap) {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = pix.get(i).map_or(0.0, |&p| pad[t + p]);
                    }
                }
            }
        }
    }
}

/// One work item of a transposed product ([`Swap`]): output channels `rows` and pixels `cols`
/// of C (`c`, rows `l` apart) as `Bᵀ·Aᵀ`, with A (the weights) at `a`, or packed ahead as the
/// transposed product's B panels in `a_packed`, and the patches of `image` (`channels` planes
/// of one group, with whether this thread's buffer must copy it: not when it holds its padded
/// copy from the item before) as its A panels; computed into a pixel-major scratch block over
/// all of K, then transposed into C. A convolution without padding gathers its patches from
/// the image itself, of which the copy would only be a window.
///
/// # Safety
/// As `run_items`: `a`, `image` and `c` point at this item's weights, image and C in the arena.
#[allow(clippy::too_many_arguments)]
unsafe fn run_swapped(
    d: &GemmDesc,
    sw: &Swap,
    [rows, cols]: [[usize; 2]; 2],
    a: *const f32,
    a_packed: Option<&[f32]>,
    (image, fresh): (*const f32, bool),
    geom: &PatchGeom,
    channels: usize,
    c: *mut f32,
) -> Result<(), &'static str> {
    let (kern, bl) = (sw.kernel, sw.blocking);
    kern.check()?;
    sw.b_packing().check()?;
    if bl.mc == 0 || bl.kc == 0 || bl.nc == 0 {
        return Err("an empty cache block");
    }
    if rows[0] > rows[1] || rows[1] > d.mg || cols[0] > cols[1] || cols[1] > d.l {
        return Err("rows or columns outside the transposed product");
    }
    // the transposed product's tile: mr pixels × nr channels
    let (mr, nr) = (kern.mr, kern.nr);
    let np = d.mg.div_ceil(nr) * nr;
    if let Some(ap) = a_packed
        && (Some(ap.len()) != packed_len(d.mg, d.kg, nr)
            || (rows[0] < rows[1] && !rows[0].is_multiple_of(nr))
            || !bl.nc.is_multiple_of(nr))
    {
        return Err("a packed A of the wrong size, or channels off the tiles");
    }
    if channels.checked_mul(geom.kh * geom.kw) != Some(d.kg) || geom.oh.checked_mul(geom.ow) != Some(d.l) {
        return Err("a transposed product's depth or width is not its patches'");
    }
    let (nch, npx) = (rows[1] - rows[0], cols[1] - cols[0]);
    // scratch rows a whole number of lines apart, and not a multiple of 4 KiB
    let ldt = nch.next_multiple_of(16) + 16;
    let (mut tbuf, mut pbuf, mut tap, mut pix) = SWAPPED.take();
    // the padded copy: output pixel (y, x)'s tap (c, i, j) at c·hp·wp + (y·s_h + i·d_h)·wp +
    // x·s_w + j·d_w, every one inside the copy
    let [hp, wp] = geom.spans().unwrap_or([0, 0]);
    // without padding every tap lies in the image (rows below hp ≤ h, columns below wp ≤ w):
    // its planes are read where they are, `h × w` each (a 1 × 1 stride-2 convolution's copy
    // was 14 % of its time on one thread, and each thread made all of it)
    let in_place = geom.pad == [0, 0] && hp <= geom.h && wp <= geom.w;
    let (src, [hs, ws]): (&[f32], _) = if in_place {
        // SAFETY: forwarded from the caller: the image holds `channels` planes of h × w.
        (
            unsafe { std::slice::from_raw_parts(image, channels * geom.h * geom.w) },
            [geom.h, geom.w],
        )
    } else {
        let pad = floats(&mut pbuf, channels * hp * wp);
        if fresh {
            // SAFETY: forwarded from the caller.
            unsafe { pad_copy(image, channels, [geom.h, geom.w], geom.pad, [hp, wp], WHOLE, pad) };
        }
        (pad, [hp, wp])
    };
    tap.clear();
    for ch in 0..channels {
        for i in 0..geom.kh {
            for j in 0..geom.kw {
                tap.push((ch * hs + i * geom.dilation[0]) * ws + j * geom.dilation[1]);
            }
        }
    }
    pix.clear();
    pix.extend((cols[0]..cols[1]).map(|q| q / geom.ow * geom.stride[0] * ws + q % geom.ow * geom.stride[1]));
    let scratch = floats(&mut tbuf, npx * ldt);
    let t = scratch.as_mut_ptr();
    // the weights as the transposed product's B (`pack_a` reads only `a` and `lda`), and its
    // C placed so that pixel i, channel j lands at (i − cols[0])·ldt + j − rows[0]
    let p = Problem {
        m: d.l,
        n: d.mg,
        k: d.kg,
        a,
        lda: d.kg,
        b: BSource::Matrix {
            ptr: std::ptr::null(),
            ld: 0,
        },
        c: t.wrapping_sub(cols[0] * ldt + rows[0]),
        ldc: ldt,
        epilogue: None,
    };
    if d.kg == 0 {
        scratch.fill(0.0);
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let kstep = k_step(d.kg, bl.kc);
        for jc in (rows[0]..rows[1]).step_by(bl.nc) {
            let nc = bl.nc.min(rows[1] - jc);
            for pc in (0..d.kg).step_by(kstep) {
                let kc = kstep.min(d.kg - pc);
                let panels = nc.div_ceil(nr) * nr * kc;
                let bpack: &[f32] = match a_packed {
                    // jc is a multiple of nr: its panels start at jc·kc in the K block at pc·np
                    Some(ap) => &ap[pc * np + jc * kc..pc * np + jc * kc + panels],
                    None => {
                        let bpack = floats(bbuf, panels);
                        // SAFETY: forwarded from the caller (the weights' rows jc..jc + nc).
                        unsafe { pack_a(&p, bpack, jc, nc, pc, kc, nr) };
                        bpack
                    }
                };
                for ic in (cols[0]..cols[1]).step_by(bl.mc) {
                    let mc = bl.mc.min(cols[1] - ic);
                    let apack = floats(abuf, mc.div_ceil(mr) * mr * kc);
                    let px = &pix[ic - cols[0]..ic - cols[0] + mc];
                    pack_gathered_mr(mr, src, &tap[pc..pc + kc], px, apack);
                    // SAFETY: pixels [ic, ic + mc) ⊆ cols and channels [jc, jc + nc) ⊆ rows
                    // land inside the scratch (npx rows of ldt ≥ nch floats).
                    unsafe {
                        macro_kernel(
                            &kern,
                            &p,
                            APanels::Packed(apack),
                            BPanels::Packed(bpack),
                            [ic, mc],
                            [jc, nc],
                            kc,
                            pc > 0,
                            None,
                        )
                    };
                }
            }
        }
    });
    // the scratch (pixels × channels) transposed into C (channels × pixels); one float at a
    // time this was 7 % of a 3 × 3 256 ← 64 on 13 × 13
    // SAFETY: the scratch holds npx rows of ldt ≥ nch floats; channels rows[0] + nch ≤ mg and
    // pixels cols[0] + npx ≤ l are inside C (rows l apart).
    unsafe {
        transpose_block(
            scratch.as_ptr(),
            ldt,
            c.add(rows[0] * d.l + cols[0]),
            d.l,
            [npx, nch],
        )
    };
    SWAPPED.set((tbuf, pbuf, tap, pix));
    Ok(())
}

thread_local! {
    /// Each thread's buffers for wide products: the padded copy of an image and the item's
    /// block of wide C.
    static WIDE: std::cell::Cell<(Vec<Line>, Vec<Line>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Finishes a block of a `gemm` item's C: `(m0, col, rows, cols, src)`, the block's rows
/// and columns, read from C or from `src` (its first element and the distance of its rows, in
/// floats), written to C through the epilogue (or copied).
type Finish<'a> = dyn Fn(usize, usize, usize, usize, Option<(*const f32, usize)>) + 'a;

/// One work item of a wide product ([`Shifted`]): rows `rows` and wide columns `cols` of the
/// product of A (at `a`, or `a_packed`) and the wide patches of `image` (one group's
/// channels, `h × w` each, with the padded rows to copy, which hold those `cols` read
/// ([`Shifted::copy_rows`]); `None` when this thread's buffer already holds them, copied for
/// the item before), computed into a scratch block, then handed to `finish` one
/// output row segment at a time (the wide columns past each output row dropped), which
/// writes it to C through the epilogue in one pass. Where no column is dropped (`wp = ow`: a
/// 1 × 1 kernel at a stride, say) the wide columns are C's own, and the product is computed
/// in C (`c`, the item's, rows `l` apart), its blocks finished in place.
///
/// # Safety
/// As `run_items`: `a` and `image` point at this item's A and image in the arena, `c` at its
/// C, which `finish` writes;
/// `rows ⊆ [0, mg)` and `cols ⊆ [0, sh.cols)`; `sh` is `Shifted::for_patches(geom, mg's
/// channels)` (its `len` covers the copy).
#[allow(clippy::too_many_arguments)]
unsafe fn run_shifted(
    d: &GemmDesc,
    [rows, cols]: [[usize; 2]; 2],
    a: *const f32,
    a_packed: Option<&[f32]>,
    image: Option<(*const f32, [usize; 2])>,
    geom: &PatchGeom,
    sh: &Shifted,
    (c, finish): (*mut f32, &Finish<'_>),
) -> Result<(), &'static str> {
    if rows[0] > rows[1] || rows[1] > d.mg || cols[0] > cols[1] || cols[1] > sh.cols || sh.wp == 0 {
        return Err("rows or columns outside the wide product");
    }
    // C's own columns: wide column q is output pixel q (every one of the `l = oh·ow` inside C)
    let in_c = sh.wp == geom.ow && sh.cols == d.l;
    let ([h, w], [top, left]) = ([geom.h, geom.w], geom.pad);
    let plane = sh.hp * sh.wp;
    let [sy, sx] = geom.stride;
    let phases = sy * sx;
    let channels = sh.channels;
    let (mut copy, mut block) = WIDE.take();
    let mut run = || -> Result<(), &'static str> {
        let pad = floats(&mut copy, sh.len);
        match image {
            // SAFETY: forwarded from the caller.
            Some((image, copy_rows)) if phases == 1 => unsafe {
                pad_copy(
                    image,
                    channels,
                    [h, w],
                    [top, left],
                    [sh.hp, sh.wp],
                    copy_rows,
                    pad,
                )
            },
            // SAFETY: forwarded from the caller.
            Some((image, copy_rows)) => unsafe {
                phase_copy(image, channels, geom, [sh.hp, sh.wp], copy_rows, pad)
            },
            // the buffer holds this image's copy from the item before
            None => {}
        }
        let b = BSource::Shifted {
            ptr: pad.as_ptr(),
            plane,
            wp: sh.wp,
            kh: geom.kh,
            kw: geom.kw,
            stride: geom.stride,
            dilation: geom.dilation,
        };
        if in_c {
            let done = |blk: Block| finish(blk.m0, blk.n0, blk.rows, blk.cols, None);
            let p = d.problem(a, b, c, &done);
            // SAFETY: A as in `run_items`; B reads the padded copy within `sh.len` floats; C is
            // written at the item's rows and columns, `cols ⊆ [0, sh.cols) = [0, l)`.
            return unsafe { gemm_with(&d.kernel, &d.blocking, &p, rows, cols, [a_packed, None]) };
        }
        // the columns one `nc`-wide block at a time (the driver's own blocks: the same
        // arithmetic as one call), so that the scratch stays one block however many items a
        // thread runs at once
        let step = d.blocking.nc.max(1);
        let mut c0 = cols[0];
        while c0 < cols[1] {
            let c1 = cols[1].min(c0.saturating_add(step));
            let ldc = c1 - c0;
            let scratch = floats(&mut block, (rows[1] - rows[0]) * ldc);
            let out = scratch.as_mut_ptr();
            let move_out = |blk: Block| {
                let mut q = blk.n0;
                while q < blk.n0 + blk.cols {
                    let (y, x0) = (q / sh.wp, q % sh.wp);
                    let run = (blk.n0 + blk.cols - q).min(sh.wp - x0);
                    if x0 < geom.ow {
                        // scratch rows blk.m0 − rows[0].. hold the block's wide columns from
                        // c0; C's row m holds oh·ow = l floats, y < oh, x0 + len ≤ ow
                        let len = run.min(geom.ow - x0);
                        let src = out.wrapping_add((blk.m0 - rows[0]) * ldc + q - c0);
                        finish(
                            blk.m0,
                            y * geom.ow + x0,
                            blk.rows,
                            len,
                            Some((src.cast_const(), ldc)),
                        );
                    }
                    q += run;
                }
            };
            let p = Problem {
                m: d.mg,
                n: sh.cols,
                k: d.kg,
                a,
                lda: d.kg,
                b,
                // the scratch holds rows × [c0, c1) from (rows[0], c0): C is placed so that
                // the driver's row r, column j lands at (r − rows[0])·ldc + j − c0
                c: out.wrapping_sub(rows[0] * ldc + c0),
                ldc,
                epilogue: Some(&move_out),
            };
            // SAFETY: A as in `run_items`; B reads the padded copy within `sh.len` floats; C is
            // written only at the block's rows and columns, inside the scratch.
            unsafe { gemm_with(&d.kernel, &d.blocking, &p, rows, [c0, c1], [a_packed, None]) }?;
            c0 = c1;
        }
        Ok(())
    };
    let result = run();
    WIDE.set((copy, block));
    result
}

/// Packs what the `gemm` described by `desc` reads packed ahead into its places in the arena:
/// its A whole, every group ([`GemmDesc::a_packed`]), and its B ([`GemmDesc::b_packed`]); the
/// JIT'd `prep` kernel of a `gemm` whose A or B is computed from the weights alone calls this
/// (its range `[begin, end)` is `[0, 1)`) when the weights are set or changed. Failures are
/// reported as `kiln_gemm_run`'s.
///
/// # Safety
/// As `kiln_gemm_run`; no other thread may touch the arena while it runs.
pub unsafe extern "C" fn kiln_gemm_pack(desc: *const GemmDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { &*desc };
    let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<(), &'static str> {
        if (d.a_packed.is_none() && d.b_packed.is_none()) || (begin, end) != (0, 1) {
            return Err("nothing packed ahead, or a range other than [0, 1)");
        }
        let at = |off: usize| arena.wrapping_add(off).cast::<f32>();
        if let Some(off) = d.a_packed {
            let len = d.packed_a_group().ok_or("a packed A too big")?;
            for g in 0..d.groups {
                let p = Problem::a_only(at(d.a).wrapping_add(g * d.mg * d.kg), d.mg, d.kg);
                // SAFETY: A is `groups·mg × kg` at `d.a` (`run_items`), the packings are `groups`
                // times `len` floats at `off` (`Gemms::add` reserved them), `g < groups`, and this
                // thread alone touches the arena.
                let out = unsafe { std::slice::from_raw_parts_mut(at(off).add(g * len), len) };
                let (kern, bl) = d.a_packing();
                // SAFETY: as above.
                unsafe { pack_a_whole(&kern, &bl, &p, out) }?;
            }
        }
        if let Some(off) = d.b_packed {
            let len = packed_len(d.l, d.kg, d.kernel.nr).ok_or("a packed B too big")?;
            if (d.batch, d.groups) != (1, 1) || matches!(d.b, BArena::Patches { .. }) {
                return Err("a patch matrix, images or groups packed ahead");
            }
            let b = d.b_source(arena, 0, 0)?;
            // SAFETY: B is `kg × l` at its offset (`run_items`, one image and group), the packing
            // `len` floats at `off` (`Gemms::add_dense` reserved them), and this thread alone
            // touches the arena.
            let out = unsafe { std::slice::from_raw_parts_mut(at(off), len) };
            // SAFETY: as above.
            unsafe { pack_b_whole(d.kernel.nr, &d.blocking, &b, [d.kg, d.l], out) }?;
        }
        Ok(())
    }));
    if !matches!(ok, Ok(Ok(()))) {
        // SAFETY: as in `kiln_gemm_run`.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(arena.add(d.status).cast::<u64>()) };
        word.store(STATUS_FAILED, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Emits a call of a driver entry `f(desc, arena, begin, end)` ([`kiln_gemm_run`],
/// [`kiln_gemm_pack`]) with the description `desc` (which outlives the code).
pub fn emit_driver_call(
    e: &mut Emitter,
    f: unsafe extern "C" fn(*const GemmDesc, *mut u8, i64, i64),
    desc: &GemmDesc,
    [arena, begin, end]: [Value; 3],
) {
    let mut sig = cranelift_codegen::ir::Signature::new(e.b.func.signature.call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(I64));
    }
    let sig = e.b.import_signature(sig);
    let f = e.iconst(f as *const () as usize as i64);
    let desc = e.iconst(desc as *const GemmDesc as usize as i64);
    e.b.ins().call_indirect(sig, f, &[desc, arena, begin, end]);
}

/// A standalone single-threaded sgemm on the Cranelift micro-kernel (benches and tests).
pub struct Sgemm {
    module: Option<JITModule>,
    kernel: MicroKernel,
    pub blocking: Blocking,
}

impl Sgemm {
    /// An sgemm on `tier`'s micro-kernel.
    pub fn with_tier(tier: Tier) -> Result<Sgemm, JitError> {
        let mut g = Sgemm::new()?;
        if let Some(k) = tier.main_kernel() {
            g.kernel = k;
            g.blocking = Blocking::for_host(&k);
        }
        Ok(g)
    }

    /// An sgemm on the Cranelift micro-kernel.
    pub fn new() -> Result<Sgemm, JitError> {
        let mut module = codegen::new_module("none")?;
        let id = define_micro_kernel(&mut module, "micro_kernel")?;
        module
            .finalize_definitions()
            .map_err(|e| JitError::Codegen(format!("finalizing: {e}")))?;
        let p = module.get_finalized_function(id);
        // SAFETY: defined above with the `MicroKernelFn` signature (six i64, SystemV).
        let f = unsafe { std::mem::transmute::<*const u8, MicroKernelFn>(p) };
        Ok(Sgemm {
            module: Some(module),
            kernel: MicroKernel { mr: MR, nr: NR, f },
            blocking: Blocking::for_host(&MicroKernel { mr: MR, nr: NR, f }),
        })
    }

    /// `c[m×n] = a[m×k]·b[k×n]`, all row-major and dense.
    pub fn run(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), JitError> {
        let want = |what: &str, got: usize, r: usize, cc: usize| {
            if Some(got) == r.checked_mul(cc) {
                Ok(())
            } else {
                Err(JitError::Codegen(format!(
                    "sgemm: {what} has {got} elements, expected {r}×{cc}"
                )))
            }
        };
        want("a", a.len(), m, k)?;
        want("b", b.len(), k, n)?;
        want("c", c.len(), m, n)?;
        let p = Problem {
            m,
            n,
            k,
            a: a.as_ptr(),
            lda: k,
            b: BSource::Matrix {
                ptr: b.as_ptr(),
                ld: n,
            },
            c: c.as_mut_ptr(),
            ldc: n,
            epilogue: None,
        };
        // SAFETY: the lengths were checked above; `c` is exclusively borrowed.
        unsafe { gemm(&self.kernel, &self.blocking, &p, [0, m], [0, n]) }
            .map_err(|e| JitError::Codegen(format!("sgemm: {e}")))
    }

    /// The micro-kernel's tile: (rows, columns).
    pub fn tile(&self) -> (usize, usize) {
        (self.kernel.mr, self.kernel.nr)
    }

    /// A row-major `m × k` A packed whole for [`Sgemm::run_packed`] (as a model's weights are
    /// packed once when they are set).
    pub fn pack_a(&self, m: usize, k: usize, a: &[f32]) -> Result<Vec<f32>, JitError> {
        let err = |e: &str| JitError::Codegen(format!("sgemm: {e}"));
        if Some(a.len()) != m.checked_mul(k) {
            return Err(err("an A of the wrong size"));
        }
        let len = packed_len(m, k, self.kernel.mr).ok_or_else(|| err("an A too big to pack"))?;
        let mut packed = vec![0.0f32; len];
        let p = Problem::a_only(a.as_ptr(), m, k);
        // SAFETY: `a` holds m·k floats; only A is read.
        unsafe { pack_a_whole(&self.kernel, &self.blocking, &p, &mut packed) }.map_err(err)?;
        Ok(packed)
    }

    /// [`Sgemm::run`] with A given packed by [`Sgemm::pack_a`] (under this tile and blocking),
    /// rows `[r0, r1)` of C only (`r0` at a tile boundary).
    #[allow(clippy::too_many_arguments)]
    pub fn run_packed(
        &self,
        m: usize,
        n: usize,
        k: usize,
        a_packed: &[f32],
        b: &[f32],
        c: &mut [f32],
        [r0, r1]: [usize; 2],
    ) -> Result<(), JitError> {
        let err = |e: &str| JitError::Codegen(format!("sgemm: {e}"));
        if Some(a_packed.len()) != packed_len(m, k, self.kernel.mr)
            || Some(b.len()) != k.checked_mul(n)
            || Some(c.len()) != m.checked_mul(n)
        {
            return Err(err("operands of the wrong size"));
        }
        let p = Problem {
            m,
            n,
            k,
            // never read (A comes packed), but valid for the m·k floats `gemm` may read
            a: a_packed.as_ptr(),
            lda: k,
            b: BSource::Matrix {
                ptr: b.as_ptr(),
                ld: n,
            },
            c: c.as_mut_ptr(),
            ldc: n,
            epilogue: None,
        };
        // SAFETY: the lengths were checked above (a_packed holds ≥ m·k floats); `c` is
        // exclusively borrowed; `gemm_with` checks the rows.
        unsafe {
            gemm_with(
                &self.kernel,
                &self.blocking,
                &p,
                [r0, r1],
                [0, n],
                [Some(a_packed), None],
            )
        }
        .map_err(err)
    }
}

impl Drop for Sgemm {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: no pointer into the module's code outlives `self`.
            unsafe { m.free_memory() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `strided_copy` is `dst[k] = src[k·step]` at every length and start, whichever of its
    /// paths (AVX-512's sixteen, AVX2's eight, SSE's four, one at a time) takes which part, and
    /// writes nothing past `dst` nor reads past `src` (slices: a read past would panic).
    #[test]
    fn strided_copy_takes_every_step_th_float() {
        let src: Vec<f32> = (0..300).map(|i| i as f32 * 0.5 - 7.0).collect();
        for step in 1..=3 {
            for start in 0..3 {
                for n in 0..70 {
                    // exactly the floats the copy may read, and a guard past dst
                    let need = if n == 0 { 0 } else { (n - 1) * step + 1 };
                    let s = &src[start..start + need];
                    let mut dst = vec![f32::NAN; n + 1];
                    strided_copy(&mut dst[..n], s, step);
                    for (k, v) in dst[..n].iter().enumerate() {
                        assert_eq!(
                            v.to_bits(),
                            s[k * step].to_bits(),
                            "step {step} start {start} n {n} k {k}"
                        );
                    }
                    assert!(dst[n].is_nan(), "step {step} n {n}: wrote past dst");
                }
            }
        }
        // each vector path alone where this CPU has its set (`strided_copy` takes the widest):
        // the prefix it claims is right, whole registers, and nothing past it is written
        #[cfg(target_arch = "x86_64")]
        for (name, lanes, has) in [
            ("avx512", 16, std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx2",
                8,
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"),
            ),
        ] {
            if !has {
                continue;
            }
            for n in 0..70usize {
                for extra in 0..3 {
                    let s = &src[..(2 * n + extra).saturating_sub(1)];
                    let mut dst = vec![f32::NAN; n];
                    // SAFETY: the CPU has the set (checked above).
                    let k = unsafe {
                        if lanes == 16 {
                            evens_avx512(&mut dst, s)
                        } else {
                            evens_avx2(&mut dst, s)
                        }
                    };
                    assert!(k % lanes == 0 && k <= n && 2 * k <= s.len(), "{name} n {n}: {k}");
                    assert!(
                        k + lanes > n || 2 * (k + lanes) > s.len(),
                        "{name} n {n}: stopped at {k}"
                    );
                    for (i, v) in dst.iter().enumerate() {
                        if i < k {
                            assert_eq!(v.to_bits(), s[2 * i].to_bits(), "{name} n {n} i {i}");
                        } else {
                            assert!(v.is_nan(), "{name} n {n}: wrote {i} past {k}");
                        }
                    }
                }
            }
        }
    }

    /// Where sysfs lists CPU 0's caches, each level's size is read (the directory also holds
    /// files that are no cache, `uevent`, which once made every size unknown), and a larger
    /// level is no smaller.
    #[test]
    fn cache_sizes_are_read_from_sysfs() {
        let listed = |level: u32| {
            std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").is_ok_and(|d| {
                d.flatten().any(|e| {
                    std::fs::read_to_string(e.path().join("level"))
                        .is_ok_and(|l| l.trim() == level.to_string())
                })
            })
        };
        for level in 1..=2 {
            if listed(level) {
                assert!(cache_size(level).is_some_and(|s| s >= 1024), "L{level} unread");
            }
        }
        if let (Some(l1), Some(l2)) = (cache_size(1), cache_size(2)) {
            assert!(l2 >= l1, "L2 {l2} below L1 {l1}");
        }
    }

    /// The padded rows a thread copies for its wide columns hold every float those columns
    /// read: for each geometry (strides 1 to 3: a tap reads its phase's element `(y + ⌊i·dh /
    /// s⌋, x + ⌊j·dw / s⌋)`), ranges of wide columns and each tap (rows past `hp` are read
    /// only by the runs of dropped columns that wrap past a row's end; they are the next
    /// phase's or the copy's slack, inside the buffer).
    #[test]
    fn copied_rows_hold_every_float_the_columns_read() {
        let cases = [
            (6, 16, 3, 1, 1, 1),
            (5, 30, 3, 2, 2, 1),
            (4, 40, 5, 1, 2, 1),
            (3, 10, 1, 1, 0, 1),
            (7, 17, 3, 1, 0, 1),
            (9, 32, 3, 1, 1, 2),
            (11, 45, 7, 1, 3, 2),
            (8, 51, 3, 2, 2, 3),
        ];
        for (h, w, k, d, pad, s) in cases {
            let out = |n: usize| (n + 2 * pad - d * (k - 1) - 1) / s + 1;
            let g = PatchGeom {
                h,
                w,
                kh: k,
                kw: k,
                stride: [s, s],
                dilation: [d, d],
                pad: [pad, pad],
                oh: out(h),
                ow: out(w),
            };
            let sh = Shifted::for_patches(&g, 2).unwrap();
            for c0 in 0..sh.cols {
                for len in [1, 7, sh.wp, 2 * sh.wp + 3, sh.cols] {
                    let c1 = sh.cols.min(c0 + len);
                    let [r0, r1] = sh.copy_rows(&g, [c0, c1]);
                    for q in c0..c1 {
                        let (y, x) = (q / sh.wp, q % sh.wp);
                        for (i, j) in (0..k).flat_map(|i| (0..k).map(move |j| (i, j))) {
                            let row = ((y + i * d / s) * sh.wp + x + j * d / s) / sh.wp;
                            assert!(
                                row >= r0 && (row < r1 || row >= sh.hp),
                                "{h}x{w} k{k} d{d} s{s}: columns {c0}..{c1} read row {row}, copied {r0}..{r1}"
                            );
                        }
                    }
                }
            }
        }
    }

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for kk in 0..k {
                for j in 0..n {
                    c[i * n + j] += f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]);
                }
            }
        }
        c
    }

    fn check(g: &Sgemm, m: usize, n: usize, k: usize) {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 + 3) % 13) as f32 / 13.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 + 1) % 11) as f32 / 11.0 - 0.5)
            .collect();
        let mut c = vec![f32::NAN; m * n];
        g.run(m, n, k, &a, &b, &mut c).unwrap();
        let r = reference(m, n, k, &a, &b);
        for (i, (&x, &y)) in c.iter().zip(&r).enumerate() {
            assert!(
                (f64::from(x) - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "{m}×{n}×{k} at {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn every_edge_tile_and_block_boundary() {
        let mut g = Sgemm::new().unwrap();
        g.blocking = Blocking {
            mc: 8,
            kc: 32,
            nc: 24,
        };
        for (m, n, k) in [
            (1, 1, 1),
            (4, 12, 16),
            (5, 13, 17),
            (3, 11, 15),
            (9, 25, 33),
            (8, 24, 64),
            (17, 49, 70),
            (2, 1, 0),
        ] {
            check(&g, m, n, k);
        }
    }

    /// A shallow product whose C is larger than L2, and a deep one of `BAND_M` rows whose C
    /// is more than half of it, run in row bands (`row_bands`) on every tier this CPU runs,
    /// edge tiles included (K in two blocks for the deep one), and every element of C is its
    /// sum.
    #[test]
    fn shallow_products_larger_than_l2_run_in_row_bands() {
        let (m, k) = (50, 16);
        let n = cache_size(2).unwrap_or(1 << 20) / (4 * m) + 77;
        assert!(row_bands(m, n, k) && !row_bands(m, n, BAND_K + 1) && !row_bands(m, 64, k));
        // and a deep product of BAND_M rows whose C is more than half of L2
        let wide = cache_size(2).unwrap_or(1 << 20) / (8 * BAND_M) + 5;
        assert!(row_bands(BAND_M, wide, 200) && !row_bands(BAND_M - 1, wide, 200));
        for tier in Tier::runnable() {
            check(&Sgemm::with_tier(tier).unwrap(), m, n, k);
            check(&Sgemm::with_tier(tier).unwrap(), BAND_M, wide, 200);
        }
    }

    /// Every tile of every Rust tier this CPU runs (each tier's tests run where its set is)
    /// equals the Cranelift kernel bit for bit under the same blocking, with A packed per block
    /// and packed whole ahead of time alike.
    #[test]
    fn every_tier_and_tile_equals_the_cranelift_kernel_bit_for_bit() {
        let mut c = Sgemm::new().unwrap();
        c.blocking = Blocking {
            mc: 48,
            kc: 64,
            nc: 96,
        };
        let shapes = [
            (13, 33, 17),
            (25, 70, 300),
            (12, 32, 1),
            (1, 1, 5),
            (50, 130, 129),
            (3, 0, 4),
            (0, 3, 4),
        ];
        let data = |m: usize, n: usize, k: usize| {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            (a, b)
        };
        let mut tiles: Vec<MicroKernel> = vec![c.kernel];
        for tier in Tier::runnable() {
            tiles.extend(crate::gemm_simd::swap_tiles(tier.isa()));
            tiles.extend(crate::gemm_simd::tiles(tier.isa()));
        }
        for kern in tiles {
            let mut g = Sgemm::with_tier(Tier::Cranelift).unwrap();
            g.kernel = kern;
            // the same kc (so that every tier cuts K identically), mc a multiple of the tile
            g.blocking = Blocking {
                mc: 48 / kern.mr * kern.mr.max(1),
                ..c.blocking
            };
            for (m, n, k) in shapes {
                let (a, b) = data(m, n, k);
                let (mut x, mut y, mut z) = (vec![0.0; m * n], vec![0.0; m * n], vec![0.0; m * n]);
                g.run(m, n, k, &a, &b, &mut x).unwrap();
                c.run(m, n, k, &a, &b, &mut y).unwrap();
                assert_eq!(x, y, "{}×{} tile, {m}×{n}×{k}", kern.mr, kern.nr);
                // in two row blocks, as two threads would run it
                let packed = g.pack_a(m, k, &a).unwrap();
                let half = (m.div_ceil(2).div_ceil(kern.mr) * kern.mr).min(m);
                g.run_packed(m, n, k, &packed, &b, &mut z, [0, half]).unwrap();
                g.run_packed(m, n, k, &packed, &b, &mut z, [half, m]).unwrap();
                assert_eq!(x, z, "{}×{} tile packed ahead, {m}×{n}×{k}", kern.mr, kern.nr);
                if m * n * k > 0 {
                    check(&g, m, n, k);
                }
            }
        }
    }

    /// A tile the driver cannot hold, or work items outside the product, set the node's
    /// status word instead of panicking (which would abort the process inside JIT frames).
    #[test]
    fn a_driver_failure_is_a_status_not_a_panic() {
        let g = Sgemm::new().unwrap();
        // the arena: the status word at byte 0, A, B and C (4×4 each) at 64, 128 and 192
        let mut arena = vec![u64::MAX; 64];
        let mut d = GemmDesc {
            kernel: MicroKernel {
                mr: 100,
                nr: NR,
                f: g.kernel.f,
            },
            epilogue: None,
            act: crate::elementwise_kernels::Act::NONE,
            blocking: g.blocking,
            batch: 1,
            groups: 1,
            mg: 4,
            kg: 4,
            l: 4,
            a: 64,
            b: BArena::Matrix { offset: 128 },
            c: 192,
            bias: None,
            residual: None,
            m_step: 4,
            n_step: NR,
            a_packed: None,
            b_packed: None,
            status: 0,
            direct: None,
            bias_cols: false,
        };
        assert_eq!(d.items(), 1);
        let run = |d: &GemmDesc, arena: &mut Vec<u64>, begin: i64, end: i64| {
            arena[0] = u64::MAX;
            // SAFETY: the description fits the 512-byte arena.
            unsafe { kiln_gemm_run(d, arena.as_mut_ptr().cast(), begin, end) };
            arena[0]
        };
        assert_eq!(run(&d, &mut arena, 0, 1), STATUS_FAILED, "a 100-row tile");
        d.kernel.mr = MR;
        assert_eq!(run(&d, &mut arena, 0, 2), STATUS_FAILED, "item 1 of 1");
        assert_eq!(run(&d, &mut arena, -1, 1), STATUS_FAILED, "item -1");
        assert_eq!(run(&d, &mut arena, 0, 1), u64::MAX, "a good run");
    }

    /// The products computed transposed on the main tile of each Rust tier: ResNet-18's
    /// `layer3` and `layer4` convolutions, not its wide ones.
    #[test]
    fn narrow_products_only_run_transposed() {
        for tier in Tier::runnable() {
            let Some(main) = tier.main_kernel() else {
                continue;
            };
            let swap = |m, n, wide| Swap::for_product(&main, m, n, wide).is_some();
            // layer4's patches are gathered (7 × 7: 2 columns of 9 dropped), the others wide
            assert!(swap(512, 49, None) && swap(256, 196, Some(224)), "{tier:?}");
            assert!(
                !swap(128, 784, Some(840)) && !swap(64, 3136, Some(3248)),
                "{tier:?}"
            );
            assert!(!swap(512, 512, None), "{tier:?}");
        }
    }

    /// `transpose_block` writes exactly the transpose: blocks whose sides are and are not
    /// multiples of the 4 × 4 registers, 2 × 4 blocks after them (6, 7, 10 rows), rows wider
    /// than the block on both sides, and nothing outside the block (the destination's other
    /// floats keep their value).
    #[test]
    fn transpose_block_is_the_transpose() {
        for (rows, cols) in [
            (0, 5),
            (1, 1),
            (3, 7),
            (4, 4),
            (8, 12),
            (13, 6),
            (169, 256),
            (6, 133),
            (7, 9),
            (2, 8),
            (10, 3),
        ] {
            let (lds, ldd) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * lds).map(|i| i as f32).collect();
            let mut dst = vec![-1.0f32; cols * ldd];
            // SAFETY: rows × cols of src (rows lds apart) and cols × rows of dst (ldd apart).
            unsafe { transpose_block(src.as_ptr(), lds, dst.as_mut_ptr(), ldd, [rows, cols]) };
            for j in 0..cols {
                for i in 0..ldd {
                    let want = if i < rows { src[i * lds + j] } else { -1.0 };
                    assert_eq!(dst[j * ldd + i], want, "{rows} × {cols}: row {j}, column {i}");
                }
            }
        }
    }

    #[test]
    fn host_blocking() {
        let g = Sgemm::new().unwrap();
        check(&g, 67, 131, 300);
        let b = Blocking::for_caches(32 << 10, 1 << 20, MR, NR);
        assert_eq!(b.kc % 16, 0);
        assert_eq!(b.mc % MR, 0);
        assert_eq!(b.nc % NR, 0);
    }
}
/// Measurement probes, not tests (`#[ignore]`): run one with
/// `MK=5,8,8 cargo test --release -p kiln-jit --lib probes::kernel -- --ignored --nocapture`
/// (tile rows, columns, unroll: the kernel alone, panels in L1, machine code in /tmp/mk.bin) or
/// `BL="215,304,424;120,256,1024" cargo test --release -p kiln-jit --lib probes::blocking -- --ignored --nocapture`
/// (sgemm 1024³ under each `mc,kc,nc`), and `pack_probe::pack_patches` (packing a 3×3 conv's
/// patches straight from a 64×56×56 image). docs/performance.md has what they measured.
#[cfg(test)]
mod probes {
    /// Nanoseconds this thread has spent on a CPU (Linux schedstat): unlike wall time, not
    /// inflated while other processes hold the core.
    fn cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    #[ignore]
    fn kernel() {
        use super::*;
        let mut module = codegen::new_module("none").unwrap();
        let mut sig = module.make_signature();
        for _ in 0..6 {
            sig.params.push(AbiParam::new(I64));
        }
        let id = module.declare_function("mk", Linkage::Local, &sig).unwrap();
        let v: Vec<usize> = std::env::var("MK")
            .unwrap()
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let (mr, nr) = (v[0], v[1]);
        let code = codegen::define(&mut module, id, sig, true, |e, p, _| {
            emit_micro_kernel(e, p, v[0], v[1], v[2])
        })
        .unwrap();
        std::fs::write("/tmp/mk.bin", code.unwrap().1).unwrap();
        module.finalize_definitions().unwrap();
        let f = unsafe { std::mem::transmute::<*const u8, MicroKernelFn>(module.get_finalized_function(id)) };
        let kc = 256;
        let a = vec![0.5f32; kc * mr];
        let b = vec![0.25f32; kc * nr];
        let mut c = vec![0.0f32; mr * nr];
        let iters = 200_000;
        for _ in 0..3 {
            let t = cpu_ns();
            for _ in 0..iters {
                unsafe {
                    f(
                        kc as i64,
                        a.as_ptr(),
                        b.as_ptr(),
                        c.as_mut_ptr(),
                        (nr * 4) as i64,
                        1,
                    )
                };
            }
            let s = (cpu_ns() - t) as f64 * 1e-9;
            println!(
                "kernel only: {:.1} GFLOP/s",
                (iters * kc * mr * nr * 2) as f64 / s / 1e9
            );
        }
    }

    #[test]
    #[ignore]
    fn blocking() {
        use super::*;
        let n = 1024;
        let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32).collect();
        let b = a.clone();
        let mut c = vec![0.0f32; n * n];
        let mut g = Sgemm::new().unwrap();
        let configs: Vec<Blocking> = std::env::var("BL")
            .unwrap()
            .split(';')
            .map(|t| {
                let v: Vec<usize> = t.split(',').map(|x| x.parse().unwrap()).collect();
                Blocking {
                    mc: v[0],
                    kc: v[1],
                    nc: v[2],
                }
            })
            .collect();
        for round in 0..3 {
            for bl in &configs {
                g.blocking = *bl;
                let t = cpu_ns();
                g.run(n, n, n, &a, &b, &mut c).unwrap();
                let gf = 2.0 * (n * n * n) as f64 / (cpu_ns() - t) as f64;
                println!("round {round} {bl:?}: {gf:.1}");
            }
        }
    }
}

#[cfg(test)]
mod pack_probe {
    #[test]
    #[ignore]
    fn pack_patches() {
        use super::*;
        let (c, h, w) = (64usize, 56usize, 56usize);
        let img: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let geom = PatchGeom {
            h,
            w,
            kh: 3,
            kw: 3,
            stride: [1, 1],
            dilation: [1, 1],
            pad: [1, 1],
            oh: 56,
            ow: 56,
        };
        let b = BSource::Patches {
            ptr: img.as_ptr(),
            geom,
        };
        let (k, l) = (c * 9, 56 * 56);
        let bl = Blocking::for_caches(32 << 10, 1 << 20, MR, NR);
        let mut out = vec![0.0f32; bl.kc * bl.nc];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            for jc in (0..l).step_by(bl.nc) {
                let nc = bl.nc.min(l - jc);
                for pc in (0..k).step_by(bl.kc) {
                    let kc = bl.kc.min(k - pc);
                    unsafe { pack_b(&b, &mut out, jc, nc, pc, kc, NR) };
                }
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "pack patches {}×{}: {:.2} ms = {:.2} ns/elem",
                k,
                l,
                s * 1e3,
                s * 1e9 / (k * l) as f64
            );
        }
    }
}
