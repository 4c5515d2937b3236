//! Adapter merging (`merge`) and its truncated SVD (`merge::svd`): the properties each method must have,
//! reproducibility, refusals of bad input, and merging an adapter into a base weight and back.

use candle_core::{DType, Device, Tensor};
use openledger_model::merge::svd::{self, Matrix};
use openledger_model::merge::{
    self, MajoritySign, MergeMethod, MergeOptions, MergeRecord, MAX_PARENTS,
};
use openledger_model::{LoraAdapter, LoraConfig, LoraPair, Target};

const DEV: Device = Device::Cpu;

fn dims(t: Target) -> (usize, usize) {
    match t {
        Target::Q | Target::O => (16, 16),
        Target::K | Target::V => (8, 16),
        Target::Gate | Target::Up => (24, 16),
        Target::Down => (16, 24),
    }
}

fn adapter(r: usize, alpha: f64, targets: &[Target], seed: u64) -> LoraAdapter {
    LoraAdapter::init(
        LoraConfig::new(r, alpha, targets),
        &dims,
        2,
        seed,
        true,
        &DEV,
    )
    .unwrap()
}

/// `s·B·A` as f64, row-major.
fn delta(a: &LoraAdapter, layer: usize, t: Target) -> Vec<f64> {
    let pair = a.get(layer, t).expect("pair present");
    flat(&pair.delta(a.config.scale()).unwrap())
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `‖got − want‖ / ‖want‖`.
fn rel_err(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff: Vec<f64> = got.iter().zip(want).map(|(g, w)| g - w).collect();
    norm(&diff) / norm(want).max(1e-300)
}

fn weighted(parts: &[(f64, &[f64])]) -> Vec<f64> {
    let mut out = vec![0.0; parts[0].1.len()];
    for (w, v) in parts {
        for (o, x) in out.iter_mut().zip(v.iter()) {
            *o += w * x;
        }
    }
    out
}

fn opts(method: MergeMethod, density: Option<f64>) -> MergeOptions {
    MergeOptions {
        density,
        ..MergeOptions::new(method)
    }
}

fn bits(a: &LoraAdapter) -> Vec<u32> {
    a.pairs()
        .flat_map(|(_, _, p)| {
            let mut v: Vec<f32> = p.a.flatten_all().unwrap().to_vec1().unwrap();
            v.extend(p.b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            v
        })
        .map(f32::to_bits)
        .collect()
}

// ---------- the truncated SVD ----------

/// A deterministic pseudo-random value in [-1, 1).
fn noise(i: usize, seed: u64) -> f64 {
    let mut z = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// `k` orthonormal columns of length `n` (Gram–Schmidt twice), as a row-major `n×k` matrix.
fn orthonormal(n: usize, k: usize, seed: u64) -> Matrix {
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for c in 0..k {
        let mut v: Vec<f64> = (0..n).map(|i| noise(c * n + i, seed)).collect();
        for _ in 0..2 {
            for u in &cols {
                let d: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, y)| *x -= d * y);
            }
        }
        let nv = norm(&v);
        v.iter_mut().for_each(|x| *x /= nv);
        cols.push(v);
    }
    Matrix::from_fn(n, k, |i, j| cols[j][i])
}

/// `U·diag(s)·Vᵀ` with known orthonormal `U`, `V` and singular values `s`.
fn with_spectrum(m: usize, n: usize, s: &[f64], seed: u64) -> Matrix {
    let u = orthonormal(m, s.len(), seed);
    let v = orthonormal(n, s.len(), seed ^ 0xabc);
    let us = Matrix::from_fn(m, s.len(), |i, j| u.get(i, j) * s[j]);
    us.matmul(&v.transpose()).unwrap()
}

fn assert_orthonormal_columns(m: &Matrix, what: &str) {
    let g = m.transpose().matmul(m).unwrap();
    for i in 0..g.rows() {
        for j in 0..g.cols() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!(
                (g.get(i, j) - want).abs() < 1e-10,
                "{what}: Gram matrix ({i},{j}) = {}",
                g.get(i, j)
            );
        }
    }
}

#[test]
fn svd_reconstructs_a_known_low_rank_matrix_within_1e_4_relative() {
    // 120x90 of rank 4 with k=4: l = 14 < 90, so this is the randomized path.
    let s = [5.0, 3.0, 1.0, 0.5];
    for (m, n) in [(120, 90), (90, 120)] {
        let a = with_spectrum(m, n, &s, 7);
        let got = svd::truncated(a.clone(), 4, 1).unwrap();
        let rebuilt = got.reconstruct().unwrap();
        let err = rel_err(rebuilt.data(), a.data());
        assert!(err < 1e-4, "{m}x{n}: relative reconstruction error {err}");
        assert!(err < 1e-10, "{m}x{n}: rounding-level in f64, got {err}");
        assert!(
            got.relative_error < 1e-10,
            "reported {}",
            got.relative_error
        );
        for (g, w) in got.s.iter().zip(s) {
            assert!((g - w).abs() < 1e-10 * w, "{m}x{n}: σ {g} vs {w}");
        }
        assert_orthonormal_columns(&got.u, "U");
        assert_orthonormal_columns(&got.vt.transpose(), "V");
    }
}

#[test]
fn svd_exact_path_on_small_tall_and_wide_matrices() {
    // min(m, n) <= k + oversampling: the exact Householder + Jacobi path.
    for (m, n, s) in [
        (20, 12, vec![4.0, 2.0, 1.0]),
        (12, 30, vec![3.0, 0.25]),
        (9, 9, vec![2.0, 2.0, 1.0]), // repeated singular value
    ] {
        let a = with_spectrum(m, n, &s, 3);
        let k = s.len();
        let got = svd::truncated(a.clone(), k, 0).unwrap();
        assert!(rel_err(got.reconstruct().unwrap().data(), a.data()) < 1e-12);
        for (g, w) in got.s.iter().zip(&s) {
            assert!((g - w).abs() < 1e-12, "{m}x{n}: σ {g} vs {w}");
        }
        // The full SVD's extra singular values are zero.
        let full = svd::exact(&a).unwrap();
        assert_eq!(full.s.len(), m.min(n));
        assert!(full.s[k..].iter().all(|&x| x < 1e-12), "{:?}", full.s);
        assert!(full.s.windows(2).all(|w| w[0] >= w[1]), "sorted decreasing");
    }
}

#[test]
fn svd_truncation_of_a_full_rank_matrix_is_within_0_1_percent_of_optimal() {
    // σ_i = 0.8^i on a 150x100 matrix; the best rank-6 error is known exactly (Eckart–Young).
    let s: Vec<f64> = (0..100).map(|i| 0.8f64.powi(i)).collect();
    let a = with_spectrum(150, 100, &s, 11);
    let k = 6;
    let total: f64 = s.iter().map(|x| x * x).sum();
    let optimal = (s[k..].iter().map(|x| x * x).sum::<f64>() / total).sqrt();
    let got = svd::truncated(a.clone(), k, 5).unwrap();
    let measured = rel_err(got.reconstruct().unwrap().data(), a.data());
    assert!(
        (measured - got.relative_error).abs() < 1e-9,
        "reported {} vs measured {measured}",
        got.relative_error
    );
    assert!(
        measured <= optimal * 1.001,
        "error {measured} vs optimal {optimal}"
    );
    for (i, g) in got.s.iter().enumerate() {
        assert!((g - s[i]).abs() < 1e-6 * s[i], "σ_{i} {g} vs {}", s[i]);
    }
}

#[test]
fn svd_is_deterministic_and_handles_the_zero_matrix() {
    let a = with_spectrum(80, 60, &[1.0, 0.5, 0.1], 2);
    let x = svd::truncated(a.clone(), 2, 9).unwrap();
    let y = svd::truncated(a, 2, 9).unwrap();
    assert_eq!(x.u, y.u);
    assert_eq!(x.vt, y.vt);
    assert_eq!(x.s, y.s);
    for (m, n) in [(80, 60), (10, 7)] {
        let z = svd::truncated(Matrix::zeros(m, n), 3, 0).unwrap();
        assert!(z.s.iter().all(|&v| v == 0.0));
        assert!(z.u.data().iter().chain(z.vt.data()).all(|v| v.is_finite()));
        assert_eq!(z.relative_error, 0.0);
        assert!(z.reconstruct().unwrap().data().iter().all(|&v| v == 0.0));
    }
}

#[test]
fn svd_of_a_product_of_thin_factors_matches_the_dense_svd() {
    // B: 70x5, A: 5x40, so B·A has rank 5.
    let b = Matrix::from_fn(70, 5, |i, j| noise(i * 5 + j, 1));
    let a = Matrix::from_fn(5, 40, |i, j| noise(i * 40 + j, 2));
    let dense = b.matmul(&a).unwrap();
    let full = svd::exact(&dense).unwrap();
    for k in [2, 5, 8] {
        let got = svd::truncated_product(&b, &a, k, 0).unwrap();
        assert_eq!((got.u.cols(), got.s.len(), got.vt.rows()), (k, k, k));
        for j in 0..k {
            let want = if j < 5 { full.s[j] } else { 0.0 };
            assert!((got.s[j] - want).abs() < 1e-10 * full.s[0], "k={k} σ_{j}");
        }
        let measured = rel_err(got.reconstruct().unwrap().data(), dense.data());
        assert!((measured - got.relative_error).abs() < 1e-9, "k={k}");
        if k >= 5 {
            assert!(measured < 1e-12, "k={k}: exact, got {measured}");
        } else {
            let tail: f64 = full.s[k..].iter().map(|x| x * x).sum();
            let all: f64 = full.s.iter().map(|x| x * x).sum();
            assert!(
                (measured - (tail / all).sqrt()).abs() < 1e-9,
                "k={k}: optimal"
            );
        }
    }
    // More rank than the matrix has room for: formed and decomposed densely.
    let wide_b = Matrix::from_fn(6, 9, |i, j| noise(i * 9 + j, 3));
    let wide_a = Matrix::from_fn(9, 8, |i, j| noise(i * 8 + j, 4));
    let got = svd::truncated_product(&wide_b, &wide_a, 6, 0).unwrap();
    let d = wide_b.matmul(&wide_a).unwrap();
    assert!(rel_err(got.reconstruct().unwrap().data(), d.data()) < 1e-12);
    assert!(svd::truncated_product(&b, &wide_a, 2, 0).is_err(), "5 != 9");
}

#[test]
fn svd_refuses_impossible_requests() {
    let a = Matrix::zeros(5, 4);
    for k in [0, 5] {
        let e = svd::truncated(a.clone(), k, 0).unwrap_err().to_string();
        assert!(e.contains("between 1 and 4"), "{e}");
    }
    let mut d = vec![0.0; 20];
    d[3] = f64::NAN;
    let e = svd::truncated(Matrix::new(5, 4, d).unwrap(), 2, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN"), "{e}");
    assert!(Matrix::new(5, 4, vec![0.0; 19]).is_err());
}

// ---------- merging adapters ----------

const QV: [Target; 2] = [Target::Q, Target::V];

#[test]
fn linear_of_one_adapter_with_weight_one_reproduces_it() {
    let mut p = adapter(4, 16.0, &[Target::Q, Target::V, Target::Down], 1);
    p.config.use_rslora = true;
    let (m, rec) = merge::merge(&[(&p, 1.0)], &MergeOptions::default()).unwrap();
    assert_eq!(m.config.r, 4);
    assert_eq!(m.config.scale(), 1.0, "alpha = r, no rsLoRA: scale 1");
    assert_eq!(m.pairs().count(), p.pairs().count());
    for (l, t, _) in p.pairs() {
        let e = rel_err(&delta(&m, l, t), &delta(&p, l, t));
        assert!(e < 1e-6, "layer {l} {t:?}: {e}");
    }
    assert_eq!(rec.method, MergeMethod::Linear);
    assert_eq!(rec.svd, None);
}

#[test]
fn linear_of_two_follows_peft_factor_sums_with_cross_terms() {
    let (p, q) = (adapter(4, 8.0, &QV, 1), adapter(4, 4.0, &QV, 2));
    let (wp, wq) = (0.7, 0.3);
    let (m, _) = merge::merge(&[(&p, wp), (&q, wq)], &MergeOptions::default()).unwrap();
    let (cp, cq) = (
        (wp * p.config.scale()).sqrt(),
        (wq * q.config.scale()).sqrt(),
    );
    for (l, t, pp) in p.pairs() {
        let qp = q.get(l, t).unwrap();
        let a = ((&pp.a * cp).unwrap() + (&qp.a * cq).unwrap()).unwrap();
        let b = ((&pp.b * cp).unwrap() + (&qp.b * cq).unwrap()).unwrap();
        let want = flat(&b.matmul(&a).unwrap());
        assert!(rel_err(&delta(&m, l, t), &want) < 1e-6);
        // ... which is not the weighted sum of the updates (that is what cat is for).
        let sum = weighted(&[(wp, &delta(&p, l, t)), (wq, &delta(&q, l, t))]);
        assert!(rel_err(&delta(&m, l, t), &sum) > 0.05);
    }
}

#[test]
fn cat_and_svd_give_the_weighted_sum_of_the_updates() {
    // Different ranks, a negative weight (subtracting an adapter): cat is exact at rank 4 + 2; svd is
    // exact when its rank covers that.
    let (p, q) = (adapter(4, 8.0, &QV, 1), adapter(2, 4.0, &QV, 2));
    let parents = [(&p, 1.5), (&q, -0.5)];
    let (c, rc) = merge::merge(&parents, &opts(MergeMethod::Cat, None)).unwrap();
    assert_eq!((c.config.r, rc.rank), (6, 6));
    let mut s_opts = opts(MergeMethod::Svd, None);
    s_opts.rank = Some(6);
    let (s, rs) = merge::merge(&parents, &s_opts).unwrap();
    assert_eq!(s.config.r, 6);
    let lost = rs.svd.as_ref().unwrap().max_relative_error;
    assert!(lost.is_sign_positive() && lost < 1e-9, "{lost}");
    for (l, t, _) in p.pairs() {
        let want = weighted(&[(1.5, &delta(&p, l, t)), (-0.5, &delta(&q, l, t))]);
        assert!(rel_err(&delta(&c, l, t), &want) < 1e-6, "cat {l} {t:?}");
        assert!(rel_err(&delta(&s, l, t), &want) < 1e-6, "svd {l} {t:?}");
    }
    // The default rank is the largest parent's (4): a lossy truncation, and the record says how lossy.
    let (d, rd) = merge::merge(&parents, &opts(MergeMethod::Svd, None)).unwrap();
    assert_eq!(d.config.r, 4);
    let summary = rd.svd.unwrap();
    assert!(summary.max_relative_error > 1e-4 && summary.max_relative_error < 1.0);
    let (l, t) = (
        summary.worst_layer,
        Target::parse(&summary.worst_target).unwrap(),
    );
    let want = weighted(&[(1.5, &delta(&p, l, t)), (-0.5, &delta(&q, l, t))]);
    let measured = rel_err(&delta(&d, l, t), &want);
    assert!((measured - summary.max_relative_error).abs() < 1e-5);
}

#[test]
fn dense_merge_on_a_projection_large_enough_for_the_randomized_path() {
    // 64x48 with rank 4+4 and merged rank 8: the sketch has 18 < 48 columns, and is still exact
    // (dare_linear at density 1 is the weighted sum, built dense).
    let big = |t: Target| if t == Target::Q { (64, 48) } else { (8, 16) };
    let mk = |seed| {
        LoraAdapter::init(
            LoraConfig::new(4, 8.0, &[Target::Q]),
            &big,
            1,
            seed,
            true,
            &DEV,
        )
        .unwrap()
    };
    let (p, q) = (mk(3), mk(4));
    let mut o = opts(MergeMethod::DareLinear, Some(1.0));
    o.rank = Some(8);
    let (m, rec) = merge::merge(&[(&p, 1.0), (&q, 2.0)], &o).unwrap();
    let want = weighted(&[
        (1.0, &delta(&p, 0, Target::Q)),
        (2.0, &delta(&q, 0, Target::Q)),
    ]);
    assert!(rel_err(&delta(&m, 0, Target::Q), &want) < 1e-6);
    assert!(rec.svd.unwrap().max_relative_error < 1e-9);
}

#[test]
fn ties_at_density_one_scales_one_adapter_and_averages_identical_ones() {
    let p = adapter(4, 8.0, &QV, 1);
    let mut o = opts(MergeMethod::Ties, Some(1.0));
    o.rank = Some(4);
    let (one, _) = merge::merge(&[(&p, 0.8)], &o).unwrap();
    // Two copies: every element agrees in sign, so TIES's disjoint mean gives (w1 + w2)/2 · ΔW.
    let (two, rec) = merge::merge(&[(&p, 0.8), (&p, 0.4)], &o).unwrap();
    for (l, t, _) in p.pairs() {
        let d = delta(&p, l, t);
        assert!(rel_err(&delta(&one, l, t), &weighted(&[(0.8, &d)])) < 1e-6);
        assert!(rel_err(&delta(&two, l, t), &weighted(&[(0.6, &d)])) < 1e-6);
    }
    assert_eq!(rec.majority_sign_method, Some(MajoritySign::Total));
    assert_eq!(rec.peft_combination_type, "ties_svd");
}

#[test]
fn dare_at_density_one_is_the_plain_weighted_sum_and_dare_ties_is_ties() {
    let (p, q) = (adapter(4, 8.0, &QV, 1), adapter(4, 8.0, &QV, 2));
    let parents = [(&p, 1.0), (&q, 0.5)];
    let run = |method, density| {
        let mut o = opts(method, density);
        o.rank = Some(8);
        o.seed = 42;
        merge::merge(&parents, &o).unwrap().0
    };
    // svd works on the stacked factors and dare_linear on the dense update: equal updates, not bits.
    let plain = run(MergeMethod::Svd, None);
    let dare = run(MergeMethod::DareLinear, Some(1.0));
    assert_eq!(
        bits(&run(MergeMethod::DareTies, Some(1.0))),
        bits(&run(MergeMethod::Ties, Some(1.0)))
    );
    for (l, t, _) in p.pairs() {
        let want = weighted(&[(1.0, &delta(&p, l, t)), (0.5, &delta(&q, l, t))]);
        assert!(rel_err(&delta(&plain, l, t), &want) < 1e-6);
        assert!(rel_err(&delta(&dare, l, t), &want) < 1e-6);
    }
}

#[test]
fn dare_is_reproducible_from_its_seed() {
    let (p, q) = (adapter(4, 8.0, &QV, 1), adapter(4, 8.0, &QV, 2));
    let parents = [(&p, 1.0), (&q, 1.0)];
    let run = |seed| {
        let mut o = opts(MergeMethod::DareLinear, Some(0.5));
        o.seed = seed;
        merge::merge(&parents, &o).unwrap()
    };
    let (a, ra) = run(7);
    assert_eq!(bits(&a), bits(&run(7).0), "same seed, same adapter");
    assert_ne!(
        bits(&a),
        bits(&run(8).0),
        "another seed drops other elements"
    );
    assert_eq!(ra.seed, Some(7));
    assert_eq!(ra.density, Some(0.5));
}

#[test]
fn dare_keeps_about_density_of_each_task_vector_rescaled() {
    let t: Vec<f64> = (0..4000).map(|i| noise(i, 1) + 2.0).collect(); // all nonzero
    let mut o = opts(MergeMethod::DareLinear, Some(0.25));
    o.seed = 3;
    let out = merge::merge_task_vectors(&[&t], &[1.0], &o).unwrap();
    let kept = out.iter().filter(|&&x| x != 0.0).count();
    assert!(
        (900..1100).contains(&kept),
        "kept {kept} of 4000 at density 0.25"
    );
    for (x, v) in out.iter().zip(&t) {
        assert!(*x == 0.0 || *x == v / 0.25, "{x} is neither 0 nor {v}/0.25");
    }
    assert_eq!(out, merge::merge_task_vectors(&[&t], &[1.0], &o).unwrap());
}

#[test]
fn ties_elects_signs_and_averages_the_agreeing_values() {
    let t1 = [1.0, -2.0, 3.0, 0.0];
    let t2 = [-3.0, -1.0, 1.0, 2.0];
    let run = |sign, weights: [f64; 2]| {
        let mut o = opts(MergeMethod::Ties, Some(1.0));
        o.majority_sign = sign;
        merge::merge_task_vectors(&[&t1, &t2], &weights, &o).unwrap()
    };
    // total: sums [-2, -3, 4, 2] elect [-, -, +, +]; the agreeing values are averaged.
    assert_eq!(run(MajoritySign::Total, [1.0, 1.0]), [-3.0, -1.5, 2.0, 2.0]);
    // frequency: sign counts [0, -2, 2, 1] elect [+, -, +, +] (a tie goes to +).
    assert_eq!(
        run(MajoritySign::Frequency, [1.0, 1.0]),
        [1.0, -1.5, 2.0, 2.0]
    );
    // Weights scale the values after the election, as in PEFT: [-3·3, (-2 - 3)/2, (3 + 3)/2, 6].
    assert_eq!(run(MajoritySign::Total, [1.0, 3.0]), [-9.0, -2.5, 3.0, 6.0]);
}

#[test]
fn ties_magnitude_pruning_keeps_exactly_the_density_fraction() {
    // density 0.5 of 6 keeps 3: the 2 and the first two of the four equal magnitudes.
    let t = [1.0, -1.0, 1.0, -1.0, 0.5, 2.0];
    let o = opts(MergeMethod::Ties, Some(0.5));
    let out = merge::merge_task_vectors(&[&t], &[1.0], &o).unwrap();
    assert_eq!(out, [1.0, -1.0, 0.0, 0.0, 0.0, 2.0]);
    // A density below 1/n keeps nothing.
    let o = opts(MergeMethod::Ties, Some(0.1));
    assert_eq!(
        merge::merge_task_vectors(&[&t], &[1.0], &o).unwrap(),
        [0.0; 6]
    );
}

#[test]
fn adapters_with_different_targets_merge_into_their_union() {
    let p = adapter(4, 8.0, &[Target::Q], 1);
    let q = adapter(4, 8.0, &[Target::V, Target::Up], 2);
    let (m, rec) = merge::merge(&[(&p, 2.0), (&q, 0.5)], &opts(MergeMethod::Cat, None)).unwrap();
    assert_eq!(m.config.targets, vec![Target::Q, Target::V, Target::Up]);
    assert_eq!(rec.targets, ["q_proj", "v_proj", "up_proj"]);
    assert_eq!(rec.pairs, 6);
    for l in 0..2 {
        let want = weighted(&[(2.0, &delta(&p, l, Target::Q))]);
        assert!(rel_err(&delta(&m, l, Target::Q), &want) < 1e-6);
        let want = weighted(&[(0.5, &delta(&q, l, Target::Up))]);
        assert!(rel_err(&delta(&m, l, Target::Up), &want) < 1e-6);
    }
}

#[test]
fn the_record_serializes_and_the_merged_adapter_saves_as_peft() {
    let mut p = adapter(4, 8.0, &QV, 1);
    p.config.base_model = Some("HuggingFaceTB/SmolLM2-135M-Instruct".into());
    let q = adapter(4, 8.0, &QV, 2);
    let mut o = opts(MergeMethod::DareTies, Some(0.7));
    o.majority_sign = MajoritySign::Frequency;
    o.seed = 5;
    let (m, mut rec) = merge::merge(&[(&p, 1.0), (&q, 0.25)], &o).unwrap();
    rec.parents[0].id = Some("adapters/a".into());
    let json = serde_json::to_string(&rec).unwrap();
    for needle in [
        "\"method\":\"dare_ties\"",
        "\"density\":0.7",
        "\"seed\":5",
        "\"majority_sign_method\":\"frequency\"",
        "\"weight\":0.25",
        "\"id\":\"adapters/a\"",
        "\"peft_combination_type\":\"dare_ties_svd\"",
    ] {
        assert!(json.contains(needle), "{needle} missing from {json}");
    }
    // Floats may come back an ulp off (serde_json parses without `float_roundtrip`); the rest is exact.
    let back: MergeRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back.parents, rec.parents);
    assert_eq!(
        (
            back.method,
            back.density,
            back.seed,
            back.rank,
            back.targets
        ),
        (
            rec.method,
            rec.density,
            rec.seed,
            rec.rank,
            rec.targets.clone()
        )
    );
    let (bs, rs) = (back.svd.unwrap(), rec.svd.clone().unwrap());
    assert!((bs.max_relative_error - rs.max_relative_error).abs() < 1e-12);
    assert_eq!(
        m.config.base_model.as_deref(),
        Some("HuggingFaceTB/SmolLM2-135M-Instruct")
    );

    let dir = tempfile::tempdir().unwrap();
    openledger_model::peft::save(&m, dir.path()).unwrap();
    let loaded = openledger_model::peft::load(dir.path(), &DEV).unwrap();
    assert_eq!(loaded.config, m.config);
    for (l, t, _) in m.pairs() {
        assert_eq!(delta(&loaded, l, t), delta(&m, l, t));
    }
}

fn refusal(parents: &[(&LoraAdapter, f64)], o: &MergeOptions) -> String {
    match merge::merge(parents, o) {
        Ok(_) => panic!("{o:?} should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_requests_are_refused_with_reasons() {
    let p = adapter(4, 8.0, &QV, 1);
    let r8 = adapter(8, 8.0, &QV, 2);
    let lin = MergeOptions::default();
    let ties = |d| opts(MergeMethod::Ties, d);
    let with_rank = |m, r| MergeOptions {
        rank: Some(r),
        ..opts(m, None)
    };
    let many: Vec<(&LoraAdapter, f64)> = vec![(&p, 1.0); MAX_PARENTS + 1];
    for (parents, o, why) in [
        (vec![], lin.clone(), "at least one adapter"),
        (many, lin.clone(), "at most 256"),
        (vec![(&p, f64::NAN)], lin.clone(), "finite"),
        (
            vec![(&p, f64::INFINITY)],
            opts(MergeMethod::Cat, None),
            "finite",
        ),
        (vec![(&p, -1.0)], lin.clone(), "use cat"),
        (vec![(&p, 1.0), (&r8, 1.0)], lin.clone(), "r=8"),
        (vec![(&p, 1.0)], ties(None), "needs a density"),
        (vec![(&p, 1.0)], ties(Some(0.0)), "outside (0, 1]"),
        (vec![(&p, 1.0)], ties(Some(1.5)), "outside (0, 1]"),
        (vec![(&p, 1.0)], ties(Some(f64::NAN)), "outside (0, 1]"),
        (
            vec![(&p, 1.0)],
            opts(MergeMethod::Svd, Some(0.5)),
            "takes no density",
        ),
        (vec![(&p, 1.0)], with_rank(MergeMethod::Svd, 0), "rank 0"),
        (
            vec![(&p, 1.0)],
            with_rank(MergeMethod::Svd, 9),
            "above what",
        ),
        (
            vec![(&p, 1.0)],
            with_rank(MergeMethod::Linear, 4),
            "takes no rank",
        ),
    ] {
        let e = refusal(&parents, &o);
        assert!(e.contains(why), "{e:?} should mention {why:?}");
    }
}

#[test]
fn adapters_of_different_base_models_are_refused() {
    let p = adapter(4, 8.0, &QV, 1);
    let wide = LoraAdapter::init(
        LoraConfig::new(4, 8.0, &QV),
        &|t| if t == Target::Q { (32, 32) } else { (8, 16) },
        2,
        3,
        true,
        &DEV,
    )
    .unwrap();
    let e = refusal(&[(&p, 1.0), (&wide, 1.0)], &MergeOptions::default());
    assert!(
        e.contains("q_proj") && e.contains("32x32") && e.contains("16x16"),
        "{e}"
    );
    assert!(e.contains("different base models"), "{e}");

    let named = |name: &str, seed| {
        let mut a = adapter(4, 8.0, &QV, seed);
        a.config.base_model = Some(name.into());
        a
    };
    let (a, b) = (
        named("HuggingFaceTB/SmolLM2-135M", 1),
        named("meta-llama/Llama-3.2-1B", 2),
    );
    let e = refusal(&[(&a, 1.0), (&b, 1.0)], &MergeOptions::default());
    assert!(
        e.contains("SmolLM2-135M") && e.contains("Llama-3.2-1B"),
        "{e}"
    );
    // The same model under a local path is accepted.
    let c = named("/models/smollm2-135m/", 3);
    assert!(merge::merge(&[(&a, 1.0), (&c, 1.0)], &MergeOptions::default()).is_ok());
}

#[test]
fn adapters_holding_non_finite_values_or_nothing_are_refused() {
    let p = adapter(4, 8.0, &QV, 1);
    let mut poisoned = LoraAdapter::empty(LoraConfig::new(4, 8.0, &[Target::Q]));
    let mut a = vec![0.1f32; 4 * 16];
    a[5] = f32::NAN;
    poisoned
        .insert(
            1,
            Target::Q,
            LoraPair {
                a: Tensor::from_vec(a, (4, 16), &DEV).unwrap(),
                b: Tensor::zeros((16, 4), DType::F32, &DEV).unwrap(),
            },
        )
        .unwrap();
    for method in MergeMethod::ALL {
        let o = MergeOptions {
            density: method.uses_density().then_some(0.5),
            ..MergeOptions::new(method)
        };
        let e = refusal(&[(&p, 1.0), (&poisoned, 1.0)], &o);
        assert!(
            e.contains("adapter 1 layer 1 q_proj lora_A"),
            "{method}: {e}"
        );
    }
    let empty = LoraAdapter::empty(LoraConfig::new(4, 8.0, &QV));
    let e = refusal(&[(&empty, 1.0)], &MergeOptions::default());
    assert!(e.contains("no LoRA weights"), "{e}");
}

#[test]
fn method_names_parse_and_print() {
    for m in MergeMethod::ALL {
        assert_eq!(m.to_string().parse::<MergeMethod>().unwrap(), m);
    }
    assert!("slerp"
        .parse::<MergeMethod>()
        .unwrap_err()
        .to_string()
        .contains("dare_ties"));
    assert_eq!(
        "frequency".parse::<MajoritySign>().unwrap(),
        MajoritySign::Frequency
    );
}

// ---------- merging into a base weight (dLoRA) ----------

#[test]
fn merging_into_a_base_weight_and_back_restores_it() {
    let p = adapter(4, 16.0, &[Target::Gate, Target::Q], 1);
    let (out, inn) = dims(Target::Gate);
    let w0: Vec<f32> = (0..out * inn).map(|i| noise(i, 9) as f32).collect();
    let w = Tensor::from_vec(w0.clone(), (out, inn), &DEV).unwrap();
    let merged = merge::merge_into_weight(&w, &p, 1, Target::Gate).unwrap();
    let want: Vec<f64> = flat(&w)
        .iter()
        .zip(delta(&p, 1, Target::Gate))
        .map(|(a, b)| a + b)
        .collect();
    assert!(rel_err(&flat(&merged), &want) < 1e-6);
    assert!(
        rel_err(&flat(&merged), &flat(&w)) > 1e-3,
        "the adapter changed W"
    );
    let back = merge::unmerge_from_weight(&merged, &p, 1, Target::Gate).unwrap();
    let restored: Vec<f32> = back.flatten_all().unwrap().to_vec1().unwrap();
    for (r, o) in restored.iter().zip(&w0) {
        assert!((r - o).abs() <= 1e-6, "{r} vs {o}");
    }
    // A projection the adapter does not touch is returned as it is.
    let untouched = merge::merge_into_weight(&w, &p, 0, Target::Up).unwrap();
    assert_eq!(flat(&untouched), flat(&w));
    // Wrong shape, wrong dtype.
    let e = merge::merge_into_weight(&w, &p, 0, Target::Q)
        .unwrap_err()
        .to_string();
    assert!(e.contains("16x16") && e.contains("24x16"), "{e}");
    let half = w.to_dtype(DType::F16).unwrap();
    let e = merge::merge_into_weight(&half, &p, 1, Target::Gate)
        .unwrap_err()
        .to_string();
    assert!(e.contains("f32"), "{e}");
}
