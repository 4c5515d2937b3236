//! Training the tiny model end to end: it learns a planted fact (validation loss falls, the fact is
//! generated greedily after training and not before), writes every artifact of the job directory, and
//! a resumed run (after a stop, and after a crash past a checkpoint) ends with the same adapter bytes.

mod common;

use common::*;
use openledger_factory::progress::{Event, Progress};
use openledger_factory::{Job, NoProgress, Status};
use std::sync::atomic::{AtomicBool, Ordering};

#[test]
fn the_tiny_model_learns_a_planted_fact() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("model"));
    let data = dir.path().join("rows.jsonl");
    fact_rows(&data, 48);
    let job_dir = dir.path().join("job");
    let mut job = Job::prepare(quick_config(&model, &data), &job_dir).unwrap();
    assert_eq!(job.split_sizes(), (42, 6));
    let out = job.run(&NoProgress, &AtomicBool::new(false)).unwrap();
    assert_eq!(out.status, Status::Finished);
    let m = &out.metrics;
    let (first, last) = (m.initial_val_loss.unwrap(), m.val_loss.unwrap());
    assert!(last < first * 0.2, "validation loss {first} -> {last}");
    let samples: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job_dir.join("samples.json")).unwrap())
            .unwrap();
    let gen = |phase: &str| -> Vec<String> {
        samples[phase]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["generated"].as_str().unwrap().to_string())
            .collect()
    };
    let (before, after) = (gen("before"), gen("after"));
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|g| g.trim() == FACT), "after: {after:?}");
    assert!(
        before.iter().all(|g| !g.contains("zorp")),
        "before: {before:?}"
    );
    for f in [
        "config.toml",
        "data.jsonl",
        "log.jsonl",
        "loss.png",
        "loss.svg",
        "metrics.json",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter-best/adapter_model.safetensors",
        "checkpoints/LATEST",
    ] {
        assert!(job_dir.join(f).is_file(), "{f} missing");
    }
    assert!(m.peak_rss_bytes.unwrap() > 0);
    assert_eq!(m.steps, 40);
    // The frozen products' precision is recorded: bf16 where the CPU has AVX512_BF16 (unless
    // OPENLEDGER_TRAIN_PRECISION says otherwise), f32 elsewhere.
    let want = openledger_factory::bf16::Precision::from_env().unwrap();
    assert_eq!(m.precision, want.name());
    // The written config reproduces the job.
    let again =
        openledger_factory::TrainConfig::from_toml_file(&job_dir.join("config.toml")).unwrap();
    assert_eq!(again.max_steps, 40);
    assert!(again.base_model.is_absolute());
    // The adapter loads in the runtime and generates the fact from a fresh process's view.
    let adapter =
        openledger_model::peft::load(&job_dir.join("adapter"), &openledger_model::Device::Cpu)
            .unwrap();
    assert_eq!(adapter.config.r, 8);
    assert_eq!(adapter.config.targets.len(), 7);
}

/// Raises the stop flag after a given step.
struct StopAt<'a>(u64, &'a AtomicBool);

impl Progress for StopAt<'_> {
    fn event(&self, e: &Event) {
        if let Event::Step(s) = e {
            if s.step == self.0 {
                self.1.store(true, Ordering::SeqCst);
            }
        }
    }
}

fn adapter_bytes(job: &std::path::Path) -> Vec<u8> {
    std::fs::read(job.join("adapter/adapter_model.safetensors")).unwrap()
}

#[test]
fn resume_gives_the_same_adapter_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("model"));
    let data = dir.path().join("rows.jsonl");
    fact_rows(&data, 30);
    let mut cfg = quick_config(&model, &data);
    // Two epochs and a bit, dropout on, accumulation, so data order, masks and moments all matter.
    cfg.max_steps = 0;
    cfg.num_train_epochs = 2.5;
    cfg.gradient_accumulation_steps = 2;
    cfg.per_device_train_batch_size = 3;
    cfg.lora_dropout = 0.1;
    cfg.save_steps = 3;
    cfg.val_size = 0.2;
    cfg.learning_rate = 3e-3;

    let whole = dir.path().join("whole");
    let mut job = Job::prepare(cfg.clone(), &whole).unwrap();
    let total = job.total_steps();
    assert_eq!(
        total, 10,
        "24 train examples, micro-batches of 3 in steps of 2 → 4 steps per epoch"
    );
    job.run(&NoProgress, &AtomicBool::new(false)).unwrap();

    // Stopped at step 5 (between checkpoints), resumed.
    let stopped = dir.path().join("stopped");
    let stop = AtomicBool::new(false);
    let out = Job::prepare(cfg.clone(), &stopped)
        .unwrap()
        .run(&StopAt(5, &stop), &stop)
        .unwrap();
    assert_eq!(out.status, Status::Stopped);
    assert_eq!(out.metrics.steps, 5);
    assert!(!stopped.join("adapter").exists());
    let mut resumed = Job::resume(&stopped).unwrap();
    assert_eq!(resumed.state().step, 5);
    resumed.run(&NoProgress, &AtomicBool::new(false)).unwrap();
    assert!(
        adapter_bytes(&whole) == adapter_bytes(&stopped),
        "stop + resume changed the adapter"
    );

    // Crashed after step 7: only the checkpoint of step 6 survives, the log ran further.
    let crashed = dir.path().join("crashed");
    let stop = AtomicBool::new(false);
    Job::prepare(cfg.clone(), &crashed)
        .unwrap()
        .run(&StopAt(7, &stop), &stop)
        .unwrap();
    std::fs::remove_dir_all(crashed.join("checkpoints/step-00000007")).unwrap();
    std::fs::write(crashed.join("checkpoints/LATEST"), "step-00000006").unwrap();
    let mut resumed = Job::resume(&crashed).unwrap();
    assert_eq!(resumed.state().step, 6);
    resumed.run(&NoProgress, &AtomicBool::new(false)).unwrap();
    assert!(
        adapter_bytes(&whole) == adapter_bytes(&crashed),
        "crash + resume changed the adapter"
    );
    // The resumed log has each step once.
    let log = std::fs::read_to_string(crashed.join("log.jsonl")).unwrap();
    let steps: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![5, 10]);
    // …and the same losses, learning rates and gradient norms as the uninterrupted run's.
    let numbers = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_s");
                v
            })
            .collect()
    };
    let whole_log = std::fs::read_to_string(whole.join("log.jsonl")).unwrap();
    assert_eq!(numbers(&log), numbers(&whole_log));
}

#[test]
fn early_stopping_ends_training_when_validation_loss_stops_improving() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir.path().join("model"));
    let data = dir.path().join("rows.jsonl");
    fact_rows(&data, 24);
    let mut cfg = quick_config(&model, &data);
    // Steps too small to change an f32 weight: the validation loss stays exactly where it was.
    cfg.learning_rate = 1e-30;
    cfg.max_steps = 20;
    cfg.eval_steps = 2;
    cfg.early_stopping_patience = 2;
    cfg.packing = true;
    let job_dir = dir.path().join("job");
    let out = Job::prepare(cfg, &job_dir)
        .unwrap()
        .run(&NoProgress, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(out.status, Status::EarlyStopped);
    assert_eq!(
        out.metrics.steps, 4,
        "evaluations at 0 (best), 2 and 4 (no better twice)"
    );
    assert_eq!(out.metrics.best_step, Some(0));
    assert!(job_dir.join("adapter/adapter_model.safetensors").is_file());
    // A finished job resumed stays finished.
    let again = Job::resume(&job_dir)
        .unwrap()
        .run(&NoProgress, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(
        (again.status, again.metrics.steps),
        (Status::EarlyStopped, 4)
    );
}
