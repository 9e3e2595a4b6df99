//! The GEMM driver's work split across threads: a thread runs its adjacent work items as one
//! block (`gemm::run_items`), the items are one tile wide where the work is split along one
//! side (`GemmDesc::split`), and a wide product's merged columns are computed one cache block
//! at a time (`gemm::run_shifted`). On every runnable tier and on 1 to 4 threads (3 threads
//! cut the items mid-row), each product equals the interpreter and every thread count gives
//! the same bits as one thread.

use kiln_ir::init::{default_weights, random_inputs};
use kiln_ir::{Activation, BinaryOp, Conv2d, Graph, Op, Padding, TensorType};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use kiln_runtime::check::jit_matches_interpreter_with;

/// `(batch, channels, groups, outputs, h, w, kernel, stride)`, padding 1 (0 for a 1 × 1
/// kernel), the bias and a residual + ReLU.
type Case = (usize, usize, usize, usize, usize, usize, usize, usize);

fn conv_graph((n, c, g, o, h, w, k, s): Case) -> Graph {
    let p = usize::from(k > 1);
    let mut graph = Graph::new();
    let x = graph.input("x", TensorType::f32([n, c, h, w])).unwrap();
    let wt = graph.param("w", TensorType::f32([o, c / g, k, k])).unwrap();
    let b = graph.param("b", TensorType::f32([o])).unwrap();
    let conv = Op::Conv2d(Conv2d {
        stride: [s, s],
        dilation: [1, 1],
        padding: Padding::Explicit([p; 4]),
        groups: g,
        activation: None,
    });
    let y = graph.add("conv", conv, &[x, wt, b]).unwrap();
    let dims = graph.node(y).ty.dims().to_vec();
    let r = graph.input("r", TensorType::f32(dims)).unwrap();
    let sum = graph.add("sum", Op::Binary(BinaryOp::Add), &[y, r]).unwrap();
    let out = graph
        .add("out", Op::Activation(Activation::Relu), &[sum])
        .unwrap();
    graph.mark_output(out).unwrap();
    graph
}

/// The output's bits on `threads` threads of `tier`.
fn bits(graph: &Graph, seed: u64, tier: Tier, threads: usize) -> Vec<u32> {
    let opts = JitOptions {
        gemm_tier: tier,
        threads,
        ..JitOptions::default()
    };
    let weights = default_weights(graph, seed).unwrap();
    let inputs = random_inputs(graph, seed ^ 0x5eed).unwrap();
    let mut model = kiln_runtime::compile(graph, &opts).unwrap();
    model.set_weights(&weights).unwrap();
    let out = model.run(&inputs).unwrap();
    out[0]
        .1
        .as_f()
        .unwrap()
        .data()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// `graph` equals the interpreter on every runnable tier and 1 to 4 threads, each thread count
/// bit for bit the one-thread result.
fn check_threads(graph: &Graph, seed: u64, what: &str) {
    for tier in Tier::runnable() {
        let one = bits(graph, seed, tier, 1);
        for threads in 1..=4 {
            let opts = JitOptions {
                gemm_tier: tier,
                threads,
                ..JitOptions::default()
            };
            if let Err(e) = jit_matches_interpreter_with(graph, seed, &opts) {
                panic!("{what}, {tier:?}, {threads} threads: {e}");
            }
            if threads > 1 {
                assert!(
                    bits(graph, seed, tier, threads) == one,
                    "{what}, {tier:?}: {threads} threads differ from one"
                );
            }
        }
    }
}

/// Products split along their columns (wide: more pixels than output channels), some wider
/// than a cache block (`Blocking::nc`, 1024 or more columns: a thread's merged columns span
/// several blocks, and an odd number of them at one thread), strided (the image in phases),
/// batches and groups (a thread's items span two images or groups).
#[test]
fn wide_products_split_by_columns() {
    let cases: [Case; 6] = [
        (1, 3, 1, 40, 64, 70, 7, 2),
        (1, 8, 1, 64, 48, 50, 3, 1),
        (2, 6, 2, 72, 20, 23, 3, 1),
        (1, 16, 1, 48, 28, 28, 3, 2),
        (3, 4, 1, 36, 9, 31, 3, 1),
        (1, 12, 1, 40, 30, 30, 1, 2),
    ];
    for (i, &case) in cases.iter().enumerate() {
        check_threads(&conv_graph(case), i as u64, &format!("case {i} {case:?}"));
    }
}

/// Narrow products (few pixels for their channels: transposed on the Rust tiers, split by rows
/// on the Cranelift tier): a thread's channels merged into one block, channel counts that are
/// not a whole number of tiles, batches and groups.
#[test]
fn narrow_products_split_by_rows() {
    let cases: [Case; 5] = [
        (1, 32, 1, 256, 7, 7, 3, 1),
        (1, 16, 1, 200, 14, 14, 3, 2),
        (2, 8, 1, 136, 5, 5, 3, 1),
        (1, 12, 2, 264, 7, 7, 3, 1),
        (1, 64, 1, 320, 7, 7, 1, 1),
    ];
    for (i, &case) in cases.iter().enumerate() {
        check_threads(&conv_graph(case), 10 + i as u64, &format!("case {i} {case:?}"));
    }
}

/// The work items of a case's direct kernel (`direct conv` or `row conv`) compiled for two
/// threads on AVX-512; `None` where this CPU lacks AVX-512. Panics where the case does not
/// run directly.
fn direct_items(case: Case) -> Option<usize> {
    if !Tier::Avx512.available() {
        return None;
    }
    let opts = JitOptions {
        gemm_tier: Tier::Avx512,
        threads: 2,
        ..JitOptions::default()
    };
    let compiled = kiln_jit::compile(&conv_graph(case), &opts).unwrap();
    let k = compiled
        .kernels()
        .iter()
        .find(|k| matches!(k.form, Some("direct conv" | "row conv")))
        .unwrap_or_else(|| panic!("{case:?} does not run directly"));
    Some(k.extent)
}

/// Pointwise products on small maps that AVX-512 runs directly, each image read as one row of
/// all its pixels (`DirectConv::for_pointwise`): the row is cut across threads in runs of whole
/// pixel blocks (`GemmDesc::split`; asserted from the compiled kernel's work items), so a
/// product of few output channels does not run on one thread: the channel kernel reading the
/// image in place (17 × 17 into 192 and 13 × 13 into 64 channels) and from a copy (more than
/// 256 output channels), the row kernel (64 channels in on 14 × 14), a batch of two.
#[test]
fn pointwise_rows_of_pixels_split_by_columns() {
    let cases: [Case; 5] = [
        (1, 768, 1, 192, 17, 17, 1, 1),
        (1, 512, 1, 64, 13, 13, 1, 1),
        (1, 64, 1, 37, 14, 14, 1, 1),
        (1, 128, 1, 300, 15, 15, 1, 1),
        (2, 96, 1, 48, 11, 11, 1, 1),
    ];
    for (i, &case) in cases.iter().enumerate() {
        // more work items than images: the pixels (or the channels) are cut
        if let Some(items) = direct_items(case) {
            assert!(items > 2 * case.0, "case {i} {case:?}: {items} items");
        }
        check_threads(&conv_graph(case), 20 + i as u64, &format!("case {i} {case:?}"));
    }
}

/// Direct convolutions on small maps, cut down to two panels of channels or two runs of
/// pixels a side (a direct kernel packs nothing per item, unlike a GEMM's eight tiles a side):
/// DenseNet's 3 × 3 into 32 channels on 7 × 7 (one panel: cut by rows), its 1 × 1s into 128
/// channels on 7 × 7 (four panels), a batch of two; more than one work item per image at two
/// threads on AVX-512 (asserted), and every thread count the bits of one.
#[test]
fn small_direct_convolutions_split_across_threads() {
    let cases: [Case; 3] = [
        (1, 128, 1, 32, 7, 7, 3, 1),
        (1, 960, 1, 128, 7, 7, 1, 1),
        (2, 64, 1, 32, 6, 6, 3, 1),
    ];
    for (i, &case) in cases.iter().enumerate() {
        if let Some(items) = direct_items(case) {
            assert!(items > case.0, "case {i} {case:?}: {items} items");
        }
        check_threads(&conv_graph(case), 30 + i as u64, &format!("case {i} {case:?}"));
    }
}
