//! JSON-RPC answers real clients rely on, and the bounds on the work one request can ask for:
//!
//! - `eth_feeHistory` reports each block's real gas used ratio and the reward percentiles of its
//!   transactions' effective priority fees (the pending block too), and refuses oversized,
//!   out-of-range or unordered percentile lists with a clear error;
//! - `eth_getCode` returns a non-empty marker for module addresses, nothing for accounts;
//! - `eth_getBlockByNumber("pending")` returns the pending block (head + 1, its transactions);
//! - `eth_getLogs` results, batch responses and a request's run time are bounded.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use openledger_node::{rpc, sequencer::Node, Chain, NodeConfig};
use openledger_types::{modules, units::one_open, Genesis};
use serde_json::{json, Value};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

const CHAIN_ID: u64 = 4244;
const GWEI: u128 = 1_000_000_000;

struct Fixture {
    node: Arc<Node>,
    key: PrivateKeySigner,
    _dir: tempfile::TempDir,
}

/// A node that seals only when told to, so transactions can stay pending.
fn fixture(config: NodeConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&keccak256("rpc methods")).unwrap();
    let genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(100u64) * one_open(),
    )
    .unwrap();
    let chain = Chain::open(&dir.path().join("chain.redb"), &genesis, false).unwrap();
    let node = Node::new(chain, config, &dir.path().join("blobs")).unwrap();
    Fixture {
        node,
        key,
        _dir: dir,
    }
}

fn call(node: &Node, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    rpc::handle_body(node, body.to_string().as_bytes())
}

fn result(node: &Node, method: &str, params: Value) -> Value {
    let r = call(node, method, params);
    assert!(r.get("error").is_none(), "{method} failed: {r}");
    r["result"].clone()
}

fn error(node: &Node, method: &str, params: Value) -> (i64, String) {
    let r = call(node, method, params);
    let e = r
        .get("error")
        .unwrap_or_else(|| panic!("{method} should fail, got {:.600}", r.to_string()));
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

/// Sends a transfer paying `tip` wei of priority fee per gas; returns its hash.
fn send(f: &Fixture, nonce: u64, tip: u128) -> B256 {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 10 * GWEI,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(Address::repeat_byte(0x77)),
        value: U256::from(1u64),
        access_list: Default::default(),
        input: Default::default(),
    };
    let sig = f.key.sign_hash_sync(&tx.signature_hash()).unwrap();
    let raw = TxEnvelope::from(tx.into_signed(sig)).encoded_2718();
    let h = result(&f.node, "eth_sendRawTransaction", json!([Bytes::from(raw)]));
    serde_json::from_value(h).unwrap()
}

fn hex(v: &Value) -> u128 {
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn fee_history_reports_gas_used_and_reward_percentiles() {
    let f = fixture(NodeConfig::default());
    for (nonce, tip) in [(0, 2 * GWEI), (1, 0), (2, GWEI)] {
        send(&f, nonce, tip);
    }
    f.node.seal().unwrap().expect("block 1");

    let h = result(
        &f.node,
        "eth_feeHistory",
        json!(["0x2", "latest", [0, 50, 100]]),
    );
    assert_eq!(h["oldestBlock"], "0x0");
    let base = 1_000_000_000u128;
    assert_eq!(
        h["baseFeePerGas"]
            .as_array()
            .unwrap()
            .iter()
            .map(hex)
            .collect::<Vec<_>>(),
        vec![base; 3],
        "one base fee per block, and the next block's"
    );
    let ratios = h["gasUsedRatio"].as_array().unwrap();
    assert_eq!(ratios.len(), 2);
    assert_eq!(ratios[0].as_f64(), Some(0.0), "genesis used no gas");
    let limit = openledger_types::Params::default().block_gas_limit as f64;
    assert_eq!(ratios[1].as_f64(), Some(63_000.0 / limit));
    // Tips 0, 1 and 2 gwei, 21,000 gas each: the 0th, 50th and 100th percentiles.
    let reward = h["reward"].as_array().unwrap();
    assert_eq!(reward[0], json!(["0x0", "0x0", "0x0"]));
    assert_eq!(
        reward[1]
            .as_array()
            .unwrap()
            .iter()
            .map(hex)
            .collect::<Vec<_>>(),
        vec![0, GWEI, 2 * GWEI]
    );

    // Without percentiles, no reward field (as geth); a decimal block count is accepted.
    let h = result(&f.node, "eth_feeHistory", json!([1, "latest"]));
    assert!(h.get("reward").is_none(), "{h}");
    assert_eq!(h["oldestBlock"], "0x1");

    // The pending block counts when asked for.
    send(&f, 3, 3 * GWEI);
    let h = result(&f.node, "eth_feeHistory", json!(["0x1", "pending", [25]]));
    assert_eq!(h["oldestBlock"], "0x2");
    assert_eq!(h["gasUsedRatio"][0].as_f64(), Some(21_000.0 / limit), "{h}");
    assert_eq!(hex(&h["reward"][0][0]), 3 * GWEI);
}

#[test]
fn fee_history_refuses_unbounded_or_invalid_percentiles() {
    let f = fixture(NodeConfig::default());
    send(&f, 0, 0);
    f.node.seal().unwrap();

    // A 1 MiB percentile list is refused before anything is built.
    let huge: Vec<u8> = vec![1; 350_000];
    let (code, msg) = error(&f.node, "eth_feeHistory", json!(["0x400", "latest", huge]));
    assert_eq!(code, -32602);
    assert!(
        msg.contains("too many reward percentiles: 350000 (at most 100)"),
        "{msg}"
    );
    let ok: Vec<u32> = (0..100).collect();
    result(&f.node, "eth_feeHistory", json!(["0x400", "latest", ok]));
    let over: Vec<u32> = (0..101).collect();
    assert_eq!(
        error(&f.node, "eth_feeHistory", json!(["0x1", "latest", over])).0,
        -32602
    );

    for (bad, why) in [
        (json!([50, 10]), "strictly increasing"),
        (json!([10, 10]), "strictly increasing"),
        (json!([101]), "from 0 to 100"),
        (json!([-1]), "from 0 to 100"),
        (json!(["50"]), "from 0 to 100"),
    ] {
        let (code, msg) = error(&f.node, "eth_feeHistory", json!(["0x1", "latest", bad]));
        assert_eq!(code, -32602, "{msg}");
        assert!(msg.contains(why), "{msg} should say {why}");
    }
    let (code, msg) = error(&f.node, "eth_feeHistory", json!(["0x1", "0x99"]));
    assert_eq!(code, -32001, "{msg}");
    assert_eq!(
        error(&f.node, "eth_feeHistory", json!(["lots", "latest"])).0,
        -32602
    );
    // A huge block count is capped (as geth), not an error: here, at the chain's length.
    let h = result(
        &f.node,
        "eth_feeHistory",
        json!(["0xffffffffffff", "latest"]),
    );
    assert_eq!(h["gasUsedRatio"].as_array().unwrap().len(), 2);
}

#[test]
fn get_code_marks_module_addresses() {
    let f = fixture(NodeConfig::default());
    for (address, name) in modules::ALL {
        let code = result(&f.node, "eth_getCode", json!([address, "latest"]));
        assert_eq!(code, "0x60006000fd", "module {name}");
        assert_eq!(code, json!(Bytes::from_static(&rpc::MODULE_CODE)));
    }
    for account in [f.key.address(), modules::TREASURY, Address::ZERO] {
        assert_eq!(result(&f.node, "eth_getCode", json!([account])), "0x");
    }
    assert_eq!(
        result(&f.node, "eth_getCode", json!([modules::BANK, "pending"])),
        "0x60006000fd"
    );
    let (code, msg) = error(&f.node, "eth_getCode", json!([modules::BANK, "0x10"]));
    assert_eq!(code, -32001, "{msg}");
}

#[test]
fn the_pending_block_is_the_next_block_with_the_pending_transactions() {
    let f = fixture(NodeConfig::default());
    let empty = result(&f.node, "eth_getBlockByNumber", json!(["pending", false]));
    assert_eq!(empty["number"], "0x1");
    assert_eq!(empty["hash"], Value::Null);
    assert_eq!(empty["transactions"], json!([]));
    let genesis = result(&f.node, "eth_getBlockByNumber", json!(["latest", false]));
    assert_eq!(empty["parentHash"], genesis["hash"]);

    let h1 = send(&f, 0, GWEI);
    let h2 = send(&f, 1, 0);
    let p = result(&f.node, "eth_getBlockByNumber", json!(["pending", false]));
    assert_eq!(p["number"], "0x1");
    assert_eq!(p["transactions"], json!([h1, h2]));
    assert_eq!(hex(&p["gasUsed"]), 42_000);
    let full = result(&f.node, "eth_getBlockByNumber", json!(["pending", true]));
    let txs = full["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[1]["hash"], json!(h2));
    assert_eq!(txs[1]["blockNumber"], "0x1");
    assert_eq!(txs[1]["transactionIndex"], "0x1");
    assert_eq!(txs[1]["blockHash"], Value::Null);
    assert_eq!(txs[0]["from"], json!(f.key.address()));

    // Sealed, the same transactions make block 1, with the transactions root the pending
    // block showed; the new pending block is empty.
    f.node.seal().unwrap().expect("block 1");
    let latest = result(&f.node, "eth_getBlockByNumber", json!(["latest", false]));
    assert_eq!(latest["number"], "0x1");
    assert_eq!(latest["transactions"], json!([h1, h2]));
    assert_eq!(latest["transactionsRoot"], p["transactionsRoot"]);
    assert_eq!(latest["receiptsRoot"], p["receiptsRoot"]);
    let next = result(&f.node, "eth_getBlockByNumber", json!(["pending", false]));
    assert_eq!(next["number"], "0x2");
    assert_eq!(next["transactions"], json!([]));
    assert_eq!(next["parentHash"], latest["hash"]);
}

#[test]
fn get_logs_results_are_bounded() {
    let f = fixture(NodeConfig {
        max_log_results: 2,
        ..NodeConfig::default()
    });
    for nonce in 0..3 {
        send(&f, nonce, 0);
    }
    f.node.seal().unwrap();
    let filter = json!([{ "fromBlock": "0x0", "toBlock": "latest" }]);
    let (code, msg) = error(&f.node, "eth_getLogs", filter);
    assert_eq!(code, -32005);
    assert!(msg.contains("more than 2 logs"), "{msg}");
    let one = json!([{ "fromBlock": "0x1", "toBlock": "0x1", "address": modules::BANK,
        "topics": [null, null, null] }]);
    let (code, _) = error(&f.node, "eth_getLogs", one);
    assert_eq!(code, -32005, "three Transfer logs are still more than two");
}

#[test]
fn batch_responses_are_bounded() {
    let f = fixture(NodeConfig {
        max_response_bytes: 4_000,
        ..NodeConfig::default()
    });
    let batch: Vec<Value> = (0..20)
        .map(|i| {
            json!({ "jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber",
            "params": ["0x0", false] })
        })
        .collect();
    let out = rpc::handle_body(&f.node, json!(batch).to_string().as_bytes());
    let answers = out.as_array().unwrap();
    assert_eq!(answers.len(), 20, "every call is answered");
    assert!(answers[0].get("result").is_some(), "{}", answers[0]);
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("error").is_some())
        .collect();
    assert!(!refused.is_empty(), "some calls must be refused");
    assert_eq!(refused[0]["error"]["code"], -32005);
    assert!(refused[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_response_bytes"));
    assert_eq!(refused.last().unwrap()["id"], 19);
    let ok_bytes: usize = answers
        .iter()
        .filter(|a| a.get("result").is_some())
        .map(|a| a.to_string().len())
        .sum();
    assert!(ok_bytes <= 4_000, "{ok_bytes} bytes of results");
}

#[test]
fn work_past_the_deadline_answers_a_timeout() {
    let f = fixture(NodeConfig::default());
    let past = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [] },
        { "jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": [] }
    ]);
    let out = rpc::handle_body_by(&f.node, batch.to_string().as_bytes(), past);
    for a in out.as_array().unwrap() {
        assert_eq!(a["error"]["code"], -32002, "{a}");
    }
    let logs = json!({ "jsonrpc": "2.0", "id": 3, "method": "eth_getLogs",
        "params": [{ "fromBlock": "0x0", "toBlock": "latest" }] });
    let out = rpc::handle_body_by(&f.node, logs.to_string().as_bytes(), past);
    assert_eq!(out["error"]["code"], -32002, "{out}");
    assert!(out["error"]["message"]
        .as_str()
        .unwrap()
        .contains("timed out"));
}
