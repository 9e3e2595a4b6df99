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

/// SiLU, `x · sigmoid(x)`: the bits of `Mul(x, Sigmoid(x))`, the graph the `silu` pass
/// rewrites into it.
pub fn silu<T: Float>(x: T) -> T {
    x * sigmoid(x)
}

/// Exact GELU, `(x + x·erf(c·x))·0.5` with `c` the f32 nearest `1/√2`: the bits of the
/// importer's `scale`, `erf`, `mul`, `add`, `scale` ([`Activation::Gelu`]).
pub fn gelu<T: Float>(x: T) -> T {
    let c = T::from_f64(f64::from(Activation::GELU_C));
    let half = T::from_f64(0.5);
    half * (x + x * (c * x).erf())
}

/// HardSwish, `x · hard_sigmoid(x, 1/6, 1/2)`: the bits of that product
/// ([`Activation::HardSwish`]).
pub fn hard_swish<T: Float>(x: T) -> T {
    let [a, b] = Activation::HARD_SWISH.map(|v| T::from_f64(f64::from(v)));
    x * hard_sigmoid(x, a, b)
}

/// `x` clamped to `[lo, hi]`: `min(max(x, lo), hi)`; NaN stays NaN.
pub fn clip<T: Float>(x: T, lo: T, hi: T) -> T {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `max(0, min(1, alpha·x + beta))`.
pub fn hard_sigmoid<T: Float>(x: T, alpha: T, beta: T) -> T {
    clip(alpha * x + beta, T::zero(), T::one())
}

/// `2/√π`, the slope of erf at 0.
const TWO_OVER_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

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
        Activation::Clip { min, max } => {
            let (lo, hi) = (T::from_f64(f64::from(min)), T::from_f64(f64::from(max)));
            x.map(|&v| clip(v, lo, hi))
        }
        Activation::HardSigmoid { alpha, beta } => {
            let (a, b) = (T::from_f64(f64::from(alpha)), T::from_f64(f64::from(beta)));
            x.map(|&v| hard_sigmoid(v, a, b))
        }
        Activation::Erf => x.map(|&v| v.erf()),
        Activation::Silu => x.map(|&v| silu(v)),
        Activation::Gelu => x.map(|&v| gelu(v)),
        Activation::HardSwish => x.map(|&v| hard_swish(v)),
    }
}

/// The backward of activation `a` from its output `y` and the delta `dy` (see
/// `TrainOp::ActivationGrad`): relu `dy·[y > 0]`, leaky relu `dy·(y > 0 ? 1 : alpha)`, sigmoid
/// `dy·y·(1 − y)`, tanh `dy·(1 − y²)`, clip `dy·[min < y < max]`, hard sigmoid
/// `dy·alpha·[0 < y < 1]`; erf and SiLU take the forward input `x` in place of `y`:
/// `dy·2/√π·e^{−x²}` and `dy·s·(1 + x·(1 − s))` with `s = sigmoid(x)`, and so do GELU,
/// `dy·(1 + erf(c·x) + x·c·2/√π·e^{−(c·x)²})·0.5`, and HardSwish,
/// `dy·(h + x/6·[0 < x/6 + 1/2 < 1])` with `h` its hard sigmoid of `x`.
pub fn activation_grad<T: Float>(y: &Tensor<T>, dy: &Tensor<T>, a: Activation) -> Result<Tensor<T>, String> {
    if y.shape() != dy.shape() {
        return Err(format!(
            "output {} and delta {} differ in shape",
            y.shape(),
            dy.shape()
        ));
    }
    let alpha = match a {
        Activation::LeakyRelu { alpha } | Activation::HardSigmoid { alpha, .. } => {
            T::from_f64(f64::from(alpha))
        }
        _ => T::zero(),
    };
    let (lo, hi) = match a {
        Activation::Clip { min, max } => (T::from_f64(f64::from(min)), T::from_f64(f64::from(max))),
        _ => (T::zero(), T::one()),
    };
    let two_over_sqrt_pi = T::from_f64(TWO_OVER_SQRT_PI);
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
            Activation::Clip { .. } | Activation::HardSigmoid { .. } => {
                let slope = if let Activation::Clip { .. } = a {
                    T::one()
                } else {
                    alpha
                };
                if lo < y && y < hi { g * slope } else { T::zero() }
            }
            // `y` is the forward input here
            Activation::Erf => g * two_over_sqrt_pi * (-(y * y)).exp(),
            Activation::Silu => {
                let s = sigmoid(y);
                g * s * (T::one() + y * (T::one() - s))
            }
            Activation::Gelu => {
                let c = T::from_f64(f64::from(Activation::GELU_C));
                let cx = c * y;
                let slope = T::one() + cx.erf() + y * c * two_over_sqrt_pi * (-(cx * cx)).exp();
                g * slope * T::from_f64(0.5)
            }
            Activation::HardSwish => {
                let [a, b] = Activation::HARD_SWISH.map(|v| T::from_f64(f64::from(v)));
                let z = a * y + b;
                let inside = T::zero() < z && z < T::one();
                let h = hard_sigmoid(y, a, b);
                g * (if inside { h + y * a } else { h })
            }
        })
        .collect();
    Ok(Tensor::new(y.shape().clone(), vals).expect("same shape"))
}
