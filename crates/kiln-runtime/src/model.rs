//! Running a compiled graph: the [`Model`] (the code, the weights and the worker threads,
//! shared by every caller), its [`Session`]s (one arena per concurrent run), and the
//! compile functions that make a model of a graph ([`compile`], [`compile_training`]).

use crate::pool;
use kiln_ir::{DType, Graph, LossKind, NodeId, Op, Tensor, TensorType, TrainOp, Value};
use kiln_jit::plan::{self, Slot};
use kiln_jit::{Compiled, JitError, JitOptions, KernelInfo};
use std::collections::HashMap;
use thiserror::Error;

/// Why a model (or a trainer) could not be compiled, given its weights, run or stepped.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The graph could not be compiled.
    #[error(transparent)]
    Compile(#[from] JitError),
    /// The training graph could not be derived.
    #[error("differentiating the model: {0}")]
    Autodiff(#[from] kiln_autodiff::AutodiffError),
    /// The interpreter (a trainer's `Engine::Interp`) failed.
    #[error("interpreter: {0}")]
    Interp(#[from] kiln_interp::InterpError),
    /// Writing or reading weights failed.
    #[error(transparent)]
    Io(#[from] crate::IoError),
    /// Bad arguments (names, shapes, labels) with what was expected.
    #[error("{0}")]
    Input(String),
    /// A graph the runtime was given or made is invalid (`kiln_ir`'s error).
    #[error(transparent)]
    Graph(#[from] kiln_ir::IrError),
    #[error("missing weight `{0}`")]
    MissingWeight(String),
    #[error("`{name}`: expected {expected}, got {got}")]
    WrongType {
        name: String,
        expected: TensorType,
        got: TensorType,
    },
    #[error("`{name}`: class id {id} at position {pos} is outside 0..{classes}")]
    BadClassId {
        name: String,
        id: i32,
        pos: usize,
        classes: usize,
    },
    /// The model's memory could not be allocated.
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
    /// Output buffers (or a view) that do not match the graph's outputs.
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

/// Compiles `graph` for the host CPU (`kiln_jit::compile`) into a model with one session
/// ready. The arena is allocated fallibly: a model too big for this machine is an `Err`.
pub fn compile(graph: &Graph, options: &JitOptions) -> Result<Model, RuntimeError> {
    Model::new(kiln_jit::compile(graph, options)?)
}

/// [`compile`] for a training graph whose `updates` are `(weight, output)` pairs
/// (`kiln_jit::compile_training`): [`Model::run_gradients`] runs everything but the updates,
/// [`Model::apply_updates`] the updates.
pub fn compile_training(
    graph: &Graph,
    options: &JitOptions,
    updates: &[(String, String)],
) -> Result<Model, RuntimeError> {
    Model::new(kiln_jit::compile_training(graph, options, updates)?)
}

/// The arena: `len` zeroed bytes, 64-byte aligned, allocated fallibly (a failed allocation is
/// a [`RuntimeError::TooBig`], never an abort). An arena of [`HUGE_PAGE`] or more is aligned
/// to it and, on Linux, asked for in huge pages (`madvise(MADV_HUGEPAGE)`, before its pages
/// are first touched) where the kernel's transparent huge pages are on for such requests: a
/// network's weights and a convolution's rows of B read a page apart no longer miss the TLB
/// at every row. The zeros are written when the session is made, so every page is touched
/// then, not on first use.
struct ArenaBuf {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

/// The size and alignment from which an arena asks for huge pages (2 MiB, x86-64's).
const HUGE_PAGE: usize = 2 << 20;

// SAFETY: `ArenaBuf` owns its bytes like a `Box<[u8]>`; access goes through `&`/`&mut self`.
unsafe impl Send for ArenaBuf {}
// SAFETY: as above: shared references only read.
unsafe impl Sync for ArenaBuf {}

impl ArenaBuf {
    /// `len` zero bytes (at least 64), or an error naming the size.
    fn new(len: usize) -> Result<ArenaBuf, RuntimeError> {
        let len = len.max(64);
        let align = if len >= HUGE_PAGE { HUGE_PAGE } else { 64 };
        let layout = std::alloc::Layout::from_size_align(len, align)
            .map_err(|e| RuntimeError::TooBig(format!("an arena of {len} bytes: {e}")))?;
        // SAFETY: the layout's size is at least 64.
        let p = unsafe { std::alloc::alloc(layout) };
        let ptr = std::ptr::NonNull::new(p).ok_or_else(|| {
            RuntimeError::TooBig(format!("cannot allocate the model's arena of {len} bytes"))
        })?;
        #[cfg(target_os = "linux")]
        if align == HUGE_PAGE {
            // (a hint: where the kernel refuses it, the pages stay small; whole huge pages
            // only, not the page past the allocation's end that a rounded-up length would
            // name)
            // SAFETY: the range lies in the allocation just made, whose start is aligned to
            // HUGE_PAGE.
            let _ = unsafe { libc::madvise(p.cast(), len / HUGE_PAGE * HUGE_PAGE, libc::MADV_HUGEPAGE) };
        }
        // SAFETY: `len` bytes owned by this allocation.
        unsafe { std::ptr::write_bytes(p, 0, len) };
        Ok(ArenaBuf { ptr, layout })
    }

    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the layout's `size()` initialized (zeroed in `new`) bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for ArenaBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// A graph compiled to native code for this CPU: the kernels, the memory plan, the worker
/// threads and (once set) the weights.
///
/// # Thread model
///
/// A `Model` is `Send + Sync`: the compiled code and the weights are shared and immutable
/// while it runs, so one `Arc<Model>` serves any number of threads at once, with no lock
/// around the model. Every run borrows its own execution state — a [`Session`]: the arena
/// that holds the run's values, its scratch and its status words. [`Model::run`] takes an
/// idle session from a small pool inside the model (making one when every session is busy)
/// and returns it afterwards; [`Model::run_in`] runs in a session the caller keeps.
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
/// Weights change only through `&mut self` ([`Model::set_weights`],
/// [`Model::update_weights`]), so never while a run is going on; a session reloads them
/// at its next run.
pub struct Model {
    /// Tells this model's sessions from another's (they share no plan).
    id: u64,
    /// Worker threads, when the model runs on more than one thread; one run at a time.
    /// (Declared before `compiled`: the workers stop before the code they ran is freed.)
    pool: Option<std::sync::Mutex<pool::Pool>>,
    /// The kernels, their schedule and the memory plan.
    compiled: Compiled,
    /// The weights, once set.
    weights: Option<WeightImage>,
    /// Sessions not running now, for [`Model::run`].
    idle: std::sync::Mutex<Vec<Session>>,
}

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

/// One run's execution state for a [`Model`]: its own arena (the run's values, scratch and
/// status words, with a copy of the weights at their planned places). A session belongs to
/// the model that made it ([`Model::session`]); running it with another model is an error.
///
/// A session follows the model's weights (it copies them in at its next run when they have
/// changed) until it is given weights of its own ([`Model::own_weights`]); from then on
/// its weights are its own, changed by [`Model::write_weights`] and by the runs
/// themselves (a training graph's updates, [`Model::apply_updates`]).
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
            .field("arena_bytes", &self.arena.layout.size())
            .finish()
    }
}

/// A borrowed input: its name and value.
pub type Feed<'a> = (&'a str, &'a Value<f32>);

/// Named output values, in the graph's output order.
pub type Outputs = Vec<(String, Value<f32>)>;

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

impl Model {
    /// A model of `compiled`: its worker threads started (when some kernel is split) and one
    /// session's arena allocated (fallibly: an arena this machine cannot give is an `Err`).
    pub fn new(compiled: Compiled) -> Result<Model, RuntimeError> {
        let id = next_id();
        let first = Session {
            model: id,
            arena: ArenaBuf::new(compiled.plan().size)?,
            loaded: 0,
            prepared: false,
        };
        // (a worker that cannot be started leaves its share to the others: `pool.rs`)
        let pool = compiled
            .splits()
            .then(|| std::sync::Mutex::new(pool::Pool::new(compiled.threads())));
        Ok(Model {
            id,
            pool,
            compiled,
            weights: None,
            idle: std::sync::Mutex::new(vec![first]),
        })
    }

    /// The compiled kernels, their schedule and the memory plan.
    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// The optimized graph the kernels were made from.
    pub fn graph(&self) -> &Graph {
        self.compiled.graph()
    }

    /// The graph as it was given to [`compile`] (before the passes).
    pub fn source_graph(&self) -> &Graph {
        self.compiled.source_graph()
    }

    pub fn kernels(&self) -> &[KernelInfo] {
        self.compiled.kernels()
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
        self.compiled.plan().size
    }

    /// The memory plan: every value's place in the arena.
    pub fn plan(&self) -> &plan::Plan {
        self.compiled.plan()
    }

    /// How many of a training graph's updates ([`compile_training`]) are copied over their
    /// weight after the update phase rather than written in place.
    pub fn copied_updates(&self) -> usize {
        self.compiled.copies().len()
    }

    /// Checks every weight (`param` and `buffer`) of the graph in `weights`, by name, against
    /// its type; the weights in `params()` order with their slots' offsets.
    fn checked_weights(
        &self,
        weights: &HashMap<String, Tensor<f32>>,
        all: bool,
    ) -> Result<Vec<(NodeId, usize, Tensor<f32>)>, RuntimeError> {
        let params = self.compiled.graph().params();
        for name in weights.keys() {
            if !all
                && !params
                    .iter()
                    .any(|&p| &self.compiled.graph().node(p).name == name)
            {
                return Err(RuntimeError::UnknownWeight(name.clone()));
            }
        }
        let mut found = Vec::with_capacity(params.len());
        for &id in &params {
            let node = self.compiled.graph().node(id);
            let Some(t) = weights.get(&node.name) else {
                if all {
                    return Err(RuntimeError::MissingWeight(node.name.clone()));
                }
                continue;
            };
            if t.shape() != &node.ty.shape || node.ty.dtype != DType::F32 {
                return Err(RuntimeError::WrongType {
                    name: node.name.clone(),
                    expected: node.ty.clone(),
                    got: TensorType::f32(t.shape().clone()),
                });
            }
            found.push((id, self.compiled.plan().slots[&id].offset, t.clone()));
        }
        Ok(found)
    }

    /// Sets every weight (`param` and `buffer`) of the graph from `weights`, by name. Every
    /// weight is checked before any is taken; a tensor that is not a weight of the graph is
    /// ignored. Until this succeeds, `run` is an error (on a model that has weights).
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
        let tensors = self.checked_weights(weights, true)?;
        self.weights = Some(WeightImage {
            id: next_id(),
            tensors,
        });
        Ok(())
    }

    /// Replaces the weights named in `weights` (a subset; each must be a weight of the graph,
    /// of its type) and keeps the others. An error before the weights are set.
    pub fn update_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
        let new = self.checked_weights(weights, false)?;
        let image = self.weights.as_mut().ok_or(RuntimeError::NoWeights)?;
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
                .map(|(id, _, t)| (self.compiled.graph().node(*id).name.clone(), t.clone()))
                .collect(),
        )
    }

    /// Whether the model can run: its weights are set, or it has none.
    pub fn has_weights(&self) -> bool {
        self.weights.is_some() || self.compiled.graph().params().is_empty()
    }

    /// A new session (an arena of [`Model::arena_size`] bytes) for [`Model::run_in`].
    pub fn session(&self) -> Result<Session, RuntimeError> {
        Ok(Session {
            model: self.id,
            arena: ArenaBuf::new(self.compiled.plan().size)?,
            loaded: 0,
            prepared: false,
        })
    }

    /// Gives `session` weights of its own, `weights` (every weight of the graph, checked as by
    /// [`Model::set_weights`]): from now on the model's weights no longer reach it, and
    /// runs in it may change them in place.
    pub fn own_weights(
        &self,
        session: &mut Session,
        weights: &HashMap<String, Tensor<f32>>,
    ) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        let tensors = self.checked_weights(weights, true)?;
        for (id, _, t) in &tensors {
            write_f32(&mut session.arena, self.compiled.plan().slots[id], t.data());
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
    ) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(RuntimeError::NoWeights);
        }
        for (id, _, t) in self.checked_weights(weights, false)? {
            write_f32(&mut session.arena, self.compiled.plan().slots[&id], t.data());
        }
        session.prepared = false;
        Ok(())
    }

    /// The f32 value `name` (a weight, an input or an output of the graph) as `session`'s
    /// arena holds it now, copied out (see [`Model::view`] for a borrow).
    pub fn read(&self, session: &Session, name: &str) -> Result<Tensor<f32>, RuntimeError> {
        let data = self.view(session, name)?;
        let shape = self.compiled.graph().node(self.f32_value(name)?).ty.shape.clone();
        Ok(Tensor::new(shape, data.to_vec()).expect("sized by the type"))
    }

    /// The f32 value `name` (a weight, an input or an output of the graph) as `session`'s
    /// arena holds it now, borrowed where it lies: after [`Model::run_in_place`], an output
    /// without a copy (row-major, of the output's shape). Valid until the session runs again.
    pub fn view<'s>(&self, session: &'s Session, name: &str) -> Result<&'s [f32], RuntimeError> {
        self.check_session(session)?;
        let slot = self.compiled.plan().slots[&self.f32_value(name)?];
        // SAFETY: every bit pattern is an f32; `align_to` only hands out aligned floats
        let (head, floats, tail) = unsafe { slot_bytes(&session.arena, slot).align_to::<f32>() };
        if !head.is_empty() || !tail.is_empty() {
            // every slot is 64-byte aligned (the memory plan's rule): a plan bug, not an input's
            return Err(RuntimeError::Outputs(format!(
                "`{name}` is not 4-byte aligned in the arena"
            )));
        }
        Ok(floats)
    }

    /// The graph node of the f32 weight, input or output `name`.
    fn f32_value(&self, name: &str) -> Result<NodeId, RuntimeError> {
        self.compiled
            .graph()
            .find(name)
            .filter(|id| {
                let node = self.compiled.graph().node(*id);
                node.ty.dtype == DType::F32
                    && (matches!(node.op, Op::Param { .. } | Op::Input(_))
                        || self.compiled.graph().outputs().contains(id))
            })
            .ok_or_else(|| RuntimeError::UnknownValue(name.to_string()))
    }

    fn check_session(&self, session: &Session) -> Result<(), RuntimeError> {
        if session.model != self.id {
            return Err(RuntimeError::ForeignSession);
        }
        Ok(())
    }

    /// Makes `session` ready to run: the model's current weights in its arena (unless it has
    /// its own) and the `prep` kernels run over them.
    fn ready(&self, session: &mut Session) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            match &self.weights {
                Some(w) if session.loaded != w.id => {
                    for (id, _, t) in &w.tensors {
                        write_f32(&mut session.arena, self.compiled.plan().slots[id], t.data());
                    }
                    session.loaded = w.id;
                    session.prepared = false;
                }
                Some(_) => {}
                None if self.compiled.graph().params().is_empty() => {}
                None => return Err(RuntimeError::NoWeights),
            }
        }
        if !session.prepared {
            self.reset_status(&mut session.arena);
            let arena = session.arena.as_mut_ptr();
            for (k, f) in self
                .compiled
                .kernels()
                .iter()
                .zip(self.compiled.kernel_fns())
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
        for &off in self.compiled.plan().status.values() {
            all[off..off + 8].copy_from_slice(&plan::STATUS_OK.to_ne_bytes());
        }
    }

    /// The error of the first node (in run order) whose kernel reported a failure.
    fn check_status(&self, arena: &ArenaBuf) -> Result<(), RuntimeError> {
        let all = arena.bytes();
        let word = |off: usize| u64::from_ne_bytes(all[off..off + 8].try_into().expect("8 bytes"));
        // the common case, without ordering the nodes
        if self
            .compiled
            .plan()
            .status
            .values()
            .all(|&off| word(off) == plan::STATUS_OK)
        {
            return Ok(());
        }
        for id in self.compiled.graph().topo_order() {
            let Some(&off) = self.compiled.plan().status.get(&id) else {
                continue;
            };
            let word = word(off);
            if word == plan::STATUS_OK {
                continue;
            }
            let node = self.compiled.graph().node(id);
            let message = match &node.op {
                // the lowest failing position and its index (`lower::report_bad_index`)
                Op::Train(TrainOp::ScatterIds { size }) => {
                    let (pos, bad) = (word >> 32, word as u32 as i32);
                    let plane = size[0] * size[1];
                    format!("id {bad} at position {pos} is outside the plane of {plane}")
                }
                Op::Loss(_) | Op::Train(TrainOp::LossGrad(_)) => {
                    let (n, bad) = (word >> 32, word as u32 as i32);
                    let pred = self.compiled.graph().inputs(id)[0];
                    let classes = self.compiled.graph().node(pred).ty.dims()[1];
                    format!("class id {bad} of batch element {n} is out of range 0..{classes}")
                }
                _ => "the GEMM driver failed (an internal error; see the panic message above)".into(),
            };
            return Err(RuntimeError::Op {
                node: node.name.clone(),
                op: node.op.name().into(),
                message,
            });
        }
        Ok(())
    }

    /// Checks `inputs` (every graph input by name, each of its type, class ids in range) and
    /// returns each input node with its value, in `graph_inputs()` order.
    fn checked_inputs<'a>(&self, inputs: &[Feed<'a>]) -> Result<Vec<(NodeId, &'a Value<f32>)>, RuntimeError> {
        let ids = kiln_ir::feeds::check_inputs(self.compiled.graph(), inputs)?;
        for &(id, v) in &ids {
            if let Value::I(t) = v {
                self.check_class_ids(id, &self.compiled.graph().node(id).name, t)?;
            }
        }
        Ok(ids)
    }

    /// Runs the model on `inputs` (every graph input, by name) and returns the outputs in the
    /// graph's output order. Callable from any number of threads at once (see the type's
    /// thread model); each call takes an idle session of the model or makes one.
    pub fn run(&self, inputs: &HashMap<String, Value<f32>>) -> Result<Outputs, RuntimeError> {
        let feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut outputs = self.new_outputs();
        self.run_into(&feeds, &mut outputs)?;
        Ok(self.name_outputs(outputs))
    }

    /// Like [`Model::run`], writing the outputs into `outputs` (one value per graph output,
    /// in order, each of the output's type: [`Model::new_outputs`] makes them), so that
    /// repeated runs allocate nothing. Each input is copied into the arena with one `memcpy` (or, on
    /// several threads, in parts by the workers: `Model::execute`),
    /// and each output out of it with one.
    pub fn run_into(&self, inputs: &[Feed<'_>], outputs: &mut [Value<f32>]) -> Result<(), RuntimeError> {
        let mut session = self.take_session()?;
        let r = self.run_in(&mut session, inputs, outputs);
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(session);
        r
    }

    /// [`Model::run_into`] in a session of the caller's (see [`Session`]).
    pub fn run_in(
        &self,
        session: &mut Session,
        inputs: &[Feed<'_>],
        outputs: &mut [Value<f32>],
    ) -> Result<(), RuntimeError> {
        self.check_outputs(outputs)?;
        self.run_in_place(session, inputs)?;
        for (&o, v) in self.compiled.graph().outputs().iter().zip(outputs.iter_mut()) {
            let s = self.compiled.plan().slots[&o];
            match v {
                Value::F(t) => read_f32(&session.arena, s, t.data_mut()),
                Value::I(t) => read_i32(&session.arena, s, t.data_mut()),
            }
        }
        Ok(())
    }

    /// Runs the model in `session` and leaves the results there: read what is needed with
    /// [`Model::read`] (a training step reads its loss and leaves the rest in place).
    pub fn run_in_place(&self, session: &mut Session, inputs: &[Feed<'_>]) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        let feeds = self.checked_inputs(inputs)?;
        self.ready(session)?;
        self.execute(session, &feeds)
    }

    /// Zeroed values of the graph's outputs' types, in order: buffers for
    /// [`Model::run_into`].
    pub fn new_outputs(&self) -> Vec<Value<f32>> {
        self.compiled
            .graph()
            .outputs()
            .iter()
            .map(|&o| {
                let ty = &self.compiled.graph().node(o).ty;
                match ty.dtype {
                    DType::F32 => Value::F(Tensor::full(ty.shape.clone(), 0.0f32)),
                    DType::I32 => Value::I(Tensor::full(ty.shape.clone(), 0i32)),
                }
            })
            .collect()
    }

    /// `outputs` with the graph's output names.
    fn name_outputs(&self, outputs: Vec<Value<f32>>) -> Outputs {
        self.compiled
            .graph()
            .outputs()
            .iter()
            .map(|&o| self.compiled.graph().node(o).name.clone())
            .zip(outputs)
            .collect()
    }

    fn check_outputs(&self, outputs: &[Value<f32>]) -> Result<(), RuntimeError> {
        let outs = self.compiled.graph().outputs();
        if outputs.len() != outs.len() {
            return Err(RuntimeError::Outputs(format!(
                "{} output buffers for the model's {} outputs",
                outputs.len(),
                outs.len()
            )));
        }
        for (&o, v) in outs.iter().zip(outputs) {
            let node = self.compiled.graph().node(o);
            if v.ty() != node.ty {
                return Err(RuntimeError::WrongType {
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
            let s = self.compiled.plan().slots[&id];
            match v {
                Value::F(t) => write_f32(&mut session.arena, s, t.data()),
                Value::I(t) => write_i32(&mut session.arena, s, t.data()),
            }
        }
    }

    /// An idle session, or a new one when every one is busy.
    fn take_session(&self) -> Result<Session, RuntimeError> {
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

    /// Copies the (checked) inputs into the session's arena and runs every (non-`prep`)
    /// kernel over it, on the workers when they are free, else on this thread; then reads the
    /// status words. Inputs of [`SPLIT_COPY`] bytes or more (at most [`MAX_SPLIT_COPIES`] of
    /// them) are copied by the workers too, each thread a part.
    fn execute(&self, session: &mut Session, feeds: &[(NodeId, &Value<f32>)]) -> Result<(), RuntimeError> {
        self.reset_status(&mut session.arena);
        let pool = self.pool.as_ref().and_then(|p| p.try_lock().ok());
        let mut copies = [pool::InputCopy {
            src: std::ptr::null(),
            offset: 0,
            len: 0,
        }; MAX_SPLIT_COPIES];
        let bytes: usize = feeds.iter().map(|(_, v)| value_bytes(v).len()).sum();
        let split = pool.is_some() && bytes >= SPLIT_COPY && feeds.len() <= MAX_SPLIT_COPIES;
        if split {
            for (c, &(id, v)) in copies.iter_mut().zip(feeds) {
                let s = self.compiled.plan().slots[&id];
                let src = value_bytes(v);
                // the slot holds the value (`checked_inputs`: the input's type) and lies inside
                // the arena (ARENA_ACCESS); slot_bytes_mut checks both
                let dst = slot_bytes_mut(&mut session.arena, s);
                assert_eq!(dst.len(), src.len(), "an input's slot holds its value");
                *c = pool::InputCopy {
                    src: src.as_ptr(),
                    offset: s.offset,
                    len: src.len(),
                };
            }
        } else {
            self.feed(session, feeds);
        }
        // ARENA_ACCESS — the code's contract (`kiln_jit::Compiled`) is kept: every session's
        // arena is `plan.size` bytes, 64-byte aligned (`ArenaBuf::new`), and a session only
        // runs with the model that made it (`check_session`); the weights and the checked
        // inputs (of their slots' types) were copied in and the status words reset (`ready`,
        // `feed`, `reset_status`); kernels run in step order with their prep kernels first.
        // Concurrent runs use distinct sessions, so no two runs share an arena; the code and
        // the GEMM descriptions are only read.
        let arena = session.arena.as_mut_ptr();
        if let Some(pool) = pool {
            let copies = if split { &copies[..feeds.len()] } else { &[] };
            // SAFETY: ARENA_ACCESS; the arena is exclusively borrowed, and the pool returns
            // only when every thread has finished (threads write disjoint parts of a kernel's
            // output, with a barrier between kernels); the copies read the borrowed inputs
            // into their slots (checked above: inside the arena, of the inputs' lengths; two
            // values' slots do not overlap).
            unsafe { pool.run_fed(arena, copies, self.compiled.steps()) };
        } else {
            // SAFETY: ARENA_ACCESS; the entry runs every kernel over its full range, in order,
            // on this thread, and the arena is exclusively borrowed for the call.
            unsafe { (self.compiled.entry())(arena) };
        }
        if !self.compiled.phase_steps(true).is_empty() {
            // the updates wrote the weights: the prep kernels (packed weights) run again
            session.prepared = false;
        }
        self.check_status(&session.arena)
    }

    /// Runs the kernels of one phase (`update`: the update phase) over the session's arena,
    /// as `execute` does (ARENA_ACCESS).
    fn execute_phase(&self, session: &mut Session, update: bool) -> Result<(), RuntimeError> {
        self.reset_status(&mut session.arena);
        let steps = self.compiled.phase_steps(update);
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
    /// weights are not changed; [`Model::read`] reads the loss and the gradients.
    pub fn run_gradients(&self, session: &mut Session, inputs: &[Feed<'_>]) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(RuntimeError::NoWeights);
        }
        let feeds = self.checked_inputs(inputs)?;
        self.ready(session)?;
        self.feed(session, &feeds);
        self.execute_phase(session, false)
    }

    /// The second phase, after [`Model::run_gradients`]: the updates write the new weights
    /// and optimizer state (in place where they were planned there, else copied over).
    pub fn apply_updates(&self, session: &mut Session) -> Result<(), RuntimeError> {
        self.check_session(session)?;
        if session.loaded != OWN_WEIGHTS {
            return Err(RuntimeError::NoWeights);
        }
        session.prepared = false;
        self.execute_phase(session, true)?;
        let bytes = session.arena.bytes_mut();
        for &(ws, us) in self.compiled.copies() {
            // both slots lie inside the arena (ARENA_ACCESS) and two values' slots do not overlap
            bytes.copy_within(us.offset..us.offset + us.len * 4, ws.offset);
        }
        Ok(())
    }

    /// Runs the model like [`Model::run`], one kernel at a time on the calling thread, and
    /// returns each kernel's time in milliseconds (in `kernels()` order) with the outputs: the
    /// thread's CPU time where the OS gives it ([`thread_cpu_ms`]), so that on a shared machine
    /// the time other jobs take the core away is not counted against the kernel it interrupts.
    pub fn run_profiled(
        &self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<(Vec<f64>, Outputs), RuntimeError> {
        self.profiled(inputs, |arena| {
            let mut times = Vec::with_capacity(self.compiled.kernels().len());
            for (k, f) in self.compiled.kernels().iter().zip(self.compiled.kernel_fns()) {
                if k.prep {
                    times.push(0.0);
                    continue;
                }
                let t = thread_cpu_ms();
                // SAFETY: as in `execute` (`ARENA_ACCESS`): the full range of a kernel over
                // the session's arena, in run order.
                unsafe { f(arena, 0, k.extent as i64) };
                times.push(thread_cpu_ms() - t);
            }
            times
        })
    }

    /// Runs the model like [`Model::run`], one kernel at a time, each split over the model's
    /// threads as a run splits it (its step: shared by the threads when it is big enough, else
    /// on one thread), and returns each kernel's wall time in milliseconds (in `kernels()`
    /// order, 0 for the `prep` kernels), the barrier after it included, with the outputs. With
    /// one thread, or while another run holds the threads, each kernel runs on the calling
    /// thread alone. Where [`Model::run_profiled`] says what a kernel costs, this says how it
    /// scales: the two side by side show a kernel that is slower on two threads than on one.
    pub fn run_profiled_split(
        &self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<(Vec<f64>, Outputs), RuntimeError> {
        self.profiled(inputs, |arena| {
            let pool = self.pool.as_ref().and_then(|p| p.try_lock().ok());
            let steps = self.compiled.steps();
            let mut next = 0;
            let mut times = Vec::with_capacity(self.compiled.kernels().len());
            for (k, f) in self.compiled.kernels().iter().zip(self.compiled.kernel_fns()) {
                if k.prep {
                    times.push(0.0);
                    continue;
                }
                // the steps are the kernels that are not `prep`, in the same order
                let step = steps.get(next).copied();
                next += 1;
                let t = std::time::Instant::now();
                match (&pool, step) {
                    (Some(pool), Some(step)) => {
                        let one: std::sync::Arc<[kiln_jit::Step]> = std::sync::Arc::new([step]);
                        // SAFETY: ARENA_ACCESS, as in `execute`: the kernel's step, after the
                        // steps before it, over the session's arena, exclusively borrowed
                        // until the pool returns.
                        unsafe { pool.run(arena, &one) };
                    }
                    // SAFETY: as in `run_profiled`.
                    _ => unsafe { f(arena, 0, k.extent as i64) },
                }
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            times
        })
    }

    /// A run whose kernels `time` runs over the session's arena (every kernel that is not
    /// `prep`, in run order, after the inputs were fed and the status words reset), returning
    /// their times, then the outputs as [`Model::run`] gives them.
    fn profiled(
        &self,
        inputs: &HashMap<String, Value<f32>>,
        time: impl FnOnce(*mut u8) -> Vec<f64>,
    ) -> Result<(Vec<f64>, Outputs), RuntimeError> {
        let feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut outputs = self.new_outputs();
        let mut session = self.take_session()?;
        // feeds the inputs (and warms the caches)
        self.run_in(&mut session, &feeds, &mut outputs)?;
        self.reset_status(&mut session.arena);
        let times = time(session.arena.as_mut_ptr());
        self.check_status(&session.arena)?;
        for (&o, v) in self.compiled.graph().outputs().iter().zip(outputs.iter_mut()) {
            let s = self.compiled.plan().slots[&o];
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
    /// [`Model::run_profiled`] (in `kernels()` order, 0 for the others):
    /// the work the model does once per set of weights, not on every run. The kernels run
    /// once more, one at a time, over a session's weights (their values are permanent in the
    /// arena and computed from the weights alone, so running them again changes nothing).
    pub fn profile_prep(&self) -> Result<Vec<f64>, RuntimeError> {
        let mut session = self.take_session()?;
        self.ready(&mut session)?;
        self.reset_status(&mut session.arena);
        let arena = session.arena.as_mut_ptr();
        let mut times = vec![0.0; self.compiled.kernels().len()];
        for ((k, f), ms) in self
            .compiled
            .kernels()
            .iter()
            .zip(self.compiled.kernel_fns())
            .zip(&mut times)
        {
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
    fn check_class_ids(&self, id: NodeId, name: &str, t: &Tensor<i32>) -> Result<(), RuntimeError> {
        for user in self.compiled.graph().users(id) {
            if let Op::Loss(LossKind::CrossEntropy | LossKind::Nll)
            | Op::Train(TrainOp::LossGrad(LossKind::CrossEntropy | LossKind::Nll)) =
                self.compiled.graph().node(user).op
            {
                let pred = self.compiled.graph().inputs(user)[0];
                let classes = self.compiled.graph().node(pred).ty.dims()[1];
                if let Some((pos, &bad)) = t
                    .data()
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !(0..classes as i64).contains(&i64::from(**c)))
                {
                    return Err(RuntimeError::BadClassId {
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
fn slot_bytes(arena: &ArenaBuf, s: Slot) -> &[u8] {
    &arena.bytes()[s.offset..s.offset + s.len * 4]
}

fn slot_bytes_mut(arena: &mut ArenaBuf, s: Slot) -> &mut [u8] {
    &mut arena.bytes_mut()[s.offset..s.offset + s.len * 4]
}

/// The bytes of an input value.
fn value_bytes(v: &Value<f32>) -> &[u8] {
    // SAFETY: f32 and i32 have no padding; the slice covers the value's elements.
    match v {
        Value::F(t) => unsafe {
            std::slice::from_raw_parts(t.data().as_ptr().cast::<u8>(), std::mem::size_of_val(t.data()))
        },
        Value::I(t) => unsafe {
            std::slice::from_raw_parts(t.data().as_ptr().cast::<u8>(), std::mem::size_of_val(t.data()))
        },
    }
}

/// The total input bytes from which the pool's threads share the copying of the inputs
/// (`Model::execute`); smaller inputs are copied by the calling thread, where the barrier
/// after the copies would cost more than half the copy saves. Measured on a 2-vCPU Intel Xeon
/// (family 6 model 167), two threads, median runs of alternated processes (`kiln bench
/// --threads 2 --runs 400`, ms, one copier → every thread): the MobileNet block (1.6 MB in)
/// 0.444–0.452 → 0.338–0.353 (each thread then reads the channels it copied), the dilated
/// convolution (0.5 MB) 0.280–0.294 → 0.259–0.277, the VGG block (0.8 MB) 1.40–1.44 →
/// 1.39–1.41.
const SPLIT_COPY: usize = 256 << 10;

/// The most inputs the threads copy (more are copied by the calling thread).
const MAX_SPLIT_COPIES: usize = 8;

/// `src` into slot `s` (of `src.len()` elements), one `memcpy`.
fn write_f32(arena: &mut ArenaBuf, s: Slot, src: &[f32]) {
    let dst = slot_bytes_mut(arena, s);
    // SAFETY: f32 has no padding and any alignment of u8 works; the slice covers `src`.
    let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
    dst.copy_from_slice(src);
}

fn write_i32(arena: &mut ArenaBuf, s: Slot, src: &[i32]) {
    let dst = slot_bytes_mut(arena, s);
    // SAFETY: as in `write_f32`.
    let src = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src)) };
    dst.copy_from_slice(src);
}

/// Slot `s` into `dst` (of the slot's length), one `memcpy`.
fn read_f32(arena: &ArenaBuf, s: Slot, dst: &mut [f32]) {
    let src = slot_bytes(arena, s);
    // SAFETY: every bit pattern is an f32; the slice covers `dst`, exclusively borrowed.
    let dst =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
    dst.copy_from_slice(src);
}

fn read_i32(arena: &ArenaBuf, s: Slot, dst: &mut [i32]) {
    let src = slot_bytes(arena, s);
    // SAFETY: as in `read_f32`.
    let dst =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(dst)) };
    dst.copy_from_slice(src);
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

    #[test]
    fn a_large_arena_is_zeroed_and_aligned_to_a_huge_page() {
        let len = 3 * HUGE_PAGE + 5;
        let mut a = ArenaBuf::new(len).unwrap();
        assert_eq!(a.as_mut_ptr() as usize % HUGE_PAGE, 0);
        assert_eq!(a.bytes().len(), len);
        assert!(a.bytes().iter().all(|&b| b == 0));
        a.bytes_mut()[len - 1] = 7;
        assert_eq!(a.bytes()[len - 1], 7);
    }
}
