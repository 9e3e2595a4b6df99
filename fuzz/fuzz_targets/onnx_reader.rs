//! The ONNX importer (`kiln_onnx::load_bytes`) on every input twice:
//!
//! 1. the bytes as an `.onnx` file (seed the corpus with the conformance models, see
//!    docs/fuzzing.md): protobuf-level mutations;
//! 2. the bytes as a *recipe* for a small model built here with the crate's prost types: an
//!    opset, a graph input, a few initializers and up to six nodes of the operators kiln maps,
//!    whose dims and attributes are drawn mostly from extreme values (0, ±1, 2^31, 2^32,
//!    2^63 − 1, −2^63, …): the corner cases byte mutations of a real file rarely reach.
//!
//! Either way the import never panics, and it gives a clean error or a correct result: an
//! accepted model verifies, every node's type is within `kiln_ir::limits`, every param has a
//! weight of its exact shape, every file output maps to a graph output, and the reference
//! interpreter runs it (Ok or Err, no panic) when every value has at most 2^16 elements.
//! libFuzzer's `-malloc_limit_mb` (default: the RSS limit, 2 GiB) turns any runaway
//! allocation into a crash.
#![no_main]

use kiln::onnx::prost::Message;
use kiln::onnx::proto::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    let recipe = Recipe::new(data).model().encode_to_vec();
    if let Some(path) = std::env::var_os("ONNX_READER_DUMP") {
        // `ONNX_READER_DUMP=model.onnx onnx_reader crash-…` writes the recipe's model, to
        // turn a finding into a test
        std::fs::write(path, &recipe).expect("write the recipe's model");
    }
    check(&recipe);
});

fn check(bytes: &[u8]) {
    let file = ModelProto::decode(bytes).ok();
    let Ok(m) = kiln::onnx::load_bytes(bytes, None) else {
        return;
    };
    let g = &m.graph;
    g.verify().expect("an imported graph verifies");
    for n in g.petgraph().node_weights() {
        kiln::ir::limits::check_dims(n.ty.dims())
            .unwrap_or_else(|e| panic!("node `{}` is beyond the limits: {e}", n.name));
    }
    for p in g.params() {
        let node = g.node(p);
        let w = m
            .weights
            .get(&node.name)
            .unwrap_or_else(|| panic!("param `{}` has no weight", node.name));
        assert_eq!(w.dims(), node.ty.dims(), "weight `{}`", node.name);
    }
    let outputs = file
        .and_then(|f| f.graph)
        .map(|gr| gr.output.len())
        .expect("an accepted file decodes and has a graph");
    assert_eq!(m.outputs.len(), outputs, "one IR node per file output");
    for (o, ir) in &m.outputs {
        let id = g
            .find(ir)
            .unwrap_or_else(|| panic!("output `{o}` maps to no node"));
        assert!(g.outputs().contains(&id), "output `{o}` maps to a non-output");
    }
    let small = g.petgraph().node_weights().all(|n| n.ty.shape.numel() <= 1 << 16);
    if small && let Ok(inputs) = kiln::ir::init::random_inputs(g, 1) {
        // the interpreter may refuse (an Err) but must not panic
        let _ = kiln::interp::run::<f32>(g, &inputs, &m.weights);
    }
}

/// Extreme integers for dims and attributes, the first few also common small values.
const EXTREMES: [i64; 16] = [
    1,
    2,
    3,
    0,
    -1,
    4,
    -2,
    1 << 31,
    (1 << 31) + 1,
    1 << 32,
    i64::MAX,
    i64::MIN,
    1 << 16,
    (1 << 31) - 1,
    5,
    -(1 << 31),
];

const OPS: [(&str, &[&str]); 22] = [
    (
        "Conv",
        &[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ],
    ),
    (
        "ConvTranspose",
        &[
            "auto_pad",
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
        &[
            "auto_pad",
            "ceil_mode",
            "dilations",
            "kernel_shape",
            "pads",
            "strides",
        ],
    ),
    (
        "AveragePool",
        &[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "kernel_shape",
            "pads",
            "strides",
        ],
    ),
    ("GlobalAveragePool", &[]),
    ("Relu", &[]),
    ("LeakyRelu", &["alpha"]),
    ("Softmax", &["axis"]),
    ("LogSoftmax", &["axis"]),
    ("Gemm", &["alpha", "beta", "transA", "transB"]),
    ("MatMul", &[]),
    ("Add", &["broadcast", "axis"]),
    ("Mul", &["broadcast", "axis"]),
    ("Concat", &["axis"]),
    ("Flatten", &["axis"]),
    ("Transpose", &["perm"]),
    ("Reshape", &["shape", "allowzero"]),
    ("BatchNormalization", &["epsilon", "spatial", "is_test"]),
    ("Pad", &["pads", "mode"]),
    ("ConstantOfShape", &["value"]),
    ("Unsqueeze", &["axes"]),
    ("Identity", &[]),
];

struct Recipe<'a> {
    data: &'a [u8],
    at: usize,
}

impl Recipe<'_> {
    fn new(data: &[u8]) -> Recipe<'_> {
        Recipe { data, at: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }

    /// Mostly an extreme value; sometimes a raw 64-bit value from the input.
    fn int(&mut self) -> i64 {
        let b = self.byte();
        if b >= 0xf0 {
            let mut v = [0u8; 8];
            for x in &mut v {
                *x = self.byte();
            }
            i64::from_le_bytes(v)
        } else {
            EXTREMES[b as usize % EXTREMES.len()]
        }
    }

    /// A dim: small most of the time, so that some models get far enough to be accepted.
    fn dim(&mut self) -> i64 {
        if self.byte() < 0xc0 {
            1 + self.below(4) as i64
        } else {
            self.int()
        }
    }

    fn ints(&mut self, max: usize) -> Vec<i64> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.int()).collect()
    }

    fn model(&mut self) -> ModelProto {
        let opset = [1, 5, 6, 7, 9, 11, 13, 18, 28, 0, -1, 29][self.below(12)];
        let rank = [4, 4, 4, 2, 1, 0, 3, 9][self.below(8)];
        let x_dims: Vec<i64> = (0..rank).map(|_| self.dim()).collect();
        let mut values = vec!["x".to_string()];
        let mut inits = Vec::new();
        for i in 0..self.below(4) {
            let name = format!("c{i}");
            let t = if self.byte() & 1 == 0 {
                // integer constant: shapes, pads, axes
                let v = self.ints(9);
                TensorProto {
                    name: name.clone(),
                    dims: vec![v.len() as i64],
                    data_type: data_type::INT64,
                    int64_data: v,
                    ..Default::default()
                }
            } else {
                // a float tensor whose declared dims may not match its data
                let dims: Vec<i64> = (0..self.below(5)).map(|_| self.dim()).collect();
                let n = dims.iter().try_fold(1i64, |p, &d| p.checked_mul(d)).unwrap_or(-1);
                let len = if (0..=256).contains(&n) && self.byte() < 0xe0 {
                    n as usize
                } else {
                    self.below(8)
                };
                TensorProto {
                    name: name.clone(),
                    dims,
                    data_type: data_type::FLOAT,
                    float_data: (0..len).map(|k| k as f32 * 0.25 - 1.0).collect(),
                    ..Default::default()
                }
            };
            inits.push(t);
            values.push(name);
        }
        let mut nodes = Vec::new();
        for k in 0..1 + self.below(6) {
            let (op, attrs) = OPS[self.below(OPS.len())];
            let n_in = 1 + self.below(3);
            let input: Vec<String> = (0..n_in)
                .map(|_| values[self.below(values.len())].clone())
                .collect();
            let mut attribute = Vec::new();
            for &a in attrs {
                if self.byte() < 0x80 {
                    continue;
                }
                attribute.push(match a {
                    "auto_pad" | "mode" => AttributeProto {
                        name: a.into(),
                        r#type: attribute_type::STRING,
                        s: Some(
                            [
                                "NOTSET",
                                "SAME_UPPER",
                                "SAME_LOWER",
                                "VALID",
                                "constant",
                                "reflect",
                                "",
                            ][self.below(7)]
                            .as_bytes()
                            .to_vec(),
                        ),
                        ..Default::default()
                    },
                    "alpha" | "beta" | "epsilon" => AttributeProto {
                        name: a.into(),
                        r#type: attribute_type::FLOAT,
                        f: Some([0.0, 1.0, -1.0, f32::NAN, f32::INFINITY, f32::MAX, 1e-30][self.below(7)]),
                        ..Default::default()
                    },
                    "value" => AttributeProto {
                        name: a.into(),
                        r#type: attribute_type::TENSOR,
                        t: Some(TensorProto {
                            dims: (0..self.below(3)).map(|_| self.dim()).collect(),
                            data_type: [data_type::FLOAT, data_type::INT64][self.below(2)],
                            float_data: vec![0.5],
                            int64_data: vec![7],
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    _ if self.byte() & 1 == 0 => AttributeProto {
                        name: a.into(),
                        r#type: attribute_type::INT,
                        i: Some(self.int()),
                        ..Default::default()
                    },
                    _ => AttributeProto {
                        name: a.into(),
                        r#type: attribute_type::INTS,
                        ints: self.ints(9),
                        ..Default::default()
                    },
                });
            }
            let out = format!("v{k}");
            let mut output = vec![out.clone()];
            if self.byte() >= 0xf8 {
                // a second writer of an existing value: must be refused
                output[0] = values[self.below(values.len())].clone();
            }
            nodes.push(NodeProto {
                input,
                output,
                name: format!("n{k}"),
                op_type: op.into(),
                attribute,
                ..Default::default()
            });
            values.push(out);
        }
        let value_info = |name: &str, dims: &[i64]| ValueInfoProto {
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
        };
        let last = values.last().cloned().unwrap_or_default();
        let mut output = vec![value_info(&last, &[])];
        if self.byte() >= 0xe0 {
            // the same value twice among the outputs, and an earlier one
            output.push(value_info(&last, &[]));
            output.push(value_info(&values[self.below(values.len())], &[]));
        }
        ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(GraphProto {
                node: nodes,
                name: "fuzz".into(),
                initializer: inits,
                input: vec![value_info("x", &x_dims)],
                output,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
