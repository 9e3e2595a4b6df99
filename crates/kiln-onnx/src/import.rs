//! Mapping an ONNX graph onto kiln's graph IR, node by node in file order.
//!
//! Every ONNX value is a [`Val`]: an IR node, a constant known at import time (initializers,
//! `Constant` outputs; materialized as a `param` the first time an op reads it as a tensor), a
//! zero `Pad` waiting to be folded into the convolution or average pool that reads it, or
//! "poisoned" (the output of a node that could not be imported). A node kiln does not support
//! is recorded and its outputs poisoned, so the import goes on and reports **every**
//! unsupported node at once; nodes that read a poisoned value are skipped without a report of
//! their own (they may well be supported).

use crate::error::{OnnxError, Result, Unsupported};
use crate::proto::{self, AttributeProto, GraphProto, ModelProto, NodeProto, attribute_type as at};
use crate::tensor::{self, Const, ConstData};
use kiln_ir::op::{Activation, BinaryOp, Conv2d, ConvTranspose2d, Padding, Pool2d, PoolKind, ReduceKind};
use kiln_ir::{DType, Graph, NodeId, Op, Tensor, TensorType};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

/// The newest opset of the default domain whose operator definitions kiln's mapping follows
/// (ONNX 1.23). A model importing a newer one is refused node by node.
pub const MAX_OPSET: i64 = 28;

/// An imported model: the graph, its weights (initializers and constants, by IR name) and how
/// the file's input and output names map to the graph's.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub graph: Graph,
    pub weights: HashMap<String, Tensor<f32>>,
    /// The opset of the default domain the model imports.
    pub opset: i64,
    /// `(ONNX name, IR node name)` of each graph input, in the file's order.
    pub inputs: Vec<(String, String)>,
    /// `(ONNX name, IR node name)` of each graph output, in the file's order. Two outputs may
    /// share an IR node (an `Identity` between them).
    pub outputs: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
enum Val {
    Node(NodeId),
    Const(Rc<Const>),
    /// `x` zero-padded by `[top, left, bottom, right]` by the `Pad` node named `pad`.
    Padded {
        x: NodeId,
        pads: [usize; 4],
        pad: String,
    },
    Poisoned,
}

/// Why a node was not imported.
enum Fail {
    Unsupported(String),
    /// An input is poisoned: skip quietly.
    Poisoned,
    Error(OnnxError),
}

impl From<OnnxError> for Fail {
    fn from(e: OnnxError) -> Fail {
        Fail::Error(e)
    }
}

type F<T> = std::result::Result<T, Fail>;

fn unsupported<T>(reason: impl Into<String>) -> F<T> {
    Err(Fail::Unsupported(reason.into()))
}

/// Decodes and imports a model; `base_dir` is where external tensor data lives; graph inputs
/// named in `bound` are constants with those values instead of inputs.
pub fn import(bytes: &[u8], base_dir: Option<&Path>, bound: &HashMap<String, Const>) -> Result<OnnxModel> {
    let model = <ModelProto as prost::Message>::decode(bytes)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Model("the model has no graph".into()))?;
    let mut opset = None;
    for o in model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
    {
        if o.version <= 0 {
            return Err(OnnxError::Model(format!(
                "opset version {} of the default domain; versions start at 1",
                o.version
            )));
        }
        match opset {
            Some(v) if v != o.version => {
                return Err(OnnxError::Model(format!(
                    "the default domain is imported twice, as opsets {v} and {}",
                    o.version
                )));
            }
            _ => opset = Some(o.version),
        }
    }
    // IR version 3 and later must name their opsets; before that the default domain's opset 1
    // was implied.
    let opset = match opset {
        Some(v) => v,
        None if model.ir_version < 3 => 1,
        None => {
            return Err(OnnxError::Model(
                "the model imports no opset of the default ONNX domain".into(),
            ));
        }
    };
    let mut im = Importer {
        graph: Graph::new(),
        weights: HashMap::new(),
        values: HashMap::new(),
        materialized: HashMap::new(),
        opset,
        reader: {
            let mut r = tensor::Reader::new(base_dir);
            r.allow_input(bytes.len());
            r
        },
        unsupported: Vec::new(),
        used_names: HashSet::new(),
        next_suffix: HashMap::new(),
        output_ids: Vec::new(),
        read: graph
            .node
            .iter()
            .flat_map(|n| n.input.iter())
            .chain(graph.output.iter().map(|o| &o.name))
            .filter(|s| !s.is_empty())
            .cloned()
            .collect(),
    };
    im.graph.name = sanitize(if graph.name.is_empty() {
        "main"
    } else {
        &graph.name
    });
    for (name, c) in bound {
        if !graph.input.iter().any(|i| &i.name == name) {
            return Err(OnnxError::Input {
                name: name.clone(),
                reason: "cannot be bound to a constant: the graph has no such input".into(),
            });
        }
        let numel = kiln_ir::limits::check_dims(&c.dims).map_err(|e| OnnxError::Input {
            name: name.clone(),
            reason: format!("bound constant: {e}"),
        })?;
        if numel != c.len() {
            return Err(OnnxError::Input {
                name: name.clone(),
                reason: format!(
                    "bound constant of dims {:?} holds {} elements, not {numel}",
                    c.dims,
                    c.len()
                ),
            });
        }
        im.values.insert(name.clone(), Val::Const(Rc::new(c.clone())));
    }
    im.run(graph)?;
    let Importer {
        graph: g,
        weights,
        unsupported: list,
        output_ids,
        values,
        ..
    } = im;
    if !list.is_empty() {
        return Err(OnnxError::Unsupported(list));
    }
    // the node each input became (not the node its sanitized name finds: `a/b` and `a_b`
    // sanitize alike, and the second is `a_b_2`); an initializer listed among the inputs, or
    // an input bound to a constant, is no input of the graph
    let inputs = graph
        .input
        .iter()
        .filter_map(|i| match values.get(&i.name) {
            Some(&Val::Node(id)) if matches!(g.node(id).op, Op::Input(_)) => {
                Some((i.name.clone(), g.node(id).name.clone()))
            }
            _ => None,
        })
        .collect();
    // one IR node per file output, in the file's order (`g.outputs()` lists a node once even
    // when two file outputs are the same value)
    let outputs = graph
        .output
        .iter()
        .zip(output_ids)
        .map(|(o, id)| (o.name.clone(), g.node(id).name.clone()))
        .collect();
    Ok(OnnxModel {
        graph: g,
        weights,
        opset,
        inputs,
        outputs,
    })
}

/// An ONNX name as a kiln node name: letters, digits, `_` and `.`, not starting with a digit
/// (`/conv1/Conv_output_0` → `_conv1_Conv_output_0`, `0` → `_0`).
pub fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        s.insert(0, '_');
    }
    s
}

struct Importer {
    graph: Graph,
    weights: HashMap<String, Tensor<f32>>,
    values: HashMap<String, Val>,
    /// IR param of each constant already read as a tensor, keyed by the constant's address
    /// (the `Rc` is kept alive here), so that the aliases an Identity or Dropout makes share
    /// one param instead of copying the data once per name.
    materialized: HashMap<*const Const, (Rc<Const>, NodeId)>,
    opset: i64,
    /// Reads tensor data (external files opened once) and counts the bytes of every constant
    /// and weight the import holds.
    reader: tensor::Reader,
    unsupported: Vec<Unsupported>,
    /// Every value some node or the graph's outputs read: an optional output that nobody
    /// reads (Dropout's mask in an old export) does not have to be computed.
    read: HashSet<String>,
    /// Every IR node name handed out by [`Importer::fresh`].
    used_names: HashSet<String>,
    /// The next suffix to try for each sanitized base name, so that `fresh` stays linear
    /// when thousands of names sanitize to the same string.
    next_suffix: HashMap<String, usize>,
    /// The IR node of each graph output, in the file's order.
    output_ids: Vec<NodeId>,
}

/// The most elements of a constant that the import computes rather than reads
/// (ConstantOfShape's fill): 2^24 (64 MiB of f32). A few bytes of file cannot make the
/// importer allocate gigabytes; real networks fill small shapes.
pub const MAX_FOLDED_ELEMENTS: usize = 1 << 24;

impl Importer {
    fn run(&mut self, g: &GraphProto) -> Result<()> {
        // What defines each value, for the error when a second definition comes: values are
        // single-assignment in ONNX, so a second writer is a broken file (kiln would silently
        // read whichever came last).
        let mut defined: HashMap<&str, String> = HashMap::new();
        let mut inputs_seen: HashSet<&str> = HashSet::new();
        for i in &g.input {
            if i.name.is_empty() {
                return Err(OnnxError::Model("a graph input has an empty name".into()));
            }
            if !inputs_seen.insert(&i.name) {
                return Err(OnnxError::Input {
                    name: shown(&i.name),
                    reason: "declared twice among the graph's inputs".into(),
                });
            }
        }
        for t in &g.initializer {
            if t.name.is_empty() {
                return Err(OnnxError::Model("an initializer has an empty name".into()));
            }
            if defined.insert(&t.name, "an initializer".into()).is_some() {
                return Err(OnnxError::Tensor {
                    name: shown(&t.name),
                    reason: "declared twice among the initializers".into(),
                });
            }
            let c = self.reader.read(t)?;
            self.values.insert(t.name.clone(), Val::Const(Rc::new(c)));
        }
        for i in &g.input {
            defined.entry(&i.name).or_insert_with(|| "a graph input".into());
            if self.values.contains_key(&i.name) {
                // an initializer listed among the inputs (IR version < 4), or an input bound
                // to a constant: a constant
                continue;
            }
            let ty = input_type(i)?;
            let name = self.fresh(&i.name);
            let id = self.graph.input(name, ty).map_err(|e| OnnxError::Input {
                name: shown(&i.name),
                reason: e.to_string(),
            })?;
            self.values.insert(i.name.clone(), Val::Node(id));
        }
        for (idx, n) in g.node.iter().enumerate() {
            if n.output.iter().all(String::is_empty) {
                return Err(OnnxError::Invalid {
                    node: node_name(n, idx),
                    op_type: shown(&n.op_type),
                    reason: "the node has no outputs".into(),
                });
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(first) = defined.insert(o, format!("node `{}`", node_name(n, idx))) {
                    return Err(OnnxError::Model(format!(
                        "value `{}` is written twice: by {first} and by node `{}` ({})",
                        shown(o),
                        node_name(n, idx),
                        shown(&n.op_type)
                    )));
                }
            }
            let outputs = match self.node(n, idx) {
                Ok(v) => v,
                Err(Fail::Error(e)) => return Err(e),
                Err(Fail::Poisoned) => vec![Val::Poisoned; n.output.len()],
                Err(Fail::Unsupported(reason)) => {
                    self.unsupported.push(Unsupported {
                        node: node_name(n, idx),
                        op_type: shown(&n.op_type),
                        opset: self.opset,
                        reason,
                    });
                    vec![Val::Poisoned; n.output.len()]
                }
            };
            for (name, v) in n.output.iter().zip(outputs) {
                if !name.is_empty() {
                    self.values.insert(name.clone(), v);
                }
            }
        }
        if g.output.is_empty() {
            return Err(OnnxError::Model("the graph has no outputs".into()));
        }
        for o in &g.output {
            if o.name.is_empty() {
                return Err(OnnxError::Model("a graph output has an empty name".into()));
            }
            let v = self.values.get(&o.name).cloned().ok_or_else(|| {
                OnnxError::Model(format!(
                    "graph output `{}` is not produced by any node, initializer or input",
                    shown(&o.name)
                ))
            })?;
            let id = match v {
                Val::Node(id) => id,
                Val::Poisoned => continue,
                Val::Const(c) => match self.materialize(&o.name, &c, true) {
                    Ok(id) => id,
                    Err(Fail::Error(e)) => return Err(e),
                    Err(_) => {
                        return Err(OnnxError::Model(format!(
                            "graph output `{}` is an integer constant",
                            shown(&o.name)
                        )));
                    }
                },
                Val::Padded { pad, .. } => {
                    self.unsupported.push(Unsupported {
                        node: pad,
                        op_type: "Pad".into(),
                        opset: self.opset,
                        reason: format!(
                            "its output `{}` is a graph output; kiln folds Pad only into a following Conv or AveragePool",
                            o.name
                        ),
                    });
                    continue;
                }
            };
            self.graph
                .mark_output(id)
                .map_err(|e| OnnxError::Model(e.to_string()))?;
            self.output_ids.push(id);
        }
        Ok(())
    }

    /// A node name not used yet, derived from an ONNX name: `base`, else `base_2`, `base_3`, …
    /// Each base remembers the next suffix to try, so n names that sanitize to the same base
    /// take O(n) in all (a suffix is skipped only when that exact name was handed out, which
    /// happens at most once per name).
    fn fresh(&mut self, base: &str) -> String {
        let base = sanitize(base);
        let name = if self.used_names.contains(&base) {
            let next = self.next_suffix.entry(base.clone()).or_insert(2);
            loop {
                let candidate = format!("{base}_{next}");
                *next += 1;
                if !self.used_names.contains(&candidate) {
                    break candidate;
                }
            }
        } else {
            base
        };
        self.used_names.insert(name.clone());
        name
    }

    fn add(&mut self, n: &NodeProto, name: &str, op: Op, inputs: &[NodeId]) -> F<NodeId> {
        let name = self.fresh(name);
        self.graph.add(name, op, inputs).map_err(|e| {
            Fail::Error(OnnxError::Invalid {
                node: node_name(n, usize::MAX),
                op_type: shown(&n.op_type),
                reason: e.to_string(),
            })
        })
    }

    /// A param (or buffer) holding `c`, created once per ONNX value.
    fn materialize(&mut self, value: &str, c: &Rc<Const>, trainable: bool) -> F<NodeId> {
        if let Some(&(_, id)) = self.materialized.get(&Rc::as_ptr(c)) {
            return Ok(id);
        }
        let data = match &c.data {
            ConstData::F32(v) => {
                self.charge(value, v.len())?;
                v.clone()
            }
            ConstData::I64(_) => {
                return unsupported(format!(
                    "`{value}` is an integer tensor; kiln computes in f32 and reads integer tensors only as shapes, pads or axes"
                ));
            }
        };
        let id = self.param(value, c.dims.clone(), data, trainable)?;
        self.materialized.insert(Rc::as_ptr(c), (Rc::clone(c), id));
        Ok(id)
    }

    /// Counts `elements` more f32 values held by the import (before allocating them).
    fn charge(&mut self, value: &str, elements: usize) -> F<()> {
        kiln_ir::limits::check_bytes(elements, 4, "its data")
            .and_then(|b| self.reader.charge(b, "its data"))
            .map_err(|reason| OnnxError::Tensor {
                name: shown(value),
                reason,
            })?;
        Ok(())
    }

    /// A new param named after `base` holding `data` (already charged for).
    fn param(&mut self, base: &str, dims: Vec<usize>, data: Vec<f32>, trainable: bool) -> F<NodeId> {
        let name = self.fresh(base);
        let ty = TensorType::f32(dims.clone());
        let id = if trainable {
            self.graph.param(name.clone(), ty)
        } else {
            self.graph.buffer(name.clone(), ty)
        }
        .map_err(|e| {
            Fail::Error(OnnxError::Tensor {
                name: shown(base),
                reason: e.to_string(),
            })
        })?;
        let t = Tensor::new(dims, data).ok_or_else(|| {
            Fail::Error(OnnxError::Tensor {
                name: shown(base),
                reason: "data length does not match its dims".into(),
            })
        })?;
        self.weights.insert(name, t);
        Ok(id)
    }

    /// Input `i` of `n`, `None` when absent (past the end or the empty name).
    fn val(&self, n: &NodeProto, i: usize) -> F<Option<Val>> {
        let Some(name) = n.input.get(i).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        match self.values.get(name) {
            Some(Val::Poisoned) => Err(Fail::Poisoned),
            Some(v) => Ok(Some(v.clone())),
            None => Err(Fail::Error(OnnxError::MissingValue {
                node: node_name(n, usize::MAX),
                op_type: shown(&n.op_type),
                value: shown(name),
            })),
        }
    }

    /// Input `i` as an IR node (constants become params).
    fn tensor_opt(&mut self, n: &NodeProto, i: usize, trainable: bool) -> F<Option<NodeId>> {
        match self.val(n, i)? {
            None => Ok(None),
            Some(Val::Node(id)) => Ok(Some(id)),
            Some(Val::Const(c)) => self.materialize(&n.input[i], &c, trainable).map(Some),
            Some(Val::Padded { pad, .. }) => unsupported(format!(
                "it reads the output of Pad `{pad}`; kiln folds Pad only into a following Conv or AveragePool"
            )),
            Some(Val::Poisoned) => Err(Fail::Poisoned),
        }
    }

    fn tensor(&mut self, n: &NodeProto, i: usize) -> F<NodeId> {
        self.tensor_opt(n, i, true)?
            .ok_or_else(|| invalid(n, format!("input {i} is required")))
    }

    /// Input `i` as a constant, `None` when absent; a computed value is unsupported.
    fn constant(&self, n: &NodeProto, i: usize, what: &str) -> F<Option<Rc<Const>>> {
        match self.val(n, i)? {
            None => Ok(None),
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(_) => unsupported(format!(
                "its {what} (input {i}) is computed at run time; kiln needs it as a constant"
            )),
        }
    }

    fn ty(&self, id: NodeId) -> &TensorType {
        &self.graph.node(id).ty
    }

    fn out_name<'n>(&self, n: &'n NodeProto) -> &'n str {
        n.output
            .first()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(if n.name.is_empty() {
                n.op_type.as_str()
            } else {
                n.name.as_str()
            })
    }

    fn node(&mut self, n: &NodeProto, idx: usize) -> F<Vec<Val>> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return unsupported(format!(
                "domain `{}` is not supported (only the default ONNX domain)",
                n.domain
            ));
        }
        if self.opset > MAX_OPSET {
            return unsupported(format!(
                "the model imports opset {}, newer than the newest kiln knows ({MAX_OPSET})",
                self.opset
            ));
        }
        let a = Attrs { n, idx };
        let out = self.out_name(n).to_string();
        let one = |id: NodeId| Ok(vec![Val::Node(id)]);
        match n.op_type.as_str() {
            "Conv" => {
                a.known(&[
                    "auto_pad",
                    "dilations",
                    "group",
                    "kernel_shape",
                    "pads",
                    "strides",
                ])?;
                let (x, extra) = self.spatial_input(n, "Conv")?;
                let w = self.tensor(n, 1)?;
                let b = self.tensor_opt(n, 2, true)?;
                self.need_rank(w, 4, "weight")?;
                kernel_matches(&a, &self.ty(w).dims()[2..])?;
                let padding = a.padding(extra)?;
                let conv = Conv2d {
                    stride: a.pair("strides", 1)?,
                    dilation: a.pair("dilations", 1)?,
                    padding,
                    groups: a.positive("group", 1)?,
                    activation: None,
                };
                let mut ins = vec![x, w];
                ins.extend(b);
                one(self.add(n, &out, Op::Conv2d(conv), &ins)?)
            }
            "ConvTranspose" => {
                a.known(&[
                    "auto_pad",
                    "dilations",
                    "group",
                    "kernel_shape",
                    "output_padding",
                    "output_shape",
                    "pads",
                    "strides",
                ])?;
                let x = self.tensor(n, 0)?;
                self.need_rank(x, 4, "input")?;
                let w = self.tensor(n, 1)?;
                let b = self.tensor_opt(n, 2, true)?;
                self.need_rank(w, 4, "weight")?;
                let k = [self.ty(w).dims()[2], self.ty(w).dims()[3]];
                kernel_matches(&a, &k)?;
                let stride = a.pair("strides", 1)?;
                let dilation = a.pair("dilations", 1)?;
                let output_padding = a.pair("output_padding", 0)?;
                let auto = a.string("auto_pad", "NOTSET")?;
                let input = [self.ty(x).dims()[2], self.ty(x).dims()[3]];
                if input.contains(&0) || k.contains(&0) {
                    return Err(invalid(
                        n,
                        format!("an empty spatial axis (input {input:?}, kernel {k:?})"),
                    ));
                }
                // the output size before padding, in i128: every factor is below 2^64, so
                // nothing here overflows, however large the attributes
                let full = |ax: usize| -> i128 {
                    stride[ax] as i128 * (input[ax] as i128 - 1)
                        + output_padding[ax] as i128
                        + (k[ax] as i128 - 1) * dilation[ax] as i128
                        + 1
                };
                let target: Option<[usize; 2]> = match a.ints("output_shape")? {
                    Some(s) if s.len() >= 2 => {
                        let s = &s[s.len() - 2..];
                        Some([
                            to_usize(n, s[0], "output_shape")?,
                            to_usize(n, s[1], "output_shape")?,
                        ])
                    }
                    Some(s) => return Err(invalid(n, format!("output_shape {s:?} must have 2 entries"))),
                    None if auto == "SAME_UPPER" || auto == "SAME_LOWER" => {
                        let out = |ax: usize| {
                            input[ax].checked_mul(stride[ax]).ok_or_else(|| {
                                invalid(n, format!("input {input:?} times strides {stride:?} overflows"))
                            })
                        };
                        Some([out(0)?, out(1)?])
                    }
                    None => None,
                };
                let mut output_padding = output_padding;
                let padding = match target {
                    Some(t) => {
                        let mut p = [0usize; 4];
                        for ax in 0..2 {
                            let total = full(ax) - t[ax] as i128;
                            if total < 0 {
                                // a larger output than the full one: the extra rows and
                                // columns are output padding (bias only), as ONNX Runtime does
                                let extra = output_padding[ax] as i128 + (-total);
                                if extra >= stride[ax].max(dilation[ax]) as i128 {
                                    return unsupported(format!(
                                        "output_shape {t:?} exceeds the full output by more than the stride allows"
                                    ));
                                }
                                // below a usize stride, so it fits
                                output_padding[ax] = extra as usize;
                                continue;
                            }
                            let total = usize::try_from(total).map_err(|_| {
                                invalid(
                                    n,
                                    format!(
                                        "the full output ({} along spatial axis {ax}) is too large",
                                        full(ax)
                                    ),
                                )
                            })?;
                            let (begin, end) = if auto == "SAME_UPPER" {
                                (total / 2, total - total / 2)
                            } else {
                                (total - total / 2, total / 2)
                            };
                            p[ax] = begin;
                            p[ax + 2] = end;
                        }
                        p
                    }
                    None if auto == "VALID" => [0; 4],
                    None => a.pads()?,
                };
                let op = ConvTranspose2d {
                    stride,
                    dilation,
                    padding,
                    output_padding,
                    groups: a.positive("group", 1)?,
                };
                let mut ins = vec![x, w];
                ins.extend(b);
                one(self.add(n, &out, Op::ConvTranspose2d(op), &ins)?)
            }
            "MaxPool" | "AveragePool" => {
                let max = n.op_type == "MaxPool";
                if max {
                    a.known(&[
                        "auto_pad",
                        "ceil_mode",
                        "dilations",
                        "kernel_shape",
                        "pads",
                        "storage_order",
                        "strides",
                    ])?;
                    if self.reads_output(n, 1) {
                        return unsupported("the Indices output (second output) is not supported");
                    }
                } else {
                    a.known(&[
                        "auto_pad",
                        "ceil_mode",
                        "count_include_pad",
                        "dilations",
                        "kernel_shape",
                        "pads",
                        "strides",
                    ])?;
                }
                let (x, extra) = self.spatial_input(n, &n.op_type)?;
                let kernel = a.required_pair("kernel_shape")?;
                let ceil_mode = a.int("ceil_mode", 0)? != 0;
                let mut count_include_pad = a.int("count_include_pad", 0)? != 0;
                let mut padding = a.padding([0; 4])?;
                if extra != [0; 4] {
                    if max {
                        return unsupported(
                            "it reads a zero Pad: padded zeros can win a max, unlike max-pool padding, so kiln does not fold it",
                        );
                    }
                    if ceil_mode {
                        return unsupported("a zero Pad before an AveragePool with ceil_mode is not folded");
                    }
                    match padding {
                        Padding::Explicit(p) if p == [0; 4] || count_include_pad => {
                            padding = Padding::Explicit(add_pads(n, p, extra)?);
                            count_include_pad = true;
                        }
                        _ => {
                            return unsupported(
                                "a zero Pad before an AveragePool that pads without counting the padding is not folded",
                            );
                        }
                    }
                }
                let kind = if max {
                    PoolKind::Max
                } else {
                    PoolKind::Avg { count_include_pad }
                };
                let pool = Pool2d {
                    kind,
                    kernel,
                    stride: a.pair("strides", 1)?,
                    dilation: a.pair("dilations", 1)?,
                    padding,
                    ceil_mode,
                };
                one(self.add(n, &out, Op::Pool2d(pool), &[x])?)
            }
            "GlobalAveragePool" | "GlobalMaxPool" => {
                a.known(&[])?;
                let x = self.tensor(n, 0)?;
                self.need_rank(x, 4, "input")?;
                let k = if n.op_type == "GlobalMaxPool" {
                    ReduceKind::Max
                } else {
                    ReduceKind::Avg
                };
                one(self.add(n, &out, Op::GlobalPool(k), &[x])?)
            }
            "Relu" | "Sigmoid" | "Tanh" | "LeakyRelu" => {
                a.known(&["alpha", "consumed_inputs"])?;
                let act = match n.op_type.as_str() {
                    "Relu" => Activation::Relu,
                    "Sigmoid" => Activation::Sigmoid,
                    "Tanh" => Activation::Tanh,
                    _ => Activation::LeakyRelu {
                        alpha: a.float("alpha", 0.01)?,
                    },
                };
                let x = self.tensor(n, 0)?;
                one(self.add(n, &out, Op::Activation(act), &[x])?)
            }
            "Softmax" | "LogSoftmax" => {
                a.known(&["axis"])?;
                let x = self.tensor(n, 0)?;
                let log = n.op_type == "LogSoftmax";
                let make = |axis| {
                    if log {
                        Op::LogSoftmax { axis }
                    } else {
                        Op::Softmax { axis }
                    }
                };
                if self.opset >= 13 {
                    let axis = a.int("axis", -1)?;
                    return one(self.add(n, &out, make(axis), &[x])?);
                }
                // Before opset 13: the input is coerced to 2-D at `axis` and normalized over
                // the second of those two dims, i.e. over all axes from `axis` on.
                let dims = self.ty(x).dims().to_vec();
                let r = dims.len() as i64;
                let axis = a.int("axis", 1)?;
                let ax = if axis < 0 { axis + r } else { axis };
                if !(0..r.max(1)).contains(&ax) {
                    return Err(invalid(n, format!("axis {axis} is out of range for rank {r}")));
                }
                if ax == r - 1 {
                    return one(self.add(n, &out, make(-1), &[x])?);
                }
                let flat = self.add(n, &format!("{out}.flat"), Op::Flatten { axis: ax }, &[x])?;
                let s = self.add(n, &format!("{out}.2d"), make(1), &[flat])?;
                let mut shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                if ax == 1 {
                    shape[0] = 0; // keep the batch dim symbolic for `Graph::with_batch`
                }
                one(self.add(n, &out, Op::Reshape { shape }, &[s])?)
            }
            "Gemm" => self.gemm(n, &a, &out),
            "MatMul" => {
                a.known(&[])?;
                let x = self.tensor(n, 0)?;
                let y = self.tensor(n, 1)?;
                one(self.add(n, &out, Op::MatMul, &[x, y])?)
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                a.known(&["broadcast", "axis", "consumed_inputs"])?;
                let op = match n.op_type.as_str() {
                    "Add" => BinaryOp::Add,
                    "Sub" => BinaryOp::Sub,
                    "Mul" => BinaryOp::Mul,
                    _ => BinaryOp::Div,
                };
                let x = self.tensor(n, 0)?;
                let mut y = self.tensor(n, 1)?;
                if self.opset < 7 {
                    // legacy broadcasting: without `broadcast = 1` the shapes must be equal;
                    // with it, B's dims line up with A's from `axis` (default: at the end)
                    let (ad, bd) = (self.ty(x).dims().to_vec(), self.ty(y).dims().to_vec());
                    if a.int("broadcast", 0)? == 0 {
                        if ad != bd {
                            return Err(invalid(
                                n,
                                format!("shapes {ad:?} and {bd:?} differ and `broadcast` is 0"),
                            ));
                        }
                    } else if let Some(axis) = a.opt_int("axis")? {
                        let r = ad.len() as i64;
                        let ax = if axis < 0 { axis + r } else { axis };
                        if ax < 0 || ax as usize + bd.len() > ad.len() {
                            return Err(invalid(
                                n,
                                format!("axis {axis} does not fit B {bd:?} into A {ad:?}"),
                            ));
                        }
                        let mut shape = vec![1i64; ad.len()];
                        for (i, &d) in bd.iter().enumerate() {
                            shape[ax as usize + i] = d as i64;
                        }
                        if shape.len() != bd.len() {
                            y = self.add(n, &format!("{out}.broadcast"), Op::Reshape { shape }, &[y])?;
                        }
                    }
                }
                one(self.add(n, &out, Op::Binary(op), &[x, y])?)
            }
            "Concat" => {
                a.known(&["axis"])?;
                let axis = if self.opset < 4 {
                    a.int("axis", 1)?
                } else {
                    a.opt_int("axis")?
                        .ok_or_else(|| invalid(n, "attribute `axis` is required"))?
                };
                let mut ins = Vec::with_capacity(n.input.len());
                for i in 0..n.input.len() {
                    ins.push(self.tensor(n, i)?);
                }
                one(self.add(n, &out, Op::Concat { axis }, &ins)?)
            }
            "Flatten" => {
                a.known(&["axis"])?;
                let x = self.tensor(n, 0)?;
                let axis = a.int("axis", 1)?;
                one(self.add(n, &out, Op::Flatten { axis }, &[x])?)
            }
            "Reshape" => {
                a.known(&["shape", "allowzero", "consumed_inputs"])?;
                let shape = if self.opset < 5 {
                    a.ints("shape")?
                        .ok_or_else(|| invalid(n, "attribute `shape` is required"))?
                } else {
                    let c = self
                        .constant(n, 1, "shape")?
                        .ok_or_else(|| invalid(n, "input 1 (shape) is required"))?;
                    c.as_i64()
                        .ok_or_else(|| invalid(n, "the shape must be an int64 tensor"))?
                        .to_vec()
                };
                if a.int("allowzero", 0)? != 0 && shape.contains(&0) {
                    return unsupported("allowzero = 1 with a 0 in the shape (an empty dim)");
                }
                let x = self.tensor(n, 0)?;
                one(self.add(n, &out, Op::Reshape { shape }, &[x])?)
            }
            "Transpose" => {
                a.known(&["perm"])?;
                let x = self.tensor(n, 0)?;
                let r = self.ty(x).rank();
                let perm = match a.ints("perm")? {
                    Some(p) => p
                        .iter()
                        .map(|&v| {
                            usize::try_from(v)
                                .map_err(|_| invalid(n, format!("perm {p:?} has a negative entry")))
                        })
                        .collect::<F<Vec<usize>>>()?,
                    None => (0..r).rev().collect(),
                };
                one(self.add(n, &out, Op::Transpose { perm }, &[x])?)
            }
            "Dropout" => {
                a.known(&["ratio", "is_test", "seed", "consumed_inputs"])?;
                if self.reads_output(n, 1) {
                    return unsupported("the mask output (second output) is not supported");
                }
                if self.opset < 7 && a.int("is_test", 0)? == 0 {
                    return unsupported("training mode (is_test = 0)");
                }
                if let Some(t) = self.constant(n, 2, "training_mode")?
                    && t.as_i64().is_some_and(|v| v.iter().any(|&b| b != 0))
                {
                    return unsupported("training_mode = true");
                }
                let x = self.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
                Ok(vec![x])
            }
            "Identity" => {
                a.known(&[])?;
                let x = self.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
                Ok(vec![x])
            }
            "BatchNormalization" => {
                a.known(&[
                    "epsilon",
                    "momentum",
                    "spatial",
                    "is_test",
                    "consumed_inputs",
                    "training_mode",
                ])?;
                if (1..n.output.len()).any(|i| self.reads_output(n, i)) {
                    return unsupported("the running-statistics outputs exist only in training");
                }
                if a.int("training_mode", 0)? != 0 {
                    return unsupported("training_mode = 1");
                }
                if self.opset < 7 && a.int("is_test", 0)? == 0 {
                    return unsupported("training mode (is_test = 0)");
                }
                if self.opset < 9 && a.int("spatial", 1)? == 0 {
                    return unsupported("spatial = 0 (statistics per element instead of per channel)");
                }
                let x = self.tensor(n, 0)?;
                let mut ins = vec![x];
                for (i, trainable) in [(1, true), (2, true), (3, false), (4, false)] {
                    let id = self
                        .tensor_opt(n, i, trainable)?
                        .ok_or_else(|| invalid(n, format!("input {i} is required")))?;
                    ins.push(id);
                }
                let epsilon = a.float("epsilon", 1e-5)?;
                one(self.add(n, &out, Op::BatchNorm { epsilon }, &ins)?)
            }
            "Constant" => {
                a.known(&["value", "value_float", "value_floats", "value_int", "value_ints"])?;
                let c = if let Some(t) = a.get("value") {
                    let t =
                        t.t.as_ref()
                            .ok_or_else(|| invalid(n, "attribute `value` is not a tensor"))?;
                    self.reader.read(t)?
                } else if let Some(f) = a.opt_float("value_float")? {
                    Const::f32(vec![], vec![f])
                } else if let Some(v) = a.get("value_floats") {
                    self.charge(&out, v.floats.len())?;
                    Const::f32(vec![v.floats.len()], v.floats.clone())
                } else if let Some(i) = a.opt_int("value_int")? {
                    Const::i64(vec![], vec![i])
                } else if let Some(v) = a.ints("value_ints")? {
                    self.charge(&out, 2 * v.len())?;
                    Const::i64(vec![v.len()], v)
                } else {
                    return Err(invalid(n, "no value attribute"));
                };
                Ok(vec![Val::Const(Rc::new(c))])
            }
            "Pad" => self.pad(n, &a),
            "Sum" => {
                // n-ary broadcasting add, as a chain of adds
                a.known(&["consumed_inputs"])?;
                if n.input.is_empty() {
                    return Err(invalid(n, "Sum needs at least one input"));
                }
                if n.input.len() == 1 {
                    return Ok(vec![
                        self.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?,
                    ]);
                }
                let mut acc = self.tensor(n, 0)?;
                for i in 1..n.input.len() {
                    let y = self.tensor(n, i)?;
                    let name = if i + 1 == n.input.len() {
                        out.clone()
                    } else {
                        format!("{out}.sum{i}")
                    };
                    acc = self.add(n, &name, Op::Binary(BinaryOp::Add), &[acc, y])?;
                }
                one(acc)
            }
            "Unsqueeze" => {
                a.known(&["axes"])?;
                let axes = if self.opset < 13 {
                    a.ints("axes")?
                        .ok_or_else(|| invalid(n, "attribute `axes` is required"))?
                } else {
                    let c = self
                        .constant(n, 1, "axes")?
                        .ok_or_else(|| invalid(n, "input 1 (axes) is required"))?;
                    c.as_i64()
                        .ok_or_else(|| invalid(n, "axes must be int64"))?
                        .to_vec()
                };
                let x = self.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
                let in_dims = match &x {
                    Val::Const(c) => c.dims.clone(),
                    _ => {
                        let id = self.tensor(n, 0)?;
                        self.ty(id).dims().to_vec()
                    }
                };
                let rank = in_dims.len().saturating_add(axes.len());
                if rank > kiln_ir::limits::MAX_RANK {
                    return Err(invalid(
                        n,
                        format!(
                            "{} axes on a rank-{} input: rank {rank} is above the limit of {} dims",
                            axes.len(),
                            in_dims.len(),
                            kiln_ir::limits::MAX_RANK
                        ),
                    ));
                }
                let r = rank as i64;
                let mut ones = vec![false; rank];
                for &ax in &axes {
                    let a2 = if ax < 0 { ax + r } else { ax };
                    if !(0..r).contains(&a2) || ones[a2 as usize] {
                        return Err(invalid(
                            n,
                            format!("axes {axes:?} are out of range or repeated for output rank {r}"),
                        ));
                    }
                    ones[a2 as usize] = true;
                }
                let mut rest = in_dims.iter();
                let dims: Vec<usize> = ones
                    .iter()
                    .map(|&o| if o { 1 } else { *rest.next().unwrap_or(&1) })
                    .collect();
                match x {
                    // a constant is folded: the same data under the new dims
                    Val::Const(c) => {
                        let held = match &c.data {
                            ConstData::F32(v) => v.len(),
                            ConstData::I64(v) => v.len().saturating_mul(2),
                        };
                        self.charge(&out, held)?;
                        Ok(vec![Val::Const(Rc::new(Const {
                            dims,
                            data: c.data.clone(),
                        }))])
                    }
                    _ => {
                        let id = self.tensor(n, 0)?;
                        let shape = dims.iter().map(|&d| d as i64).collect();
                        one(self.add(n, &out, Op::Reshape { shape }, &[id])?)
                    }
                }
            }
            "ConstantOfShape" => {
                // a constant filled with one value: folded at import (the shape must be known)
                a.known(&["value"])?;
                let shape = self
                    .constant(n, 0, "shape")?
                    .ok_or_else(|| invalid(n, "input 0 (shape) is required"))?;
                let shape = shape
                    .as_i64()
                    .ok_or_else(|| invalid(n, "the shape must be int64"))?;
                let dims = shape
                    .iter()
                    .map(|&d| to_usize(n, d, "shape"))
                    .collect::<F<Vec<usize>>>()?;
                let numel = kiln_ir::limits::check_dims(&dims)
                    .map_err(|e| invalid(n, format!("shape {shape:?}: {e}")))?;
                if numel > MAX_FOLDED_ELEMENTS {
                    return unsupported(format!(
                        "shape {shape:?} has {numel} elements; kiln folds ConstantOfShape into a constant of at most {MAX_FOLDED_ELEMENTS}"
                    ));
                }
                let value = match a.get("value").and_then(|v| v.t.as_ref()) {
                    None => Const::f32(vec![], vec![0.0]),
                    Some(t) => self.reader.read(t)?,
                };
                let c = match value.data {
                    ConstData::F32(v) if v.len() == 1 => {
                        self.charge(&out, numel)?;
                        Const::f32(dims, vec![v[0]; numel])
                    }
                    ConstData::I64(v) if v.len() == 1 => {
                        self.charge(&out, numel.saturating_mul(2))?;
                        Const::i64(dims, vec![v[0]; numel])
                    }
                    _ => return Err(invalid(n, "`value` must hold one element")),
                };
                Ok(vec![Val::Const(Rc::new(c))])
            }
            other => unsupported(format!("operator `{}` is not supported", shown(other))),
        }
    }

    /// The data input of a Conv or pool, with the padding of a zero `Pad` that feeds it.
    fn spatial_input(&mut self, n: &NodeProto, what: &str) -> F<(NodeId, [usize; 4])> {
        let (x, extra) = match self.val(n, 0)? {
            Some(Val::Padded { x, pads, .. }) => (x, pads),
            Some(_) => (self.tensor(n, 0)?, [0; 4]),
            None => return Err(invalid(n, "input 0 is required")),
        };
        let r = self.ty(x).rank();
        if r != 4 {
            return unsupported(format!(
                "kiln supports 2-D {what} only (input of rank 4, NCHW); this input has rank {r}"
            ));
        }
        Ok((x, extra))
    }

    /// Whether output `i` of `n` exists and something reads it.
    fn reads_output(&self, n: &NodeProto, i: usize) -> bool {
        n.output
            .get(i)
            .is_some_and(|s| !s.is_empty() && self.read.contains(s))
    }

    fn need_rank(&self, id: NodeId, r: usize, what: &str) -> F<()> {
        let t = self.ty(id);
        if t.rank() != r {
            return unsupported(format!(
                "kiln supports 2-D (NCHW) layers only: the {what} must have rank {r}, it is {}",
                t.shape
            ));
        }
        Ok(())
    }

    fn gemm(&mut self, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
        a.known(&["alpha", "beta", "transA", "transB", "broadcast"])?;
        let alpha = a.float("alpha", 1.0)?;
        let beta = a.float("beta", 1.0)?;
        let trans_b = a.int("transB", 0)? != 0;
        let mut x = self.tensor(n, 0)?;
        if self.ty(x).rank() != 2 {
            return Err(invalid(n, format!("A must be 2-D, it is {}", self.ty(x).shape)));
        }
        if a.int("transA", 0)? != 0 {
            x = self.add(n, &format!("{out}.a_t"), Op::Transpose { perm: vec![1, 0] }, &[x])?;
        }
        let b_const = self.constant(n, 1, "B").ok().flatten();
        let b_name = n.input.get(1).cloned().unwrap_or_default();
        // y = alpha·A·B, as a Dense layer over a constant B ([N, K] after transposing) or a MatMul
        let (y, n_out) = match &b_const {
            Some(c) if c.as_f32().is_some() && c.dims.len() == 2 => {
                let data = c.as_f32().unwrap_or_default();
                let [r, s] = [c.dims[0], c.dims[1]];
                let (rows, cols) = if trans_b { (r, s) } else { (s, r) };
                let w = if trans_b && alpha == 1.0 {
                    self.materialize(&b_name, c, true)?
                } else {
                    self.charge(&b_name, data.len())?;
                    let w: Vec<f32> = if trans_b {
                        data.iter().map(|v| v * alpha).collect()
                    } else {
                        let mut t = vec![0.0; data.len()];
                        for (i, row) in data.chunks_exact(s.max(1)).enumerate().take(r) {
                            for (j, &v) in row.iter().enumerate() {
                                t[j * r + i] = v * alpha;
                            }
                        }
                        t
                    };
                    self.param(&format!("{b_name}.gemm"), vec![rows, cols], w, true)?
                };
                // a bias of N values along the rows becomes the Dense bias
                let bias = match self.constant(n, 2, "C").ok().flatten() {
                    Some(cc)
                        if cc.as_f32().is_some()
                            && cc.len() == rows
                            && cc.dims.iter().rev().skip(1).all(|&d| d == 1) =>
                    {
                        let c_name = n.input[2].clone();
                        Some(if beta == 1.0 && cc.dims.len() == 1 {
                            self.materialize(&c_name, &cc, true)?
                        } else {
                            self.charge(&c_name, rows)?;
                            let data: Vec<f32> =
                                cc.as_f32().unwrap_or_default().iter().map(|v| v * beta).collect();
                            self.param(&format!("{c_name}.gemm"), vec![rows], data, true)?
                        })
                    }
                    _ => None,
                };
                let mut ins = vec![x, w];
                ins.extend(bias);
                let name = if bias.is_some() || self.val(n, 2)?.is_none() {
                    out.to_string()
                } else {
                    format!("{out}.ab")
                };
                let y = self.add(n, &name, Op::Dense, &ins)?;
                if bias.is_some() {
                    return Ok(vec![Val::Node(y)]);
                }
                (y, rows)
            }
            _ => {
                let mut b = self.tensor(n, 1)?;
                if trans_b {
                    b = self.add(n, &format!("{out}.b_t"), Op::Transpose { perm: vec![1, 0] }, &[b])?;
                }
                let last = self.val(n, 2)?.is_none() && alpha == 1.0;
                let name = if last {
                    out.to_string()
                } else {
                    format!("{out}.ab")
                };
                let mut y = self.add(n, &name, Op::MatMul, &[x, b])?;
                if alpha != 1.0 {
                    let s = self.param(&format!("{out}.alpha"), vec![1], vec![alpha], false)?;
                    let name = if self.val(n, 2)?.is_none() {
                        out.to_string()
                    } else {
                        format!("{out}.alpha_ab")
                    };
                    y = self.add(n, &name, Op::Binary(BinaryOp::Mul), &[y, s])?;
                }
                let cols = self.ty(y).dims().get(1).copied().unwrap_or(0);
                (y, cols)
            }
        };
        let _ = n_out;
        let Some(cv) = self.val(n, 2)? else {
            return Ok(vec![Val::Node(y)]);
        };
        // C of another shape: y + beta·C with broadcasting
        let c = match cv {
            Val::Const(cc) if beta != 1.0 => {
                self.charge(&n.input[2], cc.len())?;
                let data: Vec<f32> = cc
                    .as_f32()
                    .ok_or_else(|| Fail::Unsupported("C is an integer tensor".into()))?
                    .iter()
                    .map(|v| v * beta)
                    .collect();
                self.param(&format!("{}.gemm", n.input[2]), cc.dims.clone(), data, true)?
            }
            _ => {
                let c = self.tensor(n, 2)?;
                if beta != 1.0 {
                    let s = self.param(&format!("{out}.beta"), vec![1], vec![beta], false)?;
                    self.add(n, &format!("{out}.beta_c"), Op::Binary(BinaryOp::Mul), &[c, s])?
                } else {
                    c
                }
            }
        };
        Ok(vec![Val::Node(self.add(
            n,
            out,
            Op::Binary(BinaryOp::Add),
            &[y, c],
        )?)])
    }

    fn pad(&mut self, n: &NodeProto, a: &Attrs) -> F<Vec<Val>> {
        a.known(&["mode", "pads", "paddings", "value"])?;
        let mode = a.string("mode", "constant")?;
        if mode != "constant" {
            return unsupported(format!(
                "mode `{mode}`; kiln supports constant (zero) padding only"
            ));
        }
        let x = match self.val(n, 0)? {
            Some(Val::Node(x)) => x,
            Some(_) => return unsupported("padding a constant or an already padded value"),
            None => return Err(invalid(n, "input 0 is required")),
        };
        let rank = self.ty(x).rank();
        let (pads, value, axes): (Vec<i64>, f32, Option<Vec<i64>>) = if self.opset < 11 {
            let key = if self.opset < 2 { "paddings" } else { "pads" };
            let pads = a
                .ints(key)?
                .ok_or_else(|| invalid(n, format!("attribute `{key}` is required")))?;
            (pads, a.float("value", 0.0)?, None)
        } else {
            let pads = self
                .constant(n, 1, "pads")?
                .ok_or_else(|| invalid(n, "input 1 (pads) is required"))?;
            let pads = pads
                .as_i64()
                .ok_or_else(|| invalid(n, "pads must be int64"))?
                .to_vec();
            let value = match self.constant(n, 2, "constant_value")? {
                None => 0.0,
                Some(c) => match &c.data {
                    ConstData::F32(v) => v.first().copied().unwrap_or(0.0),
                    ConstData::I64(v) => v.first().copied().unwrap_or(0) as f32,
                },
            };
            let axes = self
                .constant(n, 3, "axes")?
                .map(|c| c.as_i64().unwrap_or_default().to_vec());
            (pads, value, axes)
        };
        if value != 0.0 {
            return unsupported(format!(
                "constant value {value}; kiln folds only zero padding into a convolution or pool"
            ));
        }
        let axes: Vec<usize> = match axes {
            None => (0..rank).collect(),
            Some(ax) => ax
                .iter()
                .map(|&v| {
                    let v = if v < 0 { v + rank as i64 } else { v };
                    usize::try_from(v).ok().filter(|&v| v < rank)
                })
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| invalid(n, format!("axes {ax:?} are out of range for rank {rank}")))?,
        };
        if pads.len() != 2 * axes.len() {
            return Err(invalid(n, format!("{} pads for {} axes", pads.len(), axes.len())));
        }
        if rank != 4 {
            return unsupported(format!(
                "kiln folds Pad into 2-D layers only; the input has rank {rank}"
            ));
        }
        let mut per_axis = [[0i64; 2]; 4];
        for (i, &ax) in axes.iter().enumerate() {
            per_axis[ax] = [pads[i], pads[i + axes.len()]];
        }
        if per_axis.iter().flatten().any(|&p| p < 0) {
            return unsupported(format!("negative pads {pads:?} (cropping)"));
        }
        if per_axis[0] != [0, 0] || per_axis[1] != [0, 0] {
            return unsupported(format!("pads {pads:?} pad the batch or channel axis"));
        }
        let p = |v: i64| v as usize;
        let pads = [
            p(per_axis[2][0]),
            p(per_axis[3][0]),
            p(per_axis[2][1]),
            p(per_axis[3][1]),
        ];
        let name = n.output.first().cloned().unwrap_or_default();
        if pads == [0; 4] {
            return Ok(vec![Val::Node(x)]);
        }
        Ok(vec![Val::Padded {
            x,
            pads,
            pad: if n.name.is_empty() { name } else { n.name.clone() },
        }])
    }
}

fn node_name(n: &NodeProto, idx: usize) -> String {
    if !n.name.is_empty() {
        shown(&n.name)
    } else if let Some(o) = n.output.iter().find(|o| !o.is_empty()) {
        format!("-> {}", shown(o))
    } else if idx == usize::MAX {
        "(unnamed)".into()
    } else {
        format!("#{idx}")
    }
}

/// A name of the file as messages show it: whole up to 200 bytes, else its first 64
/// characters and its length (a hostile name may be megabytes long).
fn shown(name: &str) -> String {
    if name.len() <= 200 {
        return name.to_string();
    }
    let head: String = name.chars().take(64).collect();
    format!("{head}… ({} bytes)", name.len())
}

fn invalid(n: &NodeProto, reason: impl Into<String>) -> Fail {
    Fail::Error(OnnxError::Invalid {
        node: node_name(n, usize::MAX),
        op_type: shown(&n.op_type),
        reason: reason.into(),
    })
}

/// A layer's pads plus those of a zero `Pad` folded into it, without overflow.
fn add_pads(n: &NodeProto, p: [usize; 4], extra: [usize; 4]) -> F<[usize; 4]> {
    let mut out = [0; 4];
    for i in 0..4 {
        out[i] = p[i]
            .checked_add(extra[i])
            .ok_or_else(|| invalid(n, format!("pads {p:?} plus the folded Pad's {extra:?} overflow")))?;
    }
    Ok(out)
}

fn to_usize(n: &NodeProto, v: i64, what: &str) -> F<usize> {
    usize::try_from(v).map_err(|_| invalid(n, format!("{what} has a negative entry {v}")))
}

fn kernel_matches(a: &Attrs, k: &[usize]) -> F<()> {
    if let Some(ks) = a.ints("kernel_shape")? {
        let ks_usize: Vec<usize> = ks.iter().map(|&v| v.max(0) as usize).collect();
        if ks_usize != k {
            return Err(invalid(
                a.n,
                format!("kernel_shape {ks:?} differs from the weight's spatial dims {k:?}"),
            ));
        }
    }
    Ok(())
}

/// The type of a graph input; a symbolic (or unknown) batch dim becomes 1.
fn input_type(i: &proto::ValueInfoProto) -> Result<TensorType> {
    let bad = |reason: String| OnnxError::Input {
        name: shown(&i.name),
        reason,
    };
    let t = i
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| bad("not a tensor (sequences, maps and optionals are not supported)".into()))?;
    let dtype = match t.elem_type {
        proto::data_type::FLOAT => DType::F32,
        other => {
            return Err(bad(format!(
                "element type {} is not supported (kiln's inputs are FLOAT)",
                proto::data_type::name(other)
            )));
        }
    };
    let shape = t.shape.as_ref().ok_or_else(|| bad("has no shape".into()))?;
    let mut dims = Vec::with_capacity(shape.dim.len());
    for (ax, d) in shape.dim.iter().enumerate() {
        let v = match &d.value {
            Some(proto::DimensionValue::DimValue(v)) if *v > 0 => *v as usize,
            Some(proto::DimensionValue::DimValue(v)) => {
                return Err(bad(format!("dimension {ax} is {v}; dims must be positive")));
            }
            _ if ax == 0 => 1,
            other => {
                let what = match other {
                    Some(proto::DimensionValue::DimParam(p)) => format!("symbolic (`{p}`)"),
                    _ => "unknown".into(),
                };
                return Err(bad(format!(
                    "dimension {ax} is {what}; kiln needs static shapes (only the batch dim 0 may be symbolic: it becomes 1)"
                )));
            }
        };
        dims.push(v);
    }
    Ok(TensorType::new(dtype, dims))
}

/// A node's attributes, read with their ONNX defaults.
struct Attrs<'n> {
    n: &'n NodeProto,
    #[allow(dead_code)]
    idx: usize,
}

impl<'n> Attrs<'n> {
    fn get(&self, name: &str) -> Option<&'n AttributeProto> {
        self.n.attribute.iter().find(|a| a.name == name)
    }

    /// Every attribute of the node must be one the mapping reads (or knows to be harmless).
    fn known(&self, names: &[&str]) -> F<()> {
        for a in &self.n.attribute {
            if !a.ref_attr_name.is_empty() {
                return unsupported(format!("attribute `{}` refers to a function attribute", a.name));
            }
            if !names.contains(&a.name.as_str()) {
                return unsupported(format!("attribute `{}` is not supported", a.name));
            }
        }
        Ok(())
    }

    fn typed(&self, name: &str, ty: i32) -> F<Option<&'n AttributeProto>> {
        match self.get(name) {
            Some(a) if a.r#type != 0 && a.r#type != ty => Err(invalid(
                self.n,
                format!("attribute `{name}` has type {}, expected {ty}", a.r#type),
            )),
            other => Ok(other),
        }
    }

    fn opt_int(&self, name: &str) -> F<Option<i64>> {
        Ok(self.typed(name, at::INT)?.map(|a| a.i.unwrap_or(0)))
    }

    fn int(&self, name: &str, default: i64) -> F<i64> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    fn opt_float(&self, name: &str) -> F<Option<f32>> {
        Ok(self.typed(name, at::FLOAT)?.map(|a| a.f.unwrap_or(0.0)))
    }

    fn float(&self, name: &str, default: f32) -> F<f32> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    fn ints(&self, name: &str) -> F<Option<Vec<i64>>> {
        Ok(self.typed(name, at::INTS)?.map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str, default: &str) -> F<String> {
        Ok(match self.typed(name, at::STRING)? {
            Some(a) => String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned(),
            None => default.to_string(),
        })
    }

    fn positive(&self, name: &str, default: i64) -> F<usize> {
        let v = self.int(name, default)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| invalid(self.n, format!("`{name}` must be positive, got {v}")))
    }

    /// A two-entry attribute (strides, dilations) of positive values, `[d, d]` when absent.
    fn pair(&self, name: &str, default: usize) -> F<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) => self.two(name, &v),
        }
    }

    fn required_pair(&self, name: &str) -> F<[usize; 2]> {
        let v = self
            .ints(name)?
            .ok_or_else(|| invalid(self.n, format!("attribute `{name}` is required")))?;
        self.two(name, &v)
    }

    fn two(&self, name: &str, v: &[i64]) -> F<[usize; 2]> {
        if v.len() != 2 {
            return unsupported(format!(
                "`{name}` {v:?} has {} entries; kiln supports 2-D layers only",
                v.len()
            ));
        }
        let u = |x: i64| {
            usize::try_from(x).map_err(|_| invalid(self.n, format!("`{name}` {v:?} has a negative entry")))
        };
        Ok([u(v[0])?, u(v[1])?])
    }

    /// `pads` as `[top, left, bottom, right]` (ONNX: all begins, then all ends).
    fn pads(&self) -> F<[usize; 4]> {
        match self.ints("pads")? {
            None => Ok([0; 4]),
            Some(p) if p.len() == 4 => {
                let mut out = [0; 4];
                for (o, &v) in out.iter_mut().zip(&p) {
                    *o = usize::try_from(v).map_err(|_| Fail::Unsupported(format!("negative pads {p:?}")))?;
                }
                Ok(out)
            }
            Some(p) => unsupported(format!(
                "pads {p:?} have {} entries; kiln supports 2-D layers only",
                p.len()
            )),
        }
    }

    /// The padding of a Conv or pool from `auto_pad` and `pads`, plus a folded zero `Pad`.
    fn padding(&self, extra: [usize; 4]) -> F<Padding> {
        let auto = self.string("auto_pad", "NOTSET")?;
        let p = match auto.as_str() {
            "NOTSET" | "" => {
                let p = self.pads()?;
                return Ok(Padding::Explicit(add_pads(self.n, p, extra)?));
            }
            "SAME_UPPER" => Padding::SameUpper,
            "SAME_LOWER" => Padding::SameLower,
            "VALID" => Padding::Valid,
            other => {
                return Err(invalid(
                    self.n,
                    format!("auto_pad `{other}` is not an ONNX auto_pad"),
                ));
            }
        };
        if extra != [0; 4] {
            return unsupported(format!(
                "a zero Pad before a layer with auto_pad {auto} is not folded"
            ));
        }
        Ok(p)
    }
}
