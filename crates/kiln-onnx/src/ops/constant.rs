use super::*;
use crate::import::MAX_FOLDED_ELEMENTS;

/// Constant: a constant known at import.
pub(crate) fn constant(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["value", "value_float", "value_floats", "value_int", "value_ints"])?;
    let c = if let Some(t) = a.get("value") {
        let t =
            t.t.as_ref()
                .ok_or_else(|| invalid(n, "attribute `value` is not a tensor"))?;
        im.reader.read(t)?
    } else if let Some(f) = a.opt_float("value_float")? {
        Const::f32(vec![], vec![f])
    } else if let Some(v) = a.get("value_floats") {
        im.charge(out, v.floats.len())?;
        Const::f32(vec![v.floats.len()], v.floats.clone())
    } else if let Some(i) = a.opt_int("value_int")? {
        Const::i64(vec![], vec![i])
    } else if let Some(v) = a.ints("value_ints")? {
        im.charge(out, 2 * v.len())?;
        Const::i64(vec![v.len()], v)
    } else {
        return Err(invalid(n, "no value attribute"));
    };
    Ok(vec![Val::Const(Rc::new(c))])
}

/// ConstantOfShape: folded at import (the shape must be a constant).
pub(crate) fn constant_of_shape(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    // a constant filled with one value: folded at import (the shape must be known)
    a.known(&["value"])?;
    let shape = im
        .constant(n, 0, "shape")?
        .ok_or_else(|| invalid(n, "input 0 (shape) is required"))?;
    let shape = shape
        .as_i64()
        .ok_or_else(|| invalid(n, "the shape must be int64"))?;
    let dims = shape
        .iter()
        .map(|&d| to_usize(n, d, "shape"))
        .collect::<F<Vec<usize>>>()?;
    let numel =
        kiln_ir::limits::check_dims(&dims).map_err(|e| invalid(n, format!("shape {shape:?}: {e}")))?;
    if numel > MAX_FOLDED_ELEMENTS {
        return unsupported(format!(
            "shape {shape:?} has {numel} elements; kiln folds ConstantOfShape into a constant of at most {MAX_FOLDED_ELEMENTS}"
        ));
    }
    let value = match a.get("value").and_then(|v| v.t.as_ref()) {
        None => Const::f32(vec![], vec![0.0]),
        Some(t) => im.reader.read(t)?,
    };
    let c = match value.data {
        ConstData::F32(v) if v.len() == 1 => {
            im.charge(out, numel)?;
            Const::f32(dims, vec![v[0]; numel])
        }
        ConstData::I64(v) if v.len() == 1 => {
            im.charge(out, numel.saturating_mul(2))?;
            Const::i64(dims, vec![v[0]; numel])
        }
        _ => return Err(invalid(n, "`value` must hold one element")),
    };
    Ok(vec![Val::Const(Rc::new(c))])
}
