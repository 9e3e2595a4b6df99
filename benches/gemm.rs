//! sgemm on the Cranelift micro-kernel (one thread), against this core's measured 128-bit FMA
//! peak: a loop of 12 independent `vfmadd231ps xmm` chains, measured in the same run.
//!
//! `cargo bench --bench gemm`; the GFLOP/s and the fraction of the peak are printed at the end.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::jit::gemm::{Sgemm, Tier};

#[path = "common/peak.rs"]
mod peak;
use peak::{measure, measure_peak, peak_loop_zmm, timed};

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 17) as f32 / 17.0 - 0.5)
        .collect()
}

fn bench(c: &mut Criterion) {
    let cranelift = Sgemm::new().expect("the JIT runs on this host");
    let avx512 = Sgemm::with_tier(Tier::Auto).expect("the JIT runs on this host");
    let mut tiers = vec![("cranelift_5x8", &cranelift)];
    if avx512.blocking != cranelift.blocking {
        tiers.push(("avx512_12x32", &avx512));
    }
    let mut report = Vec::new();
    let peak = measure_peak();
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(10);
    for (tier, g) in &tiers {
        for n in [512usize, 1024] {
            let (a, b) = (data(n * n, 1), data(n * n, 3));
            let mut out = vec![0.0f32; n * n];
            group.bench_function(format!("{tier}_{n}"), |bch| {
                bch.iter(|| g.run(n, n, n, &a, &b, &mut out).unwrap())
            });
            // median of 7 timed runs for the printed summary
            let mut times: Vec<f64> = (0..7)
                .map(|_| timed(|| g.run(n, n, n, &a, &b, &mut out).unwrap()))
                .collect();
            times.sort_by(f64::total_cmp);
            report.push((*tier, g.blocking, n, 2.0 * (n * n * n) as f64 / times[3] / 1e9));
        }
    }
    group.finish();
    let peak2 = measure_peak().max(peak);
    println!("times below are CPU time of the bench's thread, not wall time");
    println!("128-bit FMA peak (best of the two measurements): {peak2:.1} GFLOP/s per core");
    let zmm = (tiers.len() > 1).then(|| measure(peak_loop_zmm, 16));
    if let Some(z) = zmm {
        println!("512-bit FMA peak: {z:.1} GFLOP/s per core");
    }
    for (tier, blocking, n, gf) in report {
        println!(
            "sgemm {n}³ {tier} {blocking:?} (median of 7): {gf:.1} GFLOP/s = {:.0}% of the 128-bit peak{}",
            100.0 * gf / peak2,
            match zmm {
                Some(z) if tier.starts_with("avx512") =>
                    format!(", {:.0}% of the 512-bit peak", 100.0 * gf / z),
                _ => String::new(),
            }
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
