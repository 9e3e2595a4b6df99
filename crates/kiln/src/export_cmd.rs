//! `kiln export MODEL [--weights W] [--batch N] -o model.onnx`: any inference graph (a `.kiln`
//! file with its weights or a seeded initialization, an `.onnx` file) written as ONNX.

use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The model: a `.kiln` text IR file or an `.onnx` file.
    model: PathBuf,
    /// Where to write the ONNX model.
    #[arg(short = 'o', long = "output", value_name = "model.onnx")]
    output: PathBuf,
    /// Batch size (dim 0 of every input) of the exported model; default: the model's own.
    #[arg(long, value_parser = crate::batch_arg)]
    batch: Option<usize>,
    #[command(flatten)]
    weights: crate::WeightArgs,
}

/// Writes the model as ONNX (opset 18, weights as initializers, inputs and outputs named as
/// the graph's nodes); a node without an ONNX equivalent is an error naming it.
pub fn export(a: &ExportArgs) -> Result<()> {
    let mut m = kiln::model::load(&a.model)?;
    let graph = match a.batch {
        Some(n) => m.graph.with_batch(n).with_context(|| format!("--batch {n}"))?,
        None => m.graph.clone(),
    };
    let weights = crate::load_weights(&graph, m.weights.take(), &a.weights)?;
    // every error of the mapping comes before the file is created; the weights are written
    // straight from the tensors
    let e = kiln::onnx::export::Export::new(&graph, &weights)
        .with_context(|| format!("cannot export `{}`", a.model.display()))?;
    let cannot = || format!("cannot write `{}`", a.output.display());
    let mut file = std::io::BufWriter::new(std::fs::File::create(&a.output).with_context(cannot)?);
    e.write_to(&mut file).with_context(cannot)?;
    file.flush().with_context(cannot)?;
    let io = |v: &[kiln::ir::NodeId]| {
        v.iter()
            .map(|&id| format!("`{}` {}", graph.node(id).name, graph.node(id).ty))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(
        std::io::stdout().lock(),
        "wrote {} ({} bytes, {} weights): inputs {}; outputs {}",
        a.output.display(),
        e.len(),
        graph.params().len(),
        io(&graph.graph_inputs()),
        io(graph.outputs())
    )?;
    Ok(())
}
