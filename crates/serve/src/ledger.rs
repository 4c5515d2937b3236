//! What OpenLoRA needs from the chain, as a trait the node implements: adapters resolved through
//! their on-chain registration (blob verified against its hash), callers' accounts behind API
//! keys, and payment: a hold on the caller's prepaid credit before any compute (402 without it),
//! and a durable charge before the answer's last bytes leave (so a crash never loses a served,
//! charged call and the chain never records one twice).
//!
//! The serving crate stays free of the node; `openledger node` supplies the implementation.

use alloy_primitives::{Address, B256};
use std::any::Any;
use std::path::PathBuf;

/// An adapter registered on chain, with its verified weights on local disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainAdapter {
    /// On-chain adapter id.
    pub id: u64,
    /// Its unique on-chain name.
    pub name: String,
    /// The PEFT directory (`adapter_config.json`, `adapter_model.safetensors`).
    pub peft_dir: PathBuf,
    /// Its attribution index directory, when the index was uploaded to this node.
    pub index_dir: Option<PathBuf>,
    /// Kept in RAM once loaded, never evicted: its owner stakes at least the governed
    /// `pin_min_stake` (checked when the adapter is first resolved).
    pub pinned: bool,
}

/// A hold on a caller's credit, released by [`Ledger::charge`] or [`Ledger::release`].
pub struct Hold(pub Box<dyn Any + Send + Sync>);

/// A served call to charge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// Unique per request: keccak-256 of the response id.
    pub request_id: B256,
    pub caller: Address,
    pub adapter_id: u64,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// The committed top contributions: (contribution id, weight in parts per million).
    pub top: Vec<(u64, u32)>,
    /// Merkle root of the full attribution list.
    pub attribution_root: B256,
}

/// The chain side of serving.
pub trait Ledger: Send + Sync {
    /// Whether calls to on-chain adapters are paid (an operator account records receipts).
    fn billing(&self) -> bool;
    /// The account an API key acts for; `None` for an unknown or revoked key.
    fn account(&self, api_key: &str) -> Option<Address>;
    /// The on-chain adapter a `model` value names (its name or `adapter-<id>`); `Ok(None)` when
    /// none; `Err` when it exists but cannot be served here (wrong base model, blob missing or
    /// not matching its hash). Blocking.
    fn resolve(&self, model: &str) -> Result<Option<ChainAdapter>, String>;
    /// Adapters registered on chain for the served base model: (id, name).
    fn adapters(&self) -> Vec<(u64, String)>;
    /// Holds the most this call can cost; `Err` is the 402 message.
    fn reserve(
        &self,
        caller: Address,
        adapter_id: u64,
        prompt_tokens: u32,
        max_completion_tokens: u32,
    ) -> Result<Hold, String>;
    /// Charges a served call durably (blocking; call before the answer's last bytes go out).
    fn charge(&self, hold: Hold, served: Served) -> Result<(), String>;
    /// Releases a hold without charging.
    fn release(&self, hold: Hold);
}
