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
//!   bias gradient), parallel over `C`, each sum in vector partial sums.
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
    pub stride_h: u64,
    pub dilation: [u64; 2],
    /// Top and left padding.
    pub pad: [u64; 2],
    pub mo: u64,
}

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
    /// The work items: (group, output-channel block, input channel, tap row).
    pub fn items(&self) -> u64 {
        self.groups * self.o_blocks() * self.cg() * self.kh
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

// SAFETY: each is `#[repr(C)]` with u64 fields (and WindowDesc, itself u64 words) only.
unsafe impl Words for WgradDesc {}
// SAFETY: as above.
unsafe impl Words for IdsDesc {}
// SAFETY: as above.
unsafe impl Words for ScatterDesc {}
// SAFETY: as above.
unsafe impl Words for SumDesc {}

pub use crate::direct::Entry;

/// One instruction set's entry points.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub wgrad: Entry<WgradDesc>,
    pub max_pool_ids: Entry<IdsDesc>,
    pub scatter_ids: Entry<ScatterDesc>,
    pub sum: Entry<SumDesc>,
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

            pub(super) const KERNELS: Kernels =
                Kernels { wgrad, max_pool_ids, scatter_ids, sum, wgrad_mo: $mo };
        }
    )*};
}

// AVX-512: 4 channels × up to 5 taps = 20 accumulators of 32 registers; AVX2: 2 × 5 of 16.
entries! {
    avx512: Avx512, "avx512f", 4;
    avx2: Avx2, "avx2,fma", 2;
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

/// Column taps per register block.
const NJ: usize = 5;

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
    // the column taps read up to ow − 1 + (kw − 1)·d of a row: without left padding and with
    // every tap inside the row they read the input itself, else a zero-padded copy of the
    // input channel's planes (input column q at q + pl), made once per channel
    let reach = ow + (kw - 1) * dj;
    let padded = pl > 0 || reach > w;
    let wp = (pl + w).max(reach);
    let mut planes = if padded {
        vec![0.0f32; n * h * wp]
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
                        // SAFETY: image img < N, channel ch < C_in, row r < H; the copy row is
                        // inside `planes` (wp ≥ pl + w).
                        unsafe {
                            let from = x.add(((img * u(d.c_in) + it.ch) * h + r) * w);
                            let to = planes.as_mut_ptr().add((img * h + r) * wp + pl);
                            std::ptr::copy_nonoverlapping(from, to, w);
                        }
                    }
                }
            }
            // SAFETY: as the entry points.
            XSource {
                base: planes.as_ptr(),
                image: h * wp,
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
        unsafe { wgrad_item::<S>(&d, arena, &it, &src) };
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
        let (kh, cg, og, mo) = (u(d.kh), u(d.cg()), u(d.og()), u(d.mo).max(1));
        let (i, rest) = (item % kh, item / kh);
        let (c, rest) = (rest % cg, rest / cg);
        let (ob, g) = (rest % u(d.o_blocks()), rest / u(d.o_blocks()));
        let o0 = g * og + ob * mo;
        Item {
            o0,
            m: mo.min((g + 1) * og - o0),
            c,
            ch: g * cg + c,
            i,
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
        rows: valid_outputs(u(d.oh), u(d.h), u(d.stride_h), u(d.dilation[0]), i, u(d.pad[0])),
        row_of: (u(d.stride_h), i * u(d.dilation[0]), u(d.pad[0])),
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
                        let s = unsafe { wgrad_block::<S, $m, $j>(&g_, src, o0, j0) };
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
) -> [[f32; NJ]; MO] {
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
        let mut out = [[0.0f32; NJ]; MO];
        for o in 0..MO {
            for jj in 0..NJ {
                out[o][jj] = S::hsum(acc[o][jj]);
            }
        }
        out
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
    for plane in b..e {
        // SAFETY: plane < planes: its input and ids are inside the node's tensors.
        let (xp, yp) = unsafe { (x.add(plane * h * w), ids.add(plane * oh * ow)) };
        for y in 0..oh {
            let rows = g.taps(0, y);
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
            *yr.add(x0 + k) = *v as i32;
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
        for k in b..e {
            let mut acc = [S::zero(); 4];
            for a in 0..outer {
                let p = x.add((a * c + k) * inner);
                let mut i = 0;
                while i + 4 * S::LANES <= inner {
                    for (r, v) in acc.iter_mut().enumerate() {
                        *v = S::add(*v, S::load(p.add(i + r * S::LANES)));
                    }
                    i += 4 * S::LANES;
                }
                while i + S::LANES <= inner {
                    acc[0] = S::add(acc[0], S::load(p.add(i)));
                    i += S::LANES;
                }
                if i < inner {
                    acc[1] = S::add(acc[1], S::load_partial(p.add(i), inner - i));
                }
            }
            let v = S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]));
            *y.add(k) = S::hsum(v);
        }
    }
}
