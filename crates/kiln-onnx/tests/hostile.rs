//! Hostile files: each test builds a model (protobuf bytes through the crate's prost types,
//! external data in a folder under cargo's `CARGO_TARGET_TMPDIR`) that used to read outside the
//! model's folder, allocate gigabytes, hang, take quadratic time, be accepted although it is
//! broken, or panic, and checks that it is now a clean error (or a correct result).

use kiln_onnx::proto::*;
use kiln_onnx::tensor::{Const, Reader};
use kiln_onnx::{OnnxError, load, load_bytes};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: Some(i),
        ..Default::default()
    }
}

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f: Some(f),
        ..Default::default()
    }
}

fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::TENSOR,
        t: Some(t),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, ins: &[&str], outs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&v| Dimension {
                            value: Some(DimensionValue::DimValue(v)),
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn floats(name: &str, dims: &[i64], v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        float_data: v,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: data_type::INT64,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

fn model_proto(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    inits: Vec<TensorProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "hostile".into(),
            initializer: inits,
            input: inputs,
            output: outputs.iter().map(|o| value(o, &[])).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    inits: Vec<TensorProto>,
) -> Vec<u8> {
    model_proto(opset, nodes, inputs, outputs, inits).encode_to_vec()
}

fn err(bytes: &[u8]) -> String {
    match load_bytes(bytes, None) {
        Ok(_) => panic!("the model was accepted"),
        Err(e) => e.to_string(),
    }
}

/// A fresh folder under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let p = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kiln-onnx-hostile-{}-{what}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn le(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A FLOAT initializer `name` of `dims` whose data is in `location`.
fn external(
    name: &str,
    dims: &[i64],
    location: &str,
    offset: Option<u64>,
    length: Option<u64>,
) -> TensorProto {
    let entry = |k: &str, v: String| StringStringEntryProto {
        key: k.into(),
        value: v,
    };
    let mut ext = vec![entry("location", location.into())];
    ext.extend(offset.map(|o| entry("offset", o.to_string())));
    ext.extend(length.map(|l| entry("length", l.to_string())));
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        data_location: 1,
        external_data: ext,
        ..Default::default()
    }
}

/// `y = x + w` over `[n]`, with `w` given by `init`; written to `dir/model.onnx`.
fn write_add_model(dir: &Path, n: i64, init: TensorProto) -> PathBuf {
    let bytes = model(
        13,
        vec![node("Add", "add", &["x", "w"], &["y"], vec![])],
        vec![value("x", &[n])],
        &["y"],
        vec![init],
    );
    let path = dir.join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Runs `f` on another thread and fails the test if it does not finish within a minute (a
/// hang would otherwise stall the whole test run).
fn within_a_minute<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the import hangs")
}

// ---------------------------------------------------------------------------------------------
// 1. external data

#[cfg(unix)]
#[test]
fn external_data_through_a_symlink_out_of_the_folder_is_refused() {
    let tmp = TempDir::new("symlink");
    let secret = tmp.0.join("secret.bin");
    std::fs::write(&secret, le(&[7.0, 8.0])).unwrap();
    let dir = tmp.0.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("w.bin")).unwrap();
    let path = write_add_model(&dir, 2, external("w", &[2], "w.bin", None, Some(8)));
    // before: the lexical check passed and the secret's bytes came back as the weight
    let e = load(&path).unwrap_err().to_string();
    assert!(
        e.contains("tensor `w`") && e.contains("outside the model's folder"),
        "{e}"
    );
    // a relative symlink that climbs out, and a symlinked folder on the way
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    std::os::unix::fs::symlink("../secret.bin", dir.join("w.bin")).unwrap();
    assert!(load(&path).unwrap_err().to_string().contains("outside"));
    std::os::unix::fs::symlink(&tmp.0, dir.join("up")).unwrap();
    write_add_model(&dir, 2, external("w", &[2], "up/secret.bin", None, Some(8)));
    assert!(load(&path).unwrap_err().to_string().contains("outside"));
    // a symlink that stays inside the folder is fine, and so is a model folder that is itself
    // reached through a symlink
    std::fs::write(dir.join("real.bin"), le(&[1.0, 2.0])).unwrap();
    std::fs::remove_file(dir.join("w.bin")).unwrap();
    std::os::unix::fs::symlink("real.bin", dir.join("w.bin")).unwrap();
    write_add_model(&dir, 2, external("w", &[2], "w.bin", None, None));
    let m = load(&path).unwrap();
    assert_eq!(m.weights["w"].data(), &[1.0, 2.0]);
    let link = tmp.0.join("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    let m = load(link.join("model.onnx")).unwrap();
    assert_eq!(m.weights["w"].data(), &[1.0, 2.0]);
}

#[cfg(unix)]
#[test]
fn external_data_from_dev_zero_is_refused_without_reading_it() {
    let tmp = TempDir::new("devzero");
    std::os::unix::fs::symlink("/dev/zero", tmp.0.join("zero.bin")).unwrap();
    // before: `std::fs::read` of /dev/zero, which grows until memory runs out
    let path = write_add_model(&tmp.0, 2, external("w", &[2], "zero.bin", None, None));
    let e = within_a_minute(move || load(&path).unwrap_err().to_string());
    assert!(e.contains("outside the model's folder"), "{e}");
}

#[cfg(target_os = "linux")]
#[test]
fn external_data_from_a_fifo_or_a_folder_is_refused_without_blocking() {
    let tmp = TempDir::new("fifo");
    let fifo = tmp.0.join("pipe.bin");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        // before: opening a FIFO without a writer blocks forever
        let path = write_add_model(&tmp.0, 2, external("w", &[2], "pipe.bin", None, Some(8)));
        let e = within_a_minute(move || load(&path).unwrap_err().to_string());
        assert!(e.contains("not a regular file"), "{e}");
    } else {
        eprintln!("no mkfifo: the FIFO case is skipped");
    }
    std::fs::create_dir(tmp.0.join("sub")).unwrap();
    let path = write_add_model(&tmp.0, 2, external("w", &[2], "sub", None, None));
    let e = load(&path).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn external_data_length_is_checked_against_the_dims_before_reading() {
    let tmp = TempDir::new("length");
    std::fs::write(tmp.0.join("w.bin"), le(&[1.0, 2.0, 3.0])).unwrap();
    let cases: Vec<(TensorProto, &str)> = vec![
        // a length that is not dims × 4
        (external("w", &[2], "w.bin", None, Some(12)), "need 8 bytes"),
        // no length: to the end of the file, which holds 12 bytes, not 8
        (external("w", &[2], "w.bin", None, None), "holds 12 bytes"),
        (external("w", &[2], "w.bin", Some(8), None), "holds 4 bytes"),
        // dims far beyond the file: refused from the file's size, nothing allocated
        (
            external("w", &[1 << 31], "w.bin", None, None),
            "need 8589934592 bytes",
        ),
        (
            external("w", &[1 << 31], "w.bin", None, Some(1 << 33)),
            "past the end",
        ),
        (
            external("w", &[2], "w.bin", Some(u64::MAX), Some(8)),
            "past the end",
        ),
        (external("w", &[1 << 32], "w.bin", None, None), "above the limit"),
        (external("w", &[-2], "w.bin", None, None), "negative dimension"),
    ];
    for (t, want) in cases {
        let path = write_add_model(&tmp.0, 2, t.clone());
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains(want), "{:?}: {e}", t.external_data);
        assert!(e.contains("tensor `w`"), "{e}");
    }
    // the exact range is read
    let path = write_add_model(&tmp.0, 2, external("w", &[2], "w.bin", Some(4), Some(8)));
    assert_eq!(load(&path).unwrap().weights["w"].data(), &[2.0, 3.0]);
    let path = write_add_model(&tmp.0, 2, external("w", &[2], "w.bin", Some(4), None));
    assert_eq!(load(&path).unwrap().weights["w"].data(), &[2.0, 3.0]);
}

#[test]
fn each_external_data_file_is_opened_once_and_bytes_are_budgeted() {
    let tmp = TempDir::new("cache");
    std::fs::write(tmp.0.join("a.bin"), le(&[1.0, 2.0, 3.0, 4.0])).unwrap();
    std::fs::write(tmp.0.join("b.bin"), le(&[5.0])).unwrap();
    let mut r = Reader::new(Some(&tmp.0));
    for i in 0..4 {
        let c = r
            .read(&external("w", &[1], "a.bin", Some(4 * i), Some(4)))
            .unwrap();
        assert_eq!(c, Const::f32(vec![1], vec![(i + 1) as f32]));
    }
    assert_eq!(r.files_opened(), 1);
    r.read(&external("w", &[1], "b.bin", None, None)).unwrap();
    // another name of the same file (a symlink inside the folder) is the same open file
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink("b.bin", tmp.0.join("c.bin")).unwrap();
        r.read(&external("w", &[1], "c.bin", None, None)).unwrap();
    }
    // `./b.bin` is refused lexically (only plain names below the folder)
    r.read(&external("w", &[1], "./b.bin", None, None)).unwrap_err();
    assert_eq!(r.files_opened(), 2);
    assert_eq!(r.bytes_used(), if cfg!(unix) { 6 * 4 } else { 5 * 4 });
    // the same 16 bytes referenced again and again: each copy counts, so a small file cannot
    // make the import hold gigabytes
    let mut r = Reader::new(Some(&tmp.0)).with_budget(40);
    let all = external("w", &[4], "a.bin", None, None);
    r.read(&all).unwrap();
    r.read(&all).unwrap();
    let e = r.read(&all).unwrap_err().to_string();
    assert!(e.contains("above the limit of 40 bytes"), "{e}");
    // through an import: three initializers in one file
    let bytes = model(
        13,
        vec![
            node("Add", "a1", &["x", "w0"], &["h"], vec![]),
            node("Add", "a2", &["h", "w1"], &["y"], vec![]),
        ],
        vec![value("x", &[2])],
        &["y"],
        vec![
            external("w0", &[2], "a.bin", None, Some(8)),
            external("w1", &[2], "a.bin", Some(8), Some(8)),
        ],
    );
    std::fs::write(tmp.0.join("m.onnx"), bytes).unwrap();
    let m = load(tmp.0.join("m.onnx")).unwrap();
    assert_eq!(m.weights["w0"].data(), &[1.0, 2.0]);
    assert_eq!(m.weights["w1"].data(), &[3.0, 4.0]);
}

// ---------------------------------------------------------------------------------------------
// 2. sizes checked before allocating

fn constant_of_shape(shape: &[i64], fill: Option<TensorProto>) -> Vec<u8> {
    model(
        11,
        vec![
            node(
                "ConstantOfShape",
                "cos",
                &["shape"],
                &["c"],
                fill.map(|t| vec![attr_t("value", t)]).unwrap_or_default(),
            ),
            node("Relu", "r", &["c"], &["y"], vec![]),
        ],
        vec![],
        &["y"],
        vec![ints("shape", shape)],
    )
}

#[test]
fn constant_of_shape_sizes_are_checked_before_allocating() {
    let int_fill = TensorProto {
        dims: vec![1],
        data_type: data_type::INT64,
        int64_data: vec![7],
        ..Default::default()
    };
    // before: [2^31] allocated 8 GB (f32) or 16 GB (int64) before anything looked at it
    for fill in [None, Some(int_fill)] {
        let e = err(&constant_of_shape(&[1 << 31], fill.clone()));
        assert!(
            e.contains("node `cos` (ConstantOfShape") && e.contains("at most 16777216"),
            "{e}"
        );
        let e = err(&constant_of_shape(&[1 << 12, 1 << 13], fill));
        assert!(e.contains("at most 16777216"), "{e}");
    }
    for (shape, want) in [
        (vec![(1i64 << 31) + 1], "above the limit"),
        (vec![i64::MAX], "above the limit"),
        (vec![i64::MAX, i64::MAX, 0], "above the limit"),
        (vec![1 << 32, 1 << 32], "above the limit"),
        (vec![-1], "negative"),
        (vec![i64::MIN], "negative"),
        (vec![1; 9], "rank 9"),
    ] {
        let e = err(&constant_of_shape(&shape, None));
        assert!(e.contains("cos") && e.contains(want), "{shape:?}: {e}");
    }
    let m = load_bytes(&constant_of_shape(&[2, 3], None), None).unwrap();
    assert_eq!(m.weights["c"].dims(), &[2, 3]);
}

#[test]
fn initializer_dims_are_checked_against_the_data_before_allocating() {
    let relu = |init: TensorProto| {
        model(
            13,
            vec![node("Relu", "r", &["w"], &["y"], vec![])],
            vec![],
            &["y"],
            vec![init],
        )
    };
    let raw = |dims: &[i64], ty: i32, bytes: usize| TensorProto {
        name: "w".into(),
        dims: dims.to_vec(),
        data_type: ty,
        raw_data: vec![0; bytes],
        ..Default::default()
    };
    for (t, want) in [
        (floats("w", &[1 << 31], vec![1.0]), "need 2147483648 elements"),
        (floats("w", &[1 << 32], vec![1.0]), "above the limit"),
        (floats("w", &[i64::MAX], vec![]), "above the limit"),
        (floats("w", &[1 << 20, 0, 1 << 40], vec![]), "above the limit"),
        (floats("w", &[3, -1], vec![]), "negative dimension"),
        (floats("w", &[1; 9], vec![1.0]), "rank 9"),
        (raw(&[1 << 31], data_type::INT8, 1), "need 2147483648 elements"),
        (raw(&[1 << 30, 4], data_type::FLOAT, 4), "above the limit"),
        (raw(&[3], data_type::DOUBLE, 8), "need 3 elements"),
    ] {
        let e = err(&relu(t.clone()));
        assert!(e.contains("tensor `w`") && e.contains(want), "{:?}: {e}", t.dims);
    }
    // a Constant node's tensor goes through the same checks
    let bytes = model(
        13,
        vec![
            node(
                "Constant",
                "k",
                &[],
                &["c"],
                vec![attr_t("value", floats("cv", &[1 << 31], vec![]))],
            ),
            node("Relu", "r", &["c"], &["y"], vec![]),
        ],
        vec![],
        &["y"],
        vec![],
    );
    assert!(err(&bytes).contains("tensor `cv`"));
}

// ---------------------------------------------------------------------------------------------
// 3. accepted although broken

#[test]
fn a_value_written_twice_is_refused_naming_both_writers() {
    // before: the second Relu silently replaced the first one's output
    let bytes = model(
        13,
        vec![
            node("Relu", "first", &["x"], &["y"], vec![]),
            node("Sigmoid", "second", &["x"], &["y"], vec![]),
        ],
        vec![value("x", &[2])],
        &["y"],
        vec![],
    );
    let e = err(&bytes);
    assert!(
        e.contains("`y` is written twice") && e.contains("node `first`") && e.contains("node `second`"),
        "{e}"
    );
    // a node overwriting a graph input or an initializer, or writing one name twice itself
    let e = err(&model(
        13,
        vec![node("Relu", "r", &["x"], &["x"], vec![])],
        vec![value("x", &[2])],
        &["x"],
        vec![],
    ));
    assert!(
        e.contains("written twice: by a graph input and by node `r`"),
        "{e}"
    );
    let e = err(&model(
        13,
        vec![node("Relu", "r", &["x"], &["w"], vec![])],
        vec![value("x", &[2])],
        &["w"],
        vec![floats("w", &[2], vec![1.0, 2.0])],
    ));
    assert!(e.contains("by an initializer and by node `r`"), "{e}");
    let e = err(&model(
        13,
        vec![node("Dropout", "d", &["x"], &["y", "y"], vec![])],
        vec![value("x", &[2])],
        &["y"],
        vec![],
    ));
    assert!(e.contains("`y` is written twice"), "{e}");
}

#[test]
fn bad_opsets_and_double_declarations_are_refused() {
    let relu = || vec![node("Relu", "r", &["x"], &["y"], vec![])];
    for v in [0, -1, i64::MIN] {
        let e = err(&model(v, relu(), vec![value("x", &[2])], &["y"], vec![]));
        assert!(e.contains(&format!("opset version {v}")), "{e}");
    }
    let mut m = model_proto(13, relu(), vec![value("x", &[2])], &["y"], vec![]);
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx".into(),
        version: 11,
    });
    let e = err(&m.encode_to_vec());
    assert!(e.contains("imported twice, as opsets 13 and 11"), "{e}");
    // the same opset listed twice is harmless
    m.opset_import[1].version = 13;
    assert!(load_bytes(&m.encode_to_vec(), None).is_ok());

    let e = err(&model(
        13,
        relu(),
        vec![value("x", &[2]), value("x", &[3])],
        &["y"],
        vec![],
    ));
    assert!(e.contains("graph input `x`: declared twice"), "{e}");
    let e = err(&model(
        13,
        vec![node("Add", "a", &["x", "w"], &["y"], vec![])],
        vec![value("x", &[2])],
        &["y"],
        vec![
            floats("w", &[2], vec![1.0, 2.0]),
            floats("w", &[2], vec![3.0, 4.0]),
        ],
    ));
    assert!(e.contains("tensor `w`: declared twice"), "{e}");
    // an initializer listed among the inputs (IR version < 4) is still fine
    let m = load_bytes(
        &model(
            13,
            vec![node("Add", "a", &["x", "w"], &["y"], vec![])],
            vec![value("x", &[2]), value("w", &[2])],
            &["y"],
            vec![floats("w", &[2], vec![1.0, 2.0])],
        ),
        None,
    )
    .unwrap();
    assert_eq!(m.inputs.len(), 1);
    for outs in [&[][..], &[""][..], &["", ""][..]] {
        let e = err(&model(
            13,
            vec![
                node("Relu", "r", &["x"], &["y"], vec![]),
                node("Relu", "silent", &["x"], outs, vec![]),
            ],
            vec![value("x", &[2])],
            &["y"],
            vec![],
        ));
        assert!(e.contains("node `silent` (Relu): the node has no outputs"), "{e}");
    }
    let e = err(&model(13, relu(), vec![value("", &[2])], &["y"], vec![]));
    assert!(e.contains("empty name"), "{e}");
    let e = err(&model(
        13,
        relu(),
        vec![value("x", &[2])],
        &["y"],
        vec![floats("", &[1], vec![1.0])],
    ));
    assert!(e.contains("empty name"), "{e}");
}

#[test]
fn each_file_output_maps_to_its_own_ir_node() {
    // two file outputs of the same value used to shift every later output by one
    let bytes = model(
        13,
        vec![
            node("Relu", "r", &["x"], &["a"], vec![]),
            node("Identity", "i", &["a"], &["b"], vec![]),
            node("Sigmoid", "s", &["x"], &["c"], vec![]),
        ],
        vec![value("x", &[2])],
        &["a", "b", "c", "a"],
        vec![],
    );
    let m = load_bytes(&bytes, None).unwrap();
    let pairs: Vec<(&str, &str)> = m
        .outputs
        .iter()
        .map(|(o, ir)| (o.as_str(), ir.as_str()))
        .collect();
    assert_eq!(pairs, [("a", "a"), ("b", "a"), ("c", "c"), ("a", "a")]);
}

// ---------------------------------------------------------------------------------------------
// 4. linear name de-duplication

#[test]
fn ten_thousand_names_that_sanitize_alike_get_distinct_names() {
    // 10,000 distinct ONNX names, every one `v` then 14 characters of `/` or `-`: all
    // sanitize to `v______________`. Before: each new one tried every suffix taken so far.
    const N: usize = 10_000;
    let name = |i: usize| -> String {
        let mut s = String::from("v");
        for bit in 0..14 {
            s.push(if i >> bit & 1 == 1 { '/' } else { '-' });
        }
        s
    };
    let names: Vec<String> = (0..N).map(name).collect();
    let mut nodes = Vec::with_capacity(N);
    let mut prev = "x".to_string();
    for n in &names {
        nodes.push(node("Relu", "", &[&prev], &[n], vec![]));
        prev = n.clone();
    }
    let bytes = model(13, nodes, vec![value("x", &[2])], &[&prev], vec![]);
    let m = load_bytes(&bytes, None).unwrap();
    assert_eq!(m.graph.len(), N + 1);
    let base = format!("v{}", "_".repeat(14));
    let base = base.as_str();
    let ir: std::collections::HashSet<String> = m
        .graph
        .petgraph()
        .node_weights()
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(ir.len(), N + 1, "names are unique");
    // the suffixes are handed out in order: `base`, `base_2`, …, `base_N`
    assert!(ir.contains(base));
    for k in 2..=N {
        assert!(ir.contains(&format!("{base}_{k}")), "{base}_{k}");
    }
    assert_eq!(m.outputs[0].1, format!("{base}_{N}"));
    // a name that looks like a generated one is skipped, not reused
    let bytes = model(
        13,
        vec![
            node("Relu", "", &["x"], &["a__2"], vec![]),
            node("Relu", "", &["a__2"], &["a/"], vec![]),
            node("Relu", "", &["a/"], &["a-"], vec![]),
        ],
        vec![value("x", &[2])],
        &["a-"],
        vec![],
    );
    let m = load_bytes(&bytes, None).unwrap();
    assert_eq!(m.outputs[0].1, "a__3");
    assert_eq!(m.graph.len(), 4);
}

// ---------------------------------------------------------------------------------------------
// 5. names and ranks beyond kiln's limits

#[test]
fn long_names_and_high_ranks_are_errors_naming_the_onnx_node() {
    let long = "n".repeat(5000);
    let e = err(&model(
        13,
        vec![node("Relu", &long, &["x"], &[&long], vec![])],
        vec![value("x", &[2])],
        &[&long],
        vec![],
    ));
    assert!(
        e.contains("node `nnnnnnnn") && e.contains("(5000 bytes)") && e.contains("above the limit"),
        "{e}"
    );
    assert!(e.len() < 1000, "the message repeats the name: {} bytes", e.len());
    let e = err(&model(
        13,
        vec![node("Relu", "r", &[&long], &["y"], vec![])],
        vec![value(&long, &[2])],
        &["y"],
        vec![],
    ));
    assert!(
        e.contains("graph input `nnnn") && e.contains("above the limit"),
        "{e}"
    );
    let e = err(&model(
        13,
        vec![node("Relu", "r", &[&long], &["y"], vec![])],
        vec![],
        &["y"],
        vec![floats(&long, &[1], vec![1.0])],
    ));
    assert!(e.contains("tensor `nnnn") && e.contains("above the limit"), "{e}");
    // a 4096-byte name gets a suffix when it collides: still a clean error
    let (e1, e2) = (format!("{}/", "e".repeat(4095)), format!("{}-", "e".repeat(4095)));
    let e = err(&model(
        13,
        vec![
            node("Relu", "r1", &["x"], &[&e1], vec![]),
            node("Relu", "r2", &[&e1], &[&e2], vec![]),
        ],
        vec![value("x", &[2])],
        &[&e2],
        vec![],
    ));
    assert!(
        e.contains("node `r2` (Relu)") && e.contains("above the limit"),
        "{e}"
    );

    // rank 9 anywhere
    let e = err(&model(
        13,
        vec![node("Relu", "r", &["x"], &["y"], vec![])],
        vec![value("x", &[1; 9])],
        &["y"],
        vec![],
    ));
    assert!(e.contains("graph input `x`") && e.contains("rank 9"), "{e}");
    let e = err(&model(
        13,
        vec![node("Reshape", "rs", &["x", "s"], &["y"], vec![])],
        vec![value("x", &[2])],
        &["y"],
        vec![ints("s", &[2, 1, 1, 1, 1, 1, 1, 1, 1])],
    ));
    assert!(e.contains("node `rs` (Reshape)") && e.contains("rank 9"), "{e}");
    for opset in [11, 13] {
        let axes = [0, 1, 2, 3, 4, 5, 6, 7];
        let (attrs, ins, inits) = if opset < 13 {
            (vec![attr_ints("axes", &axes)], vec!["x"], vec![])
        } else {
            (vec![], vec!["x", "axes"], vec![ints("axes", &axes)])
        };
        let e = err(&model(
            opset,
            vec![node("Unsqueeze", "u", &ins, &["y"], attrs)],
            vec![value("x", &[2])],
            &["y"],
            inits,
        ));
        assert!(e.contains("node `u` (Unsqueeze)") && e.contains("rank 9"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// 6. no panic on extreme attribute values

#[test]
fn conv_transpose_and_pad_arithmetic_does_not_overflow() {
    let conv_t = |x_dims: &[i64], attrs: Vec<AttributeProto>| {
        model(
            13,
            vec![node("ConvTranspose", "ct", &["x", "w"], &["y"], attrs)],
            vec![],
            &["y"],
            vec![
                floats("x", x_dims, vec![1.0; x_dims.iter().product::<i64>() as usize]),
                floats("w", &[1, 1, 2, 2], vec![1.0; 4]),
            ],
        )
    };
    let big = i64::MAX;
    for attrs in [
        vec![attr_ints("strides", &[big, big])],
        vec![attr_ints("dilations", &[big, big])],
        vec![attr_ints("output_padding", &[big, big])],
        vec![
            attr_ints("strides", &[big, big]),
            attr_ints("output_shape", &[4, 4]),
        ],
        vec![attr_ints("output_shape", &[big, big])],
        vec![
            AttributeProto {
                name: "auto_pad".into(),
                r#type: attribute_type::STRING,
                s: Some(b"SAME_UPPER".to_vec()),
                ..Default::default()
            },
            attr_ints("strides", &[big, big]),
        ],
    ] {
        let e = err(&conv_t(&[1, 1, 3, 3], attrs.clone()));
        assert!(e.contains("ct"), "{attrs:?}: {e}");
    }
    // before: `stride·(n − 1) + output_padding + (k − 1)·dilation + 1` overflowed (a panic in
    // debug builds) once `output_shape` asked for it
    let e = err(&conv_t(
        &[1, 1, 3, 3],
        vec![
            attr_ints("strides", &[big, big]),
            attr_ints("dilations", &[big, big]),
            attr_ints("output_shape", &[4, 4]),
        ],
    ));
    assert!(e.contains("node `ct` (ConvTranspose)"), "{e}");
    // and `n − 1` underflowed over an empty spatial axis
    let e = err(&conv_t(&[1, 1, 0, 3], vec![attr_ints("output_shape", &[4, 4])]));
    assert!(
        e.contains("node `ct` (ConvTranspose): an empty spatial axis"),
        "{e}"
    );
    // a zero Pad folded into a Conv whose own pads are near i64::MAX
    let bytes = model(
        11,
        vec![
            node("Pad", "p", &["x", "pads"], &["xp"], vec![]),
            node(
                "Conv",
                "c",
                &["xp", "w"],
                &["y"],
                vec![attr_ints("pads", &[big, big, big, big])],
            ),
        ],
        vec![value("x", &[1, 1, 3, 3])],
        &["y"],
        vec![
            ints("pads", &[0, 0, big, big, 0, 0, big, big]),
            floats("w", &[1, 1, 2, 2], vec![1.0; 4]),
        ],
    );
    let e = err(&bytes);
    assert!(e.contains("node `c` (Conv)") && e.contains("overflow"), "{e}");
}

/// Every operator with every attribute it reads set to 0, −1, 2^31, 2^63 − 1 and −2^63 (and
/// their lists): the import returns a clean error or a graph that verifies, never a panic.
#[test]
fn extreme_attribute_values_never_panic() {
    let extremes = [0, -1, 1, 1 << 31, i64::MAX, i64::MIN];
    let ops: &[(&str, &[&str], &[&str])] = &[
        (
            "Conv",
            &["x4", "w4", "b"],
            &["dilations", "group", "kernel_shape", "pads", "strides"],
        ),
        (
            "ConvTranspose",
            &["x4", "w4", "b"],
            &[
                "dilations",
                "group",
                "kernel_shape",
                "output_padding",
                "output_shape",
                "pads",
                "strides",
            ],
        ),
        (
            "MaxPool",
            &["x4"],
            &[
                "ceil_mode",
                "dilations",
                "kernel_shape",
                "pads",
                "storage_order",
                "strides",
            ],
        ),
        (
            "AveragePool",
            &["x4"],
            &[
                "ceil_mode",
                "count_include_pad",
                "dilations",
                "kernel_shape",
                "pads",
                "strides",
            ],
        ),
        ("Softmax", &["x4"], &["axis"]),
        ("LogSoftmax", &["x4"], &["axis"]),
        ("Concat", &["x4", "x4"], &["axis"]),
        ("Flatten", &["x4"], &["axis"]),
        ("Transpose", &["x4"], &["perm"]),
        ("Gemm", &["x2", "w2", "b"], &["transA", "transB", "broadcast"]),
        ("Add", &["x4", "b"], &["broadcast", "axis"]),
        ("Reshape", &["x4"], &["shape", "allowzero"]),
        ("Unsqueeze", &["x4"], &["axes"]),
        ("Pad", &["x4"], &["pads", "paddings"]),
        ("Dropout", &["x4"], &["is_test", "seed"]),
        (
            "BatchNormalization",
            &["x4", "b", "b", "b", "b"],
            &["spatial", "is_test", "training_mode"],
        ),
    ];
    let inits = || {
        vec![
            floats("w4", &[2, 2, 1, 1], vec![1.0; 4]),
            floats("x2", &[2, 2], vec![1.0; 4]),
            floats("w2", &[2, 2], vec![1.0; 4]),
            floats("b", &[2], vec![1.0; 2]),
        ]
    };
    let mut runs = 0;
    for opset in [1, 4, 6, 11, 13] {
        for (op, ins, attrs) in ops {
            for attr in *attrs {
                for &v in &extremes {
                    for list in [false, true] {
                        let a = if list {
                            let n = if *attr == "perm" || *attr == "shape" { 4 } else { 2 };
                            attr_ints(attr, &vec![v; n])
                        } else {
                            attr_i(attr, v)
                        };
                        let bytes = model(
                            opset,
                            vec![node(op, "n", ins, &["y"], vec![a])],
                            vec![value("x4", &[1, 2, 3, 3])],
                            &["y"],
                            inits(),
                        );
                        runs += 1;
                        if let Ok(m) = load_bytes(&bytes, None) {
                            m.graph
                                .verify()
                                .unwrap_or_else(|e| panic!("{op} {attr}={v}: {e}"));
                        }
                    }
                }
            }
        }
    }
    // float attributes at their extremes too
    for v in [f32::NAN, f32::INFINITY, -f32::INFINITY, f32::MAX, 0.0] {
        for (op, attr) in [
            ("LeakyRelu", "alpha"),
            ("Gemm", "alpha"),
            ("Gemm", "beta"),
            ("BatchNormalization", "epsilon"),
        ] {
            let ins: &[&str] = match op {
                "Gemm" => &["x2", "w2", "b"],
                "BatchNormalization" => &["x4", "b", "b", "b", "b"],
                _ => &["x4"],
            };
            let bytes = model(
                13,
                vec![node(op, "n", ins, &["y"], vec![attr_f(attr, v)])],
                vec![value("x4", &[1, 2, 3, 3])],
                &["y"],
                inits(),
            );
            if let Ok(m) = load_bytes(&bytes, None) {
                m.graph.verify().unwrap();
            }
            runs += 1;
        }
    }
    assert!(runs > 1000);
}

#[test]
fn bound_constants_are_checked() {
    let bytes = model(
        13,
        vec![node("Reshape", "r", &["x", "s"], &["y"], vec![])],
        vec![value("x", &[2, 3]), value("s", &[2])],
        &["y"],
        vec![],
    );
    let bound = |c: Const| std::collections::HashMap::from([("s".to_string(), c)]);
    let e = kiln_onnx::load_bytes_bound(&bytes, None, &bound(Const::i64(vec![5], vec![3, 2])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds 2 elements, not 5"), "{e}");
    let m = kiln_onnx::load_bytes_bound(&bytes, None, &bound(Const::i64(vec![2], vec![3, 2]))).unwrap();
    assert_eq!(m.graph.node(m.graph.outputs()[0]).ty.dims(), &[3, 2]);
    assert!(matches!(
        kiln_onnx::load_bytes_bound(&bytes, None, &bound(Const::i64(vec![1 << 40], vec![]))),
        Err(OnnxError::Input { .. })
    ));
}

#[test]
fn copies_of_constants_are_bounded_by_the_input_size() {
    // an Identity or Dropout alias of a constant shares its param: before, each alias that an
    // op read was materialized again, a copy per name
    let mut nodes = vec![node("ConstantOfShape", "cos", &["shape"], &["c0"], vec![])];
    let mut outs = Vec::new();
    for i in 1..=100 {
        let (c, y) = (format!("c{i}"), format!("y{i}"));
        nodes.push(node("Identity", "", &["c0"], &[&c], vec![]));
        nodes.push(node("Relu", "", &[&c], &[&y], vec![]));
        outs.push(y);
    }
    let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
    let bytes = model(11, nodes, vec![], &outs, vec![ints("shape", &[1 << 20])]);
    let m = load_bytes(&bytes, None).unwrap();
    assert_eq!(m.weights.len(), 1);
    // a chain of Unsqueeze nodes copies a 64 MiB fill each time: a 200-byte file may not make
    // the import hold more than 256 MiB + 16 bytes per byte of input
    let mut nodes = vec![node("ConstantOfShape", "cos", &["shape"], &["u0"], vec![])];
    for i in 1..=8 {
        nodes.push(node(
            "Unsqueeze",
            &format!("u{i}"),
            &[&format!("u{}", i - 1)],
            &[&format!("u{i}")],
            vec![attr_ints("axes", &[0])],
        ));
    }
    nodes.push(node("Relu", "r", &["u8"], &["y"], vec![]));
    let bytes = model(11, nodes, vec![], &["y"], vec![ints("shape", &[1 << 24])]);
    let e = err(&bytes);
    assert!(e.contains("node `u4`") || e.contains("`u4`"), "{e}");
    assert!(e.contains("256 MiB plus 16 per byte"), "{e}");
    // the allowance itself
    let mut r = Reader::new(None);
    assert_eq!(r.limit(), kiln_onnx::tensor::BASE_ALLOWANCE);
    r.charge(kiln_onnx::tensor::BASE_ALLOWANCE, "x").unwrap();
    assert!(r.charge(1, "x").is_err());
    r.allow_input(1);
    r.charge(16, "x").unwrap();
    assert!(r.charge(1, "x").is_err());
}

/// Small models with extreme dims and attributes (0, negative, 2^31, 2^63 − 1), the seeds of
/// the `onnx_reader` fuzz target's corpus next to the conformance models.
fn extreme_models() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let extremes = [0, -1, 1 << 31, (1 << 31) + 1, i64::MAX, i64::MIN];
    for &v in &extremes {
        out.push((format!("cos_{v}"), constant_of_shape(&[v], None)));
        out.push((format!("cos_2_{v}"), constant_of_shape(&[2, v], None)));
        let relu = |t: TensorProto| {
            model(
                13,
                vec![node("Relu", "r", &["w"], &["y"], vec![])],
                vec![],
                &["y"],
                vec![t],
            )
        };
        out.push((format!("init_{v}"), relu(floats("w", &[v], vec![1.0]))));
        out.push((
            format!("input_{v}"),
            model(
                13,
                vec![node("Relu", "r", &["x"], &["y"], vec![])],
                vec![value("x", &[1, v])],
                &["y"],
                vec![],
            ),
        ));
        out.push((
            format!("reshape_{v}"),
            model(
                13,
                vec![node("Reshape", "r", &["x", "s"], &["y"], vec![])],
                vec![value("x", &[2, 3])],
                &["y"],
                vec![ints("s", &[v, 6])],
            ),
        ));
        for (op, attr) in [
            ("Conv", "strides"),
            ("Conv", "dilations"),
            ("Conv", "pads"),
            ("Conv", "kernel_shape"),
            ("ConvTranspose", "strides"),
            ("ConvTranspose", "output_padding"),
            ("ConvTranspose", "output_shape"),
            ("MaxPool", "kernel_shape"),
            ("AveragePool", "pads"),
            ("Softmax", "axis"),
            ("Concat", "axis"),
            ("Flatten", "axis"),
            ("Transpose", "perm"),
            ("Unsqueeze", "axes"),
        ] {
            let n = if attr == "pads" || attr == "perm" { 4 } else { 2 };
            let mut attrs = vec![attr_ints(attr, &vec![v; n])];
            if op == "MaxPool" || op == "AveragePool" {
                attrs.push(attr_ints("kernel_shape", &[2, 2]));
                attrs.dedup_by(|a, b| a.name == b.name);
            }
            if op == "Softmax" || op == "Concat" || op == "Flatten" {
                attrs = vec![attr_i(attr, v)];
            }
            let ins: &[&str] = match op {
                "Conv" | "ConvTranspose" => &["x", "w"],
                "Concat" => &["x", "x"],
                _ => &["x"],
            };
            out.push((
                format!("{op}_{attr}_{v}"),
                model(
                    11,
                    vec![node(op, "n", ins, &["y"], attrs)],
                    vec![value("x", &[1, 2, 3, 3])],
                    &["y"],
                    vec![floats("w", &[2, 2, 2, 2], vec![0.5; 16])],
                ),
            ));
        }
    }
    out
}

#[test]
fn extreme_seed_models_are_clean_errors_or_valid_graphs() {
    let models = extreme_models();
    assert!(models.len() > 100);
    for (name, bytes) in models {
        if let Ok(m) = load_bytes(&bytes, None) {
            m.graph.verify().unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

/// `KILN_ONNX_SEEDS=fuzz/corpus/onnx_reader cargo test -p kiln-onnx --test hostile
/// write_fuzz_seeds -- --ignored` writes [`extreme_models`] there (paths relative to the
/// crate's folder, so `../../fuzz/corpus/onnx_reader` from the repository root's view).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = PathBuf::from(std::env::var("KILN_ONNX_SEEDS").expect("set KILN_ONNX_SEEDS"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in extreme_models() {
        std::fs::write(dir.join(format!("extreme_{name}.onnx")), bytes).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn the_model_path_itself_must_be_a_regular_file() {
    // before: `std::fs::read` of /dev/zero grew until memory ran out, of a FIFO blocked
    let e = within_a_minute(|| load("/dev/zero").unwrap_err().to_string());
    assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    let tmp = TempDir::new("modelpath");
    let e = load(&tmp.0).unwrap_err().to_string();
    assert!(e.contains("not a regular file"), "{e}");
    let fifo = tmp.0.join("model.onnx");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if made {
        let e = within_a_minute(move || load(&fifo).unwrap_err().to_string());
        assert!(e.contains("not a regular file"), "{e}");
    }
}

/// Found by the `onnx_reader` fuzz target (recipe mode, 2026-11-30): a MaxPool whose kernel is
/// within kiln's limits but huge (`[3, 2^31]` with SAME_LOWER padding over a width of 1) took
/// 21–88 s under the fuzzer, and a kernel of 2^29 + 1 with pads of 2^29 does not finish: kiln-ir's
/// check that no pooling window holds only padding (`Pool2d::geometry`, crates/kiln-ir/src/
/// geometry.rs) scans every window in the begin padding tap by tap, O(windows × kernel), up to
/// 2^57 steps. kiln-ir now tests each window in O(1) and only when the taps are wider apart
/// than the input, and refuses a pooling that would need more than 2^20 such tests.
#[test]
fn a_huge_pool_kernel_is_refused_or_accepted_quickly() {
    let fuzz_case = model(
        28,
        vec![node(
            "MaxPool",
            "n1",
            &["x"],
            &["y"],
            vec![
                AttributeProto {
                    name: "auto_pad".into(),
                    r#type: attribute_type::STRING,
                    s: Some(b"SAME_LOWER".to_vec()),
                    ..Default::default()
                },
                attr_i("ceil_mode", 1),
                attr_ints("kernel_shape", &[3, 1 << 31]),
            ],
        )],
        vec![value("x", &[1, 3, 3, 1])],
        &["y"],
        vec![],
    );
    let p = 1i64 << 29;
    let scan = model(
        13,
        vec![node(
            "MaxPool",
            "p",
            &["x"],
            &["y"],
            vec![
                attr_ints("kernel_shape", &[1, p + 1]),
                attr_ints("pads", &[0, p, 0, p]),
            ],
        )],
        vec![value("x", &[1, 1, 1, 1])],
        &["y"],
        vec![],
    );
    for bytes in [fuzz_case, scan] {
        // Ok or Err, but within a minute even in a debug build
        let _ = within_a_minute(move || load_bytes(&bytes, None).map(|m| m.graph.len()));
    }
}
