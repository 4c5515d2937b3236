//! What one inference call reads again and again, read once: the adapters and attributed
//! contributions its records name, decoded once per call, and the accounts its settlements pay,
//! held in a [`bank::Accounts`] and written back once at the end.
//!
//! Recording and settling change no adapter and no contribution, so a cached one is the
//! state's for the whole call; and nothing else reads or writes a bank account between the
//! first payment and [`Batch::finish`]. The call's state and logs are therefore the same as
//! with a fresh read per use (`tests/inference_batch_cache.rs` pins them).

use crate::{
    error::ExecResult,
    kv::StateRead,
    modules::{bank, datanet, model},
    Ctx,
};
use alloy_primitives::Address;
use std::collections::HashMap;

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

    /// Contribution `id` (refused, as [`datanet::contribution`] refuses, when it does not exist).
    pub fn contribution(&mut self, state: &dyn StateRead, id: u64) -> ExecResult<ContributionView> {
        if let Some(c) = self.contributions.get(&id) {
            return Ok(*c);
        }
        let c = datanet::contribution(state, id)?;
        let view = ContributionView {
            datanet: c.datanetId,
            approved: c.status == datanet::APPROVED,
            version: c.version,
            contributor: c.contributor,
        };
        self.contributions.insert(id, view);
        Ok(view)
    }

    /// Writes the held accounts back into the call's state.
    pub fn finish(self, ctx: &mut Ctx) {
        self.accounts.flush(&mut ctx.state);
    }
}
