//! Faults injected into a running node (the `fault-injection` feature, on for these tests only)
//! never corrupt the chain or lose an acknowledged transaction:
//!
//! - a transaction whose execution panics midway is rejected with an error, and the pending
//!   block (its writes, its transactions) and the state are exactly as before; earlier
//!   transactions keep their effects when the block is sealed, and the chain verifies by replay;
//! - a seal whose commit fails with an I/O error (a full disk) keeps every acknowledged
//!   transaction pending; once the fault clears the next seal commits them all with their
//!   effects, and the chain verifies by replay;
//! - while the pending block is full and cannot be sealed, new transactions are refused with a
//!   clear error (the block stays bounded), and nothing already accepted is lost;
//! - a commit that lands but reports an error is not committed a second time.

mod common;

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use openledger_node::{chain, sequencer::Node, Chain, NodeConfig};
use openledger_state::{modules::bank, StateRead};
use openledger_store::CommitFault;
use openledger_types::{units::one_open, Genesis};
use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::Arc,
};

const CHAIN_ID: u64 = 4243;

struct Fixture {
    node: Arc<Node>,
    key: PrivateKeySigner,
    genesis: Genesis,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

/// A node that seals only when told to (not dev mode), with one funded account.
fn fixture(block_gas_limit: Option<u64>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&keccak256("faults")).unwrap();
    let mut genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(100u64) * one_open(),
    )
    .unwrap();
    if let Some(limit) = block_gas_limit {
        genesis.params.block_gas_limit = limit;
    }
    let db = dir.path().join("chain.redb");
    let chain = Chain::open(&db, &genesis, false).unwrap();
    let node = Node::new(chain, NodeConfig::default(), &dir.path().join("blobs")).unwrap();
    Fixture {
        node,
        key,
        genesis,
        db,
        _dir: dir,
    }
}

/// A signed EIP-1559 transfer of `value` wei to `to`.
fn transfer(key: &PrivateKeySigner, nonce: u64, to: Address, value: u64) -> (B256, Vec<u8>) {
    common::transfer(key, CHAIN_ID, nonce, to, value)
}

fn recipient(n: u8) -> Address {
    Address::repeat_byte(0xa0 + n)
}

fn pending_balance(node: &Node, who: Address) -> U256 {
    node.chain()
        .with_pending_state(|s| bank::account(s, &who).unwrap().balance)
}

fn latest_balance(node: &Node, who: Address) -> U256 {
    let store = node.chain().store().clone();
    bank::account(&*store, &who).unwrap().balance
}

fn pending_hashes(node: &Node) -> Vec<B256> {
    node.chain().pending_txs().map(|t| t.hash).collect()
}

fn head(node: &Node) -> u64 {
    node.chain().store().head().unwrap().unwrap_or(0)
}

/// Drops the node (releasing the database) and replays every block from genesis.
fn verify_by_replay(f: Fixture) {
    let Fixture {
        node,
        genesis,
        db,
        _dir,
        ..
    } = f;
    drop(node);
    let blocks = chain::verify(&db, &genesis, |_, _| {}).expect("the chain verifies by replay");
    assert!(blocks >= 1, "at least one block was checked");
}

#[test]
fn a_transaction_that_panics_leaves_the_pending_block_and_state_unchanged() {
    let f = fixture(None);
    let (h1, raw1) = transfer(&f.key, 0, recipient(1), 1_000);
    assert_eq!(f.node.submit_raw(&raw1).unwrap(), h1);

    let writes_before = f.node.chain().pending_writes().expect("a block is open");
    let sender_before = pending_balance(&f.node, f.key.address());
    assert_eq!(pending_balance(&f.node, recipient(1)), U256::from(1_000u64));

    // The second transaction panics midway through its execution.
    let (h2, raw2) = transfer(&f.key, 1, recipient(2), 2_000);
    f.node.chain().inject_panic(h2);
    let outcome = catch_unwind(AssertUnwindSafe(|| f.node.submit_raw(&raw2)));

    // Whatever became of the call, the pending block is exactly as it was.
    assert_eq!(
        f.node.chain().pending_writes().as_ref(),
        Some(&writes_before),
        "the pending block's writes changed"
    );
    assert_eq!(pending_hashes(&f.node), vec![h1]);
    assert_eq!(pending_balance(&f.node, f.key.address()), sender_before);
    assert_eq!(pending_balance(&f.node, recipient(2)), U256::ZERO);

    // And the panic came back as a rejection with a clear error, not as a panic.
    let err = outcome
        .expect("a panic inside execution must not unwind out of submit")
        .expect_err("a transaction that panicked must be rejected");
    let msg = err.to_string();
    assert!(
        msg.contains("panicked") && msg.contains(&h2.to_string()),
        "unclear error: {msg}"
    );
    assert_eq!(openledger_node::sequencer::error_code(&err), -32603);

    // The same nonce is still free: the panicking transaction left no trace.
    let (h3, raw3) = transfer(&f.key, 1, recipient(3), 3_000);
    assert_eq!(f.node.submit_raw(&raw3).unwrap(), h3);
    let sealed = f.node.seal().unwrap().expect("a block is sealed");
    assert_eq!(sealed.txs, 2);
    assert_eq!(latest_balance(&f.node, recipient(1)), U256::from(1_000u64));
    assert_eq!(latest_balance(&f.node, recipient(2)), U256::ZERO);
    assert_eq!(latest_balance(&f.node, recipient(3)), U256::from(3_000u64));
    assert!(f.node.chain().store().tx(&h2).unwrap().is_none());
    verify_by_replay(f);
}

#[test]
fn a_failed_seal_loses_no_acknowledged_transaction() {
    let f = fixture(None);
    let mut acknowledged = vec![];
    for n in 0..2u64 {
        let (h, raw) = transfer(&f.key, n, recipient(n as u8), 1_000 + n);
        assert_eq!(f.node.submit_raw(&raw).unwrap(), h);
        acknowledged.push(h);
    }
    f.node
        .chain()
        .store()
        .inject_commit_fault(&[CommitFault::DiskFull, CommitFault::DiskFull]);

    let err = f.node.seal().expect_err("the commit fails");
    assert!(
        err.to_string().contains("no space left on device"),
        "the error says why: {err}"
    );
    assert_eq!(head(&f.node), 0, "nothing was committed");
    assert_eq!(pending_hashes(&f.node), acknowledged, "still pending");
    assert_eq!(f.node.consecutive_seal_failures(), 1);

    // Meanwhile the node keeps accepting into the same (bounded) pending block.
    let (h, raw) = transfer(&f.key, 2, recipient(2), 1_002);
    assert_eq!(f.node.submit_raw(&raw).unwrap(), h);
    acknowledged.push(h);
    assert!(f.node.seal().is_err());
    assert_eq!(f.node.consecutive_seal_failures(), 2);
    assert_eq!(pending_hashes(&f.node), acknowledged);

    // The fault clears: the next seal commits every acknowledged transaction with its effects.
    let sealed = f.node.seal().unwrap().expect("a block is sealed");
    assert_eq!((sealed.number, sealed.txs), (1, 3));
    assert_eq!(f.node.consecutive_seal_failures(), 0);
    let store = f.node.chain().store().clone();
    for (n, h) in acknowledged.iter().enumerate() {
        let rec = store.tx(h).unwrap().expect("committed");
        assert_eq!((rec.block_number, rec.index), (1, n as u64));
        assert_eq!(
            latest_balance(&f.node, recipient(n as u8)),
            U256::from(1_000 + n as u64)
        );
    }
    assert_eq!(
        store.block(1).unwrap().unwrap().tx_hashes,
        acknowledged,
        "block 1 holds exactly the acknowledged transactions"
    );
    assert!(pending_hashes(&f.node).is_empty());
    drop(store);
    verify_by_replay(f);
}

#[test]
fn a_full_block_that_cannot_be_sealed_refuses_new_transactions_and_keeps_the_old() {
    // Room for exactly two transfers per block.
    let f = fixture(Some(42_000));
    let (h0, raw0) = transfer(&f.key, 0, recipient(0), 10);
    let (h1, raw1) = transfer(&f.key, 1, recipient(1), 11);
    f.node.submit_raw(&raw0).unwrap();
    f.node.submit_raw(&raw1).unwrap();
    f.node
        .chain()
        .store()
        .inject_commit_fault(&[CommitFault::DiskFull]);

    // The third needs a new block, which needs the full one sealed: that fails, so it is refused.
    let (h2, raw2) = transfer(&f.key, 2, recipient(2), 12);
    let err = f
        .node
        .submit_raw(&raw2)
        .expect_err("refused while sealing fails");
    let msg = err.to_string();
    assert!(
        msg.contains("could not be sealed") && msg.contains("no space left on device"),
        "unclear error: {msg}"
    );
    assert_eq!(pending_hashes(&f.node), vec![h0, h1]);
    assert_eq!(head(&f.node), 0);

    // The fault has cleared: the same transaction now goes through, after the full block.
    assert_eq!(f.node.submit_raw(&raw2).unwrap(), h2);
    assert_eq!(head(&f.node), 1);
    assert_eq!(pending_hashes(&f.node), vec![h2]);
    f.node.seal().unwrap().expect("block 2");
    for (n, value) in [(0u8, 10u64), (1, 11), (2, 12)] {
        assert_eq!(latest_balance(&f.node, recipient(n)), U256::from(value));
    }
    verify_by_replay(f);
}

#[test]
fn a_commit_that_landed_but_reported_an_error_is_not_committed_twice() {
    let f = fixture(None);
    let (h0, raw0) = transfer(&f.key, 0, recipient(0), 10);
    f.node.submit_raw(&raw0).unwrap();
    f.node
        .chain()
        .store()
        .inject_commit_fault(&[CommitFault::ErrorAfterCommit]);
    // The store says the commit failed, but the block is there: the seal reads it back and
    // reports it sealed, and the pending block is cleared rather than written a second time.
    let sealed = f.node.seal().unwrap().expect("block 1 landed");
    assert_eq!((sealed.number, sealed.txs), (1, 1));
    assert_eq!(head(&f.node), 1);
    assert!(pending_hashes(&f.node).is_empty());

    let (h1, raw1) = transfer(&f.key, 1, recipient(1), 11);
    f.node.submit_raw(&raw1).unwrap();
    let sealed = f.node.seal().unwrap().expect("block 2");
    assert_eq!((sealed.number, sealed.txs), (2, 1));
    let store = f.node.chain().store().clone();
    assert_eq!(store.block(1).unwrap().unwrap().tx_hashes, vec![h0]);
    assert_eq!(store.block(2).unwrap().unwrap().tx_hashes, vec![h1]);
    assert_eq!(latest_balance(&f.node, recipient(0)), U256::from(10u64));
    assert_eq!(latest_balance(&f.node, recipient(1)), U256::from(11u64));
    drop(store);
    verify_by_replay(f);
}

#[test]
fn state_reads_still_work_after_a_panicking_transaction() {
    // The chain lock is not left poisoned in a way that breaks later requests.
    let f = fixture(None);
    let (h0, raw0) = transfer(&f.key, 0, recipient(0), 10);
    f.node.chain().inject_panic(h0);
    let _ = catch_unwind(AssertUnwindSafe(|| f.node.submit_raw(&raw0)));
    assert!(f.node.chain().pending_writes().is_none(), "no block opened");
    let store = f.node.chain().store().clone();
    assert!(bank::account(&*store, &f.key.address()).is_ok());
    assert!(store.get(b"no such key").unwrap().is_none());
}

/// Runs the sequencer (long block time) with a stop signal sent at once, as a shutdown does.
fn stop_sequencer(node: &Arc<Node>) -> Result<(), openledger_node::ChainError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(node.clone().run_sequencer(async {}))
}

#[test]
fn stopping_seals_what_was_acknowledged_and_refuses_later_transactions() {
    let f = fixture(None);
    let (h0, raw0) = transfer(&f.key, 0, recipient(0), 10);
    assert_eq!(f.node.submit_raw(&raw0).unwrap(), h0);
    stop_sequencer(&f.node).expect("the final seal succeeds");
    assert!(f.node.chain().store().tx(&h0).unwrap().is_some(), "sealed");

    // A request still in flight after the final seal is refused, never acknowledged and dropped.
    let (_, raw1) = transfer(&f.key, 1, recipient(1), 11);
    let err = f.node.submit_raw(&raw1).expect_err("refused after close");
    assert!(
        matches!(err, openledger_node::ChainError::ShuttingDown),
        "{err}"
    );
    assert!(pending_hashes(&f.node).is_empty());
    verify_by_replay(f);
}

#[test]
fn a_final_seal_that_keeps_failing_names_the_unsealed_transactions() {
    let f = fixture(None);
    let (h0, raw0) = transfer(&f.key, 0, recipient(0), 10);
    f.node.submit_raw(&raw0).unwrap();
    f.node
        .chain()
        .store()
        .inject_commit_fault(&[CommitFault::DiskFull; 3]);
    let err = stop_sequencer(&f.node).expect_err("every final attempt fails");
    let msg = err.to_string();
    assert!(
        msg.contains("1 acknowledged transactions could not be sealed")
            && msg.contains(&h0.to_string()),
        "{msg}"
    );
    assert_eq!(
        pending_hashes(&f.node),
        vec![h0],
        "kept pending, not dropped"
    );
}
