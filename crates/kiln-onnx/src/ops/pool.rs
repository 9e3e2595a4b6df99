use super::*;

/// MaxPool, AveragePool: 2-D pooling; a zero `Pad` before an average pool is folded in.
pub(crate) fn pool(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    let max = n.op_type == "MaxPool";
    if max {
        a.known(&[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ])?;
        if im.reads_output(n, 1) {
            return unsupported("the Indices output (second output) is not supported");
        }
    } else {
        a.known(&[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
    }
    let (x, extra) = im.spatial_input(n, &n.op_type)?;
    let kernel = a.required_pair("kernel_shape")?;
    let ceil_mode = a.int("ceil_mode", 0)? != 0;
    let mut count_include_pad = a.int("count_include_pad", 0)? != 0;
    let mut padding = a.padding([0; 4])?;
    if extra != [0; 4] {
        if max {
            return unsupported(
                "it reads a zero Pad: padded zeros can win a max, unlike max-pool padding, so kiln does not fold it",
            );
        }
        if ceil_mode {
            return unsupported("a zero Pad before an AveragePool with ceil_mode is not folded");
        }
        match padding {
            Padding::Explicit(p) if p == [0; 4] || count_include_pad => {
                padding = Padding::Explicit(add_pads(n, p, extra)?);
                count_include_pad = true;
            }
            _ => {
                return unsupported(
                    "a zero Pad before an AveragePool that pads without counting the padding is not folded",
                );
            }
        }
    }
    let kind = if max {
        PoolKind::Max
    } else {
        PoolKind::Avg { count_include_pad }
    };
    let pool = Pool2d {
        kind,
        kernel,
        stride: a.pair("strides", 1)?,
        dilation: a.pair("dilations", 1)?,
        padding,
        ceil_mode,
    };
    one(im.add(n, out, Op::Pool2d(pool), &[x])?)
}

/// GlobalAveragePool, GlobalMaxPool.
pub(crate) fn global_pool(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[])?;
    let x = im.tensor(n, 0)?;
    im.need_rank(x, 4, "input")?;
    let k = if n.op_type == "GlobalMaxPool" {
        ReduceKind::Max
    } else {
        ReduceKind::Avg
    };
    one(im.add(n, out, Op::GlobalPool(k), &[x])?)
}
