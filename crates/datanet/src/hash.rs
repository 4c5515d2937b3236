//! Row hashes: BLAKE3 of the canonical JSON of the normalised row. The 32 bytes are the row's
//! identity for deduplication, the blob store's name, and (as a `B256`) its Merkle leaf.

use crate::row::Row;
use alloy_primitives::B256;

/// A row's 32-byte BLAKE3 hash.
pub type RowHash = [u8; 32];

/// The hash of an (already normalised) row.
pub fn row_hash(row: &Row) -> RowHash {
    hash_canonical(&row.canonical_json())
}

/// The hash of a row's canonical JSON bytes.
pub fn hash_canonical(canonical_json: &[u8]) -> RowHash {
    *blake3::hash(canonical_json).as_bytes()
}

/// The hash as a Merkle leaf.
pub fn to_b256(hash: &RowHash) -> B256 {
    B256::from(*hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_blake3_of_canonical_json() {
        let row = Row::prompt_response("Q", "A");
        assert_eq!(row.canonical_json(), br#"{"prompt":"Q","response":"A"}"#);
        assert_eq!(
            row_hash(&row),
            *blake3::hash(br#"{"prompt":"Q","response":"A"}"#).as_bytes()
        );
        assert_ne!(row_hash(&Row::text("a")), row_hash(&Row::text("b")));
    }
}
