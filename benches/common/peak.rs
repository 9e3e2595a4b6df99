//! The FMA peak of one core, measured by assembly loops of 12 independent FMA chains (so no
//! compiler can merge or drop them) at each vector width the CPU runs — 128-bit `xmm` (AVX +
//! FMA), 256-bit `ymm` (AVX2 + FMA hosts) and 512-bit `zmm` (AVX-512F hosts only) — and
//! CPU-time helpers: shared by the benches that quote a fraction of the peak measured in the same
//! run (`#[path = "common/peak.rs"] mod peak;`) and by `peak_cli.rs`, the small program the
//! Python comparison scripts compile with `rustc` to print the peak in their own runs.
//!
//! "The peak" of a host is the widest set's ([`Peaks::widest`]): on a CPU that runs 256-bit FMAs
//! as two 128-bit halves (AMD Zen 1) the `ymm` loop measures the same GFLOP/s as the `xmm` one,
//! and on an AVX-512 host the `zmm` loop measures up to twice the `ymm` one.
#![allow(dead_code)]

use std::hint::black_box;
use std::time::Instant;

/// Independent FMA chains in each loop iteration.
const CHAINS: u64 = 12;

/// FLOPs of `iters` iterations of a peak loop of `lanes`-wide FMAs.
pub fn loop_flops(iters: u64, lanes: u64) -> f64 {
    (iters * CHAINS * lanes * 2) as f64
}

/// FLOPs of `iters` iterations of `peak_loop` (128-bit).
pub fn peak_flops(iters: u64) -> f64 {
    loop_flops(iters, 4)
}

/// One peak loop: `iters` (≥ 1) iterations of 12 independent `vfmadd231ps` chains on the
/// registers named by `$r` (`xmm`, `ymm` or `zmm`), in assembly so that no compiler can merge
/// or widen them. The accumulators are zeroed with VEX `xmm` instructions (which clear the
/// upper bits of every width, and need only AVX); the result is read from the low lane.
macro_rules! fma_loop {
    ($(#[$doc:meta])* $name:ident, $r:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        pub fn $name(iters: u64, _seed: f32) -> f32 {
            let out: f32;
            // SAFETY: touches only the vector registers declared clobbered (xmmN clobbers the
            // whole ymmN/zmmN) and the counter; the caller checks the CPU runs this width.
            unsafe {
                std::arch::asm!(
                    "vxorps xmm0, xmm0, xmm0", "vxorps xmm1, xmm1, xmm1", "vxorps xmm2, xmm2, xmm2",
                    "vxorps xmm3, xmm3, xmm3", "vxorps xmm4, xmm4, xmm4", "vxorps xmm5, xmm5, xmm5",
                    "vxorps xmm6, xmm6, xmm6", "vxorps xmm7, xmm7, xmm7", "vxorps xmm8, xmm8, xmm8",
                    "vxorps xmm9, xmm9, xmm9", "vxorps xmm10, xmm10, xmm10",
                    "vxorps xmm11, xmm11, xmm11", "vxorps xmm12, xmm12, xmm12",
                    "vxorps xmm13, xmm13, xmm13",
                    "2:",
                    concat!("vfmadd231ps ", $r, "0, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "1, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "2, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "3, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "4, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "5, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "6, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "7, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "8, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "9, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "10, ", $r, "12, ", $r, "13"),
                    concat!("vfmadd231ps ", $r, "11, ", $r, "12, ", $r, "13"),
                    "dec {n}",
                    "jnz 2b",
                    "vaddps xmm0, xmm0, xmm11",
                    "vzeroupper",
                    n = inout(reg) iters.max(1) => _,
                    out("xmm0") out, out("xmm1") _, out("xmm2") _, out("xmm3") _, out("xmm4") _,
                    out("xmm5") _, out("xmm6") _, out("xmm7") _, out("xmm8") _, out("xmm9") _,
                    out("xmm10") _, out("xmm11") _, out("xmm12") _, out("xmm13") _,
                );
            }
            out
        }
    };
}

fma_loop!(
    /// 12 independent chains of `vfmadd231ps xmm` (needs AVX and FMA, as the JIT does).
    peak_loop,
    "xmm"
);
fma_loop!(
    /// The same loop on `ymm` registers: only run where [`Width::Ymm`] is available.
    peak_loop_ymm_unchecked,
    "ymm"
);
fma_loop!(
    /// The same loop on `zmm` registers: only run where [`Width::Zmm`] is available.
    peak_loop_zmm_unchecked,
    "zmm"
);

/// The `ymm` peak loop; panics (instead of faulting) where the CPU lacks AVX2 + FMA.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop_ymm(iters: u64, seed: f32) -> f32 {
    assert!(Width::Ymm.available(), "the ymm peak loop needs AVX2 and FMA");
    peak_loop_ymm_unchecked(iters, seed)
}

/// The `zmm` peak loop; panics (instead of faulting) where the CPU lacks AVX-512F.
#[cfg(target_arch = "x86_64")]
pub fn peak_loop_zmm(iters: u64, seed: f32) -> f32 {
    assert!(Width::Zmm.available(), "the zmm peak loop needs AVX-512F");
    peak_loop_zmm_unchecked(iters, seed)
}

/// A vector width of the peak loops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 128-bit `xmm` (AVX + FMA).
    Xmm,
    /// 256-bit `ymm` (AVX2 + FMA).
    Ymm,
    /// 512-bit `zmm` (AVX-512F).
    Zmm,
}

impl Width {
    /// Narrowest first.
    pub const ALL: [Width; 3] = [Width::Xmm, Width::Ymm, Width::Zmm];

    pub fn bits(self) -> u32 {
        match self {
            Width::Xmm => 128,
            Width::Ymm => 256,
            Width::Zmm => 512,
        }
    }

    pub fn lanes(self) -> u64 {
        u64::from(self.bits() / 32)
    }

    /// The register name: `xmm`, `ymm`, `zmm`.
    pub fn name(self) -> &'static str {
        match self {
            Width::Xmm => "xmm",
            Width::Ymm => "ymm",
            Width::Zmm => "zmm",
        }
    }

    /// Whether this CPU runs this width's loop.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Width::Xmm => has!("avx") && has!("fma"),
                Width::Ymm => has!("avx2") && has!("fma"),
                Width::Zmm => has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// GFLOP/s of this width's loop (best of 5), when the CPU runs it.
    pub fn measure(self) -> Option<f64> {
        #[cfg(target_arch = "x86_64")]
        if self.available() {
            let lp = match self {
                Width::Xmm => peak_loop,
                Width::Ymm => peak_loop_ymm_unchecked,
                Width::Zmm => peak_loop_zmm_unchecked,
            };
            return Some(measure(lp, self.lanes()));
        }
        None
    }
}

/// The FMA peaks of every width this CPU runs, measured once.
#[derive(Debug, Clone)]
pub struct Peaks {
    /// (width, GFLOP/s per core), narrowest first; only the widths the CPU runs.
    pub widths: Vec<(Width, f64)>,
}

impl Peaks {
    /// Measures every width the CPU runs (the zmm loop only where AVX-512F is present).
    pub fn measure() -> Peaks {
        Peaks {
            widths: Width::ALL
                .iter()
                .filter_map(|&w| w.measure().map(|g| (w, g)))
                .collect(),
        }
    }

    /// The best of two measurements per width (for benches that measure before and after).
    pub fn max(&self, other: &Peaks) -> Peaks {
        Peaks {
            widths: self
                .widths
                .iter()
                .map(|&(w, g)| (w, other.get(w).map_or(g, |o| g.max(o))))
                .collect(),
        }
    }

    /// The peak of `w`, when measured.
    pub fn get(&self, w: Width) -> Option<f64> {
        self.widths.iter().find(|(x, _)| *x == w).map(|&(_, g)| g)
    }

    /// The widest width this CPU runs and its peak: what "% of peak" means on this host.
    pub fn widest(&self) -> (Width, f64) {
        self.widths.last().copied().unwrap_or((Width::Xmm, f64::NAN))
    }

    /// `gflops` as a percentage of the widest peak.
    pub fn percent(&self, gflops: f64) -> f64 {
        100.0 * gflops / self.widest().1
    }

    /// One line per width, the widest marked: `FMA peak, 256-bit ymm: 63.1 GFLOP/s per core
    /// (widest on this CPU)`. The Python scripts read these lines.
    pub fn report(&self) -> String {
        let widest = self.widest().0;
        let mut s = String::new();
        for &(w, g) in &self.widths {
            s += &format!(
                "FMA peak, {}-bit {}: {g:.1} GFLOP/s per core{}\n",
                w.bits(),
                w.name(),
                if w == widest { " (widest on this CPU)" } else { "" }
            );
        }
        for w in Width::ALL {
            if self.get(w).is_none() {
                s += &format!(
                    "FMA peak, {}-bit {}: not run (this CPU lacks it)\n",
                    w.bits(),
                    w.name()
                );
            }
        }
        s
    }
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

/// GFLOP/s of `lp`, 12 chains of `lanes`-wide FMAs (best of 5). `lp` must run on this CPU.
pub fn measure(lp: fn(u64, f32) -> f32, lanes: u64) -> f64 {
    let iters = 20_000_000;
    (0..5)
        .map(|_| {
            let s = timed(|| {
                black_box(lp(black_box(iters), 1.0));
            });
            loop_flops(iters, lanes) / s / 1e9
        })
        .fold(0.0, f64::max)
}

/// GFLOP/s of the 256-bit FMA peak loop, when the CPU has AVX2 and FMA.
pub fn measure_peak_ymm() -> Option<f64> {
    Width::Ymm.measure()
}

/// GFLOP/s of the 512-bit FMA peak loop, when the CPU has AVX-512F.
pub fn measure_peak_zmm() -> Option<f64> {
    Width::Zmm.measure()
}

/// The median CPU seconds of `runs` calls of `f` (after one warm-up call).
pub fn median_cpu(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..runs.max(1)).map(|_| timed(&mut f)).collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
