//! Voting power of stake (OpenZeppelin `IVotes` semantics on a timestamp clock): delegation,
//! and checkpointed histories of each delegatee's votes and of the total stake.
//!
//! A staker's stake counts for its delegatee: itself unless it called `delegate` (the key is
//! absent then); a stored `Address::ZERO` means "nobody", as `delegate(address(0))` does in
//! OpenZeppelin. Every change writes O(1) records: the last checkpoint is rewritten when it has
//! the current timestamp, else one is appended. Lookups by timepoint check the latest
//! checkpoint first and otherwise binary-search (O(log n) reads).
//!
//! Keys: `s/g` ++ account → delegatee (20 bytes); `s/k` ++ account ++ index (8 bytes BE) →
//! timestamp (8 bytes BE) ++ votes (32 bytes BE); `s/n` ++ account → checkpoint count;
//! `s/K` ++ index → a total-stake checkpoint; `s/N` → their count.

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    Ctx,
};
use alloy_primitives::{Address, U256};
use openledger_types::{abi::IStaking, modules::STAKING};

const DELEGATE: &[u8] = b"s/g";

/// One checkpoint: the votes in force from `time` (unix seconds) on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub time: u64,
    pub votes: U256,
}

/// A history of checkpoints: an account's votes or the total stake.
struct Series {
    entry: Vec<u8>,
    count: Vec<u8>,
}

impl Series {
    fn account(a: &Address) -> Series {
        Series {
            entry: codec::key(&[b"s/k", a.as_slice()]),
            count: codec::key(&[b"s/n", a.as_slice()]),
        }
    }

    fn total() -> Series {
        Series {
            entry: b"s/K".to_vec(),
            count: b"s/N".to_vec(),
        }
    }

    fn len(&self, state: &dyn StateRead) -> Result<u64, StorageError> {
        codec::get_u64(state, &self.count)
    }

    fn key(&self, i: u64) -> Vec<u8> {
        codec::key(&[&self.entry, &i.to_be_bytes()])
    }

    fn get(&self, state: &dyn StateRead, i: u64) -> Result<Checkpoint, StorageError> {
        match state.get(&self.key(i))? {
            Some(v) if v.len() == 40 => Ok(Checkpoint {
                time: u64::from_be_bytes(v[..8].try_into().expect("8 bytes")),
                votes: U256::from_be_slice(&v[8..]),
            }),
            _ => Err(StorageError(format!(
                "corrupt or missing voting checkpoint {i} under {}",
                String::from_utf8_lossy(&self.entry[..3])
            ))),
        }
    }

    fn latest(&self, state: &dyn StateRead) -> Result<U256, StorageError> {
        match self.len(state)? {
            0 => Ok(U256::ZERO),
            n => Ok(self.get(state, n - 1)?.votes),
        }
    }

    /// The votes in force at the end of timestamp `t`: the last checkpoint at or before it.
    fn at(&self, state: &dyn StateRead, t: u64) -> Result<U256, StorageError> {
        let n = self.len(state)?;
        if n == 0 {
            return Ok(U256::ZERO);
        }
        let last = self.get(state, n - 1)?;
        if last.time <= t {
            return Ok(last.votes);
        }
        // Invariant: checkpoint `hi` is after `t`; find the first one that is.
        let (mut lo, mut hi) = (0, n - 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(state, mid)?.time > t {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        match lo {
            0 => Ok(U256::ZERO),
            i => Ok(self.get(state, i - 1)?.votes),
        }
    }

    /// Records `votes` from `now` on: rewrites the last checkpoint when it is from `now`.
    fn push(&self, state: &mut Overlay, now: u64, votes: U256) -> Result<(), StorageError> {
        let n = self.len(state)?;
        let last = match n {
            0 => None,
            n => Some(self.get(state, n - 1)?),
        };
        let at = match last {
            Some(c) if c.time > now => {
                return Err(StorageError(format!(
                    "voting checkpoint at {} is later than the block time {now}",
                    c.time
                )))
            }
            Some(c) if c.time == now => n - 1,
            _ => {
                codec::put_u64(state, self.count.clone(), n + 1);
                n
            }
        };
        let mut v = Vec::with_capacity(40);
        v.extend_from_slice(&now.to_be_bytes());
        v.extend_from_slice(&votes.to_be_bytes::<32>());
        state.put(self.key(at), v);
        Ok(())
    }
}

/// Whom `a`'s stake counts for: itself unless it delegated (`Address::ZERO`: nobody).
pub fn delegates(state: &dyn StateRead, a: &Address) -> Result<Address, StorageError> {
    match state.get(&codec::key(&[DELEGATE, a.as_slice()]))? {
        None => Ok(*a),
        Some(v) if v.len() == 20 => Ok(Address::from_slice(&v)),
        Some(_) => Err(StorageError(format!("corrupt delegate record of {a}"))),
    }
}

fn set_delegate(state: &mut Overlay, a: &Address, to: &Address) {
    let key = codec::key(&[DELEGATE, a.as_slice()]);
    if to == a {
        state.delete(key);
    } else {
        state.put(key, to.to_vec());
    }
}

/// `a`'s voting power now.
pub fn votes(state: &dyn StateRead, a: &Address) -> Result<U256, StorageError> {
    Series::account(a).latest(state)
}

/// `a`'s voting power at the end of timestamp `t`. The caller makes sure `t` is in the past
/// (a timestamp still current may gain votes); `getPastVotes` refuses any other.
pub fn past_votes(state: &dyn StateRead, a: &Address, t: u64) -> Result<U256, StorageError> {
    Series::account(a).at(state, t)
}

/// The total stake (all voting power, delegated or not) at the end of timestamp `t`; as for
/// [`past_votes`], `t` should be in the past.
pub fn past_total_votes(state: &dyn StateRead, t: u64) -> Result<U256, StorageError> {
    Series::total().at(state, t)
}

/// How many checkpoints `a` has.
pub fn checkpoint_count(state: &dyn StateRead, a: &Address) -> Result<u64, StorageError> {
    Series::account(a).len(state)
}

/// `a`'s checkpoint number `i` (0 = oldest), if it exists.
pub fn checkpoint(
    state: &dyn StateRead,
    a: &Address,
    i: u64,
) -> Result<Option<Checkpoint>, StorageError> {
    let s = Series::account(a);
    if i >= s.len(state)? {
        return Ok(None);
    }
    s.get(state, i).map(Some)
}

/// Moves `amount` votes from delegatee `from` to delegatee `to` (`Address::ZERO` on either side:
/// votes appear from new stake or vanish with stake that leaves), checkpointing both and
/// emitting `DelegateVotesChanged` for each.
pub(super) fn shift(ctx: &mut Ctx, from: Address, to: Address, amount: U256) -> ExecResult<()> {
    if from == to || amount.is_zero() {
        return Ok(());
    }
    let now = ctx.env.timestamp;
    if from != Address::ZERO {
        let s = Series::account(&from);
        let old = s.latest(&ctx.state)?;
        // Fewer votes than the stake leaving happens only for stake staked before voting power
        // was checkpointed (state of an older release): it never had votes, so it takes none.
        let new = old.saturating_sub(amount);
        s.push(&mut ctx.state, now, new)?;
        ctx.emit(
            STAKING,
            &IStaking::DelegateVotesChanged {
                delegate: from,
                previousVotes: old,
                newVotes: new,
            },
        );
    }
    if to != Address::ZERO {
        let s = Series::account(&to);
        let old = s.latest(&ctx.state)?;
        // Votes never exceed the total stake, which is bounded by the supply.
        let new = old
            .checked_add(amount)
            .ok_or_else(|| StorageError(format!("voting power of {to} overflows 256 bits")))?;
        s.push(&mut ctx.state, now, new)?;
        ctx.emit(
            STAKING,
            &IStaking::DelegateVotesChanged {
                delegate: to,
                previousVotes: old,
                newVotes: new,
            },
        );
    }
    Ok(())
}

/// Records the total stake `total` from now on.
pub(super) fn set_total(ctx: &mut Ctx, total: U256) -> ExecResult<()> {
    Series::total().push(&mut ctx.state, ctx.env.timestamp, total)?;
    Ok(())
}

/// Stake of `staker` (`stake`) now counts for `to`: moves its votes and emits `DelegateChanged`.
pub(super) fn delegate(ctx: &mut Ctx, staker: Address, stake: U256, to: Address) -> ExecResult<()> {
    let from = delegates(&ctx.state, &staker)?;
    set_delegate(&mut ctx.state, &staker, &to);
    ctx.emit(
        STAKING,
        &IStaking::DelegateChanged {
            delegator: staker,
            fromDelegate: from,
            toDelegate: to,
        },
    );
    shift(ctx, from, to, stake)
}
