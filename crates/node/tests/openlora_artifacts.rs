//! OpenLoRA's artifacts through a real node over HTTP: a signed upload of an adapter bundle is
//! stored under its BLAKE3 hash and the adapter registered with that hash resolves by name and
//! by `adapter-<id>` to an unpacked PEFT directory whose files are the bundle's; a stored bundle
//! corrupted on disk is refused (and removed) rather than served; an adapter of another base
//! model is refused naming both model hashes; unsigned, replayed, oversize and tampered uploads
//! are refused and leave nothing behind; an index whose files are missing or whose root is not
//! the one claimed is refused, and an uploaded index is found by the adapter's on-chain root.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_attribution::{BuildOptions, Index, RowTokens};
use openledger_datanet::SourceFile;
use openledger_node::{
    openlora::{bundle, ArtifactLimits, OpenLora},
    sequencer::Node,
    Chain, NodeConfig,
};
use openledger_types::{
    abi::{IDatanet, IModel},
    modules, request_auth,
    units::one_open,
    Genesis,
};
use serde_json::{json, Value};
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

const CHAIN_ID: u64 = 4244;
const MAX_ARTIFACT: u64 = 64 * 1024;

fn key(name: &str) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256(name)).unwrap()
}

fn served_hash() -> B256 {
    B256::repeat_byte(0x51)
}

fn other_hash() -> B256 {
    B256::repeat_byte(0x52)
}

fn rpc(node: &Node, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    openledger_node::rpc::handle_body(node, body.to_string().as_bytes())
}

/// Sends a module call (sealed at once: dev mode) and requires it to succeed.
fn call(node: &Node, from: &PrivateKeySigner, to: Address, data: Vec<u8>) {
    let n = rpc(
        node,
        "eth_getTransactionCount",
        json!([from.address(), "pending"]),
    );
    let nonce =
        u64::from_str_radix(n["result"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 5_000_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value: U256::ZERO,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = from.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    let r = rpc(
        node,
        "eth_sendRawTransaction",
        json!([Bytes::copy_from_slice(&raw)]),
    );
    let hash = r["result"].clone();
    assert!(hash.is_string(), "{r}");
    let receipt = rpc(node, "eth_getTransactionReceipt", json!([hash]));
    assert_eq!(receipt["result"]["status"], "0x1", "{receipt}");
}

/// A tiny LoRA adapter's safetensors bytes (two layers, q and v, rank 2) and its config.
fn adapter_files(seed: u8) -> (String, Vec<u8>) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for layer in 0..2 {
        for (proj, out) in [("q_proj", 8u64), ("v_proj", 4)] {
            for (ab, shape) in [("A", [2u64, 8]), ("B", [out, 2])] {
                let name = format!(
                    "base_model.model.model.layers.{layer}.self_attn.{proj}.lora_{ab}.weight"
                );
                let start = data.len();
                for i in 0..shape[0] * shape[1] {
                    data.extend_from_slice(&((i as f32 + seed as f32) * 0.01).to_le_bytes());
                }
                header.insert(
                    name,
                    json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
                );
            }
        }
    }
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&data);
    let config = json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]});
    (serde_json::to_string_pretty(&config).unwrap(), out)
}

fn bundle_of(seed: u8) -> (String, Vec<u8>) {
    let (config, weights) = adapter_files(seed);
    let b = bundle::pack_parts(&config, &weights, None).unwrap();
    (config, b)
}

struct Server {
    node: Arc<Node>,
    lora: Arc<OpenLora>,
    port: u16,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    _tmp: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with(NodeConfig {
            dev: true,
            ..NodeConfig::default()
        })
    }

    fn start_with(config: NodeConfig) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let genesis = Genesis::with_accounts(
            CHAIN_ID,
            1,
            &[key("alice").address(), key("bob").address()],
            U256::from(1000u64) * one_open(),
        )
        .unwrap();
        let chain = Chain::open(&tmp.path().join("chain.redb"), &genesis, false).unwrap();
        let node = Node::new(chain, config, &tmp.path().join("blobs")).unwrap();
        let dir = tmp.path().join("openlora");
        let limits = ArtifactLimits {
            max_artifact_bytes: MAX_ARTIFACT,
            ..ArtifactLimits::default()
        };
        let lora =
            OpenLora::open_with(node.clone(), &dir, None, Some(served_hash()), limits).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        rt.spawn(openledger_node::rpc::serve_with(
            node.clone(),
            listener,
            openledger_node::openlora::router(lora.clone()),
            std::future::pending(),
        ));
        Server {
            node,
            lora,
            port,
            dir,
            rt,
            _tmp: tmp,
        }
    }

    /// Files under `artifacts/` and `tmp/`.
    fn stored(&self) -> (usize, usize) {
        let count = |d: &str| std::fs::read_dir(self.dir.join(d)).unwrap().count();
        (count("artifacts"), count("tmp"))
    }
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(port: u16, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let headers = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out[(split + 4).min(out.len())..].to_vec())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The `Authorization` header for `POST path` signed over `signed_body`.
fn auth(who: &PrivateKeySigner, path: &str, nonce: &str, signed_body: &[u8]) -> String {
    let time = openledger_node::sequencer::now();
    let hash = request_auth::body_hash(signed_body);
    let msg = request_auth::message(CHAIN_ID, "POST", path, time, nonce, &hash);
    let sig = who.sign_message_sync(msg.as_bytes()).unwrap();
    request_auth::header(who.address(), time, nonce, &hash, &sig)
}

fn post_head(port: u16, path: &str, auth: Option<&str>, len: usize) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
}

/// Uploads `bytes` signed by `who`; (status, answer).
fn upload(srv: &Server, who: &PrivateKeySigner, nonce: &str, bytes: &[u8]) -> (u16, Value) {
    let a = auth(who, "/v1/artifacts", nonce, bytes);
    let (status, body) = http(
        srv.port,
        &post_head(srv.port, "/v1/artifacts", Some(&a), bytes.len()),
        bytes,
    );
    (
        status,
        serde_json::from_slice(&body).unwrap_or_else(|_| json!({"raw": text(&body)})),
    )
}

fn post_index(srv: &Server, who: &PrivateKeySigner, nonce: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let a = auth(who, "/v1/indexes", nonce, &bytes);
    let (status, out) = http(
        srv.port,
        &post_head(srv.port, "/v1/indexes", Some(&a), bytes.len()),
        &bytes,
    );
    (status, serde_json::from_slice(&out).unwrap())
}

/// A datanet with one approved version, two base models (the served one and another) and the
/// adapter "bees" (base 1, with `index_root`) and "elsewhere" (base 2).
fn register(srv: &Server, bees: B256, elsewhere: B256, index_root: B256) {
    let (node, alice) = (&srv.node, key("alice"));
    call(
        node,
        &alice,
        modules::DATANET,
        IDatanet::createDatanetCall {
            name: "Bees".into(),
            summary: String::new(),
            description: String::new(),
            tags: vec![],
            dataType: 0,
            licence: "CC0".into(),
            permissioned: false,
        }
        .abi_encode(),
    );
    let rows: String = (0..4)
        .map(|i| format!("Row {i}: city bees forage on linden and clover in June.\n\n"))
        .collect();
    let store = node.chain().store().clone();
    let staged = node
        .datanets
        .stage(
            &*store,
            1,
            &[SourceFile::new("bees.txt", rows)],
            alice.address(),
        )
        .unwrap();
    let r = &staged.report;
    call(
        node,
        &alice,
        modules::DATANET,
        IDatanet::contributeCall {
            datanetId: 1,
            rowsRoot: r.rows_root,
            rowCount: r.row_count,
            byteSize: r.byte_size,
            score: r.score_bps,
            metadataUri: staged.metadata_uri.clone(),
        }
        .abi_encode(),
    );
    call(
        node,
        &alice,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 1 }.abi_encode(),
    );
    for (hash, name) in [(served_hash(), "SmolLM2"), (other_hash(), "Other")] {
        call(
            node,
            &alice,
            modules::MODEL,
            IModel::registerBaseModelCall {
                modelHash: hash,
                name: name.into(),
            }
            .abi_encode(),
        );
    }
    for (base, name, hash, root) in [
        (1, "bees", bees, index_root),
        (2, "elsewhere", elsewhere, B256::ZERO),
    ] {
        call(
            node,
            &key("bob"),
            modules::MODEL,
            IModel::registerAdapterCall {
                baseModelId: base,
                name: name.into(),
                datanetIds: vec![1],
                datanetVersions: vec![1],
                trainingConfigHash: B256::repeat_byte(7),
                adapterHash: hash,
                attributionIndexRoot: root,
            }
            .abi_encode(),
        );
    }
}

/// A small attribution index built in `dir`; its files as (path inside the index, bytes).
fn build_index(dir: &Path) -> (B256, Vec<(String, Vec<u8>)>) {
    let rows: Vec<RowTokens> = (0..6)
        .map(|i| RowTokens {
            tokens: vec![1 + i % 3, 2, 3 + i % 2, 4],
            contribution_id: 1,
            contributor: key("alice").address(),
        })
        .collect();
    let ix = Index::create(
        dir,
        &rows,
        16,
        BTreeMap::new(),
        &BuildOptions {
            threads: 1,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    let mut files = Vec::new();
    for entry in walk(dir) {
        let rel = entry
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        files.push((rel, std::fs::read(&entry).unwrap()));
    }
    files.sort();
    (ix.root(), files)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn adapters_resolve_to_verified_bundles_and_bad_ones_are_refused() {
    let srv = Server::start();
    let (alice, bob) = (key("alice"), key("bob"));
    let (config, bees) = bundle_of(1);
    let (_, elsewhere) = bundle_of(2);
    let bees_hash = bundle::blake3_hash(&bees);
    let ix_dir = tempfile::tempdir().unwrap();
    let (root, index_files) = build_index(&ix_dir.path().join("ix"));
    register(&srv, bees_hash, bundle::blake3_hash(&elsewhere), root);
    let lora = &srv.lora;

    // Before its bundle is uploaded the adapter cannot be served, and says how to fix it.
    let err = lora.resolve_adapter("bees").unwrap_err();
    assert!(
        err.contains("not stored") && err.contains("upload"),
        "{err}"
    );

    // A signed upload is stored under its BLAKE3 hash (201), and again is no error (200).
    let (status, v) = upload(&srv, &bob, "b1", &bees);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["hash"], json!(bees_hash));
    assert_eq!(v["bytes"], json!(bees.len()));
    let (status, v) = upload(&srv, &alice, "a1", &bees);
    assert_eq!(status, 200, "{v}");

    // By name and by id: the PEFT directory holds the bundle's config and its bytes unchanged.
    let r = lora.resolve_adapter("bees").unwrap().expect("registered");
    assert_eq!((r.id, r.name.as_str(), r.owner), (1, "bees", bob.address()));
    assert_eq!((r.hash, r.datanets.clone()), (bees_hash, vec![(1, 1)]));
    assert_eq!(
        std::fs::read_to_string(r.peft_dir.join("adapter_config.json")).unwrap(),
        config
    );
    let weights = std::fs::read(r.peft_dir.join("adapter_model.safetensors")).unwrap();
    assert_eq!(bundle::blake3_hash(&weights), bees_hash);
    // The unpacked weights are a safetensors file of the adapter's eight tensors.
    let header = bundle::read_header(&mut &weights[..], weights.len() as u64).unwrap();
    assert_eq!(header.tensors.len(), 8);
    assert_eq!(r.index_dir, None, "the index is not uploaded yet");
    assert_eq!(lora.resolve_adapter("adapter-1").unwrap(), Some(r.clone()));
    // An id is written one way only: zero-padded forms name nothing (each would otherwise be
    // one more name for the same adapter, missing every resolution cache).
    for unknown in [
        "nobody",
        "adapter-99",
        "adapter-",
        "adapter-01",
        "adapter-0001",
    ] {
        assert_eq!(lora.resolve_adapter(unknown).unwrap(), None, "{unknown}");
    }
    // Only adapters of the served base model are listed.
    assert_eq!(lora.chain_adapters(), vec![(1, "bees".to_string())]);

    // Downloads give the stored bytes back.
    let head = format!(
        "GET /v1/artifacts/{bees_hash} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        srv.port
    );
    let (status, body) = http(srv.port, &head, b"");
    assert_eq!(status, 200);
    assert_eq!(body, bees);
    let head = head.replace(&bees_hash.to_string(), &B256::repeat_byte(9).to_string());
    assert_eq!(http(srv.port, &head, b"").0, 404);

    // Another base model: refused, naming both model hashes.
    let (status, _) = upload(&srv, &bob, "b2", &elsewhere);
    assert_eq!(status, 201);
    let err = lora.resolve_adapter("elsewhere").unwrap_err();
    assert!(
        err.contains(&other_hash().to_string()) && err.contains(&served_hash().to_string()),
        "{err}"
    );

    // The stored bundle corrupted on disk (same length): refused, removed, not served.
    let stored = lora.artifacts.path(&bees_hash);
    let mut bytes = std::fs::read(&stored).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stored)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let err = lora.resolve_adapter("bees").unwrap_err();
    assert!(
        err.contains("corrupt") && err.contains("upload it again"),
        "{err}"
    );
    assert!(!stored.exists());
    assert!(!r.peft_dir.exists(), "the unpacked copy is gone too");
    let err = lora.resolve_adapter("adapter-1").unwrap_err();
    assert!(err.contains("not stored"), "{err}");
    // Uploading it again heals it.
    assert_eq!(upload(&srv, &bob, "b3", &bees).0, 201);
    // A download of a copy corrupted on disk is refused before any byte goes out (it used to
    // send the whole corrupt file with a 200).
    let mut bad = std::fs::read(&stored).unwrap();
    bad[0] ^= 0xff;
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new mtime for the stamp
    std::fs::write(&stored, &bad).unwrap();
    let get = format!(
        "GET /v1/artifacts/{bees_hash} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
        srv.port
    );
    let (status, body) = http(srv.port, &get, b"");
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("corrupt"));
    assert_eq!(upload(&srv, &bob, "b4", &bees).0, 201);
    let again = lora.resolve_adapter("bees").unwrap().unwrap();
    assert_eq!(
        bundle::blake3_hash(
            &std::fs::read(again.peft_dir.join("adapter_model.safetensors")).unwrap()
        ),
        bees_hash
    );

    // The unpacked weights tampered with are unpacked again from the verified bundle.
    std::fs::write(again.peft_dir.join("adapter_model.safetensors"), b"junk").unwrap();
    let healed = lora.resolve_adapter("bees").unwrap().unwrap();
    assert_eq!(
        std::fs::read(healed.peft_dir.join("adapter_model.safetensors")).unwrap(),
        bees
    );

    // ---- the attribution index ----
    let listing = |files: &[(String, Vec<u8>)]| -> Vec<Value> {
        files
            .iter()
            .map(|(p, b)| json!({"path": p, "hash": bundle::blake3_hash(b)}))
            .collect()
    };
    // Files not uploaded: refused, naming them.
    let (status, v) = post_index(&srv, &bob, "i1", &json!({"files": listing(&index_files)}));
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("were not uploaded"),
        "{v}"
    );
    for (i, (_, b)) in index_files.iter().enumerate() {
        let (status, v) = upload(&srv, &bob, &format!("f{i}"), b);
        assert!(status == 201 || status == 200, "{v}");
    }
    // A root other than the one claimed: refused, and nothing is kept.
    let wrong = json!({"files": listing(&index_files), "root": B256::repeat_byte(3)});
    let (status, v) = post_index(&srv, &bob, "i2", &wrong);
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not the claimed"),
        "{v}"
    );
    assert_eq!(
        std::fs::read_dir(srv.dir.join("indexes")).unwrap().count(),
        0
    );
    // A listing that leaves a shard file out does not open.
    let partial: Vec<_> = index_files
        .iter()
        .filter(|(p, _)| !p.ends_with("sa.bin"))
        .cloned()
        .collect();
    let (status, v) = post_index(&srv, &bob, "i3", &json!({"files": listing(&partial)}));
    assert_eq!(status, 422, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("do not make an index"),
        "{v}"
    );
    // Path tricks are refused before anything is touched.
    let mut sneaky = listing(&index_files);
    sneaky[0]["path"] = json!("../escape");
    assert_eq!(
        post_index(&srv, &bob, "i4", &json!({"files": sneaky})).0,
        400
    );
    // The right files and root: stored, and the adapter finds its index.
    let good = json!({"files": listing(&index_files), "root": root});
    let (status, v) = post_index(&srv, &bob, "i5", &good);
    assert_eq!((status, &v["root"]), (201, &json!(root)), "{v}");
    let (status, _) = post_index(&srv, &bob, "i6", &good);
    assert_eq!(status, 200);
    let r = lora.resolve_adapter("bees").unwrap().unwrap();
    let index_dir = r
        .index_dir
        .expect("the index is found by its on-chain root");
    assert_eq!(Index::open(&index_dir).unwrap().root(), root);
    assert_eq!(srv.stored().1, 0, "no temporary files are left");
    drop(srv.rt);
}

#[test]
fn unsigned_replayed_oversize_and_tampered_uploads_leave_nothing_behind() {
    let srv = Server::start();
    let bob = key("bob");
    let bytes = vec![7u8; 1000];
    let path = "/v1/artifacts";

    // Unsigned.
    let (status, body) = http(
        srv.port,
        &post_head(srv.port, path, None, bytes.len()),
        &bytes,
    );
    assert_eq!(status, 401, "{}", text(&body));
    assert!(text(&body).contains("--from"), "{}", text(&body));
    assert_eq!(srv.stored(), (0, 0));

    // Signed over other bytes.
    let a = auth(&bob, path, "t1", b"something else");
    let (status, body) = http(
        srv.port,
        &post_head(srv.port, path, Some(&a), bytes.len()),
        &bytes,
    );
    assert_eq!(status, 401, "{}", text(&body));
    assert!(text(&body).contains("body hash"), "{}", text(&body));
    assert_eq!(srv.stored(), (0, 0));

    // Over the size limit, declared: refused before reading.
    let big = vec![1u8; MAX_ARTIFACT as usize + 1];
    let a = auth(&bob, path, "t2", &big);
    let (status, body) = http(
        srv.port,
        &post_head(srv.port, path, Some(&a), big.len()),
        &big,
    );
    assert_eq!(status, 413, "{}", text(&body));
    assert!(
        text(&body).contains(&format!("{MAX_ARTIFACT}-byte limit")),
        "{}",
        text(&body)
    );
    assert_eq!(srv.stored(), (0, 0));
    // Over the size limit, streamed without a length: cut off once it passes the limit.
    let a = auth(&bob, path, "t3", &big);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: {a}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.port
    );
    let mut chunked = Vec::new();
    for piece in big.chunks(16 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = http(srv.port, &head, &chunked);
    assert_eq!(status, 413, "{}", text(&body));
    assert_eq!(srv.stored(), (0, 0));

    // Accepted once; the same signed request again is a replay.
    let a = auth(&bob, path, "t4", &bytes);
    let head = post_head(srv.port, path, Some(&a), bytes.len());
    let (status, body) = http(srv.port, &head, &bytes);
    assert_eq!(status, 201, "{}", text(&body));
    let (status, body) = http(srv.port, &head, &bytes);
    assert_eq!(status, 401, "{}", text(&body));
    assert!(text(&body).contains("already used"), "{}", text(&body));
    assert_eq!(srv.stored(), (1, 0), "only the accepted upload is stored");
    assert!(srv.lora.artifacts.contains(&bundle::blake3_hash(&bytes)));
    drop(srv.rt);
}

#[test]
fn uploads_count_against_the_hourly_byte_quota_of_their_signer() {
    let mut config = NodeConfig {
        dev: true,
        ..NodeConfig::default()
    };
    config.staging.max_bytes_per_hour = 3000;
    let srv = Server::start_with(config);
    let (alice, bob) = (key("alice"), key("bob"));
    let path = "/v1/artifacts";
    assert_eq!(upload(&srv, &bob, "q1", &[1u8; 2000]).0, 201);
    // 2000 more would pass 3000 bytes this hour: refused before reading, told when to retry.
    let more = [2u8; 2000];
    let a = auth(&bob, path, "q2", &more);
    let head = post_head(srv.port, path, Some(&a), more.len());
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&more);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    assert!(answer.contains("bytes per hour"), "{answer}");
    assert_eq!(srv.stored(), (1, 0));
    // Another signer has its own quota.
    assert_eq!(upload(&srv, &alice, "q3", &more).0, 201);
    drop(srv.rt);
}
