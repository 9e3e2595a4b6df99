//! The graph: a petgraph `StableGraph` of named nodes. Edges go from producer to consumer and
//! carry the consumer's input slot. Shape inference runs when a node is added, so a graph that
//! exists is a graph whose every node has a valid type.

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape;
use crate::tensor::TensorType;
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use std::collections::HashMap;

pub type NodeId = NodeIndex<u32>;

/// A node: a unique name, an op and the op's inferred output type.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub ty: TensorType,
}

#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The graph's name (the `graph NAME { … }` of the text IR).
    pub name: String,
    g: StableGraph<Node, usize>,
    by_name: HashMap<String, NodeId>,
    outputs: Vec<NodeId>,
}

/// Names are identifiers: letters, digits, `_`, `.` (as in `layer1.0.conv1.weight`), not
/// starting with a digit or a dot.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

impl Graph {
    pub fn new() -> Graph {
        Graph {
            name: "main".into(),
            ..Graph::default()
        }
    }

    /// Adds a node named `name` computing `op` over `inputs` (in slot order), after checking
    /// the name and inferring the output type.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = name.into();
        if name.len() > crate::limits::MAX_NAME_LEN {
            let head: String = name.chars().take(40).collect();
            return Err(IrError::BadName(format!(
                "{head}… ({} bytes, above the limit of {})",
                name.len(),
                crate::limits::MAX_NAME_LEN
            )));
        }
        if !is_valid_name(&name) {
            return Err(IrError::BadName(name));
        }
        if self.by_name.contains_key(&name) {
            return Err(IrError::DuplicateName(name));
        }
        let mut types = Vec::with_capacity(inputs.len());
        for &i in inputs {
            match self.g.node_weight(i) {
                Some(n) => types.push(&n.ty),
                None => {
                    return Err(IrError::UnknownNode {
                        node: name,
                        name: format!("#{}", i.index()),
                    });
                }
            }
        }
        let ty = shape::infer(&op, &types).map_err(|message| IrError::Shape {
            node: name.clone(),
            op: op.name().to_string(),
            inputs: describe_types(&types),
            message,
        })?;
        let id = self.g.add_node(Node {
            name: name.clone(),
            op,
            ty,
        });
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, id, slot);
        }
        self.by_name.insert(name, id);
        Ok(id)
    }

    /// A graph input of type `ty`.
    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> Result<NodeId> {
        self.add(name, Op::Input(ty), &[])
    }

    /// A trainable weight of type `ty`.
    pub fn param(&mut self, name: impl Into<String>, ty: TensorType) -> Result<NodeId> {
        self.add(name, Op::Param { ty, trainable: true }, &[])
    }

    /// A stored, non-trainable tensor (batch norm's running statistics).
    pub fn buffer(&mut self, name: impl Into<String>, ty: TensorType) -> Result<NodeId> {
        self.add(name, Op::Param { ty, trainable: false }, &[])
    }

    /// Marks `id` as a graph output (its name is the output's name). Marking twice is a no-op.
    pub fn mark_output(&mut self, id: NodeId) -> Result<()> {
        if !self.g.contains_node(id) {
            return Err(IrError::UnknownNode {
                node: "output".into(),
                name: format!("#{}", id.index()),
            });
        }
        if !self.outputs.contains(&id) {
            self.outputs.push(id);
        }
        Ok(())
    }

    pub fn outputs(&self) -> &[NodeId] {
        &self.outputs
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id]
    }

    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.g.node_weight(id)
    }

    pub fn find(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// The inputs of `id` in slot order.
    pub fn inputs(&self, id: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(usize, NodeId)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort_unstable();
        e.into_iter().map(|(_, n)| n).collect()
    }

    /// The nodes that read `id` (each once, in id order).
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self.g.neighbors_directed(id, Direction::Outgoing).collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    /// All nodes in a topological order that is stable: among ready nodes, the one added
    /// first comes first, so printing and running follow the order the graph was written in.
    pub fn topo_order(&self) -> Vec<NodeId> {
        let mut indeg: HashMap<NodeId, usize> = self
            .g
            .node_indices()
            .map(|n| (n, self.g.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> =
            indeg.iter().filter(|(_, d)| **d == 0).map(|(n, _)| *n).collect();
        let mut order = Vec::with_capacity(self.g.node_count());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n, Direction::Outgoing) {
                let d = indeg.get_mut(&e.target()).expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        order
    }

    /// Graph inputs in topological order.
    pub fn graph_inputs(&self) -> Vec<NodeId> {
        self.topo_order()
            .into_iter()
            .filter(|&n| matches!(self.g[n].op, Op::Input(_)))
            .collect()
    }

    /// Weights (trainable params and buffers) in topological order.
    pub fn params(&self) -> Vec<NodeId> {
        self.topo_order()
            .into_iter()
            .filter(|&n| matches!(self.g[n].op, Op::Param { .. }))
            .collect()
    }

    /// The same graph with the batch size (dim 0 of every input) set to `n`; shape inference
    /// runs again, so a node that hard-codes the old batch size (a reshape, say) is an error.
    pub fn with_batch(&self, n: usize) -> Result<Graph> {
        let mut g = Graph {
            name: self.name.clone(),
            ..Graph::default()
        };
        let mut map = HashMap::new();
        for id in self.topo_order() {
            let node = &self.g[id];
            let op = match &node.op {
                Op::Input(t) if t.rank() >= 1 => {
                    let mut dims = t.dims().to_vec();
                    dims[0] = n;
                    Op::Input(TensorType::new(t.dtype, dims))
                }
                op => op.clone(),
            };
            let inputs: Vec<NodeId> = self.inputs(id).iter().map(|i| map[i]).collect();
            map.insert(id, g.add(node.name.clone(), op, &inputs)?);
        }
        for o in &self.outputs {
            g.mark_output(map[o])?;
        }
        Ok(g)
    }

    /// Checks the graph's invariants after a rewrite: every node's stored type is what shape
    /// inference gives for its op and inputs now, names index the right nodes, the outputs
    /// exist, and the graph is acyclic. The error names the first offending node.
    pub fn verify(&self) -> Result<()> {
        let order = self.topo_order();
        if order.len() != self.g.node_count() {
            return Err(IrError::Shape {
                node: "graph".into(),
                op: "verify".into(),
                inputs: String::new(),
                message: "the graph has a cycle".into(),
            });
        }
        for id in order {
            let n = &self.g[id];
            if self.by_name.get(&n.name) != Some(&id) {
                return Err(IrError::UnknownNode {
                    node: n.name.clone(),
                    name: n.name.clone(),
                });
            }
            let ins: Vec<&TensorType> = self.inputs(id).iter().map(|&i| &self.g[i].ty).collect();
            let ty = shape::infer(&n.op, &ins).map_err(|message| IrError::Shape {
                node: n.name.clone(),
                op: n.op.name().into(),
                inputs: describe_types(&ins),
                message,
            })?;
            if ty != n.ty {
                return Err(IrError::Shape {
                    node: n.name.clone(),
                    op: n.op.name().into(),
                    inputs: describe_types(&ins),
                    message: format!("stored type {} but inference gives {ty}", n.ty),
                });
            }
        }
        if self.outputs.iter().any(|&o| !self.g.contains_node(o)) {
            return Err(IrError::NoOutputs);
        }
        Ok(())
    }

    /// Replaces the op of `id` by `op`, which must give the node the same type from the same
    /// inputs (so no reader is affected).
    pub fn set_op(&mut self, id: NodeId, op: Op) -> Result<()> {
        let ins: Vec<TensorType> = self.inputs(id).iter().map(|&i| self.g[i].ty.clone()).collect();
        let refs: Vec<&TensorType> = ins.iter().collect();
        let node = &self.g[id];
        let ty = shape::infer(&op, &refs).map_err(|message| IrError::Shape {
            node: node.name.clone(),
            op: op.name().into(),
            inputs: describe_types(&refs),
            message,
        })?;
        if ty != node.ty {
            return Err(IrError::Shape {
                node: node.name.clone(),
                op: op.name().into(),
                inputs: describe_types(&refs),
                message: format!("the new op gives {ty}, not the node's {}", node.ty),
            });
        }
        self.g[id].op = op;
        Ok(())
    }

    /// Makes every reader of `from` read `to` instead (same slots). `to` must have `from`'s
    /// type, so no reader's shape changes; graph outputs are not moved (an output keeps its
    /// node and name), so `from` stays alive while it is an output.
    pub fn replace_uses(&mut self, from: NodeId, to: NodeId) -> Result<()> {
        let (Some(f), Some(t)) = (self.g.node_weight(from), self.g.node_weight(to)) else {
            return Err(IrError::UnknownNode {
                node: "replace_uses".into(),
                name: format!("#{}", from.index()),
            });
        };
        if f.ty != t.ty {
            return Err(IrError::Shape {
                node: f.name.clone(),
                op: f.op.name().into(),
                inputs: describe_types(&[&f.ty, &t.ty]),
                message: format!("cannot replace it by `{}` of another type", t.name),
            });
        }
        let edges: Vec<_> = self
            .g
            .edges_directed(from, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (e, target, slot) in edges {
            self.g.remove_edge(e);
            self.g.add_edge(to, target, slot);
        }
        Ok(())
    }

    /// Puts `to` in the place of `from`: every reader and the output list move to `to`, `from`
    /// is removed, and `to` takes `from`'s name (so outputs keep their names). `to` must have
    /// `from`'s type and must not depend on `from`.
    pub fn substitute(&mut self, from: NodeId, to: NodeId) -> Result<()> {
        self.replace_uses(from, to)?;
        for o in &mut self.outputs {
            if *o == from {
                *o = to;
            }
        }
        let name = self.g[from].name.clone();
        if self.g.edges_directed(from, Direction::Outgoing).next().is_some() {
            return Err(IrError::Shape {
                node: name,
                op: self.g[from].op.name().into(),
                inputs: String::new(),
                message: "still read after substitution (the replacement depends on it)".into(),
            });
        }
        self.g.remove_node(from);
        let old = std::mem::replace(&mut self.g[to].name, name.clone());
        self.by_name.remove(&old);
        self.by_name.insert(name, to);
        Ok(())
    }

    /// A name not used in the graph: `base`, or `base_2`, `base_3`, …
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        (2..)
            .map(|i| format!("{base}_{i}"))
            .find(|n| !self.by_name.contains_key(n))
            .expect("unbounded")
    }

    /// Removes `id` if nothing reads it and it is not an output; returns whether it did.
    pub fn remove_if_unused(&mut self, id: NodeId) -> bool {
        let used = self.g.edges_directed(id, Direction::Outgoing).next().is_some();
        if used || self.outputs.contains(&id) || !self.g.contains_node(id) {
            return false;
        }
        if let Some(n) = self.g.remove_node(id) {
            self.by_name.remove(&n.name);
        }
        true
    }

    /// Every node that is an output or that an output depends on.
    pub fn live_nodes(&self) -> std::collections::HashSet<NodeId> {
        let mut live = std::collections::HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.clone();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        live
    }

    /// The underlying petgraph graph, for passes and analyses.
    pub fn petgraph(&self) -> &StableGraph<Node, usize> {
        &self.g
    }
}

/// `f32[1, 3], f32[3]` — how input types appear in messages.
pub fn describe_types(types: &[&TensorType]) -> String {
    if types.is_empty() {
        return "none".into();
    }
    types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}

/// Two graphs are equal when they have the same name, the same nodes (name, op, type and
/// inputs by name) in the same topological order, and the same outputs.
impl PartialEq for Graph {
    fn eq(&self, other: &Graph) -> bool {
        let sig = |g: &Graph| -> Vec<(Node, Vec<String>)> {
            g.topo_order()
                .into_iter()
                .map(|n| {
                    (
                        g.node(n).clone(),
                        g.inputs(n).into_iter().map(|i| g.node(i).name.clone()).collect(),
                    )
                })
                .collect()
        };
        let outs = |g: &Graph| -> Vec<String> { g.outputs.iter().map(|&o| g.node(o).name.clone()).collect() };
        self.name == other.name && sig(self) == sig(other) && outs(self) == outs(other)
    }
}
