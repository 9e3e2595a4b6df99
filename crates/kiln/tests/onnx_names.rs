//! The `kiln` binary takes and shows an `.onnx` file's own input and output names (`0`,
//! `input.1`, `gpu_0/data_0`, an output behind an `Identity`), never the sanitized IR node
//! names: `--input`/`--output`, printed outputs, messages, `check`, `summary`, `grad`, and
//! `run --batch`. The models are built here with the prost messages; expected values are
//! computed by hand. Then ONNX's own node tests through `kiln run` by their own names.

use kiln::onnx::prost::Message;
use kiln::onnx::proto::*;
use kiln::{Tensor, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("the kiln binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh folder for one test.
fn temp_dir(test: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-onnx-names-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn node(op: &str, ins: &[&str], outs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// A FLOAT value of shape `[batch, 3]`; `None`: a symbolic batch dim `N`.
fn value(name: &str, batch: Option<i64>) -> ValueInfoProto {
    let b = match batch {
        Some(v) => DimensionValue::DimValue(v),
        None => DimensionValue::DimParam("N".into()),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension { value: Some(b) },
                        Dimension {
                            value: Some(DimensionValue::DimValue(3)),
                        },
                    ],
                }),
            }),
        }),
    }
}

fn write_model(path: &Path, nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: &[&str]) {
    let bytes = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "names".into(),
            input: inputs,
            output: outputs.iter().map(|o| value(o, None)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    std::fs::write(path, bytes).unwrap();
}

/// Inputs `0`, `input.1`, `gpu_0/data_0` (`[N, 3]`, N symbolic); outputs `x = Relu(0)`,
/// `y = Identity(x)` (the same IR node as `x`) and `s:0 = input.1 + gpu_0/data_0`.
fn pytorch_like(dir: &Path) -> PathBuf {
    let p = dir.join("names.onnx");
    write_model(
        &p,
        vec![
            node("Relu", &["0"], &["x"]),
            node("Identity", &["x"], &["y"]),
            node("Add", &["input.1", "gpu_0/data_0"], &["s:0"]),
        ],
        vec![
            value("0", None),
            value("input.1", None),
            value("gpu_0/data_0", None),
        ],
        &["x", "y", "s:0"],
    );
    p
}

fn npy(dir: &Path, name: &str, dims: &[usize], data: Vec<f32>) -> PathBuf {
    let p = dir.join(name);
    kiln::runtime::write_npy(&p, &Value::F(Tensor::new(dims, data).unwrap())).unwrap();
    p
}

fn read(p: &Path) -> Tensor<f32> {
    match kiln::runtime::read_npy(p).unwrap() {
        Value::F(t) => t,
        v => panic!("{}: not f32: {}", p.display(), v.ty()),
    }
}

const X: [f32; 6] = [-1.0, 2.0, -3.5, 0.0, 4.25, -0.5];
const A: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
const B: [f32; 6] = [0.5, -2.0, 10.0, 0.25, -5.0, 1.0];

/// The three inputs of [`pytorch_like`], batch 2, as `--input` arguments by the file's names.
fn inputs(dir: &Path) -> Vec<String> {
    vec![
        format!("0={}", s(&npy(dir, "x.npy", &[2, 3], X.to_vec()))),
        format!("input.1={}", s(&npy(dir, "a.npy", &[2, 3], A.to_vec()))),
        format!("gpu_0/data_0={}", s(&npy(dir, "b.npy", &[2, 3], B.to_vec()))),
    ]
}

fn args<'a>(head: &[&'a str], flag: &'a str, values: &'a [String]) -> Vec<&'a str> {
    let mut v = head.to_vec();
    for x in values {
        v.push(flag);
        v.push(x);
    }
    v
}

#[test]
fn run_takes_and_writes_the_files_names() {
    let dir = temp_dir("run");
    let model = s(&pytorch_like(&dir));
    let ins = inputs(&dir);
    let outs = vec![
        format!("y={}", s(&dir.join("y.npy"))),
        format!("x={}", s(&dir.join("xo.npy"))),
        format!("s:0={}", s(&dir.join("s.npy"))),
    ];
    let relu: Vec<f32> = X.iter().map(|v| v.max(0.0)).collect();
    let sum: Vec<f32> = A.iter().zip(&B).map(|(a, b)| a + b).collect();
    for engine in ["jit", "interp"] {
        for f in ["y.npy", "xo.npy", "s.npy"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let mut a = args(
            &["run", &model, "--engine", engine, "--batch", "2"],
            "--input",
            &ins,
        );
        for o in &outs {
            a.push("--output");
            a.push(o);
        }
        let o = kiln(&a);
        assert!(o.status.success(), "{engine}: {}", stderr(&o));
        // both outputs of the one Relu node are written
        for f in ["y.npy", "xo.npy"] {
            let t = read(&dir.join(f));
            assert_eq!(t.dims(), &[2, 3], "{engine} {f}");
            assert_eq!(t.data(), &relu[..], "{engine} {f}");
        }
        assert_eq!(read(&dir.join("s.npy")).data(), &sum[..], "{engine}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn printed_outputs_and_messages_use_the_files_names() {
    let dir = temp_dir("messages");
    let model = s(&pytorch_like(&dir));
    let ins = inputs(&dir);
    let o = kiln(&args(&["run", &model, "--batch", "2"], "--input", &ins));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split(": ").next()).collect();
    assert_eq!(names, ["x", "y", "s:0"], "{out}");
    assert!(
        out.contains("y: f32[2, 3] [0.000000, 2.000000, 0.000000"),
        "{out}"
    );

    // an unknown input or output lists the file's names, not the IR's (`_0`, `s_0`)
    let mut bad = ins.clone();
    bad[0] = bad[0].replacen("0=", "q=", 1);
    let o = kiln(&args(&["run", &model, "--batch", "2"], "--input", &bad));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the model has no input `q` (its inputs: 0, input.1, gpu_0/data_0)"),
        "{}",
        stderr(&o)
    );
    let mut a = args(&["run", &model, "--batch", "2"], "--input", &ins);
    a.extend(["--output", "z=/nonexistent/z.npy"]);
    let o = kiln(&a);
    assert!(
        stderr(&o).contains("the model has no output `z` (its outputs: x, y, s:0)"),
        "{}",
        stderr(&o)
    );
    // an input left out is named as the file names it
    let o = kiln(&args(&["run", &model, "--batch", "2"], "--input", &ins[1..]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("input `0` is not given"), "{}", stderr(&o));
    // the wrong batch size: the message says which --batch fits
    let o = kiln(&args(&["run", &model], "--input", &ins));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("input `0`")
            && err.contains("expected f32[1, 3], got f32[2, 3]")
            && err.contains("--batch 2"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_batch_sets_dim_0_of_every_input() {
    let dir = temp_dir("batch");
    let model = s(&pytorch_like(&dir));
    let x: Vec<f32> = (0..9).map(|i| i as f32 - 4.0).collect();
    let ins = vec![
        format!("0={}", s(&npy(&dir, "x3.npy", &[3, 3], x.clone()))),
        format!("input.1={}", s(&npy(&dir, "a3.npy", &[3, 3], vec![1.0; 9]))),
        format!("gpu_0/data_0={}", s(&npy(&dir, "b3.npy", &[3, 3], vec![2.0; 9]))),
    ];
    let mut a = args(&["run", &model, "--batch", "3"], "--input", &ins);
    let y = dir.join("y3.npy");
    let ys = format!("y={}", s(&y));
    a.extend(["--output", &ys]);
    let o = kiln(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = read(&y);
    assert_eq!(t.dims(), &[3, 3]);
    assert_eq!(t.data(), &x.iter().map(|v| v.max(0.0)).collect::<Vec<_>>()[..]);
    let o = kiln(&["run", &model, "--batch", "0", "--input", &ins[0]]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn check_and_summary_list_the_files_names() {
    let dir = temp_dir("check");
    let model = s(&pytorch_like(&dir));
    let o = kiln(&["check", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("ok: ") && out.contains(" 3 inputs, 3 outputs"),
        "{out}"
    );
    for line in [
        "input `0`: f32[1, 3] (node `_0`)",
        "input `input.1`: f32[1, 3]",
        "input `gpu_0/data_0`: f32[1, 3] (node `gpu_0_data_0`)",
        "output `x`: f32[1, 3]",
        "output `y`: f32[1, 3] (node `x`)",
        "output `s:0`: f32[1, 3] (node `s_0`)",
    ] {
        assert!(out.lines().any(|l| l == line), "`{line}` missing:\n{out}");
    }
    let o = kiln(&["summary", &model]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("input `0` is node `_0`"), "{out}");
    assert!(out.contains("output `y` is node `x`"), "{out}");
    assert!(!out.contains("input `input.1` is"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn inputs_that_sanitize_alike_stay_apart() {
    // `a/b` becomes node `a_b`, the input `a_b` then `a_b_2`: each name must reach its own node
    let dir = temp_dir("alike");
    let p = dir.join("alike.onnx");
    write_model(
        &p,
        vec![node("Sub", &["a/b", "a_b"], &["d"])],
        vec![value("a/b", Some(2)), value("a_b", Some(2))],
        &["d"],
    );
    let ins = vec![
        format!("a_b={}", s(&npy(&dir, "b.npy", &[2, 3], B.to_vec()))),
        format!("a/b={}", s(&npy(&dir, "a.npy", &[2, 3], A.to_vec()))),
    ];
    let d = dir.join("d.npy");
    let ds = format!("d={}", s(&d));
    let model = s(&p);
    let mut a = args(&["run", &model], "--input", &ins);
    a.extend(["--output", &ds]);
    let o = kiln(&a);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<f32> = A.iter().zip(&B).map(|(a, b)| a - b).collect();
    assert_eq!(read(&d).data(), &want[..]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_name_holding_an_equals_sign_is_taken_whole() {
    let dir = temp_dir("equals");
    let p = dir.join("eq.onnx");
    write_model(
        &p,
        vec![node("Relu", &["x=1"], &["out=2"])],
        vec![value("x=1", Some(2))],
        &["out=2"],
    );
    let model = s(&p);
    let x = format!("x=1={}", s(&npy(&dir, "x.npy", &[2, 3], X.to_vec())));
    let y = dir.join("y.npy");
    let ys = format!("out=2={}", s(&y));
    let o = kiln(&["run", &model, "--input", &x, "--output", &ys]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<f32> = X.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(read(&y).data(), &want[..]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn grad_takes_the_files_input_name_and_writes_its_gradient_under_it() {
    let dir = temp_dir("grad");
    let p = dir.join("grad.onnx");
    write_model(
        &p,
        vec![
            node("Relu", &["input.1"], &["r"]),
            node("Identity", &["r"], &["y"]),
        ],
        vec![value("input.1", Some(2))],
        &["y"],
    );
    let x = npy(&dir, "x.npy", &[2, 3], X.to_vec());
    let t = npy(&dir, "t.npy", &[2, 3], vec![0.0; 6]);
    let g = dir.join("g.safetensors");
    let o = kiln(&[
        "grad",
        &s(&p),
        "--input",
        &format!("input.1={}", s(&x)),
        "--target",
        &s(&t),
        "--loss",
        "mse",
        "--output",
        &s(&g),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let grads = kiln::runtime::load_safetensors(&g).unwrap();
    let keys: Vec<&String> = grads.keys().collect();
    let gx = grads.get("grad_of_input.1").unwrap_or_else(|| panic!("{keys:?}"));
    // mse = mean((relu(x) − 0)²): d/dx = 2·relu(x)/6 where x > 0, else 0
    let want: Vec<f32> = X
        .iter()
        .map(|&v| if v > 0.0 { 2.0 * v / 6.0 } else { 0.0 })
        .collect();
    for (g, w) in gx.data().iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{:?} vs {want:?}", gx.data());
    }
    std::fs::remove_dir_all(&dir).ok();
}

// ---- ONNX's own node tests, through `kiln run`, by their own names ----

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kiln-onnx/tests/data")
}

fn numbered(dir: &Path, kind: &str) -> Vec<PathBuf> {
    (0..)
        .map(|k| dir.join(format!("{kind}_{k}.pb")))
        .take_while(|p| p.exists())
        .collect()
}

/// `(rtol, atol)` of a case (ONNX's runner: `|got − want| ≤ atol + rtol·|want|`).
fn tolerance(dir: &Path) -> (f32, f32) {
    let text = std::fs::read_to_string(dir.join("case.txt")).unwrap_or_default();
    let get = |k: &str, d: f32| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap_or(d)
    };
    (get("rtol ", 1e-3), get("atol ", 1e-7))
}

/// Runs the case in `dir` through `kiln run` with its data sets' `.pb` tensors written as
/// `.npy`, every input and output given by the file's name. `Ok(None)`: the case has an
/// integer input or a fed Clip bound (the conformance test binds those as constants; the CLI
/// feeds f32 only);
/// `Ok(Some(renamed))`: it passes, and `renamed` says whether a name of its inputs or outputs
/// is not its IR node's (what failed before the CLI took the file's names).
fn run_case_by_names(dir: &Path, engine: &str, tmp: &Path) -> Result<Option<bool>, String> {
    let bytes = std::fs::read(dir.join("model.onnx")).map_err(|e| e.to_string())?;
    let m = ModelProto::decode(&bytes[..]).map_err(|e| e.to_string())?;
    let g = m.graph.unwrap_or_default();
    let fed: Vec<String> = g
        .input
        .iter()
        .filter(|i| !g.initializer.iter().any(|t| t.name == i.name))
        .map(|i| i.name.clone())
        .collect();
    let outs: Vec<String> = g.output.iter().map(|o| o.name.clone()).collect();
    // a Clip's bounds: bound as constants by the conformance test, not fed (kiln's clip takes
    // them as attributes)
    if g.node
        .iter()
        .filter(|n| n.op_type == "Clip")
        .any(|n| n.input.iter().skip(1).any(|i| fed.contains(i)))
    {
        return Ok(None);
    }
    let (rtol, atol) = tolerance(dir);
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    sets.sort();
    for ds in &sets {
        for pb in numbered(ds, "input") {
            let raw = std::fs::read(&pb).map_err(|e| e.to_string())?;
            if kiln::onnx::read_const_bytes(&raw)
                .map_err(|e| e.to_string())?
                .as_i64()
                .is_some()
            {
                return Ok(None);
            }
        }
    }
    let declared = kiln::model::load(&dir.join("model.onnx")).map_err(|e| e.to_string())?;
    for ds in sets {
        let mut a: Vec<String> = vec![
            "run".into(),
            s(&dir.join("model.onnx")),
            "--engine".into(),
            engine.into(),
        ];
        let mut batch = None;
        for (k, (name, pb)) in fed.iter().zip(numbered(&ds, "input")).enumerate() {
            let raw = std::fs::read(&pb).map_err(|e| e.to_string())?;
            let t = kiln::onnx::read_tensor_bytes(&raw).map_err(|e| e.to_string())?;
            // a symbolic batch dim was imported as 1
            if let Some(node) = declared.input_node(name) {
                let id = declared.graph.find(node).ok_or("no input node")?;
                let want = declared.graph.node(id).ty.dims().to_vec();
                if !want.is_empty() && want.len() == t.dims().len() && want[0] != t.dims()[0] {
                    batch = Some(t.dims()[0]);
                }
            }
            let p = tmp.join(format!("in{k}.npy"));
            kiln::runtime::write_npy(&p, &Value::F(t)).map_err(|e| e.to_string())?;
            a.push("--input".into());
            a.push(format!("{name}={}", s(&p)));
        }
        if let Some(n) = batch {
            a.push("--batch".into());
            a.push(n.to_string());
        }
        let want = numbered(&ds, "output");
        for (k, name) in outs.iter().enumerate().take(want.len()) {
            a.push("--output".into());
            a.push(format!("{name}={}", s(&tmp.join(format!("out{k}.npy")))));
        }
        let o = kiln(&a.iter().map(String::as_str).collect::<Vec<_>>());
        if !o.status.success() {
            return Err(format!("kiln run: {}", stderr(&o).trim()));
        }
        for (k, pb) in want.iter().enumerate() {
            let w = kiln::onnx::read_tensor_bytes(&std::fs::read(pb).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            let got = read(&tmp.join(format!("out{k}.npy")));
            if got.dims() != w.dims() {
                return Err(format!(
                    "output `{}`: shape {:?}, expected {:?}",
                    outs[k],
                    got.dims(),
                    w.dims()
                ));
            }
            for (i, (&w, &g)) in w.data().iter().zip(got.data()).enumerate() {
                if !((w.is_nan() && g.is_nan()) || w == g || (g - w).abs() <= atol + rtol * w.abs()) {
                    return Err(format!("output `{}`: element {i} is {g}, expected {w}", outs[k]));
                }
            }
        }
    }
    Ok(Some(!declared.renamed().is_empty()))
}

/// A handful of cases whose inputs and outputs ONNX or PyTorch named as kiln cannot name a
/// node (`0`, `1`; outputs of an Identity or Dropout; several inputs; a symbolic batch).
#[test]
fn onnx_node_tests_run_by_their_own_names() {
    let tmp = temp_dir("cases");
    for case in [
        "pytorch-converted/test_Conv2d",
        "pytorch-converted/test_ReLU",
        "pytorch-operator/test_operator_mm",
        "node/test_identity",
        "node/test_dropout_default",
        "node/test_add_bcast",
        "node/test_concat_2d_axis_0",
        "node/test_gemm_default_matrix_bias",
    ] {
        let dir = cases_dir().join(case);
        assert!(dir.join("model.onnx").exists(), "{case}: missing");
        assert!(run_case_by_names(&dir, "jit", &tmp).unwrap().is_some(), "{case}");
    }
    std::fs::remove_dir_all(&tmp).ok();
}

/// Every case the manifest says passes, through `kiln run` (interpreter and JIT) by its own
/// names; `--nocapture` prints the counts (docs/onnx.md has them).
#[test]
fn every_passing_f32_case_runs_by_its_own_names() {
    let tmp = temp_dir("all");
    let manifest = std::fs::read_to_string(cases_dir().join("manifest.txt")).unwrap();
    let (mut ok, mut renamed, mut integer, mut failed) = (0, 0, 0, Vec::new());
    for l in manifest.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, status)) = l.split_once(' ') else {
            continue;
        };
        if status != "pass" {
            continue;
        }
        let dir = cases_dir().join(name);
        let results = ["interp", "jit"].map(|e| run_case_by_names(&dir, e, &tmp));
        match results {
            [Ok(Some(r)), Ok(Some(_))] => {
                ok += 1;
                renamed += usize::from(r);
            }
            [Ok(None), _] => integer += 1,
            [Err(e), _] | [_, Err(e)] => failed.push(format!("{name}: {e}")),
            [a, b] => failed.push(format!("{name}: {a:?} vs {b:?}")),
        }
    }
    eprintln!(
        "{ok} of {} passing cases with f32 inputs run by their own names, {renamed} of them with a name that is not its IR node's ({integer} more have integer inputs or fed clip bounds)",
        ok + failed.len()
    );
    std::fs::remove_dir_all(&tmp).ok();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
