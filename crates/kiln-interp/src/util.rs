//! Small helpers shared by the kernels: the output shape from kiln-ir's shape rule (so no
//! kernel restates a size formula), and row-major index arithmetic.

use kiln_ir::{Op, Shape, TensorType, shape};

/// The output shape of `op` over inputs of these shapes, from kiln-ir's one shape rule. The
/// kernels call this first, so a kernel called directly with inconsistent tensors returns the
/// shape rule's message instead of indexing out of bounds.
pub(crate) fn out_shape(op: &Op, inputs: &[&Shape]) -> Result<Shape, String> {
    let types: Vec<TensorType> = inputs.iter().map(|s| TensorType::f32((*s).clone())).collect();
    let refs: Vec<&TensorType> = types.iter().collect();
    shape::infer(op, &refs).map(|t| t.shape)
}

/// The multi-index of row-major position `flat` in a tensor of `dims`.
pub(crate) fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        idx[a] = flat % dims[a];
        flat /= dims[a];
    }
    idx
}

/// The row-major offset, in a tensor of `dims`, of the element that NumPy broadcasting maps
/// output index `idx` to: dims are aligned on the right, and a dim of size 1 always reads
/// index 0. `idx` has at least as many axes as `dims`.
pub(crate) fn broadcast_offset(idx: &[usize], dims: &[usize]) -> usize {
    let skip = idx.len() - dims.len();
    let mut off = 0;
    for (a, &d) in dims.iter().enumerate() {
        let i = if d == 1 { 0 } else { idx[skip + a] };
        off = off * d + i;
    }
    off
}

/// Product of dims (1 for none).
pub(crate) fn prod(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The input coordinate `padded − pad` that a window tap at padded coordinate `padded` reads,
/// or `None` when that is outside `0..n` (the tap is in the padding, or past it).
pub(crate) fn unpad(padded: usize, pad: usize, n: usize) -> Option<usize> {
    padded.checked_sub(pad).filter(|&i| i < n)
}
