//! The sequencer: owns the chain behind a lock, admits transactions (signature recovery happens
//! outside the lock), and seals a block every `block_time_ms` — or, in dev mode, right after
//! each request that submitted transactions.

use crate::{chain::Sealed, datanets::Datanets, Chain, ChainError, NodeConfig};
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
    max_tx_bytes: u64,
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
            max_tx_bytes,
        }))
    }

    /// Locks the chain (a poisoned lock is recovered: the chain's state is only changed by
    /// complete operations).
    pub fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// Decodes, verifies and executes a raw transaction into the pending block.
    pub fn submit_raw(&self, raw: &[u8]) -> Result<B256, ChainError> {
        let tx = verify_raw(raw, self.chain_id, self.max_tx_bytes).map_err(ChainError::from)?;
        self.chain().submit(tx, now())
    }

    /// Seals the pending block now, if any.
    pub fn seal(&self) -> Result<Option<Sealed>, ChainError> {
        self.chain().seal()
    }

    /// Runs the block timer until `stop` resolves, then seals what is pending.
    pub async fn run_sequencer(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.block_time_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => self.seal_and_log(),
                _ = &mut stop => { self.seal_and_log(); return; }
            }
        }
    }

    fn seal_and_log(&self) {
        match self.seal() {
            Ok(Some(s)) => {
                tracing::info!(block = s.number, txs = s.txs, hash = %s.hash, "sealed block")
            }
            Ok(None) => {}
            Err(e) => tracing::error!("sealing failed: {e}"),
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
        _ => -32603,
    }
}
