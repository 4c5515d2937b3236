//! The recorder: sends the receipt journal's unrecorded inferences to the chain as
//! `recordInferences(records, settleNow=true)` transactions signed by the operator (EIP-1559,
//! the operator's pending nonce, the governed minimum gas price, the scheduled gas), waits until
//! they are sealed and marks them recorded with their receipt ids. Each batch holds at most
//! [`PaymentLimits::max_batch`](super::PaymentLimits) records (and the governed
//! `max_settle_batch`), and is split further when it would pass the transaction size or block gas
//! limit. A batch the chain refuses is split until the bad record is found; a record refused
//! with its attribution is sent again without it (the caller was served, so it pays); one
//! refused still is dropped with a warning (kept in `receipts.rejected`), and the others are
//! recorded. Problems that are not a record's fault (the operator cannot pay gas, the node is
//! stopping) leave everything in the journal for the next pass.

use super::{receipts::Unrecorded, OpenLora};
use crate::ChainError;
use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolCall, SolEventInterface};
use openledger_state::{executor::gas_of, modules::bank, ExecError};
use openledger_types::{abi::IInference, modules::INFERENCE};
use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

/// Most transactions one recorder pass sends before it waits for them to be sealed.
const TXS_PER_PASS: usize = 16;

/// What a recorder pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Transactions sent and sealed.
    pub transactions: usize,
    /// Inferences that got a receipt now.
    pub recorded: usize,
    /// Inferences the chain had recorded already (resubmitted after a crash): skipped.
    pub duplicates: usize,
    /// Inferences the chain refused, dropped and kept in `receipts.rejected`.
    pub rejected: usize,
}

/// Why one transaction was not accepted.
enum Refusal {
    /// A record in it breaks a module rule (the revert's message).
    Record(String),
    /// Too large for one transaction or block: split it.
    TooBig(String),
    /// Not the records' fault: try again later.
    Later(String),
}

/// Transactions accepted into the pending block, with their records, and records refused.
#[derive(Default)]
struct Sent {
    txs: Vec<(B256, Vec<Unrecorded>)>,
    rejected: Vec<(B256, String)>,
}

fn abi_record(u: &Unrecorded) -> IInference::InferenceRecord {
    let s = &u.served;
    IInference::InferenceRecord {
        requestId: s.request_id,
        caller: s.caller,
        adapterId: s.adapter_id,
        promptTokens: s.prompt_tokens,
        completionTokens: s.completion_tokens,
        top: s
            .top
            .iter()
            .map(|&(c, w)| IInference::Attribution {
                contributionId: c,
                weightPpm: w,
            })
            .collect(),
        attributionRoot: s.attribution_root,
    }
}

impl OpenLora {
    /// Runs until `stop`: every block time (and at once when a full batch is queued) records the
    /// queued inferences on chain ([`OpenLora::record_queued`]). Stopping mid-pass is safe:
    /// whatever was not marked recorded is resubmitted later, and the chain skips request ids
    /// it already has. Returns at once when billing is off.
    pub async fn run_recorder(self: Arc<Self>, stop: impl Future<Output = ()>) {
        if self.operator_key.is_none() {
            return;
        }
        let period = Duration::from_millis(self.node.config.block_time_ms.clamp(50, 60_000));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.payments.wake.notified() => {}
                _ = &mut stop => return,
            }
            if self.payments.journal.unrecorded() == 0 {
                continue;
            }
            tokio::select! {
                r = self.record_queued() => match r {
                    Ok(s) if s != RecordStats::default() => tracing::info!(
                        transactions = s.transactions,
                        recorded = s.recorded,
                        duplicates = s.duplicates,
                        rejected = s.rejected,
                        "recorded served inferences on chain"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        waiting = self.payments.journal.unrecorded(),
                        "recording served inferences failed, retrying next block: {e}"
                    ),
                },
                _ = &mut stop => return,
            }
        }
    }

    /// Records every queued inference now: sends batches, waits until they are sealed, marks
    /// them. Err: a problem that is not a record's fault (what was done before it stays done;
    /// the rest waits for the next pass).
    pub async fn record_queued(self: &Arc<Self>) -> Result<RecordStats, String> {
        let Some(key) = self.operator_key.clone() else {
            return Ok(RecordStats::default());
        };
        let _one_pass = self.payments.recording.lock().await;
        let mut stats = RecordStats::default();
        loop {
            let params = self.node.chain().params().map_err(|e| e.to_string())?;
            let batch = (self.payments.limits().max_batch)
                .min(params.max_settle_batch as usize)
                .max(1);
            let queued = self.payments.journal.oldest(batch * TXS_PER_PASS);
            if queued.is_empty() {
                return Ok(stats);
            }
            let this = self.clone();
            let key2 = key.clone();
            let (sent, transient) = tokio::task::spawn_blocking(move || {
                let mut sent = Sent::default();
                let mut transient = None;
                for chunk in queued.chunks(batch) {
                    if let Err(e) = this.send(&key2, chunk, &mut sent) {
                        transient = Some(e);
                        break;
                    }
                }
                (sent, transient)
            })
            .await
            .map_err(|e| format!("the recorder task failed: {e}"))?;
            let progressed = !sent.txs.is_empty() || !sent.rejected.is_empty();
            for (id, reason) in &sent.rejected {
                tracing::warn!(
                    request = %id,
                    "the chain refused a served inference; it is dropped (kept in receipts.rejected): {reason}"
                );
            }
            let mut recorded = Vec::new();
            let mut unsealed = None;
            for (hash, records) in &sent.txs {
                match self.wait_sealed(hash).await {
                    Some(logs) => {
                        stats.transactions += 1;
                        for r in records {
                            let id = r.served.request_id;
                            match logs.iter().find(|(req, _, _)| *req == id) {
                                Some(&(_, receipt, duplicate)) => {
                                    if duplicate {
                                        stats.duplicates += 1;
                                    } else {
                                        stats.recorded += 1;
                                    }
                                    recorded.push((id, receipt));
                                }
                                None => recorded.push((id, 0)),
                            }
                        }
                    }
                    None => {
                        unsealed = Some(format!(
                            "transaction {hash} was accepted but not sealed in time; its records \
                             are sent again next pass (the chain skips those it has)"
                        ))
                    }
                }
            }
            stats.rejected += sent.rejected.len();
            let marked = self.payments.journal.mark(&recorded, &sent.rejected)?;
            super::receipts::release_marked(&self.payments.holds, &marked);
            if let Err(e) = self.payments.journal.compact_if_worthwhile() {
                tracing::warn!("compacting the receipt journal failed: {e}");
            }
            if let Some(e) = transient.or(unsealed) {
                return Err(e);
            }
            if !progressed {
                return Ok(stats);
            }
        }
    }

    /// Sends `records` as one transaction, or split in halves while the chain refuses them,
    /// down to single records, which are then dropped.
    fn send(
        &self,
        key: &PrivateKeySigner,
        records: &[Unrecorded],
        sent: &mut Sent,
    ) -> Result<(), String> {
        match self.submit_batch(key, records) {
            Ok(hash) => {
                sent.txs.push((hash, records.to_vec()));
                Ok(())
            }
            Err(Refusal::Later(e)) => Err(e),
            // An attribution the chain refuses (an index naming contributions outside the
            // adapter's datanet versions) must not make a served call free: record it without
            // its top contributions (their share goes to the model owner, as unattributed).
            Err(Refusal::Record(reason) | Refusal::TooBig(reason))
                if records.len() == 1 && !records[0].served.top.is_empty() =>
            {
                tracing::warn!(
                    request = %records[0].served.request_id,
                    "the chain refused a served inference; recording it without its attribution: {reason}"
                );
                let mut bare = records[0].clone();
                bare.served.top.clear();
                self.send(key, std::slice::from_ref(&bare), sent)
            }
            Err(Refusal::Record(reason) | Refusal::TooBig(reason)) if records.len() == 1 => {
                sent.rejected.push((records[0].served.request_id, reason));
                Ok(())
            }
            Err(_) => {
                let (a, b) = records.split_at(records.len() / 2);
                self.send(key, a, sent)?;
                self.send(key, b, sent)
            }
        }
    }

    /// Signs and submits one `recordInferences` transaction with the operator's pending nonce;
    /// in dev mode seals it at once (as the JSON-RPC server does after a request).
    fn submit_batch(
        &self,
        key: &PrivateKeySigner,
        records: &[Unrecorded],
    ) -> Result<B256, Refusal> {
        let data = IInference::recordInferencesCall {
            records: records.iter().map(abi_record).collect(),
            settleNow: true,
        }
        .abi_encode();
        let later = |e: String| Refusal::Later(e);
        let mut last = String::new();
        for _attempt in 0..3 {
            let (nonce, params) = {
                let chain = self.node.chain();
                let account = chain
                    .with_pending_state(|s| bank::account(s, &key.address()))
                    .map_err(|e| later(e.to_string()))?;
                (
                    account.nonce,
                    chain.params().map_err(|e| later(e.to_string()))?,
                )
            };
            let gas =
                gas_of(&params, &INFERENCE, &data).map_err(|e| Refusal::TooBig(e.to_string()))?;
            if gas > params.block_gas_limit {
                return Err(Refusal::TooBig(format!(
                    "the batch needs {gas} gas, more than a block holds ({})",
                    params.block_gas_limit
                )));
            }
            let tx = TxEip1559 {
                chain_id: self.node.chain_id(),
                nonce,
                gas_limit: gas,
                max_fee_per_gas: params.min_gas_price_wei as u128,
                max_priority_fee_per_gas: 0,
                to: TxKind::Call(INFERENCE),
                value: U256::ZERO,
                access_list: Default::default(),
                input: data.clone().into(),
            };
            let sig = key
                .sign_hash_sync(&tx.signature_hash())
                .map_err(|e| later(format!("signing with the operator key: {e}")))?;
            let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
            if raw.len() as u64 > params.max_tx_bytes {
                return Err(Refusal::TooBig(format!(
                    "the batch is {} bytes, over the {}-byte transaction limit",
                    raw.len(),
                    params.max_tx_bytes
                )));
            }
            match self.node.submit_raw(&raw) {
                Ok(hash) => {
                    if self.node.config.dev {
                        self.node.seal_and_log();
                    }
                    return Ok(hash);
                }
                // Another transaction of the operator's key got in first: read the nonce again.
                Err(ChainError::Exec(
                    e @ (ExecError::NonceTooLow { .. } | ExecError::NonceTooHigh { .. }),
                )) => last = e.to_string(),
                Err(ChainError::Exec(
                    e @ (ExecError::TooLarge { .. } | ExecError::BlockFull { .. }),
                )) => return Err(Refusal::TooBig(e.to_string())),
                Err(ChainError::Exec(e)) if e.is_revert() => {
                    return Err(Refusal::Record(e.to_string()))
                }
                Err(e) => {
                    return Err(later(format!(
                        "the node did not accept the operator's recordInferences transaction: {e}"
                    )))
                }
            }
        }
        Err(later(format!(
            "the operator's nonce kept changing while sending ({last})"
        )))
    }

    /// Waits until transaction `hash` is in a sealed block (bounded: a generous number of block
    /// times); its `(request id, receipt id, duplicate)` from the inference module's events.
    async fn wait_sealed(&self, hash: &B256) -> Option<Vec<(B256, u64, bool)>> {
        let store = self.node.chain().store().clone();
        let block = Duration::from_millis(self.node.config.block_time_ms.max(1));
        let deadline = Instant::now() + (block * 20).max(Duration::from_secs(30));
        let poll = (block / 4).clamp(Duration::from_millis(5), Duration::from_millis(200));
        loop {
            match store.tx(hash) {
                Ok(Some(rec)) => {
                    let mut out = Vec::new();
                    for log in rec.logs.iter().filter(|l| l.address == INFERENCE) {
                        let decoded = IInference::IInferenceEvents::decode_raw_log(
                            log.data.topics(),
                            &log.data.data,
                        );
                        match decoded {
                            Ok(IInference::IInferenceEvents::InferenceRequest(e)) => {
                                out.push((e.requestId, e.receiptId, false))
                            }
                            Ok(IInference::IInferenceEvents::InferenceDuplicate(e)) => {
                                out.push((e.requestId, e.receiptId, true))
                            }
                            _ => {}
                        }
                    }
                    return Some(out);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(tx = %hash, "reading a transaction back failed: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(poll).await;
        }
    }
}
