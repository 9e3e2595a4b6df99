//! kiln's code generator: every op of the optimized graph IR lowered to a Cranelift kernel,
//! one JIT module per compiled graph, an entry function that runs the kernels in order over one
//! arena, and the schedule that says how each kernel's parallel range may be split. It compiles
//! and knows nothing of running: `kiln-runtime` owns the arena, the threads and the weights, and
//! calls the kernels of a [`Compiled`] graph.
//!
//! ```
//! use kiln_ir::builder::{Conv, Network};
//! let mut net = Network::new("tiny");
//! let x = net.input("input", [1, 1, 4, 4])?;
//! let y = net.named("output").conv2d(x, Conv::new(1, [3, 3]).padding(1).bias(false))?;
//! net.output(y)?;
//! let graph = net.finish()?;
//! let compiled = kiln_jit::compile(&graph, &kiln_jit::JitOptions::default()).unwrap();
//! // one kernel per node that needs one, and an arena of the plan's size to run them over
//! assert!(!compiled.kernels().is_empty());
//! assert!(compiled.plan().size >= 4 * 16);
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

pub mod codegen;
pub mod conv_rows;
pub mod direct;
pub mod elementwise_kernels;
pub mod gemm;
pub mod gemm_simd;
pub mod gemm_train;
pub mod layout_kernels;
pub mod lower;
pub mod lower_reduce;
pub mod lower_train;
/// The memory plan the kernels' offsets come from (`kiln_passes::memory_plan`).
pub use kiln_passes::memory_plan as plan;
pub mod simd;
pub mod softmax_kernels;
pub mod train_kernels;

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::I64;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};
use kiln_ir::{Graph, NodeId, Op, TensorType, TrainOp};
use std::sync::Arc;
use thiserror::Error;

/// Why a graph could not be compiled.
#[derive(Debug, Error)]
pub enum JitError {
    #[error("this CPU cannot run kiln's JIT: {0}")]
    UnsupportedHost(String),
    #[error("code generation failed: {0}")]
    Codegen(String),
    #[error("node `{node}`: the JIT has no lowering for `{op}` yet (run it on the interpreter)")]
    Unsupported { node: String, op: String },
    #[error("optimizing the graph: {0}")]
    Passes(#[from] kiln_ir::IrError),
    /// The model is too big for `kiln_ir::limits` (its arena or its weights).
    #[error("{0}")]
    TooBig(String),
    /// A training graph's update pair names a value that is not a weight and its update.
    #[error("`{0}` is not an f32 weight, input or output of the model")]
    UnknownValue(String),
}

/// Knobs of the compiler.
#[derive(Debug, Clone)]
pub struct JitOptions {
    /// Cranelift's `opt_level`: `"none"` (the default) or `"speed"`. Measured on this
    /// project's kernels (docs/performance.md): `none` runs ResNet-18 in 155 ms against 176 ms
    /// for `speed` and compiles it in half the time — the kernels are scheduled by hand, and
    /// `speed`'s e-graph reorders them into spills.
    pub opt_level: String,
    /// Keep each kernel's Cranelift IR text and machine code (`kiln compile --emit clif|asm`).
    pub keep_code: bool,
    /// Which graph passes run before lowering (`kiln_passes::pipeline`).
    pub passes: kiln_passes::OptLevel,
    /// The kernel tier of the hot kernels — the GEMM micro-kernel and epilogue, convolutions
    /// with few channels, pooling, depthwise convolutions, dense layers, layout copies,
    /// activations and arithmetic (same-shape and the common broadcasts), and the training
    /// kernels that have a Rust form
    /// (`Auto`: the widest of AVX-512 and AVX2 + FMA the CPU has, else Cranelift's portable
    /// `f32x4` code).
    pub gemm_tier: gemm::Tier,
    /// Threads that run the model: each kernel's parallel range is split among them. `0`
    /// means one per available core; more than [`MAX_THREADS`] means `MAX_THREADS`. With 1
    /// thread the results are bit-for-bit deterministic (so are they with more: every output
    /// element is computed by exactly one thread in a fixed order).
    pub threads: usize,
}

impl Default for JitOptions {
    fn default() -> JitOptions {
        JitOptions {
            opt_level: "none".into(),
            keep_code: false,
            passes: kiln_passes::OptLevel::Full,
            gemm_tier: gemm::Tier::Auto,
            threads: 0,
        }
    }
}

/// The most threads a model runs on (`JitOptions::threads` above it is clamped: the results
/// are the same on any number of threads, and each one is an OS thread started with the model).
pub const MAX_THREADS: usize = 1024;

/// Below this much work ([`KernelInfo::work`]) a kernel is not split across threads.
const PARALLEL_MIN_WORK: usize = 16 * 1024;

/// FLOPs per unit of [`KernelInfo::work`]: a kernel of few outputs but many FLOPs (a conv
/// weight gradient: LeNet-5's conv2 writes 2,400 floats from 31 MFLOP at batch 64) splits once
/// it has `32·PARALLEL_MIN_WORK` = 512K FLOPs, a few microseconds of one core, where a barrier
/// costs about one.
const FLOPS_PER_WORK: u64 = 32;

/// One compiled kernel.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub node: NodeId,
    pub name: String,
    /// The size of its outermost parallel loop.
    pub extent: usize,
    /// A rough measure of the kernel's work: the elements of the node's output, or its FLOPs
    /// (`kiln_ir::summary::op_flops`) over [`FLOPS_PER_WORK`] when that is more.
    pub work: usize,
    /// How it computes its node where the compiler chose among several ways by the host and
    /// the shapes: a `gemm` node's (or a dense layer's run by the GEMM driver)
    /// [`gemm::GemmDesc::form`], such as `direct conv`; `None` for every other kernel.
    pub form: Option<&'static str>,
    /// Whether it computes a value of the weights alone (a folded batch norm's weights, say):
    /// such kernels run once, when the weights are loaded, not on every run.
    pub prep: bool,
    /// Whether it belongs to a training graph's update phase ([`compile_training`]).
    pub update: bool,
    /// Whether its range may be run in many small slices at little extra cost, so that
    /// threads may take slices of each other's shares ([`Step::fine`]); false for a GEMM whose
    /// every call packs all of its B again ([`gemm::GemmDesc::fine_slices`]).
    pub fine_slices: bool,
    /// The fewest indices of its range worth a call ([`lower::Extent`]): the threads' shares
    /// and slices are no smaller, but for the last ([`Step::grain`]).
    pub grain: usize,
    /// Its Cranelift IR, when `keep_code` was set.
    pub clif: Option<String>,
    /// Its machine code, when `keep_code` was set.
    pub code: Option<Vec<u8>>,
}

/// A kernel's machine code: `fn(arena, begin, end)` computes the part `[begin, end)` of its
/// parallel range over the arena at `arena`.
pub type KernelFn = unsafe extern "C" fn(*mut u8, i64, i64);

/// The entry's machine code: `fn(arena)` runs every (non-`prep`) kernel over its whole range,
/// in run order.
pub type EntryFn = unsafe extern "C" fn(*mut u8);

/// One kernel of the run order and how many threads may share its range (1: it runs on one
/// thread; it is too small to pay for a barrier; more: every thread of the run takes part,
/// `kiln-runtime`'s pool deals the range out among them).
#[derive(Clone, Copy)]
pub struct Step {
    pub f: KernelFn,
    pub extent: usize,
    pub parts: usize,
    /// Whether the threads may run their shares in several calls and take slices of each
    /// other's ([`KernelInfo::fine_slices`]); if not, each runs its own share in one call.
    pub fine: bool,
    /// The fewest indices of the range a thread's share or slice holds (but for what is left
    /// at the end): [`KernelInfo::grain`].
    pub grain: usize,
}

/// A graph compiled to native code for this CPU: the kernels, the memory plan their offsets
/// come from, and the schedule (the kernels in run order, and how each may be split among
/// threads). `kiln_runtime::Model` runs it.
///
/// # The contract of the code (what a caller of the kernels must keep)
///
/// Every kernel and the entry read and write only the arena they are given, inside
/// `[0, plan().size)`, when the arena
/// - is at least `plan().size` bytes, 64-byte aligned, and not used by anything else during
///   the call;
/// - holds at every weight's and input's slot a value of its type (any bits: kernels that read
///   indices range-check them) and every status word set to `plan::STATUS_OK`;
/// - is given to a kernel with `0 ≤ begin ≤ end ≤ extent` (its [`KernelInfo::extent`]), the
///   kernels run in [`Compiled::steps`] order (a `prep` kernel before the others, once per set
///   of weights), and the slices of one step finish before the next step starts.
///
/// Why that holds: the plan (`kiln_passes::memory_plan::checked`) placed every value, scratch
/// region and status word at `offset + bytes ≤ size ≤ MAX_BYTES` with checked arithmetic;
/// every value has ≤ 2³¹ elements and every window fits its padded input (`kiln_ir::limits`,
/// checked by shape inference), so the kernels' `i64` index arithmetic over `[begin, end)`
/// neither overflows nor leaves a value's slot (`lower/`); indices read from memory are
/// range-checked before use; the GEMM driver checks its items and tile. An update planned at
/// its weight's slot ([`compile_training`]) has the weight's type, so its kernel stays inside
/// that slot. The code is immutable and reentrant (its state lives in the arena or in
/// thread-local packing buffers), so any number of arenas may be run at once.
pub struct Compiled {
    /// The graph as given to `compile`.
    source: Graph,
    graph: Graph,
    plan: plan::Plan,
    kernels: Vec<KernelInfo>,
    code: Code,
    /// The kernels in run order with their slicing.
    steps: Arc<[Step]>,
    /// The same, of a training graph's two phases (gradients, updates).
    phase_steps: [Arc<[Step]>; 2],
    /// `(weight, update)` slots copied after the update phase ([`compile_training`]).
    copies: Vec<(plan::Slot, plan::Slot)>,
    /// The threads the schedule was split for.
    threads: usize,
    /// The `gemm` kernels' driver descriptions, which their code points at.
    #[allow(clippy::vec_box)] // boxed: the code holds their addresses
    _gemms: Vec<Box<gemm::GemmDesc>>,
}

/// The JIT module that owns the machine code, its entry and its kernels' addresses.
struct Code {
    module: Option<JITModule>,
    entry: EntryFn,
    kernel_fns: Vec<KernelFn>,
}

// SAFETY: after `finalize_definitions` the module is never touched again but to free its
// memory in `Compiled::drop` (through `&mut`); shared references only hand out the finalized
// code, which is immutable and reentrant (all its state lives in the arena it is given, or in
// thread-local packing buffers).
unsafe impl Sync for Code {}
// SAFETY: as above; the code is not tied to the thread that made it.
unsafe impl Send for Code {}

/// What the kernels need of the memory plan besides their values: the lowering's scratch
/// sizes and status words, handed to `kiln_passes::memory_plan`.
pub struct Needs;

impl plan::KernelNeeds for Needs {
    fn scratch_len(&self, op: &Op, ins: &[&TensorType], out: &TensorType) -> Result<usize, String> {
        lower::scratch_len(op, ins, out)
    }
    fn has_status(&self, op: &Op) -> bool {
        lower::has_status(op)
    }
}

/// The memory plan of `graph` (an optimized graph) for display (`kiln compile --emit
/// optimized`): with this code generator's scratch regions and status words.
pub fn memory_plan(graph: &Graph) -> plan::Plan {
    plan::plan(graph, &Needs)
}

/// Compiles `graph` for the host CPU, after the graph passes of `options.passes`.
///
/// Nothing proportional to a tensor's size is allocated: the memory plan is checked against
/// `kiln_ir::limits::MAX_BYTES` (arena and weights) before code generation, and the arena is
/// the runtime's to allocate (fallibly).
pub fn compile(graph: &Graph, options: &JitOptions) -> Result<Compiled, JitError> {
    compile_training(graph, options, &[])
}

/// [`compile`] for a training graph whose `updates` are `(weight, output)` pairs (the
/// optimizer's new value of each weight or state buffer, `kiln_autodiff::TrainingGraph::
/// updates`). The kernels run in two phases: first everything the updates do not depend on
/// (forward pass, loss, backward pass), then the updates and what depends on them
/// ([`Compiled::phase_steps`]; `kiln_runtime::Model::run_gradients` and `apply_updates`). An update that reads its
/// inputs only at the index it writes, and whose weight no other update-phase kernel reads,
/// is planned at its weight's place: it writes the weight in place.
pub fn compile_training(
    graph: &Graph,
    options: &JitOptions,
    updates: &[(String, String)],
) -> Result<Compiled, JitError> {
    if !options.gemm_tier.available() {
        return Err(JitError::UnsupportedHost(format!(
            "the {} kernel tier needs a CPU with {} (this one has at most {})",
            options.gemm_tier.isa().name(),
            options.gemm_tier.isa().name(),
            simd::Isa::host().name()
        )));
    }
    let source = graph;
    let optimized = kiln_passes::optimize(graph, options.passes)?;
    let graph = &optimized;
    for id in graph.topo_order() {
        let node = graph.node(id);
        if node.op.is_training() && !lower_train::supported(&node.op) {
            return Err(JitError::Unsupported {
                node: node.name.clone(),
                op: node.op.name().into(),
            });
        }
    }
    // the plan's lifetimes follow the run order, whose update phase comes last
    let phases = Phases::new(graph, updates)?;
    let mut plan = plan::checked(graph, &phases.order, &Needs).map_err(JitError::TooBig)?;
    let copies = phases.place_updates(graph, &mut plan);
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
    .min(MAX_THREADS);
    let mut module = codegen::new_module(&options.opt_level)?;
    let mut kernels = Vec::new();
    let mut ids = Vec::new();
    let mut gemms = Gemms::default();
    let constant = kiln_passes::constant_nodes(graph);
    for &id in &phases.order {
        let node = graph.node(id);
        let in_ids = graph.inputs(id);
        let ins: Vec<(plan::Slot, TensorType)> = in_ids
            .iter()
            .map(|&i| (plan.slots[&i], graph.node(i).ty.clone()))
            .collect();
        // a value with no elements needs no kernel (and a kernel has nothing to write there)
        if !lower::needs_kernel(&node.op) || plan.fused.contains(&id) || node.ty.shape.numel() == 0 {
            continue;
        }
        let gemm = match &node.op {
            Op::Gemm(g) => {
                let a_constant = constant.contains(&in_ids[0]);
                let i = gemms.add(
                    &mut module,
                    graph,
                    &mut plan,
                    id,
                    g,
                    &ins,
                    threads,
                    options.gemm_tier,
                    a_constant,
                )?;
                Some(i)
            }
            Op::Dense => {
                let w_constant = constant.contains(&in_ids[1]);
                gemms.add_dense(&mut plan, id, &ins, threads, options.gemm_tier, w_constant)?
            }
            _ => None,
        };
        if let Some(d) = gemm.map(|i| &*gemms.descs[i])
            && (d.a_packed.is_some() || d.b_packed.is_some())
        {
            // a `prep` kernel packs the operands computed from the weights alone once they are
            // set or changed
            let name = format!("k{}_{}_pack", kernels.len(), node.name.replace('.', "_"));
            let fid = codegen::declare_kernel(&mut module, &name)?;
            let sig = codegen::kernel_signature(&module);
            let kept = codegen::define(&mut module, fid, sig, options.keep_code, |e, p, _| {
                gemm::emit_driver_call(e, gemm::kiln_gemm_pack, d, [p[0], p[1], p[2]])
            })?;
            let (clif, code) = kept.map_or((None, None), |(t, c)| (Some(t), Some(c)));
            kernels.push(KernelInfo {
                node: id,
                name,
                extent: 1,
                grain: 1,
                work: 0,
                form: None,
                prep: true,
                update: false,
                fine_slices: true,
                clif,
                code,
            });
            ids.push(fid);
        }
        let types: Vec<&TensorType> = ins.iter().map(|(_, t)| t).collect();
        for phase in 0..lower::phases(&node.op, &types, &node.ty) {
            let name = format!("k{}_{}", kernels.len(), node.name.replace('.', "_"));
            let fid = codegen::declare_kernel(&mut module, &name)?;
            let sig = codegen::kernel_signature(&module);
            let out = (plan.slots[&id], &node.ty);
            let scratch = plan.scratch.get(&id).copied();
            let status = plan.status.get(&id).copied();
            let mut extent = lower::Extent { len: 0, grain: 1 };
            let kept = codegen::define(&mut module, fid, sig, options.keep_code, |e, p, _| {
                let args = lower::Args {
                    arena: p[0],
                    begin: p[1],
                    end: p[2],
                    ins: &ins,
                    out,
                    scratch,
                    gemm: gemm.map(|i| &*gemms.descs[i]),
                    status,
                    tier: options.gemm_tier,
                };
                extent = lower::emit(e, &node.op, &args, phase);
            })?;
            let (clif, code) = kept.map_or((None, None), |(t, c)| (Some(t), Some(c)));
            kernels.push(KernelInfo {
                node: id,
                name,
                extent: extent.len,
                grain: extent.grain,
                work: node.ty.shape.numel().max(
                    usize::try_from(kiln_ir::summary::op_flops(&node.op, &types, &node.ty) / FLOPS_PER_WORK)
                        .unwrap_or(usize::MAX),
                ),
                form: gemm.map(|i| gemms.descs[i].form()),
                prep: constant.contains(&id),
                update: phases.tail.contains(&id),
                fine_slices: gemm.is_none_or(|i| gemms.descs[i].fine_slices()),
                clif,
                code,
            });
            ids.push(fid);
        }
    }
    let entry = define_entry(&mut module, &kernels, &ids)?;
    let mut m = finish(source, graph, plan, module, entry, kernels, &ids, threads, gemms)?;
    m.copies = copies;
    Ok(m)
}

/// Whether `node` depends on `on` (so runs after it in any topological order).
fn depends_on(graph: &Graph, node: NodeId, on: NodeId) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        for i in graph.inputs(n) {
            if i == on {
                return true;
            }
            if seen.insert(i) {
                stack.push(i);
            }
        }
    }
    false
}

/// The two phases of a training graph's run: the run order the memory plan is made for.
struct Phases {
    /// Every node in run order: a topological order with the update phase last.
    order: Vec<NodeId>,
    /// The update phase: the update nodes and everything that depends on one.
    tail: std::collections::HashSet<NodeId>,
    /// `(weight, update)` nodes.
    pairs: Vec<(NodeId, NodeId)>,
}

impl Phases {
    fn new(graph: &Graph, updates: &[(String, String)]) -> Result<Phases, JitError> {
        let find = |n: &str| graph.find(n).ok_or_else(|| JitError::UnknownValue(n.to_string()));
        let mut pairs = Vec::with_capacity(updates.len());
        for (w, u) in updates {
            let (w, u) = (find(w)?, find(u)?);
            if !matches!(graph.node(w).op, Op::Param { .. }) || graph.node(w).ty != graph.node(u).ty {
                return Err(JitError::UnknownValue(format!(
                    "{} (an update of {})",
                    graph.node(u).name,
                    graph.node(w).name
                )));
            }
            pairs.push((w, u));
        }
        let topo = graph.topo_order();
        let mut tail = std::collections::HashSet::new();
        for &id in &topo {
            if pairs.iter().any(|&(_, u)| u == id) || graph.inputs(id).iter().any(|i| tail.contains(i)) {
                tail.insert(id);
            }
        }
        let (mut order, late): (Vec<NodeId>, Vec<NodeId>) =
            topo.into_iter().partition(|id| !tail.contains(id));
        order.extend(late);
        Ok(Phases { order, tail, pairs })
    }

    /// Plans each update at its weight's slot where it can write it in place; returns the
    /// `(weight, update)` slots of the others, to copy after the update phase.
    fn place_updates(&self, graph: &Graph, plan: &mut plan::Plan) -> Vec<(plan::Slot, plan::Slot)> {
        let mut copies = Vec::new();
        for &(w, u) in &self.pairs {
            let (ws, us) = (plan.slots[&w], plan.slots[&u]);
            let node = graph.node(u);
            // in place when `u` reads every input at the index it writes (or a scalar), nothing
            // else lives in its slot, it has a kernel of its own, and every other kernel that
            // reads the weight runs before it (in the gradient phase, or one `u` depends on)
            let elementwise = matches!(node.op, Op::Train(TrainOp::Update(_)) | Op::Binary(_))
                && graph
                    .inputs(u)
                    .iter()
                    .all(|&i| graph.node(i).ty == node.ty || graph.node(i).ty.shape.numel() == 1);
            let alone = plan
                .slots
                .iter()
                .all(|(&id, s)| id == u || s.offset != us.offset || s.len == 0);
            let readers_first = graph
                .users(w)
                .into_iter()
                .all(|r| r == u || !self.tail.contains(&r) || depends_on(graph, u, r));
            if elementwise && alone && readers_first && !plan.fused.contains(&u) && node.ty.shape.numel() > 0
            {
                plan.slots.insert(u, ws);
            } else if ws.offset != us.offset {
                copies.push((ws, us));
            }
        }
        copies
    }
}

/// The fewest rows (batch) of a dense layer that runs on the GEMM driver when its weights are
/// packed on every run (they depend on a graph input): below it, the direct kernel's dot
/// products (weights streamed once per four rows) win. Measured on ConvNeXt-T's layers (EPYC
/// Zen 5, AVX-512): at 3136 and 784 rows the driver runs at 215–231 GFLOP/s against 121–137,
/// at 196 rows 170 against 141–154, at 49 rows both 84–98; LeNet-5's 64-row 400 → 120 layer
/// runs at 220 on the direct kernel.
const DENSE_GEMM_ROWS: usize = 128;

/// Whether a dense layer of `rows` rows and `weights` bytes of weights runs on the GEMM
/// driver. With its weights packed once when they are set (`GemmDesc::b_packed`), from two
/// rows where the weights are larger than L2: the driver's tiles then stream the packed panels
/// once per six rows, where the direct kernel reads the weights once per four rows and wastes
/// lanes below four. Measured on the EPYC Zen 3 (AVX2, one thread, each layer alone, ms, direct
/// → driver): ConvNeXt-T's 49-row 768 → 3072 3.78 → 2.99, 4 × 4096 → 4096 (64 MB from
/// memory) 4.21 → 4.48, 3 rows 7.52 → 4.17, 2 rows 5.14 → 4.42, 16 × 512 → 1000 0.24 → 0.19,
/// 2 × 512 → 1000 0.089 → 0.052, but 1 row 2.89 → 4.26 (a matrix-vector product: the direct
/// kernel's); LeNet-5's 64 × 400 → 120 (190 KB, in L2) 0.073 → 0.093.
fn dense_on_driver(rows: usize, weights: usize, packed: bool) -> bool {
    let l2 = gemm::cache_size(2).unwrap_or(1 << 20);
    rows >= DENSE_GEMM_ROWS || (packed && rows >= 2 && weights > l2)
}

/// The `gemm` nodes' driver descriptions, with the functions they call once the module is
/// finalized: one shared micro-kernel and an epilogue per node.
#[derive(Default)]
struct Gemms {
    #[allow(clippy::vec_box)] // boxed: kernels are given their addresses while the list grows
    descs: Vec<Box<gemm::GemmDesc>>,
    epilogues: Vec<Option<cranelift_module::FuncId>>,
    micro_kernel: Option<cranelift_module::FuncId>,
    /// Whether each description runs the Cranelift micro-kernel (to be linked).
    on_cranelift: Vec<bool>,
}

impl Gemms {
    /// Describes the `gemm` node `id` and defines its epilogue; returns its index. When its A
    /// is computed from the weights alone (`a_constant`), A is read packed
    /// (`GemmDesc::a_packed`) from a place added at the end of the arena, where a `prep` kernel
    /// packs it; the plan grows by it (unless that would exceed the arena's limit: then A is
    /// packed on every run).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        module: &mut JITModule,
        graph: &Graph,
        plan: &mut plan::Plan,
        id: NodeId,
        g: &kiln_ir::Gemm,
        ins: &[(plan::Slot, TensorType)],
        threads: usize,
        tier: gemm::Tier,
        a_constant: bool,
    ) -> Result<usize, JitError> {
        // the Rust tier's tile that pads this product least, or the Cranelift kernel
        let (ad, bd) = (ins[0].1.dims(), ins[1].1.dims());
        let rust = tier.kernel(ad[0] / g.groups.max(1), bd[2]);
        let kernel = match rust {
            Some(k) => k,
            None => {
                if self.micro_kernel.is_none() {
                    self.micro_kernel = Some(gemm::define_micro_kernel(module, "micro_kernel")?);
                }
                // the Cranelift kernel's address is known once the module is finalized
                gemm::MicroKernel {
                    mr: gemm::MR,
                    nr: gemm::NR,
                    f: gemm::unset_kernel,
                }
            }
        };
        let b = graph.inputs(id)[1];
        let patches = match &graph.node(b).op {
            Op::Im2Col(c) if plan.fused.contains(&b) => {
                let x = graph.inputs(b)[0];
                Some((c, plan.slots[&x], &graph.node(x).ty))
            }
            _ => None,
        };
        // at least two work items per thread, then `GemmDesc::split` cuts the split side at
        // every tile (a thread runs its adjacent items as one block, so finer items cost no
        // extra packing and the threads' shares come out even to a tile)
        let want = if threads > 1 { threads.saturating_mul(2) } else { 1 };
        let status = plan.status[&id];
        let mut desc = lower::gemm_desc(g, ins, plan.slots[&id], patches, kernel, want, status)
            .map_err(JitError::Codegen)?;
        // a convolution with too few output channels to fill a tile, or of a shape where it was
        // measured faster: the tier's direct kernel (an im2col's patches here; a plain B, read
        // as patches by a transposed product or not, below)
        if rust.is_some()
            && patches.is_some()
            && let gemm::BArena::Patches {
                channels,
                geom,
                ref mut shifted,
                ..
            } = desc.b
            && let Some(dc) = gemm::DirectConv::new(tier.isa(), &geom, channels / g.groups.max(1), desc.mg)
        {
            desc.direct = Some(dc);
            *shifted = None;
            desc.split(want);
        }
        // a pointwise product (B the images themselves: a 1 × 1, stride-1 convolution's) on a
        // small map: the direct kernel too, B read as one row of pixels per image
        if rust.is_some()
            && patches.is_none()
            && g.groups == 1
            && let gemm::BArena::Matrix { offset } | gemm::BArena::Patches { offset, .. } = desc.b
            && let Some((dc, geom)) = gemm::DirectConv::for_pointwise(tier.isa(), desc.kg, desc.mg, desc.l)
        {
            desc.b = gemm::BArena::Patches {
                offset,
                channels: desc.kg,
                geom,
                shifted: None,
                swap: None,
            };
            desc.direct = Some(dc);
            desc.split(want);
        }
        if a_constant {
            desc.a_packed = reserve(plan, desc.packed_a_bytes());
        }
        // the Rust tier's epilogue (which has every activation), else one emitted for the node
        let rust_epilogue = rust.and(direct::kernels(tier.isa())).map(|k| k.epilogue);
        let epilogue = if !(g.bias || g.residual || g.activation.is_some()) {
            None
        } else if let Some(f) = rust_epilogue {
            desc.epilogue = Some(f);
            desc.act = elementwise_kernels::Act::of(g.activation);
            // a direct convolution finishes C as it stores it (no pass of its own over C)
            if let Some(dc) = desc.direct.as_mut() {
                dc.finish = true;
            }
            None
        } else {
            let mut sig = module.make_signature();
            // (the ninth, the Rust tiers' activation, unused: this one has its own built in)
            for _ in 0..9 {
                sig.params.push(cranelift_codegen::ir::AbiParam::new(I64));
            }
            let name = format!("epilogue_{}", self.descs.len());
            let fid = module
                .declare_function(&name, Linkage::Local, &sig)
                .map_err(|e| JitError::Codegen(format!("declaring {name}: {e}")))?;
            codegen::define(module, fid, sig, false, |e, p, _| {
                lower::emit_gemm_epilogue(e, p, g)
            })?;
            Some(fid)
        };
        self.on_cranelift.push(rust.is_none());
        self.descs.push(Box::new(desc));
        self.epilogues.push(epilogue);
        Ok(self.descs.len() - 1)
    }

    /// Describes the dense node `id` (`x [N, I]`, `w [O, I]`, an optional bias `[O]`) for the
    /// GEMM driver where it pays ([`dense_on_driver`]) and the tier has a Rust micro-kernel:
    /// `Y = X·Wᵀ` with X as A (packed per run), W read transposed as B (packed when the weights
    /// are set where they are computed from the weights alone, `w_constant`) and the bias per
    /// column in the Rust tier's epilogue; returns its index, or `None` where the direct
    /// kernels run it.
    fn add_dense(
        &mut self,
        plan: &mut plan::Plan,
        id: NodeId,
        ins: &[(plan::Slot, TensorType)],
        threads: usize,
        tier: gemm::Tier,
        w_constant: bool,
    ) -> Result<Option<usize>, JitError> {
        let (xd, wd) = (ins[0].1.dims(), ins[1].1.dims());
        let (n, i, o) = (xd[0], xd[1], wd[0]);
        let (Some(kernel), Some(k), Some(&status)) = (
            tier.kernel(n, o),
            direct::kernels(tier.isa()),
            plan.status.get(&id),
        ) else {
            return Ok(None);
        };
        let weights = i.saturating_mul(o).saturating_mul(4);
        if !dense_on_driver(n, weights, w_constant) || kernel.check().is_err() {
            return Ok(None);
        }
        let bias = ins.get(2).map(|s| s.0.offset);
        let mut desc = gemm::GemmDesc {
            kernel,
            epilogue: bias.map(|_| k.epilogue_cols),
            act: elementwise_kernels::Act::NONE,
            blocking: gemm::Blocking::for_host(&kernel),
            batch: 1,
            groups: 1,
            mg: n,
            kg: i,
            l: o,
            a: ins[0].0.offset,
            b: gemm::BArena::MatrixT {
                offset: ins[1].0.offset,
            },
            c: plan.slots[&id].offset,
            bias,
            residual: None,
            m_step: 1,
            n_step: 1,
            a_packed: None,
            b_packed: None,
            status,
            direct: None,
            bias_cols: true,
        };
        desc.split(if threads > 1 { threads.saturating_mul(2) } else { 1 });
        if w_constant {
            desc.b_packed = reserve(plan, desc.packed_b_bytes());
        }
        if desc.b_packed.is_none() && !dense_on_driver(n, weights, false) {
            // (no room in the arena for the packed weights)
            return Ok(None);
        }
        self.on_cranelift.push(false);
        self.descs.push(Box::new(desc));
        self.epilogues.push(None);
        Ok(Some(self.descs.len() - 1))
    }

    /// Points the descriptions at the finalized code.
    fn link(&mut self, module: &JITModule) {
        let cranelift = self.micro_kernel.map(|mk| {
            let p = module.get_finalized_function(mk);
            // SAFETY: defined by `gemm::define_micro_kernel` with the `MicroKernelFn` signature.
            unsafe { std::mem::transmute::<*const u8, gemm::MicroKernelFn>(p) }
        });
        for ((d, e), on_cranelift) in self.descs.iter_mut().zip(&self.epilogues).zip(&self.on_cranelift) {
            if let (Some(f), true) = (cranelift, on_cranelift) {
                d.kernel.f = f;
            }
            // (a description without a Cranelift epilogue keeps the Rust tier's, or none)
            if let Some(id) = e {
                let p = module.get_finalized_function(*id);
                // SAFETY: defined in `add` with the `EpilogueFn` signature (nine i64).
                d.epilogue = Some(unsafe { std::mem::transmute::<*const u8, gemm::EpilogueFn>(p) });
            }
        }
    }
}

/// A place of `bytes` (64-byte aligned) added at the end of the arena for the whole run of a
/// model (an operand packed when the weights are set); `None` when `bytes` is, or when the
/// arena would outgrow its limit (the operand is then packed on every run).
fn reserve(plan: &mut plan::Plan, bytes: Option<usize>) -> Option<usize> {
    let at = plan.size.next_multiple_of(64);
    let end = at
        .checked_add(bytes?)
        .filter(|&end| end <= kiln_ir::limits::MAX_BYTES)?;
    plan.permanent = plan.permanent.saturating_add(end - plan.size);
    plan.size = end;
    Some(at)
}

/// The entry `fn(arena)`: every kernel over its whole range, in order.
fn define_entry(
    module: &mut JITModule,
    kernels: &[KernelInfo],
    ids: &[cranelift_module::FuncId],
) -> Result<cranelift_module::FuncId, JitError> {
    let mut sig = module.make_signature();
    sig.params.push(cranelift_codegen::ir::AbiParam::new(I64));
    let entry = module
        .declare_function("entry", Linkage::Export, &sig)
        .map_err(|e| JitError::Codegen(format!("declaring the entry: {e}")))?;
    codegen::define(module, entry, sig, false, |e, p, module| {
        for (k, &fid) in kernels.iter().zip(ids).filter(|(k, _)| !k.prep) {
            let fref = module.declare_func_in_func(fid, e.b.func);
            let begin = e.iconst(0);
            let end = e.iconst(k.extent as i64);
            e.b.ins().call(fref, &[p[0], begin, end]);
        }
    })?;
    Ok(entry)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    source: &Graph,
    graph: &Graph,
    plan: plan::Plan,
    mut module: JITModule,
    entry: cranelift_module::FuncId,
    kernels: Vec<KernelInfo>,
    ids: &[cranelift_module::FuncId],
    threads: usize,
    mut gemms: Gemms,
) -> Result<Compiled, JitError> {
    module
        .finalize_definitions()
        .map_err(|e| JitError::Codegen(format!("finalizing: {e}")))?;
    gemms.link(&module);
    let ptr = module.get_finalized_function(entry);
    // SAFETY: `entry` was defined with the signature `fn(i64)` (SystemV, as `extern "C"`), and
    // reads and writes only the arena, whose size the plan fixed.
    let entry = unsafe { std::mem::transmute::<*const u8, EntryFn>(ptr) };
    let kernel_fns: Vec<KernelFn> = ids
        .iter()
        .map(|&id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel was defined with `kernel_signature`: fn(i64, i64, i64).
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    // Split a kernel only when it is big enough.
    let steps_of = |phase: Option<bool>| -> Arc<[Step]> {
        kernels
            .iter()
            .zip(&kernel_fns)
            .filter(|(k, _)| !k.prep && phase.is_none_or(|p| k.update == p))
            .map(|(k, &f)| {
                let split =
                    threads > 1 && k.extent >= threads.saturating_mul(2) && k.work >= PARALLEL_MIN_WORK;
                Step {
                    f,
                    extent: k.extent,
                    parts: if split { threads } else { 1 },
                    fine: k.fine_slices,
                    grain: k.grain.max(1),
                }
            })
            .collect()
    };
    let steps = steps_of(None);
    let phase_steps = [steps_of(Some(false)), steps_of(Some(true))];
    Ok(Compiled {
        source: source.clone(),
        graph: graph.clone(),
        plan,
        kernels,
        code: Code {
            module: Some(module),
            entry,
            kernel_fns,
        },
        steps,
        phase_steps,
        copies: Vec::new(),
        threads,
        _gemms: gemms.descs,
    })
}

impl Compiled {
    /// The optimized graph the kernels were made from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph as it was given to [`compile`] (before the passes).
    pub fn source_graph(&self) -> &Graph {
        &self.source
    }

    /// The kernels, in run order (`prep` kernels among them, at their nodes' places).
    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    /// The machine code of each kernel, in [`Compiled::kernels`] order.
    pub fn kernel_fns(&self) -> &[KernelFn] {
        &self.code.kernel_fns
    }

    /// The entry: every non-`prep` kernel over its whole range, in order, on one thread.
    pub fn entry(&self) -> EntryFn {
        self.code.entry
    }

    /// The memory plan: every value's place in the arena, and the arena's size.
    pub fn plan(&self) -> &plan::Plan {
        &self.plan
    }

    /// The non-`prep` kernels in run order, each with its slicing for [`Compiled::threads`].
    pub fn steps(&self) -> &Arc<[Step]> {
        &self.steps
    }

    /// The steps of a training graph's gradient phase (`false`) or update phase (`true`)
    /// ([`compile_training`]); an inference graph's are all in the first.
    pub fn phase_steps(&self, update: bool) -> &Arc<[Step]> {
        &self.phase_steps[usize::from(update)]
    }

    /// `(weight, update)` slots: after the update phase, each update's bytes are copied over
    /// its weight (the updates not planned in place).
    pub fn copies(&self) -> &[(plan::Slot, plan::Slot)] {
        &self.copies
    }

    /// The threads the schedule's slicing was made for (`JitOptions::threads`, resolved).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Whether some step is split, so that threads beyond the caller's pay off.
    pub fn splits(&self) -> bool {
        self.steps.iter().any(|s| s.parts > 1)
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.code.module.take() {
            // SAFETY: the only pointers into the code are the entry, the kernels' addresses and
            // the GEMM descriptions, handed out by `&self` and so not used past `self`'s life
            // (the runtime stops its workers before it drops the `Compiled` they ran).
            unsafe { m.free_memory() };
        }
    }
}
