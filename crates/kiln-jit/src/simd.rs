//! The vector instruction sets of the Rust kernel tiers, behind one trait so that each kernel
//! (GEMM micro-kernel, pooling, depthwise, dense, …) is written once, generic over [`Simd`],
//! and instantiated per instruction set inside a `#[target_feature]` entry point:
//!
//! ```ignore
//! #[target_feature(enable = "avx2,fma")]
//! unsafe fn pool_avx2(d: &PoolDesc, …) { unsafe { pool::<Avx2>(d, …) } }
//! #[target_feature(enable = "avx512f")]
//! unsafe fn pool_avx512(d: &PoolDesc, …) { unsafe { pool::<Avx512>(d, …) } }
//! ```
//!
//! Every method is `#[inline(always)]`, so it is inlined into the entry point and compiled
//! with the entry point's features. A method must only run on a CPU that has its set
//! ([`Isa::available`]); the entry points are only selected where it does.
//!
//! Cranelift has no vector type wider than 128 bits: its `f32x4` code is the portable tier
//! ([`Isa::Cranelift`]), on any host the JIT runs on.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// An instruction set the kernels are built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F: 16 lanes, 32 registers.
    Avx512,
    /// AVX2 with FMA: 8 lanes, 16 registers.
    Avx2,
    /// Cranelift's own `f32x4` code (SSE-class, 16 registers).
    Cranelift,
}

impl Isa {
    /// Whether this CPU can run code of this set.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                // (its kernels use AVX2's 8 × 8 transposes too: the direct convolution's store)
                Isa::Avx512 => {
                    std::arch::is_x86_feature_detected!("avx512f")
                        && std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
                Isa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
                }
                Isa::Cranelift => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Cranelift
        }
    }

    /// The best set this CPU has.
    pub fn host() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|i| i.available())
            .unwrap_or(Isa::Cranelift)
    }

    /// f32 lanes per vector register.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2 => 8,
            Isa::Cranelift => 4,
        }
    }

    /// The name the CLI and the docs use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Cranelift => "cranelift",
        }
    }
}

/// One instruction set's `f32` vector operations.
///
/// # Safety
/// Implementations must only be used on CPUs that have the set (see the module docs); the
/// pointer methods have the safety contracts of the loads and stores they wrap.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::missing_safety_doc)] // the section above is every method's
pub unsafe trait Simd: Copy {
    /// The vector register type.
    type V: Copy;
    /// `f32` lanes per vector.
    const LANES: usize;
    /// The set these operations belong to.
    const ISA: Isa;

    /// All lanes zero.
    unsafe fn zero() -> Self::V;
    /// All lanes `x`.
    unsafe fn splat(x: f32) -> Self::V;
    /// `LANES` floats from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self::V;
    /// Stores `LANES` floats at `p` (unaligned).
    unsafe fn store(p: *mut f32, v: Self::V);
    /// The first `n ≤ LANES` floats from `p`, the other lanes zero; only `n` floats are read.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n ≤ LANES` lanes at `p`; only `n` floats are written.
    unsafe fn store_partial(p: *mut f32, n: usize, v: Self::V);
    /// [`Simd::store_partial`] without a masked store where the set's is slow (AVX2's
    /// `vmaskmovps` to memory on AMD's cores): for a row's last few outputs. Measured on the
    /// EPYC Zen 3 (one thread, the pool alone, ms): max 2 × 2 s2 on 64 × 16 × 10 × 10 (rows
    /// of 5) 0.149 -> 0.119, on 64 × 6 × 28 × 28 0.170 -> 0.136, avg 3 × 3 s1 on 1024 × 7 × 7
    /// 0.102 -> 0.079; the ring passes of pooling and depthwise convolution (3 × 3 s2 max on
    /// 128 × 55 × 55 0.276 -> 0.226, depthwise 3 × 3 on 544 × 7 × 7 0.149 -> 0.087); but
    /// slower than the masked store in LeNet-5's small convolution (a full load of the floats
    /// just stored, later, cannot be forwarded from several stores), and no faster in the GEMM
    /// epilogue.
    #[inline(always)]
    unsafe fn store_prefix(p: *mut f32, n: usize, v: Self::V) {
        // SAFETY: forwarded from the caller.
        unsafe { Self::store_partial(p, n, v) }
    }
    /// Asks for the cache line that holds `p` in L2: a hint that reads nothing and cannot
    /// fault, so `p` need not point into anything.
    #[inline(always)]
    fn prefetch_l2(p: *const f32) {
        // SAFETY: a prefetch (SSE, every x86-64 CPU has it) accesses no memory.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
    /// `a·b + c`, one rounding.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `a + b`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `a − b`.
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// `a · b`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise maximum with x86's rule: `b` when either is NaN (callers that must follow
    /// the interpreter's NaN rule check for NaN themselves).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    /// Lane-wise minimum, x86's NaN rule as [`Simd::max`].
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Whether any lane is NaN.
    unsafe fn any_nan(v: Self::V) -> bool;
    /// Whether any lane of `a` or of `b` is NaN (one comparison).
    unsafe fn any_nan2(a: Self::V, b: Self::V) -> bool;
    /// The sum of the lanes (in an order fixed per set).
    unsafe fn hsum(v: Self::V) -> f32;
    /// `a / b`, correctly rounded.
    unsafe fn div(a: Self::V, b: Self::V) -> Self::V;
    /// The even elements of the `2·LANES` floats `lo, hi` (a stride-2 load from two contiguous
    /// loads), in an order of the set's choosing that [`Simd::order_even`] puts right:
    /// lane-wise operations commute with it, so a kernel can order its result once instead of
    /// every load.
    unsafe fn even_lanes(lo: Self::V, hi: Self::V) -> Self::V;
    /// `[lo₀, lo₂, …, hi₀, hi₂, …]` from `even_lanes(lo, hi)`.
    unsafe fn order_even(v: Self::V) -> Self::V;
    /// Lanes `i < n ≤ LANES` from `p + i·s`, the others zero; only those `n` floats are read.
    /// `s·(LANES − 1)` must fit an `i32`.
    unsafe fn gather(p: *const f32, s: usize, n: usize) -> Self::V;
    /// Lane-wise `if v < 0 { t } else { v }` (a NaN `v` stays).
    unsafe fn where_negative(v: Self::V, t: Self::V) -> Self::V;
    /// Lane-wise `if a < b { t } else { f }` (`f` where either is NaN).
    unsafe fn select_lt(a: Self::V, b: Self::V, t: Self::V, f: Self::V) -> Self::V;
    /// Each lane rounded to the nearest integer, ties to even (NaN and ±∞ stay).
    unsafe fn round(v: Self::V) -> Self::V;
    /// `p·2ⁿ` for lanes `n` that are integers in `[−126, 127]`, correctly rounded (one
    /// `vscalefps` on AVX-512; elsewhere a product by `2ⁿ` built in the exponent bits, which
    /// rounds the same).
    unsafe fn scale2(p: Self::V, n: Self::V) -> Self::V;
    /// `|v|` (the sign bit cleared, NaN included).
    unsafe fn abs(v: Self::V) -> Self::V;

    /// `−v` exactly (`−0 − v`: the sign flips for zeros too, NaN stays NaN).
    #[inline(always)]
    unsafe fn neg(v: Self::V) -> Self::V {
        unsafe { Self::sub(Self::splat(-0.0), v) }
    }

    /// `eˣ`, the algorithm of the Cranelift tier's `Emitter::exp`, lane for lane:
    /// [`Simd::exp_clamped`], then `+∞` above `ln(f32::MAX)` and 0 below −103.97 (the smallest
    /// subnormal's log). Relative error below 1e-7 on `[−87, 88]`, `e⁻⁸⁷` between −103.97 and
    /// −87 (no subnormals); NaN for NaN.
    #[inline(always)]
    unsafe fn exp(x_in: Self::V) -> Self::V {
        unsafe {
            let r = Self::exp_clamped(x_in);
            let r = Self::select_lt(Self::splat(EXP_OVERFLOW), x_in, Self::splat(f32::INFINITY), r);
            Self::select_lt(x_in, Self::splat(EXP_UNDERFLOW), Self::zero(), r)
        }
    }

    /// `eˣ` of `x` clamped to `[−87, 88]` (so `e⁸⁸` for every larger `x`, `e⁻⁸⁷` for every
    /// smaller), the algorithm of the Cranelift tier's `Emitter::exp_clamped`: `x = n·ln2 + r`
    /// (ln 2 in two parts, each step one FMA, `|r| ≤ ln2/2`), the degree-7 Taylor polynomial of
    /// `eʳ` (truncation below 6e-9), scaled by `2ⁿ`. Where `eˣ` only ever meets `1 +` or
    /// `1 −` (sigmoid, tanh, erf's tails) the underflow limit changes nothing, and the two
    /// selects of [`Simd::exp`] are a sixth of its operations.
    #[inline(always)]
    unsafe fn exp_clamped(x_in: Self::V) -> Self::V {
        unsafe {
            // x86's max/min return the second operand when either is NaN: NaN stays
            let x = Self::min(Self::splat(88.0), Self::max(Self::splat(-87.0), x_in));
            let n = Self::round(Self::mul(x, Self::splat(std::f32::consts::LOG2_E)));
            let r = Self::fma(n, Self::splat(-LN2_HI), x);
            let r = Self::fma(n, Self::splat(-LN2_LO), r);
            let mut p = Self::splat(1.0 / 5040.0);
            for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
                p = Self::fma(p, r, Self::splat(c));
            }
            Self::scale2(p, n)
        }
    }
}

/// `ln(f32::MAX)`, above which `eˣ` is `+∞`, and the log of half the smallest subnormal,
/// below which it is 0: the limits `exp` puts back after [`Simd::exp_clamped`] (the Cranelift
/// tier's too).
pub(crate) const EXP_OVERFLOW: f32 = 88.722_84;
pub(crate) const EXP_UNDERFLOW: f32 = -103.972_08;

/// ln 2 in two parts for `exp`'s range reduction (`LN2_HI` has 9 trailing zero bits, so
/// `n·LN2_HI` is exact for every `|n| ≤ 128`): the Cranelift tier's constants too.
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;

/// The AVX-512F set.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub struct Avx512;

/// The AVX2 + FMA set.
#[cfg(target_arch = "x86_64")]
#[derive(Debug, Clone, Copy)]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
fn mask16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

// SAFETY: every method is an AVX-512F intrinsic; callers run them only where the CPU has it.
#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;
    const ISA: Isa = Isa::Avx512;

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(mask16(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: __m512) {
        unsafe { _mm512_mask_storeu_ps(p, mask16(n), v) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn any_nan(v: __m512) -> bool {
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v) != 0 }
    }
    #[inline(always)]
    unsafe fn any_nan2(a: __m512, b: __m512) -> bool {
        unsafe { _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b) != 0 }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m512) -> f32 {
        unsafe { _mm512_reduce_add_ps(v) }
    }
    #[inline(always)]
    unsafe fn div(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn even_lanes(lo: __m512, hi: __m512) -> __m512 {
        unsafe {
            let idx = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
            _mm512_permutex2var_ps(lo, idx, hi)
        }
    }
    #[inline(always)]
    unsafe fn order_even(v: __m512) -> __m512 {
        v
    }
    #[inline(always)]
    unsafe fn gather(p: *const f32, s: usize, n: usize) -> __m512 {
        unsafe {
            let iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
            let idx = _mm512_mullo_epi32(iota, _mm512_set1_epi32(s as i32));
            _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask16(n), idx, p)
        }
    }
    #[inline(always)]
    unsafe fn where_negative(v: __m512, t: __m512) -> __m512 {
        unsafe { _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps()), t) }
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m512, b: __m512, t: __m512, f: __m512) -> __m512 {
        unsafe { _mm512_mask_mov_ps(f, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b), t) }
    }
    #[inline(always)]
    unsafe fn round(v: __m512) -> __m512 {
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    unsafe fn scale2(p: __m512, n: __m512) -> __m512 {
        unsafe { _mm512_scalef_ps(p, n) }
    }
    #[inline(always)]
    unsafe fn abs(v: __m512) -> __m512 {
        unsafe { _mm512_abs_ps(v) }
    }
}

/// Lane masks for AVX2's masked loads and stores: `MASKS[8 − n..16 − n]` has the first `n`
/// lanes set.
#[cfg(target_arch = "x86_64")]
static MASKS: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn mask8(n: usize) -> __m256i {
    let n = n.min(8);
    // SAFETY: 8 − n ∈ [0, 8]: eight i32 inside MASKS.
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(8 - n) as *const __m256i) }
}

// SAFETY: every method is an AVX/AVX2/FMA intrinsic; callers run them only where the CPU has
// AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
unsafe impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;
    const ISA: Isa = Isa::Avx2;

    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> __m256 {
        unsafe { _mm256_maskload_ps(p, mask8(n)) }
    }
    #[inline(always)]
    unsafe fn store_partial(p: *mut f32, n: usize, v: __m256) {
        unsafe { _mm256_maskstore_ps(p, mask8(n), v) }
    }
    /// Plain stores of 4, 2 and 1 floats.
    #[inline(always)]
    unsafe fn store_prefix(p: *mut f32, n: usize, v: __m256) {
        unsafe {
            if n >= 8 {
                return _mm256_storeu_ps(p, v);
            }
            let (mut p, mut n) = (p, n);
            let mut rest = _mm256_castps256_ps128(v);
            if n >= 4 {
                _mm_storeu_ps(p, rest);
                rest = _mm256_extractf128_ps::<1>(v);
                (p, n) = (p.add(4), n - 4);
            }
            if n >= 2 {
                _mm_store_sd(p.cast::<f64>(), _mm_castps_pd(rest));
                rest = _mm_movehl_ps(rest, rest);
                (p, n) = (p.add(2), n - 2);
            }
            if n == 1 {
                _mm_store_ss(p, rest);
            }
        }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn sub(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn max(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn min(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn any_nan(v: __m256) -> bool {
        unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(v, v)) != 0 }
    }
    #[inline(always)]
    unsafe fn any_nan2(a: __m256, b: __m256) -> bool {
        unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(a, b)) != 0 }
    }
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }
    #[inline(always)]
    unsafe fn div(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn even_lanes(lo: __m256, hi: __m256) -> __m256 {
        // [lo0 lo2 hi0 hi2 | lo4 lo6 hi4 hi6]
        unsafe { _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi) }
    }
    #[inline(always)]
    unsafe fn order_even(v: __m256) -> __m256 {
        // the 64-bit pairs in the order 0, 2, 1, 3
        unsafe { _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v))) }
    }
    #[inline(always)]
    unsafe fn gather(p: *const f32, s: usize, n: usize) -> __m256 {
        unsafe {
            let idx = _mm256_mullo_epi32(
                _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0),
                _mm256_set1_epi32(s as i32),
            );
            let m = _mm256_castsi256_ps(mask8(n));
            _mm256_mask_i32gather_ps::<4>(_mm256_setzero_ps(), p, idx, m)
        }
    }
    #[inline(always)]
    unsafe fn where_negative(v: __m256, t: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(v, t, _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps())) }
    }
    #[inline(always)]
    unsafe fn select_lt(a: __m256, b: __m256, t: __m256, f: __m256) -> __m256 {
        unsafe { _mm256_blendv_ps(f, t, _mm256_cmp_ps::<_CMP_LT_OQ>(a, b)) }
    }
    #[inline(always)]
    unsafe fn round(v: __m256) -> __m256 {
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v) }
    }
    #[inline(always)]
    unsafe fn scale2(p: __m256, n: __m256) -> __m256 {
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127));
            _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e)))
        }
    }
    #[inline(always)]
    unsafe fn abs(v: __m256) -> __m256 {
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), v) }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn partial_round_trip_avx2(n: usize) -> Vec<f32> {
        round_trip::<Avx2>(n)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn partial_round_trip_avx512(n: usize) -> Vec<f32> {
        round_trip::<Avx512>(n)
    }

    /// `2·src` through `load_partial`, then `store_partial` into the first half and
    /// `store_prefix` into the second (each `LANES` floats, −1 elsewhere).
    #[inline(always)]
    fn round_trip<S: Simd>(n: usize) -> Vec<f32> {
        let l = S::LANES;
        let src: Vec<f32> = (0..l).map(|i| i as f32 + 1.0).collect();
        let mut dst = vec![-1.0f32; 2 * l];
        // SAFETY: src holds LANES floats, dst two LANES halves; n ≤ LANES.
        unsafe {
            let v = S::load_partial(src.as_ptr(), n);
            let v = S::fma(v, S::splat(2.0), S::zero());
            S::store_partial(dst.as_mut_ptr(), n, v);
            S::store_prefix(dst.as_mut_ptr().add(l), n, v);
        }
        dst
    }

    #[test]
    fn partial_loads_and_stores_touch_only_n_lanes() {
        for (isa, f) in [
            (Isa::Avx2, partial_round_trip_avx2 as unsafe fn(usize) -> Vec<f32>),
            (Isa::Avx512, partial_round_trip_avx512),
        ] {
            if !isa.available() {
                continue;
            }
            for n in 0..=isa.lanes() {
                // SAFETY: the set is available.
                let got = unsafe { f(n) };
                for (i, &g) in got.iter().enumerate() {
                    let lane = i % isa.lanes();
                    let want = if lane < n { 2.0 * (lane as f32 + 1.0) } else { -1.0 };
                    assert_eq!(g, want, "{isa:?} n={n} float {i}");
                }
            }
        }
    }

    /// `even_lanes`, `gather`, `where_negative` and `div` of one set, as `LANES`-float vectors:
    /// `[order_even(even_lanes(0..2L)), gather(stride 3, n lanes), where_negative(x, 7), x / 4]`.
    #[inline(always)]
    fn lane_ops<S: Simd>(n: usize, x: &[f32]) -> [Vec<f32>; 4] {
        let l = S::LANES;
        let src: Vec<f32> = (0..3 * l).map(|i| i as f32).collect();
        let mut out = [vec![0.0; l], vec![-1.0; l], vec![0.0; l], vec![0.0; l]];
        // SAFETY: src holds 3·LANES floats (gather reads (n − 1)·3 < 3·LANES); x and every
        // output hold LANES.
        unsafe {
            let even = S::order_even(S::even_lanes(S::load(src.as_ptr()), S::load(src.as_ptr().add(l))));
            S::store(out[0].as_mut_ptr(), even);
            S::store(out[1].as_mut_ptr(), S::gather(src.as_ptr(), 3, n));
            let v = S::load(x.as_ptr());
            S::store(out[2].as_mut_ptr(), S::where_negative(v, S::splat(7.0)));
            S::store(out[3].as_mut_ptr(), S::div(v, S::splat(4.0)));
        }
        out
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn lane_ops_avx2(n: usize, x: &[f32]) -> [Vec<f32>; 4] {
        lane_ops::<Avx2>(n, x)
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn lane_ops_avx512(n: usize, x: &[f32]) -> [Vec<f32>; 4] {
        lane_ops::<Avx512>(n, x)
    }

    #[test]
    fn even_gather_where_negative_and_div_lane_by_lane() {
        type F = unsafe fn(usize, &[f32]) -> [Vec<f32>; 4];
        for (isa, f) in [(Isa::Avx2, lane_ops_avx2 as F), (Isa::Avx512, lane_ops_avx512)] {
            if !isa.available() {
                continue;
            }
            let l = isa.lanes();
            let specials = [-2.0, 3.0, -0.0, 0.0, f32::NAN, f32::NEG_INFINITY, 1e-40, -1e-40];
            let x: Vec<f32> = (0..l).map(|i| specials[i % specials.len()]).collect();
            for n in 0..=l {
                // SAFETY: the set is available.
                let [even, gather, neg, div] = unsafe { f(n, &x) };
                for i in 0..l {
                    assert_eq!(even[i], (2 * i) as f32, "{isa:?} even lane {i}");
                    let g = if i < n { (3 * i) as f32 } else { 0.0 };
                    assert_eq!(gather[i], g, "{isa:?} gather n={n} lane {i}");
                    let want = if x[i] < 0.0 { 7.0 } else { x[i] };
                    assert_eq!(
                        neg[i].to_bits(),
                        want.to_bits(),
                        "{isa:?} where_negative lane {i}"
                    );
                    let q = x[i] / 4.0;
                    assert!(
                        div[i].to_bits() == q.to_bits() || (q.is_nan() && div[i].is_nan()),
                        "{isa:?} div lane {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn host_is_available() {
        assert!(Isa::host().available());
        assert!(Isa::Cranelift.available());
    }
}
