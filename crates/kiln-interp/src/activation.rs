//! Elementwise activations.

use crate::Float;
use kiln_ir::{Activation, Tensor};

/// `max(x, 0)` (NaN stays NaN).
pub fn relu<T: Float>(x: T) -> T {
    if x < T::zero() { T::zero() } else { x }
}

/// `x` if `x ≥ 0`, else `alpha·x`.
pub fn leaky_relu<T: Float>(x: T, alpha: T) -> T {
    if x >= T::zero() { x } else { alpha * x }
}

/// `1 / (1 + e^−x)`, evaluated so that `exp` never overflows: for `x < 0` as `e^x / (1 + e^x)`.
pub fn sigmoid<T: Float>(x: T) -> T {
    if x >= T::zero() {
        T::one() / (T::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::one() + e)
    }
}

/// The activation `a` applied to every element of `x`.
pub fn activation<T: Float>(x: &Tensor<T>, a: Activation) -> Tensor<T> {
    match a {
        Activation::Relu => x.map(|&v| relu(v)),
        Activation::LeakyRelu { alpha } => {
            let alpha = T::from_f64(f64::from(alpha));
            x.map(|&v| leaky_relu(v, alpha))
        }
        Activation::Sigmoid => x.map(|&v| sigmoid(v)),
        Activation::Tanh => x.map(|&v| v.tanh()),
    }
}

/// The backward of activation `a` from its output `y` and the delta `dy` (see
/// `Op::ActivationGrad`): relu `dy·[y > 0]`, leaky relu `dy·(y > 0 ? 1 : alpha)`, sigmoid
/// `dy·y·(1 − y)`, tanh `dy·(1 − y²)`.
pub fn activation_grad<T: Float>(y: &Tensor<T>, dy: &Tensor<T>, a: Activation) -> Result<Tensor<T>, String> {
    if y.shape() != dy.shape() {
        return Err(format!(
            "output {} and delta {} differ in shape",
            y.shape(),
            dy.shape()
        ));
    }
    let alpha = match a {
        Activation::LeakyRelu { alpha } => T::from_f64(f64::from(alpha)),
        _ => T::zero(),
    };
    let vals = y
        .data()
        .iter()
        .zip(dy.data())
        .map(|(&y, &g)| match a {
            Activation::Relu | Activation::LeakyRelu { .. } => {
                if y > T::zero() {
                    g
                } else {
                    g * alpha
                }
            }
            Activation::Sigmoid => g * y * (T::one() - y),
            Activation::Tanh => g * (T::one() - y * y),
        })
        .collect();
    Ok(Tensor::new(y.shape().clone(), vals).expect("same shape"))
}
