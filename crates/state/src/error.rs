//! Errors of the state machine. Every rejection says what was wrong and, where it helps, what
//! would be accepted; a rejected transaction leaves state untouched.

use alloy_primitives::{Address, U256};

/// The backing store failed (disk, corruption).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StorageError(pub String);

/// Why a transaction or call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("could not decode transaction: {0}")]
    Malformed(String),
    #[error("transaction {0} is already known")]
    AlreadyKnown(alloy_primitives::B256),
    #[error("invalid signature: {0}")]
    BadSignature(String),
    #[error("wrong chain id: transaction is for chain {got:?}, this chain is {expected}")]
    WrongChainId { expected: u64, got: Option<u64> },
    #[error("unsupported transaction type {0}: send legacy, EIP-2930 or EIP-1559 transactions")]
    UnsupportedType(u8),
    #[error("transaction too large: {size} bytes, limit {limit}")]
    TooLarge { size: usize, limit: u64 },
    #[error("nonce too low: account {account} has nonce {expected}, transaction has {got}")]
    NonceTooLow {
        account: Address,
        expected: u64,
        got: u64,
    },
    #[error("nonce too high: account {account} has nonce {expected}, transaction has {got} (send the missing nonces first)")]
    NonceTooHigh {
        account: Address,
        expected: u64,
        got: u64,
    },
    #[error("gas price too low: offered {offered} wei, the minimum is {minimum} wei")]
    GasPriceTooLow { offered: u128, minimum: u64 },
    #[error("intrinsic gas too low: this call needs {needed} gas, the limit given is {limit}")]
    GasTooLow { needed: u64, limit: u64 },
    #[error("block gas limit exceeded: needs {needed} gas, a block holds {limit}")]
    BlockFull { needed: u64, limit: u64 },
    #[error("insufficient funds: {account} has {have} wei, needs {need} wei")]
    InsufficientFunds {
        account: Address,
        have: U256,
        need: U256,
    },
    #[error("unknown function selector 0x{selector} for the {module} module")]
    UnknownSelector {
        module: &'static str,
        selector: String,
    },
    #[error("malformed ABI data for {module}: {reason}")]
    MalformedAbi {
        module: &'static str,
        reason: String,
    },
    #[error("calldata sent to {0}, which is an account, not a module")]
    NotAModule(Address),
    #[error("{0} does not accept OPEN: only payable module functions do")]
    NotPayable(String),
    #[error("{0} is a view: read it with eth_call")]
    ViewOnly(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("not allowed: {0}")]
    Unauthorized(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl ExecError {
    /// Whether the error comes from a failing module rule (an Ethereum "revert") rather than the
    /// transaction envelope.
    pub fn is_revert(&self) -> bool {
        matches!(
            self,
            ExecError::NotFound(_)
                | ExecError::Unauthorized(_)
                | ExecError::Invalid(_)
                | ExecError::NotPayable(_)
        )
    }
}

/// Shorthand for module results.
pub type ExecResult<T> = Result<T, ExecError>;
