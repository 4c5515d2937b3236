//! SmolLM2 against llama.cpp on the same GGUF: tokenizer ids, teacher-forced logits and free-running
//! greedy output. The references come from llama-cpp-python (scripts/make-llama-references) and are
//! checked in, so CI needs no llama.cpp build; the model itself comes from scripts/fetch-model.

mod common;
use common::model;

use openledger_model::{generate, GenerateParams, Llama, Logits, SeqInput};
use serde_json::Value;

/// Below this top-1/top-2 logit margin in llama.cpp, the two runtimes may legitimately pick differently:
/// llama.cpp's own logits for the same position move by up to ~0.3 between its decode and batch paths
/// (90th percentile 1.5% of a ~20 logit), so a margin under 0.5 is a tie within its own noise.
const NEAR_TIE: f64 = 0.5;

fn reference() -> Value {
    let text = include_str!("data/llama_cpp_reference.json");
    serde_json::from_str(text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn tokenizer_ids_match_llama_cpp() {
    let (_, tok) = model();
    let r = reference();
    let cases = r["tokenize"].as_array().unwrap();
    assert!(!cases.is_empty(), "no tokenizer references");
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&case["ids"]),
            "tokenizing {text:?}"
        );
    }
}

#[test]
fn decode_inverts_encode() {
    let (_, tok) = model();
    for case in reference()["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.decode(&tok.encode(text, true).unwrap(), false).unwrap(),
            text
        );
    }
}

/// Our logits along llama.cpp's greedy continuation, `mode` "decode" (prompt prefill, then one token
/// per step through the KV cache, as llama.cpp generated it) or "batch" (one pass over everything).
fn teacher_forced(m: &Llama, prompt: &[u32], cont: &[u32], mode: &str) -> Vec<Vec<f32>> {
    if mode == "batch" {
        let all: Vec<u32> = prompt.iter().chain(cont).copied().collect();
        let logits = m.score(&all, None).unwrap();
        return (0..cont.len())
            .map(|i| logits.get(prompt.len() - 1 + i).unwrap().to_vec1().unwrap())
            .collect();
    }
    let mut cache = m.new_cache();
    let mut rows = Vec::new();
    let mut input = prompt.to_vec();
    for &t in cont {
        let mut seq = [SeqInput {
            tokens: &input,
            cache: &mut cache,
            adapter: None,
        }];
        rows.push(
            m.forward(&mut seq, Logits::Last)
                .unwrap()
                .remove(0)
                .squeeze(0)
                .unwrap()
                .to_vec1()
                .unwrap(),
        );
        input = vec![t];
    }
    rows
}

/// Agreement of our argmax and top-1 logit with llama.cpp's along its greedy continuations.
struct Agreement {
    total: usize,
    argmax_agree: usize,
    /// Where the argmax agrees: positions whose top-1 logit is within 1% of llama.cpp's.
    within_1pct: usize,
    worst_rel: f64,
}

fn agreement(mode: &str) -> Agreement {
    let (m, _) = model();
    let r = reference();
    let (mut total, mut agree, mut close, mut worst) = (0, 0, 0, 0f64);
    for g in r["greedy"].as_array().unwrap() {
        let cont = ids(&g["continuation"]);
        let rows = teacher_forced(m, &ids(&g["prompt_ids"]), &cont, mode);
        let positions = g[&format!("{mode}_positions")].as_array().unwrap();
        // One row of logits per reference position, each as wide as the vocabulary: a short or
        // empty output must fail here, not shrink the comparison.
        assert!(!cont.is_empty(), "a reference continuation is empty");
        assert_eq!(
            rows.len(),
            cont.len(),
            "{mode}: one row per continuation token"
        );
        assert_eq!(
            rows.len(),
            positions.len(),
            "{mode}: one row per reference position"
        );
        for row in &rows {
            assert_eq!(
                row.len(),
                m.config.vocab_size,
                "{mode}: logits as wide as the vocabulary"
            );
        }
        for (row, pos) in rows.iter().zip(positions) {
            let ours = openledger_model::sampling::argmax(row) as usize;
            total += 1;
            if ours as u64 == pos["argmax"].as_u64().unwrap() {
                agree += 1;
                let theirs = pos["top1"].as_f64().unwrap();
                let rel = (row[ours] as f64 - theirs).abs() / theirs.abs();
                worst = worst.max(rel);
                close += usize::from(rel < 0.01);
            }
        }
    }
    eprintln!(
        "{mode}: argmax agrees at {agree}/{total} = {:.4}; top-1 logit within 1% at {close}/{agree}; worst {worst:.4}",
        agree as f64 / total as f64
    );
    Agreement {
        total,
        argmax_agree: agree,
        within_1pct: close,
        worst_rel: worst,
    }
}

/// The measured floor: llama.cpp agrees with *itself* (its decode steps vs its own batched pass over
/// the same tokens) on the argmax at 473/480 = 98.5% of these positions, and on the top-1 logit within
/// 1% at only 375/473 = 79%, because its 8-bit activation rounding turns float summation-order
/// differences into visibly different logits. We match its rounding rules and sit at that floor
/// (about 97-98% and 72-76%), under the 99% / all-positions targets (see the issue note);
/// these bounds catch any real regression, which moves the figures by far more.
const MIN_ARGMAX_AGREEMENT: f64 = 0.96;
const MIN_WITHIN_1PCT: f64 = 0.68;

fn check(mode: &str) {
    let a = agreement(mode);
    assert!(a.total >= 6 * 64);
    assert!(
        a.argmax_agree as f64 >= MIN_ARGMAX_AGREEMENT * a.total as f64,
        "{mode}: argmax agrees at {}/{}",
        a.argmax_agree,
        a.total
    );
    assert!(
        a.within_1pct as f64 >= MIN_WITHIN_1PCT * a.argmax_agree as f64,
        "{mode}: top-1 logit within 1% at only {}/{} (worst {})",
        a.within_1pct,
        a.argmax_agree,
        a.worst_rel
    );
}

#[test]
fn teacher_forced_decode_logits_agree_with_llama_cpp() {
    check("decode");
}

#[test]
fn teacher_forced_batch_logits_agree_with_llama_cpp() {
    check("batch");
}

/// Free-running greedy generation reproduces llama.cpp's continuation wherever llama.cpp's own choice
/// is clear of a near-tie. Each run of such positions is generated from llama.cpp's prefix up to its
/// start (teacher-forced through the ties, which either runtime may legitimately break either way), so
/// every prompt is compared, including those whose very first step is a tie.
#[test]
fn greedy_generation_matches_llama_cpp_away_from_near_ties() {
    let (m, tok) = model();
    let r = reference();
    let cases = r["greedy"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "six reference prompts");
    for g in cases {
        let name = g["prompt"].as_str().unwrap();
        let prompt = ids(&g["prompt_ids"]);
        let cont = ids(&g["continuation"]);
        let margins: Vec<f64> = g["decode_positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["margin"].as_f64().unwrap())
            .collect();
        assert!(!prompt.is_empty() && !cont.is_empty(), "prompt {name:?}");
        assert_eq!(
            margins.len(),
            cont.len(),
            "prompt {name:?}: one margin per token"
        );
        let mut compared = 0;
        let mut start = 0;
        while start < cont.len() {
            if margins[start] < NEAR_TIE {
                start += 1;
                continue;
            }
            let end = (start..cont.len())
                .find(|&i| margins[i] < NEAR_TIE)
                .unwrap_or(cont.len());
            let input: Vec<u32> = prompt.iter().chain(&cont[..start]).copied().collect();
            let params = GenerateParams {
                max_tokens: end - start,
                stop_at_eos: false,
                ..Default::default()
            };
            let out = generate(m, tok, input, params, None, &mut |_| true).unwrap();
            assert_eq!(
                out.tokens,
                cont[start..end],
                "prompt {name:?}: greedy tokens {start}..{end} (llama.cpp margins {:?})",
                &margins[start..end]
            );
            compared += end - start;
            start = end;
        }
        assert!(
            compared > 0,
            "prompt {name:?}: no position compared (every margin is a near-tie)"
        );
        eprintln!(
            "prompt {name:?}: {compared}/{} greedy tokens compared",
            cont.len()
        );
    }
}
