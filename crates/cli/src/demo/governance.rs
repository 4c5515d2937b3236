//! The governance step: staker1 proposes raising the contributors' share of every inference fee
//! (taken from the model owner's share), both stakers vote for it with their stake, it is queued
//! and executed after the dev chain's timelock. While the vote runs, the three RLHF validators
//! rate round one's first answer in a commit-reveal round, which is then finalized.

use super::{report, serve, Ctx};
use alloy_primitives::U256;
use anyhow::{bail, Context, Result};
use openledger_types::{
    abi::{IGovernor, IRlhf},
    modules,
};
use std::time::{Duration, Instant};

/// The contributors' share the proposal sets (basis points), unless it is already higher.
const TARGET_CONTRIBUTORS_BPS: u64 = 6500;

/// Governor states (OpenZeppelin's ProposalState).
const ACTIVE: u8 = 1;
const SUCCEEDED: u8 = 4;
const EXECUTED: u8 = 7;

fn state(ctx: &Ctx, id: U256) -> Result<u8> {
    Ok(ctx.view(modules::GOVERNOR, IGovernor::stateCall { proposalId: id })? as u8)
}

/// Retries `f` every 250 ms until it succeeds or `secs` pass (then its last error).
fn retry<T>(secs: u64, what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what} within {secs} s")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn wait_state(ctx: &Ctx, id: U256, want: u8, name: &str) -> Result<()> {
    retry(60, &format!("proposal reaching {name}"), || {
        let s = state(ctx, id)?;
        if s == want {
            Ok(())
        } else {
            bail!("proposal {id} is in state {s}, not {name}")
        }
    })
}

/// Runs the vote (and the RLHF round alongside it).
pub fn run(ctx: &mut Ctx) -> Result<()> {
    let before = serve::params(ctx)?["fee_split"].clone();
    let contributors = before["contributors_bps"].as_u64().unwrap_or(0);
    let owner = before["model_owner_bps"].as_u64().unwrap_or(0);
    let target = TARGET_CONTRIBUTORS_BPS.max(contributors + 1000);
    let raise = target - contributors;
    if raise > owner {
        bail!("the model owner's share ({owner} bps) cannot give {raise} bps to the contributors");
    }
    let sets = [
        format!("fee_split.contributors_bps={target}"),
        format!("fee_split.model_owner_bps={}", owner - raise),
    ];
    let description = format!(
        "Raise the contributors' share of inference fees from {}% to {}% to attract more data",
        contributors as f64 / 100.0,
        target as f64 / 100.0
    );
    println!("  staker1 proposes: {description}");
    ctx.ol(
        Some("staker1"),
        &[
            "gov",
            "propose",
            "--set",
            &sets[0],
            "--set",
            &sets[1],
            "--description",
            &description,
        ],
    )?;
    let count = ctx.view(modules::GOVERNOR, IGovernor::proposalCountCall {})?;
    let id = ctx
        .view(
            modules::GOVERNOR,
            IGovernor::proposalDetailsAtCall {
                index: count - U256::from(1),
            },
        )?
        .proposalId;
    let id_s = id.to_string();

    let rlhf_round = open_rlhf(ctx)?;

    wait_state(ctx, id, ACTIVE, "Active")?;
    for staker in ["staker1", "staker2"] {
        println!("\n  {staker} votes for");
        ctx.ol(
            Some(staker),
            &[
                "gov",
                "vote",
                &id_s,
                "for",
                "--reason",
                "more for the data that answers",
            ],
        )?;
    }
    let rlhf = finish_rlhf(ctx, rlhf_round)?;
    println!("\n  waiting for the vote to close (the dev chain's voting period is 20 s)");
    wait_state(ctx, id, SUCCEEDED, "Succeeded")?;
    ctx.ol(Some("staker1"), &["gov", "queue", &id_s])?;
    retry(30, "executing the proposal after the timelock", || {
        ctx.ol(Some("staker1"), &["gov", "execute", &id_s])
    })?;
    if state(ctx, id)? != EXECUTED {
        bail!("proposal {id} was not executed");
    }
    let after = serve::params(ctx)?["fee_split"].clone();
    println!("  fee split now: {after}");
    ctx.report.governance = Some(report::GovernanceReport {
        proposal_id: id_s,
        description,
        split_before: before,
        split_after: after,
        rlhf,
    });
    Ok(())
}

/// validator1 opens a round on round one's first receipt; the validators commit their scores.
fn open_rlhf(ctx: &Ctx) -> Result<u64> {
    let a = ctx
        .report
        .rounds
        .first()
        .and_then(|r| r.answers.first())
        .context("internal: no answer from round one to rate")?;
    println!(
        "\n  validator1 opens an RLHF round on receipt {} (the answer about the {})",
        a.receipt_id, a.phrase
    );
    let receipt = a.receipt_id.to_string();
    let (prompt, answer) = (a.prompt.clone(), a.answer.clone());
    ctx.ol(
        Some("validator1"),
        &[
            "rlhf",
            "open",
            &receipt,
            "--prompt",
            &prompt,
            "--output-a",
            &answer,
        ],
    )?;
    let round = ctx.view(modules::RLHF, IRlhf::roundCountCall {})?;
    for (v, score) in SCORES {
        ctx.ol(
            Some(v),
            &[
                "rlhf",
                "commit",
                &round.to_string(),
                "--score",
                &score.to_string(),
            ],
        )?;
    }
    Ok(round)
}

/// Each validator's score (basis points) of the rated answer.
const SCORES: [(&str, u16); 3] = [
    ("validator1", 9000),
    ("validator2", 8800),
    ("validator3", 9200),
];

/// Reveals after the commit window and finalizes after the reveal window.
fn finish_rlhf(ctx: &Ctx, round: u64) -> Result<report::RlhfReport> {
    let r = round.to_string();
    println!("\n  validators reveal their ratings after the commit window (10 s on a dev chain)");
    for (v, _) in SCORES {
        retry(40, "revealing a rating", || {
            ctx.ol(Some(v), &["rlhf", "reveal", &r])
        })?;
    }
    println!("\n  anyone finalizes the round after the reveal window");
    retry(40, "finalizing the RLHF round", || {
        ctx.ol(Some("validator1"), &["rlhf", "finalize", &r])
    })?;
    let got = ctx.view(modules::RLHF, IRlhf::getRoundCall { roundId: round })?;
    println!(
        "  RLHF round {round}: {} reveals, consensus score {} bps, status {}",
        got.reveals,
        got.consensusScoreBps,
        match got.status {
            1 => "finalized",
            2 => "void",
            _ => "open",
        }
    );
    Ok(report::RlhfReport {
        round,
        receipt: got.receiptA,
        scores: SCORES.iter().map(|(v, s)| (v.to_string(), *s)).collect(),
        consensus_bps: got.consensusScoreBps,
        finalized: got.status == 1,
    })
}
