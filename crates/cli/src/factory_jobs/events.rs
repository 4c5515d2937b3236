//! `GET /v1/factory/jobs/{id}/events`: a job's progress as Server-Sent Events. The stream
//! replays what the job has logged so far (its status and, while it runs, its `started` event;
//! `samples.json`'s "before" generations; every line of `log.jsonl`: training steps and
//! evaluations), then follows it live: steps, evaluations,
//! checkpoints, samples, notes and status changes, until a final `status` event (`done`,
//! `failed`, `cancelled`). Each event's name is its `event` field; its data is the JSON object.
//!
//! Streams are bounded: at most `[factory] max_event_streams` at once (503 past it), each for at
//! most an hour (a client reconnects and gets the replay again), and all end when the node
//! stops. For a job on a permissioned datanet (samples carry held-out rows) the request must be
//! signed by an account with access to each of its datanets.

use super::routes::caller;
use super::store::{DatanetVersion, JobStatus};
use super::{status_event, FactoryJobs, JobEvent};
use alloy_primitives::Address;
use axum::{
    extract::{Path, Request, State},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
};
use openledger_node::datanets::{check_access, ApiError};
use openledger_state::modules::datanet;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit};

/// The longest one stream stays open.
const MAX_STREAM: Duration = Duration::from_secs(3600);

pub(super) async fn stream(
    State(f): State<Arc<FactoryJobs>>,
    Path(id): Path<u64>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let who = caller(&parts, &f, "reading a training job's progress")?;
    let record = f.record(id)?;
    let svc = f.clone();
    tokio::task::spawn_blocking(move || svc.check_readable(&record.datanets, who))
        .await
        .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))??;
    let permit = f.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Busy(
            format!(
                "{} progress streams are open, the most this node serves at once ([factory] max_event_streams); retry shortly",
                f.settings.max_event_streams
            ),
            5,
        )
    })?;
    // Subscribed before the log is read, so nothing falls between the replay and the live part.
    let live = f.events.subscribe();
    let closing = f.closing.subscribe();
    let (tx, rx) = mpsc::channel::<Event>(64);
    tokio::spawn(produce(f, id, live, closing, tx, permit));
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

impl FactoryJobs {
    /// Refuses `who` unless every datanet of the job is public or readable by them.
    fn check_readable(
        &self,
        datanets: &[DatanetVersion],
        who: Option<Address>,
    ) -> Result<(), ApiError> {
        let state = self.node.chain().store().clone();
        for dv in datanets {
            let d = datanet::datanet(&*state, dv.id)?;
            check_access(&*state, &d, who)?;
        }
        Ok(())
    }
}

fn sse(mut data: Value, job: u64) -> Event {
    data["job"] = job.into();
    let kind = data["event"].as_str().unwrap_or("message").to_string();
    Event::default().event(kind).data(data.to_string())
}

/// What a job has written so far.
#[derive(Default)]
struct Replay {
    /// `samples` events by phase.
    samples: Vec<(String, Value)>,
    /// `step` and `eval` events from `log.jsonl`.
    log: Vec<Value>,
}

fn read_replay(train: &std::path::Path) -> Replay {
    let mut r = Replay::default();
    if let Some(all) = std::fs::read_to_string(train.join(openledger_factory::SAMPLES_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, Value>>(&t).ok())
    {
        for phase in ["before", "after"] {
            if let Some(s) = all.get(phase) {
                r.samples.push((
                    phase.into(),
                    json!({"event": "samples", "phase": phase, "samples": s}),
                ));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string(train.join(openledger_factory::LOG_FILE)) {
        // A line still being written does not parse and is left to the live part.
        for line in text.lines() {
            if let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(line) {
                let kind = if o.contains_key("val_loss") {
                    "eval"
                } else {
                    "step"
                };
                o.insert("event".into(), kind.into());
                r.log.push(Value::Object(o));
            }
        }
    }
    r
}

async fn produce(
    f: Arc<FactoryJobs>,
    id: u64,
    mut live: broadcast::Receiver<JobEvent>,
    mut closing: watch::Receiver<bool>,
    tx: mpsc::Sender<Event>,
    _permit: OwnedSemaphorePermit,
) {
    let Ok(record) = f.record(id) else { return };
    let started = f
        .lock()
        .started
        .as_ref()
        .filter(|(job, _)| *job == id)
        .map(|(_, v)| v.clone());
    let train = f.store.train_dir(id);
    let replay = tokio::task::spawn_blocking(move || read_replay(&train))
        .await
        .unwrap_or_default();
    let ended = record.status.is_final();
    let mut out = Vec::new();
    if !ended {
        out.push(status_event(&record));
    }
    let started_at = started.as_ref().and_then(|v| v["start_step"].as_u64());
    out.extend(started);
    let mut phases = HashSet::new();
    for (phase, v) in replay.samples.iter().filter(|(p, _)| p == "before") {
        phases.insert(phase.clone());
        out.push(v.clone());
    }
    let mut last_step = None;
    let mut evals = HashSet::new();
    for v in replay.log {
        let step = v["step"].as_u64().unwrap_or(0);
        if v["event"] == "eval" {
            evals.insert(step);
        } else {
            last_step = last_step.max(Some(step));
        }
        out.push(v);
    }
    if ended {
        out.extend(
            replay
                .samples
                .iter()
                .filter(|(p, _)| p == "after")
                .map(|(_, v)| v.clone()),
        );
        out.push(status_event(&record));
    }
    for v in out {
        if tx.send(sse(v, id)).await.is_err() {
            return;
        }
    }
    if ended || *closing.borrow() {
        return;
    }
    let deadline = tokio::time::sleep(MAX_STREAM);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            _ = &mut deadline => return,
            _ = closing.changed() => return,
            e = live.recv() => e,
        };
        let e = match event {
            Ok(e) if e.job == id => e,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let note = json!({"event": "note", "message": format!("{n} progress events were skipped (the stream fell behind)")});
                if tx.send(sse(note, id)).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let step = e.data["step"].as_u64();
        let replayed = match e.kind() {
            "step" => step.is_some_and(|s| Some(s) <= last_step),
            "eval" => step.is_some_and(|s| evals.contains(&s)),
            "samples" => e.data["phase"].as_str().is_some_and(|p| phases.contains(p)),
            "started" => e.data["start_step"].as_u64() == started_at && started_at.is_some(),
            _ => false,
        };
        if replayed {
            continue;
        }
        let last = e.kind() == "status"
            && e.data["status"].as_str().is_some_and(|s| {
                s != JobStatus::Queued.as_str() && s != JobStatus::Running.as_str()
            });
        if tx.send(sse((*e.data).clone(), id)).await.is_err() || last {
            return;
        }
    }
}
