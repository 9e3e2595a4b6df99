//! `kiln_onnx::export`: a graph written as ONNX and read back by the importer computes what
//! the original computes, on the reference interpreter, for every zoo model and for a graph
//! per op kind; what has no ONNX equivalent is an error naming the node.

use kiln_ir::init::{default_weights, random_inputs};
use kiln_ir::{Graph, Tensor, Value, text};
use kiln_onnx::export::{ExportError, to_model};
use kiln_onnx::proto::ModelProto;
use std::collections::HashMap;
use std::path::PathBuf;

fn parse(src: &str) -> Graph {
    text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"))
}

/// Which engine runs the original and the imported graph.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Interp,
    /// The JIT on one thread (it equals the interpreter: crates/kiln's tests): for the zoo
    /// models the interpreter takes minutes on in a test build.
    Jit,
}

fn run(
    engine: Engine,
    graph: &Graph,
    inputs: &HashMap<String, Value<f32>>,
    weights: &HashMap<String, Tensor<f32>>,
) -> Vec<(String, Value<f32>)> {
    let text = || text::print(graph);
    match engine {
        Engine::Interp => {
            kiln_interp::run::<f32>(graph, inputs, weights).unwrap_or_else(|e| panic!("{e}\n{}", text()))
        }
        Engine::Jit => {
            let options = kiln_jit::JitOptions {
                threads: 1,
                ..Default::default()
            };
            let mut m = kiln_runtime::compile(graph, &options).unwrap_or_else(|e| panic!("{e}\n{}", text()));
            m.set_weights(weights).unwrap();
            m.run(inputs).unwrap_or_else(|e| panic!("{e}\n{}", text()))
        }
    }
}

/// Exports `graph` with seeded weights, imports the bytes, runs both graphs on the same
/// seeded inputs in the interpreter and compares every output; returns the model's opset.
fn round_trip(graph: &Graph, seed: u64) -> i64 {
    round_trip_on(Engine::Interp, graph, seed)
}

fn round_trip_on(engine: Engine, graph: &Graph, seed: u64) -> i64 {
    let weights = default_weights(graph, seed).unwrap();
    let bytes = kiln_onnx::export(graph, &weights)
        .unwrap_or_else(|e| panic!("export failed: {e}\n{}", text::print(graph)));
    let m = kiln_onnx::load_bytes(&bytes, None)
        .unwrap_or_else(|e| panic!("import of the export failed: {e}\n{}", text::print(graph)));
    // every input and output keeps its node's name
    let names = |ids: Vec<kiln_ir::NodeId>| -> Vec<String> {
        ids.iter().map(|&i| graph.node(i).name.clone()).collect()
    };
    let file_inputs: Vec<String> = m.inputs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(file_inputs, names(graph.graph_inputs()));
    let file_outputs: Vec<String> = m.outputs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(file_outputs, names(graph.outputs().to_vec()));

    let inputs = random_inputs(graph, seed ^ 0x5eed).unwrap();
    let want = run(engine, graph, &inputs, &weights);
    let fed: HashMap<String, Value<f32>> = m
        .inputs
        .iter()
        .map(|(file, node)| (node.clone(), inputs[file].clone()))
        .collect();
    let got = run(engine, &m.graph, &fed, &m.weights);
    let got: HashMap<&str, &Tensor<f32>> = got.iter().map(|(n, v)| (n.as_str(), v.as_f().unwrap())).collect();
    for (name, w) in &want {
        let node = &m.outputs.iter().find(|(f, _)| f == name).unwrap().1;
        let (w, g) = (w.as_f().unwrap(), got[node.as_str()]);
        assert_eq!(w.dims(), g.dims(), "output `{name}`");
        for (i, (a, b)) in w.data().iter().zip(g.data()).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "output `{name}` element {i}: original {a}, exported and imported {b}\n{}",
                text::print(graph)
            );
        }
    }
    let model = <ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
    model.opset_import[0].version
}

fn unsupported(graph: &Graph) -> String {
    let weights = default_weights(graph, 1).unwrap();
    match kiln_onnx::export(graph, &weights) {
        Err(e @ ExportError::Unsupported(_)) => e.to_string(),
        other => panic!("expected an unsupported node, got {other:?}"),
    }
}

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models")
}

/// The zoo models, parsed from examples/models.
fn zoo() -> Vec<(PathBuf, Graph)> {
    let mut models = Vec::new();
    for entry in std::fs::read_dir(models_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("kiln") {
            let graph = parse(&std::fs::read_to_string(&path).unwrap());
            models.push((path, graph));
        }
    }
    assert!(models.len() >= 8, "only {} zoo models found", models.len());
    models
}

/// Every zoo model: the export, imported, computes what the model computes. The interpreter
/// runs the models of up to 300 MFLOP (seconds in a test build); the others (AlexNet,
/// ResNet-18, VGG-16: minutes) run on the JIT, which equals the interpreter, and on the
/// interpreter in `every_zoo_model_round_trips_on_the_interpreter` (ignored: minutes).
#[test]
fn every_zoo_model_round_trips() {
    for (path, graph) in zoo() {
        let flops = kiln_ir::summary::summarize(&graph).total_flops;
        let engine = if flops <= 300_000_000 {
            Engine::Interp
        } else {
            Engine::Jit
        };
        assert_eq!(round_trip_on(engine, &graph, 7), 18, "{}", path.display());
    }
}

#[test]
#[ignore = "minutes: VGG-16 and ResNet-18 on the interpreter in a test build"]
fn every_zoo_model_round_trips_on_the_interpreter() {
    for (path, graph) in zoo() {
        assert_eq!(round_trip(&graph, 7), 18, "{}", path.display());
    }
}

/// One small graph per op kind the exporter maps (attributes away from their defaults).
const OPS: &[&str] = &[
    // grouped, dilated, strided convolution with uneven explicit padding and a bias
    "graph g { input %x: f32[2, 4, 9, 8]
      param %w: f32[6, 2, 3, 2]
      param %b: f32[6]
      %y = conv2d(%x, %w, %b) {stride=[2, 1], dilation=[2, 3], padding=[1, 0, 2, 3], groups=2}
      output %y }",
    // same padding both ways, valid, and a fused activation epilogue
    "graph g { input %x: f32[1, 3, 7, 6]
      param %w: f32[4, 3, 2, 3]
      %a = conv2d(%x, %w) {stride=[2, 2], padding=same_upper}
      %b = conv2d(%x, %w) {stride=[2, 2], padding=same_lower, activation=leaky_relu, alpha=0.2}
      %c = conv2d(%x, %w) {padding=valid, activation=relu}
      output %a
      output %b
      output %c }",
    "graph g { input %x: f32[1, 3, 8, 8]
      param %w: f32[3, 1, 3, 3]
      %y = conv2d(%x, %w) {padding=[1, 1, 1, 1], groups=3, activation=tanh}
      output %y }",
    "graph g { input %x: f32[2, 4, 5, 4]
      param %w: f32[4, 3, 3, 2]
      param %b: f32[6]
      %y = conv_transpose2d(%x, %w, %b) {stride=[2, 3], dilation=[1, 2], padding=[1, 0, 2, 1], output_padding=[1, 2], groups=2}
      output %y }",
    "graph g { input %x: f32[1, 2, 9, 10]
      %a = max_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true}
      %b = max_pool2d(%x) {kernel=[2, 2], stride=[1, 2], dilation=[2, 3]}
      %c = max_pool2d(%x) {kernel=[3, 3], stride=[2, 2], padding=same_upper}
      output %a
      output %b
      output %c }",
    "graph g { input %x: f32[1, 2, 9, 10]
      %a = avg_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true, count_include_pad=true}
      %b = avg_pool2d(%x) {kernel=[3, 3], stride=[2, 3], padding=[1, 1, 1, 1], count_include_pad=false}
      %c = avg_pool2d(%x) {kernel=[2, 3], stride=[3, 2], padding=[1, 1, 0, 1], ceil_mode=true}
      output %a
      output %b
      output %c }",
    // ceil mode adding a window (past the end padding), and adding one on one axis only
    "graph g { input %x: f32[1, 2, 9, 10]
      %a = max_pool2d(%x) {kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 1], ceil_mode=true}
      %b = avg_pool2d(%x) {kernel=[2, 3], stride=[2, 3], padding=[1, 1, 0, 0], ceil_mode=true, count_include_pad=true}
      %c = avg_pool2d(%x) {kernel=[2, 3], stride=[2, 3], padding=[1, 1, 0, 0], ceil_mode=true, count_include_pad=false}
      output %a
      output %b
      output %c }",
    "graph g { input %x: f32[1, 3, 9, 10]
      %a = sum_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true}
      %b = sum_pool2d(%x) {kernel=[2, 2], stride=[3, 3], dilation=[2, 1]}
      output %a
      output %b }",
    "graph g { input %x: f32[2, 3, 5, 7]
      %a = global_avg_pool(%x)
      %b = global_max_pool(%x)
      output %a
      output %b }",
    "graph g { input %x: f32[1, 2, 25, 12]
      %a = adaptive_avg_pool2d(%x) {output=[4, 3]}
      %b = adaptive_max_pool2d(%x) {output=[2, 1]}
      %c = adaptive_avg_pool2d(%x) {output=[25, 12]}
      output %a
      output %b
      output %c }",
    "graph g { input %x: f32[3, 7]
      %a = relu(%x)
      %b = leaky_relu(%a) {alpha=0.3}
      %c = sigmoid(%x)
      %d = tanh(%c)
      %e = add(%b, %d)
      output %e }",
    "graph g { input %x: f32[2, 3, 4]
      %a = softmax(%x) {axis=1}
      %b = log_softmax(%x) {axis=-1}
      output %a
      output %b }",
    "graph g { input %x: f32[4, 6]
      param %w: f32[5, 6]
      param %b: f32[5]
      param %v: f32[3, 5]
      %y = dense(%x, %w, %b)
      %z = dense(%y, %v)
      output %z }",
    "graph g { input %x: f32[2, 3, 4]
      param %w: f32[4, 5]
      input %u: f32[2, 5, 2]
      %y = matmul(%x, %w)
      %z = matmul(%y, %u)
      output %z }",
    "graph g { input %x: f32[2, 3, 4, 5]
      %a = flatten(%x) {axis=2}
      %b = reshape(%x) {shape=[0, -1, 10]}
      %c = transpose(%b) {perm=[2, 0, 1]}
      output %a
      output %c }",
    "graph g { input %x: f32[2, 3, 4]
      param %p: f32[3, 1]
      param %q: f32[4]
      %a = add(%x, %p)
      %b = sub(%a, %q)
      %c = mul(%b, %x)
      %d = div(%c, %p)
      output %d }",
    "graph g { input %x: f32[1, 2, 3, 3]
      input %y: f32[1, 4, 3, 3]
      %c = concat(%x, %y, %x) {axis=1}
      %d = dropout(%c) {ratio=0.25}
      output %d }",
    "graph g { input %x: f32[2, 3, 4, 4]
      param %s: f32[3]
      param %b: f32[3]
      buffer %m: f32[3]
      buffer %v: f32[3]
      %y = batch_norm(%x, %s, %b, %m, %v) {epsilon=0.001}
      output %y }",
    "graph g { input %x: f32[3, 7]
      %a = clip(%x) {min=-0.5, max=0.25}
      %b = clip(%x) {max=0.1}
      %c = hard_sigmoid(%x) {alpha=0.3, beta=0.4}
      %d = erf(%x)
      %e = add(%a, %b)
      %f = mul(%c, %d)
      %g = add(%e, %f)
      output %g }",
    "graph g { input %x: f32[2, 5, 3, 4]
      %y = lrn(%x) {size=3, alpha=0.01, beta=0.75, bias=2.0}
      %m = reduce_mean(%y) {axes=[1, 3]}
      %n = reduce_mean(%x) {axes=[2, 3], keepdims=false}
      output %m
      output %n }",
    // forward ops that the importer composes: scale (Gemm's alpha, Gelu) and slice (Split,
    // Gather)
    "graph g { input %x: f32[2, 6, 3]
      %a = scale(%x) {factor=-1.5}
      %b = slice(%a) {axis=1, start=1, end=4}
      %c = slice(%x) {axis=-1, start=0, end=2}
      output %b
      output %c }",
];

#[test]
fn a_graph_per_op_kind_round_trips() {
    for src in OPS {
        assert_eq!(round_trip(&parse(src), 3), 18, "{src}");
    }
}

#[test]
fn a_dilated_average_pool_needs_opset_19() {
    let g = parse(
        "graph g { input %x: f32[1, 2, 9, 10]
          %y = avg_pool2d(%x) {kernel=[2, 2], stride=[1, 2], dilation=[2, 3], count_include_pad=true}
          output %y }",
    );
    assert_eq!(round_trip(&g, 5), 19);
}

#[test]
fn names_shapes_and_initializers_are_the_graphs() {
    let g = parse(
        "graph tiny { input %image: f32[2, 3]
          param %fc.weight: f32[4, 3]
          param %fc.bias: f32[4]
          %r.shape = dense(%image, %fc.weight, %fc.bias)
          %r = reshape(%r.shape) {shape=[8]}
          output %r }",
    );
    let w = default_weights(&g, 2).unwrap();
    let m = to_model(&g, &w).unwrap();
    let graph = m.graph.unwrap();
    assert_eq!(graph.name, "tiny");
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!(
        (m.opset_import[0].domain.as_str(), m.opset_import[0].version),
        ("", 18)
    );
    let dims = |v: &kiln_onnx::proto::ValueInfoProto| -> Vec<i64> {
        v.r#type
            .as_ref()
            .unwrap()
            .tensor_type
            .as_ref()
            .unwrap()
            .shape
            .as_ref()
            .unwrap()
            .dim
            .iter()
            .map(|d| match d.value {
                Some(kiln_onnx::proto::DimensionValue::DimValue(v)) => v,
                _ => -1,
            })
            .collect()
    };
    assert_eq!(graph.input.len(), 1);
    assert_eq!(
        (graph.input[0].name.as_str(), dims(&graph.input[0])),
        ("image", vec![2, 3])
    );
    assert_eq!(graph.output.len(), 1);
    assert_eq!(
        (graph.output[0].name.as_str(), dims(&graph.output[0])),
        ("r", vec![8])
    );
    // the reshape's shape constant (`r.shape`) does not take the name of the node `r.shape`
    let inits: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(inits, ["fc.weight", "fc.bias", "r.shape_2"]);
    let nodes: Vec<(&str, &str)> = graph
        .node
        .iter()
        .map(|n| (n.op_type.as_str(), n.name.as_str()))
        .collect();
    assert_eq!(nodes, [("Gemm", "r.shape"), ("Reshape", "r")]);
    assert_eq!(graph.node[1].input, ["r.shape", "r.shape_2"]);
    let wt = &graph.initializer[0];
    assert_eq!(wt.dims, [4, 3]);
    let back: Vec<f32> = wt
        .raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(back, w["fc.weight"].data());
}

#[test]
fn nodes_without_an_onnx_equivalent_are_listed_by_name() {
    let e = unsupported(&parse(
        "graph g { input %x: f32[2, 3]
          input %t: f32[2, 3]
          %p = relu(%x)
          %loss = mse_loss(%p, %t)
          %g = relu_grad(%p, %t)
          output %loss
          output %g }",
    ));
    assert!(e.contains("2 nodes"), "{e}");
    assert!(
        e.contains("node `loss` (mse_loss)") && e.contains("training"),
        "{e}"
    );
    assert!(
        e.contains("node `g` (relu_grad)") && e.contains("training-only"),
        "{e}"
    );
    let e = unsupported(&parse(
        "graph g { input %x: f32[1, 2, 5, 5]
          %a = adaptive_avg_pool2d(%x) {output=[3, 3]}
          output %a }",
    ));
    assert!(
        e.contains("node `a` (adaptive_avg_pool2d)") && e.contains("5 to 3"),
        "{e}"
    );
    let e = unsupported(&parse(
        "graph g { input %x: f32[1, 2, 5, 5]
          %p = im2col(%x) {kernel=[3, 3]}
          output %p }",
    ));
    assert!(
        e.contains("node `p` (im2col)") && e.contains("optimization passes"),
        "{e}"
    );
}

#[test]
fn ceil_mode_is_written_only_where_it_adds_a_window() {
    // ONNX's shape inference lacks the rule that drops a window starting in the end padding
    let g = parse(
        "graph g { input %x: f32[1, 2, 9, 10]
          %drop = max_pool2d(%x) {kernel=[3, 2], stride=[2, 2], padding=[1, 0, 1, 1], ceil_mode=true}
          %mixed = max_pool2d(%x) {kernel=[2, 2], stride=[2, 2], padding=[0, 0, 0, 1], ceil_mode=true}
          output %drop
          output %mixed }",
    );
    assert_eq!(g.node(g.find("drop").unwrap()).ty.dims(), [1, 2, 5, 5]);
    assert_eq!(g.node(g.find("mixed").unwrap()).ty.dims(), [1, 2, 5, 5]);
    let m = to_model(&g, &HashMap::new()).unwrap();
    let attrs = |i: usize| -> Vec<(String, Vec<i64>)> {
        m.graph.as_ref().unwrap().node[i]
            .attribute
            .iter()
            .filter(|a| a.name == "pads" || a.name == "ceil_mode")
            .map(|a| (a.name.clone(), a.i.map_or(a.ints.clone(), |i| vec![i])))
            .collect()
    };
    // the dropped window: floor mode gives the same, with the same padding
    assert_eq!(
        attrs(0),
        [
            ("pads".to_string(), vec![1, 0, 1, 1]),
            ("ceil_mode".to_string(), vec![0])
        ]
    );
    // ceil mode adds a row; on the columns, where it drops the window, the end padding ends
    // where the last window does, so ONNX's rule gives 5 there too
    assert_eq!(
        attrs(1),
        [
            ("pads".to_string(), vec![0, 0, 0, 0]),
            ("ceil_mode".to_string(), vec![1])
        ]
    );
    round_trip(&g, 9);
}

#[test]
fn rsqrt_is_written_as_add_sqrt_reciprocal() {
    // an op the importer makes for LayerNormalization; ONNX Runtime runs the result
    // (benches/export_vs_ort.py), kiln's importer has no Sqrt or Reciprocal to read it back
    let g = parse(
        "graph g { input %x: f32[2, 3]
          %r = rsqrt(%x) {epsilon=0.001}
          output %r }",
    );
    let m = to_model(&g, &HashMap::new()).unwrap();
    let graph = m.graph.unwrap();
    let nodes: Vec<(&str, Vec<String>, Vec<String>)> = graph
        .node
        .iter()
        .map(|n| (n.op_type.as_str(), n.input.clone(), n.output.clone()))
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        nodes,
        [
            ("Add", s(&["x", "r.epsilon"]), s(&["r.shifted"])),
            ("Sqrt", s(&["r.shifted"]), s(&["r.sqrt"])),
            ("Reciprocal", s(&["r.sqrt"]), s(&["r"])),
        ]
    );
    let eps = &graph.initializer[0];
    assert_eq!(
        (eps.name.as_str(), eps.raw_data.as_slice()),
        ("r.epsilon", &0.001f32.to_le_bytes()[..])
    );
}

#[test]
fn the_written_bytes_are_the_models_encoding() {
    // `export` writes the weights straight from the tensors; prost decodes that to the
    // `ModelProto` that `to_model` builds, and the length is announced before writing
    for src in [OPS[0], OPS[6], OPS[16]] {
        let g = parse(src);
        let w = default_weights(&g, 4).unwrap();
        let bytes = kiln_onnx::export(&g, &w).unwrap();
        let e = kiln_onnx::export::Export::new(&g, &w).unwrap();
        assert_eq!(e.len(), bytes.len() as u64);
        let model = to_model(&g, &w).unwrap();
        assert_eq!(<ModelProto as prost::Message>::decode(&bytes[..]).unwrap(), model);
        assert_eq!(
            <ModelProto as prost::Message>::encode_to_vec(&model).len(),
            bytes.len()
        );
    }
}

#[test]
fn missing_or_misshapen_weights_are_errors() {
    let g = parse(
        "graph g { input %x: f32[2, 3]
          param %w: f32[4, 3]
          %y = dense(%x, %w)
          output %y }",
    );
    let e = kiln_onnx::export(&g, &HashMap::new()).unwrap_err().to_string();
    assert_eq!(e, "weight `w`: missing from the weights");
    let mut w = HashMap::new();
    w.insert("w".to_string(), Tensor::new(vec![3, 4], vec![0.0; 12]).unwrap());
    let e = kiln_onnx::export(&g, &w).unwrap_err().to_string();
    assert!(
        e.contains("weight `w`: shape [3, 4]") && e.contains("[4, 3]"),
        "{e}"
    );
}
