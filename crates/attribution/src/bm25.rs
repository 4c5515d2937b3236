//! BM25 over token ids, for re-ranking the rows a span retrieval found against the prompt and
//! response (OLMoTrace ranks retrieved documents the same way). The collection is the retrieved
//! rows themselves, so document frequencies and the average length come from them.

use crate::tokens::TokenId;
use std::collections::{HashMap, HashSet};

/// Term-frequency saturation.
pub const K1: f64 = 1.2;
/// Length normalisation.
pub const B: f64 = 0.75;

/// The BM25 score of each document against `query`.
pub fn scores(query: &[TokenId], docs: &[Vec<TokenId>]) -> Vec<f64> {
    if docs.is_empty() {
        return Vec::new();
    }
    let n = docs.len() as f64;
    let avg_len = docs.iter().map(|d| d.len()).sum::<usize>() as f64 / n;
    let mut df: HashMap<TokenId, usize> = HashMap::new();
    for d in docs {
        for t in d.iter().collect::<HashSet<_>>() {
            *df.entry(*t).or_default() += 1;
        }
    }
    let terms: HashSet<TokenId> = query.iter().copied().collect();
    docs.iter()
        .map(|d| {
            let mut tf: HashMap<TokenId, usize> = HashMap::new();
            for t in d {
                if terms.contains(t) {
                    *tf.entry(*t).or_default() += 1;
                }
            }
            let norm = K1 * (1.0 - B + B * d.len() as f64 / avg_len.max(1.0));
            tf.iter()
                .map(|(t, &f)| {
                    let df = df[t] as f64;
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    idf * f as f64 * (K1 + 1.0) / (f as f64 + norm)
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_sharing_rare_query_terms_ranks_first() {
        let docs = vec![vec![1, 2, 3, 4], vec![1, 2, 5, 6], vec![1, 7, 8, 9]];
        let s = scores(&[5, 6, 1], &docs);
        assert!(s[1] > s[0] && s[1] > s[2], "{s:?}");
        assert_eq!(scores(&[1], &[]), Vec::<f64>::new());
    }
}
