//! Two custom ops that make training on the CPU cheaper than candle's generic backward:
//!
//! - [`frozen_linear`]: `x·Wᵀ` for a frozen weight. Candle's matmul backward also computes the
//!   weight's gradient (a product as large as the forward) even when nothing needs it; this op
//!   returns only the input's gradient `g·W`. QLoRA plugs in here with a quantized `W`
//!   ([`crate::quantized`]).
//! - [`linear_cross_entropy`]: the LM head (float or quantized) and the token loss in one op,
//!   chunked over rows: the
//!   forward keeps `softmax − onehot` (or recomputes it in the backward when that would be large)
//!   instead of the several `[rows, vocab]` intermediates of `log_softmax` + gather.
//!
//! Both run per row with a fixed order of operations, so results do not depend on scheduling.

use crate::quantized::with_values;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// An op's contiguous f32 input, read in place.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: input is not contiguous")))?;
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// An op's input copied into a tensor (for the small ones candle multiplies).
fn input(s: &CpuStorage, l: &Layout, op: &str) -> Result<Tensor> {
    Tensor::from_slice(slice(s, l, op)?, l.shape(), &Device::Cpu)
}

/// `src` into `dst`, which must be as long.
fn copy_into(dst: &mut [f32], src: &[f32], what: &str) -> Result<()> {
    if dst.len() != src.len() {
        candle_core::bail!("{what}: {} values for {}", src.len(), dst.len());
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// A frozen `[out, in]` weight as the training ops use it: the product `x·Wᵀ` and the input
/// gradient `g·W`, on plain tensors. A float weight is a [`Tensor`]; QLoRA's quantized weights are
/// [`crate::quantized::QuantizedWeight`] (the runtime's kernels forward, `g·W` over dequantized
/// tiles backward).
pub trait FrozenWeight: Send + Sync {
    /// `(out, in)`.
    fn dims(&self) -> (usize, usize);
    /// `x·Wᵀ` for `x: [n, in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// `g·W` for `g: [n, out]`.
    fn backward(&self, g: &Tensor) -> Result<Tensor>;
    /// The weight as a float tensor, when it is one (devices without the custom ops use it).
    fn float(&self) -> Option<&Tensor> {
        None
    }
    /// `x·Wᵀ` as a row-major vector (a weight that computes into a vector returns it uncopied).
    fn forward_vec(&self, x: &Tensor) -> Result<Vec<f32>> {
        self.forward(x)?.flatten_all()?.to_vec1()
    }
    /// `g·W` as a row-major vector (as [`FrozenWeight::forward_vec`]).
    fn backward_vec(&self, g: &Tensor) -> Result<Vec<f32>> {
        self.backward(g)?.flatten_all()?.to_vec1()
    }
    /// `x·Wᵀ` for row-major `x: [n, in]` given as values (a weight that multiplies slices reads
    /// them in place; the default copies them into a tensor).
    fn forward_slice(&self, x: &[f32], n: usize) -> Result<Vec<f32>> {
        self.forward_vec(&Tensor::from_slice(x, (n, self.dims().1), &Device::Cpu)?)
    }
    /// `x·Wᵀ` into `y: [n, out]` (a weight that writes slices writes there directly).
    fn forward_into(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        copy_into(y, &self.forward_slice(x, n)?, "frozen forward")
    }
    /// Drops what the products kept for the current pass (a quantized weight's bf16 copy); the
    /// next product makes it again. The default keeps nothing.
    fn release(&self) {}
    /// `g·W` for `g: [n, out]` into `dx: [n, in]` (as [`FrozenWeight::forward_into`]).
    fn backward_into(&self, g: &[f32], n: usize, dx: &mut [f32]) -> Result<()> {
        let g = Tensor::from_slice(g, (n, self.dims().0), &Device::Cpu)?;
        copy_into(dx, &self.backward_vec(&g)?, "frozen backward")
    }
}

impl FrozenWeight for Tensor {
    fn dims(&self) -> (usize, usize) {
        self.dims2().unwrap_or((0, 0))
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.t()?)
    }
    fn backward(&self, g: &Tensor) -> Result<Tensor> {
        g.matmul(self)
    }
    fn float(&self) -> Option<&Tensor> {
        Some(self)
    }
}

fn fallback(w: &dyn FrozenWeight) -> Result<&Tensor> {
    w.float().ok_or_else(|| {
        candle_core::Error::Msg("a quantized frozen weight needs f32 CPU tensors".into())
    })
}

struct FrozenLinear {
    w: Arc<dyn FrozenWeight>,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let n = l.dims()[0];
        let shape = Shape::from((n, self.w.dims().0));
        Ok((CpuStorage::F32(self.w.forward_slice(x, n)?), shape))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.w.backward(g)?))
    }
}

/// `x·Wᵀ` for `x: [n, in]` and a frozen `w: [out, in]`, with a backward to `x` only.
pub fn frozen_linear(x: &Tensor, w: Arc<dyn FrozenWeight>) -> Result<Tensor> {
    let float_cpu = w.float().is_none_or(|w| w.dtype() == DType::F32);
    if x.device().is_cpu() && x.dtype() == DType::F32 && float_cpu {
        x.contiguous()?.apply_op1(FrozenLinear { w })
    } else {
        x.matmul(&fallback(w.as_ref())?.t()?)
    }
}

/// Rows of logits computed at once, into one buffer reused for every chunk (96 × SmolLM2's
/// 49,152-token vocabulary: 19 MB, written in place instead of fresh pages per chunk; 96 rows are
/// six full tiles of the bf16 kernel's 16-token vectors).
const CHUNK: usize = 96;

struct LinearCe {
    /// `[vocab, hidden]`.
    w: Arc<dyn FrozenWeight>,
    targets: Vec<u32>,
    /// `(softmax − onehot)·W` of every row (`[rows, hidden]`), from the forward (when kept).
    dh: Mutex<Option<Vec<f32>>>,
    keep: bool,
}

impl LinearCe {
    /// Per-row losses of `h: [rows, hidden]` and, when `want_grad`, each row's `(softmax −
    /// onehot)·W` (`[rows, hidden]`): the logits of [`CHUNK`] rows at a time go through one
    /// buffer, turned into `softmax − onehot` in place and multiplied back at once, so no
    /// `[rows, vocab]` matrix is kept for the backward.
    fn run(&self, h: &[f32], want_grad: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let out = self.run_chunks(h, want_grad);
        self.w.release();
        out
    }

    /// [`LinearCe::run`] before the weight releases what its products kept.
    fn run_chunks(&self, h: &[f32], want_grad: bool) -> Result<(Vec<f32>, Vec<f32>)> {
        let (vocab, hidden) = self.w.dims();
        let rows = self.targets.len();
        if h.len() != rows * hidden {
            candle_core::bail!(
                "linear-cross-entropy: {} values are not {rows} rows of {hidden}",
                h.len()
            );
        }
        let mut logits = vec![0f32; CHUNK.min(rows) * vocab];
        let mut nll = vec![0f32; rows];
        let mut dh = if want_grad {
            vec![0f32; rows * hidden]
        } else {
            Vec::new()
        };
        for r0 in (0..rows).step_by(CHUNK) {
            let c = CHUNK.min(rows - r0);
            let buf = &mut logits[..c * vocab];
            self.w
                .forward_into(&h[r0 * hidden..(r0 + c) * hidden], c, buf)?;
            buf.par_chunks_mut(vocab)
                .zip(nll[r0..r0 + c].par_iter_mut())
                .zip(self.targets[r0..r0 + c].par_iter())
                .for_each(|((row, loss), &t)| {
                    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let target = row[t as usize];
                    let mut sum = 0f64;
                    for x in row.iter_mut() {
                        *x = (*x - max).exp();
                        sum += *x as f64;
                    }
                    *loss = max + sum.ln() as f32 - target;
                    if want_grad {
                        let inv = (1.0 / sum) as f32;
                        row.iter_mut().for_each(|x| *x *= inv);
                        row[t as usize] -= 1.0;
                    }
                });
            if want_grad {
                self.w
                    .backward_into(buf, c, &mut dh[r0 * hidden..(r0 + c) * hidden])?;
            }
        }
        Ok((nll, dh))
    }
}

impl CustomOp1 for LinearCe {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = slice(s, l, self.name())?;
        let (nll, dh) = self.run(h, self.keep)?;
        if self.keep {
            *self.dh.lock().expect("not poisoned") = Some(dh);
        }
        let rows = nll.len();
        Ok((CpuStorage::F32(nll), Shape::from(rows)))
    }

    fn bwd(&self, h: &Tensor, _nll: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (rows, hidden) = h.dims2()?;
        let g: Vec<f32> = g.to_dtype(DType::F32)?.to_vec1()?;
        let kept = self.dh.lock().expect("not poisoned").take();
        let mut dh = match kept {
            Some(dh) => dh,
            None => with_values(h, |h| Ok(self.run(h, true)?.1))?,
        };
        if dh.len() != rows * hidden || g.len() != rows {
            candle_core::bail!("linear-cross-entropy: kept gradient of the wrong size");
        }
        dh.par_chunks_mut(hidden)
            .zip(g.par_iter())
            .for_each(|(row, &s)| row.iter_mut().for_each(|x| *x *= s));
        Ok(Some(Tensor::from_vec(dh, (rows, hidden), h.device())?))
    }
}

/// Per-row negative log-likelihood `[rows]` of `targets` under `h·Wᵀ` for hidden states
/// `h: [rows, hidden]` and LM head `w: [vocab, hidden]`; differentiable in `h`.
pub fn linear_cross_entropy(
    h: &Tensor,
    w: Arc<dyn FrozenWeight>,
    targets: &[u32],
) -> Result<Tensor> {
    linear_cross_entropy_keeping(h, w, targets, true)
}

/// As [`linear_cross_entropy`]; `keep`: compute the gradient in the forward (when `h` is tracked),
/// else recompute the logits in the backward.
fn linear_cross_entropy_keeping(
    h: &Tensor,
    w: Arc<dyn FrozenWeight>,
    targets: &[u32],
    keep: bool,
) -> Result<Tensor> {
    let (rows, vocab) = (h.dim(0)?, w.dims().0);
    if rows != targets.len() {
        candle_core::bail!("{rows} rows for {} targets", targets.len());
    }
    if let Some(t) = targets.iter().find(|&&t| t as usize >= vocab) {
        candle_core::bail!("target token {t} is outside the vocabulary ({vocab})");
    }
    let float_cpu = w.float().is_none_or(|w| w.dtype() == DType::F32);
    if !(h.device().is_cpu() && h.dtype() == DType::F32 && float_cpu) {
        let logits = h.matmul(&fallback(w.as_ref())?.t()?)?;
        let lsm = candle_nn::ops::log_softmax(&logits, 1)?;
        let idx = Tensor::new(targets, h.device())?.unsqueeze(1)?;
        return lsm.gather(&idx, 1)?.squeeze(1)?.neg();
    }
    h.contiguous()?.apply_op1(LinearCe {
        w,
        targets: targets.to_vec(),
        dh: Mutex::new(None),
        keep: keep && h.track_op(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn rand(shape: (usize, usize), seed: u64) -> Tensor {
        let mut r = crate::rng::SplitMix64::new(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| r.next_f32() - 0.5).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn frozen_linear_matches_matmul_and_its_input_gradient() {
        let w = rand((5, 7), 1);
        let x = Var::from_tensor(&rand((3, 7), 2)).unwrap();
        let y1 = frozen_linear(x.as_tensor(), Arc::new(w.clone())).unwrap();
        let y2 = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert!(close(&y1, &y2) < 1e-6);
        let g1 = y1.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(close(g1.get(&x).unwrap(), g2.get(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn linear_cross_entropy_matches_log_softmax_and_its_gradient() {
        let w = rand((11, 6), 3);
        let x = Var::from_tensor(&rand((4, 6), 4)).unwrap();
        let t = [0u32, 10, 3, 3];
        for keep in [true, false] {
            let ours =
                linear_cross_entropy_keeping(x.as_tensor(), Arc::new(w.clone()), &t, keep).unwrap();
            check(&x, &w, &t, ours);
        }
        assert!(linear_cross_entropy(x.as_tensor(), Arc::new(w), &[11, 0, 0, 0]).is_err());
    }

    #[test]
    fn linear_cross_entropy_is_the_same_across_chunks_of_rows() {
        let rows = 2 * CHUNK + 5;
        let w = rand((11, 6), 5);
        let x = Var::from_tensor(&rand((rows, 6), 6)).unwrap();
        let t: Vec<u32> = (0..rows as u32).map(|i| (i * 7) % 11).collect();
        for keep in [true, false] {
            let ours =
                linear_cross_entropy_keeping(x.as_tensor(), Arc::new(w.clone()), &t, keep).unwrap();
            check(&x, &w, &t, ours);
        }
    }

    fn check(x: &Var, w: &Tensor, t: &[u32], ours: Tensor) {
        let logits = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let lsm = candle_nn::ops::log_softmax(&logits, 1).unwrap();
        let idx = Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(1).unwrap();
        let want = lsm
            .gather(&idx, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap();
        assert!(close(&ours, &want) < 1e-5);
        let scale: Vec<f32> = (0..t.len()).map(|i| [1f32, 2.0, 0.5, 0.0][i % 4]).collect();
        let scale = Tensor::new(scale.as_slice(), &Device::Cpu).unwrap();
        let g1 = (ours * &scale)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (want * &scale)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(close(g1.get(x).unwrap(), g2.get(x).unwrap()) < 1e-5);
    }
}

/// A frozen projection with LoRA on top: `y = x·Wᵀ + bias + scale·((x⊙mask)·Aᵀ)·Bᵀ`. One op, so the
/// graph keeps only its input and the `[n, r]` product `(x⊙mask)·Aᵀ`, not the half-dozen
/// `[n, out]` intermediates of the same sum written as separate ops.
struct LoraLinear {
    w: Arc<dyn FrozenWeight>,
    bias: Option<Vec<f32>>,
    scale: f32,
    /// Dropout mask on the LoRA input (`[n, in]`, values 0 or 1/(1-p)).
    mask: Option<Vec<f32>>,
    /// `(x⊙mask)·Aᵀ` from the forward.
    xa: Mutex<Option<Tensor>>,
}

impl LoraLinear {
    fn masked(&self, x: &Tensor) -> Result<Tensor> {
        match &self.mask {
            None => Ok(x.clone()),
            Some(m) => {
                let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
                v.iter_mut().zip(m).for_each(|(x, m)| *x *= m);
                Tensor::from_vec(v, x.dims(), x.device())
            }
        }
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, self.name())?;
        let n = l1.dims()[0];
        let b = input(s3, l3, self.name())?;
        // `(x⊙mask)·Aᵀ` was computed by `lora_linear` on `x`'s own storage (no copy here).
        let xa = match self.xa.lock().expect("not poisoned").clone() {
            Some(xa) => xa,
            None => {
                let a = input(s2, l2, self.name())?;
                let x = Tensor::from_slice(x, l1.shape(), &Device::Cpu)?;
                self.masked(&x)?.matmul(&a.t()?)?
            }
        };
        let mut y: Vec<f32> = self.w.forward_slice(x, n)?;
        let (out, r) = b.dims2()?;
        // `Bᵀ` (`[r, out]`): row `j` is what column `j` of `x·Aᵀ` adds to a row of `y`.
        let bt: Vec<f32> = b.t()?.contiguous()?.flatten_all()?.to_vec1()?;
        let s = self.scale;
        with_values(&xa, |xa| {
            y.par_chunks_mut(out)
                .zip(xa.par_chunks(r))
                .for_each(|(y, xa)| {
                    if let Some(bias) = &self.bias {
                        y.iter_mut().zip(bias).for_each(|(y, b)| *y += b);
                    }
                    for (&v, bt) in xa.iter().zip(bt.chunks_exact(out)) {
                        let v = s * v;
                        y.iter_mut().zip(bt).for_each(|(y, b)| *y += v * b);
                    }
                });
            Ok(())
        })?;
        *self.xa.lock().expect("not poisoned") = Some(xa);
        Ok((CpuStorage::F32(y), Shape::from((n, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let xa = self
            .xa
            .lock()
            .expect("not poisoned")
            .take()
            .ok_or_else(|| candle_core::Error::Msg("lora-linear: backward twice".into()))?;
        let (x, a, b, g) = (x.detach(), a.detach(), b.detach(), g.contiguous()?);
        let s = self.scale as f64;
        let db = (g.t()?.matmul(&xa)? * s)?;
        let gb = (g.matmul(&b)? * s)?;
        let da = gb.t()?.matmul(&self.masked(&x)?)?;
        let mut dx: Vec<f32> = self.w.backward_vec(&g)?;
        // `dx += (gb·A)⊙mask`, row by row: `gb`'s `r` values scale `A`'s rows.
        let (r, cols) = a.dims2()?;
        with_values(&gb, |gb| {
            with_values(&a, |a| {
                dx.par_chunks_mut(cols)
                    .zip(gb.par_chunks(r))
                    .enumerate()
                    .for_each_init(Vec::new, |l, (i, (dx, gb))| {
                        l.clear();
                        l.resize(cols, 0f32);
                        for (&v, a) in gb.iter().zip(a.chunks_exact(cols)) {
                            l.iter_mut().zip(a).for_each(|(l, a)| *l += v * a);
                        }
                        match &self.mask {
                            Some(m) => dx
                                .iter_mut()
                                .zip(l.iter().zip(&m[i * cols..(i + 1) * cols]))
                                .for_each(|(d, (l, m))| *d += l * m),
                            None => dx.iter_mut().zip(l.iter()).for_each(|(d, l)| *d += l),
                        }
                    });
                Ok(())
            })
        })?;
        Ok((
            Some(Tensor::from_vec(dx, x.dims(), x.device())?),
            Some(da),
            Some(db),
        ))
    }
}

/// `x·Wᵀ + bias + scale·((x⊙mask)·Aᵀ)·Bᵀ` for `x: [n, in]`, frozen `w: [out, in]`, trainable
/// `a: [r, in]`, `b: [out, r]`; differentiable in `x`, `a` and `b`.
pub fn lora_linear(
    x: &Tensor,
    w: Arc<dyn FrozenWeight>,
    bias: Option<&Tensor>,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<Vec<f32>>,
) -> Result<Tensor> {
    let float_cpu = w.float().is_none_or(|w| w.dtype() == DType::F32);
    if !(x.device().is_cpu() && float_cpu && [x, a, b].iter().all(|t| t.dtype() == DType::F32)) {
        let mut y = x.matmul(&fallback(w.as_ref())?.t()?)?;
        if let Some(bias) = bias {
            y = y.broadcast_add(bias)?;
        }
        let xm = match mask {
            Some(m) => (x * Tensor::from_vec(m, x.dims(), x.device())?)?,
            None => x.clone(),
        };
        return y + (xm.matmul(&a.t()?)?.matmul(&b.t()?)? * scale)?;
    }
    let x = x.contiguous()?;
    let op = LoraLinear {
        w,
        bias: bias.map(|b| b.to_vec1()).transpose()?,
        scale: scale as f32,
        mask,
        xa: Mutex::new(None),
    };
    // `(x⊙mask)·Aᵀ` (`[n, r]`) on `x`'s storage, outside the op, which would have to copy `x`.
    let xa = op.masked(&x.detach())?.matmul(&a.detach().t()?)?;
    *op.xa.lock().expect("not poisoned") = Some(xa);
    x.apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

#[cfg(test)]
mod lora_linear_tests {
    use super::*;
    use candle_core::Var;

    fn rand(shape: (usize, usize), seed: u64) -> Tensor {
        let mut r = crate::rng::SplitMix64::new(seed);
        let v: Vec<f32> = (0..shape.0 * shape.1).map(|_| r.next_f32() - 0.5).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn lora_linear_matches_separate_ops_with_and_without_dropout() {
        let w = rand((6, 5), 1);
        let bias = rand((1, 6), 9).squeeze(0).unwrap();
        for mask in [None, Some([0.0, 2.0, 2.0, 0.0, 2.0].repeat(4))] {
            let x = Var::from_tensor(&rand((4, 5), 2)).unwrap();
            let a = Var::from_tensor(&rand((3, 5), 3)).unwrap();
            let b = Var::from_tensor(&rand((6, 3), 4)).unwrap();
            let ours = lora_linear(
                x.as_tensor(),
                Arc::new(w.clone()),
                Some(&bias),
                a.as_tensor(),
                b.as_tensor(),
                1.5,
                mask.clone(),
            )
            .unwrap();
            let xm = match &mask {
                Some(m) => (x.as_tensor()
                    * Tensor::from_vec(m.clone(), (4, 5), &Device::Cpu).unwrap())
                .unwrap(),
                None => x.as_tensor().clone(),
            };
            let want = (x
                .as_tensor()
                .matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap()
                + (xm
                    .matmul(&a.as_tensor().t().unwrap())
                    .unwrap()
                    .matmul(&b.as_tensor().t().unwrap())
                    .unwrap()
                    * 1.5)
                    .unwrap())
            .unwrap();
            assert!(diff(&ours, &want) < 1e-5);
            let proj = rand((4, 6), 5);
            let g1 = (ours * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = (want * &proj)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &a, &b] {
                assert!(diff(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-5);
            }
        }
    }
}
