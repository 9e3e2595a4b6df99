//! The weight gradient of a convolution (`conv2d_weight_grad`) as one GEMM per group, on the
//! packed driver's micro-kernels and macro-kernel (`gemm.rs`):
//!
//! `dw[g][O_g, (c, i, j)] = Σ_n Σ_p dy[n][g·O_g + o][p] · x[n][g·C_g + c][y·s + i·d − pad][x·s + j·d − pad]`
//!
//! i.e. `dW_g = dY_g · Pᵀ_g` with `K = N·oh·ow`: A is the delta (its rows are the output
//! channels, read image by image: `A[o, (n, p)] = dy[n, o, p]`) and B the transposed patch
//! matrix of the whole batch, packed straight from the images panel by panel (never
//! materialized). Summing over the batch is the GEMM's K loop, so `dw` is written once.
//!
//! The kernel of a `conv2d_weight_grad` node (`lower_train`) writes a [`WgradDesc`] into its
//! stack frame and calls [`kiln_conv_wgrad_run`] with it; the work items are blocks of `dw`
//! (group, row block, column block), each summing the whole K range, so threads write
//! disjoint blocks. The micro-kernel is the GEMM tier's ([`micro_kernel`]).

use crate::gemm::{self, BSource, MicroKernel, MicroKernelFn, Problem};
use std::sync::OnceLock;

/// Everything the driver needs for one `conv2d_weight_grad` over the arena: sizes, geometry,
/// byte offsets, the micro-kernel and the blocking. All fields are machine words (`repr(C)`,
/// no padding), so the kernel writes it as [`WgradDesc::WORDS`] `i64` stores ([`Self::words`]).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgradDesc {
    /// The micro-kernel (`MicroKernelFn`) as an address, and its tile.
    pub kernel: usize,
    pub mr: usize,
    pub nr: usize,
    pub mc: usize,
    pub kc: usize,
    pub nc: usize,
    pub batch: usize,
    pub groups: usize,
    /// `[C_in, H, W]` of the input, `[C_out, oh, ow]` of the delta, `[kh, kw]` of the kernel.
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Top and left padding.
    pub pad: [usize; 2],
    /// Byte offsets of x, dy and dw in the arena, and of the node's status word.
    pub x: usize,
    pub dy: usize,
    pub dw: usize,
    pub status: usize,
    /// Rows and columns of `dw` per work item.
    pub m_step: usize,
    pub n_step: usize,
}

impl WgradDesc {
    /// The number of machine words.
    pub const WORDS: usize = std::mem::size_of::<WgradDesc>() / 8;

    /// The description as machine words, in field order.
    pub fn words(&self) -> [u64; Self::WORDS] {
        // SAFETY: `WgradDesc` is `repr(C)` with only `usize` fields (8 bytes each on the
        // 64-bit hosts the JIT runs on, checked below): no padding, every bit pattern valid.
        unsafe { std::mem::transmute::<WgradDesc, [u64; Self::WORDS]>(*self) }
    }

    fn og(&self) -> usize {
        self.c_out / self.groups.max(1)
    }
    /// Columns of one group's `dw`: `C_g·kh·kw`.
    fn cols(&self) -> usize {
        self.c_in / self.groups.max(1) * self.kh * self.kw
    }
    fn m_blocks(&self) -> usize {
        self.og().div_ceil(self.m_step.max(1)).max(1)
    }
    fn n_blocks(&self) -> usize {
        self.cols().div_ceil(self.n_step.max(1)).max(1)
    }

    /// The number of independent work items (blocks of `dw`).
    pub fn items(&self) -> usize {
        self.groups * self.m_blocks() * self.n_blocks()
    }

    /// Cuts `dw` into at least `want` blocks where it can: columns first (each block keeping
    /// at least 2 tiles), then rows (at least 4 tile rows each). Columns first since each
    /// item packs its own columns of the patch matrix (K × its columns) and all of the
    /// delta's rows it needs (K × its rows): a row split packs the patch matrix once per row
    /// block, a column split only the delta, which has fewer rows than the patch matrix has
    /// columns.
    pub fn split(&mut self, want: usize) {
        let (mr, nr) = (self.mr.max(1), self.nr.max(1));
        self.m_step = self.og().max(1);
        self.n_step = self.cols().div_ceil(nr).max(1) * nr;
        while self.items() < want {
            if self.n_step >= 4 * nr {
                self.n_step = (self.n_step / 2).div_ceil(nr) * nr;
            } else if self.m_step >= 8 * mr {
                self.m_step = (self.m_step / 2).div_ceil(mr) * mr;
            } else {
                break;
            }
        }
    }
}

const _: () =
    assert!(std::mem::size_of::<usize>() == 8 && std::mem::size_of::<WgradDesc>().is_multiple_of(8));

/// The micro-kernel of the weight gradient for `tier` and a `dw` block of `m × n`: the
/// tier's Rust tile for that product where it has one (`Tier::kernel`: AVX2 or AVX-512), else
/// the Cranelift kernel, compiled once per process into a module of its own (the `f32x4`
/// kernel the GEMM nodes of the Cranelift tier run).
pub fn micro_kernel(tier: gemm::Tier, m: usize, n: usize) -> Result<MicroKernel, crate::JitError> {
    if let Some(k) = tier.kernel(m, n) {
        return Ok(k);
    }
    static CRANELIFT: OnceLock<Result<usize, String>> = OnceLock::new();
    let f = CRANELIFT
        .get_or_init(|| {
            let mut module = crate::codegen::new_module("none").map_err(|e| e.to_string())?;
            let id =
                gemm::define_micro_kernel(&mut module, "wgrad_micro_kernel").map_err(|e| e.to_string())?;
            module.finalize_definitions().map_err(|e| e.to_string())?;
            let p = module.get_finalized_function(id) as usize;
            // the code lives as long as the process: the module is never freed (dropping a
            // JITModule keeps its memory)
            drop(module);
            Ok(p)
        })
        .clone()
        .map_err(crate::JitError::Codegen)?;
    Ok(MicroKernel {
        mr: gemm::MR,
        nr: gemm::NR,
        // SAFETY: defined by `gemm::define_micro_kernel` with the `MicroKernelFn` signature.
        f: unsafe { std::mem::transmute::<usize, MicroKernelFn>(f) },
    })
}

/// Runs the work items `[begin, end)` of the weight gradient described at `desc` over
/// `arena`. Like `gemm::kiln_gemm_run` it never unwinds into the JIT frames that call it: a
/// panic, or a description or range the driver cannot run, stores `gemm::STATUS_FAILED` in
/// the node's status word.
///
/// # Safety
/// `desc` must point to a description built by `lower_train` from the node's validated
/// shapes and the memory plan of this arena, with no other thread writing these items' blocks.
pub unsafe extern "C" fn kiln_conv_wgrad_run(desc: *const WgradDesc, arena: *mut u8, begin: i64, end: i64) {
    // SAFETY: forwarded from the caller.
    let d = unsafe { *desc };
    let ok = std::panic::catch_unwind(|| {
        // SAFETY: forwarded from the caller.
        unsafe { run_items(&d, arena, begin, end) }
    });
    if !matches!(ok, Ok(Ok(()))) {
        // SAFETY: the status word is 8 bytes at an 8-byte aligned offset of the arena.
        let word = unsafe { std::sync::atomic::AtomicU64::from_ptr(arena.add(d.status).cast::<u64>()) };
        word.store(gemm::STATUS_FAILED, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The body of `kiln_conv_wgrad_run`.
///
/// # Safety
/// As `kiln_conv_wgrad_run`.
unsafe fn run_items(d: &WgradDesc, arena: *mut u8, begin: i64, end: i64) -> Result<(), &'static str> {
    let kern = MicroKernel {
        mr: d.mr,
        nr: d.nr,
        // SAFETY: `lower_train` stored a `MicroKernelFn`'s address (`micro_kernel`).
        f: unsafe { std::mem::transmute::<usize, MicroKernelFn>(d.kernel) },
    };
    kern.check()?;
    let (Ok(begin), Ok(end)) = (usize::try_from(begin), usize::try_from(end)) else {
        return Err("a negative work item");
    };
    if begin > end || end > d.items() || d.groups == 0 || d.mc == 0 || d.kc == 0 || d.nc == 0 {
        return Err("work items outside the product");
    }
    let (mb, nb) = (d.m_blocks(), d.n_blocks());
    let (og, cols) = (d.og(), d.cols());
    let at = |off: usize| arena.wrapping_add(off).cast::<f32>();
    // Adjacent items of one group run as one block (one thread given several items, all of
    // them at one thread): its patch-matrix columns and delta rows are packed once, not once
    // per item.
    let mut item = begin;
    while item < end {
        let (j, rest) = (item % nb, item / nb);
        let (i, g) = (rest % mb, rest / mb);
        // whole rows of blocks (every column) from i, or else columns from j in row i
        let full = if j == 0 {
            ((end - item) / nb).min(mb - i)
        } else {
            0
        };
        let (rows, cs, next) = if full > 0 {
            let rows = [i * d.m_step, ((i + full) * d.m_step).min(og)];
            (rows, [0, cols], item + full * nb)
        } else {
            let j1 = nb.min(j + (end - item));
            let rows = [i * d.m_step, ((i + 1) * d.m_step).min(og)];
            (rows, [j * d.n_step, (j1 * d.n_step).min(cols)], item + (j1 - j))
        };
        // SAFETY: g < groups, the rows and columns are inside the group's dw (the item
        // decoding above); the offsets are the node's slots in this arena.
        unsafe { group_block(d, &kern, g, rows, cs, at(d.x), at(d.dy), at(d.dw)) };
        item = next;
    }
    Ok(())
}

/// One item: rows `rows` and columns `cs` of group `g`'s `dw`, summed over the whole batch.
///
/// # Safety
/// `x`, `dy` and `dw` point at the node's tensors (of the description's shapes); `rows` and
/// `cs` lie inside group `g`'s `dw`, which no other thread writes.
#[allow(clippy::too_many_arguments)]
unsafe fn group_block(
    d: &WgradDesc,
    kern: &MicroKernel,
    g: usize,
    rows: [usize; 2],
    cs: [usize; 2],
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
) {
    let (mr, nr) = (kern.mr, kern.nr);
    let (og, cols, p) = (d.og(), d.cols(), d.oh * d.ow);
    let k = d.batch * p;
    let c = dw.wrapping_add(g * og * cols);
    let prob = Problem {
        m: og,
        n: cols,
        k,
        a: std::ptr::null(),
        lda: 0,
        b: BSource::Matrix {
            ptr: std::ptr::null(),
            ld: 0,
        },
        c,
        ldc: cols,
        epilogue: None,
    };
    if k == 0 {
        for r in rows[0]..rows[1] {
            // SAFETY: row r < og, columns inside the group's dw.
            unsafe { std::ptr::write_bytes(c.add(r * cols + cs[0]), 0, cs[1] - cs[0]) };
        }
        return;
    }
    // K in equal blocks of at most kc (as the GEMM driver cuts it)
    let kstep = k.div_ceil(k.div_ceil(d.kc).max(1)).max(1);
    gemm::PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        for jc in (cs[0]..cs[1]).step_by(d.nc) {
            let nc = d.nc.min(cs[1] - jc);
            for pc in (0..k).step_by(kstep) {
                let kc = kstep.min(k - pc);
                let bpack = gemm::floats(bbuf, nc.div_ceil(nr) * nr * kc);
                // SAFETY: forwarded from the caller.
                unsafe { pack_patches_t(d, x, g, bpack, [jc, nc], [pc, kc], nr) };
                for ic in (rows[0]..rows[1]).step_by(d.mc) {
                    let mc = d.mc.min(rows[1] - ic);
                    let apack = gemm::floats(abuf, mc.div_ceil(mr) * mr * kc);
                    // SAFETY: forwarded from the caller.
                    unsafe { pack_delta(d, dy, g, apack, [ic, mc], [pc, kc], mr) };
                    // SAFETY: the block [ic, ic + mc) × [jc, jc + nc) lies inside the group's
                    // dw (`prob`: og × cols, ldc = cols); the panels hold whole tiles.
                    unsafe {
                        gemm::macro_kernel(
                            kern,
                            &prob,
                            gemm::APanels::Packed(apack),
                            gemm::BPanels::Packed(bpack),
                            [ic, mc],
                            [jc, nc],
                            kc,
                            pc > 0,
                            None,
                        )
                    };
                }
            }
        }
    });
}

/// K values per chunk of the packing's column-major staging buffer ([`Stage`]): 8 rows of it
/// take 8 KiB, so the staged rows and the panel rows they become stay in L1.
const TK: usize = 256;

/// Eight rows (of A) or columns (of B) of a block, each `TK` K values long and contiguous, on
/// the stack: each is filled by contiguous copies of the tensor's rows, then the eight are
/// transposed into the packed panel (eight floats per K index) by [`transpose_into`].
struct Stage([f32; 8 * TK]);

impl Stage {
    fn new() -> Stage {
        Stage([0.0; 8 * TK])
    }
    fn row(&mut self, r: usize, len: usize) -> &mut [f32] {
        &mut self.0[r * TK..r * TK + len]
    }
}

/// Writes the `w ≤ 8` staged rows' first `kn` values transposed into `dst`: value `k` of row
/// `r` at `dst[k·ld + r]`. A register transpose of 8 × 8 blocks on hosts with AVX when `w` is
/// 8; scalar otherwise.
fn transpose_into(st: &Stage, w: usize, kn: usize, dst: &mut [f32], ld: usize) {
    assert!(w <= 8 && kn <= TK && w <= ld && (kn == 0 || dst.len() >= (kn - 1) * ld + w));
    #[cfg(target_arch = "x86_64")]
    if w == 8 && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX; the bounds were checked above.
        unsafe { transpose8_avx(st, kn, dst, ld) };
        return;
    }
    for r in 0..w {
        let row = &st.0[r * TK..r * TK + kn];
        for (v, &s) in dst[r..].iter_mut().step_by(ld).zip(row) {
            *v = s;
        }
    }
}

/// `transpose_into` for eight rows: 8 × 8 blocks in registers (unpack, shuffle, lane
/// permute), the last `kn % 8` K indices scalar.
///
/// # Safety
/// The CPU has AVX; `kn ≤ TK`, `ld ≥ 8` and `dst` holds `(kn − 1)·ld + 8` floats.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8_avx(st: &Stage, kn: usize, dst: &mut [f32], ld: usize) {
    use std::arch::x86_64::*;
    let src = st.0.as_ptr();
    let out = dst.as_mut_ptr();
    let mut k = 0;
    while k + 8 <= kn {
        // SAFETY: rows r < 8 of the stage, values k..k + 8 ≤ kn ≤ TK; the destination rows
        // k..k + 8 < kn, 8 floats each, inside `dst` (the caller's bound).
        unsafe {
            // loads written out, not through a closure (a closure loses `target_feature`)
            let r0 = _mm256_loadu_ps(src.add(k));
            let r1 = _mm256_loadu_ps(src.add(TK + k));
            let r2 = _mm256_loadu_ps(src.add(2 * TK + k));
            let r3 = _mm256_loadu_ps(src.add(3 * TK + k));
            let r4 = _mm256_loadu_ps(src.add(4 * TK + k));
            let r5 = _mm256_loadu_ps(src.add(5 * TK + k));
            let r6 = _mm256_loadu_ps(src.add(6 * TK + k));
            let r7 = _mm256_loadu_ps(src.add(7 * TK + k));
            let t0 = _mm256_unpacklo_ps(r0, r1);
            let t1 = _mm256_unpackhi_ps(r0, r1);
            let t2 = _mm256_unpacklo_ps(r2, r3);
            let t3 = _mm256_unpackhi_ps(r2, r3);
            let t4 = _mm256_unpacklo_ps(r4, r5);
            let t5 = _mm256_unpackhi_ps(r4, r5);
            let t6 = _mm256_unpacklo_ps(r6, r7);
            let t7 = _mm256_unpackhi_ps(r6, r7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let o = out.add(k * ld);
            _mm256_storeu_ps(o, _mm256_permute2f128_ps::<0x20>(u0, u4));
            _mm256_storeu_ps(o.add(ld), _mm256_permute2f128_ps::<0x20>(u1, u5));
            _mm256_storeu_ps(o.add(2 * ld), _mm256_permute2f128_ps::<0x20>(u2, u6));
            _mm256_storeu_ps(o.add(3 * ld), _mm256_permute2f128_ps::<0x20>(u3, u7));
            _mm256_storeu_ps(o.add(4 * ld), _mm256_permute2f128_ps::<0x31>(u0, u4));
            _mm256_storeu_ps(o.add(5 * ld), _mm256_permute2f128_ps::<0x31>(u1, u5));
            _mm256_storeu_ps(o.add(6 * ld), _mm256_permute2f128_ps::<0x31>(u2, u6));
            _mm256_storeu_ps(o.add(7 * ld), _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
        k += 8;
    }
    for k in k..kn {
        for r in 0..8 {
            dst[k * ld + r] = st.0[r * TK + k];
        }
    }
}

/// Packs `count` lines (A's rows or B's columns) over K `[0, kc)` as micro-panels of `width`
/// lines: value `k` of line `i` at `(i / width)·width·kc + k·width + i % width`; lines past
/// `count` are zero. Eight lines and `TK` K values at a time: `fill(i, k0, t)` writes line
/// `i`'s values `k0..k0 + t.len()` contiguously into a [`Stage`] row, which is then transposed
/// into the panel.
fn pack_staged(
    out: &mut [f32],
    count: usize,
    kc: usize,
    width: usize,
    mut fill: impl FnMut(usize, usize, &mut [f32]),
) {
    let mut st = Stage::new();
    for q in 0..count.div_ceil(width) {
        let panel = &mut out[q * width * kc..(q + 1) * width * kc];
        for r0 in (0..width).step_by(8) {
            let w = 8.min(width - r0);
            for k0 in (0..kc).step_by(TK) {
                let kn = TK.min(kc - k0);
                for r in 0..w {
                    let line = q * width + r0 + r;
                    let t = st.row(r, kn);
                    if line >= count {
                        t.fill(0.0);
                    } else {
                        fill(line, k0, t);
                    }
                }
                transpose_into(&st, w, kn, &mut panel[k0 * width + r0..], width);
            }
        }
    }
}

/// Packs A's block, rows `[ic, ic + mc)` (output channels of group `g`) × K `[pc, pc + kc)`
/// (`K = (n, p)`), as micro-panels of `mr` rows: element `(i, k)` of panel `q` at
/// `q·mr·kc + k·mr + i`; rows past the block are zero. Eight rows at a time, `TK` K values at
/// a time: each row copied contiguously into a [`Stage`], then transposed into the panel.
///
/// # Safety
/// `dy` points at the delta `[N, C_out, oh, ow]`; the rows and K range are inside it.
unsafe fn pack_delta(
    d: &WgradDesc,
    dy: *const f32,
    g: usize,
    out: &mut [f32],
    [ic, mc]: [usize; 2],
    [pc, kc]: [usize; 2],
    mr: usize,
) {
    let p = d.oh * d.ow;
    pack_staged(out, mc, kc, mr, |row, k0, t| {
        let o = g * d.og() + ic + row;
        let kn = t.len();
        // K in segments of one image each
        let mut kk = pc + k0;
        while kk < pc + k0 + kn {
            let (n, at) = (kk / p, kk % p);
            let len = (p - at).min(pc + k0 + kn - kk);
            // SAFETY: image n < N, channel o < C_out, positions at..at + len ≤ p.
            let src = unsafe { std::slice::from_raw_parts(dy.add((n * d.c_out + o) * p + at), len) };
            let first = kk - pc - k0;
            t[first..first + len].copy_from_slice(src);
            kk += len;
        }
    });
}

/// Packs B's block, K `[pc, pc + kc)` × columns `[jc, jc + nc)` (`(c, i, j)` of group `g`),
/// of the transposed patch matrix `B[(n, y, x), (c, i, j)] = x[n][c][y·s + i·d − pad][x·s +
/// j·d − pad]` (0 in the padding), as micro-panels of `nr` columns: element `(k, j)` of
/// panel `q` at `q·nr·kc + k·nr + j`; columns past the block are zero. Eight columns at a
/// time, `TK` K values at a time: each column is runs of image rows ([`patch_column`]),
/// copied contiguously into a [`Stage`], then transposed into the panel.
///
/// # Safety
/// `x` points at the input `[N, C_in, H, W]`; the columns and K range are inside the matrix.
unsafe fn pack_patches_t(
    d: &WgradDesc,
    x: *const f32,
    g: usize,
    out: &mut [f32],
    [jc, nc]: [usize; 2],
    [pc, kc]: [usize; 2],
    nr: usize,
) {
    pack_staged(out, nc, kc, nr, |col, k0, t| {
        // SAFETY: forwarded from the caller (column jc + col < the group's columns, K inside
        // the matrix).
        unsafe { patch_column(d, x, g, jc + col, pc + k0, t) }
    });
}

/// Column `cc` (`(c, i, j)` of group `g`) of the transposed patch matrix over K `[k0, k0 +
/// t.len())`, into `t`: per output row `(n, y)` the zeros of the padding and one run of the
/// image row (a contiguous copy at stride 1).
///
/// # Safety
/// As [`pack_patches_t`].
unsafe fn patch_column(d: &WgradDesc, x: *const f32, g: usize, cc: usize, k0: usize, t: &mut [f32]) {
    let (p, hw) = (d.oh * d.ow, d.h * d.w);
    let cg = d.c_in / d.groups;
    let (s, dl, pad) = (d.stride, d.dilation, d.pad);
    let (c, i, j) = (cc / (d.kh * d.kw), cc / d.kw % d.kh, cc % d.kw);
    // the output columns x whose tap x·s + xoff falls inside a row: [xa, xb)
    let xoff = (j * dl[1]) as isize - pad[1] as isize;
    let xa = if xoff >= 0 { 0 } else { (-xoff) as usize }
        .div_ceil(s[1])
        .min(d.ow);
    let xb = if (d.w as isize) > xoff {
        (d.w as isize - xoff) as usize
    } else {
        0
    }
    .div_ceil(s[1])
    .clamp(xa, d.ow);
    let end = k0 + t.len();
    let mut kk = k0;
    while kk < end {
        let (n, at) = (kk / p, kk % p);
        let (y, x0) = (at / d.ow, at % d.ow);
        let x1 = d.ow.min(x0 + (end - kk));
        let dst = &mut t[kk - k0..kk - k0 + (x1 - x0)];
        let iy = (y * s[0] + i * dl[0]) as isize - pad[0] as isize;
        if (0..d.h as isize).contains(&iy) {
            // SAFETY: image n < N, channel g·C_g + c < C_in, row iy < H.
            let row = unsafe {
                std::slice::from_raw_parts(x.add((n * d.c_in + g * cg + c) * hw + iy as usize * d.w), d.w)
            };
            let (a, b) = (xa.clamp(x0, x1), xb.clamp(x0, x1));
            dst[..a - x0].fill(0.0);
            if b > a {
                let first = ((a * s[1]) as isize + xoff) as usize;
                let run = &mut dst[a - x0..b - x0];
                if s[1] == 1 {
                    run.copy_from_slice(&row[first..first + (b - a)]);
                } else {
                    for (v, &sv) in run.iter_mut().zip(row[first..].iter().step_by(s[1])) {
                        *v = sv;
                    }
                }
            }
            dst[b - x0..].fill(0.0);
        } else {
            dst.fill(0.0);
        }
        kk += x1 - x0;
    }
}
