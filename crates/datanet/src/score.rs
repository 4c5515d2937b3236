//! Per-file validation score in basis points (0..=10000) with human-readable reasons. The score is
//! 10000 × the product of four pass rates over the file's records: schema conformance, length,
//! encoding sanity and uniqueness (exact and near-duplicates). A file is rejected when the score
//! is below [`crate::Limits::min_score_bps`] or when no row survives.

use crate::limits::Limits;
use serde::{Deserialize, Serialize};

/// Basis points in 100%.
pub const BPS: u32 = 10_000;

/// What happened to a file's records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    /// Records parsed.
    pub records: usize,
    /// Records with an empty required field.
    pub empty_field: usize,
    /// Rows shorter than the minimum.
    pub too_short: usize,
    /// Rows longer than the maximum.
    pub too_long: usize,
    /// Rows with replacement or control characters or mostly non-text.
    pub bad_encoding: usize,
    /// Exact copies of rows already in the datanet or earlier in the contribution.
    pub exact_duplicates: usize,
    /// Near-duplicates of such rows.
    pub near_duplicates: usize,
    /// Rows accepted (before the file-level decision).
    pub kept: usize,
}

/// A file's score and the reasons behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileScore {
    /// Score in basis points.
    pub bps: u16,
    /// Why points were lost, and why the file was rejected when it was.
    pub reasons: Vec<String>,
    /// Whether the file's rows are accepted.
    pub accepted: bool,
}

/// Scores a file from its counts.
pub fn score(c: &FileCounts, limits: &Limits) -> FileScore {
    let n = c.records.max(1);
    let mut reasons = Vec::new();
    let mut rate = 1.0f64;
    let mut lose = |bad: usize, what: String| {
        if bad > 0 {
            rate *= 1.0 - bad as f64 / n as f64;
            reasons.push(format!("{bad} of {} records {what}", c.records));
        }
    };
    lose(
        c.empty_field,
        "have an empty required field (dropped)".into(),
    );
    lose(
        c.too_short + c.too_long,
        format!(
            "are outside {}..={} characters ({} too short, {} too long; dropped)",
            limits.min_row_chars, limits.max_row_chars, c.too_short, c.too_long
        ),
    );
    lose(
        c.bad_encoding,
        "have encoding problems: replacement or control characters, or mostly non-text (dropped)"
            .into(),
    );
    let near_what = if limits.drop_near_duplicates {
        "dropped"
    } else {
        "kept, reported"
    };
    lose(
        c.exact_duplicates + c.near_duplicates,
        format!(
            "duplicate existing rows ({} exact, rejected; {} near-duplicates, {near_what})",
            c.exact_duplicates, c.near_duplicates
        ),
    );
    let bps = (rate.clamp(0.0, 1.0) * BPS as f64).floor() as u16;
    let mut accepted = true;
    if c.kept == 0 {
        accepted = false;
        reasons.push("rejected: no rows survived validation and deduplication".into());
    } else if bps < limits.min_score_bps {
        accepted = false;
        reasons.push(format!(
            "rejected: score {bps} is below the minimum {}",
            limits.min_score_bps
        ));
    }
    FileScore {
        bps,
        reasons,
        accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_file_scores_full_and_bad_file_is_rejected() {
        let l = Limits::default();
        let clean = FileCounts {
            records: 10,
            kept: 10,
            ..Default::default()
        };
        let s = score(&clean, &l);
        assert_eq!((s.bps, s.accepted, s.reasons.len()), (10_000, true, 0));

        let half_long = FileCounts {
            records: 10,
            too_long: 5,
            bad_encoding: 2,
            kept: 3,
            ..Default::default()
        };
        let s = score(&half_long, &l);
        assert_eq!(s.bps, 4_000);
        assert!(!s.accepted);
        assert!(
            s.reasons.iter().any(|r| r.contains("5 too long")),
            "{:?}",
            s.reasons
        );
        assert!(s.reasons.last().unwrap().contains("below the minimum 5000"));

        let all_dups = FileCounts {
            records: 4,
            exact_duplicates: 4,
            ..Default::default()
        };
        let s = score(&all_dups, &l);
        assert_eq!((s.bps, s.accepted), (0, false));
    }
}
