//! Connects OpenLoRA's serving side (`openledger-serve`) to the node's chain side
//! (`openledger_node::openlora`): adapters resolved through the chain, API keys, holds and
//! charges. Only type conversions live here; the logic is in the two crates.

use alloy_primitives::{Address, B256};
use anyhow::{Context, Result};
use openledger_node::openlora::{OpenLora, Reservation, ServedInference};
use openledger_serve::{ChainAdapter, Hold, Ledger, Served};
use sha2::Digest;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// The node's [`OpenLora`] as the serving crate's [`Ledger`].
pub struct ChainLedger(pub Arc<OpenLora>);

impl Ledger for ChainLedger {
    fn billing(&self) -> bool {
        self.0.billing_enabled()
    }

    fn account(&self, api_key: &str) -> Option<Address> {
        self.0.account_for_key(api_key)
    }

    fn resolve(&self, model: &str) -> Result<Option<ChainAdapter>, String> {
        let Some(r) = self.0.resolve_adapter(model)? else {
            return Ok(None);
        };
        Ok(Some(ChainAdapter {
            id: r.id,
            name: r.name,
            peft_dir: r.peft_dir,
            index_dir: r.index_dir,
            pinned: self.0.owner_stake_pins(&r.owner)?,
        }))
    }

    fn adapters(&self) -> Vec<(u64, String)> {
        self.0.chain_adapters()
    }

    fn reserve(
        &self,
        caller: Address,
        adapter_id: u64,
        prompt_tokens: u32,
        max_completion_tokens: u32,
    ) -> Result<Hold, String> {
        self.0
            .reserve(caller, adapter_id, prompt_tokens, max_completion_tokens)
            .map(|r| Hold(Box::new(r)))
    }

    fn charge(&self, hold: Hold, s: Served) -> Result<(), String> {
        let r = hold
            .0
            .downcast::<Reservation>()
            .map_err(|_| "a hold from another ledger".to_string())?;
        self.0.charge(
            *r,
            ServedInference {
                request_id: s.request_id,
                caller: s.caller,
                adapter_id: s.adapter_id,
                prompt_tokens: s.prompt_tokens,
                completion_tokens: s.completion_tokens,
                top: s.top,
                attribution_root: s.attribution_root,
            },
        )
    }

    fn release(&self, hold: Hold) {
        if let Ok(r) = hold.0.downcast::<Reservation>() {
            self.0.release(*r);
        }
    }
}

/// The content hash a base model is registered with on chain: SHA-256 of the GGUF file, or of
/// `model.safetensors` in a Hugging Face directory (what `openledger model register-base
/// --hash` takes; `sha256sum` computes the same).
pub fn model_hash(path: &Path) -> Result<B256> {
    let file = if path.is_dir() {
        path.join("model.safetensors")
    } else {
        path.to_path_buf()
    };
    let mut f = std::fs::File::open(&file)
        .with_context(|| format!("hashing the served model {}", file.display()))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", file.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(B256::from_slice(&h.finalize()))
}
