//! The AVX512-BF16 inner loops of [`super::gemm`]: a register-blocked tile of `MR × 16·NV` f32
//! sums fed by `vdpbf16ps` (per 32-bit lane: `acc += a₀·b₀ + a₁·b₁` over a pair of bf16 values),
//! and the f32 → bf16 row conversion (`vcvtne2ps2bf16`, round to nearest even).
//!
//! Only call these after [`super::pack::available`] said the CPU has AVX512F, AVX512BW and
//! AVX512_BF16; every function here is `unsafe` for that reason and for the raw pointers it reads.

use std::arch::x86_64::*;

/// Rows of a tile (the broadcast operand).
pub const MR: usize = 8;
/// 16-lane vectors across a tile (the streamed operand): a tile is `MR × 16·NV` sums, held in
/// `MR·NV = 24` of the 32 vector registers.
pub use super::pack::NV;

/// The broadcast operand: `MR` rows, each a stream of bf16 pairs, one 32-bit pair per k-step.
/// Pair `k` of row `r` is at `rows[r] + (k / 8)·block + (k % 8)·step` bytes.
pub struct ARows {
    pub rows: [*const u8; MR],
    pub step: usize,
    pub block: usize,
}

/// The streamed operand: `NV` vectors of 16 bf16 pairs (64 bytes) per k-step; vector `v` of step
/// `k` is at `base + v·vstride + k·64` bytes.
pub struct BCols {
    pub base: *const u8,
    pub vstride: usize,
}

/// `acc[r][v] += Σ_{k in k0..k1} A[r][k] · B[k][v]` over bf16 pairs, in k order, for `N <= NV`
/// vectors.
///
/// With `SWAP`, each 64-bit group of four bf16 values `(w0, w1, w2, w3)` of a B vector is read as
/// `(w0, w2, w1, w3)` (the 2×2 blocks of [`super::pack::PackedBf16`] read along the other axis).
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512_BF16, and every address the two operand descriptions
/// give for `k in k0..k1` is readable (4 bytes for A, 64 bytes for B).
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn tile<const SWAP: bool, const N: usize>(
    a: &ARows,
    b: &BCols,
    k0: usize,
    k1: usize,
    acc: &mut [[__m512; N]; MR],
) {
    let swap = _mm512_set_epi64(
        0x0F0E_0B0A_0D0C_0908,
        0x0706_0302_0504_0100,
        0x0F0E_0B0A_0D0C_0908,
        0x0706_0302_0504_0100,
        0x0F0E_0B0A_0D0C_0908,
        0x0706_0302_0504_0100,
        0x0F0E_0B0A_0D0C_0908,
        0x0706_0302_0504_0100,
    );
    let mut c = *acc;
    for k in k0..k1 {
        let off = (k >> 3) * a.block + (k & 7) * a.step;
        let mut bv = [_mm512_setzero_si512(); N];
        for (v, bv) in bv.iter_mut().enumerate() {
            // SAFETY: readable by the caller's contract (64 bytes at this address).
            let x = unsafe { _mm512_loadu_si512(b.base.add(v * b.vstride + k * 64).cast()) };
            *bv = if SWAP {
                _mm512_shuffle_epi8(x, swap)
            } else {
                x
            };
        }
        for (row, c) in a.rows.iter().zip(c.iter_mut()) {
            // SAFETY: readable by the caller's contract (4 bytes at this address).
            let pair = unsafe { row.add(off).cast::<i32>().read_unaligned() };
            let av = bh(_mm512_set1_epi32(pair));
            for (c, b) in c.iter_mut().zip(&bv) {
                *c = _mm512_dpbf16_ps(*c, av, bh(*b));
            }
        }
    }
    *acc = c;
}

/// The 32 bf16 values of a 512-bit register as the type the bf16 instructions take.
#[inline(always)]
fn bh(x: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors of the same size; every bit pattern is valid.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
}

/// Rounds `src` to bf16 (nearest, ties to even) into `dst[..src.len()]`.
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512_BF16; `dst.len() >= src.len()`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
    let n = src.len() / 32 * 32;
    for i in (0..n).step_by(32) {
        // SAFETY: `i + 32 <= n <= src.len() <= dst.len()`.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(i));
            let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
            let h = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dst.as_mut_ptr().add(i).cast(),
                std::mem::transmute::<__m512bh, __m512i>(h),
            );
        }
    }
    for (d, s) in dst[n..src.len()].iter_mut().zip(&src[n..]) {
        *d = super::pack::bf16(*s);
    }
}

/// Writes the tile's sums to `out[r][16·v + j]` (an `MR × 16·NV` row-major array, `N <= NV`).
///
/// # Safety
/// The CPU has AVX512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn spill<const N: usize>(acc: &[[__m512; N]; MR], out: &mut [[f32; 16 * NV]; MR]) {
    for (row, acc) in out.iter_mut().zip(acc) {
        for (v, a) in acc.iter().enumerate() {
            assert!(16 * v + 16 <= row.len());
            // SAFETY: `16·v + 16 <= row.len()`, checked above.
            unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), *a) };
        }
    }
}

/// Loads `src[r][16·v + j]` into a tile.
///
/// # Safety
/// The CPU has AVX512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn fill<const N: usize>(src: &[[f32; 16 * NV]; MR], acc: &mut [[__m512; N]; MR]) {
    for (row, acc) in src.iter().zip(acc.iter_mut()) {
        for (v, a) in acc.iter_mut().enumerate() {
            assert!(16 * v + 16 <= row.len());
            // SAFETY: `16·v + 16 <= row.len()`, checked above.
            *a = unsafe { _mm512_loadu_ps(row.as_ptr().add(16 * v)) };
        }
    }
}

/// A tile of zeros.
///
/// # Safety
/// The CPU has AVX512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn zero<const N: usize>() -> [[__m512; N]; MR] {
    [[_mm512_setzero_ps(); N]; MR]
}
