//! The on-chain commitment to an inference's attribution, carried by its receipt
//! (`IInference.recordInference`): the top-k contributions with their weights in parts per
//! million, and the Merkle root of the full list.
//!
//! The full list is every contribution with a weight of at least 1 ppm, heaviest first (ties by
//! id); a weight is `floor(weight × 1,000,000)`, so the list sums to at most 1,000,000. Each leaf
//! is `keccak256(abi.encodePacked(uint64 contributionId, uint32 weightPpm))`, in list order, in
//! the chain's depth-32 incremental Merkle tree (`openledger_types::merkle`). Anyone holding the
//! index, the prompt and the response recomputes the list and compares the root.

use crate::attribute::Attribution;
use alloy_primitives::{keccak256, B256};
use openledger_types::merkle::{self, Frontier};
use serde::{Deserialize, Serialize};

/// Parts per million in a whole.
pub const PPM: u32 = 1_000_000;

/// A contribution's committed weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weight {
    /// The contribution.
    pub contribution_id: u64,
    /// Its weight in parts per million.
    pub weight_ppm: u32,
}

/// What a receipt carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// The heaviest `k` of the full list.
    pub top: Vec<Weight>,
    /// Root of the full list.
    pub root: B256,
    /// Length of the full list.
    pub len: usize,
}

/// The full committed list of an attribution.
pub fn weights(a: &Attribution) -> Vec<Weight> {
    let mut list: Vec<Weight> = a
        .contributions
        .iter()
        .map(|c| Weight {
            contribution_id: c.contribution_id,
            weight_ppm: (c.weight.clamp(0.0, 1.0) * PPM as f64).floor() as u32,
        })
        .filter(|w| w.weight_ppm > 0)
        .collect();
    list.sort_by(|a, b| {
        b.weight_ppm
            .cmp(&a.weight_ppm)
            .then(a.contribution_id.cmp(&b.contribution_id))
    });
    list
}

/// The leaf of one entry.
pub fn leaf(w: &Weight) -> B256 {
    let mut buf = [0u8; 12];
    buf[..8].copy_from_slice(&w.contribution_id.to_be_bytes());
    buf[8..].copy_from_slice(&w.weight_ppm.to_be_bytes());
    keccak256(buf)
}

/// The root of a list.
pub fn root(list: &[Weight]) -> B256 {
    let mut f = Frontier::default();
    for w in list {
        f.push(leaf(w)).expect("fewer than 2^32 contributions");
    }
    f.root()
}

/// The commitment of an attribution with the top `k` listed.
pub fn commit(a: &Attribution, k: usize) -> Commitment {
    let list = weights(a);
    Commitment {
        top: list.iter().take(k).copied().collect(),
        root: root(&list),
        len: list.len(),
    }
}

/// The proof that entry `i` of `list` is in its root.
pub fn proof(list: &[Weight], i: usize) -> Option<Vec<B256>> {
    let leaves: Vec<B256> = list.iter().map(leaf).collect();
    merkle::proof(&leaves, i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::ContributionWeight;
    use alloy_primitives::Address;

    fn attribution(ws: &[(u64, f64)]) -> Attribution {
        Attribution {
            response_tokens: 10,
            coverage: ws.iter().map(|w| w.1).sum(),
            spans: vec![],
            contributions: ws
                .iter()
                .map(|&(id, weight)| ContributionWeight {
                    contribution_id: id,
                    contributor: Address::ZERO,
                    weight,
                    spans: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn the_commitment_orders_floors_and_roots_the_list() {
        let a = attribution(&[(4, 0.25), (9, 0.5), (2, 0.25), (7, 0.0000004)]);
        let c = commit(&a, 2);
        assert_eq!(c.len, 3, "a weight under 1 ppm is dropped");
        assert_eq!(
            c.top,
            vec![
                Weight {
                    contribution_id: 9,
                    weight_ppm: 500_000
                },
                Weight {
                    contribution_id: 2,
                    weight_ppm: 250_000
                },
            ]
        );
        let list = weights(&a);
        assert_eq!(list.iter().map(|w| w.weight_ppm).sum::<u32>(), 1_000_000);
        let p = proof(&list, 2).unwrap();
        assert_eq!(merkle::root_from_proof(leaf(&list[2]), 2, &p), c.root);
        // Any change of weight or id changes the root.
        assert_ne!(
            commit(&attribution(&[(4, 0.25), (9, 0.5), (2, 0.24)]), 2).root,
            c.root
        );
        assert_ne!(
            commit(&attribution(&[(5, 0.25), (9, 0.5), (2, 0.25)]), 2).root,
            c.root
        );
    }
}
