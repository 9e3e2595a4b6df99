//! The full pipeline on text IR, and on the zoo: still valid, and no dropout left behind.

use kiln_ir::{Op, text};
use kiln_passes::{OptLevel, optimize, pipeline, run_pipeline};

#[test]
fn pipeline_runs_to_a_fixpoint_and_reports_each_pass() {
    let g = text::parse(
        "graph g {
  input %x: f32[1, 8]
  param %w: f32[4, 8]
  %d = dropout(%x) {ratio=0.5}
  %f = flatten(%d)
  %y = dense(%f, %w)
  output %y
}",
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut opt = g.clone();
    run_pipeline(&mut opt, &pipeline(OptLevel::Full), |name, _| {
        seen.push(name.to_string())
    })
    .unwrap();
    assert_eq!(
        &seen[..9],
        [
            "noop",
            "layout",
            "affine_fold",
            "bn_fold",
            "matmul_dense",
            "silu",
            "im2col",
            "fusion",
            "dead_code"
        ]
    );
    assert_eq!(
        text::print(&opt),
        "graph g {
  input %x: f32[1, 8]
  param %w: f32[4, 8]
  %y = dense(%x, %w): f32[1, 4]
  output %y
}
"
    );
    assert_eq!(optimize(&g, OptLevel::None).unwrap(), g);
}

#[test]
fn random_graphs_stay_valid() {
    for seed in 0u64..300 {
        let bytes: Vec<u8> = (0..96)
            .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 40503) >> 7) as u8)
            .collect();
        let g = kiln_ir::random::graph_from_bytes(&bytes);
        let opt = optimize(&g, OptLevel::Full).unwrap();
        opt.verify().unwrap();
        let names = |g: &kiln_ir::Graph| -> Vec<String> {
            g.outputs().iter().map(|&o| g.node(o).name.clone()).collect()
        };
        assert_eq!(names(&opt), names(&g), "outputs keep their names");
        // no dropout feeds anything any more
        for id in opt.topo_order() {
            if matches!(opt.node(id).op, Op::Dropout { .. }) {
                assert!(opt.users(id).is_empty(), "{}", text::print(&opt));
            }
        }
    }
}
