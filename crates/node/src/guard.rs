//! Router-wide HTTP guards, in front of JSON-RPC and the REST routes alike:
//!
//! - **Host check** (against DNS rebinding): a request whose `Host` names something other than
//!   `localhost`, an IP address or a host in `allowed_hosts` is refused with 403. A rebinding
//!   page reaches the node under its own domain name, so its requests carry that name.
//!   Requests without a `Host` (HTTP/1.0 tools) are not from a browser and pass.
//! - **Origin allow-list** (against CSRF): a request carrying an `Origin` that is not the node's
//!   own (`http://127.0.0.1:PORT`, `http://localhost:PORT`, `http://[::1]:PORT`, or the bound
//!   address) or in `allowed_origins` is refused with 403 before it reaches a handler; allowed
//!   origins get CORS headers, and CORS preflights are answered for them only. Requests without
//!   `Origin` (the CLI, curl, web3.py) pass.
//! - **Limits**: at most `max_concurrent_requests` requests are served at once (others wait
//!   their turn), each within `request_timeout_secs` (waiting included; past it, 503), and no
//!   request body may exceed [`NodeConfig::total_body_limit`] (413).

use crate::NodeConfig;
use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::json;
use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};
use tokio::sync::Semaphore;

/// Which hosts and origins may reach the node.
#[derive(Debug)]
pub struct Access {
    any_host: bool,
    hosts: HashSet<String>,
    any_origin: bool,
    origins: HashSet<String>,
}

/// `host` without a trailing `:port` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// An origin in the form browsers send it: lowercase, no trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Access {
    /// The policy for a node listening on `local`, with `config`'s extra hosts and origins.
    pub fn new(config: &NodeConfig, local: SocketAddr) -> Access {
        let port = local.port();
        let mut own = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        let ip = local.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            own.push(local.to_string());
        }
        let mut origins: HashSet<String> = own
            .iter()
            .map(|h| normalize_origin(&format!("http://{h}")))
            .collect();
        if port == 80 {
            origins.extend(own.iter().map(|h| format!("http://{}", strip_port(h))));
        }
        let any_origin = config.allowed_origins.iter().any(|o| o.trim() == "*");
        origins.extend(config.allowed_origins.iter().map(|o| normalize_origin(o)));
        let any_host = config.allowed_hosts.iter().any(|h| h.trim() == "*");
        let hosts = config
            .allowed_hosts
            .iter()
            .map(|h| strip_port(h.trim()).to_ascii_lowercase())
            .collect();
        Access {
            any_host,
            hosts,
            any_origin,
            origins,
        }
    }

    /// Whether a request with this `Host` header may be served.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let name = strip_port(host.trim()).to_ascii_lowercase();
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        name == "localhost" || bare.parse::<IpAddr>().is_ok() || self.hosts.contains(&name)
    }

    /// Whether a request with this `Origin` header may be served.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.contains(&normalize_origin(origin))
    }
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The Host check, the Origin allow-list and CORS (see the module docs).
pub async fn check_access(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Some(host) = headers.get(header::HOST) {
        if !host.to_str().is_ok_and(|h| access.host_allowed(h)) {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "this node does not answer to Host {host:?}: it serves localhost and IP \
                     addresses only; to reach it under that name, add it to allowed_hosts in \
                     config.toml"
                ),
            );
        }
    }
    let origin = match headers.get(header::ORIGIN) {
        None => None,
        Some(o) if o.to_str().is_ok_and(|o| access.origin_allowed(o)) => Some(o.clone()),
        Some(o) => {
            return refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "cross-origin requests from {o:?} are not allowed: this node accepts browser \
                     requests from its own origin only; to allow that origin, add it to \
                     allowed_origins in config.toml"
                ),
            )
        }
    };
    let preflight = req.method() == Method::OPTIONS
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if let (true, Some(origin)) = (preflight, &origin) {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

/// How many requests may be served at once, and for how long each.
#[derive(Debug)]
pub struct Limits {
    slots: Semaphore,
    timeout: Duration,
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &NodeConfig) -> Limits {
        Limits {
            slots: Semaphore::new(config.max_concurrent_requests.max(1)),
            timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
        }
    }
}

/// Serves a request when a slot is free, within the time limit (waiting included).
pub async fn limit_requests(
    State(limits): State<Arc<Limits>>,
    req: Request,
    next: Next,
) -> Response {
    let served = async {
        // The semaphore is never closed, so acquiring only fails if it were.
        let _slot = limits.slots.acquire().await;
        next.run(req).await
    };
    match tokio::time::timeout(limits.timeout, served).await {
        Ok(resp) => resp,
        Err(_) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the request did not complete within {} s (request_timeout_secs in config.toml); \
                 the node may be busy, retry later or ask for less",
                limits.timeout.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(origins: &[&str], hosts: &[&str]) -> Access {
        let config = NodeConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..NodeConfig::default()
        };
        Access::new(&config, "127.0.0.1:8545".parse().unwrap())
    }

    #[test]
    fn hosts_are_checked_by_name() {
        let a = access(&[], &["node.example.org"]);
        for ok in [
            "127.0.0.1:8545",
            "localhost:8545",
            "LOCALHOST",
            "[::1]:8545",
            "192.168.1.5:9000",
            "node.example.org:443",
        ] {
            assert!(a.host_allowed(ok), "{ok} should pass");
        }
        for bad in [
            "evil.example:8545",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8545",
            "",
        ] {
            assert!(!a.host_allowed(bad), "{bad} should be refused");
        }
        assert!(access(&[], &["*"]).host_allowed("anything.example"));
    }

    #[test]
    fn origins_must_match_exactly() {
        let a = access(&["https://dash.example.org/"], &[]);
        for ok in [
            "http://127.0.0.1:8545",
            "http://localhost:8545",
            "http://[::1]:8545",
            "HTTPS://dash.example.org",
        ] {
            assert!(a.origin_allowed(ok), "{ok} should pass");
        }
        for bad in [
            "http://evil.example",
            "http://localhost:3000",
            "https://localhost:8545",
            "null",
            "http://127.0.0.1:8545.evil.example",
        ] {
            assert!(!a.origin_allowed(bad), "{bad} should be refused");
        }
        assert!(access(&["*"], &[]).origin_allowed("http://evil.example"));
    }

    #[test]
    fn a_specific_bind_address_is_its_own_origin() {
        let a = Access::new(&NodeConfig::default(), "192.168.1.5:8545".parse().unwrap());
        assert!(a.origin_allowed("http://192.168.1.5:8545"));
        assert!(!a.origin_allowed("http://192.168.1.6:8545"));
    }
}
