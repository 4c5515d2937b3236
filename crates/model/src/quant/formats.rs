//! Byte layouts of the GGML block formats we compute with, and conversions to and from f32.
//!
//! Weights keep the exact GGUF bytes (so a file is served without re-quantizing). Activations are
//! quantized per call into [`ActBlock`]s: 32 signed bytes with an f32 scale and the scaled sum, the
//! partner format of every 32-element weight block (Q8_0 and Q8_1 in llama.cpp's terms).

use half::f16;

/// Elements per block for every format here.
pub const QK: usize = 32;

/// The weight formats with native kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QFormat {
    /// 4-bit, scale only: x = d·(q − 8). 18 bytes per block.
    Q4_0,
    /// 4-bit, scale and minimum: x = d·q + m. 20 bytes per block.
    Q4_1,
    /// 8-bit, scale only: x = d·q. 34 bytes per block.
    Q8_0,
}

impl QFormat {
    /// Bytes per block of [`QK`] elements.
    pub const fn block_bytes(self) -> usize {
        match self {
            QFormat::Q4_0 => 18,
            QFormat::Q4_1 => 20,
            QFormat::Q8_0 => 34,
        }
    }

    /// The GGML name, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            QFormat::Q4_0 => "Q4_0",
            QFormat::Q4_1 => "Q4_1",
            QFormat::Q8_0 => "Q8_0",
        }
    }
}

/// One quantized block of activations: x ≈ d·qs, with `s` = d·Σqs at f16 precision (used by formats
/// with a minimum, as llama.cpp's Q8_1) and `sum` = Σqs exactly (used by the repacked Q8_0 kernel).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
pub struct ActBlock {
    pub qs: [i8; QK],
    pub d: f32,
    pub s: f32,
    pub sum: i32,
}

#[inline]
pub(crate) fn read_f16(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Quantizes `x` (length a multiple of [`QK`]) into `out` (one block per 32 values).
///
/// Rounds exactly as llama.cpp's Q8_0/Q8_1 activations do, scale and sum stored at f16 precision, so
/// both runtimes compute the same integer products and agree to the last bits.
pub fn quantize_activations(x: &[f32], out: &mut [ActBlock]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the features were just detected.
        return unsafe { quantize_activations_avx2(x, out) };
    }
    quantize_activations_scalar(x, out)
}

/// The portable [`quantize_activations`].
pub(crate) fn quantize_activations_scalar(x: &[f32], out: &mut [ActBlock]) {
    for (chunk, block) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let inv = if amax == 0.0 { 0.0 } else { 127.0 / amax };
        let mut sum = 0i32;
        for (q, v) in block.qs.iter_mut().zip(chunk) {
            // Round half to even, as llama.cpp's _mm256_round_ps does (exact for |x| < 2^22).
            // Finite inputs scale into [-127, 127] (the clamp changes no result); NaN or infinite
            // activations (a corrupt model) give 0 or ±127, so `sum` stays small and cannot overflow.
            const MAGIC: f32 = 12_582_912.0;
            let r = (((v * inv).clamp(-127.0, 127.0) + MAGIC) - MAGIC) as i32;
            *q = r as i8;
            sum += r;
        }
        block.d = f16::from_f32(d).to_f32();
        block.s = f16::from_f32(d * sum as f32).to_f32();
        block.sum = sum;
    }
}

/// [`quantize_activations`] with AVX2: the same operations lane by lane, so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn quantize_activations_avx2(x: &[f32], out: &mut [ActBlock]) {
    use std::arch::x86_64::*;
    let sign = _mm256_set1_ps(-0.0);
    for (chunk, block) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let p = chunk.as_ptr();
        let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if amax == 0.0 { 0.0 } else { 127.0 / amax });
        let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let q = v.map(|v| {
            // As the scalar path: NaN lanes become 0 (the ordered-compare mask clears them), then
            // the product is clamped to [-127, 127], so no lane converts to i32::MIN and `sum`
            // cannot overflow; finite inputs are already inside and keep their bits.
            let p = _mm256_mul_ps(v, inv);
            let p = _mm256_and_ps(p, _mm256_cmp_ps(p, p, _CMP_ORD_Q));
            let p = _mm256_min_ps(_mm256_max_ps(p, lo), hi);
            _mm256_cvtps_epi32(_mm256_round_ps(
                p,
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01)));
        // i32 → i16 → i8 packs interleave 128-bit lanes; the permute puts the bytes back in order.
        let b16 = [
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        ];
        let b8 = _mm256_packs_epi16(b16[0], b16[1]);
        let b8 = _mm256_permutevar8x32_epi32(b8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(block.qs.as_mut_ptr() as *mut __m256i, b8);
        block.d = f16::from_f32(d).to_f32();
        block.s = f16::from_f32(d * sum as f32).to_f32();
        block.sum = sum;
    }
}

/// Dequantizes one row of `cols` elements (`row` holds exactly its blocks) into `out`.
pub fn dequantize_row(format: QFormat, row: &[u8], out: &mut [f32]) {
    let bb = format.block_bytes();
    for (block, dst) in row.chunks_exact(bb).zip(out.chunks_exact_mut(QK)) {
        match format {
            QFormat::Q4_0 => {
                let d = read_f16(block, 0);
                for j in 0..QK / 2 {
                    let b = block[2 + j];
                    dst[j] = d * ((b & 0x0F) as i32 - 8) as f32;
                    dst[j + QK / 2] = d * ((b >> 4) as i32 - 8) as f32;
                }
            }
            QFormat::Q4_1 => {
                let d = read_f16(block, 0);
                let m = read_f16(block, 2);
                for j in 0..QK / 2 {
                    let b = block[4 + j];
                    dst[j] = d * (b & 0x0F) as f32 + m;
                    dst[j + QK / 2] = d * (b >> 4) as f32 + m;
                }
            }
            QFormat::Q8_0 => {
                let d = read_f16(block, 0);
                for j in 0..QK {
                    dst[j] = d * block[2 + j] as i8 as f32;
                }
            }
        }
    }
}

/// Quantizes f32 rows into `format` blocks with llama.cpp's reference rounding (used by tests and
/// by tools that write GGUF files).
pub fn quantize_row(format: QFormat, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / QK * format.block_bytes());
    for chunk in x.chunks_exact(QK) {
        match format {
            QFormat::Q4_0 => {
                let (mut amax, mut max) = (0f32, 0f32);
                for &v in chunk {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for j in 0..QK / 2 {
                    let lo = ((chunk[j] * id + 8.5) as u8).min(15);
                    let hi = ((chunk[j + QK / 2] * id + 8.5) as u8).min(15);
                    out.push(lo | (hi << 4));
                }
            }
            QFormat::Q4_1 => {
                let min = chunk.iter().copied().fold(f32::INFINITY, f32::min);
                let max = chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let d = (max - min) / 15.0;
                let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                for j in 0..QK / 2 {
                    let lo = (((chunk[j] - min) * id + 0.5) as u8).min(15);
                    let hi = (((chunk[j + QK / 2] - min) * id + 0.5) as u8).min(15);
                    out.push(lo | (hi << 4));
                }
            }
            QFormat::Q8_0 => {
                let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(chunk.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Activations from a corrupt model (NaN, ±inf, huge next to tiny, in any order) quantize
    /// without overflow on both paths: every quant within ±127 and the sum equal to theirs.
    #[test]
    fn non_finite_activations_stay_in_range() {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            1e-30,
            0.0,
            1.0,
        ];
        for seed in 0..64usize {
            let x: Vec<f32> = (0..2 * QK)
                .map(|i| specials[(i * 7 + seed * 13 + i * i * seed) % specials.len()])
                .collect();
            for f in [
                quantize_activations as fn(&[f32], &mut [ActBlock]),
                quantize_activations_scalar,
            ] {
                let mut out = vec![ActBlock::default(); 2];
                f(&x, &mut out);
                for b in &out {
                    let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
                    assert!(
                        b.qs.iter().all(|&q| (-127..=127).contains(&q)),
                        "{:?}",
                        b.qs
                    );
                    assert_eq!(b.sum, sum, "seed {seed}");
                }
            }
        }
    }

    proptest! {
        /// The SIMD activation quantizer gives the scalar one's bits (ties, zeros, mixed magnitudes).
        #[test]
        fn simd_quantizer_matches_scalar(blocks in 1usize..6, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut x: Vec<f32> = (0..blocks * QK).map(|_| rng.gen_range(-5.0f32..5.0)).collect();
            // A block of zeros, and one whose values land exactly on .5 after scaling.
            x[..QK].iter_mut().for_each(|v| *v = 0.0);
            if blocks > 1 {
                for (i, v) in x[QK..2 * QK].iter_mut().enumerate() {
                    *v = (i as f32 - 15.5) * (127.0 / 15.5) / 127.0;
                }
            }
            let (mut fast, mut slow) = (vec![ActBlock::default(); blocks], vec![ActBlock::default(); blocks]);
            quantize_activations(&x, &mut fast);
            quantize_activations_scalar(&x, &mut slow);
            prop_assert_eq!(fast.len(), slow.len());
            for (f, s) in fast.iter().zip(&slow) {
                prop_assert_eq!(f.qs, s.qs);
                prop_assert_eq!((f.d.to_bits(), f.s.to_bits(), f.sum), (s.d.to_bits(), s.s.to_bits(), s.sum));
            }
        }
    }
}
