//! The training loop: [`fit`] drives any [`Learner`] (kiln's `Trainer`, or a model of your own)
//! over a [`Dataset`] for some epochs, with a seeded reshuffle per epoch, progress reported to a
//! [`Progress`] (the `kiln` tool draws a bar with it), and the held-out [`accuracy`] after every
//! epoch.
//!
//! Training uses full batches only (the rows that do not fill the last batch of an epoch are
//! left out of that epoch; another order puts other rows there next time). Evaluation sees every
//! row: its last chunk is padded up to the batch size and the padding rows' predictions ignored.

use crate::data::{Dataset, Remainder, permutation};
use kiln_ir::Tensor;
use std::time::Instant;

pub type FitError = Box<dyn std::error::Error + Send + Sync>;

/// What the training loop drives. Every call gets exactly `batch_size()` rows.
pub trait Learner {
    fn batch_size(&self) -> usize;
    /// One optimizer step; returns the mean loss of the batch.
    fn step(&mut self, images: &Tensor<f32>, labels: &Tensor<i32>) -> Result<f32, FitError>;
    /// Forward pass in inference mode: class scores [N, classes].
    fn predict(&mut self, images: &Tensor<f32>) -> Result<Tensor<f32>, FitError>;
}

/// How [`fit`] trains.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Passes over the training set.
    pub epochs: usize,
    /// Seeds each epoch's order of the training rows: the same seed, the same run.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions { epochs: 10, seed: 0 }
    }
}

/// One epoch of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based.
    pub epoch: usize,
    /// Mean over the epoch's steps of each batch's mean loss.
    pub mean_loss: f32,
    /// Wall time of the epoch's training steps (evaluation not included).
    pub seconds: f64,
    /// Training images per second over those steps.
    pub images_per_second: f64,
    /// Fraction of the test set classified right after this epoch, in `[0, 1]`.
    pub test_accuracy: f64,
}

/// What [`fit`] did: one entry per epoch, and the final held-out accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    pub epochs: Vec<EpochReport>,
    /// The test accuracy at the end (of the untrained learner when `epochs` was 0).
    pub test_accuracy: f64,
}

/// The order of the training rows in epoch `epoch` (0-based): a fresh seeded permutation each
/// epoch, all derived from `seed`.
pub fn epoch_order(rows: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut s = kiln_ir::init::SplitMix64::new(seed);
    let mut epoch_seed = s.next_u64();
    for _ in 0..epoch {
        epoch_seed = s.next_u64();
    }
    permutation(rows, epoch_seed)
}

/// What [`fit_with`] reports while it trains. Every method does nothing by default;
/// [`NoProgress`] is that. The `kiln` tool implements it with a progress bar.
pub trait Progress {
    /// Before the first step: the number of steps of the whole run.
    fn start(&mut self, _steps: u64) {}
    /// Epoch `epoch` (1-based) of `epochs` begins.
    fn epoch(&mut self, _epoch: usize, _epochs: usize) {}
    /// A step is done: the mean loss of the epoch's steps so far and the images per second.
    fn step(&mut self, _mean_loss: f64, _images_per_second: f64) {}
    /// Runs `f`, which prints an epoch's line (a bar clears itself around it).
    fn suspend(&mut self, f: &mut dyn FnMut() -> Result<(), FitError>) -> Result<(), FitError> {
        f()
    }
    /// After the last epoch.
    fn finish(&mut self) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// Trains `learner` on `train` for `options.epochs` epochs and measures it on `test` after each.
///
/// Errors: data sets whose images differ in shape, a training set smaller than one batch, an
/// empty test set, an error of the learner (with the epoch and step it happened at), or a loss that is not finite.
pub fn fit(
    learner: &mut (impl Learner + ?Sized),
    train: &Dataset,
    test: &Dataset,
    options: &FitOptions,
) -> Result<FitReport, FitError> {
    fit_with(learner, train, test, options, &mut NoProgress, |_| Ok(()))
}

/// [`fit`] that reports each step to `progress` and calls `on_epoch` with each epoch's report as
/// soon as the epoch is done (inside [`Progress::suspend`], so it may print).
pub fn fit_with(
    learner: &mut (impl Learner + ?Sized),
    train: &Dataset,
    test: &Dataset,
    options: &FitOptions,
    progress: &mut dyn Progress,
    mut on_epoch: impl FnMut(&EpochReport) -> Result<(), FitError>,
) -> Result<FitReport, FitError> {
    let batch = learner.batch_size();
    if train.image_dims() != test.image_dims() {
        return Err(format!(
            "the training images are {:?} but the test images {:?}",
            train.image_dims(),
            test.image_dims()
        )
        .into());
    }
    if test.is_empty() {
        return Err("the test set is empty".into());
    }
    let steps = train.len() / batch.max(1);
    if batch == 0 || steps == 0 {
        return Err(format!(
            "the training set has {} images, fewer than one batch of {batch}",
            train.len()
        )
        .into());
    }
    let mut epochs = Vec::new();
    progress.start((steps as u64).saturating_mul(options.epochs as u64));
    for epoch in 0..options.epochs {
        progress.epoch(epoch + 1, options.epochs);
        let order = epoch_order(train.len(), options.seed, epoch);
        let start = Instant::now();
        let mut total = 0.0f64;
        for (step, b) in train.batches(batch, Some(&order), Remainder::Drop)?.enumerate() {
            let at = || format!("epoch {}, step {}/{steps}", epoch + 1, step + 1);
            let loss = learner
                .step(&b.images, &b.labels)
                .map_err(|e| format!("{}: {e}", at()))?;
            if !loss.is_finite() {
                return Err(format!(
                    "{}: the loss is {loss}; training diverged (try a smaller learning rate)",
                    at()
                )
                .into());
            }
            total += f64::from(loss);
            let seconds = start.elapsed().as_secs_f64();
            progress.step(
                total / (step + 1) as f64,
                ((step + 1) * batch) as f64 / seconds.max(1e-9),
            );
        }
        let seconds = start.elapsed().as_secs_f64();
        let test_accuracy =
            accuracy(learner, test).map_err(|e| format!("epoch {}, evaluation: {e}", epoch + 1))?;
        let report = EpochReport {
            epoch: epoch + 1,
            mean_loss: (total / steps as f64) as f32,
            seconds,
            images_per_second: (steps * batch) as f64 / seconds.max(1e-9),
            test_accuracy,
        };
        progress.suspend(&mut || on_epoch(&report))?;
        epochs.push(report);
    }
    progress.finish();
    let test_accuracy = match epochs.last() {
        Some(e) => e.test_accuracy,
        None => accuracy(learner, test)?,
    };
    Ok(FitReport {
        epochs,
        test_accuracy,
    })
}

/// The fraction of `data` whose highest-scoring class (the first one on ties) is its label.
/// Batches of `learner.batch_size()`; the last one padded, its padding rows ignored.
pub fn accuracy(learner: &mut (impl Learner + ?Sized), data: &Dataset) -> Result<f64, FitError> {
    let batch = learner.batch_size();
    if data.is_empty() {
        return Err("cannot measure accuracy on an empty data set".into());
    }
    let mut right = 0usize;
    for b in data.batches(batch, None, Remainder::Pad)? {
        let scores = learner.predict(&b.images)?;
        let &[n, k] = scores.dims() else {
            return Err(format!(
                "predict returned scores of shape {}, not [{batch}, classes]",
                scores.shape()
            )
            .into());
        };
        if n != batch || k == 0 {
            return Err(format!(
                "predict returned scores of shape {}, not [{batch}, classes]",
                scores.shape()
            )
            .into());
        }
        for (row, &label) in scores.data().chunks_exact(k).zip(b.labels.data()).take(b.rows) {
            right += usize::from(argmax(row) == label as usize);
        }
    }
    Ok(right as f64 / data.len() as f64)
}

/// Index of the largest score, the first on ties; NaN never wins.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() && !v.is_nan() {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 1.0]), 2);
        assert_eq!(argmax(&[0.0, f32::NAN, -1.0]), 0);
        assert_eq!(argmax(&[-5.0]), 0);
    }
}
