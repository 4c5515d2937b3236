//! Arithmetic on values that come from transactions never wraps: sums and products that would
//! overflow are refused with an error that says so, and the refused transaction changes
//! nothing. OPEN sent with `IBank.transfer` to a module, where nothing could ever move it
//! again, is refused like any other value sent to a non-payable module function.

mod common;

use alloy_primitives::{keccak256, Address, U256};
use alloy_sol_types::SolCall;
use common::World;
use openledger_state::{
    executor::simulate_call,
    modules::{bank, datanet},
    ExecError, Overlay,
};
use openledger_types::{
    abi::{IBank, IDatanet, IInference},
    modules,
    units::one_open,
};

fn create_datanet(w: &mut World, owner: usize) {
    w.call(owner, modules::DATANET, common::public_datanet("d"))
        .unwrap();
}

fn contribute(
    w: &mut World,
    who: usize,
    seed: u64,
    rows: u64,
    bytes: u64,
) -> Result<(), ExecError> {
    w.call(
        who,
        modules::DATANET,
        IDatanet::contributeCall {
            datanetId: 1,
            rowsRoot: keccak256(seed.to_be_bytes()),
            rowCount: rows,
            byteSize: bytes,
            score: 9000,
            metadataUri: String::new(),
        },
    )
}

/// Asserts `r` is an `Invalid` refusal that names an overflow, and returns its message.
fn overflow_refusal(r: Result<(), ExecError>) -> String {
    match r {
        Err(e @ ExecError::Invalid(_)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("overflow"),
                "the refusal names the overflow: {msg}"
            );
            msg
        }
        other => panic!("expected a refusal naming the overflow, got {other:?}"),
    }
}

#[test]
fn row_counts_that_would_overflow_a_datanet_are_refused() {
    let mut w = World::new("overflow", 2, 1000, |_| {});
    create_datanet(&mut w, 0);
    let huge = u64::MAX - 1;
    // Two pending contributions that each fit, but not together.
    contribute(&mut w, 1, 1, huge, 1000).unwrap();
    contribute(&mut w, 1, 2, huge, 1000).unwrap();
    w.call(
        0,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 1 },
    )
    .unwrap();
    let before = w.kv.clone();
    let msg = overflow_refusal(w.call(
        0,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 2 },
    ));
    assert!(msg.contains("row count"), "{msg}");
    assert_eq!(before, w.kv, "a refused approval changes nothing");
    assert_eq!(datanet::datanet(&w.kv, 1).unwrap().rowCount, huge);
    assert_eq!(
        datanet::contribution(&w.kv, 2).unwrap().status,
        datanet::PENDING,
        "the contribution the datanet cannot hold stays pending"
    );
    // A new contribution that could never be approved is refused when submitted...
    let before = w.kv.clone();
    overflow_refusal(contribute(&mut w, 1, 3, 2, 1000));
    assert_eq!(before, w.kv, "a refused contribution changes nothing");
    // ...one that still fits is not, and the owner can still reject the one that cannot.
    contribute(&mut w, 1, 4, 1, 1000).unwrap();
    w.call(
        0,
        modules::DATANET,
        IDatanet::rejectCall {
            contributionId: 2,
            reason: "does not fit".into(),
        },
    )
    .unwrap();
}

#[test]
fn a_daily_byte_quota_sum_that_would_overflow_is_refused() {
    let mut w = World::new("overflow", 2, 1000, |p| {
        p.max_daily_contribution_bytes = u64::MAX;
    });
    create_datanet(&mut w, 0);
    contribute(&mut w, 1, 1, 1, u64::MAX - 1).unwrap();
    let before = w.kv.clone();
    overflow_refusal(contribute(&mut w, 1, 2, 1, 2));
    assert_eq!(before, w.kv, "a refused contribution changes nothing");
    contribute(&mut w, 1, 3, 1, 1).unwrap();
}

#[test]
fn a_transaction_whose_fee_plus_value_overflows_is_refused() {
    let mut w = World::new("overflow", 2, 1000, |_| {});
    let to = w.addr(1);
    for value in [U256::MAX, U256::MAX - U256::from(1_000_000u64)] {
        let before = w.kv.clone();
        let msg = overflow_refusal(w.send(0, to, value, vec![]));
        assert!(msg.contains("fee"), "{msg}");
        assert_eq!(before, w.kv, "a refused transaction changes nothing");
    }
    w.send(0, to, one_open(), vec![]).unwrap();
}

#[test]
fn an_account_at_the_last_nonce_cannot_send() {
    let mut w = World::new("overflow", 2, 1000, |_| {});
    let me = w.addr(0);
    let mut acct = bank::account(&w.kv, &me).unwrap();
    acct.nonce = u64::MAX;
    let mut o = Overlay::new(&w.kv);
    bank::put_account(&mut o, &me, acct);
    let writes = o.into_writes();
    w.kv.apply(writes);
    let before = w.kv.clone();
    let to = w.addr(1);
    overflow_refusal(w.send(0, to, U256::from(1u64), vec![]));
    assert_eq!(before, w.kv, "a refused transaction changes nothing");
}

#[test]
fn open_sent_to_a_module_with_bank_transfer_is_refused() {
    let mut w = World::new("overflow", 2, 1000, |_| {});
    for (module, name) in modules::ALL {
        let before = w.kv.clone();
        let r = w.call(
            0,
            modules::BANK,
            IBank::transferCall {
                to: module,
                amount: one_open(),
            },
        );
        match r {
            Err(ExecError::NotPayable(what)) => {
                assert!(
                    what.contains(name),
                    "the refusal names the {name} module: {what}"
                )
            }
            other => panic!("OPEN sent to the {name} module was not refused: {other:?}"),
        }
        assert_eq!(before, w.kv, "a refused transfer changes nothing");
        assert_eq!(w.balance(module), U256::ZERO);
    }
    // The treasury is an account that governance spends from: donations to it are fine.
    let before = w.balance(modules::TREASURY);
    w.call(
        0,
        modules::BANK,
        IBank::transferCall {
            to: modules::TREASURY,
            amount: one_open(),
        },
    )
    .unwrap();
    assert!(w.balance(modules::TREASURY) >= before + one_open());
    // So are transfers between accounts.
    let to = w.addr(1);
    let before = w.balance(to);
    w.call(
        0,
        modules::BANK,
        IBank::transferCall {
            to,
            amount: one_open(),
        },
    )
    .unwrap();
    assert_eq!(w.balance(to), before + one_open());
}

/// Calls a view and returns its error.
fn view_error<C: SolCall>(w: &World, to: Address, call: C) -> ExecError {
    simulate_call(
        &w.kv,
        &w.env,
        &w.genesis.params,
        Address::ZERO,
        to,
        U256::ZERO,
        &call.abi_encode(),
    )
    .expect_err("the view refuses")
}

#[test]
fn fees_that_would_overflow_are_refused_not_wrapped() {
    // Governed prices times caller-chosen sizes: a product past 2^256 is an error, never a
    // small wrapped fee.
    let mut w = World::new("overflow", 2, 1000, |p| {
        p.approval_fee_per_kib = U256::MAX / U256::from(2u64);
        p.price_per_completion_token = U256::MAX / U256::from(3u64);
    });
    let e = view_error(
        &w,
        modules::DATANET,
        IDatanet::approvalFeeCall { byteSize: 4096 },
    );
    assert!(
        matches!(e, ExecError::Invalid(ref m) if m.contains("overflow")),
        "{e}"
    );
    let e = view_error(
        &w,
        modules::INFERENCE,
        IInference::quoteCall {
            promptTokens: 1,
            completionTokens: 7,
        },
    );
    assert!(
        matches!(e, ExecError::Invalid(ref m) if m.contains("overflow")),
        "{e}"
    );
    // Approving a contribution whose fee overflows is refused and changes nothing.
    create_datanet(&mut w, 0);
    contribute(&mut w, 1, 1, 1, 4096).unwrap();
    let before = w.kv.clone();
    overflow_refusal(w.call(
        0,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 1 },
    ));
    assert_eq!(before, w.kv, "a refused approval changes nothing");
}
