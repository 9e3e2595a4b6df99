//! The operator mappings, one function per ONNX operator family, found by name through
//! [`lookup`]. Each function reads its node's attributes and inputs through the
//! [`Importer`](crate::import::Importer), adds IR nodes, and returns the values of the node's
//! outputs (or why it cannot: unsupported, invalid, or reading an unsupported node's output).

mod activation;
mod constant;
mod conv;
mod math;
mod norm;
mod pool;
mod shape;

pub(crate) use crate::import::{
    Attrs, F, Fail, Importer, Val, add_pads, invalid, kernel_matches, to_usize, unsupported,
};
pub(crate) use crate::proto::NodeProto;
pub(crate) use crate::tensor::{Const, ConstData};
pub(crate) use kiln_ir::op::{
    Activation, BinaryOp, Conv2d, ConvTranspose2d, Padding, Pool2d, PoolKind, ReduceKind,
};
pub(crate) use kiln_ir::{NodeId, Op};
pub(crate) use std::rc::Rc;

/// Maps one node: the importer, the node, its attributes, the name of its first output.
pub(crate) type OpFn = fn(&mut Importer, &NodeProto, &Attrs, &str) -> F<Vec<Val>>;

/// Every ONNX operator (default domain) kiln imports, and its mapping.
const TABLE: &[(&str, OpFn)] = &[
    ("Add", math::binary),
    ("AveragePool", pool::pool),
    ("BatchNormalization", norm::batch_norm),
    ("Concat", shape::concat),
    ("Constant", constant::constant),
    ("ConstantOfShape", constant::constant_of_shape),
    ("Conv", conv::conv),
    ("ConvTranspose", conv::conv_transpose),
    ("Div", math::binary),
    ("Dropout", shape::dropout),
    ("Flatten", shape::flatten),
    ("Gemm", math::gemm),
    ("GlobalAveragePool", pool::global_pool),
    ("GlobalMaxPool", pool::global_pool),
    ("Identity", shape::identity),
    ("LeakyRelu", activation::activation),
    ("LogSoftmax", activation::softmax),
    ("MatMul", math::matmul),
    ("MaxPool", pool::pool),
    ("Mul", math::binary),
    ("Pad", shape::pad),
    ("Relu", activation::activation),
    ("Reshape", shape::reshape),
    ("Sigmoid", activation::activation),
    ("Softmax", activation::softmax),
    ("Sub", math::binary),
    ("Sum", math::sum),
    ("Tanh", activation::activation),
    ("Transpose", shape::transpose),
    ("Unsqueeze", shape::unsqueeze),
];

/// The mapping of ONNX operator `op_type`, `None` when kiln does not import it.
pub(crate) fn lookup(op_type: &str) -> Option<OpFn> {
    TABLE.iter().find(|(name, _)| *name == op_type).map(|&(_, f)| f)
}

/// One IR node as a node's only output.
pub(crate) fn one(id: NodeId) -> F<Vec<Val>> {
    Ok(vec![Val::Node(id)])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_is_sorted_and_has_no_duplicates() {
        let names: Vec<&str> = super::TABLE.iter().map(|&(name, _)| name).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    }
}
