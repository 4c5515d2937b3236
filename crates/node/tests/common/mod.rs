//! What several node tests share: a signed EIP-1559 transfer.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;

/// A signed EIP-1559 transfer of `value` wei to `to` on chain `chain_id` (gas price 1 gwei):
/// its hash and its raw encoding.
pub fn transfer(
    key: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: u64,
) -> (B256, Vec<u8>) {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value: U256::from(value),
        access_list: Default::default(),
        input: Default::default(),
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let env = TxEnvelope::from(tx.into_signed(sig));
    (*env.tx_hash(), env.encoded_2718())
}
