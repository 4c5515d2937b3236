//! Property tests: under random sequences of valid and invalid signed transactions touching
//! every module, the total supply is conserved exactly, no balance underflows, rejected
//! transactions change nothing, and the staking module stays solvent.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{keccak256, Address, TxKind, B256, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use openledger_state::{
    apply_tx, codec, genesis::genesis_writes, modules::bank, verify_raw, Env, MemKv, StateRead,
};
use openledger_types::{
    abi::{IBank, IDatanet, IInference, IModel, IStaking},
    genesis::total_supply,
    modules,
    units::one_open,
    Genesis,
};
use proptest::prelude::*;

const CHAIN_ID: u64 = 77;
const USERS: usize = 4;

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
    },
    Unstake {
        milli: u64,
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
    ValueToView {
        milli: u64,
    },
    StaleNonce,
    Wait {
        secs: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let milli = 0u64..3_000_000_000; // up to 3,000,000 OPEN: more than anyone has
    prop_oneof![
        (0..USERS, milli.clone()).prop_map(|(to, milli)| Action::Transfer { to, milli }),
        (0..USERS, milli.clone()).prop_map(|(to, milli)| Action::BankTransfer { to, milli }),
        (0u64..5_000_000).prop_map(|milli| Action::Stake { milli }),
        (0u64..5_000_000).prop_map(|milli| Action::Unstake { milli }),
        Just(Action::Withdraw),
        Just(Action::Claim),
        any::<bool>().prop_map(|permissioned| Action::CreateDatanet { permissioned }),
        (1u64..4, any::<u8>(), 0u64..50).prop_map(|(datanet, seed, rows)| Action::Contribute {
            datanet,
            seed,
            rows
        }),
        (1u64..8).prop_map(|cid| Action::Approve { cid }),
        (1u64..8).prop_map(|cid| Action::Reject { cid }),
        (1u64..4, 0..USERS).prop_map(|(datanet, user)| Action::Grant { datanet, user }),
        (0u8..3).prop_map(|seed| Action::RegisterBase { seed }),
        (1u64..3, 1u64..4, 1u64..4).prop_map(|(base, datanet, version)| Action::RegisterAdapter {
            base,
            datanet,
            version
        }),
        (0u64..2_000_000).prop_map(|milli| Action::Deposit { milli }),
        (0u64..2_000_000).prop_map(|milli| Action::WithdrawCredit { milli }),
        (0..USERS, 0u64..2_000_000).prop_map(|(op, milli)| Action::ApproveOperator { op, milli }),
        (
            0..USERS,
            1u64..3,
            0u32..5000,
            0u32..5000,
            proptest::collection::vec((1u64..8, 0u32..600_000), 0..4)
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
        proptest::collection::vec(1u64..6, 0..4).prop_map(|ids| Action::Settle { ids }),
        (proptest::collection::vec(any::<u8>(), 0..80), 0usize..6)
            .prop_map(|(bytes, module)| Action::Garbage { bytes, module }),
        (1u64..1000).prop_map(|milli| Action::ValueToView { milli }),
        Just(Action::StaleNonce),
        (1u64..30).prop_map(|secs| Action::Wait { secs }),
    ]
}

fn milli(m: u64) -> U256 {
    U256::from(m) * one_open() / U256::from(1000u64)
}

struct World {
    kv: MemKv,
    signers: Vec<PrivateKeySigner>,
    genesis: Genesis,
    env: Env,
    applied: usize,
}

impl World {
    fn new() -> World {
        let signers: Vec<_> = (0..USERS)
            .map(|i| PrivateKeySigner::from_bytes(&keccak256(format!("prop user {i}"))).unwrap())
            .collect();
        let addrs: Vec<Address> = signers.iter().map(|s| s.address()).collect();
        let mut genesis = Genesis::with_accounts(
            CHAIN_ID,
            1_000,
            &addrs,
            U256::from(1_000_000u64) * one_open(),
        )
        .unwrap();
        genesis.params.unstake_cooldown_secs = 20;
        let mut kv = MemKv::default();
        kv.apply(genesis_writes(&genesis).unwrap());
        World {
            kv,
            signers,
            genesis,
            env: Env {
                chain_id: CHAIN_ID,
                block_number: 1,
                timestamp: 1_000,
            },
            applied: 0,
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.signers[i].address()
    }

    fn sign(&self, who: usize, nonce: u64, to: Address, value: U256, data: Vec<u8>) -> Vec<u8> {
        let tx = TxEip1559 {
            chain_id: CHAIN_ID,
            nonce,
            gas_limit: 2_000_000,
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: TxKind::Call(to),
            value,
            access_list: Default::default(),
            input: data.into(),
        };
        let sig = self.signers[who]
            .sign_hash_sync(&tx.signature_hash())
            .unwrap();
        TxEnvelope::from(tx.into_signed(sig)).encoded_2718()
    }

    /// Applies one action from `who`; returns whether it was accepted.
    fn act(&mut self, who: usize, a: &Action) -> bool {
        let nonce = bank::account(&self.kv, &self.addr(who)).unwrap().nonce;
        let (to, value, data, nonce) = match a.clone() {
            Action::Transfer { to, milli: m } => (self.addr(to), milli(m), vec![], nonce),
            Action::BankTransfer { to, milli: m } => (
                modules::BANK,
                U256::ZERO,
                IBank::transferCall {
                    to: self.addr(to),
                    amount: milli(m),
                }
                .abi_encode(),
                nonce,
            ),
            Action::Stake { milli: m } => (
                modules::STAKING,
                milli(m),
                IStaking::stakeCall {}.abi_encode(),
                nonce,
            ),
            Action::Unstake { milli: m } => (
                modules::STAKING,
                U256::ZERO,
                IStaking::requestUnstakeCall { amount: milli(m) }.abi_encode(),
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
                    user: self.addr(user),
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
                    name: "a".into(),
                    datanetIds: vec![datanet],
                    datanetVersions: vec![version],
                    trainingConfigHash: B256::repeat_byte(1),
                    adapterHash: B256::repeat_byte(2),
                    attributionIndexRoot: B256::ZERO,
                }
                .abi_encode(),
                nonce,
            ),
            Action::Deposit { milli: m } => (
                modules::INFERENCE,
                milli(m),
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
                    operator: self.addr(op),
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
            } => (
                modules::INFERENCE,
                U256::ZERO,
                IInference::recordInferenceCall {
                    caller: self.addr(caller),
                    adapterId: adapter,
                    promptTokens: prompt,
                    completionTokens: completion,
                    top: attributions
                        .into_iter()
                        .map(|(c, w)| IInference::Attribution {
                            contributionId: c,
                            weightPpm: w,
                        })
                        .collect(),
                    attributionRoot: B256::repeat_byte(3),
                }
                .abi_encode(),
                nonce,
            ),
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
                self.addr((who + 1) % USERS),
                U256::from(1u64),
                vec![],
                nonce.wrapping_sub(1),
            ),
            Action::Wait { secs } => {
                self.env.timestamp += secs;
                self.env.block_number += 1;
                return true;
            }
        };
        let raw = self.sign(who, nonce, to, value, data);
        let tx = verify_raw(&raw, CHAIN_ID, self.genesis.params.max_tx_bytes)
            .expect("a signed transaction verifies");
        assert_eq!(tx.sender, self.addr(who));
        match apply_tx(&self.kv, &self.env, &self.genesis.params, &tx) {
            Ok(out) => {
                self.kv.apply(out.writes);
                self.applied += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn check_invariants(&self) {
        let mut sum = U256::ZERO;
        for (k, v) in &self.kv.0 {
            if k.len() == 21 && k[0] == b'a' {
                assert_eq!(v.len(), 40, "account record has 40 bytes");
                sum = sum
                    .checked_add(U256::from_be_slice(&v[8..]))
                    .expect("balances never overflow");
            }
        }
        assert_eq!(
            sum,
            total_supply(),
            "the sum of all balances is the fixed supply"
        );
        let staked = codec::get_u256(&self.kv, b"s/t").unwrap();
        let pool = bank::account(&self.kv, &modules::STAKING).unwrap().balance;
        assert!(
            pool >= staked,
            "the staking module holds at least the total stake ({pool} < {staked})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn supply_is_conserved_and_rejections_change_nothing(
        steps in proptest::collection::vec((0..USERS, action()), 1..60)
    ) {
        let mut w = World::new();
        for (who, a) in &steps {
            let before = w.kv.0.clone();
            let accepted = w.act(*who, a);
            if !accepted {
                prop_assert_eq!(&before, &w.kv.0, "a rejected transaction changed state");
            }
            w.check_invariants();
        }
    }
}

/// A fixed scenario through every module, so the property test's random walks are known to
/// reach deep states (approved contributions, adapters, settled receipts with contributor pay).
#[test]
fn full_flywheel_pays_contributors_and_conserves_supply() {
    let mut w = World::new();
    let script = [
        (0, Action::Stake { milli: 10_000 }),
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
        (0, Action::Deposit { milli: 5_000 }),
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
        assert!(w.act(*who, a), "step {a:?} was rejected");
        w.check_invariants();
    }
    let balance = |w: &World, a: Address| bank::account(&w.kv, &a).unwrap().balance;
    let (c2_before, owner_before, treasury_before) = (
        balance(&w, w.addr(2)),
        balance(&w, w.addr(3)),
        balance(&w, modules::TREASURY),
    );
    assert!(w.act(1, &Action::Settle { ids: vec![1] }));
    w.check_invariants();
    let r = openledger_state::modules::inference::receipt(&w.kv, 1).unwrap();
    assert!(r.settled);
    let fee = r.fee;
    let bps = |b: u64| fee * U256::from(b) / U256::from(10_000u64);
    let pool = bps(5000);
    let c2_share = pool * U256::from(300_000u64) / U256::from(1_000_000u64);
    let c1_share = pool * U256::from(600_000u64) / U256::from(1_000_000u64);
    assert_eq!(
        balance(&w, w.addr(2)) - c2_before,
        c2_share,
        "contributor 2 gets 30% of the contributors' share"
    );
    let owner_share = fee - bps(1000) - bps(1000) - pool + (pool - c1_share - c2_share);
    assert_eq!(
        balance(&w, w.addr(3)) - owner_before,
        owner_share,
        "the model owner gets its share plus the unattributed rest"
    );
    assert!(
        balance(&w, modules::TREASURY) - treasury_before >= bps(1000),
        "the treasury gets the platform share"
    );
    let c2_after = balance(&w, w.addr(2));
    w.act(1, &Action::Settle { ids: vec![1] });
    assert_eq!(
        balance(&w, w.addr(2)),
        c2_after,
        "settling a receipt twice pays nothing twice"
    );
    assert!(
        !w.act(1, &Action::Approve { cid: 1 }),
        "only the owner may approve, and only once"
    );
    assert!(w.applied >= script.len());
    let _ = w.kv.get(b"params").unwrap().expect("params stored");
}
