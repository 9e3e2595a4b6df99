//! The zoo networks through the JIT and the interpreter, with the same seeded weights and
//! inputs. (ResNet-18, VGG-16 and AlexNet are too slow for the naive interpreter in a debug
//! test run; `kiln bench` runs them in release.)

use kiln::ir::init::{default_weights, random_inputs};

fn check(name: &str) {
    let (_, build) = kiln::zoo::all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("zoo model");
    let graph = build().expect("builds");
    let weights = default_weights(&graph, 3).unwrap();
    let inputs = random_inputs(&graph, 4).unwrap();
    let want = kiln::interp::run::<f32>(&graph, &inputs, &weights).expect("interpreter runs");
    let mut model = kiln::compile(&graph, &kiln::jit::JitOptions::default()).expect("compiles");
    model.set_weights(&weights).expect("weights fit");
    let got = model.run(&inputs).expect("runs");
    for ((n, w), (_, g)) in want.iter().zip(&got) {
        let (w, g) = (w.as_f().unwrap(), g.as_f().unwrap());
        assert_eq!(w.shape(), g.shape());
        let scale = w.data().iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (a, b)) in w.data().iter().zip(g.data()).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * scale + 1e-5,
                "{name} `{n}`[{i}]: interpreter {a}, JIT {b}"
            );
        }
    }
}

#[test]
fn lenet5() {
    check("lenet5");
}

#[test]
fn mobilenet_block() {
    check("mobilenet_block");
}

#[test]
fn inception_block() {
    check("inception_block");
}

#[test]
fn spp_net() {
    check("spp_net");
}

#[test]
fn digits_cnn() {
    check("digits_cnn");
}

/// Splitting kernels across threads changes nothing: every output element is computed by one
/// thread in the same order, so 1, 2 and 3 threads agree bit for bit.
#[test]
fn threads_give_identical_results() {
    for name in ["lenet5", "mobilenet_block", "inception_block"] {
        let (_, build) = kiln::zoo::all()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("zoo model");
        let graph = build().expect("builds");
        let weights = default_weights(&graph, 5).unwrap();
        let inputs = random_inputs(&graph, 6).unwrap();
        let outputs: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|threads| {
                let opts = kiln::jit::JitOptions {
                    threads,
                    ..Default::default()
                };
                let mut m = kiln::compile(&graph, &opts).expect("compiles");
                m.set_weights(&weights).expect("weights fit");
                m.run(&inputs).expect("runs")
            })
            .collect();
        assert_eq!(outputs[0], outputs[1], "{name}: 1 vs 2 threads");
        assert_eq!(outputs[0], outputs[2], "{name}: 1 vs 3 threads");
    }
}
