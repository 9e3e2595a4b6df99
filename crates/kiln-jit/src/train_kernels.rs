//! Rust kernels of the training ops on the AVX2 and AVX-512 tiers, written once over
//! [`Simd`] and instantiated per set inside `#[target_feature]` entry points ([`kernels`]),
//! like `direct.rs` does for the forward pooling. The JIT'd kernel of a node (`lower_train`)
//! writes the node's description (a `#[repr(C)]` struct of `u64` words, compile-time
//! constants from the node's validated shapes and the memory plan) into its stack frame and
//! calls the entry point with it, the arena and its slice `[begin, end)` of the parallel
//! range. The Cranelift loops of `lower_train` stay the portable tier.
//!
//! - [`WgradDesc`]: a stride-1 (along rows) convolution's weight gradient for small products
//!   (few output channels, where packing the patch matrix for the GEMM driver costs more than
//!   its FMAs): `dw[o, c, i, j] = Σ_n Σ_{y,x} dy[n, o, y, x] · x[n, c, y·s + i·d − pt, x + j·d − pl]`,
//!   vectorized along the output columns `x`, a register block of output channels × column
//!   taps `j` sharing each load; each input row is copied once into a zero-padded row, so the
//!   column taps read it without bounds tests. Work items: (group, block of output channels,
//!   input channel, tap row `i`), each summing the whole batch, so threads write disjoint
//!   `dw` elements.
//! - [`IdsDesc`]: max pooling's argmax ids, parallel over planes: each register of output
//!   columns whose windows lie inside the row takes the maximum over the taps, then the
//!   first tap that equals it (row-major order: the smallest in-plane index) by a lane-wise
//!   minimum of the candidates' indices (as floats, exact below 2²⁴); a register holding a
//!   NaN or an infinity, and the border columns, take the interpreter's scalar rule.
//! - [`ScatterDesc`]: max pooling's backward (`scatter_ids2d`), parallel over planes, each
//!   plane zeroed then its deltas added at their ids; an id outside the plane is recorded in
//!   the node's status word as the Cranelift kernel does.
//! - [`SumDesc`]: `reduce_sum_to` of `[A, C, B]` to `[C]` (a convolution's or dense layer's
//!   bias gradient), parallel over `C`, each sum in the interpreter's order (a register of
//!   channels at a time when `B = 1`, else eight channels' scalar sums interleaved).
//!
//! Nothing here unwinds into the JIT's frames (no closures either: a closure would not inherit
//! the entry point's target features, and the `Simd` methods inlined into it would be calls).

use crate::direct::Words;
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512, Simd};
use kiln_ir::geometry::{Window2d, WindowTaps};
use std::sync::atomic::{AtomicU64, Ordering};

/// A convolution's weight gradient on the direct kernel (see the module docs). Byte offsets
/// of `x [N, C_in, H, W]`, `dy [N, C_out, oh, ow]`, `dw [C_out, C_in/groups, kh, kw]` and of
/// the node's status word; `mo` output channels per register block. The column stride is 1.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgradDesc {
    pub x: u64,
    pub dy: u64,
    pub dw: u64,
    pub status: u64,
    pub batch: u64,
    pub groups: u64,
    pub c_in: u64,
    pub h: u64,
    pub w: u64,
    pub c_out: u64,
    pub oh: u64,
    pub ow: u64,
    pub kh: u64,
    pub kw: u64,
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    /// Top and left padding.
    pub pad: [u64; 2],
    pub mo: u64,
    /// [`WGRAD_ALONG_X`] or [`WGRAD_ALONG_TAPS`].
    pub mode: u64,
}

/// `WgradDesc::mode`: vectors along the delta's columns (stride 1 along the columns).
pub const WGRAD_ALONG_X: u64 = 0;
/// `WgradDesc::mode`: vectors along the kernel's column taps `j` (column dilation 1), each
/// delta element broadcast; for kernels wider than the delta (a data gradient written as a
/// weight gradient, `kiln-autodiff`'s rule for convolutions with few input channels).
pub const WGRAD_ALONG_TAPS: u64 = 1;

impl WgradDesc {
    fn og(&self) -> u64 {
        self.c_out / self.groups.max(1)
    }
    fn cg(&self) -> u64 {
        self.c_in / self.groups.max(1)
    }
    fn o_blocks(&self) -> u64 {
        self.og().div_ceil(self.mo.max(1))
    }
    /// Tap-row blocks per item: one row, or `NI` rows along the taps.
    fn i_blocks(&self) -> u64 {
        if self.mode == WGRAD_ALONG_TAPS {
            self.kh.div_ceil(NI as u64)
        } else {
            self.kh
        }
    }
    /// The work items: (group, output-channel block, input channel, tap-row block).
    pub fn items(&self) -> u64 {
        self.groups * self.o_blocks() * self.cg() * self.i_blocks()
    }
}

/// Max pooling's ids: `x [planes, h, w]` at byte `x`, `ids [planes, oh, ow]` (`i32`) at `ids`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IdsDesc {
    pub x: u64,
    pub ids: u64,
    pub planes: u64,
    pub win: crate::direct::WindowDesc,
}

/// `scatter_ids2d`: `dy` and `ids` of `len` elements per plane, `dx` of `plane` elements per
/// plane, the status word at byte `status`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ScatterDesc {
    pub dy: u64,
    pub ids: u64,
    pub dx: u64,
    pub status: u64,
    pub planes: u64,
    pub len: u64,
    pub plane: u64,
}

/// `reduce_sum_to` of `x [outer, c, inner]` to `y [c]`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SumDesc {
    pub x: u64,
    pub y: u64,
    pub outer: u64,
    pub c: u64,
    pub inner: u64,
}

/// `rot180` of a convolution's weights `w [C_out, cg, kh, kw]` (`groups` groups of `cog`
/// output channels) into `y [groups·cg, cog, kh, kw]`: `y[g·cg + c, o, t] = w[g·cog + o, c,
/// taps − 1 − t]` over the flattened taps `t`. Work items: rows `g·cg + c` of `y`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Rot180Desc {
    pub w: u64,
    pub y: u64,
    pub groups: u64,
    pub cg: u64,
    pub cog: u64,
    pub taps: u64,
}

/// `BnDesc::part`.
pub const BN_FORWARD: u64 = 0;
pub const BN_GRAD_X: u64 = 1;
pub const BN_GRAD_SCALE: u64 = 2;
pub const BN_MEAN: u64 = 3;
pub const BN_VAR: u64 = 4;

/// A training-mode batch-norm piece (`kiln_ir::BnPart`) over `x [n, c, inner]`: `a` and `b`
/// are its second and third inputs (scale and bias, scale and delta, or the delta), unused
/// ones 0; `eps` the epsilon's bits.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct BnDesc {
    pub x: u64,
    pub a: u64,
    pub b: u64,
    pub y: u64,
    pub n: u64,
    pub c: u64,
    pub inner: u64,
    pub part: u64,
    pub eps: u64,
}

// SAFETY: each is `#[repr(C)]` with u64 fields (and WindowDesc, itself u64 words) only.
unsafe impl Words for WgradDesc {}
// SAFETY: as above.
unsafe impl Words for BnDesc {}
// SAFETY: as above.
unsafe impl Words for IdsDesc {}
// SAFETY: as above.
unsafe impl Words for ScatterDesc {}
// SAFETY: as above.
unsafe impl Words for SumDesc {}
// SAFETY: as above.
unsafe impl Words for Rot180Desc {}

pub use crate::direct::Entry;

/// One instruction set's entry points.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub wgrad: Entry<WgradDesc>,
    pub max_pool_ids: Entry<IdsDesc>,
    pub scatter_ids: Entry<ScatterDesc>,
    pub sum: Entry<SumDesc>,
    pub batch_norm: Entry<BnDesc>,
    /// Output channels per register block of the weight gradient on this set.
    pub wgrad_mo: usize,
}

/// The entry points for `isa` when this CPU runs them; `None` for the Cranelift tier.
pub fn kernels(isa: Isa) -> Option<Kernels> {
    if !isa.available() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(avx512::KERNELS),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(avx2::KERNELS),
        _ => None,
    }
}

macro_rules! entries {
    ($($module:ident: $set:ty, $features:literal, $mo:literal;)*) => {$(
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::*;

            /// # Safety
            /// `d` must describe a `conv2d_weight_grad` node of a plan over `arena` (the JIT'd
            /// kernel passes its own), and the CPU must have the set.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn wgrad(d: *const WgradDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::wgrad::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `wgrad`, for a `max_pool2d_ids` node.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn max_pool_ids(d: *const IdsDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::max_pool_ids::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `wgrad`, for a `scatter_ids2d` node.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn scatter_ids(d: *const ScatterDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::scatter_ids(d, arena, begin, end) }
            }

            /// # Safety
            /// As `wgrad`, for a `reduce_sum_to` node of the `[A, C, B] → [C]` form.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn sum(d: *const SumDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::sum::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `wgrad`, for a training-mode batch-norm node.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn batch_norm(d: *const BnDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::batch_norm::<$set>(d, arena, begin, end) }
            }

            pub(super) const KERNELS: Kernels =
                Kernels { wgrad, max_pool_ids, scatter_ids, sum, batch_norm, wgrad_mo: $mo };
        }
    )*};
}

// AVX-512: 4 channels × up to 5 taps = 20 accumulators of 32 registers; AVX2: 2 × 5 of 16.
entries! {
    avx512: Avx512, "avx512f", 4;
    avx2: Avx2, "avx2,fma", 2;
}

/// Rows per block of [`rot180`]: the block's rows are written side by side while the weights
/// are read one output channel (`cg·taps` contiguous floats) at a time, so neither side
/// strides across the tensor a row at a time (a read per output channel, each on its own
/// page, was 40 ms for a 512 × 512 × 3 × 3 weight).
const ROT_ROWS: usize = 8;

/// The `rot180` kernel (see [`Rot180Desc`]): plain Rust, the same code on both Rust tiers.
///
/// # Safety
/// `d` must describe a `rot180` node of a plan over `arena` (the JIT'd kernel passes its own).
pub unsafe extern "C" fn rot180(d: *const Rot180Desc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let (cg, cog, taps) = (d.cg as usize, d.cog as usize, d.taps as usize);
    let Some((b, e)) = range(begin, end, d.groups * d.cg) else {
        return;
    };
    let (w, y) = (at(arena, d.w).cast_const(), at(arena, d.y));
    let mut r0 = b;
    while r0 < e {
        // a block stays inside one group
        let g = r0 / cg;
        let r1 = e.min(r0 + ROT_ROWS).min((g + 1) * cg);
        for o in 0..cog {
            // SAFETY: output channel g·cog + o < C_out, channels c < cg: inside `w`.
            let src = unsafe { w.add(((g * cog + o) * cg) * taps) };
            for r in r0..r1 {
                let c = r - g * cg;
                // SAFETY: row r < groups·cg, o < cog: inside `y`; the source as above.
                unsafe {
                    let from = std::slice::from_raw_parts(src.add(c * taps), taps);
                    let to = std::slice::from_raw_parts_mut(y.add((r * cog + o) * taps), taps);
                    for (t, &v) in to.iter_mut().zip(from.iter().rev()) {
                        *t = v;
                    }
                }
            }
        }
        r0 = r1;
    }
}

fn at(arena: *mut u8, off: u64) -> *mut f32 {
    arena.wrapping_add(off as usize).cast::<f32>()
}

/// A range from the JIT as `usize`, or `None` when it is not inside `[0, extent]`.
fn range(begin: i64, end: i64, extent: u64) -> Option<(usize, usize)> {
    let (b, e) = (usize::try_from(begin).ok()?, usize::try_from(end).ok()?);
    (b <= e && e as u64 <= extent).then_some((b, e))
}

fn fail(arena: *mut u8, status: u64) {
    // SAFETY: the status word is 8 bytes at an 8-byte aligned offset of the arena.
    let word = unsafe { AtomicU64::from_ptr(arena.add(status as usize).cast::<u64>()) };
    word.store(crate::gemm::STATUS_FAILED, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// weight gradient

/// The output positions `[lo, hi)` of one axis whose tap `k` lands inside the input
/// (`o·s + k·d − pad ∈ [0, n)`).
fn valid_outputs(out: usize, n: usize, s: usize, d: usize, k: usize, pad: usize) -> (usize, usize) {
    let off = k * d;
    let lo = pad.saturating_sub(off).div_ceil(s.max(1)).min(out);
    let hi = match (n + pad).checked_sub(off + 1) {
        Some(v) => (v / s.max(1) + 1).min(out),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// Column taps per register block (along x).
const NJ: usize = 5;
/// Tap rows per register block (along the taps).
const NI: usize = 5;

/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wgrad<S: Simd>(d: *const WgradDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((b, e)) = range(begin, end, d.items()) else {
        return fail(arena, d.status);
    };
    let u = |v: u64| v as usize;
    let (n, h, w, ow, kw, dj, pl) = (
        u(d.batch),
        u(d.h),
        u(d.w),
        u(d.ow),
        u(d.kw),
        u(d.dilation[1]),
        u(d.pad[1]),
    );
    let along_taps = d.mode == WGRAD_ALONG_TAPS;
    let (oh, pt) = (u(d.oh), u(d.pad[0]));
    // Along x, the column taps read up to ow − 1 + (kw − 1)·d of a row: without left padding
    // and with every tap inside the row they read the input itself. Else (and always along
    // the taps, where the rows are padded too) a zero-padded copy of the input channel's
    // planes, made once per channel: input (r, q) at (r + row0, q + pl).
    let (reach, rows_p) = if along_taps {
        // columns x·s + j (x < ow, j < kw), rows y·s + i·d (y < oh, i < kh)
        let rows = (oh - 1) * u(d.stride[0]) + (u(d.kh) - 1) * u(d.dilation[0]) + 1;
        ((ow - 1) * u(d.stride[1]) + kw, rows.max(pt + h))
    } else {
        (ow + (kw - 1) * dj, h)
    };
    let padded = along_taps || pl > 0 || reach > w;
    let wp = (pl + w).max(reach);
    let row0 = if along_taps { pt } else { 0 };
    let mut planes = if padded {
        vec![0.0f32; n * rows_p * wp]
    } else {
        Vec::new()
    };
    let mut cur = usize::MAX;
    for item in b..e {
        let it = Item::new(&d, item);
        let x = at(arena, d.x);
        let src = if padded {
            if it.ch != cur {
                cur = it.ch;
                for img in 0..n {
                    for r in 0..h {
                        // SAFETY: image img < N, channel ch < C_in, row r < H; the copy is
                        // inside `planes` (rows_p ≥ row0 + h, wp ≥ pl + w).
                        unsafe {
                            let from = x.add(((img * u(d.c_in) + it.ch) * h + r) * w);
                            let to = planes.as_mut_ptr().add((img * rows_p + row0 + r) * wp + pl);
                            copy_row::<S>(from, to, w);
                        }
                    }
                }
            }
            XSource {
                base: planes.as_ptr(),
                image: rows_p * wp,
                row: wp,
            }
        } else {
            XSource {
                // SAFETY: channel ch < C_in.
                base: unsafe { x.add(it.ch * h * w) },
                image: u(d.c_in) * h * w,
                row: w,
            }
        };
        // SAFETY: forwarded from the caller; the item is inside the node's range.
        unsafe {
            if along_taps {
                wgrad_taps_item::<S>(&d, arena, &it, &src)
            } else {
                wgrad_item::<S>(&d, arena, &it, &src)
            }
        };
    }
}

/// Copies `n` floats a register at a time (no call per row).
///
/// # Safety
/// `n` floats readable at `from`, writable at `to`, not overlapping.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_row<S: Simd>(from: *const f32, to: *mut f32, n: usize) {
    let mut k = 0;
    while k < n {
        let m = S::LANES.min(n - k);
        // SAFETY: k + m ≤ n.
        unsafe { S::store_partial(to.add(k), m, S::load_partial(from.add(k), m)) };
        k += m;
    }
}

/// A work item of the weight gradient: output channels `o0..o0 + m`, input channel `c` of
/// group `g` (channel `ch` of the input), tap row `i`.
struct Item {
    o0: usize,
    m: usize,
    c: usize,
    ch: usize,
    i: usize,
}

impl Item {
    fn new(d: &WgradDesc, item: usize) -> Item {
        let u = |v: u64| v as usize;
        let (ib, cg, og, mo) = (u(d.i_blocks()), u(d.cg()), u(d.og()), u(d.mo).max(1));
        let (i, rest) = (item % ib, item / ib);
        let (c, rest) = (rest % cg, rest / cg);
        let (ob, g) = (rest % u(d.o_blocks()), rest / u(d.o_blocks()));
        let o0 = g * og + ob * mo;
        Item {
            o0,
            m: mo.min((g + 1) * og - o0),
            c,
            ch: g * cg + c,
            i: if d.mode == WGRAD_ALONG_TAPS { i * NI } else { i },
        }
    }
}

/// Where an item's input rows are: image `n`'s row `r` of its channel at
/// `base + n·image + r·row`, column `x + j·d` of output column `x` and tap `j`.
struct XSource {
    base: *const f32,
    image: usize,
    row: usize,
}

/// One work item of the weight gradient.
///
/// # Safety
/// As the entry points; the item comes from `Item::new` with an index below `d.items()`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wgrad_item<S: Simd>(d: &WgradDesc, arena: *mut u8, it: &Item, src: &XSource) {
    let u = |v: u64| v as usize;
    let (kh, cg, kw) = (u(d.kh), u(d.cg()), u(d.kw));
    let (o0, m, c, i) = (it.o0, it.m, it.c, it.i);
    let g_ = Geo {
        dy: at(arena, d.dy),
        n: u(d.batch),
        c_out: u(d.c_out),
        p: u(d.oh) * u(d.ow),
        ow: u(d.ow),
        rows: valid_outputs(u(d.oh), u(d.h), u(d.stride[0]), u(d.dilation[0]), i, u(d.pad[0])),
        row_of: (u(d.stride[0]), i * u(d.dilation[0]), u(d.pad[0])),
        dj: u(d.dilation[1]),
    };
    let dw = at(arena, d.dw);
    let mut j0 = 0;
    while j0 < kw {
        let nj = NJ.min(kw - j0);
        macro_rules! go {
            ($($m:literal),*; $($j:literal),*) => {
                go!(@m [$($m),*] [$($j),*])
            };
            (@m [$($m:literal),*] $js:tt) => {
                match m { $($m => go!(@j $m $js),)* _ => {} }
            };
            (@j $m:literal [$($j:literal),*]) => {
                match nj {
                    $($j => {
                        // SAFETY: forwarded from the caller.
                        let Some(s) = (unsafe { wgrad_block::<S, $m, $j>(&g_, src, o0, j0) }) else {
                            // SAFETY: forwarded from the caller.
                            return unsafe { wgrad_item_exact(d, arena, it, 1) };
                        };
                        for (oo, r) in s.iter().enumerate() {
                            for (jj, v) in r.iter().enumerate() {
                                let k = (((o0 + oo) * cg + c) * kh + i) * kw + j0 + jj;
                                // SAFETY: o0 + oo < C_out, c < C_g, i < kh, j0 + jj < kw.
                                unsafe { *dw.add(k) = *v };
                            }
                        }
                    })*
                    _ => {}
                }
            };
        }
        go!(1, 2, 3, 4; 1, 2, 3, 4, 5);
        j0 += nj;
    }
}

/// What a register block reads besides the input.
struct Geo {
    dy: *const f32,
    n: usize,
    c_out: usize,
    /// Positions per delta plane.
    p: usize,
    ow: usize,
    /// The output rows whose tap row lands inside the input.
    rows: (usize, usize),
    /// Input row of output row `y`: `y·s + off − pad`.
    row_of: (usize, usize, usize),
    /// The column taps' dilation.
    dj: usize,
}

/// `MO` output channels from `o0` × `NJ` column taps from `j0` of the item's tap row: their
/// sums over the batch and the rows.
///
/// # Safety
/// As the entry points; `src` holds the item's input channel.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[o][jj] over both indices: registers, not slices
unsafe fn wgrad_block<S: Simd, const MO: usize, const NJ: usize>(
    g: &Geo,
    src: &XSource,
    o0: usize,
    j0: usize,
) -> Option<[[f32; NJ]; MO]> {
    unsafe {
        let mut acc = [[S::zero(); NJ]; MO];

        for n in 0..g.n {
            let xplane = src.base.add(n * src.image);
            let dyp = g.dy.add((n * g.c_out + o0) * g.p);
            for y in g.rows.0..g.rows.1 {
                let ih = y * g.row_of.0 + g.row_of.1 - g.row_of.2;
                let xr = xplane.add(ih * src.row);
                let dyr = dyp.add(y * g.ow);
                let mut x0 = 0;
                while x0 < g.ow {
                    let lanes = S::LANES.min(g.ow - x0);
                    let full = lanes == S::LANES;
                    let mut a = [S::zero(); MO];
                    for (o, v) in a.iter_mut().enumerate() {
                        let q = dyr.add(o * g.p + x0);
                        *v = if full {
                            S::load(q)
                        } else {
                            S::load_partial(q, lanes)
                        };
                    }
                    for jj in 0..NJ {
                        let q = xr.add(x0 + (j0 + jj) * g.dj);
                        let b = if full {
                            S::load(q)
                        } else {
                            S::load_partial(q, lanes)
                        };
                        for o in 0..MO {
                            acc[o][jj] = S::fma(a[o], b, acc[o][jj]);
                        }
                    }
                    x0 += S::LANES;
                }
            }
        }
        // a NaN or infinite delta leaves its accumulators NaN or infinite (x − x: NaN), and
        // so does an overflow, which the exact sums give again
        let mut bad = S::zero();
        for row in &acc {
            for &v in row {
                bad = S::add(bad, S::sub(v, v));
            }
        }
        if S::any_nan(bad) {
            return None;
        }
        let mut out = [[0.0f32; NJ]; MO];
        for o in 0..MO {
            for jj in 0..NJ {
                out[o][jj] = S::hsum(acc[o][jj]);
            }
        }
        Some(out)
    }
}

/// One work item of the weight gradient along the taps: output channels `o0..o0 + m` ×
/// tap rows `i..i + NI` (those below kh), all column taps a register at a time.
///
/// # Safety
/// As the entry points; the item comes from `Item::new` with an index below `d.items()`,
/// `src` holds the item's input channel zero-padded on every side.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wgrad_taps_item<S: Simd>(d: &WgradDesc, arena: *mut u8, it: &Item, src: &XSource) {
    let u = |v: u64| v as usize;
    let (kh, kw) = (u(d.kh), u(d.kw));
    let (m, ni) = (it.m, NI.min(kh - it.i));
    let t = Taps {
        dy: at(arena, d.dy),
        dw: at(arena, d.dw),
        n: u(d.batch),
        c_out: u(d.c_out),
        oh: u(d.oh),
        ow: u(d.ow),
        s: [u(d.stride[0]), u(d.stride[1])],
        di: u(d.dilation[0]),
        cg: u(d.cg()),
        kh,
        kw,
    };
    macro_rules! go {
        ($($m:literal),*; $($j:literal),*) => {
            go!(@m [$($m),*] [$($j),*])
        };
        (@m [$($m:literal),*] $js:tt) => {
            match m { $($m => go!(@j $m $js),)* _ => {} }
        };
        (@j $m:literal [$($j:literal),*]) => {
            match ni {
                $($j => {
                    // SAFETY: forwarded from the caller.
                    let finite = unsafe { wgrad_taps_block::<S, $m, $j>(&t, src, it) };
                    if !finite {
                        // SAFETY: forwarded from the caller.
                        unsafe { wgrad_item_exact(d, arena, it, ni) }
                    }
                },)*
                _ => {}
            }
        };
    }
    go!(1, 2, 3, 4; 1, 2, 3, 4, 5);
}

/// What a register block along the taps reads and writes besides the input.
struct Taps {
    dy: *const f32,
    dw: *mut f32,
    n: usize,
    c_out: usize,
    oh: usize,
    ow: usize,
    s: [usize; 2],
    /// The tap rows' dilation (the columns' is 1).
    di: usize,
    cg: usize,
    kh: usize,
    kw: usize,
}

/// `dw[o0..o0 + MO, c, i..i + NI, :]`, a register of column taps at a time: each delta
/// element broadcast against the `NI` padded input rows it meets.
///
/// # Safety
/// As `wgrad_taps_item`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[o][ii] over both indices: registers, not slices
unsafe fn wgrad_taps_block<S: Simd, const MO: usize, const NI: usize>(
    t: &Taps,
    src: &XSource,
    it: &Item,
) -> bool {
    unsafe {
        let p = t.oh * t.ow;
        let mut j0 = 0;
        while j0 < t.kw {
            let lanes = S::LANES.min(t.kw - j0);
            let full = lanes == S::LANES;
            let mut acc = [[S::zero(); NI]; MO];
            for n in 0..t.n {
                let xplane = src.base.add(n * src.image);
                let dyp = t.dy.add((n * t.c_out + it.o0) * p);
                for y in 0..t.oh {
                    for x in 0..t.ow {
                        let mut bc = [S::zero(); MO];
                        for (o, v) in bc.iter_mut().enumerate() {
                            *v = S::splat(*dyp.add(o * p + y * t.ow + x));
                        }
                        let first = xplane.add((y * t.s[0] + it.i * t.di) * src.row + x * t.s[1] + j0);
                        for ii in 0..NI {
                            let q = first.add(ii * t.di * src.row);
                            let v = if full {
                                S::load(q)
                            } else {
                                S::load_partial(q, lanes)
                            };
                            for o in 0..MO {
                                acc[o][ii] = S::fma(bc[o], v, acc[o][ii]);
                            }
                        }
                    }
                }
            }
            // as along x: a NaN or infinite delta (or an overflow) leaves its sums so
            let mut bad = S::zero();
            for row in &acc {
                for &v in row {
                    bad = S::add(bad, S::sub(v, v));
                }
            }
            if S::any_nan(bad) {
                return false;
            }
            for o in 0..MO {
                for ii in 0..NI {
                    let at = (((it.o0 + o) * t.cg + it.c) * t.kh + it.i + ii) * t.kw + j0;
                    S::store_partial(t.dw.add(at), lanes, acc[o][ii]);
                }
            }
            j0 += lanes;
        }
        true
    }
}

/// An item's `dw` elements (tap rows `it.i..it.i + ni`, every column tap) summed over the
/// valid taps only, as the interpreter does: the vector blocks multiply padding zeros by the
/// delta, which is not the interpreter's sum when a delta is NaN or infinite.
///
/// # Safety
/// As the entry points; the item comes from `Item::new` with an index below `d.items()`.
unsafe fn wgrad_item_exact(d: &WgradDesc, arena: *mut u8, it: &Item, ni: usize) {
    let u = |v: u64| v as usize;
    let (h, w, oh, ow, kh, kw) = (u(d.h), u(d.w), u(d.oh), u(d.ow), u(d.kh), u(d.kw));
    let (s, dl, pad) = (d.stride.map(u), d.dilation.map(u), d.pad.map(u));
    let (x, dy, dw) = (at(arena, d.x), at(arena, d.dy), at(arena, d.dw));
    for o in it.o0..it.o0 + it.m {
        for i in it.i..(it.i + ni).min(kh) {
            let (y0, y1) = valid_outputs(oh, h, s[0], dl[0], i, pad[0]);
            for j in 0..kw {
                let (x0, x1) = valid_outputs(ow, w, s[1], dl[1], j, pad[1]);
                let mut sum = 0.0f32;
                for n in 0..u(d.batch) {
                    for y in y0..y1 {
                        let ih = y * s[0] + i * dl[0] - pad[0];
                        for xo in x0..x1 {
                            let iw = xo * s[1] + j * dl[1] - pad[1];
                            // SAFETY: valid taps of image n < N, channel ch, output o.
                            unsafe {
                                let xv = *x.add(((n * u(d.c_in) + it.ch) * h + ih) * w + iw);
                                let gv = *dy.add(((n * u(d.c_out) + o) * oh + y) * ow + xo);
                                sum += xv * gv;
                            }
                        }
                    }
                }
                let k = ((o * u(d.cg()) + it.c) * kh + i) * kw + j;
                // SAFETY: o < C_out, c < C_g, i < kh, j < kw.
                unsafe { *dw.add(k) = sum };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// max pooling ids

/// Lane indices `0, 1, …` as floats.
static IOTA: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
];

/// Above every in-plane index a vector register carries (they are below 2²⁴).
const NOT_MAX: f32 = 33_554_432.0;

fn window(w: &crate::direct::WindowDesc) -> Window2d {
    let z = |v: u64| v as usize;
    Window2d {
        input: [z(w.h), z(w.w)],
        kernel: w.kernel.map(z),
        stride: w.stride.map(z),
        dilation: w.dilation.map(z),
        pad: w.pad.map(z),
        output: [z(w.oh), z(w.ow)],
    }
}

/// The interpreter's argmax of one window: the first maximum in row-major order, or the
/// first NaN; `−1` for a window without real taps.
///
/// # Safety
/// `plane` holds `h·w` floats; the taps come from the window's geometry.
#[inline(always)]
unsafe fn argmax_scalar(plane: *const f32, g: &Window2d, rows: WindowTaps, cols: WindowTaps) -> i32 {
    let (mut best, mut arg) = (f32::NEG_INFINITY, -1i64);
    for r in 0..rows.hi - rows.lo {
        let ih = rows.first + r * g.dilation[0];
        for c in 0..cols.hi - cols.lo {
            let iw = cols.first + c * g.dilation[1];
            let idx = ih * g.input[1] + iw;
            // SAFETY: a real tap is inside the plane.
            let v = unsafe { *plane.add(idx) };
            if arg < 0 || v > best || (v.is_nan() && !best.is_nan()) {
                best = v;
                arg = idx as i64;
            }
        }
    }
    arg as i32
}

/// `LANES` (at most `n`) columns `p, p + s, …` in the set's order for stride `s` (stride 2:
/// `even_lanes`' order, which the caller puts right once).
///
/// # Safety
/// The `n` strided floats from `p` are readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn cols<S: Simd>(p: *const f32, s: usize, n: usize) -> S::V {
    unsafe {
        match s {
            1 if n == S::LANES => S::load(p),
            1 => S::load_partial(p, n),
            2 => {
                let len = 2 * n - 1;
                let lo = S::load_partial(p, len.min(S::LANES));
                let hi = if len > S::LANES {
                    S::load_partial(p.add(S::LANES), len - S::LANES)
                } else {
                    S::zero()
                };
                S::even_lanes(lo, hi)
            }
            _ => S::gather(p, s, n),
        }
    }
}

/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn max_pool_ids<S: Simd>(d: *const IdsDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((b, e)) = range(begin, end, d.planes) else {
        return;
    };
    let g = window(&d.win);
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let (s, dl, pl) = (g.stride[1], g.dilation[1], g.pad[1]);
    // the vector path: interior columns, indices exact as floats, strides a gather can take
    let (c0, c1) = if h * w < 1 << 24 && s * S::LANES < 1 << 30 {
        crate::direct::interior(&g, 1)
    } else {
        (0, 0)
    };
    let kw = g.kernel[1];
    let (x, ids) = (at(arena, d.x), at(arena, d.ids).cast::<i32>());
    // each output row's taps, once for every plane (they cost divisions)
    let row_taps: Vec<WindowTaps> = (0..oh).map(|y| g.taps(0, y)).collect();
    for plane in b..e {
        // SAFETY: plane < planes: its input and ids are inside the node's tensors.
        let (xp, yp) = unsafe { (x.add(plane * h * w), ids.add(plane * oh * ow)) };
        for (y, &rows) in row_taps.iter().enumerate() {
            // SAFETY: y < oh.
            let yr = unsafe { yp.add(y * ow) };
            let scalar = |xo: usize| {
                // SAFETY: xo < ow; the taps are the window's.
                unsafe { *yr.add(xo) = argmax_scalar(xp, &g, rows, g.taps(1, xo)) };
            };
            (0..c0.min(ow)).for_each(scalar);
            let mut x0 = c0;
            while x0 < c1 {
                let n = S::LANES.min(c1 - x0);
                // SAFETY: columns x0..x0 + n are interior: every column tap is inside the row.
                let done = unsafe { ids_chunk::<S>(xp, yr, &g, rows, x0, n, (s, dl, pl, kw)) };
                if !done {
                    (x0..x0 + n).for_each(scalar);
                }
                x0 += n;
            }
            (c1.max(c0).min(ow)..ow).for_each(scalar);
        }
    }
}

/// The ids of `n` interior columns from `x0` of one output row; `false` (nothing written)
/// when a window holds a NaN or an infinity.
///
/// # Safety
/// `xp` is the plane, `yr` the ids row; the columns are interior.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ids_chunk<S: Simd>(
    xp: *const f32,
    yr: *mut i32,
    g: &Window2d,
    rows: WindowTaps,
    x0: usize,
    n: usize,
    (s, dl, pl, kw): (usize, usize, usize, usize),
) -> bool {
    if rows.hi <= rows.lo {
        return false;
    }
    unsafe {
        let w = g.input[1];
        let first = x0 * s - pl;
        let tap = |r: usize, j: usize| (rows.first + r * g.dilation[0]) * w + first + j * dl;
        let mut m = cols::<S>(xp.add(tap(0, 0)), s, n);
        let mut bad = S::zero();
        for r in 0..rows.hi - rows.lo {
            for j in 0..kw {
                let v = cols::<S>(xp.add(tap(r, j)), s, n);
                m = S::max(m, v);
                bad = S::add(bad, S::sub(v, v));
            }
        }
        if S::any_nan(bad) {
            return false;
        }
        // the lanes' offsets from a tap's first column, in the loads' order
        let iota = S::load(IOTA.as_ptr());
        let lane = match s {
            1 => iota,
            // the even offsets of the two loads, in even_lanes' order
            2 => S::even_lanes(iota, S::add(iota, S::splat(S::LANES as f32))),
            _ => S::mul(iota, S::splat(s as f32)),
        };
        let big = S::splat(NOT_MAX);
        let mut id = big;
        for r in 0..rows.hi - rows.lo {
            for j in 0..kw {
                let t = tap(r, j);
                let v = cols::<S>(xp.add(t), s, n);
                // 0 where v is the maximum, NOT_MAX below it; plus the tap's index
                let hit = S::where_negative(S::sub(v, m), big);
                let idx = S::add(S::splat(t as f32), lane);
                id = S::min(id, S::add(hit, idx));
            }
        }
        if s == 2 {
            id = S::order_even(id);
        }
        let mut out = [0.0f32; 16];
        S::store(out.as_mut_ptr(), id);
        for (k, v) in out.iter().take(n).enumerate() {
            // SAFETY: an in-plane index below 2²⁴ (the vector path's condition), exact
            *yr.add(x0 + k) = v.to_int_unchecked::<i32>();
        }
        true
    }
}

// ---------------------------------------------------------------------------------------------
// scatter and sums

/// # Safety
/// As the entry points.
#[inline(always)]
unsafe fn scatter_ids(d: *const ScatterDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((b, e)) = range(begin, end, d.planes) else {
        return fail(arena, d.status);
    };
    let (len, plane) = (d.len as usize, d.plane as usize);
    let (dy, ids, dx) = (at(arena, d.dy), at(arena, d.ids).cast::<i32>(), at(arena, d.dx));
    for p in b..e {
        // SAFETY: p < planes: the plane's delta, ids and gradient are inside the tensors.
        unsafe {
            let out = dx.add(p * plane);
            std::ptr::write_bytes(out, 0, plane);
            for k in p * len..(p + 1) * len {
                let id = *ids.add(k);
                if (0..plane as i64).contains(&i64::from(id)) {
                    *out.add(id as usize) += *dy.add(k);
                } else {
                    // the lowest failing position wins, as in the Cranelift kernel
                    let word = AtomicU64::from_ptr(arena.add(d.status as usize).cast::<u64>());
                    word.fetch_min((k as u64) << 32 | u64::from(id as u32), Ordering::Relaxed);
                }
            }
        }
    }
}

/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sum<S: Simd>(d: *const SumDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((b, e)) = range(begin, end, d.c) else {
        return;
    };
    let (outer, c, inner) = (d.outer as usize, d.c as usize, d.inner as usize);
    let (x, y) = (at(arena, d.x), at(arena, d.y));
    unsafe {
        if inner == 1 {
            // columns of an [outer, c] matrix: a register of columns at a time
            let mut k = b;
            while k < e {
                let n = S::LANES.min(e - k);
                let mut acc = S::zero();
                for a in 0..outer {
                    acc = S::add(acc, S::load_partial(x.add(a * c + k), n));
                }
                S::store_partial(y.add(k), n, acc);
                k += n;
            }
            return;
        }
        // each sum in the interpreter's order (its terms one by one, so the result is its
        // bit for bit: bias gradients of batch-norm-like deltas cancel to rounding noise), the
        // sums of CHAINS channels interleaved so that their additions overlap
        const CHAINS: usize = 8;
        let mut k0 = b;
        while k0 < e {
            let m = CHAINS.min(e - k0);
            let mut acc = [0.0f32; CHAINS];
            for a in 0..outer {
                let p = x.add((a * c + k0) * inner);
                for i in 0..inner {
                    for (r, v) in acc.iter_mut().enumerate().take(m) {
                        *v += *p.add(r * inner + i);
                    }
                }
            }
            for (r, v) in acc.iter().enumerate().take(m) {
                *y.add(k0 + r) = *v;
            }
            k0 += m;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// batch norm in training mode

/// Channels whose sums are interleaved.
const BN_CHAINS: usize = 8;

/// `Σ f(x_i)` over each channel `k0 + r` (`r < m`) in the interpreter's order (image by
/// image, each plane in order, from 0), the `m` chains interleaved.
///
/// # Safety
/// `x` is `[n, c, inner]`; `k0 + m ≤ c`.
#[inline(always)]
unsafe fn bn_sums(
    x: *const f32,
    (n, c, inner): (usize, usize, usize),
    k0: usize,
    m: usize,
    f: impl Fn(usize, usize, f32) -> f32,
) -> [f32; BN_CHAINS] {
    let mut acc = [0.0f32; BN_CHAINS];
    for img in 0..n {
        // SAFETY: image img < n, channels k0..k0 + m < c.
        let p = unsafe { x.add((img * c + k0) * inner) };
        for i in 0..inner {
            for (r, v) in acc.iter_mut().enumerate().take(m) {
                // SAFETY: as above, i < inner.
                *v += f(r, img * c * inner + (k0 + r) * inner + i, unsafe {
                    *p.add(r * inner + i)
                });
            }
        }
    }
    acc
}

/// Two sums `Σ f(x_i)` and `Σ h(x_i)` of [`bn_sums`] in one pass over the tensor (each chain
/// in the same order as alone, so the same bits).
///
/// # Safety
/// As [`bn_sums`].
#[inline(always)]
unsafe fn bn_sums2(
    x: *const f32,
    (n, c, inner): (usize, usize, usize),
    k0: usize,
    m: usize,
    f: impl Fn(usize, usize, f32) -> f32,
    h: impl Fn(usize, usize, f32) -> f32,
) -> ([f32; BN_CHAINS], [f32; BN_CHAINS]) {
    let (mut a, mut b) = ([0.0f32; BN_CHAINS], [0.0f32; BN_CHAINS]);
    for img in 0..n {
        // SAFETY: image img < n, channels k0..k0 + m < c.
        let p = unsafe { x.add((img * c + k0) * inner) };
        for i in 0..inner {
            for r in 0..m {
                let at = img * c * inner + (k0 + r) * inner + i;
                // SAFETY: as above, i < inner.
                let v = unsafe { *p.add(r * inner + i) };
                a[r] += f(r, at, v);
                b[r] += h(r, at, v);
            }
        }
    }
    (a, b)
}

/// Training-mode batch norm, parallel over channels, with the arithmetic of the Cranelift
/// kernel (`lower_train::batch_norm_train`): the statistics as its sums in the same order, so
/// every piece is its (and the interpreter's) bit for bit; the elementwise passes a register at
/// a time.
///
/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn batch_norm<S: Simd>(d: *const BnDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((b, e)) = range(begin, end, d.c) else {
        return;
    };
    let (n, c, inner) = (d.n as usize, d.c as usize, d.inner as usize);
    let dims = (n, c, inner);
    let mf = (n * inner) as f32;
    let eps = f32::from_bits(d.eps as u32);
    let (x, pa, pb, y) = (at(arena, d.x), at(arena, d.a), at(arena, d.b), at(arena, d.y));
    let mut k0 = b;
    while k0 < e {
        let m = BN_CHAINS.min(e - k0);
        // SAFETY: channels k0..k0 + m < c of the node's tensors.
        unsafe {
            let s = bn_sums(x, dims, k0, m, |_, _, v| v);
            let mean = s.map(|v| v / mf);
            if d.part == BN_MEAN {
                // the mean alone: no pass for the variance
                for (r, &v) in mean.iter().enumerate().take(m) {
                    *y.add(k0 + r) = v;
                }
                k0 += m;
                continue;
            }
            let q = bn_sums(x, dims, k0, m, |r, _, v| {
                let t = v - mean[r];
                t * t
            });
            let var = q.map(|v| v / mf);
            let inv = var.map(|v| 1.0 / (v + eps).sqrt());
            match d.part {
                BN_FORWARD | BN_GRAD_X => {
                    let (sdy, dot) = if d.part == BN_GRAD_X {
                        let g = pb;
                        // both sums in one pass over x and the delta
                        bn_sums2(
                            x,
                            dims,
                            k0,
                            m,
                            |_, at, _| *g.add(at),
                            |r, at, v| *g.add(at) * ((v - mean[r]) * inv[r]),
                        )
                    } else {
                        ([0.0; BN_CHAINS], [0.0; BN_CHAINS])
                    };
                    for r in 0..m {
                        let k = k0 + r;
                        let (mn, iv) = (S::splat(mean[r]), S::splat(inv[r]));
                        // forward: y = fma(scale, x̂, bias); gradient: y = (scale·inv)·((g −
                        // mean(g)) − x̂·mean(g·x̂))
                        let (sc, bi, mdy, mdot) = if d.part == BN_FORWARD {
                            (*pa.add(k), *pb.add(k), 0.0, 0.0)
                        } else {
                            (*pa.add(k) * inv[r], 0.0, sdy[r] / mf, dot[r] / mf)
                        };
                        let (scv, biv, mdyv, mdotv) =
                            (S::splat(sc), S::splat(bi), S::splat(mdy), S::splat(mdot));
                        for img in 0..n {
                            let off = (img * c + k) * inner;
                            let mut i = 0;
                            while i < inner {
                                let l = S::LANES.min(inner - i);
                                let xv = S::load_partial(x.add(off + i), l);
                                let xh = S::mul(S::sub(xv, mn), iv);
                                let out = if d.part == BN_FORWARD {
                                    S::fma(scv, xh, biv)
                                } else {
                                    let g = S::load_partial(pb.add(off + i), l);
                                    let t = S::sub(S::sub(g, mdyv), S::mul(xh, mdotv));
                                    S::mul(scv, t)
                                };
                                S::store_partial(y.add(off + i), l, out);
                                i += l;
                            }
                        }
                    }
                }
                BN_GRAD_SCALE => {
                    let g = pa;
                    let dot = bn_sums(x, dims, k0, m, |r, at, v| *g.add(at) * ((v - mean[r]) * inv[r]));
                    for (r, &v) in dot.iter().enumerate().take(m) {
                        *y.add(k0 + r) = v;
                    }
                }
                _ => {
                    let kf = (n * inner) as f32 / (n * inner).saturating_sub(1).max(1) as f32;
                    for (r, &v) in var.iter().enumerate().take(m) {
                        *y.add(k0 + r) = v * kf;
                    }
                }
            }
        }
        k0 += m;
    }
}
