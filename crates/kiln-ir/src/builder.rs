//! A builder for networks in Rust: layers create their own weights (`conv1.weight`,
//! `conv1.bias`, …) and nodes get readable names (`relu_3`) unless given one with [`Network::named`].
//!
//! ```
//! use kiln_ir::builder::{Conv, Network};
//! let mut net = Network::new("tiny");
//! let x = net.input("input", [1, 1, 28, 28])?;
//! let h = net.named("conv1").conv2d(x, Conv::new(6, [5, 5]).padding(2))?;
//! let h = net.relu(h)?;
//! let h = net.max_pool2d(h, [2, 2], [2, 2])?;
//! let h = net.flatten(h)?;
//! let y = net.named("output").dense(h, 10)?;
//! net.output(y)?;
//! let graph = net.finish()?;
//! assert_eq!(graph.node(y).ty.dims(), &[1, 10]);
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

use crate::error::{IrError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{
    Activation, BinaryOp, Conv2d, ConvTranspose2d, LossKind, Op, Padding, Pool2d, PoolKind, ReduceKind,
};
use crate::tensor::{Shape, TensorType};
use std::collections::HashMap;

/// A convolution layer: output channels, kernel, and the `Conv2d` attributes.
#[derive(Debug, Clone)]
pub struct Conv {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub attrs: Conv2d,
    pub bias: bool,
}

impl Conv {
    pub fn new(out_channels: usize, kernel: [usize; 2]) -> Conv {
        Conv {
            out_channels,
            kernel,
            attrs: Conv2d::default(),
            bias: true,
        }
    }
    pub fn stride(mut self, s: usize) -> Conv {
        self.attrs.stride = [s, s];
        self
    }
    /// The same padding on every side.
    pub fn padding(mut self, p: usize) -> Conv {
        self.attrs.padding = Padding::uniform(p);
        self
    }
    pub fn pad(mut self, p: Padding) -> Conv {
        self.attrs.padding = p;
        self
    }
    pub fn dilation(mut self, d: usize) -> Conv {
        self.attrs.dilation = [d, d];
        self
    }
    pub fn groups(mut self, g: usize) -> Conv {
        self.attrs.groups = g;
        self
    }
    pub fn bias(mut self, b: bool) -> Conv {
        self.bias = b;
        self
    }
}

/// A transposed convolution layer.
#[derive(Debug, Clone)]
pub struct ConvTranspose {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub attrs: ConvTranspose2d,
    pub bias: bool,
}

impl ConvTranspose {
    pub fn new(out_channels: usize, kernel: [usize; 2]) -> ConvTranspose {
        ConvTranspose {
            out_channels,
            kernel,
            attrs: ConvTranspose2d::default(),
            bias: true,
        }
    }
    pub fn stride(mut self, s: usize) -> ConvTranspose {
        self.attrs.stride = [s, s];
        self
    }
    pub fn padding(mut self, p: usize) -> ConvTranspose {
        self.attrs.padding = [p; 4];
        self
    }
    pub fn output_padding(mut self, p: usize) -> ConvTranspose {
        self.attrs.output_padding = [p, p];
        self
    }
    pub fn dilation(mut self, d: usize) -> ConvTranspose {
        self.attrs.dilation = [d, d];
        self
    }
    pub fn groups(mut self, g: usize) -> ConvTranspose {
        self.attrs.groups = g;
        self
    }
    pub fn bias(mut self, b: bool) -> ConvTranspose {
        self.bias = b;
        self
    }
}

/// Builds a [`Graph`] layer by layer.
#[derive(Debug, Default)]
pub struct Network {
    graph: Graph,
    next_name: Option<String>,
    counters: HashMap<&'static str, usize>,
}

impl Network {
    pub fn new(name: impl Into<String>) -> Network {
        let mut graph = Graph::new();
        graph.name = name.into();
        Network {
            graph,
            ..Network::default()
        }
    }

    /// Names the next layer (its weights are named `NAME.weight`, …).
    pub fn named(&mut self, name: impl Into<String>) -> &mut Network {
        self.next_name = Some(name.into());
        self
    }

    fn name_for(&mut self, kind: &'static str) -> String {
        if let Some(n) = self.next_name.take() {
            return n;
        }
        loop {
            let c = self.counters.entry(kind).or_insert(0);
            *c += 1;
            let candidate = format!("{kind}_{c}");
            if self.graph.find(&candidate).is_none() {
                return candidate;
            }
        }
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The type of a node already in the network.
    pub fn ty(&self, x: NodeId) -> &TensorType {
        &self.graph.node(x).ty
    }

    /// A trainable weight named `name` (for layers the builder has no method for).
    pub fn param(&mut self, name: &str, ty: TensorType) -> Result<NodeId> {
        self.graph.param(name, ty)
    }

    /// A stored, non-trainable tensor named `name`.
    pub fn buffer(&mut self, name: &str, ty: TensorType) -> Result<NodeId> {
        self.graph.buffer(name, ty)
    }

    pub fn input(&mut self, name: &str, shape: impl Into<Shape>) -> Result<NodeId> {
        self.graph.input(name, TensorType::f32(shape))
    }

    pub fn input_typed(&mut self, name: &str, ty: TensorType) -> Result<NodeId> {
        self.graph.input(name, ty)
    }

    /// Any op over existing nodes, named by `named` or after the op.
    pub fn op(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let name = self.name_for(op.name());
        self.graph.add(name, op, inputs)
    }

    fn channels(&self, x: NodeId) -> Result<usize> {
        let t = self.ty(x);
        if t.rank() < 2 {
            return Err(IrError::Shape {
                node: self.next_name.clone().unwrap_or_default(),
                op: "layer".into(),
                inputs: t.to_string(),
                message: "input must be [N, C, …]".into(),
            });
        }
        Ok(t.dims()[1])
    }

    pub fn conv2d(&mut self, x: NodeId, c: Conv) -> Result<NodeId> {
        let cin = self.channels(x)?;
        let name = self.name_for("conv");
        let g = c.attrs.groups.max(1);
        let w = self.graph.param(
            format!("{name}.weight"),
            TensorType::f32([c.out_channels, cin / g, c.kernel[0], c.kernel[1]]),
        )?;
        let mut inputs = vec![x, w];
        if c.bias {
            inputs.push(
                self.graph
                    .param(format!("{name}.bias"), TensorType::f32([c.out_channels]))?,
            );
        }
        self.graph.add(name, Op::Conv2d(c.attrs), &inputs)
    }

    pub fn conv_transpose2d(&mut self, x: NodeId, c: ConvTranspose) -> Result<NodeId> {
        let cin = self.channels(x)?;
        let name = self.name_for("conv_transpose");
        let g = c.attrs.groups.max(1);
        let w = self.graph.param(
            format!("{name}.weight"),
            TensorType::f32([cin, c.out_channels / g, c.kernel[0], c.kernel[1]]),
        )?;
        let mut inputs = vec![x, w];
        if c.bias {
            inputs.push(
                self.graph
                    .param(format!("{name}.bias"), TensorType::f32([c.out_channels]))?,
            );
        }
        self.graph.add(name, Op::ConvTranspose2d(c.attrs), &inputs)
    }

    /// A spatially separable convolution: a `k×1` then a `1×k` convolution, each padded to
    /// keep the size (for odd `k`), the first without bias.
    pub fn separable_conv2d(&mut self, x: NodeId, out_channels: usize, k: usize) -> Result<NodeId> {
        let base = self.name_for("separable");
        let p = k / 2;
        self.next_name = Some(format!("{base}.vertical"));
        let v = self.conv2d(
            x,
            Conv::new(out_channels, [k, 1])
                .pad(Padding::Explicit([p, 0, p, 0]))
                .bias(false),
        )?;
        self.next_name = Some(format!("{base}.horizontal"));
        self.conv2d(
            v,
            Conv::new(out_channels, [1, k]).pad(Padding::Explicit([0, p, 0, p])),
        )
    }

    pub fn pool2d(&mut self, x: NodeId, p: Pool2d) -> Result<NodeId> {
        self.op(Op::Pool2d(p), &[x])
    }

    pub fn max_pool2d(&mut self, x: NodeId, kernel: [usize; 2], stride: [usize; 2]) -> Result<NodeId> {
        self.pool2d(x, Pool2d::new(PoolKind::Max, kernel, stride))
    }

    /// Average pooling that divides by the real (non-padding) elements of each window — ONNX's
    /// default; PyTorch's `AvgPool2d` counts padding by default (use `pool2d` for that).
    pub fn avg_pool2d(&mut self, x: NodeId, kernel: [usize; 2], stride: [usize; 2]) -> Result<NodeId> {
        self.pool2d(
            x,
            Pool2d::new(
                PoolKind::Avg {
                    count_include_pad: false,
                },
                kernel,
                stride,
            ),
        )
    }

    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        self.op(Op::GlobalPool(ReduceKind::Avg), &[x])
    }

    pub fn global_max_pool(&mut self, x: NodeId) -> Result<NodeId> {
        self.op(Op::GlobalPool(ReduceKind::Max), &[x])
    }

    pub fn adaptive_pool(&mut self, x: NodeId, kind: ReduceKind, output: [usize; 2]) -> Result<NodeId> {
        self.op(Op::AdaptivePool { kind, output }, &[x])
    }

    /// Spatial pyramid pooling: for each level `l`, an adaptive pool to `l×l`, flattened; the
    /// results concatenated into `[N, C·Σ l²]`.
    pub fn spatial_pyramid_pool(&mut self, x: NodeId, levels: &[usize], kind: ReduceKind) -> Result<NodeId> {
        let base = self.name_for("spp");
        let mut parts = Vec::with_capacity(levels.len());
        for &l in levels {
            self.next_name = Some(format!("{base}.pool{l}"));
            let p = self.adaptive_pool(x, kind, [l, l])?;
            self.next_name = Some(format!("{base}.flat{l}"));
            parts.push(self.flatten(p)?);
        }
        self.next_name = Some(base);
        self.concat(&parts, 1)
    }

    pub fn activation(&mut self, x: NodeId, a: Activation) -> Result<NodeId> {
        self.op(Op::Activation(a), &[x])
    }

    pub fn relu(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Relu)
    }

    pub fn leaky_relu(&mut self, x: NodeId, alpha: f32) -> Result<NodeId> {
        self.activation(x, Activation::LeakyRelu { alpha })
    }

    pub fn sigmoid(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Sigmoid)
    }

    pub fn tanh(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Tanh)
    }

    /// `min(max(x, min), max)`; ReLU6 is `clip(x, 0.0, 6.0)`.
    pub fn clip(&mut self, x: NodeId, min: f32, max: f32) -> Result<NodeId> {
        self.activation(x, Activation::Clip { min, max })
    }

    /// `max(0, min(1, alpha·x + beta))`.
    pub fn hard_sigmoid(&mut self, x: NodeId, alpha: f32, beta: f32) -> Result<NodeId> {
        self.activation(x, Activation::HardSigmoid { alpha, beta })
    }

    /// The error function, elementwise.
    pub fn erf(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Erf)
    }

    /// SiLU (swish), `x · sigmoid(x)`, elementwise.
    pub fn silu(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Silu)
    }

    /// Exact GELU, `(x + x·erf(x/√2))/2` (see `Activation::Gelu`).
    pub fn gelu(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::Gelu)
    }

    /// HardSwish, `x · max(0, min(1, x/6 + 1/2))` (see `Activation::HardSwish`).
    pub fn hard_swish(&mut self, x: NodeId) -> Result<NodeId> {
        self.activation(x, Activation::HardSwish)
    }

    /// Local response normalization across channels (see `Op::Lrn`).
    pub fn lrn(&mut self, x: NodeId, size: usize, alpha: f32, beta: f32, bias: f32) -> Result<NodeId> {
        self.op(
            Op::Lrn {
                size,
                alpha,
                beta,
                bias,
            },
            &[x],
        )
    }

    /// The mean over `axes` (strictly increasing), keeping them as size-1 axes when `keepdims`.
    pub fn reduce_mean(&mut self, x: NodeId, axes: &[usize], keepdims: bool) -> Result<NodeId> {
        self.op(
            Op::ReduceMean {
                axes: axes.to_vec(),
                keepdims,
            },
            &[x],
        )
    }

    pub fn softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        self.op(Op::Softmax { axis }, &[x])
    }

    pub fn log_softmax(&mut self, x: NodeId, axis: i64) -> Result<NodeId> {
        self.op(Op::LogSoftmax { axis }, &[x])
    }

    /// A fully connected layer `[N, I] → [N, out]` with bias.
    pub fn dense(&mut self, x: NodeId, out: usize) -> Result<NodeId> {
        self.dense_with(x, out, true)
    }

    pub fn dense_with(&mut self, x: NodeId, out: usize, bias: bool) -> Result<NodeId> {
        let name = self.name_for("dense");
        let features = self.ty(x).dims().get(1).copied().unwrap_or(0);
        let w = self
            .graph
            .param(format!("{name}.weight"), TensorType::f32([out, features]))?;
        let mut inputs = vec![x, w];
        if bias {
            inputs.push(self.graph.param(format!("{name}.bias"), TensorType::f32([out]))?);
        }
        self.graph.add(name, Op::Dense, &inputs)
    }

    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::MatMul, &[a, b])
    }

    pub fn flatten(&mut self, x: NodeId) -> Result<NodeId> {
        self.op(Op::Flatten { axis: 1 }, &[x])
    }

    pub fn reshape(&mut self, x: NodeId, shape: &[i64]) -> Result<NodeId> {
        self.op(
            Op::Reshape {
                shape: shape.to_vec(),
            },
            &[x],
        )
    }

    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.op(Op::Transpose { perm: perm.to_vec() }, &[x])
    }

    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.op(Op::Binary(op), &[a, b])
    }

    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.binary(BinaryOp::Add, a, b)
    }

    pub fn concat(&mut self, xs: &[NodeId], axis: i64) -> Result<NodeId> {
        self.op(Op::Concat { axis }, xs)
    }

    /// Dropout; each dropout layer of the network gets its own mask seed (1, 2, …).
    pub fn dropout(&mut self, x: NodeId, ratio: f32) -> Result<NodeId> {
        let seed = self.counters.get("dropout.seed").copied().unwrap_or(0) as u64 + 1;
        self.counters.insert("dropout.seed", seed as usize);
        self.op(Op::Dropout { ratio, seed }, &[x])
    }

    /// Batch norm at inference, with trainable `weight`/`bias` and buffers `running_mean`/`running_var`.
    pub fn batch_norm(&mut self, x: NodeId) -> Result<NodeId> {
        self.batch_norm_eps(x, 1e-5)
    }

    /// Batch norm with a given epsilon (PyTorch's default is 1e-5; GoogLeNet uses 1e-3).
    pub fn batch_norm_eps(&mut self, x: NodeId, epsilon: f32) -> Result<NodeId> {
        let c = self.channels(x)?;
        let name = self.name_for("bn");
        let t = TensorType::f32([c]);
        let scale = self.graph.param(format!("{name}.weight"), t.clone())?;
        let bias = self.graph.param(format!("{name}.bias"), t.clone())?;
        let mean = self.graph.buffer(format!("{name}.running_mean"), t.clone())?;
        let var = self.graph.buffer(format!("{name}.running_var"), t)?;
        self.graph.add(
            name,
            Op::BatchNorm {
                epsilon,
                activation: None,
            },
            &[x, scale, bias, mean, var],
        )
    }

    pub fn loss(&mut self, kind: LossKind, prediction: NodeId, target: NodeId) -> Result<NodeId> {
        self.op(Op::Loss(kind), &[prediction, target])
    }

    pub fn output(&mut self, x: NodeId) -> Result<()> {
        self.graph.mark_output(x)
    }

    /// The finished graph; it must have at least one output.
    pub fn finish(self) -> Result<Graph> {
        if self.graph.outputs().is_empty() {
            return Err(IrError::NoOutputs);
        }
        Ok(self.graph)
    }
}
