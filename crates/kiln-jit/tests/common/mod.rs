//! Shared by the JIT-vs-interpreter tests: seeded inputs and weights, and the comparison.

use kiln_ir::Graph;
use kiln_ir::init::{default_weights, random_inputs};

/// Tolerance of JIT vs interpreter: both compute in f32, but in different orders (FMA,
/// vector partial sums) and the JIT's `exp`/`ln` are polynomial approximations (~2e-7 rel).
pub const ATOL: f32 = 1e-4;
pub const RTOL: f32 = 1e-4;

/// Runs `graph` on the interpreter and the JIT with the same seeded data and asserts equal
/// outputs within `ATOL + RTOL·|expected|`.
pub fn check_graph(graph: &Graph, seed: u64) {
    let weights = default_weights(graph, seed);
    let inputs = random_inputs(graph, seed ^ 0x5eed);
    let want = kiln_interp::run::<f32>(graph, &inputs, &weights)
        .unwrap_or_else(|e| panic!("interpreter failed: {e}\n{}", kiln_ir::text::print(graph)));
    let mut model = kiln_jit::compile(graph, &kiln_jit::JitOptions::default())
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{}", kiln_ir::text::print(graph)));
    model.set_weights(&weights).unwrap();
    let got = model.run(&inputs).unwrap();
    assert_eq!(want.len(), got.len());
    for ((wn, wv), (gn, gv)) in want.iter().zip(&got) {
        assert_eq!(wn, gn);
        let (w, g) = (wv.as_f().expect("f32 output"), gv.as_f().expect("f32 output"));
        assert_eq!(w.shape(), g.shape(), "output `{wn}`");
        for (i, (a, b)) in w.data().iter().zip(g.data()).enumerate() {
            let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= ATOL + RTOL * a.abs();
            assert!(
                same,
                "output `{wn}` element {i}: interpreter {a}, JIT {b}\n{}",
                kiln_ir::text::print(graph)
            );
        }
    }
}
