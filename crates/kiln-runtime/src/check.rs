//! The layered-correctness check: run a graph on the reference interpreter and on the JIT with
//! the same seeded weights and inputs, and compare. One place, used by the tests and the
//! `jit_vs_interp` fuzz target.

use kiln_ir::Graph;
use kiln_ir::init::{default_weights, random_inputs};

/// Tolerance of JIT vs interpreter: both compute in f32 but in different orders (FMA, vector
/// partial sums, blocked accumulation) and the JIT's `exp`/`ln` are polynomials (~2e-7 rel).
pub const ATOL: f32 = 1e-4;
pub const RTOL: f32 = 1e-4;

/// The kernel tier a seeded test case runs: the seed picks one of the tiers this CPU can run
/// ([`kiln_jit::gemm::Tier::runnable`]), so a fuzz or property run alternates over all of them.
pub fn tier_for_seed(seed: u64) -> kiln_jit::gemm::Tier {
    let tiers = kiln_jit::gemm::Tier::runnable();
    tiers[(seed % tiers.len() as u64) as usize]
}

/// Runs `graph` on both engines with weights and inputs drawn from `seed`; `Err` describes
/// the first disagreement (or a failure of either engine) together with the graph's text.
pub fn jit_matches_interpreter(graph: &Graph, seed: u64) -> Result<(), String> {
    jit_matches_interpreter_with(graph, seed, &kiln_jit::JitOptions::default())
}

/// As [`jit_matches_interpreter`], with the JIT compiled under `options` (passes, threads).
pub fn jit_matches_interpreter_with(
    graph: &Graph,
    seed: u64,
    options: &kiln_jit::JitOptions,
) -> Result<(), String> {
    let weights = default_weights(graph, seed).map_err(|e| e.to_string())?;
    let inputs = random_inputs(graph, seed ^ 0x5eed).map_err(|e| e.to_string())?;
    let text = || kiln_ir::text::print(graph);
    let want = kiln_interp::run::<f32>(graph, &inputs, &weights)
        .map_err(|e| format!("interpreter failed: {e}\n{}", text()))?;
    let mut model = crate::compile(graph, options).map_err(|e| format!("compile failed: {e}\n{}", text()))?;
    model
        .set_weights(&weights)
        .map_err(|e| format!("weights: {e}\n{}", text()))?;
    let got = model
        .run(&inputs)
        .map_err(|e| format!("JIT run failed: {e}\n{}", text()))?;
    // The f64 interpreter's outputs, computed only if some element is off by more than the
    // tolerance: they tell how ill-conditioned that element is (see `conditioning_allows`).
    let mut want64: Option<Vec<(String, kiln_ir::Value<f64>)>> = None;
    for (k, ((wn, wv), (_, gv))) in want.iter().zip(&got).enumerate() {
        let (Some(w), Some(g)) = (wv.as_f(), gv.as_f()) else {
            return Err(format!("output `{wn}` is not f32"));
        };
        if w.shape() != g.shape() {
            return Err(format!("output `{wn}`: shapes {} vs {}", w.shape(), g.shape()));
        }
        for (i, (&a, &b)) in w.data().iter().zip(g.data()).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * a.abs();
            if same {
                continue;
            }
            if want64.is_none() {
                want64 = Some(interpret_f64(graph, &inputs, &weights)?);
            }
            let exact = want64.as_ref().and_then(|o| o.get(k)).and_then(|(_, v)| v.as_f());
            let exact = exact.and_then(|t| t.data().get(i).copied());
            if !exact.is_some_and(|e| conditioning_allows(a, b, e)) {
                return Err(format!(
                    "output `{wn}` element {i}: interpreter {a}, JIT {b} (f64 interpreter {})\n{}",
                    exact.map_or("-".to_string(), |e| e.to_string()),
                    text()
                ));
            }
        }
    }
    Ok(())
}

/// Whether the JIT's `b` is acceptable for an element where it differs from the f32
/// interpreter's `a` by more than the tolerance, given the exact (f64) value `e`. Some random
/// graphs are ill-conditioned (a division by a `tanh` near zero): there, any two f32 evaluation
/// orders differ, and the f32 interpreter is itself far from `e`. The JIT passes when it is
/// within the tolerance of `e` or no further from `a` than a few times the f32 interpreter's
/// own rounding error `|a − e|`.
fn conditioning_allows(a: f32, b: f32, e: f64) -> bool {
    let (a, b) = (f64::from(a), f64::from(b));
    if !(a.is_finite() && b.is_finite() && e.is_finite()) {
        return false;
    }
    let tol = f64::from(ATOL) + f64::from(RTOL) * e.abs();
    (b - e).abs() <= tol || (a - b).abs() <= tol + 8.0 * (a - e).abs()
}

/// The graph on the f64 interpreter with the same weights and inputs, widened.
fn interpret_f64(
    graph: &Graph,
    inputs: &std::collections::HashMap<String, kiln_ir::Value<f32>>,
    weights: &std::collections::HashMap<String, kiln_ir::Tensor<f32>>,
) -> Result<Vec<(String, kiln_ir::Value<f64>)>, String> {
    let inputs = inputs
        .iter()
        .map(|(k, v)| {
            let v = match v {
                kiln_ir::Value::F(t) => kiln_ir::Value::F(t.map(|&x| f64::from(x))),
                kiln_ir::Value::I(t) => kiln_ir::Value::I(t.clone()),
            };
            (k.clone(), v)
        })
        .collect();
    let weights = weights
        .iter()
        .map(|(k, t)| (k.clone(), t.map(|&x| f64::from(x))))
        .collect();
    kiln_interp::run::<f64>(graph, &inputs, &weights).map_err(|e| format!("f64 interpreter failed: {e}"))
}
