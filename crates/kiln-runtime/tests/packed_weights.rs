//! Weights a model packs when they are set (the GEMM's A, laid out for its micro-kernel by a
//! `prep` kernel) are packed again when they change, on every tier and thread count.

use kiln_ir::{Tensor, Value};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use kiln_runtime::{Model, compile};
use std::collections::HashMap;

/// A convolution's weights are packed when they are set: new weights are packed again, on
/// every tier, so a model given new weights computes what a fresh model with them does
/// (40 output channels: fewer would take the small-convolution kernel, which packs none).
#[test]
fn new_weights_are_packed_again() {
    let graph = kiln_ir::text::parse(
        "graph g {
  input %x: f32[1, 8, 9, 11]
  param %w: f32[40, 8, 3, 3]
  %y = conv2d(%x, %w) {padding=[1, 1, 1, 1]}: f32[1, 40, 9, 11]
  output %y
}",
    )
    .unwrap();
    let tensor = |shape: [usize; 4], f: &dyn Fn(usize) -> f32| {
        let n: usize = shape.iter().product();
        Tensor::new(shape, (0..n).map(f).collect()).unwrap()
    };
    let x = tensor([1, 8, 9, 11], &|i| (i as f32 * 0.3).sin());
    let inputs = HashMap::from([("x".to_string(), Value::F(x))]);
    let w1 = HashMap::from([(
        "w".to_string(),
        tensor([40, 8, 3, 3], &|i| (i as f32 * 0.7).cos()),
    )]);
    let w2 = HashMap::from([(
        "w".to_string(),
        tensor([40, 8, 3, 3], &|i| (i as f32 * 0.2).sin()),
    )]);
    for tier in Tier::runnable() {
        for threads in [1, 2] {
            let options = JitOptions {
                gemm_tier: tier,
                threads,
                ..Default::default()
            };
            let out = |m: &Model| m.run(&inputs).unwrap().remove(0).1;
            let mut m = compile(&graph, &options).unwrap();
            assert!(
                m.kernels().iter().any(|k| k.prep),
                "{tier:?}: A is packed by a prep kernel"
            );
            m.set_weights(&w1).unwrap();
            let y1 = out(&m);
            m.set_weights(&w2).unwrap();
            let y2 = out(&m);
            let mut fresh = compile(&graph, &options).unwrap();
            fresh.set_weights(&w2).unwrap();
            assert_eq!(y2, out(&fresh), "{tier:?}, {threads} threads");
            assert_ne!(y1, y2);
        }
    }
}
