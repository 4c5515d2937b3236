//! What a running job reports, and two ways to show it: [`TerminalProgress`] (an `indicatif` bar with
//! step, loss, tokens/s and ETA on a terminal; plain lines otherwise) and [`NoProgress`]. Events
//! serialize to JSON so a server can stream them as they are.

use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::sync::Mutex;

/// One optimizer step (also a `log.jsonl` line when `logged`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: f64,
    /// Mean loss per target token (over the steps since the last logged line when `logged`).
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Tokens (prompt and response) processed per second.
    pub tokens_per_s: f64,
    #[serde(skip)]
    pub logged: bool,
}

/// A validation pass (also a `log.jsonl` line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub step: u64,
    pub epoch: f64,
    pub val_loss: f64,
    pub val_ppl: f64,
}

/// A generation on a held-out prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub prompt: String,
    pub reference: String,
    pub generated: String,
}

/// Everything a job reports.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        start_step: u64,
        total_steps: u64,
        train_examples: usize,
        val_examples: usize,
        rejected: usize,
        trainable_params: usize,
        threads: usize,
    },
    Step(StepRecord),
    Eval(EvalRecord),
    /// `phase`: `before` or `after` training.
    Samples {
        phase: String,
        samples: Vec<Sample>,
    },
    Checkpoint {
        step: u64,
        path: String,
    },
    Note {
        message: String,
    },
    Finished {
        status: String,
        step: u64,
    },
}

/// Receives a job's events (called on the training thread; keep it quick).
pub trait Progress: Sync {
    fn event(&self, event: &Event);
}

/// Ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: &Event) {}
}

/// A progress bar on a terminal (stderr), plain lines at logging steps otherwise.
pub struct TerminalProgress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    tty: bool,
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl TerminalProgress {
    pub fn new() -> Self {
        Self {
            bar: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(&self, text: &str) {
        match &*self.bar.lock().expect("not poisoned") {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

impl Progress for TerminalProgress {
    fn event(&self, event: &Event) {
        match event {
            Event::Started {
                start_step,
                total_steps,
                train_examples,
                val_examples,
                rejected,
                trainable_params,
                threads,
            } => {
                self.line(&format!(
                    "training {trainable_params} LoRA parameters on {train_examples} examples ({val_examples} held out, {rejected} rejected), {total_steps} steps, {threads} threads{}",
                    if *start_step > 0 { format!(", resuming at step {start_step}") } else { String::new() }
                ));
                if self.tty {
                    let bar = indicatif::ProgressBar::new(*total_steps);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{bar:30} step {pos}/{len} · {msg} · {elapsed_precise} elapsed, ETA {eta_precise}",
                        )
                        .expect("valid template"),
                    );
                    bar.set_position(*start_step);
                    bar.reset_eta();
                    *self.bar.lock().expect("not poisoned") = Some(bar);
                }
            }
            Event::Step(s) => {
                let msg = format!(
                    "loss {:.4} · lr {:.2e} · {:.0} tok/s",
                    s.loss, s.lr, s.tokens_per_s
                );
                if let Some(bar) = &*self.bar.lock().expect("not poisoned") {
                    bar.set_position(s.step);
                    bar.set_message(msg);
                    return;
                }
                if s.logged {
                    eprintln!(
                        "step {} · epoch {:.2} · {msg} · grad norm {:.3}",
                        s.step, s.epoch, s.grad_norm
                    );
                }
            }
            Event::Eval(e) => self.line(&format!(
                "step {} · validation loss {:.4} · perplexity {:.2}",
                e.step, e.val_loss, e.val_ppl
            )),
            Event::Samples { phase, samples } => {
                for s in samples {
                    self.line(&format!(
                        "sample ({phase} training): {:?} → {:?}",
                        s.prompt
                            .chars()
                            .rev()
                            .take(60)
                            .collect::<String>()
                            .chars()
                            .rev()
                            .collect::<String>(),
                        s.generated
                    ));
                }
            }
            Event::Checkpoint { step, path } => {
                self.line(&format!("checkpoint at step {step}: {path}"))
            }
            Event::Note { message } => self.line(message),
            Event::Finished { status, step } => {
                if let Some(bar) = self.bar.lock().expect("not poisoned").take() {
                    bar.finish_and_clear();
                }
                eprintln!("{status} at step {step}");
            }
        }
    }
}
