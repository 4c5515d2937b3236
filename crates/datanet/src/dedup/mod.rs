//! Deduplication against what a datanet already holds: exact copies by row hash (the first
//! contributor keeps the credit; later copies are rejected) and near-duplicates by MinHash + LSH
//! (reported with the matched row and the estimated Jaccard similarity).
//!
//! [`KnownRows`] is what the pipeline asks; [`DatanetIndex`] is the in-memory implementation, and
//! a persistent store can implement the trait later.

pub mod lsh;
pub mod minhash;

pub use lsh::LshIndex;
pub use minhash::{signature, signature_of_parts, Signature};

use crate::{
    hash::{BuildKeyHasher, RowHash},
    ingest::Contribution,
};
use std::collections::HashSet;

/// Rows a datanet already holds, as seen by deduplication.
pub trait KnownRows: Sync {
    /// Whether a row with this hash is already in the datanet.
    fn contains(&self, hash: &RowHash) -> bool;
    /// The most similar existing row at or above `threshold`, with its estimated similarity.
    fn most_similar(&self, sig: &Signature, threshold: f64) -> Option<(RowHash, f64)>;
}

/// Exact-duplicate checks only (no signatures kept).
impl KnownRows for HashSet<RowHash> {
    fn contains(&self, hash: &RowHash) -> bool {
        HashSet::contains(self, hash)
    }
    fn most_similar(&self, _: &Signature, _: f64) -> Option<(RowHash, f64)> {
        None
    }
}

/// An in-memory index of a datanet's rows: their hashes and MinHash signatures.
#[derive(Clone, Debug, Default)]
pub struct DatanetIndex {
    hashes: HashSet<RowHash, BuildKeyHasher>,
    near: LshIndex,
}

impl DatanetIndex {
    /// Adds one row (ignored when its hash is already present).
    pub fn insert(&mut self, hash: RowHash, sig: Option<Signature>) {
        if self.hashes.insert(hash) {
            if let Some(sig) = sig {
                self.near.insert(hash, sig);
            }
        }
    }

    /// Adds every accepted row of a contribution.
    pub fn add_contribution(&mut self, c: &Contribution) {
        for row in &c.rows {
            self.insert(row.hash, row.signature.clone());
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

impl KnownRows for DatanetIndex {
    fn contains(&self, hash: &RowHash) -> bool {
        self.hashes.contains(hash)
    }
    fn most_similar(&self, sig: &Signature, threshold: f64) -> Option<(RowHash, f64)> {
        self.near.most_similar(sig, threshold)
    }
}
