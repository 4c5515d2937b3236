//! Span attribution of a model output, following OLMoTrace:
//!
//! 1. the longest match in the index at every position of the response;
//! 2. the maximal spans among them (not contained in an earlier one), at least
//!    [`Params::min_span_tokens`] long;
//! 3. keep the rarest ⌈[`Params::keep_fraction`]·L⌉ spans by unigram log-probability (the sum
//!    of ln(count(t)/N) over the span's tokens);
//! 4. the rows containing each kept span, re-ranked by BM25 against prompt + response, the top
//!    [`Params::rows_per_span`] kept per span;
//! 5. weights: the covered fraction of the response (tokens inside kept spans) is the mass to
//!    share; each span gets a part proportional to its rarity mass (−log-probability, so longer
//!    and rarer spans weigh more), split over its rows by BM25 (a span found in many rows spreads
//!    thinly). Weights per contribution therefore sum to the coverage, at most 1; the rest is
//!    unattributed.
//!
//! The result carries the evidence: each span's place in the output, its rows, contributions,
//! contributors and weights.

use crate::{bm25, index::Index, tokens::TokenId};
use alloy_primitives::Address;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Tunables, with OLMoTrace-like defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Shortest span considered, in tokens.
    pub min_span_tokens: usize,
    /// Fraction of the response length: how many of the rarest spans are kept.
    pub keep_fraction: f64,
    /// Rows kept per span after BM25 re-ranking.
    pub rows_per_span: usize,
    /// Occurrences looked at per span when collecting its rows.
    pub max_occurrences: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_span_tokens: 4,
            keep_fraction: 0.05,
            rows_per_span: 10,
            max_occurrences: 1000,
        }
    }
}

/// A row supporting a span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowEvidence {
    /// Shard number.
    pub shard: usize,
    /// Row in the shard.
    pub row: u64,
    /// Its contribution.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
    /// BM25 score against prompt + response.
    pub bm25: f64,
    /// The part of the span's weight it receives.
    pub weight: f64,
}

/// A span of the response found verbatim in the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    /// First token position in the response.
    pub start: usize,
    /// One past the last.
    pub end: usize,
    /// Its tokens.
    pub tokens: Vec<TokenId>,
    /// Occurrences in the index.
    pub count: u64,
    /// Sum of ln(count(t)/N) over its tokens (lower is rarer).
    pub unigram_logprob: f64,
    /// Its share of the attributed mass.
    pub weight: f64,
    /// The rows it was found in, best BM25 first.
    pub rows: Vec<RowEvidence>,
}

/// One contribution's weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContributionWeight {
    /// The contribution.
    pub contribution_id: u64,
    /// Its contributor.
    pub contributor: Address,
    /// Its weight (all weights sum to the coverage, at most 1).
    pub weight: f64,
    /// Kept spans it supports.
    pub spans: usize,
}

/// The attribution of one response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    /// Response length in tokens.
    pub response_tokens: usize,
    /// Fraction of the response inside kept spans (= the sum of the weights).
    pub coverage: f64,
    /// Kept spans, in response order.
    pub spans: Vec<Span>,
    /// Contributions, heaviest first.
    pub contributions: Vec<ContributionWeight>,
}

/// Maximal spans `(start, len)` of at least `min_len` tokens, from the longest match at each
/// position.
pub fn maximal_spans(longest: &[usize], min_len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut reach = 0;
    for (i, &len) in longest.iter().enumerate() {
        let end = i + len;
        if end > reach {
            if len >= min_len.max(1) {
                out.push((i, len));
            }
            reach = end;
        }
    }
    out
}

/// Attributes `response` (with its `prompt`, for re-ranking) to the index's contributions.
pub fn attribute(
    index: &Index,
    prompt: &[TokenId],
    response: &[TokenId],
    p: &Params,
) -> Attribution {
    let total = index.token_count().max(1) as f64;
    let mut unigram: HashMap<TokenId, f64> = HashMap::new();
    let mut logprob = |span: &[TokenId]| -> f64 {
        span.iter()
            .map(|t| {
                *unigram
                    .entry(*t)
                    .or_insert_with(|| (index.count(&[*t]).max(1) as f64 / total).ln())
            })
            .sum()
    };
    let longest = index.longest_matches(response);
    let mut spans: Vec<Span> = maximal_spans(&longest, p.min_span_tokens)
        .into_iter()
        .map(|(start, len)| {
            let tokens = response[start..start + len].to_vec();
            Span {
                start,
                end: start + len,
                count: index.count(&tokens),
                unigram_logprob: logprob(&tokens),
                tokens,
                weight: 0.0,
                rows: Vec::new(),
            }
        })
        .collect();
    let keep = ((p.keep_fraction * response.len() as f64).ceil() as usize).max(1);
    spans.sort_by(|a, b| a.unigram_logprob.total_cmp(&b.unigram_logprob));
    spans.truncate(keep);
    spans.sort_by_key(|s| s.start);

    // Rows of all kept spans, scored once against prompt + response.
    let mut query = prompt.to_vec();
    query.extend_from_slice(response);
    let hits: Vec<Vec<crate::RowHit>> = spans
        .iter()
        .map(|s| index.rows_containing(&s.tokens, p.max_occurrences))
        .collect();
    let mut row_ids: Vec<(usize, u64)> = hits.iter().flatten().map(|h| (h.shard, h.row)).collect();
    row_ids.sort_unstable();
    row_ids.dedup();
    let docs: Vec<Vec<TokenId>> = row_ids
        .iter()
        .map(|&(s, r)| index.row_tokens(s, r))
        .collect();
    let scores: HashMap<(usize, u64), f64> = row_ids
        .iter()
        .copied()
        .zip(bm25::scores(&query, &docs))
        .collect();

    let mut covered = vec![false; response.len()];
    for s in &spans {
        covered[s.start..s.end].iter_mut().for_each(|c| *c = true);
    }
    let coverage = covered.iter().filter(|c| **c).count() as f64 / response.len().max(1) as f64;
    let mass: f64 = spans.iter().map(|s| -s.unigram_logprob).sum();
    let mut by_contribution: BTreeMap<u64, ContributionWeight> = BTreeMap::new();
    for (s, hits) in spans.iter_mut().zip(hits) {
        s.weight = if mass > 0.0 {
            coverage * -s.unigram_logprob / mass
        } else {
            0.0
        };
        let mut rows: Vec<RowEvidence> = hits
            .into_iter()
            .map(|h| RowEvidence {
                shard: h.shard,
                row: h.row,
                contribution_id: h.contribution_id,
                contributor: h.contributor,
                bm25: scores[&(h.shard, h.row)],
                weight: 0.0,
            })
            .collect();
        rows.sort_by(|a, b| {
            b.bm25
                .total_cmp(&a.bm25)
                .then((a.shard, a.row).cmp(&(b.shard, b.row)))
        });
        rows.truncate(p.rows_per_span);
        let bm25_sum: f64 = rows.iter().map(|r| r.bm25).sum();
        let n = rows.len() as f64;
        for r in &mut rows {
            let share = if bm25_sum > 0.0 {
                r.bm25 / bm25_sum
            } else {
                1.0 / n
            };
            r.weight = s.weight * share;
            let c = by_contribution
                .entry(r.contribution_id)
                .or_insert(ContributionWeight {
                    contribution_id: r.contribution_id,
                    contributor: r.contributor,
                    weight: 0.0,
                    spans: 0,
                });
            c.weight += r.weight;
        }
        let mut seen: Vec<u64> = rows.iter().map(|r| r.contribution_id).collect();
        seen.sort_unstable();
        seen.dedup();
        for c in seen {
            if let Some(w) = by_contribution.get_mut(&c) {
                w.spans += 1;
            }
        }
        s.rows = rows;
    }
    let mut contributions: Vec<ContributionWeight> = by_contribution.into_values().collect();
    contributions.sort_by(|a, b| {
        b.weight
            .total_cmp(&a.weight)
            .then(a.contribution_id.cmp(&b.contribution_id))
    });
    Attribution {
        response_tokens: response.len(),
        coverage,
        spans,
        contributions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maximal_spans_drop_contained_and_short_ones() {
        // Position 1 is inside position 0's span; position 3 reaches further.
        assert_eq!(
            maximal_spans(&[4, 3, 2, 5, 1, 0, 2], 2),
            vec![(0, 4), (3, 5)]
        );
        assert_eq!(maximal_spans(&[1, 1, 1], 2), vec![]);
    }
}
