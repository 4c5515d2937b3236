//! Slashing and burning. [`slash`] takes OPEN from a staker's stake first, then from its
//! unbonding OPEN, and sends it to the treasury or burns it, as the governed
//! `slash_destination` says. The governor calls it through `IStaking.slash`; the RLHF and agent
//! modules call the Rust function directly. [`burn`] destroys OPEN: it lowers the recorded total
//! supply by the amount, adds it to the burned total and logs `IBank.Transfer` to address(0),
//! so the sum of all balances always equals the recorded supply, which equals the genesis supply
//! less everything burned.
//!
//! Keys: `s/b` → total burned.

use super::{checkpoint, staker, staker_key, votes, ACC, TOTAL};
use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::StateRead,
    modules::bank,
    Ctx, ExecError,
};
use alloy_primitives::{Address, U256};
use openledger_types::{
    abi::{IBank, IStaking},
    modules::{BANK, STAKING, TREASURY},
    params::SlashDestination,
};

const BURNED: &[u8] = b"s/b";

/// All OPEN burned so far.
pub fn total_burned(state: &dyn StateRead) -> Result<U256, StorageError> {
    codec::get_u256(state, BURNED)
}

/// Burns `amount` of `from`'s OPEN: its balance and the total supply shrink by it.
pub fn burn(ctx: &mut Ctx, from: Address, amount: U256) -> ExecResult<()> {
    if amount.is_zero() {
        return Ok(());
    }
    let mut acct = bank::account(&ctx.state, &from)?;
    acct.balance = acct
        .balance
        .checked_sub(amount)
        .ok_or(ExecError::InsufficientFunds {
            account: from,
            have: acct.balance,
            need: amount,
        })?;
    bank::put_account(&mut ctx.state, &from, acct);
    let supply = codec::get_u256(&ctx.state, bank::SUPPLY_KEY)?;
    let supply = supply.checked_sub(amount).ok_or_else(|| {
        StorageError(format!(
            "supply invariant broken: burning {amount} wei exceeds the recorded supply {supply} wei"
        ))
    })?;
    codec::put_u256(&mut ctx.state, bank::SUPPLY_KEY.to_vec(), supply);
    let burned = total_burned(&ctx.state)?
        .checked_add(amount)
        .ok_or_else(|| StorageError("the burned total overflows 256 bits".into()))?;
    codec::put_u256(&mut ctx.state, BURNED.to_vec(), burned);
    ctx.emit(
        BANK,
        &IBank::Transfer {
            from,
            to: Address::ZERO,
            value: amount,
        },
    );
    Ok(())
}

/// Slashes up to `amount` of `who`'s stake, then of its unbonding OPEN, to the treasury or the
/// burn as governed; returns what was slashed (less than `amount` when `who` holds less, zero
/// when it holds nothing: no event then). Its unpaid rewards stay its own. The caller decides
/// who may slash; `reason` is logged.
pub fn slash(ctx: &mut Ctx, who: &Address, amount: U256, reason: &str) -> ExecResult<U256> {
    ctx.check_len("the slashing reason", reason)?;
    let mut s = staker(&ctx.state, who)?;
    let from_stake = amount.min(s.stake);
    let from_unbonding = (amount - from_stake).min(s.unbonding);
    let slashed = from_stake + from_unbonding;
    if slashed.is_zero() {
        return Ok(U256::ZERO);
    }
    if !from_stake.is_zero() {
        let acc = codec::get_u256(&ctx.state, ACC)?;
        checkpoint(&mut s, acc)?;
        s.stake -= from_stake;
        let total = codec::get_u256(&ctx.state, TOTAL)?;
        let total = total.checked_sub(from_stake).ok_or_else(|| {
            StorageError(format!(
                "corrupt staking state: a stake of {from_stake} wei exceeds the total {total} wei"
            ))
        })?;
        codec::put_u256(&mut ctx.state, TOTAL.to_vec(), total);
        let delegatee = votes::delegates(&ctx.state, who)?;
        votes::shift(ctx, delegatee, Address::ZERO, from_stake)?;
        votes::set_total(ctx, total)?;
    }
    s.unbonding -= from_unbonding;
    if s.unbonding.is_zero() {
        s.releaseTime = 0;
    }
    codec::put_sol(&mut ctx.state, staker_key(who), &s);
    let burned = ctx.params.slash_destination == SlashDestination::Burn;
    if burned {
        burn(ctx, STAKING, slashed)?;
    } else {
        ctx.transfer(STAKING, TREASURY, slashed)?;
    }
    ctx.emit(
        STAKING,
        &IStaking::Slashed {
            staker: *who,
            amount: slashed,
            burned,
            reason: reason.to_string(),
        },
    );
    Ok(slashed)
}
