//! kiln's reference interpreter: the oracle that the JIT, the passes and the gradients are
//! checked against.
//!
//! Every op is one plain loop nest written straight from its definition (the doc comments of
//! `kiln_ir::op`): no im2col, no fusion, no SIMD. Each op family has its own module of public
//! kernels (tensors + the op's attributes in, a tensor out), and [`evaluate`] dispatches to them
//! with one exhaustive `match` over [`Op`], so a new op is a compile error here until it has a
//! kernel. The kernels take every output size from `kiln_ir::shape` (never a second formula),
//! and computing in [`f64`] serves the finite-difference gradient checks.
//!
//! ```
//! use kiln_interp::{run, Value};
//! use kiln_ir::{Network, Tensor};
//! use std::collections::HashMap;
//! let mut net = Network::new("tiny");
//! let x = net.input("x", [1, 2])?;
//! let y = net.named("y").relu(x)?;
//! net.output(y)?;
//! let g = net.finish()?;
//! let inputs = HashMap::from([("x".to_string(), Value::F(Tensor::new([1, 2], vec![-1.0f32, 2.0]).unwrap()))]);
//! let out = run(&g, &inputs, &HashMap::new()).unwrap();
//! assert_eq!(out[0].1.as_f().unwrap().data(), &[0.0, 2.0]);
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

#![forbid(unsafe_code)]

pub mod activation;
pub mod conv;
pub mod elementwise;
pub mod error;
pub mod float;
pub mod gemm;
pub mod layout;
pub mod linear;
pub mod loss;
pub mod lrn;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod softmax;
mod util;

pub use error::InterpError;
pub use float::Float;
/// A tensor of either element type: `F` holds `f32`-typed data computed in `T`, `I` holds
/// `i32` indices (class ids). The same type the JIT and the runtime use.
pub use kiln_ir::Value;

use kiln_ir::{DType, Graph, Node, NodeId, Op, Tensor, TensorType, TrainOp};
use std::collections::HashMap;

/// Runs `graph` and returns the values of its outputs, in `graph.outputs()` order, each with
/// its node's name.
///
/// `inputs` must hold exactly the graph's inputs; `weights` must hold every param and buffer
/// (entries that name no weight of the graph are ignored, so one weights map can serve
/// several graphs). Every fed tensor must have its node's declared dtype and shape.
pub fn run<T: Float>(
    graph: &Graph,
    inputs: &HashMap<String, Value<T>>,
    weights: &HashMap<String, Tensor<T>>,
) -> Result<Vec<(String, Value<T>)>, InterpError> {
    let mut values = evaluate(graph, inputs, weights)?;
    graph
        .outputs()
        .iter()
        .map(|&id| {
            let node = graph.node(id);
            // `mark_output` lists each node once, so each value is moved out once.
            let v = values
                .remove(&id)
                .ok_or_else(|| internal(node, "output was not computed"))?;
            Ok((node.name.clone(), v))
        })
        .collect()
}

/// Runs `graph` and returns the value of every node, keyed by node id. Nodes run in
/// `graph.topo_order()`. Feeds are checked as for [`run`].
pub fn evaluate<T: Float>(
    graph: &Graph,
    inputs: &HashMap<String, Value<T>>,
    weights: &HashMap<String, Tensor<T>>,
) -> Result<HashMap<NodeId, Value<T>>, InterpError> {
    check_memory::<T>(graph)?;
    check_feeds(graph, inputs, weights)?;
    let mut values: HashMap<NodeId, Value<T>> = HashMap::with_capacity(graph.len());
    for id in graph.topo_order() {
        let node = graph.node(id);
        let args = graph
            .inputs(id)
            .iter()
            .map(|i| {
                values
                    .get(i)
                    .ok_or_else(|| internal(node, "an input was not computed"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let computed = if node.ty.shape.numel() == 0 && !matches!(node.op, Op::Input(_) | Op::Param { .. }) {
            // An empty value is empty whatever its op computes; skipping the kernel keeps its
            // loops over the other axes (up to 2^62 positions next to a 0) from running.
            Ok(match node.ty.dtype {
                DType::F32 => Value::F(Tensor::new(node.ty.shape.clone(), Vec::new()).expect("0 elements")),
                DType::I32 => Value::I(Tensor::new(node.ty.shape.clone(), Vec::new()).expect("0 elements")),
            })
        } else {
            eval_node(node, &args, inputs, weights)
        };
        let value = computed.map_err(|message| InterpError::Op {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            message,
        })?;
        // The kernels derive their output shapes from the same shape rule; this catches an
        // interpreter bug the moment it happens.
        if value.ty() != node.ty {
            let msg = format!("computed {}, but the node's type is {}", value.ty(), node.ty);
            return Err(internal(node, &msg));
        }
        values.insert(id, value);
    }
    Ok(values)
}

/// The interpreter keeps every value of the graph: checks that they fit in
/// [`kiln_ir::limits::MAX_BYTES`] together and that the system can give that much address
/// space now (a reservation, not touched), so a graph too big for the machine is an error
/// before the first kernel runs rather than an abort in the middle.
fn check_memory<T: Float>(graph: &Graph) -> Result<(), InterpError> {
    use kiln_ir::limits;
    let mut total = 0usize;
    for id in graph.topo_order() {
        let ty = &graph.node(id).ty;
        total = limits::check_bytes(ty.shape.numel(), std::mem::size_of::<T>(), &graph.node(id).name)
            .and_then(|b| limits::add_bytes(total, b, "the interpreter's values"))
            .map_err(InterpError::TooLarge)?;
    }
    Vec::<u8>::new().try_reserve_exact(total).map_err(|_| {
        InterpError::TooLarge(format!(
            "the interpreter needs {total} bytes for the values of this graph, and the system cannot give them"
        ))
    })
}

fn internal(node: &Node, message: &str) -> InterpError {
    InterpError::Op {
        node: node.name.clone(),
        op: node.op.name().to_string(),
        message: format!("interpreter invariant broken: {message}"),
    }
}

fn value_type<T: Clone>(t: &Tensor<T>) -> TensorType {
    TensorType::f32(t.shape().clone())
}

/// Checks that every input and weight is fed with its declared type and that no unknown
/// input is fed. The inputs are checked by `kiln_ir::feeds::check_inputs`, as the JIT does.
fn check_feeds<T: Float>(
    graph: &Graph,
    inputs: &HashMap<String, Value<T>>,
    weights: &HashMap<String, Tensor<T>>,
) -> Result<(), InterpError> {
    use kiln_ir::feeds::FeedError;
    let feeds: Vec<(&str, &Value<T>)> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    kiln_ir::feeds::check_inputs(graph, &feeds).map_err(|e| match e {
        FeedError::Missing {
            name,
            expected,
            given,
        } => InterpError::MissingInput {
            name,
            expected,
            given,
        },
        FeedError::Unknown { name, known } => InterpError::UnknownInput { name, known },
        FeedError::Type {
            name,
            expected,
            given,
        } => InterpError::InputType {
            name,
            expected,
            given,
        },
        FeedError::Twice { name } => InterpError::UnknownInput {
            known: format!("`{name}` once"),
            name,
        },
    })?;
    for id in graph.params() {
        let node = graph.node(id);
        match weights.get(&node.name) {
            None => {
                return Err(InterpError::MissingWeight {
                    name: node.name.clone(),
                    expected: Box::new(node.ty.clone()),
                });
            }
            Some(t) if value_type(t) != node.ty => {
                return Err(InterpError::WeightType {
                    name: node.name.clone(),
                    expected: Box::new(node.ty.clone()),
                    given: Box::new(value_type(t)),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Input `i` of a node as an f32-typed tensor.
fn float_arg<'a, T>(args: &[&'a Value<T>], i: usize) -> Result<&'a Tensor<T>, String> {
    match args.get(i) {
        Some(Value::F(t)) => Ok(t),
        Some(Value::I(_)) => Err(format!("input {i} is i32 where f32 is needed")),
        None => Err(format!("input {i} is missing")),
    }
}

/// Optional input `i` (a bias) as an f32-typed tensor.
fn optional_float_arg<'a, T>(args: &[&'a Value<T>], i: usize) -> Result<Option<&'a Tensor<T>>, String> {
    if i < args.len() {
        float_arg(args, i).map(Some)
    } else {
        Ok(None)
    }
}

/// Applies a layout kernel (generic over the element type) to a value of either dtype.
macro_rules! on_either {
    ($v:expr, |$t:ident| $body:expr) => {
        match $v {
            Value::F($t) => Value::F($body?),
            Value::I($t) => Value::I($body?),
        }
    };
}

/// Computes one node from its input values.
fn eval_node<T: Float>(
    node: &Node,
    args: &[&Value<T>],
    inputs: &HashMap<String, Value<T>>,
    weights: &HashMap<String, Tensor<T>>,
) -> Result<Value<T>, String> {
    let f = |i| float_arg(args, i);
    let first = || args.first().copied().ok_or("the node has no inputs");
    Ok(match &node.op {
        Op::Input(_) => inputs.get(&node.name).ok_or("the input was not fed")?.clone(),
        Op::Param { .. } => Value::F(weights.get(&node.name).ok_or("the weight was not given")?.clone()),
        Op::Conv2d(c) => Value::F(conv::conv2d(f(0)?, f(1)?, optional_float_arg(args, 2)?, c)?),
        Op::ConvTranspose2d(c) => Value::F(conv::conv_transpose2d(
            f(0)?,
            f(1)?,
            optional_float_arg(args, 2)?,
            c,
        )?),
        Op::Pool2d(p) => Value::F(pool::pool2d(f(0)?, p)?),
        Op::GlobalPool(kind) => Value::F(pool::global_pool(f(0)?, *kind)?),
        Op::AdaptivePool { kind, output } => Value::F(pool::adaptive_pool(f(0)?, *kind, *output)?),
        Op::Activation(a) => Value::F(activation::activation(f(0)?, *a)),
        Op::Softmax { axis } => Value::F(softmax::softmax(f(0)?, *axis)?),
        Op::LogSoftmax { axis } => Value::F(softmax::log_softmax(f(0)?, *axis)?),
        Op::Dense => Value::F(linear::dense(f(0)?, f(1)?, optional_float_arg(args, 2)?)?),
        Op::MatMul => Value::F(linear::matmul(f(0)?, f(1)?)?),
        Op::Flatten { axis } => on_either!(first()?, |t| layout::flatten(t, *axis)),
        Op::Reshape { shape } => on_either!(first()?, |t| layout::reshape(t, shape)),
        Op::Transpose { perm } => on_either!(first()?, |t| layout::transpose(t, perm)),
        Op::Binary(op) => Value::F(elementwise::binary(*op, f(0)?, f(1)?)?),
        Op::Concat { axis } => match first()?.ty().dtype {
            DType::F32 => {
                let xs = (0..args.len()).map(f).collect::<Result<Vec<_>, _>>()?;
                Value::F(layout::concat(&xs, *axis)?)
            }
            DType::I32 => {
                let xs = args
                    .iter()
                    .map(|v| v.as_i().ok_or("concat of mixed dtypes"))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::I(layout::concat(&xs, *axis)?)
            }
        },
        // Inference: the identity.
        Op::Dropout { .. } => Value::F(f(0)?.clone()),
        Op::BatchNorm { epsilon, activation } => {
            let y = norm::batch_norm(f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, *epsilon)?;
            Value::F(match activation {
                Some(a) => activation::activation(&y, *a),
                None => y,
            })
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => Value::F(lrn::lrn(f(0)?, *size, *alpha, *beta, *bias)?),
        Op::ReduceMean { axes, keepdims } => Value::F(reduce::reduce_mean(f(0)?, axes, *keepdims)?),
        Op::Loss(kind) => {
            let target = *args.get(1).ok_or("the target is missing")?;
            Value::F(loss::loss(*kind, f(0)?, target)?)
        }
        Op::Im2Col(c) => Value::F(gemm::im2col(f(0)?, c)?),
        Op::Gemm(g) => {
            let xs = (0..args.len()).map(f).collect::<Result<Vec<_>, _>>()?;
            Value::F(gemm::gemm(&xs, g)?)
        }
        Op::Rsqrt { epsilon } => Value::F(gemm::rsqrt(f(0)?, *epsilon)),
        Op::Train(TrainOp::Rot180 { groups }) => Value::F(conv::rot180(f(0)?, *groups)?),
        Op::Train(TrainOp::DilatePad { stride, padding }) => {
            Value::F(conv::dilate_pad(f(0)?, *stride, *padding)?)
        }
        Op::Train(TrainOp::ConvWeightGrad { conv: c, kernel }) => {
            Value::F(conv::conv_weight_grad(f(0)?, f(1)?, c, *kernel)?)
        }
        Op::Train(TrainOp::MaxPoolIds(p)) => Value::I(pool::max_pool2d_argmax(f(0)?, p)?),
        Op::Train(TrainOp::AdaptiveMaxPoolIds { output }) => {
            Value::I(pool::adaptive_max_ids(f(0)?, *output)?)
        }
        Op::Train(TrainOp::ScatterIds { size }) => {
            let ids = args
                .get(1)
                .and_then(|v| v.as_i())
                .ok_or("input 1 (the ids) must be i32")?;
            Value::F(pool::scatter_ids(f(0)?, ids, *size)?)
        }
        Op::Train(TrainOp::Pool2dGrad { pool: p, input }) => Value::F(pool::pool2d_grad(f(0)?, p, *input)?),
        Op::Train(TrainOp::AdaptiveAvgPoolGrad { input }) => {
            Value::F(pool::adaptive_avg_pool_grad(f(0)?, *input)?)
        }
        Op::Train(TrainOp::ActivationGrad(a)) => Value::F(activation::activation_grad(f(0)?, f(1)?, *a)?),
        Op::Train(TrainOp::SoftmaxGrad { axis }) => Value::F(softmax::softmax_grad(f(0)?, f(1)?, *axis)?),
        Op::Train(TrainOp::LogSoftmaxGrad { axis }) => {
            Value::F(softmax::log_softmax_grad(f(0)?, f(1)?, *axis)?)
        }
        Op::Train(TrainOp::ReduceSumTo { shape }) => Value::F(elementwise::reduce_sum_to(f(0)?, shape)?),
        Op::Train(TrainOp::BroadcastTo { shape }) => Value::F(reduce::broadcast_to(f(0)?, shape)?),
        Op::Train(TrainOp::LrnGrad {
            size,
            alpha,
            beta,
            bias,
        }) => Value::F(lrn::lrn_grad(f(0)?, f(1)?, *size, *alpha, *beta, *bias)?),
        Op::Train(TrainOp::LossGrad(kind)) => {
            let target = *args.get(1).ok_or("the target is missing")?;
            Value::F(loss::loss_grad(*kind, f(0)?, target)?)
        }
        Op::Slice { axis, start, end } => on_either!(first()?, |t| layout::slice(t, *axis, *start, *end)),
        Op::Scale { factor } => Value::F(elementwise::scale(f(0)?, *factor)),
        Op::Train(TrainOp::BatchNormTrain { part, epsilon }) => {
            let xs = (0..args.len()).map(f).collect::<Result<Vec<_>, _>>()?;
            Value::F(norm::batch_norm_train(*part, *epsilon, &xs)?)
        }
        Op::Train(TrainOp::DropoutTrain { ratio, seed }) => {
            Value::F(elementwise::dropout_train(f(0)?, f(1)?, *ratio, *seed)?)
        }
        Op::Train(TrainOp::Update(u)) => {
            let xs = (0..args.len()).map(f).collect::<Result<Vec<_>, _>>()?;
            Value::F(optim::update(*u, &xs)?)
        }
    })
}
