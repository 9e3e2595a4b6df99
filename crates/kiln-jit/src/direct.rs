//! The AVX-512 tier of the direct kernels: windowed pooling, global pooling, depthwise
//! convolution and dense layers, written with Rust's `std::arch` intrinsics (Cranelift has no
//! vector type wider than 128 bits) and called from JIT'd code like the GEMM micro-kernel.
//! The Cranelift lowerings in `lower.rs` are the portable tier; `JitOptions::gemm_tier`
//! chooses (`Auto`: this tier where the CPU has AVX-512F).
//!
//! The JIT'd kernel of a node writes the node's description (a `#[repr(C)]` struct of `u64`
//! words, all compile-time constants from validated shapes) into a stack slot and calls the
//! entry point with it, the arena and its slice `[begin, end)` of the parallel range. The
//! descriptions are built by `lower.rs` from the same shapes its Cranelift kernels use, so
//! every access is inside the node's values in the arena.
//!
//! Each kernel vectorizes along output columns, 16 per `zmm`: the columns whose window lies
//! inside the row (every column tap real) take the vector path, in groups of up to four
//! vectors so that four independent dependency chains hide the FMA / max latency; the border
//! columns and any window with a NaN are computed one at a time with the interpreter's rules
//! (first maximum, a NaN wins, real taps in row-major order, the same count for averages).
//! Pooling sums add in the interpreter's order, so sums and averages are bit-identical to it.
//! Nothing here panics (the code runs inside JIT frames that cannot unwind).

use kiln_ir::geometry::{Window2d, WindowTaps};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU can run the tier.
pub fn available() -> bool {
    crate::gemm_avx512::available()
}

/// `PoolDesc::kind`.
pub const POOL_MAX: u64 = 0;
pub const POOL_SUM: u64 = 1;
pub const POOL_AVG: u64 = 2;
pub const POOL_AVG_WITH_PAD: u64 = 3;

/// A window over one plane: input `h × w`, output `oh × ow`, padding `[top, left, bottom,
/// right]`, as `kiln_ir::geometry::Window2d`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WindowDesc {
    pub h: u64,
    pub w: u64,
    pub oh: u64,
    pub ow: u64,
    pub kernel: [u64; 2],
    pub stride: [u64; 2],
    pub dilation: [u64; 2],
    pub pad: [u64; 4],
}

impl WindowDesc {
    pub fn new(g: &Window2d) -> WindowDesc {
        let u = |v: usize| v as u64;
        WindowDesc {
            h: u(g.input[0]),
            w: u(g.input[1]),
            oh: u(g.output[0]),
            ow: u(g.output[1]),
            kernel: g.kernel.map(u),
            stride: g.stride.map(u),
            dilation: g.dilation.map(u),
            pad: g.pad.map(u),
        }
    }

    fn geometry(&self) -> Window2d {
        let z = |v: u64| v as usize;
        Window2d {
            input: [z(self.h), z(self.w)],
            kernel: self.kernel.map(z),
            stride: self.stride.map(z),
            dilation: self.dilation.map(z),
            pad: self.pad.map(z),
            output: [z(self.oh), z(self.ow)],
        }
    }
}

/// The output columns `[lo, hi)` whose every column tap is real (empty when there are none).
pub fn interior(g: &Window2d) -> (usize, usize) {
    let (w, k, s, d, pl) = (g.input[1], g.kernel[1], g.stride[1], g.dilation[1], g.pad[1]);
    let ow = g.output[1];
    let lo = pl.div_ceil(s).min(ow);
    let ext = d * (k - 1) + 1;
    let hi = if w + pl >= ext {
        ((w + pl - ext) / s + 1).min(ow)
    } else {
        lo
    };
    (lo, hi.max(lo))
}

/// A pooling node: `x [planes, h, w]` at byte `x` of the arena, `y [planes, oh, ow]` at `y`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PoolDesc {
    pub x: u64,
    pub y: u64,
    /// Planes (`N·C`): the parallel range.
    pub planes: u64,
    pub kind: u64,
    pub win: WindowDesc,
}

/// A global pooling node over planes of `len` elements: `max` or average.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GlobalPoolDesc {
    pub x: u64,
    pub y: u64,
    pub planes: u64,
    pub len: u64,
    pub max: u64,
}

/// `DepthwiseDesc::act`.
pub const ACT_NONE: u64 = 0;
pub const ACT_RELU: u64 = 1;
pub const ACT_LEAKY_RELU: u64 = 2;

/// A convolution with one input channel per group: output plane `(n, o)` reads input plane
/// `(n, o / cog)` of `x [n, cin, h, w]` with the `kh × kw` kernel `o` of `w`; `bias` is
/// `u64::MAX` when there is none; the activation `act` (with `alpha`, LeakyReLU's slope bits)
/// is applied before the store.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseDesc {
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub y: u64,
    /// Output planes (`N·cout`): the parallel range.
    pub planes: u64,
    pub cin: u64,
    pub cout: u64,
    pub cog: u64,
    pub act: u64,
    pub alpha: u64,
    pub win: WindowDesc,
}

/// A dense layer `y[n, o] = b[o] + Σ_i x[n, i]·w[o, i]` over `batch` rows; its parallel range
/// is the outputs `o`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DenseDesc {
    pub x: u64,
    pub w: u64,
    pub bias: u64,
    pub y: u64,
    pub batch: u64,
    pub inputs: u64,
    pub outputs: u64,
}

/// `NO_BIAS` in a description's `bias`.
pub const NO_BIAS: u64 = u64::MAX;

/// The descriptions: `#[repr(C)]` structs of `u64` words only, which the JIT'd kernel stores
/// word by word.
///
/// # Safety
/// Implement only for `#[repr(C)]` structs made of `u64` fields (no padding).
pub unsafe trait Words: Copy {
    fn words(&self) -> &[u64] {
        // SAFETY: the implementor is `size_of::<Self>() / 8` u64 words (the trait's contract).
        unsafe { std::slice::from_raw_parts((self as *const Self).cast::<u64>(), size_of::<Self>() / 8) }
    }
}
// SAFETY: each is `#[repr(C)]` with u64 fields (and WindowDesc, itself u64 words) only.
unsafe impl Words for PoolDesc {}
// SAFETY: as above.
unsafe impl Words for GlobalPoolDesc {}
// SAFETY: as above.
unsafe impl Words for DepthwiseDesc {}
// SAFETY: as above.
unsafe impl Words for DenseDesc {}

fn at(arena: *mut u8, off: u64) -> *mut f32 {
    arena.wrapping_add(off as usize).cast::<f32>()
}

/// One window of one plane, with the interpreter's rules (`kiln_interp::pool`).
///
/// # Safety
/// `plane` holds `h·w` floats; the taps come from the window's geometry.
unsafe fn window_scalar(
    plane: *const f32,
    w: usize,
    rows: WindowTaps,
    cols: WindowTaps,
    d: [usize; 2],
    kind: u64,
) -> f32 {
    let max = kind == POOL_MAX;
    let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
    for r in 0..rows.real() {
        let ih = rows.first + r * d[0];
        for c in 0..cols.real() {
            let iw = cols.first + c * d[1];
            // SAFETY: a real tap of the window lies inside the plane.
            let v = unsafe { *plane.add(ih * w + iw) };
            if max {
                if v > acc || (v.is_nan() && !acc.is_nan()) {
                    acc = v;
                }
            } else {
                acc += v;
            }
        }
    }
    match kind {
        POOL_AVG => acc / (rows.real() * cols.real()) as f32,
        POOL_AVG_WITH_PAD => acc / (rows.padded * cols.padded) as f32,
        _ => acc,
    }
}

/// The window taps of every output index along axis `a` of `g` (the closed form divides, so it
/// is evaluated once per call, not per row and plane); `None` for more than 2¹⁶ outputs or
/// when the table cannot be allocated (the callers then evaluate each one where needed).
fn tap_table(g: &Window2d, a: usize) -> Option<Vec<WindowTaps>> {
    // bounded: a tall or wide hostile output must not cost a table per call bigger than itself
    if g.output[a] > 1 << 16 {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(g.output[a]).ok()?;
    v.extend((0..g.output[a]).map(|o| g.taps(a, o)));
    Some(v)
}

/// The taps of output `o` on axis `a`, from `table` when there is one.
fn taps_of(table: &Option<Vec<WindowTaps>>, g: &Window2d, a: usize, o: usize) -> WindowTaps {
    match table {
        Some(t) => t.get(o).copied().unwrap_or_else(|| g.taps(a, o)),
        None => g.taps(a, o),
    }
}

/// Converts a range from the JIT to `usize`, or `None` when it is not inside `[0, extent]`.
fn range(begin: i64, end: i64, extent: u64) -> Option<(usize, usize)> {
    let (b, e) = (usize::try_from(begin).ok()?, usize::try_from(end).ok()?);
    (b <= e && e as u64 <= extent).then_some((b, e))
}

/// Windowed pooling over the planes `[begin, end)`.
///
/// # Safety
/// `d` must describe a pooling node of a plan over `arena` (the JIT'd kernel passes its own),
/// and the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kiln_pool2d(d: *const PoolDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let g = d.win.geometry();
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    // SAFETY: forwarded from the caller.
    unsafe { pool2d(&d, &g, arena, begin, end) }
}

/// Lane masks of the first `n` lanes (n ≤ 16).
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// The lanes of a block of `n ≤ 16` output columns: `m` the columns, `lo`/`hi` the two
/// vectors a stride-2 load reads (elements `[0, 2n − 1)` of 32).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Lanes {
    m: __mmask16,
    lo: __mmask16,
    hi: __mmask16,
}

#[cfg(target_arch = "x86_64")]
impl Lanes {
    fn new(n: usize) -> Lanes {
        let last = (2 * n).saturating_sub(1);
        Lanes {
            m: lanes(n),
            lo: lanes(last),
            hi: lanes(last.saturating_sub(16)),
        }
    }
}

/// 16 floats at `p`, `p + s`, … (lanes in `l.m` only; the others are 0 and read nothing).
/// `S` is the stride when it is 1 or 2 (a load, or two loads and a permute), else 0: a
/// gather at the offsets `idx` (`i·s`).
///
/// # Safety
/// `p + i·s` must be readable for every lane `i` of `l.m`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load_strided<const S: usize>(p: *const f32, l: Lanes, idx: __m512i) -> __m512 {
    // SAFETY (all arms): masked loads read only the lanes the caller vouches for.
    unsafe {
        match S {
            1 => _mm512_maskz_loadu_ps(l.m, p),
            2 => {
                let lo = _mm512_maskz_loadu_ps(l.lo, p);
                let hi = _mm512_maskz_loadu_ps(l.hi, p.add(16));
                let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
                _mm512_maskz_permutex2var_ps(l.m, lo, even, hi)
            }
            _ => _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), l.m, idx, p),
        }
    }
}

/// The gather offsets `i·s` of a column stride `s` (which `gather_ok` accepted).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn offsets(s: usize) -> __m512i {
    _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(s as i32),
    )
}

/// The vector path's view of one output row: the row taps of the window, where the input
/// rows start, and the column geometry.
#[derive(Clone, Copy)]
struct RowJob {
    /// The plane's first element and its row width.
    x: *const f32,
    w: usize,
    rows: WindowTaps,
    /// Row dilation, kernel width, column stride and dilation, left padding.
    dh: usize,
    kw: usize,
    s: usize,
    dw: usize,
    pad: usize,
}

/// `NB` blocks of 16 interior columns from `x0` (the last with lanes `last`, the others full):
/// for every real tap in row-major order, `f(block, kernel tap (ky, kx), vector)`.
///
/// # Safety
/// The columns must be interior (every column tap inside the row) and exist.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn for_taps<const NB: usize, const S: usize>(
    j: &RowJob,
    x0: usize,
    last: Lanes,
    idx: __m512i,
    mut f: impl FnMut(usize, usize, usize, __m512),
) {
    let full = Lanes::new(16);
    for r in 0..j.rows.real() {
        let row = j.x.wrapping_add((j.rows.first + r * j.dh) * j.w);
        for kx in 0..j.kw {
            // interior: x0·s + kx·d − pad ≥ 0 and every lane inside the row
            let c0 = row.wrapping_add(x0 * j.s + kx * j.dw - j.pad);
            for b in 0..NB {
                let l = if b + 1 == NB { last } else { full };
                // SAFETY: the caller's interior columns.
                let v = unsafe { load_strided::<S>(c0.wrapping_add(16 * b * j.s), l, idx) };
                f(b, j.rows.lo + r, kx, v);
            }
        }
    }
}

/// Whether a column stride can be loaded by `load_strided` (15 strides fit an i32 offset).
fn gather_ok(s: usize) -> bool {
    s.checked_mul(16).is_some_and(|v| v <= i32::MAX as usize)
}

/// Interior columns `[x0, x0 + n)` of one output row of a pooling node (`n ≤ 16·NB`).
///
/// # Safety
/// As [`for_taps`]; `y` is the output row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_blocks<const NB: usize, const S: usize, const MAX: bool>(
    j: &RowJob,
    x0: usize,
    n: usize,
    idx: __m512i,
    div: f32,
    y: *mut f32,
) -> u64 {
    let last = Lanes::new(n - 16 * (NB - 1));
    let mut acc = [if MAX {
        _mm512_set1_ps(f32::NEG_INFINITY)
    } else {
        _mm512_setzero_ps()
    }; NB];
    let mut nans = [0 as __mmask16; NB];
    // SAFETY: forwarded from the caller.
    unsafe {
        for_taps::<NB, S>(j, x0, last, idx, |b, _, _, v| {
            if MAX {
                nans[b] |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                // strictly greater replaces: the first maximum stays
                acc[b] = _mm512_max_ps(v, acc[b]);
            } else {
                acc[b] = _mm512_add_ps(acc[b], v);
            }
        })
    };
    let mut nan = 0u64;
    for b in 0..NB {
        let l = if b + 1 == NB { last.m } else { 0xffff };
        let v = if div != 1.0 {
            _mm512_div_ps(acc[b], _mm512_set1_ps(div))
        } else {
            acc[b]
        };
        // SAFETY: the block's columns of the output row.
        unsafe { _mm512_mask_storeu_ps(y.wrapping_add(x0 + 16 * b), l, v) };
        nan |= u64::from(nans[b] & l) << (16 * b);
    }
    nan
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool2d(d: &PoolDesc, g: &Window2d, arena: *mut u8, begin: usize, end: usize) {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let (kw, s, dl) = (g.kernel[1], g.stride, g.dilation);
    let (mut lo, mut hi) = interior(g);
    if !gather_ok(s[1]) {
        (lo, hi) = (0, 0);
    }
    let idx = offsets(s[1].min(1 << 20));
    let (xa, ya) = (at(arena, d.x), at(arena, d.y));
    let max = d.kind == POOL_MAX;
    let (row_taps, col_taps) = (tap_table(g, 0), tap_table(g, 1));
    for plane in begin..end {
        let xp = xa.wrapping_add(plane * h * w).cast_const();
        let yp = ya.wrapping_add(plane * oh * ow);
        for oy in 0..oh {
            let rows = taps_of(&row_taps, g, 0, oy);
            let yrow = yp.wrapping_add(oy * ow);
            let scalar = |ox: usize| {
                let cols = taps_of(&col_taps, g, 1, ox);
                // SAFETY: the plane's window `(oy, ox)` and its output element.
                unsafe { *yrow.add(ox) = window_scalar(xp, w, rows, cols, dl, d.kind) }
            };
            (0..lo).for_each(scalar);
            // interior columns: every column tap real and inside the padded input
            let div = match d.kind {
                POOL_AVG => (rows.real() * kw) as f32,
                POOL_AVG_WITH_PAD => (rows.padded * kw) as f32,
                _ => 1.0,
            };
            let j = RowJob {
                x: xp,
                w,
                rows,
                dh: dl[0],
                kw,
                s: s[1],
                dw: dl[1],
                pad: g.pad[1],
            };
            let mut x0 = lo;
            while x0 < hi {
                let n = (hi - x0).min(64);
                // SAFETY: interior columns x0..x0 + n of this row.
                let nan = unsafe {
                    macro_rules! go {
                        ($s:literal) => {
                            match (n.div_ceil(16), max) {
                                (1, true) => pool_blocks::<1, $s, true>(&j, x0, n, idx, div, yrow),
                                (2, true) => pool_blocks::<2, $s, true>(&j, x0, n, idx, div, yrow),
                                (3, true) => pool_blocks::<3, $s, true>(&j, x0, n, idx, div, yrow),
                                (_, true) => pool_blocks::<4, $s, true>(&j, x0, n, idx, div, yrow),
                                (1, false) => pool_blocks::<1, $s, false>(&j, x0, n, idx, div, yrow),
                                (2, false) => pool_blocks::<2, $s, false>(&j, x0, n, idx, div, yrow),
                                (3, false) => pool_blocks::<3, $s, false>(&j, x0, n, idx, div, yrow),
                                (_, false) => pool_blocks::<4, $s, false>(&j, x0, n, idx, div, yrow),
                            }
                        };
                    }
                    match s[1] {
                        1 => go!(1),
                        2 => go!(2),
                        _ => go!(0),
                    }
                };
                // a NaN in a window: recompute it with the interpreter's rule (the first NaN)
                let mut m = nan;
                while m != 0 {
                    scalar(x0 + m.trailing_zeros() as usize);
                    m &= m - 1;
                }
                x0 += n;
            }
            (hi.max(lo)..ow).for_each(scalar);
        }
    }
}

/// Global max or average pooling over the planes `[begin, end)`.
///
/// # Safety
/// As [`kiln_pool2d`].
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kiln_global_pool(d: *const GlobalPoolDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    // SAFETY: forwarded from the caller.
    unsafe { global_pool(&d, arena, begin, end) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn global_pool(d: &GlobalPoolDesc, arena: *mut u8, begin: usize, end: usize) {
    let len = d.len as usize;
    let (xa, ya) = (at(arena, d.x), at(arena, d.y));
    for plane in begin..end {
        let xp = xa.wrapping_add(plane * len).cast_const();
        let mut acc = [if d.max != 0 {
            _mm512_set1_ps(f32::NEG_INFINITY)
        } else {
            _mm512_setzero_ps()
        }; 4];
        let mut nan: __mmask16 = 0;
        let mut i = 0;
        while i < len {
            for a in &mut acc {
                if i >= len {
                    break;
                }
                // SAFETY: lanes < len − i of the plane.
                let v = unsafe { _mm512_maskz_loadu_ps(lanes(len - i), xp.add(i)) };
                if d.max != 0 {
                    nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    *a = _mm512_mask_max_ps(*a, lanes(len - i), v, *a);
                } else {
                    *a = _mm512_add_ps(*a, v);
                }
                i += 16;
            }
        }
        let v = if d.max != 0 {
            if nan != 0 {
                // the first NaN, as the interpreter returns it
                // SAFETY: a NaN was loaded from the plane's `len` elements.
                (0..len)
                    .map(|j| unsafe { *xp.add(j) })
                    .find(|v| v.is_nan())
                    .unwrap_or(f32::NAN)
            } else {
                let m = _mm512_max_ps(_mm512_max_ps(acc[0], acc[1]), _mm512_max_ps(acc[2], acc[3]));
                _mm512_reduce_max_ps(m)
            }
        } else {
            let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            _mm512_reduce_add_ps(s) / len as f32
        };
        // SAFETY: one output per plane.
        unsafe { *ya.add(plane) = v };
    }
}

/// Depthwise convolution over the output planes `[begin, end)` (`n·cout` of them).
///
/// # Safety
/// As [`kiln_pool2d`].
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kiln_depthwise(d: *const DepthwiseDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let g = d.win.geometry();
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    if d.cog == 0 || d.cout == 0 {
        return;
    }
    // SAFETY: forwarded from the caller.
    unsafe { depthwise(&d, &g, arena, begin, end) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn activate(act: u64, alpha: f32, v: __m512) -> __m512 {
    match act {
        ACT_RELU => {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_mov_ps(v, neg, _mm512_setzero_ps())
        }
        ACT_LEAKY_RELU => {
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
            _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(alpha))
        }
        _ => v,
    }
}

fn activate1(act: u64, alpha: f32, v: f32) -> f32 {
    match act {
        ACT_RELU if v < 0.0 => 0.0,
        ACT_LEAKY_RELU if v < 0.0 => v * alpha,
        _ => v,
    }
}

/// Interior columns `[x0, x0 + n)` of one output row of a depthwise convolution
/// (`n ≤ 16·NB`) with the kernel `k` (`kh × kw`), the bias `b0` and the activation.
///
/// # Safety
/// As [`for_taps`]; `y` is the output row, `k` the output channel's kernel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn depthwise_blocks<const NB: usize, const S: usize>(
    j: &RowJob,
    x0: usize,
    n: usize,
    idx: __m512i,
    k: *const f32,
    b0: f32,
    (act, alpha): (u64, f32),
    y: *mut f32,
) {
    let last = Lanes::new(n - 16 * (NB - 1));
    let mut acc = [_mm512_set1_ps(b0); NB];
    // SAFETY: forwarded from the caller; tap (ky, kx) of the kernel.
    unsafe {
        for_taps::<NB, S>(j, x0, last, idx, |b, ky, kx, v| {
            let kv = _mm512_set1_ps(*k.add(ky * j.kw + kx));
            acc[b] = _mm512_fmadd_ps(v, kv, acc[b]);
        })
    };
    for (b, a) in acc.iter().enumerate() {
        let l = if b + 1 == NB { last.m } else { 0xffff };
        // SAFETY: the block's columns of the output row.
        unsafe { _mm512_mask_storeu_ps(y.wrapping_add(x0 + 16 * b), l, activate(act, alpha, *a)) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise(d: &DepthwiseDesc, g: &Window2d, arena: *mut u8, begin: usize, end: usize) {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let [kh, kw] = g.kernel;
    let (s, dl) = (g.stride, g.dilation);
    let (cin, cout, cog) = (d.cin as usize, d.cout as usize, d.cog as usize);
    let (mut lo, mut hi) = interior(g);
    if !gather_ok(s[1]) {
        (lo, hi) = (0, 0);
    }
    let idx = offsets(s[1].min(1 << 20));
    let (xa, wa, ya) = (at(arena, d.x), at(arena, d.w), at(arena, d.y));
    let alpha = f32::from_bits(d.alpha as u32);
    let (row_taps, col_taps) = (tap_table(g, 0), tap_table(g, 1));
    for plane in begin..end {
        let (n, o) = (plane / cout, plane % cout);
        let xp = xa.wrapping_add((n * cin + o / cog) * h * w).cast_const();
        let wp = wa.wrapping_add(o * kh * kw).cast_const();
        let yp = ya.wrapping_add(plane * oh * ow);
        // SAFETY: one bias per output channel.
        let b0 = if d.bias == NO_BIAS {
            0.0
        } else {
            unsafe { *at(arena, d.bias).add(o) }
        };
        for oy in 0..oh {
            let rows = taps_of(&row_taps, g, 0, oy);
            let yrow = yp.wrapping_add(oy * ow);
            let scalar = |ox: usize| {
                let cols = taps_of(&col_taps, g, 1, ox);
                let mut acc = b0;
                for r in 0..rows.real() {
                    let ih = rows.first + r * dl[0];
                    for c in 0..cols.real() {
                        let iw = cols.first + c * dl[1];
                        // SAFETY: real taps lie inside the plane; tap (lo + r, lo + c) of the kernel.
                        unsafe {
                            let x = *xp.add(ih * w + iw);
                            let k = *wp.add((rows.lo + r) * kw + cols.lo + c);
                            acc = x.mul_add(k, acc);
                        }
                    }
                }
                // SAFETY: the output element (oy, ox).
                unsafe { *yrow.add(ox) = activate1(d.act, alpha, acc) };
            };
            (0..lo).for_each(scalar);
            let j = RowJob {
                x: xp,
                w,
                rows,
                dh: dl[0],
                kw,
                s: s[1],
                dw: dl[1],
                pad: g.pad[1],
            };
            let act = (d.act, alpha);
            let mut x0 = lo;
            while x0 < hi {
                let n = (hi - x0).min(64);
                // SAFETY: interior columns x0..x0 + n of this row.
                unsafe {
                    macro_rules! go {
                        ($s:literal) => {
                            match n.div_ceil(16) {
                                1 => depthwise_blocks::<1, $s>(&j, x0, n, idx, wp, b0, act, yrow),
                                2 => depthwise_blocks::<2, $s>(&j, x0, n, idx, wp, b0, act, yrow),
                                3 => depthwise_blocks::<3, $s>(&j, x0, n, idx, wp, b0, act, yrow),
                                _ => depthwise_blocks::<4, $s>(&j, x0, n, idx, wp, b0, act, yrow),
                            }
                        };
                    }
                    match s[1] {
                        1 => go!(1),
                        2 => go!(2),
                        _ => go!(0),
                    }
                }
                x0 += n;
            }
            (hi.max(lo)..ow).for_each(scalar);
        }
    }
}

/// A dense layer over the outputs `[begin, end)`, every batch row.
///
/// # Safety
/// As [`kiln_pool2d`].
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kiln_dense(d: *const DenseDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((begin, end)) = range(begin, end, d.outputs) else {
        return;
    };
    // SAFETY: forwarded from the caller.
    unsafe { dense(&d, arena, begin, end) }
}

/// `R` batch rows × `O` outputs from `(n0, o0)`: `R·O` vector dot products over the inputs,
/// 16 at a time (the last block masked).
///
/// # Safety
/// Rows `n0..n0 + R` and outputs `o0..o0 + O` must exist.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dense_block<const R: usize, const O: usize>(d: &DenseDesc, arena: *mut u8, n0: usize, o0: usize) {
    let (k, outs) = (d.inputs as usize, d.outputs as usize);
    let (xa, wa, ya) = (
        at(arena, d.x).cast_const(),
        at(arena, d.w).cast_const(),
        at(arena, d.y),
    );
    let mut acc = [[_mm512_setzero_ps(); O]; R];
    let mut i = 0;
    while i < k {
        let m = lanes(k - i);
        let mut xv = [_mm512_setzero_ps(); R];
        for (r, v) in xv.iter_mut().enumerate() {
            // SAFETY: row n0 + r, inputs i..i + 16 (masked to k).
            *v = unsafe { _mm512_maskz_loadu_ps(m, xa.add((n0 + r) * k + i)) };
        }
        for o in 0..O {
            // SAFETY: weight row o0 + o, inputs i..i + 16 (masked to k).
            let wv = unsafe { _mm512_maskz_loadu_ps(m, wa.add((o0 + o) * k + i)) };
            for (x, row) in xv.iter().zip(acc.iter_mut()) {
                row[o] = _mm512_fmadd_ps(*x, wv, row[o]);
            }
        }
        i += 16;
    }
    for (r, row) in acc.iter().enumerate() {
        for (o, a) in row.iter().enumerate() {
            let b = if d.bias == NO_BIAS {
                0.0
            } else {
                // SAFETY: one bias per output.
                unsafe { *at(arena, d.bias).add(o0 + o) }
            };
            // SAFETY: output (n0 + r, o0 + o).
            unsafe { *ya.add((n0 + r) * outs + o0 + o) = _mm512_reduce_add_ps(*a) + b };
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dense(d: &DenseDesc, arena: *mut u8, begin: usize, end: usize) {
    let batch = d.batch as usize;
    let mut n0 = 0;
    // SAFETY (every call): rows < batch and outputs in [begin, end) ⊆ [0, outputs).
    unsafe {
        while n0 + 4 <= batch {
            let mut o = begin;
            while o + 4 <= end {
                dense_block::<4, 4>(d, arena, n0, o);
                o += 4;
            }
            while o < end {
                dense_block::<4, 1>(d, arena, n0, o);
                o += 1;
            }
            n0 += 4;
        }
        while n0 < batch {
            let mut o = begin;
            while o + 8 <= end {
                dense_block::<1, 8>(d, arena, n0, o);
                o += 8;
            }
            while o < end {
                dense_block::<1, 1>(d, arena, n0, o);
                o += 1;
            }
            n0 += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interior_columns_are_those_whose_taps_are_all_real() {
        for (w, k, s, d, pl, pr) in [
            (10, 3, 1, 1, 1, 1),
            (7, 3, 2, 2, 0, 3),
            (5, 6, 1, 1, 0, 1),
            (112, 3, 2, 1, 1, 1),
        ] {
            let ext = d * (k - 1) + 1;
            let ow = (w + pl + pr - ext) / s + 1;
            let g = Window2d {
                input: [1, w],
                kernel: [1, k],
                stride: [1, s],
                dilation: [1, d],
                pad: [0, pl, 0, pr],
                output: [1, ow],
            };
            let (lo, hi) = interior(&g);
            for o in 0..ow {
                let t = g.taps(1, o);
                assert_eq!(
                    (lo..hi).contains(&o),
                    t.lo == 0 && t.hi == k,
                    "{w} {k} {s} {d} {pl}: column {o}"
                );
            }
        }
    }
}
