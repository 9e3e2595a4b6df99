//! Losses as PyTorch defines them (default `reduction = "mean"`); each returns a scalar
//! tensor of shape `[]`.

use crate::Float;
use crate::softmax::{log_softmax_row, softmax_row};
use kiln_ir::{LossKind, Op, Shape, Tensor, TensorType, Value, shape};

/// The target of a classification loss: class ids `i32 [N]` or probabilities `[N, K]`.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a, T> {
    Ids(&'a Tensor<i32>),
    Probs(&'a Tensor<T>),
}

impl<'a, T: Clone> Target<'a, T> {
    /// The target a graph value stands for.
    pub fn from_value(v: &'a Value<T>) -> Target<'a, T> {
        match v {
            Value::I(t) => Target::Ids(t),
            Value::F(t) => Target::Probs(t),
        }
    }
    fn ty(&self) -> TensorType {
        match self {
            Target::Ids(t) => TensorType::i32(t.shape().clone()),
            Target::Probs(t) => TensorType::f32(t.shape().clone()),
        }
    }
}

fn check(kind: LossKind, pred: &Shape, target: TensorType) -> Result<(), String> {
    let pred = TensorType::f32(pred.clone());
    shape::infer(&Op::Loss(kind), &[&pred, &target]).map(|_| ())
}

fn scalar<T: Float>(v: T) -> Tensor<T> {
    Tensor::full(Shape::scalar(), v)
}

/// `mean_i (a_i − y_i)²` over all elements (NaN for an empty tensor, as PyTorch).
pub fn mse<T: Float>(a: &Tensor<T>, y: &Tensor<T>) -> Result<Tensor<T>, String> {
    check(LossKind::Mse, a.shape(), TensorType::f32(y.shape().clone()))?;
    let mut sum = T::zero();
    for (&p, &t) in a.data().iter().zip(y.data()) {
        sum += (p - t) * (p - t);
    }
    Ok(scalar(sum / T::from_usize(a.data().len())))
}

/// `mean_n −Σ_c y[n, c] · s[n, c]` where `s[n]` is row `n` of the scores after `prepare`
/// (log-softmax for cross-entropy, nothing for NLL); with class ids, `−s[n, y_n]`.
fn classification<T: Float>(
    kind: LossKind,
    z: &Tensor<T>,
    target: Target<'_, T>,
    prepare: fn(&[T]) -> Vec<T>,
) -> Result<Tensor<T>, String> {
    check(kind, z.shape(), target.ty())?;
    let (n_batch, classes) = (z.dims()[0], z.dims()[1]);
    let mut total = T::zero();
    for n in 0..n_batch {
        let s = prepare(&z.data()[n * classes..(n + 1) * classes]);
        match target {
            Target::Ids(ids) => {
                let id = ids.data()[n];
                let c = usize::try_from(id).ok().filter(|&c| c < classes).ok_or_else(|| {
                    format!("class id {id} of batch element {n} is out of range 0..{classes}")
                })?;
                total -= s[c];
            }
            Target::Probs(p) => {
                for (c, &sc) in s.iter().enumerate() {
                    total -= p.data()[n * classes + c] * sc;
                }
            }
        }
    }
    Ok(scalar(total / T::from_usize(n_batch)))
}

/// Softmax cross-entropy of logits `z [N, K]`: `mean_n −Σ_c y[n, c] · log_softmax(z[n])_c`;
/// with class ids `mean_n −log_softmax(z[n])_{y_n}`.
pub fn cross_entropy<T: Float>(z: &Tensor<T>, target: Target<'_, T>) -> Result<Tensor<T>, String> {
    classification(LossKind::CrossEntropy, z, target, log_softmax_row)
}

/// Negative log-likelihood of log-probabilities `z [N, K]`: `mean_n −Σ_c y[n, c] · z[n, c]`;
/// with class ids `mean_n −z[n, y_n]`.
pub fn nll<T: Float>(z: &Tensor<T>, target: Target<'_, T>) -> Result<Tensor<T>, String> {
    classification(LossKind::Nll, z, target, <[T]>::to_vec)
}

/// The loss `kind` of prediction `pred` against `target`.
pub fn loss<T: Float>(kind: LossKind, pred: &Tensor<T>, target: &Value<T>) -> Result<Tensor<T>, String> {
    match (kind, target) {
        (LossKind::Mse, Value::F(y)) => mse(pred, y),
        (LossKind::Mse, Value::I(_)) => Err("mse target must be f32, got i32".into()),
        (LossKind::CrossEntropy, t) => cross_entropy(pred, Target::from_value(t)),
        (LossKind::Nll, t) => nll(pred, Target::from_value(t)),
    }
}

/// The target as row `n` of probabilities (class ids become one-hot rows).
fn target_row<T: Float>(target: Target<'_, T>, n: usize, classes: usize) -> Result<Vec<T>, String> {
    match target {
        Target::Ids(ids) => {
            let id = ids.data()[n];
            let c = usize::try_from(id)
                .ok()
                .filter(|&c| c < classes)
                .ok_or_else(|| format!("class id {id} of batch element {n} is out of range 0..{classes}"))?;
            let mut row = vec![T::zero(); classes];
            row[c] = T::one();
            Ok(row)
        }
        Target::Probs(p) => Ok(p.data()[n * classes..(n + 1) * classes].to_vec()),
    }
}

/// The gradient of loss `kind` with respect to the prediction:
///
/// - mse: `2·(a − y) / numel`;
/// - cross-entropy: `(softmax(z)·Σ_c y_c − y) / N`, which is `(softmax(z) − y) / N` for class
///   ids and for targets that sum to one;
/// - nll: `−y / N`.
pub fn loss_grad<T: Float>(kind: LossKind, pred: &Tensor<T>, target: &Value<T>) -> Result<Tensor<T>, String> {
    let target = Target::from_value(target);
    check(kind, pred.shape(), target.ty())?;
    if kind == LossKind::Mse {
        let Target::Probs(y) = target else {
            return Err("mse target must be f32, got i32".into());
        };
        let k = T::from_f64(2.0) / T::from_usize(pred.data().len());
        let vals = pred
            .data()
            .iter()
            .zip(y.data())
            .map(|(&a, &t)| k * (a - t))
            .collect();
        return Ok(Tensor::new(pred.shape().clone(), vals).expect("same shape"));
    }
    let (n_batch, classes) = (pred.dims()[0], pred.dims()[1]);
    let inv_n = T::one() / T::from_usize(n_batch);
    let mut vals = Vec::with_capacity(pred.data().len());
    for n in 0..n_batch {
        let y = target_row(target, n, classes)?;
        match kind {
            LossKind::CrossEntropy => {
                let p = softmax_row(&pred.data()[n * classes..(n + 1) * classes]);
                let mut mass = T::zero();
                for &v in &y {
                    mass += v;
                }
                vals.extend(p.iter().zip(&y).map(|(&p, &t)| (p * mass - t) * inv_n));
            }
            LossKind::Nll | LossKind::Mse => vals.extend(y.iter().map(|&t| -t * inv_n)),
        }
    }
    Ok(Tensor::new(pred.shape().clone(), vals).expect("one value per prediction element"))
}
