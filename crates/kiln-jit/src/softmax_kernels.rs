//! The Rust tier of softmax and log-softmax, written once over [`Simd`] and instantiated for
//! AVX-512F and for AVX2 + FMA inside `#[target_feature]` entry points ([`entry`]), as the
//! activations of `elementwise_kernels` are. JIT'd code calls them with a [`SoftmaxDesc`] of
//! `u64` words in a stack slot, the arena and a slice `[begin, end)` of the rows (a row is
//! one position of the other axes: `outer · inner` rows of `len` elements); the Cranelift
//! lowering in `lower/softmax_loss.rs` is the portable tier.
//!
//! Each row computes the interpreter's definition, `m` its maximum, `s = Σ exp(x − m)`, then
//! `exp(x − m) / s` (softmax) or `x − m − ln s` (log-softmax), with the tiers' polynomial
//! `exp` ([`Simd::exp`], the Cranelift tier's too) and a correctly rounded division. Where
//! the axis is the last one (`inner` 1: a row's elements are contiguous) a row runs a
//! register of its elements at a time, its sum in four registers' lanes added at the end
//! (not in the interpreter's order: the result agrees within the JIT's tolerance); where it
//! is not, a register holds one element of as many rows (consecutive positions of the inner
//! axes, each lane its own row), each lane's sum in the interpreter's order. A NaN anywhere
//! in a row makes its sum, and so every output of the row, NaN, as in the interpreter (the
//! maximum itself takes x86's NaN rule: the sum carries the NaN). `ln s` is `f32::ln`, once
//! per row.
//!
//! Every element is read before its output is written and the sum's pass writes only the
//! output of the element it reads, so the output may be the input. Nothing outside the rows
//! `[begin, end)` is read or written; nothing here panics (the code runs inside JIT frames that
//! cannot unwind).

use crate::direct::{Entry, Words};
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512, Simd};

/// Softmax (or, with `log` 1, log-softmax) from the tensor at byte offset `x` of the arena to
/// the one at `y`, along an axis of `len` elements with `inner` elements after it (the
/// product of the later axes): element `j` of row `r` at `(r / inner)·len·inner + j·inner +
/// r % inner`. The parallel range is the `rows` rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxDesc {
    pub x: u64,
    pub y: u64,
    pub len: u64,
    pub inner: u64,
    pub rows: u64,
    pub log: u64,
}

// SAFETY: `#[repr(C)]` with u64 fields only.
unsafe impl Words for SoftmaxDesc {}

impl SoftmaxDesc {
    /// The description of a softmax over `axis` (in range) of a tensor of `dims`.
    pub fn new(x: usize, y: usize, dims: &[usize], axis: usize, log: bool) -> SoftmaxDesc {
        let len = dims.get(axis).copied().unwrap_or(1);
        let inner: usize = dims.iter().skip(axis + 1).product();
        let numel: usize = dims.iter().product();
        let u = |v: usize| v as u64;
        SoftmaxDesc {
            x: u(x),
            y: u(y),
            len: u(len),
            inner: u(inner),
            rows: u(numel.checked_div(len).unwrap_or(0)),
            log: u64::from(log),
        }
    }
}

/// The entry point of softmax for `isa`, when it has one and this CPU runs it; `None` for the
/// Cranelift tier.
pub fn entry(isa: Isa) -> Option<Entry<SoftmaxDesc>> {
    if !isa.available() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(softmax_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(softmax_avx2),
        _ => None,
    }
}

/// # Safety
/// `d` must describe a softmax node of a plan over `arena` (the JIT'd kernel passes its own),
/// and the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe extern "C" fn softmax_avx512(d: *const SoftmaxDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { softmax::<Avx512>(d, arena, begin, end) }
}

/// # Safety
/// As `softmax_avx512`, on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe extern "C" fn softmax_avx2(d: *const SoftmaxDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { softmax::<Avx2>(d, arena, begin, end) }
}

/// The rows `[begin, end)` of the softmax `d`.
///
/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn softmax<S: Simd>(d: *const SoftmaxDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: the caller passes a valid description.
    let d = unsafe { *d };
    let (Ok(b), Ok(e)) = (usize::try_from(begin), usize::try_from(end)) else {
        return;
    };
    let (len, inner, log) = (d.len as usize, d.inner as usize, d.log != 0);
    if b >= e || e as u64 > d.rows || len == 0 || inner == 0 {
        return;
    }
    let x = arena.wrapping_add(d.x as usize).cast::<f32>() as *const f32;
    let y = arena.wrapping_add(d.y as usize).cast::<f32>();
    // row r's first element: (r / inner)·len·inner + r % inner; its last (len − 1)·inner
    // further, below rows·len (the tensor's elements), since r < rows
    if inner == 1 {
        for r in b..e {
            let at = r * len;
            // SAFETY: the row's len elements lie inside both tensors.
            unsafe { contiguous_row::<S>(x.wrapping_add(at), y.wrapping_add(at), len, log) };
        }
        return;
    }
    let mut r = b;
    while r < e {
        let (o, i) = (r / inner, r % inner);
        // as many rows as a register has lanes, all with the same outer position
        let n = S::LANES.min(inner - i).min(e - r);
        let at = o * len * inner + i;
        // SAFETY: rows r..r + n of the job, their elements inside both tensors.
        unsafe { strided_rows::<S>(x.wrapping_add(at), y.wrapping_add(at), len, inner, n, log) };
        r += n;
    }
}

/// One row of `len` contiguous elements from `x` to `y` (which may be `x`).
///
/// # Safety
/// `x` holds `len` floats and `y` room for as many; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn contiguous_row<S: Simd>(x: *const f32, y: *mut f32, len: usize, log: bool) {
    let l = S::LANES;
    let full = len / l * l;
    // SAFETY: every load and store below is at an index below len (full ≤ len, the tail's
    // partial accesses stop at len).
    unsafe {
        // the maximum: four registers, then one, then the tail's elements one at a time
        let ninf = S::splat(f32::NEG_INFINITY);
        let mut mx = [ninf; 4];
        let mut j = 0;
        while j + 4 * l <= full {
            for (k, m) in mx.iter_mut().enumerate() {
                *m = S::max(*m, S::load(x.add(j + k * l)));
            }
            j += 4 * l;
        }
        while j < full {
            mx[0] = S::max(mx[0], S::load(x.add(j)));
            j += l;
        }
        let v = S::max(S::max(mx[0], mx[1]), S::max(mx[2], mx[3]));
        let mut lanes = [f32::NEG_INFINITY; 16];
        S::store(lanes.as_mut_ptr(), v);
        let mut m = f32::NEG_INFINITY;
        for &t in lanes[..l]
            .iter()
            .chain(std::slice::from_raw_parts(x.add(full), len - full))
        {
            if t > m || t.is_nan() {
                m = t;
            }
        }
        // Σ exp(x − m), each exp stored as softmax's output on the way (log-softmax stores
        // nothing until its last pass reads x again)
        let ms = S::splat(m);
        let mut sum = [S::zero(); 4];
        j = 0;
        while j + 4 * l <= full {
            for (k, s) in sum.iter_mut().enumerate() {
                let t = S::exp(S::sub(S::load(x.add(j + k * l)), ms));
                if !log {
                    S::store(y.add(j + k * l), t);
                }
                *s = S::add(*s, t);
            }
            j += 4 * l;
        }
        while j < full {
            let t = S::exp(S::sub(S::load(x.add(j)), ms));
            if !log {
                S::store(y.add(j), t);
            }
            sum[0] = S::add(sum[0], t);
            j += l;
        }
        if full < len {
            // the tail's lanes past the row are −∞, whose exp adds 0 (or NaN where m is −∞,
            // when the row's own −∞ − −∞ is NaN already)
            let mut tail = [f32::NEG_INFINITY; 16];
            std::ptr::copy_nonoverlapping(x.add(full), tail.as_mut_ptr(), len - full);
            let t = S::exp(S::sub(S::load(tail.as_ptr()), ms));
            if !log {
                S::store_partial(y.add(full), len - full, t);
            }
            sum[1] = S::add(sum[1], t);
        }
        let s = S::hsum(S::add(S::add(sum[0], sum[1]), S::add(sum[2], sum[3])));
        if log {
            let (ms, ls) = (S::splat(m), S::splat(s.ln()));
            j = 0;
            while j < full {
                S::store(y.add(j), S::sub(S::sub(S::load(x.add(j)), ms), ls));
                j += l;
            }
            if full < len {
                let v = S::sub(S::sub(S::load_partial(x.add(full), len - full), ms), ls);
                S::store_partial(y.add(full), len - full, v);
            }
        } else {
            let ss = S::splat(s);
            j = 0;
            while j < full {
                S::store(y.add(j), S::div(S::load(y.add(j)), ss));
                j += l;
            }
            if full < len {
                let v = S::div(S::load_partial(y.add(full), len - full), ss);
                S::store_partial(y.add(full), len - full, v);
            }
        }
    }
}

/// `n ≤ LANES` rows whose elements lie `inner` floats apart, row `k`'s first at `x + k` (and
/// `y + k`): lane `k` of each register is row `k`, each lane's maximum and sum in the
/// interpreter's order.
///
/// # Safety
/// `x + k + j·inner` for `k < n`, `j < len` inside the input, the same offsets of `y` inside
/// the output; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn strided_rows<S: Simd>(x: *const f32, y: *mut f32, len: usize, inner: usize, n: usize, log: bool) {
    // SAFETY: every access is a partial one of n lanes at x + j·inner or y + j·inner, j < len.
    unsafe {
        let mut m = S::splat(f32::NEG_INFINITY);
        for j in 0..len {
            m = S::max(m, S::load_partial(x.add(j * inner), n));
        }
        let mut s = S::zero();
        for j in 0..len {
            let t = S::exp(S::sub(S::load_partial(x.add(j * inner), n), m));
            if !log {
                S::store_partial(y.add(j * inner), n, t);
            }
            s = S::add(s, t);
        }
        if log {
            // ln of each lane's sum, then m + that subtracted in two steps as the
            // interpreter's x − m − ln s
            let mut lanes = [0.0f32; 16];
            S::store(lanes.as_mut_ptr(), s);
            for v in &mut lanes[..S::LANES] {
                *v = v.ln();
            }
            let lse = S::load(lanes.as_ptr());
            for j in 0..len {
                let v = S::sub(S::sub(S::load_partial(x.add(j * inner), n), m), lse);
                S::store_partial(y.add(j * inner), n, v);
            }
        } else {
            for j in 0..len {
                let v = S::div(S::load_partial(y.add(j * inner), n), s);
                S::store_partial(y.add(j * inner), n, v);
            }
        }
    }
}
