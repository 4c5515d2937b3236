//! The chain: a store plus the pending block. Transactions are executed as they arrive (as an
//! L2 sequencer does) against the pending block's state; a rejected one changes nothing and its
//! sender gets the reason. Sealing computes the transactions, receipts and state roots, builds
//! an Ethereum header and commits everything in one store transaction. An idle sequencer seals
//! empty blocks ([`Chain::seal_or_empty`]); a transaction that changes the governed parameters
//! puts them in force for the transactions after it.
//!
//! Every operation changes the chain only by complete steps, whatever fails:
//! - a transaction executes against a read-only view that borrows the pending block's writes;
//!   only after it has executed in full (and fits the block) are its effects added. A panic in
//!   execution is caught and becomes a rejection ([`ChainError::TxPanicked`]); the pending block
//!   is exactly as it was before.
//! - sealing keeps the pending block until the store has committed it. A failed commit (a full
//!   disk) leaves every acknowledged transaction pending, to be sealed by the next attempt; a
//!   commit that reports an error although the block landed is recognised (the block is read
//!   back) and not committed twice. While a full pending block cannot be sealed, new
//!   transactions are refused ([`ChainError::SealFailed`]), so the pending block stays bounded
//!   by the block gas limit.

use alloy_consensus::{
    proofs::{calculate_receipt_root, calculate_transaction_root},
    Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxEnvelope,
    EMPTY_OMMER_ROOT_HASH,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Bloom, Bytes, B256};
use openledger_state::{
    apply_tx, executor::Outcome, genesis::genesis_writes, modules::params, Env, ExecError,
    StateRead, StorageError, VerifiedTx, WriteSet, STATE_FORMAT,
};
use openledger_store::{BlockRecord, Store, StoreError, TxRecord};
use openledger_types::{modules::STAKING, Genesis, Params};
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::Path,
    sync::Arc,
};

/// Why the chain could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("invalid genesis: {0}")]
    Genesis(String),
    #[error("verification failed at block {block}: {reason}")]
    Mismatch { block: u64, reason: String },
    /// The database was written in another state layout than this build's: replaying its
    /// blocks here would end in other state roots.
    #[error(
        "the database at {path} was written {found}, and this build reads and writes state \
         format {expected}: its blocks would replay to other state roots here. Start a new chain \
         home (`openledger init --force` replaces this one's data and keeps its keys), or run \
         the build that wrote it"
    )]
    StateFormat {
        path: String,
        found: String,
        expected: u64,
    },
    /// Executing the transaction panicked (a bug in the node): it was rejected and changed
    /// nothing.
    #[error(
        "internal error: executing transaction {tx} panicked ({message}); the transaction was \
         rejected and the pending block is unchanged"
    )]
    TxPanicked { tx: B256, message: String },
    /// Sealing panicked (a bug in the node): nothing was committed, the pending block is kept.
    #[error(
        "internal error: sealing block {block} panicked ({message}); nothing was committed and \
         its transactions stay pending"
    )]
    SealPanicked { block: u64, message: String },
    /// The pending-transaction journal could not be written (or opened).
    #[error(
        "the pending-transaction journal failed for transaction {tx} ({message}): it is not \
         acknowledged as durable (a crash before its block could lose it); check the disk and \
         look for its receipt before sending it again"
    )]
    Journal { tx: B256, message: String },
    /// The node is stopping and accepts no more transactions.
    #[error(
        "the node is shutting down and accepts no more transactions; send it again once it is back"
    )]
    ShuttingDown,
    /// The node stopped with acknowledged transactions it could not seal.
    #[error(
        "{count} acknowledged transactions could not be sealed before shutdown ({source}); \
         they were not committed: {hashes}"
    )]
    Unsealed {
        count: usize,
        hashes: String,
        source: Box<ChainError>,
    },
    /// The pending block is full and could not be sealed, so the transaction was not accepted.
    #[error(
        "the pending block {block} is full and could not be sealed ({source}); transaction {tx} \
         was not accepted, retry it later (the {pending} transactions already accepted are kept \
         and will be sealed once the store recovers)"
    )]
    SealFailed {
        block: u64,
        tx: B256,
        pending: usize,
        source: Box<ChainError>,
    },
}

struct Pending {
    env: Env,
    params: Params,
    writes: WriteSet,
    txs: Vec<(VerifiedTx, Outcome)>,
    hashes: std::collections::HashSet<B256>,
    gas_used: u64,
    /// Seal it even without transactions (an idle block, or the replay of an empty one).
    seal_empty: bool,
}

/// The state a transaction executes against: the pending block's writes, borrowed (never moved,
/// so nothing a failing transaction does can lose them), over the store.
struct PendingView<'a> {
    store: &'a Store,
    writes: &'a WriteSet,
}

impl StateRead for PendingView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get(key),
        }
    }
}

/// The text of a caught panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The node's chain state.
pub struct Chain {
    store: Arc<Store>,
    chain_id: u64,
    durable: bool,
    pending: Option<Pending>,
    #[cfg(feature = "fault-injection")]
    panic_on: Option<B256>,
}

/// What sealing a block produced.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub number: u64,
    pub hash: B256,
    pub txs: usize,
}

/// The block the pending transactions would make if it were sealed now.
#[derive(Clone, Debug)]
pub struct PendingBlock {
    /// Its header. The state root is only computed when the block is sealed: here it is zero.
    pub header: Header,
    /// Its transactions, in order, as they would be recorded.
    pub txs: Vec<TxRecord>,
}

impl Chain {
    /// Opens the chain database at `db`, writing block 0 from `genesis` if it is new, and
    /// checking that an existing database was made from the same genesis.
    pub fn open(db: &Path, genesis: &Genesis, durable: bool) -> Result<Chain, ChainError> {
        let store = Arc::new(Store::open(db)?);
        let writes = genesis_writes(genesis).map_err(ChainError::Genesis)?;
        let chain = Chain {
            store,
            chain_id: genesis.chain_id,
            durable,
            pending: None,
            #[cfg(feature = "fault-injection")]
            panic_on: None,
        };
        match chain.store.head()? {
            None => {
                let (state_root, batch) = chain.store.state_root_after(0, &writes)?;
                let header = Header {
                    parent_hash: B256::ZERO,
                    ommers_hash: EMPTY_OMMER_ROOT_HASH,
                    beneficiary: STAKING,
                    state_root,
                    transactions_root: alloy_consensus::EMPTY_ROOT_HASH,
                    receipts_root: alloy_consensus::EMPTY_ROOT_HASH,
                    number: 0,
                    gas_limit: genesis.params.block_gas_limit,
                    timestamp: genesis.timestamp,
                    extra_data: Bytes::from_static(b"openledger genesis"),
                    base_fee_per_gas: Some(genesis.params.min_gas_price_wei),
                    ..Default::default()
                };
                let block = BlockRecord {
                    header,
                    tx_hashes: vec![],
                };
                chain
                    .store
                    .commit_block(&block, &[], &writes, batch, true)?;
                chain.store.set_state_format(Some(STATE_FORMAT))?;
            }
            Some(_) => {
                let g = chain
                    .store
                    .block(0)?
                    .ok_or_else(|| ChainError::Genesis("database has no block 0".into()))?;
                let expected = genesis_root(genesis)?;
                if g.header.state_root != expected || g.header.timestamp != genesis.timestamp {
                    return Err(ChainError::Genesis(format!(
                        "the database at {} was created from a different genesis (state root {} vs {expected})",
                        db.display(),
                        g.header.state_root
                    )));
                }
                chain.check_state_format(db)?;
            }
        }
        Ok(chain)
    }

    /// Refuses a database written in another state format than [`STATE_FORMAT`]. One that holds
    /// only its genesis block (whose root was just checked against this build's) and no format,
    /// as when a first start stopped between its two writes, gets the format recorded.
    fn check_state_format(&self, db: &Path) -> Result<(), ChainError> {
        let found = self.store.state_format()?;
        if found == Some(STATE_FORMAT) {
            return Ok(());
        }
        if found.is_none() && self.store.head()?.unwrap_or(0) == 0 {
            self.store.set_state_format(Some(STATE_FORMAT))?;
            return Ok(());
        }
        Err(ChainError::StateFormat {
            path: db.display().to_string(),
            found: match found {
                Some(f) => format!("in state format {f}"),
                None => "by an older build, before state formats were recorded".to_string(),
            },
            expected: STATE_FORMAT,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The EIP-155 chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The newest sealed block.
    pub fn head(&self) -> Result<BlockRecord, ChainError> {
        let n = self.store.head()?.unwrap_or(0);
        self.store.block(n)?.ok_or_else(|| ChainError::Mismatch {
            block: n,
            reason: "head block missing".into(),
        })
    }

    /// The parameters in force for the next transaction.
    pub fn params(&self) -> Result<Params, ChainError> {
        match &self.pending {
            Some(p) => Ok(p.params.clone()),
            None => Ok(params::load(&*self.store).map_err(ExecError::from)?),
        }
    }

    /// Runs `f` over the pending state (latest sealed state plus accepted, unsealed transactions).
    pub fn with_pending_state<T>(&self, f: impl FnOnce(&dyn StateRead) -> T) -> T {
        match &self.pending {
            None => f(&*self.store),
            Some(p) => f(&PendingView {
                store: &self.store,
                writes: &p.writes,
            }),
        }
    }

    /// The environment the next transaction executes in.
    pub fn pending_env(&self, now: u64) -> Result<Env, ChainError> {
        match &self.pending {
            Some(p) => Ok(p.env.clone()),
            None => {
                let head = self.head()?;
                Ok(Env {
                    chain_id: self.chain_id,
                    block_number: head.header.number + 1,
                    timestamp: now.max(head.header.timestamp),
                })
            }
        }
    }

    /// Accepted transactions not sealed yet.
    pub fn pending_txs(&self) -> impl Iterator<Item = &VerifiedTx> {
        self.pending
            .iter()
            .flat_map(|p| p.txs.iter().map(|(t, _)| t))
    }

    /// A new, empty pending block on top of the head, opened at `timestamp`.
    fn new_block(&self, timestamp: u64) -> Result<Pending, ChainError> {
        let head = self.head()?;
        Ok(Pending {
            env: Env {
                chain_id: self.chain_id,
                block_number: head.header.number + 1,
                timestamp: timestamp.max(head.header.timestamp),
            },
            params: params::load(&*self.store).map_err(ExecError::from)?,
            writes: WriteSet::new(),
            txs: Vec::new(),
            hashes: Default::default(),
            gas_used: 0,
            seal_empty: false,
        })
    }

    /// Executes `tx` against `view` in the environment of `p`, catching a panic and turning it
    /// into a rejection.
    fn execute(
        &self,
        view: &dyn StateRead,
        p: &Pending,
        tx: &VerifiedTx,
    ) -> Result<Outcome, ChainError> {
        let run = || {
            #[cfg(feature = "fault-injection")]
            if self.panic_on == Some(tx.hash) {
                let view = PanicAfterReads {
                    inner: view,
                    reads: Default::default(),
                    after: 2,
                };
                return apply_tx(&view, &p.env, &p.params, tx);
            }
            apply_tx(view, &p.env, &p.params, tx)
        };
        // Unwind safety: the closure only reads. The view and `p` are shared borrows of state
        // nothing mutates during the call; everything execution writes lives in an overlay that
        // apply_tx owns and that is dropped with the panic.
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(result) => Ok(result?),
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(
                    tx = %tx.hash,
                    sender = %tx.sender,
                    "executing a transaction panicked: {message}; it was rejected and the \
                     pending block is unchanged (this is a bug, please report it)"
                );
                Err(ChainError::TxPanicked {
                    tx: tx.hash,
                    message,
                })
            }
        }
    }

    /// Executes a verified transaction into the pending block (opened at `now` if none is
    /// open). A full block is sealed first. A rejected transaction — however it fails, a panic
    /// included — leaves the pending block exactly as it was.
    pub fn submit(&mut self, tx: VerifiedTx, now: u64) -> Result<B256, ChainError> {
        let in_pending = self
            .pending
            .as_ref()
            .is_some_and(|p| p.hashes.contains(&tx.hash));
        if in_pending || self.store.tx(&tx.hash)?.is_some() {
            return Err(ExecError::AlreadyKnown(tx.hash).into());
        }
        // Phase 1, read-only: execute against a view of the pending block (or of a new one that
        // is only kept if the transaction is accepted).
        let mut fresh = None;
        let pending = match &self.pending {
            Some(p) => p,
            None => fresh.insert(self.new_block(now)?),
        };
        let view = PendingView {
            store: &self.store,
            writes: &pending.writes,
        };
        let outcome = self.execute(&view, pending, &tx)?;
        // A transaction that changed the parameters (an executed governance proposal) puts
        // them in force from the next transaction on.
        let new_params = match outcome.writes.get(params::KEY) {
            Some(Some(raw)) => Some(params::decode(raw).map_err(ExecError::from)?),
            _ => None,
        };
        let limit = pending.params.block_gas_limit;
        let fits = pending
            .gas_used
            .checked_add(outcome.gas_used)
            .is_some_and(|total| total <= limit);
        if !fits {
            if pending.txs.is_empty() {
                return Err(ExecError::BlockFull {
                    needed: outcome.gas_used,
                    limit,
                }
                .into());
            }
            let (block, accepted) = (pending.env.block_number, pending.txs.len());
            if let Err(e) = self.seal() {
                return Err(ChainError::SealFailed {
                    block,
                    tx: tx.hash,
                    pending: accepted,
                    source: Box::new(e),
                });
            }
            return self.submit(tx, now);
        }
        // Phase 2: the transaction executed in full and fits; add its effects. Nothing below
        // can fail.
        let pending = match (fresh, &mut self.pending) {
            (Some(p), slot) => slot.insert(p),
            (None, Some(p)) => p,
            (None, None) => {
                return Err(ChainError::Mismatch {
                    block: 0,
                    reason: "the pending block vanished while a transaction executed".into(),
                })
            }
        };
        let mut outcome = outcome;
        pending.gas_used += outcome.gas_used;
        pending.writes.extend(std::mem::take(&mut outcome.writes));
        if let Some(p) = new_params {
            pending.params = p;
        }
        let hash = tx.hash;
        pending.hashes.insert(hash);
        pending.txs.push((tx, outcome));
        Ok(hash)
    }

    /// The header (its state root left zero) and the transaction records of the block `p`
    /// makes on top of `parent`.
    fn build_block(p: &Pending, parent: &BlockRecord) -> (Header, Vec<TxRecord>) {
        let number = p.env.block_number;
        let mut cumulative = 0u64;
        let mut bloom = Bloom::default();
        let mut receipts = Vec::with_capacity(p.txs.len());
        let mut records = Vec::with_capacity(p.txs.len());
        let mut log_index = 0u64;
        for (i, (tx, out)) in p.txs.iter().enumerate() {
            cumulative += out.gas_used;
            let receipt = Receipt {
                status: Eip658Value::Eip658(true),
                cumulative_gas_used: cumulative,
                logs: out.logs.clone(),
            };
            let with_bloom: ReceiptWithBloom<Receipt> = receipt.with_bloom();
            bloom |= with_bloom.logs_bloom;
            receipts.push(match &tx.envelope {
                TxEnvelope::Legacy(_) => ReceiptEnvelope::Legacy(with_bloom),
                TxEnvelope::Eip2930(_) => ReceiptEnvelope::Eip2930(with_bloom),
                _ => ReceiptEnvelope::Eip1559(with_bloom),
            });
            records.push(TxRecord {
                hash: tx.hash,
                block_number: number,
                index: i as u64,
                sender: tx.sender,
                raw: tx.encoded().into(),
                gas_used: out.gas_used,
                cumulative_gas_used: cumulative,
                gas_price: out.gas_price,
                first_log_index: log_index,
                logs: out.logs.clone(),
            });
            log_index += out.logs.len() as u64;
        }
        let envelopes: Vec<&TxEnvelope> = p.txs.iter().map(|(t, _)| &t.envelope).collect();
        let header = Header {
            parent_hash: parent.hash(),
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: STAKING,
            state_root: B256::ZERO,
            transactions_root: calculate_transaction_root(&envelopes),
            receipts_root: calculate_receipt_root(&receipts),
            logs_bloom: bloom,
            number,
            gas_limit: p.params.block_gas_limit,
            gas_used: cumulative,
            timestamp: p.env.timestamp,
            extra_data: Bytes::from_static(b"openledger"),
            base_fee_per_gas: Some(p.params.min_gas_price_wei),
            ..Default::default()
        };
        (header, records)
    }

    /// The block the pending transactions would make if sealed now (an empty one on top of the
    /// head, timestamped `now`, when nothing is pending). Its state root is zero: it is only
    /// computed when the block is sealed.
    pub fn pending_block(&self, now: u64) -> Result<PendingBlock, ChainError> {
        let parent = self.head()?;
        let fresh;
        let p = match &self.pending {
            Some(p) => p,
            None => {
                fresh = self.new_block(now)?;
                &fresh
            }
        };
        let (header, txs) = Self::build_block(p, &parent);
        Ok(PendingBlock { header, txs })
    }

    /// Seals the pending block, if it holds any transaction. The pending block is kept until
    /// the store has committed it: if the commit fails, every transaction stays pending and the
    /// next call tries again.
    pub fn seal(&mut self) -> Result<Option<Sealed>, ChainError> {
        let Some(number) = self.pending.as_ref().map(|p| p.env.block_number) else {
            return Ok(None);
        };
        // Unwind safety: seal_pending changes `self` only by its last step (clearing the
        // pending block once the commit succeeded); a panic before it leaves everything as it
        // was, and the store's write transaction, dropped unfinished, is aborted.
        match catch_unwind(AssertUnwindSafe(|| self.seal_pending())) {
            Ok(r) => r,
            Err(payload) => {
                let message = panic_message(&*payload);
                tracing::error!(
                    block = number,
                    "sealing panicked: {message}; nothing was committed and the transactions \
                     stay pending (this is a bug, please report it)"
                );
                Err(ChainError::SealPanicked {
                    block: number,
                    message,
                })
            }
        }
    }

    fn seal_pending(&mut self) -> Result<Option<Sealed>, ChainError> {
        let Some(p) = self.pending.as_ref() else {
            return Ok(None);
        };
        if p.txs.is_empty() && !p.seal_empty {
            self.pending = None;
            return Ok(None);
        }
        let number = p.env.block_number;
        let parent = self.head()?;
        if parent.header.number >= number {
            // A commit that reported an error landed after all: the block is there already.
            return match self.landed(p, number)? {
                Some(sealed) => {
                    self.pending = None;
                    Ok(Some(sealed))
                }
                None => Err(ChainError::Mismatch {
                    block: number,
                    reason: "the store already holds a different block at the pending block's \
                             height; the pending block cannot be sealed"
                        .into(),
                }),
            };
        }
        let (mut header, records) = Self::build_block(p, &parent);
        let (state_root, batch) = self.store.state_root_after(number, &p.writes)?;
        header.state_root = state_root;
        let block = BlockRecord {
            header,
            tx_hashes: p.txs.iter().map(|(t, _)| t.hash).collect(),
        };
        let sealed = Sealed {
            number,
            hash: block.hash(),
            txs: records.len(),
        };
        if let Err(e) = self
            .store
            .commit_block(&block, &records, &p.writes, batch, self.durable)
        {
            // The commit may have landed although it reported an error; if it did, the block is
            // sealed and must not be written again.
            if let Ok(Some(landed)) = self.landed(p, number) {
                if landed.hash == sealed.hash {
                    tracing::warn!(
                        block = number,
                        "the store reported an error ({e}) but the block was committed"
                    );
                    self.pending = None;
                    return Ok(Some(landed));
                }
            }
            return Err(e.into());
        }
        self.pending = None;
        Ok(Some(sealed))
    }

    /// Seals the pending block, or, when none is open, an empty block timestamped `now` (as an
    /// OP Stack sequencer does every block time, so time-based deadlines pass on chain without
    /// traffic).
    pub fn seal_or_empty(&mut self, now: u64) -> Result<Option<Sealed>, ChainError> {
        if self.pending.is_none() {
            let mut empty = self.new_block(now)?;
            empty.seal_empty = true;
            self.pending = Some(empty);
        }
        self.seal()
    }

    /// Block `number` as the store holds it, if it is the block of exactly `p`'s transactions.
    fn landed(&self, p: &Pending, number: u64) -> Result<Option<Sealed>, ChainError> {
        let Some(block) = self.store.block(number)? else {
            return Ok(None);
        };
        let same = block.tx_hashes.len() == p.txs.len()
            && block
                .tx_hashes
                .iter()
                .zip(&p.txs)
                .all(|(h, (t, _))| *h == t.hash);
        Ok(same.then(|| Sealed {
            number,
            hash: block.hash(),
            txs: block.tx_hashes.len(),
        }))
    }

    /// Re-executes block `number` of `source` into this chain and checks that every root and
    /// the block hash come out identical.
    pub fn replay_block(&mut self, source: &Store, number: u64) -> Result<(), ChainError> {
        let mismatch = |reason: String| ChainError::Mismatch {
            block: number,
            reason,
        };
        let block = source
            .block(number)?
            .ok_or_else(|| mismatch("block is missing".into()))?;
        let mut env = self.pending_env(block.header.timestamp)?;
        env.timestamp = block.header.timestamp;
        if env.block_number != number {
            return Err(mismatch(format!(
                "expected block {} next",
                env.block_number
            )));
        }
        self.pending = Some(Pending {
            env,
            seal_empty: true,
            ..self.new_block(block.header.timestamp)?
        });
        for (i, hash) in block.tx_hashes.iter().enumerate() {
            let rec = source
                .tx(hash)?
                .ok_or_else(|| mismatch(format!("transaction {hash} is missing")))?;
            let envelope = TxEnvelope::decode_2718(&mut rec.raw.as_ref())
                .map_err(|e| mismatch(format!("transaction {i} does not decode: {e}")))?;
            let tx = openledger_state::tx::verify_envelope(envelope, self.chain_id)
                .map_err(|e| mismatch(format!("transaction {i} ({hash}): {e}")))?;
            if tx.hash != *hash || tx.sender != rec.sender {
                return Err(mismatch(format!(
                    "transaction {i} hash or sender differs from its record"
                )));
            }
            self.submit(tx, block.header.timestamp).map_err(|e| {
                mismatch(format!("transaction {i} ({hash}) no longer applies: {e}"))
            })?;
        }
        let sealed = self.seal()?;
        let ours = self
            .store
            .block(number)?
            .filter(|_| sealed.is_some() || block.tx_hashes.is_empty());
        let ours = ours.ok_or_else(|| mismatch("replay produced no block".into()))?;
        for (what, a, b) in [
            (
                "state root",
                ours.header.state_root,
                block.header.state_root,
            ),
            (
                "transactions root",
                ours.header.transactions_root,
                block.header.transactions_root,
            ),
            (
                "receipts root",
                ours.header.receipts_root,
                block.header.receipts_root,
            ),
            (
                "parent hash",
                ours.header.parent_hash,
                block.header.parent_hash,
            ),
            ("block hash", ours.hash(), block.hash()),
        ] {
            if a != b {
                return Err(mismatch(format!(
                    "{what} is {b} in the database but {a} on replay"
                )));
            }
        }
        Ok(())
    }
}

/// A state view that panics on its `after`-th read, so a transaction panics in the middle of
/// its execution (fault injection for tests).
#[cfg(feature = "fault-injection")]
struct PanicAfterReads<'a> {
    inner: &'a dyn StateRead,
    reads: std::cell::Cell<u32>,
    after: u32,
}

#[cfg(feature = "fault-injection")]
impl StateRead for PanicAfterReads<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.reads.set(self.reads.get() + 1);
        if self.reads.get() >= self.after {
            panic!("injected fault: transaction execution panicked");
        }
        self.inner.get(key)
    }
}

#[cfg(feature = "fault-injection")]
impl Chain {
    /// Makes the execution of transaction `hash` panic midway (tests only).
    pub fn inject_panic(&mut self, hash: B256) {
        self.panic_on = Some(hash);
    }

    /// The pending block's state writes, if a block is open (tests only).
    pub fn pending_writes(&self) -> Option<WriteSet> {
        self.pending.as_ref().map(|p| p.writes.clone())
    }
}

/// The state root of block 0 for `genesis`.
pub fn genesis_root(genesis: &Genesis) -> Result<B256, ChainError> {
    let dir = tempdir_path();
    let result = (|| {
        let store = Store::open(&dir)?;
        let writes = genesis_writes(genesis).map_err(ChainError::Genesis)?;
        Ok(store.state_root_after(0, &writes)?.0)
    })();
    let _ = std::fs::remove_file(&dir);
    result
}

fn tempdir_path() -> std::path::PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "openledger-genesis-{}-{n}.redb",
        std::process::id()
    ))
}

/// Replays every block of the database at `db` from `genesis` into a scratch database and
/// checks every root and hash. Calls `progress(block, head)` after each block. Returns the
/// number of blocks checked.
pub fn verify(
    db: &Path,
    genesis: &Genesis,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, ChainError> {
    let source = Chain::open(db, genesis, true)?;
    let head = source.store.head()?.unwrap_or(0);
    let scratch = tempdir_path();
    let result = (|| {
        let mut replay = Chain::open(&scratch, genesis, false)?;
        let (a, b) = (source.store.block(0)?, replay.store.block(0)?);
        if a.map(|b| b.hash()) != b.map(|b| b.hash()) {
            return Err(ChainError::Mismatch {
                block: 0,
                reason: "genesis block differs".into(),
            });
        }
        for n in 1..=head {
            replay.replay_block(&source.store, n)?;
            progress(n, head);
        }
        Ok(head)
    })();
    let _ = std::fs::remove_file(&scratch);
    result
}
