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
pub mod gemm;
pub mod gemm_avx512;
pub mod lower;
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
    /// The GEMM micro-kernel tier (`Auto`: AVX-512 where the CPU has it, else Cranelift).
    pub gemm_tier: gemm::Tier,
    /// Threads that run the model: each kernel's parallel range is split among them. `0`
    /// means one per available core. With 1 thread the results are bit-for-bit deterministic
    /// (so are they with more: every output element is computed by exactly one thread in a
    /// fixed order).
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

/// 64-byte aligned storage for the arena.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A graph compiled to native code, with its arena.
pub struct JitModel {
    graph: Graph,
    plan: plan::Plan,
    module: Option<JITModule>,
    entry: unsafe extern "C" fn(*mut u8),
    kernels: Vec<KernelInfo>,
    kernel_fns: Vec<KernelFn>,
    arena: Vec<Line>,
    /// Worker threads, when the model runs on more than one thread.
    pool: Option<pool::Pool>,
    /// The kernels in run order with their slicing, for the pool.
    steps: Arc<[pool::Step]>,
    /// The `gemm` kernels' driver descriptions, which their code points at.
    #[allow(clippy::vec_box)] // boxed: the code holds their addresses
    _gemms: Vec<Box<gemm::GemmDesc>>,
    /// Whether the `prep` kernels have run since the weights last changed.
    prepared: bool,
}

/// Named output values, in the graph's output order.
pub type Outputs = Vec<(String, Value<f32>)>;

/// Compiles `graph` for the host CPU, after the graph passes of `options.passes`.
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
    let plan = plan::plan(graph);
    let threads = match options.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    };
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
        if !lower::needs_kernel(&node.op) || plan.fused.contains(&id) {
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
    finish(graph, plan, module, entry, kernels, &ids, threads, gemms)
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
        let want = if threads > 1 { 2 * threads } else { 1 };
        let desc = lower::gemm_desc(g, ins, plan.slots[&id], patches, kernel, want);
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
    let lines = plan.size.div_ceil(64);
    // Split a kernel only when it is big enough; start threads only when some kernel is.
    let steps: Arc<[pool::Step]> = kernels
        .iter()
        .zip(&kernel_fns)
        .filter(|(k, _)| !k.prep)
        .map(|(k, &f)| {
            let split = threads > 1 && k.extent >= 2 * threads && k.work >= PARALLEL_MIN_WORK;
            pool::Step {
                f,
                extent: k.extent,
                parts: if split { threads } else { 1 },
            }
        })
        .collect();
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
        arena: vec![Line([0; 64]); lines],
        pool,
        steps,
        _gemms: gemms.descs,
        prepared: false,
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

    fn bytes_mut(&mut self, id: NodeId) -> &mut [u8] {
        let s = self.plan.slots[&id];
        let all: &mut [u8] = bytemuck_lines(&mut self.arena);
        &mut all[s.offset..s.offset + s.len * 4]
    }

    fn bytes(&self, id: NodeId) -> &[u8] {
        let s = self.plan.slots[&id];
        let all = bytemuck_lines_ref(&self.arena);
        &all[s.offset..s.offset + s.len * 4]
    }

    /// Loads every weight (`param` and `buffer`) of the graph from `weights`, by name.
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), JitError> {
        for id in self.graph.params() {
            let node = self.graph.node(id);
            let t = weights
                .get(&node.name)
                .ok_or_else(|| JitError::MissingWeight(node.name.clone()))?;
            if t.shape() != &node.ty.shape {
                return Err(JitError::WrongType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    got: TensorType::f32(t.shape().clone()),
                });
            }
            let data: Vec<u8> = t.data().iter().flat_map(|v| v.to_ne_bytes()).collect();
            self.bytes_mut(id).copy_from_slice(&data);
        }
        self.prepare();
        Ok(())
    }

    /// Runs the kernels of values computed from the weights alone.
    fn prepare(&mut self) {
        let arena = self.arena.as_mut_ptr().cast::<u8>();
        for (k, f) in self.kernels.iter().zip(&self.kernel_fns).filter(|(k, _)| k.prep) {
            // SAFETY: as in `run`: the full range of a kernel over the planned arena.
            unsafe { f(arena, 0, k.extent as i64) };
        }
        self.prepared = true;
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
            let data: Vec<u8> = match v {
                Value::F(t) => t.data().iter().flat_map(|x| x.to_ne_bytes()).collect(),
                Value::I(t) => {
                    self.check_class_ids(id, &node.name, t)?;
                    t.data().iter().flat_map(|x| x.to_ne_bytes()).collect()
                }
            };
            self.bytes_mut(id).copy_from_slice(&data);
        }
        if !self.prepared {
            self.prepare();
        }
        // SAFETY: the arena is `plan.size` bytes, every kernel's accesses were generated from
        // validated shapes to stay inside it, and it is exclusively borrowed for the call.
        let arena = self.arena.as_mut_ptr().cast::<u8>();
        if let Some(pool) = &self.pool {
            // SAFETY: as below; the pool returns only when every thread has finished.
            unsafe { pool.run(arena, &self.steps) };
        } else {
            // SAFETY: the arena is `plan.size` bytes, every kernel's accesses were generated
            // from validated shapes to stay inside it, and it is exclusively borrowed here.
            unsafe { (self.entry)(arena) };
        }
        Ok(self.read_outputs())
    }

    /// Runs the model like [`JitModel::run`], one kernel at a time, and returns each kernel's
    /// wall time in milliseconds (in `kernels()` order) with the outputs.
    pub fn run_profiled(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<(Vec<f64>, Outputs), JitError> {
        self.run(inputs)?; // feeds the inputs (and warms the caches)
        let arena = self.arena.as_mut_ptr().cast::<u8>();
        let mut times = Vec::with_capacity(self.kernels.len());
        for (k, f) in self.kernels.iter().zip(&self.kernel_fns) {
            if k.prep {
                times.push(0.0);
                continue;
            }
            let t = std::time::Instant::now();
            // SAFETY: as in `run`: the full range of a kernel over the planned arena.
            unsafe { f(arena, 0, k.extent as i64) };
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
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

fn bytemuck_lines(lines: &mut [Line]) -> &mut [u8] {
    let len = lines.len() * 64;
    // SAFETY: `Line` is 64 plain bytes with no padding; the slice covers exactly `lines`.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast::<u8>(), len) }
}

fn bytemuck_lines_ref(lines: &[Line]) -> &[u8] {
    let len = lines.len() * 64;
    // SAFETY: as above, read-only.
    unsafe { std::slice::from_raw_parts(lines.as_ptr().cast::<u8>(), len) }
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
