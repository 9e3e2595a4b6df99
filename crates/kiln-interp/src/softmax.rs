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

/// Applies `f(y_row, dy_row)` along `axis` of two same-shaped tensors.
fn along_axis2<T: Float>(
    y: &Tensor<T>,
    dy: &Tensor<T>,
    axis: i64,
    f: impl Fn(&[T], &[T]) -> Vec<T>,
) -> Result<Tensor<T>, String> {
    if y.shape() != dy.shape() {
        return Err(format!(
            "output {} and delta {} differ in shape",
            y.shape(),
            dy.shape()
        ));
    }
    let a = normalize_axis(axis, y.dims().len(), false)?;
    let (outer, len, inner) = (prod(&y.dims()[..a]), y.dims()[a], prod(&y.dims()[a + 1..]));
    let mut dx = y.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * len + k) * inner + i;
            let yr: Vec<T> = (0..len).map(|k| y.data()[at(k)]).collect();
            let gr: Vec<T> = (0..len).map(|k| dy.data()[at(k)]).collect();
            for (k, v) in f(&yr, &gr).into_iter().enumerate() {
                dx.data_mut()[at(k)] = v;
            }
        }
    }
    Ok(dx)
}

/// Softmax's backward from its output `y`: `dx = y·(dy − Σ dy·y)` along `axis`.
pub fn softmax_grad<T: Float>(y: &Tensor<T>, dy: &Tensor<T>, axis: i64) -> Result<Tensor<T>, String> {
    along_axis2(y, dy, axis, |y, g| {
        let mut dot = T::zero();
        for (&a, &b) in y.iter().zip(g) {
            dot += a * b;
        }
        y.iter().zip(g).map(|(&a, &b)| a * (b - dot)).collect()
    })
}

/// Log-softmax's backward from its output `y`: `dx = dy − exp(y)·Σ dy` along `axis`.
pub fn log_softmax_grad<T: Float>(y: &Tensor<T>, dy: &Tensor<T>, axis: i64) -> Result<Tensor<T>, String> {
    along_axis2(y, dy, axis, |y, g| {
        let mut sum = T::zero();
        for &b in g {
            sum += b;
        }
        y.iter().zip(g).map(|(&a, &b)| b - a.exp() * sum).collect()
    })
}
