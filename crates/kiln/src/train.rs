//! Training: [`Trainer`] differentiates a network once (`kiln-autodiff`: forward, loss,
//! backward and optimizer updates in one graph), compiles that graph with the JIT (or runs
//! it on the reference interpreter), and steps it, keeping the weights and the optimizer
//! state between steps. [`gradients`] is the one-shot form behind `kiln grad`.
//!
//! ```
//! use kiln::ir::builder::Network;
//! use kiln::{Engine, Loss, Optimizer, TrainOptions, Trainer, Tensor, Value};
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
//! # Ok::<(), kiln::ir::IrError>(())
//! ```

use crate::fit::{FitError, Learner};
use kiln_autodiff::{AutodiffError, Loss, Optimizer, TrainingGraph, differentiate};
use kiln_ir::{DType, Graph, Tensor, Value};
use kiln_jit::{JitError, JitModel, JitOptions};
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

/// Why training failed.
#[derive(Debug)]
pub enum TrainError {
    Autodiff(AutodiffError),
    Jit(JitError),
    Interp(kiln_interp::InterpError),
    Io(kiln_runtime::IoError),
    /// Bad arguments (names, shapes) with what was expected.
    Input(String),
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Autodiff(e) => write!(f, "differentiating the model: {e}"),
            TrainError::Jit(e) => write!(f, "JIT: {e}"),
            TrainError::Interp(e) => write!(f, "interpreter: {e}"),
            TrainError::Io(e) => write!(f, "{e}"),
            TrainError::Input(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for TrainError {}

impl From<AutodiffError> for TrainError {
    fn from(e: AutodiffError) -> TrainError {
        TrainError::Autodiff(e)
    }
}
impl From<JitError> for TrainError {
    fn from(e: JitError) -> TrainError {
        TrainError::Jit(e)
    }
}
impl From<kiln_ir::IrError> for TrainError {
    fn from(e: kiln_ir::IrError) -> TrainError {
        TrainError::Input(e.to_string())
    }
}
impl From<kiln_interp::InterpError> for TrainError {
    fn from(e: kiln_interp::InterpError) -> TrainError {
        TrainError::Interp(e)
    }
}

/// A compiled (or interpreted) graph with its weights fed on every run.
enum Runner {
    Jit(Box<JitModel>),
    Interp(Graph),
}

impl Runner {
    fn new(graph: &Graph, options: &TrainOptions) -> Result<Runner, TrainError> {
        Ok(match options.engine {
            Engine::Jit => Runner::Jit(Box::new(kiln_jit::compile(graph, &options.jit)?)),
            Engine::Interp => Runner::Interp(graph.clone()),
        })
    }

    fn run(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
        weights: &HashMap<String, Tensor<f32>>,
    ) -> Result<HashMap<String, Value<f32>>, TrainError> {
        let outs = match self {
            Runner::Jit(m) => {
                m.set_weights(weights)?;
                m.run(inputs)?
            }
            Runner::Interp(g) => kiln_interp::run::<f32>(g, inputs, weights)?,
        };
        Ok(outs.into_iter().collect())
    }
}

fn scalar(outs: &HashMap<String, Value<f32>>, name: &str) -> Result<f32, TrainError> {
    outs.get(name)
        .and_then(|v| v.as_f())
        .and_then(|t| t.data().first().copied())
        .ok_or_else(|| TrainError::Input(format!("the training graph computed no `{name}`")))
}

fn tensor(outs: &HashMap<String, Value<f32>>, name: &str) -> Result<Tensor<f32>, TrainError> {
    outs.get(name)
        .and_then(|v| v.as_f())
        .cloned()
        .ok_or_else(|| TrainError::Input(format!("the training graph computed no `{name}`")))
}

/// Trains a network: one optimizer step per [`Trainer::step`].
pub struct Trainer {
    forward: Graph,
    training: TrainingGraph,
    /// The model's weights (params and buffers) and the optimizer's state.
    weights: HashMap<String, Tensor<f32>>,
    state: HashMap<String, Tensor<f32>>,
    runner: Runner,
    predictor: Option<Runner>,
    options: TrainOptions,
}

impl Trainer {
    /// Differentiates `graph` (one output, the prediction) under `loss`, adds `optimizer`'s
    /// updates, and compiles the result; weights start from the seeded default initialization
    /// (replace them with [`Trainer::set_weights`]).
    pub fn new(
        graph: &Graph,
        loss: Loss,
        optimizer: Optimizer,
        options: TrainOptions,
    ) -> Result<Trainer, TrainError> {
        let training = differentiate(graph, loss, Some(optimizer))?;
        let runner = Runner::new(&training.graph, &options)?;
        let state = training
            .state
            .iter()
            .map(|(n, ty)| (n.clone(), Tensor::full(ty.shape.clone(), 0.0f32)))
            .collect();
        Ok(Trainer {
            forward: graph.clone(),
            weights: kiln_ir::init::default_weights(graph, options.seed)?,
            training,
            state,
            runner,
            predictor: None,
            options,
        })
    }

    /// Replaces the weights named in `weights` (each must be a weight of the model, of its
    /// type).
    pub fn set_weights(&mut self, weights: &HashMap<String, Tensor<f32>>) -> Result<(), TrainError> {
        for (name, t) in weights {
            let cur = self
                .weights
                .get_mut(name)
                .ok_or_else(|| TrainError::Input(format!("`{name}` is not a weight of the model")))?;
            if cur.shape() != t.shape() {
                return Err(TrainError::Input(format!(
                    "weight `{name}`: expected shape {}, got {}",
                    cur.shape(),
                    t.shape()
                )));
            }
            *cur = t.clone();
        }
        Ok(())
    }

    /// The current weights, named as in the model.
    pub fn weights(&self) -> &HashMap<String, Tensor<f32>> {
        &self.weights
    }

    /// The training graph (forward, loss, backward and updates) and what its names mean.
    pub fn training_graph(&self) -> &TrainingGraph {
        &self.training
    }

    /// Writes the current weights as safetensors.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), TrainError> {
        kiln_runtime::save_safetensors(path, &self.weights).map_err(TrainError::Io)
    }

    /// One optimizer step on a batch: `inputs` are the model's inputs, `target` the loss's
    /// target (class ids `i32 [N]` or an `f32` tensor of the loss's target type). Returns the
    /// batch's loss before the update.
    pub fn step(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
        target: &Value<f32>,
    ) -> Result<f32, TrainError> {
        let mut feeds = inputs.clone();
        if feeds.contains_key(&self.training.target) {
            return Err(TrainError::Input(format!(
                "`{}` is the target's name; pass the target separately",
                self.training.target
            )));
        }
        feeds.insert(self.training.target.clone(), target.clone());
        let mut all = self.weights.clone();
        all.extend(self.state.iter().map(|(k, v)| (k.clone(), v.clone())));
        let outs = self.runner.run(&feeds, &all)?;
        let loss = scalar(&outs, &self.training.loss)?;
        for (name, node) in &self.training.updates {
            let v = tensor(&outs, node)?;
            match self.weights.get_mut(name) {
                Some(w) => *w = v,
                None => {
                    self.state.insert(name.clone(), v);
                }
            }
        }
        Ok(loss)
    }

    /// The model's outputs on `inputs` with the current weights (inference mode).
    pub fn predict(
        &mut self,
        inputs: &HashMap<String, Value<f32>>,
    ) -> Result<Vec<(String, Value<f32>)>, TrainError> {
        if self.predictor.is_none() {
            self.predictor = Some(Runner::new(&self.forward, &self.options)?);
        }
        let p = self.predictor.as_mut().expect("just made");
        let outs = p.run(inputs, &self.weights)?;
        let order = self
            .forward
            .outputs()
            .iter()
            .map(|&o| self.forward.node(o).name.clone());
        Ok(order
            .filter_map(|n| outs.get(&n).cloned().map(|v| (n, v)))
            .collect())
    }

    /// The model's single input (what [`Learner`] feeds the images to).
    fn single_input(&self) -> Result<(String, Vec<usize>), TrainError> {
        let ins = self.forward.graph_inputs();
        match ins.as_slice() {
            [i] => {
                let n = self.forward.node(*i);
                Ok((n.name.clone(), n.ty.dims().to_vec()))
            }
            _ => Err(TrainError::Input(format!(
                "a Learner needs a model with one input, this one has {}",
                ins.len()
            ))),
        }
    }
}

/// Class ids as the target the loss expects: the ids, or one-hot rows for an `f32 [N, K]`
/// target.
fn labels_as_target(t: &TrainingGraph, labels: &Tensor<i32>) -> Result<Value<f32>, TrainError> {
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
                    .ok_or_else(|| TrainError::Input(format!("label {c} of row {n} is outside 0..{k}")))?;
                v[n * k + c] = 1.0;
            }
            Ok(Value::F(Tensor::new(ty.shape.clone(), v).expect("numel matches")))
        }
        _ => Err(TrainError::Input(format!(
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
) -> Result<(f32, NamedTensors), TrainError> {
    let t = differentiate(graph, loss, None)?;
    let mut runner = Runner::new(&t.graph, options)?;
    let mut feeds = inputs.clone();
    feeds.insert(t.target.clone(), target.clone());
    // training state (dropout's step count) at its start
    let mut all = weights.clone();
    for (name, ty) in &t.state {
        all.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.0));
    }
    let outs = runner.run(&feeds, &all)?;
    let mut grads = Vec::new();
    for g in &t.grads {
        grads.push((g.key.clone(), tensor(&outs, &g.node)?));
    }
    for p in &t.unused_params {
        let id = graph.find(p).expect("a param of the graph");
        grads.push((p.clone(), Tensor::full(graph.node(id).ty.shape.clone(), 0.0)));
    }
    Ok((scalar(&outs, &t.loss)?, grads))
}
