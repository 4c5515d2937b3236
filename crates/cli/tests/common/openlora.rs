//! Shared by OpenLoRA's end-to-end tests: SmolLM2 served by a dev node whose chain holds a datanet
//! (the sample contributions), its attribution index, the base model and adapters published with
//! `openledger model publish-adapter`; HTTP calls to the OpenAI routes; chain views over JSON-RPC.

#![allow(dead_code)]

use super::{sample, Env, NodeProc};
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_model::{peft, Device, LoraAdapter, LoraConfig, Target};
use openledger_types::{abi::IInference, modules};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .canonicalize()
        .expect("workspace root exists")
}

/// SmolLM2, installed by `./scripts/fetch-model`.
pub fn model_path() -> PathBuf {
    let model = workspace_root().join(openledger_model::DEFAULT_MODEL_PATH);
    assert!(
        model.is_file(),
        "{} is missing: run ./scripts/fetch-model",
        model.display()
    );
    model
}

/// SmolLM2-135M's projection shapes (out, in); a wrong one makes the node refuse the adapter.
fn smollm2_dims(t: Target) -> (usize, usize) {
    match t {
        Target::Q | Target::O => (576, 576),
        Target::K | Target::V => (192, 576),
        Target::Gate | Target::Up => (1536, 576),
        Target::Down => (576, 1536),
    }
}

/// Writes a rank-4 q/v PEFT adapter for SmolLM2 with random A and B (seeded) into `dir`;
/// `alpha` sets how strongly it changes the output.
pub fn write_adapter(dir: &Path, seed: u64, alpha: f64) {
    let config = LoraConfig::new(4, alpha, &[Target::Q, Target::V]);
    let a = LoraAdapter::init(config, &smollm2_dims, 30, seed, true, &Device::Cpu).unwrap();
    peft::save(&a, dir).unwrap();
}

/// A dev chain serving SmolLM2 with datanet 1 (alice's and bob's sample rows, version 2), its
/// index and base model 1 registered by dev3.
pub struct Served {
    pub env: Env,
    pub node: Option<NodeProc>,
    pub index: PathBuf,
    pub work: tempfile::TempDir,
}

impl Served {
    pub fn start() -> Served {
        let env = Env::new();
        let node = env.start_with(&["--model", model_path().to_str().unwrap()]);
        let work = tempfile::tempdir().unwrap();
        env.ok(&[
            "--from",
            "dev0",
            "datanet",
            "create",
            "Urban beekeeping",
            "--summary",
            "bees",
        ]);
        env.ok(&[
            "--from",
            "dev1",
            "datanet",
            "contribute",
            "1",
            sample("alice.jsonl").to_str().unwrap(),
        ]);
        env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
        let index = work.path().join("index");
        env.ok(&[
            "index",
            "build",
            "1@1",
            "--out",
            index.to_str().unwrap(),
            "--tokenizer",
            model_path().to_str().unwrap(),
        ]);
        let hash = sha256_hex(&model_path());
        env.ok(&[
            "--from",
            "dev3",
            "model",
            "register-base",
            "SmolLM2-135M-Instruct",
            "--hash",
            &format!("0x{hash}"),
        ]);
        Served {
            env,
            node: Some(node),
            index,
            work,
        }
    }

    /// Publishes a fresh adapter as `name` (owner dev3) with the datanet's index.
    pub fn publish(&self, name: &str, seed: u64, alpha: f64) -> u64 {
        let dir = self.work.path().join(format!("adapter-{name}"));
        write_adapter(&dir, seed, alpha);
        let out = self.env.ok(&[
            "--from",
            "dev3",
            "model",
            "publish-adapter",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--base",
            "1",
            "--datanets",
            "1@1",
            "--index",
            self.index.to_str().unwrap(),
        ]);
        adapter_id_in(&out)
    }

    /// Deposits `open` OPEN of credit for `who` and creates an API key that lets the node's
    /// operator spend `allowance` OPEN of it; returns the key.
    pub fn api_key(&self, who: &str, deposit: &str, allowance: &str) -> String {
        if deposit != "0" {
            self.env
                .ok(&["--from", who, "inference", "deposit", deposit]);
        }
        let out = self
            .env
            .ok(&["--from", who, "api-key", "new", "--allowance", allowance]);
        let key = out.lines().last().unwrap_or_default().trim().to_string();
        assert!(key.starts_with("olk_"), "api-key new printed {out:?}");
        key
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.env.port)
    }

    pub fn address(&self, key_name: &str) -> Address {
        let out = self.env.ok(&["keys", "list"]);
        out.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(key_name)).then(|| f.next().unwrap().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no key {key_name}"))
    }

    /// `eth_call` of a module view.
    pub fn view<C: SolCall>(&self, to: Address, call: C) -> C::Return {
        let v = rpc(
            &self.url(""),
            "eth_call",
            json!([{"to": to.to_string(), "data": format!("0x{}", hex(&call.abi_encode()))}, "latest"]),
        );
        let bytes = unhex(v.as_str().unwrap());
        C::abi_decode_returns(&bytes).unwrap()
    }

    pub fn balance(&self, a: Address) -> U256 {
        let v = rpc(
            &self.url(""),
            "eth_getBalance",
            json!([a.to_string(), "latest"]),
        );
        v.as_str().unwrap().parse().unwrap()
    }

    pub fn credit(&self, a: Address) -> U256 {
        self.view(modules::INFERENCE, IInference::creditOfCall { account: a })
    }

    pub fn receipt_count(&self) -> u64 {
        self.view(modules::INFERENCE, IInference::receiptCountCall {})
    }

    /// The receipt the node's operator recorded for the call answered as `response_id`.
    pub fn receipt_of(&self, response_id: &str) -> u64 {
        self.view(
            modules::INFERENCE,
            IInference::receiptOfRequestCall {
                operator: self.operator(),
                requestId: alloy_primitives::keccak256(response_id.as_bytes()),
            },
        )
    }

    /// The operator that records the node's paid calls (`GET /v1/openlora`).
    pub fn operator(&self) -> Address {
        let mut resp = ureq::get(self.url("/v1/openlora")).call().unwrap();
        let info: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
        info["operator"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no operator in {info}"))
    }

    /// Waits (bounded) until the chain holds `n` receipts.
    pub fn wait_receipts(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let have = self.receipt_count();
            if have >= n {
                assert_eq!(have, n, "more receipts than charged calls");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {have} of {n} receipts recorded within 90 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

pub fn adapter_id_in(out: &str) -> u64 {
    out.split(|c: char| !c.is_ascii_digit())
        .rev()
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no adapter id in {out:?}"))
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    )
}

/// POSTs JSON; returns the status and the body (JSON, or the raw text as a string).
pub fn post(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = agent().post(url);
    if let Some(k) = key {
        req = req.header("Authorization", &format!("Bearer {k}"));
    }
    let mut resp = req.send_json(body).expect("the node answers");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub fn rpc(url: &str, method: &str, params: Value) -> Value {
    let (status, v) = post(
        url,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    );
    assert_eq!(status, 200, "{method}: {v}");
    assert!(v["error"].is_null(), "{method}: {v}");
    v["result"].clone()
}

pub fn chat(max_tokens: u32, model: &str, content: &str) -> Value {
    json!({"model": model, "temperature": 0, "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": content}]})
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim_start_matches("0x");
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

pub fn sha256_hex(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// Unused marker so `B256` stays imported for tests that build request ids.
pub fn request_id(response_id: &str) -> B256 {
    alloy_primitives::keccak256(response_id.as_bytes())
}
