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
    /// `min(max(x, min), max)`; either bound may be infinite (ReLU6 is `Clip { min: 0, max: 6 }`).
    /// NaN stays NaN.
    Clip {
        min: f32,
        max: f32,
    },
    /// `max(0, min(1, alpha·x + beta))` (ONNX `HardSigmoid`; HardSwish is
    /// `x · HardSigmoid { alpha: 1/6, beta: 1/2 }(x)`).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// The error function `erf x = 2/√π ∫₀ˣ e^{−t²} dt` (exact GELU is
    /// `x · (1 + erf(x/√2)) / 2`).
    Erf,
    /// SiLU (swish): `x · sigmoid(x)`. The `silu` pass makes it of `Mul(x, Sigmoid(x))`, the
    /// form ONNX exports of PyTorch's `SiLU` take, so that a convolution can finish with it.
    Silu,
    /// Exact GELU, `(x + x·erf(x·c))·0.5` with `c` the f32 nearest `1/√2`, in that order of
    /// operations (ONNX `Gelu`, PyTorch's default `nn.GELU`): the bits of the five nodes
    /// `scale`, `erf`, `mul`, `add`, `scale` it stands for, which a matrix product or a
    /// convolution can finish with.
    Gelu,
    /// HardSwish, `x · HardSigmoid { alpha: 1/6, beta: 1/2 }(x)` (ONNX `HardSwish`, the
    /// MobileNet v3 activation): the bits of that product.
    HardSwish,
}

impl Activation {
    /// The activation's name in the text IR (`relu`, `clip`, …); its backward is this name
    /// followed by `_grad`.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Clip { .. } => "clip",
            Activation::HardSigmoid { .. } => "hard_sigmoid",
            Activation::Erf => "erf",
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::HardSwish => "hard_swish",
        }
    }

    /// The name of the activation's backward (`ActivationGrad`).
    pub fn grad_name(self) -> &'static str {
        match self {
            Activation::Relu => "relu_grad",
            Activation::LeakyRelu { .. } => "leaky_relu_grad",
            Activation::Sigmoid => "sigmoid_grad",
            Activation::Tanh => "tanh_grad",
            Activation::Clip { .. } => "clip_grad",
            Activation::HardSigmoid { .. } => "hard_sigmoid_grad",
            Activation::Erf => "erf_grad",
            Activation::Silu => "silu_grad",
            Activation::Gelu => "gelu_grad",
            Activation::HardSwish => "hard_swish_grad",
        }
    }

    /// Whether the backward reads the forward *input* `x` rather than the output `y`: erf,
    /// whose slope `2/√π·e^{−x²}` cannot be recovered from a saturated output, and SiLU,
    /// which is not one-to-one (its slope `s·(1 + x·(1 − s))`, `s = sigmoid(x)`, needs `x`),
    /// and GELU and HardSwish, not one-to-one either.
    pub fn grad_from_input(self) -> bool {
        matches!(
            self,
            Activation::Erf | Activation::Silu | Activation::Gelu | Activation::HardSwish
        )
    }

    /// GELU's `c`, the f32 nearest `1/√2` (`Activation::Gelu`).
    pub const GELU_C: f32 = std::f32::consts::FRAC_1_SQRT_2;

    /// The `alpha` and `beta` of HardSwish's hard sigmoid (`Activation::HardSwish`).
    pub const HARD_SWISH: [f32; 2] = [1.0 / 6.0, 0.5];

    /// All activations, in declaration order, with placeholder attributes (for tests and
    /// name tables).
    pub const ALL: [Activation; 10] = [
        Activation::Relu,
        Activation::LeakyRelu { alpha: 0.01 },
        Activation::Sigmoid,
        Activation::Tanh,
        Activation::Clip { min: 0.0, max: 6.0 },
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::Erf,
        Activation::Silu,
        Activation::Gelu,
        Activation::HardSwish,
    ];
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

/// A parameter update of an optimizer, one state tensor per op (PyTorch's `SGD` and `Adam`).
/// Every input and the output has the parameter's shape, except Adam's step count `t`, a
/// scalar `f32[]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// `v' = momentum·v + g + weight_decay·p`; inputs `(p, g, v)`.
    SgdVelocity { momentum: f32, weight_decay: f32 },
    /// `p' = p − lr·(d + weight_decay·p)`; inputs `(p, d)` where `d` is the gradient (plain
    /// SGD) or the new velocity (momentum, whose decay is already in it: `weight_decay = 0`).
    SgdParam { lr: f32, weight_decay: f32 },
    /// `m' = beta·m + (1 − beta)·(g + weight_decay·p)`, squared (`(g + weight_decay·p)²`)
    /// for Adam's second moment; inputs `(p, g, m)`.
    AdamMoment {
        beta: f32,
        weight_decay: f32,
        squared: bool,
    },
    /// `p' = p − lr·(m/(1 − beta1ᵗ)) / (√(v/(1 − beta2ᵗ)) + eps)`; inputs `(p, m, v, t)`
    /// with the new moments and the new step count.
    AdamParam {
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
    },
    /// `t' = t + 1`; input the scalar step count `t`.
    Count,
}

impl Update {
    pub fn name(&self) -> &'static str {
        match self {
            Update::SgdVelocity { .. } => "sgd_velocity",
            Update::SgdParam { .. } => "sgd_param",
            Update::AdamMoment { .. } => "adam_moment",
            Update::AdamParam { .. } => "adam_param",
            Update::Count => "step_count",
        }
    }
    pub fn arity(&self) -> usize {
        match self {
            Update::SgdVelocity { .. } | Update::AdamMoment { .. } => 3,
            Update::SgdParam { .. } => 2,
            Update::AdamParam { .. } => 4,
            Update::Count => 1,
        }
    }
}

/// The pieces of batch norm in training mode, over the batch statistics of `x [N, C, …]`
/// per channel `c` (all axes but 1, `M` elements): `μ = Σx/M`, `σ² = Σ(x − μ)²/M`,
/// `x̂ = (x − μ)/√(σ² + ε)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BnPart {
    /// `y = scale·x̂ + bias`; inputs `(x, scale, bias)`.
    Forward,
    /// `dx = scale/√(σ² + ε)·(dy − mean(dy) − x̂·mean(dy·x̂))`; inputs `(x, scale, dy)`.
    GradX,
    /// `dscale = Σ dy·x̂`, shape `[C]`; inputs `(x, dy)`.
    GradScale,
    /// `μ`, shape `[C]` (for the running mean); input `x`.
    Mean,
    /// The unbiased variance `Σ(x − μ)²/(M − 1)`, shape `[C]` (for the running variance, as
    /// PyTorch); input `x`.
    Var,
}

impl BnPart {
    pub fn name(self) -> &'static str {
        match self {
            BnPart::Forward => "batch_norm_train",
            BnPart::GradX => "batch_norm_grad",
            BnPart::GradScale => "batch_norm_scale_grad",
            BnPart::Mean => "batch_mean",
            BnPart::Var => "batch_var",
        }
    }
    pub fn arity(self) -> usize {
        match self {
            BnPart::Forward | BnPart::GradX => 3,
            BnPart::GradScale => 2,
            BnPart::Mean | BnPart::Var => 1,
        }
    }
}

/// One operator of the graph IR.
///
/// The training-only ops are nested in [`Op::Train`] ([`TrainOp`]).
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
    /// Batch norm at inference: `(x − mean)/√(var + ε)·scale + bias` per channel, then the
    /// `activation` when there is one (the `fusion` pass puts the activation that follows
    /// a batch norm there, a pre-activation network's `relu(bn(x))`); inputs `x [N, C, …]`,
    /// `scale`, `bias`, `mean`, `var` all `[C]`.
    BatchNorm {
        epsilon: f32,
        activation: Option<Activation>,
    },
    /// Local response normalization across channels (ONNX `LRN`, AlexNet) of `x [N, C, …]`:
    /// `y[n, c, …] = x[n, c, …] / (bias + alpha/size · Σ_{c'} x[n, c', …]²)^beta` with `c'`
    /// over `[max(0, c − ⌊(size−1)/2⌋), min(C−1, c + ⌈(size−1)/2⌉)]`. `size ≥ 1`, `alpha ≥ 0`,
    /// `beta` finite and `bias` a positive normal f32 (at least 1.2e-38), so the base is a
    /// positive normal number.
    Lrn {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// The mean over `axes` (non-negative, strictly increasing, at least one, each of a
    /// non-empty axis); `keepdims` keeps them as size-1 axes, else they are removed.
    ReduceMean {
        axes: Vec<usize>,
        keepdims: bool,
    },
    Loss(LossKind),
    Im2Col(Im2Col),
    Gemm(Gemm),
    /// `1/√(x + ε)` elementwise (batch-norm folding computes its scale with it).
    Rsqrt {
        epsilon: f32,
    },
    /// Elements `start..end` of `x` along `axis` (the gradient of concat).
    Slice {
        axis: i64,
        start: usize,
        end: usize,
    },
    /// `factor·x`.
    Scale {
        factor: f32,
    },
    /// A training-only op: the backward graph's ops and the optimizers' updates.
    Train(TrainOp),
}

/// The training-only ops: the backward graph that `kiln-autodiff` builds (each is the
/// gradient of a forward op that is not itself a forward op) and the optimizers' parameter
/// updates. Nested in [`Op::Train`] so that code which treats them all alike matches one arm.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainOp {
    /// A convolution kernel `w [C_out, C/groups, kh, kw]` rotated by 180° in space with input
    /// and output channels swapped, group by group: `[C, C_out/groups, kh, kw]` with
    /// `y[g·cg + c, o, i, j] = w[g·cog + o, c, kh−1−i, kw−1−j]` (`cg = C/groups`,
    /// `cog = C_out/groups`). The kernel of a convolution's data gradient.
    Rot180 { groups: usize },
    /// Zero insertion and padding of `x [N, C, H, W]`: `stride − 1` zeros between neighbours
    /// on each spatial axis, then `padding` `[top, left, bottom, right]` zeros added (a
    /// negative amount crops). Output `(H−1)·s + 1 + top + bottom` (same for `W`). The
    /// stride-dilated, padded delta of a convolution's data gradient.
    DilatePad { stride: [usize; 2], padding: [i64; 4] },
    /// The weight gradient of `Conv2d(conv)` with a `kernel`-sized kernel: inputs the layer
    /// input `x [N, C, H, W]` and the output delta `dy [N, C_out, OH, OW]`, output
    /// `dw [C_out, C/groups, kh, kw]` with
    /// `dw[o, c, i, j] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x[n, g·cg + c, oh·s_h + i·d_h − p_top, ow·s_w + j·d_w − p_left]`
    /// (the correlation of the input with the delta; padding reads zero).
    ConvWeightGrad { conv: Conv2d, kernel: [usize; 2] },
    /// The in-plane index `ih·W + iw` of each window's maximum of max pooling `Pool2d`
    /// (ties: the first maximum in row-major window order), `i32` of the pooled shape.
    MaxPoolIds(Pool2d),
    /// As `MaxPoolIds`, for adaptive max pooling to `output` (global max pooling is `[1, 1]`).
    AdaptiveMaxPoolIds { output: [usize; 2] },
    /// Max pooling's backward: inputs `dy [N, C, OH, OW]` and the window maxima's ids (same
    /// shape, `i32`); output `[N, C, size[0], size[1]]` where each `dy` element is added at its
    /// id (overlapping windows accumulate).
    ScatterIds { size: [usize; 2] },
    /// The backward of average or sum pooling `pool` over an input of spatial size `input`:
    /// each delta is shared among its window's real inputs (divided by the count the forward
    /// pass divided by; sum pooling: not divided).
    Pool2dGrad { pool: Pool2d, input: [usize; 2] },
    /// The backward of adaptive average pooling (global average pooling is `[1, 1]`) from
    /// `dy [N, C, OH, OW]` to an input of spatial size `input`.
    AdaptiveAvgPoolGrad { input: [usize; 2] },
    /// The backward of an activation from its forward *output* `y` and the delta `dy`:
    /// relu `dy·[y > 0]`, leaky relu `dy·(y > 0 ? 1 : alpha)` (exact for `alpha > 0`),
    /// sigmoid `dy·y·(1 − y)`, tanh `dy·(1 − y²)`, clip `dy·[min < y < max]`, hard sigmoid
    /// `dy·alpha·[0 < y < 1]`. Inputs `(y, dy)`; erf's slope is not a function of a saturated
    /// output, so erf's backward takes the forward *input*: `dy·2/√π·e^{−x²}`, inputs `(x, dy)`
    /// ([`Activation::grad_from_input`]).
    ActivationGrad(Activation),
    /// Softmax's backward from its output: `dx = y·(dy − Σ_axis dy·y)`. Inputs `(y, dy)`.
    SoftmaxGrad { axis: i64 },
    /// Log-softmax's backward from its output: `dx = dy − exp(y)·Σ_axis dy`. Inputs `(y, dy)`.
    LogSoftmaxGrad { axis: i64 },
    /// Sums `x` down to `shape`, which broadcasts to `x`'s shape (NumPy rules): the gradient
    /// of a broadcast operand.
    ReduceSumTo { shape: Vec<usize> },
    /// Repeats `x` along its size-1 (and missing leading) axes up to `shape` (NumPy
    /// broadcasting; `x`'s shape must broadcast to `shape`, and the output is `shape`): the
    /// adjoint of `ReduceSumTo`, the gradient of a reduction.
    BroadcastTo { shape: Vec<usize> },
    /// The backward of `Lrn` (same attributes) from the forward input `x` and the delta `dy`
    /// (inputs `(x, dy)`), with `s_c = bias + alpha/size·Σ_{c' ∈ W(c)} x_{c'}²` the base at
    /// channel `c` (other indices fixed):
    /// `dx_k = dy_k·s_k^{−beta} − 2·alpha·beta/size · x_k · Σ_{c : k ∈ W(c)} dy_c·x_c·s_c^{−beta−1}`,
    /// where `k ∈ W(c)` for `c` in `[k − ⌈(size−1)/2⌉, k + ⌊(size−1)/2⌋]` (clipped to the channels).
    LrnGrad {
        size: usize,
        alpha: f32,
        beta: f32,
        bias: f32,
    },
    /// The gradient of `Loss(kind)` with respect to its prediction (the loss's own delta is
    /// 1): mse `2·(a − y)/numel`; cross-entropy `(softmax(z) − y)/N`; nll `−y/N` (class ids
    /// as one-hot rows). Inputs as the loss's; output the prediction's type.
    LossGrad(LossKind),
    /// An optimizer's update of one parameter or state tensor.
    Update(Update),
    /// Dropout in training mode: `x · keep / (1 − ratio)` where `keep` is 0 for a fraction
    /// `ratio` of the elements, drawn from `seed`, the step count `step` (input 1, `f32[]`)
    /// and the element's index ([`dropout_keep`]). Applied to the delta with the same seed and
    /// step it is its own backward (the same mask).
    DropoutTrain { ratio: f32, seed: u64 },
    /// Batch norm in training mode (batch statistics), one op per piece ([`BnPart`]).
    BatchNormTrain { part: BnPart, epsilon: f32 },
}

/// Whether training-mode dropout keeps element `index` at step `step` (the one mask formula,
/// shared by the interpreter and the JIT): a SplitMix64 hash of
/// `seed + step·0xD1B54A32D192ED03 + index·0x9E3779B97F4A7C15`, kept when its top 24 bits are
/// at least `⌊ratio·2²⁴⌋`.
pub fn dropout_keep(seed: u64, step: u64, index: u64, ratio: f32) -> bool {
    let x = seed
        .wrapping_add(step.wrapping_mul(DROPOUT_STEP_MUL))
        .wrapping_add(index.wrapping_mul(DROPOUT_INDEX_MUL));
    (splitmix64(x) >> 40) >= dropout_threshold(ratio)
}

/// The multipliers and the finalizer of [`dropout_keep`].
pub const DROPOUT_STEP_MUL: u64 = 0xD1B5_4A32_D192_ED03;
pub const DROPOUT_INDEX_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finalizer of `x + 0x9E3779B97F4A7C15`.
pub fn splitmix64(x: u64) -> u64 {
    let z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `⌊ratio·2²⁴⌋`: a 24-bit hash below it drops the element.
pub fn dropout_threshold(ratio: f32) -> u64 {
    (f64::from(ratio.clamp(0.0, 1.0)) * 16_777_216.0) as u64
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
            Op::Activation(a) => a.name(),
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
            Op::Lrn { .. } => "lrn",
            Op::ReduceMean { .. } => "reduce_mean",
            Op::Loss(l) => match l {
                LossKind::Mse => "mse_loss",
                LossKind::CrossEntropy => "cross_entropy_loss",
                LossKind::Nll => "nll_loss",
            },
            Op::Im2Col(_) => "im2col",
            Op::Gemm(_) => "gemm",
            Op::Rsqrt { .. } => "rsqrt",
            Op::Slice { .. } => "slice",
            Op::Scale { .. } => "scale",
            Op::Train(t) => t.name(),
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
            | Op::Rsqrt { .. }
            | Op::Lrn { .. }
            | Op::ReduceMean { .. }
            | Op::Slice { .. }
            | Op::Scale { .. } => Arity::Exactly(1),
            Op::Gemm(_) => Arity::Range(2, 4),
            Op::MatMul | Op::Binary(_) | Op::Loss(_) => Arity::Exactly(2),
            Op::Concat { .. } => Arity::AtLeast(1),
            Op::BatchNorm { .. } => Arity::Exactly(5),
            Op::Train(t) => t.arity(),
        }
    }

    /// Source ops (inputs and weights) carry their type; all others infer it.
    pub fn source_type(&self) -> Option<&TensorType> {
        match self {
            Op::Input(t) | Op::Param { ty: t, .. } => Some(t),
            _ => None,
        }
    }

    /// True for the ops of the backward graph and the optimizers' updates ([`Op::Train`]).
    pub fn is_training(&self) -> bool {
        matches!(self, Op::Train(_))
    }

    /// True for trainable weights.
    pub fn is_trainable_param(&self) -> bool {
        matches!(self, Op::Param { trainable: true, .. })
    }
}

impl TrainOp {
    /// The op's name in the text IR (and in messages).
    pub fn name(&self) -> &'static str {
        match self {
            TrainOp::Rot180 { .. } => "rot180",
            TrainOp::DilatePad { .. } => "dilate_pad2d",
            TrainOp::ConvWeightGrad { .. } => "conv2d_weight_grad",
            TrainOp::MaxPoolIds(_) => "max_pool2d_ids",
            TrainOp::AdaptiveMaxPoolIds { .. } => "adaptive_max_pool2d_ids",
            TrainOp::ScatterIds { .. } => "scatter_ids2d",
            TrainOp::Pool2dGrad { pool, .. } => match pool.kind {
                PoolKind::Sum => "sum_pool2d_grad",
                PoolKind::Avg { .. } | PoolKind::Max => "avg_pool2d_grad",
            },
            TrainOp::AdaptiveAvgPoolGrad { .. } => "adaptive_avg_pool2d_grad",
            TrainOp::ActivationGrad(a) => a.grad_name(),
            TrainOp::SoftmaxGrad { .. } => "softmax_grad",
            TrainOp::LogSoftmaxGrad { .. } => "log_softmax_grad",
            TrainOp::ReduceSumTo { .. } => "reduce_sum_to",
            TrainOp::BroadcastTo { .. } => "broadcast_to",
            TrainOp::LrnGrad { .. } => "lrn_grad",
            TrainOp::LossGrad(l) => match l {
                LossKind::Mse => "mse_loss_grad",
                LossKind::CrossEntropy => "cross_entropy_loss_grad",
                LossKind::Nll => "nll_loss_grad",
            },
            TrainOp::Update(u) => u.name(),
            TrainOp::DropoutTrain { .. } => "dropout_train",
            TrainOp::BatchNormTrain { part, .. } => part.name(),
        }
    }

    /// The number of inputs the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            TrainOp::Rot180 { .. }
            | TrainOp::DilatePad { .. }
            | TrainOp::MaxPoolIds(_)
            | TrainOp::AdaptiveMaxPoolIds { .. }
            | TrainOp::Pool2dGrad { .. }
            | TrainOp::AdaptiveAvgPoolGrad { .. }
            | TrainOp::ReduceSumTo { .. }
            | TrainOp::BroadcastTo { .. } => Arity::Exactly(1),
            TrainOp::ConvWeightGrad { .. }
            | TrainOp::ScatterIds { .. }
            | TrainOp::ActivationGrad(_)
            | TrainOp::SoftmaxGrad { .. }
            | TrainOp::LogSoftmaxGrad { .. }
            | TrainOp::LossGrad(_)
            | TrainOp::LrnGrad { .. }
            | TrainOp::DropoutTrain { .. } => Arity::Exactly(2),
            TrainOp::Update(u) => Arity::Exactly(u.arity()),
            TrainOp::BatchNormTrain { part, .. } => Arity::Exactly(part.arity()),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
