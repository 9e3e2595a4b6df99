use super::*;

/// Gemm: `alpha·A·B + beta·C`. With a constant 2-D B, a Dense layer whose weight is the
/// file's B itself, transposed to `[N, K]` and scaled by `alpha` through graph ops on it (a
/// constant subgraph: the JIT evaluates it once when the weights are loaded, and autodiff
/// carries the gradient back to the file's tensor); a C of N values is its bias (scaled by
/// `beta` the same way). Otherwise MatMul, Scale and Add.
pub(crate) fn gemm(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["alpha", "beta", "transA", "transB", "broadcast"])?;
    let alpha = a.float("alpha", 1.0)?;
    let beta = a.float("beta", 1.0)?;
    let trans_b = a.int("transB", 0)? != 0;
    let mut x = im.tensor(n, 0)?;
    if im.ty(x).rank() != 2 {
        return Err(invalid(n, format!("A must be 2-D, it is {}", im.ty(x).shape)));
    }
    if a.int("transA", 0)? != 0 {
        x = im.add(n, &format!("{out}.a_t"), Op::Transpose { perm: vec![1, 0] }, &[x])?;
    }
    let has_c = im.val(n, 2)?.is_some();
    let b_const = im.constant(n, 1, "B").ok().flatten();
    let y = match &b_const {
        Some(c) if c.as_f32().is_some() && c.dims.len() == 2 => {
            let mut w = im.tensor(n, 1)?;
            if !trans_b {
                w = im.add(n, &format!("{out}.b_t"), Op::Transpose { perm: vec![1, 0] }, &[w])?;
            }
            if alpha != 1.0 {
                w = im.add(n, &format!("{out}.alpha_b"), Op::Scale { factor: alpha }, &[w])?;
            }
            let rows = im.ty(w).dims()[0];
            // a C of N values along the rows becomes the Dense bias
            let bias = match im.constant(n, 2, "C").ok().flatten() {
                Some(cc)
                    if cc.as_f32().is_some()
                        && cc.len() == rows
                        && cc.dims.iter().rev().skip(1).all(|&d| d == 1) =>
                {
                    let mut c = im.tensor(n, 2)?;
                    if cc.dims != [rows] {
                        let shape = vec![rows as i64];
                        c = im.add(n, &format!("{out}.c_flat"), Op::Reshape { shape }, &[c])?;
                    }
                    if beta != 1.0 {
                        c = im.add(n, &format!("{out}.beta_c"), Op::Scale { factor: beta }, &[c])?;
                    }
                    Some(c)
                }
                _ => None,
            };
            let mut ins = vec![x, w];
            ins.extend(bias);
            let name = if bias.is_some() || !has_c {
                out.to_string()
            } else {
                format!("{out}.ab")
            };
            let y = im.add(n, &name, Op::Dense, &ins)?;
            if bias.is_some() {
                return one(y);
            }
            y
        }
        _ => {
            let mut b = im.tensor(n, 1)?;
            if trans_b {
                b = im.add(n, &format!("{out}.b_t"), Op::Transpose { perm: vec![1, 0] }, &[b])?;
            }
            let name = if !has_c && alpha == 1.0 {
                out.to_string()
            } else {
                format!("{out}.ab")
            };
            let mut y = im.add(n, &name, Op::MatMul, &[x, b])?;
            if alpha != 1.0 {
                let name = if has_c {
                    format!("{out}.alpha_ab")
                } else {
                    out.to_string()
                };
                y = im.add(n, &name, Op::Scale { factor: alpha }, &[y])?;
            }
            y
        }
    };
    if !has_c {
        return one(y);
    }
    // C of another shape: y + beta·C with broadcasting
    let mut c = im.tensor(n, 2)?;
    if beta != 1.0 {
        c = im.add(n, &format!("{out}.beta_c"), Op::Scale { factor: beta }, &[c])?;
    }
    one(im.add(n, out, Op::Binary(BinaryOp::Add), &[y, c])?)
}

/// MatMul (NumPy semantics).
pub(crate) fn matmul(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[])?;
    let x = im.tensor(n, 0)?;
    let y = im.tensor(n, 1)?;
    one(im.add(n, out, Op::MatMul, &[x, y])?)
}

/// Add, Sub, Mul, Div with broadcasting (legacy `broadcast`/`axis` before opset 7).
pub(crate) fn binary(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["broadcast", "axis", "consumed_inputs"])?;
    let op = match n.op_type.as_str() {
        "Add" => BinaryOp::Add,
        "Sub" => BinaryOp::Sub,
        "Mul" => BinaryOp::Mul,
        _ => BinaryOp::Div,
    };
    // integer constants (shape arithmetic: `x.size(1) * x.size(2)`): folded, elementwise or
    // against one value
    if let (Some(Val::Const(p)), Some(Val::Const(q))) = (im.val(n, 0)?, im.val(n, 1)?)
        && let (Some(u), Some(v)) = (p.as_i64(), q.as_i64())
    {
        let (dims, long, short, swapped) = if v.len() == 1 {
            (p.dims.clone(), u, v[0], false)
        } else if u.len() == 1 {
            (q.dims.clone(), v, u[0], true)
        } else if p.dims == q.dims {
            (p.dims.clone(), u, 0, false)
        } else {
            return unsupported(format!(
                "integer arithmetic on constants of dims {:?} and {:?}",
                p.dims, q.dims
            ));
        };
        let f = |a: i64, b: i64| -> Option<i64> {
            match op {
                BinaryOp::Add => a.checked_add(b),
                BinaryOp::Sub => a.checked_sub(b),
                BinaryOp::Mul => a.checked_mul(b),
                BinaryOp::Div => a.checked_div(b),
            }
        };
        im.charge(out, 2 * long.len())?;
        let data = (0..long.len())
            .map(|i| {
                let b = if p.dims == q.dims && u.len() != 1 && v.len() != 1 {
                    v[i]
                } else {
                    short
                };
                let (l, r) = if swapped { (b, long[i]) } else { (long[i], b) };
                f(l, r)
            })
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(|| invalid(n, "integer arithmetic on constants overflows or divides by 0"))?;
        return Ok(vec![Val::Const(Rc::new(Const::i64(dims, data)))]);
    }
    let x = im.tensor(n, 0)?;
    let mut y = im.tensor(n, 1)?;
    if im.opset < 7 {
        // legacy broadcasting: without `broadcast = 1` the shapes must be equal;
        // with it, B's dims line up with A's from `axis` (default: at the end)
        let (ad, bd) = (im.ty(x).dims().to_vec(), im.ty(y).dims().to_vec());
        if a.int("broadcast", 0)? == 0 {
            if ad != bd {
                return Err(invalid(
                    n,
                    format!("shapes {ad:?} and {bd:?} differ and `broadcast` is 0"),
                ));
            }
        } else if let Some(axis) = a.opt_int("axis")? {
            let r = ad.len() as i64;
            let ax = if axis < 0 { axis + r } else { axis };
            if ax < 0 || ax as usize + bd.len() > ad.len() {
                return Err(invalid(
                    n,
                    format!("axis {axis} does not fit B {bd:?} into A {ad:?}"),
                ));
            }
            let mut shape = vec![1i64; ad.len()];
            for (i, &d) in bd.iter().enumerate() {
                shape[ax as usize + i] = d as i64;
            }
            if shape.len() != bd.len() {
                y = im.add(n, &format!("{out}.broadcast"), Op::Reshape { shape }, &[y])?;
            }
        }
    }
    one(im.add(n, out, Op::Binary(op), &[x, y])?)
}

/// Sum: an n-ary broadcasting add, as a chain of adds.
pub(crate) fn sum(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    // n-ary broadcasting add, as a chain of adds
    a.known(&["consumed_inputs"])?;
    if n.input.is_empty() {
        return Err(invalid(n, "Sum needs at least one input"));
    }
    if n.input.len() == 1 {
        return Ok(vec![
            im.val(n, 0)?.ok_or_else(|| invalid(n, "input 0 is required"))?,
        ]);
    }
    let mut acc = im.tensor(n, 0)?;
    for i in 1..n.input.len() {
        let y = im.tensor(n, i)?;
        let name = if i + 1 == n.input.len() {
            out.to_string()
        } else {
            format!("{out}.sum{i}")
        };
        acc = im.add(n, &name, Op::Binary(BinaryOp::Add), &[acc, y])?;
    }
    one(acc)
}
