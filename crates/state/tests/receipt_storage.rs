//! Receipts are stored compactly but read as before: the `getReceipt` view returns exactly the
//! ABI encoding of the recorded receipt (clients, the explorer and the dashboard decode it),
//! the stored value is the compact layout of `inference::stored` (a fraction of the ABI
//! size), and a stored value that is truncated, padded or of an unknown layout is refused
//! with a storage error naming the key instead of being misread or panicking.

mod common;

use alloy_primitives::{keccak256, Address, U256};
use alloy_sol_types::{SolCall, SolValue};
use common::World;
use openledger_state::{
    executor::simulate_call,
    modules::inference::{self, stored},
    ExecError, Overlay, StateRead,
};
use openledger_types::{
    abi::IInference::{self, Attribution, Receipt},
    abi::{IDatanet, IModel},
    modules,
    units::one_open,
};

const OWNER: usize = 0;
const CONTRIBUTOR: usize = 1;
const CALLER: usize = 2;
const OPERATOR: usize = 3;
/// Approved contributions 1..=CONTRIBUTIONS, all in the adapter's training data.
const CONTRIBUTIONS: u64 = 4;

fn world() -> World {
    let mut w = World::new("receipts", 4, 1000, |_| {});
    w.call(OWNER, modules::DATANET, common::public_datanet("d"))
        .unwrap();
    for i in 1..=CONTRIBUTIONS {
        let contribute = IDatanet::contributeCall {
            datanetId: 1,
            rowsRoot: keccak256(i.to_be_bytes()),
            rowCount: 3,
            byteSize: 300,
            score: 9000,
            metadataUri: String::new(),
        };
        w.call(CONTRIBUTOR, modules::DATANET, contribute).unwrap();
        let approve = IDatanet::approveCall { contributionId: i };
        w.call(OWNER, modules::DATANET, approve).unwrap();
    }
    let base = IModel::registerBaseModelCall {
        modelHash: keccak256(b"base"),
        name: "base".into(),
    };
    w.call(OWNER, modules::MODEL, base).unwrap();
    let adapter = IModel::registerAdapterCall {
        baseModelId: 1,
        name: "helper".into(),
        datanetIds: vec![1],
        datanetVersions: vec![CONTRIBUTIONS],
        trainingConfigHash: keccak256(b"config"),
        adapterHash: keccak256(b"helper"),
        attributionIndexRoot: keccak256(b"index"),
    };
    w.call(OWNER, modules::MODEL, adapter).unwrap();
    let deposit = IInference::depositCall {}.abi_encode();
    w.send(
        CALLER,
        modules::INFERENCE,
        U256::from(10u64) * one_open(),
        deposit,
    )
    .unwrap();
    let approve = IInference::approveOperatorCall {
        operator: w.addr(OPERATOR),
        allowance: U256::from(5u64) * one_open(),
    };
    w.call(CALLER, modules::INFERENCE, approve).unwrap();
    w
}

/// A record attributing to the first `k` contributions.
fn record(w: &World, n: u8, k: u64) -> IInference::InferenceRecord {
    IInference::InferenceRecord {
        requestId: keccak256([n]),
        caller: w.addr(CALLER),
        adapterId: 1,
        promptTokens: 10,
        completionTokens: 5 + n as u32,
        top: (1..=k)
            .map(|i| Attribution {
                contributionId: i,
                weightPpm: 100_000 * i as u32,
            })
            .collect(),
        attributionRoot: keccak256([n, 1]),
    }
}

/// Records receipts 1..=5 with 0..=4 attributions (settled at once when `settle`).
fn record_all(w: &mut World, settle: bool) -> Vec<IInference::InferenceRecord> {
    let records: Vec<_> = (0..=CONTRIBUTIONS).map(|k| record(w, k as u8, k)).collect();
    let call = IInference::recordInferencesCall {
        records: records.clone(),
        settleNow: settle,
    };
    w.call(OPERATOR, modules::INFERENCE, call).unwrap();
    records
}

/// The `getReceipt` view's raw return bytes.
fn view_bytes(w: &World, id: u64) -> Vec<u8> {
    let call = IInference::getReceiptCall { receiptId: id };
    let (out, _, _) = simulate_call(
        &w.kv,
        &w.env,
        &w.genesis.params,
        Address::ZERO,
        modules::INFERENCE,
        U256::ZERO,
        &call.abi_encode(),
    )
    .expect("getReceipt succeeds");
    out
}

/// Overwrites a committed value, as a damaged store would hold it.
fn put(w: &mut World, key: Vec<u8>, value: Vec<u8>) {
    let mut o = Overlay::new(&w.kv);
    o.put(key, value);
    let writes = o.into_writes();
    w.kv.apply(writes);
}

fn key(id: u64) -> Vec<u8> {
    [b"i/r".as_slice(), &id.to_be_bytes()].concat()
}

#[test]
fn get_receipt_returns_the_abi_encoding_of_the_recorded_receipt() {
    for settle in [false, true] {
        let mut w = world();
        let records = record_all(&mut w, settle);
        for (i, rec) in records.iter().enumerate() {
            let id = i as u64 + 1;
            let want = Receipt {
                id,
                adapterId: 1,
                caller: rec.caller,
                operator: w.addr(OPERATOR),
                promptTokens: rec.promptTokens,
                completionTokens: rec.completionTokens,
                fee: w.view(
                    modules::INFERENCE,
                    IInference::quoteCall {
                        promptTokens: rec.promptTokens,
                        completionTokens: rec.completionTokens,
                    },
                ),
                attributionRoot: rec.attributionRoot,
                top: rec.top.clone(),
                settled: settle,
                recordedAt: w.env.timestamp,
            };
            assert_eq!(view_bytes(&w, id), want.abi_encode(), "receipt {id}");
            assert_eq!(
                inference::receipt(&w.kv, id).unwrap().abi_encode(),
                want.abi_encode()
            );
            let stored_value = w.kv.get(&key(id)).unwrap().expect("the receipt is stored");
            assert_eq!(stored_value, stored::encode(&want));
            assert_eq!(stored_value.len(), 142 + 12 * rec.top.len());
            assert!(stored_value.len() * 2 < want.abi_encode().len());
        }
    }
}

#[test]
fn settling_later_rewrites_the_stored_receipt_as_settled() {
    let mut w = world();
    record_all(&mut w, false);
    let settle = IInference::settleCall {
        receiptIds: vec![2, 4],
    };
    w.call(OPERATOR, modules::INFERENCE, settle).unwrap();
    for id in 1..=5u64 {
        let r = inference::receipt(&w.kv, id).unwrap();
        assert_eq!(r.settled, id == 2 || id == 4, "receipt {id}");
        let view = IInference::getReceiptCall::abi_decode_returns(&view_bytes(&w, id)).unwrap();
        assert_eq!(view.abi_encode(), r.abi_encode());
    }
}

#[test]
fn a_corrupt_stored_receipt_is_a_storage_error_naming_the_key() {
    let mut w = world();
    record_all(&mut w, true);
    let good = w.kv.get(&key(3)).unwrap().unwrap();
    let abi = inference::receipt(&w.kv, 3).unwrap().abi_encode();
    let mut wrong_id = good.clone();
    wrong_id[1..9].copy_from_slice(&9u64.to_be_bytes());
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("head only", good[..100].to_vec()),
        ("padded", [good.as_slice(), &[0]].concat()),
        ("the old ABI encoding", abi),
        ("another version", [&[2u8][..], &good[1..]].concat()),
        ("another id", wrong_id),
    ];
    for (what, v) in bad {
        put(&mut w, key(3), v);
        match inference::receipt(&w.kv, 3) {
            Err(ExecError::Storage(e)) => {
                assert!(
                    e.0.contains(&alloy_primitives::hex::encode(key(3))),
                    "{what}: {e}"
                );
                assert!(e.0.contains("receipt 3"), "{what}: {e}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // Restored, it reads again; a missing receipt is not found, not corrupt.
    put(&mut w, key(3), good);
    assert!(inference::receipt(&w.kv, 3).is_ok());
    assert!(matches!(
        inference::receipt(&w.kv, 99),
        Err(ExecError::NotFound(_))
    ));
}

#[test]
fn a_corrupt_request_record_is_a_storage_error_not_receipt_zero() {
    let mut w = world();
    record_all(&mut w, false);
    let (op, request) = (w.addr(OPERATOR), keccak256([2u8]));
    assert_eq!(
        inference::receipt_of_request(&w.kv, &op, &request).unwrap(),
        Some(3)
    );
    let key = [b"i/q".as_slice(), op.as_slice(), request.as_slice()].concat();
    put(&mut w, key.clone(), vec![0, 3]);
    match inference::receipt_of_request(&w.kv, &op, &request) {
        Err(ExecError::Storage(e)) => {
            assert!(e.0.contains(&alloy_primitives::hex::encode(&key)), "{e}")
        }
        other => panic!("{other:?}"),
    }
}
