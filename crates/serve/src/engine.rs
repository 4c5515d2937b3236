//! The engine: one OS thread owns the model and runs continuous batching. Requests wait in
//! per-adapter queues; every step the free batch slots are filled round-robin across adapters (so a
//! hot adapter cannot starve a cold one), one forward pass advances every running sequence whatever
//! its adapter, and finished or abandoned sequences leave. Text streams back over a tokio channel;
//! a dropped receiver cancels its sequences within one step. Between steps [`crate::dlora`] may swap
//! in weights with a dominant adapter merged (or the base back); every row's output stays the same.

use crate::dlora::{Dlora, DloraConfig, DloraStats, Row};
use crate::error::ServeError;
use crate::metrics::RequestMetrics;
use openledger_model::generate::{self, FinishReason, GenerateParams, Sequence};
use openledger_model::sampling::TokenLogprobs;
use openledger_model::{Llama, LoraAdapter, Tokenizer};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Engine limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most sequences advanced by one forward pass.
    pub max_batch: usize,
    /// Most sequences waiting for a batch slot; beyond it submission fails at once (HTTP 429).
    pub max_waiting: usize,
    /// The active set: most distinct adapters in the running batch, and most bytes of their
    /// weights. A job whose adapter would pass either waits (others are admitted meanwhile)
    /// until a running adapter's sequences finish; its wait stays bounded by their length.
    pub max_active_adapters: usize,
    pub max_active_adapter_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_waiting: 64,
            max_active_adapters: 64,
            max_active_adapter_bytes: 256 << 20,
        }
    }
}

/// What a sequence sends back, tagged with its choice index.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A final piece of text, and how many tokens the sequence has generated so far (what a
    /// client that received this piece is charged for).
    Text(String, usize),
    /// Only for jobs whose sampling asks for logprobs: the log-probabilities of the tokens that
    /// the next `Text` delivers (or `Done`, for tokens whose text a stop string cut), sent just
    /// before it.
    Logprobs(Vec<TokenLogprobs>),
    /// The sequence ended.
    Done {
        finish: FinishReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    /// The sequence failed (the model runtime reported an error).
    Error(String),
}

/// Counters the engine keeps (for metrics and tests).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences in the running batch.
    pub running: AtomicUsize,
    /// Forward passes run.
    pub steps: AtomicUsize,
    /// Sequences ended because their client went away.
    pub cancelled: AtomicUsize,
    /// Sequences finished (any reason).
    pub finished: AtomicUsize,
    pub prompt_tokens: AtomicUsize,
    pub generation_tokens: AtomicUsize,
}

/// One sequence to generate.
pub struct Job {
    /// Adapter name (for fair scheduling) and weights; `None` is the base model.
    pub adapter: Option<(String, Arc<LoraAdapter>)>,
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Choice index echoed with every event.
    pub index: usize,
    pub events: UnboundedSender<(usize, Event)>,
}

/// A handle on the engine thread; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<(Job, Instant)>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<EngineStats>,
    metrics: Arc<RequestMetrics>,
    config: EngineConfig,
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    dlora: Arc<DloraStats>,
}

impl Engine {
    /// Starts the engine thread over a loaded model, with the default dLoRA policy.
    pub fn start(
        model: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> std::io::Result<Self> {
        Self::start_with(model, tokenizer, config, DloraConfig::default())
    }

    /// Starts the engine thread; `dlora` says when a dominant adapter is merged (see [`crate::dlora`]).
    pub fn start_with(
        model: Arc<Llama>,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        dlora: DloraConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let dlora_stats = Arc::new(DloraStats::default());
        let waiting = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(EngineStats::default());
        let metrics = Arc::new(RequestMetrics::default());
        let worker = Worker {
            stats: stats.clone(),
            metrics: metrics.clone(),
            model: model.clone(),
            tokenizer: tokenizer.clone(),
            max_batch: config.max_batch.max(1),
            max_active_adapters: config.max_active_adapters.max(1),
            max_active_bytes: config.max_active_adapter_bytes,
            rx,
            waiting: waiting.clone(),
            queues: HashMap::new(),
            order: VecDeque::new(),
            running: Vec::new(),
            dlora: Dlora::new(model.clone(), dlora, dlora_stats.clone()),
        };
        std::thread::Builder::new()
            .name("openlora-engine".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            tx,
            waiting,
            stats,
            metrics,
            config,
            model,
            tokenizer,
            dlora: dlora_stats,
        })
    }

    /// What the dLoRA policy did: merges, unmerges, the merged adapter.
    pub fn dlora(&self) -> &DloraStats {
        &self.dlora
    }

    pub fn model(&self) -> &Arc<Llama> {
        &self.model
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Latency histograms and finish counters, per sequence.
    pub fn metrics(&self) -> &RequestMetrics {
        &self.metrics
    }

    /// Sequences waiting for a batch slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queues jobs all or nothing: fails at once with [`ServeError::QueueFull`] when they do not fit.
    pub fn submit(&self, jobs: Vec<Job>) -> Result<(), ServeError> {
        let n = jobs.len();
        let max = self.config.max_waiting;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w + n <= max).then_some(w + n)
            })
            .map_err(ServeError::QueueFull)?;
        let submitted = Instant::now();
        for (i, job) in jobs.into_iter().enumerate() {
            if self.tx.send((job, submitted)).is_err() {
                self.waiting.fetch_sub(n - i, Ordering::AcqRel);
                return Err(ServeError::EngineStopped);
            }
        }
        Ok(())
    }

    /// Convenience for one sequence: a fresh channel, the job queued.
    pub fn submit_one(
        &self,
        adapter: Option<(String, Arc<LoraAdapter>)>,
        prompt: Vec<u32>,
        params: GenerateParams,
    ) -> Result<UnboundedReceiver<(usize, Event)>, ServeError> {
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        self.submit(vec![Job {
            adapter,
            prompt,
            params,
            index: 0,
            events,
        }])?;
        Ok(rx)
    }
}

struct Running {
    seq: Sequence,
    /// Its adapter's key and weight bytes (the active set).
    adapter: Option<(String, usize)>,
    /// The adapter it asked for (dLoRA may run it another way; see [`crate::dlora`]).
    weights: Option<Arc<LoraAdapter>>,
    index: usize,
    events: UnboundedSender<(usize, Event)>,
    /// When it was submitted, and when its latest token came (`None` before the first).
    submitted: Instant,
    last_token: Option<Instant>,
    /// Generated tokens already measured.
    seen: usize,
}

struct Worker {
    model: Arc<Llama>,
    tokenizer: Arc<Tokenizer>,
    max_batch: usize,
    max_active_adapters: usize,
    max_active_bytes: usize,
    rx: mpsc::Receiver<(Job, Instant)>,
    waiting: Arc<AtomicUsize>,
    stats: Arc<EngineStats>,
    metrics: Arc<RequestMetrics>,
    /// Waiting jobs per adapter (`None` = base model), with their submission time.
    queues: HashMap<Option<String>, VecDeque<(Job, Instant)>>,
    /// Adapters with waiting jobs, in round-robin order.
    order: VecDeque<Option<String>>,
    running: Vec<Running>,
    dlora: Dlora,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.running.is_empty() && self.order.is_empty() {
                // Idle: sleep until a request arrives (or every handle is gone).
                match self.rx.recv() {
                    Ok(job) => self.enqueue(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = self.rx.try_recv() {
                self.enqueue(job);
            }
            self.admit();
            self.merge_or_unmerge();
            self.step();
        }
    }

    fn enqueue(&mut self, (job, submitted): (Job, Instant)) {
        let key = job.adapter.as_ref().map(|(n, _)| n.clone());
        let q = self.queues.entry(key.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(key);
        }
        q.push_back((job, submitted));
    }

    /// Whether a job for adapter `key` (of `bytes`) fits the active set of the running batch.
    fn fits_active_set(&self, key: &str, bytes: usize) -> bool {
        let mut names: Vec<&str> = Vec::new();
        let mut total = 0usize;
        for (n, b) in self.running.iter().filter_map(|r| r.adapter.as_ref()) {
            if !names.contains(&n.as_str()) {
                names.push(n);
                total = total.saturating_add(*b);
            }
        }
        if names.contains(&key) {
            return true;
        }
        // An empty active set always admits, so one large adapter cannot wait forever.
        names.is_empty()
            || (names.len() < self.max_active_adapters
                && total.saturating_add(bytes) <= self.max_active_bytes)
    }

    /// Fills free batch slots, one job per adapter in turn; adapters that do not fit the active
    /// set keep their place in the round-robin for the next step.
    fn admit(&mut self) {
        let mut deferred = Vec::new();
        while self.running.len() < self.max_batch {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            let bytes = q
                .front()
                .and_then(|(j, _)| j.adapter.as_ref())
                .map(|(_, a)| crate::adapters::adapter_bytes(a))
                .unwrap_or(0);
            if let Some(name) = &key {
                if !self.fits_active_set(name, bytes) {
                    deferred.push(key);
                    continue;
                }
            }
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            let job = q.pop_front();
            if q.is_empty() {
                self.queues.remove(&key);
            } else {
                self.order.push_back(key.clone());
            }
            let Some((job, submitted)) = job else {
                continue;
            };
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if job.events.is_closed() {
                self.metrics.finished(FinishReason::Cancelled);
                continue;
            }
            let active = key.clone().map(|k| (k, bytes));
            let adapter = job.adapter.map(|(_, a)| a);
            match Sequence::new(&self.model, job.prompt, job.params, adapter.clone()) {
                Ok(seq) => {
                    self.metrics
                        .queue_time
                        .observe(submitted.elapsed().as_secs_f64());
                    self.running.push(Running {
                        seq,
                        adapter: active,
                        weights: adapter,
                        index: job.index,
                        events: job.events,
                        submitted,
                        last_token: None,
                        seen: 0,
                    })
                }
                Err(e) => {
                    self.metrics.finished_error.fetch_add(1, Ordering::Relaxed);
                    let _ = job.events.send((job.index, Event::Error(e.to_string())));
                }
            }
        }
        // Deferred adapters keep their turn: first in line for the next step.
        for key in deferred.into_iter().rev() {
            self.order.push_front(key);
        }
    }

    /// Between steps: dLoRA may swap a merged copy of the base in (or the base back) and sets the
    /// adapter each row runs with on those weights.
    fn merge_or_unmerge(&mut self) {
        let rows = self.running.iter_mut().map(|r| Row {
            seq: &mut r.seq,
            name: r.adapter.as_ref().map(|(n, _)| n.as_str()),
            adapter: r.weights.as_ref(),
        });
        self.model = self.dlora.before_step(rows).clone();
    }

    /// One forward pass over the running batch, then hand out text and retire finished sequences.
    fn step(&mut self) {
        for r in &mut self.running {
            if r.events.is_closed() {
                r.seq.cancel();
            }
        }
        let mut seqs: Vec<&mut Sequence> = self
            .running
            .iter_mut()
            .map(|r| &mut r.seq)
            .filter(|s| !s.is_done())
            .collect();
        if !seqs.is_empty() {
            self.stats.steps.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = generate::step(&self.model, &self.tokenizer, &mut seqs) {
                tracing::error!(error = %e, "batched step failed; failing its sequences");
                for r in self.running.drain(..) {
                    self.metrics.finished_error.fetch_add(1, Ordering::Relaxed);
                    let _ = r.events.send((r.index, Event::Error(e.to_string())));
                }
                self.stats.running.store(0, Ordering::Relaxed);
                return;
            }
        }
        let now = Instant::now();
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            let produced = r.seq.generated().len();
            if produced > r.seen {
                let since = match r.last_token {
                    None => &self.metrics.time_to_first_token,
                    Some(_) => &self.metrics.inter_token_latency,
                };
                since.observe(
                    now.duration_since(r.last_token.unwrap_or(r.submitted))
                        .as_secs_f64(),
                );
                r.seen = produced;
                r.last_token = Some(now);
            }
            let piece = r.seq.take_new_text();
            let logprobs = r.seq.take_new_logprobs();
            let lost = (!logprobs.is_empty()
                && r.events.send((r.index, Event::Logprobs(logprobs))).is_err())
                || (!piece.is_empty()
                    && r.events
                        .send((r.index, Event::Text(piece, produced)))
                        .is_err());
            if lost {
                r.seq.cancel();
            }
            if r.seq.is_done() {
                let r = self.running.swap_remove(i);
                let g = r.seq.into_generation();
                self.metrics.finished(g.finish);
                self.metrics
                    .e2e_latency
                    .observe(now.duration_since(r.submitted).as_secs_f64());
                let st = &self.stats;
                st.finished.fetch_add(1, Ordering::Relaxed);
                if g.finish == FinishReason::Cancelled {
                    st.cancelled.fetch_add(1, Ordering::Relaxed);
                }
                st.prompt_tokens
                    .fetch_add(g.prompt_tokens, Ordering::Relaxed);
                st.generation_tokens
                    .fetch_add(g.tokens.len(), Ordering::Relaxed);
                let _ = r.events.send((
                    r.index,
                    Event::Done {
                        finish: g.finish,
                        prompt_tokens: g.prompt_tokens,
                        completion_tokens: g.tokens.len(),
                    },
                ));
            } else {
                i += 1;
            }
        }
        self.stats
            .running
            .store(self.running.len(), Ordering::Relaxed);
    }
}
