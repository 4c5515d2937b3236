//! Raw transaction admission: EIP-2718 decoding with alloy, type and chain-id checks (EIP-155),
//! and sender recovery. What passes is a [`VerifiedTx`]; nothing here touches state.

use crate::ExecError;
use alloy_consensus::{transaction::SignerRecoverable, Transaction, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, Bytes, B256, U256};

/// A decoded transaction with its recovered sender.
#[derive(Clone, Debug)]
pub struct VerifiedTx {
    pub hash: B256,
    pub sender: Address,
    pub envelope: TxEnvelope,
}

impl VerifiedTx {
    /// The EIP-2718 encoding (what was signed and sent).
    pub fn encoded(&self) -> Vec<u8> {
        self.envelope.encoded_2718()
    }
    pub fn nonce(&self) -> u64 {
        self.envelope.nonce()
    }
    pub fn to(&self) -> Option<Address> {
        self.envelope.to()
    }
    pub fn value(&self) -> U256 {
        self.envelope.value()
    }
    pub fn input(&self) -> &Bytes {
        self.envelope.input()
    }
    pub fn gas_limit(&self) -> u64 {
        self.envelope.gas_limit()
    }
    /// The price per gas paid at base fee `base_fee` (EIP-1559: base plus capped tip).
    pub fn effective_gas_price(&self, base_fee: u64) -> u128 {
        self.envelope.effective_gas_price(Some(base_fee))
    }
}

/// Decodes a raw EIP-2718 transaction (legacy RLP or typed), checks its size, type and chain
/// id, and recovers its sender.
pub fn verify_raw(raw: &[u8], chain_id: u64, max_bytes: u64) -> Result<VerifiedTx, ExecError> {
    if raw.len() as u64 > max_bytes {
        return Err(ExecError::TooLarge {
            size: raw.len(),
            limit: max_bytes,
        });
    }
    if raw.is_empty() {
        return Err(ExecError::Malformed("empty transaction".into()));
    }
    let mut buf = raw;
    let envelope =
        TxEnvelope::decode_2718(&mut buf).map_err(|e| ExecError::Malformed(e.to_string()))?;
    if !buf.is_empty() {
        return Err(ExecError::Malformed(format!(
            "{} trailing bytes after the transaction",
            buf.len()
        )));
    }
    verify_envelope(envelope, chain_id)
}

/// Checks type and chain id of a decoded envelope and recovers its sender.
pub fn verify_envelope(envelope: TxEnvelope, chain_id: u64) -> Result<VerifiedTx, ExecError> {
    match &envelope {
        TxEnvelope::Legacy(_) | TxEnvelope::Eip2930(_) | TxEnvelope::Eip1559(_) => {}
        other => return Err(ExecError::UnsupportedType(other.tx_type() as u8)),
    }
    if envelope.chain_id() != Some(chain_id) {
        return Err(ExecError::WrongChainId {
            expected: chain_id,
            got: envelope.chain_id(),
        });
    }
    if envelope.to().is_none() {
        return Err(ExecError::Malformed(
            "contract creation is not supported: OpenLedger has native modules and no EVM".into(),
        ));
    }
    let sender = envelope
        .recover_signer()
        .map_err(|e| ExecError::BadSignature(e.to_string()))?;
    Ok(VerifiedTx {
        hash: *envelope.tx_hash(),
        sender,
        envelope,
    })
}
