//! Arbitrary bytes decoded into a random valid graph (`kiln_ir::random`, the generator the
//! proptests use): it must print and parse back to an equal graph that prints to the same text.
//! Later layers extend this target to run the graph on the interpreter and the JIT.
#![no_main]

use kiln_ir::{random, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let g = random::graph_from_bytes(data);
    assert!(!g.outputs().is_empty(), "a generated graph has no output");
    let printed = text::print(&g);
    let back =
        text::parse(&printed).unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
    assert!(back == g, "round trip changed the graph:\n{printed}");
    assert_eq!(text::print(&back), printed, "printing is not stable");
});
