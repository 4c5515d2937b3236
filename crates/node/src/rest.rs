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
//! | `POST /v1/datanets/{id}/stage` | multipart upload of files: ingest, store the rows, return the report and `metadataUri` |
//! | `GET /v1/contributions/{id}` | one contribution |
//! | `GET /v1/contributions/{id}/rows?offset=&limit=` | a page of one contribution's rows (pending ones too, for review) |
//!
//! `version` 0 or absent means the latest. Permissioned datanets need a signed request
//! ([`openledger_types::request_auth`]) from an address with access for rows, export, proof and
//! stage. Errors are JSON `{"error": "..."}` with a fitting HTTP status.

use crate::{
    datanets::{
        views::{ContributionView, DatanetView, VersionView},
        ApiError, ExportRow,
    },
    sequencer::{now, Node},
};
use alloy_primitives::{Address, B256};
use axum::{
    extract::{DefaultBodyLimit, Multipart, Path, Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use openledger_datanet::{leaderboard, ContributionSummary, SourceFile, Status};
use openledger_state::{modules::datanet, StateRead};
use openledger_types::request_auth;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

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
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The REST routes, sharing the node with JSON-RPC.
pub fn router(node: Arc<Node>) -> Router<Arc<Node>> {
    let limits = node.datanets.limits();
    let upload_limit =
        node.config.max_upload_files.max(1) * (limits.max_file_bytes as usize + 64 * 1024);
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
            post(stage).layer(DefaultBodyLimit::max(upload_limit)),
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

/// The address a signed request acts for; `None` when unsigned. A signature that does not
/// verify refuses the request.
pub struct Caller(pub Option<Address>);

impl axum::extract::FromRequestParts<Arc<Node>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        node: &Arc<Node>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller(None));
        };
        let value = value
            .to_str()
            .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
        let uri = &parts.uri;
        let pq = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or(uri.path());
        request_auth::verify(value, node.chain_id(), parts.method.as_str(), pq, now())
            .map(|a| Caller(Some(a)))
            .map_err(ApiError::Unauthorized)
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

async fn export(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Query(q): Query<VersionQuery>,
    Caller(who): Caller,
) -> ApiResult<Response> {
    let (version, body) = blocking(node, move |n, s| {
        let mut body = Vec::new();
        let version = n
            .datanets
            .for_each_row(s, id, q.version, who, |r: ExportRow| {
                serde_json::to_writer(&mut body, &r).expect("rows serialise");
                body.push(b'\n');
                true
            })?;
        Ok((version, body))
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_string()),
            (
                header::HeaderName::from_static("x-openledger-version"),
                version.to_string(),
            ),
        ],
        body,
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

async fn stage(
    State(node): State<Arc<Node>>,
    Path(id): Path<u64>,
    Caller(who): Caller,
    mut form: Multipart,
) -> ApiResult<Json<crate::datanets::Staged>> {
    let max_bytes = node.datanets.limits().max_file_bytes;
    let max_files = node.config.max_upload_files;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::BadRequest(format!("malformed upload: {}", e.body_text()))
    };
    // On a limit, the rest of the upload is still read (and dropped) so the client, which may
    // still be sending, gets the answer rather than a reset connection.
    let mut files = Vec::new();
    let mut refused: Option<ApiError> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        if files.len() == max_files && refused.is_none() {
            refused = Some(ApiError::TooLarge(format!(
                "more than {max_files} files in one contribution; split it"
            )));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if refused.is_some() {
                continue;
            }
            if (bytes.len() + chunk.len()) as u64 > max_bytes {
                refused = Some(ApiError::TooLarge(format!(
                    "{name}: over the {max_bytes}-byte limit per file; split it into smaller files"
                )));
                bytes = Vec::new();
                continue;
            }
            bytes.extend_from_slice(&chunk);
        }
        if refused.is_none() {
            files.push(SourceFile::new(name, bytes));
        }
    }
    if let Some(e) = refused {
        return Err(e);
    }
    blocking(node, move |n, s| n.datanets.stage(s, id, &files, who))
        .await
        .map(Json)
}
