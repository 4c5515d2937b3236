//! QLoRA's frozen base: a quantized weight (GGUF Q4_0 / Q4_1 / Q8_0, as the runtime serves it) as a
//! [`FrozenWeight`], and the preparation of a model whose projections stay quantized for training.
//!
//! **Forward** (`x·Wᵀ`) runs the runtime's quantized kernels, the very ones the serving path runs:
//! each row of `x` is quantized to 8 bits per block of 32 values (an f16 scale per block, rounded
//! as llama.cpp rounds) and dotted in integers with the 4- or 8-bit weight blocks, accumulated in
//! f32. So the forward has the serving path's precision (weights at their GGUF precision,
//! activations at 8 bits), and an adapter is trained against exactly what will serve it.
//!
//! **Backward** (`g·W`) keeps `g` in f32 and multiplies it by the weight dequantized one tile of
//! rows at a time: `Σ_tiles g[:, tile]·W[tile, :]`, tiles of at most [`TILE_BYTES`] of f32, each
//! dequantized in parallel, multiplied by candle's GEMM and added in row order. At most one tile
//! exists at a time (the f32 copy of a weight above [`TILE_BYTES`] never exists whole), and the
//! tiles, their products and the order of the sums do not depend on thread scheduling, so results
//! are reproducible. The gradient treats the activation quantization as the identity (the usual
//! straight-through estimate): it is the gradient of `x·W̃ᵀ` with `W̃` the dequantized weight.

use crate::error::{Error, Result};
use crate::ops::FrozenWeight;
use candle_core::{Device, Storage, Tensor};
use openledger_model::linear::Weight;
use openledger_model::quant::formats::QK;
use openledger_model::quant::{QFormat, QWeight};
use openledger_model::{Llama, Target};
use rayon::prelude::*;

/// Largest f32 tile of a weight the backward dequantizes at once. A weight this small or smaller
/// is one tile (splitting its product costs more than the tile's memory: SmolLM2's largest
/// projection, 576×1536, is 3.5 MB); a larger one never exists whole in f32 (SmolLM2's tied LM
/// head, 113 MB as f32, goes through in 48 tiles of 1024 rows).
pub const TILE_BYTES: usize = 4 << 20;
/// Most rows in a backward tile.
const MAX_TILE_ROWS: usize = 1024;
/// Rows dequantized per parallel task (a multiple of 8, the packed layout's group).
const ROWS_PER_TASK: usize = 64;

/// A quantized `[out, in]` weight as a frozen training weight.
#[derive(Debug, Clone)]
pub struct QuantizedWeight {
    w: QWeight,
}

impl QuantizedWeight {
    pub fn new(w: QWeight) -> Self {
        Self { w }
    }

    pub fn weight(&self) -> &QWeight {
        &self.w
    }

    /// Rows per backward tile: a multiple of 8 whose f32 copy fits [`TILE_BYTES`], at most
    /// [`MAX_TILE_ROWS`].
    fn tile_rows(&self) -> usize {
        let per_row = self.w.cols() * std::mem::size_of::<f32>();
        (TILE_BYTES / per_row.max(1)).clamp(8, MAX_TILE_ROWS) / 8 * 8
    }

    /// `g·W` over tiles of `step` rows: `Σ g[:, tile]·W[tile, :]`, added in row order.
    fn backward_in_tiles(&self, g: &Tensor, step: usize) -> candle_core::Result<Tensor> {
        let (n, out) = g.dims2()?;
        let (rows, cols) = self.dims();
        if out != rows {
            candle_core::bail!(
                "quantized backward: gradient has {out} features, the weight {rows}"
            );
        }
        if step >= rows {
            return g.matmul(&self.tile(0..rows)?);
        }
        let g = g.contiguous()?;
        let mut result: Vec<f32> = Vec::new();
        for r0 in (0..rows).step_by(step) {
            let r1 = (r0 + step).min(rows);
            let gt = g.narrow(1, r0, r1 - r0)?.contiguous()?;
            let part = gt.matmul(&self.tile(r0..r1)?)?;
            with_values(&part, |p| {
                if result.is_empty() {
                    result.extend_from_slice(p);
                } else {
                    result.iter_mut().zip(p).for_each(|(acc, p)| *acc += p);
                }
                Ok(())
            })?;
        }
        Tensor::from_vec(result, (n, cols), g.device())
    }

    /// Rows `rows` of `W` as an f32 `[rows.len(), in]` tensor, dequantized in parallel.
    fn tile(&self, rows: std::ops::Range<usize>) -> candle_core::Result<Tensor> {
        let (cols, blocks) = (self.w.cols(), self.w.cols() / QK);
        let mut tile = vec![0f32; rows.len() * cols];
        tile.par_chunks_mut(ROWS_PER_TASK * cols)
            .enumerate()
            .try_for_each(|(i, dst)| {
                let first = rows.start + i * ROWS_PER_TASK;
                self.w
                    .dequantize_tile(first..first + dst.len() / cols, 0..blocks, dst)
            })?;
        Tensor::from_vec(tile, (rows.len(), cols), &Device::Cpu)
    }
}

/// Runs `f` on the f32 values of a CPU tensor (made contiguous first if needed); the
/// products of the frozen CPU weights (quantized here, bf16 in [`crate::bf16`]) read their
/// inputs through it.
pub(crate) fn with_values<R>(
    t: &Tensor,
    f: impl FnOnce(&[f32]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("a quantized or bf16 frozen weight computes on the CPU only");
    };
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("input is not contiguous".into()))?;
    f(&cpu.as_slice::<f32>()?[a..b])
}

impl FrozenWeight for QuantizedWeight {
    fn dims(&self) -> (usize, usize) {
        (self.w.rows(), self.w.cols())
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        Tensor::from_vec(self.forward_vec(x)?, (n, self.w.rows()), x.device())
    }

    fn forward_vec(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (n, cols) = x.dims2()?;
        if cols != self.w.cols() {
            candle_core::bail!(
                "quantized forward: input has {cols} features, the weight {}",
                self.w.cols()
            );
        }
        with_values(x, |v| self.w.matmul_rows(v, n))
    }

    fn forward_slice(&self, x: &[f32], n: usize) -> candle_core::Result<Vec<f32>> {
        if x.len() != n * self.w.cols() {
            candle_core::bail!(
                "quantized forward: {} values are not {n} rows of {}",
                x.len(),
                self.w.cols()
            );
        }
        self.w.matmul_rows(x, n)
    }

    fn backward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        self.backward_in_tiles(g, self.tile_rows())
    }
}

/// The block format of a float weight QLoRA quantizes: 4 bits (Q4_1: a scale and a minimum per
/// block of 32) or 8 bits (Q8_0).
pub fn format_for_bits(bits: u32) -> Result<QFormat> {
    match bits {
        4 => Ok(QFormat::Q4_1),
        8 => Ok(QFormat::Q8_0),
        _ => Err(Error::Invalid(format!(
            "quantization_bit is {bits}; use 4 (Q4_1) or 8 (Q8_0)"
        ))),
    }
}

/// A float weight quantized to `format` (`what` names it in errors).
fn quantize(t: &Tensor, format: QFormat, what: &str) -> Result<QWeight> {
    let (rows, cols) = t.dims2()?;
    let values: Vec<f32> = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    QWeight::quantize(format, rows, cols, &values).map_err(|e| {
        Error::Invalid(format!(
            "method qlora quantizes {what} ({rows}x{cols}) to {}: {e}; use method = \"lora\" for this model",
            format.name()
        ))
    })
}

/// Prepares a loaded model for QLoRA: projections already quantized (a GGUF file's Q4_0, Q4_1,
/// Q8_0) stay as they are; float ones (safetensors, GGUF F16/F32 and the formats the loader
/// dequantizes) are quantized to `format`. The embedding and the LM head are quantized too when
/// float and their rows are whole blocks (a tied head stays one weight); otherwise they stay float.
pub fn quantize_base(model: &mut Llama, format: QFormat) -> Result<()> {
    for (li, block) in model.blocks.iter_mut().enumerate() {
        for t in Target::ALL {
            let l = match t {
                Target::Q => &mut block.q,
                Target::K => &mut block.k,
                Target::V => &mut block.v,
                Target::O => &mut block.o,
                Target::Gate => &mut block.gate,
                Target::Up => &mut block.up,
                Target::Down => &mut block.down,
            };
            if let Weight::Float(w) = &l.weight {
                let what = format!("layer {li} {}", t.peft_name());
                l.weight = Weight::Quant(quantize(w, format, &what)?);
            }
        }
    }
    let tied = match (&model.embed, &model.lm_head) {
        (Weight::Float(e), Weight::Float(h)) => e.id() == h.id(),
        _ => false,
    };
    let whole_blocks = |w: &Tensor| w.dims2().is_ok_and(|(_, c)| c % QK == 0);
    if let Weight::Float(e) = &model.embed {
        if whole_blocks(e) {
            model.embed = Weight::Quant(quantize(e, format, "the token embedding")?);
        }
    }
    if tied {
        model.lm_head = model.embed.clone();
    } else if let Weight::Float(h) = &model.lm_head {
        if whole_blocks(h) {
            model.lm_head = Weight::Quant(quantize(h, format, "the LM head")?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::SplitMix64::new(seed);
        (0..n).map(|_| r.next_f32() * 2.0 - 1.0).collect()
    }

    fn max_abs(t: &Tensor) -> f32 {
        t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
    }

    /// Shapes with packed (rows a multiple of 8) and plain GGUF rows, one above [`TILE_BYTES`].
    fn weights() -> Vec<QuantizedWeight> {
        let mut out = Vec::new();
        for format in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            for (rows, cols) in [(72, 96), (70, 64), (9000, 320)] {
                let w = QWeight::quantize(format, rows, cols, &values(rows * cols, 7)).unwrap();
                out.push(QuantizedWeight::new(w));
            }
        }
        out
    }

    #[test]
    fn tiles_are_the_dequantized_matrix() {
        for w in weights() {
            let (rows, cols) = w.dims();
            let full: Vec<Vec<f32>> = w.w.dequantize(&Device::Cpu).unwrap().to_vec2().unwrap();
            // Whole groups of eight rows (read group by group when packed) and a ragged end.
            for (rs, blocks) in [(8..24, 1..(cols / QK).min(3)), (rows - 5..rows, 1..2)] {
                let width = blocks.len() * QK;
                let mut tile = vec![0f32; rs.len() * width];
                w.w.dequantize_tile(rs.clone(), blocks.clone(), &mut tile)
                    .unwrap();
                for (i, row) in tile.chunks(width).enumerate() {
                    let c = blocks.start * QK;
                    assert_eq!(row, &full[rs.start + i][c..c + width]);
                }
            }
            assert!(w
                .w
                .dequantize_tile(0..1, 0..cols / QK + 1, &mut [])
                .is_err());
        }
    }

    /// The backward `g·W` agrees with the float product by the dequantized weight (only the
    /// summation order may differ), is bit-identical from call to call, and reaches a tracked
    /// input through `frozen_linear`.
    #[test]
    fn backward_matches_the_dequantized_float_product() {
        let dev = Device::Cpu;
        for w in weights() {
            let (rows, cols) = w.dims();
            let g = Tensor::from_vec(values(5 * rows, 3), (5, rows), &dev).unwrap();
            let want = g.matmul(&w.w.dequantize(&dev).unwrap()).unwrap();
            // As tiled for its size (the largest in 9 tiles), and in tiles of 16 and 40 rows (the
            // last one short).
            for step in [w.tile_rows(), 16, 40] {
                let got = w.backward_in_tiles(&g, step).unwrap();
                let err = max_abs(&(&got - &want).unwrap());
                assert!(
                    err <= 1e-5 * max_abs(&want),
                    "{:?} {rows}x{cols} in tiles of {step}: {err}",
                    w.w.format()
                );
                let again = w.backward_in_tiles(&g, step).unwrap();
                assert_eq!(
                    got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    again.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
            }
        }
        let w = std::sync::Arc::new(weights().swap_remove(0));
        let x =
            Var::from_tensor(&Tensor::from_vec(values(3 * 96, 4), (3, 96), &dev).unwrap()).unwrap();
        let y = crate::ops::frozen_linear(x.as_tensor(), w.clone()).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let want = w
            .backward(&Tensor::ones((3, 72), candle_core::DType::F32, &dev).unwrap())
            .unwrap();
        let err = max_abs(&(grads.get(x.as_tensor()).unwrap() - want).unwrap());
        assert_eq!(err, 0.0);
    }

    /// The forward is the runtime's kernel product: close to the float product by the dequantized
    /// weight (activations are quantized to 8 bits), and identical to `QWeight::forward`.
    #[test]
    fn forward_is_the_runtime_kernel_product() {
        let dev = Device::Cpu;
        for w in weights() {
            let (rows, cols) = w.dims();
            let x = Tensor::from_vec(values(6 * cols, 5), (6, cols), &dev).unwrap();
            let got = w.forward(&x).unwrap();
            let runtime = w.w.forward(&x).unwrap();
            assert_eq!(
                got.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                runtime.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
            let want = x
                .matmul(&w.w.dequantize(&dev).unwrap().t().unwrap())
                .unwrap();
            let err = max_abs(&(&got - &want).unwrap());
            assert!(
                err <= 0.02 * max_abs(&want),
                "{:?} {rows}x{cols}: {err}",
                w.w.format()
            );
        }
    }

    #[test]
    fn only_4_and_8_bits_are_offered() {
        assert_eq!(format_for_bits(4).unwrap(), QFormat::Q4_1);
        assert_eq!(format_for_bits(8).unwrap(), QFormat::Q8_0);
        let e = format_for_bits(3).unwrap_err().to_string();
        assert!(
            e.contains("quantization_bit is 3") && e.contains("4 (Q4_1)"),
            "{e}"
        );
    }
}
