//! The row-set Merkle root (`rowsRoot` of `IDatanet.contribute`) and row inclusion proofs, on the
//! chain's own tree (`openledger_types::merkle`: keccak, depth 32) with the rows' BLAKE3 hashes as
//! leaves in row order.

use crate::hash::{to_b256, RowHash};
use alloy_primitives::B256;
use openledger_types::merkle::{self, Frontier, DEPTH};
use serde::{Deserialize, Serialize};

/// The Merkle root over row hashes, in order. The empty set has the all-zero tree's root.
pub fn rows_root(hashes: &[RowHash]) -> B256 {
    let mut f = Frontier::default();
    for h in hashes {
        f.push(to_b256(h))
            .expect("a file-size-bounded contribution has far fewer than 2^32 rows");
    }
    f.root()
}

/// Proof that a row is at `index` in the row set with root `rows_root`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowProof {
    /// The row's BLAKE3 hash.
    pub row_hash: B256,
    /// The row's position.
    pub index: u64,
    /// Sibling hashes, bottom-up ([`DEPTH`] of them).
    pub path: Vec<B256>,
    /// The root the proof is for.
    pub rows_root: B256,
}

impl RowProof {
    /// Builds the proof for row `index` of `hashes`; `None` when out of range.
    pub fn new(hashes: &[RowHash], index: usize) -> Option<Self> {
        let leaves: Vec<B256> = hashes.iter().map(to_b256).collect();
        let path = merkle::proof(&leaves, index)?;
        let rows_root = merkle::root_from_proof(leaves[index], index as u64, &path);
        Some(Self {
            row_hash: leaves[index],
            index: index as u64,
            path,
            rows_root,
        })
    }

    /// Whether the path leads from the row hash at the index to the root.
    pub fn verify(&self) -> bool {
        self.path.len() == DEPTH
            && self.index < (1u64 << DEPTH)
            && merkle::root_from_proof(self.row_hash, self.index, &self.path) == self.rows_root
    }

    /// Whether the proof verifies and is for this (normalised) row.
    pub fn verify_row(&self, row: &crate::Row) -> bool {
        self.row_hash == to_b256(&crate::row_hash(row)) && self.verify()
    }
}
