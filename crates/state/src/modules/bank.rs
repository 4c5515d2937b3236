//! Bank: accounts (nonce and OPEN balance) and native transfers. Every transfer emits
//! `IBank.Transfer` from the bank's address; gas fees move silently, as on Ethereum.
//! `IBank.transfer` refuses a module as recipient, as a plain value transfer to a module is
//! refused: a module moves only OPEN it accounts for, so OPEN sent there would be locked for
//! good. `IBank.treasuryGrant` pays from the treasury (0x…1000), and only the governor
//! (0x…1007) may call it.
//!
//! Keys: `a` ++ address → nonce (8 bytes BE) ++ balance (32 bytes BE); `supply` → total supply.

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    Ctx, ExecError,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_types::{
    abi::IBank,
    modules::{self, BANK},
};

/// Key of the fixed total supply.
pub const SUPPLY_KEY: &[u8] = b"supply";

/// An account's nonce and balance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub nonce: u64,
    pub balance: U256,
}

fn account_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"a", a.as_slice()])
}

/// Reads an account (empty when absent).
pub fn account(state: &dyn StateRead, a: &Address) -> Result<Account, StorageError> {
    match state.get_ref(&account_key(a))?.as_deref() {
        None => Ok(Account::default()),
        Some(v) if v.len() == 40 => Ok(Account {
            nonce: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
            balance: U256::from_be_slice(&v[8..]),
        }),
        Some(_) => Err(StorageError(format!("corrupt account record for {a}"))),
    }
}

/// Writes an account; an empty account is deleted.
pub fn put_account(state: &mut Overlay, a: &Address, acct: Account) {
    if acct == Account::default() {
        state.delete(account_key(a));
    } else {
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&acct.nonce.to_be_bytes());
        v.extend_from_slice(&acct.balance.to_be_bytes::<32>());
        state.put(account_key(a), v);
    }
}

/// `balance` of `account` less `amount`; insufficient funds name the account and both sums.
fn debited(balance: U256, account: &Address, amount: U256) -> ExecResult<U256> {
    balance
        .checked_sub(amount)
        .ok_or(ExecError::InsufficientFunds {
            account: *account,
            have: balance,
            need: amount,
        })
}

/// `balance` plus `amount`; an overflow means the supply invariant is broken.
fn credited(balance: U256, amount: U256) -> ExecResult<U256> {
    Ok(balance
        .checked_add(amount)
        .ok_or_else(|| StorageError("balance overflow: supply invariant broken".into()))?)
}

/// Moves `amount` without a log (gas fees). Fails, changing nothing, on insufficient funds.
pub fn move_balance(
    state: &mut Overlay,
    from: &Address,
    to: &Address,
    amount: U256,
) -> ExecResult<()> {
    if amount.is_zero() {
        return Ok(());
    }
    let mut src = account(state, from)?;
    src.balance = debited(src.balance, from, amount)?;
    put_account(state, from, src);
    let mut dst = account(state, to)?;
    dst.balance = credited(dst.balance, amount)?;
    put_account(state, to, dst);
    Ok(())
}

/// Moves `amount` and emits `Transfer`.
pub fn transfer(ctx: &mut Ctx, from: Address, to: Address, amount: U256) -> ExecResult<()> {
    if amount.is_zero() {
        return Ok(());
    }
    move_balance(&mut ctx.state, &from, &to, amount)?;
    emit_transfer(ctx, from, to, amount);
    Ok(())
}

/// Emits the bank's `Transfer` log of a move already made.
fn emit_transfer(ctx: &mut Ctx, from: Address, to: Address, amount: U256) {
    ctx.emit_words(
        BANK,
        &IBank::Transfer {
            from,
            to,
            value: amount,
        },
    );
}

/// Accounts read once and written back once, for a module that pays many transfers in one call
/// (inference settlement): the same checks, the same `Transfer` logs in the same order and, after
/// [`Accounts::flush`], the same state as calling [`transfer`] / [`move_balance`] for each, with
/// one read and one write per account instead of two of each per transfer. Until the flush,
/// nothing else may read or write the accounts it has touched.
#[derive(Default)]
pub struct Accounts {
    touched: alloy_primitives::map::AddressHashMap<Account>,
}

impl Accounts {
    fn get(&mut self, state: &dyn StateRead, a: &Address) -> Result<&mut Account, StorageError> {
        Ok(match self.touched.entry(*a) {
            alloy_primitives::map::Entry::Occupied(e) => e.into_mut(),
            alloy_primitives::map::Entry::Vacant(e) => e.insert(account(state, a)?),
        })
    }

    /// [`move_balance`] on the held accounts.
    pub fn move_balance(
        &mut self,
        state: &dyn StateRead,
        from: &Address,
        to: &Address,
        amount: U256,
    ) -> ExecResult<()> {
        if amount.is_zero() {
            return Ok(());
        }
        let src = self.get(state, from)?;
        src.balance = debited(src.balance, from, amount)?;
        let dst = self.get(state, to)?;
        dst.balance = credited(dst.balance, amount)?;
        Ok(())
    }

    /// [`transfer`] on the held accounts: moves `amount` and emits `Transfer`.
    pub fn transfer(
        &mut self,
        ctx: &mut Ctx,
        from: Address,
        to: Address,
        amount: U256,
    ) -> ExecResult<()> {
        if amount.is_zero() {
            return Ok(());
        }
        self.move_balance(&ctx.state, &from, &to, amount)?;
        emit_transfer(ctx, from, to, amount);
        Ok(())
    }

    /// Writes every touched account back (an emptied one is deleted, as [`put_account`] does).
    pub fn flush(self, state: &mut Overlay) {
        for (a, acct) in self.touched {
            put_account(state, &a, acct);
        }
    }
}

/// Executes a bank call.
pub fn call(ctx: &mut Ctx, call: IBank::IBankCalls) -> ExecResult<Vec<u8>> {
    use IBank::IBankCalls as C;
    Ok(match call {
        C::transfer(c) => {
            // The treasury (0x…1000) is not in `modules::ALL` and is allowed: it is a plain
            // account that already receives fees by transfer and whose balance governance is
            // to fund spending from, so OPEN donated to it stays usable. A module holds only
            // what its own records say it owes (stakes, credit, escrow); OPEN sent to one
            // outside its payable functions could never move again.
            if let Some(m) = modules::name_of(&c.to) {
                return Err(ExecError::NotPayable(format!(
                    "the {m} module (IBank.transfer cannot send OPEN to a module; send value only through a payable function)"
                )));
            }
            let from = ctx.sender;
            ctx.transfer(from, c.to, c.amount)?;
            IBank::transferCall::abi_encode_returns(&true)
        }
        C::treasuryGrant(c) => {
            treasury_grant(ctx, c.to, c.amount, c.reason)?;
            Vec::new()
        }
        C::balanceOf(c) => account(&ctx.state, &c.account)?.balance.abi_encode(),
        C::totalSupply(_) => codec::get_u256(&ctx.state, SUPPLY_KEY)?.abi_encode(),
    })
}

/// `IBank.treasuryGrant`: the governor pays `amount` from the treasury to the account `to`.
fn treasury_grant(ctx: &mut Ctx, to: Address, amount: U256, reason: String) -> ExecResult<()> {
    if ctx.sender != modules::GOVERNOR {
        return Err(ExecError::Unauthorized(format!(
            "IBank.treasuryGrant may only be called by the governor (0x…1007) through an executed proposal, not by {}; propose it with `openledger gov propose --grant ADDRESS=AMOUNT`",
            ctx.sender
        )));
    }
    ctx.check_len("the grant reason", &reason)?;
    if amount.is_zero() {
        return Err(ExecError::Invalid(
            "a treasury grant of 0 OPEN does nothing".into(),
        ));
    }
    if let Some(m) = modules::name_of(&to) {
        return Err(ExecError::Invalid(format!(
            "a treasury grant cannot pay the {m} module: grant to an account"
        )));
    }
    ctx.transfer(modules::TREASURY, to, amount)?;
    ctx.emit(BANK, &IBank::TreasuryGrant { to, amount, reason });
    Ok(())
}
