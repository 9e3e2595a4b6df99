//! The FMA peak of one core, measured by assembly loops of 12 independent FMA chains (so no
//! compiler can merge or drop them), and CPU-time helpers: shared by the benches that quote a
//! fraction of the peak measured in the same run (`#[path = "common/peak.rs"] mod peak;`).
#![allow(dead_code)]

use std::hint::black_box;
use std::time::Instant;

/// FLOPs of `iters` iterations of `peak_loop`.
pub fn peak_flops(iters: u64) -> f64 {
    (iters * 12 * 4 * 2) as f64
}

/// 12 independent chains of `vfmadd231ps xmm`, written in assembly so that no compiler can
/// merge them into wider vectors.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop(iters: u64, _seed: f32) -> f32 {
    let out: f32;
    // SAFETY: only xmm registers and the counter are touched; the JIT (and so this bench)
    // requires AVX and FMA.
    unsafe {
        std::arch::asm!(
            "vxorps xmm0, xmm0, xmm0", "vxorps xmm1, xmm1, xmm1", "vxorps xmm2, xmm2, xmm2",
            "vxorps xmm3, xmm3, xmm3", "vxorps xmm4, xmm4, xmm4", "vxorps xmm5, xmm5, xmm5",
            "vxorps xmm6, xmm6, xmm6", "vxorps xmm7, xmm7, xmm7", "vxorps xmm8, xmm8, xmm8",
            "vxorps xmm9, xmm9, xmm9", "vxorps xmm10, xmm10, xmm10", "vxorps xmm11, xmm11, xmm11",
            "vxorps xmm12, xmm12, xmm12", "vxorps xmm13, xmm13, xmm13",
            "2:",
            "vfmadd231ps xmm0, xmm12, xmm13", "vfmadd231ps xmm1, xmm12, xmm13",
            "vfmadd231ps xmm2, xmm12, xmm13", "vfmadd231ps xmm3, xmm12, xmm13",
            "vfmadd231ps xmm4, xmm12, xmm13", "vfmadd231ps xmm5, xmm12, xmm13",
            "vfmadd231ps xmm6, xmm12, xmm13", "vfmadd231ps xmm7, xmm12, xmm13",
            "vfmadd231ps xmm8, xmm12, xmm13", "vfmadd231ps xmm9, xmm12, xmm13",
            "vfmadd231ps xmm10, xmm12, xmm13", "vfmadd231ps xmm11, xmm12, xmm13",
            "dec {n}",
            "jnz 2b",
            "vaddps xmm0, xmm0, xmm11",
            "vzeroupper",
            n = inout(reg) iters => _,
            out("xmm0") out, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
            out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
            out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
        );
    }
    out
}

/// The same loop on `zmm` registers (only run where the CPU has AVX-512F).
#[cfg(target_arch = "x86_64")]
pub fn peak_loop_zmm(iters: u64, _seed: f32) -> f32 {
    // SAFETY: only xmm registers and the counter are touched; the JIT (and so this bench)
    // requires AVX and FMA.
    unsafe {
        std::arch::asm!(
            "vxorps zmm0, zmm0, zmm0", "vxorps zmm1, zmm1, zmm1", "vxorps zmm2, zmm2, zmm2",
            "vxorps zmm3, zmm3, zmm3", "vxorps zmm4, zmm4, zmm4", "vxorps zmm5, zmm5, zmm5",
            "vxorps zmm6, zmm6, zmm6", "vxorps zmm7, zmm7, zmm7", "vxorps zmm8, zmm8, zmm8",
            "vxorps zmm9, zmm9, zmm9", "vxorps zmm10, zmm10, zmm10", "vxorps zmm11, zmm11, zmm11",
            "vxorps zmm12, zmm12, zmm12", "vxorps zmm13, zmm13, zmm13",
            "2:",
            "vfmadd231ps zmm0, zmm12, zmm13", "vfmadd231ps zmm1, zmm12, zmm13",
            "vfmadd231ps zmm2, zmm12, zmm13", "vfmadd231ps zmm3, zmm12, zmm13",
            "vfmadd231ps zmm4, zmm12, zmm13", "vfmadd231ps zmm5, zmm12, zmm13",
            "vfmadd231ps zmm6, zmm12, zmm13", "vfmadd231ps zmm7, zmm12, zmm13",
            "vfmadd231ps zmm8, zmm12, zmm13", "vfmadd231ps zmm9, zmm12, zmm13",
            "vfmadd231ps zmm10, zmm12, zmm13", "vfmadd231ps zmm11, zmm12, zmm13",
            "dec {n}",
            "jnz 2b",
            "vzeroupper",
            n = inout(reg) iters => _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
            out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
            out("zmm10") _, out("zmm11") _, out("zmm12") _, out("zmm13") _,
        );
    }
    0.0
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// Seconds this thread has spent on a CPU (`CLOCK_THREAD_CPUTIME_ID`; wall time if that
/// fails): on a shared machine, time spent waiting for the core is not counted.
pub fn cpu_seconds(wall: Instant) -> f64 {
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
        ts.sec as f64 + ts.nsec as f64 * 1e-9
    } else {
        wall.elapsed().as_secs_f64()
    }
}

/// Runs `f` and returns the CPU seconds it took.
pub fn timed(f: impl FnOnce()) -> f64 {
    let wall = Instant::now();
    let t0 = cpu_seconds(wall);
    f();
    cpu_seconds(wall) - t0
}

/// GFLOP/s of the 128-bit FMA peak loop (best of 5).
pub fn measure_peak() -> f64 {
    measure(peak_loop, 4)
}

/// GFLOP/s of `lp`, 12 chains of `lanes`-wide FMAs (best of 5).
pub fn measure(lp: fn(u64, f32) -> f32, lanes: u64) -> f64 {
    let iters = 20_000_000;
    (0..5)
        .map(|_| {
            let s = timed(|| {
                black_box(lp(black_box(iters), 1.0));
            });
            peak_flops(iters) / 4.0 * lanes as f64 / s / 1e9
        })
        .fold(0.0, f64::max)
}

/// GFLOP/s of the 512-bit FMA peak loop, when the CPU has AVX-512F.
pub fn measure_peak_zmm() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(measure(peak_loop_zmm, 16));
    }
    None
}

/// The median CPU seconds of `runs` calls of `f` (after one warm-up call).
pub fn median_cpu(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1)).map(|_| timed(&mut f)).collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
