//! A few LoRA steps on SmolLM2 (the default model, dequantized from its GGUF), and a few QLoRA
//! steps on it kept quantized (its Q4_1 projections and Q8_0 tied embedding as they are in the
//! file), over the sample datanet's prompt/response and text rows: each job finishes, its losses
//! are finite, the adapter it writes loads in the runtime and differs from the base model.

use openledger_factory::config::{DatasetSpec, Format, Method, TrainConfig};
use openledger_factory::{Job, NoProgress, Status};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn a_few_lora_steps_on_smollm2_and_the_sample_datanet() {
    a_few_steps(Method::Lora);
}

#[test]
fn a_few_qlora_steps_on_smollm2_and_the_sample_datanet() {
    a_few_steps(Method::Qlora);
}

fn a_few_steps(method: Method) {
    let model = std::env::var("OPENLEDGER_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join(openledger_model::DEFAULT_MODEL_PATH));
    assert!(
        model.exists(),
        "{} is missing: run ./scripts/fetch-model first",
        model.display()
    );
    let spec = |p: &str, name: &str| DatasetSpec {
        path: root().join(p),
        format: Format::Datanet,
        datanet: Some(name.into()),
    };
    let cfg = TrainConfig {
        method,
        base_model: model,
        datasets: vec![
            spec("datanets/sample/qa/erin.jsonl", "qa@1"),
            spec("datanets/sample/alice.jsonl", "alice@1"),
        ],
        max_samples: 0,
        max_steps: 2,
        per_device_train_batch_size: 2,
        cutoff_len: 64,
        learning_rate: 1e-3,
        val_size: 2.0,
        eval_steps: 2,
        sample_prompts: 1,
        sample_max_tokens: 4,
        ..TrainConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut job = Job::prepare(cfg, &dir.path().join("job")).unwrap();
    assert_eq!(job.split_sizes(), (118, 2));
    let out = job.run(&NoProgress, &AtomicBool::new(false)).unwrap();
    assert_eq!(out.status, Status::Finished);
    let m = &out.metrics;
    assert_eq!(m.steps, 2);
    assert!(m.train_loss.unwrap().is_finite() && m.val_loss.unwrap().is_finite());
    assert_ne!(
        m.val_loss, m.initial_val_loss,
        "{method:?}: two steps changed nothing"
    );
    assert_eq!(
        m.trainable_params, 2_442_240,
        "rank 8 on all 7 projections of 30 layers"
    );
    let adapter =
        openledger_model::peft::load(&out.adapter_dir.unwrap(), &openledger_model::Device::Cpu)
            .unwrap();
    let moved = adapter.pairs().any(|(_, _, p)| {
        p.b.flatten_all()
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    });
    assert!(moved, "{method:?}: B is still zero after training");
}
