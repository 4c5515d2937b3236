//! Per-sequence key/value caches, one pair per layer, kept where the forward path that fills them runs.
//!
//! The CPU inference path reads and appends plain f32 host buffers in `[position, kv_head, head_dim]`
//! order, so appending a step is one copy and attention reads rows in place. The candle path (training
//! and other devices) keeps a mirror as tensors on the model's device, `[kv_head, capacity, head_dim]`
//! with spare capacity, so a decode step writes its new rows in place and attention reads the cache
//! without any copy through host memory.
//!
//! Each side records how many positions it holds. A cache filled by one path and continued by the
//! other is brought up to date on the side that needs it (only the missing rows move), so a cache
//! never depends on which path filled it.

use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

/// One layer's keys and values on a device: `[kv_heads, capacity, head_dim]`, the first `len`
/// positions valid. Rows past `len` are zeros or stale finite values (masked by attention).
#[derive(Debug)]
pub(crate) struct DeviceKv {
    pub(crate) k: Tensor,
    pub(crate) v: Tensor,
    pub(crate) len: usize,
}

impl DeviceKv {
    fn capacity(&self) -> usize {
        self.k.dims()[1]
    }

    /// A deep copy: the buffers are written in place, so clones must not share them.
    fn deep_clone(&self) -> Result<Self> {
        Ok(Self {
            k: self.k.copy()?,
            v: self.v.copy()?,
            len: self.len,
        })
    }
}

/// One layer's cached keys and values.
#[derive(Debug, Default)]
pub struct LayerCache {
    /// Host rows (CPU inference path), `[position, kv_head, head_dim]`.
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
    /// Device rows (candle path).
    pub(crate) dev: Option<DeviceKv>,
}

impl Clone for LayerCache {
    fn clone(&self) -> Self {
        Self {
            k: self.k.clone(),
            v: self.v.clone(),
            // A copy that fails (device out of memory) leaves the clone without its mirror; it is
            // rebuilt from the host rows when the candle path needs it, or the pass reports why not.
            dev: self.dev.as_ref().and_then(|d| d.deep_clone().ok()),
        }
    }
}

impl LayerCache {
    /// Appends the keys and values of new positions (each `n · kv_heads · head_dim` values) to the
    /// host buffers.
    pub(crate) fn append(&mut self, k: &[f32], v: &[f32]) {
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
    }

    /// Forgets every position from `pos` on (a pass that failed part-way may have written some).
    pub(crate) fn truncate(&mut self, pos: usize, kv_width: usize) {
        self.k.truncate(pos * kv_width);
        self.v.truncate(pos * kv_width);
        if let Some(d) = &mut self.dev {
            d.len = d.len.min(pos);
        }
    }

    /// Positions held by the device mirror (0 without one).
    pub(crate) fn device_len(&self) -> usize {
        self.dev.as_ref().map_or(0, |d| d.len)
    }

    /// Makes the host buffers hold the first `pos` positions, reading missing rows from the device.
    pub(crate) fn sync_host(&mut self, pos: usize, kvh: usize, hd: usize) -> Result<()> {
        let w = kvh * hd;
        let have = self.k.len() / w;
        if have >= pos {
            return Ok(());
        }
        let d = match &self.dev {
            Some(d) if d.len >= pos => d,
            _ => return Err(lost(pos, have.max(self.device_len()))),
        };
        let rows = |t: &Tensor| -> Result<Vec<f32>> {
            Ok(t.narrow(1, have, pos - have)?
                .transpose(0, 1)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let (k, v) = (rows(&d.k)?, rows(&d.v)?);
        self.append(&k, &v);
        Ok(())
    }

    /// Makes the device mirror on `device` hold the first `pos` positions with room for `reserve`,
    /// uploading rows only the host buffers hold.
    pub(crate) fn sync_device(
        &mut self,
        pos: usize,
        reserve: usize,
        kvh: usize,
        hd: usize,
        device: &Device,
    ) -> Result<()> {
        if let Some(d) = &self.dev {
            if !d.k.device().same_device(device) {
                // A mirror left on another device: keep its rows on the host, then start afresh here.
                self.sync_host(pos, kvh, hd)?;
                self.dev = None;
            }
        }
        self.reserve(reserve.max(pos), kvh, hd, device)?;
        let w = kvh * hd;
        let d = self.dev.as_mut().expect("reserved above");
        if d.len >= pos {
            return Ok(());
        }
        let from = d.len;
        if self.k.len() < pos * w {
            return Err(lost(pos, (self.k.len() / w).max(from)));
        }
        let up = |buf: &[f32]| -> Result<Tensor> {
            Ok(
                Tensor::from_slice(&buf[from * w..pos * w], (pos - from, kvh, hd), device)?
                    .transpose(0, 1)?
                    .contiguous()?,
            )
        };
        d.k.slice_set(&up(&self.k)?, 1, from)?;
        d.v.slice_set(&up(&self.v)?, 1, from)?;
        d.len = pos;
        Ok(())
    }

    /// Grows the device mirror (doubling) to hold at least `need` positions.
    fn reserve(&mut self, need: usize, kvh: usize, hd: usize, device: &Device) -> Result<()> {
        let cap = self.dev.as_ref().map_or(0, DeviceKv::capacity);
        if cap >= need && self.dev.is_some() {
            return Ok(());
        }
        let new_cap = need.max(2 * cap).max(16);
        let grow = |old: Option<&Tensor>, len: usize| -> Result<Tensor> {
            let t = Tensor::zeros((kvh, new_cap, hd), DType::F32, device)?;
            if let Some(old) = old.filter(|_| len > 0) {
                t.slice_set(&old.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
            }
            Ok(t)
        };
        let len = self.device_len();
        let d = self.dev.as_ref();
        let (k, v) = (grow(d.map(|d| &d.k), len)?, grow(d.map(|d| &d.v), len)?);
        self.dev = Some(DeviceKv { k, v, len });
        Ok(())
    }

    /// Writes new rows `[kv_heads, n, head_dim]` (contiguous) at position `at` of the device mirror,
    /// which must already hold `at` positions and have room for `at + n`.
    pub(crate) fn write_device(&mut self, k: &Tensor, v: &Tensor, at: usize) -> Result<()> {
        let d = self.dev.as_mut().ok_or_else(|| lost(at, 0))?;
        if d.len < at {
            return Err(lost(at, d.len));
        }
        d.k.slice_set(k, 1, at)?;
        d.v.slice_set(v, 1, at)?;
        d.len = at + k.dim(1)?;
        Ok(())
    }
}

fn lost(pos: usize, have: usize) -> ModelError {
    ModelError::Generation(format!(
        "KV cache holds {have} of its sequence's {pos} positions (was it used with another model?)"
    ))
}

/// A sequence's KV cache and position.
#[derive(Debug, Clone)]
pub struct SeqCache {
    pub(crate) layers: Vec<LayerCache>,
    pub(crate) pos: usize,
}

impl SeqCache {
    /// An empty cache for a model with `layers` layers.
    pub(crate) fn new(layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); layers],
            pos: 0,
        }
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Bytes the cached keys and values occupy (the positions held, on whichever side holds more;
    /// spare device capacity not counted).
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| {
                let host = (l.k.len() + l.v.len()) * std::mem::size_of::<f32>();
                let dev = l.dev.as_ref().map_or(0, |d| {
                    let (kvh, _, hd) = d.k.dims3().unwrap_or((0, 0, 0));
                    2 * d.len * kvh * hd * std::mem::size_of::<f32>()
                });
                host.max(dev)
            })
            .sum()
    }
}
