//! `Model::run_profiled_split`: each kernel timed split over the model's threads as a run
//! splits it. Its outputs are the run's (every kernel over its whole range, in run order, the
//! work shared as in a run), and every kernel that runs has a time.

use kiln::ir::init::{default_weights, random_inputs};

/// `threads` threads: the split profile's outputs equal `run`'s bit for bit, one time per
/// kernel, 0 for the weight-time (`prep`) kernels, which a run does not run.
fn split_profile_is_a_run(threads: usize) {
    // ResNet-18's first blocks at batch 2 (split kernels: every thread takes part) and
    // LeNet-5 (small kernels, run on one thread)
    for (name, g) in [
        ("resnet18", kiln::zoo::resnet18().unwrap().with_batch(2).unwrap()),
        ("lenet5", kiln::zoo::lenet5().unwrap()),
    ] {
        let options = kiln::CompileOptions {
            threads,
            ..Default::default()
        };
        let mut m = kiln::compile(&g, &options).unwrap();
        m.set_weights(&default_weights(&g, 3).unwrap()).unwrap();
        let inputs = random_inputs(&g, 4).unwrap();
        let want = m.run(&inputs).unwrap();
        let (times, got) = m.run_profiled_split(&inputs).unwrap();
        assert_eq!(times.len(), m.kernels().len(), "{name}");
        for (k, &t) in m.kernels().iter().zip(&times) {
            if k.prep {
                assert_eq!(t, 0.0, "{name}: a weight-time kernel timed");
            } else {
                assert!(t.is_finite() && t >= 0.0, "{name}: {t}");
            }
        }
        assert!(times.iter().sum::<f64>() > 0.0, "{name}");
        assert_eq!(got.len(), want.len(), "{name}");
        for ((wn, w), (gn, g)) in want.iter().zip(&got) {
            assert_eq!(wn, gn, "{name}");
            let (a, b) = (w.as_f().unwrap().data(), g.as_f().unwrap().data());
            assert!(
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: {wn} differs from the run's"
            );
        }
        // the one-thread profile of the same model gives the same outputs too
        let (_, once) = m.run_profiled(&inputs).unwrap();
        assert_eq!(once, got, "{name}");
    }
}

#[test]
fn split_profile_on_two_threads_computes_the_run() {
    split_profile_is_a_run(2);
}

#[test]
fn split_profile_on_one_thread_computes_the_run() {
    split_profile_is_a_run(1);
}
