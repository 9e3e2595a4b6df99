//! Arbitrary bytes → the ONNX importer (`kiln_onnx::load_bytes`): it never panics; a model it
//! accepts is a valid graph (`Graph::verify`) whose every param has a weight of its exact
//! shape, and which the reference interpreter runs on seeded inputs when it is small.
//! Seed the corpus with the conformance models: `cp -r` of
//! `crates/kiln-onnx/tests/data/*/*/model.onnx` (see docs/fuzzing.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = kiln::onnx::load_bytes(data, None) else {
        return;
    };
    let g = &m.graph;
    g.verify().expect("an imported graph verifies");
    for p in g.params() {
        let node = g.node(p);
        let w = m.weights.get(&node.name).unwrap_or_else(|| panic!("param `{}` has no weight", node.name));
        assert_eq!(w.dims(), node.ty.dims(), "weight `{}`", node.name);
    }
    let small = g.petgraph().node_weights().all(|n| n.ty.shape.numel() <= 1 << 16);
    if small {
        let inputs = kiln::ir::init::random_inputs(g, 1).expect("small graphs fit");
        // the interpreter may refuse (an Err) but must not panic
        let _ = kiln::interp::run::<f32>(g, &inputs, &m.weights);
    }
});
