//! Generation on SmolLM2 as a user sees it: stop strings, streaming, limits, seeds, batching, chat
//! templates and malformed model files.

mod common;
use common::{model, model_path};

use openledger_model::chat::{self, Message};
use openledger_model::{
    generate, generate_batch, load, FinishReason, GenerateParams, SamplingParams,
};

fn chat_ids(q: &str) -> Vec<u32> {
    let (_, tok) = model();
    let text = chat::render(
        tok.chat_template().unwrap(),
        &[Message::new("user", q)],
        true,
        "",
        "",
    )
    .unwrap();
    tok.encode(&text, true).unwrap()
}

fn greedy(max: usize) -> GenerateParams {
    GenerateParams {
        max_tokens: max,
        ..Default::default()
    }
}

#[test]
fn chat_template_comes_from_the_gguf() {
    let (_, tok) = model();
    let text = chat::render(
        tok.chat_template().unwrap(),
        &[Message::new("user", "Hi")],
        true,
        "",
        "",
    )
    .unwrap();
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text}"
    );
    // Special tokens in a chat prompt become single ids; in plain user text they stay text.
    assert_eq!(tok.encode("<|im_start|>", true).unwrap(), vec![1]);
    assert!(tok.encode("<|im_start|>", false).unwrap().len() > 1);
}

#[test]
fn streaming_pieces_add_up_to_the_text_and_max_tokens_is_respected() {
    let (m, tok) = model();
    let mut streamed = String::new();
    let g = generate(
        m,
        tok,
        chat_ids("Write a short poem about the sea."),
        greedy(24),
        None,
        &mut |p| {
            streamed.push_str(p);
            true
        },
    )
    .unwrap();
    assert_eq!(streamed, g.text);
    assert_eq!(g.tokens.len(), 24);
    assert_eq!(g.finish, FinishReason::Length);
    assert_eq!(tok.decode(&g.tokens, true).unwrap(), g.text);
}

#[test]
fn stop_strings_end_generation_and_are_not_emitted() {
    let (m, tok) = model();
    let prompt = chat_ids("Count from 1 to 20, separated by commas.");
    let full = generate(m, tok, prompt.clone(), greedy(40), None, &mut |_| true).unwrap();
    // Stop at the first comma-free fragment the model produces after a few tokens.
    let stop = full
        .text
        .char_indices()
        .nth(6)
        .map(|(i, _)| full.text[i..].chars().take(2).collect::<String>())
        .unwrap();
    let mut streamed = String::new();
    let params = GenerateParams {
        stop: vec![stop.clone()],
        ..greedy(40)
    };
    let g = generate(m, tok, prompt, params, None, &mut |p| {
        streamed.push_str(p);
        true
    })
    .unwrap();
    assert_eq!(g.finish, FinishReason::Stop);
    assert!(
        !g.text.contains(&stop),
        "{:?} still contains {stop:?}",
        g.text
    );
    assert!(full.text.starts_with(&g.text));
    assert_eq!(
        streamed, g.text,
        "text of the stop string must never be streamed"
    );
}

#[test]
fn the_callback_can_cancel() {
    let (m, tok) = model();
    let mut calls = 0;
    let g = generate(
        m,
        tok,
        chat_ids("Tell me a story."),
        greedy(50),
        None,
        &mut |_| {
            calls += 1;
            calls < 3
        },
    )
    .unwrap();
    assert_eq!(g.finish, FinishReason::Cancelled);
    assert!(g.tokens.len() < 50);
}

#[test]
fn sampling_is_reproducible_by_seed_and_varies_across_seeds() {
    let (m, tok) = model();
    let run = |seed| {
        let params = GenerateParams {
            sampling: SamplingParams {
                temperature: 1.0,
                top_k: 40,
                top_p: 0.95,
                seed,
                ..Default::default()
            },
            max_tokens: 16,
            stop: vec![],
            stop_at_eos: false,
        };
        generate(
            m,
            tok,
            chat_ids("Name an animal."),
            params,
            None,
            &mut |_| true,
        )
        .unwrap()
        .tokens
    };
    assert_eq!(run(1), run(1));
    assert!(
        (2..6).any(|s| run(s) != run(1)),
        "different seeds should give different samples"
    );
}

#[test]
fn batched_generation_equals_one_at_a_time() {
    let (m, tok) = model();
    let prompts = [
        "What is 2+2?",
        "Write one sentence about Rust.",
        "Hi",
        "List three fruits, please, with a short description of each one.",
    ];
    let single: Vec<_> = prompts
        .iter()
        .map(|q| {
            generate(m, tok, chat_ids(q), greedy(12), None, &mut |_| true)
                .unwrap()
                .tokens
        })
        .collect();
    let batch = generate_batch(
        m,
        tok,
        prompts
            .iter()
            .map(|q| (chat_ids(q), greedy(12), None))
            .collect(),
    )
    .unwrap();
    assert_eq!(batch.len(), single.len(), "one generation per prompt");
    for (i, (b, s)) in batch.iter().zip(&single).enumerate() {
        assert_eq!(&b.tokens, s, "prompt {i} differs when batched");
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let (m, tok) = model();
    let err = generate(m, tok, vec![], greedy(4), None, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let err = m.score(&[60_000], None).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    let too_long = vec![5u32; m.config.max_position + 1];
    assert!(generate(m, tok, too_long, greedy(4), None, &mut |_| true)
        .unwrap_err()
        .to_string()
        .contains("context"));
}

#[test]
fn malformed_model_files_are_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let dev = openledger_model::Device::Cpu;
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(&garbage, b"definitely not a gguf file").unwrap();
    let err = load::load(&garbage, &dev).unwrap_err().to_string();
    assert!(err.contains("garbage.gguf"), "{err}");
    // A real header whose tensor data is cut off.
    let bytes = std::fs::read(model_path()).unwrap();
    let cut = dir.path().join("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load::load(&cut, &dev).unwrap_err().to_string();
    assert!(
        err.contains("truncated") || err.contains("remaining"),
        "{err}"
    );
    assert!(load::load(&dir.path().join("missing.gguf"), &dev)
        .unwrap_err()
        .to_string()
        .contains("fetch-model"));
    // A model directory without weights.
    std::fs::write(dir.path().join("config.json"), "{}").unwrap();
    assert!(load::load(dir.path(), &dev).is_err());
}
