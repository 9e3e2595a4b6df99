//! The Rust micro-kernel tiers, for hosts with AVX-512F or AVX2 + FMA: one kernel body
//! ([`tile`]), generic over the instruction set ([`Simd`]) and the tile shape, instantiated
//! per set inside `#[target_feature]` entry points, because Cranelift has no vector type wider
//! than 128 bits. They plug into the same driver as the Cranelift tier
//! ([`crate::gemm::MicroKernel`]) and compute every element in the same order (one FMA per
//! k, k ascending, K blocks accumulated in order), so all tiers give bit-identical results
//! under the same blocking. `JitOptions::gemm_tier` chooses the tier.
//!
//! Each set has a few tiles (rows × columns, all with the same number of accumulators for its
//! register file); [`tile_for`] picks one per product shape.

use crate::gemm::{AInPlaceFn, MicroKernel, MicroKernelFn, RowsKernelFn};
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512, Simd};

/// Where a tile's B rows are: row `k`'s `L·V` floats start at `row(k)`.
#[cfg(target_arch = "x86_64")]
trait BRows: Copy {
    /// # Safety
    /// `k` is below the tile's `kc`; the result is valid for `L·V` floats (the caller's
    /// contract with the source).
    unsafe fn row(self, k: usize) -> *const f32;
}

/// A packed B panel: row `k` at `b + k·len`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Panel {
    b: *const f32,
    len: usize,
}

#[cfg(target_arch = "x86_64")]
impl BRows for Panel {
    #[inline(always)]
    unsafe fn row(self, k: usize) -> *const f32 {
        // SAFETY: k < kc: inside the panel of kc rows (the caller's contract)
        unsafe { self.b.add(k * self.len) }
    }
}

/// B read where it lies, through a table of row offsets: row `k` at `b + off[k]`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Rows {
    b: *const f32,
    off: *const usize,
}

#[cfg(target_arch = "x86_64")]
impl BRows for Rows {
    #[inline(always)]
    unsafe fn row(self, k: usize) -> *const f32 {
        // SAFETY: k < kc: inside the table; the row is valid (the caller's contract)
        unsafe { self.b.wrapping_add(*self.off.add(k)) }
    }
}

/// Where a tile's A elements are: element `(k, i)` (row `i` of the tile, `k` of the K block)
/// at `at(k, i)`.
#[cfg(target_arch = "x86_64")]
trait ARows: Copy {
    /// # Safety
    /// `k` below the tile's `kc`, `i` below its rows; the element is readable (the caller's
    /// contract with the source).
    unsafe fn at(self, k: usize, i: usize) -> *const f32;
}

/// A packed A panel of `R` rows: element `(k, i)` at `a + k·R + i`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct APanel<const R: usize> {
    a: *const f32,
}

#[cfg(target_arch = "x86_64")]
impl<const R: usize> ARows for APanel<R> {
    #[inline(always)]
    unsafe fn at(self, k: usize, i: usize) -> *const f32 {
        // SAFETY: k < kc, i < R: inside the panel of kc·R floats (the caller's contract)
        unsafe { self.a.add(k * R + i) }
    }
}

/// A's rows read where they lie, `lda` floats apart: element `(k, i)` at `a + i·lda + k`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct AInPlace {
    a: *const f32,
    lda: usize,
}

#[cfg(target_arch = "x86_64")]
impl ARows for AInPlace {
    #[inline(always)]
    unsafe fn at(self, k: usize, i: usize) -> *const f32 {
        // SAFETY: row i < R of the tile, column k < kc of the block: inside A (the
        // caller's contract)
        unsafe { self.a.add(i * self.lda + k) }
    }
}

/// `C[R×L·V] (+)= Apanel[kc×R]ᵀ · B[kc×L·V]` (`L` = `S::LANES`), one FMA per `k` in
/// ascending order; the old C is added after the K loop when `accumulate`. A's elements are
/// where `a` says: a packed panel ([`APanel`]) or rows read in place ([`AInPlace`]); B's rows
/// where `b` says: a packed panel ([`Panel`]) or rows read in place ([`Rows`]).
///
/// # Safety
/// The CPU must have `S`'s set; A must hold the tile's `kc·R` elements where `a` says (a
/// panel of `kc·R` floats, or `R` rows of `kc` floats), each of B's `kc` rows `L·V` floats,
/// and C `R` rows of `L·V` floats, `ldc` floats apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn tile<S: Simd, const R: usize, const V: usize, A: ARows, B: BRows>(
    kc: usize,
    a: A,
    b: B,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    // SAFETY (the whole body): the CPU has S's set (the caller's contract), and every
    // pointer stays inside the panels and the tile, as commented at each access.
    unsafe {
        let mut acc = [[S::zero(); V]; R];
        for k in 0..kc {
            // k < kc: one of B's rows, L·V floats
            let row = b.row(k);
            let mut bv = [S::zero(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = S::load(row.add(v * l));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                // k < kc, i < R: one of A's elements of the tile
                let av = S::splat(*a.at(k, i));
                for (x, r) in bv.iter().zip(row.iter_mut()) {
                    *r = S::fma(av, *x, *r);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (h, &v) in row.iter().enumerate() {
                // row i < R, columns h·L..h·L + L ≤ L·V: inside the tile
                let p = c.add(i * ldc + h * l);
                let v = if accumulate { S::add(v, S::load(p)) } else { v };
                S::store(p, v);
            }
        }
    }
}

/// Defines `unsafe extern "C" fn NAME(kc, a, b, c, ldc_bytes, accumulate)` (a
/// [`MicroKernelFn`]) running `tile::<SET, R, V>` over a packed B panel with the set's
/// features enabled, and, when a second name is given (`/ NAME2`), `NAME2(kc, a, b, off, c,
/// ldc_bytes, accumulate)` (a [`RowsKernelFn`]) reading B's rows in place, and when a third is
/// (`+ NAME3`), `NAME3(kc, a, lda, b, c, ldc_bytes, accumulate)` (an [`AInPlaceFn`]) reading
/// A's rows in place.
macro_rules! entry {
    ($($name:ident $(/ $rows:ident)? $(+ $ain:ident)?: $set:ty, $features:literal, $r:literal, $v:literal;)*) => {$(
        /// # Safety
        /// As [`tile`]: the CPU must have the set; panels and C as the tile needs.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe extern "C" fn $name(kc: i64, a: *const f32, b: *const f32, c: *mut f32, ldc_bytes: i64, accumulate: i64) {
            let b = Panel { b, len: $v * <$set as Simd>::LANES };
            let a = APanel::<$r> { a };
            // SAFETY: forwarded from the caller.
            unsafe { tile::<$set, $r, $v, _, _>(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
        }
        $(
        /// # Safety
        /// As [`tile`]: the CPU must have the set; B's row `k` is the `L·V` floats at
        /// `b + off[k]` (`k < kc`), the A panel and C as the tile needs.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe extern "C" fn $rows(
            kc: i64,
            a: *const f32,
            b: *const f32,
            off: *const usize,
            c: *mut f32,
            ldc_bytes: i64,
            accumulate: i64,
        ) {
            let a = APanel::<$r> { a };
            // SAFETY: forwarded from the caller.
            unsafe { tile::<$set, $r, $v, _, _>(kc as usize, a, Rows { b, off }, c, ldc_bytes as usize / 4, accumulate != 0) }
        }
        )?
        $(
        /// # Safety
        /// As [`tile`]: the CPU must have the set; A's tile row `i`, element `k`, at
        /// `a + i·lda + k` (`i < R`, `k < kc`), the B panel and C as the tile needs.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe extern "C" fn $ain(
            kc: i64,
            a: *const f32,
            lda: i64,
            b: *const f32,
            c: *mut f32,
            ldc_bytes: i64,
            accumulate: i64,
        ) {
            let a = AInPlace { a, lda: lda as usize };
            let b = Panel { b, len: $v * <$set as Simd>::LANES };
            // SAFETY: forwarded from the caller.
            unsafe { tile::<$set, $r, $v, _, _>(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
        }
        )?
    )*};
}

entry! {
    avx512_12x32 / avx512_12x32_rows + avx512_12x32_ain: Avx512, "avx512f", 12, 2;
    avx512_6x64 / avx512_6x64_rows + avx512_6x64_ain: Avx512, "avx512f", 6, 4;
    avx512_8x48 / avx512_8x48_rows + avx512_8x48_ain: Avx512, "avx512f", 8, 3;
    avx512_7x48 + avx512_7x48_ain: Avx512, "avx512f", 7, 3;
    avx2_6x16 / avx2_6x16_rows: Avx2, "avx2,fma", 6, 2;
    avx2_4x16 / avx2_4x16_rows: Avx2, "avx2,fma", 4, 2;
    avx2_8x8 / avx2_8x8_rows: Avx2, "avx2,fma", 8, 1;
    avx2_5x16: Avx2, "avx2,fma", 5, 2;
}

const fn mk(mr: usize, nr: usize, f: MicroKernelFn) -> MicroKernel {
    MicroKernel { mr, nr, f }
}

/// The AVX-512 tiles (24 `zmm` accumulators, 21 for 7 × 48), the main one first: 12 × 32,
/// the tile the transposed products are weighed against ([`swap_tile_for`]), which pads
/// narrow products least; 6 × 64, which the driver runs faster where L1 holds its panels
/// ([`preferred_for`]) and which fits products with few rows (LeNet's 6 channels), where half of a
/// 12-row tile would be padding; 8 × 48 for 8·k rows (16 channels: two 12-row tiles would be
/// a third padding); 7 × 48 for 7·k rows: a transformer-style block's matrix products over
/// the 49 pixels of a 7 × 7 map (ConvNeXt's last stage: `[49, 768] · [768, 3072]`, 60 rows on
/// 12 × 32, 54 on 6 × 64). Measured on the EPYC Zen 4, one thread, each product alone (`kiln
/// bench --profile`, ms, 12 × 32 → 7 × 48): ConvNeXt-T's `[49, 768] · [768, 3072]` and
/// `[49, 3072] · [3072, 768]` 2.94–3.34 and 2.84–3.25 → 2.50–2.52 and 2.48–2.49 (ONNX
/// Runtime's nodes in the network 2.52–2.86).
#[cfg(target_arch = "x86_64")]
const AVX512: [MicroKernel; 4] = [
    mk(12, 32, avx512_12x32),
    mk(6, 64, avx512_6x64),
    mk(8, 48, avx512_8x48),
    mk(7, 48, avx512_7x48),
];

/// The AVX-512 tiles of transposed products ([`swap_tile_for`]), the fastest per element
/// there first: 6 × 64 (few pixel broadcasts per FMA); 7 × 48 (21 accumulators)
/// for 7·k pixels (ResNet's 7 × 7 maps: 49 rows, no padding); then the plain tiles.
#[cfg(target_arch = "x86_64")]
const AVX512_SWAP: [MicroKernel; 4] = [
    mk(6, 64, avx512_6x64),
    mk(7, 48, avx512_7x48),
    mk(12, 32, avx512_12x32),
    mk(8, 48, avx512_8x48),
];

/// The AVX2 tiles (at most 12 `ymm` accumulators, of 16 registers), the fastest per element
/// first: 6 × 16; 4 × 16 for products with 4·k rows (16 channels); 8 × 8 for products of at
/// most 8 columns. Measured alone on a Zen 1 (`probes::tiles`, GFLOP/s, the ymm peak 39):
/// 6 × 16 42–45, 4 × 16 42–46, 5 × 16 37–40, 8 × 8 31–34, 12 × 8 31–34, 4 × 24 32–35,
/// 3 × 32 29–30, 2 × 48 32, 7 × 16 and 8 × 16 (spilling) 19–24. On an EPYC Zen 3 (the ymm
/// peak 100–103; the probe's figures there are coarse, its thread CPU time advancing in 4 ms
/// ticks): 6 × 16 and 5 × 16 100, 4 × 16 91–101, 8 × 8 71–83, 13 × 8 77–87, 6 × 8 67–74,
/// 7 × 16 25, 8 × 16 18, and 4 × 24, 3 × 32, 2 × 48 12–14 (their three to six vectors of B
/// no longer stay in registers).
#[cfg(target_arch = "x86_64")]
const AVX2: [MicroKernel; 3] = [mk(6, 16, avx2_6x16), mk(4, 16, avx2_4x16), mk(8, 8, avx2_8x8)];

// Every Rust tile fits the driver's buffers: checked when kiln-jit is compiled.
#[cfg(target_arch = "x86_64")]
const _: () = {
    let all = [
        AVX512[0],
        AVX512[1],
        AVX512[2],
        AVX512[3],
        AVX2[0],
        AVX2[1],
        AVX2[2],
        AVX512_SWAP[1],
        AVX2_SWAP[1],
    ];
    let mut i = 0;
    while i < all.len() {
        let k = &all[i];
        // as a tile, and (transposed products) as the B panels of its `nr` columns
        assert!(k.mr >= 1 && k.mr <= crate::gemm::MAX_MR && k.mr * k.nr <= crate::gemm::MAX_TILE);
        assert!(k.nr <= crate::gemm::MAX_MR && k.nr.is_multiple_of(4));
        i += 1;
    }
};

/// The tiles of `isa`, the main one first; empty for the Cranelift tier (its kernel is
/// emitted per module: `gemm::define_micro_kernel`) and on hosts without the set.
pub fn tiles(isa: Isa) -> &'static [MicroKernel] {
    if !isa.available() {
        return &[];
    }
    #[cfg(target_arch = "x86_64")]
    match isa {
        Isa::Avx512 => return &AVX512,
        Isa::Avx2 => return &AVX2,
        Isa::Cranelift => {}
    }
    &[]
}

/// The tiles of `isa` a transposed product may take, the fastest per element there first
/// (on AVX2 [`tiles`]' order).
pub(crate) fn swap_tiles(isa: Isa) -> &'static [MicroKernel] {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && isa.available() {
        return &AVX512_SWAP;
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 && isa.available() {
        return &AVX2_SWAP;
    }
    tiles(isa)
}

/// The AVX2 tiles of transposed products ([`swap_tile_for`]): 6 × 16, then 5 × 16 (10
/// accumulators, only here) where it pads a clear twentieth less — 7 × 7 maps: 50 rows for
/// 49 against 54, the 6-row tiles' last one computing one row of six. Measured on the EPYC
/// Zen 3 (one thread, each convolution alone, alternating, ms, 6 × 16 → 5 × 16): 1 × 1 960 ←
/// 160 0.225–0.230 → 0.216–0.218, 1280 ← 320 0.527–0.556 → 0.526–0.535, ResNet-18's 3 × 3
/// 512 → 512 3.42–3.51 → 3.31–3.35; the probe's 5 × 16 runs as fast as 6 × 16 there (on a
/// Zen 1 a tenth slower, where this trade was not measured).
#[cfg(target_arch = "x86_64")]
const AVX2_SWAP: [MicroKernel; 4] = [
    mk(6, 16, avx2_6x16),
    mk(5, 16, avx2_5x16),
    mk(4, 16, avx2_4x16),
    mk(8, 8, avx2_8x8),
];

/// The set whose tile `k` is (its code one of [`tiles`]' or the transposed products'), if any.
pub fn isa_of(k: &MicroKernel) -> Option<Isa> {
    [Isa::Avx512, Isa::Avx2].into_iter().find(|&isa| {
        swap_tiles(isa)
            .iter()
            .any(|t| t.mr == k.mr && t.nr == k.nr && std::ptr::fn_addr_eq(t.f, k.f))
    })
}

/// The AVX2 tiles' twins that read B's rows in place ([`RowsKernelFn`]).
#[cfg(target_arch = "x86_64")]
const AVX2_ROWS: [(MicroKernelFn, RowsKernelFn); 3] = [
    (avx2_6x16, avx2_6x16_rows),
    (avx2_4x16, avx2_4x16_rows),
    (avx2_8x8, avx2_8x8_rows),
];

/// The twin of tile `k` that reads B's rows where they lie instead of from a packed panel,
/// if it has one: the AVX2 tiles and the AVX-512 tiles of untransposed products (the driver
/// takes the AVX-512 twins for wide patch matrices of 1024 columns or more only:
/// `gemm::gemm_with`).
pub(crate) fn rows_kernel(k: &MicroKernel) -> Option<RowsKernelFn> {
    #[cfg(target_arch = "x86_64")]
    {
        twin(k, &AVX2_ROWS, &AVX512_ROWS)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = k;
        None
    }
}

/// The twin of tile `k` that reads A's rows in place ([`AInPlaceFn`]), where it has one (the
/// AVX-512 tiles).
pub(crate) fn a_in_place_kernel(k: &MicroKernel) -> Option<AInPlaceFn> {
    #[cfg(target_arch = "x86_64")]
    {
        twin(k, &[], &AVX512_AIN)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = k;
        None
    }
}

/// Tile `k`'s twin in the table of its set (`avx2` or `avx512`: each tile's entry point and its
/// twin), if it has one there.
#[cfg(target_arch = "x86_64")]
fn twin<T: Copy>(k: &MicroKernel, avx2: &[(MicroKernelFn, T)], avx512: &[(MicroKernelFn, T)]) -> Option<T> {
    let twins = match isa_of(k)? {
        Isa::Avx2 => avx2,
        Isa::Avx512 => avx512,
        Isa::Cranelift => return None,
    };
    twins
        .iter()
        .find(|(f, _)| std::ptr::fn_addr_eq(*f, k.f))
        .map(|&(_, t)| t)
}

/// The AVX-512 tiles' twins that read A's rows in place ([`AInPlaceFn`]).
#[cfg(target_arch = "x86_64")]
const AVX512_AIN: [(MicroKernelFn, AInPlaceFn); 4] = [
    (avx512_12x32, avx512_12x32_ain),
    (avx512_6x64, avx512_6x64_ain),
    (avx512_8x48, avx512_8x48_ain),
    (avx512_7x48, avx512_7x48_ain),
];

/// The AVX-512 tiles' twins that read B's rows in place ([`RowsKernelFn`]).
#[cfg(target_arch = "x86_64")]
const AVX512_ROWS: [(MicroKernelFn, RowsKernelFn); 3] = [
    (avx512_12x32, avx512_12x32_rows),
    (avx512_6x64, avx512_6x64_rows),
    (avx512_8x48, avx512_8x48_rows),
];

/// The tile of `isa` for an `m × n` convolution product computed transposed (`Cᵀ = Bᵀ·Aᵀ`:
/// an `n × m` product, `gemm::Swap`), where that pays. As it is, the product either runs wide
/// (`wide`: the `≥ n` columns it computes, `gemm::Shifted`) or gathers its patches (`None`).
/// Against a wide product, when the transpose pads it less than the main tile pads the wide
/// columns: less than nineteen twentieths of the padded work. Against gathered patches, when
/// the transpose pads it no more: the transposed product gathers the same patches once, as
/// its A panels, and measured faster at equal padding. A narrow product (ResNet-18's last
/// convolutions: 512 rows, 49 columns) fills a row of 32, 48 or 64 columns badly, and its
/// transpose fills them with output channels. Among the tiles, the first ([`swap_tiles`]'
/// order) unless another pads the transpose a twentieth less. Measured on the EPYC Zen 5 (one
/// thread, each convolution alone): AVX-512 `layer4` (512 × 49) 1.52 ms plain (12 × 32), 0.92
/// on 7 × 48, 0.98 on 6 × 64, 1.08 on 12 × 32; `layer3` (256 × 196) 1.10 plain (wide, 12 ×
/// 32), 0.96 on 6 × 64, 0.99 on 12 × 32; `layer2` (128 × 784, 4.7 % less padding: not
/// taken) 1.06 plain, 1.08 on 6 × 64. AVX2: `layer4` 2.59 plain (8 × 8, which the plain rule
/// prefers), 1.89 on 6 × 16; `layer3` (5.5 % less padding) 1.99 plain, 1.80 on 6 × 16;
/// `layer2` (2.8 % less: not taken) 1.96 plain, 1.89 on 6 × 16. On the EPYC Zen 3 (AVX2),
/// gathered patches at about equal padding, plain → transposed (ms): SqueezeNet's 13 × 13
/// maps 256 ← 64 0.68 → 0.60, 192 ← 48 0.40 → 0.35, 512 ← 512 10.9 → 9.8; 5 × 5 48 ← 16 on
/// 14 × 14 0.178 → 0.12.
/// `None` when the product stays as it is, for the Cranelift tier and on hosts without the set.
pub fn swap_tile_for(isa: Isa, m: usize, n: usize, wide: Option<usize>) -> Option<MicroKernel> {
    let main = tiles(isa).first()?;
    let (first, rest) = swap_tiles(isa).split_first()?;
    let mut best = first;
    for k in rest {
        if padded(k, n, m) * 20 < padded(best, n, m) * 19 {
            best = k;
        }
    }
    let pays = match wide {
        Some(cols) => padded(best, n, m) * 20 < padded(main, m, cols.max(n)) * 19,
        None => padded(best, n, m) <= padded(main, m, n),
    };
    pays.then_some(*best)
}

/// The elements tile `k` computes for an `m × n` product, padding included:
/// `⌈m/mr⌉·mr · ⌈n/nr⌉·nr` (saturating; the tiles are never empty).
pub(crate) fn padded(k: &MicroKernel, m: usize, n: usize) -> usize {
    let (mr, nr) = (k.mr.max(1), k.nr.max(1));
    m.div_ceil(mr)
        .saturating_mul(mr)
        .saturating_mul(n.div_ceil(nr).saturating_mul(nr))
}

/// Whether a product computing `other` padded elements (on another tile, or transposed) saves
/// a clear share of the `best` it is weighed against on `isa`: on AVX2 a tenth (its 8 × 8 tile
/// runs a fifth slower per element than 6 × 16, and its transposed 1 × 1s on 14 × 14 maps,
/// 4.8 % less padding, took 0.97–1.04 of the time), on AVX-512 a twentieth (its tiles keep
/// 21–24 accumulators and run about alike per element). Measured on the EPYC Zen 4, one
/// thread, each alone (ms): products of 32 or 64 rows (Inception's 1 × 1s on 28 × 28) on 8 ×
/// 48 instead of 12 × 32 (7–9 % less): 64 ← 256 0.287–0.295 → 0.257–0.259, 64 ← 192 0.215 →
/// 0.190, 64 ← 64 0.074–0.077 → 0.065, SqueezeNet's 32 ← 256 on 27 × 27 0.160 → 0.142, 32 ←
/// 128 0.101 → 0.086; Inception v2's 1 × 1 224 ← 576 on 14 × 14 transposed (7 × 48, 8 % less)
/// 0.529 → 0.495.
pub(crate) fn saves_enough(isa: Isa, other: usize, best: usize) -> bool {
    let share = if isa == Isa::Avx512 { 20 } else { 10 };
    other.saturating_mul(share) < best.saturating_mul(share - 1)
}

/// The tile of `isa` for an `m × n` product: the one that computes the fewest padded elements
/// ([`padded`]), the tile fastest per element in the driver ([`preferred_for`])
/// unless another saves a clear share of the padded work ([`saves_enough`]), the tiles whose
/// panels L1 holds ([`fits_l1`]) weighed first. `None` for the Cranelift tier and on hosts
/// without the set.
pub fn tile_for(isa: Isa, m: usize, n: usize) -> Option<MicroKernel> {
    tile_for_l1(isa, m, n, crate::gemm::cache_size(1).unwrap_or(32 << 10))
}

/// [`tile_for`] with `l1` bytes of L1. A tile whose panels L1 does not hold streams its B
/// panel from L2 through every tile of a block, and is taken only where it saves a clear
/// share over the best of those it does hold: on the EPYC Zen 4 (L1 32 KiB), 1 × 1 64 ← 256
/// on 56 × 56 (6 × 64 pads 2 % more than 8 × 48) took 1.02–1.03 ms on 6 × 64 against
/// 1.01–1.02 on 8 × 48 (each alone, one thread, two runs; ResNet-50 paired 0.994), while
/// LeNet-5's 6-channel conv1 at batch 64 needs 6 × 64 (0.35 ms against 0.45 on 8 × 48).
fn tile_for_l1(isa: Isa, m: usize, n: usize, l1: usize) -> Option<MicroKernel> {
    let mut best = preferred_for(isa, l1)?;
    // the tiles whose panels L1 holds, then the others
    let holds = |fits: bool| tiles(isa).iter().filter(move |k| fits_l1(k, l1) == fits);
    for k in holds(true).chain(holds(false)) {
        if saves_enough(isa, padded(k, m, n), padded(&best, m, n)) {
            best = *k;
        }
    }
    Some(best)
}

/// Whether `l1` bytes of L1 hold tile `k`'s A and B micro-panels at the blocking's depth.
fn fits_l1(k: &MicroKernel, l1: usize) -> bool {
    crate::gemm::Blocking::for_caches(l1, 1 << 20, k.mr, k.nr).kc * (k.mr + k.nr) * 4 <= l1
}

/// The tile fastest per element inside the driver, where A's panels (the broadcast operand)
/// stream from L2 through every tile while a B panel stays in L1: on AVX-512, 6 × 64, which
/// reads half of 12 × 32's A per FMA, where its B panel and A panel fit L1 at the blocking's
/// depth (35 KiB at 128 rows of K: an L1 of 48 KiB holds them, one of 32 KiB does not); else
/// the main tile. Measured on a 2-vCPU Intel Xeon (family 6 model 207, L1d 48 KiB), one
/// thread, `Sgemm::run_packed` with the two tiles alternated in one process (GFLOP/s, 6 × 64
/// vs 12 × 32, the zmm peak 167–173): 512 × 128 × 784 114 vs 108, 128 × 512 × 784 104 vs
/// 98, 256 × 64 × 3136 104 vs 92, 64 × 256 × 3136 100–114 vs 86–89, but 1024 × 256 × 196 99
/// vs 106 (256 padded columns against 224: the tenth rule keeps 12 × 32 there); alone with
/// panels in L1 both run at 150–153. In networks, paired runs with and without: four 1 × 1
/// bottlenecks (64 ↔ 256 on 56 × 56) 0.84, ResNet-50 0.95–0.97 (two threads 0.96),
/// SqueezeNet 0.94–0.99, VGG-19 0.95, Inception v2 and ShuffleNet 0.97, DenseNet-121 0.99
/// (1.06 in a first set), the rest ±1 %. `l1` is the bytes of L1.
fn preferred_for(isa: Isa, l1: usize) -> Option<MicroKernel> {
    let (main, rest) = tiles(isa).split_first()?;
    let wide = rest
        .iter()
        .find(|k| k.mr == 6 && k.nr == 64)
        .filter(|_| isa == Isa::Avx512);
    Some(*wide.filter(|k| fits_l1(k, l1)).unwrap_or(main))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tile a transposed product may take, on every set (whether or not this CPU has
    /// it), packs its patches with a fixed-size copy (`gemm::pack_gathered_mr`'s arms): the
    /// 5 × 16 and 4 × 16 tiles once fell to the per-element path (11.6 % of a 3 × 3 320 ← 192
    /// on 7 × 7, 3.6 % with the copy).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transposed_tiles_pack_with_a_fixed_copy() {
        for k in AVX2_SWAP.iter().chain(&AVX512_SWAP) {
            assert!(crate::gemm::GATHERED_MR.contains(&k.mr), "{} × {}", k.mr, k.nr);
        }
    }

    #[test]
    fn tiles_fit_the_driver_and_the_registers() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            for k in tiles(isa) {
                k.check().unwrap();
                assert_eq!(k.nr % isa.lanes(), 0, "{isa:?} {}×{}", k.mr, k.nr);
                let acc = k.mr * k.nr / isa.lanes();
                assert!(
                    acc <= if isa == Isa::Avx512 { 24 } else { 12 },
                    "{isa:?} {acc} accumulators"
                );
            }
        }
        assert!(tiles(Isa::Cranelift).is_empty());
        assert!(tile_for(Isa::Cranelift, 64, 64).is_none());
        for isa in [Isa::Avx512, Isa::Avx2] {
            for k in swap_tiles(isa) {
                assert_eq!(isa_of(k), Some(isa));
            }
        }
    }

    /// The plain products run on AVX-512's 6 × 64 where L1 holds its panels (48 KiB), else
    /// on 12 × 32, except where another tile pads a clear twentieth less (ResNet-50's 14 × 14
    /// maps: 224 columns against 256 on 12 × 32; 64 rows on 8 × 48).
    #[test]
    fn the_driver_prefers_six_by_sixty_four_where_l1_holds_it() {
        if Isa::Avx512.available() {
            let tile = |k: Option<MicroKernel>| k.map(|k| (k.mr, k.nr));
            assert_eq!(tile(preferred_for(Isa::Avx512, 48 << 10)), Some((6, 64)));
            assert_eq!(tile(preferred_for(Isa::Avx512, 32 << 10)), Some((12, 32)));
            assert_eq!(tile(tile_for(Isa::Avx512, 1024, 196)), Some((12, 32)));
            // 64 rows of 784 columns: 8 × 48 pads 52 224 elements, 12 × 32 57 600 (9 % more),
            // 6 × 64 54 912 (5 %: not a clear twentieth)
            let host = tile(preferred_for(
                Isa::Avx512,
                crate::gemm::cache_size(1).unwrap_or(32 << 10),
            ));
            if host == Some((12, 32)) {
                assert_eq!(tile(tile_for(Isa::Avx512, 64, 784)), Some((8, 48)));
            }
            // 64 rows of 3136 columns: 6 × 64 pads 206 976 elements, 8 × 48 202 752 (2 %
            // fewer), 12 × 32 225 792; on 6 × 64 only where L1 holds its panels
            assert_eq!(tile(tile_for_l1(Isa::Avx512, 64, 3136, 32 << 10)), Some((8, 48)));
            assert_eq!(tile(tile_for_l1(Isa::Avx512, 64, 3136, 48 << 10)), Some((6, 64)));
            // 40 rows: 6 × 64 pads 42, 12 × 32 48, 8 × 48 none (its columns 1 % more); 6
            // rows: 6 × 64 a clear share less than 8 × 48 wherever L1 holds it or not
            assert_eq!(tile(tile_for_l1(Isa::Avx512, 40, 3136, 32 << 10)), Some((8, 48)));
            assert_eq!(tile(tile_for_l1(Isa::Avx512, 6, 3136, 32 << 10)), Some((6, 64)));
            assert_eq!(tile(tile_for(Isa::Avx512, 256, 3136)), host);
        }
        if Isa::Avx2.available() {
            let main = tiles(Isa::Avx2).first().map(|k| (k.mr, k.nr));
            assert_eq!(preferred_for(Isa::Avx2, 48 << 10).map(|k| (k.mr, k.nr)), main);
        }
    }

    /// Which products run transposed: ResNet-18's `layer4` (512 channels × 49 pixels) on the
    /// 7 × 48 tile and `layer3` (256 × 196) on 6 × 64; the wide products of the early layers
    /// and square ones as they are; on the AVX2 tier `layer4` on 5 × 16, `layer3` on 6 × 16,
    /// and SqueezeNet's 13 × 13 maps, whose patches are gathered.
    #[test]
    fn narrow_products_run_transposed() {
        if Isa::Avx512.available() {
            let t = |m, n| swap_tile_for(Isa::Avx512, m, n, Some(n)).map(|k| (k.mr, k.nr));
            assert_eq!(t(512, 49), Some((7, 48)));
            assert_eq!(t(256, 196), Some((6, 64)));
            assert_eq!(t(128, 784), None);
            assert_eq!(t(512, 512), None);
        }
        if Isa::Avx2.available() {
            assert_eq!(
                swap_tile_for(Isa::Avx2, 512, 49, Some(49)).map(|k| (k.mr, k.nr)),
                Some((5, 16))
            );
            assert_eq!(
                swap_tile_for(Isa::Avx2, 256, 196, Some(196)).map(|k| (k.mr, k.nr)),
                Some((6, 16))
            );
            assert!(swap_tile_for(Isa::Avx2, 128, 784, Some(784)).is_none());
            // SqueezeNet's 13 × 13 maps, whose patches are gathered (not wide: 2 columns of
            // 15 dropped), pad about as much transposed
            assert_eq!(
                swap_tile_for(Isa::Avx2, 256, 169, None).map(|k| (k.mr, k.nr)),
                Some((6, 16))
            );
            assert!(swap_tile_for(Isa::Avx2, 256, 169, Some(169)).is_none());
            assert_eq!(
                swap_tile_for(Isa::Avx2, 64, 9, Some(9)).map(|k| (k.mr, k.nr)),
                Some((5, 16))
            );
        }
        assert!(swap_tile_for(Isa::Cranelift, 512, 49, None).is_none());
    }
}

/// A measurement probe, not a test (`#[ignore]`): every candidate tile of the sets this CPU
/// has, the kernel alone (panels in L1, kc = 256, thread CPU time, best of 3):
/// `cargo test --release -p kiln-jit --lib gemm_simd::probes -- --ignored --nocapture`.
/// docs/performance.md has what it measured.
#[cfg(all(test, target_arch = "x86_64"))]
mod probes {
    use super::*;

    entry! {
        p2_12x8: Avx2, "avx2,fma", 12, 1;
        p2_4x24: Avx2, "avx2,fma", 4, 3;
        p2_6x8: Avx2, "avx2,fma", 6, 1;
        p2_5x16: Avx2, "avx2,fma", 5, 2;
        p2_3x32: Avx2, "avx2,fma", 3, 4;
        p2_2x48: Avx2, "avx2,fma", 2, 6;
        p2_13x8: Avx2, "avx2,fma", 13, 1;
        p2_7x16: Avx2, "avx2,fma", 7, 2;
        p2_8x16: Avx2, "avx2,fma", 8, 2;
    }

    fn cpu_ns() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        s.split_whitespace().next().unwrap().parse().unwrap()
    }

    #[test]
    #[ignore]
    fn tiles() {
        let mut all: Vec<(Isa, MicroKernel)> = Vec::new();
        for isa in [Isa::Avx512, Isa::Avx2] {
            all.extend(super::tiles(isa).iter().map(|&k| (isa, k)));
        }
        if Isa::Avx2.available() {
            for (mr, nr, f) in [
                (12, 8, p2_12x8 as MicroKernelFn),
                (4, 24, p2_4x24),
                (6, 8, p2_6x8),
                (5, 16, p2_5x16),
                (3, 32, p2_3x32),
                (2, 48, p2_2x48),
                (13, 8, p2_13x8),
                (7, 16, p2_7x16),
                (8, 16, p2_8x16),
            ] {
                all.push((Isa::Avx2, MicroKernel { mr, nr, f }));
            }
        }
        let kc = 256;
        for round in 0..3 {
            for (isa, k) in &all {
                let a = vec![0.5f32; kc * k.mr];
                let b = vec![0.25f32; kc * k.nr];
                let mut c = vec![0.0f32; k.mr * k.nr];
                // about 4 GFLOP a tile: long enough for a kernel whose thread CPU time
                // advances in scheduler ticks (4 ms on the EPYC Zen 3 VMs)
                let iters = 2_000_000_000 / (kc * k.mr * k.nr);
                let t = cpu_ns();
                for _ in 0..iters {
                    // SAFETY: the set is available; the buffers hold the tile's panels and C.
                    unsafe {
                        (k.f)(
                            kc as i64,
                            a.as_ptr(),
                            b.as_ptr(),
                            c.as_mut_ptr(),
                            (k.nr * 4) as i64,
                            1,
                        )
                    };
                }
                let s = (cpu_ns() - t) as f64 * 1e-9;
                let gf = (iters * kc * k.mr * k.nr * 2) as f64 / s / 1e9;
                println!("round {round} {isa:?} {}x{}: {gf:.1} GFLOP/s", k.mr, k.nr);
            }
        }
    }
}
