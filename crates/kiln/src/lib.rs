//! kiln: a layered, compiler-style CNN framework for the CPU.
//!
//! This facade re-exports the public API of the layers below it: the graph IR and its builder
//! ([`ir`]), the reference interpreter ([`interp`]), the Cranelift JIT ([`jit`]), tensor and
//! weight files ([`runtime`]), ONNX import ([`onnx`]), model loading ([`model`]) and the model
//! zoo ([`zoo`]).
//!
//! ```
//! use kiln::ir::builder::{Conv, Network};
//! let mut net = Network::new("tiny");
//! let x = net.input("input", [1, 1, 8, 8])?;
//! let h = net.conv2d(x, Conv::new(4, [3, 3]).padding(1))?;
//! let h = net.relu(h)?;
//! net.output(h)?;
//! let graph = net.finish()?;
//! println!("{}", kiln::ir::summary::summarize(&graph));
//! # Ok::<(), kiln::ir::IrError>(())
//! ```

#![forbid(unsafe_code)]

pub use kiln_autodiff as autodiff;
pub use kiln_interp as interp;
pub use kiln_ir as ir;
pub use kiln_jit as jit;
pub use kiln_onnx as onnx;
pub use kiln_passes as passes;
pub use kiln_runtime as runtime;

pub use kiln_ir::{Graph, Network, Tensor, Value};
/// Compile a graph to native code for this CPU (see [`jit::compile`]).
pub use kiln_jit::{Feed, JitModel as Model, JitOptions as CompileOptions, Session, compile};

pub mod check;
pub mod fit;
pub mod model;
pub mod train;
pub mod train_cmd;
pub mod zoo;

pub use kiln_autodiff::{Loss, Optimizer, Wrt};
pub use train::{Engine, TrainOptions, Trainer};
