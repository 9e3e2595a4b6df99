//! Convolution and transposed convolution, NCHW, as direct loop nests over their definitions.

use crate::Float;
use crate::util::{out_shape, unpad};
use kiln_ir::{Conv2d, ConvTranspose2d, Op, Tensor, TrainOp};

/// 2-D cross-correlation (PyTorch/ONNX `Conv`):
///
/// `y[n, o, oh, ow] = b[o] + Σ_{ic, i, j} x[n, g·cg + ic, oh·s_h + i·d_h − p_top, ow·s_w + j·d_w − p_left] · w[o, ic, i, j]`
///
/// where `g = o / (C_out/groups)` is the output channel's group, `cg = C/groups`, and taps
/// that land in the padding read zero. `x [N, C, H, W]`, `w [C_out, C/groups, kh, kw]`,
/// optional `b [C_out]`. A fused `activation` is applied to `y` afterwards.
pub fn conv2d<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&Tensor<T>>,
    attrs: &Conv2d,
) -> Result<Tensor<T>, String> {
    let mut shapes = vec![x.shape(), w.shape()];
    shapes.extend(b.map(|b| b.shape()));
    let out = out_shape(&Op::Conv2d(attrs.clone()), &shapes)?;
    let [n_batch, c_in, h, wd] = dims4(x.dims());
    let [c_out, cg, kh, kw] = dims4(w.dims());
    let [_, _, oh_n, ow_n] = dims4(out.dims());
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let g = attrs.geometry(x.dims(), [kh, kw])?;
    let [pt, pl] = [g.pad_begin(0), g.pad_begin(1)];
    let co_per_group = c_out / attrs.groups;

    let (xd, wdat) = (x.data(), w.data());
    let mut y = Tensor::full(out, T::zero());
    let yd = y.data_mut();
    for n in 0..n_batch {
        for o in 0..c_out {
            let g = o / co_per_group;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = b.map_or(T::zero(), |b| b.data()[o]);
                    for ic in 0..cg {
                        let c = g * cg + ic;
                        for i in 0..kh {
                            let Some(ih) = unpad(oh * sh + i * dh, pt, h) else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(iw) = unpad(ow * sw + j * dw, pl, wd) else {
                                    continue;
                                };
                                let xv = xd[((n * c_in + c) * h + ih) * wd + iw];
                                let wv = wdat[((o * cg + ic) * kh + i) * kw + j];
                                acc += xv * wv;
                            }
                        }
                    }
                    yd[((n * c_out + o) * oh_n + oh) * ow_n + ow] = acc;
                }
            }
        }
    }
    // a fused activation is the activation op applied to the result
    Ok(match attrs.activation {
        Some(a) => crate::activation::activation(&y, a),
        None => y,
    })
}

/// 2-D transposed convolution (PyTorch `ConvTranspose2d`, ONNX `ConvTranspose`), the adjoint
/// of [`conv2d`] with the same stride, dilation, padding and groups. Each input element
/// scatters into the output:
///
/// `y[n, g·cog + oc, ih·s_h + i·d_h − p_top, iw·s_w + j·d_w − p_left] += x[n, ci, ih, iw] · w[ci, oc, i, j]`
///
/// for `ci` in group `g = ci / (C_in/groups)`, `oc < cog = C_out/groups`; targets outside the
/// output are dropped (that is what the padding removes), and `output_padding` only makes the
/// output larger (its size comes from the shape rule). Plus `b[o]` everywhere.
/// `x [N, C_in, H, W]`, `w [C_in, C_out/groups, kh, kw]`, optional `b [C_out]`.
pub fn conv_transpose2d<T: Float>(
    x: &Tensor<T>,
    w: &Tensor<T>,
    b: Option<&Tensor<T>>,
    attrs: &ConvTranspose2d,
) -> Result<Tensor<T>, String> {
    let mut shapes = vec![x.shape(), w.shape()];
    shapes.extend(b.map(|b| b.shape()));
    let out = out_shape(&Op::ConvTranspose2d(attrs.clone()), &shapes)?;
    let [n_batch, c_in, h, wd] = dims4(x.dims());
    let [_, cog, kh, kw] = dims4(w.dims());
    let [_, c_out, oh_n, ow_n] = dims4(out.dims());
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let [pt, pl, _, _] = attrs.padding;
    let ci_per_group = c_in / attrs.groups;

    let (xd, wdat) = (x.data(), w.data());
    let mut y = Tensor::full(out, T::zero());
    let yd = y.data_mut();
    if let Some(b) = b {
        for n in 0..n_batch {
            for o in 0..c_out {
                let plane = (n * c_out + o) * oh_n * ow_n;
                yd[plane..plane + oh_n * ow_n].fill(b.data()[o]);
            }
        }
    }
    for n in 0..n_batch {
        for ci in 0..c_in {
            let g = ci / ci_per_group;
            for ih in 0..h {
                for iw in 0..wd {
                    let xv = xd[((n * c_in + ci) * h + ih) * wd + iw];
                    for oc in 0..cog {
                        let o = g * cog + oc;
                        for i in 0..kh {
                            let Some(oh) = unpad(ih * sh + i * dh, pt, oh_n) else {
                                continue;
                            };
                            for j in 0..kw {
                                let Some(ow) = unpad(iw * sw + j * dw, pl, ow_n) else {
                                    continue;
                                };
                                let wv = wdat[((ci * cog + oc) * kh + i) * kw + j];
                                yd[((n * c_out + o) * oh_n + oh) * ow_n + ow] += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(y)
}

/// The four dims of a rank-4 shape (the shape rule has checked the rank).
pub(crate) fn dims4(d: &[usize]) -> [usize; 4] {
    [d[0], d[1], d[2], d[3]]
}

// ---------------------------------------------------------------------------------------------
// Backward: the pieces of a convolution's gradients.

/// The kernel `w [C_out, C/groups, kh, kw]` rotated by 180° with its channels swapped group
/// by group: `y[g·cg + c, o, i, j] = w[g·cog + o, c, kh−1−i, kw−1−j]`, shape
/// `[C, C_out/groups, kh, kw]`.
pub fn rot180<T: Float>(w: &Tensor<T>, groups: usize) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::Train(TrainOp::Rot180 { groups }), &[w.shape()])?;
    let [_, cg, kh, kw] = dims4(w.dims());
    let [c_all, cog, _, _] = dims4(out.dims());
    let mut y = Tensor::full(out, T::zero());
    for c_out in 0..c_all {
        let (g, c) = (c_out / cg, c_out % cg);
        for o in 0..cog {
            for i in 0..kh {
                for j in 0..kw {
                    let src = (((g * cog + o) * cg + c) * kh + (kh - 1 - i)) * kw + (kw - 1 - j);
                    y.data_mut()[((c_out * cog + o) * kh + i) * kw + j] = w.data()[src];
                }
            }
        }
    }
    Ok(y)
}

/// `x [N, C, H, W]` with `stride − 1` zeros inserted between neighbours on each spatial axis
/// and `padding` `[top, left, bottom, right]` zeros around (negative: cropped):
/// `y[n, c, ih·s_h + top, iw·s_w + left] = x[n, c, ih, iw]` where that is inside `y`, zero
/// elsewhere.
pub fn dilate_pad<T: Float>(
    x: &Tensor<T>,
    stride: [usize; 2],
    padding: [i64; 4],
) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::Train(TrainOp::DilatePad { stride, padding }), &[x.shape()])?;
    let [n, c, h, w] = dims4(x.dims());
    let [_, _, oh, ow] = dims4(out.dims());
    let mut y = Tensor::full(out, T::zero());
    let place = |i: usize, a: usize, size: usize| {
        let p = i as i64 * stride[a] as i64 + padding[a];
        usize::try_from(p).ok().filter(|&p| p < size)
    };
    for plane in 0..n * c {
        for ih in 0..h {
            let Some(yh) = place(ih, 0, oh) else { continue };
            for iw in 0..w {
                let Some(yw) = place(iw, 1, ow) else { continue };
                y.data_mut()[(plane * oh + yh) * ow + yw] = x.data()[(plane * h + ih) * w + iw];
            }
        }
    }
    Ok(y)
}

/// The weight gradient of [`conv2d`] with attributes `attrs` and a `kernel`-sized kernel:
///
/// `dw[o, c, i, j] = Σ_{n, oh, ow} dy[n, o, oh, ow] · x[n, g·cg + c, oh·s_h + i·d_h − p_top, ow·s_w + j·d_w − p_left]`
///
/// (taps in the padding read zero), `x [N, C, H, W]`, `dy [N, C_out, OH, OW]`.
pub fn conv_weight_grad<T: Float>(
    x: &Tensor<T>,
    dy: &Tensor<T>,
    attrs: &Conv2d,
    kernel: [usize; 2],
) -> Result<Tensor<T>, String> {
    let op = Op::Train(TrainOp::ConvWeightGrad {
        conv: attrs.clone(),
        kernel,
    });
    let out = out_shape(&op, &[x.shape(), dy.shape()])?;
    let [n_batch, c_in, h, wd] = dims4(x.dims());
    let [c_out, cg, kh, kw] = dims4(out.dims());
    let [_, _, oh_n, ow_n] = dims4(dy.dims());
    let [sh, sw] = attrs.stride;
    let [dh, dw] = attrs.dilation;
    let g = attrs.geometry(x.dims(), [kh, kw])?;
    let [pt, pl] = [g.pad_begin(0), g.pad_begin(1)];
    let co_per_group = c_out / attrs.groups;
    let mut g_w = Tensor::full(out, T::zero());
    for o in 0..c_out {
        let g = o / co_per_group;
        for ic in 0..cg {
            let c = g * cg + ic;
            for i in 0..kh {
                for j in 0..kw {
                    let mut acc = T::zero();
                    for n in 0..n_batch {
                        for oh in 0..oh_n {
                            let Some(ih) = unpad(oh * sh + i * dh, pt, h) else {
                                continue;
                            };
                            for ow in 0..ow_n {
                                let Some(iw) = unpad(ow * sw + j * dw, pl, wd) else {
                                    continue;
                                };
                                acc += dy.data()[((n * c_out + o) * oh_n + oh) * ow_n + ow]
                                    * x.data()[((n * c_in + c) * h + ih) * wd + iw];
                            }
                        }
                    }
                    g_w.data_mut()[((o * cg + ic) * kh + i) * kw + j] = acc;
                }
            }
        }
    }
    Ok(g_w)
}
