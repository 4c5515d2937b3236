//! The packed Q4_1 and Q8_0 kernels on 512-bit registers: two consecutive groups of eight rows
//! (16 rows) per pass, the low half of each register holding the first group's lanes and the high
//! half the second's.
//!
//! The layout is [`super::packed`]'s unchanged (the two groups are `stride` bytes apart), and each
//! lane does the arithmetic of the 256-bit kernels in the same order (`vpdpbusd` over the chunks,
//! one conversion, the same fused multiply-adds), so every row's result is bit-identical to theirs
//! and to the scalar reference: the choice of kernel never changes an output.
//!
//! Why: on Intel Xeon cores, whose two 512-bit ports each run `vpdpbusd` on a full register, a
//! zmm kernel does twice the work per instruction of the ymm one; AMD's Zen 4 splits each 512-bit
//! operation into two 256-bit halves, so there it mainly halves the instructions issued.
//! `OPENLEDGER_NO_ZMM=1` keeps the 256-bit kernels (for A/B runs).

use super::formats::{ActBlock, QFormat};
use std::sync::OnceLock;

/// `fn(two groups, stride, activation rows) -> [16 row results; T]` for one act row (`X1`) or
/// four (`X4`). `pair` holds at least `2 · stride` bytes (checked: a shorter slice panics before any
/// read); the second group starts `stride` bytes after the first.
pub type X1Fn16 = fn(&[u8], usize, &[ActBlock]) -> [f32; 16];
pub type X4Fn16 = fn(&[u8], usize, [&[ActBlock]; 4]) -> [[f32; 16]; 4];

/// The 16-row kernels for `format`, when this CPU has them (AVX-512 F/BW/VL/VNNI, with the
/// 256-bit VNNI kernels selected) and `OPENLEDGER_NO_ZMM` is unset.
pub fn kernels(format: QFormat) -> Option<(X1Fn16, X4Fn16)> {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            super::kernels::isa() == "avx512-vnni"
                && has!("avx512f")
                && has!("avx512bw")
                && std::env::var_os("OPENLEDGER_NO_ZMM").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    });
    if !on {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match format {
            QFormat::Q4_1 => Some((zmm::x1, zmm::x4)),
            QFormat::Q8_0 => Some((zmm::x1_q8, zmm::x4_q8)),
            QFormat::Q4_0 => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

#[cfg(target_arch = "x86_64")]
mod zmm {
    use super::*;
    use std::arch::x86_64::*;

    const Q4_1_GROUP: usize = 160;
    const Q8_0_GROUP: usize = 272;

    fn checked(pair: &[u8], stride: usize) {
        assert!(
            stride.checked_mul(2).is_some_and(|n| n <= pair.len()),
            "packed16: {} bytes hold no two groups of {stride}",
            pair.len()
        );
    }

    // SAFETY (all four): `kernels` hands these out only when the CPU reports every feature `tile`
    // enables; `checked` makes `pair` hold both groups, and `tile` bounds its reads (see there).
    pub fn x1(pair: &[u8], stride: usize, act: &[ActBlock]) -> [f32; 16] {
        checked(pair, stride);
        unsafe { tile::<1, false>(pair, stride, [act])[0] }
    }
    pub fn x4(pair: &[u8], stride: usize, acts: [&[ActBlock]; 4]) -> [[f32; 16]; 4] {
        checked(pair, stride);
        unsafe { tile::<4, false>(pair, stride, acts) }
    }
    pub fn x1_q8(pair: &[u8], stride: usize, act: &[ActBlock]) -> [f32; 16] {
        checked(pair, stride);
        unsafe { tile::<1, true>(pair, stride, [act])[0] }
    }
    pub fn x4_q8(pair: &[u8], stride: usize, acts: [&[ActBlock]; 4]) -> [[f32; 16]; 4] {
        checked(pair, stride);
        unsafe { tile::<4, true>(pair, stride, acts) }
    }

    /// 32 bytes at `lo` in the low half, 32 bytes at `hi` in the high half.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn halves(lo: *const u8, hi: *const u8) -> __m512i {
        let lo = _mm256_loadu_si256(lo as *const __m256i);
        let hi = _mm256_loadu_si256(hi as *const __m256i);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    /// Eight f16 at `lo` and eight at `hi`, as 16 f32 lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    #[inline]
    unsafe fn scales(lo: *const u8, hi: *const u8) -> __m512 {
        let lo = _mm_loadu_si128(lo as *const __m128i);
        let hi = _mm_loadu_si128(hi as *const __m128i);
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
    }

    /// `T` activation rows against two groups; `Q8` picks the Q8_0 layout, else Q4_1. The same
    /// per-lane arithmetic, in the same order, as `packed`'s 256-bit `tile`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn tile<const T: usize, const Q8: bool>(
        pair: &[u8],
        stride: usize,
        acts: [&[ActBlock]; T],
    ) -> [[f32; 16]; T] {
        let gb = if Q8 { Q8_0_GROUP } else { Q4_1_GROUP };
        let blocks = acts
            .iter()
            .map(|a| a.len())
            .min()
            .unwrap_or(0)
            .min(stride / gb);
        let mask = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); T];
        // SAFETY of the raw reads below: the caller checked `pair.len() ≥ 2·stride`, and
        // `blocks ≤ stride / gb`, so block `b` of either group reads bytes `b·gb .. b·gb + gb` of
        // that group's `stride` bytes (the furthest load ends at 16 + 32·8 = 272 = gb for Q8_0 and
        // 32 + 32·4 = 160 = gb for Q4_1); `blocks` ≤ every activation row's length, so
        // `acts[t][b]` exists.
        let (p0, p1) = (pair.as_ptr(), pair.as_ptr().add(stride));
        for b in 0..blocks {
            let (b0, b1) = (p0.add(b * gb), p1.add(b * gb));
            let d = scales(b0, b1);
            let mut w = [_mm512_setzero_si512(); 8];
            if Q8 {
                for (k, wk) in w.iter_mut().enumerate() {
                    *wk = halves(b0.add(16 + 32 * k), b1.add(16 + 32 * k));
                }
            } else {
                for k in 0..4 {
                    let packed = halves(b0.add(32 + 32 * k), b1.add(32 + 32 * k));
                    w[k] = _mm512_and_si512(packed, mask);
                    w[k + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(packed), mask);
                }
            }
            for t in 0..T {
                let a = acts[t].get_unchecked(b);
                let q = a.qs.as_ptr() as *const i32;
                let mut sum = _mm512_setzero_si512();
                for (s, ws) in w.iter().enumerate() {
                    sum =
                        _mm512_dpbusd_epi32(sum, *ws, _mm512_set1_epi32(q.add(s).read_unaligned()));
                }
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(a.d));
                if Q8 {
                    sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(128 * a.sum));
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[t]);
                } else {
                    let m = scales(b0.add(16), b1.add(16));
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, acc[t]);
                    acc[t] = _mm512_fmadd_ps(m, _mm512_set1_ps(a.s), acc[t]);
                }
            }
        }
        let mut out = [[0f32; 16]; T];
        for t in 0..T {
            _mm512_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::formats::{quantize_activations, quantize_row, QK};
    use crate::quant::packed;
    use proptest::prelude::*;

    /// The 8-row kernels' results for the same two groups, concatenated (what the 16-row kernels
    /// must equal bit for bit).
    fn reference(format: QFormat, pair: &[u8], stride: usize, act: &[ActBlock]) -> [f32; 16] {
        let (x1, _) = packed::kernels(format);
        let mut out = [0f32; 16];
        out[..8].copy_from_slice(&x1(&pair[..stride], act));
        out[8..].copy_from_slice(&x1(&pair[stride..2 * stride], act));
        out
    }

    proptest! {
        /// On a CPU with the 512-bit kernels, they give exactly the 8-row kernels' numbers (and so
        /// the scalar reference's) for both formats, one or four activation rows. Elsewhere the
        /// test checks that no 16-row kernel is handed out for Q4_0.
        #[test]
        fn sixteen_rows_match_two_groups_of_eight(blocks in 1usize..10, seed in any::<u64>()) {
            use rand::{Rng, SeedableRng};
            prop_assert!(kernels(QFormat::Q4_0).is_none());
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let cols = blocks * QK;
            let w: Vec<f32> = (0..16 * cols).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            let acts: Vec<Vec<ActBlock>> = (0..4).map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                let mut a = vec![ActBlock::default(); blocks];
                quantize_activations(&x, &mut a);
                a
            }).collect();
            let four = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            for format in [QFormat::Q4_1, QFormat::Q8_0] {
                let Some((x1, x4)) = kernels(format) else { continue };
                let data: Vec<u8> = w.chunks_exact(cols).flat_map(|r| quantize_row(format, r)).collect();
                let pair = packed::pack(format, &data, 16, cols);
                let stride = pair.len() / 2;
                let got4 = x4(&pair, stride, four);
                for t in 0..4 {
                    let want = reference(format, &pair, stride, &acts[t]);
                    prop_assert_eq!(x1(&pair, stride, &acts[t]), want);
                    prop_assert_eq!(got4[t], want);
                }
            }
        }
    }

    #[test]
    fn a_slice_without_two_groups_is_refused() {
        let Some((x1, _)) = kernels(QFormat::Q4_1) else {
            return;
        };
        let act = [ActBlock::default()];
        let short = vec![0u8; 160 + 159];
        let r = std::panic::catch_unwind(|| x1(&short, 160, &act));
        assert!(r.is_err(), "a 319-byte slice holds no two 160-byte groups");
    }
}
