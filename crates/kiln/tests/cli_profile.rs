//! `kiln bench --profile`, run as a user runs it: each kernel named after the node of the model
//! file it computes, the weight-time kernels out of the table, and the lines around it.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

fn temp_file(name: &str, contents: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-cli-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p.display().to_string()
}

/// The figures of a row of the profile's table: ms, share, GFLOP/s and, with several threads,
/// the split ms and the speedup.
fn figures(out: &str) -> usize {
    if out.contains(" speedup  kernel: ") { 5 } else { 3 }
}

/// The profile's table: the label (after the figures) of every row.
fn table(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("ms "))
        .skip(1)
        .take_while(|l| !l.starts_with("total: "))
        .map(|l| {
            l.split_whitespace()
                .skip(figures(out))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// With several threads, each kernel's time split over them and its speedup; with one (or
/// where no kernel is big enough to split: LeNet-5 at batch 1), the one-thread columns alone.
#[test]
fn split_columns_with_several_threads() {
    let model = repo("examples/models/lenet5.kiln");
    let two = profile(&model, &["--threads", "2", "--batch", "64"]);
    assert!(
        two.contains("       ms  share  GFLOP/s     2T ms speedup  kernel: "),
        "{two}"
    );
    assert!(
        two.contains("\n2T ms: each kernel alone again, split over the 2 threads"),
        "{two}"
    );
    let rows: Vec<Vec<&str>> = two
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ms "))
        .skip(1)
        .take_while(|l| !l.starts_with("total: "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!rows.is_empty(), "{two}");
    for r in &rows {
        let (ms, split): (f64, f64) = (r[0].parse().unwrap(), r[3].parse().unwrap());
        let speedup: f64 = r[4].strip_suffix('×').unwrap().parse().unwrap();
        assert!(ms >= 0.0 && split >= 0.0 && speedup >= 0.0, "{two}");
    }
    let total = two.lines().find(|l| l.starts_with("total: ")).unwrap();
    assert!(
        total.contains(" kernels; split over 2 threads ") && total.ends_with(" ms"),
        "{two}"
    );
    assert!(two.contains("\nthe split total is "), "{two}");
    assert!(
        table(&two)
            .iter()
            .any(|r| r == "pool1 (max pool 2×2 s2, 6 ch, 14×14)"),
        "{two}"
    );
    for args in [
        ["--threads", "1", "--batch", "64"],
        ["--threads", "2", "--batch", "1"],
    ] {
        let one = profile(&model, &args);
        assert!(one.contains("       ms  share  GFLOP/s  kernel: "), "{one}");
        assert!(!one.contains("speedup") && !one.contains("split"), "{one}");
    }
}

/// The number in `line` right after `before`.
fn number_after(out: &str, before: &str) -> Option<usize> {
    let at = out.find(before)? + before.len();
    out[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn profile(model: &str, extra: &[&str]) -> String {
    let mut args = vec!["bench", model, "--engine", "jit", "--runs", "2", "--profile"];
    args.extend(extra);
    let o = kiln(&args);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "stdout: {out}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// How a `gemm` kernel may compute its node (`GemmDesc::form`), as the profile says it.
const FORMS: [&str; 5] = ["direct conv", "row conv", "transposed gemm", "wide gemm", "gemm"];

/// The Cranelift tier has no direct kernel: the same convolution is a GEMM there.
#[test]
fn the_form_follows_the_tier() {
    let out = profile(
        &repo("examples/models/lenet5.kiln"),
        &["--gemm-tier", "cranelift"],
    );
    assert!(
        table(&out)
            .iter()
            .any(|r| r == "conv2 (conv 5×5, 16←6, 10×10, +bias+relu → gemm)"),
        "{out}"
    );
}

#[test]
fn lenet5_kernels_carry_the_files_names() {
    let model = repo("examples/models/lenet5.kiln");
    let out = profile(&model, &[]);
    let rows = table(&out);
    // the convolutions became GEMMs (named `conv1.gemm` in the optimized graph), shown under
    // the file's names with what they fuse and how the tier computes them
    let form = |label: &str| {
        rows.iter()
            .find_map(|r| r.strip_prefix(label)?.strip_suffix(')'))
            .unwrap_or_else(|| panic!("a row `{label}…)`: {out}"))
    };
    assert!(
        FORMS.contains(&form("conv1 (conv 5×5, 6←1, 28×28, +bias+relu → ")),
        "{out}"
    );
    // 16 output channels, too few for a tile of the Rust tiers: their direct kernel
    let rust_tier = !out.contains("kernel tier cranelift");
    assert_eq!(
        form("conv2 (conv 5×5, 16←6, 10×10, +bias+relu → "),
        if rust_tier { "direct conv" } else { "gemm" },
        "{out}"
    );
    assert!(
        rows.iter().any(|r| r == "pool1 (max pool 2×2 s2, 6 ch, 14×14)"),
        "{out}"
    );
    // every row is a node of the file, once
    let file = std::fs::read_to_string(&model).unwrap();
    let mut names: Vec<&str> = rows.iter().map(|r| r.split(' ').next().unwrap()).collect();
    for n in &names {
        assert!(
            file.contains(&format!("  %{n} = ")),
            "`{n}` is not a node of the file: {out}"
        );
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), rows.len(), "a node twice: {out}");
    // the table and the weight-time line account for every kernel compiled
    let compiled = number_after(&out, "jit: compiled ").expect("the compile line");
    let total = out
        .lines()
        .find(|l| l.starts_with("total: "))
        .expect("the total line");
    let in_table = number_after(total, " ms in ").expect("total: X ms in N kernels");
    let prep = out
        .lines()
        .find(|l| l.contains(" weight-time kernels not shown, run once per set_weights: "))
        .map_or(0, |l| number_after(l, "").unwrap());
    assert_eq!(in_table + prep, compiled, "{out}");
    assert!(out.contains("profile: kernel tier "), "{out}");
    assert!(out.contains(" the median run ("), "{out}");
}

/// A folded batch norm leaves kernels that compute the folded weights once, at
/// `set_weights`: they are counted in one line, not shown in the table.
#[test]
fn weight_time_kernels_stay_out_of_the_table() {
    let model = temp_file(
        "conv_bn.kiln",
        "graph conv_bn {
  input %x: f32[1, 3, 8, 8]
  param %c1.weight: f32[4, 3, 3, 3]
  %c1 = conv2d(%x, %c1.weight) {padding=[1, 1, 1, 1]}: f32[1, 4, 8, 8]
  param %bn1.weight: f32[4]
  param %bn1.bias: f32[4]
  buffer %bn1.running_mean: f32[4]
  buffer %bn1.running_var: f32[4]
  %bn1 = batch_norm(%c1, %bn1.weight, %bn1.bias, %bn1.running_mean, %bn1.running_var) {epsilon=1e-5}: f32[1, 4, 8, 8]
  %r1 = relu(%bn1): f32[1, 4, 8, 8]
  output %r1
}
",
    );
    let out = profile(&model, &[]);
    let rows = table(&out);
    assert!(
        rows.len() == 1
            && rows[0]
                .strip_prefix("c1 (conv 3×3, 4←3, 8×8, +bn+relu → ")
                .and_then(|r| r.strip_suffix(')'))
                .is_some_and(|f| FORMS.contains(&f)),
        "one kernel, under the convolution's name: {out}"
    );
    let line = out
        .lines()
        .find(|l| l.contains(" weight-time kernels not shown, run once per set_weights: "))
        .unwrap_or_else(|| panic!("the weight-time line: {out}"));
    // rsqrt, scale, folded weight, mean·scale, folded bias (and any packing of the weights)
    assert!(number_after(line, "").unwrap() >= 5, "{out}");
}

/// PyTorch's SiLU is `Mul(x, Sigmoid(x))`: a depthwise convolution that computes it as its
/// fused SiLU is labelled `+bias+silu`, not with the file's product as a `mul` besides.
#[test]
fn a_fused_silu_is_named_once() {
    let model = temp_file(
        "dw_silu.kiln",
        "graph dw_silu {
  input %x: f32[1, 4, 8, 8]
  param %dw.weight: f32[4, 1, 3, 3]
  param %dw.bias: f32[4]
  %dw = conv2d(%x, %dw.weight, %dw.bias) {padding=[1, 1, 1, 1], groups=4}: f32[1, 4, 8, 8]
  %s = sigmoid(%dw): f32[1, 4, 8, 8]
  %y = mul(%dw, %s): f32[1, 4, 8, 8]
  output %y
}
",
    );
    let out = profile(&model, &[]);
    let rows = table(&out);
    assert!(
        rows.len() == 1 && rows[0].starts_with("dw (conv 3×3 depthwise, 4←4, 8×8, +bias+silu"),
        "one kernel, SiLU named once: {out}"
    );
}

#[test]
fn profile_top_shows_the_slowest_and_sums_the_rest() {
    let out = profile(&repo("examples/models/lenet5.kiln"), &["--profile-top", "2"]);
    let rows = table(&out);
    assert_eq!(rows.len(), 3, "two kernels and the rest: {out}");
    assert!(
        rows[2].starts_with('(') && rows[2].ends_with(" more kernels)"),
        "{out}"
    );
    let ms: Vec<f64> = out
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ms "))
        .skip(1)
        .take(2)
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(ms[0] >= ms[1], "slowest first: {out}");
}

#[test]
fn profile_top_needs_profile() {
    let o = kiln(&[
        "bench",
        &repo("examples/models/lenet5.kiln"),
        "--profile-top",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    let o = kiln(&[
        "bench",
        &repo("examples/models/lenet5.kiln"),
        "--profile",
        "--profile-top",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "at least one kernel");
}
