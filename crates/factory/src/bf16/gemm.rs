//! The x86-64 drivers of the bf16 products with a packed weight ([`super::pack::PackedBf16`]):
//! `x·Wᵀ` and `g·W`, the activations or gradients rounded to bf16 per call, every sum accumulated
//! in f32 in k order (results do not depend on thread scheduling), tiles spread over rayon's pool
//! (the pool every other op of a training step runs on: no hand-over between pools).
//!
//! `x·Wᵀ` broadcasts the weight's rows against `x` packed as 16 tokens per line and writes each
//! tile of `Yᵀ` transposed; `g·W` broadcasts pairs of `g` (rounded row by row) against the
//! weight's lines, 16 columns per vector.

use super::avx512::{self, ARows, BCols, MR};
use super::pack::{Disjoint, Line, PackedBf16, NV, ZERO};
use candle_core::{bail, Result};
use rayon::prelude::*;

/// Pairs of the contraction handled per pass over a tile in `g·W` (keeps a panel of the weight,
/// `KC · NV · 64` bytes, in the core's L2 while the rows of `g` stream past it).
const KC: usize = 512;
/// Blocks of `MR` weight rows per task in `x·Wᵀ` (64 columns of `Y`: whole cache lines, few
/// pages per panel of tokens).
const GROUP: usize = 8;

/// `x·Wᵀ` for row-major `x: [n, in]` into `y: [n, out]` (lengths checked by the caller); every
/// element of `y` is written.
///
/// A task covers up to [`GROUP`] blocks of `MR` weight rows (kept in L2) and a range of token
/// panels; each panel's `16·NV × MR·GROUP` sums are staged and written as whole row segments.
pub(super) fn forward_into(w: &PackedBf16, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let kp = w.blocks * 8;
    let tblocks = n.div_ceil(16);
    let panels = tblocks.div_ceil(NV);
    let xp = pack_x(w, x, n, tblocks, kp)?;
    let out = Disjoint(y.as_mut_ptr());
    let (rows, pairs) = (w.rows, w.pairs);
    let (lines, xp) = (&w.lines, &xp);
    let ogroups = rows.div_ceil(MR * GROUP);
    let want = (4 * rayon::current_num_threads())
        .div_ceil(ogroups)
        .clamp(1, panels);
    let per = panels.div_ceil(want);
    let pgroups = panels.div_ceil(per);
    let task = |t: usize| {
        let (wbase, xbase) = (lines.as_ptr().cast::<u8>(), xp.as_ptr().cast::<u8>());
        let (og, pg) = (t / pgroups, t % pgroups);
        let first = og * GROUP * MR;
        let width = (GROUP * MR).min(rows - first);
        let row = |o: usize| {
            let o = o.min(rows - 1);
            // In bounds: `o / 2 < pairs` and `(o % 2)·4 + 4 <= 64`.
            wbase.wrapping_add((o / 2) * 64 + (o % 2) * 4)
        };
        let mut staged = vec![[0f32; GROUP * MR]; 16 * NV];
        for p in pg * per..((pg + 1) * per).min(panels) {
            let vectors = NV.min(tblocks - p * NV);
            let b = BCols {
                base: xbase.wrapping_add(p * NV * kp * 64),
                vstride: kp * 64,
            };
            for ob in 0..width.div_ceil(MR) {
                let o0 = first + ob * MR;
                let a = ARows {
                    rows: std::array::from_fn(|r| row(o0 + r)),
                    step: 8,
                    block: pairs * 64,
                };
                let mut tmp = [[0f32; 16 * NV]; MR];
                // SAFETY: `available()` was checked by the caller. A: rows `o <= rows - 1` of
                // the packed weight, pair `k < kp = 8·blocks` at `(k/8)·pairs·64 + (k%8)·8`
                // past the row's start: inside `lines` (`blocks·pairs` lines). B: token blocks
                // `p·NV .. p·NV + vectors <= tblocks` of `xp` (`tblocks·kp` lines), line `k < kp`.
                unsafe {
                    match vectors {
                        1 => forward_tile::<1>(&a, &b, kp, &mut tmp),
                        2 => forward_tile::<2>(&a, &b, kp, &mut tmp),
                        _ => forward_tile::<NV>(&a, &b, kp, &mut tmp),
                    }
                }
                for (j, staged) in staged.iter_mut().enumerate().take(16 * vectors) {
                    for (r, tmp) in tmp.iter().enumerate() {
                        staged[ob * MR + r] = tmp[j];
                    }
                }
            }
            for (j, staged) in staged.iter().enumerate().take(16 * vectors) {
                let tk = p * NV * 16 + j;
                if tk >= n {
                    break;
                }
                // SAFETY: row `tk < n`, columns `first..first + width <= rows` of `y`: this
                // task's output rows (`og`) and token panels (`pg`) only.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(out.ptr().add(tk * rows + first), width)
                };
                dst.copy_from_slice(&staged[..width]);
            }
        }
    };
    parallel_for(ogroups * pgroups, &task)
}

/// One forward tile of `N` token vectors into `tmp`.
///
/// # Safety
/// As [`avx512::tile`] for `k in 0..kp`.
unsafe fn forward_tile<const N: usize>(
    a: &ARows,
    b: &BCols,
    kp: usize,
    tmp: &mut [[f32; 16 * NV]; MR],
) {
    // SAFETY: the caller's contract.
    unsafe {
        let mut acc = avx512::zero::<N>();
        avx512::tile::<false, N>(a, b, 0, kp, &mut acc);
        avx512::spill(&acc, tmp);
    }
}

/// `x` as lines of 16 tokens × one pair of columns: line `tb·kp + b` lane `j` holds
/// `(x[16·tb + j][2b], x[16·tb + j][2b + 1])`, zeros past the edges.
fn pack_x(w: &PackedBf16, x: &[f32], n: usize, tblocks: usize, kp: usize) -> Result<Vec<Line>> {
    let cols = w.cols;
    let mut xp = vec![ZERO; tblocks * kp];
    xp.par_chunks_mut(kp)
        .enumerate()
        .try_for_each(|(tb, lines)| -> Result<()> {
            let mut row = vec![0u16; 2 * kp];
            for j in 0..16 {
                let t = 16 * tb + j;
                if t >= n {
                    break;
                }
                to_bf16(&x[t * cols..(t + 1) * cols], &mut row)?;
                for (b, line) in lines.iter_mut().enumerate() {
                    line.0[2 * j] = row[2 * b];
                    line.0[2 * j + 1] = row[2 * b + 1];
                }
            }
            Ok(())
        })?;
    Ok(xp)
}

/// `g·W` into `dx: [n, in]` (lengths checked by the caller); every element of `dx` is written.
pub(super) fn backward_into(w: &PackedBf16, g: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
    let (rows, cols, kp) = (w.rows, w.cols, w.pairs);
    if n == 0 {
        return Ok(());
    }
    // `g` in bf16, each row padded to `2·kp` values.
    let mut gb = vec![0u16; n * 2 * kp];
    gb.par_chunks_mut(2 * kp)
        .zip(g.par_chunks(rows))
        .try_for_each(|(d, s)| to_bf16(s, d))?;
    let panels = w.blocks / NV;
    let mblocks = n.div_ceil(MR);
    let want = (4 * rayon::current_num_threads())
        .div_ceil(panels)
        .clamp(1, mblocks);
    let per = mblocks.div_ceil(want);
    let groups = mblocks.div_ceil(per);
    let out = Disjoint(dx.as_mut_ptr());
    let (lines, gb) = (&w.lines, &gb);
    let pairs = w.pairs;
    let task = |t: usize| {
        let (wbase, gbase) = (lines.as_ptr().cast::<u8>(), gb.as_ptr().cast::<u8>());
        let (panel, group) = (t / groups, t % groups);
        let i0 = panel * NV * 16;
        let width = (NV * 16).min(cols.saturating_sub(i0));
        let b = BCols {
            base: wbase.wrapping_add(panel * NV * pairs * 64),
            vstride: pairs * 64,
        };
        let mb_end = ((group + 1) * per).min(mblocks);
        for k0 in (0..kp).step_by(KC) {
            let k1 = (k0 + KC).min(kp);
            for mb in group * per..mb_end {
                let m0 = mb * MR;
                let a = ARows {
                    rows: std::array::from_fn(|r| gbase.wrapping_add((m0 + r).min(n - 1) * kp * 4)),
                    step: 4,
                    block: 32,
                };
                let mut tmp = [[0f32; 16 * NV]; MR];
                for (r, tmp) in tmp.iter_mut().enumerate() {
                    let m = m0 + r;
                    if k0 > 0 && m < n && width > 0 {
                        // SAFETY: row `m < n`, columns `i0..i0 + width <= cols` of `dx`,
                        // written only by this task (its panel, its rows).
                        let src = unsafe {
                            std::slice::from_raw_parts(out.ptr().add(m * cols + i0), width)
                        };
                        tmp[..width].copy_from_slice(src);
                    }
                }
                // SAFETY: `available()` was checked. A: rows `<= n - 1` of `gb` (`2·kp`
                // values each), pair `k < kp` at `4k`. B: lines `(c, a)` for
                // `c = panel·NV + v < blocks` and `a = k < kp = pairs`, inside `lines`.
                unsafe {
                    let mut acc = avx512::zero::<NV>();
                    avx512::fill(&tmp, &mut acc);
                    avx512::tile::<true, NV>(&a, &b, k0, k1, &mut acc);
                    avx512::spill(&acc, &mut tmp);
                }
                for (r, tmp) in tmp.iter().enumerate() {
                    let m = m0 + r;
                    if m < n && width > 0 {
                        // SAFETY: as for the read above.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(out.ptr().add(m * cols + i0), width)
                        };
                        dst.copy_from_slice(&tmp[..width]);
                    }
                }
            }
        }
    };
    parallel_for(panels * groups, &task)
}

/// Runs `task(0..n)` on rayon's pool, one task per index (tasks are few and even: a tile group
/// each); a panicking task becomes an error once every task has ended.
fn parallel_for(n: usize, task: &(dyn Fn(usize) + Sync)) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (0..n).into_par_iter().with_max_len(1).for_each(task)
    }))
    .map_err(|_| candle_core::Error::Msg("a bf16 product task panicked".into()))
}

/// `src` rounded to bf16 into `dst[..src.len()]`; the rest of `dst` is zeroed.
fn to_bf16(src: &[f32], dst: &mut [u16]) -> Result<()> {
    if dst.len() < src.len() || !super::pack::available() {
        bail!("bf16 conversion: {} values into {}", src.len(), dst.len());
    }
    // SAFETY: `available()` checked the CPU features; `dst` is long enough.
    unsafe { avx512::to_bf16(src, dst) };
    dst[src.len()..].fill(0);
    Ok(())
}
