//! Elementwise binary ops with NumPy broadcasting.

use crate::Float;
use crate::util::{broadcast_offset, out_shape, unravel};
use kiln_ir::{BinaryOp, Op, Tensor};

/// `op(x, y)` on one pair of elements.
pub fn apply<T: Float>(op: BinaryOp, x: T, y: T) -> T {
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
    }
}

/// `out[i] = op(a[i'], b[i''])` where `i'`, `i''` are `i` broadcast into `a`'s and `b`'s shapes
/// (dims aligned on the right; a dim of size 1, or a missing one, repeats).
pub fn binary<T: Float>(op: BinaryOp, a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::Binary(op), &[a.shape(), b.shape()])?;
    let vals = (0..out.numel())
        .map(|flat| {
            let idx = unravel(flat, out.dims());
            let x = a.data()[broadcast_offset(&idx, a.dims())];
            let y = b.data()[broadcast_offset(&idx, b.dims())];
            apply(op, x, y)
        })
        .collect();
    Ok(Tensor::new(out, vals).expect("one value per output element"))
}
