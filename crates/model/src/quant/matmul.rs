//! [`QWeight`]: a quantized weight matrix kept in its GGUF bytes, and its product with f32 activations.
//!
//! On the CPU, activations are quantized to 8 bits and multiplied by the SIMD kernels, weight rows split
//! across threads: Q4_1 and Q8_0 matrices are kept repacked eight rows at a time ([`super::packed`]),
//! others as GGUF rows dotted one weight row against up to four activation rows. Each output is
//! computed the same way whatever else is in the batch, so results never depend on batch composition
//! (a request gives the same tokens alone or batched with others). On other devices the weight is
//! dequantized and multiplied by the device's GEMM.
//!
//! The product is a candle custom op with a backward pass (∂x = ∂y·W), so LoRA layers stacked on a
//! quantized base (QLoRA) train through it with candle's autograd.

use super::formats::{dequantize_row, quantize_activations, ActBlock, QFormat, QK};
use super::kernels::dot_fn;
use super::pool::SendPtr;
use super::{packed, packed16};
use candle_core::{CpuStorage, CustomOp1, Device, Layout, Shape, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A `rows × cols` matrix (out features × in features) in a GGML block format.
#[derive(Debug, Clone)]
pub struct QWeight {
    format: QFormat,
    rows: usize,
    cols: usize,
    /// GGUF rows, or the grouped layout of [`super::packed`] when `packed`.
    data: Arc<Vec<u8>>,
    packed: bool,
}

impl QWeight {
    /// Wraps GGUF bytes; fails when the byte count does not match the shape.
    ///
    /// Every size is computed with checked arithmetic: a shape whose byte count (or element count,
    /// which [`QWeight::dequantize`] allocates as f32) does not fit in `usize` is refused, so no later
    /// product of `rows`, `cols` and the block size can wrap.
    pub fn new(format: QFormat, rows: usize, cols: usize, data: Vec<u8>) -> Result<Self, String> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(QK) {
            return Err(format!(
                "{} needs a non-empty matrix with rows of a multiple of {QK} values, got {rows}x{cols}",
                format.name()
            ));
        }
        let want = (cols / QK)
            .checked_mul(format.block_bytes())
            .and_then(|row| row.checked_mul(rows))
            .filter(|_| {
                rows.checked_mul(cols)
                    .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()))
                    .is_some_and(|b| b <= isize::MAX as usize)
            })
            .ok_or_else(|| format!("{} {rows}x{cols} is too large", format.name()))?;
        if data.len() != want {
            return Err(format!(
                "{} {rows}x{cols} needs {want} bytes, got {}",
                format.name(),
                data.len()
            ));
        }
        let packed = packed::packable(format, rows, cols);
        let data = if packed {
            packed::pack(format, &data, rows, cols)
        } else {
            data
        };
        Ok(Self {
            format,
            rows,
            cols,
            data: Arc::new(data),
            packed,
        })
    }

    /// Quantizes a float `rows × cols` matrix (tests, and tools that write GGUF).
    pub fn quantize(
        format: QFormat,
        rows: usize,
        cols: usize,
        values: &[f32],
    ) -> Result<Self, String> {
        if rows.checked_mul(cols) != Some(values.len()) || !cols.is_multiple_of(QK) {
            return Err(format!(
                "cannot quantize {} values as {rows}x{cols}",
                values.len()
            ));
        }
        let data = values
            .chunks_exact(cols)
            .flat_map(|r| super::formats::quantize_row(format, r))
            .collect();
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
    /// Row `r` in GGUF bytes.
    fn row(&self, r: usize) -> Cow<'_, [u8]> {
        if self.packed {
            return Cow::Owned(packed::unpack_row(self.format, &self.data, self.cols, r));
        }
        let rb = self.row_bytes();
        Cow::Borrowed(&self.data[r * rb..(r + 1) * rb])
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `order[i]` here.
    pub fn permute_rows(&self, order: &[u32]) -> Self {
        let mut data = Vec::with_capacity(self.data.len());
        for &r in order {
            data.extend_from_slice(&self.row(r as usize));
        }
        Self::new(self.format, order.len(), self.cols, data)
            .expect("a permutation keeps the byte count")
    }

    /// Dequantizes the whole matrix (`rows × cols`, f32).
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; self.rows * self.cols];
        out.par_chunks_mut(self.cols)
            .enumerate()
            .for_each(|(r, dst)| dequantize_row(self.format, &self.row(r), dst));
        Tensor::from_vec(out, (self.rows, self.cols), device)
    }

    /// Looks up rows by id (token embeddings): `[ids.len(), cols]`.
    pub fn gather_rows(&self, ids: &[u32], device: &Device) -> candle_core::Result<Tensor> {
        let mut out = vec![0f32; ids.len() * self.cols];
        for (dst, &id) in out.chunks_exact_mut(self.cols).zip(ids) {
            let id = id as usize;
            if id >= self.rows {
                candle_core::bail!(
                    "token id {id} is outside the vocabulary of {} entries",
                    self.rows
                );
            }
            dequantize_row(self.format, &self.row(id), dst);
        }
        Tensor::from_vec(out, (ids.len(), self.cols), device)
    }

    /// `x · Wᵀ` for `x` of shape `[n, cols]` (any leading dims are flattened): `[n, rows]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let n: usize = dims[..dims.len() - 1].iter().product();
        let x2 = x.reshape((n, self.cols))?;
        let y = if x.device().is_cpu() {
            x2.apply_op1(QMatMulOp(self.clone()))?
        } else {
            x2.matmul(&self.dequantize(x.device())?.t()?)?
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("x has a last dim") = self.rows;
        y.reshape(out_dims)
    }

    /// The dot-kernel product on raw slices: `x` is `n × cols`, the result `n × rows`.
    pub fn matmul_rows(&self, x: &[f32], n: usize) -> candle_core::Result<Vec<f32>> {
        let mut outs = matmul_many(&[self], x, n)?;
        outs.pop()
            .ok_or_else(|| candle_core::Error::msg("quantized matmul: no product"))
    }
}

impl QWeight {
    /// Dequantizes the tile of rows `rows` and blocks `blocks` (columns `32·blocks.start` to
    /// `32·blocks.end`) into `out`, row-major (`rows.len() × 32·blocks.len()` values), reading only
    /// those blocks: a product can walk the matrix tile by tile without its f32 copy.
    pub fn dequantize_tile(
        &self,
        rows: std::ops::Range<usize>,
        blocks: std::ops::Range<usize>,
        out: &mut [f32],
    ) -> candle_core::Result<()> {
        let width = blocks.len() * QK;
        if rows.start > rows.end
            || rows.end > self.rows
            || blocks.start > blocks.end
            || blocks.end > self.cols / QK
            || rows.len().checked_mul(width) != Some(out.len())
        {
            candle_core::bail!(
                "dequantize_tile: rows {rows:?} and blocks {blocks:?} of a {}x{} matrix into {} values",
                self.rows,
                self.cols,
                out.len()
            );
        }
        if width == 0 {
            return Ok(());
        }
        let bb = self.format.block_bytes();
        if self.packed && rows.start.is_multiple_of(8) && rows.end.is_multiple_of(8) {
            for (g, dst) in (rows.start / 8..rows.end / 8).zip(out.chunks_exact_mut(8 * width)) {
                packed::dequantize_group(
                    self.format,
                    &self.data,
                    self.cols,
                    g,
                    blocks.clone(),
                    dst,
                );
            }
            return Ok(());
        }
        let mut block = [0u8; 34];
        for (r, dst) in rows.zip(out.chunks_exact_mut(width)) {
            if self.packed {
                for (b, d) in blocks.clone().zip(dst.chunks_exact_mut(QK)) {
                    packed::unpack_block(
                        self.format,
                        &self.data,
                        self.cols,
                        r,
                        b,
                        &mut block[..bb],
                    );
                    dequantize_row(self.format, &block[..bb], d);
                }
            } else {
                let start = r * self.row_bytes() + blocks.start * bb;
                dequantize_row(
                    self.format,
                    &self.data[start..start + blocks.len() * bb],
                    dst,
                );
            }
        }
        Ok(())
    }
}

/// Products of several weights with one shared input (`x` is `n × cols`): the activations are
/// quantized once and every weight's rows go through one parallel loop (q, k and v; gate and up).
/// Result `i` is `n × weights[i].rows()`. All weights must have `cols` input features.
///
/// Fails when the widths disagree, or when a kernel task panics (reported once every task has
/// ended; see [`super::pool::parallel_for`]).
pub fn matmul_many(
    weights: &[&QWeight],
    x: &[f32],
    n: usize,
) -> candle_core::Result<Vec<Vec<f32>>> {
    matmul_many_after(weights, x, n, 0, &|_, _| {})
}

/// The outputs of [`matmul_many_after`], for its `pre` tasks to write rows of.
pub struct Outputs {
    /// Per weight: the buffer, its length and its width (the weight's rows).
    bufs: Vec<(SendPtr, usize, usize)>,
}

impl Outputs {
    /// Row `t` of output `i` (`weights[i].rows()` values).
    ///
    /// # Safety
    /// Only from a `pre` task of [`matmul_many_after`], and no other task may access the same row
    /// of the same output while the returned slice lives.
    #[allow(clippy::mut_from_ref)] // exclusive by the caller's contract (see Safety)
    pub unsafe fn row(&self, i: usize, t: usize) -> &mut [f32] {
        let (ptr, len, width) = self.bufs[i];
        let start = t
            .checked_mul(width)
            .filter(|s| s + width <= len)
            .unwrap_or_else(|| panic!("matmul pre task: row {t} outside output {i}"));
        // SAFETY: inside the buffer (checked above), which outlives the loop; exclusive by the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(ptr.get().add(start), width) }
    }
}

/// [`matmul_many`], with other work in the same parallel loop (one loop where two would each pay a
/// dispatch): `pre(j, outputs)` for `j < pre_tasks` runs first and may write rows of the outputs;
/// the products are then added to what they wrote (`y += x·Wᵀ`; rows no `pre` task wrote start at
/// zero). The LoRA kernels write their updates this way. Every `pre` task is claimed before any
/// product task, and a product task writes only once every `pre` task has ended.
pub fn matmul_many_after(
    weights: &[&QWeight],
    x: &[f32],
    n: usize,
    pre_tasks: usize,
    pre: &(dyn Fn(usize, &Outputs) + Sync),
) -> candle_core::Result<Vec<Vec<f32>>> {
    let Some(first) = weights.first() else {
        return Ok(Vec::new());
    };
    let cols = first.cols;
    if !(weights.iter().all(|w| w.cols == cols) && n.checked_mul(cols) == Some(x.len())) {
        let widths: Vec<usize> = weights.iter().map(|w| w.cols).collect();
        candle_core::bail!(
            "quantized matmul: weights of {widths:?} input features for {} values in {n} rows",
            x.len()
        );
    }
    let blocks = cols / QK;
    let mut act = vec![ActBlock::default(); n * blocks];
    for (xr, ar) in x.chunks_exact(cols).zip(act.chunks_exact_mut(blocks)) {
        quantize_activations(xr, ar);
    }
    let act_row = |t: usize| &act[t * blocks..(t + 1) * blocks];
    let total: usize = weights.iter().map(|w| w.rows).sum();
    // A multiple of 16 rows, so packed groups never straddle two tasks and pairs of groups
    // (the 512-bit kernels) rarely do.
    let per_task = total
        .div_ceil(super::pool::threads() * 4)
        .next_multiple_of(16);
    // (weight, first row, end row): no task spans two weights.
    let mut tasks = Vec::new();
    for (wi, w) in weights.iter().enumerate() {
        tasks.extend(
            (0..w.rows)
                .step_by(per_task)
                .map(|r| (wi, r, (r + per_task).min(w.rows))),
        );
    }
    let mut outs: Vec<Vec<f32>> = weights
        .iter()
        .map(|w| {
            let len = n
                .checked_mul(w.rows)
                .expect("matmul_many: output size overflows");
            vec![0f32; len]
        })
        .collect();
    let outputs = Outputs {
        bufs: outs
            .iter_mut()
            .zip(weights)
            .map(|(o, w)| (SendPtr(o.as_mut_ptr()), o.len(), w.rows))
            .collect(),
    };
    let add = pre_tasks > 0;
    let product = |task: usize| {
        let (wi, first, end) = tasks[task];
        let w = weights[wi];
        let (out, len, _) = outputs.bufs[wi];
        let out = out.get();
        // Values for outputs (t, r..r + vals.len()).
        let put = |t: usize, r: usize, vals: &[f32]| {
            // t < n and r + vals.len() ≤ rows, and n·rows = len was computed with checked
            // arithmetic, so the index cannot wrap; the check keeps the write inside the buffer
            // whatever a caller passed.
            let i = t * w.rows + r;
            assert!(
                i + vals.len() <= len,
                "matmul_many: output index {i} outside {len}"
            );
            // SAFETY: inside output `wi` (checked above), which outlives this loop; outputs
            // (t, first..end) are written only by the task owning rows first..end, and the `pre`
            // tasks that may have written them have all ended.
            let dst = unsafe { std::slice::from_raw_parts_mut(out.add(i), vals.len()) };
            if add {
                for (d, v) in dst.iter_mut().zip(vals) {
                    *d += v;
                }
            } else {
                dst.copy_from_slice(vals);
            }
        };
        if w.packed {
            let (x1, x4) = packed::kernels(w.format);
            let group_bytes = blocks * packed::group_block_bytes(w.format).expect("packed");
            let wide = packed16::kernels(w.format);
            let mut g = first / 8;
            while g < end / 8 {
                // Two groups at once on 512-bit registers (the same numbers as two of eight).
                if let Some((y1, y4)) = wide.filter(|_| g + 2 <= end / 8) {
                    let pair = &w.data[g * group_bytes..(g + 2) * group_bytes];
                    let mut t = 0;
                    while t + 4 <= n {
                        let res = y4(
                            pair,
                            group_bytes,
                            [act_row(t), act_row(t + 1), act_row(t + 2), act_row(t + 3)],
                        );
                        for (k, rows) in res.iter().enumerate() {
                            put(t + k, g * 8, rows);
                        }
                        t += 4;
                    }
                    for j in t..n {
                        put(j, g * 8, &y1(pair, group_bytes, act_row(j)));
                    }
                    g += 2;
                    continue;
                }
                let group = &w.data[g * group_bytes..(g + 1) * group_bytes];
                let mut t = 0;
                while t + 4 <= n {
                    let res = x4(
                        group,
                        [act_row(t), act_row(t + 1), act_row(t + 2), act_row(t + 3)],
                    );
                    for (k, rows) in res.iter().enumerate() {
                        put(t + k, g * 8, rows);
                    }
                    t += 4;
                }
                for j in t..n {
                    put(j, g * 8, &x1(group, act_row(j)));
                }
                g += 1;
            }
            return;
        }
        let (dot, dot4) = (dot_fn(w.format), super::kernels::dot4_fn(w.format));
        for r in first..end {
            let row = w.row(r);
            let row = &row[..];
            let mut t = 0;
            while t + 4 <= n {
                let res = dot4(
                    row,
                    [act_row(t), act_row(t + 1), act_row(t + 2), act_row(t + 3)],
                );
                for (k, v) in res.into_iter().enumerate() {
                    put(t + k, r, &[v]);
                }
                t += 4;
            }
            for j in t..n {
                put(j, r, &[dot(row, act_row(j))]);
            }
        }
    };
    // `pre` tasks ended, normally or by a panic (then the loop fails and its output is dropped).
    let pre_done = AtomicUsize::new(0);
    struct Done<'a>(&'a AtomicUsize);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Release);
        }
    }
    let run = super::pool::parallel_for(pre_tasks + tasks.len(), &|task| {
        if task < pre_tasks {
            let _done = Done(&pre_done);
            return pre(task, &outputs);
        }
        // Tasks are claimed in index order, so every `pre` task is claimed by now and running on
        // some thread (none of them waits for anything): this wait ends.
        let mut spins = 0u32;
        while pre_done.load(Ordering::Acquire) < pre_tasks {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        product(task - pre_tasks);
    });
    run.map_err(|e| candle_core::Error::msg(format!("quantized matmul: {e}")))?;
    Ok(outs)
}

/// The custom op behind [`QWeight::forward`]'s dot-kernel path.
struct QMatMulOp(QWeight);

impl CustomOp1 for QMatMulOp {
    fn name(&self) -> &'static str {
        "quantized-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let w = &self.0;
        let (n, cols) = layout.shape().dims2()?;
        if cols != w.cols {
            candle_core::bail!(
                "quantized matmul: input has {cols} features, weight expects {}",
                w.cols
            );
        }
        let x = match storage {
            CpuStorage::F32(v) => v,
            _ => candle_core::bail!("quantized matmul needs f32 input"),
        };
        let x = match layout.contiguous_offsets() {
            Some((a, b)) => &x[a..b],
            None => candle_core::bail!("quantized matmul needs a contiguous input"),
        };
        Ok((
            CpuStorage::F32(w.matmul_rows(x, n)?),
            Shape::from((n, w.rows)),
        ))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let w = self.0.dequantize(grad.device())?;
        Ok(Some(grad.matmul(&w)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, salt: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + salt * 104729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    }

    /// The product agrees with a float matmul of the dequantized weight, for row counts that use the
    /// single-row and the four-row kernels.
    #[test]
    fn both_paths_match_dequantized_matmul() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let cols = 96;
        // 72 and 40 rows: Q4_1 and Q8_0 are repacked in groups of eight, an odd number of them, so
        // the last task ends on a group the 512-bit kernels (pairs of groups) leave to the 8-row
        // ones; 70 rows: every format as GGUF rows.
        for (format, rows) in [
            (QFormat::Q4_0, 70),
            (QFormat::Q4_1, 70),
            (QFormat::Q4_1, 72),
            (QFormat::Q4_1, 40),
            (QFormat::Q8_0, 70),
            (QFormat::Q8_0, 72),
        ] {
            let w = QWeight::quantize(format, rows, cols, &pseudo(rows * cols, 1)).unwrap();
            let wf = w.dequantize(&dev)?;
            for n in [1, 3, 6, 18] {
                let x = Tensor::from_vec(pseudo(n * cols, n), (n, cols), &dev)?;
                let want = x.matmul(&wf.t()?)?;
                let got = w.forward(&x)?;
                let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
                let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(
                    err <= 0.02 * scale,
                    "{format:?} {rows} rows, n={n}: max err {err} (scale {scale})"
                );
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

    /// A row's output is bit-identical whatever other rows share the call.
    #[test]
    fn rows_are_batch_invariant() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (rows, cols) = (40, 576);
        let xs = pseudo(9 * cols, 4);
        for format in [QFormat::Q4_0, QFormat::Q4_1, QFormat::Q8_0] {
            let w = QWeight::quantize(format, rows, cols, &pseudo(rows * cols, 2)).unwrap();
            let all: Vec<Vec<f32>> = w
                .forward(&Tensor::from_vec(xs.clone(), (9, cols), &dev)?)?
                .to_vec2()?;
            for (t, row) in all.iter().enumerate() {
                let one: Vec<f32> = w
                    .forward(&Tensor::from_vec(
                        xs[t * cols..(t + 1) * cols].to_vec(),
                        (1, cols),
                        &dev,
                    )?)?
                    .get(0)?
                    .to_vec1()?;
                assert_eq!(&one, row, "{format:?} row {t}");
            }
        }
        Ok(())
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(QWeight::new(QFormat::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QWeight::new(QFormat::Q4_1, 2, 30, vec![0; 40]).is_err());
        assert!(QWeight::new(QFormat::Q4_1, 0, 32, vec![]).is_err());
        assert!(QWeight::new(QFormat::Q8_0, 2, 0, vec![]).is_err());
        // rows·cols wraps to 0 in 64 bits: a wrapping size check would accept an empty buffer and
        // the product would then write far outside its output.
        assert!(QWeight::new(QFormat::Q4_1, 1 << 59, 32, vec![]).is_err());
        // The byte count overflows while rows·cols/32 does not.
        assert!(QWeight::new(QFormat::Q8_0, usize::MAX / 32, 32, vec![]).is_err());
        assert!(QWeight::quantize(QFormat::Q8_0, 1 << 59, 32, &[]).is_err());
        let w = QWeight::quantize(QFormat::Q8_0, 2, 32, &[0.5; 64]).unwrap();
        assert!(w.gather_rows(&[2], &Device::Cpu).is_err());
    }
}
