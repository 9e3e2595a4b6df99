//! Activations, softmax and log-softmax against hand-computed values.

#[macro_use]
mod common;

use common::{assert_close, random, t};
use kiln_interp::Float;
use kiln_interp::activation::activation;
use kiln_interp::softmax::{log_softmax, softmax};
use kiln_ir::Activation;

fn relu_and_leaky<T: Float>() {
    let x = t::<T>(&[4], &[-2.0, -0.5, 0.0, 3.0]);
    assert_close(&activation(&x, Activation::Relu), &[4], &[0.0, 0.0, 0.0, 3.0]);
    let leaky = activation(&x, Activation::LeakyRelu { alpha: 0.25 });
    assert_close(&leaky, &[4], &[-0.5, -0.125, 0.0, 3.0]);
}

/// σ(0) = 1/2, σ(ln 3) = 1/(1 + 1/3) = 3/4, σ(−ln 3) = 1/4; saturates without NaN; far in the
/// negative tail σ(x) ≈ eˣ (relative error ~eˣ).
fn sigmoid<T: Float>() {
    let l3 = 3f64.ln();
    let x = t::<T>(&[5], &[0.0, l3, -l3, 1000.0, -1000.0]);
    assert_close(
        &activation(&x, Activation::Sigmoid),
        &[5],
        &[0.5, 0.75, 0.25, 1.0, 0.0],
    );
    let x = t::<T>(&[1], &[-80.0]);
    let y = activation(&x, Activation::Sigmoid).data()[0].to_f64();
    assert!(
        ((y - (-80f64).exp()) / (-80f64).exp()).abs() < 1e-5,
        "σ(−80) = {y}"
    );
}

/// tanh(ln 2) = (2 − ½)/(2 + ½) = 0.6; odd; saturates at ±1.
fn tanh<T: Float>() {
    let l2 = 2f64.ln();
    let x = t::<T>(&[5], &[0.0, l2, -l2, 50.0, -50.0]);
    assert_close(
        &activation(&x, Activation::Tanh),
        &[5],
        &[0.0, 0.6, -0.6, 1.0, -1.0],
    );
}

/// Row [0, ln 2, ln 3]: eˣ = 1, 2, 3, sum 6 → 1/6, 1/3, 1/2.
fn softmax_known_values<T: Float>() {
    let x = t::<T>(&[1, 3], &[0.0, 2f64.ln(), 3f64.ln()]);
    let want = [1.0 / 6.0, 1.0 / 3.0, 0.5];
    assert_close(&softmax(&x, -1).unwrap(), &[1, 3], &want);
    assert_close(&softmax(&x, 1).unwrap(), &[1, 3], &want);
    assert_close(&log_softmax(&x, 1).unwrap(), &[1, 3], &want.map(f64::ln));
}

/// Huge logits must not overflow: [1000, 1000] → ½, ½; [−1000, 0] → 0, 1 (log: −1000, 0).
fn softmax_stable<T: Float>() {
    let x = t::<T>(&[2, 2], &[1000.0, 1000.0, -1000.0, 0.0]);
    assert_close(&softmax(&x, 1).unwrap(), &[2, 2], &[0.5, 0.5, 0.0, 1.0]);
    assert_close(
        &log_softmax(&x, 1).unwrap(),
        &[2, 2],
        &[-(2f64.ln()), -(2f64.ln()), -1000.0, 0.0],
    );
}

/// Along axis 0 of [[0, ln 2, 0], [ln 3, 0, 0]]: columns (1, 3)/4, (2, 1)/3, (1, 1)/2. And the
/// middle axis of a rank-3 tensor.
fn softmax_other_axes<T: Float>() {
    let (l2, l3) = (2f64.ln(), 3f64.ln());
    let x = t::<T>(&[2, 3], &[0.0, l2, 0.0, l3, 0.0, 0.0]);
    let want = [0.25, 2.0 / 3.0, 0.5, 0.75, 1.0 / 3.0, 0.5];
    assert_close(&softmax(&x, 0).unwrap(), &[2, 3], &want);
    assert_close(&softmax(&x, -2).unwrap(), &[2, 3], &want);
    // x[0, :, 0] = [0, ln 3] → ¼, ¾; x[0, :, 1] = [ln 2, 0] → ⅔, ⅓
    let x = t::<T>(&[1, 2, 2], &[0.0, l2, l3, 0.0]);
    assert_close(
        &softmax(&x, 1).unwrap(),
        &[1, 2, 2],
        &[0.25, 2.0 / 3.0, 0.75, 1.0 / 3.0],
    );
    assert!(softmax(&x, 3).is_err());
}

/// Every slice sums to 1, and log_softmax = ln softmax.
fn softmax_sums_to_one<T: Float>() {
    let x = random::<T>(&[2, 3, 4, 5], 7);
    for axis in 0..4 {
        let y = softmax(&x, axis).unwrap();
        let ly = log_softmax(&x, axis).unwrap();
        let d = x.dims().to_vec();
        let a = axis as usize;
        let inner: usize = d[a + 1..].iter().product();
        let outer: usize = d[..a].iter().product();
        for o in 0..outer {
            for i in 0..inner {
                let s: f64 = (0..d[a])
                    .map(|k| y.data()[(o * d[a] + k) * inner + i].to_f64())
                    .sum();
                assert!((s - 1.0).abs() < 1e-5, "axis {axis}: sum {s}");
            }
        }
        for (p, l) in y.data().iter().zip(ly.data()) {
            assert!((p.to_f64().ln() - l.to_f64()).abs() < 1e-5);
        }
    }
}

both! {
    act_relu_and_leaky => relu_and_leaky,
    act_sigmoid => sigmoid,
    act_tanh => tanh,
    softmax_known => softmax_known_values,
    softmax_stability => softmax_stable,
    softmax_axes => softmax_other_axes,
    softmax_rows_sum_to_one => softmax_sums_to_one,
}

/// GELU and HardSwish are one activation each, and give the bits of the graphs they stand
/// for (the ONNX importer's exact Gelu of before, `scale`, `erf`, `mul`, `add`, `scale`, and
/// `x · hard_sigmoid(x)` with HardSwish's constants), NaN, infinities and signed zeros
/// included; and known values.
#[test]
fn gelu_and_hard_swish_are_the_bits_of_their_graphs() {
    let graph = |body: &str| {
        kiln_ir::text::parse(&format!(
            "graph g {{\n  input %x: f32[64]\n{body}\n  output %y\n}}"
        ))
        .unwrap()
    };
    let gelu = graph("  %y = gelu(%x)");
    let gelu_parts = graph(
        "  %s = scale(%x) {factor=0.70710677}\n  %e = erf(%s)\n  %xs = mul(%x, %e)\n  %sum = add(%x, %xs)\n  %y = scale(%sum) {factor=0.5}",
    );
    let swish = graph("  %y = hard_swish(%x)");
    let swish_parts = graph("  %h = hard_sigmoid(%x) {alpha=0.16666667, beta=0.5}\n  %y = mul(%x, %h)");
    let mut xs: Vec<f32> = (0..56).map(|i| (i as f32 - 28.0) * 0.23).collect();
    xs.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        0.0,
        3.0,
        -3.0,
        1e-30,
    ]);
    let x = kiln_ir::Tensor::new([64], xs.clone()).unwrap();
    let inputs = std::collections::HashMap::from([("x".to_string(), kiln_ir::Value::F(x))]);
    let no_weights = std::collections::HashMap::new();
    let run = |g: &kiln_ir::Graph| {
        let out = kiln_interp::run::<f32>(g, &inputs, &no_weights).unwrap();
        out[0].1.as_f().unwrap().data().to_vec()
    };
    for (one, parts) in [(&gelu, &gelu_parts), (&swish, &swish_parts)] {
        let (a, b) = (run(one), run(parts));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()),
                "x = {}: {p} vs {q}",
                xs[i]
            );
        }
    }
    let (g, h) = (run(&gelu), run(&swish));
    // GELU(1) = Φ(1) = 0.8413447, GELU(−1) = −0.1586553; HardSwish(±3) = 3, 0; (1) = 2/3
    let at = |v: f32| xs.iter().position(|&x| x == v).unwrap();
    assert!((g[at(3.0)] - 3.0 * 0.998_650_1).abs() < 1e-5);
    assert!((g[at(-3.0)] + 3.0 * 0.001_349_9).abs() < 1e-5);
    assert_eq!(h[at(3.0)], 3.0);
    assert_eq!(h[at(-3.0)].abs(), 0.0);
    assert_eq!(g[at(f32::INFINITY)], f32::INFINITY);
}
