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
//! Bounded: one publication at a time (429 while one runs), a body of at most [`MAX_BODY`] bytes,
//! the adapter weights at most `MAX_WEIGHTS_BYTES`; the name must be free on chain.

use crate::factory_jobs::store::{JobRecord, JobStatus, STATUS_FILE, TRAIN_DIR};
use crate::publish_adapter::MAX_WEIGHTS_BYTES;
use alloy_primitives::B256;
use axum::{
    extract::{Path as UrlPath, Request, State},
    routing::post,
    Json, Router,
};
use openledger_attribution::{BuildOptions, Index, RowTokens};
use openledger_factory::{Metrics, TrainConfig};
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
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Largest request body.
pub const MAX_BODY: usize = 4096;

/// The format tag of a factory job's training configuration (as `openledger factory publish`
/// writes it).
const TRAINING_CONFIG_FORMAT: &str = "openledger-factory/1";

/// Where the publication is assembled inside the job's train directory.
const PUBLISH_DIR: &str = "publish-web";

/// Most base models scanned for the job's model hash.
const MAX_BASE_MODELS: u64 = 100_000;

/// The service: the node, OpenLoRA's artifact store, the jobs directory.
pub struct PublishService {
    node: Arc<Node>,
    openlora: Arc<OpenLora>,
    jobs: PathBuf,
    slot: Semaphore,
}

/// The route over the jobs in `jobs` (`<home>/data/factory/jobs`).
pub fn router(node: Arc<Node>, openlora: Arc<OpenLora>, jobs: PathBuf) -> Router {
    let svc = Arc::new(PublishService {
        node,
        openlora,
        jobs,
        slot: Semaphore::new(1),
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
    let _permit = svc.slot.try_acquire().map_err(|_| {
        ApiError::RateLimited(
            "a publication is being prepared on this node already; retry shortly".into(),
            5,
        )
    })?;
    let who = signed.address;
    let s = svc.clone();
    let answer = tokio::task::spawn_blocking(move || s.prepare(id, who, &req))
        .await
        .map_err(|e| ApiError::Internal(format!("the publishing task failed: {e}")))??;
    tracing::info!(job = id, by = %who, adapter = %answer["name"], "factory: job prepared for publication");
    Ok(Json(answer))
}

fn read(path: &Path) -> Result<String, ApiError> {
    std::fs::read_to_string(path)
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))
}

fn blake3_of(path: &Path) -> Result<B256, ApiError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?;
    Ok(bundle::blake3_hash(&bytes))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Writes `bytes` to `path` unless a file is there (write to a side file, then rename).
fn put_once(path: &Path, bytes: &[u8]) -> Result<(), ApiError> {
    if path.is_file() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(internal)?;
    }
    let tmp = path.with_extension(format!("partial-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(internal)?;
    std::fs::rename(&tmp, path).map_err(internal)
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
        let r: JobRecord = serde_json::from_str(&read(&path)?)
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
        let metrics_text = read(&train.join(openledger_factory::METRICS_FILE))?;
        let m: Metrics = serde_json::from_str(&metrics_text).map_err(internal)?;
        if m.status != "finished" && m.status != "early_stopped" {
            return Err(ApiError::BadRequest(format!(
                "job {id} did not finish training ({} at step {} of {})",
                m.status, m.steps, m.total_steps
            )));
        }
        let config_path = train.join(openledger_factory::CONFIG_FILE);
        let config_text = read(&config_path)?;
        if alloy_primitives::hex::encode(blake3_of(&config_path)?) != m.config_hash {
            return Err(ApiError::Unprocessable(format!(
                "{} changed after job {id} finished: the adapter was not trained with it",
                config_path.display()
            )));
        }
        let adapter = train.join(if req.best {
            openledger_factory::BEST_ADAPTER_DIR
        } else {
            openledger_factory::ADAPTER_DIR
        });
        let weights = adapter.join(bundle::WEIGHTS_FILE);
        if !weights.is_file() {
            return Err(ApiError::BadRequest(if req.best {
                format!("job {id} kept no best adapter (it had no validation set): publish the final one")
            } else {
                format!("job {id} has no adapter weights")
            }));
        }
        if !req.best
            && m.adapter_hash.as_deref()
                != Some(alloy_primitives::hex::encode(blake3_of(&weights)?).as_str())
        {
            return Err(ApiError::Unprocessable(format!(
                "{} is not the adapter job {id} finished with",
                weights.display()
            )));
        }
        let config = TrainConfig::from_toml(&config_text).map_err(internal)?;
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
        std::fs::create_dir_all(&adapter_out).map_err(internal)?;
        for f in [bundle::CONFIG_FILE, bundle::WEIGHTS_FILE] {
            std::fs::copy(adapter.join(f), adapter_out.join(f)).map_err(internal)?;
        }
        let training = json!({
            "format": TRAINING_CONFIG_FORMAT,
            "adapter": adapter.file_name().map(|n| n.to_string_lossy().into_owned()),
            "config_toml": config_text,
            "metrics": serde_json::from_str::<Value>(&metrics_text).map_err(internal)?,
        });
        std::fs::write(
            adapter_out.join(bundle::TRAINING_CONFIG_FILE),
            serde_json::to_string_pretty(&training).map_err(internal)?,
        )
        .map_err(internal)?;
        let packed =
            bundle::pack_dir(&adapter_out, MAX_WEIGHTS_BYTES).map_err(ApiError::BadRequest)?;
        let arts = &self.openlora.artifacts;
        put_once(&arts.path(&packed.hash), &packed.bytes)?;

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
        let list = |f: &dyn Fn(u64, u64) -> String| {
            record
                .datanets
                .iter()
                .map(|d| f(d.id, d.version))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut source = BTreeMap::new();
        source.insert("datanet".to_string(), list(&|d, _| d.to_string()));
        source.insert("version".to_string(), list(&|_, v| v.to_string()));
        source.insert("versions".to_string(), list(&|d, v| format!("{d}@{v}")));
        source.insert("tokenizer".to_string(), model.display().to_string());
        let root = Index::create(
            out,
            &tokens,
            tok.vocab_size() as u32,
            source,
            &BuildOptions::default(),
        )
        .map_err(internal)?
        .root();
        let dest = self.openlora.artifacts.index_path(&root);
        if !dest.join(openledger_attribution::index::MANIFEST).is_file() {
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(internal)?;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(internal)?;
            }
            std::fs::rename(out, &dest).map_err(|e| {
                internal(format!(
                    "moving the index {} to {}: {e}",
                    out.display(),
                    dest.display()
                ))
            })?;
        }
        Ok(root)
    }
}
