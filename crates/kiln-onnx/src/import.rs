//! Mapping an ONNX graph onto kiln's graph IR, node by node in file order.
//!
//! This file is the importer's plumbing (values, names, constants, the import budget,
//! attributes); each operator's mapping is a function in `crate::ops`, found by name.
//!
//! Every ONNX value is a [`Val`]: an IR node, a constant known at import time (initializers,
//! `Constant` outputs, values folded at import; materialized the first time an op reads it as
//! a tensor: a trainable `param` for an initializer, a `buffer` otherwise), a
//! zero `Pad` waiting to be folded into the convolution or average pool that reads it, or
//! "poisoned" (the output of a node that could not be imported). A node kiln does not support
//! is recorded and its outputs poisoned, so the import goes on and reports **every**
//! unsupported node at once; nodes that read a poisoned value are skipped without a report of
//! their own (they may well be supported).

use crate::error::{OnnxError, Result, Unsupported};
use crate::ops;
use crate::proto::{self, AttributeProto, GraphProto, ModelProto, NodeProto, attribute_type as at};
use crate::tensor::{self, Const, ConstData};
use kiln_ir::op::Padding;
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
pub(crate) enum Val {
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
pub(crate) enum Fail {
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

pub(crate) type F<T> = std::result::Result<T, Fail>;

pub(crate) fn unsupported<T>(reason: impl Into<String>) -> F<T> {
    Err(Fail::Unsupported(reason.into()))
}

/// Decodes and imports a model; `base_dir` is where external tensor data lives; graph inputs
/// named in `bound` are constants with those values instead of inputs.
pub fn import(bytes: &[u8], base_dir: Option<&Path>, bound: &HashMap<String, Const>) -> Result<OnnxModel> {
    let model = <ModelProto as prost::Message>::decode(bytes)?;
    let mut reader = tensor::Reader::new(base_dir);
    reader.allow_input(bytes.len());
    import_model(&model, reader, bound)
}

/// Imports a decoded model, its tensor data read through `reader` (which counts the bytes of
/// the input: [`tensor::Reader::allow_input`]).
pub fn import_model(
    model: &ModelProto,
    reader: tensor::Reader,
    bound: &HashMap<String, Const>,
) -> Result<OnnxModel> {
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
        initializers: HashSet::new(),
        opset,
        reader,
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
        mut weights,
        unsupported: list,
        output_ids,
        values,
        materialized,
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
    drop(values);
    take_weights(&g, materialized, &mut weights)?;
    Ok(OnnxModel {
        graph: g,
        weights,
        opset,
        inputs,
        outputs,
    })
}

/// Moves the data of each materialized constant into `weights` under its param's name. With
/// the importer's values dropped, the entry here is the constant's last owner, so the data is
/// moved, not copied (a copy is the fallback should another owner remain).
fn take_weights(
    g: &Graph,
    materialized: HashMap<*const Const, (Rc<Const>, NodeId)>,
    weights: &mut HashMap<String, Tensor<f32>>,
) -> Result<()> {
    for (c, id) in materialized.into_values() {
        let name = &g.node(id).name;
        let Const { dims, data } = Rc::try_unwrap(c).unwrap_or_else(|c| (*c).clone());
        let ConstData::F32(data) = data else {
            continue; // `materialize` refuses integer constants
        };
        weights.insert(name.clone(), weight(name, dims, data)?);
    }
    Ok(())
}

fn weight(name: &str, dims: Vec<usize>, data: Vec<f32>) -> Result<Tensor<f32>> {
    Tensor::new(dims, data).map_err(|_| OnnxError::Tensor {
        name: shown(name),
        reason: "data length does not match its dims".into(),
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

pub(crate) struct Importer {
    pub(crate) graph: Graph,
    weights: HashMap<String, Tensor<f32>>,
    values: HashMap<String, Val>,
    /// IR param of each constant already read as a tensor, keyed by the constant's address
    /// (the `Rc` is kept alive here), so that the aliases an Identity or Dropout makes share
    /// one param instead of copying the data once per name.
    materialized: HashMap<*const Const, (Rc<Const>, NodeId)>,
    /// The initializers (by the address of their constant, which aliases share): the only
    /// constants that become trainable params. `Constant` outputs and constants computed at
    /// import are buffers, so gradients and trained weights are the file's own tensors.
    initializers: HashSet<*const Const>,
    pub(crate) opset: i64,
    /// Reads tensor data (external files opened once) and counts the bytes of every constant
    /// and weight the import holds.
    pub(crate) reader: tensor::Reader,
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
            let c = Rc::new(self.reader.read(t)?);
            self.initializers.insert(Rc::as_ptr(&c));
            self.values.insert(t.name.clone(), Val::Const(c));
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
                        // computed at import from integer constants (shape arithmetic, an
                        // integer graph input bound to a constant): kiln's outputs are f32
                        self.unsupported.push(Unsupported {
                            node: shown(&o.name),
                            op_type: "graph output".into(),
                            opset: self.opset,
                            reason: "an integer tensor (computed at import from integer constants); kiln's outputs are f32".into(),
                        });
                        continue;
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
    pub(crate) fn fresh(&mut self, base: &str) -> String {
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

    pub(crate) fn add(&mut self, n: &NodeProto, name: &str, op: Op, inputs: &[NodeId]) -> F<NodeId> {
        let name = self.fresh(name);
        self.graph.add(name, op, inputs).map_err(|e| {
            Fail::Error(OnnxError::Invalid {
                node: node_name(n, usize::MAX),
                op_type: shown(&n.op_type),
                reason: e.to_string(),
            })
        })
    }

    /// A param (or buffer) holding `c`, created once per ONNX value: a param only when `c`
    /// is one of the file's initializers and `trainable`. Its weight is `c`'s data, moved
    /// (not copied) into the weights when the import ends (`take_weights`).
    pub(crate) fn materialize(&mut self, value: &str, c: &Rc<Const>, trainable: bool) -> F<NodeId> {
        if let Some(&(_, id)) = self.materialized.get(&Rc::as_ptr(c)) {
            return Ok(id);
        }
        match &c.data {
            // counted as a weight of its own, as when it was a copy
            ConstData::F32(v) => self.charge(value, v.len())?,
            ConstData::I64(_) => {
                return unsupported(format!(
                    "`{value}` is an integer tensor; kiln computes in f32 and reads integer tensors only as shapes, pads or axes"
                ));
            }
        }
        let trainable = trainable && self.initializers.contains(&Rc::as_ptr(c));
        let id = self.param_node(value, c.dims.clone(), trainable)?;
        self.materialized.insert(Rc::as_ptr(c), (Rc::clone(c), id));
        Ok(id)
    }

    /// Whether `c` is one of the file's initializers (or an alias of one).
    pub(crate) fn is_initializer(&self, c: &Rc<Const>) -> bool {
        self.initializers.contains(&Rc::as_ptr(c))
    }

    /// Counts `elements` more f32 values held by the import (before allocating them).
    pub(crate) fn charge(&mut self, value: &str, elements: usize) -> F<()> {
        kiln_ir::limits::check_bytes(elements, 4, "its data")
            .and_then(|b| self.reader.charge(b, "its data"))
            .map_err(|reason| OnnxError::Tensor {
                name: shown(value),
                reason,
            })?;
        Ok(())
    }

    /// A new param (or buffer) node named after `base`, without its weight.
    fn param_node(&mut self, base: &str, dims: Vec<usize>, trainable: bool) -> F<NodeId> {
        let name = self.fresh(base);
        let ty = TensorType::f32(dims);
        if trainable {
            self.graph.param(name, ty)
        } else {
            self.graph.buffer(name, ty)
        }
        .map_err(|e| {
            Fail::Error(OnnxError::Tensor {
                name: shown(base),
                reason: e.to_string(),
            })
        })
    }

    /// Input `i` of `n`, `None` when absent (past the end or the empty name).
    pub(crate) fn val(&self, n: &NodeProto, i: usize) -> F<Option<Val>> {
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
    pub(crate) fn tensor_opt(&mut self, n: &NodeProto, i: usize, trainable: bool) -> F<Option<NodeId>> {
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

    pub(crate) fn tensor(&mut self, n: &NodeProto, i: usize) -> F<NodeId> {
        self.tensor_opt(n, i, true)?
            .ok_or_else(|| invalid(n, format!("input {i} is required")))
    }

    /// Input `i` as a constant, `None` when absent; a computed value is unsupported.
    pub(crate) fn constant(&self, n: &NodeProto, i: usize, what: &str) -> F<Option<Rc<Const>>> {
        match self.val(n, i)? {
            None => Ok(None),
            Some(Val::Const(c)) => Ok(Some(c)),
            Some(_) => unsupported(format!(
                "its {what} (input {i}) is computed at run time; kiln needs it as a constant"
            )),
        }
    }

    pub(crate) fn ty(&self, id: NodeId) -> &TensorType {
        &self.graph.node(id).ty
    }

    pub(crate) fn out_name<'n>(&self, n: &'n NodeProto) -> &'n str {
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

    /// Maps one node through the operator table (`ops::lookup`).
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
        let Some(map) = ops::lookup(&n.op_type) else {
            return unsupported(format!("operator `{}` is not supported", shown(&n.op_type)));
        };
        let a = Attrs { n, idx };
        let out = self.out_name(n).to_string();
        map(self, n, &a, &out)
    }

    /// The data input of a Conv or pool, with the padding of a zero `Pad` that feeds it.
    pub(crate) fn spatial_input(&mut self, n: &NodeProto, what: &str) -> F<(NodeId, [usize; 4])> {
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
    pub(crate) fn reads_output(&self, n: &NodeProto, i: usize) -> bool {
        n.output
            .get(i)
            .is_some_and(|s| !s.is_empty() && self.read.contains(s))
    }

    pub(crate) fn need_rank(&self, id: NodeId, r: usize, what: &str) -> F<()> {
        let t = self.ty(id);
        if t.rank() != r {
            return unsupported(format!(
                "kiln supports 2-D (NCHW) layers only: the {what} must have rank {r}, it is {}",
                t.shape
            ));
        }
        Ok(())
    }
}

pub(crate) fn node_name(n: &NodeProto, idx: usize) -> String {
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
pub(crate) fn shown(name: &str) -> String {
    if name.len() <= 200 {
        return name.to_string();
    }
    let head: String = name.chars().take(64).collect();
    format!("{head}… ({} bytes)", name.len())
}

pub(crate) fn invalid(n: &NodeProto, reason: impl Into<String>) -> Fail {
    Fail::Error(OnnxError::Invalid {
        node: node_name(n, usize::MAX),
        op_type: shown(&n.op_type),
        reason: reason.into(),
    })
}

/// A layer's pads plus those of a zero `Pad` folded into it, without overflow.
pub(crate) fn add_pads(n: &NodeProto, p: [usize; 4], extra: [usize; 4]) -> F<[usize; 4]> {
    let mut out = [0; 4];
    for i in 0..4 {
        out[i] = p[i]
            .checked_add(extra[i])
            .ok_or_else(|| invalid(n, format!("pads {p:?} plus the folded Pad's {extra:?} overflow")))?;
    }
    Ok(out)
}

pub(crate) fn to_usize(n: &NodeProto, v: i64, what: &str) -> F<usize> {
    usize::try_from(v).map_err(|_| invalid(n, format!("{what} has a negative entry {v}")))
}

pub(crate) fn kernel_matches(a: &Attrs, k: &[usize]) -> F<()> {
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
pub(crate) struct Attrs<'n> {
    pub(crate) n: &'n NodeProto,
    #[allow(dead_code)]
    idx: usize,
}

impl<'n> Attrs<'n> {
    pub(crate) fn get(&self, name: &str) -> Option<&'n AttributeProto> {
        self.n.attribute.iter().find(|a| a.name == name)
    }

    /// Every attribute of the node must be one the mapping reads (or knows to be harmless).
    pub(crate) fn known(&self, names: &[&str]) -> F<()> {
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

    pub(crate) fn typed(&self, name: &str, ty: i32) -> F<Option<&'n AttributeProto>> {
        match self.get(name) {
            Some(a) if a.r#type != 0 && a.r#type != ty => Err(invalid(
                self.n,
                format!("attribute `{name}` has type {}, expected {ty}", a.r#type),
            )),
            other => Ok(other),
        }
    }

    pub(crate) fn opt_int(&self, name: &str) -> F<Option<i64>> {
        Ok(self.typed(name, at::INT)?.map(|a| a.i.unwrap_or(0)))
    }

    pub(crate) fn int(&self, name: &str, default: i64) -> F<i64> {
        Ok(self.opt_int(name)?.unwrap_or(default))
    }

    pub(crate) fn opt_float(&self, name: &str) -> F<Option<f32>> {
        Ok(self.typed(name, at::FLOAT)?.map(|a| a.f.unwrap_or(0.0)))
    }

    pub(crate) fn float(&self, name: &str, default: f32) -> F<f32> {
        Ok(self.opt_float(name)?.unwrap_or(default))
    }

    pub(crate) fn ints(&self, name: &str) -> F<Option<Vec<i64>>> {
        Ok(self.typed(name, at::INTS)?.map(|a| a.ints.clone()))
    }

    pub(crate) fn string(&self, name: &str, default: &str) -> F<String> {
        Ok(match self.typed(name, at::STRING)? {
            Some(a) => String::from_utf8_lossy(a.s.as_deref().unwrap_or_default()).into_owned(),
            None => default.to_string(),
        })
    }

    pub(crate) fn positive(&self, name: &str, default: i64) -> F<usize> {
        let v = self.int(name, default)?;
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| invalid(self.n, format!("`{name}` must be positive, got {v}")))
    }

    /// A two-entry attribute (strides, dilations) of positive values, `[d, d]` when absent.
    pub(crate) fn pair(&self, name: &str, default: usize) -> F<[usize; 2]> {
        match self.ints(name)? {
            None => Ok([default; 2]),
            Some(v) => self.two(name, &v),
        }
    }

    pub(crate) fn required_pair(&self, name: &str) -> F<[usize; 2]> {
        let v = self
            .ints(name)?
            .ok_or_else(|| invalid(self.n, format!("attribute `{name}` is required")))?;
        self.two(name, &v)
    }

    pub(crate) fn two(&self, name: &str, v: &[i64]) -> F<[usize; 2]> {
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
    pub(crate) fn pads(&self) -> F<[usize; 4]> {
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
    pub(crate) fn padding(&self, extra: [usize; 4]) -> F<Padding> {
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
