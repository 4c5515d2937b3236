//! Ingestion limits and thresholds, with OpenLedger's defaults. Every check in the pipeline reads
//! its bound from here, so a datanet (or a test) can tune them in one place.

use serde::{Deserialize, Serialize};

/// Bounds and thresholds of the ingestion pipeline. Fields left out of a config file keep their
/// defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest file accepted, in bytes (OpenLedger: 5 MB). Checked before the file is read.
    pub max_file_bytes: u64,
    /// Most bytes one PDF or DOCX file may decompress to, all its streams and parts together,
    /// each counted every time it is read (see [`crate::budget`]).
    pub max_expanded_bytes: u64,
    /// Most bytes the files of one upload may decompress to together (they are parsed in
    /// parallel and share this budget).
    pub max_request_expanded_bytes: u64,
    /// Most content tokens (operators and operands) one PDF page may hold: a page's content is
    /// parsed whole, at about a hundred bytes of memory per token.
    pub max_pdf_page_tokens: u64,
    /// Longest row kept, in characters after normalisation (prompt + response together).
    pub max_row_chars: usize,
    /// Shortest row kept, in characters after normalisation.
    pub min_row_chars: usize,
    /// A file scoring below this (basis points) is rejected.
    pub min_score_bps: u16,
    /// Estimated Jaccard similarity at and above which a row is a near-duplicate.
    pub near_duplicate_threshold: f64,
    /// Whether near-duplicates are dropped (true) or kept and only reported (false).
    pub drop_near_duplicates: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 5 * 1024 * 1024,
            max_expanded_bytes: 64 * 1024 * 1024,
            max_request_expanded_bytes: 256 * 1024 * 1024,
            max_pdf_page_tokens: 500_000,
            max_row_chars: 20_000,
            min_row_chars: 1,
            min_score_bps: 5_000,
            near_duplicate_threshold: 0.8,
            drop_near_duplicates: false,
        }
    }
}
