//! Fully connected layers and NumPy `matmul`.

use crate::Float;
use crate::util::{broadcast_offset, out_shape, prod, unravel};
use kiln_ir::{Op, Tensor};

/// `y[n, o] = b[o] + Σ_i x[n, i] · w[o, i]` for `x [N, I]`, `w [O, I]`, optional `b [O]`.
pub fn dense<T: Float>(x: &Tensor<T>, w: &Tensor<T>, b: Option<&Tensor<T>>) -> Result<Tensor<T>, String> {
    let mut shapes = vec![x.shape(), w.shape()];
    shapes.extend(b.map(|b| b.shape()));
    let out = out_shape(&Op::Dense, &shapes)?;
    let (n_batch, inputs) = (x.dims()[0], x.dims()[1]);
    let outputs = w.dims()[0];
    let mut y = Tensor::full(out, T::zero());
    for n in 0..n_batch {
        for o in 0..outputs {
            let mut acc = b.map_or(T::zero(), |b| b.data()[o]);
            for i in 0..inputs {
                acc += x.data()[n * inputs + i] * w.data()[o * inputs + i];
            }
            y.data_mut()[n * outputs + o] = acc;
        }
    }
    Ok(y)
}

/// NumPy `matmul`: `c[…, m, n] = Σ_k a[…, m, k] · b[…, k, n]`, the leading (batch) axes
/// broadcast. A rank-1 `a` is a row `[1, K]` and a rank-1 `b` a column `[K, 1]`, and that
/// axis is then removed from the result.
pub fn matmul<T: Float>(a: &Tensor<T>, b: &Tensor<T>) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::MatMul, &[a.shape(), b.shape()])?;
    // Promote rank-1 operands to matrices, as NumPy does.
    let ad: Vec<usize> = if a.dims().len() == 1 {
        vec![1, a.dims()[0]]
    } else {
        a.dims().to_vec()
    };
    let bd: Vec<usize> = if b.dims().len() == 1 {
        vec![b.dims()[0], 1]
    } else {
        b.dims().to_vec()
    };
    let (m, k) = (ad[ad.len() - 2], ad[ad.len() - 1]);
    let n = bd[bd.len() - 1];
    let (a_batch, b_batch) = (&ad[..ad.len() - 2], &bd[..bd.len() - 2]);
    // The broadcast batch dims are the output's dims before its (up to two) matrix axes.
    let batch_rank = a_batch.len().max(b_batch.len());
    let batch: Vec<usize> = out.dims()[..batch_rank].to_vec();

    let mut c = Vec::with_capacity(out.numel());
    for bi in 0..prod(&batch) {
        let idx = unravel(bi, &batch);
        let a_off = broadcast_offset(&idx, a_batch) * m * k;
        let b_off = broadcast_offset(&idx, b_batch) * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = T::zero();
                for l in 0..k {
                    acc += a.data()[a_off + i * k + l] * b.data()[b_off + l * n + j];
                }
                c.push(acc);
            }
        }
    }
    Ok(Tensor::new(out, c).expect("matmul output has the inferred element count"))
}
