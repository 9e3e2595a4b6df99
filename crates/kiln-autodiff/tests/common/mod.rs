//! Gradient checking: the training graph's gradients (run on the interpreter in f64) against
//! central finite differences of its loss output (the same interpreter, the forward part only
//! mattering). Values come from a grid with distinct entries, so a max never ties and no
//! relu input sits within the step of its kink.

#![allow(dead_code)]

use kiln_autodiff::{Loss, TrainingGraph, differentiate};
use kiln_interp::{Value, run};
use kiln_ir::{DType, Graph, Tensor, TensorType};
use std::collections::HashMap;

/// `n` distinct values in `(lo, hi)`, a permutation of a grid picked by `seed`: spacing
/// `(hi − lo)/1009`, a quarter step off the grid so that `(−1, 1)` never gives 0.
pub fn distinct(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    assert!(n <= 1009, "tensor too large for the distinct grid");
    grid(n, seed, lo, hi)
}

/// `n` values of the grid of [`distinct`], repeating past 1009 of them: for a loss target,
/// which feeds no kink and need not have distinct values (a transposed convolution's output,
/// and so its target, can hold thousands).
pub fn grid(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
    let m = 1009u64;
    (0..n as u64)
        .map(|i| {
            let k = (i * 7919 + seed.wrapping_mul(104_729) % m + 1) % m;
            lo + (hi - lo) * (k as f64 + 0.25) / m as f64
        })
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
/// were compared. Panics with the graph's text on a mismatch.
pub fn check(case: &Case) -> usize {
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
    let (mut compared, mut kinks) = (0, 0);
    assert!(!t.grads.is_empty(), "no gradients");
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
            let (up, down) = (at(eps), at(-eps));
            let numeric = (up - down) / (2.0 * eps);
            // A kink within the step (a max changing hands, a relu at zero) shows as one-sided
            // slopes that disagree: the loss is not differentiable there, so nothing to compare.
            let (right, left) = ((up - base) / eps, (base - down) / eps);
            if (right - left).abs() > 1e-3 * (1.0 + numeric.abs()) {
                kinks += 1;
                continue;
            }
            let a = analytic.data()[i];
            assert!(
                (a - numeric).abs() <= 1e-6 + 1e-5 * numeric.abs(),
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
    compared
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
