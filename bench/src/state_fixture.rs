//! The state fixture the ledger-state benches share (`staking-speed`, `governance_speed`; each
//! includes this file with `mod state_fixture;`): funded stakers at genesis, a read-counting view
//! of the state, the calls that make a paid adapter ready for inferences, and the tables of
//! key-value traffic and time per operation.

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_state::{genesis::genesis_writes, Env, MemKv, StateRead, StorageError};
use openledger_types::{
    abi::{IDatanet, IInference, IModel},
    modules::{DATANET, INFERENCE, MODEL},
    units::one_open,
    Genesis,
};
use std::cell::Cell;

/// The chain id of every bench chain.
pub const CHAIN_ID: u64 = 1;

/// The committed state seen through a read counter.
pub struct Counted<'a> {
    pub kv: &'a MemKv,
    pub reads: &'a Cell<u64>,
}

impl StateRead for Counted<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.reads.set(self.reads.get() + 1);
        self.kv.get(key)
    }
}

/// `n` staker addresses, the same in every run.
pub fn staker_addresses(n: usize) -> Vec<Address> {
    (0..n)
        .map(|i| Address::from_slice(&keccak256(format!("staker {i}"))[12..]))
        .collect()
}

/// A genesis giving each of `stakers` 1,000 OPEN, with no daily free-volume limit on agents
/// (the operator records every receipt itself).
pub fn genesis(stakers: &[Address]) -> Genesis {
    let mut genesis =
        Genesis::with_accounts(CHAIN_ID, 1_000, stakers, U256::from(1_000u64) * one_open())
            .expect("a valid genesis");
    genesis.params.agent.agent_free_tokens_per_day = u64::MAX;
    genesis
}

/// The state right after `genesis`, and the environment of block 1 at timestamp 1,000.
pub fn start(genesis: &Genesis) -> (MemKv, Env) {
    let mut kv = MemKv::default();
    kv.apply(genesis_writes(genesis).expect("genesis applies"));
    let env = Env {
        chain_id: CHAIN_ID,
        block_number: 1,
        timestamp: 1_000,
    };
    (kv, env)
}

/// Moves the clock one second and one block on.
pub fn tick(env: &mut Env) {
    env.timestamp += 1;
    env.block_number += 1;
}

/// The calls (to, value, data), all sent by one owner, that make a datanet with one approved
/// contribution, a base model, an adapter on it and credit for the owner, who records its own
/// inferences: ready for `recordInference`.
pub fn inference_setup_calls() -> Vec<(Address, U256, Vec<u8>)> {
    vec![
        (
            DATANET,
            U256::ZERO,
            IDatanet::createDatanetCall {
                name: "bench".into(),
                summary: String::new(),
                description: String::new(),
                tags: vec![],
                dataType: 0,
                licence: "CC0".into(),
                permissioned: false,
            }
            .abi_encode(),
        ),
        (
            DATANET,
            U256::ZERO,
            IDatanet::contributeCall {
                datanetId: 1,
                rowsRoot: keccak256(b"rows"),
                rowCount: 10,
                byteSize: 1000,
                score: 9000,
                metadataUri: String::new(),
            }
            .abi_encode(),
        ),
        (
            DATANET,
            U256::ZERO,
            IDatanet::approveCall { contributionId: 1 }.abi_encode(),
        ),
        (
            MODEL,
            U256::ZERO,
            IModel::registerBaseModelCall {
                modelHash: keccak256(b"base"),
                name: "base".into(),
            }
            .abi_encode(),
        ),
        (
            MODEL,
            U256::ZERO,
            IModel::registerAdapterCall {
                baseModelId: 1,
                name: "bench".into(),
                datanetIds: vec![1],
                datanetVersions: vec![1],
                trainingConfigHash: B256::repeat_byte(1),
                adapterHash: B256::repeat_byte(2),
                attributionIndexRoot: B256::repeat_byte(3),
            }
            .abi_encode(),
        ),
        (
            INFERENCE,
            U256::from(500u64) * one_open(),
            IInference::depositCall {}.abi_encode(),
        ),
    ]
}

/// What one case measured, for the tables.
pub struct Row {
    /// The size column ("100", "100000:100").
    pub label: String,
    /// Entries in the case's key-value map at the end.
    pub kv_entries: usize,
    /// Key-value reads and writes per operation, per operation kind.
    pub io: Vec<(f64, f64)>,
    /// µs per operation in each round, per operation kind.
    pub times: Vec<Vec<f64>>,
}

/// Prints the key-value traffic table, then the best- and median-round time tables: one row
/// per case, one column per entry of `ops`; `label_width` and `cell_width` size the columns.
pub fn print_tables(ops: &[&str], rows: &[Row], label_width: usize, cell_width: usize) {
    let header = || {
        println!(
            "{:>label_width$} {:>10}{}",
            "stakers",
            "kv entries",
            ops.iter()
                .map(|n| format!("{n:>cell_width$}"))
                .collect::<String>()
        );
    };
    println!("\nkey-value reads / writes per operation:");
    header();
    for row in rows {
        let cells: String = row
            .io
            .iter()
            .map(|(r, w)| format!("{:>cell_width$}", format!("{r:.1} / {w:.1}")))
            .collect();
        println!("{:>label_width$} {:>10}{cells}", row.label, row.kv_entries);
    }
    for (label, pick) in [("best round", 0.0), ("median round", 0.5)] {
        println!("\nµs per operation, {label}:");
        header();
        for row in rows {
            let cells: String = row
                .times
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.sort_by(f64::total_cmp);
                    let i = ((r.len() - 1) as f64 * pick) as usize;
                    format!("{:>cell_width$.2}", r[i])
                })
                .collect();
            println!("{:>label_width$} {:>10}{cells}", row.label, row.kv_entries);
        }
    }
}
