//! OpenLoRA end to end on a dev chain with SmolLM2: adapters published on chain are served by
//! name through the OpenAI API, each call to one is attributed with its datanet's index, paid
//! from the caller's prepaid credit through an API key, recorded on chain in batches by the
//! node's operator and settled — every wei accounted for. Calls refused (401, 402, 400, 404) or
//! cancelled before any token are not charged.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`).

mod common;

use alloy_primitives::U256;
use common::openlora::{chat, post, Served};
use openledger_types::{abi::IInference, modules};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};

const ECHO: &str = "Repeat this sentence exactly: Eggs are the surest sign that a queen was present in the last three days.";

#[test]
fn paid_calls_are_attributed_charged_once_recorded_and_settled_to_the_wei() {
    let s = Served::start();
    let id = s.publish("beekeeper", 7, 0.5);
    assert_eq!(id, 1);
    let key = s.api_key("dev5", "10", "10");
    let caller = s.address("dev5");
    let (owner, contributor, operator) = (s.address("dev3"), s.address("dev1"), s.address("dev9"));
    let url = s.url("/v1/chat/completions");

    // /v1/models lists the on-chain adapter with the base model as its parent.
    let models: Value = common::openlora::agent()
        .get(s.url("/v1/models"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let listed = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "beekeeper")
        .unwrap_or_else(|| panic!("beekeeper not listed: {models}"));
    assert_eq!(listed["parent"], "SmolLM2-135M-Instruct.Q4_1.gguf");

    // Refused before any compute, and not charged: no key, an unknown key, a bad parameter,
    // an unknown model, a caller without credit.
    let credit0 = s.credit(caller);
    let loads = || {
        let text = common::openlora::agent()
            .get(s.url("/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        text.lines()
            .find(|l| l.starts_with("openlora:adapter_loads_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no adapter_loads_total in {text}"))
    };
    let loads0 = loads();
    let (st, body) = post(&url, None, &chat(8, "beekeeper", ECHO));
    assert_eq!(st, 401, "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(loads(), loads0, "an unpaid call loads no adapter weights");
    let (st, _) = post(&url, Some("olk_0000"), &chat(8, "beekeeper", ECHO));
    assert_eq!(st, 401);
    let mut bad = chat(8, "beekeeper", ECHO);
    bad["temperature"] = json!(7);
    let (st, body) = post(&url, Some(&key), &bad);
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"]["param"], "temperature");
    let (st, _) = post(&url, Some(&key), &chat(8, "no-such-adapter", ECHO));
    assert_eq!(st, 404);
    let broke = s.api_key("dev6", "0", "10");
    let (st, body) = post(&url, Some(&broke), &chat(8, "beekeeper", ECHO));
    assert_eq!(st, 402, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_quota");
    // Credit, but an allowance to the operator below what the call could cost: 402.
    let stingy = s.api_key("dev7", "1", "0.00001");
    let (st, body) = post(&url, Some(&stingy), &chat(8, "beekeeper", ECHO));
    assert_eq!(st, 402, "{body}");
    assert_eq!(s.credit(caller), credit0, "refused calls charged nothing");

    // The base model stays free and needs no key.
    let (st, body) = post(
        &url,
        None,
        &chat(4, "SmolLM2-135M-Instruct.Q4_1.gguf", "Hi"),
    );
    assert_eq!(st, 200, "{body}");

    let before = Balances::read(&s, &[owner, contributor, operator]);

    // Two paid calls by name and by id, one streamed.
    let (st, whole) = post(&url, Some(&key), &chat(40, "beekeeper", ECHO));
    assert_eq!(st, 200, "{whole}");
    let attribution = &whole["attribution"];
    assert_eq!(attribution["adapter"], "beekeeper");
    assert_eq!(attribution["adapter_id"], 1);
    assert_eq!(
        attribution["receipt"]["completion_tokens"],
        whole["usage"]["completion_tokens"]
    );
    let text = whole["choices"][0]["message"]["content"].as_str().unwrap();
    // The attribution is what anyone holding the index recomputes from the prompt and the
    // answer: the committed top-k and root match `openledger attribute` on the same text.
    let again: Value = serde_json::from_str(&s.env.ok(&[
        "attribute",
        "--index",
        s.index.to_str().unwrap(),
        "--tokenizer",
        common::openlora::model_path().to_str().unwrap(),
        "--prompt",
        ECHO,
        "--response",
        text,
        "--json",
        "--commit-top",
        "8",
    ]))
    .unwrap();
    assert_eq!(
        attribution["root"], again["commitment"]["root"],
        "{attribution}"
    );
    assert_eq!(attribution["committed_top"], again["commitment"]["top"]);
    // When the answer quotes alice's row (greedy SmolLM2 usually copies part of the sentence,
    // but tiny float differences between CPUs can change the words), her contribution is named
    // with the quoted span as evidence.
    let quoted = !attribution["contributions"].as_array().unwrap().is_empty();
    if quoted {
        let c = &attribution["contributions"][0];
        assert_eq!(c["contribution_id"], 1, "answer {text:?}: {attribution}");
        assert_eq!(c["contributor"], contributor.to_string());
        assert!(!c["spans"].as_array().unwrap().is_empty());
    }
    let streamed = stream(&s, &key, "adapter-1");
    assert!(streamed.last_chunk["attribution"]["receipt"]["request_id"].is_string());

    // The operator records both in batches and settles them.
    s.wait_receipts(2);
    for id in [whole["id"].as_str().unwrap(), streamed.id.as_str()] {
        assert_ne!(s.receipt_of(id), 0, "no receipt for {id}");
    }
    let mut fees = U256::ZERO;
    for r in 1..=2u64 {
        let rc = s.view(
            modules::INFERENCE,
            IInference::getReceiptCall { receiptId: r },
        );
        assert!(rc.settled, "receipt {r} is settled");
        assert_eq!(rc.caller, caller);
        assert_eq!(rc.operator, operator);
        fees += rc.fee;
    }
    let charged_tokens =
        whole["usage"]["completion_tokens"].as_u64().unwrap() + streamed.completion_tokens;
    assert!(charged_tokens > 0);
    // Every wei: the caller's credit paid exactly the fees; the fees reached the owner, the
    // contributor, the stakers' pool and the treasury (which also got the operator's gas).
    assert_eq!(
        credit0 - s.credit(caller),
        fees,
        "the caller paid exactly the two fees"
    );
    let after = Balances::read(&s, &[owner, contributor, operator]);
    let gas = before.accounts[2] - after.accounts[2];
    let received = (after.accounts[0] - before.accounts[0])
        + (after.accounts[1] - before.accounts[1])
        + (after.treasury - before.treasury - gas)
        + (after.staking - before.staking);
    assert_eq!(received, fees, "the fees were paid out to the wei");
    if quoted {
        assert!(
            after.accounts[1] > before.accounts[1],
            "the contributor whose row the answer quotes was paid"
        );
    }
    assert_eq!(before.inference - after.inference, fees);

    // `openledger rewards` shows the contributor's and the owner's earnings.
    let rewards = s.env.ok(&["rewards", &owner.to_string()]);
    assert!(rewards.to_lowercase().contains("owner"), "{rewards}");
}

struct Balances {
    accounts: Vec<U256>,
    treasury: U256,
    staking: U256,
    inference: U256,
}

impl Balances {
    fn read(s: &Served, who: &[alloy_primitives::Address]) -> Balances {
        Balances {
            accounts: who.iter().map(|a| s.balance(*a)).collect(),
            treasury: s.balance(modules::TREASURY),
            staking: s.balance(modules::STAKING),
            inference: s.balance(modules::INFERENCE),
        }
    }
}

struct Streamed {
    id: String,
    completion_tokens: u64,
    last_chunk: Value,
}

/// A streamed chat with usage; returns the response id, the usage and the last data chunk.
fn stream(s: &Served, key: &str, model: &str) -> Streamed {
    let mut body = chat(24, model, ECHO);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut resp = common::openlora::agent()
        .post(s.url("/v1/chat/completions"))
        .header("Authorization", &format!("Bearer {key}"))
        .send_json(&body)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.body_mut().read_to_string().unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let last = chunks.last().unwrap().clone();
    Streamed {
        id: last["id"].as_str().unwrap().to_string(),
        completion_tokens: last["usage"]["completion_tokens"].as_u64().unwrap(),
        last_chunk: last,
    }
}

#[test]
fn a_stream_cancelled_before_its_first_token_is_not_charged() {
    let s = Served::start();
    s.publish("cancelled", 11, 0.5);
    let key = s.api_key("dev5", "10", "10");
    let caller = s.address("dev5");
    let credit0 = s.credit(caller);
    // A raw connection that sends the request and hangs up at once.
    for _ in 0..3 {
        let mut body = chat(200, "cancelled", ECHO);
        body["stream"] = json!(true);
        let body = body.to_string();
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.env.port)).unwrap();
        write!(
            c,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut status = String::new();
        BufReader::new(&c).read_line(&mut status).unwrap();
        assert!(status.contains("200"), "{status}");
        drop(c);
    }
    // A completed call afterwards is recorded alone: the cancelled ones were charged only for
    // the tokens they received before the node noticed (possibly none), never the whole
    // max_tokens.
    let (st, whole) = post(
        &s.url("/v1/chat/completions"),
        Some(&key),
        &chat(8, "cancelled", ECHO),
    );
    assert_eq!(st, 200, "{whole}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.receipt_of(whole["id"].as_str().unwrap()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the completed call was not recorded"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let n = s.receipt_count();
    let mut fees = U256::ZERO;
    for r in 1..=n {
        let rc = s.view(
            modules::INFERENCE,
            IInference::getReceiptCall { receiptId: r },
        );
        assert!(
            rc.completionTokens < 200,
            "receipt {r} charged {} completion tokens of a cancelled stream",
            rc.completionTokens
        );
        fees += rc.fee;
    }
    assert_eq!(credit0 - s.credit(caller), fees);
}
