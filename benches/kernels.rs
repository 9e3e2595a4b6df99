//! The kernel families — pooling, depthwise convolution, dense layers and convolutions on the
//! GEMM — on every kernel tier this CPU runs (`Tier::runnable()`: AVX-512 and AVX2 where the
//! CPU has them, and the portable Cranelift `f32x4` code), one thread, against the FMA peak
//! measured in the same run.
//!
//! `cargo bench --bench kernels` (a filter such as `maxpool` runs only the cases whose name
//! contains it, and prints only theirs). Criterion times a
//! whole one-op model run per tier (copying the input in and the output out included). The
//! summary printed at the end gives, per case and tier, the op's kernels alone (CPU time: the
//! median of 15 `run_profiled` calls — a run, then each kernel once more on its own — less the
//! median of 15 runs; weight preparation, which runs once when the weights are set, is in
//! neither), their GFLOP/s (FLOPs as `kiln summary` counts them: one per window tap for
//! pooling, two per multiply-add for convolutions and dense layers), the percentage of the
//! widest FMA peak this CPU runs (`common/peak.rs`; the narrower widths' peaks are printed for
//! reference), and the whole run's CPU time (median of 15).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{default_weights, random_inputs};
use kiln::ir::{Graph, NodeId, Padding, Pool2d, PoolKind};
use kiln::jit::gemm::Tier;
use std::hint::black_box;
use std::time::Duration;

#[path = "common/peak.rs"]
mod peak;

/// A one-layer network: `layer` applied to an input of `shape`.
fn single(shape: &[usize], layer: impl FnOnce(&mut Network, NodeId) -> kiln::ir::Result<NodeId>) -> Graph {
    let mut net = Network::new("op");
    let x = net.input("input", shape).unwrap();
    let y = layer(&mut net, x).unwrap();
    net.output(y).unwrap();
    net.finish().unwrap()
}

/// One case of a kernel family: a one-op graph at a size a zoo network runs it at.
struct Case {
    name: &'static str,
    family: &'static str,
    graph: Graph,
}

fn pool(x: [usize; 4], k: usize, s: usize, p: usize, kind: PoolKind) -> Graph {
    single(&x, |n, v| {
        n.pool2d(
            v,
            Pool2d {
                padding: Padding::uniform(p),
                ..Pool2d::new(kind, [k, k], [s, s])
            },
        )
    })
}

fn cases() -> Vec<Case> {
    let avg = PoolKind::Avg {
        count_include_pad: false,
    };
    let depthwise = |c: usize, hw: usize, k: usize, s: usize| {
        single(&[1, c, hw, hw], |n, v| {
            let y = n.conv2d(v, Conv::new(c, [k, k]).stride(s).padding(k / 2).groups(c))?;
            n.relu(y)
        })
    };
    let dense = |n: usize, i: usize, o: usize| single(&[n, i], |net, x| net.dense(x, o));
    let conv = |c: usize, o: usize, k: usize, hw: usize| {
        single(&[1, c, hw, hw], |n, v| {
            let y = n.conv2d(v, Conv::new(o, [k, k]).padding(k / 2))?;
            n.relu(y)
        })
    };
    vec![
        Case {
            name: "maxpool3x3s2_64x112x112",
            family: "max pool 3×3 s2 p1, 64×112×112 (ResNet-18)",
            graph: pool([1, 64, 112, 112], 3, 2, 1, PoolKind::Max),
        },
        Case {
            name: "avgpool3x3s1_64x56x56",
            family: "avg pool 3×3 s1 p1, 64×56×56",
            graph: pool([1, 64, 56, 56], 3, 1, 1, avg),
        },
        Case {
            name: "global_avgpool_512x7x7",
            family: "global avg pool 512×7×7",
            graph: single(&[1, 512, 7, 7], |n, x| n.global_avg_pool(x)),
        },
        Case {
            name: "depthwise3x3s1_32x112x112",
            family: "depthwise 3×3 s1 + ReLU, 32×112×112 (MobileNet)",
            graph: depthwise(32, 112, 3, 1),
        },
        Case {
            name: "depthwise3x3s1_128x56x56",
            family: "depthwise 3×3 s1 + ReLU, 128×56×56 (MobileNet)",
            graph: depthwise(128, 56, 3, 1),
        },
        Case {
            name: "depthwise3x3s2_64x112x112",
            family: "depthwise 3×3 s2 + ReLU, 64×112×112",
            graph: depthwise(64, 112, 3, 2),
        },
        Case {
            name: "depthwise3x3s2_96x112x112",
            family: "depthwise 3×3 s2 + ReLU, 96×112×112 (EfficientNet-B0)",
            graph: depthwise(96, 112, 3, 2),
        },
        Case {
            name: "depthwise5x5s1_240x28x28",
            family: "depthwise 5×5 s1 + ReLU, 240×28×28 (EfficientNet-B0)",
            graph: depthwise(240, 28, 5, 1),
        },
        Case {
            name: "depthwise5x5s1_1152x7x7",
            family: "depthwise 5×5 s1 + ReLU, 1152×7×7 (EfficientNet-B0)",
            graph: depthwise(1152, 7, 5, 1),
        },
        Case {
            name: "dense_b1_4096to1000",
            family: "dense 4096→1000, batch 1",
            graph: dense(1, 4096, 1000),
        },
        Case {
            name: "dense_b64_400to120",
            family: "dense 400→120, batch 64 (LeNet's fc1)",
            graph: dense(64, 400, 120),
        },
        Case {
            name: "softmax_64x1000",
            family: "softmax over 1000 classes, batch 64",
            graph: single(&[64, 1000], |n, x| n.softmax(x, 1)),
        },
        Case {
            name: "softmax_channels_21x64x64",
            family: "softmax over 21 channels, 64×64 (per pixel)",
            graph: single(&[1, 21, 64, 64], |n, x| n.softmax(x, 1)),
        },
        Case {
            name: "conv3x3_64to64_56x56",
            family: "conv 3×3 64→64 + ReLU, 56×56 (GEMM; ResNet-18 layer1)",
            graph: conv(64, 64, 3, 56),
        },
        Case {
            name: "conv1x1_32to64_112x112",
            family: "conv 1×1 32→64 + ReLU, 112×112 (GEMM; MobileNet pointwise)",
            graph: conv(32, 64, 1, 112),
        },
    ]
}

/// The tiers to compare: every forced tier this CPU runs.
fn tiers() -> Vec<(Tier, String)> {
    Tier::runnable()
        .into_iter()
        .map(|t| (t, format!("{t:?}").to_lowercase()))
        .collect()
}

/// One tier's figures for one case.
struct Figures {
    tier: String,
    /// The op's kernels alone, CPU seconds: a profiled run's median less a run's.
    kernels: f64,
    /// A whole run, CPU seconds (median of 15).
    run: f64,
}

fn bench(c: &mut Criterion) {
    let first_peaks = peak::Peaks::measure();
    let tiers = tiers();
    let mut report = Vec::new();
    // the first argument that is not an option: criterion's filter, which this summary follows
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for case in cases() {
        if filter.as_ref().is_some_and(|f| !case.name.contains(f.as_str())) {
            continue;
        }
        let weights = default_weights(&case.graph, 0).expect("bench graphs fit");
        let inputs = random_inputs(&case.graph, 1).expect("bench graphs fit");
        let flops = kiln::ir::summary::summarize(&case.graph).total_flops as f64;
        let mut g = c.benchmark_group(case.name);
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let mut figures = Vec::new();
        for (tier, label) in &tiers {
            let opts = kiln::CompileOptions {
                threads: 1,
                gemm_tier: *tier,
                ..Default::default()
            };
            let mut model = kiln::compile(&case.graph, &opts).expect("compiles on a runnable tier");
            model.set_weights(&weights).expect("weights fit");
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| model.run(black_box(&inputs)).unwrap())
            });
            // run_profiled = a run, then each kernel once more on its own: the difference of
            // the CPU times is the kernels' (wall times on a loaded machine include waiting)
            let run = peak::median_cpu(15, || drop(model.run(&inputs).unwrap()));
            let profiled = peak::median_cpu(15, || drop(model.run_profiled(&inputs).unwrap()));
            figures.push(Figures {
                tier: label.clone(),
                kernels: (profiled - run).max(1e-9),
                run,
            });
        }
        g.finish();
        report.push((case, flops, figures));
    }
    let peaks = first_peaks.max(&peak::Peaks::measure());
    let (widest, wp) = peaks.widest();
    println!(
        "\nOne thread, CPU time. Kernels alone: the median of 15 profiled runs less the median of 15 runs;"
    );
    println!("whole run: the median of 15 runs (the input copied in, the output out).");
    print!("{}", peaks.report());
    println!(
        "(best of a measurement before and after the cases; % below: of the {}-bit peak)",
        widest.bits()
    );
    for (case, flops, figures) in &report {
        for f in figures {
            let gf = flops / f.kernels / 1e9;
            println!(
                "{}: {} tier: kernels {:.4} ms = {gf:.1} GFLOP/s = {:.1}% of peak; whole run {:.4} ms",
                case.name,
                f.tier,
                f.kernels * 1e3,
                peaks.percent(gf),
                f.run * 1e3
            );
        }
    }
    // the same as a Markdown table, one row per case, one column group per tier
    let mut head = String::from("| kernel |");
    let mut rule = String::from("|---|");
    for (_, label) in &tiers {
        head += &format!(" {label}: kernels | GFLOP/s | % of peak | whole run |");
        rule += "---|---|---|---|";
    }
    println!("\n{head}\n{rule}");
    for (case, flops, figures) in &report {
        let mut line = format!("| {} |", case.family);
        for f in figures {
            let gf = flops / f.kernels / 1e9;
            line += &format!(
                " {:.3} ms | {gf:.1} | {:.1} % | {:.3} ms |",
                f.kernels * 1e3,
                100.0 * gf / wp,
                f.run * 1e3
            );
        }
        println!("{line}");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
