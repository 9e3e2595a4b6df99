use super::*;

/// Relu, Sigmoid, Tanh, LeakyRelu.
pub(crate) fn activation(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["alpha", "consumed_inputs"])?;
    let act = match n.op_type.as_str() {
        "Relu" => Activation::Relu,
        "Sigmoid" => Activation::Sigmoid,
        "Tanh" => Activation::Tanh,
        _ => Activation::LeakyRelu {
            alpha: a.float("alpha", 0.01)?,
        },
    };
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Activation(act), &[x])?)
}

/// Softmax, LogSoftmax (before opset 13 over the input coerced to 2-D at `axis`).
pub(crate) fn softmax(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis"])?;
    let x = im.tensor(n, 0)?;
    let log = n.op_type == "LogSoftmax";
    let make = |axis| {
        if log {
            Op::LogSoftmax { axis }
        } else {
            Op::Softmax { axis }
        }
    };
    if im.opset >= 13 {
        let axis = a.int("axis", -1)?;
        return one(im.add(n, out, make(axis), &[x])?);
    }
    // Before opset 13: the input is coerced to 2-D at `axis` and normalized over
    // the second of those two dims, i.e. over all axes from `axis` on.
    let dims = im.ty(x).dims().to_vec();
    let r = dims.len() as i64;
    let axis = a.int("axis", 1)?;
    let ax = if axis < 0 { axis + r } else { axis };
    if !(0..r.max(1)).contains(&ax) {
        return Err(invalid(n, format!("axis {axis} is out of range for rank {r}")));
    }
    if ax == r - 1 {
        return one(im.add(n, out, make(-1), &[x])?);
    }
    let flat = im.add(n, &format!("{out}.flat"), Op::Flatten { axis: ax }, &[x])?;
    let s = im.add(n, &format!("{out}.2d"), make(1), &[flat])?;
    let mut shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    if ax == 1 {
        shape[0] = 0; // keep the batch dim symbolic for `Graph::with_batch`
    }
    one(im.add(n, out, Op::Reshape { shape }, &[s])?)
}

/// Clip: `min`/`max` attributes before opset 11, optional constant inputs 1 and 2 from then
/// on; a missing bound is infinite (ReLU6 is `Clip(x, 0, 6)`).
pub(crate) fn clip(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["min", "max", "consumed_inputs"])?;
    let (min, max) = if im.opset < 11 {
        (a.float("min", f32::NEG_INFINITY)?, a.float("max", f32::INFINITY)?)
    } else {
        (
            scalar(im, n, 1, "min")?.unwrap_or(f32::NEG_INFINITY),
            scalar(im, n, 2, "max")?.unwrap_or(f32::INFINITY),
        )
    };
    if min.is_nan() || max.is_nan() {
        return unsupported(format!("a NaN bound (min {min}, max {max})"));
    }
    // min > max: ONNX sets every element to max, which is Clip { max, max }
    let min = min.min(max);
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Activation(Activation::Clip { min, max }), &[x])?)
}

/// HardSigmoid: `max(0, min(1, alpha·x + beta))`.
pub(crate) fn hard_sigmoid(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["alpha", "beta", "consumed_inputs"])?;
    let act = Activation::HardSigmoid {
        alpha: a.float("alpha", 0.2)?,
        beta: a.float("beta", 0.5)?,
    };
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Activation(act), &[x])?)
}

/// HardSwish: `x · HardSigmoid { 1/6, 1/2 }(x)`, one activation (`Activation::HardSwish`).
pub(crate) fn hard_swish(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[])?;
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Activation(Activation::HardSwish), &[x])?)
}

/// Erf.
pub(crate) fn erf(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[])?;
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Activation(Activation::Erf), &[x])?)
}

/// Gelu (opset 20): exact, `(x + x·erf(x/√2))/2`, one activation (`Activation::Gelu`, which
/// a matrix product or convolution before it can finish with); with `approximate = "tanh"`
/// composed without constants, `(x + x·tanh(√(2/π)·(x + 0.044715·x³)))/2`.
pub(crate) fn gelu(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["approximate"])?;
    let approximate = a.string("approximate", "none")?;
    let x = im.tensor(n, 0)?;
    let mul = Op::Binary(BinaryOp::Mul);
    let s = match approximate.as_str() {
        "none" => return one(im.add(n, out, Op::Activation(Activation::Gelu), &[x])?),
        "tanh" => {
            let x2 = im.add(n, &format!("{out}.x2"), mul.clone(), &[x, x])?;
            let x3 = im.add(n, &format!("{out}.x3"), mul.clone(), &[x2, x])?;
            let c3 = im.add(n, &format!("{out}.cubic"), Op::Scale { factor: 0.044715 }, &[x3])?;
            let inner = im.add(n, &format!("{out}.inner"), Op::Binary(BinaryOp::Add), &[x, c3])?;
            let factor = (2.0f64 / std::f64::consts::PI).sqrt() as f32;
            let z = im.add(n, &format!("{out}.scaled"), Op::Scale { factor }, &[inner])?;
            im.add(n, &format!("{out}.tanh"), Op::Activation(Activation::Tanh), &[z])?
        }
        other => {
            return Err(invalid(
                n,
                format!("approximate `{other}` is not `none` or `tanh`"),
            ));
        }
    };
    let xs = im.add(n, &format!("{out}.xs"), mul, &[x, s])?;
    let sum = im.add(n, &format!("{out}.sum"), Op::Binary(BinaryOp::Add), &[x, xs])?;
    one(im.add(n, out, Op::Scale { factor: 0.5 }, &[sum])?)
}
