//! Property tests: under long random sequences of valid and invalid signed transactions
//! touching every module (and slashes by the governor, to the treasury or burned), the supply
//! is conserved exactly (the sum of all balances is the recorded supply, which is the genesis
//! supply less what was burned), and after every transaction every module's balance covers
//! what it owes:
//! - the staking module holds at least the total stake, all unbonding OPEN and every staker's
//!   unpaid rewards (and no more than rounding dust on top);
//! - voting power: each account's votes are the stake of those delegating to it, and
//!   `getPastVotes` / `getPastTotalSupply` at every earlier timestamp still report what was in
//!   force when it ended;
//! - the inference module holds exactly the callers' credit plus the escrow of unsettled
//!   receipts;
//! - the bank, datanet, model and params modules owe nothing and hold nothing.
//!
//! The run covers at least 10^5 transactions (`OPENLEDGER_PROPTEST_TXS` sets how many; the
//! seed is printed and `PROPTEST_RNG_SEED` replays it). The mix is weighted towards staking
//! (stake, partial unstakes, withdrawals and claims with gas fees flowing into the pool between
//! them, delegations and slashes) and reaches contributions, approvals, adapters, inference credit, receipts and
//! settlement; the run asserts that it did.

mod common;

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use common::World;
use openledger_state::{
    modules::{self as state_modules, datanet, model},
    Ctx, ExecError, Overlay, StateRead,
};
use openledger_types::{
    abi::{IBank, IDatanet, IInference, IModel, IStaking},
    genesis::total_supply,
    modules,
    params::SlashDestination,
    units::one_open,
};
use proptest::{
    prelude::*,
    test_runner::{RngSeed, TestCaseError, TestError, TestRunner},
};
use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
};

const USERS: usize = 4;
/// Transfer targets: the users, then the treasury, then every module.
const TARGETS: usize = USERS + 1 + modules::ALL.len();
/// Transactions per random run, fewest and most.
const MIN_STEPS: usize = 400;
const MAX_STEPS: usize = 500;
/// Transactions the property test sends unless `OPENLEDGER_PROPTEST_TXS` says otherwise.
const DEFAULT_TXS: u64 = 100_000;
/// The staking accumulator's fixed-point scale (10^24): the bound on rounding dust scales
/// with the total stake over it.
const SCALE_DIGITS: u64 = 24;

#[derive(Clone, Debug)]
enum Action {
    Transfer {
        to: usize,
        milli: u64,
    },
    BankTransfer {
        to: usize,
        milli: u64,
    },
    Stake {
        milli: u64,
        wei: u64,
    },
    Unstake {
        milli: u64,
    },
    /// Unstakes `permille` of the sender's current stake (so partial unstakes happen often).
    UnstakePart {
        permille: u64,
    },
    Withdraw,
    Claim,
    CreateDatanet {
        permissioned: bool,
    },
    Contribute {
        datanet: u64,
        seed: u8,
        rows: u64,
    },
    Approve {
        cid: u64,
    },
    Reject {
        cid: u64,
    },
    Grant {
        datanet: u64,
        user: usize,
    },
    RegisterBase {
        seed: u8,
    },
    RegisterAdapter {
        base: u64,
        datanet: u64,
        version: u64,
    },
    Deposit {
        milli: u64,
        wei: u64,
    },
    WithdrawCredit {
        milli: u64,
    },
    ApproveOperator {
        op: usize,
        milli: u64,
    },
    Record {
        caller: usize,
        adapter: u64,
        prompt: u32,
        completion: u32,
        attributions: Vec<(u64, u32)>,
    },
    Settle {
        ids: Vec<u64>,
    },
    Garbage {
        bytes: Vec<u8>,
        module: usize,
    },
    /// The variants below pick among what exists (a pick past the end names an id that does
    /// not exist yet) and resolve into the exact variants above, so random runs reach
    /// approvals, adapters, receipts and settlement often.
    ApproveSome {
        pick: u64,
        by_owner: bool,
    },
    RegisterAdapterSome {
        base: u64,
        datanet: u64,
        version: u64,
    },
    RecordSome {
        self_paid: bool,
        caller: usize,
        adapter: u64,
        prompt: u32,
        completion: u32,
        attributions: Vec<(u64, u32)>,
    },
    SettleSome {
        picks: Vec<u64>,
    },
    ValueToView {
        milli: u64,
    },
    StaleNonce,
    /// Delegates the sender's votes to user `to` (`USERS`: to nobody, address(0)).
    Delegate {
        to: usize,
    },
    /// The governor slashes user `target` (through `IStaking.slash`, sender 0x…1007).
    Slash {
        target: usize,
        milli: u64,
    },
    /// The sender tries `IStaking.slash` itself: always refused.
    SlashUnauthorized {
        target: usize,
    },
    /// Governance switches slashing between the treasury and the burn.
    ToggleSlashDestination,
}

impl Action {
    /// A name for the tally of accepted actions.
    fn kind(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::BankTransfer { .. } => "bank transfer",
            Action::Stake { .. } => "stake",
            Action::Unstake { .. } | Action::UnstakePart { .. } => "requestUnstake",
            Action::Withdraw => "withdraw",
            Action::Claim => "claimRewards",
            Action::CreateDatanet { .. } => "createDatanet",
            Action::Contribute { .. } => "contribute",
            Action::Approve { .. } => "approve",
            Action::Reject { .. } => "reject",
            Action::Grant { .. } => "grantAccess",
            Action::RegisterBase { .. } => "registerBaseModel",
            Action::RegisterAdapter { .. } => "registerAdapter",
            Action::Deposit { .. } => "deposit",
            Action::WithdrawCredit { .. } => "withdraw credit",
            Action::ApproveOperator { .. } => "approveOperator",
            Action::Record { .. } => "recordInference",
            Action::Settle { .. } => "settle",
            Action::Garbage { .. } => "garbage",
            Action::ApproveSome { .. } => "approve",
            Action::RegisterAdapterSome { .. } => "registerAdapter",
            Action::RecordSome { .. } => "recordInference",
            Action::SettleSome { .. } => "settle",
            Action::ValueToView { .. } => "value to a view",
            Action::StaleNonce => "stale nonce",
            Action::Delegate { .. } => "delegate",
            Action::Slash { .. } => "slash",
            Action::SlashUnauthorized { .. } => "slash by a non-governor",
            Action::ToggleSlashDestination => "toggle slash destination",
        }
    }
}

fn action() -> impl Strategy<Value = Action> {
    let milli = 0u64..3_000_000_000; // up to 3,000,000 OPEN: more than anyone has
    let wei = prop_oneof![Just(0u64), 0u64..1_000_000_007];
    prop_oneof![
        2 => (0..TARGETS, milli.clone()).prop_map(|(to, milli)| Action::Transfer { to, milli }),
        2 => (0..TARGETS, 0u64..2_000_000).prop_map(|(to, milli)| Action::BankTransfer { to, milli }),
        6 => (0u64..5_000_000, wei.clone()).prop_map(|(milli, wei)| Action::Stake { milli, wei }),
        1 => (0u64..5_000_000).prop_map(|milli| Action::Unstake { milli }),
        4 => (0u64..=1000).prop_map(|permille| Action::UnstakePart { permille }),
        4 => Just(Action::Withdraw),
        5 => Just(Action::Claim),
        1 => any::<bool>().prop_map(|permissioned| Action::CreateDatanet { permissioned }),
        2 => (1u64..4, any::<u8>(), 0u64..50).prop_map(|(datanet, seed, rows)| Action::Contribute {
            datanet,
            seed,
            rows
        }),
        1 => (1u64..10).prop_map(|cid| Action::Approve { cid }),
        1 => (1u64..10).prop_map(|cid| Action::Reject { cid }),
        1 => (1u64..4, 0..USERS).prop_map(|(datanet, user)| Action::Grant { datanet, user }),
        1 => (0u8..3).prop_map(|seed| Action::RegisterBase { seed }),
        1 => (1u64..3, 1u64..4, 1u64..4).prop_map(|(base, datanet, version)| Action::RegisterAdapter {
            base,
            datanet,
            version
        }),
        2 => (0u64..2_000_000, wei).prop_map(|(milli, wei)| Action::Deposit { milli, wei }),
        1 => (0u64..2_000_000).prop_map(|milli| Action::WithdrawCredit { milli }),
        1 => (0..USERS, 0u64..2_000_000).prop_map(|(op, milli)| Action::ApproveOperator { op, milli }),
        1 => (
            0..USERS,
            1u64..3,
            0u32..5000,
            0u32..5000,
            proptest::collection::vec((1u64..10, 0u32..600_000), 0..4)
        )
            .prop_map(|(caller, adapter, prompt, completion, attributions)| {
                Action::Record {
                    caller,
                    adapter,
                    prompt,
                    completion,
                    attributions,
                }
            }),
        1 => proptest::collection::vec(1u64..40, 0..4).prop_map(|ids| Action::Settle { ids }),
        1 => (proptest::collection::vec(any::<u8>(), 0..80), 0usize..6)
            .prop_map(|(bytes, module)| Action::Garbage { bytes, module }),
        1 => (1u64..1000).prop_map(|milli| Action::ValueToView { milli }),
        1 => Just(Action::StaleNonce),
        3 => (0..=USERS).prop_map(|to| Action::Delegate { to }),
        2 => (0..USERS, 0u64..300_000).prop_map(|(target, milli)| Action::Slash { target, milli }),
        1 => (0..USERS).prop_map(|target| Action::SlashUnauthorized { target }),
        1 => Just(Action::ToggleSlashDestination),
        4 => (any::<u64>(), prop_oneof![3 => Just(true), 1 => Just(false)])
            .prop_map(|(pick, by_owner)| Action::ApproveSome { pick, by_owner }),
        2 => (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(base, datanet, version)| {
            Action::RegisterAdapterSome {
                base,
                datanet,
                version,
            }
        }),
        8 => (
            any::<bool>(),
            0..USERS,
            any::<u64>(),
            0u32..5000,
            0u32..5000,
            proptest::collection::vec((any::<u64>(), 0u32..400_000), 0..4)
        )
            .prop_map(|(self_paid, caller, adapter, prompt, completion, attributions)| {
                Action::RecordSome {
                    self_paid,
                    caller,
                    adapter,
                    prompt,
                    completion,
                    attributions,
                }
            }),
        5 => proptest::collection::vec(any::<u64>(), 1..4).prop_map(|picks| Action::SettleSome { picks }),
    ]
}

/// One transaction: who sends it, what it does, and the seconds that pass before it.
fn step() -> impl Strategy<Value = (usize, Action, u64)> {
    (
        0..USERS,
        action(),
        prop_oneof![2 => Just(0u64), 1 => 1u64..30],
    )
}

fn milli(m: u64) -> U256 {
    U256::from(m) * one_open() / U256::from(1000u64)
}

/// The test's chain plus what the invariants need to remember between transactions.
struct Sim {
    w: World,
    /// Receipts seen so far that were unsettled when last read.
    open_receipts: BTreeSet<u64>,
    receipts_seen: u64,
    /// The largest total stake so far (bounds the rounding dust the pool may keep).
    max_total_staked: U256,
    /// Accepted transactions by kind, plus `claim paid` for claims that paid something and
    /// `burn` for slashes that burned.
    accepted: BTreeMap<&'static str, u64>,
    sent: u64,
    /// Each user's votes and the total stake when a timestamp ended, oldest first.
    history: Vec<(u64, [U256; USERS], U256)>,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            w: World::new("prop user", USERS, 1_000_000, |p| {
                p.unstake_cooldown_secs = 20
            }),
            open_receipts: BTreeSet::new(),
            receipts_seen: 0,
            max_total_staked: U256::ZERO,
            accepted: BTreeMap::new(),
            sent: 0,
            history: Vec::new(),
        }
    }

    fn votes(&self, a: Address) -> U256 {
        self.w
            .view(modules::STAKING, IStaking::getVotesCall { account: a })
    }

    /// Runs `IStaking.slash` as the governor's `execute` does (sender 0x…1007), committing it
    /// when accepted.
    fn slash_as_governor(&mut self, target: Address, amount: U256) -> Result<(), ExecError> {
        let data = IStaking::slashCall {
            staker: target,
            amount,
            reason: "misbehaved".into(),
        }
        .abi_encode();
        let w = &self.w;
        let mut ctx = Ctx {
            state: Overlay::new(&w.kv),
            env: &w.env,
            params: &w.genesis.params,
            sender: modules::GOVERNOR,
            value: U256::ZERO,
            logs: Vec::new(),
        };
        state_modules::dispatch(&mut ctx, modules::STAKING, &data)?;
        let writes = ctx.state.into_writes();
        self.w.kv.apply(writes);
        Ok(())
    }

    fn target(&self, i: usize) -> Address {
        match i.checked_sub(USERS) {
            None => self.w.addr(i),
            Some(0) => modules::TREASURY,
            Some(m) => modules::ALL[m - 1].0,
        }
    }

    fn stake_of(&self, a: Address) -> U256 {
        self.w
            .view(modules::STAKING, IStaking::stakeOfCall { staker: a })
    }

    fn pending_of(&self, a: Address) -> U256 {
        self.w
            .view(modules::STAKING, IStaking::pendingRewardsCall { staker: a })
    }

    /// The user with address `a`, if any.
    fn user(&self, a: Address) -> Option<usize> {
        (0..USERS).find(|&i| self.w.addr(i) == a)
    }

    /// Resolves a `…Some` action into an exact one (with its sender); others pass through.
    fn resolve(&self, who: usize, a: &Action) -> (usize, Action) {
        // An id in 1..=count + 1: mostly existing, sometimes the next one (not found).
        let id = |pick: u64, count: u64| 1 + pick % (count + 1);
        let w = &self.w;
        match a.clone() {
            Action::ApproveSome { pick, by_owner } => {
                let count: u64 = w.view(modules::DATANET, IDatanet::contributionCountCall {});
                let cid = id(pick, count);
                let owner = datanet::contribution(&w.kv, cid)
                    .and_then(|c| datanet::datanet(&w.kv, c.datanetId))
                    .ok()
                    .and_then(|d| self.user(d.owner))
                    .filter(|_| by_owner);
                (owner.unwrap_or(who), Action::Approve { cid })
            }
            Action::RegisterAdapterSome {
                base,
                datanet: d,
                version,
            } => {
                let bases: u64 = w.view(modules::MODEL, IModel::baseModelCountCall {});
                let datanets: u64 = w.view(modules::DATANET, IDatanet::datanetCountCall {});
                let datanet = id(d, datanets);
                let versions = datanet::datanet(&w.kv, datanet).map_or(0, |d| d.versionCount);
                let action = Action::RegisterAdapter {
                    base: id(base, bases),
                    datanet,
                    version: id(version, versions),
                };
                (who, action)
            }
            Action::RecordSome {
                self_paid,
                caller,
                adapter,
                prompt,
                completion,
                attributions,
            } => {
                let adapters: u64 = w.view(modules::MODEL, IModel::adapterCountCall {});
                let adapter = id(adapter, adapters);
                // Contributions the adapter was trained on, to attribute to.
                let trained: Vec<u64> = model::adapter(&w.kv, adapter)
                    .map(|a| {
                        let (d, v) = (a.datanetIds[0], a.datanetVersions[0]);
                        datanet::contribution_ids(&w.kv, d, 0, datanet::MAX_PAGE)
                            .unwrap()
                            .into_iter()
                            .filter(|&c| {
                                datanet::contribution(&w.kv, c)
                                    .is_ok_and(|c| c.status == datanet::APPROVED && c.version <= v)
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let attributions = attributions
                    .into_iter()
                    .map(|(pick, weight)| match trained.len() as u64 {
                        0 => (1 + pick % 10, weight),
                        n => (trained[(pick % n) as usize], weight),
                    })
                    .collect();
                let action = Action::Record {
                    caller: if self_paid { who } else { caller },
                    adapter,
                    prompt,
                    completion,
                    attributions,
                };
                (who, action)
            }
            Action::SettleSome { picks } => {
                let count: u64 = w.view(modules::INFERENCE, IInference::receiptCountCall {});
                let ids = picks.into_iter().map(|p| id(p, count)).collect();
                (who, Action::Settle { ids })
            }
            other => (who, other),
        }
    }

    /// Applies one action from `who` (after resolving a `…Some` action); returns whether it
    /// was accepted.
    fn act(&mut self, who: usize, a: &Action) -> Result<(), ExecError> {
        let (who, exact) = self.resolve(who, a);
        let me = self.w.addr(who);
        let nonce = self.w.nonce(who);
        match exact {
            Action::Slash { target, milli: m } => {
                self.sent += 1;
                let burns = self.w.genesis.params.slash_destination == SlashDestination::Burn;
                let burned_before = self.burned();
                self.slash_as_governor(self.w.addr(target), milli(m))?;
                *self.accepted.entry("slash").or_default() += 1;
                if burns && self.burned() > burned_before {
                    *self.accepted.entry("burn").or_default() += 1;
                }
                return Ok(());
            }
            Action::ToggleSlashDestination => {
                let d = &mut self.w.genesis.params.slash_destination;
                *d = match d {
                    SlashDestination::Treasury => SlashDestination::Burn,
                    SlashDestination::Burn => SlashDestination::Treasury,
                };
                return Ok(());
            }
            _ => {}
        }
        let (to, value, data, nonce) = match exact {
            Action::Transfer { to, milli: m } => (self.target(to), milli(m), vec![], nonce),
            Action::BankTransfer { to, milli: m } => (
                modules::BANK,
                U256::ZERO,
                IBank::transferCall {
                    to: self.target(to),
                    amount: milli(m),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Stake { milli: m, wei } => (
                modules::STAKING,
                milli(m) + U256::from(wei),
                IStaking::stakeCall {}.abi_encode(),
                nonce,
            ),
            Action::Unstake { milli: m } => (
                modules::STAKING,
                U256::ZERO,
                IStaking::requestUnstakeCall { amount: milli(m) }.abi_encode(),
                nonce,
            ),
            Action::UnstakePart { permille } => (
                modules::STAKING,
                U256::ZERO,
                IStaking::requestUnstakeCall {
                    amount: self.stake_of(me) * U256::from(permille) / U256::from(1000u64),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Withdraw => (
                modules::STAKING,
                U256::ZERO,
                IStaking::withdrawCall {}.abi_encode(),
                nonce,
            ),
            Action::Claim => (
                modules::STAKING,
                U256::ZERO,
                IStaking::claimRewardsCall {}.abi_encode(),
                nonce,
            ),
            Action::CreateDatanet { permissioned } => (
                modules::DATANET,
                U256::ZERO,
                IDatanet::createDatanetCall {
                    name: "d".into(),
                    summary: String::new(),
                    description: String::new(),
                    tags: vec!["t".into()],
                    dataType: 0,
                    licence: "MIT".into(),
                    permissioned,
                }
                .abi_encode(),
                nonce,
            ),
            Action::Contribute {
                datanet,
                seed,
                rows,
            } => (
                modules::DATANET,
                U256::ZERO,
                IDatanet::contributeCall {
                    datanetId: datanet,
                    rowsRoot: keccak256([seed]),
                    rowCount: rows,
                    byteSize: rows * 300,
                    score: 9000,
                    metadataUri: String::new(),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Approve { cid } => (
                modules::DATANET,
                U256::ZERO,
                IDatanet::approveCall {
                    contributionId: cid,
                }
                .abi_encode(),
                nonce,
            ),
            Action::Reject { cid } => (
                modules::DATANET,
                U256::ZERO,
                IDatanet::rejectCall {
                    contributionId: cid,
                    reason: "off topic".into(),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Grant { datanet, user } => (
                modules::DATANET,
                U256::ZERO,
                IDatanet::grantAccessCall {
                    datanetId: datanet,
                    user: self.w.addr(user),
                }
                .abi_encode(),
                nonce,
            ),
            Action::RegisterBase { seed } => (
                modules::MODEL,
                U256::ZERO,
                IModel::registerBaseModelCall {
                    modelHash: keccak256([seed, 1]),
                    name: "base".into(),
                }
                .abi_encode(),
                nonce,
            ),
            Action::RegisterAdapter {
                base,
                datanet,
                version,
            } => (
                modules::MODEL,
                U256::ZERO,
                IModel::registerAdapterCall {
                    baseModelId: base,
                    // Adapter names are unique on chain.
                    name: format!("a-{who}-{nonce}"),
                    datanetIds: vec![datanet],
                    datanetVersions: vec![version],
                    trainingConfigHash: B256::repeat_byte(1),
                    adapterHash: B256::repeat_byte(2),
                    attributionIndexRoot: B256::ZERO,
                }
                .abi_encode(),
                nonce,
            ),
            Action::Deposit { milli: m, wei } => (
                modules::INFERENCE,
                milli(m) + U256::from(wei),
                IInference::depositCall {}.abi_encode(),
                nonce,
            ),
            Action::WithdrawCredit { milli: m } => (
                modules::INFERENCE,
                U256::ZERO,
                IInference::withdrawCall { amount: milli(m) }.abi_encode(),
                nonce,
            ),
            Action::ApproveOperator { op, milli: m } => (
                modules::INFERENCE,
                U256::ZERO,
                IInference::approveOperatorCall {
                    operator: self.w.addr(op),
                    allowance: milli(m),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Record {
                caller,
                adapter,
                prompt,
                completion,
                attributions,
            } => {
                let top: Vec<IInference::Attribution> = attributions
                    .into_iter()
                    .map(|(c, w)| IInference::Attribution {
                        contributionId: c,
                        weightPpm: w,
                    })
                    .collect();
                // A third of the records go through an operator's batch call, with request ids
                // from a small set (so resubmitted duplicates happen) and settled at once half
                // of the time.
                let data = if prompt % 3 == 0 {
                    IInference::recordInferencesCall {
                        records: vec![IInference::InferenceRecord {
                            requestId: keccak256([(prompt % 16) as u8, (completion % 2) as u8]),
                            caller: self.w.addr(caller),
                            adapterId: adapter,
                            promptTokens: prompt,
                            completionTokens: completion,
                            top,
                            attributionRoot: B256::repeat_byte(3),
                        }],
                        settleNow: completion % 2 == 0,
                    }
                    .abi_encode()
                } else {
                    IInference::recordInferenceCall {
                        caller: self.w.addr(caller),
                        adapterId: adapter,
                        promptTokens: prompt,
                        completionTokens: completion,
                        top,
                        attributionRoot: B256::repeat_byte(3),
                    }
                    .abi_encode()
                };
                (modules::INFERENCE, U256::ZERO, data, nonce)
            }
            Action::Settle { ids } => (
                modules::INFERENCE,
                U256::ZERO,
                IInference::settleCall { receiptIds: ids }.abi_encode(),
                nonce,
            ),
            Action::Garbage { bytes, module } => (modules::ALL[module].0, U256::ZERO, bytes, nonce),
            Action::ValueToView { milli: m } => (
                modules::DATANET,
                milli(m),
                IDatanet::datanetCountCall {}.abi_encode(),
                nonce,
            ),
            Action::StaleNonce => (
                self.w.addr((who + 1) % USERS),
                U256::from(1u64),
                vec![],
                nonce.wrapping_sub(1),
            ),
            Action::Delegate { to } => (
                modules::STAKING,
                U256::ZERO,
                IStaking::delegateCall {
                    delegatee: if to < USERS {
                        self.w.addr(to)
                    } else {
                        Address::ZERO
                    },
                }
                .abi_encode(),
                nonce,
            ),
            Action::SlashUnauthorized { target } => (
                modules::STAKING,
                U256::ZERO,
                IStaking::slashCall {
                    staker: self.w.addr(target),
                    amount: U256::from(1u64),
                    reason: String::new(),
                }
                .abi_encode(),
                nonce,
            ),
            Action::ApproveSome { .. }
            | Action::RegisterAdapterSome { .. }
            | Action::RecordSome { .. }
            | Action::SettleSome { .. }
            | Action::Slash { .. }
            | Action::ToggleSlashDestination => unreachable!("handled above"),
        };
        let claimable = matches!(a, Action::Claim) && !self.pending_of(me).is_zero();
        self.sent += 1;
        self.w.send_with_nonce(who, nonce, to, value, data)?;
        *self.accepted.entry(a.kind()).or_default() += 1;
        if claimable {
            *self.accepted.entry("claim paid").or_default() += 1;
        }
        Ok(())
    }

    fn burned(&self) -> U256 {
        self.w.view(modules::STAKING, IStaking::totalBurnedCall {})
    }

    /// Records each user's votes and the total stake as the current timestamp ends.
    fn end_timestamp(&mut self) {
        let votes = std::array::from_fn(|i| self.votes(self.w.addr(i)));
        let total = self.w.view(modules::STAKING, IStaking::totalStakedCall {});
        self.history.push((self.w.env.timestamp, votes, total));
    }

    /// Checks voting power now and at ended timestamps (the latest and one picked by `pick`).
    fn check_votes(&self, pick: usize) -> Result<(), TestCaseError> {
        let w = &self.w;
        let users: Vec<Address> = (0..USERS).map(|i| w.addr(i)).collect();
        let mut expected = [U256::ZERO; USERS];
        for a in &users {
            let stake = self.stake_of(*a);
            let d: Address = w.view(modules::STAKING, IStaking::delegatesCall { account: *a });
            if let Some(i) = users.iter().position(|u| *u == d) {
                expected[i] += stake;
            } else {
                prop_assert_eq!(d, Address::ZERO, "users delegate to users or to nobody");
            }
        }
        for (i, a) in users.iter().enumerate() {
            prop_assert_eq!(
                self.votes(*a),
                expected[i],
                "user {}'s votes are the stake delegated to it",
                i
            );
        }
        prop_assert_eq!(
            self.votes(Address::ZERO),
            U256::ZERO,
            "nobody holds no votes"
        );
        let n = self.history.len();
        let picks = [n.checked_sub(1), (n > 0).then(|| pick % n.max(1))];
        for (t, votes, total_then) in picks.into_iter().flatten().map(|i| &self.history[i]) {
            for (i, a) in users.iter().enumerate() {
                let past: U256 = w.view(
                    modules::STAKING,
                    IStaking::getPastVotesCall {
                        account: *a,
                        timepoint: U256::from(*t),
                    },
                );
                prop_assert_eq!(past, votes[i], "user {}'s votes at the end of {}", i, t);
            }
            let past_total: U256 = w.view(
                modules::STAKING,
                IStaking::getPastTotalSupplyCall {
                    timepoint: U256::from(*t),
                },
            );
            prop_assert_eq!(
                past_total,
                *total_then,
                "the total stake at the end of {}",
                t
            );
        }
        Ok(())
    }

    /// Checks supply conservation and every module's liabilities.
    fn check(&mut self) -> Result<(), TestCaseError> {
        self.check_votes(self.sent as usize)?;
        prop_assert!(
            !self.accepted.contains_key("slash by a non-governor"),
            "a staker slashed someone without the governor"
        );
        let burned = self.burned();
        let w = &self.w;
        // Supply: the sum of all balances is the recorded supply: the genesis supply less
        // what was burned.
        let mut sum = U256::ZERO;
        for (k, v) in w.kv.prefix(b"a") {
            prop_assert_eq!(k.len(), 21, "only account records start with 'a'");
            prop_assert_eq!(v.len(), 40, "an account record has 40 bytes");
            sum = sum
                .checked_add(U256::from_be_slice(&v[8..]))
                .ok_or_else(|| TestCaseError::fail("balances overflow"))?;
        }
        let supply: U256 = w.view(modules::BANK, IBank::totalSupplyCall {});
        prop_assert_eq!(
            sum,
            supply,
            "the sum of all balances is the recorded supply"
        );
        prop_assert_eq!(
            supply + burned,
            total_supply(),
            "the recorded supply plus everything burned is the genesis supply"
        );

        // Every contribution's compact head (what paying for an inference reads) agrees with
        // its full record, whatever submits, approvals and rejections happened.
        let count: u64 = w.view(modules::DATANET, IDatanet::contributionCountCall {});
        for id in 1..=count {
            let c =
                datanet::contribution(&w.kv, id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let head = datanet::contribution_head(&w.kv, id)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                head,
                datanet::ContributionHead {
                    datanet: c.datanetId,
                    contributor: c.contributor,
                    status: c.status,
                    version: c.version,
                },
                "contribution {}'s head disagrees with its record",
                id
            );
        }

        // Modules that owe nothing hold nothing: OPEN sent there would be locked for good.
        for m in [
            modules::BANK,
            modules::DATANET,
            modules::MODEL,
            modules::PARAMS,
        ] {
            prop_assert_eq!(
                w.balance(m),
                U256::ZERO,
                "module {} owes nothing, so it must hold nothing",
                modules::name_of(&m).unwrap_or_default()
            );
        }

        // Staking: stake + unbonding + unpaid rewards, as the module's own views report them.
        let total: U256 = w.view(modules::STAKING, IStaking::totalStakedCall {});
        self.max_total_staked = self.max_total_staked.max(total);
        let (mut stakes, mut unbonding, mut rewards) = (U256::ZERO, U256::ZERO, U256::ZERO);
        for i in 0..USERS {
            let a = w.addr(i);
            stakes += self.stake_of(a);
            unbonding += w
                .view(modules::STAKING, IStaking::unbondingOfCall { staker: a })
                .amount;
            rewards += self.pending_of(a);
        }
        prop_assert_eq!(stakes, total, "the stakes add up to the total stake");
        let owed = total + unbonding + rewards;
        let pool = w.balance(modules::STAKING);
        prop_assert!(
            pool >= owed,
            "the staking module holds {} wei but owes {} wei (stake {} + unbonding {} + unpaid rewards {}): short by {} wei",
            pool,
            owed,
            total,
            unbonding,
            rewards,
            owed - pool
        );
        // What it keeps beyond that is rounding dust: under one wei per staker plus the
        // undistributed remainder of the reward accumulator (under total stake / 10^24).
        let dust = U256::from(USERS)
            + self.max_total_staked / U256::from(10u64).pow(U256::from(SCALE_DIGITS))
            + U256::from(1u64);
        prop_assert!(
            pool - owed <= dust,
            "the staking module holds {} wei more than it owes, more than rounding dust ({} wei): rewards are stranded",
            pool - owed,
            dust
        );

        // Inference: every caller's credit plus the escrow of every unsettled receipt.
        let count: u64 = w.view(modules::INFERENCE, IInference::receiptCountCall {});
        self.open_receipts.extend(self.receipts_seen + 1..=count);
        self.receipts_seen = count;
        let mut escrow = U256::ZERO;
        let mut settled = Vec::new();
        for &id in &self.open_receipts {
            let r = w.view(
                modules::INFERENCE,
                IInference::getReceiptCall { receiptId: id },
            );
            if r.settled {
                settled.push(id);
            } else {
                escrow += r.fee;
            }
        }
        for id in settled {
            self.open_receipts.remove(&id);
        }
        let mut credit = U256::ZERO;
        for i in 0..USERS {
            credit += w.view(
                modules::INFERENCE,
                IInference::creditOfCall { account: w.addr(i) },
            );
        }
        prop_assert_eq!(
            w.balance(modules::INFERENCE),
            credit + escrow,
            "the inference module holds exactly the credit ({}) plus the unsettled escrow ({})",
            credit,
            escrow
        );
        Ok(())
    }

    /// Runs one random sequence, checking the invariants after every transaction.
    fn run(&mut self, steps: &[(usize, Action, u64)]) -> Result<(), TestCaseError> {
        for (who, a, wait) in steps {
            if *wait > 0 {
                self.end_timestamp();
                self.w.env.timestamp += wait;
                self.w.env.block_number += 1;
            }
            let _ = self.act(*who, a);
            self.check()?;
        }
        Ok(())
    }
}

/// How many transactions the property test sends.
fn target_txs() -> u64 {
    match std::env::var("OPENLEDGER_PROPTEST_TXS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("OPENLEDGER_PROPTEST_TXS={v:?} is not a count")),
        Err(_) => DEFAULT_TXS,
    }
}

/// The seed: `PROPTEST_RNG_SEED` when set, otherwise a fresh one.
fn seed() -> u64 {
    match std::env::var("PROPTEST_RNG_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("PROPTEST_RNG_SEED={v:?} is not a u64")),
        Err(_) => {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0);
            h.finish()
        }
    }
}

#[test]
fn supply_is_conserved_and_every_module_covers_what_it_owes() {
    let target = target_txs();
    let cases = target.div_ceil(MIN_STEPS as u64).max(1);
    let seed = seed();
    eprintln!(
        "{cases} random runs of {MIN_STEPS}..={MAX_STEPS} transactions, seed {seed} (replay with PROPTEST_RNG_SEED={seed})"
    );
    let config = ProptestConfig {
        cases: u32::try_from(cases).expect("fewer than 2^32 runs"),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let totals: RefCell<(u64, BTreeMap<&'static str, u64>)> = RefCell::default();
    let strategy = proptest::collection::vec(step(), MIN_STEPS..=MAX_STEPS);
    let result = runner.run(&strategy, |steps| {
        let mut sim = Sim::new();
        let outcome = sim.run(&steps);
        let mut t = totals.borrow_mut();
        t.0 += sim.sent;
        for (k, n) in sim.accepted {
            *t.1.entry(k).or_default() += n;
        }
        outcome
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, steps)) => {
            // The shrunk sequence keeps at least MIN_STEPS steps: show those up to the failure.
            let mut sim = Sim::new();
            let upto = (1..=steps.len())
                .find(|&n| sim.run(&steps[n - 1..n]).is_err())
                .unwrap_or(steps.len());
            panic!(
                "{reason}\nseed {seed}; shrunk failing sequence, failing at step {upto}:\n{:#?}",
                &steps[..upto]
            )
        }
        Err(e) => panic!("seed {seed}: {e}"),
    }
    let (sent, accepted) = totals.into_inner();
    eprintln!("{sent} transactions sent; accepted by kind: {accepted:?}");
    assert!(sent >= target, "only {sent} of {target} transactions sent");
    // The mix reaches every flow whose accounting the invariants check, in most runs.
    for kind in [
        "stake",
        "requestUnstake",
        "withdraw",
        "claim paid",
        "bank transfer",
        "contribute",
        "approve",
        "registerAdapter",
        "deposit",
        "recordInference",
        "settle",
        "delegate",
        "slash",
        "burn",
    ] {
        let n = accepted.get(kind).copied().unwrap_or(0);
        assert!(
            n >= cases / 2,
            "only {n} accepted {kind} transactions in {cases} runs: the random mix no longer reaches that flow"
        );
    }
}

/// A fixed scenario through every module, so the property test's random walks are known to
/// reach deep states (approved contributions, adapters, settled receipts with contributor pay).
#[test]
fn full_flywheel_pays_contributors_and_conserves_supply() {
    let mut s = Sim::new();
    let script = [
        (
            0,
            Action::Stake {
                milli: 10_000,
                wei: 0,
            },
        ),
        (
            0,
            Action::CreateDatanet {
                permissioned: false,
            },
        ),
        (
            1,
            Action::Contribute {
                datanet: 1,
                seed: 1,
                rows: 10,
            },
        ),
        (
            2,
            Action::Contribute {
                datanet: 1,
                seed: 2,
                rows: 20,
            },
        ),
        (0, Action::Approve { cid: 1 }),
        (0, Action::Approve { cid: 2 }),
        (3, Action::RegisterBase { seed: 0 }),
        (
            3,
            Action::RegisterAdapter {
                base: 1,
                datanet: 1,
                version: 2,
            },
        ),
        (
            0,
            Action::Deposit {
                milli: 5_000,
                wei: 0,
            },
        ),
        (
            0,
            Action::ApproveOperator {
                op: 3,
                milli: 5_000,
            },
        ),
        (
            3,
            Action::Record {
                caller: 0,
                adapter: 1,
                prompt: 1000,
                completion: 2000,
                attributions: vec![(1, 600_000), (2, 300_000)],
            },
        ),
    ];
    for (who, a) in &script {
        if let Err(e) = s.act(*who, a) {
            panic!("step {a:?} was rejected: {e}");
        }
        s.check().unwrap();
    }
    let balance = |s: &Sim, a: Address| s.w.balance(a);
    let (c2_before, owner_before, treasury_before) = (
        balance(&s, s.w.addr(2)),
        balance(&s, s.w.addr(3)),
        balance(&s, modules::TREASURY),
    );
    s.act(1, &Action::Settle { ids: vec![1] }).unwrap();
    s.check().unwrap();
    let r = openledger_state::modules::inference::receipt(&s.w.kv, 1).unwrap();
    assert!(r.settled);
    let fee = r.fee;
    let bps = |b: u64| fee * U256::from(b) / U256::from(10_000u64);
    let pool = bps(5000);
    let c2_share = pool * U256::from(300_000u64) / U256::from(1_000_000u64);
    let c1_share = pool * U256::from(600_000u64) / U256::from(1_000_000u64);
    assert_eq!(
        balance(&s, s.w.addr(2)) - c2_before,
        c2_share,
        "contributor 2 gets 30% of the contributors' share"
    );
    let owner_share = fee - bps(1000) - bps(1000) - pool + (pool - c1_share - c2_share);
    assert_eq!(
        balance(&s, s.w.addr(3)) - owner_before,
        owner_share,
        "the model owner gets its share plus the unattributed rest"
    );
    assert!(
        balance(&s, modules::TREASURY) - treasury_before >= bps(1000),
        "the treasury gets the platform share"
    );
    let c2_after = balance(&s, s.w.addr(2));
    s.act(1, &Action::Settle { ids: vec![1] }).unwrap();
    assert_eq!(
        balance(&s, s.w.addr(2)),
        c2_after,
        "settling a receipt twice pays nothing twice"
    );
    assert!(
        s.act(1, &Action::Approve { cid: 1 }).is_err(),
        "only the owner may approve, and only once"
    );
    let _ = s.w.kv.get(b"params").unwrap().expect("params stored");
}

/// Gas fees reach stakers whose stakes do not divide them evenly, between stakes, partial
/// unstakes and claims: after every transaction the pool covers what it owes, and at the end
/// every staker claims and withdraws everything the views promise, leaving only dust. (Before
/// reward debts were kept at full precision, the pool fell a wei short here.)
#[test]
fn every_staker_can_claim_and_withdraw_all_it_is_owed() {
    let mut s = Sim::new();
    for (who, milli, wei) in [
        (0, 1_001_003, 7),
        (1, 2_003_001, 999_999_937),
        (2, 3_001_017, 13),
        (3, 1_000_000, 1),
    ] {
        s.act(who, &Action::Stake { milli, wei }).unwrap();
        s.check().unwrap();
    }
    for i in 0..400u64 {
        let who = (i % 4) as usize;
        let a = match i % 5 {
            1 => Action::Stake {
                milli: 1_000 + i * 7,
                wei: i * 1_000_003,
            },
            3 => Action::UnstakePart { permille: 97 },
            _ => Action::Claim,
        };
        s.act(who, &a).unwrap();
        s.check().unwrap();
    }
    // Everyone leaves: unstakes everything, claims what the view promises, withdraws.
    for who in 0..USERS {
        let stake = s.stake_of(s.w.addr(who));
        s.w.call(
            who,
            modules::STAKING,
            IStaking::requestUnstakeCall { amount: stake },
        )
        .unwrap();
        s.check().unwrap();
    }
    s.w.env.timestamp += 21;
    for who in 0..USERS {
        let me = s.w.addr(who);
        s.act(who, &Action::Claim).unwrap();
        assert_eq!(
            s.pending_of(me),
            U256::ZERO,
            "staker {who} was paid in full"
        );
        s.act(who, &Action::Withdraw).unwrap();
        s.check().unwrap();
    }
    let left = s.w.balance(modules::STAKING);
    assert!(
        left <= U256::from(USERS + 1),
        "with every staker gone the pool keeps only rounding dust, not {left} wei"
    );
}
