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
mod reduce;
mod shape;

pub(crate) use crate::import::{
    Attrs, F, Fail, Importer, Val, add_pads, invalid, kernel_matches, to_usize, unsupported,
};
pub(crate) use crate::proto::NodeProto;
pub(crate) use crate::tensor::{Const, ConstData};
pub(crate) use kiln_ir::op::{
    Activation, BinaryOp, BnPart, Conv2d, ConvTranspose2d, Padding, Pool2d, PoolKind, ReduceKind,
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
    ("Cast", shape::cast),
    ("Clip", activation::clip),
    ("Concat", shape::concat),
    ("Constant", constant::constant),
    ("ConstantOfShape", constant::constant_of_shape),
    ("Conv", conv::conv),
    ("ConvTranspose", conv::conv_transpose),
    ("Div", math::binary),
    ("Dropout", shape::dropout),
    ("Erf", activation::erf),
    ("Flatten", shape::flatten),
    ("Gather", shape::gather),
    ("Gelu", activation::gelu),
    ("Gemm", math::gemm),
    ("GlobalAveragePool", pool::global_pool),
    ("GlobalMaxPool", pool::global_pool),
    ("HardSigmoid", activation::hard_sigmoid),
    ("HardSwish", activation::hard_swish),
    ("Identity", shape::identity),
    ("LRN", norm::lrn),
    ("LayerNormalization", norm::layer_norm),
    ("LeakyRelu", activation::activation),
    ("LogSoftmax", activation::softmax),
    ("MatMul", math::matmul),
    ("MaxPool", pool::pool),
    ("Mul", math::binary),
    ("Pad", shape::pad),
    ("ReduceMean", reduce::reduce_mean),
    ("Relu", activation::activation),
    ("Reshape", shape::reshape),
    ("Shape", shape::shape),
    ("Sigmoid", activation::activation),
    ("Slice", shape::slice),
    ("Softmax", activation::softmax),
    ("Split", shape::split),
    ("Squeeze", shape::squeeze),
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

/// Input `i` of `n` as one number known at import (a constant of one element, float or
/// integer), `None` when absent.
pub(crate) fn scalar(im: &Importer, n: &NodeProto, i: usize, what: &str) -> F<Option<f32>> {
    let Some(c) = im.constant(n, i, what)? else {
        return Ok(None);
    };
    if c.len() != 1 {
        return Err(invalid(
            n,
            format!(
                "its {what} (input {i}) must hold one value, it has dims {:?}",
                c.dims
            ),
        ));
    }
    Ok(Some(match &c.data {
        ConstData::F32(v) => v[0],
        ConstData::I64(v) => v[0] as f32,
    }))
}

/// `axis` (negative counts from the end) as an index below `rank`.
pub(crate) fn axis(n: &NodeProto, axis: i64, rank: usize, what: &str) -> F<usize> {
    let r = rank as i64;
    let v = if axis < 0 { axis + r } else { axis };
    if !(0..r).contains(&v) {
        return Err(invalid(
            n,
            format!("{what} {axis} is out of range for rank {rank}"),
        ));
    }
    Ok(v as usize)
}

/// The dims of value `i` of `n`, constant or computed.
pub(crate) fn dims_of(im: &mut Importer, n: &NodeProto, i: usize) -> F<Vec<usize>> {
    match im.val(n, i)? {
        Some(Val::Const(c)) => Ok(c.dims.clone()),
        Some(_) => {
            let id = im.tensor(n, i)?;
            Ok(im.ty(id).dims().to_vec())
        }
        None => Err(invalid(n, format!("input {i} is required"))),
    }
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
