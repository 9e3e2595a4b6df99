//! The `jit_vs_interp` fuzz target's check, run on a fixed set of generated inputs in both of
//! the generator's modes: a random graph (with extreme dims and attributes now and then) is a
//! clean error of the generator or of an engine, or both engines give the same answer; the JIT
//! never crashes. `KILN_EXTREME_CASES` sets how many inputs (default 300).

use kiln_ir::random::{self, Mode};

/// Most elements of any tensor of a graph that is run (as in the fuzz target).
const RUN_LIMIT: usize = 1 << 14;

fn one(data: &[u8], mode: Mode) -> Result<(), String> {
    let g = match random::graph_from_bytes_with(data, mode) {
        Ok(g) => g,
        Err(_) if mode == Mode::Extreme => return Ok(()),
        Err(e) => return Err(format!("normal mode failed: {e}")),
    };
    if !g
        .petgraph()
        .node_weights()
        .all(|n| n.ty.shape.numel() <= RUN_LIMIT)
    {
        return Ok(());
    }
    // a small tensor with a huge dim (another one is 0): the JIT alone, which must not crash
    // (the interpreter is not asked: some of its kernels size buffers by one axis)
    if g.petgraph()
        .node_weights()
        .any(|n| n.ty.dims().iter().any(|&d| d > RUN_LIMIT))
        || huge_attributes(&g)
    {
        return jit_alone(&g);
    }
    if std::env::var_os("KILN_EXTREME_VERBOSE").is_some() {
        eprintln!("{mode:?}:\n{}", kiln_ir::text::print(&g));
    }
    let seed = data
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let tier = kiln_runtime::check::tier_for_seed(seed);
    let options = kiln_jit::JitOptions {
        gemm_tier: tier,
        threads: 1 + (seed as usize >> 1 & 1),
        ..Default::default()
    };
    match kiln_runtime::check::jit_matches_interpreter_with(&g, seed, &options) {
        Ok(()) => Ok(()),
        Err(e) => {
            let refused = [
                "interpreter failed",
                "compile failed",
                "weights:",
                "JIT run failed",
            ]
            .iter()
            .any(|p| e.starts_with(p));
            if mode == Mode::Normal || !refused {
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

/// Whether a node has an attribute above `RUN_LIMIT` in size (a pooling window of 2³¹ taps,
/// say), which the interpreter may materialize: those graphs are run by the JIT alone.
fn huge_attributes(g: &kiln_ir::Graph) -> bool {
    kiln_ir::text::print(g).lines().any(|l| {
        l.split_once('{').is_some_and(|(_, attrs)| {
            attrs
                .split(|c: char| !c.is_ascii_digit())
                .any(|t| t.parse::<u128>().is_ok_and(|v| v > RUN_LIMIT as u128))
        })
    })
}

/// Compiles and runs `g` on seeded weights and inputs: any clean result is fine.
fn jit_alone(g: &kiln_ir::Graph) -> Result<(), String> {
    let (Ok(w), Ok(inputs)) = (
        kiln_ir::init::default_weights(g, 3),
        kiln_ir::init::random_inputs(g, 4),
    ) else {
        return Ok(());
    };
    if let Ok(mut m) = kiln_runtime::compile(g, &Default::default())
        && m.set_weights(&w).is_ok()
    {
        let _ = m.run(&inputs);
    }
    Ok(())
}

#[test]
fn random_graphs_in_both_modes() {
    let cases: u64 = std::env::var("KILN_EXTREME_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let from: u64 = std::env::var("KILN_EXTREME_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let verbose = std::env::var_os("KILN_EXTREME_VERBOSE").is_some();
    let mut failures = Vec::new();
    for case in from..from + cases {
        if verbose {
            eprintln!("case {case}");
        }
        let len = 64 + (case % 7) as usize * 24;
        let data: Vec<u8> = (0..len as u64)
            .map(|i| {
                let x = (case.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xBF58_476D_1CE4_E5B9))
                    .wrapping_add(i);
                (x ^ (x >> 29))
                    .wrapping_mul(0x94D0_49BB_1331_11EB)
                    .rotate_right(17) as u8
            })
            .collect();
        for mode in [Mode::Normal, Mode::Extreme] {
            if let Err(e) = one(&data, mode) {
                failures.push(format!("case {case} ({mode:?}): {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The training graphs (forward, MSE loss, backward, SGD with momentum) of generated graphs in
/// both modes: no crash, and no engine failure on a normal graph (`KILN_EXTREME_CASES` as
/// above; 3000 cases ran clean of crashes when this was written).
#[test]
fn random_training_graphs_in_both_modes() {
    let cases: u64 = std::env::var("KILN_EXTREME_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let from: u64 = std::env::var("KILN_EXTREME_FROM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let verbose = std::env::var_os("KILN_EXTREME_VERBOSE").is_some();
    let mut failures = Vec::new();
    for case in from..from + cases {
        let data: Vec<u8> = (0..96u64)
            .map(|i| {
                (case.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i.wrapping_mul(0x9E37_79B9)).rotate_left(23) as u8
            })
            .collect();
        for mode in [Mode::Normal, Mode::Extreme] {
            let Ok(g) = random::graph_from_bytes_with(&data, mode) else {
                continue;
            };
            let Ok(t) = kiln_autodiff::differentiate(
                &g,
                kiln_autodiff::Loss::mse(),
                Some(kiln_autodiff::Optimizer::sgd(0.01).momentum(0.5)),
            ) else {
                continue;
            };
            let g = t.graph;
            if verbose {
                eprintln!("case {case} {mode:?}:\n{}", kiln_ir::text::print(&g));
            }
            if !g
                .petgraph()
                .node_weights()
                .all(|n| n.ty.shape.numel() <= RUN_LIMIT)
            {
                continue;
            }
            if g.petgraph()
                .node_weights()
                .any(|n| n.ty.dims().iter().any(|&d| d > RUN_LIMIT))
                || huge_attributes(&g)
            {
                let _ = jit_alone(&g);
                continue;
            }
            // Gradients of these graphs (chains of matmuls, divisions by small values) can
            // be ill-conditioned enough that f32 in another order differs beyond the check's
            // tolerance: a different value is not asserted here (train_jit.rs compares the
            // well-conditioned ones), an engine failing a normal graph is.
            if let Err(e) = kiln_runtime::check::jit_matches_interpreter(&g, case)
                && mode == Mode::Normal
                && !e.starts_with("output")
            {
                failures.push(format!("case {case} ({mode:?}): {e}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
