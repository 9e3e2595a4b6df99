//! The JIT'd training graph (forward, backward, updates) against the interpreter's: every
//! output (loss, each gradient, each updated weight and optimizer state) of both engines on
//! the same seeded weights and inputs.

use kiln::autodiff::{Loss, Optimizer, differentiate};
use kiln::ir::init::{default_weights, random_inputs};
use kiln::ir::{Graph, Tensor};
use proptest::prelude::*;

/// Runs the training graph of `graph` on both engines; `Err` names the first disagreement.
fn compare(graph: &Graph, loss: Loss, opt: Option<Optimizer>, seed: u64) -> Result<(), String> {
    compare_with(graph, loss, opt, seed, &Default::default())
}

fn compare_with(
    graph: &Graph,
    loss: Loss,
    opt: Option<Optimizer>,
    seed: u64,
    jit: &kiln::CompileOptions,
) -> Result<(), String> {
    let t = differentiate(graph, loss, opt).map_err(|e| e.to_string())?;
    let g = &t.graph;
    let mut weights = default_weights(g, seed).map_err(|e| e.to_string())?;
    // optimizer state starts at zero, as in training
    for (name, ty) in &t.state {
        weights.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.0));
    }
    let inputs = random_inputs(g, seed ^ 0x5eed).map_err(|e| e.to_string())?;
    let text = || kiln::ir::text::print(g);
    let want =
        kiln::interp::run::<f32>(g, &inputs, &weights).map_err(|e| format!("interp: {e}\n{}", text()))?;
    let mut m = kiln::compile(g, jit).map_err(|e| format!("compile: {e}\n{}", text()))?;
    m.set_weights(&weights).map_err(|e| e.to_string())?;
    let got = m.run(&inputs).map_err(|e| format!("run: {e}\n{}", text()))?;
    for ((name, w), (_, v)) in want.iter().zip(&got) {
        let (w, v) = (w.as_f().unwrap(), v.as_f().unwrap());
        let scale = w
            .data()
            .iter()
            .filter(|x| x.is_finite())
            .fold(0.0f32, |m, x| m.max(x.abs()));
        for (i, (a, b)) in w.data().iter().zip(v.data()).enumerate() {
            // relative to the tensor's scale: gradients sum many products in another order
            let ok =
                (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-4 + 1e-4 * scale.max(a.abs());
            if !ok {
                return Err(format!(
                    "output `{name}`[{i}]: interpreter {a}, JIT {b}\n{}",
                    text()
                ));
            }
        }
    }
    Ok(())
}

const CNN: &str = r#"
graph cnn {
  input %x: f32[3, 2, 9, 8]
  param %c1.w: f32[4, 1, 3, 3]
  param %c1.b: f32[4]
  param %c2.w: f32[6, 4, 2, 3]
  param %d.w: f32[4, 1, 3, 3]
  param %fc.w: f32[5, 20]
  param %fc.b: f32[5]
  param %scale: f32[6, 1, 1]
  param %bn.s: f32[6]
  param %bn.b: f32[6]
  buffer %bn.m: f32[6]
  buffer %bn.v: f32[6]
  %c1 = conv2d(%x, %c1.w, %c1.b) {padding=[1, 0, 2, 1], groups=2, activation=relu}
  %p1 = max_pool2d(%c1) {kernel=[3, 3], stride=[2, 2], padding=[1, 1, 1, 1]}
  %c2 = conv2d(%p1, %c2.w) {stride=[2, 1], dilation=[1, 2], padding=same_upper}
  %bn = batch_norm(%c2, %bn.s, %bn.b, %bn.m, %bn.v)
  %t = tanh(%bn)
  %m = mul(%t, %scale)
  %l = leaky_relu(%m) {alpha=0.1}
  %a = avg_pool2d(%l) {kernel=[2, 2], stride=[1, 1], padding=[1, 1, 0, 0], count_include_pad=false}
  %g = adaptive_max_pool2d(%a) {output=[1, 2]}
  %s = sum_pool2d(%l) {kernel=[2, 2], stride=[2, 2]}
  %ga = global_avg_pool(%s)
  %f1 = flatten(%g)
  %f2 = flatten(%ga)
  %cat = concat(%f1, %f2) {axis=1}
  %drop = dropout(%cat) {ratio=0.3, seed=5}
  %sig = sigmoid(%drop)
  %d = div(%cat, %sig)
  %sb = sub(%d, %sig)
  %ct = conv_transpose2d(%c1, %d.w) {stride=[2, 2], padding=[1, 0, 0, 1], output_padding=[1, 0], groups=2}
  %gm = global_max_pool(%ct)
  %f3 = flatten(%gm)
  %sm = softmax(%f3) {axis=1}
  %cat2 = concat(%sb, %sm) {axis=1}
  %fc = dense(%cat2, %fc.w, %fc.b)
  output %fc
}
"#;

#[test]
fn cnn_training_graph_matches_the_interpreter() {
    let g = kiln::ir::text::parse(CNN).unwrap();
    for (loss, opt, seed) in [
        (
            Loss::cross_entropy(),
            Some(Optimizer::sgd(0.1).momentum(0.9).weight_decay(1e-3)),
            1,
        ),
        (
            Loss::cross_entropy().with_probabilities(),
            Some(Optimizer::adam(0.01)),
            2,
        ),
        (Loss::mse(), None, 3),
    ] {
        compare(&g, loss, opt, seed).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn log_softmax_nll_and_matmul_match_the_interpreter() {
    let src = r#"
graph mm {
  input %x: f32[2, 3, 4]
  param %w: f32[4, 5]
  param %v: f32[5]
  %y = matmul(%x, %w)
  %z = matmul(%y, %v)
  %t = transpose(%z) {perm=[1, 0]}
  %r = reshape(%t) {shape=[2, 3]}
  %ls = log_softmax(%r) {axis=-1}
  output %ls
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    compare(&g, Loss::nll(), Some(Optimizer::sgd(0.05)), 4).unwrap_or_else(|e| panic!("{e}"));
}

/// The normalization and activation ops of real networks and the compositions ONNX import
/// builds from them (LayerNorm over the last axis, HardSwish, exact GELU, ReLU6), after an
/// LRN and a convolution with a fused clip, then a 4-D × 2-D matmul and a rank-5 channel
/// shuffle, with their backward ops (`lrn_grad`, `broadcast_to`, `erf_grad`, …) JIT'd.
#[test]
fn norm_and_activation_ops_match_the_interpreter() {
    let src = r#"
graph norms {
  input %x: f32[2, 3, 5, 6]
  param %w: f32[4, 3, 3, 3]
  param %scale: f32[4]
  param %bias: f32[4]
  param %fc.w: f32[3, 4]
  param %inv_sqrt2: f32[1]
  param %mlp.w: f32[4, 4]
  %l = lrn(%x) {size=4, alpha=0.5, beta=0.75, bias=2.0}
  %c = conv2d(%l, %w) {padding=[1, 1, 1, 1], activation=clip, min=-0.5, max=0.5}
  %t = transpose(%c) {perm=[0, 2, 3, 1]}
  %m = reduce_mean(%t) {axes=[3]}
  %d = sub(%t, %m)
  %dd = mul(%d, %d)
  %v = reduce_mean(%dd) {axes=[3]}
  %r = rsqrt(%v) {epsilon=1e-05}
  %n = mul(%d, %r)
  %ns = mul(%n, %scale)
  %ln = add(%ns, %bias)
  %hs = hard_sigmoid(%ln) {alpha=0.16666667, beta=0.5}
  %hsw = mul(%ln, %hs)
  %xs = mul(%hsw, %inv_sqrt2)
  %e = erf(%xs)
  %g = mul(%hsw, %e)
  %r6 = clip(%g) {min=0.0, max=6.0}
  %mm = matmul(%r6, %mlp.w)
  %r5 = reshape(%mm) {shape=[2, 5, 6, 2, 2]}
  %t5 = transpose(%r5) {perm=[0, 2, 1, 3, 4]}
  %sh = reshape(%t5) {shape=[2, 6, 5, 4]}
  %p = reduce_mean(%sh) {axes=[1, 2], keepdims=false}
  %fc = dense(%p, %fc.w)
  output %fc
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    compare(&g, Loss::cross_entropy(), Some(Optimizer::sgd(0.05)), 9).unwrap_or_else(|e| panic!("{e}"));
}

/// GELU and HardSwish as single activations (as the ONNX importer makes them), after a
/// convolution and a dense layer, with their backward kernels (`gelu_grad`, `hard_swish_grad`,
/// from the forward input) JIT'd: a training step equals the interpreter's.
#[test]
fn gelu_and_hard_swish_train_as_the_interpreter() {
    let src = r#"
graph acts {
  input %x: f32[2, 3, 6, 5]
  param %w: f32[4, 3, 3, 3]
  param %fc.w: f32[3, 4]
  %c = conv2d(%x, %w) {padding=[1, 1, 1, 1]}
  %h = hard_swish(%c)
  %g = gelu(%h)
  %p = global_avg_pool(%g)
  %f = flatten(%p)
  %fc = dense(%f, %fc.w)
  %y = gelu(%fc)
  output %y
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    compare(&g, Loss::cross_entropy(), Some(Optimizer::sgd(0.05)), 7).unwrap_or_else(|e| panic!("{e}"));
}

/// Weight gradients on the GEMM driver cut every way: many output channels over a narrow
/// kernel (`dw` split by rows), a wide one (by columns, with edge tiles), a strided, dilated,
/// asymmetrically padded and grouped one, and a batch whose `N·oh·ow` spans several K blocks,
/// on one and on two threads.
#[test]
fn weight_gradients_on_the_gemm_driver_match_the_interpreter() {
    let src = r#"
graph wg {
  input %x: f32[3, 4, 23, 21]
  param %a.w: f32[128, 4, 1, 2]
  param %b.w: f32[32, 2, 5, 3]
  param %c.w: f32[16, 16, 3, 3]
  %a = conv2d(%x, %a.w) {stride=[2, 1], dilation=[1, 2], padding=[1, 0, 0, 1]}
  %b = conv2d(%x, %b.w) {stride=[1, 2], dilation=[2, 1], padding=[2, 1, 0, 1], groups=2, activation=tanh}
  %c = conv2d(%b, %c.w) {padding=[1, 1, 1, 1], groups=2}
  %pa = global_avg_pool(%a)
  %pc = global_avg_pool(%c)
  %fa = flatten(%pa)
  %fc = flatten(%pc)
  %y = concat(%fa, %fc) {axis=1}
  output %y
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    for threads in [1, 2] {
        let options = kiln::CompileOptions {
            threads,
            ..Default::default()
        };
        compare_with(&g, Loss::mse(), Some(Optimizer::sgd(0.05)), 11, &options)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Weight gradients on the GEMM driver whose packing stages rows and columns in blocks of 8
/// and transposes them (`gemm_train`), and `rot180` on the Rust tiers, on every tier and 1,
/// 2 and 3 threads: rows of 30 and of 9 columns (runs longer and shorter than a register), K
/// (`N·oh·ow`) over several K blocks, each starting mid-row and mid-image, column counts that
/// are not multiples of 8 (zero columns in the last panel), a 7×5 kernel at stride 2 with
/// groups, a 1×1 stride-2 downsample, and a grouped, non-square kernel whose data gradient
/// runs `rot180` of its weights; at 3 threads a thread's items start and end mid-row of
/// `dw`'s blocks (the driver runs a thread's adjacent items as one block).
#[test]
fn weight_gradients_pack_staged_runs_on_every_tier() {
    let src = r#"
graph wgp {
  input %x: f32[2, 12, 19, 30]
  param %a.w: f32[40, 12, 3, 3]
  param %b.w: f32[24, 4, 7, 5]
  param %c.w: f32[36, 12, 1, 1]
  param %d.w: f32[26, 20, 3, 2]
  %a = conv2d(%x, %a.w) {padding=[1, 1, 1, 1], activation=relu}
  %b = conv2d(%x, %b.w) {stride=[2, 2], padding=[3, 2, 3, 2], groups=3}
  %c = conv2d(%x, %c.w) {stride=[2, 2]}
  %d = conv2d(%a, %d.w) {stride=[2, 3], padding=[1, 0, 1, 1], groups=2}
  %pb = global_avg_pool(%b)
  %pc = global_max_pool(%c)
  %pd = global_avg_pool(%d)
  %fb = flatten(%pb)
  %fc = flatten(%pc)
  %fd = flatten(%pd)
  %y = concat(%fb, %fc, %fd) {axis=1}
  output %y
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    for tier in kiln::jit::gemm::Tier::runnable() {
        for threads in [1, 2, 3] {
            let options = kiln::CompileOptions {
                threads,
                gemm_tier: tier,
                ..Default::default()
            };
            compare_with(&g, Loss::mse(), Some(Optimizer::sgd(0.05)), 17, &options)
                .unwrap_or_else(|e| panic!("{tier:?}, {threads} threads: {e}"));
        }
    }
}

/// The training kernels of the Rust tiers (`train_kernels`) against the interpreter on every
/// runnable tier, 1 and 2 threads: max-pool ids at strides 1, 2 and 3 with padding, dilation
/// and ties (pooling after a relu: many zeros), their scatters, weight gradients with few
/// channels (padded, dilated, row-strided, grouped, wide rows past one register, taps past
/// one register block), data gradients of stride-1 convolutions with few input channels
/// (written as weight gradients along the taps: dilated, padded per side, rows wider than a
/// register), batch norm on batch statistics (every piece), and bias gradients
/// (`reduce_sum_to` of a convolution and a dense layer).
#[test]
fn training_kernels_match_the_interpreter_on_every_tier() {
    let src = r#"
graph tk {
  input %x: f32[3, 2, 21, 37]
  param %a.w: f32[6, 2, 5, 5]
  param %a.b: f32[6]
  param %b.w: f32[4, 3, 3, 7]
  param %c.w: f32[5, 6, 2, 3]
  param %c.b: f32[5]
  param %e.w: f32[3, 6, 3, 2]
  param %bn.s: f32[5]
  param %bn.b: f32[5]
  buffer %bn.m: f32[5]
  buffer %bn.v: f32[5]
  param %fc.w: f32[7, 18]
  param %fc.b: f32[7]
  %a = conv2d(%x, %a.w, %a.b) {padding=[2, 2, 2, 2], dilation=[1, 2], activation=relu}
  %p1 = max_pool2d(%a) {kernel=[2, 2], stride=[2, 2]}
  %p2 = max_pool2d(%a) {kernel=[3, 3], stride=[1, 1], padding=[1, 1, 1, 1]}
  %p3 = max_pool2d(%a) {kernel=[3, 2], stride=[3, 3], dilation=[1, 2], padding=[0, 1, 0, 1]}
  %b = conv2d(%p2, %b.w) {stride=[2, 1], padding=[1, 3, 0, 2], groups=2, activation=tanh}
  %c = conv2d(%p1, %c.w, %c.b) {padding=[0, 1, 1, 0]}
  %e = conv2d(%p2, %e.w) {dilation=[2, 1], padding=[2, 0, 1, 3]}
  %gb = global_avg_pool(%b)
  %ge = global_avg_pool(%e)
  %cn = batch_norm(%c, %bn.s, %bn.b, %bn.m, %bn.v)
  %gc = global_max_pool(%cn)
  %g3 = global_avg_pool(%p3)
  %f1 = flatten(%gb)
  %f2 = flatten(%gc)
  %f3 = flatten(%g3)
  %f4 = flatten(%ge)
  %cat = concat(%f1, %f2, %f3, %f4) {axis=1}
  %fc = dense(%cat, %fc.w, %fc.b)
  output %fc
}
"#;
    let g = kiln::ir::text::parse(src).unwrap();
    for tier in kiln::jit::gemm::Tier::runnable() {
        for threads in [1, 2] {
            let options = kiln::CompileOptions {
                threads,
                gemm_tier: tier,
                ..Default::default()
            };
            compare_with(
                &g,
                Loss::cross_entropy(),
                Some(Optimizer::sgd(0.05).momentum(0.9)),
                13,
                &options,
            )
            .unwrap_or_else(|e| panic!("{tier:?}, {threads} threads: {e}"));
        }
    }
}

/// LeNet-5 at batch 8 on two threads: the big kernels (scatters by plane, weight gradients by
/// channel pair) split across threads, with Adam; and the training graph prints and parses back.
#[test]
fn lenet5_on_two_threads_matches_the_interpreter() {
    let g = kiln::zoo::lenet5().unwrap().with_batch(8).unwrap();
    let two = kiln::CompileOptions {
        threads: 2,
        ..Default::default()
    };
    compare_with(&g, Loss::cross_entropy(), Some(Optimizer::adam(1e-3)), 7, &two)
        .unwrap_or_else(|e| panic!("{e}"));
    let t = differentiate(&g, Loss::cross_entropy(), Some(Optimizer::adam(1e-3))).unwrap();
    let text = kiln::ir::text::print(&t.graph);
    assert_eq!(kiln::ir::text::parse(&text).unwrap(), t.graph);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random networks from kiln-ir's generator (the fuzzers' one) that autodiff accepts (one
    /// output; no training-mode dropout or batch norm): their training graphs under mse.
    #[test]
    fn random_training_graphs_match_the_interpreter(bytes in proptest::collection::vec(any::<u8>(), 0..200), seed: u64) {
        let graph = kiln::ir::random::graph_from_bytes(&bytes);
        prop_assume!(differentiate(&graph, Loss::mse(), None).is_ok());
        if let Err(e) = compare(&graph, Loss::mse(), Some(Optimizer::sgd(0.01).momentum(0.5)), seed) {
            panic!("{e}");
        }
    }
}

/// A training graph is a graph like any other: the summary counts its training ops (and never
/// panics on them).
#[test]
fn training_graphs_summarize() {
    let g = kiln::zoo::lenet5().unwrap();
    let t = differentiate(&g, Loss::cross_entropy(), Some(Optimizer::adam(1e-3))).unwrap();
    let fwd = kiln::ir::summary::summarize(&g);
    let s = kiln::ir::summary::summarize(&t.graph);
    // backward ≈ twice the forward's FLOPs, plus the updates: well above the forward alone
    assert!(
        s.total_flops > 2 * fwd.total_flops,
        "{} vs {}",
        s.total_flops,
        fwd.total_flops
    );
    assert_eq!(s.total_params, fwd.total_params);
    assert!(s.rows.iter().any(|r| r.op == "conv2d_weight_grad" && r.flops > 0));
}

/// The digits CNN's training graph (SGD with momentum, cross-entropy on class ids) through
/// every pass (im2col + GEMM on both micro-kernel tiers, fusion, memory reuse) and through
/// none: all equal the interpreter.
#[test]
fn digits_cnn_training_graph_through_the_full_pipeline() {
    let graph = kiln::zoo::digits_cnn().unwrap().with_batch(8).unwrap();
    for options in [
        kiln::CompileOptions::default(),
        kiln::CompileOptions {
            gemm_tier: kiln::jit::gemm::Tier::Cranelift,
            ..Default::default()
        },
        kiln::CompileOptions {
            passes: kiln::passes::OptLevel::None,
            ..Default::default()
        },
    ] {
        let opt = Some(Optimizer::sgd(0.1).momentum(0.9));
        if let Err(e) = compare_with(&graph, Loss::cross_entropy(), opt, 3, &options) {
            panic!("{e}")
        }
    }
}

/// The two phases of a training graph compiled with its updates: the gradient phase leaves
/// the weights as they were; the update phase writes every SGD-with-momentum update (weights
/// and velocities) in place, none copied, and gives the interpreter's new weights.
#[test]
fn updates_write_the_weights_in_place_in_their_own_phase() {
    let g = kiln::zoo::digits_cnn().unwrap().with_batch(4).unwrap();
    let t = kiln::autodiff::differentiate_wrt(
        &g,
        Loss::cross_entropy(),
        Some(Optimizer::sgd(0.1).momentum(0.9)),
        kiln::autodiff::Wrt::Params,
    )
    .unwrap();
    let tg = &t.graph;
    let mut weights = default_weights(tg, 5).unwrap();
    for (name, ty) in &t.state {
        // a nonzero velocity, so that the momentum term matters
        weights.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.01));
    }
    let inputs = random_inputs(tg, 6).unwrap();
    let want: std::collections::HashMap<String, kiln::ir::Value<f32>> =
        kiln::interp::run::<f32>(tg, &inputs, &weights)
            .unwrap()
            .into_iter()
            .collect();

    let m = kiln::runtime::compile_training(tg, &Default::default(), &t.updates).unwrap();
    assert_eq!(m.copied_updates(), 0, "every update in place");
    assert!(m.kernels().iter().any(|k| k.update) && m.kernels().iter().any(|k| !k.update));
    let mut s = m.session().unwrap();
    m.own_weights(&mut s, &weights).unwrap();
    let feeds: Vec<kiln::Feed> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
    m.run_gradients(&mut s, &feeds).unwrap();
    for (name, _) in &t.updates {
        assert_eq!(
            &m.read(&s, name).unwrap(),
            &weights[name],
            "{name} before the update"
        );
    }
    m.apply_updates(&mut s).unwrap();
    for (name, node) in &t.updates {
        let (got, w) = (m.read(&s, name).unwrap(), want[node].as_f().unwrap().clone());
        assert_ne!(got, weights[name], "{name} moved");
        for (a, b) in got.data().iter().zip(w.data()) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{name}: JIT {a}, interpreter {b}"
            );
        }
    }
}

/// A measurement probe, not a test (`#[ignore]`): the per-kernel profile of a training step
/// (forward, loss, backward, SGD-with-momentum update; one thread, `Model::run_profiled`),
/// per op and the slowest kernels, the fastest of `KILN_PROFILE_RUNS` (default 20) runs, the
/// `prep` kernels (which run again after every update) included. Run with
/// `KILN_PROFILE=lenet5:64 cargo test --release -p kiln --test train_jit profile_training_step -- --ignored --nocapture`
/// (`resnet18:8`, `digits_cnn:32`; pin it with `taskset -c 1`).
#[test]
#[ignore]
fn profile_training_step() {
    let spec = std::env::var("KILN_PROFILE").unwrap_or_else(|_| "lenet5:64".into());
    let (name, batch) = spec.split_once(':').expect("MODEL:BATCH");
    let batch: usize = batch.parse().expect("a batch size");
    let runs: usize = std::env::var("KILN_PROFILE_RUNS").map_or(20, |r| r.parse().expect("a count"));
    let g = match name {
        "lenet5" => kiln::zoo::lenet5(),
        "resnet18" => kiln::zoo::resnet18(),
        "digits_cnn" => kiln::zoo::digits_cnn(),
        other => panic!("no model {other}"),
    }
    .unwrap()
    .with_batch(batch)
    .unwrap();
    let t = kiln::autodiff::differentiate_wrt(
        &g,
        Loss::cross_entropy(),
        Some(Optimizer::sgd(0.05).momentum(0.9)),
        kiln::autodiff::Wrt::Params,
    )
    .unwrap();
    let tg = &t.graph;
    let mut weights = default_weights(tg, 1).unwrap();
    for (name, ty) in &t.state {
        weights.insert(name.clone(), Tensor::full(ty.shape.clone(), 0.0));
    }
    let mut inputs = random_inputs(tg, 2).unwrap();
    // class ids in range (random_inputs draws any i32 for an id input)
    let classes = g.node(g.outputs()[0]).ty.dims()[1];
    let target = tg.node(tg.find(&t.target).unwrap()).ty.clone();
    let ids = (0..target.shape.numel())
        .map(|i| (i * 7 % classes) as i32)
        .collect();
    inputs.insert(
        t.target.clone(),
        kiln::ir::Value::I(Tensor::new(target.shape.clone(), ids).unwrap()),
    );
    let options = kiln::CompileOptions {
        threads: 1,
        ..Default::default()
    };
    let mut m = kiln::runtime::compile_training(tg, &options, &t.updates).unwrap();
    m.set_weights(&weights).unwrap();
    let mut all: Vec<Vec<f64>> = Vec::new();
    for _ in 0..runs {
        let (times, _) = m.run_profiled(&inputs).unwrap();
        all.push(times);
    }
    // the `prep` kernels (values of the weights alone: rot180, packed weights) run again
    // after every update, so they are part of every step
    let mut prep: Vec<Vec<f64>> = Vec::new();
    for _ in 0..runs.min(5) {
        prep.push(m.profile_prep().unwrap());
    }
    let opt = m.graph();
    // the fastest run of each kernel: on a shared machine the others are slowed by preemption
    let fastest = |runs: &[Vec<f64>], k: usize| runs.iter().map(|t| t[k]).fold(f64::INFINITY, f64::min);
    let median = |k: usize| fastest(&all, k) + fastest(&prep, k);
    let mut rows: Vec<(String, String, f64)> = m
        .kernels()
        .iter()
        .enumerate()
        .map(|(k, info)| {
            let node = opt.node(info.node);
            (node.name.clone(), node.op.name().to_string(), median(k))
        })
        .collect();
    let total: f64 = rows.iter().map(|r| r.2).sum();
    let mut by_op: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for (_, op, ms) in &rows {
        let e = by_op.entry(op.clone()).or_default();
        e.0 += ms;
        e.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!(
        "{name} batch {batch}: {total:.3} ms over {} kernels (sum of medians)",
        rows.len()
    );
    for (op, (ms, n)) in ops {
        println!(
            "  {op:<24} {n:>3} kernels {ms:>9.3} ms {:>5.1}%",
            100.0 * ms / total
        );
    }
    rows.sort_by(|a, b| b.2.total_cmp(&a.2));
    for (node, op, ms) in rows.iter().take(25) {
        println!("  {node:<36} {op:<22} {ms:>9.3} ms");
    }
}
