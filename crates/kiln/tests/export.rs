//! `kiln export` through the binary: the written file runs in kiln with the original model's
//! outputs (seeded weights, `--weights`, an `.onnx` file re-exported), `--batch` sets the
//! exported inputs' batch size, and a node without an ONNX equivalent is an error naming it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn ok(args: &[&str]) -> String {
    let o = kiln(args);
    assert!(
        o.status.success(),
        "kiln {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn repo(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
        .display()
        .to_string()
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-export-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `kiln run MODEL extra… --engine interp` on `x`, the output's data.
fn run(model: &str, extra: &[&str], x: &Path, out: &Path) -> Vec<f32> {
    let mut args = vec![
        "run",
        model,
        "--input",
        s(x),
        "--output",
        s(out),
        "--engine",
        "interp",
    ];
    args.extend_from_slice(extra);
    ok(&args);
    match kiln::runtime::read_npy(out).unwrap() {
        kiln::Value::F(t) => t.data().to_vec(),
        other => panic!("not f32: {other:?}"),
    }
}

#[test]
fn an_export_computes_what_the_model_computes() {
    let d = tmp("same");
    let model = repo("examples/models/digits_cnn.kiln");
    let x = d.join("x.npy");
    let xs: Vec<f32> = (0..64).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
    kiln::runtime::write_npy(
        &x,
        &kiln::Value::F(kiln::Tensor::new(vec![1, 1, 8, 8], xs).unwrap()),
    )
    .unwrap();

    // seeded weights (the same seed on both sides)
    let onnx = d.join("seeded.onnx");
    let said = ok(&["export", &model, "--seed", "3", "-o", s(&onnx)]);
    assert!(said.starts_with(&format!("wrote {}", onnx.display())), "{said}");
    assert!(said.contains("inputs `input` f32[1, 1, 8, 8]"), "{said}");
    let want = run(&model, &["--seed", "3"], &x, &d.join("a.npy"));
    assert_eq!(run(s(&onnx), &[], &x, &d.join("b.npy")), want);
    // a seed that differs gives other outputs: the comparison can fail
    assert_ne!(run(&model, &["--seed", "4"], &x, &d.join("c.npy")), want);

    // trained (here: saved) weights with --weights
    let graph = kiln::model::load_graph(Path::new(&model)).unwrap();
    let mut w = kiln::ir::init::default_weights(&graph, 11).unwrap();
    for t in w.values_mut() {
        t.data_mut().iter_mut().for_each(|v| *v *= 1.5);
    }
    let wpath = d.join("w.safetensors");
    kiln::runtime::save_safetensors(&wpath, &w).unwrap();
    let onnx = d.join("weighted.onnx");
    ok(&["export", &model, "--weights", s(&wpath), "-o", s(&onnx)]);
    let want = run(&model, &["--weights", s(&wpath)], &x, &d.join("d.npy"));
    assert_eq!(run(s(&onnx), &[], &x, &d.join("e.npy")), want);

    // an .onnx file exported again
    let again = d.join("again.onnx");
    ok(&["export", s(&onnx), "-o", s(&again)]);
    assert_eq!(run(s(&again), &[], &x, &d.join("f.npy")), want);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn batch_sets_the_exported_inputs() {
    let d = tmp("batch");
    let onnx = d.join("b4.onnx");
    ok(&[
        "export",
        &repo("examples/models/lenet5.kiln"),
        "--batch",
        "4",
        "-o",
        s(&onnx),
    ]);
    let checked = ok(&["check", s(&onnx)]);
    assert!(checked.contains("input `input`: f32[4, 1, 28, 28]"), "{checked}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn what_onnx_cannot_express_is_an_error_naming_the_node() {
    let d = tmp("bad");
    let model = d.join("loss.kiln");
    std::fs::write(
        &model,
        "graph g {\n  input %x: f32[2, 3]\n  input %t: f32[2, 3]\n  %loss = mse_loss(%x, %t)\n  output %loss\n}\n",
    )
    .unwrap();
    let out = d.join("loss.onnx");
    let o = kiln(&["export", s(&model), "-o", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("node `loss` (mse_loss)"), "{err}");
    assert!(!out.exists(), "nothing is written on an error");
    // -o is required
    let o = kiln(&["export", s(&model)]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::remove_dir_all(&d).unwrap();
}
