//! The `kiln` command-line tool.

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "kiln", version, about = "kiln: a compiler-style CNN framework for the CPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per layer: op, output shape, params, FLOPs, receptive field and jump; then the totals.
    Summary {
        /// The model: a `.kiln` text IR file.
        model: PathBuf,
    },
    /// Show what the compiler made of a model.
    Compile {
        /// The model: a `.kiln` text IR file.
        model: PathBuf,
        /// What to print: `ir` is the graph in text IR (after parsing and shape inference).
        #[arg(long, value_enum, default_value_t = Emit::Ir)]
        emit: Emit,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The graph IR as text, every node annotated with its inferred type.
    Ir,
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Summary { model } => {
            let graph = kiln::model::load_graph(&model)?;
            print!("{}", kiln::ir::summary::summarize(&graph));
        }
        Command::Compile { model, emit: Emit::Ir } => {
            let graph = kiln::model::load_graph(&model)?;
            print!("{}", kiln::ir::text::print(&graph));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
