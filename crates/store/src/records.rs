//! What the block log stores: a block (Ethereum header + transaction hashes) and, per
//! transaction, its raw bytes, sender, gas and logs — everything a receipt is built from.

use alloy_consensus::Header;
use alloy_primitives::{Address, Bytes, Log, B256};
use alloy_rlp::{Decodable, Encodable, RlpDecodable, RlpEncodable};

/// A sealed block.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct BlockRecord {
    pub header: Header,
    pub tx_hashes: Vec<B256>,
}

impl BlockRecord {
    /// The block hash (keccak of the RLP header, as on Ethereum).
    pub fn hash(&self) -> B256 {
        self.header.hash_slow()
    }
    pub(crate) fn encode(&self) -> Vec<u8> {
        alloy_rlp::encode(self)
    }
    pub(crate) fn decode(mut b: &[u8]) -> Result<Self, alloy_rlp::Error> {
        <Self as Decodable>::decode(&mut b)
    }
}

/// One included transaction and its outcome.
#[derive(Clone, Debug, PartialEq, Eq, RlpEncodable, RlpDecodable)]
pub struct TxRecord {
    pub hash: B256,
    pub block_number: u64,
    pub index: u64,
    pub sender: Address,
    /// EIP-2718 encoding.
    pub raw: Bytes,
    pub gas_used: u64,
    pub cumulative_gas_used: u64,
    pub gas_price: u128,
    /// Index in the block of this transaction's first log.
    pub first_log_index: u64,
    pub logs: Vec<Log>,
}

impl TxRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.length());
        Encodable::encode(self, &mut out);
        out
    }
    pub(crate) fn decode(mut b: &[u8]) -> Result<Self, alloy_rlp::Error> {
        <Self as Decodable>::decode(&mut b)
    }
}
