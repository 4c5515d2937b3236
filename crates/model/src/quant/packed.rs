//! Q4_1 weights repacked eight rows at a time, and the product kernel that reads them.
//!
//! A GGUF row keeps each block's scale, minimum and 16 bytes of nibbles together, so a kernel that
//! works on one row at a time must reduce eight partial sums per block and scale each one separately.
//! Here the blocks of eight consecutive rows are interleaved: for block `b` of a group of eight rows,
//!
//! ```text
//! [d: 8 × f16][m: 8 × f16][nibbles: 4 × 32 bytes]   (160 bytes, the same 0.625 bytes per weight)
//! ```
//!
//! where nibble chunk `k` holds, for each row `r` in turn, that row's GGUF bytes `4k..4k+4` (low
//! nibbles: elements `4k..4k+4`; high nibbles: elements `16+4k..16+4k+4`). One `vpdpbusd` of an unpacked
//! chunk with four broadcast activation bytes then advances all eight rows at once, the eight lanes
//! end the block holding each row's exact integer dot product, and one vector of scales finishes it:
//!
//! `acc[r] += f32(Σ q·a) · (d[r]·d_a)`, then `acc[r] += m[r] · s_a`
//!
//! Every row gets that arithmetic in that order whatever the batch size, so results are batch-invariant.

use super::formats::{ActBlock, QFormat, QK};
use std::sync::OnceLock;

/// Bytes of one block of a group of eight rows.
pub const GROUP_BLOCK: usize = 160;
const SRC_BLOCK: usize = QFormat::Q4_1.block_bytes();

/// Can a `rows × cols` Q4_1 matrix be repacked?
pub fn packable(rows: usize, cols: usize) -> bool {
    rows.is_multiple_of(8) && cols.is_multiple_of(QK) && rows > 0
}

/// GGUF Q4_1 bytes (`rows × cols`, row-major) → the grouped layout.
pub fn pack(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let blocks = cols / QK;
    let mut out = vec![0u8; rows / 8 * blocks * GROUP_BLOCK];
    for (g, group) in out.chunks_exact_mut(blocks * GROUP_BLOCK).enumerate() {
        for (b, dst) in group.chunks_exact_mut(GROUP_BLOCK).enumerate() {
            for r in 0..8 {
                let src = &data[((g * 8 + r) * blocks + b) * SRC_BLOCK..][..SRC_BLOCK];
                dst[2 * r..2 * r + 2].copy_from_slice(&src[0..2]);
                dst[16 + 2 * r..16 + 2 * r + 2].copy_from_slice(&src[2..4]);
                for k in 0..4 {
                    dst[32 + 32 * k + 4 * r..][..4].copy_from_slice(&src[4 + 4 * k..][..4]);
                }
            }
        }
    }
    out
}

/// Row `r`'s GGUF bytes back from the grouped layout.
pub fn unpack_row(packed: &[u8], cols: usize, r: usize) -> Vec<u8> {
    let blocks = cols / QK;
    let (g, lane) = (r / 8, r % 8);
    let mut out = Vec::with_capacity(blocks * SRC_BLOCK);
    for b in 0..blocks {
        let src = &packed[(g * blocks + b) * GROUP_BLOCK..][..GROUP_BLOCK];
        out.extend_from_slice(&src[2 * lane..2 * lane + 2]);
        out.extend_from_slice(&src[16 + 2 * lane..16 + 2 * lane + 2]);
        for k in 0..4 {
            out.extend_from_slice(&src[32 + 32 * k + 4 * lane..][..4]);
        }
    }
    out
}

/// `fn(group_bytes, activation rows) -> [row results; 8]` for one act row (`X1`) or four (`X4`).
pub type X1Fn = fn(&[u8], &[ActBlock]) -> [f32; 8];
pub type X4Fn = fn(&[u8], [&[ActBlock]; 4]) -> [[f32; 8]; 4];

/// The kernels for this CPU (the same choice as [`super::kernels::isa`]).
pub fn kernels() -> (X1Fn, X4Fn) {
    static K: OnceLock<(X1Fn, X4Fn)> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        match super::kernels::isa() {
            "avx512-vnni" => return (vnni::x1, vnni::x4),
            "avx2" => return (avx2::x1, avx2::x4),
            _ => {}
        }
        (scalar::x1, scalar::x4)
    })
}

/// Portable kernels; the SIMD ones compute exactly the same numbers.
pub mod scalar {
    use super::*;
    use half::f16;

    fn f16_at(p: &[u8], i: usize) -> f32 {
        f16::from_le_bytes([p[2 * i], p[2 * i + 1]]).to_f32()
    }

    fn tile<const T: usize>(group: &[u8], acts: [&[ActBlock]; T]) -> [[f32; 8]; T] {
        let mut acc = [[0f32; 8]; T];
        for (b, blk) in group.chunks_exact(GROUP_BLOCK).enumerate() {
            for t in 0..T {
                let a = &acts[t][b];
                for (r, acc) in acc[t].iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for k in 0..4 {
                        for i in 0..4 {
                            let byte = blk[32 + 32 * k + 4 * r + i];
                            sum += (byte & 0x0F) as i32 * a.qs[4 * k + i] as i32
                                + (byte >> 4) as i32 * a.qs[16 + 4 * k + i] as i32;
                        }
                    }
                    *acc = (sum as f32).mul_add(f16_at(&blk[..16], r) * a.d, *acc);
                    *acc = f16_at(&blk[16..32], r).mul_add(a.s, *acc);
                }
            }
        }
        acc
    }

    pub fn x1(group: &[u8], act: &[ActBlock]) -> [f32; 8] {
        tile::<1>(group, [act])[0]
    }
    pub fn x4(group: &[u8], acts: [&[ActBlock]; 4]) -> [[f32; 8]; 4] {
        tile::<4>(group, acts)
    }
}

/// The SIMD kernel per instruction set; `$dot` adds the u8×i8 products of 4-byte lanes into i32 lanes.
macro_rules! packed_kernels {
    ($name:ident, $features:literal, |$acc:ident, $u:ident, $s:ident| $dot:expr) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::*;
            use std::arch::x86_64::*;

            pub fn x1(group: &[u8], act: &[ActBlock]) -> [f32; 8] {
                // SAFETY: selected only when the CPU reports every feature in $features.
                unsafe { tile::<1>(group, [act])[0] }
            }
            pub fn x4(group: &[u8], acts: [&[ActBlock]; 4]) -> [[f32; 8]; 4] {
                // SAFETY: as above.
                unsafe { tile::<4>(group, acts) }
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot($acc: __m256i, $u: __m256i, $s: __m256i) -> __m256i {
                $dot
            }

            #[target_feature(enable = $features)]
            unsafe fn tile<const T: usize>(group: &[u8], acts: [&[ActBlock]; T]) -> [[f32; 8]; T] {
                let blocks = acts
                    .iter()
                    .map(|a| a.len())
                    .min()
                    .unwrap_or(0)
                    .min(group.len() / GROUP_BLOCK);
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); T];
                let p = group.as_ptr();
                for b in 0..blocks {
                    let blk = p.add(b * GROUP_BLOCK);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
                    let m = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
                    let mut w = [_mm256_setzero_si256(); 8];
                    for k in 0..4 {
                        let packed = _mm256_loadu_si256(blk.add(32 + 32 * k) as *const __m256i);
                        w[k] = _mm256_and_si256(packed, mask);
                        w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                    }
                    for t in 0..T {
                        let a = acts[t].get_unchecked(b);
                        let q = a.qs.as_ptr() as *const i32;
                        let mut sum = _mm256_setzero_si256();
                        for (s, ws) in w.iter().enumerate() {
                            sum = dot(sum, *ws, _mm256_set1_epi32(q.add(s).read_unaligned()));
                        }
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[t]);
                        acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s), acc[t]);
                    }
                }
                let mut out = [[0f32; 8]; T];
                for t in 0..T {
                    _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
                }
                out
            }
        }
    };
}

packed_kernels!(avx2, "avx2,fma,f16c", |acc, u, s| _mm256_add_epi32(
    acc,
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
));
packed_kernels!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |acc, u, s| {
    _mm256_dpbusd_epi32(acc, u, s)
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::formats::{quantize_activations, quantize_row};
    use proptest::prelude::*;

    proptest! {
        /// Packing is lossless, and every kernel (scalar, SIMD; one or four activation rows) gives the
        /// same numbers, close to the row-at-a-time reference kernel.
        #[test]
        fn packed_kernels_agree(blocks in 1usize..10, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let cols = blocks * QK;
            let w: Vec<f32> = (0..8 * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            let data: Vec<u8> = w.chunks_exact(cols).flat_map(|r| quantize_row(QFormat::Q4_1, r)).collect();
            let packed = pack(&data, 8, cols);
            prop_assert_eq!(packed.len(), data.len());
            let rb = blocks * SRC_BLOCK;
            for r in 0..8 {
                prop_assert_eq!(&unpack_row(&packed, cols, r)[..], &data[r * rb..(r + 1) * rb]);
            }
            let acts: Vec<Vec<ActBlock>> = (0..4).map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                let mut a = vec![ActBlock::default(); blocks];
                quantize_activations(&x, &mut a);
                a
            }).collect();
            let (x1, x4) = kernels();
            let four = x4(&packed, [&acts[0], &acts[1], &acts[2], &acts[3]]);
            let slow = scalar::x4(&packed, [&acts[0], &acts[1], &acts[2], &acts[3]]);
            for t in 0..4 {
                prop_assert_eq!(x1(&packed, &acts[t]), four[t]);
                prop_assert_eq!(scalar::x1(&packed, &acts[t]), slow[t]);
                prop_assert_eq!(four[t], slow[t]);
                for r in 0..8 {
                    let reference = crate::quant::kernels::scalar::dot_q4_1(&data[r * rb..(r + 1) * rb], &acts[t]);
                    prop_assert!((four[t][r] - reference).abs() <= 1e-3 * (1.0 + reference.abs()));
                }
            }
        }
    }
}
