//! `openledger model publish-adapter` end to end against a dev node: a PEFT adapter for
//! SmolLM2's shapes (rank 2, q and v) and its attribution index are uploaded and the adapter
//! registered; the chain then names it, its on-chain adapterHash is the BLAKE3 of the bundle
//! the node stores (the same bytes the directory packs to), the bundle unpacks to a PEFT
//! directory the model runtime loads, and the on-chain index root is the index's.

mod common;

use alloy_primitives::{Address, Bytes, B256};
use alloy_sol_types::SolCall;
use common::{sample, Env};
use openledger_model::{peft, Device, LoraAdapter, LoraConfig, Target};
use openledger_node::openlora::bundle;
use openledger_types::{abi::IModel, modules};
use serde_json::{json, Value};
use std::path::PathBuf;

fn model_file() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        p.exists(),
        "run ./scripts/fetch-model first ({})",
        p.display()
    );
    p.to_str().unwrap().to_string()
}

fn rpc(env: &Env, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut resp = ureq::post(format!("http://127.0.0.1:{}", env.port))
        .send_json(&body)
        .unwrap();
    let v: Value = resp.body_mut().read_json().unwrap();
    v["result"].clone()
}

fn view(env: &Env, data: Vec<u8>) -> Vec<u8> {
    let out = rpc(
        env,
        "eth_call",
        json!([{ "to": modules::MODEL, "data": Bytes::from(data) }, "latest"]),
    );
    serde_json::from_value::<Bytes>(out).unwrap().to_vec()
}

#[test]
fn a_published_adapter_is_on_chain_with_the_hash_of_the_bundle_the_node_serves() {
    let env = Env::new();
    let _node = env.start();
    let s = |n: &str| sample(n).to_str().unwrap().to_string();
    env.ok(&["--from", "dev0", "datanet", "create", "Urban beekeeping"]);
    env.ok(&[
        "--from",
        "dev1",
        "datanet",
        "contribute",
        "1",
        &s("alice.jsonl"),
    ]);
    env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
    let base_hash = format!("0x{}", "11".repeat(32));
    env.ok(&[
        "--from",
        "dev5",
        "model",
        "register-base",
        "SmolLM2",
        "--hash",
        &base_hash,
    ]);

    // A rank-2 q/v adapter for SmolLM2's shapes (hidden 576, 3 KV heads of 64), as PEFT writes it.
    let dir = tempfile::tempdir().unwrap();
    let peft_dir = dir.path().join("bees-lora");
    let dims = |t: Target| {
        if t == Target::V {
            (192, 576)
        } else {
            (576, 576)
        }
    };
    let adapter = LoraAdapter::init(
        LoraConfig::new(2, 4.0, &[Target::Q, Target::V]),
        &dims,
        30,
        7,
        true,
        &Device::Cpu,
    )
    .unwrap();
    peft::save(&adapter, &peft_dir).unwrap();
    let index = dir.path().join("index");
    env.ok(&[
        "index",
        "build",
        "1@1",
        "--tokenizer",
        &model_file(),
        "--out",
        index.to_str().unwrap(),
    ]);
    let info = env.ok(&["index", "info", "--index", index.to_str().unwrap()]);
    let index_root: B256 = info.split("root ").nth(1).unwrap().trim().parse().unwrap();

    let out = env.ok(&[
        "--from",
        "dev5",
        "model",
        "publish-adapter",
        peft_dir.to_str().unwrap(),
        "--name",
        "bees",
        "--base",
        "1",
        "--datanets",
        "1@1",
        "--index",
        index.to_str().unwrap(),
    ]);
    assert_eq!(out.lines().last(), Some("1"), "{out}");

    // On chain: the name, the owner, the hashes.
    let id = IModel::adapterByNameCall::abi_decode_returns(&view(
        &env,
        IModel::adapterByNameCall {
            name: "bees".into(),
        }
        .abi_encode(),
    ))
    .unwrap();
    assert_eq!(id, 1);
    let a = IModel::getAdapterCall::abi_decode_returns(&view(
        &env,
        IModel::getAdapterCall { adapterId: 1 }.abi_encode(),
    ))
    .unwrap();
    let keys = env.ok(&["keys", "list"]);
    let dev5: Address = keys
        .lines()
        .find(|l| l.starts_with("dev5 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((a.owner, a.baseModelId), (dev5, 1));
    assert_eq!(
        (a.datanetIds.clone(), a.datanetVersions.clone()),
        (vec![1], vec![1])
    );
    assert_eq!(a.attributionIndexRoot, index_root);
    let config = std::fs::read(peft_dir.join("adapter_config.json")).unwrap();
    assert_eq!(a.trainingConfigHash, bundle::blake3_hash(&config));

    // The node serves the bundle under that hash; its BLAKE3 is the on-chain adapterHash, and
    // it is exactly what the directory packs to.
    let mut resp = ureq::get(format!(
        "http://127.0.0.1:{}/v1/artifacts/{}",
        env.port, a.adapterHash
    ))
    .call()
    .unwrap();
    let served = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    assert_eq!(bundle::blake3_hash(&served), a.adapterHash);
    let packed = bundle::pack_dir(&peft_dir, 64 << 20).unwrap();
    assert_eq!(packed.bytes, served);

    // It unpacks to a PEFT directory the runtime loads, with the adapter's weights.
    let file = dir.path().join("bundle");
    std::fs::write(&file, &served).unwrap();
    let unpacked = dir.path().join("unpacked");
    bundle::unpack(&file, &unpacked).unwrap();
    let loaded = peft::load(&unpacked, &Device::Cpu).unwrap();
    assert_eq!(loaded.config, adapter.config);
    assert_eq!(loaded.num_params(), adapter.num_params());
    assert_eq!(loaded.pairs().count(), 60, "30 layers x q, v");

    // The name is the adapter's now.
    let err = env.fails(&[
        "--from",
        "dev6",
        "model",
        "publish-adapter",
        peft_dir.to_str().unwrap(),
        "--name",
        "bees",
        "--base",
        "1",
        "--datanets",
        "1@1",
    ]);
    assert!(err.contains("taken by adapter 1"), "{err}");
}
