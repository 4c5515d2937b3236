//! The cost of a governance vote and of an inference settlement with 100, 10,000 and 100,000
//! stakers, through the real executor (`openledger_state::apply_tx`: nonce, gas, the module
//! call, its writes applied to the in-memory state). Votes read the voter's checkpointed votes at
//! the snapshot (a binary search over one account's checkpoints) and settlement adds the
//! stakers' share to a reward-per-share pool, so both should cost the same whatever the number
//! of stakers; what grows is only the key-value map under them (a B-tree: O(log entries)).
//!
//! Signature recovery is skipped (as in the simulator: each transaction is built with its
//! sender and a placeholder signature), since it costs the same at every size.
//!
//! Usage: `cargo run --release -p openledger-bench --bin governance_speed -- [--stakers 100,10000,100000]
//! [--ops 1000] [--rounds 5]`

mod flags;
mod state_fixture;

use alloy_consensus::{Signed, TxEip1559, TxEnvelope};
use alloy_primitives::{keccak256, Address, Signature, TxKind, B256, U256};
use alloy_sol_types::SolCall;
use openledger_state::{apply_tx, modules::params, Env, ExecError, MemKv, VerifiedTx};
use openledger_types::{
    abi::{IGovernor, IInference, IParams, IStaking},
    modules::{GOVERNOR, INFERENCE, PARAMS, STAKING},
    units::one_open,
};
use state_fixture::{Counted, CHAIN_ID};
use std::{cell::Cell, collections::HashMap, time::Instant};

/// Records in one batched settlement transaction.
const BATCH: usize = 64;

/// A chain driven by transactions through `apply_tx`.
struct Chain {
    kv: MemKv,
    env: Env,
    nonces: HashMap<Address, u64>,
    seq: u64,
    /// Key-value reads and writes of the executed transactions (parameter loads excluded).
    reads: Cell<u64>,
    writes: u64,
}

impl Chain {
    fn tick(&mut self) {
        state_fixture::tick(&mut self.env);
    }

    /// Executes a transaction from `from` and applies its writes.
    fn send(
        &mut self,
        from: Address,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<(), ExecError> {
        let params = params::load(&self.kv)?;
        let nonce = self.nonces.entry(from).or_default();
        let tx = TxEip1559 {
            chain_id: CHAIN_ID,
            nonce: *nonce,
            gas_limit: params.block_gas_limit,
            max_fee_per_gas: params.min_gas_price_wei as u128,
            max_priority_fee_per_gas: 0,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input: data.into(),
        };
        self.seq += 1;
        let hash = B256::from(U256::from(self.seq));
        let sig = Signature::new(U256::from(1u8), U256::from(1u8), false);
        let tx = VerifiedTx {
            hash,
            sender: from,
            envelope: TxEnvelope::Eip1559(Signed::new_unchecked(tx, sig, hash)),
        };
        let counted = Counted {
            kv: &self.kv,
            reads: &self.reads,
        };
        let out = apply_tx(&counted, &self.env, &params, &tx)?;
        *nonce += 1;
        self.writes += out.writes.len() as u64;
        self.kv.apply(out.writes);
        Ok(())
    }
}

/// One chain under test.
struct Case {
    n: usize,
    chain: Chain,
    stakers: Vec<Address>,
    /// Proposals open for voting; vote `k` is staker `k % n` on proposal `k / n`.
    proposals: Vec<U256>,
    votes: usize,
    requests: u64,
}

impl Case {
    /// `n` stakers holding 1,000 OPEN and staking 10 each (one per second), staker 0 owning a datanet, an adapter and
    /// credit for inferences, and enough open proposals for `votes` votes.
    fn new(n: usize, votes: usize) -> Case {
        let stakers = state_fixture::staker_addresses(n);
        let mut genesis = state_fixture::genesis(&stakers);
        genesis.params.governance.proposal_threshold = one_open();
        genesis.params.governance.voting_delay_secs = 1;
        genesis.params.governance.voting_period_secs = u32::MAX as u64;
        let (kv, env) = state_fixture::start(&genesis);
        let mut chain = Chain {
            kv,
            env,
            nonces: HashMap::new(),
            seq: 0,
            reads: Cell::new(0),
            writes: 0,
        };
        let ten = U256::from(10u64) * one_open();
        for a in &stakers {
            chain.tick();
            chain
                .send(*a, STAKING, ten, IStaking::stakeCall {}.abi_encode())
                .expect("stake");
        }
        let owner = stakers[0];
        inference_setup(&mut chain, owner);
        chain.tick();
        let proposals = (0..votes.div_ceil(n).max(1))
            .map(|i| {
                let description = format!("proposal {i}");
                let call = IParams::setParamCall {
                    key: "min_stake".into(),
                    jsonValue: "\"2\"".into(),
                }
                .abi_encode();
                let propose = IGovernor::proposeCall {
                    targets: vec![PARAMS],
                    values: vec![U256::ZERO],
                    calldatas: vec![call.clone().into()],
                    description: description.clone(),
                };
                chain
                    .send(owner, GOVERNOR, U256::ZERO, propose.abi_encode())
                    .expect("propose");
                let id = IGovernor::hashProposalCall {
                    targets: vec![PARAMS],
                    values: vec![U256::ZERO],
                    calldatas: vec![call.into()],
                    descriptionHash: keccak256(description.as_bytes()),
                };
                hash_proposal(&id)
            })
            .collect();
        // Past the voting delay: the proposals are Active.
        chain.tick();
        chain.tick();
        Case {
            n,
            chain,
            stakers,
            proposals,
            votes: 0,
            requests: 0,
        }
    }

    /// The next voter casts a vote for on its proposal.
    fn vote(&mut self) {
        let (voter, proposal) = (self.votes % self.n, self.votes / self.n);
        self.votes += 1;
        self.chain.tick();
        let data = IGovernor::castVoteCall {
            proposalId: self.proposals[proposal],
            support: 1,
        }
        .abi_encode();
        self.chain
            .send(self.stakers[voter], GOVERNOR, U256::ZERO, data)
            .expect("castVote");
    }

    /// One transaction recording `records` inferences of staker 0's adapter and settling them
    /// at once (platform, model owner, the stakers' pool and the contributor paid).
    fn settle(&mut self, records: usize) {
        self.chain.tick();
        let owner = self.stakers[0];
        let records = (0..records)
            .map(|_| {
                self.requests += 1;
                IInference::InferenceRecord {
                    requestId: keccak256(self.requests.to_be_bytes()),
                    caller: owner,
                    adapterId: 1,
                    promptTokens: 100,
                    completionTokens: 200,
                    top: vec![IInference::Attribution {
                        contributionId: 1,
                        weightPpm: 600_000,
                    }],
                    attributionRoot: B256::repeat_byte(4),
                }
            })
            .collect();
        let data = IInference::recordInferencesCall {
            records,
            settleNow: true,
        }
        .abi_encode();
        self.chain
            .send(owner, INFERENCE, U256::ZERO, data)
            .expect("recordInferences + settle");
    }
}

/// OZ's proposal id, from the governor's own `hashProposal` encoding.
fn hash_proposal(call: &IGovernor::hashProposalCall) -> U256 {
    use alloy_sol_types::SolValue;
    U256::from_be_bytes(
        keccak256(
            (
                call.targets.clone(),
                call.values.clone(),
                call.calldatas.clone(),
                call.descriptionHash,
            )
                .abi_encode_params(),
        )
        .0,
    )
}

/// A datanet with one approved contribution by `owner`, a base model, an adapter on it and
/// credit for `owner`, who records its own inferences (one transaction per block).
fn inference_setup(chain: &mut Chain, owner: Address) {
    for (to, value, data) in state_fixture::inference_setup_calls() {
        chain.tick();
        chain
            .send(owner, to, value, data)
            .expect("inference set-up");
    }
}

/// The operations measured, in the order of the table's columns.
const OPS: [&str; 3] = ["castVote", "settle 1 (tx)", "settle 64 (per record)"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = flags::arg(&args, "--stakers", "100,10000,100000".to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("--stakers: comma-separated counts"))
        .collect();
    let ops: usize = flags::arg(&args, "--ops", 1000);
    let rounds: usize = flags::arg(&args, "--rounds", 5);
    let t = Instant::now();
    let mut cases: Vec<Case> = sizes.iter().map(|&n| Case::new(n, ops * rounds)).collect();
    println!(
        "governance_speed: {rounds} rounds of {ops} transactions through apply_tx, every size in turn within each round (set-up {:.1} s)",
        t.elapsed().as_secs_f64()
    );
    // times[case][op]: µs per operation in each round.
    let mut times = vec![vec![Vec::with_capacity(rounds); OPS.len()]; cases.len()];
    // io[case][op]: key-value reads and writes per operation (the same in every round).
    let mut io = vec![vec![(0.0, 0.0); OPS.len()]; cases.len()];
    for _ in 0..rounds {
        for op in 0..OPS.len() {
            for (c, case) in cases.iter_mut().enumerate() {
                let (reads, writes) = (case.chain.reads.get(), case.chain.writes);
                let t = Instant::now();
                let per = match op {
                    0 => {
                        (0..ops).for_each(|_| case.vote());
                        ops
                    }
                    1 => {
                        (0..ops).for_each(|_| case.settle(1));
                        ops
                    }
                    _ => {
                        let txs = (ops / BATCH).max(1);
                        (0..txs).for_each(|_| case.settle(BATCH));
                        txs * BATCH
                    }
                };
                times[c][op].push(t.elapsed().as_secs_f64() * 1e6 / per as f64);
                io[c][op] = (
                    (case.chain.reads.get() - reads) as f64 / per as f64,
                    (case.chain.writes - writes) as f64 / per as f64,
                );
            }
        }
    }
    let rows: Vec<state_fixture::Row> = cases
        .iter()
        .zip(io.into_iter().zip(times))
        .map(|(case, (io, times))| state_fixture::Row {
            label: case.n.to_string(),
            kv_entries: case.chain.kv.len(),
            io,
            times,
        })
        .collect();
    state_fixture::print_tables(&OPS, &rows, 8, 24);
}
