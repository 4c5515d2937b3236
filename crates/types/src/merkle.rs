//! An append-only, depth-32 keccak Merkle tree kept as a frontier (the Ethereum deposit-contract
//! construction): O(depth) storage and work per append, and standard Merkle inclusion proofs.
//! Datanet version roots are roots of this tree over approved contributions.

use alloy_primitives::{keccak256, B256};
use alloy_sol_types::SolValue;

/// Depth of the tree: up to 2^32 leaves.
pub const DEPTH: usize = 32;

fn hash_pair(a: &B256, b: &B256) -> B256 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a.as_slice());
    buf[32..].copy_from_slice(b.as_slice());
    keccak256(buf)
}

/// The roots of all-empty subtrees: `zero[0]` is the empty leaf, `zero[i+1] = H(zero[i], zero[i])`
/// (computed once per process: every root of a tree not yet full reads them).
pub fn zero_hashes() -> [B256; DEPTH + 1] {
    static ZERO: std::sync::LazyLock<[B256; DEPTH + 1]> = std::sync::LazyLock::new(|| {
        let mut z = [B256::ZERO; DEPTH + 1];
        for i in 0..DEPTH {
            z[i + 1] = hash_pair(&z[i], &z[i]);
        }
        z
    });
    *ZERO
}

/// The frontier of an incremental Merkle tree: the left siblings still needed for future roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Number of leaves appended.
    pub count: u64,
    /// `branch[i]` is the root of the last complete left subtree at height `i`.
    pub branch: Vec<B256>,
}

impl Frontier {
    /// Appends a leaf. Errors when the tree is full.
    pub fn push(&mut self, leaf: B256) -> Result<(), &'static str> {
        if self.count >= (1u64 << DEPTH) {
            return Err("merkle tree is full");
        }
        self.branch.resize(DEPTH, B256::ZERO);
        let mut node = leaf;
        let mut size = self.count + 1;
        for i in 0..DEPTH {
            if size & 1 == 1 {
                self.branch[i] = node;
                break;
            }
            node = hash_pair(&self.branch[i], &node);
            size >>= 1;
        }
        self.count += 1;
        Ok(())
    }

    /// The current root.
    pub fn root(&self) -> B256 {
        let zero = zero_hashes();
        let mut node = B256::ZERO;
        let mut size = self.count;
        for (i, z) in zero.iter().enumerate().take(DEPTH) {
            node = if size & 1 == 1 {
                hash_pair(&self.branch[i], &node)
            } else {
                hash_pair(&node, z)
            };
            size >>= 1;
        }
        node
    }
}

/// The leaf an approved contribution adds to its datanet's version tree:
/// `keccak256(abi.encodePacked(contributionId, rowsRoot, rowCount))`.
pub fn version_leaf(contribution_id: u64, rows_root: B256, row_count: u64) -> B256 {
    keccak256((contribution_id, rows_root, row_count).abi_encode_packed())
}

/// A leaf's sibling path, bottom-up.
pub fn proof(leaves: &[B256], index: usize) -> Option<Vec<B256>> {
    if index >= leaves.len() {
        return None;
    }
    let zero = zero_hashes();
    let mut level: Vec<B256> = leaves.to_vec();
    let mut idx = index;
    let mut path = Vec::with_capacity(DEPTH);
    for z in zero.iter().take(DEPTH) {
        let sibling = level.get(idx ^ 1).copied().unwrap_or(*z);
        path.push(sibling);
        let next: Vec<B256> = level
            .chunks(2)
            .map(|c| hash_pair(&c[0], c.get(1).unwrap_or(z)))
            .collect();
        level = next;
        idx >>= 1;
    }
    Some(path)
}

/// Recomputes the root from a leaf, its index and its path.
pub fn root_from_proof(leaf: B256, index: u64, path: &[B256]) -> B256 {
    let mut node = leaf;
    for (i, sib) in path.iter().enumerate() {
        node = if (index >> i) & 1 == 1 {
            hash_pair(sib, &node)
        } else {
            hash_pair(&node, sib)
        };
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_root_matches_full_tree_and_proofs_verify() {
        let leaves: Vec<B256> = (0u8..13).map(|i| keccak256([i])).collect();
        let mut f = Frontier::default();
        for (n, leaf) in leaves.iter().enumerate() {
            f.push(*leaf).unwrap();
            let root = f.root();
            for i in 0..=n {
                let p = proof(&leaves[..=n], i).unwrap();
                assert_eq!(root_from_proof(leaves[i], i as u64, &p), root);
            }
        }
        let p = proof(&leaves, 3).unwrap();
        assert_ne!(
            root_from_proof(leaves[4], 3, &p),
            f.root(),
            "a wrong leaf must not verify"
        );
    }

    #[test]
    fn zero_hashes_are_the_deposit_contract_ones_on_every_call() {
        // keccak256 of 64 zero bytes, the deposit contract's first zero hash.
        let h1: B256 = "0xad3228b676f7d3cd4284a5443f17f1962b36e491b30a40b2405849e597ba5fb5"
            .parse()
            .unwrap();
        let (a, b) = (zero_hashes(), zero_hashes());
        assert_eq!((a[0], a[1]), (B256::ZERO, h1));
        assert_eq!(a, b);
        assert_eq!(a[DEPTH], hash_pair(&a[DEPTH - 1], &a[DEPTH - 1]));
    }

    #[test]
    fn empty_root_is_the_zero_subtree() {
        assert_eq!(Frontier::default().root(), zero_hashes()[DEPTH]);
    }
}
