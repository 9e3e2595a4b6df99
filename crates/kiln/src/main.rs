//! The `kiln` command-line tool.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kiln::ir::{Graph, Tensor, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// `println!` that returns an error instead of panicking when stdout is closed (`kiln … | head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*)?
    }};
}

/// `print!` likewise.
macro_rules! outp {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($t)*)?
    }};
}

/// `--gemm-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GemmTierArg {
    Auto,
    Cranelift,
}

/// The most threads `--threads` takes.
const MAX_THREADS: usize = 1024;

/// The most timed runs `bench --runs` takes.
const MAX_RUNS: usize = 1_000_000;

/// `--threads`: 1 up to [`MAX_THREADS`] (without the flag: one per core).
fn threads_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("the JIT needs at least 1 thread (leave out --threads for one per core)".into()),
        Ok(n) if n <= MAX_THREADS => Ok(n),
        Ok(n) => Err(format!("{n} threads are more than the limit of {MAX_THREADS}")),
        Err(_) => Err(format!("`{s}` is not a number of threads (1 to {MAX_THREADS})")),
    }
}

/// `bench --runs`: 1 up to [`MAX_RUNS`].
fn runs_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_RUNS).contains(&n) => Ok(n),
        _ => Err(format!(
            "the number of timed runs must be an integer in 1..={MAX_RUNS}"
        )),
    }
}

/// `bench --batch`: at least 1 (the upper bound is the model's: every tensor within kiln's
/// size limits).
fn batch_arg(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("the batch size must be at least 1, not `{s}`")),
    }
}

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "kiln: a compiler-style CNN framework for the CPU",
    after_help = "Exit status: 0 on success; 1 on an error (stderr says what and where: file, \
                  line, tensor, flag); 2 on a usage error (an unknown command or flag, a \
                  missing or invalid value)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every node of an `.onnx` model that kiln cannot import (non-zero exit if any).
    Check {
        /// The model: a `.kiln` text IR file or an `.onnx` file.
        model: PathBuf,
    },
    /// Per layer: op, output shape, params, FLOPs, receptive field and jump; then the totals.
    Summary {
        /// The model: a `.kiln` text IR file or an `.onnx` file.
        model: PathBuf,
    },
    /// Show what the compiler made of a model.
    Compile {
        /// The model: a `.kiln` text IR file or an `.onnx` file (not needed with `--passes`).
        #[arg(required_unless_present = "passes")]
        model: Option<PathBuf>,
        /// What to print.
        #[arg(long, value_enum, default_value_t = Emit::Ir)]
        emit: Emit,
        /// Print the graph after every run of the pass named PASS (see `--passes`).
        #[arg(long, value_name = "PASS")]
        print_after: Option<String>,
        /// List the optimization pipeline, in order, and exit.
        #[arg(long)]
        passes: bool,
    },
    /// Run a model on inputs read from `.npy` files.
    Run {
        /// The model: a `.kiln` text IR file or an `.onnx` file.
        model: PathBuf,
        /// An input, as `NAME=x.npy` (or just `x.npy` when the model has one input). Repeat for each input.
        #[arg(long = "input", value_name = "NAME=PATH", required = true)]
        inputs: Vec<String>,
        /// Where to write the outputs: `out.npy` when the model has one output, else `NAME=PATH`
        /// for each. Without it, the outputs are printed.
        #[arg(long = "output", value_name = "[NAME=]PATH")]
        outputs: Vec<String>,
        #[command(flatten)]
        weights: WeightArgs,
        /// Which engine computes: the JIT or the reference interpreter.
        #[arg(long, value_enum, default_value_t = Engine::Jit)]
        engine: Engine,
        /// Threads of the JIT, 1 to 1024 [default: one per core].
        #[arg(long, value_parser = threads_arg)]
        threads: Option<usize>,
    },
    /// Gradients of a loss on one batch w.r.t. every weight and input, as safetensors.
    Grad {
        /// The model: a `.kiln` text IR file or an `.onnx` file (one output: the prediction).
        model: PathBuf,
        /// An input, as `NAME=x.npy` (or just `x.npy` when the model has one input).
        #[arg(long = "input", value_name = "NAME=PATH", required = true)]
        inputs: Vec<String>,
        /// The target: class ids (int32/int64 `[N]`) or an f32 array (mse: the output's shape;
        /// cross-entropy/nll: probabilities `[N, K]`).
        #[arg(long, value_name = "t.npy")]
        target: PathBuf,
        #[arg(long, value_enum)]
        loss: LossArg,
        /// Where to write the gradients: every param by its name, every input as `grad_of_NAME`.
        #[arg(long, value_name = "grads.safetensors")]
        output: PathBuf,
        #[command(flatten)]
        weights: WeightArgs,
        #[arg(long, value_enum, default_value_t = Engine::Jit)]
        engine: Engine,
    },
    /// Time the JIT and the interpreter on seeded random inputs; median run times and speedup.
    Bench {
        /// The model: a `.kiln` text IR file or an `.onnx` file.
        model: PathBuf,
        /// Batch size (dim 0 of every input), at least 1; default: the model's own.
        #[arg(long, value_parser = batch_arg)]
        batch: Option<usize>,
        /// Which engines to time.
        #[arg(long, value_enum, default_value_t = BenchEngine::Both)]
        engine: BenchEngine,
        /// Timed runs per engine (after one warm-up run), 1 to 1000000.
        #[arg(long, default_value_t = 10, value_parser = runs_arg)]
        runs: usize,
        /// Also time each JIT kernel on its own: node, op, milliseconds and GFLOP/s.
        #[arg(long)]
        profile: bool,
        /// Threads of the JIT, 1 to 1024 [default: one per core].
        #[arg(long, value_parser = threads_arg)]
        threads: Option<usize>,
        /// Compile without the graph passes (`kiln compile --passes` lists them), to see what
        /// they are worth.
        #[arg(long)]
        no_passes: bool,
        /// Which GEMM micro-kernel runs the convolutions: `auto` (AVX-512 where the CPU has
        /// it) or `cranelift` (the JIT's own 128-bit kernel).
        #[arg(long, value_enum, default_value_t = GemmTierArg::Auto)]
        gemm_tier: GemmTierArg,
        #[command(flatten)]
        weights: WeightArgs,
    },
    /// Train a model on labelled images split 80/20 with the seed; the last line printed is
    /// `test accuracy: NN.NN%`.
    Train {
        /// The model: a `.kiln` or `.onnx` file with one input [N, C, H, W] and one output
        /// [N, classes]; training starts from a seeded initialization (not an `.onnx` file's weights).
        model: PathBuf,
        /// `digits` (the 8×8 digits kiln ships), `digits:PATH`, or `idx:IMAGES,LABELS` (MNIST).
        #[arg(long, value_name = "SOURCE")]
        data: kiln::train_cmd::DataSource,
        #[command(flatten)]
        options: kiln::train_cmd::TrainSettings,
    },
}

#[derive(clap::Args)]
struct WeightArgs {
    /// Weights as safetensors, named as in the model; default: an `.onnx` file's own weights,
    /// a seeded initialization for `.kiln`.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Seed of the default initialization.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    /// The graph IR as text, every node annotated with its inferred type.
    Ir,
    /// The graph after the optimization pipeline (`--passes` lists it).
    Optimized,
    /// The Cranelift IR of every kernel the JIT generates.
    Clif,
    /// The x86-64 disassembly of every kernel (needs `objdump` from GNU binutils).
    Asm,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    Jit,
    Interp,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LossArg {
    Mse,
    CrossEntropy,
    Nll,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BenchEngine {
    Jit,
    Interp,
    Both,
}

/// `--weights`, else the model file's own weights (`.onnx`), else a seeded initialization.
/// A tensor of `--weights` that the model does not have is named in a warning and ignored.
fn load_weights(
    graph: &Graph,
    file: Option<HashMap<String, Tensor<f32>>>,
    args: &WeightArgs,
) -> Result<HashMap<String, Tensor<f32>>> {
    Ok(match (&args.weights, file) {
        (Some(p), _) => {
            let w = kiln::runtime::load_safetensors(p)?;
            let params: HashSet<String> = graph
                .params()
                .into_iter()
                .map(|id| graph.node(id).name.clone())
                .collect();
            let mut extra: Vec<&String> = w.keys().filter(|k| !params.contains(*k)).collect();
            extra.sort();
            for name in extra {
                eprintln!(
                    "warning: `{}` holds a tensor `{name}` that the model has no weight of; it is ignored",
                    p.display()
                );
            }
            w
        }
        (None, Some(w)) => w,
        (None, None) => kiln::ir::init::default_weights(graph, args.seed)?,
    })
}

/// `NAME=PATH` pairs; a bare `PATH` names the only candidate in `names`. A name given twice
/// is an error.
fn named_paths(specs: &[String], names: &[String], what: &str) -> Result<Vec<(String, PathBuf)>> {
    let pairs = specs
        .iter()
        .map(|spec| match spec.split_once('=') {
            Some((n, p)) => {
                if !names.iter().any(|x| x == n) {
                    bail!(
                        "the model has no {what} `{n}` (its {what}s: {})",
                        names.join(", ")
                    );
                }
                Ok((n.to_string(), PathBuf::from(p)))
            }
            None if names.len() == 1 => Ok((names[0].clone(), PathBuf::from(spec))),
            None => bail!(
                "`{spec}`: the model has several {what}s ({}); write NAME=PATH",
                names.join(", ")
            ),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut seen = HashSet::new();
    for (name, _) in &pairs {
        if !seen.insert(name) {
            bail!("{what} `{name}` is given more than once (--{what} {name}=…)");
        }
    }
    Ok(pairs)
}

/// The inputs `--input` names (`NAME=PATH` or `PATH`). Every file's header is checked against
/// the model's input of that name (element type and shape) before any file's data is read.
fn read_inputs(graph: &Graph, specs: &[String]) -> Result<HashMap<String, Value<f32>>> {
    let inputs: Vec<(String, kiln::ir::TensorType)> = graph
        .graph_inputs()
        .iter()
        .map(|&i| (graph.node(i).name.clone(), graph.node(i).ty.clone()))
        .collect();
    let names: Vec<String> = inputs.iter().map(|(n, _)| n.clone()).collect();
    let pairs = named_paths(specs, &names, "input")?;
    let mut total = 0usize;
    for (name, path) in &pairs {
        let got = kiln::runtime::read_npy_type(path).with_context(|| format!("input `{name}`"))?;
        let bytes = kiln::ir::limits::check_bytes(got.shape.numel(), 4, &format!("input `{name}`"))
            .map_err(|e| anyhow!(e))?;
        total = kiln::ir::limits::add_bytes(total, bytes, "the inputs").map_err(|e| anyhow!(e))?;
        if let Some((_, want)) = inputs.iter().find(|(n, _)| n == name)
            && got != *want
        {
            bail!(
                "input `{name}` (`{}`): expected {want}, got {got}",
                path.display()
            );
        }
    }
    let mut feeds = HashMap::new();
    for (name, path) in pairs {
        let v = kiln::runtime::read_npy(&path).with_context(|| format!("input `{name}`"))?;
        feeds.insert(name, v);
    }
    Ok(feeds)
}

/// `name holds 3 NaN and 1 infinite value of 784`, when a tensor is not all finite.
fn non_finite(what: &str, data: &[f32]) -> Option<String> {
    let nan = data.iter().filter(|x| x.is_nan()).count();
    let inf = data.iter().filter(|x| x.is_infinite()).count();
    (nan + inf > 0).then(|| {
        format!(
            "{what} holds {nan} NaN and {inf} infinite value(s) of {}",
            data.len()
        )
    })
}

fn run_engine(
    graph: &Graph,
    weights: &HashMap<String, Tensor<f32>>,
    inputs: &HashMap<String, Value<f32>>,
    engine: Engine,
    threads: Option<usize>,
) -> Result<Vec<(String, Value<f32>)>> {
    Ok(match engine {
        Engine::Interp => kiln::interp::run::<f32>(graph, inputs, weights)?,
        Engine::Jit => {
            let opts = kiln::jit::JitOptions {
                threads: threads.unwrap_or(0),
                ..Default::default()
            };
            let mut m = kiln::jit::compile(graph, &opts)?;
            m.set_weights(weights)?;
            m.run(inputs)?
        }
    })
}

fn print_value(name: &str, v: &Value<f32>) -> Result<()> {
    let shown: Vec<String> = match v {
        Value::F(t) => t.data().iter().take(16).map(|x| format!("{x:.6}")).collect(),
        Value::I(t) => t.data().iter().take(16).map(|x| x.to_string()).collect(),
    };
    let more = if v.shape().numel() > 16 { ", …" } else { "" };
    out!("{name}: {} [{}{more}]", v.ty(), shown.join(", "));
    Ok(())
}

/// The median of `runs` (at least 1, checked by `--runs`) timed calls of `f`, after a warm-up.
fn median_ms(mut f: impl FnMut() -> Result<()>, runs: usize) -> Result<f64> {
    if runs == 0 {
        bail!("the number of timed runs must be at least 1");
    }
    f()?; // warm-up
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Each kernel's time, slowest first, with its share and GFLOP/s (FLOPs as `kiln summary`).
fn print_profile(m: &mut kiln::jit::JitModel, feeds: &HashMap<String, Value<f32>>) -> Result<()> {
    let (times, _) = m.run_profiled(feeds)?;
    // the kernels belong to the optimized graph
    let graph = &m.graph().clone();
    let summary = kiln::ir::summary::summarize(graph);
    let total: f64 = times.iter().sum();
    let mut rows: Vec<(usize, f64)> = times.iter().copied().enumerate().collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    out!(
        "{:<28} {:<18} {:>10} {:>7} {:>9}",
        "node",
        "op",
        "ms",
        "share",
        "GFLOP/s"
    );
    for (i, ms) in rows {
        let k = &m.kernels()[i];
        let node = graph.node(k.node);
        let flops = summary.row(&node.name).map_or(0, |r| r.flops);
        let gflops = if ms > 0.0 { flops as f64 / ms / 1e6 } else { 0.0 };
        out!(
            "{:<28} {:<18} {:>10.3} {:>6.1}% {:>9.2}",
            node.name,
            node.op.name(),
            ms,
            100.0 * ms / total.max(1e-12),
            gflops
        );
    }
    out!("kernels total: {total:.3} ms");
    Ok(())
}

/// Disassembles x86-64 machine code with `objdump`.
fn disassemble(code: &[u8]) -> Result<String> {
    let path = std::env::temp_dir().join(format!("kiln-kernel-{}.bin", std::process::id()));
    std::fs::write(&path, code).with_context(|| format!("writing {}", path.display()))?;
    let out = std::process::Command::new("objdump")
        .args([
            "-D",
            "-b",
            "binary",
            "-m",
            "i386:x86-64",
            "-M",
            "intel",
            "--no-show-raw-insn",
        ])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.context("`--emit asm` disassembles with objdump (GNU binutils), which could not be run")?;
    if !out.status.success() {
        bail!("objdump failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // drop objdump's file header, keep the instructions
    Ok(text
        .lines()
        .skip_while(|l| !l.contains("<.data>:"))
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n"))
}

fn load(model: &Path) -> Result<Graph> {
    Ok(kiln::model::load_graph(model)?)
}

/// `kiln check`: every unsupported node on stdout and an error, or `ok` and a summary line.
fn check(model: &Path) -> Result<()> {
    use kiln::onnx::OnnxError;
    match kiln::model::load(model) {
        Ok(m) => {
            let g = &m.graph;
            out!(
                "ok: {} nodes, {} inputs, {} outputs, {} weights",
                g.len(),
                g.graph_inputs().len(),
                g.outputs().len(),
                g.params().len()
            );
            Ok(())
        }
        Err(kiln::model::LoadError::Onnx {
            source: OnnxError::Unsupported(list),
            ..
        }) => {
            for u in &list {
                out!("{u}");
            }
            bail!("{} unsupported node(s) in `{}`", list.len(), model.display())
        }
        Err(e) => Err(e.into()),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Check { model } => check(&model)?,
        Command::Summary { model } => outp!("{}", kiln::ir::summary::summarize(&load(&model)?)),
        Command::Compile { passes: true, .. } => {
            for p in kiln::passes::pipeline(kiln::passes::OptLevel::Full) {
                out!("{}", p.name());
            }
        }
        Command::Compile {
            model: Some(model),
            print_after: Some(name),
            ..
        } => {
            let mut graph = load(&model)?;
            let pipeline = kiln::passes::pipeline(kiln::passes::OptLevel::Full);
            if !pipeline.iter().any(|p| p.name() == name) {
                let names: Vec<&str> = pipeline.iter().map(|p| p.name()).collect();
                bail!("no pass `{name}` (the pipeline: {})", names.join(", "));
            }
            let mut text = String::new();
            kiln::passes::run_pipeline(&mut graph, &pipeline, |p, g| {
                if p == name {
                    text += &format!("# after {p}\n{}", kiln::ir::text::print(g));
                }
            })?;
            outp!("{text}");
        }
        Command::Compile {
            model: Some(model),
            emit: Emit::Ir,
            ..
        } => {
            outp!("{}", kiln::ir::text::print(&load(&model)?))
        }
        Command::Compile {
            model: Some(model),
            emit: Emit::Optimized,
            ..
        } => {
            let graph = kiln::passes::optimize(&load(&model)?, kiln::passes::OptLevel::Full)?;
            outp!("{}", kiln::ir::text::print(&graph));
            outp!("# memory plan: {}\n", kiln::jit::plan::plan(&graph).describe())
        }
        Command::Compile { model: None, .. } => bail!("a model is required"),
        Command::Compile {
            model: Some(model),
            emit,
            ..
        } => {
            let graph = load(&model)?;
            let opts = kiln::jit::JitOptions {
                keep_code: true,
                ..Default::default()
            };
            let m = kiln::jit::compile(&graph, &opts)?;
            for k in m.kernels() {
                let node = &m.graph().node(k.node).name;
                out!(
                    "; kernel {} for node `{node}` (parallel extent {})",
                    k.name,
                    k.extent
                );
                match emit {
                    Emit::Clif => out!("{}", k.clif.as_deref().unwrap_or("")),
                    _ => out!("{}", disassemble(k.code.as_deref().unwrap_or(&[]))?),
                }
            }
        }
        Command::Run {
            model,
            inputs,
            outputs,
            weights,
            engine,
            threads,
        } => {
            let m = kiln::model::load(&model)?;
            let graph = m.graph;
            let w = load_weights(&graph, m.weights, &weights)?;
            let feeds = read_inputs(&graph, &inputs)?;
            let results = run_engine(&graph, &w, &feeds, engine, threads)?;
            let output_names: Vec<String> = results.iter().map(|(n, _)| n.clone()).collect();
            if outputs.is_empty() {
                for (n, v) in &results {
                    print_value(n, v)?;
                }
            }
            for (name, path) in named_paths(&outputs, &output_names, "output")? {
                let v = &results
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| anyhow!("no output `{name}`"))?
                    .1;
                kiln::runtime::write_npy(&path, v)?;
            }
        }
        Command::Grad {
            model,
            inputs,
            target,
            loss,
            output,
            weights,
            engine,
        } => {
            let m = kiln::model::load(&model)?;
            let graph = m.graph;
            let w = load_weights(&graph, m.weights, &weights)?;
            let feeds = read_inputs(&graph, &inputs)?;
            let t = kiln::runtime::read_npy(&target).context("the target")?;
            let loss = match (loss, t.dtype()) {
                (LossArg::Mse, _) => kiln::Loss::mse(),
                (LossArg::CrossEntropy, d) => kiln::Loss::cross_entropy().ids_or_probs(d),
                (LossArg::Nll, d) => kiln::Loss::nll().ids_or_probs(d),
            };
            let options = kiln::TrainOptions {
                engine: match engine {
                    Engine::Jit => kiln::Engine::Jit,
                    Engine::Interp => kiln::Engine::Interp,
                },
                ..Default::default()
            };
            let mut bad = Vec::new();
            let mut names: Vec<&String> = feeds.keys().collect();
            names.sort();
            for n in names {
                if let Value::F(x) = &feeds[n] {
                    bad.extend(non_finite(&format!("input `{n}`"), x.data()));
                }
            }
            if let Value::F(x) = &t {
                bad.extend(non_finite("the target", x.data()));
            }
            let mut names: Vec<&String> = w.keys().collect();
            names.sort();
            for n in names {
                bad.extend(non_finite(&format!("weight `{n}`"), w[n].data()));
            }
            for b in &bad {
                eprintln!("warning: {b}");
            }
            let (l, grads) = kiln::train::gradients(&graph, loss, &w, &feeds, &t, &options)?;
            kiln::runtime::save_safetensors(&output, &grads.into_iter().collect())?;
            if !l.is_finite() {
                eprintln!(
                    "warning: the loss is {l}{}; the gradients written to `{}` are not meaningful",
                    if bad.is_empty() {
                        ""
                    } else {
                        " (the tensors named above are not finite)"
                    },
                    output.display()
                );
            }
            out!("loss: {l}");
        }
        Command::Bench {
            model,
            batch,
            engine,
            runs,
            profile,
            threads,
            no_passes,
            gemm_tier,
            weights,
        } => {
            let m = kiln::model::load(&model)?;
            let mut graph = m.graph;
            if let Some(n) = batch {
                graph = graph
                    .with_batch(n)
                    .with_context(|| format!("setting the batch size to {n}"))?;
            }
            let w = load_weights(&graph, m.weights, &weights)?;
            let feeds = kiln::ir::init::random_inputs(&graph, 1)?;
            let mut jit_ms = None;
            let mut interp_ms = None;
            if engine != BenchEngine::Interp {
                let t = Instant::now();
                let opts = kiln::jit::JitOptions {
                    threads: threads.unwrap_or(0),
                    passes: if no_passes {
                        kiln::passes::OptLevel::None
                    } else {
                        kiln::passes::OptLevel::Full
                    },
                    gemm_tier: match gemm_tier {
                        GemmTierArg::Auto => kiln::jit::gemm::Tier::Auto,
                        GemmTierArg::Cranelift => kiln::jit::gemm::Tier::Cranelift,
                    },
                    ..Default::default()
                };
                let mut m = kiln::jit::compile(&graph, &opts)?;
                out!(
                    "jit: compiled {} kernels in {:.1} ms; {}",
                    m.kernels().len(),
                    t.elapsed().as_secs_f64() * 1e3,
                    m.plan().describe()
                );
                m.set_weights(&w)?;
                jit_ms = Some(median_ms(|| m.run(&feeds).map(|_| ()).map_err(Into::into), runs)?);
                if profile {
                    print_profile(&mut m, &feeds)?;
                }
            }
            if engine != BenchEngine::Jit {
                interp_ms = Some(median_ms(
                    || {
                        kiln::interp::run::<f32>(&graph, &feeds, &w)
                            .map(|_| ())
                            .map_err(Into::into)
                    },
                    runs,
                )?);
            }
            if let Some(j) = jit_ms {
                out!("jit: median {j:.3} ms");
            }
            if let Some(i) = interp_ms {
                out!("interp: median {i:.3} ms");
            }
            if let (Some(j), Some(i)) = (jit_ms, interp_ms) {
                out!("speedup: {:.1}x", i / j);
            }
        }
        Command::Train { model, data, options } => {
            kiln::train_cmd::train(&model, &data, &options, &mut std::io::stdout().lock())
                .map_err(|e| anyhow!(e))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // stdout closed by the reader (`kiln … | head`): not an error of kiln's
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
