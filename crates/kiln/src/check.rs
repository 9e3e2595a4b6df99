//! The layered-correctness check: run a graph on the reference interpreter and on the JIT with
//! the same seeded weights and inputs, and compare. One place, used by the tests and the
//! `jit_vs_interp` fuzz target.

use kiln_ir::Graph;
use kiln_ir::init::{default_weights, random_inputs};

/// Tolerance of JIT vs interpreter: both compute in f32 but in different orders (FMA, vector
/// partial sums, blocked accumulation) and the JIT's `exp`/`ln` are polynomials (~2e-7 rel).
pub const ATOL: f32 = 1e-4;
pub const RTOL: f32 = 1e-4;

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
    let mut model =
        kiln_jit::compile(graph, options).map_err(|e| format!("compile failed: {e}\n{}", text()))?;
    model
        .set_weights(&weights)
        .map_err(|e| format!("weights: {e}\n{}", text()))?;
    let got = model
        .run(&inputs)
        .map_err(|e| format!("JIT run failed: {e}\n{}", text()))?;
    for ((wn, wv), (_, gv)) in want.iter().zip(&got) {
        let (Some(w), Some(g)) = (wv.as_f(), gv.as_f()) else {
            return Err(format!("output `{wn}` is not f32"));
        };
        if w.shape() != g.shape() {
            return Err(format!("output `{wn}`: shapes {} vs {}", w.shape(), g.shape()));
        }
        for (i, (a, b)) in w.data().iter().zip(g.data()).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * a.abs();
            if !same {
                return Err(format!(
                    "output `{wn}` element {i}: interpreter {a}, JIT {b}\n{}",
                    text()
                ));
            }
        }
    }
    Ok(())
}
