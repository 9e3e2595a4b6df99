//! Arbitrary bytes, read as (lossy) UTF-8 text IR: the parser must never panic, and whatever
//! it accepts must print and parse back to an equal graph that prints to the same text, and
//! summarize (a summary that loops over a huge output shows up as a libFuzzer timeout). Run
//! with `-dict=kiln.dict`: its extreme numbers (2³¹, 2⁶³ − 1, u64::MAX, …) land in dims and
//! attributes.
#![no_main]

use kiln_ir::{summary, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    if let Ok(g) = text::parse(&src) {
        let printed = text::print(&g);
        let back =
            text::parse(&printed).unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
        assert!(back == g, "round trip changed the graph:\n{printed}");
        assert_eq!(text::print(&back), printed, "printing is not stable");
        let _ = summary::summarize(&g).to_string();
    }
});
