//! What users bring: LLaMA-Factory alpaca and sharegpt files load with the loss on the responses
//! only; bad settings and unusable data are refused before anything starts, with a message that says
//! what to change, and no job directory is created.

mod common;

use common::*;
use openledger_factory::config::{DatasetSpec, Format, Method, TrainConfig};
use openledger_factory::{Error, Job};
use openledger_model::Tokenizer;
use std::path::Path;

fn spec(path: &Path, format: Format) -> DatasetSpec {
    DatasetSpec {
        path: path.to_path_buf(),
        format,
        datanet: None,
    }
}

/// The text of the target tokens, and of the others.
fn parts(tok: &Tokenizer, e: &openledger_factory::data::Encoded) -> (String, String) {
    let pick = |want: bool| -> Vec<u32> {
        e.tokens
            .iter()
            .zip(&e.targets)
            .filter(|(_, &t)| t == want)
            .map(|(&id, _)| id)
            .collect()
    };
    (
        tok.decode(&pick(true), false).unwrap(),
        tok.decode(&pick(false), false).unwrap(),
    )
}

#[test]
fn alpaca_and_sharegpt_train_on_the_responses_only() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("model"));
    let tok = Tokenizer::for_model(&model).unwrap();
    let alpaca = dir.path().join("alpaca.json");
    std::fs::write(
        &alpaca,
        serde_json::json!([
            {"instruction": "what is the color of the sky", "input": "", "output": "blue"},
            {"instruction": "tell me the color", "input": "of the sea", "output": "blue",
             "system": "you are helpful", "history": [["hello there", "hello friend"]]},
            {"instruction": "say", "output": ""}
        ])
        .to_string(),
    )
    .unwrap();
    let sharegpt = dir.path().join("sharegpt.jsonl");
    std::fs::write(
        &sharegpt,
        [
            serde_json::json!({"conversations": [
                {"from": "human", "value": "what is the color of grass"}, {"from": "gpt", "value": "green"},
                {"from": "human", "value": "and the sky"}, {"from": "gpt", "value": "blue sky"}]}),
            serde_json::json!({"system": "you are helpful", "conversations": [
                {"from": "human", "value": "one two"}, {"from": "gpt", "value": "three four"}]}),
            serde_json::json!({"conversations": [{"from": "gpt", "value": "red"}]}),
        ]
        .map(|v| v.to_string())
        .join("\n"),
    )
    .unwrap();
    let cfg = TrainConfig {
        base_model: model.clone(),
        datasets: vec![
            spec(&alpaca, Format::Alpaca),
            spec(&sharegpt, Format::Sharegpt),
        ],
        val_size: 0.0,
        cutoff_len: 128,
        ..TrainConfig::default()
    };
    let job = Job::prepare(cfg, &dir.path().join("job")).unwrap();
    assert_eq!(
        job.rejected_rows(),
        2,
        "the empty alpaca output and the sharegpt row starting with gpt"
    );
    let rejected = std::fs::read_to_string(dir.path().join("job/rejected.jsonl")).unwrap();
    assert!(
        rejected.contains("\"output\\\" is empty") && rejected.contains("alternate"),
        "{rejected}"
    );
    let (train, val) = job.examples();
    assert_eq!((train.len(), val.len()), (4, 0));
    let got: Vec<(String, String)> = train.iter().map(|e| parts(&tok, e)).collect();
    let want_targets = [
        "blue <|im_end|>",
        "hello friend <|im_end|> blue <|im_end|>",
        "green <|im_end|> blue sky <|im_end|>",
        "three four <|im_end|>",
    ];
    for ((targets, _), want) in got.iter().zip(want_targets) {
        assert_eq!(targets, want);
    }
    // Context: system, history, the instruction joined with its input, in ChatML.
    assert_eq!(
        got[1].1,
        "<|im_start|> system you are helpful <|im_end|> <|im_start|> user hello there <|im_end|> <|im_start|> assistant <|im_start|> user tell me the color of the sea <|im_end|> <|im_start|> assistant"
    );
    assert!(got[3].1.starts_with("<|im_start|> system you are helpful"));
}

fn refused(cfg: TrainConfig, job: &Path, needles: &[&str]) {
    match Job::prepare(cfg, job) {
        Err(Error::Invalid(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "{msg:?} should mention {n:?}");
            }
        }
        Err(other) => panic!("refused with the wrong kind of error: {other}"),
        Ok(_) => panic!("accepted; should be refused mentioning {needles:?}"),
    }
    assert!(!job.exists(), "a refused job must leave nothing behind");
}

#[test]
fn bad_hyperparameters_and_data_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("model"));
    let data = dir.path().join("rows.jsonl");
    fact_rows(&data, 12);
    let job = dir.path().join("job");
    let ok = || quick_config(&model, &data);
    let with = |f: &dyn Fn(&mut TrainConfig)| {
        let mut c = ok();
        f(&mut c);
        c
    };
    refused(with(&|c| c.lora_rank = 0), &job, &["lora_rank is 0", "8"]);
    refused(
        with(&|c| c.learning_rate = 0.0),
        &job,
        &["learning_rate is 0", "5e-5"],
    );
    refused(with(&|c| c.learning_rate = -1e-4), &job, &["learning_rate"]);
    refused(
        with(&|c| c.learning_rate = f64::NAN),
        &job,
        &["learning_rate", "finite"],
    );
    refused(
        with(&|c| c.lora_target = "q_proj,qkv_proj".into()),
        &job,
        &["qkv_proj", "all"],
    );
    refused(
        with(&|c| c.cutoff_len = 1024),
        &job,
        &["cutoff_len is 1024", "context of 128", "128 or less"],
    );
    refused(with(&|c| c.val_size = 1.5), &job, &["val_size"]);
    refused(
        with(&|c| c.val_size = 12.0),
        &job,
        &["holds out 12", "lower val_size"],
    );
    refused(with(&|c| c.lora_dropout = 1.0), &job, &["lora_dropout"]);
    refused(
        with(&|c| c.per_device_train_batch_size = 0),
        &job,
        &["per_device_train_batch_size"],
    );
    refused(
        with(&|c| {
            c.max_steps = 0;
            c.num_train_epochs = 0.0
        }),
        &job,
        &["num_train_epochs"],
    );
    refused(
        with(&|c| {
            c.val_size = 0.0;
            c.early_stopping_patience = 2
        }),
        &job,
        &["validation set"],
    );
    refused(
        with(&|c| {
            c.method = Method::Qlora;
            c.quantization_bit = Some(3)
        }),
        &job,
        &["quantization_bit is 3", "4 (Q4_1) or 8 (Q8_0)"],
    );
    refused(
        with(&|c| c.quantization_bit = Some(4)),
        &job,
        &["method is lora", "method = \"qlora\""],
    );
    refused(
        with(&|c| c.base_model = dir.path().join("nope.gguf")),
        &job,
        &["does not exist"],
    );
    refused(with(&|c| c.datasets.clear()), &job, &["no datasets"]);
    // Data: empty, all rejected (empty responses), or every response beyond the cutoff.
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    refused(
        with(&|c| c.datasets = vec![spec(&empty, Format::Auto)]),
        &job,
        &["no rows"],
    );
    let blank = dir.path().join("blank.jsonl");
    std::fs::write(&blank, "{\"prompt\":\"hello\",\"response\":\"\"}\n{\"prompt\":\"hello\",\"response\":\" \"}\nnot json\n").unwrap();
    refused(
        with(&|c| c.datasets = vec![spec(&blank, Format::Auto)]),
        &job,
        &["all 3 rows were rejected", "empty", "not valid JSON"],
    );
    refused(
        with(&|c| c.cutoff_len = 8),
        &job,
        &["all 12 rows were rejected", "raise cutoff_len"],
    );
    // A directory that already holds a job.
    Job::prepare(ok(), &job).unwrap();
    match Job::prepare(ok(), &job) {
        Err(Error::Invalid(m)) => assert!(m.contains("already holds a job"), "{m}"),
        _ => panic!("a second job in the same directory was accepted"),
    }
}
