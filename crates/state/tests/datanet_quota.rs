//! The datanet module's per-contributor daily quota and per-datanet contribution listing: the
//! quota refuses the contribution over the limit with a message saying so, changes nothing when
//! it refuses, and resets on the next UTC day; `contributionsOf` lists a datanet's contributions
//! in submission order.

mod common;

use alloy_primitives::{keccak256, U256};
use alloy_sol_types::SolCall;
use common::World as Chain;
use openledger_state::modules::datanet;
use openledger_types::{abi::IDatanet, modules};
use std::ops::{Deref, DerefMut};

/// Two users with 1,000 OPEN each, on a chain whose daily quota is `max_contributions`
/// contributions and `max_bytes` bytes, at 10:00 UTC on some day.
struct World(Chain);

impl Deref for World {
    type Target = Chain;
    fn deref(&self) -> &Chain {
        &self.0
    }
}

impl DerefMut for World {
    fn deref_mut(&mut self) -> &mut Chain {
        &mut self.0
    }
}

impl World {
    fn new(max_contributions: u32, max_bytes: u64) -> World {
        let mut chain = Chain::new("quota user", 2, 1000, |p| {
            p.max_daily_contributions = max_contributions;
            p.max_daily_contribution_bytes = max_bytes;
        });
        chain.env.timestamp = 20_000 * 86_400 + 36_000;
        World(chain)
    }

    fn send(&mut self, who: usize, data: Vec<u8>) -> Result<(), String> {
        self.0
            .send(who, modules::DATANET, U256::ZERO, data)
            .map_err(|e| e.to_string())
    }

    fn create(&mut self, who: usize) {
        self.send(who, common::public_datanet("d").abi_encode())
            .unwrap();
    }

    fn contribute(
        &mut self,
        who: usize,
        datanet: u64,
        seed: u64,
        bytes: u64,
    ) -> Result<(), String> {
        self.send(
            who,
            IDatanet::contributeCall {
                datanetId: datanet,
                rowsRoot: keccak256(seed.to_be_bytes()),
                rowCount: 1,
                byteSize: bytes,
                score: 9000,
                metadataUri: String::new(),
            }
            .abi_encode(),
        )
    }
}

#[test]
fn the_daily_contribution_count_is_capped_per_datanet_and_resets_the_next_day() {
    let mut w = World::new(2, 1 << 30);
    w.create(0);
    w.create(0);
    w.contribute(1, 1, 1, 100).unwrap();
    w.contribute(1, 1, 2, 100).unwrap();
    let before = w.kv.clone();
    let err = w.contribute(1, 1, 3, 100).unwrap_err();
    assert!(err.contains("daily quota reached"), "{err}");
    assert!(err.contains("limit 2"), "{err}");
    assert_eq!(before, w.kv, "a refused contribution changes nothing");
    // Another datanet has its own quota; another contributor has theirs.
    w.contribute(1, 2, 4, 100).unwrap();
    w.contribute(0, 1, 5, 100).unwrap();
    // The next UTC day starts afresh.
    w.env.timestamp += 14 * 3600;
    w.contribute(1, 1, 3, 100).unwrap();
}

#[test]
fn the_daily_byte_quota_counts_every_contribution_of_the_day() {
    let mut w = World::new(100, 1000);
    w.create(0);
    w.contribute(1, 1, 1, 600).unwrap();
    let err = w.contribute(1, 1, 2, 401).unwrap_err();
    assert!(err.contains("1000 bytes a day"), "{err}");
    assert!(err.contains("600 used today"), "{err}");
    w.contribute(1, 1, 2, 400).unwrap();
}

#[test]
fn contributions_are_listed_per_datanet_in_submission_order() {
    let mut w = World::new(100, 1 << 30);
    w.create(0);
    w.create(0);
    for (i, d) in [1u64, 2, 1, 1, 2].into_iter().enumerate() {
        w.contribute(i % 2, d, i as u64, 10).unwrap();
    }
    assert_eq!(datanet::contribution_count_of(&w.kv, 1).unwrap(), 3);
    assert_eq!(
        datanet::contribution_ids(&w.kv, 1, 0, 10).unwrap(),
        vec![1, 3, 4]
    );
    assert_eq!(
        datanet::contribution_ids(&w.kv, 2, 0, 10).unwrap(),
        vec![2, 5]
    );
    assert_eq!(datanet::contribution_ids(&w.kv, 1, 1, 1).unwrap(), vec![3]);
    assert!(datanet::contribution_ids(&w.kv, 1, 7, 10)
        .unwrap()
        .is_empty());
    assert!(datanet::contribution_ids(&w.kv, 9, 0, 10)
        .unwrap()
        .is_empty());
}
