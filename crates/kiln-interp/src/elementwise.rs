//! Elementwise binary ops with NumPy broadcasting.

use crate::Float;
use crate::util::{broadcast_offset, out_shape, unravel};
use kiln_ir::{BinaryOp, Op, Tensor, TrainOp};

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

/// Sums `x` down to `shape`, which broadcasts to `x`'s shape: every element of `x` is added
/// to the element of the result that broadcasting maps it from.
pub fn reduce_sum_to<T: Float>(x: &Tensor<T>, shape: &[usize]) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::Train(TrainOp::ReduceSumTo {
            shape: shape.to_vec(),
        }),
        &[x.shape()],
    )?;
    let mut y = Tensor::full(out, T::zero());
    for (flat, &v) in x.data().iter().enumerate() {
        let idx = unravel(flat, x.dims());
        y.data_mut()[broadcast_offset(&idx, shape)] += v;
    }
    Ok(y)
}

/// `factor·x`.
pub fn scale<T: Float>(x: &Tensor<T>, factor: f32) -> Tensor<T> {
    let f = T::from_f64(f64::from(factor));
    x.map(|&v| f * v)
}

/// Training-mode dropout at step `step` (`f32[]`, read as a whole number):
/// `x · keep / (1 − ratio)` with `keep` from [`kiln_ir::op::dropout_keep`].
pub fn dropout_train<T: Float>(
    x: &Tensor<T>,
    step: &Tensor<T>,
    ratio: f32,
    seed: u64,
) -> Result<Tensor<T>, String> {
    let s = step.data().first().ok_or("the step count is empty")?.to_f64();
    let s = if s.is_finite() && s > 0.0 { s as u64 } else { 0 };
    let scale = T::from_f64(1.0 / (1.0 - f64::from(ratio)));
    let vals = x
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if kiln_ir::op::dropout_keep(seed, s, i as u64, ratio) {
                v * scale
            } else {
                T::zero()
            }
        })
        .collect();
    Ok(Tensor::new(x.shape().clone(), vals).expect("same shape"))
}
