//! Staged contributions, end to end through the node: a `contribute` transaction is admitted
//! only with the figures staging computed for a row set this node staged for that datanet and
//! sender (every other claim is refused with a clear JSON-RPC error and changes nothing, and the
//! records survive a restart); garbage collection deletes unreferenced uploads after the TTL and
//! never a referenced one; and over HTTP, staging is signed, cannot be replayed, and is held to
//! per-account rates and to the upload limits while the upload streams in.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_datanet::SourceFile;
use openledger_node::{datanets::StagingConfig, sequencer::Node, Chain, NodeConfig};
use openledger_store::parse_blob_uri;
use openledger_types::{abi::IDatanet, modules, request_auth, units::one_open, Genesis};
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

const CHAIN_ID: u64 = 4243;

fn key(name: &str) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256(name)).unwrap()
}

fn genesis() -> Genesis {
    Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key("alice").address(), key("bob").address()],
        U256::from(100u64) * one_open(),
    )
    .unwrap()
}

fn open_node(dir: &Path, config: NodeConfig) -> Arc<Node> {
    let chain = Chain::open(&dir.join("chain.redb"), &genesis(), false).unwrap();
    Node::new(chain, config, &dir.join("blobs")).unwrap()
}

fn dev_config() -> NodeConfig {
    NodeConfig {
        dev: true,
        ..NodeConfig::default()
    }
}

fn rpc(node: &Node, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    openledger_node::rpc::handle_body(node, body.to_string().as_bytes())
}

fn nonce(node: &Node, who: Address) -> u64 {
    let v = rpc(node, "eth_getTransactionCount", json!([who, "pending"]));
    u64::from_str_radix(v["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Sends a call to the datanet module; the JSON-RPC answer.
fn call(node: &Node, from: &PrivateKeySigner, data: Vec<u8>) -> Value {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: nonce(node, from.address()),
        gas_limit: 2_000_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(modules::DATANET),
        value: U256::ZERO,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = from.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    rpc(
        node,
        "eth_sendRawTransaction",
        json!([Bytes::copy_from_slice(&raw)]),
    )
}

fn create_datanet(node: &Node, owner: &PrivateKeySigner, name: &str) {
    let r = call(
        node,
        owner,
        IDatanet::createDatanetCall {
            name: name.into(),
            summary: String::new(),
            description: String::new(),
            tags: vec![],
            dataType: 0,
            licence: "CC0".into(),
            permissioned: false,
        }
        .abi_encode(),
    );
    assert!(r.get("result").is_some(), "{r}");
}

fn contribution_count(node: &Node) -> u64 {
    let store = node.chain().store().clone();
    openledger_state::modules::datanet::contribution_count_of(&*store, 1).unwrap()
}

fn rows_file(tag: &str) -> SourceFile {
    let body: String = (0..5)
        .map(|i| format!("Row {i} of the {tag} upload: city bees forage on linden and clover.\n\n"))
        .collect();
    SourceFile::new(format!("{tag}.txt"), body)
}

fn stage(
    node: &Node,
    datanet: u64,
    file: SourceFile,
    who: Address,
) -> openledger_node::datanets::Staged {
    let store = node.chain().store().clone();
    node.datanets.stage(&*store, datanet, &[file], who).unwrap()
}

fn contribute_call(staged: &openledger_node::datanets::Staged) -> IDatanet::contributeCall {
    let r = &staged.report;
    IDatanet::contributeCall {
        datanetId: staged.datanet_id,
        rowsRoot: r.rows_root,
        rowCount: r.row_count,
        byteSize: r.byte_size,
        score: r.score_bps,
        metadataUri: staged.metadata_uri.clone(),
    }
}

fn refused(node: &Node, from: &PrivateKeySigner, c: IDatanet::contributeCall, expect: &str) {
    let before = (contribution_count(node), nonce(node, from.address()));
    let r = call(node, from, c.abi_encode());
    let err = r
        .get("error")
        .unwrap_or_else(|| panic!("expected a refusal containing {expect:?}, got {r}"));
    assert_eq!(err["code"], 3, "{r}");
    let msg = err["message"].as_str().unwrap();
    assert!(msg.contains(expect), "{msg:?} should contain {expect:?}");
    assert_eq!(
        before,
        (contribution_count(node), nonce(node, from.address())),
        "a refused contribution changed state"
    );
}

#[test]
fn a_contribution_must_claim_exactly_what_was_staged() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (key("alice"), key("bob"));
    let node = open_node(dir.path(), dev_config());
    create_datanet(&node, &alice, "Bees");
    create_datanet(&node, &alice, "Wasps");
    let staged = stage(&node, 1, rows_file("alice"), alice.address());
    let honest = contribute_call(&staged);
    assert_eq!(honest.rowCount, 5);

    // Each claim that differs from the staged rows is refused, naming the difference.
    let mut c = honest.clone();
    c.rowCount += 1_000_000;
    refused(
        &node,
        &alice,
        c,
        "rowCount is 1000005, staging accepted 5 rows",
    );
    let mut c = honest.clone();
    c.byteSize *= 100;
    refused(&node, &alice, c, "byteSize");
    let mut c = honest.clone();
    c.score = if c.score == 10_000 { 9_999 } else { 10_000 };
    refused(&node, &alice, c, "score is");
    let mut c = honest.clone();
    c.rowsRoot = B256::repeat_byte(7);
    refused(&node, &alice, c, "rowsRoot");
    // Rows nobody staged here, a URI that is no blob, another datanet, another sender.
    let mut c = honest.clone();
    c.metadataUri = format!("blake3:{}", "ab".repeat(32));
    refused(&node, &alice, c, "was not staged on this node");
    let mut c = honest.clone();
    c.metadataUri = "ipfs://somewhere".into();
    refused(&node, &alice, c, "is not a row set staged on this node");
    let mut c = honest.clone();
    c.datanetId = 2;
    refused(&node, &alice, c, "not for datanet 2");
    refused(
        &node,
        &bob,
        honest.clone(),
        "staged on this node for datanet 1 by",
    );

    // The records survive a restart, and the honest claim goes through.
    drop(node);
    let node = open_node(dir.path(), dev_config());
    let r = call(&node, &alice, honest.abi_encode());
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(contribution_count(&node), 1);

    // The chain, contributions included, verifies by replay from genesis: the admission rule
    // is the sequencer's, so replay (which holds no staging records) must not apply it.
    drop(node);
    let blocks =
        openledger_node::chain::verify(&dir.path().join("chain.redb"), &genesis(), |_, _| {})
            .expect("a chain holding contributions verifies by replay");
    assert_eq!(
        blocks, 3,
        "two datanets and one contribution, one block each"
    );
}

#[test]
fn garbage_collection_deletes_unreferenced_uploads_after_the_ttl_only() {
    let dir = tempfile::tempdir().unwrap();
    let alice = key("alice");
    let node = open_node(dir.path(), dev_config());
    create_datanet(&node, &alice, "Bees");
    let kept = stage(&node, 1, rows_file("kept"), alice.address());
    let dropped = stage(&node, 1, rows_file("dropped"), alice.address());
    let r = call(&node, &alice, contribute_call(&kept).abi_encode());
    assert!(r.get("result").is_some(), "{r}");
    let blob = |s: &openledger_node::datanets::Staged| parse_blob_uri(&s.metadata_uri).unwrap();
    let blobs = openledger_store::BlobStore::open(&dir.path().join("blobs")).unwrap();
    let (ttl, t0) = (3600, openledger_node::sequencer::now());
    let gc = |at: u64| {
        let store = node.chain().store().clone();
        node.datanets.collect_garbage(&*store, at, ttl).unwrap()
    };

    // Within the TTL nothing goes.
    assert_eq!(gc(t0 + 10).blobs_deleted, 0);
    assert!(blobs.contains(&blob(&kept)) && blobs.contains(&blob(&dropped)));
    // Past it, the unreferenced upload is deleted; the contributed one stays.
    let report = gc(t0 + ttl + 120);
    assert_eq!(report.records_expired, 2, "{report:?}");
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.blobs_kept_referenced, 1, "{report:?}");
    assert!(
        blobs.contains(&blob(&kept)),
        "a referenced blob is never deleted"
    );
    assert!(!blobs.contains(&blob(&dropped)));
    assert!(node.datanets.staged(&blob(&dropped)).is_empty());
    // Its rows are still served; the collected upload can no longer be contributed.
    let rows = node
        .datanets
        .contribution_rows(&*node.chain().store().clone(), 1, None, 0, 100);
    assert_eq!(rows.unwrap().len(), 5);
    refused(
        &node,
        &alice,
        contribute_call(&dropped),
        "was not staged on this node",
    );
    // And a restart remembers what was collected.
    drop(node);
    let node = open_node(dir.path(), dev_config());
    assert!(node.datanets.staged(&blob(&dropped)).is_empty());
    assert!(node.datanets.staged(&blob(&kept)).is_empty());
}

// ---- over HTTP ----

struct Server {
    node: Arc<Node>,
    port: u16,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn serve(config: NodeConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path(), config);
    create_datanet(&node, &key("alice"), "Bees");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(openledger_node::rpc::serve(
        node.clone(),
        listener,
        std::future::pending(),
    ));
    Server {
        node,
        port,
        rt,
        _dir: dir,
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, headers, body).
fn http(port: u16, head: &str, body: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, headers.to_string(), body.to_string())
}

fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "test-boundary-7d1e";
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A signed staging request's head for `body` (signed over `signed_body`), with a nonce.
fn stage_head(
    port: u16,
    key: &PrivateKeySigner,
    nonce: &str,
    content_type: &str,
    body: &[u8],
    signed_body: &[u8],
) -> String {
    let path = "/v1/datanets/1/stage";
    let time = openledger_node::sequencer::now();
    let hash = request_auth::body_hash(signed_body);
    let msg = request_auth::message(CHAIN_ID, "POST", path, time, nonce, &hash);
    let sig = key.sign_message_sync(msg.as_bytes()).unwrap();
    let auth = request_auth::header(key.address(), time, nonce, &hash, &sig);
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: {auth}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
}

#[test]
fn staging_is_signed_unreplayable_rate_limited_and_bounded_while_it_streams() {
    let mut config = dev_config();
    config.max_upload_files = 3;
    config.ingest.max_file_bytes = 10_000;
    config.staging = StagingConfig {
        max_request_bytes: 50_000,
        max_per_minute: 5,
        ..StagingConfig::default()
    };
    let srv = serve(config);
    let alice = key("alice");
    let file = rows_file("http");
    let (ct, body) = multipart(&[(file.name.as_str(), &file.bytes)]);

    // Unsigned: refused before the upload is read.
    let head = format!(
        "POST /v1/datanets/1/stage HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, _, text) = http(srv.port, &head, &body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("--from"), "{text}");

    // Signed: staged. The same signed request again is a replay.
    let head = stage_head(srv.port, &alice, "n1", &ct, &body, &body);
    let (status, _, text) = http(srv.port, &head, &body);
    assert_eq!(status, 200, "{text}");
    let staged: Value = serde_json::from_str(&text).unwrap();
    let blob = parse_blob_uri(staged["metadata_uri"].as_str().unwrap()).unwrap();
    assert_eq!(
        srv.node.datanets.staged(&blob)[0].staged_by,
        alice.address()
    );
    let (status, _, text) = http(srv.port, &head, &body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("already used"), "{text}");

    // A body other than the one signed.
    let other = rows_file("other");
    let (_, body2) = multipart(&[(other.name.as_str(), &other.bytes)]);
    let head = stage_head(srv.port, &alice, "n2", &ct, &body2, &body);
    let (status, _, text) = http(srv.port, &head, &body2);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("body hash"), "{text}");

    // Over the per-file, files-per-upload and per-upload limits: 413 with the limit named.
    let big = vec![b'a'; 10_001];
    let (ct2, body3) = multipart(&[("big.txt", &big)]);
    let head = stage_head(srv.port, &alice, "n3", &ct2, &body3, &body3);
    let (status, _, text) = http(srv.port, &head, &body3);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("10000-byte limit per file"), "{text}");
    let small: &[u8] = b"one row";
    let (ct4, body4) = multipart(&[
        ("a.txt", small),
        ("b.txt", small),
        ("c.txt", small),
        ("d.txt", small),
    ]);
    let head = stage_head(srv.port, &alice, "n4", &ct4, &body4, &body4);
    let (status, _, text) = http(srv.port, &head, &body4);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("more than 3 files"), "{text}");
    let (ct5, body5) = multipart(&[("a.txt", &[b'a'; 9_000][..]); 3]);
    let head = stage_head(srv.port, &alice, "n5", &ct5, &body5, &body5).replace(
        &format!("Content-Length: {}", body5.len()),
        "Content-Length: 60000",
    );
    let (status, _, text) = http(srv.port, &head, &[]);
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("50000-byte limit per upload"), "{text}");

    // Five stagings a minute (refused ones count, replays do not): the sixth waits, told when.
    let head = stage_head(srv.port, &alice, "n6", &ct, &body, &body);
    let (status, headers, text) = http(srv.port, &head, &body);
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("in the last minute"), "{text}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after:"),
        "{headers}"
    );
    // Another account is not held back by alice's.
    let bob = key("bob");
    let head = stage_head(srv.port, &bob, "n1", &ct, &body, &body);
    let (status, _, text) = http(srv.port, &head, &body);
    assert_eq!(status, 200, "{text}");
    drop(srv.rt);
}

#[test]
fn uploads_past_the_concurrency_limit_are_turned_away_with_retry_after() {
    let mut config = dev_config();
    config.staging = StagingConfig {
        max_concurrent: 1,
        queue_wait_secs: 0,
        ..StagingConfig::default()
    };
    let srv = serve(config);
    let (alice, bob) = (key("alice"), key("bob"));
    let file = rows_file("slow");
    let (ct, body) = multipart(&[(file.name.as_str(), &file.bytes)]);

    // Alice's upload takes the only slot: the node asks for her body (100 Continue) once it
    // has one, and she holds it back.
    let head = stage_head(srv.port, &alice, "slow", &ct, &body, &body).replace(
        "Connection: close\r\n",
        "Connection: close\r\nExpect: 100-continue\r\n",
    );
    let mut slow = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    slow.write_all(head.as_bytes()).unwrap();
    let mut interim = [0u8; 25];
    slow.read_exact(&mut interim).unwrap();
    assert!(
        String::from_utf8_lossy(&interim).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&interim)
    );

    // Bob finds no slot free: 503, told when to retry.
    let head = stage_head(srv.port, &bob, "n1", &ct, &body, &body);
    let (status, headers, text) = http(srv.port, &head, &body);
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("already ingesting 1 uploads"), "{text}");
    assert!(
        headers.to_ascii_lowercase().contains("retry-after:"),
        "{headers}"
    );

    // Alice finishes and is staged; then the slot is free for Bob.
    slow.write_all(&body).unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.contains(" 200 OK"), "{answer}");
    let head = stage_head(srv.port, &bob, "n2", &ct, &body, &body);
    let (status, _, text) = http(srv.port, &head, &body);
    assert_eq!(status, 200, "{text}");
    drop(srv.rt);
}
