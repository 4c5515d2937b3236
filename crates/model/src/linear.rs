//! Base projections: a float or quantized weight, an optional bias, and LoRA on top.

use crate::error::{ModelError, Result};
use crate::lora::{LoraPair, RowAdapters, Target};
use crate::quant::QWeight;
use candle_core::{Device, Tensor};

/// A `[out, in]` weight matrix, float (trainable, mergeable) or quantized (served from GGUF bytes).
#[derive(Debug, Clone)]
pub enum Weight {
    Float(Tensor),
    Quant(QWeight),
}

impl Weight {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::Float(t) => t.dims2().unwrap_or((0, 0)),
            Weight::Quant(q) => (q.rows(), q.cols()),
        }
    }

    /// `x · Wᵀ` over the last dim of `x`.
    pub fn matmul_t(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Weight::Float(w) => x.broadcast_matmul(&w.t()?)?,
            Weight::Quant(q) => q.forward(x)?,
        })
    }

    /// Rows by index: the token embedding lookup, `[ids.len(), in]`.
    pub fn rows(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        match self {
            Weight::Float(w) => {
                let (vocab, _) = w.dims2()?;
                if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
                    return Err(ModelError::Generation(format!(
                        "token id {bad} is outside the vocabulary ({vocab})"
                    )));
                }
                Ok(w.index_select(&Tensor::new(ids, device)?, 0)?)
            }
            Weight::Quant(q) => Ok(q.gather_rows(ids, device)?),
        }
    }

    /// The weight as f32 (dequantizing if needed).
    pub fn to_float(&self, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Weight::Float(t) => t.clone(),
            Weight::Quant(q) => q.dequantize(device)?,
        })
    }

    /// Bytes the weight occupies.
    pub fn size_bytes(&self) -> usize {
        match self {
            Weight::Float(t) => t.elem_count() * t.dtype().size_in_bytes(),
            Weight::Quant(q) => q.size_bytes(),
        }
    }
}

/// One projection of a transformer layer: `y = xWᵀ + b (+ LoRA)`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Weight,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(weight: Weight, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// The base product plus, for each adapter group in `adapters`, its low-rank update.
    pub fn forward(
        &self,
        x: &Tensor,
        adapters: &RowAdapters,
        layer: usize,
        target: Target,
    ) -> Result<Tensor> {
        let mut y = self.weight.matmul_t(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if adapters.is_empty() {
            return Ok(y);
        }
        adapters.apply(x, y, layer, target)
    }

    /// Adds (`sign` = 1) or removes (`sign` = −1) `scale·B·A` into a float weight.
    pub fn merge(&mut self, pair: &LoraPair, scale: f64, sign: f64) -> Result<()> {
        let Weight::Float(w) = &self.weight else {
            return Err(ModelError::Adapter(
                "merging needs a float base weight; this one is quantized (load safetensors, or dequantize the model first)"
                    .into(),
            ));
        };
        let delta = pair.delta(scale * sign)?;
        if delta.dims() != w.dims() {
            return Err(ModelError::Adapter(format!(
                "adapter update {:?} does not fit weight {:?}",
                delta.dims(),
                w.dims()
            )));
        }
        self.weight = Weight::Float((w + delta.to_dtype(w.dtype())?)?);
        Ok(())
    }
}
