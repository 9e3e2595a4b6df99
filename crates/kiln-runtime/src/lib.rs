//! kiln's runtime layer. Today: tensors in and out of files (`.npy`, safetensors) and labelled
//! image data sets for training (`data`). The `Model` / `Trainer` API lives in the facade.

#![forbid(unsafe_code)]

pub mod data;
pub mod io;

pub use data::{Batch, DataError, Dataset, Remainder, digits_from_bytes, load_digits_csv_gz, load_idx};
pub use io::{IoError, load_safetensors, read_npy, read_npy_type, save_safetensors, write_npy};
