//! Embedding kiln: build a small CNN in Rust, compile it to native code, run it, share one
//! compiled model between threads (`Arc<Model>`, no lock), reuse output buffers, and check the
//! JIT against the reference interpreter. `cargo run --release --example embed`
use kiln::ir::builder::Conv;
use kiln::{CompileOptions, Network, Tensor, Value};
use std::collections::HashMap;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Describe the network: layers create their weights (`conv1.weight`, `conv1.bias`, …).
    let mut net = Network::new("digits");
    let x = net.input("image", [4, 1, 8, 8])?;
    let h = net.named("conv1").conv2d(x, Conv::new(8, [3, 3]).padding(1))?;
    let h = net.relu(h)?;
    let h = net.max_pool2d(h, [2, 2], [2, 2])?;
    let h = net.named("conv2").conv2d(h, Conv::new(16, [3, 3]).padding(1))?;
    let h = net.relu(h)?;
    let h = net.flatten(h)?;
    let logits = net.named("fc").dense(h, 10)?;
    let probs = net.named("probs").softmax(logits, 1)?;
    net.output(probs)?;
    let graph = net.finish()?;
    println!("{}", kiln::ir::summary::summarize(&graph));

    // 2. Compile once; weights from a seeded initialization here
    //    (`kiln::runtime::load_safetensors(path)?` reads trained ones).
    let weights = kiln::ir::init::default_weights(&graph, 42)?;
    let mut model = kiln::compile(&graph, &CompileOptions::default())?;
    model.set_weights(&weights)?; // every weight; `update_weights` changes some of them

    // 3. Run many times: inputs by name, outputs in the graph's order.
    let pixels: Vec<f32> = (0..4 * 64).map(|i| ((i * 37) % 17) as f32 / 16.0).collect();
    let inputs = HashMap::from([(
        "image".to_string(),
        Value::F(Tensor::new([4, 1, 8, 8], pixels).unwrap()),
    )]);
    let outputs = model.run(&inputs)?;
    let probs = outputs[0].1.as_f().expect("f32 output").clone();
    for (i, row) in probs.data().chunks(10).enumerate() {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(c, _)| c);
        println!("image {i}: class {best} (p = {:.3})", row[best]);
    }

    // 4. The interpreter is the oracle: same weights, same inputs, same answer.
    let reference = kiln::interp::run::<f32>(&graph, &inputs, &weights)?;
    let max_diff = reference[0]
        .1
        .as_f()
        .unwrap()
        .data()
        .iter()
        .zip(probs.data())
        .map(|(a, b)| (a - b).abs());
    println!("max |JIT − interpreter| = {:.2e}", max_diff.fold(0.0, f32::max));

    // 5. One model, many threads: `Model` is `Send + Sync`; every run borrows its own arena
    //    from the model, so threads share it through an `Arc` with no lock. `run_into` writes
    //    into buffers the caller keeps, so a serving loop allocates nothing per request.
    let shared = Arc::new(model);
    let first = probs.clone();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let model = Arc::clone(&shared);
            let inputs = inputs.clone();
            std::thread::spawn(move || -> Result<Tensor<f32>, kiln::RuntimeError> {
                let feeds: Vec<kiln::Feed<'_>> = inputs.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let mut out = model.new_outputs();
                for _ in 0..10 * (t + 1) {
                    model.run_into(&feeds, &mut out)?;
                }
                Ok(out[0].as_f().expect("f32 output").clone())
            })
        })
        .collect();
    for h in handles {
        let got = h.join().expect("the thread ran")?;
        assert_eq!(got, first, "every thread gets the same answer, bit for bit");
    }
    println!("4 threads × 10–40 runs on one Arc<Model>: identical results");
    let model = shared;

    // A wrong input is an error that names it, never a crash.
    let bad = HashMap::from([("image".to_string(), Value::F(Tensor::full([1, 1, 8, 8], 0.0)))]);
    println!("wrong shape: {}", model.run(&bad).unwrap_err());
    Ok(())
}
