//! Batch normalization at inference.

use crate::Float;
use crate::util::{out_shape, prod};
use kiln_ir::{BnPart, Op, Tensor, TrainOp};

/// `y = (x − mean[c]) / √(var[c] + ε) · scale[c] + bias[c]` where `c` is the index along
/// axis 1 of `x [N, C, …]`.
pub fn batch_norm<T: Float>(
    x: &Tensor<T>,
    scale: &Tensor<T>,
    bias: &Tensor<T>,
    mean: &Tensor<T>,
    var: &Tensor<T>,
    epsilon: f32,
) -> Result<Tensor<T>, String> {
    let op = Op::BatchNorm {
        epsilon,
        activation: None,
    };
    out_shape(
        &op,
        &[x.shape(), scale.shape(), bias.shape(), mean.shape(), var.shape()],
    )?;
    let eps = T::from_f64(f64::from(epsilon));
    let (n, c, inner) = (x.dims()[0], x.dims()[1], prod(&x.dims()[2..]));
    let mut y = x.clone();
    for b in 0..n {
        for ch in 0..c {
            let (m, v) = (mean.data()[ch], var.data()[ch]);
            let (s, sh) = (scale.data()[ch], bias.data()[ch]);
            for i in 0..inner {
                let at = (b * c + ch) * inner + i;
                y.data_mut()[at] = (x.data()[at] - m) / (v + eps).sqrt() * s + sh;
            }
        }
    }
    Ok(y)
}

/// Per channel of `x [N, C, …]`: the batch mean `μ` and biased variance `σ²` over every axis
/// but 1, and `M`, the number of elements per channel.
fn batch_stats<T: Float>(x: &Tensor<T>) -> (Vec<T>, Vec<T>, usize) {
    let (n, c, inner) = (x.dims()[0], x.dims()[1], prod(&x.dims()[2..]));
    let m = n * inner;
    let at = |b: usize, ch: usize, i: usize| x.data()[(b * c + ch) * inner + i];
    let mut mean = vec![T::zero(); c];
    let mut var = vec![T::zero(); c];
    for ch in 0..c {
        let mut s = T::zero();
        for b in 0..n {
            for i in 0..inner {
                s += at(b, ch, i);
            }
        }
        mean[ch] = s / T::from_usize(m);
        let mut q = T::zero();
        for b in 0..n {
            for i in 0..inner {
                let d = at(b, ch, i) - mean[ch];
                q += d * d;
            }
        }
        var[ch] = q / T::from_usize(m);
    }
    (mean, var, m)
}

/// Batch norm in training mode, the piece `part` (see [`kiln_ir::BnPart`]): `args` are the
/// op's inputs in order.
pub fn batch_norm_train<T: Float>(
    part: BnPart,
    epsilon: f32,
    args: &[&Tensor<T>],
) -> Result<Tensor<T>, String> {
    let shapes: Vec<_> = args.iter().map(|t| t.shape()).collect();
    let out = out_shape(&Op::Train(TrainOp::BatchNormTrain { part, epsilon }), &shapes)?;
    let x = args[0];
    let (n, c, inner) = (x.dims()[0], x.dims()[1], prod(&x.dims()[2..]));
    let (mean, var, m) = batch_stats(x);
    let eps = T::from_f64(f64::from(epsilon));
    let inv: Vec<T> = var.iter().map(|&v| T::one() / (v + eps).sqrt()).collect();
    let idx = |b: usize, ch: usize, i: usize| (b * c + ch) * inner + i;
    let xhat = |b: usize, ch: usize, i: usize| (x.data()[idx(b, ch, i)] - mean[ch]) * inv[ch];
    let mut y = Tensor::full(out, T::zero());
    match part {
        BnPart::Forward => {
            let (s, sh) = (args[1].data(), args[2].data());
            for b in 0..n {
                for ch in 0..c {
                    for i in 0..inner {
                        y.data_mut()[idx(b, ch, i)] = s[ch] * xhat(b, ch, i) + sh[ch];
                    }
                }
            }
        }
        BnPart::GradX => {
            let (s, dy) = (args[1].data(), args[2].data());
            for ch in 0..c {
                let (mut sum, mut dot) = (T::zero(), T::zero());
                for b in 0..n {
                    for i in 0..inner {
                        sum += dy[idx(b, ch, i)];
                        dot += dy[idx(b, ch, i)] * xhat(b, ch, i);
                    }
                }
                let (mdy, mdot) = (sum / T::from_usize(m), dot / T::from_usize(m));
                for b in 0..n {
                    for i in 0..inner {
                        let g = dy[idx(b, ch, i)] - mdy - xhat(b, ch, i) * mdot;
                        y.data_mut()[idx(b, ch, i)] = s[ch] * inv[ch] * g;
                    }
                }
            }
        }
        BnPart::GradScale => {
            let dy = args[1].data();
            for ch in 0..c {
                let mut dot = T::zero();
                for b in 0..n {
                    for i in 0..inner {
                        dot += dy[idx(b, ch, i)] * xhat(b, ch, i);
                    }
                }
                y.data_mut()[ch] = dot;
            }
        }
        BnPart::Mean => y.data_mut().copy_from_slice(&mean),
        BnPart::Var => {
            let k = T::from_usize(m) / T::from_usize(m.saturating_sub(1).max(1));
            for (out, &v) in y.data_mut().iter_mut().zip(&var) {
                *out = v * k;
            }
        }
    }
    Ok(y)
}
