//! OpenLoRA payments through the `openledger` CLI against a dev node (operator dev9): `api-key
//! new` approves the operator's allowance on chain, prints a key once and the node maps the key
//! (stored only as its hash) to the --from account; `api-key revoke` ends it; `rewards` reports
//! what a contributor, a model owner and the treasury earned from a settled inference, matching
//! their balance changes to the wei.

mod common;

use alloy_primitives::{keccak256, Address, Bytes, U256};
use alloy_sol_types::SolCall;
use common::{sample, Env};
use openledger_types::{abi::IInference, modules};
use serde_json::{json, Value};

fn rpc(env: &Env, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut resp = ureq::post(format!("http://127.0.0.1:{}", env.port))
        .send_json(&body)
        .unwrap();
    let v: Value = resp.body_mut().read_json().unwrap();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

fn u256(v: &Value) -> U256 {
    v.as_str().unwrap().parse().unwrap()
}

fn balance(env: &Env, a: Address) -> U256 {
    u256(&rpc(env, "eth_getBalance", json!([a, "latest"])))
}

fn allowance(env: &Env, account: Address, operator: Address) -> U256 {
    let data = Bytes::from(IInference::allowanceCall { account, operator }.abi_encode());
    let out = rpc(
        env,
        "eth_call",
        json!([{ "to": modules::INFERENCE, "data": data }, "latest"]),
    );
    u256(&out)
}

fn dev(env: &Env, i: u8) -> Address {
    env.ok(&["keys", "list"])
        .lines()
        .find(|l| l.starts_with(&format!("dev{i} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

fn open(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

#[test]
fn api_key_new_binds_the_from_account_and_approves_the_operator() {
    let env = Env::new();
    let _node = env.start();
    let (dev1, dev9) = (dev(&env, 1), dev(&env, 9));
    env.ok(&["--from", "dev1", "inference", "deposit", "5"]);
    assert_eq!(allowance(&env, dev1, dev9), U256::ZERO);

    let out = env.ok(&["--from", "dev1", "api-key", "new", "--allowance", "2"]);
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("olk_") && key.len() == 68, "{out}");
    assert_eq!(
        allowance(&env, dev1, dev9),
        open(2),
        "the operator's allowance is approved"
    );

    // The node keeps the key's hash, mapped to dev1, never the key.
    let file = env.home.join("data/openlora/api_keys.json");
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(!stored.to_string().contains(&key[4..]));
    let hash = keccak256(key.as_bytes()).to_string();
    let keys = stored["keys"].as_array().unwrap();
    let entry = keys.iter().find(|k| k["key_hash"] == json!(hash)).unwrap();
    assert_eq!(
        entry["address"]
            .as_str()
            .unwrap()
            .parse::<Address>()
            .unwrap(),
        dev1
    );

    // A second key leaves an allowance already high enough as it is.
    let second = env.ol(&["--from", "dev1", "api-key", "new", "--allowance", "1"]);
    assert!(second.status.success());
    assert!(!common::stderr(&second).contains("approved operator"));
    assert_eq!(allowance(&env, dev1, dev9), open(2));

    // Revoked by its account only; then gone.
    let err = env.fails(&["--from", "dev2", "api-key", "revoke", &key]);
    assert!(err.contains("only that account may revoke"), "{err}");
    env.ok(&["--from", "dev1", "api-key", "revoke", &key]);
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(stored["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["key_hash"] != json!(hash)));
    let err = env.fails(&["--from", "dev1", "api-key", "revoke", &key]);
    assert!(err.contains("no API key"), "{err}");
}

#[test]
fn rewards_match_the_balance_changes_of_a_settled_inference() {
    let env = Env::new();
    let _node = env.start();
    let (contributor, owner, caller, operator) =
        (dev(&env, 1), dev(&env, 2), dev(&env, 3), dev(&env, 9));
    env.ok(&["--from", "dev0", "datanet", "create", "Bees"]);
    let alice = sample("alice.jsonl");
    env.ok(&[
        "--from",
        "dev1",
        "datanet",
        "contribute",
        "1",
        alice.to_str().unwrap(),
    ]);
    env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
    let h = |b: u8| format!("0x{}", format!("{b:02x}").repeat(32));
    env.ok(&[
        "--from",
        "dev2",
        "model",
        "register-base",
        "smol",
        "--hash",
        &h(1),
    ]);
    env.ok(&[
        "--from",
        "dev2",
        "model",
        "register-adapter",
        "bees",
        "--base",
        "1",
        "--datanet",
        "1@1",
        "--config-hash",
        &h(2),
        "--adapter-hash",
        &h(3),
    ]);
    env.ok(&["--from", "dev3", "inference", "deposit", "5"]);
    env.ok(&[
        "--from",
        "dev3",
        "inference",
        "approve-operator",
        &operator.to_string(),
        "2",
    ]);
    let watched = [contributor, owner];
    let before: Vec<U256> = watched.iter().map(|a| balance(&env, *a)).collect();

    // The operator records an inference attributed 40% to contribution 1 and settles it.
    env.ok(&[
        "--from",
        "dev9",
        "inference",
        "record",
        "--caller",
        &caller.to_string(),
        "--adapter",
        "1",
        "--prompt-tokens",
        "1000",
        "--completion-tokens",
        "500",
        "--attribution",
        "1:400000",
        "--attribution-root",
        &h(0xaa),
    ]);
    env.ok(&["--from", "dev9", "inference", "settle", "1"]);
    let after: Vec<U256> = watched.iter().map(|a| balance(&env, *a)).collect();

    let earned = |who: &str| env.json(&["rewards", who, "--json"]);
    let c = earned(&contributor.to_string());
    assert_eq!(u256(&c["contributor"]["wei"]), after[0] - before[0], "{c}");
    assert_eq!(c["contributor"]["payments"], 1);
    let o = earned(&owner.to_string());
    assert_eq!(u256(&o["model_owner"]["wei"]), after[1] - before[1], "{o}");
    assert_eq!(o["model_owner"]["receipts"], 1);
    // The fee: 1000 × 0.00001 + 500 × 0.00002 = 0.02 OPEN; the platform keeps 10%.
    let t = earned(&modules::TREASURY.to_string());
    assert_eq!(t["platform_wei"], json!("2000000000000000"), "{t}");
    assert!(u256(&c["contributor"]["wei"]) > U256::ZERO);
    // The human form names every role.
    let text = env.ok(&["rewards", &owner.to_string()]);
    for role in ["contributor", "model owner", "staker", "platform"] {
        assert!(text.contains(role), "{text}");
    }
}
