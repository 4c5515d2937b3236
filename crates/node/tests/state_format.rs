//! A node records the state format it writes a database in and refuses, with a message saying
//! what to do, to open (or verify) one written in another format or by a build from before
//! formats were recorded: its blocks would replay to other state roots. A database holding only
//! its genesis block gets the format recorded.

mod common;

use alloy_primitives::{keccak256, Address, U256};
use alloy_signer_local::PrivateKeySigner;
use openledger_node::{chain, sequencer::Node, Chain, NodeConfig};
use openledger_state::STATE_FORMAT;
use openledger_store::Store;
use openledger_types::{units::one_open, Genesis};
use std::path::{Path, PathBuf};

const CHAIN_ID: u64 = 4244;

/// A new chain directory: its key, genesis (the key funded) and database path, not yet opened.
fn new_chain(seed: &str) -> (tempfile::TempDir, PrivateKeySigner, Genesis, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKeySigner::from_bytes(&keccak256(seed)).unwrap();
    let genesis = Genesis::with_accounts(
        CHAIN_ID,
        1,
        &[key.address()],
        U256::from(10u64) * one_open(),
    )
    .unwrap();
    let db = dir.path().join("chain.redb");
    (dir, key, genesis, db)
}

fn set_format(db: &Path, format: Option<u64>) {
    Store::open(db).unwrap().set_state_format(format).unwrap();
}

fn format_of(db: &Path) -> Option<u64> {
    Store::open(db).unwrap().state_format().unwrap()
}

#[test]
fn a_database_of_another_state_format_is_refused_with_what_to_do() {
    let (dir, key, genesis, db) = new_chain("state format");
    {
        let chain = Chain::open(&db, &genesis, false).unwrap();
        let node = Node::new(chain, NodeConfig::default(), &dir.path().join("blobs")).unwrap();
        let (_, raw) = common::transfer(&key, CHAIN_ID, 0, Address::repeat_byte(0xa1), 1_000);
        node.submit_raw(&raw).unwrap();
        node.seal().unwrap().expect("block 1");
    }
    assert_eq!(
        format_of(&db),
        Some(STATE_FORMAT),
        "a new database records its format"
    );
    Chain::open(&db, &genesis, false).expect("this build's own database opens");

    for (format, says) in [
        (
            Some(STATE_FORMAT + 1),
            format!("in state format {}", STATE_FORMAT + 1),
        ),
        (None, "before state formats were recorded".to_string()),
    ] {
        set_format(&db, format);
        let e = Chain::open(&db, &genesis, false)
            .err()
            .expect("a database of another format is refused");
        let msg = e.to_string();
        for part in [
            says.as_str(),
            &format!("state format {STATE_FORMAT}"),
            "openledger init --force",
            &db.display().to_string(),
        ] {
            assert!(msg.contains(part), "{msg:?} does not say {part:?}");
        }
        let e = chain::verify(&db, &genesis, |_, _| {}).expect_err("verify refuses it too");
        assert!(e.to_string().contains(&says), "{e}");
        assert_eq!(format_of(&db), format, "refusing it changed nothing");
    }
}

#[test]
fn a_database_holding_only_its_genesis_gets_the_format_recorded() {
    let (_dir, _, genesis, db) = new_chain("genesis only");
    drop(Chain::open(&db, &genesis, false).unwrap());
    set_format(&db, None);
    drop(Chain::open(&db, &genesis, false).expect("a genesis-only database opens"));
    assert_eq!(format_of(&db), Some(STATE_FORMAT));
}
