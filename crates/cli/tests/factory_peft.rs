//! ModelFactory's adapters are PEFT adapters: `openledger factory train` fine-tunes SmolLM2 (rank 8
//! on all seven linear projections, a few steps) on datanet 1 version 1, `factory publish` puts it
//! on chain, the node serves it by name through the OpenAI API, and the adapter the node serves
//! (downloaded from `/v1/artifacts`, unpacked) loads in Hugging Face PEFT on transformers' own
//! reading of the same GGUF and gives the logits our runtime gives for a fixed prompt.
//!
//! Two comparisons, each against a tolerance measured in the same run on the base model alone:
//! - our runtime with the GGUF dequantized to f32 (the weights the trainer trained against) vs
//!   PEFT in f32: only the summation order differs, so the adapter may add 0.02 to the base
//!   model's difference (measured ~0.02 on both);
//! - our serving path (quantized kernels) vs PEFT in f32: the quantized products' error (measured
//!   ~1.2 max, ~0.19 mean on logits of magnitude ~20) dominates; the adapter may add 25 % + 0.1.
//!
//! At every position where PEFT's top-2 margin exceeds twice the tolerance the argmax must agree;
//! and the adapter must move PEFT's logits far beyond both tolerances, so a PEFT that ignored the
//! adapter, or a runtime that applied it to the wrong rows, fails the test.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`) and PyPI: the test installs torch, transformers and
//! peft itself with `scripts/setup-reference-tools --peft` (~2 min and ~7 GB the first time).

mod common;

use common::openlora::{agent, chat, model_path, post, workspace_root, Served};
use common::{stderr, stdout};
use openledger_model::{linear::Weight, load, peft, Device, Llama, LoraAdapter, Tokenizer};
use openledger_node::openlora::bundle;
use openledger_types::{abi::IModel, modules};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The fixed prompt scored on both sides: a chat turn about the sample datanet's subject and the
/// start of an answer, so the adapter's training shows.
const PROMPT: &str = "<|im_start|>user\nHow do I keep bees in a city without upsetting the neighbours?<|im_end|>\n<|im_start|>assistant\nStart with a calm colony and";

/// Installs the PEFT side (idempotent) and returns its Python.
fn peft_python(root: &Path) -> PathBuf {
    let out = Command::new(root.join("scripts/setup-reference-tools"))
        .arg("--peft")
        .output()
        .expect("scripts/setup-reference-tools runs");
    assert!(
        out.status.success(),
        "scripts/setup-reference-tools --peft failed (torch, transformers and peft come from PyPI):\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    root.join(".venv-ref/bin/python")
}

/// Logits `[rows][vocab]` flattened, as our runtime computes them.
fn ours(m: &Llama, tokens: &[u32], adapter: Option<&LoraAdapter>) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = m.score(tokens, adapter).unwrap().to_vec2().unwrap();
    rows.concat()
}

fn read_f32(p: &Path, len: usize) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(bytes.len(), len * 4, "{}: size", p.display());
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Largest and mean absolute difference.
fn diff(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    let (mut max, mut sum) = (0f32, 0f64);
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        assert!(d.is_finite(), "a logit is not finite: {x} vs {y}");
        max = max.max(d);
        sum += d as f64;
    }
    (max, (sum / a.len() as f64) as f32)
}

/// Index of the largest value and its margin over the second largest.
fn top(row: &[f32]) -> (usize, f32) {
    let (mut best, mut first, mut second) = (0, f32::NEG_INFINITY, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > first {
            (best, second, first) = (i, first, v);
        } else if v > second {
            second = v;
        }
    }
    (best, first - second)
}

/// Asserts our argmax equals PEFT's at every position whose PEFT top-2 margin exceeds `2 × tol`
/// (a closer pair is a tie within the tolerance); returns how many positions were checked.
fn same_argmax(what: &str, ours: &[f32], theirs: &[f32], vocab: usize, tol: f32) -> usize {
    let mut checked = 0;
    for (pos, (o, t)) in ours.chunks(vocab).zip(theirs.chunks(vocab)).enumerate() {
        let (want, margin) = top(t);
        if margin > 2.0 * tol {
            checked += 1;
            assert_eq!(
                top(o).0,
                want,
                "{what}: position {pos} picks a different token than PEFT (PEFT's margin {margin:.3}, tolerance {tol:.3})"
            );
        }
    }
    checked
}

#[test]
fn a_factory_adapter_served_by_openlora_gives_peft_logits() {
    let root = workspace_root();
    let python = peft_python(&root);
    let model = model_path();

    // Train, publish, serve.
    let s = Served::start();
    let job = s.work.path().join("job");
    s.env.ok(&[
        "--from",
        "dev3",
        "factory",
        "train",
        "--base",
        model.to_str().unwrap(),
        "--datanet",
        "1@1",
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--cutoff-len",
        "64",
        "--lora-rank",
        "8",
        "--lora-target",
        "all",
        // Larger than the default 5e-5 so four steps move the logits well past the tolerances.
        "--lr",
        "2e-3",
        "--out",
        job.to_str().unwrap(),
    ]);
    let out = s.env.ok(&[
        "--from",
        "dev3",
        "factory",
        "publish",
        job.to_str().unwrap(),
        "--name",
        "trained",
    ]);
    let id = common::openlora::adapter_id_in(out.lines().last().unwrap_or_default());
    let key = s.api_key("dev5", "10", "10");
    let (status, body) = post(
        &s.url("/v1/chat/completions"),
        Some(&key),
        &chat(8, "trained", "How do I keep bees in a city?"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["attribution"]["adapter_id"], id, "{body}");

    // The adapter as the node serves it.
    let a = s.view(modules::MODEL, IModel::getAdapterCall { adapterId: id });
    let mut resp = agent()
        .get(s.url(&format!("/v1/artifacts/{}", a.adapterHash)))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let served = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(bundle::blake3_hash(&served), a.adapterHash);
    let file = s.work.path().join("bundle");
    std::fs::write(&file, &served).unwrap();
    let adapter_dir = s.work.path().join("served-adapter");
    bundle::unpack(&file, &adapter_dir).unwrap();
    let adapter = peft::load(&adapter_dir, &Device::Cpu).unwrap();
    assert_eq!((adapter.config.r, adapter.config.targets.len()), (8, 7));

    // Our logits: the serving path (quantized kernels) and the f32 path the trainer uses.
    let tokens = Tokenizer::for_model(&model)
        .unwrap()
        .encode(PROMPT, true)
        .unwrap();
    let quant = load::load(&model, &Device::Cpu).unwrap();
    let (q_base, q_adapted) = (
        ours(&quant, &tokens, None),
        ours(&quant, &tokens, Some(&adapter)),
    );
    drop(quant);
    let mut float = load::load(&model, &Device::Cpu).unwrap();
    float.dequantize().unwrap();
    float.lm_head = Weight::Float(float.lm_head.to_float(&Device::Cpu).unwrap());
    let (f_base, f_adapted) = (
        ours(&float, &tokens, None),
        ours(&float, &tokens, Some(&adapter)),
    );
    drop(float);

    // PEFT's logits.
    let dir = s.work.path().join("peft");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens_file = dir.join("tokens.json");
    std::fs::write(&tokens_file, serde_json::to_string(&tokens).unwrap()).unwrap();
    let out = Command::new(&python)
        .arg(root.join("crates/cli/tests/factory_peft.py"))
        .args([&model, &adapter_dir, &tokens_file, &dir])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PEFT side failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let info: Value = serde_json::from_str(stdout(&out).lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("PEFT side printed {:?}: {e}", stdout(&out)));
    // 30 layers × 7 projections × (A, B), every one loaded by PEFT bit for bit.
    assert_eq!(info["lora_tensors"], 420, "{info}");
    assert_eq!(info["rows"], tokens.len(), "{info}");
    let vocab = info["vocab"].as_u64().unwrap() as usize;
    assert_eq!(
        f_base.len(),
        tokens.len() * vocab,
        "our vocabulary vs PEFT's"
    );
    let p_base = read_f32(&dir.join("base.f32"), f_base.len());
    let p_adapted = read_f32(&dir.join("adapter.f32"), f_base.len());

    let (fb, _) = diff(&f_base, &p_base);
    let (fa, fa_mean) = diff(&f_adapted, &p_adapted);
    let (qb, qb_mean) = diff(&q_base, &p_base);
    let (qa, qa_mean) = diff(&q_adapted, &p_adapted);
    let (effect, effect_mean) = diff(&p_adapted, &p_base);
    let f_tol = fb + 0.02;
    let q_tol = 1.25 * qb + 0.1;
    eprintln!(
        "{} tokens; f32: base {fb:.4}, adapter {fa:.4} (mean {fa_mean:.5}); quantized: base {qb:.3} (mean {qb_mean:.4}), adapter {qa:.3} (mean {qa_mean:.4}); the adapter moves PEFT's logits by {effect:.3} (mean {effect_mean:.4}); {}",
        tokens.len(),
        info["versions"]
    );

    // Same weights in f32: only the order of the sums may differ.
    assert!(fb < 0.1, "f32 base model differs from transformers by {fb}");
    assert!(
        fa <= f_tol,
        "with the adapter, our f32 logits differ from PEFT's by {fa} (base model alone: {fb})"
    );
    // The serving path: the quantized kernels' error, about as large with the adapter as without.
    assert!(
        qb < 3.0,
        "quantized base model differs from transformers' f32 by {qb}"
    );
    assert!(
        qa <= q_tol && qa_mean <= 1.25 * qb_mean + 0.02,
        "with the adapter, the served logits differ from PEFT's by {qa} (mean {qa_mean}); base model alone: {qb} (mean {qb_mean})"
    );
    // The adapter matters far beyond both tolerances.
    assert!(
        effect > 10.0 * f_tol && effect > 2.0 * q_tol && effect_mean > 3.0 * qb_mean,
        "the adapter moves PEFT's logits by only {effect} (mean {effect_mean}): tolerances {f_tol} (f32), {q_tol} (quantized)"
    );
    let (moved, _) = diff(&f_adapted, &f_base);
    assert!(
        moved > 10.0 * f_tol,
        "the adapter moves our logits by only {moved}"
    );

    let checked = same_argmax("f32", &f_adapted, &p_adapted, vocab, f_tol);
    assert!(
        checked * 10 >= tokens.len() * 9,
        "only {checked} of {} positions have a clear winner",
        tokens.len()
    );
    same_argmax("f32 base", &f_base, &p_base, vocab, f_tol);
    same_argmax("served", &q_adapted, &p_adapted, vocab, q_tol);
}
