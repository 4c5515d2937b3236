//! The training thread: takes the queue's first job, exports its datanet versions from the
//! node's own store (checking the submitter's grants again, before any row is read), prepares
//! the trainer's job directory (or resumes it from its last checkpoint), trains, and records how
//! it ended. Progress goes to the job's record and to its event streams as it happens.

use super::store::{DatanetVersion, JobStatus};
use super::{FactoryJobs, Running};
use alloy_primitives::Address;
use openledger_factory::config::{DatasetSpec, Format};
use openledger_factory::{Event, Job, Progress, Status};
use openledger_node::sequencer::now;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub(super) fn spawn(f: Arc<FactoryJobs>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("factory-jobs".into())
        .spawn(move || run(&f))
}

/// How a job's run ended, short of an error.
enum End {
    Done {
        outcome: &'static str,
        step: u64,
        loss: Option<f64>,
    },
    /// The stop flag was raised (a cancel, or the node stopping).
    Stopped,
}

fn run(f: &FactoryJobs) {
    loop {
        let (id, stop, cancel) = {
            let mut jobs = f.lock();
            let id = loop {
                if jobs.stopping {
                    return;
                }
                if let Some(id) = jobs.queue.pop_front() {
                    break id;
                }
                jobs = f.wake.wait(jobs).unwrap_or_else(|p| p.into_inner());
            };
            let (stop, cancel) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            jobs.running = Some(Running {
                id,
                stop: stop.clone(),
                cancel: cancel.clone(),
            });
            (id, stop, cancel)
        };
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train(f, id, &stop)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown".into());
                Err(format!("the trainer panicked: {msg}"))
            });
        let cancelled = cancel.load(Ordering::SeqCst);
        // The record says how the job ended before it stops being the running one, so a
        // cancel in between finds it ended.
        match ended {
            Ok(End::Done {
                outcome,
                step,
                loss,
            }) => {
                tracing::info!(job = id, outcome, step, "factory: training job done");
                f.update(id, true, |r| {
                    r.status = JobStatus::Done;
                    r.outcome = Some(outcome.into());
                    r.step = step;
                    r.loss = loss.or(r.loss);
                    r.finished = Some(now());
                    r.cancelling = false;
                });
            }
            Ok(End::Stopped) if cancelled => {
                tracing::info!(job = id, "factory: training job cancelled");
                f.update(id, true, |r| {
                    r.status = JobStatus::Cancelled;
                    r.finished = Some(now());
                    r.cancelling = false;
                });
            }
            // The node is stopping: the job stays `running` and resumes at the next start.
            Ok(End::Stopped) => {}
            Err(e) => {
                tracing::warn!(job = id, error = %e, "factory: training job failed");
                f.update(id, true, |r| {
                    r.status = if cancelled {
                        JobStatus::Cancelled
                    } else {
                        JobStatus::Failed
                    };
                    r.error = Some(e);
                    r.finished = Some(now());
                    r.cancelling = false;
                });
            }
        }
        let mut jobs = f.lock();
        jobs.running = None;
        jobs.started = None;
    }
}

/// Runs job `id` until it ends or `stop` is raised.
fn train(f: &FactoryJobs, id: u64, stop: &AtomicBool) -> Result<End, String> {
    let record = f.record(id).map_err(|e| e.to_string())?;
    let submission = f.store.submission(id)?;
    f.update(id, true, |r| {
        r.status = JobStatus::Running;
        r.started.get_or_insert(now());
    });
    let dir = f.store.train_dir(id);
    let resuming = dir.join(openledger_factory::CONFIG_FILE).is_file();
    let mut job = if resuming {
        Job::resume(&dir).map_err(|e| format!("resuming from {}: {e}", dir.display()))?
    } else {
        if dir.exists() {
            // A preparation cut short: start it again.
            std::fs::remove_dir_all(&dir)
                .map_err(|e| format!("clearing {}: {e}", dir.display()))?;
        }
        let Some(specs) = export(f, id, record.submitter, &submission.datanets, stop)? else {
            return Ok(End::Stopped);
        };
        let mut config = submission.config.clone();
        config.datasets = specs;
        let job = Job::prepare(config, &dir).map_err(|e| e.to_string())?;
        if job.total_steps() > f.settings.max_steps {
            return Err(format!(
                "the job would run {} steps, more than this node's {} per job ([factory] max_steps): set max_steps or fewer num_train_epochs",
                job.total_steps(),
                f.settings.max_steps
            ));
        }
        job
    };
    let start = job.state().step;
    f.update(id, true, |r| {
        r.total_steps = Some(job.total_steps());
        r.step = start;
        if resuming && start > 0 {
            r.resumed_from = Some(start);
        }
    });
    if resuming && start > 0 {
        tracing::info!(
            job = id,
            step = start,
            "factory: resuming training job from its checkpoint"
        );
    }
    if stop.load(Ordering::SeqCst) {
        return Ok(End::Stopped);
    }
    let outcome = job.run(&Sink { f, id }, stop).map_err(|e| e.to_string())?;
    Ok(match outcome.status {
        Status::Stopped => End::Stopped,
        s => End::Done {
            outcome: s.as_str(),
            step: outcome.metrics.steps,
            loss: outcome.metrics.train_loss,
        },
    })
}

/// Writes each datanet version's rows (as `GET /v1/datanets/{id}/export` does) into the job's
/// `datanets/` directory, read for `submitter`: a grant revoked since the submission stops the
/// job here. `None` when `stop` was raised.
fn export(
    f: &FactoryJobs,
    id: u64,
    submitter: Address,
    datanets: &[DatanetVersion],
    stop: &AtomicBool,
) -> Result<Option<Vec<DatasetSpec>>, String> {
    let dir = f.store.exports_dir(id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let state = f.node.chain().store().clone();
    let mut specs = Vec::new();
    for dv in datanets {
        let path = dir.join(format!("{}@{}.jsonl", dv.id, dv.version));
        let file =
            std::fs::File::create(&path).map_err(|e| format!("writing {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        let mut failed = None;
        f.node
            .datanets
            .for_each_row(&*state, dv.id, dv.version, Some(submitter), |row| {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                let written = serde_json::to_writer(&mut out, &row)
                    .map_err(|e| e.to_string())
                    .and_then(|()| out.write_all(b"\n").map_err(|e| e.to_string()));
                match written {
                    Ok(()) => true,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            })
            .map_err(|e| format!("reading datanet {dv}: {e}"))?;
        if let Some(e) = failed {
            return Err(format!("writing {}: {e}", path.display()));
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        out.flush()
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        specs.push(DatasetSpec {
            path,
            format: Format::Datanet,
            datanet: Some(dv.to_string()),
        });
    }
    Ok(Some(specs))
}

/// Passes the trainer's events to the job's record and its event streams.
struct Sink<'a> {
    f: &'a FactoryJobs,
    id: u64,
}

impl Progress for Sink<'_> {
    fn event(&self, event: &Event) {
        match event {
            Event::Started {
                start_step,
                total_steps,
                ..
            } => self.f.update(self.id, false, |r| {
                r.step = *start_step;
                r.total_steps = Some(*total_steps);
            }),
            Event::Step(s) => self.f.update(self.id, false, |r| {
                r.step = s.step;
                r.loss = Some(s.loss);
            }),
            // The record on disk follows the checkpoints: a restart resumes from there.
            Event::Checkpoint { step, .. } => self.f.update(self.id, true, |r| r.step = *step),
            _ => {}
        }
        match serde_json::to_value(event) {
            Ok(v) => {
                if matches!(event, Event::Started { .. }) {
                    self.f.lock().started = Some((self.id, v.clone()));
                }
                self.f.announce(self.id, v)
            }
            Err(e) => {
                tracing::warn!(job = self.id, error = %e, "factory: an event did not serialize")
            }
        }
    }
}
