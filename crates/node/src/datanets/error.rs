//! Errors of the datanet REST routes, each with the HTTP status it answers with and a message
//! that says what to do.

use openledger_datanet::Report;

/// Why a datanet request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// A signature is needed or is wrong (401).
    #[error("{0}")]
    Unauthorized(String),
    /// The signer lacks access (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such datanet, contribution, version or row (404).
    #[error("{0}")]
    NotFound(String),
    /// An upload over the limits (413).
    #[error("{0}")]
    TooLarge(String),
    /// The upload took longer than the node waits for one (408).
    #[error("{0}")]
    TimedOut(String),
    /// Over a per-account rate limit (429); retry after the given seconds.
    #[error("{0}")]
    RateLimited(String, u64),
    /// A file that cannot be read or parsed (422).
    #[error("{0}")]
    Unprocessable(String),
    /// Every file was rejected (422, with the report).
    #[error("nothing to contribute: every file was rejected (see the reasons)")]
    Rejected(Box<Report>),
    /// Rows the chain commits to are not in this node's blob store (503).
    #[error("{0}")]
    Unavailable(String),
    /// The node is busy (ingestion slots or replay memory full) (503); retry after the given
    /// seconds.
    #[error("{0}")]
    Busy(String, u64),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::TimedOut(_) => 408,
            ApiError::TooLarge(_) => 413,
            ApiError::RateLimited(..) => 429,
            ApiError::Unprocessable(_) | ApiError::Rejected(_) => 422,
            ApiError::Unavailable(_) | ApiError::Busy(..) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    /// Seconds to wait before retrying, for the `Retry-After` header.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited(_, s) | ApiError::Busy(_, s) => Some(*s),
            _ => None,
        }
    }
}

impl From<openledger_state::ExecError> for ApiError {
    fn from(e: openledger_state::ExecError) -> Self {
        match e {
            openledger_state::ExecError::NotFound(what) => {
                ApiError::NotFound(format!("no {what} on this chain"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<openledger_state::StorageError> for ApiError {
    fn from(e: openledger_state::StorageError) -> Self {
        ApiError::Internal(e.to_string())
    }
}
