//! The learning check: did training teach the adapter the planted facts? For each planted fact
//! the demo asks about, the mean per-token negative log-likelihood (NLL, nats per token) of the
//! fact's verbatim sentence, teacher-forced as plain text (what ModelFactory optimises on a text
//! datanet: language modelling on every token), under the base model and under base + adapter,
//! measured in this process with the model runtime. The adapter passes when it beats the base
//! on every asked fact by at least [`MARGIN_NATS`] ([`failures`], a pure function).
//!
//! This is what proves learning. The base model already repeats a sentence it is shown, so the
//! "Repeat this sentence exactly" answers of the paid rounds prove attribution and payment of
//! generated text, not that the adapter knows anything.

use super::train::Question;
use anyhow::{Context, Result};
use openledger_model::{Llama, LoraAdapter};
use serde::Serialize;
use std::path::Path;

/// How much lower (nats per token) the adapter's NLL of every asked fact must be than the base
/// model's. Reading the rest of the datanet alone lowers a fact's NLL by domain and style; a
/// margin well above that shows the adapter learned the sentence itself.
pub const MARGIN_NATS: f64 = 0.5;

/// One fact's likelihood under the base model and under the adapter.
#[derive(Clone, Debug, Serialize)]
pub struct FactScore {
    pub contributor: String,
    pub phrase: String,
    /// The verbatim sentence scored.
    pub sentence: String,
    /// Tokens predicted (the sentence's tokens but the first).
    pub tokens: usize,
    /// Mean NLL per token under the base model (nats).
    pub base_nll: f64,
    /// Mean NLL per token under base + adapter (nats).
    pub adapter_nll: f64,
    /// base_nll − adapter_nll: how much more likely the adapter finds the fact.
    pub delta: f64,
}

/// Every fact the adapter did not learn by `margin`, in words naming it (empty when all pass).
pub fn failures(scores: &[FactScore], margin: f64) -> Vec<String> {
    if scores.is_empty() {
        return vec!["no planted fact was scored".into()];
    }
    scores
        .iter()
        .filter(|s| s.delta.is_nan() || s.delta < margin)
        .map(|s| {
            format!(
                "the adapter did not learn {}'s fact {:?}: NLL {:.3} → {:.3} nats/token \
                 (Δ {:+.3}, needs ≥ {margin:.2})",
                s.contributor, s.phrase, s.base_nll, s.adapter_nll, s.delta
            )
        })
        .collect()
}

/// The base model, loaded once for every round's check.
pub struct Scorer {
    model: Llama,
    /// Each question's sentence tokens and its NLL under the base model.
    base: Vec<(Vec<u32>, f64)>,
}

impl Scorer {
    /// Loads `model` and scores every question's sentence under it.
    pub fn new(model: &Path, qs: &[Question]) -> Result<Scorer> {
        let loaded = crate::ai::load_model(&crate::ai::ModelArgs {
            model: model.to_path_buf(),
            adapter: None,
            threads: None,
            device: None,
        })?;
        let mut base = Vec::new();
        for q in qs {
            let ids = loaded
                .tokenizer
                .encode(q.sentence, false)
                .with_context(|| format!("tokenizing {}'s fact", q.contributor))?;
            let nll = mean_nll(&loaded.model, &ids, None).with_context(|| {
                format!("scoring {}'s fact under the base model", q.contributor)
            })?;
            base.push((ids, nll));
        }
        Ok(Scorer {
            model: loaded.model,
            base,
        })
    }

    /// Scores every question's sentence under the adapter in `adapter_dir` (PEFT files).
    pub fn score(&self, adapter_dir: &Path, qs: &[Question]) -> Result<Vec<FactScore>> {
        let adapter = openledger_model::peft::load(adapter_dir, self.model.device())
            .with_context(|| format!("loading the adapter in {}", adapter_dir.display()))?;
        self.model
            .check_adapter(&adapter)
            .with_context(|| format!("the adapter in {}", adapter_dir.display()))?;
        let mut out = Vec::new();
        for (q, (ids, base_nll)) in qs.iter().zip(&self.base) {
            let adapter_nll = mean_nll(&self.model, ids, Some(&adapter))
                .with_context(|| format!("scoring {}'s fact under the adapter", q.contributor))?;
            out.push(FactScore {
                contributor: q.contributor.into(),
                phrase: q.phrase.into(),
                sentence: q.sentence.into(),
                tokens: ids.len().saturating_sub(1),
                base_nll: *base_nll,
                adapter_nll,
                delta: base_nll - adapter_nll,
            });
        }
        Ok(out)
    }
}

/// Mean negative log-likelihood per predicted token of `ids` (every token but the first, each
/// given the ones before it), in nats.
fn mean_nll(model: &Llama, ids: &[u32], adapter: Option<&LoraAdapter>) -> Result<f64> {
    anyhow::ensure!(ids.len() >= 2, "a sentence of fewer than two tokens");
    let logits = model.score(ids, adapter)?;
    let vocab = *logits.dims().last().context("logits without a shape")?;
    let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
    anyhow::ensure!(
        flat.len() == ids.len() * vocab,
        "logits of {} values for {} tokens",
        flat.len(),
        ids.len()
    );
    let mut total = 0.0;
    for (i, &next) in ids.iter().enumerate().skip(1) {
        let row = &flat[(i - 1) * vocab..i * vocab];
        total += nll_of(row, next as usize);
    }
    Ok(total / (ids.len() - 1) as f64)
}

/// −log softmax(row)[target], computed in f64.
fn nll_of(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    lse - row.get(target).copied().unwrap_or(f32::NEG_INFINITY) as f64
}

/// Prints the table of a round's check.
pub fn print_table(scores: &[FactScore], margin: f64) {
    println!(
        "    {:<6} {:<10} {:<26} {:>9} {:>12} {:>8}",
        "", "contributor", "fact", "base NLL", "adapter NLL", "Δ"
    );
    for s in scores {
        println!(
            "    {:<6} {:<10} {:<26} {:>9.3} {:>12.3} {:>+8.3}",
            if s.delta >= margin { "ok" } else { "FAIL" },
            s.contributor,
            s.phrase,
            s.base_nll,
            s.adapter_nll,
            s.delta
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(who: &str, base: f64, adapter: f64) -> FactScore {
        FactScore {
            contributor: who.into(),
            phrase: format!("{who}'s phrase"),
            sentence: String::new(),
            tokens: 10,
            base_nll: base,
            adapter_nll: adapter,
            delta: base - adapter,
        }
    }

    #[test]
    fn every_fact_learned_by_the_margin_passes() {
        let s = [score("alice", 3.0, 1.0), score("bob", 2.5, 2.0)];
        assert!(failures(&s, 0.5).is_empty());
    }

    #[test]
    fn a_fact_learned_by_less_than_the_margin_fails_naming_it() {
        let s = [score("alice", 3.0, 1.0), score("bob", 2.5, 2.2)];
        let f = failures(&s, 0.5);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("bob's fact \"bob's phrase\""), "{f:?}");
    }

    #[test]
    fn an_adapter_worse_than_the_base_or_not_a_number_fails() {
        let s = [score("alice", 2.0, 2.5), score("carol", 2.0, f64::NAN)];
        let f = failures(&s, 0.5);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("alice") && f[1].contains("carol"), "{f:?}");
    }

    #[test]
    fn nothing_scored_fails() {
        assert_eq!(failures(&[], 0.5).len(), 1);
    }

    #[test]
    fn nll_is_the_negative_log_softmax_of_the_target() {
        let row = [0.0f32, (3.0f32).ln()];
        // softmax = [1/4, 3/4]
        assert!((nll_of(&row, 1) - (4.0f64 / 3.0).ln()).abs() < 1e-6);
        assert!((nll_of(&row, 0) - 4.0f64.ln()).abs() < 1e-6);
    }
}
