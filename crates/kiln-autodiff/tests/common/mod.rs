//! Gradient checking: the training graph's gradients (run on the interpreter in f64) against
//! central finite differences of its loss output (the same interpreter, the forward part only
//! mattering). Values come from a shuffled grid with distinct entries, so a max over inputs never
//! ties and no relu input sits within the step of its kink; where an op makes ties of its own
//! (a max over softmax outputs, which depend on differences of inputs), the one-sided slopes
//! show the kink and the element is skipped.

#![allow(dead_code)]

use kiln_autodiff::{Loss, TrainingGraph, differentiate};
use kiln_interp::{Value, run};
use kiln_ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;

/// Points on the grid: `(lo, hi)` cut into 1009 steps, each value a quarter step off its grid
/// point so that `(−1, 1)` never gives 0.
const GRID: usize = 1009;

/// `n` distinct values in `(lo, hi)`: the first `n` of a permutation of the grid shuffled by
/// `seed`. Shuffled rather than walked with a fixed stride: with values affine in their index,
/// every difference at a fixed distance in memory is the same, and ops that see differences
/// (softmax along an axis, then a max) tie everywhere.
pub fn distinct(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    assert!(n <= GRID, "tensor too large for the distinct grid");
    grid(n, seed, lo, hi)
}

/// `n` values of the grid of [`distinct`], the permutation repeating past 1009 of them: for a
/// loss target, which feeds no kink and need not have distinct values (a transposed
/// convolution's output, and so its target, can hold thousands).
pub fn grid(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    // Fisher–Yates driven by splitmix64: a fixed permutation per seed, no crate needed.
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..GRID).collect();
    for i in (1..GRID).rev() {
        order.swap(i, (next() % (i as u64 + 1)) as usize);
    }
    (0..n)
        .map(|i| lo + (hi - lo) * (order[i % GRID] as f64 + 0.25) / GRID as f64)
        .collect()
}

pub struct Case {
    pub graph: Graph,
    pub loss: Loss,
    /// Values of f32 inputs are drawn in `(-1, 1)` unless given here.
    pub ranges: HashMap<String, (f64, f64)>,
    pub seed: u64,
}

impl Case {
    pub fn new(graph: Graph, loss: Loss, seed: u64) -> Case {
        Case {
            graph,
            loss,
            ranges: HashMap::new(),
            seed,
        }
    }
    pub fn range(mut self, name: &str, lo: f64, hi: f64) -> Case {
        self.ranges.insert(name.to_string(), (lo, hi));
        self
    }
}

type Feeds = (HashMap<String, Value<f64>>, HashMap<String, Tensor<f64>>);

fn feeds(case: &Case, t: &TrainingGraph) -> Feeds {
    let mut inputs = HashMap::new();
    let mut weights = HashMap::new();
    let g = &t.graph;
    for (k, id) in g.graph_inputs().into_iter().chain(g.params()).enumerate() {
        let n = g.node(id);
        let seed = case.seed.wrapping_add(k as u64 * 17);
        let numel = n.ty.shape.numel();
        if n.name == t.target && n.ty.dtype == DType::I32 {
            let classes = g.node(g.find(&t.prediction).unwrap()).ty.dims()[1];
            let ids = (0..numel)
                .map(|i| ((i as u64 * 3 + seed) % classes as u64) as i32)
                .collect();
            inputs.insert(
                n.name.clone(),
                Value::I(Tensor::new(n.ty.shape.clone(), ids).unwrap()),
            );
            continue;
        }
        let (lo, hi) = if n.name == t.target && t.graph.node(g.find(&t.loss).unwrap()).op.name() != "mse_loss"
        {
            (0.05, 1.0) // probabilities: positive (rows need not sum to one)
        } else {
            case.ranges.get(&n.name).copied().unwrap_or((-1.0, 1.0))
        };
        let values = if n.name == t.target {
            grid(numel, seed, lo, hi)
        } else {
            distinct(numel, seed, lo, hi)
        };
        let v = Tensor::new(n.ty.shape.clone(), values).unwrap();
        if matches!(n.op, kiln_ir::Op::Input(_)) {
            inputs.insert(n.name.clone(), Value::F(v));
        } else {
            weights.insert(n.name.clone(), v);
        }
    }
    (inputs, weights)
}

fn output(g: &Graph, outs: &[(String, Value<f64>)], name: &str) -> Tensor<f64> {
    let _ = g;
    outs.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_f().cloned())
        .unwrap_or_else(|| panic!("no output `{name}`"))
}

/// Checks every gradient of `case` against central differences; returns how many elements
/// were compared. Panics with the graph's text on a mismatch, or if the loss at the drawn point
/// is not finite.
pub fn check(case: &Case) -> usize {
    try_check(case).unwrap_or_else(|| {
        panic!(
            "the loss is not finite at the drawn point\n{}",
            kiln_ir::text::print(&case.graph)
        )
    })
}

/// As [`check`], but `None` when the loss at the drawn point is NaN or infinite: there is no
/// slope to compare (a random graph can normalize a constant with ε = 0, say).
pub fn try_check(case: &Case) -> Option<usize> {
    let t = differentiate(&case.graph, case.loss, None).unwrap_or_else(|e| panic!("{e}"));
    let (inputs, weights) = feeds(case, &t);
    let outs = run(&t.graph, &inputs, &weights)
        .unwrap_or_else(|e| panic!("{e}\n{}", kiln_ir::text::print(&t.graph)));
    let loss_at = |inputs: &HashMap<String, Value<f64>>, weights: &HashMap<String, Tensor<f64>>| {
        let o = run(&t.graph, inputs, weights).unwrap();
        output(&t.graph, &o, &t.loss).data()[0]
    };
    let eps = 1e-6;
    let base = loss_at(&inputs, &weights);
    if !base.is_finite() {
        return None;
    }
    let (mut compared, mut kinks) = (0, 0);
    assert!(!t.grads.is_empty(), "no gradients");
    // What a step of h can resolve: besides a relative 1e-5, the loss's own rounding (a few
    // ulps of it) divided by the step; a large loss with a small slope is measured no closer.
    let tolerance = |numeric: f64, h: f64| 1e-6 + 1e-5 * numeric.abs() + 4.0 * f64::EPSILON * base.abs() / h;
    for gr in &t.grads {
        let analytic = output(&t.graph, &outs, &gr.node);
        for i in 0..analytic.data().len() {
            let at = |d: f64| {
                let (mut ip, mut wp) = (inputs.clone(), weights.clone());
                if let Some(Value::F(x)) = ip.get_mut(&gr.of) {
                    x.data_mut()[i] += d;
                } else {
                    wp.get_mut(&gr.of).unwrap().data_mut()[i] += d;
                }
                loss_at(&ip, &wp)
            };
            // Central differences, and the one-sided slopes on either side: on a smooth loss
            // they part by about eps · f'', on a kink (a max changing hands, a relu at zero) by
            // the jump in slope whatever the step.
            let slopes = |h: f64| {
                let (up, down) = (at(h), at(-h));
                ((up - down) / (2.0 * h), (up - base) / h - (base - down) / h)
            };
            let (mut numeric, parted) = slopes(eps);
            let mut step = eps;
            if parted.abs() / 2.0 > tolerance(numeric, eps) {
                // Far enough apart to move the central slope past the tolerance: an eighth of
                // the step tells curvature (the gap shrinks eightfold) from a kink (it does
                // not). A kink is not differentiable: nothing to compare.
                let (fine, parted_fine) = slopes(eps / 8.0);
                if parted_fine.abs() > parted.abs() / 2.0 {
                    kinks += 1;
                    continue;
                }
                (numeric, step) = (fine, eps / 8.0);
            }
            let a = analytic.data()[i];
            assert!(
                (a - numeric).abs() <= tolerance(numeric, step),
                "d loss / d {}[{i}]: autodiff {a}, finite differences {numeric}\n{}",
                gr.of,
                kiln_ir::text::print(&t.graph)
            );
            compared += 1;
        }
    }
    // kinks are rare on the grid of distinct values: a check that skips most is no check
    assert!(
        kinks * 4 <= compared,
        "{kinks} kinks for {compared} compared elements\n{}",
        kiln_ir::text::print(&t.graph)
    );
    Some(compared)
}

/// A graph of one op over inputs of the given types (each an `input` node `x0`, `x1`, … or,
/// for names starting with `w`, a `param`), the op's output being the prediction.
pub fn one_op(op: kiln_ir::Op, inputs: &[(&str, TensorType)]) -> Result<Graph, kiln_ir::IrError> {
    let mut g = Graph::new();
    let mut ids = Vec::new();
    for (name, ty) in inputs {
        ids.push(if name.starts_with('w') || name.starts_with('b') {
            g.param(*name, ty.clone())?
        } else {
            g.input(*name, ty.clone())?
        });
    }
    let y = g.add("y", op, &ids)?;
    g.mark_output(y)?;
    Ok(g)
}
