//! Local response normalization across channels (`Op::Lrn`) and its backward (`TrainOp::LrnGrad`).

use crate::Float;
use crate::util::{out_shape, prod};
use kiln_ir::{Op, Tensor, TrainOp};

/// The channel window of LRN: channel `c` sums channels `[c − lo, c + hi]` (clipped) with
/// `lo = ⌊(size−1)/2⌋`, `hi = ⌈(size−1)/2⌉`.
fn halves(size: usize) -> (usize, usize) {
    let lo = (size - 1) / 2;
    (lo, size - 1 - lo)
}

/// `x [N, C, …]` seen as `[N, C, S]`.
fn ncs(dims: &[usize]) -> (usize, usize, usize) {
    (dims[0], dims[1], prod(&dims[2..]))
}

/// The base `s = bias + alpha/size · Σ_{c' ∈ W(c)} x[n, c', …]²` of every element.
fn bases<T: Float>(x: &Tensor<T>, size: usize, alpha: f32, bias: f32) -> Vec<T> {
    let (n, c, s) = ncs(x.dims());
    let (lo, hi) = halves(size);
    let scale = T::from_f64(f64::from(alpha) / size as f64);
    let bias = T::from_f64(f64::from(bias));
    let d = x.data();
    let mut out = vec![T::zero(); d.len()];
    for b in 0..n {
        for ch in 0..c {
            let (first, last) = (ch.saturating_sub(lo), (ch + hi).min(c - 1));
            for p in 0..s {
                let mut sum = T::zero();
                for k in first..=last {
                    let v = d[(b * c + k) * s + p];
                    sum += v * v;
                }
                out[(b * c + ch) * s + p] = bias + scale * sum;
            }
        }
    }
    out
}

/// `y = x / (bias + alpha/size · Σ_{c'} x[n, c', …]²)^beta` (see `Op::Lrn`).
pub fn lrn<T: Float>(
    x: &Tensor<T>,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        },
        &[x.shape()],
    )?;
    let beta = T::from_f64(f64::from(beta));
    let vals = bases(x, size, alpha, bias)
        .into_iter()
        .zip(x.data())
        .map(|(s, &v)| v / s.powf(beta))
        .collect();
    Ok(Tensor::new(out, vals).expect("same shape"))
}

/// LRN's backward from the forward input `x` and the delta `dy` (see `TrainOp::LrnGrad`):
/// `dx_k = dy_k·s_k^{−beta} − 2·alpha·beta/size · x_k · Σ_{c : k ∈ W(c)} dy_c·x_c·s_c^{−beta−1}`.
pub fn lrn_grad<T: Float>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    size: usize,
    alpha: f32,
    beta: f32,
    bias: f32,
) -> Result<Tensor<T>, String> {
    let out = out_shape(
        &Op::Train(TrainOp::LrnGrad {
            size,
            alpha,
            beta,
            bias,
        }),
        &[x.shape(), dy.shape()],
    )?;
    let s = bases(x, size, alpha, bias);
    let (n, c, sp) = ncs(x.dims());
    let (lo, hi) = halves(size);
    let (xd, g) = (x.data(), dy.data());
    let b = T::from_f64(f64::from(beta));
    let coef = T::from_f64(2.0 * f64::from(alpha) * f64::from(beta) / size as f64);
    // t_c = dy_c·x_c·s_c^{−beta−1}
    let t: Vec<T> = (0..xd.len())
        .map(|i| g[i] * xd[i] / s[i].powf(b + T::one()))
        .collect();
    let mut vals = vec![T::zero(); xd.len()];
    for bn in 0..n {
        for k in 0..c {
            // the channels whose window holds k
            let (first, last) = (k.saturating_sub(hi), (k + lo).min(c - 1));
            for p in 0..sp {
                let i = (bn * c + k) * sp + p;
                let mut sum = T::zero();
                for ch in first..=last {
                    sum += t[(bn * c + ch) * sp + p];
                }
                vals[i] = g[i] / s[i].powf(b) - coef * xd[i] * sum;
            }
        }
    }
    Ok(Tensor::new(out, vals).expect("same shape"))
}
