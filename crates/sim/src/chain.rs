//! The simulated chain: the real `openledger_state` executor over an in-memory state, one block
//! per simulated day. Agents' transactions are real EIP-1559 transactions executed by
//! [`apply_tx`]; only signature recovery is skipped, because the simulator signs for its agents:
//! each [`VerifiedTx`] is built with the agent's address as sender and a placeholder signature.
//! Parameters are reloaded from state after any transaction that wrote them (as the node does),
//! so governance changes apply from the next transaction. Every accepted transaction can be
//! logged, and [`replay`] re-executes such a log from genesis.

use alloy_consensus::{Signed, TxEip1559, TxEnvelope};
use alloy_primitives::{Address, Signature, TxKind, B256, U256};
use openledger_state::{
    apply_tx, genesis::genesis_writes, modules::bank, modules::params, Env, ExecError, MemKv,
    Outcome, VerifiedTx,
};
use openledger_types::{Genesis, Params};
use std::collections::HashMap;

/// Chain id of simulated chains.
pub const CHAIN_ID: u64 = 0x51_4d;
/// Unix seconds of day 0 (midnight UTC).
pub const DAY0: u64 = 19_700 * 86_400;

/// One accepted transaction, enough to re-execute it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRecord {
    pub block: u64,
    pub timestamp: u64,
    pub sender: Address,
    pub nonce: u64,
    pub to: Address,
    pub value: U256,
    pub data: Vec<u8>,
}

/// The chain under simulation.
pub struct SimChain {
    pub kv: MemKv,
    pub params: Params,
    pub env: Env,
    pub genesis: Genesis,
    nonces: HashMap<Address, u64>,
    /// Accepted transactions, when logging is on.
    pub log: Option<Vec<TxRecord>>,
    /// Transactions accepted and refused by the executor.
    pub accepted: u64,
    pub refused: u64,
    /// Gas fees paid (wei), all of which go to the stakers pool (or the treasury).
    pub gas_fees: U256,
    /// Days before day 0 spent importing a chain's state ([`crate::start`]); 0 otherwise.
    pub day_offset: u64,
}

/// The transaction the simulator "signs" for `r.sender`, with `input` as its calldata (`r.data`,
/// moved out of a record that is not kept: a batch's calldata runs to hundreds of kilobytes).
fn build(params: &Params, seq: u64, r: &TxRecord, input: Vec<u8>) -> VerifiedTx {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: r.nonce,
        gas_limit: params.block_gas_limit,
        max_fee_per_gas: params.min_gas_price_wei as u128,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(r.to),
        value: r.value,
        access_list: Default::default(),
        input: input.into(),
    };
    // A placeholder signature: the executor never recovers senders (verify_raw does, and the
    // simulator skips it); the hash is a sequence number, unique within a run.
    let sig = Signature::new(U256::from(1u8), U256::from(1u8), false);
    let hash = B256::from(U256::from(seq));
    VerifiedTx {
        hash,
        sender: r.sender,
        envelope: TxEnvelope::Eip1559(Signed::new_unchecked(tx, sig, hash)),
    }
}

impl SimChain {
    /// A chain at genesis, at the start of day 0.
    pub fn new(genesis: Genesis, log: bool) -> Result<SimChain, String> {
        let mut kv = MemKv::default();
        kv.apply(genesis_writes(&genesis)?);
        let params = params::load(&kv).map_err(|e| e.to_string())?;
        Ok(SimChain {
            kv,
            params,
            env: Env {
                chain_id: CHAIN_ID,
                block_number: 1,
                timestamp: DAY0 + 3_600,
            },
            genesis,
            nonces: HashMap::new(),
            log: log.then(Vec::new),
            accepted: 0,
            refused: 0,
            gas_fees: U256::ZERO,
            day_offset: 0,
        })
    }

    /// Moves to the block of `day` (one block per day, one hour past midnight UTC), counted
    /// after the import days, if any.
    pub fn start_day(&mut self, day: u64) {
        self.env.block_number = self.day_offset + day + 1;
        self.env.timestamp = self.day_timestamp(day);
    }

    /// The timestamp of `day`'s block.
    pub fn day_timestamp(&self, day: u64) -> u64 {
        DAY0 + (self.day_offset + day) * 86_400 + 3_600
    }

    /// The day's timestamp.
    pub fn now(&self) -> u64 {
        self.env.timestamp
    }

    /// An account's OPEN balance.
    pub fn balance(&self, a: &Address) -> U256 {
        bank::account(&self.kv, a)
            .map(|a| a.balance)
            .unwrap_or_default()
    }

    /// Executes one transaction from `sender`; commits it when accepted.
    pub fn send(
        &mut self,
        sender: Address,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<Outcome, ExecError> {
        let nonce = match self.nonces.get(&sender) {
            Some(n) => *n,
            None => bank::account(&self.kv, &sender)?.nonce,
        };
        let mut record = TxRecord {
            block: self.env.block_number,
            timestamp: self.env.timestamp,
            sender,
            nonce,
            to,
            value,
            data: Vec::new(),
        };
        let input = match self.log {
            Some(_) => {
                record.data = data.clone();
                data
            }
            None => data,
        };
        let tx = build(&self.params, self.accepted, &record, input);
        match apply_tx(&self.kv, &self.env, &self.params, &tx) {
            Ok(mut out) => {
                let params_changed = out.writes.contains_key(params::KEY);
                self.kv.apply(std::mem::take(&mut out.writes));
                if params_changed {
                    self.params = params::load(&self.kv)?;
                }
                self.nonces.insert(sender, nonce + 1);
                self.accepted += 1;
                self.gas_fees += U256::from(out.gas_used) * U256::from(out.gas_price);
                if let Some(log) = &mut self.log {
                    log.push(record);
                }
                Ok(out)
            }
            Err(e) => {
                self.refused += 1;
                Err(e)
            }
        }
    }
}

/// Re-executes a transaction log from `genesis` through the executor; every transaction must be
/// accepted again. Returns the final state.
pub fn replay(genesis: &Genesis, log: &[TxRecord]) -> Result<MemKv, String> {
    let mut kv = MemKv::default();
    kv.apply(genesis_writes(genesis)?);
    let mut p = params::load(&kv).map_err(|e| e.to_string())?;
    for (i, r) in log.iter().enumerate() {
        let env = Env {
            chain_id: CHAIN_ID,
            block_number: r.block,
            timestamp: r.timestamp,
        };
        let tx = build(&p, i as u64, r, r.data.clone());
        let out = apply_tx(&kv, &env, &p, &tx)
            .map_err(|e| format!("replayed transaction {i} (block {}) refused: {e}", r.block))?;
        let changed = out.writes.contains_key(params::KEY);
        kv.apply(out.writes);
        if changed {
            p = params::load(&kv).map_err(|e| e.to_string())?;
        }
    }
    Ok(kv)
}

/// A digest of the whole state: BLAKE3 over every entry in key order, each entry framed as its
/// key's length, the key, its value's length and the value (lengths as 8-byte big-endian), so
/// equal states have equal digests and different states different ones (up to BLAKE3
/// collisions), whatever order the in-memory map holds them in. The chain's state root (the
/// Jellyfish Merkle tree in `openledger-store`) commits to the same key-value set; this digest is
/// only the simulator's cheaper fingerprint of it. The framed entries are fed to the hasher in
/// 64 KiB pieces, which lets BLAKE3 hash many chunks at once (several times keccak's speed).
pub fn state_digest(kv: &MemKv) -> B256 {
    const PIECE: usize = 1 << 16;
    let mut h = blake3::Hasher::new();
    let mut buf = Vec::with_capacity(PIECE);
    for (k, v) in kv.sorted() {
        buf.extend_from_slice(&(k.len() as u64).to_be_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        if buf.len() + v.len() > PIECE {
            h.update(&buf);
            buf.clear();
            if v.len() >= PIECE {
                h.update(v);
                continue;
            }
        }
        buf.extend_from_slice(v);
    }
    h.update(&buf);
    B256::from(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(entries: &[(&[u8], &[u8])]) -> MemKv {
        entries
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn digest_depends_on_the_entries_only() {
        let big = vec![9u8; 100_000];
        let a = kv(&[(b"a1", b"x"), (b"b", &big), (b"a2", b"")]);
        let b = kv(&[(b"a2", b""), (b"a1", b"x"), (b"b", &big)]);
        assert_eq!(state_digest(&a), state_digest(&b), "insertion order");
        // A byte moved from the key to the value, a changed value, a missing entry.
        for (i, other) in [
            kv(&[(b"a", b"1x"), (b"b", &big), (b"a2", b"")]),
            kv(&[(b"a1", b"y"), (b"b", &big), (b"a2", b"")]),
            kv(&[(b"a1", b"x"), (b"b", &big)]),
            kv(&[(b"a1", b"x"), (b"b", &big[1..]), (b"a2", b"")]),
        ]
        .iter()
        .enumerate()
        {
            assert_ne!(state_digest(&a), state_digest(other), "case {i}");
        }
    }
}
