//! The text IR (`.kiln` files): a printer and a parser that round-trip.
//!
//! ```text
//! # comments run to the end of the line
//! graph lenet5 {
//!   input %input: f32[1, 1, 28, 28]
//!   param %conv1.weight: f32[6, 1, 5, 5]
//!   param %conv1.bias: f32[6]
//!   %conv1 = conv2d(%input, %conv1.weight, %conv1.bias) {padding=[2, 2, 2, 2]}: f32[1, 6, 28, 28]
//!   %relu1 = relu(%conv1)
//!   output %relu1
//! }
//! ```
//!
//! `input`, `param` (trainable weight) and `buffer` (stored, not trained) declare source nodes
//! with their type. A computed node is `%name = op(args) {attrs}` with an optional `: type`,
//! which, when present, must equal the inferred type. Attributes left out take their defaults;
//! the printer writes only those that differ from the default (and those that are required).

use crate::error::{IrError, ParseError};
use crate::graph::{Graph, NodeId};
use crate::op::{
    Activation, BnPart, Conv2d, ConvTranspose2d, LossKind, Op, Padding, Pool2d, PoolKind, ReduceKind,
    TrainOp, Update,
};
use crate::tensor::{DType, Shape, TensorType};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// An attribute value as written in the text IR.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// A number kept as written, so floats are parsed once, straight to their own type.
    Num(String),
    Ints(Vec<i64>),
    Ident(String),
}

fn int(v: impl std::fmt::Display) -> Attr {
    Attr::Num(v.to_string())
}

fn float(v: f32) -> Attr {
    // `{:?}` prints the shortest text that parses back to the same f32; `+inf` keeps an
    // infinite bound a number to the lexer (a bare `inf` would read as a name).
    if v == f32::INFINITY {
        return Attr::Num("+inf".into());
    }
    Attr::Num(format!("{v:?}"))
}

fn ints<T: Copy + Into<i64>>(v: &[T]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x.into()).collect())
}

fn usizes(v: &[usize]) -> Attr {
    Attr::Ints(v.iter().map(|&x| x as i64).collect())
}

fn padding_attr(p: Padding) -> Attr {
    match p {
        Padding::Explicit(p) => usizes(&p),
        Padding::Valid => Attr::Ident("valid".into()),
        Padding::SameUpper => Attr::Ident("same_upper".into()),
        Padding::SameLower => Attr::Ident("same_lower".into()),
    }
}

/// The attributes of `op` as the printer writes them (defaults left out, required ones kept).
pub fn op_attrs(op: &Op) -> Vec<(&'static str, Attr)> {
    let mut a = Vec::new();
    match op {
        Op::Input(_) | Op::Param { .. } => {}
        Op::Conv2d(c) => conv_attrs(c, &mut a),
        Op::ConvTranspose2d(c) => {
            let d = ConvTranspose2d::default();
            push_if(&mut a, "stride", c.stride != d.stride, usizes(&c.stride));
            push_if(&mut a, "dilation", c.dilation != d.dilation, usizes(&c.dilation));
            push_if(&mut a, "padding", c.padding != d.padding, usizes(&c.padding));
            push_if(
                &mut a,
                "output_padding",
                c.output_padding != d.output_padding,
                usizes(&c.output_padding),
            );
            push_if(&mut a, "groups", c.groups != d.groups, int(c.groups));
        }
        Op::Pool2d(p) | Op::Train(TrainOp::MaxPoolIds(p)) => pool_attrs(p, &mut a),
        Op::Train(TrainOp::Pool2dGrad { pool, input }) => {
            pool_attrs(pool, &mut a);
            a.push(("input", usizes(input)));
        }
        Op::Train(TrainOp::ConvWeightGrad { conv, kernel }) => {
            a.push(("kernel", usizes(kernel)));
            conv_attrs(conv, &mut a);
        }
        Op::Train(TrainOp::Rot180 { groups }) => push_if(&mut a, "groups", *groups != 1, int(groups)),
        Op::Train(TrainOp::DilatePad { stride, padding }) => {
            a.push(("stride", usizes(stride)));
            a.push(("padding", ints(padding)));
        }
        Op::Train(TrainOp::AdaptiveMaxPoolIds { output }) => a.push(("output", usizes(output))),
        Op::Train(TrainOp::ScatterIds { size }) => a.push(("size", usizes(size))),
        Op::Train(TrainOp::AdaptiveAvgPoolGrad { input }) => a.push(("input", usizes(input))),
        Op::Train(TrainOp::ActivationGrad(act)) => activation_params(&mut a, *act),
        Op::Train(TrainOp::SoftmaxGrad { axis }) | Op::Train(TrainOp::LogSoftmaxGrad { axis }) => {
            a.push(("axis", int(axis)))
        }
        Op::Train(TrainOp::ReduceSumTo { shape }) | Op::Train(TrainOp::BroadcastTo { shape }) => {
            a.push(("shape", usizes(shape)))
        }
        Op::Train(TrainOp::LrnGrad {
            size,
            alpha,
            beta,
            bias,
        }) => lrn_attrs(&mut a, *size, *alpha, *beta, *bias),
        Op::Train(TrainOp::LossGrad(_)) => {}
        Op::Slice { axis, start, end } => {
            a.push(("axis", int(axis)));
            a.push(("start", int(start)));
            a.push(("end", int(end)));
        }
        Op::Scale { factor } => a.push(("factor", float(*factor))),
        Op::Train(TrainOp::Update(u)) => match *u {
            Update::SgdVelocity {
                momentum,
                weight_decay,
            } => {
                a.push(("momentum", float(momentum)));
                a.push(("weight_decay", float(weight_decay)));
            }
            Update::SgdParam { lr, weight_decay } => {
                a.push(("lr", float(lr)));
                a.push(("weight_decay", float(weight_decay)));
            }
            Update::AdamMoment {
                beta,
                weight_decay,
                squared,
            } => {
                a.push(("beta", float(beta)));
                a.push(("weight_decay", float(weight_decay)));
                a.push(("squared", Attr::Ident(squared.to_string())));
            }
            Update::AdamParam {
                lr,
                beta1,
                beta2,
                eps,
            } => {
                a.push(("lr", float(lr)));
                a.push(("beta1", float(beta1)));
                a.push(("beta2", float(beta2)));
                a.push(("eps", float(eps)));
            }
            Update::Count => {}
        },
        Op::Train(TrainOp::BatchNormTrain { epsilon, .. }) => a.push(("epsilon", float(*epsilon))),
        Op::Train(TrainOp::DropoutTrain { ratio, seed }) => {
            a.push(("ratio", float(*ratio)));
            push_if(&mut a, "seed", *seed != 0, int(seed));
        }
        Op::GlobalPool(_) | Op::Dense | Op::MatMul | Op::Binary(_) | Op::Loss(_) => {}
        Op::AdaptivePool { output, .. } => a.push(("output", usizes(output))),
        Op::Activation(act) => activation_params(&mut a, *act),
        Op::Softmax { axis } | Op::LogSoftmax { axis } | Op::Concat { axis } => a.push(("axis", int(axis))),
        Op::Flatten { axis } => push_if(&mut a, "axis", *axis != 1, int(axis)),
        Op::Reshape { shape } => a.push(("shape", ints(shape))),
        Op::Transpose { perm } => a.push(("perm", usizes(perm))),
        Op::Dropout { ratio, seed } => {
            a.push(("ratio", float(*ratio)));
            push_if(&mut a, "seed", *seed != 0, int(seed));
        }
        Op::BatchNorm { epsilon, activation } => {
            a.push(("epsilon", float(*epsilon)));
            activation_attrs(&mut a, *activation);
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => lrn_attrs(&mut a, *size, *alpha, *beta, *bias),
        Op::ReduceMean { axes, keepdims } => {
            a.push(("axes", usizes(axes)));
            push_if(&mut a, "keepdims", !keepdims, Attr::Ident("false".into()));
        }
        Op::Im2Col(c) => {
            a.push(("kernel", usizes(&c.kernel)));
            push_if(&mut a, "stride", c.stride != [1, 1], usizes(&c.stride));
            push_if(&mut a, "dilation", c.dilation != [1, 1], usizes(&c.dilation));
            push_if(&mut a, "padding", c.padding != [0; 4], usizes(&c.padding));
        }
        Op::Gemm(g) => {
            push_if(&mut a, "groups", g.groups != 1, int(g.groups));
            push_if(&mut a, "bias", g.bias, Attr::Ident("true".into()));
            push_if(&mut a, "residual", g.residual, Attr::Ident("true".into()));
            activation_attrs(&mut a, g.activation);
        }
        Op::Rsqrt { epsilon } => push_if(&mut a, "epsilon", *epsilon != 0.0, float(*epsilon)),
    }
    a
}

/// The defaults of the activations' attributes (ONNX's).
const LEAKY_ALPHA: f32 = 0.01;
const HARD_SIGMOID_ALPHA: f32 = 0.2;
const HARD_SIGMOID_BETA: f32 = 0.5;
const LRN_ALPHA: f32 = 1e-4;
const LRN_BETA: f32 = 0.75;
const LRN_BIAS: f32 = 1.0;

/// An activation's own attributes (`alpha` of leaky relu, `min`/`max` of clip, …).
fn activation_params(a: &mut Vec<(&'static str, Attr)>, act: Activation) {
    match act {
        Activation::Relu
        | Activation::Sigmoid
        | Activation::Tanh
        | Activation::Erf
        | Activation::Silu
        | Activation::Gelu
        | Activation::HardSwish => {}
        Activation::LeakyRelu { alpha } => a.push(("alpha", float(alpha))),
        Activation::Clip { min, max } => {
            push_if(a, "min", min != f32::NEG_INFINITY, float(min));
            push_if(a, "max", max != f32::INFINITY, float(max));
        }
        Activation::HardSigmoid { alpha, beta } => {
            a.push(("alpha", float(alpha)));
            a.push(("beta", float(beta)));
        }
    }
}

/// A fused activation as the `activation` attribute and its own attributes.
fn activation_attrs(a: &mut Vec<(&'static str, Attr)>, act: Option<Activation>) {
    if let Some(act) = act {
        a.push(("activation", Attr::Ident(act.name().into())));
        activation_params(a, act);
    }
}

fn lrn_attrs(a: &mut Vec<(&'static str, Attr)>, size: usize, alpha: f32, beta: f32, bias: f32) {
    a.push(("size", int(size)));
    push_if(a, "alpha", alpha != LRN_ALPHA, float(alpha));
    push_if(a, "beta", beta != LRN_BETA, float(beta));
    push_if(a, "bias", bias != LRN_BIAS, float(bias));
}

fn conv_attrs(c: &Conv2d, a: &mut Vec<(&'static str, Attr)>) {
    let d = Conv2d::default();
    push_if(a, "stride", c.stride != d.stride, usizes(&c.stride));
    push_if(a, "dilation", c.dilation != d.dilation, usizes(&c.dilation));
    push_if(a, "padding", c.padding != d.padding, padding_attr(c.padding));
    push_if(a, "groups", c.groups != d.groups, int(c.groups));
    activation_attrs(a, c.activation);
}

fn pool_attrs(p: &Pool2d, a: &mut Vec<(&'static str, Attr)>) {
    a.push(("kernel", usizes(&p.kernel)));
    a.push(("stride", usizes(&p.stride)));
    push_if(a, "dilation", p.dilation != [1, 1], usizes(&p.dilation));
    push_if(
        a,
        "padding",
        p.padding != Padding::default(),
        padding_attr(p.padding),
    );
    push_if(a, "ceil_mode", p.ceil_mode, Attr::Ident("true".into()));
    if let PoolKind::Avg { count_include_pad } = p.kind {
        a.push(("count_include_pad", Attr::Ident(count_include_pad.to_string())));
    }
}

fn push_if(a: &mut Vec<(&'static str, Attr)>, name: &'static str, cond: bool, v: Attr) {
    if cond {
        a.push((name, v));
    }
}

/// Reads attributes by name, remembering which were used so unknown ones are reported.
struct Attrs {
    map: BTreeMap<String, Attr>,
    /// What the last error is about, so the parser can point at it.
    blame: Blame,
}

/// The part of a node an attribute error is about.
#[derive(Debug, Clone, PartialEq)]
enum Blame {
    /// The op (unknown op, missing attribute).
    Op,
    /// The value of this attribute (wrong kind, out of range).
    Value(String),
    /// The name of this attribute (not an attribute of the op).
    Key(String),
}

impl Attrs {
    fn take(&mut self, name: &str) -> Option<Attr> {
        let v = self.map.remove(name);
        self.blame = match v {
            Some(_) => Blame::Value(name.to_string()),
            None => Blame::Op,
        };
        v
    }
    fn uint(&mut self, name: &str, default: Option<usize>) -> Result<usize, String> {
        match self.take(name) {
            None => default.ok_or_else(|| format!("missing attribute `{name}`")),
            Some(Attr::Num(s)) => s
                .parse()
                .map_err(|_| format!("attribute `{name}` must be a non-negative integer, got `{s}`")),
            Some(v) => Err(format!(
                "attribute `{name}` must be a non-negative integer, got {}",
                show(&v)
            )),
        }
    }
    fn uint64(&mut self, name: &str, default: u64) -> Result<u64, String> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Num(s)) => s
                .parse()
                .map_err(|_| format!("attribute `{name}` must be a non-negative integer, got `{s}`")),
            Some(v) => Err(format!(
                "attribute `{name}` must be a non-negative integer, got {}",
                show(&v)
            )),
        }
    }
    fn sint(&mut self, name: &str, default: Option<i64>) -> Result<i64, String> {
        match self.take(name) {
            None => default.ok_or_else(|| format!("missing attribute `{name}`")),
            Some(Attr::Num(s)) => s
                .parse()
                .map_err(|_| format!("attribute `{name}` must be an integer, got `{s}`")),
            Some(v) => Err(format!("attribute `{name}` must be an integer, got {}", show(&v))),
        }
    }
    fn float(&mut self, name: &str, default: f32) -> Result<f32, String> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Num(s)) => s
                .parse()
                .map_err(|_| format!("attribute `{name}` must be a number, got `{s}`")),
            Some(v) => Err(format!("attribute `{name}` must be a number, got {}", show(&v))),
        }
    }
    fn boolean(&mut self, name: &str, default: bool) -> Result<bool, String> {
        match self.take(name) {
            None => Ok(default),
            Some(Attr::Ident(s)) if s == "true" => Ok(true),
            Some(Attr::Ident(s)) if s == "false" => Ok(false),
            Some(v) => Err(format!(
                "attribute `{name}` must be true or false, got {}",
                show(&v)
            )),
        }
    }
    fn list(&mut self, name: &str, len: usize, default: Option<Vec<i64>>) -> Result<Vec<i64>, String> {
        match self.take(name) {
            None => default.ok_or_else(|| format!("missing attribute `{name}`")),
            Some(Attr::Ints(v)) if v.len() == len || len == 0 => Ok(v),
            Some(v) => Err(format!(
                "attribute `{name}` must be a list of {} integers, got {}",
                if len == 0 {
                    "any number of".to_string()
                } else {
                    len.to_string()
                },
                show(&v)
            )),
        }
    }
    fn ulist<const N: usize>(
        &mut self,
        name: &str,
        default: Option<[usize; N]>,
    ) -> Result<[usize; N], String> {
        let v = self.list(name, N, default.map(|d| d.iter().map(|&x| x as i64).collect()))?;
        let mut out = [0usize; N];
        for (o, x) in out.iter_mut().zip(&v) {
            *o = usize::try_from(*x)
                .map_err(|_| format!("attribute `{name}` must not be negative, got {x}"))?;
        }
        Ok(out)
    }
    fn padding(&mut self, name: &str) -> Result<Padding, String> {
        match self.take(name) {
            None => Ok(Padding::default()),
            Some(Attr::Ident(s)) => match s.as_str() {
                "valid" => Ok(Padding::Valid),
                "same_upper" | "same" => Ok(Padding::SameUpper),
                "same_lower" => Ok(Padding::SameLower),
                _ => Err(format!(
                    "attribute `{name}` must be [top, left, bottom, right], valid, same_upper or same_lower, got `{s}`"
                )),
            },
            Some(v) => {
                self.map.insert(name.to_string(), v);
                Ok(Padding::Explicit(self.ulist(name, None)?))
            }
        }
    }
    /// The activation named `name` (`relu`, `clip`, …) with its own attributes, or `None`
    /// for a name that is no activation.
    fn activation_named(&mut self, name: &str) -> Result<Option<Activation>, String> {
        Ok(Some(match name {
            "relu" => Activation::Relu,
            "leaky_relu" => Activation::LeakyRelu {
                alpha: self.float("alpha", LEAKY_ALPHA)?,
            },
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "clip" => Activation::Clip {
                min: self.float("min", f32::NEG_INFINITY)?,
                max: self.float("max", f32::INFINITY)?,
            },
            "hard_sigmoid" => Activation::HardSigmoid {
                alpha: self.float("alpha", HARD_SIGMOID_ALPHA)?,
                beta: self.float("beta", HARD_SIGMOID_BETA)?,
            },
            "erf" => Activation::Erf,
            "silu" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "hard_swish" => Activation::HardSwish,
            _ => return Ok(None),
        }))
    }

    /// An optional fused `activation=NAME` with the activation's own attributes.
    fn activation(&mut self) -> Result<Option<Activation>, String> {
        let names = || {
            Activation::ALL
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.take("activation") {
            None => Ok(None),
            Some(Attr::Ident(s)) => match self.activation_named(&s)? {
                Some(a) => Ok(Some(a)),
                None => {
                    self.blame = Blame::Value("activation".into());
                    Err(format!(
                        "attribute `activation` must be one of {}, got `{s}`",
                        names()
                    ))
                }
            },
            Some(v) => Err(format!(
                "attribute `activation` must be one of {}, got {}",
                names(),
                show(&v)
            )),
        }
    }

    /// LRN's attributes (`lrn`, `lrn_grad`).
    fn lrn(&mut self) -> Result<(usize, f32, f32, f32), String> {
        Ok((
            self.uint("size", None)?,
            self.float("alpha", LRN_ALPHA)?,
            self.float("beta", LRN_BETA)?,
            self.float("bias", LRN_BIAS)?,
        ))
    }

    /// A list of non-negative integers (`shape`, `perm`, `axes`).
    fn usize_list(&mut self, name: &str) -> Result<Vec<usize>, String> {
        self.list(name, 0, None)?
            .iter()
            .map(|&d| {
                usize::try_from(d).map_err(|_| format!("attribute `{name}` must not be negative, got {d}"))
            })
            .collect()
    }

    /// A convolution's attributes (`conv2d`, `conv2d_weight_grad`).
    fn conv(&mut self) -> Result<Conv2d, String> {
        Ok(Conv2d {
            stride: self.ulist("stride", Some([1, 1]))?,
            dilation: self.ulist("dilation", Some([1, 1]))?,
            padding: self.padding("padding")?,
            groups: self.uint("groups", Some(1))?,
            activation: self.activation()?,
        })
    }

    /// A windowed pooling's attributes, of the given kind.
    fn pool(&mut self, kind: PoolKind) -> Result<Pool2d, String> {
        Ok(Pool2d {
            kind,
            kernel: self.ulist("kernel", None)?,
            stride: self.ulist("stride", None)?,
            dilation: self.ulist("dilation", Some([1, 1]))?,
            padding: self.padding("padding")?,
            ceil_mode: self.boolean("ceil_mode", false)?,
        })
    }

    fn finish(&mut self, op: &str) -> Result<(), String> {
        match self.map.keys().next() {
            Some(k) => {
                self.blame = Blame::Key(k.clone());
                Err(format!("`{op}` has no attribute `{k}`"))
            }
            None => Ok(()),
        }
    }
}

fn show(a: &Attr) -> String {
    match a {
        Attr::Num(s) | Attr::Ident(s) => format!("`{s}`"),
        Attr::Ints(v) => format!("{v:?}"),
    }
}

/// Every op name the text IR knows, for messages.
pub const OP_NAMES: &[&str] = &[
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "sum_pool2d",
    "global_max_pool",
    "global_avg_pool",
    "adaptive_max_pool2d",
    "adaptive_avg_pool2d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "clip",
    "hard_sigmoid",
    "erf",
    "softmax",
    "log_softmax",
    "dense",
    "matmul",
    "flatten",
    "reshape",
    "transpose",
    "add",
    "sub",
    "mul",
    "div",
    "concat",
    "dropout",
    "batch_norm",
    "lrn",
    "reduce_mean",
    "mse_loss",
    "cross_entropy_loss",
    "nll_loss",
    "im2col",
    "gemm",
    "rsqrt",
];

/// Forward ops that are not in [`OP_NAMES`] because kiln makes them rather than a model's
/// author: `slice` and `scale` (the ONNX importer's Split, Gather and Gemm scaling, and
/// autodiff's gradients).
pub const DERIVED_OP_NAMES: &[&str] = &["slice", "scale"];

/// The training ops' names (the backward graph and the optimizers), which the text IR also
/// reads and writes.
pub const TRAINING_OP_NAMES: &[&str] = &[
    "rot180",
    "dilate_pad2d",
    "conv2d_weight_grad",
    "max_pool2d_ids",
    "adaptive_max_pool2d_ids",
    "scatter_ids2d",
    "avg_pool2d_grad",
    "sum_pool2d_grad",
    "adaptive_avg_pool2d_grad",
    "relu_grad",
    "leaky_relu_grad",
    "sigmoid_grad",
    "tanh_grad",
    "clip_grad",
    "hard_sigmoid_grad",
    "erf_grad",
    "softmax_grad",
    "log_softmax_grad",
    "reduce_sum_to",
    "broadcast_to",
    "lrn_grad",
    "mse_loss_grad",
    "cross_entropy_loss_grad",
    "nll_loss_grad",
    "sgd_velocity",
    "sgd_param",
    "adam_moment",
    "adam_param",
    "step_count",
    "dropout_train",
    "batch_norm_train",
    "batch_norm_grad",
    "batch_norm_scale_grad",
    "batch_mean",
    "batch_var",
];

/// Builds the op named `name` from its attributes.
pub fn op_from_attrs(name: &str, map: BTreeMap<String, Attr>) -> Result<Op, String> {
    op_from_attrs_blamed(name, map).map_err(|(_, m)| m)
}

/// As [`op_from_attrs`]; an error also says which part of the node it is about.
fn op_from_attrs_blamed(name: &str, map: BTreeMap<String, Attr>) -> Result<Op, (Blame, String)> {
    let mut a = Attrs {
        map,
        blame: Blame::Op,
    };
    build_op(name, &mut a).map_err(|m| (a.blame, m))
}

fn build_op(name: &str, a: &mut Attrs) -> Result<Op, String> {
    let op = match name {
        "conv2d" => Op::Conv2d(a.conv()?),
        "conv_transpose2d" => Op::ConvTranspose2d(ConvTranspose2d {
            stride: a.ulist("stride", Some([1, 1]))?,
            dilation: a.ulist("dilation", Some([1, 1]))?,
            padding: a.ulist("padding", Some([0; 4]))?,
            output_padding: a.ulist("output_padding", Some([0; 2]))?,
            groups: a.uint("groups", Some(1))?,
        }),
        "max_pool2d" => Op::Pool2d(a.pool(PoolKind::Max)?),
        "sum_pool2d" => Op::Pool2d(a.pool(PoolKind::Sum)?),
        "avg_pool2d" => {
            let kind = PoolKind::Avg {
                count_include_pad: a.boolean("count_include_pad", false)?,
            };
            Op::Pool2d(a.pool(kind)?)
        }
        "rot180" => Op::Train(TrainOp::Rot180 {
            groups: a.uint("groups", Some(1))?,
        }),
        "dilate_pad2d" => Op::Train(TrainOp::DilatePad {
            stride: a.ulist("stride", None)?,
            padding: a
                .list("padding", 4, None)?
                .try_into()
                .map_err(|_| "padding needs 4 integers")?,
        }),
        "conv2d_weight_grad" => Op::Train(TrainOp::ConvWeightGrad {
            kernel: a.ulist("kernel", None)?,
            conv: a.conv()?,
        }),
        "max_pool2d_ids" => Op::Train(TrainOp::MaxPoolIds(a.pool(PoolKind::Max)?)),
        "adaptive_max_pool2d_ids" => Op::Train(TrainOp::AdaptiveMaxPoolIds {
            output: a.ulist("output", None)?,
        }),
        "scatter_ids2d" => Op::Train(TrainOp::ScatterIds {
            size: a.ulist("size", None)?,
        }),
        "sum_pool2d_grad" => Op::Train(TrainOp::Pool2dGrad {
            input: a.ulist("input", None)?,
            pool: a.pool(PoolKind::Sum)?,
        }),
        "avg_pool2d_grad" => {
            let kind = PoolKind::Avg {
                count_include_pad: a.boolean("count_include_pad", false)?,
            };
            Op::Train(TrainOp::Pool2dGrad {
                input: a.ulist("input", None)?,
                pool: a.pool(kind)?,
            })
        }
        "adaptive_avg_pool2d_grad" => Op::Train(TrainOp::AdaptiveAvgPoolGrad {
            input: a.ulist("input", None)?,
        }),
        "softmax_grad" => Op::Train(TrainOp::SoftmaxGrad {
            axis: a.sint("axis", Some(-1))?,
        }),
        "log_softmax_grad" => Op::Train(TrainOp::LogSoftmaxGrad {
            axis: a.sint("axis", Some(-1))?,
        }),
        "reduce_sum_to" => Op::Train(TrainOp::ReduceSumTo {
            shape: a.usize_list("shape")?,
        }),
        "broadcast_to" => Op::Train(TrainOp::BroadcastTo {
            shape: a.usize_list("shape")?,
        }),
        "lrn_grad" => {
            let (size, alpha, beta, bias) = a.lrn()?;
            Op::Train(TrainOp::LrnGrad {
                size,
                alpha,
                beta,
                bias,
            })
        }
        "mse_loss_grad" => Op::Train(TrainOp::LossGrad(LossKind::Mse)),
        "cross_entropy_loss_grad" => Op::Train(TrainOp::LossGrad(LossKind::CrossEntropy)),
        "nll_loss_grad" => Op::Train(TrainOp::LossGrad(LossKind::Nll)),
        "slice" => Op::Slice {
            axis: a.sint("axis", None)?,
            start: a.uint("start", None)?,
            end: a.uint("end", None)?,
        },
        "scale" => Op::Scale {
            factor: a.float("factor", 1.0)?,
        },
        "sgd_velocity" => Op::Train(TrainOp::Update(Update::SgdVelocity {
            momentum: a.float("momentum", 0.0)?,
            weight_decay: a.float("weight_decay", 0.0)?,
        })),
        "sgd_param" => Op::Train(TrainOp::Update(Update::SgdParam {
            lr: a.float("lr", 0.01)?,
            weight_decay: a.float("weight_decay", 0.0)?,
        })),
        "adam_moment" => Op::Train(TrainOp::Update(Update::AdamMoment {
            beta: a.float("beta", 0.9)?,
            weight_decay: a.float("weight_decay", 0.0)?,
            squared: a.boolean("squared", false)?,
        })),
        "adam_param" => Op::Train(TrainOp::Update(Update::AdamParam {
            lr: a.float("lr", 0.001)?,
            beta1: a.float("beta1", 0.9)?,
            beta2: a.float("beta2", 0.999)?,
            eps: a.float("eps", 1e-8)?,
        })),
        "step_count" => Op::Train(TrainOp::Update(Update::Count)),
        "batch_norm_train" | "batch_norm_grad" | "batch_norm_scale_grad" | "batch_mean" | "batch_var" => {
            let part = [
                BnPart::Forward,
                BnPart::GradX,
                BnPart::GradScale,
                BnPart::Mean,
                BnPart::Var,
            ]
            .into_iter()
            .find(|p| p.name() == name)
            .expect("one of the names matched");
            Op::Train(TrainOp::BatchNormTrain {
                part,
                epsilon: a.float("epsilon", 1e-5)?,
            })
        }
        "dropout_train" => Op::Train(TrainOp::DropoutTrain {
            ratio: a.float("ratio", 0.5)?,
            seed: a.uint64("seed", 0)?,
        }),
        "global_max_pool" => Op::GlobalPool(ReduceKind::Max),
        "global_avg_pool" => Op::GlobalPool(ReduceKind::Avg),
        "adaptive_max_pool2d" => Op::AdaptivePool {
            kind: ReduceKind::Max,
            output: a.ulist("output", None)?,
        },
        "adaptive_avg_pool2d" => Op::AdaptivePool {
            kind: ReduceKind::Avg,
            output: a.ulist("output", None)?,
        },
        "softmax" => Op::Softmax {
            axis: a.sint("axis", Some(-1))?,
        },
        "log_softmax" => Op::LogSoftmax {
            axis: a.sint("axis", Some(-1))?,
        },
        "dense" => Op::Dense,
        "matmul" => Op::MatMul,
        "flatten" => Op::Flatten {
            axis: a.sint("axis", Some(1))?,
        },
        "reshape" => Op::Reshape {
            shape: a.list("shape", 0, None)?,
        },
        "transpose" => Op::Transpose {
            perm: a.usize_list("perm")?,
        },
        "add" => Op::Binary(crate::op::BinaryOp::Add),
        "sub" => Op::Binary(crate::op::BinaryOp::Sub),
        "mul" => Op::Binary(crate::op::BinaryOp::Mul),
        "div" => Op::Binary(crate::op::BinaryOp::Div),
        "concat" => Op::Concat {
            axis: a.sint("axis", None)?,
        },
        "dropout" => Op::Dropout {
            ratio: a.float("ratio", 0.5)?,
            seed: a.uint64("seed", 0)?,
        },
        "batch_norm" => Op::BatchNorm {
            epsilon: a.float("epsilon", 1e-5)?,
            activation: a.activation()?,
        },
        "lrn" => {
            let (size, alpha, beta, bias) = a.lrn()?;
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            }
        }
        "reduce_mean" => Op::ReduceMean {
            axes: a.usize_list("axes")?,
            keepdims: a.boolean("keepdims", true)?,
        },
        "mse_loss" => Op::Loss(LossKind::Mse),
        "cross_entropy_loss" => Op::Loss(LossKind::CrossEntropy),
        "nll_loss" => Op::Loss(LossKind::Nll),
        "im2col" => Op::Im2Col(crate::op::Im2Col {
            kernel: a.ulist("kernel", None)?,
            stride: a.ulist("stride", Some([1, 1]))?,
            dilation: a.ulist("dilation", Some([1, 1]))?,
            padding: a.ulist("padding", Some([0; 4]))?,
        }),
        "gemm" => Op::Gemm(crate::op::Gemm {
            groups: a.uint("groups", Some(1))?,
            bias: a.boolean("bias", false)?,
            residual: a.boolean("residual", false)?,
            activation: a.activation()?,
        }),
        "rsqrt" => Op::Rsqrt {
            epsilon: a.float("epsilon", 0.0)?,
        },
        _ => {
            if let Some(act) = a.activation_named(name)? {
                Op::Activation(act)
            } else if let Some(act) = match name.strip_suffix("_grad") {
                Some(base) => a.activation_named(base)?,
                None => None,
            } {
                Op::Train(TrainOp::ActivationGrad(act))
            } else {
                a.blame = Blame::Op;
                return Err(format!(
                    "unknown op `{name}` (known ops: {}, {}; training ops: {})",
                    OP_NAMES.join(", "),
                    DERIVED_OP_NAMES.join(", "),
                    TRAINING_OP_NAMES.join(", ")
                ));
            }
        }
    };
    a.finish(name)?;
    Ok(op)
}

// ---------------------------------------------------------------------------------------------
// Printer

fn write_attr(out: &mut String, a: &Attr) {
    match a {
        Attr::Num(s) | Attr::Ident(s) => out.push_str(s),
        Attr::Ints(v) => {
            out.push('[');
            for (i, x) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{x}");
            }
            out.push(']');
        }
    }
}

/// Prints `graph` as text IR; `parse(&print(g))` gives back an equal graph.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "graph {} {{", graph.name);
    for id in graph.topo_order() {
        let n = graph.node(id);
        match &n.op {
            Op::Input(t) | Op::Param { ty: t, .. } => {
                let _ = writeln!(out, "  {} %{}: {}", n.op.name(), n.name, t);
            }
            op => {
                let _ = write!(out, "  %{} = {}(", n.name, op.name());
                for (i, inp) in graph.inputs(id).into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "%{}", graph.node(inp).name);
                }
                out.push(')');
                let attrs = op_attrs(op);
                if !attrs.is_empty() {
                    out.push_str(" {");
                    for (i, (k, v)) in attrs.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        let _ = write!(out, "{k}=");
                        write_attr(&mut out, v);
                    }
                    out.push('}');
                }
                let _ = writeln!(out, ": {}", n.ty);
            }
        }
    }
    for &o in graph.outputs() {
        let _ = writeln!(out, "  output %{}", graph.node(o).name);
    }
    out.push_str("}\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Ref(String),
    Num(String),
    Punct(char),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Ref(s) => format!("`%{s}`"),
            Tok::Num(s) => format!("number `{s}`"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Eof => "end of file".into(),
        }
    }
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn bump(&mut self) -> Option<u8> {
        let c = *self.src.get(self.pos)?;
        self.pos += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            self.col += 1;
        }
        Some(c)
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    /// The next token and its position, or an error message at a position.
    fn next(&mut self) -> Result<(Tok, usize, usize), (usize, usize, String)> {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() => {
                    self.bump();
                }
                Some(b'#') => {
                    self.take_while(|c| c != b'\n');
                }
                _ => break,
            }
        }
        let (line, col) = (self.line, self.col);
        let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'.';
        let tok = match self.peek() {
            None => Tok::Eof,
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => Tok::Ident(self.take_while(is_name)),
            Some(b'%') => {
                self.bump();
                let name = self.take_while(is_name);
                if name.is_empty() {
                    return Err((line, col, "expected a node name after `%`".into()));
                }
                Tok::Ref(name)
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => {
                let mut s = String::new();
                if c == b'-' || c == b'+' {
                    s.push(c as char);
                    self.bump();
                }
                s += &self.take_while(|c| c.is_ascii_alphanumeric() || c == b'.');
                // exponent sign, as in 1e-05
                while matches!(s.as_bytes().last(), Some(b'e' | b'E'))
                    && matches!(self.peek(), Some(b'-' | b'+'))
                {
                    s.push(self.bump().unwrap_or(b'-') as char);
                    s += &self.take_while(|c| c.is_ascii_alphanumeric() || c == b'.');
                }
                if s.parse::<f64>().is_err() || s == "-" || s == "+" {
                    return Err((line, col, format!("`{s}` is not a number")));
                }
                Tok::Num(s)
            }
            Some(c) if b"{}()[],=:".contains(&c) => {
                self.bump();
                Tok::Punct(c as char)
            }
            Some(_) => {
                let start = self.pos;
                self.bump();
                while self.peek().is_some_and(|c| c & 0xC0 == 0x80) {
                    self.bump();
                }
                let ch = String::from_utf8_lossy(&self.src[start..self.pos]).into_owned();
                return Err((line, col, format!("unexpected character `{ch}`")));
            }
        };
        Ok((tok, line, col))
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    lex: Lexer<'a>,
    file: String,
    tok: Tok,
    line: usize,
    col: usize,
}

type PResult<T> = Result<T, ParseError>;

impl<'a> Parser<'a> {
    fn err_at(&self, line: usize, column: usize, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    fn err(&self, message: impl Into<String>) -> ParseError {
        self.err_at(self.line, self.col, message)
    }

    fn advance(&mut self) -> PResult<Tok> {
        let (tok, line, col) = self.lex.next().map_err(|(l, c, m)| self.err_at(l, c, m))?;
        self.line = line;
        self.col = col;
        Ok(std::mem::replace(&mut self.tok, tok))
    }

    fn expected(&self, what: &str) -> ParseError {
        self.err(format!("expected {what}, found {}", self.tok.describe()))
    }

    fn punct(&mut self, c: char) -> PResult<()> {
        if self.tok == Tok::Punct(c) {
            self.advance()?;
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn eat(&mut self, c: char) -> PResult<bool> {
        if self.tok == Tok::Punct(c) {
            self.advance()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn ident(&mut self, what: &str) -> PResult<String> {
        match &self.tok {
            Tok::Ident(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(s)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn reference(&mut self, what: &str) -> PResult<String> {
        match &self.tok {
            Tok::Ref(s) => {
                let s = s.clone();
                self.advance()?;
                Ok(s)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn int_list(&mut self) -> PResult<Vec<i64>> {
        self.punct('[')?;
        let mut v = Vec::new();
        if self.eat(']')? {
            return Ok(v);
        }
        loop {
            match &self.tok {
                Tok::Num(s) => {
                    let x = s
                        .parse::<i64>()
                        .map_err(|_| self.err(format!("expected an integer, found `{s}`")))?;
                    v.push(x);
                    self.advance()?;
                }
                _ => return Err(self.expected("an integer")),
            }
            if self.eat(']')? {
                return Ok(v);
            }
            if !self.eat(',')? {
                return Err(self.expected("`,` or `]`"));
            }
        }
    }

    fn tensor_type(&mut self) -> PResult<TensorType> {
        let (line, col) = (self.line, self.col);
        let dtype = match self.ident("a type such as `f32[1, 3, 224, 224]`")?.as_str() {
            "f32" => DType::F32,
            "i32" => DType::I32,
            other => {
                return Err(self.err_at(
                    line,
                    col,
                    format!("unknown element type `{other}` (expected f32 or i32)"),
                ));
            }
        };
        // Dims are read as `usize`, not `i64`: a computed type may hold any `usize`.
        self.punct('[')?;
        let mut dims = Vec::new();
        if !self.eat(']')? {
            loop {
                match &self.tok {
                    Tok::Num(s) => {
                        let d = s.parse::<usize>().map_err(|_| match s.parse::<i64>() {
                            Ok(d) if d < 0 => self.err(format!("dimension {d} is negative")),
                            _ => self.err(format!(
                                "expected a dimension (an integer from 0 to {}), found `{s}`",
                                usize::MAX
                            )),
                        })?;
                        dims.push(d);
                        self.advance()?;
                    }
                    _ => return Err(self.expected("a dimension")),
                }
                if self.eat(']')? {
                    break;
                }
                if !self.eat(',')? {
                    return Err(self.expected("`,` or `]`"));
                }
            }
        }
        Ok(TensorType::new(dtype, Shape::from(dims)))
    }

    fn lookup(&self, g: &Graph, name: &str, line: usize, col: usize) -> PResult<NodeId> {
        g.find(name).ok_or_else(|| {
            self.err_at(
                line,
                col,
                format!("unknown node `%{name}` (nodes must be defined before use)"),
            )
        })
    }

    fn add(
        &self,
        g: &mut Graph,
        name: String,
        op: Op,
        inputs: &[NodeId],
        line: usize,
        col: usize,
    ) -> PResult<NodeId> {
        g.add(name, op, inputs).map_err(|e| match e {
            IrError::Parse(p) => p,
            e => self.err_at(line, col, e.to_string()),
        })
    }

    fn graph(&mut self) -> PResult<Graph> {
        let (line, col) = (self.line, self.col);
        let kw = self.ident("`graph`")?;
        if kw != "graph" {
            return Err(self.err_at(line, col, format!("expected `graph`, found `{kw}`")));
        }
        let mut g = Graph::new();
        g.name = self.ident("the graph's name")?;
        self.punct('{')?;
        let close;
        loop {
            let (line, col) = (self.line, self.col);
            match self.tok.clone() {
                Tok::Punct('}') => {
                    close = (line, col);
                    self.advance()?;
                    break;
                }
                Tok::Ident(kw) if kw == "input" || kw == "param" || kw == "buffer" => {
                    self.advance()?;
                    let (line, col) = (self.line, self.col);
                    let name = self.reference("a node name such as `%x`")?;
                    self.punct(':')?;
                    let ty = self.tensor_type()?;
                    let op = match kw.as_str() {
                        "input" => Op::Input(ty),
                        "param" => Op::Param { ty, trainable: true },
                        _ => Op::Param { ty, trainable: false },
                    };
                    self.add(&mut g, name, op, &[], line, col)?;
                }
                Tok::Ident(kw) if kw == "output" => {
                    self.advance()?;
                    let (l, c) = (self.line, self.col);
                    let name = self.reference("the output node, such as `%y`")?;
                    let id = self.lookup(&g, &name, l, c)?;
                    g.mark_output(id).map_err(|e| self.err_at(l, c, e.to_string()))?;
                }
                Tok::Ref(name) => {
                    self.advance()?;
                    self.punct('=')?;
                    let (ol, oc) = (self.line, self.col);
                    let op_name = self.ident("an op name")?;
                    self.punct('(')?;
                    let mut inputs = Vec::new();
                    if !self.eat(')')? {
                        loop {
                            let (l, c) = (self.line, self.col);
                            let r = self.reference("an argument such as `%x`")?;
                            inputs.push(self.lookup(&g, &r, l, c)?);
                            if self.eat(')')? {
                                break;
                            }
                            if !self.eat(',')? {
                                return Err(self.expected("`,` or `)`"));
                            }
                        }
                    }
                    let mut attrs = BTreeMap::new();
                    let mut places = BTreeMap::new();
                    if self.eat('{')? && !self.eat('}')? {
                        loop {
                            let (l, c) = (self.line, self.col);
                            let key = self.ident("an attribute name")?;
                            self.punct('=')?;
                            places.insert(key.clone(), ((l, c), (self.line, self.col)));
                            let value = match self.tok.clone() {
                                Tok::Num(s) => {
                                    self.advance()?;
                                    Attr::Num(s)
                                }
                                Tok::Ident(s) => {
                                    self.advance()?;
                                    Attr::Ident(s)
                                }
                                Tok::Punct('[') => Attr::Ints(self.int_list()?),
                                _ => return Err(self.expected("an attribute value")),
                            };
                            if attrs.insert(key.clone(), value).is_some() {
                                return Err(self.err_at(l, c, format!("attribute `{key}` given twice")));
                            }
                            if self.eat('}')? {
                                break;
                            }
                            if !self.eat(',')? {
                                return Err(self.expected("`,` or `}`"));
                            }
                        }
                    }
                    let op = op_from_attrs_blamed(&op_name, attrs).map_err(|(blame, m)| {
                        let ((kl, kc), (vl, vc)) = match &blame {
                            Blame::Op => ((ol, oc), (ol, oc)),
                            Blame::Key(k) | Blame::Value(k) => {
                                places.get(k).copied().unwrap_or(((ol, oc), (ol, oc)))
                            }
                        };
                        match blame {
                            Blame::Key(_) => self.err_at(kl, kc, m),
                            _ => self.err_at(vl, vc, m),
                        }
                    })?;
                    let declared = if self.eat(':')? {
                        let (l, c) = (self.line, self.col);
                        Some((self.tensor_type()?, l, c))
                    } else {
                        None
                    };
                    let id = self.add(&mut g, name, op, &inputs, line, col)?;
                    if let Some((ty, l, c)) = declared
                        && ty != g.node(id).ty
                    {
                        return Err(self.err_at(
                            l,
                            c,
                            format!(
                                "node `{}`: declared type {ty} differs from the inferred type {}",
                                g.node(id).name,
                                g.node(id).ty
                            ),
                        ));
                    }
                }
                _ => return Err(self.expected("`input`, `param`, `buffer`, `output`, `%name = …` or `}`")),
            }
        }
        if self.tok != Tok::Eof {
            return Err(self.expected("end of file after the graph's `}`"));
        }
        if g.outputs().is_empty() {
            return Err(self.err_at(
                close.0,
                close.1,
                format!("graph `{}` declares no `output` before its closing `}}`", g.name),
            ));
        }
        Ok(g)
    }
}

/// Parses text IR. `file` names the source in error messages.
pub fn parse_named(src: &str, file: &str) -> Result<Graph, ParseError> {
    let mut p = Parser {
        lex: Lexer {
            src: src.as_bytes(),
            pos: 0,
            line: 1,
            col: 1,
        },
        file: file.to_string(),
        tok: Tok::Eof,
        line: 1,
        col: 1,
    };
    p.advance()?;
    p.graph()
}

/// Parses text IR; errors name the source `<text>`.
pub fn parse(src: &str) -> Result<Graph, ParseError> {
    parse_named(src, "<text>")
}
