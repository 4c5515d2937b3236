//! The Jellyfish Merkle tree over state (SHA-256, jmt crate) kept in redb: nodes by node key,
//! values by (key hash, version) so any past block's state can be read.

use crate::{Context, Store, StoreError, JMT_NODES, JMT_VALUES};
use alloy_primitives::B256;
use jmt::{
    storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch},
    KeyHash, OwnedValue, Sha256Jmt, Version,
};
use openledger_state::{StateRead, StorageError, WriteSet};
use redb::{ReadableDatabase, WriteTransaction};

/// The state tree's key for a state key.
pub fn key_hash(key: &[u8]) -> KeyHash {
    KeyHash::with::<sha2::Sha256>(key)
}

fn value_key(hash: &KeyHash, version: Version) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&hash.0);
    k[32..].copy_from_slice(&version.to_be_bytes());
    k
}

impl TreeReader for Store {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        let key = borsh::to_vec(node_key)?;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JMT_NODES)?;
        match t.get(key.as_slice())? {
            None => Ok(None),
            Some(v) => Ok(Some(borsh::from_slice(v.value())?)),
        }
    }

    fn get_value_option(
        &self,
        max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        let tx = self.db.begin_read()?;
        let t = tx.open_table(JMT_VALUES)?;
        let lo = value_key(&key_hash, 0);
        let hi = value_key(&key_hash, max_version);
        let mut range = t.range(lo.as_slice()..=hi.as_slice())?;
        match range.next_back() {
            None => Ok(None),
            Some(entry) => {
                let (_, v) = entry?;
                let v = v.value();
                Ok(if v.first() == Some(&1) {
                    Some(v[1..].to_vec())
                } else {
                    None
                })
            }
        }
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("state restore from chunks is not supported; replay blocks with `openledger verify` instead")
    }
}

pub(crate) fn root_after(
    store: &Store,
    version: u64,
    writes: &WriteSet,
) -> Result<(B256, TreeUpdateBatch), StoreError> {
    let tree = Sha256Jmt::new(store);
    let set = writes.iter().map(|(k, v)| (key_hash(k), v.clone()));
    let (root, batch) = tree
        .put_value_set(set, version)
        .ctx(&format!("updating the state tree for block {version}"))?;
    Ok((B256::from(root.0), batch))
}

pub(crate) fn write_batch(
    wtx: &WriteTransaction,
    batch: TreeUpdateBatch,
) -> Result<(), StoreError> {
    let mut nodes = wtx.open_table(JMT_NODES).ctx("writing state-tree nodes")?;
    for (k, n) in batch.node_batch.nodes() {
        let k = borsh::to_vec(k).ctx("encoding a state-tree node key")?;
        let n = borsh::to_vec(n).ctx("encoding a state-tree node")?;
        nodes
            .insert(k.as_slice(), n.as_slice())
            .ctx("writing state-tree nodes")?;
    }
    let mut values = wtx
        .open_table(JMT_VALUES)
        .ctx("writing state-tree values")?;
    for ((version, hash), v) in batch.node_batch.values() {
        let enc = match v {
            Some(v) => [&[1u8][..], v].concat(),
            None => vec![0u8],
        };
        values
            .insert(value_key(hash, *version).as_slice(), enc.as_slice())
            .ctx("writing state-tree values")?;
    }
    Ok(())
}

/// State as of one block, read from the state tree's versioned values.
pub struct StateAt<'a> {
    pub(crate) store: &'a Store,
    pub(crate) version: u64,
}

impl StateRead for StateAt<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.store
            .get_value_option(self.version, key_hash(key))
            .map_err(|e| StorageError(format!("reading state at block {}: {e}", self.version)))
    }
}
