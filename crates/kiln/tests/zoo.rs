//! The model zoo: the committed `.kiln` files agree with the builders, the parameter totals are
//! the published torchvision counts, and the FLOP totals follow docs/summary.md.

use kiln::ir::summary::{Summary, summarize};
use kiln::ir::{Graph, Op, text};
use kiln::zoo;
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/models")
}

fn build(name: &str) -> Graph {
    let (_, f) = zoo::all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no zoo model {name}"));
    f().unwrap_or_else(|e| panic!("{name} does not build: {e}"))
}

fn summary(name: &str) -> Summary {
    summarize(&build(name))
}

const REGENERATE: &str = "regenerate with `cargo run --example write_zoo`";

#[test]
fn every_model_file_parses_and_equals_its_builder() {
    for (name, f) in zoo::all() {
        let graph = f().unwrap_or_else(|e| panic!("{name} does not build: {e}"));
        let path = models_dir().join(format!("{name}.kiln"));
        let src = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}; {REGENERATE}", path.display()));
        let parsed = text::parse_named(&src, &path.display().to_string())
            .unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
        assert!(
            parsed == graph,
            "{} differs from zoo::{name}(); {REGENERATE}",
            path.display()
        );
        assert_eq!(
            src,
            zoo::model_file(name, &graph),
            "{}: {REGENERATE}",
            path.display()
        );
    }
}

#[test]
fn every_kiln_file_in_examples_models_parses() {
    let zoo_names: Vec<&str> = zoo::all().iter().map(|(n, _)| *n).collect();
    let mut seen = 0;
    for entry in std::fs::read_dir(models_dir()).expect("examples/models exists") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("kiln") {
            continue;
        }
        let src = std::fs::read_to_string(&path).unwrap();
        text::parse_named(&src, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        seen += usize::from(zoo_names.contains(&stem));
    }
    assert_eq!(seen, zoo_names.len(), "a zoo model has no file; {REGENERATE}");
}

#[test]
fn each_model_has_one_input_named_input_and_one_output_named_output() {
    for (name, f) in zoo::all() {
        let g = f().unwrap();
        let inputs: Vec<&str> = g
            .graph_inputs()
            .iter()
            .map(|&i| g.node(i).name.as_str())
            .collect();
        let outputs: Vec<&str> = g.outputs().iter().map(|&o| g.node(o).name.as_str()).collect();
        assert_eq!(inputs, ["input"], "{name}");
        assert_eq!(outputs, ["output"], "{name}");
    }
}

#[test]
fn weights_are_named_as_in_pytorch_state_dicts() {
    let kind = |g: &Graph, n: &str| g.find(n).map(|id| g.node(id).op.name());
    let r = build("resnet18");
    for n in [
        "conv1.weight",
        "bn1.weight",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.bias",
        "layer4.1.bn2.weight",
        "fc.weight",
        "fc.bias",
    ] {
        assert_eq!(kind(&r, n), Some("param"), "resnet18 {n}");
    }
    for n in ["layer1.0.bn1.running_mean", "layer3.1.bn2.running_var"] {
        assert_eq!(kind(&r, n), Some("buffer"), "resnet18 {n}");
    }
    assert_eq!(kind(&r, "conv1.bias"), None, "ResNet convs have no bias");
    let a = build("alexnet");
    for n in [
        "features.0.weight",
        "features.10.bias",
        "classifier.1.weight",
        "classifier.6.weight",
    ] {
        assert_eq!(kind(&a, n), Some("param"), "alexnet {n}");
    }
    let v = build("vgg16");
    for n in [
        "features.0.weight",
        "features.28.weight",
        "classifier.0.weight",
        "classifier.6.bias",
    ] {
        assert_eq!(kind(&v, n), Some("param"), "vgg16 {n}");
    }
    let l = build("lenet5");
    for n in ["conv1.weight", "conv2.bias", "fc1.weight", "fc3.weight"] {
        assert_eq!(kind(&l, n), Some("param"), "lenet5 {n}");
    }
}

#[test]
fn params_equal_the_published_torchvision_counts() {
    assert_eq!(summary("lenet5").total_params, 61_706);
    assert_eq!(summary("alexnet").total_params, 61_100_840);
    assert_eq!(summary("vgg16").total_params, 138_357_544);
    assert_eq!(summary("resnet18").total_params, 11_689_512);
    // ResNet-18's 20 batch norms hold running mean and variance: 2·(64 + 4·64 + 4·128 + 4·256
    // + 4·512 + 128 + 256 + 512) = 2·4800 (each BN has C channels; downsample BNs included).
    assert_eq!(summary("resnet18").total_buffers, 9_600);
    assert_eq!(summary("vgg16").total_buffers, 0);
}

#[test]
fn params_of_the_blocks_by_hand() {
    // Inception (3a): (C_in·K² + 1)·C_out per conv.
    let inception = (192 + 1) * 64
        + (192 + 1) * 96
        + (96 * 9 + 1) * 128
        + (192 + 1) * 16
        + (16 * 25 + 1) * 32
        + (192 + 1) * 32;
    assert_eq!(summary("inception_block").total_params, inception);
    assert_eq!(
        build("inception_block")
            .node(build("inception_block").outputs()[0])
            .ty
            .dims(),
        [1, 256, 28, 28]
    );
    // MobileNet: depthwise C·9 + BN 2C, pointwise C·C_out + BN 2·C_out; no biases.
    let block = |c: u64, o: u64| c * 9 + 2 * c + c * o + 2 * o;
    assert_eq!(
        summary("mobilenet_block").total_params,
        block(32, 64) + block(64, 128) + block(128, 128)
    );
    // Digits CNN: conv 1→16 3×3, conv 16→32 3×3, dense 32·4·4 → 10.
    assert_eq!(
        summary("digits_cnn").total_params,
        (9 + 1) * 16 + (16 * 9 + 1) * 32 + (32 * 16 + 1) * 10
    );
    assert_eq!(summary("digits_cnn").total_params, 9_930);
    // SPP: conv 3→32, conv 32→64, dense 64·(1 + 4 + 16) → 10.
    assert_eq!(
        summary("spp_net").total_params,
        (27 + 1) * 32 + (32 * 9 + 1) * 64 + (64 * 21 + 1) * 10
    );
}

#[test]
fn lenet5_flops_by_hand() {
    // Batch N = 1. Conv with bias: 2·C_in·K²·H_out·W_out·C_out; pooling K²·H_out·W_out·C;
    // ReLU H·W·C; dense with bias 2·I·O; flatten 0.
    let c_in = 1;
    let conv1 = 2 * c_in * 25 * 28 * 28 * 6; // 235,200
    let relu1 = 28 * 28 * 6; // 4,704
    let pool1 = 4 * 14 * 14 * 6; // 4,704
    let conv2 = 2 * 6 * 25 * 10 * 10 * 16; // 480,000
    let relu2 = 10 * 10 * 16; // 1,600
    let pool2 = 4 * 5 * 5 * 16; // 1,600
    let flatten = 0;
    let fc1 = 2 * 400 * 120; // 96,000
    let relu3 = 120;
    let fc2 = 2 * 120 * 84; // 20,160
    let relu4 = 84;
    let fc3 = 2 * 84 * 10; // 1,680
    let total = conv1 + relu1 + pool1 + conv2 + relu2 + pool2 + flatten + fc1 + relu3 + fc2 + relu4 + fc3;
    assert_eq!(total, 845_852);
    let s = summary("lenet5");
    assert_eq!(s.total_flops, total);
    let rows: Vec<u64> = s.rows.iter().map(|r| r.flops).collect();
    assert_eq!(
        rows,
        [
            conv1, relu1, pool1, conv2, relu2, pool2, flatten, fc1, relu3, fc2, relu4, fc3
        ]
    );
    assert!(s.to_string().lines().any(|l| l == "Total FLOPs: 845852"));
}

#[test]
fn resnet18_flops_are_about_3_6_giga() {
    // ≈ 1.82 GMACs of convolutions and fc, counted at 2 FLOPs per MAC, plus BN, ReLU, pools, adds.
    let s = summary("resnet18");
    assert!(
        (3_500_000_000..3_800_000_000).contains(&s.total_flops),
        "{}",
        s.total_flops
    );
    let convs: u64 = s
        .rows
        .iter()
        .filter(|r| matches!(r.op, "conv2d" | "dense"))
        .map(|r| r.flops)
        .sum();
    assert!((3_550_000_000..3_700_000_000).contains(&convs), "{convs}");
    // The well-known receptive field of ResNet-18's last stage.
    assert_eq!(s.row("layer4.1.relu2").unwrap().receptive_field, Some([435, 435]));
}

#[test]
fn alexnet_and_vgg16_flops_are_the_known_macs_doubled() {
    // AlexNet ≈ 0.71 GMACs, VGG-16 ≈ 15.5 GMACs.
    let a = summary("alexnet").total_flops;
    assert!((1_400_000_000..1_460_000_000).contains(&a), "{a}");
    let v = summary("vgg16").total_flops;
    assert!((30_800_000_000..31_100_000_000).contains(&v), "{v}");
}

#[test]
fn batch_norm_reads_params_and_buffers() {
    let g = build("mobilenet_block");
    let bn = g.find("layers.0.bn1").unwrap();
    let weights: Vec<bool> = g
        .inputs(bn)
        .into_iter()
        .skip(1)
        .map(|i| g.node(i).op.is_trainable_param())
        .collect();
    assert_eq!(weights, [true, true, false, false]);
    assert!(
        matches!(g.node(g.find("layers.1.conv1").unwrap()).op, Op::Conv2d(ref c) if c.groups == 64 && c.stride == [2, 2])
    );
}
