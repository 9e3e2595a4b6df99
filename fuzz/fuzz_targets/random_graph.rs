//! Arbitrary bytes decoded into a random graph (`kiln_ir::random`, the generator the proptests
//! use). The first byte picks the mode: normal (a valid graph, always) or, for a quarter of
//! the inputs, extreme (dims and attributes now and then `0`, `2³¹`, `2⁶³ − 1`, `u64::MAX`, …,
//! see `Mode::Extreme`), where the graph's refusal is a clean `Err`. Every graph it makes must
//! verify, print and parse back to an equal graph that prints to the same text, and summarize
//! (libFuzzer's `-timeout` catches a summary that loops over a huge output).
#![no_main]

use kiln_ir::random::{self, Mode};
use kiln_ir::{summary, text};
use libfuzzer_sys::fuzz_target;

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
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(!g.outputs().is_empty(), "a generated graph has no output");
    g.verify()
        .unwrap_or_else(|e| panic!("a generated graph does not verify: {e}"));
    let printed = text::print(&g);
    let back =
        text::parse(&printed).unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
    assert!(back == g, "round trip changed the graph:\n{printed}");
    assert_eq!(text::print(&back), printed, "printing is not stable");
    let s = summary::summarize(&g);
    let _ = s.to_string();
});
