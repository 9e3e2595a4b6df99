//! kiln's runtime layer. Today: tensors in and out of files (`.npy`, safetensors).
//! The thread pool and the `Model` / `Trainer` API arrive with the JIT and training issues.

pub mod io;

pub use io::{IoError, load_safetensors, read_npy, save_safetensors, write_npy};
