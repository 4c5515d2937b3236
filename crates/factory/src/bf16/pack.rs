//! A frozen `[out, in]` weight rounded to bf16 and packed once for both training products
//! (`x·Wᵀ` and `g·W`, see [`super::gemm`]), and the bf16 rounding.
//!
//! # The layout
//!
//! `W` is cut into 2×2 blocks `(W[2a][2b], W[2a][2b+1], W[2a+1][2b], W[2a+1][2b+1])` (zeros past
//! the edges), and eight blocks along `in` (16 columns) make one 64-byte line; line `(c, a)` holds
//! out-pair `a`, columns `16c..16c+16`, and lines are stored `c`-major. One copy serves both
//! products:
//!
//! - `g·W` (contraction over `out`) streams the lines of 16 columns at a time and reads each block
//!   along `out` (`vpshufb` swaps its middle values), with pairs of `g` broadcast;
//! - `x·Wᵀ` (contraction over `in`) broadcasts each row's pair `(W[o][2b], W[o][2b+1])`, which is
//!   contiguous in its block, against `x` packed per call as 16 tokens × one pair of columns per
//!   line.
//!
//! The weight costs half its f32 size, once.

use candle_core::{bail, Result};
use rayon::prelude::*;
use std::sync::OnceLock;

/// 16-lane vectors across a tile of the kernels; the line count of a weight along `in` is a
/// multiple of it.
pub const NV: usize = 3;

/// Whether this CPU runs the bf16 kernels (x86-64 with AVX512F, AVX512BW and AVX512_BF16), unless
/// `OPENLEDGER_NO_BF16` is set (to run, e.g. in tests, as on a CPU without them).
pub fn available() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx512f")
                && has!("avx512bw")
                && has!("avx512bf16")
                && std::env::var_os("OPENLEDGER_NO_BF16").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// `x` rounded to bf16, to nearest with ties to even (NaN stays NaN), as `vcvtne2ps2bf16` does
/// for normal values.
pub fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) as u16) | 0x0040;
    }
    let round = 0x7FFF + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// `src` rounded to bf16 into `dst` (as long): as [`bf16`] value by value, vectorized where the
/// CPU runs the bf16 kernels.
fn round_into(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `available()` checked the CPU features; `dst` is as long as `src`.
        unsafe { super::avx512::to_bf16(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16(*s);
    }
}

/// The f32 value of a bf16.
pub fn f32_of(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// One 64-byte line: eight 2×2 blocks of the weight, or 16 tokens × one pair of columns of `x`.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Line(pub(super) [u16; 32]);

pub(super) const ZERO: Line = Line([0; 32]);

/// A raw pointer into a buffer shared by parallel tasks that write disjoint elements (the lines
/// of a weight being packed, the outputs of a product).
pub(super) struct Disjoint<T>(pub(super) *mut T);
impl<T> Clone for Disjoint<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Disjoint<T> {}
// SAFETY: every task writes elements no other task touches, and the buffer outlives the parallel
// loop that uses the pointer (it returns only once every task has ended).
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as for `Send`.
unsafe impl<T: Send> Sync for Disjoint<T> {}
impl<T> Disjoint<T> {
    /// The pointer (a method, so closures capture the whole `Send + Sync` wrapper).
    pub(super) fn ptr(self) -> *mut T {
        self.0
    }
}

/// A frozen `[out, in]` weight in bf16, packed for both products (see the module doc).
pub struct PackedBf16 {
    pub(super) rows: usize,
    pub(super) cols: usize,
    /// `ceil(rows / 2)`.
    pub(super) pairs: usize,
    /// Lines of 16 columns, rounded up to a multiple of `NV`.
    pub(super) blocks: usize,
    pub(super) lines: Vec<Line>,
}

impl std::fmt::Debug for PackedBf16 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBf16({}x{})", self.rows, self.cols)
    }
}

impl PackedBf16 {
    /// Rounds a row-major `[rows, cols]` f32 weight to bf16 and packs it.
    pub fn pack(w: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let mut p = Self::empty();
        p.repack(w, rows, cols)?;
        Ok(p)
    }

    /// A weight of no values, to [`PackedBf16::repack`] into (a reused scratch).
    pub fn empty() -> Self {
        Self {
            rows: 0,
            cols: 0,
            pairs: 0,
            blocks: 0,
            lines: Vec::new(),
        }
    }

    /// Rounds and packs a row-major `[rows, cols]` f32 weight in place of this one, reusing its
    /// memory (QLoRA packs each quantized projection per product into one reused scratch).
    pub fn repack(&mut self, w: &[f32], rows: usize, cols: usize) -> Result<()> {
        if w.len() != rows * cols || rows == 0 || cols == 0 {
            bail!("bf16 weight: {} values for a {rows}x{cols} matrix", w.len());
        }
        let pairs = rows.div_ceil(2);
        let blocks = cols.div_ceil(16).div_ceil(NV) * NV;
        let lines = &mut self.lines;
        lines.clear();
        lines.resize(blocks * pairs, ZERO);
        let at = |o: usize, i: usize| {
            if o < rows && i < cols {
                bf16(w[o * cols + i])
            } else {
                0
            }
        };
        lines
            .par_chunks_mut(pairs)
            .enumerate()
            .for_each(|(c, lines)| {
                for (a, line) in lines.iter_mut().enumerate() {
                    for u in 0..8 {
                        let i = 16 * c + 2 * u;
                        line.0[4 * u] = at(2 * a, i);
                        line.0[4 * u + 1] = at(2 * a, i + 1);
                        line.0[4 * u + 2] = at(2 * a + 1, i);
                        line.0[4 * u + 3] = at(2 * a + 1, i + 1);
                    }
                }
            });
        (self.rows, self.cols, self.pairs, self.blocks) = (rows, cols, pairs, blocks);
        Ok(())
    }

    /// Packs a `[rows, cols]` weight in place of this one (reusing its memory) from `fill`, which
    /// writes rows `r` of the f32 weight into a buffer of `r.len()·cols` values; groups of rows
    /// are filled and packed in parallel, so no f32 copy of the whole weight exists. The stored
    /// values are those of [`PackedBf16::pack`] of the same weight.
    pub fn repack_with(
        &mut self,
        rows: usize,
        cols: usize,
        fill: impl Fn(std::ops::Range<usize>, &mut [f32]) -> Result<()> + Sync,
    ) -> Result<()> {
        /// Pairs of rows per task.
        const PAIRS_PER_TASK: usize = 32;
        if rows == 0 || cols == 0 {
            bail!("bf16 weight: a {rows}x{cols} matrix");
        }
        let pairs = rows.div_ceil(2);
        let blocks = cols.div_ceil(16).div_ceil(NV) * NV;
        // Every line is written below (zeros past the edges), so old contents may stay.
        self.lines.resize(blocks * pairs, ZERO);
        (self.rows, self.cols, self.pairs, self.blocks) = (rows, cols, pairs, blocks);
        let base = Disjoint(self.lines.as_mut_ptr());
        (0..pairs.div_ceil(PAIRS_PER_TASK))
            .into_par_iter()
            .try_for_each(|t| -> Result<()> {
                let (a0, a1) = (t * PAIRS_PER_TASK, ((t + 1) * PAIRS_PER_TASK).min(pairs));
                let (r0, r1) = (2 * a0, (2 * a1).min(rows));
                let mut f = vec![0f32; (r1 - r0) * cols];
                fill(r0..r1, &mut f)?;
                // The rows in bf16, each padded with zeros to `16·blocks` values (an odd last
                // row gets a zero partner).
                let width = 16 * blocks;
                let mut h = vec![0u16; 2 * (a1 - a0) * width];
                for (src, dst) in f.chunks(cols).zip(h.chunks_mut(width)) {
                    round_into(src, &mut dst[..cols]);
                }
                for (a, rows) in (a0..a1).zip(h.chunks(2 * width)) {
                    let (top, bottom) = rows.split_at(width);
                    for c in 0..blocks {
                        // SAFETY: `c·pairs + a < blocks·pairs = lines.len()`; line `(c, a)` for
                        // `a` in this task's pairs is written by this task only, and `lines`
                        // outlives the parallel loop.
                        let line = unsafe { &mut *base.ptr().add(c * pairs + a) };
                        let (t, b) = (&top[16 * c..16 * c + 16], &bottom[16 * c..16 * c + 16]);
                        for u in 0..8 {
                            line.0[4 * u..4 * u + 2].copy_from_slice(&t[2 * u..2 * u + 2]);
                            line.0[4 * u + 2..4 * u + 4].copy_from_slice(&b[2 * u..2 * u + 2]);
                        }
                    }
                }
                Ok(())
            })
    }

    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The stored (bf16-rounded) value of `W[o][i]`.
    pub fn get(&self, o: usize, i: usize) -> f32 {
        let line = &self.lines[(i / 16) * self.pairs + o / 2];
        f32_of(line.0[4 * ((i % 16) / 2) + 2 * (o % 2) + i % 2])
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }

    fn check(&self, what: &str, len: usize, n: usize, width: usize) -> Result<()> {
        if len != n * width {
            bail!("bf16 {what}: {len} values are not {n} rows of {width}");
        }
        if !available() {
            bail!("bf16 {what}: this CPU lacks AVX512_BF16; train with OPENLEDGER_TRAIN_PRECISION=f32");
        }
        Ok(())
    }

    /// `x·Wᵀ` for row-major `x: [n, in]`; returns `[n, out]`.
    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check("forward", x.len(), n, self.cols)?;
        let mut y = vec![0f32; n * self.rows];
        self.forward_into(x, n, &mut y)?;
        Ok(y)
    }

    /// `x·Wᵀ` for row-major `x: [n, in]` into `y: [n, out]`.
    pub fn forward_into(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        self.check("forward", x.len(), n, self.cols)?;
        self.check("forward output", y.len(), n, self.rows)?;
        #[cfg(target_arch = "x86_64")]
        return super::gemm::forward_into(self, x, n, y);
        #[cfg(not(target_arch = "x86_64"))]
        bail!("bf16 forward: x86-64 only")
    }

    /// `g·W` for row-major `g: [n, out]` into `dx: [n, in]`.
    pub fn backward_into(&self, g: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        self.check("backward", g.len(), n, self.rows)?;
        self.check("backward output", dx.len(), n, self.cols)?;
        #[cfg(target_arch = "x86_64")]
        return super::gemm::backward_into(self, g, n, dx);
        #[cfg(not(target_arch = "x86_64"))]
        bail!("bf16 backward: x86-64 only")
    }

    /// `g·W` for row-major `g: [n, out]`; returns `[n, in]`.
    pub fn backward(&self, g: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check("backward", g.len(), n, self.rows)?;
        let mut dx = vec![0f32; n * self.cols];
        self.backward_into(g, n, &mut dx)?;
        Ok(dx)
    }
}
