//! The trainable adapter: one `(A, B)` pair of candle [`Var`]s per (layer, target), initialised as
//! PEFT does (A Kaiming-uniform, B zero, so training starts from the base model exactly), and
//! converted to and from the runtime's [`LoraAdapter`] (for generation and PEFT files).

use crate::error::Result;
use crate::rng::SplitMix64;
use candle_core::{DType, Device, Tensor, Var};
use openledger_model::{LoraAdapter, LoraConfig, LoraPair, Target};

/// Trainable LoRA weights.
pub struct TrainableAdapter {
    pub config: LoraConfig,
    /// In `(layer, target)` order.
    pub pairs: Vec<((usize, Target), Var, Var)>,
}

impl TrainableAdapter {
    /// Fresh weights for a model with `layers` layers whose target `t` is `dims(t) = (out, in)`.
    /// A is uniform in ±1/√in (PEFT's `kaiming_uniform_(a=√5)`), drawn from the job's seed.
    pub fn init(
        config: LoraConfig,
        dims: &dyn Fn(Target) -> (usize, usize),
        layers: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let r = config.r;
        let mut pairs = Vec::new();
        for layer in 0..layers {
            for &t in &config.targets {
                let (out_f, in_f) = dims(t);
                let mut rng = SplitMix64::derive(seed, "lora_a", &[layer as u64, t as u64]);
                let bound = 1.0 / (in_f as f32).sqrt();
                let a: Vec<f32> = (0..r * in_f)
                    .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (r, in_f), device)?)?;
                let b = Var::zeros((out_f, r), DType::F32, device)?;
                pairs.push(((layer, t), a, b));
            }
        }
        Ok(Self { config, pairs })
    }

    /// Trainable copies of an adapter's weights (a checkpoint's).
    pub fn from_adapter(adapter: &LoraAdapter, device: &Device) -> Result<Self> {
        let mut pairs = Vec::new();
        for (layer, t, p) in adapter.pairs() {
            let var = |x: &Tensor| -> Result<Var> {
                let x = x.to_device(device)?.to_dtype(DType::F32)?;
                Ok(Var::from_tensor(&Tensor::from_vec(
                    x.flatten_all()?.to_vec1::<f32>()?,
                    x.dims(),
                    device,
                )?)?)
            };
            pairs.push(((layer, t), var(&p.a)?, var(&p.b)?));
        }
        Ok(Self {
            config: adapter.config.clone(),
            pairs,
        })
    }

    /// A runtime adapter holding copies of the current weights.
    pub fn to_adapter(&self) -> Result<LoraAdapter> {
        let mut out = LoraAdapter::empty(self.config.clone());
        for ((layer, t), a, b) in &self.pairs {
            let copy = |v: &Var| -> Result<Tensor> {
                let x = v.as_tensor();
                Ok(Tensor::from_vec(
                    x.flatten_all()?.to_vec1::<f32>()?,
                    x.dims(),
                    x.device(),
                )?)
            };
            out.insert(
                *layer,
                *t,
                LoraPair {
                    a: copy(a)?,
                    b: copy(b)?,
                },
            )?;
        }
        Ok(out)
    }

    /// Every variable: A then B of each pair, in order (the optimizer's order).
    pub fn vars(&self) -> Vec<&Var> {
        self.pairs.iter().flat_map(|(_, a, b)| [a, b]).collect()
    }

    pub fn num_params(&self) -> usize {
        self.vars().iter().map(|v| v.elem_count()).sum()
    }
}
