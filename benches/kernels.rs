//! The direct kernel families (pooling, depthwise convolution, dense) on both kernel tiers,
//! one thread, against the FMA peak measured in the same run.
//!
//! `cargo bench --bench kernels` (a filter such as `maxpool` runs one family). Criterion times
//! a whole one-op model run per tier (`auto` = the AVX-512 tier where the CPU has it,
//! `cranelift` = the portable `f32x4` code; a run includes copying the input in and the output
//! out). The summary printed at the end times the AVX-512 kernel alone (called directly on a
//! buffer, CPU time, median of 15) and both tiers' whole runs, and quotes GFLOP/s (pooling:
//! one operation per window tap; convolution and dense: two per multiply-add) and the fraction
//! of the 512-bit FMA peak.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{default_weights, random_inputs};
use kiln::ir::{Graph, NodeId, Padding, Pool2d, PoolKind};
use kiln::jit::direct_avx512 as direct;
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

/// A call of an AVX-512 kernel over its whole range on an arena.
type DirectCall = Box<dyn Fn(&mut [f32])>;

/// A kernel family's case: its graph, its work, and the AVX-512 kernel alone.
struct Case {
    name: &'static str,
    graph: Graph,
    /// Operations of one run of the kernel.
    ops: f64,
    /// Calls the AVX-512 kernel once over its whole range on `arena` (sized by `arena_len`).
    direct: DirectCall,
    arena_len: usize,
}

fn window(x: [usize; 4], k: usize, s: usize, p: usize) -> (direct::WindowDesc, usize, usize) {
    let o = (x[2] + 2 * p - k) / s + 1;
    let g = kiln::ir::geometry::Window2d {
        input: [x[2], x[3]],
        kernel: [k, k],
        stride: [s, s],
        dilation: [1, 1],
        pad: [p; 4],
        output: [o, o],
    };
    (direct::WindowDesc::new(&g), o, o)
}

fn pool_case(name: &'static str, x: [usize; 4], k: usize, s: usize, p: usize, kind: PoolKind) -> Case {
    let graph = single(&x, |n, v| {
        n.pool2d(
            v,
            Pool2d {
                padding: Padding::uniform(p),
                ..Pool2d::new(kind, [k, k], [s, s])
            },
        )
    });
    let (win, oh, ow) = window(x, k, s, p);
    let planes = x[0] * x[1];
    let (xl, yl) = (planes * x[2] * x[3], planes * oh * ow);
    let d = direct::PoolDesc {
        x: 0,
        y: (xl * 4) as u64,
        planes: planes as u64,
        kind: match kind {
            PoolKind::Max => direct::POOL_MAX,
            PoolKind::Sum => direct::POOL_SUM,
            PoolKind::Avg {
                count_include_pad: false,
            } => direct::POOL_AVG,
            PoolKind::Avg {
                count_include_pad: true,
            } => direct::POOL_AVG_WITH_PAD,
        },
        win,
    };
    Case {
        name,
        graph,
        ops: (yl * k * k) as f64,
        // SAFETY: the arena holds x then y, as the description says.
        direct: Box::new(move |a| unsafe {
            direct::kiln_pool2d(&d, a.as_mut_ptr().cast(), 0, planes as i64)
        }),
        arena_len: xl + yl,
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        pool_case(
            "maxpool3x3s2_64x112x112",
            [1, 64, 112, 112],
            3,
            2,
            1,
            PoolKind::Max,
        ),
        pool_case(
            "avgpool3x3s1_64x56x56",
            [1, 64, 56, 56],
            3,
            1,
            1,
            PoolKind::Avg {
                count_include_pad: false,
            },
        ),
    ];
    // global average pool, ResNet-18's head
    let (planes, len) = (512, 49);
    let d = direct::GlobalPoolDesc {
        x: 0,
        y: (planes * len * 4) as u64,
        planes: planes as u64,
        len: len as u64,
        max: 0,
    };
    v.push(Case {
        name: "global_avgpool_512x7x7",
        graph: single(&[1, 512, 7, 7], |n, x| n.global_avg_pool(x)),
        ops: (planes * len) as f64,
        // SAFETY: x then y.
        direct: Box::new(move |a| unsafe {
            direct::kiln_global_pool(&d, a.as_mut_ptr().cast(), 0, planes as i64)
        }),
        arena_len: planes * len + planes,
    });
    for (name, c, hw, s) in [
        ("depthwise3x3s1_32x112x112", 32, 112, 1),
        ("depthwise3x3s2_64x112x112", 64, 112, 2),
    ] {
        let x = [1, c, hw, hw];
        let (win, oh, ow) = window(x, 3, s, 1);
        let (xl, wl, yl) = (c * hw * hw, c * 9, c * oh * ow);
        let d = direct::DepthwiseDesc {
            x: 0,
            w: (xl * 4) as u64,
            bias: ((xl + wl) * 4) as u64,
            y: ((xl + wl + c) * 4) as u64,
            planes: c as u64,
            cin: c as u64,
            cout: c as u64,
            cog: 1,
            act: direct::ACT_RELU,
            alpha: 0,
            win,
        };
        v.push(Case {
            name,
            graph: single(&x, |n, v| {
                let y = n.conv2d(v, Conv::new(c, [3, 3]).stride(s).padding(1).groups(c))?;
                n.relu(y)
            }),
            ops: (2 * yl * 9) as f64,
            // SAFETY: x, w, bias, y in that order.
            direct: Box::new(move |a| unsafe {
                direct::kiln_depthwise(&d, a.as_mut_ptr().cast(), 0, c as i64)
            }),
            arena_len: xl + wl + c + yl,
        });
    }
    for (name, n, i, o) in [
        ("dense_b1_4096to1000", 1, 4096, 1000),
        ("dense_b64_400to120", 64, 400, 120),
    ] {
        let d = direct::DenseDesc {
            x: 0,
            w: (n * i * 4) as u64,
            bias: ((n * i + o * i) * 4) as u64,
            y: ((n * i + o * i + o) * 4) as u64,
            batch: n as u64,
            inputs: i as u64,
            outputs: o as u64,
        };
        v.push(Case {
            name,
            graph: single(&[n, i], |net, x| net.dense(x, o)),
            ops: (2 * n * i * o) as f64,
            // SAFETY: x, w, bias, y in that order.
            direct: Box::new(move |a| unsafe { direct::kiln_dense(&d, a.as_mut_ptr().cast(), 0, o as i64) }),
            arena_len: n * i + o * i + o + n * o,
        });
    }
    v
}

fn bench(c: &mut Criterion) {
    let zmm = peak::measure_peak_zmm();
    let xmm = peak::measure_peak();
    let mut report = Vec::new();
    for case in cases() {
        let weights = default_weights(&case.graph, 0).expect("bench graphs fit");
        let inputs = random_inputs(&case.graph, 1).expect("bench graphs fit");
        let mut g = c.benchmark_group(case.name);
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let mut runs = Vec::new();
        for (tier, label) in [(Tier::Auto, "auto"), (Tier::Cranelift, "cranelift")] {
            let opts = kiln::CompileOptions {
                threads: 1,
                gemm_tier: tier,
                ..Default::default()
            };
            let mut model = kiln::compile(&case.graph, &opts).expect("compiles");
            model.set_weights(&weights).expect("weights fit");
            g.bench_function(BenchmarkId::from_parameter(label), |b| {
                b.iter(|| model.run(black_box(&inputs)).unwrap())
            });
            runs.push((label, peak::median_cpu(15, || drop(model.run(&inputs).unwrap()))));
        }
        g.finish();
        let alone = kiln::jit::direct_avx512::available().then(|| {
            let mut arena: Vec<f32> = (0..case.arena_len).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            peak::median_cpu(15, || (case.direct)(&mut arena))
        });
        report.push((case.name, case.ops, alone, runs));
    }
    println!("times below are CPU time of the bench's thread (median of 15), not wall time");
    println!("128-bit FMA peak: {xmm:.1} GFLOP/s per core");
    if let Some(z) = zmm {
        println!("512-bit FMA peak: {z:.1} GFLOP/s per core");
    }
    let pct = |gf: f64| {
        zmm.map_or(String::new(), |z| {
            format!(" ({:.1}% of the 512-bit peak)", 100.0 * gf / z)
        })
    };
    for (name, ops, alone, runs) in report {
        if let Some(t) = alone {
            let gf = ops / t / 1e9;
            println!(
                "{name}: AVX-512 kernel alone {:.4} ms = {gf:.1} GFLOP/s{}",
                t * 1e3,
                pct(gf)
            );
        }
        for (label, t) in runs {
            println!("{name}: whole run, {label} tier: {:.4} ms", t * 1e3);
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
