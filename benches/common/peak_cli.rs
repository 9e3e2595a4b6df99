//! Prints the FMA peak of the core it runs on, per vector width the CPU runs (the widest
//! marked): what the Python comparison scripts quote as "% of peak" in their own runs.
//!
//! `rustc --edition 2024 -O benches/common/peak_cli.rs -o kiln-peak && taskset -c 1 ./kiln-peak`
//! (the scripts do this themselves; the loops are `peak.rs`'s, which the Rust benches share).

#[path = "peak.rs"]
mod peak;

fn main() {
    print!("{}", peak::Peaks::measure().report());
}
