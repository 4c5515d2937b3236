//! Embedded storage for an OpenLedger node, in one redb file:
//!
//! - the flat latest state (key → value) that execution reads;
//! - the Jellyfish Merkle tree over that state (nodes and versioned values), whose root every
//!   block header commits to, and which answers reads of any past block's state;
//! - the block log: headers with their transaction hashes, and per-transaction records (raw
//!   transaction, sender, gas, logs) for receipts and log queries.
//!
//! - beside it, [`BlobStore`]: content-addressed files for off-chain data (datanet rows).
//!
//! A block and all its state changes are committed in one redb write transaction, so a crash
//! leaves the store at the previous block or the new one, never in between.
//!
//! With the `fault-injection` feature (tests only, never in release builds), [`Store::inject_commit_fault`]
//! makes the next block commits fail as a full disk would, so callers can prove that a failed
//! commit loses nothing.

mod blobs;
mod records;
mod state_tree;

pub use blobs::{blob_id, blob_uri, parse_blob_uri, BlobError, BlobStore, URI_SCHEME};
pub use records::{BlockRecord, TxRecord};
pub use state_tree::{key_hash, StateAt};

use alloy_primitives::B256;
use jmt::storage::TreeUpdateBatch;
use openledger_state::{StateRead, StorageError, WriteSet};
use redb::{Database, ReadableDatabase, TableDefinition};
use std::path::Path;

const STATE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("state");
const JMT_NODES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_nodes");
const JMT_VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("jmt_values");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_HASHES: TableDefinition<&[u8], u64> = TableDefinition::new("block_hashes");
const TXS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("txs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("store: {context}: {source}")]
pub struct StoreError {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StoreError {
    fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError {
            context: context.into(),
            source: source.into(),
        }
    }
}

trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<Box<dyn std::error::Error + Send + Sync>>> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::new(what, e))
    }
}

impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        StorageError(e.to_string())
    }
}

/// The node's database.
pub struct Store {
    db: Database,
    #[cfg(feature = "fault-injection")]
    faults: std::sync::Mutex<std::collections::VecDeque<CommitFault>>,
}

/// How an injected commit failure behaves (`fault-injection` feature, tests only).
#[cfg(feature = "fault-injection")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFault {
    /// Every write of the block is made, then the transaction is aborted and the commit
    /// reports "no space left on device": nothing lands.
    DiskFull,
    /// The block is committed, then an I/O error is reported anyway (as an fsync error after
    /// the data reached the disk can be): the block landed though the caller was told it failed.
    ErrorAfterCommit,
}

impl Store {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let db = Database::create(path).map_err(|e| {
            let hint = if e.to_string().to_lowercase().contains("lock")
                || e.to_string().contains("already open")
            {
                " (is a node already running on this home? stop it first)"
            } else {
                ""
            };
            StoreError::new(format!("opening {}{hint}", path.display()), e)
        })?;
        let tx = db.begin_write().ctx("starting the first write")?;
        for t in [STATE, JMT_NODES, JMT_VALUES, TXS] {
            tx.open_table(t).ctx("creating tables")?;
        }
        tx.open_table(BLOCKS).ctx("creating tables")?;
        tx.open_table(BLOCK_HASHES).ctx("creating tables")?;
        tx.open_table(META).ctx("creating tables")?;
        tx.commit().ctx("creating tables")?;
        Ok(Store {
            db,
            #[cfg(feature = "fault-injection")]
            faults: Default::default(),
        })
    }

    /// Makes the next block commits fail, one fault per commit in order (tests only).
    #[cfg(feature = "fault-injection")]
    pub fn inject_commit_fault(&self, faults: &[CommitFault]) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(faults.iter().copied());
    }

    #[cfg(feature = "fault-injection")]
    fn next_fault(&self) -> Option<CommitFault> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// The number of the newest committed block, if any.
    pub fn head(&self) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().ctx("reading head")?;
        let t = tx.open_table(META).ctx("reading head")?;
        let v = t.get("head").ctx("reading head")?;
        Ok(v.map(|v| u64::from_be_bytes(v.value().try_into().unwrap_or_default())))
    }

    /// The state format the database was written in (see `openledger_state::STATE_FORMAT`), if
    /// one was recorded.
    pub fn state_format(&self) -> Result<Option<u64>, StoreError> {
        let what = "reading the state format";
        let tx = self.db.begin_read().ctx(what)?;
        let t = tx.open_table(META).ctx(what)?;
        let Some(v) = t.get("state_format").ctx(what)? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.value().try_into().map_err(|_| {
            StoreError::new(
                what.to_string(),
                format!("the recorded format is {} bytes, not 8", v.value().len()),
            )
        })?;
        Ok(Some(u64::from_be_bytes(bytes)))
    }

    /// Records the state format the database is written in (`None` removes the record).
    pub fn set_state_format(&self, format: Option<u64>) -> Result<(), StoreError> {
        let what = "recording the state format";
        let tx = self.db.begin_write().ctx(what)?;
        {
            let mut t = tx.open_table(META).ctx(what)?;
            match format {
                Some(f) => t
                    .insert("state_format", f.to_be_bytes().as_slice())
                    .ctx(what)?,
                None => t.remove("state_format").ctx(what)?,
            };
        }
        tx.commit().ctx(what)
    }

    /// A block by number.
    pub fn block(&self, number: u64) -> Result<Option<BlockRecord>, StoreError> {
        let tx = self.db.begin_read().ctx("reading a block")?;
        let t = tx.open_table(BLOCKS).ctx("reading a block")?;
        let Some(v) = t.get(number).ctx("reading a block")? else {
            return Ok(None);
        };
        BlockRecord::decode(v.value())
            .map(Some)
            .ctx(&format!("decoding block {number}"))
    }

    /// A block number by block hash.
    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().ctx("reading a block hash")?;
        let t = tx.open_table(BLOCK_HASHES).ctx("reading a block hash")?;
        Ok(t.get(hash.as_slice())
            .ctx("reading a block hash")?
            .map(|v| v.value()))
    }

    /// A transaction record by hash.
    pub fn tx(&self, hash: &B256) -> Result<Option<TxRecord>, StoreError> {
        let tx = self.db.begin_read().ctx("reading a transaction")?;
        let t = tx.open_table(TXS).ctx("reading a transaction")?;
        let Some(v) = t.get(hash.as_slice()).ctx("reading a transaction")? else {
            return Ok(None);
        };
        TxRecord::decode(v.value())
            .map(Some)
            .ctx(&format!("decoding transaction {hash}"))
    }

    /// The state as of block `number` (its post-state), read from the state tree's history.
    pub fn state_at(&self, number: u64) -> StateAt<'_> {
        StateAt {
            store: self,
            version: number,
        }
    }

    /// Computes the state root after applying `writes` as version `version` (the block
    /// number), without committing anything.
    pub fn state_root_after(
        &self,
        version: u64,
        writes: &WriteSet,
    ) -> Result<(B256, TreeUpdateBatch), StoreError> {
        state_tree::root_after(self, version, writes)
    }

    /// Commits a block atomically: its state writes, state-tree nodes, block and transaction
    /// records, and the new head. `durable` fsyncs before returning.
    pub fn commit_block(
        &self,
        block: &BlockRecord,
        txs: &[TxRecord],
        writes: &WriteSet,
        tree: TreeUpdateBatch,
        durable: bool,
    ) -> Result<(), StoreError> {
        let number = block.header.number;
        let what = format!("committing block {number}");
        let mut wtx = self.db.begin_write().ctx(&what)?;
        if !durable {
            wtx.set_durability(redb::Durability::None).ctx(&what)?;
        }
        {
            let mut state = wtx.open_table(STATE).ctx(&what)?;
            for (k, v) in writes {
                match v {
                    Some(v) => state.insert(k.as_slice(), v.as_slice()).ctx(&what)?,
                    None => state.remove(k.as_slice()).ctx(&what)?,
                };
            }
            state_tree::write_batch(&wtx, tree).ctx(&what)?;
            let mut t = wtx.open_table(TXS).ctx(&what)?;
            for r in txs {
                t.insert(r.hash.as_slice(), r.encode().as_slice())
                    .ctx(&what)?;
            }
            wtx.open_table(BLOCKS)
                .ctx(&what)?
                .insert(number, block.encode().as_slice())
                .ctx(&what)?;
            wtx.open_table(BLOCK_HASHES)
                .ctx(&what)?
                .insert(block.hash().as_slice(), number)
                .ctx(&what)?;
            wtx.open_table(META)
                .ctx(&what)?
                .insert("head", number.to_be_bytes().as_slice())
                .ctx(&what)?;
        }
        #[cfg(feature = "fault-injection")]
        if let Some(fault) = self.next_fault() {
            let disk_full = || {
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device (injected fault)",
                )
            };
            match fault {
                CommitFault::DiskFull => {
                    wtx.abort().ctx(&what)?;
                    return Err(disk_full()).ctx(&what);
                }
                CommitFault::ErrorAfterCommit => {
                    wtx.commit().ctx(&what)?;
                    return Err(disk_full()).ctx(&what);
                }
            }
        }
        wtx.commit().ctx(&what)
    }
}

impl StateRead for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let tx = self.db.begin_read().ctx("reading state")?;
        let t = tx.open_table(STATE).ctx("reading state")?;
        Ok(t.get(key).ctx("reading state")?.map(|v| v.value().to_vec()))
    }
}
