//! Fused CPU ops with hand-written backward passes for the parts of a Llama layer that candle would
//! otherwise run as many small elementwise ops, each allocating its output and keeping it alive for
//! the backward pass: RMSNorm, rotary embedding, SwiGLU and causal GQA attention (flash-style: only
//! the per-row log-sum-exp is kept; probabilities are recomputed in the backward). Loops run per row
//! on rayon with a fixed order of operations, matrix products go through candle's GEMM, so results
//! do not depend on scheduling. On other devices the same math runs as plain candle ops.

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;
use std::sync::Mutex;

fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input is not contiguous")))?;
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// A contiguous f32 CPU tensor's values, read in place: its storage stays read-locked while this
/// lives (nothing writes a tensor the backward reads).
struct Values<'a> {
    storage: candle_core::StorageRef<'a>,
    range: std::ops::Range<usize>,
}

impl std::ops::Deref for Values<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.storage {
            // Checked in `data`.
            candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[self.range.clone()],
            _ => &[],
        }
    }
}

/// The values of `t` (contiguous, f32, on the CPU: pass `t.contiguous()?` when unsure).
fn data(t: &Tensor) -> Result<Values<'_>> {
    let (storage, layout) = t.storage_and_layout();
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("fused backward: input is not contiguous".into()))?;
    match &*storage {
        candle_core::Storage::Cpu(CpuStorage::F32(v)) if b <= v.len() => {}
        _ => candle_core::bail!("fused backward: expected f32 values on the CPU"),
    }
    Ok(Values {
        storage,
        range: a..b,
    })
}

fn cpu_f32(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

// ---------------------------------------------------------------- RMSNorm

struct RmsNorm {
    w: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn rstd(&self, row: &[f32]) -> f32 {
        let ss: f32 = row.iter().map(|x| x * x).sum();
        1.0 / (ss / row.len() as f32 + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let h = self.w.len();
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(y, x)| {
            let r = self.rstd(x);
            for ((y, x), w) in y.iter_mut().zip(x).zip(&self.w) {
                *y = x * r * w;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let g = g.contiguous()?;
        let (xv, gv) = (data(x)?, data(&g)?);
        let h = self.w.len();
        let mut dx = vec![0f32; xv.len()];
        dx.par_chunks_mut(h)
            .zip(xv.par_chunks(h).zip(gv.par_chunks(h)))
            .for_each(|(dx, (x, g))| {
                let r = self.rstd(x);
                let dot: f32 = x
                    .iter()
                    .zip(g)
                    .zip(&self.w)
                    .map(|((x, g), w)| x * r * g * w)
                    .sum::<f32>()
                    / h as f32;
                for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(&self.w) {
                    *dx = r * (g * w - x * r * dot);
                }
            });
        Ok(Some(Tensor::from_vec(dx, x.dims(), x.device())?))
    }
}

/// RMSNorm over the last dim of `x: [n, h]` with a frozen weight `w: [h]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    if !cpu_f32(&[x, w]) {
        return candle_nn::ops::rms_norm_slow(x, w, eps);
    }
    x.contiguous()?.apply_op1(RmsNorm {
        w: w.to_vec1()?,
        eps,
    })
}

// ---------------------------------------------------------------- rotary embedding

struct Rope {
    /// `[n, hd/2]` rows for each token's position.
    cos: Vec<f32>,
    sin: Vec<f32>,
    heads: usize,
    hd: usize,
}

impl Rope {
    /// Rotates every head of every token by its angle (`sign` −1: the inverse rotation).
    fn apply(&self, x: &[f32], sign: f32) -> Vec<f32> {
        let (half, row) = (self.hd / 2, self.heads * self.hd);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(row)
            .zip(x.par_chunks(row))
            .enumerate()
            .for_each(|(n, (y, x))| {
                let c = &self.cos[n * half..(n + 1) * half];
                let s = &self.sin[n * half..(n + 1) * half];
                for (y, x) in y.chunks_mut(self.hd).zip(x.chunks(self.hd)) {
                    for i in 0..half {
                        let (a, b, si) = (x[i], x[i + half], sign * s[i]);
                        y[i] = a * c[i] - b * si;
                        y[i + half] = b * c[i] + a * si;
                    }
                }
            });
        y
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        Ok((CpuStorage::F32(self.apply(x, 1.0)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let dx = self.apply(&data(&g.contiguous()?)?, -1.0);
        Ok(Some(Tensor::from_vec(dx, x.dims(), x.device())?))
    }
}

/// Half-split rotary embedding of `x: [n, heads, hd]`; `cos`/`sin` are `[n, hd/2]` row-major.
pub fn rope(x: &Tensor, cos: &[f32], sin: &[f32]) -> Result<Tensor> {
    let (n, heads, hd) = x.dims3()?;
    if !cpu_f32(&[x]) {
        let c = Tensor::from_slice(cos, (n, 1, hd / 2), x.device())?;
        let s = Tensor::from_slice(sin, (n, 1, hd / 2), x.device())?;
        let (x1, x2) = (x.narrow(2, 0, hd / 2)?, x.narrow(2, hd / 2, hd / 2)?);
        let a = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
        let b = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
        return Tensor::cat(&[a, b], 2);
    }
    x.contiguous()?.apply_op1(Rope {
        cos: cos.to_vec(),
        sin: sin.to_vec(),
        heads,
        hd,
    })
}

// ---------------------------------------------------------------- SwiGLU

struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let mut y = vec![0f32; g.len()];
        y.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(y, (g, u))| {
                for ((y, g), u) in y.iter_mut().zip(g).zip(u) {
                    *y = g * sigmoid(*g) * u;
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (gv, uv, dyv) = (data(g)?, data(u)?, data(&dy)?);
        let mut dg = vec![0f32; gv.len()];
        let mut du = vec![0f32; gv.len()];
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(
                gv.par_chunks(4096)
                    .zip(uv.par_chunks(4096))
                    .zip(dyv.par_chunks(4096)),
            )
            .for_each(|((dg, du), ((g, u), dy))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    du[i] = dy[i] * g[i] * s;
                    dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        Ok((
            Some(Tensor::from_vec(dg, g.dims(), g.device())?),
            Some(Tensor::from_vec(du, u.dims(), u.device())?),
        ))
    }
}

/// `silu(g) · u`.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if !cpu_f32(&[g, u]) || g.dims() != u.dims() {
        return g.silu()? * u;
    }
    g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu)
}

// ---------------------------------------------------------------- attention

struct Attention {
    /// `(first row, length)` of each example.
    segments: Vec<(usize, usize)>,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    /// Per segment, the log-sum-exp of each score row (`[kv_heads, group·T]`).
    lse: Mutex<Vec<Vec<f32>>>,
}

impl Attention {
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Rows `off..off+t` of `[n, heads, hd]` as `[kv_heads, group·t, hd]` (heads sharing a kv head
    /// stacked), or of `[n, kv_heads, hd]` as `[kv_heads, t, hd]` when `heads == kv_heads` is passed.
    fn gather(&self, x: &[f32], off: usize, t: usize, heads: usize) -> Vec<f32> {
        let hd = self.hd;
        let per_kv = heads / self.kv_heads;
        let mut out = vec![0f32; heads * t * hd];
        for h in 0..heads {
            let (kv, j) = (h / per_kv, h % per_kv);
            for i in 0..t {
                let dst = ((kv * per_kv + j) * t + i) * hd;
                let src = ((off + i) * heads + h) * hd;
                out[dst..dst + hd].copy_from_slice(&x[src..src + hd]);
            }
        }
        out
    }

    /// The inverse of [`Attention::gather`], adding into `dst`.
    fn scatter(&self, y: &[f32], dst: &mut [f32], off: usize, t: usize, heads: usize) {
        let hd = self.hd;
        let per_kv = heads / self.kv_heads;
        for h in 0..heads {
            let (kv, j) = (h / per_kv, h % per_kv);
            for i in 0..t {
                let src = ((kv * per_kv + j) * t + i) * hd;
                let d = ((off + i) * heads + h) * hd;
                dst[d..d + hd].copy_from_slice(&y[src..src + hd]);
            }
        }
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Batched `a · bᵀ` (`tb`) or `a · b` over the kv heads.
    fn bmm(
        &self,
        a: Vec<f32>,
        m: usize,
        k: usize,
        b: Vec<f32>,
        n: usize,
        tb: bool,
    ) -> Result<Vec<f32>> {
        let kvh = self.kv_heads;
        let a = Tensor::from_vec(a, (kvh, m, k), &Device::Cpu)?;
        let b = if tb {
            Tensor::from_vec(b, (kvh, n, k), &Device::Cpu)?.t()?
        } else {
            Tensor::from_vec(b, (kvh, k, n), &Device::Cpu)?
        };
        a.matmul(&b)?.flatten_all()?.to_vec1()
    }

    /// `aᵀ · b` for `a: [kvh, m, k]`, `b: [kvh, m, n]`.
    fn bmm_ta(&self, a: Vec<f32>, m: usize, k: usize, b: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let kvh = self.kv_heads;
        let a = Tensor::from_vec(a, (kvh, m, k), &Device::Cpu)?.t()?;
        let b = Tensor::from_vec(b, (kvh, m, n), &Device::Cpu)?;
        a.matmul(&b)?.flatten_all()?.to_vec1()
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            slice(s1, l1, self.name())?,
            slice(s2, l2, self.name())?,
            slice(s3, l3, self.name())?,
        );
        let (hd, kvh, g) = (self.hd, self.kv_heads, self.group());
        let n = l1.dims()[0];
        let scale = self.scale();
        let mut out = vec![0f32; n * self.heads * hd];
        // The examples in parallel (each one's products are too small to fill the cores alone),
        // written back in order.
        let per: Vec<(Vec<f32>, Vec<f32>)> = self
            .segments
            .par_iter()
            .map(|&(off, t)| -> Result<(Vec<f32>, Vec<f32>)> {
                let qg = self.gather(q, off, t, self.heads);
                let kg = self.gather(k, off, t, kvh);
                let vg = self.gather(v, off, t, kvh);
                let mut p = self.bmm(qg, g * t, hd, kg, t, true)?;
                let mut lse = vec![0f32; kvh * g * t];
                p.par_chunks_mut(t)
                    .zip(lse.par_iter_mut())
                    .enumerate()
                    .for_each(|(r, (row, lse))| {
                        let i = r % t;
                        let max = row[..=i]
                            .iter()
                            .fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
                        let mut sum = 0f32;
                        for s in row[..=i].iter_mut() {
                            *s = (*s * scale - max).exp();
                            sum += *s;
                        }
                        for s in row[..=i].iter_mut() {
                            *s /= sum;
                        }
                        row[i + 1..].iter_mut().for_each(|s| *s = 0.0);
                        *lse = max + sum.ln();
                    });
                let o = self.bmm(p, g * t, t, vg, hd, false)?;
                Ok((o, lse))
            })
            .collect::<Result<_>>()?;
        let mut all_lse = Vec::with_capacity(self.segments.len());
        for (&(off, t), (o, lse)) in self.segments.iter().zip(per) {
            self.scatter(&o, &mut out, off, t, self.heads);
            all_lse.push(lse);
        }
        *self.lse.lock().expect("not poisoned") = all_lse;
        Ok((CpuStorage::F32(out), Shape::from((n, self.heads * hd))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (hd, kvh, g, heads) = (self.hd, self.kv_heads, self.group(), self.heads);
        let (out, dout) = (out.contiguous()?, dout.contiguous()?);
        let (qv, kv, vv, ov, dov) = (data(q)?, data(k)?, data(v)?, data(&out)?, data(&dout)?);
        let scale = self.scale();
        let lses = self.lse.lock().expect("not poisoned").clone();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; qv.len()],
            vec![0f32; kv.len()],
            vec![0f32; vv.len()],
        );
        // The examples in parallel, written back in order (as in the forward).
        type Grads = (Vec<f32>, Vec<f32>, Vec<f32>);
        let per: Vec<Grads> = self
            .segments
            .par_iter()
            .zip(lses.par_iter())
            .map(|(&(off, t), lse)| -> Result<Grads> {
                let qg = self.gather(&qv, off, t, heads);
                let kg = self.gather(&kv, off, t, kvh);
                let vg = self.gather(&vv, off, t, kvh);
                let dog = self.gather(&dov, off, t, heads);
                let og = self.gather(&ov, off, t, heads);
                // P recomputed from the scores and the saved log-sum-exp.
                let mut p = self.bmm(qg.clone(), g * t, hd, kg.clone(), t, true)?;
                p.par_chunks_mut(t)
                    .zip(lse.par_iter())
                    .enumerate()
                    .for_each(|(r, (row, &lse))| {
                        let i = r % t;
                        for s in row[..=i].iter_mut() {
                            *s = (*s * scale - lse).exp();
                        }
                        row[i + 1..].iter_mut().for_each(|s| *s = 0.0);
                    });
                let dvg = self.bmm_ta(p.clone(), g * t, t, dog.clone(), hd)?;
                let mut ds = self.bmm(dog.clone(), g * t, hd, vg, t, true)?;
                let delta: Vec<f32> = dog
                    .par_chunks(hd)
                    .zip(og.par_chunks(hd))
                    .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum())
                    .collect();
                ds.par_chunks_mut(t)
                    .zip(p.par_chunks(t))
                    .zip(delta.par_iter())
                    .for_each(|((ds, p), &d)| {
                        for (ds, p) in ds.iter_mut().zip(p) {
                            *ds = p * (*ds - d) * scale;
                        }
                    });
                let dqg = self.bmm(ds.clone(), g * t, t, kg, hd, false)?;
                let dkg = self.bmm_ta(ds, g * t, t, qg, hd)?;
                Ok((dqg, dkg, dvg))
            })
            .collect::<Result<_>>()?;
        for (&(off, t), (dqg, dkg, dvg)) in self.segments.iter().zip(per) {
            self.scatter(&dqg, &mut dq, off, t, heads);
            self.scatter(&dkg, &mut dk, off, t, kvh);
            self.scatter(&dvg, &mut dv, off, t, kvh);
        }
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.dims(), dev)?),
            Some(Tensor::from_vec(dk, k.dims(), dev)?),
            Some(Tensor::from_vec(dv, v.dims(), dev)?),
        ))
    }
}

/// Causal GQA attention of each example (`segments`: first row and length) over `q: [n, heads, hd]`,
/// `k`, `v: [n, kv_heads, hd]`; returns `[n, heads·hd]`.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &[(usize, usize)],
) -> Result<Tensor> {
    let (_, heads, hd) = q.dims3()?;
    let (_, kv_heads, _) = k.dims3()?;
    if !cpu_f32(&[q, k, v]) {
        return attention_candle(q, k, v, segments);
    }
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            segments: segments.to_vec(),
            heads,
            kv_heads,
            hd,
            lse: Mutex::new(Vec::new()),
        },
    )
}

/// The same attention as plain candle ops (other devices, and the reference in tests).
pub fn attention_candle(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    segments: &[(usize, usize)],
) -> Result<Tensor> {
    let (_, heads, hd) = q.dims3()?;
    let (_, kvh, _) = k.dims3()?;
    let group = heads / kvh;
    let mut outs = Vec::new();
    for &(off, t) in segments {
        let q = q
            .narrow(0, off, t)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((kvh, group * t, hd))?;
        let k = k.narrow(0, off, t)?.transpose(0, 1)?.contiguous()?;
        let v = v.narrow(0, off, t)?.transpose(0, 1)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), q.device())?;
        let scores = scores
            .reshape((kvh, group, t, t))?
            .broadcast_add(&mask)?
            .reshape((kvh, group * t, t))?;
        let probs = candle_nn::ops::softmax(&scores, candle_core::D::Minus1)?;
        outs.push(
            probs
                .matmul(&v)?
                .reshape((heads, t, hd))?
                .transpose(0, 1)?
                .reshape((t, heads * hd))?,
        );
    }
    Tensor::cat(&outs, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut r = crate::rng::SplitMix64::new(seed);
        let n = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| r.next_f32() * 2.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Output and input gradients (under a random projection of the output) of both versions.
    fn same(
        ours: &dyn Fn(&[Tensor]) -> Tensor,
        reference: &dyn Fn(&[Tensor]) -> Tensor,
        inputs: &[Tensor],
    ) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let (a, b) = (ours(&ts), reference(&ts));
        assert!(diff(&a, &b) < 1e-4, "outputs differ by {}", diff(&a, &b));
        let proj = rand(a.dims(), 99);
        let ga = (a * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &proj).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (x, y) = (ga.get(v).unwrap(), gb.get(v).unwrap());
            assert!(
                diff(x, y) < 1e-4,
                "gradient of input {i} differs by {}",
                diff(x, y)
            );
        }
    }

    #[test]
    fn rms_norm_matches_candle() {
        let w = rand(&[8], 1);
        same(
            &|x| rms_norm(&x[0], &w, 1e-5).unwrap(),
            &|x| candle_nn::ops::rms_norm_slow(&x[0], &w, 1e-5).unwrap(),
            &[rand(&[5, 8], 2)],
        );
    }

    #[test]
    fn rope_matches_candle() {
        let (cos, sin): (Vec<f32>, Vec<f32>) = (0..5 * 3)
            .map(|i| ((i as f32).cos(), (i as f32).sin()))
            .unzip();
        let c = Tensor::from_slice(&cos, (5, 1, 3), &Device::Cpu).unwrap();
        let s = Tensor::from_slice(&sin, (5, 1, 3), &Device::Cpu).unwrap();
        same(
            &|x| rope(&x[0], &cos, &sin).unwrap(),
            &|x| {
                let (x1, x2) = (x[0].narrow(2, 0, 3).unwrap(), x[0].narrow(2, 3, 3).unwrap());
                let a = (x1.broadcast_mul(&c).unwrap() - x2.broadcast_mul(&s).unwrap()).unwrap();
                let b = (x2.broadcast_mul(&c).unwrap() + x1.broadcast_mul(&s).unwrap()).unwrap();
                Tensor::cat(&[a, b], 2).unwrap()
            },
            &[rand(&[5, 2, 6], 3)],
        );
    }

    #[test]
    fn swiglu_matches_candle() {
        same(
            &|x| swiglu(&x[0], &x[1]).unwrap(),
            &|x| (x[0].silu().unwrap() * &x[1]).unwrap(),
            &[rand(&[4, 7], 4), rand(&[4, 7], 5)],
        );
    }

    #[test]
    fn attention_matches_candle_per_example() {
        let segs = [(0, 5), (5, 1), (6, 3)];
        same(
            &|x| attention(&x[0], &x[1], &x[2], &segs).unwrap(),
            &|x| attention_candle(&x[0], &x[1], &x[2], &segs).unwrap(),
            &[
                rand(&[9, 4, 6], 6),
                rand(&[9, 2, 6], 7),
                rand(&[9, 2, 6], 8),
            ],
        );
    }
}
