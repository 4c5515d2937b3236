//! Crash test: SIGKILL a sequencer node (blocks on a timer, not per request) while transactions
//! stream in, restart it, and check that every transaction that had a receipt before the kill
//! still has it, that every transaction whose hash was returned (acknowledged, perhaps not yet in
//! a block) gets its receipt after the restart (the pending-transaction journal), that the chain
//! keeps going, and that `openledger verify` replays the whole chain from genesis with every root
//! matching.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use serde_json::{json, Value};
use std::{
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

mod common;
use common::process::{free_port, KillOnDrop as NodeProc};

const BIN: &str = env!("CARGO_BIN_EXE_openledger");

fn start(home: &Path, port: u16, extra: &[&str]) -> NodeProc {
    let child = Command::new(BIN)
        .args([
            "--home",
            home.to_str().unwrap(),
            "node",
            "--rpc-addr",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the node");
    let node = NodeProc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(port, "eth_chainId", json!([])).is_err() {
        assert!(Instant::now() < deadline, "node did not answer within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

fn call(port: u16, method: &str, params: Value) -> Result<Value, String> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut resp = ureq::post(&format!("http://127.0.0.1:{port}"))
        .send_json(&body)
        .map_err(|e| e.to_string())?;
    let v: Value = resp.body_mut().read_json().map_err(|e| e.to_string())?;
    match v.get("error") {
        Some(e) => Err(e.to_string()),
        None => Ok(v["result"].clone()),
    }
}

fn transfer(key: &PrivateKeySigner, nonce: u64) -> Bytes {
    let tx = TxEip1559 {
        chain_id: 6736,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 1_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(Address::repeat_byte(0x42)),
        value: U256::from(1_000u64 + nonce),
        access_list: Default::default(),
        input: Bytes::new(),
    };
    let sig = key.sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(sig)).encoded_2718().into()
}

#[test]
fn sigkill_under_load_loses_no_receipted_transaction_and_verify_passes() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let out = Command::new(BIN)
        .args(["--home", home.to_str().unwrap(), "init", "--dev"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sequencer mode: acknowledged transactions wait in the pending block for the next tick.
    let config = home.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("dev = true"), "{text}");
    std::fs::write(&config, text.replace("dev = true", "dev = false")).unwrap();
    let port = free_port();
    let node = start(home, port, &["--block-time-ms", "300"]);

    let receipted = Arc::new(Mutex::new(Vec::new()));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|i| {
            let (receipted, acknowledged, stop) =
                (receipted.clone(), acknowledged.clone(), stop.clone());
            std::thread::spawn(move || {
                let key =
                    PrivateKeySigner::from_bytes(&keccak256(format!("openledger dev key {i}")))
                        .unwrap();
                let mut pending = Vec::new();
                for nonce in 0..100_000u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match call(
                        port,
                        "eth_sendRawTransaction",
                        json!([transfer(&key, nonce)]),
                    ) {
                        Ok(h) => {
                            acknowledged.lock().unwrap().push(h.clone());
                            pending.push(h)
                        }
                        Err(_) => break, // the node is gone
                    }
                    pending.retain(
                        |h| match call(port, "eth_getTransactionReceipt", json!([h])) {
                            Ok(r) if !r.is_null() => {
                                receipted.lock().unwrap().push(h.clone());
                                false
                            }
                            _ => true,
                        },
                    );
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    drop(node); // SIGKILL while the workers are still sending
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let receipted = receipted.lock().unwrap().clone();
    assert!(
        receipted.len() > 20,
        "load was too light to mean anything: {} receipts",
        receipted.len()
    );

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > receipted.len(),
        "some acknowledged transactions should still have been pending at the kill ({} acknowledged, {} receipted)",
        acknowledged.len(),
        receipted.len()
    );
    let node = start(home, port, &["--block-time-ms", "300"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    for h in &acknowledged {
        loop {
            let r = call(port, "eth_getTransactionReceipt", json!([h])).unwrap();
            if !r.is_null() {
                assert_eq!(r["status"], "0x1");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "transaction {h} was acknowledged before the crash and never got a receipt"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for h in &receipted {
        let r = call(port, "eth_getTransactionReceipt", json!([h])).unwrap();
        assert!(
            !r.is_null(),
            "transaction {h} had a receipt before the crash and lost it"
        );
        assert_eq!(r["status"], "0x1");
    }
    // the chain goes on after the crash: the next nonce of key 0 is accepted and sealed
    let key0 = PrivateKeySigner::from_bytes(&keccak256("openledger dev key 0")).unwrap();
    let nonce = call(
        port,
        "eth_getTransactionCount",
        json!([key0.address(), "pending"]),
    )
    .unwrap();
    let nonce = u64::from_str_radix(nonce.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let h = call(
        port,
        "eth_sendRawTransaction",
        json!([transfer(&key0, nonce)]),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(port, "eth_getTransactionReceipt", json!([h]))
        .unwrap()
        .is_null()
    {
        assert!(Instant::now() < deadline, "no block after restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(node);

    let out = Command::new(BIN)
        .args(["--home", home.to_str().unwrap(), "verify"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verified"), "{stdout}");
}
