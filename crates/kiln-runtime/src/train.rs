//! Training: [`Trainer`] differentiates a network once (`kiln-autodiff`: forward, loss,
//! backward and optimizer updates in one graph), compiles that graph with the JIT (or runs
//! it on the reference interpreter), and steps it, keeping the weights and the optimizer
//! state between steps. [`gradients`] is the one-shot form behind `kiln grad`.
//!
//! ```
//! use kiln_autodiff::{Loss, Optimizer};
//! use kiln_ir::builder::Network;
//! use kiln_ir::{Tensor, Value};
//! use kiln_runtime::{Engine, TrainOptions, Trainer};
//! use std::collections::HashMap;
//! let mut net = Network::new("tiny");
//! let x = net.input("x", [4, 3])?;
//! let y = net.named("fc").dense(x, 2)?;
//! net.output(y)?;
//! let graph = net.finish()?;
//! let opts = TrainOptions { engine: Engine::Interp, ..TrainOptions::default() };
//! let mut t = Trainer::new(&graph, Loss::cross_entropy(), Optimizer::sgd(0.5), opts).unwrap();
//! let inputs = HashMap::from([("x".to_string(), Value::F(Tensor::full([4, 3], 1.0f32)))]);
//! let labels = Value::I(Tensor::new([4], vec![1, 1, 1, 1]).unwrap());
//! let first = t.step(&inputs, &labels).unwrap();
//! let second = t.step(&inputs, &labels).unwrap();
//! assert!(second < first);
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

use crate::fit::{FitError, Learner};
use crate::model::{Feed, Model, RuntimeError, Session};
use kiln_autodiff::{Loss, Optimizer, TrainingGraph, Wrt, differentiate_wrt};
use kiln_ir::{DType, Graph, Tensor, Value};
use kiln_jit::JitOptions;
use std::collections::HashMap;
use std::path::Path;

/// Which engine runs the training graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Compiled with the Cranelift JIT.
    Jit,
    /// The reference interpreter (f32): slow, the oracle.
    Interp,
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub engine: Engine,
    /// Options of the JIT (threads, passes) when `engine` is `Jit`.
    pub jit: JitOptions,
    /// Seed of the default weight initialization (`kiln_ir::init::default_weights`).
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> TrainOptions {
        TrainOptions {
            engine: Engine::Jit,
            jit: JitOptions::default(),
            seed: 0,
        }
    }
}

/// The training graph running: compiled, with the weights and the optimizer state in the
/// arena of a session of its own (updated there, step after step), or on the interpreter
/// with them in a map.
enum Runner {
    Jit {
        model: Box<Model>,
        session: Session,
    },
    Interp {
        graph: Graph,
        all: HashMap<String, Tensor<f32>>,
    },
}

impl Runner {
    /// The training graph `graph` with `all` (every weight and state buffer it has) and its
    /// `updates` (`TrainingGraph::updates`).
    fn new(
        graph: &Graph,
        all: HashMap<String, Tensor<f32>>,
        updates: &[(String, String)],
        options: &TrainOptions,
    ) -> Result<Runner, RuntimeError> {
        Ok(match options.engine {
            Engine::Jit => {
                let model = crate::model::compile_training(graph, &options.jit, updates)?;
                let mut session = model.session()?;
                model.own_weights(&mut session, &all)?;
                Runner::Jit {
                    model: Box::new(model),
                    session,
                }
            }
            Engine::Interp => {
                check_all_weights(graph, &all)?;
                Runner::Interp {
                    graph: graph.clone(),
                    all,
                }
            }
        })
    }

    /// Runs the graph on `feeds`; returns the loss (the scalar output `loss`), and with the
    /// interpreter every output (left in the arena by the JIT).
    fn run(
        &mut self,
        feeds: &[Feed<'_>],
        loss: &str,
    ) -> Result<(f32, HashMap<String, Value<f32>>), RuntimeError> {
        match self {
            Runner::Jit { model, session } => {
                model.run_gradients(session, feeds)?;
                let l = model.read(session, loss)?;
                Ok((l.data().first().copied().unwrap_or(f32::NAN), HashMap::new()))
            }
            Runner::Interp { graph, all } => {
                let inputs: HashMap<String, Value<f32>> =
                    feeds.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect();
                let outs: HashMap<String, Value<f32>> = kiln_interp::run::<f32>(graph, &inputs, all)?
                    .into_iter()
                    .collect();
                Ok((scalar(&outs, loss)?, outs))
            }
        }
    }

    /// The output `name` of the last run (`outs`: the interpreter's outputs).
    fn output(&self, outs: &HashMap<String, Value<f32>>, name: &str) -> Result<Tensor<f32>, RuntimeError> {
        match self {
            Runner::Jit { model, session } => Ok(model.read(session, name)?),
            Runner::Interp { .. } => tensor(outs, name),
        }
    }

    /// The weight or state buffer `name` now.
    fn read(&self, name: &str) -> Result<Tensor<f32>, RuntimeError> {
        match self {
            Runner::Jit { model, session } => Ok(model.read(session, name)?),
            Runner::Interp { all, .. } => all
                .get(name)
                .cloned()
                .ok_or_else(|| RuntimeError::Input(format!("`{name}` is not a weight of the model"))),
        }
    }

    /// Replaces the weights (or state buffers) in `w`, each checked against the graph.
    fn write(&mut self, w: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
        match self {
            Runner::Jit { model, session } => Ok(model.write_weights(session, w)?),
            Runner::Interp { graph, all } => {
                for (name, t) in w {
                    let ty = graph
                        .find(name)
                        .filter(|&id| matches!(graph.node(id).op, kiln_ir::Op::Param { .. }))
                        .map(|id| graph.node(id).ty.clone())
                        .ok_or_else(|| {
                            RuntimeError::Input(format!("`{name}` is not a weight of the model"))
                        })?;
                    if ty.shape != *t.shape() {
                        return Err(RuntimeError::Input(format!(
                            "weight `{name}`: expected {ty}, got {}",
                            t.shape()
                        )));
                    }
                }
                for (name, t) in w {
                    all.insert(name.clone(), t.clone());
                }
                Ok(())
            }
        }
    }
}

/// Every weight of `graph` in `w`, of its type.
fn check_all_weights(graph: &Graph, w: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
    for id in graph.params() {
        let node = graph.node(id);
        let t = w.get(&node.name).ok_or_else(|| {
            RuntimeError::Input(format!("missing weight `{}` (expected {})", node.name, node.ty))
        })?;
        if t.shape() != &node.ty.shape {
            return Err(RuntimeError::Input(format!(
                "weight `{}`: expected {}, got {}",
                node.name,
                node.ty,
                t.shape()
            )));
        }
    }
    Ok(())
}

fn scalar(outs: &HashMap<String, Value<f32>>, name: &str) -> Result<f32, RuntimeError> {
    outs.get(name)
        .and_then(|v| v.as_f())
        .and_then(|t| t.data().first().copied())
        .ok_or_else(|| RuntimeError::Input(format!("the training graph computed no `{name}`")))
}

fn tensor(outs: &HashMap<String, Value<f32>>, name: &str) -> Result<Tensor<f32>, RuntimeError> {
    outs.get(name)
        .and_then(|v| v.as_f())
        .cloned()
        .ok_or_else(|| RuntimeError::Input(format!("the training graph computed no `{name}`")))
}

/// Trains a network: one optimizer step per [`Trainer::step`].
///
/// With the JIT, the weights and the optimizer state live in the arena of the trainer's own
/// session, and the optimizer's update ops write them in place there
/// ([`crate::compile_training`]): no step clones or copies them, and [`Trainer::weights`]
/// reads them out when asked. A step is two halves, [`Trainer::compute_gradients`] (forward,
/// loss, backward; the gradients readable with [`Trainer::gradient`], the weights untouched)
/// and [`Trainer::apply_update`] (the update phase: the optimizer's new values become the
/// weights).
pub struct Trainer {
    forward: Graph,
    training: TrainingGraph,
    runner: Runner,
    /// Whether the last run's updates await [`Trainer::apply_update`].
    pending: bool,
    /// The interpreter's outputs of the last run (the JIT leaves them in its arena).
    interp_outs: HashMap<String, Value<f32>>,
    /// The forward graph compiled for [`Trainer::predict`], and whether its weights are the
    /// trainer's current ones.
    predictor: Option<(Model, bool)>,
    options: TrainOptions,
}

impl Trainer {
    /// Differentiates `graph` (one output, the prediction) under `loss`, adds `optimizer`'s
    /// updates, and compiles the result; weights start from the seeded default initialization
    /// (`options.seed`), the optimizer state at zero.
    pub fn new(
        graph: &Graph,
        loss: Loss,
        optimizer: Optimizer,
        options: TrainOptions,
    ) -> Result<Trainer, RuntimeError> {
        let weights = kiln_ir::init::default_weights(graph, options.seed)?;
        Trainer::with_weights(graph, &weights, loss, optimizer, options)
    }

    /// [`Trainer::new`] starting from `weights` (every weight of `graph`, by name; others are
    /// ignored): trained ones, or a file's (`crate::load_safetensors`).
    pub fn with_weights(
        graph: &Graph,
        weights: &HashMap<String, Tensor<f32>>,
        loss: Loss,
        optimizer: Optimizer,
        options: TrainOptions,
    ) -> Result<Trainer, RuntimeError> {
        check_all_weights(graph, weights)?;
        let training = differentiate_wrt(graph, loss, Some(optimizer), Wrt::Params)?;
        let mut all: HashMap<String, Tensor<f32>> = graph
            .params()
            .into_iter()
            .map(|id| {
                let n = &graph.node(id).name;
                (n.clone(), weights[n].clone())
            })
            .collect();
        for (n, ty) in &training.state {
            all.insert(n.clone(), Tensor::full(ty.shape.clone(), 0.0f32));
        }
        let runner = Runner::new(&training.graph, all, &training.updates, &options)?;
        Ok(Trainer {
            forward: graph.clone(),
            training,
            runner,
            pending: false,
            interp_outs: HashMap::new(),
            predictor: None,
            options,
        })
    }

    /// A trainer of `model`'s graph (as it was compiled) starting from its weights; a weight
    /// the compiled model dropped (one the output does not depend on) starts from the seeded
    /// initialization.
    pub fn from_model(
        model: &Model,
        loss: Loss,
        optimizer: Optimizer,
        options: TrainOptions,
    ) -> Result<Trainer, RuntimeError> {
        let graph = model.source_graph();
        let given = model.weights().ok_or(RuntimeError::NoWeights)?;
        let mut weights = kiln_ir::init::default_weights(graph, options.seed)?;
        weights.extend(given);
        Trainer::with_weights(graph, &weights, loss, optimizer, options)
    }

    /// Replaces every weight of the model (each must be given, of its type); the optimizer
    /// state is kept.
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
        check_all_weights(&self.forward, weights)?;
        let only: HashMap<String, Tensor<f32>> = self
            .forward
            .params()
            .into_iter()
            .map(|id| {
                let n = &self.forward.node(id).name;
                (n.clone(), weights[n].clone())
            })
            .collect();
        self.update_weights(&only)
    }

    /// Replaces the weights named in `weights` (each must be a weight of the model, of its
    /// type) and keeps the others.
    pub fn update_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), RuntimeError> {
        for name in weights.keys() {
            let is_weight = self
                .forward
                .find(name)
                .is_some_and(|id| matches!(self.forward.node(id).op, kiln_ir::Op::Param { .. }));
            if !is_weight {
                return Err(RuntimeError::Input(format!(
                    "`{name}` is not a weight of the model"
                )));
            }
        }
        self.runner.write(weights)?;
        self.pending = false;
        self.weights_changed();
        Ok(())
    }

    /// The current weights, named as in the model, read out of the trainer's arena.
    pub fn weights(&self) -> Result<HashMap<String, Tensor<f32>>, RuntimeError> {
        self.forward
            .params()
            .into_iter()
            .map(|id| {
                let n = &self.forward.node(id).name;
                Ok((n.clone(), self.runner.read(n)?))
            })
            .collect()
    }

    /// The model with the current weights, compiled for inference (the trainer's JIT options).
    pub fn to_model(&self) -> Result<Model, RuntimeError> {
        let mut m = crate::model::compile(&self.forward, &self.options.jit)?;
        m.set_weights(&self.weights()?)?;
        Ok(m)
    }

    /// The training graph (forward, loss, backward and updates) and what its names mean.
    pub fn training_graph(&self) -> &TrainingGraph {
        &self.training
    }

    /// Writes the current weights as safetensors.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), RuntimeError> {
        crate::save_safetensors(path, &self.weights()?).map_err(RuntimeError::Io)
    }

    /// One optimizer step on a batch: `inputs` are the model's inputs, `target` the loss's
    /// target (class ids `i32 [N]` or an `f32` tensor of the loss's target type). Returns the
    /// batch's loss before the update. [`Trainer::compute_gradients`] then
    /// [`Trainer::apply_update`].
    pub fn step(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
        target: &Value<f32>,
    ) -> Result<f32, RuntimeError> {
        let loss = self.compute_gradients(inputs, target)?;
        self.apply_update()?;
        Ok(loss)
    }

    /// The first half of a step: forward, loss and backward on a batch, and the optimizer's
    /// new values computed but not applied. Returns the batch's loss; the gradients are
    /// readable with [`Trainer::gradient`] until the next call; the weights are unchanged
    /// until [`Trainer::apply_update`].
    pub fn compute_gradients(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
        target: &Value<f32>,
    ) -> Result<f32, RuntimeError> {
        if inputs.contains_key(&self.training.target) {
            return Err(RuntimeError::Input(format!(
                "`{}` is the target's name; pass the target separately",
                self.training.target
            )));
        }
        let mut feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
        feeds.push((self.training.target.as_str(), target));
        self.pending = false;
        let (loss, outs) = self.runner.run(&feeds, &self.training.loss)?;
        self.interp_outs = outs;
        self.pending = true;
        Ok(loss)
    }

    /// The gradient of the last [`Trainer::compute_gradients`] w.r.t. the weight `name`.
    pub fn gradient(&self, name: &str) -> Result<Tensor<f32>, RuntimeError> {
        if !self.pending {
            return Err(RuntimeError::Input(
                "no gradients: call compute_gradients first".into(),
            ));
        }
        let g = self
            .training
            .grads
            .iter()
            .find(|g| g.key == name)
            .ok_or_else(|| {
                RuntimeError::Input(format!(
                    "`{name}` has no gradient (not a trainable weight the loss depends on)"
                ))
            })?;
        self.runner.output(&self.interp_outs, &g.node)
    }

    /// The second half of a step: the optimizer's new values (of the last
    /// [`Trainer::compute_gradients`]) become the weights and the optimizer state, in place.
    pub fn apply_update(&mut self) -> Result<(), RuntimeError> {
        if !self.pending {
            return Err(RuntimeError::Input(
                "no update to apply: call compute_gradients first".into(),
            ));
        }
        match &mut self.runner {
            Runner::Jit { model, session } => model.apply_updates(session)?,
            Runner::Interp { all, .. } => {
                for (name, node) in &self.training.updates {
                    let v = self
                        .interp_outs
                        .remove(node)
                        .and_then(|v| match v {
                            Value::F(t) => Some(t),
                            Value::I(_) => None,
                        })
                        .ok_or_else(|| {
                            RuntimeError::Input(format!("the training graph computed no `{node}`"))
                        })?;
                    all.insert(name.clone(), v);
                }
            }
        }
        self.pending = false;
        self.weights_changed();
        Ok(())
    }

    fn weights_changed(&mut self) {
        if let Some((_, fresh)) = &mut self.predictor {
            *fresh = false;
        }
    }

    /// The model's outputs on `inputs` with the current weights (inference mode).
    pub fn predict(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<Vec<(String, Value<f32>)>, RuntimeError> {
        match self.options.engine {
            Engine::Interp => {
                let w = self.weights()?;
                Ok(kiln_interp::run::<f32>(&self.forward, inputs, &w)?)
            }
            Engine::Jit => {
                if self.predictor.is_none() {
                    self.predictor = Some((crate::model::compile(&self.forward, &self.options.jit)?, false));
                }
                if !self.predictor.as_ref().is_some_and(|(_, fresh)| *fresh) {
                    let w = self.weights()?;
                    let (p, fresh) = self.predictor.as_mut().expect("just made");
                    p.set_weights(&w)?;
                    *fresh = true;
                }
                let (p, _) = self.predictor.as_ref().expect("just made");
                Ok(p.run(inputs)?)
            }
        }
    }

    /// The model's single input (what [`Learner`] feeds the images to).
    fn single_input(&self) -> Result<(String, Vec<usize>), RuntimeError> {
        let ins = self.forward.graph_inputs();
        match ins.as_slice() {
            [i] => {
                let n = self.forward.node(*i);
                Ok((n.name.clone(), n.ty.dims().to_vec()))
            }
            _ => Err(RuntimeError::Input(format!(
                "a Learner needs a model with one input, this one has {}",
                ins.len()
            ))),
        }
    }
}

/// Class ids as the target the loss expects: the ids, or one-hot rows for an `f32 [N, K]`
/// target.
fn labels_as_target(t: &TrainingGraph, labels: &Tensor<i32>) -> Result<Value<f32>, RuntimeError> {
    let ty = &t.graph.node(t.graph.find(&t.target).expect("target input")).ty;
    match ty.dtype {
        DType::I32 => Ok(Value::I(labels.clone())),
        DType::F32 if ty.rank() == 2 && ty.dims()[0] == labels.data().len() => {
            let k = ty.dims()[1];
            let mut v = vec![0.0f32; ty.shape.numel()];
            for (n, &c) in labels.data().iter().enumerate() {
                let c = usize::try_from(c)
                    .ok()
                    .filter(|&c| c < k)
                    .ok_or_else(|| RuntimeError::Input(format!("label {c} of row {n} is outside 0..{k}")))?;
                v[n * k + c] = 1.0;
            }
            Ok(Value::F(Tensor::new(ty.shape.clone(), v).expect("numel matches")))
        }
        _ => Err(RuntimeError::Input(format!(
            "labels {} cannot be the loss's target {ty}",
            labels.shape()
        ))),
    }
}

impl Learner for Trainer {
    fn batch_size(&self) -> usize {
        self.single_input()
            .map_or(0, |(_, d)| d.first().copied().unwrap_or(0))
    }

    fn step(&mut self, images: &Tensor<f32>, labels: &Tensor<i32>) -> Result<f32, FitError> {
        let (name, _) = self.single_input()?;
        let target = labels_as_target(&self.training, labels)?;
        let inputs = HashMap::from([(name, Value::F(images.clone()))]);
        Ok(Trainer::step(self, &inputs, &target)?)
    }

    fn predict(&mut self, images: &Tensor<f32>) -> Result<Tensor<f32>, FitError> {
        let (name, _) = self.single_input()?;
        let inputs = HashMap::from([(name, Value::F(images.clone()))]);
        let outs = Trainer::predict(self, &inputs)?;
        match outs.into_iter().next() {
            Some((_, Value::F(t))) => Ok(t),
            _ => Err("the model's output is not an f32 tensor".into()),
        }
    }
}

/// Tensors with their names.
pub type NamedTensors = Vec<(String, Tensor<f32>)>;

/// The loss of one batch and its gradient w.r.t. every trainable param (named as in the
/// model; zero for a param the loss does not depend on) and every f32 input
/// (`grad_of_<input>`), without updating anything. What `kiln grad` writes.
pub fn gradients(
    graph: &Graph,
    loss: Loss,
    weights: &HashMap<String, Tensor<f32>>,
    inputs: &HashMap<String, Value<f32>>,
    target: &Value<f32>,
    options: &TrainOptions,
) -> Result<(f32, NamedTensors), RuntimeError> {
    let t = differentiate_wrt(graph, loss, None, Wrt::ParamsAndInputs)?;
    // training state (dropout's step count) at its start
    let mut all = weights.clone();
    for (name, ty) in &t.state {
        all.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.0));
    }
    let mut runner = Runner::new(&t.graph, all, &[], options)?;
    let mut feeds: Vec<Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    feeds.push((t.target.as_str(), target));
    let (loss, outs) = runner.run(&feeds, &t.loss)?;
    let mut grads = Vec::new();
    for g in &t.grads {
        grads.push((g.key.clone(), runner.output(&outs, &g.node)?));
    }
    for p in &t.unused_params {
        let id = graph.find(p).expect("a param of the graph");
        grads.push((p.clone(), Tensor::full(graph.node(id).ty.shape.clone(), 0.0)));
    }
    Ok((loss, grads))
}
