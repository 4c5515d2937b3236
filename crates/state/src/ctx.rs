//! The execution context of one call: its tentative writes, the block environment, the
//! parameters in force, the sender, the value sent, and the logs emitted so far.

use crate::{error::ExecResult, kv::Overlay, modules::bank, ExecError};
use alloy_primitives::{Address, Log, U256};
use alloy_sol_types::SolEvent;
use openledger_types::Params;

/// The block a transaction executes in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub chain_id: u64,
    pub block_number: u64,
    /// Unix seconds.
    pub timestamp: u64,
}

/// One module call in progress.
pub struct Ctx<'a> {
    pub state: Overlay<'a>,
    pub env: &'a Env,
    pub params: &'a Params,
    pub sender: Address,
    pub value: U256,
    pub logs: Vec<Log>,
}

impl Ctx<'_> {
    /// Emits `event` as a log of `module`.
    pub fn emit<E: SolEvent>(&mut self, module: Address, event: &E) {
        self.logs.push(Log {
            address: module,
            data: event.encode_log_data(),
        });
    }

    /// Moves OPEN between accounts (modules included), emitting `IBank.Transfer`.
    pub fn transfer(&mut self, from: Address, to: Address, amount: U256) -> ExecResult<()> {
        bank::transfer(self, from, to, amount)
    }

    /// Refuses OPEN sent to a non-payable function.
    pub fn no_value(&self, function: &str) -> ExecResult<()> {
        if self.value.is_zero() {
            Ok(())
        } else {
            Err(ExecError::NotPayable(function.to_string()))
        }
    }

    /// Checks a string argument against the governed length limit.
    pub fn check_len(&self, what: &str, s: &str) -> ExecResult<()> {
        if s.len() as u64 > self.params.max_string_bytes {
            return Err(ExecError::Invalid(format!(
                "{what} is {} bytes, the limit is {}",
                s.len(),
                self.params.max_string_bytes
            )));
        }
        Ok(())
    }
}
