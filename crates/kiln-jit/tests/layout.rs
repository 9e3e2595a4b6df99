//! The data-movement kernels (transpose, slice, concat) on every kernel tier this CPU runs
//! (the Rust copy kernel of `layout_kernels` on AVX2 / AVX-512, the Cranelift block copies)
//! must equal the interpreter: transposes of every rank 1–6 and every permutation family
//! (identity, swaps, rotations, reversal, the channel shuffle, NCHW ↔ NHWC, random), slices of
//! every axis, concatenations on every axis, on one thread and split over two. The graphs run
//! without passes, so even an identity transpose reaches its kernel.

use kiln_ir::{Graph, Op, TensorType};
use kiln_jit::JitOptions;
use kiln_jit::gemm::Tier;
use kiln_passes::OptLevel;
use kiln_runtime::check::jit_matches_interpreter_with;
use proptest::prelude::*;

/// `Auto` and every forced tier this CPU runs.
fn tiers() -> Vec<Tier> {
    let mut t = vec![Tier::Auto];
    t.extend(Tier::runnable());
    t
}

fn check(graph: &Graph, seed: u64) {
    for tier in tiers() {
        for threads in [1, 2] {
            let options = JitOptions {
                gemm_tier: tier,
                threads,
                passes: OptLevel::None,
                ..JitOptions::default()
            };
            if let Err(e) = jit_matches_interpreter_with(graph, seed, &options) {
                panic!("tier {tier:?}, {threads} threads: {e}");
            }
        }
    }
}

/// `op` over one input `x` per type of `xs`.
fn graph(op: Op, xs: &[Vec<usize>]) -> Graph {
    let mut g = Graph::new();
    let ins: Vec<_> = xs
        .iter()
        .enumerate()
        .map(|(i, d)| g.input(format!("x{i}"), TensorType::f32(d.clone())).unwrap())
        .collect();
    let y = g.add("y", op, &ins).unwrap();
    g.mark_output(y).unwrap();
    g
}

fn transpose(dims: &[usize], perm: &[usize], seed: u64) {
    check(
        &graph(Op::Transpose { perm: perm.to_vec() }, &[dims.to_vec()]),
        seed,
    );
}

/// Every permutation of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..n {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// Dims of rank `n` that give the kernels' paths work: sizes 1 (dropped), odd sizes (edges),
/// and ≥ 8 (full register tiles).
fn dims_of(n: usize) -> Vec<usize> {
    [9, 2, 17, 3, 1, 8][..n].to_vec()
}

#[test]
fn every_permutation_up_to_rank_4() {
    for n in 1..=4 {
        for p in permutations(n) {
            transpose(&dims_of(n), &p, n as u64);
        }
    }
}

/// Ranks 5 and 6 by family: identity, each adjacent swap, rotations both ways, the reversal,
/// the first and last axes swapped, and a few random ones.
#[test]
fn permutation_families_at_ranks_5_and_6() {
    for n in [5, 6] {
        let id: Vec<usize> = (0..n).collect();
        let mut perms = vec![id.clone(), id.iter().rev().copied().collect()];
        for k in 0..n - 1 {
            let mut p = id.clone();
            p.swap(k, k + 1);
            perms.push(p);
        }
        let mut left = id.clone();
        left.rotate_left(1);
        let mut right = id.clone();
        right.rotate_right(1);
        let mut ends = id.clone();
        ends.swap(0, n - 1);
        perms.extend([left, right, ends]);
        let all = permutations(n);
        for k in 0..6 {
            perms.push(all[(k * 7919 + 13) % all.len()].clone());
        }
        for p in perms {
            transpose(&dims_of(n), &p, 5);
        }
    }
}

/// The networks' transposes at sizes where two threads split them: ShuffleNet's channel
/// shuffle, ConvNeXt's NCHW ↔ NHWC (spatial sizes that are and are not multiples of 8).
#[test]
fn network_transposes() {
    transpose(&[1, 2, 58, 14, 14], &[0, 2, 1, 3, 4], 1);
    transpose(&[2, 3, 24, 7, 7], &[0, 2, 1, 3, 4], 2);
    for hw in [7, 8, 14] {
        transpose(&[1, 96, hw, hw], &[0, 2, 3, 1], 3);
        transpose(&[1, hw, hw, 96], &[0, 3, 1, 2], 4);
        transpose(&[2, 20, hw, hw + 3], &[0, 2, 3, 1], 5);
    }
    transpose(&[130, 170], &[1, 0], 6);
}

#[test]
fn slices_of_every_axis() {
    let dims = [3, 5, 4, 9];
    for rank in 1..=4 {
        let d = &dims[4 - rank..];
        for axis in 0..rank {
            let n = d[axis];
            for (start, end) in [(0, 1), (0, n), (1, n), (n / 2, n), (1, n - 1)] {
                if start >= end {
                    continue;
                }
                let op = Op::Slice {
                    axis: axis as i64,
                    start,
                    end,
                };
                check(&graph(op, &[d.to_vec()]), (rank * 10 + axis) as u64);
            }
        }
    }
    // ShuffleNet's channel split, big enough for two threads, and a negative axis
    for (start, end) in [(0, 58), (58, 116)] {
        let op = Op::Slice { axis: 1, start, end };
        check(&graph(op, &[vec![1, 116, 14, 14]]), 7);
    }
    let op = Op::Slice {
        axis: -1,
        start: 2,
        end: 7,
    };
    check(&graph(op, &[vec![2, 3, 9]]), 8);
}

#[test]
fn concatenations_on_every_axis() {
    for rank in 1..=5 {
        let base = [2, 3, 5, 4, 3][..rank].to_vec();
        for axis in 0..rank {
            for parts in 1..=3 {
                let xs: Vec<Vec<usize>> = (0..parts)
                    .map(|p| {
                        let mut d = base.clone();
                        d[axis] += p;
                        d
                    })
                    .collect();
                let op = Op::Concat { axis: axis as i64 };
                check(&graph(op, &xs), (rank * 10 + axis) as u64);
            }
        }
    }
    let op = Op::Concat { axis: -3 };
    check(&graph(op, &[vec![1, 58, 14, 14], vec![1, 58, 14, 14]]), 9);
}

/// Fire modules (SqueezeNet's): convolutions that only a concatenation reads are written
/// straight into their slices of its slot (`Plan::slices`) at a batch of one, beside an input
/// the concatenation copies (read elsewhere too); at a batch of two every input is copied.
/// Either way the JIT equals the interpreter on every tier, with the passes that make the
/// convolutions GEMMs and direct convolutions.
#[test]
fn concatenations_of_values_written_into_their_slices() {
    for batch in [1, 2] {
        let src = format!(
            "graph fire {{
  input %x: f32[{batch}, 16, 9, 9]
  param %s.weight: f32[16, 16, 1, 1]
  %s = conv2d(%x, %s.weight): f32[{batch}, 16, 9, 9]
  %sr = relu(%s)
  param %e1.weight: f32[32, 16, 1, 1]
  param %e1.bias: f32[32]
  %e1 = conv2d(%sr, %e1.weight, %e1.bias): f32[{batch}, 32, 9, 9]
  %e1r = relu(%e1)
  param %e3.weight: f32[48, 16, 3, 3]
  %e3 = conv2d(%sr, %e3.weight) {{padding=[1, 1, 1, 1]}}: f32[{batch}, 48, 9, 9]
  %e3r = relu(%e3)
  %cat = concat(%e1r, %sr, %e3r) {{axis=1}}
  %y = softmax(%cat) {{axis=1}}
  output %y
}}"
        );
        let g = kiln_ir::text::parse(&src).unwrap();
        let m = kiln_jit::compile(&g, &JitOptions::default()).unwrap();
        let sliced = m.plan().slices.len();
        assert_eq!(sliced, if batch == 1 { 2 } else { 0 }, "batch {batch}");
        for tier in tiers() {
            for threads in [1, 2] {
                let options = JitOptions {
                    gemm_tier: tier,
                    threads,
                    ..JitOptions::default()
                };
                if let Err(e) = jit_matches_interpreter_with(&g, 11, &options) {
                    panic!("batch {batch}, tier {tier:?}, {threads} threads: {e}");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random dims and permutations of rank 1–6.
    #[test]
    fn random_transposes(dims in proptest::collection::vec(1usize..12, 1..=6), keys in proptest::collection::vec(any::<u32>(), 6),
                         seed in any::<u64>()) {
        let n = dims.len();
        prop_assume!(dims.iter().product::<usize>() <= 1 << 15);
        let mut perm: Vec<usize> = (0..n).collect();
        perm.sort_by_key(|&k| keys[k]);
        transpose(&dims, &perm, seed);
    }
}

/// The `layout` pass on random chains of transposes (with relus and a size-1 axis between
/// them): the interpreter gives the same outputs, bit for bit, before and after, and after the
/// pass and `dead_code` no two transposes are chained and no transpose moves only unit axes.
fn layout_pass_keeps_values(dims: &[usize], perms: &[Vec<usize>], relu_after: &[bool], seed: u64) {
    use kiln_ir::init::{default_weights, random_inputs};
    use kiln_passes::Pass;
    let mut g = Graph::new();
    let mut h = g.input("x", TensorType::f32(dims.to_vec())).unwrap();
    for (i, (p, &relu)) in perms.iter().zip(relu_after).enumerate() {
        h = g
            .add(format!("t{i}"), Op::Transpose { perm: p.clone() }, &[h])
            .unwrap();
        if relu {
            h = g
                .add(format!("r{i}"), Op::Activation(kiln_ir::Activation::Relu), &[h])
                .unwrap();
        }
    }
    g.mark_output(h).unwrap();
    let weights = default_weights(&g, seed).unwrap();
    let inputs = random_inputs(&g, seed).unwrap();
    let before = kiln_interp::run::<f32>(&g, &inputs, &weights).unwrap();
    let mut opt = g.clone();
    kiln_passes::layout::Layout.run(&mut opt).unwrap();
    opt.verify().unwrap();
    let after = kiln_interp::run::<f32>(&opt, &inputs, &weights).unwrap();
    for ((_, b), (_, a)) in before.iter().zip(&after) {
        let (b, a) = (b.as_f().unwrap(), a.as_f().unwrap());
        assert_eq!(b.shape(), a.shape());
        let same = b
            .data()
            .iter()
            .zip(a.data())
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{}", kiln_ir::text::print(&g));
    }
    // run to a fixpoint with dead_code, as the pipeline does
    let mut fix = g.clone();
    let passes: Vec<Box<dyn Pass>> = vec![
        Box::new(kiln_passes::layout::Layout),
        Box::new(kiln_passes::dead_code::DeadCode),
    ];
    kiln_passes::run_pipeline(&mut fix, &passes, |_, _| {}).unwrap();
    let again = kiln_interp::run::<f32>(&fix, &inputs, &weights).unwrap();
    assert_eq!(format!("{again:?}"), format!("{before:?}"));
    for id in fix.topo_order() {
        if let Op::Transpose { perm } = &fix.node(id).op {
            let u = fix.inputs(id)[0];
            assert!(
                !matches!(fix.node(u).op, Op::Transpose { .. }),
                "{}",
                kiln_ir::text::print(&fix)
            );
            let xd = fix.node(u).ty.dims();
            let moved: Vec<usize> = perm.iter().copied().filter(|&p| xd[p] != 1).collect();
            assert!(
                moved.windows(2).any(|w| w[0] > w[1]),
                "{}",
                kiln_ir::text::print(&fix)
            );
        }
    }
}

#[test]
fn the_layout_pass_on_network_shapes() {
    // NCHW -> NHWC -> NCHW around an elementwise op; the pair straight after each other
    layout_pass_keeps_values(
        &[1, 4, 3, 5],
        &[vec![0, 2, 3, 1], vec![0, 3, 1, 2]],
        &[true, false],
        1,
    );
    layout_pass_keeps_values(
        &[1, 4, 3, 5],
        &[vec![0, 2, 3, 1], vec![0, 3, 1, 2]],
        &[false, true],
        2,
    );
    // ConvNeXt's head: [1, 768, 1, 1] through NHWC and back
    layout_pass_keeps_values(
        &[1, 7, 1, 1],
        &[vec![0, 2, 3, 1], vec![0, 3, 1, 2]],
        &[true, false],
        3,
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random chains of 1–4 transposes of rank 2–5 (axes of size 1 included).
    #[test]
    fn the_layout_pass_keeps_values(dims in proptest::collection::vec(prop_oneof![Just(1usize), 2usize..5], 2..=5),
                                    keys in proptest::collection::vec(proptest::collection::vec(any::<u32>(), 5), 1..=4),
                                    relu in proptest::collection::vec(any::<bool>(), 4), seed in any::<u64>()) {
        let n = dims.len();
        let perms: Vec<Vec<usize>> = keys
            .iter()
            .map(|k| {
                let mut p: Vec<usize> = (0..n).collect();
                p.sort_by_key(|&i| k[i]);
                p
            })
            .collect();
        layout_pass_keeps_values(&dims, &perms, &relu, seed);
    }
}
