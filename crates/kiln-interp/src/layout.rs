//! Ops that only move elements: flatten, reshape, transpose, concat (and dropout at
//! inference, the identity). Generic over the element type, since index tensors pass
//! through them too.

use crate::util::{out_shape, prod, unravel};
use kiln_ir::shape::normalize_axis;
use kiln_ir::{Op, Tensor};

/// ONNX `Flatten`: the same elements as `[∏ dims[..axis], ∏ dims[axis..]]`.
pub fn flatten<E: Clone>(x: &Tensor<E>, axis: i64) -> Result<Tensor<E>, String> {
    let out = out_shape(&Op::Flatten { axis }, &[x.shape()])?;
    Ok(x.clone().reshaped(out).expect("flatten keeps the element count"))
}

/// ONNX `Reshape`: the same elements in row-major order, in the shape the shape rule infers
/// from `shape` (`0` copies a dim, one `-1` is inferred).
pub fn reshape<E: Clone>(x: &Tensor<E>, shape: &[i64]) -> Result<Tensor<E>, String> {
    let out = out_shape(
        &Op::Reshape {
            shape: shape.to_vec(),
        },
        &[x.shape()],
    )?;
    Ok(x.clone().reshaped(out).expect("reshape keeps the element count"))
}

/// Permutes axes: output axis `i` is input axis `perm[i]`, i.e.
/// `y[j_0, …, j_{r−1}] = x[i]` with `i[perm[a]] = j_a`.
pub fn transpose<E: Clone>(x: &Tensor<E>, perm: &[usize]) -> Result<Tensor<E>, String> {
    let out = out_shape(&Op::Transpose { perm: perm.to_vec() }, &[x.shape()])?;
    let strides = x.shape().strides();
    let vals = (0..out.numel())
        .map(|flat| {
            let j = unravel(flat, out.dims());
            let offset: usize = j.iter().zip(perm).map(|(&ja, &p)| ja * strides[p]).sum();
            x.data()[offset].clone()
        })
        .collect();
    Ok(Tensor::new(out, vals).expect("transpose keeps the element count"))
}

/// Joins `xs` along `axis`: for each index of the axes before `axis`, the slabs of the inputs
/// one after another.
pub fn concat<E: Clone>(xs: &[&Tensor<E>], axis: i64) -> Result<Tensor<E>, String> {
    let shapes: Vec<_> = xs.iter().map(|x| x.shape()).collect();
    let out = out_shape(&Op::Concat { axis }, &shapes)?;
    let a = normalize_axis(axis, out.rank(), false)?;
    let outer = prod(&out.dims()[..a]);
    let mut vals = Vec::with_capacity(out.numel());
    for o in 0..outer {
        for x in xs {
            // One slab: the input's extent along `axis` times everything after it.
            let slab = prod(&x.dims()[a..]);
            vals.extend_from_slice(&x.data()[o * slab..(o + 1) * slab]);
        }
    }
    Ok(Tensor::new(out, vals).expect("concat output has the inferred element count"))
}

/// Elements `start..end` of `x` along `axis`.
pub fn slice<E: Clone>(x: &Tensor<E>, axis: i64, start: usize, end: usize) -> Result<Tensor<E>, String> {
    let out = out_shape(&Op::Slice { axis, start, end }, &[x.shape()])?;
    let a = normalize_axis(axis, x.dims().len(), false)?;
    let (outer, len, inner) = (prod(&x.dims()[..a]), x.dims()[a], prod(&x.dims()[a + 1..]));
    let mut vals = Vec::with_capacity(out.numel());
    for o in 0..outer {
        vals.extend_from_slice(&x.data()[(o * len + start) * inner..(o * len + end) * inner]);
    }
    Ok(Tensor::new(out, vals).expect("one value per output element"))
}
