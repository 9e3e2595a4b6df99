//! The reference interpreter's speed: the baseline later JIT benches are measured against.
//! `cargo bench --bench interp`.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::interp;
use kiln::ir::Graph;
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{default_weights, random_inputs};
use std::hint::black_box;

fn bench_graph(c: &mut Criterion, name: &str, graph: &Graph) {
    let weights = default_weights(graph, 0);
    let inputs = random_inputs(graph, 1);
    c.bench_function(name, |b| {
        b.iter(|| interp::run(black_box(graph), &inputs, &weights).expect("runs"))
    });
}

fn conv3x3(c: &mut Criterion) {
    let mut net = Network::new("conv3x3");
    let x = net.input("input", [1, 16, 28, 28]).expect("valid");
    let y = net
        .named("output")
        .conv2d(x, Conv::new(16, [3, 3]).padding(1))
        .expect("valid");
    net.output(y).expect("valid");
    bench_graph(c, "interp/conv3x3_16to16_28x28", &net.finish().expect("valid"));
}

fn lenet5(c: &mut Criterion) {
    bench_graph(
        c,
        "interp/lenet5_batch1",
        &kiln::zoo::lenet5().expect("zoo builds"),
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = conv3x3, lenet5
}
criterion_main!(benches);
