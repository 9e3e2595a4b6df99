//! The gradient rules: [`backward`] is the one exhaustive `match` over the forward ops, each
//! arm a call to the rule of its family. A rule gets the node, its inputs, which of them need
//! a gradient, and the delta `dy` of its output; it adds backward nodes to the graph and
//! returns the delta of each input (`None` where none is needed or none exists).

use crate::{AutodiffError, Names};
use kiln_ir::shape::normalize_axis;
use kiln_ir::{
    Activation, BinaryOp, BnPart, Conv2d, ConvTranspose2d, Graph, NodeId, Op, Padding, Pool2d, PoolKind,
    ReduceKind, TrainOp,
};

/// What a rule builds with: the graph, fresh names, and the node being differentiated.
pub struct Builder<'a> {
    pub g: &'a mut Graph,
    pub names: &'a mut Names,
    pub node: NodeId,
}

type R<T> = Result<T, AutodiffError>;
type Deltas = Vec<Option<NodeId>>;

impl Builder<'_> {
    /// Adds `op(inputs)` named after the node being differentiated and `what`.
    fn add(&mut self, what: &str, op: Op, inputs: &[NodeId]) -> R<NodeId> {
        let base = format!("{}.{what}", self.g.node(self.node).name);
        let name = self.names.fresh(self.g, &base);
        Ok(self.g.add(name, op, inputs)?)
    }
    fn dims(&self, id: NodeId) -> Vec<usize> {
        self.g.node(id).ty.dims().to_vec()
    }
    fn no_rule(&self, reason: impl Into<String>) -> AutodiffError {
        let n = self.g.node(self.node);
        AutodiffError::NoRule {
            node: n.name.clone(),
            op: n.op.name().into(),
            reason: reason.into(),
        }
    }
}

/// The deltas of the inputs `ins` of `b.node` given the delta `dy` of its output.
pub fn backward(b: &mut Builder, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let op = b.g.node(b.node).op.clone();
    match &op {
        Op::Input(_) | Op::Param { .. } => Ok(vec![]),
        Op::Conv2d(c) => conv2d(b, c, ins, want, dy),
        Op::ConvTranspose2d(c) => conv_transpose2d(b, c, ins, want, dy),
        Op::Pool2d(p) => pool2d(b, p, ins[0], dy).map(|d| vec![Some(d)]),
        Op::GlobalPool(kind) => adaptive_pool(b, *kind, [1, 1], ins[0], dy).map(|d| vec![Some(d)]),
        Op::AdaptivePool { kind, output } => {
            adaptive_pool(b, *kind, *output, ins[0], dy).map(|d| vec![Some(d)])
        }
        Op::Activation(a) => activation(b, *a, Some(ins[0]), dy).map(|d| vec![Some(d)]),
        Op::Softmax { axis } => {
            let y = b.node;
            b.add("grad", Op::Train(TrainOp::SoftmaxGrad { axis: *axis }), &[y, dy])
                .map(|d| vec![Some(d)])
        }
        Op::LogSoftmax { axis } => {
            let y = b.node;
            b.add(
                "grad",
                Op::Train(TrainOp::LogSoftmaxGrad { axis: *axis }),
                &[y, dy],
            )
            .map(|d| vec![Some(d)])
        }
        Op::Dense => dense(b, ins, want, dy),
        Op::MatMul => matmul(b, ins, want, dy),
        Op::Flatten { .. } | Op::Reshape { .. } => {
            let shape = b.dims(ins[0]).iter().map(|&d| d as i64).collect();
            b.add("grad", Op::Reshape { shape }, &[dy]).map(|d| vec![Some(d)])
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            b.add("grad", Op::Transpose { perm: inv }, &[dy])
                .map(|d| vec![Some(d)])
        }
        Op::Binary(op) => binary(b, *op, ins, want, dy),
        Op::Concat { axis } => concat(b, *axis, ins, want, dy),
        // `differentiate` made every dropout with `ratio > 0` a `dropout_train`
        Op::Dropout { .. } => Ok(vec![Some(dy)]),
        // `differentiate` made every batch norm a `batch_norm_train` (batch statistics)
        Op::BatchNorm { .. } => {
            Err(b.no_rule("inference-mode batch norm is not trained; it becomes batch_norm_train"))
        }
        Op::Train(TrainOp::BatchNormTrain {
            part: BnPart::Forward,
            epsilon,
        }) => batch_norm(b, *epsilon, ins, want, dy),
        Op::Loss(_) => {
            Err(b.no_rule("the graph already computes a loss; differentiate its prediction instead"))
        }
        Op::Rsqrt { .. } => rsqrt(b, dy).map(|d| vec![Some(d)]),
        // an imported Split or Gather on a tensor
        Op::Slice { axis, start, end } => slice(b, *axis, *start, *end, ins[0], dy).map(|d| vec![Some(d)]),
        // `factor·x` (an imported Gemm's alpha and beta on the file's weights)
        Op::Scale { factor } => b
            .add("grad", Op::Scale { factor: *factor }, &[dy])
            .map(|d| vec![Some(d)]),
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => {
            let op = Op::Train(TrainOp::LrnGrad {
                size: *size,
                alpha: *alpha,
                beta: *beta,
                bias: *bias,
            });
            b.add("grad", op, &[ins[0], dy]).map(|d| vec![Some(d)])
        }
        Op::ReduceMean { axes, keepdims } => {
            reduce_mean(b, axes, *keepdims, ins[0], dy).map(|d| vec![Some(d)])
        }
        Op::Im2Col(_) | Op::Gemm(_) => Err(b.no_rule(
            "im2col and gemm are made by the im2col pass after differentiation; differentiate the conv2d",
        )),
        // the forward pass's training-mode dropout (see `differentiate`): the same mask
        Op::Train(TrainOp::DropoutTrain { ratio, seed }) => {
            let op = Op::Train(TrainOp::DropoutTrain {
                ratio: *ratio,
                seed: *seed,
            });
            b.add("grad", op, &[dy, ins[1]]).map(|d| vec![Some(d), None])
        }
        Op::Train(_) => Err(b.no_rule("a training op is not differentiated again")),
    }
}

/// The sum of `d` down to the shape of `like` (a broadcast operand); `d` itself when the
/// shapes agree. The one place where broadcasting is undone.
pub fn sum_to(b: &mut Builder, d: NodeId, like: NodeId) -> R<NodeId> {
    let shape = b.dims(like);
    if b.dims(d) == shape {
        return Ok(d);
    }
    b.add("grad_sum_to", Op::Train(TrainOp::ReduceSumTo { shape }), &[d])
}

/// A bias's delta: `dy [N, C, …]` summed over every axis but 1, as `[C]`.
fn bias_grad(b: &mut Builder, dy: NodeId) -> R<NodeId> {
    let d = b.dims(dy);
    let mut shape = vec![1; d.len()];
    shape[1] = d[1];
    let s = b.add("bias_grad_sum", Op::Train(TrainOp::ReduceSumTo { shape }), &[dy])?;
    b.add(
        "bias_grad",
        Op::Reshape {
            shape: vec![d[1] as i64],
        },
        &[s],
    )
}

// ---------------------------------------------------------------------------------------------
// Convolutions

fn conv2d(b: &mut Builder, c: &Conv2d, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    // A fused activation is the activation op after the plain convolution.
    let dy = match c.activation {
        Some(a) => activation(b, a, None, dy)?,
        None => dy,
    };
    let plain = Conv2d {
        activation: None,
        ..c.clone()
    };
    let (x, w) = (ins[0], ins[1]);
    let (xd, wd, yd) = (b.dims(x), b.dims(w), b.dims(dy));
    let mut out = vec![None; ins.len()];
    if want[0] {
        // dx = conv(dilate_pad(dy), rot180(w)) with stride 1, the forward dilation and groups.
        let g = c.geometry(&xd, [wd[2], wd[3]]).map_err(|m| b.no_rule(m))?;
        debug_assert_eq!(g.output, [yd[2], yd[3]]);
        let mut pad = [0i64; 4];
        for a in 0..2 {
            let (ke, (pb, pe)) = (g.extent(a) as i64, g.pads(a));
            // rows of x past the last window get no gradient: pad the end so dx is x's size
            pad[a] = ke - 1 - pb as i64;
            pad[a + 2] = ke - 1 - pe as i64 + g.tail(a) as i64;
        }
        let wr = b.add("w_rot180", Op::Train(TrainOp::Rot180 { groups: c.groups }), &[w])?;
        if c.stride == [1, 1] && c.groups == 1 && xd[1] < FEW_INPUT_CHANNELS && pad.iter().all(|&p| p >= 0) {
            out[0] = Some(grad_x_as_weight_grad(b, c, dy, wr, [xd[2], xd[3]], pad)?);
        }
        // with stride 1 and no cropping the padding is the convolution's own (no copy of dy)
        let (dp, padding) = if c.stride == [1, 1] && pad.iter().all(|&p| p >= 0) {
            (dy, Padding::Explicit(pad.map(|p| p as usize)))
        } else {
            let op = Op::Train(TrainOp::DilatePad {
                stride: c.stride,
                padding: pad,
            });
            (b.add("dy_dilated", op, &[dy])?, Padding::Explicit([0; 4]))
        };
        let conv = Conv2d {
            stride: [1, 1],
            dilation: c.dilation,
            padding,
            groups: c.groups,
            activation: None,
        };
        if out[0].is_none() {
            out[0] = Some(b.add("grad_x", Op::Conv2d(conv), &[dp, wr])?);
        }
    }
    if want[1] {
        let op = Op::Train(TrainOp::ConvWeightGrad {
            conv: plain,
            kernel: [wd[2], wd[3]],
        });
        out[1] = Some(b.add("grad_w", op, &[x, dy])?);
    }
    if ins.len() == 3 && want[2] {
        out[2] = Some(bias_grad(b, dy)?);
    }
    Ok(out)
}

/// Fewer input channels than this, and a stride-1 convolution's data gradient is written as
/// a weight gradient ([`grad_x_as_weight_grad`]): as a convolution it would be a GEMM with
/// that few rows, whose patch packing costs more than its FMAs (LeNet-5's conv2: 6 rows over
/// 16·25 patch rows).
const FEW_INPUT_CHANNELS: usize = 8;

/// The data gradient of a stride-1 convolution without groups,
/// `dx[n, c, q] = Σ_o Σ_t dy[n, o, q + t·d − P] · rot180(w)[c, o, t]` (`P` the padding `pad`
/// of the convolution form, per side), as the weight gradient of a convolution over the
/// delta with the images and channels swapped: `conv2d_weight_grad(X, D)` with
/// `X = transpose(dy) [O, N, oh, ow]` (images = the forward's output channels), `D [O, C, k,
/// k]` the spatially rotated kernel, the forward's dilation as its stride, the padding `pad`,
/// and the input's size as its kernel; its `[C, N, H, W]` transposed back. The summed
/// positions are the kernel taps and the output positions the image's, so the JIT's direct
/// kernel runs it along the image columns without packing patches.
fn grad_x_as_weight_grad(
    b: &mut Builder,
    c: &Conv2d,
    dy: NodeId,
    wr: NodeId,
    size: [usize; 2],
    pad: [i64; 4],
) -> R<NodeId> {
    let swap = || Op::Transpose {
        perm: vec![1, 0, 2, 3],
    };
    // rot180 swaps the channel axes too: D is its transpose
    let d = b.add("w_rot180_t", swap(), &[wr])?;
    let x = b.add("dy_t", swap(), &[dy])?;
    let conv = Conv2d {
        stride: c.dilation,
        dilation: [1, 1],
        padding: Padding::Explicit(pad.map(|p| p as usize)),
        groups: 1,
        activation: None,
    };
    let op = Op::Train(TrainOp::ConvWeightGrad { conv, kernel: size });
    let g = b.add("grad_x_t", op, &[x, d])?;
    b.add("grad_x", swap(), &[g])
}

fn conv_transpose2d(
    b: &mut Builder,
    c: &ConvTranspose2d,
    ins: &[NodeId],
    want: &[bool],
    dy: NodeId,
) -> R<Deltas> {
    let (x, w) = (ins[0], ins[1]);
    // The convolution with the same stride, dilation and groups is the adjoint; the output
    // padding is cropped from the delta's end (it receives no input taps).
    let p = c.padding;
    let pad = [
        p[0] as i64,
        p[1] as i64,
        p[2] as i64 - c.output_padding[0] as i64,
        p[3] as i64 - c.output_padding[1] as i64,
    ];
    let (src, conv_pad) = if pad.iter().all(|&v| v >= 0) {
        (dy, Padding::Explicit(pad.map(|v| v as usize)))
    } else {
        let op = Op::Train(TrainOp::DilatePad {
            stride: [1, 1],
            padding: pad,
        });
        (b.add("dy_padded", op, &[dy])?, Padding::Explicit([0; 4]))
    };
    let conv = Conv2d {
        stride: c.stride,
        dilation: c.dilation,
        padding: conv_pad,
        groups: c.groups,
        activation: None,
    };
    let wd = b.dims(w);
    let mut out = vec![None; ins.len()];
    if want[0] {
        out[0] = Some(b.add("grad_x", Op::Conv2d(conv.clone()), &[src, w])?);
    }
    if want[1] {
        let op = Op::Train(TrainOp::ConvWeightGrad {
            conv,
            kernel: [wd[2], wd[3]],
        });
        out[1] = Some(b.add("grad_w", op, &[src, x])?);
    }
    if ins.len() == 3 && want[2] {
        out[2] = Some(bias_grad(b, dy)?);
    }
    Ok(out)
}

/// Batch norm on batch statistics: `dx` by its own op (the statistics depend on every
/// element), `dscale = Σ dy·x̂`, `dbias = Σ dy`.
fn batch_norm(b: &mut Builder, epsilon: f32, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let (x, scale) = (ins[0], ins[1]);
    let mut out = vec![None; 3];
    if want[0] {
        let op = Op::Train(TrainOp::BatchNormTrain {
            part: BnPart::GradX,
            epsilon,
        });
        out[0] = Some(b.add("grad_x", op, &[x, scale, dy])?);
    }
    if want[1] {
        let op = Op::Train(TrainOp::BatchNormTrain {
            part: BnPart::GradScale,
            epsilon,
        });
        out[1] = Some(b.add("grad_scale", op, &[x, dy])?);
    }
    if want[2] {
        out[2] = Some(bias_grad(b, dy)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pooling

fn pool2d(b: &mut Builder, p: &Pool2d, x: NodeId, dy: NodeId) -> R<NodeId> {
    let xd = b.dims(x);
    let size = [xd[2], xd[3]];
    match p.kind {
        PoolKind::Max => {
            let ids = b.add("max_ids", Op::Train(TrainOp::MaxPoolIds(p.clone())), &[x])?;
            b.add("grad", Op::Train(TrainOp::ScatterIds { size }), &[dy, ids])
        }
        PoolKind::Avg { .. } | PoolKind::Sum => b.add(
            "grad",
            Op::Train(TrainOp::Pool2dGrad {
                pool: p.clone(),
                input: size,
            }),
            &[dy],
        ),
    }
}

fn adaptive_pool(b: &mut Builder, kind: ReduceKind, output: [usize; 2], x: NodeId, dy: NodeId) -> R<NodeId> {
    let xd = b.dims(x);
    let size = [xd[2], xd[3]];
    match kind {
        ReduceKind::Max => {
            let ids = b.add("max_ids", Op::Train(TrainOp::AdaptiveMaxPoolIds { output }), &[x])?;
            b.add("grad", Op::Train(TrainOp::ScatterIds { size }), &[dy, ids])
        }
        ReduceKind::Avg => b.add(
            "grad",
            Op::Train(TrainOp::AdaptiveAvgPoolGrad { input: size }),
            &[dy],
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Elementwise

/// The delta before activation `a`, from the node's output (the activation's output, or a
/// convolution's with the activation fused), or from its input `x` for the activations whose
/// backward reads the input (erf; `x` is `None` when the activation is fused).
fn activation(b: &mut Builder, a: Activation, x: Option<NodeId>, dy: NodeId) -> R<NodeId> {
    if let Activation::LeakyRelu { alpha } = a
        && alpha < 0.0
    {
        return Err(b.no_rule(format!(
            "leaky relu's gradient is taken from its output, which needs alpha ≥ 0, got {alpha}"
        )));
    }
    let v = if a.grad_from_input() {
        x.ok_or_else(|| {
            b.no_rule(format!(
                "{}'s gradient needs its input, which a fused activation does not keep; differentiate the graph before fusion",
                a.name()
            ))
        })?
    } else {
        b.node
    };
    b.add("grad_act", Op::Train(TrainOp::ActivationGrad(a)), &[v, dy])
}

/// The mean over `axes`: each input element gets `dy` of its output element over the count,
/// `dx = broadcast_to(dy with the axes kept, x's shape) / count` (the adjoint of the sum).
fn reduce_mean(b: &mut Builder, axes: &[usize], keepdims: bool, x: NodeId, dy: NodeId) -> R<NodeId> {
    let xd = b.dims(x);
    let kept = kiln_ir::shape::reduce_dims(axes, true, &xd).map_err(|m| b.no_rule(m))?;
    let d = if keepdims {
        dy
    } else {
        let shape = kept.iter().map(|&v| v as i64).collect();
        b.add("grad_keepdims", Op::Reshape { shape }, &[dy])?
    };
    let spread = b.add(
        "grad_broadcast",
        Op::Train(TrainOp::BroadcastTo { shape: xd.clone() }),
        &[d],
    )?;
    let count: usize = axes.iter().map(|&a| xd[a]).product();
    let factor = (1.0 / count as f64) as f32;
    b.add("grad", Op::Scale { factor }, &[spread])
}

/// `y = (x + ε)^-½`: `dx = dy · (−½ y³)`, from the forward output.
fn rsqrt(b: &mut Builder, dy: NodeId) -> R<NodeId> {
    let y = b.node;
    let mul = Op::Binary(BinaryOp::Mul);
    let y2 = b.add("grad_y2", mul.clone(), &[y, y])?;
    let y3 = b.add("grad_y3", mul.clone(), &[y2, y])?;
    let slope = b.add("grad_slope", Op::Scale { factor: -0.5 }, &[y3])?;
    b.add("grad", mul, &[dy, slope])
}

fn binary(b: &mut Builder, op: BinaryOp, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let (x, y) = (ins[0], ins[1]);
    let mul = Op::Binary(BinaryOp::Mul);
    let div = Op::Binary(BinaryOp::Div);
    let mut out = vec![None, None];
    if want[0] {
        let d = match op {
            BinaryOp::Add | BinaryOp::Sub => dy,
            BinaryOp::Mul => b.add("grad_a", mul.clone(), &[dy, y])?,
            BinaryOp::Div => b.add("grad_a", div.clone(), &[dy, y])?,
        };
        out[0] = Some(sum_to(b, d, x)?);
    }
    if want[1] {
        let d = match op {
            BinaryOp::Add => dy,
            BinaryOp::Sub => b.add("grad_b", Op::Scale { factor: -1.0 }, &[dy])?,
            BinaryOp::Mul => b.add("grad_b", mul, &[dy, x])?,
            // d(x/y)/dy = −(x/y)/y: the forward output over y, negated.
            BinaryOp::Div => {
                let q = b.node;
                let t = b.add("grad_b_num", mul, &[dy, q])?;
                let t = b.add("grad_b_div", div, &[t, y])?;
                b.add("grad_b", Op::Scale { factor: -1.0 }, &[t])?
            }
        };
        out[1] = Some(sum_to(b, d, y)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Linear algebra

fn dense(b: &mut Builder, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let (x, w) = (ins[0], ins[1]);
    let mut out = vec![None; ins.len()];
    if want[0] {
        out[0] = Some(b.add("grad_x", Op::MatMul, &[dy, w])?);
    }
    if want[1] {
        // dW [O, I] = dYᵀ [O, N] · X [N, I] as a GEMM (the packed driver; a `matmul` of two
        // computed values would take the scalar loop): A = dYᵀ, B = X as one batch [1, N, I]
        let (n, i) = (b.dims(x)[0], b.dims(x)[1]);
        let o = b.dims(dy)[1];
        let dyt = b.add("dy_t", Op::Transpose { perm: vec![1, 0] }, &[dy])?;
        let xb = b.add(
            "x_batch",
            Op::Reshape {
                shape: vec![1, n as i64, i as i64],
            },
            &[x],
        )?;
        let g = b.add("grad_w_gemm", Op::Gemm(Default::default()), &[dyt, xb])?;
        out[1] = Some(b.add(
            "grad_w",
            Op::Reshape {
                shape: vec![o as i64, i as i64],
            },
            &[g],
        )?);
    }
    if ins.len() == 3 && want[2] {
        let o = b.dims(dy)[1];
        out[2] = Some(b.add(
            "bias_grad",
            Op::Train(TrainOp::ReduceSumTo { shape: vec![o] }),
            &[dy],
        )?);
    }
    Ok(out)
}

/// NumPy matmul: rank-1 operands are made rank 2 (`[K]` → `[1, K]` on the left, `[K, 1]` on
/// the right), then `dA = dY·Bᵀ`, `dB = Aᵀ·dY` over the batch axes, summed back to each
/// operand's (broadcast) shape.
fn matmul(b: &mut Builder, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let (x, y) = (ins[0], ins[1]);
    let as_rank2 = |b: &mut Builder, v: NodeId, left: bool| -> R<NodeId> {
        let d = b.dims(v);
        if d.len() >= 2 {
            return Ok(v);
        }
        let shape = if left {
            vec![1, d[0] as i64]
        } else {
            vec![d[0] as i64, 1]
        };
        b.add("as_matrix", Op::Reshape { shape }, &[v])
    };
    let (x2, y2) = (as_rank2(b, x, true)?, as_rank2(b, y, false)?);
    // the delta in the shape of the rank-2 product
    let prod_shape = {
        let (xd, yd) = (b.dims(x2), b.dims(y2));
        let batch = kiln_ir::shape::broadcast_shapes(&xd[..xd.len() - 2], &yd[..yd.len() - 2])
            .map_err(|m| b.no_rule(m))?;
        let mut s: Vec<usize> = batch.dims().to_vec();
        s.push(xd[xd.len() - 2]);
        s.push(yd[yd.len() - 1]);
        s
    };
    let dy2 = if b.dims(dy) == prod_shape {
        dy
    } else {
        let shape = prod_shape.iter().map(|&d| d as i64).collect();
        b.add("dy_matrix", Op::Reshape { shape }, &[dy])?
    };
    let t = |b: &mut Builder, v: NodeId| -> R<NodeId> {
        let r = b.dims(v).len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        b.add("t", Op::Transpose { perm }, &[v])
    };
    let back = |b: &mut Builder, d: NodeId, like2: NodeId, like: NodeId| -> R<NodeId> {
        let d = sum_to(b, d, like2)?;
        if like2 == like {
            return Ok(d);
        }
        let shape = b.dims(like).iter().map(|&v| v as i64).collect();
        b.add("grad_vec", Op::Reshape { shape }, &[d])
    };
    let mut out = vec![None, None];
    if want[0] {
        let yt = t(b, y2)?;
        let d = b.add("grad_a", Op::MatMul, &[dy2, yt])?;
        out[0] = Some(back(b, d, x2, x)?);
    }
    if want[1] {
        let xt = t(b, x2)?;
        let d = b.add("grad_b", Op::MatMul, &[xt, dy2])?;
        out[1] = Some(back(b, d, y2, y)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Layout

/// Slice's backward: `dy` in place, zeros elsewhere along `axis` (a concat of zeros, `dy`,
/// zeros). The zeros are `0·Σdy` broadcast, so no constant is needed (a non-finite `dy` is
/// non-finite in `dx` anyway).
fn slice(b: &mut Builder, axis: i64, start: usize, end: usize, x: NodeId, dy: NodeId) -> R<NodeId> {
    let dims = b.dims(x);
    let a = normalize_axis(axis, dims.len(), false).map_err(|m| b.no_rule(m))?;
    if start == 0 && end == dims[a] {
        return Ok(dy);
    }
    let sum = b.add(
        "grad_sum",
        Op::Train(TrainOp::ReduceSumTo { shape: vec![] }),
        &[dy],
    )?;
    let zero = b.add("grad_zero", Op::Scale { factor: 0.0 }, &[sum])?;
    let mut parts = Vec::with_capacity(3);
    for (what, len, at_end) in [("grad_before", start, false), ("grad_after", dims[a] - end, true)] {
        if at_end {
            parts.push(dy);
        }
        if len > 0 {
            let mut shape = dims.clone();
            shape[a] = len;
            parts.push(b.add(what, Op::Train(TrainOp::BroadcastTo { shape }), &[zero])?);
        }
    }
    b.add("grad", Op::Concat { axis: a as i64 }, &parts)
}

fn concat(b: &mut Builder, axis: i64, ins: &[NodeId], want: &[bool], dy: NodeId) -> R<Deltas> {
    let rank = b.dims(dy).len();
    let a = normalize_axis(axis, rank, false).map_err(|m| b.no_rule(m))?;
    let mut start = 0;
    let mut out = Vec::with_capacity(ins.len());
    for (&x, &w) in ins.iter().zip(want) {
        let len = b.dims(x)[a];
        out.push(if w {
            Some(b.add(
                "grad_slice",
                Op::Slice {
                    axis: a as i64,
                    start,
                    end: start + len,
                },
                &[dy],
            )?)
        } else {
            None
        });
        start += len;
    }
    Ok(out)
}
