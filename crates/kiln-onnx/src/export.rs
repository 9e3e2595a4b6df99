//! Writing a kiln inference graph as an ONNX model: the inverse of the importer.
//!
//! Every value is named after the kiln node that computes it, graph inputs and outputs keep
//! their node names and static shapes, and every `param` and `buffer` becomes an initializer
//! holding its weight. The model imports the default domain at opset [`EXPORT_OPSET`] (19
//! when a dilated average pool needs it). A node without an ONNX equivalent (a loss, a
//! training-only op of a backward graph, a node that only the optimization passes make, an
//! adaptive pool whose windows differ in size) is an [`ExportError::Unsupported`] that lists
//! every such node at once.
//!
//! ```no_run
//! # use kiln_ir::{Graph, Tensor}; use std::collections::HashMap;
//! # fn f(graph: &Graph, weights: &HashMap<String, Tensor<f32>>) -> Result<(), Box<dyn std::error::Error>> {
//! let bytes = kiln_onnx::export(graph, weights)?;
//! std::fs::write("model.onnx", bytes)?;
//! # Ok(()) }
//! ```

use crate::proto::{
    AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, attribute_type as at,
    data_type as dt,
};
use kiln_ir::geometry::Window2d;
use kiln_ir::op::{Activation, BinaryOp, PoolKind, ReduceKind};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, TrainOp};
use prost::Message;
use std::collections::{HashMap, HashSet};
use zerocopy::IntoBytes;

/// The opset of the default domain an exported model imports (ONNX 1.13's, which ONNX Runtime
/// 1.14 and later run). A model with a dilated average pool imports opset 19, the first whose
/// `AveragePool` has `dilations`.
pub const EXPORT_OPSET: i64 = 18;

/// Why a graph could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nodes without an ONNX equivalent, all of them.
    #[error("{}", list(.0))]
    Unsupported(Vec<UnsupportedNode>),
    /// A param or buffer whose weight is missing or of another shape.
    #[error("weight `{name}`: {reason}")]
    Weight { name: String, reason: String },
    /// A graph ONNX cannot hold (a model of 2 GiB or more, an inconsistent graph).
    #[error("cannot export the graph: {0}")]
    Graph(String),
}

/// One node the exporter has no ONNX equivalent for, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    pub node: String,
    /// The node's op in the text IR (`mse_loss`, `im2col`, …).
    pub op: String,
    pub reason: String,
}

impl std::fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "node `{}` ({}): {}", self.node, self.op, self.reason)
    }
}

fn list(nodes: &[UnsupportedNode]) -> String {
    let mut s = format!(
        "{} node{} without an ONNX equivalent:",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    );
    for n in nodes {
        s.push_str("\n  ");
        s.push_str(&n.to_string());
    }
    s
}

/// `graph` with `weights` (by node name; entries naming no param are ignored) as the bytes of
/// an ONNX model.
pub fn export(graph: &Graph, weights: &HashMap<String, Tensor<f32>>) -> Result<Vec<u8>, ExportError> {
    let e = Export::new(graph, weights)?;
    let mut bytes = Vec::with_capacity(e.len() as usize);
    e.write_to(&mut bytes)
        .map_err(|err| ExportError::Graph(err.to_string()))?;
    Ok(bytes)
}

/// `graph` with `weights` as an ONNX `ModelProto` (what [`export`] encodes).
pub fn to_model(graph: &Graph, weights: &HashMap<String, Tensor<f32>>) -> Result<ModelProto, ExportError> {
    let e = Export::new(graph, weights)?;
    let mut model = e.model;
    if let Some(g) = model.graph.as_mut() {
        for (t, data) in g.initializer.iter_mut().zip(&e.data) {
            if let Some(data) = data {
                t.raw_data = le_bytes(data).into_owned();
            }
        }
    }
    Ok(model)
}

/// An exported model ready to be written: the `ModelProto` without the weights' bytes, which
/// [`Export::write_to`] writes straight from the weights (no copy of them is held).
pub struct Export<'w> {
    /// The model; the initializers holding a weight have no `raw_data` here.
    model: ModelProto,
    /// The weight of each initializer, in order (`None`: its data is in the message).
    data: Vec<Option<&'w [f32]>>,
    len: u64,
}

impl<'w> Export<'w> {
    /// Maps `graph` with `weights` (see [`export`]); every error comes from here, before a
    /// byte is written.
    pub fn new(graph: &Graph, weights: &'w HashMap<String, Tensor<f32>>) -> Result<Export<'w>, ExportError> {
        let (model, data) = build(graph, weights)?;
        let mut e = Export { model, data, len: 0 };
        e.len = e.parts().total;
        if e.len >= 1 << 31 {
            return Err(ExportError::Graph(format!(
                "the model would take {} bytes; an ONNX file is a protobuf message of less than 2 GiB",
                e.len
            )));
        }
        Ok(e)
    }

    /// The size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded pieces: the model without its graph, the graph without its initializers,
    /// each initializer without its weight, and the lengths of the graph and of the whole.
    fn parts(&self) -> Parts {
        let mut model = self.model.clone();
        let mut graph = model.graph.take().unwrap_or_default();
        let inits = std::mem::take(&mut graph.initializer);
        let heads: Vec<Vec<u8>> = inits.iter().map(Message::encode_to_vec).collect();
        let mut graph_len = graph.encoded_len() as u64;
        for (head, data) in heads.iter().zip(&self.data) {
            let t = tensor_len(head.len() as u64, *data);
            graph_len += 1 + varint_len(t) + t;
        }
        let model = model.encode_to_vec();
        Parts {
            total: model.len() as u64 + 1 + varint_len(graph_len) + graph_len,
            model,
            graph: graph.encode_to_vec(),
            graph_len,
            heads,
        }
    }

    /// Writes the ONNX file: the protobuf encoding of the model, each weight's bytes written
    /// from the weight itself as its initializer's `raw_data`.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let p = self.parts();
        out.write_all(&p.model)?;
        // ModelProto.graph (7), then GraphProto.initializer (5) and TensorProto.raw_data (9),
        // all length-delimited (protobuf takes fields in any order)
        out.write_all(&key(7))?;
        out.write_all(&varint(p.graph_len))?;
        out.write_all(&p.graph)?;
        for (head, data) in p.heads.iter().zip(&self.data) {
            out.write_all(&key(5))?;
            out.write_all(&varint(tensor_len(head.len() as u64, *data)))?;
            out.write_all(head)?;
            if let Some(data) = data {
                out.write_all(&key(9))?;
                out.write_all(&varint(4 * data.len() as u64))?;
                out.write_all(&le_bytes(data))?;
            }
        }
        Ok(())
    }
}

struct Parts {
    total: u64,
    model: Vec<u8>,
    graph: Vec<u8>,
    graph_len: u64,
    heads: Vec<Vec<u8>>,
}

/// The length of an encoded `TensorProto` of `head` bytes plus `data` as its `raw_data`.
fn tensor_len(head: u64, data: Option<&[f32]>) -> u64 {
    match data {
        Some(d) => {
            let n = 4 * d.len() as u64;
            head + 1 + varint_len(n) + n
        }
        None => head,
    }
}

/// The key of length-delimited field `field` (< 16: one byte).
fn key(field: u8) -> [u8; 1] {
    [(field << 3) | 2]
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

fn varint_len(v: u64) -> u64 {
    varint(v).len() as u64
}

/// `data` as little-endian bytes (borrowed on a little-endian host).
fn le_bytes(data: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(data.as_bytes())
    } else {
        std::borrow::Cow::Owned(data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
}

/// The model without the weights' bytes, and the weight of each initializer.
type Built<'w> = (ModelProto, Vec<Option<&'w [f32]>>);

fn build<'w>(graph: &Graph, weights: &'w HashMap<String, Tensor<f32>>) -> Result<Built<'w>, ExportError> {
    let mut ex = Exporter {
        graph,
        names: graph
            .topo_order()
            .into_iter()
            .map(|id| graph.node(id).name.clone())
            .collect(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        data: Vec::new(),
        inputs: Vec::new(),
        opset: EXPORT_OPSET,
        unsupported: Vec::new(),
    };
    for id in graph.topo_order() {
        let node = graph.node(id);
        match &node.op {
            Op::Input(ty) => {
                ex.inputs.push(ValueInfoProto {
                    name: node.name.clone(),
                    r#type: Some(value_type(ty)),
                });
            }
            Op::Param { ty, .. } => {
                let w = weights.get(&node.name).ok_or_else(|| ExportError::Weight {
                    name: node.name.clone(),
                    reason: "missing from the weights".into(),
                })?;
                if w.dims() != ty.dims() {
                    return Err(ExportError::Weight {
                        name: node.name.clone(),
                        reason: format!("shape {:?}, but the graph declares {:?}", w.dims(), ty.dims()),
                    });
                }
                ex.initializers.push(TensorProto {
                    name: node.name.clone(),
                    dims: ty.dims().iter().map(|&d| d as i64).collect(),
                    data_type: dt::FLOAT,
                    ..TensorProto::default()
                });
                ex.data.push(Some(w.data()));
            }
            _ => {
                if let Err(reason) = ex.node(id) {
                    ex.unsupported.push(UnsupportedNode {
                        node: node.name.clone(),
                        op: node.op.name().to_string(),
                        reason,
                    });
                }
            }
        }
    }
    if !ex.unsupported.is_empty() {
        return Err(ExportError::Unsupported(ex.unsupported));
    }
    let outputs = graph
        .outputs()
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            ValueInfoProto {
                name: node.name.clone(),
                r#type: Some(value_type(&node.ty)),
            }
        })
        .collect::<Vec<_>>();
    if outputs.is_empty() {
        return Err(ExportError::Graph("the graph has no outputs".into()));
    }
    let model = ModelProto {
        // IR version 8 goes with opsets 17 and 18, 9 with 19 and 20
        ir_version: if ex.opset >= 19 { 9 } else { 8 },
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: ex.opset,
        }],
        producer_name: "kiln".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            node: ex.nodes,
            name: graph.name.clone(),
            initializer: ex.initializers,
            input: ex.inputs,
            output: outputs,
            value_info: Vec::new(),
        }),
    };
    Ok((model, ex.data))
}

struct Exporter<'g, 'w> {
    graph: &'g Graph,
    /// Every ONNX value name handed out (the node names first), so that the constants the
    /// exporter adds (a reshape's shape, a clip's bounds) never take a node's name.
    names: HashSet<String>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// The weight of each initializer (`None`: the exporter's own constants, in the message).
    data: Vec<Option<&'w [f32]>>,
    inputs: Vec<ValueInfoProto>,
    opset: i64,
    unsupported: Vec<UnsupportedNode>,
}

type R<T> = std::result::Result<T, String>;

impl Exporter<'_, '_> {
    /// A value name not used yet: `base`, else `base_2`, `base_3`, …
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 2;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    fn push(
        &mut self,
        op_type: &str,
        name: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: name.to_string(),
            op_type: op_type.into(),
            domain: String::new(),
            attribute,
        });
    }

    /// An initializer holding `data`, named after `base`.
    fn const_f32(&mut self, base: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(base);
        self.initializers.push(f32_tensor(&name, dims, data));
        self.data.push(None);
        name
    }

    fn const_i64(&mut self, base: &str, data: &[i64]) -> String {
        let name = self.fresh(base);
        self.initializers.push(TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: dt::INT64,
            int64_data: data.to_vec(),
            ..TensorProto::default()
        });
        self.data.push(None);
        name
    }

    /// The ONNX nodes computing node `id`; `Err` says why there are none.
    fn node(&mut self, id: NodeId) -> R<()> {
        let g = self.graph;
        let node = g.node(id);
        let name = node.name.as_str();
        let ins: Vec<NodeId> = g.inputs(id);
        let input_names: Vec<String> = ins.iter().map(|&i| g.node(i).name.clone()).collect();
        let dims = |k: usize| g.node(ins[k]).ty.dims();
        match &node.op {
            // sources: graph inputs and initializers, made by `to_model`
            Op::Input(_) | Op::Param { .. } => {}
            Op::Conv2d(c) => {
                let w = dims(1);
                let kernel = [w[2], w[3]];
                let geo = c.geometry(dims(0), kernel)?;
                let attrs = vec![
                    ints("kernel_shape", &kernel),
                    ints("strides", &c.stride),
                    ints("dilations", &c.dilation),
                    ints("pads", &geo.pad),
                    int("group", c.groups as i64),
                ];
                match c.activation {
                    None => self.push("Conv", name, input_names, name, attrs),
                    Some(a) => {
                        let conv = self.fresh(&format!("{name}.conv"));
                        self.push("Conv", &conv, input_names, &conv, attrs);
                        self.activation(a, name, conv)?;
                    }
                }
            }
            Op::ConvTranspose2d(c) => {
                let w = dims(1);
                self.push(
                    "ConvTranspose",
                    name,
                    input_names,
                    name,
                    vec![
                        ints("kernel_shape", &[w[2], w[3]]),
                        ints("strides", &c.stride),
                        ints("dilations", &c.dilation),
                        ints("pads", &c.padding),
                        ints("output_padding", &c.output_padding),
                        int("group", c.groups as i64),
                    ],
                );
            }
            Op::Pool2d(p) => {
                let geo = p.geometry(dims(0))?;
                let (pads, ceil_mode) = pool_pads(&geo, p.ceil_mode);
                let mut attrs = vec![
                    ints("kernel_shape", &p.kernel),
                    ints("strides", &p.stride),
                    ints("pads", &pads),
                    int("ceil_mode", i64::from(ceil_mode)),
                ];
                match p.kind {
                    PoolKind::Max => {
                        attrs.push(ints("dilations", &p.dilation));
                        self.push("MaxPool", name, input_names, name, attrs);
                    }
                    PoolKind::Avg { count_include_pad } => {
                        attrs.push(int("count_include_pad", i64::from(count_include_pad)));
                        if p.dilation != [1, 1] {
                            self.opset = self.opset.max(19);
                            attrs.push(ints("dilations", &p.dilation));
                        }
                        self.push("AveragePool", name, input_names, name, attrs);
                    }
                    PoolKind::Sum => {
                        // a depthwise convolution with a kernel of ones; padding adds zero,
                        // and the end padding is set so the output has the pool's size
                        // (ceil mode's last window, reaching past the padding, reads zeros)
                        let x = dims(0);
                        let c = x[1];
                        let mut pads = geo.pad;
                        for a in 0..2 {
                            let reach = (geo.output[a] - 1) * geo.stride[a] + geo.extent(a);
                            pads[a + 2] = reach.saturating_sub(x[2 + a] + geo.pad[a]);
                        }
                        let ones = vec![1.0; c * p.kernel[0] * p.kernel[1]];
                        let w =
                            self.const_f32(&format!("{name}.ones"), &[c, 1, p.kernel[0], p.kernel[1]], &ones);
                        self.push(
                            "Conv",
                            name,
                            vec![input_names[0].clone(), w],
                            name,
                            vec![
                                ints("kernel_shape", &p.kernel),
                                ints("strides", &p.stride),
                                ints("dilations", &p.dilation),
                                ints("pads", &pads),
                                int("group", c as i64),
                            ],
                        );
                    }
                }
            }
            Op::GlobalPool(kind) => {
                let op = match kind {
                    ReduceKind::Avg => "GlobalAveragePool",
                    ReduceKind::Max => "GlobalMaxPool",
                };
                self.push(op, name, input_names, name, vec![]);
            }
            Op::AdaptivePool { kind, output } => {
                let x = dims(0);
                let mut kernel = [0; 2];
                let mut stride = [0; 2];
                for a in 0..2 {
                    (kernel[a], stride[a]) = uniform_windows(x[2 + a], output[a]).ok_or_else(|| {
                        format!(
                            "adaptive pooling of {} to {} on spatial axis {a} has windows of different sizes; ONNX pools have one window size",
                            x[2 + a], output[a]
                        )
                    })?;
                }
                let op = match kind {
                    ReduceKind::Avg => "AveragePool",
                    ReduceKind::Max => "MaxPool",
                };
                self.push(
                    op,
                    name,
                    input_names,
                    name,
                    vec![ints("kernel_shape", &kernel), ints("strides", &stride)],
                );
            }
            Op::Activation(a) => self.activation(*a, name, input_names[0].clone())?,
            Op::Softmax { axis } => self.push("Softmax", name, input_names, name, vec![int("axis", *axis)]),
            Op::LogSoftmax { axis } => {
                self.push("LogSoftmax", name, input_names, name, vec![int("axis", *axis)])
            }
            Op::Dense => self.push("Gemm", name, input_names, name, vec![int("transB", 1)]),
            Op::MatMul => self.push("MatMul", name, input_names, name, vec![]),
            Op::Flatten { axis } => self.push("Flatten", name, input_names, name, vec![int("axis", *axis)]),
            Op::Reshape { .. } => {
                // the resolved output shape: no 0 or -1 left for ONNX to interpret
                let shape: Vec<i64> = node.ty.dims().iter().map(|&d| d as i64).collect();
                let s = self.const_i64(&format!("{name}.shape"), &shape);
                self.push("Reshape", name, vec![input_names[0].clone(), s], name, vec![]);
            }
            Op::Transpose { perm } => {
                self.push("Transpose", name, input_names, name, vec![ints("perm", perm)])
            }
            Op::Binary(b) => {
                let op = match b {
                    BinaryOp::Add => "Add",
                    BinaryOp::Sub => "Sub",
                    BinaryOp::Mul => "Mul",
                    BinaryOp::Div => "Div",
                };
                self.push(op, name, input_names, name, vec![]);
            }
            Op::Concat { axis } => self.push("Concat", name, input_names, name, vec![int("axis", *axis)]),
            Op::Dropout { ratio, .. } => {
                // identity at inference; ONNX's ratio must lie in [0, 1)
                if (0.0..1.0).contains(ratio) {
                    let r = self.const_f32(&format!("{name}.ratio"), &[], &[*ratio]);
                    self.push("Dropout", name, vec![input_names[0].clone(), r], name, vec![]);
                } else {
                    self.push("Identity", name, input_names, name, vec![]);
                }
            }
            Op::BatchNorm { epsilon, activation } => {
                let attrs = vec![float("epsilon", *epsilon)];
                match activation {
                    None => self.push("BatchNormalization", name, input_names, name, attrs),
                    Some(a) => {
                        let bn = self.fresh(&format!("{name}.batch_norm"));
                        self.push("BatchNormalization", &bn, input_names, &bn, attrs);
                        self.activation(*a, name, bn)?;
                    }
                }
            }
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            } => self.push(
                "LRN",
                name,
                input_names,
                name,
                vec![
                    int("size", *size as i64),
                    float("alpha", *alpha),
                    float("beta", *beta),
                    float("bias", *bias),
                ],
            ),
            Op::ReduceMean { axes, keepdims } => {
                let axes: Vec<i64> = axes.iter().map(|&a| a as i64).collect();
                let a = self.const_i64(&format!("{name}.axes"), &axes);
                self.push(
                    "ReduceMean",
                    name,
                    vec![input_names[0].clone(), a],
                    name,
                    vec![int("keepdims", i64::from(*keepdims))],
                );
            }
            // forward ops the importer composes (Gemm's alpha and beta, Gelu, LayerNormalization,
            // Split and Gather), also made by autodiff
            Op::Scale { factor } => {
                let f = self.const_f32(&format!("{name}.factor"), &[], &[*factor]);
                self.push("Mul", name, vec![input_names[0].clone(), f], name, vec![]);
            }
            Op::Rsqrt { epsilon } => {
                // 1/√(x + ε)
                let e = self.const_f32(&format!("{name}.epsilon"), &[], &[*epsilon]);
                let shifted = self.fresh(&format!("{name}.shifted"));
                self.push("Add", &shifted, vec![input_names[0].clone(), e], &shifted, vec![]);
                let root = self.fresh(&format!("{name}.sqrt"));
                self.push("Sqrt", &root, vec![shifted], &root, vec![]);
                self.push("Reciprocal", name, vec![root], name, vec![]);
            }
            Op::Slice { axis, start, end } => {
                // a Gather of the indices start..end, which kiln's importer reads back as a slice
                let indices: Vec<i64> = (*start as i64..*end as i64).collect();
                let i = self.const_i64(&format!("{name}.indices"), &indices);
                self.push(
                    "Gather",
                    name,
                    vec![input_names[0].clone(), i],
                    name,
                    vec![int("axis", *axis)],
                );
            }
            Op::Loss(_) => return Err("a loss exists only in training; export the model without it".into()),
            Op::Train(TrainOp::BatchNormTrain { .. }) => {
                return Err(
                    "batch norm in training mode (batch statistics); export the inference graph".into(),
                );
            }
            Op::Im2Col(_) | Op::Gemm(_) => {
                return Err(
                    "made by kiln's optimization passes and not an ONNX operator; export the graph before they run".into(),
                );
            }
            Op::Train(_) => {
                return Err(
                    "a training-only op (backward graph or optimizer); export the inference graph".into(),
                );
            }
        }
        Ok(())
    }

    /// `output = a(input)`.
    fn activation(&mut self, a: Activation, output: &str, input: String) -> R<()> {
        let (op, attrs) = match a {
            Activation::Relu => ("Relu", vec![]),
            Activation::LeakyRelu { alpha } => ("LeakyRelu", vec![float("alpha", alpha)]),
            Activation::Sigmoid => ("Sigmoid", vec![]),
            Activation::Tanh => ("Tanh", vec![]),
            Activation::HardSigmoid { alpha, beta } => {
                ("HardSigmoid", vec![float("alpha", alpha), float("beta", beta)])
            }
            Activation::Erf => ("Erf", vec![]),
            Activation::HardSwish => ("HardSwish", vec![]),
            Activation::Gelu => {
                // `(x + x·Erf(x·c))·0.5` (ONNX's Gelu is opset 20; this file is opset 18)
                let c = self.const_f32(&format!("{output}.c"), &[], &[Activation::GELU_C]);
                let z = self.fresh(&format!("{output}.scaled"));
                self.push("Mul", &z, vec![c, input.clone()], &z, vec![]);
                let er = self.fresh(&format!("{output}.erf"));
                self.push("Erf", &er, vec![z], &er, vec![]);
                let xs = self.fresh(&format!("{output}.xs"));
                self.push("Mul", &xs, vec![input.clone(), er], &xs, vec![]);
                let sum = self.fresh(&format!("{output}.sum"));
                self.push("Add", &sum, vec![input, xs], &sum, vec![]);
                let half = self.const_f32(&format!("{output}.half"), &[], &[0.5]);
                self.push("Mul", output, vec![sum, half], output, vec![]);
                return Ok(());
            }
            Activation::Silu => {
                // `x · Sigmoid(x)`, the form PyTorch exports SiLU in
                let s = self.fresh(&format!("{output}.sigmoid"));
                self.push("Sigmoid", &s, vec![input.clone()], &s, vec![]);
                self.push("Mul", output, vec![input, s], output, vec![]);
                return Ok(());
            }
            Activation::Clip { min, max } => {
                // the bounds as scalar inputs (opset 11 and later); an infinite one as such
                let lo = self.const_f32(&format!("{output}.min"), &[], &[min]);
                let hi = self.const_f32(&format!("{output}.max"), &[], &[max]);
                self.push("Clip", output, vec![input, lo, hi], output, vec![]);
                return Ok(());
            }
        };
        self.push(op, output, vec![input], output, attrs);
        Ok(())
    }
}

/// The `pads` and `ceil_mode` of a pooling of geometry `geo` (`ceil`: kiln's ceil mode) for
/// which ONNX's output size rule gives `geo.output`. kiln's ceil mode drops a last window
/// that would start in the end padding (PyTorch's rule, which ONNX Runtime follows when it
/// runs the model); ONNX's shape inference does not, and would declare one output more. So
/// ceil mode is written only when it adds a window on some axis, and on an axis where it adds
/// none the end padding is cut back to where the last window ends (ceil and floor then agree
/// there). Padding past the last window is never read, so no value changes.
fn pool_pads(geo: &Window2d, ceil: bool) -> ([usize; 4], bool) {
    let floor = |a: usize| (geo.padded(a) - geo.extent(a)) / geo.stride[a] + 1;
    let adds = ceil && (0..2).any(|a| geo.output[a] > floor(a));
    let mut pads = geo.pad;
    if adds {
        for a in 0..2 {
            let reach = (geo.output[a] - 1) * geo.stride[a] + geo.extent(a);
            if geo.output[a] == floor(a)
                && let Some(end) = reach.checked_sub(geo.input[a] + geo.pad[a])
            {
                pads[a + 2] = end;
            }
        }
    }
    (pads, adds)
}

/// `(kernel, stride)` of a pooling without padding whose windows are exactly adaptive
/// pooling's from `n` to `out` (PyTorch's windows `[⌊i·n/out⌋, ⌈(i+1)·n/out⌉)`), if all of
/// them have one size and start a fixed stride apart.
fn uniform_windows(n: usize, out: usize) -> Option<(usize, usize)> {
    let w = |i| kiln_ir::geometry::adaptive_window(i, n, out);
    let (s0, e0) = w(0);
    let kernel = e0 - s0;
    let stride = if out > 1 { w(1).0 - s0 } else { 1 };
    let ok = stride >= 1
        && (0..out).all(|i| {
            let (s, e) = w(i);
            e - s == kernel && s == i * stride
        })
        && (n - kernel) / stride + 1 == out;
    ok.then_some((kernel, stride))
}

fn value_type(ty: &TensorType) -> TypeProto {
    let elem_type = match ty.dtype {
        DType::F32 => dt::FLOAT,
        DType::I32 => dt::INT32,
    };
    TypeProto {
        tensor_type: Some(TypeProtoTensor {
            elem_type,
            shape: Some(TensorShapeProto {
                dim: ty
                    .dims()
                    .iter()
                    .map(|&d| Dimension {
                        value: Some(DimensionValue::DimValue(d as i64)),
                    })
                    .collect(),
            }),
        }),
    }
}

/// A FLOAT tensor with `data` as little-endian `raw_data`.
fn f32_tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt::FLOAT,
        raw_data: le_bytes(data).into_owned(),
        ..TensorProto::default()
    }
}

fn attr(name: &str, r#type: i32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type,
        ..AttributeProto::default()
    }
}

fn int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, at::INT)
    }
}

fn float(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        f: Some(v),
        ..attr(name, at::FLOAT)
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        ints: v.iter().map(|&x| x as i64).collect(),
        ..attr(name, at::INTS)
    }
}
