//! JIT vs interpreter, per operator and per zoo network, on seeded weights and inputs.
//! `cargo bench --bench engines` (add a filter such as `conv3x3` to run one group).
//! The JIT runs with its default threads (one per core); figures: docs/performance.md.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{default_weights, random_inputs};
use kiln::ir::{Graph, NodeId, Pool2d, PoolKind};
use std::hint::black_box;
use std::time::Duration;

/// One group `name` with a `jit` and an `interp` benchmark of the same graph.
fn both(c: &mut Criterion, name: &str, graph: &Graph) {
    let weights = default_weights(graph, 0);
    let inputs = random_inputs(graph, 1);
    let mut model = kiln::compile(graph, &kiln::CompileOptions::default()).expect("compiles");
    model.set_weights(&weights).expect("weights fit");
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function(BenchmarkId::from_parameter("jit"), |b| {
        b.iter(|| model.run(black_box(&inputs)).unwrap())
    });
    g.bench_function(BenchmarkId::from_parameter("interp"), |b| {
        b.iter(|| kiln::interp::run::<f32>(black_box(graph), &inputs, &weights).unwrap())
    });
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

fn networks(c: &mut Criterion) {
    let lenet = kiln::zoo::lenet5().unwrap();
    both(c, "lenet5_batch1", &lenet);
    both(c, "lenet5_batch64", &lenet.with_batch(64).unwrap());
    both(c, "resnet18_batch1", &kiln::zoo::resnet18().unwrap());
}

criterion_group!(benches, operators, networks);
criterion_main!(benches);
