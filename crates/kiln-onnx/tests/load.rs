//! `kiln_onnx::load` reads a model file's large tensors straight from the file into the
//! weights (the rest of the file decoded without them): it must give exactly what decoding
//! the whole file gives (`load_bytes`), the same model or the same error, for well-formed and
//! broken files alike.

use kiln_ir::text;
use kiln_onnx::prost::Message;
use kiln_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, attribute_type,
    data_type,
};
use std::path::PathBuf;

fn dir(tag: &str) -> PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln-onnx-load-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `load` of `bytes` written to a file, and `load_bytes` of the same bytes, as text: the
/// graph, every weight bit for bit, or the error.
fn both(bytes: &[u8], tag: &str) -> (String, String) {
    let d = dir(tag);
    let path = d.join("model.onnx");
    std::fs::write(&path, bytes).unwrap();
    let show = |r: kiln_onnx::Result<kiln_onnx::OnnxModel>| match r {
        Ok(m) => {
            let mut w: Vec<_> = m
                .weights
                .iter()
                .map(|(k, t)| {
                    (
                        k.clone(),
                        t.dims().to_vec(),
                        t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    )
                })
                .collect();
            w.sort();
            format!("{}\n{w:?}\n{:?} {:?}", text::print(&m.graph), m.inputs, m.outputs)
        }
        Err(e) => format!("error: {e}"),
    };
    let from_file = show(kiln_onnx::load(&path));
    let from_bytes = show(kiln_onnx::load_bytes(bytes, Some(&d)));
    std::fs::remove_dir_all(&d).unwrap();
    (from_file, from_bytes)
}

fn floats(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let n: i64 = dims.iter().product();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT,
        raw_data: (0..n as u32)
            .flat_map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) as f32 / 4e9).to_le_bytes())
            .collect(),
        ..TensorProto::default()
    }
}

/// Conv (a large weight, a small bias) → Add of a large `Constant` → Gemm over a large weight,
/// plus a large INT64 shape-like initializer nobody reads as a tensor.
fn model(weight: TensorProto) -> ModelProto {
    let node = |op: &str, ins: &[&str], out: &str, attribute: Vec<AttributeProto>| NodeProto {
        op_type: op.into(),
        name: out.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        attribute,
        ..NodeProto::default()
    };
    let constant = AttributeProto {
        name: "value".into(),
        r#type: attribute_type::TENSOR,
        t: Some(floats("c", &[1, 8, 6, 6], 7)),
        ..AttributeProto::default()
    };
    let value = |name: &str, dims: &[i64]| kiln_onnx::proto::ValueInfoProto {
        name: name.into(),
        r#type: Some(kiln_onnx::proto::TypeProto {
            tensor_type: Some(kiln_onnx::proto::TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(kiln_onnx::proto::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| kiln_onnx::proto::Dimension {
                            value: Some(kiln_onnx::proto::DimensionValue::DimValue(d)),
                        })
                        .collect(),
                }),
            }),
        }),
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(GraphProto {
            name: "g".into(),
            input: vec![value("x", &[1, 3, 8, 8])],
            output: vec![value("y", &[1, 40])],
            initializer: vec![
                weight,
                floats("b", &[8], 2),
                floats("fc", &[288, 40], 3),
                TensorProto {
                    name: "ids".into(),
                    dims: vec![600],
                    data_type: data_type::INT64,
                    raw_data: (0..600i64).flat_map(|i| i.to_le_bytes()).collect(),
                    ..TensorProto::default()
                },
            ],
            node: vec![
                node("Conv", &["x", "w", "b"], "h", vec![]),
                node("Constant", &[], "c", vec![constant]),
                node("Add", &["h", "c"], "s", vec![]),
                node("Flatten", &["s"], "f", vec![]),
                node("Gemm", &["f", "fc"], "y", vec![]),
            ],
            ..GraphProto::default()
        }),
        ..ModelProto::default()
    }
}

#[test]
fn a_file_loads_as_its_bytes_do() {
    let m = model(floats("w", &[8, 3, 3, 3], 1));
    let (file, bytes) = both(&m.encode_to_vec(), "same");
    assert!(!file.starts_with("error"), "{file}");
    assert_eq!(file, bytes);
}

#[test]
fn a_broken_file_fails_as_its_bytes_do() {
    // raw data of a large tensor that does not match its dims (checked without reading it)
    let mut w = floats("w", &[8, 3, 3, 3], 1);
    w.dims = vec![8, 3, 3, 4];
    let (file, bytes) = both(&model(w).encode_to_vec(), "dims");
    assert!(
        file.contains("tensor `w`") && file.contains("need 288 elements, the data holds 216"),
        "{file}"
    );
    assert_eq!(file, bytes);
    // not a whole number of elements
    let mut w = floats("w", &[8, 3, 3, 3], 1);
    w.raw_data.push(0);
    let (file, bytes) = both(&model(w).encode_to_vec(), "odd");
    assert!(file.contains("not a whole number of 4-byte elements"), "{file}");
    assert_eq!(file, bytes);
    // truncated anywhere: inside the large tensor, and in the graph after it
    let full = model(floats("w", &[8, 3, 3, 3], 1)).encode_to_vec();
    for cut in [full.len() / 8, full.len() / 2, full.len() - 3] {
        let (file, bytes) = both(&full[..cut], &format!("cut{cut}"));
        assert!(file.starts_with("error: not a valid ONNX model"), "{file}");
        assert_eq!(file, bytes);
    }
}

#[test]
fn kilns_own_field_in_a_file_is_ignored() {
    let mut w = floats("w", &[8, 3, 3, 3], 1);
    w.kiln_raw_data_at = Some(0);
    let (file, bytes) = both(&model(w).encode_to_vec(), "own");
    assert!(!file.starts_with("error"), "{file}");
    assert_eq!(file, bytes);
    // in a small tensor that the skim copies as it is, and in one with no raw data
    let mut b = floats("b", &[8], 2);
    b.kiln_raw_data_at = Some(1);
    let mut m = model(floats("w", &[8, 3, 3, 3], 1));
    m.graph.as_mut().unwrap().initializer[1] = b;
    let (file, bytes) = both(&m.encode_to_vec(), "own-small");
    assert!(!file.starts_with("error"), "{file}");
    assert_eq!(file, bytes);
}

#[test]
fn an_exported_zoo_model_loads_from_its_file_as_from_its_bytes() {
    let src = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/mobilenet_block.kiln"),
    )
    .unwrap();
    let g = text::parse(&src).unwrap();
    let w = kiln_ir::init::default_weights(&g, 5).unwrap();
    let bytes = kiln_onnx::export(&g, &w).unwrap();
    let (file, from_bytes) = both(&bytes, "zoo");
    assert!(!file.starts_with("error"), "{file}");
    assert_eq!(file, from_bytes);
}

/// Bytes of the model changed here and there (a byte set to a few telling values, a cut):
/// whatever the file becomes, `load` and `load_bytes` agree.
#[test]
fn damaged_files_load_or_fail_as_their_bytes_do() {
    let full = model(floats("w", &[8, 3, 3, 3], 1)).encode_to_vec();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for k in 0..150 {
        let mut b = full.clone();
        let at = (next() % b.len() as u64) as usize;
        match k % 3 {
            0 => b[at] = [0x00, 0x7f, 0x80, 0xff, 0x0a, 0x4a][(next() % 6) as usize],
            1 => b[at] ^= 1 << (next() % 8),
            _ => b.truncate(at),
        }
        let (file, bytes) = both(&b, &format!("damaged{k}"));
        assert_eq!(file, bytes, "mutation {k} at byte {at}");
    }
}
