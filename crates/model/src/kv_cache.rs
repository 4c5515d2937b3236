//! Per-sequence key/value caches: plain f32 buffers, one pair per layer, in `[position, kv_head, head_dim]`
//! order, so appending a step is one copy and attention reads rows in place.
//!
//! Both forward paths (the CPU inference path and the candle path used for training and other devices)
//! read and append the same buffers, so a cache never depends on which path filled it.

/// One layer's cached keys and values.
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    pub(crate) k: Vec<f32>,
    pub(crate) v: Vec<f32>,
}

impl LayerCache {
    /// Appends the keys and values of new positions (each `n · kv_heads · head_dim` values).
    pub(crate) fn append(&mut self, k: &[f32], v: &[f32]) {
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
    }
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

    /// Bytes the cached keys and values occupy.
    pub fn size_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.len() + l.v.len()) * std::mem::size_of::<f32>())
            .sum()
    }
}
