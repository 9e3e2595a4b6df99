//! Model summary: per node output shape, params, FLOPs, receptive field and jump; totals.
//!
//! Every counting convention is written down, with its reasoning, in `docs/summary.md`; this
//! file is the one place that implements them ([`op_flops`] for FLOPs, [`propagate_field`] for
//! receptive fields). All counts include the batch: they are taken over the node's whole
//! output (or input) tensor, whose first dim is `N`.
//!
//! ```
//! use kiln_ir::builder::{Conv, Network};
//! let mut net = Network::new("tiny");
//! let x = net.input("input", [1, 1, 8, 8])?;
//! let h = net.named("conv1").conv2d(x, Conv::new(4, [3, 3]))?;
//! net.output(h)?;
//! let s = kiln_ir::summary::summarize(&net.finish()?);
//! assert_eq!(s.total_params, 4 * 9 + 4);
//! assert_eq!(s.total_flops, 2 * 9 * 6 * 6 * 4);
//! assert_eq!(s.rows[0].receptive_field, Some([3, 3]));
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

use crate::graph::{Graph, NodeId};
use crate::op::{Activation, LossKind, Op, TrainOp};
use crate::shape::{effective_kernel, normalize_axis};
use crate::tensor::{DType, TensorType};
use std::collections::HashSet;
use std::fmt;

/// A cumulative stride (jump) in input pixels: a reduced fraction, because a transposed
/// convolution divides it by its stride and adaptive pooling multiplies it by `n / out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jump {
    num: u64,
    den: u64,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn sat(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Jump {
    /// A jump of one input pixel (an input image).
    pub const ONE: Jump = Jump { num: 1, den: 1 };

    /// `num / den`, reduced; a zero denominator is read as 1 (never a panic).
    pub fn new(num: u64, den: u64) -> Jump {
        Jump::reduced(u128::from(num), u128::from(den.max(1)))
    }

    fn reduced(num: u128, den: u128) -> Jump {
        let g = gcd(num, den).max(1);
        Jump {
            num: sat(num / g),
            den: sat(den / g).max(1),
        }
    }

    pub fn numerator(self) -> u64 {
        self.num
    }

    pub fn denominator(self) -> u64 {
        self.den
    }

    pub fn as_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// `self · mul / div`.
    fn scaled(self, mul: u64, div: u64) -> Jump {
        Jump::reduced(
            u128::from(self.num) * u128::from(mul),
            u128::from(self.den) * u128::from(div.max(1)),
        )
    }

    /// `⌈k · self⌉`: `k` steps of this jump, in whole input pixels (rounded up, so a
    /// fractional jump gives an upper bound of the receptive field).
    fn steps(self, k: u64) -> u64 {
        sat((u128::from(k) * u128::from(self.num)).div_ceil(u128::from(self.den)))
    }
}

impl fmt::Display for Jump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// The receptive field and jump of a spatial value, per spatial axis `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Field {
    /// The extent, in input pixels, of the input window that one output element sees.
    pub rf: [u64; 2],
    /// The distance, in input pixels, between the windows of two neighbouring output elements.
    pub jump: [Jump; 2],
}

impl Field {
    /// An input image: every pixel sees itself, neighbours are one pixel apart.
    pub const IMAGE: Field = Field {
        rf: [1, 1],
        jump: [Jump::ONE, Jump::ONE],
    };
}

/// One computed node of the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: NodeId,
    pub name: String,
    /// The op's name in the text IR (`conv2d`, `relu`, …).
    pub op: &'static str,
    pub output: TensorType,
    /// Elements of the trainable weights (`param`) this node reads (each weight counted once,
    /// at its first reader in topological order).
    pub params: u64,
    /// Elements of the non-trainable weights (`buffer`: batch norm's running statistics).
    pub buffers: u64,
    pub flops: u64,
    /// Per spatial axis `[h, w]`; `None` once the value is no longer spatial (after flatten,
    /// dense, …).
    pub receptive_field: Option<[u64; 2]>,
    pub jump: Option<[Jump; 2]>,
}

/// The summary of a graph: one row per computed node in topological order, and the totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The graph's name.
    pub name: String,
    pub rows: Vec<Row>,
    /// Elements of every trainable weight in the graph.
    pub total_params: u64,
    /// Elements of every non-trainable weight (buffer) in the graph.
    pub total_buffers: u64,
    pub total_flops: u64,
}

impl Summary {
    /// The row of the node named `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// Params held by weights that no node reads (counted in the total, in no row).
    pub fn unread_params(&self) -> u64 {
        let in_rows: u64 = self.rows.iter().map(|r| r.params).fold(0, u64::saturating_add);
        self.total_params.saturating_sub(in_rows)
    }
}

fn numel(t: &TensorType) -> u64 {
    t.dims().iter().fold(1u64, |a, &d| a.saturating_mul(d as u64))
}

fn prod(v: &[u64]) -> u64 {
    v.iter().fold(1u64, |a, &d| a.saturating_mul(d))
}

/// Total size of the adaptive pooling windows along one axis, `Σ_i (end_i − start_i)` over
/// the windows of [`crate::geometry::adaptive_window`], in closed form: `n + out − gcd(n, out)` (the ends sum
/// to `n` more than the starts, plus one for each `i` whose end `(i+1)·n/out` is not whole).
fn adaptive_window_sum(n: usize, out: usize) -> u64 {
    let (n, out) = (n as u64, out as u64);
    if n == 0 || out == 0 {
        return 0;
    }
    n + out - gcd(n.into(), out.into()) as u64
}

/// The largest adaptive pooling window along one axis, in closed form: window `i` spans
/// `⌈(r + n)/out⌉` inputs where `r = i·n mod out`, and the largest such `r` is
/// `out − gcd(n, out)`.
fn adaptive_window_max(n: usize, out: usize) -> u64 {
    let (n, out) = (n as u64, out as u64);
    if n == 0 || out == 0 {
        return 1;
    }
    (out - gcd(n.into(), out.into()) as u64 + n).div_ceil(out)
}

/// A count for the table: the number, or a plain statement when it saturated `u64`.
fn count(v: u64) -> String {
    if v == u64::MAX {
        format!("more than {}", u64::MAX - 1)
    } else {
        v.to_string()
    }
}

/// `c` padded with spaces to `w` characters, on the left when `right`-aligned. (Not a
/// format width: those are limited to `u16::MAX`.)
fn pad_cell(c: &str, w: usize, right: bool) -> String {
    let fill = " ".repeat(w.saturating_sub(c.chars().count()));
    if right {
        format!("{fill}{c}")
    } else {
        format!("{c}{fill}")
    }
}

/// The FLOPs of `op` applied to inputs of types `inputs` giving `output` (docs/summary.md has
/// the table and the reasoning). Weight reads, copies and layout changes are free.
pub fn op_flops(op: &Op, inputs: &[&TensorType], output: &TensorType) -> u64 {
    let out = numel(output);
    let dims = |i: usize| inputs.get(i).map(|t| t.dims()).unwrap_or(&[]);
    let dim = |i: usize, a: usize| dims(i).get(a).copied().unwrap_or(0) as u64;
    let has_bias = inputs.len() == 3;
    match op {
        Op::Input(_) | Op::Param { .. } => 0,
        // (2·C_in/g·kh·kw − 1) per output element without bias, 2·C_in/g·kh·kw with bias.
        // A fused activation adds its own count (as if it were the next row).
        Op::Conv2d(c) => {
            let taps = prod(&[dim(1, 1), dim(1, 2), dim(1, 3)]);
            let conv = taps
                .saturating_mul(2)
                .saturating_sub(u64::from(!has_bias))
                .saturating_mul(out);
            let act = c
                .activation
                .map_or(0, |a| op_flops(&Op::Activation(a), &[output], output));
            conv.saturating_add(act)
        }
        // Every input element times its C_out/g·kh·kw kernel taps, each a multiply and an
        // accumulate into the output (the MACs of the convolution it is the transpose of);
        // the bias adds one per output element.
        Op::ConvTranspose2d(_) => {
            let x = inputs.first().map_or(0, |t| numel(t));
            let macs = prod(&[x, dim(1, 1), dim(1, 2), dim(1, 3)]);
            macs.saturating_mul(2)
                .saturating_add(if has_bias { out } else { 0 })
        }
        // K² per output element, whatever the reduction.
        Op::Pool2d(p) => prod(&[p.kernel[0] as u64, p.kernel[1] as u64, out]),
        // One per element of the input plane.
        Op::GlobalPool(_) => inputs.first().map_or(0, |t| numel(t)),
        // The actual windows: N·C·Σ_i h_i·Σ_j w_j.
        Op::AdaptivePool { output: o, .. } => {
            let d = dims(0);
            if d.len() != 4 {
                return 0;
            }
            prod(&[
                d[0] as u64,
                d[1] as u64,
                adaptive_window_sum(d[2], o[0]),
                adaptive_window_sum(d[3], o[1]),
            ])
        }
        Op::Activation(a) => {
            let per = match a {
                Activation::Relu => 1,
                Activation::LeakyRelu { .. } => 2,
                Activation::Sigmoid => 4,
                Activation::Tanh => 5,
                // max and min
                Activation::Clip { .. } => 2,
                // multiply-add, max and min
                Activation::HardSigmoid { .. } => 4,
                // a polynomial and one exp, counted as tanh
                Activation::Erf => 5,
                // sigmoid and the multiply
                Activation::Silu => 5,
                // erf (counted as tanh) and four multiplies and adds
                Activation::Gelu => 9,
                // the hard sigmoid and the multiply
                Activation::HardSwish => 5,
            };
            out.saturating_mul(per)
        }
        // per element: square and add over the channel window, then the power (exp and log)
        // and the multiply
        Op::Lrn { size, .. } => out.saturating_mul(lrn_window(*size, output)),
        // one add per input element, one divide per output element
        Op::ReduceMean { .. } => inputs.first().map_or(0, |t| numel(t)).saturating_add(out),
        // exp, accumulate, divide per element.
        Op::Softmax { .. } => out.saturating_mul(3),
        // exp, accumulate, subtract per element, one log per row.
        Op::LogSoftmax { axis } => {
            let k = normalize_axis(*axis, output.rank(), false)
                .ok()
                .and_then(|a| output.dims().get(a).copied())
                .unwrap_or(1)
                .max(1) as u64;
            out.saturating_mul(3).saturating_add(out / k)
        }
        // x [N, I], w [O, I]: (2I − 1)·O·N without bias, 2I·O·N with bias.
        Op::Dense => {
            let i = dim(0, 1);
            i.saturating_mul(2)
                .saturating_sub(u64::from(!has_bias))
                .saturating_mul(out)
        }
        // (2K − 1) per output element, K the contracted dim.
        Op::MatMul => {
            let k = dims(0).last().copied().unwrap_or(0) as u64;
            k.saturating_mul(2).saturating_sub(1).saturating_mul(out)
        }
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Concat { .. }
        | Op::Dropout { .. } => 0,
        // One per output element (after broadcasting).
        Op::Binary(_) => out,
        // Per-channel scale and shift computed once, then a multiply and an add per element.
        Op::BatchNorm { activation, .. } => out
            .saturating_mul(2)
            .saturating_add(activation.map_or(0, |a| op_flops(&Op::Activation(a), &[output], output))),
        // A copy.
        Op::Im2Col(_) => 0,
        // As a convolution: 2·K/g per output element (one less without bias), plus the
        // residual add and the activation.
        Op::Gemm(g) => {
            let k = dim(0, 1);
            let mm = k
                .saturating_mul(2)
                .saturating_sub(u64::from(!g.bias))
                .saturating_mul(out);
            let act = g
                .activation
                .map_or(0, |a| op_flops(&Op::Activation(a), &[output], output));
            mm.saturating_add(if g.residual { out } else { 0 })
                .saturating_add(act)
        }
        // Add ε, square root, reciprocal.
        Op::Rsqrt { .. } => out.saturating_mul(3),
        Op::Loss(kind) => {
            let pred = inputs.first().map_or(0, |t| numel(t));
            let rows = dim(0, 0);
            let by_ids = inputs.get(1).is_some_and(|t| t.dtype == DType::I32);
            let pick = if by_ids { rows } else { pred.saturating_mul(2) };
            let mean = 1;
            match kind {
                // subtract, square, accumulate per element; one divide.
                LossKind::Mse => pred.saturating_mul(3).saturating_add(mean),
                // log-softmax of the logits, then as NLL.
                LossKind::CrossEntropy => prod(&[pred, 3])
                    .saturating_add(rows)
                    .saturating_add(pick)
                    .saturating_add(mean),
                // pick (or multiply) and accumulate; one divide.
                LossKind::Nll => pick.saturating_add(mean),
            }
        }
        Op::Slice { .. } => 0,
        Op::Scale { .. } => out,
        Op::Train(t) => training_flops(t, inputs, output),
    }
}

/// FLOPs of the backward-graph and optimizer ops (docs/summary.md, "Training ops").
fn training_flops(op: &TrainOp, inputs: &[&TensorType], output: &TensorType) -> u64 {
    let out = numel(output);
    let first = inputs.first().map_or(0, |t| numel(t));
    match op {
        // Data movement.
        TrainOp::Rot180 { .. } | TrainOp::DilatePad { .. } => 0,
        // The multiply-accumulates of the forward convolution: each delta element times its
        // C/g·K² taps.
        TrainOp::ConvWeightGrad { .. } => {
            let per = output.dims()[1..].iter().product::<usize>() as u64;
            prod(&[inputs.get(1).map_or(0, |t| numel(t)), per, 2])
        }
        // As the pooling they come from.
        TrainOp::MaxPoolIds(p) => op_flops(&Op::Pool2d(p.clone()), inputs, output),
        TrainOp::AdaptiveMaxPoolIds { output: o } => op_flops(
            &Op::AdaptivePool {
                kind: crate::op::ReduceKind::Max,
                output: *o,
            },
            inputs,
            output,
        ),
        // One add per delta element.
        TrainOp::ScatterIds { .. } => first,
        // Each delta spread over its window's K² taps (a divide and an add each).
        TrainOp::Pool2dGrad { pool, .. } => prod(&[first, pool.kernel[0] as u64, pool.kernel[1] as u64]),
        // The forward pooling's windows, read backward.
        TrainOp::AdaptiveAvgPoolGrad { input } => {
            let d = inputs.first().map(|t| t.dims()).unwrap_or(&[]);
            if d.len() != 4 {
                return 0;
            }
            prod(&[
                d[0] as u64,
                d[1] as u64,
                adaptive_window_sum(input[0], d[2]),
                adaptive_window_sum(input[1], d[3]),
            ])
        }
        TrainOp::ActivationGrad(a) => out.saturating_mul(match a {
            Activation::Relu => 1,
            Activation::LeakyRelu { .. } => 2,
            Activation::Sigmoid | Activation::Tanh => 3,
            Activation::Clip { .. } => 1,
            Activation::HardSigmoid { .. } => 2,
            Activation::Erf => 4,
            // sigmoid, then s·(1 + x·(1 − s))·dy
            Activation::Silu => 8,
            // erf and exp, then the sum of the two terms times dy
            Activation::Gelu => 14,
            // the hard sigmoid, its slope's test, a multiply-add and the product by dy
            Activation::HardSwish => 7,
        }),
        // the forward's window sums and powers, and the transposed window's sum of
        // `dy·x·s^{−beta−1}` terms
        TrainOp::LrnGrad { size, .. } => out.saturating_mul(lrn_window(*size, output).saturating_mul(2)),
        TrainOp::BroadcastTo { .. } => 0,
        // Multiply and accumulate the row's dot product, then subtract and multiply (softmax)
        // or exp, multiply and subtract (log-softmax).
        TrainOp::SoftmaxGrad { .. } => out.saturating_mul(4),
        TrainOp::LogSoftmaxGrad { .. } => out.saturating_mul(4),
        // One add per input element.
        TrainOp::ReduceSumTo { .. } => first,
        TrainOp::LossGrad(kind) => out.saturating_mul(match kind {
            LossKind::Mse => 2,
            // softmax (3), subtract the target, divide by N.
            LossKind::CrossEntropy => 5,
            LossKind::Nll => 1,
        }),
        // the mask test and the scaling multiply per element
        TrainOp::DropoutTrain { .. } => out.saturating_mul(2),
        // per input element: the statistics' passes (sum; subtract, square, add) and the
        // output's (subtract, multiply, multiply-add; the backward's two sums and five ops)
        TrainOp::BatchNormTrain { part, .. } => first.saturating_mul(match part {
            crate::op::BnPart::Forward => 7,
            crate::op::BnPart::GradX => 11,
            crate::op::BnPart::GradScale => 7,
            crate::op::BnPart::Mean => 1,
            crate::op::BnPart::Var => 4,
        }),
        TrainOp::Update(u) => match u {
            crate::op::Update::Count => 1,
            crate::op::Update::SgdVelocity { .. } | crate::op::Update::SgdParam { .. } => {
                out.saturating_mul(4)
            }
            crate::op::Update::AdamMoment { squared, .. } => out.saturating_mul(5 + u64::from(*squared)),
            crate::op::Update::AdamParam { .. } => out.saturating_mul(6),
        },
    }
}

/// FLOPs per element of LRN over `output [N, C, …]`: `2·min(size, C) + 3`.
fn lrn_window(size: usize, output: &TensorType) -> u64 {
    let c = output.dims().get(1).copied().unwrap_or(1);
    (size.min(c) as u64).saturating_mul(2).saturating_add(3)
}

/// The larger receptive field per axis among `fields` (ties: the larger jump).
fn widest(fields: impl Iterator<Item = Field> + Clone) -> Option<Field> {
    let mut best: Option<Field> = None;
    for f in fields {
        let b = best.get_or_insert(f);
        for a in 0..2 {
            if (f.rf[a], f.jump[a].as_f64()) > (b.rf[a], b.jump[a].as_f64()) {
                b.rf[a] = f.rf[a];
                b.jump[a] = f.jump[a];
            }
        }
    }
    best
}

/// Per axis: the receptive field grows by `steps` jumps of the input (rounded up to whole
/// pixels) and the jump becomes `jump · mul / div`.
fn grow(f: Field, steps: [u64; 2], mul: [u64; 2], div: [u64; 2]) -> Field {
    let axis = |a: usize| {
        (
            f.rf[a].saturating_add(f.jump[a].steps(steps[a])),
            f.jump[a].scaled(mul[a], div[a]),
        )
    };
    let ((rh, jh), (rw, jw)) = (axis(0), axis(1));
    Field {
        rf: [rh, rw],
        jump: [jh, jw],
    }
}

/// A sliding window of extent `k_eff` and stride `s` over a field.
fn window(f: Field, k_eff: [u64; 2], stride: [u64; 2]) -> Field {
    grow(f, k_eff.map(|k| k.saturating_sub(1)), stride, [1, 1])
}

/// The receptive field and jump of a node's output, given its op, its input types and each
/// input's field (`None` for weights and for non-spatial values). A spatial op (convolution,
/// pooling) over a value that has no field starts afresh as if its input were an image.
pub fn propagate_field(
    op: &Op,
    inputs: &[(&TensorType, Option<Field>)],
    output: &TensorType,
) -> Option<Field> {
    let first = inputs.first().and_then(|(_, f)| *f);
    let spatial_in = || first.unwrap_or(Field::IMAGE);
    let in_dims = inputs.first().map(|(t, _)| t.dims()).unwrap_or(&[]);
    let k_eff = |k: [usize; 2], d: [usize; 2]| {
        [
            effective_kernel(k[0], d[0]) as u64,
            effective_kernel(k[1], d[1]) as u64,
        ]
    };
    let kernel = || {
        let w = inputs.get(1).map(|(t, _)| t.dims()).unwrap_or(&[]);
        [w.get(2).copied().unwrap_or(1), w.get(3).copied().unwrap_or(1)]
    };
    let u = |v: [usize; 2]| [v[0] as u64, v[1] as u64];
    match op {
        Op::Input(t) => (t.rank() == 4).then_some(Field::IMAGE),
        Op::Param { .. } => None,
        Op::Conv2d(c) => Some(window(spatial_in(), k_eff(kernel(), c.dilation), u(c.stride))),
        Op::Pool2d(p) => Some(window(spatial_in(), k_eff(p.kernel, p.dilation), u(p.stride))),
        // An output sees at most ⌈k_eff/s⌉ neighbouring inputs; neighbours are 1/s input apart.
        Op::ConvTranspose2d(c) => {
            let ke = k_eff(kernel(), c.dilation);
            let s = u(c.stride).map(|s| s.max(1));
            let steps = [0, 1].map(|a| ke[a].div_ceil(s[a]).saturating_sub(1));
            Some(grow(spatial_in(), steps, [1, 1], s))
        }
        // One window over the whole plane.
        Op::GlobalPool(_) => {
            let n = [2, 3].map(|a| in_dims.get(a).copied().unwrap_or(1) as u64);
            Some(window(spatial_in(), n, n))
        }
        // The largest window; the jump is the mean stride n / out.
        Op::AdaptivePool { output: o, .. } => {
            let n = [2, 3].map(|a| in_dims.get(a).copied().unwrap_or(1));
            let steps = [0, 1].map(|a| adaptive_window_max(n[a], o[a]).saturating_sub(1));
            Some(grow(spatial_in(), steps, u(n), u(*o)))
        }
        // LRN mixes channels only; a mean over the batch or channel axes keeps the plane
        Op::Activation(_) | Op::Dropout { .. } | Op::BatchNorm { .. } | Op::Lrn { .. } => first,
        Op::ReduceMean { axes, keepdims } => {
            (*keepdims && output.rank() == 4 && axes.iter().all(|&a| a < 2)).then_some(first?)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            let mut f = first?;
            // Along a spatial axis every output sees the whole axis (as global pooling does).
            if output.rank() == 4
                && let Ok(a @ 2..=3) = normalize_axis(*axis, 4, false)
            {
                let n = output.dims()[a] as u64;
                f.rf[a - 2] = f.rf[a - 2].saturating_add(f.jump[a - 2].steps(n.saturating_sub(1)));
            }
            Some(f)
        }
        Op::Binary(_) | Op::Concat { .. } => widest(inputs.iter().filter_map(|(_, f)| *f)),
        Op::Reshape { .. } => {
            let f = first?;
            (in_dims.len() == 4 && output.rank() == 4 && in_dims[2..] == output.dims()[2..]).then_some(f)
        }
        Op::Transpose { perm } => {
            let f = first?;
            if perm.len() != 4 || !matches!((perm[2], perm[3]), (2, 3) | (3, 2)) {
                return None;
            }
            let (a, b) = (perm[2] - 2, perm[3] - 2);
            Some(Field {
                rf: [f.rf[a], f.rf[b]],
                jump: [f.jump[a], f.jump[b]],
            })
        }
        Op::Flatten { .. } | Op::Dense | Op::MatMul | Op::Loss(_) => None,
        Op::Im2Col(_) | Op::Gemm(_) | Op::Rsqrt { .. } => None,
        // Slices, scales and the training ops do not map an image to features: no receptive field.
        Op::Slice { .. } | Op::Scale { .. } | Op::Train(_) => None,
    }
}

/// Summarizes `graph`: one row per computed node (inputs and weights are not rows; a weight's
/// elements go to the first node that reads it), in topological order, and the totals.
pub fn summarize(graph: &Graph) -> Summary {
    let order = graph.topo_order();
    let mut fields: std::collections::HashMap<NodeId, Option<Field>> = Default::default();
    let mut counted: HashSet<NodeId> = HashSet::new();
    let mut rows = Vec::new();
    let (mut total_params, mut total_buffers, mut total_flops) = (0u64, 0u64, 0u64);
    for id in order {
        let node = graph.node(id);
        let ins = graph.inputs(id);
        let types: Vec<&TensorType> = ins.iter().map(|&i| &graph.node(i).ty).collect();
        let with_fields: Vec<(&TensorType, Option<Field>)> = ins
            .iter()
            .map(|&i| (&graph.node(i).ty, fields.get(&i).copied().flatten()))
            .collect();
        let field = propagate_field(&node.op, &with_fields, &node.ty);
        fields.insert(id, field);
        match &node.op {
            Op::Param { ty, trainable } => {
                let n = numel(ty);
                if *trainable {
                    total_params = total_params.saturating_add(n);
                } else {
                    total_buffers = total_buffers.saturating_add(n);
                }
                continue;
            }
            Op::Input(_) => continue,
            _ => {}
        }
        let (mut params, mut buffers) = (0u64, 0u64);
        for &i in &ins {
            if let Op::Param { ty, trainable } = &graph.node(i).op
                && counted.insert(i)
            {
                if *trainable {
                    params = params.saturating_add(numel(ty));
                } else {
                    buffers = buffers.saturating_add(numel(ty));
                }
            }
        }
        let flops = op_flops(&node.op, &types, &node.ty);
        total_flops = total_flops.saturating_add(flops);
        rows.push(Row {
            id,
            name: node.name.clone(),
            op: node.op.name(),
            output: node.ty.clone(),
            params,
            buffers,
            flops,
            receptive_field: field.map(|f| f.rf),
            jump: field.map(|f| f.jump),
        });
    }
    Summary {
        name: graph.name.clone(),
        rows,
        total_params,
        total_buffers,
        total_flops,
    }
}

impl fmt::Display for Summary {
    /// An aligned table (name, op, output, params, buffers, FLOPs, receptive field, jump), then
    /// the totals, one per line: `Total params: N`, `Total buffers: N`, `Total FLOPs: N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "name",
            "op",
            "output",
            "params",
            "buffers",
            "FLOPs",
            "receptive field",
            "jump",
        ];
        let right = [false, false, false, true, true, true, false, false];
        let cells: Vec<[String; 8]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.name.clone(),
                    r.op.to_string(),
                    r.output.to_string(),
                    count(r.params),
                    count(r.buffers),
                    count(r.flops),
                    r.receptive_field
                        .map_or("-".into(), |v| format!("{}x{}", v[0], v[1])),
                    r.jump.map_or("-".into(), |v| format!("{}x{}", v[0], v[1])),
                ]
            })
            .collect();
        let mut width = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, row: &[String]| -> fmt::Result {
            let mut s = String::new();
            for (i, c) in row.iter().enumerate() {
                if i > 0 {
                    s.push_str("  ");
                }
                s.push_str(&pad_cell(c, width[i], right[i]));
            }
            writeln!(f, "{}", s.trim_end())
        };
        writeln!(f, "Model: {}", self.name)?;
        line(f, &header.map(String::from))?;
        let total_width = width.iter().sum::<usize>() + 2 * (width.len() - 1);
        writeln!(f, "{}", "-".repeat(total_width))?;
        for row in &cells {
            line(f, row)?;
        }
        writeln!(f, "{}", "-".repeat(total_width))?;
        writeln!(f, "Total params: {}", count(self.total_params))?;
        writeln!(f, "Total buffers: {}", count(self.total_buffers))?;
        let unread = self.unread_params();
        if unread > 0 {
            writeln!(f, "(of the params, {unread} are in weights no node reads)")?;
        }
        writeln!(f, "Total FLOPs: {}", count(self.total_flops))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::adaptive_window;

    #[test]
    fn adaptive_window_closed_forms_equal_the_windows() {
        for n in 1..40 {
            for out in 1..40 {
                let sizes: Vec<u64> = (0..out)
                    .map(|i| {
                        let (s, e) = adaptive_window(i, n, out);
                        (e - s) as u64
                    })
                    .collect();
                assert_eq!(
                    adaptive_window_sum(n, out),
                    sizes.iter().sum::<u64>(),
                    "{n} {out}"
                );
                assert_eq!(
                    adaptive_window_max(n, out),
                    *sizes.iter().max().unwrap(),
                    "{n} {out}"
                );
            }
        }
    }

    #[test]
    fn long_cells_and_saturated_counts_print() {
        assert_eq!(pad_cell("ab", 4, true), "  ab");
        assert_eq!(pad_cell("ab", 4, false), "ab  ");
        assert_eq!(pad_cell(&"x".repeat(70_000), 3, true).len(), 70_000);
        assert_eq!(count(u64::MAX), "more than 18446744073709551614");
        assert_eq!(count(7), "7");
    }
    use crate::builder::{Conv, ConvTranspose, Network};
    use crate::op::{Padding, Pool2d, PoolKind, ReduceKind};

    fn lenet5() -> Graph {
        let mut net = Network::new("lenet5");
        let x = net.input("input", [1, 1, 28, 28]).unwrap();
        let h = net
            .named("conv1")
            .conv2d(x, Conv::new(6, [5, 5]).padding(2))
            .unwrap();
        let h = net.named("relu1").relu(h).unwrap();
        let h = net.named("pool1").max_pool2d(h, [2, 2], [2, 2]).unwrap();
        let h = net.named("conv2").conv2d(h, Conv::new(16, [5, 5])).unwrap();
        let h = net.named("relu2").relu(h).unwrap();
        let h = net.named("pool2").max_pool2d(h, [2, 2], [2, 2]).unwrap();
        let h = net.named("flatten").flatten(h).unwrap();
        let h = net.named("fc1").dense(h, 120).unwrap();
        let h = net.named("relu3").relu(h).unwrap();
        let h = net.named("fc2").dense(h, 84).unwrap();
        let h = net.named("relu4").relu(h).unwrap();
        let y = net.named("fc3").dense(h, 10).unwrap();
        net.output(y).unwrap();
        net.finish().unwrap()
    }

    fn field(s: &Summary, name: &str) -> (Option<[u64; 2]>, Option<[Jump; 2]>) {
        let r = s.row(name).unwrap_or_else(|| panic!("no row {name}"));
        (r.receptive_field, r.jump)
    }

    fn j(n: u64) -> [Jump; 2] {
        [Jump::new(n, 1); 2]
    }

    #[test]
    fn lenet5_rows_by_hand() {
        type Expected<'a> = (&'a str, &'a str, u64, u64, Option<u64>, Option<u64>);
        let s = summarize(&lenet5());
        let expect: [Expected; 12] = [
            // name, op, params, FLOPs, rf, jump
            (
                "conv1",
                "conv2d",
                6 * 25 + 6,
                2 * 25 * 28 * 28 * 6,
                Some(5),
                Some(1),
            ),
            ("relu1", "relu", 0, 6 * 28 * 28, Some(5), Some(1)),
            ("pool1", "max_pool2d", 0, 4 * 14 * 14 * 6, Some(6), Some(2)),
            (
                "conv2",
                "conv2d",
                16 * 6 * 25 + 16,
                2 * 6 * 25 * 10 * 10 * 16,
                Some(14),
                Some(2),
            ),
            ("relu2", "relu", 0, 16 * 10 * 10, Some(14), Some(2)),
            ("pool2", "max_pool2d", 0, 4 * 5 * 5 * 16, Some(16), Some(4)),
            ("flatten", "flatten", 0, 0, None, None),
            ("fc1", "dense", 400 * 120 + 120, 2 * 400 * 120, None, None),
            ("relu3", "relu", 0, 120, None, None),
            ("fc2", "dense", 120 * 84 + 84, 2 * 120 * 84, None, None),
            ("relu4", "relu", 0, 84, None, None),
            ("fc3", "dense", 84 * 10 + 10, 2 * 84 * 10, None, None),
        ];
        assert_eq!(s.rows.len(), expect.len());
        for (row, (name, op, params, flops, rf, jump)) in s.rows.iter().zip(expect) {
            assert_eq!((row.name.as_str(), row.op), (name, op));
            assert_eq!(row.params, params, "{name} params");
            assert_eq!(row.flops, flops, "{name} FLOPs");
            assert_eq!(row.receptive_field, rf.map(|v| [v, v]), "{name} rf");
            assert_eq!(row.jump, jump.map(j), "{name} jump");
        }
        assert_eq!(s.total_params, 61_706);
        assert_eq!(s.total_flops, 845_852);
        assert_eq!(s.rows[3].output, TensorType::f32([1, 16, 10, 10]));
        let text = s.to_string();
        assert!(text.lines().any(|l| l == "Total params: 61706"), "{text}");
        assert!(text.lines().any(|l| l == "Total FLOPs: 845852"), "{text}");
        assert!(text.contains("14x14") && text.contains("conv2"), "{text}");
    }

    #[test]
    fn strided_dilated_stack_receptive_field() {
        // conv 3x3 s1 → conv 3x3 dilation 2 (k_eff 5) stride 2 → max pool 3 s2 → conv 3x3 d3 (k_eff 7).
        let mut net = Network::new("rf");
        let x = net.input("input", [1, 1, 64, 64]).unwrap();
        let a = net.named("a").conv2d(x, Conv::new(2, [3, 3])).unwrap();
        let b = net
            .named("b")
            .conv2d(a, Conv::new(2, [3, 3]).dilation(2).stride(2))
            .unwrap();
        let c = net.named("c").max_pool2d(b, [3, 3], [2, 2]).unwrap();
        let d = net
            .named("d")
            .conv2d(c, Conv::new(2, [3, 3]).dilation(3))
            .unwrap();
        net.output(d).unwrap();
        let s = summarize(&net.finish().unwrap());
        // a: 1 + 2·1 = 3, jump 1
        assert_eq!(field(&s, "a"), (Some([3, 3]), Some(j(1))));
        // b: 3 + (5 − 1)·1 = 7, jump 2
        assert_eq!(field(&s, "b"), (Some([7, 7]), Some(j(2))));
        // c: 7 + (3 − 1)·2 = 11, jump 4
        assert_eq!(field(&s, "c"), (Some([11, 11]), Some(j(4))));
        // d: 11 + (7 − 1)·4 = 35, jump 4
        assert_eq!(field(&s, "d"), (Some([35, 35]), Some(j(4))));
    }

    #[test]
    fn anisotropic_kernel_and_stride_are_per_axis() {
        let mut net = Network::new("aniso");
        let x = net.input("input", [1, 1, 20, 20]).unwrap();
        let mut c = Conv::new(1, [3, 1]);
        c.attrs.stride = [1, 2];
        let a = net.named("a").conv2d(x, c).unwrap();
        let b = net.named("b").conv2d(a, Conv::new(1, [1, 5])).unwrap();
        net.output(b).unwrap();
        let s = summarize(&net.finish().unwrap());
        assert_eq!(field(&s, "a"), (Some([3, 1]), Some([Jump::ONE, Jump::new(2, 1)])));
        // width: 1 + (5 − 1)·2 = 9
        assert_eq!(field(&s, "b"), (Some([3, 9]), Some([Jump::ONE, Jump::new(2, 1)])));
    }

    #[test]
    fn conv_flops_with_and_without_bias_and_groups() {
        let mut net = Network::new("flops");
        let x = net.input("input", [2, 4, 8, 8]).unwrap();
        let a = net
            .named("nobias")
            .conv2d(x, Conv::new(6, [3, 3]).padding(1).bias(false))
            .unwrap();
        let b = net
            .named("bias")
            .conv2d(x, Conv::new(6, [3, 3]).padding(1))
            .unwrap();
        let c = net
            .named("grouped")
            .conv2d(x, Conv::new(8, [3, 3]).groups(2).bias(false))
            .unwrap();
        let d = net
            .named("depthwise")
            .conv2d(x, Conv::new(4, [3, 3]).groups(4).stride(2))
            .unwrap();
        for o in [a, b, c, d] {
            net.output(o).unwrap();
        }
        let s = summarize(&net.finish().unwrap());
        let r = |n: &str| s.row(n).unwrap().clone();
        // N = 2; output 8x8x6; C_in/g·K² = 4·9 = 36.
        assert_eq!(r("nobias").flops, (2 * 36 - 1) * 8 * 8 * 6 * 2);
        assert_eq!(r("nobias").params, 6 * 36);
        assert_eq!(r("bias").flops, 2 * 36 * 8 * 8 * 6 * 2);
        assert_eq!(r("bias").params, 6 * 36 + 6);
        // groups 2: C_in/g·K² = 2·9 = 18, output 6x6x8.
        assert_eq!(r("grouped").flops, (2 * 18 - 1) * 6 * 6 * 8 * 2);
        assert_eq!(r("grouped").params, 8 * 18);
        // depthwise: 1·9 taps, output 3x3x4, with bias.
        assert_eq!(r("depthwise").flops, 2 * 9 * 3 * 3 * 4 * 2);
        assert_eq!(r("depthwise").params, 4 * 9 + 4);
    }

    #[test]
    fn batch_norm_params_vs_buffers() {
        let mut net = Network::new("bn");
        let x = net.input("input", [1, 3, 8, 8]).unwrap();
        let c = net
            .named("conv")
            .conv2d(x, Conv::new(16, [3, 3]).padding(1).bias(false))
            .unwrap();
        let b = net.named("bn").batch_norm(c).unwrap();
        net.output(b).unwrap();
        let s = summarize(&net.finish().unwrap());
        let bn = s.row("bn").unwrap();
        assert_eq!((bn.params, bn.buffers), (32, 32));
        assert_eq!(bn.flops, 2 * 16 * 8 * 8);
        assert_eq!(bn.receptive_field, Some([3, 3]));
        assert_eq!(s.total_params, 16 * 27 + 32);
        assert_eq!(s.total_buffers, 32);
        let text = s.to_string();
        assert!(text.lines().any(|l| l == "Total buffers: 32"), "{text}");
    }

    #[test]
    fn residual_add_takes_the_widest_input_and_concat_too() {
        let mut net = Network::new("res");
        let x = net.input("input", [1, 2, 16, 16]).unwrap();
        let a = net.named("a").conv2d(x, Conv::new(2, [3, 3]).padding(1)).unwrap();
        let b = net.named("b").conv2d(a, Conv::new(2, [3, 3]).padding(1)).unwrap();
        let s1 = net.named("sum").add(b, x).unwrap();
        // 2x2 stride-1 max pools padded at the end keep 16x16.
        let pool = Pool2d {
            padding: Padding::Explicit([0, 0, 1, 1]),
            ..Pool2d::new(PoolKind::Max, [2, 2], [1, 1])
        };
        let p = net.named("p").pool2d(x, pool.clone()).unwrap();
        let pp = net.named("pp").pool2d(p, pool).unwrap();
        let cat = net.named("cat").concat(&[s1, pp], 1).unwrap();
        net.output(cat).unwrap();
        let s = summarize(&net.finish().unwrap());
        assert_eq!(field(&s, "sum"), (Some([5, 5]), Some(j(1))));
        assert_eq!(s.row("sum").unwrap().flops, 2 * 16 * 16);
        assert_eq!(field(&s, "pp"), (Some([3, 3]), Some(j(1))));
        assert_eq!(field(&s, "cat"), (Some([5, 5]), Some(j(1))));
        assert_eq!(s.row("cat").unwrap().flops, 0);
    }

    #[test]
    fn global_and_adaptive_pooling() {
        let mut net = Network::new("pools");
        let x = net.input("input", [2, 3, 10, 10]).unwrap();
        let c = net.named("c").conv2d(x, Conv::new(4, [3, 3]).stride(2)).unwrap(); // 4x4, rf 3, jump 2
        let g = net.named("g").global_avg_pool(c).unwrap();
        let a = net.named("a").adaptive_pool(x, ReduceKind::Max, [3, 3]).unwrap();
        let f = net.named("f").flatten(g).unwrap();
        net.output(f).unwrap();
        net.output(a).unwrap();
        let s = summarize(&net.finish().unwrap());
        // global: rf 3 + (4 − 1)·2 = 9; FLOPs H·W·C·N = 4·4·4·2.
        assert_eq!(field(&s, "g"), (Some([9, 9]), Some(j(8))));
        assert_eq!(s.row("g").unwrap().flops, 4 * 4 * 4 * 2);
        // adaptive 10 → 3: windows [0,4) [3,7) [6,10): sizes 4+4+4 = 12 per axis, max 4.
        assert_eq!(s.row("a").unwrap().flops, 2 * 3 * 12 * 12);
        assert_eq!(field(&s, "a"), (Some([4, 4]), Some([Jump::new(10, 3); 2])));
        assert_eq!(field(&s, "f"), (None, None));
        assert!(s.to_string().contains("10/3x10/3"));
    }

    #[test]
    fn transposed_conv_flops_and_fractional_jump() {
        let mut net = Network::new("up");
        let x = net.input("input", [1, 4, 5, 5]).unwrap();
        let u = net
            .named("up")
            .conv_transpose2d(x, ConvTranspose::new(2, [3, 3]).stride(2).bias(false))
            .unwrap();
        let c = net.named("c").conv2d(u, Conv::new(1, [3, 3])).unwrap();
        net.output(c).unwrap();
        let s = summarize(&net.finish().unwrap());
        let up = s.row("up").unwrap();
        // MACs: every input element (4·5·5) times C_out/g·K² = 2·9.
        assert_eq!(up.flops, 2 * 4 * 5 * 5 * 2 * 9);
        assert_eq!(up.params, 4 * 2 * 9);
        // rf 1 + (⌈3/2⌉ − 1)·1 = 2, jump 1/2.
        assert_eq!(up.receptive_field, Some([2, 2]));
        assert_eq!(up.jump, Some([Jump::new(1, 2); 2]));
        // then a 3x3 conv: 2 + ⌈2·1/2⌉ = 3.
        assert_eq!(field(&s, "c"), (Some([3, 3]), Some([Jump::new(1, 2); 2])));
    }

    #[test]
    fn activations_softmax_losses_and_matmul() {
        let mut net = Network::new("heads");
        let x = net.input("input", [4, 10]).unwrap();
        let t = net.input_typed("target", TensorType::i32([4])).unwrap();
        let l = net.named("l").leaky_relu(x, 0.1).unwrap();
        let sg = net.named("sg").sigmoid(l).unwrap();
        let th = net.named("th").tanh(sg).unwrap();
        let sm = net.named("sm").softmax(th, -1).unwrap();
        let ls = net.named("ls").log_softmax(sm, 1).unwrap();
        let ce = net.named("ce").loss(LossKind::CrossEntropy, ls, t).unwrap();
        let nll = net.named("nll").loss(LossKind::Nll, ls, t).unwrap();
        let mse = net.named("mse").loss(LossKind::Mse, ls, x).unwrap();
        let w = net.input("w", [10, 3]).unwrap();
        let mm = net.named("mm").matmul(x, w).unwrap();
        for o in [ce, nll, mse, mm] {
            net.output(o).unwrap();
        }
        let s = summarize(&net.finish().unwrap());
        let fl = |n: &str| s.row(n).unwrap().flops;
        assert_eq!(fl("l"), 2 * 40);
        assert_eq!(fl("sg"), 4 * 40);
        assert_eq!(fl("th"), 5 * 40);
        assert_eq!(fl("sm"), 3 * 40);
        assert_eq!(fl("ls"), 3 * 40 + 4);
        assert_eq!(fl("ce"), 3 * 40 + 4 + 4 + 1);
        assert_eq!(fl("nll"), 4 + 1);
        assert_eq!(fl("mse"), 3 * 40 + 1);
        assert_eq!(fl("mm"), (2 * 10 - 1) * 4 * 3);
        assert!(s.rows.iter().all(|r| r.receptive_field.is_none()));
    }

    #[test]
    fn shared_weight_is_counted_once() {
        let mut g = Graph::new();
        let x = g.input("x", TensorType::f32([1, 3])).unwrap();
        let w = g.param("w", TensorType::f32([3])).unwrap();
        let a = g.add("a", Op::Binary(crate::op::BinaryOp::Mul), &[x, w]).unwrap();
        let b = g.add("b", Op::Binary(crate::op::BinaryOp::Add), &[a, w]).unwrap();
        g.param("unused", TensorType::f32([5])).unwrap();
        g.mark_output(b).unwrap();
        let s = summarize(&g);
        assert_eq!(s.row("a").unwrap().params, 3);
        assert_eq!(s.row("b").unwrap().params, 0);
        assert_eq!(s.total_params, 8);
        assert_eq!(s.unread_params(), 5);
        assert_eq!(s.rows.len(), 2);
    }

    #[test]
    fn reshape_to_image_starts_a_fresh_field() {
        let mut net = Network::new("flat_in");
        let x = net.input("input", [1, 784]).unwrap();
        let r = net.named("r").reshape(x, &[1, 1, 28, 28]).unwrap();
        let c = net.named("c").conv2d(r, Conv::new(2, [5, 5])).unwrap();
        let t = net.named("t").transpose(c, &[0, 1, 3, 2]).unwrap();
        let k = net.named("k").reshape(t, &[1, 2, 24, 24]).unwrap();
        net.output(k).unwrap();
        let s = summarize(&net.finish().unwrap());
        assert_eq!(field(&s, "r"), (None, None));
        assert_eq!(field(&s, "c"), (Some([5, 5]), Some(j(1))));
        assert_eq!(field(&s, "t"), (Some([5, 5]), Some(j(1))));
        assert_eq!(field(&s, "k"), (Some([5, 5]), Some(j(1))));
    }
}
