//! OpenLoRA under load, on a dev chain with SmolLM2: a hundred adapters registered on chain and
//! called at once share batched forward passes and each answer equals its adapter's answer
//! served alone; every paid call is recorded once and the callers' credit pays exactly the
//! receipts' fees. Then a node killed with SIGKILL while serving paid calls loses no charged
//! receipt after its restart and charges none twice.
//!
//! Needs SmolLM2 (`./scripts/fetch-model`).

mod common;

use alloy_primitives::U256;
use common::openlora::{chat, model_path, post, Served};
use openledger_types::{abi::IInference, modules};
use std::collections::HashSet;
use std::time::Duration;

const ADAPTERS: usize = 100;
const PROMPT: &str = "Name one thing bees need.";

/// Lets every concurrent call wait in the engine's queue instead of getting 429.
fn roomy_queue(s: &Served) {
    let path = s.env.home.join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("max_waiting = 64", "max_waiting = 256");
    assert!(text.contains("max_waiting = 256"), "{text}");
    std::fs::write(&path, text).unwrap();
}

fn restart(s: &mut Served) {
    drop(s.node.take()); // SIGKILL
    s.node = Some(
        s.env
            .start_with(&["--model", model_path().to_str().unwrap()]),
    );
}

fn answer(v: &serde_json::Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer in {v}"))
        .to_string()
}

/// Sums the fees of receipts 1..=n.
fn fees(s: &Served, n: u64) -> U256 {
    (1..=n)
        .map(|r| {
            s.view(
                modules::INFERENCE,
                IInference::getReceiptCall { receiptId: r },
            )
            .fee
        })
        .fold(U256::ZERO, |a, b| a + b)
}

#[test]
fn a_hundred_chain_adapters_served_at_once_answer_as_when_served_alone() {
    let mut s = Served::start();
    roomy_queue(&s);
    restart(&mut s);
    let names: Vec<String> = (0..ADAPTERS).map(|i| format!("bee-{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        s.publish(n, 1000 + i as u64, 64.0);
    }
    // Two paying callers (a caller holds at most 64 calls in flight).
    let keys = [
        s.api_key("dev5", "100", "100"),
        s.api_key("dev6", "100", "100"),
    ];
    let callers = [s.address("dev5"), s.address("dev6")];
    let credit0: Vec<U256> = callers.iter().map(|c| s.credit(*c)).collect();
    let url = s.url("/v1/chat/completions");

    // One at a time.
    let alone: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (st, v) = post(&url, Some(&keys[i % 2]), &chat(8, n, PROMPT));
            assert_eq!(st, 200, "{n}: {v}");
            answer(&v)
        })
        .collect();
    let distinct: HashSet<&String> = alone.iter().collect();
    assert!(
        distinct.len() >= ADAPTERS / 2,
        "the adapters should change the answer: only {} distinct answers of {ADAPTERS}",
        distinct.len()
    );

    // All at once: they share the engine's batches, adapters mixed in each forward pass.
    let together: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let (url, key) = (&url, &keys[i % 2]);
                scope.spawn(move || {
                    let (st, v) = post(url, Some(key), &chat(8, n, PROMPT));
                    assert_eq!(st, 200, "{n}: {v}");
                    answer(&v)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "adapter {} answered differently in a batch", names[i]);
    }

    // Every call is recorded once and paid from its caller's credit, to the wei.
    s.wait_receipts(2 * ADAPTERS as u64);
    let spent: U256 = callers
        .iter()
        .zip(&credit0)
        .map(|(c, before)| *before - s.credit(*c))
        .fold(U256::ZERO, |a, b| a + b);
    assert_eq!(spent, fees(&s, 2 * ADAPTERS as u64));
}

#[test]
fn sigkill_under_paid_load_loses_no_charged_receipt_and_charges_none_twice() {
    let mut s = Served::start();
    roomy_queue(&s);
    restart(&mut s);
    s.publish("survivor", 5, 8.0);
    let key = s.api_key("dev5", "10", "10");
    let caller = s.address("dev5");
    let credit0 = s.credit(caller);
    let url = s.url("/v1/chat/completions");

    // 24 calls in flight; the node is killed while it serves them, once a few were answered.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let answered: Vec<String> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..24)
            .map(|i| {
                let (url, key, done) = (&url, &key, done_tx.clone());
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(40 * i));
                    let mut req = common::openlora::agent()
                        .post(url)
                        .header("Authorization", &format!("Bearer {key}"));
                    req = req.header("Content-Type", "application/json");
                    let body = chat(24, "survivor", PROMPT).to_string();
                    match req.send(body.as_bytes()) {
                        Ok(mut r) if r.status().as_u16() == 200 => {
                            let v: serde_json::Value =
                                serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
                            let _ = done.send(());
                            Some(v["id"].as_str()?.to_string())
                        }
                        Ok(mut r) => {
                            let status = r.status();
                            let body = r.body_mut().read_to_string().unwrap_or_default();
                            panic!("call {i} refused before the kill: {status} {body}")
                        }
                        Err(_) => None, // the node died mid-call
                    }
                })
            })
            .collect();
        for _ in 0..3 {
            done_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("three calls answered within 120 s");
        }
        drop(s.node.take()); // SIGKILL, calls still in flight
        calls
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        !answered.is_empty(),
        "no call was answered before the kill; the test kills too early"
    );
    s.node = Some(
        s.env
            .start_with(&["--model", model_path().to_str().unwrap()]),
    );
    // Every answered call was journaled before its answer left: the restarted recorder puts it
    // on chain. Calls charged but killed before answering may be recorded too; none twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for id in &answered {
        while s.receipt_of(id) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the answered call {id} has no receipt after the restart"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    std::thread::sleep(Duration::from_secs(2)); // anything else journaled settles too
    let n = s.receipt_count();
    assert!(n >= answered.len() as u64);
    assert!(n <= 24, "{n} receipts for 24 calls");
    assert_eq!(
        credit0 - s.credit(caller),
        fees(&s, n),
        "charged exactly once each"
    );
}
