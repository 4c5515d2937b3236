//! The sequencer: owns the chain behind a lock, admits transactions (signature recovery happens
//! outside the lock), and seals a block every `block_time_ms` — an empty one once a whole block
//! time has passed without transactions, as OP Stack does, so time-based deadlines (governance
//! votes, timelocks, unbonding) pass on chain without traffic. In dev mode a block is sealed right after each request that
//! submitted transactions and no empty blocks are sealed (like an automining dev chain): views
//! and the next transaction still see the current time, since a new block opens at it.

use crate::{chain::Sealed, datanets::Datanets, journal::Journal, Chain, ChainError, NodeConfig};
use alloy_primitives::B256;
use openledger_state::{verify_raw, ExecError};
use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A running node's shared state.
pub struct Node {
    chain: Mutex<Chain>,
    pub config: NodeConfig,
    /// Datanet rows: staging, serving, proofs.
    pub datanets: Datanets,
    chain_id: u64,
    /// The governed size limit of a transaction, refreshed after each governor transaction
    /// (only an executed proposal changes parameters).
    max_tx_bytes: std::sync::atomic::AtomicU64,
    seal_failures: std::sync::atomic::AtomicU64,
    /// Set (under the chain lock) when the node stops: no transaction is accepted after the
    /// final seal.
    closed: std::sync::atomic::AtomicBool,
    /// The pending-transaction journal, once opened ([`Node::open_journal`]); locked only while
    /// the chain lock is held, so its records follow the pending block's order.
    journal: std::sync::OnceLock<Mutex<Journal>>,
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Node {
    /// Wraps an opened chain, with the blob store in `blobs_dir`.
    pub fn new(
        chain: Chain,
        config: NodeConfig,
        blobs_dir: &std::path::Path,
    ) -> Result<Arc<Node>, ChainError> {
        let chain_id = chain.chain_id();
        let max_tx_bytes = chain.params()?.max_tx_bytes;
        let datanets = Datanets::open(blobs_dir, config.ingest.clone())
            .map_err(|e| ChainError::Genesis(format!("opening the blob store: {e}")))?;
        Ok(Arc::new(Node {
            chain: Mutex::new(chain),
            config,
            datanets,
            chain_id,
            max_tx_bytes: max_tx_bytes.into(),
            seal_failures: Default::default(),
            closed: Default::default(),
            journal: Default::default(),
        }))
    }

    /// Locks the chain. A poisoned lock (a panic while it was held) is recovered, which is
    /// sound because the chain changes only by complete operations: a transaction's effects are
    /// added to the pending block only once it has executed in full, panics in execution and
    /// sealing are caught and leave everything as it was, and the pending block is cleared only
    /// once the store has committed it (see [`crate::chain`]).
    pub fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|poisoned| {
            tracing::warn!("recovering the chain lock after a panic while it was held");
            self.chain.clear_poison();
            poisoned.into_inner()
        })
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The largest transaction accepted now (the governed `max_tx_bytes`).
    pub fn max_tx_bytes(&self) -> u64 {
        self.max_tx_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Decodes, verifies and executes a raw transaction into the pending block.
    pub fn submit_raw(&self, raw: &[u8]) -> Result<B256, ChainError> {
        let tx = verify_raw(raw, self.chain_id, self.max_tx_bytes()).map_err(ChainError::from)?;
        // A contribution's claims must match the rows this node staged (followers re-executing
        // blocks trust the sequencer for this admission rule; see datanets::staging).
        self.datanets.check_contribution(&tx)?;
        let mut chain = self.chain();
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ChainError::ShuttingDown);
        }
        let governance = tx.to() == Some(openledger_types::modules::GOVERNOR);
        let hash = chain.submit(tx, now())?;
        if governance {
            if let Ok(p) = chain.params() {
                self.max_tx_bytes
                    .store(p.max_tx_bytes, std::sync::atomic::Ordering::Relaxed);
            }
        }
        // Journaled (fsynced) before the hash is returned: an acknowledged transaction survives
        // a crash before its block is sealed.
        if let Some(journal) = self.journal.get() {
            lock(journal).append(raw).map_err(|e| {
                tracing::error!(tx = %hash, "writing the pending-transaction journal failed: {e}");
                ChainError::Journal {
                    tx: hash,
                    message: e.to_string(),
                }
            })?;
        }
        Ok(hash)
    }

    /// Seals the pending block now, if any.
    pub fn seal(&self) -> Result<Option<Sealed>, ChainError> {
        self.seal_with(|chain| chain.seal())
    }

    /// Seals the pending block now, or an empty block when nothing is pending.
    pub fn seal_or_empty(&self) -> Result<Option<Sealed>, ChainError> {
        self.seal_with(|chain| chain.seal_or_empty(now()))
    }

    fn seal_with(
        &self,
        seal: impl FnOnce(&mut Chain) -> Result<Option<Sealed>, ChainError>,
    ) -> Result<Option<Sealed>, ChainError> {
        use std::sync::atomic::Ordering;
        let mut chain = self.chain();
        let r = seal(&mut chain);
        match &r {
            Ok(_) => {
                self.seal_failures.store(0, Ordering::Relaxed);
                // Everything journaled is committed now. If clearing fails, the next start
                // re-submits committed transactions, which are refused as already known.
                if let Some(journal) = self.journal.get() {
                    if let Err(e) = lock(journal).clear() {
                        tracing::warn!("clearing the pending-transaction journal failed: {e}");
                    }
                }
            }
            Err(_) => {
                self.seal_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// Opens the pending-transaction journal at `path` and re-submits the transactions it
    /// holds that are not in a block yet (they were acknowledged before a crash). From then on
    /// every accepted transaction is journaled before it is acknowledged. Returns how many were
    /// recovered into the pending block.
    pub fn open_journal(&self, path: &std::path::Path) -> Result<usize, ChainError> {
        let journal_error = |e: std::io::Error| ChainError::Journal {
            tx: B256::ZERO,
            message: format!("opening {}: {e}", path.display()),
        };
        let (journal, found) = Journal::open(path, self.max_tx_bytes()).map_err(journal_error)?;
        if found.truncated > 0 {
            tracing::warn!(
                bytes = found.truncated,
                "cut a torn record off the end of the pending-transaction journal (it was never acknowledged)"
            );
        }
        let mut chain = self.chain();
        let mut recovered = 0;
        for raw in &found.txs {
            // Admission rules (the staged-rows check) were applied when it was first accepted.
            let outcome = verify_raw(raw, self.chain_id, self.max_tx_bytes())
                .map_err(ChainError::from)
                .and_then(|tx| chain.submit(tx, now()));
            match outcome {
                Ok(_) => recovered += 1,
                Err(ChainError::Exec(ExecError::AlreadyKnown(_))) => {}
                Err(e) => tracing::warn!("a journaled transaction no longer applies: {e}"),
            }
        }
        if self.journal.set(Mutex::new(journal)).is_err() {
            return Err(ChainError::Journal {
                tx: B256::ZERO,
                message: "the journal is already open".into(),
            });
        }
        if recovered > 0 {
            tracing::info!(
                recovered,
                "re-submitted acknowledged transactions from the pending-transaction journal"
            );
        }
        Ok(recovered)
    }

    /// How many seals in a row have failed (0 after a success).
    pub fn consecutive_seal_failures(&self) -> u64 {
        self.seal_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops accepting transactions: every later `submit_raw` is refused with
    /// [`ChainError::ShuttingDown`]. Taken under the chain lock, so a transaction is either in
    /// the pending block before this returns or refused.
    pub fn close(&self) {
        let _chain = self.chain();
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Runs the block timer until `stop` resolves, then stops accepting transactions
    /// ([`Node::close`]) and seals what is pending, so nothing acknowledged is left behind by a
    /// request still in flight. The final seal is tried a few times; if it still fails, the error names how many
    /// acknowledged transactions are left unsealed, so the caller can exit loudly.
    pub async fn run_sequencer(
        self: Arc<Self>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), ChainError> {
        let period = Duration::from_millis(self.config.block_time_ms.max(1));
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let idle_blocks = !self.config.dev;
        // Whether the interval that just ended saw transactions: an empty block is sealed only
        // after a whole block time without any (and then every block time).
        let mut busy = true;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let pending = self.chain().pending_txs().next().is_some();
                    let sealed = if idle_blocks && !pending && !busy {
                        self.seal_or_empty()
                    } else {
                        self.seal()
                    };
                    busy = pending;
                    self.log_seal(sealed);
                }
                _ = &mut stop => break,
            }
        }
        self.close();
        const FINAL_ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match self.seal() {
                Ok(sealed) => {
                    if let Some(s) = sealed {
                        tracing::info!(block = s.number, txs = s.txs, hash = %s.hash, "sealed block");
                    }
                    return Ok(());
                }
                Err(e) if attempt >= FINAL_ATTEMPTS => {
                    let pending: Vec<B256> = self.chain().pending_txs().map(|t| t.hash).collect();
                    return Err(ChainError::Unsealed {
                        count: pending.len(),
                        hashes: pending
                            .iter()
                            .map(|h| h.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        source: Box::new(e),
                    });
                }
                Err(e) => {
                    tracing::error!(attempt, "the final seal failed: {e}; retrying in 1 s");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Seals what is pending and logs the outcome. A failure is logged loudly every time, with
    /// how many attempts in a row have failed; nothing is dropped: the transactions stay
    /// pending and the next tick tries again.
    pub fn seal_and_log(&self) {
        self.log_seal(self.seal())
    }

    fn log_seal(&self, sealed: Result<Option<Sealed>, ChainError>) {
        match sealed {
            Ok(Some(s)) if s.txs == 0 => {
                tracing::debug!(block = s.number, hash = %s.hash, "sealed an empty block")
            }
            Ok(Some(s)) => {
                tracing::info!(block = s.number, txs = s.txs, hash = %s.hash, "sealed block")
            }
            Ok(None) => {}
            Err(e) => {
                let attempts = self.consecutive_seal_failures();
                let pending = self.chain().pending_txs().count();
                tracing::error!(
                    attempts,
                    pending,
                    "sealing failed: {e}; the {pending} pending transactions are kept and sealing is \
                     retried every block interval (new transactions are refused once the pending \
                     block is full); check the disk and the node's data directory"
                );
            }
        }
    }
}

/// Maps a chain error to a JSON-RPC error code: 3 for module reverts, -32602 for malformed
/// input, -32000 for other rejections, -32603 for internal failures.
pub fn error_code(e: &ChainError) -> i64 {
    match e {
        ChainError::Exec(x) if x.is_revert() => 3,
        ChainError::Exec(ExecError::Malformed(_))
        | ChainError::Exec(ExecError::MalformedAbi { .. }) => -32602,
        ChainError::Exec(ExecError::Storage(_)) => -32603,
        ChainError::Exec(_) => -32000,
        ChainError::ShuttingDown | ChainError::SealFailed { .. } => -32000,
        _ => -32603,
    }
}

/// Locks a mutex, recovering it if a panic poisoned it (the journal's state is its file).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
