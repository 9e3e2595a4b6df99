//! Lowering of the training ops (the backward graph of `kiln-autodiff` and the optimizers'
//! updates), kept apart from the forward lowerings of `lower.rs`. [`supported`] says which of
//! them have a kernel; `compile` rejects a graph holding any other with a clear error, before
//! code generation, so [`emit`] is only called for supported ops.

use crate::codegen::Emitter;
use crate::lower::Args;
use kiln_ir::Op;

/// Whether the training op has a lowering here.
pub fn supported(op: &Op) -> bool {
    let _ = op;
    false
}

/// Writes the kernel of a supported training op and returns its parallel extent.
pub fn emit(e: &mut Emitter, op: &Op, a: &Args) -> usize {
    let _ = (e, a, op);
    0
}
