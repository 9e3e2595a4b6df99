//! kiln: a layered, compiler-style CNN framework for the CPU.
//!
//! This facade re-exports the public API of the layers below it.

pub use kiln_interp as interp;
pub use kiln_ir as ir;

pub mod zoo;
