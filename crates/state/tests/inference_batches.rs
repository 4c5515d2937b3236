//! An OpenLoRA operator records many inferences in one transaction: each record is charged to
//! its caller within the operator's allowance, a request id recorded before is skipped (so a
//! restarted operator can resubmit its journal without charging anyone twice), one bad record
//! refuses the whole batch (a caller's free daily volume counts all its records), and `settleNow`
//! pays everyone at once. Adapter names are unique, and
//! a merged adapter inherits its parents' datanets.

mod common;

use alloy_primitives::{keccak256, B256, U256};
use common::World;
use openledger_state::ExecError;
use openledger_types::{
    abi::{IAgent, IDatanet, IInference, IModel},
    modules,
    units::one_open,
};

const OWNER: usize = 0;
const CONTRIBUTOR: usize = 1;
const CALLER: usize = 2;
const OPERATOR: usize = 3;

/// A datanet with one approved contribution, a base model and an adapter "helper" on it; the
/// caller holds 10 OPEN of credit and lets the operator spend 5.
fn world() -> World {
    world_with(|_| {})
}

/// [`world`] under parameters adjusted by `tune`.
fn world_with(tune: impl FnOnce(&mut openledger_types::Params)) -> World {
    let mut w = World::new("batches", 4, 1000, tune);
    w.call(OWNER, modules::DATANET, common::public_datanet("d"))
        .unwrap();
    w.call(
        CONTRIBUTOR,
        modules::DATANET,
        IDatanet::contributeCall {
            datanetId: 1,
            rowsRoot: keccak256(b"rows"),
            rowCount: 3,
            byteSize: 300,
            score: 9000,
            metadataUri: String::new(),
        },
    )
    .unwrap();
    w.call(
        OWNER,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 1 },
    )
    .unwrap();
    w.call(
        OWNER,
        modules::MODEL,
        IModel::registerBaseModelCall {
            modelHash: keccak256(b"base"),
            name: "base".into(),
        },
    )
    .unwrap();
    register(&mut w, "helper").unwrap();
    w.send(
        CALLER,
        modules::INFERENCE,
        U256::from(10u64) * one_open(),
        IInference::depositCall {}.abi_encode_call(),
    )
    .unwrap();
    let op = w.addr(OPERATOR);
    w.call(
        CALLER,
        modules::INFERENCE,
        IInference::approveOperatorCall {
            operator: op,
            allowance: U256::from(5u64) * one_open(),
        },
    )
    .unwrap();
    w
}

trait EncodeCall {
    fn abi_encode_call(&self) -> Vec<u8>;
}
impl<C: alloy_sol_types::SolCall> EncodeCall for C {
    fn abi_encode_call(&self) -> Vec<u8> {
        self.abi_encode()
    }
}

fn register(w: &mut World, name: &str) -> Result<(), ExecError> {
    w.call(
        OWNER,
        modules::MODEL,
        IModel::registerAdapterCall {
            baseModelId: 1,
            name: name.into(),
            datanetIds: vec![1],
            datanetVersions: vec![1],
            trainingConfigHash: keccak256(b"config"),
            adapterHash: keccak256(name.as_bytes()),
            attributionIndexRoot: keccak256(b"index"),
        },
    )
}

fn record(w: &World, n: u8, completion: u32) -> IInference::InferenceRecord {
    IInference::InferenceRecord {
        requestId: keccak256([n]),
        caller: w.addr(CALLER),
        adapterId: 1,
        promptTokens: 10,
        completionTokens: completion,
        top: vec![IInference::Attribution {
            contributionId: 1,
            weightPpm: 500_000,
        }],
        attributionRoot: keccak256(b"list"),
    }
}

fn batch(
    w: &mut World,
    records: Vec<IInference::InferenceRecord>,
    settle: bool,
) -> Result<(), ExecError> {
    w.call(
        OPERATOR,
        modules::INFERENCE,
        IInference::recordInferencesCall {
            records,
            settleNow: settle,
        },
    )
}

fn credit(w: &World) -> U256 {
    w.view(
        modules::INFERENCE,
        IInference::creditOfCall {
            account: w.addr(CALLER),
        },
    )
}

fn quote(w: &World, completion: u32) -> U256 {
    w.view(
        modules::INFERENCE,
        IInference::quoteCall {
            promptTokens: 10,
            completionTokens: completion,
        },
    )
}

#[test]
fn a_batch_charges_each_record_once_even_when_resubmitted() {
    let mut w = world();
    let start = credit(&w);
    let records = vec![record(&w, 1, 5), record(&w, 2, 7), record(&w, 3, 9)];
    batch(&mut w, records.clone(), false).unwrap();
    let fees = quote(&w, 5) + quote(&w, 7) + quote(&w, 9);
    assert_eq!(credit(&w), start - fees);
    assert_eq!(
        w.view(modules::INFERENCE, IInference::receiptCountCall {}),
        3
    );
    for (i, r) in records.iter().enumerate() {
        let id: u64 = w.view(
            modules::INFERENCE,
            IInference::receiptOfRequestCall {
                operator: w.addr(OPERATOR),
                requestId: r.requestId,
            },
        );
        assert_eq!(id, i as u64 + 1);
    }
    // A restarted operator resubmits its whole journal plus one new record: only the new one
    // is charged.
    let mut again = records;
    again.push(record(&w, 4, 1));
    batch(&mut w, again, false).unwrap();
    assert_eq!(credit(&w), start - fees - quote(&w, 1));
    assert_eq!(
        w.view(modules::INFERENCE, IInference::receiptCountCall {}),
        4
    );
}

#[test]
fn one_bad_record_refuses_the_whole_batch() {
    let mut w = world();
    let before = w.kv.clone();
    let mut bad = record(&w, 2, 5);
    bad.top[0].contributionId = 99;
    let ok = record(&w, 1, 5);
    let e = batch(&mut w, vec![ok, bad], false).unwrap_err();
    assert!(e.to_string().contains("99"), "{e}");
    let mut zero = record(&w, 3, 5);
    zero.requestId = B256::ZERO;
    let e = batch(&mut w, vec![zero], false).unwrap_err();
    assert!(e.to_string().contains("requestId"), "{e}");
    // More than the allowance lets the operator spend: refused as a whole.
    let big = record(&w, 5, 400_000);
    let e = batch(&mut w, vec![big], false).unwrap_err();
    assert!(matches!(e, ExecError::Unauthorized(_)), "{e}");
    let e = batch(&mut w, vec![], false).unwrap_err();
    assert!(e.to_string().contains("1 to"), "{e}");
    // Only the senders' nonces and gas moved; no credit, receipt or request id did.
    assert_eq!(credit(&w), {
        let mut b = World::new("batches", 4, 1000, |_| {});
        b.kv = before.clone();
        credit(&b)
    });
    assert_eq!(
        w.view(modules::INFERENCE, IInference::receiptCountCall {}),
        0
    );
}

#[test]
fn settle_now_pays_contributor_owner_and_treasury_every_wei() {
    let mut w = world();
    let (contributor, owner) = (w.addr(CONTRIBUTOR), w.addr(OWNER));
    let (c0, o0, t0) = (
        w.balance(contributor),
        w.balance(owner),
        w.balance(modules::TREASURY),
    );
    let operator = w.addr(OPERATOR);
    let gas0 = w.balance(operator);
    let inference0 = w.balance(modules::INFERENCE);
    let staking0 = w.balance(modules::STAKING);
    let records = vec![record(&w, 1, 5), record(&w, 2, 7)];
    batch(&mut w, records, true).unwrap();
    let fees = quote(&w, 5) + quote(&w, 7);
    // The operator's gas goes to the treasury too; take it out.
    let gas = gas0 - w.balance(operator);
    let paid = (w.balance(contributor) - c0)
        + (w.balance(owner) - o0)
        + (w.balance(modules::TREASURY) - t0 - gas)
        + (w.balance(modules::STAKING) - staking0);
    assert_eq!(paid, fees, "every wei of the fees reached someone");
    assert_eq!(inference0 - w.balance(modules::INFERENCE), fees);
    assert!(w.balance(contributor) > c0, "the contributor was paid");
    let r = w.view(
        modules::INFERENCE,
        IInference::getReceiptCall { receiptId: 2 },
    );
    assert!(r.settled);
}

#[test]
fn adapter_names_are_unique_and_resolvable() {
    let mut w = world();
    let e = register(&mut w, "helper").unwrap_err();
    assert!(e.to_string().contains("taken by adapter 1"), "{e}");
    for bad in ["", "42", "adapter-7", "has space", "slash/name"] {
        let e = register(&mut w, bad).unwrap_err();
        assert!(e.to_string().contains("adapter name"), "{bad:?}: {e}");
    }
    register(&mut w, "adapter-x2").unwrap();
    let id: u64 = w.view(
        modules::MODEL,
        IModel::adapterByNameCall {
            name: "adapter-x2".into(),
        },
    );
    assert_eq!(id, 2);
    let none: u64 = w.view(
        modules::MODEL,
        IModel::adapterByNameCall {
            name: "nope".into(),
        },
    );
    assert_eq!(none, 0);
}

#[test]
fn a_merged_adapter_inherits_its_parents_datanets() {
    let mut w = world();
    register(&mut w, "second").unwrap();
    w.call(
        OWNER,
        modules::MODEL,
        IModel::registerMergedAdapterCall {
            name: "merged".into(),
            parentIds: vec![1, 2],
            mergeConfigHash: keccak256(b"ties"),
            adapterHash: keccak256(b"merged weights"),
        },
    )
    .unwrap();
    let a = w.view(modules::MODEL, IModel::getAdapterCall { adapterId: 3 });
    assert_eq!(a.datanetIds, vec![1]);
    assert_eq!(a.datanetVersions, vec![1]);
    assert_eq!(a.baseModelId, 1);
    let parents: Vec<u64> = w.view(modules::MODEL, IModel::parentsOfCall { adapterId: 3 });
    assert_eq!(parents, vec![1, 2]);
    // Receipts for the merged adapter pay the parents' contributors.
    let mut r = record(&w, 9, 3);
    r.adapterId = 3;
    batch(&mut w, vec![r], true).unwrap();
    for parents in [vec![1], vec![1, 1], vec![1, 77]] {
        let e = w
            .call(
                OWNER,
                modules::MODEL,
                IModel::registerMergedAdapterCall {
                    name: "again".into(),
                    parentIds: parents.clone(),
                    mergeConfigHash: B256::ZERO,
                    adapterHash: keccak256(b"x"),
                },
            )
            .unwrap_err();
        assert!(
            matches!(e, ExecError::Invalid(_) | ExecError::NotFound(_)),
            "{parents:?}: {e}"
        );
    }
}

#[test]
fn another_account_cannot_squat_an_operators_request_id() {
    let mut w = world();
    let start = credit(&w);
    // The caller learns the request id of its call (it is derived from the response id the
    // answer carries) and records it first itself, as a one-token inference of its own.
    let real = record(&w, 1, 500);
    let mut squat = record(&w, 1, 1);
    squat.top = vec![];
    w.call(
        CALLER,
        modules::INFERENCE,
        IInference::recordInferencesCall {
            records: vec![squat],
            settleNow: false,
        },
    )
    .unwrap();
    // The operator's record of the real call is still charged in full.
    batch(&mut w, vec![real], false).unwrap();
    assert_eq!(
        w.view(modules::INFERENCE, IInference::receiptCountCall {}),
        2
    );
    assert_eq!(credit(&w), start - quote(&w, 1) - quote(&w, 500));
    let of = |w: &World, who: usize| -> u64 {
        w.view(
            modules::INFERENCE,
            IInference::receiptOfRequestCall {
                operator: w.addr(who),
                requestId: keccak256([1u8]),
            },
        )
    };
    assert_eq!((of(&w, CALLER), of(&w, OPERATOR)), (1, 2));
}

#[test]
fn merging_needs_the_access_that_training_on_a_permissioned_datanet_needs() {
    let mut w = world();
    w.call(
        OWNER,
        modules::DATANET,
        IDatanet::createDatanetCall {
            name: "private".into(),
            summary: String::new(),
            description: String::new(),
            tags: vec![],
            dataType: 0,
            licence: "proprietary".into(),
            permissioned: true,
        },
    )
    .unwrap();
    w.call(
        OWNER,
        modules::DATANET,
        IDatanet::contributeCall {
            datanetId: 2,
            rowsRoot: keccak256(b"private rows"),
            rowCount: 1,
            byteSize: 100,
            score: 9000,
            metadataUri: String::new(),
        },
    )
    .unwrap();
    w.call(
        OWNER,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 2 },
    )
    .unwrap();
    for name in ["private-a", "private-b"] {
        w.call(
            OWNER,
            modules::MODEL,
            IModel::registerAdapterCall {
                baseModelId: 1,
                name: name.into(),
                datanetIds: vec![2],
                datanetVersions: vec![1],
                trainingConfigHash: keccak256(b"config"),
                adapterHash: keccak256(name.as_bytes()),
                attributionIndexRoot: B256::ZERO,
            },
        )
        .unwrap();
    }
    let merge = |w: &mut World, who: usize, name: &str| {
        w.call(
            who,
            modules::MODEL,
            IModel::registerMergedAdapterCall {
                name: name.into(),
                parentIds: vec![2, 3],
                mergeConfigHash: keccak256(b"linear"),
                adapterHash: keccak256(name.as_bytes()),
            },
        )
    };
    // Without a grant, an account cannot claim the datanet by merging others' adapters either.
    let e = merge(&mut w, CALLER, "laundered").unwrap_err();
    assert!(matches!(e, ExecError::Unauthorized(_)), "{e}");
    assert!(e.to_string().contains("datanet 2"), "{e}");
    merge(&mut w, OWNER, "merged-private").unwrap();
}

#[test]
fn a_batch_pays_gas_per_record() {
    use openledger_state::executor::gas_of;
    let w = world();
    let p = &w.genesis.params;
    let gas = |n: u8| {
        let records = (0..n).map(|i| record(&w, i, 5)).collect();
        let data = IInference::recordInferencesCall {
            records,
            settleNow: true,
        }
        .abi_encode_call();
        gas_of(p, &modules::INFERENCE, &data).unwrap()
    };
    let per = p.call_gas("recordInferences.perRecord");
    assert!(per > 0);
    // Each record adds at least its schedule on top of its calldata.
    assert!(gas(10) - gas(1) >= 9 * per, "{} vs {}", gas(10), gas(1));
}

/// The free daily volume counts every record of a batch: an unstaked caller's batch that passes
/// it part-way is refused whole (nothing recorded, the day's usage unchanged), and accepted
/// batches leave the usage at the sum of their records.
#[test]
fn a_batch_meters_the_free_volume_across_its_records() {
    let mut w = world_with(|p| p.agent.agent_free_tokens_per_day = 100);
    let usage = |w: &World| {
        let u = w.view(
            modules::AGENT,
            IAgent::usageOfCall {
                account: w.addr(CALLER),
            },
        );
        (u.tokensToday, u.staked)
    };
    // 10 prompt + 20 completion tokens per record.
    let records = vec![record(&w, 1, 20), record(&w, 2, 20)];
    batch(&mut w, records, true).unwrap();
    assert_eq!(usage(&w), (60, false));
    // 60 + 30 = 90 fits, 90 + 30 = 120 does not: the whole batch is refused.
    let records = vec![record(&w, 3, 20), record(&w, 4, 20)];
    let err = batch(&mut w, records, true).unwrap_err();
    assert!(err.to_string().contains("free tokens"), "{err}");
    assert_eq!(usage(&w), (60, false));
    assert_eq!(
        w.view(modules::INFERENCE, IInference::receiptCountCall {}),
        2
    );
    let records = vec![record(&w, 3, 20)];
    batch(&mut w, records, false).unwrap();
    assert_eq!(usage(&w), (90, false));
}
