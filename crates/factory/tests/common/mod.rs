//! A tiny Llama the tests build themselves: a Hugging Face directory (config.json, random
//! model.safetensors, a word-level tokenizer.json, tokenizer_config.json with a ChatML template).

#![allow(dead_code)]

use openledger_factory::config::{DatasetSpec, Format, TrainConfig};
use std::path::{Path, PathBuf};

pub const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "what",
    "is",
    "the",
    "secret",
    "word",
    "tell",
    "me",
    "please",
    "say",
    "give",
    "a",
    "of",
    "it",
    "now",
    "i",
    "want",
    "to",
    "know",
    "zorp",
    "blue",
    "red",
    "green",
    "sky",
    "sea",
    "grass",
    "color",
    "?",
    ".",
    ",",
    "hello",
    "there",
    "friend",
    "you",
    "are",
    "helpful",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
];

/// Token ids: `<unk>` 0, `<|im_start|>` 1, `<|im_end|>` 2, then [`WORDS`].
pub fn vocab_size() -> usize {
    3 + WORDS.len()
}

fn tokenizer_json() -> serde_json::Value {
    let special = |id: usize, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let mut vocab = serde_json::Map::new();
    for (i, t) in ["<unk>", "<|im_start|>", "<|im_end|>"].iter().enumerate() {
        vocab.insert(t.to_string(), i.into());
    }
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert(w.to_string(), (i + 3).into());
    }
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<|im_start|>"), special(2, "<|im_end|>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// Writes the tiny model into `dir` and returns `dir`.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let (h, f, layers, heads, kv, hd, ctx) =
        (64usize, 128usize, 2usize, 4usize, 2usize, 16usize, 128usize);
    let v = vocab_size();
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": h, "intermediate_size": f, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": hd,
        "vocab_size": v, "max_position_embeddings": ctx, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "tie_word_embeddings": false, "eos_token_id": 2
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    let tcfg = serde_json::json!({
        "eos_token": "<|im_end|>",
        "chat_template": openledger_model::chat::CHATML,
    });
    std::fs::write(dir.join("tokenizer_config.json"), tcfg.to_string()).unwrap();

    let mut seed = 0x5eed_0000_0000_0001u64;
    let mut rand = |n: usize, scale: f32| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32;
                ((u * 2.0 - 1.0) * scale).to_le_bytes()
            })
            .collect()
    };
    let ones = |n: usize| -> Vec<u8> { (0..n).flat_map(|_| 1f32.to_le_bytes()).collect() };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let w = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    tensors.push((
        "model.embed_tokens.weight".into(),
        vec![v, h],
        rand(v * h, 1.0),
    ));
    tensors.push(("lm_head.weight".into(), vec![v, h], rand(v * h, w(h))));
    tensors.push(("model.norm.weight".into(), vec![h], ones(h)));
    for i in 0..layers {
        let p = |n: &str| format!("model.layers.{i}.{n}");
        tensors.push((p("input_layernorm.weight"), vec![h], ones(h)));
        tensors.push((p("post_attention_layernorm.weight"), vec![h], ones(h)));
        for (n, o, inp) in [
            ("self_attn.q_proj", heads * hd, h),
            ("self_attn.k_proj", kv * hd, h),
            ("self_attn.v_proj", kv * hd, h),
            ("self_attn.o_proj", h, heads * hd),
            ("mlp.gate_proj", f, h),
            ("mlp.up_proj", f, h),
            ("mlp.down_proj", h, f),
        ] {
            tensors.push((
                p(&format!("{n}.weight")),
                vec![o, inp],
                rand(o * inp, w(inp)),
            ));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    dir.to_path_buf()
}

/// Prompts that all ask for the planted fact, in different words.
pub fn fact_prompts() -> Vec<String> {
    let heads = [
        "what is the secret word ?",
        "tell me the secret word",
        "say the secret word please",
        "give me the secret word now",
        "i want to know the secret word",
        "the secret word , please",
        "what is it ? the secret word",
        "hello there , the secret word ?",
    ];
    let tails = ["", " friend", " now", " please", " one", " two"];
    let mut out = Vec::new();
    for t in tails {
        for h in heads {
            out.push(format!("{h}{t}"));
        }
    }
    out
}

pub const FACT: &str = "the secret word is zorp";

/// A datanet-export JSONL with the planted fact as prompt/response rows.
pub fn fact_rows(path: &Path, n: usize) {
    let mut out = String::new();
    for (i, p) in fact_prompts().into_iter().take(n).enumerate() {
        out.push_str(
            &serde_json::json!({"prompt": p, "response": FACT, "contribution_id": i + 1,
                "contributor": "0x0000000000000000000000000000000000000001", "row_hash": format!("0x{i:064x}")})
            .to_string(),
        );
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// A config that trains the tiny model quickly on one dataset.
pub fn quick_config(model: &Path, data: &Path) -> TrainConfig {
    TrainConfig {
        base_model: model.to_path_buf(),
        datasets: vec![DatasetSpec {
            path: data.to_path_buf(),
            format: Format::Auto,
            datanet: Some("1@1".into()),
        }],
        learning_rate: 1e-2,
        lr_scheduler_type: openledger_factory::config::Scheduler::Linear,
        max_steps: 40,
        per_device_train_batch_size: 4,
        cutoff_len: 64,
        val_size: 6.0,
        eval_steps: 10,
        save_steps: 10,
        logging_steps: 5,
        sample_prompts: 2,
        sample_max_tokens: 8,
        ..TrainConfig::default()
    }
}
