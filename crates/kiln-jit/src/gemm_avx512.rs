//! The AVX-512 micro-kernel tier, for hosts that have AVX-512F: a 12 × 32 tile (24 `zmm`
//! accumulators), written with Rust's `std::arch` intrinsics because Cranelift has no vector
//! type wider than 128 bits. It plugs into the same driver as the Cranelift tier
//! ([`crate::gemm::MicroKernel`]) and computes every element in the same order (one FMA per
//! k, k ascending, K blocks accumulated in order), so both tiers give bit-identical results.
//! `JitOptions::gemm_tier` can force the Cranelift tier.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

pub const MR: usize = 12;
pub const NR: usize = 32;

/// Whether this CPU can run the tier.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The tier's [`crate::gemm::MicroKernelFn`]: `C[12×32] (+)= Apanel[kc×12]ᵀ · Bpanel[kc×32]`.
///
/// # Safety
/// The CPU must have AVX-512F ([`available`]); the panels must hold `kc·12` and `kc·32`
/// floats, and C 12 rows of 32 floats, `ldc_bytes` apart.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kernel(
    kc: i64,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc_bytes: i64,
    accumulate: i64,
) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::<MR, 2>(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
}

/// The 6 × 64 tile (24 accumulators): for products with few rows (LeNet's 6 channels), where
/// half of a 12-row tile would be padding.
///
/// # Safety
/// As [`kernel`], for a 6 × 64 tile.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kernel_6x64(
    kc: i64,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc_bytes: i64,
    accumulate: i64,
) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::<6, 4>(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
}

/// The 8 × 48 tile (24 accumulators): for 8·k rows (16 channels: two 12-row tiles would be a
/// third padding).
///
/// # Safety
/// As [`kernel`], for an 8 × 48 tile.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kernel_8x48(
    kc: i64,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc_bytes: i64,
    accumulate: i64,
) {
    // SAFETY: forwarded from the caller.
    unsafe { tile::<8, 3>(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
}

/// The tier's tiles, the 12 × 32 one first.
#[cfg(target_arch = "x86_64")]
pub fn tiles() -> [crate::gemm::MicroKernel; 3] {
    use crate::gemm::MicroKernel;
    [
        MicroKernel {
            mr: MR,
            nr: NR,
            f: kernel,
        },
        MicroKernel {
            mr: 6,
            nr: 64,
            f: kernel_6x64,
        },
        MicroKernel {
            mr: 8,
            nr: 48,
            f: kernel_8x48,
        },
    ]
}

/// The tile for an `m × n` product: the one that computes the fewest padded elements
/// (`⌈m/mr⌉·mr · ⌈n/nr⌉·nr`), the 12 × 32 tile (the fastest per element) on a tie.
#[cfg(target_arch = "x86_64")]
pub fn tile_for(m: usize, n: usize) -> crate::gemm::MicroKernel {
    let padded = |k: &crate::gemm::MicroKernel| m.div_ceil(k.mr) * k.mr * (n.div_ceil(k.nr) * k.nr);
    let all = tiles();
    let mut best = all[0];
    for k in &all[1..] {
        // the smaller tiles reuse each loaded B vector fewer times: take one only for a clear
        // saving (a tenth of the padded work)
        if padded(k) * 10 < padded(&best) * 9 {
            best = *k;
        }
    }
    best
}

/// `C[R×16·V] (+)= Apanel[kc×R]ᵀ · Bpanel[kc×16·V]`, one FMA per `k` in ascending order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const V: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for k in 0..kc {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            // SAFETY: k < kc: inside the B panel.
            *x = unsafe { _mm512_loadu_ps(b.add(k * 16 * V + 16 * v)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above, the A panel.
            let av = _mm512_set1_ps(unsafe { *a.add(k * R + i) });
            for (x, r) in bv.iter().zip(row.iter_mut()) {
                *r = _mm512_fmadd_ps(av, *x, *r);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i < R, columns h·16..h·16 + 16 ≤ 16·V: inside the tile.
            unsafe {
                let p = c.add(i * ldc + h * 16);
                let v = if accumulate {
                    _mm512_add_ps(v, _mm512_loadu_ps(p))
                } else {
                    v
                };
                _mm512_storeu_ps(p, v);
            }
        }
    }
}
