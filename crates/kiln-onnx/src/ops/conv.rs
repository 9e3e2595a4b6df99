use super::*;
use kiln_ir::geometry::{TransposedFit, conv_transpose_fit};

/// Conv: a 2-D convolution, with a zero `Pad` before it folded into its padding.
pub(crate) fn conv(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "pads",
        "strides",
    ])?;
    let (x, extra) = im.spatial_input(n, "Conv")?;
    let w = im.tensor(n, 1)?;
    let b = im.tensor_opt(n, 2, true)?;
    im.need_rank(w, 4, "weight")?;
    kernel_matches(a, &im.ty(w).dims()[2..])?;
    let padding = a.padding(extra)?;
    let conv = Conv2d {
        stride: a.pair("strides", 1)?,
        dilation: a.pair("dilations", 1)?,
        padding,
        groups: a.positive("group", 1)?,
        activation: None,
    };
    let mut ins = vec![x, w];
    ins.extend(b);
    one(im.add(n, out, Op::Conv2d(conv), &ins)?)
}

/// ConvTranspose: a 2-D transposed convolution; `output_shape` and SAME become padding.
pub(crate) fn conv_transpose(im: &mut Importer, n: &NodeProto, a: &Attrs, out: &str) -> F<Vec<Val>> {
    a.known(&[
        "auto_pad",
        "dilations",
        "group",
        "kernel_shape",
        "output_padding",
        "output_shape",
        "pads",
        "strides",
    ])?;
    let x = im.tensor(n, 0)?;
    im.need_rank(x, 4, "input")?;
    let w = im.tensor(n, 1)?;
    let b = im.tensor_opt(n, 2, true)?;
    im.need_rank(w, 4, "weight")?;
    let k = [im.ty(w).dims()[2], im.ty(w).dims()[3]];
    kernel_matches(a, &k)?;
    let stride = a.pair("strides", 1)?;
    let dilation = a.pair("dilations", 1)?;
    let output_padding = a.pair("output_padding", 0)?;
    let auto = a.string("auto_pad", "NOTSET")?;
    let input = [im.ty(x).dims()[2], im.ty(x).dims()[3]];
    if input.contains(&0) || k.contains(&0) {
        return Err(invalid(
            n,
            format!("an empty spatial axis (input {input:?}, kernel {k:?})"),
        ));
    }
    let target: Option<[usize; 2]> = match a.ints("output_shape")? {
        Some(s) if s.len() >= 2 => {
            let s = &s[s.len() - 2..];
            Some([
                to_usize(n, s[0], "output_shape")?,
                to_usize(n, s[1], "output_shape")?,
            ])
        }
        Some(s) => return Err(invalid(n, format!("output_shape {s:?} must have 2 entries"))),
        None => None,
    };
    let same = auto == "SAME_UPPER" || auto == "SAME_LOWER";
    let (padding, output_padding) = if target.is_some() || same {
        let upper = auto == "SAME_UPPER";
        match conv_transpose_fit(input, k, stride, dilation, output_padding, target, upper) {
            Ok(fit) => fit,
            Err(TransposedFit::Overflow(reason)) => return Err(invalid(n, reason)),
            Err(TransposedFit::TooLarge) => {
                return unsupported(format!(
                    "output_shape {:?} exceeds the full output by more than the stride allows",
                    target.unwrap_or_default()
                ));
            }
        }
    } else if auto == "VALID" {
        ([0; 4], output_padding)
    } else {
        (a.pads()?, output_padding)
    };
    let op = ConvTranspose2d {
        stride,
        dilation,
        padding,
        output_padding,
        groups: a.positive("group", 1)?,
    };
    let mut ins = vec![x, w];
    ins.extend(b);
    one(im.add(n, out, Op::ConvTranspose2d(op), &ins)?)
}
