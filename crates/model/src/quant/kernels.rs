//! Dot products of one quantized weight row with quantized activations: the inner loop of decoding.
//!
//! Each format has a portable scalar kernel and SIMD kernels for AVX2 (`maddubs`: unsigned 4-bit ×
//! signed 8-bit pairs summed to i16, then i32) and AVX-512 VNNI (`vpdpbusd`, one instruction for the
//! same), scaled in f32 per block. The kernel is chosen once at run time from the CPU's features, so one
//! binary runs everywhere and uses what the machine has.

use super::formats::{read_f16, ActBlock, QFormat, QK};
use std::sync::OnceLock;

/// `fn(row_bytes, activation_blocks) -> dot`.
pub type DotFn = fn(&[u8], &[ActBlock]) -> f32;

/// One weight row against four activation rows at once: the weight block is unpacked once and used
/// four times (batched decode and prefill).
pub type Dot4Fn = fn(&[u8], [&[ActBlock]; 4]) -> [f32; 4];

/// The four-row kernel for `format` on this CPU.
pub fn dot4_fn(format: QFormat) -> Dot4Fn {
    static TABLE: OnceLock<[Dot4Fn; 3]> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        match isa() {
            "avx512-vnni" => return [dot4_generic_q4_0, vnni::dot4_q4_1, vnni::dot4_q8_0],
            "avx2" => return [dot4_generic_q4_0, avx2::dot4_q4_1, avx2::dot4_q8_0],
            _ => {}
        }
        [dot4_generic_q4_0, dot4_generic_q4_1, dot4_generic_q8_0]
    });
    match format {
        QFormat::Q4_0 => t[0],
        QFormat::Q4_1 => t[1],
        QFormat::Q8_0 => t[2],
    }
}

fn dot4_with(f: DotFn, row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
    acts.map(|a| f(row, a))
}
fn dot4_generic_q4_0(row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
    dot4_with(dot_fn(QFormat::Q4_0), row, acts)
}
fn dot4_generic_q4_1(row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
    dot4_with(dot_fn(QFormat::Q4_1), row, acts)
}
fn dot4_generic_q8_0(row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
    dot4_with(dot_fn(QFormat::Q8_0), row, acts)
}

/// The kernel for `format` on this CPU.
pub fn dot_fn(format: QFormat) -> DotFn {
    let table = table();
    match format {
        QFormat::Q4_0 => table.1[0],
        QFormat::Q4_1 => table.1[1],
        QFormat::Q8_0 => table.1[2],
    }
}

/// The name of the instruction set the kernels use here (for benchmarks and logs).
pub fn isa() -> &'static str {
    table().0
}

fn table() -> &'static (&'static str, [DotFn; 3]) {
    static TABLE: OnceLock<(&'static str, [DotFn; 3])> = OnceLock::new();
    TABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2
                && has!("avx512vnni")
                && has!("avx512vl")
                && std::env::var_os("OPENLEDGER_NO_VNNI").is_none()
            {
                return (
                    "avx512-vnni",
                    [vnni::dot_q4_0, vnni::dot_q4_1, vnni::dot_q8_0],
                );
            }
            if avx2 {
                return ("avx2", [avx2::dot_q4_0, avx2::dot_q4_1, avx2::dot_q8_0]);
            }
        }
        (
            "scalar",
            [scalar::dot_q4_0, scalar::dot_q4_1, scalar::dot_q8_0],
        )
    })
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
                sum +=
                    (b & 0x0F) as i32 * a.qs[j] as i32 + (b >> 4) as i32 * a.qs[j + QK / 2] as i32;
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
                sum +=
                    (b & 0x0F) as i32 * a.qs[j] as i32 + (b >> 4) as i32 * a.qs[j + QK / 2] as i32;
            }
            acc += read_f16(w, 0) * a.d * sum as f32 + read_f16(w, 2) * a.s;
        }
        acc
    }

    pub fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
        let mut acc = 0f32;
        for (w, a) in row.chunks_exact(QFormat::Q8_0.block_bytes()).zip(act) {
            let sum: i32 = (0..QK)
                .map(|j| w[2 + j] as i8 as i32 * a.qs[j] as i32)
                .sum();
            acc += read_f16(w, 0) * a.d * sum as f32;
        }
        acc
    }
}

/// The SIMD kernels, instantiated once per instruction set: `$features` are the target features and
/// `$dot` sums 32 u8×i8 products into eight i32 lanes (`maddubs`+`madd` on AVX2, `vpdpbusd` with VNNI).
macro_rules! simd_kernels {
    ($name:ident, $features:literal, |$u:ident, $s:ident| $dot:expr) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::*;
            use std::arch::x86_64::*;

            pub fn dot_q4_0(row: &[u8], act: &[ActBlock]) -> f32 {
                // SAFETY: selected only when the CPU reports every feature in $features.
                unsafe { q4_0(row, act) }
            }
            pub fn dot_q4_1(row: &[u8], act: &[ActBlock]) -> f32 {
                // SAFETY: as above.
                unsafe { q4_1::<1>(row, [act])[0] }
            }
            pub fn dot_q8_0(row: &[u8], act: &[ActBlock]) -> f32 {
                // SAFETY: as above.
                unsafe { q8_0::<1>(row, [act])[0] }
            }
            pub fn dot4_q4_1(row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { q4_1::<4>(row, acts) }
            }
            pub fn dot4_q8_0(row: &[u8], acts: [&[ActBlock]; 4]) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { q8_0::<4>(row, acts) }
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn f16(p: *const u8) -> f32 {
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    u16::from_le_bytes([*p, *p.add(1)]) as i32,
                )))
            }

            /// 16 bytes of nibbles → 32 bytes: low nibbles (elements 0..16), then high (16..32).
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn nibbles(p: *const u8) -> __m256i {
                let packed = _mm_loadu_si128(p as *const __m128i);
                let mask = _mm_set1_epi8(0x0F);
                let lo = _mm_and_si128(packed, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
                _mm256_set_m128i(hi, lo)
            }

            /// Σ u8·i8 over 32 lanes as eight f32 partial sums.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot_u8_i8($u: __m256i, $s: __m256i) -> __m256 {
                _mm256_cvtepi32_ps($dot)
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn hsum(v: __m256) -> f32 {
                let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
                let s = _mm_add_ss(s, _mm_movehdup_ps(s));
                _mm_cvtss_f32(s)
            }

            /// One weight row against `R` activation rows; each weight block is unpacked once. Every
            /// row gets the same arithmetic in the same order whatever `R` is, so a row's result never
            /// depends on which other rows share its batch.
            #[target_feature(enable = $features)]
            unsafe fn q4_1<const R: usize>(row: &[u8], acts: [&[ActBlock]; R]) -> [f32; R] {
                const BB: usize = QFormat::Q4_1.block_bytes();
                let n = acts
                    .iter()
                    .map(|a| a.len())
                    .min()
                    .unwrap_or(0)
                    .min(row.len() / BB);
                let mut acc0 = [_mm256_setzero_ps(); R];
                let mut acc1 = [_mm256_setzero_ps(); R];
                let mut mins = [0f32; R];
                let p = row.as_ptr();
                let mut i = 0;
                while i + 1 < n {
                    let (w0, w1) = (p.add(i * BB), p.add((i + 1) * BB));
                    let (d0, d1, m0, m1) = (f16(w0), f16(w1), f16(w0.add(2)), f16(w1.add(2)));
                    let (q0, q1) = (nibbles(w0.add(4)), nibbles(w1.add(4)));
                    for t in 0..R {
                        let (a0, a1) = (acts[t].get_unchecked(i), acts[t].get_unchecked(i + 1));
                        acc0[t] = _mm256_fmadd_ps(
                            _mm256_set1_ps(d0 * a0.d),
                            dot_u8_i8(q0, load(a0)),
                            acc0[t],
                        );
                        acc1[t] = _mm256_fmadd_ps(
                            _mm256_set1_ps(d1 * a1.d),
                            dot_u8_i8(q1, load(a1)),
                            acc1[t],
                        );
                        mins[t] += m0 * a0.s + m1 * a1.s;
                    }
                    i += 2;
                }
                if i < n {
                    let w = p.add(i * BB);
                    let (d, m, q) = (f16(w), f16(w.add(2)), nibbles(w.add(4)));
                    for t in 0..R {
                        let a = acts[t].get_unchecked(i);
                        acc0[t] = _mm256_fmadd_ps(
                            _mm256_set1_ps(d * a.d),
                            dot_u8_i8(q, load(a)),
                            acc0[t],
                        );
                        mins[t] += m * a.s;
                    }
                }
                std::array::from_fn(|t| hsum(_mm256_add_ps(acc0[t], acc1[t])) + mins[t])
            }

            /// Q8_0 counterpart of `q4_1` (same ordering guarantee).
            #[target_feature(enable = $features)]
            unsafe fn q8_0<const R: usize>(row: &[u8], acts: [&[ActBlock]; R]) -> [f32; R] {
                const BB: usize = QFormat::Q8_0.block_bytes();
                let n = acts
                    .iter()
                    .map(|a| a.len())
                    .min()
                    .unwrap_or(0)
                    .min(row.len() / BB);
                let mut acc0 = [_mm256_setzero_ps(); R];
                let mut acc1 = [_mm256_setzero_ps(); R];
                let p = row.as_ptr();
                // u8×i8 products: |q| as the unsigned side, q's sign moved onto the activation.
                let block = |w: *const u8| {
                    let q = _mm256_loadu_si256(w.add(2) as *const __m256i);
                    (f16(w), q, _mm256_sign_epi8(q, q))
                };
                let mut i = 0;
                while i + 1 < n {
                    let ((d0, q0, u0), (d1, q1, u1)) =
                        (block(p.add(i * BB)), block(p.add((i + 1) * BB)));
                    for t in 0..R {
                        let (a0, a1) = (acts[t].get_unchecked(i), acts[t].get_unchecked(i + 1));
                        let p0 = dot_u8_i8(u0, _mm256_sign_epi8(load(a0), q0));
                        let p1 = dot_u8_i8(u1, _mm256_sign_epi8(load(a1), q1));
                        acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * a0.d), p0, acc0[t]);
                        acc1[t] = _mm256_fmadd_ps(_mm256_set1_ps(d1 * a1.d), p1, acc1[t]);
                    }
                    i += 2;
                }
                if i < n {
                    let (d, q, u) = block(p.add(i * BB));
                    for t in 0..R {
                        let a = acts[t].get_unchecked(i);
                        let pr = dot_u8_i8(u, _mm256_sign_epi8(load(a), q));
                        acc0[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), pr, acc0[t]);
                    }
                }
                std::array::from_fn(|t| hsum(_mm256_add_ps(acc0[t], acc1[t])))
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn load(a: &ActBlock) -> __m256i {
                _mm256_load_si256(a.qs.as_ptr() as *const __m256i)
            }

            #[target_feature(enable = $features)]
            unsafe fn q4_0(row: &[u8], act: &[ActBlock]) -> f32 {
                const BB: usize = QFormat::Q4_0.block_bytes();
                let n = act.len().min(row.len() / BB);
                let mut acc = _mm256_setzero_ps();
                let mut offs = 0f32;
                let p = row.as_ptr();
                for (i, a) in act.iter().enumerate().take(n) {
                    let w = p.add(i * BB);
                    let d = f16(w);
                    acc = _mm256_fmadd_ps(
                        _mm256_set1_ps(d * a.d),
                        dot_u8_i8(nibbles(w.add(2)), load(a)),
                        acc,
                    );
                    offs += d * 8.0 * a.s;
                }
                hsum(acc) - offs
            }
        }
    };
}

simd_kernels!(avx2, "avx2,fma,f16c", |u, s| _mm256_madd_epi16(
    _mm256_maddubs_epi16(u, s),
    _mm256_set1_epi16(1)
));
simd_kernels!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |u, s| {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
});

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
                // The four-row kernel gives each row exactly the single-row result (batch invariance).
                let four = dot4_fn(format)(&row, [&act, &act, &act, &act]);
                prop_assert_eq!(four, [fast; 4], "{:?}", format);
            }
        }
    }

    /// Quantized dot products approximate the float dot product (the formats are read correctly).
    #[test]
    fn quantized_dot_tracks_float_dot() {
        let w: Vec<f32> = (0..4 * QK)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let x: Vec<f32> = (0..4 * QK)
            .map(|i| ((i * 53 % 97) as f32 / 40.0) - 1.2)
            .collect();
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
