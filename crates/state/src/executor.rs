//! Transaction execution: nonce, gas price, gas and balance checks, the gas fee (to the stakers
//! pool, or the treasury while nothing is staked), then the call. A transaction that fails any
//! check or whose call fails is rejected whole: its [`Outcome`] is never produced and state is
//! unchanged. Gas is a per-call schedule from the parameters plus intrinsic and calldata gas.
//! Every sum of values a transaction chooses (value plus fee, the nonce, calldata gas) is
//! checked: one that would overflow is refused, never wrapped.

use crate::{
    ctx::{Ctx, Env},
    kv::{Overlay, StateRead, Writes},
    modules::{self, bank, staking},
    tx::VerifiedTx,
    ExecError,
};
use alloy_primitives::{Address, Log, U256};
use openledger_types::Params;

/// What an accepted transaction did.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub gas_used: u64,
    /// Price per gas actually paid.
    pub gas_price: u128,
    pub logs: Vec<Log>,
    /// ABI-encoded return data.
    pub output: Vec<u8>,
    /// The state writes, to be merged by the caller (unordered: see [`Writes`]).
    pub writes: Writes,
}

/// Gas a call to `to` with `data` uses: intrinsic + calldata + the module function's schedule.
/// Refused when the sum overflows a `u64` (possible only under extreme governed gas prices per
/// byte; no gas limit could cover it).
pub fn gas_of(params: &Params, to: &Address, data: &[u8]) -> Result<u64, ExecError> {
    let zeros = zero_bytes(data);
    let nonzeros = data.len() as u64 - zeros;
    let call = match modules::function_name(to, data) {
        // A batch pays per record too, so batched receipts cost state like single ones.
        Some(name @ "recordInferences") => params.call_gas(name).saturating_add(
            params
                .call_gas("recordInferences.perRecord")
                .saturating_mul(abi_array_len(data)),
        ),
        Some(name) => params.call_gas(name),
        None => params.call_gas("transfer"),
    };
    zeros
        .checked_mul(params.calldata_zero_byte_gas)
        .zip(nonzeros.checked_mul(params.calldata_nonzero_byte_gas))
        .and_then(|(z, n)| z.checked_add(n))
        .and_then(|g| g.checked_add(params.tx_base_gas))
        .and_then(|g| g.checked_add(call))
        .ok_or_else(|| {
            ExecError::Invalid(format!(
                "the gas of this call ({} bytes of calldata, {zeros} of them zero) overflows a 64-bit gas count under the governed gas schedule",
                data.len()
            ))
        })
}

/// How many bytes of `data` are zero. Counted 64 bytes at a time into a byte-wide sum (at most
/// 64), which compilers turn into whole-register compares: a batch's calldata runs to hundreds
/// of kilobytes, and a byte-at-a-time count was 6% of a simulated year's instructions.
fn zero_bytes(data: &[u8]) -> u64 {
    let chunks = data.chunks_exact(64);
    let tail = chunks.remainder().iter().filter(|b| **b == 0).count() as u64;
    chunks
        .map(|c| u64::from(c.iter().map(|b| u8::from(*b == 0)).sum::<u8>()))
        .sum::<u64>()
        + tail
}

/// The length of the dynamic array that is a call's first argument (0 when the calldata is too
/// short or malformed: decoding refuses such a call anyway).
fn abi_array_len(data: &[u8]) -> u64 {
    let word = |at: usize| -> Option<u64> {
        let w = data.get(at..at.checked_add(32)?)?;
        w[..24]
            .iter()
            .all(|b| *b == 0)
            .then(|| u64::from_be_bytes(w[24..].try_into().unwrap_or_default()))
    };
    word(4)
        .and_then(|off| usize::try_from(off).ok()?.checked_add(4))
        .and_then(word)
        .unwrap_or(0)
}

/// Applies one verified transaction over `state`. On success returns the writes to merge.
pub fn apply_tx(
    state: &dyn StateRead,
    env: &Env,
    params: &Params,
    tx: &VerifiedTx,
) -> Result<Outcome, ExecError> {
    let to = tx
        .to()
        .ok_or_else(|| ExecError::Malformed("contract creation is not supported".into()))?;
    let mut overlay = Overlay::new(state);
    let mut acct = bank::account(&overlay, &tx.sender)?;
    if tx.nonce() < acct.nonce {
        return Err(ExecError::NonceTooLow {
            account: tx.sender,
            expected: acct.nonce,
            got: tx.nonce(),
        });
    }
    if tx.nonce() > acct.nonce {
        return Err(ExecError::NonceTooHigh {
            account: tx.sender,
            expected: acct.nonce,
            got: tx.nonce(),
        });
    }
    let offered = tx.envelope.max_fee_per_gas_value();
    if offered < params.min_gas_price_wei as u128 {
        return Err(ExecError::GasPriceTooLow {
            offered,
            minimum: params.min_gas_price_wei,
        });
    }
    let gas_price = tx.effective_gas_price(params.min_gas_price_wei);
    let gas = gas_of(params, &to, tx.input())?;
    if tx.gas_limit() < gas {
        return Err(ExecError::GasTooLow {
            needed: gas,
            limit: tx.gas_limit(),
        });
    }
    // At most 2^64 × 2^128: a product that fits in 256 bits.
    let fee = U256::from(gas) * U256::from(gas_price);
    let need = fee.checked_add(tx.value()).ok_or_else(|| {
        ExecError::Invalid(format!(
            "the value {} wei plus the fee {fee} wei overflows 256 bits: no account can pay it",
            tx.value()
        ))
    })?;
    if acct.balance < need {
        return Err(ExecError::InsufficientFunds {
            account: tx.sender,
            have: acct.balance,
            need,
        });
    }
    acct.nonce = acct.nonce.checked_add(1).ok_or_else(|| {
        ExecError::Invalid(format!(
            "account {} has used its last nonce ({}); a nonce cannot overflow (EIP-2681)",
            tx.sender,
            u64::MAX
        ))
    })?;
    bank::put_account(&mut overlay, &tx.sender, acct);
    staking::add_rewards(&mut overlay, &tx.sender, fee)?;

    let mut ctx = Ctx {
        state: overlay,
        env,
        params,
        sender: tx.sender,
        value: tx.value(),
        logs: Vec::new(),
    };
    let output = modules::dispatch(&mut ctx, to, tx.input())?;
    Ok(Outcome {
        gas_used: gas,
        gas_price,
        logs: ctx.logs,
        output,
        writes: ctx.state.into_writes(),
    })
}

/// Runs a call without a transaction (eth_call / eth_estimateGas): no nonce, no fee, writes
/// discarded. Returns the return data, the gas a transaction would use, and the logs.
pub fn simulate_call(
    state: &dyn StateRead,
    env: &Env,
    params: &Params,
    from: Address,
    to: Address,
    value: U256,
    data: &[u8],
) -> Result<(Vec<u8>, u64, Vec<Log>), ExecError> {
    let mut ctx = Ctx {
        state: Overlay::new(state),
        env,
        params,
        sender: from,
        value,
        logs: Vec::new(),
    };
    let gas = gas_of(params, &to, data)?;
    let output = modules::dispatch(&mut ctx, to, data)?;
    Ok((output, gas, ctx.logs))
}

/// The price an envelope offers per gas, whatever its type.
trait MaxFee {
    fn max_fee_per_gas_value(&self) -> u128;
}

impl MaxFee for alloy_consensus::TxEnvelope {
    fn max_fee_per_gas_value(&self) -> u128 {
        alloy_consensus::Transaction::max_fee_per_gas(self)
    }
}

#[cfg(test)]
mod tests {
    use super::gas_of;
    use crate::ExecError;
    use openledger_types::{modules::BANK, Params};

    #[test]
    fn zero_bytes_are_counted_in_every_position() {
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129, 1000] {
            for zero_every in [1usize, 2, 3, 7, 64, usize::MAX] {
                let data: Vec<u8> = (0..len)
                    .map(|i| {
                        if i % zero_every == 0 {
                            0
                        } else {
                            1 + (i % 255) as u8
                        }
                    })
                    .collect();
                let want = data.iter().filter(|b| **b == 0).count() as u64;
                assert_eq!(
                    super::zero_bytes(&data),
                    want,
                    "len {len}, every {zero_every}"
                );
            }
        }
    }

    #[test]
    fn calldata_gas_that_would_overflow_is_refused() {
        let mut params = Params::default();
        assert_eq!(gas_of(&params, &BANK, &[0, 1]), Ok(21_000 + 4 + 16));
        params.calldata_nonzero_byte_gas = u64::MAX / 2;
        match gas_of(&params, &BANK, &[1, 2, 3]) {
            Err(ExecError::Invalid(m)) => assert!(m.contains("overflows"), "{m}"),
            other => panic!("expected an overflow refusal, got {other:?}"),
        }
        params.calldata_nonzero_byte_gas = 16;
        params.tx_base_gas = u64::MAX;
        assert_eq!(gas_of(&params, &BANK, &[]), Ok(u64::MAX));
        assert!(
            gas_of(&params, &BANK, &[1]).is_err(),
            "the intrinsic gas sum is checked too"
        );
    }
}
