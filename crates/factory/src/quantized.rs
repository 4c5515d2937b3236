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
//! are reproducible.
//!
//! **bf16** (when training precision is bf16, see [`crate::bf16`]): the weight is instead
//! dequantized, rounded to bf16 and packed as [`PackedBf16`] (groups of rows in parallel, no f32
//! copy of the whole weight), and multiplied by the bf16 kernels, as bitsandbytes dequantizes per
//! matmul: the weight stays quantized in memory and the products are those of the bf16 LoRA path
//! with the dequantized weight (the forward's activations are rounded to bf16, not quantized to 8
//! bits). A projection whose f32 copy fits [`TILE_BYTES`] is packed per product into one scratch
//! shared by all of them (about the largest projection's bf16 size); a larger weight (the LM head,
//! used by every chunk of tokens of the loss) is packed once per pass of the loss and dropped when
//! the pass ends ([`FrozenWeight::release`]), so its bf16 copy (half its f32 size) exists only
//! while the loss is computed.
//!
//! The gradient treats the activation quantization as the identity (the usual
//! straight-through estimate): it is the gradient of `x·W̃ᵀ` with `W̃` the dequantized weight.

use crate::bf16::{PackedBf16, Precision};
use crate::error::{Error, Result};
use crate::ops::FrozenWeight;
use candle_core::{Device, Storage, Tensor};
use openledger_model::linear::Weight;
use openledger_model::quant::formats::QK;
use openledger_model::quant::{QFormat, QWeight};
use openledger_model::{Llama, Target};
use rayon::prelude::*;
use std::sync::Mutex;

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
#[derive(Debug)]
pub struct QuantizedWeight {
    w: QWeight,
    /// Whether the products dequantize into bf16 (see the module doc).
    bf16: bool,
    /// A weight larger than [`TILE_BYTES`] in bf16: its packed copy, made by the first product
    /// of a pass and dropped by [`FrozenWeight::release`].
    held: Mutex<Option<PackedBf16>>,
}

impl Clone for QuantizedWeight {
    fn clone(&self) -> Self {
        Self {
            w: self.w.clone(),
            bf16: self.bf16,
            held: Mutex::new(None),
        }
    }
}

/// The scratch the bf16 products of the weights up to [`TILE_BYTES`] dequantize into, shared by
/// all of them (products run one at a time; a product that finds it busy uses a fresh one).
static SCRATCH: Mutex<Option<PackedBf16>> = Mutex::new(None);

impl QuantizedWeight {
    /// Products in f32 (the runtime's quantized kernels forward, f32 tiles backward).
    pub fn new(w: QWeight) -> Self {
        Self::with_precision(w, Precision::F32)
    }

    /// Products in `precision`: bf16 dequantizes the weight into a bf16 packed scratch (per
    /// product, or per pass for a weight above [`TILE_BYTES`]).
    pub fn with_precision(w: QWeight, precision: Precision) -> Self {
        let bf16 = precision == Precision::Bf16 && crate::bf16::available();
        Self {
            w,
            bf16,
            held: Mutex::new(None),
        }
    }

    /// Whether the products run in bf16.
    pub fn is_bf16(&self) -> bool {
        self.bf16
    }

    /// Whether the weight's f32 copy is larger than [`TILE_BYTES`].
    fn large(&self) -> bool {
        self.w.rows() * self.w.cols() * std::mem::size_of::<f32>() > TILE_BYTES
    }

    /// Packs the weight, dequantized and rounded to bf16, into `p`.
    fn pack_into(&self, p: &mut PackedBf16) -> candle_core::Result<()> {
        let blocks = self.w.cols() / QK;
        p.repack_with(self.w.rows(), self.w.cols(), |rows, dst| {
            self.w.dequantize_tile(rows, 0..blocks, dst)
        })
    }

    /// Runs `f` on the weight dequantized, rounded to bf16 and packed: into the shared scratch
    /// (a weight up to [`TILE_BYTES`]) or this weight's held copy (a larger one, kept until
    /// [`FrozenWeight::release`]).
    fn with_packed<R>(
        &self,
        f: impl FnOnce(&PackedBf16) -> candle_core::Result<R>,
    ) -> candle_core::Result<R> {
        if self.large() {
            // Busy (a product of this weight running at once, e.g. on this very thread from a
            // task it picked up) or poisoned: this product packs its own copy.
            let Ok(mut held) = self.held.try_lock() else {
                let mut p = PackedBf16::empty();
                self.pack_into(&mut p)?;
                return f(&p);
            };
            if held.is_none() {
                let mut p = PackedBf16::empty();
                self.pack_into(&mut p)?;
                *held = Some(p);
            }
            return match held.as_ref() {
                Some(p) => f(p),
                None => candle_core::bail!("bf16 weight: not packed"),
            };
        }
        let mut fresh = None;
        let mut guard = SCRATCH.try_lock().ok();
        let slot = match guard.as_deref_mut() {
            Some(slot) => slot,
            None => &mut fresh,
        };
        let p = slot.get_or_insert_with(PackedBf16::empty);
        self.pack_into(p)?;
        f(p)
    }

    /// Rows `rows` of `W` into `dst` (`rows.len()·in` values), dequantized in parallel.
    fn dequantize_into(
        &self,
        rows: std::ops::Range<usize>,
        dst: &mut [f32],
    ) -> candle_core::Result<()> {
        let (cols, blocks) = (self.w.cols(), self.w.cols() / QK);
        dst.par_chunks_mut(ROWS_PER_TASK * cols)
            .enumerate()
            .try_for_each(|(i, dst)| {
                let first = rows.start + i * ROWS_PER_TASK;
                self.w
                    .dequantize_tile(first..first + dst.len() / cols, 0..blocks, dst)
            })
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
        let cols = self.w.cols();
        let mut tile = vec![0f32; rows.len() * cols];
        let len = rows.len();
        self.dequantize_into(rows, &mut tile)?;
        Tensor::from_vec(tile, (len, cols), &Device::Cpu)
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
        with_values(x, |v| self.forward_slice(v, n))
    }

    fn forward_slice(&self, x: &[f32], n: usize) -> candle_core::Result<Vec<f32>> {
        if x.len() != n * self.w.cols() {
            candle_core::bail!(
                "quantized forward: {} values are not {n} rows of {}",
                x.len(),
                self.w.cols()
            );
        }
        if self.bf16 {
            return self.with_packed(|p| p.forward(x, n));
        }
        self.w.matmul_rows(x, n)
    }

    fn forward_into(&self, x: &[f32], n: usize, y: &mut [f32]) -> candle_core::Result<()> {
        if self.bf16 {
            return self.with_packed(|p| p.forward_into(x, n, y));
        }
        let v = self.forward_slice(x, n)?;
        if y.len() != v.len() {
            candle_core::bail!("quantized forward: {} values for {}", v.len(), y.len());
        }
        y.copy_from_slice(&v);
        Ok(())
    }

    fn backward(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        if self.bf16 {
            let (n, _) = g.dims2()?;
            return Tensor::from_vec(self.backward_vec(g)?, (n, self.w.cols()), g.device());
        }
        self.backward_in_tiles(g, self.tile_rows())
    }

    fn backward_vec(&self, g: &Tensor) -> candle_core::Result<Vec<f32>> {
        if self.bf16 {
            let (n, _) = g.dims2()?;
            return with_values(g, |v| self.with_packed(|p| p.backward(v, n)));
        }
        self.backward(g)?.flatten_all()?.to_vec1()
    }

    fn release(&self) {
        if let Ok(mut held) = self.held.lock() {
            *held = None;
        }
    }

    fn backward_into(&self, g: &[f32], n: usize, dx: &mut [f32]) -> candle_core::Result<()> {
        if self.bf16 {
            return self.with_packed(|p| p.backward_into(g, n, dx));
        }
        let g = Tensor::from_slice(g, (n, self.w.rows()), &Device::Cpu)?;
        let v = self.backward_vec(&g)?;
        if dx.len() != v.len() {
            candle_core::bail!("quantized backward: {} values for {}", v.len(), dx.len());
        }
        dx.copy_from_slice(&v);
        Ok(())
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

    /// In bf16 the products are those of the dequantized weight within bf16 rounding (each
    /// operand's relative error ≤ 2⁻⁸, sums in f32) on ragged shapes (odd rows, token counts
    /// that are not multiples of the kernels' tiles), through every entry point, bit-identical
    /// from call to call and whichever weight used the shared scratch before; a weight above
    /// [`TILE_BYTES`] holds its bf16 copy only until released.
    #[test]
    fn bf16_products_match_the_dequantized_float_products() {
        let dev = Device::Cpu;
        if !crate::bf16::available() {
            let w = QWeight::quantize(QFormat::Q4_1, 8, 32, &values(8 * 32, 7)).unwrap();
            assert!(!QuantizedWeight::with_precision(w, Precision::Bf16).is_bf16());
            eprintln!("skipped: this CPU runs no bf16 products");
            return;
        }
        let mut ws = Vec::new();
        for format in [QFormat::Q4_1, QFormat::Q4_0, QFormat::Q8_0] {
            for (rows, cols) in [(72, 96), (37, 64), (70, 160), (1, 32), (9001, 128)] {
                let w = QWeight::quantize(format, rows, cols, &values(rows * cols, 9)).unwrap();
                ws.push(QuantizedWeight::with_precision(w, Precision::Bf16));
            }
        }
        // Twice over, so each weight follows a different one in the scratch the second time.
        for (round, w) in ws.iter().chain(ws.iter().rev()).enumerate() {
            assert!(w.is_bf16());
            let (rows, cols) = w.dims();
            let deq = w.w.dequantize(&dev).unwrap();
            for n in [1, 5, 37] {
                let x = Tensor::from_vec(values(n * cols, 5 + n as u64), (n, cols), &dev).unwrap();
                let g = Tensor::from_vec(values(n * rows, 6 + n as u64), (n, rows), &dev).unwrap();
                let check = |got: &Tensor, want: &Tensor, bound: &Tensor, what: &str| {
                    let err = (got - want).unwrap().abs().unwrap();
                    let over = (err - (bound * 8e-3).unwrap()).unwrap();
                    let worst: f32 = over.max_all().unwrap().to_scalar().unwrap();
                    assert!(
                        worst <= 1e-6,
                        "{:?} {rows}x{cols}, n {n}, {what}: {worst} over (round {round})",
                        w.w.format()
                    );
                };
                let y = w.forward(&x).unwrap();
                // Bit for bit the bf16 product of the dequantized weight packed whole.
                let whole = crate::bf16::Bf16Weight::new(&deq).unwrap();
                assert_eq!(
                    whole.forward_vec(&x).unwrap(),
                    y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
                let want = x.matmul(&deq.t().unwrap()).unwrap();
                let bound = x
                    .abs()
                    .unwrap()
                    .matmul(&deq.abs().unwrap().t().unwrap())
                    .unwrap();
                check(&y, &want, &bound, "x·Wᵀ");
                let dx = w.backward(&g).unwrap();
                assert_eq!(
                    whole.backward_vec(&g).unwrap(),
                    dx.flatten_all().unwrap().to_vec1::<f32>().unwrap()
                );
                let want = g.matmul(&deq).unwrap();
                let bound = g.abs().unwrap().matmul(&deq.abs().unwrap()).unwrap();
                check(&dx, &want, &bound, "g·W");
                // The slice entry points give the same values, and so does a second call.
                let xv = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut yi = vec![f32::NAN; n * rows];
                w.forward_into(&xv, n, &mut yi).unwrap();
                assert_eq!(yi, y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert_eq!(w.forward_slice(&xv, n).unwrap(), yi);
                let mut di = vec![f32::NAN; n * cols];
                w.backward_into(&gv, n, &mut di).unwrap();
                assert_eq!(di, dx.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                assert_eq!(w.backward_vec(&g).unwrap(), di);
                assert_eq!(w.held.lock().unwrap().is_some(), w.large());
                w.release();
                assert!(w.held.lock().unwrap().is_none());
            }
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
