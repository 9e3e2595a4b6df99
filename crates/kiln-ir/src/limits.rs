//! The size limits every shape, buffer and allocation derived from user input is checked
//! against. They are far above any real network (VGG-16 at batch 256 has 0.82·10⁹ elements in
//! its largest activation) and far below what would overflow the 64-bit offsets of generated
//! code, so a value that passes them can be indexed with plain `i64` arithmetic.
//!
//! Shape inference ([`crate::shape::infer`]) checks every node's type against them, so every
//! tensor in a [`crate::Graph`] satisfies them: its element count, each of its dims and any
//! product of a prefix of its dims are at most [`MAX_ELEMENTS`], and its rank is at most
//! [`MAX_RANK`].

/// The most elements one tensor may have: 2³¹ (8 GiB of `f32`). This keeps flat indices of
/// any tensor representable as a non-negative `i32`, which the max-pooling ids rely on.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// The most dims a tensor may have. ONNX networks use at most 5 (channel shuffles); the
/// summary and the text IR print every dim.
pub const MAX_RANK: usize = 8;

/// The most bytes one arena (a compiled model's activations and scratch) or one model's
/// weights may take: 16 GiB.
pub const MAX_BYTES: usize = 1 << 34;

/// The longest node or tensor name: 4096 bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// The element count of `dims`, or an error naming the size when it exceeds
/// [`MAX_ELEMENTS`] (or any dim does, even where another dim is 0) or the rank exceeds
/// [`MAX_RANK`].
pub fn check_dims(dims: &[usize]) -> Result<usize, String> {
    if dims.len() > MAX_RANK {
        return Err(format!(
            "rank {} is above the limit of {MAX_RANK} dims",
            dims.len()
        ));
    }
    let mut n: usize = 1;
    for &d in dims {
        if d > MAX_ELEMENTS {
            return Err(format!(
                "dim {d} is above the limit of {MAX_ELEMENTS} elements per tensor"
            ));
        }
        n = n.saturating_mul(d);
    }
    let total: u128 = dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
    if total > MAX_ELEMENTS as u128 {
        return Err(format!(
            "{} elements (shape {dims:?}) are above the limit of {MAX_ELEMENTS} elements per tensor",
            total
        ));
    }
    Ok(n)
}

/// `elements · elem_size` bytes, checked against [`MAX_BYTES`].
pub fn check_bytes(elements: usize, elem_size: usize, what: &str) -> Result<usize, String> {
    elements
        .checked_mul(elem_size)
        .filter(|&b| b <= MAX_BYTES)
        .ok_or_else(|| {
            format!(
                "{what}: {elements} elements of {elem_size} bytes are above the limit of {MAX_BYTES} bytes"
            )
        })
}

/// Adds two byte counts, checked against [`MAX_BYTES`].
pub fn add_bytes(a: usize, b: usize, what: &str) -> Result<usize, String> {
    a.checked_add(b)
        .filter(|&s| s <= MAX_BYTES)
        .ok_or_else(|| format!("{what}: {a} + {b} bytes are above the limit of {MAX_BYTES} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_within_and_beyond_the_limits() {
        assert_eq!(check_dims(&[1, 3, 224, 224]), Ok(3 * 224 * 224));
        assert_eq!(check_dims(&[]), Ok(1));
        assert_eq!(check_dims(&[0, 5]), Ok(0));
        assert!(check_dims(&[0, usize::MAX]).is_err());
        assert!(check_dims(&[1 << 16, 1 << 16]).is_err());
        assert!(check_dims(&[usize::MAX, usize::MAX]).is_err());
        assert!(check_dims(&[1; MAX_RANK + 1]).is_err());
        assert_eq!(check_dims(&[1 << 31]), Ok(1 << 31));
    }

    #[test]
    fn bytes_are_checked() {
        assert_eq!(check_bytes(10, 4, "x"), Ok(40));
        assert!(check_bytes(usize::MAX, 4, "x").is_err());
        assert!(check_bytes(MAX_BYTES / 4 + 1, 4, "x").is_err());
        assert!(add_bytes(MAX_BYTES, 1, "arena").is_err());
        assert_eq!(add_bytes(1, 2, "arena"), Ok(3));
    }
}
