//! Reductions over axes and their adjoint: `reduce_mean` and `broadcast_to`.

use crate::Float;
use crate::util::{broadcast_offset, out_shape, unravel};
use kiln_ir::{Op, Tensor, TrainOp, shape};

/// The mean of `x` over `axes` (see `Op::ReduceMean`): every element is added to the output
/// element with the reduced axes' indices set to 0, and each sum divided by the number of
/// elements it took.
pub fn reduce_mean<T: Float>(x: &Tensor<T>, axes: &[usize], keepdims: bool) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::ReduceMean {
            axes: axes.to_vec(),
            keepdims,
        },
        &[x.shape()],
    )?;
    // the output's dims with the reduced axes kept as 1: the same elements in the same order
    let kept = shape::reduce_dims(axes, true, x.dims())?;
    let mut sums = vec![T::zero(); out.numel()];
    for (flat, &v) in x.data().iter().enumerate() {
        let idx = unravel(flat, x.dims());
        sums[broadcast_offset(&idx, &kept)] += v;
    }
    let count: usize = axes.iter().map(|&a| x.dims()[a]).product();
    let count = T::from_usize(count);
    let vals = sums.into_iter().map(|s| s / count).collect();
    Ok(Tensor::new(out, vals).expect("one value per output element"))
}

/// `x` repeated along its size-1 and missing leading axes up to `shape` (NumPy broadcasting;
/// see `TrainOp::BroadcastTo`).
pub fn broadcast_to<T: Float>(x: &Tensor<T>, shape: &[usize]) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::Train(TrainOp::BroadcastTo {
            shape: shape.to_vec(),
        }),
        &[x.shape()],
    )?;
    let vals = (0..out.numel())
        .map(|flat| x.data()[broadcast_offset(&unravel(flat, out.dims()), x.dims())])
        .collect();
    Ok(Tensor::new(out, vals).expect("one value per output element"))
}
