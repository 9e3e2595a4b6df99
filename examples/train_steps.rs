//! Times training steps of a digits-sized CNN (8×8 images, batch 32, conv 3×3 → relu → max
//! pool → conv → relu → dense, cross-entropy, SGD with momentum) on the JIT and on the
//! interpreter, on synthetic data: `cargo run --release --example train_steps [STEPS]`.

use kiln::fit::Learner;
use kiln::ir::builder::{Conv, Network};
use kiln::ir::{Tensor, init::SplitMix64};
use kiln::{Engine, Loss, Optimizer, TrainOptions, Trainer};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let steps: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let batch = 32;
    let mut net = Network::new("digits_cnn");
    let x = net.input("images", [batch, 1, 8, 8])?;
    let h = net.named("conv1").conv2d(x, Conv::new(16, [3, 3]).padding(1))?;
    let h = net.relu(h)?;
    let h = net.max_pool2d(h, [2, 2], [2, 2])?;
    let h = net.named("conv2").conv2d(h, Conv::new(32, [3, 3]).padding(1))?;
    let h = net.relu(h)?;
    let h = net.flatten(h)?;
    let y = net.named("fc").dense(h, 10)?;
    net.output(y)?;
    let graph = net.finish()?;
    let mut rng = SplitMix64::new(1);
    let images = Tensor::new(
        [batch, 1, 8, 8],
        (0..batch * 64).map(|_| rng.uniform(1.0)).collect(),
    )
    .unwrap();
    let labels = Tensor::new([batch], (0..batch).map(|i| (i % 10) as i32).collect()).unwrap();
    for engine in [Engine::Jit, Engine::Interp] {
        let opts = TrainOptions {
            engine,
            ..TrainOptions::default()
        };
        let t0 = Instant::now();
        let mut t = Trainer::new(
            &graph,
            Loss::cross_entropy(),
            Optimizer::sgd(0.05).momentum(0.9),
            opts,
        )?;
        let setup = t0.elapsed().as_secs_f64() * 1e3;
        Learner::step(&mut t, &images, &labels)?; // warm-up
        let t1 = Instant::now();
        let mut loss = 0.0;
        for _ in 0..steps {
            loss = Learner::step(&mut t, &images, &labels)?;
        }
        let per = t1.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!(
            "{engine:?}: setup {setup:.1} ms, {per:.3} ms/step, {:.0} images/s, last loss {loss:.4}",
            batch as f64 / per * 1e3
        );
    }
    Ok(())
}
