//! Starting a run from a chain's current state (`openledger sim run --from-chain`): the
//! [`ChainStart`] a node's state is read into (its parameters, datanets with every
//! contribution, base models, adapters, stakers, inference users and their balances), and the
//! import that rebuilds that state in the simulated chain through real transactions before
//! day 0.
//!
//! The import, in order: the node's parameter set becomes the genesis parameters (the
//! scenario's `[chain]` section is filled from it, so a sweep of a `chain.*` field still
//! works; governance timings are rounded up to whole days, as the simulator's clock ticks once
//! a day); each datanet is created again by its owner agent, each contribution submitted again
//! by a contributor agent (one per node address, bound to the datanet of its first
//! contribution) with its rows root, row count, size and score, spread over as many import
//! days as the daily quotas need; approved ones are approved in version order and rejected
//! ones rejected on the last import day, pending ones stay pending for the owner's rule on
//! day 0; base models and adapters are registered again (an adapter by the builder of its first
//! datanet, the latest one per datanet is what that builder serves, its quality from the
//! fitted curve on the rows of the version it was trained on); stakers stake their stake;
//! receipts' callers become users of the datanet of the adapter they called, with their
//! inference credit. Every imported agent gets at least its node balance (agents need gas).
//! Each node address becomes one agent per role it plays. Then the scenario's populations are
//! topped up to their sizes (`contributors.initial`, `users.initial`, `stakers.count`,
//! `datanets.count`) and day 0 starts on the UTC day after the import.
//!
//! Not imported: governance proposals in flight, unbonding OPEN, RLHF rounds, agents, model
//! proposals, and balances of accounts that play none of these roles. A datanet that was
//! permissioned on the node is open in the simulation.

mod import;
mod read;

pub use read::{read, ChainSource};

use crate::scenario::{ChainParams, Scenario, ScenarioError};
use alloy_primitives::{Address, B256, U256};
use openledger_types::{units::serde_open, Params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most contributions a chain start may hold (the import re-submits each one).
pub const MAX_CONTRIBUTIONS: usize = 200_000;
/// Most import days the daily quotas may need.
pub const MAX_IMPORT_DAYS: u64 = 3_650;

/// A chain's state as the simulator starts from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainStart {
    /// Where it was read from (the node's JSON-RPC URL).
    pub source: String,
    pub chain_id: u64,
    /// The head block read and its timestamp.
    pub block: u64,
    pub timestamp: u64,
    /// The node's whole parameter set.
    pub params: Params,
    #[serde(default)]
    pub base_models: Vec<StartBaseModel>,
    #[serde(default)]
    pub datanets: Vec<StartDatanet>,
    #[serde(default)]
    pub adapters: Vec<StartAdapter>,
    #[serde(default)]
    pub stakers: Vec<StartAccount>,
    #[serde(default)]
    pub users: Vec<StartUser>,
    /// OPEN balances of the addresses above, by address.
    #[serde(default)]
    pub balances: BTreeMap<Address, Open>,
}

/// An OPEN amount written as a decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Open(#[serde(with = "serde_open")] pub U256);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBaseModel {
    pub id: u64,
    pub owner: Address,
    pub model_hash: B256,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartDatanet {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    /// Every contribution, in id order.
    #[serde(default)]
    pub contributions: Vec<StartContribution>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartContribution {
    pub id: u64,
    pub contributor: Address,
    pub rows_root: B256,
    pub row_count: u64,
    pub byte_size: u64,
    /// Validation score, basis points (the simulator's data quality × 10,000).
    pub score: u16,
    /// 0 pending, 1 approved, 2 rejected.
    pub status: u8,
    /// The version its approval created (approved ones).
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAdapter {
    pub id: u64,
    pub owner: Address,
    pub name: String,
    pub base_model_id: u64,
    pub datanet_ids: Vec<u64>,
    pub datanet_versions: Vec<u64>,
    pub training_config_hash: B256,
    pub adapter_hash: B256,
    pub attribution_index_root: B256,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartAccount {
    pub address: Address,
    pub stake: Open,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartUser {
    pub address: Address,
    /// The adapter of its latest receipt.
    pub adapter_id: u64,
    pub credit: Open,
}

impl ChainStart {
    /// One line saying what the start holds.
    pub fn describe(&self) -> String {
        let n: usize = self.datanets.iter().map(|d| d.contributions.len()).sum();
        format!(
            "chain {} at block {}: {} datanets, {n} contributions, {} base models, {} adapters, {} stakers, {} inference users",
            self.chain_id,
            self.block,
            self.datanets.len(),
            self.base_models.len(),
            self.adapters.len(),
            self.stakers.len(),
            self.users.len()
        )
    }

    /// An address's node balance.
    pub fn balance(&self, a: &Address) -> U256 {
        self.balances.get(a).map(|b| b.0).unwrap_or_default()
    }

    /// Checks what the import relies on; the error names the part.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: String| ScenarioError::Invalid {
            field: "start".into(),
            message: m,
        };
        self.params
            .validate()
            .map_err(|e| bad(format!("params: {e}")))?;
        let n: usize = self.datanets.iter().map(|d| d.contributions.len()).sum();
        if n > MAX_CONTRIBUTIONS {
            return Err(bad(format!(
                "{n} contributions; the simulator imports at most {MAX_CONTRIBUTIONS}"
            )));
        }
        if self.datanets.len() > 1000 {
            return Err(bad("more than 1000 datanets".into()));
        }
        for d in &self.datanets {
            let approved = d.contributions.iter().filter(|c| c.status == 1).count() as u64;
            let mut versions: Vec<u64> = Vec::new();
            for c in &d.contributions {
                if c.status > 2 {
                    return Err(bad(format!(
                        "contribution {} has status {} (0, 1 or 2 expected)",
                        c.id, c.status
                    )));
                }
                if c.score > 10_000 || c.row_count == 0 {
                    return Err(bad(format!(
                        "contribution {} has score {} bps and {} rows (0..10000 bps, >= 1 row expected)",
                        c.id, c.score, c.row_count
                    )));
                }
                if c.status == 1 {
                    versions.push(c.version);
                }
            }
            versions.sort_unstable();
            if versions.iter().enumerate().any(|(i, v)| *v != i as u64 + 1) {
                return Err(bad(format!(
                    "datanet {}: the versions of its {approved} approved contributions are not 1..={approved}",
                    d.id
                )));
            }
        }
        for a in &self.adapters {
            if a.datanet_ids.len() != a.datanet_versions.len() {
                return Err(bad(format!(
                    "adapter {}: {} datanets but {} versions",
                    a.id,
                    a.datanet_ids.len(),
                    a.datanet_versions.len()
                )));
            }
            for (id, v) in a.datanet_ids.iter().zip(&a.datanet_versions) {
                let Some(d) = self.datanets.iter().find(|d| d.id == *id) else {
                    return Err(bad(format!(
                        "adapter {} names datanet {id}, not in the start",
                        a.id
                    )));
                };
                let approved = d.contributions.iter().filter(|c| c.status == 1).count() as u64;
                if *v > approved {
                    return Err(bad(format!(
                        "adapter {} was trained on version {v} of datanet {id}, which has {approved} versions",
                        a.id
                    )));
                }
            }
        }
        Ok(())
    }
}

impl ChainParams {
    /// The scenario's view of a parameter set: the fee split, prices and quorum exactly,
    /// governance timings rounded up to whole days (at least one).
    pub fn of(p: &Params) -> ChainParams {
        let days = |s: u64| s.div_ceil(86_400).max(1);
        let open = |w: U256| w.saturating_to::<u128>() as f64 / 1e18;
        ChainParams {
            contributors_bps: p.fee_split.contributors_bps,
            model_owner_bps: p.fee_split.model_owner_bps,
            platform_bps: p.fee_split.platform_bps,
            stakers_bps: p.fee_split.stakers_bps,
            price_per_prompt_token_open: open(p.price_per_prompt_token),
            price_per_completion_token_open: open(p.price_per_completion_token),
            voting_delay_days: days(p.governance.voting_delay_secs),
            voting_period_days: days(p.governance.voting_period_secs),
            timelock_days: days(p.governance.timelock_delay_secs),
            quorum_bps: p.governance.quorum_bps,
        }
    }
}

impl Scenario {
    /// This scenario started from `start`: its `[chain]` section from the node's parameters
    /// (the governance cap on the contributors' share lowered to fit the node's split if
    /// needed), validated.
    pub fn starting_from(mut self, start: ChainStart) -> Result<Scenario, ScenarioError> {
        start.validate()?;
        self.chain = ChainParams::of(&start.params);
        let room = 10_000 - self.chain.platform_bps - self.chain.stakers_bps;
        self.governance.max_contributors_bps = self.governance.max_contributors_bps.min(room);
        self.start = Some(start);
        self.validate()?;
        Ok(self)
    }
}

/// Whether two prices differ by more than rounding (a report read back from JSON may move a
/// float by one unit in the last place).
pub(crate) fn price_differs(a: f64, b: f64) -> bool {
    (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1e-30)
}
