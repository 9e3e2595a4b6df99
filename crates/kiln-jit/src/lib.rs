//! kiln's code generator: every forward op of the graph IR lowered to a Cranelift kernel, one
//! JIT module per compiled model, and one entry function that runs the kernels in order over
//! one arena — no per-op dispatch in Rust at run time.
//!
//! ```
//! use kiln_ir::builder::{Conv, Network};
//! use kiln_ir::{Tensor, Value};
//! use std::collections::HashMap;
//! let mut net = Network::new("tiny");
//! let x = net.input("input", [1, 1, 4, 4])?;
//! let y = net.named("output").conv2d(x, Conv::new(1, [3, 3]).padding(1).bias(false))?;
//! net.output(y)?;
//! let graph = net.finish()?;
//! let mut model = kiln_jit::compile(&graph, &kiln_jit::JitOptions::default()).unwrap();
//! let w = HashMap::from([("output.weight".to_string(), Tensor::full([1, 1, 3, 3], 1.0f32))]);
//! model.set_weights(&w).unwrap();
//! let inputs = HashMap::from([("input".to_string(), Value::F(Tensor::full([1, 1, 4, 4], 1.0f32)))]);
//! let out = model.run(&inputs).unwrap();
//! let y = out[0].1.as_f().unwrap();
//! assert_eq!(&y.data()[..4], &[4.0, 6.0, 6.0, 4.0]); // a 3×3 box sum with zero padding
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

pub mod codegen;
pub mod direct;
pub mod elementwise_kernels;
pub mod gemm;
pub mod gemm_simd;
pub mod gemm_train;
pub mod layout_kernels;
pub mod lower;
pub mod lower_reduce;
pub mod lower_train;
pub mod plan;
pub mod pool;
pub mod simd;
pub mod train_kernels;

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::I64;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};
use kiln_ir::{DType, Graph, LossKind, NodeId, Op, Tensor, TensorType, TrainOp, Value};
use pool::KernelFn;
use std::collections::HashMap;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum JitError {
    #[error("this CPU cannot run kiln's JIT: {0}")]
    UnsupportedHost(String),
    #[error("code generation failed: {0}")]
    Codegen(String),
    #[error("missing weight `{0}`")]
    MissingWeight(String),
    #[error("`{name}`: expected {expected}, got {got}")]
    WrongType {
        name: String,
        expected: TensorType,
        got: TensorType,
    },
    #[error("node `{node}`: the JIT has no lowering for `{op}` yet (run it on the interpreter)")]
    Unsupported { node: String, op: String },
    #[error("optimizing the graph: {0}")]
    Passes(#[from] kiln_ir::IrError),
    #[error("`{name}`: class id {id} at position {pos} is outside 0..{classes}")]
    BadClassId {
        name: String,
        id: i32,
        pos: usize,
        classes: usize,
    },
    /// The model is too big for `kiln_ir::limits` (its arena or its weights), or its memory
    /// could not be allocated.
    #[error("{0}")]
    TooBig(String),
    /// `run` before `set_weights` on a model that has weights (or `update_weights` before
    /// `set_weights`; a session's own weights changed before it has any).
    #[error("the model's weights are not set: call set_weights before run")]
    NoWeights,
    /// A weight named that the graph does not have.
    #[error("`{0}` is not a weight of the model")]
    UnknownWeight(String),
    /// A value named that is not a weight, input or output of the graph (or not f32).
    #[error("`{0}` is not an f32 weight, input or output of the model")]
    UnknownValue(String),
    /// A session run with a model that did not make it.
    #[error("the session belongs to another model")]
    ForeignSession,
    /// Output buffers that do not match the graph's outputs.
    #[error("{0}")]
    Outputs(String),
    /// The inputs do not fit the graph (`kiln_ir::feeds::check_inputs`).
    #[error(transparent)]
    Feed(#[from] kiln_ir::feeds::FeedError),
    /// A kernel found its data invalid at run time (the interpreter's error for the same node).
    #[error("node `{node}` ({op}): {message}")]
    Op {
        node: String,
        op: String,
        message: String,
    },
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
    /// activations and same-shape arithmetic, and the training kernels that have a Rust form
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
    /// Whether it computes a value of the weights alone (a folded batch norm's weights, say):
    /// such kernels run once, when the weights are loaded, not on every run.
    pub prep: bool,
    /// Whether it belongs to a training graph's update phase ([`compile_training`]).
    pub update: bool,
    /// Its Cranelift IR, when `keep_code` was set.
    pub clif: Option<String>,
    /// Its machine code, when `keep_code` was set.
    pub code: Option<Vec<u8>>,
}

/// The arena: `len` zeroed bytes, 64-byte aligned, allocated fallibly (a failed allocation is
/// a `JitError::TooBig`, never an abort) and lazily by the OS (`alloc_zeroed`).
struct ArenaBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: `ArenaBuf` owns its bytes like a `Box<[u8]>`; access goes through `&`/`&mut self`.
unsafe impl Send for ArenaBuf {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for ArenaBuf {}

impl ArenaBuf {
    /// `len` zero bytes (at least 64), or an error naming the size.
    fn new(len: usize) -> Result<ArenaBuf, JitError> {
        let len = len.max(64);
        let layout = std::alloc::Layout::from_size_align(len, 64)
            .map_err(|e| JitError::TooBig(format!("an arena of {len} bytes: {e}")))?;
        // SAFETY: the layout's size is at least 64.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(p)
            .ok_or_else(|| JitError::TooBig(format!("cannot allocate the model's arena of {len} bytes")))?;
        Ok(ArenaBuf { ptr, len })
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `len` initialized (zeroed) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ArenaBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 64).expect("checked in new");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// A graph compiled to native code for this CPU: the kernels, the memory plan, the worker
/// threads and (once set) the weights.
///
/// # Thread model
///
/// A `JitModel` is `Send + Sync`: the compiled code and the weights are shared and immutable
/// while it runs, so one `Arc<JitModel>` serves any number of threads at once, with no lock
/// around the model. Every run borrows its own execution state — a [`Session`]: the arena
/// that holds the run's values, its scratch and its status words. [`JitModel::run`] takes an
/// idle session from a small pool inside the model (making one when every session is busy)
/// and returns it afterwards; [`JitModel::run_in`] runs in a session the caller keeps.
///
/// Two kinds of threads are at work:
/// - **intra-op threads** ([`JitOptions::threads`]): workers started with the model that split
///   each kernel's parallel range. One run at a time uses them;
/// - **concurrent callers**: any number of threads calling `run` at the same moment. A run
///   that finds the workers busy with another caller's run computes on its own thread alone.
///
/// Either way the results are bit-for-bit the same: every output element is computed by
/// exactly one thread, in the same order, whatever the split.
///
/// Weights change only through `&mut self` ([`JitModel::set_weights`],
/// [`JitModel::update_weights`]), so never while a run is going on; a session reloads them
/// at its next run.
pub struct JitModel {
    /// Tells this model's sessions from another's (they share no plan).
    id: u64,
    /// The graph as given to `compile`.
    source: Graph,
    graph: Graph,
    plan: plan::Plan,
    code: Code,
    kernels: Vec<KernelInfo>,
    /// Worker threads, when the model runs on more than one thread; one run at a time.
    pool: Option<std::sync::Mutex<pool::Pool>>,
    /// The kernels in run order with their slicing, for the pool.
    steps: Arc<[pool::Step]>,
    /// The same, of a training graph's two phases (gradients, updates).
    phase_steps: [Arc<[pool::Step]>; 2],
    /// `(weight, update)` slots copied after the update phase ([`compile_training`]).
    copies: Vec<(plan::Slot, plan::Slot)>,
    /// The `gemm` kernels' driver descriptions, which their code points at.
    #[allow(clippy::vec_box)] // boxed: the code holds their addresses
    _gemms: Vec<Box<gemm::GemmDesc>>,
    /// The weights, once set.
    weights: Option<WeightImage>,
    /// Sessions not running now, for [`JitModel::run`].
    idle: std::sync::Mutex<Vec<Session>>,
}

/// The JIT module that owns the machine code, its entry and its kernels' addresses.
struct Code {
    module: Option<JITModule>,
    entry: unsafe extern "C" fn(*mut u8),
    kernel_fns: Vec<KernelFn>,
}

// SAFETY: after `finalize_definitions` the module is never touched again but to free its
// memory in `JitModel::drop` (through `&mut`); shared references only call the finalized
// code, which is immutable and reentrant (all its state lives in the arena it is given, or in
// thread-local packing buffers).
unsafe impl Sync for Code {}
// SAFETY: as above; the code is not tied to the thread that made it.
unsafe impl Send for Code {}

/// The weights as a model holds them: one tensor per weight of the graph, each with its
/// place in the arena, and an id that changes whenever they do.
struct WeightImage {
    id: u64,
    /// `(weight node, offset in the arena, tensor)`, in `graph.params()` order.
    tensors: Vec<(NodeId, usize, Tensor<f32>)>,
}

/// A fresh id for a model or a set of weights (never 0).
fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// One run's execution state for a [`JitModel`]: its own arena (the run's values, scratch and
/// status words, with a copy of the weights at their planned places). A session belongs to
/// the model that made it ([`JitModel::session`]); running it with another model is an error.
///
/// A session follows the model's weights (it copies them in at its next run when they have
/// changed) until it is given weights of its own ([`JitModel::own_weights`]); from then on
/// its weights are its own, changed by [`JitModel::write_weights`] and by the runs
/// themselves (a training graph's updates, [`JitModel::apply_updates`]).
pub struct Session {
    model: u64,
    arena: ArenaBuf,
    /// Which weights the arena holds: the id of the model's [`WeightImage`], 0 for none, or
    /// [`OWN_WEIGHTS`].
    loaded: u64,
    /// Whether the `prep` kernels have run over the weights the arena holds.
    prepared: bool,
}

/// [`Session::loaded`] of a session with weights of its own.
const OWN_WEIGHTS: u64 = u64::MAX;

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("arena_bytes", &self.arena.len)
            .finish()
    }
}

/// A borrowed input: its name and value.
pub type Feed<'a> = (&'a str, &'a Value<f32>);

/// Named output values, in the graph's output order.
pub type Outputs = Vec<(String, Value<f32>)>;

/// Compiles `graph` for the host CPU, after the graph passes of `options.passes`.
///
/// Nothing proportional to a tensor's size is allocated before the memory plan is checked
/// against `kiln_ir::limits::MAX_BYTES` (arena and weights); the arena is then allocated
/// fallibly, before code generation, so a model too big for this machine is an `Err`.
pub fn compile(graph: &Graph, options: &JitOptions) -> Result<JitModel, JitError> {
    compile_training(graph, options, &[])
}

/// [`compile`] for a training graph whose `updates` are `(weight, output)` pairs (the
/// optimizer's new value of each weight or state buffer, `kiln_autodiff::TrainingGraph::
/// updates`). The kernels run in two phases: first everything the updates do not depend on
/// (forward pass, loss, backward pass), then the updates and what depends on them
/// ([`JitModel::run_gradients`], [`JitModel::apply_updates`]). An update that reads its
/// inputs only at the index it writes, and whose weight no other update-phase kernel reads,
/// is planned at its weight's place: it writes the weight in place.
pub fn compile_training(
    graph: &Graph,
    options: &JitOptions,
    updates: &[(String, String)],
) -> Result<JitModel, JitError> {
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
    let mut plan = plan::checked(graph).map_err(JitError::TooBig)?;
    let phases = Phases::new(graph, &mut plan, updates)?;
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
                if gemms.descs[i].a_packed.is_some() {
                    // a `prep` kernel packs A (the weights) once they are set or changed
                    let name = format!("k{}_{}_pack_a", kernels.len(), node.name.replace('.', "_"));
                    let fid = codegen::declare_kernel(&mut module, &name)?;
                    let sig = codegen::kernel_signature(&module);
                    let d = &*gemms.descs[i];
                    let kept = codegen::define(&mut module, fid, sig, options.keep_code, |e, p, _| {
                        gemm::emit_driver_call(e, gemm::kiln_gemm_pack_a, d, [p[0], p[1], p[2]])
                    })?;
                    let (clif, code) = kept.map_or((None, None), |(t, c)| (Some(t), Some(c)));
                    kernels.push(KernelInfo {
                        node: id,
                        name,
                        extent: 1,
                        work: 0,
                        prep: true,
                        update: false,
                        clif,
                        code,
                    });
                    ids.push(fid);
                }
                Some(i)
            }
            Op::Dense => gemms.add_dense(&plan, id, &ins, threads, options.gemm_tier)?,
            _ => None,
        };
        let types: Vec<&TensorType> = ins.iter().map(|(_, t)| t).collect();
        for phase in 0..lower::phases(&node.op, &types, &node.ty) {
            let name = format!("k{}_{}", kernels.len(), node.name.replace('.', "_"));
            let fid = codegen::declare_kernel(&mut module, &name)?;
            let sig = codegen::kernel_signature(&module);
            let out = (plan.slots[&id], &node.ty);
            let scratch = plan.scratch.get(&id).copied();
            let status = plan.status.get(&id).copied();
            let mut extent = 0;
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
                extent,
                work: node.ty.shape.numel().max(
                    usize::try_from(kiln_ir::summary::op_flops(&node.op, &types, &node.ty) / FLOPS_PER_WORK)
                        .unwrap_or(usize::MAX),
                ),
                prep: constant.contains(&id),
                update: phases.tail.contains(&id),
                clif,
                code,
            });
            ids.push(fid);
        }
    }
    // after the packed weights (`Gemms::add`) took their places
    let arena = ArenaBuf::new(plan.size)?;
    let entry = define_entry(&mut module, &kernels, &ids)?;
    let mut m = finish(
        source, graph, plan, arena, module, entry, kernels, &ids, threads, gemms,
    )?;
    m.copies = phases.copies;
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

/// The two phases of a training graph's run, and where its updates write.
struct Phases {
    /// Every node in run order: a topological order with the update phase last.
    order: Vec<NodeId>,
    /// The update phase: the update nodes and everything that depends on one.
    tail: std::collections::HashSet<NodeId>,
    /// `(weight, update)` slots of the updates not planned in place, copied after the phase.
    copies: Vec<(plan::Slot, plan::Slot)>,
}

impl Phases {
    fn new(graph: &Graph, plan: &mut plan::Plan, updates: &[(String, String)]) -> Result<Phases, JitError> {
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
        let mut copies = Vec::new();
        for (w, u) in pairs {
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
                .all(|r| r == u || !tail.contains(&r) || depends_on(graph, u, r));
            if elementwise && alone && readers_first && !plan.fused.contains(&u) && node.ty.shape.numel() > 0
            {
                plan.slots.insert(u, ws);
            } else if ws.offset != us.offset {
                copies.push((ws, us));
            }
        }
        Ok(Phases { order, tail, copies })
    }
}

/// The fewest rows (batch) of a dense layer that runs on the GEMM driver: below it, the
/// direct kernel's dot products (weights streamed once per four rows) win. Measured on
/// ConvNeXt-T's layers (EPYC Zen 5, AVX-512): at 3136 and 784 rows the driver runs at 215–231
/// GFLOP/s against 121–137, at 196 rows 170 against 141–154, at 49 rows both 84–98; LeNet-5's
/// 64-row 400 → 120 layer runs at 220 on the direct kernel.
const DENSE_GEMM_ROWS: usize = 128;

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
        // two work items per thread: measured on ResNet-18 at 2 threads (AVX-512 tier) 38 ms with
        // one, 28.6–29.0 with two, 31.8 with three, 32.4–32.9 with four or eight (more items split
        // the rows, and every row block packs its own copy of B)
        let want = if threads > 1 { threads.saturating_mul(2) } else { 1 };
        let status = plan.status[&id];
        let mut desc = lower::gemm_desc(g, ins, plan.slots[&id], patches, kernel, want, status)
            .map_err(JitError::Codegen)?;
        // a convolution with too few output channels to fill a tile: the tier's direct kernel
        if rust.is_some()
            && let gemm::BArena::Patches {
                channels,
                geom,
                ref mut shifted,
                ..
            } = desc.b
            && let Some(sc) = gemm::SmallConv::new(tier.isa(), &geom, channels / g.groups.max(1), desc.mg)
        {
            desc.small = Some(sc);
            *shifted = None;
            desc.split(want);
        }
        let at = plan.size.next_multiple_of(64);
        if let Some(end) = desc.packed_a_bytes().and_then(|b| at.checked_add(b))
            && desc.small.is_none()
            && a_constant
            && end <= kiln_ir::limits::MAX_BYTES
        {
            plan.permanent = plan.permanent.saturating_add(end - plan.size);
            plan.size = end;
            desc.a_packed = Some(at);
        }
        // the Rust tier's epilogue where it has the activation, else one emitted for the node
        let rust_epilogue = rust
            .and(direct::kernels(tier.isa()))
            .and_then(|k| match g.activation {
                None => Some(k.epilogue[0]),
                Some(kiln_ir::Activation::Relu) => Some(k.epilogue[1]),
                _ => None,
            });
        let epilogue = if !(g.bias || g.residual || g.activation.is_some()) {
            None
        } else if let Some(f) = rust_epilogue {
            desc.epilogue = Some(f);
            None
        } else {
            let mut sig = module.make_signature();
            for _ in 0..6 {
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
    /// GEMM driver when it has at least [`DENSE_GEMM_ROWS`] rows and the tier has a Rust
    /// micro-kernel: `Y = X·Wᵀ` with X as A (packed per run), W read transposed as B and the
    /// bias per column in the Rust tier's epilogue; returns its index, or `None` where the
    /// direct kernels run it.
    fn add_dense(
        &mut self,
        plan: &plan::Plan,
        id: NodeId,
        ins: &[(plan::Slot, TensorType)],
        threads: usize,
        tier: gemm::Tier,
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
        if n < DENSE_GEMM_ROWS || kernel.check().is_err() {
            return Ok(None);
        }
        let bias = ins.get(2).map(|s| s.0.offset);
        let mut desc = gemm::GemmDesc {
            kernel,
            epilogue: bias.map(|_| k.epilogue_cols),
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
            status,
            small: None,
            bias_cols: true,
        };
        desc.split(if threads > 1 { threads.saturating_mul(2) } else { 1 });
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
                // SAFETY: defined in `add` with the `EpilogueFn` signature (six i64).
                d.epilogue = Some(unsafe { std::mem::transmute::<*const u8, gemm::EpilogueFn>(p) });
            }
        }
    }
}

/// The calling thread's CPU time in milliseconds (`CLOCK_THREAD_CPUTIME_ID`), or the time
/// since the first call where the OS gives no such clock: what the profiles time kernels in.
pub fn thread_cpu_ms() -> f64 {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `clock_gettime` writes the one `timespec` it is given.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6;
        }
    }
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
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
    arena: ArenaBuf,
    mut module: JITModule,
    entry: cranelift_module::FuncId,
    kernels: Vec<KernelInfo>,
    ids: &[cranelift_module::FuncId],
    threads: usize,
    mut gemms: Gemms,
) -> Result<JitModel, JitError> {
    module
        .finalize_definitions()
        .map_err(|e| JitError::Codegen(format!("finalizing: {e}")))?;
    gemms.link(&module);
    let ptr = module.get_finalized_function(entry);
    // SAFETY: `entry` was defined with the signature `fn(i64)` (SystemV, as `extern "C"`), and
    // reads and writes only the arena, whose size the plan fixed.
    let entry = unsafe { std::mem::transmute::<*const u8, unsafe extern "C" fn(*mut u8)>(ptr) };
    let kernel_fns: Vec<KernelFn> = ids
        .iter()
        .map(|&id| {
            let p = module.get_finalized_function(id);
            // SAFETY: every kernel was defined with `kernel_signature`: fn(i64, i64, i64).
            unsafe { std::mem::transmute::<*const u8, KernelFn>(p) }
        })
        .collect();
    // Split a kernel only when it is big enough; start threads only when some kernel is.
    let steps_of = |phase: Option<bool>| -> Arc<[pool::Step]> {
        kernels
            .iter()
            .zip(&kernel_fns)
            .filter(|(k, _)| !k.prep && phase.is_none_or(|p| k.update == p))
            .map(|(k, &f)| {
                let split =
                    threads > 1 && k.extent >= threads.saturating_mul(2) && k.work >= PARALLEL_MIN_WORK;
                pool::Step {
                    f,
                    extent: k.extent,
                    parts: if split { threads } else { 1 },
                }
            })
            .collect()
    };
    let steps = steps_of(None);
    let phase_steps = [steps_of(Some(false)), steps_of(Some(true))];
    // (a worker that cannot be started leaves its share to the others: `pool.rs`)
    let pool = steps
        .iter()
        .any(|s| s.parts > 1)
        .then(|| pool::Pool::new(threads));
    // the arena allocated before code generation becomes the model's first session
    let id = next_id();
    let first = Session {
        model: id,
        arena,
        loaded: 0,
        prepared: false,
    };
    Ok(JitModel {
        id,
        source: source.clone(),
        graph: graph.clone(),
        plan,
        code: Code {
            module: Some(module),
            entry,
            kernel_fns,
        },
        kernels,
        pool: pool.map(std::sync::Mutex::new),
        steps,
        phase_steps,
        copies: Vec::new(),
        _gemms: gemms.descs,
        weights: None,
        idle: std::sync::Mutex::new(vec![first]),
    })
}

impl JitModel {
    /// The optimized graph the kernels were made from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The graph as it was given to [`compile`] (before the passes).
    pub fn source_graph(&self) -> &Graph {
        &self.source
    }

    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    /// The threads a run uses, the caller's included (1 when no kernel is big enough to split).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| {
            p.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .threads()
        })
    }

    /// Arena size in bytes: the memory each session (each concurrent run) holds.
    pub fn arena_size(&self) -> usize {
        self.plan.size
    }

    /// The memory plan: every value's place in the arena.
    pub fn plan(&self) -> &plan::Plan {
        &self.plan
    }

    /// How many of a training graph's updates ([`compile_training`]) are copied over their
    /// weight after the update phase rather than written in place.
    pub fn copied_updates(&self) -> usize {
        self.copies.len()
    }

    /// Checks every weight (`param` and `buffer`) of the graph in `weights`, by name, against
    /// its type; the weights in `params()` order with their slots' offsets.
    fn checked_weights(
        &self,
        weights: &HashMap<String, Tensor<f32>>,
        all: bool,
    ) -> Result<Vec<(NodeId, usize, Tensor<f32>)>, JitError> {
        let params = self.graph.params();
        for name in weights.keys() {
            if !all && !params.iter().any(|&p| &self.graph.node(p).name == name) {
                return Err(JitError::UnknownWeight(name.clone()));
            }
        }
        let mut found = Vec::with_capacity(params.len());
        for &id in &params {
            let node = self.graph.node(id);
            let Some(t) = weights.get(&node.name) else {
                if all {
                    return Err(JitError::MissingWeight(node.name.clone()));
                }
                continue;
            };
            if t.shape() != &node.ty.shape || node.ty.dtype != DType::F32 {
                return Err(JitError::WrongType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    got: TensorType::f32(t.shape().clone()),
                });
            }
            found.push((id, self.plan.slots[&id].offset, t.clone()));
        }
        Ok(found)
    }

    /// Sets every weight (`param` and `buffer`) of the graph from `weights`, by name. Every
    /// weight is checked before any is taken; a tensor that is not a weight of the graph is
    /// ignored. Until this succeeds, `run` is an error (on a model that has weights).
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), JitError> {
        let tensors = self.checked_weights(weights, true)?;
        self.weights = Some(WeightImage {
            id: next_id(),
            tensors,
        });
        Ok(())
    }

    /// Replaces the weights named in `weights` (a subset; each must be a weight of the graph,
    /// of its type) and keeps the others. An error before the weights are set.
    pub fn update_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), JitError> {
        let new = self.checked_weights(weights, false)?;
        let image = self.weights.as_mut().ok_or(JitError::NoWeights)?;
        for (id, _, t) in new {
            if let Some(slot) = image.tensors.iter_mut().find(|(i, _, _)| *i == id) {
                slot.2 = t;
            }
        }
        image.id = next_id();
        Ok(())
    }

    /// The weights, by name (`None` before they are set).
    pub fn weights(&self) -> Option<HashMap<String, Tensor<f32>>> {
        let image = self.weights.as_ref()?;
        Some(
            image
                .tensors
                .iter()
                .map(|(id, _, t)| (self.graph.node(*id).name.clone(), t.clone()))
                .collect(),
        )
    }

    /// Whether the model can run: its weights are set, or it has none.
    pub fn has_weights(&self) -> bool {
        self.weights.is_some() || self.graph.params().is_empty()
    }

    /// A new session (an arena of [`JitModel::arena_size`] bytes) for [`JitModel::run_in`].
    pub fn session(&self) -> Result<Session, JitError> {
        Ok(Session {
            model: self.id,
            arena: ArenaBuf::new(self.plan.size)?,
            loaded: 0,
            prepared: false,
        })
    }

    /// Gives `session` weights of its own, `weights` (every weight of the graph, checked as by
    /// [`JitModel::set_weights`]): from now on the model's weights no longer reach it, and
    /// runs in it may change them in place.
    pub fn own_weights(
        &self,
        session: &mut Session,
        weights: &HashMap<String, Tensor<f32>>,
    ) -> Result<(), JitError> {
        self.check_session(session)?;
        let tensors = self.checked_weights(weights, true)?;
        for (id, _, t) in &tensors {
            write_f32(&mut session.arena, self.plan.slots[id], t.data());
        }
        session.loaded = OWN_WEIGHTS;
        session.prepared = false;
        Ok(())
    }

    /// Replaces the weights named in `weights` in a session with weights of its own.
    pub fn write_weights(
        &self,
        session: &mut Session,
        weights: &HashMap<String, Tensor<f32>>,
    ) -> Result<(), JitError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(JitError::NoWeights);
        }
        for (id, _, t) in self.checked_weights(weights, false)? {
            write_f32(&mut session.arena, self.plan.slots[&id], t.data());
        }
        session.prepared = false;
        Ok(())
    }

    /// The f32 value `name` (a weight, an input or an output of the graph) as `session`'s
    /// arena holds it now.
    pub fn read(&self, session: &Session, name: &str) -> Result<Tensor<f32>, JitError> {
        self.check_session(session)?;
        let id = self
            .graph
            .find(name)
            .filter(|id| {
                let node = self.graph.node(*id);
                node.ty.dtype == DType::F32
                    && (matches!(node.op, Op::Param { .. } | Op::Input(_))
                        || self.graph.outputs().contains(id))
            })
            .ok_or_else(|| JitError::UnknownValue(name.to_string()))?;
        let node = self.graph.node(id);
        let mut data = vec![0.0f32; node.ty.shape.numel()];
        read_f32(&session.arena, self.plan.slots[&id], &mut data);
        Ok(Tensor::new(node.ty.shape.clone(), data).expect("sized by the type"))
    }

    fn check_session(&self, session: &Session) -> Result<(), JitError> {
        if session.model != self.id {
            return Err(JitError::ForeignSession);
        }
        Ok(())
    }

    /// Makes `session` ready to run: the model's current weights in its arena (unless it has
    /// its own) and the `prep` kernels run over them.
    fn ready(&self, session: &mut Session) -> Result<(), JitError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            match &self.weights {
                Some(w) if session.loaded != w.id => {
                    for (id, _, t) in &w.tensors {
                        write_f32(&mut session.arena, self.plan.slots[id], t.data());
                    }
                    session.loaded = w.id;
                    session.prepared = false;
                }
                Some(_) => {}
                None if self.graph.params().is_empty() => {}
                None => return Err(JitError::NoWeights),
            }
        }
        if !session.prepared {
            self.reset_status(&mut session.arena);
            let arena = session.arena.as_mut_ptr();
            for (k, f) in self
                .kernels
                .iter()
                .zip(&self.code.kernel_fns)
                .filter(|(k, _)| k.prep)
            {
                // SAFETY: as in `execute` (`ARENA_ACCESS`): the kernel's full range `[0, extent)`
                // over an arena of the size it was planned for, exclusively borrowed.
                unsafe { f(arena, 0, k.extent as i64) };
            }
            self.check_status(&session.arena)?;
            session.prepared = true;
        }
        Ok(())
    }

    /// Sets every status word to `STATUS_OK` (no kernel has failed).
    fn reset_status(&self, arena: &mut ArenaBuf) {
        let all = arena.bytes_mut();
        for &off in self.plan.status.values() {
            all[off..off + 8].copy_from_slice(&plan::STATUS_OK.to_ne_bytes());
        }
    }

    /// The error of the first node (in run order) whose kernel reported a failure.
    fn check_status(&self, arena: &ArenaBuf) -> Result<(), JitError> {
        let all = arena.bytes();
        let word = |off: usize| u64::from_ne_bytes(all[off..off + 8].try_into().expect("8 bytes"));
        // the common case, without ordering the nodes
        if self.plan.status.values().all(|&off| word(off) == plan::STATUS_OK) {
            return Ok(());
        }
        for id in self.graph.topo_order() {
            let Some(&off) = self.plan.status.get(&id) else {
                continue;
            };
            let word = word(off);
            if word == plan::STATUS_OK {
                continue;
            }
            let node = self.graph.node(id);
            let message = match &node.op {
                // the lowest failing position and its index (`lower::report_bad_index`)
                Op::Train(TrainOp::ScatterIds { size }) => {
                    let (pos, bad) = (word >> 32, word as u32 as i32);
                    let plane = size[0] * size[1];
                    format!("id {bad} at position {pos} is outside the plane of {plane}")
                }
                Op::Loss(_) | Op::Train(TrainOp::LossGrad(_)) => {
                    let (n, bad) = (word >> 32, word as u32 as i32);
                    let pred = self.graph.inputs(id)[0];
                    let classes = self.graph.node(pred).ty.dims()[1];
                    format!("class id {bad} of batch element {n} is out of range 0..{classes}")
                }
                _ => "the GEMM driver failed (an internal error; see the panic message above)".into(),
            };
            return Err(JitError::Op {
                node: node.name.clone(),
                op: node.op.name().into(),
                message,
            });
        }
        Ok(())
    }

    /// Checks `inputs` (every graph input by name, each of its type, class ids in range) and
    /// returns each input node with its value, in `graph_inputs()` order.
    fn checked_inputs<'a>(&self, inputs: &[Feed<'a>]) -> Result<Vec<(NodeId, &'a Value<f32>)>, JitError> {
        let ids = kiln_ir::feeds::check_inputs(&self.graph, inputs)?;
        for &(id, v) in &ids {
            if let Value::I(t) = v {
                self.check_class_ids(id, &self.graph.node(id).name, t)?;
            }
        }
        Ok(ids)
    }

    /// Runs the model on `inputs` (every graph input, by name) and returns the outputs in the
    /// graph's output order. Callable from any number of threads at once (see the type's
    /// thread model); each call takes an idle session of the model or makes one.
    pub fn run(&self, inputs: &HashMap<String, Value<f32>>) -> Result<Outputs, JitError> {
        let feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut outputs = self.new_outputs();
        self.run_into(&feeds, &mut outputs)?;
        Ok(self.name_outputs(outputs))
    }

    /// Like [`JitModel::run`], writing the outputs into `outputs` (one value per graph output,
    /// in order, each of the output's type: [`JitModel::new_outputs`] makes them), so that
    /// repeated runs allocate nothing. Each input is copied into the arena with one `memcpy`,
    /// and each output out of it with one.
    pub fn run_into(&self, inputs: &[Feed<'_>], outputs: &mut [Value<f32>]) -> Result<(), JitError> {
        let mut session = self.take_session()?;
        let r = self.run_in(&mut session, inputs, outputs);
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        r
    }

    /// [`JitModel::run_into`] in a session of the caller's (see [`Session`]).
    pub fn run_in(
        &self,
        session: &mut Session,
        inputs: &[Feed<'_>],
        outputs: &mut [Value<f32>],
    ) -> Result<(), JitError> {
        self.check_outputs(outputs)?;
        self.run_in_place(session, inputs)?;
        for (&o, v) in self.graph.outputs().iter().zip(outputs.iter_mut()) {
            let s = self.plan.slots[&o];
            match v {
                Value::F(t) => read_f32(&session.arena, s, t.data_mut()),
                Value::I(t) => read_i32(&session.arena, s, t.data_mut()),
            }
        }
        Ok(())
    }

    /// Runs the model in `session` and leaves the results there: read what is needed with
    /// [`JitModel::read`] (a training step reads its loss and leaves the rest in place).
    pub fn run_in_place(&self, session: &mut Session, inputs: &[Feed<'_>]) -> Result<(), JitError> {
        self.check_session(session)?;
        let feeds = self.checked_inputs(inputs)?;
        self.ready(session)?;
        self.feed(session, &feeds);
        self.execute(session)
    }

    /// Zeroed values of the graph's outputs' types, in order: buffers for
    /// [`JitModel::run_into`].
    pub fn new_outputs(&self) -> Vec<Value<f32>> {
        self.graph
            .outputs()
            .iter()
            .map(|&o| {
                let ty = &self.graph.node(o).ty;
                match ty.dtype {
                    DType::F32 => Value::F(Tensor::full(ty.shape.clone(), 0.0f32)),
                    DType::I32 => Value::I(Tensor::full(ty.shape.clone(), 0i32)),
                }
            })
            .collect()
    }

    /// `outputs` with the graph's output names.
    fn name_outputs(&self, outputs: Vec<Value<f32>>) -> Outputs {
        self.graph
            .outputs()
            .iter()
            .map(|&o| self.graph.node(o).name.clone())
            .zip(outputs)
            .collect()
    }

    fn check_outputs(&self, outputs: &[Value<f32>]) -> Result<(), JitError> {
        let outs = self.graph.outputs();
        if outputs.len() != outs.len() {
            return Err(JitError::Outputs(format!(
                "{} output buffers for the model's {} outputs",
                outputs.len(),
                outs.len()
            )));
        }
        for (&o, v) in outs.iter().zip(outputs) {
            let node = self.graph.node(o);
            if v.ty() != node.ty {
                return Err(JitError::WrongType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    got: v.ty(),
                });
            }
        }
        Ok(())
    }

    /// Copies the (checked) inputs into the session's arena, one `memcpy` each.
    fn feed(&self, session: &mut Session, feeds: &[(NodeId, &Value<f32>)]) {
        for &(id, v) in feeds {
            let s = self.plan.slots[&id];
            match v {
                Value::F(t) => write_f32(&mut session.arena, s, t.data()),
                Value::I(t) => write_i32(&mut session.arena, s, t.data()),
            }
        }
    }

    /// An idle session, or a new one when every one is busy.
    fn take_session(&self) -> Result<Session, JitError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        match idle {
            Some(s) => Ok(s),
            None => self.session(),
        }
    }

    /// Runs every (non-`prep`) kernel over the session's arena, on the workers when they are
    /// free, else on this thread; then reads the status words.
    fn execute(&self, session: &mut Session) -> Result<(), JitError> {
        self.reset_status(&mut session.arena);
        // ARENA_ACCESS — why the kernels stay inside the arena: every session's arena is
        // `plan.size` bytes (`ArenaBuf::new`), and a session only runs with the model that
        // made it (`check_session`); `plan::checked` placed every value, scratch region and
        // status word at `offset + bytes ≤ plan.size ≤ MAX_BYTES` with checked arithmetic;
        // every value has ≤ 2³¹ elements and every window fits its padded input
        // (`kiln_ir::limits`, checked by shape inference), so the kernels' `i64` index
        // arithmetic over `[begin, end) ⊆ [0, extent)` neither overflows nor leaves a value's
        // slot (`lower.rs`); indices read from memory are range-checked before use; the GEMM
        // driver checks its items and tile. The inputs were checked to have their slots'
        // types before they were copied in. An update planned at its weight's slot
        // (`compile_training`) has the weight's type, so its kernel stays inside that slot.
        // Concurrent runs use distinct sessions, so no two runs share an arena; the code and
        // the GEMM descriptions are only read.
        let arena = session.arena.as_mut_ptr();
        let pool = self.pool.as_ref().and_then(|p| p.try_lock().ok());
        if let Some(pool) = pool {
            // SAFETY: ARENA_ACCESS; the arena is exclusively borrowed, and the pool returns
            // only when every thread has finished (threads write disjoint parts of a kernel's
            // output, with a barrier between kernels).
            unsafe { pool.run(arena, &self.steps) };
        } else {
            // SAFETY: ARENA_ACCESS; the entry runs every kernel over its full range, in order,
            // on this thread, and the arena is exclusively borrowed for the call.
            unsafe { (self.code.entry)(arena) };
        }
        if !self.phase_steps[1].is_empty() {
            // the updates wrote the weights: the prep kernels (packed weights) run again
            session.prepared = false;
        }
        self.check_status(&session.arena)
    }

    /// Runs the kernels of one phase (`update`: the update phase) over the session's arena,
    /// as `execute` does (ARENA_ACCESS).
    fn execute_phase(&self, session: &mut Session, update: bool) -> Result<(), JitError> {
        self.reset_status(&mut session.arena);
        let steps = &self.phase_steps[usize::from(update)];
        let arena = session.arena.as_mut_ptr();
        let pool = self.pool.as_ref().and_then(|p| p.try_lock().ok());
        if let Some(pool) = pool {
            // SAFETY: as in `execute` (ARENA_ACCESS): a subset of the run's kernels, in run
            // order, that depends only on values the arena already holds.
            unsafe { pool.run(arena, steps) };
        } else {
            for s in steps.iter() {
                // SAFETY: as in `execute` (ARENA_ACCESS): a kernel's full range over the arena.
                unsafe { (s.f)(arena, 0, s.extent as i64) };
            }
        }
        self.check_status(&session.arena)
    }

    /// The first phase of a training graph's run ([`compile_training`]) in a session with
    /// weights of its own: everything but the updates (forward, loss, gradients). The
    /// weights are not changed; [`JitModel::read`] reads the loss and the gradients.
    pub fn run_gradients(&self, session: &mut Session, inputs: &[Feed<'_>]) -> Result<(), JitError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(JitError::NoWeights);
        }
        let feeds = self.checked_inputs(inputs)?;
        self.ready(session)?;
        self.feed(session, &feeds);
        self.execute_phase(session, false)
    }

    /// The second phase, after [`JitModel::run_gradients`]: the updates write the new weights
    /// and optimizer state (in place where they were planned there, else copied over).
    pub fn apply_updates(&self, session: &mut Session) -> Result<(), JitError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(JitError::NoWeights);
        }
        session.prepared = false;
        self.execute_phase(session, true)?;
        let bytes = session.arena.bytes_mut();
        for &(ws, us) in &self.copies {
            // both slots lie inside the arena (ARENA_ACCESS) and two values' slots do not overlap
            bytes.copy_within(us.offset..us.offset + us.len * 4, ws.offset);
        }
        Ok(())
    }

    /// Runs the model like [`JitModel::run`], one kernel at a time on the calling thread, and
    /// returns each kernel's time in milliseconds (in `kernels()` order) with the outputs: the
    /// thread's CPU time where the OS gives it ([`thread_cpu_ms`]), so that on a shared machine
    /// the time other jobs take the core away is not counted against the kernel it interrupts.
    pub fn run_profiled(
        &self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<(Vec<f64>, Outputs), JitError> {
        let feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut outputs = self.new_outputs();
        let mut session = self.take_session()?;
        // feeds the inputs (and warms the caches)
        self.run_in(&mut session, &feeds, &mut outputs)?;
        self.reset_status(&mut session.arena);
        let arena = session.arena.as_mut_ptr();
        let mut times = Vec::with_capacity(self.kernels.len());
        for (k, f) in self.kernels.iter().zip(&self.code.kernel_fns) {
            if k.prep {
                times.push(0.0);
                continue;
            }
            let t = thread_cpu_ms();
            // SAFETY: as in `execute` (`ARENA_ACCESS`): the full range of a kernel over the
            // session's arena.
            unsafe { f(arena, 0, k.extent as i64) };
            times.push(thread_cpu_ms() - t);
        }
        self.check_status(&session.arena)?;
        for (&o, v) in self.graph.outputs().iter().zip(outputs.iter_mut()) {
            let s = self.plan.slots[&o];
            match v {
                Value::F(t) => read_f32(&session.arena, s, t.data_mut()),
                Value::I(t) => read_i32(&session.arena, s, t.data_mut()),
            }
        }
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        Ok((times, self.name_outputs(outputs)))
    }

    /// Each `prep` kernel's time in milliseconds, the calling thread's CPU time as in
    /// [`JitModel::run_profiled`] (in `kernels()` order, 0 for the others):
    /// the work the model does once per set of weights, not on every run. The kernels run
    /// once more, one at a time, over a session's weights (their values are permanent in the
    /// arena and computed from the weights alone, so running them again changes nothing).
    pub fn profile_prep(&self) -> Result<Vec<f64>, JitError> {
        let mut session = self.take_session()?;
        self.ready(&mut session)?;
        self.reset_status(&mut session.arena);
        let arena = session.arena.as_mut_ptr();
        let mut times = vec![0.0; self.kernels.len()];
        for ((k, f), ms) in self.kernels.iter().zip(&self.code.kernel_fns).zip(&mut times) {
            if k.prep {
                let t = thread_cpu_ms();
                // SAFETY: as in `ready` (`ARENA_ACCESS`): a kernel's full range over the
                // session's arena, exclusively borrowed.
                unsafe { f(arena, 0, k.extent as i64) };
                *ms = thread_cpu_ms() - t;
            }
        }
        self.check_status(&session.arena)?;
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        Ok(times)
    }

    /// Class ids fed to a loss must index a class.
    fn check_class_ids(&self, id: NodeId, name: &str, t: &Tensor<i32>) -> Result<(), JitError> {
        for user in self.graph.users(id) {
            if let Op::Loss(LossKind::CrossEntropy | LossKind::Nll)
            | Op::Train(TrainOp::LossGrad(LossKind::CrossEntropy | LossKind::Nll)) =
                self.graph.node(user).op
            {
                let pred = self.graph.inputs(user)[0];
                let classes = self.graph.node(pred).ty.dims()[1];
                if let Some((pos, &bad)) = t
                    .data()
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !(0..classes as i64).contains(&i64::from(**c)))
                {
                    return Err(JitError::BadClassId {
                        name: name.to_string(),
                        id: bad,
                        pos,
                        classes,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The bytes of a slot (`len` 4-byte elements at `offset`): inside the arena, because the plan
/// placed every slot there (`plan::checked`) and the arena is the plan's size.
fn slot_bytes(arena: &ArenaBuf, s: plan::Slot) -> &[u8] {
    &arena.bytes()[s.offset..s.offset + s.len * 4]
}

fn slot_bytes_mut(arena: &mut ArenaBuf, s: plan::Slot) -> &mut [u8] {
    &mut arena.bytes_mut()[s.offset..s.offset + s.len * 4]
}

/// `src` into slot `s` (of `src.len()` elements), one `memcpy`.
fn write_f32(arena: &mut ArenaBuf, s: plan::Slot, src: &[f32]) {
    let dst = slot_bytes_mut(arena, s);
    // SAFETY: f32 has no padding and any alignment of u8 works; the slice covers `src`.
    let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
    dst.copy_from_slice(src);
}

fn write_i32(arena: &mut ArenaBuf, s: plan::Slot, src: &[i32]) {
    let dst = slot_bytes_mut(arena, s);
    // SAFETY: as in `write_f32`.
    let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
    dst.copy_from_slice(src);
}

/// Slot `s` into `dst` (of the slot's length), one `memcpy`.
fn read_f32(arena: &ArenaBuf, s: plan::Slot, dst: &mut [f32]) {
    let src = slot_bytes(arena, s);
    // SAFETY: every bit pattern is an f32; the slice covers `dst`, exclusively borrowed.
    let dst =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
    dst.copy_from_slice(src);
}

fn read_i32(arena: &ArenaBuf, s: plan::Slot, dst: &mut [i32]) {
    let src = slot_bytes(arena, s);
    // SAFETY: as in `read_f32`.
    let dst =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
    dst.copy_from_slice(src);
}

impl Drop for JitModel {
    fn drop(&mut self) {
        drop(self.pool.take()); // join the workers before their code is unmapped
        if let Some(m) = self.code.module.take() {
            // SAFETY: the only pointers into the code are `entry`, `kernel_fns`, `steps` and the
            // GEMM descriptions, which die with `self`; no run is going on (`&mut self`).
            unsafe { m.free_memory() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arena the system cannot give is an error, not an abort.
    #[test]
    fn an_arena_that_cannot_be_allocated_is_an_error() {
        let e = ArenaBuf::new(1 << 62).err().expect("no 4 EiB here").to_string();
        assert_eq!(
            e,
            "cannot allocate the model's arena of 4611686018427387904 bytes"
        );
        let a = ArenaBuf::new(100).unwrap();
        assert_eq!(a.bytes(), &[0u8; 100][..]);
        assert_eq!(ArenaBuf::new(0).unwrap().bytes().len(), 64);
    }
}
