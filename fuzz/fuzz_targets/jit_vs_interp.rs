//! Arbitrary bytes → a random valid graph (the generator the proptests use) → compiled by the
//! JIT and run next to the reference interpreter on seeded weights and inputs: the outputs
//! must agree within `kiln::check`'s tolerance, and neither engine may crash (AddressSanitizer
//! watches the JIT's arena accesses through the Rust side; the arena is one allocation).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let g = kiln::ir::random::graph_from_bytes(data);
    let seed = data.iter().fold(0u64, |h, &b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    if let Err(e) = kiln::check::jit_matches_interpreter(&g, seed) {
        panic!("{e}");
    }
});
