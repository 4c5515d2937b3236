//! The web dashboard's server side: `GET /` (the shell, `dashboard/index.html`) and
//! `GET /dashboard/<path>` (its scripts, styles, vendored libraries and the module interfaces
//! `contracts/*.sol` under `/dashboard/contracts/`), all embedded in the binary by `build.rs`,
//! so `openledger node` needs no files at run time; and `GET /dashboard/dev-accounts`, the
//! development keys, answered only on a dev chain (`dev = true` in config.toml), 404 elsewhere;
//! and the explorer's bounded read-only route ([`explorer`]).
//!
//! A path is looked up as an exact key of the embedded table and nothing else: no file system
//! access, so no path can reach a file outside it. Every answer carries a Content-Security-Policy
//! that allows only the node's own origin (no remote scripts, styles, images or connections),
//! `nosniff`, an ETag (`If-None-Match` gets 304) and `Cache-Control`: vendored files, whose
//! names carry their version, are immutable; the rest is revalidated on each load.

use crate::sequencer::Node;
use alloy_primitives::{keccak256, Address, B256};
use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use std::sync::{Arc, OnceLock};

pub mod explorer;

mod files {
    include!(concat!(env!("OUT_DIR"), "/dashboard_files.rs"));
}

/// How many development keys a dev chain has (`openledger init --dev` funds the same ones).
pub const DEV_ACCOUNTS: usize = 10;

/// The Content-Security-Policy of every dashboard answer: the node's own origin only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
frame-ancestors 'none'; form-action 'self'";

/// The deterministic development key `i` (public, like anvil's: never use on a real network).
/// `openledger init --dev` derives its dev keys the same way.
pub fn dev_key(i: usize) -> B256 {
    keccak256(format!("openledger dev key {i}"))
}

/// The embedded file at `path` (relative to `/dashboard/`), if there is one.
pub fn file(path: &str) -> Option<&'static [u8]> {
    files::FILES
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .map(|i| files::FILES[i].1)
}

/// Every embedded path, sorted.
pub fn paths() -> impl Iterator<Item = &'static str> {
    files::FILES.iter().map(|(p, _)| *p)
}

/// The routes: `/`, `/dashboard/dev-accounts` and `/dashboard/{*path}`.
pub fn router(node: Arc<Node>) -> Router<Arc<Node>> {
    let slots = explorer::scan_slots(&node);
    Router::new()
        .route("/", get(|headers: HeaderMap| async move { serve("index.html", &headers) }))
        .route("/dashboard/dev-accounts", get(dev_accounts))
        .route(
            "/v1/explorer/txs",
            get(
                move |State(node): State<Arc<Node>>, Query(q): Query<explorer::TxsQuery>| {
                    explorer::txs(node, slots.clone(), q)
                },
            ),
        )
        .route(
            "/dashboard/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("md") | Some("sol") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The ETag of the file at table index `i` (BLAKE3 of its bytes, computed once).
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        files::FILES
            .iter()
            .map(|(_, bytes)| format!("\"{}\"", &blake3::hash(bytes).to_hex()[..32]))
            .collect()
    });
    &tags[i]
}

fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn not_found(what: String) -> Response {
    with_security_headers((StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response())
}

/// Answers one embedded file (or 404), with its caching headers.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Ok(i) = files::FILES.binary_search_by(|(p, _)| (*p).cmp(path)) else {
        return not_found(format!(
            "no dashboard file /dashboard/{path} (the dashboard starts at /)"
        ));
    };
    let tag = etag(i);
    let cache = if path.starts_with("vendor/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type(path))],
            files::FILES[i].1,
        )
            .into_response()
    };
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    with_security_headers(response)
}

/// `GET /dashboard/dev-accounts`: the dev keys on a dev chain, 404 on any other.
async fn dev_accounts(State(node): State<Arc<Node>>) -> Response {
    if !node.config.dev {
        return not_found(
            "this is not a dev chain: dev accounts exist only on a chain made by \
             `openledger init --dev`; connect a wallet instead"
                .into(),
        );
    }
    let accounts: Vec<_> = (0..DEV_ACCOUNTS)
        .filter_map(|i| {
            let key = dev_key(i);
            let signer = alloy_signer_local::PrivateKeySigner::from_bytes(&key).ok()?;
            let address: Address = signer.address();
            Some(json!({
                "name": format!("dev{i}"),
                "address": address.to_checksum(None),
                "privateKey": key,
            }))
        })
        .collect();
    let mut response = Json(json!({
        "chainId": node.chain_id(),
        "warning": "development keys: public, for this dev chain only",
        "accounts": accounts,
    }))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    with_security_headers(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_the_shell_and_the_module_interfaces_and_nothing_odd() {
        for needed in [
            "index.html",
            "app.js",
            "lib.js",
            "style.css",
            "contracts/IGovernor.sol",
        ] {
            assert!(file(needed).is_some(), "{needed} is not embedded");
        }
        for p in paths() {
            assert!(
                !p.contains("..") && !p.starts_with('/') && !p.contains("//"),
                "odd embedded path {p}"
            );
        }
        assert!(file("../Cargo.toml").is_none());
        assert!(file("/etc/passwd").is_none());
    }

    #[test]
    fn content_types_fit_the_files() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("style.css"), "text/css; charset=utf-8");
    }
}
