//! The Rust tier of the data-movement kernels (transpose, slice, concatenation), called from
//! JIT'd code like the direct kernels of `direct`: one strided copy serves all three.
//! The Cranelift lowerings in `lower/layout.rs` are the portable tier; this one runs where the
//! kernel tier is AVX2 or AVX-512 (every AVX-512 CPU has AVX2).
//!
//! A [`CopyDesc`] says: for every index `i` of `dims`, `y[Σ i_k·ys_k] = x[Σ i_k·xs_k]`
//! (strides in elements of 4 bytes, so f32 and i32 values move alike, as raw bits). Its
//! builder, [`CopyDesc::new`], drops axes of size 1 and merges axes that are contiguous in both
//! tensors, so a channel shuffle becomes a few long runs and an NCHW ↔ NHWC transpose a 2-D
//! transpose. The kernel then copies
//! - runs that are contiguous on both sides as block copies (`copy_nonoverlapping`, memcpy);
//! - a true transpose (the output's contiguous axis is not the input's) as a 2-D transpose of
//!   the input's contiguous axis against the output's, in 8 × 8 tiles transposed in AVX2
//!   registers, tiles visited in cache blocks of 64 rows;
//! - anything else element by element.
//!
//! The parallel range (`items`) is the first axis, in blocks of `block` indices. Every address
//! the kernel forms is inside the two values the description was built from (the builder's
//! callers pass shapes validated with the graph). Nothing here panics.

use crate::direct::Words;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The largest rank a description holds (`kiln_ir::limits`'s rank limit).
pub const MAX_RANK: usize = 8;

/// Elements per item of a one-axis contiguous copy.
const RUN_CHUNK: usize = 16 * 1024;

/// Rows of the input's contiguous axis per item of a 2-D transpose, and per cache block.
const TILE_ROWS: usize = 16;
const CACHE_ROWS: usize = 64;

/// A strided copy of `rank` axes (see the module's documentation); `x`, `y` are byte offsets
/// in the arena.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyDesc {
    pub x: u64,
    pub y: u64,
    pub rank: u64,
    /// Indices of axis 0 per item of the parallel range.
    pub block: u64,
    pub dims: [u64; MAX_RANK],
    pub xs: [u64; MAX_RANK],
    pub ys: [u64; MAX_RANK],
}

// SAFETY: `#[repr(C)]` with u64 fields only.
unsafe impl Words for CopyDesc {}

/// Row-major strides of `dims`, in elements.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

impl CopyDesc {
    /// The copy of every index of `dims` from `x + Σ i_k·xs_k` to `y + Σ i_k·ys_k` (byte
    /// offsets `x`, `y`; strides in elements), simplified. `None` above [`MAX_RANK`] axes or
    /// when the lengths differ.
    pub fn new(x: usize, y: usize, dims: &[usize], xs: &[usize], ys: &[usize]) -> Option<CopyDesc> {
        if dims.len() > MAX_RANK || xs.len() != dims.len() || ys.len() != dims.len() {
            return None;
        }
        // axes of size 1 move nothing; merge an axis into the next when both sides are contiguous
        let mut ax: Vec<(usize, usize, usize)> = Vec::new();
        for ((&d, &a), &b) in dims.iter().zip(xs).zip(ys) {
            if d == 1 {
                continue;
            }
            match ax.last_mut() {
                Some(last) if last.1 == d * a && last.2 == d * b => *last = (last.0 * d, a, b),
                _ => ax.push((d, a, b)),
            }
        }
        if ax.is_empty() {
            ax.push((1, 1, 1));
        }
        let r = ax.len();
        let last = ax[r - 1];
        let transposing = last.2 == 1 && last.1 != 1;
        if transposing && let Some(p) = ax[..r - 1].iter().rposition(|a| a.1 == 1) {
            // the loop order is free: the input's contiguous axis goes just before the last
            let a = ax.remove(p);
            ax.insert(r - 2, a);
        }
        let block = match r {
            1 => RUN_CHUNK.min(ax[0].0),
            2 if transposing && ax[0].1 == 1 => TILE_ROWS.min(ax[0].0),
            _ => 1,
        };
        let mut d = CopyDesc {
            x: x as u64,
            y: y as u64,
            rank: r as u64,
            block: block as u64,
            dims: [1; MAX_RANK],
            xs: [0; MAX_RANK],
            ys: [0; MAX_RANK],
        };
        for (k, &(n, a, b)) in ax.iter().enumerate() {
            d.dims[k] = n as u64;
            d.xs[k] = a as u64;
            d.ys[k] = b as u64;
        }
        Some(d)
    }

    /// The rows copy `y[o·ystride + j] = x[o·xstride + j]` for `o < rows`, `j < len`, whose
    /// parallel range is the rows, whatever they are (a concatenation's parts share it).
    pub fn rows(x: usize, y: usize, rows: usize, len: usize, xstride: usize, ystride: usize) -> CopyDesc {
        let mut d = CopyDesc {
            x: x as u64,
            y: y as u64,
            rank: 2,
            block: 1,
            dims: [1; MAX_RANK],
            xs: [0; MAX_RANK],
            ys: [0; MAX_RANK],
        };
        d.dims[..2].copy_from_slice(&[rows as u64, len as u64]);
        d.xs[..2].copy_from_slice(&[xstride as u64, 1]);
        d.ys[..2].copy_from_slice(&[ystride as u64, 1]);
        d
    }

    /// The size of the parallel range.
    pub fn items(&self) -> usize {
        (self.dims[0] as usize).div_ceil((self.block as usize).max(1))
    }
}

/// Copies the items `[begin, end)` of `d`.
///
/// # Safety
/// `d` must describe a copy between two values of a plan over `arena` (the JIT'd kernel passes
/// its own), and the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C" fn kiln_copy_avx2(d: *const CopyDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *d };
    let (Ok(b), Ok(e)) = (usize::try_from(begin), usize::try_from(end)) else {
        return;
    };
    let rank = d.rank as usize;
    if b >= e || e > d.items() || rank == 0 || rank > MAX_RANK {
        return;
    }
    let block = (d.block as usize).max(1);
    let lo = b * block;
    let hi = (e * block).min(d.dims[0] as usize);
    let xa = arena.wrapping_add(d.x as usize).cast::<f32>().cast_const();
    let ya = arena.wrapping_add(d.y as usize).cast::<f32>();
    // SAFETY: forwarded from the caller.
    unsafe { walk(&d, 0, lo, hi, xa, ya) }
}

/// Axis `k` over `[lo, hi)` and every axis after it.
///
/// # Safety
/// As [`kiln_copy_avx2`]; `x`, `y` are the positions of index 0 of axis `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn walk(d: &CopyDesc, k: usize, lo: usize, hi: usize, x: *const f32, y: *mut f32) {
    let rank = d.rank as usize;
    let z = |v: u64| v as usize;
    if k + 2 >= rank {
        // SAFETY: forwarded.
        unsafe { inner(d, k, lo, hi, x, y) };
        return;
    }
    let (xs, ys) = (z(d.xs[k]), z(d.ys[k]));
    for i in lo..hi {
        // SAFETY: forwarded.
        unsafe {
            walk(
                d,
                k + 1,
                0,
                z(d.dims[k + 1]),
                x.wrapping_add(i * xs),
                y.wrapping_add(i * ys),
            )
        };
    }
}

/// The last one or two axes (`k` is `rank − 2` or, for one axis, 0), axis `k` over `[lo, hi)`.
///
/// # Safety
/// As [`walk`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn inner(d: &CopyDesc, k: usize, lo: usize, hi: usize, x: *const f32, y: *mut f32) {
    let z = |v: u64| v as usize;
    if k + 1 == d.rank as usize {
        // one axis
        let (xs, ys) = (z(d.xs[k]), z(d.ys[k]));
        if xs == 1 && ys == 1 {
            // SAFETY: elements lo..hi of the axis exist on both sides; the values do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(x.add(lo), y.add(lo), hi - lo) };
        } else {
            for i in lo..hi {
                // SAFETY: as above.
                unsafe { *y.add(i * ys) = *x.add(i * xs) };
            }
        }
        return;
    }
    let (n, xa, ya) = (z(d.dims[k + 1]), z(d.xs[k]), z(d.ys[k]));
    let (xb, yb) = (z(d.xs[k + 1]), z(d.ys[k + 1]));
    if xb == 1 && yb == 1 {
        for i in lo..hi {
            // SAFETY: row i's n elements exist on both sides.
            unsafe { std::ptr::copy_nonoverlapping(x.add(i * xa), y.add(i * ya), n) };
        }
    } else if xa == 1 && yb == 1 {
        // SAFETY: forwarded.
        unsafe { transpose(lo, hi, n, xb, ya, x, y) };
    } else {
        for i in lo..hi {
            for j in 0..n {
                // SAFETY: index (i, j) exists on both sides.
                unsafe { *y.add(i * ya + j * yb) = *x.add(i * xa + j * xb) };
            }
        }
    }
}

/// `y[i·ya + j] = x[i + j·xb]` for `i ∈ [lo, hi)`, `j < n`: 8 × 8 tiles in registers, the
/// edges element by element.
///
/// # Safety
/// Every such index exists on both sides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose(lo: usize, hi: usize, n: usize, xb: usize, ya: usize, x: *const f32, y: *mut f32) {
    let n8 = n / 8 * 8;
    let mut i0 = lo;
    while i0 < hi {
        let i1 = (i0 + CACHE_ROWS).min(hi);
        let full = i0 + (i1 - i0) / 8 * 8;
        for j in (0..n8).step_by(8) {
            for i in (i0..full).step_by(8) {
                // SAFETY: the tile's rows i..i+8 and columns j..j+8 exist.
                unsafe { tile8(x.add(i + j * xb), xb, y.add(i * ya + j), ya) };
            }
        }
        for i in full..i1 {
            for j in 0..n8 {
                // SAFETY: in range.
                unsafe { *y.add(i * ya + j) = *x.add(i + j * xb) };
            }
        }
        for i in i0..i1 {
            for j in n8..n {
                // SAFETY: in range.
                unsafe { *y.add(i * ya + j) = *x.add(i + j * xb) };
            }
        }
        i0 = i1;
    }
}

/// One 8 × 8 tile: `y[c·ys + r] = x[r·xs + c]` for `r, c < 8`.
///
/// # Safety
/// The 8 rows of 8 elements exist on both sides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn tile8(x: *const f32, xs: usize, y: *mut f32, ys: usize) {
    // SAFETY: rows r < 8 of 8 elements each.
    let r: [__m256; 8] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(k * xs)) });
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (c, v) in out.into_iter().enumerate() {
        // SAFETY: row c < 8 of y.
        unsafe { _mm256_storeu_ps(y.add(c * ys), v) };
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// A small deterministic generator (no dependency).
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n
        }
    }

    /// Runs `d` over an arena holding `x` at 0 and `ylen` zeros after it, as the JIT splits it
    /// over `parts` calls, and returns the y part.
    fn run(d: &CopyDesc, x: &[f32], ylen: usize, parts: usize) -> Vec<f32> {
        let mut arena = x.to_vec();
        arena.resize(x.len() + ylen, 0.0);
        let items = d.items();
        let p = arena.as_mut_ptr().cast::<u8>();
        for t in 0..parts {
            let (b, e) = (items * t / parts, items * (t + 1) / parts);
            // SAFETY: the descriptions below address x and y inside the arena.
            unsafe { kiln_copy_avx2(d, p, b as i64, e as i64) };
        }
        arena[x.len()..].to_vec()
    }

    /// Every permutation of random dims of rank 1..=6 against the index formula.
    #[test]
    fn transposes_match_the_definition() {
        if !crate::simd::Isa::Avx2.available() {
            return;
        }
        let mut g = Lcg(7);
        for round in 0..400 {
            let rank = 1 + round % 6;
            let dims: Vec<usize> = (0..rank)
                .map(|_| [1, 2, 3, 5, 8, 9, 16, 17, 33][g.below(9)])
                .collect();
            let mut perm: Vec<usize> = (0..rank).collect();
            for k in (1..rank).rev() {
                perm.swap(k, g.below(k + 1));
            }
            let n: usize = dims.iter().product();
            if n > 1 << 16 {
                continue;
            }
            let x: Vec<f32> = (0..n).map(|v| v as f32).collect();
            let xs = strides(&dims);
            let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
            let pxs: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
            let d = CopyDesc::new(0, n * 4, &od, &pxs, &strides(&od)).unwrap();
            let want: Vec<f32> = (0..n)
                .map(|flat| {
                    let mut rest = flat;
                    let mut at = 0;
                    for k in (0..rank).rev() {
                        at += (rest % od[k]) * pxs[k];
                        rest /= od[k];
                    }
                    x[at]
                })
                .collect();
            for parts in [1, 3] {
                assert_eq!(run(&d, &x, n, parts), want, "dims {dims:?} perm {perm:?} {d:?}");
            }
        }
    }

    /// Rows copies (a slice, a concatenation's part) and a long contiguous copy split in items.
    #[test]
    fn rows_and_runs() {
        if !crate::simd::Isa::Avx2.available() {
            return;
        }
        let x: Vec<f32> = (0..40_000).map(|v| v as f32).collect();
        // rows 3 × 7 taken at stride 10 from element 2, written at stride 9 from element 1
        let d = CopyDesc::rows(8, x.len() * 4 + 4, 3, 7, 10, 9);
        let y = run(&d, &x, 27, 2);
        for o in 0..3 {
            for j in 0..7 {
                assert_eq!(y[1 + o * 9 + j], x[2 + o * 10 + j]);
            }
        }
        assert_eq!(y[0], 0.0);
        let d = CopyDesc::new(0, x.len() * 4, &[1, x.len(), 1], &[0, 1, 0], &[0, 1, 0]).unwrap();
        assert_eq!((d.rank, d.items()), (1, x.len().div_ceil(RUN_CHUNK)));
        assert_eq!(run(&d, &x, x.len(), 2), x);
    }

    #[test]
    fn the_builder_merges_and_refuses() {
        // a channel shuffle [1, 2, 3, 4, 4] (0, 2, 1, 3, 4): runs of 16
        let dims = [1, 2, 3, 4, 4];
        let xs = strides(&dims);
        let perm = [0, 2, 1, 3, 4];
        let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let pxs: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
        let d = CopyDesc::new(0, 0, &od, &pxs, &strides(&od)).unwrap();
        assert_eq!(
            (d.rank, &d.dims[..3], &d.xs[..3]),
            (3, &[3, 2, 16][..], &[16, 48, 1][..])
        );
        // NCHW -> NHWC is a 2-D transpose, the input's contiguous axis first
        let d = CopyDesc::new(0, 0, &[1, 5, 6, 3], &[90, 6, 1, 30], &strides(&[1, 5, 6, 3])).unwrap();
        assert_eq!(
            (d.rank, &d.dims[..2], &d.xs[..2]),
            (2, &[30, 3][..], &[1, 30][..])
        );
        assert!(CopyDesc::new(0, 0, &[1; 9], &[1; 9], &[1; 9]).is_none());
        assert!(CopyDesc::new(0, 0, &[2, 2], &[1], &[1, 1]).is_none());
    }
}
