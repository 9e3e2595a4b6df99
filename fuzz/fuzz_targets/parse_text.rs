//! Arbitrary bytes, read as (lossy) UTF-8 text IR: the parser must never panic, and whatever
//! it accepts must print and parse back to an equal graph that prints to the same text.
#![no_main]

use kiln_ir::text;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    if let Ok(g) = text::parse(&src) {
        let printed = text::print(&g);
        let back =
            text::parse(&printed).unwrap_or_else(|e| panic!("printed graph does not parse: {e}\n{printed}"));
        assert!(back == g, "round trip changed the graph:\n{printed}");
        assert_eq!(text::print(&back), printed, "printing is not stable");
    }
});
