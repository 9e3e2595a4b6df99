//! The Rust tier of the elementwise activations (relu, leaky relu, sigmoid, tanh, clip, hard
//! sigmoid, erf, SiLU), written once over [`Simd`] and instantiated for AVX-512F and for AVX2 + FMA
//! inside `#[target_feature]` entry points ([`entry`]), because Cranelift has no vector type
//! wider than 128 bits. JIT'd code calls them like the direct kernels of `direct` (a
//! [`UnaryDesc`] of `u64` words in a stack slot, the arena, a slice `[begin, end)` of the
//! elements); the Cranelift lowering in `lower/elementwise.rs` is the portable tier, and
//! `JitOptions::gemm_tier` chooses.
//!
//! Each activation computes what the Cranelift tier computes, in the same operations and
//! order, so the two tiers agree to the last bit or nearly (FMA placement aside): the same
//! polynomial `exp` ([`Simd::exp`], relative error below 2e-7), sigmoid as `1/(1 + e⁻ˣ)` (SiLU
//! as `x` times that),
//! tanh as `1 − 2/(e²ˣ + 1)` with an odd Taylor polynomial below `|x| = 1/8`, erf as the
//! Cranelift tier's `erf` (a polynomial near 0, `1 − e^{p(|x|)}` in the tails). Relu, leaky
//! relu, clip and hard sigmoid are exact and follow the interpreter's comparisons: NaN stays
//! NaN, `−0` stays `−0` (x86's `max`/`min` return their second operand for NaN and for equal
//! zeros, so `max(lo, x)` is the interpreter's `if x < lo { lo } else { x }`).
//!
//! Binary ops (`add`, `sub`, `mul`, `div`: HardSwish's product, a squeeze-and-excitation
//! scale), of one shape or broadcast in rows ([`BinaryDesc::broadcast`]), have a kernel here
//! too ([`BinaryDesc`], [`binary_entry`]); each is one correctly rounded IEEE operation, so
//! every tier gives the interpreter's bits.
//!
//! The elements are walked four registers at a time, then one register, then one masked
//! partial register: nothing outside `[begin, end)` is read or written, so the output may be
//! the input (the plan writes an activation over the input it is the last to read). Nothing
//! here panics (the code runs inside JIT frames that cannot unwind).

use crate::direct::{Entry, Words};
use crate::lower::broadcast_strides;
use crate::simd::Isa;
#[cfg(target_arch = "x86_64")]
use crate::simd::{Avx2, Avx512, EXP_OVERFLOW, Simd};
use kiln_ir::{Activation, BinaryOp};

/// `UnaryDesc::act`.
pub const RELU: u64 = 0;
pub const LEAKY_RELU: u64 = 1;
pub const SIGMOID: u64 = 2;
pub const TANH: u64 = 3;
pub const CLIP: u64 = 4;
pub const HARD_SIGMOID: u64 = 5;
pub const ERF: u64 = 6;
pub const SILU: u64 = 7;
pub const GELU: u64 = 8;
pub const HARD_SWISH: u64 = 9;

/// The activation `act` with parameters `a`, `b` (f32 bits: leaky relu's slope in `a`, clip's
/// bounds, hard sigmoid's `alpha`, `beta`) from the `len` floats at byte offset `x` of the
/// arena to the `len` floats at `y`; the parallel range is the elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnaryDesc {
    pub x: u64,
    pub y: u64,
    pub len: u64,
    pub act: u64,
    pub a: u64,
    pub b: u64,
}

// SAFETY: `#[repr(C)]` with u64 fields only.
unsafe impl Words for UnaryDesc {}

/// No activation (the code fused kernels take where there is none).
pub const NONE: u64 = u64::MAX;

/// The code of `act` (or [`NONE`]) and its two parameters' bits, as the descriptions hold them.
pub fn code(act: Option<Activation>) -> (u64, u64, u64) {
    let bits = |v: f32| u64::from(v.to_bits());
    match act {
        None => (NONE, 0, 0),
        Some(Activation::Relu) => (RELU, 0, 0),
        Some(Activation::LeakyRelu { alpha }) => (LEAKY_RELU, bits(alpha), 0),
        Some(Activation::Sigmoid) => (SIGMOID, 0, 0),
        Some(Activation::Tanh) => (TANH, 0, 0),
        Some(Activation::Clip { min, max }) => (CLIP, bits(min), bits(max)),
        Some(Activation::HardSigmoid { alpha, beta }) => (HARD_SIGMOID, bits(alpha), bits(beta)),
        Some(Activation::Erf) => (ERF, 0, 0),
        Some(Activation::Silu) => (SILU, 0, 0),
        Some(Activation::Gelu) => (GELU, 0, 0),
        Some(Activation::HardSwish) => (HARD_SWISH, 0, 0),
    }
}

/// Whether the activation of code `act` costs tens of operations per register (an `exp` or a
/// polynomial: sigmoid, tanh, erf, SiLU, GELU): a fused kernel then does better to apply it
/// over its finished output four registers at a time ([`activate_n`]) than a register at a
/// time as it stores.
pub fn is_long(act: u64) -> bool {
    matches!(act, SIGMOID | TANH | ERF | SILU | GELU)
}

/// A fused activation as the Rust kernels take it (a GEMM node's epilogue, a direct
/// convolution's finishing store): its [`code`] and its two parameters.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Act {
    pub code: u64,
    pub a: f32,
    pub b: f32,
}

impl Act {
    /// No activation.
    pub const NONE: Act = Act {
        code: NONE,
        a: 0.0,
        b: 0.0,
    };

    /// `act` (or none) with its parameters.
    pub fn of(act: Option<Activation>) -> Act {
        let (code, a, b) = code(act);
        Act {
            code,
            a: f32::from_bits(a as u32),
            b: f32::from_bits(b as u32),
        }
    }

    /// This activation on one register, with [`activate`]'s arithmetic.
    ///
    /// # Safety
    /// The CPU has `S`'s set.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) unsafe fn apply<S: Simd>(self, v: S::V) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { activate::<S>(self.code, self.a, self.b, v) }
    }
}

/// The activation of code `act` ([`code`]; [`NONE`]: `v` itself) with parameters `a`, `b` on
/// one register: the arithmetic of the standalone kernels, which the fused ones (the
/// depthwise convolution's) take from here so that every path gives the same bits.
///
/// # Safety
/// The CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn activate<S: Simd>(act: u64, a: f32, b: f32, v: S::V) -> S::V {
    // SAFETY: forwarded from the caller.
    unsafe {
        match act {
            RELU => Map::<S>::f(Relu, v),
            LEAKY_RELU => Map::<S>::f(LeakyRelu(a), v),
            SIGMOID => Map::<S>::f(Sigmoid, v),
            TANH => Map::<S>::f(Tanh, v),
            CLIP => Map::<S>::f(Clip(a, b), v),
            HARD_SIGMOID => Map::<S>::f(HardSigmoid(a, b), v),
            ERF => Map::<S>::f(Erf, v),
            SILU => Map::<S>::f(Silu, v),
            GELU => Map::<S>::f(Gelu, v),
            HARD_SWISH => Map::<S>::f(HardSwish, v),
            _ => v,
        }
    }
}

impl UnaryDesc {
    /// `act` over `len` floats from byte offset `x` to byte offset `y`.
    pub fn new(x: usize, y: usize, len: usize, act: Activation) -> UnaryDesc {
        let (act, a, b) = code(Some(act));
        UnaryDesc {
            x: x as u64,
            y: y as u64,
            len: len as u64,
            act,
            a,
            b,
        }
    }
}

/// The entry point of the activations for `isa`, when it has one and this CPU runs it;
/// `None` for the Cranelift tier.
pub fn entry(isa: Isa) -> Option<Entry<UnaryDesc>> {
    if !isa.available() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(unary_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(unary_avx2),
        _ => None,
    }
}

/// `BinaryDesc::op`.
pub const ADD: u64 = 0;
pub const SUB: u64 = 1;
pub const MUL: u64 = 2;
pub const DIV: u64 = 3;

/// `z[i] = x[·] op y[·]` for the `len` floats of the output at byte offset `z` of the arena,
/// the output seen as rows of `inner` floats: element `j` of row `r` reads each operand at
/// `((r / div) % modulus) * mul + j * step` floats from its byte offset (`step` is 0 or 1), so
/// that one description serves same-shape operands (one row) and the broadcasts of real
/// networks (a squeeze-and-excitation scale `[1, C, 1, 1]` over `[1, C, H, W]`: a scalar per
/// row; a bias over a batch). `z` may be an operand of the output's shape, which reads element
/// `i` at `i`. The parallel range is the output's elements.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryDesc {
    pub x: u64,
    pub y: u64,
    pub z: u64,
    pub len: u64,
    pub op: u64,
    pub inner: u64,
    pub xr: Read,
    pub yr: Read,
}

/// How a [`BinaryDesc`] reads one operand (see there), and the operand's length in floats,
/// which every row's reads are checked against.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub div: u64,
    pub modulus: u64,
    pub mul: u64,
    pub step: u64,
    pub len: u64,
}

// SAFETY: `#[repr(C)]` with u64 fields (and `Read`s, u64 fields only) only.
unsafe impl Words for BinaryDesc {}

impl BinaryDesc {
    /// `x op y` over `len` floats into `z` (byte offsets), all three of one shape.
    pub fn new(x: usize, y: usize, z: usize, len: usize, op: BinaryOp) -> BinaryDesc {
        let full = Read {
            div: 1,
            modulus: 1,
            mul: 0,
            step: 1,
            len: len as u64,
        };
        BinaryDesc {
            x: x as u64,
            y: y as u64,
            z: z as u64,
            len: len as u64,
            op: match op {
                BinaryOp::Add => ADD,
                BinaryOp::Sub => SUB,
                BinaryOp::Mul => MUL,
                BinaryOp::Div => DIV,
            },
            inner: len.max(1) as u64,
            xr: full,
            yr: full,
        }
    }

    /// `x op y` into `z` (byte offsets) for operands of dims `xd`, `yd` broadcast (numpy's
    /// rule, aligned on the last axis) to the output's `od`; `None` when a read of some
    /// operand is not of the form [`BinaryDesc`] describes (the caller keeps its general
    /// loop) or the output is empty.
    pub fn broadcast(
        (x, y, z): (usize, usize, usize),
        od: &[usize],
        xd: &[usize],
        yd: &[usize],
        op: BinaryOp,
    ) -> Option<BinaryDesc> {
        let len = od.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if len == 0 || xd.len() > od.len() || yd.len() > od.len() {
            return None;
        }
        // the output's axes longer than 1, each with both operands' strides (0: broadcast)
        let rank = od.len();
        let (sx, sy) = (broadcast_strides(xd, rank), broadcast_strides(yd, rank));
        let axes: Vec<(usize, [usize; 2])> = (0..od.len())
            .filter(|&k| od[k] > 1)
            .map(|k| (od[k], [sx[k], sy[k]]))
            .collect();
        // the rows: the longest run of last axes along which each operand is read either
        // contiguously (its stride the product of the axes after) or not at all
        let mut inner = 1usize;
        let mut step: [Option<usize>; 2] = [None, None];
        let mut cut = axes.len();
        while cut > 0 {
            let (n, s) = axes[cut - 1];
            let kind = s.map(|s| match s {
                0 => Some(0),
                s if s == inner => Some(1),
                _ => None,
            });
            let fits = (0..2).all(|o| kind[o].is_some() && (step[o].is_none() || step[o] == kind[o]));
            if !fits {
                break;
            }
            step = [kind[0], kind[1]];
            inner = inner.checked_mul(n)?;
            cut -= 1;
        }
        let prefix = &axes[..cut];
        let read = |o: usize, dims: &[usize]| -> Option<Read> {
            let step = step[o].unwrap_or(0);
            let olen = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
            // the prefix axes the operand varies along must be one run, row-major compact
            let var: Vec<usize> = (0..prefix.len()).filter(|&k| prefix[k].1[o] != 0).collect();
            let (modulus, mul, div) = match (var.first(), var.last()) {
                (Some(&g0), Some(&g1)) => {
                    if g1 - g0 + 1 != var.len()
                        || (g0..g1).any(|k| prefix[k].1[o] != prefix[k + 1].1[o] * prefix[k + 1].0)
                    {
                        return None;
                    }
                    let m = prefix[g0..=g1].iter().map(|a| a.0).product::<usize>();
                    let div = prefix[g1 + 1..].iter().map(|a| a.0).product::<usize>();
                    (m, prefix[g1].1[o], div)
                }
                _ => (1, 0, 1),
            };
            // the furthest float read stays inside the operand
            let last = (modulus - 1).checked_mul(mul)?.checked_add((inner - 1) * step)?;
            (last < olen).then_some(Read {
                div: div as u64,
                modulus: modulus as u64,
                mul: mul as u64,
                step: step as u64,
                len: olen as u64,
            })
        };
        let mut d = BinaryDesc::new(x, y, z, len, op);
        d.inner = inner as u64;
        d.xr = read(0, xd)?;
        d.yr = read(1, yd)?;
        Some(d)
    }
}

/// The entry point of the binary ops for `isa`, as [`entry`].
pub fn binary_entry(isa: Isa) -> Option<Entry<BinaryDesc>> {
    if !isa.available() {
        return None;
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Some(binary_avx512),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Some(binary_avx2),
        _ => None,
    }
}

/// # Safety
/// `d` must describe a binary node of a plan over `arena` (the JIT'd kernel passes its own),
/// and the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe extern "C" fn binary_avx512(d: *const BinaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { binary::<Avx512>(d, arena, begin, end) }
}

/// # Safety
/// As `binary_avx512`, on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe extern "C" fn binary_avx2(d: *const BinaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { binary::<Avx2>(d, arena, begin, end) }
}

/// # Safety
/// `d` must describe an activation node of a plan over `arena` (the JIT'd kernel passes its
/// own), and the CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe extern "C" fn unary_avx512(d: *const UnaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { unary::<Avx512>(d, arena, begin, end) }
}

/// # Safety
/// As `unary_avx512`, on a CPU with AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe extern "C" fn unary_avx2(d: *const UnaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    unsafe { unary::<Avx2>(d, arena, begin, end) }
}

/// One activation, lane-wise on one register.
#[cfg(target_arch = "x86_64")]
pub(crate) trait Map<S: Simd>: Copy {
    /// # Safety
    /// The CPU has `S`'s set.
    unsafe fn f(self, v: S::V) -> S::V;
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Relu;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Relu {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        // the interpreter's `if x < 0 { 0 } else { x }`: x86's `max(0, x)` is 0 where 0 > x,
        // else x (NaN, −0 included). Not a blend by `x < 0`: over a buffer in place LLVM
        // turns that into a masked store of zeros (`vmaskmovps`), which AMD's cores run
        // microcoded: a depthwise convolution with its ReLU took 1.5 times as long as without
        unsafe { S::max(S::zero(), v) }
    }
}

/// No activation.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Ident;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Ident {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        v
    }
}

/// Any activation, chosen per register by its code (for those whose arithmetic outweighs
/// the choice).
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Act {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe { self.apply::<S>(v) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct LeakyRelu(pub f32);
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for LeakyRelu {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        // `if x ≥ 0 { x } else { alpha·x }`: a NaN stays (NaN ≥ 0 is false, but alpha·NaN is NaN)
        unsafe { S::where_negative(v, S::mul(v, S::splat(self.0))) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Sigmoid;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Sigmoid {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        unsafe {
            // e^{−x} clamped, but +∞ where it overflows (sigmoid 0 there, as the interpreter's);
            // where it underflows, 1 + e^{−87} is 1 as 1 + 0 is. As the Cranelift tier.
            let one = S::splat(1.0);
            let nv = S::neg(v);
            let ex = S::exp_clamped(nv);
            let ex = S::select_lt(S::splat(EXP_OVERFLOW), nv, S::splat(f32::INFINITY), ex);
            S::div(one, S::add(one, ex))
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Silu;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Silu {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        // `x · sigmoid(x)`, the product the graph it replaces computed (`Mul(x, Sigmoid(x))`)
        unsafe { S::mul(v, Map::<S>::f(Sigmoid, v)) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Tanh;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Tanh {
    #[inline(always)]
    unsafe fn f(self, x: S::V) -> S::V {
        // 1 − 2/(e^{2x} + 1) cancels near 0: below |x| = 1/8 the odd Taylor polynomial to x⁷
        // (truncation below 2e-9 relative), as the Cranelift tier
        unsafe {
            let (one, two) = (S::splat(1.0), S::splat(2.0));
            // clamped: 2/(e^{88} + 1) rounds 1 − q to 1 as 2/∞ does
            let q = S::div(two, S::add(S::exp_clamped(S::mul(x, two)), one));
            let big = S::sub(one, q);
            let xx = S::mul(x, x);
            let mut p = S::splat(-17.0 / 315.0);
            for c in [2.0 / 15.0, -1.0 / 3.0, 1.0] {
                p = S::fma(p, xx, S::splat(c));
            }
            let small = S::mul(x, p);
            S::select_lt(S::abs(x), S::splat(0.125), small, big)
        }
    }
}

/// `min(max(x, lo), hi)` with the interpreter's comparisons (see the module's documentation).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn clip<S: Simd>(v: S::V, lo: f32, hi: f32) -> S::V {
    unsafe { S::min(S::splat(hi), S::max(S::splat(lo), v)) }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Clip(pub f32, pub f32);
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Clip {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        unsafe { clip::<S>(v, self.0, self.1) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct HardSigmoid(f32, f32);
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for HardSigmoid {
    #[inline(always)]
    unsafe fn f(self, v: S::V) -> S::V {
        // `alpha·x + beta` in two roundings, as the interpreter
        unsafe { clip::<S>(S::add(S::mul(v, S::splat(self.0)), S::splat(self.1)), 0.0, 1.0) }
    }
}

/// Exact GELU, `(x + x·erf(c·x))·0.5`: the operations of the graph it stands for
/// (`scale`, `erf`, `mul`, `add`, `scale`), in its order.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Gelu;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Gelu {
    #[inline(always)]
    unsafe fn f(self, x: S::V) -> S::V {
        // SAFETY: forwarded from the caller.
        unsafe {
            let e = Map::<S>::f(Erf, S::mul(S::splat(Activation::GELU_C), x));
            S::mul(S::splat(0.5), S::add(x, S::mul(x, e)))
        }
    }
}

/// HardSwish, `x · hard_sigmoid(x)` with HardSwish's constants: the product of the graph it
/// stands for.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct HardSwish;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for HardSwish {
    #[inline(always)]
    unsafe fn f(self, x: S::V) -> S::V {
        let [a, b] = Activation::HARD_SWISH;
        // SAFETY: forwarded from the caller.
        unsafe { S::mul(x, Map::<S>::f(HardSigmoid(a, b), x)) }
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Erf;
#[cfg(target_arch = "x86_64")]
impl<S: Simd> Map<S> for Erf {
    #[inline(always)]
    unsafe fn f(self, x: S::V) -> S::V {
        // the Cranelift tier's `lower_reduce::erf`, operation for operation
        unsafe {
            let t = S::abs(x);
            let s = S::mul(x, x);
            let mut p = S::splat(-5.967_617e-4);
            for c in [
                4.991_194_2e-3,
                -2.676_813_5e-2,
                1.128_199_25e-1,
                -3.761_253_4e-1,
                1.283_791_7e-1,
            ] {
                p = S::fma(p, s, S::splat(c));
            }
            let near = S::fma(p, x, x);
            let r = S::fma(S::splat(-1.728_534_7e-5), t, S::splat(3.831_971_3e-4));
            let u = S::fma(S::splat(-3.883_964_4e-3), t, S::splat(2.425_462_2e-2));
            let r = S::fma(r, s, u);
            let r = S::fma(r, t, S::splat(-1.067_778_8e-1));
            let r = S::fma(r, t, S::splat(-6.348_467e-1));
            let r = S::fma(r, t, S::splat(-1.287_175_1e-1));
            let r = S::fma(r, t, S::neg(t));
            // clamped: 1 − e^{−87} is 1 as 1 − 0 is
            let tail = S::sub(S::splat(1.0), S::exp_clamped(r));
            let tail = S::select_lt(x, S::zero(), S::neg(tail), tail);
            // 475/512
            S::select_lt(S::splat(0.927_734_4), t, tail, near)
        }
    }
}

/// `y[i] = m(x[i])` for `i < n`: four registers at a time, then one, then a partial one.
///
/// # Safety
/// `x` holds `n` floats and `y` room for `n` (they may be the same); the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn map<S: Simd, M: Map<S>>(m: M, x: *const f32, y: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access is at an index below n (the caller's contract); each register is
    // loaded before it is stored, so y = x is fine.
    unsafe {
        // no closures here: they would not inherit the entry point's features
        while i + 4 * l <= n {
            let v0 = m.f(S::load(x.add(i)));
            let v1 = m.f(S::load(x.add(i + l)));
            let v2 = m.f(S::load(x.add(i + 2 * l)));
            let v3 = m.f(S::load(x.add(i + 3 * l)));
            S::store(y.add(i), v0);
            S::store(y.add(i + l), v1);
            S::store(y.add(i + 2 * l), v2);
            S::store(y.add(i + 3 * l), v3);
            i += 4 * l;
        }
        while i + l <= n {
            S::store(y.add(i), m.f(S::load(x.add(i))));
            i += l;
        }
        if i < n {
            S::store_partial(y.add(i), n - i, m.f(S::load_partial(x.add(i), n - i)));
        }
    }
}

/// The elements `[begin, end)` of the activation `d`.
///
/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn unary<S: Simd>(d: *const UnaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: the caller passes a valid description.
    let d = unsafe { *d };
    let (Ok(b), Ok(e)) = (usize::try_from(begin), usize::try_from(end)) else {
        return;
    };
    if b > e || e as u64 > d.len {
        return;
    }
    let x = arena.wrapping_add(d.x as usize).cast::<f32>().wrapping_add(b) as *const f32;
    let y = arena.wrapping_add(d.y as usize).cast::<f32>().wrapping_add(b);
    let n = e - b;
    let (pa, pb) = (f32::from_bits(d.a as u32), f32::from_bits(d.b as u32));
    // SAFETY: `[begin, end)` lies inside both values (checked against their length above).
    unsafe { activate_n::<S>(d.act, pa, pb, x, y, n) }
}

/// `y[i] = ` the activation of code `act` ([`code`]) with parameters `a`, `b` of `x[i]`, for
/// `i < n` (nothing for [`NONE`]), with [`activate`]'s arithmetic.
///
/// # Safety
/// `x` holds `n` floats and `y` room for `n` (they may be the same); the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn activate_n<S: Simd>(act: u64, a: f32, b: f32, x: *const f32, y: *mut f32, n: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match act {
            RELU => map::<S, _>(Relu, x, y, n),
            LEAKY_RELU => map::<S, _>(LeakyRelu(a), x, y, n),
            SIGMOID => map::<S, _>(Sigmoid, x, y, n),
            TANH => map::<S, _>(Tanh, x, y, n),
            CLIP => map::<S, _>(Clip(a, b), x, y, n),
            HARD_SIGMOID => map::<S, _>(HardSigmoid(a, b), x, y, n),
            ERF => map::<S, _>(Erf, x, y, n),
            SILU => map::<S, _>(Silu, x, y, n),
            GELU => map::<S, _>(Gelu, x, y, n),
            HARD_SWISH => map::<S, _>(HardSwish, x, y, n),
            _ => {}
        }
    }
}

/// One binary op, lane-wise on two registers.
#[cfg(target_arch = "x86_64")]
trait Zip<S: Simd>: Copy {
    /// # Safety
    /// The CPU has `S`'s set.
    unsafe fn f(self, a: S::V, b: S::V) -> S::V;
}

macro_rules! zips {
    ($($name:ident: $method:ident;)*) => {$(
        #[cfg(target_arch = "x86_64")]
        #[derive(Clone, Copy)]
        struct $name;
        #[cfg(target_arch = "x86_64")]
        impl<S: Simd> Zip<S> for $name {
            #[inline(always)]
            unsafe fn f(self, a: S::V, b: S::V) -> S::V {
                unsafe { S::$method(a, b) }
            }
        }
    )*};
}

zips! {
    Add: add;
    Sub: sub;
    Mul: mul;
    Div: div;
}

/// Where one operand's registers come from: `n` floats from a pointer, or one float in every
/// lane.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
enum Src<S: Simd> {
    At(*const f32),
    Splat(S::V),
}

#[cfg(target_arch = "x86_64")]
impl<S: Simd> Src<S> {
    /// The register at float `i`.
    ///
    /// # Safety
    /// An `At` pointer holds `i + LANES` floats; the CPU has `S`'s set.
    #[inline(always)]
    unsafe fn at(self, i: usize) -> S::V {
        match self {
            // SAFETY: the caller's bound.
            Src::At(p) => unsafe { S::load(p.add(i)) },
            Src::Splat(v) => v,
        }
    }

    /// The `n < LANES` floats at `i`, as [`Simd::load_partial`].
    ///
    /// # Safety
    /// An `At` pointer holds `i + n` floats; the CPU has `S`'s set.
    #[inline(always)]
    unsafe fn part(self, i: usize, n: usize) -> S::V {
        match self {
            // SAFETY: the caller's bound.
            Src::At(p) => unsafe { S::load_partial(p.add(i), n) },
            Src::Splat(v) => v,
        }
    }
}

/// `z[i] = o(x[i], y[i])` for `i < n`, as [`map`], each operand read through its [`Src`].
///
/// # Safety
/// `x`, `y` hold `n` floats (or are splats) and `z` room for `n` (it may be an `At` operand);
/// the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn zip<S: Simd, O: Zip<S>>(o: O, x: Src<S>, y: Src<S>, z: *mut f32, n: usize) {
    let l = S::LANES;
    let mut i = 0;
    // SAFETY: every access is at an index below n; each register pair is loaded before its
    // result is stored.
    unsafe {
        while i + 4 * l <= n {
            let v0 = o.f(x.at(i), y.at(i));
            let v1 = o.f(x.at(i + l), y.at(i + l));
            let v2 = o.f(x.at(i + 2 * l), y.at(i + 2 * l));
            let v3 = o.f(x.at(i + 3 * l), y.at(i + 3 * l));
            S::store(z.add(i), v0);
            S::store(z.add(i + l), v1);
            S::store(z.add(i + 2 * l), v2);
            S::store(z.add(i + 3 * l), v3);
            i += 4 * l;
        }
        while i + l <= n {
            S::store(z.add(i), o.f(x.at(i), y.at(i)));
            i += l;
        }
        if i < n {
            let r = o.f(x.part(i, n - i), y.part(i, n - i));
            S::store_partial(z.add(i), n - i, r);
        }
    }
}

/// One row piece of `o`: `n` floats of each operand from `x`, `y` (a contiguous run when its
/// step is 1, one float for every lane when 0) into `z`.
///
/// # Safety
/// As [`zip`], with `x` and `y` holding `n` floats when their step is 1 and one when 0.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn zip_steps<S: Simd, O: Zip<S>>(
    o: O,
    (x, xs): (*const f32, u64),
    (y, ys): (*const f32, u64),
    z: *mut f32,
    n: usize,
) {
    // SAFETY: the caller's bounds; a step-0 operand is read once, here.
    unsafe {
        let src = |p: *const f32, s: u64| {
            if s == 0 {
                Src::Splat(S::splat(*p))
            } else {
                Src::At(p)
            }
        };
        match (xs, ys) {
            (1, 1) => zip::<S, O>(o, Src::At(x), Src::At(y), z, n),
            (0, 1) => zip::<S, O>(o, src(x, 0), Src::At(y), z, n),
            (1, 0) => zip::<S, O>(o, Src::At(x), src(y, 0), z, n),
            _ => zip::<S, O>(o, src(x, xs), src(y, ys), z, n),
        }
    }
}

/// The elements `[begin, end)` of the binary op `d`, row piece by row piece.
///
/// # Safety
/// As the entry points.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn binary<S: Simd>(d: *const BinaryDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: the caller passes a valid description.
    let d = unsafe { *d };
    let (Ok(b), Ok(e)) = (usize::try_from(begin), usize::try_from(end)) else {
        return;
    };
    let inner = d.inner as usize;
    if b > e || e as u64 > d.len || inner == 0 || d.xr.div == 0 || d.yr.div == 0 {
        return;
    }
    if d.xr.modulus == 0 || d.yr.modulus == 0 || d.xr.step > 1 || d.yr.step > 1 {
        return;
    }
    let base = |off: u64| arena.wrapping_add(off as usize).cast::<f32>();
    let (x, y, z) = (base(d.x) as *const f32, base(d.y) as *const f32, base(d.z));
    // the float of operand `r` where row `row` reads its element `j`, if a piece of `n` from
    // there stays inside it
    let start = |r: &Read, row: usize, j: usize, n: usize| -> Option<usize> {
        let row = ((row as u64 / r.div) % r.modulus).checked_mul(r.mul)?;
        let at = row.checked_add(j as u64 * r.step)?;
        (at.checked_add((n as u64 - 1) * r.step)? < r.len).then_some(at as usize)
    };
    let mut i = b;
    while i < e {
        let (row, j) = (i / inner, i % inner);
        let n = (inner - j).min(e - i);
        let (Some(xi), Some(yi)) = (start(&d.xr, row, j, n), start(&d.yr, row, j, n)) else {
            return;
        };
        let (xp, yp, zp) = (x.wrapping_add(xi), y.wrapping_add(yi), z.wrapping_add(i));
        let (xa, ya) = ((xp, d.xr.step), (yp, d.yr.step));
        // SAFETY: the piece lies inside the output (`e <= len`) and each operand (`start`).
        unsafe {
            match d.op {
                ADD => zip_steps::<S, _>(Add, xa, ya, zp, n),
                SUB => zip_steps::<S, _>(Sub, xa, ya, zp, n),
                MUL => zip_steps::<S, _>(Mul, xa, ya, zp, n),
                DIV => zip_steps::<S, _>(Div, xa, ya, zp, n),
                _ => return,
            }
        }
        i += n;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// How `BinaryDesc::broadcast` reads the operands of real broadcasts, and that it leaves
    /// to the general loop an operand varying along two axes apart.
    #[test]
    fn broadcast_reads() {
        let d = |od: &[usize], xd: &[usize], yd: &[usize]| {
            BinaryDesc::broadcast((0, 0, 0), od, xd, yd, BinaryOp::Mul)
        };
        let r = |div, modulus, mul, step, len| Read {
            div,
            modulus,
            mul,
            step,
            len,
        };
        // a squeeze-and-excitation scale: one float per row of 49
        let se = d(&[1, 8, 7, 7], &[1, 8, 7, 7], &[1, 8, 1, 1]).unwrap();
        assert_eq!(
            (se.inner, se.xr, se.yr),
            (49, r(1, 8, 49, 1, 392), r(1, 8, 1, 0, 8))
        );
        // a bias over a batch: rows (image, channel), the bias by channel
        let b = d(&[2, 3, 4, 5], &[2, 3, 4, 5], &[3, 1, 1]).unwrap();
        assert_eq!((b.inner, b.xr, b.yr), (20, r(1, 6, 20, 1, 120), r(1, 3, 1, 0, 3)));
        // an operand per image over the channels
        let p = d(&[2, 3, 4, 5], &[2, 3, 4, 5], &[2, 1, 4, 5]).unwrap();
        assert_eq!(p.yr, r(3, 2, 20, 1, 40));
        // an outer product, a scalar, same shapes
        let o = d(&[4, 6], &[4, 1], &[1, 6]).unwrap();
        assert_eq!((o.inner, o.xr, o.yr), (6, r(1, 4, 1, 0, 4), r(1, 1, 0, 1, 6)));
        let s = d(&[2, 3], &[2, 3], &[]).unwrap();
        assert_eq!((s.inner, s.yr), (6, r(1, 1, 0, 0, 1)));
        assert_eq!(d(&[2, 3], &[2, 3], &[2, 3]).unwrap().inner, 6);
        assert_eq!(d(&[3, 2, 4, 5], &[3, 1, 4, 1], &[1, 2, 1, 5]), None);
        assert_eq!(d(&[0, 3], &[0, 3], &[3]), None);
    }

    /// The activation on `xs` through the entry point of `isa` (output in a separate buffer
    /// and in place), both results.
    fn run(isa: Isa, act: Activation, xs: &[f32]) -> Option<(Vec<f32>, Vec<f32>)> {
        let f = entry(isa)?;
        let n = xs.len();
        let mut arena = vec![0.0f32; 2 * n + 1];
        arena[..n].copy_from_slice(xs);
        let d = UnaryDesc::new(0, 4 * n, n, act);
        let p = arena.as_mut_ptr().cast::<u8>();
        // SAFETY: the arena holds both values; the set is available (entry checked).
        unsafe { f(&d, p, 0, n as i64) };
        let out = arena[n..2 * n].to_vec();
        let d = UnaryDesc::new(0, 0, n, act);
        // SAFETY: as above, in place.
        unsafe { f(&d, p, 0, n as i64) };
        Some((out, arena[..n].to_vec()))
    }

    /// `exp` against f64 on a grid of step 1e-4 over `[−100, 100]`: the documented relative
    /// error on `[−87, 88]`, and the limits.
    #[test]
    fn exp_error_against_f64() {
        #[target_feature(enable = "avx512f")]
        unsafe fn exp512(x: &[f32]) -> Vec<f32> {
            x.chunks(16)
                .flat_map(|c| {
                    let mut o = [0.0f32; 16];
                    // SAFETY: c has at most 16 floats, o room for 16.
                    unsafe {
                        Avx512::store(
                            o.as_mut_ptr(),
                            Avx512::exp(Avx512::load_partial(c.as_ptr(), c.len())),
                        )
                    };
                    o[..c.len()].to_vec()
                })
                .collect()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn exp256(x: &[f32]) -> Vec<f32> {
            x.chunks(8)
                .flat_map(|c| {
                    let mut o = [0.0f32; 8];
                    // SAFETY: c has at most 8 floats, o room for 8.
                    unsafe {
                        Avx2::store(o.as_mut_ptr(), Avx2::exp(Avx2::load_partial(c.as_ptr(), c.len())))
                    };
                    o[..c.len()].to_vec()
                })
                .collect()
        }
        let xs: Vec<f32> = (0..2_000_001).map(|i| -100.0 + i as f32 * 1e-4).collect();
        type F = unsafe fn(&[f32]) -> Vec<f32>;
        for (isa, f) in [(Isa::Avx512, exp512 as F), (Isa::Avx2, exp256)] {
            if !isa.available() {
                continue;
            }
            // SAFETY: the set is available.
            let got = unsafe { f(&xs) };
            let mut worst = 0.0f64;
            for (&x, &g) in xs.iter().zip(&got) {
                if (-87.0..=88.0).contains(&x) {
                    let want = f64::from(x).exp();
                    worst = worst.max((f64::from(g) - want).abs() / want);
                }
            }
            // measured: 7.6e-8 (about 1.3 units in the last place) on both sets
            assert!(worst < 1e-7, "{isa:?}: max relative error {worst:e}");
            // SAFETY: as above.
            let special = unsafe {
                f(&[
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    89.0,
                    -104.0,
                    0.0,
                    -0.0,
                ])
            };
            assert!(special[0].is_nan());
            assert_eq!(
                &special[1..],
                &[f32::INFINITY, 0.0, f32::INFINITY, 0.0, 1.0, 1.0],
                "{isa:?}"
            );
        }
    }

    #[test]
    fn every_activation_on_lengths_around_registers() {
        let acts = [
            Activation::Relu,
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::Clip { min: -1.0, max: 2.5 },
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            Activation::Erf,
            Activation::Silu,
            Activation::Gelu,
            Activation::HardSwish,
        ];
        for isa in [Isa::Avx512, Isa::Avx2] {
            for act in acts {
                for n in (0..70).chain([255, 1000]) {
                    let xs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
                    let Some((out, inplace)) = run(isa, act, &xs) else {
                        continue;
                    };
                    for (i, &x) in xs.iter().enumerate() {
                        let x64 = f64::from(x);
                        let want = match act {
                            Activation::Relu => x64.max(0.0),
                            Activation::LeakyRelu { .. } => {
                                if x64 < 0.0 {
                                    0.1 * x64
                                } else {
                                    x64
                                }
                            }
                            Activation::Sigmoid => 1.0 / (1.0 + (-x64).exp()),
                            Activation::Tanh => x64.tanh(),
                            Activation::Clip { .. } => x64.clamp(-1.0, 2.5),
                            Activation::HardSigmoid { .. } => (0.2 * x64 + 0.5).clamp(0.0, 1.0),
                            Activation::Erf => libm_erf(x64),
                            Activation::Silu => x64 / (1.0 + (-x64).exp()),
                            Activation::Gelu => 0.5 * x64 * (1.0 + libm_erf(x64 / std::f64::consts::SQRT_2)),
                            Activation::HardSwish => x64 * (x64 / 6.0 + 0.5).clamp(0.0, 1.0),
                        };
                        let g = f64::from(out[i]);
                        assert!(
                            (g - want).abs() <= 1e-6 + 1e-6 * want.abs(),
                            "{isa:?} {act:?} n={n} x={x}: {g} vs {want}"
                        );
                        assert_eq!(out[i].to_bits(), inplace[i].to_bits(), "{isa:?} {act:?} in place");
                    }
                }
            }
        }
    }

    /// erf in f64 by its Maclaurin series (|x| ≤ 6 here: enough terms).
    fn libm_erf(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for k in 1..200 {
            term *= -x * x / k as f64;
            sum += term / (2 * k + 1) as f64;
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    }
}
