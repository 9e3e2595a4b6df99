//! The direct convolution vectorized along the output rows, for images with few channels (a
//! network's first layer, its *stem*) and for pointwise products over few channels on small
//! maps: a register holds `LANES` neighbouring output pixels of one channel, so that the sums
//! of a block of pixels and channels are stored straight into C's rows (a channel's pixels are
//! a row of C) — no buffer of partial sums and no transposition, which the channel-vectorized
//! kernel ([`crate::direct::DirectConvJob`]) needs, and no scratch moved into C after the
//! product, which the wide GEMM needs.
//!
//! A stem's image is read from the GEMM driver's phase copy of a wide product
//! ([`crate::gemm::Shifted`]): zero-padded, and at a stride split into its phases, so that
//! each tap of a run of output pixels of a row is a run of the copy; a pointwise product's
//! image is read in place, its planes one row of pixels each
//! (`gemm::DirectConv::pointwise_by_rows`).
//! A block of output pixels (up to four registers on AVX-512, two on AVX2) by five output
//! channels sums every tap in registers (one load per register of pixels, one broadcast weight
//! per channel, an FMA for each pair, the taps in `k`'s order as in the other kernels), then
//! adds the bias and the residual, applies the activation (ReLU, clip or SiLU; any other
//! over the span's stored rows, [`in_block`]) and stores. A row's last register
//! of pixels is stored under a mask; it is loaded whole where that stays inside what the
//! kernel reads (a stem's copy has room past its rows, [`row_slack`]; the lanes past the row
//! are computed and not stored), else under a mask (an image read in place). A stem has 27
//! to 147 taps, all of them a block's in one pass: its weights (a few KiB per block of
//! channels) and the copy's rows an output row reads stay in L1 while the blocks sweep the
//! row; a pointwise product's blocks take a span of a few registers of pixels, whose floats
//! stay in L1, before the next span.
//!
//! Nothing here panics (the code runs inside JIT frames that cannot unwind).

#[cfg(target_arch = "x86_64")]
use crate::direct::DirectConvJob;
#[cfg(target_arch = "x86_64")]
use crate::simd::Simd;

/// The most output channels of a block: five broadcast weights per tap beside four registers
/// of pixels (AVX-512: 20 accumulators, the 4 registers of pixels and a weight in its 32; with
/// six channels, 24 accumulators, the compiler held all six weights and kept two accumulators
/// on the stack) or two (AVX2: 10 accumulators of its 16).
pub const ROW_CHANNELS: usize = 5;

/// The registers of pixels of a block on a set of `lanes` lanes.
pub const fn row_registers(lanes: usize) -> usize {
    if lanes >= 16 { 4 } else { 2 }
}

/// The floats past its phase copy a stem's copy holds: a row's last register of pixels reads
/// a whole register past the row's last pixel (lanes that are computed and not stored).
pub const fn row_slack(lanes: usize) -> usize {
    2 * lanes
}

/// The direct convolution of `j` along output rows: for each output row of the job's pixels
/// (`cols`, `p = y·ow + x`), each block of at most [`ROW_CHANNELS`] of its channels (`rows`,
/// in blocks as even as they come), blocks of at most [`row_registers`] registers of the
/// row's pixels (as even as they come; the last register of a row stored under a mask, and
/// loaded under one where a whole register would pass the end of `pad`). Where
/// `j.span` is not 0 every block of channels takes a span of at most that many pixels of an
/// output row (whole registers, as even as they come) before the next span: the whole row
/// for a stem whose weights are small ([`ROWS_FIRST_WEIGHTS`]), so that its copy is read once
/// from L2, a few registers for a pointwise product, whose floats stay in L1; else each block
/// of channels sweeps all the job's rows before the next (its weights stay in L1, C written
/// as a few long runs). Tap `k` of output pixel `(y, x)` reads `pad[off[k] + y·steps[0] + x]`
/// (`steps[1]` is 1: a phase copy, or the image's planes); channel `o`'s weight of tap `k` is
/// `wt[(o − o % pw)·K + k·pw + o % pw]`, as for the channel-vectorized kernel. The job's
/// `finish` (bias, residual, activation) is applied as the sums are stored, when it has one.
///
/// # Safety
/// `j.c` is valid for the job's rows and columns (rows `l` apart, as is the residual's);
/// `steps[1] == 1`; every tap of every pixel of the job's output rows lies in `pad`; `wt`
/// holds `off.len()·opad` floats, `opad ≥ rows[1]` a multiple of `pw`; the bias (when not
/// null) one float per row; the CPU has `S`'s set.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn direct_conv_rows<S: Simd>(j: &DirectConvJob) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match row_registers(S::LANES) {
            4 => rows_driver::<S, 4>(j),
            _ => rows_driver::<S, 2>(j),
        }
    }
}

/// [`direct_conv_rows`] with blocks of up to `PV` registers of pixels.
///
/// # Safety
/// As [`direct_conv_rows`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn rows_driver<S: Simd, const PV: usize>(j: &DirectConvJob) {
    let [p0, p1] = j.cols;
    let l = S::LANES;
    if p0 >= p1 || j.ow == 0 || j.rows[0] >= j.rows[1] {
        return;
    }
    // the furthest tap's offset
    let far = j.off.iter().copied().max().unwrap_or(0);
    // the channels in blocks as even as they come (16 = 4 + 4 + 4 + 4, not 5 + 5 + 5 + 1)
    let channels = j.rows[1] - j.rows[0];
    let blocks = channels.div_ceil(ROW_CHANNELS);
    let (size, bigger) = (channels / blocks, channels % blocks);
    let block = |blk: usize| {
        (
            j.rows[0] + blk * size + blk.min(bigger),
            size + usize::from(blk < bigger),
        )
    };
    // the output row from pixel p: its row, first pixel and end within the job
    let row = |p: usize| {
        let (y, x0) = (p / j.ow, p % j.ow);
        (y, x0, j.ow.min(x0 + (p1 - p)))
    };
    if j.span > 0 {
        // every block of channels over a span of an output row (the whole row, or as much of
        // it as `span` says) before the next span: the image's floats that span reads stay
        // in L1 through all the blocks
        let mut p = p0;
        while p < p1 {
            let (y, x0, x1) = row(p);
            // the rest of the row in spans of whole registers as even as they come
            let regs = (x1 - x0).div_ceil(l);
            let most = (j.span / l).max(1);
            let x1 = x1.min(x0 + regs.div_ceil(regs.div_ceil(most)) * l);
            for blk in 0..blocks {
                // SAFETY: forwarded from the caller (row y's pixels of the job, channels of
                // its rows).
                unsafe { row_sweep::<S, PV>(j, far, y, [x0, x1], block(blk)) };
            }
            p += x1 - x0;
        }
    } else {
        for blk in 0..blocks {
            let mut p = p0;
            while p < p1 {
                let (y, x0, x1) = row(p);
                // SAFETY: as above.
                unsafe { row_sweep::<S, PV>(j, far, y, [x0, x1], block(blk)) };
                p += x1 - x0;
            }
        }
    }
}

/// The most bytes of weights (taps × output channels) for which a stem's row kernel takes every
/// block of channels over an output row before the next row (`gemm::DirectConv::by_rows` sets
/// [`DirectConvJob::span`]; the copy read once from L2), rather than each block over every row
/// (its weights in L1 while the copy streams by).
/// Measured on AVX-512 (an Intel Xeon, family 6 model 207, L1d 48 KiB, L2 2 MiB; one thread,
/// each convolution alone with its bias and ReLU, ms, three alternations, blocks first → rows
/// first): 3 × 3 s2 16 ← 3 on 224 × 224 0.169–0.176 → 0.159–0.161, 32 ← 3 0.277–0.288 →
/// 0.260–0.272, 32 ← 3 on 299 × 299 0.54–0.59 → 0.51–0.52; 64 ← 3 (SqueezeNet's, and VGG's at
/// stride 1) alike there. But in their networks (an Intel Xeon, family 6 model 167; `kiln bench
/// --profile`, one thread, four to six alternations, rows first → blocks first) those two run
/// faster blocks first — SqueezeNet 1.1's 3 × 3 s2 64 ← 3 0.511–0.528 → 0.468–0.480 ms, VGG-11's
/// 3 × 3 64 ← 3 on 224 × 224 2.21 → 1.76 — where the MobileNets' 32 ← 3 runs slower (0.333 →
/// 0.345) and MNASNet's 16 ← 3 alike: 4 KiB, between the 32-channel stems' 3.4 KiB and the
/// 64-channel stems' 6.8 KiB. ResNet's 7 × 7 s2 64 ← 3 (37 KiB of weights) keeps blocks first
/// (rows first in ResNet-18: 1.89 → 2.05 ms).
pub const ROWS_FIRST_WEIGHTS: usize = 4 << 10;

/// Output row `y`'s pixels `[x0, x1)` for the `oc` channels from `o0`, in blocks of up to `PV`
/// registers of pixels, then the job's activation over them where the blocks do not apply it
/// ([`in_block`]); `far` is the furthest tap's offset in `pad`.
///
/// # Safety
/// As [`direct_conv_rows`], with the pixels and channels the job's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_sweep<S: Simd, const PV: usize>(
    j: &DirectConvJob,
    far: usize,
    y: usize,
    [x0, x1]: [usize; 2],
    (o0, oc): (usize, usize),
) {
    let l = S::LANES;
    let mut x = x0;
    while x < x1 {
        // the row's registers in blocks as even as they come (13 = 4 + 3 + 3 + 3, not 4 + 4 +
        // 4 + 1, whose last block would have too few sums to hide the FMAs' latency)
        let regs = (x1 - x).div_ceil(l);
        let nv = regs.div_ceil(regs.div_ceil(PV));
        let at = Block { y, x, x1, o0, oc };
        // SAFETY: forwarded from the caller: pixels x.. of row y below x1 ≤ ow (their taps
        // inside the copy or the image; the last register masked where x1 ends inside it),
        // channels o0..o0 + oc of the job's rows.
        unsafe {
            // the last register under a mask where the row ends inside it and a whole
            // register at the furthest tap would pass the end of `pad` (an image read in
            // place; a stem's copy has room past every row)
            let whole = far
                .checked_add(y * j.steps[0] + x + nv * l)
                .is_some_and(|end| end <= j.pad.len());
            match (nv, oc > 4, x1 - x < nv * l && !whole) {
                (1, true, m) => row_block_masked::<S, 1, ROW_CHANNELS>(j, at, m),
                (2, true, m) => row_block_masked::<S, 2, ROW_CHANNELS>(j, at, m),
                (3, true, m) if PV > 3 => row_block_masked::<S, 3, ROW_CHANNELS>(j, at, m),
                (_, true, m) => row_block_masked::<S, PV, ROW_CHANNELS>(j, at, m),
                (1, false, m) => row_block_masked::<S, 1, 4>(j, at, m),
                (2, false, m) => row_block_masked::<S, 2, 4>(j, at, m),
                (3, false, m) if PV > 3 => row_block_masked::<S, 3, 4>(j, at, m),
                (_, false, m) => row_block_masked::<S, PV, 4>(j, at, m),
            }
        }
        x += nv * l;
    }
    // any other activation than the blocks' over the stored pixels (in L1), a channel at a
    // time
    if in_block(j) == crate::elementwise_kernels::NONE
        && let Some(f) = j.finish
    {
        for o in o0..o0 + oc {
            // SAFETY: row o of the job's rows, pixels x0..x1 of output row y (the caller's).
            unsafe {
                let at = j.c.add(o * j.l + y * j.ow + x0);
                crate::elementwise_kernels::activate_n::<S>(f.act.code, f.act.a, f.act.b, at, at, x1 - x0);
            }
        }
    }
}

/// Where a block lies: output row `y`, pixels from `x` (those below `x1` stored), channels
/// `o0..o0 + oc`.
#[derive(Clone, Copy)]
struct Block {
    y: usize,
    x: usize,
    x1: usize,
    o0: usize,
    oc: usize,
}

/// [`row_block`] with its last register of pixels under a mask where `masked` (the row
/// ends inside it), else whole.
///
/// # Safety
/// As [`row_block`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_block_masked<S: Simd, const NV: usize, const OC: usize>(
    j: &DirectConvJob,
    b: Block,
    masked: bool,
) {
    use crate::elementwise_kernels::{CLIP, NONE, RELU, SILU};
    // SAFETY: forwarded from the caller.
    unsafe {
        match (masked, in_block(j)) {
            (true, RELU) => row_block::<S, NV, OC, true, RELU>(j, b),
            (true, CLIP) => row_block::<S, NV, OC, true, CLIP>(j, b),
            (true, SILU) => row_block::<S, NV, OC, true, SILU>(j, b),
            (true, _) => row_block::<S, NV, OC, true, NONE>(j, b),
            (false, RELU) => row_block::<S, NV, OC, false, RELU>(j, b),
            (false, CLIP) => row_block::<S, NV, OC, false, CLIP>(j, b),
            (false, SILU) => row_block::<S, NV, OC, false, SILU>(j, b),
            (false, _) => row_block::<S, NV, OC, false, NONE>(j, b),
        }
    }
}

/// The activation the job's blocks apply to each register before its store, a constant of
/// the block's code: the job's where it is ReLU, clip (ReLU6) or SiLU, the stems' and
/// pointwise products' of the networks measured; else none, and any other is applied by
/// [`row_sweep`] over the stored pixels, once per channel of a block's span. (In the blocks,
/// the whole match over the activations per register kept every sum on the stack: the 3 ×
/// 3 s2 stems 64 ← 3 and 32 ← 3 on 224 × 224 0.47 → 0.43 and 0.27 → 0.24 ms without it.)
fn in_block(j: &DirectConvJob) -> u64 {
    use crate::elementwise_kernels::{CLIP, NONE, RELU, SILU};
    match j.finish.map_or(NONE, |f| f.act.code) {
        c @ (RELU | CLIP | SILU) => c,
        _ => NONE,
    }
}

/// `NV` registers of pixels from `b.x` by `OC ≥ b.oc` channels from `b.o0` (the channels past
/// `b.oc` computed with channel `b.o0`'s weights and not stored): every tap, then the finish
/// and the stores of the pixels below `b.x1`. With `MASK` the last register's lanes from
/// `b.x1` are neither read nor stored; without, they are read and not stored. `ACT` is the
/// activation applied to each register before its store ([`in_block`]).
///
/// # Safety
/// As [`direct_conv_rows`], with `b.x + (NV − 1)·LANES < b.x1 ≤ ow`, `0 < b.oc ≤ OC` and
/// `b.o0 + b.oc ≤ rows[1]`; without `MASK`, every tap's `NV` whole registers of pixels lie in
/// `pad` (`row_sweep` checks them against the furthest tap).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_block<S: Simd, const NV: usize, const OC: usize, const MASK: bool, const ACT: u64>(
    j: &DirectConvJob,
    b: Block,
) {
    let l = S::LANES;
    let kk = j.off.len();
    // each channel's weights: its panel, from its column, a tap every pw floats
    let wt: [*const f32; OC] = std::array::from_fn(|c| {
        let o = if c < b.oc { b.o0 + c } else { b.o0 };
        j.wt.as_ptr().wrapping_add((o - o % j.pw) * kk + o % j.pw)
    });
    let base = b.y * j.steps[0] + b.x;
    let pad = j.pad.as_ptr();
    // the pixels of the last register below x1
    let last = (b.x1 - b.x - (NV - 1) * l).min(l);
    // SAFETY (the whole body): the taps' registers inside `pad` (whole ones checked by the
    // caller, the last masked at x1 otherwise), weights inside `wt`, stores of the pixels
    // below x1 of the rows o0..o0 + oc of C (the caller's contract).
    unsafe {
        let mut acc = [[S::zero(); NV]; OC];
        // (a running offset into the weights, not k·pw: the product and the loop's index
        // took a register the 7 × 7 stem's blocks of three registers then spilled)
        let (xs, mut kp) = (pad.add(base), 0);
        for &off in j.off {
            let at = xs.add(off);
            let xv: [S::V; NV] = std::array::from_fn(|v| {
                if MASK && v == NV - 1 {
                    S::load_partial(at.add(v * l), last)
                } else {
                    S::load(at.add(v * l))
                }
            });
            for (row, w) in acc.iter_mut().zip(wt) {
                let w = S::splat(*w.add(kp));
                for (a, x) in row.iter_mut().zip(xv) {
                    *a = S::fma(x, w, *a);
                }
            }
            kp += j.pw;
        }
        // each channel's sums by a constant index, so that they stay in registers through
        // the epilogue (a loop over the channels, not unrolled, left every sum on the stack);
        // the channels past oc skipped
        const { assert!(OC <= ROW_CHANNELS && ROW_CHANNELS == 5) };
        macro_rules! finish {
            ($($c:literal)*) => {$(
                if $c < b.oc
                    && let Some(row) = acc.get($c)
                {
                    finish_row::<S, NV, ACT>(j, b, b.o0 + $c, row);
                }
            )*};
        }
        finish!(0 1 2 3 4);
    }
}

/// Channel `o`'s sums `row` of a block at `b` through the job's finish (the bias, the
/// residual, the activation `ACT`, as [`row_block`] says) into C's row, the pixels below
/// `b.x1`.
///
/// Every register but the last is stored whole without a test, and the finish, the bias and
/// the residual are tested once per row of the block, not per register: a stem's 27 taps per
/// block leave the epilogue a third of its time (on an Intel Xeon, family 6 model 167, one
/// thread, alone, ms, per register → per row: 3 × 3 s2 64 ← 3 on 224 × 224 0.417–0.422 →
/// 0.393–0.395, 32 ← 3 0.243–0.245 → 0.232, 16 ← 3 0.148–0.151 → 0.142–0.144; 7 × 7 s2 64 ← 3
/// 1.669–1.673 → 1.626–1.633; MNASNet's six row kernels 0.351 → 0.333).
///
/// # Safety
/// As [`row_block`], with `o` one of the block's channels.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn finish_row<S: Simd, const NV: usize, const ACT: u64>(
    j: &DirectConvJob,
    b: Block,
    o: usize,
    row: &[S::V; NV],
) {
    let l = S::LANES;
    let fin = j.finish;
    // SAFETY: channel o's bias and C's (and the residual's) row o at the block's pixels
    // below x1 (the caller's contract).
    unsafe {
        let at0 = o * j.l + b.y * j.ow + b.x;
        // every register but the last lies below x1 (the block's contract): stored whole
        let last = (b.x1 - b.x - (NV - 1) * l).min(l);
        // (a macro, not a closure: a closure is not compiled for the entry's target features,
        // so the intrinsics inside it would be calls)
        macro_rules! store {
            ($v:expr, $r:expr) => {{
                let (v, r) = ($v, $r);
                let at = j.c.add(at0 + v * l);
                if v + 1 < NV || last == l {
                    S::store(at, r);
                } else {
                    S::store_prefix(at, last, r);
                }
            }};
        }
        let Some(f) = fin else {
            for (v, &a) in row.iter().enumerate() {
                store!(v, a);
            }
            return;
        };
        let bias = if f.bias.is_null() {
            S::zero()
        } else {
            S::splat(*f.bias.add(o))
        };
        let has_bias = !f.bias.is_null();
        // (the residual's test once per row of the block, not per register)
        if f.res.is_null() {
            for (v, &a) in row.iter().enumerate() {
                let r = if has_bias { S::add(a, bias) } else { a };
                // (a constant: any other follows the stores, `row_sweep`)
                store!(
                    v,
                    crate::elementwise_kernels::activate::<S>(ACT, f.act.a, f.act.b, r)
                );
            }
        } else {
            for (v, &a) in row.iter().enumerate() {
                let r = if has_bias { S::add(a, bias) } else { a };
                let res = f.res.add(at0 + v * l);
                let rv = if v + 1 < NV || last == l {
                    S::load(res)
                } else {
                    S::load_partial(res, last)
                };
                let r = S::add(r, rv);
                store!(
                    v,
                    crate::elementwise_kernels::activate::<S>(ACT, f.act.a, f.act.b, r)
                );
            }
        }
    }
}
