//! Softmax and log-softmax along one axis, stabilized by subtracting the maximum.

use crate::Float;
use crate::util::prod;
use kiln_ir::Tensor;
use kiln_ir::shape::normalize_axis;

/// Applies `f` to every 1-D slice of `x` along `axis` (negative counts from the end).
fn along_axis<T: Float>(x: &Tensor<T>, axis: i64, f: impl Fn(&[T]) -> Vec<T>) -> Result<Tensor<T>, String> {
    let a = normalize_axis(axis, x.dims().len(), false)?;
    let (outer, len, inner) = (prod(&x.dims()[..a]), x.dims()[a], prod(&x.dims()[a + 1..]));
    let mut y = x.clone();
    let mut row = vec![T::zero(); len];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            for (k, r) in row.iter_mut().enumerate() {
                *r = x.data()[at(k)];
            }
            for (k, v) in f(&row).into_iter().enumerate() {
                y.data_mut()[at(k)] = v;
            }
        }
    }
    Ok(y)
}

/// The maximum `m` of a row and `Σ exp(x − m)` — the stable pieces of both functions.
fn max_and_sum_exp<T: Float>(row: &[T]) -> (T, T) {
    let mut m = T::neg_infinity();
    for &v in row {
        if v > m {
            m = v;
        }
    }
    let mut s = T::zero();
    for &v in row {
        s += (v - m).exp();
    }
    (m, s)
}

/// `softmax(x)_k = exp(x_k − m) / Σ_j exp(x_j − m)` with `m` the row's maximum.
pub fn softmax_row<T: Float>(row: &[T]) -> Vec<T> {
    let (m, s) = max_and_sum_exp(row);
    row.iter().map(|&v| (v - m).exp() / s).collect()
}

/// `log_softmax(x)_k = x_k − m − ln Σ_j exp(x_j − m)` with `m` the row's maximum.
pub fn log_softmax_row<T: Float>(row: &[T]) -> Vec<T> {
    let (m, s) = max_and_sum_exp(row);
    let lse = s.ln();
    row.iter().map(|&v| v - m - lse).collect()
}

/// Softmax of `x` along `axis`.
pub fn softmax<T: Float>(x: &Tensor<T>, axis: i64) -> Result<Tensor<T>, String> {
    along_axis(x, axis, softmax_row)
}

/// Log-softmax of `x` along `axis`.
pub fn log_softmax<T: Float>(x: &Tensor<T>, axis: i64) -> Result<Tensor<T>, String> {
    along_axis(x, axis, log_softmax_row)
}
