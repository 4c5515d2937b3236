//! The training step: the model builder exports the datanet's latest version from the node and
//! fine-tunes a LoRA adapter on it with ModelFactory (its progress bar on a terminal), in rounds
//! (each from the start, twice as long as the last, within --max-train-steps) until the adapter,
//! run locally, answers every planted-fact question with the fact's distinctive phrase.
//!
//! The questions ask the model to repeat a planted sentence ("Repeat this sentence exactly: …"):
//! on two CPU cores a few minutes of LoRA training does not teach SmolLM2-135M to recall a fact
//! from a bare question (the loss is still ≈ 4.5 after ten steps), while a repeated sentence is
//! a generated answer that quotes one contributor's row, which is what attribution pays for.

use super::Ctx;
use anyhow::{bail, Context, Result};
use openledger_factory::config::{DatasetSpec, Format, TrainConfig};
use openledger_factory::progress::{Event, Progress};
use openledger_factory::{Job, TerminalProgress};
use openledger_model::chat::Message;
use openledger_model::{generate, GenerateParams, SamplingParams};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A planted fact the app asks about.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Question {
    /// Its contributor (a demo account name).
    pub contributor: &'static str,
    /// Its distinctive phrase: the answer must contain it.
    pub phrase: &'static str,
    /// The prompt sent.
    pub prompt: String,
}

/// One planted fact of each sample contributor (datanets/sample/README.md, "Planted facts").
const FACTS: &[(&str, &str, &str)] = &[
    ("alice", "Thursby lid-tap", "Under the Thursby lid-tap, a queenright colony answers two knocks on the roof with a short rise in sound that settles within about four seconds."),
    ("bob", "Ashcombe candy board", "The Ashcombe candy board uses five parts white sugar to one part water, boiled to the soft-ball stage and poured about three centimetres deep."),
    ("carol", "Orlin nine-square count", "The Orlin nine-square count takes only the centre square and the four corner squares of a three-by-three grid drawn on the board."),
    ("dave", "Tillingham verge mix", "The Tillingham verge mix is sown in early autumn at two grams per square metre onto scraped, weed-free ground and is cut only once, in late September."),
];

/// Most tokens an answer may have.
pub const MAX_ANSWER_TOKENS: usize = 64;

/// The questions the demo asks, one per sample contributor.
pub fn questions() -> Vec<Question> {
    FACTS
        .iter()
        .map(|&(contributor, phrase, sentence)| Question {
            contributor,
            phrase,
            prompt: format!("Repeat this sentence exactly: {sentence}"),
        })
        .collect()
}

/// Whether `answer` states the question's fact.
pub fn states_fact(q: &Question, answer: &str) -> bool {
    answer.to_lowercase().contains(&q.phrase.to_lowercase())
}

/// Forwards to the terminal progress and keeps the loss curve.
struct Recorder<'a> {
    terminal: TerminalProgress,
    round: u64,
    loss: &'a Mutex<Vec<super::report::LossPoint>>,
}

impl Progress for Recorder<'_> {
    fn event(&self, event: &Event) {
        match event {
            Event::Step(s) => {
                if let Ok(mut l) = self.loss.lock() {
                    l.push(super::report::LossPoint {
                        round: self.round,
                        step: s.step,
                        loss: Some(s.loss),
                        val_loss: None,
                    });
                }
            }
            Event::Eval(e) => {
                if let Ok(mut l) = self.loss.lock() {
                    l.push(super::report::LossPoint {
                        round: self.round,
                        step: e.step,
                        loss: None,
                        val_loss: Some(e.val_loss),
                    });
                }
            }
            _ => {}
        }
        self.terminal.event(event);
    }
}

/// Exports datanet `id` version `version` into `dir` and returns its dataset spec.
fn export(ctx: &Ctx, id: u64, version: u64, dir: &Path) -> Result<DatasetSpec> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{id}@{version}.jsonl"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?,
    );
    ctx.session()
        .rest(false)?
        .get_to(
            &format!("/v1/datanets/{id}/export?version={version}"),
            &mut file,
        )
        .with_context(|| format!("exporting datanet {id} version {version}"))?;
    std::io::Write::flush(&mut file)?;
    Ok(DatasetSpec {
        path,
        format: Format::Datanet,
        datanet: Some(format!("{id}@{version}")),
    })
}

/// The job's settings for a round of `steps` steps.
fn config(model: &Path, data: DatasetSpec, steps: u64) -> TrainConfig {
    TrainConfig {
        base_model: model.to_path_buf(),
        datasets: vec![data],
        lora_rank: 8,
        lora_alpha: 16.0,
        learning_rate: 2e-4,
        max_steps: steps,
        per_device_train_batch_size: 4,
        cutoff_len: 128,
        val_size: 8.0,
        logging_steps: 1,
        save_steps: steps,
        eval_steps: steps,
        sample_prompts: 1,
        ..TrainConfig::default()
    }
}

/// Answers every question with `adapter_dir` applied to the base model, greedily.
fn answer_locally(model: &Path, adapter_dir: &Path, qs: &[Question]) -> Result<Vec<String>> {
    let loaded = crate::ai::load_model(&crate::ai::ModelArgs {
        model: model.to_path_buf(),
        adapter: Some(adapter_dir.to_path_buf()),
        threads: None,
        device: None,
    })?;
    let mut out = Vec::new();
    for q in qs {
        let ids = crate::ai::chat_ids(&loaded.tokenizer, &[Message::new("user", &q.prompt)])?;
        let params = GenerateParams {
            sampling: SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            max_tokens: MAX_ANSWER_TOKENS,
            stop: Vec::new(),
            stop_at_eos: true,
        };
        let g = generate(
            &loaded.model,
            &loaded.tokenizer,
            ids,
            params,
            loaded.adapter.clone(),
            &mut |_| true,
        )?;
        out.push(g.text);
    }
    Ok(out)
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map(|l| format!("{l:.3}")).unwrap_or_else(|| "-".into())
}

/// Trains in rounds; returns the job directory of the adapter that answered every question.
pub fn train(ctx: &mut Ctx, model: &Path) -> Result<PathBuf> {
    let id = ctx.report.datanet_id;
    let version = ctx.report.datanet_version;
    let work = ctx.home.join("factory");
    let data = export(ctx, id, version, &work.join("datanets"))?;
    println!(
        "  builder exported datanet {id} version {version} ({})",
        data.path.display()
    );
    let qs = questions();
    let loss = Mutex::new(Vec::new());
    let mut steps = ctx.args.round_steps;
    let mut spent = 0;
    let mut round = 0;
    loop {
        round += 1;
        let dir = work.join(format!("round-{round}"));
        println!(
            "  round {round}: {steps} steps (LoRA rank 8, batch 4, cutoff 128, lr 2e-4) in {}",
            dir.display()
        );
        let mut job = Job::prepare(config(model, data.clone(), steps), &dir)?;
        let outcome = job.run(
            &Recorder {
                terminal: TerminalProgress::new(),
                round,
                loss: &loss,
            },
            &std::sync::atomic::AtomicBool::new(false),
        )?;
        spent += steps;
        let adapter = outcome
            .adapter_dir
            .context("the training job stopped before its last step")?;
        let m = &outcome.metrics;
        println!(
            "  round {round}: train loss {}, val loss {} → {}, {:.1} s, {:.0} tokens/s",
            fmt_loss(m.train_loss),
            fmt_loss(m.initial_val_loss),
            fmt_loss(m.val_loss),
            m.train_seconds,
            m.tokens_per_s
        );
        let answers = answer_locally(model, &adapter, &qs)?;
        let mut ok = true;
        for (q, a) in qs.iter().zip(&answers) {
            let pass = states_fact(q, a);
            ok &= pass;
            println!(
                "    {} {:<24} {:?}",
                if pass { "ok  " } else { "MISS" },
                q.phrase,
                a
            );
        }
        ctx.report.training.push(super::report::TrainRound {
            round,
            steps,
            train_loss: m.train_loss,
            val_loss: m.val_loss,
            seconds: m.train_seconds,
            answers: answers.clone(),
            passed: ok,
        });
        if ok {
            ctx.report.loss = loss.into_inner().unwrap_or_default();
            return Ok(dir);
        }
        if spent + steps * 2 > ctx.args.max_train_steps {
            ctx.report.loss = loss.into_inner().unwrap_or_default();
            bail!(
                "after {spent} training steps in {round} rounds the adapter still does not answer \
                 every planted-fact question (raise --max-train-steps)"
            );
        }
        steps *= 2;
    }
}
