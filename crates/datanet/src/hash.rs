//! Row hashes: BLAKE3 of the canonical JSON of the normalised row. The 32 bytes are the row's
//! identity for deduplication, the blob store's name, and (as a `B256`) its Merkle leaf.
//!
//! Also [`KeyHasher`], the hasher of the in-memory maps keyed by such hashes (row hashes, LSH
//! band keys): their keys are already uniformly random, so a multiply per 8 bytes mixed with a
//! per-process random seed does the job of SipHash at a fraction of its cost.

use crate::row::Row;
use alloy_primitives::B256;
use std::hash::{BuildHasher, Hasher, RandomState};

/// A row's 32-byte BLAKE3 hash.
pub type RowHash = [u8; 32];

/// The hash of an (already normalised) row.
pub fn row_hash(row: &Row) -> RowHash {
    hash_canonical(&row.canonical_json())
}

/// The hash of a row's canonical JSON bytes.
pub fn hash_canonical(canonical_json: &[u8]) -> RowHash {
    *blake3::hash(canonical_json).as_bytes()
}

/// The hash as a Merkle leaf.
pub fn to_b256(hash: &RowHash) -> B256 {
    B256::from(*hash)
}

/// A fast hasher for keys that are already hashes (see the module doc). Not for keys an attacker
/// can choose freely bit by bit; the random seed keeps collisions from being planned ahead.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(26);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Fold the well-mixed high half into the low bits, which pick hash table buckets.
        self.0 ^ (self.0 >> 32)
    }
}

/// Builds [`KeyHasher`]s from a seed drawn once per map from the standard library's randomness.
#[derive(Clone, Copy, Debug)]
pub struct BuildKeyHasher(u64);

impl Default for BuildKeyHasher {
    fn default() -> Self {
        Self(RandomState::new().hash_one(0x0DA7_A5E7_u64))
    }
}

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_blake3_of_canonical_json() {
        let row = Row::prompt_response("Q", "A");
        assert_eq!(row.canonical_json(), br#"{"prompt":"Q","response":"A"}"#);
        assert_eq!(
            row_hash(&row),
            *blake3::hash(br#"{"prompt":"Q","response":"A"}"#).as_bytes()
        );
        assert_ne!(row_hash(&Row::text("a")), row_hash(&Row::text("b")));
    }
}
