//! Hostile graphs compiled and run: sizes at and past `kiln_ir::limits`, attributes that once
//! made the emitted code grow with a shape, bad ids read at run time, and the API misused.
//! Each must end in an `Err` (or a correct result), never a crash, a hang or an abort.

use kiln_ir::{Graph, Tensor, Value, text};
use kiln_jit::JitOptions;
use kiln_runtime::{RuntimeError, compile};
use std::collections::HashMap;

fn parse(src: &str) -> Graph {
    text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

/// One thread and no passes, so that the graph's nodes are the kernels'.
fn opts() -> JitOptions {
    JitOptions {
        threads: 1,
        ..JitOptions::default()
    }
}

fn compile_err(src: &str) -> String {
    match compile(&parse(src), &opts()) {
        Ok(_) => panic!("compiled:\n{src}"),
        Err(e) => e.to_string(),
    }
}

/// Two 8 GiB values that live forever and an 8 GiB intermediate: 24 GiB, above the 16 GiB an
/// arena may take. A clean error naming the size, before anything sizable is allocated.
#[test]
fn an_arena_beyond_the_limit_is_a_compile_error() {
    let e = compile_err(
        "graph g {
  input %x: f32[2147483648]
  %y = relu(%x)
  %z = add(%x, %y)
  output %z
}",
    );
    assert_eq!(
        e,
        "the memory plan needs 25769803776 bytes (17179869184 of them for inputs, weights and \
         outputs), above the limit of 17179869184 bytes per arena"
    );
}

#[test]
fn weights_beyond_the_limit_are_a_compile_error() {
    let e = compile_err(
        "graph g {
  param %a: f32[2147483648]
  param %b: f32[2147483648]
  param %c: f32[2147483648]
  %s = add(%a, %b)
  %t = add(%s, %c)
  output %t
}",
    );
    assert_eq!(
        e,
        "the weights take 25769803776 bytes, above the limit of 17179869184 bytes per model"
    );
}

const DENSE: &str = "graph g {
  input %x: f32[2, 3]
  param %w: f32[4, 3]
  %y = dense(%x, %w)
  output %y
}";

fn x_feed() -> HashMap<String, Value<f32>> {
    HashMap::from([("x".to_string(), Value::F(Tensor::full([2, 3], 0.5f32)))])
}

#[test]
fn run_before_set_weights_is_an_error() {
    let mut m = compile(&parse(DENSE), &opts()).unwrap();
    let e = m.run(&x_feed()).unwrap_err();
    assert!(matches!(e, RuntimeError::NoWeights), "{e}");
    assert_eq!(
        e.to_string(),
        "the model's weights are not set: call set_weights before run"
    );
    // a failed set_weights leaves the model without weights
    assert!(m.set_weights(&HashMap::new()).is_err());
    assert!(matches!(m.run(&x_feed()), Err(RuntimeError::NoWeights)));
    let w = HashMap::from([("w".to_string(), Tensor::full([4, 3], 1.0f32))]);
    m.set_weights(&w).unwrap();
    let out = m.run(&x_feed()).unwrap();
    assert_eq!(out[0].1.as_f().unwrap().data(), &[1.5; 8]);
}

#[test]
fn a_model_without_weights_runs_without_set_weights() {
    let g = parse(
        "graph g {
  input %x: f32[2, 3]
  %y = relu(%x)
  output %y
}",
    );
    let m = compile(&g, &opts()).unwrap();
    assert!(m.run(&x_feed()).is_ok());
}

fn feeds_ids(ids: Vec<i32>) -> HashMap<String, Value<f32>> {
    HashMap::from([
        (
            "dy".to_string(),
            Value::F(Tensor::new([1, 2, 2, 2], (0..8).map(|i| i as f32).collect()).unwrap()),
        ),
        (
            "ids".to_string(),
            Value::I(Tensor::new([1, 2, 2, 2], ids).unwrap()),
        ),
    ])
}

const SCATTER: &str = "graph g {
  input %dy: f32[1, 2, 2, 2]
  input %ids: i32[1, 2, 2, 2]
  %y = scatter_ids2d(%dy, %ids) {size=[3, 3]}
  output %y
}";

/// An id outside the plane is the interpreter's error (the lowest bad position), not a
/// silently dropped gradient; the next good run succeeds again.
#[test]
fn scatter_ids_with_an_id_outside_the_plane_is_an_error() {
    for threads in [1, 2] {
        let options = JitOptions {
            threads,
            ..JitOptions::default()
        };
        let m = compile(&parse(SCATTER), &options).unwrap();
        let e = m.run(&feeds_ids(vec![0, 1, 2, 3, 4, 9, -1, 8])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node `y` (scatter_ids2d): id 9 at position 5 is outside the plane of 9"
        );
        let e = m
            .run(&feeds_ids(vec![0, 1, 2, 3, 4, 5, i32::MIN, 8]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node `y` (scatter_ids2d): id -2147483648 at position 6 is outside the plane of 9"
        );
        let out = m.run(&feeds_ids(vec![0, 0, 8, 8, 1, 1, 1, 1])).unwrap();
        let y = out[0].1.as_f().unwrap().data().to_vec();
        let mut want = vec![0.0f32; 18];
        want[0] = 1.0;
        want[8] = 5.0;
        want[10] = 22.0;
        assert_eq!(y, want);
    }
}

/// The code of one kernel of the compiled `src` (the first one whose node is `name`).
fn code_len(src: &str, name: &str) -> usize {
    let g = parse(src);
    let options = JitOptions {
        keep_code: true,
        passes: kiln_passes::OptLevel::None,
        ..opts()
    };
    let m = compile(&g, &options).unwrap_or_else(|e| panic!("{e}\n{src}"));
    m.kernels()
        .iter()
        .filter(|k| m.graph().node(k.node).name == name)
        .map(|k| k.code.as_ref().map_or(0, |c| c.len()))
        .sum()
}

/// `adaptive_avg_pool2d {output=[256, 256]}` on an 8×8 input once unrolled 65536 windows
/// (more than 4 GB and an abort while compiling); its code no longer depends on the output.
#[test]
fn adaptive_pool_code_does_not_grow_with_the_output() {
    let src = |o: usize| {
        format!(
            "graph g {{
  input %x: f32[1, 2, 8, 8]
  %y = adaptive_avg_pool2d(%x) {{output=[{o}, {o}]}}
  output %y
}}"
        )
    };
    let small = code_len(&src(2), "y");
    let big = code_len(&src(256), "y");
    assert!(small > 0 && big <= small + 64, "{small} vs {big} bytes");
}

/// A blocked convolution (4 output channels) unrolls its column taps only up to a bound.
#[test]
fn blocked_conv_code_is_bounded_for_wide_kernels() {
    let src = |kw: usize| {
        format!(
            "graph g {{
  input %x: f32[1, 1, 2, 1000]
  param %w: f32[4, 1, 1, {kw}]
  %y = conv2d(%x, %w) {{padding=[0, 3, 0, 3]}}
  output %y
}}"
        )
    };
    let loop_small = code_len(&src(17), "y");
    let loop_big = code_len(&src(900), "y");
    assert!(loop_big <= loop_small + 256, "{loop_small} vs {loop_big} bytes");
}

/// The weight gradient of a convolution unrolls its taps only for small kernels.
#[test]
fn conv_weight_grad_code_is_bounded_for_big_kernels() {
    let src = |kw: usize| {
        format!(
            "graph g {{
  input %x: f32[1, 2, 3, 1000]
  input %dy: f32[1, 3, 3, {}]
  %y = conv2d_weight_grad(%x, %dy) {{kernel=[1, {kw}]}}
  output %y
}}",
            1000 - kw + 1
        )
    };
    let small = code_len(&src(65), "y");
    let big = code_len(&src(900), "y");
    assert!(big <= small + 256, "{small} vs {big} bytes");
}

/// Whatever the stages accept, the pipeline ends in an `Err` for these inputs: parse, compile,
/// or run (with seeded weights and inputs).
fn ends_in_err(src: &str) -> String {
    let g = match text::parse(src) {
        Ok(g) => g,
        Err(e) => return e.to_string(),
    };
    let mut m = match compile(&g, &opts()) {
        Ok(m) => m,
        Err(e) => return e.to_string(),
    };
    let w = match kiln_ir::init::default_weights(&g, 1) {
        Ok(w) => w,
        Err(e) => return e.to_string(),
    };
    if let Err(e) = m.set_weights(&w) {
        return e.to_string();
    }
    let inputs = match kiln_ir::init::random_inputs(&g, 2) {
        Ok(i) => i,
        Err(e) => return e.to_string(),
    };
    match m.run(&inputs) {
        Ok(_) => panic!("ran:\n{src}"),
        Err(e) => e.to_string(),
    }
}

/// The issue's reproducers: each once wrote far outside the arena (SIGSEGV).
#[test]
fn the_issues_reproducers_end_in_errors() {
    ends_in_err(
        "graph g {
  input %x: f32[1, 1, 2, 2]
  %d = dilate_pad2d(%x) {stride=[1, 1], padding=[0, 0, 2147483646, 2147483646]}
  %y = global_max_pool(%d)
  output %y
}",
    );
    for s in ["2147483647", "9223372036854775807"] {
        ends_in_err(&format!(
            "graph g {{
  input %x: f32[1, 1, 2, 2]
  param %w: f32[1, 1, 2, 2]
  %c = conv_transpose2d(%x, %w) {{stride=[{s}, {s}]}}
  %y = max_pool2d(%c) {{kernel=[2, 2]}}
  output %y
}}"
        ));
    }
}

/// A batched matmul whose batch broadcasts 1 against 0 has no rows: it once ran 12 rows into a
/// 0-element output and corrupted the heap past the arena.
#[test]
fn matmul_broadcasting_an_empty_batch_writes_nothing() {
    let g = parse(
        "graph g {
  input %x: f32[0, 2, 4, 6]
  param %w: f32[6, 4]
  %y = matmul(%w, %x)
  output %y
}",
    );
    let mut m = compile(&g, &opts()).unwrap();
    assert!(m.kernels().iter().all(|k| k.extent == 0));
    m.set_weights(&HashMap::from([("w".to_string(), Tensor::full([6, 4], 1.0f32))]))
        .unwrap();
    let x = HashMap::from([("x".to_string(), Value::F(Tensor::full([0, 2, 4, 6], 1.0f32)))]);
    let out = m.run(&x).unwrap();
    assert_eq!(out[0].1.as_f().unwrap().shape().dims(), &[0, 2, 6, 6]);
}

/// Runs `src` on `x` and returns its output, after checking that the run itself took under
/// 50 ms (the kernels' work does not grow with the window's padding).
fn run_one(src: &str, x: Tensor<f32>) -> Vec<f32> {
    let g = parse(src);
    let m = compile(&g, &opts()).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let t = std::time::Instant::now();
    let out = m.run(&HashMap::from([("x".to_string(), Value::F(x))])).unwrap();
    assert!(t.elapsed().as_millis() < 50, "{:?}\n{src}", t.elapsed());
    let v = &out[0].1;
    match v.as_f() {
        Some(t) => t.data().to_vec(),
        None => v.as_i().unwrap().data().iter().map(|&i| i as f32).collect(),
    }
}

/// A pooling window of 2²⁵ − 1 rows (any size up to 2³¹ − 1 is valid), all but one of them
/// padding, visits its real taps only: it once took a step per tap, per output (2³¹ − 1 of
/// them: a hang for a few bytes of text IR).
#[test]
fn pooling_windows_of_millions_of_taps_visit_only_the_real_ones() {
    const K: usize = (1 << 25) - 1;
    let x = || Tensor::new([1, 1, 1, 4], vec![1.0f32, -2.0, 3.0, 4.0]).unwrap();
    let pool = |op: &str, extra: &str| {
        format!(
            "graph g {{
  input %x: f32[1, 1, 1, 4]
  %y = {op}(%x) {{kernel=[{K}, 3], stride=[1, 1], padding=same_upper{extra}}}
  output %y
}}"
        )
    };
    assert_eq!(run_one(&pool("max_pool2d", ""), x()), [1.0, 3.0, 4.0, 4.0]);
    assert_eq!(run_one(&pool("sum_pool2d", ""), x()), [-1.0, 2.0, 5.0, 7.0]);
    let avg = |include: bool| pool("avg_pool2d", &format!(", count_include_pad={include}"));
    assert_eq!(run_one(&avg(false), x()), [-0.5, 2.0 / 3.0, 5.0 / 3.0, 3.5]);
    let big = K as f32 * 3.0;
    assert_eq!(
        run_one(&avg(true), x()),
        [-1.0 / big, 2.0 / big, 5.0 / big, 7.0 / big]
    );
    // the training ops over the same windows
    assert_eq!(run_one(&pool("max_pool2d_ids", ""), x()), [0.0, 2.0, 3.0, 3.0]);
    let grad = pool("sum_pool2d_grad", ", input=[1, 4]");
    assert_eq!(run_one(&grad, x()), [-1.0, 2.0, 5.0, 7.0]);
    let grad = pool("avg_pool2d_grad", ", input=[1, 4], count_include_pad=false");
    // shares 1/2, −2/3, 3/3, 4/2 of windows of 2, 3, 3 and 2 real taps
    let want = [
        0.5 - 2.0 / 3.0,
        0.5 - 2.0 / 3.0 + 1.0,
        -2.0 / 3.0 + 1.0 + 2.0,
        3.0,
    ];
    let got = run_one(&grad, x());
    assert!(got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{got:?}");
}

/// Any thread count is accepted (clamped to `MAX_THREADS`, no overflow in the work split).
#[test]
fn absurd_thread_counts_are_clamped() {
    let options = JitOptions {
        threads: usize::MAX,
        ..JitOptions::default()
    };
    let mut m = compile(&parse(DENSE), &options).unwrap();
    let w = HashMap::from([("w".to_string(), Tensor::full([4, 3], 1.0f32))]);
    m.set_weights(&w).unwrap();
    assert_eq!(m.run(&x_feed()).unwrap()[0].1.as_f().unwrap().data(), &[1.5; 8]);
}

/// A 1×2²⁰ kernel over a 1×1 input padded to 2²¹ − 1 columns: each of the 2²⁰ outputs has
/// one tap inside the input, and the run costs a step per output (once 2²⁰ each, 2⁴⁰ in all).
/// The transposed convolution of the same shapes likewise.
#[test]
fn big_kernels_over_a_single_pixel_cost_one_step_per_output() {
    const K: usize = 1 << 20;
    for (op, attrs, out) in [
        ("conv2d", format!("{{padding=[0, {}, 0, {}]}}", K - 1, K - 1), K),
        ("conv_transpose2d", String::new(), K),
    ] {
        let src = format!(
            "graph g {{
  input %x: f32[1, 1, 1, 1]
  param %w: f32[1, 1, 1, {K}]
  %y = {op}(%x, %w) {attrs}
  output %y
}}"
        );
        // the direct kernels (the im2col pass would want a K × 2K patch matrix: refused)
        let options = JitOptions {
            passes: kiln_passes::OptLevel::None,
            ..opts()
        };
        let mut m = compile(&parse(&src), &options).unwrap();
        let w: Vec<f32> = (0..K).map(|i| (i % 7) as f32).collect();
        let w = HashMap::from([("w".to_string(), Tensor::new([1, 1, 1, K], w).unwrap())]);
        m.set_weights(&w).unwrap();
        let x = HashMap::from([("x".to_string(), Value::F(Tensor::full([1, 1, 1, 1], 2.0f32)))]);
        let t = std::time::Instant::now();
        let y = m.run(&x).unwrap();
        assert!(t.elapsed().as_secs() < 5, "{op}: {:?}", t.elapsed());
        let y = y[0].1.as_f().unwrap().data().to_vec();
        assert_eq!(y.len(), out);
        // the one tap inside the input: conv2d output j reads column j + k − (K − 1) = 0, so
        // k = K − 1 − j (none past j = K − 1); the transposed one's output j is tap j
        let tap = |j: usize| match op {
            "conv2d" => (K - 1).checked_sub(j),
            _ => Some(j),
        };
        for (j, &v) in y.iter().enumerate() {
            let want = tap(j).map_or(0.0, |k| 2.0 * (k % 7) as f32);
            assert_eq!(v, want, "{op} at {j}");
        }
    }
}
