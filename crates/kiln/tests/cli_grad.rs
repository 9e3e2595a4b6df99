//! `kiln grad`: the gradients of LeNet-5's loss on one batch, written as safetensors, agree
//! between the JIT and the interpreter, name every param and the input, and bad arguments
//! are errors that say what is wrong.

use kiln::ir::{Tensor, Value};
use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn lenet() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/lenet5.kiln");
    p.display().to_string()
}

fn dir() -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-grad-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn path(name: &str) -> String {
    dir().join(name).display().to_string()
}

#[test]
fn grad_jit_equals_interp_for_every_weight_and_the_input() {
    let mut rng = kiln::ir::init::SplitMix64::new(7);
    let x: Vec<f32> = (0..784).map(|_| rng.uniform(1.0)).collect();
    kiln::runtime::write_npy(
        path("x.npy").as_ref(),
        &Value::F(Tensor::new([1, 1, 28, 28], x).unwrap()),
    )
    .unwrap();
    kiln::runtime::write_npy(
        path("t.npy").as_ref(),
        &Value::I(Tensor::new([1], vec![3]).unwrap()),
    )
    .unwrap();
    let mut results = Vec::new();
    for (engine, threads) in [("jit", "2"), ("interp", "1"), ("jit", "1")] {
        let out = path(&format!("g_{engine}_{threads}.safetensors"));
        let o = kiln(&[
            "grad",
            &lenet(),
            "--input",
            &format!("input={}", path("x.npy")),
            "--target",
            &path("t.npy"),
            "--loss",
            "cross-entropy",
            "--output",
            &out,
            "--engine",
            engine,
            "--threads",
            threads,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).starts_with("loss: "));
        results.push(kiln::runtime::load_safetensors(out.as_ref()).unwrap());
    }
    let (jit, interp) = (&results[0], &results[1]);
    // the JIT's results do not depend on its number of threads
    assert_eq!(jit, &results[2]);
    // every trainable tensor of the model, by its name, and the input's gradient
    let graph = kiln::model::load_graph(lenet().as_ref()).unwrap();
    let mut want: Vec<String> = graph
        .params()
        .iter()
        .map(|&p| graph.node(p).name.clone())
        .collect();
    want.push("grad_of_input".into());
    want.sort();
    let mut got: Vec<String> = jit.keys().cloned().collect();
    got.sort();
    assert_eq!(got, want);
    for (name, i) in interp {
        let j = &jit[name];
        assert_eq!(i.shape(), j.shape(), "{name}");
        let scale = i.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{name} is all zero");
        for (a, b) in i.data().iter().zip(j.data()) {
            assert!(
                (a - b).abs() <= 1e-4 * scale.max(1.0),
                "{name}: interp {a}, jit {b}"
            );
        }
    }
}

#[test]
fn grad_with_a_target_of_the_wrong_shape_says_so() {
    kiln::runtime::write_npy(
        path("x2.npy").as_ref(),
        &Value::F(Tensor::full([1, 1, 28, 28], 0.5f32)),
    )
    .unwrap();
    kiln::runtime::write_npy(path("t2.npy").as_ref(), &Value::F(Tensor::full([1, 3], 0.5f32))).unwrap();
    let o = kiln(&[
        "grad",
        &lenet(),
        "--input",
        &path("x2.npy"),
        "--target",
        &path("t2.npy"),
        "--loss",
        "mse",
        "--output",
        &path("g2.safetensors"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("target") && err.contains("f32[1, 10]"), "{err}");
}
