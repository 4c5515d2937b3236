//! Truncated singular value decomposition in f64, for bringing a merged dense update `ΔW` back to LoRA
//! form (`B = U·Σ`, `A = Vᵀ`), as PEFT does with `torch.linalg.svd` (candle has no SVD).
//!
//! [`truncated`] keeps the `k` largest singular triplets of an `m×n` matrix:
//! - when `k + OVERSAMPLING ≥ min(m, n)` it computes the exact thin SVD: Householder QR, then one-sided
//!   (Hestenes) Jacobi on the small triangular factor, which gives singular values to high relative accuracy;
//! - otherwise the randomized range finder with subspace iteration (Halko, Martinsson & Tropp 2011,
//!   algorithm 4.4): a seeded Gaussian sketch `Y = M·Ω` with `k + OVERSAMPLING` columns, `POWER_ITERATIONS`
//!   rounds of re-orthonormalised `M·Mᵀ` products, then the exact SVD of the small `Qᵀ·M`. A matrix whose
//!   rank is at most `k + OVERSAMPLING` is reproduced exactly (up to rounding); for a full-rank matrix the
//!   error is within a hair of the optimal rank-`k` error (the tests measure both).
//!
//! [`truncated_product`] decomposes a product of thin factors `B·A` exactly without forming it (the
//! weighted sum of LoRA updates is one). The large products go through candle's f64 matmul; the small factorizations are plain loops here.
//! Every [`Svd`] reports its `relative_error`, `‖M − U·Σ·Vᵀ‖_F / ‖M‖_F`, so callers can say what the
//! truncation lost.

use crate::error::{ModelError, Result};
use candle_core::{Device, Tensor};

/// Extra sketch columns beyond the requested rank (Halko et al. recommend 5–10).
pub const OVERSAMPLING: usize = 10;
/// Rounds of subspace iteration (scikit-learn's `randomized_svd` uses 4 to 7).
pub const POWER_ITERATIONS: usize = 4;
/// Jacobi sweeps are quadratically convergent; this bound is never reached on finite input.
const MAX_SWEEPS: usize = 60;

/// A dense row-major matrix of f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// A `rows×cols` matrix from row-major data.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ModelError::Adapter(format!(
                "a {rows}x{cols} matrix needs {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Element `(i, j)` is `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Self {
        let data = (0..rows * cols).map(|e| f(e / cols, e % cols)).collect();
        Self { rows, cols, data }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major values.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }

    pub fn transpose(&self) -> Matrix {
        Matrix::from_fn(self.cols, self.rows, |i, j| self.get(j, i))
    }

    /// `self · other` (plain loops; meant for small and medium matrices).
    pub fn matmul(&self, other: &Matrix) -> Result<Matrix> {
        if self.cols != other.rows {
            return Err(ModelError::Adapter(format!(
                "cannot multiply {}x{} by {}x{}",
                self.rows, self.cols, other.rows, other.cols
            )));
        }
        let mut out = Matrix::zeros(self.rows, other.cols);
        for i in 0..self.rows {
            let orow = &mut out.data[i * other.cols..(i + 1) * other.cols];
            for p in 0..self.cols {
                let c = self.data[i * self.cols + p];
                if c != 0.0 {
                    axpy(c, &other.data[p * other.cols..(p + 1) * other.cols], orow);
                }
            }
        }
        Ok(out)
    }

    /// `‖self‖_F`.
    pub fn frobenius(&self) -> f64 {
        dot(&self.data, &self.data).sqrt()
    }

    fn tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (self.rows, self.cols),
            &Device::Cpu,
        )?)
    }
}

/// `M ≈ U·diag(s)·Vt` with `U: m×k`, `Vt: k×n`, singular values in `s` in decreasing order.
#[derive(Debug, Clone)]
pub struct Svd {
    pub u: Matrix,
    pub s: Vec<f64>,
    pub vt: Matrix,
    /// `‖M − U·diag(s)·Vt‖_F / ‖M‖_F` (0 for a zero matrix).
    pub relative_error: f64,
}

impl Svd {
    /// `U·diag(s)·Vt`.
    pub fn reconstruct(&self) -> Result<Matrix> {
        let us = Matrix::from_fn(self.u.rows, self.u.cols, |i, j| {
            self.u.get(i, j) * self.s[j]
        });
        us.matmul(&self.vt)
    }
}

/// The `k` largest singular triplets of `m` (see the module docs for the method). `seed` fixes the
/// random sketch, so the result is a pure function of `(m, k, seed)`.
pub fn truncated(m: Matrix, k: usize, seed: u64) -> Result<Svd> {
    let small = m.rows.min(m.cols);
    if k == 0 || k > small {
        return Err(ModelError::Adapter(format!(
            "a rank-{k} SVD of a {}x{} matrix is not possible: the rank must be between 1 and {small}",
            m.rows, m.cols
        )));
    }
    if let Some(bad) = m.data.iter().find(|x| !x.is_finite()) {
        return Err(ModelError::Adapter(format!(
            "cannot decompose a matrix holding {bad}"
        )));
    }
    let l = k + OVERSAMPLING;
    if l >= small {
        let full = exact(&m)?;
        return Ok(keep(full, k));
    }
    randomized(m, k, l, seed)
}

/// The `k` largest singular triplets of the product `B·A` (`B: m×r`, `A: r×n`) without forming it:
/// Householder QR of both factors, `B = Qb·Rb`, `Aᵀ = Qa·Ra`, and the exact SVD of the `r×r` core
/// `Rb·Raᵀ`, in O((m + n)·r²). Exact (no sketch). When `k > r` the extra triplets are zero; when
/// `r > min(m, n)` the product is formed and handed to [`truncated`] with `seed`.
pub fn truncated_product(b: &Matrix, a: &Matrix, k: usize, seed: u64) -> Result<Svd> {
    let (m, r, n) = (b.rows, b.cols, a.cols);
    if a.rows != r {
        return Err(ModelError::Adapter(format!(
            "cannot multiply {m}x{r} by {}x{n}",
            a.rows
        )));
    }
    if r == 0 || r > m.min(n) {
        return truncated(b.matmul(a)?, k, seed);
    }
    let small = m.min(n);
    if k == 0 || k > small {
        return Err(ModelError::Adapter(format!(
            "a rank-{k} SVD of a {m}x{n} matrix is not possible: the rank must be between 1 and {small}"
        )));
    }
    if let Some(bad) = b.data.iter().chain(&a.data).find(|x| !x.is_finite()) {
        return Err(ModelError::Adapter(format!(
            "cannot decompose a matrix holding {bad}"
        )));
    }
    let (qb, rb) = householder_qr(columns(b));
    let (qa, ra) = householder_qr(columns(&a.transpose()));
    // Rb[i][c] = rb[c][i]; Raᵀ[x][y] = Ra[y][x] = ra[x][y].
    let rb = Matrix::from_fn(r, r, |i, c| rb[c][i]);
    let ra_t = Matrix::from_fn(r, r, |x, y| ra[x][y]);
    let core = exact(&rb.matmul(&ra_t)?)?;
    let kept = k.min(r);
    let total = energy(core.s.iter().copied());
    let tail = energy(core.s[kept..].iter().copied());
    let u_cols: Vec<Vec<f64>> = (0..kept)
        .map(|j| combine_columns(&qb, &(0..r).map(|i| core.u.get(i, j)).collect::<Vec<_>>()))
        .collect();
    let v_cols: Vec<Vec<f64>> = (0..kept)
        .map(|j| combine_columns(&qa, &(0..r).map(|i| core.vt.get(j, i)).collect::<Vec<_>>()))
        .collect();
    // Columns past `kept` (k > r) are zero: the product has no more rank.
    Ok(Svd {
        u: Matrix::from_fn(m, k, |i, j| if j < kept { u_cols[j][i] } else { 0.0 }),
        s: (0..k)
            .map(|j| if j < kept { core.s[j] } else { 0.0 })
            .collect(),
        vt: Matrix::from_fn(k, n, |i, j| if i < kept { v_cols[i][j] } else { 0.0 }),
        relative_error: if total > 0.0 {
            (tail / total).sqrt()
        } else {
            0.0
        },
    })
}

/// The exact thin SVD (`min(m, n)` triplets, decreasing), by Householder QR and one-sided Jacobi.
pub fn exact(m: &Matrix) -> Result<Svd> {
    let total = dot(&m.data, &m.data);
    let (u, s, v) = if m.rows >= m.cols {
        tall_svd(columns(m))
    } else {
        // Mᵀ = U'·Σ·V'ᵀ, so M = V'·Σ·U'ᵀ.
        let (u, s, v) = tall_svd(columns(&m.transpose()));
        (v, s, u)
    };
    Ok(assemble(u, s, v, m.rows, m.cols, total.sqrt(), None))
}

/// Keeps the first `k` triplets of a sorted full SVD; the error is the energy of the rest.
fn keep(full: Svd, k: usize) -> Svd {
    let total = energy(full.s.iter().copied());
    let tail = energy(full.s[k..].iter().copied());
    let u = Matrix::from_fn(full.u.rows, k, |i, j| full.u.get(i, j));
    let vt = Matrix::from_fn(k, full.vt.cols, |i, j| full.vt.get(i, j));
    Svd {
        u,
        s: full.s[..k].to_vec(),
        vt,
        relative_error: if total > 0.0 {
            (tail / total).sqrt()
        } else {
            0.0
        },
    }
}

fn randomized(m: Matrix, k: usize, l: usize, seed: u64) -> Result<Svd> {
    let (rows, cols) = (m.rows, m.cols);
    let norm = m.frobenius();
    let mt = Tensor::from_vec(m.into_data(), (rows, cols), &Device::Cpu)?;
    // Everything is kept transposed (l rows), so each row of a product is one column of the sketch.
    let omega_t = gaussian(l, cols, seed).tensor()?;
    let mut q = orthonormal(&omega_t.matmul(&mt.t()?)?)?; // Qᵀ: l×rows
    for _ in 0..POWER_ITERATIONS {
        let z = orthonormal(&cols_tensor(&q)?.matmul(&mt)?)?; // Zᵀ: l×cols
        q = orthonormal(&cols_tensor(&z)?.matmul(&mt.t()?)?)?;
    }
    // Bᵀ = Mᵀ·Q (cols×l), tall: Bᵀ = Ub·Σ·Vbᵀ, so M ≈ Q·B = (Q·Vb)·Σ·Ubᵀ.
    let bt = tensor_rows(&cols_tensor(&q)?.matmul(&mt)?)?;
    let (ub, s, vb) = tall_svd(bt);
    let u: Vec<Vec<f64>> = vb.iter().map(|c| combine_columns(&q, c)).collect();
    let svd = assemble(u, s, ub, rows, cols, norm, Some(k));
    // The error measured on M itself, not inferred from the sketch.
    let relative_error = if norm > 0.0 {
        let us = Matrix::from_fn(rows, k, |i, j| svd.u.get(i, j) * svd.s[j]).tensor()?;
        let approx = us.matmul(&svd.vt.tensor()?)?;
        let diff: f64 = (mt - approx)?.sqr()?.sum_all()?.to_scalar()?;
        diff.sqrt() / norm
    } else {
        0.0
    };
    Ok(Svd {
        relative_error,
        ..svd
    })
}

/// Sorts the triplets by decreasing singular value, keeps `k` of them (all when `None`) and lays them
/// out as `U: m×k`, `Vt: k×n`. The error is from the dropped values (exact path only; the randomized
/// path measures it directly).
fn assemble(
    u: Vec<Vec<f64>>,
    s: Vec<f64>,
    v: Vec<Vec<f64>>,
    rows: usize,
    cols: usize,
    norm: f64,
    k: Option<usize>,
) -> Svd {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let k = k.unwrap_or(s.len()).min(s.len());
    let kept = &order[..k];
    let tail = energy(order[k..].iter().map(|&i| s[i]));
    Svd {
        u: Matrix::from_fn(rows, k, |i, j| u[kept[j]][i]),
        s: kept.iter().map(|&i| s[i]).collect(),
        vt: Matrix::from_fn(k, cols, |i, j| v[kept[i]][j]),
        relative_error: if norm > 0.0 { tail.sqrt() / norm } else { 0.0 },
    }
}

/// Thin SVD of a tall matrix given by its columns (each of length m ≥ number of columns):
/// returns unsorted `(U columns, σ, V columns)`.
fn tall_svd(cols: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<f64>, Vec<Vec<f64>>) {
    let n = cols.len();
    let (q, r) = householder_qr(cols);
    // Columns of the n×n upper-triangular R; A = Q·R and R·V = W with orthogonal columns.
    let (w, v) = jacobi(r);
    let mut s = Vec::with_capacity(n);
    let mut u = Vec::with_capacity(n);
    for wc in &w {
        let sigma = dot(wc, wc).sqrt();
        let ur: Vec<f64> = if sigma > 0.0 {
            wc.iter().map(|x| x / sigma).collect()
        } else {
            vec![0.0; n]
        };
        u.push(combine_columns(&q, &ur));
        s.push(sigma);
    }
    (u, s, v)
}

/// Householder QR of a tall matrix given by its `l` columns of length `m ≥ l`: `(Q columns, R columns)`,
/// with `Q` orthonormal even when the input is rank-deficient.
fn householder_qr(mut a: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let l = a.len();
    let m = a.first().map_or(0, Vec::len);
    let mut reflectors: Vec<Option<Vec<f64>>> = Vec::with_capacity(l);
    for j in 0..l {
        let x = &a[j][j..];
        let norm = dot(x, x).sqrt();
        if norm == 0.0 {
            reflectors.push(None);
            continue;
        }
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        let mut v = x.to_vec();
        v[0] -= alpha;
        let vn = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|e| *e /= vn);
        for col in a.iter_mut().skip(j) {
            reflect(&v, &mut col[j..]);
        }
        reflectors.push(Some(v));
    }
    let r: Vec<Vec<f64>> = (0..l)
        .map(|c| (0..l).map(|i| if i <= c { a[c][i] } else { 0.0 }).collect())
        .collect();
    let mut q: Vec<Vec<f64>> = (0..l)
        .map(|c| {
            let mut e = vec![0.0; m];
            e[c] = 1.0;
            e
        })
        .collect();
    for (j, v) in reflectors.iter().enumerate().rev() {
        if let Some(v) = v {
            for col in q.iter_mut() {
                reflect(v, &mut col[j..]);
            }
        }
    }
    (q, r)
}

/// `x ← (I − 2vvᵀ)x` for a unit `v`.
fn reflect(v: &[f64], x: &mut [f64]) {
    let d = dot(v, x);
    axpy(-2.0 * d, v, x);
}

/// One-sided Jacobi on the columns of a square matrix: rotates pairs of columns until all are mutually
/// orthogonal. Returns the rotated columns `W = R·V` and the accumulated rotation `V` (by columns).
fn jacobi(mut w: Vec<Vec<f64>>) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let n = w.len();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|c| (0..n).map(|i| if i == c { 1.0 } else { 0.0 }).collect())
        .collect();
    let tol = f64::EPSILON * n as f64;
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..n {
            for q in p + 1..n {
                let alpha = dot(&w[p], &w[p]);
                let beta = dot(&w[q], &w[q]);
                let gamma = dot(&w[p], &w[q]);
                if alpha == 0.0 || beta == 0.0 || gamma.abs() <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + zeta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = c * t;
                rotate(&mut w, p, q, c, s);
                rotate(&mut v, p, q, c, s);
            }
        }
        if !rotated {
            break;
        }
    }
    (w, v)
}

fn rotate(cols: &mut [Vec<f64>], p: usize, q: usize, c: f64, s: f64) {
    let (left, right) = cols.split_at_mut(q);
    for (x, y) in left[p].iter_mut().zip(right[0].iter_mut()) {
        let (a, b) = (*x, *y);
        *x = c * a - s * b;
        *y = s * a + c * b;
    }
}

/// `Σ_i cols[i] · coef[i]`.
fn combine_columns(cols: &[Vec<f64>], coef: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; cols.first().map_or(0, Vec::len)];
    for (c, &k) in cols.iter().zip(coef) {
        if k != 0.0 {
            axpy(k, c, &mut out);
        }
    }
    out
}

/// Orthonormal basis (by Householder QR) of the columns given as the rows of `t`.
fn orthonormal(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(householder_qr(tensor_rows(t)?).0)
}

fn tensor_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    Ok(t.to_vec2::<f64>()?)
}

/// The columns as the rows of an `l×m` tensor.
fn cols_tensor(cols: &[Vec<f64>]) -> Result<Tensor> {
    let m = cols.first().map_or(0, Vec::len);
    let flat: Vec<f64> = cols.iter().flatten().copied().collect();
    Ok(Tensor::from_vec(flat, (cols.len(), m), &Device::Cpu)?)
}

/// Columns of `m` as vectors.
fn columns(m: &Matrix) -> Vec<Vec<f64>> {
    (0..m.cols)
        .map(|j| (0..m.rows).map(|i| m.get(i, j)).collect())
        .collect()
}

/// A `rows×cols` matrix of standard normal values, a pure function of `seed` (SplitMix64 + Box–Muller).
fn gaussian(rows: usize, cols: usize, seed: u64) -> Matrix {
    Matrix::from_fn(rows, cols, |i, j| {
        let e = (i * cols + j) as u64;
        let u1 = 1.0 - unit(seed, 2 * e); // (0, 1]
        let u2 = unit(seed, 2 * e + 1);
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    })
}

/// The SplitMix64 output function: a bijective mix of 64 bits.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `index`-th value in `[0, 1)` of the SplitMix64 stream seeded by `key`.
pub(crate) fn unit(key: u64, index: u64) -> f64 {
    let z = mix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `Σ x²`, +0 when empty (`Iterator::sum` of no floats is −0, and √−0 = −0).
fn energy(xs: impl Iterator<Item = f64>) -> f64 {
    xs.fold(0.0, |acc, x| acc + x * x)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

fn axpy(k: f64, x: &[f64], y: &mut [f64]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += k * x;
    }
}
