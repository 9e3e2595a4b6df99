//! dense, matmul, broadcasting binary ops, batch norm.

#[macro_use]
mod common;

use common::{assert_close, seq, t};
use kiln_interp::Float;
use kiln_interp::elementwise::binary;
use kiln_interp::linear::{dense, matmul};
use kiln_interp::norm::batch_norm;
use kiln_ir::BinaryOp;

/// [[1,2,3],[4,5,6]] · [[1,0,−1],[1,1,1]]ᵀ + [10, 20] = [[−2+10, 6+20], [−2+10, 15+20]].
fn dense_known<T: Float>() {
    let x = seq::<T>(&[2, 3]);
    let w = t::<T>(&[2, 3], &[1.0, 0.0, -1.0, 1.0, 1.0, 1.0]);
    let b = t::<T>(&[2], &[10.0, 20.0]);
    assert_close(
        &dense(&x, &w, Some(&b)).unwrap(),
        &[2, 2],
        &[8.0, 26.0, 8.0, 35.0],
    );
    assert_close(&dense(&x, &w, None).unwrap(), &[2, 2], &[-2.0, 6.0, -2.0, 15.0]);
    // batch 1 (a GEMV)
    let x = t::<T>(&[1, 3], &[1.0, 1.0, 1.0]);
    assert_close(&dense(&x, &w, Some(&b)).unwrap(), &[1, 2], &[10.0, 23.0]);
    assert!(dense(&t::<T>(&[1, 2], &[1.0, 1.0]), &w, None).is_err());
}

/// [[1,2,3],[4,5,6]] · [[7,8],[9,10],[11,12]] = [[58,64],[139,154]]; rank-1 operands as NumPy.
fn matmul_known<T: Float>() {
    let a = seq::<T>(&[2, 3]);
    let b = t::<T>(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_close(&matmul(&a, &b).unwrap(), &[2, 2], &[58.0, 64.0, 139.0, 154.0]);
    let v = seq::<T>(&[3]);
    assert_close(&matmul(&v, &b).unwrap(), &[2], &[58.0, 64.0]);
    let ones = t::<T>(&[3], &[1.0; 3]);
    assert_close(&matmul(&a, &ones).unwrap(), &[2], &[6.0, 15.0]);
    assert_close(&matmul(&v, &v).unwrap(), &[], &[14.0]);
    assert!(matmul(&a, &a).is_err());
}

/// Batch dims broadcast: [2,1,2] · [2,2] applies diag(1, 2) to each batch; [1,2,2] · [3,2,1]
/// multiplies [[1,2],[3,4]] by the columns [k, 1] for k = 0, 1, 2 → [2,4], [3,7], [4,10].
fn matmul_broadcast<T: Float>() {
    let a = seq::<T>(&[2, 1, 2]);
    let b = t::<T>(&[2, 2], &[1.0, 0.0, 0.0, 2.0]);
    assert_close(&matmul(&a, &b).unwrap(), &[2, 1, 2], &[1.0, 4.0, 3.0, 8.0]);
    let a = seq::<T>(&[1, 2, 2]);
    let b = t::<T>(&[3, 2, 1], &[0.0, 1.0, 1.0, 1.0, 2.0, 1.0]);
    assert_close(
        &matmul(&a, &b).unwrap(),
        &[3, 2, 1],
        &[2.0, 4.0, 3.0, 7.0, 4.0, 10.0],
    );
    // rank-1 against a batch: [2] · [2, 2, 2] → [2, 2]
    let v = t::<T>(&[2], &[1.0, 1.0]);
    let m = seq::<T>(&[2, 2, 2]);
    assert_close(&matmul(&v, &m).unwrap(), &[2, 2], &[4.0, 6.0, 12.0, 14.0]);
}

fn broadcasting<T: Float>() {
    let a = seq::<T>(&[2, 3]);
    let row = t::<T>(&[3], &[10.0, 20.0, 30.0]);
    assert_close(
        &binary(BinaryOp::Add, &a, &row).unwrap(),
        &[2, 3],
        &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0],
    );
    let col = t::<T>(&[2, 1], &[1.0, 4.0]);
    assert_close(
        &binary(BinaryOp::Sub, &a, &col).unwrap(),
        &[2, 3],
        &[0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    );
    // [2,1] * [1,3] → [2,3] outer product
    let r = t::<T>(&[1, 3], &[1.0, 10.0, 100.0]);
    assert_close(
        &binary(BinaryOp::Mul, &col, &r).unwrap(),
        &[2, 3],
        &[1.0, 10.0, 100.0, 4.0, 40.0, 400.0],
    );
    // a scalar (rank 0) on the right and on the left
    let two = t::<T>(&[], &[2.0]);
    assert_close(
        &binary(BinaryOp::Div, &a, &two).unwrap(),
        &[2, 3],
        &[0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
    );
    assert_close(&binary(BinaryOp::Div, &two, &col).unwrap(), &[2, 1], &[2.0, 0.5]);
    // channel bias [1, 2, 1, 1] onto [1, 2, 2, 2] (a residual / bias add)
    let x = seq::<T>(&[1, 2, 2, 2]);
    let cb = t::<T>(&[1, 2, 1, 1], &[100.0, 200.0]);
    assert_close(
        &binary(BinaryOp::Add, &x, &cb).unwrap(),
        &[1, 2, 2, 2],
        &[101.0, 102.0, 103.0, 104.0, 205.0, 206.0, 207.0, 208.0],
    );
    // same shapes
    assert_close(
        &binary(BinaryOp::Mul, &a, &a).unwrap(),
        &[2, 3],
        &[1.0, 4.0, 9.0, 16.0, 25.0, 36.0],
    );
    assert!(binary(BinaryOp::Add, &a, &t::<T>(&[2], &[1.0, 2.0])).is_err());
}

/// Channel 0 = [1, 3], mean 2, var 4 (ε = 0): (x − 2)/2 → −½, ½. Channel 1 = [10, 20], mean 10,
/// var 25, scale 2, bias 1: (x − 10)/5·2 + 1 → 1, 5.
fn batch_norm_known<T: Float>() {
    let x = t::<T>(&[1, 2, 1, 2], &[1.0, 3.0, 10.0, 20.0]);
    let scale = t::<T>(&[2], &[1.0, 2.0]);
    let bias = t::<T>(&[2], &[0.0, 1.0]);
    let mean = t::<T>(&[2], &[2.0, 10.0]);
    let var = t::<T>(&[2], &[4.0, 25.0]);
    let y = batch_norm(&x, &scale, &bias, &mean, &var, 0.0).unwrap();
    assert_close(&y, &[1, 2, 1, 2], &[-0.5, 0.5, 1.0, 5.0]);
    // ε enters under the square root; batch 2 and a rank-2 input use the same channel axis 1
    let x = t::<T>(&[2, 2], &[1.0, 10.0, 3.0, 20.0]);
    let eps = 1e-3f32;
    let e = f64::from(eps);
    let y = batch_norm(&x, &scale, &bias, &mean, &var, eps).unwrap();
    let want = [
        -1.0 / (4.0 + e).sqrt(),
        1.0,
        1.0 / (4.0 + e).sqrt(),
        10.0 / (25.0 + e).sqrt() * 2.0 + 1.0,
    ];
    assert_close(&y, &[2, 2], &want);
}

both! {
    dense_values => dense_known,
    matmul_values => matmul_known,
    matmul_batch_broadcast => matmul_broadcast,
    binary_broadcasting => broadcasting,
    batch_norm_values => batch_norm_known,
}
