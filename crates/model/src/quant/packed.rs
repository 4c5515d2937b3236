//! Q4_1 and Q8_0 weights repacked eight rows at a time, and the product kernels that read them.
//!
//! A GGUF row keeps each block's scale and quants together, so a kernel that works on one row at a
//! time must reduce eight partial sums per block and scale each one separately. Here the blocks of
//! eight consecutive rows are interleaved. For block `b` of a group of eight rows:
//!
//! ```text
//! Q4_1: [d: 8 × f16][m: 8 × f16][nibbles: 4 × 32 bytes]   160 bytes (GGUF: 8 × 20)
//! Q8_0: [d: 8 × f16][quants + 128: 8 × 32 bytes]           272 bytes (GGUF: 8 × 34)
//! ```
//!
//! Q4_1 nibble chunk `k` holds, for each row `r` in turn, that row's GGUF bytes `4k..4k+4` (low nibbles:
//! elements `4k..4k+4`; high nibbles: elements `16+4k..16+4k+4`); Q8_0 chunk `s` holds each row's
//! elements `4s..4s+4`, offset to unsigned. One `vpdpbusd` of a chunk with four broadcast activation
//! bytes advances all eight rows at once; the eight lanes end the block holding each row's exact
//! integer dot product, and one vector of scales finishes it:
//!
//! `Q4_1: acc[r] += f32(Σ q·a) · (d[r]·d_a);  acc[r] += m[r] · s_a`
//! `Q8_0: acc[r] += f32(Σ (q+128)·a − 128·Σa) · (d[r]·d_a)`
//!
//! Every row gets that arithmetic in that order whatever the batch size, so results are batch-invariant.

use super::formats::{ActBlock, QFormat, QK};
use std::sync::OnceLock;

/// Bytes of one block of a group of eight rows, or `None` when the format is not repacked.
pub fn group_block_bytes(format: QFormat) -> Option<usize> {
    match format {
        QFormat::Q4_1 => Some(160),
        QFormat::Q8_0 => Some(272),
        QFormat::Q4_0 => None,
    }
}

/// Is a `rows × cols` matrix of `format` repacked?
pub fn packable(format: QFormat, rows: usize, cols: usize) -> bool {
    group_block_bytes(format).is_some()
        && rows.is_multiple_of(8)
        && cols.is_multiple_of(QK)
        && rows > 0
}

/// Where the pieces of a GGUF block go in a group block: `(offset in the GGUF block, offset of lane 0
/// in the group block, bytes, xor)`; lane `r`'s piece sits `r · bytes` after lane 0's.
fn pieces(format: QFormat) -> &'static [(usize, usize, usize, u8)] {
    match format {
        QFormat::Q4_1 => &[
            (0, 0, 2, 0),
            (2, 16, 2, 0),
            (4, 32, 4, 0),
            (8, 64, 4, 0),
            (12, 96, 4, 0),
            (16, 128, 4, 0),
        ],
        QFormat::Q8_0 => &[
            (0, 0, 2, 0),
            (2, 16, 4, 0x80),
            (6, 48, 4, 0x80),
            (10, 80, 4, 0x80),
            (14, 112, 4, 0x80),
            (18, 144, 4, 0x80),
            (22, 176, 4, 0x80),
            (26, 208, 4, 0x80),
            (30, 240, 4, 0x80),
        ],
        QFormat::Q4_0 => &[],
    }
}

/// GGUF bytes (`rows × cols`, row-major) → the grouped layout (the same number of bytes).
///
/// The caller checked the shape (`QWeight::new`): `data` holds exactly `rows × cols / 32` blocks,
/// `rows` is a multiple of 8. A mismatch is a bug in the caller and panics before anything is written.
pub fn pack(format: QFormat, data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let (blocks, bb) = (cols / QK, format.block_bytes());
    let gb = group_block_bytes(format).expect("a repacked format");
    let size = blocks.checked_mul(bb).and_then(|row| row.checked_mul(rows));
    assert!(
        packable(format, rows, cols) && size == Some(data.len()),
        "pack: {} bytes for a {rows}x{cols} {} matrix",
        data.len(),
        format.name()
    );
    // A group block holds eight GGUF blocks (160 = 8·20, 272 = 8·34): the same byte count.
    let mut out = vec![0u8; data.len()];
    for (g, group) in out.chunks_exact_mut(blocks * gb).enumerate() {
        for (b, dst) in group.chunks_exact_mut(gb).enumerate() {
            for r in 0..8 {
                let src = &data[((g * 8 + r) * blocks + b) * bb..][..bb];
                for &(s, d, len, xor) in pieces(format) {
                    for i in 0..len {
                        dst[d + len * r + i] = src[s + i] ^ xor;
                    }
                }
            }
        }
    }
    out
}

/// Row `r`'s GGUF bytes back from the grouped layout.
pub fn unpack_row(format: QFormat, packed: &[u8], cols: usize, r: usize) -> Vec<u8> {
    let (blocks, bb) = (cols / QK, format.block_bytes());
    let gb = group_block_bytes(format).expect("a repacked format");
    let (g, lane) = (r / 8, r % 8);
    let mut out = vec![0u8; blocks * bb];
    for (b, dst) in out.chunks_exact_mut(bb).enumerate() {
        let src = &packed[(g * blocks + b) * gb..][..gb];
        for &(s, d, len, xor) in pieces(format) {
            for i in 0..len {
                dst[s + i] = src[d + len * lane + i] ^ xor;
            }
        }
    }
    out
}

/// Block `b` of row `r` in GGUF bytes, from the grouped layout, into `dst`
/// (`format.block_bytes()` bytes): one block without unpacking the whole row.
///
/// The caller checked `r` and `b` against the matrix; an index outside `packed` panics.
pub fn unpack_block(
    format: QFormat,
    packed: &[u8],
    cols: usize,
    r: usize,
    b: usize,
    dst: &mut [u8],
) {
    let blocks = cols / QK;
    let gb = group_block_bytes(format).expect("a repacked format");
    let (g, lane) = (r / 8, r % 8);
    let src = &packed[(g * blocks + b) * gb..][..gb];
    for &(s, d, len, xor) in pieces(format) {
        for i in 0..len {
            dst[s + i] = src[d + len * lane + i] ^ xor;
        }
    }
}

/// Dequantizes the blocks `blocks` of the eight rows of group `g` from the grouped layout into
/// `out` (eight rows of `32·blocks.len()` values), reading each group block once. The values are
/// bit-identical to [`super::formats::dequantize_row`]'s.
///
/// The caller checked `g` and `blocks` against the matrix and the size of `out`; an index outside
/// them panics.
pub fn dequantize_group(
    format: QFormat,
    packed: &[u8],
    cols: usize,
    g: usize,
    blocks: std::ops::Range<usize>,
    out: &mut [f32],
) {
    let nb = cols / QK;
    let gb = group_block_bytes(format).expect("a repacked format");
    let width = blocks.len() * QK;
    let f16_at = |src: &[u8], i: usize| half::f16::from_le_bytes([src[i], src[i + 1]]).to_f32();
    for (i, b) in blocks.enumerate() {
        let src = &packed[(g * nb + b) * gb..][..gb];
        for lane in 0..8 {
            let dst = &mut out[lane * width + i * QK..][..QK];
            let d = f16_at(src, 2 * lane);
            match format {
                QFormat::Q4_1 => {
                    let m = f16_at(src, 16 + 2 * lane);
                    for k in 0..4 {
                        let q = &src[32 + 32 * k + 4 * lane..][..4];
                        for (j, &byte) in q.iter().enumerate() {
                            dst[4 * k + j] = d * (byte & 0x0F) as f32 + m;
                            dst[4 * k + j + QK / 2] = d * (byte >> 4) as f32 + m;
                        }
                    }
                }
                QFormat::Q8_0 => {
                    for s in 0..8 {
                        let q = &src[16 + 32 * s + 4 * lane..][..4];
                        for (j, &byte) in q.iter().enumerate() {
                            dst[4 * s + j] = d * (byte ^ 0x80) as i8 as f32;
                        }
                    }
                }
                QFormat::Q4_0 => unreachable!("Q4_0 is not repacked"),
            }
        }
    }
}

/// `fn(group_bytes, activation rows) -> [row results; 8]` for one act row (`X1`) or four (`X4`).
pub type X1Fn = fn(&[u8], &[ActBlock]) -> [f32; 8];
pub type X4Fn = fn(&[u8], [&[ActBlock]; 4]) -> [[f32; 8]; 4];

/// The kernels for `format` on this CPU (the same choice as [`super::kernels::isa`]).
pub fn kernels(format: QFormat) -> (X1Fn, X4Fn) {
    type Table = [(X1Fn, X4Fn); 2];
    static K: OnceLock<Table> = OnceLock::new();
    let t = K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        match super::kernels::isa() {
            "avx512-vnni" => return [(vnni::x1, vnni::x4), (vnni::x1_q8, vnni::x4_q8)],
            "avx2" => return [(avx2::x1, avx2::x4), (avx2::x1_q8, avx2::x4_q8)],
            _ => {}
        }
        [(scalar::x1, scalar::x4), (scalar::x1_q8, scalar::x4_q8)]
    });
    match format {
        QFormat::Q8_0 => t[1],
        _ => t[0],
    }
}

const Q4_1_GROUP: usize = 160;
const Q8_0_GROUP: usize = 272;

/// Portable kernels; the SIMD ones compute exactly the same numbers.
pub mod scalar {
    use super::*;
    use half::f16;

    fn f16_at(p: &[u8], i: usize) -> f32 {
        f16::from_le_bytes([p[2 * i], p[2 * i + 1]]).to_f32()
    }

    fn tile<const T: usize>(group: &[u8], acts: [&[ActBlock]; T]) -> [[f32; 8]; T] {
        let mut acc = [[0f32; 8]; T];
        for (b, blk) in group.chunks_exact(Q4_1_GROUP).enumerate() {
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
                    *acc = (sum as f32).mul_add(f16_at(blk, r) * a.d, *acc);
                    *acc = f16_at(&blk[16..], r).mul_add(a.s, *acc);
                }
            }
        }
        acc
    }

    fn tile_q8<const T: usize>(group: &[u8], acts: [&[ActBlock]; T]) -> [[f32; 8]; T] {
        let mut acc = [[0f32; 8]; T];
        for (b, blk) in group.chunks_exact(Q8_0_GROUP).enumerate() {
            for t in 0..T {
                let a = &acts[t][b];
                for (r, acc) in acc[t].iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for k in 0..8 {
                        for i in 0..4 {
                            sum += blk[16 + 32 * k + 4 * r + i] as i32 * a.qs[4 * k + i] as i32;
                        }
                    }
                    let sum = sum - 128 * a.sum;
                    *acc = (sum as f32).mul_add(f16_at(blk, r) * a.d, *acc);
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
    pub fn x1_q8(group: &[u8], act: &[ActBlock]) -> [f32; 8] {
        tile_q8::<1>(group, [act])[0]
    }
    pub fn x4_q8(group: &[u8], acts: [&[ActBlock]; 4]) -> [[f32; 8]; 4] {
        tile_q8::<4>(group, acts)
    }
}

/// The SIMD kernels per instruction set; `$dot` adds the u8×i8 products of 4-byte lanes into i32 lanes.
macro_rules! packed_kernels {
    ($name:ident, $features:literal, |$acc:ident, $u:ident, $s:ident| $dot:expr) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::*;
            use std::arch::x86_64::*;

            // SAFETY (all four): selected only when the CPU reports every feature in $features;
            // `tile` bounds its own reads (see there).
            pub fn x1(group: &[u8], act: &[ActBlock]) -> [f32; 8] {
                unsafe { tile::<1, false>(group, [act])[0] }
            }
            pub fn x4(group: &[u8], acts: [&[ActBlock]; 4]) -> [[f32; 8]; 4] {
                unsafe { tile::<4, false>(group, acts) }
            }
            pub fn x1_q8(group: &[u8], act: &[ActBlock]) -> [f32; 8] {
                unsafe { tile::<1, true>(group, [act])[0] }
            }
            pub fn x4_q8(group: &[u8], acts: [&[ActBlock]; 4]) -> [[f32; 8]; 4] {
                unsafe { tile::<4, true>(group, acts) }
            }

            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn dot($acc: __m256i, $u: __m256i, $s: __m256i) -> __m256i {
                $dot
            }

            /// `T` activation rows against one group; `Q8` picks the Q8_0 layout, else Q4_1.
            #[target_feature(enable = $features)]
            unsafe fn tile<const T: usize, const Q8: bool>(
                group: &[u8],
                acts: [&[ActBlock]; T],
            ) -> [[f32; 8]; T] {
                let gb = if Q8 { Q8_0_GROUP } else { Q4_1_GROUP };
                let blocks = acts
                    .iter()
                    .map(|a| a.len())
                    .min()
                    .unwrap_or(0)
                    .min(group.len() / gb);
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); T];
                // SAFETY of the raw reads below: `blocks` ≤ group.len() / gb and ≤ every activation
                // row's length, so block `b` reads bytes `b·gb .. b·gb + gb` of `group` (the
                // furthest load ends at 16 + 32·8 = 272 = gb for Q8_0, 32 + 32·4 = 160 = gb for
                // Q4_1) and `acts[t][b]` exists.
                let p = group.as_ptr();
                for b in 0..blocks {
                    let blk = p.add(b * gb);
                    let d = _mm256_cvtph_ps(_mm_loadu_si128(blk as *const __m128i));
                    let mut w = [_mm256_setzero_si256(); 8];
                    if Q8 {
                        for (k, wk) in w.iter_mut().enumerate() {
                            *wk = _mm256_loadu_si256(blk.add(16 + 32 * k) as *const __m256i);
                        }
                    } else {
                        for k in 0..4 {
                            let packed = _mm256_loadu_si256(blk.add(32 + 32 * k) as *const __m256i);
                            w[k] = _mm256_and_si256(packed, mask);
                            w[k + 4] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
                        }
                    }
                    for t in 0..T {
                        let a = acts[t].get_unchecked(b);
                        let q = a.qs.as_ptr() as *const i32;
                        let mut sum = _mm256_setzero_si256();
                        for (s, ws) in w.iter().enumerate() {
                            sum = dot(sum, *ws, _mm256_set1_epi32(q.add(s).read_unaligned()));
                        }
                        let scale = _mm256_mul_ps(d, _mm256_set1_ps(a.d));
                        if Q8 {
                            sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(128 * a.sum));
                            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[t]);
                        } else {
                            let m = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16) as *const __m128i));
                            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), scale, acc[t]);
                            acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(a.s), acc[t]);
                        }
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
    use crate::quant::kernels::{scalar as reference, DotFn};
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
            let acts: Vec<Vec<ActBlock>> = (0..4).map(|_| {
                let x: Vec<f32> = (0..cols).map(|_| rng.gen_range(-3.0f32..3.0)).collect();
                let mut a = vec![ActBlock::default(); blocks];
                quantize_activations(&x, &mut a);
                a
            }).collect();
            let four_acts = [&acts[0][..], &acts[1][..], &acts[2][..], &acts[3][..]];
            for (format, slow1, slow4, dot) in [
                (QFormat::Q4_1, scalar::x1 as X1Fn, scalar::x4 as X4Fn, reference::dot_q4_1 as DotFn),
                (QFormat::Q8_0, scalar::x1_q8, scalar::x4_q8, reference::dot_q8_0),
            ] {
                let data: Vec<u8> = w.chunks_exact(cols).flat_map(|r| quantize_row(format, r)).collect();
                let packed = pack(format, &data, 8, cols);
                prop_assert_eq!(packed.len(), data.len());
                let rb = blocks * format.block_bytes();
                for r in 0..8 {
                    prop_assert_eq!(&unpack_row(format, &packed, cols, r)[..], &data[r * rb..(r + 1) * rb]);
                }
                let (x1, x4) = kernels(format);
                let four = x4(&packed, four_acts);
                let slow = slow4(&packed, four_acts);
                for t in 0..4 {
                    prop_assert_eq!(x1(&packed, &acts[t]), four[t]);
                    prop_assert_eq!(slow1(&packed, &acts[t]), slow[t]);
                    prop_assert_eq!(four[t], slow[t]);
                    for r in 0..8 {
                        let want = dot(&data[r * rb..(r + 1) * rb], &acts[t]);
                        prop_assert!((four[t][r] - want).abs() <= 1e-3 * (1.0 + want.abs()), "{:?}", format);
                    }
                }
            }
        }
    }
}
