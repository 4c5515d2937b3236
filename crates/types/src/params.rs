//! Governed parameters: every fee, split, rate, limit and gas cost of the chain. They live in
//! state (written at genesis, changed only by governance), never as constants in code.

use crate::units::{one_open, serde_open};
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

mod reward_loop;
pub use reward_loop::{AgentParams, ModelProposalParams, RlhfParams};

/// Basis points in a whole (100%).
pub const BPS: u16 = 10_000;
/// Parts per million in a whole attribution.
pub const PPM: u32 = 1_000_000;

/// How an inference fee is split at settlement. Must sum to [`BPS`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSplit {
    pub platform_bps: u16,
    pub model_owner_bps: u16,
    pub stakers_bps: u16,
    pub contributors_bps: u16,
}

/// The whole parameter set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Base fee per gas, in wei; transactions must offer at least this.
    pub min_gas_price_wei: u64,
    /// Most gas one block may use.
    pub block_gas_limit: u64,
    /// Intrinsic gas of every transaction.
    pub tx_base_gas: u64,
    /// Gas per zero byte of calldata.
    pub calldata_zero_byte_gas: u64,
    /// Gas per non-zero byte of calldata.
    pub calldata_nonzero_byte_gas: u64,
    /// Gas of each module call on top of the intrinsic gas, by function name.
    pub call_gas: BTreeMap<String, u64>,
    /// Largest accepted signed transaction, in bytes.
    pub max_tx_bytes: u64,
    /// Longest accepted string argument (names, descriptions, URIs, reasons), in bytes.
    pub max_string_bytes: u64,
    /// Split of settled inference fees.
    pub fee_split: FeeSplit,
    /// Inference price per prompt token.
    #[serde(with = "serde_open")]
    pub price_per_prompt_token: U256,
    /// Inference price per completion token.
    #[serde(with = "serde_open")]
    pub price_per_completion_token: U256,
    /// Most attributions a receipt may list in its committed top-k.
    pub max_attributions: u32,
    /// Most receipts one `settle` call may settle.
    pub max_settle_batch: u32,
    /// Seconds between `requestUnstake` and `withdraw`.
    pub unstake_cooldown_secs: u64,
    /// Smallest stake accepted in one `stake` call.
    #[serde(with = "serde_open")]
    pub min_stake: U256,
    /// Flat part of the datanet approval fee.
    #[serde(with = "serde_open")]
    pub approval_fee_base: U256,
    /// Per-KiB part of the datanet approval fee (size of the approved contribution).
    #[serde(with = "serde_open")]
    pub approval_fee_per_kib: U256,
    /// Lowest validation score (basis points) a contribution may carry.
    pub min_contribution_score: u16,
    /// Most contributions one address may submit to one datanet per UTC day.
    #[serde(default = "default_daily_contributions")]
    pub max_daily_contributions: u32,
    /// Most bytes (rows' JSONL size) one address may submit to one datanet per UTC day.
    #[serde(default = "default_daily_contribution_bytes")]
    pub max_daily_contribution_bytes: u64,
    /// OpenLoRA pins in RAM (never evicts from its adapter cache) the adapters of owners who
    /// stake at least this much, against cold starts of niche models.
    #[serde(with = "serde_open", default = "default_pin_min_stake")]
    pub pin_min_stake: U256,
    /// Governance: the governor at 0x…1007 (OpenZeppelin Governor semantics, timestamp clock).
    #[serde(flatten)]
    pub governance: GovernanceParams,
    /// Where slashed stake goes: `"treasury"` or `"burn"` (a burn lowers the total supply).
    #[serde(default)]
    pub slash_destination: SlashDestination,
    /// RLHF validator rounds: `rlhf_*` keys.
    #[serde(flatten)]
    pub rlhf: RlhfParams,
    /// AI agent staking: `agent_*` keys.
    #[serde(flatten)]
    pub agent: AgentParams,
    /// Model proposals with bounties: `model_proposal_*` keys.
    #[serde(flatten)]
    pub model_proposal: ModelProposalParams,
}

/// Where slashed stake goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlashDestination {
    /// To the treasury (0x…1000).
    #[default]
    Treasury,
    /// Burned: the total supply shrinks by the amount.
    Burn,
}

fn default_pin_min_stake() -> U256 {
    U256::from(10_000u64) * crate::units::one_open()
}

fn default_daily_contributions() -> u32 {
    50
}

fn default_daily_contribution_bytes() -> u64 {
    100 * 1024 * 1024
}

impl Default for Params {
    fn default() -> Self {
        let milli = one_open() / U256::from(1000u64);
        let call_gas = [
            ("transfer", 0u64),
            ("stake", 30_000),
            ("requestUnstake", 30_000),
            ("withdraw", 30_000),
            ("claimRewards", 30_000),
            ("createDatanet", 100_000),
            ("contribute", 60_000),
            ("approve", 80_000),
            ("reject", 30_000),
            ("requestAccess", 30_000),
            ("grantAccess", 30_000),
            ("revokeAccess", 30_000),
            ("registerBaseModel", 60_000),
            ("registerAdapter", 120_000),
            ("deposit", 20_000),
            ("approveOperator", 20_000),
            ("recordInference", 80_000),
            // A batch: calldata gas grows with its records.
            ("recordInferences", 40_000),
            ("recordInferences.perRecord", 50_000),
            ("registerMergedAdapter", 150_000),
            ("settle", 40_000),
            // Governor (0x…1007), and the setters only it may call.
            ("propose", 100_000),
            ("castVote", 40_000),
            ("castVoteWithReason", 40_000),
            ("castVoteWithReasonAndParams", 40_000),
            ("castVoteBySig", 50_000),
            ("castVoteWithReasonAndParamsBySig", 50_000),
            ("queue", 40_000),
            // Covers the calls it makes (at most proposal_max_actions module calls).
            ("execute", 300_000),
            ("cancel", 30_000),
            ("setParams", 50_000),
            ("setParam", 40_000),
            ("treasuryGrant", 30_000),
            ("delegate", 30_000),
            ("slash", 40_000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let call_gas = reward_loop::with_call_gas(call_gas);
        Params {
            min_gas_price_wei: 1_000_000_000,
            block_gas_limit: 2_000_000_000,
            tx_base_gas: 21_000,
            calldata_zero_byte_gas: 4,
            calldata_nonzero_byte_gas: 16,
            call_gas,
            max_tx_bytes: 128 * 1024,
            max_string_bytes: 16 * 1024,
            fee_split: FeeSplit {
                platform_bps: 1000,
                model_owner_bps: 3000,
                stakers_bps: 1000,
                contributors_bps: 5000,
            },
            price_per_prompt_token: milli / U256::from(100u64),
            price_per_completion_token: milli / U256::from(50u64),
            max_attributions: 32,
            max_settle_batch: 256,
            unstake_cooldown_secs: 7 * 24 * 3600,
            min_stake: one_open(),
            approval_fee_base: milli * U256::from(100u64),
            approval_fee_per_kib: milli,
            pin_min_stake: default_pin_min_stake(),
            min_contribution_score: 0,
            max_daily_contributions: default_daily_contributions(),
            max_daily_contribution_bytes: default_daily_contribution_bytes(),
            governance: GovernanceParams::default(),
            slash_destination: SlashDestination::Treasury,
            rlhf: RlhfParams::default(),
            agent: AgentParams::default(),
            model_proposal: ModelProposalParams::default(),
        }
    }
}

impl Params {
    /// Checks internal consistency; the message says which parameter is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.fee_split;
        let sum = s.platform_bps as u32
            + s.model_owner_bps as u32
            + s.stakers_bps as u32
            + s.contributors_bps as u32;
        if sum != BPS as u32 {
            return Err(format!(
                "fee_split must sum to {BPS} basis points, got {sum}"
            ));
        }
        if self.block_gas_limit < self.tx_base_gas {
            return Err("block_gas_limit is below tx_base_gas".into());
        }
        if self.min_contribution_score > BPS {
            return Err(format!("min_contribution_score must be at most {BPS}"));
        }
        if self.max_tx_bytes == 0 || self.max_settle_batch == 0 {
            return Err("max_tx_bytes and max_settle_batch must be positive".into());
        }
        if self.max_daily_contributions == 0 || self.max_daily_contribution_bytes == 0 {
            return Err(
                "max_daily_contributions and max_daily_contribution_bytes must be positive".into(),
            );
        }
        self.governance.validate()?;
        self.rlhf.validate()?;
        self.agent.validate()?;
        self.model_proposal.validate()?;
        Ok(())
    }

    /// The gas of a call by function name (0 when the schedule has no entry).
    pub fn call_gas(&self, name: &str) -> u64 {
        self.call_gas.get(name).copied().unwrap_or(0)
    }
}

/// The governor's parameters (top-level keys of the parameter JSON). Durations are seconds:
/// the governor's clock is the block timestamp. A proposal keeps the quorum fraction in force
/// when it was created and the grace period in force when it was queued, so a later change
/// never alters a vote already under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GovernanceParams {
    /// Seconds from `propose` to the snapshot (voting opens just after it).
    pub voting_delay_secs: u64,
    /// Seconds voting stays open after the snapshot.
    pub voting_period_secs: u64,
    /// Votes (staked OPEN) a proposer needs, read one second before `propose`.
    #[serde(with = "serde_open")]
    pub proposal_threshold: U256,
    /// Quorum: for + abstain votes needed, in basis points of all votes at the snapshot.
    pub quorum_bps: u16,
    /// Seconds a queued proposal waits before it can be executed (the timelock).
    pub timelock_delay_secs: u64,
    /// Seconds after its eta within which a queued proposal must be executed; after that it
    /// is Expired (GovernorTimelockCompound's GRACE_PERIOD).
    pub timelock_grace_secs: u64,
    /// Most calls (targets) one proposal may make.
    pub proposal_max_actions: u32,
    /// Largest calldata of one proposal call, in bytes.
    pub proposal_max_calldata_bytes: u64,
}

impl Default for GovernanceParams {
    fn default() -> Self {
        GovernanceParams {
            voting_delay_secs: 86_400,
            voting_period_secs: 7 * 86_400,
            proposal_threshold: U256::from(10_000u64) * one_open(),
            quorum_bps: 500,
            timelock_delay_secs: 86_400,
            timelock_grace_secs: 14 * 86_400,
            proposal_max_actions: 10,
            proposal_max_calldata_bytes: 32 * 1024,
        }
    }
}

impl GovernanceParams {
    /// Seconds-scale values for development chains (`init --dev`): a 2 s voting delay, 20 s of
    /// voting, a 2 s timelock, a 1 OPEN proposal threshold.
    pub fn dev() -> Self {
        GovernanceParams {
            voting_delay_secs: 2,
            voting_period_secs: 20,
            proposal_threshold: one_open(),
            timelock_delay_secs: 2,
            timelock_grace_secs: 3600,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.quorum_bps > BPS {
            return Err(format!(
                "quorum_bps must be at most {BPS}, got {}",
                self.quorum_bps
            ));
        }
        if self.voting_period_secs == 0 || self.voting_period_secs > u32::MAX as u64 {
            return Err(format!(
                "voting_period_secs must be between 1 and {} (OpenZeppelin's uint32), got {}",
                u32::MAX,
                self.voting_period_secs
            ));
        }
        // Timepoints are uint48: keep every sum of durations far below 2^48 seconds.
        let max = 1u64 << 40;
        for (name, v) in [
            ("voting_delay_secs", self.voting_delay_secs),
            ("timelock_delay_secs", self.timelock_delay_secs),
            ("timelock_grace_secs", self.timelock_grace_secs),
        ] {
            if v > max {
                return Err(format!("{name} must be at most {max} seconds, got {v}"));
            }
        }
        if self.timelock_grace_secs == 0 {
            return Err(
                "timelock_grace_secs must be positive: with 0 every queued proposal would expire at once"
                    .into(),
            );
        }
        if self.proposal_max_actions == 0 || self.proposal_max_calldata_bytes < 4 {
            return Err(
                "proposal_max_actions must be positive and proposal_max_calldata_bytes at least 4 (a selector)"
                    .into(),
            );
        }
        Ok(())
    }
}
