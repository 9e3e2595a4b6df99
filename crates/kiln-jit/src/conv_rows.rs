//! The direct convolution of images with few channels (a network's first layer, its *stem*),
//! vectorized along the output rows: a register holds `LANES` neighbouring output pixels of
//! one channel, so that the sums of a block of pixels and channels are stored straight into
//! C's rows (a channel's pixels are a row of C) — no buffer of partial sums and no
//! transposition, which the channel-vectorized kernel ([`crate::direct::DirectConvJob`]) needs,
//! and no scratch moved into C after the product, which the wide GEMM needs.
//!
//! The image is read from the GEMM driver's phase copy of a wide product
//! ([`crate::gemm::Shifted`]): zero-padded, and at a stride split into its phases, so that
//! each tap of a run of output pixels of a row is a run of the copy. A block of output
//! pixels (up to four registers on AVX-512, two on AVX2) by five output channels sums every
//! tap in registers (one load per register of pixels, one broadcast weight per channel, an
//! FMA for each pair, the taps in `k`'s order as in the other kernels), then adds the bias
//! and the residual, applies the activation and stores. A stem has 27 to 147 taps, all of
//! them a block's in one pass: its weights (a few KiB per block of channels) and the copy's
//! rows an output row reads stay in L1 while the blocks sweep the row.
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

/// The floats past its copy the kernel may read: a row's last register of pixels reads a
/// whole register past the row's last pixel (lanes that are computed and not stored).
pub const fn row_slack(lanes: usize) -> usize {
    2 * lanes
}

/// The direct convolution of `j` along output rows: for each output row of the job's pixels
/// (`cols`, `p = y·ow + x`), each block of at most [`ROW_CHANNELS`] of its channels (`rows`,
/// in blocks as even as they come), blocks of [`row_registers`] registers of the row's pixels
/// (the last of fewer; its lanes past the row's end are computed from the copy's floats there
/// and not stored). Where all the weights are small ([`ROWS_FIRST_WEIGHTS`]: a 3 × 3 stem's)
/// every block of channels takes an output row before the next row, so that the copy is read
/// once from L2; else each block of channels sweeps all the job's rows before the next (its
/// weights stay in L1, C written as a few long runs). Tap `k` of output pixel `(y, x)` reads `pad[off[k] + y·steps[0] + x]`
/// (`steps[1]` is 1: a phase copy); channel `o`'s weight of tap `k` is
/// `wt[(o − o % pw)·K + k·pw + o % pw]`, as for the channel-vectorized kernel. The job's
/// `finish` (bias, residual, activation) is applied as the sums are stored, when it has one.
///
/// # Safety
/// `j.c` is valid for the job's rows and columns (rows `l` apart, as is the residual's);
/// `steps[1] == 1`; every tap of every pixel of the job's output rows, and of the
/// [`row_slack`] pixels past each row's end, lies in `pad`; `wt` holds `off.len()·opad`
/// floats, `opad ≥ rows[1]` a multiple of `pw`; the bias (when not null) one float per row;
/// the CPU has `S`'s set.
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
    if p0 >= p1 || j.ow == 0 || j.rows[0] >= j.rows[1] {
        return;
    }
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
    if j.off.len().saturating_mul(channels).saturating_mul(4) <= ROWS_FIRST_WEIGHTS {
        // every block of channels over an output row before the next row: the copy's rows
        // that output row reads stay in L1 through all the blocks
        let mut p = p0;
        while p < p1 {
            let (y, x0, x1) = row(p);
            for blk in 0..blocks {
                // SAFETY: forwarded from the caller (row y's pixels of the job, channels of
                // its rows).
                unsafe { row_sweep::<S, PV>(j, y, [x0, x1], block(blk)) };
            }
            p += x1 - x0;
        }
    } else {
        for blk in 0..blocks {
            let mut p = p0;
            while p < p1 {
                let (y, x0, x1) = row(p);
                // SAFETY: as above.
                unsafe { row_sweep::<S, PV>(j, y, [x0, x1], block(blk)) };
                p += x1 - x0;
            }
        }
    }
}

/// The most bytes of weights (taps × output channels) for which [`rows_driver`] takes every
/// block of channels over an output row before the next row (the copy read once from L2),
/// rather than each block over every row (its weights in L1 while the copy streams by).
/// Measured on AVX-512 (an Intel Xeon, family 6 model 207, L1d 48 KiB, L2 2 MiB; one thread,
/// each convolution alone with its bias and ReLU, ms, three alternations, blocks first → rows
/// first): 3 × 3 s2 16 ← 3 on 224 × 224 0.169–0.176 → 0.159–0.161, 32 ← 3 0.277–0.288 →
/// 0.260–0.272, 32 ← 3 on 299 × 299 0.54–0.59 → 0.51–0.52; 64 ← 3 (SqueezeNet's, and VGG's at
/// stride 1) alike. ResNet's 7 × 7 s2 64 ← 3 (37 KiB of weights) keeps blocks first.
const ROWS_FIRST_WEIGHTS: usize = 16 << 10;

/// Output row `y`'s pixels `[x0, x1)` for the `oc` channels from `o0`, in blocks of up to `PV`
/// registers of pixels.
///
/// # Safety
/// As [`direct_conv_rows`], with the pixels and channels the job's.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_sweep<S: Simd, const PV: usize>(
    j: &DirectConvJob,
    y: usize,
    [x0, x1]: [usize; 2],
    (o0, oc): (usize, usize),
) {
    let l = S::LANES;
    let mut x = x0;
    while x < x1 {
        let nv = (x1 - x).div_ceil(l).min(PV);
        let at = Block { y, x, x1, o0, oc };
        // SAFETY: forwarded from the caller: pixels x.. of row y below x1 ≤ ow (their
        // registers' taps inside the copy with its slack), channels o0..o0 + oc of the
        // job's rows.
        unsafe {
            match (nv, oc > 4) {
                (1, true) => row_block::<S, 1, ROW_CHANNELS>(j, at),
                (2, true) => row_block::<S, 2, ROW_CHANNELS>(j, at),
                (3, true) if PV > 3 => row_block::<S, 3, ROW_CHANNELS>(j, at),
                (_, true) => row_block::<S, PV, ROW_CHANNELS>(j, at),
                (1, false) => row_block::<S, 1, 4>(j, at),
                (2, false) => row_block::<S, 2, 4>(j, at),
                (3, false) if PV > 3 => row_block::<S, 3, 4>(j, at),
                (_, false) => row_block::<S, PV, 4>(j, at),
            }
        }
        x += nv * l;
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

/// `NV` registers of pixels from `b.x` by `OC ≥ b.oc` channels from `b.o0` (the channels past
/// `b.oc` computed with channel `b.o0`'s weights and not stored): every tap, then the finish
/// and the stores of the pixels below `b.x1`.
///
/// # Safety
/// As [`direct_conv_rows`], with `b.x + (NV − 1)·LANES < b.x1 ≤ ow`, `0 < b.oc ≤ OC` and
/// `b.o0 + b.oc ≤ rows[1]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn row_block<S: Simd, const NV: usize, const OC: usize>(j: &DirectConvJob, b: Block) {
    let l = S::LANES;
    let kk = j.off.len();
    // each channel's weights: its panel, from its column, a tap every pw floats
    let wt: [*const f32; OC] = std::array::from_fn(|c| {
        let o = if c < b.oc { b.o0 + c } else { b.o0 };
        j.wt.as_ptr().wrapping_add((o - o % j.pw) * kk + o % j.pw)
    });
    let base = b.y * j.steps[0] + b.x;
    let pad = j.pad.as_ptr();
    // SAFETY (the whole body): taps of the block's pixels (with the slack past the row) inside
    // `pad`, weights inside `wt`, stores of the pixels below x1 of the rows o0..o0 + oc of C
    // (the caller's contract).
    unsafe {
        let mut acc = [[S::zero(); NV]; OC];
        for (k, &off) in j.off.iter().enumerate() {
            let at = pad.add(off + base);
            let xv: [S::V; NV] = std::array::from_fn(|v| S::load(at.add(v * l)));
            let kp = k * j.pw;
            for (row, w) in acc.iter_mut().zip(wt) {
                let w = S::splat(*w.add(kp));
                for (a, x) in row.iter_mut().zip(xv) {
                    *a = S::fma(x, w, *a);
                }
            }
        }
        let fin = j.finish;
        // (every channel's index a constant of the unrolled loop, so that the sums stay in
        // registers; the channels past oc skipped)
        #[allow(clippy::needless_range_loop)]
        for c in 0..OC {
            if c >= b.oc {
                continue;
            }
            let o = b.o0 + c;
            let bias = fin.and_then(|f| (!f.bias.is_null()).then(|| S::splat(*f.bias.add(o))));
            for (v, &a) in acc[c].iter().enumerate() {
                let x = b.x + v * l;
                let n = (b.x1 - x).min(l);
                let at = o * j.l + b.y * j.ow + x;
                let mut r = a;
                if let Some(f) = fin {
                    if let Some(bv) = bias {
                        r = S::add(r, bv);
                    }
                    if !f.res.is_null() {
                        let res = f.res.add(at);
                        r = S::add(
                            r,
                            if n == l {
                                S::load(res)
                            } else {
                                S::load_partial(res, n)
                            },
                        );
                    }
                    r = f.act.apply::<S>(r);
                }
                if n == l {
                    S::store(j.c.add(at), r);
                } else {
                    S::store_prefix(j.c.add(at), n, r);
                }
            }
        }
    }
}
