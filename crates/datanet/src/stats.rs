//! Contributor statistics and the leaderboard of a datanet, computed from its contributions as
//! the chain records them.
//!
//! Per contributor: contributions submitted, approved, rejected and pending; rows and bytes
//! accepted; the acceptance rate (approved ÷ decided); the mean validation score; and
//! consistency, 10000 − the standard deviation of their validation scores in basis points (a
//! contributor whose files always score alike is consistent; one contribution is fully
//! consistent). The leaderboard ranks by rows accepted, then acceptance rate, then address.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a contribution stands (the chain's `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for the owner.
    Pending,
    /// In a version.
    Approved,
    /// Refused by the owner.
    Rejected,
}

impl Status {
    /// The status of the chain's code (0 pending, 1 approved, 2 rejected).
    pub fn from_code(code: u8) -> Option<Status> {
        match code {
            0 => Some(Status::Pending),
            1 => Some(Status::Approved),
            2 => Some(Status::Rejected),
            _ => None,
        }
    }
}

/// What the statistics need of one contribution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContributionSummary {
    /// Contributor.
    pub contributor: Address,
    /// Status.
    pub status: Status,
    /// Rows.
    pub rows: u64,
    /// Bytes.
    pub bytes: u64,
    /// Validation score, basis points.
    pub score_bps: u16,
}

/// One contributor's statistics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributorStats {
    /// The contributor.
    pub contributor: Address,
    /// Contributions submitted.
    pub submitted: u64,
    /// Approved.
    pub approved: u64,
    /// Rejected.
    pub rejected: u64,
    /// Pending.
    pub pending: u64,
    /// Rows in approved contributions.
    pub rows_accepted: u64,
    /// Bytes in approved contributions.
    pub bytes_accepted: u64,
    /// Approved ÷ decided, basis points (0 when nothing is decided yet).
    pub acceptance_bps: u16,
    /// Mean validation score, basis points.
    pub mean_score_bps: u16,
    /// 10000 − the standard deviation of the validation scores, basis points.
    pub consistency_bps: u16,
}

/// Statistics per contributor, ranked for the leaderboard.
pub fn leaderboard<'a>(
    contributions: impl IntoIterator<Item = &'a ContributionSummary>,
) -> Vec<ContributorStats> {
    let mut by: BTreeMap<Address, Vec<&ContributionSummary>> = BTreeMap::new();
    for c in contributions {
        by.entry(c.contributor).or_default().push(c);
    }
    let mut out: Vec<ContributorStats> = by.into_iter().map(|(a, cs)| stats(a, &cs)).collect();
    out.sort_by(|a, b| {
        b.rows_accepted
            .cmp(&a.rows_accepted)
            .then(b.acceptance_bps.cmp(&a.acceptance_bps))
            .then(a.contributor.cmp(&b.contributor))
    });
    out
}

fn stats(contributor: Address, cs: &[&ContributionSummary]) -> ContributorStats {
    let count = |s: Status| cs.iter().filter(|c| c.status == s).count() as u64;
    let (approved, rejected, pending) = (
        count(Status::Approved),
        count(Status::Rejected),
        count(Status::Pending),
    );
    let accepted = cs.iter().filter(|c| c.status == Status::Approved);
    let n = cs.len() as f64;
    let mean = cs.iter().map(|c| c.score_bps as f64).sum::<f64>() / n;
    let var = cs
        .iter()
        .map(|c| (c.score_bps as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    ContributorStats {
        contributor,
        submitted: cs.len() as u64,
        approved,
        rejected,
        pending,
        rows_accepted: accepted.clone().map(|c| c.rows).sum(),
        bytes_accepted: accepted.map(|c| c.bytes).sum(),
        acceptance_bps: (approved * 10_000)
            .checked_div(approved + rejected)
            .unwrap_or(0) as u16,
        mean_score_bps: mean.round() as u16,
        consistency_bps: (10_000.0 - var.sqrt()).clamp(0.0, 10_000.0).round() as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(who: u8, status: Status, rows: u64, score_bps: u16) -> ContributionSummary {
        ContributionSummary {
            contributor: Address::repeat_byte(who),
            status,
            rows,
            bytes: rows * 100,
            score_bps,
        }
    }

    #[test]
    fn the_leaderboard_ranks_by_accepted_rows_and_reports_rates() {
        let all = [
            c(1, Status::Approved, 50, 9000),
            c(1, Status::Rejected, 40, 7000),
            c(2, Status::Approved, 60, 9500),
            c(2, Status::Pending, 10, 9500),
            c(3, Status::Rejected, 100, 5000),
        ];
        let board = leaderboard(&all);
        let order: Vec<u8> = board.iter().map(|s| s.contributor.0[0]).collect();
        assert_eq!(order, vec![2, 1, 3]);
        let two = &board[0];
        assert_eq!(
            (two.submitted, two.approved, two.pending, two.rows_accepted),
            (2, 1, 1, 60)
        );
        assert_eq!(two.acceptance_bps, 10_000);
        assert_eq!(two.consistency_bps, 10_000);
        let one = &board[1];
        assert_eq!((one.acceptance_bps, one.mean_score_bps), (5_000, 8_000));
        assert_eq!(
            one.consistency_bps, 9_000,
            "scores 9000 and 7000 deviate by 1000"
        );
        assert_eq!(one.bytes_accepted, 5_000);
        assert_eq!((board[2].rows_accepted, board[2].acceptance_bps), (0, 0));
    }
}
