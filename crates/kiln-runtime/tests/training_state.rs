//! A training graph's state lives in the arena: every optimizer's updates write their weights
//! and state buffers in place (none copied after the update phase), and a step gives the
//! interpreter's new weights and state — batch norm's running statistics among them, whose
//! updates read the batch statistics of the forward pass at the very end of the step (so the
//! memory plan must keep those alive through the gradient phase).

use kiln_autodiff::{Loss, Optimizer, Wrt, differentiate_wrt};
use kiln_ir::builder::{Conv, Network};
use kiln_ir::init::{default_weights, random_inputs};
use kiln_ir::{Graph, Tensor, Value};
use kiln_runtime::{Feed, compile_training};
use std::collections::HashMap;

/// A small network with a batch of 4: conv, batch norm (running statistics: state the
/// updates write too), ReLU, max pool, a residual add, dense.
fn net() -> Graph {
    let mut n = Network::new("small");
    let x = n.input("x", [4, 2, 6, 6]).unwrap();
    let h = n
        .named("conv")
        .conv2d(x, Conv::new(3, [3, 3]).padding(1))
        .unwrap();
    let h = n.named("bn").batch_norm(h).unwrap();
    let h = n.relu(h).unwrap();
    let r = n
        .named("conv2")
        .conv2d(h, Conv::new(3, [3, 3]).padding(1))
        .unwrap();
    let h = n.add(h, r).unwrap();
    let h = n.max_pool2d(h, [2, 2], [2, 2]).unwrap();
    let h = n.flatten(h).unwrap();
    let y = n.named("fc").dense(h, 5).unwrap();
    n.output(y).unwrap();
    n.finish().unwrap()
}

fn check_in_place(opt: Optimizer, what: &str) {
    let t = differentiate_wrt(&net(), Loss::cross_entropy(), Some(opt), Wrt::Params).unwrap();
    let tg = &t.graph;
    let mut weights = default_weights(tg, 5).unwrap();
    for (name, ty) in &t.state {
        // nonzero state, so that every term of the update matters
        weights.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.01));
    }
    let inputs = random_inputs(tg, 6).unwrap();
    let want: HashMap<String, Value<f32>> = kiln_interp::run::<f32>(tg, &inputs, &weights)
        .unwrap()
        .into_iter()
        .collect();
    let m = compile_training(tg, &Default::default(), &t.updates).unwrap();
    assert_eq!(m.copied_updates(), 0, "{what}: every update in place");
    let mut s = m.session().unwrap();
    m.own_weights(&mut s, &weights).unwrap();
    let feeds: Vec<Feed> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    m.run_gradients(&mut s, &feeds).unwrap();
    m.apply_updates(&mut s).unwrap();
    for (name, node) in &t.updates {
        let (got, w) = (m.read(&s, name).unwrap(), want[node].as_f().unwrap().clone());
        let err = got
            .data()
            .iter()
            .zip(w.data())
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{what}: {name} differs from the interpreter by {err}");
    }
}

#[test]
fn sgd_updates_are_in_place() {
    check_in_place(Optimizer::sgd(0.1), "SGD");
    check_in_place(
        Optimizer::sgd(0.1).momentum(0.9).weight_decay(1e-3),
        "SGD with momentum",
    );
}

#[test]
fn adam_updates_are_in_place() {
    check_in_place(Optimizer::adam(1e-3), "Adam");
    check_in_place(Optimizer::adam(1e-3).weight_decay(1e-2), "Adam with weight decay");
}
