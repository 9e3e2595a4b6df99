//! The model summary on graphs from outside the builder: random valid graphs (the generator shared
//! with the fuzz targets) never make it panic and its totals add up, and a hand-written `.kiln`
//! graph gets hand-computed rows.

use kiln_ir::random::graph_from_bytes;
use kiln_ir::summary::{Jump, summarize};
use kiln_ir::{Op, text};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_summarize_consistently(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let g = graph_from_bytes(&bytes);
        let s = summarize(&g);
        let computed = g.topo_order().into_iter().filter(|&n| g.node(n).op.source_type().is_none()).count();
        prop_assert_eq!(s.rows.len(), computed);
        let flops: u64 = s.rows.iter().map(|r| r.flops).fold(0, u64::saturating_add);
        prop_assert_eq!(s.total_flops, flops);
        let params: u64 = s.rows.iter().map(|r| r.params).sum();
        prop_assert_eq!(s.total_params, params + s.unread_params());
        let weights: u64 = g
            .params()
            .into_iter()
            .filter(|&p| g.node(p).op.is_trainable_param())
            .map(|p| g.node(p).ty.shape.numel() as u64)
            .sum();
        prop_assert_eq!(s.total_params, weights);
        for r in &s.rows {
            prop_assert_eq!(r.receptive_field.is_some(), r.jump.is_some());
            prop_assert!(r.receptive_field.is_none_or(|rf| rf[0] >= 1 && rf[1] >= 1));
        }
        let shown = s.to_string();
        let (params_line, flops_line) =
            (format!("Total params: {}", s.total_params), format!("Total FLOPs: {}", s.total_flops));
        prop_assert!(shown.lines().any(|l| l == params_line), "{}", shown);
        prop_assert!(shown.lines().any(|l| l == flops_line), "{}", shown);
    }
}

#[test]
fn hand_written_text_ir() {
    let src = "graph g {
  input %x: f32[2, 3, 9, 9]
  param %w: f32[4, 3, 3, 3]
  %c = conv2d(%x, %w) {stride=[2, 2], dilation=[2, 2]}
  %p = avg_pool2d(%c) {kernel=[2, 2], stride=[1, 1], count_include_pad=false}
  %f = flatten(%p)
  %s = softmax(%f) {axis=1}
  output %s
}
";
    let g = text::parse(src).unwrap();
    let s = summarize(&g);
    // conv: k_eff 5, out (9 − 5)/2 + 1 = 3; no bias: (2·3·9 − 1)·3·3·4·N=2.
    let c = s.row("c").unwrap();
    assert_eq!(c.output.dims(), [2, 4, 3, 3]);
    assert_eq!(c.flops, (2 * 27 - 1) * 3 * 3 * 4 * 2);
    assert_eq!(c.params, 4 * 27);
    assert_eq!(c.receptive_field, Some([5, 5]));
    assert_eq!(c.jump, Some([Jump::new(2, 1); 2]));
    // pool 2x2 stride 1: 2x2 out; K²·H·W·C·N; rf 5 + 1·2 = 7.
    let p = s.row("p").unwrap();
    assert_eq!(p.flops, 4 * 2 * 2 * 4 * 2);
    assert_eq!(p.receptive_field, Some([7, 7]));
    assert_eq!(s.row("f").unwrap().flops, 0);
    assert_eq!(s.row("s").unwrap().flops, 3 * 16 * 2);
    assert_eq!(s.row("s").unwrap().receptive_field, None);
    assert!(matches!(g.node(g.find("w").unwrap()).op, Op::Param { .. }));
    let shown = s.to_string();
    assert!(
        shown.contains("5x5") && shown.contains("7x7") && shown.contains(" - "),
        "{shown}"
    );
}
