//! The closed set of operators. Each variant carries its attributes; every layer `match`es
//! exhaustively, so a new op that is not handled somewhere is a compile error.
//!
//! This file holds each op's *definition*: its name in the text IR, its attributes and their
//! text form, and the number of inputs it takes. Shape rules live in `shape.rs`.

use crate::tensor::TensorType;
use std::fmt;

/// Padding of the two spatial axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Padding {
    /// `[top, left, bottom, right]`.
    Explicit([usize; 4]),
    /// No padding.
    Valid,
    /// Output size `ceil(n / stride)`; an odd total goes to the end (ONNX `SAME_UPPER`, TF `same`).
    SameUpper,
    /// As `SameUpper`, but an odd total goes to the beginning (ONNX `SAME_LOWER`).
    SameLower,
}

impl Padding {
    /// The same padding on all four sides.
    pub fn uniform(p: usize) -> Padding {
        Padding::Explicit([p; 4])
    }
}

impl Default for Padding {
    fn default() -> Padding {
        Padding::Explicit([0; 4])
    }
}

/// Attributes of a (grouped, dilated, strided) 2-D convolution. Inputs: `x [N, C, H, W]`,
/// `w [C_out, C/groups, kh, kw]`, optional `b [C_out]`. Depthwise is `groups == C`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub padding: Padding,
    pub groups: usize,
    /// An activation applied to the output: the epilogue the fusion pass folds in
    /// (`conv2d(…) {activation=relu}` computes `relu(conv2d(…))`).
    pub activation: Option<Activation>,
}

impl Default for Conv2d {
    fn default() -> Conv2d {
        Conv2d {
            stride: [1, 1],
            dilation: [1, 1],
            padding: Padding::default(),
            groups: 1,
            activation: None,
        }
    }
}

/// Attributes of `im2col`: the patch matrix of a convolution. `x [N, C, H, W]` becomes
/// `[N, C·kh·kw, oh·ow]`; row `(c, i, j)`, column `(y, x)` holds
/// `x[n, c, y·s₀ − top + i·d₀, x·s₁ − left + j·d₁]`, or 0 where that falls in the padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Im2Col {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`.
    pub padding: [usize; 4],
}

/// Attributes of `gemm`, the batched, grouped matrix product a convolution becomes, with its
/// epilogue. Inputs: `a [M, K/groups]`, `b [N, K, L]`, then `bias [M]` when `bias`, then
/// `residual [N, M, L]` when `residual`. Output `[N, M, L]`:
/// `y[n, g·M/G + m, l] = act(Σ_k a[g·M/G + m, k]·b[n, g·K/G + k, l] + bias[g·M/G + m] + residual[n, g·M/G + m, l])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub groups: usize,
    pub bias: bool,
    pub residual: bool,
    pub activation: Option<Activation>,
}

impl Default for Gemm {
    fn default() -> Gemm {
        Gemm {
            groups: 1,
            bias: false,
            residual: false,
            activation: None,
        }
    }
}

/// Attributes of a 2-D transposed convolution. Inputs: `x [N, C_in, H, W]`,
/// `w [C_in, C_out/groups, kh, kw]` (the PyTorch / ONNX layout), optional `b [C_out]`.
/// Output size per axis: `s·(n−1) + d·(k−1) + 1 − p_begin − p_end + output_padding`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvTranspose2d {
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// `[top, left, bottom, right]`, removed from the full output.
    pub padding: [usize; 4],
    pub output_padding: [usize; 2],
    pub groups: usize,
}

impl Default for ConvTranspose2d {
    fn default() -> ConvTranspose2d {
        ConvTranspose2d {
            stride: [1, 1],
            dilation: [1, 1],
            padding: [0; 4],
            output_padding: [0; 2],
            groups: 1,
        }
    }
}

/// What a pooling window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    /// Maximum; padded positions never win (they count as −∞).
    Max,
    /// Mean; divided by the window's size when `count_include_pad`, else by the number of
    /// non-padded positions it covers.
    Avg { count_include_pad: bool },
    /// Sum of the covered positions (padding adds zero).
    Sum,
}

/// Attributes of a windowed 2-D pooling (`x [N, C, H, W]`). Overlapping windows are
/// `kernel > stride`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool2d {
    pub kind: PoolKind,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub padding: Padding,
    /// Output size rounds up instead of down; a last window that would start in the end
    /// padding is dropped (PyTorch's and ONNX's rule).
    pub ceil_mode: bool,
}

impl Pool2d {
    pub fn new(kind: PoolKind, kernel: [usize; 2], stride: [usize; 2]) -> Pool2d {
        Pool2d {
            kind,
            kernel,
            stride,
            dilation: [1, 1],
            padding: Padding::default(),
            ceil_mode: false,
        }
    }
}

/// Reduction of global and adaptive pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Max,
    Avg,
}

/// Elementwise activations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    /// `x` if `x ≥ 0`, else `alpha·x`.
    LeakyRelu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
}

/// Elementwise binary ops with NumPy broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Loss functions, defined as PyTorch's defaults. Inputs: prediction, target; output a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// Mean over all elements of `(a − y)²`; target of the prediction's shape.
    Mse,
    /// Mean over the batch of `−Σ_c y_c · log softmax(z)_c` of logits `z [N, K]`; target is
    /// class ids `i32 [N]` or probabilities `f32 [N, K]`.
    CrossEntropy,
    /// Mean over the batch of `−Σ_c y_c · z_c` of log-probabilities `z [N, K]` (PyTorch's
    /// NLLLoss with class ids: `−z[n, y_n]`); targets as for `CrossEntropy`.
    Nll,
}

/// One operator of the graph IR.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A graph input, fed at run time. The node's name is the input's name.
    Input(TensorType),
    /// A weight tensor, loaded from a weights file. `trainable == false` marks a buffer
    /// (batch norm's running statistics): stored, but not a parameter.
    Param {
        ty: TensorType,
        trainable: bool,
    },
    Conv2d(Conv2d),
    ConvTranspose2d(ConvTranspose2d),
    Pool2d(Pool2d),
    /// Reduce each channel's whole plane to `1×1`.
    GlobalPool(ReduceKind),
    /// Pool to a fixed `[out_h, out_w]`; window `i` covers `[⌊i·n/out⌋, ⌈(i+1)·n/out⌉)` (PyTorch).
    AdaptivePool {
        kind: ReduceKind,
        output: [usize; 2],
    },
    Activation(Activation),
    /// Softmax along `axis` (negative counts from the end).
    Softmax {
        axis: i64,
    },
    LogSoftmax {
        axis: i64,
    },
    /// Fully connected: `x [N, I]`, `w [O, I]` (PyTorch `Linear` layout), optional `b [O]`;
    /// `y = x·wᵀ + b`.
    Dense,
    /// NumPy `matmul`: batched over leading axes with broadcasting; rank-1 operands as NumPy.
    MatMul,
    /// To 2-D: `[∏ dims[..axis], ∏ dims[axis..]]` (ONNX `Flatten`).
    Flatten {
        axis: i64,
    },
    /// To `shape`; `0` copies the input's dim at that index, one `-1` is inferred (ONNX).
    Reshape {
        shape: Vec<i64>,
    },
    /// Permute axes: output axis `i` is input axis `perm[i]`.
    Transpose {
        perm: Vec<usize>,
    },
    Binary(BinaryOp),
    /// Join along `axis` (channel concat of Inception is axis 1); all other dims equal.
    Concat {
        axis: i64,
    },
    /// Identity at inference; in training each element is zeroed with probability `ratio`
    /// (mask drawn from `seed`) and the rest scaled by `1/(1−ratio)`.
    Dropout {
        ratio: f32,
        seed: u64,
    },
    /// Batch norm at inference: `(x − mean)/√(var + ε)·scale + bias` per channel; inputs
    /// `x [N, C, …]`, `scale`, `bias`, `mean`, `var` all `[C]`.
    BatchNorm {
        epsilon: f32,
    },
    Loss(LossKind),
    Im2Col(Im2Col),
    Gemm(Gemm),
    /// `1/√(x + ε)` elementwise (batch-norm folding computes its scale with it).
    Rsqrt {
        epsilon: f32,
    },
}

/// How many inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arity {
    Exactly(usize),
    /// From `min` to `max` inclusive.
    Range(usize, usize),
    AtLeast(usize),
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Range(a, b) => (a..=b).contains(&n),
            Arity::AtLeast(a) => n >= a,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::Range(a, b) => write!(f, "{a} to {b}"),
            Arity::AtLeast(a) => write!(f, "at least {a}"),
        }
    }
}

impl Op {
    /// The op's name in the text IR (and in messages).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input(_) => "input",
            Op::Param { trainable: true, .. } => "param",
            Op::Param { trainable: false, .. } => "buffer",
            Op::Conv2d(_) => "conv2d",
            Op::ConvTranspose2d(_) => "conv_transpose2d",
            Op::Pool2d(p) => match p.kind {
                PoolKind::Max => "max_pool2d",
                PoolKind::Avg { .. } => "avg_pool2d",
                PoolKind::Sum => "sum_pool2d",
            },
            Op::GlobalPool(ReduceKind::Max) => "global_max_pool",
            Op::GlobalPool(ReduceKind::Avg) => "global_avg_pool",
            Op::AdaptivePool {
                kind: ReduceKind::Max,
                ..
            } => "adaptive_max_pool2d",
            Op::AdaptivePool {
                kind: ReduceKind::Avg,
                ..
            } => "adaptive_avg_pool2d",
            Op::Activation(a) => match a {
                Activation::Relu => "relu",
                Activation::LeakyRelu { .. } => "leaky_relu",
                Activation::Sigmoid => "sigmoid",
                Activation::Tanh => "tanh",
            },
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Dense => "dense",
            Op::MatMul => "matmul",
            Op::Flatten { .. } => "flatten",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Binary(b) => match b {
                BinaryOp::Add => "add",
                BinaryOp::Sub => "sub",
                BinaryOp::Mul => "mul",
                BinaryOp::Div => "div",
            },
            Op::Concat { .. } => "concat",
            Op::Dropout { .. } => "dropout",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Loss(l) => match l {
                LossKind::Mse => "mse_loss",
                LossKind::CrossEntropy => "cross_entropy_loss",
                LossKind::Nll => "nll_loss",
            },
            Op::Im2Col(_) => "im2col",
            Op::Gemm(_) => "gemm",
            Op::Rsqrt { .. } => "rsqrt",
        }
    }

    /// The number of inputs the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input(_) | Op::Param { .. } => Arity::Exactly(0),
            Op::Conv2d(_) | Op::ConvTranspose2d(_) | Op::Dense => Arity::Range(2, 3),
            Op::Pool2d(_)
            | Op::GlobalPool(_)
            | Op::AdaptivePool { .. }
            | Op::Activation(_)
            | Op::Softmax { .. }
            | Op::LogSoftmax { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Dropout { .. }
            | Op::Im2Col(_)
            | Op::Rsqrt { .. } => Arity::Exactly(1),
            Op::Gemm(_) => Arity::Range(2, 4),
            Op::MatMul | Op::Binary(_) | Op::Loss(_) => Arity::Exactly(2),
            Op::Concat { .. } => Arity::AtLeast(1),
            Op::BatchNorm { .. } => Arity::Exactly(5),
        }
    }

    /// Source ops (inputs and weights) carry their type; all others infer it.
    pub fn source_type(&self) -> Option<&TensorType> {
        match self {
            Op::Input(t) | Op::Param { ty: t, .. } => Some(t),
            _ => None,
        }
    }

    /// True for trainable weights.
    pub fn is_trainable_param(&self) -> bool {
        matches!(self, Op::Param { trainable: true, .. })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
