//! LSH banding over MinHash signatures (32 bands × 4 rows): rows sharing any band are candidates,
//! and candidates are confirmed by their estimated similarity. Pairs at Jaccard 0.8 share a band
//! with probability ≈ 1 − (1 − 0.8⁴)³² > 0.9999; pairs at 0.3 about 23% of the time (then dropped).
//!
//! Buckets are singly linked lists threaded through one flat array, so an insert allocates
//! nothing per bucket: `heads` maps a band key to the newest slot holding it, and `links[slot]`
//! points to the previous slot with the same key (slot = entry × [`BANDS`] + band). Because
//! every insert only pushes onto list heads, the newest entries can be taken out again exactly
//! ([`LshIndex::truncate`]), which the pipeline uses to drop a rejected file's rows.

use super::minhash::{Signature, PERMUTATIONS};
use crate::hash::{BuildKeyHasher, RowHash};
use std::collections::HashMap;

/// Number of bands.
pub const BANDS: usize = 32;
/// Signature components per band.
pub const ROWS_PER_BAND: usize = PERMUTATIONS / BANDS;

/// The band keys of one signature.
pub(crate) type BandKeys = [u64; BANDS];

/// End of a bucket's list.
const NONE: u32 = u32::MAX;

/// An index of row signatures for near-duplicate lookups.
#[derive(Clone, Debug, Default)]
pub struct LshIndex {
    entries: Vec<(RowHash, Signature)>,
    heads: HashMap<u64, u32, BuildKeyHasher>,
    links: Vec<u32>,
}

fn band_key(band: usize, sig: &Signature) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ band as u64;
    for &v in &sig.0[band * ROWS_PER_BAND..(band + 1) * ROWS_PER_BAND] {
        h = (h ^ v as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

/// Every band key of a signature.
pub(crate) fn band_keys(sig: &Signature) -> BandKeys {
    std::array::from_fn(|band| band_key(band, sig))
}

impl LshIndex {
    /// Makes room for `rows` more signatures.
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.entries.reserve(rows);
        self.heads.reserve(rows * BANDS);
        self.links.reserve(rows * BANDS);
    }

    /// Adds a row's signature.
    pub fn insert(&mut self, hash: RowHash, sig: Signature) {
        let keys = band_keys(&sig);
        self.insert_keyed(hash, sig, &keys);
    }

    /// Adds a row's signature whose band keys are already computed.
    pub(crate) fn insert_keyed(&mut self, hash: RowHash, sig: Signature, keys: &BandKeys) {
        let first_slot = (self.entries.len() * BANDS) as u32;
        for (band, &key) in keys.iter().enumerate() {
            let slot = first_slot + band as u32;
            let previous = self.heads.insert(key, slot).unwrap_or(NONE);
            self.links.push(previous);
        }
        self.entries.push((hash, sig));
    }

    /// Removes the entries inserted after the first `len`, newest first.
    pub(crate) fn truncate(&mut self, len: usize) {
        while self.entries.len() > len {
            let (_, sig) = self.entries.pop().expect("longer than len");
            for (band, key) in band_keys(&sig).into_iter().enumerate().rev() {
                let slot = self.entries.len() * BANDS + band;
                // This entry is the newest in its bucket, so its link is the bucket's next head.
                match self.links[slot] {
                    NONE => self.heads.remove(&key),
                    previous => self.heads.insert(key, previous),
                };
            }
            self.links.truncate(self.entries.len() * BANDS);
        }
    }

    /// Number of signatures held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most similar indexed row at or above `threshold` (earliest inserted on ties).
    pub fn most_similar(&self, sig: &Signature, threshold: f64) -> Option<(RowHash, f64)> {
        if self.is_empty() {
            return None;
        }
        self.most_similar_keyed(sig, &band_keys(sig), threshold)
    }

    /// [`most_similar`](Self::most_similar) with the band keys already computed.
    pub(crate) fn most_similar_keyed(
        &self,
        sig: &Signature,
        keys: &BandKeys,
        threshold: f64,
    ) -> Option<(RowHash, f64)> {
        let mut candidates: Vec<u32> = Vec::new();
        for key in keys {
            let head = self.heads.get(key).copied().unwrap_or(NONE);
            self.collect_bucket(head, &mut candidates);
        }
        self.best_of(candidates, sig, threshold)
    }

    /// Adds a row's signature and returns what [`most_similar`](Self::most_similar) returned just
    /// before, with one hash table probe per band instead of two: each insert hands back the
    /// bucket's previous head, which is where the earlier rows sharing that band start.
    pub(crate) fn insert_and_match(
        &mut self,
        hash: RowHash,
        sig: Signature,
        keys: &BandKeys,
        threshold: f64,
    ) -> Option<(RowHash, f64)> {
        let first_slot = (self.entries.len() * BANDS) as u32;
        let mut candidates: Vec<u32> = Vec::new();
        for (band, &key) in keys.iter().enumerate() {
            let previous = self
                .heads
                .insert(key, first_slot + band as u32)
                .unwrap_or(NONE);
            self.links.push(previous);
            self.collect_bucket(previous, &mut candidates);
        }
        let best = self.best_of(candidates, &sig, threshold);
        self.entries.push((hash, sig));
        best
    }

    /// Appends the entries of the bucket list starting at `slot`.
    fn collect_bucket(&self, mut slot: u32, candidates: &mut Vec<u32>) {
        while slot != NONE {
            candidates.push(slot / BANDS as u32);
            slot = self.links[slot as usize];
        }
    }

    /// The most similar candidate at or above `threshold`, the earliest inserted on ties.
    fn best_of(
        &self,
        mut candidates: Vec<u32>,
        sig: &Signature,
        threshold: f64,
    ) -> Option<(RowHash, f64)> {
        candidates.sort_unstable();
        candidates.dedup();
        let mut best: Option<(RowHash, f64)> = None;
        for id in candidates {
            let (hash, other) = &self.entries[id as usize];
            let s = sig.similarity(other);
            if s >= threshold && best.is_none_or(|(_, b)| s > b) {
                best = Some((*hash, s));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(seed: u32) -> Signature {
        Signature(std::array::from_fn(|i| seed * 1000 + i as u32))
    }

    #[test]
    fn finds_the_most_similar_and_forgets_truncated_entries() {
        let mut index = LshIndex::default();
        let a = sig(1);
        let mut b = a.clone();
        b.0[..20].fill(7); // 108/128 equal to a
        index.insert([1; 32], sig(2));
        index.insert([2; 32], b.clone());
        assert_eq!(index.most_similar(&a, 0.8), Some(([2; 32], 108.0 / 128.0)));
        index.insert([3; 32], a.clone());
        assert_eq!(index.most_similar(&a, 0.8), Some(([3; 32], 1.0)));
        index.insert([4; 32], a.clone());
        assert_eq!(
            index.most_similar(&a, 0.8),
            Some(([3; 32], 1.0)),
            "earliest"
        );
        index.truncate(2);
        assert_eq!(index.len(), 2);
        assert_eq!(index.most_similar(&a, 0.8), Some(([2; 32], 108.0 / 128.0)));
        index.truncate(0);
        assert!(index.is_empty() && index.heads.is_empty() && index.links.is_empty());
        assert_eq!(index.most_similar(&b, 0.5), None);
    }

    #[test]
    fn insert_and_match_answers_like_a_lookup_before_the_insert() {
        let a = sig(1);
        let mut b = a.clone();
        b.0[..20].fill(7);
        let mut c = a.clone();
        c.0[100..].fill(9);
        let mut looked_up = LshIndex::default();
        let mut combined = LshIndex::default();
        for (i, s) in [sig(2), a.clone(), b, sig(3), a, c].into_iter().enumerate() {
            let expected = looked_up.most_similar(&s, 0.7);
            looked_up.insert([i as u8; 32], s.clone());
            let got = combined.insert_and_match([i as u8; 32], s.clone(), &band_keys(&s), 0.7);
            assert_eq!(got, expected, "{i}");
            assert_eq!(got.is_some(), [2, 4, 5].contains(&i), "{i}");
        }
    }
}
