//! The `kiln` binary, run as a user runs it: exit codes, totals lines, and errors that say
//! what and where.

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

fn temp_file(name: &str, contents: &[u8]) -> String {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p.display().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn summary_of_lenet5_prints_the_published_totals() {
    let o = kiln(&["summary", &repo("examples/models/lenet5.kiln")]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l.trim() == "Total params: 61706"), "{out}");
    assert!(
        out.lines().any(|l| l.trim().starts_with("Total FLOPs: ")),
        "{out}"
    );
    assert!(out.contains("conv1"), "the table names the layers: {out}");
}

#[test]
fn summary_of_resnet18_prints_the_published_params() {
    let o = kiln(&["summary", &repo("examples/models/resnet18.kiln")]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim() == "Total params: 11689512"));
}

#[test]
fn malformed_text_names_file_line_and_column() {
    let f = temp_file(
        "bad_syntax.kiln",
        b"graph g {\n  input %x: f32[1, 3]\n  %y = relu(%x\n  output %y\n}\n",
    );
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains(&format!("{f}:4:3")), "{err}");
    assert!(err.contains("expected `,` or `)`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn invalid_graph_names_node_op_and_shapes() {
    let src = b"graph g {\n  input %x: f32[1, 3, 8, 8]\n  param %w: f32[4, 2, 3, 3]\n  %c = conv2d(%x, %w)\n  output %c\n}\n";
    let f = temp_file("bad_graph.kiln", src);
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`c`") && err.contains("conv2d"), "{err}");
    assert!(
        err.contains("f32[1, 3, 8, 8]") && err.contains("f32[4, 2, 3, 3]"),
        "{err}"
    );
}

#[test]
fn missing_file_binary_file_and_unknown_format_are_clear_errors() {
    let o = kiln(&["summary", "/nonexistent/model.kiln"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("cannot read `/nonexistent/model.kiln`"),
        "{}",
        stderr(&o)
    );

    let f = temp_file("binary.kiln", &[0xff, 0xfe, 0x00, 0x01]);
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not UTF-8"), "{}", stderr(&o));

    let f = temp_file("model.txt", b"graph g {}");
    let o = kiln(&["summary", &f]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown model format"), "{}", stderr(&o));
}

#[test]
fn compile_emit_ir_round_trips() {
    let o = kiln(&["compile", &repo("examples/models/lenet5.kiln"), "--emit", "ir"]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    let printed = stdout(&o);
    let again = kiln_ir::text::parse(&printed).expect("printed IR parses");
    assert_eq!(kiln_ir::text::print(&again), printed);
}

#[test]
fn help_lists_the_commands() {
    let o = kiln(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(out.contains("summary") && out.contains("compile"), "{out}");
}

fn write_input(name: &str, dims: &[usize]) -> String {
    let n: usize = dims.iter().product();
    let data = (0..n).map(|i| (i % 7) as f32 / 7.0).collect();
    let v = kiln::ir::Value::F(kiln::ir::Tensor::new(dims.to_vec(), data).unwrap());
    let p = temp_file(name, b"");
    kiln::runtime::write_npy(std::path::Path::new(&p), &v).unwrap();
    p
}

#[test]
fn run_writes_npy_and_both_engines_agree() {
    let x = write_input("lenet_x.npy", &[1, 1, 28, 28]);
    let model = repo("examples/models/lenet5.kiln");
    let mut outs = Vec::new();
    for engine in ["jit", "interp"] {
        let out = temp_file(&format!("out_{engine}.npy"), b"");
        let o = kiln(&[
            "run",
            &model,
            "--input",
            &format!("input={x}"),
            "--output",
            &out,
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{engine}: {}", stderr(&o));
        let v = kiln::runtime::read_npy(std::path::Path::new(&out)).unwrap();
        assert_eq!(v.shape().dims(), &[1, 10]);
        outs.push(v.as_f().unwrap().data().to_vec());
    }
    for (a, b) in outs[0].iter().zip(&outs[1]) {
        assert!((a - b).abs() < 1e-5, "jit {a} vs interp {b}");
    }
}

#[test]
fn run_rejects_wrong_shapes_unknown_names_and_missing_files() {
    let model = repo("examples/models/lenet5.kiln");
    let bad = write_input("bad_shape.npy", &[1, 1, 27, 28]);
    let o = kiln(&["run", &model, "--input", &bad]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("expected f32[1, 1, 28, 28], got f32[1, 1, 27, 28]"),
        "{}",
        stderr(&o)
    );
    let o = kiln(&["run", &model, "--input", &format!("image={bad}")]);
    assert!(stderr(&o).contains("no input `image`"), "{}", stderr(&o));
    let o = kiln(&["run", &model, "--input", "/nonexistent/x.npy"]);
    assert!(
        stderr(&o).contains("cannot read `/nonexistent/x.npy`"),
        "{}",
        stderr(&o)
    );
    let junk = temp_file("junk.npy", b"not numpy");
    let o = kiln(&["run", &model, "--input", &junk]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a valid .npy file"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn bench_ends_with_the_three_lines() {
    let o = kiln(&[
        "bench",
        &repo("examples/models/lenet5.kiln"),
        "--runs",
        "2",
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let last: Vec<&str> = out.lines().rev().take(3).collect();
    assert!(
        last[2].starts_with("jit: median ") && last[2].ends_with(" ms"),
        "{out}"
    );
    assert!(
        last[1].starts_with("interp: median ") && last[1].ends_with(" ms"),
        "{out}"
    );
    assert!(
        last[0].starts_with("speedup: ") && last[0].ends_with('x'),
        "{out}"
    );
}

#[test]
fn compile_emit_clif_prints_every_kernel() {
    let o = kiln(&["compile", &repo("examples/models/lenet5.kiln"), "--emit", "clif"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    // Every kernel is printed as one Cranelift function. (Whether its body has an `fma` depends
    // on the host: where a Rust tier serves a kernel, the function is a call into it.)
    let kernels = out.matches("; kernel ").count();
    assert!(kernels >= 5, "{out}");
    assert_eq!(out.matches("\nfunction ").count(), kernels, "{out}");
}

#[test]
fn compile_lists_passes_prints_optimized_and_rejects_unknown_passes() {
    let o = kiln(&["compile", "--passes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
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
    let model = repo("examples/models/alexnet.kiln");
    let o = kiln(&["compile", &model, "--emit", "optimized"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let optimized = kiln_ir::text::parse(&stdout(&o)).expect("optimized IR parses");
    let original = kiln::model::load_graph(std::path::Path::new(&model)).unwrap();
    let dropouts = |g: &kiln_ir::Graph| {
        g.topo_order()
            .into_iter()
            .filter(|&i| matches!(g.node(i).op, kiln_ir::Op::Dropout { .. }))
            .count()
    };
    assert!(dropouts(&original) > 0);
    assert_eq!(dropouts(&optimized), 0, "AlexNet's dropouts are gone");
    let o = kiln(&["compile", &model, "--print-after", "noop"]);
    assert!(
        o.status.success() && stdout(&o).starts_with("# after noop\n"),
        "{}",
        stderr(&o)
    );
    let o = kiln(&["compile", &model, "--print-after", "no_such_pass"]);
    assert!(
        !o.status.success() && stderr(&o).contains("no pass `no_such_pass`"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn compile_emit_asm_disassembles_or_says_objdump_is_missing() {
    let o = kiln(&["compile", &repo("examples/models/lenet5.kiln"), "--emit", "asm"]);
    let has_objdump = Command::new("objdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_objdump {
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("; kernel") && out.contains("ret"), "{out}");
    } else {
        assert!(
            !o.status.success() && stderr(&o).contains("objdump"),
            "{}",
            stderr(&o)
        );
    }
}

/// An IDX file of unsigned bytes: 00 00 08 NDIMS, the dims big-endian, the data.
fn idx(name: &str, dims: &[u32], data: &[u8]) -> String {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    temp_file(name, &b)
}

/// `kiln train` checks its flags, its data and the model against the data before it trains.
/// (Training itself needs the Trainer; tests/fit.rs runs the rest of the command with a learner
/// of its own.)
#[test]
fn train_rejects_bad_data_and_models_that_do_not_fit_it() {
    let digits_cnn = repo("examples/models/digits_cnn.kiln");
    let lenet = repo("examples/models/lenet5.kiln");
    let fails = |args: &[&str], want: &str| {
        let o = kiln(args);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    fails(
        &["train", &digits_cnn, "--data", "mnist"],
        "unknown data source `mnist`",
    );
    fails(
        &["train", &digits_cnn, "--data", "idx:only-one"],
        "`idx:` takes two paths",
    );
    fails(
        &["train", &lenet, "--data", "digits"],
        "input `input` is f32[1, 1, 28, 28]",
    );
    fails(
        &["train", &digits_cnn, "--data", "digits", "--lr", "-1"],
        "learning rate must be a positive number",
    );
    fails(
        &["train", &digits_cnn, "--data", "digits", "--batch", "0"],
        "batch size must be at least 1",
    );
    // IDX files written here: a truncated one names the file and the byte offset; a good
    // 28×28 pair loads and is then checked against the model's 8×8 input.
    let labels = idx("train-labels.idx", &[2], &[3, 1]);
    let short = idx("short-images.idx", &[2, 28, 28], &[0; 100]);
    let spec = format!("idx:{short},{labels}");
    fails(
        &["train", &digits_cnn, "--data", &spec],
        &format!("`{short}`, byte offset 116: truncated"),
    );
    let images = idx("train-images.idx", &[2, 28, 28], &[7; 2 * 28 * 28]);
    let spec = format!("idx:{images},{labels}");
    fails(
        &["train", &digits_cnn, "--data", &spec],
        "data's images are [N, 1, 28, 28]",
    );
    fails(
        &["train", &digits_cnn, "--data", "digits:/nonexistent/d.csv"],
        "cannot read `/nonexistent/d.csv`",
    );
}

/// `kiln train` end to end: the digits CNN on the bundled digits, a few epochs, weights saved;
/// the last line is the held-out accuracy.
#[test]
fn train_runs_to_the_end_and_saves_the_weights() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-cli-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let save = dir.join("w.safetensors");
    let model = repo("examples/models/digits_cnn.kiln");
    let o = kiln(&[
        "train",
        &model,
        "--data",
        "digits",
        "--epochs",
        "3",
        "--lr",
        "0.1",
        "--save",
        save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let last = out.lines().last().unwrap();
    let pct: f64 = last
        .strip_prefix("test accuracy: ")
        .and_then(|s| s.strip_suffix('%'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("last line: {last}"));
    assert!(pct > 80.0, "{out}");
    let w = kiln::runtime::load_safetensors(&save).unwrap();
    assert!(w.contains_key("fc.weight"), "{:?}", w.keys());

    // `--weights` resumes from them (on one JIT thread): the first epoch's loss starts where
    // the trained model is, far below a fresh start's
    let epoch1_loss = |out: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.starts_with("epoch 1/"))
            .unwrap_or_else(|| panic!("{out}"));
        line["epoch 1/1: loss ".len()..]
            .split(',')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let fresh = epoch1_loss(&out.replace("epoch 1/3", "epoch 1/1"));
    let o = kiln(&[
        "train",
        &model,
        "--data",
        "digits",
        "--epochs",
        "1",
        "--lr",
        "0.1",
        "--threads",
        "1",
        "--weights",
        save.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = epoch1_loss(&stdout(&o));
    assert!(resumed < 0.5 * fresh, "resumed {resumed}, fresh {fresh}");
    // weights of another model are an error naming the file and the weight
    let lenet = repo("examples/models/lenet5.kiln");
    let o = kiln(&["summary", &lenet]);
    assert!(o.status.success());
    let tiny = temp_file("tiny_train.kiln", TINY_CLASSIFIER);
    let o = kiln(&[
        "train",
        &tiny,
        "--data",
        "digits",
        "--epochs",
        "1",
        "--weights",
        save.to_str().unwrap(),
    ]);
    refused(&o, 1, "--weights");
    assert!(stderr(&o).contains("fc.weight"), "{}", stderr(&o));
}

/// A classifier of the 8×8 digits whose weights are not the digits CNN's.
const TINY_CLASSIFIER: &[u8] = b"graph tiny {
  input %x: f32[1, 1, 8, 8]
  %f = flatten(%x): f32[1, 64]
  param %fc.weight: f32[10, 64]
  %y = dense(%f, %fc.weight): f32[1, 10]
  output %y
}
";

/// `kiln bench --train` times training steps: the compile and first step, then the median.
#[test]
fn bench_train_prints_the_step_median() {
    let model = repo("examples/models/digits_cnn.kiln");
    for extra in [&[][..], &["--optimizer", "adam", "--loss", "mse"][..]] {
        let mut args = vec![
            "bench",
            &model,
            "--train",
            "--batch",
            "4",
            "--runs",
            "2",
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        let o = kiln(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].starts_with("train: compiled in ") && lines[0].contains(" ms; first step "),
            "{out}"
        );
        assert!(
            lines[1].starts_with("train step: median ") && lines[1].ends_with(" ms"),
            "{out}"
        );
    }
    // the training flags need --train
    let o = kiln(&["bench", &model, "--loss", "mse"]);
    refused(&o, 2, "--train");
}

/// A model small enough to run in no time: `y = dense(x, w, b)`, x f32[2, 4].
const TINY: &[u8] = b"graph tiny {
  input %x: f32[2, 4]
  param %w: f32[3, 4]
  param %b: f32[3]
  %y = dense(%x, %w, %b): f32[2, 3]
  output %y
}
";

/// Exit code 1 (an error) or 2 (a usage error), a message that contains `want`, and no panic.
fn refused(o: &Output, code: i32, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains(want), "wanted `{want}`: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A version 1.0 `.npy` header for `dict` (padded as NumPy pads it), then `data`.
fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut f = b"\x93NUMPY\x01\x00".to_vec();
    f.extend((h.len() as u16).to_le_bytes());
    f.extend(h.as_bytes());
    f.extend(data);
    f
}

fn f32_le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Flags whose values no run can use are refused before anything is loaded or compiled:
/// usage errors (exit 2) that say what the flag takes.
#[test]
fn absurd_flag_values_are_usage_errors() {
    let lenet = repo("examples/models/lenet5.kiln");
    let x = write_input("flags_x.npy", &[1, 1, 28, 28]);
    let o = kiln(&["bench", &lenet, "--batch", "0"]);
    refused(&o, 2, "the batch size must be at least 1, not `0`");
    let o = kiln(&["bench", &lenet, "--runs", "0"]);
    refused(
        &o,
        2,
        "the number of timed runs must be an integer in 1..=1000000",
    );
    let o = kiln(&["bench", &lenet, "--runs", "99999999999999999999"]);
    refused(&o, 2, "timed runs");
    let o = kiln(&["bench", &lenet, "--threads", "0"]);
    refused(
        &o,
        2,
        "the JIT needs at least 1 thread (leave out --threads for one per core)",
    );
    let o = kiln(&["bench", &lenet, "--threads", "5000"]);
    refused(&o, 2, "5000 threads are more than the limit of 1024");
    let o = kiln(&["run", &lenet, "--input", &x, "--threads", "-1"]);
    refused(&o, 2, "unexpected argument '-1'");
    let digits_cnn = repo("examples/models/digits_cnn.kiln");
    let o = kiln(&[
        "train",
        &digits_cnn,
        "--data",
        "digits",
        "--epochs",
        "18446744073709551615",
    ]);
    refused(&o, 2, "the number of epochs must be an integer in 0..=1000000");
    let o = kiln(&["--help"]);
    assert!(
        stdout(&o).contains("Exit status: 0 on success; 1 on an error"),
        "{}",
        stdout(&o)
    );
}

/// A batch far beyond the model's size limits is an error at once, before weights, inputs or
/// code are made for it.
#[test]
fn a_huge_batch_is_an_error_before_anything_is_allocated() {
    let lenet = repo("examples/models/lenet5.kiln");
    let t = std::time::Instant::now();
    let o = kiln(&["bench", &lenet, "--batch", "1000000000000", "--runs", "1"]);
    refused(&o, 1, "setting the batch size to 1000000000000");
    assert!(stderr(&o).contains("limit"), "{}", stderr(&o));
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
}

/// `train --batch` larger than the training set is refused after the data set is loaded and
/// before the model is compiled for it.
#[test]
fn a_train_batch_larger_than_the_data_set_is_refused_before_compiling() {
    let digits_cnn = repo("examples/models/digits_cnn.kiln");
    let t = std::time::Instant::now();
    let o = kiln(&["train", &digits_cnn, "--data", "digits", "--batch", "100000"]);
    refused(
        &o,
        1,
        "a batch of 100000 images is larger than the training set (1437 of the 1797 images of digits",
    );
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
    let o = kiln(&[
        "train",
        &digits_cnn,
        "--data",
        "digits",
        "--batch",
        "1000000000000",
    ]);
    refused(&o, 1, "larger than the training set");
    let o = kiln(&[
        "train",
        &digits_cnn,
        "--data",
        "digits",
        "--save",
        "/nonexistent/dir/w.safetensors",
    ]);
    refused(
        &o,
        1,
        "--save /nonexistent/dir/w.safetensors: the directory `/nonexistent/dir` does not exist",
    );
}

/// The JIT with many threads runs (on as many as it can start), and agrees with one thread.
#[test]
fn many_threads_run_and_agree_with_one() {
    let model = temp_file("threads_tiny.kiln", TINY);
    let x = temp_file(
        "threads_x.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
            &f32_le(&[0.5, -1.0, 2.0, 0.25, 1.0, 1.0, -3.0, 0.0]),
        ),
    );
    let mut outs = Vec::new();
    for threads in ["1", "1000"] {
        let o = kiln(&["run", &model, "--input", &x, "--threads", threads]);
        assert!(o.status.success(), "--threads {threads}: {}", stderr(&o));
        outs.push(stdout(&o));
    }
    assert_eq!(outs[0], outs[1]);
    let lenet = repo("examples/models/lenet5.kiln");
    let o = kiln(&[
        "bench",
        &lenet,
        "--batch",
        "8",
        "--runs",
        "1",
        "--threads",
        "1000",
        "--engine",
        "jit",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

// A worker thread that cannot be spawned is tested deterministically in the pool's unit tests
// (`threads_that_cannot_start_leave_the_work_to_the_others`, a spawn function that fails). A
// CLI run under `ulimit -v` is not a test of it: there, whichever allocation fails first —
// a thread's stack, std's signal stack in a thread that did start, or a malloc in the panic
// machinery — decides between a clean run and an abort, and that is the OS's choice, not kiln's.

/// `--input NAME=…` twice is an error naming NAME; so is a bare path and NAME= for the same one.
#[test]
fn an_input_given_twice_is_an_error_naming_it() {
    let lenet = repo("examples/models/lenet5.kiln");
    let x = write_input("twice_x.npy", &[1, 1, 28, 28]);
    let o = kiln(&[
        "run",
        &lenet,
        "--input",
        &format!("input={x}"),
        "--input",
        &format!("input={x}"),
    ]);
    refused(&o, 1, "input `input` is given more than once");
    let o = kiln(&["run", &lenet, "--input", &x, "--input", &format!("input={x}")]);
    refused(&o, 1, "input `input` is given more than once");
}

/// `.npy` inputs that lie about their size are errors with exit code 1 that name the file.
#[test]
fn hostile_npy_inputs_are_clear_errors() {
    let model = temp_file("npy_tiny.kiln", TINY);
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }";
    let mut trailing = f32_le(&[0.0; 8]);
    trailing.extend([1, 2, 3]);
    let p = temp_file("trailing.npy", &npy_bytes(dict, &trailing));
    refused(
        &kiln(&["run", &model, "--input", &p]),
        1,
        &format!("`{p}` is not a valid .npy file: 3 bytes after the end of the data"),
    );
    let p = temp_file(
        "promise.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4096, 4096, 4096), }",
            &[0; 16],
        ),
    );
    refused(&kiln(&["run", &model, "--input", &p]), 1, "above the limit");
    let p = temp_file(
        "fortran.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4), }",
            &f32_le(&[0.0; 8]),
        ),
    );
    refused(&kiln(&["run", &model, "--input", &p]), 1, "Fortran-ordered");
    let p = temp_file(
        "f2.npy",
        &npy_bytes(
            "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 4), }",
            &[0; 16],
        ),
    );
    refused(
        &kiln(&["run", &model, "--input", &p]),
        1,
        "element type <f2; kiln reads float32",
    );
}

/// A safetensors file with a tensor the model lacks: a warning naming it, and the run goes on;
/// a hostile one is an error.
#[test]
fn weights_the_model_does_not_have_are_named_in_a_warning() {
    let model = temp_file("weights_tiny.kiln", TINY);
    let x = temp_file(
        "weights_x.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
            &f32_le(&[1.0; 8]),
        ),
    );
    let w = std::collections::HashMap::from([
        (
            "w".to_string(),
            kiln::ir::Tensor::new([3, 4], vec![0.5; 12]).unwrap(),
        ),
        ("b".to_string(), kiln::ir::Tensor::new([3], vec![1.0; 3]).unwrap()),
        (
            "conv9.weight".to_string(),
            kiln::ir::Tensor::new([2], vec![0.0; 2]).unwrap(),
        ),
    ]);
    let wp = temp_file("extra.safetensors", b"");
    kiln::runtime::save_safetensors(std::path::Path::new(&wp), &w).unwrap();
    let o = kiln(&["run", &model, "--input", &x, "--weights", &wp]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "warning: `{wp}` holds a tensor `conv9.weight` that the model has no weight of"
        )),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("y: f32[2, 3] [3.000000"), "{}", stdout(&o));
    // zero elements but a dim beyond any tensor's
    let mut f = Vec::new();
    let header = r#"{"w":{"dtype":"F32","shape":[0,1099511627776],"data_offsets":[0,0]}}"#;
    f.extend((header.len() as u64).to_le_bytes());
    f.extend(header.as_bytes());
    let bad = temp_file("hostile.safetensors", &f);
    refused(
        &kiln(&["run", &model, "--input", &x, "--weights", &bad]),
        1,
        "tensor `w`: shape: dim 1099511627776 is above the limit",
    );
    // a device that never ends: the 8-byte header length (0) and an empty header, no more
    if std::path::Path::new("/dev/zero").exists() {
        refused(
            &kiln(&["run", &model, "--input", &x, "--weights", "/dev/zero"]),
            1,
            "`/dev/zero` is not a valid safetensors file",
        );
    }
}

/// `kiln grad` on NaN: the loss is NaN, and stderr says which tensors are not finite.
#[test]
fn grad_on_nan_warns_which_tensors_are_not_finite() {
    let model = temp_file("nan_tiny.kiln", TINY);
    let x = temp_file(
        "nan_x.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }",
            &f32_le(&[1.0, f32::NAN, 0.0, 0.0, 0.0, f32::INFINITY, 0.0, 0.0]),
        ),
    );
    let t = temp_file(
        "nan_t.npy",
        &npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
            &f32_le(&[0.0; 6]),
        ),
    );
    let out = temp_file("nan_grads.safetensors", b"");
    let o = kiln(&[
        "grad", &model, "--input", &x, "--target", &t, "--loss", "mse", "--output", &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "loss: NaN");
    let err = stderr(&o);
    assert!(
        err.contains("warning: input `x` holds 1 NaN and 1 infinite value(s) of 8"),
        "{err}"
    );
    assert!(err.contains("warning: the loss is NaN"), "{err}");
    assert!(!err.contains("weight `"), "the weights are finite: {err}");
}

/// A gzip file of `prefix` followed by `matches` × 258 zero bytes, built by hand (no gzip
/// library here): a stored deflate block holding `prefix` (which must end in a 0), then a
/// fixed-Huffman block of length-258, distance-1 matches (13 bits each, a 160× bomb). The
/// trailer's CRC is not computed: a reader that stops early never checks it.
fn gzip_bomb(prefix: &[u8], matches: usize) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.push(0); // BFINAL 0, BTYPE 00 (stored), padded to the byte
    let len = prefix.len() as u16;
    out.extend(len.to_le_bytes());
    out.extend((!len).to_le_bytes());
    out.extend(prefix);
    let (mut acc, mut nbits) = (0u32, 0);
    let mut bit = |out: &mut Vec<u8>, b: u32| {
        acc |= b << nbits;
        nbits += 1;
        if nbits == 8 {
            out.push(acc as u8);
            (acc, nbits) = (0, 0);
        }
    };
    bit(&mut out, 1); // BFINAL
    bit(&mut out, 1); // BTYPE 01 (fixed Huffman), LSB first
    bit(&mut out, 0);
    for _ in 0..matches {
        // length code 285 (258): 8 bits 11000101; distance code 0 (1): 5 bits 00000
        for b in [1, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0] {
            bit(&mut out, b);
        }
    }
    for _ in 0..7 + 8 {
        bit(&mut out, 0); // end of block (7 zero bits), then padding
    }
    out.extend([0; 8]); // CRC32 and ISIZE, never checked
    out
}

/// A gzip bomb given as MNIST images stops at the size the header promises.
#[test]
fn a_gzip_bomb_as_training_data_is_an_error_at_once() {
    let mut header = vec![0, 0, 0x08, 3];
    for d in [2u32, 8, 8] {
        header.extend(d.to_be_bytes());
    }
    header.extend([0u8; 128]);
    // 128 + 1 GiB of zeros in 2 MB
    let bomb = gzip_bomb(&header, (1 << 30) / 258);
    let images = temp_file("bomb-images.idx.gz", &bomb);
    let labels = idx("bomb-labels.idx", &[2], &[0, 1]);
    let spec = format!("idx:{images},{labels}");
    let t = std::time::Instant::now();
    let o = kiln(&["train", &repo("examples/models/digits_cnn.kiln"), "--data", &spec]);
    refused(
        &o,
        1,
        &format!("`{images}`, byte offset 144: more bytes (decompression stopped there)"),
    );
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
}
