//! OpenLoRA payments through a real node: API keys bound by a signature for this chain and this
//! operator (stored hashed, revocable, a revoked key's binding cannot be replayed); reservations
//! held against the caller's credit within its allowance, counting its other requests in flight
//! and its charged-but-unrecorded fees; charges journaled durably, recorded on chain in batches
//! after a crash exactly once (every wei accounted for between caller, treasury, stakers, model
//! owner and contributor); and a batch holding one record the chain refuses records the others.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{hex, keccak256, Address, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_datanet::SourceFile;
use openledger_node::{
    openlora::{api_keys, OpenLora, PaymentLimits, ServedInference},
    sequencer::Node,
    Chain, ChainError, NodeConfig,
};
use openledger_state::{
    executor::{gas_of, simulate_call},
    modules::bank,
};
use openledger_types::{
    abi::{IDatanet, IInference, IModel, IStaking},
    modules::{DATANET, INFERENCE, MODEL, STAKING, TREASURY},
    request_auth,
    units::{format_open, one_open},
    Genesis,
};
use serde_json::{json, Value};
use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    sync::Arc,
    time::Duration,
};

const CHAIN_ID: u64 = 4244;

fn key(name: &str) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256(name)).unwrap()
}

const NAMES: [&str; 7] = [
    "alice", "bob", "dave", "operator", "owner", "carol", "staker",
];

fn genesis() -> Genesis {
    let accounts: Vec<Address> = NAMES.iter().map(|n| key(n).address()).collect();
    Genesis::with_accounts(CHAIN_ID, 1, &accounts, U256::from(100u64) * one_open()).unwrap()
}

fn open_node(dir: &Path) -> Arc<Node> {
    let chain = Chain::open(&dir.join("chain.redb"), &genesis(), false).unwrap();
    let config = NodeConfig {
        dev: true,
        ..NodeConfig::default()
    };
    Node::new(chain, config, &dir.join("blobs")).unwrap()
}

fn milli(n: u64) -> U256 {
    one_open() / U256::from(1000u64) * U256::from(n)
}

/// Sends a transaction from `from` and seals it; the chain's refusal otherwise.
fn send(
    node: &Node,
    from: &PrivateKeySigner,
    to: Address,
    value: U256,
    data: Vec<u8>,
) -> Result<B256, ChainError> {
    let (nonce, params) = {
        let chain = node.chain();
        let nonce = chain
            .with_pending_state(|s| bank::account(s, &from.address()))
            .unwrap()
            .nonce;
        (nonce, chain.params().unwrap())
    };
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: gas_of(&params, &to, &data).unwrap(),
        max_fee_per_gas: params.min_gas_price_wei as u128,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = from.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    let hash = node.submit_raw(&raw)?;
    node.seal().unwrap();
    Ok(hash)
}

fn ok(node: &Node, from: &PrivateKeySigner, to: Address, value: U256, data: Vec<u8>) {
    if let Err(e) = send(node, from, to, value, data) {
        panic!("transaction refused: {e}");
    }
}

/// A view call on the sealed state.
fn view<C: SolCall>(node: &Node, to: Address, call: C) -> C::Return {
    let chain = node.chain();
    let env = chain.pending_env(0).unwrap();
    let params = chain.params().unwrap();
    let store = chain.store().clone();
    let (out, _, _) = simulate_call(
        &*store,
        &env,
        &params,
        Address::ZERO,
        to,
        U256::ZERO,
        &call.abi_encode(),
    )
    .unwrap();
    C::abi_decode_returns(&out).unwrap()
}

fn balance(node: &Node, a: Address) -> U256 {
    let store = node.chain().store().clone();
    bank::account(&*store, &a).unwrap().balance
}

fn credit(node: &Node, a: Address) -> U256 {
    view(node, INFERENCE, IInference::creditOfCall { account: a })
}

/// A chain with a datanet (carol's approved contribution 1 in version 1), base model 1, the
/// owner's adapter 1 trained on it, and a staker.
fn world(node: &Node) {
    let owner = key("owner");
    let carol = key("carol");
    ok(
        node,
        &owner,
        DATANET,
        U256::ZERO,
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
    let body: String = (0..5)
        .map(|i| format!("Row {i}: city bees forage on linden and clover in June.\n\n"))
        .collect();
    let staged = {
        let store = node.chain().store().clone();
        node.datanets
            .stage(
                &*store,
                1,
                &[SourceFile::new("bees.txt", body)],
                carol.address(),
            )
            .unwrap()
    };
    let r = &staged.report;
    ok(
        node,
        &carol,
        DATANET,
        U256::ZERO,
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
    ok(
        node,
        &owner,
        DATANET,
        U256::ZERO,
        IDatanet::approveCall { contributionId: 1 }.abi_encode(),
    );
    ok(
        node,
        &owner,
        MODEL,
        U256::ZERO,
        IModel::registerBaseModelCall {
            modelHash: B256::repeat_byte(1),
            name: "smol".into(),
        }
        .abi_encode(),
    );
    ok(
        node,
        &owner,
        MODEL,
        U256::ZERO,
        IModel::registerAdapterCall {
            baseModelId: 1,
            name: "bees".into(),
            datanetIds: vec![1],
            datanetVersions: vec![1],
            trainingConfigHash: B256::repeat_byte(2),
            adapterHash: B256::repeat_byte(3),
            attributionIndexRoot: B256::repeat_byte(4),
        }
        .abi_encode(),
    );
    ok(
        node,
        &key("staker"),
        STAKING,
        U256::from(10u64) * one_open(),
        IStaking::stakeCall {}.abi_encode(),
    );
}

/// `who` deposits `amount` of credit and allows the operator `allowance`.
fn fund(node: &Node, who: &PrivateKeySigner, amount: U256, allowance: U256) {
    ok(
        node,
        who,
        INFERENCE,
        amount,
        IInference::depositCall {}.abi_encode(),
    );
    ok(
        node,
        who,
        INFERENCE,
        U256::ZERO,
        IInference::approveOperatorCall {
            operator: key("operator").address(),
            allowance,
        }
        .abi_encode(),
    );
}

fn open_lora(node: &Arc<Node>, dir: &Path) -> Arc<OpenLora> {
    OpenLora::open(
        node.clone(),
        &dir.join("openlora"),
        Some(key("operator")),
        None,
    )
    .unwrap()
}

fn served(caller: Address, n: u32) -> ServedInference {
    ServedInference {
        request_id: keccak256(format!("chatcmpl-{caller}-{n}")),
        caller,
        adapter_id: 1,
        prompt_tokens: 10 + n,
        completion_tokens: 20 + n,
        top: vec![(1, 600_000)],
        attribution_root: B256::repeat_byte(0xaa),
    }
}

/// The fee the chain charges for `s` at the default prices.
fn fee(node: &Node, s: &ServedInference) -> U256 {
    view(
        node,
        INFERENCE,
        IInference::quoteCall {
            promptTokens: s.prompt_tokens,
            completionTokens: s.completion_tokens,
        },
    )
}

fn charge(o: &OpenLora, s: &ServedInference) {
    let r = o
        .reserve(s.caller, s.adapter_id, s.prompt_tokens, 100)
        .unwrap();
    o.charge(r, s.clone()).unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---- API keys over HTTP ----

struct Server {
    port: u16,
    _rt: tokio::runtime::Runtime,
}

fn serve(node: &Arc<Node>, o: Arc<OpenLora>) -> Server {
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(openledger_node::rpc::serve_with(
        node.clone(),
        listener,
        openledger_node::openlora::router(o),
        std::future::pending(),
    ));
    Server { port, _rt: rt }
}

/// One HTTP/1.1 request: (status, JSON body).
fn http(port: u16, method: &str, path: &str, auth: Option<String>, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The binding of `key` to `account`'s address, signed by `signer` for `chain` and `operator`.
fn binding(
    signer: &PrivateKeySigner,
    account: Address,
    key: &str,
    chain: u64,
    operator: Address,
    issued_at: u64,
) -> String {
    let hash = api_keys::key_hash(key);
    let msg = api_keys::binding_message(chain, operator, &hash, issued_at);
    let sig = signer.sign_message_sync(msg.as_bytes()).unwrap();
    json!({
        "address": account,
        "key_hash": hash,
        "issued_at": issued_at,
        "signature": format!("0x{}", hex::encode(sig.as_bytes())),
    })
    .to_string()
}

/// A signed request header for `DELETE path` by `signer`.
fn signed_delete(signer: &PrivateKeySigner, path: &str, nonce: &str) -> String {
    let time = openledger_node::sequencer::now();
    let body = request_auth::body_hash(b"");
    let msg = request_auth::message(CHAIN_ID, "DELETE", path, time, nonce, &body);
    let sig = signer.sign_message_sync(msg.as_bytes()).unwrap();
    request_auth::header(signer.address(), time, nonce, &body, &sig)
}

#[test]
fn api_keys_are_bound_by_signature_stored_hashed_and_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    let o = open_lora(&node, dir.path());
    let server = serve(&node, o.clone());
    let (alice, bob) = (key("alice"), key("bob"));
    let op = key("operator").address();
    let now = openledger_node::sequencer::now();
    let the_key = format!("olk_{}", "5a".repeat(32));

    let (status, info) = http(server.port, "GET", "/v1/openlora", None, "");
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["operator"], json!(op));
    assert_eq!(info["billing"], json!(true));
    assert_eq!(info["price_per_prompt_token"], json!("10000000000000"));

    // Refused: signed by another key, for another chain, for another operator, long ago.
    let refusals = [
        (
            binding(&bob, alice.address(), &the_key, CHAIN_ID, op, now),
            401,
        ),
        (
            binding(&alice, alice.address(), &the_key, CHAIN_ID + 1, op, now),
            401,
        ),
        (
            binding(
                &alice,
                alice.address(),
                &the_key,
                CHAIN_ID,
                bob.address(),
                now,
            ),
            401,
        ),
        (
            binding(&alice, alice.address(), &the_key, CHAIN_ID, op, now - 3600),
            401,
        ),
    ];
    for (body, expected) in refusals {
        let (status, answer) = http(server.port, "POST", "/v1/api-keys", None, &body);
        assert_eq!(status, expected, "{answer}");
        assert!(answer["error"].as_str().is_some(), "{answer}");
    }
    assert_eq!(o.account_for_key(&the_key), None);

    // An account that never let the operator spend its credit binds no key: keys cost their
    // holders an approval on chain, so the table cannot be filled by throwaway accounts.
    let dave_key = format!("olk_{}", "d0".repeat(32));
    let dave = key("dave");
    let (status, answer) = http(
        server.port,
        "POST",
        "/v1/api-keys",
        None,
        &binding(&dave, dave.address(), &dave_key, CHAIN_ID, op, now),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("allowance"),
        "{answer}"
    );
    assert_eq!(o.account_for_key(&dave_key), None);

    ok(
        &node,
        &alice,
        INFERENCE,
        U256::ZERO,
        IInference::approveOperatorCall {
            operator: op,
            allowance: one_open(),
        }
        .abi_encode(),
    );
    let good = binding(&alice, alice.address(), &the_key, CHAIN_ID, op, now);
    let (status, answer) = http(server.port, "POST", "/v1/api-keys", None, &good);
    assert_eq!(status, 201, "{answer}");
    assert_eq!(o.account_for_key(&the_key), Some(alice.address()));
    assert_eq!(o.account_for_key(&format!("olk_{}", "5b".repeat(32))), None);
    // Stored hashed: the file never holds the key.
    let stored = std::fs::read_to_string(dir.path().join("openlora/api_keys.json")).unwrap();
    assert!(!stored.contains(&the_key) && !stored.contains(&the_key[4..]));
    assert!(stored.contains(&api_keys::key_hash(&the_key).to_string()));

    // Revoking: signed, by the bound account only.
    let path = format!("/v1/api-keys/{}", api_keys::key_hash(&the_key));
    let (status, _) = http(server.port, "DELETE", &path, None, "");
    assert_eq!(status, 401);
    let (status, _) = http(
        server.port,
        "DELETE",
        &path,
        Some(signed_delete(&bob, &path, "n1")),
        "",
    );
    assert_eq!(status, 403);
    assert_eq!(o.account_for_key(&the_key), Some(alice.address()));
    let (status, answer) = http(
        server.port,
        "DELETE",
        &path,
        Some(signed_delete(&alice, &path, "n2")),
        "",
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(o.account_for_key(&the_key), None);
    // The captured binding cannot bring it back, before or after a restart.
    let (status, _) = http(server.port, "POST", "/v1/api-keys", None, &good);
    assert_eq!(status, 403);
    drop(server);
    drop(o);
    let o = open_lora(&node, dir.path());
    assert_eq!(o.account_for_key(&the_key), None);
    let chain = node.chain_id();
    let b: api_keys::KeyBinding = serde_json::from_str(&good).unwrap();
    assert!(o.payments.keys.bind(&b, chain, op, now).is_err());

    // A node without an operator key issues no keys.
    let dir2 = tempfile::tempdir().unwrap();
    let node2 = open_node(dir2.path());
    let o2 = OpenLora::open(node2.clone(), &dir2.path().join("openlora"), None, None).unwrap();
    let server2 = serve(&node2, o2);
    let (_, info) = http(server2.port, "GET", "/v1/openlora", None, "");
    assert_eq!(info["billing"], json!(false));
    let (status, _) = http(server2.port, "POST", "/v1/api-keys", None, &good);
    assert_eq!(status, 503);
}

// ---- reservations ----

#[test]
fn reserve_refuses_past_credit_and_allowance_and_counts_what_other_requests_hold() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    world(&node);
    let (alice, bob, dave) = (key("alice"), key("bob"), key("dave"));
    // Prices: 0.00001 OPEN per prompt token, 0.00002 per completion token. 10_000 prompt +
    // 10_000 completion tokens cost 0.3 OPEN.
    fund(&node, &alice, milli(1000), milli(500));
    fund(&node, &bob, milli(1000), milli(100));
    fund(&node, &dave, milli(100), milli(1000));
    let o = open_lora(&node, dir.path());

    let over_allowance = o.reserve(bob.address(), 1, 10_000, 10_000).unwrap_err();
    assert!(
        over_allowance.contains("payment required"),
        "{over_allowance}"
    );
    assert!(over_allowance.contains("allowance"), "{over_allowance}");
    let over_credit = o.reserve(dave.address(), 1, 10_000, 10_000).unwrap_err();
    assert!(over_credit.contains("0.1 OPEN available"), "{over_credit}");
    assert!(
        o.reserve(alice.address(), 7, 1, 1).is_err(),
        "unknown adapter"
    );

    // Alice may spend 0.5: one 0.3 request fits, a second does not while the first is in flight.
    let first = o.reserve(alice.address(), 1, 10_000, 10_000).unwrap();
    assert_eq!(first.amount(), milli(300));
    let second = o.reserve(alice.address(), 1, 10_000, 10_000).unwrap_err();
    assert!(second.contains("0.2 OPEN available"), "{second}");
    o.release(first);
    let first = o.reserve(alice.address(), 1, 10_000, 10_000).unwrap();
    // Charged for 0.15 (5_000 + 5_000 tokens): until recorded it still counts.
    let s = ServedInference {
        prompt_tokens: 5_000,
        completion_tokens: 5_000,
        ..served(alice.address(), 1)
    };
    o.charge(first, s.clone()).unwrap();
    let after_charge = o.reserve(alice.address(), 1, 10_000, 15_000).unwrap_err();
    assert!(
        after_charge.contains("0.35 OPEN available"),
        "{after_charge}"
    );
    assert!(
        after_charge.contains("not yet recorded: 0.15 OPEN"),
        "{after_charge}"
    );
    // Dropping a reservation (an abandoned request) releases it too.
    let held = o.reserve(alice.address(), 1, 10_000, 1_000).unwrap();
    assert!(o.reserve(alice.address(), 1, 10_000, 10_000).is_err());
    drop(held);
    drop(o.reserve(alice.address(), 1, 10_000, 10_000).unwrap());

    // Once recorded on chain the fee is taken from the credit and the allowance instead.
    let stats = runtime().block_on(o.record_queued()).unwrap();
    assert_eq!(stats.recorded, 1);
    assert_eq!(credit(&node, alice.address()), milli(850));
    let left = o.reserve(alice.address(), 1, 10_000, 15_000).unwrap_err();
    assert!(left.contains("0.35 OPEN available"), "{left}");
    assert!(left.contains("not yet recorded: 0 OPEN"), "{left}");

    // Bounded: requests in flight per caller, and the unrecorded backlog.
    o.set_payment_limits(PaymentLimits {
        max_reservations_per_caller: 2,
        ..PaymentLimits::default()
    });
    let a = o.reserve(alice.address(), 1, 1, 1).unwrap();
    let b = o.reserve(alice.address(), 1, 1, 1).unwrap();
    let third = o.reserve(alice.address(), 1, 1, 1).unwrap_err();
    assert!(third.contains("2 requests in flight"), "{third}");
    o.set_payment_limits(PaymentLimits {
        max_unrecorded: 2,
        ..PaymentLimits::default()
    });
    let busy = o.reserve(dave.address(), 1, 1, 1).unwrap_err();
    assert!(busy.contains("waiting to be recorded"), "{busy}");
    drop((a, b));
    assert!(o.reserve(dave.address(), 1, 1, 1).is_ok());
}

// ---- the journal and the recorder ----

#[test]
fn charges_survive_a_crash_and_are_recorded_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    world(&node);
    let alice = key("alice");
    fund(
        &node,
        &alice,
        U256::from(10u64) * one_open(),
        U256::from(10u64) * one_open(),
    );
    let who = |n: &str| key(n).address();
    let watched = [
        who("operator"),
        TREASURY,
        STAKING,
        who("owner"),
        who("carol"),
    ];
    let before: Vec<U256> = watched.iter().map(|a| balance(&node, *a)).collect();
    let credit_before = credit(&node, alice.address());

    let o = open_lora(&node, dir.path());
    let inferences: Vec<ServedInference> = (0..20).map(|n| served(alice.address(), n)).collect();
    for s in &inferences {
        charge(&o, s);
    }
    // A charge of a request id already waiting is refused (one request, one fee).
    let again = o.reserve(alice.address(), 1, 1, 1).unwrap();
    assert!(o.charge(again, inferences[0].clone()).is_err());
    // An answer with no tokens costs nothing.
    let empty = o.reserve(alice.address(), 1, 1, 1).unwrap();
    let nothing = ServedInference {
        prompt_tokens: 0,
        completion_tokens: 0,
        ..served(alice.address(), 99)
    };
    o.charge(empty, nothing).unwrap();
    // The crash: the process goes away with nothing recorded.
    drop(o);
    let journal = dir.path().join("openlora/receipts.journal");
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(lines.lines().count(), 20, "{lines}");
    // A write torn by the crash is ignored.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(br#"{"request_id":"0x12"#)
        .unwrap();

    let o = open_lora(&node, dir.path());
    assert_eq!(o.payments.journal.unrecorded(), 20);
    // Their fees are held against the caller again: all 10 OPEN are no longer available.
    let fees: U256 = inferences.iter().map(|s| fee(&node, s)).sum();
    let all = o.reserve(alice.address(), 1, 1_000_000, 0).unwrap_err();
    let held = format!("not yet recorded: {} OPEN", format_open(fees));
    assert!(all.contains(&held), "{all}");
    let rt = runtime();
    let stats = rt.block_on(o.record_queued()).unwrap();
    assert_eq!(stats.recorded, 20, "{stats:?}");
    assert_eq!(stats.transactions, 1, "one transaction records the batch");
    assert_eq!(o.payments.journal.unrecorded(), 0);
    let count = view(&node, INFERENCE, IInference::receiptCountCall {});
    assert_eq!(count, 20);

    // A crash after the chain recorded them but before the marks reached the disk: the next
    // start resubmits all of them, and the chain skips every one.
    std::fs::write(&journal, lines.as_bytes()).unwrap();
    drop(o);
    let o = open_lora(&node, dir.path());
    assert_eq!(o.payments.journal.unrecorded(), 20);
    let stats = rt.block_on(o.record_queued()).unwrap();
    assert_eq!((stats.recorded, stats.duplicates), (0, 20), "{stats:?}");
    assert_eq!(view(&node, INFERENCE, IInference::receiptCountCall {}), 20);
    // And once marked, a restart has nothing to send.
    drop(o);
    let o = open_lora(&node, dir.path());
    assert_eq!(o.payments.journal.unrecorded(), 0);

    // Every fee charged once, every receipt settled, every wei accounted for.
    assert_eq!(credit_before - credit(&node, alice.address()), fees);
    for id in 1..=20u64 {
        let r = view(
            &node,
            INFERENCE,
            IInference::getReceiptCall { receiptId: id },
        );
        assert!(r.settled, "receipt {id} is not settled");
    }
    let after: Vec<U256> = watched.iter().map(|a| balance(&node, *a)).collect();
    let gas_paid = before[0] - after[0];
    let received: U256 = (1..watched.len()).map(|i| after[i] - before[i]).sum();
    assert_eq!(
        received,
        fees + gas_paid,
        "fees and gas are conserved to the wei"
    );
    assert!(after[4] > before[4], "the contributor was paid");
    assert!(after[3] > before[3], "the model owner was paid");
    drop(o);
}

#[test]
fn a_batch_with_one_refused_record_records_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    world(&node);
    let (alice, bob) = (key("alice"), key("bob"));
    fund(&node, &alice, one_open(), one_open());
    fund(&node, &bob, milli(10), milli(10));
    let o = open_lora(&node, dir.path());
    let batch = [
        served(alice.address(), 1),
        served(alice.address(), 2),
        served(bob.address(), 3),
        served(alice.address(), 4),
        served(alice.address(), 5),
    ];
    for s in &batch {
        charge(&o, s);
    }
    // Bob takes his credit back before the operator records his inference.
    ok(
        &node,
        &bob,
        INFERENCE,
        U256::ZERO,
        IInference::withdrawCall { amount: milli(10) }.abi_encode(),
    );
    let stats = runtime().block_on(o.record_queued()).unwrap();
    assert_eq!((stats.recorded, stats.rejected), (4, 1), "{stats:?}");
    assert_eq!(o.payments.journal.unrecorded(), 0);
    assert_eq!(view(&node, INFERENCE, IInference::receiptCountCall {}), 4);
    let alice_fees: U256 = batch
        .iter()
        .filter(|s| s.caller == alice.address())
        .map(|s| fee(&node, s))
        .sum();
    assert_eq!(credit(&node, alice.address()), one_open() - alice_fees);
    let rejected = std::fs::read_to_string(dir.path().join("openlora/receipts.rejected")).unwrap();
    assert!(
        rejected.contains(&batch[2].request_id.to_string()),
        "{rejected}"
    );
    assert!(rejected.contains("credit"), "{rejected}");
    for id in 1..=4u64 {
        let r = view(
            &node,
            INFERENCE,
            IInference::getReceiptCall { receiptId: id },
        );
        assert_eq!(r.caller, alice.address());
    }
}

#[test]
fn concurrent_charges_are_all_durable_and_the_journal_compacts_once_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    world(&node);
    let alice = key("alice");
    fund(
        &node,
        &alice,
        U256::from(10u64) * one_open(),
        U256::from(10u64) * one_open(),
    );
    let o = open_lora(&node, dir.path());
    // Charges arriving together share fsyncs; each returns once its own line is on disk.
    std::thread::scope(|scope| {
        for t in 0..8u32 {
            let o = &o;
            let a = alice.address();
            scope.spawn(move || {
                for n in 0..66u32 {
                    charge(o, &served(a, t * 100 + n));
                }
            });
        }
    });
    drop(o);
    let o = open_lora(&node, dir.path());
    assert_eq!(o.payments.journal.unrecorded(), 528);
    let stats = runtime().block_on(o.record_queued()).unwrap();
    assert_eq!((stats.recorded, stats.transactions), (528, 3), "{stats:?}");
    // Entries and their marks are compacted away while the node runs.
    let journal = dir.path().join("openlora/receipts.journal");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 0);
    charge(&o, &served(alice.address(), 5000));
    drop(o);
    let o = open_lora(&node, dir.path());
    assert_eq!(o.payments.journal.unrecorded(), 1);
}

#[test]
fn a_record_whose_attribution_the_chain_refuses_is_still_charged() {
    let dir = tempfile::tempdir().unwrap();
    let node = open_node(dir.path());
    world(&node);
    let alice = key("alice");
    fund(&node, &alice, one_open(), one_open());
    let o = open_lora(&node, dir.path());
    // An adapter's index can name contributions its datanet versions do not hold (an index
    // built from another datanet): the chain refuses such an attribution. The caller was served
    // all the same, so the call is recorded and charged without it (the contributors' share
    // then goes to the model owner, as for an unattributed answer).
    let bogus = ServedInference {
        top: vec![(99, 400_000)],
        ..served(alice.address(), 1)
    };
    let good = served(alice.address(), 2);
    charge(&o, &bogus);
    charge(&o, &good);
    let stats = runtime().block_on(o.record_queued()).unwrap();
    assert_eq!((stats.recorded, stats.rejected), (2, 0), "{stats:?}");
    assert_eq!(
        credit(&node, alice.address()),
        one_open() - fee(&node, &bogus) - fee(&node, &good)
    );
    let receipts: Vec<_> = (1..=2u64)
        .map(|id| {
            view(
                &node,
                INFERENCE,
                IInference::getReceiptCall { receiptId: id },
            )
        })
        .collect();
    let bogus_receipt = receipts
        .iter()
        .find(|r| r.promptTokens == bogus.prompt_tokens)
        .unwrap();
    assert!(bogus_receipt.top.is_empty() && bogus_receipt.settled);
    assert_eq!(bogus_receipt.attributionRoot, bogus.attribution_root);
}
