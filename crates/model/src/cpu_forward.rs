//! The inference forward pass on the CPU: the transformer on plain f32 buffers.
//!
//! Decoding a small model is a few hundred short steps per token; as candle ops each would allocate a
//! tensor and pass through dispatch, and that overhead rivals the matrix products themselves. Here the
//! norms, rotary embedding, attention over the KV cache and the SwiGLU run as loops over slices, sibling
//! projections (q/k/v, gate/up) share one activation quantization and one parallel loop, and attention
//! runs over (sequence, head, row-chunk) tasks on the kernel pool. Next to quantized projections,
//! LoRA updates run as plain loops over the rows grouped by adapter, as tasks of the base product's
//! parallel loop ([`crate::lora_kernel`]); float weights, their adapters and biases go through the
//! same [`Linear`] pieces as the candle path.
//!
//! Training and non-CPU devices use the candle path in [`crate::llama`] (every op differentiable);
//! tests check that both paths give the same logits.

use crate::error::{ModelError, Result};
use crate::kv_cache::LayerCache;
use crate::linear::{Linear, Weight};
use crate::llama::{Llama, SeqInput};
use crate::lora::{RowAdapters, Target};
use crate::lora_kernel;
use crate::quant::matmul::matmul_many_after;
use crate::quant::pool::{self, SendPtr};
use crate::quant::{matmul_many, QWeight};
use candle_core::{Device, Tensor};

/// Are AVX2, FMA and F16C there (checked once)?
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *YES.get_or_init(|| has!("avx2") && has!("fma") && has!("f16c"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rounds to the nearest f16 value (llama.cpp's f16 KV cache and attention inputs).
fn round_f16(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features were checked.
        return unsafe { simd::round_f16(xs) };
    }
    for x in xs {
        *x = half::f16::from_f32(*x).to_f32();
    }
}

/// `Σ a·b` (AVX2 + FMA when the CPU has them).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features were checked.
        return unsafe { simd::dot(a, b) };
    }
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out = Σⱼ p[j] · rows[j·stride..][..out.len()]` (AVX2 + FMA when the CPU has them).
fn weighted_rows(p: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() && out.len().is_multiple_of(8) {
        // SAFETY: the features were checked; every row read is inside `rows` (callers pass
        // `rows.len() ≥ (p.len() − 1)·stride + out.len()`), asserted here.
        assert!(p.is_empty() || rows.len() >= (p.len() - 1) * stride + out.len());
        return unsafe { simd::weighted_rows(p, rows, stride, out) };
    }
    out.fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(&rows[j * stride..]) {
            *o += pj * v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            i += 16;
        }
        let s = _mm256_add_ps(s0, s1);
        let s = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        let mut sum = _mm_cvtss_f32(s);
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    /// Eight accumulators per 64-wide column chunk stay in registers across all rows.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows(p: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        let base = rows.as_ptr();
        for c in (0..out.len()).step_by(64) {
            let lanes = (out.len() - c).min(64) / 8;
            let mut acc = [_mm256_setzero_ps(); 8];
            for (j, &pj) in p.iter().enumerate() {
                let pv = _mm256_set1_ps(pj);
                let r = base.add(j * stride + c);
                if lanes == 8 {
                    for (l, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(r.add(8 * l)), *a);
                    }
                } else {
                    for (l, a) in acc.iter_mut().enumerate().take(lanes) {
                        *a = _mm256_fmadd_ps(pv, _mm256_loadu_ps(r.add(8 * l)), *a);
                    }
                }
            }
            for (l, a) in acc.iter().enumerate().take(lanes) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c + 8 * l), *a);
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn round_f16(xs: &mut [f32]) {
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            let v = _mm256_loadu_ps(c.as_ptr());
            let h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
            _mm256_storeu_ps(c.as_mut_ptr(), _mm256_cvtph_ps(h));
        }
        for x in chunks.into_remainder() {
            *x = half::f16::from_f32(*x).to_f32();
        }
    }
}

/// RMS norm of each `w.len()`-wide row of `x`, scaled by `w` (as candle's `rms_norm`).
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (src, dst) in x.chunks_exact(w.len()).zip(out.chunks_exact_mut(w.len())) {
        let sum2: f32 = src.iter().map(|v| v * v).sum();
        let m = (sum2 / w.len() as f32 + eps).sqrt();
        for ((d, s), a) in dst.iter_mut().zip(src).zip(w) {
            *d = *s / m * *a;
        }
    }
    out
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Where one sequence's rows sit in the batch and what its cache held before this pass.
struct SeqSpan {
    offset: usize,
    len: usize,
    start: usize,
}

impl Llama {
    /// The final hidden states (`[n, hidden]`, before the last norm) of the stacked new tokens.
    pub(crate) fn hidden_cpu(
        &self,
        ids: &[u32],
        positions: &[u32],
        seqs: &mut [SeqInput],
        adapters: &RowAdapters,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, hidden) = (ids.len(), cfg.hidden_size);
        let eps = cfg.rms_norm_eps as f32;
        let mut x = self
            .embed
            .rows(ids, &Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let spans: Vec<SeqSpan> = seqs
            .iter()
            .scan(0, |off, s| {
                let span = SeqSpan {
                    offset: *off,
                    len: s.tokens.len(),
                    start: s.cache.pos,
                };
                *off += span.len;
                Some(span)
            })
            .collect();
        for (li, block) in self.blocks.iter().enumerate() {
            let h = rms_norm(&x, &block.attn_norm.to_vec1::<f32>()?, eps);
            let [mut q, mut k, mut v]: [Vec<f32>; 3] = project(
                [&block.q, &block.k, &block.v],
                [Target::Q, Target::K, Target::V],
                &h,
                n,
                adapters,
                li,
            )?;
            self.rope_rows(&mut q, positions, cfg.num_heads);
            self.rope_rows(&mut k, positions, cfg.num_kv_heads);
            if self.f16_attention() {
                round_f16(&mut q);
                round_f16(&mut k);
                round_f16(&mut v);
            }
            let kv_width = cfg.num_kv_heads * cfg.head_dim;
            for (s, span) in seqs.iter_mut().zip(&spans) {
                let r = span.offset * kv_width..(span.offset + span.len) * kv_width;
                s.cache.layers[li].append(&k[r.clone()], &v[r]);
            }
            let caches: Vec<&LayerCache> = seqs.iter().map(|s| &s.cache.layers[li]).collect();
            let attn = self.attention(&q, &spans, &caches)?;
            let [o] = project([&block.o], [Target::O], &attn, n, adapters, li)?;
            add_into(&mut x, &o);
            let h = rms_norm(&x, &block.ffn_norm.to_vec1::<f32>()?, eps);
            let [mut g, u] = project(
                [&block.gate, &block.up],
                [Target::Gate, Target::Up],
                &h,
                n,
                adapters,
                li,
            )?;
            for (a, b) in g.iter_mut().zip(&u) {
                *a = *a / (1.0 + (-*a).exp()) * b;
            }
            let [d] = project([&block.down], [Target::Down], &g, n, adapters, li)?;
            add_into(&mut x, &d);
        }
        Ok(Tensor::from_vec(x, (n, hidden), &Device::Cpu)?)
    }

    /// Half-split rotary embedding in place on `[n, heads, head_dim]` rows at `positions`.
    fn rope_rows(&self, x: &mut [f32], positions: &[u32], heads: usize) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        for (row, &p) in x.chunks_exact_mut(heads * hd).zip(positions) {
            let (cos, sin) = self.rope_table(p as usize);
            for head in row.chunks_exact_mut(hd) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x0, x1) = (a[i], b[i]);
                    a[i] = x0 * cos[i] - x1 * sin[i];
                    b[i] = x0 * sin[i] + x1 * cos[i];
                }
            }
        }
    }

    /// Causal GQA attention of every sequence's new rows against its cache (already appended):
    /// `[n, heads · head_dim]`.
    fn attention(&self, q: &[f32], spans: &[SeqSpan], caches: &[&LayerCache]) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let (heads, kvh, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let group = heads / kvh;
        let width = heads * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let round = self.f16_attention();
        const CHUNK: usize = 16;
        // (sequence, head, first row): rows of one chunk share a task.
        let tasks: Vec<(usize, usize, usize)> = spans
            .iter()
            .enumerate()
            .flat_map(|(si, s)| {
                (0..heads).flat_map(move |h| (0..s.len).step_by(CHUNK).map(move |r| (si, h, r)))
            })
            .collect();
        let mut out = vec![0f32; q.len()];
        let out_ptr = SendPtr(out.as_mut_ptr());
        let run = |task: usize| {
            let (si, h, first) = tasks[task];
            let (span, cache) = (&spans[si], caches[si]);
            let g = h / group;
            let mut probs = Vec::with_capacity(span.start + span.len);
            for i in first..(first + CHUNK).min(span.len) {
                let row = span.offset + i;
                let qi = &q[row * width + h * hd..][..hd];
                let visible = span.start + i + 1;
                probs.clear();
                probs.extend(
                    (0..visible).map(|j| dot(qi, &cache.k[(j * kvh + g) * hd..][..hd]) * scale),
                );
                let max = probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for p in probs.iter_mut() {
                    *p = (*p - max).exp();
                    sum += *p;
                }
                let inv = 1.0 / sum;
                for p in probs.iter_mut() {
                    *p *= inv;
                }
                if round {
                    round_f16(&mut probs);
                }
                // SAFETY: (row, head h) is written by this task alone; the buffer outlives the loop.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(out_ptr.get().add(row * width + h * hd), hd)
                };
                weighted_rows(&probs, &cache.v[g * hd..], kvh * hd, o);
            }
        };
        let work: usize = spans.iter().map(|s| s.len * (s.start + s.len)).sum();
        if work * heads * hd < 1 << 16 {
            (0..tasks.len()).for_each(run);
        } else {
            pool::parallel_for(tasks.len(), &run)
                .map_err(|e| ModelError::Generation(format!("attention: {e}")))?;
        }
        Ok(out)
    }
}

/// Sibling projections of one input (`x` is `n × in`): the base products together (one activation
/// quantization and one parallel loop when all are quantized), each one's bias, and the LoRA updates
/// of the rows that have an adapter: for quantized projections, tasks of the same parallel loop
/// ([`lora_kernel::Plan`]) to whose output the products add.
fn project<const K: usize>(
    linears: [&Linear; K],
    targets: [Target; K],
    x: &[f32],
    n: usize,
    adapters: &RowAdapters,
    layer: usize,
) -> Result<[Vec<f32>; K]> {
    let quant: Option<Vec<&QWeight>> = linears
        .iter()
        .map(|l| match &l.weight {
            Weight::Quant(q) => Some(q),
            Weight::Float(_) => None,
        })
        .collect();
    let cols = x.len() / n.max(1);
    let outs = linears.map(|l| l.weight.dims().0);
    // Quantized projections take the LoRA kernels; float ones (exact f32 models), and batches with
    // an adapter the kernels cannot take (see `LoraAdapter::prepare`), the candle reference.
    let plan = match &quant {
        Some(_) if !adapters.is_empty() => {
            lora_kernel::Plan::new(adapters, layer, &targets, n, cols, &outs).transpose()?
        }
        _ => None,
    };
    let reference = !adapters.is_empty() && plan.is_none();
    let xt = if quant.is_none() || reference {
        Some(Tensor::from_slice(x, (n, cols), &Device::Cpu)?)
    } else {
        None
    };
    let mut ys: Vec<Vec<f32>> = match (&quant, &xt, &plan) {
        (Some(qs), _, Some(p)) if !p.is_empty() => {
            matmul_many_after(qs, x, n, p.tasks(), &|i, outs| p.run(i, x, outs))?
        }
        (Some(qs), _, _) => matmul_many(qs, x, n)?,
        (None, Some(t), _) => linears
            .iter()
            .map(|l| Ok(l.weight.matmul_t(t)?.flatten_all()?.to_vec1::<f32>()?))
            .collect::<Result<_>>()?,
        (None, None, _) => unreachable!("float weights always get an input tensor"),
    };
    for ((y, l), &t) in ys.iter_mut().zip(&linears).zip(&targets) {
        if let Some(b) = &l.bias {
            let b = b.to_vec1::<f32>()?;
            for row in y.chunks_exact_mut(b.len()) {
                add_into(row, &b);
            }
        }
        if let (Some(xt), true) = (&xt, reference) {
            let rows = y.len() / n.max(1);
            let yt = Tensor::from_slice(y, (n, rows), &Device::Cpu)?;
            *y = adapters
                .apply(xt, yt, layer, t)?
                .flatten_all()?
                .to_vec1::<f32>()?;
        }
    }
    Ok(ys.try_into().expect("one output per projection"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt * 104729) % 2001) as f32 - 1000.0) / 37.0)
            .collect()
    }

    /// The SIMD helpers compute what their plain definitions say.
    #[test]
    fn helpers_match_their_definitions() {
        let mut xs = values(203, 1);
        xs.extend([65504.0, 1e-8, -0.0, 70000.0]);
        let mut rounded = xs.clone();
        round_f16(&mut rounded);
        for (r, x) in rounded.iter().zip(&xs) {
            assert_eq!(
                r.to_bits(),
                half::f16::from_f32(*x).to_f32().to_bits(),
                "{x}"
            );
        }
        let (a, b) = (values(77, 2), values(77, 3));
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-3 * want.abs().max(1.0));
        for width in [64, 24, 136] {
            let (rows, stride) = (values(9 * 200, 4), 200);
            let p = values(9, 5);
            let mut out = vec![f32::NAN; width];
            weighted_rows(&p, &rows, stride, &mut out);
            for (c, o) in out.iter().enumerate() {
                let want: f32 = (0..9).map(|j| p[j] * rows[j * stride + c]).sum();
                assert!(
                    (o - want).abs() < 1e-3 * want.abs().max(1.0),
                    "width {width} col {c}"
                );
            }
        }
    }
}
