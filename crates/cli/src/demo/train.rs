//! The training step: the model builder exports the datanet's latest version from the node and
//! fine-tunes a LoRA adapter on it with ModelFactory (its progress bar on a terminal), in rounds
//! (each from the start, twice as long as the last, within --max-train-steps) until the
//! learning check ([`super::learning`]) shows that the adapter learned every planted fact the
//! app will ask about: each fact's verbatim sentence is at least
//! [`super::learning::MARGIN_NATS`] nats per token more likely under base + adapter than under
//! the base model.
//!
//! The training set is the whole datanet version plus the rows holding the asked facts again,
//! [`FOCUS_REPEATS`] times (both from the same export, so the provenance is that one version):
//! a few dozen steps on two CPU cores read only a fraction of the datanet once, and the builder
//! wants the adapter to know the facts it will be paid for.
//!
//! The paid questions ask the model to repeat a planted sentence ("Repeat this sentence
//! exactly: …"): a few minutes of LoRA training on two cores do not teach SmolLM2-135M to
//! recall a fact from a bare question (the loss is still ≈ 4.5 after ten steps), and the base
//! model cannot state an invented fact it was not shown, so a repeated sentence is the
//! generated answer quoting one contributor's row that attribution pays for. Those answers
//! prove attribution and payment; the likelihood check proves learning.

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
    /// Its distinctive phrase: the answer must contain it.
    pub phrase: &'static str,
    /// The prompt sent.
    pub prompt: String,
    /// The fact's verbatim sentence in its contributor's row (the learning check scores it).
    pub sentence: &'static str,
}

/// One planted fact of each sample contributor (datanets/sample/README.md, "Planted facts"):
/// contributor, phrase, the sentence the app asks to repeat, the verbatim sentence of the row.
const FACTS: &[(&str, &str, &str, &str)] = &[
    ("alice", "Thursby lid-tap", "Under the Thursby lid-tap, a queenright colony answers two knocks on the roof with a short rise in sound that settles within about four seconds.",
     "Under the Thursby lid-tap, a queenright colony answers two knocks on the roof with a short rise in sound that settles within about four seconds, while a queenless one keeps roaring for far longer."),
    ("bob", "Ashcombe candy board", "The Ashcombe candy board uses five parts white sugar to one part water, boiled to the soft-ball stage and poured about three centimetres deep.",
     "The Ashcombe candy board uses five parts white sugar to one part water, boiled to the soft-ball stage and poured about three centimetres deep, which gives a colony roughly two kilos of emergency food."),
    ("carol", "Orlin nine-square count", "The Orlin nine-square count takes only the centre square and the four corner squares of a three-by-three grid drawn on the board.",
     "The Orlin nine-square count takes only the centre square and the four corner squares of a three-by-three grid drawn on the board and multiplies their total by 1.8 to estimate the whole board."),
    ("dave", "Tillingham verge mix", "The Tillingham verge mix is sown in early autumn at two grams per square metre onto scraped, weed-free ground and is cut only once, in late September.",
     "The Tillingham verge mix is sown in early autumn at two grams per square metre onto scraped, weed-free ground and is cut only once, in late September, with the cuttings raked off."),
];

/// How many more times the rows holding the asked facts are in the training set.
pub const FOCUS_REPEATS: usize = 48;

/// The LoRA learning rate (a tiny run on two cores).
const LEARNING_RATE: f64 = 2e-3;

/// Most tokens an answer may have.
pub const MAX_ANSWER_TOKENS: usize = 64;

/// The questions the demo asks, one per sample contributor.
pub fn questions() -> Vec<Question> {
    FACTS
        .iter()
        .map(|&(contributor, phrase, asked, sentence)| Question {
            contributor,
            phrase,
            prompt: format!("Repeat this sentence exactly: {asked}"),
            sentence,
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

/// Writes the export's rows that hold an asked fact's sentence, `repeats` times each, to `out`
/// (a dataset of the same datanet version); fails naming a fact no row holds.
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
        let text = v["text"].as_str().unwrap_or_default();
        let mut holds = false;
        for (q, f) in qs.iter().zip(found.iter_mut()) {
            if text.contains(q.sentence) {
                *f = true;
                holds = true;
            }
        }
        if holds {
            rows.push(line);
        }
    }
    if let Some((q, _)) = qs.iter().zip(&found).find(|(_, f)| !**f) {
        bail!(
            "no row of the exported datanet holds {}'s fact {:?}; was their contribution approved?",
            q.contributor,
            q.phrase
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
    let id = ctx.report.datanet_id;
    let version = ctx.report.datanet_version;
    let work = ctx.home.join("factory");
    let data = export(ctx, id, version, &work.join("datanets"))?;
    println!(
        "  builder exported datanet {id} version {version} ({})",
        data.path.display()
    );
    let qs = questions();
    let focused = focus(
        &data,
        &qs,
        FOCUS_REPEATS,
        &work
            .join("datanets")
            .join(format!("{id}@{version}-facts.jsonl")),
    )?;
    println!(
        "  training set: the whole version, plus the {} rows holding the asked facts {FOCUS_REPEATS} \
         more times ({})",
        qs.len(),
        focused.path.display()
    );
    let margin = learning::MARGIN_NATS;
    println!(
        "  learning check after each round: each fact's verbatim sentence must be ≥ {margin} \
         nats/token more likely (mean NLL, plain text) under base + adapter than under the base"
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
            config(model, vec![data.clone(), focused.clone()], steps),
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
            println!("  the adapter learned every asked fact (Δ ≥ {margin} nats/token each)");
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
