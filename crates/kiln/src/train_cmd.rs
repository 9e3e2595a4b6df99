//! `kiln train` and `examples/train_digits.rs`: a model, a labelled data set split 80/20 with a
//! seed, the training loop of [`crate::fit`], one line per epoch, and the held-out accuracy as
//! the last line (`test accuracy: NN.NN%`).
//!
//! Everything here is independent of how the learner computes, except [`new_trainer`]: the one
//! function that makes kiln's `Trainer` (autodiff + optimizer, JIT-compiled) for a graph.
//! [`train_with`] runs the same command with any [`TrainSession`].

use crate::fit::{FitError, FitOptions, FitReport, Learner, Progress, fit_with};
use kiln_ir::{Graph, LossKind, Op, Tensor};
use kiln_runtime::data::{Dataset, digits_from_bytes, load_digits_csv_gz, load_idx};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The handwritten digits kiln ships (`examples/data/digits.csv.gz`, see the README beside it),
/// built into kiln so that `--data digits` works from any directory.
pub const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../../examples/data/digits.csv.gz");

/// Where `kiln train` reads its data: `digits`, `digits:PATH` or `idx:IMAGES,LABELS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The built-in digits, or a file of the same CSV format.
    Digits(Option<PathBuf>),
    /// MNIST-style IDX files, gzip-compressed or plain.
    Idx { images: PathBuf, labels: PathBuf },
}

impl FromStr for DataSource {
    type Err = String;

    fn from_str(s: &str) -> Result<DataSource, String> {
        let usage = "expected `digits`, `digits:PATH` or `idx:IMAGES,LABELS`";
        match s.split_once(':') {
            None if s == "digits" => Ok(DataSource::Digits(None)),
            Some(("digits", p)) if !p.is_empty() => Ok(DataSource::Digits(Some(p.into()))),
            Some(("idx", rest)) => match rest.split_once(',') {
                Some((i, l)) if !i.is_empty() && !l.is_empty() && !l.contains(',') => Ok(DataSource::Idx {
                    images: i.into(),
                    labels: l.into(),
                }),
                _ => Err(format!("`{s}`: `idx:` takes two paths, IMAGES,LABELS")),
            },
            _ => Err(format!("unknown data source `{s}`: {usage}")),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Digits(None) => write!(f, "digits"),
            DataSource::Digits(Some(p)) => write!(f, "digits:{}", p.display()),
            DataSource::Idx { images, labels } => write!(f, "idx:{},{}", images.display(), labels.display()),
        }
    }
}

impl DataSource {
    /// Loads the whole data set (not split yet).
    pub fn load(&self) -> Result<Dataset, FitError> {
        Ok(match self {
            DataSource::Digits(None) => {
                digits_from_bytes(DIGITS_CSV_GZ, "examples/data/digits.csv.gz (built in)")?
            }
            DataSource::Digits(Some(p)) => load_digits_csv_gz(p)?,
            DataSource::Idx { images, labels } => load_idx(images, labels)?,
        })
    }
}

/// The optimizer that updates the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Stochastic gradient descent with momentum.
    Sgd,
    /// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8).
    Adam,
}

/// The most epochs `kiln train` runs.
pub const MAX_EPOCHS: usize = 1_000_000;

/// How to train: what the flags of `kiln train` after MODEL and `--data` say.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Passes over the training set (at most [`MAX_EPOCHS`]).
    pub epochs: usize,
    /// Images per step, from 1 to the size of the training set (the model is recompiled for it).
    pub batch: usize,
    /// Learning rate; `None`: 0.05 with sgd, 0.001 with adam.
    pub lr: Option<f32>,
    /// Momentum of sgd (0 for plain SGD).
    pub momentum: f32,
    pub optimizer: OptimizerKind,
    /// Seeds the initial weights, the 80/20 split and each epoch's order.
    pub seed: u64,
    /// Write the trained weights here (named as in the model).
    pub save: Option<PathBuf>,
    /// Start from these weights (safetensors, every weight of the model) instead of the
    /// seeded initialization.
    pub weights: Option<PathBuf>,
    /// Threads of the JIT (0: one per core).
    pub threads: usize,
}

impl Default for TrainSettings {
    fn default() -> TrainSettings {
        TrainSettings {
            epochs: 10,
            batch: 32,
            lr: None,
            momentum: 0.9,
            optimizer: OptimizerKind::Sgd,
            seed: 0,
            save: None,
            weights: None,
            threads: 0,
        }
    }
}

impl TrainSettings {
    /// `lr`, or the optimizer's default.
    pub fn learning_rate(&self) -> f32 {
        self.lr.unwrap_or(match self.optimizer {
            OptimizerKind::Sgd => 0.05,
            OptimizerKind::Adam => 0.001,
        })
    }

    /// Rejects settings no optimizer can use.
    pub fn check(&self) -> Result<(), FitError> {
        let lr = self.learning_rate();
        if !(lr.is_finite() && lr > 0.0) {
            return Err(format!("the learning rate must be a positive number, not {lr}").into());
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(format!("the momentum must lie in [0, 1), not {}", self.momentum).into());
        }
        if self.batch == 0 {
            return Err("the batch size must be at least 1".into());
        }
        if self.epochs > MAX_EPOCHS {
            return Err(format!("{} epochs are more than the limit of {MAX_EPOCHS}", self.epochs).into());
        }
        Ok(())
    }

    fn describe(&self) -> String {
        match self.optimizer {
            OptimizerKind::Sgd => format!("sgd lr {} momentum {}", self.learning_rate(), self.momentum),
            OptimizerKind::Adam => format!("adam lr {}", self.learning_rate()),
        }
    }
}

/// A [`Learner`] whose weights can be read back: what `kiln train` drives (`--save` writes
/// them). kiln's `Trainer` is one; so is any model of your own.
pub trait TrainSession: Learner {
    /// The current weights, named as in the model.
    fn weights(&self) -> Result<HashMap<String, Tensor<f32>>, FitError>;
}

/// The loss the training graph ends in, read off the model's output: logits train with
/// cross-entropy (the softmax is the loss's), a log-softmax output with NLL. A softmax output
/// is refused: its probabilities would be softmaxed twice.
pub fn loss_for(graph: &Graph) -> Result<LossKind, FitError> {
    let out = single_output(graph)?;
    match graph.node(out).op {
        Op::LogSoftmax { .. } => Ok(LossKind::Nll),
        Op::Softmax { .. } => Err(format!(
            "the model's output `{}` is a softmax; train a model that ends in the logits \
             (cross-entropy applies the softmax) or in a log-softmax (trained with NLL)",
            graph.node(out).name
        )
        .into()),
        _ => Ok(LossKind::CrossEntropy),
    }
}

fn single_output(graph: &Graph) -> Result<kiln_ir::NodeId, FitError> {
    match graph.outputs() {
        [o] => Ok(*o),
        outs => Err(format!(
            "a model to train has one output (class scores); this one has {}",
            outs.len()
        )
        .into()),
    }
}

/// `graph` with its batch set to `batch`, after checking that it classifies `data`: one input
/// `f32 [N, C, H, W]` of the data's image size, one output `[N, K]` with K ≥ the data's classes.
pub fn training_graph(graph: &Graph, data: &Dataset, batch: usize) -> Result<Graph, FitError> {
    check_input(graph, data)?;
    let graph = graph
        .with_batch(batch)
        .map_err(|e| format!("setting the model's batch size to {batch}: {e}"))?;
    let out = graph.node(single_output(&graph)?);
    match out.ty.dims() {
        &[n, k] if n == batch && k >= data.classes() => Ok(graph),
        _ => Err(format!(
            "the model's output `{}` is {}, but the data needs class scores [{batch}, K] with K ≥ {}",
            out.name,
            out.ty,
            data.classes()
        )
        .into()),
    }
}

/// Checks that `graph` has one input `f32 [N, C, H, W]` of the data's image size.
fn check_input(graph: &Graph, data: &Dataset) -> Result<(), FitError> {
    let inputs = graph.graph_inputs();
    let [input] = inputs[..] else {
        return Err(format!(
            "a model to train has one input (the images); this one has {}",
            inputs.len()
        )
        .into());
    };
    let node = graph.node(input);
    let [c, h, w] = data.image_dims();
    if node.ty.dtype != kiln_ir::DType::F32 || node.ty.dims().len() != 4 || node.ty.dims()[1..] != [c, h, w] {
        return Err(format!(
            "the model's input `{}` is {}, but the data's images are [N, {c}, {h}, {w}]",
            node.name, node.ty
        )
        .into());
    }
    Ok(())
}

/// The one place that makes kiln's `Trainer` for `graph` (already at the batch size), with the
/// loss of [`loss_for`] and the optimizer and seed of `settings`.
pub fn new_trainer(graph: &Graph, settings: &TrainSettings) -> Result<Box<dyn TrainSession>, FitError> {
    let loss = match loss_for(graph)? {
        LossKind::Nll => crate::Loss::nll(),
        _ => crate::Loss::cross_entropy(),
    };
    let lr = settings.learning_rate();
    let optimizer = match settings.optimizer {
        OptimizerKind::Sgd => crate::Optimizer::sgd(lr).momentum(settings.momentum),
        OptimizerKind::Adam => crate::Optimizer::adam(lr),
    };
    let options = crate::TrainOptions {
        seed: settings.seed,
        jit: kiln_jit::JitOptions {
            threads: settings.threads,
            ..Default::default()
        },
        ..Default::default()
    };
    Ok(Box::new(match &settings.weights {
        Some(path) => {
            let w = kiln_runtime::load_safetensors(path)?;
            crate::Trainer::with_weights(graph, &w, loss, optimizer, options)
                .map_err(|e| format!("--weights {}: {e}", path.display()))?
        }
        None => crate::Trainer::new(graph, loss, optimizer, options)?,
    }))
}

impl TrainSession for crate::Trainer {
    fn weights(&self) -> Result<HashMap<String, Tensor<f32>>, FitError> {
        Ok(crate::Trainer::weights(self)?)
    }
}

/// `kiln train`: loads `model`, trains it on `data` with kiln's `Trainer` and writes the report
/// to `out`.
pub fn train(
    model: &Path,
    data: &DataSource,
    options: &TrainSettings,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
) -> Result<FitReport, FitError> {
    let graph = crate::model::load_graph(model)?;
    train_with(&graph, data, options, out, progress, new_trainer)
}

/// [`train`] with the learner made by `make` from the training graph: loads and splits the
/// data, checks the settings and the model against it (a batch no larger than the training
/// set), and only then makes the learner (compiles), runs [`crate::fit::fit`] (reporting to
/// `progress`), saves the weights when asked, and prints one line per epoch and, last,
/// `test accuracy: NN.NN%`.
pub fn train_with(
    graph: &Graph,
    data: &DataSource,
    options: &TrainSettings,
    out: &mut dyn Write,
    progress: &mut dyn Progress,
    make: impl FnOnce(&Graph, &TrainSettings) -> Result<Box<dyn TrainSession>, FitError>,
) -> Result<FitReport, FitError> {
    options.check()?;
    if let Some(path) = &options.save {
        // found out now, not after the training
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(format!(
                "--save {}: the directory `{}` does not exist",
                path.display(),
                dir.display()
            )
            .into());
        }
    }
    let all = data.load()?;
    check_input(graph, &all)?;
    let (train, test) = all.train_test_split(options.seed)?;
    if options.batch > train.len() {
        return Err(format!(
            "a batch of {} images is larger than the training set ({} of the {} images of {data}; \
             the other {} are held out for testing)",
            options.batch,
            train.len(),
            all.len(),
            test.len()
        )
        .into());
    }
    let graph = training_graph(graph, &all, options.batch)?;
    let mut learner = make(&graph, options)?;
    if learner.batch_size() != options.batch {
        return Err(format!(
            "the learner takes batches of {}, not the {} asked for",
            learner.batch_size(),
            options.batch
        )
        .into());
    }
    writeln!(
        out,
        "{data}: {} training images, {} test images, {} classes; batch {}, epochs {}, {}",
        train.len(),
        test.len(),
        all.classes(),
        options.batch,
        options.epochs,
        options.describe()
    )?;
    let fit_options = FitOptions {
        epochs: options.epochs,
        seed: options.seed,
    };
    let report = fit_with(&mut *learner, &train, &test, &fit_options, progress, |e| {
        writeln!(
            out,
            "epoch {}/{}: loss {:.4}, {:.2} s, {:.0} images/s, test accuracy {:.2}%",
            e.epoch,
            options.epochs,
            e.mean_loss,
            e.seconds,
            e.images_per_second,
            100.0 * e.test_accuracy
        )?;
        Ok(())
    })?;
    if let Some(path) = &options.save {
        kiln_runtime::save_safetensors(path, &learner.weights()?)?;
        writeln!(out, "saved the weights to {}", path.display())?;
    }
    writeln!(out, "test accuracy: {:.2}%", 100.0 * report.test_accuracy)?;
    Ok(report)
}
