//! Staking: stake OPEN, request unstake, withdraw after the governed cooldown, and share the
//! stakers pool pro rata with O(1) reward-per-share accounting. All staked, unbonding and
//! undistributed OPEN sits in the staking module's own balance. Stake is also the voting
//! token of governance ([`votes`]: delegation and checkpointed voting power) and the collateral
//! that [`slash`] takes. Every call is O(1) in the number of stakers.
//!
//! Rewards are kept at full precision: the accumulator counts reward per share × [`SCALE`],
//! each staker's unpaid rewards are kept × [`SCALE`] too, and only a payout is floored to whole
//! wei, so the sum of all payouts never exceeds what was paid in. The part of a deposit that
//! does not divide evenly over the total stake is carried into the next deposit rather than
//! dropped. The module's balance therefore always covers total stake + all unbonding + every
//! staker's unpaid rewards, and keeps beyond that only dust: under one wei per staker plus the
//! carried remainder (under total stake / [`SCALE`] wei).
//!
//! Keys: `s/t` → total staked; `s/r` → accumulated reward per share (× [`SCALE`]);
//! `s/d` → the undistributed remainder of deposits (× [`SCALE`], below the total stake when
//! it was carried); `s/u` ++ address → the staker record; [`votes`] and [`slash`] list theirs.

pub mod slash;
pub mod votes;

pub use slash::{burn, slash, total_burned};
pub use votes::{delegates, past_total_votes, past_votes, votes};

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    modules::bank,
    Ctx, ExecError,
};
use alloy_primitives::{
    aliases::{U208, U48},
    Address, U256,
};
use alloy_sol_types::{sol, SolCall, SolInterface, SolValue};
use openledger_types::{
    abi::IStaking,
    modules::{GOVERNOR, STAKING, TREASURY},
};

/// Fixed-point scale of the reward-per-share accumulator.
pub const SCALE: U256 = U256::from_limbs([0x1bcecceda1000000, 0xd3c2, 0, 0]); // 1e24

const TOTAL: &[u8] = b"s/t";
const ACC: &[u8] = b"s/r";
const REMAINDER: &[u8] = b"s/d";

sol! {
    /// A staker's record.
    struct Staker {
        uint256 stake;
        /// The accumulator's value when `owedScaled` was last brought up to date.
        uint256 accSnapshot;
        /// Rewards earned up to `accSnapshot` and not yet paid, × SCALE (exact, never floored).
        uint256 owedScaled;
        uint256 unbonding;
        uint64 releaseTime;
    }
}

fn staker_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"s/u", a.as_slice()])
}

fn staker(state: &dyn StateRead, a: &Address) -> Result<Staker, StorageError> {
    Ok(
        codec::get_sol::<Staker>(state, &staker_key(a))?.unwrap_or(Staker {
            stake: U256::ZERO,
            accSnapshot: U256::ZERO,
            owedScaled: U256::ZERO,
            unbonding: U256::ZERO,
            releaseTime: 0,
        }),
    )
}

fn overflow(what: &str) -> ExecError {
    ExecError::Invalid(format!(
        "staking reward accounting overflows 256 bits ({what}); nothing was changed"
    ))
}

/// Rewards earned and not yet paid at accumulator `acc`, × [`SCALE`] (exact).
fn pending_scaled(s: &Staker, acc: U256) -> ExecResult<U256> {
    let growth = acc.checked_sub(s.accSnapshot).ok_or_else(|| {
        StorageError(format!(
            "corrupt staker record: snapshot {} is ahead of the reward accumulator {acc}",
            s.accSnapshot
        ))
    })?;
    s.stake
        .checked_mul(growth)
        .and_then(|earned| earned.checked_add(s.owedScaled))
        .ok_or_else(|| overflow("a staker's unpaid rewards"))
}

/// Rewards earned and not yet paid, in whole wei (what a claim pays now).
fn pending(s: &Staker, acc: U256) -> ExecResult<U256> {
    Ok(pending_scaled(s, acc)? / SCALE)
}

/// Brings `s`'s unpaid rewards up to `acc`; call before its stake changes.
fn checkpoint(s: &mut Staker, acc: U256) -> ExecResult<()> {
    s.owedScaled = pending_scaled(s, acc)?;
    s.accSnapshot = acc;
    Ok(())
}

/// What `a` has staked (unbonding amounts excluded).
pub fn stake_of(state: &dyn StateRead, a: &Address) -> ExecResult<U256> {
    Ok(staker(state, a)?.stake)
}

/// Moves `amount` from `from` into the stakers pool (silently), or to the treasury when nothing
/// is staked. Used for gas fees and the stakers' share of inference fees.
pub fn add_rewards(state: &mut Overlay, from: &Address, amount: U256) -> ExecResult<bool> {
    add_rewards_with(state, amount, |state, to| {
        bank::move_balance(state, from, &to, amount)
    })
}

/// [`add_rewards`] with the OPEN moved by `pay` (to the staking module, or to the treasury when
/// nothing is staked): for a caller that holds the paying account itself ([`bank::Accounts`]).
pub fn add_rewards_with(
    state: &mut Overlay,
    amount: U256,
    pay: impl FnOnce(&mut Overlay, Address) -> ExecResult<()>,
) -> ExecResult<bool> {
    if amount.is_zero() {
        return Ok(false);
    }
    let total = codec::get_u256(state, TOTAL)?;
    if total.is_zero() {
        pay(state, TREASURY)?;
        return Ok(false);
    }
    pay(state, STAKING)?;
    let acc = codec::get_u256(state, ACC)?;
    let carried = codec::get_u256(state, REMAINDER)?;
    let scaled = amount
        .checked_mul(SCALE)
        .and_then(|x| x.checked_add(carried))
        .ok_or_else(|| overflow("a reward deposit"))?;
    let (inc, rest) = scaled.div_rem(total);
    let acc = acc
        .checked_add(inc)
        .ok_or_else(|| overflow("the reward-per-share accumulator"))?;
    codec::put_u256(state, ACC.to_vec(), acc);
    codec::put_u256(state, REMAINDER.to_vec(), rest);
    Ok(true)
}

/// Executes a staking call.
pub fn call(ctx: &mut Ctx, call: IStaking::IStakingCalls) -> ExecResult<Vec<u8>> {
    use IStaking::IStakingCalls as C;
    let me = ctx.sender;
    let acc = codec::get_u256(&ctx.state, ACC)?;
    let total = codec::get_u256(&ctx.state, TOTAL)?;
    let mut s = staker(&ctx.state, &me)?;
    let out = match call {
        C::stake(_) => {
            let amount = ctx.value;
            if amount < ctx.params.min_stake {
                return Err(ExecError::Invalid(format!(
                    "stake of {amount} wei is below the minimum {} wei",
                    ctx.params.min_stake
                )));
            }
            checkpoint(&mut s, acc)?;
            let too_much = || ExecError::Invalid(format!("a stake of {amount} wei overflows"));
            s.stake = s.stake.checked_add(amount).ok_or_else(too_much)?;
            let total = total.checked_add(amount).ok_or_else(too_much)?;
            codec::put_u256(&mut ctx.state, TOTAL.to_vec(), total);
            let delegatee = votes::delegates(&ctx.state, &me)?;
            votes::shift(ctx, Address::ZERO, delegatee, amount)?;
            votes::set_total(ctx, total)?;
            ctx.emit(
                STAKING,
                &IStaking::Staked {
                    staker: me,
                    amount,
                    totalStake: s.stake,
                },
            );
            Vec::new()
        }
        C::requestUnstake(c) => {
            let amount = c.amount;
            if amount.is_zero() || amount > s.stake {
                return Err(ExecError::Invalid(format!(
                    "cannot unstake {amount} wei: your stake is {} wei",
                    s.stake
                )));
            }
            let rest = s.stake - amount;
            if !rest.is_zero() && rest < ctx.params.min_stake {
                return Err(ExecError::Invalid(format!(
                    "unstaking {amount} wei would leave {rest} wei staked, below the minimum {} wei; unstake all or less",
                    ctx.params.min_stake
                )));
            }
            checkpoint(&mut s, acc)?;
            s.stake = rest;
            s.unbonding = s.unbonding.checked_add(amount).ok_or_else(|| {
                ExecError::Invalid(format!("unbonding {amount} more wei overflows"))
            })?;
            s.releaseTime = ctx
                .env
                .timestamp
                .saturating_add(ctx.params.unstake_cooldown_secs);
            let total = total.checked_sub(amount).ok_or_else(|| {
                StorageError(format!(
                    "corrupt staking state: a stake of {amount} wei exceeds the total {total} wei"
                ))
            })?;
            codec::put_u256(&mut ctx.state, TOTAL.to_vec(), total);
            let delegatee = votes::delegates(&ctx.state, &me)?;
            votes::shift(ctx, delegatee, Address::ZERO, amount)?;
            votes::set_total(ctx, total)?;
            ctx.emit(
                STAKING,
                &IStaking::UnstakeRequested {
                    staker: me,
                    amount,
                    releaseTime: s.releaseTime,
                },
            );
            Vec::new()
        }
        C::withdraw(_) => {
            if s.unbonding.is_zero() {
                return Err(ExecError::Invalid(
                    "nothing is unbonding; call requestUnstake first".into(),
                ));
            }
            if ctx.env.timestamp < s.releaseTime {
                return Err(ExecError::Invalid(format!(
                    "unbonding OPEN is released at {} (unix seconds); it is now {}",
                    s.releaseTime, ctx.env.timestamp
                )));
            }
            let amount = std::mem::take(&mut s.unbonding);
            s.releaseTime = 0;
            ctx.transfer(STAKING, me, amount)?;
            ctx.emit(STAKING, &IStaking::Withdrawn { staker: me, amount });
            IStaking::withdrawCall::abi_encode_returns(&amount)
        }
        C::claimRewards(_) => {
            checkpoint(&mut s, acc)?;
            // Pay whole wei; the fraction stays owed (and in the pool) for the next claim.
            let (amount, fraction) = s.owedScaled.div_rem(SCALE);
            s.owedScaled = fraction;
            ctx.transfer(STAKING, me, amount)?;
            ctx.emit(STAKING, &IStaking::RewardsClaimed { staker: me, amount });
            IStaking::claimRewardsCall::abi_encode_returns(&amount)
        }
        C::stakeOf(c) => return Ok(staker(&ctx.state, &c.staker)?.stake.abi_encode()),
        C::pendingRewards(c) => {
            return Ok(pending(&staker(&ctx.state, &c.staker)?, acc)?.abi_encode())
        }
        C::unbondingOf(c) => {
            let s = staker(&ctx.state, &c.staker)?;
            return Ok((s.unbonding, s.releaseTime).abi_encode_params());
        }
        C::totalStaked(_) => return Ok(total.abi_encode()),
        C::delegate(c) => {
            return votes::delegate(ctx, me, s.stake, c.delegatee).map(|_| Vec::new())
        }
        C::slash(c) => {
            if me != GOVERNOR {
                return Err(ExecError::Unauthorized(format!(
                    "only the governor ({GOVERNOR}) may slash; {me} is not it: propose the slash through governance"
                )));
            }
            if c.amount.is_zero() {
                return Err(ExecError::Invalid("a slash of 0 wei does nothing".into()));
            }
            let slashed = slash::slash(ctx, &c.staker, c.amount, &c.reason)?;
            return Ok(IStaking::slashCall::abi_encode_returns(&slashed));
        }
        view => return views(ctx, view),
    };
    codec::put_sol(&mut ctx.state, staker_key(&me), &s);
    Ok(out)
}

/// The voting views (IVotes / EIP-6372) and the burned total.
fn views(ctx: &Ctx, call: IStaking::IStakingCalls) -> ExecResult<Vec<u8>> {
    use IStaking::IStakingCalls as C;
    let state = &ctx.state;
    let now = ctx.env.timestamp;
    let past = |t: U256| -> ExecResult<u64> {
        match u64::try_from(t) {
            Ok(t) if t < now => Ok(t),
            _ => Err(ExecError::Invalid(format!(
                "ERC5805FutureLookup: timepoint {t} is not in the past (clock {now}); votes at a timestamp are final only once it is over"
            ))),
        }
    };
    Ok(match call {
        C::delegates(c) => votes::delegates(state, &c.account)?.abi_encode(),
        C::getVotes(c) => votes::votes(state, &c.account)?.abi_encode(),
        C::getPastVotes(c) => {
            votes::past_votes(state, &c.account, past(c.timepoint)?)?.abi_encode()
        }
        C::getPastTotalSupply(c) => {
            votes::past_total_votes(state, past(c.timepoint)?)?.abi_encode()
        }
        C::clock(_) => clock(now)?.abi_encode(),
        C::CLOCK_MODE(_) => "mode=timestamp".abi_encode(),
        C::numCheckpoints(c) => {
            let n = votes::checkpoint_count(state, &c.account)?;
            u32::try_from(n)
                .map_err(|_| {
                    ExecError::Invalid(format!(
                        "{} has {n} checkpoints, more than a uint32 counts",
                        c.account
                    ))
                })?
                .abi_encode()
        }
        C::checkpoints(c) => {
            let cp = votes::checkpoint(state, &c.account, c.pos.into())?.ok_or_else(|| {
                ExecError::NotFound(format!("checkpoint {} of {}", c.pos, c.account))
            })?;
            IStaking::Checkpoint {
                key: clock(cp.time)?,
                value: uint208(cp.votes)?,
            }
            .abi_encode()
        }
        C::totalBurned(_) => slash::total_burned(state)?.abi_encode(),
        other => {
            return Err(ExecError::Invalid(format!(
                "staking call {:?} has no handler",
                other.selector()
            )))
        }
    })
}

/// Votes as OpenZeppelin's `uint208` checkpoint value (the supply is far below 2^208).
fn uint208(v: U256) -> ExecResult<U208> {
    let b = v.to_be_bytes::<32>();
    if b[..6].iter().any(|x| *x != 0) {
        return Err(ExecError::Invalid(format!(
            "{v} votes do not fit a uint208"
        )));
    }
    Ok(U208::from_be_slice(&b[6..]))
}

/// A timestamp as an EIP-6372 `uint48` clock value.
fn clock(t: u64) -> ExecResult<U48> {
    U48::try_from(t)
        .ok()
        .ok_or_else(|| ExecError::Invalid(format!("timestamp {t} does not fit a uint48 clock")))
}

#[cfg(test)]
mod tests {
    use super::SCALE;
    use alloy_primitives::U256;

    #[test]
    fn scale_is_1e24() {
        assert_eq!(SCALE, U256::from(10u64).pow(U256::from(24u64)));
    }
}
