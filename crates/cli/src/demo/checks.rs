//! The loud checks: every generated answer states the fact it was asked for and is attributed
//! mostly to the contributor whose fact it is ([`answer_failure`]); and on who earned what in
//! the two paid rounds ([`failures`]): every accepted contributor whose
//! fact was asked about earned in both rounds, no refused, duplicate or rejected contributor
//! earned anything, and round two paid the contributors a larger share (and more OPEN) than
//! round one. What each contributor earned is the change of their balance over the round
//! (contributors send no transactions while the rounds run).

use super::report::{Attributed, Report, RoundReport};
use super::train::{self, Question};
use super::Ctx;
use alloy_primitives::U256;
use anyhow::{bail, Result};
use openledger_types::units::format_open;

/// Why a generated answer to `q`, attributed to `contributions`, fails (None when it passes).
pub fn answer_failure(q: &Question, text: &str, contributions: &[Attributed]) -> Option<String> {
    if !train::states_fact(q, text) {
        return Some(format!(
            "the generated answer does not state {}'s fact (no {:?} with {:?} in it): {text:?}",
            q.contributor, q.phrase, q.detail
        ));
    }
    let Some(top) = contributions
        .iter()
        .max_by(|a, b| a.weight.total_cmp(&b.weight))
    else {
        return Some(format!(
            "the generated answer stating {}'s fact is attributed to nobody",
            q.contributor
        ));
    };
    if top.contributor != q.contributor || top.weight <= 0.0 {
        return Some(format!(
            "the generated answer stating {}'s fact is attributed mostly to {} (weight {:.3}), not to {}",
            q.contributor, top.contributor, top.weight, q.contributor
        ));
    }
    None
}

fn earned(r: &RoundReport, name: &str) -> U256 {
    r.balances
        .iter()
        .find(|b| b.name == name)
        .map(|b| b.after.saturating_sub(b.before))
        .unwrap_or_default()
}

fn contributors_bps(r: &RoundReport) -> u64 {
    r.fee_split["contributors_bps"].as_u64().unwrap_or(0)
}

fn contributors_total(report: &Report, r: &RoundReport) -> U256 {
    report
        .contributors
        .iter()
        .map(|c| earned(r, &c.name))
        .fold(U256::ZERO, |a, b| a + b)
}

/// Every broken rule, in words (empty when all hold).
pub fn failures(report: &Report) -> Vec<String> {
    let [r1, r2] = match report.rounds.as_slice() {
        [a, b] => [a, b],
        _ => {
            return vec![format!(
                "expected two paid rounds, got {}",
                report.rounds.len()
            )]
        }
    };
    let mut out = Vec::new();
    for c in &report.contributors {
        let (e1, e2) = (earned(r1, &c.name), earned(r2, &c.name));
        let asked = r1.answers.iter().any(|a| a.expected_contributor == c.name);
        let accepted = c.outcome == "accepted";
        if accepted && asked && (e1.is_zero() || e2.is_zero()) {
            out.push(format!(
                "{} (accepted, their fact answered) earned {} OPEN in round one and {} in round two",
                c.name,
                format_open(e1),
                format_open(e2)
            ));
        }
        let earned_any = !e1.is_zero() || !e2.is_zero();
        if !accepted && earned_any {
            out.push(format!(
                "{} ({}) earned {} OPEN in round one and {} in round two",
                c.name,
                c.outcome,
                format_open(e1),
                format_open(e2)
            ));
        }
    }
    let (b1, b2) = (contributors_bps(r1), contributors_bps(r2));
    let (t1, t2) = (
        contributors_total(report, r1),
        contributors_total(report, r2),
    );
    if b2 <= b1 || t2 <= t1 {
        out.push(format!(
            "round two's contributor share did not rise: {b1} → {b2} bps, {} → {} OPEN",
            format_open(t1),
            format_open(t2)
        ));
    }
    out
}

/// Prints who earned what and fails with every broken rule.
pub fn check_rewards(ctx: &mut Ctx) -> Result<()> {
    let report = &ctx.report;
    if let [r1, r2] = report.rounds.as_slice() {
        println!(
            "  {:<10} {:<44} {:>20} {:>20}",
            "contributor", "outcome", "round one", "round two"
        );
        for c in &report.contributors {
            println!(
                "  {:<10} {:<44} {:>20} {:>20}",
                c.name,
                truncate(&c.outcome, 44),
                format_open(earned(r1, &c.name)),
                format_open(earned(r2, &c.name))
            );
        }
        println!(
            "  contributors' share {} → {} bps; contributors earned {} → {} OPEN",
            contributors_bps(r1),
            contributors_bps(r2),
            format_open(contributors_total(report, r1)),
            format_open(contributors_total(report, r2))
        );
    }
    let f = failures(report);
    if !f.is_empty() {
        bail!("{}", f.join("; "));
    }
    println!("  every check passed");
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::accounts::{Account, Accounts, Role};
    use crate::demo::report::{AnswerReport, ContributorReport};
    use alloy_primitives::Address;
    use serde_json::json;

    fn accounts() -> Accounts {
        Accounts(
            [
                ("alice", Role::Contributor),
                ("bob", Role::Contributor),
                ("frank", Role::DuplicateContributor),
            ]
            .iter()
            .enumerate()
            .map(|(i, (n, r))| Account {
                name: n.to_string(),
                address: Address::with_last_byte(i as u8 + 1),
                role: *r,
            })
            .collect(),
        )
    }

    fn answer(who: &str) -> AnswerReport {
        AnswerReport {
            round: 1,
            prompt: String::new(),
            expected_contributor: who.into(),
            phrase: String::new(),
            answer: String::new(),
            contributions: Vec::new(),
            coverage: 0.0,
            receipt_id: 1,
            fee_wei: "0".into(),
            attribution: json!(null),
        }
    }

    /// A report of two rounds in which alice, bob and frank earned these wei.
    fn report(bps: [u64; 2], earned: [[u64; 3]; 2]) -> Report {
        let acc = accounts();
        let before = vec![U256::from(1000u64); 3];
        let mut r = Report::default();
        for (name, outcome) in [
            ("alice", "accepted"),
            ("bob", "accepted"),
            ("frank", "refused by the ingest: duplicates"),
        ] {
            r.contributors.push(ContributorReport::new(
                name,
                acc.addr(name).unwrap(),
                "f",
                None,
                outcome,
            ));
        }
        for (i, e) in earned.iter().enumerate() {
            let after: Vec<U256> = before
                .iter()
                .zip(e)
                .map(|(b, e)| *b + U256::from(*e))
                .collect();
            r.rounds.push(RoundReport::new(
                i as u64 + 1,
                json!({ "contributors_bps": bps[i] }),
                &acc,
                &before,
                &after,
                vec![answer("alice"), answer("bob")],
            ));
        }
        r
    }

    fn attributed(who: &str, weight: f64) -> Attributed {
        Attributed {
            contribution_id: 1,
            contributor: who.into(),
            address: Address::ZERO,
            weight,
            spans: Vec::new(),
        }
    }

    #[test]
    fn an_answer_passes_only_when_it_states_the_fact_and_its_contributor_weighs_most() {
        let q = &train::questions()[0];
        let good = format!("Sure: {}", q.sentence);
        let owner = q.contributor;
        assert_eq!(
            answer_failure(q, &good, &[attributed(owner, 0.9), attributed("bob", 0.05)]),
            None
        );
        let wrong = answer_failure(q, &good, &[attributed(owner, 0.2), attributed("bob", 0.7)]);
        assert!(wrong.unwrap().contains("mostly to bob"));
        assert!(answer_failure(q, &good, &[]).unwrap().contains("nobody"));
        let off = answer_failure(q, "Bees like flowers.", &[attributed(owner, 0.9)]);
        assert!(off.unwrap().contains("does not state"));
        // Echoing the question's phrase without the fact's detail does not state the fact.
        let echo = format!("The {} is a way of checking a hive.", q.phrase);
        let echo = answer_failure(q, &echo, &[attributed(owner, 0.9)]);
        assert!(echo.unwrap().contains("does not state"));
    }

    #[test]
    fn a_fair_run_passes() {
        assert!(failures(&report([5000, 6500], [[10, 20, 0], [13, 26, 0]])).is_empty());
    }

    #[test]
    fn a_duplicate_contributor_earning_fails() {
        let f = failures(&report([5000, 6500], [[10, 20, 1], [13, 26, 0]]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("frank"), "{f:?}");
    }

    #[test]
    fn an_accepted_contributor_whose_fact_answered_earning_nothing_fails() {
        let f = failures(&report([5000, 6500], [[10, 0, 0], [13, 26, 0]]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("bob"), "{f:?}");
    }

    #[test]
    fn a_share_that_did_not_rise_fails() {
        let f = failures(&report([5000, 5000], [[10, 20, 0], [10, 20, 0]]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("did not rise"), "{f:?}");
    }
}
