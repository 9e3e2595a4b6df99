//! Random networks (chains and DAGs with residual adds, concats, every op) from kiln-ir's
//! byte-driven generator — the same one the fuzz targets use — through the JIT and the
//! interpreter.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_match_the_interpreter(bytes in proptest::collection::vec(any::<u8>(), 0..256), seed in any::<u64>()) {
        let graph = kiln_ir::random::graph_from_bytes(&bytes);
        // with every pass (the default), with every pass on each other kernel tier this CPU
        // runs (the default picks the widest), and with none: all equal the interpreter
        if let Err(e) = kiln_runtime::check::jit_matches_interpreter(&graph, seed) { panic!("{e}") }
        for tier in kiln_jit::gemm::Tier::runnable().into_iter().filter(|t| t.isa() != kiln_jit::gemm::Tier::Auto.isa()) {
            let options = kiln_jit::JitOptions { gemm_tier: tier, ..Default::default() };
            if let Err(e) = kiln_runtime::check::jit_matches_interpreter_with(&graph, seed, &options) { panic!("{tier:?}: {e}") }
        }
        let no_passes = kiln_jit::JitOptions { passes: kiln_passes::OptLevel::None, ..Default::default() };
        if let Err(e) = kiln_runtime::check::jit_matches_interpreter_with(&graph, seed, &no_passes) { panic!("{e}") }
    }
}

/// Found by the proptest above: `relu(x) / relu(x)` is 0/0 = NaN for negative `x`, and the
/// JIT's log-softmax of a row holding a NaN gave finite numbers (its `ln` and max ignored the
/// NaN) where the interpreter gives NaN. NaN now propagates in both.
#[test]
fn nan_propagates_through_log_softmax_like_the_interpreter() {
    let g = kiln_ir::text::parse(
        "graph random {
  input %x: f32[1, 2, 8, 1]
  %relu_2 = relu(%x)
  %div_3 = div(%relu_2, %relu_2)
  %log_softmax_4 = log_softmax(%div_3) {axis=2}
  %softmax_5 = softmax(%div_3) {axis=2}
  %max_6 = max_pool2d(%div_3) {kernel=[2, 1], stride=[1, 1]}
  output %log_softmax_4
  output %softmax_5
  output %max_6
}",
    )
    .unwrap();
    for seed in 0..8 {
        if let Err(e) = kiln_runtime::check::jit_matches_interpreter(&g, seed) {
            panic!("{e}");
        }
    }
}

/// Found by the proptest above: a grouped `gemm` over an `im2col` whose groups split one
/// channel's patch rows (1 channel, 6 rows, 2 groups). The GEMM driver packs a group's rows
/// from its channels of the image, so such an im2col must be materialized, not fused.
#[test]
fn grouped_gemm_over_patches_of_a_shared_channel() {
    let graph = kiln_ir::text::parse(
        "graph g {
  input %x: f32[1, 1, 5, 8]
  %patches = im2col(%x) {kernel=[3, 2], stride=[3, 3], dilation=[2, 2]}
  param %w: f32[4, 3]
  input %r: f32[1, 4, 2]
  %y = gemm(%w, %patches, %r) {groups=2, residual=true}
  output %y
}",
    )
    .unwrap();
    for seed in 0..4 {
        if let Err(e) = kiln_runtime::check::jit_matches_interpreter(&graph, seed) {
            panic!("{e}")
        }
    }
}

/// A per-channel scale and shift by weights after a convolution (with and without a batch
/// norm between) and after a batch norm of a pool, the constant on either side and as [C, 1,
/// 1] or [1, C, 1, 1] (Caffe's `Scale` layers in the onnx zoo's DenseNet): folded into the
/// node before (`affine_fold`), equal to the interpreter on the graph as written.
#[test]
fn per_channel_scales_and_shifts_fold_and_match_the_interpreter() {
    let graph = kiln_ir::text::parse(
        "graph g {
  input %x: f32[2, 3, 9, 9]
  param %w: f32[4, 3, 3, 3]
  param %cb: f32[4]
  param %g: f32[4]
  param %b: f32[4]
  buffer %m: f32[4]
  buffer %v: f32[4]
  param %s1: f32[4, 1, 1]
  param %t1: f32[1, 4, 1, 1]
  param %s2: f32[1, 4, 1, 1]
  param %t2: f32[4, 1, 1]
  param %w2: f32[4, 4, 1, 1]
  param %s3: f32[4, 1, 1]
  param %t3: f32[4, 1, 1]
  %c = conv2d(%x, %w, %cb) {padding=[1, 1, 1, 1]}
  %bn = batch_norm(%c, %g, %b, %m, %v) {epsilon=0.001}
  %a = mul(%bn, %s1)
  %a2 = add(%t1, %a)
  %r = relu(%a2)
  %p = max_pool2d(%r) {kernel=[2, 2], stride=[2, 2]}
  %bn2 = batch_norm(%p, %g, %b, %m, %v) {epsilon=0.001}
  %d = mul(%s2, %bn2)
  %d2 = add(%d, %t2)
  %r2 = relu(%d2)
  %c2 = conv2d(%r2, %w2)
  %e = mul(%c2, %s3)
  %e2 = add(%e, %t3)
  output %e2
}",
    )
    .unwrap();
    let optimized = kiln_passes::optimize(&graph, kiln_passes::OptLevel::Full).unwrap();
    let muls = optimized
        .topo_order()
        .into_iter()
        .filter(|&n| {
            matches!(optimized.node(n).op, kiln_ir::Op::Binary(_)) && !kiln_passes::is_constant(&optimized, n)
        })
        .count();
    assert_eq!(muls, 0, "{}", kiln_ir::text::print(&optimized));
    for seed in 0..4 {
        if let Err(e) = kiln_runtime::check::jit_matches_interpreter(&graph, seed) {
            panic!("{e}");
        }
    }
}
