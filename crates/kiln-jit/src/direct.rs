//! The direct kernels of the Rust tiers: windowed pooling, global pooling, depthwise
//! convolution and dense layers, each written once over [`Simd`] and instantiated for
//! AVX-512F and for AVX2 + FMA inside `#[target_feature]` entry points ([`kernels`]), because
//! Cranelift has no vector type wider than 128 bits. JIT'd code calls them like the GEMM
//! driver; the Cranelift lowerings in `lower/` are the portable tier, and
//! `JitOptions::gemm_tier` chooses (`Auto`: the widest set the CPU has).
//!
//! The JIT'd kernel of a node writes the node's description (a `#[repr(C)]` struct of `u64`
//! words, all compile-time constants from validated shapes) into a stack slot and calls the
//! entry point with it, the arena and its slice `[begin, end)` of the parallel range. The
//! descriptions are built by `lower/direct.rs` from the same shapes its Cranelift kernels
//! use, so every access is inside the node's values in the arena.
//!
//! Each windowed kernel vectorizes along output columns, one register of `LANES` columns at a
//! time: the columns whose window lies inside the row (every column tap real) take the vector
//! path, in groups of up to four registers so that four independent dependency chains hide
//! the FMA / max latency (stride 1 loads, stride 2 loads twice and keeps the even lanes, larger
//! strides gather). Pooling and depthwise convolution share that row driver ([`windows`]) and
//! differ only in what they do per tap ([`WindowOp`]). The border columns, and any register of
//! max-pooling windows holding a NaN, are computed one at a time with the interpreter's rules
//! (first maximum, a NaN wins, real taps in row-major order, the same count for averages).
//! Pooling sums add in the interpreter's order, so sums and averages are bit-identical to it
//! on every set. Window taps come from [`AxisTaps`]: in closed form inside, from a small table
//! at the borders.
//!
//! Depthwise convolution with finite weights and a column stride of 1 or 2 takes another path
//! ([`depthwise_ring`]): each input row is copied once, as the passes reach it, into a small
//! ring of zero-padded rows that stays in L1 (at stride 2 split into its even and odd
//! columns, so that a register's taps are contiguous), so that every output column, border
//! ones included, is computed in registers with no bounds check or mask; a padding zero times
//! a finite weight adds ±0, which changes no sum. A pass computes four output rows and up to
//! four registers of columns (AVX2: two); 3×3 and 5×5 kernels have unrolled passes that load
//! each padded row once for every output row it feeds, with the weights in registers (on
//! AVX-512 the column taps are shifts of aligned loads). A kernel with a non-finite weight
//! takes the row driver (its padded taps must be skipped, as the interpreter skips them).
//!
//! Windowed pooling takes the same ring where it fits ([`pool_ring`]: column strides 1 and 2,
//! windows no larger than the input, paddings narrower than the window; an unpadded window of
//! at most four taps reads the plane as it is), padded with −∞ for
//! the maximum and +0 for sums, each output's taps in row-major order, so its bits are the
//! interpreter's; a max-pool plane holding a NaN goes back to the row driver. A 2×2 window at
//! stride 2 that tiles its input exactly (LeNet's, VGG's) reads the rows as they are, with no
//! border case at all ([`pool_tiles`]). Max pooling 3×3 at stride 2 over rows wider than a
//! register takes neither on AVX-512: each input row's column maxima come from two loads split
//! into even and odd columns in registers, and each output row is the maximum of three of them
//! ([`pool_wide`]: no copy). Other pools, and depthwise convolutions, over planes
//! with narrow output rows (at most 32 outputs) or at column stride 2 run a register's lanes
//! of planes at a time (eight on AVX2, sixteen on AVX-512, there for rows of at most 16
//! outputs only: [`block_geom`]), transposed into a padded buffer so that a register holds one
//! pixel of the block's planes ([`pool_channels`], [`depthwise_channels`]): every output of
//! the block is then one load and one maximum, add or FMA per tap, four outputs at a time
//! (eight at column stride 1 on AVX-512: [`channel_block`]).
//! Nothing here panics (the code runs inside JIT frames that cannot unwind).

use crate::elementwise_kernels::Act;
#[cfg(target_arch = "x86_64")]
use crate::gemm::BLOCK;
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512, Simd};
use kiln_ir::geometry::{Window2d, WindowTaps};

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

/// The outputs `[lo, hi)` along axis `a` whose every tap is real (empty when there are none).
pub fn interior(g: &Window2d, a: usize) -> (usize, usize) {
    let (n, s, pb, out) = (g.input[a], g.stride[a], g.pad[a], g.output[a]);
    let lo = pb.div_ceil(s).min(out);
    let ext = g.extent(a);
    let hi = if n + pb >= ext {
        ((n + pb - ext) / s + 1).min(out)
    } else {
        lo
    };
    (lo, hi.max(lo))
}

/// Border outputs per end of an axis whose taps [`AxisTaps`] tables.
const BORDER: usize = 8;

/// The window taps along one axis, cheap to ask for inside the row loops: the interior
/// outputs (every tap real: the first at `o·s − pad`, no division), up to [`BORDER`] outputs
/// at each end from a table built once per call, any others (paddings wider than that) from
/// [`Window2d::taps`].
#[derive(Clone, Copy)]
struct AxisTaps {
    g: Window2d,
    a: usize,
    /// The interior outputs `[lo, hi)` ([`interior`]).
    lo: usize,
    hi: usize,
    /// The taps of outputs `0, 1, …` and `out − 1, out − 2, …`.
    head: [WindowTaps; BORDER],
    tail: [WindowTaps; BORDER],
}

impl AxisTaps {
    fn new(g: &Window2d, a: usize) -> AxisTaps {
        let (lo, hi) = interior(g, a);
        let out = g.output[a];
        let none = WindowTaps {
            first: 0,
            lo: 0,
            hi: 0,
            padded: 0,
        };
        let mut t = AxisTaps {
            g: *g,
            a,
            lo,
            hi,
            head: [none; BORDER],
            tail: [none; BORDER],
        };
        for (o, x) in t.head.iter_mut().enumerate().take(lo) {
            *x = g.taps(a, o);
        }
        for (i, x) in t.tail.iter_mut().enumerate().take(out - hi) {
            *x = g.taps(a, out - 1 - i);
        }
        t
    }

    /// The taps of output `o < output[a]`.
    #[inline(always)]
    fn get(&self, o: usize) -> WindowTaps {
        let (g, a) = (&self.g, self.a);
        if o >= self.lo && o < self.hi {
            let k = g.kernel[a];
            return WindowTaps {
                first: o * g.stride[a] - g.pad[a],
                lo: 0,
                hi: k,
                padded: k,
            };
        }
        let t = if o < self.lo {
            self.head.get(o)
        } else {
            self.tail.get(g.output[a] - 1 - o)
        };
        t.copied().unwrap_or_else(|| g.taps(a, o))
    }
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

/// A convolution with one input channel per group: output plane `(n, o)` reads input plane
/// `(n, o / cog)` of `x [n, cin, h, w]` with the `kh × kw` kernel `o` of `w`; `bias` is
/// `u64::MAX` when there is none; the activation `act` with its parameters' bits `a`, `b`
/// (`elementwise_kernels::code`) is applied before the store.
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
    pub a: u64,
    pub b: u64,
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

/// An inference batch norm `y = x·k + (bias − k·mean)`, `k = scale / √(var + eps)` per
/// channel, over planes of `plane` floats (`channels` per image); its parallel range is the
/// planes (`n·channels`). `eps` holds the f32's bits.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NormDesc {
    pub x: u64,
    pub scale: u64,
    pub bias: u64,
    pub mean: u64,
    pub var: u64,
    pub y: u64,
    pub planes: u64,
    pub channels: u64,
    pub plane: u64,
    pub eps: u64,
    /// The fused activation: its code (`elementwise_kernels::code`, `NONE` for none) and
    /// its two parameters' bits.
    pub act: u64,
    pub act_a: u64,
    pub act_b: u64,
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
// SAFETY: as above.
unsafe impl Words for NormDesc {}

/// An entry point `f(description, arena, begin, end)` over the parallel range `[begin, end)`.
pub type Entry<D> = unsafe extern "C" fn(*const D, *mut u8, i64, i64);

/// One instruction set's entry points.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    pub pool2d: Entry<PoolDesc>,
    pub global_pool: Entry<GlobalPoolDesc>,
    pub depthwise: Entry<DepthwiseDesc>,
    pub dense: Entry<DenseDesc>,
    pub batch_norm: Entry<NormDesc>,
    /// Called by the GEMM driver, not by JIT'd code.
    pub direct_conv: DirectConvFn,
    /// The row kernel of images with few channels (`conv_rows`), called by the GEMM driver.
    pub direct_conv_rows: DirectConvFn,
    /// A `gemm` node's epilogue, with any activation ([`gemm_epilogue`]).
    pub epilogue: crate::gemm::EpilogueFn,
    /// A dense layer's epilogue on the GEMM driver: a bias value per column.
    pub epilogue_cols: crate::gemm::EpilogueFn,
}

/// The entry points of the kernels for `isa`, when there are some and this CPU runs them;
/// `None` for the Cranelift tier.
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

/// Defines `NAME`, a `gemm::EpilogueFn` running [`gemm_epilogue`] with bias per row or (with
/// `COLS`) per column, with the set's features enabled.
macro_rules! epilogue_entry {
    ($name:ident: $set:ty, $features:literal, $cols:literal) => {
        /// # Safety
        /// As [`super::gemm_epilogue`]; `act` null or one activation.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe extern "C" fn $name(
            c: *mut f32,
            src: *const f32,
            res: *const f32,
            bias: *const f32,
            rows: i64,
            cols: i64,
            ld: i64,
            src_ld: i64,
            act: *const Act,
        ) {
            // SAFETY: forwarded from the caller.
            unsafe {
                let act = if act.is_null() { Act::NONE } else { *act };
                super::gemm_epilogue::<$set, $cols>(c, src, res, bias, [rows, cols, ld, src_ld], act)
            }
        }
    };
}

/// Defines a module of entry points per set, each running the generic kernel of the same
/// name with the set's features enabled (every function below them is `#[inline(always)]`,
/// so all of it is compiled with those features).
macro_rules! entries {
    ($($module:ident: $set:ty, $features:literal;)*) => {$(
        #[cfg(target_arch = "x86_64")]
        mod $module {
            use super::*;

            /// # Safety
            /// `d` must describe a pooling node of a plan over `arena` (the JIT'd kernel
            /// passes its own), and the CPU must have the set.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn pool2d(d: *const PoolDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::pool2d::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `pool2d`, for a global pooling node.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn global_pool(d: *const GlobalPoolDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::global_pool::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `pool2d`, for a depthwise convolution.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn depthwise(d: *const DepthwiseDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::depthwise::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `pool2d`, for a dense layer.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn dense(d: *const DenseDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::dense::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As `pool2d`, for an inference batch norm.
            #[target_feature(enable = $features)]
            unsafe extern "C" fn batch_norm(d: *const NormDesc, arena: *mut u8, begin: i64, end: i64) {
                // SAFETY: forwarded from the caller.
                unsafe { super::batch_norm::<$set>(d, arena, begin, end) }
            }

            /// # Safety
            /// As [`super::direct_conv`].
            #[target_feature(enable = $features)]
            unsafe fn direct_conv(j: &DirectConvJob) {
                // SAFETY: forwarded from the caller.
                unsafe { super::direct_conv::<$set>(j) }
            }

            /// # Safety
            /// As [`crate::conv_rows::direct_conv_rows`].
            #[target_feature(enable = $features)]
            unsafe fn direct_conv_rows(j: &DirectConvJob) {
                // SAFETY: forwarded from the caller.
                unsafe { crate::conv_rows::direct_conv_rows::<$set>(j) }
            }

            epilogue_entry!(epilogue: $set, $features, false);
            // with a bias value per column (a dense layer's)
            epilogue_entry!(epilogue_cols: $set, $features, true);

            pub(super) const KERNELS: Kernels = Kernels {
                pool2d,
                global_pool,
                depthwise,
                dense,
                batch_norm,
                direct_conv,
                direct_conv_rows,
                epilogue,
                epilogue_cols,
            };
        }
    )*};
}

entries! {
    avx512: Avx512, "avx512f";
    avx2: Avx2, "avx2,fma";
}

fn at(arena: *mut u8, off: u64) -> *mut f32 {
    arena.wrapping_add(off as usize).cast::<f32>()
}

/// Converts a range from the JIT to `usize`, or `None` when it is not inside `[0, extent]`.
fn range(begin: i64, end: i64, extent: u64) -> Option<(usize, usize)> {
    let (b, e) = (usize::try_from(begin).ok()?, usize::try_from(end).ok()?);
    (b <= e && e as u64 <= extent).then_some((b, e))
}

/// One window of one plane, with the interpreter's rules (`kiln_interp::pool`).
///
/// # Safety
/// `plane` holds `h·w` floats; the taps come from the window's geometry.
#[inline(always)]
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

/// `min(n, LANES)` floats from `p`, the other lanes zero.
///
/// # Safety
/// `min(n, LANES)` floats from `p` must be readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_n<S: Simd>(p: *const f32, n: usize) -> S::V {
    // SAFETY: forwarded from the caller.
    unsafe {
        if n >= S::LANES {
            S::load(p)
        } else {
            S::load_partial(p, n)
        }
    }
}

/// The taps at `p`, `p + s`, … of `lanes ≤ LANES` output columns, where `rem ≥ (lanes − 1)·s
/// + 1` floats from `p` lie in the input row. `ST` is the stride when it is 1 or 2 (a load, or
/// two loads keeping the even lanes, in [`Simd::even_lanes`]' order), else 0 (a gather). With
/// `EXACT`, whole registers are read only as far as `rem` allows (the lanes past `lanes` then
/// hold zeros or other floats of the row); without, the caller vouches that whole registers
/// (`LANES·s` floats) are readable.
///
/// # Safety
/// As stated: the floats read must be readable.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_cols<S: Simd, const ST: usize, const EXACT: bool>(
    p: *const f32,
    s: usize,
    lanes: usize,
    rem: usize,
) -> S::V {
    let l = S::LANES;
    // SAFETY (all arms): only floats the caller vouches for are read.
    unsafe {
        match ST {
            1 if !EXACT => S::load(p),
            1 => load_n::<S>(p, rem),
            2 if !EXACT || rem >= 2 * l => S::even_lanes(S::load(p), S::load(p.add(l))),
            2 if rem >= l => S::even_lanes(S::load(p), S::load_partial(p.add(l), rem - l)),
            2 => S::even_lanes(S::load_partial(p, rem), S::zero()),
            _ => S::gather(p, s, lanes),
        }
    }
}

/// Whether column stride `s` can be loaded by `load_cols` (a gather's offsets fit an `i32`).
#[cfg(target_arch = "x86_64")]
fn strided_ok<S: Simd>(s: usize) -> bool {
    s.checked_mul(S::LANES).is_some_and(|v| v <= i32::MAX as usize)
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

/// What a windowed kernel computes per output, over one plane at a time: [`windows`] drives
/// it, vector registers of output columns through `init`, `tap` (every real tap in row-major
/// order) and `finish`, the other outputs through `scalar`.
#[cfg(target_arch = "x86_64")]
trait WindowOp {
    /// Whether a NaN among a register's inputs sends its columns to `scalar` (max pooling:
    /// the vector maximum does not follow the interpreter's NaN rule).
    const NAN_TO_SCALAR: bool;
    /// Prepares output plane `p`; returns its input plane.
    fn plane(&mut self, p: usize) -> *const f32;
    /// The accumulator before the first tap.
    unsafe fn init<S: Simd>(&self) -> S::V;
    /// The operand of kernel tap `(ky, kx)` (depthwise: its weight), once per tap and row.
    unsafe fn weight<S: Simd>(&self, ky: usize, kx: usize) -> S::V;
    /// The accumulator after input `v` at a tap with operand `w`.
    unsafe fn tap<S: Simd>(acc: S::V, w: S::V, v: S::V) -> S::V;
    /// What is stored for windows with row taps `rows` whose every column tap is real.
    unsafe fn finish<S: Simd>(&self, acc: S::V, rows: WindowTaps) -> S::V;
    /// One output with the interpreter's rules (input plane `x`).
    unsafe fn scalar<S: Simd>(&self, x: *const f32, g: &Window2d, rows: WindowTaps, cols: WindowTaps) -> f32;
}

/// `NB` registers of output columns from `x0`, `n` columns in all (`n ≤ NB·LANES`, more than
/// `(NB − 1)·LANES`): the accumulators over the row's real taps, finished and stored in row
/// `y`. Without `TAIL`, `n = NB·LANES` and the row holds at least one more interior column
/// (so whole registers are readable at every tap); with it, the last register may be partial
/// and the loads stop at the row's end. Returns a bit per register holding a NaN when
/// `K::NAN_TO_SCALAR` (its columns are then to be recomputed).
///
/// # Safety
/// The columns must be interior (every column tap inside the row) and exist; `y` is the
/// output row; the operation's own pointers as it requires.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn blocks<S: Simd, K: WindowOp, const NB: usize, const ST: usize, const TAIL: bool>(
    k: &K,
    j: &RowJob,
    x0: usize,
    n: usize,
    y: *mut f32,
) -> u32 {
    let l = S::LANES;
    // SAFETY (the whole body): the caller's interior columns x0..x0 + n; register b covers
    // columns x0 + b·L.., of which n − b·L ≥ 1 exist, and reads from the row position of
    // its first column's tap, `at`, at most `w − at` floats (`TAIL`) or whole registers that
    // end before the next interior column's tap.
    unsafe {
        let mut acc = [k.init::<S>(); NB];
        let mut probe = [S::zero(); NB];
        for r in 0..j.rows.real() {
            let row = j.x.wrapping_add((j.rows.first + r * j.dh) * j.w);
            for kx in 0..j.kw {
                let wv = k.weight::<S>(j.rows.lo + r, kx);
                // interior: x0·s + kx·d − pad ≥ 0 and every lane inside the row
                let at = x0 * j.s + kx * j.dw - j.pad;
                for b in 0..NB {
                    let at = at + b * l * j.s;
                    let lanes = if TAIL { n - b * l } else { l };
                    let v = load_cols::<S, ST, TAIL>(row.wrapping_add(at), j.s, lanes, j.w - at);
                    acc[b] = K::tap::<S>(acc[b], wv, v);
                    if K::NAN_TO_SCALAR {
                        // NaN in, NaN out (or ∞ − ∞, or a float of the row past the
                        // windows: a needless but correct recompute)
                        probe[b] = S::add(probe[b], v);
                    }
                }
            }
        }
        let mut nan = 0;
        for (b, a) in acc.iter().enumerate() {
            let a = if ST == 2 { S::order_even(*a) } else { *a };
            let v = k.finish::<S>(a, j.rows);
            let p = y.wrapping_add(x0 + b * l);
            let lanes = n - b * l;
            if !TAIL || lanes >= l {
                S::store(p, v);
            } else {
                S::store_prefix(p, lanes, v);
            }
            if K::NAN_TO_SCALAR && S::any_nan(probe[b]) {
                nan |= 1 << b;
            }
        }
        nan
    }
}

/// The row driver of pooling and depthwise convolution: output planes `[begin, end)` of `y`
/// (`oh × ow` each), every row's border columns through `K::scalar`, its interior columns in
/// groups of four registers, the last group of one to four.
///
/// # Safety
/// `g` must be the node's geometry and `k` its operation over the node's values; `y` its
/// output.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn windows<S: Simd, K: WindowOp>(k: &mut K, g: &Window2d, y: *mut f32, begin: usize, end: usize) {
    let l = S::LANES;
    let ([_, w], [oh, ow]) = (g.input, g.output);
    let (s, dl) = (g.stride, g.dilation);
    let (row_taps, col_taps) = (AxisTaps::new(g, 0), AxisTaps::new(g, 1));
    let (lo, hi) = if strided_ok::<S>(s[1]) {
        (col_taps.lo, col_taps.hi)
    } else {
        (0, 0)
    };
    for plane in begin..end {
        let xp = k.plane(plane);
        let yp = y.wrapping_add(plane * oh * ow);
        for oy in 0..oh {
            let rows = row_taps.get(oy);
            let yrow = yp.wrapping_add(oy * ow);
            let scalar = |ox: usize| {
                // SAFETY: the plane's window (oy, ox) and its output element.
                unsafe { *yrow.add(ox) = k.scalar::<S>(xp, g, rows, col_taps.get(ox)) }
            };
            for ox in 0..lo {
                scalar(ox);
            }
            let j = RowJob {
                x: xp,
                w,
                rows,
                dh: dl[0],
                kw: g.kernel[1],
                s: s[1],
                dw: dl[1],
                pad: g.pad[1],
            };
            let mut x0 = lo;
            while x0 < hi {
                let n = (hi - x0).min(4 * l);
                let tail = hi - x0 <= 4 * l;
                // SAFETY: interior columns x0..x0 + n of this row, more after them unless
                // `tail`.
                let nan = unsafe {
                    macro_rules! go {
                        ($st:literal) => {
                            match (tail, n.div_ceil(l)) {
                                (false, _) => blocks::<S, K, 4, $st, false>(k, &j, x0, n, yrow),
                                (_, 1) => blocks::<S, K, 1, $st, true>(k, &j, x0, n, yrow),
                                (_, 2) => blocks::<S, K, 2, $st, true>(k, &j, x0, n, yrow),
                                (_, 3) => blocks::<S, K, 3, $st, true>(k, &j, x0, n, yrow),
                                _ => blocks::<S, K, 4, $st, true>(k, &j, x0, n, yrow),
                            }
                        };
                    }
                    match s[1] {
                        1 => go!(1),
                        2 => go!(2),
                        _ => go!(0),
                    }
                };
                // a NaN in a register's windows: its columns with the interpreter's rule
                let mut m = nan;
                while m != 0 {
                    let b = m.trailing_zeros() as usize;
                    for ox in x0 + b * l..(x0 + (b + 1) * l).min(x0 + n) {
                        scalar(ox);
                    }
                    m &= m - 1;
                }
                x0 += n;
            }
            for ox in hi.max(lo)..ow {
                scalar(ox);
            }
        }
    }
}

/// Windowed pooling: `MAX` for max pooling, else sums and averages (`kind`).
struct Pool<const MAX: bool> {
    x: *const f32,
    plane_len: usize,
    kind: u64,
    /// The kernel width: the column taps of an interior window.
    kw: usize,
}

#[cfg(target_arch = "x86_64")]
impl<const MAX: bool> WindowOp for Pool<MAX> {
    const NAN_TO_SCALAR: bool = MAX;

    #[inline(always)]
    fn plane(&mut self, p: usize) -> *const f32 {
        self.x.wrapping_add(p * self.plane_len)
    }
    #[inline(always)]
    unsafe fn init<S: Simd>(&self) -> S::V {
        // SAFETY: the caller runs on S's set.
        unsafe {
            if MAX {
                S::splat(f32::NEG_INFINITY)
            } else {
                S::zero()
            }
        }
    }
    #[inline(always)]
    unsafe fn weight<S: Simd>(&self, _: usize, _: usize) -> S::V {
        // SAFETY: as `init`.
        unsafe { S::zero() }
    }
    #[inline(always)]
    unsafe fn tap<S: Simd>(acc: S::V, _: S::V, v: S::V) -> S::V {
        // SAFETY: as `init`.
        unsafe {
            if MAX {
                // strictly greater replaces: the first maximum stays
                S::max(v, acc)
            } else {
                S::add(acc, v)
            }
        }
    }
    #[inline(always)]
    unsafe fn finish<S: Simd>(&self, acc: S::V, rows: WindowTaps) -> S::V {
        // every column tap is real (and inside the padded input): kw of them
        let count = match self.kind {
            POOL_AVG => rows.real(),
            POOL_AVG_WITH_PAD => rows.padded,
            _ => return acc,
        };
        // SAFETY: as `init`.
        unsafe { S::div(acc, S::splat((count * self.kw) as f32)) }
    }
    #[inline(always)]
    unsafe fn scalar<S: Simd>(&self, x: *const f32, g: &Window2d, rows: WindowTaps, cols: WindowTaps) -> f32 {
        // SAFETY: the window's taps lie in the plane.
        unsafe { window_scalar(x, g.input[1], rows, cols, g.dilation, self.kind) }
    }
}

/// Windowed pooling over the planes `[begin, end)`.
///
/// # Safety
/// `d` must describe a pooling node of a plan over `arena`, and the CPU must have `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool2d<S: Shift>(d: *const PoolDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let g = d.win.geometry();
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    let (x, y) = (at(arena, d.x).cast_const(), at(arena, d.y));
    let planes = d.planes as usize;
    let (plane_len, kw, kind) = (g.input[0] * g.input[1], g.kernel[1], d.kind);
    // SAFETY: forwarded from the caller.
    unsafe {
        if kind == POOL_MAX {
            pool_planes::<S, true>(
                Pool {
                    x,
                    plane_len,
                    kind,
                    kw,
                },
                &g,
                y,
                (begin, end, planes),
            );
        } else {
            pool_planes::<S, false>(
                Pool {
                    x,
                    plane_len,
                    kind,
                    kw,
                },
                &g,
                y,
                (begin, end, planes),
            );
        }
    }
}

/// Pooling of the planes `[begin, end)` of `planes` by the path that fits `g`: 2×2 windows
/// that tile the input ([`pool_tiles`]), sums and averages at stride 1 over flat planes on
/// AVX-512 ([`pool_flat`]), max pooling of other planes whose rows fit registers on AVX-512
/// ([`pool_small`]), max pooling 3 × 3 s2 of wider rows on AVX-512 ([`pool_wide`]), small
/// planes eight at a time ([`pool_channels`]), the ring of padded
/// rows ([`pool_ring`]) or the row driver ([`windows`]).
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `k` its planes and `y` its output.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_planes<S: Shift, const MAX: bool>(
    mut k: Pool<MAX>,
    g: &Window2d,
    y: *mut f32,
    (begin, end, planes): (usize, usize, usize),
) {
    // SAFETY: forwarded from the caller, with each path's geometry checked here.
    unsafe {
        if tiles_2x2(g) {
            return pool_tiles::<S, MAX>(&mut k, g, y, (begin, end, planes));
        }
        if !MAX
            && S::SHIFTS
            && let Some(fg) = FlatPlanes::cached(g, k.kind)
        {
            return pool_flat::<S, MAX>(&k, g, &fg, y, begin, end);
        }
        // (after the tiles: max 2 × 2 s2 on 512 × 14 × 14, VGG-11's last, 0.111 ms there and
        // 0.122 here)
        if MAX
            && S::SHIFTS
            && let Some(sg) = SmallPlanes::new::<S>(g)
        {
            return pool_small::<S, MAX>(&mut k, g, &sg, y, begin, end);
        }
        if MAX
            && S::SHIFTS
            && let Some(wg) = WidePlanes::new::<S>(g)
        {
            return pool_wide::<S, MAX>(&mut k, g, &wg, y, begin, end);
        }
        if let Some(cg) = block_geom::<S>(g, planes as u64) {
            return pool_channels::<S, MAX>(&mut k, g, cg, y, begin, end);
        }
        // a window of at most four taps without padding (2×2 s2) reads each input once from
        // the plane as it is, so the ring's row copy does not pay: avg 2×2 s2 on 128×56×56
        // 0.128 ms on the row driver, 0.139 on the ring; max on 64×56×56 0.067 on both (EPYC
        // Zen 3, AVX2, one thread, thread CPU time, fastest of 5 interleaved)
        let few_taps = g.kernel[0] * g.kernel[1] <= 4 && g.pad == [0; 4];
        match if few_taps { None } else { RingGeom::new::<S>(g) } {
            Some(rg) => pool_ring::<S, MAX>(&mut k, g, &rg, y, (begin, end, planes)),
            None => windows::<S, _>(&mut k, g, y, begin, end),
        }
    }
}

/// The most registers of output columns [`pool_wide`] takes (rows of up to 256 outputs at
/// AVX-512's sixteen lanes: the row maxima it keeps for the next output row stay on the stack).
const WIDE_REGS: usize = 16;

/// [`pool_wide`]'s geometry: for each register `r` of output columns, which of the `2·LANES
/// + 1` input columns from `2·LANES·r − left` its row maxima read lie in the row (`lo`, `hi`:
/// the two registers' lanes; `ext`: the one past them), and whether all do (`whole`).
struct WidePlanes {
    regs: usize,
    lo: [u16; WIDE_REGS],
    hi: [u16; WIDE_REGS],
    ext: [bool; WIDE_REGS],
    whole: [bool; WIDE_REGS],
}

impl WidePlanes {
    /// The geometry when `g` is a 3 × 3 window at stride 2 without dilation, padded by at
    /// most one row and column on each side, with output rows wider than a register (narrower
    /// ones take [`pool_small`] or the channel blocks) and at most [`WIDE_REGS`] registers,
    /// and every window with a real row and a real column; on sixteen lanes (AVX-512).
    fn new<S: Simd>(g: &Window2d) -> Option<WidePlanes> {
        let l = S::LANES;
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let fits = g.kernel == [3, 3]
            && g.stride == [2, 2]
            && g.dilation == [1, 1]
            && g.pad.iter().all(|&p| p <= 1)
            && l == 16
            && ow > l
            && ow <= WIDE_REGS * l
            && h > 0
            && w > 0;
        if !fits || (0..oh).any(|oy| g.taps(0, oy).real() == 0) || (0..ow).any(|ox| g.taps(1, ox).real() == 0)
        {
            return None;
        }
        let regs = ow.div_ceil(l);
        let mut wg = WidePlanes {
            regs,
            lo: [0; WIDE_REGS],
            hi: [0; WIDE_REGS],
            ext: [false; WIDE_REGS],
            whole: [false; WIDE_REGS],
        };
        let inside = |col: isize| col >= 0 && (col as usize) < w;
        for r in 0..regs {
            let base = (2 * l * r) as isize - g.pad[1] as isize;
            for t in 0..l {
                if inside(base + t as isize) {
                    wg.lo[r] |= 1 << t;
                }
                if inside(base + (l + t) as isize) {
                    wg.hi[r] |= 1 << t;
                }
            }
            wg.ext[r] = inside(base + 2 * l as isize);
            wg.whole[r] = wg.lo[r] == u16::MAX && wg.hi[r] == u16::MAX && wg.ext[r];
        }
        Some(wg)
    }
}

/// Max pooling 3 × 3 at stride 2 over planes with wide rows ([`WidePlanes`]), separably, with
/// no copy: each input row's maxima over the three columns of every window come from two
/// loads of 32 floats and one float past them (−∞ where a column is padding), split into the
/// even and odd columns in registers (the windows' first and second columns; the third is the
/// even ones moved by a lane); each output row is then the maximum of its three input rows'
/// maxima, the last of which the next output row takes again. The maximum replaces only when
/// strictly greater, the columns and then the rows in order: the first maximum in row-major
/// order, as the interpreter's scan finds it (the first maximum of the window lies in the
/// first row that holds the window's maximum, and is that row's first maximum). A plane
/// holding a NaN is computed again by the row driver. The ring's copy of every input row
/// into its even and odd columns cost nearly half of the ring's time. Measured on an Intel
/// Xeon (family 6 model 167; one thread, `kiln bench --profile`, ms, ring → here, two
/// alternations): alone, 64 × 112 × 112 padded by 1 (ResNet's) 0.149–0.153 → 0.134–0.140
/// (ONNX Runtime's NCHWc pool 0.142), 64 × 111 × 111 in ceil mode (SqueezeNet's) 0.162–0.166
/// → 0.129, 64 × 147 × 147 (Inception v3's) 0.296–0.302 → 0.242–0.244, 256 × 112 × 112
/// 0.738–0.745 → 0.574; in their networks SqueezeNet's three 0.195–0.202, 0.095 and 0.030 →
/// 0.152–0.160, 0.060 and 0.029, GoogLeNet's 0.26–0.31 and 0.16–0.19 → 0.204–0.207 and 0.110,
/// Inception v3's 0.525–0.541, 0.410–0.429 and 0.138–0.144 → 0.447–0.451, 0.313–0.326 and
/// 0.084–0.088.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `wg` from it, `k` its planes and `y` its output;
/// the CPU has AVX-512 ([`Shift::SHIFTS`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_wide<S: Shift, const MAX: bool>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    wg: &WidePlanes,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    let l = S::LANES;
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let (top, left) = (g.pad[0], g.pad[1]);
    // SAFETY (the whole body): the rows given to `wide_row_max` are input rows iy < h of the
    // plane; each store the output columns below ow of output row oy < oh of the plane.
    unsafe {
        let ninf = S::splat(f32::NEG_INFINITY);
        let mut prev = [ninf; WIDE_REGS];
        for plane in begin..end {
            let xp = k.plane(plane);
            let yp = y.wrapping_add(plane * oh * ow);
            let mut nan = false;
            for oy in 0..oh {
                // input rows 2·oy − top + 0, 1, 2 (wrapping below 0: past h, −∞)
                let iy = (2 * oy).wrapping_sub(top);
                // input row iy's columns from −left, or none past the plane (iy ≥ h)
                let at = |iy: usize| (iy < h).then(|| xp.wrapping_add(iy * w).wrapping_sub(left));
                let yrow = yp.add(oy * ow);
                for (r, p) in prev.iter_mut().enumerate().take(wg.regs) {
                    let a = if oy == 0 {
                        wide_row_max::<S>(wg, at(iy), r, &mut nan)
                    } else {
                        *p
                    };
                    let b = wide_row_max::<S>(wg, at(iy.wrapping_add(1)), r, &mut nan);
                    let c = wide_row_max::<S>(wg, at(iy.wrapping_add(2)), r, &mut nan);
                    *p = c;
                    let v = S::max(c, S::max(b, a));
                    let x = r * l;
                    if x + l <= ow {
                        S::store(yrow.add(x), v);
                    } else {
                        S::store_prefix(yrow.add(x), ow - x, v);
                    }
                }
            }
            if nan {
                windows::<S, _>(k, g, y, plane, plane + 1);
            }
        }
    }
}

/// [`pool_wide`]'s maxima over the windows' columns of register `r` of output columns in the
/// input row whose column −left is at `row` (−∞ for a row past the plane, `None`); sets `nan`
/// where the floats it reads hold a NaN.
///
/// # Safety
/// `row` (when `Some`) is a row of the plane from its column −left, whose columns inside the
/// row `wg` marks; the CPU has AVX-512.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn wide_row_max<S: Shift>(wg: &WidePlanes, row: Option<*const f32>, r: usize, nan: &mut bool) -> S::V {
    let l = S::LANES;
    // SAFETY: only the lanes `wg` marks inside the row are read (the caller's contract).
    unsafe {
        let ninf = S::splat(f32::NEG_INFINITY);
        let Some(row) = row else {
            return ninf;
        };
        let at = row.wrapping_add(2 * l * r);
        let (lo, hi, ext) = if wg.whole[r] {
            (S::load(at), S::load(at.add(l)), S::splat(*at.add(2 * l)))
        } else {
            (
                S::load_lanes(at, wg.lo[r], ninf),
                S::load_lanes(at.wrapping_add(l), wg.hi[r], ninf),
                if wg.ext[r] { S::splat(*at.add(2 * l)) } else { ninf },
            )
        };
        // (a branch never taken on real data: no chain through a probe register)
        if S::any_nan2(lo, hi) || S::any_nan(ext) {
            *nan = true;
        }
        let e = S::order_even(S::even_lanes(lo, hi));
        let o = S::order_even(S::odd_lanes(lo, hi));
        // the third column: the even columns a lane on, the float past them last
        let e2 = S::shift::<1>(e, ext);
        S::max(e2, S::max(o, e))
    }
}

/// The most input rows of a plane [`pool_small`] takes (its row maxima stay in registers on
/// the stack: 4 KiB at AVX-512's sixteen lanes).
const SMALL_ROWS: usize = 64;

/// The most kernel columns [`pool_small`] takes (it takes 2 × 2 and 3 × 3 windows).
const SMALL_KW: usize = 3;

/// [`pool_small`]'s geometry: `cols[kx]` holds, for output column `j`, the lane of the input
/// row (its `2·LANES` floats in two registers) that tap `kx` reads, or the last lane (past the
/// row's end: −∞) where that tap is padding.
struct SmallPlanes {
    cols: [[i32; BLOCK_MAX]; SMALL_KW],
    /// Whether `cols[kx]` reads lane `j` for every output column `j` (no permutation).
    same: [bool; SMALL_KW],
}

impl SmallPlanes {
    /// The geometry when `g`'s planes fit: output rows of at most `LANES` columns, input rows
    /// of fewer than `2·LANES` (a lane left for −∞), at most [`SMALL_ROWS`] rows, a 2 × 2 or
    /// 3 × 3 kernel, and every window with a real row and a real column.
    fn new<S: Simd>(g: &Window2d) -> Option<SmallPlanes> {
        let l = S::LANES;
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let square = matches!(g.kernel, [2, 2] | [3, 3]);
        let fits = square && ow <= l && w < 2 * l && h <= SMALL_ROWS && l <= BLOCK_MAX;
        if !fits || oh == 0 || ow == 0 || (0..oh).any(|oy| g.taps(0, oy).real() == 0) {
            return None;
        }
        let spare = (2 * l - 1) as i32;
        let mut cols = [[spare; BLOCK_MAX]; SMALL_KW];
        for j in 0..ow {
            let mut real = false;
            for (kx, c) in cols.iter_mut().enumerate().take(g.kernel[1]) {
                // the input column of tap kx, when it is one (left padding subtracted)
                let ix = (j * g.stride[1] + kx * g.dilation[1]).checked_sub(g.pad[1]);
                if let Some(ix) = ix.filter(|&ix| ix < w) {
                    c[j] = ix as i32;
                    real = true;
                }
            }
            if !real {
                return None;
            }
        }
        let same = cols.map(|c| (0..ow).all(|j| c[j] == j as i32));
        Some(SmallPlanes { cols, same })
    }
}

/// Max pooling of the planes `[begin, end)` whose rows fit registers ([`SmallPlanes`]): each
/// input row is loaded once into two registers (−∞ past its end), the maximum over the
/// kernel's columns taken with a lane permutation per tap, then each output row is the
/// maximum of its rows' maxima — the first maximum in row-major order, as the interpreter's
/// scan finds it. The ring's row copies and the channel blocks' transposes cost more than the
/// pooling itself on such planes: on an Intel Xeon (family 6 model 207; one thread, the pool
/// alone, ms, two alternations) max 3 × 3 s2 on 480 × 28 × 28 0.111–0.114 → 0.060–0.061, on
/// 256 × 27 × 27 0.054 → 0.025–0.027, 3 × 3 s1 on 512 × 14 × 14 0.047–0.049 → 0.037–0.042.
/// A plane holding a NaN (or both infinities: a needless recompute) is computed again by the
/// row driver.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `sg` from it, `k` its planes and `y` its output;
/// the CPU has AVX-512 ([`Shift::SHIFTS`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_small<S: Shift, const MAX: bool>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    sg: &SmallPlanes,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    // SAFETY: forwarded from the caller; `SmallPlanes::new` took only these kernels.
    unsafe {
        if g.kernel[0] == 3 {
            pool_small_k::<S, MAX, 3>(k, g, sg, y, begin, end)
        } else {
            pool_small_k::<S, MAX, 2>(k, g, sg, y, begin, end)
        }
    }
}

/// [`pool_small`] for a `K × K` kernel.
///
/// # Safety
/// As [`pool_small`], with `g.kernel == [K, K]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_small_k<S: Shift, const MAX: bool, const K: usize>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    sg: &SmallPlanes,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    let l = S::LANES;
    let ([h, w], [oh, ow]) = (g.input, g.output);
    let ([sh, _], [dh, _], top) = (g.stride, g.dilation, g.pad[0]);
    let (w_lo, w_hi) = (w.min(l), w.saturating_sub(l));
    // SAFETY (the whole body): input rows iy < h of each plane, `w` floats each (masked
    // loads); output rows oy < oh, `ow` floats each (masked stores); the row maxima at iy < h
    // ≤ SMALL_ROWS; the index rows hold `BLOCK_MAX ≥ LANES` lanes below 2·LANES.
    unsafe {
        let ninf = S::splat(f32::NEG_INFINITY);
        let cols: [S::V; K] = std::array::from_fn(|kx| S::load(sg.cols[kx].as_ptr().cast()));
        let mut rows = [ninf; SMALL_ROWS];
        for plane in begin..end {
            let xp = k.plane(plane);
            let yp = y.add(plane * oh * ow);
            let mut probe = S::zero();
            for (iy, row) in rows.iter_mut().enumerate().take(h) {
                let src = xp.add(iy * w);
                let lo = S::load_fill(src, w_lo, ninf);
                let hi = if w_hi > 0 {
                    S::load_fill(src.add(l), w_hi, ninf)
                } else {
                    ninf
                };
                // −∞ + −∞ past the row's end; a NaN (or +∞ + −∞) sends the plane to the driver
                probe = S::add(probe, S::add(lo, hi));
                let tap = |kx: usize| {
                    if sg.same[kx] {
                        lo
                    } else {
                        S::pick2(lo, hi, cols[kx])
                    }
                };
                let mut m = tap(0);
                for kx in 1..K {
                    m = S::max(tap(kx), m);
                }
                *row = m;
            }
            for oy in 0..oh {
                let mut acc = ninf;
                for ky in 0..K {
                    let iy = (oy * sh + ky * dh).wrapping_sub(top);
                    if iy < h {
                        acc = S::max(rows[iy], acc);
                    }
                }
                S::store_partial(yp.add(oy * ow), ow, acc);
            }
            if S::any_nan(probe) {
                windows::<S, _>(k, g, y, plane, plane + 1);
            }
        }
    }
}

/// The most output pixels of a plane [`pool_flat`] takes.
const FLAT_MAX: usize = 1296;

/// The most taps of a window [`pool_flat`] takes.
const FLAT_TAPS: usize = 25;

/// [`pool_flat`]'s geometry, the same for every plane: a register `r` of sixteen outputs
/// (flat indices `16·r..16·r + 16` of the output plane) reads tap `t` of each lane at `off[t]`
/// floats from the lane's own index in the input plane, the lanes of `masks[r·taps + t]`
/// (each a real input pixel of its output, whose index is inside the plane); `divisor[16·r +
/// j]` is output `16·r + j`'s divisor (1 for sums).
struct FlatPlanes {
    off: Vec<isize>,
    masks: Vec<u16>,
    divisor: Vec<f32>,
    regs: usize,
}

impl FlatPlanes {
    /// The geometry of a sum or an average whose taps are fixed offsets in the flat planes:
    /// stride 1 and output rows as wide as the input's (output `(oy, ox)`, at `oy·w + ox`,
    /// reads `(oy + ky·dh − top)·w + ox + kx·dw − left`: the same offset from its own index
    /// for every output), at most [`FLAT_MAX`] outputs per plane and [`FLAT_TAPS`] taps,
    /// where it pays: rows of at most sixteen outputs (which the channel blocks take
    /// otherwise, with their transposes), or wider rows where the ring's registers of a row
    /// (`⌈ow/16⌉` per row) are more than four thirds of the flat plane's (`⌈oh·ow/16⌉`).
    /// Measured on AVX-512 (an Intel Xeon, family 6 model 207; one thread, each pool alone,
    /// avg 3 × 3 s1 p1, ms, three alternations, before → flat): 768 × 17 × 17 0.21–0.23 →
    /// 0.120–0.122, 288 × 35 × 35 0.213 → 0.201, 96 × 20 × 20 0.030 → 0.027, 576 × 14 × 14
    /// 0.076 → 0.060, 512 × 13 × 13 0.064 → 0.045, 2048 × 8 × 8 0.073 → 0.064, 1024 × 7 × 7
    /// 0.039 → 0.034; where the ring's rows fill their registers it keeps them (256 × 28 × 28
    /// 0.115 → 0.120, 160 × 24 × 24 alike, 5 × 5 on 128 × 30 × 30 0.147 → 0.159). Each
    /// register's chain of adds, not the average's division, bounds the flat path
    /// ([`FLAT_GROUP`]); max pooling keeps its separable paths (max 3 × 3 s1 on 512 × 14 × 14
    /// 0.040 → 0.062 flat).
    fn new(g: &Window2d, kind: u64) -> Option<FlatPlanes> {
        const L: usize = 16;
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let ([kh, kw], [dh, dw]) = (g.kernel, g.dilation);
        let out_len = oh.checked_mul(ow)?;
        let taps = kh.checked_mul(kw)?;
        let sums = matches!(kind, POOL_SUM | POOL_AVG | POOL_AVG_WITH_PAD);
        if !sums
            || g.stride != [1, 1]
            || ow != w
            || out_len == 0
            || out_len > FLAT_MAX
            || h == 0
            || taps > FLAT_TAPS
        {
            return None;
        }
        let regs = out_len.div_ceil(L);
        if ow > L && regs * 4 >= oh * ow.div_ceil(L) * 3 {
            return None;
        }
        let signed = |v: usize| isize::try_from(v).ok();
        let mut off = Vec::with_capacity(taps);
        for ky in 0..kh {
            for kx in 0..kw {
                let dy = signed(ky.checked_mul(dh)?)? - signed(g.pad[0])?;
                let dx = signed(kx.checked_mul(dw)?)? - signed(g.pad[1])?;
                off.push(dy.checked_mul(signed(w)?)?.checked_add(dx)?);
            }
        }
        let mut masks = vec![0u16; regs * taps];
        let mut divisor = vec![1.0f32; regs * L];
        // the interpreter's divisor: real taps, or those inside the padded input
        let count = |t: WindowTaps| if kind == POOL_AVG { t.real() } else { t.padded };
        for oy in 0..oh {
            let ty = g.taps(0, oy);
            for ox in 0..ow {
                let tx = g.taps(1, ox);
                let i = oy * ow + ox;
                for ky in ty.lo..ty.hi {
                    for kx in tx.lo..tx.hi {
                        masks[i / L * taps + ky * kw + kx] |= 1 << (i % L);
                    }
                }
                if kind != POOL_SUM {
                    divisor[i] = (count(ty) * count(tx)) as f32;
                }
            }
        }
        Some(FlatPlanes {
            off,
            masks,
            divisor,
            regs,
        })
    }
}

/// The geometries [`FlatPlanes::cached`] keeps per thread.
const FLAT_CACHE: usize = 8;

/// A pooling's geometry, its kind, and its flat planes where it has some.
type FlatEntry = (Window2d, u64, Option<std::rc::Rc<FlatPlanes>>);

thread_local! {
    /// Each thread's flat planes of the last [`FLAT_CACHE`] pooling geometries it ran.
    static FLAT_PLANES: std::cell::RefCell<Vec<FlatEntry>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl FlatPlanes {
    /// [`FlatPlanes::new`], kept per thread for the last [`FLAT_CACHE`] geometries: a node's
    /// description is constant words in its code, which cannot hold the planes, and building
    /// them (a pass over every output's taps, three allocations) on every call took 3 % of
    /// an average pool's samples (768 × 17 × 17). Built afresh where the thread's cache
    /// cannot be reached (the thread ending).
    fn cached(g: &Window2d, kind: u64) -> Option<std::rc::Rc<FlatPlanes>> {
        let hit = FLAT_PLANES.try_with(|cache| {
            let mut cache = cache.try_borrow_mut().ok()?;
            if let Some(e) = cache.iter().find(|e| e.0 == *g && e.1 == kind) {
                return Some(e.2.clone());
            }
            let fg = FlatPlanes::new(g, kind).map(std::rc::Rc::new);
            if cache.len() >= FLAT_CACHE {
                cache.remove(0);
            }
            cache.push((*g, kind, fg.clone()));
            Some(fg)
        });
        match hit {
            Ok(Some(fg)) => fg,
            _ => FlatPlanes::new(g, kind).map(std::rc::Rc::new),
        }
    }
}

/// Sum and average pooling of the planes `[begin, end)` over the flat planes
/// ([`FlatPlanes`]; AVX-512): a register holds sixteen consecutive outputs of a plane,
/// whatever rows they fall in, and each tap is one load under the lanes' mask (0 in the
/// others) and one add, in row-major order from 0, as the ring takes them (the same bits,
/// the same division); no copy of the plane, no transposition, and no lanes past a row
/// wasted as on the ring's two registers for a row of 17 to 32.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `fg` from it, `k` its planes (a sum or an
/// average) and `y` its output; the CPU has AVX-512 ([`Shift::SHIFTS`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_flat<S: Shift, const MAX: bool>(
    k: &Pool<MAX>,
    g: &Window2d,
    fg: &FlatPlanes,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    let out_len = g.output[0] * g.output[1];
    let divide = k.kind != POOL_SUM;
    // SAFETY (the whole body): planes begin..end < the node's planes; each load reads only
    // its mask's lanes, each a real tap of its output, inside the input plane (the address
    // of the others computed with wrapping arithmetic and not read); the divisors of
    // `regs·LANES` outputs; outputs below out_len (the last register stored as a prefix).
    unsafe {
        for plane in begin..end {
            let xp = k.x.add(plane * k.plane_len);
            let yp = y.add(plane * out_len);
            let mut r = 0;
            while r + FLAT_GROUP <= fg.regs {
                flat_group::<S, FLAT_GROUP>(fg, xp, yp, r, out_len, divide);
                r += FLAT_GROUP;
            }
            while r < fg.regs {
                flat_group::<S, 1>(fg, xp, yp, r, out_len, divide);
                r += 1;
            }
        }
    }
}

/// The registers [`pool_flat`] sums side by side. Each register's sum is a chain of one add
/// per tap in the interpreter's order, and a register at a time ran at the chain's latency:
/// measured on an Intel Xeon (family 6 model 167; one thread, each pool alone, `kiln bench
/// --profile`, ms, alternated), avg 3 × 3 s1 p1 on 768 × 17 × 17 0.134–0.140 → 0.120–0.125,
/// 288 × 35 × 35 0.208–0.215 → 0.180–0.188 (two side by side 0.134–0.135 and 0.202, eight
/// 0.129 and 0.196–0.198). Dividing by Markstein's correction instead (`q = a·r`, then `q +
/// (a − q·n)·r`, exact for these counts) was slower (0.124 → 0.139): the division waits for
/// the chain, the correction lengthens it.
const FLAT_GROUP: usize = 4;

/// Registers `r..r + G` of [`pool_flat`]'s plane from `xp` into the output plane `yp`, their
/// sums side by side, each in the interpreter's order.
///
/// # Safety
/// As [`pool_flat`]: `r + G ≤ fg.regs`; `xp` and `yp` are a plane's input and output.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn flat_group<S: Shift, const G: usize>(
    fg: &FlatPlanes,
    xp: *const f32,
    yp: *mut f32,
    r: usize,
    out_len: usize,
    divide: bool,
) {
    let l = S::LANES;
    let taps = fg.off.len();
    // SAFETY: as `pool_flat`'s body: each load reads only its mask's lanes, each a real tap
    // of its output inside the input plane; masks and divisors of registers below `regs`;
    // outputs below out_len (the last register stored as a prefix).
    unsafe {
        let mut acc = [S::zero(); G];
        for (t, &o) in fg.off.iter().enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                let m = *fg.masks.get_unchecked((r + j) * taps + t);
                let at = xp.wrapping_add((r + j) * l).wrapping_offset(o);
                *a = S::add(*a, S::load_lanes(at, m, S::zero()));
            }
        }
        for (j, &a) in acc.iter().enumerate() {
            let i = (r + j) * l;
            let v = if divide {
                S::div(a, S::load(fg.divisor.as_ptr().add(i)))
            } else {
                a
            };
            let n = out_len - i;
            if n >= l {
                S::store(yp.add(i), v);
            } else {
                S::store_partial(yp.add(i), n, v);
            }
        }
    }
}

/// Whether `g` is a 2×2 window at stride 2 that tiles its input exactly (no padding, no
/// dilation, `h = 2·oh`, `w = 2·ow`): [`pool_tiles`]' shape.
fn tiles_2x2(g: &Window2d) -> bool {
    let ([h, w], [oh, ow]) = (g.input, g.output);
    g.kernel == [2, 2]
        && g.stride == [2, 2]
        && g.dilation == [1, 1]
        && g.pad == [0; 4]
        && oh > 0
        && ow > 0
        && oh.checked_mul(2) == Some(h)
        && ow.checked_mul(2) == Some(w)
}

/// The `LANES` outputs of a 2×2 s2 window whose input pairs are `t0, t1` (`2·LANES` floats of
/// the top row) and `b0, b1` (of the bottom row), in the interpreter's order: the maximum as a
/// tree of first maxima (each pair's, then the top's against the bottom's: the first maximum
/// of the four, as the row-major scan finds it, when none is NaN), sums tap by tap in
/// row-major order from +0, averages divided by 4. Returns the outputs and, with `MAX`, the
/// sum of the inputs (NaN when one is).
///
/// # Safety
/// The CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile_2x2<S: Shift, const MAX: bool>(
    t0: S::V,
    t1: S::V,
    b0: S::V,
    b1: S::V,
    avg: bool,
) -> (S::V, S::V) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let (te, to) = (S::even_lanes(t0, t1), S::odd_lanes(t0, t1));
        let (be, bo) = (S::even_lanes(b0, b1), S::odd_lanes(b0, b1));
        if MAX {
            // `max(v, acc)`: v only when strictly greater, so the earlier tap wins ties
            let v = S::max(S::max(bo, be), S::max(to, te));
            let probe = S::add(S::add(t0, t1), S::add(b0, b1));
            (S::order_even(v), probe)
        } else {
            let v = S::add(S::add(S::add(S::add(S::zero(), te), to), be), bo);
            let v = S::order_even(v);
            (if avg { S::div(v, S::splat(4.0)) } else { v }, S::zero())
        }
    }
}

/// 2×2 s2 pooling whose windows tile the input exactly ([`tiles_2x2`]), over the planes
/// `[begin, end)` of `planes`: each output row reads its two input rows as they are, a
/// register of outputs from two registers of each row ([`tile_2x2`]), with no border case.
/// A row of at least a register of outputs ends with a register that overlaps the one before
/// (some outputs computed twice, the same values); a narrower row reads whole registers past
/// its end (later input rows, up to the end of the node's input) and stores a whole register
/// over the next rows' outputs (stored after it) up to the end of this call's planes, past
/// which it reads and stores exactly. A max-pooling plane holding a NaN (or both infinities: a
/// needless recompute) is computed again by the row driver.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, with [`tiles_2x2`]; `k` its planes and `y` its
/// output; `begin ≤ end ≤ planes`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_tiles<S: Shift, const MAX: bool>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    y: *mut f32,
    (begin, end, planes): (usize, usize, usize),
) {
    let l = S::LANES;
    let ([_, w], [oh, ow]) = (g.input, g.output);
    let avg = matches!(k.kind, POOL_AVG | POOL_AVG_WITH_PAD);
    let out_len = oh * ow;
    // the end of the node's input (whole registers may be read up to it) and of this call's
    // output planes (a whole register may be stored up to it)
    let xend = k.x.wrapping_add(planes * k.plane_len) as usize;
    let yend = y.wrapping_add(end * out_len) as usize;
    for plane in begin..end {
        let xp = k.plane(plane);
        let yp = y.wrapping_add(plane * out_len);
        // SAFETY (the whole loop body): input rows 2·oy and 2·oy + 1 < h of the plane, read
        // at columns below w, or whole registers ending before `xend`; output row oy < oh at
        // columns below ow, or a whole register ending before `yend`.
        unsafe {
            let mut probe = S::zero();
            for oy in 0..oh {
                let top = xp.add(2 * oy * w);
                let bot = top.add(w);
                let yrow = yp.add(oy * ow);
                if ow >= l {
                    let mut c = 0;
                    loop {
                        let (t, b) = (top.add(2 * c), bot.add(2 * c));
                        let (v, p) = tile_2x2::<S, MAX>(
                            S::load(t),
                            S::load(t.add(l)),
                            S::load(b),
                            S::load(b.add(l)),
                            avg,
                        );
                        S::store(yrow.add(c), v);
                        if MAX {
                            probe = S::add(probe, p);
                        }
                        if c + l == ow {
                            break;
                        }
                        // the last register overlaps the one before when ow is no multiple
                        c = (c + l).min(ow - l);
                    }
                } else {
                    // w = 2·ow < 2·LANES floats per row
                    let (t0, t1, b0, b1) = if (xend - bot as usize) / 4 >= 2 * l {
                        (
                            S::load(top),
                            S::load(top.add(l)),
                            S::load(bot),
                            S::load(bot.add(l)),
                        )
                    } else {
                        (
                            S::load_partial(top, w.min(l)),
                            S::load_partial(top.add(l), w.saturating_sub(l)),
                            S::load_partial(bot, w.min(l)),
                            S::load_partial(bot.add(l), w.saturating_sub(l)),
                        )
                    };
                    let (v, p) = tile_2x2::<S, MAX>(t0, t1, b0, b1, avg);
                    if (yend - yrow as usize) / 4 >= l {
                        S::store(yrow, v);
                    } else {
                        S::store_prefix(yrow, ow, v);
                    }
                    if MAX {
                        probe = S::add(probe, p);
                    }
                }
            }
            if MAX && S::any_nan(probe) {
                windows::<S, _>(k, g, y, plane, plane + 1);
            }
        }
    }
}

/// Padded planes of at most this many pixels may take [`pool_channels`] and
/// [`depthwise_channels`] (their buffer holds a block of them: 512 KiB for eight).
const CHANNEL_PLANE_MAX: usize = 16384;

/// Output rows of at most this many columns may take [`pool_channels`] and
/// [`depthwise_channels`] at column strides other than 2: avg 3×3 s1 p1 on 192 × 28 × 28
/// 0.167 -> 0.116 ms, but on 64 × 56 × 56 0.141 -> 0.238 (EPYC Zen 3, AVX2, one thread, thread
/// CPU time). At column stride 2 rows of any width take them (the ring's split of each row
/// into its two column phases costs more): against the ring, one thread on an AMD EPYC Zen 1
/// (AVX2, thread CPU time), depthwise 3 × 3 s2 on 112 × 56 × 56 0.249 -> 0.146 ms and on
/// 64 × 112 × 112 0.561 -> 0.398, max 3 × 3 s2 on 64 × 112 × 112 0.448 -> 0.350 and on
/// 64 × 56 × 56 0.136 -> 0.084; and on narrow rows depthwise 3 × 3 on 544 × 7 × 7 0.113 ->
/// 0.045, on 272 × 14 × 14 0.129 -> 0.064, 5 × 5 on 672 × 14 × 14 0.515 -> 0.307 (3 × 3 s1 on
/// 64 × 56 × 56 and 32 × 112 × 112 as fast either way).
const CHANNEL_ROW_MAX: usize = 32;

/// Output rows of at most this many columns take [`pool_channels`] and [`depthwise_channels`]
/// on AVX-512 ([`block_geom`]); rows of 17 to 32 take the ring, where two of its registers
/// hold a row. Measured on an Intel Xeon (family 6 model 167; one thread, each kernel alone,
/// ms, blocks of eight → ring, twice each): avg 3 × 3 s1 p1 on 256 × 28 × 28 0.130–0.137 →
/// 0.100–0.107, max 3 × 3 s2 on 192 × 56 × 56 (27 wide) 0.150 → 0.135–0.137, depthwise 3 × 3
/// on 192 × 28 × 28 0.074–0.077 → 0.070–0.071, 5 × 5 on 72 × 28 × 28 0.044–0.046 →
/// 0.039–0.041, 3 × 3 s2 to 28 × 28 within 4 % either way; on 14 × 14 and 7 × 7 the blocks
/// win (avg 3 × 3 on 576 × 14 × 14 0.066 against 0.078, depthwise 5 × 5 on 480 × 14 × 14
/// 0.079 against 0.098, avg on 1024 × 7 × 7 0.029 against 0.070).
const AVX512_BLOCK_ROW_MAX: usize = 16;

/// The padded plane of [`pool_channels`]: `hp × wp` pixels, every tap of every window inside
/// (the padding, and in ceil mode the last windows' reach past it).
#[derive(Clone, Copy)]
struct ChannelGeom {
    hp: usize,
    wp: usize,
    /// The most outputs of a row [`channel_block`] computes at once: 4, or 8 where the set
    /// has the registers for eight chains ([`block_geom`]).
    group: usize,
}

/// Where [`pool_channels`] or [`depthwise_channels`] runs `g` over `planes` planes (`None`:
/// elsewhere): at least eight planes whose output
/// rows are narrow (the row driver's and the ring's per-row work dominates there: at most
/// `row_max` outputs, [`CHANNEL_ROW_MAX`] or [`WIDE_KERNEL_ROW_MAX`]) or at column stride 2, and whose padded planes hold at most
/// [`CHANNEL_PLANE_MAX`] pixels.
fn channels_geom(g: &Window2d, planes: u64, row_max: usize) -> Option<ChannelGeom> {
    let (h, w) = (g.input[0], g.input[1]);
    let ([oh, ow], [sh, sw]) = (g.output, g.stride);
    if planes < 8 || (ow > row_max && sw != 2) || h == 0 || w == 0 || oh == 0 || ow == 0 {
        return None;
    }
    let reach = |a: usize, o: usize, s: usize| -> Option<usize> {
        let ext = g.kernel[a]
            .checked_sub(1)?
            .checked_mul(g.dilation[a])?
            .checked_add(1)?;
        let last = (o - 1).checked_mul(s)?.checked_add(ext)?;
        let padded = g.input[a].checked_add(g.pad[a])?.checked_add(g.pad[a + 2])?;
        Some(last.max(padded))
    };
    let (hp, wp) = (reach(0, oh, sh)?, reach(1, ow, sw)?);
    hp.checked_mul(wp)
        .is_some_and(|n| n <= CHANNEL_PLANE_MAX)
        .then_some(ChannelGeom { hp, wp, group: 4 })
}

/// Where a kernel of set `S` runs `g` over `planes` planes a register's lanes at a time
/// ([`pool_channels`], [`depthwise_channels`]; eight planes on AVX2, sixteen on AVX-512):
/// [`channels_geom`], but on AVX-512 only for output rows of at most one register
/// ([`AVX512_BLOCK_ROW_MAX`]; wider ones up to [`CHANNEL_ROW_MAX`] where the ring does not
/// take them) or kernels of more than [`FIXED_TAPS`] taps at column stride 1 (rows up to
/// [`WIDE_KERNEL_ROW_MAX`]), not for wider rows, which its own 16-lane row paths run as fast or faster
/// (EPYC Zen 4, one thread, each kernel alone: EfficientNet-B0's 3 × 3 s2 depthwise with SiLU,
/// 96 × 112 × 112, 0.38 ms on the ring against 0.48 in blocks of eight; max 3 × 3 s2 on 64 ×
/// 112 × 112 alike).
///
/// On AVX-512 (32 registers: eight accumulators beside a 3 × 3 or 5 × 5 kernel's weights) at
/// column stride 1, eight outputs of a row at a time, eight FMA chains against the four that
/// half-fill two FMA pipes of four cycles' latency; at stride 2 the eight windows' 17 input
/// pixels of a row would not fit beside them, nor on AVX2 (16 registers) the weights (measured
/// on the EPYC Zen 4, one thread, each kernel alone, ms, four → eight: AVX-512 depthwise 3 × 3
/// on 192 × 28 × 28 0.059–0.060 → 0.056, 5 × 5 on 672 × 14 × 14 0.128–0.134 → 0.116–0.117,
/// but 3 × 3 s2 on 112 × 28 × 28 0.080–0.085 → 0.114–0.119 and avg 3 × 3 s2 on 24 × 28 × 28
/// 0.021 → 0.029–0.031; the AVX2 tier's own code max 3 × 3 s2 on 64 × 112 × 112 0.14 → 0.24,
/// depthwise 3 × 3 s2 0.22 → 0.37).
#[cfg(target_arch = "x86_64")]
fn block_geom<S: Shift>(g: &Window2d, planes: u64) -> Option<ChannelGeom> {
    let avx2 = S::LANES == 8;
    // a kernel of more taps than the ring's unrolled passes hold in registers, at column
    // stride 1
    let wide = !avx2 && g.kernel[0].saturating_mul(g.kernel[1]) > FIXED_TAPS && g.stride[1] == 1;
    let row_max = if wide {
        WIDE_KERNEL_ROW_MAX
    } else {
        CHANNEL_ROW_MAX
    };
    channels_geom(g, planes, row_max)
        .filter(|_| {
            avx2 || wide
                || g.output[1] <= AVX512_BLOCK_ROW_MAX
                || (g.output[1] <= CHANNEL_ROW_MAX && RingGeom::new::<S>(g).is_none())
        })
        .map(|cg| ChannelGeom {
            group: if avx2 || g.stride[1] != 1 { 4 } else { 8 },
            ..cg
        })
}

/// Output rows of at most this many columns take [`pool_channels`] and
/// [`depthwise_channels`] on AVX-512 for kernels of more than [`FIXED_TAPS`] taps at column
/// stride 1, which the
/// ring runs with a load per tap (`ring_pass_any`). Measured on an Intel Xeon (family 6 model
/// 167; one thread, each kernel alone with its bias and ReLU, ms, ring → blocks of sixteen,
/// twice each): depthwise 7 × 7 on 192 × 28 × 28 0.267–0.268 → 0.194–0.196, on 96 × 56 × 56
/// (ConvNeXt's) 0.534–0.546 → 0.404–0.405; where the ring holds the weights, blocks lose
/// wider than [`AVX512_BLOCK_ROW_MAX`] (3 × 3 on 192 × 28 × 28 0.063 → 0.071–0.072, 5 × 5 on
/// 40 × 56 × 56 0.097–0.100 → 0.106–0.109, avg 3 × 3 on 256 × 28 × 28 0.091–0.096 → 0.113–0.114),
/// and so do wide kernels at column stride 2 (7 × 7 s2 on 96 × 112 × 112 0.61–0.63 → 0.69):
/// those keep the ring; a 9 × 9 on 32 × 40 × 40 gains (0.124–0.126 → 0.089–0.091).
const WIDE_KERNEL_ROW_MAX: usize = 64;

/// The most planes of a channel block (AVX-512's sixteen lanes).
const BLOCK_MAX: usize = 16;

/// The parts of a channel block's buffer ([`channel_buf`]).
struct ChannelBuf {
    /// The block's padded planes, channel-interleaved: `hp × wp` registers.
    buf: *mut f32,
    /// The outputs, a register per output pixel (at least eight: they are transposed back
    /// eight at a time).
    obuf: *mut f32,
    /// Where input pixel (0, 0) lies in the padded planes.
    origin: *mut f32,
    /// The caller's `extra` floats after the outputs.
    extra: *mut f32,
}

/// Lays out a block of `C` planes' buffer for `g` (`cg` its [`channels_geom`]) in `lines`:
/// the padded planes, the outputs and `extra` floats, every float set to `pad` (the padding,
/// which no plane's copy overwrites).
fn channel_buf(
    lines: &mut Vec<crate::gemm::Line>,
    g: &Window2d,
    cg: ChannelGeom,
    [c, extra]: [usize; 2],
    pad: f32,
) -> ChannelBuf {
    const C: usize = 8;
    let planes = cg.hp * cg.wp * c;
    let outs = (g.output[0] * g.output[1]).max(C) * c;
    let buf = crate::gemm::floats(lines, planes + outs + extra);
    buf.fill(pad);
    let buf = buf.as_mut_ptr();
    ChannelBuf {
        buf,
        obuf: buf.wrapping_add(planes),
        origin: buf.wrapping_add((g.pad[0] * cg.wp + g.pad[1]) * c),
        extra: buf.wrapping_add(planes + outs),
    }
}

thread_local! {
    /// Each thread's block of planes, channel-interleaved, for [`pool_channels`] and
    /// [`depthwise_channels`].
    static CHANNEL_BLOCK: std::cell::Cell<Vec<crate::gemm::Line>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Pooling over small planes a register's lanes at a time, as if the channels were blocked
/// by the lanes: the planes are transposed in registers (8 × 8 blocks, [`channels_in`]) into
/// a padded buffer where a register holds the same pixel of the block's planes (the padding
/// −∞ for the maximum, +0 for sums, as in [`pool_ring`]), every window tap is then one load
/// and one maximum or add for a register of outputs, with no border case or mask; the outputs, computed in order into the buffer after
/// the planes, are transposed back eight at a time and stored. Each output takes its taps in
/// row-major order (a padding tap changes nothing: see [`pool_ring`]) and the interpreter's
/// divisor, so its bits are the interpreter's, but for
/// a max-pooling NaN: a block of planes holding one (or both infinities, a needless recompute)
/// is computed again by the row driver. A block at the end of `[begin, end)` with fewer
/// planes than lanes repeats its last plane in the other lanes and stores only its own; a plane (or
/// output plane) of fewer than eight floats is loaded (stored) exactly, a larger one's last
/// eight pixels overlap the eight before them.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `cg` its [`channels_geom`]; `k` its planes and
/// `y` its output; `begin ≤ end ≤` the node's planes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_channels<S: Shift, const MAX: bool>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    cg: ChannelGeom,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    let c_lanes = S::LANES;
    let ([_, w], [oh, ow]) = (g.input, g.output);
    let wp = cg.wp;
    let kind = k.kind;
    let padv = if MAX { f32::NEG_INFINITY } else { 0.0 };
    let (plane_len, out_len) = (k.plane_len, oh * ow);
    // each output row's and column's count of the interpreter's divisor
    let count = |t: WindowTaps| if kind == POOL_AVG { t.real() } else { t.padded };
    let avg = matches!(kind, POOL_AVG | POOL_AVG_WITH_PAD);
    // each output's divisor, in output order (averages)
    let mut divisor: Vec<f32> = Vec::new();
    if avg {
        let col_count: Vec<usize> = (0..ow).map(|o| count(g.taps(1, o))).collect();
        for oy in 0..oh {
            let rc = count(g.taps(0, oy));
            divisor.extend(col_count.iter().map(|&cc| (rc * cc) as f32));
        }
    }
    let taps = channel_taps(g, wp, c_lanes);
    let mut lines = CHANNEL_BLOCK.take();
    let ChannelBuf {
        buf, obuf, origin, ..
    } = channel_buf(&mut lines, g, cg, [c_lanes, 0], padv);
    let mut p0 = begin;
    while p0 < end {
        let n = (end - p0).min(c_lanes);
        // SAFETY (the whole loop body): planes p0..p0 + n of the input and the output (lanes
        // past n read plane p0 + n − 1 again and are not stored); pixels below plane_len, or
        // exactly plane_len of them, each stored at its place inside the padded plane; output
        // pixels below out_len, or exactly out_len; taps inside the hp × wp buffer
        // (`channels_geom`).
        unsafe {
            let mut src = [k.x; BLOCK_MAX];
            for (c, s) in src.iter_mut().enumerate().take(c_lanes) {
                *s = k.x.add((p0 + c.min(n - 1)) * plane_len);
            }
            let probe = channels_in::<MAX>(&src[..c_lanes], plane_len, w, wp, origin);
            // every output of the block's planes, interleaved, in output order
            channel_block::<S, _>(&PoolTaps::<MAX>, g, &taps, buf, obuf, [wp, cg.group]);
            if avg {
                for (o, &dv) in divisor.iter().enumerate() {
                    let p = obuf.add(o * c_lanes);
                    S::store(p, S::div(S::load(p), S::splat(dv)));
                }
            }
            channels_out(obuf, c_lanes, out_len, y.add(p0 * out_len), n);
            if MAX && Avx2::any_nan(probe) {
                windows::<S, _>(k, g, y, p0, p0 + n);
            }
        }
        p0 += n;
    }
    CHANNEL_BLOCK.set(lines);
}

/// Copies the planes of `plane_len` floats (rows of `w`) at `src` (a multiple of eight of
/// them, `C`), transposed eight by eight ([`Avx2::load_transposed8`]) into a padded buffer of
/// rows of `wp` pixels of `C` floats whose input pixel (0, 0) is at `origin`, so that the
/// `C` floats of a pixel hold that pixel of the `C` planes. Rows of at least eight floats go
/// eight pixels at a time, a row's last eight overlapping the eight before them; narrower
/// rows go eight pixels of the plane at a time (the plane's last eight overlapping, a plane
/// of fewer than eight floats loaded exactly). Returns, with `PROBE`, the sum of every input
/// (NaN when one is).
///
/// # Safety
/// `plane_len` floats at each `src` (`w` dividing it), and every pixel of the `plane_len / w`
/// rows of `w` from `origin` inside the buffer; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels_in<const PROBE: bool>(
    src: &[*const f32],
    plane_len: usize,
    w: usize,
    wp: usize,
    origin: *mut f32,
) -> <Avx2 as Simd>::V {
    const E: usize = 8;
    let c_lanes = src.len();
    // SAFETY (the whole body): pixels below plane_len, each stored at its place in the
    // padded buffer; eight planes of the `C` at a time.
    unsafe {
        let mut probe = Avx2::zero();
        let eight =
            |h: usize, at: usize| -> [*const f32; E] { std::array::from_fn(|i| src[h * E + i].add(at)) };
        if w >= E {
            for iy in 0..plane_len / w {
                let mut x = 0;
                loop {
                    for h in 0..c_lanes / E {
                        let r = Avx2::load_transposed8(eight(h, iy * w + x));
                        let dst = origin.add((iy * wp + x) * c_lanes + h * E);
                        if PROBE {
                            probe = Avx2::add(probe, sum8(&r));
                        }
                        for (j, v) in r.into_iter().enumerate() {
                            Avx2::store(dst.add(j * c_lanes), v);
                        }
                    }
                    if x + E == w {
                        break;
                    }
                    x = (x + E).min(w - E);
                }
            }
            return probe;
        }
        let mut i = 0;
        while i < plane_len {
            let at = if plane_len >= E { i.min(plane_len - E) } else { 0 };
            for h in 0..c_lanes / E {
                let r = if plane_len >= E {
                    Avx2::load_transposed8(eight(h, at))
                } else {
                    let mut r = [Avx2::zero(); E];
                    for (v, s) in r.iter_mut().zip(eight(h, 0)) {
                        *v = Avx2::load_partial(s, plane_len);
                    }
                    Avx2::transpose8(&mut r);
                    r
                };
                if PROBE {
                    probe = Avx2::add(probe, sum8(&r));
                }
                let (mut iy, mut ix) = (at / w, at % w);
                for v in r.into_iter().take(plane_len.min(E)) {
                    Avx2::store(origin.add((iy * wp + ix) * c_lanes + h * E), v);
                    ix += 1;
                    if ix == w {
                        ix = 0;
                        iy += 1;
                    }
                }
            }
            i = at + E;
        }
        probe
    }
}

/// The sum of eight registers as a tree (NaN when one holds a NaN).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn sum8(r: &[<Avx2 as Simd>::V; 8]) -> <Avx2 as Simd>::V {
    // SAFETY: forwarded from the caller.
    unsafe {
        let a = Avx2::add(Avx2::add(r[0], r[1]), Avx2::add(r[2], r[3]));
        let b = Avx2::add(Avx2::add(r[4], r[5]), Avx2::add(r[6], r[7]));
        Avx2::add(a, b)
    }
}

/// Stores the first `n` of `c_lanes` (a multiple of eight) channel-interleaved output planes
/// of `out_len` pixels at `obuf` (`c_lanes` floats per pixel, at least eight pixels) as the
/// planes `y`, `y + out_len`, …, transposed back eight planes by eight pixels at a time
/// ([`Avx2::load_transposed8`]; a plane of fewer than eight floats is stored exactly, a
/// larger one's last eight overlap the eight before them).
///
/// # Safety
/// `max(out_len, 8)·c_lanes` floats at `obuf`, `n·out_len` floats at `y`, `n ≤ c_lanes`; the
/// CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channels_out(obuf: *const f32, c_lanes: usize, out_len: usize, y: *mut f32, n: usize) {
    const E: usize = 8;
    let mut o = 0;
    // SAFETY (the whole loop): output pixels below out_len, or exactly out_len of them;
    // planes below n.
    unsafe {
        while o < out_len {
            let at = if out_len >= E { o.min(out_len - E) } else { 0 };
            for h in 0..n.div_ceil(E) {
                let r = Avx2::load_transposed8(std::array::from_fn(|j| obuf.add((at + j) * c_lanes + h * E)));
                for (c, v) in r.into_iter().enumerate().take(n - h * E) {
                    let dst = y.add((h * E + c) * out_len + at);
                    if out_len >= E {
                        Avx2::store(dst, v);
                    } else {
                        Avx2::store_prefix(dst, out_len, v);
                    }
                }
            }
            o = at + E;
        }
    }
}

/// Windowed pooling over the ring of padded input rows ([`RingGeom`], as depthwise
/// convolution's): every output column, border ones included, in whole registers, a pass of
/// [`PASS_ROWS`] output rows loading each padded row once per column tap for every output row
/// it feeds. The padding holds the value that changes nothing: −∞ for the maximum (a tap
/// replaces the maximum only when strictly greater), +0 for sums (a sum that starts at +0 is
/// never −0, and `a + 0 = a` for every other `a`, ∞ and NaN included). Each output takes its
/// taps in row-major order, the interpreter's, so the maximum is the first maximum and the
/// sums add in the interpreter's order: the same bits. Averages divide by the interpreter's
/// count, the product of the row and column counts of the window (real or padded taps). A
/// plane of max pooling whose input holds a NaN (or both infinities, a needless recompute) is
/// computed again by the row driver, which follows the interpreter's NaN rule.
///
/// # Safety
/// As [`pool2d`]: `g` is the node's geometry, `rg` its ring, `k` its planes and `y` its output.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_ring<S: Shift, const MAX: bool>(
    k: &mut Pool<MAX>,
    g: &Window2d,
    rg: &RingGeom,
    y: *mut f32,
    (begin, end, planes): (usize, usize, usize),
) {
    let l = S::LANES;
    let padv = if MAX { f32::NEG_INFINITY } else { 0.0 };
    let kind = k.kind;
    let avg = matches!(kind, POOL_AVG | POOL_AVG_WITH_PAD);
    let (row_taps, col_taps) = (AxisTaps::new(g, 0), AxisTaps::new(g, 1));
    let count = |t: WindowTaps| if kind == POOL_AVG { t.real() } else { t.padded };
    // the divisors of averages: a row of them (a register per column register) for each
    // distinct row count (at most kh + 1 of them, kh ≤ 32 on the ring: no larger than the
    // ring), and which row each output row takes
    let mut div: Vec<f32> = Vec::new();
    let mut div_row: Vec<usize> = Vec::new();
    if avg {
        let cols: Vec<usize> = (0..g.output[1]).map(|ox| count(col_taps.get(ox))).collect();
        let mut counts: Vec<usize> = Vec::new();
        for oy in 0..g.output[0] {
            let rc = count(row_taps.get(oy));
            let i = counts.iter().position(|&c| c == rc).unwrap_or_else(|| {
                counts.push(rc);
                div.extend(cols.iter().map(|&c| (rc * c) as f32));
                div.resize(counts.len() * rg.regs * l, 1.0);
                counts.len() - 1
            });
            div_row.push(i * rg.regs * l);
        }
    }
    // the buffer is taken out of the thread-local for the call (see `depthwise`)
    let mut lines = PADDED.take();
    let buf = crate::gemm::floats(&mut lines, rg.len);
    buf.fill(padv);
    let bp = buf.as_mut_ptr();
    let zero = bp.wrapping_add(rg.slots * rg.slot).cast_const();
    let most = if l >= 16 { 4 } else { 2 };
    // a register's spill past its row's end lands on later rows of the plane, which are
    // stored after it, when a pass stores whole rows at once
    let spill = rg.regs <= most;
    // the end of the node's input (whole registers may be read up to it) and of this call's
    // output planes (a register past its row's end may spill up to it)
    let xend = k.x.wrapping_add(planes * k.plane_len);
    let yend = y.wrapping_add(end * rg.oh * rg.ow);
    let fixed = match (g.kernel, rg.sh, rg.dh) {
        ([2, 2], 2, 1) => 2,
        ([3, 3], 1 | 2, 1) => 3,
        _ => 0,
    };
    let mut rows = [zero; SPAN_MAX];
    for plane in begin..end {
        let xp = k.plane(plane);
        let yp = y.wrapping_add(plane * rg.oh * rg.ow);
        // SAFETY (the whole loop body): row copies of input rows iy < h of the plane into
        // their slots; each pass reads the rows its span covers, every one a slot of the ring
        // or the padding slot, at columns inside the slot (`RingGeom::new`), and stores the
        // output rows below oh, in the plane.
        unsafe {
            let mut probe = S::zero();
            let mut next = 0;
            let mut oy = 0;
            while oy < rg.oh {
                let first = oy * rg.sh;
                let last = (first + rg.span).saturating_sub(rg.top).min(rg.h);
                while next < last {
                    probe = pool_copy::<S, MAX>(rg, xp, bp, next, padv, probe, xend);
                    next += 1;
                }
                for (j, r) in rows.iter_mut().enumerate().take(rg.span) {
                    let iy = (first + j).wrapping_sub(rg.top);
                    *r = if iy < rg.h {
                        bp.add((iy & (rg.slots - 1)) * rg.slot)
                    } else {
                        zero
                    };
                }
                let mut dv = [std::ptr::null(); PASS_ROWS];
                if avg {
                    for (r, d) in dv.iter_mut().enumerate().take(rg.oh - oy) {
                        *d = div.as_ptr().add(div_row[oy + r]);
                    }
                }
                let st = PoolStore {
                    rg,
                    oy,
                    y: yp,
                    div: dv,
                    spill,
                    yend,
                };
                let mut r0 = 0;
                while r0 < rg.regs {
                    let nb = (rg.regs - r0).min(most);
                    let c0 = r0 * l;
                    macro_rules! go {
                        ($nb:literal) => {{
                            let a = match (fixed, rg.sh) {
                                (2, _) => pool_pass::<S, $nb, 2, 2, 2, MAX>(rg, &rows, c0),
                                (3, 1) => pool_pass::<S, $nb, 3, 3, 1, MAX>(rg, &rows, c0),
                                (3, _) => pool_pass::<S, $nb, 3, 3, 2, MAX>(rg, &rows, c0),
                                _ => pool_pass_any::<S, $nb, MAX>(rg, &rows, c0),
                            };
                            pool_store::<S, $nb>(&st, &a, c0);
                        }};
                    }
                    match nb {
                        4 => go!(4),
                        3 => go!(3),
                        2 => go!(2),
                        _ => go!(1),
                    }
                    r0 += nb;
                }
                oy += PASS_ROWS;
            }
            if MAX && S::any_nan(probe) {
                windows::<S, _>(k, g, y, plane, plane + 1);
            }
        }
    }
    PADDED.set(lines);
}

/// Copies input row `iy < h` of the plane `x` into its slot of the ring `bp` as
/// [`ring_copy`] does, with `padv` in the lanes past the row's end; returns `probe` plus the
/// row's floats (with `MAX`: a NaN in the row makes it NaN). Whole registers are read where
/// they end before `xend`, the end of the node's input.
///
/// # Safety
/// As [`pool_ring`], with `iy < h` and `x` a plane of the input that ends at `xend`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_copy<S: Shift, const MAX: bool>(
    rg: &RingGeom,
    x: *const f32,
    bp: *mut f32,
    iy: usize,
    padv: f32,
    probe: S::V,
    xend: *const f32,
) -> S::V {
    let (l, w) = (S::LANES, rg.w);
    let mut probe = probe;
    // SAFETY (the whole body): floats i < w of input row iy; the slot's registers from
    // `copy_at`, which `RingGeom::new` sized for whole registers of the row (or half-row).
    unsafe {
        let idx = S::load(LANE_INDEX.as_ptr());
        let pv = S::splat(padv);
        let src = x.add(iy * w);
        let dst = bp.add((iy & (rg.slots - 1)) * rg.slot);
        if rg.sw == 1 {
            let d = dst.add(rg.copy_at[0]);
            let mut i = 0;
            while i + l <= w {
                let v = S::load(src.add(i));
                if MAX {
                    probe = S::add(probe, v);
                }
                S::store(d.add(i), v);
                i += l;
            }
            if i < w {
                let v = tail_load::<S>(src, i, w, xend);
                let n = S::splat((w - i) as f32);
                if MAX {
                    probe = S::add(probe, S::select_lt(idx, n, v, S::zero()));
                }
                S::store(d.add(i), S::select_lt(idx, n, v, pv));
            }
        } else {
            let (d0, d1) = (dst.add(rg.copy_at[0]), dst.add(rg.copy_at[1]));
            // the even input columns fill ⌈w/2⌉ places of their phase, the odd ones ⌊w/2⌋
            let (n0, n1) = (w.div_ceil(2), w / 2);
            let mut t = 0;
            // whole registers of the row: one load each, split in registers
            while 2 * t + 2 * l <= w {
                let (a, b) = (S::load(src.add(2 * t)), S::load(src.add(2 * t + l)));
                if MAX {
                    probe = S::add(probe, S::add(a, b));
                }
                S::store(d0.add(t), S::order_even(S::even_lanes(a, b)));
                S::store(d1.add(t), S::order_even(S::odd_lanes(a, b)));
                t += l;
            }
            if t < n0 {
                let (a, b) = (
                    tail_load::<S>(src, 2 * t, w, xend),
                    tail_load::<S>(src, 2 * t + l, w, xend),
                );
                let ev = S::order_even(S::even_lanes(a, b));
                let od = S::order_even(S::odd_lanes(a, b));
                let (m0, m1) = (S::splat((n0 - t) as f32), S::splat(n1.saturating_sub(t) as f32));
                if MAX {
                    let z = S::zero();
                    probe = S::add(
                        probe,
                        S::add(S::select_lt(idx, m0, ev, z), S::select_lt(idx, m1, od, z)),
                    );
                }
                S::store(d0.add(t), S::select_lt(idx, m0, ev, pv));
                S::store(d1.add(t), S::select_lt(idx, m1, od, pv));
            }
        }
    }
    probe
}

/// A register from float `i` of the row `src` of `w` floats, whose lanes past the row's end
/// are any floats: a whole register where one is readable before `xend` (the end of the
/// node's input), else the floats up to the row's end and zeros (zeros when `i ≥ w`).
///
/// # Safety
/// `w` floats at `src`, all before `xend`, which ends what may be read; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tail_load<S: Simd>(src: *const f32, i: usize, w: usize, xend: *const f32) -> S::V {
    // SAFETY: floats i..i + LANES when they end before `xend`, else i..min(i + LANES, w).
    unsafe {
        if i >= w {
            S::zero()
        } else if (xend as usize - src as usize) / 4 >= i + S::LANES {
            S::load(src.add(i))
        } else {
            S::load_partial(src.add(i), w - i)
        }
    }
}

/// `0, 1, …, 15`: the lane indices as floats.
static LANE_INDEX: [f32; 16] = [
    0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
];

/// The pooling of tap value `v` into `acc`: the maximum (strictly greater replaces: the first
/// maximum stays) or the sum.
///
/// # Safety
/// The CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_op<S: Simd, const MAX: bool>(acc: S::V, v: S::V) -> S::V {
    // SAFETY: forwarded from the caller.
    unsafe { if MAX { S::max(v, acc) } else { S::add(acc, v) } }
}

/// `NB` registers of columns from `c0` of the [`PASS_ROWS`] output rows of a pass, for a
/// `KH × KW` pooling window at row stride `SH` and no row dilation: each padded row of the
/// pass is loaded once per column tap and feeds every output row it is a tap of; each output
/// takes its taps in row-major order.
///
/// # Safety
/// As [`pool_ring`]; `rows` holds the pass's `span` padded rows, `c0 + NB·LANES ≤
/// regs·LANES`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_pass<
    S: Simd,
    const NB: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const MAX: bool,
>(
    rg: &RingGeom,
    rows: &[*const f32; SPAN_MAX],
    c0: usize,
) -> [[S::V; NB]; PASS_ROWS] {
    let l = S::LANES;
    let mut taps = [0usize; KW];
    for (kx, t) in taps.iter_mut().enumerate() {
        *t = rg.tap(kx) + c0;
    }
    // SAFETY (the whole body): rows j < (PASS_ROWS − 1)·SH + KH = span of the pass, columns
    // inside their slots.
    unsafe {
        let init = if MAX {
            S::splat(f32::NEG_INFINITY)
        } else {
            S::zero()
        };
        let mut acc = [[init; NB]; PASS_ROWS];
        for (j, &row) in rows.iter().enumerate().take((PASS_ROWS - 1) * SH + KH) {
            for &t in &taps {
                let p = row.add(t);
                let mut v = [S::zero(); NB];
                for (b, v) in v.iter_mut().enumerate() {
                    *v = S::load(p.add(b * l));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ky = j.wrapping_sub(r * SH);
                    if ky < KH {
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = pool_op::<S, MAX>(*a, v);
                        }
                    }
                }
            }
        }
        acc
    }
}

/// As [`pool_pass`], for any window, stride and dilation: one load per tap, row and register.
///
/// # Safety
/// As [`pool_pass`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_pass_any<S: Simd, const NB: usize, const MAX: bool>(
    rg: &RingGeom,
    rows: &[*const f32; SPAN_MAX],
    c0: usize,
) -> [[S::V; NB]; PASS_ROWS] {
    let l = S::LANES;
    // SAFETY (the whole body): rows r·sh + ky·dh < span, columns inside their slots.
    unsafe {
        let init = if MAX {
            S::splat(f32::NEG_INFINITY)
        } else {
            S::zero()
        };
        let mut acc = [[init; NB]; PASS_ROWS];
        for (r, acc) in acc.iter_mut().enumerate() {
            for ky in 0..rg.kh {
                let row = rows[r * rg.sh + ky * rg.dh];
                for kx in 0..rg.kw {
                    let p = row.add(rg.tap(kx) + c0);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = pool_op::<S, MAX>(*a, S::load(p.add(b * l)));
                    }
                }
            }
        }
        acc
    }
}

/// Where a pass of [`pool_ring`] stores: the output plane `y`, the pass's first row `oy`, the
/// divisors of each of its rows' columns (averages) or null, and whether a register may be
/// stored whole past its row's end (`spill`: the floats past it are later rows of the plane,
/// stored after it).
struct PoolStore<'a> {
    rg: &'a RingGeom,
    oy: usize,
    y: *mut f32,
    div: [*const f32; PASS_ROWS],
    spill: bool,
    /// The end of this call's output planes.
    yend: *mut f32,
}

/// The stores of a pass: the rows below `oh`, the columns below `ow` (or, with `spill`, whole
/// registers that end inside the plane), each divided by its divisor when there are some.
///
/// # Safety
/// As [`pool_ring`]; `div`, when not null, holds `regs·LANES` floats.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn pool_store<S: Simd, const NB: usize>(st: &PoolStore, acc: &[[S::V; NB]; PASS_ROWS], c0: usize) {
    let l = S::LANES;
    let (oh, ow) = (st.rg.oh, st.rg.ow);
    // SAFETY (the whole body): output rows oy + r < oh, columns col.. below ow, or whole
    // registers ending inside the plane with `spill`; divisors col.. < regs·L.
    unsafe {
        for (r, row) in acc.iter().enumerate() {
            let oy = st.oy + r;
            if oy >= oh {
                break;
            }
            let yrow = st.y.add(oy * ow);
            for (b, a) in row.iter().enumerate() {
                let col = c0 + b * l;
                if col >= ow {
                    break;
                }
                let v = if st.div[r].is_null() {
                    *a
                } else {
                    S::div(*a, S::load(st.div[r].add(col)))
                };
                if col + l <= ow || (st.spill && (st.yend as usize - yrow as usize) / 4 >= col + l) {
                    S::store(yrow.add(col), v);
                } else {
                    S::store_prefix(yrow.add(col), ow - col, v);
                }
            }
        }
    }
}

/// Depthwise convolution (one input channel per group) with its bias and activation.
struct Depthwise {
    x: *const f32,
    w: *const f32,
    /// The bias, or null.
    bias: *const f32,
    plane_len: usize,
    cin: usize,
    cout: usize,
    cog: usize,
    /// `kh·kw` and `kw`.
    taps: usize,
    kw: usize,
    act: u64,
    a: f32,
    b: f32,
    /// The current plane's kernel and bias.
    k: *const f32,
    b0: f32,
}

#[cfg(target_arch = "x86_64")]
impl WindowOp for Depthwise {
    const NAN_TO_SCALAR: bool = false;

    #[inline(always)]
    fn plane(&mut self, p: usize) -> *const f32 {
        let (n, o) = (p / self.cout, p % self.cout);
        self.k = self.w.wrapping_add(o * self.taps);
        self.b0 = if self.bias.is_null() {
            0.0
        } else {
            // SAFETY: one bias per output channel.
            unsafe { *self.bias.add(o) }
        };
        self.x
            .wrapping_add((n * self.cin + o / self.cog) * self.plane_len)
    }
    #[inline(always)]
    unsafe fn init<S: Simd>(&self) -> S::V {
        // SAFETY: the caller runs on S's set.
        unsafe { S::splat(self.b0) }
    }
    #[inline(always)]
    unsafe fn weight<S: Simd>(&self, ky: usize, kx: usize) -> S::V {
        // SAFETY: tap (ky, kx) of the plane's kernel.
        unsafe { S::splat(*self.k.add(ky * self.kw + kx)) }
    }
    #[inline(always)]
    unsafe fn tap<S: Simd>(acc: S::V, w: S::V, v: S::V) -> S::V {
        // SAFETY: as `init`.
        unsafe { S::fma(v, w, acc) }
    }
    #[inline(always)]
    unsafe fn finish<S: Simd>(&self, acc: S::V, _: WindowTaps) -> S::V {
        // SAFETY: as `init`.
        unsafe { crate::elementwise_kernels::activate::<S>(self.act, self.a, self.b, acc) }
    }
    #[inline(always)]
    unsafe fn scalar<S: Simd>(&self, x: *const f32, g: &Window2d, rows: WindowTaps, cols: WindowTaps) -> f32 {
        let (w, dl) = (g.input[1], g.dilation);
        let mut acc = self.b0;
        for r in 0..rows.real() {
            let ih = rows.first + r * dl[0];
            for c in 0..cols.real() {
                let iw = cols.first + c * dl[1];
                // SAFETY: real taps lie inside the plane; tap (lo + r, lo + c) of the kernel.
                unsafe {
                    let x = *x.add(ih * w + iw);
                    let k = *self.k.add((rows.lo + r) * self.kw + cols.lo + c);
                    acc = x.mul_add(k, acc);
                }
            }
        }
        // the activation of the vector path, on a register holding this output (a scalar
        // form would round differently for sigmoid, tanh and erf)
        let mut lanes = [0.0f32; 16];
        // SAFETY: as `init`; `lanes` holds a whole register (at most 16 floats).
        unsafe {
            let v = crate::elementwise_kernels::activate::<S>(self.act, self.a, self.b, S::splat(acc));
            S::store(lanes.as_mut_ptr(), v);
        }
        lanes[0]
    }
}

/// Depthwise convolution over the output planes `[begin, end)` (`n·cout` of them).
///
/// # Safety
/// As [`pool2d`], for a depthwise convolution.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn depthwise<S: Shift>(d: *const DepthwiseDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let g = d.win.geometry();
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    if d.cog == 0 || d.cout == 0 {
        return;
    }
    let mut k = Depthwise {
        x: at(arena, d.x).cast_const(),
        w: at(arena, d.w).cast_const(),
        bias: if d.bias == NO_BIAS {
            std::ptr::null()
        } else {
            at(arena, d.bias).cast_const()
        },
        plane_len: g.input[0] * g.input[1],
        cin: d.cin as usize,
        cout: d.cout as usize,
        cog: d.cog as usize,
        taps: g.kernel[0] * g.kernel[1],
        kw: g.kernel[1],
        act: d.act,
        a: f32::from_bits(d.a as u32),
        b: f32::from_bits(d.b as u32),
        k: std::ptr::null(),
        b0: 0.0,
    };
    let y = at(arena, d.y);
    if let Some(cg) = block_geom::<S>(&g, d.planes) {
        // SAFETY: forwarded from the caller, with the path's geometry checked.
        return unsafe { depthwise_channels::<S>(&mut k, &g, cg, y, begin, end) };
    }
    let Some(rg) = RingGeom::new::<S>(&g) else {
        // SAFETY: forwarded from the caller.
        return unsafe { windows::<S, _>(&mut k, &g, y, begin, end) };
    };
    // the buffer is taken out of the thread-local for the call (no closure: a closure would
    // not inherit the entry point's target features, and every vector operation in it would
    // become a call) and put back after
    let mut lines = PADDED.take();
    let buf = crate::gemm::floats(&mut lines, rg.len);
    // the padding: zeros that no row copy overwrites (each writes the same places of its slot)
    buf.fill(0.0);
    // an activation of many operations goes over each finished plane (in L1 or L2) four
    // registers at a time, as the standalone kernel does, rather than a register at a time
    // in the passes' stores: SiLU after a 3 × 3 on 32 × 112 × 112 took 0.33 ms there, the
    // standalone SiLU 0.21 (EPYC Zen 3, one thread)
    let act = k.act;
    let late = crate::elementwise_kernels::is_long(act);
    for plane in begin..end {
        let xp = k.plane(plane);
        // SAFETY: the plane's kernel has `taps` weights.
        let finite = unsafe { std::slice::from_raw_parts(k.k, k.taps) }
            .iter()
            .all(|w| w.is_finite());
        if finite {
            let yp = y.wrapping_add(plane * rg.oh * rg.ow);
            if late {
                k.act = crate::elementwise_kernels::NONE;
            }
            // SAFETY: `xp` is the plane's input (`h·w` floats), `buf` holds `rg.len` floats,
            // the output plane is `oh·ow` floats at `yp`, its place in `y`.
            unsafe {
                depthwise_ring::<S>(&k, &rg, xp, buf, yp);
                if late {
                    k.act = act;
                    crate::elementwise_kernels::activate_n::<S>(act, k.a, k.b, yp, yp, rg.oh * rg.ow);
                }
            }
        } else {
            // a non-finite weight times a padding zero would be NaN where the interpreter
            // skips the tap: this plane takes the row driver
            // SAFETY: forwarded from the caller.
            unsafe { windows::<S, _>(&mut k, &g, y, plane, plane + 1) }
        }
    }
    PADDED.set(lines);
}

/// Depthwise convolution over small planes a register's lanes at a time, as [`pool_channels`]
/// pools them: the planes transposed into a zero-padded buffer where a register holds the
/// same pixel of the block's planes ([`channels_in`]), their kernels tap-major beside it (a
/// register of the block's weights per tap), each output of the block then one load and one
/// FMA per tap from its bias, taps in row-major order as in [`depthwise_ring`] (a padding
/// zero times a finite weight adds ±0, which changes no sum), four outputs of a row at a
/// time (four chains of FMAs; eight at column stride 1 on AVX-512, [`block_geom`]),
/// activated and transposed back ([`channels_out`]). A block of planes with a non-finite
/// weight takes the row driver (its padded taps must be skipped); a last block of fewer
/// planes than lanes repeats its last plane in the other lanes and stores only its own.
///
/// # Safety
/// As [`depthwise`]: `g` is the node's geometry, `cg` its [`channels_geom`]; `k` its planes
/// and `y` its output; `begin ≤ end ≤` the node's planes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn depthwise_channels<S: Shift>(
    k: &mut Depthwise,
    g: &Window2d,
    cg: ChannelGeom,
    y: *mut f32,
    begin: usize,
    end: usize,
) {
    let c_lanes = S::LANES;
    let ([_, w], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
    let wp = cg.wp;
    let (plane_len, out_len, ntaps) = (k.plane_len, oh * ow, kh * kw);
    let taps = channel_taps(g, wp, c_lanes);
    let mut lines = CHANNEL_BLOCK.take();
    // after the outputs: the kernels tap-major, then the biases
    let ChannelBuf {
        buf,
        obuf,
        origin,
        extra: wbuf,
    } = channel_buf(&mut lines, g, cg, [c_lanes, (ntaps + 1) * c_lanes], 0.0);
    let bbuf = wbuf.wrapping_add(ntaps * c_lanes);
    let mut p0 = begin;
    while p0 < end {
        let n = (end - p0).min(c_lanes);
        // SAFETY (the whole loop body): planes p0..p0 + n of the input and the output (lanes
        // past n read plane p0 + n − 1 again and are not stored) and their kernels and biases;
        // the buffer's parts as sized above; taps inside the hp × wp padded plane
        // (`channels_geom`); output pixels below out_len.
        unsafe {
            let mut src = [k.x; BLOCK_MAX];
            let mut kern = [k.w; BLOCK_MAX];
            // output plane p0 + c is channel o of image i (a division per block, not per plane)
            let (mut i, mut o) = (p0 / k.cout, p0 % k.cout);
            for (c, (s, kp)) in src.iter_mut().zip(&mut kern).enumerate().take(c_lanes) {
                if c > 0 && c < n {
                    o += 1;
                    if o == k.cout {
                        (i, o) = (i + 1, 0);
                    }
                }
                let ci = if k.cog == 1 { o } else { o / k.cog };
                *s = k.x.add((i * k.cin + ci) * plane_len);
                *kp = k.w.add(o * ntaps);
                *bbuf.add(c) = if k.bias.is_null() { 0.0 } else { *k.bias.add(o) };
            }
            let finite = block_weights(&kern[..c_lanes], ntaps, wbuf);
            if !finite {
                windows::<S, _>(k, g, y, p0, p0 + n);
                p0 += n;
                continue;
            }
            channels_in::<false>(&src[..c_lanes], plane_len, w, wp, origin);
            let mut op = DepthwiseTaps::<S> {
                bias: S::load(bbuf),
                wv: [S::zero(); FIXED_TAPS],
                wbuf,
            };
            for (t, v) in op.wv.iter_mut().enumerate().take(ntaps) {
                *v = S::load(wbuf.add(t * c_lanes));
            }
            channel_block::<S, _>(&op, g, &taps, buf, obuf, [wp, cg.group]);
            let len = out_len * c_lanes;
            // (in place, through a pointer LLVM cannot see is `obuf`: where it can, it turns a
            // blend of the loaded register, as leaky ReLU's, into a masked store, `vmaskmovps`,
            // microcoded on AMD: a 3 × 3 s2 depthwise on 24 × 112 × 112 with its leaky ReLU
            // took 0.13–0.17 ms against 0.09–0.10 without)
            let src = std::hint::black_box(obuf).cast_const();
            crate::elementwise_kernels::activate_n::<S>(k.act, k.a, k.b, src, obuf, len);
            channels_out(obuf, c_lanes, out_len, y.add(p0 * out_len), n);
        }
        p0 += n;
    }
    CHANNEL_BLOCK.set(lines);
}

/// Lays out the kernels of `ntaps` floats at `kern` (one per plane of a block of a multiple
/// of eight) tap-major at `wbuf`, a register of the block's weights per tap, transposed eight
/// planes by eight taps at a time where there are eight taps (the last eight overlapping the
/// eight before them; a loop of single floats, which LLVM made into scatters, took a sixth of
/// a 5 × 5 depthwise on 576 × 7 × 7). Returns whether every weight is finite.
///
/// # Safety
/// `ntaps` floats at each `kern`, `ntaps·kern.len()` at `wbuf`; the CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block_weights(kern: &[*const f32], ntaps: usize, wbuf: *mut f32) -> bool {
    const E: usize = 8;
    let c_lanes = kern.len();
    // SAFETY (the whole body): taps below ntaps of each kernel, stored inside wbuf.
    unsafe {
        if ntaps < E {
            let mut finite = true;
            for (c, kp) in kern.iter().enumerate() {
                for t in 0..ntaps {
                    let v = *kp.add(t);
                    finite &= v.is_finite();
                    *wbuf.add(t * c_lanes + c) = v;
                }
            }
            return finite;
        }
        // v − v is NaN for ±∞ and NaN, else 0: the sum of them is NaN where one is not finite
        let mut probe = Avx2::zero();
        for h in 0..c_lanes / E {
            let mut t0 = 0;
            loop {
                let r = Avx2::load_transposed8(std::array::from_fn(|i| kern[h * E + i].add(t0)));
                for (j, v) in r.into_iter().enumerate() {
                    probe = Avx2::add(probe, Avx2::sub(v, v));
                    Avx2::store(wbuf.add((t0 + j) * c_lanes + h * E), v);
                }
                if t0 + E == ntaps {
                    break;
                }
                t0 = (t0 + E).min(ntaps - E);
            }
        }
        !Avx2::any_nan(probe)
    }
}

/// The taps of a window of `g` over a channel block's padded planes (rows of `wp` pixels of
/// `c` floats), in row-major order: their offsets in floats from the window's first pixel.
fn channel_taps(g: &Window2d, wp: usize, c: usize) -> Vec<usize> {
    let ([kh, kw], [dh, dw]) = (g.kernel, g.dilation);
    (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| (ky * dh * wp + kx * dw) * c))
        .collect()
}

/// What a channel block's outputs do per tap ([`channel_block`]): a window's accumulator
/// starts at `init` and takes tap `t` (row-major) of input `v` by `tap`.
#[cfg(target_arch = "x86_64")]
trait ChannelTap<S: Simd> {
    /// # Safety
    /// The CPU has `S`'s set.
    unsafe fn init(&self) -> S::V;
    /// # Safety
    /// The CPU has `S`'s set; `t` is a tap of the window.
    unsafe fn tap(&self, acc: S::V, v: S::V, t: usize) -> S::V;
}

/// Pooling's taps: the maximum (the earlier tap wins ties) or the sum.
#[cfg(target_arch = "x86_64")]
struct PoolTaps<const MAX: bool>;

#[cfg(target_arch = "x86_64")]
impl<S: Simd, const MAX: bool> ChannelTap<S> for PoolTaps<MAX> {
    #[inline(always)]
    unsafe fn init(&self) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { S::splat(if MAX { f32::NEG_INFINITY } else { 0.0 }) }
    }
    #[inline(always)]
    unsafe fn tap(&self, acc: S::V, v: S::V, _: usize) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { pool_op::<S, MAX>(acc, v) }
    }
}

/// A depthwise convolution's taps over a block of channels: the biases, then an FMA by each
/// tap's register of the block's weights (in registers up to [`FIXED_TAPS`] taps, else
/// loaded from `wbuf`, a register per tap).
#[cfg(target_arch = "x86_64")]
struct DepthwiseTaps<S: Simd> {
    bias: S::V,
    wv: [S::V; FIXED_TAPS],
    wbuf: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl<S: Simd> ChannelTap<S> for DepthwiseTaps<S> {
    #[inline(always)]
    unsafe fn init(&self) -> S::V {
        self.bias
    }
    #[inline(always)]
    unsafe fn tap(&self, acc: S::V, v: S::V, t: usize) -> S::V {
        // SAFETY: forwarded from the caller; tap t's register of weights.
        unsafe {
            let w = if t < FIXED_TAPS {
                self.wv[t]
            } else {
                S::load(self.wbuf.add(t * S::LANES))
            };
            S::fma(v, w, acc)
        }
    }
}

/// The outputs of a block of channel-interleaved planes, a register's lanes ([`pool_channels`],
/// [`depthwise_channels`]): the padded planes at `buf` (rows of `wp` pixels), the outputs
/// stored at `obuf` in output order, `taps` the offsets of a window's taps from its first
/// pixel. Eight outputs of a row at a time where `group` is 8 and eight are left, else up
/// to four (independent chains: [`block_geom`]); square 3×3 and 5×5
/// windows without column dilation at column strides 1 and 2 load each input pixel of a
/// window row once for all the outputs it feeds ([`channel_pixels_fixed`]).
///
/// # Safety
/// The padded planes hold every tap of every window of `g` (`channels_geom`), `obuf` room for
/// `oh·ow` registers; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_block<S: Simd, T: ChannelTap<S>>(
    op: &T,
    g: &Window2d,
    taps: &[usize],
    buf: *const f32,
    obuf: *mut f32,
    [wp, group]: [usize; 2],
) {
    let c_lanes = S::LANES;
    let ([oh, ow], [kh, kw], [sh, sw]) = (g.output, g.kernel, g.stride);
    let row = g.dilation[0] * wp * c_lanes;
    let fixed = if kh == kw && g.dilation[1] == 1 && sw <= 2 && matches!(kh, 3 | 5) {
        kh * sw
    } else {
        0
    };
    let step = sw * c_lanes;
    let mut out = obuf;
    // SAFETY (the whole body): forwarded from the caller.
    unsafe {
        for oy in 0..oh {
            let base = buf.add(oy * sh * wp * c_lanes);
            let mut ox = 0;
            while ox < ow {
                let nb = if group >= 8 && ow - ox >= 8 {
                    8
                } else {
                    (ow - ox).min(4)
                };
                let b = base.add(ox * step);
                macro_rules! go {
                    ($nb:literal) => {
                        match fixed {
                            3 => channel_pixels_fixed::<S, T, $nb, 3, 1>(op, b, row, out),
                            6 => channel_pixels_fixed::<S, T, $nb, 3, 2>(op, b, row, out),
                            5 => channel_pixels_fixed::<S, T, $nb, 5, 1>(op, b, row, out),
                            10 => channel_pixels_fixed::<S, T, $nb, 5, 2>(op, b, row, out),
                            _ => channel_pixels::<S, T, $nb>(op, b, step, taps, out),
                        }
                    };
                }
                match nb {
                    8 => go!(8),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                out = out.add(nb * c_lanes);
                ox += nb;
            }
        }
    }
}

/// `NB` consecutive outputs of a row of [`channel_block`], windows `step` floats apart from
/// `base`, each taking its taps in order.
///
/// # Safety
/// As [`channel_block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_pixels<S: Simd, T: ChannelTap<S>, const NB: usize>(
    op: &T,
    base: *const f32,
    step: usize,
    taps: &[usize],
    out: *mut f32,
) {
    // SAFETY (the whole body): forwarded from the caller.
    unsafe {
        let mut acc = [op.init(); NB];
        for (t, &off) in taps.iter().enumerate() {
            for (b, a) in acc.iter_mut().enumerate() {
                *a = op.tap(*a, S::load(base.add(off + b * step)), t);
            }
        }
        for (b, a) in acc.into_iter().enumerate() {
            S::store(out.add(b * S::LANES), a);
        }
    }
}

/// As [`channel_pixels`] for a `K × K` window at column stride `SW` (no column dilation),
/// window rows `row` floats apart: each input pixel of a window row is loaded once and feeds
/// every output whose window holds it, in the order that keeps each output's taps row-major.
///
/// # Safety
/// As [`channel_block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn channel_pixels_fixed<
    S: Simd,
    T: ChannelTap<S>,
    const NB: usize,
    const K: usize,
    const SW: usize,
>(
    op: &T,
    base: *const f32,
    row: usize,
    out: *mut f32,
) {
    // SAFETY (the whole body): forwarded from the caller; pixel i < (NB − 1)·SW + K of a
    // window row is a tap of output (i − kx) / SW.
    unsafe {
        let mut acc = [op.init(); NB];
        for ky in 0..K {
            let r = base.add(ky * row);
            for i in 0..(NB - 1) * SW + K {
                let v = S::load(r.add(i * S::LANES));
                for kx in 0..K {
                    if i >= kx && (i - kx) % SW == 0 && (i - kx) / SW < NB {
                        let b = (i - kx) / SW;
                        acc[b] = op.tap(acc[b], v, ky * K + kx);
                    }
                }
            }
        }
        for (b, a) in acc.into_iter().enumerate() {
            S::store(out.add(b * S::LANES), a);
        }
    }
}

thread_local! {
    /// Each thread's ring of zero-padded input rows of a depthwise convolution.
    static PADDED: std::cell::Cell<Vec<crate::gemm::Line>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Output rows a pass of the ring path computes at once (the last pass's rows past the plane
/// are computed from zero rows and not stored).
const PASS_ROWS: usize = 4;

/// The most padded rows a pass may read, `(PASS_ROWS − 1)·sh + (kh − 1)·dh + 1`; more take
/// the row driver.
const SPAN_MAX: usize = 32;

/// The most floats the ring may take (16 MiB); larger rings take the row driver.
const RING_MAX: usize = 1 << 22;

/// The kernels with their own unrolled pass (square, undilated along rows), weights held in
/// registers: at most this many taps.
const FIXED_TAPS: usize = 25;

/// The ring of zero-padded input rows a depthwise convolution reads, one plane at a time.
/// Each input row is copied once, as the passes reach it, into a slot of the ring, at a place of the slot that makes every output column's taps whole registers
/// at fixed offsets; padded rows above and below the input are the zero slot after the ring,
/// which nothing writes. At a column stride of 2 the row is copied split into its two column
/// phases (the even and the odd padded columns, each a contiguous half-row of the slot), so
/// that the taps of an output register are one load each, as at stride 1. Every place of a
/// slot that no copy writes is zero, and so is every lane a copy writes past the row's end.
#[derive(Clone, Copy)]
struct RingGeom {
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    top: usize,
    /// Output registers per row.
    regs: usize,
    /// Floats per slot: `sw` phases of `pitch` floats (a multiple of `LANES`) each.
    slot: usize,
    /// Slots of the ring (the zero slot is one more, after them): a power of two no smaller
    /// than the rows a pass reads (row `iy` is in slot `iy & (slots − 1)`).
    slots: usize,
    /// Padded rows a pass reads.
    span: usize,
    /// Where in a slot padded column 0 (stride 1), or index 0 of each phase (stride 2: phase
    /// `q` holds padded columns `2i + q` at `phase_at[q] + i`), lies.
    phase_at: [usize; 2],
    /// Where in a slot the copy puts input column 0 (stride 1), or the even and the odd input
    /// columns' first (stride 2); each a multiple of `LANES`, so the copy's stores are aligned.
    copy_at: [usize; 2],
    /// The ring's floats, the zero slot included.
    len: usize,
}

impl RingGeom {
    /// `None` where the row driver is to run: column strides other than 1 and 2, a kernel
    /// larger than the input or a padding as large as the kernel, or sizes past [`SPAN_MAX`]
    /// and [`RING_MAX`] (or overflowing).
    #[cfg(target_arch = "x86_64")]
    fn new<S: Shift>(g: &Window2d) -> Option<RingGeom> {
        let l = S::LANES;
        let ([h, w], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
        let ([sh, sw], [dh, dw]) = (g.stride, g.dilation);
        if oh == 0 || ow == 0 || kh == 0 || kw == 0 || !(1..=2).contains(&sw) {
            return None;
        }
        // the padded taps must be few against the real ones (the ring path computes every
        // tap, where the row driver skips those in the padding): a kernel no larger than the
        // input, and paddings shorter than the kernel, on each axis
        for a in 0..2 {
            let ext = (g.kernel[a] - 1).checked_mul(g.dilation[a])?.checked_add(1)?;
            if ext > g.input[a] || g.pad_begin(a) >= ext || g.pad_end(a) >= ext {
                return None;
            }
        }
        let span = (PASS_ROWS - 1)
            .checked_mul(sh)?
            .checked_add((kh - 1).checked_mul(dh)?)?
            .checked_add(1)?;
        if span > SPAN_MAX {
            return None;
        }
        let regs = ow.div_ceil(l);
        let left = g.pad[1];
        // one past the last index of a phase a register's tap reads, from its phase's start
        let reach = regs.checked_mul(l)?.checked_add((kw - 1).checked_mul(dw)? / sw)?;
        let round = |v: usize| v.checked_next_multiple_of(l);
        let (pitch, phase_at, copy_at) = if S::SHIFTS {
            // every phase aligned, a register more for the shifts' second operand
            let reach = reach.checked_add(l)?;
            if sw == 1 {
                (round(reach.max(left.checked_add(round(w)?)?))?, [0, 0], [left, 0])
            } else {
                let half = round(w.div_ceil(2))?;
                let at = [0, 1].map(|e| ((e + left) & 1, (e + left) >> 1));
                let pitch = round(reach.max(at[0].1 + half).max(at[1].1 + half))?;
                (
                    pitch,
                    [0, pitch],
                    [at[0].0 * pitch + at[0].1, at[1].0 * pitch + at[1].1],
                )
            }
        } else if sw == 1 {
            let base = (l - left % l) % l;
            let at = base + left;
            let pitch = round(reach.checked_add(base)?.max(at.checked_add(round(w)?)?))?;
            (pitch, [base, 0], [at, 0])
        } else {
            // input column 2t + e is padded column 2t + e + left: phase (e + left) & 1, index
            // t + (e + left) / 2; each phase starts where those indices are aligned
            let mut base = [0; 2];
            let mut at = [(0, 0); 2];
            for (e, at) in at.iter_mut().enumerate() {
                let (q, o) = ((e + left) & 1, (e + left) >> 1);
                base[q] = (l - o % l) % l;
                *at = (q, base[q] + o);
            }
            let half = round(w.div_ceil(2))?;
            let mut pitch = reach.checked_add(base[0].max(base[1]))?;
            for (_, a) in at {
                pitch = pitch.max(a.checked_add(half)?);
            }
            let pitch = round(pitch)?;
            (
                pitch,
                [base[0], pitch + base[1]],
                [at[0].0 * pitch + at[0].1, at[1].0 * pitch + at[1].1],
            )
        };
        let slot = pitch.checked_mul(sw)?;
        let slots = span.checked_next_power_of_two()?;
        let len = slots.checked_add(1)?.checked_mul(slot)?;
        (len <= RING_MAX).then_some(RingGeom {
            h,
            w,
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            top: g.pad[0],
            regs,
            slot,
            slots,
            span,
            phase_at,
            copy_at,
            len,
        })
    }

    /// Where in a slot column tap `kx` of output column 0 lies.
    #[inline(always)]
    fn tap(&self, kx: usize) -> usize {
        let j = kx * self.dw;
        if self.sw == 1 {
            self.phase_at[0] + j
        } else {
            self.phase_at[j & 1] + (j >> 1)
        }
    }
}

/// One output plane of a depthwise convolution over the ring of zero-padded input rows
/// ([`RingGeom`]): passes of [`PASS_ROWS`] output rows, each copying the input rows it reaches
/// first, then computing its rows in groups of up to four registers of columns (AVX2: two),
/// every tap one load and one FMA per register, with no border case and no masked load. Real
/// zeros stand for the taps the interpreter skips: with finite weights they add ±0, which
/// leaves every sum as it is. The 3×3 and 5×5 kernels load each input row once per pass for
/// all the output rows it feeds.
///
/// # Safety
/// `k` is set to this plane (`Depthwise::plane`) and its weights are finite; `x` is its input
/// plane (`h·w` floats), `buf` holds `rg.len` floats, zero wherever no row copy writes, `y` is
/// the output plane (`oh·ow` floats); the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn depthwise_ring<S: Shift>(
    k: &Depthwise,
    rg: &RingGeom,
    x: *const f32,
    buf: &mut [f32],
    y: *mut f32,
) {
    let l = S::LANES;
    let bp = buf.as_mut_ptr();
    let zero = bp.wrapping_add(rg.slots * rg.slot).cast_const();
    let fixed = if rg.kh == rg.kw && rg.dh == 1 && rg.sh <= 2 && matches!(rg.kh, 3 | 5) {
        rg.kh
    } else {
        0
    };
    // SAFETY (the whole body): the kernel's kh·kw weights; row copies of input rows iy < h
    // into their slots; each pass reads the rows its span covers, every one a slot of the
    // ring or the zero slot, at columns inside the slot (`RingGeom::new`), and stores the
    // output rows below oh.
    unsafe {
        let mut wv = [S::zero(); FIXED_TAPS];
        if fixed != 0 {
            for (i, v) in wv.iter_mut().enumerate().take(fixed * fixed) {
                *v = S::splat(*k.k.add(i));
            }
        }
        let mut next = 0;
        let mut oy = 0;
        // (set once: a fresh array per pass is stored as whole vector registers that the
        // pointer loads right after cannot be forwarded from)
        let mut rows = [zero; SPAN_MAX];
        while oy < rg.oh {
            let first = oy * rg.sh;
            let end = (first + rg.span).saturating_sub(rg.top).min(rg.h);
            while next < end {
                ring_copy::<S>(rg, x, bp, next);
                next += 1;
            }
            for (j, r) in rows.iter_mut().enumerate().take(rg.span) {
                let iy = (first + j).wrapping_sub(rg.top);
                *r = if iy < rg.h {
                    bp.add((iy & (rg.slots - 1)) * rg.slot)
                } else {
                    zero
                };
            }
            let most = if l >= 16 { 4 } else { 2 };
            // the shifted taps: aligned loads, each tap's columns a shift of two of them
            let shifts = S::SHIFTS && rg.dw == 1 && rg.sw == rg.sh;
            let shifts2 = S::SHIFTS && rg.dw == 1 && rg.sw == 2 && rg.sh == 1;
            let mut r0 = 0;
            while r0 < rg.regs {
                let nb = (rg.regs - r0).min(most);
                let c0 = r0 * l;
                macro_rules! go {
                    ($nb:literal) => {
                        match (fixed, rg.sh) {
                            (3, 1) if shifts => {
                                ring_pass_shift::<S, $nb, 3, 3, 1, 1>(k, rg, &rows, &wv, c0, oy, y)
                            }
                            (3, 2) if shifts => {
                                ring_pass_shift::<S, $nb, 3, 3, 2, 2>(k, rg, &rows, &wv, c0, oy, y)
                            }
                            (3, 1) if shifts2 => {
                                ring_pass_shift::<S, $nb, 3, 3, 1, 2>(k, rg, &rows, &wv, c0, oy, y)
                            }
                            (5, 1) if shifts => {
                                ring_pass_shift::<S, $nb, 5, 5, 1, 1>(k, rg, &rows, &wv, c0, oy, y)
                            }
                            (5, 2) if shifts => {
                                ring_pass_shift::<S, $nb, 5, 5, 2, 2>(k, rg, &rows, &wv, c0, oy, y)
                            }
                            (3, 1) => ring_pass::<S, $nb, 3, 3, 1>(k, rg, &rows, &wv, c0, oy, y),
                            (3, _) => ring_pass::<S, $nb, 3, 3, 2>(k, rg, &rows, &wv, c0, oy, y),
                            (5, 1) => ring_pass::<S, $nb, 5, 5, 1>(k, rg, &rows, &wv, c0, oy, y),
                            (5, _) => ring_pass::<S, $nb, 5, 5, 2>(k, rg, &rows, &wv, c0, oy, y),
                            _ => ring_pass_any::<S, $nb>(k, rg, &rows, c0, oy, y),
                        }
                    };
                }
                match nb {
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                r0 += nb;
            }
            oy += PASS_ROWS;
        }
    }
}

/// Copies input row `iy < h` of the plane `x` into its slot of the ring `bp`: whole registers
/// (the lanes past the row's end zero), at stride 2 split into its even and odd columns.
///
/// # Safety
/// As [`depthwise_ring`], with `iy < h`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn ring_copy<S: Shift>(rg: &RingGeom, x: *const f32, bp: *mut f32, iy: usize) {
    let (l, w) = (S::LANES, rg.w);
    // SAFETY (the whole body): floats i < w of input row iy; the slot's registers from
    // `copy_at`, which `RingGeom::new` sized for whole registers of the row (or half-row).
    unsafe {
        let src = x.add(iy * w);
        let dst = bp.add((iy & (rg.slots - 1)) * rg.slot);
        if rg.sw == 1 {
            let d = dst.add(rg.copy_at[0]);
            let mut i = 0;
            while i < w {
                S::store(d.add(i), load_n::<S>(src.add(i), w - i));
                i += l;
            }
        } else {
            // two registers of the row each give a register of its even columns and one of
            // its odd ones (the 5 × 5 s2 depthwise 48 ← 48 on 56 × 56, whose row copies loaded
            // each float twice, under a mask per register, took as long as its FMAs)
            let (d0, d1) = (dst.add(rg.copy_at[0]), dst.add(rg.copy_at[1]));
            let mut t = 0;
            while 2 * t < w {
                let i = 2 * t;
                let (a, b) = if i + 2 * l <= w {
                    (S::load(src.add(i)), S::load(src.add(i + l)))
                } else {
                    (rest::<S>(src, i, w), rest::<S>(src, i + l, w))
                };
                S::store(d0.add(t), S::order_even(S::even_lanes(a, b)));
                S::store(d1.add(t), S::order_even(S::odd_lanes(a, b)));
                t += l;
            }
        }
    }
}

/// The floats `i..w` of the row `src` as a register (zeros past `w`; none when `i ≥ w`).
///
/// # Safety
/// `w` floats at `src`; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rest<S: Simd>(src: *const f32, i: usize, w: usize) -> S::V {
    // SAFETY: floats i..min(i + LANES, w) of the row.
    unsafe {
        if i < w {
            load_n::<S>(src.add(i), w - i)
        } else {
            S::zero()
        }
    }
}

/// `NB` registers of columns from `c0` of the [`PASS_ROWS`] output rows from `oy`, for a
/// `KH × KW` kernel at row stride `SH` and no row dilation: each padded row of the pass is
/// loaded once per column tap and feeds every output row it is a tap of; the weights are in
/// `wv` (tap-major).
///
/// # Safety
/// As [`depthwise_ring`]; `rows` holds the pass's `span` padded rows, `c0 + NB·LANES ≤
/// regs·LANES`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ring_pass<S: Simd, const NB: usize, const KH: usize, const KW: usize, const SH: usize>(
    k: &Depthwise,
    rg: &RingGeom,
    rows: &[*const f32; SPAN_MAX],
    wv: &[S::V; FIXED_TAPS],
    c0: usize,
    oy: usize,
    y: *mut f32,
) {
    let l = S::LANES;
    let mut taps = [0usize; KW];
    for (kx, t) in taps.iter_mut().enumerate() {
        *t = rg.tap(kx) + c0;
    }
    // SAFETY (the whole body): rows j < (PASS_ROWS − 1)·SH + KH = span of the pass, columns
    // inside their slots.
    unsafe {
        let mut acc = [[S::splat(k.b0); NB]; PASS_ROWS];
        for (j, &row) in rows.iter().enumerate().take((PASS_ROWS - 1) * SH + KH) {
            for (kx, &t) in taps.iter().enumerate() {
                let p = row.add(t);
                let mut v = [S::zero(); NB];
                for (b, v) in v.iter_mut().enumerate() {
                    *v = S::load(p.add(b * l));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ky = j.wrapping_sub(r * SH);
                    if ky < KH {
                        let w = wv[ky * KW + kx];
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = S::fma(v, w, *a);
                        }
                    }
                }
            }
        }
        ring_store::<S, NB>(k, rg, &acc, c0, oy, y);
    }
}

/// As [`ring_pass`], with the column taps of a register built from aligned loads by
/// [`Shift::shift`] (column stride `SW`; column dilation 1): each padded row's registers are
/// loaded once per pass, phase by phase.
///
/// # Safety
/// As [`ring_pass`]; the slots laid out for shifts (`RingGeom::new` with `S::SHIFTS`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ring_pass_shift<
    S: Shift,
    const NB: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const SW: usize,
>(
    k: &Depthwise,
    rg: &RingGeom,
    rows: &[*const f32; SPAN_MAX],
    wv: &[S::V; FIXED_TAPS],
    c0: usize,
    oy: usize,
    y: *mut f32,
) {
    let l = S::LANES;
    // SAFETY (the whole body): rows j < (PASS_ROWS − 1)·SH + KH = span of the pass, registers
    // c0 + b·L ≤ regs·L of each phase, inside their slots (`RingGeom::new` added one).
    unsafe {
        let mut acc = [[S::splat(k.b0); NB]; PASS_ROWS];
        for (j, &row) in rows.iter().enumerate().take((PASS_ROWS - 1) * SH + KH) {
            let mut ld = [[S::zero(); 5]; 2];
            for (q, ld) in ld.iter_mut().enumerate().take(SW) {
                let p = row.add(rg.phase_at[q] + c0);
                for (b, v) in ld.iter_mut().enumerate().take(NB + 1) {
                    *v = S::load(p.add(b * l));
                }
            }
            for kx in 0..KW {
                let (q, o) = if SW == 1 { (0, kx) } else { (kx & 1, kx >> 1) };
                let mut v = [S::zero(); NB];
                for (b, v) in v.iter_mut().enumerate() {
                    *v = shift_n::<S>(ld[q][b], ld[q][b + 1], o);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let ky = j.wrapping_sub(r * SH);
                    if ky < KH {
                        let w = wv[ky * KW + kx];
                        for (a, v) in acc.iter_mut().zip(v) {
                            *a = S::fma(v, w, *a);
                        }
                    }
                }
            }
        }
        ring_store::<S, NB>(k, rg, &acc, c0, oy, y);
    }
}

/// Lanes `o..o + LANES` of `lo, hi` (`o ≤ 4`, a constant where it is inlined).
///
/// # Safety
/// The CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn shift_n<S: Shift>(lo: S::V, hi: S::V, o: usize) -> S::V {
    // SAFETY: forwarded from the caller.
    unsafe {
        match o {
            0 => lo,
            1 => S::shift::<1>(lo, hi),
            2 => S::shift::<2>(lo, hi),
            3 => S::shift::<3>(lo, hi),
            _ => S::shift::<4>(lo, hi),
        }
    }
}

/// Register shifts across two registers, where the set has them cheaply.
#[cfg(target_arch = "x86_64")]
trait Shift: Simd {
    /// Whether the depthwise kernels build column taps with [`Shift::shift`] (else they load
    /// each tap at its offset).
    const SHIFTS: bool;
    /// Lanes `N..N + LANES` of the `2·LANES` floats `lo, hi`.
    ///
    /// # Safety
    /// The CPU has the set.
    unsafe fn shift<const N: i32>(lo: Self::V, hi: Self::V) -> Self::V;
    /// The odd lanes of `lo, hi` in [`Simd::even_lanes`]' order (`order_even` sorts them).
    ///
    /// # Safety
    /// The CPU has the set.
    unsafe fn odd_lanes(lo: Self::V, hi: Self::V) -> Self::V;
    /// Lane `j` of the result is lane `idx[j] < 2·LANES` of the `2·LANES` floats `lo, hi`, the
    /// indices `i32` lanes of `idx` (only where [`Shift::SHIFTS`]).
    ///
    /// # Safety
    /// The CPU has the set.
    unsafe fn pick2(lo: Self::V, hi: Self::V, idx: Self::V) -> Self::V;
    /// The first `n ≤ LANES` floats from `p`, `fill` in the other lanes; only `n` floats are
    /// read (only where [`Shift::SHIFTS`]).
    ///
    /// # Safety
    /// The CPU has the set; `n` floats at `p`.
    unsafe fn load_fill(p: *const f32, n: usize, fill: Self::V) -> Self::V;
    /// The lanes of `mask` from `p` (lane `j` from `p + j`), `fill` in the others; only those
    /// lanes are read (only where [`Shift::SHIFTS`]).
    ///
    /// # Safety
    /// The CPU has the set; the float at `p + j` for each lane `j` of `mask`.
    unsafe fn load_lanes(p: *const f32, mask: u16, fill: Self::V) -> Self::V;
}

#[cfg(target_arch = "x86_64")]
impl Shift for Avx512 {
    const SHIFTS: bool = true;
    #[inline(always)]
    unsafe fn shift<const N: i32>(lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: AVX-512F, which the caller's CPU has.
        unsafe {
            _mm512_castsi512_ps(_mm512_alignr_epi32::<N>(
                _mm512_castps_si512(hi),
                _mm512_castps_si512(lo),
            ))
        }
    }
    #[inline(always)]
    unsafe fn odd_lanes(lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: AVX-512F, which the caller's CPU has.
        unsafe {
            let idx = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
            _mm512_permutex2var_ps(lo, idx, hi)
        }
    }
    #[inline(always)]
    unsafe fn pick2(lo: Self::V, hi: Self::V, idx: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: AVX-512F, which the caller's CPU has.
        unsafe { _mm512_permutex2var_ps(lo, _mm512_castps_si512(idx), hi) }
    }
    #[inline(always)]
    unsafe fn load_fill(p: *const f32, n: usize, fill: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        let m = if n >= 16 { u16::MAX } else { (1u16 << n) - 1 };
        // SAFETY: AVX-512F, which the caller's CPU has; the masked lanes are not read.
        unsafe { _mm512_mask_loadu_ps(fill, m, p) }
    }
    #[inline(always)]
    unsafe fn load_lanes(p: *const f32, mask: u16, fill: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        // SAFETY: AVX-512F, which the caller's CPU has; lanes outside `mask` are not read.
        unsafe { _mm512_mask_loadu_ps(fill, mask, p) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Shift for Avx2 {
    const SHIFTS: bool = false;
    #[inline(always)]
    unsafe fn shift<const N: i32>(lo: Self::V, _: Self::V) -> Self::V {
        // (not called: `SHIFTS` is false)
        lo
    }
    #[inline(always)]
    unsafe fn odd_lanes(lo: Self::V, hi: Self::V) -> Self::V {
        use std::arch::x86_64::*;
        // [lo1 lo3 hi1 hi3 | lo5 lo7 hi5 hi7], as `even_lanes`
        // SAFETY: AVX, which the caller's CPU has.
        unsafe { _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi) }
    }
    #[inline(always)]
    unsafe fn pick2(lo: Self::V, _: Self::V, _: Self::V) -> Self::V {
        // (not called: `SHIFTS` is false)
        lo
    }
    #[inline(always)]
    unsafe fn load_fill(_: *const f32, _: usize, fill: Self::V) -> Self::V {
        // (not called: `SHIFTS` is false)
        fill
    }
    #[inline(always)]
    unsafe fn load_lanes(_: *const f32, _: u16, fill: Self::V) -> Self::V {
        // (not called: `SHIFTS` is false)
        fill
    }
}

/// The 16-lane transposes of a direct convolution's stores ([`store_sums16`]).
#[cfg(target_arch = "x86_64")]
impl Avx512 {
    /// Transposes eight registers of sixteen lanes (eight pixels' sums of sixteen channels)
    /// into eight registers of two channels' eight pixels: lane `c` of register `q` becomes
    /// lane `q` of register `c` where `c < 8`, and lane `8 + q` of register `c − 8` where `c
    /// ≥ 8` — register `k` holds channel `k` in its lower half and channel `k + 8` in its
    /// upper half. Three shuffles per register where AVX2's 8 × 8 transposes take six per 16
    /// floats (the same steps within each 128-bit lane, then one two-source permute).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    pub(crate) unsafe fn transpose8x16(r: &mut [<Avx512 as Simd>::V; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: AVX-512F, which the caller's CPU has.
        unsafe {
            // within each 128-bit lane L (channels 4L..4L + 4): pairs, then quads, as
            // `Avx2::transpose8`: u[c] lane L = channel 4L + c of pixels 0..4, u[4 + c] of
            // pixels 4..8
            let t = [
                _mm512_unpacklo_ps(r[0], r[1]),
                _mm512_unpackhi_ps(r[0], r[1]),
                _mm512_unpacklo_ps(r[2], r[3]),
                _mm512_unpackhi_ps(r[2], r[3]),
                _mm512_unpacklo_ps(r[4], r[5]),
                _mm512_unpackhi_ps(r[4], r[5]),
                _mm512_unpacklo_ps(r[6], r[7]),
                _mm512_unpackhi_ps(r[6], r[7]),
            ];
            let u = [
                _mm512_shuffle_ps::<0x44>(t[0], t[2]),
                _mm512_shuffle_ps::<0xee>(t[0], t[2]),
                _mm512_shuffle_ps::<0x44>(t[1], t[3]),
                _mm512_shuffle_ps::<0xee>(t[1], t[3]),
                _mm512_shuffle_ps::<0x44>(t[4], t[6]),
                _mm512_shuffle_ps::<0xee>(t[4], t[6]),
                _mm512_shuffle_ps::<0x44>(t[5], t[7]),
                _mm512_shuffle_ps::<0xee>(t[5], t[7]),
            ];
            // channel k = 4L + c (L = 0, 1) and k + 8 (lane L + 2): lanes L and L + 2 of u[c]
            // and of u[4 + c], in that order of halves
            let lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
            let hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
            for c in 0..4 {
                r[c] = _mm512_permutex2var_ps(u[c], lo, u[4 + c]);
                r[c + 4] = _mm512_permutex2var_ps(u[c], hi, u[4 + c]);
            }
        }
    }
}

/// The 8 × 8 transposes of the channel blocks ([`channels_in`], [`channels_out`]), in AVX2's
/// registers on both tiers (a CPU with AVX-512F has AVX2 and FMA: [`Isa::available`]): an
/// AVX-512 block of sixteen planes is two of them side by side.
#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// Transposes the 8 × 8 floats of eight registers of eight lanes: lane `j` of register
    /// `i` becomes lane `i` of register `j`.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    pub(crate) unsafe fn transpose8(r: &mut [<Avx2 as Simd>::V; 8]) {
        use std::arch::x86_64::*;
        // SAFETY: AVX, which the caller's CPU has.
        unsafe {
            // pairs: [a0 b0 a1 b1 | a4 b4 a5 b5], [a2 b2 a3 b3 | a6 b6 a7 b7], …
            let t = [
                _mm256_unpacklo_ps(r[0], r[1]),
                _mm256_unpackhi_ps(r[0], r[1]),
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
                _mm256_unpacklo_ps(r[6], r[7]),
                _mm256_unpackhi_ps(r[6], r[7]),
            ];
            // quads: [a0 b0 c0 d0 | a4 b4 c4 d4], [a1 b1 c1 d1 | a5 …], …
            let u = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                _mm256_shuffle_ps::<0xee>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xee>(t[1], t[3]),
                _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                _mm256_shuffle_ps::<0xee>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xee>(t[5], t[7]),
            ];
            for j in 0..4 {
                r[j] = _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]);
                r[j + 4] = _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]);
            }
        }
    }
    /// The 8 × 8 floats of eight rows of eight at `rows`, transposed: lane `i` of register
    /// `j` is float `j` of row `i`. Each register is built from half-rows loaded into its
    /// halves and transposed within them, with no shuffle across halves (AVX2's
    /// `vperm2f128`, which `transpose8` needs, takes 8 µops on AMD Zen 1).
    ///
    /// # Safety
    /// Eight floats at each row; the CPU has AVX2.
    #[inline(always)]
    unsafe fn load_transposed8(rows: [*const f32; 8]) -> [<Avx2 as Simd>::V; 8] {
        use std::arch::x86_64::*;
        // SAFETY: eight floats at each row (the caller's contract); AVX, which the CPU has.
        unsafe {
            // half-rows: h[k] = [row k floats 0..4 | row k + 4 floats 0..4] (k < 4), and
            // h[k + 4] the same of floats 4..8
            let half = |k: usize, o: usize| {
                _mm256_insertf128_ps::<1>(
                    _mm256_castps128_ps256(_mm_loadu_ps(rows[k].add(o))),
                    _mm_loadu_ps(rows[k + 4].add(o)),
                )
            };
            let mut r = [_mm256_setzero_ps(); 8];
            for (q, o) in [0, 4].into_iter().enumerate() {
                let h = [half(0, o), half(1, o), half(2, o), half(3, o)];
                // a 4 × 4 transpose within each half: [a0 b0 a1 b1 | e0 f0 e1 f1], …
                let t = [
                    _mm256_unpacklo_ps(h[0], h[1]),
                    _mm256_unpackhi_ps(h[0], h[1]),
                    _mm256_unpacklo_ps(h[2], h[3]),
                    _mm256_unpackhi_ps(h[2], h[3]),
                ];
                r[4 * q] = _mm256_shuffle_ps::<0x44>(t[0], t[2]);
                r[4 * q + 1] = _mm256_shuffle_ps::<0xee>(t[0], t[2]);
                r[4 * q + 2] = _mm256_shuffle_ps::<0x44>(t[1], t[3]);
                r[4 * q + 3] = _mm256_shuffle_ps::<0xee>(t[1], t[3]);
            }
            r
        }
    }
}

/// As [`ring_pass`], for any kernel, stride and dilation: one load per tap, row and register.
///
/// # Safety
/// As [`ring_pass`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn ring_pass_any<S: Simd, const NB: usize>(
    k: &Depthwise,
    rg: &RingGeom,
    rows: &[*const f32; SPAN_MAX],
    c0: usize,
    oy: usize,
    y: *mut f32,
) {
    let l = S::LANES;
    // SAFETY (the whole body): rows r·sh + ky·dh < span, columns inside their slots; tap
    // (ky, kx) of the kernel.
    unsafe {
        let mut acc = [[S::splat(k.b0); NB]; PASS_ROWS];
        for ky in 0..rg.kh {
            for kx in 0..rg.kw {
                let wv = S::splat(*k.k.add(ky * rg.kw + kx));
                let t = rg.tap(kx) + c0;
                for (r, acc) in acc.iter_mut().enumerate() {
                    let p = rows[r * rg.sh + ky * rg.dh].add(t);
                    for (b, a) in acc.iter_mut().enumerate() {
                        *a = S::fma(S::load(p.add(b * l)), wv, *a);
                    }
                }
            }
        }
        ring_store::<S, NB>(k, rg, &acc, c0, oy, y);
    }
}

/// The activation and the stores of a pass: the rows below `oh`, the columns below `ow`. The
/// activations that cost a few operations are chosen once per pass, not per register (a
/// choice per register keeps the accumulators out of registers).
///
/// # Safety
/// As [`ring_pass`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn ring_store<S: Simd, const NB: usize>(
    k: &Depthwise,
    rg: &RingGeom,
    acc: &[[S::V; NB]; PASS_ROWS],
    c0: usize,
    oy: usize,
    y: *mut f32,
) {
    use crate::elementwise_kernels::{CLIP, LEAKY_RELU, NONE, RELU};
    // SAFETY: forwarded from the caller.
    unsafe {
        match k.act {
            NONE => ring_store_act::<S, NB>(k, NONE, rg, acc, c0, oy, y),
            RELU => ring_store_act::<S, NB>(k, RELU, rg, acc, c0, oy, y),
            CLIP => ring_store_act::<S, NB>(k, CLIP, rg, acc, c0, oy, y),
            LEAKY_RELU => ring_store_act::<S, NB>(k, LEAKY_RELU, rg, acc, c0, oy, y),
            act => ring_store_act::<S, NB>(k, act, rg, acc, c0, oy, y),
        }
    }
}

/// [`ring_store`] with the activation `act` (a constant where it is inlined).
///
/// # Safety
/// As [`ring_pass`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ring_store_act<S: Simd, const NB: usize>(
    k: &Depthwise,
    act: u64,
    rg: &RingGeom,
    acc: &[[S::V; NB]; PASS_ROWS],
    c0: usize,
    oy: usize,
    y: *mut f32,
) {
    let l = S::LANES;
    // SAFETY (the whole body): output rows oy + r < oh, columns col.. below ow.
    unsafe {
        for (r, row) in acc.iter().enumerate() {
            if oy + r >= rg.oh {
                break;
            }
            let yrow = y.add((oy + r) * rg.ow);
            for (b, a) in row.iter().enumerate() {
                let v = crate::elementwise_kernels::activate::<S>(act, k.a, k.b, *a);
                let col = c0 + b * l;
                if col + l <= rg.ow {
                    S::store(yrow.add(col), v);
                } else if col < rg.ow {
                    S::store_prefix(yrow.add(col), rg.ow - col, v);
                }
            }
        }
    }
}

/// One work item of a convolution computed directly (the GEMM driver's alternative to an
/// im2col product, `gemm::DirectConv`): `C[o, p] = Σ_k wt(k, o)·x(k, p)` for the channels `o ∈
/// rows` and the output pixels `p ∈ cols` (`p = y·ow + x`), where tap `k = (c, i, j)` of pixel
/// `(y, x)` reads the zero-padded copy `pad` at `off[k] + y·steps[0] + x·steps[1]`. The sums
/// take the taps in `k`'s order, one FMA each, as the GEMM's micro-kernels do.
pub struct DirectConvJob<'a> {
    /// The zero-padded image, slack included (`gemm::DirectConv::pad_len`), or the image itself
    /// (`gemm::DirectConv::in_place`).
    pub pad: &'a [f32],
    /// The floats in the copy from one output row's taps to the next's, and from one output
    /// pixel's to the next's.
    pub steps: [usize; 2],
    /// Each tap's offset in the copy.
    pub off: &'a [usize],
    /// The weights in panels of `pw` channels: channel `o`'s weight of tap `k` at
    /// `(o − o % pw)·K + k·pw + o % pw` (`K = off.len()`); `pw` a multiple of the set's
    /// lanes, the panels zero past the channels (`opad` of them in all).
    pub wt: &'a [f32],
    pub pw: usize,
    pub opad: usize,
    pub rows: [usize; 2],
    pub cols: [usize; 2],
    pub ow: usize,
    /// C: rows `l` floats apart.
    pub c: *mut f32,
    pub l: usize,
    /// The taps summed per pass over a segment of an output row (`gemm::DirectConv::chunk`;
    /// 0 is taken as 1).
    pub chunk: usize,
    /// Whether the weights are larger than L2 (`gemm::DirectConv::prefetch`): each block of
    /// channels through all the pixels, blocks of four registers asking for the next chunk's
    /// weights ahead.
    pub prefetch: bool,
    /// What the kernel does to the sums as it stores them (`gemm::DirectConv::finish`):
    /// nothing when `None`.
    pub finish: Option<Finish>,
    /// The row kernel's order (`conv_rows`): where more than 0, every block of output
    /// channels takes at most `span` pixels of an output row before the next pixels; where 0,
    /// each block of channels sweeps all the job's pixels before the next block.
    pub span: usize,
}

/// A direct convolution's epilogue, applied as the finished sums are stored: `C[o, p] + bias[o]`
/// (when `bias` is not null), then `+ res[o·l + p]` (when `res` is not null), then the
/// activation, each a separate rounding in that order, as [`gemm_epilogue`] computes them.
#[derive(Clone, Copy)]
pub struct Finish {
    pub bias: *const f32,
    pub res: *const f32,
    pub act: Act,
}

/// `DirectConvJob`'s kernel, per instruction set.
pub type DirectConvFn = unsafe fn(&DirectConvJob);

/// The most output pixels of a register block of a direct convolution (the padded copy has
/// room for as many past a row's end, though a row's last pixels run in a block of as many).
pub const DIRECT_CONV_PIXELS: usize = 8;

/// The pixels of a direct convolution's register block of two channel registers on a set of
/// `lanes` lanes: AVX-512 8 (16 accumulators of its 32 registers), AVX2 6 (12 of its 16, the
/// other four for two weight vectors and the broadcast input: 12 FMAs per 2 weight loads and
/// 6 broadcasts). Where the rows have four registers of channels, blocks of four take
/// [`quad_block`] pixels (`direct_conv`).
pub const fn pixel_block(lanes: usize) -> usize {
    if lanes >= 16 { 8 } else { 6 }
}

/// The pixels of a direct convolution's register block of four channel registers: AVX2 3 (12
/// accumulators, 3 inputs and 1 weight of its 16 registers), AVX-512 6 (24, 4 weights and 1
/// input of its 32).
pub const fn quad_block(lanes: usize) -> usize {
    if lanes >= 16 { 6 } else { 3 }
}

/// Whether a set of `lanes` lanes runs blocks of three channel registers
/// ([`direct_conv_segments`]' `regs`): AVX-512 only. One condition for the choice and for the
/// arm that runs it, which is not compiled where this is false (a block of three picked there
/// would fall to the one-register arm and leave two registers of channels unwritten).
const fn three_register_blocks(lanes: usize) -> bool {
    lanes >= 16
}

/// The most output pixels of a segment in [`direct_conv`] on any set ([`segment_len`]): its
/// sums stay in a buffer of as many pixels by 4 registers between chunks of taps.
const SEGMENT: usize = 224;

/// The most output pixels of a segment on a set of `lanes` lanes: AVX2 60 (7.5 KiB of sums),
/// AVX-512 224 (56 KiB: four rows of 56, two of 112, one of 224, a 14 × 14 map whole), where
/// each chunk's weights, brought into L1 from L2, then serve almost four times as many
/// pixels. Measured on AVX-512 (an Intel Xeon, family 6 model 167, L1d 48 KiB, L2 2 MiB; one
/// thread, 224 against 60, each pair of runs alternated): 3 × 3 64 → 64 on 224 × 224, 128 →
/// 128 on 112 × 112, 256 → 256 on 56 × 56 and 64 → 64 on 56 × 56 0.88–1.00 of the time (each
/// convolution alone, two pairs; 120 pixels in between), 128 → 128 on 28 × 28 and 256 → 256
/// on 14 × 14 0.96–1.03; in their networks (the median run, three pairs) VGG-19 0.93–0.99,
/// ResNet-18 0.93–0.98, Inception v2 0.96–1.00, ResNet-50 0.95–0.98, the VGG block 0.95–1.00,
/// SqueezeNet 0.99–1.03, DenseNet-121 0.95–1.03 (which the larger buffer to clear per call
/// does not slow).
const fn segment_len(lanes: usize) -> usize {
    if lanes >= 16 { SEGMENT } else { 60 }
}

/// A segment's sums: per pixel of the segment, four registers of channels; written by a
/// block's first chunk of taps before anything reads them, so never cleared (clearing 58 KiB
/// per call took 1 % of MNASNet 0.5's run in `memset`, and wrote L1 over).
type Sums<S> = [[<S as Simd>::V; 4]; SEGMENT];

/// A pixel's slot of [`Sums`]: its registers of channels.
type Slot<S> = [<S as Simd>::V; 4];

/// The direct convolution of `j`, by segments of at most [`SEGMENT`] output pixels (as many
/// whole output rows as that holds, else a row or the rest of one) and blocks of output
/// channels (four registers where more than three are left in the job's rows, else two or
/// one): each segment through every block of channels, or, with `j.prefetch` (weights larger
/// than L2), each block of channels through every segment (its weights read from memory once)
/// while blocks of four registers ask for the next chunk's weights into L2. A block sums the
/// taps in chunks of `j.chunk` (the weights of a chunk stay in L1 while its pixel blocks
/// pass), each chunk over the segment's pixels in register blocks
/// (four registers by 3 pixels on AVX2 and by 6 on AVX-512 — 24 of its 32 registers —,
/// [`pixel_block`] by three (AVX-512), two or one; a row's last pixels in a block of as
/// many, or in two where they are one more than a block: 3 × 3 512 → 512 on 7 × 7 2.44 → 2.17 ms, 256 ← 64 on 13 ×
/// 13 0.48 → 0.46, on the EPYC Zen 4), the partial
/// sums kept in a buffer between chunks; the finished sums go into C's rows through 16-lane
/// transposes on AVX-512 ([`store_sums16`], eight pixels of a register's sixteen channels at a
/// time; the measurement is there) and AVX's 8 × 8 transposes elsewhere, through the node's
/// bias, residual and ReLU on the way where the job has them ([`Finish`]: no pass of its own
/// over C after the kernel; SqueezeNet 0.98 of the time of that pass, the VGG block, ResNet-18
/// and -50 and Inception v2 1.00, on the Intel Xeon below). Each tap of a block takes one
/// vector of weights per register and one broadcast input per pixel.
///
/// Whole short rows per segment and exact last blocks, measured on AVX-512 (a 2-vCPU Intel
/// Xeon, family 6 model 207; against one row per segment in full blocks, the median of 6–10
/// alternating pairs of processes, one thread): 3 × 3 64 → 64 on 56 × 56 1.01, 128 → 128 on
/// 28 × 28 0.99, the dilated 0.91, the VGG block 0.98, ResNet-18 0.93 and Inception v2 0.95
/// (with the small maps they bring to this kernel); 3 × 3 128 → 128 on 14 × 14 and on 7 × 7 run
/// directly in 0.81 and 0.79 of the GEMM's time (in full blocks, a row per segment: 128 → 128
/// on 14 × 14 1.02, 512 → 512 on 7 × 7 2.0). On its AVX2 tier: 0.92–1.00 (ResNet-18 0.98,
/// LeNet-5 at batch 64 0.92).
///
/// The shape is ONNX Runtime's NCHWc kernels' (MLAS: 3 pixels by 4 registers on AVX2, 6 by 4
/// on AVX-512, the taps of a block of input channels per pass over an output row, the
/// weights resident in L1). Measured on
/// the EPYC Zen 3 (direct / the kernel before it, of 2 × 6 pixels over all taps per block with
/// a scalar store per element, the median of alternating runs in one process, one thread):
/// 3 × 3 64 → 64 on 56 × 56 0.87–0.93, 64 ← 8 0.82, the dilated 32 → 32 on 64 × 64 0.91, 3 ×
/// 3 s2 128 ← 128 on 56 × 56 0.88, 128 → 128 on 28 × 28 0.94–1.00, the VGG block 0.94,
/// ResNet-18 0.96, SqueezeNet 0.96 (two threads: the VGG block 0.89, ResNet-18 0.97, the
/// dilated 0.94).
///
/// # Safety
/// `j.c` is valid for the rows and columns of the job (rows `l` apart); `pad` holds every tap
/// of the job's pixels (the kernel reads none past a row's last pixel: a copy's slack,
/// `gemm::DirectConv::pad_len`, is a margin, and an image read in place has none);
/// `wt` holds `off.len()·opad` floats, `opad ≥ rows[1]` a multiple of `pw`, and `pw` a
/// multiple of `LANES`; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_conv<S: Simd>(j: &DirectConvJob) {
    // an activation of many operations (`is_long`) goes over the finished rows of each
    // segment's worth of pixels (in L1 or L2) at the set's width, as the standalone kernel
    // does, instead of 8 lanes at a time in the stores' transposes: SiLU after the 3 × 3 s2
    // stem 32 ← 3 on 224 × 224 took 0.47–0.52 ms there, 0.42–0.46 so (and 0.26–0.29 with ReLU;
    // Intel Xeon, family 6 model 167, one thread). Weights larger than L2 (`prefetch`) are
    // read once: the activation then follows the whole job.
    let late = j
        .finish
        .filter(|f| crate::elementwise_kernels::is_long(f.act.code));
    let Some(f) = late else {
        // SAFETY: forwarded from the caller.
        return unsafe { direct_conv_pixels::<S>(j) };
    };
    let early = DirectConvJob {
        finish: Some(Finish {
            act: Act {
                code: crate::elementwise_kernels::NONE,
                a: 0.0,
                b: 0.0,
            },
            ..f
        }),
        ..*j
    };
    let step = if j.prefetch {
        usize::MAX
    } else {
        segment_len(S::LANES)
    };
    let mut p = j.cols[0];
    while p < j.cols[1] {
        let q = p.saturating_add(step).min(j.cols[1]);
        // SAFETY: forwarded from the caller (a part of the job's columns).
        unsafe {
            direct_conv_pixels::<S>(&DirectConvJob {
                cols: [p, q],
                ..early
            })
        };
        // SAFETY: the job's rows and pixels p..q of its columns, stored by `run`.
        unsafe { activate_rows::<S>(j, f.act, j.rows, [p, q]) };
        p = q;
    }
}

/// [`direct_conv`] with the set's blocks of pixels ([`pixel_block`]), the activation as the
/// job says. (A function, not a closure in `direct_conv`: a closure would not inherit the
/// entry point's target features, and every vector operation in it would become a call.)
///
/// # Safety
/// As [`direct_conv`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_conv_pixels<S: Simd>(j: &DirectConvJob) {
    // (a constant condition: the set's other block is not instantiated; with the constant
    // conditions of `segment_block` and `direct_conv_segment`, kiln-jit's debug build took
    // 399 s where it took 539)
    if const { pixel_block(S::LANES) == 8 } {
        // SAFETY: forwarded from the caller.
        unsafe { direct_conv_segments::<S, 8>(j) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { direct_conv_segments::<S, 6>(j) }
    }
}

/// [`direct_conv`] with blocks of `P` pixels by two registers.
///
/// # Safety
/// As [`direct_conv`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_conv_segments<S: Simd, const P: usize>(j: &DirectConvJob) {
    const { assert!(P <= DIRECT_CONV_PIXELS && 3 <= DIRECT_CONV_PIXELS) };
    let l = S::LANES;
    // (uninitialized: a slot's registers are written before they are read, by raw pointer)
    let mut buf = std::mem::MaybeUninit::<Sums<S>>::uninit();
    let sums = buf.as_mut_ptr().cast::<Slot<S>>();
    // the job's pixels from p, at most a segment: as many whole rows as it holds (C's rows
    // hold the pixels row after row), else the rest of this row
    let most = const { segment_len(S::LANES) };
    const { assert!(segment_len(S::LANES) <= SEGMENT) };
    let segment = |p: usize| {
        let (y, x0) = (p / j.ow, p % j.ow);
        let rows = most / j.ow;
        let end = if x0 == 0 && rows >= 1 {
            j.cols[1].min(p + rows * j.ow)
        } else {
            j.cols[1].min((y + 1) * j.ow).min(p + most)
        };
        [p, end]
    };
    // the registers of the block of channels from o0: four, or on AVX-512 three where three
    // or five registers are left (so that no block of one register follows: its 8 pixels
    // take a broadcast per FMA, more loads than two ports serve), else two or one. Measured
    // on an Intel Xeon (family 6 model 167, one thread, each convolution alone, two
    // alternations, 4 + 1 or 2 + 1 → 3 + 2 or 3): 3 × 3 48 ← 128 on 14 × 14 0.165 → 0.146
    // ms, 1 × 1 112 ← 672 on 14 × 14 0.213 → 0.202, 80 ← 240 0.059 → 0.057, 3 × 3 144 ← 64
    // on 28 × 28 0.845 → 0.824; the networks that have them within noise (EfficientNet-B0
    // 0.989, MNASNet 0.996, MobileNet v2 1.000, GoogLeNet 1.010, Inception v3 1.005)
    let regs = |o0: usize| {
        let left = j.rows[1] - o0;
        let r = left.div_ceil(l);
        if const { three_register_blocks(S::LANES) } && (r == 3 || r == 5) {
            3
        } else if left > 3 * l {
            4
        } else if left > l {
            2
        } else {
            1
        }
    };
    let first = j.rows[0] / l * l;
    // SAFETY (both orders): forwarded from the caller: o0 is a multiple of LANES with o0 +
    // (regs − 1)·LANES < rows[1] ≤ opad, so each register's channels lie in one panel (pw and
    // opad multiples of LANES); a segment's pixels are the job's, at most SEGMENT.
    if j.prefetch {
        // weights larger than L2: each block of channels over all the pixels, its weights
        // read once from memory (the copy of the image stays in L2)
        let mut o0 = first;
        while o0 < j.rows[1] {
            let mut p = j.cols[0];
            while p < j.cols[1] {
                let seg = segment(p);
                unsafe { segment_block::<S, P>(j, seg, [0, 0], o0, regs(o0), sums) };
                p = seg[1];
            }
            o0 += regs(o0) * l;
        }
    } else {
        // each segment through every block of channels, its rows of the copy in L1
        let mut p = j.cols[0];
        while p < j.cols[1] {
            let seg = segment(p);
            let ahead = if seg[1] < j.cols[1] {
                segment(seg[1])
            } else {
                [0, 0]
            };
            let mut o0 = first;
            while o0 < j.rows[1] {
                unsafe { segment_block::<S, P>(j, seg, ahead, o0, regs(o0), sums) };
                o0 += regs(o0) * l;
            }
            p = seg[1];
        }
    }
}

/// The activation `a` over rows `rows` of C at pixels `[p0, p1)`, stored by then
/// ([`direct_conv_segments`]' late activation).
///
/// # Safety
/// The rows and pixels are the job's (inside C); the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn activate_rows<S: Simd>(j: &DirectConvJob, a: Act, rows: [usize; 2], [p0, p1]: [usize; 2]) {
    if p0 == 0 && p1 == j.l && rows[0] < rows[1] {
        // whole rows of C, which lie end to end: one run of registers over all of them,
        // instead of a partial register at the end of each row (SiLU after 1152 ← 192 on 7 × 7
        // took 0.07 ms where the activation alone takes 0.02: 49 floats are 3 registers and
        // one lane)
        // SAFETY: rows rows[0]..rows[1] of C, `l` floats each, one after the other.
        unsafe {
            let at = j.c.add(rows[0] * j.l);
            let n = (rows[1] - rows[0]) * j.l;
            crate::elementwise_kernels::activate_n::<S>(a.code, a.a, a.b, at, at, n);
        }
        return;
    }
    for o in rows[0]..rows[1] {
        // SAFETY: row o of the job's rows, pixels of its columns: inside C.
        unsafe {
            let at = j.c.add(o * j.l + p0);
            crate::elementwise_kernels::activate_n::<S>(a.code, a.a, a.b, at, at, p1 - p0);
        }
    }
}

/// A segment's pixels by the `regs` registers of channels from `o0`: four in blocks of
/// [`quad_block`] pixels (asking for the weights ahead where `j.prefetch`), three (AVX-512
/// only), two or one in blocks of `P`; C's lines of the pixels `ahead` asked for
/// ([`direct_conv_segment`]).
///
/// # Safety
/// As [`direct_conv_segment`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn segment_block<S: Simd, const P: usize>(
    j: &DirectConvJob,
    seg: [usize; 2],
    ahead: [usize; 2],
    o0: usize,
    regs: usize,
    sums: *mut Slot<S>,
) {
    // (the conditions on the set are constants: the blocks a set never runs — four registers
    // by the other set's pixels, three registers on AVX2, whose `regs` never picks them — are
    // not instantiated)
    // SAFETY: forwarded from the caller.
    unsafe {
        match (regs, j.prefetch) {
            (4, true) if const { quad_block(S::LANES) == 3 } => {
                direct_conv_segment::<S, 3, 4, true>(j, seg, ahead, o0, sums)
            }
            (4, true) => direct_conv_segment::<S, 6, 4, true>(j, seg, ahead, o0, sums),
            (4, false) if const { quad_block(S::LANES) == 3 } => {
                direct_conv_segment::<S, 3, 4, false>(j, seg, ahead, o0, sums)
            }
            (4, false) => direct_conv_segment::<S, 6, 4, false>(j, seg, ahead, o0, sums),
            (3, _) if const { three_register_blocks(S::LANES) } => {
                direct_conv_segment::<S, P, 3, false>(j, seg, ahead, o0, sums)
            }
            (2, _) => direct_conv_segment::<S, P, 2, false>(j, seg, ahead, o0, sums),
            _ => direct_conv_segment::<S, P, 1, false>(j, seg, ahead, o0, sums),
        }
    }
}

/// Pixels `seg[0]..seg[1]` (`y·ow + x`, at most [`SEGMENT`]), channels `o0..o0 + OB·LANES`
/// (those in the job's rows stored), in blocks of `P` pixels of a row (a row's last pixels in
/// a smaller block). With `PF`, each pixel block of a chunk asks for a share of the next
/// chunk's weights into L2; each of the last chunk asks for a share of C's lines of the next
/// segment's pixels `[q0, q1)` (none when empty).
///
/// # Safety
/// As [`direct_conv`], with `o0` a multiple of `LANES`, `o0 + (OB − 1)·LANES < rows[1]`, and
/// the pixels in the job's columns.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn direct_conv_segment<S: Simd, const P: usize, const OB: usize, const PF: bool>(
    j: &DirectConvJob,
    [p0, p1]: [usize; 2],
    [q0, q1]: [usize; 2],
    o0: usize,
    sums: *mut Slot<S>,
) {
    let l = S::LANES;
    let kk = j.off.len();
    // the lines of C (and of the residual) of the next segment `[q0, q1)` in this block's
    // channels, asked for into L2 a share per pixel block of the last chunk, so that the
    // stores after it find them there: row `ao` of the block, its line `al` from pixel q0 (a
    // line more than the pixels fill, for a start inside a line). C's rows are a plane apart
    // and cold where the output is larger than L2: the 7 × 7 s2 stem 64 ← 3 on 224 × 224
    // (3.2 MB of output) in ResNet-18's profile 1.98–2.06 → 1.70–1.80 ms (three pairs; Intel
    // Xeon, family 6 model 167, one thread), and its other direct convolutions within noise
    let ahead_rows = [o0.max(j.rows[0]), (o0 + OB * l).min(j.rows[1])];
    let per_row = if q1 > q0 { (q1 - q0).div_ceil(16) + 1 } else { 0 };
    let lines = per_row * ahead_rows[1].saturating_sub(ahead_rows[0]);
    let res = j.finish.map_or(std::ptr::null(), |f| f.res);
    let (mut line, mut ao, mut al) = (0, ahead_rows[0], 0);
    // each register's weights: panel ob / pw, from its column ob % pw, a tap every pw floats
    let mut wt = [j.wt.as_ptr(); OB];
    for (b, w) in wt.iter_mut().enumerate() {
        let ob = o0 + b * l;
        *w = j.wt.as_ptr().wrapping_add((ob - ob % j.pw) * kk + ob % j.pw);
    }
    let chunk = j.chunk.max(1);
    let mut k0 = 0;
    while k0 < kk {
        let k1 = kk.min(k0.saturating_add(chunk));
        // the next chunk's weights, a line per register and tap, asked into L2 a share of
        // its taps per block of this chunk (read straight from memory, the first block of a
        // chunk would wait for them: the weights of a convolution with thousands of taps fit
        // no cache); each register's lines by a pointer a tap apart (an index per line, its
        // division by the registers and its product by the panel, cost 4 % of 3 × 3 512 →
        // 512 on 28 × 28)
        let next = if PF {
            kk.min(k1.saturating_add(chunk)) - k1
        } else {
            0
        };
        let share = next.div_ceil((p1 - p0).div_ceil(P).max(1));
        let mut asked = k1;
        let mut f = p0;
        while f < p1 {
            if PF {
                let end = (k1 + next).min(asked + share);
                // (a prefetch reads nothing: the addresses need only be computed in range)
                let mut at = wt.map(|w| w.wrapping_add(asked.wrapping_mul(j.pw)));
                for _ in asked..end {
                    for a in at.iter_mut() {
                        S::prefetch_l2(*a);
                        *a = a.wrapping_add(j.pw);
                    }
                }
                asked = end;
            }
            if k1 == kk && line < lines {
                let end = lines.min(line + lines.div_ceil((p1 - p0).div_ceil(P).max(1)));
                while line < end {
                    // (a prefetch reads nothing: the addresses need only be computed in range)
                    let at = ao * j.l + q0 + al * 16;
                    S::prefetch_l2(j.c.wrapping_add(at));
                    if !res.is_null() {
                        S::prefetch_l2(res.wrapping_add(at));
                    }
                    al += 1;
                    if al == per_row {
                        (ao, al) = (ao + 1, 0);
                    }
                    line += 1;
                }
            }
            let (y, x) = (f / j.ow, f % j.ow);
            let (base, slot) = (y * j.steps[0] + x * j.steps[1], f - p0);
            // a row's (or the segment's) last pixels in a block of as many (fewer than P: no
            // FMAs on pixels past them); the last P + 1 in two blocks, not P and one pixel
            // alone, whose block keeps one FMA chain per register and runs at half the rate
            let rest = (j.ow - x).min(p1 - f);
            let t = if rest == P + 1 {
                rest.div_ceil(2)
            } else {
                rest.min(P)
            };
            let ks = [k0, k1];
            // SAFETY: forwarded from the caller; the block's pixels x..x + t ≤ ow are the
            // row's, its slots below p1 − p0 ≤ SEGMENT (`conv_block`).
            unsafe {
                match t {
                    1 => conv_block::<S, 1, OB, 0>(j, &wt, ks, base, slot, sums),
                    2 => conv_block::<S, 2, OB, 0>(j, &wt, ks, base, slot, sums),
                    3 if const { P > 3 } => conv_block::<S, 3, OB, 0>(j, &wt, ks, base, slot, sums),
                    4 if const { P > 4 } => conv_block::<S, 4, OB, 0>(j, &wt, ks, base, slot, sums),
                    5 if const { P > 5 } => conv_block::<S, 5, OB, 0>(j, &wt, ks, base, slot, sums),
                    6 if const { P > 6 } => conv_block::<S, 6, OB, 0>(j, &wt, ks, base, slot, sums),
                    7 if const { P > 7 } => conv_block::<S, 7, OB, 0>(j, &wt, ks, base, slot, sums),
                    // (t = P ≤ 8: a block of P pixels writes no slot past the row's)
                    // (stride 1 over the copy's blocks of 8 channels, or a pointwise kernel over
                    // the image in place: the step a constant)
                    _ if j.steps[1] == BLOCK => conv_block::<S, P, OB, BLOCK>(j, &wt, ks, base, slot, sums),
                    _ if j.steps[1] == 1 => conv_block::<S, P, OB, 1>(j, &wt, ks, base, slot, sums),
                    _ => conv_block::<S, P, OB, 0>(j, &wt, ks, base, slot, sums),
                }
            }
            f += t;
        }
        k0 = k1;
    }
    // the segment's sums (pixel-major) into C's rows, 8 pixels by 8 channels at a time
    // through AVX's 8 × 8 transposes (AVX-512 hosts have AVX2): eight registers of 8 floats
    // of eight pixels' sums become 8 floats of each of 8 channels' rows
    let sp = sums.cast_const().cast::<f32>();
    for b in 0..OB {
        // on AVX-512, a register's sixteen channels (all of them the job's) eight pixels at a
        // time through 16-lane transposes ([`store_sums16`]); the rest as on AVX2
        let cr = o0 + b * l;
        let mut rest = p0;
        if const { S::LANES == 16 } && cr >= j.rows[0] && cr + 16 <= j.rows[1] {
            while p1 - rest >= 8 {
                // SAFETY: slots rest − p0..+8 ≤ p1 − p0 of `sums`, register b; channels cr..cr +
                // 16 of the job's rows and pixels rest..rest + 8 of its columns in C.
                unsafe { store_sums16(j, sp.add(((rest - p0) * 4 + b) * l), cr, rest) };
                rest += 8;
            }
        }
        for h in (0..l).step_by(8) {
            let c0 = o0 + b * l + h;
            let (oa, oz) = (c0.max(j.rows[0]), (c0 + 8).min(j.rows[1]));
            if oa >= oz {
                continue;
            }
            let mut f = rest;
            while f < p1 {
                let n = 8.min(p1 - f);
                let (slot, px) = (f - p0, f);
                // SAFETY: slots slot + i < p1 − p0 ≤ SEGMENT of `sums` (the segment's, written
                // by its blocks: none past them is read), register b < OB of each, lanes h..h +
                // 8 ≤ LANES of it; rows o ∈ [oa, oz) of the job and pixels px..px + n of its
                // columns in C, the last group stored as a prefix.
                unsafe {
                    let mut v8 = [Avx2::zero(); 8];
                    // (the lanes of pixels past the segment zero: a transpose's lanes that are
                    // not stored; a whole group by constant indices, so that the registers
                    // stay registers)
                    let at = sp.add((slot * 4 + b) * l + h);
                    if n == 8 {
                        for (i, v) in v8.iter_mut().enumerate() {
                            *v = Avx2::load(at.add(i * 4 * l));
                        }
                    } else {
                        for (i, v) in v8.iter_mut().enumerate().take(n) {
                            *v = Avx2::load(at.add(i * 4 * l));
                        }
                    }
                    Avx2::transpose8(&mut v8);
                    let at = |o: usize| j.c.add(o * j.l + px);
                    if n == 8 && oa == c0 && oz == c0 + 8 {
                        // (constant indices: the registers stay registers)
                        for (i, v) in v8.iter().enumerate() {
                            Avx2::store(at(c0 + i), finish(j, c0 + i, px, 8, *v));
                        }
                    } else {
                        for o in oa..oz {
                            Avx2::store_prefix(at(o), n, finish(j, o, px, n, v8[o - c0]));
                        }
                    }
                }
                f += 8;
            }
        }
    }
}

/// Eight pixels' finished sums of sixteen channels into C (AVX-512): the slots at `at` (a pixel's
/// register every `4 · 16` floats) through the job's epilogue ([`Finish`]) — the bias and,
/// with no residual, the activation on the pixels' registers as they are, then the 16-lane
/// transposes ([`Avx512::transpose8x16`]), then the residual and the activation, each a
/// separate rounding in the order [`finish`] takes them — stored as 8 floats of each channel's
/// row of C from pixel `px`. Half the shuffles, loads and epilogue operations of two 8 × 8
/// transposes per 16 floats: measured on an Intel Xeon (family 6 model 167, one thread, the
/// median of four alternated runs, ms, 8 × 8 → 16-lane), 3 × 3 64 → 64 on 56 × 56 + ReLU
/// 1.566 → 1.521, 64 ← 16 on 55 × 55 0.416 → 0.399, 128 → 128 on 28 × 28 + residual + ReLU
/// 1.483 → 1.459; networks (torchvision exports) SqueezeNet 1.1 0.983 of the time,
/// ResNet-18 0.986, GoogLeNet 0.987, DenseNet-121 0.979, ResNet-50 0.996, Inception v3
/// 0.983, MNASNet 0.5 0.991.
///
/// # Safety
/// The CPU has AVX-512F; `at` holds the eight slots' registers; channels `c0..c0 + 16` are
/// the job's rows and pixels `px..px + 8` its columns (inside C and, where the job has them,
/// the bias and the residual).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_sums16(j: &DirectConvJob, at: *const f32, c0: usize, px: usize) {
    use std::arch::x86_64::*;
    let f = j.finish.unwrap_or(Finish {
        bias: std::ptr::null(),
        res: std::ptr::null(),
        act: Act::NONE,
    });
    // SAFETY: as the function's contract.
    unsafe {
        // (an `if`, not `bool::then` with a closure: a closure is not compiled with the entry
        // point's target features, so the load inside it could become a call)
        let bias = if f.bias.is_null() {
            None
        } else {
            Some(_mm512_loadu_ps(f.bias.add(c0)))
        };
        let mut r = [_mm512_setzero_ps(); 8];
        for (q, v) in r.iter_mut().enumerate() {
            let mut x = _mm512_loadu_ps(at.add(q * 4 * 16));
            if let Some(b) = bias {
                x = _mm512_add_ps(x, b);
            }
            if f.res.is_null() {
                x = f.act.apply::<Avx512>(x);
            }
            *v = x;
        }
        Avx512::transpose8x16(&mut r);
        for (k, v) in r.iter().enumerate() {
            let (lo, hi) = ((c0 + k) * j.l + px, (c0 + k + 8) * j.l + px);
            let mut v = *v;
            if !f.res.is_null() {
                let rv = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castps_pd(_mm512_castps256_ps512(_mm256_loadu_ps(f.res.add(lo)))),
                    _mm256_castps_pd(_mm256_loadu_ps(f.res.add(hi))),
                ));
                v = f.act.apply::<Avx512>(_mm512_add_ps(v, rv));
            }
            _mm256_storeu_ps(j.c.add(lo), _mm512_castps512_ps256(v));
            _mm256_storeu_ps(
                j.c.add(hi),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
            );
        }
    }
}

/// The finished sums of channel `o` at pixels `px..px + n` (`n ≤ 8`), through the job's
/// epilogue ([`Finish`]).
///
/// # Safety
/// The CPU has AVX2; where the job has a bias, it holds channel `o`'s, and where it has a
/// residual, it holds `n` floats at `o·l + px`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish(
    j: &DirectConvJob,
    o: usize,
    px: usize,
    n: usize,
    v: <Avx2 as Simd>::V,
) -> <Avx2 as Simd>::V {
    let Some(f) = j.finish else {
        return v;
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut v = v;
        if !f.bias.is_null() {
            v = Avx2::add(v, Avx2::splat(*f.bias.add(o)));
        }
        if !f.res.is_null() {
            let r = f.res.add(o * j.l + px);
            v = Avx2::add(
                v,
                if n == 8 {
                    Avx2::load(r)
                } else {
                    Avx2::load_partial(r, n)
                },
            );
        }
        f.act.apply::<Avx2>(v)
    }
}

/// Taps `ks[0]..ks[1]` of `P` pixels by `OB` registers of channels of a segment: the pixels'
/// taps from `base` in the copy (a pixel every `steps[1]` floats: `STEP` where it is not 0,
/// the one the caller found in `steps[1]`), their sums from slot `slot` (the partial sums of
/// the taps before `ks[0]`, none when it is 0) back to it.
///
/// A constant step makes each pixel's input an offset from one pointer. With the step read
/// from the job, the 8-pixel blocks of two registers (AVX-512, outputs of 17 to 48 channels)
/// kept five of their eight pixel pointers on the stack and reloaded them every tap: 16
/// loads per 16 FMAs, as many as two load ports take. Measured with the copy's blocks of 8
/// channels at stride 1 as `STEP` (an Intel Xeon, family 6 model 167, one thread, each
/// convolution alone with its bias and ReLU, ms, two alternations): 3 × 3 32 ← 128 on 56 × 56
/// (DenseNet-121's) 1.80 → 1.64, on 28 × 28 0.433 → 0.397, on 14 × 14 0.110 → 0.103;
/// DenseNet-121 0.974 of its time (four alternations); the four-register blocks (6 pixels)
/// alike (64 → 64 on 56 × 56 1.00, 96 → 128 on 28 × 28 1.00). The pointwise kernels read in
/// place (a step of 1) too: 1 × 1 48 ← 288 on 14 × 14 0.054 → 0.049, 96 ← 576 0.158 →
/// 0.151; MNASNet 0.5, MobileNet v2, EfficientNet-B0 and GoogLeNet 0.987–0.992 (four
/// alternations each).
///
/// # Safety
/// As [`direct_conv_segment`]: taps off[k] + base + q·steps[1], q < P ≤ 8, lie in `pad`;
/// `wt[b]` is register b's weights (a tap every `pw` floats, `LANES` each, within `wt`);
/// `slot + P ≤ SEGMENT`, and `sums` holds the slots from `slot` (written before, where `ks[0] >
/// 0`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn conv_block<S: Simd, const P: usize, const OB: usize, const STEP: usize>(
    j: &DirectConvJob,
    wt: &[*const f32; OB],
    [k0, k1]: [usize; 2],
    base: usize,
    slot: usize,
    sums: *mut Slot<S>,
) {
    let pad = j.pad.as_ptr();
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut acc = [[S::zero(); P]; OB];
        if k0 > 0 {
            for (b, row) in acc.iter_mut().enumerate() {
                for (q, a) in row.iter_mut().enumerate() {
                    *a = (*sums.add(slot + q))[b];
                }
            }
        }
        let step = if STEP > 0 { STEP } else { j.steps[1] };
        for k in k0..k1 {
            let at = pad.add(*j.off.get_unchecked(k) + base);
            if P >= OB {
                // the weights first, each broadcast input used at once (2 × 6 on AVX2: 12
                // accumulators, 2 weights and 1 input in its 16 registers; 4 × 6 on AVX-512:
                // 24, 4 and 1 of its 32)
                let mut wv = [S::zero(); OB];
                for (b, w) in wv.iter_mut().enumerate() {
                    *w = S::load(wt[b].add(k * j.pw));
                }
                for q in 0..P {
                    let v = S::splat(*at.add(q * step));
                    for (row, w) in acc.iter_mut().zip(wv) {
                        row[q] = S::fma(v, w, row[q]);
                    }
                }
            } else {
                // the inputs first, each weight vector used at once (4 × 3: 12 accumulators, 3
                // inputs and 1 weight)
                let mut xv = [S::zero(); P];
                for (q, v) in xv.iter_mut().enumerate() {
                    *v = S::splat(*at.add(q * step));
                }
                for (b, row) in acc.iter_mut().enumerate() {
                    let w = S::load(wt[b].add(k * j.pw));
                    for (a, v) in row.iter_mut().zip(xv) {
                        *a = S::fma(v, w, *a);
                    }
                }
            }
        }
        for (b, row) in acc.iter().enumerate() {
            for (q, a) in row.iter().enumerate() {
                (*sums.add(slot + q))[b] = *a;
            }
        }
    }
}

/// A `gemm` node's epilogue (`gemm::EpilogueFn`) on a finished block of C, `rows × cols`
/// floats with rows `ld` bytes apart, read from `src` (rows `src_ld` bytes apart: C itself, or
/// the scratch a wide product computed the block in) and written to C: the row's bias (the
/// column's with `COLS`, a dense layer's; when `bias` is not null), then the residual's element
/// (when `res` is not null; the same layout as C), then the activation `act`, each a separate
/// rounding in that order, as the Cranelift epilogue (`lower::emit_gemm_epilogue`) and the
/// interpreter compute them; a register of columns at a time, the last partial.
///
/// # Safety
/// `c` (and `res` when not null) hold the block, `src` its source (`c` itself, or a block
/// that does not overlap C); `bias` (when not null) one float per row (per column with
/// `COLS`); the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn gemm_epilogue<S: Simd, const COLS: bool>(
    c: *mut f32,
    src: *const f32,
    res: *const f32,
    bias: *const f32,
    sizes: [i64; 4],
    act: Act,
) {
    use crate::elementwise_kernels::{self as ek, Clip, Ident, LeakyRelu, Relu, Sigmoid, Silu};
    // one loop per activation of a few instructions, the others chosen per register
    // SAFETY: forwarded from the caller.
    unsafe {
        match act.code {
            ek::NONE => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, Ident),
            ek::RELU => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, Relu),
            ek::CLIP => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, Clip(act.a, act.b)),
            ek::LEAKY_RELU => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, LeakyRelu(act.a)),
            ek::SIGMOID => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, Sigmoid),
            ek::SILU => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, Silu),
            _ => epilogue_map::<S, _, COLS>(c, src, res, bias, sizes, act),
        }
    }
}

/// [`gemm_epilogue`] with the activation `m`: one loop per kind of bias (none, per row, per
/// column) and residual (none, one), so that the loop over a row's registers tests nothing.
///
/// # Safety
/// As [`gemm_epilogue`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn epilogue_map<S: Simd, M: crate::elementwise_kernels::Map<S>, const COLS: bool>(
    c: *mut f32,
    src: *const f32,
    res: *const f32,
    bias: *const f32,
    sizes: [i64; 4],
    m: M,
) {
    let p = (c, src, res, bias);
    // a block of one column whose rows are adjacent floats (a 1 × 1 convolution over a 1 × 1
    // map, C `[M, 1]`: a squeeze-and-excitation's) is one row of `rows` floats, its bias per
    // row one per float: registers of rows instead of a partial register per row (1152 rows
    // with their bias and a ReLU took 0.011 ms, two thirds of such a convolution's time)
    let one_row = !COLS && sizes[1] == 1 && sizes[2] == 4 && sizes[3] == 4;
    let (sizes, cols_bias) = if one_row {
        (
            [
                1,
                sizes[0],
                sizes[0].saturating_mul(4),
                sizes[0].saturating_mul(4),
            ],
            true,
        )
    } else {
        (sizes, COLS)
    };
    // SAFETY: forwarded from the caller (the one row above: the block's floats, bias and
    // residual, in the same order).
    unsafe {
        match (bias.is_null(), cols_bias, res.is_null()) {
            (true, _, true) => epilogue_rows::<S, M, EPI_NO_BIAS, false>(p, sizes, m),
            (true, _, false) => epilogue_rows::<S, M, EPI_NO_BIAS, true>(p, sizes, m),
            (false, false, true) => epilogue_rows::<S, M, ROW_BIAS, false>(p, sizes, m),
            (false, false, false) => epilogue_rows::<S, M, ROW_BIAS, true>(p, sizes, m),
            (false, true, true) => epilogue_rows::<S, M, COL_BIAS, false>(p, sizes, m),
            (false, true, false) => epilogue_rows::<S, M, COL_BIAS, true>(p, sizes, m),
        }
    }
}

/// `epilogue_rows`'s kinds of bias.
const EPI_NO_BIAS: u8 = 0;
const ROW_BIAS: u8 = 1;
const COL_BIAS: u8 = 2;

/// [`epilogue_map`]'s loops over `(c, src, res, bias)`: the bias of kind `BIAS`, the residual
/// when `RES`, then `m`; whole registers, then the row's last partial one.
///
/// # Safety
/// As [`gemm_epilogue`], with `bias` not null unless `BIAS` is [`EPI_NO_BIAS`] and `res` not
/// null when `RES`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn epilogue_rows<S: Simd, M: crate::elementwise_kernels::Map<S>, const BIAS: u8, const RES: bool>(
    (c, src, res, bias): (*mut f32, *const f32, *const f32, *const f32),
    sizes: [i64; 4],
    m: M,
) {
    let l = S::LANES;
    let [rows, cols, ld, src_ld] = sizes.map(|v| usize::try_from(v).unwrap_or(0));
    let (ld, src_ld) = (ld / 4, src_ld / 4);
    let full = cols / l * l;
    // SAFETY (the whole body): row r < rows and columns j..j + n ≤ cols of the block (n = l
    // below `full`, the rest after it).
    unsafe {
        for r in 0..rows {
            let (crow, srow) = (c.add(r * ld), src.add(r * src_ld));
            let b = if BIAS == ROW_BIAS {
                S::splat(*bias.add(r))
            } else {
                S::zero()
            };
            let rrow = res.wrapping_add(r * ld);
            let at = |j| (srow.add(j), rrow.wrapping_add(j), bias.wrapping_add(j));
            let mut j = 0;
            // four registers at a time: four independent chains through an activation of
            // many operations (SiLU, sigmoid: 0.88 ms on one register at a time over a 96 ×
            // 12544 C, as against 0.66 for the standalone kernel's four)
            while j + 4 * l <= full {
                let v0 = m.f(epilogue_in::<S, BIAS, RES>(at(j), b));
                let v1 = m.f(epilogue_in::<S, BIAS, RES>(at(j + l), b));
                let v2 = m.f(epilogue_in::<S, BIAS, RES>(at(j + 2 * l), b));
                let v3 = m.f(epilogue_in::<S, BIAS, RES>(at(j + 3 * l), b));
                S::store(crow.add(j), v0);
                S::store(crow.add(j + l), v1);
                S::store(crow.add(j + 2 * l), v2);
                S::store(crow.add(j + 3 * l), v3);
                j += 4 * l;
            }
            while j < full {
                S::store(crow.add(j), m.f(epilogue_in::<S, BIAS, RES>(at(j), b)));
                j += l;
            }
            if full < cols {
                let n = cols - full;
                let mut v = S::load_partial(srow.add(full), n);
                if BIAS == ROW_BIAS {
                    v = S::add(v, b);
                } else if BIAS == COL_BIAS {
                    v = S::add(v, S::load_partial(bias.add(full), n));
                }
                if RES {
                    v = S::add(v, S::load_partial(rrow.add(full), n));
                }
                S::store_partial(crow.add(full), n, m.f(v));
            }
        }
    }
}

/// One register of [`epilogue_rows`]' sums before the activation: the register at `src`, plus
/// the bias (`b`, the row's, or the register at `bias`: the columns') and the residual's
/// register at `res`, as `BIAS` and `RES` say.
///
/// # Safety
/// As [`epilogue_rows`]: a register readable at `src`, and at `bias` and `res` where used.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn epilogue_in<S: Simd, const BIAS: u8, const RES: bool>(
    (src, res, bias): (*const f32, *const f32, *const f32),
    b: S::V,
) -> S::V {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut v = S::load(src);
        if BIAS == ROW_BIAS {
            v = S::add(v, b);
        } else if BIAS == COL_BIAS {
            v = S::add(v, S::load(bias));
        }
        if RES {
            v = S::add(v, S::load(res));
        }
        v
    }
}

/// Global max or average pooling over the planes `[begin, end)`.
///
/// # Safety
/// As [`pool2d`], for a global pooling node.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn global_pool<S: Simd>(d: *const GlobalPoolDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((begin, end)) = range(begin, end, d.planes) else {
        return;
    };
    let len = d.len as usize;
    let (xa, ya) = (at(arena, d.x).cast_const(), at(arena, d.y));
    for plane in begin..end {
        let xp = xa.wrapping_add(plane * len);
        // SAFETY: the plane's `len` floats and its one output.
        unsafe {
            *ya.add(plane) = if d.max != 0 {
                global_max::<S>(xp, len)
            } else {
                global_avg::<S>(xp, len)
            }
        };
    }
}

/// The maximum of the `len ≥ 1` floats at `x` with the interpreter's rule (the first NaN
/// wins).
///
/// # Safety
/// `len` floats at `x`; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn global_max<S: Simd>(x: *const f32, len: usize) -> f32 {
    let l = S::LANES;
    let full = len / l * l;
    // SAFETY (the whole body): every load is of full registers below `full` or single floats
    // below `len`.
    unsafe {
        let mut acc = [S::splat(f32::NEG_INFINITY); 4];
        let mut probe = [S::zero(); 4];
        let mut i = 0;
        // as `global_avg`: whole rounds of four registers, then the rest
        while i + 4 * l <= full {
            for (a, p) in acc.iter_mut().zip(probe.iter_mut()) {
                let v = S::load(x.add(i));
                *a = S::max(v, *a);
                *p = S::add(*p, v);
                i += l;
            }
        }
        while i < full {
            for (a, p) in acc.iter_mut().zip(probe.iter_mut()) {
                if i < full {
                    let v = S::load(x.add(i));
                    *a = S::max(v, *a);
                    *p = S::add(*p, v);
                    i += l;
                }
            }
        }
        let probe = S::add(S::add(probe[0], probe[1]), S::add(probe[2], probe[3]));
        if S::any_nan(probe)
            && let Some(nan) = (0..full).map(|j| *x.add(j)).find(|v| v.is_nan())
        {
            return nan;
        }
        let m = S::max(S::max(acc[0], acc[1]), S::max(acc[2], acc[3]));
        let mut lanes = [f32::NEG_INFINITY; 16];
        S::store(lanes.as_mut_ptr(), m);
        let mut r = f32::NEG_INFINITY;
        for &v in lanes.iter().take(l) {
            if v > r {
                r = v;
            }
        }
        for j in full..len {
            let v = *x.add(j);
            if v > r || (v.is_nan() && !r.is_nan()) {
                r = v;
            }
        }
        r
    }
}

/// The mean of the `len ≥ 1` floats at `x`.
///
/// # Safety
/// As [`global_max`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn global_avg<S: Simd>(x: *const f32, len: usize) -> f32 {
    let l = S::LANES;
    // SAFETY: every load is of at most the `len − i` floats left.
    unsafe {
        let mut acc = [S::zero(); 4];
        let mut i = 0;
        // whole rounds of four registers without a test per register, then the rest in the
        // same round-robin order (the same sums)
        while i + 4 * l <= len {
            for a in &mut acc {
                *a = S::add(*a, S::load(x.add(i)));
                i += l;
            }
        }
        while i < len {
            for a in &mut acc {
                if i < len {
                    *a = S::add(*a, load_n::<S>(x.add(i), len - i));
                    i += l;
                }
            }
        }
        S::hsum(S::add(S::add(acc[0], acc[1]), S::add(acc[2], acc[3]))) / len as f32
    }
}

/// `R` batch rows × `O` outputs from `(n0, o0)`: `R·O` dot products over the inputs, one
/// register of inputs at a time (the last partial).
///
/// # Safety
/// Rows `n0..n0 + R` and outputs `o0..o0 + O` must exist; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dense_block<S: Simd, const R: usize, const O: usize>(
    d: &DenseDesc,
    arena: *mut u8,
    n0: usize,
    o0: usize,
) {
    let (k, outs) = (d.inputs as usize, d.outputs as usize);
    let (xa, wa, ya) = (
        at(arena, d.x).cast_const(),
        at(arena, d.w).cast_const(),
        at(arena, d.y),
    );
    // SAFETY (the whole body): rows n0 + r < batch and outputs o0 + o < outputs, inputs
    // i..min(i + L, k).
    unsafe {
        let mut acc = [[S::zero(); O]; R];
        let mut i = 0;
        while i < k {
            let mut xv = [S::zero(); R];
            for (r, v) in xv.iter_mut().enumerate() {
                *v = load_n::<S>(xa.add((n0 + r) * k + i), k - i);
            }
            for o in 0..O {
                let wv = load_n::<S>(wa.add((o0 + o) * k + i), k - i);
                for (x, row) in xv.iter().zip(acc.iter_mut()) {
                    row[o] = S::fma(*x, wv, row[o]);
                }
            }
            i += S::LANES;
        }
        for (r, row) in acc.iter().enumerate() {
            for (o, a) in row.iter().enumerate() {
                let b = if d.bias == NO_BIAS {
                    0.0
                } else {
                    *at(arena, d.bias).add(o0 + o)
                };
                *ya.add((n0 + r) * outs + o0 + o) = S::hsum(*a) + b;
            }
        }
    }
}

/// A dense layer over the outputs `[begin, end)`, every batch row: tiles of `R × O`, then
/// single outputs; rows left over one at a time, eight outputs at a time.
///
/// # Safety
/// As [`dense_block`], for outputs in `[begin, end)`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dense_tiles<S: Simd, const R: usize, const O: usize>(
    d: &DenseDesc,
    arena: *mut u8,
    begin: usize,
    end: usize,
) {
    let batch = d.batch as usize;
    let mut n0 = 0;
    // SAFETY (every call): rows < batch and outputs in [begin, end) ⊆ [0, outputs).
    unsafe {
        while n0 + R <= batch {
            let mut o = begin;
            while o + O <= end {
                dense_block::<S, R, O>(d, arena, n0, o);
                o += O;
            }
            while o < end {
                dense_block::<S, R, 1>(d, arena, n0, o);
                o += 1;
            }
            n0 += R;
        }
        while n0 < batch {
            let mut o = begin;
            while o + 8 <= end {
                dense_block::<S, 1, 8>(d, arena, n0, o);
                o += 8;
            }
            while o < end {
                dense_block::<S, 1, 1>(d, arena, n0, o);
                o += 1;
            }
            n0 += 1;
        }
    }
}

/// A dense layer over the outputs `[begin, end)`, every batch row. The tile fits the set's
/// register file: 4 × 4 accumulators (and four rows of inputs) in AVX-512's 32 registers,
/// 4 × 2 in AVX2's 16.
///
/// # Safety
/// As [`pool2d`], for a dense layer.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dense<S: Simd>(d: *const DenseDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let Some((begin, end)) = range(begin, end, d.outputs) else {
        return;
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        if const { S::LANES >= 16 } {
            dense_tiles::<S, 4, 4>(&d, arena, begin, end)
        } else {
            dense_tiles::<S, 4, 2>(&d, arena, begin, end)
        }
    }
}

/// An inference batch norm over the planes `[begin, end)`: per plane, its channel's `k` and
/// shift with the arithmetic of the Cranelift kernel (`lower::elementwise::batch_norm`: `k =
/// scale / √(var + eps)`, `shift = bias − k·mean`, each a rounding), then `x·k + shift` with
/// one rounding per float, a register at a time (the last partial): the same bits; then the
/// fused activation, one loop per short one (as the GEMM epilogue's).
///
/// # Safety
/// As [`pool2d`], for an inference batch norm.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn batch_norm<S: Simd>(d: *const NormDesc, arena: *mut u8, begin: i64, end: i64) {
    use crate::elementwise_kernels::{self as ek, Act, Clip, Ident, LeakyRelu, Relu};
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let act = Act {
        code: d.act,
        a: f32::from_bits(d.act_a as u32),
        b: f32::from_bits(d.act_b as u32),
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        match act.code {
            ek::NONE => batch_norm_map::<S, _>(&d, arena, begin, end, Ident),
            ek::RELU => batch_norm_map::<S, _>(&d, arena, begin, end, Relu),
            ek::CLIP => batch_norm_map::<S, _>(&d, arena, begin, end, Clip(act.a, act.b)),
            ek::LEAKY_RELU => batch_norm_map::<S, _>(&d, arena, begin, end, LeakyRelu(act.a)),
            _ => batch_norm_map::<S, _>(&d, arena, begin, end, act),
        }
    }
}

/// [`batch_norm`] with the activation `m`.
///
/// # Safety
/// As [`batch_norm`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn batch_norm_map<S: Simd, M: crate::elementwise_kernels::Map<S>>(
    d: &NormDesc,
    arena: *mut u8,
    begin: i64,
    end: i64,
    m: M,
) {
    let (channels, plane) = (d.channels as usize, d.plane as usize);
    let Some((b, e)) = range(begin, end, d.planes) else {
        return;
    };
    let eps = f32::from_bits(d.eps as u32);
    let (x, y) = (at(arena, d.x), at(arena, d.y));
    let [scale, bias, mean, var] = [d.scale, d.bias, d.mean, d.var].map(|o| at(arena, o));
    let l = S::LANES;
    for p in b..e {
        let c = p % channels.max(1);
        // SAFETY: plane p of the node's input and output, channel c of its parameters.
        unsafe {
            let k = *scale.add(c) / (*var.add(c) + eps).sqrt();
            let shift = *bias.add(c) - k * *mean.add(c);
            let (kv, sv) = (S::splat(k), S::splat(shift));
            let (src, dst) = (x.add(p * plane), y.add(p * plane));
            let mut i = 0;
            while i + l <= plane {
                S::store(dst.add(i), m.f(S::fma(S::load(src.add(i)), kv, sv)));
                i += l;
            }
            if i < plane {
                let v = S::fma(S::load_partial(src.add(i), plane - i), kv, sv);
                S::store_partial(dst.add(i), plane - i, m.f(v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometries() -> Vec<Window2d> {
        let mut v = Vec::new();
        for (n, k, s, d, pb, pe) in [
            (10, 3, 1, 1, 1, 1),
            (7, 3, 2, 2, 0, 3),
            (5, 6, 1, 1, 0, 1),
            (112, 3, 2, 1, 1, 1),
            (9, 2, 3, 1, 2, 0),
            (4, 3, 1, 1, 2, 2),
            (30, 2, 1, 1, 20, 20),
            (6, 3, 1, 3, 12, 11),
        ] {
            let ext = d * (k - 1) + 1;
            let out = (n + pb + pe - ext) / s + 1;
            v.push(Window2d {
                input: [n, 3],
                kernel: [k, 1],
                stride: [s, 1],
                dilation: [d, 1],
                pad: [pb, 0, pe, 0],
                output: [out, 3],
            });
            v.push(Window2d {
                input: [3, n],
                kernel: [1, k],
                stride: [1, s],
                dilation: [1, d],
                pad: [0, pb, 0, pe],
                output: [3, out],
            });
        }
        v
    }

    #[test]
    fn interior_outputs_are_those_whose_taps_are_all_real() {
        for g in geometries() {
            for a in 0..2 {
                let (lo, hi) = interior(&g, a);
                for o in 0..g.output[a] {
                    let t = g.taps(a, o);
                    assert_eq!(
                        (lo..hi).contains(&o),
                        t.lo == 0 && t.hi == g.kernel[a],
                        "{g:?} axis {a}: output {o}"
                    );
                }
            }
        }
    }

    /// A window at stride 1 on an `h × w` input (as many outputs per row as inputs where the
    /// left and right padding add up to the kernel's reach).
    fn same(h: usize, w: usize, k: [usize; 2], d: [usize; 2], pad: [usize; 4]) -> Window2d {
        let out = |n: usize, a: usize| n + pad[a] + pad[a + 2] - d[a] * (k[a] - 1);
        Window2d {
            input: [h, w],
            kernel: k,
            stride: [1, 1],
            dilation: d,
            pad,
            output: [out(h, 0), out(w, 1)],
        }
    }

    /// Every lane [`pool_flat`] reads is a real tap of its output, inside the input plane, at
    /// the input pixel the window names; every real tap of every output is read; the divisor
    /// is the interpreter's count. And the shapes it takes and leaves.
    #[test]
    fn flat_planes_read_the_real_taps_inside_the_plane() {
        let cases = [
            same(17, 17, [3, 3], [1, 1], [1, 1, 1, 1]),
            same(35, 35, [3, 3], [1, 1], [1, 1, 1, 1]),
            same(8, 8, [3, 3], [1, 1], [1, 1, 1, 1]),
            same(7, 7, [5, 5], [1, 1], [2, 2, 2, 2]),
            same(1, 1, [3, 3], [1, 1], [1, 1, 1, 1]),
            same(3, 20, [3, 3], [1, 1], [1, 1, 1, 1]),
            // uneven rows of padding (as many outputs as the width), dilation, padding wider
            // than the plane
            same(5, 9, [3, 3], [2, 2], [0, 2, 4, 2]),
            same(2, 6, [3, 1], [1, 1], [2, 0, 0, 0]),
            same(4, 3, [1, 5], [1, 3], [0, 6, 0, 6]),
            same(9, 16, [2, 2], [1, 1], [1, 0, 0, 1]),
        ];
        for g in cases {
            let fg = FlatPlanes::new(&g, POOL_AVG).unwrap_or_else(|| panic!("{g:?}"));
            let ([h, w], [oh, ow], [kh, kw]) = (g.input, g.output, g.kernel);
            let taps = kh * kw;
            assert_eq!(fg.regs, (oh * ow).div_ceil(16));
            for r in 0..fg.regs {
                for j in 0..16 {
                    let i = r * 16 + j;
                    let (oy, ox) = (i / ow, i % ow);
                    let (ty, tx) = (g.taps(0, oy), g.taps(1, ox));
                    for t in 0..taps {
                        let (ky, kx) = (t / kw, t % kw);
                        let read = fg.masks[r * taps + t] >> j & 1 == 1;
                        let real =
                            i < oh * ow && (ty.lo..ty.hi).contains(&ky) && (tx.lo..tx.hi).contains(&kx);
                        assert_eq!(read, real, "{g:?}: output {i}, tap {t}");
                        if read {
                            let at = i as isize + fg.off[t];
                            let iy = oy + ky * g.dilation[0] - g.pad[0];
                            let ix = ox + kx * g.dilation[1] - g.pad[1];
                            assert!(iy < h && ix < w);
                            assert_eq!(at, (iy * w + ix) as isize, "{g:?}: output {i}, tap {t}");
                        }
                    }
                    if i < oh * ow {
                        assert_eq!(fg.divisor[i], (ty.real() * tx.real()) as f32);
                    }
                }
            }
        }
        let g = same(17, 17, [3, 3], [1, 1], [1, 1, 1, 1]);
        assert!(FlatPlanes::new(&g, POOL_MAX).is_none());
        assert!(FlatPlanes::new(&g, POOL_SUM).is_some_and(|f| f.divisor.iter().all(|&d| d == 1.0)));
        // the ring's rows fill their registers; too many outputs; strides; narrower outputs
        assert!(FlatPlanes::new(&same(28, 28, [3, 3], [1, 1], [1, 1, 1, 1]), POOL_AVG).is_none());
        assert!(FlatPlanes::new(&same(40, 40, [3, 3], [1, 1], [1, 1, 1, 1]), POOL_AVG).is_none());
        let mut s2 = same(16, 16, [3, 3], [1, 1], [1, 1, 1, 1]);
        (s2.stride, s2.output) = ([2, 2], [8, 8]);
        assert!(FlatPlanes::new(&s2, POOL_AVG).is_none());
        assert!(FlatPlanes::new(&same(14, 14, [3, 3], [1, 1], [0, 0, 0, 0]), POOL_AVG).is_none());
    }

    #[test]
    fn axis_taps_are_the_windows_taps() {
        for g in geometries() {
            for a in 0..2 {
                let t = AxisTaps::new(&g, a);
                for o in 0..g.output[a] {
                    assert_eq!(t.get(o), g.taps(a, o), "{g:?} axis {a}: output {o}");
                }
            }
        }
    }
}
