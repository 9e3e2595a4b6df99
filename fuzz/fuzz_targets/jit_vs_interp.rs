//! Arbitrary bytes → a random graph (the generator the proptests use) → compiled by the JIT
//! and run next to the reference interpreter on seeded weights and inputs: the outputs must
//! agree within `kiln::check`'s tolerance, and neither engine may crash (AddressSanitizer
//! watches the JIT's arena accesses through the Rust side; the arena is one allocation). All
//! graph passes run; the GEMM tier alternates between AVX-512 (where present) and Cranelift.
//!
//! The first byte picks the generator's mode: normal, or for a quarter of the inputs extreme
//! (`kiln_ir::random::Mode::Extreme`: strides, dilations, paddings, kernels, dims and axes now
//! and then `0`, `2³¹`, `2⁶³ − 1`, `u64::MAX`, …). An extreme graph must be a clean `Err` of
//! the generator, or — when every tensor in it is small enough to run — either a clean error
//! of an engine (the interpreter or the JIT refusing it) or the same answer from both. A
//! larger extreme graph is only summarized (it is valid, but running it takes gigabytes).
#![no_main]

use kiln::ir::random::{self, Mode};
use libfuzzer_sys::fuzz_target;

/// Most elements of any tensor (params included) of a graph that is run.
const RUN_LIMIT: usize = 1 << 14;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = match data.split_first() {
        Some((&b, rest)) if b >= 0xC0 => (Mode::Extreme, rest),
        Some((_, rest)) => (Mode::Normal, rest),
        None => (Mode::Normal, data),
    };
    let g = match random::graph_from_bytes_with(rest, mode) {
        Ok(g) => g,
        Err(e) => {
            assert_eq!(mode, Mode::Extreme, "normal mode failed: {e}");
            return;
        }
    };
    let small = g
        .petgraph()
        .node_weights()
        .all(|n| n.ty.shape.numel() <= RUN_LIMIT);
    if !small {
        assert_eq!(mode, Mode::Extreme, "normal mode made a large graph");
        let _ = kiln::ir::summary::summarize(&g).to_string();
        return;
    }
    let seed = data
        .iter()
        .fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    // all passes on (the default); the seed picks the kernel tier
    let tier = kiln::check::tier_for_seed(seed);
    let options = kiln::CompileOptions {
        gemm_tier: tier,
        ..Default::default()
    };
    if let Err(e) = kiln::check::jit_matches_interpreter_with(&g, seed, &options) {
        // An engine's clean refusal of an extreme graph is fine; a different answer is not.
        let refused = [
            "interpreter failed",
            "compile failed",
            "weights:",
            "JIT run failed",
        ]
        .iter()
        .any(|p| e.starts_with(p));
        if mode == Mode::Normal || !refused {
            panic!("{e}");
        }
    }
});
