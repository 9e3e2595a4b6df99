//! The interpreter's clip, hard sigmoid, erf, LRN, mean and broadcast against values worked
//! out by hand from the ops' definitions (erf against published values).

use kiln_interp::{activation, lrn, reduce};
use kiln_ir::{Activation, Tensor};

fn t(dims: &[usize], v: &[f64]) -> Tensor<f64> {
    Tensor::new(dims.to_vec(), v.to_vec()).unwrap()
}

fn close(got: &Tensor<f64>, want: &[f64]) {
    assert_eq!(got.data().len(), want.len(), "{got:?}");
    for (g, w) in got.data().iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "got {:?}, want {want:?}", got.data());
    }
}

#[test]
fn activations() {
    let x = t(&[6], &[-7.0, -1.0, -0.25, 0.5, 3.0, 9.0]);
    let clip = |min, max| activation::activation(&x, Activation::Clip { min, max });
    close(&clip(0.0, 6.0), &[0.0, 0.0, 0.0, 0.5, 3.0, 6.0]);
    close(&clip(f32::NEG_INFINITY, 1.0), &[-7.0, -1.0, -0.25, 0.5, 1.0, 1.0]);
    close(&clip(0.5, 0.5), &[0.5; 6]);
    let hs = activation::activation(
        &x,
        Activation::HardSigmoid {
            alpha: 0.25,
            beta: 0.5,
        },
    );
    close(&hs, &[0.0, 0.25, 0.4375, 0.625, 1.0, 1.0]);
    let nan = t(&[1], &[f64::NAN]);
    assert!(activation::activation(&nan, Activation::Clip { min: 0.0, max: 1.0 }).data()[0].is_nan());
    // erf(0.5), erf(1), erf(2) to 16 digits (Abramowitz & Stegun, table 7.1), odd
    let e = activation::activation(&t(&[5], &[0.0, 0.5, 1.0, -2.0, 6.0]), Activation::Erf);
    close(
        &e,
        &[
            0.0,
            0.520_499_877_813_046_5,
            0.842_700_792_949_714_9,
            -0.995_322_265_018_952_7,
            1.0,
        ],
    );
}

#[test]
fn lrn_follows_its_definition() {
    // x = [1, 2, 3] over the channels; alpha = 1, beta = 1, bias = 1
    let x = t(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]);
    // size 2: channel c sums [c, c + 1]: bases 1 + (1 + 4)/2, 1 + (4 + 9)/2, 1 + 9/2
    close(
        &lrn::lrn(&x, 2, 1.0, 1.0, 1.0).unwrap(),
        &[1.0 / 3.5, 2.0 / 7.5, 3.0 / 5.5],
    );
    // size 3: [c − 1, c + 1]: bases 1 + 5/3, 1 + 14/3, 1 + 13/3
    close(
        &lrn::lrn(&x, 3, 1.0, 1.0, 1.0).unwrap(),
        &[3.0 / 8.0, 6.0 / 17.0, 9.0 / 16.0],
    );
    // size 5, beta ½, bias 2, alpha 5: every channel sums all three: base 2 + 14 = 16
    close(&lrn::lrn(&x, 5, 5.0, 0.5, 2.0).unwrap(), &[0.25, 0.5, 0.75]);
    // the window runs along axis 1 only: two positions are independent
    let x2 = t(&[1, 2, 2], &[1.0, 3.0, 2.0, 0.0]);
    close(
        &lrn::lrn(&x2, 2, 2.0, 1.0, 1.0).unwrap(),
        &[1.0 / 6.0, 3.0 / 10.0, 2.0 / 5.0, 0.0],
    );
}

#[test]
fn mean_and_broadcast_follow_their_definitions() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let m = reduce::reduce_mean(&x, &[1], true).unwrap();
    assert_eq!(m.dims(), &[2, 1]);
    close(&m, &[2.0, 5.0]);
    let m = reduce::reduce_mean(&x, &[0], false).unwrap();
    assert_eq!(m.dims(), &[3]);
    close(&m, &[2.5, 3.5, 4.5]);
    let m = reduce::reduce_mean(&x, &[0, 1], false).unwrap();
    assert_eq!(m.dims(), &[] as &[usize]);
    close(&m, &[3.5]);
    let b = reduce::broadcast_to(&t(&[2, 1], &[7.0, 8.0]), &[2, 2, 3]).unwrap();
    close(&b, &[7.0, 7.0, 7.0, 8.0, 8.0, 8.0, 7.0, 7.0, 7.0, 8.0, 8.0, 8.0]);
    assert!(reduce::broadcast_to(&x, &[3, 2]).is_err());
    assert!(reduce::reduce_mean(&x, &[2], true).is_err());
}
