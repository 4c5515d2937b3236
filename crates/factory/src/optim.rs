//! AdamW as PyTorch computes it (decoupled weight decay, bias-corrected moments, ε outside the
//! square root), global gradient-norm clipping, and the Hugging Face learning-rate schedules with
//! linear warm-up. The moments live in plain `f32` vectors so a checkpoint stores them bit for bit.

use crate::config::Scheduler;
use crate::error::{Error, Result};
use candle_core::{Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// Optimizer settings.
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// AdamW state for a list of variables (same order every time).
pub struct AdamW {
    pub params: AdamWParams,
    /// Steps taken.
    pub t: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(params: AdamWParams, vars: &[&Var]) -> Self {
        let zeros = || vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        Self {
            params,
            t: 0,
            m: zeros(),
            v: zeros(),
        }
    }

    /// One update with gradients `grads` (flattened, same order as the variables), learning rate `lr`.
    pub fn step(&mut self, vars: &[&Var], grads: &[Vec<f32>], lr: f64) -> Result<()> {
        self.t += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.t as i32);
        let bc2_sqrt = (1.0 - p.beta2.powi(self.t as i32)).sqrt();
        let step_size = (lr / bc1) as f32;
        let decay = (1.0 - lr * p.weight_decay) as f32;
        let (b1, b2, eps) = (p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let bc2_sqrt = bc2_sqrt as f32;
        for (i, var) in vars.iter().enumerate() {
            let mut w: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
            let (m, v, g) = (&mut self.m[i], &mut self.v[i], &grads[i]);
            for j in 0..w.len() {
                w[j] *= decay;
                m[j] = b1 * m[j] + (1.0 - b1) * g[j];
                v[j] = b2 * v[j] + (1.0 - b2) * g[j] * g[j];
                let denom = v[j].sqrt() / bc2_sqrt + eps;
                w[j] -= step_size * m[j] / denom;
            }
            var.set(&Tensor::from_vec(w, var.dims(), var.device())?)?;
        }
        Ok(())
    }

    /// Writes the moments and step count as safetensors (`m.{i}`, `v.{i}`; metadata `t`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Vec<u8>, usize)> = Vec::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            for (k, x) in [("m", m), ("v", v)] {
                named.push((
                    format!("{k}.{i}"),
                    x.iter().flat_map(|f| f.to_le_bytes()).collect(),
                    x.len(),
                ));
            }
        }
        let views = named
            .iter()
            .map(|(n, b, len)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![*len], b)
                    .map(|v| (n.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Checkpoint(format!("optimizer state: {e}")))?;
        let meta = HashMap::from([("t".to_string(), self.t.to_string())]);
        let bytes = safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| Error::Checkpoint(format!("optimizer state: {e}")))?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    /// Reads state written by [`AdamW::save`] for the same variables.
    pub fn load(params: AdamWParams, vars: &[&Var], path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::Checkpoint(format!("{}: {m}", path.display()));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not an optimizer state file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not an optimizer state file: {e}")))?;
        let t = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("t"))
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| bad("no step count".into()))?;
        let mut out = Self::new(params, vars);
        out.t = t;
        for (i, var) in vars.iter().enumerate() {
            for (k, dst) in [("m", &mut out.m[i]), ("v", &mut out.v[i])] {
                let view = st
                    .tensor(&format!("{k}.{i}"))
                    .map_err(|_| bad(format!("missing {k}.{i}")))?;
                if view.dtype() != safetensors::Dtype::F32 || view.shape() != [var.elem_count()] {
                    return Err(bad(format!(
                        "{k}.{i} is {:?} {:?}, the adapter needs F32 [{}]",
                        view.dtype(),
                        view.shape(),
                        var.elem_count()
                    )));
                }
                for (d, c) in dst.iter_mut().zip(view.data().chunks_exact(4)) {
                    *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
        }
        Ok(out)
    }
}

/// Global L2 norm of all gradients (f64 accumulation, fixed order).
pub fn grad_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt()
}

/// Scales gradients so their global norm is at most `max_norm` (PyTorch's `clip_grad_norm_`);
/// returns the norm before clipping.
pub fn clip(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = grad_norm(grads);
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let c = coef as f32;
            grads.iter_mut().flatten().for_each(|g| *g *= c);
        }
    }
    norm
}

/// The learning rate for optimizer step `step` (0-based) of `total`, after `warmup` warm-up steps.
pub fn lr_at(kind: Scheduler, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = (step - warmup) as f64 / span;
    match kind {
        Scheduler::Constant => base,
        Scheduler::Linear => base * (1.0 - progress).max(0.0),
        Scheduler::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedules_follow_hugging_face() {
        assert_eq!(lr_at(Scheduler::Linear, 1.0, 0, 2, 10), 0.0);
        assert_eq!(lr_at(Scheduler::Linear, 1.0, 1, 2, 10), 0.5);
        assert_eq!(lr_at(Scheduler::Linear, 1.0, 2, 2, 10), 1.0);
        assert_eq!(lr_at(Scheduler::Linear, 1.0, 6, 2, 10), 0.5);
        assert!((lr_at(Scheduler::Cosine, 1.0, 6, 2, 10) - 0.5).abs() < 1e-12);
        assert_eq!(lr_at(Scheduler::Constant, 1.0, 9, 2, 10), 1.0);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        assert_eq!(clip(&mut g, 1.0), 5.0);
        assert!((grad_norm(&g) - 1.0).abs() < 1e-5);
        let mut g = vec![vec![0.3f32, 0.4]];
        clip(&mut g, 1.0);
        assert_eq!(g, vec![vec![0.3f32, 0.4]]);
    }

    #[test]
    fn adamw_state_round_trips_and_first_step_moves_by_lr() {
        let p = AdamWParams {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let var = Var::from_vec(vec![1f32, -1.0], 2, &Device::Cpu).unwrap();
        let mut opt = AdamW::new(p, &[&var]);
        opt.step(&[&var], &[vec![0.5, -2.0]], 0.1).unwrap();
        // Adam's first step moves each weight by lr·sign(g).
        let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!(
            (w[0] - 0.9).abs() < 1e-6 && (w[1] + 0.9).abs() < 1e-6,
            "{w:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("opt.safetensors");
        opt.save(&f).unwrap();
        let back = AdamW::load(p, &[&var], &f).unwrap();
        assert_eq!((back.t, &back.m, &back.v), (opt.t, &opt.m, &opt.v));
    }
}
