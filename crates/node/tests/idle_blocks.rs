//! Time passes on chain without traffic, and governance changes apply at once:
//!
//! - an idle sequencer seals empty blocks every block time (as OP Stack does); they carry the
//!   time forward and verify by replay like any other block;
//! - a transaction that changes the governed parameters (an executed proposal) puts them in
//!   force for the very next transaction, in the same block.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_node::{chain, sequencer::Node, Chain, ChainError, NodeConfig};
use openledger_state::{modules::params, verify_raw, ExecError};
use openledger_types::{
    abi::{IGovernor, IParams, IStaking},
    modules::{GOVERNOR, PARAMS, STAKING},
    params::GovernanceParams,
    units::one_open,
    Genesis,
};
use std::time::{Duration, Instant};

const CHAIN_ID: u64 = 4244;

fn key(i: u8) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&keccak256([b'i', i])).unwrap()
}

fn genesis() -> Genesis {
    let mut g = Genesis::with_accounts(
        CHAIN_ID,
        1_000,
        &[key(0).address(), key(1).address()],
        U256::from(100_000u64) * one_open(),
    )
    .unwrap();
    g.params.governance = GovernanceParams {
        voting_delay_secs: 1,
        voting_period_secs: 5,
        proposal_threshold: one_open(),
        timelock_delay_secs: 2,
        ..GovernanceParams::default()
    };
    g
}

fn signed(who: u8, nonce: u64, to: Address, value: U256, data: Vec<u8>) -> Vec<u8> {
    let tx = TxEip1559 {
        chain_id: CHAIN_ID,
        nonce,
        gas_limit: 5_000_000,
        max_fee_per_gas: 2_000_000_000,
        max_priority_fee_per_gas: 0,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input: data.into(),
    };
    let sig = key(who).sign_hash_sync(&tx.signature_hash()).unwrap();
    TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
}

struct Sender {
    nonces: [u64; 2],
}

impl Sender {
    fn submit(
        &mut self,
        chain: &mut Chain,
        who: u8,
        to: Address,
        value: U256,
        data: Vec<u8>,
        now: u64,
    ) -> Result<(), ChainError> {
        let raw = signed(who, self.nonces[who as usize], to, value, data);
        let tx = verify_raw(&raw, CHAIN_ID, 1 << 20).unwrap();
        chain.submit(tx, now)?;
        self.nonces[who as usize] += 1;
        Ok(())
    }
}

#[test]
fn idle_blocks_are_sealed_empty_and_verify_by_replay() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chain.redb");
    let g = genesis();
    let chain = Chain::open(&db, &g, false).unwrap();
    let node = Node::new(chain, NodeConfig::default(), &dir.path().join("blobs")).unwrap();
    let e1 = node.seal_or_empty().unwrap().expect("an empty block");
    assert_eq!((e1.number, e1.txs), (1, 0));
    let raw = signed(0, 0, Address::repeat_byte(7), U256::from(5u64), vec![]);
    node.submit_raw(&raw).unwrap();
    let b2 = node.seal_or_empty().unwrap().expect("the pending block");
    assert_eq!(
        (b2.number, b2.txs),
        (2, 1),
        "pending transactions are sealed, not skipped"
    );
    assert!(
        node.seal().unwrap().is_none(),
        "a plain seal makes no empty block"
    );
    let e3 = node.seal_or_empty().unwrap().unwrap();
    assert_eq!((e3.number, e3.txs), (3, 0));
    let head = node.chain().head().unwrap();
    assert!(head.tx_hashes.is_empty());
    assert!(head.header.timestamp >= g.timestamp);
    drop(node);
    assert_eq!(chain::verify(&db, &g, |_, _| {}).unwrap(), 3);
}

#[test]
fn the_sequencer_seals_empty_blocks_while_idle_but_not_in_dev_mode() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for dev in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::open(&dir.path().join("chain.redb"), &genesis(), false).unwrap();
        let config = NodeConfig {
            block_time_ms: 20,
            dev,
            ..NodeConfig::default()
        };
        let node = Node::new(chain, config, &dir.path().join("blobs")).unwrap();
        let watched = node.clone();
        let blocks = rt.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(if dev { 1 } else { 60 });
            let stop = async move {
                loop {
                    let head = watched.chain().head().unwrap().header.number;
                    if head >= 3 || Instant::now() > deadline {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            node.clone().run_sequencer(stop).await.unwrap();
            node.chain().head().unwrap().header.number
        });
        if dev {
            assert_eq!(blocks, 0, "dev mode seals blocks only for transactions");
        } else {
            assert!(blocks >= 3, "idle blocks were sealed: head {blocks}");
        }
    }
}

#[test]
fn a_parameter_change_applies_from_the_next_transaction_in_the_same_block() {
    let dir = tempfile::tempdir().unwrap();
    let mut chain = Chain::open(&dir.path().join("chain.redb"), &genesis(), false).unwrap();
    let mut s = Sender { nonces: [0, 0] };
    let stake = IStaking::stakeCall {}.abi_encode();
    let t = 1_000;
    s.submit(
        &mut chain,
        0,
        STAKING,
        U256::from(10u64) * one_open(),
        stake.clone(),
        t,
    )
    .unwrap();
    chain.seal().unwrap();

    let set = IParams::setParamCall {
        key: "min_stake".into(),
        jsonValue: "\"2\"".into(),
    }
    .abi_encode();
    let (targets, values, calldatas) = (vec![PARAMS], vec![U256::ZERO], vec![Bytes::from(set)]);
    let description = "min stake 2".to_string();
    let propose = IGovernor::proposeCall {
        targets: targets.clone(),
        values: values.clone(),
        calldatas: calldatas.clone(),
        description: description.clone(),
    };
    s.submit(
        &mut chain,
        0,
        GOVERNOR,
        U256::ZERO,
        propose.abi_encode(),
        t + 1,
    )
    .unwrap();
    chain.seal().unwrap();
    let id = openledger_state::modules::governor::hash_proposal(
        &targets,
        &values,
        &calldatas,
        keccak256(description.as_bytes()),
    );
    let vote = IGovernor::castVoteCall {
        proposalId: id,
        support: 1,
    };
    s.submit(
        &mut chain,
        0,
        GOVERNOR,
        U256::ZERO,
        vote.abi_encode(),
        t + 3,
    )
    .unwrap();
    chain.seal().unwrap();
    let queue = IGovernor::queue_1Call { proposalId: id };
    s.submit(
        &mut chain,
        0,
        GOVERNOR,
        U256::ZERO,
        queue.abi_encode(),
        t + 8,
    )
    .unwrap();
    chain.seal().unwrap();

    // One block: a 1 OPEN stake is fine, then the proposal raises the minimum to 2 OPEN, then
    // the same stake is refused.
    let one = one_open();
    s.submit(&mut chain, 1, STAKING, one, stake.clone(), t + 10)
        .unwrap();
    let execute = IGovernor::execute_1Call { proposalId: id };
    s.submit(
        &mut chain,
        0,
        GOVERNOR,
        U256::ZERO,
        execute.abi_encode(),
        t + 10,
    )
    .unwrap();
    match s.submit(&mut chain, 1, STAKING, one, stake, t + 10) {
        Err(ChainError::Exec(ExecError::Invalid(m))) => {
            assert!(m.contains("below the minimum"), "{m}")
        }
        other => panic!("the new minimum stake was not in force: {other:?}"),
    }
    assert_eq!(chain.params().unwrap().min_stake, U256::from(2u64) * one);
    chain.seal().unwrap();
    let stored = params::load(&**chain.store()).unwrap();
    assert_eq!(stored.min_stake, U256::from(2u64) * one);
}
