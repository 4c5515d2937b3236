//! Errors of building and opening indexes, each saying what to do about it.

use crate::tokens::TokenId;
use std::path::{Path, PathBuf};

/// Result alias for this crate.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

/// Why an index could not be built, opened or extended.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Refusing to overwrite.
    #[error("{0} already holds an index or shard; choose another directory or remove it")]
    Exists(PathBuf),
    /// A token id outside the vocabulary (or equal to the separator).
    #[error("row {row}: token id {token} is outside the vocabulary of {vocab_size} ids (was it tokenised with another tokenizer?)")]
    BadToken {
        /// Row number in the input.
        row: usize,
        /// The id.
        token: TokenId,
        /// The vocabulary size.
        vocab_size: u32,
    },
    /// A shard over the suffix array's 2^31-token limit.
    #[error(
        "{0} tokens is over the 2^31 tokens one shard can hold; split the rows into several shards"
    )]
    TooLarge(usize),
    /// One row over the most tokens a shard may hold.
    #[error("row {row} has {tokens} tokens, more than the {max} one shard may hold; raise the shard size or split the row")]
    RowTooLarge {
        /// Row number in the input.
        row: usize,
        /// Its tokens, its separator included.
        tokens: u64,
        /// The shard size limit.
        max: u64,
    },
    /// libsais failed.
    #[error("suffix array construction failed: {0}")]
    Build(String),
    /// Files that do not match their metadata.
    #[error("corrupt index: {0}; rebuild it with `openledger index build`")]
    Corrupt(String),
    /// Rows that do not fit the index.
    #[error("{0}")]
    Mismatch(String),
}

impl IndexError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
