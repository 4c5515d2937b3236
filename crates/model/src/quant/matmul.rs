//! [`QWeight`]: a quantized weight matrix kept in its GGUF bytes, and its product with f32 activations.
//!
//! Few rows (decode, small batches): activations are quantized to 8 bits and every weight row is dotted
//! with them by the SIMD kernels, rows split across threads. That path is memory-bound, so reading the
//! 4-bit bytes once is what makes it fast. Many rows (prefill): the weight is dequantized once per call
//! and multiplied by candle's f32 GEMM, which is compute-bound and much faster per token.
//!
//! The product is a candle custom op with a backward pass (∂x = ∂y·W), so LoRA layers stacked on a
//! quantized base (QLoRA) train through it with candle's autograd.

use super::formats::{dequantize_row, quantize_activations, ActBlock, QFormat, QK};
use super::kernels::dot_fn;
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// Row count from which a product goes through dequantize + GEMM instead of the dot kernels.
pub const GEMM_MIN_ROWS: usize = 16;

/// A `rows × cols` matrix (out features × in features) in a GGML block format.
#[derive(Debug, Clone)]
pub struct QWeight {
    format: QFormat,
    rows: usize,
    cols: usize,
    data: Arc<Vec<u8>>,
}

impl QWeight {
    /// Wraps GGUF bytes; fails when the byte count does not match the shape.
    pub fn new(format: QFormat, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        if cols % QK != 0 {
            return Err(format!("{} needs rows of a multiple of {QK} values, got {cols}", format.name()));
        }
        let want = rows * cols / QK * format.block_bytes();
        if data.len() != want {
            return Err(format!(
                "{} {rows}x{cols} needs {want} bytes, got {}",
                format.name(),
                data.len()
            ));
        }
        Ok(Self { format, rows, cols, data: Arc::new(data) })
    }

    /// Quantizes a float `rows × cols` matrix (tests, and tools that write GGUF).
    pub fn quantize(format: QFormat, rows: usize, cols: usize, values: &[f32]) -> Result<Self, String> {
        if values.len() != rows * cols || cols % QK != 0 {
            return Err(format!("cannot quantize {} values as {rows}x{cols}", values.len()));
        }
        let data = values.chunks_exact(cols).flat_map(|r| super::formats::quantize_row(format, r)).collect();
        Self::new(format, rows, cols, data)
    }

    pub fn format(&self) -> QFormat {
        self.format
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes of weight data.
    pub fn size_bytes(&self) -> usize {
        self.data.len()
    }
    fn row_bytes(&self) -> usize {
        self.cols / QK * self.format.block_bytes()
    }
    fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `order[i]` here.
    pub fn permute_rows(&self, order: &[u32]) -> Self {
        let mut data = Vec::with_capacity(self.data.len());
        for &r in order {
            data.extend_from_slice(self.row(r as usize));
        }
        Self { format: self.format, rows: order.len(), cols: self.cols, data: Arc::new(data) }
    }

    /// Dequantizes the whole matrix (`rows × cols`, f32).
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, dst)| dequantize_row(self.format, self.row(r), dst));
        Tensor::from_vec(out, (self.rows, self.cols), device)
    }

    /// Looks up rows by id (token embeddings): `[ids.len(), cols]`.
    pub fn gather_rows(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (dst, &id) in out.chunks_exact_mut(self.cols).zip(ids) {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!("token id {id} is outside the vocabulary of {} entries", self.rows);
            }
            dequantize_row(self.format, self.row(id), dst);
        }
        Tensor::from_vec(out, (ids.len(), self.cols), device)
    }

    /// `x · Wᵀ` for `x` of shape `[n, cols]` (any leading dims are flattened): `[n, rows]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((n, self.cols))?;
        let y = if n >= GEMM_MIN_ROWS || !x.device().is_cpu() {
            let w = self.dequantize(x.device())?;
            let xq = if x.device().is_cpu() { x2.apply_op1(RoundActivations)? } else { x2 };
            xq.matmul(&w.t()?)?
        } else {
            x2.apply_op1(QMatMulOp(self.clone()))?
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("x has a last dim") = self.rows;
        y.reshape(out_dims)
    }

    /// The dot-kernel product on raw slices: `x` is `n × cols`, the result `n × rows`.
    pub fn matmul_rows(&self, x: &[f32], n: usize) -> Vec<f32> {
        let blocks = self.cols / QK;
        let mut act = vec![ActBlock::default(); n * blocks];
        for (xr, ar) in x.chunks_exact(self.cols).zip(act.chunks_exact_mut(blocks)) {
            quantize_activations(xr, ar);
        }
        let dot = dot_fn(self.format);
        // Output transposed (row-major in weight rows) so each task writes one contiguous range.
        let tasks = (super::pool::threads() * 4).min(self.rows).max(1);
        let per_task = self.rows.div_ceil(tasks);
        let mut out_t = vec![0f32; self.rows * n];
        let out_ptr = SendPtr(out_t.as_mut_ptr());
        super::pool::parallel_for(self.rows.div_ceil(per_task), &|task| {
            let first = task * per_task;
            let last = (first + per_task).min(self.rows);
            // SAFETY: tasks write disjoint ranges [first·n, last·n) of `out_t`, which outlives the call.
            let dst = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add(first * n), (last - first) * n) };
            for (k, cell) in dst.chunks_exact_mut(n).enumerate() {
                let w = self.row(first + k);
                for (t, c) in cell.iter_mut().enumerate() {
                    *c = dot(w, &act[t * blocks..(t + 1) * blocks]);
                }
            }
        });
        if n == 1 {
            return out_t;
        }
        let mut out = vec![0f32; n * self.rows];
        for r in 0..self.rows {
            for t in 0..n {
                out[t * self.rows + r] = out_t[r * n + t];
            }
        }
        out
    }
}

/// A raw pointer that tasks writing disjoint ranges may share.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// 8-bit block rounding of activations, with a straight-through gradient.
struct RoundActivations;

impl CustomOp1 for RoundActivations {
    fn name(&self) -> &'static str {
        "round-activations-q8"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(v), Some((a, b))) = (storage, layout.contiguous_offsets()) else {
            candle_core::bail!("activation rounding needs a contiguous f32 input");
        };
        let mut out = v[a..b].to_vec();
        super::formats::round_activations(&mut out);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.clone()))
    }
}

/// The custom op behind [`QWeight::forward`]'s dot-kernel path.
struct QMatMulOp(QWeight);

impl CustomOp1 for QMatMulOp {
    fn name(&self) -> &'static str {
        "quantized-matmul"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.0;
        let (n, cols) = layout.shape().dims2()?;
        if cols != w.cols {
            candle_core::bail!("quantized matmul: input has {cols} features, weight expects {}", w.cols);
        }
        let x = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("quantized matmul needs f32 input"),
        };
        let x = match layout.contiguous_offsets() {
            Some((a, b)) => &x[a..b],
            None => candle_core::bail!("quantized matmul needs a contiguous input"),
        };
        Ok((CpuStorage::F32(w.matmul_rows(x, n)), Shape::from((n, w.rows))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let w = self.0.dequantize(grad.device())?;
        Ok(Some(grad.matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| (((i * 7919 + salt * 104729) % 1000) as f32 / 500.0) - 1.0).collect()
    }

    /// Both paths (dot kernels for few rows, dequantize + GEMM for many) agree with a float matmul
    /// of the dequantized weight.
    #[test]
    fn both_paths_match_dequantized_matmul() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (rows, cols) = (70, 96);
        for format in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let w = QWeight::quantize(format, rows, cols, &pseudo(rows * cols, 1)).unwrap();
            let wf = w.dequantize(&dev)?;
            for n in [1, 3, GEMM_MIN_ROWS + 2] {
                let x = Tensor::from_vec(pseudo(n * cols, n), (n, cols), &dev)?;
                let want = x.matmul(&wf.t()?)?;
                let got = w.forward(&x)?;
                let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(err <= 0.02 * scale, "{format:?} n={n}: max err {err} (scale {scale})");
            }
        }
        Ok(())
    }

    /// Gradients flow through the quantized product to its input (QLoRA needs this).
    #[test]
    fn backward_reaches_the_input() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let w = QWeight::quantize(QFormat::Q8_0, 4, 32, &pseudo(128, 3)).unwrap();
        let x = candle_core::Var::from_tensor(&Tensor::from_vec(pseudo(32, 5), (1, 32), &dev)?)?;
        let grads = w.forward(x.as_tensor())?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("x has a gradient");
        let want = w.dequantize(&dev)?.sum(0)?.unsqueeze(0)?;
        let err = (g - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err < 1e-5);
        Ok(())
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(QWeight::new(QFormat::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QWeight::new(QFormat::Q4_1, 2, 30, vec![0; 40]).is_err());
        let w = QWeight::quantize(QFormat::Q8_0, 2, 32, &[0.5; 64]).unwrap();
        assert!(w.gather_rows(&[2], &Device::Cpu).is_err());
    }
}

#[cfg(test)]
mod precision_tests {
    use super::*;

    /// The dot path and the GEMM path compute the same products (both see 8-bit activations).
    #[test]
    fn dot_and_gemm_paths_agree_closely() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (rows, cols) = (64, 576);
        let vals: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05).collect();
        let xs: Vec<f32> = (0..20 * cols).map(|i| ((i * 104729 % 977) as f32 / 488.0 - 1.0) * 3.0).collect();
        for format in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let w = QWeight::quantize(format, rows, cols, &vals).unwrap();
            let many = w.forward(&Tensor::from_vec(xs.clone(), (20, cols), &dev)?)?;
            let one = w.forward(&Tensor::from_vec(xs[..cols].to_vec(), (1, cols), &dev)?)?;
            let a: Vec<f32> = many.get(0)?.to_vec1()?;
            let b: Vec<f32> = one.get(0)?.to_vec1()?;
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-3 * (1.0 + x.abs()), "{format:?}: gemm {x} vs dot {y}");
            }
        }
        Ok(())
    }
}
