use super::*;

/// Gemm: `alpha·A·B + beta·C`.
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
    let b_const = im.constant(n, 1, "B").ok().flatten();
    let b_name = n.input.get(1).cloned().unwrap_or_default();
    // y = alpha·A·B, as a Dense layer over a constant B ([N, K] after transposing) or a MatMul
    let (y, n_out) = match &b_const {
        Some(c) if c.as_f32().is_some() && c.dims.len() == 2 => {
            let data = c.as_f32().unwrap_or_default();
            let [r, s] = [c.dims[0], c.dims[1]];
            let (rows, cols) = if trans_b { (r, s) } else { (s, r) };
            let w = if trans_b && alpha == 1.0 {
                im.materialize(&b_name, c, true)?
            } else {
                im.charge(&b_name, data.len())?;
                let w: Vec<f32> = if trans_b {
                    data.iter().map(|v| v * alpha).collect()
                } else {
                    let mut t = vec![0.0; data.len()];
                    for (i, row) in data.chunks_exact(s.max(1)).enumerate().take(r) {
                        for (j, &v) in row.iter().enumerate() {
                            t[j * r + i] = v * alpha;
                        }
                    }
                    t
                };
                im.param(&format!("{b_name}.gemm"), vec![rows, cols], w, true)?
            };
            // a bias of N values along the rows becomes the Dense bias
            let bias = match im.constant(n, 2, "C").ok().flatten() {
                Some(cc)
                    if cc.as_f32().is_some()
                        && cc.len() == rows
                        && cc.dims.iter().rev().skip(1).all(|&d| d == 1) =>
                {
                    let c_name = n.input[2].clone();
                    Some(if beta == 1.0 && cc.dims.len() == 1 {
                        im.materialize(&c_name, &cc, true)?
                    } else {
                        im.charge(&c_name, rows)?;
                        let data: Vec<f32> =
                            cc.as_f32().unwrap_or_default().iter().map(|v| v * beta).collect();
                        im.param(&format!("{c_name}.gemm"), vec![rows], data, true)?
                    })
                }
                _ => None,
            };
            let mut ins = vec![x, w];
            ins.extend(bias);
            let name = if bias.is_some() || im.val(n, 2)?.is_none() {
                out.to_string()
            } else {
                format!("{out}.ab")
            };
            let y = im.add(n, &name, Op::Dense, &ins)?;
            if bias.is_some() {
                return Ok(vec![Val::Node(y)]);
            }
            (y, rows)
        }
        _ => {
            let mut b = im.tensor(n, 1)?;
            if trans_b {
                b = im.add(n, &format!("{out}.b_t"), Op::Transpose { perm: vec![1, 0] }, &[b])?;
            }
            let last = im.val(n, 2)?.is_none() && alpha == 1.0;
            let name = if last {
                out.to_string()
            } else {
                format!("{out}.ab")
            };
            let mut y = im.add(n, &name, Op::MatMul, &[x, b])?;
            if alpha != 1.0 {
                let s = im.param(&format!("{out}.alpha"), vec![1], vec![alpha], false)?;
                let name = if im.val(n, 2)?.is_none() {
                    out.to_string()
                } else {
                    format!("{out}.alpha_ab")
                };
                y = im.add(n, &name, Op::Binary(BinaryOp::Mul), &[y, s])?;
            }
            let cols = im.ty(y).dims().get(1).copied().unwrap_or(0);
            (y, cols)
        }
    };
    let _ = n_out;
    let Some(cv) = im.val(n, 2)? else {
        return Ok(vec![Val::Node(y)]);
    };
    // C of another shape: y + beta·C with broadcasting
    let c = match cv {
        Val::Const(cc) if beta != 1.0 => {
            im.charge(&n.input[2], cc.len())?;
            let data: Vec<f32> = cc
                .as_f32()
                .ok_or_else(|| Fail::Unsupported("C is an integer tensor".into()))?
                .iter()
                .map(|v| v * beta)
                .collect();
            im.param(&format!("{}.gemm", n.input[2]), cc.dims.clone(), data, true)?
        }
        _ => {
            let c = im.tensor(n, 2)?;
            if beta != 1.0 {
                let s = im.param(&format!("{out}.beta"), vec![1], vec![beta], false)?;
                im.add(n, &format!("{out}.beta_c"), Op::Binary(BinaryOp::Mul), &[c, s])?
            } else {
                c
            }
        }
    };
    Ok(vec![Val::Node(im.add(
        n,
        out,
        Op::Binary(BinaryOp::Add),
        &[y, c],
    )?)])
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
