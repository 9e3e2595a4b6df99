//! The training loop's view of a model (the loop itself lives with the data loaders).

use kiln_ir::Tensor;

pub type FitError = Box<dyn std::error::Error + Send + Sync>;
/// What the training loop drives. Every call gets exactly `batch_size()` rows.
pub trait Learner {
    fn batch_size(&self) -> usize;
    /// One optimizer step; returns the mean loss of the batch.
    fn step(&mut self, images: &Tensor<f32>, labels: &Tensor<i32>) -> Result<f32, FitError>;
    /// Forward pass in inference mode: class scores [N, classes].
    fn predict(&mut self, images: &Tensor<f32>) -> Result<Tensor<f32>, FitError>;
}
