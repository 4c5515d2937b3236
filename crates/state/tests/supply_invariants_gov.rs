//! Property test of governance mixed with the existing modules: random sequences of signed
//! transactions through `verify_raw` and `apply_tx` (transfers, stake, requestUnstake, withdraw,
//! claimRewards, delegate, inference records settled at once, credit deposits, and the governor's
//! propose, castVote, castVoteWithReason, castVoteBySig, queue, execute and cancel of proposals
//! that change random parameters (valid and invalid), grant treasury funds and slash stakers),
//! with the clock advancing between blocks. Parameters are read from state before every
//! transaction, as the node does. After every transaction:
//! - the sum of all balances equals the recorded total supply, which equals the genesis supply
//!   less everything burned (slashes burn when governance set `slash_destination` to "burn");
//! - the staking module covers its stake, unbonding and unpaid rewards, the inference module
//!   holds exactly the credit, and the governor holds nothing (balances are unsigned and every
//!   debit is checked, so covering every liability is what "no balance goes negative" means);
//! - votes history: every past timepoint's votes per user and total stake, recorded when the
//!   clock passed it, still read the same (checkpoints never change afterwards); the votes
//!   add up to the total stake; a cast vote weighs the voter's votes at the snapshot and the
//!   proposal's tallies are the sum of the votes cast;
//! - an executed proposal's parameter changes are in force (the parameters in state are the
//!   ones before with each `setParam` applied in order), its grant moved treasury OPEN, and
//!   each settlement splits the fee by the fee split in state at that moment.
//!
//! `OPENLEDGER_PROPTEST_GOV_TXS` sets how many transactions run (default 3,000); the seed is fixed
//! by default (CI is deterministic), printed, and `PROPTEST_RNG_SEED` picks another or replays one.

mod common;
#[path = "common/random_mix.rs"]
mod random_mix;

use alloy_primitives::{keccak256, Address, Bytes, Log, B256, U256};
use alloy_signer::SignerSync;
use alloy_sol_types::{SolCall, SolEvent};
use common::{World, CHAIN_ID};
use openledger_state::{
    apply_tx,
    executor::simulate_call,
    modules::{governor::sig, params, staking},
    verify_raw, ExecError,
};
use openledger_types::{
    abi::{IBank, IDatanet, IGovernor, IInference, IModel, IParams, IStaking},
    genesis::total_supply,
    modules::{BANK, DATANET, GOVERNOR, INFERENCE, MODEL, PARAMS, STAKING},
    params::{GovernanceParams, SlashDestination, BPS},
    units::one_open,
    Params,
};
use proptest::{prelude::*, test_runner::TestCaseError};
use std::collections::BTreeMap;
use IGovernor::ProposalState as S;

const USERS: usize = 6;
/// The operator recording inferences (and the relayer of signed ballots when picked).
const OPERATOR: usize = 5;
/// The caller whose credit pays for inferences.
const CALLER: usize = 2;
const STEPS: usize = 150;
const DEFAULT_TXS: u64 = 3_000;

/// One action of a proposal.
#[derive(Clone, Debug)]
enum Change {
    Param(String, String),
    Grant { to: usize, milli: u64 },
    Slash { who: usize, milli: u64 },
}

#[derive(Clone, Debug)]
enum Action {
    Transfer {
        to: usize,
        milli: u64,
    },
    Stake(u64),
    Unstake(u64),
    Withdraw,
    Claim,
    Delegate(usize),
    Deposit(u64),
    Infer {
        prompt: u32,
        completion: u32,
    },
    Propose(Vec<Change>),
    Vote {
        pick: u64,
        support: u8,
        reason: bool,
    },
    VoteBySig {
        pick: u64,
        support: u8,
        relayer: usize,
        forged: bool,
    },
    Queue {
        pick: u64,
        by_id: bool,
    },
    Execute {
        pick: u64,
        by_id: bool,
    },
    Cancel {
        pick: u64,
        by_proposer: bool,
    },
    Jump(u64),
}

impl Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::Stake(_) => "stake",
            Action::Unstake(_) => "requestUnstake",
            Action::Withdraw => "withdraw",
            Action::Claim => "claimRewards",
            Action::Delegate(_) => "delegate",
            Action::Deposit(_) => "deposit",
            Action::Infer { .. } => "recordInferences",
            Action::Propose(_) => "propose",
            Action::Vote { .. } => "castVote",
            Action::VoteBySig { .. } => "castVoteBySig",
            Action::Queue { .. } => "queue",
            Action::Execute { .. } => "execute",
            Action::Cancel { .. } => "cancel",
            Action::Jump(_) => "jump",
        }
    }
}

/// A random parameter change: mostly valid values, some that the validation refuses (a split
/// not adding up to 100%, a zero voting period), which must refuse the whole execute.
fn param_change() -> impl Strategy<Value = Change> {
    let split = (0u16..=10_000, 0u16..=10_000, 0u16..=10_000, any::<bool>()).prop_map(
        |(a, b, c, exact)| {
            let mut v = [a, b, c];
            v.sort_unstable();
            let (p, o, s) = (v[0], v[1] - v[0], v[2] - v[1]);
            let rest = if exact { BPS - v[2] } else { BPS - v[2] + 1 };
            format!(
                r#"{{"platform_bps":{p},"model_owner_bps":{o},"stakers_bps":{s},"contributors_bps":{rest}}}"#
            )
        },
    );
    prop_oneof![
        3 => split.prop_map(|v| Change::Param("fee_split".into(), v)),
        1 => (0u16..=10_000).prop_map(|v| Change::Param("fee_split.stakers_bps".into(), v.to_string())),
        1 => (0u64..5).prop_map(|v| Change::Param("min_stake".into(), format!("\"0.{v}\""))),
        1 => (0u64..60).prop_map(|v| Change::Param("unstake_cooldown_secs".into(), v.to_string())),
        2 => prop_oneof![Just("\"treasury\""), Just("\"burn\"")]
            .prop_map(|v| Change::Param("slash_destination".into(), v.into())),
        1 => (1u64..20).prop_map(|v| Change::Param("voting_delay_secs".into(), v.to_string())),
        1 => (0u64..120).prop_map(|v| Change::Param("voting_period_secs".into(), v.to_string())),
        1 => (0u64..40).prop_map(|v| Change::Param("timelock_delay_secs".into(), v.to_string())),
        1 => (0u16..4_000).prop_map(|v| Change::Param("quorum_bps".into(), v.to_string())),
        1 => (1_000u64..60_000).prop_map(|v| Change::Param("proposal_threshold".into(), format!("\"{v}\""))),
        1 => (1u64..20).prop_map(|v| Change::Param("price_per_completion_token".into(), format!("\"0.00{v}\""))),
    ]
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => param_change(),
        2 => (0..USERS, 0u64..2_000_000_000).prop_map(|(to, milli)| Change::Grant { to, milli }),
        2 => (0..USERS, 0u64..60_000_000).prop_map(|(who, milli)| Change::Slash { who, milli }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let pick = any::<u64>();
    prop_oneof![
        2 => (0..USERS, 0u64..5_000_000).prop_map(|(to, milli)| Action::Transfer { to, milli }),
        3 => (0u64..30_000_000).prop_map(Action::Stake),
        1 => (0u64..=1000).prop_map(Action::Unstake),
        1 => Just(Action::Withdraw),
        1 => Just(Action::Claim),
        2 => (0..USERS).prop_map(Action::Delegate),
        1 => (0u64..20_000).prop_map(Action::Deposit),
        4 => (0u32..3000, 0u32..3000)
            .prop_map(|(prompt, completion)| Action::Infer { prompt, completion }),
        2 => proptest::collection::vec(change(), 1..4).prop_map(Action::Propose),
        10 => (pick, prop_oneof![3 => Just(1u8), 1 => 0u8..4], any::<bool>())
            .prop_map(|(pick, support, reason)| Action::Vote { pick, support, reason }),
        3 => (pick, prop_oneof![3 => Just(1u8), 1 => 0u8..3], 0..USERS, prop_oneof![5 => Just(false), 1 => Just(true)])
            .prop_map(|(pick, support, relayer, forged)| Action::VoteBySig { pick, support, relayer, forged }),
        8 => (pick, any::<bool>()).prop_map(|(pick, by_id)| Action::Queue { pick, by_id }),
        8 => (pick, any::<bool>()).prop_map(|(pick, by_id)| Action::Execute { pick, by_id }),
        3 => (pick, prop_oneof![3 => Just(true), 1 => Just(false)]).prop_map(|(pick, by_proposer)| Action::Cancel { pick, by_proposer }),
        2 => (1u64..60).prop_map(Action::Jump),
    ]
}

fn milli(m: u64) -> U256 {
    U256::from(m) * one_open() / U256::from(1000u64)
}

fn open(n: u64) -> U256 {
    U256::from(n) * one_open()
}

/// A proposal as proposed: what queue/execute by its contents need, and what it does.
struct Proposal {
    id: U256,
    proposer: usize,
    changes: Vec<Change>,
    targets: Vec<Address>,
    calldatas: Vec<Bytes>,
    description: String,
    /// Vote weights cast, by support (against, for, abstain).
    tally: [U256; 3],
}

struct Sim {
    w: World,
    proposals: Vec<Proposal>,
    /// Votes per user and the total stake at the end of each past second, read when the clock
    /// passed it.
    history: BTreeMap<u64, (Vec<U256>, U256)>,
    /// How far `check` has rotated through the history.
    cursor: usize,
    requests: u64,
    accepted: BTreeMap<&'static str, u64>,
    sent: u64,
}

impl Sim {
    /// A fresh chain; slashes burn from the start when `burn` (governance may switch it).
    fn new(burn: bool) -> Sim {
        let w = World::new("gov prop", USERS, 1_000_000, |p| {
            p.governance = GovernanceParams {
                voting_delay_secs: 5,
                voting_period_secs: 40,
                proposal_threshold: open(10_000),
                quorum_bps: 2_000,
                timelock_delay_secs: 10,
                timelock_grace_secs: 100,
                ..GovernanceParams::default()
            };
            p.unstake_cooldown_secs = 20;
            p.agent.agent_free_tokens_per_day = u64::MAX;
            if burn {
                p.slash_destination = SlashDestination::Burn;
            }
        });
        let mut s = Sim {
            w,
            proposals: Vec::new(),
            history: BTreeMap::new(),
            cursor: 0,
            requests: 0,
            accepted: BTreeMap::new(),
            sent: 0,
        };
        s.setup();
        s
    }

    /// Stakes for users 0-4, a datanet with a contribution by user 3 and an adapter by user 4,
    /// credit for the caller and the operator approved to spend it.
    fn setup(&mut self) {
        for (who, n) in [
            (0, 20_000u64),
            (1, 30_000),
            (2, 50_000),
            (3, 15_000),
            (4, 500),
        ] {
            self.send_ok(who, STAKING, open(n), IStaking::stakeCall {}.abi_encode());
        }
        let calls: Vec<(usize, Address, Vec<u8>)> = vec![
            (4, DATANET, common::public_datanet("d").abi_encode()),
            (
                3,
                DATANET,
                IDatanet::contributeCall {
                    datanetId: 1,
                    rowsRoot: keccak256(b"rows"),
                    rowCount: 3,
                    byteSize: 300,
                    score: 9000,
                    metadataUri: String::new(),
                }
                .abi_encode(),
            ),
            (
                4,
                DATANET,
                IDatanet::approveCall { contributionId: 1 }.abi_encode(),
            ),
            (
                4,
                MODEL,
                IModel::registerBaseModelCall {
                    modelHash: keccak256(b"base"),
                    name: "base".into(),
                }
                .abi_encode(),
            ),
            (
                4,
                MODEL,
                IModel::registerAdapterCall {
                    baseModelId: 1,
                    name: "helper".into(),
                    datanetIds: vec![1],
                    datanetVersions: vec![1],
                    trainingConfigHash: keccak256(b"config"),
                    adapterHash: keccak256(b"helper"),
                    attributionIndexRoot: keccak256(b"index"),
                }
                .abi_encode(),
            ),
            (
                CALLER,
                INFERENCE,
                IInference::approveOperatorCall {
                    operator: self.w.addr(OPERATOR),
                    allowance: open(1_000_000),
                }
                .abi_encode(),
            ),
        ];
        for (who, to, data) in calls {
            self.send_ok(who, to, U256::ZERO, data);
        }
        self.send_ok(
            CALLER,
            INFERENCE,
            open(100),
            IInference::depositCall {}.abi_encode(),
        );
        self.w.env.timestamp += 1;
        self.w.env.block_number += 1;
    }

    fn params(&self) -> Params {
        params::load(&self.w.kv).expect("params in state")
    }

    fn now(&self) -> u64 {
        self.w.env.timestamp
    }

    /// A signed transaction from `who`, executed with the parameters in state; its logs.
    fn send(
        &mut self,
        who: usize,
        to: Address,
        value: U256,
        data: Vec<u8>,
    ) -> Result<Vec<Log>, ExecError> {
        let raw = self.w.sign(who, self.w.nonce(who), to, value, data);
        let tx = verify_raw(&raw, CHAIN_ID, 1 << 20).expect("a signed transaction verifies");
        let out = apply_tx(&self.w.kv, &self.w.env, &self.params(), &tx)?;
        self.w.kv.apply(out.writes);
        Ok(out.logs)
    }

    fn send_ok(&mut self, who: usize, to: Address, value: U256, data: Vec<u8>) {
        self.send(who, to, value, data).expect("set-up transaction");
    }

    fn view<C: SolCall>(&self, to: Address, call: C) -> C::Return {
        let (out, _, _) = simulate_call(
            &self.w.kv,
            &self.w.env,
            &self.params(),
            Address::ZERO,
            to,
            U256::ZERO,
            &call.abi_encode(),
        )
        .expect("a view succeeds");
        C::abi_decode_returns(&out).expect("a view's return data decodes")
    }

    /// Votes of every user and the total stake at the end of past second `t`.
    fn votes_at(&self, t: u64) -> (Vec<U256>, U256) {
        let tp = U256::from(t);
        let votes = (0..USERS)
            .map(|i| {
                self.view(
                    STAKING,
                    IStaking::getPastVotesCall {
                        account: self.w.addr(i),
                        timepoint: tp,
                    },
                )
            })
            .collect();
        let total = self.view(STAKING, IStaking::getPastTotalSupplyCall { timepoint: tp });
        (votes, total)
    }

    /// Advances the clock by `secs` (a new block); the second just left is now past and its
    /// votes are recorded: they must equal the current ones (nothing ran since) and add up to
    /// the total stake.
    fn tick(&mut self, secs: u64) -> Result<(), TestCaseError> {
        if secs == 0 {
            return Ok(());
        }
        let left = self.now();
        self.w.env.timestamp += secs;
        self.w.env.block_number += 1;
        let (votes, total) = self.votes_at(left);
        for (i, v) in votes.iter().enumerate() {
            let now: U256 = self.view(
                STAKING,
                IStaking::getVotesCall {
                    account: self.w.addr(i),
                },
            );
            prop_assert_eq!(
                *v,
                now,
                "past votes of user {} at {} = current votes",
                i,
                left
            );
        }
        let staked: U256 = self.view(STAKING, IStaking::totalStakedCall {});
        prop_assert_eq!(total, staked, "past total supply at {} = total stake", left);
        let sum: U256 = votes.iter().copied().sum();
        prop_assert_eq!(
            sum,
            total,
            "users' votes add up to the total stake at {}",
            left
        );
        self.history.insert(left, (votes, total));
        Ok(())
    }

    /// A proposal for an action wanting state `wanted`: three times in four one in that state
    /// when there is one, otherwise any of the three newest (whatever their state), if any.
    fn pick(&self, pick: u64, wanted: S) -> Option<usize> {
        let n = self.proposals.len();
        if !pick.is_multiple_of(4) {
            let ready: Vec<usize> = (0..n)
                .filter(|&i| self.state(self.proposals[i].id) == wanted)
                .collect();
            if !ready.is_empty() {
                return Some(ready[(pick / 4) as usize % ready.len()]);
            }
        }
        (n > 0).then(|| n - 1 - ((pick / 4) as usize % n.min(3)))
    }

    fn state(&self, id: U256) -> S {
        self.view(GOVERNOR, IGovernor::stateCall { proposalId: id })
    }

    fn calls(&self, changes: &[Change]) -> Vec<(Address, Vec<u8>)> {
        changes
            .iter()
            .map(|c| match c {
                Change::Param(key, value) => (
                    PARAMS,
                    IParams::setParamCall {
                        key: key.clone(),
                        jsonValue: value.clone(),
                    }
                    .abi_encode(),
                ),
                Change::Grant { to, milli: m } => (
                    BANK,
                    IBank::treasuryGrantCall {
                        to: self.w.addr(*to),
                        amount: milli(*m),
                        reason: "grant".into(),
                    }
                    .abi_encode(),
                ),
                Change::Slash { who, milli: m } => (
                    STAKING,
                    IStaking::slashCall {
                        staker: self.w.addr(*who),
                        amount: milli(*m),
                        reason: "misbehaved".into(),
                    }
                    .abi_encode(),
                ),
            })
            .collect()
    }

    /// Sends action `a` as user `who`; whether it was accepted.
    fn act(&mut self, who: usize, a: &Action) -> Result<bool, TestCaseError> {
        let r = match a {
            Action::Transfer { to, milli: m } => {
                self.send(who, self.w.addr(*to), milli(*m), Vec::new())
            }
            Action::Stake(m) => {
                self.send(who, STAKING, milli(*m), IStaking::stakeCall {}.abi_encode())
            }
            Action::Unstake(permille) => {
                let staked: U256 = self.view(
                    STAKING,
                    IStaking::stakeOfCall {
                        staker: self.w.addr(who),
                    },
                );
                let amount = staked * U256::from(*permille) / U256::from(1000u64);
                self.send(
                    who,
                    STAKING,
                    U256::ZERO,
                    IStaking::requestUnstakeCall { amount }.abi_encode(),
                )
            }
            Action::Withdraw => self.send(
                who,
                STAKING,
                U256::ZERO,
                IStaking::withdrawCall {}.abi_encode(),
            ),
            Action::Claim => self.send(
                who,
                STAKING,
                U256::ZERO,
                IStaking::claimRewardsCall {}.abi_encode(),
            ),
            Action::Delegate(to) => {
                let delegatee = self.w.addr(*to);
                self.send(
                    who,
                    STAKING,
                    U256::ZERO,
                    IStaking::delegateCall { delegatee }.abi_encode(),
                )
            }
            Action::Deposit(m) => self.send(
                CALLER,
                INFERENCE,
                milli(*m),
                IInference::depositCall {}.abi_encode(),
            ),
            Action::Infer { prompt, completion } => return self.infer(*prompt, *completion),
            Action::Propose(changes) => return self.propose(who, changes),
            Action::Vote {
                pick,
                support,
                reason,
            } => {
                let Some(i) = self.pick(*pick, S::Active) else {
                    return Ok(false);
                };
                let id = self.proposals[i].id;
                let data = if *reason {
                    IGovernor::castVoteWithReasonCall {
                        proposalId: id,
                        support: *support,
                        reason: "why".into(),
                    }
                    .abi_encode()
                } else {
                    IGovernor::castVoteCall {
                        proposalId: id,
                        support: *support,
                    }
                    .abi_encode()
                };
                let r = self.send(who, GOVERNOR, U256::ZERO, data);
                return self.voted(i, r);
            }
            Action::VoteBySig {
                pick,
                support,
                relayer,
                forged,
            } => {
                let Some(i) = self.pick(*pick, S::Active) else {
                    return Ok(false);
                };
                let id = self.proposals[i].id;
                let voter = self.w.addr(who);
                let nonce: U256 = self.view(GOVERNOR, IGovernor::noncesCall { owner: voter });
                let digest = sig::ballot_digest(CHAIN_ID, id, *support, voter, nonce);
                let signer = if *forged { (who + 1) % USERS } else { who };
                let signature: Bytes = self.w.signers[signer]
                    .sign_hash_sync(&digest)
                    .expect("signs")
                    .as_bytes()
                    .to_vec()
                    .into();
                let data = IGovernor::castVoteBySigCall {
                    proposalId: id,
                    support: *support,
                    voter,
                    signature,
                }
                .abi_encode();
                let r = self.send(*relayer, GOVERNOR, U256::ZERO, data);
                if *forged {
                    prop_assert!(r.is_err(), "a ballot signed by someone else is refused");
                }
                return self.voted(i, r);
            }
            Action::Queue { pick, by_id } => {
                let Some(i) = self.pick(*pick, S::Succeeded) else {
                    return Ok(false);
                };
                let p = &self.proposals[i];
                let data = if *by_id {
                    IGovernor::queue_1Call { proposalId: p.id }.abi_encode()
                } else {
                    IGovernor::queue_0Call {
                        targets: p.targets.clone(),
                        values: vec![U256::ZERO; p.targets.len()],
                        calldatas: p.calldatas.clone(),
                        descriptionHash: keccak256(p.description.as_bytes()),
                    }
                    .abi_encode()
                };
                self.send(who, GOVERNOR, U256::ZERO, data)
            }
            Action::Execute { pick, by_id } => return self.execute(who, *pick, *by_id),
            Action::Cancel { pick, by_proposer } => {
                let Some(i) = self.pick(*pick, S::Pending) else {
                    return Ok(false);
                };
                let p = &self.proposals[i];
                let from = if *by_proposer { p.proposer } else { who };
                let data = IGovernor::cancel_1Call { proposalId: p.id }.abi_encode();
                self.send(from, GOVERNOR, U256::ZERO, data)
            }
            Action::Jump(secs) => {
                self.tick(*secs)?;
                return Ok(true);
            }
        };
        Ok(r.is_ok())
    }

    /// The operator records one inference for the caller and settles it at once; the split
    /// must follow the fee split in state now.
    fn infer(&mut self, prompt: u32, completion: u32) -> Result<bool, TestCaseError> {
        self.requests += 1;
        let record = IInference::InferenceRecord {
            requestId: keccak256(self.requests.to_be_bytes()),
            caller: self.w.addr(CALLER),
            adapterId: 1,
            promptTokens: prompt,
            completionTokens: completion,
            top: vec![IInference::Attribution {
                contributionId: 1,
                weightPpm: 500_000,
            }],
            attributionRoot: B256::repeat_byte(7),
        };
        let split = self.params().fee_split;
        let data = IInference::recordInferencesCall {
            records: vec![record],
            settleNow: true,
        }
        .abi_encode();
        let Ok(logs) = self.send(OPERATOR, INFERENCE, U256::ZERO, data) else {
            return Ok(false);
        };
        for s in logs
            .iter()
            .filter_map(|l| IInference::FeeSettled::decode_log_data(&l.data).ok())
        {
            let fee = s.platform + s.modelOwner + s.stakers + s.contributors;
            let part = |bps: u16| fee * U256::from(bps) / U256::from(BPS);
            prop_assert_eq!(
                s.platform,
                part(split.platform_bps),
                "platform share at the split in force"
            );
            prop_assert_eq!(
                s.stakers,
                part(split.stakers_bps),
                "stakers' share at the split in force"
            );
        }
        Ok(true)
    }

    fn propose(&mut self, who: usize, changes: &[Change]) -> Result<bool, TestCaseError> {
        let calls = self.calls(changes);
        let description = format!("proposal {} by {who}", self.proposals.len());
        let targets: Vec<Address> = calls.iter().map(|c| c.0).collect();
        let calldatas: Vec<Bytes> = calls.into_iter().map(|c| c.1.into()).collect();
        let data = IGovernor::proposeCall {
            targets: targets.clone(),
            values: vec![U256::ZERO; targets.len()],
            calldatas: calldatas.clone(),
            description: description.clone(),
        }
        .abi_encode();
        let Ok(logs) = self.send(who, GOVERNOR, U256::ZERO, data) else {
            return Ok(false);
        };
        let created = logs
            .iter()
            .find_map(|l| IGovernor::ProposalCreated::decode_log_data(&l.data).ok());
        prop_assert!(
            created.is_some(),
            "an accepted propose emits ProposalCreated"
        );
        self.proposals.push(Proposal {
            id: created.expect("checked").proposalId,
            proposer: who,
            changes: changes.to_vec(),
            targets,
            calldatas,
            description,
            tally: [U256::ZERO; 3],
        });
        Ok(true)
    }

    /// A vote's outcome: an accepted one weighs the voter's votes at the snapshot and adds to
    /// the tally.
    fn voted(&mut self, i: usize, r: Result<Vec<Log>, ExecError>) -> Result<bool, TestCaseError> {
        let Ok(logs) = r else { return Ok(false) };
        let cast = logs
            .iter()
            .find_map(|l| IGovernor::VoteCast::decode_log_data(&l.data).ok());
        prop_assert!(cast.is_some(), "an accepted vote emits VoteCast");
        let cast = cast.expect("checked");
        let id = self.proposals[i].id;
        let snapshot: U256 =
            self.view(GOVERNOR, IGovernor::proposalSnapshotCall { proposalId: id });
        let at_snapshot: U256 = self.view(
            STAKING,
            IStaking::getPastVotesCall {
                account: cast.voter,
                timepoint: snapshot,
            },
        );
        prop_assert_eq!(
            cast.weight,
            at_snapshot,
            "a vote weighs the voter's votes at the snapshot"
        );
        prop_assert!(cast.support < 3, "only against/for/abstain are counted");
        self.proposals[i].tally[cast.support as usize] += cast.weight;
        let v = self.view(GOVERNOR, IGovernor::proposalVotesCall { proposalId: id });
        prop_assert_eq!(
            [v.againstVotes, v.forVotes, v.abstainVotes],
            self.proposals[i].tally,
            "the tallies are the sum of the votes cast"
        );
        Ok(true)
    }

    /// Executes a proposal; when accepted, its parameter changes are in force, its grants paid.
    fn execute(&mut self, who: usize, pick: u64, by_id: bool) -> Result<bool, TestCaseError> {
        let Some(i) = self.pick(pick, S::Queued) else {
            return Ok(false);
        };
        let p = &self.proposals[i];
        let data = if by_id {
            IGovernor::execute_1Call { proposalId: p.id }.abi_encode()
        } else {
            IGovernor::execute_0Call {
                targets: p.targets.clone(),
                values: vec![U256::ZERO; p.targets.len()],
                calldatas: p.calldatas.clone(),
                descriptionHash: keccak256(p.description.as_bytes()),
            }
            .abi_encode()
        };
        let changes = p.changes.clone();
        let before = self.params();
        let balances: Vec<U256> = (0..USERS).map(|u| self.w.balance(self.w.addr(u))).collect();
        if self.send(who, GOVERNOR, U256::ZERO, data).is_err() {
            return Ok(false);
        }
        for c in &changes {
            let kind = match c {
                Change::Param(..) => "executed a parameter change",
                Change::Grant { .. } => "executed a grant",
                Change::Slash { .. } if before.slash_destination == SlashDestination::Burn => {
                    "executed a burning slash"
                }
                Change::Slash { .. } => "executed a slash to the treasury",
            };
            *self.accepted.entry(kind).or_default() += 1;
        }
        let mut expected = before;
        let mut granted = [U256::ZERO; USERS];
        for c in &changes {
            match c {
                Change::Param(k, v) => {
                    expected = params::with_key(&expected, k, v).map_err(|e| {
                        TestCaseError::fail(format!("executed {k}={v}, which does not apply: {e}"))
                    })?;
                }
                Change::Grant { to, milli: m } => granted[*to] += milli(*m),
                Change::Slash { .. } => {}
            }
        }
        prop_assert_eq!(
            self.params(),
            expected,
            "the executed parameter changes are in force"
        );
        for u in 0..USERS {
            // The executor also charges `who` for gas.
            if u != who {
                prop_assert_eq!(
                    self.w.balance(self.w.addr(u)),
                    balances[u] + granted[u],
                    "user {} received its grants",
                    u
                );
            }
        }
        Ok(true)
    }

    fn check(&mut self) -> Result<(), TestCaseError> {
        let w = &self.w;
        let mut sum = U256::ZERO;
        for (k, v) in w.kv.prefix(b"a") {
            prop_assert_eq!(k.len(), 21);
            sum += U256::from_be_slice(&v[8..]);
        }
        let supply: U256 = self.view(BANK, IBank::totalSupplyCall {});
        prop_assert_eq!(sum, supply, "the balances add up to the recorded supply");
        let burned = staking::total_burned(&w.kv).unwrap();
        prop_assert_eq!(
            supply + burned,
            total_supply(),
            "supply = genesis supply - burned"
        );
        prop_assert_eq!(
            w.balance(GOVERNOR),
            U256::ZERO,
            "the governor holds no OPEN"
        );

        let credit: U256 = self.view(
            INFERENCE,
            IInference::creditOfCall {
                account: w.addr(CALLER),
            },
        );
        prop_assert_eq!(
            w.balance(INFERENCE),
            credit,
            "the inference module holds exactly the credit"
        );

        let mut owed: U256 = self.view(STAKING, IStaking::totalStakedCall {});
        for i in 0..USERS {
            let a = w.addr(i);
            owed += self
                .view(STAKING, IStaking::unbondingOfCall { staker: a })
                .amount;
            owed += self.view(STAKING, IStaking::pendingRewardsCall { staker: a });
        }
        prop_assert!(
            w.balance(STAKING) >= owed,
            "the staking module covers what it owes"
        );

        // Past votes never change: re-read the oldest second and a rotating one.
        let times: Vec<u64> = self.history.keys().copied().collect();
        if !times.is_empty() {
            self.cursor = (self.cursor + 1) % times.len();
            for t in [times[0], times[self.cursor]] {
                prop_assert_eq!(
                    &self.votes_at(t),
                    &self.history[&t],
                    "votes at past second {} changed",
                    t
                );
            }
        }
        Ok(())
    }

    fn run(&mut self, steps: &[(usize, Action, u64)]) -> Result<(), TestCaseError> {
        for (who, a, wait) in steps {
            self.tick(*wait)?;
            self.sent += 1;
            if self.act(*who, a)? {
                *self.accepted.entry(a.kind()).or_default() += 1;
                if matches!(a, Action::Propose(c) if c.iter().any(|c| matches!(c, Change::Slash { .. })))
                {
                    *self.accepted.entry("propose with a slash").or_default() += 1;
                }
            }
            self.check()?;
        }
        for (t, recorded) in &self.history {
            prop_assert_eq!(
                &self.votes_at(*t),
                recorded,
                "votes at past second {} changed",
                t
            );
        }
        Ok(())
    }
}

#[test]
fn governance_mixed_with_every_module_conserves_supply_and_keeps_votes_history() {
    // A fixed default seed keeps CI deterministic: the coverage checks below (rare flows such
    // as an executed burning slash) must not depend on luck. Other seeds: PROPTEST_RNG_SEED.
    let step = (
        0..USERS,
        action(),
        prop_oneof![2 => Just(0u64), 1 => 1u64..8],
    );
    let mix = random_mix::run(
        random_mix::target_txs("OPENLEDGER_PROPTEST_GOV_TXS", DEFAULT_TXS),
        random_mix::seed(0x6f70_656e_6c65_6467),
        STEPS,
        300,
        step,
        |burn, steps| {
            let mut sim = Sim::new(burn);
            let outcome = sim.run(steps);
            (outcome, sim.sent, sim.accepted)
        },
    );
    mix.assert_reached_often(&[
        "propose",
        "castVote",
        "castVoteBySig",
        "queue",
        "execute",
        "delegate",
        "recordInferences",
    ]);
    mix.assert_reached(&[
        "cancel",
        "withdraw",
        "executed a parameter change",
        "executed a grant",
        "executed a burning slash",
        "executed a slash to the treasury",
    ]);
}
