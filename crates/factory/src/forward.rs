//! The training forward pass: the runtime's Llama (float weights) run as candle ops with backward,
//! LoRA on every targeted projection (with dropout on its input, as PEFT does), and the loss on the
//! target tokens only.
//!
//! The examples of a micro-batch are stacked into one `[tokens, hidden]` matrix with no padding, so
//! every projection is one product for the whole batch; attention runs per example (causal, positions
//! from 0), so packed examples never see each other. Frozen projections go through
//! [`crate::ops::frozen_linear`] (no weight gradients) and the LM head only over the rows that
//! predict a target, fused with the loss ([`crate::ops::linear_cross_entropy`]). The math is the
//! runtime's `Llama::forward` (same rotary tables, GQA, SwiGLU, RMSNorm), in f32 throughout, except
//! that, on CPUs with AVX512_BF16, frozen weights multiply in bf16 with f32 sums ([`crate::bf16`]:
//! float weights packed once, QLoRA's quantized ones dequantized per product, see
//! [`crate::quantized`]), and with `OPENLEDGER_TRAIN_PRECISION=f32` (or without AVX512_BF16)
//! quantized weights multiply through the runtime's quantized kernels and float ones in f32.

use crate::adapter::TrainableAdapter;
use crate::bf16::{Bf16Weight, Precision};
use crate::data::Encoded;
use crate::error::{Error, Result};
use crate::fused;
use crate::ops::{frozen_linear, linear_cross_entropy, lora_linear, FrozenWeight};
use crate::quantized::QuantizedWeight;
use crate::rng::SplitMix64;
use candle_core::{Device, Tensor};
use openledger_model::linear::{Linear, Weight};
use openledger_model::{Llama, Target};
use std::collections::HashMap;
use std::sync::Arc;

/// The base model prepared for training.
pub struct TrainModel {
    pub model: Llama,
    /// Per layer, the frozen weight of each projection in [`Target::ALL`] order.
    frozen: Vec<Vec<Arc<dyn FrozenWeight>>>,
    lm_head: Arc<dyn FrozenWeight>,
    /// The precision of the frozen products (bf16 when any runs in bf16).
    precision: Precision,
    /// Rotary tables `[max_position, head_dim / 2]` row-major, computed as the runtime computes them.
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// The LoRA weights a pass uses: the trainable variables (training) or detached views (evaluation).
pub struct LoraView {
    pairs: HashMap<(usize, Target), (Tensor, Tensor)>,
    scale: f64,
}

impl LoraView {
    /// Tracked: gradients flow to the adapter's variables.
    pub fn training(a: &TrainableAdapter) -> Self {
        Self::build(a, false)
    }

    /// Detached: no graph is recorded.
    pub fn frozen(a: &TrainableAdapter) -> Self {
        Self::build(a, true)
    }

    fn build(a: &TrainableAdapter, detach: bool) -> Self {
        let t = |v: &candle_core::Var| {
            if detach {
                v.as_tensor().detach()
            } else {
                v.as_tensor().clone()
            }
        };
        Self {
            pairs: a.pairs.iter().map(|(k, a, b)| (*k, (t(a), t(b)))).collect(),
            scale: a.config.scale(),
        }
    }
}

/// Dropout on the LoRA inputs: probability `p`, masks drawn from the seed and the micro-batch's
/// global index, so a resumed run draws the same masks.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
    pub seed: u64,
    pub micro_batch: u64,
}

/// What one pass computed.
pub struct PassLoss {
    /// Sum of the target tokens' negative log-likelihoods (a scalar tensor, differentiable).
    pub sum_nll: Tensor,
    pub targets: usize,
    pub tokens: usize,
}

impl TrainModel {
    /// Takes a model with float projections (LoRA: call `Llama::dequantize` first for GGUF) or
    /// quantized ones (QLoRA: see [`crate::quantized::quantize_base`]). The LM head stays quantized
    /// when the projections are (it is dequantized to f32 otherwise, as LoRA always did). Float
    /// frozen weights multiply in the precision [`Precision::from_env`] chooses.
    pub fn new(model: Llama) -> Result<Self> {
        Self::with_precision(model, Precision::from_env()?)
    }

    /// As [`TrainModel::new`], with float frozen weights multiplied in `precision` (bf16 only on
    /// the CPU: other devices keep f32).
    pub fn with_precision(model: Llama, precision: Precision) -> Result<Self> {
        let dev = model.device().clone();
        let precision = if dev.is_cpu() {
            precision
        } else {
            Precision::F32
        };
        if precision == Precision::Bf16 && !crate::bf16::available() {
            return Err(Error::Invalid(
                "bf16 training needs a CPU with AVX512_BF16; use f32".into(),
            ));
        }
        let made_bf16 = std::cell::Cell::new(false);
        let float = |t: &Tensor| -> Result<Arc<dyn FrozenWeight>> {
            Ok(match precision {
                Precision::Bf16 => {
                    made_bf16.set(true);
                    Arc::new(Bf16Weight::new(t)?)
                }
                Precision::F32 => Arc::new(t.clone()),
            })
        };
        let quant = |q: &openledger_model::quant::QWeight| -> Arc<dyn FrozenWeight> {
            let w = QuantizedWeight::with_precision(q.clone(), precision);
            if w.is_bf16() {
                made_bf16.set(true);
            }
            Arc::new(w)
        };
        let frozen_of = |w: &Weight| -> Result<Arc<dyn FrozenWeight>> {
            match w {
                Weight::Float(t) => float(t),
                Weight::Quant(q) => Ok(quant(q)),
            }
        };
        let frozen: Vec<Vec<Arc<dyn FrozenWeight>>> = model
            .blocks
            .iter()
            .map(|b| {
                Target::ALL
                    .iter()
                    .map(|&t| frozen_of(&b.linear(t).weight))
                    .collect()
            })
            .collect::<Result<_>>()?;
        let quantized = model.blocks.iter().any(|b| {
            Target::ALL
                .iter()
                .any(|&t| matches!(b.linear(t).weight, Weight::Quant(_)))
        });
        let lm_head: Arc<dyn FrozenWeight> = match &model.lm_head {
            Weight::Quant(q) if quantized => quant(q),
            w => float(&w.to_float(&dev)?.contiguous()?)?,
        };
        let cfg = &model.config;
        let half = cfg.head_dim / 2;
        let max = cfg.max_position.max(1);
        let theta_scale = (cfg.rope_theta as f32).powf(-2.0 / cfg.head_dim as f32);
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
            frozen,
            lm_head,
            // bf16 when any frozen product runs in bf16 (QLoRA's projections dequantize into bf16
            // per product; its LM head, too large for the scratch, stays f32).
            precision: if made_bf16.get() {
                Precision::Bf16
            } else {
                Precision::F32
            },
            model,
        })
    }

    /// The precision of the frozen products: bf16 when any runs in bf16 (float weights, and
    /// QLoRA's quantized projections dequantized per product), else f32.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn device(&self) -> &Device {
        self.model.device()
    }

    /// The loss of a micro-batch: the summed NLL of every target token.
    pub fn loss(
        &self,
        batch: &[&Encoded],
        lora: &LoraView,
        dropout: Option<Dropout>,
    ) -> Result<PassLoss> {
        let dev = self.device().clone();
        let cfg = &self.model.config;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut segments = Vec::new();
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for e in batch {
            let off = ids.len();
            if e.tokens.len() > cfg.max_position {
                return Err(Error::Invalid(format!(
                    "an example of {} tokens exceeds the model's context of {}",
                    e.tokens.len(),
                    cfg.max_position
                )));
            }
            segments.push((off, e.tokens.len()));
            ids.extend_from_slice(&e.tokens);
            positions.extend(0..e.tokens.len() as u32);
            for i in 1..e.tokens.len() {
                if e.targets[i] {
                    rows.push((off + i - 1) as u32);
                    targets.push(e.tokens[i]);
                }
            }
        }
        let n = ids.len();
        let half = cfg.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for &p in &positions {
            let r = p as usize * half..(p as usize + 1) * half;
            cos.extend_from_slice(&self.cos[r.clone()]);
            sin.extend_from_slice(&self.sin[r]);
        }
        let (h, hd, kvh) = (cfg.num_heads, cfg.head_dim, cfg.num_kv_heads);
        let mut x = self.model.embed.rows(&ids, &dev)?;
        for (li, block) in self.model.blocks.iter().enumerate() {
            let lin = |x: &Tensor, l: &Linear, t: Target| self.linear(x, l, li, t, lora, dropout);
            let a = self.norm(&x, &block.attn_norm)?;
            let q = fused::rope(
                &lin(&a, &block.q, Target::Q)?.reshape((n, h, hd))?,
                &cos,
                &sin,
            )?;
            let k = fused::rope(
                &lin(&a, &block.k, Target::K)?.reshape((n, kvh, hd))?,
                &cos,
                &sin,
            )?;
            let v = lin(&a, &block.v, Target::V)?.reshape((n, kvh, hd))?;
            let attn = fused::attention(&q, &k, &v, &segments)?;
            x = (x + lin(&attn, &block.o, Target::O)?)?;
            let f = self.norm(&x, &block.ffn_norm)?;
            let g = lin(&f, &block.gate, Target::Gate)?;
            let u = lin(&f, &block.up, Target::Up)?;
            x = (x + lin(&fused::swiglu(&g, &u)?, &block.down, Target::Down)?)?;
        }
        let rows_t = Tensor::new(rows.as_slice(), &dev)?;
        let last = self.norm(&x.index_select(&rows_t, 0)?, &self.model.norm)?;
        let nll = linear_cross_entropy(&last, self.lm_head.clone(), &targets)?;
        Ok(PassLoss {
            sum_nll: nll.sum_all()?,
            targets: targets.len(),
            tokens: n,
        })
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(fused::rms_norm(
            x,
            w,
            self.model.config.rms_norm_eps as f32,
        )?)
    }

    /// `x·Wᵀ + b + scale·B·A·dropout(x)`.
    fn linear(
        &self,
        x: &Tensor,
        l: &Linear,
        layer: usize,
        t: Target,
        lora: &LoraView,
        dropout: Option<Dropout>,
    ) -> Result<Tensor> {
        let w = self.frozen[layer][t as usize].clone();
        let Some((a, b)) = lora.pairs.get(&(layer, t)) else {
            let y = frozen_linear(x, w)?;
            return Ok(match &l.bias {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            });
        };
        let mask = dropout.filter(|d| d.p > 0.0).map(|d| {
            let mut rng =
                SplitMix64::derive(d.seed, "dropout", &[d.micro_batch, layer as u64, t as u64]);
            let (p, keep) = (d.p as f32, 1.0 / (1.0 - d.p) as f32);
            (0..x.elem_count())
                .map(|_| if rng.next_f32() < p { 0.0 } else { keep })
                .collect()
        });
        Ok(lora_linear(x, w, l.bias.as_ref(), a, b, lora.scale, mask)?)
    }
}
