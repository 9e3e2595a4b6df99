//! Arbitrary bytes → a random valid graph (the generator the proptests use) → compiled by the
//! JIT and run next to the reference interpreter on seeded weights and inputs: the outputs
//! must agree within `kiln::check`'s tolerance, and neither engine may crash (AddressSanitizer
//! watches the JIT's arena accesses through the Rust side; the arena is one allocation). All
//! graph passes run; the GEMM tier alternates between AVX-512 (where present) and Cranelift.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let g = kiln::ir::random::graph_from_bytes(data);
    let seed = data.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    // all passes on (the default); the seed's low bit picks the GEMM tier
    let tier = if seed & 1 == 0 {
        kiln::jit::gemm::Tier::Auto
    } else {
        kiln::jit::gemm::Tier::Cranelift
    };
    let options = kiln::CompileOptions {
        gemm_tier: tier,
        ..Default::default()
    };
    if let Err(e) = kiln::check::jit_matches_interpreter_with(&g, seed, &options) {
        panic!("{e}");
    }
});
