//! A contribution's rows as stored in the blob store: JSONL, one canonical row object per line, in
//! Merkle-leaf order. Decoding checks every line is a canonical row of the datanet's schema and
//! recomputes the row hashes and the rows root, so a blob can be matched against the `rowsRoot`
//! recorded on chain before anything is served from it.

use crate::{
    hash::{hash_canonical, RowHash},
    ingest::Contribution,
    merkle::{rows_root, RowProof},
    row::{Row, Schema},
};
use alloy_primitives::B256;
use rayon::prelude::*;

/// Why a stored row set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RowSetError {
    /// A line is not a row object.
    #[error("row set line {line}: not a row: {message}")]
    NotARow {
        /// 1-based line.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// A row is of the other schema.
    #[error("row set line {line}: a {found} row in a {expected} datanet")]
    WrongSchema {
        /// 1-based line.
        line: usize,
        /// The datanet's schema.
        expected: Schema,
        /// The row's.
        found: Schema,
    },
    /// A line is a row but not in canonical form, so its hash would differ.
    #[error("row set line {line}: not in canonical form")]
    NotCanonical {
        /// 1-based line.
        line: usize,
    },
    /// The rows do not hash to the expected root.
    #[error("the rows hash to {actual}, not to the recorded rows root {expected}")]
    RootMismatch {
        /// The root the chain records.
        expected: B256,
        /// The rows' root.
        actual: B256,
    },
}

/// The rows of one contribution with their hashes and root.
#[derive(Clone, Debug, PartialEq)]
pub struct RowSet {
    /// The rows, in leaf order.
    pub rows: Vec<Row>,
    /// Their BLAKE3 hashes.
    pub hashes: Vec<RowHash>,
    /// Their Merkle root.
    pub root: B256,
}

/// The blob bytes of a contribution's accepted rows: [`Contribution::write_jsonl`]'s output,
/// written in parallel chunks.
pub fn encode(c: &Contribution) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = c
        .rows
        .par_chunks(4096)
        .map(|chunk| {
            let mut out = Vec::new();
            for r in chunk {
                out.extend_from_slice(&r.row.canonical_json());
                out.push(b'\n');
            }
            out
        })
        .collect();
    let mut out = Vec::with_capacity(c.byte_size as usize);
    parts.iter().for_each(|p| out.extend_from_slice(p));
    out
}

impl RowSet {
    /// Decodes and checks a stored row set of `schema`.
    pub fn decode(bytes: &[u8], schema: Schema) -> Result<RowSet, RowSetError> {
        let mut rows = Vec::new();
        let mut hashes = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let row: Row = serde_json::from_slice(line).map_err(|e| RowSetError::NotARow {
                line: n,
                message: e.to_string(),
            })?;
            if row.schema() != schema {
                return Err(RowSetError::WrongSchema {
                    line: n,
                    expected: schema,
                    found: row.schema(),
                });
            }
            if row.canonical_json() != line {
                return Err(RowSetError::NotCanonical { line: n });
            }
            hashes.push(hash_canonical(line));
            rows.push(row);
        }
        let root = rows_root(&hashes);
        Ok(RowSet { rows, hashes, root })
    }

    /// Decodes and checks that the rows are the ones committed as `expected_root`.
    pub fn decode_checked(
        bytes: &[u8],
        schema: Schema,
        expected_root: B256,
    ) -> Result<RowSet, RowSetError> {
        let set = Self::decode(bytes, schema)?;
        if set.root != expected_root {
            return Err(RowSetError::RootMismatch {
                expected: expected_root,
                actual: set.root,
            });
        }
        Ok(set)
    }

    /// Position of the row with this hash.
    pub fn position(&self, hash: &RowHash) -> Option<usize> {
        self.hashes.iter().position(|h| h == hash)
    }

    /// The inclusion proof of row `index`.
    pub fn proof(&self, index: usize) -> Option<RowProof> {
        RowProof::new(&self.hashes, index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ingest, Limits, SourceFile};
    use std::collections::HashSet;

    #[test]
    fn an_encoded_contribution_decodes_to_its_rows_and_root_and_tampering_is_caught() {
        let file = SourceFile::new(
            "a.jsonl",
            "{\"text\":\"first row about bees\"}\n{\"text\":\"second row, caf\u{e9}\"}\n",
        );
        let c = ingest(&[file], Schema::Text, &Limits::default(), &HashSet::new()).unwrap();
        let bytes = encode(&c);
        let mut serial = Vec::new();
        c.write_jsonl(&mut serial).unwrap();
        assert_eq!(bytes, serial);
        let set = RowSet::decode_checked(&bytes, Schema::Text, c.rows_root).unwrap();
        assert_eq!(set.hashes, c.hashes());
        assert_eq!(set.rows.len(), 2);
        assert!(set.proof(1).unwrap().verify());

        let tampered = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("first", "fist");
        let err = RowSet::decode_checked(tampered.as_bytes(), Schema::Text, c.rows_root);
        assert!(matches!(err, Err(RowSetError::RootMismatch { .. })));
        let spaced = String::from_utf8(bytes.clone())
            .unwrap()
            .replace("{\"text\":", "{ \"text\":");
        assert!(matches!(
            RowSet::decode(spaced.as_bytes(), Schema::Text),
            Err(RowSetError::NotCanonical { line: 1 })
        ));
        assert!(matches!(
            RowSet::decode(&bytes, Schema::PromptResponse),
            Err(RowSetError::WrongSchema { line: 1, .. })
        ));
        assert!(matches!(
            RowSet::decode(b"{\"text\":\"ok\"}\nnot json\n", Schema::Text),
            Err(RowSetError::NotARow { line: 2, .. })
        ));
    }
}
