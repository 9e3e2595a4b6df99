//! JIT vs interpreter, per operator and per zoo network, on seeded weights and inputs.
//! `cargo bench --bench engines` (add a filter such as `conv3x3` to run one group).
//! Operators: the JIT with its default threads (one per core). Networks: the JIT with all passes
//! (`jit_tN`) and with none (`jit_nopasses_tN`) at N = 1 and 2 threads. Figures: docs/performance.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{default_weights, random_inputs};
use kiln::ir::{Graph, NodeId, Pool2d, PoolKind};
use kiln::passes::OptLevel;
use std::hint::black_box;
use std::time::Duration;

/// One group `name` with a `jit` and an `interp` benchmark of the same graph.
fn both(c: &mut Criterion, name: &str, graph: &Graph) {
    compare(c, name, graph, &[0], true);
}

/// One group `name`: the JIT with all passes and with none, at each thread count of
/// `threads` (0: one per core), and the interpreter when `interp`.
fn compare(c: &mut Criterion, name: &str, graph: &Graph, threads: &[usize], interp: bool) {
    let weights = default_weights(graph, 0).expect("bench graphs fit");
    let inputs = random_inputs(graph, 1).expect("bench graphs fit");
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for &t in threads {
        for (passes, label) in [(OptLevel::Full, "jit"), (OptLevel::None, "jit_nopasses")] {
            if passes == OptLevel::None && threads == [0] {
                continue; // the per-operator groups: passes on only
            }
            let opts = kiln::CompileOptions {
                passes,
                threads: t,
                ..Default::default()
            };
            let mut model = kiln::compile(graph, &opts).expect("compiles");
            model.set_weights(&weights).expect("weights fit");
            let id = if t == 0 {
                label.to_string()
            } else {
                format!("{label}_t{t}")
            };
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| model.run(black_box(&inputs)).unwrap())
            });
        }
    }
    if interp {
        g.bench_function(BenchmarkId::from_parameter("interp"), |b| {
            b.iter(|| kiln::interp::run::<f32>(black_box(graph), &inputs, &weights).unwrap())
        });
    }
    g.finish();
}

/// A one-layer network: `layer` applied to an input of `shape`.
fn single(shape: &[usize], layer: impl FnOnce(&mut Network, NodeId) -> kiln::ir::Result<NodeId>) -> Graph {
    let mut net = Network::new("op");
    let x = net.input("input", shape).unwrap();
    let y = layer(&mut net, x).unwrap();
    net.output(y).unwrap();
    net.finish().unwrap()
}

fn operators(c: &mut Criterion) {
    let conv = single(&[1, 64, 56, 56], |n, x| {
        n.conv2d(x, Conv::new(64, [3, 3]).padding(1))
    });
    both(c, "conv3x3_64to64_56x56", &conv);
    let dw = single(&[1, 64, 56, 56], |n, x| {
        n.conv2d(x, Conv::new(64, [3, 3]).padding(1).groups(64))
    });
    both(c, "depthwise3x3_64_56x56", &dw);
    let pool = single(&[1, 64, 112, 112], |n, x| {
        let p = Pool2d {
            padding: kiln::ir::Padding::uniform(1),
            ..Pool2d::new(PoolKind::Max, [3, 3], [2, 2])
        };
        n.pool2d(x, p)
    });
    both(c, "maxpool3x3s2_64_112x112", &pool);
    both(
        c,
        "dense_4096to1000",
        &single(&[1, 4096], |n, x| n.dense(x, 1000)),
    );
    both(c, "softmax_64x1000", &single(&[64, 1000], |n, x| n.softmax(x, 1)));
}

/// Every zoo network: passes on vs off at 1 and 2 threads, and the interpreter (left out for
/// the two networks where one interpreted run takes tens of seconds: `kiln bench` times those).
fn networks(c: &mut Criterion) {
    let lenet = kiln::zoo::lenet5().unwrap();
    compare(c, "lenet5_batch1", &lenet, &[1, 2], true);
    compare(c, "lenet5_batch64", &lenet.with_batch(64).unwrap(), &[1, 2], true);
    compare(
        c,
        "resnet18_batch1",
        &kiln::zoo::resnet18().unwrap(),
        &[1, 2],
        true,
    );
    compare(
        c,
        "mobilenet_block_batch1",
        &kiln::zoo::mobilenet_block().unwrap(),
        &[1, 2],
        true,
    );
    compare(
        c,
        "inception_block_batch1",
        &kiln::zoo::inception_block().unwrap(),
        &[1, 2],
        true,
    );
    compare(c, "spp_net_batch1", &kiln::zoo::spp_net().unwrap(), &[1, 2], true);
    compare(
        c,
        "alexnet_batch1",
        &kiln::zoo::alexnet().unwrap(),
        &[1, 2],
        false,
    );
    compare(c, "vgg16_batch1", &kiln::zoo::vgg16().unwrap(), &[1, 2], false);
}

criterion_group!(benches, operators, networks);
criterion_main!(benches);
