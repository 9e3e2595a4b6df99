//! flatten, reshape, transpose, concat, and the losses.

#[macro_use]
mod common;

use common::{assert_close, seq, t};
use kiln_interp::Float;
use kiln_interp::layout::{concat, flatten, reshape, transpose};
use kiln_interp::loss::{Target, cross_entropy, mse, nll};
use kiln_ir::Tensor;

fn flatten_and_reshape<T: Float>() {
    let x = seq::<T>(&[2, 3, 2]);
    let data: Vec<f64> = (1..=12).map(f64::from).collect();
    assert_close(&flatten(&x, 1).unwrap(), &[2, 6], &data);
    assert_close(&flatten(&x, 0).unwrap(), &[1, 12], &data);
    assert_close(&flatten(&x, 3).unwrap(), &[12, 1], &data);
    assert_close(&flatten(&x, -1).unwrap(), &[6, 2], &data);
    assert_close(&reshape(&x, &[0, -1]).unwrap(), &[2, 6], &data);
    assert_close(&reshape(&x, &[4, -1]).unwrap(), &[4, 3], &data);
    assert_close(&reshape(&x, &[-1]).unwrap(), &[12], &data);
    assert_close(&reshape(&x, &[0, 0, 1, -1]).unwrap(), &[2, 3, 1, 2], &data);
    assert!(reshape(&x, &[5, -1]).is_err());
    // index tensors pass through too
    let ids = Tensor::new([2, 2], vec![1, 2, 3, 4]).unwrap();
    assert_eq!(flatten(&ids, 0).unwrap().dims(), &[1, 4]);
}

/// [[1,2,3],[4,5,6]]ᵀ = [[1,4],[2,5],[3,6]]; rank 3 with perm [2, 0, 1]:
/// `y[a, b, c] = x[b, c, a]` with `x[i, j, k] = 100i + 10j + k`.
fn transpose_values<T: Float>() {
    let x = seq::<T>(&[2, 3]);
    assert_close(
        &transpose(&x, &[1, 0]).unwrap(),
        &[3, 2],
        &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0],
    );
    assert_close(
        &transpose(&x, &[0, 1]).unwrap(),
        &[2, 3],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    let mut data = Vec::new();
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                data.push(f64::from(100 * i + 10 * j + k));
            }
        }
    }
    let x = t::<T>(&[2, 3, 4], &data);
    let mut want = Vec::new();
    for a in 0..4 {
        for b in 0..2 {
            for c in 0..3 {
                want.push(f64::from(100 * b + 10 * c + a));
            }
        }
    }
    assert_close(&transpose(&x, &[2, 0, 1]).unwrap(), &[4, 2, 3], &want);
    assert!(transpose(&x, &[0, 0, 1]).is_err());
}

fn concat_values<T: Float>() {
    // channel concat (axis 1), batch 2: per batch element, a's channels then b's
    let a = t::<T>(&[2, 1, 2], &[1.0, 2.0, 7.0, 8.0]);
    let b = t::<T>(&[2, 2, 2], &[3.0, 4.0, 5.0, 6.0, 9.0, 10.0, 11.0, 12.0]);
    let want: Vec<f64> = (1..=12).map(f64::from).collect();
    assert_close(&concat(&[&a, &b], 1).unwrap(), &[2, 3, 2], &want);
    assert_close(&concat(&[&a, &b], -2).unwrap(), &[2, 3, 2], &want);
    // last axis
    let a = t::<T>(&[2, 1], &[1.0, 2.0]);
    let b = t::<T>(&[2, 2], &[3.0, 4.0, 5.0, 6.0]);
    assert_close(
        &concat(&[&a, &b, &a], 1).unwrap(),
        &[2, 4],
        &[1.0, 3.0, 4.0, 1.0, 2.0, 5.0, 6.0, 2.0],
    );
    // first axis: the inputs one after the other
    let c = t::<T>(&[1, 2], &[7.0, 8.0]);
    assert_close(
        &concat(&[&b, &c], 0).unwrap(),
        &[3, 2],
        &[3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    // a single input is a copy
    assert_close(&concat(&[&c], 0).unwrap(), &[1, 2], &[7.0, 8.0]);
    assert!(concat(&[&a, &c], 1).is_err());
}

/// mean((a − y)²) = (0 + 4 + 0 + 16)/4 = 5.
fn mse_known<T: Float>() {
    let a = seq::<T>(&[2, 2]);
    let y = t::<T>(&[2, 2], &[1.0, 0.0, 3.0, 0.0]);
    assert_close(&mse(&a, &y).unwrap(), &[], &[5.0]);
    assert!(mse(&a, &t::<T>(&[4], &[0.0; 4])).is_err());
}

/// Logits [0, 0] with class 1: −log ½ = ln 2. Logits [0, ln 3] with class 1: −log ¾ = ln(4/3);
/// the batch mean of both is (ln 2 + ln 4/3)/2. Probability targets weight the log-softmax.
fn cross_entropy_known<T: Float>() {
    let (l2, l3) = (2f64.ln(), 3f64.ln());
    let z = t::<T>(&[1, 2], &[0.0, 0.0]);
    let ids = Tensor::new([1], vec![1]).unwrap();
    assert_close(&cross_entropy(&z, Target::Ids(&ids)).unwrap(), &[], &[l2]);
    let z = t::<T>(&[2, 2], &[0.0, 0.0, 0.0, l3]);
    let ids = Tensor::new([2], vec![1, 1]).unwrap();
    assert_close(
        &cross_entropy(&z, Target::Ids(&ids)).unwrap(),
        &[],
        &[(l2 + (4f64 / 3.0).ln()) / 2.0],
    );
    // probabilities: row 0 [½, ½] → ln 2; row 1 [¼, ¾] over log-probs [ln ¼, ln ¾]
    let p = t::<T>(&[2, 2], &[0.5, 0.5, 0.25, 0.75]);
    let row1 = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
    assert_close(
        &cross_entropy(&z, Target::Probs(&p)).unwrap(),
        &[],
        &[(l2 + row1) / 2.0],
    );
    // huge logits stay finite: [1000, 0] → 0 for class 0, 1000 for class 1
    let z = t::<T>(&[2, 2], &[1000.0, 0.0, 1000.0, 0.0]);
    let ids = Tensor::new([2], vec![0, 1]).unwrap();
    assert_close(&cross_entropy(&z, Target::Ids(&ids)).unwrap(), &[], &[500.0]);
}

/// NLL of log-probs [[−1,−2,−3],[−4,−5,−6]]: ids [2, 0] → (3 + 4)/2; probabilities
/// [[0,1,0],[½,½,0]] → (2 + 4.5)/2.
fn nll_known<T: Float>() {
    let z = t::<T>(&[2, 3], &[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0]);
    let ids = Tensor::new([2], vec![2, 0]).unwrap();
    assert_close(&nll(&z, Target::Ids(&ids)).unwrap(), &[], &[3.5]);
    let p = t::<T>(&[2, 3], &[0.0, 1.0, 0.0, 0.5, 0.5, 0.0]);
    assert_close(&nll(&z, Target::Probs(&p)).unwrap(), &[], &[3.25]);
}

fn bad_class_ids<T: Float>() {
    let z = t::<T>(&[2, 3], &[0.0; 6]);
    for (ids, bad) in [
        (vec![0, 3], "class id 3 of batch element 1"),
        (vec![-1, 0], "class id -1 of batch element 0"),
    ] {
        let ids = Tensor::new([2], ids).unwrap();
        let e = cross_entropy(&z, Target::Ids(&ids)).unwrap_err();
        assert!(e.contains(bad), "{e}");
        let e = nll(&z, Target::Ids(&ids)).unwrap_err();
        assert!(e.contains(bad), "{e}");
    }
    // a target of the wrong shape
    let ids = Tensor::new([3], vec![0, 0, 0]).unwrap();
    assert!(cross_entropy(&z, Target::Ids(&ids)).is_err());
}

both! {
    layout_flatten_reshape => flatten_and_reshape,
    layout_transpose => transpose_values,
    layout_concat => concat_values,
    loss_mse => mse_known,
    loss_cross_entropy => cross_entropy_known,
    loss_nll => nll_known,
    loss_bad_class_ids => bad_class_ids,
}
