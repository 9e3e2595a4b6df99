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
    // all constants (shape arithmetic): folded
    let vals = (0..n.input.len())
        .map(|i| im.val(n, i))
        .collect::<F<Vec<Option<Val>>>>()?;
    let consts: Vec<Rc<Const>> = vals
        .iter()
        .filter_map(|v| match v {
            Some(Val::Const(c)) => Some(Rc::clone(c)),
            _ => None,
        })
        .collect();
    if !consts.is_empty() && consts.len() == n.input.len() && consts.iter().any(|c| c.as_i64().is_some()) {
        return Ok(vec![Val::Const(Rc::new(concat_consts(
            im, n, out, &consts, axis,
        )?))]);
    }
    let mut ins = Vec::with_capacity(n.input.len());
    for i in 0..n.input.len() {
        ins.push(im.tensor(n, i)?);
    }
    one(im.add(n, out, Op::Concat { axis }, &ins)?)
}

/// Constants joined along `axis` (all of one element type, dims equal but on `axis`).
fn concat_consts(im: &mut Importer, n: &NodeProto, out: &str, cs: &[Rc<Const>], axis: i64) -> F<Const> {
    let first = &cs[0];
    let ax = super::axis(n, axis, first.dims.len(), "axis")?;
    let mut dims = first.dims.clone();
    dims[ax] = 0;
    for c in cs {
        let same_rest = c.dims.len() == first.dims.len()
            && (0..dims.len()).all(|i| i == ax || c.dims[i] == first.dims[i]);
        if !same_rest || (c.as_i64().is_some() != first.as_i64().is_some()) {
            return Err(invalid(
                n,
                format!("cannot join constants of dims {:?} and {:?}", first.dims, c.dims),
            ));
        }
        dims[ax] += c.dims[ax];
    }
    let outer: usize = dims[..ax].iter().product();
    let inner: usize = dims[ax + 1..].iter().product();
    let numel = outer * dims[ax] * inner;
    charge_elems(im, out, numel, first.as_i64().is_some())?;
    let mut folded = Const {
        dims,
        data: match &first.data {
            ConstData::F32(_) => ConstData::F32(Vec::with_capacity(numel)),
            ConstData::I64(_) => ConstData::I64(Vec::with_capacity(numel)),
        },
    };
    for o in 0..outer {
        for c in cs {
            let rows = c.dims[ax] * inner;
            match (&mut folded.data, &c.data) {
                (ConstData::F32(v), ConstData::F32(s)) => v.extend_from_slice(&s[o * rows..(o + 1) * rows]),
                (ConstData::I64(v), ConstData::I64(s)) => v.extend_from_slice(&s[o * rows..(o + 1) * rows]),
                _ => {}
            }
        }
    }
    Ok(folded)
}

/// Shape: the input's static dims, `start..end` (opset 15), as a constant. A symbolic batch
/// was imported as 1 (or the `--batch` given), and that is the value folded.
pub(crate) fn shape(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["start", "end"])?;
    let dims = super::dims_of(im, n, 0)?;
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(a.int("start", 0)?);
    let end = clamp(a.int("end", r)?);
    let v: Vec<i64> = dims[start..end.max(start)].iter().map(|&d| d as i64).collect();
    im.charge(out, 2 * v.len())?;
    Ok(vec![Val::Const(Rc::new(Const::i64(vec![v.len()], v)))])
}

/// Squeeze: the listed size-1 axes (all of them when none are listed) removed; `axes` an
/// attribute before opset 13, a constant input from 13. A Reshape, folded on a constant.
pub(crate) fn squeeze(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axes"])?;
    let dims = super::dims_of(im, n, 0)?;
    let listed = if im.opset < 13 {
        a.ints("axes")?
    } else {
        im.constant(n, 1, "axes")?
            .map(|c| {
                c.as_i64()
                    .map(<[i64]>::to_vec)
                    .ok_or_else(|| invalid(n, "axes must be int64"))
            })
            .transpose()?
    };
    let squeezed: Vec<usize> = match &listed {
        None => (0..dims.len()).filter(|&i| dims[i] == 1).collect(),
        Some(l) => l
            .iter()
            .map(|&v| super::axis(n, v, dims.len(), "axis"))
            .collect::<F<Vec<usize>>>()?,
    };
    if let Some(&bad) = squeezed.iter().find(|&&i| dims[i] != 1) {
        return Err(invalid(n, format!("axis {bad} of dims {dims:?} is not 1")));
    }
    let kept: Vec<usize> = (0..dims.len())
        .filter(|i| !squeezed.contains(i))
        .map(|i| dims[i])
        .collect();
    reshape_to(im, n, out, kept)
}

/// Input 0 under new dims (same elements in order): a constant folded unless it is a float
/// initializer (which stays the file's tensor under a `reshape`), else a `reshape`.
fn reshape_to(im: &mut Importer, n: &NodeProto, out: &str, dims: Vec<usize>) -> F<Vec<Val>> {
    match im.val(n, 0)? {
        Some(Val::Const(c)) if !(c.as_f32().is_some() && im.is_initializer(&c)) => {
            charge_elems(im, out, c.len(), c.as_i64().is_some())?;
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

/// Cast: of a constant, folded (floats to f32, integers and booleans to i64; a float to an
/// integer type truncates toward zero); of a computed tensor, only to a float type (kiln's
/// tensors are f32 already), an alias.
pub(crate) fn cast(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    use crate::proto::data_type as dt;
    a.known(&["to", "saturate", "round_mode"])?;
    let to = a
        .opt_int("to")?
        .ok_or_else(|| invalid(n, "attribute `to` is required"))? as i32;
    let to_float = matches!(to, dt::FLOAT | dt::DOUBLE | dt::FLOAT16);
    let to_int = matches!(
        to,
        dt::INT8 | dt::INT16 | dt::INT32 | dt::INT64 | dt::UINT8 | dt::UINT16 | dt::BOOL
    );
    if !to_float && !to_int {
        return unsupported(format!("a cast to {}", dt::name(to)));
    }
    match im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))? {
        Val::Const(c) => {
            charge_elems(im, out, c.len(), to_int)?;
            let data = match (&c.data, to_float) {
                (ConstData::F32(_), true) | (ConstData::I64(_), false) if to != dt::BOOL => c.data.clone(),
                (ConstData::I64(v), true) => ConstData::F32(v.iter().map(|&x| x as f32).collect()),
                (ConstData::F32(v), false) if to == dt::BOOL => {
                    ConstData::I64(v.iter().map(|&x| i64::from(x != 0.0)).collect())
                }
                (ConstData::I64(v), false) => ConstData::I64(v.iter().map(|&x| i64::from(x != 0)).collect()),
                (ConstData::F32(v), _) => {
                    if v.iter().any(|x| !x.is_finite()) {
                        return unsupported("a cast of a non-finite float to an integer type");
                    }
                    ConstData::I64(v.iter().map(|&x| x.trunc() as i64).collect())
                }
            };
            Ok(vec![Val::Const(Rc::new(Const {
                dims: c.dims.clone(),
                data,
            }))])
        }
        v if to_float => Ok(vec![v]),
        _ => unsupported(format!(
            "a cast of a computed tensor to {}; kiln computes in f32",
            dt::name(to)
        )),
    }
}

/// Slice (the ONNX operator): `starts`, `ends`, `axes` (attributes before opset 10, constant
/// inputs from 10), `steps` (10). Folded on a constant (any non-zero step); on a tensor one
/// `slice` per sliced axis, step 1 only.
pub(crate) fn slice(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["starts", "ends", "axes"])?;
    let dims = super::dims_of(im, n, 0)?;
    let r = dims.len();
    let list = |i: usize, attr: &str, what: &str| -> F<Option<Vec<i64>>> {
        if im.opset < 10 {
            return a.ints(attr);
        }
        im.constant(n, i, what)?
            .map(|c| {
                c.as_i64()
                    .map(<[i64]>::to_vec)
                    .ok_or_else(|| invalid(n, format!("{what} must be int64")))
            })
            .transpose()
    };
    let starts = list(1, "starts", "starts")?.ok_or_else(|| invalid(n, "starts are required"))?;
    let ends = list(2, "ends", "ends")?.ok_or_else(|| invalid(n, "ends are required"))?;
    let axes = list(3, "axes", "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = if im.opset < 10 {
        None
    } else {
        list(4, "", "steps")?
    }
    .unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(invalid(n, "starts, ends, axes and steps differ in length"));
    }
    // per axis: (start, step, count)
    let mut plan: Vec<(usize, i64, usize)> = dims.iter().map(|&d| (0, 1, d)).collect();
    let mut seen = vec![false; r];
    for k in 0..starts.len() {
        let ax = super::axis(n, axes[k], r, "axis")?;
        if std::mem::replace(&mut seen[ax], true) {
            return Err(invalid(n, format!("axis {ax} is sliced twice")));
        }
        let d = dims[ax] as i64;
        let step = steps[k];
        if step == 0 {
            return Err(invalid(n, "a step of 0"));
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (start, end) = if step > 0 {
            (norm(starts[k]).clamp(0, d), norm(ends[k]).clamp(0, d))
        } else {
            (norm(starts[k]).clamp(-1, d - 1), norm(ends[k]).clamp(-1, d - 1))
        };
        let count = if step > 0 {
            ((end - start).max(0) as u64).div_ceil(step.unsigned_abs())
        } else {
            ((start - end).max(0) as u64).div_ceil(step.unsigned_abs())
        };
        if count == 0 {
            return unsupported(format!("slicing axis {ax} to an empty tensor"));
        }
        plan[ax] = (start as usize, step, count as usize);
    }
    match im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))? {
        Val::Const(c) if !(c.as_f32().is_some() && im.is_initializer(&c)) => {
            let out_dims: Vec<usize> = plan.iter().map(|p| p.2).collect();
            let numel: usize = out_dims.iter().product();
            charge_elems(im, out, numel, c.as_i64().is_some())?;
            // row-major strides of the input
            let mut strides = vec![1usize; r];
            for i in (0..r.saturating_sub(1)).rev() {
                strides[i] = strides[i + 1] * dims[i + 1];
            }
            let index = |mut flat: usize| -> usize {
                let mut src = 0;
                for i in (0..r).rev() {
                    let o = flat % out_dims[i];
                    flat /= out_dims[i];
                    let (s, st, _) = plan[i];
                    src += (s as i64 + o as i64 * st) as usize * strides[i];
                }
                src
            };
            let data = match &c.data {
                ConstData::F32(v) => ConstData::F32((0..numel).map(|f| v[index(f)]).collect()),
                ConstData::I64(v) => ConstData::I64((0..numel).map(|f| v[index(f)]).collect()),
            };
            Ok(vec![Val::Const(Rc::new(Const { dims: out_dims, data }))])
        }
        _ => {
            let mut y = im.tensor(n, 0)?;
            let cut: Vec<usize> = (0..r).filter(|&i| plan[i] != (0, 1, dims[i])).collect();
            if cut.is_empty() {
                return one(y);
            }
            for (k, &ax) in cut.iter().enumerate() {
                let (start, step, count) = plan[ax];
                if step != 1 {
                    return unsupported(format!(
                        "step {step} on a computed tensor (kiln slices with step 1)"
                    ));
                }
                let name = if k + 1 == cut.len() {
                    out.to_string()
                } else {
                    format!("{out}.axis{ax}")
                };
                let op = Op::Slice {
                    axis: ax as i64,
                    start,
                    end: start + count,
                };
                y = im.add(n, &name, op, &[y])?;
            }
            one(y)
        }
    }
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
    // a constant is folded: the same data under the new dims; but a float initializer stays
    // the file's tensor under a Reshape (a constant subgraph), so that its gradient and
    // trained value are reported under its own name
    reshape_to(im, n, out, dims)
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

/// Rows `[start, end)` of a constant along `axis` (`start < end ≤ dims[axis]`).
fn slice_const(c: &Const, axis: usize, start: usize, end: usize) -> Const {
    let outer: usize = c.dims[..axis].iter().product();
    let inner: usize = c.dims[axis + 1..].iter().product();
    let d = c.dims[axis];
    let mut dims = c.dims.clone();
    dims[axis] = end - start;
    fn take<T: Copy>(v: &[T], outer: usize, d: usize, inner: usize, start: usize, end: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(outer * (end - start) * inner);
        for o in 0..outer {
            out.extend_from_slice(&v[(o * d + start) * inner..(o * d + end) * inner]);
        }
        out
    }
    Const {
        dims,
        data: match &c.data {
            ConstData::F32(v) => ConstData::F32(take(v, outer, d, inner, start, end)),
            ConstData::I64(v) => ConstData::I64(take(v, outer, d, inner, start, end)),
        },
    }
}

/// Charges the import for `elements` values of a constant it is about to compute (i64 values
/// count twice), before they are allocated.
fn charge_elems(im: &mut Importer, out: &str, elements: usize, int: bool) -> F<()> {
    im.charge(out, if int { elements.saturating_mul(2) } else { elements })
}

/// Split along `axis` into the sizes of `split` (an attribute before opset 13, a constant
/// input from 13), or `num_outputs` pieces of `⌈d/num_outputs⌉` (opset 18; the last one
/// smaller), or equal pieces, one per output: one `Op::Slice` per output something reads
/// (folded on a constant).
pub(crate) fn split(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis", "split", "num_outputs"])?;
    let x = im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
    let dims = super::dims_of(im, n, 0)?;
    let ax = super::axis(n, a.int("axis", 0)?, dims.len(), "axis")?;
    let d = dims[ax];
    let k = n.output.len();
    let given = if im.opset < 13 && n.input.len() < 2 {
        a.ints("split")?
    } else {
        match im.constant(n, 1, "split")? {
            Some(c) => Some(
                c.as_i64()
                    .ok_or_else(|| invalid(n, "split must be an integer tensor"))?
                    .to_vec(),
            ),
            None => None,
        }
    };
    let sizes: Vec<usize> = match (given, a.opt_int("num_outputs")?) {
        (Some(s), _) => {
            let sizes = s
                .iter()
                .map(|&v| to_usize(n, v, "split"))
                .collect::<F<Vec<usize>>>()?;
            let total = sizes.iter().try_fold(0usize, |t, &v| t.checked_add(v));
            if sizes.len() != k || total != Some(d) {
                return Err(invalid(
                    n,
                    format!("split {s:?} must have {k} entries summing to dim {ax} of size {d}"),
                ));
            }
            sizes
        }
        (None, Some(m)) => {
            if usize::try_from(m).ok() != Some(k) || k == 0 {
                return Err(invalid(n, format!("num_outputs {m} but {k} outputs")));
            }
            let chunk = d.div_ceil(k);
            if chunk * (k - 1) >= d && k > 1 {
                return unsupported(format!(
                    "{k} pieces of {chunk} of a dim of {d} leave the last one empty"
                ));
            }
            (0..k).map(|i| chunk.min(d - chunk * i)).collect()
        }
        (None, None) => {
            if k == 0 || d % k != 0 {
                return Err(invalid(
                    n,
                    format!("dim {ax} of size {d} does not split into {k} equal pieces"),
                ));
            }
            vec![d / k; k]
        }
    };
    if sizes.contains(&0) {
        return unsupported(format!("split sizes {sizes:?} make an empty tensor"));
    }
    let mut outs = Vec::with_capacity(k);
    let mut start = 0;
    for (i, &s) in sizes.iter().enumerate() {
        let end = start + s;
        outs.push(match &x {
            Val::Const(c) => {
                charge_elems(im, out, c.len() / d * s, c.as_i64().is_some())?;
                Val::Const(Rc::new(slice_const(c, ax, start, end)))
            }
            _ if !im.reads_output(n, i) => Val::Poisoned,
            _ => {
                let id = im.tensor(n, 0)?;
                let op = Op::Slice {
                    axis: ax as i64,
                    start,
                    end,
                };
                Val::Node(im.add(n, &n.output[i], op, &[id])?)
            }
        });
        start = end;
    }
    Ok(outs)
}

/// Gather with a constant index tensor along `axis`: folded on a constant (shapes), on a
/// tensor one `Op::Slice` per run of consecutive indices (joined by Concat), then a Reshape
/// to `data.dims[..axis] ++ indices.dims ++ data.dims[axis + 1..]` (a scalar index drops the
/// axis).
pub(crate) fn gather(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axis"])?;
    let x = im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?;
    let idx = im
        .constant(n, 1, "indices")?
        .ok_or_else(|| invalid(n, "input 1 (indices) is required"))?;
    let raw = idx
        .as_i64()
        .ok_or_else(|| invalid(n, "indices must be an integer tensor"))?;
    let dims = super::dims_of(im, n, 0)?;
    let ax = super::axis(n, a.int("axis", 0)?, dims.len(), "axis")?;
    let d = dims[ax];
    let indices = raw
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + d as i64 } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < d)
                .ok_or_else(|| invalid(n, format!("index {i} is out of range for dim {ax} of size {d}")))
        })
        .collect::<F<Vec<usize>>>()?;
    if indices.is_empty() {
        return unsupported("an empty index tensor makes an empty output");
    }
    let mut out_dims = dims[..ax].to_vec();
    out_dims.extend_from_slice(&idx.dims);
    out_dims.extend_from_slice(&dims[ax + 1..]);
    if out_dims.len() > kiln_ir::limits::MAX_RANK {
        return Err(invalid(
            n,
            format!("the output would have rank {}", out_dims.len()),
        ));
    }
    // runs of consecutive indices: [start, end)
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in &indices {
        match runs.last_mut() {
            Some((_, e)) if *e == i => *e += 1,
            _ => runs.push((i, i + 1)),
        }
    }
    if let Val::Const(c) = &x {
        // the runs in order along the axis, then the output dims (same elements in order)
        let outer: usize = dims[..ax].iter().product();
        let inner: usize = dims[ax + 1..].iter().product();
        let numel = outer
            .checked_mul(indices.len())
            .and_then(|v| v.checked_mul(inner))
            .filter(|&v| v <= crate::import::MAX_FOLDED_ELEMENTS)
            .ok_or_else(|| Fail::Unsupported("the gathered constant is too large to fold".into()))?;
        charge_elems(im, out, numel, c.as_i64().is_some())?;
        fn take<T: Copy>(
            v: &[T],
            outer: usize,
            d: usize,
            inner: usize,
            runs: &[(usize, usize)],
            numel: usize,
        ) -> Vec<T> {
            let mut out = Vec::with_capacity(numel);
            for o in 0..outer {
                for &(s, e) in runs {
                    out.extend_from_slice(&v[(o * d + s) * inner..(o * d + e) * inner]);
                }
            }
            out
        }
        let folded = Const {
            dims: out_dims,
            data: match &c.data {
                ConstData::F32(v) => ConstData::F32(take(v, outer, d, inner, &runs, numel)),
                ConstData::I64(v) => ConstData::I64(take(v, outer, d, inner, &runs, numel)),
            },
        };
        return Ok(vec![Val::Const(Rc::new(folded))]);
    }
    let xid = im.tensor(n, 0)?;
    let mut parts = Vec::with_capacity(runs.len());
    for (k, &(start, end)) in runs.iter().enumerate() {
        if start == 0 && end == d && runs.len() == 1 {
            parts.push(xid);
            break;
        }
        let op = Op::Slice {
            axis: ax as i64,
            start,
            end,
        };
        parts.push(im.add(n, &format!("{out}.slice{k}"), op, &[xid])?);
    }
    let mut y = parts[0];
    if parts.len() > 1 {
        y = im.add(
            n,
            &format!("{out}.concat"),
            Op::Concat { axis: ax as i64 },
            &parts,
        )?;
    }
    if im.ty(y).dims() == out_dims.as_slice() {
        return one(y);
    }
    let shape = out_dims.iter().map(|&v| v as i64).collect();
    one(im.add(n, out, Op::Reshape { shape }, &[y])?)
}
