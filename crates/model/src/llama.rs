//! The Llama-family transformer: embeddings, pre-norm blocks (GQA attention with rotary embeddings,
//! SwiGLU MLP), final norm and LM head, run over a batch of sequences of different lengths.
//!
//! All sequences' new tokens are stacked into one `[tokens, hidden]` matrix so every projection is
//! one product for the whole batch (rows may carry different LoRA adapters); attention then reads each
//! sequence's own KV cache: per sequence for prompts, and for a decode step (one new token per
//! sequence) in one batched product over the caches padded to the longest, the padding masked.
//! The candle path keeps its caches on the model's device ([`crate::kv_cache`]).
//!
//! Two paths compute the layers: on the CPU, inference runs [`crate::cpu_forward`] on plain buffers;
//! training (differentiable mode) and other devices run the candle ops here.

use crate::config::{Arch, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::kv_cache::{LayerCache, SeqCache};
use crate::linear::{Linear, Weight};
use crate::lora::{LoraAdapter, RowAdapters, Target};
use candle_core::{DType, Device, Tensor, D};

/// One transformer block's weights.
#[derive(Debug, Clone)]
pub struct Block {
    pub attn_norm: Tensor,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Tensor,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
}

impl Block {
    pub fn linear(&self, t: Target) -> &Linear {
        match t {
            Target::Q => &self.q,
            Target::K => &self.k,
            Target::V => &self.v,
            Target::O => &self.o,
            Target::Gate => &self.gate,
            Target::Up => &self.up,
            Target::Down => &self.down,
        }
    }
    fn linear_mut(&mut self, t: Target) -> &mut Linear {
        match t {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }
}

/// A loaded model. Q/K rows are in the Hugging Face order (half-split rotary), whatever the file.
#[derive(Debug, Clone)]
pub struct Llama {
    pub config: LlamaConfig,
    pub embed: Weight,
    pub blocks: Vec<Block>,
    pub norm: Tensor,
    pub lm_head: Weight,
    /// Rotary tables, `[max_position, head_dim / 2]` row-major.
    cos: Vec<f32>,
    sin: Vec<f32>,
    device: Device,
    /// Use only ops with a backward pass (training); slower.
    differentiable: bool,
    /// Round attention inputs (q, cached k/v, probabilities) to f16 precision as llama.cpp does with
    /// its f16 KV cache. On for GGUF models (parity with llama.cpp), off for safetensors (parity with
    /// transformers, f32 throughout).
    f16_attention: bool,
}

/// One sequence's part of a batched forward pass.
pub struct SeqInput<'a> {
    /// New tokens (the whole prompt on the first call, then one per step).
    pub tokens: &'a [u32],
    pub cache: &'a mut SeqCache,
    pub adapter: Option<&'a LoraAdapter>,
}

/// Which positions' logits to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only each sequence's last new token (generation).
    Last,
    /// Every new token (scoring, teacher forcing).
    All,
}

impl Llama {
    /// Assembles a model from its parts (loaders call this) and precomputes the rotary tables.
    pub fn new(
        config: LlamaConfig,
        embed: Weight,
        blocks: Vec<Block>,
        norm: Tensor,
        lm_head: Weight,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        crate::quant::pool::threads();
        if blocks.len() != config.num_layers {
            return Err(ModelError::Unsupported(format!(
                "{} blocks for {} layers",
                blocks.len(),
                config.num_layers
            )));
        }
        // Angles as llama.cpp computes them (f32, θᵢ = p·scaleⁱ by repeated multiplication), so both
        // runtimes rotate by the same bits.
        let half = config.head_dim / 2;
        let max = config.max_position.max(1);
        let theta_scale = (config.rope_theta as f32).powf(-2.0 / config.head_dim as f32);
        let (mut cos, mut sin) = (
            Vec::with_capacity(max * half),
            Vec::with_capacity(max * half),
        );
        for p in 0..max {
            let mut theta = p as f32;
            for _ in 0..half {
                cos.push(theta.cos());
                sin.push(theta.sin());
                theta *= theta_scale;
            }
        }
        Ok(Self {
            cos,
            sin,
            config,
            embed,
            blocks,
            norm,
            lm_head,
            device: device.clone(),
            differentiable: false,
            f16_attention: false,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Switches to ops that all have a backward pass (for training through the model).
    pub fn set_differentiable(&mut self, on: bool) {
        self.differentiable = on;
    }

    /// See the `f16_attention` field: llama.cpp-style f16 attention numerics.
    pub fn set_f16_attention(&mut self, on: bool) {
        self.f16_attention = on;
    }

    pub(crate) fn f16_attention(&self) -> bool {
        self.f16_attention
    }

    /// The rotary `(cos, sin)` rows of a position.
    pub(crate) fn rope_table(&self, pos: usize) -> (&[f32], &[f32]) {
        let half = self.config.head_dim / 2;
        let r = pos * half..(pos + 1) * half;
        (&self.cos[r.clone()], &self.sin[r])
    }

    /// An empty cache for a new sequence.
    pub fn new_cache(&self) -> SeqCache {
        SeqCache::new(self.config.num_layers)
    }

    /// `(out, in)` of a target projection (for building adapters).
    pub fn target_dims(&self, t: Target) -> (usize, usize) {
        self.blocks[0].linear(t).weight.dims()
    }

    /// Bytes of weights.
    pub fn size_bytes(&self) -> usize {
        let block: usize = self
            .blocks
            .iter()
            .map(|b| {
                Target::ALL
                    .iter()
                    .map(|&t| b.linear(t).weight.size_bytes())
                    .sum::<usize>()
            })
            .sum();
        block + self.embed.size_bytes()
    }

    /// Checks an adapter fits this model before it is used or merged.
    pub fn check_adapter(&self, adapter: &LoraAdapter) -> Result<()> {
        for (layer, t, pair) in adapter.pairs() {
            if layer >= self.blocks.len() {
                return Err(ModelError::Adapter(format!(
                    "adapter has layer {layer}; the model has {}",
                    self.blocks.len()
                )));
            }
            let (out_f, in_f) = self.target_dims(t);
            let (_, a_in) = pair.a.dims2()?;
            let (b_out, _) = pair.b.dims2()?;
            if a_in != in_f || b_out != out_f {
                return Err(ModelError::Adapter(format!(
                    "layer {layer} {}: adapter is {b_out}x{a_in}, the model's projection is {out_f}x{in_f} (adapter made for another base model?)",
                    t.peft_name()
                )));
            }
        }
        Ok(())
    }

    /// Adds an adapter's updates into the (float) weights.
    pub fn merge(&mut self, adapter: &LoraAdapter) -> Result<()> {
        self.merge_signed(adapter, 1.0)
    }

    /// Removes an adapter merged before.
    pub fn unmerge(&mut self, adapter: &LoraAdapter) -> Result<()> {
        self.merge_signed(adapter, -1.0)
    }

    fn merge_signed(&mut self, adapter: &LoraAdapter, sign: f64) -> Result<()> {
        self.check_adapter(adapter)?;
        if adapter
            .pairs()
            .any(|(l, t, _)| !matches!(self.blocks[l].linear(t).weight, Weight::Float(_)))
        {
            return Err(ModelError::Adapter(
                "merging needs float base weights; this model is quantized".into(),
            ));
        }
        let scale = adapter.config.scale();
        for (layer, t, pair) in adapter.pairs() {
            self.blocks[layer].linear_mut(t).merge(pair, scale, sign)?;
        }
        Ok(())
    }

    /// Why merging an adapter would not give this model's own numbers back, if it would not: a
    /// quantized projection cannot take a merge at all, and an f16/bf16 one would round the merged
    /// update. `None` when every projection is f32 (or f64).
    pub fn merge_refusal(&self) -> Option<String> {
        for (i, b) in self.blocks.iter().enumerate() {
            for t in Target::ALL {
                match &b.linear(t).weight {
                    Weight::Quant(_) => {
                        return Some(format!(
                            "the base model's projections are quantized (layer {i} {}); merging needs f32 weights (serve a safetensors model, or dequantize it)",
                            t.peft_name()
                        ))
                    }
                    Weight::Float(w) if !matches!(w.dtype(), DType::F32 | DType::F64) => {
                        return Some(format!(
                            "the base model's projections are {:?} (layer {i} {}); a merge would round the update, it needs f32 weights",
                            w.dtype(),
                            t.peft_name()
                        ))
                    }
                    Weight::Float(_) => {}
                }
            }
        }
        None
    }

    /// Dequantizes every projection to f32 (needed for merging into a GGUF model).
    pub fn dequantize(&mut self) -> Result<()> {
        let dev = self.device.clone();
        for b in &mut self.blocks {
            for t in Target::ALL {
                let l = b.linear_mut(t);
                l.weight = Weight::Float(l.weight.to_float(&dev)?);
            }
        }
        Ok(())
    }

    /// Runs the new tokens of every sequence, appends them to the caches, and returns logits per
    /// sequence: `[1, vocab]` each for [`Logits::Last`], `[n_new, vocab]` for [`Logits::All`].
    pub fn forward(&self, seqs: &mut [SeqInput], want: Logits) -> Result<Vec<Tensor>> {
        let cfg = &self.config;
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut per_row = Vec::new();
        for s in seqs.iter() {
            if s.tokens.is_empty() {
                return Err(ModelError::Generation(
                    "a sequence in the batch has no new tokens".into(),
                ));
            }
            if s.cache.pos + s.tokens.len() > cfg.max_position {
                return Err(ModelError::Generation(format!(
                    "sequence of {} tokens exceeds the model's context of {}",
                    s.cache.pos + s.tokens.len(),
                    cfg.max_position
                )));
            }
            ids.extend_from_slice(s.tokens);
            positions.extend((s.cache.pos..s.cache.pos + s.tokens.len()).map(|p| p as u32));
            per_row.extend(std::iter::repeat_n(s.adapter, s.tokens.len()));
        }
        let n = ids.len();
        // Each distinct adapter is checked once, not once per sequence using it.
        let mut seen: Vec<&LoraAdapter> = Vec::new();
        for a in per_row.iter().flatten() {
            if !seen.iter().any(|s| std::ptr::eq(*s, *a)) {
                self.check_adapter(a)?;
                seen.push(a);
            }
        }
        let adapters = RowAdapters::from_rows(&per_row, &self.device)?;
        // A pass that failed part-way may have appended to some layers: drop anything past `pos`.
        let (kvh, hd) = (cfg.num_kv_heads, cfg.head_dim);
        for s in seqs.iter_mut() {
            for l in &mut s.cache.layers {
                l.truncate(s.cache.pos, kvh * hd);
            }
        }
        let cpu_path = self.device.is_cpu() && !self.differentiable;
        // The path about to run reads its own copy of the cache: bring it up to date (a cache the
        // other path filled), and give the device mirror room for this pass's rows.
        let reserve = seqs.iter().map(|s| s.cache.pos).max().unwrap_or(0) + 1;
        for s in seqs.iter_mut() {
            let (pos, n) = (s.cache.pos, s.tokens.len());
            for l in &mut s.cache.layers {
                if cpu_path {
                    l.sync_host(pos, kvh, hd)?;
                } else {
                    l.sync_device(pos, reserve.max(pos + n), kvh, hd, &self.device)?;
                }
            }
        }
        // Kernel loops follow one another until the logits: the pool's workers wait for the next
        // one spinning, not asleep, until this pass ends.
        let _hot = crate::quant::pool::busy();
        let x = if cpu_path {
            self.hidden_cpu(&ids, &positions, seqs, &adapters)?
        } else {
            self.hidden_candle(&ids, &positions, seqs, &adapters)?
        };
        for s in seqs.iter_mut() {
            s.cache.pos += s.tokens.len();
        }
        let rows: Vec<u32> = match want {
            Logits::All => (0..n as u32).collect(),
            Logits::Last => seqs
                .iter()
                .scan(0usize, |end, s| {
                    *end += s.tokens.len();
                    Some(*end as u32 - 1)
                })
                .collect(),
        };
        let x = if rows.len() == n {
            x
        } else {
            x.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?
        };
        let logits = self.lm_head.matmul_t(&self.rms_norm(&x, &self.norm)?)?;
        let mut out = Vec::with_capacity(seqs.len());
        let mut off = 0;
        for s in seqs.iter() {
            let len = if want == Logits::All {
                s.tokens.len()
            } else {
                1
            };
            out.push(logits.narrow(0, off, len)?);
            off += len;
        }
        Ok(out)
    }

    /// The candle-op path of [`Llama::forward`]: final hidden states `[n, hidden]` (before the last norm).
    fn hidden_candle(
        &self,
        ids: &[u32],
        positions: &[u32],
        seqs: &mut [SeqInput],
        adapters: &RowAdapters,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let n = ids.len();
        let table = |second: bool| -> Result<Tensor> {
            let rows: Vec<f32> = positions
                .iter()
                .flat_map(|&p| {
                    let (c, s) = self.rope_table(p as usize);
                    if second { s } else { c }.iter().copied()
                })
                .collect();
            Ok(Tensor::from_vec(rows, (n, cfg.head_dim / 2), &self.device)?)
        };
        let (cos, sin) = (table(false)?, table(true)?);
        // One new token per sequence (a decode step): attention runs for the whole batch at once.
        let decode = if seqs.iter().all(|s| s.tokens.len() == 1) {
            Some(DecodeBatch::new(seqs, &self.device)?)
        } else {
            None
        };
        let mut x = self.embed.rows(ids, &self.device)?;
        for (li, block) in self.blocks.iter().enumerate() {
            let h = self.rms_norm(&x, &block.attn_norm)?;
            let q = block.q.forward(&h, adapters, li, Target::Q)?;
            let k = block.k.forward(&h, adapters, li, Target::K)?;
            let v = block.v.forward(&h, adapters, li, Target::V)?;
            let q = self.rope(&q.reshape((1, n, cfg.num_heads, cfg.head_dim))?, &cos, &sin)?;
            let k = self.rope(
                &k.reshape((1, n, cfg.num_kv_heads, cfg.head_dim))?,
                &cos,
                &sin,
            )?;
            let v = v.reshape((n, cfg.num_kv_heads, cfg.head_dim))?;
            let (q, k) = (q.squeeze(0)?, k.squeeze(0)?);
            let attn = match &decode {
                Some(batch) => self.attend_decode(&q, &k, &v, seqs, li, batch)?,
                None => {
                    let mut outs = Vec::with_capacity(seqs.len());
                    let mut off = 0;
                    for s in seqs.iter_mut() {
                        let len = s.tokens.len();
                        let start = s.cache.pos;
                        outs.push(self.attend(
                            &q.narrow(0, off, len)?,
                            &k.narrow(0, off, len)?,
                            &v.narrow(0, off, len)?,
                            &mut s.cache.layers[li],
                            start,
                        )?);
                        off += len;
                    }
                    if outs.len() == 1 {
                        outs.pop().expect("one output")
                    } else {
                        Tensor::cat(&outs, 0)?
                    }
                }
            };
            x = (x + block.o.forward(&attn, adapters, li, Target::O)?)?;
            let h = self.rms_norm(&x, &block.ffn_norm)?;
            let g = block.gate.forward(&h, adapters, li, Target::Gate)?;
            let u = block.up.forward(&h, adapters, li, Target::Up)?;
            let act = (candle_nn::ops::silu(&g)? * u)?;
            x = (x + block.down.forward(&act, adapters, li, Target::Down)?)?;
        }
        Ok(x)
    }

    /// Causal GQA attention of one sequence's new rows against its cache (after appending to it).
    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut LayerCache,
        start: usize,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (n, kvh, hd, group) = (
            q.dim(0)?,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.num_heads / cfg.num_kv_heads,
        );
        // The cache holds f16-precision values, as llama.cpp's does. New rows `[kvh, n, hd]` go after
        // the cached ones in the device mirror; attention reads `[kvh, total, hd]`.
        let k = self.attn_round(&k.transpose(0, 1)?)?;
        let v = self.attn_round(&v.transpose(0, 1)?)?;
        let d = cache.dev.as_ref().ok_or_else(|| no_mirror(start))?;
        let with_cached = |buf: &Tensor, new: &Tensor| -> Result<Tensor> {
            Ok(if start == 0 {
                new.clone()
            } else {
                Tensor::cat(&[&buf.narrow(1, 0, start)?, new], 1)?.contiguous()?
            })
        };
        let (k_all, v_all) = (with_cached(&d.k, &k)?, with_cached(&d.v, &v)?);
        cache.write_device(&k.detach(), &v.detach(), start)?;
        let total = start + n;
        // [heads, n, hd] → [kv_heads, group·n, hd]: the heads sharing a kv head become rows.
        let q = self
            .attn_round(&q.transpose(0, 1)?)?
            .reshape((kvh, group * n, hd))?;
        let scores = (q.matmul(&k_all.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = if n > 1 {
            let mask: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j > start + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (n, total), &self.device)?;
            scores
                .reshape((kvh, group, n, total))?
                .broadcast_add(&mask)?
                .reshape((kvh, group * n, total))?
        } else {
            scores
        };
        let out = self.attn_probs(&scores)?.matmul(&v_all)?; // [kvh, group·n, hd]
        Ok(out
            .reshape((cfg.num_heads, n, hd))?
            .transpose(0, 1)?
            .reshape((n, cfg.num_heads * hd))?)
    }

    /// A decode step's attention for the whole batch at once: `q [b, heads, hd]`, `k`/`v`
    /// `[b, kv_heads, hd]`, one new row per sequence. Each sequence's cached rows are read from its
    /// device mirror padded to the batch's longest cache (the padding masked), its new row last;
    /// the new rows are then written into the mirrors.
    fn attend_decode(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seqs: &mut [SeqInput],
        li: usize,
        batch: &DecodeBatch,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, kvh, hd, group) = (
            seqs.len(),
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.num_heads / cfg.num_kv_heads,
        );
        let k = self.attn_round(k)?;
        let v = self.attn_round(v)?;
        let (k_all, v_all) = if batch.longest == 0 {
            (k.unsqueeze(2)?, v.unsqueeze(2)?)
        } else {
            let mut ks = Vec::with_capacity(b);
            let mut vs = Vec::with_capacity(b);
            for s in seqs.iter() {
                let d = s.cache.layers[li]
                    .dev
                    .as_ref()
                    .ok_or_else(|| no_mirror(s.cache.pos))?;
                ks.push(d.k.narrow(1, 0, batch.longest)?);
                vs.push(d.v.narrow(1, 0, batch.longest)?);
            }
            (
                Tensor::cat(&[&Tensor::stack(&ks, 0)?, &k.unsqueeze(2)?], 2)?,
                Tensor::cat(&[&Tensor::stack(&vs, 0)?, &v.unsqueeze(2)?], 2)?,
            )
        }; // [b, kvh, longest + 1, hd]
        let q = self.attn_round(q)?.reshape((b, kvh, group, hd))?;
        let scores = (q.matmul(&k_all.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let scores = match &batch.mask {
            Some(mask) => scores.broadcast_add(mask)?,
            None => scores,
        };
        let out = self.attn_probs(&scores)?.matmul(&v_all)?; // [b, kvh, group, hd]
        let (k, v) = (k.detach(), v.detach());
        for (i, s) in seqs.iter_mut().enumerate() {
            let row =
                |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(0, i, 1)?.reshape((kvh, 1, hd))?) };
            let at = s.cache.pos;
            s.cache.layers[li].write_device(&row(&k)?, &row(&v)?, at)?;
        }
        Ok(out.reshape((b, cfg.num_heads * hd))?)
    }

    /// Softmax over the last dimension, rounded to f16 precision when `f16_attention` is on.
    fn attn_probs(&self, scores: &Tensor) -> Result<Tensor> {
        let probs = if self.differentiable {
            candle_nn::ops::softmax(scores, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(scores)?
        };
        self.attn_round(&probs)
    }

    /// Contiguous copy, rounded to f16 precision when `f16_attention` is on.
    fn attn_round(&self, t: &Tensor) -> Result<Tensor> {
        Ok(if self.f16_attention {
            t.to_dtype(DType::F16)?.to_dtype(DType::F32)?
        } else {
            t.contiguous()?
        })
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps as f32;
        Ok(if self.differentiable {
            candle_nn::ops::rms_norm_slow(x, w, eps)?
        } else {
            candle_nn::ops::rms_norm(x, w, eps)?
        })
    }

    /// Half-split rotary embedding on `[1, n, heads, hd]` with per-row `cos`/`sin` `[n, hd/2]`.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        if self.differentiable {
            let x = x.transpose(1, 2)?.contiguous()?;
            let y = candle_nn::rotary_emb::rope_slow(&x, cos, sin)?;
            return Ok(y.transpose(1, 2)?);
        }
        Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, cos, sin)?)
    }

    /// Convenience for one sequence: logits of every position of `tokens` from a fresh cache.
    pub fn score(&self, tokens: &[u32], adapter: Option<&LoraAdapter>) -> Result<Tensor> {
        let mut cache = self.new_cache();
        let mut seq = [SeqInput {
            tokens,
            cache: &mut cache,
            adapter,
        }];
        Ok(self.forward(&mut seq, Logits::All)?.remove(0))
    }
}

/// What a decode step's batched attention needs for every layer: the longest cache in the batch and,
/// where the caches differ in length, the mask hiding each shorter one's padding.
struct DecodeBatch {
    longest: usize,
    /// `[b, 1, 1, longest + 1]`: 0 for a sequence's cached rows and its new row, −∞ for padding.
    mask: Option<Tensor>,
}

impl DecodeBatch {
    fn new(seqs: &[SeqInput], device: &Device) -> Result<Self> {
        let longest = seqs.iter().map(|s| s.cache.pos).max().unwrap_or(0);
        let mask = if seqs.iter().all(|s| s.cache.pos == longest) {
            None
        } else {
            let rows: Vec<f32> = seqs
                .iter()
                .flat_map(|s| {
                    (0..=longest).map(move |j| {
                        if j < s.cache.pos || j == longest {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(
                rows,
                (seqs.len(), 1, 1, longest + 1),
                device,
            )?)
        };
        Ok(Self { longest, mask })
    }
}

fn no_mirror(pos: usize) -> ModelError {
    ModelError::Generation(format!(
        "KV cache of a sequence at position {pos} has no device copy (internal error)"
    ))
}

/// Is this architecture's attention biased on q/k/v?
pub(crate) fn has_qkv_bias(arch: Arch) -> bool {
    arch == Arch::Qwen2
}
