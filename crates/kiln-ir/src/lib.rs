//! kiln's graph IR: tensor types, the `Op` enum, the graph with shape inference at insertion,
//! the text IR, and the model summary (params, FLOPs, receptive fields).

#![forbid(unsafe_code)]

pub mod builder;
pub mod error;
pub mod feeds;
pub mod geometry;
pub mod graph;
pub mod init;
pub mod limits;
pub mod op;
pub mod random;
pub mod shape;
pub mod summary;
pub mod tensor;
pub mod text;

pub use builder::Network;
pub use error::{IrError, ParseError, Result};
pub use graph::{Graph, Node, NodeId};
pub use op::{
    Activation, Arity, BinaryOp, BnPart, Conv2d, ConvTranspose2d, Gemm, Im2Col, LossKind, Op, Padding,
    Pool2d, PoolKind, ReduceKind, TrainOp, Update,
};
pub use tensor::{DType, Shape, Tensor, TensorType, Value};
