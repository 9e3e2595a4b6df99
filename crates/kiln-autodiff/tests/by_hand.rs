//! Gradients and updates whose values are worked out by hand (in the comments): max pooling's
//! tie rule and overlapping windows, and the SGD-with-momentum and Adam updates over two steps,
//! PyTorch's formulas.

use kiln_autodiff::{Loss, Optimizer, differentiate};
use kiln_interp::{Value, run};
use kiln_ir::{Graph, Op, Pool2d, PoolKind, Tensor, TensorType};
use std::collections::HashMap;

/// `dx` of a 2×2, stride-1 max pool over the 3×3 plane `x`, for `dy = [[1, 2], [3, 4]]`.
fn max_pool_dx(x: [f64; 9]) -> Vec<f64> {
    let xt = Tensor::new([1, 1, 3, 3], x.to_vec()).unwrap();
    let p = Pool2d::new(PoolKind::Max, [2, 2], [1, 1]);
    let ids = kiln_interp::pool::max_pool2d_argmax(&xt, &p).unwrap();
    let dy = Tensor::new([1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    kiln_interp::pool::scatter_ids(&dy, &ids, [3, 3])
        .unwrap()
        .into_data()
}

#[test]
fn max_pool_ties_go_to_the_first_maximum_in_row_major_order() {
    // all equal: each window's top-left element wins: ids 0, 1, 3, 4
    assert_eq!(
        max_pool_dx([5.0; 9]),
        [1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]
    );
    // a tie inside window (0, 0) between (0, 1) and (1, 0): (0, 1) comes first
    let x = [0.0, 7.0, 0.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    // windows: (0,0) → (0,1); (0,1) → (0,1); (1,0) → (1,0); (1,1) → (1,1) (all zero: first)
    assert_eq!(max_pool_dx(x), [0.0, 3.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn overlapping_max_windows_accumulate() {
    // the centre is every window's maximum: it gets 1 + 2 + 3 + 4
    let x = [0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
    assert_eq!(max_pool_dx(x), [0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0]);
}

/// `y = x·w` with `x = 1`, `w = 1` and target 0.75, so `loss = (w − 0.75)²` and
/// `dloss/dw = 2·(w − 0.75)`: 0.5 at the start.
fn one_weight() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32([1, 1])).unwrap();
    let w = g.param("w", TensorType::f32([1, 1])).unwrap();
    let y = g.add("y", Op::Dense, &[x, w]).unwrap();
    g.mark_output(y).unwrap();
    g
}

/// Runs `steps` training steps on the interpreter (f64) and returns `w` after each.
fn train(opt: Optimizer, steps: usize) -> Vec<f64> {
    let t = differentiate(&one_weight(), Loss::mse(), Some(opt)).unwrap();
    let inputs = HashMap::from([
        ("x".to_string(), Value::F(Tensor::full([1, 1], 1.0))),
        (t.target.clone(), Value::F(Tensor::full([1, 1], 0.75))),
    ]);
    let mut weights: HashMap<String, Tensor<f64>> =
        HashMap::from([("w".to_string(), Tensor::full([1, 1], 1.0))]);
    for (name, ty) in &t.state {
        weights.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.0));
    }
    let mut ws = Vec::new();
    for _ in 0..steps {
        let outs: HashMap<_, _> = run(&t.graph, &inputs, &weights).unwrap().into_iter().collect();
        for (name, node) in &t.updates {
            weights.insert(name.clone(), outs[node].as_f().unwrap().clone());
        }
        ws.push(weights["w"].data()[0]);
    }
    ws
}

/// Equal up to the rounding of the optimizer's `f32` constants (`0.1f32 ≠ 0.1`).
fn close(got: &[f64], want: &[f64]) {
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-7, "got {got:?}, want {want:?}");
    }
}

#[test]
fn sgd_with_momentum_and_weight_decay() {
    // step 1: g = 0.5; v = 0 + 0.5 + 0.1·1 = 0.6; w = 1 − 0.1·0.6 = 0.94
    // step 2: g = 2·0.19 = 0.38; v = 0.9·0.6 + 0.38 + 0.1·0.94 = 1.014; w = 0.94 − 0.1014 = 0.8386
    let opt = Optimizer::sgd(0.1).momentum(0.9).weight_decay(0.1);
    close(&train(opt, 2), &[0.94, 0.8386]);
    // plain SGD: w = 1 − 0.1·0.5 = 0.95, then 0.95 − 0.1·0.4 = 0.91
    close(&train(Optimizer::sgd(0.1), 2), &[0.95, 0.91]);
}

#[test]
fn adam_two_steps() {
    // step 1: m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25; w = 1 − 0.01·0.5/(0.5 + 1e-8)
    let w1 = 1.0 - 0.01 * 0.5 / (0.5 + 1e-8);
    // step 2: g = 2·(w1 − 0.75); m = 0.9·0.05 + 0.1·g; v = 0.999·0.00025 + 0.001·g²;
    // m̂ = m/(1 − 0.81), v̂ = v/(1 − 0.998001)
    let g = 2.0 * (w1 - 0.75);
    let (m, v) = (0.9 * 0.05 + 0.1 * g, 0.999 * 0.00025 + 0.001 * g * g);
    let w2 = w1 - 0.01 * (m / 0.19) / ((v / (1.0 - 0.999f64 * 0.999)).sqrt() + 1e-8);
    // the optimizer's constants are f32: compare at f32's precision
    let got = train(Optimizer::adam(0.01), 2);
    for (g, w) in got.iter().zip([w1, w2]) {
        assert!((g - w).abs() < 1e-6, "got {got:?}, want [{w1}, {w2}]");
    }
}

#[test]
fn dropout_masks_drop_about_the_ratio_and_change_every_step() {
    let x = Tensor::full([10_000], 1.0f64);
    let at =
        |step: f64| kiln_interp::elementwise::dropout_train(&x, &Tensor::full([], step), 0.3, 42).unwrap();
    let (a, b) = (at(0.0), at(1.0));
    let kept = a.data().iter().filter(|&&v| v != 0.0).count();
    assert!(
        (6_800..7_200).contains(&kept),
        "kept {kept} of 10000 at ratio 0.3"
    );
    // kept elements are scaled by 1/(1 − ratio) (the ratio is an f32)
    let scale = 1.0 / (1.0 - f64::from(0.3f32));
    assert!(a.data().iter().all(|&v| v == 0.0 || v == scale));
    let differ = a.data().iter().zip(b.data()).filter(|(p, q)| p != q).count();
    assert!(differ > 3_000, "only {differ} elements changed between steps");
}

#[test]
fn graphs_that_cannot_be_trained_are_errors_that_say_why() {
    let two = kiln_ir::text::parse(
        "graph g {\n  input %x: f32[2, 3]\n  %a = relu(%x)\n  %b = tanh(%x)\n  output %a\n  output %b\n}\n",
    )
    .unwrap();
    let e = differentiate(&two, Loss::mse(), None).unwrap_err().to_string();
    assert!(e.contains("exactly one output") && e.contains("has 2"), "{e}");
    let spatial =
        kiln_ir::text::parse("graph g {\n  input %x: f32[2, 3, 4, 4]\n  %a = relu(%x)\n  output %a\n}\n")
            .unwrap();
    let e = differentiate(&spatial, Loss::cross_entropy(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the loss does not apply") && e.contains("[N, K]"),
        "{e}"
    );
    let leaky = kiln_ir::text::parse(
        "graph g {\n  input %x: f32[2, 3]\n  %a = leaky_relu(%x) {alpha=-0.5}\n  output %a\n}\n",
    )
    .unwrap();
    let e = differentiate(&leaky, Loss::mse(), None).unwrap_err().to_string();
    assert!(e.contains("node `a` (leaky_relu)") && e.contains("alpha"), "{e}");
}

#[test]
fn batch_norm_running_statistics_follow_pytorch() {
    // x = [1, 3] on one channel: batch mean 2, unbiased variance 2; momentum 0.1 from
    // running mean 0 and variance 1: 0.9·0 + 0.1·2 = 0.2 and 0.9·1 + 0.1·2 = 1.1
    let g = kiln_ir::text::parse(
        "graph bn {\n  input %x: f32[2, 1]\n  param %s: f32[1]\n  param %b: f32[1]\n  buffer %m: f32[1]\n  buffer %v: f32[1]\n  %y = batch_norm(%x, %s, %b, %m, %v)\n  output %y\n}\n",
    )
    .unwrap();
    let t = differentiate(&g, Loss::mse(), Some(Optimizer::sgd(0.0))).unwrap();
    let inputs = HashMap::from([
        (
            "x".to_string(),
            Value::F(Tensor::new([2, 1], vec![1.0, 3.0]).unwrap()),
        ),
        (t.target.clone(), Value::F(Tensor::full([2, 1], 0.0))),
    ]);
    let weights: HashMap<String, Tensor<f64>> = [("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)]
        .into_iter()
        .map(|(n, v)| (n.to_string(), Tensor::full([1], v)))
        .collect();
    let outs: HashMap<_, _> = run(&t.graph, &inputs, &weights).unwrap().into_iter().collect();
    let next = |w: &str| {
        let node = &t.updates.iter().find(|(n, _)| n == w).unwrap().1;
        outs[node].as_f().unwrap().data()[0]
    };
    assert!((next("m") - 0.2).abs() < 1e-7 && (next("v") - 1.1).abs() < 1e-7);
    // the forward pass used the batch statistics: (x − 2)/√(1 + 1e-5), so the loss is
    // mean((±1/√(1 + 1e-5))²)
    let loss = outs[&t.loss].as_f().unwrap().data()[0];
    assert!((loss - 1.0 / (1.0 + 1e-5f32 as f64)).abs() < 1e-9, "{loss}");
}
