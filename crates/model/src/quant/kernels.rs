//! Dot products of one quantized weight row with quantized activations: the inner loop of decoding.
//!
//! Each format has a portable scalar kernel and an AVX2 kernel (`maddubs`: unsigned 4-bit × signed
//! 8-bit pairs summed to i16, then to i32, scaled in f32 per block). The kernel is chosen once at run
//! time from the CPU's features, so one binary runs everywhere and uses what the machine has.

use super::formats::{read_f16, ActBlock, QFormat, QK};
use std::sync::OnceLock;

/// `fn(row_bytes, activation_blocks) -> dot`.
pub type DotFn = fn(&[u8], &[ActBlock]) -> f32;

/// The kernel for `format` on this CPU.
pub fn dot_fn(format: QFormat) -> DotFn {
    static TABLE: OnceLock<[DotFn; 3]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return [avx2::dot_q4_0, avx2::dot_q4_1, avx2::dot_q8_0];
        }
        [scalar::dot_q4_0, scalar::dot_q4_1, scalar::dot_q8_0]
    });
    match format {
        QFormat::Q4_0 => table[0],
        QFormat::Q4_1 => table[1],
        QFormat::Q8_0 => table[2],
    }
}

/// The name of the instruction set the kernels use here (for benchmarks and `--verbose`).
pub fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return "avx2";
    }
    "scalar"
}

/// Portable kernels; also the reference the SIMD ones are tested against.
pub mod scalar {
    use super::*;

    pub fn dot_q4_0(row: &[u8], act: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (w, a) in row.chunks_exact(QFormat::Q4_0.block_bytes()).zip(act) {
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                let b = w[2 + j];
                sum += (b & 0x0F) as i32 * a.qs[j] as i32 + (b >> 4) as i32 * a.qs[j + QK / 2] as i32;
            }
            acc += read_f16(w, 0) * (a.d * sum as f32 - 8.0 * a.s);
        }
        acc
    }

    pub fn dot_q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (w, a) in row.chunks_exact(QFormat::Q4_1.block_bytes()).zip(act) {
            let mut sum = 0i32;
            for j in 0..QK / 2 {
                let b = w[4 + j];
                sum += (b & 0x0F) as i32 * a.qs[j] as i32 + (b >> 4) as i32 * a.qs[j + QK / 2] as i32;
            }
            acc += read_f16(w, 0) * a.d * sum as f32 + read_f16(w, 2) * a.s;
        }
        acc
    }

    pub fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (w, a) in row.chunks_exact(QFormat::Q8_0.block_bytes()).zip(act) {
            let sum: i32 = (0..QK).map(|j| w[2 + j] as i8 as i32 * a.qs[j] as i32).sum();
            acc += read_f16(w, 0) * a.d * sum as f32;
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    pub fn dot_q4_0(row: &[u8], act: &[ActBlock]) -> f32 {
        // SAFETY: selected only when the CPU reports avx2 and fma.
        unsafe { q4_0(row, act) }
    }
    pub fn dot_q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
        // SAFETY: as above.
        unsafe { q4_1(row, act) }
    }
    pub fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
        // SAFETY: as above.
        unsafe { q8_0(row, act) }
    }

    /// Unpacks 16 bytes of nibbles into 32 bytes: low nibbles first (elements 0..16), then high.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let packed = _mm_loadu_si128(p as *const __m128i);
        let mask = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(packed, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Σ u8·i8 over 32 lanes, as eight i32 partial sums converted to f32.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot_u8_i8(u: __m256i, s: __m256i) -> __m256 {
        let pairs = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
        let bb = QFormat::Q4_1.block_bytes();
        let n = act.len().min(row.len() / bb);
        let mut acc = _mm256_setzero_ps();
        let mut mins = 0f32;
        let p = row.as_ptr();
        for (i, a) in act.iter().enumerate().take(n) {
            let w = p.add(i * bb);
            let d = half::f16::from_bits(u16::from_le_bytes([*w, *w.add(1)])).to_f32();
            let m = half::f16::from_bits(u16::from_le_bytes([*w.add(2), *w.add(3)])).to_f32();
            let q = nibbles(w.add(4));
            let x = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), dot_u8_i8(q, x), acc);
            mins += m * a.s;
        }
        hsum(acc) + mins
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_0(row: &[u8], act: &[ActBlock]) -> f32 {
        let bb = QFormat::Q4_0.block_bytes();
        let n = act.len().min(row.len() / bb);
        let mut acc = _mm256_setzero_ps();
        let mut offs = 0f32;
        let p = row.as_ptr();
        for (i, a) in act.iter().enumerate().take(n) {
            let w = p.add(i * bb);
            let d = half::f16::from_bits(u16::from_le_bytes([*w, *w.add(1)])).to_f32();
            let q = nibbles(w.add(2));
            let x = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), dot_u8_i8(q, x), acc);
            offs += d * 8.0 * a.s;
        }
        hsum(acc) - offs
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
        let bb = QFormat::Q8_0.block_bytes();
        let n = act.len().min(row.len() / bb);
        let mut acc = _mm256_setzero_ps();
        let p = row.as_ptr();
        for (i, a) in act.iter().enumerate().take(n) {
            let w = p.add(i * bb);
            let d = half::f16::from_bits(u16::from_le_bytes([*w, *w.add(1)])).to_f32();
            let q = _mm256_loadu_si256(w.add(2) as *const __m256i);
            let x = _mm256_load_si256(a.qs.as_ptr() as *const __m256i);
            // maddubs wants unsigned × signed: move q's sign onto x.
            let prod = dot_u8_i8(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), prod, acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::formats::{quantize_activations, quantize_row};
    use proptest::prelude::*;

    proptest! {
        /// The selected (SIMD) kernel agrees with the scalar one on random rows, every format.
        #[test]
        fn simd_matches_scalar(blocks in 1usize..12, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let w: Vec<f32> = (0..blocks * QK).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            let x: Vec<f32> = (0..blocks * QK).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
            let mut act = vec![ActBlock::default(); blocks];
            quantize_activations(&x, &mut act);
            for (format, reference) in [
                (QFormat::Q4_0, scalar::dot_q4_0 as DotFn),
                (QFormat::Q4_1, scalar::dot_q4_1),
                (QFormat::Q8_0, scalar::dot_q8_0),
            ] {
                let row = quantize_row(format, &w);
                let (fast, slow) = (dot_fn(format)(&row, &act), reference(&row, &act));
                prop_assert!((fast - slow).abs() <= 1e-3 * (1.0 + slow.abs()), "{format:?}: {fast} vs {slow}");
            }
        }
    }

    /// Quantized dot products approximate the float dot product (the formats are read correctly).
    #[test]
    fn quantized_dot_tracks_float_dot() {
        let w: Vec<f32> = (0..4 * QK).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
        let x: Vec<f32> = (0..4 * QK).map(|i| ((i * 53 % 97) as f32 / 40.0) - 1.2).collect();
        let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        let mut act = vec![ActBlock::default(); 4];
        quantize_activations(&x, &mut act);
        for format in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let got = dot_fn(format)(&quantize_row(format, &w), &act);
            let tol = if format == QFormat::Q8_0 { 0.05 } else { 0.6 };
            assert!((got - exact).abs() < tol, "{format:?}: {got} vs {exact}");
        }
    }
}
