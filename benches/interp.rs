//! The reference interpreter's speed: the baseline later JIT benches are measured against.
//! `cargo bench --bench interp`.

use criterion::{Criterion, criterion_group, criterion_main};
use kiln::interp::{self, Value};
use kiln::ir::builder::{Conv, Network};
use kiln::ir::init::{SplitMix64, default_weights};
use kiln::ir::{Graph, Op, Tensor};
use std::collections::HashMap;
use std::hint::black_box;

/// Seeded random values for every graph input.
fn random_inputs(graph: &Graph, seed: u64) -> HashMap<String, Value<f32>> {
    let mut rng = SplitMix64::new(seed);
    graph
        .graph_inputs()
        .into_iter()
        .map(|id| {
            let n = graph.node(id);
            let Op::Input(ty) = &n.op else { unreachable!("graph_inputs returns inputs") };
            let data = (0..ty.shape.numel()).map(|_| rng.uniform(1.0)).collect();
            (n.name.clone(), Value::F(Tensor::new(ty.shape.clone(), data).expect("sized")))
        })
        .collect()
}

fn bench_graph(c: &mut Criterion, name: &str, graph: &Graph) {
    let weights = default_weights(graph, 0);
    let inputs = random_inputs(graph, 1);
    c.bench_function(name, |b| b.iter(|| interp::run(black_box(graph), &inputs, &weights).expect("runs")));
}

fn conv3x3(c: &mut Criterion) {
    let mut net = Network::new("conv3x3");
    let x = net.input("input", [1, 16, 28, 28]).expect("valid");
    let y = net.named("output").conv2d(x, Conv::new(16, [3, 3]).padding(1)).expect("valid");
    net.output(y).expect("valid");
    bench_graph(c, "interp/conv3x3_16to16_28x28", &net.finish().expect("valid"));
}

fn lenet5(c: &mut Criterion) {
    bench_graph(c, "interp/lenet5_batch1", &kiln::zoo::lenet5().expect("zoo builds"));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = conv3x3, lenet5
}
criterion_main!(benches);
