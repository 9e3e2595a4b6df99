//! The Trainer API: JIT and interpreter engines step to the same weights, training reduces
//! the loss on a learnable problem, the Learner view, and clear errors for bad arguments.

use kiln::fit::Learner;
use kiln::ir::{Graph, Tensor, Value};
use kiln::{Engine, Loss, Optimizer, TrainOptions, Trainer};
use std::collections::HashMap;

/// conv → relu → max pool → dense: a small classifier of 1×6×6 images into 3 classes.
fn net() -> Graph {
    kiln::ir::text::parse(
        r#"
graph small {
  input %images: f32[8, 1, 6, 6]
  param %conv.weight: f32[4, 1, 3, 3]
  param %conv.bias: f32[4]
  param %fc.weight: f32[3, 16]
  param %fc.bias: f32[3]
  %conv = conv2d(%images, %conv.weight, %conv.bias) {padding=[1, 1, 1, 1]}
  %relu = relu(%conv)
  %pool = max_pool2d(%relu) {kernel=[3, 3], stride=[3, 3]}
  %flat = flatten(%pool)
  %fc = dense(%flat, %fc.weight, %fc.bias)
  output %fc
}
"#,
    )
    .unwrap()
}

/// Images whose class is where a bright 2×2 square sits: left, middle or right.
fn batch(seed: u64) -> (Tensor<f32>, Tensor<i32>) {
    let mut rng = kiln::ir::init::SplitMix64::new(seed);
    let mut x = vec![0.0f32; 8 * 36];
    let mut y = vec![0i32; 8];
    for n in 0..8 {
        let class = (rng.next_u64() % 3) as usize;
        let row = (rng.next_u64() % 5) as usize;
        y[n] = class as i32;
        for v in &mut x[n * 36..(n + 1) * 36] {
            *v = rng.uniform(0.1);
        }
        for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            x[n * 36 + (row + dr) * 6 + class * 2 + dc] += 1.0;
        }
    }
    (
        Tensor::new([8, 1, 6, 6], x).unwrap(),
        Tensor::new([8], y).unwrap(),
    )
}

fn trainer(engine: Engine, opt: Optimizer) -> Trainer {
    let opts = TrainOptions {
        engine,
        ..TrainOptions::default()
    };
    Trainer::new(&net(), Loss::cross_entropy(), opt, opts).unwrap()
}

#[test]
fn jit_and_interpreter_take_the_same_steps() {
    for opt in [Optimizer::sgd(0.1).momentum(0.9), Optimizer::adam(0.01)] {
        let (mut jit, mut interp) = (trainer(Engine::Jit, opt), trainer(Engine::Interp, opt));
        for s in 0..5 {
            let (x, y) = batch(s);
            let lj = Learner::step(&mut jit, &x, &y).unwrap();
            let li = Learner::step(&mut interp, &x, &y).unwrap();
            assert!(
                (lj - li).abs() <= 1e-4 * li.abs().max(1.0),
                "step {s}: loss {lj} vs {li}"
            );
        }
        let jw = jit.weights().unwrap();
        for (name, w) in interp.weights().unwrap() {
            let j = &jw[&name];
            for (a, b) in w.data().iter().zip(j.data()) {
                assert!((a - b).abs() <= 1e-4, "{name}: interpreter {a}, JIT {b}");
            }
        }
    }
}

#[test]
fn training_learns_the_square_positions() {
    let mut t = trainer(Engine::Jit, Optimizer::sgd(0.2).momentum(0.9));
    assert_eq!(t.batch_size(), 8);
    let mut first = 0.0;
    for s in 0..150 {
        let (x, y) = batch(s);
        let l = Learner::step(&mut t, &x, &y).unwrap();
        if s == 0 {
            first = l;
        }
    }
    // held-out batches: nearly all right
    let mut right = 0;
    for s in 1000..1010 {
        let (x, y) = batch(s);
        let scores = Learner::predict(&mut t, &x).unwrap();
        for n in 0..8 {
            let row = &scores.data()[n * 3..n * 3 + 3];
            let best = (0..3).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            right += usize::from(best as i32 == y.data()[n]);
        }
    }
    let (x, y) = batch(0);
    let last = Learner::step(&mut t, &x, &y).unwrap();
    assert!(last < first / 4.0, "loss {first} → {last}");
    assert!(right >= 76, "{right}/80 held-out images right");
}

#[test]
fn weights_save_and_errors_are_clear() {
    let mut t = trainer(Engine::Interp, Optimizer::sgd(0.1));
    let bad = HashMap::from([("conv.weight".to_string(), Tensor::full([2, 2], 0.0f32))]);
    let e = t.set_weights(&bad).unwrap_err().to_string();
    assert!(e.contains("conv.weight") && e.contains("[4, 1, 3, 3]"), "{e}");
    let e = t.update_weights(&bad).unwrap_err().to_string();
    assert!(e.contains("conv.weight") && e.contains("[4, 1, 3, 3]"), "{e}");
    let unknown = HashMap::from([("nope".to_string(), Tensor::full([1], 0.0f32))]);
    assert!(
        t.update_weights(&unknown)
            .unwrap_err()
            .to_string()
            .contains("`nope`")
    );
    // a label outside the classes: an error naming it, not a panic
    let (x, _) = batch(0);
    let labels = Tensor::new([8], vec![0, 1, 2, 3, 0, 1, 2, 0]).unwrap();
    let e = Learner::step(&mut t, &x, &labels).unwrap_err().to_string();
    assert!(e.contains("class id 3"), "{e}");
    let mut jit = trainer(Engine::Jit, Optimizer::sgd(0.1));
    let e = Learner::step(&mut jit, &x, &labels).unwrap_err().to_string();
    assert!(e.contains("class id 3"), "{e}");
    // a wrong input name
    let inputs = HashMap::from([("pixels".to_string(), Value::F(x))]);
    let e = t
        .step(&inputs, &Value::I(Tensor::full([8], 0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("images"), "{e}");
    // save and load back
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("kiln_trainer_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    t.save_safetensors(&path).unwrap();
    let back = kiln::runtime::load_safetensors(&path).unwrap();
    assert_eq!(back, t.weights().unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn models_autodiff_cannot_train_are_refused_by_name() {
    let g = kiln::ir::text::parse(
        "graph bn {\n  input %x: f32[1, 3]\n  param %s: f32[3]\n  param %b: f32[3]\n  buffer %m: f32[3]\n  buffer %v: f32[3]\n  %d = batch_norm(%x, %s, %b, %m, %v)\n  output %d\n}\n",
    )
    .unwrap();
    let e = Trainer::new(&g, Loss::mse(), Optimizer::sgd(0.1), TrainOptions::default())
        .err()
        .unwrap()
        .to_string();
    // one value per channel: no batch statistics (PyTorch refuses it too)
    assert!(
        e.contains("node `d` (batch_norm)") && e.contains("more than one value per channel"),
        "{e}"
    );
}

fn feeds(x: &Tensor<f32>) -> HashMap<String, Value<f32>> {
    HashMap::from([("images".to_string(), Value::F(x.clone()))])
}

/// A trainer starts from a compiled model's weights and hands back a model for inference
/// with its trained weights; the two halves of a step show the gradients before the update.
#[test]
fn weights_pass_between_model_and_trainer() {
    let g = net();
    let w0 = kiln::ir::init::default_weights(&g, 7).unwrap();
    let mut model = kiln::compile(&g, &kiln::CompileOptions::default()).unwrap();
    // a partial update needs weights to update
    let one = HashMap::from([("fc.bias".to_string(), Tensor::full([3], 0.5f32))]);
    assert_eq!(
        model.update_weights(&one).unwrap_err().to_string(),
        "the model's weights are not set: call set_weights before run"
    );
    model.set_weights(&w0).unwrap();
    model.update_weights(&one).unwrap();
    let mut want = w0.clone();
    want.insert("fc.bias".into(), Tensor::full([3], 0.5f32));
    assert_eq!(model.weights().unwrap(), want);
    let bad = HashMap::from([("nope".to_string(), Tensor::full([1], 0.0f32))]);
    assert!(
        model
            .update_weights(&bad)
            .unwrap_err()
            .to_string()
            .contains("`nope`")
    );

    let opt = Optimizer::sgd(0.1).momentum(0.9);
    let mut t = Trainer::from_model(&model, Loss::cross_entropy(), opt, TrainOptions::default()).unwrap();
    assert_eq!(t.weights().unwrap(), want);
    let mut oracle = Trainer::with_weights(
        &g,
        &want,
        Loss::cross_entropy(),
        opt,
        TrainOptions {
            engine: Engine::Interp,
            ..TrainOptions::default()
        },
    )
    .unwrap();

    let (x, y) = batch(3);
    let target = Value::I(y);
    assert!(t.gradient("fc.weight").is_err(), "no gradients before a step");
    assert!(t.apply_update().is_err(), "nothing to apply before a step");
    let l = t.compute_gradients(&feeds(&x), &target).unwrap();
    let lo = oracle.compute_gradients(&feeds(&x), &target).unwrap();
    assert!((l - lo).abs() <= 1e-5 * lo.abs().max(1.0), "{l} vs {lo}");
    let (gj, gi) = (
        t.gradient("fc.weight").unwrap(),
        oracle.gradient("fc.weight").unwrap(),
    );
    assert!(gj.data().iter().any(|&v| v != 0.0));
    for (a, b) in gj.data().iter().zip(gi.data()) {
        assert!((a - b).abs() <= 1e-5, "gradient {a} vs {b}");
    }
    // the weights move only when the update is applied
    assert_eq!(t.weights().unwrap(), want);
    t.apply_update().unwrap();
    oracle.apply_update().unwrap();
    assert!(t.apply_update().is_err(), "an update applies once");
    let after = t.weights().unwrap();
    assert_ne!(after, want);
    for (name, w) in oracle.weights().unwrap() {
        for (a, b) in w.data().iter().zip(after[&name].data()) {
            assert!((a - b).abs() <= 1e-5, "{name}: {a} vs {b}");
        }
    }
    // no gradient of the images when training
    assert!(
        t.training_graph()
            .grads
            .iter()
            .all(|g| !g.key.starts_with("grad_of_"))
    );

    // back to inference: the trainer's weights, the trainer's predictions
    let trained = t.to_model().unwrap();
    assert_eq!(trained.weights().unwrap(), after);
    let p = t.predict(&feeds(&x)).unwrap();
    assert_eq!(trained.run(&feeds(&x)).unwrap(), p);
    // a full set replaces every weight; the trainer carries on from it
    t.set_weights(&want).unwrap();
    assert_eq!(t.weights().unwrap(), want);
    let mut partial = want.clone();
    partial.remove("fc.bias");
    assert!(
        t.set_weights(&partial)
            .unwrap_err()
            .to_string()
            .contains("fc.bias")
    );
}
