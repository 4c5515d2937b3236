//! What the demo records (`report.json`, read by the tests) and writes out with `report.html`
//! ([`super::html`]). Amounts are decimal strings in wei (exact) next to OPEN as numbers (for
//! reading and plotting).

use super::accounts::{Accounts, Role};
use alloy_primitives::{Address, U256};
use anyhow::{Context, Result};
use openledger_node::datanets::views::ContributionView;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// Everything the demo did and measured.
#[derive(Default, Serialize)]
pub struct Report {
    /// Whether every step passed.
    pub ok: bool,
    /// The failed step and its reason.
    pub failure: Option<String>,
    pub wall_seconds: f64,
    /// The text datanet built from the sample.
    pub datanet_id: u64,
    /// The text datanet's version the adapter was trained on.
    pub datanet_version: u64,
    /// The prompt/response datanet: the planted-fact questions, asked by their contributors.
    pub qa_datanet_id: u64,
    /// Its version the adapter was trained on.
    pub qa_datanet_version: u64,
    pub adapter_id: u64,
    #[serde(skip)]
    pub api_key: Option<String>,
    pub contributors: Vec<ContributorReport>,
    pub training: Vec<TrainRound>,
    /// The learning check of the adapter that was published (its last round).
    pub learning: Vec<super::learning::FactScore>,
    pub loss: Vec<LossPoint>,
    pub rounds: Vec<RoundReport>,
    pub governance: Option<GovernanceReport>,
    pub simulation: Option<SimReport>,
}

/// A contributor and what became of their upload.
#[derive(Serialize)]
pub struct ContributorReport {
    pub name: String,
    pub address: Address,
    pub file: String,
    pub contribution_id: Option<u64>,
    pub rows: u64,
    /// Their approved contribution to the prompt/response datanet, if any, and its rows.
    pub qa_contribution_id: Option<u64>,
    pub qa_rows: u64,
    pub score_bps: u16,
    /// The on-chain status (pending, approved, rejected) or "none".
    pub status: String,
    /// "accepted", or why not.
    pub outcome: String,
}

impl ContributorReport {
    pub fn new(
        name: &str,
        address: Address,
        file: &str,
        c: Option<&ContributionView>,
        outcome: &str,
    ) -> Self {
        ContributorReport {
            name: name.into(),
            address,
            file: file.into(),
            contribution_id: c.map(|c| c.id),
            rows: c.map(|c| c.row_count).unwrap_or(0),
            qa_contribution_id: None,
            qa_rows: 0,
            score_bps: c.map(|c| c.score_bps).unwrap_or(0),
            status: c
                .map(|c| format!("{:?}", c.status).to_lowercase())
                .unwrap_or_else(|| "none".into()),
            outcome: outcome.into(),
        }
    }
}

/// One training round.
#[derive(Serialize)]
pub struct TrainRound {
    pub round: u64,
    pub steps: u64,
    pub train_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub seconds: f64,
    /// The learning check: each asked question's answer and NLL under the base model and
    /// under this round's adapter.
    pub facts: Vec<super::learning::FactScore>,
    /// Whether the adapter learned every asked fact by the margin.
    pub passed: bool,
}

/// A point of the loss curve: a training step's loss, or a validation loss.
#[derive(Clone, Serialize)]
pub struct LossPoint {
    pub round: u64,
    pub step: u64,
    pub loss: Option<f64>,
    pub val_loss: Option<f64>,
}

/// A contribution an answer was attributed to.
#[derive(Clone, Serialize)]
pub struct Attributed {
    pub contribution_id: u64,
    /// The demo account's name.
    pub contributor: String,
    pub address: Address,
    pub weight: f64,
    /// The answer's text spans found in its rows.
    pub spans: Vec<String>,
}

/// One question, its generated answer, its attribution and its receipt.
#[derive(Clone, Serialize)]
pub struct AnswerReport {
    pub round: u64,
    pub prompt: String,
    /// Whose planted fact the question is about.
    pub expected_contributor: String,
    pub phrase: String,
    pub answer: String,
    pub contributions: Vec<Attributed>,
    pub coverage: f64,
    pub receipt_id: u64,
    pub fee_wei: String,
    /// The API's attribution object as returned.
    pub attribution: Value,
}

/// An account's balance around a round.
#[derive(Serialize)]
pub struct BalanceRow {
    pub name: String,
    pub role: Role,
    pub address: Address,
    #[serde(skip)]
    pub before: U256,
    #[serde(skip)]
    pub after: U256,
    pub before_open: f64,
    pub after_open: f64,
    /// after - before, wei (negative with a leading '-').
    pub change_wei: String,
}

/// One round of paid questions.
#[derive(Serialize)]
pub struct RoundReport {
    pub round: u64,
    pub fee_split: Value,
    pub answers: Vec<AnswerReport>,
    pub balances: Vec<BalanceRow>,
    /// What each contributor earned in the round (wei, decimal), by name.
    pub rewards_wei: BTreeMap<String, String>,
    /// The same in OPEN.
    pub rewards_open: BTreeMap<String, f64>,
}

/// OPEN as a float, for display and plots.
pub fn open_f64(wei: U256) -> f64 {
    let w: u128 = wei.try_into().unwrap_or(u128::MAX);
    w as f64 / 1e18
}

impl RoundReport {
    pub fn new(
        round: u64,
        fee_split: Value,
        accounts: &Accounts,
        before: &[U256],
        after: &[U256],
        answers: Vec<AnswerReport>,
    ) -> Self {
        let mut rewards_wei = BTreeMap::new();
        let mut rewards_open = BTreeMap::new();
        let balances: Vec<BalanceRow> = accounts
            .0
            .iter()
            .zip(before.iter().zip(after))
            .map(|(a, (&b, &c))| {
                let change = if c >= b {
                    (c - b).to_string()
                } else {
                    format!("-{}", b - c)
                };
                if matches!(
                    a.role,
                    Role::Contributor
                        | Role::RefusedContributor
                        | Role::DuplicateContributor
                        | Role::RejectedContributor
                ) {
                    let earned = c.saturating_sub(b);
                    rewards_wei.insert(a.name.clone(), earned.to_string());
                    rewards_open.insert(a.name.clone(), open_f64(earned));
                }
                BalanceRow {
                    name: a.name.clone(),
                    role: a.role,
                    address: a.address,
                    before: b,
                    after: c,
                    before_open: open_f64(b),
                    after_open: open_f64(c),
                    change_wei: change,
                }
            })
            .collect();
        RoundReport {
            round,
            fee_split,
            answers,
            balances,
            rewards_wei,
            rewards_open,
        }
    }
}

/// The governance vote and the RLHF round run alongside it.
#[derive(Serialize)]
pub struct GovernanceReport {
    pub proposal_id: String,
    pub description: String,
    pub split_before: Value,
    pub split_after: Value,
    pub rlhf: RlhfReport,
}

#[derive(Serialize)]
pub struct RlhfReport {
    pub round: u64,
    pub receipt: u64,
    pub scores: Vec<(String, u16)>,
    pub consensus_bps: u16,
    pub finalized: bool,
}

/// The flywheel simulation's outcome.
#[derive(Serialize)]
pub struct SimReport {
    pub scenario: String,
    pub days: u64,
    pub outcome: String,
    pub reasons: Vec<String>,
    pub inferences: u64,
    pub results_sha256: String,
    /// Its own report, relative to the demo's.
    pub report: String,
    /// Whether it started from the chain's whole state (or only its parameters).
    pub from_chain: bool,
}

/// Writes report.json and report.html into `out`.
pub fn write(out: &Path, r: &Report) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let json = out.join("report.json");
    std::fs::write(&json, serde_json::to_string_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let html = out.join("report.html");
    std::fs::write(&html, super::html::page(r))
        .with_context(|| format!("writing {}", html.display()))?;
    Ok(())
}
