//! sgemm on every micro-kernel tier this CPU runs (one thread), against this core's FMA peak
//! at each vector width, measured in the same run (assembly loops of 12 independent
//! `vfmadd231ps` chains: `common/peak.rs`).
//!
//! Two kinds of products: square ones (512³, 1024³), and the GEMMs of ResNet-18's
//! convolutions (the VGG block's 3×3 64→64 at 56×56 is `layer1`'s) with B a dense patch matrix,
//! each with A packed per block on every run (`run`) and packed once ahead (`run_packed`, as a
//! model's weights are).
//!
//! `cargo bench --bench gemm`; the GFLOP/s and the fraction of the peak are printed at the end.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::jit::gemm::{Sgemm, Tier};

#[path = "common/peak.rs"]
mod peak;
use peak::Peaks;

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7 + seed) % 17) as f32 / 17.0 - 0.5)
        .collect()
}

/// ResNet-18's convolution GEMMs: (name, rows = output channels, depth = input channels ×
/// taps, columns = output pixels).
const CONVS: [(&str, usize, usize, usize); 5] = [
    ("conv1 7x7 s2 3->64 (112x112)", 64, 147, 12544),
    ("layer1 3x3 64->64 (56x56, VGG block)", 64, 576, 3136),
    ("layer2 3x3 128->128 (28x28)", 128, 1152, 784),
    ("layer3 3x3 256->256 (14x14)", 256, 2304, 196),
    ("layer4 3x3 512->512 (7x7)", 512, 4608, 49),
];

fn bench(c: &mut Criterion) {
    let mut tiers = vec![("cranelift", Sgemm::new().expect("the JIT runs on this host"))];
    for tier in Tier::runnable() {
        if tier != Tier::Cranelift {
            tiers.push((
                tier.isa().name(),
                Sgemm::with_tier(tier).expect("a runnable tier"),
            ));
        }
    }
    let peaks = Peaks::measure();
    let mut report = Vec::new();
    let mut group = c.benchmark_group("sgemm");
    group.sample_size(10);
    for (tier, g) in &tiers {
        let tile = format!("{tier} {}x{}", g.tile().0, g.tile().1);
        for n in [512usize, 1024] {
            let (a, b) = (data(n * n, 1), data(n * n, 3));
            let mut out = vec![0.0f32; n * n];
            group.bench_function(format!("{tier}_{n}"), |bch| {
                bch.iter(|| g.run(n, n, n, &a, &b, &mut out).unwrap())
            });
            let s = peak::median_cpu(7, || g.run(n, n, n, &a, &b, &mut out).unwrap());
            report.push((
                tile.clone(),
                format!("sgemm {n}³"),
                2.0 * (n * n * n) as f64 / s / 1e9,
            ));
        }
        for (name, m, k, n) in CONVS {
            let (a, b) = (data(m * k, 1), data(k * n, 3));
            let mut out = vec![0.0f32; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let s = peak::median_cpu(9, || g.run(m, n, k, &a, &b, &mut out).unwrap());
            report.push((tile.clone(), format!("{name}, A packed per run"), flops / s / 1e9));
            let packed = g.pack_a(m, k, &a).unwrap();
            let s = peak::median_cpu(9, || {
                g.run_packed(m, n, k, &packed, &b, &mut out, [0, m]).unwrap()
            });
            report.push((tile.clone(), format!("{name}, A packed ahead"), flops / s / 1e9));
        }
    }
    group.finish();
    let peaks = peaks.max(&Peaks::measure());
    println!("times below are CPU time of the bench's thread (median), not wall time");
    println!("{}", peaks.report());
    for (tile, what, gf) in report {
        println!(
            "{what:<56} {tile:<16} {gf:6.1} GFLOP/s = {:3.0}% of the peak",
            peaks.percent(gf)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
