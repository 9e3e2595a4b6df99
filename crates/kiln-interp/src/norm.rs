//! Batch normalization at inference.

use crate::Float;
use crate::util::{out_shape, prod};
use kiln_ir::{Op, Tensor};

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
    let op = Op::BatchNorm { epsilon };
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
