//! kiln's optimizer. A pass is a small named rewrite of the graph that reports whether it
//! changed anything; a pipeline is one readable list of passes per optimization level, run to
//! a fixpoint with `Graph::verify` after every pass.
//!
//! The passes, in pipeline order: `noop` (removal of inference dropout and of reshapes,
//! flattens and transposes that change nothing), `layout` (transposes that cancel or compose,
//! and transposes that only move axes of size 1, which become reshapes), `bn_fold` (batch
//! norm folded into the convolution before it), `matmul_dense` (a matmul by a weight matrix becomes a dense layer,
//! with the bias add after it as its bias), `silu` (`x · sigmoid(x)` becomes one activation), `im2col` (convolutions become a GEMM over their
//! patches), `fusion` (activations and residual adds become the epilogue of the convolution
//! or GEMM before them) and `dead_code`. Memory planning (`memory_plan`) is not a graph rewrite: it
//! runs on the optimized graph and gives every value its place in one arena, with the scratch
//! and status words the code generator asks for.

#![forbid(unsafe_code)]

pub mod affine_fold;
pub mod bn_fold;
pub mod dead_code;
pub mod fusion;
pub mod im2col;
pub mod layout;
pub mod matmul_dense;
pub mod memory_plan;
pub mod noop;
pub mod silu;

use kiln_ir::{Graph, IrError, NodeId, Op, TrainOp};

/// Every node computed from weights alone (see [`is_constant`]), in one pass over the graph.
pub fn constant_nodes(graph: &Graph) -> std::collections::HashSet<NodeId> {
    let mut out = std::collections::HashSet::new();
    for id in graph.topo_order() {
        let constant = match graph.node(id).op {
            Op::Param { .. } => true,
            Op::Input(_)
            | Op::Dropout { .. }
            | Op::Train(TrainOp::DropoutTrain { .. })
            | Op::Train(TrainOp::Update(_)) => false,
            _ => graph.inputs(id).iter().all(|i| out.contains(i)),
        };
        if constant {
            out.insert(id);
        }
    }
    out
}

/// Whether `id` is computed from weights alone (no graph input, no random op, no optimizer
/// update — an update is the work of a training step), so that its value is fixed once the
/// weights are loaded.
pub fn is_constant(graph: &Graph, id: NodeId) -> bool {
    constant_nodes(graph).contains(&id)
}

/// A rewrite of the graph.
pub trait Pass {
    /// The name `kiln compile --print-after NAME` uses.
    fn name(&self) -> &'static str;
    /// Rewrites `graph` in place; `Ok(true)` when it changed something.
    fn run(&self, graph: &mut Graph) -> Result<bool, IrError>;
}

/// How much to optimize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OptLevel {
    /// No passes: the graph as written.
    None,
    /// Every pass.
    #[default]
    Full,
}

/// The passes of `level`, in order.
pub fn pipeline(level: OptLevel) -> Vec<Box<dyn Pass>> {
    match level {
        OptLevel::None => vec![],
        OptLevel::Full => vec![
            Box::new(noop::Noop),
            Box::new(layout::Layout),
            Box::new(affine_fold::AffineFold),
            Box::new(bn_fold::BnFold),
            Box::new(matmul_dense::MatMulDense),
            Box::new(silu::Silu),
            Box::new(im2col::Im2ColPass),
            Box::new(fusion::Fusion),
            Box::new(dead_code::DeadCode),
        ],
    }
}

/// Runs `passes` over `graph` until none changes it (at most 16 rounds), verifying the graph
/// after every pass. `after` is called with each pass's name and the graph it left, every time
/// a pass runs (for `--print-after`).
pub fn run_pipeline(
    graph: &mut Graph,
    passes: &[Box<dyn Pass>],
    mut after: impl FnMut(&str, &Graph),
) -> Result<(), IrError> {
    for _ in 0..16 {
        let mut changed = false;
        for p in passes {
            changed |= p.run(graph)?;
            graph.verify()?;
            after(p.name(), graph);
        }
        if !changed {
            break;
        }
    }
    Ok(())
}

/// The graph optimized at `level`.
pub fn optimize(graph: &Graph, level: OptLevel) -> Result<Graph, IrError> {
    let mut g = graph.clone();
    run_pipeline(&mut g, &pipeline(level), |_, _| {})?;
    Ok(g)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Pass;
    use kiln_ir::text;

    /// Parses `input`, runs `pass` once and verifies, and compares the printed result with
    /// `expected` (text IR, as `text::print` writes it).
    pub fn check_pass(pass: &dyn Pass, input: &str, expected: &str) {
        let mut g = text::parse(input).expect("the test's input parses");
        pass.run(&mut g).expect("the pass runs");
        g.verify().expect("the graph verifies after the pass");
        assert_eq!(text::print(&g), expected, "after `{}`", pass.name());
    }
}
