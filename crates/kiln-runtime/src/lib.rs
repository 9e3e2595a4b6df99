//! kiln's runtime layer: it owns execution. A [`Model`] holds a compiled graph's kernels
//! (`kiln-jit`), its weights and its worker threads, and runs it in [`Session`]s, one arena per
//! concurrent run; [`Trainer`] steps a training graph with its parameters and optimizer state
//! in place; [`fit`] drives training over a labelled image data set ([`data`]); tensors move in
//! and out of files (`.npy`, safetensors) through [`io`].

pub mod check;
pub mod data;
pub mod fit;
pub mod io;
pub mod model;
mod pool;
pub mod train;

pub use data::{Batch, DataError, Dataset, Remainder, digits_from_bytes, load_digits_csv_gz, load_idx};
pub use io::{IoError, load_safetensors, read_npy, read_npy_type, save_safetensors, write_npy};
pub use model::{Feed, Model, Outputs, RuntimeError, Session, compile, compile_training, thread_cpu_ms};
pub use train::{Engine, TrainOptions, Trainer};
