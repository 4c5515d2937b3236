//! Governed parameters of the validator and agent loops: RLHF rounds (`rlhf_*`), AI agent
//! staking (`agent_*`) and model proposals with bounties (`model_proposal_*`). Each struct is
//! flattened into [`super::Params`], so its fields are top-level keys of the parameter JSON,
//! and every field has a serde default, so parameter sets written before them still load.

use super::BPS;
use crate::units::{one_open, serde_open};
use alloy_primitives::U256;
use serde::{Deserialize, Serialize};

/// Longest duration any of these parameters may name, in seconds (about 34,800 years): keeps
/// every sum of a timestamp and a duration far from overflowing.
const MAX_SECS: u64 = 1 << 40;
/// Most validators one RLHF round takes (finalizing loops over them).
pub const MAX_ROUND_VALIDATORS: u32 = 256;

/// Gas of the RLHF, agent and model-proposal calls, by function name.
const CALL_GAS: [(&str, u64); 16] = [
    ("joinValidators", 30_000),
    ("leaveValidators", 20_000),
    ("openRound", 60_000),
    ("commitRating", 40_000),
    ("revealRating", 40_000),
    // Pays and slashes every validator of the round (at most rlhf_max_validators).
    ("finalizeRound", 200_000),
    ("fundRewards", 20_000),
    ("registerAgent", 40_000),
    ("stakeAgent", 30_000),
    ("unstakeAgent", 30_000),
    ("withdrawAgentStake", 30_000),
    ("slashAgent", 40_000),
    ("proposeModel", 80_000),
    ("approveModelProposal", 40_000),
    ("claimModelBounty", 60_000),
    ("expireModelProposal", 40_000),
];

/// The default gas schedule plus the entries of these calls.
pub(super) fn with_call_gas(
    mut schedule: std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    for (name, gas) in CALL_GAS {
        schedule.entry(name.to_string()).or_insert(gas);
    }
    schedule
}

/// RLHF validator rounds (see `contracts/IRlhf.sol`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RlhfParams {
    /// Stake (in the staking module) a validator needs to join and to commit a rating.
    #[serde(with = "serde_open")]
    pub rlhf_min_stake: U256,
    /// Seconds from opening a round during which validators commit.
    pub rlhf_commit_secs: u64,
    /// Seconds after the commit window during which validators reveal.
    pub rlhf_reveal_secs: u64,
    /// Fewest reveals for a round to count; fewer make it void (no rewards, no consensus).
    pub rlhf_min_reveals: u32,
    /// Most validators that may commit in one round.
    pub rlhf_max_validators: u32,
    /// Largest distance (basis points of score) from the consensus that still agrees.
    pub rlhf_tolerance_bps: u16,
    /// Share of the reward pool one counted round pays to its agreeing validators.
    pub rlhf_round_reward_bps: u16,
    /// Share of its stake at commit a deviating validator is slashed.
    pub rlhf_slash_bps: u16,
    /// Share of its stake at commit a validator that committed and never revealed is slashed.
    pub rlhf_no_reveal_slash_bps: u16,
    /// Share of the stakers' part of each settled inference fee that goes to the RLHF reward
    /// pool while at least one validator has joined.
    pub rlhf_fee_bps: u16,
}

impl Default for RlhfParams {
    fn default() -> Self {
        RlhfParams {
            rlhf_min_stake: U256::from(1_000u64) * one_open(),
            rlhf_commit_secs: 3_600,
            rlhf_reveal_secs: 3_600,
            rlhf_min_reveals: 3,
            rlhf_max_validators: 32,
            rlhf_tolerance_bps: 1_500,
            rlhf_round_reward_bps: 100,
            rlhf_slash_bps: 100,
            rlhf_no_reveal_slash_bps: 100,
            rlhf_fee_bps: 1_000,
        }
    }
}

impl RlhfParams {
    /// Seconds-scale windows for development chains: 10 s to commit, 10 s to reveal.
    pub fn dev() -> Self {
        RlhfParams {
            rlhf_commit_secs: 10,
            rlhf_reveal_secs: 10,
            ..Default::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("rlhf_tolerance_bps", self.rlhf_tolerance_bps),
            ("rlhf_round_reward_bps", self.rlhf_round_reward_bps),
            ("rlhf_slash_bps", self.rlhf_slash_bps),
            ("rlhf_no_reveal_slash_bps", self.rlhf_no_reveal_slash_bps),
            ("rlhf_fee_bps", self.rlhf_fee_bps),
        ] {
            bps(name, v)?;
        }
        secs("rlhf_commit_secs", self.rlhf_commit_secs)?;
        secs("rlhf_reveal_secs", self.rlhf_reveal_secs)?;
        if self.rlhf_min_reveals == 0
            || self.rlhf_min_reveals > self.rlhf_max_validators
            || self.rlhf_max_validators > MAX_ROUND_VALIDATORS
        {
            return Err(format!(
                "need 1 <= rlhf_min_reveals <= rlhf_max_validators <= {MAX_ROUND_VALIDATORS}, got {} and {}",
                self.rlhf_min_reveals, self.rlhf_max_validators
            ));
        }
        Ok(())
    }
}

/// AI agent staking (see `contracts/IAgent.sol`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentParams {
    /// Tokens (prompt + completion) any caller may use per UTC day without agent stake.
    pub agent_free_tokens_per_day: u64,
    /// Agent stake a caller needs to use more than the free volume.
    #[serde(with = "serde_open")]
    pub agent_min_stake: U256,
    /// Seconds between `unstakeAgent` and `withdrawAgentStake`.
    pub agent_unstake_cooldown_secs: u64,
}

impl Default for AgentParams {
    fn default() -> Self {
        AgentParams {
            agent_free_tokens_per_day: 1_000_000,
            agent_min_stake: U256::from(1_000u64) * one_open(),
            agent_unstake_cooldown_secs: 7 * 86_400,
        }
    }
}

impl AgentParams {
    pub(super) fn validate(&self) -> Result<(), String> {
        secs(
            "agent_unstake_cooldown_secs",
            self.agent_unstake_cooldown_secs,
        )
    }
}

/// Model proposals with bounties (see `proposeModel` in `contracts/IModel.sol`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelProposalParams {
    /// Least OPEN a proposer escrows with a proposal.
    #[serde(with = "serde_open")]
    pub model_proposal_min_escrow: U256,
    /// Seconds governance has to approve a proposal before it lapses (escrow refunded).
    pub model_proposal_approval_secs: u64,
    /// Seconds from approval during which a qualifying adapter earns the bounty.
    pub model_proposal_duration_secs: u64,
    /// Fewest counted RLHF rounds on an adapter's receipts before its mean score qualifies.
    pub model_proposal_min_rated_rounds: u64,
    /// Share of the escrow slashed when an approved proposal expires unfulfilled.
    pub model_proposal_slash_bps: u16,
}

impl Default for ModelProposalParams {
    fn default() -> Self {
        ModelProposalParams {
            model_proposal_min_escrow: U256::from(100u64) * one_open(),
            model_proposal_approval_secs: 14 * 86_400,
            model_proposal_duration_secs: 90 * 86_400,
            model_proposal_min_rated_rounds: 5,
            model_proposal_slash_bps: 1_000,
        }
    }
}

impl ModelProposalParams {
    pub(super) fn validate(&self) -> Result<(), String> {
        bps("model_proposal_slash_bps", self.model_proposal_slash_bps)?;
        secs(
            "model_proposal_approval_secs",
            self.model_proposal_approval_secs,
        )?;
        secs(
            "model_proposal_duration_secs",
            self.model_proposal_duration_secs,
        )?;
        if self.model_proposal_min_rated_rounds == 0 {
            return Err("model_proposal_min_rated_rounds must be at least 1".into());
        }
        Ok(())
    }
}

fn bps(name: &str, v: u16) -> Result<(), String> {
    if v > BPS {
        return Err(format!(
            "{name} must be at most {BPS} basis points, got {v}"
        ));
    }
    Ok(())
}

fn secs(name: &str, v: u64) -> Result<(), String> {
    if v == 0 || v > MAX_SECS {
        return Err(format!(
            "{name} must be between 1 and {MAX_SECS} seconds, got {v}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Params;

    #[test]
    fn old_parameter_sets_load_with_defaults_and_keys_are_top_level() {
        let mut v = serde_json::to_value(Params::default()).unwrap();
        assert!(v.get("rlhf_min_reveals").is_some(), "flattened: {v}");
        assert!(v.get("agent_free_tokens_per_day").is_some());
        assert!(v.get("model_proposal_min_escrow").is_some());
        let o = v.as_object_mut().unwrap();
        o.retain(|k, _| {
            !(k.starts_with("rlhf_") || k.starts_with("agent_") || k.starts_with("model_proposal_"))
        });
        let p: Params = serde_json::from_value(v).unwrap();
        assert_eq!(p, Params::default());
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        let mut p = Params::default();
        p.rlhf.rlhf_slash_bps = 10_001;
        assert!(p.validate().unwrap_err().contains("rlhf_slash_bps"));
        let mut p = Params::default();
        p.rlhf.rlhf_min_reveals = 0;
        assert!(p.validate().unwrap_err().contains("rlhf_min_reveals"));
        let mut p = Params::default();
        p.agent.agent_unstake_cooldown_secs = 0;
        assert!(p
            .validate()
            .unwrap_err()
            .contains("agent_unstake_cooldown_secs"));
        let mut p = Params::default();
        p.model_proposal.model_proposal_min_rated_rounds = 0;
        assert!(p.validate().unwrap_err().contains("min_rated_rounds"));
    }
}
