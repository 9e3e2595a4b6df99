//! The element type the interpreter computes in: `f32` (to match the JIT) or `f64` (for
//! gradient checks against finite differences). A tiny trait of our own, so the crate needs no
//! numeric-traits dependency (`libm` supplies `erf`, which `std` lacks).

use std::fmt::{Debug, Display};
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar: the arithmetic and the few functions the ops need.
pub trait Float:
    Copy
    + Debug
    + Display
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    fn zero() -> Self;
    fn one() -> Self;
    /// The nearest value of this type (exact for `f64`, rounded for `f32`).
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
    fn sqrt(self) -> Self;
    /// `self^e`.
    fn powf(self, e: Self) -> Self;
    /// The error function, from `libm` (correctly rounded to within 1 ulp in both types).
    fn erf(self) -> Self;
    fn neg_infinity() -> Self;
    fn is_nan(self) -> bool;
    /// `n` as a float (window sizes, batch sizes).
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

macro_rules! impl_float {
    ($t:ty, $erf:path) => {
        impl Float for $t {
            fn zero() -> Self {
                0.0
            }
            fn one() -> Self {
                1.0
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            fn erf(self) -> Self {
                $erf(self)
            }
            fn neg_infinity() -> Self {
                <$t>::NEG_INFINITY
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}

impl_float!(f32, libm::erff);
impl_float!(f64, libm::erf);
