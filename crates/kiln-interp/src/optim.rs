//! The optimizers' update ops (PyTorch's `SGD` and `Adam` update rules), elementwise over a
//! parameter and its state.

use crate::Float;
use kiln_ir::{Tensor, Update};

/// `u` applied to its inputs (see [`Update`]): `(p, g, v)`, `(p, d)`, `(p, g, m)`,
/// `(p, m, v, t)` or `(t)`.
pub fn update<T: Float>(u: Update, xs: &[&Tensor<T>]) -> Result<Tensor<T>, String> {
    let f = |v: f32| T::from_f64(f64::from(v));
    if xs.len() != u.arity() {
        return Err(format!(
            "{} takes {} inputs, got {}",
            u.name(),
            u.arity(),
            xs.len()
        ));
    }
    let state = if matches!(u, Update::AdamParam { .. }) {
        &xs[..3]
    } else {
        xs
    };
    if state.iter().any(|x| x.shape() != xs[0].shape()) {
        return Err(format!("the inputs of {} must have one shape", u.name()));
    }
    let p = xs[0];
    let zip = |h: &dyn Fn(usize) -> T| -> Tensor<T> {
        let vals = (0..p.data().len()).map(h).collect();
        Tensor::new(p.shape().clone(), vals).expect("same shape")
    };
    Ok(match u {
        Update::Count => p.map(|&t| t + T::one()),
        Update::SgdVelocity {
            momentum,
            weight_decay,
        } => {
            let (m, wd) = (f(momentum), f(weight_decay));
            let (g, v) = (xs[1].data(), xs[2].data());
            zip(&|i| m * v[i] + g[i] + wd * p.data()[i])
        }
        Update::SgdParam { lr, weight_decay } => {
            let (lr, wd) = (f(lr), f(weight_decay));
            let d = xs[1].data();
            zip(&|i| p.data()[i] - lr * (d[i] + wd * p.data()[i]))
        }
        Update::AdamMoment {
            beta,
            weight_decay,
            squared,
        } => {
            let (b, wd) = (f(beta), f(weight_decay));
            let (g, m) = (xs[1].data(), xs[2].data());
            zip(&|i| {
                let gi = g[i] + wd * p.data()[i];
                let gi = if squared { gi * gi } else { gi };
                b * m[i] + (T::one() - b) * gi
            })
        }
        Update::AdamParam {
            lr,
            beta1,
            beta2,
            eps,
        } => {
            let (m, v) = (xs[1].data(), xs[2].data());
            if xs[1].shape() != p.shape() || xs[2].shape() != p.shape() || xs[3].data().len() != 1 {
                return Err("adam_param takes p, m, v of one shape and a scalar step count".into());
            }
            let t = xs[3].data()[0].to_f64();
            let bc1 = T::from_f64(1.0 - f64::from(beta1).powf(t));
            let bc2 = T::from_f64(1.0 - f64::from(beta2).powf(t));
            let (lr, eps) = (f(lr), f(eps));
            zip(&|i| p.data()[i] - lr * (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps))
        }
    })
}
