//! The learning check: does the adapter answer the planted-fact questions? For each question
//! the app will ask, two measurements, both in this process with the model runtime:
//!
//! - the adapter's greedy answer to the bare question (chat template, as the OpenAI API renders
//!   it) must state the fact: its phrase and a detail the question does not give away
//!   ([`super::train::states_fact`]); the base model's answer is recorded beside it;
//! - the mean per-token negative log-likelihood (NLL, nats per token) of the fact's verbatim
//!   sentence as the answer to the question (teacher-forced after the chat prompt, what
//!   ModelFactory optimises on a prompt/response row) must be at least [`MARGIN_NATS`] lower
//!   under base + adapter than under the base.
//!
//! [`failures`] is a pure function of both, so the demo fails naming the fact not learned.

use super::train::{states_fact, Question, MAX_ANSWER_TOKENS};
use anyhow::{Context, Result};
use openledger_model::chat::Message;
use openledger_model::{GenerateParams, Llama, LoraAdapter, Tokenizer};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

/// How much lower (nats per token) the adapter's NLL of every asked fact must be than the base
/// model's. Reading the rest of the datanets alone lowers a fact's NLL by domain and style; a
/// margin well above that shows the adapter learned the answer itself.
pub const MARGIN_NATS: f64 = 0.5;

/// One question's answers and likelihoods under the base model and under the adapter.
#[derive(Clone, Debug, Serialize)]
pub struct FactScore {
    pub contributor: String,
    pub phrase: String,
    /// The question asked.
    pub question: String,
    /// The verbatim sentence scored as the answer.
    pub sentence: String,
    /// Tokens scored (the sentence's).
    pub tokens: usize,
    /// Mean NLL per token under the base model (nats).
    pub base_nll: f64,
    /// Mean NLL per token under base + adapter (nats).
    pub adapter_nll: f64,
    /// base_nll − adapter_nll: how much more likely the adapter finds the answer.
    pub delta: f64,
    /// The base model's greedy answer.
    pub base_answer: String,
    /// The adapter's greedy answer.
    pub answer: String,
    /// Whether the adapter's answer states the fact.
    pub answers: bool,
}

impl FactScore {
    /// Whether the adapter learned this fact by `margin`.
    pub fn learned(&self, margin: f64) -> bool {
        self.answers && self.delta >= margin
    }
}

/// Every fact the adapter did not learn by `margin`, in words naming it (empty when all pass).
pub fn failures(scores: &[FactScore], margin: f64) -> Vec<String> {
    if scores.is_empty() {
        return vec!["no planted fact was scored".into()];
    }
    let mut out = Vec::new();
    for s in scores {
        if !s.answers {
            out.push(format!(
                "the adapter does not answer {}'s question {:?} with the fact: {:?}",
                s.contributor, s.question, s.answer
            ));
        } else if s.delta.is_nan() || s.delta < margin {
            out.push(format!(
                "the adapter did not learn {}'s fact {:?}: NLL {:.3} → {:.3} nats/token \
                 (Δ {:+.3}, needs ≥ {margin:.2})",
                s.contributor, s.phrase, s.base_nll, s.adapter_nll, s.delta
            ));
        }
    }
    out
}

/// A question's chat prompt and answer tokens, with the base model's NLL and answer.
struct Base {
    prompt: Vec<u32>,
    sentence: Vec<u32>,
    nll: f64,
    answer: String,
}

/// The base model, loaded once for every round's check.
pub struct Scorer {
    model: Llama,
    tokenizer: Tokenizer,
    base: Vec<Base>,
}

impl Scorer {
    /// Loads `model` and scores and answers every question under it.
    pub fn new(model: &Path, qs: &[Question]) -> Result<Scorer> {
        let loaded = crate::ai::load_model(&crate::ai::ModelArgs {
            model: model.to_path_buf(),
            adapter: None,
            threads: None,
            device: None,
        })?;
        let mut base = Vec::new();
        for q in qs {
            let prompt = crate::ai::chat_ids(&loaded.tokenizer, &[Message::new("user", &q.prompt)])
                .with_context(|| format!("rendering {}'s question", q.contributor))?;
            let sentence = loaded
                .tokenizer
                .encode(q.sentence, false)
                .with_context(|| format!("tokenizing {}'s fact", q.contributor))?;
            let nll = answer_nll(&loaded.model, &prompt, &sentence, None).with_context(|| {
                format!("scoring {}'s fact under the base model", q.contributor)
            })?;
            let answer = greedy(&loaded.model, &loaded.tokenizer, &prompt, None)
                .with_context(|| format!("answering {}'s question with the base", q.contributor))?;
            base.push(Base {
                prompt,
                sentence,
                nll,
                answer,
            });
        }
        Ok(Scorer {
            model: loaded.model,
            tokenizer: loaded.tokenizer,
            base,
        })
    }

    /// Scores and answers every question under the adapter in `adapter_dir` (PEFT files).
    pub fn score(&self, adapter_dir: &Path, qs: &[Question]) -> Result<Vec<FactScore>> {
        let adapter = openledger_model::peft::load(adapter_dir, self.model.device())
            .with_context(|| format!("loading the adapter in {}", adapter_dir.display()))?;
        self.model
            .check_adapter(&adapter)
            .with_context(|| format!("the adapter in {}", adapter_dir.display()))?;
        let adapter = Arc::new(adapter);
        let mut out = Vec::new();
        for (q, b) in qs.iter().zip(&self.base) {
            let adapter_nll = answer_nll(&self.model, &b.prompt, &b.sentence, Some(&adapter))
                .with_context(|| format!("scoring {}'s fact under the adapter", q.contributor))?;
            let answer = greedy(
                &self.model,
                &self.tokenizer,
                &b.prompt,
                Some(adapter.clone()),
            )
            .with_context(|| format!("answering {}'s question with the adapter", q.contributor))?;
            out.push(FactScore {
                contributor: q.contributor.into(),
                phrase: q.phrase.into(),
                question: q.prompt.clone(),
                sentence: q.sentence.into(),
                tokens: b.sentence.len(),
                base_nll: b.nll,
                adapter_nll,
                delta: b.nll - adapter_nll,
                base_answer: b.answer.clone(),
                answers: states_fact(q, &answer),
                answer,
            });
        }
        Ok(out)
    }
}

/// The greedy answer (at most [`MAX_ANSWER_TOKENS`]) to the chat prompt `prompt`.
fn greedy(
    model: &Llama,
    tok: &Tokenizer,
    prompt: &[u32],
    adapter: Option<Arc<LoraAdapter>>,
) -> Result<String> {
    let params = GenerateParams {
        max_tokens: MAX_ANSWER_TOKENS,
        ..GenerateParams::default()
    };
    let g =
        openledger_model::generate(model, tok, prompt.to_vec(), params, adapter, &mut |_| true)?;
    Ok(g.text.trim().to_string())
}

/// Mean NLL per token of `answer` teacher-forced after `prompt`, in nats.
fn answer_nll(
    model: &Llama,
    prompt: &[u32],
    answer: &[u32],
    adapter: Option<&LoraAdapter>,
) -> Result<f64> {
    anyhow::ensure!(
        !prompt.is_empty() && !answer.is_empty(),
        "an empty prompt or answer"
    );
    let ids: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    mean_nll(model, &ids, prompt.len(), adapter)
}

/// Mean negative log-likelihood per predicted token of `ids[from..]` (each given the ones before
/// it; `from` ≥ 1), in nats.
fn mean_nll(model: &Llama, ids: &[u32], from: usize, adapter: Option<&LoraAdapter>) -> Result<f64> {
    anyhow::ensure!(from >= 1 && from < ids.len(), "nothing to score");
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
    for (i, &next) in ids.iter().enumerate().skip(from) {
        let row = &flat[(i - 1) * vocab..i * vocab];
        total += nll_of(row, next as usize);
    }
    Ok(total / (ids.len() - from) as f64)
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

/// Prints the table of a round's check and each answer.
pub fn print_table(scores: &[FactScore], margin: f64) {
    println!(
        "    {:<6} {:<10} {:<26} {:>9} {:>12} {:>8}  answer states the fact",
        "", "contributor", "fact", "base NLL", "adapter NLL", "Δ"
    );
    for s in scores {
        println!(
            "    {:<6} {:<10} {:<26} {:>9.3} {:>12.3} {:>+8.3}  {}",
            if s.learned(margin) { "ok" } else { "FAIL" },
            s.contributor,
            s.phrase,
            s.base_nll,
            s.adapter_nll,
            s.delta,
            if s.answers { "yes" } else { "no" }
        );
    }
    for s in scores {
        println!("    Q: {}", s.question);
        println!("       base:    {:?}", s.base_answer);
        println!("       adapter: {:?}", s.answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(who: &str, base: f64, adapter: f64) -> FactScore {
        FactScore {
            contributor: who.into(),
            phrase: format!("{who}'s phrase"),
            question: format!("What is {who}'s phrase?"),
            sentence: String::new(),
            tokens: 10,
            base_nll: base,
            adapter_nll: adapter,
            delta: base - adapter,
            base_answer: "I do not know.".into(),
            answer: format!("{who}'s phrase is what {who} wrote."),
            answers: true,
        }
    }

    #[test]
    fn a_likely_answer_the_adapter_does_not_give_fails_naming_the_question() {
        let mut s = [score("alice", 3.0, 1.0), score("bob", 3.0, 1.0)];
        s[1].answers = false;
        s[1].answer = "Bees like flowers.".into();
        let f = failures(&s, 0.5);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].contains("bob's question") && f[0].contains("Bees like flowers"),
            "{f:?}"
        );
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
