//! im2col: every convolution that is not depthwise becomes a GEMM over its patch matrix,
//! `reshape(gemm(reshape(w, [O, C/g·kh·kw]), im2col(x), b), [N, O, oh, ow])`, with the bias
//! (and any fused activation) in the GEMM's epilogue. The patch matrix is never materialized
//! by the JIT: its GEMM driver packs the patches straight from the image, panel by panel. A
//! 1×1 convolution with stride 1 and no padding needs no patches at all: B is the input
//! itself, viewed as `[N, C, H·W]`. Depthwise convolutions keep their direct kernel (as a GEMM
//! each group would be a 1-row product).

use crate::Pass;
use kiln_ir::{Gemm, Graph, IrError, Op};

pub struct Im2ColPass;

impl Pass for Im2ColPass {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, IrError> {
        let mut changed = false;
        for id in graph.topo_order() {
            let Op::Conv2d(c) = graph.node(id).op.clone() else {
                continue;
            };
            let ins = graph.inputs(id);
            let (x, w) = (
                graph.node(ins[0]).ty.dims().to_vec(),
                graph.node(ins[1]).ty.dims().to_vec(),
            );
            let out = graph.node(id).ty.dims().to_vec();
            let depthwise = c.groups > 1 && w[1] == 1 && c.groups == x[1];
            if depthwise {
                continue;
            }
            let name = graph.node(id).name.clone();
            let geom = c.geometry(&x, [w[2], w[3]]).map_err(|message| IrError::Shape {
                node: name.clone(),
                op: "conv2d".into(),
                inputs: format!("{x:?}, {w:?}"),
                message,
            })?;
            let padding = geom.pad;
            // The patch matrix [N, C·kh·kw, oh·ow] is a graph value even when the JIT never
            // materializes it: a convolution whose patches exceed the size limits (a huge
            // kernel over a small padded input) keeps its direct kernel.
            let patch_dims = [
                x[0],
                x[1].saturating_mul(w[2]).saturating_mul(w[3]),
                geom.output[0] * geom.output[1],
            ];
            if kiln_ir::limits::check_dims(&patch_dims).is_err() {
                continue;
            }
            let k = (w[1] * w[2] * w[3]) as i64;
            let a = graph.add(
                graph.fresh_name(&format!("{name}.w2d")),
                Op::Reshape {
                    shape: vec![w[0] as i64, k],
                },
                &[ins[1]],
            )?;
            let pointwise = w[2] == 1 && w[3] == 1 && c.stride == [1, 1] && padding == [0; 4];
            let b = if pointwise {
                let shape = vec![x[0] as i64, x[1] as i64, (x[2] * x[3]) as i64];
                graph.add(
                    graph.fresh_name(&format!("{name}.cols")),
                    Op::Reshape { shape },
                    &[ins[0]],
                )?
            } else {
                let op = Op::Im2Col(geom.im2col());
                graph.add(graph.fresh_name(&format!("{name}.patches")), op, &[ins[0]])?
            };
            let mut gin = vec![a, b];
            gin.extend(ins.get(2));
            let gemm = Op::Gemm(Gemm {
                groups: c.groups,
                bias: ins.len() == 3,
                residual: false,
                activation: c.activation,
            });
            let g = graph.add(graph.fresh_name(&format!("{name}.gemm")), gemm, &gin)?;
            let shape = out.iter().map(|&d| d as i64).collect();
            let y = graph.add(
                graph.fresh_name(&format!("{name}.out")),
                Op::Reshape { shape },
                &[g],
            )?;
            graph.substitute(id, y)?;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::check_pass;

    #[test]
    fn a_padded_conv_becomes_im2col_and_gemm() {
        check_pass(
            &super::Im2ColPass,
            "graph g {
  input %x: f32[1, 2, 5, 5]
  param %w: f32[4, 2, 3, 3]
  param %b: f32[4]
  %c = conv2d(%x, %w, %b) {padding=same_upper, activation=relu}
  output %c
}",
            "graph g {
  input %x: f32[1, 2, 5, 5]
  param %w: f32[4, 2, 3, 3]
  param %b: f32[4]
  %c.w2d = reshape(%w) {shape=[4, 18]}: f32[4, 18]
  %c.patches = im2col(%x) {kernel=[3, 3], padding=[1, 1, 1, 1]}: f32[1, 18, 25]
  %c.gemm = gemm(%c.w2d, %c.patches, %b) {bias=true, activation=relu}: f32[1, 4, 25]
  %c = reshape(%c.gemm) {shape=[1, 4, 5, 5]}: f32[1, 4, 5, 5]
  output %c
}
",
        );
    }

    #[test]
    fn a_conv_whose_patches_exceed_the_limits_stays_direct() {
        // a 1×2^20 kernel over one pixel padded to 2^21 − 1: 2^40 patch elements
        check_pass(
            &super::Im2ColPass,
            "graph g {
  input %x: f32[1, 1, 1, 1]
  param %w: f32[1, 1, 1, 1048576]
  %c = conv2d(%x, %w) {padding=[0, 1048575, 0, 1048575]}
  output %c
}",
            "graph g {
  input %x: f32[1, 1, 1, 1]
  param %w: f32[1, 1, 1, 1048576]
  %c = conv2d(%x, %w) {padding=[0, 1048575, 0, 1048575]}: f32[1, 1, 1, 1048576]
  output %c
}
",
        );
    }

    #[test]
    fn pointwise_needs_no_patches_and_depthwise_stays() {
        check_pass(
            &super::Im2ColPass,
            "graph g {
  input %x: f32[2, 4, 3, 3]
  param %pw: f32[8, 4, 1, 1]
  param %dw: f32[8, 1, 3, 3]
  %p = conv2d(%x, %pw)
  %d = conv2d(%p, %dw) {groups=8}
  output %d
}",
            "graph g {
  input %x: f32[2, 4, 3, 3]
  param %pw: f32[8, 4, 1, 1]
  param %dw: f32[8, 1, 3, 3]
  %p.w2d = reshape(%pw) {shape=[8, 4]}: f32[8, 4]
  %p.cols = reshape(%x) {shape=[2, 4, 9]}: f32[2, 4, 9]
  %p.gemm = gemm(%p.w2d, %p.cols): f32[2, 8, 9]
  %p = reshape(%p.gemm) {shape=[2, 8, 3, 3]}: f32[2, 8, 3, 3]
  %d = conv2d(%p, %dw) {groups=8}: f32[2, 8, 1, 1]
  output %d
}
",
        );
    }
}
