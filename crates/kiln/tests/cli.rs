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
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
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
    assert!(
        out.contains("; kernel") && out.contains("function") && out.contains("fma"),
        "{out}"
    );
}

#[test]
fn compile_lists_passes_prints_optimized_and_rejects_unknown_passes() {
    let o = kiln(&["compile", "--passes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        ["noop", "bn_fold", "im2col", "fusion", "dead_code"]
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
    let dir = std::env::temp_dir().join(format!("kiln-cli-train-{}", std::process::id()));
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
}
