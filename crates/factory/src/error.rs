//! The crate's error type. A refusal ([`Error::Invalid`]) comes before anything starts and says what
//! to change; the other kinds name the file or step that failed.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or the data cannot train; nothing was started or written.
    #[error("{0}")]
    Invalid(String),
    /// A data file could not be read or parsed.
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A job directory's checkpoint or state is missing or does not fit the job.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Model(#[from] openledger_model::ModelError),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    /// Training produced a non-finite loss or gradient.
    #[error("training diverged: {0}")]
    Diverged(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn data(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Self::Data {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
