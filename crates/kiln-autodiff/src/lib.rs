//! Reverse-mode differentiation of a kiln graph into ONE graph that holds the forward pass,
//! the loss, the backward pass and (optionally) the optimizer's parameter updates, built from
//! ordinary IR ops plus the training ops of `kiln_ir::Op`, so the interpreter, the passes and
//! the JIT run it like any other graph.
//!
//! Each forward op has one gradient rule: [`rules::backward`] is a single exhaustive `match`
//! that dispatches to a function per op family. Gradients of a value read by several nodes are
//! summed; a gradient of a broadcast operand is summed back to the operand's shape
//! (`reduce_sum_to`), in one place ([`rules::sum_to`]).
//!
//! ```
//! use kiln_ir::builder::Network;
//! use kiln_autodiff::{differentiate, Loss, Optimizer};
//! let mut net = Network::new("tiny");
//! let x = net.input("x", [4, 3])?;
//! let y = net.named("fc").dense(x, 2)?;
//! net.output(y)?;
//! let t = differentiate(&net.finish()?, Loss::mse(), Some(Optimizer::sgd(0.1))).unwrap();
//! assert_eq!(t.target, "target");
//! assert!(t.grads.iter().any(|g| g.key == "fc.weight"));
//! assert!(t.grads.iter().any(|g| g.key == "grad_of_x"));
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

#![forbid(unsafe_code)]

pub mod rules;

use kiln_ir::{DType, Graph, IrError, LossKind, NodeId, Op, TensorType, TrainOp, Update};
use std::collections::{HashMap, HashSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AutodiffError {
    /// An op on the path to the loss has no gradient rule (or not with these attributes).
    #[error("node `{node}` ({op}): no gradient: {reason}")]
    NoRule {
        node: String,
        op: String,
        reason: String,
    },
    /// The graph cannot be trained as asked.
    #[error("{0}")]
    Graph(String),
    /// Building the backward graph failed (a bug in a rule, reported rather than hidden).
    #[error("building the backward graph: {0}")]
    Ir(#[from] IrError),
}

/// The loss that training minimizes, applied to the graph's (single) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loss {
    pub kind: LossKind,
    /// For cross-entropy and NLL: targets as class ids `i32 [N]` (true) or as probabilities
    /// `f32 [N, K]` (false). Ignored for MSE (the target has the prediction's type).
    pub class_ids: bool,
}

impl Loss {
    pub fn mse() -> Loss {
        Loss {
            kind: LossKind::Mse,
            class_ids: false,
        }
    }
    /// Softmax cross-entropy of logits against class ids.
    pub fn cross_entropy() -> Loss {
        Loss {
            kind: LossKind::CrossEntropy,
            class_ids: true,
        }
    }
    /// NLL of log-probabilities against class ids.
    pub fn nll() -> Loss {
        Loss {
            kind: LossKind::Nll,
            class_ids: true,
        }
    }
    /// The same loss with float targets `[N, K]` (one-hot or soft).
    pub fn with_probabilities(self) -> Loss {
        Loss {
            class_ids: false,
            ..self
        }
    }
    /// Class ids for an `i32` target, probabilities for an `f32` one.
    pub fn ids_or_probs(self, target: DType) -> Loss {
        Loss {
            class_ids: target == DType::I32,
            ..self
        }
    }
    /// The target's type for a prediction of type `pred`.
    pub fn target_type(&self, pred: &TensorType) -> TensorType {
        match self.kind {
            LossKind::CrossEntropy | LossKind::Nll if self.class_ids => {
                TensorType::new(DType::I32, pred.dims().get(..1).unwrap_or(&[]).to_vec())
            }
            _ => pred.clone(),
        }
    }
}

/// An optimizer, as PyTorch defines its update (`torch.optim.SGD`, `torch.optim.Adam`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    Sgd {
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    },
    Adam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    },
}

impl Optimizer {
    /// Plain SGD with learning rate `lr`.
    pub fn sgd(lr: f32) -> Optimizer {
        Optimizer::Sgd {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
        }
    }
    /// Adam with PyTorch's defaults (`betas = (0.9, 0.999)`, `eps = 1e-8`).
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
    /// The same optimizer with SGD momentum `m` (no effect on Adam).
    pub fn momentum(self, m: f32) -> Optimizer {
        match self {
            Optimizer::Sgd { lr, weight_decay, .. } => Optimizer::Sgd {
                lr,
                momentum: m,
                weight_decay,
            },
            adam => adam,
        }
    }
    /// The same optimizer with L2 weight decay `wd` (added to the gradient, as PyTorch).
    pub fn weight_decay(self, wd: f32) -> Optimizer {
        match self {
            Optimizer::Sgd { lr, momentum, .. } => Optimizer::Sgd {
                lr,
                momentum,
                weight_decay: wd,
            },
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                ..
            } => Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay: wd,
            },
        }
    }
}

/// One gradient output of the training graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Grad {
    /// The name the gradient is known by: the parameter's own name, or `grad_of_<input>`.
    pub key: String,
    /// The differentiated param or input.
    pub of: String,
    /// The output node holding the gradient.
    pub node: String,
}

/// The graph [`differentiate`] builds, and what its names mean.
#[derive(Debug, Clone)]
pub struct TrainingGraph {
    /// Forward pass, loss, backward pass and updates. Its inputs are the forward graph's
    /// inputs and [`TrainingGraph::target`]; its weights the forward graph's weights and the
    /// optimizer state ([`TrainingGraph::state`]).
    pub graph: Graph,
    /// The forward graph's output that the loss reads.
    pub prediction: String,
    /// The input that receives the targets.
    pub target: String,
    /// The output holding the batch's loss (a scalar).
    pub loss: String,
    /// The gradient of the loss w.r.t. every trainable param and (unless [`Wrt::Params`])
    /// every f32 input that the loss depends on, params first (in graph order).
    pub grads: Vec<Grad>,
    /// Params the loss does not depend on (their gradient is zero; they are not updated).
    pub unused_params: Vec<String>,
    /// `(weight or state buffer, output node holding its value after the step)`: after a
    /// run, each weight takes the value of its node.
    pub updates: Vec<(String, String)>,
    /// The optimizer's state buffers and their types; they start at zero.
    pub state: Vec<(String, TensorType)>,
}

/// The name of the gradient of input `name`.
pub fn input_grad_key(name: &str) -> String {
    format!("grad_of_{name}")
}

/// What [`differentiate_wrt`] computes gradients with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrt {
    /// Every trainable param (what training needs).
    Params,
    /// Every trainable param and every f32 graph input (what `kiln grad` writes).
    ParamsAndInputs,
}

/// Differentiates `graph` (one output: the prediction) under `loss` with respect to every
/// trainable param and every f32 input, and adds `optimizer`'s updates of every trainable
/// param when given. [`differentiate_wrt`] leaves out the inputs' gradients.
pub fn differentiate(
    graph: &Graph,
    loss: Loss,
    optimizer: Option<Optimizer>,
) -> Result<TrainingGraph, AutodiffError> {
    differentiate_wrt(graph, loss, optimizer, Wrt::ParamsAndInputs)
}

/// [`differentiate`] with the gradients of `wrt` only: with [`Wrt::Params`] no backward op
/// computes a gradient that only an input would need (the first layer's data gradient).
pub fn differentiate_wrt(
    graph: &Graph,
    loss: Loss,
    optimizer: Option<Optimizer>,
    wrt: Wrt,
) -> Result<TrainingGraph, AutodiffError> {
    let &[pred_fwd] = graph.outputs() else {
        return Err(AutodiffError::Graph(format!(
            "training needs a graph with exactly one output (the prediction), this one has {}",
            graph.outputs().len()
        )));
    };
    // Copy the forward nodes (not their outputs) into the training graph.
    let mut g = Graph::new();
    g.name = format!("{}_train", graph.name);
    let mut map: HashMap<NodeId, NodeId> = HashMap::new();
    // Dropout trains with a mask drawn per step: a step count shared by every dropout.
    let mut dropout_step = None;
    let mut state = Vec::new();
    // batch norms, now on batch statistics: (node, input, running mean, running var)
    let mut batch_norms = Vec::new();
    for id in graph.topo_order() {
        let n = graph.node(id);
        let mut ins: Vec<NodeId> = graph.inputs(id).iter().map(|i| map[i]).collect();
        let op = match n.op {
            Op::Dropout { ratio, seed } if ratio > 0.0 => {
                let step = match dropout_step {
                    Some(s) => s,
                    None => {
                        let ty = TensorType::f32(kiln_ir::Shape::scalar());
                        let s = state_buffer(&mut g, Some(graph), &mut state, DROPOUT_STEP, ty)?;
                        dropout_step = Some(s);
                        s
                    }
                };
                ins.push(step);
                Op::Train(TrainOp::DropoutTrain { ratio, seed })
            }
            Op::BatchNorm { epsilon, activation } => {
                let per_channel = n.ty.shape.numel() / n.ty.dims()[1].max(1);
                if per_channel < 2 {
                    return Err(AutodiffError::NoRule {
                        node: n.name.clone(),
                        op: n.op.name().into(),
                        reason: format!(
                            "training on batch statistics needs more than one value per channel, {} has {per_channel}",
                            n.ty
                        ),
                    });
                }
                let (mean, var) = (ins[3], ins[4]);
                ins.truncate(3);
                let op = Op::Train(TrainOp::BatchNormTrain {
                    part: kiln_ir::BnPart::Forward,
                    epsilon,
                });
                match activation {
                    None => {
                        batch_norms.push((n.name.clone(), ins[0], mean, var));
                        op
                    }
                    // a fused activation trains as the activation after the batch norm
                    Some(act) => {
                        let bn_name = g.fresh_name(&format!("{}.batch_norm", n.name));
                        let bn = g.add(bn_name.clone(), op, &ins)?;
                        batch_norms.push((bn_name, ins[0], mean, var));
                        map.insert(id, g.add(n.name.clone(), Op::Activation(act), &[bn])?);
                        continue;
                    }
                }
            }
            ref op => op.clone(),
        };
        map.insert(id, g.add(n.name.clone(), op, &ins)?);
    }
    let pred = map[&pred_fwd];
    let pred_ty = g.node(pred).ty.clone();
    let mut names = Names::default();
    let target_name = names.fresh(&g, "target");
    let target = g.input(target_name.clone(), loss.target_type(&pred_ty))?;
    let loss_name = names.fresh(&g, "loss");
    let loss_id = g
        .add(loss_name.clone(), Op::Loss(loss.kind), &[pred, target])
        .map_err(|e| AutodiffError::Graph(format!("the loss does not apply to the model's output: {e}")))?;
    g.mark_output(loss_id)?;

    // Which nodes the loss depends on through differentiable paths from a param or input.
    let needs = needs_grad(&g, pred, wrt == Wrt::ParamsAndInputs);
    let seed_name = names.fresh(&g, &format!("{}.grad", g.node(pred).name));
    let seed = g.add(
        seed_name,
        Op::Train(TrainOp::LossGrad(loss.kind)),
        &[pred, target],
    )?;
    let mut grads: HashMap<NodeId, NodeId> = HashMap::from([(pred, seed)]);
    let order: Vec<NodeId> = g.topo_order().into_iter().filter(|n| needs.contains(n)).collect();
    for &id in order.iter().rev() {
        let Some(&dy) = grads.get(&id) else { continue };
        if matches!(g.node(id).op, Op::Input(_) | Op::Param { .. }) {
            continue;
        }
        let ins = g.inputs(id);
        let want: Vec<bool> = ins.iter().map(|i| needs.contains(i)).collect();
        let mut b = rules::Builder {
            g: &mut g,
            names: &mut names,
            node: id,
        };
        let dins = rules::backward(&mut b, &ins, &want, dy)?;
        for ((&inp, d), w) in ins.iter().zip(dins).zip(want) {
            let Some(d) = d.filter(|_| w) else { continue };
            let acc = match grads.get(&inp) {
                None => d,
                Some(&prev) => {
                    let nm = names.fresh(&g, &format!("{}.grad_sum", g.node(inp).name));
                    g.add(nm, Op::Binary(kiln_ir::BinaryOp::Add), &[prev, d])?
                }
            };
            grads.insert(inp, acc);
        }
    }

    let mut out = Vec::new();
    let mut unused = Vec::new();
    let params: Vec<NodeId> = g
        .params()
        .into_iter()
        .filter(|&p| g.node(p).op.is_trainable_param())
        .collect();
    for &p in &params {
        let name = g.node(p).name.clone();
        match grads.get(&p) {
            Some(&d) => out.push(Grad {
                key: name.clone(),
                of: name,
                node: g.node(d).name.clone(),
            }),
            None => unused.push(name),
        }
    }
    for i in g.graph_inputs() {
        let n = g.node(i);
        if i == target || n.ty.dtype != DType::F32 {
            continue;
        }
        if let Some(&d) = grads.get(&i) {
            out.push(Grad {
                key: input_grad_key(&n.name),
                of: n.name.clone(),
                node: g.node(d).name.clone(),
            });
        }
    }
    for gr in &out {
        let id = g.find(&gr.node).expect("gradient nodes are in the graph");
        g.mark_output(id)?;
    }

    let mut updates = Vec::new();
    if let Some(opt) = optimizer {
        add_updates(&mut g, &mut names, opt, &out, &params, &mut updates, &mut state)?;
        // running statistics, as PyTorch: `running = (1 − m)·running + m·batch` (the unbiased
        // variance), m = BN_MOMENTUM
        for (name, x, mean, var) in &batch_norms {
            for (buf, part) in [(*mean, kiln_ir::BnPart::Mean), (*var, kiln_ir::BnPart::Var)] {
                let eps = match g.node(g.find(name).expect("the batch norm")).op {
                    Op::Train(TrainOp::BatchNormTrain { epsilon, .. }) => epsilon,
                    _ => 0.0,
                };
                let bname = g.node(buf).name.clone();
                let stat = g.add(
                    names.fresh(&g, &format!("{name}.{}", part.name())),
                    Op::Train(TrainOp::BatchNormTrain { part, epsilon: eps }),
                    &[*x],
                )?;
                let old = g.add(
                    names.fresh(&g, &format!("{bname}.decayed")),
                    Op::Scale {
                        factor: 1.0 - BN_MOMENTUM,
                    },
                    &[buf],
                )?;
                let new = g.add(
                    names.fresh(&g, &format!("{bname}.batch")),
                    Op::Scale { factor: BN_MOMENTUM },
                    &[stat],
                )?;
                let next = g.add(
                    names.fresh(&g, &format!("{bname}.next")),
                    Op::Binary(kiln_ir::BinaryOp::Add),
                    &[old, new],
                )?;
                updates.push((bname, g.node(next).name.clone()));
            }
        }
        // a new mask every step
        if let Some(s) = dropout_step {
            let next = g.add(
                names.fresh(&g, "dropout.step.next"),
                Op::Train(TrainOp::Update(Update::Count)),
                &[s],
            )?;
            updates.push((DROPOUT_STEP.to_string(), g.node(next).name.clone()));
        }
    }
    for (_, node) in &updates {
        let id = g.find(node).expect("update nodes are in the graph");
        g.mark_output(id)?;
    }
    g.verify()?;
    Ok(TrainingGraph {
        prediction: graph.node(pred_fwd).name.clone(),
        graph: g,
        target: target_name,
        loss: loss_name,
        grads: out,
        unused_params: unused,
        updates,
        state,
    })
}

/// Nodes on a path from a trainable param (or, with `inputs`, an f32 input) to `pred`
/// (inclusive).
fn needs_grad(g: &Graph, pred: NodeId, inputs: bool) -> HashSet<NodeId> {
    let mut from_leaf = HashSet::new();
    for id in g.topo_order() {
        let n = g.node(id);
        let leaf = match &n.op {
            Op::Input(t) => inputs && t.dtype == DType::F32,
            Op::Param { trainable, .. } => *trainable,
            _ => false,
        };
        if leaf || (n.ty.dtype == DType::F32 && g.inputs(id).iter().any(|i| from_leaf.contains(i))) {
            from_leaf.insert(id);
        }
    }
    // ... and that `pred` depends on.
    let mut live = HashSet::new();
    let mut stack = vec![pred];
    while let Some(n) = stack.pop() {
        if from_leaf.contains(&n) && live.insert(n) {
            stack.extend(g.inputs(n));
        }
    }
    live
}

/// The momentum of batch norm's running statistics (PyTorch's default).
pub const BN_MOMENTUM: f32 = 0.1;

/// The step count of training-mode dropout (a state buffer).
pub const DROPOUT_STEP: &str = "dropout.step";

/// Adds the state buffer `name` (listed in `state`), unless the training graph or `model` (the
/// forward graph, while it is still being copied) has a node of that name.
fn state_buffer(
    g: &mut Graph,
    model: Option<&Graph>,
    state: &mut Vec<(String, TensorType)>,
    name: &str,
    ty: TensorType,
) -> Result<NodeId, AutodiffError> {
    if g.find(name).is_some() || model.is_some_and(|m| m.find(name).is_some()) {
        return Err(AutodiffError::Graph(format!(
            "the training state `{name}` clashes with a node of the model"
        )));
    }
    state.push((name.to_string(), ty.clone()));
    Ok(g.buffer(name, ty)?)
}

/// Adds the optimizer's update nodes for every param with a gradient (to `updates`) and its
/// state buffers (to `state`).
fn add_updates(
    g: &mut Graph,
    names: &mut Names,
    opt: Optimizer,
    grads: &[Grad],
    params: &[NodeId],
    updates: &mut Vec<(String, String)>,
    state: &mut Vec<(String, TensorType)>,
) -> Result<(), AutodiffError> {
    // every node of the model is in `g` already
    let mut buffer = |g: &mut Graph, name: String, ty: TensorType| state_buffer(g, None, state, &name, ty);
    let step = match opt {
        Optimizer::Adam { .. } => {
            let t = buffer(g, "adam.step".into(), TensorType::f32(kiln_ir::Shape::scalar()))?;
            let t1 = g.add(
                names.fresh(g, "adam.step.next"),
                Op::Train(TrainOp::Update(Update::Count)),
                &[t],
            )?;
            updates.push(("adam.step".to_string(), g.node(t1).name.clone()));
            Some(t1)
        }
        Optimizer::Sgd { .. } => None,
    };
    for &p in params {
        let pname = g.node(p).name.clone();
        let Some(gr) = grads.iter().find(|gr| gr.of == pname) else {
            continue;
        };
        let d = g.find(&gr.node).expect("gradient node exists");
        let ty = g.node(p).ty.clone();
        let next = names.fresh(g, &format!("{pname}.next"));
        match opt {
            Optimizer::Sgd {
                lr,
                momentum: 0.0,
                weight_decay,
            } => {
                let u = g.add(
                    next,
                    Op::Train(TrainOp::Update(Update::SgdParam { lr, weight_decay })),
                    &[p, d],
                )?;
                updates.push((pname, g.node(u).name.clone()));
            }
            Optimizer::Sgd {
                lr,
                momentum,
                weight_decay,
            } => {
                let vname = format!("{pname}.momentum");
                let v = buffer(g, vname.clone(), ty)?;
                let vn = g.add(
                    names.fresh(g, &format!("{vname}.next")),
                    Op::Train(TrainOp::Update(Update::SgdVelocity {
                        momentum,
                        weight_decay,
                    })),
                    &[p, d, v],
                )?;
                let u = g.add(
                    next,
                    Op::Train(TrainOp::Update(Update::SgdParam {
                        lr,
                        weight_decay: 0.0,
                    })),
                    &[p, vn],
                )?;
                updates.push((pname, g.node(u).name.clone()));
                updates.push((vname, g.node(vn).name.clone()));
            }
            Optimizer::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let mut moment = |g: &mut Graph, suffix: &str, beta: f32, squared: bool| {
                    let name = format!("{pname}.{suffix}");
                    let m = buffer(g, name.clone(), ty.clone())?;
                    let op = Op::Train(TrainOp::Update(Update::AdamMoment {
                        beta,
                        weight_decay,
                        squared,
                    }));
                    let mn = g.add(names.fresh(g, &format!("{name}.next")), op, &[p, d, m])?;
                    updates.push((name, g.node(mn).name.clone()));
                    Ok::<NodeId, AutodiffError>(mn)
                };
                let m = moment(g, "adam_m", beta1, false)?;
                let v = moment(g, "adam_v", beta2, true)?;
                let t = step.expect("adam has a step count");
                let op = Op::Train(TrainOp::Update(Update::AdamParam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                }));
                let u = g.add(next, op, &[p, m, v, t])?;
                updates.push((pname, g.node(u).name.clone()));
            }
        }
    }
    Ok(())
}

/// Fresh node names: `base`, or `base.1`, `base.2`, … when taken.
#[derive(Default)]
pub struct Names {
    next: HashMap<String, usize>,
}

impl Names {
    pub fn fresh(&mut self, g: &Graph, base: &str) -> String {
        if g.find(base).is_none() {
            return base.to_string();
        }
        loop {
            let k = self.next.entry(base.to_string()).or_insert(0);
            *k += 1;
            let name = format!("{base}.{k}");
            if g.find(&name).is_none() {
                return name;
            }
        }
    }
}
