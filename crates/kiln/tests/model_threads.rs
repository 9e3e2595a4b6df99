//! One compiled model shared by many threads (`Arc<Model>`, no lock): the model is
//! `Send + Sync`, and concurrent runs give bit-for-bit the results of runs one at a time.

use kiln::ir::Value;
use std::collections::HashMap;
use std::sync::Arc;

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn the_model_is_send_and_sync() {
    assert_send_sync::<kiln::Model>();
    assert_send_sync::<Arc<kiln::Model>>();
    assert_send::<kiln::Session>();
}

fn bits(v: &[(String, Value<f32>)]) -> Vec<u32> {
    v.iter()
        .flat_map(|(_, v)| match v {
            Value::F(t) => t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            Value::I(t) => t.data().iter().map(|&x| x as u32).collect(),
        })
        .collect()
}

/// The digits CNN at batch 64 (big enough for its convolutions to be split) on 2 intra-op threads, run by 4 threads at once, 6 inputs each
/// in its own order, 3 times over: every result equals, bit for bit, the same input's result
/// on a 1-thread compile of the graph run alone.
#[test]
fn one_model_serves_many_threads_bit_identically() {
    let graph = kiln::zoo::digits_cnn().unwrap().with_batch(64).unwrap();
    let weights = kiln::ir::init::default_weights(&graph, 3).unwrap();
    let inputs: Vec<HashMap<String, Value<f32>>> = (0..6)
        .map(|s| kiln::ir::init::random_inputs(&graph, s).unwrap())
        .collect();
    let single = kiln::jit::JitOptions {
        threads: 1,
        ..Default::default()
    };
    let mut alone = kiln::compile(&graph, &single).unwrap();
    alone.set_weights(&weights).unwrap();
    let expected: Vec<Vec<u32>> = inputs.iter().map(|x| bits(&alone.run(x).unwrap())).collect();
    // different inputs give different outputs, so a mixed-up result would be caught
    assert_ne!(expected[0], expected[1]);

    let two = kiln::jit::JitOptions {
        threads: 2,
        ..Default::default()
    };
    let mut model = kiln::compile(&graph, &two).unwrap();
    model.set_weights(&weights).unwrap();
    let model = Arc::new(model);
    std::thread::scope(|s| {
        for t in 0..4usize {
            let model = Arc::clone(&model);
            let (inputs, expected) = (&inputs, &expected);
            s.spawn(move || {
                for round in 0..3 {
                    for k in 0..inputs.len() {
                        let i = (k * (t + 1) + round) % inputs.len();
                        let got = bits(&model.run(&inputs[i]).unwrap());
                        assert!(got == expected[i], "thread {t}, round {round}, input {i}");
                    }
                }
            });
        }
    });
}

/// `run_into` writes into the caller's buffers, and a session of the caller's gives the same
/// results as `run`; a wrong buffer or another model's session is an error.
#[test]
fn run_into_and_sessions() {
    let graph = kiln::zoo::digits_cnn().unwrap().with_batch(2).unwrap();
    let weights = kiln::ir::init::default_weights(&graph, 1).unwrap();
    let mut model = kiln::compile(&graph, &kiln::CompileOptions::default()).unwrap();
    model.set_weights(&weights).unwrap();
    let x = kiln::ir::init::random_inputs(&graph, 9).unwrap();
    let want = bits(&model.run(&x).unwrap());
    let feeds: Vec<(&str, &Value<f32>)> = x.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = model.new_outputs();
    model.run_into(&feeds, &mut out).unwrap();
    let named: Vec<(String, Value<f32>)> = out.iter().map(|v| (String::new(), v.clone())).collect();
    assert_eq!(bits(&named), want);

    let mut session = model.session().unwrap();
    let mut out2 = model.new_outputs();
    model.run_in(&mut session, &feeds, &mut out2).unwrap();
    assert_eq!(out, out2);

    let mut other = kiln::compile(&graph, &kiln::CompileOptions::default()).unwrap();
    other.set_weights(&weights).unwrap();
    let e = other.run_in(&mut session, &feeds, &mut out2).unwrap_err();
    assert_eq!(e.to_string(), "the session belongs to another model");
    let mut none: Vec<Value<f32>> = Vec::new();
    let e = model.run_into(&feeds, &mut none).unwrap_err();
    assert_eq!(e.to_string(), "0 output buffers for the model's 1 outputs");

    // new weights reach every session at its next run
    let w2 = kiln::ir::init::default_weights(&graph, 2).unwrap();
    model.set_weights(&w2).unwrap();
    model.run_in(&mut session, &feeds, &mut out2).unwrap();
    assert_ne!(out, out2);
    let fresh = bits(&model.run(&x).unwrap());
    let named: Vec<(String, Value<f32>)> = out2.iter().map(|v| (String::new(), v.clone())).collect();
    assert_eq!(bits(&named), fresh);
}

/// `view` borrows an output where the run left it: the same floats as `run`'s, no copy; a
/// name that is not an f32 weight, input or output, or another model's session, is an error.
#[test]
fn outputs_viewed_in_place() {
    let graph = kiln::zoo::digits_cnn().unwrap().with_batch(3).unwrap();
    let weights = kiln::ir::init::default_weights(&graph, 1).unwrap();
    let mut model = kiln::compile(&graph, &kiln::CompileOptions::default()).unwrap();
    model.set_weights(&weights).unwrap();
    let x = kiln::ir::init::random_inputs(&graph, 5).unwrap();
    let want = model.run(&x).unwrap();
    let feeds: Vec<(&str, &Value<f32>)> = x.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut session = model.session().unwrap();
    model.run_in_place(&mut session, &feeds).unwrap();
    for (name, v) in &want {
        let Value::F(t) = v else { panic!("an f32 output") };
        let seen = model.view(&session, name).unwrap();
        assert_eq!(seen.len(), t.data().len());
        assert!(
            seen.iter().zip(t.data()).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}"
        );
        assert_eq!(model.read(&session, name).unwrap().data(), t.data());
    }
    let e = model.view(&session, "no such value").unwrap_err();
    assert_eq!(
        e.to_string(),
        "`no such value` is not an f32 weight, input or output of the model"
    );
    let other = kiln::compile(&graph, &kiln::CompileOptions::default()).unwrap();
    let e = other.view(&session, &want[0].0).unwrap_err();
    assert_eq!(e.to_string(), "the session belongs to another model");
}

/// Inputs large enough for the pool's threads to share copying them into the arena (each
/// thread a part of each, at 2 and 3 threads, sizes that are not whole cache lines): the
/// results equal a 1-thread compile's bit for bit, run after run with fresh inputs.
#[test]
fn inputs_copied_by_every_thread_arrive_whole() {
    // 70 007 floats (over the size from which the threads copy) and 23 (two cache lines,
    // which three threads share unevenly)
    let graph = kiln::ir::text::parse(
        "graph g {
  input %x: f32[1, 7, 73, 137]
  input %y: f32[1, 1, 1, 23]
  %m = max_pool2d(%x) {kernel=[1, 1], stride=[1, 1]}
  %s = global_avg_pool(%m)
  %t = add(%s, %y)
  output %m
  output %t
}",
    )
    .unwrap();
    let run = |threads: usize, x: &HashMap<String, Value<f32>>| {
        let opts = kiln::jit::JitOptions {
            threads,
            ..Default::default()
        };
        let model = kiln::compile(&graph, &opts).unwrap();
        bits(&model.run(x).unwrap())
    };
    for seed in 0..3 {
        let x = kiln::ir::init::random_inputs(&graph, seed).unwrap();
        let want = run(1, &x);
        for threads in [2, 3] {
            assert!(run(threads, &x) == want, "seed {seed}, {threads} threads");
        }
    }
}
