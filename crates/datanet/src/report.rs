//! The contributor's report on an ingested contribution, as JSON: what the chain's `contribute`
//! call will carry (rows root, row count, bytes, score), each file's score with its reasons, and
//! the duplicates, near-duplicates and dropped rows (the first [`MAX_LISTED`] of each, with
//! totals). The node's staging route returns it; the CLI prints it.

use crate::{
    hash::to_b256,
    ingest::{Contribution, DuplicateOf, FileReport},
    row::{Location, Schema},
    validate::Problem,
};
use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

/// Most entries listed per kind; totals are always complete.
pub const MAX_LISTED: usize = 1000;

/// One file's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOutcome {
    /// File name.
    pub name: String,
    /// Records parsed.
    pub records: usize,
    /// Rows kept.
    pub kept: usize,
    /// Score in basis points.
    pub score_bps: u16,
    /// Whether its rows are in the contribution.
    pub accepted: bool,
    /// Why it lost points or was rejected.
    pub reasons: Vec<String>,
}

/// An exact duplicate that was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DuplicateEntry {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// The row hash.
    pub hash: B256,
    /// "datanet" when another contribution already has it, else where in this contribution.
    pub original: String,
}

/// A near-duplicate that was found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NearDuplicateEntry {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// The row hash.
    pub hash: B256,
    /// The most similar existing row.
    pub matched: B256,
    /// Estimated Jaccard similarity of their word 5-shingles.
    pub similarity: f64,
    /// Whether the row was kept.
    pub kept: bool,
}

/// A row dropped by validation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedEntry {
    /// File name.
    pub file: String,
    /// Where in it.
    pub at: Location,
    /// Why.
    pub problem: Problem,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The datanet's schema.
    pub schema: Schema,
    /// `rowsRoot`.
    pub rows_root: B256,
    /// `rowCount`.
    pub row_count: u64,
    /// `byteSize`: the accepted rows' JSONL size.
    pub byte_size: u64,
    /// `score`, in basis points.
    pub score_bps: u16,
    /// Per file, in upload order.
    pub files: Vec<FileOutcome>,
    /// Exact duplicates refused (all of them).
    pub duplicates_total: usize,
    /// The first [`MAX_LISTED`] of them.
    pub duplicates: Vec<DuplicateEntry>,
    /// Near-duplicates found (all of them).
    pub near_duplicates_total: usize,
    /// The first [`MAX_LISTED`] of them.
    pub near_duplicates: Vec<NearDuplicateEntry>,
    /// Rows dropped by validation (all of them).
    pub dropped_total: usize,
    /// The first [`MAX_LISTED`] of them.
    pub dropped: Vec<DroppedEntry>,
}

impl From<&FileReport> for FileOutcome {
    fn from(f: &FileReport) -> Self {
        FileOutcome {
            name: f.name.clone(),
            records: f.counts.records,
            kept: f.counts.kept,
            score_bps: f.score.bps,
            accepted: f.score.accepted,
            reasons: f.score.reasons.clone(),
        }
    }
}

impl Report {
    /// Summarises an ingested contribution.
    pub fn new(c: &Contribution) -> Report {
        Report {
            schema: c.schema,
            rows_root: c.rows_root,
            row_count: c.row_count(),
            byte_size: c.byte_size,
            score_bps: c.score_bps(),
            files: c.files.iter().map(FileOutcome::from).collect(),
            duplicates_total: c.duplicates.len(),
            duplicates: c
                .duplicates
                .iter()
                .take(MAX_LISTED)
                .map(|d| DuplicateEntry {
                    file: d.file.clone(),
                    at: d.at,
                    hash: to_b256(&d.hash),
                    original: match &d.of {
                        DuplicateOf::Datanet => "datanet".into(),
                        DuplicateOf::Contribution { file, at } => format!("{file} {at}"),
                    },
                })
                .collect(),
            near_duplicates_total: c.near_duplicates.len(),
            near_duplicates: c
                .near_duplicates
                .iter()
                .take(MAX_LISTED)
                .map(|n| NearDuplicateEntry {
                    file: n.file.clone(),
                    at: n.at,
                    hash: to_b256(&n.hash),
                    matched: to_b256(&n.matched),
                    similarity: n.similarity,
                    kept: n.kept,
                })
                .collect(),
            dropped_total: c.dropped.len(),
            dropped: c
                .dropped
                .iter()
                .take(MAX_LISTED)
                .map(|d| DroppedEntry {
                    file: d.file.clone(),
                    at: d.at,
                    problem: d.problem.clone(),
                })
                .collect(),
        }
    }

    /// A few lines for a terminal: totals, then each file's verdict and reasons, then the first
    /// duplicates and near-duplicates.
    pub fn summary(&self, show: usize) -> String {
        let mut out = format!(
            "{} rows ({} bytes) accepted, score {}.{:02}%; {} exact duplicates refused, {} near-duplicates, {} rows dropped\n",
            self.row_count,
            self.byte_size,
            self.score_bps / 100,
            self.score_bps % 100,
            self.duplicates_total,
            self.near_duplicates_total,
            self.dropped_total
        );
        for f in &self.files {
            out += &format!(
                "  {} {}: {} of {} records kept, score {}.{:02}%\n",
                if f.accepted { "accepted" } else { "REJECTED" },
                f.name,
                f.kept,
                f.records,
                f.score_bps / 100,
                f.score_bps % 100
            );
            for r in &f.reasons {
                out += &format!("      {r}\n");
            }
        }
        for d in self.duplicates.iter().take(show) {
            let of = if d.original == "datanet" {
                "a row already in the datanet (its first contributor keeps the credit)".to_string()
            } else {
                d.original.clone()
            };
            out += &format!("  duplicate {} {}: same as {of}\n", d.file, d.at);
        }
        for n in self.near_duplicates.iter().take(show) {
            out += &format!(
                "  near-duplicate {} {}: {:.0}% similar to row {} ({})\n",
                n.file,
                n.at,
                n.similarity * 100.0,
                n.matched,
                if n.kept { "kept" } else { "dropped" }
            );
        }
        for d in self.dropped.iter().take(show) {
            out += &format!("  dropped {} {}: {}\n", d.file, d.at, d.problem);
        }
        let hidden = self.duplicates_total.min(MAX_LISTED).saturating_sub(show)
            + self
                .near_duplicates_total
                .min(MAX_LISTED)
                .saturating_sub(show)
            + self.dropped_total.min(MAX_LISTED).saturating_sub(show);
        if hidden > 0 {
            out += &format!("  … and {hidden} more (see the JSON report)\n");
        }
        out
    }
}
