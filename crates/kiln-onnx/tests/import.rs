//! The importer on models built here with the prost messages: every unsupported node listed
//! at once, clear errors for broken files, the folding of Pad, symbolic batch dims, names.
//! Expected values are computed by hand or by a second, independent graph.

use kiln_ir::{Op, Padding, Tensor, Value};
use kiln_onnx::proto::*;
use kiln_onnx::{OnnxError, load_bytes};
use prost::Message;
use std::collections::HashMap;

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i: Some(i),
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

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn attr_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: Some(s.as_bytes().to_vec()),
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

fn dim(v: i64) -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimValue(v)),
    }
}

fn sym(p: &str) -> Dimension {
    Dimension {
        value: Some(DimensionValue::DimParam(p.into())),
    }
}

fn value(name: &str, dims: Vec<Dimension>) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto { dim: dims }),
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

fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: &[&str],
    inits: Vec<TensorProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "test".into(),
            initializer: inits,
            input: inputs,
            output: outputs.iter().map(|o| value(o, vec![])).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn x4(name: &str, d: [i64; 4]) -> ValueInfoProto {
    value(name, d.iter().map(|&v| dim(v)).collect())
}

fn run(m: &kiln_onnx::OnnxModel, x: Tensor<f32>) -> Tensor<f32> {
    let feeds = HashMap::from([(m.inputs[0].1.clone(), Value::F(x))]);
    let out = kiln_interp::run::<f32>(&m.graph, &feeds, &m.weights).expect("interpreter runs");
    let mut jit = kiln_runtime::compile(&m.graph, &Default::default()).expect("JIT compiles");
    jit.set_weights(&m.weights).expect("weights fit");
    let j = jit.run(&feeds).expect("JIT runs");
    let (a, b) = (out[0].1.as_f().unwrap(), j[0].1.as_f().unwrap());
    for (p, q) in a.data().iter().zip(b.data()) {
        assert!(
            (p - q).abs() <= 1e-5 + 1e-5 * p.abs(),
            "interpreter {p} vs JIT {q}"
        );
    }
    a.clone()
}

#[test]
fn every_unsupported_node_is_listed_at_once() {
    let bytes = model(
        13,
        vec![
            node("Relu", "r", &["x"], &["a"], vec![]),
            node("Selu", "selu_1", &["a"], &["b"], vec![]),
            node("Relu", "after_selu", &["b"], &["c"], vec![]),
            node(
                "MaxPool",
                "pool",
                &["c"],
                &["d"],
                vec![attr_ints("kernel_shape", &[2, 2]), attr_i("storage_order", 0)],
            ),
            node(
                "Conv",
                "",
                &["x", "w"],
                &["e"],
                vec![attr_s("auto_pad", "NOTSET"), attr_i("foo", 1)],
            ),
            node("Relu", "custom", &["e"], &["f"], vec![]),
            node("LSTM", "lstm", &["f"], &["g"], vec![]),
        ],
        vec![x4("x", [1, 2, 4, 4])],
        &["d", "g"],
        vec![floats("w", &[2, 2, 1, 1], vec![1.0; 4])],
    );
    let mut bytes_other_domain = ModelProto::decode(bytes.as_slice()).unwrap();
    bytes_other_domain.graph.as_mut().unwrap().node[5].domain = "com.example".into();
    let err = load_bytes(&bytes_other_domain.encode_to_vec(), None).unwrap_err();
    let OnnxError::Unsupported(list) = &err else {
        panic!("expected the unsupported list, got {err}");
    };
    let got: Vec<(&str, &str, i64)> = list
        .iter()
        .map(|u| (u.node.as_str(), u.op_type.as_str(), u.opset))
        .collect();
    // the nodes after Selu read a poisoned value and are not reported; the others all are
    assert_eq!(
        got,
        [
            ("selu_1", "Selu", 13),
            ("-> e", "Conv", 13),
            ("custom", "Relu", 13),
            ("lstm", "LSTM", 13)
        ]
    );
    let text = err.to_string();
    assert!(text.starts_with("4 unsupported nodes:"), "{text}");
    assert!(text.contains("operator `Selu` is not supported"), "{text}");
    assert!(text.contains("attribute `foo` is not supported"), "{text}");
    assert!(text.contains("domain `com.example`"), "{text}");
}

#[test]
fn broken_files_are_errors_not_panics() {
    let good = model(
        13,
        vec![node(
            "Conv",
            "c",
            &["x", "w", "b"],
            &["y"],
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        )],
        vec![x4("x", [1, 2, 4, 4])],
        &["y"],
        vec![
            floats("w", &[3, 2, 3, 3], vec![0.5; 54]),
            floats("b", &[3], vec![1.0, 2.0, 3.0]),
        ],
    );
    assert!(load_bytes(&good, None).is_ok());
    // every truncation either decodes to something the importer refuses, or is a decode error
    for len in 0..good.len() {
        assert!(
            load_bytes(&good[..len], None).is_err(),
            "a {len}-byte prefix was accepted"
        );
    }
    let e = load_bytes(b"\x08\x07\x12\xff\xff", None).unwrap_err().to_string();
    assert!(e.starts_with("not a valid ONNX model"), "{e}");
    let e = load_bytes(b"graph g { }", None).unwrap_err().to_string();
    assert!(
        e.starts_with("not a valid ONNX model") || e.starts_with("invalid ONNX model"),
        "{e}"
    );
}

#[test]
fn missing_initializer_and_bad_inputs_are_named() {
    let bytes = model(
        13,
        vec![node("Conv", "conv1", &["x", "conv1.weight"], &["y"], vec![])],
        vec![x4("x", [1, 2, 4, 4])],
        &["y"],
        vec![],
    );
    let e = load_bytes(&bytes, None).unwrap_err().to_string();
    assert_eq!(
        e,
        "node `conv1` (Conv): input `conv1.weight` is not produced by an earlier node, an initializer or a graph input"
    );
    let relu = || vec![node("Relu", "r", &["x"], &["y"], vec![])];
    let e = load_bytes(
        &model(
            13,
            relu(),
            vec![value("x", vec![dim(1), sym("C")])],
            &["y"],
            vec![],
        ),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("graph input `x`: dimension 1 is symbolic (`C`)"),
        "{e}"
    );
    // a symbolic batch dim becomes 1
    let m = load_bytes(
        &model(
            13,
            relu(),
            vec![value("x", vec![sym("N"), dim(3)])],
            &["y"],
            vec![],
        ),
        None,
    )
    .unwrap();
    assert_eq!(m.graph.node(m.graph.find("x").unwrap()).ty.dims(), &[1, 3]);
    // a weight of the wrong rank for a 2-D convolution
    let e = load_bytes(
        &model(
            13,
            vec![node("Conv", "c", &["x", "w"], &["y"], vec![])],
            vec![x4("x", [1, 2, 4, 4])],
            &["y"],
            vec![floats("w", &[2, 2, 3], vec![0.0; 12])],
        ),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("the weight must have rank 4"), "{e}");
    let e = load_bytes(&model(13, relu(), vec![], &["nope"], vec![]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("graph output `nope`") || e.contains("`x`"), "{e}");
}

#[test]
fn onnx_names_become_valid_node_names() {
    let bytes = model(
        13,
        vec![
            node(
                "Relu",
                "/relu/Relu",
                &["input.1"],
                &["/relu/Relu_output_0"],
                vec![],
            ),
            node("Sigmoid", "", &["/relu/Relu_output_0"], &["0"], vec![]),
        ],
        vec![value("input.1", vec![dim(2), dim(3)])],
        &["0"],
        vec![],
    );
    let m = load_bytes(&bytes, None).unwrap();
    assert_eq!(m.inputs, [("input.1".to_string(), "input.1".to_string())]);
    assert_eq!(m.outputs, [("0".to_string(), "_0".to_string())]);
    assert!(m.graph.find("_relu_Relu_output_0").is_some());
}

/// A zero Pad before a Conv is the same as the Conv's own padding: compared on a second graph
/// that pads with the Conv's `pads` attribute.
#[test]
fn zero_pad_folds_into_the_following_conv() {
    let w: Vec<f32> = (0..2 * 2 * 3 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    let inits = || {
        vec![
            floats("w", &[2, 2, 3, 3], w.clone()),
            ints("pads", &[0, 0, 1, 2, 0, 0, 3, 1]),
        ]
    };
    let padded = model(
        13,
        vec![
            node(
                "Pad",
                "pad",
                &["x", "pads"],
                &["p"],
                vec![attr_s("mode", "constant")],
            ),
            node("Conv", "conv", &["p", "w"], &["y"], vec![]),
        ],
        vec![x4("x", [1, 2, 5, 5])],
        &["y"],
        inits(),
    );
    let attr = model(
        13,
        vec![node(
            "Conv",
            "conv",
            &["x", "w"],
            &["y"],
            vec![attr_ints("pads", &[1, 2, 3, 1])],
        )],
        vec![x4("x", [1, 2, 5, 5])],
        &["y"],
        inits(),
    );
    let (a, b) = (
        load_bytes(&padded, None).unwrap(),
        load_bytes(&attr, None).unwrap(),
    );
    let conv = a.graph.find("y").unwrap();
    assert!(matches!(&a.graph.node(conv).op, Op::Conv2d(c) if c.padding == Padding::Explicit([1, 2, 3, 1])));
    let x = Tensor::new([1, 2, 5, 5], (0..50).map(|i| i as f32 / 7.0 - 3.0).collect()).unwrap();
    assert_eq!(run(&a, x.clone()), run(&b, x));
    // before a max pool, padded zeros could win: refused with the reason
    let maxpool = model(
        13,
        vec![
            node("Pad", "pad", &["x", "pads"], &["p"], vec![]),
            node(
                "MaxPool",
                "mp",
                &["p"],
                &["y"],
                vec![attr_ints("kernel_shape", &[2, 2])],
            ),
        ],
        vec![x4("x", [1, 2, 5, 5])],
        &["y"],
        inits(),
    );
    let e = load_bytes(&maxpool, None).unwrap_err().to_string();
    assert!(
        e.contains("node `mp` (MaxPool, opset 13): it reads a zero Pad"),
        "{e}"
    );
}

/// Before opset 13, Softmax normalizes over all axes from `axis` on (the input coerced to 2-D).
#[test]
fn softmax_before_opset_13_coerces_to_2d() {
    let bytes = |opset| {
        model(
            opset,
            vec![node("Softmax", "s", &["x"], &["y"], vec![attr_i("axis", 1)])],
            vec![x4("x", [2, 2, 1, 2])],
            &["y"],
            vec![],
        )
    };
    let x = Tensor::new([2, 2, 1, 2], vec![0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let old = run(&load_bytes(&bytes(11), None).unwrap(), x.clone());
    // opset 11: one softmax over the 4 values of each batch row
    let e: Vec<f32> = (0..4).map(|i| (i as f32).exp()).collect();
    let s: f32 = e.iter().sum();
    let want: Vec<f32> = e.iter().map(|v| v / s).chain([0.25; 4]).collect();
    for (g, w) in old.data().iter().zip(&want) {
        assert!((g - w).abs() < 1e-6, "{:?} vs {want:?}", old.data());
    }
    // opset 13: over axis 1 only (pairs 0,2 and 1,3 of the first row)
    let new = run(&load_bytes(&bytes(13), None).unwrap(), x);
    let p = 1.0 / (1.0 + 2f32.exp());
    for (g, w) in new.data()[..4].iter().zip([p, p, 1.0 - p, 1.0 - p]) {
        assert!((g - w).abs() < 1e-6, "{:?}", new.data());
    }
}

/// Gemm with a constant B: a Dense layer whose weight and bias are the file's B and C under
/// Transpose/Scale ops (alpha, beta, transB), so the weights are the file's tensors only.
#[test]
fn gemm_folds_alpha_beta_and_transposes_into_dense() {
    let bytes = model(
        13,
        vec![node(
            "Gemm",
            "fc",
            &["x", "b", "c"],
            &["y"],
            vec![
                AttributeProto {
                    name: "alpha".into(),
                    r#type: attribute_type::FLOAT,
                    f: Some(2.0),
                    ..Default::default()
                },
                AttributeProto {
                    name: "beta".into(),
                    r#type: attribute_type::FLOAT,
                    f: Some(-1.0),
                    ..Default::default()
                },
            ],
        )],
        vec![value("x", vec![dim(1), dim(2)])],
        &["y"],
        // B [K=2, N=3] (not transposed), C [3]
        vec![
            floats("b", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            floats("c", &[3], vec![1.0, 1.0, 1.0]),
        ],
    );
    let m = load_bytes(&bytes, None).unwrap();
    assert!(matches!(m.graph.node(m.graph.find("y").unwrap()).op, Op::Dense));
    let mut names: Vec<&String> = m.weights.keys().collect();
    names.sort();
    assert_eq!(names, ["b", "c"]);
    let y = run(&m, Tensor::new([1, 2], vec![1.0, 10.0]).unwrap());
    // 2·[1·1 + 10·4, 1·2 + 10·5, 1·3 + 10·6] − 1
    assert_eq!(y.data(), &[81.0, 103.0, 125.0]);
}

/// ConstantOfShape and Unsqueeze of a constant fold at import; Sum is a chain of adds; an
/// unread Dropout mask is not refused, a read one is.
#[test]
fn constant_of_shape_unsqueeze_sum_and_unread_masks() {
    let fill = TensorProto {
        dims: vec![1],
        data_type: data_type::FLOAT,
        float_data: vec![0.5],
        ..Default::default()
    };
    let fill_attr = AttributeProto {
        name: "value".into(),
        r#type: attribute_type::TENSOR,
        t: Some(fill),
        ..Default::default()
    };
    let bytes = |mask_out: &[&str]| {
        model(
            11,
            vec![
                node(
                    "ConstantOfShape",
                    "cos",
                    &["shape"],
                    &["c"],
                    vec![fill_attr.clone()],
                ),
                node("Unsqueeze", "u", &["c"], &["cu"], vec![attr_ints("axes", &[0])]),
                node("Dropout", "d", &["x"], &["xd", "mask"], vec![]),
                node("Sum", "s", &["xd", "cu", "cu"], &["y"], vec![]),
            ],
            vec![value("x", vec![dim(2), dim(3)])],
            mask_out,
            vec![ints("shape", &[3])],
        )
    };
    let m = load_bytes(&bytes(&["y"]), None).unwrap();
    let y = run(
        &m,
        Tensor::new([2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    assert_eq!(y.data(), &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    let cu = m.graph.find("cu").unwrap();
    assert_eq!(m.graph.node(cu).ty.dims(), &[1, 3]);
    let e = load_bytes(&bytes(&["y", "mask"]), None).unwrap_err().to_string();
    assert!(e.contains("node `d` (Dropout, opset 11): the mask output"), "{e}");
}

fn op_of<'g>(m: &'g kiln_onnx::OnnxModel, name: &str) -> &'g Op {
    &m.graph
        .node(m.graph.find(name).unwrap_or_else(|| panic!("no node {name}")))
        .op
}

/// ReduceMean over H and W is global average pooling (then Flatten without keepdims), at
/// opset 13 (axes attribute) and 18 (axes input); over other axes it is `reduce_mean`.
#[test]
fn reduce_mean_over_space_is_global_pooling() {
    let x: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let xt = || Tensor::new([1, 2, 3, 4], x.clone()).unwrap();
    let plane_means = [5.5, 17.5];
    for (opset, keepdims) in [(13, 1), (13, 0), (18, 1), (18, 0)] {
        let (ins, attrs, inits) = if opset < 18 {
            (vec!["x"], vec![attr_ints("axes", &[-1, 2])], vec![])
        } else {
            (vec!["x", "axes"], vec![], vec![ints("axes", &[3, -2])])
        };
        let mut attrs = attrs;
        attrs.push(attr_i("keepdims", keepdims));
        let m = load_bytes(
            &model(
                opset,
                vec![node("ReduceMean", "rm", &ins, &["y"], attrs)],
                vec![x4("x", [1, 2, 3, 4])],
                &["y"],
                inits,
            ),
            None,
        )
        .unwrap();
        let y = run(&m, xt());
        if keepdims == 1 {
            assert!(
                matches!(op_of(&m, "y"), Op::GlobalPool(_)),
                "{:?}",
                op_of(&m, "y")
            );
            assert_eq!(y.dims(), &[1, 2, 1, 1]);
        } else {
            assert!(matches!(op_of(&m, "y"), Op::Flatten { axis: 1 }));
            assert_eq!(y.dims(), &[1, 2]);
        }
        assert_eq!(y.data(), &plane_means, "opset {opset}, keepdims {keepdims}");
    }
    // over the channels: reduce_mean, kept
    let m = load_bytes(
        &model(
            13,
            vec![node(
                "ReduceMean",
                "rm",
                &["x"],
                &["y"],
                vec![attr_ints("axes", &[1])],
            )],
            vec![x4("x", [1, 2, 3, 4])],
            &["y"],
            vec![],
        ),
        None,
    )
    .unwrap();
    assert_eq!(
        op_of(&m, "y"),
        &Op::ReduceMean {
            axes: vec![1],
            keepdims: true
        }
    );
    let y = run(&m, xt());
    let want: Vec<f32> = (0..12).map(|i| (x[i] + x[i + 12]) / 2.0).collect();
    assert_eq!(y.data(), &want[..]);
}

/// Gather of a scalar index on a tensor is a Slice and a Reshape that drops the axis (as
/// Inception's `x[:, 0]`); a Split makes a Slice for each output that is read only.
#[test]
fn gather_and_split_on_tensors_are_slices() {
    let idx = TensorProto {
        name: "i".into(),
        dims: vec![],
        data_type: data_type::INT64,
        int64_data: vec![-2],
        ..Default::default()
    };
    let m = load_bytes(
        &model(
            13,
            vec![
                node("Gather", "g", &["x", "i"], &["c"], vec![attr_i("axis", 1)]),
                node(
                    "Split",
                    "s",
                    &["x", "sizes"],
                    &["a", "unread", "b"],
                    vec![attr_i("axis", 1)],
                ),
                node("Concat", "cat", &["b", "a"], &["ba"], vec![attr_i("axis", 1)]),
                node("Flatten", "f", &["c"], &["cf"], vec![attr_i("axis", 1)]),
                node("Flatten", "f2", &["ba"], &["baf"], vec![attr_i("axis", 1)]),
                node("Concat", "all", &["cf", "baf"], &["y"], vec![attr_i("axis", 1)]),
            ],
            vec![x4("x", [1, 3, 1, 2])],
            &["y"],
            vec![idx, ints("sizes", &[1, 1, 1])],
        ),
        None,
    )
    .unwrap();
    let slices = m
        .graph
        .topo_order()
        .into_iter()
        .filter(|&id| matches!(m.graph.node(id).op, Op::Slice { .. }))
        .count();
    // one for the gather, two for the split's read outputs
    assert_eq!(slices, 3);
    assert_eq!(m.graph.node(m.graph.find("c").unwrap()).ty.dims(), &[1, 1, 2]);
    let y = run(
        &m,
        Tensor::new([1, 3, 1, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
    );
    // c = x[:, 1] = [3, 4]; ba = [x[:, 2], x[:, 0]] = [5, 6, 1, 2]
    assert_eq!(y.data(), &[3.0, 4.0, 5.0, 6.0, 1.0, 2.0]);
}

/// Clip's bounds: attributes before opset 11, constant inputs after (a missing one is
/// infinite); HardSwish is `x·hard_sigmoid(x)`.
#[test]
fn clip_bounds_and_hard_swish() {
    let clip6 = |opset: i64| {
        let (ins, attrs, inits): (&[&str], _, _) = if opset < 11 {
            (&["x"], vec![attr_f("min", 0.0)], vec![])
        } else {
            (&["x", "lo"], vec![], vec![floats("lo", &[], vec![0.0])])
        };
        load_bytes(
            &model(
                opset,
                vec![node("Clip", "c", ins, &["y"], attrs)],
                vec![x4("x", [1, 1, 1, 3])],
                &["y"],
                inits,
            ),
            None,
        )
        .unwrap()
    };
    for opset in [6, 13] {
        let m = clip6(opset);
        assert_eq!(
            op_of(&m, "y"),
            &Op::Activation(kiln_ir::Activation::Clip {
                min: 0.0,
                max: f32::INFINITY
            })
        );
        let y = run(&m, Tensor::new([1, 1, 1, 3], vec![-1.0, 0.5, 1e30]).unwrap());
        assert_eq!(y.data(), &[0.0, 0.5, 1e30]);
    }
    let m = load_bytes(
        &model(
            14,
            vec![node("HardSwish", "h", &["x"], &["y"], vec![])],
            vec![x4("x", [1, 1, 1, 4])],
            &["y"],
            vec![],
        ),
        None,
    )
    .unwrap();
    let x = [-4.0f32, -1.0, 0.5, 3.5];
    let y = run(&m, Tensor::new([1, 1, 1, 4], x.to_vec()).unwrap());
    for (g, &v) in y.data().iter().zip(&x) {
        let want = v * (v / 6.0 + 0.5).clamp(0.0, 1.0);
        assert!((g - want).abs() < 1e-6, "{g} vs {want}");
    }
}

/// Only the file's initializers are trainable params: a `Constant` node's value is a buffer.
#[test]
fn only_initializers_are_trainable() {
    let value_attr = AttributeProto {
        name: "value".into(),
        r#type: attribute_type::TENSOR,
        t: Some(floats("", &[1], vec![2.0])),
        ..Default::default()
    };
    let m = load_bytes(
        &model(
            13,
            vec![
                node("Constant", "k", &[], &["two"], vec![value_attr]),
                node("Mul", "m", &["x", "two"], &["xm"], vec![]),
                node("Add", "a", &["xm", "w"], &["y"], vec![]),
            ],
            vec![x4("x", [1, 1, 1, 2])],
            &["y"],
            vec![floats("w", &[2], vec![1.0, 2.0])],
        ),
        None,
    )
    .unwrap();
    assert!(op_of(&m, "w").is_trainable_param());
    assert!(matches!(op_of(&m, "two"), Op::Param { trainable: false, .. }));
    let y = run(&m, Tensor::new([1, 1, 1, 2], vec![3.0, 4.0]).unwrap());
    assert_eq!(y.data(), &[7.0, 10.0]);
}

/// `x.view(x.size(0), -1)` as the TorchScript exporter writes it (Shape → Gather → Unsqueeze
/// → Concat with a constant → Reshape), and a Cast/Squeeze/Slice on the way: folded to a
/// constant shape at import.
#[test]
fn shape_arithmetic_folds_at_import() {
    let scalar = |name: &str, v: i64| TensorProto {
        name: name.into(),
        dims: vec![],
        data_type: data_type::INT64,
        int64_data: vec![v],
        ..Default::default()
    };
    let m = load_bytes(
        &model(
            13,
            vec![
                node("Shape", "s", &["x"], &["shape"], vec![]),
                node("Gather", "g", &["shape", "zero"], &["n"], vec![attr_i("axis", 0)]),
                node("Unsqueeze", "u", &["n", "axes"], &["n1"], vec![]),
                node("Slice", "sl", &["shape", "one", "big"], &["chw"], vec![]),
                node("Cast", "c", &["chw"], &["chw_f"], vec![attr_i("to", 1)]),
                node("Cast", "c2", &["chw_f"], &["chw_i"], vec![attr_i("to", 7)]),
                node("Mul", "m", &["n", "minus_one"], &["neg_n"], vec![]),
                node("Squeeze", "sq", &["n1", "axes"], &["n0"], vec![]),
                node(
                    "Concat",
                    "cat",
                    &["n1", "minus"],
                    &["target"],
                    vec![attr_i("axis", 0)],
                ),
                node("Reshape", "r", &["x", "target"], &["y"], vec![]),
            ],
            vec![x4("x", [2, 3, 1, 2])],
            &["y"],
            vec![
                scalar("zero", 0),
                ints("axes", &[0]),
                ints("one", &[1]),
                ints("big", &[i64::MAX]),
                scalar("minus_one", -1),
                ints("minus", &[-1]),
            ],
        ),
        None,
    )
    .unwrap();
    assert_eq!(op_of(&m, "y"), &Op::Reshape { shape: vec![2, -1] });
    let y = run(
        &m,
        Tensor::new([2, 3, 1, 2], (0..12).map(|v| v as f32).collect()).unwrap(),
    );
    assert_eq!(y.dims(), &[2, 6]);
}

/// The operators mapped for real networks, with extreme attribute and constant-input values:
/// an import or a clear error, never a panic (overflowing sums, huge or negative axes, steps
/// of i64::MIN, NaN bounds).
#[test]
fn extreme_values_of_the_newer_operators_are_errors_not_panics() {
    let big = [
        i64::MIN,
        i64::MIN + 1,
        -(1 << 31),
        -5,
        -1,
        0,
        1,
        2,
        5,
        1 << 31,
        i64::MAX,
    ];
    let mut models: Vec<Vec<u8>> = Vec::new();
    let one = |op: &str, ins: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>, opset: i64| {
        model(
            opset,
            vec![node(op, "n", ins, &["y", "y2"], attrs)],
            vec![x4("x", [1, 2, 3, 4])],
            &["y"],
            inits,
        )
    };
    for &v in &big {
        for opset in [11, 13, 18] {
            models.push(one(
                "Split",
                &["x", "s"],
                vec![attr_i("axis", v)],
                vec![ints("s", &[v, 1])],
                opset,
            ));
            models.push(one(
                "Split",
                &["x"],
                vec![attr_i("num_outputs", v)],
                vec![],
                opset,
            ));
            models.push(one(
                "Split",
                &["x"],
                vec![attr_ints("split", &[v, i64::MAX])],
                vec![],
                opset,
            ));
            models.push(one(
                "ReduceMean",
                &["x", "a"],
                vec![attr_ints("axes", &[v])],
                vec![ints("a", &[v, 2])],
                opset,
            ));
            models.push(one(
                "Squeeze",
                &["x", "a"],
                vec![attr_ints("axes", &[v])],
                vec![ints("a", &[v])],
                opset,
            ));
        }
        models.push(one(
            "Gather",
            &["x", "i"],
            vec![attr_i("axis", v)],
            vec![ints("i", &[v, 0])],
            13,
        ));
        models.push(one(
            "Gather",
            &["c", "i"],
            vec![attr_i("axis", 0)],
            vec![ints("c", &[1, 2]), ints("i", &[v])],
            13,
        ));
        for (s, e, st) in [
            (v, i64::MAX, 1),
            (0, v, -1),
            (v, v, v),
            (i64::MIN, i64::MAX, i64::MIN),
        ] {
            models.push(one(
                "Slice",
                &["x", "s", "e", "a", "t"],
                vec![],
                vec![
                    ints("s", &[s]),
                    ints("e", &[e]),
                    ints("a", &[v.clamp(-4, 3)]),
                    ints("t", &[st]),
                ],
                13,
            ));
            models.push(one(
                "Slice",
                &["c", "s", "e", "a", "t"],
                vec![],
                vec![
                    ints("c", &[1, 2, 3]),
                    ints("s", &[s]),
                    ints("e", &[e]),
                    ints("a", &[v]),
                    ints("t", &[st]),
                ],
                13,
            ));
        }
        models.push(one(
            "Shape",
            &["x"],
            vec![attr_i("start", v), attr_i("end", -v.saturating_abs())],
            vec![],
            15,
        ));
        models.push(one("LRN", &["x"], vec![attr_i("size", v)], vec![], 13));
        models.push(one(
            "LayerNormalization",
            &["x", "sc"],
            vec![attr_i("axis", v)],
            vec![floats("sc", &[4], vec![1.0; 4])],
            17,
        ));
        models.push(one("Cast", &["x"], vec![attr_i("to", v)], vec![], 13));
        models.push(one(
            "Mul",
            &["c", "d"],
            vec![],
            vec![ints("c", &[v, 2]), ints("d", &[i64::MAX])],
            13,
        ));
        models.push(one(
            "Div",
            &["c", "d"],
            vec![],
            vec![ints("c", &[v]), ints("d", &[v.signum()])],
            13,
        ));
        models.push(one(
            "Concat",
            &["c", "d"],
            vec![attr_i("axis", v)],
            vec![ints("c", &[v]), ints("d", &[1, 2])],
            13,
        ));
    }
    for f in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, f32::MAX] {
        models.push(one(
            "Clip",
            &["x"],
            vec![attr_f("min", f), attr_f("max", -f)],
            vec![],
            6,
        ));
        models.push(one(
            "Clip",
            &["x", "lo"],
            vec![],
            vec![floats("lo", &[], vec![f])],
            13,
        ));
        models.push(one(
            "HardSigmoid",
            &["x"],
            vec![attr_f("alpha", f), attr_f("beta", f)],
            vec![],
            13,
        ));
        models.push(one(
            "LRN",
            &["x"],
            vec![
                attr_i("size", 3),
                attr_f("alpha", f),
                attr_f("beta", f),
                attr_f("bias", f),
            ],
            vec![],
            13,
        ));
        models.push(one(
            "LayerNormalization",
            &["x", "sc"],
            vec![attr_f("epsilon", f)],
            vec![floats("sc", &[4], vec![1.0; 4])],
            17,
        ));
        models.push(one(
            "BatchNormalization",
            &["x", "g", "b", "m", "v"],
            vec![
                attr_i("training_mode", 1),
                attr_f("momentum", f),
                attr_f("epsilon", f),
            ],
            ["g", "b", "m", "v"]
                .iter()
                .map(|n| floats(n, &[2], vec![1.0; 2]))
                .collect(),
            15,
        ));
        models.push(one(
            "Gemm",
            &["x2", "b"],
            vec![attr_f("alpha", f)],
            vec![floats("b", &[2, 2], vec![1.0; 4])],
            13,
        ));
    }
    models.push(one(
        "Gelu",
        &["x"],
        vec![attr_s("approximate", "fast")],
        vec![],
        20,
    ));
    let mut accepted = 0;
    for m in &models {
        // an Ok model must verify; either way no panic
        if let Ok(m) = load_bytes(m, None) {
            m.graph.verify().unwrap();
            accepted += 1;
        }
    }
    // both sides are exercised: the values include ordinary ones
    assert!(
        accepted > 20 && accepted < models.len() / 2,
        "{accepted} of {}",
        models.len()
    );
}
