//! `.onnx` models through the `kiln` binary: `check`, `summary`, and `run` with the file's own
//! weights, on ONNX's PyTorch-exported Conv2d case (its expected output is ONNX's, not kiln's).

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn case(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kiln-onnx/tests/data")
        .join(path)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_says_ok_or_lists_every_unsupported_node() {
    let good = case("pytorch-converted/test_Conv2d/model.onnx");
    let o = kiln(&["check", good.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with("ok: "), "{}", text(&o.stdout));
    let bad = case("pytorch-converted/test_Conv3d/model.onnx");
    let o = kiln(&["check", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let out = text(&o.stdout);
    assert!(
        out.contains("(Conv, opset 6): kiln supports 2-D Conv only"),
        "{out}"
    );
    assert!(
        text(&o.stderr).contains("1 unsupported node(s)"),
        "{}",
        text(&o.stderr)
    );
    let missing = kiln(&["check", "/nonexistent/model.onnx"]);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("cannot read `/nonexistent/model.onnx`"));
}

#[test]
fn run_uses_the_files_weights_and_matches_onnx() {
    let dir = case("pytorch-converted/test_Conv2d");
    let read = |p: &str| kiln::onnx::read_tensor_bytes(&std::fs::read(dir.join(p)).unwrap()).unwrap();
    let (x, want) = (
        read("test_data_set_0/input_0.pb"),
        read("test_data_set_0/output_0.pb"),
    );
    let tmp = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-onnx-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let (xin, yout) = (tmp.join("x.npy"), tmp.join("y.npy"));
    kiln::runtime::write_npy(&xin, &kiln::Value::F(x)).unwrap();
    for engine in ["jit", "interp"] {
        let o = kiln(&[
            "run",
            dir.join("model.onnx").to_str().unwrap(),
            "--input",
            xin.to_str().unwrap(),
            "--output",
            yout.to_str().unwrap(),
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let got = kiln::runtime::read_npy(&yout).unwrap();
        let got = got.as_f().unwrap();
        assert_eq!(got.dims(), want.dims());
        for (g, w) in got.data().iter().zip(want.data()) {
            assert!((g - w).abs() <= 1e-5 + 1e-3 * w.abs(), "{engine}: {g} vs {w}");
        }
    }
    let o = kiln(&["summary", dir.join("model.onnx").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // its initializers: weight [4, 3, 3, 2] and bias [4], 4·3·3·2 + 4 params
    assert!(
        text(&o.stdout).lines().any(|l| l.trim() == "Total params: 76"),
        "{}",
        text(&o.stdout)
    );
    std::fs::remove_dir_all(&tmp).ok();
}
