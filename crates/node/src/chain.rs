//! The chain: a store plus the pending block. Transactions are executed as they arrive (as an
//! L2 sequencer does) against the pending block's state; a rejected one changes nothing and its
//! sender gets the reason. Sealing computes the transactions, receipts and state roots, builds
//! an Ethereum header and commits everything in one store transaction.

use alloy_consensus::{
    proofs::{calculate_receipt_root, calculate_transaction_root},
    Eip658Value, Header, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxEnvelope,
    EMPTY_OMMER_ROOT_HASH,
};
use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Bloom, Bytes, B256};
use openledger_state::{
    apply_tx, executor::Outcome, genesis::genesis_writes, modules::params, Env, ExecError, Overlay,
    StateRead, VerifiedTx, WriteSet,
};
use openledger_store::{BlockRecord, Store, StoreError, TxRecord};
use openledger_types::{modules::STAKING, Genesis, Params};
use std::{path::Path, sync::Arc};

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
}

struct Pending {
    env: Env,
    params: Params,
    writes: WriteSet,
    txs: Vec<(VerifiedTx, Outcome)>,
    hashes: std::collections::HashSet<B256>,
    gas_used: u64,
}

/// The node's chain state.
pub struct Chain {
    store: Arc<Store>,
    chain_id: u64,
    durable: bool,
    pending: Option<Pending>,
}

/// What sealing a block produced.
#[derive(Clone, Debug)]
pub struct Sealed {
    pub number: u64,
    pub hash: B256,
    pub txs: usize,
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
            }
        }
        Ok(chain)
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
        let base: &dyn StateRead = &*self.store;
        match &self.pending {
            None => f(base),
            Some(p) => {
                let o = Overlay::with_writes(base, p.writes.clone());
                f(&o)
            }
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

    fn open_block(&mut self, timestamp: u64) -> Result<&mut Pending, ChainError> {
        if self.pending.is_none() {
            let env = self.pending_env(timestamp)?;
            let params = params::load(&*self.store).map_err(ExecError::from)?;
            self.pending = Some(Pending {
                env,
                params,
                writes: WriteSet::new(),
                txs: Vec::new(),
                hashes: Default::default(),
                gas_used: 0,
            });
        }
        Ok(self.pending.as_mut().expect("just opened"))
    }

    /// Executes a verified transaction into the pending block (opened at `now` if none is
    /// open). A full block is sealed first. Rejections change nothing.
    pub fn submit(&mut self, tx: VerifiedTx, now: u64) -> Result<B256, ChainError> {
        let in_pending = self
            .pending
            .as_ref()
            .is_some_and(|p| p.hashes.contains(&tx.hash));
        if in_pending || self.store.tx(&tx.hash)?.is_some() {
            return Err(ExecError::AlreadyKnown(tx.hash).into());
        }
        let store = self.store.clone();
        let pending = self.open_block(now)?;
        let base: &dyn StateRead = &*store;
        let state = Overlay::with_writes(base, std::mem::take(&mut pending.writes));
        let result = apply_tx(&state, &pending.env, &pending.params, &tx);
        pending.writes = state.into_writes();
        let mut outcome = match result {
            Ok(o) => o,
            Err(e) => {
                if pending.txs.is_empty() {
                    self.pending = None;
                }
                return Err(e.into());
            }
        };
        let limit = pending.params.block_gas_limit;
        if pending.gas_used + outcome.gas_used > limit {
            if pending.txs.is_empty() {
                return Err(ExecError::BlockFull {
                    needed: outcome.gas_used,
                    limit,
                }
                .into());
            }
            self.seal()?;
            return self.submit(tx, now);
        }
        pending.gas_used += outcome.gas_used;
        pending.writes.extend(std::mem::take(&mut outcome.writes));
        let hash = tx.hash;
        pending.hashes.insert(hash);
        pending.txs.push((tx, outcome));
        Ok(hash)
    }

    /// Seals the pending block, if it holds any transaction.
    pub fn seal(&mut self) -> Result<Option<Sealed>, ChainError> {
        let Some(p) = self.pending.take().filter(|p| !p.txs.is_empty()) else {
            return Ok(None);
        };
        let parent = self.head()?;
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
        let (state_root, batch) = self.store.state_root_after(number, &p.writes)?;
        let header = Header {
            parent_hash: parent.hash(),
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: STAKING,
            state_root,
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
        let block = BlockRecord {
            header,
            tx_hashes: p.txs.iter().map(|(t, _)| t.hash).collect(),
        };
        self.store
            .commit_block(&block, &records, &p.writes, batch, self.durable)?;
        Ok(Some(Sealed {
            number,
            hash: block.hash(),
            txs: records.len(),
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
        self.pending = None;
        self.open_block(block.header.timestamp)?.env = env;
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
