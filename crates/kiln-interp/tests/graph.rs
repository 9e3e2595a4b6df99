//! Whole graphs through `run` / `evaluate`: a small CNN and spatial pyramid pooling with hand
//! values, index tensors through layout ops, the feed checks and their messages, and random
//! valid graphs from kiln-ir's generator.

#[macro_use]
mod common;

use common::{assert_close, seq, t};
use kiln_interp::{Float, InterpError, Value, evaluate, run};
use kiln_ir::builder::{Conv, Network};
use kiln_ir::init::{default_weights, random_inputs};
use kiln_ir::{Graph, LossKind, Op, ReduceKind, Tensor, TensorType};
use proptest::prelude::*;
use std::collections::HashMap;

type Inputs<T> = HashMap<String, Value<T>>;
type Weights<T> = HashMap<String, Tensor<T>>;

/// x = 1..16 (4×4) → conv 2×2 stride 2 with w = [[1,2],[3,4]], bias −100 → relu → flatten →
/// dense 4 → 2. The conv gives 44, 64, 124, 144 (10v + 34 for top-left v = 1, 3, 9, 11), −100
/// → −56, −36, 24, 44, relu → 0, 0, 24, 44; dense rows [1,1,1,1] + 0 and [0,0,0,1] + 1 → 68, 45.
fn small_cnn<T: Float>() -> (Graph, Inputs<T>, Weights<T>) {
    let mut net = Network::new("small");
    let x = net.input("x", [1, 1, 4, 4]).unwrap();
    let h = net
        .named("conv1")
        .conv2d(x, Conv::new(1, [2, 2]).stride(2))
        .unwrap();
    let r = net.named("act").relu(h).unwrap();
    let f = net.flatten(r).unwrap();
    let y = net.named("fc").dense(f, 2).unwrap();
    net.output(y).unwrap();
    net.output(r).unwrap();
    let g = net.finish().unwrap();
    let inputs = HashMap::from([("x".to_string(), Value::F(seq::<T>(&[1, 1, 4, 4])))]);
    let weights = HashMap::from([
        (
            "conv1.weight".to_string(),
            t::<T>(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
        ),
        ("conv1.bias".to_string(), t::<T>(&[1], &[-100.0])),
        (
            "fc.weight".to_string(),
            t::<T>(&[2, 4], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
        ),
        ("fc.bias".to_string(), t::<T>(&[2], &[0.0, 1.0])),
    ]);
    (g, inputs, weights)
}

fn run_small_cnn<T: Float>() {
    let (g, inputs, weights) = small_cnn::<T>();
    let out = run(&g, &inputs, &weights).unwrap();
    // outputs in the order they were marked
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, "fc");
    assert_close(out[0].1.as_f().unwrap(), &[1, 2], &[68.0, 45.0]);
    assert_eq!(out[1].0, "act");
    assert_close(out[1].1.as_f().unwrap(), &[1, 1, 2, 2], &[0.0, 0.0, 24.0, 44.0]);
    // evaluate gives every node, weights included
    let all = evaluate(&g, &inputs, &weights).unwrap();
    assert_eq!(all.len(), g.len());
    let conv = all[&g.find("conv1").unwrap()].as_f().unwrap().clone();
    assert_close(&conv, &[1, 1, 2, 2], &[-56.0, -36.0, 24.0, 44.0]);
}

/// Spatial pyramid pooling (levels 1 and 2, max) of 2 channels: channel 0 = 1..16, channel 1 =
/// −(1..16). Level 1: the plane maxima 16, −1. Level 2: 2×2 window maxima 6, 8, 14, 16 and
/// −1, −3, −9, −11 (minus the windows' minima). Flattened per level, levels concatenated.
fn spatial_pyramid_pooling<T: Float>() {
    let mut net = Network::new("spp");
    let x = net.input("x", [1, 2, 4, 4]).unwrap();
    let y = net
        .named("spp")
        .spatial_pyramid_pool(x, &[1, 2], ReduceKind::Max)
        .unwrap();
    net.output(y).unwrap();
    let g = net.finish().unwrap();
    let mut data: Vec<f64> = (1..=16).map(f64::from).collect();
    data.extend((1..=16).map(|v| -f64::from(v)));
    let inputs = HashMap::from([("x".to_string(), Value::F(t::<T>(&[1, 2, 4, 4], &data)))]);
    let out = run(&g, &inputs, &HashMap::new()).unwrap();
    assert_eq!(out[0].0, "spp");
    let want = [16.0, -1.0, 6.0, 8.0, 14.0, 16.0, -1.0, -3.0, -9.0, -11.0];
    assert_close(out[0].1.as_f().unwrap(), &[1, 10], &want);
    // average pyramid: level 1 means 8.5, −8.5; level 2 the 2×2 means
    let mut net = Network::new("spp");
    let x = net.input("x", [1, 2, 4, 4]).unwrap();
    let y = net
        .named("spp")
        .spatial_pyramid_pool(x, &[1, 2], ReduceKind::Avg)
        .unwrap();
    net.output(y).unwrap();
    let out = run(&net.finish().unwrap(), &inputs, &HashMap::new()).unwrap();
    let want = [8.5, -8.5, 3.5, 5.5, 11.5, 13.5, -3.5, -5.5, -11.5, -13.5];
    assert_close(out[0].1.as_f().unwrap(), &[1, 10], &want);
}

/// Class ids are i32 values: they pass through transpose, reshape and concat unchanged.
fn index_tensors_through_layout_ops<T: Float>() {
    let mut g = Graph::new();
    let ids = g.input("ids", TensorType::i32([2, 3])).unwrap();
    let tr = g.add("tr", Op::Transpose { perm: vec![1, 0] }, &[ids]).unwrap();
    let flat = g.add("flat", Op::Reshape { shape: vec![-1] }, &[tr]).unwrap();
    let both = g.add("both", Op::Concat { axis: 0 }, &[flat, flat]).unwrap();
    g.mark_output(both).unwrap();
    let inputs: Inputs<T> = HashMap::from([(
        "ids".to_string(),
        Value::I(Tensor::new([2, 3], vec![1, 2, 3, 4, 5, 6]).unwrap()),
    )]);
    let out = run(&g, &inputs, &HashMap::new()).unwrap();
    let v = out[0].1.as_i().unwrap();
    assert_eq!(v.dims(), &[12]);
    assert_eq!(v.data(), &[1, 4, 2, 5, 3, 6, 1, 4, 2, 5, 3, 6]);
}

/// A classifier head with a loss node: logits → cross-entropy against i32 labels.
fn loss_graph() -> Graph {
    let mut net = Network::new("loss");
    let z = net.input("logits", [2, 3]).unwrap();
    let y = net.input_typed("labels", TensorType::i32([2])).unwrap();
    let l = net.named("loss").loss(LossKind::CrossEntropy, z, y).unwrap();
    net.output(l).unwrap();
    net.finish().unwrap()
}

fn loss_through_run<T: Float>() {
    let g = loss_graph();
    let inputs: Inputs<T> = HashMap::from([
        ("logits".to_string(), Value::F(t::<T>(&[2, 3], &[0.0; 6]))),
        (
            "labels".to_string(),
            Value::I(Tensor::new([2], vec![0, 2]).unwrap()),
        ),
    ]);
    let out = run(&g, &inputs, &HashMap::new()).unwrap();
    // uniform logits over 3 classes: −log ⅓ = ln 3 for each element
    assert_close(out[0].1.as_f().unwrap(), &[], &[3f64.ln()]);
}

fn feed_errors<T: Float>() {
    let (g, inputs, weights) = small_cnn::<T>();
    let msg = |e: InterpError| e.to_string();

    let e = run(&g, &HashMap::new(), &weights).unwrap_err();
    assert!(
        matches!(&e, InterpError::MissingInput { name, .. } if name == "x"),
        "{e:?}"
    );
    assert_eq!(
        msg(e),
        "missing input `x` (expected f32[1, 1, 4, 4]); inputs given: none"
    );

    // a typo: `x` is missing, and the message lists what was given
    let typo: Inputs<T> = HashMap::from([("xx".to_string(), inputs["x"].clone())]);
    let e = msg(run(&g, &typo, &weights).unwrap_err());
    assert!(e.contains("missing input `x`") && e.contains("`xx`"), "{e}");

    let mut extra = inputs.clone();
    extra.insert("y".into(), inputs["x"].clone());
    let e = run(&g, &extra, &weights).unwrap_err();
    assert_eq!(msg(e), "unknown input `y`: the graph's inputs are `x`");
    // a weight's name is not an input
    let mut extra = inputs.clone();
    extra.insert("fc.bias".into(), Value::F(t::<T>(&[2], &[0.0, 0.0])));
    let e = run(&g, &extra, &weights).unwrap_err();
    assert!(
        matches!(&e, InterpError::UnknownInput { name, .. } if name == "fc.bias"),
        "{e:?}"
    );

    let wrong_shape: Inputs<T> = HashMap::from([("x".to_string(), Value::F(seq::<T>(&[1, 1, 4, 5])))]);
    let e = run(&g, &wrong_shape, &weights).unwrap_err();
    assert_eq!(msg(e), "input `x`: expected f32[1, 1, 4, 4], got f32[1, 1, 4, 5]");

    let wrong_dtype: Inputs<T> = HashMap::from([("x".to_string(), Value::I(Tensor::full([1, 1, 4, 4], 0)))]);
    let e = run(&g, &wrong_dtype, &weights).unwrap_err();
    assert_eq!(msg(e), "input `x`: expected f32[1, 1, 4, 4], got i32[1, 1, 4, 4]");

    let mut missing = weights.clone();
    missing.remove("fc.bias");
    let e = run(&g, &inputs, &missing).unwrap_err();
    assert_eq!(msg(e), "missing weight `fc.bias` (expected f32[2])");

    let mut bad = weights.clone();
    bad.insert("conv1.weight".into(), t::<T>(&[1, 1, 3, 3], &[0.0; 9]));
    let e = run(&g, &inputs, &bad).unwrap_err();
    assert_eq!(
        msg(e),
        "weight `conv1.weight`: expected f32[1, 1, 2, 2], got f32[1, 1, 3, 3]"
    );

    // extra weights are ignored (one weights map may serve several graphs)
    let mut more = weights.clone();
    more.insert("unused".into(), t::<T>(&[1], &[0.0]));
    assert!(run(&g, &inputs, &more).is_ok());

    // class ids: an f32 tensor where i32 ids are declared, and an id out of range
    let g = loss_graph();
    let logits = Value::F(t::<T>(&[2, 3], &[0.0; 6]));
    let inputs: Inputs<T> = HashMap::from([
        ("logits".to_string(), logits.clone()),
        ("labels".to_string(), Value::F(t::<T>(&[2], &[0.0, 1.0]))),
    ]);
    let e = run(&g, &inputs, &HashMap::new()).unwrap_err();
    assert_eq!(msg(e), "input `labels`: expected i32[2], got f32[2]");
    let inputs: Inputs<T> = HashMap::from([
        ("logits".to_string(), logits),
        (
            "labels".to_string(),
            Value::I(Tensor::new([2], vec![1, 3]).unwrap()),
        ),
    ]);
    let e = run(&g, &inputs, &HashMap::new()).unwrap_err();
    assert!(
        matches!(&e, InterpError::Op { node, .. } if node == "loss"),
        "{e:?}"
    );
    assert_eq!(
        msg(e),
        "node `loss` (cross_entropy_loss): class id 3 of batch element 1 is out of range 0..3"
    );
}

both! {
    graph_small_cnn => run_small_cnn,
    graph_spatial_pyramid_pooling => spatial_pyramid_pooling,
    graph_index_tensors => index_tensors_through_layout_ops,
    graph_loss => loss_through_run,
    graph_feed_errors => feed_errors,
}

/// `init::random_inputs` (seeded; class ids in range for the loss they feed) in precision `T`.
fn random_feeds<T: Float>(graph: &Graph, seed: u64) -> Inputs<T> {
    random_inputs(graph, seed)
        .expect("small test graphs")
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::F(t) => Value::F(t.map(|&x| T::from_f64(f64::from(x)))),
                Value::I(t) => Value::I(t),
            };
            (k, v)
        })
        .collect()
}

fn weights_as<T: Float>(graph: &Graph, seed: u64) -> Weights<T> {
    default_weights(graph, seed)
        .expect("small test graphs")
        .into_iter()
        .map(|(k, v)| (k, v.map(|&x| T::from_f64(f64::from(x)))))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// Every random valid graph runs in f32 and f64 without an error (evaluate also checks each
    /// node's value against the node's inferred type), and the two precisions agree wherever
    /// both values are finite (or both NaN, or both the same infinity). Where one precision
    /// reaches a singularity and the other does not, the graph is ill-conditioned there, not
    /// wrong: `x − lrn(x)` with a one-channel LRN is `7.5e-5·x³`, zero in f32 for `|x| < 0.03`
    /// and not in f64, so `(x − lrn(x)) / (x − lrn(x))` is NaN in f32 and 1 in f64.
    #[test]
    fn random_graphs_run(bytes in proptest::collection::vec(any::<u8>(), 0..200), seed in 0u64..1000) {
        let g = kiln_ir::random::graph_from_bytes(&bytes);
        let text = kiln_ir::text::print(&g);
        let out32 = run::<f32>(&g, &random_feeds(&g, seed), &weights_as(&g, seed));
        let out64 = run::<f64>(&g, &random_feeds(&g, seed), &weights_as(&g, seed));
        let (out32, out64) = match (out32, out64) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => return Err(TestCaseError::fail(format!("{:?} / {:?}\n{text}", a.err(), b.err()))),
        };
        for ((n32, v32), (_, v64)) in out32.iter().zip(&out64) {
            if let (Some(a), Some(b)) = (v32.as_f(), v64.as_f()) {
                for (x, y) in a.data().iter().zip(b.data()) {
                    let (x, y) = (f64::from(*x), *y);
                    let singular = x.is_finite() != y.is_finite();
                    let ok = singular || (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= 1e-3 * (1.0 + y.abs());
                    prop_assert!(ok, "output `{}`: f32 {} vs f64 {}\n{}", n32, x, y, text);
                }
            }
        }
    }
}

/// A graph whose values together exceed the byte limit is refused before any input is read or
/// any value allocated (three 8 GiB values; the interpreter keeps them all).
#[test]
fn values_beyond_the_byte_limit_are_an_error_before_allocating() {
    let g = kiln_ir::text::parse(
        "graph g {\n input %x: f32[1, 1, 32768, 65536]\n %a = relu(%x)\n %b = relu(%a)\n output %b\n}\n",
    )
    .unwrap();
    let err = kiln_interp::run::<f32>(&g, &HashMap::new(), &HashMap::new()).unwrap_err();
    assert!(matches!(err, kiln_interp::InterpError::TooLarge(_)), "{err}");
    assert!(err.to_string().contains("above the limit"), "{err}");
}

/// A pooling kernel of 2^30 + 1 taps over a 4-pixel row padded by 2^29 on each side: the
/// interpreter once listed every tap of every window (64 GiB) and aborted; windows are ranges
/// now. Each of the 4 windows covers the 4 pixels; without the padding counted, it averages
/// them.
#[test]
fn huge_pooling_kernels_cost_no_memory() {
    let k = (1u64 << 30) + 1;
    let p = 1u64 << 29;
    let src = format!(
        "graph g {{\n input %x: f32[1, 1, 1, 4]\n %y = avg_pool2d(%x) {{kernel=[1, {k}], stride=[1, 1], padding=[0, {p}, 0, {p}], count_include_pad=false}}\n output %y\n}}\n"
    );
    let g = kiln_ir::text::parse(&src).unwrap();
    let x = Tensor::new([1, 1, 1, 4], vec![1.0f64, 2.0, 3.0, 4.0]).unwrap();
    let out = run::<f64>(
        &g,
        &HashMap::from([("x".to_string(), Value::F(x))]),
        &HashMap::new(),
    )
    .unwrap();
    let Value::F(y) = &out[0].1 else {
        panic!("f32 output")
    };
    assert_eq!(y.dims(), &[1, 1, 1, 4]);
    assert_eq!(y.data(), &[2.5; 4]);
}

/// Log-softmax over an empty batch with a 2^31 − 1 wide axis: the interpreter allocated the
/// 8 GiB row before looking at the batch. Empty values are now empty without running a kernel.
#[test]
fn empty_values_run_no_kernel() {
    let g = kiln_ir::text::parse(
        "graph g {\n input %x: f32[0, 2147483647]\n %y = log_softmax(%x) {axis=1}\n output %y\n}\n",
    )
    .unwrap();
    let x = Tensor::new([0, 2147483647], Vec::<f32>::new()).unwrap();
    let out = run::<f32>(
        &g,
        &HashMap::from([("x".to_string(), Value::F(x))]),
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(out[0].1.shape().dims(), &[0, 2147483647]);
}
