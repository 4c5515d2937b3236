//! The bf16 frozen-weight products against f64 references: within the error bf16 rounding of both
//! operands allows (each product off by at most ~2⁻⁷ of its size, sums in f32), on shapes that are
//! and are not multiples of the kernel's tiles, and bit-identical from call to call. Runs the
//! kernels only on CPUs with AVX512_BF16 (says so otherwise); the packing and the precision switch
//! are checked everywhere.

use openledger_factory::bf16::{available, pack::bf16, PackedBf16, Precision};
use openledger_factory::rng::SplitMix64;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut r = SplitMix64::new(seed);
    (0..n).map(|_| (r.next_f32() * 2.0 - 1.0) * 3.0).collect()
}

fn round(v: &[f32]) -> Vec<f32> {
    v.iter()
        .map(|&x| openledger_factory::bf16::pack::f32_of(bf16(x)))
        .collect()
}

/// `(out, in, n)`: tile-aligned, ragged in every dimension, odd, tiny, and one whose contraction
/// over `out` is longer than a kernel pass (1100 pairs).
const SHAPES: [(usize, usize, usize); 7] = [
    (16, 48, 8),
    (576, 192, 64),
    (37, 21, 13),
    (1, 1, 1),
    (9, 70, 50),
    (2200, 40, 17),
    (130, 333, 3),
];

#[test]
fn packing_keeps_every_value_rounded_to_bf16() {
    for (rows, cols, _) in SHAPES {
        let w = values(rows * cols, 1);
        let p = PackedBf16::pack(&w, rows, cols).unwrap();
        assert_eq!(p.dims(), (rows, cols));
        let r = round(&w);
        for o in 0..rows {
            for i in 0..cols {
                assert_eq!(p.get(o, i), r[o * cols + i], "{rows}x{cols} at ({o}, {i})");
            }
        }
    }
    assert!(PackedBf16::pack(&[1.0; 5], 2, 3).is_err());
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(bf16(1.0), 0x3F80);
    // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to the even (1).
    assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3F80);
    assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3F82);
    assert_eq!(bf16(-2.5), 0xC020);
    assert!(f32::from_bits((bf16(f32::NAN) as u32) << 16).is_nan());
    assert_eq!(bf16(f32::MAX), 0x7F80);
}

/// `(max |got − want| / scale)` where `scale[k]` is `Σ |a||b|` of each output (so the bound is
/// relative to the size of the terms, as rounding errors are).
fn worst(got: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .zip(scale)
        .map(|((g, w), s)| (*g as f64 - w).abs() / s.max(1e-30))
        .fold(0.0, f64::max)
}

#[test]
fn products_match_f64_references_within_bf16_rounding() {
    if !available() {
        eprintln!("no AVX512_BF16 on this CPU: bf16 kernels not run (training uses f32)");
        return;
    }
    for (s, (rows, cols, n)) in SHAPES.into_iter().enumerate() {
        let w = values(rows * cols, 10 + s as u64);
        let x = values(n * cols, 20 + s as u64);
        let g = values(n * rows, 30 + s as u64);
        let p = PackedBf16::pack(&w, rows, cols).unwrap();
        let (wr, xr, gr) = (round(&w), round(&x), round(&g));
        // y = x·Wᵀ
        let y = p.forward(&x, n).unwrap();
        assert_eq!(y.len(), n * rows);
        let (mut exact, mut of_rounded, mut scale) = (vec![], vec![], vec![]);
        for t in 0..n {
            for o in 0..rows {
                let (mut e, mut r, mut a) = (0f64, 0f64, 0f64);
                for i in 0..cols {
                    e += x[t * cols + i] as f64 * w[o * cols + i] as f64;
                    r += xr[t * cols + i] as f64 * wr[o * cols + i] as f64;
                    a += (x[t * cols + i] as f64 * w[o * cols + i] as f64).abs();
                }
                exact.push(e);
                of_rounded.push(r);
                scale.push(a);
            }
        }
        // bf16 operands: each relative error ≤ 2⁻⁸, so a product's ≤ 2⁻⁷ + 2⁻¹⁶.
        let bound = 2f64.powi(-7) + 2f64.powi(-15);
        let e = worst(&y, &exact, &scale);
        assert!(e <= bound, "forward {rows}x{cols} n={n}: {e}");
        // Against the product of the rounded operands only f32 summation error remains.
        let e = worst(&y, &of_rounded, &scale);
        assert!(
            e <= cols as f64 * 2f64.powi(-23),
            "forward {rows}x{cols} n={n} (rounded): {e}"
        );
        assert_eq!(y, p.forward(&x, n).unwrap());
        // dx = g·W
        let dx = p.backward(&g, n).unwrap();
        assert_eq!(dx.len(), n * cols);
        let (mut exact, mut of_rounded, mut scale) = (vec![], vec![], vec![]);
        for t in 0..n {
            for i in 0..cols {
                let (mut e, mut r, mut a) = (0f64, 0f64, 0f64);
                for o in 0..rows {
                    e += g[t * rows + o] as f64 * w[o * cols + i] as f64;
                    r += gr[t * rows + o] as f64 * wr[o * cols + i] as f64;
                    a += (g[t * rows + o] as f64 * w[o * cols + i] as f64).abs();
                }
                exact.push(e);
                of_rounded.push(r);
                scale.push(a);
            }
        }
        let e = worst(&dx, &exact, &scale);
        assert!(e <= bound, "backward {rows}x{cols} n={n}: {e}");
        let e = worst(&dx, &of_rounded, &scale);
        assert!(
            e <= rows as f64 * 2f64.powi(-23),
            "backward {rows}x{cols} n={n} (rounded): {e}"
        );
        assert_eq!(dx, p.backward(&g, n).unwrap());
    }
}

#[test]
fn wrong_sizes_are_refused() {
    let p = PackedBf16::pack(&values(6, 1), 2, 3).unwrap();
    assert!(p.forward(&[0.0; 5], 2).is_err());
    assert!(p.backward(&[0.0; 5], 2).is_err());
}

#[test]
fn precision_switch() {
    assert_eq!(Precision::parse(Some("f32")).unwrap(), Precision::F32);
    assert_eq!(Precision::parse(Some(" F32 ")).unwrap(), Precision::F32);
    let auto = Precision::parse(None).unwrap();
    assert_eq!(auto, Precision::parse(Some("auto")).unwrap());
    assert_eq!(auto == Precision::Bf16, available());
    let forced = Precision::parse(Some("bf16"));
    assert_eq!(forced.is_ok(), available());
    if let Err(e) = forced {
        assert!(e.to_string().contains("AVX512_BF16"), "{e}");
    }
    let e = Precision::parse(Some("fp8")).unwrap_err().to_string();
    assert!(
        e.contains("OPENLEDGER_TRAIN_PRECISION") && e.contains("f32"),
        "{e}"
    );
}
