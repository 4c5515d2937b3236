//! A fine-tuning job: [`Job::prepare`] validates the settings, the model and the data before
//! anything is written; [`Job::run`] trains (checkpointing, evaluating, logging, reporting progress)
//! until the end, early stopping, or the stop flag; [`Job::resume`] picks a job up from its last
//! checkpoint and ends with the same adapter, bit for bit, as an uninterrupted run on the same
//! number of threads.

use crate::adapter::TrainableAdapter;
use crate::checkpoint::{self, TrainState};
use crate::config::TrainConfig;
use crate::data::encode::Encoder;
use crate::data::plan::{self, Plan, Split};
use crate::data::{formats, Encoded, Record, Rejected};
use crate::error::{Error, Result};
use crate::forward::{Dropout, LoraView, TrainModel};
use crate::metrics::{peak_rss_bytes, Metrics};
use crate::optim::{self, AdamW, AdamWParams};
use crate::progress::{EvalRecord, Event, Progress, Sample, StepRecord};
use crate::{plot, CONFIG_FILE, DATA_FILE, LOG_FILE};
use openledger_model::generate::{generate_batch, GenerateParams};
use openledger_model::load::Gguf;
use openledger_model::{load, peft, Device, LlamaConfig, LoraAdapter, Tokenizer};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// All steps done.
    Finished,
    /// Validation loss stopped improving for `early_stopping_patience` evaluations.
    EarlyStopped,
    /// The stop flag was raised; a checkpoint holds the state to resume from.
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::EarlyStopped => "early_stopped",
            Status::Stopped => "stopped",
        }
    }
}

/// What [`Job::run`] returns.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub metrics: Metrics,
    /// The final PEFT adapter (`adapter/`), when training ended.
    pub adapter_dir: Option<PathBuf>,
}

/// A prepared or resumed job.
pub struct Job {
    dir: PathBuf,
    config: TrainConfig,
    model: TrainModel,
    tok: Tokenizer,
    records: Vec<Record>,
    encoded: Vec<Encoded>,
    rejected: usize,
    split: Split,
    plan: Plan,
    adapter: TrainableAdapter,
    opt: AdamW,
    state: TrainState,
    total_steps: u64,
    warmup: u64,
    /// The thread count of the checkpoint this job resumed from, when it differs from now.
    threads_changed: Option<usize>,
    /// The current epoch's steps (each a list of micro-batches of train positions).
    epoch_steps: Option<(u64, Vec<Vec<Vec<usize>>>)>,
    /// The step of the newest checkpoint on disk.
    saved_step: Option<u64>,
}

/// The model's shape without loading its weights.
fn model_shape(path: &Path) -> Result<LlamaConfig> {
    if !path.exists() {
        return Err(Error::Invalid(format!(
            "base model {} does not exist; run ./scripts/fetch-model for the default one or name another GGUF file or model directory",
            path.display()
        )));
    }
    Ok(if path.is_dir() {
        LlamaConfig::from_hf_json(&path.join("config.json"))?
    } else {
        Gguf::open(path)?.config()?
    })
}

/// Tokenizes every record; those that cannot train are returned as rejections.
fn encode_all(
    tok: &Tokenizer,
    records: Vec<Record>,
    cutoff: usize,
) -> (Vec<Record>, Vec<Encoded>, Vec<Rejected>) {
    let enc = Encoder::new(tok);
    let results: Vec<std::result::Result<Encoded, String>> = records
        .par_iter()
        .map(|r| enc.encode(&r.example, cutoff))
        .collect();
    let (mut kept, mut encoded, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
    for (r, e) in records.into_iter().zip(results) {
        match e {
            Ok(e) => {
                kept.push(r);
                encoded.push(e);
            }
            Err(reason) => rejected.push(Rejected {
                source: r.source,
                line: r.line,
                reason,
            }),
        }
    }
    (kept, encoded, rejected)
}

/// Candle runs large elementwise ops on its own pool of spinning threads, next to the rayon pool
/// its matrix products use; on a small machine the two fight (a run on 2 busy cores went 3-4×
/// faster without it). Unless the user chose (`CANDLE_NUM_THREADS`), elementwise ops stay on the
/// calling thread. Takes effect only before candle's first large elementwise op in the process.
fn keep_candle_elementwise_on_one_thread() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Runs `f` on the first worker of rayon's pool, the pool every op of a pass runs on (the fused
/// ops, the bf16 products, candle's GEMM): the pass's parallel loops then start on that worker and
/// the others steal from it, instead of each loop being handed from this thread to the pool and
/// back (the calling thread sleeps meanwhile, leaving the cores to the workers). Always the same
/// worker, so every pass allocates from the same malloc arena (passes alternating between workers
/// kept two arenas' worth of activations: +650 MB peak RSS).
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let f = std::sync::Mutex::new(Some(f));
    let take = || {
        f.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    let ran = rayon::broadcast(|ctx| {
        if ctx.index() == 0 {
            take().map(|f| f())
        } else {
            None
        }
    });
    match ran.into_iter().flatten().next() {
        Some(r) => r,
        // Not reached (the broadcast runs worker 0 too); should it be, `f` runs here.
        None => take()
            .map(|f| f())
            .unwrap_or_else(|| unreachable!("f ran without a result")),
    }
}

/// The base model as the method trains on it: dequantized to f32 (LoRA), or quantized (QLoRA).
fn load_model(config: &TrainConfig) -> Result<TrainModel> {
    let mut model = load::load(&config.base_model, &Device::Cpu)?;
    match config.quant_format()? {
        None => model.dequantize()?,
        Some(format) => crate::quantized::quantize_base(&mut model, format)?,
    }
    TrainModel::new(model)
}

fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let mut out = Vec::new();
    for it in items {
        serde_json::to_writer(&mut out, it).expect("serializes");
        out.push(b'\n');
    }
    checkpoint::write_atomic(path, &out)
}

fn hash_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

impl Job {
    /// Validates `config`, the model and the data, then creates the job directory `dir` (which must
    /// not hold a job yet) with the resolved `config.toml` and the examples (`data.jsonl`). Nothing
    /// is written when anything is refused.
    pub fn prepare(mut config: TrainConfig, dir: &Path) -> Result<Job> {
        keep_candle_elementwise_on_one_thread();
        config.check()?;
        if dir.join(CONFIG_FILE).exists() {
            return Err(Error::Invalid(format!(
                "{} already holds a job; resume it, or choose another output directory",
                dir.display()
            )));
        }
        let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
        config.absolutize(&cwd);
        let shape = model_shape(&config.base_model)?;
        config.check_against(&shape)?;
        let tok = Tokenizer::for_model(&config.base_model)?;
        let mut records = Vec::new();
        let mut rejected = Vec::new();
        for spec in &config.datasets {
            let (r, j) = formats::load(spec)?;
            records.extend(r);
            rejected.extend(j);
        }
        if config.max_samples > 0 {
            records.truncate(config.max_samples as usize);
        }
        if records.is_empty() && rejected.is_empty() {
            return Err(Error::Invalid(
                "the datasets hold no rows; add data to train on".into(),
            ));
        }
        let (records, encoded, bad) = encode_all(&tok, records, config.cutoff_len);
        rejected.extend(bad);
        if encoded.is_empty() {
            let reasons: Vec<String> = rejected
                .iter()
                .take(3)
                .map(|r| format!("{} line {}: {}", r.source, r.line, r.reason))
                .collect();
            return Err(Error::Invalid(format!(
                "all {} rows were rejected, so there is nothing to train on; fix the data (first reasons: {})",
                rejected.len(),
                reasons.join("; ")
            )));
        }
        let split =
            plan::split(encoded.len(), config.val_size, config.seed).map_err(Error::Invalid)?;
        let model = load_model(&config)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        checkpoint::write_atomic(&dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
        write_jsonl(&dir.join(DATA_FILE), &records)?;
        write_jsonl(&dir.join(crate::REJECTED_FILE), &rejected)?;
        let _ = std::fs::remove_file(dir.join(LOG_FILE));
        Self::assemble(
            dir,
            config,
            tok,
            model,
            records,
            encoded,
            rejected.len(),
            split,
            None,
        )
    }

    /// Opens a job directory and continues from its newest checkpoint (from the start if it has
    /// none yet).
    pub fn resume(dir: &Path) -> Result<Job> {
        keep_candle_elementwise_on_one_thread();
        let config = TrainConfig::from_toml_file(&dir.join(CONFIG_FILE))?;
        config.check()?;
        let tok = Tokenizer::for_model(&config.base_model)?;
        let data = dir.join(DATA_FILE);
        let text = std::fs::read_to_string(&data).map_err(|e| Error::io(&data, e))?;
        let records: Vec<Record> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::data(&data, format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<_>>()?;
        let n = records.len();
        let (records, encoded, bad) = encode_all(&tok, records, config.cutoff_len);
        if !bad.is_empty() || encoded.is_empty() {
            return Err(Error::Checkpoint(format!(
                "{}: {} of {n} examples no longer tokenize as when the job started (was the base model or its tokenizer changed?)",
                data.display(),
                bad.len()
            )));
        }
        let rejected = std::fs::read_to_string(dir.join(crate::REJECTED_FILE))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let split =
            plan::split(encoded.len(), config.val_size, config.seed).map_err(Error::Invalid)?;
        let model = load_model(&config)?;
        let ck = checkpoint::latest(dir)?;
        Self::assemble(
            dir,
            config,
            tok,
            model,
            records,
            encoded,
            rejected,
            split,
            ck.as_deref(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        dir: &Path,
        config: TrainConfig,
        tok: Tokenizer,
        model: TrainModel,
        records: Vec<Record>,
        encoded: Vec<Encoded>,
        rejected: usize,
        split: Split,
        checkpoint_dir: Option<&Path>,
    ) -> Result<Job> {
        let plan = Plan {
            lens: split
                .train
                .iter()
                .map(|&i| encoded[i].tokens.len())
                .collect(),
            batch_size: config.per_device_train_batch_size,
            accum: config.gradient_accumulation_steps,
            cutoff: config.cutoff_len,
            packing: config.packing,
            seed: config.seed,
        };
        let total_steps = plan.total_steps(config.num_train_epochs, config.max_steps);
        let warmup = if config.warmup_steps > 0 {
            config.warmup_steps
        } else {
            (config.warmup_ratio * total_steps as f64).ceil() as u64
        };
        let params = AdamWParams {
            beta1: config.adam_beta1,
            beta2: config.adam_beta2,
            eps: config.adam_epsilon,
            weight_decay: config.weight_decay,
        };
        let lora = config.lora_config()?;
        let threads = rayon::current_num_threads();
        let dev = model.device().clone();
        let (adapter, opt, state, threads_changed) = match checkpoint_dir {
            Some(ck) => {
                let state = checkpoint::read_state(ck)?;
                let loaded = peft::load(ck, &dev)?;
                if loaded.config.r != lora.r || loaded.config.targets != lora.targets {
                    return Err(Error::Checkpoint(format!(
                        "{}: the adapter has rank {} on {:?}, the config asks for rank {} on {:?}",
                        ck.display(),
                        loaded.config.r,
                        loaded.config.targets,
                        lora.r,
                        lora.targets
                    )));
                }
                let mut adapter = TrainableAdapter::from_adapter(&loaded, &dev)?;
                adapter.config = lora;
                let opt = AdamW::load(
                    params,
                    &adapter.vars(),
                    &ck.join(checkpoint::OPTIMIZER_FILE),
                )?;
                if opt.t != state.step {
                    return Err(Error::Checkpoint(format!(
                        "{}: the optimizer took {} steps, the state says {}",
                        ck.display(),
                        opt.t,
                        state.step
                    )));
                }
                let changed = (state.threads != threads).then_some(state.threads);
                (adapter, opt, state, changed)
            }
            None => {
                let m = &model.model;
                let adapter = TrainableAdapter::init(
                    lora,
                    &|t| m.target_dims(t),
                    m.config.num_layers,
                    config.seed,
                    &dev,
                )?;
                let opt = AdamW::new(params, &adapter.vars());
                let state = TrainState {
                    step: 0,
                    epoch: 0,
                    step_in_epoch: 0,
                    epoch_order: plan.epoch_order(0),
                    micro_batches: 0,
                    seed: config.seed,
                    best_val_loss: None,
                    best_step: None,
                    initial_val_loss: None,
                    last_val_loss: None,
                    evals_without_improvement: 0,
                    window_loss: 0.0,
                    window_steps: 0,
                    last_train_loss: None,
                    tokens_seen: 0,
                    train_seconds: 0.0,
                    threads,
                    done: None,
                };
                (adapter, opt, state, None)
            }
        };
        if state.epoch_order.len() != plan.lens.len() {
            return Err(Error::Checkpoint(format!(
                "the checkpoint's data order has {} examples, the job's training split {}",
                state.epoch_order.len(),
                plan.lens.len()
            )));
        }
        truncate_log(&dir.join(LOG_FILE), checkpoint_dir.map(|_| state.step))?;
        let state_step = state.step;
        Ok(Job {
            dir: dir.to_path_buf(),
            config,
            model,
            tok,
            records,
            encoded,
            rejected,
            split,
            plan,
            adapter,
            opt,
            state,
            total_steps,
            warmup,
            threads_changed,
            epoch_steps: None,
            saved_step: checkpoint_dir.map(|_| state_step),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }
    pub fn state(&self) -> &TrainState {
        &self.state
    }
    pub fn total_steps(&self) -> u64 {
        self.total_steps
    }
    /// Training and validation example counts.
    pub fn split_sizes(&self) -> (usize, usize) {
        (self.split.train.len(), self.split.val.len())
    }
    pub fn rejected_rows(&self) -> usize {
        self.rejected
    }
    pub fn trainable_params(&self) -> usize {
        self.adapter.num_params()
    }
    /// The tokenized training and validation examples (for inspection and tests).
    pub fn examples(&self) -> (Vec<&Encoded>, Vec<&Encoded>) {
        let pick = |ix: &[usize]| ix.iter().map(|&i| &self.encoded[i]).collect();
        (pick(&self.split.train), pick(&self.split.val))
    }
    /// The adapter as it stands (a copy).
    pub fn adapter(&self) -> Result<LoraAdapter> {
        self.adapter.to_adapter()
    }

    /// Trains until the last step, early stopping, or `stop` (checked between steps; the state is
    /// then checkpointed so [`Job::resume`] continues exactly there).
    pub fn run(&mut self, progress: &dyn Progress, stop: &AtomicBool) -> Result<Outcome> {
        let (n_train, n_val) = self.split_sizes();
        progress.event(&Event::Started {
            start_step: self.state.step,
            total_steps: self.total_steps,
            train_examples: n_train,
            val_examples: n_val,
            rejected: self.rejected,
            trainable_params: self.adapter.num_params(),
            threads: rayon::current_num_threads(),
        });
        if let Some(was) = self.threads_changed {
            progress.event(&Event::Note {
                message: format!(
                    "the checkpoint was computed on {was} threads and this run uses {}: the adapter will not be bit-identical to an uninterrupted run (set RAYON_NUM_THREADS={was} for that)",
                    rayon::current_num_threads()
                ),
            });
        }
        if self.state.step == 0 && self.state.done.is_none() {
            let before = self.samples(None)?;
            self.write_samples("before", &before)?;
            progress.event(&Event::Samples {
                phase: "before".into(),
                samples: before,
            });
            if let Some(loss) = self.evaluate()? {
                self.state.initial_val_loss = Some(loss);
                self.record_eval(loss, progress)?;
            }
        }
        let mut status = self.state.done.as_deref().map(|s| {
            if s == Status::EarlyStopped.as_str() {
                Status::EarlyStopped
            } else {
                Status::Finished
            }
        });
        while status.is_none() && self.state.step < self.total_steps {
            if stop.load(Ordering::SeqCst) {
                if self.state.step > 0 && self.saved_step != Some(self.state.step) {
                    self.save_checkpoint(progress)?;
                }
                let metrics = self.metrics(Status::Stopped, None)?;
                progress.event(&Event::Finished {
                    status: Status::Stopped.as_str().into(),
                    step: self.state.step,
                });
                return Ok(Outcome {
                    status: Status::Stopped,
                    metrics,
                    adapter_dir: None,
                });
            }
            self.train_step(progress)?;
            let s = self.state.step;
            let last = s == self.total_steps;
            if n_val > 0 && (s.is_multiple_of(self.config.eval_steps) || last) {
                let loss = self.evaluate()?.expect("a validation set");
                if self.record_eval(loss, progress)? {
                    status = Some(Status::EarlyStopped);
                }
            }
            if s.is_multiple_of(self.config.save_steps) && !last && status.is_none() {
                self.save_checkpoint(progress)?;
            }
        }
        let status = status.unwrap_or(Status::Finished);
        self.state.done = Some(status.as_str().into());
        self.save_checkpoint(progress)?;
        let adapter = self.adapter.to_adapter()?;
        let out = self.dir.join(crate::ADAPTER_DIR);
        peft::save(&adapter, &out)?;
        let after = self.samples(Some(Arc::new(adapter)))?;
        self.write_samples("after", &after)?;
        progress.event(&Event::Samples {
            phase: "after".into(),
            samples: after,
        });
        self.draw()?;
        let metrics = self.metrics(status, Some(&out))?;
        progress.event(&Event::Finished {
            status: status.as_str().into(),
            step: self.state.step,
        });
        Ok(Outcome {
            status,
            metrics,
            adapter_dir: Some(out),
        })
    }

    /// The current epoch's steps, moving to the next epoch when this one is used up.
    fn next_step_batches(&mut self) -> Vec<Vec<usize>> {
        loop {
            if self.epoch_steps.as_ref().map(|(e, _)| *e) != Some(self.state.epoch) {
                self.epoch_steps =
                    Some((self.state.epoch, self.plan.steps(&self.state.epoch_order)));
            }
            let (_, steps) = self.epoch_steps.as_ref().expect("just set");
            if let Some(s) = steps.get(self.state.step_in_epoch as usize) {
                return s.clone();
            }
            self.state.epoch += 1;
            self.state.step_in_epoch = 0;
            self.state.epoch_order = self.plan.epoch_order(self.state.epoch);
        }
    }

    fn epoch_progress(&self) -> f64 {
        let in_epoch = self
            .epoch_steps
            .as_ref()
            .map(|(_, s)| s.len())
            .unwrap_or(1)
            .max(1);
        self.state.epoch as f64 + self.state.step_in_epoch as f64 / in_epoch as f64
    }

    fn train_step(&mut self, progress: &dyn Progress) -> Result<()> {
        let started = Instant::now();
        let micro = self.next_step_batches();
        let total_targets: usize = micro
            .iter()
            .flatten()
            .map(|&p| self.encoded[self.split.train[p]].num_targets())
            .sum();
        let vars = self.adapter.vars();
        let mut grads: Vec<Vec<f32>> = vars.iter().map(|v| vec![0f32; v.elem_count()]).collect();
        let view = LoraView::training(&self.adapter);
        let mut sum_nll = 0f64;
        let mut tokens = 0usize;
        for mb in &micro {
            let batch: Vec<&Encoded> = mb
                .iter()
                .map(|&p| &self.encoded[self.split.train[p]])
                .collect();
            let dropout = Dropout {
                p: self.config.lora_dropout,
                seed: self.config.seed,
                micro_batch: self.state.micro_batches,
            };
            let model = &self.model;
            let (pass, g) = on_pool(|| -> Result<_> {
                let pass = model.loss(&batch, &view, Some(dropout))?;
                let loss = (&pass.sum_nll * (1.0 / total_targets as f64))?;
                let g = loss.backward()?;
                Ok((pass, g))
            })?;
            for (acc, v) in grads.iter_mut().zip(&vars) {
                if let Some(t) = g.get(v.as_tensor()) {
                    let t: Vec<f32> = t.flatten_all()?.to_vec1()?;
                    acc.iter_mut().zip(t).for_each(|(a, x)| *a += x);
                }
            }
            sum_nll += pass.sum_nll.to_scalar::<f32>()? as f64;
            tokens += pass.tokens;
            self.state.micro_batches += 1;
        }
        let loss = sum_nll / total_targets as f64;
        let step = self.state.step + 1;
        let norm = optim::clip(&mut grads, self.config.max_grad_norm);
        if !loss.is_finite() || !norm.is_finite() {
            return Err(Error::Diverged(format!(
                "step {step}: loss {loss}, gradient norm {norm}; lower learning_rate or keep max_grad_norm on, then resume from the last checkpoint"
            )));
        }
        let lr = optim::lr_at(
            self.config.lr_scheduler_type,
            self.config.learning_rate,
            self.state.step,
            self.warmup,
            self.total_steps,
        );
        self.opt.step(&vars, &grads, lr)?;
        let secs = started.elapsed().as_secs_f64();
        let st = &mut self.state;
        st.step = step;
        st.step_in_epoch += 1;
        st.tokens_seen += tokens as u64;
        st.train_seconds += secs;
        st.window_loss += loss;
        st.window_steps += 1;
        st.last_train_loss = Some(loss);
        let logged = step.is_multiple_of(self.config.logging_steps) || step == self.total_steps;
        let mut rec = StepRecord {
            step,
            epoch: self.epoch_progress(),
            loss,
            lr,
            grad_norm: norm,
            tokens_per_s: tokens as f64 / secs.max(1e-9),
            logged,
        };
        if logged {
            let st = &mut self.state;
            rec.loss = st.window_loss / st.window_steps.max(1) as f64;
            st.window_loss = 0.0;
            st.window_steps = 0;
            self.append_log(&rec)?;
        }
        progress.event(&Event::Step(rec));
        Ok(())
    }

    /// Mean loss per target token over the validation set (`None` without one).
    pub fn evaluate(&self) -> Result<Option<f64>> {
        if self.split.val.is_empty() {
            return Ok(None);
        }
        let view = LoraView::frozen(&self.adapter);
        let (mut sum, mut n) = (0f64, 0usize);
        for chunk in self
            .split
            .val
            .chunks(self.config.per_device_train_batch_size)
        {
            let batch: Vec<&Encoded> = chunk.iter().map(|&i| &self.encoded[i]).collect();
            let pass = on_pool(|| self.model.loss(&batch, &view, None))?;
            sum += pass.sum_nll.to_scalar::<f32>()? as f64;
            n += pass.targets;
        }
        Ok(Some(sum / n.max(1) as f64))
    }

    /// Logs an evaluation and updates early stopping; true when patience ran out.
    fn record_eval(&mut self, loss: f64, progress: &dyn Progress) -> Result<bool> {
        let rec = EvalRecord {
            step: self.state.step,
            epoch: self.epoch_progress(),
            val_loss: loss,
            val_ppl: loss.exp(),
        };
        self.append_log(&rec)?;
        progress.event(&Event::Eval(rec));
        let st = &mut self.state;
        st.last_val_loss = Some(loss);
        if st.best_val_loss.is_none_or(|b| loss < b) {
            st.best_val_loss = Some(loss);
            st.best_step = Some(st.step);
            st.evals_without_improvement = 0;
            if st.step > 0 {
                peft::save(
                    &self.adapter.to_adapter()?,
                    &self.dir.join(crate::BEST_ADAPTER_DIR),
                )?;
            }
            return Ok(false);
        }
        st.evals_without_improvement += 1;
        let patience = self.config.early_stopping_patience;
        Ok(patience > 0 && st.evals_without_improvement >= patience)
    }

    fn save_checkpoint(&mut self, progress: &dyn Progress) -> Result<()> {
        let tmp = checkpoint::scratch(&self.dir, self.state.step)?;
        peft::save(&self.adapter.to_adapter()?, &tmp)?;
        self.opt.save(&tmp.join(checkpoint::OPTIMIZER_FILE))?;
        self.state.threads = rayon::current_num_threads();
        let state = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        checkpoint::write_atomic(&tmp.join(checkpoint::STATE_FILE), &state)?;
        let dst = checkpoint::commit(
            &self.dir,
            &tmp,
            self.state.step,
            self.config.save_total_limit,
        )?;
        self.saved_step = Some(self.state.step);
        progress.event(&Event::Checkpoint {
            step: self.state.step,
            path: dst.display().to_string(),
        });
        Ok(())
    }

    fn append_log<T: serde::Serialize>(&self, rec: &T) -> Result<()> {
        let path = self.dir.join(LOG_FILE);
        let mut line = serde_json::to_vec(rec).expect("serializes");
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(&line))
            .map_err(|e| Error::io(&path, e))
    }

    /// Greedy generations on up to `sample_prompts` held-out prompts (training prompts when nothing
    /// is held out).
    pub fn samples(&self, adapter: Option<Arc<LoraAdapter>>) -> Result<Vec<Sample>> {
        let enc = Encoder::new(&self.tok);
        let pool = if self.split.val.is_empty() {
            &self.split.train
        } else {
            &self.split.val
        };
        let max_tokens = self.config.sample_max_tokens;
        let limit = self.model.model.config.max_position;
        let prompts: Vec<_> = pool
            .iter()
            .filter_map(|&i| enc.sample_prompt(&self.records[i].example, max_tokens).ok())
            .filter(|p| !p.tokens.is_empty() && p.tokens.len() + 1 < limit)
            .take(self.config.sample_prompts)
            .collect();
        if prompts.is_empty() || max_tokens == 0 {
            return Ok(Vec::new());
        }
        let params = GenerateParams {
            max_tokens,
            ..GenerateParams::default()
        };
        let requests = prompts
            .iter()
            .map(|p| (p.tokens.clone(), params.clone(), adapter.clone()))
            .collect();
        let gens = generate_batch(&self.model.model, &self.tok, requests)?;
        Ok(prompts
            .into_iter()
            .zip(gens)
            .map(|(p, g)| Sample {
                prompt: p.prompt,
                reference: p.reference,
                generated: g.text,
            })
            .collect())
    }

    fn write_samples(&self, phase: &str, samples: &[Sample]) -> Result<()> {
        let path = self.dir.join(crate::SAMPLES_FILE);
        let mut all: serde_json::Map<String, serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        all.insert(
            phase.into(),
            serde_json::to_value(samples).expect("serializes"),
        );
        checkpoint::write_atomic(&path, &serde_json::to_vec_pretty(&all).expect("serializes"))
    }

    /// Redraws `loss.png` and `loss.svg` from the log.
    pub fn draw(&self) -> Result<()> {
        let curves = plot::Curves::from_log(&self.dir.join(LOG_FILE))?;
        plot::draw(
            &curves,
            &self.dir.join(crate::PLOT_PNG),
            &self.dir.join(crate::PLOT_SVG),
        )
    }

    fn metrics(&self, status: Status, adapter: Option<&Path>) -> Result<Metrics> {
        let st = &self.state;
        let (n_train, n_val) = self.split_sizes();
        let metrics = Metrics {
            status: status.as_str().into(),
            steps: st.step,
            total_steps: self.total_steps,
            epochs: self.epoch_progress(),
            train_loss: st.last_train_loss,
            initial_val_loss: st.initial_val_loss,
            val_loss: st.last_val_loss,
            val_ppl: st.last_val_loss.map(f64::exp),
            best_val_loss: st.best_val_loss,
            best_step: st.best_step,
            train_examples: n_train,
            val_examples: n_val,
            rejected_rows: self.rejected,
            trainable_params: self.adapter.num_params(),
            tokens_seen: st.tokens_seen,
            train_seconds: st.train_seconds,
            tokens_per_s: st.tokens_seen as f64 / st.train_seconds.max(1e-9),
            seconds_per_step: st.train_seconds / st.step.max(1) as f64,
            peak_rss_bytes: peak_rss_bytes(),
            threads: rayon::current_num_threads(),
            precision: self.model.precision().name().into(),
            config_hash: hash_file(&self.dir.join(CONFIG_FILE))?,
            data_hash: hash_file(&self.dir.join(DATA_FILE))?,
            adapter_hash: adapter
                .map(|d| hash_file(&d.join(peft::WEIGHTS_FILE)))
                .transpose()?,
        };
        checkpoint::write_atomic(
            &self.dir.join(crate::METRICS_FILE),
            &serde_json::to_vec_pretty(&metrics).expect("serializes"),
        )?;
        Ok(metrics)
    }
}

/// Keeps the log lines up to `step` (a resumed run rewrites what came after its checkpoint);
/// without a checkpoint the log starts over.
fn truncate_log(path: &Path, step: Option<u64>) -> Result<()> {
    let Some(step) = step else {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, e)),
            _ => Ok(()),
        };
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    checkpoint::write_atomic(path, kept.as_bytes())
}
