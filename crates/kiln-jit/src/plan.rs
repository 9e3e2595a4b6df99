//! The arena layout: a byte offset for every value of the graph. Views (flatten, reshape,
//! inference-mode dropout) share their input's storage. Every slot is 64-byte aligned.
//! (Liveness-based reuse is the memory-planning pass of a later issue.)

use kiln_ir::{Graph, NodeId, Op};
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
    /// Scratch memory of nodes whose kernels asked for it (`lower::scratch_len`).
    pub scratch: HashMap<NodeId, Slot>,
    /// Arena size in bytes.
    pub size: usize,
    /// Nodes computed inside their users' kernels, with no storage of their own: an `im2col`
    /// read only as the B of `gemm`s, whose driver packs the patches straight from the image.
    pub fused: HashSet<NodeId>,
}

/// Whether `id` is an `im2col` that only `gemm`s read, as their B.
pub fn is_fused_im2col(graph: &Graph, id: NodeId) -> bool {
    let users = graph.users(id);
    matches!(graph.node(id).op, Op::Im2Col(_))
        && !graph.outputs().contains(&id)
        && !users.is_empty()
        && users.iter().all(|&u| {
            matches!(graph.node(u).op, Op::Gemm(_)) && graph.inputs(u)[1] == id && graph.inputs(u)[0] != id
        })
}

/// Ops whose output is their input's bytes under another shape.
pub fn is_view(op: &Op) -> bool {
    matches!(op, Op::Flatten { .. } | Op::Reshape { .. } | Op::Dropout { .. })
}

pub fn plan(graph: &Graph) -> Plan {
    let mut slots = HashMap::new();
    let mut scratch = HashMap::new();
    let mut size = 0usize;
    let mut fused = HashSet::new();
    for id in graph.topo_order() {
        let node = graph.node(id);
        let len = node.ty.shape.numel();
        let slot = if is_fused_im2col(graph, id) {
            fused.insert(id);
            Slot { offset: 0, len: 0 }
        } else if is_view(&node.op) {
            let src = graph.inputs(id)[0];
            slots[&src]
        } else {
            let offset = size.next_multiple_of(64);
            size = offset + len * 4;
            Slot { offset, len }
        };
        slots.insert(id, slot);
        let types: Vec<&kiln_ir::TensorType> = graph.inputs(id).iter().map(|&i| &graph.node(i).ty).collect();
        let need = crate::lower::scratch_len(&node.op, &types, &node.ty);
        if need > 0 {
            let offset = size.next_multiple_of(64);
            size = offset + need * 4;
            scratch.insert(id, Slot { offset, len: need });
        }
    }
    Plan {
        slots,
        scratch,
        size: size.max(4),
        fused,
    }
}
