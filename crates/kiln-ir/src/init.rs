//! Seeded default initialization of a graph's weights, as PyTorch initializes its layers:
//! conv / dense weights and biases uniform in `±1/√fan_in` (PyTorch's `kaiming_uniform_(a=√5)`
//! bound), batch norm scale 1, shift 0, running mean 0, running variance 1. The same seed
//! always gives the same weights, so a `.kiln` model without a weights file runs reproducibly.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::limits;
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A small, fast, seedable generator (SplitMix64); good enough for initialization and tests.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, bound: f64) -> f32 {
        ((self.next_f64() * 2.0 - 1.0) * bound) as f32
    }
}

/// How a weight is used, read off its first consumer and the slot it feeds.
fn role(graph: &Graph, param: NodeId) -> Option<(&Op, usize, NodeId)> {
    let user = *graph.users(param).first()?;
    let slot = graph.inputs(user).iter().position(|&i| i == param)?;
    Some((&graph.node(user).op, slot, user))
}

/// Default values for every `param` and `buffer` of `graph`, keyed by name.
pub fn default_weights(graph: &Graph, seed: u64) -> Result<HashMap<String, Tensor<f32>>, IrError> {
    check_total(graph, graph.params(), "the weights")?;
    let mut rng = SplitMix64::new(seed);
    let mut out = HashMap::new();
    for id in graph.params() {
        let node = graph.node(id);
        let shape = node.ty.shape.clone();
        let t = match role(graph, id) {
            Some((Op::BatchNorm { .. }, slot, _)) => {
                let v = if slot == 1 || slot == 4 { 1.0 } else { 0.0 };
                filled(&shape, || v)?
            }
            Some((op @ (Op::Conv2d(_) | Op::ConvTranspose2d(_) | Op::Dense), _, user)) => {
                // Bias and weight share the bound of the layer's weight. PyTorch takes a
                // transposed conv's fan-in from dim 1 of its weight, the others' from dims 1…
                let w = graph.node(graph.inputs(user)[1]).ty.dims().to_vec();
                let fan_in = match op {
                    Op::ConvTranspose2d(_) => w[1] * w[2] * w[3],
                    _ => w[1..].iter().product(),
                };
                random(&shape, &mut rng, 1.0 / (fan_in.max(1) as f64).sqrt())?
            }
            _ => {
                let fan_in: usize = if shape.rank() >= 2 {
                    shape.dims()[1..].iter().product()
                } else {
                    shape.numel()
                };
                let fan_in = fan_in.max(1);
                random(&shape, &mut rng, 1.0 / (fan_in as f64).sqrt())?
            }
        };
        out.insert(node.name.clone(), t);
    }
    Ok(out)
}

/// Checks that the values `ids` of `graph` together fit in [`limits::MAX_BYTES`] before any
/// of them is allocated.
fn check_total(graph: &Graph, ids: Vec<NodeId>, what: &str) -> Result<(), IrError> {
    let mut total = 0usize;
    for id in ids {
        let ty = &graph.node(id).ty;
        let n = limits::check_dims(ty.dims()).map_err(IrError::TooLarge)?;
        let bytes = limits::check_bytes(n, 4, &graph.node(id).name).map_err(IrError::TooLarge)?;
        total = limits::add_bytes(total, bytes, what).map_err(IrError::TooLarge)?;
    }
    Ok(())
}

/// A tensor of `shape` whose elements `f` produces in order, allocated fallibly: a shape the
/// machine has no memory for is an error, not an abort.
fn filled<T: Clone>(shape: &crate::tensor::Shape, mut f: impl FnMut() -> T) -> Result<Tensor<T>, IrError> {
    let n = limits::check_dims(shape.dims()).map_err(IrError::TooLarge)?;
    let mut data = Vec::new();
    data.try_reserve_exact(n).map_err(|_| {
        IrError::TooLarge(format!(
            "cannot allocate {n} elements for a tensor of shape {shape}: out of memory"
        ))
    })?;
    data.extend((0..n).map(|_| f()));
    Ok(Tensor::new(shape.clone(), data).expect("numel matches"))
}

fn random(shape: &crate::tensor::Shape, rng: &mut SplitMix64, bound: f64) -> Result<Tensor<f32>, IrError> {
    filled(shape, || rng.uniform(bound))
}

/// Seeded values for every graph input: f32 uniform in `[-1, 1)`, and for an i32 input that
/// feeds a classification loss, class ids uniform over that loss's classes (0 otherwise).
pub fn random_inputs(
    graph: &Graph,
    seed: u64,
) -> Result<HashMap<String, crate::tensor::Value<f32>>, IrError> {
    use crate::op::LossKind;
    use crate::tensor::{DType, Value};
    check_total(graph, graph.graph_inputs(), "the inputs")?;
    let mut rng = SplitMix64::new(seed);
    let mut out = HashMap::new();
    for id in graph.graph_inputs() {
        let n = graph.node(id);
        let v = match n.ty.dtype {
            DType::F32 => Value::F(random(&n.ty.shape, &mut rng, 1.0)?),
            DType::I32 => {
                let classes = graph
                    .users(id)
                    .into_iter()
                    .find_map(|u| match graph.node(u).op {
                        Op::Loss(LossKind::CrossEntropy | LossKind::Nll) => {
                            graph.node(graph.inputs(u)[0]).ty.dims().get(1).copied()
                        }
                        _ => None,
                    })
                    .unwrap_or(1)
                    .max(1);
                Value::I(filled(&n.ty.shape, || (rng.next_u64() % classes as u64) as i32)?)
            }
        };
        out.insert(n.name.clone(), v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Conv, Network};

    #[test]
    fn layers_get_pytorch_like_defaults_and_the_seed_decides() {
        let mut net = Network::new("t");
        let x = net.input("input", [1, 2, 5, 5]).unwrap();
        let h = net.named("conv").conv2d(x, Conv::new(4, [3, 3])).unwrap();
        let h = net.named("bn").batch_norm(h).unwrap();
        net.output(h).unwrap();
        let g = net.finish().unwrap();
        let w = default_weights(&g, 7).unwrap();
        let bound = 1.0 / (2.0f32 * 9.0).sqrt();
        assert!(w["conv.weight"].data().iter().all(|v| v.abs() <= bound));
        assert!(w["conv.weight"].data().iter().any(|v| v.abs() > bound / 10.0));
        assert_eq!(w["bn.weight"].data(), &[1.0; 4]);
        assert_eq!(w["bn.bias"].data(), &[0.0; 4]);
        assert_eq!(w["bn.running_mean"].data(), &[0.0; 4]);
        assert_eq!(w["bn.running_var"].data(), &[1.0; 4]);
        assert_eq!(default_weights(&g, 7).unwrap(), w);
        assert_ne!(default_weights(&g, 8).unwrap()["conv.weight"], w["conv.weight"]);
    }
}
