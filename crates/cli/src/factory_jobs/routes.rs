//! The HTTP routes of the job service (listed in [`super`]): submit, list, detail and cancel;
//! the progress stream is in [`super::events`].

use super::store::{DatanetVersion, JobRecord, JobStatus};
use super::{submit, FactoryJobs};
use alloy_primitives::Address;
use axum::{
    extract::{Path, Query, Request, State},
    http::{header, request::Parts, StatusCode},
    routing::{get, post},
    Json, Router,
};
use openledger_factory::TrainConfig;
use openledger_node::{datanets::ApiError, openlora::signed_request, sequencer::now};
use openledger_types::request_auth;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

type ApiResult<T> = Result<T, ApiError>;

/// Most jobs one list answer holds.
pub const MAX_LIST: usize = 1000;

/// The routes, with the service inside (merge them into the node's router).
pub fn router(f: Arc<FactoryJobs>) -> Router {
    Router::new()
        .route("/v1/factory/jobs", post(submit_job).get(list))
        .route("/v1/factory/jobs/{id}", get(detail))
        .route("/v1/factory/jobs/{id}/events", get(super::events::stream))
        .route("/v1/factory/jobs/{id}/cancel", post(cancel))
        .with_state(f)
}

/// Runs `work` off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))?
}

fn disabled() -> ApiError {
    ApiError::Unavailable(
        "this node does not run training jobs: its operator turns them on with [factory] enabled = true in config.toml".into(),
    )
}

/// The signer of a request whose signature covers an empty body, if it is signed.
pub(super) fn caller(parts: &Parts, f: &FactoryJobs, what: &str) -> ApiResult<Option<Address>> {
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let signed = signed_request(parts, &f.node, what)?;
    if signed.body_hash != request_auth::body_hash(b"") {
        return Err(ApiError::Unauthorized(
            "this request has no body: sign the hash of no bytes".into(),
        ));
    }
    Ok(Some(signed.address))
}

async fn submit_job(
    State(f): State<Arc<FactoryJobs>>,
    request: Request,
) -> ApiResult<(StatusCode, Json<JobRecord>)> {
    if !f.settings.enabled {
        return Err(disabled());
    }
    let (parts, body) = request.into_parts();
    let signed = signed_request(&parts, &f.node, "submitting a training job")?;
    f.check_allowed(signed.address)?;
    let max = f.settings.max_config_bytes;
    let too_large = || {
        ApiError::TooLarge(format!(
            "the submission is over {max} bytes ([factory] max_config_bytes); a config is a few hundred"
        ))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_large())?;
    if request_auth::body_hash(&bytes) != signed.body_hash {
        return Err(ApiError::Unauthorized(
            "the body does not match the hash its signature covers (altered in transit, or signed over other bytes)".into(),
        ));
    }
    let (config, refs) =
        submit::parse(&bytes, &f.settings, &f.base_models).map_err(ApiError::BadRequest)?;
    let who = signed.address;
    let svc = f.clone();
    let record = blocking(move || svc.admit(config, &refs, who)).await?;
    tracing::info!(job = record.id, by = %who, datanets = ?record.datanets, "factory: training job queued");
    Ok((StatusCode::ACCEPTED, Json(record)))
}

/// The shape of a model file, read from its header (no weights are loaded).
fn model_shape(path: &std::path::Path) -> Result<openledger_model::LlamaConfig, String> {
    let shape = if path.is_dir() {
        openledger_model::LlamaConfig::from_hf_json(&path.join("config.json"))
    } else {
        openledger_model::load::Gguf::open(path).and_then(|g| g.config())
    };
    shape.map_err(|e| format!("the base model {}: {e}", path.display()))
}

impl FactoryJobs {
    /// Checks a parsed submission against the model and the chain (the datanet versions exist,
    /// their rows are here, `who` may read them), then queues it.
    fn admit(
        &self,
        config: TrainConfig,
        refs: &[(u64, u64)],
        who: Address,
    ) -> ApiResult<JobRecord> {
        let shape = model_shape(&config.base_model).map_err(ApiError::Internal)?;
        config
            .check_against(&shape)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let state = self.node.chain().store().clone();
        let mut datanets = Vec::with_capacity(refs.len());
        for &(id, version) in refs {
            let version = self
                .node
                .datanets
                .export_version(&*state, id, version, Some(who))?;
            datanets.push(DatanetVersion { id, version });
        }
        datanets.dedup();
        let submission = submit::accepted(config, datanets.clone());
        let mut jobs = self.lock();
        let waiting = jobs.queue.len();
        if waiting >= self.settings.max_queued {
            return Err(ApiError::RateLimited(
                format!(
                    "{waiting} training jobs are waiting already, the most this node queues ([factory] max_queued); retry when one has run"
                ),
                60,
            ));
        }
        let id = jobs.next_id;
        let record = JobRecord {
            id,
            status: JobStatus::Queued,
            submitter: who,
            created: now(),
            started: None,
            finished: None,
            step: 0,
            total_steps: None,
            loss: None,
            datanets,
            base_model: submit::file_name(&submission.config.base_model),
            resumed_from: None,
            outcome: None,
            error: None,
            cancelling: false,
        };
        self.store
            .create(&record, &submission)
            .map_err(ApiError::Internal)?;
        jobs.next_id = id + 1;
        jobs.records.insert(id, record.clone());
        jobs.queue.push_back(id);
        drop(jobs);
        self.wake.notify_all();
        Ok(record)
    }
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn list(
    State(f): State<Arc<FactoryJobs>>,
    Query(q): Query<ListQuery>,
) -> Json<Vec<JobRecord>> {
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    Json(
        f.lock()
            .records
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect(),
    )
}

fn read_json(path: &std::path::Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

async fn detail(State(f): State<Arc<FactoryJobs>>, Path(id): Path<u64>) -> ApiResult<Json<Value>> {
    let record = f.record(id)?;
    let svc = f.clone();
    blocking(move || {
        let train = svc.store.train_dir(id);
        // The trainer's resolved config once prepared, else what was accepted.
        let config = TrainConfig::from_toml_file(&train.join(openledger_factory::CONFIG_FILE))
            .ok()
            .or_else(|| svc.store.submission(id).ok().map(|s| s.config));
        let metrics = read_json(&train.join(openledger_factory::METRICS_FILE));
        let path_of = |name: &str| {
            let p = train.join(name);
            p.exists().then(|| p.display().to_string())
        };
        let latest = openledger_factory::checkpoint::latest(&train)
            .ok()
            .flatten();
        let mut v = serde_json::to_value(&record).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["config"] = serde_json::to_value(config).unwrap_or(Value::Null);
        v["metrics"] = metrics.unwrap_or(Value::Null);
        v["paths"] = json!({
            "dir": svc.store.job_dir(id).display().to_string(),
            "job": train.exists().then(|| train.display().to_string()),
            "adapter": path_of(openledger_factory::ADAPTER_DIR),
            "adapter_best": path_of(openledger_factory::BEST_ADAPTER_DIR),
            "log": path_of(openledger_factory::LOG_FILE),
            "plot": path_of(openledger_factory::PLOT_PNG),
            "checkpoint": latest.map(|p| p.display().to_string()),
        });
        Ok(Json(v))
    })
    .await
}

async fn cancel(
    State(f): State<Arc<FactoryJobs>>,
    Path(id): Path<u64>,
    request: Request,
) -> ApiResult<Json<JobRecord>> {
    let (parts, _) = request.into_parts();
    let who = caller(&parts, &f, "cancelling a training job")?.ok_or_else(|| {
        ApiError::Unauthorized(
            "cancelling a training job needs a signed request: name your key with --from (openledger --from KEY factory cancel ID)".into(),
        )
    })?;
    let record = f.record(id)?;
    if who != record.submitter && !f.settings.operators.contains(&who) {
        return Err(ApiError::Forbidden(format!(
            "{who} may not cancel job {id}: only its submitter {} or an operator of this node ([factory] operators) may",
            record.submitter
        )));
    }
    let mut jobs = f.lock();
    let status = jobs.records.get(&id).map(|r| r.status);
    match status {
        Some(JobStatus::Queued) => {
            jobs.queue.retain(|&q| q != id);
            drop(jobs);
            f.update(id, true, |r| {
                r.status = JobStatus::Cancelled;
                r.finished = Some(now());
            });
        }
        Some(JobStatus::Running) => {
            match &jobs.running {
                Some(r) if r.id == id => {
                    r.cancel.store(true, Ordering::SeqCst);
                    r.stop.store(true, Ordering::SeqCst);
                }
                // Queued to resume after a restart: not started yet.
                _ => jobs.queue.retain(|&q| q != id),
            }
            let running_now = jobs.running.as_ref().is_some_and(|r| r.id == id);
            drop(jobs);
            if running_now {
                f.update(id, false, |r| r.cancelling = r.status == JobStatus::Running);
            } else {
                f.update(id, true, |r| {
                    r.status = JobStatus::Cancelled;
                    r.finished = Some(now());
                });
            }
        }
        Some(s) => {
            return Err(ApiError::BadRequest(format!(
                "job {id} has already ended ({}): there is nothing to cancel",
                s.as_str()
            )))
        }
        None => {
            return Err(ApiError::NotFound(format!(
                "no training job {id} on this node"
            )))
        }
    }
    tracing::info!(job = id, by = %who, "factory: training job cancel requested");
    f.record(id).map(Json)
}
