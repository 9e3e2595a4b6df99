use super::*;

/// ReduceMean: `axes` as an attribute (before opset 18) or a constant input (from 18),
/// `keepdims` (default 1), `noop_with_empty_axes` (18). Over the two spatial axes of an NCHW
/// tensor it is `GlobalPool(Avg)` (then Flatten without `keepdims`), else `Op::ReduceMean`.
pub(crate) fn reduce_mean(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&["axes", "keepdims", "noop_with_empty_axes"])?;
    let x = im.tensor(n, 0)?;
    let rank = im.ty(x).rank();
    let listed: Vec<i64> = if im.opset < 18 {
        a.ints("axes")?.unwrap_or_default()
    } else {
        match im.constant(n, 1, "axes")? {
            None => vec![],
            Some(c) => c
                .as_i64()
                .ok_or_else(|| invalid(n, "axes must be an integer tensor"))?
                .to_vec(),
        }
    };
    let keepdims = a.int("keepdims", 1)? != 0;
    if listed.is_empty() && a.int("noop_with_empty_axes", 0)? != 0 {
        return Ok(vec![Val::Node(x)]);
    }
    let mut axes: Vec<usize> = if listed.is_empty() {
        (0..rank).collect()
    } else {
        listed
            .iter()
            .map(|&v| axis(n, v, rank, "axis"))
            .collect::<F<Vec<usize>>>()?
    };
    axes.sort_unstable();
    if axes.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(n, format!("axes {listed:?} repeat an axis")));
    }
    if rank == 4 && axes == [2, 3] {
        let name = if keepdims {
            out.to_string()
        } else {
            format!("{out}.pooled")
        };
        let p = im.add(n, &name, Op::GlobalPool(ReduceKind::Avg), &[x])?;
        if keepdims {
            return one(p);
        }
        return one(im.add(n, out, Op::Flatten { axis: 1 }, &[p])?);
    }
    if axes.is_empty() {
        // a rank-0 input: the mean of one value
        return Ok(vec![Val::Node(x)]);
    }
    one(im.add(n, out, Op::ReduceMean { axes, keepdims }, &[x])?)
}
