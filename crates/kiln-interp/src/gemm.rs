//! The ops the im2col pass lowers a convolution to — the patch matrix and the grouped GEMM
//! with its epilogue — and `rsqrt`, which batch-norm folding uses. Plain loops over the
//! definitions in `kiln_ir::op`.

use crate::Float;
use crate::activation::activation;
use crate::util::{out_shape, unpad};
use kiln_ir::{Gemm, Im2Col, Op, Tensor};

/// `y[n, (c, i, j), (oy, ox)] = x[n, c, oy·s₀ − top + i·d₀, ox·s₁ − left + j·d₁]`, 0 in the padding.
pub fn im2col<T: Float>(x: &Tensor<T>, attrs: &Im2Col) -> Result<Tensor<T>, String> {
    let out = out_shape(&Op::Im2Col(attrs.clone()), &[x.shape()])?;
    let d = x.dims();
    let (nb, ch, h, w) = (d[0], d[1], d[2], d[3]);
    let [kh, kw] = attrs.kernel;
    let l = out.dims()[2];
    let ow = attrs.geometry(d)?.output[1];
    let mut y = Tensor::full(out, T::zero());
    let yd = y.data_mut();
    let xd = x.data();
    let mut at = 0;
    for n in 0..nb {
        for c in 0..ch {
            for i in 0..kh {
                for j in 0..kw {
                    for col in 0..l {
                        let (oy, ox) = (col / ow, col % ow);
                        let iy = unpad(oy * attrs.stride[0] + i * attrs.dilation[0], attrs.padding[0], h);
                        let ix = unpad(ox * attrs.stride[1] + j * attrs.dilation[1], attrs.padding[1], w);
                        if let (Some(iy), Some(ix)) = (iy, ix) {
                            yd[at] = xd[((n * ch + c) * h + iy) * w + ix];
                        }
                        at += 1;
                    }
                }
            }
        }
    }
    Ok(y)
}

/// `y[n, g·M/G + m, l] = act(Σ_k a[g·M/G + m, k]·b[n, g·K/G + k, l] + bias + residual)`.
pub fn gemm<T: Float>(args: &[&Tensor<T>], attrs: &Gemm) -> Result<Tensor<T>, String> {
    let shapes: Vec<_> = args.iter().map(|t| t.shape()).collect();
    let out = out_shape(&Op::Gemm(attrs.clone()), &shapes)?;
    let (a, b) = (args[0], args[1]);
    let bias = attrs.bias.then(|| args[2]);
    let residual = attrs.residual.then(|| args[args.len() - 1]);
    let [m, kg] = [a.dims()[0], a.dims()[1]];
    let [nb, k, l] = [b.dims()[0], b.dims()[1], b.dims()[2]];
    let mg = m / attrs.groups;
    let mut y = Tensor::full(out, T::zero());
    let yd = y.data_mut();
    for n in 0..nb {
        for row in 0..m {
            let g = row / mg;
            for col in 0..l {
                let mut acc = bias.map_or(T::zero(), |bias| bias.data()[row]);
                for kk in 0..kg {
                    acc += a.data()[row * kg + kk] * b.data()[(n * k + g * kg + kk) * l + col];
                }
                let at = (n * m + row) * l + col;
                if let Some(r) = residual {
                    acc += r.data()[at];
                }
                yd[at] = acc;
            }
        }
    }
    Ok(match attrs.activation {
        Some(act) => activation(&y, act),
        None => y,
    })
}

/// `1/√(x + ε)` elementwise.
pub fn rsqrt<T: Float>(x: &Tensor<T>, epsilon: f32) -> Tensor<T> {
    let eps = T::from_f64(f64::from(epsilon));
    x.map(|&v| T::one() / (v + eps).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::conv2d;
    use kiln_ir::{Conv2d, Padding};

    /// A convolution equals `gemm(weights as [O, C/g·kh·kw], im2col(x))` — checked against the
    /// direct loop nest of `conv2d` on strided, dilated, padded and grouped cases.
    #[test]
    fn conv_is_gemm_over_patches() {
        for (c_in, c_out, groups, k, s, d, p) in [
            (3, 4, 1, [3, 3], [1, 1], [1, 1], [1, 1, 1, 1]),
            (4, 6, 2, [3, 2], [2, 1], [1, 2], [0, 1, 2, 0]),
            (2, 2, 1, [1, 1], [1, 1], [1, 1], [0, 0, 0, 0]),
            (6, 3, 3, [2, 3], [2, 3], [2, 1], [1, 0, 1, 2]),
        ] {
            let x = Tensor::new(
                [2, c_in, 7, 6],
                (0..2 * c_in * 42).map(|i| (i % 11) as f64 - 5.0).collect(),
            )
            .unwrap();
            let wlen = c_out * c_in / groups * k[0] * k[1];
            let w = Tensor::new(
                [c_out, c_in / groups, k[0], k[1]],
                (0..wlen).map(|i| (i % 7) as f64 * 0.5 - 1.5).collect(),
            )
            .unwrap();
            let bias = Tensor::new([c_out], (0..c_out).map(|i| i as f64).collect()).unwrap();
            let conv = Conv2d {
                stride: s,
                dilation: d,
                padding: Padding::Explicit(p),
                groups,
                activation: Some(kiln_ir::Activation::Relu),
            };
            let want = conv2d(&x, &w, Some(&bias), &conv).unwrap();
            let patches = im2col(
                &x,
                &Im2Col {
                    kernel: k,
                    stride: s,
                    dilation: d,
                    padding: p,
                },
            )
            .unwrap();
            let a = Tensor::new([c_out, wlen / c_out], w.data().to_vec()).unwrap();
            let attrs = Gemm {
                groups,
                bias: true,
                residual: false,
                activation: Some(kiln_ir::Activation::Relu),
            };
            let got = gemm(&[&a, &patches, &bias], &attrs).unwrap();
            assert_eq!(got.data(), want.data(), "case {c_in} {c_out} {groups} {k:?}");
        }
    }

    #[test]
    fn residual_is_added_before_the_activation() {
        let a = Tensor::new([1, 1], vec![1.0f64]).unwrap();
        let b = Tensor::new([1, 1, 2], vec![1.0, -3.0]).unwrap();
        let r = Tensor::new([1, 1, 2], vec![1.0, 1.0]).unwrap();
        let attrs = Gemm {
            residual: true,
            activation: Some(kiln_ir::Activation::Relu),
            ..Gemm::default()
        };
        assert_eq!(gemm(&[&a, &b, &r], &attrs).unwrap().data(), &[2.0, 0.0]);
    }

    #[test]
    fn rsqrt_of_four() {
        let x = Tensor::new([2], vec![4.0f64, 0.0]).unwrap();
        assert_eq!(rsqrt(&x, 0.0).data(), &[0.5, f64::INFINITY]);
    }
}
