//! Shape inference: the one place that states each op's shape rule, and the size formulas
//! (padding resolution, windowed output sizes, broadcasting) that the other layers reuse.
//!
//! Every rule returns `Err(message)` for an impossible case; the graph wraps the message with
//! the node's name, the op and the input types.

use crate::op::{
    Activation, BnPart, Conv2d, ConvTranspose2d, LossKind, Op, Pool2d, PoolKind, TrainOp, Update,
};
use crate::tensor::{DType, Shape, TensorType};

type R<T> = Result<T, String>;

pub use crate::geometry::adaptive_window;
use crate::geometry::checked_extent;

/// The extent of a kernel of size `k` with dilation `d`: `d·(k−1) + 1` (saturating; the
/// summary's receptive fields use it on validated graphs).
pub fn effective_kernel(k: usize, d: usize) -> usize {
    d.saturating_mul(k.saturating_sub(1)).saturating_add(1)
}

/// Normalizes a possibly negative `axis` for a tensor of `rank` (`-1` is the last axis).
/// `inclusive` allows `axis == rank` (ONNX Flatten).
pub fn normalize_axis(axis: i64, rank: usize, inclusive: bool) -> R<usize> {
    let r = rank as i64 + i64::from(inclusive);
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= r {
        let hi = if inclusive { rank as i64 } else { rank as i64 - 1 };
        return Err(format!(
            "axis {axis} is out of range for rank {rank} (allowed {} to {hi})",
            -(rank as i64)
        ));
    }
    Ok(a as usize)
}

/// NumPy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> R<Shape> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {a:?} and {b:?} do not broadcast (axis {i}: {da} vs {db})"
                ));
            }
        };
    }
    Ok(Shape::from(out))
}

fn need_f32(t: &TensorType, what: &str) -> R<()> {
    if t.dtype != DType::F32 {
        return Err(format!("{what} must be f32, got {}", t.dtype));
    }
    Ok(())
}

fn need_rank(t: &TensorType, rank: usize, what: &str) -> R<()> {
    need_f32(t, what)?;
    if t.rank() != rank {
        return Err(format!("{what} must have rank {rank}, got {}", t.shape));
    }
    Ok(())
}

/// Sizes, strides and dilations are at least 1 and at most [`crate::limits::MAX_ELEMENTS`]
/// (a larger one is never meaningful, and keeps products of two of them inside `u64`).
fn need_pos(v: [usize; 2], what: &str) -> R<()> {
    if v.contains(&0) {
        return Err(format!("{what} must be at least 1, got {v:?}"));
    }
    if v.iter().any(|&x| x > crate::limits::MAX_ELEMENTS) {
        return Err(format!(
            "{what} {v:?} is above the limit of {}",
            crate::limits::MAX_ELEMENTS
        ));
    }
    Ok(())
}

/// The attributes of an activation (standalone, fused or in its backward) are usable: finite
/// slopes and offsets, clip bounds that are numbers with `min ≤ max` (infinite allowed).
pub fn check_activation(a: &Activation) -> R<()> {
    let finite = |v: f32, what: &str| -> R<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(format!("{} {what} must be finite, got {v}", a.name()))
        }
    };
    match *a {
        Activation::Relu
        | Activation::Sigmoid
        | Activation::Tanh
        | Activation::Erf
        | Activation::Silu
        | Activation::Gelu
        | Activation::HardSwish => Ok(()),
        Activation::LeakyRelu { alpha } => {
            if alpha.is_finite() {
                Ok(())
            } else {
                Err(format!("alpha must be finite, got {alpha}"))
            }
        }
        Activation::Clip { min, max } => {
            if min.is_nan() || max.is_nan() {
                return Err(format!(
                    "clip bounds must be numbers, got min {min} and max {max}"
                ));
            }
            if min > max {
                return Err(format!("clip needs min ≤ max, got min {min} > max {max}"));
            }
            Ok(())
        }
        Activation::HardSigmoid { alpha, beta } => {
            finite(alpha, "alpha")?;
            finite(beta, "beta")
        }
    }
}

fn lrn(size: usize, alpha: f32, beta: f32, bias: f32, x: &TensorType) -> R<TensorType> {
    need_f32(x, "input")?;
    if x.rank() < 2 {
        return Err(format!("input must be [N, C, …], got {}", x.shape));
    }
    if size == 0 || size > crate::limits::MAX_ELEMENTS {
        return Err(format!(
            "size must be from 1 to {}, got {size}",
            crate::limits::MAX_ELEMENTS
        ));
    }
    if !(alpha.is_finite() && alpha >= 0.0) {
        return Err(format!("alpha must be finite and non-negative, got {alpha}"));
    }
    if !beta.is_finite() {
        return Err(format!("beta must be finite, got {beta}"));
    }
    // a normal positive bias keeps the base a normal positive number (whose power the JIT
    // takes through its logarithm)
    if !(bias.is_finite() && bias >= f32::MIN_POSITIVE) {
        return Err(format!(
            "bias must be a finite number of at least {:e}, got {bias}",
            f32::MIN_POSITIVE
        ));
    }
    Ok(x.clone())
}

/// The output dims of a mean over `axes` of a tensor of `dims`, or why the axes are invalid.
pub fn reduce_dims(axes: &[usize], keepdims: bool, dims: &[usize]) -> R<Vec<usize>> {
    if axes.is_empty() {
        return Err("axes must name at least one axis".into());
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= dims.len()) {
        return Err(format!(
            "axis {a} is out of range for rank {} (axes must be from 0 to {})",
            dims.len(),
            dims.len() as i64 - 1
        ));
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "axes {axes:?} must be strictly increasing (sorted, no repeats)"
        ));
    }
    if let Some(&a) = axes.iter().find(|&&a| dims[a] == 0) {
        return Err(format!("cannot average over axis {a}, which is empty"));
    }
    Ok(dims
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match axes.contains(&i) {
            false => Some(d),
            true if keepdims => Some(1),
            true => None,
        })
        .collect())
}

fn broadcast_to(shape: &[usize], x: &TensorType) -> R<TensorType> {
    need_f32(x, "input")?;
    crate::limits::check_dims(shape).map_err(|e| format!("target shape {shape:?}: {e}"))?;
    let b = broadcast_shapes(x.dims(), shape)?;
    if b.dims() != shape {
        return Err(format!(
            "the input's {} does not broadcast to shape {shape:?}",
            x.shape
        ));
    }
    Ok(TensorType::f32(shape.to_vec()))
}

fn optional_bias(inputs: &[&TensorType], c_out: usize) -> R<()> {
    if let Some(b) = inputs.get(2) {
        need_f32(b, "bias")?;
        if b.dims() != [c_out] {
            return Err(format!("bias must have shape [{c_out}], got {}", b.shape));
        }
    }
    Ok(())
}

fn conv2d(c: &Conv2d, x: &TensorType, w: &TensorType, inputs: &[&TensorType]) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    need_rank(w, 4, "weight")?;
    need_pos(c.stride, "stride")?;
    need_pos(c.dilation, "dilation")?;
    let [n, ch, h, wd] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let [co, cg, kh, kw] = [w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]];
    let g = c.groups;
    if g == 0 || ch % g != 0 || co % g != 0 {
        return Err(format!(
            "groups {g} must divide the input channels {ch} and the output channels {co}"
        ));
    }
    if cg != ch / g {
        return Err(format!(
            "weight must have C/groups = {} input channels, got {cg}",
            ch / g
        ));
    }
    if kh == 0 || kw == 0 {
        return Err(format!("kernel must be at least 1x1, got {kh}x{kw}"));
    }
    optional_bias(inputs, co)?;
    if let Some(a) = &c.activation {
        check_activation(a)?;
    }
    let [oh, ow] = c.geometry(&[n, ch, h, wd], [kh, kw])?.output;
    Ok(TensorType::f32([n, co, oh, ow]))
}

fn conv_transpose2d(
    c: &ConvTranspose2d,
    x: &TensorType,
    w: &TensorType,
    inputs: &[&TensorType],
) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    need_rank(w, 4, "weight")?;
    need_pos(c.stride, "stride")?;
    need_pos(c.dilation, "dilation")?;
    let [n, ci, h, wd] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let [wci, cog, kh, kw] = [w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]];
    let g = c.groups;
    if g == 0 || ci % g != 0 {
        return Err(format!("groups {g} must divide the input channels {ci}"));
    }
    if wci != ci {
        return Err(format!(
            "weight must have {ci} input channels (layout [C_in, C_out/groups, kh, kw]), got {wci}"
        ));
    }
    if kh == 0 || kw == 0 || cog == 0 {
        return Err(format!("weight dims must be at least 1, got {}", w.shape));
    }
    let co = cog
        .checked_mul(g)
        .ok_or_else(|| format!("output channels {cog} × groups {g} overflow"))?;
    optional_bias(inputs, co)?;
    let mut out = [0usize; 2];
    for (a, (n_in, k)) in [(h, kh), (wd, kw)].into_iter().enumerate() {
        let (s, d, op) = (c.stride[a], c.dilation[a], c.output_padding[a]);
        if op >= s.max(d) {
            return Err(format!(
                "output_padding {op} must be smaller than stride {s} or dilation {d}"
            ));
        }
        if n_in == 0 {
            return Err(format!("input has an empty spatial axis {a}"));
        }
        let full = s
            .checked_mul(n_in - 1)
            .and_then(|v| v.checked_add(checked_extent(k, d).ok()?))
            .and_then(|v| v.checked_add(op))
            .ok_or_else(|| format!("output size on spatial axis {a} overflows"))?;
        if full > crate::limits::MAX_ELEMENTS {
            return Err(format!(
                "output size {full} on spatial axis {a} before the padding crop is above the limit of {} elements",
                crate::limits::MAX_ELEMENTS
            ));
        }
        let crop = c.padding[a].saturating_add(c.padding[a + 2]);
        if crop >= full {
            return Err(format!(
                "padding {crop} removes the whole output of size {full} on spatial axis {a}"
            ));
        }
        out[a] = full - crop;
    }
    Ok(TensorType::f32([n, co, out[0], out[1]]))
}

fn pool2d(p: &Pool2d, x: &TensorType) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    let d = x.dims();
    let [oh, ow] = p.geometry(d)?.output;
    Ok(TensorType::f32([d[0], d[1], oh, ow]))
}

fn matmul(a: &TensorType, b: &TensorType) -> R<TensorType> {
    need_f32(a, "left operand")?;
    need_f32(b, "right operand")?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err("matmul operands must have rank at least 1".into());
    }
    let (ad, bd) = (a.dims(), b.dims());
    let (m, k1) = if ad.len() == 1 {
        (None, ad[0])
    } else {
        (Some(ad[ad.len() - 2]), ad[ad.len() - 1])
    };
    let (k2, n) = if bd.len() == 1 {
        (bd[0], None)
    } else {
        (bd[bd.len() - 2], Some(bd[bd.len() - 1]))
    };
    if k1 != k2 {
        return Err(format!("inner dimensions differ: {k1} vs {k2}"));
    }
    let batch_a = &ad[..ad.len().saturating_sub(2)];
    let batch_b = &bd[..bd.len().saturating_sub(2)];
    let mut out: Vec<usize> = broadcast_shapes(batch_a, batch_b)?.dims().to_vec();
    out.extend(m);
    out.extend(n);
    Ok(TensorType::f32(out))
}

fn reshape(spec: &[i64], x: &TensorType) -> R<TensorType> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer_at = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            -1 => return Err("at most one -1 in the target shape".into()),
            0 => match x.dims().get(i) {
                Some(&d) => out.push(d),
                None => {
                    return Err(format!(
                        "0 at index {i} copies an input dim, but the input has rank {}",
                        x.rank()
                    ));
                }
            },
            s if s > 0 => out.push(s as usize),
            s => return Err(format!("invalid target dim {s}")),
        }
    }
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("target shape {spec:?} has too many elements"))?;
    let total = x.shape.numel();
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot infer the -1 dim: {total} elements into {spec:?}"));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(format!(
            "cannot reshape {total} elements into {spec:?} ({known} elements)"
        ));
    }
    Ok(TensorType::new(x.dtype, out))
}

fn loss(kind: LossKind, pred: &TensorType, target: &TensorType) -> R<TensorType> {
    need_f32(pred, "prediction")?;
    match kind {
        LossKind::Mse => {
            if target.dtype != DType::F32 || target.shape != pred.shape {
                return Err(format!(
                    "target must be f32 of the prediction's shape {}, got {target}",
                    pred.shape
                ));
            }
        }
        LossKind::CrossEntropy | LossKind::Nll => {
            if pred.rank() != 2 || pred.dims()[0] == 0 {
                return Err(format!(
                    "prediction must be [N, K] with N ≥ 1, got {}",
                    pred.shape
                ));
            }
            let ok = match target.dtype {
                DType::I32 => target.dims() == &pred.dims()[..1],
                DType::F32 => target.shape == pred.shape,
            };
            if !ok {
                return Err(format!(
                    "target must be class ids i32[{}] or probabilities f32{}, got {target}",
                    pred.dims()[0],
                    pred.shape
                ));
            }
        }
    }
    Ok(TensorType::f32(Shape::scalar()))
}

// ---------------------------------------------------------------------------------------------
// Training ops: the backward graph and the optimizers' updates.

fn same_type(a: &TensorType, b: &TensorType, what: &str) -> R<()> {
    if a != b {
        return Err(format!("{what} must be {a} (the same type as input 0), got {b}"));
    }
    Ok(())
}

fn rot180(groups: usize, w: &TensorType) -> R<TensorType> {
    need_rank(w, 4, "weight")?;
    let [co, cg, kh, kw] = [w.dims()[0], w.dims()[1], w.dims()[2], w.dims()[3]];
    if groups == 0 || co % groups != 0 {
        return Err(format!("groups {groups} must divide the output channels {co}"));
    }
    let c = cg
        .checked_mul(groups)
        .ok_or_else(|| format!("channels {cg} × groups {groups} overflow"))?;
    Ok(TensorType::f32([c, co / groups, kh, kw]))
}

fn dilate_pad(stride: [usize; 2], padding: [i64; 4], x: &TensorType) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    need_pos(stride, "stride")?;
    let mut out = [0usize; 2];
    for a in 0..2 {
        let n = x.dims()[2 + a];
        if n == 0 {
            return Err(format!("the input has an empty spatial axis {a}"));
        }
        let dilated = i128::try_from((n - 1) as u128 * stride[a] as u128 + 1).unwrap_or(i128::MAX);
        if dilated > crate::limits::MAX_ELEMENTS as i128 {
            return Err(format!(
                "dilated size {dilated} on spatial axis {a} is above the limit of {} elements",
                crate::limits::MAX_ELEMENTS
            ));
        }
        let size = dilated + i128::from(padding[a]) + i128::from(padding[a + 2]);
        out[a] = usize::try_from(size)
            .ok()
            .filter(|&s| s > 0)
            .ok_or_else(|| format!("padding {padding:?} leaves spatial axis {a} of size {size}"))?;
    }
    Ok(TensorType::f32([x.dims()[0], x.dims()[1], out[0], out[1]]))
}

fn conv_weight_grad(c: &Conv2d, kernel: [usize; 2], x: &TensorType, dy: &TensorType) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    need_rank(dy, 4, "delta")?;
    need_pos(kernel, "kernel")?;
    if c.activation.is_some() {
        return Err("the convolution must have no fused activation (its gradient comes first)".into());
    }
    let g = c.groups;
    if g == 0 || !x.dims()[1].is_multiple_of(g) {
        return Err(format!(
            "groups {g} must divide the input channels {}",
            x.dims()[1]
        ));
    }
    let w = TensorType::f32([dy.dims()[1], x.dims()[1] / g, kernel[0], kernel[1]]);
    let y = conv2d(c, x, &w, &[x, &w])?;
    if &y != dy {
        return Err(format!("the convolution's output is {y}, but the delta is {dy}"));
    }
    Ok(w)
}

fn pool_ids(out: TensorType) -> TensorType {
    TensorType::i32(out.shape)
}

fn scatter_ids(size: [usize; 2], dy: &TensorType, ids: &TensorType) -> R<TensorType> {
    need_rank(dy, 4, "delta")?;
    need_pos(size, "size")?;
    if ids.dtype != DType::I32 || ids.shape != dy.shape {
        return Err(format!(
            "ids must be i32{} (the delta's shape), got {ids}",
            dy.shape
        ));
    }
    Ok(TensorType::f32([dy.dims()[0], dy.dims()[1], size[0], size[1]]))
}

/// The type of the input of a pooling whose output is `dy`, given the input's spatial size.
fn pool_input(input: [usize; 2], dy: &TensorType) -> R<TensorType> {
    need_rank(dy, 4, "delta")?;
    need_pos(input, "input size")?;
    Ok(TensorType::f32([dy.dims()[0], dy.dims()[1], input[0], input[1]]))
}

fn pool2d_grad(p: &Pool2d, input: [usize; 2], dy: &TensorType) -> R<TensorType> {
    if p.kind == PoolKind::Max {
        return Err("max pooling's backward is scatter_ids2d over max_pool2d_ids".into());
    }
    let x = pool_input(input, dy)?;
    let y = pool2d(p, &x)?;
    if &y != dy {
        return Err(format!("pooling an input {x} gives {y}, but the delta is {dy}"));
    }
    Ok(x)
}

fn reduce_sum_to(shape: &[usize], x: &TensorType) -> R<TensorType> {
    need_f32(x, "input")?;
    let b = broadcast_shapes(shape, x.dims())?;
    if b.dims() != x.dims() {
        return Err(format!(
            "shape {shape:?} does not broadcast to the input's {}",
            x.shape
        ));
    }
    Ok(TensorType::f32(shape.to_vec()))
}

fn slice(axis: i64, start: usize, end: usize, x: &TensorType) -> R<TensorType> {
    let a = normalize_axis(axis, x.rank(), false)?;
    if start >= end || end > x.dims()[a] {
        return Err(format!(
            "slice {start}..{end} is empty or outside axis {a} of size {}",
            x.dims()[a]
        ));
    }
    let mut d = x.dims().to_vec();
    d[a] = end - start;
    Ok(TensorType::new(x.dtype, d))
}

fn update(u: &Update, inputs: &[&TensorType]) -> R<TensorType> {
    let finite = |v: f32, what: &str| -> R<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(format!("{what} must be finite, got {v}"))
        }
    };
    let x = inputs[0];
    need_f32(x, "input 0")?;
    match *u {
        Update::Count => {
            if x.rank() != 0 {
                return Err(format!("the step count must be a scalar f32[], got {x}"));
            }
            return Ok(x.clone());
        }
        Update::SgdVelocity {
            momentum,
            weight_decay,
        } => {
            finite(momentum, "momentum")?;
            finite(weight_decay, "weight_decay")?;
        }
        Update::SgdParam { lr, weight_decay } => {
            finite(lr, "lr")?;
            finite(weight_decay, "weight_decay")?;
        }
        Update::AdamMoment {
            beta, weight_decay, ..
        } => {
            finite(beta, "beta")?;
            finite(weight_decay, "weight_decay")?;
        }
        Update::AdamParam {
            lr,
            beta1,
            beta2,
            eps,
        } => {
            for (v, w) in [(lr, "lr"), (beta1, "beta1"), (beta2, "beta2"), (eps, "eps")] {
                finite(v, w)?;
            }
            let t = inputs[3];
            if *t != TensorType::f32(Shape::scalar()) {
                return Err(format!("the step count (input 3) must be f32[], got {t}"));
            }
            for (i, t) in inputs[1..3].iter().enumerate() {
                same_type(x, t, &format!("input {}", i + 1))?;
            }
            return Ok(x.clone());
        }
    }
    for (i, t) in inputs.iter().enumerate().skip(1) {
        same_type(x, t, &format!("input {i}"))?;
    }
    Ok(x.clone())
}

fn batch_norm_train(part: BnPart, epsilon: f32, inputs: &[&TensorType]) -> R<TensorType> {
    let x = inputs[0];
    need_f32(x, "input")?;
    if x.rank() < 2 || x.shape.numel() == 0 {
        return Err(format!("input must be a non-empty [N, C, …], got {}", x.shape));
    }
    if !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(format!("epsilon must be finite and non-negative, got {epsilon}"));
    }
    let c = x.dims()[1];
    let per_channel = |t: &TensorType, what: &str| -> R<()> {
        need_f32(t, what)?;
        if t.dims() != [c] {
            return Err(format!("{what} must have shape [{c}], got {}", t.shape));
        }
        Ok(())
    };
    match part {
        BnPart::Forward => {
            per_channel(inputs[1], "scale")?;
            per_channel(inputs[2], "bias")?;
            Ok(x.clone())
        }
        BnPart::GradX => {
            per_channel(inputs[1], "scale")?;
            same_type(x, inputs[2], "the delta")?;
            Ok(x.clone())
        }
        BnPart::GradScale => {
            same_type(x, inputs[1], "the delta")?;
            Ok(TensorType::f32([c]))
        }
        BnPart::Mean | BnPart::Var => Ok(TensorType::f32([c])),
    }
}

/// The output type of `op` applied to `inputs`, or why that is impossible.
pub fn infer(op: &Op, inputs: &[&TensorType]) -> R<TensorType> {
    let ty = infer_unchecked(op, inputs)?;
    crate::limits::check_dims(ty.dims()).map_err(|e| format!("output type {}: {e}", short_type(&ty)))?;
    Ok(ty)
}

/// `ty` for an error message: the whole type, or its rank and first dims when it is long.
fn short_type(ty: &TensorType) -> String {
    if ty.rank() <= crate::limits::MAX_RANK {
        ty.to_string()
    } else {
        format!(
            "{} of rank {} (first dims {:?})",
            ty.dtype,
            ty.rank(),
            &ty.dims()[..4]
        )
    }
}

/// The op's own shape rule, before the size limits.
fn infer_unchecked(op: &Op, inputs: &[&TensorType]) -> R<TensorType> {
    if !op.arity().accepts(inputs.len()) {
        return Err(format!("takes {} inputs, got {}", op.arity(), inputs.len()));
    }
    if let Some(t) = op.source_type() {
        return Ok(t.clone());
    }
    let x = inputs[0];
    match op {
        Op::Input(_) | Op::Param { .. } => unreachable!("source ops returned above"),
        Op::Conv2d(c) => conv2d(c, x, inputs[1], inputs),
        Op::ConvTranspose2d(c) => conv_transpose2d(c, x, inputs[1], inputs),
        Op::Pool2d(p) => pool2d(p, x),
        Op::GlobalPool(_) => {
            need_rank(x, 4, "input")?;
            if x.dims()[2] == 0 || x.dims()[3] == 0 {
                return Err("cannot pool an empty plane".into());
            }
            Ok(TensorType::f32([x.dims()[0], x.dims()[1], 1, 1]))
        }
        Op::AdaptivePool { kind: _, output } => {
            need_rank(x, 4, "input")?;
            need_pos(*output, "output size")?;
            if x.dims()[2] == 0 || x.dims()[3] == 0 {
                return Err("cannot pool an empty plane".into());
            }
            Ok(TensorType::f32([x.dims()[0], x.dims()[1], output[0], output[1]]))
        }
        Op::Activation(a) => {
            need_f32(x, "input")?;
            check_activation(a)?;
            Ok(x.clone())
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            need_f32(x, "input")?;
            normalize_axis(*axis, x.rank(), false)?;
            Ok(x.clone())
        }
        Op::Dense => {
            let w = inputs[1];
            need_rank(x, 2, "input")?;
            need_rank(w, 2, "weight")?;
            if w.dims()[1] != x.dims()[1] {
                return Err(format!(
                    "weight [O, I] must have I = {} (the input's features), got {}",
                    x.dims()[1],
                    w.shape
                ));
            }
            optional_bias(inputs, w.dims()[0])?;
            Ok(TensorType::f32([x.dims()[0], w.dims()[0]]))
        }
        Op::MatMul => matmul(x, inputs[1]),
        Op::Flatten { axis } => {
            let a = normalize_axis(*axis, x.rank(), true)?;
            let d = x.dims();
            let prod = |d: &[usize]| {
                d.iter()
                    .try_fold(1usize, |p, &n| p.checked_mul(n))
                    .ok_or_else(|| format!("flattened size of {} overflows", x.shape))
            };
            Ok(TensorType::new(x.dtype, [prod(&d[..a])?, prod(&d[a..])?]))
        }
        Op::Reshape { shape } => reshape(shape, x),
        Op::Transpose { perm } => {
            let mut seen = vec![false; x.rank()];
            if perm.len() != x.rank()
                || perm
                    .iter()
                    .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
            {
                return Err(format!(
                    "perm {perm:?} is not a permutation of the {} axes",
                    x.rank()
                ));
            }
            Ok(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.dims()[p]).collect::<Vec<_>>(),
            ))
        }
        Op::Binary(_) => {
            let y = inputs[1];
            need_f32(x, "left operand")?;
            need_f32(y, "right operand")?;
            Ok(TensorType::f32(broadcast_shapes(x.dims(), y.dims())?))
        }
        Op::Concat { axis } => {
            let a = normalize_axis(*axis, x.rank(), false)?;
            let mut out = x.dims().to_vec();
            for (i, t) in inputs.iter().enumerate().skip(1) {
                let same_rest = t.rank() == x.rank()
                    && t.dims()
                        .iter()
                        .zip(x.dims())
                        .enumerate()
                        .all(|(j, (p, q))| j == a || p == q);
                if t.dtype != x.dtype || !same_rest {
                    return Err(format!(
                        "input {i} is {t}, but concat along axis {a} needs {} with every other dim equal",
                        x
                    ));
                }
                out[a] = out[a]
                    .checked_add(t.dims()[a])
                    .ok_or_else(|| format!("concatenated size on axis {a} overflows"))?;
            }
            Ok(TensorType::new(x.dtype, out))
        }
        Op::Dropout { ratio, .. } => {
            need_f32(x, "input")?;
            if !(0.0..1.0).contains(ratio) {
                return Err(format!("ratio must be in [0, 1), got {ratio}"));
            }
            Ok(x.clone())
        }
        Op::BatchNorm { epsilon, .. } => {
            need_f32(x, "input")?;
            if x.rank() < 2 {
                return Err(format!("input must be [N, C, …], got {}", x.shape));
            }
            if !(epsilon.is_finite() && *epsilon >= 0.0) {
                return Err(format!("epsilon must be finite and non-negative, got {epsilon}"));
            }
            let c = x.dims()[1];
            for (t, what) in inputs[1..].iter().zip(["scale", "bias", "mean", "var"]) {
                need_f32(t, what)?;
                if t.dims() != [c] {
                    return Err(format!("{what} must have shape [{c}], got {}", t.shape));
                }
            }
            Ok(x.clone())
        }
        Op::Lrn {
            size,
            alpha,
            beta,
            bias,
        } => lrn(*size, *alpha, *beta, *bias, x),
        Op::ReduceMean { axes, keepdims } => {
            need_f32(x, "input")?;
            Ok(TensorType::f32(reduce_dims(axes, *keepdims, x.dims())?))
        }
        Op::Loss(kind) => loss(*kind, x, inputs[1]),
        Op::Im2Col(c) => im2col(c, x),
        Op::Gemm(g) => gemm(g, inputs),
        Op::Rsqrt { epsilon } => {
            need_f32(x, "input")?;
            if !(epsilon.is_finite() && *epsilon >= 0.0) {
                return Err(format!("epsilon must be finite and non-negative, got {epsilon}"));
            }
            Ok(x.clone())
        }
        Op::Train(TrainOp::Rot180 { groups }) => rot180(*groups, x),
        Op::Train(TrainOp::DilatePad { stride, padding }) => dilate_pad(*stride, *padding, x),
        Op::Train(TrainOp::ConvWeightGrad { conv, kernel }) => conv_weight_grad(conv, *kernel, x, inputs[1]),
        Op::Train(TrainOp::MaxPoolIds(p)) => {
            if p.kind != PoolKind::Max {
                return Err(format!("needs max pooling, got {}", Op::Pool2d(p.clone()).name()));
            }
            pool2d(p, x).map(pool_ids)
        }
        Op::Train(TrainOp::AdaptiveMaxPoolIds { output }) => infer(
            &Op::AdaptivePool {
                kind: crate::op::ReduceKind::Max,
                output: *output,
            },
            &[x],
        )
        .map(pool_ids),
        Op::Train(TrainOp::ScatterIds { size }) => scatter_ids(*size, x, inputs[1]),
        Op::Train(TrainOp::Pool2dGrad { pool, input }) => pool2d_grad(pool, *input, x),
        Op::Train(TrainOp::AdaptiveAvgPoolGrad { input }) => pool_input(*input, x),
        Op::Train(TrainOp::ActivationGrad(a)) => {
            infer(&Op::Activation(*a), &[x])?;
            same_type(x, inputs[1], "the delta")?;
            Ok(x.clone())
        }
        Op::Train(TrainOp::SoftmaxGrad { axis }) | Op::Train(TrainOp::LogSoftmaxGrad { axis }) => {
            need_f32(x, "output")?;
            normalize_axis(*axis, x.rank(), false)?;
            same_type(x, inputs[1], "the delta")?;
            Ok(x.clone())
        }
        Op::Train(TrainOp::ReduceSumTo { shape }) => reduce_sum_to(shape, x),
        Op::Train(TrainOp::BroadcastTo { shape }) => broadcast_to(shape, x),
        Op::Train(TrainOp::LrnGrad {
            size,
            alpha,
            beta,
            bias,
        }) => {
            lrn(*size, *alpha, *beta, *bias, x)?;
            same_type(x, inputs[1], "the delta")?;
            Ok(x.clone())
        }
        Op::Train(TrainOp::LossGrad(kind)) => {
            loss(*kind, x, inputs[1])?;
            Ok(x.clone())
        }
        Op::Slice { axis, start, end } => slice(*axis, *start, *end, x),
        Op::Scale { factor } => {
            need_f32(x, "input")?;
            if !factor.is_finite() {
                return Err(format!("factor must be finite, got {factor}"));
            }
            Ok(x.clone())
        }
        Op::Train(TrainOp::Update(u)) => update(u, inputs),
        Op::Train(TrainOp::BatchNormTrain { part, epsilon }) => batch_norm_train(*part, *epsilon, inputs),
        Op::Train(TrainOp::DropoutTrain { ratio, .. }) => {
            infer(
                &Op::Dropout {
                    ratio: *ratio,
                    seed: 0,
                },
                &[x],
            )?;
            if *inputs[1] != TensorType::f32(Shape::scalar()) {
                return Err(format!(
                    "the step count (input 1) must be f32[], got {}",
                    inputs[1]
                ));
            }
            Ok(x.clone())
        }
    }
}

fn im2col(c: &crate::op::Im2Col, x: &TensorType) -> R<TensorType> {
    need_rank(x, 4, "input")?;
    need_f32(x, "input")?;
    need_pos(c.stride, "stride")?;
    need_pos(c.dilation, "dilation")?;
    need_pos(c.kernel, "kernel")?;
    let [n, ch, h, w] = [x.dims()[0], x.dims()[1], x.dims()[2], x.dims()[3]];
    let [oh, ow] = c.geometry(&[n, ch, h, w])?.output;
    let rows = ch
        .checked_mul(c.kernel[0])
        .and_then(|r| r.checked_mul(c.kernel[1]))
        .ok_or("patch matrix too large")?;
    let cols = oh.checked_mul(ow).ok_or("patch matrix too large")?;
    Ok(TensorType::f32([n, rows, cols]))
}

fn gemm(g: &crate::op::Gemm, inputs: &[&TensorType]) -> R<TensorType> {
    let want = 2 + usize::from(g.bias) + usize::from(g.residual);
    if inputs.len() != want {
        return Err(format!(
            "takes {want} inputs with bias={} and residual={}, got {}",
            g.bias,
            g.residual,
            inputs.len()
        ));
    }
    let (a, b) = (inputs[0], inputs[1]);
    need_rank(a, 2, "a")?;
    need_rank(b, 3, "b")?;
    need_f32(a, "a")?;
    need_f32(b, "b")?;
    let [m, kg] = [a.dims()[0], a.dims()[1]];
    let [n, k, l] = [b.dims()[0], b.dims()[1], b.dims()[2]];
    let gr = g.groups;
    if gr == 0 || m % gr != 0 || k % gr != 0 || k / gr != kg {
        return Err(format!(
            "groups {gr} must divide M = {m} and K = {k}, with a holding K/groups columns: a is {}, b is {}",
            a.shape, b.shape
        ));
    }
    if let Some(a) = &g.activation {
        check_activation(a)?;
    }
    if g.bias {
        need_f32(inputs[2], "bias")?;
        if inputs[2].dims() != [m] {
            return Err(format!("bias must have shape [{m}], got {}", inputs[2].shape));
        }
    }
    let out = TensorType::f32([n, m, l]);
    if g.residual {
        let r = inputs[want - 1];
        if r != &out {
            return Err(format!("residual must be {out}, got {r}"));
        }
    }
    Ok(out)
}
