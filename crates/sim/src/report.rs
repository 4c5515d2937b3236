//! Outputs of a run: the per-day time series (CSV), the take-off/stall classification and the
//! JSON summary.
//!
//! **The take-off rule.** Over the last quarter of the horizon, split in two halves: a run takes
//! off when (1) no subsidy was paid in that quarter, (2) approved contributions per day,
//! inferences per day and contributor income per day each *grow*: the second half's mean is
//! positive and at least (1 − `outcome.tolerance`) times the first half's (a tolerance, so a
//! flywheel running at capacity is not called a stall), and (3) the quarter averages at least
//! `outcome.min_contributions_per_day` approved contributions. Anything else is a stall, with
//! the reasons listed.

use crate::{
    chain::state_digest,
    invariants::{self, SupplyCheck},
    scenario::Scenario,
    sim::{open, GovEvent, Sim},
};
use alloy_primitives::U256;
use openledger_types::modules::STAKING;
use serde::Serialize;

/// One simulated day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    pub day: u64,
    pub contributors_active: u32,
    pub contributors_total: u32,
    pub submitted: u64,
    pub approved: u64,
    pub rejected: u64,
    pub duplicates_refused: u64,
    pub rows_accepted: u64,
    pub weighted_rows: f64,
    pub best_quality: f64,
    pub adapters_trained: u64,
    pub users_active: u32,
    pub inferences: u64,
    pub fees_open: f64,
    pub contributor_income_open: f64,
    pub subsidy_paid_open: f64,
    pub subsidy_left_open: f64,
    /// The treasury module's balance.
    pub treasury_open: f64,
    pub owner_income_open: f64,
    pub staker_rewards_open: f64,
    pub total_staked_open: f64,
    pub staking_apr: f64,
    pub contributors_bps: u16,
    pub txs_accepted: u64,
    pub txs_refused: u64,
    /// RLHF validators in the set, rounds opened, counted (finalised with a consensus) and
    /// void, rewards paid and stake slashed, and the reward pool.
    pub validators_active: u32,
    pub rlhf_rounds_opened: u64,
    pub rlhf_rounds_counted: u64,
    pub rlhf_rounds_void: u64,
    pub rlhf_rewards_open: f64,
    pub rlhf_slashed_open: f64,
    pub rlhf_pool_open: f64,
}

/// How one series behaved over the last quarter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub first_half_mean: f64,
    pub second_half_mean: f64,
    pub grows: bool,
}

/// The classification of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Outcome {
    pub take_off: bool,
    /// "take-off" or "stall".
    pub label: String,
    /// Why it is a stall (empty for a take-off).
    pub reasons: Vec<String>,
    pub contributions: Trend,
    pub inferences: Trend,
    pub contributor_income: Trend,
    pub subsidy_in_last_quarter_open: f64,
}

/// The JSON summary of a run. Deterministic: no timings, no hash-map order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub scenario: String,
    pub seed: u64,
    pub days: u64,
    pub outcome: Outcome,
    pub totals: Totals,
    pub last_day: Option<DayRow>,
    pub governance: Vec<GovEventOut>,
    pub supply_check: SupplyCheck,
    /// Keccak over the final state's key-value set, in key order.
    pub state_digest: String,
    pub transactions_accepted: u64,
    pub transactions_refused: u64,
    /// RLHF validators (absent without them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlhf: Option<crate::rlhf::RlhfSummary>,
}

/// A governance event (serialisable copy).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GovEventOut {
    pub day: u64,
    pub what: String,
}

impl From<&GovEvent> for GovEventOut {
    fn from(e: &GovEvent) -> Self {
        GovEventOut {
            day: e.day,
            what: e.what.clone(),
        }
    }
}

/// Totals over the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    pub contributions_approved: u64,
    pub duplicates_refused: u64,
    pub inferences: u64,
    pub fees_open: f64,
    pub contributor_income_open: f64,
    pub subsidy_paid_open: f64,
    pub adapters_trained: u64,
}

impl Sim {
    /// Closes the day: updates the agents' averages and appends the day's row.
    pub(crate) fn close_day(&mut self) {
        let t = self.today.clone();
        let r = self.sc.contributors.reaction;
        for d in &mut self.datanets {
            let y = open(d.paid_today) / (d.approved.len().max(1) as f64);
            d.yield_ema = (1.0 - r) * d.yield_ema + r * y;
            d.paid_today = U256::ZERO;
        }
        self.staking_income_ema = 0.8 * self.staking_income_ema + 0.2 * open(t.staker_rewards);
        let total_staked: U256 = self
            .view(STAKING, openledger_types::abi::IStaking::totalStakedCall {})
            .unwrap_or_default();
        let apr = self.staking_yield();
        let row = DayRow {
            day: self.day,
            contributors_active: self.datanets.iter().map(|d| d.active_contributors).sum(),
            contributors_total: self.contributors.len() as u32,
            submitted: t.submitted,
            approved: t.approved,
            rejected: t.rejected,
            duplicates_refused: t.duplicates_refused,
            rows_accepted: self.datanets.iter().map(|d| d.rows).sum(),
            weighted_rows: self.datanets.iter().map(|d| d.weighted_rows).sum(),
            best_quality: self.best_quality(),
            adapters_trained: t.trainings,
            users_active: self.users.iter().filter(|u| u.active).count() as u32,
            inferences: t.inferences,
            fees_open: open(t.fees),
            contributor_income_open: open(t.contributor_income),
            subsidy_paid_open: open(t.subsidy),
            subsidy_left_open: open(
                self.chain
                    .balance(&crate::sim::agent_addr(crate::sim::kind::FOUNDATION, 0)),
            ),
            treasury_open: open(self.chain.balance(&openledger_types::modules::TREASURY)),
            owner_income_open: open(t.owner_income),
            staker_rewards_open: open(t.staker_rewards),
            total_staked_open: open(total_staked),
            staking_apr: if apr.is_finite() { apr } else { 0.0 },
            contributors_bps: self.chain.params.fee_split.contributors_bps,
            txs_accepted: self.chain.accepted,
            txs_refused: self.chain.refused,
            validators_active: self.validators.iter().filter(|v| v.active).count() as u32,
            rlhf_rounds_opened: t.rlhf_opened,
            rlhf_rounds_counted: t.rlhf_counted,
            rlhf_rounds_void: t.rlhf_void,
            rlhf_rewards_open: open(t.rlhf_rewards),
            rlhf_slashed_open: open(t.rlhf_slashed),
            rlhf_pool_open: if self.validators.is_empty() {
                0.0
            } else {
                open(
                    self.view(
                        openledger_types::modules::RLHF,
                        openledger_types::abi::IRlhf::rewardPoolCall {},
                    )
                    .unwrap_or_default(),
                )
            },
        };
        self.rows.push(row);
    }

    /// The summary of the run so far (final state checks included).
    pub fn summary(&self) -> Summary {
        let check = invariants::check(
            &self.chain.kv,
            &self.chain.params,
            &self.chain.env,
            &self.accounts(),
        );
        let sum = |f: fn(&DayRow) -> f64| self.rows.iter().map(f).sum::<f64>();
        Summary {
            scenario: self.sc.name.clone(),
            seed: self.sc.seed,
            days: self.sc.days,
            outcome: classify(&self.sc, &self.rows),
            totals: Totals {
                contributions_approved: self.rows.iter().map(|r| r.approved).sum(),
                duplicates_refused: self.rows.iter().map(|r| r.duplicates_refused).sum(),
                inferences: self.rows.iter().map(|r| r.inferences).sum(),
                fees_open: sum(|r| r.fees_open),
                contributor_income_open: sum(|r| r.contributor_income_open),
                subsidy_paid_open: sum(|r| r.subsidy_paid_open),
                adapters_trained: self.rows.iter().map(|r| r.adapters_trained).sum(),
            },
            last_day: self.rows.last().cloned(),
            governance: self.gov_events.iter().map(GovEventOut::from).collect(),
            supply_check: check,
            state_digest: state_digest(&self.chain.kv).to_string(),
            transactions_accepted: self.chain.accepted,
            transactions_refused: self.chain.refused,
            rlhf: self.rlhf_summary(),
        }
    }
}

fn trend(rows: &[DayRow], f: fn(&DayRow) -> f64, tolerance: f64) -> Trend {
    let mid = rows.len() / 2;
    let mean = |s: &[DayRow]| s.iter().map(f).sum::<f64>() / s.len().max(1) as f64;
    let (a, b) = (mean(&rows[..mid]), mean(&rows[mid..]));
    Trend {
        first_half_mean: a,
        second_half_mean: b,
        grows: b > 0.0 && b >= (1.0 - tolerance) * a,
    }
}

/// Classifies a run by the rule in this module's documentation.
pub fn classify(sc: &Scenario, rows: &[DayRow]) -> Outcome {
    let start = rows.len() - rows.len() / 4;
    let q = &rows[start.min(rows.len())..];
    let tol = sc.outcome.tolerance;
    let contributions = trend(q, |r| r.approved as f64, tol);
    let inferences = trend(q, |r| r.inferences as f64, tol);
    let income = trend(q, |r| r.contributor_income_open, tol);
    let subsidy: f64 = q.iter().map(|r| r.subsidy_paid_open).sum();
    let mean_contrib = q.iter().map(|r| r.approved as f64).sum::<f64>() / q.len().max(1) as f64;
    let mut reasons = Vec::new();
    if subsidy > 0.0 {
        reasons.push(format!(
            "subsidies were still paid in the last quarter ({subsidy:.2} OPEN)"
        ));
    }
    for (name, t) in [
        ("approved contributions", &contributions),
        ("inferences", &inferences),
        ("contributor income", &income),
    ] {
        if !t.grows {
            reasons.push(format!(
                "{name} did not grow over the last quarter ({:.3} → {:.3} per day)",
                t.first_half_mean, t.second_half_mean
            ));
        }
    }
    if mean_contrib < sc.outcome.min_contributions_per_day {
        reasons.push(format!(
            "{mean_contrib:.2} approved contributions per day in the last quarter, below {}",
            sc.outcome.min_contributions_per_day
        ));
    }
    let take_off = reasons.is_empty();
    Outcome {
        take_off,
        label: if take_off { "take-off" } else { "stall" }.into(),
        reasons,
        contributions,
        inferences,
        contributor_income: income,
        subsidy_in_last_quarter_open: subsidy,
    }
}

/// The time series as CSV (a header, then one line per day).
pub fn csv(rows: &[DayRow]) -> String {
    let mut out = String::from(
        "day,contributors_active,contributors_total,submitted,approved,rejected,duplicates_refused,rows_accepted,weighted_rows,best_quality,adapters_trained,users_active,inferences,fees_open,contributor_income_open,subsidy_paid_open,subsidy_left_open,treasury_open,owner_income_open,staker_rewards_open,total_staked_open,staking_apr,contributors_bps,txs_accepted,txs_refused,validators_active,rlhf_rounds_opened,rlhf_rounds_counted,rlhf_rounds_void,rlhf_rewards_open,rlhf_slashed_open,rlhf_pool_open\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{:.6},{},{},{},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9},{:.9},{:.6},{},{},{},{},{},{},{},{:.9},{:.9},{:.9}\n",
            r.day,
            r.contributors_active,
            r.contributors_total,
            r.submitted,
            r.approved,
            r.rejected,
            r.duplicates_refused,
            r.rows_accepted,
            r.weighted_rows,
            r.best_quality,
            r.adapters_trained,
            r.users_active,
            r.inferences,
            r.fees_open,
            r.contributor_income_open,
            r.subsidy_paid_open,
            r.subsidy_left_open,
            r.treasury_open,
            r.owner_income_open,
            r.staker_rewards_open,
            r.total_staked_open,
            r.staking_apr,
            r.contributors_bps,
            r.txs_accepted,
            r.txs_refused,
            r.validators_active,
            r.rlhf_rounds_opened,
            r.rlhf_rounds_counted,
            r.rlhf_rounds_void,
            r.rlhf_rewards_open,
            r.rlhf_slashed_open,
            r.rlhf_pool_open
        ));
    }
    out
}
