use super::*;

/// Concat.
pub(crate) fn concat(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis"])?;
    let axis = if im.opset < 4 {
        a.int("axis", 1)?
    } else {
        a.opt_int("axis")?
            .ok_or_else(|| invalid(n, "attribute `axis` is required"))?
    };
    let mut ins = Vec::with_capacity(n.input.len());
    for i in 0..n.input.len() {
        ins.push(im.tensor(n, i)?);
    }
    one(im.add(n, out, Op::Concat { axis }, &ins)?)
}

/// Flatten.
pub(crate) fn flatten(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis"])?;
    let x = im.tensor(n, 0)?;
    let axis = a.int("axis", 1)?;
    one(im.add(n, out, Op::Flatten { axis }, &[x])?)
}

/// Reshape to a constant shape (the `shape` attribute before opset 5).
pub(crate) fn reshape(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["shape", "allowzero", "consumed_inputs"])?;
    let shape = if im.opset < 5 {
        a.ints("shape")?
            .ok_or_else(|| invalid(n, "attribute `shape` is required"))?
    } else {
        let c = im
            .constant(n, 1, "shape")?
            .ok_or_else(|| invalid(n, "input 1 (shape) is required"))?;
        c.as_i64()
            .ok_or_else(|| invalid(n, "the shape must be an int64 tensor"))?
            .to_vec()
    };
    if a.int("allowzero", 0)? != 0 && shape.contains(&0) {
        return unsupported("allowzero = 1 with a 0 in the shape (an empty dim)");
    }
    let x = im.tensor(n, 0)?;
    one(im.add(n, out, Op::Reshape { shape }, &[x])?)
}

/// Transpose.
pub(crate) fn transpose(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["perm"])?;
    let x = im.tensor(n, 0)?;
    let r = im.ty(x).rank();
    let perm = match a.ints("perm")? {
        Some(p) => p
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| invalid(n, format!("perm {p:?} has a negative entry"))))
            .collect::<F<Vec<usize>>>()?,
        None => (0..r).rev().collect(),
    };
    one(im.add(n, out, Op::Transpose { perm }, &[x])?)
}

/// Unsqueeze: folded on a constant, a Reshape otherwise.
pub(crate) fn unsqueeze(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axes"])?;
    let axes = if im.opset < 13 {
        a.ints("axes")?
            .ok_or_else(|| invalid(n, "attribute `axes` is required"))?
    } else {
        let c = im
            .constant(n, 1, "axes")?
            .ok_or_else(|| invalid(n, "input 1 (axes) is required"))?;
        c.as_i64()
            .ok_or_else(|| invalid(n, "axes must be int64"))?
            .to_vec()
    };
    let x = im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
    let in_dims = match &x {
        Val::Const(c) => c.dims.clone(),
        _ => {
            let id = im.tensor(n, 0)?;
            im.ty(id).dims().to_vec()
        }
    };
    let rank = in_dims.len().saturating_add(axes.len());
    if rank > kiln_ir::limits::MAX_RANK {
        return Err(invalid(
            n,
            format!(
                "{} axes on a rank-{} input: rank {rank} is above the limit of {} dims",
                axes.len(),
                in_dims.len(),
                kiln_ir::limits::MAX_RANK
            ),
        ));
    }
    let r = rank as i64;
    let mut ones = vec![false; rank];
    for &ax in &axes {
        let a2 = if ax < 0 { ax + r } else { ax };
        if !(0..r).contains(&a2) || ones[a2 as usize] {
            return Err(invalid(
                n,
                format!("axes {axes:?} are out of range or repeated for output rank {r}"),
            ));
        }
        ones[a2 as usize] = true;
    }
    let mut rest = in_dims.iter();
    let dims: Vec<usize> = ones
        .iter()
        .map(|&o| if o { 1 } else { *rest.next().unwrap_or(&1) })
        .collect();
    match x {
        // a constant is folded: the same data under the new dims
        Val::Const(c) => {
            let held = match &c.data {
                ConstData::F32(v) => v.len(),
                ConstData::I64(v) => v.len().saturating_mul(2),
            };
            im.charge(out, held)?;
            Ok(vec![Val::Const(Rc::new(Const {
                dims,
                data: c.data.clone(),
            }))])
        }
        _ => {
            let id = im.tensor(n, 0)?;
            let shape = dims.iter().map(|&d| d as i64).collect();
            one(im.add(n, out, Op::Reshape { shape }, &[id])?)
        }
    }
}

/// Pad: a zero pad waits to be folded into the Conv or AveragePool that reads it.
pub(crate) fn pad(im: &mut Importer, n: &NodeProto, a: &Attrs, _out: &str) -> F<Vec<Val>> {
    a.known(&["mode", "pads", "paddings", "value"])?;
    let mode = a.string("mode", "constant")?;
    if mode != "constant" {
        return unsupported(format!(
            "mode `{mode}`; kiln supports constant (zero) padding only"
        ));
    }
    let x = match im.val(n, 0)? {
        Some(Val::Node(x)) => x,
        Some(_) => return unsupported("padding a constant or an already padded value"),
        None => return Err(invalid(n, "input 0 is required")),
    };
    let rank = im.ty(x).rank();
    let (pads, value, axes): (Vec<i64>, f32, Option<Vec<i64>>) = if im.opset < 11 {
        let key = if im.opset < 2 { "paddings" } else { "pads" };
        let pads = a
            .ints(key)?
            .ok_or_else(|| invalid(n, format!("attribute `{key}` is required")))?;
        (pads, a.float("value", 0.0)?, None)
    } else {
        let pads = im
            .constant(n, 1, "pads")?
            .ok_or_else(|| invalid(n, "input 1 (pads) is required"))?;
        let pads = pads
            .as_i64()
            .ok_or_else(|| invalid(n, "pads must be int64"))?
            .to_vec();
        let value = match im.constant(n, 2, "constant_value")? {
            None => 0.0,
            Some(c) => match &c.data {
                ConstData::F32(v) => v.first().copied().unwrap_or(0.0),
                ConstData::I64(v) => v.first().copied().unwrap_or(0) as f32,
            },
        };
        let axes = im
            .constant(n, 3, "axes")?
            .map(|c| c.as_i64().unwrap_or_default().to_vec());
        (pads, value, axes)
    };
    if value != 0.0 {
        return unsupported(format!(
            "constant value {value}; kiln folds only zero padding into a convolution or pool"
        ));
    }
    let axes: Vec<usize> = match axes {
        None => (0..rank).collect(),
        Some(ax) => ax
            .iter()
            .map(|&v| {
                let v = if v < 0 { v + rank as i64 } else { v };
                usize::try_from(v).ok().filter(|&v| v < rank)
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| invalid(n, format!("axes {ax:?} are out of range for rank {rank}")))?,
    };
    if pads.len() != 2 * axes.len() {
        return Err(invalid(n, format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    if rank != 4 {
        return unsupported(format!(
            "kiln folds Pad into 2-D layers only; the input has rank {rank}"
        ));
    }
    let mut per_axis = [[0i64; 2]; 4];
    for (i, &ax) in axes.iter().enumerate() {
        per_axis[ax] = [pads[i], pads[i + axes.len()]];
    }
    if per_axis.iter().flatten().any(|&p| p < 0) {
        return unsupported(format!("negative pads {pads:?} (cropping)"));
    }
    if per_axis[0] != [0, 0] || per_axis[1] != [0, 0] {
        return unsupported(format!("pads {pads:?} pad the batch or channel axis"));
    }
    let p = |v: i64| v as usize;
    let pads = [
        p(per_axis[2][0]),
        p(per_axis[3][0]),
        p(per_axis[2][1]),
        p(per_axis[3][1]),
    ];
    let name = n.output.first().cloned().unwrap_or_default();
    if pads == [0; 4] {
        return Ok(vec![Val::Node(x)]);
    }
    Ok(vec![Val::Padded {
        x,
        pads,
        pad: if n.name.is_empty() { name } else { n.name.clone() },
    }])
}

/// Identity: an alias of its input.
pub(crate) fn identity(im: &mut Importer, n: &NodeProto, a: &Attrs, _out: &str) -> F<Vec<Val>> {
    a.known(&[])?;
    let x = im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
    Ok(vec![x])
}

/// Dropout at inference: an alias of its input.
pub(crate) fn dropout(im: &mut Importer, n: &NodeProto, a: &Attrs, _out: &str) -> F<Vec<Val>> {
    a.known(&["ratio", "is_test", "seed", "consumed_inputs"])?;
    if im.reads_output(n, 1) {
        return unsupported("the mask output (second output) is not supported");
    }
    if im.opset < 7 && a.int("is_test", 0)? == 0 {
        return unsupported("training mode (is_test = 0)");
    }
    if let Some(t) = im.constant(n, 2, "training_mode")?
        && t.as_i64().is_some_and(|v| v.iter().any(|&b| b != 0))
    {
        return unsupported("training_mode = true");
    }
    let x = im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
    Ok(vec![x])
}
