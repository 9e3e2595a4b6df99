//! Shared by the interpreter tests: tensors from f64 literals, closeness checks with a
//! tolerance per precision, and `both!` to run a generic test in f32 and in f64.
#![allow(dead_code)]

use kiln_interp::Float;
use kiln_ir::Tensor;
use kiln_ir::init::SplitMix64;

/// A tensor of `dims` holding `data` (given in f64, converted to `T`).
pub fn t<T: Float>(dims: &[usize], data: &[f64]) -> Tensor<T> {
    Tensor::new(dims, data.iter().map(|&v| T::from_f64(v)).collect()).expect("data matches dims")
}

/// `1, 2, 3, …` in row-major order.
pub fn seq<T: Float>(dims: &[usize]) -> Tensor<T> {
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (1..=n).map(|v| v as f64).collect();
    t(dims, &data)
}

/// Seeded uniform values in [-1, 1).
pub fn random<T: Float>(dims: &[usize], seed: u64) -> Tensor<T> {
    let mut rng = SplitMix64::new(seed);
    let n: usize = dims.iter().product();
    let data: Vec<f64> = (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    t(dims, &data)
}

/// The tolerance for precision `T`: relative and absolute.
pub fn tol<T: Float>() -> f64 {
    if std::mem::size_of::<T>() == 4 {
        2e-6
    } else {
        1e-12
    }
}

pub fn close<T: Float>(got: T, want: f64) -> bool {
    let g = got.to_f64();
    (g.is_nan() && want.is_nan()) || g == want || (g - want).abs() <= tol::<T>() * (1.0 + want.abs())
}

/// Asserts `got` has shape `dims` and elements close to `want`.
#[track_caller]
pub fn assert_close<T: Float>(got: &Tensor<T>, dims: &[usize], want: &[f64]) {
    assert_eq!(got.dims(), dims, "shape");
    assert_eq!(got.data().len(), want.len(), "element count");
    for (i, (&g, &w)) in got.data().iter().zip(want).enumerate() {
        assert!(
            close(g, w),
            "element {i}: got {g}, want {w}\n got: {:?}\nwant: {want:?}",
            got.data()
        );
    }
}

/// Asserts two tensors of the same shape are close.
#[track_caller]
pub fn assert_tensors_close<T: Float>(got: &Tensor<T>, want: &Tensor<T>) {
    let w: Vec<f64> = want.data().iter().map(|v| v.to_f64()).collect();
    assert_close(got, want.dims(), &w);
}

/// Runs the generic test function `$body::<T>` as two tests, `$name::f32` and `$name::f64`.
macro_rules! both {
    ($($name:ident => $body:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn f32() {
                    super::$body::<f32>()
                }
                #[test]
                fn f64() {
                    super::$body::<f64>()
                }
            }
        )*
    };
}
