//! Proof that a row is in a datanet version: the row's BLAKE3 hash leads through its
//! contribution's row tree to the `rowsRoot`; the contribution's version leaf
//! (`keccak256(contributionId, rowsRoot, rowCount)`) leads through the version tree to the version
//! root the chain records. [`DatanetProof::verify`] recomputes both paths from the row's text
//! and says which step fails; comparing the version root (and the contributor) with the chain is
//! the caller's last step.

use crate::{
    hash::{row_hash, to_b256},
    merkle::RowProof,
    row::Row,
    rowset::RowSet,
};
use alloy_primitives::{Address, B256};
use openledger_types::merkle::{self, version_leaf, DEPTH};
use serde::{Deserialize, Serialize};

/// Why a proof does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The row text does not hash to the proof's row hash.
    #[error("the row's text hashes to {actual}, not to the proof's row hash {claimed}: the row was altered")]
    RowText {
        /// In the proof.
        claimed: B256,
        /// Of the row.
        actual: B256,
    },
    /// The row path does not lead to the rows root.
    #[error("the row path from row {index} does not lead to the rows root {rows_root}")]
    RowPath {
        /// The row's index.
        index: u64,
        /// The claimed root.
        rows_root: B256,
    },
    /// The version path does not lead to the version root.
    #[error("contribution {contribution}'s leaf does not lead to the version root {root} of version {version}")]
    VersionPath {
        /// The contribution.
        contribution: u64,
        /// The version.
        version: u64,
        /// The claimed root.
        root: B256,
    },
    /// A field is out of range.
    #[error("malformed proof: {0}")]
    Malformed(String),
}

/// A row's inclusion proof against a datanet version root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatanetProof {
    /// The datanet.
    pub datanet_id: u64,
    /// The version proven against.
    pub version: u64,
    /// That version's root on chain.
    pub version_root: B256,
    /// The contribution that brought the row.
    pub contribution_id: u64,
    /// Its contributor (checked against the chain, not by the paths).
    pub contributor: Address,
    /// The row itself.
    pub row: Row,
    /// Its BLAKE3 hash.
    pub row_hash: B256,
    /// Its index among the contribution's rows.
    pub row_index: u64,
    /// Sibling hashes from the row up to the rows root.
    pub row_path: Vec<B256>,
    /// The contribution's rows root.
    pub rows_root: B256,
    /// The contribution's row count.
    pub row_count: u64,
    /// The contribution's position among the version's approved contributions (version − 1 of
    /// the version it created).
    pub leaf_index: u64,
    /// Sibling hashes from the contribution's leaf up to the version root.
    pub version_path: Vec<B256>,
}

/// What a proof is built from, besides the row set.
#[derive(Clone, Debug)]
pub struct ProofContext<'a> {
    /// The datanet.
    pub datanet_id: u64,
    /// The version proven against.
    pub version: u64,
    /// The contribution that brought the row.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
    /// Version-tree leaves of versions 1..=`version`, in order.
    pub version_leaves: &'a [B256],
    /// The contribution's position among them.
    pub leaf_index: usize,
}

impl DatanetProof {
    /// Builds the proof of row `row_index` of `rows`; `None` when an index is out of range.
    pub fn new(ctx: &ProofContext<'_>, rows: &RowSet, row_index: usize) -> Option<DatanetProof> {
        let row_proof = rows.proof(row_index)?;
        let version_path = merkle::proof(ctx.version_leaves, ctx.leaf_index)?;
        let version_root = merkle::root_from_proof(
            ctx.version_leaves[ctx.leaf_index],
            ctx.leaf_index as u64,
            &version_path,
        );
        Some(DatanetProof {
            datanet_id: ctx.datanet_id,
            version: ctx.version,
            version_root,
            contribution_id: ctx.contribution_id,
            contributor: ctx.contributor,
            row: rows.rows[row_index].clone(),
            row_hash: row_proof.row_hash,
            row_index: row_index as u64,
            row_path: row_proof.path,
            rows_root: rows.root,
            row_count: rows.rows.len() as u64,
            leaf_index: ctx.leaf_index as u64,
            version_path,
        })
    }

    /// Checks the row text, the row path and the version path. On success the row is in the
    /// version whose root is `self.version_root`; compare that with the chain.
    pub fn verify(&self) -> Result<(), ProofError> {
        if self.row_path.len() != DEPTH || self.version_path.len() != DEPTH {
            return Err(ProofError::Malformed(format!(
                "paths must have {DEPTH} hashes (row path has {}, version path {})",
                self.row_path.len(),
                self.version_path.len()
            )));
        }
        if self.row_index >= self.row_count || self.leaf_index >= self.version.max(1) {
            return Err(ProofError::Malformed(format!(
                "row {} of {} rows, leaf {} of version {}",
                self.row_index, self.row_count, self.leaf_index, self.version
            )));
        }
        let actual = to_b256(&row_hash(&self.row));
        if actual != self.row_hash {
            return Err(ProofError::RowText {
                claimed: self.row_hash,
                actual,
            });
        }
        let row_proof = RowProof {
            row_hash: self.row_hash,
            index: self.row_index,
            path: self.row_path.clone(),
            rows_root: self.rows_root,
        };
        if !row_proof.verify() {
            return Err(ProofError::RowPath {
                index: self.row_index,
                rows_root: self.rows_root,
            });
        }
        let leaf = version_leaf(self.contribution_id, self.rows_root, self.row_count);
        if merkle::root_from_proof(leaf, self.leaf_index, &self.version_path) != self.version_root {
            return Err(ProofError::VersionPath {
                contribution: self.contribution_id,
                version: self.version,
                root: self.version_root,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ingest, rowset, Limits, Schema, SourceFile};
    use std::collections::HashSet;

    fn set(text: &str) -> RowSet {
        let file = SourceFile::new("f.txt", text);
        let c = ingest(&[file], Schema::Text, &Limits::default(), &HashSet::new()).unwrap();
        RowSet::decode(&rowset::encode(&c), Schema::Text).unwrap()
    }

    fn proof() -> DatanetProof {
        let a = set("Bees forage within three kilometres.\n\nQueens mate in flight.");
        let b = set("Smoke calms a colony.\n\nA frame holds wax comb.\n\nDrones have no sting.");
        let leaves = [
            version_leaf(4, a.root, a.rows.len() as u64),
            version_leaf(7, b.root, b.rows.len() as u64),
        ];
        let ctx = ProofContext {
            datanet_id: 1,
            version: 2,
            contribution_id: 7,
            contributor: Address::repeat_byte(9),
            version_leaves: &leaves,
            leaf_index: 1,
        };
        let p = DatanetProof::new(&ctx, &b, 2).unwrap();
        let mut f = openledger_types::merkle::Frontier::default();
        leaves.iter().for_each(|l| f.push(*l).unwrap());
        assert_eq!(
            p.version_root,
            f.root(),
            "the root is the chain's version root"
        );
        p
    }

    #[test]
    fn a_proof_verifies_and_every_kind_of_tampering_fails() {
        let p = proof();
        assert_eq!(p.verify(), Ok(()));
        let json = serde_json::to_string(&p).unwrap();
        let back: DatanetProof = serde_json::from_str(&json).unwrap();
        assert_eq!(back.verify(), Ok(()));

        let mut t = p.clone();
        t.row = Row::text("Drones have a sting.");
        assert!(matches!(t.verify(), Err(ProofError::RowText { .. })));

        let mut t = p.clone();
        t.row_index = 1;
        assert!(matches!(t.verify(), Err(ProofError::RowPath { .. })));

        let mut t = p.clone();
        t.row_path[0] = B256::repeat_byte(1);
        assert!(matches!(t.verify(), Err(ProofError::RowPath { .. })));

        let mut t = p.clone();
        t.contribution_id = 8;
        assert!(matches!(t.verify(), Err(ProofError::VersionPath { .. })));

        let mut t = p.clone();
        t.row_count = 4;
        assert!(matches!(t.verify(), Err(ProofError::VersionPath { .. })));

        let mut t = p.clone();
        t.version_root = B256::repeat_byte(2);
        assert!(matches!(t.verify(), Err(ProofError::VersionPath { .. })));

        let mut t = p.clone();
        t.version_path.pop();
        assert!(matches!(t.verify(), Err(ProofError::Malformed(_))));
    }
}
