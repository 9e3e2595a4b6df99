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
pub mod direct_avx512;
pub mod gemm;
pub mod gemm_avx512;
pub mod lower;
pub mod lower_reduce;
pub mod lower_train;
pub mod plan;
pub mod pool;

use cranelift_codegen::ir::InstBuilder;
use cranelift_codegen::ir::types::I64;
use cranelift_jit::JITModule;
use cranelift_module::{Linkage, Module};
use kiln_ir::{DType, Graph, LossKind, NodeId, Op, Tensor, TensorType, Value};
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
    #[error("missing input `{0}`")]
    MissingInput(String),
    #[error("`{0}` is not an input of the model (its inputs: {1})")]
    UnknownInput(String, String),
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
    /// `run` before `set_weights` on a model that has weights.
    #[error("the model's weights are not set: call set_weights before run")]
    NoWeights,
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
    /// The kernel tier of the GEMM micro-kernel, pooling, depthwise convolutions and dense
    /// layers (`Auto`: AVX-512 where the CPU has it, else Cranelift's portable `f32x4` code).
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

/// Below this many output elements a kernel is not split across threads.
const PARALLEL_MIN_WORK: usize = 16 * 1024;

/// One compiled kernel.
#[derive(Debug, Clone)]
pub struct KernelInfo {
    pub node: NodeId,
    pub name: String,
    /// The size of its outermost parallel loop.
    pub extent: usize,
    /// Elements of the node's output, a rough measure of the kernel's work.
    pub work: usize,
    /// Whether it computes a value of the weights alone (a folded batch norm's weights, say):
    /// such kernels run once, when the weights are loaded, not on every run.
    pub prep: bool,
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

/// A graph compiled to native code, with its arena.
pub struct JitModel {
    graph: Graph,
    plan: plan::Plan,
    module: Option<JITModule>,
    entry: unsafe extern "C" fn(*mut u8),
    kernels: Vec<KernelInfo>,
    kernel_fns: Vec<KernelFn>,
    arena: ArenaBuf,
    /// Worker threads, when the model runs on more than one thread.
    pool: Option<pool::Pool>,
    /// The kernels in run order with their slicing, for the pool.
    steps: Arc<[pool::Step]>,
    /// The `gemm` kernels' driver descriptions, which their code points at.
    #[allow(clippy::vec_box)] // boxed: the code holds their addresses
    _gemms: Vec<Box<gemm::GemmDesc>>,
    /// Whether the `prep` kernels have run since the weights last changed.
    prepared: bool,
    /// Whether `set_weights` has loaded every weight (a model without weights needs none).
    weights_set: bool,
}

/// Named output values, in the graph's output order.
pub type Outputs = Vec<(String, Value<f32>)>;

/// Compiles `graph` for the host CPU, after the graph passes of `options.passes`.
///
/// Nothing proportional to a tensor's size is allocated before the memory plan is checked
/// against `kiln_ir::limits::MAX_BYTES` (arena and weights); the arena is then allocated
/// fallibly, before code generation, so a model too big for this machine is an `Err`.
pub fn compile(graph: &Graph, options: &JitOptions) -> Result<JitModel, JitError> {
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
    let plan = plan::checked(graph).map_err(JitError::TooBig)?;
    let arena = ArenaBuf::new(plan.size)?;
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
    for id in graph.topo_order() {
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
                Some(gemms.add(&mut module, graph, &plan, id, g, &ins, threads, options.gemm_tier)?)
            }
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
                work: node.ty.shape.numel(),
                prep: constant.contains(&id),
                clif,
                code,
            });
            ids.push(fid);
        }
    }
    let entry = define_entry(&mut module, &kernels, &ids)?;
    finish(graph, plan, arena, module, entry, kernels, &ids, threads, gemms)
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
    /// Describes the `gemm` node `id` and defines its epilogue; returns its index.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        module: &mut JITModule,
        graph: &Graph,
        plan: &plan::Plan,
        id: NodeId,
        g: &kiln_ir::Gemm,
        ins: &[(plan::Slot, TensorType)],
        threads: usize,
        tier: gemm::Tier,
    ) -> Result<usize, JitError> {
        let kernel = match tier.avx512() {
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
        let desc = lower::gemm_desc(g, ins, plan.slots[&id], patches, kernel, want, status)
            .map_err(JitError::Codegen)?;
        let epilogue = if g.bias || g.residual || g.activation.is_some() {
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
        } else {
            None
        };
        self.on_cranelift.push(tier.avx512().is_none());
        self.descs.push(Box::new(desc));
        self.epilogues.push(epilogue);
        Ok(self.descs.len() - 1)
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
            d.epilogue = e.map(|id| {
                let p = module.get_finalized_function(id);
                // SAFETY: defined in `add` with the `EpilogueFn` signature (six i64).
                unsafe { std::mem::transmute::<*const u8, gemm::EpilogueFn>(p) }
            });
        }
    }
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
    let steps: Arc<[pool::Step]> = kernels
        .iter()
        .zip(&kernel_fns)
        .filter(|(k, _)| !k.prep)
        .map(|(k, &f)| {
            let split = threads > 1 && k.extent >= threads.saturating_mul(2) && k.work >= PARALLEL_MIN_WORK;
            pool::Step {
                f,
                extent: k.extent,
                parts: if split { threads } else { 1 },
            }
        })
        .collect();
    // (a worker that cannot be started leaves its share to the others: `pool.rs`)
    let pool = steps
        .iter()
        .any(|s| s.parts > 1)
        .then(|| pool::Pool::new(threads));
    Ok(JitModel {
        graph: graph.clone(),
        plan,
        module: Some(module),
        entry,
        kernels,
        kernel_fns,
        arena,
        pool,
        steps,
        _gemms: gemms.descs,
        prepared: false,
        weights_set: false,
    })
}

impl JitModel {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn kernels(&self) -> &[KernelInfo] {
        &self.kernels
    }

    /// Arena size in bytes.
    pub fn arena_size(&self) -> usize {
        self.plan.size
    }

    /// The memory plan: every value's place in the arena.
    pub fn plan(&self) -> &plan::Plan {
        &self.plan
    }

    // The plan's slots lie inside the arena (`plan::plan` checks every offset + size against
    // its total, which is the arena's length), so these slices never go out of range.
    fn bytes_mut(&mut self, id: NodeId) -> &mut [u8] {
        let s = self.plan.slots[&id];
        &mut self.arena.bytes_mut()[s.offset..s.offset + s.len * 4]
    }

    fn bytes(&self, id: NodeId) -> &[u8] {
        let s = self.plan.slots[&id];
        &self.arena.bytes()[s.offset..s.offset + s.len * 4]
    }

    /// Loads every weight (`param` and `buffer`) of the graph from `weights`, by name. Every
    /// weight is checked before any is written; until this succeeds, `run` is an error.
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), JitError> {
        let params = self.graph.params();
        let mut found = Vec::with_capacity(params.len());
        for &id in &params {
            let node = self.graph.node(id);
            let t = weights
                .get(&node.name)
                .ok_or_else(|| JitError::MissingWeight(node.name.clone()))?;
            if t.shape() != &node.ty.shape || t.data().len() != node.ty.shape.numel() {
                return Err(JitError::WrongType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    got: TensorType::f32(t.shape().clone()),
                });
            }
            found.push((id, t));
        }
        self.weights_set = false;
        for (id, t) in found {
            // straight into the arena: no copy of the weights on the side
            for (dst, v) in self.bytes_mut(id).chunks_exact_mut(4).zip(t.data()) {
                dst.copy_from_slice(&v.to_ne_bytes());
            }
        }
        self.prepare()?;
        self.weights_set = true;
        Ok(())
    }

    /// Runs the kernels of values computed from the weights alone.
    fn prepare(&mut self) -> Result<(), JitError> {
        self.prepared = false;
        self.reset_status();
        let arena = self.arena.as_mut_ptr();
        for (k, f) in self.kernels.iter().zip(&self.kernel_fns).filter(|(k, _)| k.prep) {
            // SAFETY: as in `run` (`ARENA_ACCESS`): the kernel's full range `[0, extent)` over
            // the arena it was planned for.
            unsafe { f(arena, 0, k.extent as i64) };
        }
        self.check_status()?;
        self.prepared = true;
        Ok(())
    }

    /// Sets every status word to `STATUS_OK` (no kernel has failed).
    fn reset_status(&mut self) {
        let words: Vec<usize> = self.plan.status.values().copied().collect();
        let all = self.arena.bytes_mut();
        for off in words {
            all[off..off + 8].copy_from_slice(&plan::STATUS_OK.to_ne_bytes());
        }
    }

    /// The error of the first node (in run order) whose kernel reported a failure.
    fn check_status(&self) -> Result<(), JitError> {
        let all = self.arena.bytes();
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
                Op::ScatterIds { size } => {
                    let (pos, bad) = (word >> 32, word as u32 as i32);
                    let plane = size[0] * size[1];
                    format!("id {bad} at position {pos} is outside the plane of {plane}")
                }
                Op::Loss(_) | Op::LossGrad(_) => {
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

    /// Runs the model on `inputs` (every graph input, by name) and returns the outputs in the
    /// graph's output order.
    pub fn run(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<Vec<(String, Value<f32>)>, JitError> {
        let graph_inputs = self.graph.graph_inputs();
        for name in inputs.keys() {
            if !graph_inputs.iter().any(|&i| &self.graph.node(i).name == name) {
                let names: Vec<&str> = graph_inputs
                    .iter()
                    .map(|&i| self.graph.node(i).name.as_str())
                    .collect();
                return Err(JitError::UnknownInput(name.clone(), names.join(", ")));
            }
        }
        for &id in &graph_inputs {
            let node = self.graph.node(id).clone();
            let v = inputs
                .get(&node.name)
                .ok_or_else(|| JitError::MissingInput(node.name.clone()))?;
            if v.ty() != node.ty {
                return Err(JitError::WrongType {
                    name: node.name,
                    expected: node.ty,
                    got: v.ty(),
                });
            }
            if let Value::I(t) = v {
                self.check_class_ids(id, &node.name, t)?;
            }
        }
        if !self.weights_set && !self.graph.params().is_empty() {
            return Err(JitError::NoWeights);
        }
        for &id in &graph_inputs {
            let v = &inputs[&self.graph.node(id).name];
            let dst = self.bytes_mut(id).chunks_exact_mut(4);
            // straight into the arena (types checked above: the sizes agree)
            match v {
                Value::F(t) => dst
                    .zip(t.data())
                    .for_each(|(d, x)| d.copy_from_slice(&x.to_ne_bytes())),
                Value::I(t) => dst
                    .zip(t.data())
                    .for_each(|(d, x)| d.copy_from_slice(&x.to_ne_bytes())),
            }
        }
        if !self.prepared {
            self.prepare()?;
        }
        self.reset_status();
        // ARENA_ACCESS — why the kernels stay inside the arena: it is `plan.size` bytes
        // (`ArenaBuf::new`); `plan::checked` placed every value, scratch region and status word
        // at `offset + bytes ≤ plan.size ≤ MAX_BYTES` with checked arithmetic; every value has
        // ≤ 2³¹ elements and every window fits its padded input (`kiln_ir::limits`, checked by
        // shape inference), so the kernels' `i64` index arithmetic over `[begin, end) ⊆
        // [0, extent)` neither overflows nor leaves a value's slot (`lower.rs`); indices read
        // from memory are range-checked before use; the GEMM driver checks its items and tile.
        // The inputs were checked above to have their slots' types.
        let arena = self.arena.as_mut_ptr();
        if let Some(pool) = &self.pool {
            // SAFETY: ARENA_ACCESS; the arena is exclusively borrowed, and the pool returns
            // only when every thread has finished (threads write disjoint parts of a kernel's
            // output, with a barrier between kernels).
            unsafe { pool.run(arena, &self.steps) };
        } else {
            // SAFETY: ARENA_ACCESS; the entry runs every kernel over its full range, in order,
            // on this thread, and the arena is exclusively borrowed for the call.
            unsafe { (self.entry)(arena) };
        }
        self.check_status()?;
        Ok(self.read_outputs())
    }

    /// Runs the model like [`JitModel::run`], one kernel at a time, and returns each kernel's
    /// wall time in milliseconds (in `kernels()` order) with the outputs.
    pub fn run_profiled(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<(Vec<f64>, Outputs), JitError> {
        self.run(inputs)?; // feeds the inputs (and warms the caches)
        self.reset_status();
        let arena = self.arena.as_mut_ptr();
        let mut times = Vec::with_capacity(self.kernels.len());
        for (k, f) in self.kernels.iter().zip(&self.kernel_fns) {
            if k.prep {
                times.push(0.0);
                continue;
            }
            let t = std::time::Instant::now();
            // SAFETY: as in `run` (`ARENA_ACCESS`): the full range of a kernel over the arena.
            unsafe { f(arena, 0, k.extent as i64) };
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        self.check_status()?;
        Ok((times, self.read_outputs()))
    }

    fn read_outputs(&self) -> Vec<(String, Value<f32>)> {
        self.graph
            .outputs()
            .iter()
            .map(|&o| {
                let node = self.graph.node(o);
                let b = self.bytes(o);
                let v = match node.ty.dtype {
                    DType::F32 => Value::F(
                        Tensor::new(
                            node.ty.shape.clone(),
                            b.chunks_exact(4)
                                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                                .collect(),
                        )
                        .expect("slot sized by its type"),
                    ),
                    DType::I32 => Value::I(
                        Tensor::new(
                            node.ty.shape.clone(),
                            b.chunks_exact(4)
                                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                                .collect(),
                        )
                        .expect("slot sized by its type"),
                    ),
                };
                (node.name.clone(), v)
            })
            .collect()
    }

    /// Class ids fed to a loss must index a class.
    fn check_class_ids(&self, id: NodeId, name: &str, t: &Tensor<i32>) -> Result<(), JitError> {
        for user in self.graph.users(id) {
            if let Op::Loss(LossKind::CrossEntropy | LossKind::Nll)
            | Op::LossGrad(LossKind::CrossEntropy | LossKind::Nll) = self.graph.node(user).op
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

impl Drop for JitModel {
    fn drop(&mut self) {
        drop(self.pool.take()); // join the workers before their code is unmapped
        if let Some(m) = self.module.take() {
            // SAFETY: the only pointer into the code is `entry`, which dies with `self`.
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
