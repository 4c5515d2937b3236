//! `POST /v1/factory/jobs/{id}/publish`: readies a training job this node finished for
//! publication from the browser, which then signs `IModel.registerAdapter` itself (no key leaves
//! the browser). Signed ([`openledger_types::request_auth`]) by the job's submitter, body
//! `{"name": "<adapter name>", "best": false}`. The node does what `openledger factory publish`
//! does on the job directory — refuses a job that did not finish or whose config or adapter
//! changed since, packs the adapter with the job's `config.toml` and `metrics.json` as its
//! training configuration (the same `training_config.json`, so the same `trainingConfigHash`),
//! finds the base model on chain by the hash of the job's base model file, builds the
//! attribution index of exactly the datanet versions the job trained on (rows read from its
//! own store with the submitter's access) — and stores the bundle and the index where OpenLoRA
//! serves them from. It answers the arguments of `registerAdapter`:
//! `base_model_id, name, datanet_ids, datanet_versions, training_config_hash, adapter_hash,
//! attribution_index_root`.
//!
//! The checks, the staged files and the index are those of `openledger factory publish`
//! ([`crate::factory_cmd::publish`], [`crate::index_cmd::create_for_versions`]); the bundle and
//! the index go into OpenLoRA's store through [`openledger_node::openlora::artifacts`].
//!
//! Bounded: one publication at a time (429 while one runs; the slot is held until the work
//! ends, even when the client hangs up), a body of at most [`MAX_BODY`] bytes,
//! the adapter weights at most `MAX_WEIGHTS_BYTES`; the name must be free on chain.

use crate::factory_cmd::publish::{finished_job, stage_adapter};
use crate::factory_jobs::store::{JobRecord, JobStatus, STATUS_FILE, TRAIN_DIR};
use crate::index_cmd::create_for_versions;
use crate::publish_adapter::MAX_WEIGHTS_BYTES;
use alloy_primitives::B256;
use axum::{
    extract::{Path as UrlPath, Request, State},
    routing::post,
    Json, Router,
};
use openledger_attribution::{BuildOptions, RowTokens};
use openledger_node::{
    datanets::ApiError,
    openlora::{bundle, signed_request, OpenLora},
    sequencer::Node,
};
use openledger_state::{modules::model, ExecError};
use openledger_types::request_auth;
use rayon::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Largest request body.
pub const MAX_BODY: usize = 4096;

/// Where the publication is assembled inside the job's train directory.
const PUBLISH_DIR: &str = "publish-web";

/// Most base models scanned for the job's model hash.
const MAX_BASE_MODELS: u64 = 100_000;

/// The service: the node, OpenLoRA's artifact store, the jobs directory.
pub struct PublishService {
    node: Arc<Node>,
    openlora: Arc<OpenLora>,
    jobs: PathBuf,
    slot: Arc<Semaphore>,
}

/// The route over the jobs in `jobs` (`<home>/data/factory/jobs`).
pub fn router(node: Arc<Node>, openlora: Arc<OpenLora>, jobs: PathBuf) -> Router {
    let svc = Arc::new(PublishService {
        node,
        openlora,
        jobs,
        slot: Arc::new(Semaphore::new(1)),
    });
    Router::new()
        .route("/v1/factory/jobs/{id}/publish", post(publish))
        .with_state(svc)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    name: String,
    #[serde(default)]
    best: bool,
}

async fn publish(
    State(svc): State<Arc<PublishService>>,
    UrlPath(id): UrlPath<u64>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (parts, body) = request.into_parts();
    let signed = signed_request(&parts, &svc.node, "publishing a training job")?;
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::TooLarge(format!(
            "the body is over {MAX_BODY} bytes; it is {{\"name\": …}}"
        ))
    })?;
    if request_auth::body_hash(&bytes) != signed.body_hash {
        return Err(ApiError::Unauthorized(
            "the body does not match the hash its signature covers".into(),
        ));
    }
    let req: PublishRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"name\": \"<adapter name>\", \"best\": false}}: {e}"
        ))
    })?;
    let permit = svc.slot.clone().try_acquire_owned().map_err(|_| {
        ApiError::RateLimited(
            "a publication is being prepared on this node already; retry shortly".into(),
            5,
        )
    })?;
    let who = signed.address;
    let s = svc.clone();
    // The slot moves into the blocking task: it is held until the work ends, even if this
    // request is dropped (client gone, request timeout), so publications never overlap.
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        s.prepare(id, who, &req)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the publishing task failed: {e}")))??;
    tracing::info!(job = id, by = %who, adapter = %answer["name"], "factory: job prepared for publication");
    Ok(Json(answer))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

impl PublishService {
    /// The job's record, checked: it exists, `who` submitted it and it is done.
    fn finished_record(
        &self,
        id: u64,
        who: alloy_primitives::Address,
    ) -> Result<JobRecord, ApiError> {
        let path = self.jobs.join(id.to_string()).join(STATUS_FILE);
        if !path.is_file() {
            return Err(ApiError::NotFound(format!(
                "no training job {id} on this node"
            )));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| internal(format!("reading {}: {e}", path.display())))?;
        let r: JobRecord = serde_json::from_str(&text)
            .map_err(|e| internal(format!("{}: {e}", path.display())))?;
        if r.submitter != who {
            return Err(ApiError::Forbidden(format!(
                "job {id} was submitted by {}; only its submitter publishes it (you are {who})",
                r.submitter
            )));
        }
        if r.status != JobStatus::Done {
            return Err(ApiError::BadRequest(format!(
                "job {id} is {}: only a finished job is published",
                r.status.as_str()
            )));
        }
        Ok(r)
    }

    fn prepare(
        &self,
        id: u64,
        who: alloy_primitives::Address,
        req: &PublishRequest,
    ) -> Result<Value, ApiError> {
        let record = self.finished_record(id, who)?;
        let train = self.jobs.join(id.to_string()).join(TRAIN_DIR);
        // The same checks and files as `openledger factory publish` on the job directory.
        let job = finished_job(&train, req.best)
            .map_err(|e| ApiError::BadRequest(format!("job {id}: {e:#}")))?;
        let config = &job.config;
        let state = self.node.chain().store().clone();
        model::check_adapter_name(&req.name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(taken) = model::adapter_by_name(&*state, &req.name).map_err(internal)? {
            return Err(ApiError::BadRequest(format!(
                "the name {:?} is taken on chain (adapter {taken}); pick another",
                req.name
            )));
        }
        let base = self.base_model_id(&*state, &config.base_model)?;
        if record.datanets.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "job {id} trained on no datanet version"
            )));
        }

        // The bundle: the PEFT files and the job's config and metrics as its training config.
        let staging = train.join(PUBLISH_DIR);
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(internal)?;
        }
        let adapter_out = staging.join("adapter");
        stage_adapter(&job, &adapter_out).map_err(|e| internal(format!("{e:#}")))?;
        let packed =
            bundle::pack_dir(&adapter_out, MAX_WEIGHTS_BYTES).map_err(ApiError::BadRequest)?;
        self.openlora
            .artifacts
            .put(&packed.hash, &packed.bytes)
            .map_err(|e| internal(format!("storing the adapter bundle: {e}")))?;

        // The attribution index of exactly the trained-on versions.
        let root = self.build_index(
            &*state,
            &record,
            &config.base_model,
            &staging.join("index"),
            who,
        )?;
        Ok(json!({
            "job": id,
            "name": req.name,
            "base_model_id": base,
            "datanet_ids": record.datanets.iter().map(|d| d.id).collect::<Vec<_>>(),
            "datanet_versions": record.datanets.iter().map(|d| d.version).collect::<Vec<_>>(),
            "training_config_hash": packed.config_hash,
            "adapter_hash": packed.hash,
            "attribution_index_root": root,
        }))
    }

    /// The on-chain base model registered with the hash of `path`.
    fn base_model_id(
        &self,
        state: &dyn openledger_state::StateRead,
        path: &Path,
    ) -> Result<u64, ApiError> {
        let hash = crate::openlora_glue::model_hash(path).map_err(internal)?;
        for id in 1..=MAX_BASE_MODELS {
            match model::base_model(state, id) {
                Ok(b) if b.modelHash == hash => return Ok(id),
                Ok(_) => {}
                Err(ExecError::NotFound(_)) => break,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(ApiError::BadRequest(format!(
            "no base model on chain has the hash of the job's base model {} ({hash}): register it first (openledger model register-base NAME --hash {hash})",
            path.display()
        )))
    }

    /// Builds the index of the job's datanet versions in `out` and moves it where OpenLoRA
    /// finds it; returns its root.
    fn build_index(
        &self,
        state: &dyn openledger_state::StateRead,
        record: &JobRecord,
        model: &Path,
        out: &Path,
        who: alloy_primitives::Address,
    ) -> Result<B256, ApiError> {
        let tok = openledger_model::Tokenizer::for_model(model)
            .map_err(|e| internal(format!("the tokenizer of {}: {e}", model.display())))?;
        let mut rows = Vec::new();
        for dv in &record.datanets {
            self.node
                .datanets
                .for_each_row(state, dv.id, dv.version, Some(who), |r| {
                    rows.push(r);
                    true
                })?;
        }
        let tokens: Vec<RowTokens> = rows
            .par_iter()
            .map(|r| {
                Ok(RowTokens {
                    tokens: tok.encode_plain(&r.row.fields().join("\n"))?,
                    contribution_id: r.contribution_id,
                    contributor: r.contributor,
                })
            })
            .collect::<Result<_, openledger_model::ModelError>>()
            .map_err(internal)?;
        let targets: Vec<(u64, u64)> = record.datanets.iter().map(|d| (d.id, d.version)).collect();
        let root = create_for_versions(
            &targets,
            &tokens,
            &tok,
            model,
            out,
            &BuildOptions::default(),
        )
        .map_err(|e| internal(format!("building the attribution index: {e:#}")))?
        .root();
        self.openlora
            .artifacts
            .store_index(out, &root)
            .map_err(internal)?;
        Ok(root)
    }
}
