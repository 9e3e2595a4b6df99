//! Random networks (chains and DAGs with residual adds, concats, every op) from kiln-ir's
//! byte-driven generator — the same one the fuzz targets use — through the JIT and the
//! interpreter.

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_match_the_interpreter(bytes in proptest::collection::vec(any::<u8>(), 0..256), seed in any::<u64>()) {
        let graph = kiln::ir::random::graph_from_bytes(&bytes);
        if let Err(e) = kiln::check::jit_matches_interpreter(&graph, seed) { panic!("{e}") }
    }
}
