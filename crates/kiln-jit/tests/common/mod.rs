//! Helpers shared by kiln-jit's test files (each includes this module with `mod common;`).

// (each test file uses some of these)
#![allow(dead_code)]

use kiln_ir::init::{default_weights, random_inputs};
use kiln_ir::{Graph, Op, TensorType};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use kiln_runtime::check::jit_matches_interpreter_with;

/// A one-op graph: `op` over a fresh input `x` of type `x` and fresh params `p0`, `p1`, … of
/// types `params`; `None` when shape inference rejects the combination (a strategy then skips
/// it).
pub fn one_op(op: Op, x: TensorType, params: &[TensorType]) -> Option<Graph> {
    let mut g = Graph::new();
    let mut ins = vec![g.input("x", x).ok()?];
    for (i, p) in params.iter().enumerate() {
        ins.push(g.param(format!("p{i}"), p.clone()).ok()?);
    }
    let y = g.add("y", op, &ins).ok()?;
    g.mark_output(y).ok()?;
    Some(g)
}

/// The bits of every output of `graph` (in order, end to end) on `threads` threads of `tier`,
/// with seeded weights and inputs.
pub fn output_bits(graph: &Graph, seed: u64, tier: Tier, threads: usize) -> Vec<u32> {
    let opts = JitOptions {
        gemm_tier: tier,
        threads,
        ..JitOptions::default()
    };
    let weights = default_weights(graph, seed).unwrap();
    let inputs = random_inputs(graph, seed ^ 0x5eed).unwrap();
    let mut model = kiln_runtime::compile(graph, &opts).unwrap();
    model.set_weights(&weights).unwrap();
    let out = model.run(&inputs).unwrap();
    out.iter()
        .flat_map(|(_, v)| v.as_f().unwrap().data().iter().map(|v| v.to_bits()))
        .collect()
}

/// `graph` equals the interpreter on every runnable tier and 1 to 4 threads, each thread count
/// bit for bit the one-thread result.
pub fn check_threads(graph: &Graph, seed: u64, what: &str) {
    for tier in Tier::runnable() {
        let one = output_bits(graph, seed, tier, 1);
        for threads in 1..=4 {
            let opts = JitOptions {
                gemm_tier: tier,
                threads,
                ..JitOptions::default()
            };
            if let Err(e) = jit_matches_interpreter_with(graph, seed, &opts) {
                panic!("{what}, {tier:?}, {threads} threads: {e}");
            }
            if threads > 1 {
                assert!(
                    output_bits(graph, seed, tier, threads) == one,
                    "{what}, {tier:?}: {threads} threads differ from one"
                );
            }
        }
    }
}
