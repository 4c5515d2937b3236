//! The governor through signed transactions, as a chain runs it: a parameter proposal passes
//! end to end (propose → vote → queue → execute after the timelock) and the next settlement
//! uses the new split; votes are read at the snapshot (stake added after it cannot vote);
//! threshold, quorum and cancel rules; execute too early, twice, of a defeated or expired
//! proposal refused; castVoteBySig with a real EIP-712 signature, a replay refused; a failing
//! call refuses the whole execute; the governed setters refuse every other sender.
//!
//! Parameters are read from state before every transaction, as the node does, so a change
//! applies from the next transaction.

mod common;

use alloy_primitives::{keccak256, Address, Bytes, Log, B256, U256};
use alloy_signer::SignerSync;
use alloy_sol_types::{eip712_domain, sol, SolCall, SolEvent, SolStruct, SolValue};
use common::{World, CHAIN_ID};
use openledger_state::{apply_tx, executor::simulate_call, modules::params, verify_raw, ExecError};
use openledger_types::{
    abi::{IBank, IDatanet, IGovernor, IInference, IModel, IParams, IStaking},
    modules::{self, GOVERNOR, PARAMS, TREASURY},
    params::GovernanceParams,
    units::one_open,
    Params,
};

use IGovernor::ProposalState as S;

const DELAY: u64 = 10;
const PERIOD: u64 = 100;
const TIMELOCK: u64 = 50;
const GRACE: u64 = 1000;
const START: u64 = 1_000;

/// Users: 0 proposes (20,000 OPEN staked), 1 and 2 vote (30,000 and 50,000), 3 holds 500 staked,
/// 4 stakes nothing (the relayer, the late staker).
struct Gov {
    w: World,
}

fn open(n: u64) -> U256 {
    U256::from(n) * one_open()
}

impl Gov {
    fn new() -> Gov {
        let w = World::new("governor", 5, 1_000_000, |p| {
            p.governance = GovernanceParams {
                voting_delay_secs: DELAY,
                voting_period_secs: PERIOD,
                proposal_threshold: open(10_000),
                quorum_bps: 2_000,
                timelock_delay_secs: TIMELOCK,
                timelock_grace_secs: GRACE,
                ..GovernanceParams::default()
            };
        });
        let mut g = Gov { w };
        g.at(START);
        for (who, amount) in [(0, 20_000), (1, 30_000), (2, 50_000), (3, 500)] {
            g.stake(who, amount);
        }
        g.at(START + 1);
        g
    }

    fn at(&mut self, t: u64) {
        self.w.env.timestamp = t;
        self.w.env.block_number += 1;
    }

    fn now(&self) -> u64 {
        self.w.env.timestamp
    }

    fn params(&self) -> Params {
        params::load(&self.w.kv).expect("params in state")
    }

    /// A signed transaction from `who`, executed with the parameters in state; its logs.
    fn tx_value(
        &mut self,
        who: usize,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<Vec<Log>, ExecError> {
        let raw = self.w.sign(who, self.w.nonce(who), to, value, data);
        let tx = verify_raw(&raw, CHAIN_ID, 1 << 20).expect("verifies");
        let out = apply_tx(&self.w.kv, &self.w.env, &self.params(), &tx)?;
        self.w.kv.apply(out.writes);
        Ok(out.logs)
    }

    fn tx<C: SolCall>(&mut self, who: usize, to: Address, call: C) -> Result<Vec<Log>, ExecError> {
        self.tx_value(who, to, U256::ZERO, call.abi_encode())
    }

    fn view<C: SolCall>(&self, to: Address, call: C) -> Result<C::Return, ExecError> {
        let (out, _, _) = simulate_call(
            &self.w.kv,
            &self.w.env,
            &self.params(),
            Address::ZERO,
            to,
            U256::ZERO,
            &call.abi_encode(),
        )?;
        Ok(C::abi_decode_returns(&out).expect("return data decodes"))
    }

    fn stake(&mut self, who: usize, amount: u64) {
        self.tx_value(
            who,
            modules::STAKING,
            open(amount),
            IStaking::stakeCall {}.abi_encode(),
        )
        .expect("stake");
    }

    fn propose(&mut self, who: usize, p: &Proposal) -> Result<U256, ExecError> {
        let logs = self.tx(
            who,
            GOVERNOR,
            IGovernor::proposeCall {
                targets: p.targets.clone(),
                values: p.values.clone(),
                calldatas: p.calldatas.clone(),
                description: p.description.clone(),
            },
        )?;
        let created = logs
            .iter()
            .find_map(|l| IGovernor::ProposalCreated::decode_log_data(&l.data).ok())
            .expect("ProposalCreated");
        Ok(created.proposalId)
    }

    fn vote(&mut self, who: usize, id: U256, support: u8) -> Result<U256, ExecError> {
        let logs = self.tx(
            who,
            GOVERNOR,
            IGovernor::castVoteWithReasonCall {
                proposalId: id,
                support,
                reason: "because".into(),
            },
        )?;
        let cast = logs
            .iter()
            .find_map(|l| IGovernor::VoteCast::decode_log_data(&l.data).ok())
            .expect("VoteCast");
        assert_eq!(
            (cast.voter, cast.proposalId, cast.support),
            (self.w.addr(who), id, support)
        );
        Ok(cast.weight)
    }

    fn queue(&mut self, who: usize, p: &Proposal) -> Result<Vec<Log>, ExecError> {
        self.tx(
            who,
            GOVERNOR,
            IGovernor::queue_0Call {
                targets: p.targets.clone(),
                values: p.values.clone(),
                calldatas: p.calldatas.clone(),
                descriptionHash: keccak256(p.description.as_bytes()),
            },
        )
    }

    fn execute(&mut self, who: usize, id: U256) -> Result<Vec<Log>, ExecError> {
        self.tx(who, GOVERNOR, IGovernor::execute_1Call { proposalId: id })
    }

    fn state(&self, id: U256) -> S {
        self.view(GOVERNOR, IGovernor::stateCall { proposalId: id })
            .expect("state")
    }

    /// Proposes `p` and passes it: votes for by users 1 and 2, past the deadline.
    fn pass(&mut self, p: &Proposal) -> U256 {
        let g = self.params().governance;
        let id = self.propose(0, p).expect("propose");
        self.at(self.now() + g.voting_delay_secs + 1);
        self.vote(1, id, 1).unwrap();
        self.vote(2, id, 1).unwrap();
        self.at(self.now() + g.voting_period_secs);
        assert_eq!(self.state(id), S::Succeeded);
        id
    }
}

#[derive(Clone)]
struct Proposal {
    targets: Vec<Address>,
    values: Vec<U256>,
    calldatas: Vec<Bytes>,
    description: String,
}

fn proposal(calls: Vec<(Address, Vec<u8>)>, description: &str) -> Proposal {
    Proposal {
        values: vec![U256::ZERO; calls.len()],
        targets: calls.iter().map(|c| c.0).collect(),
        calldatas: calls.into_iter().map(|c| c.1.into()).collect(),
        description: description.into(),
    }
}

fn set_split(platform: u16, owner: u16, stakers: u16, contributors: u16) -> (Address, Vec<u8>) {
    let json = format!(
        r#"{{"platform_bps":{platform},"model_owner_bps":{owner},"stakers_bps":{stakers},"contributors_bps":{contributors}}}"#
    );
    (
        PARAMS,
        IParams::setParamCall {
            key: "fee_split".into(),
            jsonValue: json,
        }
        .abi_encode(),
    )
}

fn set_param(key: &str, value: &str) -> (Address, Vec<u8>) {
    (
        PARAMS,
        IParams::setParamCall {
            key: key.into(),
            jsonValue: value.into(),
        }
        .abi_encode(),
    )
}

fn refused(r: Result<impl std::fmt::Debug, ExecError>, needle: &str) -> String {
    match r {
        Err(e) => {
            let m = e.to_string();
            assert!(m.contains(needle), "expected {needle:?} in: {m}");
            m
        }
        Ok(v) => panic!("expected a refusal containing {needle:?}, got {v:?}"),
    }
}

/// A datanet, an adapter on it and a caller with credit that user 3 may spend as operator;
/// returns a function that records and settles one inference, giving its FeeSettled event.
fn inference_setup(g: &mut Gov) {
    let (owner, contributor, caller, operator) = (4, 3, 2, 3);
    g.tx(owner, modules::DATANET, common::public_datanet("d"))
        .unwrap();
    g.tx(
        contributor,
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
    g.tx(
        owner,
        modules::DATANET,
        IDatanet::approveCall { contributionId: 1 },
    )
    .unwrap();
    g.tx(
        owner,
        modules::MODEL,
        IModel::registerBaseModelCall {
            modelHash: keccak256(b"base"),
            name: "base".into(),
        },
    )
    .unwrap();
    g.tx(
        owner,
        modules::MODEL,
        IModel::registerAdapterCall {
            baseModelId: 1,
            name: "helper".into(),
            datanetIds: vec![1],
            datanetVersions: vec![1],
            trainingConfigHash: keccak256(b"config"),
            adapterHash: keccak256(b"helper"),
            attributionIndexRoot: keccak256(b"index"),
        },
    )
    .unwrap();
    g.tx_value(
        caller,
        modules::INFERENCE,
        open(10),
        IInference::depositCall {}.abi_encode(),
    )
    .unwrap();
    let op = g.w.addr(operator);
    g.tx(
        caller,
        modules::INFERENCE,
        IInference::approveOperatorCall {
            operator: op,
            allowance: open(5),
        },
    )
    .unwrap();
}

fn settle_one(g: &mut Gov, n: u8) -> IInference::FeeSettled {
    let record = IInference::InferenceRecord {
        requestId: keccak256([n]),
        caller: g.w.addr(2),
        adapterId: 1,
        promptTokens: 10,
        completionTokens: 100,
        top: vec![IInference::Attribution {
            contributionId: 1,
            weightPpm: 500_000,
        }],
        attributionRoot: keccak256(b"list"),
    };
    let logs = g
        .tx(
            3,
            modules::INFERENCE,
            IInference::recordInferencesCall {
                records: vec![record],
                settleNow: true,
            },
        )
        .expect("record and settle");
    logs.iter()
        .find_map(|l| IInference::FeeSettled::decode_log_data(&l.data).ok())
        .expect("FeeSettled")
}

#[test]
fn a_parameter_proposal_passes_end_to_end_and_the_next_settlement_uses_the_new_split() {
    let mut g = Gov::new();
    inference_setup(&mut g);
    let before = settle_one(&mut g, 1);
    let fee = before.platform + before.modelOwner + before.stakers + before.contributors;
    // The contributors' pool is contributors_bps of the fee; the one contribution is
    // attributed half of it.
    let paid = |bps: u64| fee * U256::from(bps) / U256::from(10_000) / U256::from(2);
    assert_eq!(before.contributors, paid(5000));

    let p = proposal(
        vec![set_split(1000, 2000, 1000, 6000)],
        "Contributors get 60%",
    );
    let id = g.propose(0, &p).unwrap();
    let manual = U256::from_be_bytes(
        keccak256(
            (
                p.targets.clone(),
                p.values.clone(),
                p.calldatas.clone(),
                keccak256(p.description.as_bytes()),
            )
                .abi_encode_params(),
        )
        .0,
    );
    assert_eq!(id, manual, "the id is OZ's hashProposal");
    let snapshot = START + 1 + DELAY;
    assert_eq!(
        g.view(GOVERNOR, IGovernor::proposalSnapshotCall { proposalId: id })
            .unwrap(),
        U256::from(snapshot)
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::proposalDeadlineCall { proposalId: id })
            .unwrap(),
        U256::from(snapshot + PERIOD)
    );
    assert_eq!(g.state(id), S::Pending);
    refused(g.vote(1, id, 1), "Pending");

    g.at(snapshot + 1);
    assert_eq!(g.state(id), S::Active);
    assert_eq!(g.vote(1, id, 1).unwrap(), open(30_000));
    assert_eq!(g.vote(0, id, 2).unwrap(), open(20_000));
    refused(g.vote(1, id, 0), "already voted");
    refused(g.vote(2, id, 3), "not a vote");
    let votes = g
        .view(GOVERNOR, IGovernor::proposalVotesCall { proposalId: id })
        .unwrap();
    assert_eq!(
        (votes.againstVotes, votes.forVotes, votes.abstainVotes),
        (U256::ZERO, open(30_000), open(20_000))
    );
    assert!(g
        .view(
            GOVERNOR,
            IGovernor::hasVotedCall {
                proposalId: id,
                account: g.w.addr(1)
            }
        )
        .unwrap());
    refused(g.queue(0, &p), "Active");

    g.at(snapshot + PERIOD + 1);
    assert_eq!(g.state(id), S::Succeeded);
    refused(g.execute(0, id), "Succeeded");
    let logs = g.queue(4, &p).unwrap();
    let queued = IGovernor::ProposalQueued::decode_log_data(&logs[0].data).unwrap();
    let eta = snapshot + PERIOD + 1 + TIMELOCK;
    assert_eq!(queued.etaSeconds, U256::from(eta));
    assert_eq!(g.state(id), S::Queued);
    refused(g.queue(4, &p), "Queued");

    g.at(eta - 1);
    refused(g.execute(4, id), "timelock");
    assert_eq!(
        g.params().fee_split.contributors_bps,
        5000,
        "nothing changed"
    );

    g.at(eta);
    let logs = g.execute(4, id).unwrap();
    let changed = logs
        .iter()
        .find_map(|l| IParams::ParamsChanged::decode_log_data(&l.data).ok())
        .expect("ParamsChanged");
    assert_eq!(changed.key, "fee_split");
    assert!(logs
        .iter()
        .any(|l| IGovernor::ProposalExecuted::decode_log_data(&l.data).is_ok()));
    assert_eq!(g.state(id), S::Executed);
    assert_eq!(g.params().fee_split.contributors_bps, 6000);
    refused(g.execute(4, id), "Executed");

    let after = settle_one(&mut g, 2);
    let fee2 = after.platform + after.modelOwner + after.stakers + after.contributors;
    assert_eq!(fee2, fee, "the same call costs the same");
    assert_eq!(after.contributors, paid(6000));
    assert!(after.modelOwner < before.modelOwner);
}

#[test]
fn votes_are_read_at_the_snapshot_so_stake_added_after_it_cannot_vote() {
    let mut g = Gov::new();
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "min stake 2");
    let id = g.propose(0, &p).unwrap();
    // Stake added during the voting delay counts: it is in place at the snapshot.
    g.at(START + 2);
    g.stake(4, 40_000);
    g.at(START + 1 + DELAY + 1);
    // Stake added after the snapshot does not.
    g.stake(3, 60_000);
    assert_eq!(g.vote(4, id, 0).unwrap(), open(40_000));
    assert_eq!(
        g.vote(3, id, 1).unwrap(),
        open(500),
        "only what was staked at the snapshot"
    );
    let snapshot = U256::from(START + 1 + DELAY);
    assert_eq!(
        g.view(
            GOVERNOR,
            IGovernor::getVotesCall {
                account: g.w.addr(3),
                timepoint: snapshot
            }
        )
        .unwrap(),
        open(500)
    );
    refused(
        g.view(
            GOVERNOR,
            IGovernor::getVotesCall {
                account: g.w.addr(3),
                timepoint: U256::from(g.now()),
            },
        ),
        "not in the past",
    );
    // 40,000 against, 500 for: defeated.
    g.at(START + 1 + DELAY + PERIOD + 1);
    assert_eq!(g.state(id), S::Defeated);
    refused(g.queue(0, &p), "Defeated");
    refused(g.execute(0, id), "Defeated");
}

#[test]
fn the_proposal_threshold_is_read_one_second_before_proposing() {
    let mut g = Gov::new();
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "min stake 2");
    refused(g.propose(3, &p), "proposal_threshold");
    // Staked in this very second: not counted yet.
    g.stake(3, 20_000);
    refused(g.propose(3, &p), "proposal_threshold");
    g.at(g.now() + 1);
    g.propose(3, &p).expect("enough votes one second ago");
    refused(g.propose(0, &p), "already exists");
}

#[test]
fn without_quorum_a_proposal_is_defeated_even_when_for_wins() {
    let mut g = Gov::new();
    // Quorum: 20% of the 100,500 OPEN staked = 20,100; user 0 alone has 20,000.
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "min stake 2");
    let id = g.propose(0, &p).unwrap();
    assert_eq!(
        g.view(
            GOVERNOR,
            IGovernor::quorumCall {
                timepoint: U256::from(START)
            }
        )
        .unwrap(),
        open(100_500) / U256::from(5)
    );
    g.at(g.now() + DELAY + 1);
    g.vote(0, id, 1).unwrap();
    g.at(g.now() + PERIOD);
    assert_eq!(g.state(id), S::Defeated);
    refused(g.queue(0, &p), "Defeated");

    // The same with user 3's 500 abstaining reaches quorum (for + abstain) and succeeds.
    let p2 = proposal(vec![set_param("min_stake", "\"2\"")], "min stake 2, again");
    let id2 = g.propose(0, &p2).unwrap();
    g.at(g.now() + DELAY + 1);
    g.vote(0, id2, 1).unwrap();
    g.vote(3, id2, 2).unwrap();
    g.at(g.now() + PERIOD);
    assert_eq!(g.state(id2), S::Succeeded);
}

#[test]
fn only_the_proposer_may_cancel_and_only_while_pending() {
    let mut g = Gov::new();
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "to cancel");
    let id = g.propose(0, &p).unwrap();
    refused(
        g.tx(1, GOVERNOR, IGovernor::cancel_1Call { proposalId: id }),
        "only by its proposer",
    );
    g.tx(0, GOVERNOR, IGovernor::cancel_1Call { proposalId: id })
        .unwrap();
    assert_eq!(g.state(id), S::Canceled);
    g.at(g.now() + DELAY + 1);
    refused(g.vote(1, id, 1), "Canceled");

    let p2 = proposal(vec![set_param("min_stake", "\"2\"")], "too late to cancel");
    let id2 = g.propose(0, &p2).unwrap();
    g.at(g.now() + DELAY + 1);
    let cancel = IGovernor::cancel_0Call {
        targets: p2.targets.clone(),
        values: p2.values.clone(),
        calldatas: p2.calldatas.clone(),
        descriptionHash: keccak256(p2.description.as_bytes()),
    };
    refused(g.tx(0, GOVERNOR, cancel), "Active");
    assert_eq!(g.state(id2), S::Active);
}

#[test]
fn a_queued_proposal_expires_after_the_grace_period() {
    let mut g = Gov::new();
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "slow");
    let id = g.pass(&p);
    g.queue(0, &p).unwrap();
    g.at(g.now() + TIMELOCK + GRACE);
    assert_eq!(g.state(id), S::Expired);
    refused(g.execute(0, id), "Expired");
}

sol! {
    struct Ballot {
        uint256 proposalId;
        uint8 support;
        address voter;
        uint256 nonce;
    }
}

#[test]
fn cast_vote_by_sig_counts_a_signed_ballot_once() {
    let mut g = Gov::new();
    let p = proposal(vec![set_param("min_stake", "\"2\"")], "signed");
    let id = g.propose(0, &p).unwrap();
    g.at(g.now() + DELAY + 1);
    let voter = g.w.addr(2);
    let domain = eip712_domain! {
        name: "OpenLedger Governor",
        version: "1",
        chain_id: CHAIN_ID,
        verifying_contract: GOVERNOR,
    };
    let digest = |nonce: u64, support: u8| {
        Ballot {
            proposalId: id,
            support,
            voter,
            nonce: U256::from(nonce),
        }
        .eip712_signing_hash(&domain)
    };
    let signers = g.w.signers.clone();
    let sign = |who: usize, d: B256| -> Bytes {
        signers[who]
            .sign_hash_sync(&d)
            .unwrap()
            .as_bytes()
            .to_vec()
            .into()
    };
    let by_sig = |signature: Bytes| IGovernor::castVoteBySigCall {
        proposalId: id,
        support: 1,
        voter,
        signature,
    };
    // Signed by someone else: refused.
    let forged = sign(1, digest(0, 1));
    refused(g.tx(4, GOVERNOR, by_sig(forged)), "invalid vote signature");
    // For another support than submitted: refused.
    let other = sign(2, digest(0, 0));
    refused(g.tx(4, GOVERNOR, by_sig(other)), "invalid vote signature");

    assert_eq!(
        g.view(GOVERNOR, IGovernor::noncesCall { owner: voter })
            .unwrap(),
        U256::ZERO
    );
    let good = sign(2, digest(0, 1));
    let logs = g
        .tx(4, GOVERNOR, by_sig(good.clone()))
        .expect("relayed by user 4");
    let cast = IGovernor::VoteCast::decode_log_data(&logs[0].data).unwrap();
    assert_eq!(
        (cast.voter, cast.support, cast.weight),
        (voter, 1, open(50_000))
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::noncesCall { owner: voter })
            .unwrap(),
        U256::from(1)
    );
    assert!(!g
        .view(
            GOVERNOR,
            IGovernor::hasVotedCall {
                proposalId: id,
                account: g.w.addr(4)
            }
        )
        .unwrap());

    // The same signature again: its nonce is used up.
    refused(g.tx(4, GOVERNOR, by_sig(good)), "invalid vote signature");
}

#[test]
fn a_failing_call_refuses_the_whole_execute() {
    let mut g = Gov::new();
    let treasury = g.w.balance(TREASURY);
    let too_much = (
        modules::BANK,
        IBank::treasuryGrantCall {
            to: g.w.addr(4),
            amount: treasury + U256::from(1),
            reason: "more than there is".into(),
        }
        .abi_encode(),
    );
    let p = proposal(vec![set_param("min_stake", "\"2\""), too_much], "half");
    let id = g.pass(&p);
    g.queue(0, &p).unwrap();
    g.at(g.now() + TIMELOCK);
    refused(g.execute(0, id), "call 2 of 2 (bank.treasuryGrant) failed");
    assert_eq!(
        g.params().min_stake,
        one_open(),
        "the first call was not applied"
    );
    assert_eq!(g.state(id), S::Queued);

    // A parameter change that breaks the set's rules fails the same way.
    let bad = proposal(
        vec![set_param("fee_split.platform_bps", "9000")],
        "bad split",
    );
    let id = g.pass(&bad);
    g.queue(0, &bad).unwrap();
    g.at(g.now() + TIMELOCK);
    refused(g.execute(0, id), "fee_split must sum to");
}

#[test]
fn a_treasury_grant_pays_from_the_treasury() {
    let mut g = Gov::new();
    let to = g.w.addr(4);
    let (treasury, balance) = (g.w.balance(TREASURY), g.w.balance(to));
    let grant = (
        modules::BANK,
        IBank::treasuryGrantCall {
            to,
            amount: open(1234),
            reason: "datanet bounty".into(),
        }
        .abi_encode(),
    );
    let p = proposal(vec![grant], "bounty");
    let id = g.pass(&p);
    g.queue(0, &p).unwrap();
    g.at(g.now() + TIMELOCK);
    let logs = g.execute(1, id).unwrap();
    let ev = logs
        .iter()
        .find_map(|l| IBank::TreasuryGrant::decode_log_data(&l.data).ok())
        .expect("TreasuryGrant");
    assert_eq!(
        (ev.to, ev.amount, ev.reason.as_str()),
        (to, open(1234), "datanet bounty")
    );
    assert_eq!(g.w.balance(to), balance + open(1234));
    assert!(g.w.balance(TREASURY) >= treasury - open(1234));
}

#[test]
fn governed_setters_refuse_every_sender_but_the_governor() {
    let mut g = Gov::new();
    let (to, data) = set_param("min_stake", "\"2\"");
    refused(
        g.tx_value(0, to, U256::ZERO, data),
        "only be called by the governor",
    );
    let json = serde_json::to_string(&g.params()).unwrap();
    refused(
        g.tx(0, PARAMS, IParams::setParamsCall { json }),
        "only be called by the governor",
    );
    let grant = IBank::treasuryGrantCall {
        to: g.w.addr(0),
        amount: open(1),
        reason: String::new(),
    };
    refused(
        g.tx(0, modules::BANK, grant),
        "only be called by the governor",
    );
}

#[test]
fn proposals_are_bounded_and_checked_when_proposed() {
    let mut g = Gov::new();
    let ok = set_param("min_stake", "\"2\"");
    let mut p = proposal(vec![ok.clone(); 11], "too many");
    refused(g.propose(0, &p), "at most 10 calls");
    p = proposal(vec![], "none");
    refused(g.propose(0, &p), "same non-zero length");
    p = proposal(vec![ok.clone()], "mismatch");
    p.values.push(U256::ZERO);
    refused(g.propose(0, &p), "same non-zero length");
    p = proposal(vec![ok.clone()], "value");
    p.values[0] = U256::from(1);
    refused(g.propose(0, &p), "every value must be 0");
    p = proposal(vec![(g.w.addr(3), vec![1, 2, 3, 4])], "account");
    refused(g.propose(0, &p), "not a module");
    p = proposal(vec![(PARAMS, vec![1, 2, 3, 4])], "garbage");
    refused(g.propose(0, &p), "does not decode");
    p = proposal(
        vec![(
            GOVERNOR,
            IGovernor::castVoteCall {
                proposalId: U256::ZERO,
                support: 1,
            }
            .abi_encode(),
        )],
        "self",
    );
    refused(g.propose(0, &p), "governor itself");
    p = proposal(
        vec![(
            PARAMS,
            [IParams::setParamCall::SELECTOR.to_vec(), vec![0; 40_000]].concat(),
        )],
        "big",
    );
    refused(g.propose(0, &p), "proposal_max_calldata_bytes");
    let mut reserved = format!("x#proposer={}", g.w.addr(1));
    p = proposal(vec![ok.clone()], &reserved);
    refused(g.propose(0, &p), "reserves this proposal");
    reserved = format!("x#proposer={}", g.w.addr(0));
    p = proposal(vec![ok], &reserved);
    g.propose(0, &p).expect("the named proposer may");
}

#[test]
fn oz_views_answer_as_openzeppelin_governors_do() {
    let g = Gov::new();
    assert_eq!(
        g.view(GOVERNOR, IGovernor::nameCall {}).unwrap(),
        "OpenLedger Governor"
    );
    assert_eq!(g.view(GOVERNOR, IGovernor::versionCall {}).unwrap(), "1");
    assert_eq!(
        g.view(GOVERNOR, IGovernor::COUNTING_MODECall {}).unwrap(),
        "support=bravo&quorum=for,abstain"
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::CLOCK_MODECall {}).unwrap(),
        "mode=timestamp"
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::clockCall {})
            .unwrap()
            .to::<u64>(),
        START + 1
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::votingDelayCall {}).unwrap(),
        U256::from(DELAY)
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::votingPeriodCall {}).unwrap(),
        U256::from(PERIOD)
    );
    assert_eq!(
        g.view(GOVERNOR, IGovernor::proposalThresholdCall {})
            .unwrap(),
        open(10_000)
    );
    assert!(g
        .view(
            GOVERNOR,
            IGovernor::proposalNeedsQueuingCall {
                proposalId: U256::ZERO
            }
        )
        .unwrap());
    assert_eq!(
        g.view(GOVERNOR, IGovernor::BALLOT_TYPEHASHCall {}).unwrap(),
        keccak256("Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)")
    );
    assert!(g
        .view(
            GOVERNOR,
            IGovernor::supportsInterfaceCall {
                interfaceId: [0x01, 0xff, 0xc9, 0xa7].into()
            }
        )
        .unwrap());
    assert!(!g
        .view(
            GOVERNOR,
            IGovernor::supportsInterfaceCall {
                interfaceId: [0xff; 4].into()
            }
        )
        .unwrap());
    refused(
        g.view(
            GOVERNOR,
            IGovernor::stateCall {
                proposalId: U256::from(7),
            },
        ),
        "no proposal has this id",
    );
    let d = g.view(GOVERNOR, IGovernor::eip712DomainCall {}).unwrap();
    assert_eq!(
        (d.chainId, d.verifyingContract),
        (U256::from(CHAIN_ID), GOVERNOR)
    );
}

#[test]
fn set_params_replaces_the_whole_set_and_refuses_unknown_keys() {
    let mut g = Gov::new();
    let mut json: serde_json::Value = serde_json::to_value(g.params()).unwrap();
    json["voting_period_secs"] = 200.into();
    json["call_gas"]["castVote"] = 45_000.into();
    let whole = (
        PARAMS,
        IParams::setParamsCall {
            json: json.to_string(),
        }
        .abi_encode(),
    );
    let new_gas = set_param("call_gas.someNewCall", "7");
    let p = proposal(vec![whole, new_gas], "whole set");
    let id = g.pass(&p);
    g.queue(0, &p).unwrap();
    g.at(g.now() + TIMELOCK);
    let logs = g.execute(0, id).unwrap();
    let keys: Vec<String> = logs
        .iter()
        .filter_map(|l| IParams::ParamsChanged::decode_log_data(&l.data).ok())
        .map(|e| e.key)
        .collect();
    assert_eq!(keys, ["*", "call_gas.someNewCall"]);
    let now = g.params();
    assert_eq!(now.governance.voting_period_secs, 200);
    assert_eq!(
        (now.call_gas("castVote"), now.call_gas("someNewCall")),
        (45_000, 7)
    );

    json["voting_periodsecs"] = 1.into();
    let typo = (
        PARAMS,
        IParams::setParamsCall {
            json: json.to_string(),
        }
        .abi_encode(),
    );
    for (call, why) in [
        (typo, "unknown parameter \"voting_periodsecs\""),
        (
            set_param("no_such_key", "1"),
            "unknown parameter \"no_such_key\"",
        ),
        (set_param("min_stake", "2"), "cannot be set to 2"),
        (
            set_param("voting_period_secs", "0"),
            "voting_period_secs must be between",
        ),
    ] {
        let p = proposal(vec![call], why);
        let id = g.pass(&p);
        g.queue(0, &p).unwrap();
        g.at(g.now() + TIMELOCK);
        refused(g.execute(0, id), why);
    }
}
