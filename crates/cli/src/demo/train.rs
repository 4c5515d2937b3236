//! The training step: the model builder exports the latest versions of both demo datanets from
//! the node (the text datanet and the prompt/response datanet whose rows ask about each planted
//! fact) and fine-tunes a LoRA adapter on them with ModelFactory (its progress bar on a
//! terminal), in rounds (each from the start, twice as long as the last, within
//! --max-train-steps) until the learning check ([`super::learning`]) shows that the adapter
//! **answers** every planted-fact question the app will ask: its greedy answer states the fact,
//! and the fact's sentence, as the answer to its question, is at least
//! [`super::learning::MARGIN_NATS`] nats per token more likely than under the base model.
//!
//! The training set is both datanet versions plus the prompt/response rows of the asked
//! questions again, [`FOCUS_REPEATS`] times (from the same export, so the provenance is those
//! versions): a few dozen steps on two CPU cores read only a fraction of the datanets once, and
//! the builder wants the adapter to know the facts it will be paid for. Prompt/response rows
//! train through the chat template with the loss on the response only, which is what teaches
//! recall from a bare question (text rows alone only raise the sentence's likelihood as text).

use super::{learning, Ctx};
use anyhow::{bail, Context, Result};
use openledger_factory::config::{DatasetSpec, Format, TrainConfig};
use openledger_factory::progress::{Event, Progress};
use openledger_factory::{Job, TerminalProgress};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A planted fact the app asks about.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Question {
    /// Its contributor (a demo account name).
    pub contributor: &'static str,
    /// Its distinctive phrase (in the question too).
    pub phrase: &'static str,
    /// The question sent: the prompt of the fact's row in the prompt/response datanet.
    pub prompt: String,
    /// A detail of the fact that the question does not give away: an answer states the fact
    /// when it holds the phrase and this.
    pub detail: &'static str,
    /// The fact's verbatim sentence (the row's response; the learning check scores it).
    pub sentence: &'static str,
}

/// One planted fact of each sample contributor (datanets/sample/README.md, "Planted facts";
/// their questions are rows of datanets/sample/qa-facts/NAME.jsonl): contributor, phrase,
/// question, detail, the verbatim sentence.
const FACTS: &[(&str, &str, &str, &str, &str)] = &[
    ("alice", "Thursby lid-tap", "What is the Thursby lid-tap?", "four seconds",
     "Under the Thursby lid-tap, a queenright colony answers two knocks on the roof with a short rise in sound that settles within about four seconds, while a queenless one keeps roaring for far longer."),
    ("bob", "Ashcombe candy board", "What is the Ashcombe candy board?", "five parts white sugar",
     "The Ashcombe candy board uses five parts white sugar to one part water, boiled to the soft-ball stage and poured about three centimetres deep, which gives a colony roughly two kilos of emergency food."),
    ("carol", "Orlin nine-square count", "What is the Orlin nine-square count?", "1.8",
     "The Orlin nine-square count takes only the centre square and the four corner squares of a three-by-three grid drawn on the board and multiplies their total by 1.8 to estimate the whole board."),
    ("dave", "Tillingham verge mix", "What is the Tillingham verge mix?", "two grams per square metre",
     "The Tillingham verge mix is sown in early autumn at two grams per square metre onto scraped, weed-free ground and is cut only once, in late September, with the cuttings raked off."),
];

/// How many more times the prompt/response rows of the asked questions are in the training set.
pub const FOCUS_REPEATS: usize = 96;

/// The LoRA learning rate (a tiny run on two cores: 32 steps teach the four answers).
const LEARNING_RATE: f64 = 4e-3;

/// Most tokens an answer may have.
pub const MAX_ANSWER_TOKENS: usize = 64;

/// The questions the demo asks, one per sample contributor.
pub fn questions() -> Vec<Question> {
    FACTS
        .iter()
        .map(
            |&(contributor, phrase, question, detail, sentence)| Question {
                contributor,
                phrase,
                prompt: question.to_string(),
                detail,
                sentence,
            },
        )
        .collect()
}

/// Whether `answer` states the question's fact: its phrase and the detail the question does
/// not give away (case-insensitive).
pub fn states_fact(q: &Question, answer: &str) -> bool {
    let a = answer.to_lowercase();
    a.contains(&q.phrase.to_lowercase()) && a.contains(&q.detail.to_lowercase())
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
fn config(model: &Path, datasets: Vec<DatasetSpec>, steps: u64) -> TrainConfig {
    TrainConfig {
        base_model: model.to_path_buf(),
        datasets,
        lora_rank: 8,
        lora_alpha: 16.0,
        learning_rate: LEARNING_RATE,
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

/// Writes the prompt/response export's rows that ask an asked question (its prompt, with the
/// fact's sentence as response), `repeats` times each, to `out` (a dataset of the same datanet
/// version); fails naming a question no row asks.
fn focus(export: &DatasetSpec, qs: &[Question], repeats: usize, out: &Path) -> Result<DatasetSpec> {
    let file = std::fs::File::open(&export.path)
        .with_context(|| format!("reading {}", export.path.display()))?;
    let mut rows = Vec::new();
    let mut found = vec![false; qs.len()];
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", export.path.display()))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let prompt = v["prompt"].as_str().unwrap_or_default();
        let response = v["response"].as_str().unwrap_or_default();
        let mut asks = false;
        for (q, f) in qs.iter().zip(found.iter_mut()) {
            if prompt.trim() == q.prompt && response.contains(q.sentence) {
                *f = true;
                asks = true;
            }
        }
        if asks {
            rows.push(line);
        }
    }
    if let Some((q, _)) = qs.iter().zip(&found).find(|(_, f)| !**f) {
        bail!(
            "no row of the exported prompt/response datanet asks {}'s question {:?} with the \
             fact as its answer; was their contribution approved?",
            q.contributor,
            q.prompt
        );
    }
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("writing {}", out.display()))?,
    );
    for _ in 0..repeats {
        for r in &rows {
            writeln!(w, "{r}")?;
        }
    }
    w.flush()?;
    Ok(DatasetSpec {
        path: out.to_path_buf(),
        format: Format::Datanet,
        datanet: export.datanet.clone(),
    })
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map(|l| format!("{l:.3}")).unwrap_or_else(|| "-".into())
}

/// Trains in rounds; returns the job directory of the adapter that learned every asked fact.
pub fn train(ctx: &mut Ctx, model: &Path) -> Result<PathBuf> {
    let work = ctx.home.join("factory");
    let exports = work.join("datanets");
    let r = &ctx.report;
    let (text_id, text_v, qa_id, qa_v) = (
        r.datanet_id,
        r.datanet_version,
        r.qa_datanet_id,
        r.qa_datanet_version,
    );
    let text = export(ctx, text_id, text_v, &exports)?;
    let qa = export(ctx, qa_id, qa_v, &exports)?;
    println!(
        "  builder exported datanet {text_id} version {text_v} ({}) and datanet {qa_id} version \
         {qa_v} ({})",
        text.path.display(),
        qa.path.display()
    );
    let qs = questions();
    let focused = focus(
        &qa,
        &qs,
        FOCUS_REPEATS,
        &exports.join(format!("{qa_id}@{qa_v}-asked.jsonl")),
    )?;
    println!(
        "  training set: both versions, plus the {} prompt/response rows of the asked questions \
         {FOCUS_REPEATS} more times ({}); prompt/response rows train through the chat template \
         with the loss on the response",
        qs.len(),
        focused.path.display()
    );
    let margin = learning::MARGIN_NATS;
    println!(
        "  learning check after each round: the adapter's greedy answer to each question must \
         state the fact, and the fact as the answer must be ≥ {margin} nats/token more likely \
         than under the base"
    );
    let scorer =
        learning::Scorer::new(model, &qs).context("scoring the facts under the base model")?;
    let loss = Mutex::new(Vec::new());
    let mut steps = ctx.args.round_steps;
    let mut spent = 0;
    let mut round = 0;
    loop {
        round += 1;
        let dir = work.join(format!("round-{round}"));
        println!(
            "  round {round}: {steps} steps (LoRA rank 8, batch 4, cutoff 128, lr {LEARNING_RATE:e}) in {}",
            dir.display()
        );
        let mut job = Job::prepare(
            config(
                model,
                vec![text.clone(), qa.clone(), focused.clone()],
                steps,
            ),
            &dir,
        )?;
        let outcome = job.run(
            &Recorder {
                terminal: TerminalProgress::new(),
                round,
                loss: &loss,
            },
            super::interrupt::flag(),
        )?;
        super::interrupt::check()?;
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
        let facts = scorer.score(&adapter, &qs)?;
        learning::print_table(&facts, margin);
        let failed = learning::failures(&facts, margin);
        ctx.report.training.push(super::report::TrainRound {
            round,
            steps,
            train_loss: m.train_loss,
            val_loss: m.val_loss,
            seconds: m.train_seconds,
            facts: facts.clone(),
            passed: failed.is_empty(),
        });
        ctx.report.learning = facts;
        if failed.is_empty() {
            println!("  the adapter answers every asked question with its fact");
            ctx.report.loss = loss.into_inner().unwrap_or_default();
            return Ok(dir);
        }
        if spent + steps * 2 > ctx.args.max_train_steps {
            ctx.report.loss = loss.into_inner().unwrap_or_default();
            bail!(
                "after {spent} training steps in {round} rounds {} (raise --max-train-steps)",
                failed.join("; ")
            );
        }
        steps *= 2;
    }
}
