//! The `kiln` command-line tool.

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln::ir::{Graph, Tensor, Value};
use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
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

mod export_cmd;

/// `--gemm-tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GemmTierArg {
    Auto,
    Avx512,
    Avx2,
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

/// `run --batch`, `bench --batch`: at least 1 (the upper bound is the model's: every tensor
/// within kiln's size limits).
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
    Check(CheckArgs),
    /// Per layer: op, output shape, params, FLOPs, receptive field and jump; then the totals.
    Summary(SummaryArgs),
    /// Show what the compiler made of a model.
    Compile(CompileArgs),
    /// Run a model on inputs read from `.npy` files.
    Run(RunArgs),
    /// Gradients of a loss on one batch w.r.t. every weight and input, as safetensors.
    Grad(GradArgs),
    /// Time the JIT and the interpreter on seeded random inputs; median run times and speedup.
    /// The JIT runs as an embedding that reads its results in place (`Model::run_in_place`:
    /// the inputs copied into a session, the outputs left there for `Model::view`).
    Bench(BenchArgs),
    /// Train a model on labelled images split 80/20 with the seed; the last line printed is
    /// `test accuracy: NN.NN%`.
    Train(TrainArgs),
    /// Write a model as ONNX (opset 18, its weights as initializers).
    Export(export_cmd::ExportArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// The model: a `.kiln` text IR file or an `.onnx` file.
    model: PathBuf,
}

#[derive(clap::Args)]
struct SummaryArgs {
    /// The model: a `.kiln` text IR file or an `.onnx` file.
    model: PathBuf,
}

#[derive(clap::Args)]
struct CompileArgs {
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
}

#[derive(clap::Args)]
struct RunArgs {
    /// The model: a `.kiln` text IR file or an `.onnx` file.
    model: PathBuf,
    /// An input, as `NAME=x.npy` (or just `x.npy` when the model has one input), NAME as the
    /// model file spells it (`0`, `input.1`, `gpu_0/data_0`). Repeat for each input.
    #[arg(long = "input", value_name = "NAME=PATH")]
    inputs: Vec<String>,
    /// Where to write the outputs: `out.npy` when the model has one output, else `NAME=PATH`
    /// for each (NAME as the model file spells it). Without it, the outputs are printed.
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
    /// Batch size (dim 0 of every input), at least 1; default: the model's own.
    #[arg(long, value_parser = batch_arg)]
    batch: Option<usize>,
}

#[derive(clap::Args)]
struct GradArgs {
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
    /// Where to write the gradients: every param by its name, every input as `grad_of_NAME`
    /// (NAME as the model file spells it).
    #[arg(long, value_name = "grads.safetensors")]
    output: PathBuf,
    #[command(flatten)]
    weights: WeightArgs,
    #[arg(long, value_enum, default_value_t = Engine::Jit)]
    engine: Engine,
    /// Threads of the JIT, 1 to 1024 [default: one per core].
    #[arg(long, value_parser = threads_arg)]
    threads: Option<usize>,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The model: a `.kiln` text IR file or an `.onnx` file.
    model: PathBuf,
    /// Batch size (dim 0 of every input), at least 1; default: the model's own.
    #[arg(long, value_parser = batch_arg)]
    batch: Option<usize>,
    /// Which engines to time.
    #[arg(long, value_enum, default_value_t = BenchEngine::Both)]
    engine: BenchEngine,
    /// Timed runs per engine (after warm-up runs for 100 ms, one at least), 1 to 1000000.
    #[arg(long, default_value_t = 10, value_parser = runs_arg)]
    runs: usize,
    /// Also time each JIT kernel on its own (median of `--runs` runs, on one thread, in that
    /// thread's CPU time, which other jobs on the machine do not inflate), slowest first: milliseconds, share, GFLOP/s, and the node of the model it computes with its op,
    /// output and fused ops and, for a kernel of the GEMM driver (convolutions; dense layers at
    /// larger batches), how the tier computes it (`→ direct conv`, `→ row conv`, `→ gemm`,
    /// `→ wide gemm`, `→ transposed gemm`); the kernels that run once per set of weights in one line; the
    /// total against the median run; and the kernel tier. With more than one thread, each
    /// kernel is also timed split over the threads as a run splits it (wall time), with its
    /// speedup over the one-thread time.
    #[arg(long)]
    profile: bool,
    /// With `--profile`: show only the N slowest kernels (the rest in one line).
    #[arg(long, value_name = "N", requires = "profile", value_parser = clap::value_parser!(u64).range(1..))]
    profile_top: Option<u64>,
    /// Threads of the JIT, 1 to 1024 [default: one per core].
    #[arg(long, value_parser = threads_arg)]
    threads: Option<usize>,
    /// Compile without the graph passes (`kiln compile --passes` lists them), to see what
    /// they are worth.
    #[arg(long)]
    no_passes: bool,
    /// Which kernel tier runs the convolutions, pooling, dense layers, layout copies and
    /// activations: `auto` (the best this CPU has), `avx512`, `avx2` (Rust kernels for those
    /// instruction sets; an error where the CPU lacks them) or `cranelift` (the JIT's own
    /// 128-bit code, on any host).
    #[arg(long, value_enum, default_value_t = GemmTierArg::Auto)]
    gemm_tier: GemmTierArg,
    #[command(flatten)]
    weights: WeightArgs,
    /// Time one training step instead (forward, loss, backward, optimizer update, on the
    /// JIT): prints the first step's compile time and `train step: median X ms`.
    #[arg(long)]
    train: bool,
    /// With `--train`: the loss [default: cross-entropy, nll when the model ends in a
    /// log-softmax]; targets are seeded random class ids (mse: random values).
    #[arg(long, value_enum, requires = "train")]
    loss: Option<LossArg>,
    /// With `--train`: the optimizer (sgd: lr 0.05, momentum 0.9; adam: lr 0.001).
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd, requires = "train")]
    optimizer: OptimizerArg,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The model: a `.kiln` or `.onnx` file with one input [N, C, H, W] and one output
    /// [N, classes]; training starts from a seeded initialization (not an `.onnx` file's
    /// weights), or from `--weights`.
    model: PathBuf,
    /// `digits` (the 8×8 digits kiln ships), `digits:PATH`, or `idx:IMAGES,LABELS` (MNIST).
    #[arg(long, value_name = "SOURCE")]
    data: kiln::train_cmd::DataSource,
    /// Passes over the training set (at most 1000000).
    #[arg(long, default_value_t = 10, value_parser = epochs_arg)]
    epochs: usize,
    /// Images per step, from 1 to the size of the training set (the model is recompiled for it).
    #[arg(long, default_value_t = 32, value_parser = batch_arg)]
    batch: usize,
    /// Learning rate [default: 0.05 with sgd, 0.001 with adam].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f32>,
    /// Momentum of sgd (0 for plain SGD).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    momentum: f32,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Sgd)]
    optimizer: OptimizerArg,
    /// Seeds the initial weights, the 80/20 split and each epoch's order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the trained weights here (named as in the model).
    #[arg(long, value_name = "W.safetensors")]
    save: Option<PathBuf>,
    /// No progress bar (it is never drawn when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Start from these weights (safetensors, every weight of the model, as `--save` writes
    /// them) instead of the seeded initialization: resumes a training run.
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// Threads of the JIT, 1 to 1024 [default: one per core].
    #[arg(long, value_parser = threads_arg)]
    threads: Option<usize>,
}

/// `--optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OptimizerArg {
    /// Stochastic gradient descent with momentum.
    Sgd,
    /// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8).
    Adam,
}

/// `train --epochs`: 0 (only measure the untrained model) up to `MAX_EPOCHS`.
fn epochs_arg(s: &str) -> Result<usize, String> {
    let max = kiln::train_cmd::MAX_EPOCHS;
    match s.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("the number of epochs must be an integer in 0..={max}")),
    }
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

/// `NAME=PATH` split after the longest name of `names` that `spec` starts with followed by
/// `=` (an ONNX name may hold a `=`), else at the first `=`.
fn split_name<'a>(spec: &'a str, names: &[String]) -> Option<(&'a str, &'a str)> {
    names
        .iter()
        .filter(|n| spec.len() > n.len() && spec.starts_with(n.as_str()) && spec.as_bytes()[n.len()] == b'=')
        .max_by_key(|n| n.len())
        .map(|n| (&spec[..n.len()], &spec[n.len() + 1..]))
        .or_else(|| spec.split_once('='))
}

/// `NAME=PATH` pairs; a bare `PATH` names the only candidate in `names`. A name given twice
/// is an error.
fn named_paths(specs: &[String], names: &[String], what: &str) -> Result<Vec<(String, PathBuf)>> {
    let pairs = specs
        .iter()
        .map(|spec| match split_name(spec, names) {
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

/// The inputs `--input` names (`NAME=PATH` or `PATH`, NAME as the model file spells it),
/// keyed by IR node name, for the engines. Every model input must be given. Every file's
/// header is checked against the model's input of that name (element type and shape) before
/// any file's data is read.
fn read_inputs(model: &kiln::model::LoadedModel, specs: &[String]) -> Result<HashMap<String, Value<f32>>> {
    let graph = &model.graph;
    let names = model.input_names();
    let pairs = named_paths(specs, &names, "input")?;
    for name in &names {
        if !pairs.iter().any(|(n, _)| n == name) {
            bail!("input `{name}` is not given (--input {name}=x.npy)");
        }
    }
    let ty_of = |name: &str| -> Result<kiln::ir::TensorType> {
        let node = model
            .input_node(name)
            .ok_or_else(|| anyhow!("the model has no input `{name}`"))?;
        let id = graph
            .find(node)
            .ok_or_else(|| anyhow!("input `{name}`: the graph has no node `{node}`"))?;
        Ok(graph.node(id).ty.clone())
    };
    let mut total = 0usize;
    for (name, path) in &pairs {
        let got = kiln::runtime::read_npy_type(path).with_context(|| format!("input `{name}`"))?;
        let bytes = kiln::ir::limits::check_bytes(got.shape.numel(), 4, &format!("input `{name}`"))
            .map_err(|e| anyhow!(e))?;
        total = kiln::ir::limits::add_bytes(total, bytes, "the inputs").map_err(|e| anyhow!(e))?;
        let want = ty_of(name)?;
        if got != want {
            let (g, w) = (got.dims(), want.dims());
            let hint = if g.len() == w.len() && !g.is_empty() && g[1..] == w[1..] {
                format!(" (another batch size: --batch {})", g[0])
            } else {
                String::new()
            };
            bail!(
                "input `{name}` (`{}`): expected {want}, got {got}{hint}",
                path.display()
            );
        }
    }
    let mut feeds = HashMap::new();
    for (name, path) in pairs {
        let v = kiln::runtime::read_npy(&path).with_context(|| format!("input `{name}`"))?;
        let node = model.input_node(&name).unwrap_or(&name).to_string();
        feeds.insert(node, v);
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
            let mut m = kiln::compile(graph, &opts)?;
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

/// How long `bench` warms an engine up before it times it (one run at least): a new
/// process's threads may share one CPU for its first milliseconds (two-thread runs of LeNet-5
/// at batch 64 took 1.7–1.9 ms there and 0.46 once spread, on a 2-vCPU Intel Xeon), which
/// the timed runs are not to measure.
const WARM_UP: std::time::Duration = std::time::Duration::from_millis(100);

/// The median of `runs` (at least 1, checked by `--runs`) timed calls of `f`, after calls for
/// [`WARM_UP`] (one at least).
fn median_ms(mut f: impl FnMut() -> Result<()>, runs: usize) -> Result<f64> {
    if runs == 0 {
        bail!("the number of timed runs must be at least 1");
    }
    let warm = Instant::now();
    loop {
        f()?;
        if warm.elapsed() >= WARM_UP {
            break;
        }
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// `bench --profile`: the kernels of a run, each timed alone (its median over `runs` profiled
/// runs), slowest first, named after the nodes of the model file they compute; then the
/// weight-time kernels in one line and the total against `median` (the unprofiled runs').
fn print_profile(
    m: &kiln::Model,
    feeds: &HashMap<String, Value<f32>>,
    runs: usize,
    median: f64,
    tier: kiln::jit::gemm::Tier,
    top: Option<usize>,
) -> Result<()> {
    // each kernel's median over the runs of `profiled`
    let medians = |profiled: &dyn Fn() -> Result<Vec<f64>, kiln::RuntimeError>| -> Result<Vec<f64>> {
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); m.kernels().len()];
        for _ in 0..runs.max(1) {
            for (s, t) in samples.iter_mut().zip(profiled()?) {
                s.push(t);
            }
        }
        Ok(samples
            .iter_mut()
            .map(|s| {
                s.sort_by(f64::total_cmp);
                s[s.len() / 2]
            })
            .collect())
    };
    let times = medians(&|| Ok(m.run_profiled(feeds)?.0))?;
    // with several threads, also each kernel split over them as a run splits it (wall time)
    let threads = m.threads();
    let split = if threads > 1 {
        Some(medians(&|| Ok(m.run_profiled_split(feeds)?.0))?)
    } else {
        None
    };
    let prep = m.profile_prep()?;
    let graph = m.graph();
    let names = KernelNames::new(graph, m.source_graph(), m.kernels());
    // FLOPs as `kiln summary` counts them, per node of the optimized graph
    let flops: HashMap<kiln::ir::NodeId, u64> = kiln::ir::summary::summarize(graph)
        .rows
        .iter()
        .map(|r| (r.id, r.flops))
        .collect();
    // one row per node (a node with several kernels: their sums): node, ms, kernels, split ms
    let mut rows: Vec<(kiln::ir::NodeId, f64, usize, f64)> = Vec::new();
    for (i, (k, &ms)) in m.kernels().iter().zip(&times).enumerate() {
        if k.prep {
            continue;
        }
        let sp = split.as_ref().map_or(0.0, |s| s[i]);
        match rows.iter_mut().find(|r| r.0 == k.node) {
            Some(r) => (r.1, r.2, r.3) = (r.1 + ms, r.2 + 1, r.3 + sp),
            None => rows.push((k.node, ms, 1, sp)),
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = rows.iter().map(|r| r.1).sum();
    let split_total: f64 = rows.iter().map(|r| r.3).sum();
    out!(
        "profile: kernel tier {}; each kernel timed alone on one thread (the thread's CPU time), \
         median of {} runs, slowest first",
        tier.isa().name(),
        runs.max(1)
    );
    if split.is_some() {
        out!(
            "{threads}T ms: each kernel alone again, split over the {threads} threads as a run \
             splits it (wall time, the barrier after it included); speedup: ms / {threads}T ms"
        );
    }
    // the split columns, when there are several threads
    let split_cols = |ms: f64, sp: f64| match split {
        Some(_) => format!(" {sp:>9.4} {:>6.2}×", ms / sp.max(1e-12)),
        None => String::new(),
    };
    out!(
        "{:>9} {:>6} {:>8}{}  kernel: node of the model (op, output, fused ops)",
        "ms",
        "share",
        "GFLOP/s",
        match split {
            Some(_) => format!(" {:>9} {:>7}", format!("{threads}T ms"), "speedup"),
            None => String::new(),
        }
    );
    let shown = top.unwrap_or(usize::MAX).min(rows.len());
    for &(node, ms, kernels, sp) in &rows[..shown] {
        let rate = match flops.get(&node) {
            Some(&f) if f > 0 && ms > 0.0 => format!("{:.2}", f as f64 / ms / 1e6),
            _ => "-".into(),
        };
        let several = match kernels {
            1 => String::new(),
            n => format!(" [{n} kernels]"),
        };
        out!(
            "{ms:>9.4} {:>5.1}% {rate:>8}{}  {}{several}",
            100.0 * ms / total.max(1e-12),
            split_cols(ms, sp),
            names.label(node)
        );
    }
    if shown < rows.len() {
        let rest: f64 = rows[shown..].iter().map(|r| r.1).sum();
        let rest_split: f64 = rows[shown..].iter().map(|r| r.3).sum();
        out!(
            "{rest:>9.4} {:>5.1}% {:>8}{}  ({} more kernels)",
            100.0 * rest / total.max(1e-12),
            "-",
            split_cols(rest, rest_split),
            rows[shown..].iter().map(|r| r.2).sum::<usize>()
        );
    }
    out!(
        "total: {total:.3} ms in {} kernels{}",
        rows.iter().map(|r| r.2).sum::<usize>(),
        match split {
            Some(_) => format!("; split over {threads} threads {split_total:.3} ms"),
            None => String::new(),
        }
    );
    let prepped = m.kernels().iter().filter(|k| k.prep).count();
    if prepped > 0 {
        out!(
            "{prepped} weight-time kernels not shown, run once per set_weights: {:.3} ms",
            prep.iter().sum::<f64>()
        );
    }
    let how = match threads {
        1 => "each kernel alone, between two clock reads".to_string(),
        n => format!("each kernel alone on one thread, where a run splits kernels over {n} threads"),
    };
    // how far a total is from the median run
    let off = |t: f64| {
        let diff = t - median;
        format!(
            "{:.3} ms ({:+.0}%) {} the median run ({median:.3} ms)",
            diff.abs(),
            100.0 * diff / median.max(1e-12),
            if diff >= 0.0 { "above" } else { "below" }
        )
    };
    out!("the total is {}: the profile runs {how}", off(total));
    if split.is_some() {
        out!(
            "the split total is {}: it runs each kernel alone too, with a run's threads",
            off(split_total)
        );
    }
    Ok(())
}

/// Names the kernels of an optimized graph after the nodes of the model file they compute.
/// The passes rename what they rewrite (a folded batch norm's convolution takes the batch
/// norm's name, a fused activation's input the activation's), so a kernel's nodes are found
/// from its weights (each weight's one reader in the file) and from its name (the node of the
/// file it is named after: the same name, or the part before a `.` that the passes append).
struct KernelNames<'a> {
    graph: &'a Graph,
    source: &'a Graph,
    /// The values of the weights alone, in `graph`.
    constant: HashSet<kiln::ir::NodeId>,
    /// Each node of `source`'s place in its topological order.
    order: HashMap<kiln::ir::NodeId, usize>,
    /// How the kernels of a node of `graph` compute it, where the compiler chose
    /// (`KernelInfo::form`: `direct conv`, `gemm`, ...).
    forms: HashMap<kiln::ir::NodeId, &'static str>,
}

impl<'a> KernelNames<'a> {
    fn new(graph: &'a Graph, source: &'a Graph, kernels: &[kiln::jit::KernelInfo]) -> Self {
        let order = source
            .topo_order()
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        KernelNames {
            graph,
            source,
            constant: kiln::passes::constant_nodes(graph),
            order,
            forms: kernels.iter().filter_map(|k| Some((k.node, k.form?))).collect(),
        }
    }

    /// The nodes of `source` that node `id` of `graph` computes, in the file's order.
    fn sources(&self, id: kiln::ir::NodeId) -> Vec<kiln::ir::NodeId> {
        let computed = |n: kiln::ir::NodeId| {
            !matches!(
                self.source.node(n).op,
                kiln::ir::Op::Input(_) | kiln::ir::Op::Param { .. }
            )
        };
        let mut found = Vec::new();
        let mut name = self.graph.node(id).name.as_str();
        loop {
            if let Some(n) = self.source.find(name).filter(|&n| computed(n)) {
                found.push(n);
                break;
            }
            match name.rfind('.') {
                Some(i) => name = &name[..i],
                None => break,
            }
        }
        let mut seen = HashSet::new();
        let mut stack = self.graph.inputs(id);
        while let Some(i) = stack.pop() {
            if !self.constant.contains(&i) || !seen.insert(i) {
                continue;
            }
            let node = self.graph.node(i);
            match node.op {
                kiln::ir::Op::Param { .. } => {
                    // the weight's reader, unless it only reshapes it (a per-channel scale
                    // reshaped to C×1×1 is not what the kernel computes)
                    if let Some(w) = self.source.find(&node.name)
                        && let [reader] = self.source.users(w)[..]
                        && !matches!(
                            self.source.node(reader).op,
                            kiln::ir::Op::Reshape { .. } | kiln::ir::Op::Flatten { .. }
                        )
                    {
                        found.push(reader);
                    }
                }
                _ => stack.extend(self.graph.inputs(i)),
            }
        }
        found.sort_by_key(|n| self.order.get(n).copied().unwrap_or(usize::MAX));
        found.dedup();
        found
    }

    /// `conv1 (conv 3×3 s2, 64←3, 112×112, +bias+relu → direct conv)`: the first node of the
    /// file the kernel computes, its op and output, what the kernel fuses (the file's other
    /// nodes, then any epilogue they do not name) and how the kernel computes it where the
    /// compiler chose (`KernelInfo::form`), else, when the passes changed it, the kernel's op.
    fn label(&self, id: kiln::ir::NodeId) -> String {
        let node = self.graph.node(id);
        let found = self.sources(id);
        let Some((&first, rest)) = found.split_first() else {
            return format!("{} ({})", node.name, describe(self.graph, id));
        };
        let primary = self.source.node(first);
        let mut fused: Vec<&str> = Vec::new();
        if matches!(primary.op, kiln::ir::Op::Conv2d(_) | kiln::ir::Op::Dense)
            && self.source.inputs(first).len() == 3
        {
            fused.push("bias");
        }
        let (residual, activation) = match &node.op {
            kiln::ir::Op::Gemm(g) => (g.residual, g.activation),
            kiln::ir::Op::Conv2d(c) => (false, c.activation),
            kiln::ir::Op::BatchNorm { activation, .. } => (false, *activation),
            _ => (false, None),
        };
        for &n in rest {
            fused.push(match &self.source.node(n).op {
                kiln::ir::Op::BatchNorm { .. } => "bn",
                // the file's `x · sigmoid(x)` that the kernel computes as its SiLU, named below
                kiln::ir::Op::Binary(kiln::ir::BinaryOp::Mul)
                    if activation == Some(kiln::ir::Activation::Silu) =>
                {
                    continue;
                }
                op => op.name(),
            });
        }
        if residual && !fused.contains(&"add") {
            fused.push("residual");
        }
        if let Some(a) = activation.map(|a| a.name())
            && !fused.contains(&a)
        {
            fused.push(a);
        }
        let mut text = describe(self.source, first);
        if !fused.is_empty() {
            text = format!("{text}, +{}", fused.join("+"));
        }
        if let Some(form) = self.forms.get(&id) {
            text = format!("{text} → {form}");
        } else if node.op.name() != primary.op.name() {
            text = format!("{text} → {}", node.op.name());
        }
        format!("{} ({text})", primary.name)
    }
}

/// A node's op and output, briefly: `conv 3×3 s2, 64←3, 112×112`, `max pool 3×3 s2, 64 ch,
/// 56×56`, `dense 10←84`, `relu, 1×120`.
fn describe(graph: &Graph, id: kiln::ir::NodeId) -> String {
    use kiln::ir::Op;
    let node = graph.node(id);
    let dims = |n: kiln::ir::NodeId| graph.node(n).ty.dims().to_vec();
    let ins = graph.inputs(id);
    let out = node.ty.dims();
    let pair = |v: [usize; 2], tag: &str| match v {
        [1, 1] => String::new(),
        [a, b] if a == b => format!(" {tag}{a}"),
        [a, b] => format!(" {tag}{a}×{b}"),
    };
    let plane = |d: &[usize]| match d {
        [_, _, h, w] => format!("{h}×{w}"),
        _ => format!("{d:?}"),
    };
    match (&node.op, &ins[..]) {
        (Op::Conv2d(c), [x, w, ..]) => {
            let (x, w) = (dims(*x), dims(*w));
            let (Some(&cin), &[cout, _, kh, kw]) = (x.get(1), &w[..]) else {
                return node.op.name().into();
            };
            let groups = match c.groups {
                1 => String::new(),
                g if g == cin && g == cout => " depthwise".into(),
                g => format!(" g{g}"),
            };
            format!(
                "conv {kh}×{kw}{}{}{groups}, {cout}←{cin}, {}",
                pair(c.stride, "s"),
                pair(c.dilation, "d"),
                plane(out)
            )
        }
        (Op::Pool2d(p), _) => {
            let kind = match p.kind {
                kiln::ir::PoolKind::Max => "max",
                kiln::ir::PoolKind::Avg { .. } => "avg",
                kiln::ir::PoolKind::Sum => "sum",
            };
            let [k0, k1] = p.kernel;
            format!(
                "{kind} pool {k0}×{k1}{}, {} ch, {}",
                pair(p.stride, "s"),
                out.get(1).copied().unwrap_or(0),
                plane(out)
            )
        }
        (Op::GlobalPool(kind), _) => {
            let kind = match kind {
                kiln::ir::ReduceKind::Max => "max",
                kiln::ir::ReduceKind::Avg => "avg",
            };
            format!("global {kind} pool, {} ch", out.get(1).copied().unwrap_or(0))
        }
        (Op::Dense, [x, w, ..]) => {
            let (x, w) = (dims(*x), dims(*w));
            format!(
                "dense {}←{}",
                w.first().copied().unwrap_or(0),
                x.last().copied().unwrap_or(0)
            )
        }
        (op, _) => {
            let shape: Vec<String> = out.iter().map(|d| d.to_string()).collect();
            format!("{}, {}", op.name(), shape.join("×"))
        }
    }
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

/// One line per input and output, by the file's names, with its type: what `--input` and
/// `--output` take (`input `0`: f32[1, 3, 4, 4]`, `output `y`: f32[1, 3, 4, 4]`); an ONNX
/// name that is not the graph's node name also says the node (` (node `_0`)`).
fn list_names(m: &kiln::model::LoadedModel) -> Result<()> {
    let g = &m.graph;
    for (what, pairs) in [("input", &m.inputs), ("output", &m.outputs)] {
        for (file, node) in pairs {
            let ty = g
                .find(node)
                .map_or_else(|| "?".to_string(), |id| g.node(id).ty.to_string());
            let renamed = if file == node {
                String::new()
            } else {
                format!(" (node `{node}`)")
            };
            out!("{what} `{file}`: {ty}{renamed}");
        }
    }
    Ok(())
}

/// `kiln check`: every unsupported node on stdout and an error, or `ok`, a summary line and
/// the inputs and outputs by the file's names ([`list_names`]).
fn check(model: &Path) -> Result<()> {
    use kiln::onnx::OnnxError;
    match kiln::model::load(model) {
        Ok(m) => {
            let g = &m.graph;
            out!(
                "ok: {} nodes, {} inputs, {} outputs, {} weights",
                g.len(),
                m.inputs.len(),
                m.outputs.len(),
                g.params().len()
            );
            list_names(&m)
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
        Command::Check(a) => check(&a.model),
        Command::Summary(a) => summary(&a),
        Command::Compile(a) => compile(&a),
        Command::Run(a) => run_model(&a),
        Command::Grad(a) => grad(&a),
        Command::Bench(a) => bench(&a),
        Command::Train(a) => train(&a),
        Command::Export(a) => export_cmd::export(&a),
    }
}

/// `kiln summary`.
fn summary(a: &SummaryArgs) -> Result<()> {
    let m = kiln::model::load(&a.model)?;
    outp!("{}", kiln::ir::summary::summarize(&m.graph));
    let renamed = m.renamed();
    if !renamed.is_empty() {
        out!("Names in the file that are not the node's:");
        for (what, file, node) in renamed {
            out!("  {what} `{file}` is node `{node}`");
        }
    }
    Ok(())
}

/// `kiln compile`.
fn compile(a: &CompileArgs) -> Result<()> {
    if a.passes {
        for p in kiln::passes::pipeline(kiln::passes::OptLevel::Full) {
            out!("{}", p.name());
        }
        return Ok(());
    }
    let Some(model) = &a.model else {
        bail!("a model is required")
    };
    if let Some(name) = &a.print_after {
        let mut graph = load(model)?;
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
        return Ok(());
    }
    match a.emit {
        Emit::Ir => outp!("{}", kiln::ir::text::print(&load(model)?)),
        Emit::Optimized => {
            let graph = kiln::passes::optimize(&load(model)?, kiln::passes::OptLevel::Full)?;
            outp!("{}", kiln::ir::text::print(&graph));
            outp!("# memory plan: {}\n", kiln::jit::memory_plan(&graph).describe())
        }
        emit @ (Emit::Clif | Emit::Asm) => {
            let graph = load(model)?;
            let opts = kiln::jit::JitOptions {
                keep_code: true,
                ..Default::default()
            };
            let m = kiln::compile(&graph, &opts)?;
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
    }
    Ok(())
}

/// `kiln run`.
fn run_model(a: &RunArgs) -> Result<()> {
    let mut m = kiln::model::load(&a.model)?;
    if let Some(n) = a.batch {
        m = m
            .with_batch(n)
            .with_context(|| format!("setting the batch size to {n}"))?;
    }
    let w = load_weights(&m.graph, m.weights.take(), &a.weights)?;
    // checked before anything runs
    let wanted = named_paths(&a.outputs, &m.output_names(), "output")?;
    let feeds = read_inputs(&m, &a.inputs)?;
    let results = run_engine(&m.graph, &w, &feeds, a.engine, a.threads)?;
    let results = m
        .name_outputs(&results)
        .ok_or_else(|| anyhow!("the engine did not compute every output of the model"))?;
    if a.outputs.is_empty() {
        for (n, v) in &results {
            print_value(n, v)?;
        }
    }
    for (name, path) in wanted {
        let v = &results
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| anyhow!("no output `{name}`"))?
            .1;
        kiln::runtime::write_npy(&path, v).with_context(|| format!("output `{name}`"))?;
    }
    Ok(())
}

/// `kiln grad`.
fn grad(a: &GradArgs) -> Result<()> {
    let mut m = kiln::model::load(&a.model)?;
    let w = load_weights(&m.graph, m.weights.take(), &a.weights)?;
    let feeds = read_inputs(&m, &a.inputs)?;
    let graph = &m.graph;
    let t = kiln::runtime::read_npy(&a.target).context("the target")?;
    let loss = match (a.loss, t.dtype()) {
        (LossArg::Mse, _) => kiln::Loss::mse(),
        (LossArg::CrossEntropy, d) => kiln::Loss::cross_entropy().ids_or_probs(d),
        (LossArg::Nll, d) => kiln::Loss::nll().ids_or_probs(d),
    };
    let options = kiln::TrainOptions {
        engine: match a.engine {
            Engine::Jit => kiln::Engine::Jit,
            Engine::Interp => kiln::Engine::Interp,
        },
        jit: kiln::jit::JitOptions {
            threads: a.threads.unwrap_or(0),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut bad = Vec::new();
    let mut names: Vec<&String> = feeds.keys().collect();
    names.sort();
    for n in names {
        if let Value::F(x) = &feeds[n] {
            bad.extend(non_finite(&format!("input `{}`", m.input_name_of(n)), x.data()));
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
    let (l, grads) = kiln::train::gradients(graph, loss, &w, &feeds, &t, &options)?;
    // an input's gradient under the file's name of the input
    let mut named = HashMap::new();
    for (key, g) in grads {
        let key = match m
            .inputs
            .iter()
            .find(|(_, node)| key == kiln::autodiff::input_grad_key(node))
        {
            Some((file, _)) => kiln::autodiff::input_grad_key(file),
            None => key,
        };
        if named.contains_key(&key) {
            bail!("two gradients would be written as `{key}`; rename the weight or the input");
        }
        named.insert(key, g);
    }
    kiln::runtime::save_safetensors(&a.output, &named)?;
    if !l.is_finite() {
        eprintln!(
            "warning: the loss is {l}{}; the gradients written to `{}` are not meaningful",
            if bad.is_empty() {
                ""
            } else {
                " (the tensors named above are not finite)"
            },
            a.output.display()
        );
    }
    out!("loss: {l}");
    Ok(())
}

/// `kiln bench`.
fn bench(a: &BenchArgs) -> Result<()> {
    let m = kiln::model::load(&a.model)?;
    let mut graph = m.graph;
    if let Some(n) = a.batch {
        graph = graph
            .with_batch(n)
            .with_context(|| format!("setting the batch size to {n}"))?;
    }
    let w = load_weights(&graph, m.weights, &a.weights)?;
    if a.train {
        return bench_train(a, &graph, &w);
    }
    let feeds = kiln::ir::init::random_inputs(&graph, 1)?;
    let mut jit_ms = None;
    let mut interp_ms = None;
    if a.engine != BenchEngine::Interp {
        let t = Instant::now();
        let opts = kiln::jit::JitOptions {
            threads: a.threads.unwrap_or(0),
            passes: if a.no_passes {
                kiln::passes::OptLevel::None
            } else {
                kiln::passes::OptLevel::Full
            },
            gemm_tier: match a.gemm_tier {
                GemmTierArg::Auto => kiln::jit::gemm::Tier::Auto,
                GemmTierArg::Avx512 => kiln::jit::gemm::Tier::Avx512,
                GemmTierArg::Avx2 => kiln::jit::gemm::Tier::Avx2,
                GemmTierArg::Cranelift => kiln::jit::gemm::Tier::Cranelift,
            },
            ..Default::default()
        };
        let mut m = kiln::compile(&graph, &opts)?;
        out!(
            "jit: compiled {} kernels in {:.1} ms; {}",
            m.kernels().len(),
            t.elapsed().as_secs_f64() * 1e3,
            m.plan().describe()
        );
        m.set_weights(&w)?;
        // as an embedding that reads its results in place runs it: borrowed inputs copied
        // in, the outputs left in the session (`Model::run_in_place`, then `Model::view`)
        let borrowed: Vec<kiln::Feed> = feeds.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut session = m.session()?;
        jit_ms = Some(median_ms(
            || m.run_in_place(&mut session, &borrowed).map_err(Into::into),
            a.runs,
        )?);
        if a.profile {
            let median = jit_ms.expect("timed above");
            let top = a.profile_top.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            print_profile(&m, &feeds, a.runs, median, opts.gemm_tier, top)?;
        }
    }
    if a.engine != BenchEngine::Jit {
        interp_ms = Some(median_ms(
            || {
                kiln::interp::run::<f32>(&graph, &feeds, &w)
                    .map(|_| ())
                    .map_err(Into::into)
            },
            a.runs,
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
    Ok(())
}

/// `kiln bench --train`: one training step of `graph` (at its batch size) on the JIT, with
/// seeded random inputs and targets: the setup (differentiate + compile) and the first step's
/// time, then the median of `--runs` steps.
fn bench_train(a: &BenchArgs, graph: &Graph, w: &HashMap<String, Tensor<f32>>) -> Result<()> {
    let out = match graph.outputs() {
        [o] => graph.node(*o),
        outs => bail!(
            "`--train` needs a model with one output (the prediction), this one has {}",
            outs.len()
        ),
    };
    let kind = match a.loss {
        Some(LossArg::Mse) => kiln::ir::LossKind::Mse,
        Some(LossArg::CrossEntropy) => kiln::ir::LossKind::CrossEntropy,
        Some(LossArg::Nll) => kiln::ir::LossKind::Nll,
        None => kiln::train_cmd::loss_for(graph).map_err(|e| anyhow!(e))?,
    };
    let mut rng = kiln::ir::init::SplitMix64::new(2);
    let (loss, target) = match kind {
        kiln::ir::LossKind::Mse => {
            let n = out.ty.shape.numel();
            let t = Tensor::new(out.ty.shape.clone(), (0..n).map(|_| rng.uniform(1.0)).collect())?;
            (kiln::Loss::mse(), Value::F(t))
        }
        k => {
            let &[n, classes] = out.ty.dims() else {
                bail!(
                    "a class-id loss needs the output to be class scores [N, K]; `{}` is {}",
                    out.name,
                    out.ty
                );
            };
            let ids = (0..n)
                .map(|_| (rng.next_u64() % classes.max(1) as u64) as i32)
                .collect();
            let t = Tensor::new([n], ids)?;
            let loss = if k == kiln::ir::LossKind::Nll {
                kiln::Loss::nll()
            } else {
                kiln::Loss::cross_entropy()
            };
            (loss, Value::I(t))
        }
    };
    let optimizer = match a.optimizer {
        OptimizerArg::Sgd => kiln::Optimizer::sgd(0.05).momentum(0.9),
        OptimizerArg::Adam => kiln::Optimizer::adam(0.001),
    };
    let options = kiln::TrainOptions {
        jit: kiln::jit::JitOptions {
            threads: a.threads.unwrap_or(0),
            passes: if a.no_passes {
                kiln::passes::OptLevel::None
            } else {
                kiln::passes::OptLevel::Full
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let feeds = kiln::ir::init::random_inputs(graph, 1)?;
    let t = Instant::now();
    let mut trainer = kiln::Trainer::new(graph, loss, optimizer, options)?;
    trainer.set_weights(w)?;
    let setup = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    trainer.step(&feeds, &target)?;
    let first = t.elapsed().as_secs_f64() * 1e3;
    out!("train: compiled in {setup:.1} ms; first step {first:.3} ms");
    let ms = median_ms(
        || trainer.step(&feeds, &target).map(|_| ()).map_err(Into::into),
        a.runs,
    )?;
    out!("train step: median {ms:.3} ms");
    Ok(())
}

/// `kiln train`.
fn train(a: &TrainArgs) -> Result<()> {
    let settings = kiln::train_cmd::TrainSettings {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        momentum: a.momentum,
        optimizer: match a.optimizer {
            OptimizerArg::Sgd => kiln::train_cmd::OptimizerKind::Sgd,
            OptimizerArg::Adam => kiln::train_cmd::OptimizerKind::Adam,
        },
        seed: a.seed,
        save: a.save.clone(),
        weights: a.weights.clone(),
        threads: a.threads.unwrap_or(0),
    };
    let mut bar = Bar::new(!a.no_progress);
    kiln::train_cmd::train(
        &a.model,
        &a.data,
        &settings,
        &mut std::io::stdout().lock(),
        &mut bar,
    )
    .map_err(|e| anyhow!(e))?;
    Ok(())
}

/// The progress bar of `kiln train`, on stderr when it is a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new(show: bool) -> Bar {
        let target = if show && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps, eta {eta}  {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Bar(bar)
    }
}

impl kiln::fit::Progress for Bar {
    fn start(&mut self, steps: u64) {
        self.0.set_length(steps);
    }

    fn epoch(&mut self, epoch: usize, epochs: usize) {
        self.0.set_prefix(format!("epoch {epoch}/{epochs}"));
    }

    fn step(&mut self, mean_loss: f64, images_per_second: f64) {
        self.0
            .set_message(format!("loss {mean_loss:.4}  {images_per_second:.0} images/s"));
        self.0.inc(1);
    }

    fn suspend(
        &mut self,
        f: &mut dyn FnMut() -> Result<(), kiln::fit::FitError>,
    ) -> Result<(), kiln::fit::FitError> {
        self.0.suspend(f)
    }

    fn finish(&mut self) {
        self.0.finish_and_clear();
    }
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
