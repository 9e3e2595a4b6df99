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
