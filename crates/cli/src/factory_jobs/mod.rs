//! ModelFactory training jobs run by the node for chain accounts (`[factory]` in config.toml),
//! behind the node's REST guards:
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/factory/jobs` | signed by an allowed account: `{"config": {…}, "datanets": ["ID@VERSION"]}`; 202 with the queued job |
//! | `GET /v1/factory/jobs?limit=` | the jobs, newest first: id, status, step, total_steps, loss, submitter, created |
//! | `GET /v1/factory/jobs/{id}` | one job: its record, config, metrics and paths on the node |
//! | `GET /v1/factory/jobs/{id}/events` | Server-Sent Events: its log from the start, then live progress until it ends |
//! | `POST /v1/factory/jobs/{id}/cancel` | signed by the submitter or a `[factory] operators` account |
//!
//! Who may make the node train: a job holds this machine's CPU for a long time, so a
//! submission must be a signed request ([`openledger_types::request_auth`]: nonce, time and
//! body hash, replays refused) by an account in `[factory] allow`. Its datanet versions are
//! checked against the chain with the submitter's grants (the same check as an export) before
//! it is queued, and again when it starts, before any row is read; rows come from the node's own
//! store, never over HTTP. The config is bounded (`max_config_bytes`, `max_steps`,
//! `max_batch_tokens`, samples, checkpoints kept), names no file on the node (base models
//! come from `[factory] base_models`), and settings that cannot train are refused (400) before
//! anything is queued; at most `max_queued` jobs wait (429 past it).
//!
//! What anyone may read: the list and each job's record, config and metrics (hyperparameters,
//! datanet ids, losses and node paths: nothing secret). A job's progress stream carries
//! generated samples and the held-out rows they answer, so for a job on a permissioned datanet
//! it is served only to a signed request by an account with access to every datanet of the job.
//!
//! One job trains at a time on a dedicated OS thread ([`worker`]); the rest queue first in,
//! first out. State lives under `<home>/data/factory/jobs/` ([`store`]); a restarted node
//! queues the queued jobs again and resumes the running one from its last checkpoint
//! (`Job::resume`), which ends with the same adapter as an uninterrupted run.

mod events;
mod routes;
pub mod store;
pub mod submit;
mod worker;

use alloy_primitives::Address;
use openledger_node::{config::FactorySettings, datanets::ApiError, sequencer::Node, NodeConfig};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use store::{JobRecord, JobStatus, Store};

pub use routes::router;

/// A progress event of one job, as JSON (`{"event": "step", "job": 3, …}`).
#[derive(Clone, Debug)]
pub struct JobEvent {
    pub job: u64,
    pub data: Arc<serde_json::Value>,
}

impl JobEvent {
    pub fn kind(&self) -> &str {
        self.data["event"].as_str().unwrap_or("message")
    }
}

/// The job running now, and how to stop it.
struct Running {
    id: u64,
    stop: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
}

/// The jobs, the queue and the running job.
struct Jobs {
    records: BTreeMap<u64, JobRecord>,
    queue: VecDeque<u64>,
    next_id: u64,
    running: Option<Running>,
    /// The running job's `started` event, replayed to streams that join later.
    started: Option<(u64, serde_json::Value)>,
    stopping: bool,
}

/// The node's job service (one per node).
pub struct FactoryJobs {
    node: Arc<Node>,
    settings: FactorySettings,
    /// The base models jobs may train on (absolute paths).
    base_models: Vec<PathBuf>,
    store: Store,
    jobs: Mutex<Jobs>,
    wake: Condvar,
    /// Every job's progress, for the event streams.
    events: tokio::sync::broadcast::Sender<JobEvent>,
    /// Ends the event streams when the node stops.
    closing: tokio::sync::watch::Sender<bool>,
    streams: Arc<tokio::sync::Semaphore>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

impl FactoryJobs {
    /// Opens the jobs under `dir` (`<home>/data/factory`) and, when `[factory] enabled`, starts
    /// the training thread, which first resumes the job a stopped node was running.
    pub fn start(node: Arc<Node>, config: &NodeConfig, dir: &Path) -> Result<Arc<Self>, String> {
        let settings = config.factory.clone();
        let base_models = if settings.base_models.is_empty() {
            config.serve.model.iter().map(|p| absolute(p)).collect()
        } else {
            settings.base_models.iter().map(|p| absolute(p)).collect()
        };
        let store = Store::open(&dir.join("jobs"))?;
        let (records, next_id) = store.load()?;
        // The job that was running goes first (it resumes), then the queued ones in order.
        let mut queue: VecDeque<u64> = records
            .iter()
            .filter(|r| r.status == JobStatus::Queued)
            .map(|r| r.id)
            .collect();
        for r in records.iter().rev() {
            if r.status == JobStatus::Running {
                queue.push_front(r.id);
            }
        }
        let (closing, _) = tokio::sync::watch::channel(false);
        let jobs = Arc::new(FactoryJobs {
            node,
            base_models,
            store,
            jobs: Mutex::new(Jobs {
                records: records.into_iter().map(|r| (r.id, r)).collect(),
                queue,
                next_id,
                running: None,
                started: None,
                stopping: false,
            }),
            wake: Condvar::new(),
            events: tokio::sync::broadcast::channel(1024).0,
            closing,
            streams: Arc::new(tokio::sync::Semaphore::new(
                settings.max_event_streams.max(1),
            )),
            worker: Mutex::new(None),
            settings,
        });
        if jobs.settings.enabled {
            let queued = jobs.lock().queue.len();
            if queued > 0 {
                tracing::info!(jobs = queued, "factory: resuming queued training jobs");
            }
            let handle = worker::spawn(jobs.clone())
                .map_err(|e| format!("starting the ModelFactory training thread: {e}"))?;
            *jobs.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        }
        Ok(jobs)
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the training thread to stop (the running job checkpoints at the end of its step
    /// and stays `running`, to resume at the next start) and ends the event streams.
    pub fn stop(&self) {
        let mut jobs = self.lock();
        jobs.stopping = true;
        if let Some(r) = &jobs.running {
            r.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        drop(jobs);
        self.wake.notify_all();
        let _ = self.closing.send(true);
    }

    /// Waits (at most a minute) for the training thread to write its checkpoint and end.
    pub async fn wait_stopped(self: &Arc<Self>) {
        let Some(handle) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let waited = tokio::task::spawn_blocking(move || handle.join());
        if tokio::time::timeout(std::time::Duration::from_secs(60), waited)
            .await
            .is_err()
        {
            tracing::warn!("factory: the training job did not stop within 60 s; it resumes from its last checkpoint at the next start");
        }
    }

    /// A snapshot of job `id`'s record.
    fn record(&self, id: u64) -> Result<JobRecord, ApiError> {
        self.lock()
            .records
            .get(&id)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no training job {id} on this node")))
    }

    /// Updates job `id`'s record, saves it (when `persist`) and announces a status change.
    fn update(&self, id: u64, persist: bool, f: impl FnOnce(&mut JobRecord)) {
        let mut jobs = self.lock();
        let Some(r) = jobs.records.get_mut(&id) else {
            return;
        };
        let before = r.status;
        f(r);
        let r = r.clone();
        drop(jobs);
        if persist {
            if let Err(e) = self.store.save(&r) {
                tracing::error!(job = id, error = %e, "factory: saving the job's status");
            }
        }
        if r.status != before {
            self.announce(id, status_event(&r));
        }
    }

    /// Sends an event to the job's progress streams.
    fn announce(&self, job: u64, mut data: serde_json::Value) {
        data["job"] = job.into();
        let _ = self.events.send(JobEvent {
            job,
            data: Arc::new(data),
        });
    }

    /// Whether `who` may submit jobs.
    fn check_allowed(&self, who: Address) -> Result<(), ApiError> {
        if self.settings.allow.contains(&who) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "{who} may not submit training jobs to this node: its operator lists the accounts that may in [factory] allow"
            )))
        }
    }
}

/// The `status` event of a record.
fn status_event(r: &JobRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "event": "status",
        "status": r.status.as_str(),
        "step": r.step,
        "total_steps": r.total_steps,
    });
    if let Some(e) = &r.error {
        v["error"] = e.clone().into();
    }
    if let Some(o) = &r.outcome {
        v["outcome"] = o.clone().into();
    }
    v
}
