//! Tensor types (shape + dtype) and a plain owned tensor used to carry data between layers.

use smallvec::SmallVec;
use std::fmt;

/// Element type of a tensor: `f32` for activations and weights, `i32` for index tensors
/// (class ids, max-pool argmax ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A static shape. Rank 0 is a scalar (the losses' output).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub SmallVec<[usize; 4]>);

impl Shape {
    pub fn new(dims: &[usize]) -> Shape {
        Shape(SmallVec::from_slice(dims))
    }
    pub fn scalar() -> Shape {
        Shape(SmallVec::new())
    }
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar). Saturates instead of overflowing, so absurd shapes
    /// read from a file stay an error elsewhere rather than a panic here.
    pub fn numel(&self) -> usize {
        self.0.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
    /// Row-major strides.
    pub fn strides(&self) -> SmallVec<[usize; 4]> {
        let mut s: SmallVec<[usize; 4]> = SmallVec::from_elem(1, self.rank());
        for i in (0..self.rank().saturating_sub(1)).rev() {
            s[i] = s[i + 1] * self.0[i + 1];
        }
        s
    }
}

impl<const N: usize> From<[usize; N]> for Shape {
    fn from(d: [usize; N]) -> Shape {
        Shape::new(&d)
    }
}

impl From<&[usize]> for Shape {
    fn from(d: &[usize]) -> Shape {
        Shape::new(d)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(d: Vec<usize>) -> Shape {
        Shape(SmallVec::from_vec(d))
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The static type of a value in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: impl Into<Shape>) -> TensorType {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }
    pub fn f32(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::F32, shape)
    }
    pub fn i32(shape: impl Into<Shape>) -> TensorType {
        TensorType::new(DType::I32, shape)
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// A dense row-major tensor owning its elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    shape: Shape,
    data: Vec<T>,
}

/// Data whose length is not its shape's element count ([`Tensor::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{len} values do not fill a tensor of shape {shape} ({} elements)", shape.numel())]
pub struct TensorSizeError {
    pub shape: Shape,
    pub len: usize,
}

impl<T: Clone> Tensor<T> {
    /// A tensor of `shape` holding `data` (row-major); an error if the lengths disagree.
    pub fn new(shape: impl Into<Shape>, data: Vec<T>) -> Result<Tensor<T>, TensorSizeError> {
        let shape = shape.into();
        if shape.numel() == data.len() {
            Ok(Tensor { shape, data })
        } else {
            Err(TensorSizeError {
                shape,
                len: data.len(),
            })
        }
    }
    pub fn full(shape: impl Into<Shape>, value: T) -> Tensor<T> {
        let shape = shape.into();
        let data = vec![value; shape.numel()];
        Tensor { shape, data }
    }
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }
    pub fn data(&self) -> &[T] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<T> {
        self.data
    }
    /// Same elements, another shape of the same element count (`None` if the counts differ).
    pub fn reshaped(self, shape: impl Into<Shape>) -> Option<Tensor<T>> {
        Tensor::new(shape, self.data).ok()
    }
    pub fn map<U: Clone>(&self, f: impl Fn(&T) -> U) -> Tensor<U> {
        Tensor {
            shape: self.shape.clone(),
            data: self.data.iter().map(f).collect(),
        }
    }
}

/// A tensor of either element type, as fed to and returned from a model: `f32` data (in the
/// precision `T` the engine computes in) or `i32` indices (class ids).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<T> {
    F(Tensor<T>),
    I(Tensor<i32>),
}

impl<T: Clone> Value<T> {
    pub fn dtype(&self) -> DType {
        match self {
            Value::F(_) => DType::F32,
            Value::I(_) => DType::I32,
        }
    }
    pub fn shape(&self) -> &Shape {
        match self {
            Value::F(t) => t.shape(),
            Value::I(t) => t.shape(),
        }
    }
    pub fn ty(&self) -> TensorType {
        TensorType {
            dtype: self.dtype(),
            shape: self.shape().clone(),
        }
    }
    pub fn as_f(&self) -> Option<&Tensor<T>> {
        match self {
            Value::F(t) => Some(t),
            Value::I(_) => None,
        }
    }
    pub fn as_i(&self) -> Option<&Tensor<i32>> {
        match self {
            Value::I(t) => Some(t),
            Value::F(_) => None,
        }
    }
}
