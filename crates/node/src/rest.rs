//! The REST routes beside JSON-RPC, for the CLI and the dashboard. Datanets:
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/datanets` | every datanet |
//! | `GET /v1/datanets/{id}` | one datanet |
//! | `GET /v1/datanets/{id}/versions` | its versions and roots |
//! | `GET /v1/datanets/{id}/contributions` | its contributions, with row availability |
//! | `GET /v1/datanets/{id}/contributors` | contributor statistics, in leaderboard order |
//! | `GET /v1/datanets/{id}/rows?version=&offset=&limit=` | a page of a version's rows |
//! | `GET /v1/datanets/{id}/export?version=` | a version as JSONL, each row with its contribution and contributor |
//! | `GET /v1/datanets/{id}/proof?row=<hash>&version=` | a row's inclusion proof against the version root |
//! | `POST /v1/datanets/{id}/stage` | signed multipart upload of files: ingest, store the rows, return the report and `metadataUri` |
//! | `GET /v1/contributions/{id}` | one contribution |
//! | `GET /v1/contributions/{id}/rows?offset=&limit=` | a page of one contribution's rows (pending ones too, for review) |
//!
//! `version` 0 or absent means the latest. Permissioned datanets need a signed request
//! ([`openledger_types::request_auth`]) from an address with access for rows, export, proof and
//! stage. Errors are JSON `{"error": "..."}` with a fitting HTTP status (and `Retry-After` on
//! 429 and 503).
//!
//! Staging is always signed, and the signature covers the body's hash and a nonce: the node
//! refuses a replayed signed request, counts uploads and bytes per account
//! ([`StagingConfig`](crate::datanets::StagingConfig): 429 past them), reads at most
//! `max_concurrent` uploads at once, and streams each upload, holding it to the limits while it
//! arrives — files per upload, bytes per file, bytes per upload — and answering 413 as soon as
//! one is crossed (the rest of an upload whose declared length is within the limit is read and
//! dropped so the client gets the answer; anything else is cut off). Exports stream row by row.

use crate::{
    datanets::{
        views::{ContributionView, DatanetView, VersionView},
        ApiError, ExportRow,
    },
    sequencer::{now, Node},
};
use alloy_primitives::{Address, B256};
use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State},
    http::{header, request::Parts, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use openledger_datanet::{leaderboard, ContributionSummary, SourceFile, Status};
use openledger_state::{modules::datanet, StateRead};
use openledger_types::request_auth;
use serde::Deserialize;
use serde_json::json;
use std::{sync::Arc, time::Duration};

/// Most rows one `rows` page returns.
pub const MAX_ROWS_PAGE: u64 = 1000;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = match &self {
            ApiError::Rejected(report) => json!({ "error": self.to_string(), "report": report }),
            _ => json!({ "error": self.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The REST routes, sharing the node with JSON-RPC.
pub fn router(_node: Arc<Node>) -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/datanets", get(list))
        .route("/v1/datanets/{id}", get(show))
        .route("/v1/datanets/{id}/versions", get(versions))
        .route("/v1/datanets/{id}/contributions", get(contributions))
        .route("/v1/datanets/{id}/contributors", get(contributors))
        .route("/v1/datanets/{id}/rows", get(rows))
        .route("/v1/datanets/{id}/export", get(export))
        .route("/v1/datanets/{id}/proof", get(proof))
        .route(
            "/v1/datanets/{id}/stage",
            // The handler holds uploads to the staging limits as they stream in.
            post(stage).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/contributions/{id}", get(contribution))
        .route("/v1/contributions/{id}/rows", get(contribution_rows))
}

/// Runs `f` on the latest sealed state, off the async threads.
async fn blocking<T: Send + 'static>(
    node: Arc<Node>,
    f: impl FnOnce(&Node, &dyn StateRead) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(move || {
        let store = node.chain().store().clone();
        f(&node, &*store)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))?
}

/// Checks a request's signature, if it has one, and remembers it so it cannot be replayed;
/// `None` when unsigned. A signature that does not verify, or a replay, refuses the request.
fn signed_request(parts: &Parts, node: &Node) -> Result<Option<request_auth::Signed>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let uri = &parts.uri;
    let pq = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    let t = now();
    let signed = request_auth::verify(value, node.chain_id(), parts.method.as_str(), pq, t)
        .map_err(ApiError::Unauthorized)?;
    node.datanets.guards(&node.config.staging).replay.remember(
        signed.replay_key,
        signed.address,
        signed.time,
        t,
    )?;
    Ok(Some(signed))
}

/// The address a signed request acts for; `None` when unsigned. A signature that does not
/// verify, covers a body, or was used before refuses the request.
pub struct Caller(pub Option<Address>);

impl axum::extract::FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        node: &Arc<Node>,
    ) -> Result<Self, Self::Rejection> {
        let Some(signed) = signed_request(parts, node)? else {
            return Ok(Caller(None));
        };
        if signed.body_hash != request_auth::body_hash(b"") {
            return Err(ApiError::Unauthorized(
                "a signed read covers an empty body; sign the hash of no bytes".into(),
            ));
        }
        Ok(Caller(Some(signed.address)))
    }
}

async fn list(State(node): State<Arc<Node>>) -> ApiResult<Json<Vec<DatanetView>>> {
    blocking(node, |_, s| {
        let n = datanet::datanet_count(s)?;
        (1..=n)
            .map(|id| {
                let d = datanet::datanet(s, id)?;
                Ok(DatanetView::new(&d, datanet::contribution_count_of(s, id)?))
            })
            .collect()
    })
    .await
    .map(Json)
}

async fn show(State(node): State<Arc<Node>>, Path(id): Path<u64>) -> ApiResult<Json<DatanetView>> {
    blocking(node, move |_, s| {
        let d = datanet::datanet(s, id)?;
        Ok(DatanetView::new(&d, datanet::contribution_count_of(s, id)?))
    })
    .await
    .map(Json)
}

async fn versions(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<Vec<VersionView>>> {
    blocking(node, move |_, s| {
        let d = datanet::datanet(s, id)?;
        (1..=d.versionCount)
            .map(|v| Ok(VersionView::from(&datanet::version(s, id, v)?)))
            .collect()
    })
    .await
    .map(Json)
}

async fn contributions(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<Vec<ContributionView>>> {
    blocking(node, move |n, s| {
        Ok(n.datanets
            .contributions(s, id)?
            .iter()
            .map(|(c, missing)| ContributionView::new(c, missing.clone()))
            .collect())
    })
    .await
    .map(Json)
}

async fn contributors(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<serde_json::Value>> {
    blocking(node, move |n, s| {
        let all: Vec<ContributionSummary> = n
            .datanets
            .contributions(s, id)?
            .iter()
            .map(|(c, _)| ContributionSummary {
                contributor: c.contributor,
                status: Status::from_code(c.status).unwrap_or(Status::Pending),
                rows: c.rowCount,
                bytes: c.byteSize,
                score_bps: c.score,
            })
            .collect();
        Ok(json!(leaderboard(&all)))
    })
    .await
    .map(Json)
}

async fn contribution(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
) -> ApiResult<Json<ContributionView>> {
    blocking(node, move |_, s| {
        Ok(ContributionView::new(&datanet::contribution(s, id)?, None))
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
struct RowsQuery {
    #[serde(default)]
    version: u64,
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

async fn rows(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Query(q): Query<RowsQuery>,
    Caller(who): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    blocking(node, move |n, s| {
        let limit = q.limit.unwrap_or(100).min(MAX_ROWS_PAGE);
        let (mut page, mut at) = (Vec::new(), 0u64);
        let version = n.datanets.for_each_row(s, id, q.version, who, |r| {
            if at >= q.offset {
                page.push(r);
            }
            at += 1;
            (page.len() as u64) < limit
        })?;
        Ok(json!({ "version": version, "offset": q.offset, "rows": page }))
    })
    .await
    .map(Json)
}

async fn contribution_rows(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Query(q): Query<RowsQuery>,
    Caller(who): Caller,
) -> ApiResult<Json<serde_json::Value>> {
    blocking(node, move |n, s| {
        let limit = q.limit.unwrap_or(100).min(MAX_ROWS_PAGE);
        let rows = n.datanets.contribution_rows(s, id, who, q.offset, limit)?;
        Ok(json!({ "contribution": id, "offset": q.offset, "rows": rows }))
    })
    .await
    .map(Json)
}

#[derive(Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: u64,
}

/// Bytes of JSONL gathered before a piece of an export is sent.
const EXPORT_CHUNK: usize = 64 * 1024;

async fn export(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Query(q): Query<VersionQuery>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    // Everything that can be refused is checked before the first row goes out.
    let version = blocking(node.clone(), move |n, s| {
        n.datanets.export_version(s, id, q.version, who)
    })
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let store = node.chain().store().clone();
        let mut buf = Vec::with_capacity(EXPORT_CHUNK + 4096);
        let mut open = true;
        let mut broken = None;
        let done = node
            .datanets
            .for_each_row(&*store, id, version, who, |r: ExportRow| {
                if let Err(e) = serde_json::to_writer(&mut buf, &r) {
                    broken = Some(format!("cannot encode row {}: {e}", r.row_hash));
                    return false;
                }
                buf.push(b'\n');
                if buf.len() >= EXPORT_CHUNK {
                    let piece = Bytes::from(std::mem::replace(
                        &mut buf,
                        Vec::with_capacity(EXPORT_CHUNK + 4096),
                    ));
                    // A closed channel: the client went away.
                    open = tx.blocking_send(Ok(piece)).is_ok();
                }
                open
            });
        let failure = match (done, broken) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(_), b) => b,
        };
        match failure {
            // The status is sent already: cutting the stream short tells the client.
            Some(why) => {
                tracing::warn!(datanet = id, version, "export stopped: {why}");
                let _ = tx.blocking_send(Err(std::io::Error::other(why)));
            }
            None if open && !buf.is_empty() => {
                let _ = tx.blocking_send(Ok(Bytes::from(buf)));
            }
            None => {}
        }
    });
    let rows = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::HeaderName::from_static("x-openledger-version"),
                version.to_string(),
            ),
        ],
        Body::from_stream(rows),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ProofQuery {
    row: B256,
    #[serde(default)]
    version: u64,
}

async fn proof(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Query(q): Query<ProofQuery>,
    Caller(who): Caller,
) -> ApiResult<Json<openledger_datanet::DatanetProof>> {
    blocking(node, move |n, s| {
        n.datanets.proof(s, id, q.row, q.version, who)
    })
    .await
    .map(Json)
}

/// What reading an upload's body came to.
enum Pumped {
    /// The whole body: its size and hash.
    Done(u64, alloy_primitives::B256),
    /// More than the allowance arrived (the count so far).
    Over(u64),
    /// The connection failed.
    Broken(u64, String),
}

/// Reads `body` to its end, at most `allowance` bytes, hashing it and passing it on to the
/// multipart parser through `tx` for as long as that parser listens (after which the rest is
/// only hashed and counted).
async fn pump(
    body: Body,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    allowance: u64,
) -> Pumped {
    let mut stream = body.into_data_stream();
    let mut hasher = alloy_primitives::Keccak256::new();
    let mut n = 0u64;
    let mut forward = true;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let why = e.to_string();
                if forward {
                    let _ = tx.send(Err(std::io::Error::other(why.clone()))).await;
                }
                return Pumped::Broken(n, why);
            }
        };
        n = n.saturating_add(chunk.len() as u64);
        if n > allowance {
            if forward {
                let _ = tx
                    .send(Err(std::io::Error::other("upload over its limit")))
                    .await;
            }
            return Pumped::Over(n);
        }
        hasher.update(&chunk);
        if forward && tx.send(Ok(chunk)).await.is_err() {
            forward = false;
        }
    }
    Pumped::Done(n, hasher.finalize())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The files of an upload, held to the per-upload file count and per-file size while they
/// stream in; the first limit crossed stops the reading with its refusal.
async fn read_files(
    form: &mut Multipart,
    max_files: usize,
    max_file_bytes: u64,
) -> Result<Vec<SourceFile>, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("malformed upload: {}", e.body_text()))
    };
    let mut files = Vec::new();
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        if files.len() == max_files {
            return Err(ApiError::TooLarge(format!(
                "more than {max_files} files in one contribution; split it"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if (bytes.len() + chunk.len()) as u64 > max_file_bytes {
                return Err(ApiError::TooLarge(format!(
                    "{name}: over the {max_file_bytes}-byte limit per file; split it into smaller files"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        files.push(SourceFile::new(name, bytes));
    }
    Ok(files)
}

async fn stage(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    request: Request,
) -> ApiResult<Json<crate::datanets::Staged>> {
    let cfg = node.config.staging.clone();
    let (parts, body) = request.into_parts();
    // Who is asking, before a byte of the upload is read.
    let signed = signed_request(&parts, &node)?.ok_or_else(|| {
        ApiError::Unauthorized(
            "staging needs a signed request: name your key with --from (openledger --from KEY datanet contribute ...)".into(),
        )
    })?;
    let who = signed.address;
    let guards = node.datanets.guards(&cfg);
    let t = now();
    guards.rate.admit(who, t)?;
    let over_upload = || {
        ApiError::TooLarge(format!(
            "the upload is over the {}-byte limit per upload; contribute fewer files at a time",
            cfg.max_request_bytes
        ))
    };
    let declared = content_length(&parts.headers);
    let allowance = cfg.max_request_bytes.min(guards.rate.bytes_left(who, t));
    if let Some(n) = declared {
        if n > cfg.max_request_bytes {
            return Err(over_upload());
        }
        if n > allowance {
            return Err(guards.rate.over_hourly(who, t));
        }
    }
    blocking(node.clone(), move |n, s| n.datanets.check_stage(s, id, who)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let relay = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    let mut form = Multipart::from_request(Request::from_parts(parts, relay), &())
        .await
        .map_err(|e| ApiError::BadRequest(format!("expected a multipart/form-data upload: {e}")))?;
    let wait = Duration::from_secs(cfg.queue_wait_secs);
    let _slot = match tokio::time::timeout(wait, guards.ingest.acquire()).await {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(ApiError::Busy(
                format!(
                    "the node is already ingesting {} uploads; retry shortly",
                    cfg.max_concurrent
                ),
                5,
            ))
        }
    };
    let reader = tokio::spawn(pump(body, tx, allowance));
    let limits = node.datanets.limits();
    let read = tokio::time::timeout(
        Duration::from_secs(cfg.max_upload_secs),
        read_files(
            &mut form,
            node.config.max_upload_files,
            limits.max_file_bytes,
        ),
    )
    .await;
    drop(form);
    let (files, refused) = match read {
        Ok(Ok(files)) => (files, None),
        Ok(Err(e)) => (Vec::new(), Some(e)),
        Err(_) => {
            reader.abort();
            return Err(ApiError::TimedOut(format!(
                "the upload did not arrive within {} s",
                cfg.max_upload_secs
            )));
        }
    };
    // A refused upload whose declared length is within the allowance is read to its end (and
    // dropped), so a client still sending gets the answer; any other is cut off at once.
    // A malformed-upload error may be the reader's doing (over the allowance, or a broken
    // connection): wait for its account, which comes within the allowance.
    let drain = declared.is_some_and(|n| n <= allowance)
        || matches!(refused, Some(ApiError::BadRequest(_)));
    if refused.is_some() && !drain {
        reader.abort();
        return Err(refused.unwrap_or_else(over_upload));
    }
    let pumped = match tokio::time::timeout(Duration::from_secs(cfg.max_upload_secs), reader).await
    {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(ApiError::Internal(format!("upload reader failed: {e}"))),
        Err(_) => {
            return Err(ApiError::TimedOut(format!(
                "the upload did not arrive within {} s",
                cfg.max_upload_secs
            )))
        }
    };
    let (read_bytes, hash) = match pumped {
        Pumped::Done(n, hash) => (n, Some(hash)),
        Pumped::Over(n) | Pumped::Broken(n, _) => (n, None),
    };
    guards.rate.charge_bytes(who, t, read_bytes);
    match pumped {
        Pumped::Over(n) if n > cfg.max_request_bytes => return Err(over_upload()),
        Pumped::Over(_) => return Err(guards.rate.over_hourly(who, t)),
        Pumped::Broken(_, why) => {
            return Err(refused.unwrap_or_else(|| {
                ApiError::BadRequest(format!("the upload was cut short: {why}"))
            }))
        }
        Pumped::Done(..) => {}
    }
    if let Some(e) = refused {
        return Err(e);
    }
    if hash != Some(signed.body_hash) {
        return Err(ApiError::Unauthorized(
            "the upload does not match the body hash its signature covers (altered in transit, or signed over other bytes)".into(),
        ));
    }
    blocking(node.clone(), move |n, s| {
        n.datanets.stage(s, id, &files, who)
    })
    .await
    .map(Json)
}
