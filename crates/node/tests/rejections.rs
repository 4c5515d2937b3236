//! Through the JSON-RPC handler: every kind of bad transaction gets a clear JSON-RPC error and
//! changes nothing (balances, nonces, head block, state root), and a good one still goes through.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope, TxLegacy};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_node::{sequencer::Node, Chain, NodeConfig};
use openledger_types::{abi::IDatanet, modules, units::one_open, Genesis};
use serde_json::{json, Value};
use std::sync::Arc;

const CHAIN_ID: u64 = 4242;

struct Fixture {
    node: Arc<Node>,
    key: PrivateKeySigner,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&keccak256("rejections")).unwrap();
    let genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(10u64) * one_open(),
    )
    .unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), &genesis, false).unwrap();
    let node = Node::new(
        chain,
        NodeConfig {
            dev: true,
            ..NodeConfig::default()
        },
        &dir.path().join("blobs"),
    )
    .unwrap();
    Fixture {
        node,
        key,
        _dir: dir,
    }
}

fn rpc(node: &Node, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    openledger_node::rpc::handle_body(node, body.to_string().as_bytes())
}

fn eip1559(
    key: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
    data: Vec<u8>,
) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: 500_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
}

fn send(node: &Node, raw: &[u8]) -> Value {
    rpc(
        node,
        "eth_sendRawTransaction",
        json!([Bytes::copy_from_slice(raw)]),
    )
}

/// Everything a rejection must leave untouched.
fn snapshot(f: &Fixture) -> (Value, Value, Value, Value) {
    let a = f.key.address();
    let head = rpc(&f.node, "eth_getBlockByNumber", json!(["latest", false]));
    (
        rpc(&f.node, "eth_getBalance", json!([a, "pending"]))["result"].clone(),
        rpc(&f.node, "eth_getTransactionCount", json!([a, "pending"]))["result"].clone(),
        head["result"]["number"].clone(),
        head["result"]["stateRoot"].clone(),
    )
}

fn assert_rejected(f: &Fixture, raw: &[u8], expect_code: i64, expect_msg: &str) {
    let before = snapshot(f);
    let r = send(&f.node, raw);
    let err = r
        .get("error")
        .unwrap_or_else(|| panic!("expected an error containing {expect_msg:?}, got {r}"));
    assert_eq!(err["code"], expect_code, "{r}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains(expect_msg),
        "message {msg:?} should contain {expect_msg:?}"
    );
    assert_eq!(before, snapshot(f), "a rejected transaction changed state");
}

#[test]
fn bad_transactions_get_clear_errors_and_change_nothing() {
    let f = fixture();
    let to = Address::repeat_byte(0xbb);
    let one = one_open();

    // A good transfer first, so there is a nonce to replay.
    let good = eip1559(&f.key, CHAIN_ID, 0, to, one, vec![]);
    let ok = send(&f.node, &good);
    assert!(ok.get("result").is_some(), "{ok}");

    // replayed nonce: the same bytes again, and a fresh tx reusing nonce 0
    assert_rejected(&f, &good, -32000, "already known");
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID, 0, to, U256::from(7u64), vec![]),
        -32000,
        "nonce too low",
    );
    // a gap in nonces
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID, 5, to, one, vec![]),
        -32000,
        "nonce too high",
    );
    // wrong chain id
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID + 1, 1, to, one, vec![]),
        -32000,
        "wrong chain id",
    );
    // pre-EIP-155 legacy transaction (no chain id)
    let legacy = TxLegacy {
        chain_id: None,
        nonce: 1,
        gas_price: 1_000_000_000,
        gas_limit: 21_000,
        to: TxKind::Call(to),
        value: one,
        input: Bytes::new(),
    };
    let sig = f.key.sign_hash_sync(&legacy.signature_hash()).unwrap();
    assert_rejected(
        &f,
        &TxEnvelope::from(legacy.into_signed(sig)).encoded_2718(),
        -32000,
        "wrong chain id",
    );
    // insufficient balance
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID, 1, to, one * U256::from(100u64), vec![]),
        -32000,
        "insufficient funds",
    );
    // bad signature: flip a byte inside the signature's s value
    let mut bad = eip1559(&f.key, CHAIN_ID, 1, to, one, vec![]);
    let n = bad.len();
    bad[n - 5] ^= 0x55;
    let before = snapshot(&f);
    let r = send(&f.node, &bad);
    let msg = r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // a corrupted signature either fails recovery or recovers a different, unfunded account
    assert!(
        ["invalid signature", "insufficient funds", "nonce too high"]
            .iter()
            .any(|m| msg.contains(m)),
        "{r}"
    );
    assert_eq!(before, snapshot(&f));
    // a signature with r = 0 cannot be recovered at all
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce: 1,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(to),
        value: one,
        ..Default::default()
    };
    let zero_sig = alloy_primitives::Signature::new(U256::ZERO, U256::from(1u64), false);
    assert_rejected(
        &f,
        &TxEnvelope::from(tx.into_signed(zero_sig)).encoded_2718(),
        -32000,
        "invalid signature",
    );
    // unknown module selector
    assert_rejected(
        &f,
        &eip1559(
            &f.key,
            CHAIN_ID,
            1,
            modules::DATANET,
            U256::ZERO,
            vec![0xde, 0xad, 0xbe, 0xef, 0, 0],
        ),
        -32000,
        "unknown function selector",
    );
    // malformed ABI data: a real selector with truncated arguments
    let mut data = IDatanet::approveCall { contributionId: 1 }.abi_encode();
    data.truncate(20);
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID, 1, modules::DATANET, U256::ZERO, data),
        -32602,
        "malformed ABI data",
    );
    // value sent to a non-payable module function
    let data = IDatanet::datanetCountCall {}.abi_encode();
    assert_rejected(
        &f,
        &eip1559(&f.key, CHAIN_ID, 1, modules::DATANET, one, data),
        3,
        "does not accept OPEN",
    );
    // a module rule: approving a contribution that does not exist reverts with code 3
    assert_rejected(
        &f,
        &eip1559(
            &f.key,
            CHAIN_ID,
            1,
            modules::DATANET,
            U256::ZERO,
            IDatanet::approveCall { contributionId: 9 }.abi_encode(),
        ),
        3,
        "contribution 9",
    );
    // garbage bytes and an empty payload
    assert_rejected(&f, &[0x02, 0xff, 0x00], -32602, "could not decode");
    let r = rpc(&f.node, "eth_sendRawTransaction", json!(["0xzz"]));
    assert_eq!(r["error"]["code"], -32602, "{r}");

    // and the account still works: nonce 1 goes through
    let r = send(&f.node, &eip1559(&f.key, CHAIN_ID, 1, to, one, vec![]));
    assert!(r.get("result").is_some(), "{r}");
    let bal = rpc(&f.node, "eth_getBalance", json!([to, "latest"]));
    assert_eq!(bal["result"], json!(one * U256::from(2u64)));
}

#[test]
fn malformed_json_rpc_requests_get_json_rpc_errors() {
    let f = fixture();
    let out = |body: &str| openledger_node::rpc::handle_body(&f.node, body.as_bytes());
    assert_eq!(out("{not json")["error"]["code"], -32700);
    assert_eq!(out("[]")["error"]["code"], -32600);
    assert_eq!(out(r#"{"jsonrpc":"2.0","id":1}"#)["error"]["code"], -32600);
    assert_eq!(
        out(r#"{"jsonrpc":"2.0","id":1,"method":"eth_nope","params":[]}"#)["error"]["code"],
        -32601
    );
    assert_eq!(
        out(r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0x12"]}"#)["error"]
            ["code"],
        -32602
    );
    assert_eq!(
        out(r#"{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":{}}"#)["error"]["code"],
        -32602
    );
    let batch = out(
        r#"[{"jsonrpc":"2.0","id":1,"method":"eth_chainId"},{"jsonrpc":"2.0","id":2,"method":"net_version"}]"#,
    );
    assert_eq!(batch[0]["result"], json!(format!("{CHAIN_ID:#x}")));
    assert_eq!(batch[1]["result"], json!(CHAIN_ID.to_string()));
    let big: Vec<Value> = (0..2000)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId"}))
        .collect();
    assert_eq!(out(&Value::Array(big).to_string())["error"]["code"], -32600);
}

#[test]
fn module_calls_emit_logs_that_get_logs_finds_and_views_read_back() {
    let f = fixture();
    let data = IDatanet::createDatanetCall {
        name: "medicine".into(),
        summary: "s".into(),
        description: "d".into(),
        tags: vec!["a".into()],
        dataType: 0,
        licence: "MIT".into(),
        permissioned: true,
    }
    .abi_encode();
    let hash = send(
        &f.node,
        &eip1559(&f.key, CHAIN_ID, 0, modules::DATANET, U256::ZERO, data),
    )["result"]
        .clone();
    let receipt = rpc(&f.node, "eth_getTransactionReceipt", json!([hash]))["result"].clone();
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(receipt["logs"][0]["address"], json!(modules::DATANET));
    let logs = rpc(
        &f.node,
        "eth_getLogs",
        json!([{ "fromBlock": "0x0", "toBlock": "latest", "address": modules::DATANET }]),
    );
    assert_eq!(logs["result"].as_array().unwrap().len(), 1, "{logs}");
    let none = rpc(
        &f.node,
        "eth_getLogs",
        json!([{ "fromBlock": "0x0", "address": modules::MODEL }]),
    );
    assert_eq!(none["result"].as_array().unwrap().len(), 0);
    let view = rpc(
        &f.node,
        "eth_call",
        json!([{ "to": modules::DATANET, "data": Bytes::from(IDatanet::getDatanetCall { datanetId: 1 }.abi_encode()) }, "latest"]),
    );
    let bytes: Bytes = serde_json::from_value(view["result"].clone()).unwrap();
    let d = IDatanet::getDatanetCall::abi_decode_returns(&bytes).unwrap();
    assert_eq!(d.name, "medicine");
    assert!(d.permissioned);
    assert_eq!(d.owner, f.key.address());
    // historical state: at block 0 there was no datanet
    let old = rpc(
        &f.node,
        "eth_call",
        json!([{ "to": modules::DATANET, "data": Bytes::from(IDatanet::datanetCountCall {}.abi_encode()) }, "0x0"]),
    );
    let bytes: Bytes = serde_json::from_value(old["result"].clone()).unwrap();
    assert_eq!(
        IDatanet::datanetCountCall::abi_decode_returns(&bytes).unwrap(),
        0
    );
    let missing = rpc(
        &f.node,
        "eth_call",
        json!([{ "to": modules::DATANET, "data": Bytes::from(IDatanet::getDatanetCall { datanetId: 7 }.abi_encode()) }]),
    );
    assert_eq!(missing["error"]["code"], 3, "{missing}");
}
