//! Training precision of the frozen products, and the bf16 frozen weight.
//!
//! On a CPU with AVX512_BF16 (Zen 4, Sapphire Rapids and later) LoRA training multiplies by the
//! frozen base weights in bf16: each float projection and the LM head are rounded to bf16 and
//! packed once ([`PackedBf16`], half the f32 size), activations and gradients are rounded to bf16
//! per product, and every sum accumulates in f32. That is the precision of mixed-precision bf16
//! training (PyTorch autocast, LLaMA-Factory's `bf16: true`): products lose the low 16 bits of
//! each operand's mantissa (relative error ≤ 2⁻⁸ per operand), sums do not. The LoRA matrices,
//! their products and gradients, the norms, attention, the loss and the optimizer stay f32.
//!
//! `OPENLEDGER_TRAIN_PRECISION` chooses: `auto` (the default: bf16 where the CPU has it, f32
//! elsewhere), `bf16` (refused on a CPU without it), `f32` (the f32 products everywhere). In bf16,
//! QLoRA's quantized projections stay quantized and are dequantized into a reused bf16 scratch per
//! product (see [`crate::quantized`]).
//!
//! `OPENLEDGER_NO_BF16=1` makes this CPU count as one without AVX512_BF16 (the tests use it to run
//! the fallback everywhere: `OPENLEDGER_NO_BF16=1 cargo test -p openledger-factory`).

pub mod pack;

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod gemm;

use crate::error::{Error, Result};
use crate::ops::FrozenWeight;
use crate::quantized::with_values;
use candle_core::Tensor;
pub use pack::{available, PackedBf16};

/// The environment variable that chooses the precision.
pub const PRECISION_ENV: &str = "OPENLEDGER_TRAIN_PRECISION";

/// The precision of the products with frozen float weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    /// bf16 operands, f32 sums (needs AVX512_BF16).
    Bf16,
}

impl Precision {
    /// From [`PRECISION_ENV`]: unset or `auto` → bf16 when [`available`], else f32.
    pub fn from_env() -> Result<Self> {
        Self::parse(std::env::var(PRECISION_ENV).ok().as_deref())
    }

    /// `None` / `auto`, `bf16` or `f32` (case-insensitive).
    pub fn parse(v: Option<&str>) -> Result<Self> {
        match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("auto") => Ok(if available() { Self::Bf16 } else { Self::F32 }),
            Some("f32") | Some("fp32") => Ok(Self::F32),
            Some("bf16") if available() => Ok(Self::Bf16),
            Some("bf16") => Err(Error::Invalid(format!(
                "{PRECISION_ENV}=bf16 needs a CPU with AVX512_BF16, which this one lacks; \
                 unset it or use f32"
            ))),
            Some(other) => Err(Error::Invalid(format!(
                "{PRECISION_ENV} is {other:?}; use auto, bf16 or f32"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

/// A frozen float weight multiplied in bf16 (see the module doc).
#[derive(Debug)]
pub struct Bf16Weight {
    w: PackedBf16,
}

impl Bf16Weight {
    /// Rounds and packs a `[out, in]` float tensor (any float dtype, on the CPU).
    pub fn new(t: &Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        let v: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        Ok(Self {
            w: PackedBf16::pack(&v, rows, cols)?,
        })
    }

    pub fn packed(&self) -> &PackedBf16 {
        &self.w
    }
}

impl FrozenWeight for Bf16Weight {
    fn dims(&self) -> (usize, usize) {
        self.w.dims()
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, _) = x.dims2()?;
        Tensor::from_vec(self.forward_vec(x)?, (n, self.w.dims().0), x.device())
    }

    fn backward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let (n, _) = g.dims2()?;
        Tensor::from_vec(self.backward_vec(g)?, (n, self.w.dims().1), g.device())
    }

    fn forward_vec(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (n, _) = x.dims2()?;
        with_values(x, |v| self.w.forward(v, n))
    }

    fn backward_vec(&self, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (n, _) = g.dims2()?;
        with_values(g, |v| self.w.backward(v, n))
    }

    fn forward_slice(&self, x: &[f32], n: usize) -> candle_core::Result<Vec<f32>> {
        self.w.forward(x, n)
    }

    fn forward_into(&self, x: &[f32], n: usize, y: &mut [f32]) -> candle_core::Result<()> {
        self.w.forward_into(x, n, y)
    }

    fn backward_into(&self, g: &[f32], n: usize, dx: &mut [f32]) -> candle_core::Result<()> {
        self.w.backward_into(g, n, dx)
    }
}
