//! The dashboard as a browser reaches it, over real TCP connections to a served node:
//!
//! - `/` and `/dashboard/*` answer the embedded files with their content types, a
//!   Content-Security-Policy that names no remote origin, ETags (304 on `If-None-Match`), and
//!   immutable caching only for the vendored files; JSON-RPC still answers `POST /`;
//! - no path reaches a file outside the embedded table (`..`, encoded `..`, absolute paths);
//! - `/dashboard/dev-accounts` lists the dev keys on a dev chain and is 404 on any other chain,
//!   and its keys are those `openledger init --dev` funds;
//! - `/v1/explorer/txs` finds an address's transactions (sent and received), bounded.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_node::{dashboard, sequencer::Node, Chain, NodeConfig};
use openledger_types::{units::one_open, Genesis};
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

const CHAIN_ID: u64 = 4246;

struct Served {
    addr: SocketAddr,
    key: PrivateKeySigner,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: Option<tokio::runtime::Runtime>,
    _node: Arc<Node>,
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

fn serve(dev: bool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&dashboard::dev_key(0)).unwrap();
    let genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(10u64) * one_open(),
    )
    .unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), &genesis, false).unwrap();
    let config = NodeConfig {
        dev,
        ..NodeConfig::default()
    };
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
        addr,
        key,
        stop: Some(stop),
        runtime: Some(runtime),
        _node: node,
        _dir: dir,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
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
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request with `Connection: close`; the body de-chunked when chunked.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    let reply = Reply {
        status,
        head,
        body: Vec::new(),
    };
    if reply
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Reply { body, ..reply }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"")
}

fn rpc(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string();
    let r = request(
        addr,
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn check_csp(r: &Reply) {
    let csp = r.header("content-security-policy").expect("a CSP header");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(
        !csp.contains("http") && !csp.contains('*') && !csp.contains("unsafe"),
        "the CSP must allow no remote origin and nothing unsafe: {csp}"
    );
    assert_eq!(
        r.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
}

#[test]
fn the_shell_and_its_files_are_served_with_types_csp_and_caching() {
    let s = serve(true);
    let index = get(s.addr, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(
        index.text().contains("<main id=\"page\">"),
        "{}",
        index.text()
    );
    assert!(index.text().contains("/dashboard/app.js"));
    check_csp(&index);

    for (path, ty) in [
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/lib.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
        (
            "/dashboard/contracts/IGovernor.sol",
            "text/plain; charset=utf-8",
        ),
    ] {
        let r = get(s.addr, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type").as_deref(), Some(ty), "{path}");
        assert_eq!(
            r.header("cache-control").as_deref(),
            Some("no-cache"),
            "{path}"
        );
        check_csp(&r);
        let etag = r.header("etag").expect("an ETag");
        let again = request(s.addr, "GET", path, &[("If-None-Match", &etag)], b"");
        assert_eq!(again.status, 304, "{path} with its ETag");
        assert!(again.body.is_empty());
    }
    let app = get(s.addr, "/dashboard/app.js").text();
    assert!(app.contains("import * as lib from './lib.js'"));

    let vendor = dashboard::paths()
        .find(|p| p.starts_with("vendor/ethers-") && p.ends_with(".js"))
        .expect("ethers is vendored");
    let r = get(s.addr, &format!("/dashboard/{vendor}"));
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 100_000, "ethers is the whole library");
    assert!(r
        .header("cache-control")
        .is_some_and(|c| c.contains("immutable")));

    // JSON-RPC still answers on POST /.
    assert_eq!(rpc(s.addr, "eth_chainId", json!([]))["result"], "0x1096");
}

#[test]
fn no_path_reaches_a_file_outside_the_embedded_table() {
    let s = serve(true);
    for path in [
        "/dashboard/../Cargo.toml",
        "/dashboard/..%2f..%2fCargo.toml",
        "/dashboard/%2e%2e/%2e%2e/Cargo.toml",
        "/dashboard/pages/../../../../etc/passwd",
        "/dashboard//etc/passwd",
        "/dashboard/%2fetc%2fpasswd",
        "/dashboard/nope.js",
        "/dashboard/",
        "/Cargo.toml",
        "/../../etc/passwd",
    ] {
        let r = get(s.addr, path);
        assert!(
            r.status == 404 || r.status == 400,
            "{path} answered {}: {}",
            r.status,
            r.text()
        );
        let text = r.text();
        assert!(
            !text.contains("[package]") && !text.contains("root:"),
            "{path} leaked a file: {text}"
        );
    }
}

#[test]
fn dev_accounts_are_served_on_a_dev_chain_only() {
    let dev = serve(true);
    let r = get(dev.addr, "/dashboard/dev-accounts");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let v = r.json();
    assert_eq!(v["chainId"], CHAIN_ID);
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), dashboard::DEV_ACCOUNTS);
    assert_eq!(accounts[0]["name"], "dev0");
    // The key and address agree, and dev0 is the account the genesis funded.
    let key: alloy_primitives::B256 = accounts[0]["privateKey"].as_str().unwrap().parse().unwrap();
    let signer = PrivateKeySigner::from_bytes(&key).unwrap();
    let address: Address = accounts[0]["address"].as_str().unwrap().parse().unwrap();
    assert_eq!(signer.address(), address);
    assert_eq!(address, dev.key.address());

    let real = serve(false);
    let r = get(real.addr, "/dashboard/dev-accounts");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("not a dev chain"), "{}", r.text());
    assert!(!r.text().contains("privateKey"));
    // The rest of the dashboard is there on any chain.
    assert_eq!(get(real.addr, "/").status, 200);
}

fn transfer(key: &PrivateKeySigner, nonce: u64, to: Address) -> String {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value: U256::from(5u64),
        access_list: Default::default(),
        input: Default::default(),
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    format!(
        "0x{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn the_explorer_finds_an_address_s_transactions_sent_and_received() {
    let s = serve(true); // dev: a block per submitting request
    let bob = Address::repeat_byte(0x66);
    let carol = Address::repeat_byte(0x77);
    let mut hashes = Vec::new();
    for (nonce, to) in [(0, bob), (1, carol), (2, bob)] {
        let r = rpc(
            s.addr,
            "eth_sendRawTransaction",
            json!([transfer(&s.key, nonce, to)]),
        );
        hashes.push(r["result"].as_str().expect("a tx hash").to_string());
    }
    let txs = |q: &str| {
        let r = get(s.addr, &format!("/v1/explorer/txs?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()
    };
    let v = txs(&format!("address={bob}"));
    let found: Vec<&str> = v["txs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hash"].as_str().unwrap())
        .collect();
    assert_eq!(
        found,
        vec![hashes[2].as_str(), hashes[0].as_str()],
        "newest first"
    );
    assert_eq!(v["next"], Value::Null, "scanned down to genesis");

    let sender = txs(&format!("address={}", s.key.address()));
    assert_eq!(sender["txs"].as_array().unwrap().len(), 3);
    // Bounded: a limit of 1 returns one and says where to go on.
    let one = txs(&format!("address={}&limit=1", s.key.address()));
    assert_eq!(one["txs"].as_array().unwrap().len(), 1);
    assert_eq!(one["txs"][0]["hash"], hashes[2]);
    let next = one["next"].as_u64().expect("a next block");
    let rest = txs(&format!("address={}&before={next}", s.key.address()));
    assert_eq!(rest["txs"].as_array().unwrap().len(), 2);

    let bad = get(s.addr, "/v1/explorer/txs?address=nope");
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("not a 20-byte hex address"),
        "{}",
        bad.text()
    );
}

#[test]
fn the_explorer_returns_exactly_limit_inside_a_full_block_and_continues_without_gaps() {
    let s = serve(true);
    let bob = Address::repeat_byte(0x66);
    // One JSON-RPC batch of five transfers: one dev block holding all five.
    let batch: Vec<Value> = (0..5)
        .map(|nonce| {
            json!({"jsonrpc": "2.0", "id": nonce, "method": "eth_sendRawTransaction",
                   "params": [transfer(&s.key, nonce, bob)]})
        })
        .collect();
    let body = Value::Array(batch).to_string();
    let r = request(
        s.addr,
        "POST",
        "/",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut sent: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["result"].as_str().expect("a tx hash").to_string())
        .collect();
    sent.reverse(); // newest first
    let txs = |q: &str| {
        let r = get(s.addr, &format!("/v1/explorer/txs?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()
    };
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let mut q = format!("address={bob}&limit=2");
        if let Some(b) = &before {
            q.push_str(&format!("&before={b}"));
        }
        let v = txs(&q);
        let page = v["txs"].as_array().unwrap();
        assert!(
            page.len() <= 2,
            "limit=2 answered {} transactions",
            page.len()
        );
        seen.extend(page.iter().map(|t| t["hash"].as_str().unwrap().to_string()));
        match &v["next"] {
            Value::Null => break,
            Value::String(c) => before = Some(c.clone()),
            n => before = Some(n.to_string()),
        }
    }
    assert_eq!(seen, sent, "every transaction once, newest first");

    for bad in ["x", "1.y", "-3", "1.2.3"] {
        let r = get(
            s.addr,
            &format!("/v1/explorer/txs?address={bob}&before={bad}"),
        );
        assert_eq!(r.status, 400, "before={bad}: {}", r.text());
    }
}
