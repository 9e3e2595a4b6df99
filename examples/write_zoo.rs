//! Writes every network of the model zoo (`kiln::zoo`) as text IR to `examples/models/NAME.kiln`.
//!
//! ```text
//! cargo run --example write_zoo
//! ```
//!
//! The files are committed; `crates/kiln/tests/zoo.rs` fails when they and the builders differ.

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join("models");
    std::fs::create_dir_all(&dir)?;
    for (name, build) in kiln::zoo::all() {
        let graph = build()?;
        let path = dir.join(format!("{name}.kiln"));
        std::fs::write(&path, kiln::zoo::model_file(name, &graph))?;
        let s = kiln::ir::summary::summarize(&graph);
        println!(
            "{:<16} {:>5} nodes  {:>11} params  {:>13} FLOPs  -> {}",
            name,
            graph.len(),
            s.total_params,
            s.total_flops,
            path.display()
        );
    }
    Ok(())
}
