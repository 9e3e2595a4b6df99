//! kiln: a layered, compiler-style CNN framework for the CPU.
//!
//! This facade re-exports the public API of the layers below it: the graph IR and its builder
//! ([`ir`]), the reference interpreter ([`interp`]), autodiff ([`autodiff`]), the passes
//! ([`passes`]), the Cranelift code generator ([`jit`]), the runtime that runs what it compiles —
//! `Model`, `Session`, `Trainer`, tensor and weight files, data sets ([`runtime`]) —, ONNX import
//! ([`onnx`]); and it holds model loading ([`model`]), the model zoo ([`zoo`]) and the `kiln`
//! command-line tool.
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
/// Compile a graph to native code for this CPU and run it (see [`runtime::compile`]).
pub use kiln_jit::JitOptions as CompileOptions;
pub use kiln_runtime::{Feed, Model, RuntimeError, Session, compile};

pub mod model;
pub mod train_cmd;
pub mod zoo;

pub use kiln_autodiff::{Loss, Optimizer, Wrt};
pub use kiln_runtime::{Engine, TrainOptions, Trainer, check, fit, train};
