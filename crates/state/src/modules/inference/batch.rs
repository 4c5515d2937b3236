//! What one inference call reads again and again, read once: the adapters and attributed
//! contributions its records name, decoded once per call; and what it updates again and again,
//! written once by [`Batch::finish`]: the callers' credit, the operators' allowances, the
//! callers' metered daily usage (their agent stake read at most once), the receipt counter,
//! the accounts its settlements pay (a [`bank::Accounts`]) and the stakers' shares, paid into
//! the stakers pool as one deposit.
//!
//! Recording and settling change no adapter, no contribution and no agent stake, so a cached
//! one is the state's for the whole call; nothing else in the call reads or writes the held
//! values. The stakers pool's accumulator ends where one deposit per receipt would leave it: the total
//! stake does not change during the call and each deposit carries its remainder into the next,
//! so the sum of the increments is the floor of the summed deposits (plus the carried
//! remainder) over the total stake, and the new remainder is what that division leaves. The
//! call's state and logs are therefore the same as with a fresh read and write per use
//! (`tests/inference_batch_cache.rs` pins them).

use super::{allowance_key, credit_key, RECEIPT_COUNT};
use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::StateRead,
    modules::{agent, bank, datanet, model, staking},
    Ctx, ExecError,
};
use alloy_primitives::{
    map::{AddressHashMap, Entry, HashMap},
    Address, U256,
};
use openledger_types::modules::INFERENCE;

/// The parts of an adapter that recording and settling use.
pub(super) struct AdapterView {
    pub id: u64,
    pub owner: Address,
    /// (datanet id, version it was trained on).
    pub trained_on: Vec<(u64, u64)>,
}

/// The parts of a contribution that recording and settling use.
#[derive(Clone, Copy)]
pub(super) struct ContributionView {
    pub datanet: u64,
    pub approved: bool,
    pub version: u64,
    pub contributor: Address,
}

impl AdapterView {
    /// Whether the adapter was trained on a datanet version that includes `c`.
    pub fn trained_on(&self, c: &ContributionView) -> bool {
        c.approved
            && self
                .trained_on
                .iter()
                .any(|&(d, v)| d == c.datanet && c.version <= v)
    }
}

/// One call's caches; see the module documentation.
#[derive(Default)]
pub(super) struct Batch {
    adapters: HashMap<u64, std::rc::Rc<AdapterView>>,
    contributions: HashMap<u64, ContributionView>,
    pub accounts: bank::Accounts,
    credits: AddressHashMap<U256>,
    /// (caller, operator) → allowance.
    allowances: HashMap<(Address, Address), U256>,
    /// caller → (tokens used today so far, whether it may pass the free volume once known).
    usage: AddressHashMap<(u64, Option<bool>)>,
    /// The last receipt id, once read.
    last_receipt: Option<u64>,
    /// The stakers' shares settled so far.
    stakers: U256,
}

impl Batch {
    /// Adapter `id` (refused, as [`model::adapter`] refuses, when it does not exist).
    pub fn adapter(
        &mut self,
        state: &dyn StateRead,
        id: u64,
    ) -> ExecResult<std::rc::Rc<AdapterView>> {
        if let Some(a) = self.adapters.get(&id) {
            return Ok(a.clone());
        }
        let a = model::adapter(state, id)?;
        let view = std::rc::Rc::new(AdapterView {
            id: a.id,
            owner: a.owner,
            trained_on: a
                .datanetIds
                .iter()
                .copied()
                .zip(a.datanetVersions.iter().copied())
                .collect(),
        });
        self.adapters.insert(id, view.clone());
        Ok(view)
    }

    /// Contribution `id`'s head (refused, as [`datanet::contribution_head`] refuses, when it does
    /// not exist or is corrupt).
    pub fn contribution(&mut self, state: &dyn StateRead, id: u64) -> ExecResult<ContributionView> {
        if let Some(c) = self.contributions.get(&id) {
            return Ok(*c);
        }
        let c = datanet::contribution_head(state, id)?;
        let view = ContributionView {
            datanet: c.datanet,
            approved: c.status == datanet::APPROVED,
            version: c.version,
            contributor: c.contributor,
        };
        self.contributions.insert(id, view);
        Ok(view)
    }

    /// `caller`'s inference credit.
    pub fn credit(&mut self, state: &dyn StateRead, caller: &Address) -> ExecResult<&mut U256> {
        Ok(match self.credits.entry(*caller) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(codec::get_u256(state, &credit_key(caller))?),
        })
    }

    /// What `operator` may still spend of `caller`'s credit.
    pub fn allowance(
        &mut self,
        state: &dyn StateRead,
        caller: &Address,
        operator: &Address,
    ) -> ExecResult<&mut U256> {
        Ok(match self.allowances.entry((*caller, *operator)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(codec::get_u256(state, &allowance_key(caller, operator))?),
        })
    }

    /// The next receipt id (ids start at 1; refused once every 64-bit id is taken).
    pub fn next_receipt_id(&mut self, state: &dyn StateRead) -> ExecResult<u64> {
        let last = match self.last_receipt {
            Some(n) => n,
            None => codec::get_u64(state, RECEIPT_COUNT)?,
        };
        let id = last.checked_add(1).ok_or_else(|| {
            ExecError::Invalid(
                "the id counter i/n is exhausted: every 64-bit id is taken".to_string(),
            )
        })?;
        self.last_receipt = Some(id);
        Ok(id)
    }

    /// Meters `tokens` more for `caller` (refused, as [`agent::check_volume`] refuses, past the free
    /// volume without agent stake); the day's usage is written once by `finish`.
    pub fn meter(&mut self, ctx: &Ctx, caller: &Address, tokens: u64) -> ExecResult<()> {
        let (state, now) = (&ctx.state, ctx.env.timestamp);
        let (used, staked) = match self.usage.entry(*caller) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                e.insert((agent::tokens_used(state, caller, agent::day_of(now))?, None))
            }
        };
        *used = agent::check_more(state, ctx.params, now, caller, *used, tokens, staked)?;
        Ok(())
    }

    /// Adds a receipt's stakers' share to the deposit `finish` makes.
    pub fn reward_stakers(&mut self, amount: U256) -> ExecResult<()> {
        self.stakers = self.stakers.checked_add(amount).ok_or_else(|| {
            StorageError("settled stakers' shares overflow: supply invariant broken".into())
        })?;
        Ok(())
    }

    /// Writes everything held back into the call's state and pays the stakers' shares.
    pub fn finish(mut self, ctx: &mut Ctx) -> ExecResult<()> {
        let state = &mut ctx.state;
        for (caller, credit) in self.credits {
            codec::put_u256(state, credit_key(&caller), credit);
        }
        for ((caller, operator), allowed) in self.allowances {
            codec::put_u256(state, allowance_key(&caller, &operator), allowed);
        }
        for (caller, (used, _)) in self.usage {
            agent::record_usage(state, ctx.env.timestamp, &caller, used);
        }
        if let Some(n) = self.last_receipt {
            codec::put_u64(state, RECEIPT_COUNT.to_vec(), n);
        }
        let (stakers, accounts) = (self.stakers, &mut self.accounts);
        staking::add_rewards_with(state, stakers, |state, to| {
            accounts.move_balance(state, &INFERENCE, &to, stakers)
        })?;
        self.accounts.flush(state);
        Ok(())
    }
}
