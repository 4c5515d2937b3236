//! The HTTP server's guards, over real TCP connections to a served node:
//!
//! - a request from a foreign web page (an `Origin` not on the allow-list) is refused with 403
//!   before it reaches a handler — a signed transaction it carries is never executed — and so
//!   is a CORS preflight from it; the node's own origin and configured origins get CORS headers;
//! - a request for a foreign `Host` (DNS rebinding) is refused with 403;
//! - requests without `Origin` (CLI, curl, web3.py) work;
//! - JSON-RPC bodies over `max_request_bytes` and any body over the router-wide limit get 413.

mod common;

use alloy_primitives::{keccak256, Address, Bytes, U256};
use alloy_signer_local::PrivateKeySigner;
use openledger_node::{sequencer::Node, Chain, NodeConfig};
use openledger_types::{units::one_open, Genesis};
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

const CHAIN_ID: u64 = 4245;

/// A node served on a free port of 127.0.0.1 until dropped.
struct Served {
    node: Arc<Node>,
    addr: SocketAddr,
    key: PrivateKeySigner,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn serve(config: NodeConfig) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&keccak256("http guard")).unwrap();
    let genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(10u64) * one_open(),
    )
    .unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), &genesis, false).unwrap();
    let node = Node::new(chain, config, &dir.path().join("blobs")).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(openledger_node::rpc::serve(node.clone(), listener, async {
        let _ = stopped.await;
    }));
    Served {
        node,
        addr,
        key,
        stop: Some(stop),
        runtime: Some(runtime),
        _dir: dir,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request; `headers` are sent as given (a `Host` among them replaces the
/// default one).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) and close before reading a large body: ignore write errors.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    // Bodies may be chunked; the tests only look at JSON bodies of small answers, which hyper
    // sends with a Content-Length.
    Reply {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn rpc_body(method: &str, params: Value) -> Vec<u8> {
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params })
        .to_string()
        .into_bytes()
}

fn post_rpc(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", "/", &all, body)
}

fn signed_transfer(key: &PrivateKeySigner) -> Vec<u8> {
    common::transfer(key, CHAIN_ID, 0, Address::repeat_byte(0x66), 5).1
}

#[test]
fn a_cross_origin_post_is_refused_and_executes_nothing() {
    let s = serve(NodeConfig::default());
    let raw = Bytes::from(signed_transfer(&s.key));
    let body = rpc_body("eth_sendRawTransaction", json!([raw]));
    let r = post_rpc(s.addr, &[("Origin", "http://evil.example")], &body);
    assert_eq!(r.status, 403, "{}", r.body);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("http://evil.example") && msg.contains("allowed_origins"),
        "{msg}"
    );
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(
        s.node.chain().pending_txs().count(),
        0,
        "the refused request's transaction must not run"
    );
    // A page on another local port is another origin too.
    let other = format!("http://localhost:{}", s.addr.port() + 1);
    let r = post_rpc(
        s.addr,
        &[("Origin", &other)],
        &rpc_body("eth_chainId", json!([])),
    );
    assert_eq!(r.status, 403);
    // So is a sandboxed page ("null"), and the REST routes are guarded alike.
    let r = request(s.addr, "GET", "/v1/datanets", &[("Origin", "null")], b"");
    assert_eq!(r.status, 403);

    // Without Origin (CLI, curl, web3.py) the same transaction goes through.
    let r = post_rpc(s.addr, &[], &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json().get("result").is_some(), "{}", r.body);
    assert_eq!(s.node.chain().pending_txs().count(), 1);
}

#[test]
fn the_nodes_own_origin_works_and_gets_cors_headers() {
    let s = serve(NodeConfig::default());
    let body = rpc_body("eth_chainId", json!([]));
    for origin in [
        format!("http://127.0.0.1:{}", s.addr.port()),
        format!("http://localhost:{}", s.addr.port()),
    ] {
        let r = post_rpc(s.addr, &[("Origin", &origin)], &body);
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
        assert_eq!(r.json()["result"], format!("{CHAIN_ID:#x}"));
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(origin.clone())
        );
        assert!(r.header("vary").is_some_and(|v| v.contains("Origin")));
    }
    let r = request(
        s.addr,
        "GET",
        "/v1/datanets",
        &[("Origin", &format!("http://127.0.0.1:{}", s.addr.port()))],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn cors_preflights_are_answered_for_allowed_origins_only() {
    let s = serve(NodeConfig {
        allowed_origins: vec!["https://dash.example.org".into()],
        ..NodeConfig::default()
    });
    let preflight = |origin: &str| {
        request(
            s.addr,
            "OPTIONS",
            "/",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let r = preflight("https://dash.example.org");
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("https://dash.example.org")
    );
    assert!(r
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));
    assert_eq!(
        r.header("access-control-allow-headers").as_deref(),
        Some("content-type")
    );
    let r = preflight("http://evil.example");
    assert_eq!(r.status, 403);
    assert!(r.header("access-control-allow-origin").is_none());

    // The configured origin may also call.
    let r = post_rpc(
        s.addr,
        &[("Origin", "https://dash.example.org")],
        &rpc_body("eth_blockNumber", json!([])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_foreign_host_is_refused() {
    let s = serve(NodeConfig {
        allowed_hosts: vec!["node.example.org".into()],
        ..NodeConfig::default()
    });
    let body = rpc_body("eth_chainId", json!([]));
    let port = s.addr.port();
    for host in [
        format!("evil.example:{port}"),
        "attacker.example".to_string(),
    ] {
        let r = post_rpc(s.addr, &[("Host", &host)], &body);
        assert_eq!(r.status, 403, "{host}: {}", r.body);
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains("allowed_hosts"), "{msg}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("node.example.org:{port}"),
    ] {
        let r = post_rpc(s.addr, &[("Host", &host)], &body);
        assert_eq!(r.status, 200, "{host}: {}", r.body);
    }
}

#[test]
fn oversized_bodies_get_413() {
    let s = serve(NodeConfig {
        max_request_bytes: 10_000,
        max_body_bytes: Some(50_000),
        ..NodeConfig::default()
    });
    // JSON-RPC keeps its own, smaller limit.
    let padding = "x".repeat(20_000);
    let big = json!({ "jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [],
        "padding": padding })
    .to_string();
    assert_eq!(post_rpc(s.addr, &[], big.as_bytes()).status, 413);
    // The router-wide limit covers every route, the upload route included.
    let upload = vec![b'a'; 60_000];
    let r = request(
        s.addr,
        "POST",
        "/v1/datanets/1/stage",
        &[("Content-Type", "multipart/form-data; boundary=x")],
        &upload,
    );
    assert_eq!(r.status, 413, "{}", r.body);
    // Within the limits, requests are served.
    let r = post_rpc(s.addr, &[], &rpc_body("eth_chainId", json!([])));
    assert_eq!(r.status, 200);
}

#[test]
fn the_default_body_limit_leaves_room_for_the_largest_upload() {
    let config = NodeConfig::default();
    let largest_upload = config.max_upload_files as u64 * config.ingest.max_file_bytes;
    assert!(config.total_body_limit() as u64 > largest_upload);
    assert!(config.max_request_bytes < config.total_body_limit());
}
