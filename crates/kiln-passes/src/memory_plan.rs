//! Memory planning: a byte offset in one arena for every value of the graph.
//!
//! Liveness analysis over the run order (the topological order the kernels run in, which the
//! caller gives: a training graph runs its optimizer updates last) gives each
//! intermediate the steps from the kernel that writes it to the last kernel that reads it;
//! intermediates whose lifetimes do not overlap share memory (first fit over the free list, so
//! a buffer is reused as soon as its last reader has run). Views (flatten, reshape,
//! inference-mode dropout) share their input's storage and keep it alive as long as they are
//! read; an `im2col` fused into its GEMMs has no storage and keeps its image alive until the
//! last of them. A value that only a concatenation reads is written into its slice of the
//! concatenation's slot where that slice is one 64-byte aligned run ([`concat_slices`]); the
//! slot is taken when the first such value is written. Graph inputs, weights, values computed
//! from weights alone (computed once when the weights are loaded) and graph outputs are never
//! reused. Scratch memory of a kernel lives for that kernel only. Every slot is 64-byte
//! aligned. Kernels of one step never overlap in time (the pool puts a barrier between
//! kernels), so reuse needs no further synchronisation.
//!
//! Every size and offset is computed with checked arithmetic: a value's (and a scratch
//! region's) bytes by `kiln_ir::limits::check_bytes`, the arena's growth by `checked_add`, and
//! the totals of the weights and of the arena against `MAX_BYTES` at the end, so a plan that
//! exists has `size ≤ MAX_BYTES` and every slot, scratch region and status word lies inside
//! `[0, size)`. That, with shapes that passed the graph's limits, is what makes the generated
//! code's constant offsets in bounds; a graph whose plan would exceed a limit is a compile
//! error naming the total.
//!
//! What the kernels need beyond their values (scratch regions, status words) is the code
//! generator's knowledge: it hands it to the plan as a [`KernelNeeds`], so the plan knows no
//! lowering and the lowering reads finished offsets.

use kiln_ir::limits::{MAX_BYTES, check_bytes};
use kiln_ir::{Graph, NodeId, Op, TensorType};
use std::collections::{HashMap, HashSet};

/// Where a value lives: byte offset in the arena and element count (4 bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub offset: usize,
    pub len: usize,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub slots: HashMap<NodeId, Slot>,
    /// Scratch memory of nodes whose kernels asked for it ([`KernelNeeds::scratch_len`]).
    pub scratch: HashMap<NodeId, Slot>,
    /// Arena size in bytes.
    pub size: usize,
    /// Bytes of all intermediates and scratch regions if each had its own memory (what the
    /// arena would be without reuse, less the permanent values).
    pub intermediates: usize,
    /// Bytes of the permanent values: inputs, weights, values of the weights, outputs.
    pub permanent: usize,
    /// Nodes computed inside their users' kernels, with no storage of their own: an `im2col`
    /// read only as the B of `gemm`s, whose driver packs the patches straight from the image.
    pub fused: HashSet<NodeId>,
    /// Values written straight into their slice of a concatenation's slot (their slot lies
    /// there), each with that concatenation: [`concat_slices`]. The concatenation's kernel
    /// leaves those slices alone.
    pub slices: HashMap<NodeId, NodeId>,
    /// The byte offset of the 8-byte status word of each node whose kernel can fail at run
    /// time ([`KernelNeeds::has_status`]): `run` sets it to [`STATUS_OK`] before the kernels
    /// run and reads it after. 8-byte aligned, among the permanent values.
    pub status: HashMap<NodeId, usize>,
    /// Bytes of the weights (`param` and `buffer` values).
    pub weights: usize,
    /// Why there is no arena, for a plan made by [`plan`] of a graph [`checked`] refuses.
    pub error: Option<String>,
}

/// What a code generator's kernels need of the arena besides their values.
pub trait KernelNeeds {
    /// The f32 elements of scratch memory the kernel of an `op` node (inputs `ins`, output
    /// `out`) needs while it runs; an error when that size overflows.
    fn scratch_len(&self, op: &Op, ins: &[&TensorType], out: &TensorType) -> Result<usize, String>;
    /// Whether the kernel of an `op` node can fail at run time (a bad class id, say) and so
    /// needs a status word.
    fn has_status(&self, op: &Op) -> bool;
}

/// Kernels that need no scratch and never fail: the plan of the values alone.
pub struct ValuesOnly;

impl KernelNeeds for ValuesOnly {
    fn scratch_len(&self, _: &Op, _: &[&TensorType], _: &TensorType) -> Result<usize, String> {
        Ok(0)
    }
    fn has_status(&self, _: &Op) -> bool {
        false
    }
}

/// A status word's value while its kernel has not failed.
pub const STATUS_OK: u64 = u64::MAX;

impl Plan {
    /// One line: the arena against the sum of the intermediates it holds.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.error {
            return format!("no arena: {e}");
        }
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        let reused = self.size.saturating_sub(self.permanent);
        format!(
            "arena {:.2} MiB: {:.2} MiB inputs, weights and outputs + {:.2} MiB for intermediates, \
             whose sum is {:.2} MiB ({:.1}× reuse)",
            mib(self.size),
            mib(self.permanent),
            mib(reused),
            mib(self.intermediates),
            self.intermediates as f64 / reused.max(1) as f64
        )
    }
}

/// Ops whose output is their input's bytes under another shape.
pub fn is_view(op: &Op) -> bool {
    matches!(op, Op::Flatten { .. } | Op::Reshape { .. } | Op::Dropout { .. })
}

/// Whether `id` is an `im2col` that only `gemm`s read, as their B, each with groups that
/// split the patch rows at channel boundaries (the driver packs a group's rows from its
/// channels of the image).
pub fn is_fused_im2col(graph: &Graph, id: NodeId) -> bool {
    let users = graph.users(id);
    let Op::Im2Col(_) = graph.node(id).op else {
        return false;
    };
    let channels = graph.node(graph.inputs(id)[0]).ty.dims()[1];
    !graph.outputs().contains(&id)
        && !users.is_empty()
        && users.iter().all(|&u| match &graph.node(u).op {
            Op::Gemm(g) => {
                graph.inputs(u)[1] == id && graph.inputs(u)[0] != id && channels.is_multiple_of(g.groups)
            }
            _ => false,
        })
}

/// Ops whose kernel reads element `i` of a same-shaped input right before writing element
/// `i` of its output, and nothing else of that input afterwards: they may write over it.
pub fn is_elementwise(op: &Op) -> bool {
    matches!(op, Op::Activation(_) | Op::Rsqrt { .. } | Op::Binary(_))
}

/// The intermediate an elementwise node `id` can write over: one of its inputs, not a view or
/// a permanent value, of the output's type, whose storage `id` is the last to read.
fn in_place_source(
    graph: &Graph,
    id: NodeId,
    root: &HashMap<NodeId, NodeId>,
    last: &HashMap<NodeId, usize>,
    step: &HashMap<NodeId, usize>,
    permanent: &dyn Fn(NodeId) -> bool,
) -> Option<NodeId> {
    if !is_elementwise(&graph.node(id).op) {
        return None;
    }
    let ty = &graph.node(id).ty;
    graph.inputs(id).into_iter().find(|&i| {
        root[&i] == i
            && &graph.node(i).ty == ty
            && !permanent(i)
            && last.get(&i) == Some(&step[&id])
            && !matches!(graph.node(i).op, Op::Im2Col(_))
    })
}

/// The inputs of concatenations that can be written straight into their slice of the
/// concatenation's slot instead of being copied there by its kernel, each with the
/// concatenation and the slice's byte offset in it: an intermediate (not a view, a fused
/// `im2col`, a concatenation or a permanent value) that only that concatenation reads, once,
/// where each slice is one run of the concatenation (nothing but axes of size 1 before the
/// axis: a batch of one image along channels) and starts and ends on a 64-byte line (as
/// every slot does, so that a kernel that rounds its writes up to a line stays in its slice).
/// Paired on a 2-vCPU Intel Xeon (AVX-512), with and without: SqueezeNet (its fire modules
/// concatenate two convolutions read by nothing else) 0.95 of the time on one thread and 0.90
/// on two, Inception v1 and v2 0.985 (two threads 0.93), DenseNet-121 1.00 (each layer's new
/// channels are written in place, the growing rest is still copied: it is read elsewhere).
fn concat_slices(
    graph: &Graph,
    order: &[NodeId],
    root: &HashMap<NodeId, NodeId>,
    fused: &HashSet<NodeId>,
    permanent: &dyn Fn(NodeId) -> bool,
) -> HashMap<NodeId, (NodeId, usize)> {
    let mut into = HashMap::new();
    for &c in order {
        let Op::Concat { axis } = graph.node(c).op else {
            continue;
        };
        let od = graph.node(c).ty.dims();
        let Ok(ax) = kiln_ir::shape::normalize_axis(axis, od.len(), false) else {
            continue;
        };
        if root[&c] != c || fused.contains(&c) || od[..ax].iter().any(|&d| d != 1) {
            continue;
        }
        let tail: usize = od[ax + 1..].iter().product();
        let ins = graph.inputs(c);
        let mut at = 0usize;
        for &i in &ins {
            // (each input's elements are counted in the concatenation's, which passed the
            // graph's limits: no overflow)
            let len = graph.node(i).ty.dims().get(ax).copied().unwrap_or(0) * tail;
            // the value that owns the input's storage (a convolution's output reaches a
            // concatenation through a reshape), read by nothing but `c` through its views
            let r = root[&i];
            let sole = only_feeds(graph, r, c) && ins.iter().filter(|&&x| root[&x] == r).count() == 1;
            if sole
                && len > 0
                && len == graph.node(r).ty.shape.numel()
                && !fused.contains(&r)
                && !permanent(r)
                && !matches!(graph.node(r).op, Op::Concat { .. })
                && (at * 4).is_multiple_of(64)
                && (len * 4).is_multiple_of(64)
            {
                into.insert(r, (c, at * 4));
            }
            at += len;
        }
    }
    into
}

/// Whether `v` is read by `c` alone, directly or through views of it that only `c` reads.
fn only_feeds(graph: &Graph, v: NodeId, c: NodeId) -> bool {
    let users = graph.users(v);
    !users.is_empty()
        && !graph.outputs().contains(&v)
        && users
            .iter()
            .all(|&u| u == c || (is_view(&graph.node(u).op) && only_feeds(graph, u, c)))
}

/// The bytes of a slot of `len` 4-byte elements, rounded up to whole 64-byte lines; an error
/// above `MAX_BYTES` (`what` names the value).
fn bytes(len: usize, what: &str) -> Result<usize, String> {
    // ≤ MAX_BYTES + 63 after rounding: no overflow
    Ok(check_bytes(len, 4, what)?.next_multiple_of(64).max(64))
}

/// The bytes of a slot already checked by `bytes` (its size cannot fail again).
fn slot_bytes(len: usize) -> usize {
    (len * 4).next_multiple_of(64).max(64)
}

/// Free ranges of the arena, first fit.
#[derive(Default)]
struct Arena {
    /// Sorted, disjoint, coalesced `(offset, size)` free blocks below `top`.
    free: Vec<(usize, usize)>,
    top: usize,
}

impl Arena {
    /// The offset of a fresh block of `size` bytes. The arena may grow past `MAX_BYTES` here
    /// (`checked` refuses the plan at the end, naming its total), not past `usize`: an error
    /// then. Invariant: every block (free or handed out) lies below `top`, so the sums below
    /// `top` cannot overflow.
    fn alloc(&mut self, size: usize, what: &str) -> Result<usize, String> {
        if let Some(i) = self.free.iter().position(|&(_, s)| s >= size) {
            let (off, s) = self.free[i];
            if s == size {
                self.free.remove(i);
            } else {
                self.free[i] = (off + size, s - size);
            }
            return Ok(off);
        }
        let too_big = |base: usize| {
            format!(
                "the memory plan needs more than {} bytes ({what} at offset {base} takes {size}), \
                 above the limit of {MAX_BYTES} bytes per arena",
                usize::MAX
            )
        };
        // grow, absorbing a free block that ends at the top
        if let Some(&(off, s)) = self.free.last()
            && off + s == self.top
        {
            let top = off.checked_add(size).ok_or_else(|| too_big(off))?;
            self.free.pop();
            self.top = top;
            return Ok(off);
        }
        let off = self.top;
        self.top = off.checked_add(size).ok_or_else(|| too_big(off))?;
        Ok(off)
    }

    fn release(&mut self, off: usize, size: usize) {
        let i = self.free.partition_point(|&(o, _)| o < off);
        self.free.insert(i, (off, size));
        // coalesce with the next and the previous block
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// The plan of `graph` for display (`kiln compile --emit optimized`): [`checked`]'s, or an
/// empty plan whose `error` (and `describe`) says why there is none.
pub fn plan(graph: &Graph, needs: &dyn KernelNeeds) -> Plan {
    checked(graph, &graph.topo_order(), needs).unwrap_or_else(|e| Plan {
        slots: HashMap::new(),
        scratch: HashMap::new(),
        size: 0,
        intermediates: 0,
        permanent: 0,
        fused: HashSet::new(),
        slices: HashMap::new(),
        status: HashMap::new(),
        weights: 0,
        error: Some(e),
    })
}

/// Plans the arena of `graph` for kernels that run in `order` (a topological order of every
/// node): a value lives until its last reader in that order. An error (naming the size) when
/// a value, a scratch region, the weights or the whole arena would exceed
/// `kiln_ir::limits::MAX_BYTES`.
pub fn checked(graph: &Graph, order: &[NodeId], needs: &dyn KernelNeeds) -> Result<Plan, String> {
    let order = order.to_vec();
    let step: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let constant = crate::constant_nodes(graph);
    let fused: HashSet<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| is_fused_im2col(graph, id))
        .collect();
    // the node that owns each value's storage (views and fused im2cols map to their source)
    let mut root: HashMap<NodeId, NodeId> = HashMap::new();
    for &id in &order {
        let op = &graph.node(id).op;
        let r = if is_view(op) || fused.contains(&id) {
            root[&graph.inputs(id)[0]]
        } else {
            id
        };
        root.insert(id, r);
    }
    // last step at which each storage is read
    let mut last: HashMap<NodeId, usize> = HashMap::new();
    for &id in &order {
        for i in graph.inputs(id) {
            let e = last.entry(root[&i]).or_insert(0);
            *e = (*e).max(step[&id]);
        }
    }
    let permanent = |id: NodeId| {
        matches!(graph.node(id).op, Op::Input(_) | Op::Param { .. })
            || constant.contains(&id)
            || graph.outputs().iter().any(|&o| root[&o] == id)
    };
    let into = concat_slices(graph, &order, &root, &fused, &permanent);
    // the slot of each concatenation that inputs are written into, taken when the first of
    // them is written (it lives from there to its last reader)
    let mut taken: HashMap<NodeId, usize> = HashMap::new();
    let mut arena = Arena::default();
    let mut slots = HashMap::new();
    let mut scratch = HashMap::new();
    // statistics only (the sum without reuse may exceed the limit the arena is held to)
    let (mut intermediates, mut perm_bytes) = (0usize, 0usize);
    let mut weights = 0usize;
    let name = |id: NodeId| format!("`{}`", graph.node(id).name);
    // Permanent values first, below everything else: inputs and weights are written before a
    // run starts, so no intermediate may ever have used their memory.
    for &id in &order {
        if root[&id] == id && !fused.contains(&id) && permanent(id) {
            let len = graph.node(id).ty.shape.numel();
            let size = bytes(len, &name(id))?;
            if matches!(graph.node(id).op, Op::Param { .. }) {
                // each ≤ MAX_BYTES + 63, fewer than 2³⁰ of them: no saturation in practice
                weights = weights.saturating_add(size);
            }
            slots.insert(
                id,
                Slot {
                    offset: arena.alloc(size, &name(id))?,
                    len,
                },
            );
            perm_bytes = perm_bytes.saturating_add(size);
        }
    }
    if weights > MAX_BYTES {
        return Err(format!(
            "the weights take {weights} bytes, above the limit of {MAX_BYTES} bytes per model"
        ));
    }
    // the status words of the kernels that can fail, in one permanent region
    let failing: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&id| !fused.contains(&id) && needs.has_status(&graph.node(id).op))
        .collect();
    let mut status = HashMap::new();
    if !failing.is_empty() {
        let size = bytes(2 * failing.len(), "status words")?;
        let base = arena.alloc(size, "status words")?;
        perm_bytes = perm_bytes.saturating_add(size);
        for (i, &id) in failing.iter().enumerate() {
            status.insert(id, base + 8 * i);
        }
    }
    // storages (by owner) and scratch regions to release after each step
    let mut dying: HashMap<usize, Vec<NodeId>> = HashMap::new();
    let mut dying_scratch: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for &id in &order {
        let node = graph.node(id);
        let len = node.ty.shape.numel();
        // a value nobody reads dies at once
        let dies = last.get(&id).copied().unwrap_or(step[&id]);
        let slot = if fused.contains(&id) {
            Slot { offset: 0, len: 0 }
        } else if root[&id] != id {
            slots[&root[&id]]
        } else if permanent(id) {
            slots[&id]
        } else if let Some(&(c, at)) = into.get(&id) {
            // its slice of the concatenation's slot: the concatenation's memory, taken now if
            // this is its first such input (a permanent concatenation has its slot already)
            let base = match (slots.get(&c), taken.get(&c)) {
                (Some(s), _) => s.offset,
                (None, Some(&base)) => base,
                (None, None) => {
                    let clen = graph.node(c).ty.shape.numel();
                    let size = bytes(clen, &name(c))?;
                    let base = arena.alloc(size, &name(c))?;
                    intermediates = intermediates.saturating_add(size);
                    dying
                        .entry(last.get(&c).copied().unwrap_or(step[&c]))
                        .or_default()
                        .push(c);
                    taken.insert(c, base);
                    base
                }
            };
            Slot {
                offset: base + at,
                len,
            }
        } else if let Some(&base) = taken.get(&id) {
            Slot { offset: base, len }
        } else if let Some(src) = in_place_source(graph, id, &root, &last, &step, &permanent) {
            // an elementwise op over a value it is the last to read: write over it (same type,
            // so the same size as the slot it takes)
            if let Some(here) = dying.get_mut(&step[&id]) {
                here.retain(|&n| n != src);
            }
            dying.entry(dies).or_default().push(id);
            intermediates = intermediates.saturating_add(bytes(len, &name(id))?);
            Slot {
                offset: slots[&src].offset,
                len,
            }
        } else {
            let size = bytes(len, &name(id))?;
            let offset = arena.alloc(size, &name(id))?;
            intermediates = intermediates.saturating_add(size);
            dying.entry(dies).or_default().push(id);
            Slot { offset, len }
        };
        slots.insert(id, slot);
        let types: Vec<&kiln_ir::TensorType> = graph.inputs(id).iter().map(|&i| &graph.node(i).ty).collect();
        let need = needs
            .scratch_len(&node.op, &types, &node.ty)
            .map_err(|e| format!("scratch of {}: {e}", name(id)))?;
        if need > 0 {
            let what = format!("the scratch of {}", name(id));
            let size = bytes(need, &what)?;
            let offset = arena.alloc(size, &what)?;
            intermediates = intermediates.saturating_add(size);
            scratch.insert(id, Slot { offset, len: need });
            dying_scratch.entry(step[&id]).or_default().push((offset, size));
        }
        for (off, size) in dying_scratch.remove(&step[&id]).unwrap_or_default() {
            arena.release(off, size);
        }
        for n in dying.remove(&step[&id]).unwrap_or_default() {
            arena.release(slots[&n].offset, slot_bytes(slots[&n].len));
        }
    }
    if arena.top > MAX_BYTES {
        return Err(format!(
            "the memory plan needs {} bytes ({perm_bytes} of them for inputs, weights and outputs), \
             above the limit of {MAX_BYTES} bytes per arena",
            arena.top
        ));
    }
    Ok(Plan {
        slots,
        scratch,
        size: arena.top.max(4),
        intermediates,
        permanent: perm_bytes,
        fused,
        slices: into.into_iter().map(|(i, (c, _))| (i, c)).collect(),
        status,
        weights,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(src: &str) -> (Graph, Plan) {
        let g = kiln_ir::text::parse(src).unwrap();
        let p = checked(&g, &g.topo_order(), &ValuesOnly).unwrap();
        (g, p)
    }

    /// Whether the byte ranges of `a` and `b` overlap.
    fn overlap(a: Slot, b: Slot) -> bool {
        a.offset < b.offset + b.len * 4 && b.offset < a.offset + a.len * 4
    }

    #[test]
    fn a_chain_reuses_the_memory_of_values_already_read() {
        let (g, p) = plan_of(
            "graph g {
  input %x: f32[1, 1024]
  %a = softmax(%x) {axis=1}
  %b = softmax(%a) {axis=1}
  %c = softmax(%b) {axis=1}
  %d = softmax(%c) {axis=1}
  output %d
}",
        );
        let s = |n: &str| p.slots[&g.find(n).unwrap()];
        assert!(!overlap(s("a"), s("b")), "b is written while a is read");
        assert_eq!(
            s("c").offset,
            s("a").offset,
            "c reuses a, whose last reader has run"
        );
        assert!(
            !overlap(s("x"), s("a")) && !overlap(s("x"), s("c")),
            "inputs are never reused"
        );
        assert_eq!(s("x").offset, 0, "permanent values come first");
        assert_eq!(p.intermediates, 3 * 4096);
        assert_eq!(p.size, p.permanent + 2 * 4096, "two buffers serve the chain");
    }

    #[test]
    fn elementwise_ops_write_over_an_input_they_read_last() {
        let (g, p) = plan_of(
            "graph g {
  input %x: f32[1, 1024]
  %a = softmax(%x) {axis=1}
  %b = relu(%a)
  %c = add(%b, %a)
  %d = tanh(%c)
  %e = mul(%d, %d)
  %f = softmax(%e) {axis=1}
  output %f
}",
        );
        let s = |n: &str| p.slots[&g.find(n).unwrap()];
        assert!(!overlap(s("a"), s("b")), "a is read again by c");
        assert_eq!(
            s("c").offset,
            s("b").offset,
            "c writes over b (or a), read last by c"
        );
        assert_eq!(s("d").offset, s("c").offset);
        assert_eq!(s("e").offset, s("d").offset);
        assert!(!overlap(s("f"), s("e")), "softmax is not elementwise");
    }

    #[test]
    fn a_view_keeps_its_source_alive_and_outputs_are_never_reused() {
        let (g, p) = plan_of(
            "graph g {
  input %x: f32[2, 8]
  %a = relu(%x)
  %v = reshape(%a) {shape=[16]}
  %b = tanh(%x)
  %c = sigmoid(%b)
  %y = relu(%v)
  output %y
  output %b
}",
        );
        let s = |n: &str| p.slots[&g.find(n).unwrap()];
        assert_eq!(s("v"), s("a"));
        for other in ["b", "c"] {
            assert!(!overlap(s("a"), s(other)), "a is read through v until y");
        }
        assert!(
            !overlap(s("b"), s("c")) && !overlap(s("b"), s("y")),
            "outputs keep their memory"
        );
    }

    /// A concatenation's inputs that only it reads are written into their slices of its slot,
    /// which is taken when the first of them is written; an input read elsewhere too, or a
    /// slice off a 64-byte line, keeps a slot of its own (and is copied).
    #[test]
    fn concatenated_values_are_written_into_their_slices() {
        let (g, p) = plan_of(
            "graph g {
  input %x: f32[1, 16, 4, 4]
  %a = relu(%x)
  %t = softmax(%x) {axis=1}
  %b = tanh(%x)
  %r = reshape(%b) {shape=[1, 16, 4, 4]}
  %c = concat(%a, %r, %t) {axis=1}
  %d = softmax(%c) {axis=1}
  %u = relu(%t)
  output %d
  output %u
}",
        );
        let s = |n: &str| p.slots[&g.find(n).unwrap()];
        let id = |n: &str| g.find(n).unwrap();
        // 16·16 floats per input: 1 KiB slices
        assert_eq!(s("a").offset, s("c").offset);
        assert_eq!(s("b").offset, s("c").offset + 1024, "through its reshape");
        assert_eq!(s("r"), s("b"));
        assert_eq!(p.slices.get(&id("a")), Some(&id("c")));
        assert_eq!(p.slices.get(&id("b")), Some(&id("c")));
        assert!(!p.slices.contains_key(&id("t")), "t is read by u too");
        assert!(!overlap(s("t"), s("c")));
        // c's slot was taken when a was written: t, written in between, is elsewhere, and
        // b's slice lies where nothing else lives
        assert!(!overlap(s("b"), s("t")) && !overlap(s("a"), s("t")));
        // two inputs of `dims` concatenated along axis 1 into the output
        let pair = |dims: &str| {
            plan_of(&format!(
                "graph g {{\n  input %x: f32[{dims}]\n  %a = relu(%x)\n  %b = tanh(%x)\n  \
                 %c = concat(%a, %b) {{axis=1}}\n  output %c\n}}"
            ))
        };
        assert_eq!(pair("1, 16, 4, 4").1.slices.len(), 2, "into an output's slot too");
        // a batch of two: each input's slice is two runs, so they are copied
        let (g, p) = pair("2, 16, 4, 4");
        assert!(p.slices.is_empty());
        let s = |n: &str| p.slots[&g.find(n).unwrap()];
        assert!(!overlap(s("a"), s("c")) && !overlap(s("b"), s("c")));
        // slices off a line (3 floats each): copied
        assert!(pair("1, 3").1.slices.is_empty());
    }

    /// Every pair of values alive at the same step has disjoint memory, on random graphs.
    #[test]
    fn live_values_never_share_memory_on_random_graphs() {
        for seed in 0u64..200 {
            let bytes: Vec<u8> = (0..96)
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
                .collect();
            let g = kiln_ir::random::graph_from_bytes(&bytes);
            let p = checked(&g, &g.topo_order(), &ValuesOnly).unwrap();
            let order = g.topo_order();
            let pos: HashMap<_, _> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
            let owners: Vec<NodeId> = order
                .iter()
                .copied()
                .filter(|&n| !is_view(&g.node(n).op) && !p.fused.contains(&n))
                .collect();
            // the interval of a storage: from its writer to its last reader through any alias
            let end = |n: NodeId| {
                let mut e = pos[&n];
                let mut stack = vec![n];
                while let Some(v) = stack.pop() {
                    for u in g.users(v) {
                        e = e.max(pos[&u]);
                        if is_view(&g.node(u).op) || p.fused.contains(&u) {
                            stack.push(u);
                        }
                    }
                }
                let forever = g.outputs().iter().any(|&o| {
                    let mut r = o;
                    while is_view(&g.node(r).op) {
                        r = g.inputs(r)[0];
                    }
                    r == n
                }) || matches!(g.node(n).op, Op::Input(_) | Op::Param { .. });
                if forever { usize::MAX } else { e }
            };
            for (i, &a) in owners.iter().enumerate() {
                for &b in &owners[i + 1..] {
                    let (sa, sb) = (p.slots[&a], p.slots[&b]);
                    if sa.len == 0 || sb.len == 0 {
                        continue;
                    }
                    // in place: an elementwise `b` writing over `a`, its input read last by it
                    let in_place =
                        pos[&b] == end(a) && is_elementwise(&g.node(b).op) && g.inputs(b).contains(&a);
                    // a concatenation's input written into its slice: inside the slot, by design
                    let inside = |x: Slot, y: Slot| {
                        y.offset <= x.offset && x.offset + x.len * 4 <= y.offset + y.len * 4
                    };
                    let sliced = (p.slices.get(&a) == Some(&b) && inside(sa, sb))
                        || (p.slices.get(&b) == Some(&a) && inside(sb, sa));
                    let live_together = pos[&b] <= end(a) && pos[&a] <= end(b) && !in_place && !sliced;
                    assert!(
                        !(live_together && overlap(sa, sb)),
                        "seed {seed}: {} and {} overlap",
                        g.node(a).name,
                        g.node(b).name
                    );
                }
            }
        }
    }
}
