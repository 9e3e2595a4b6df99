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
    unsafe { tile(kc as usize, a, b, c, ldc_bytes as usize / 4, accumulate != 0) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for k in 0..kc {
        // SAFETY: k < kc: inside both panels.
        let (b0, b1) = unsafe {
            (
                _mm512_loadu_ps(b.add(k * NR)),
                _mm512_loadu_ps(b.add(k * NR + 16)),
            )
        };
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let av = _mm512_set1_ps(unsafe { *a.add(k * MR + i) });
            row[0] = _mm512_fmadd_ps(av, b0, row[0]);
            row[1] = _mm512_fmadd_ps(av, b1, row[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i < 12, columns h·16..h·16 + 16 < 32: inside the tile.
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
