//! A `recordInferences` batch whose records attribute the same contributions again and again
//! (and contributions of the same contributor) pays exactly what the fee split says, record by
//! record, with one `Transfer` per payment in order: the values and logs are computed here from
//! the governed split, independently of how settlement reads and pays. Settling the same
//! records later with `settle` (a receipt listed twice is paid once) ends in the same balances.

mod common;
mod loops;

use alloy_primitives::{keccak256, Address, Log, B256, U256};
use alloy_sol_types::{SolCall, SolEvent};
use common::{World, CHAIN_ID};
use loops::{deposit, open, stake_and_join};
use openledger_state::{
    apply_tx,
    modules::{datanet, inference, staking::SCALE},
    verify_raw, MemKv, Outcome,
};
use openledger_types::{
    abi::{IBank, IDatanet, IInference, IModel, IRlhf},
    modules::{BANK, DATANET, INFERENCE, MODEL, RLHF, STAKING, TREASURY},
    params::{BPS, PPM},
};

const OWNER: usize = 0;
/// Contributor 1 owns contributions 1 and 2, contributor 2 owns 3, contributor 3 owns 4.
const CONTRIBUTORS: [usize; 3] = [1, 2, 3];
const CALLERS: [usize; 2] = [4, 5];
const OPERATOR: usize = 6;
const VALIDATOR: usize = 7;

/// Signs and applies a transaction; commits and returns its outcome.
fn send(w: &mut World, who: usize, to: Address, data: Vec<u8>) -> Outcome {
    let raw = w.sign(who, w.nonce(who), to, U256::ZERO, data);
    let tx = verify_raw(&raw, CHAIN_ID, w.genesis.params.max_tx_bytes).unwrap();
    let mut out = apply_tx(&w.kv, &w.env, &w.genesis.params, &tx).unwrap();
    w.kv.apply(std::mem::take(&mut out.writes));
    out
}

fn call<C: SolCall>(w: &mut World, who: usize, to: Address, c: C) -> Outcome {
    send(w, who, to, c.abi_encode())
}

/// Datanet 1 with four approved contributions, adapter 1 trained on all of them, a staked
/// RLHF validator (so fees feed both the stakers pool and the RLHF pool), and two callers with
/// credit who let the operator spend it.
fn world() -> World {
    let mut w = World::new("batch cache", 8, 100_000, |_| {});
    call(&mut w, OWNER, DATANET, common::public_datanet("d"));
    for (i, who) in [1usize, 1, 2, 3].into_iter().enumerate() {
        call(
            &mut w,
            who,
            DATANET,
            IDatanet::contributeCall {
                datanetId: 1,
                rowsRoot: keccak256([i as u8]),
                rowCount: 3,
                byteSize: 300,
                score: 9000,
                metadataUri: String::new(),
            },
        );
        call(
            &mut w,
            OWNER,
            DATANET,
            IDatanet::approveCall {
                contributionId: i as u64 + 1,
            },
        );
    }
    let version = datanet::contribution(&w.kv, 4).unwrap().version;
    call(
        &mut w,
        OWNER,
        MODEL,
        IModel::registerBaseModelCall {
            modelHash: keccak256(b"base"),
            name: "base".into(),
        },
    );
    call(
        &mut w,
        OWNER,
        MODEL,
        IModel::registerAdapterCall {
            baseModelId: 1,
            name: "helper".into(),
            datanetIds: vec![1],
            datanetVersions: vec![version],
            trainingConfigHash: keccak256(b"config"),
            adapterHash: keccak256(b"helper"),
            attributionIndexRoot: B256::ZERO,
        },
    );
    // A total stake that does not divide the accumulator's scale: deposits leave remainders.
    stake_and_join(&mut w, VALIDATOR, open(2_000) + U256::from(7u8));
    let operator = w.addr(OPERATOR);
    for c in CALLERS {
        deposit(&mut w, c, open(100));
        call(
            &mut w,
            c,
            INFERENCE,
            IInference::approveOperatorCall {
                operator,
                allowance: open(100),
            },
        );
    }
    w
}

/// Six records, alternating callers, attributing contributions 1-4 repeatedly (one with
/// none, so its whole contributors' share goes to the model owner).
fn records(w: &World) -> Vec<IInference::InferenceRecord> {
    let tops: [&[(u64, u32)]; 6] = [
        &[(1, 300_000), (2, 200_000), (3, 100_000)],
        &[(1, 500_000), (4, 250_000)],
        &[(2, 400_000), (3, 400_000), (1, 100_000)],
        &[],
        &[(4, 1_000_000)],
        &[(3, 10), (1, 999_990)],
    ];
    tops.iter()
        .enumerate()
        .map(|(i, top)| IInference::InferenceRecord {
            requestId: keccak256([i as u8, 7]),
            caller: w.addr(CALLERS[i % 2]),
            adapterId: 1,
            promptTokens: 100 + 7 * i as u32,
            completionTokens: 50 + 13 * i as u32,
            top: top
                .iter()
                .map(|&(id, weight)| IInference::Attribution {
                    contributionId: id,
                    weightPpm: weight,
                })
                .collect(),
            attributionRoot: keccak256([i as u8]),
        })
        .collect()
}

fn log<E: SolEvent>(address: Address, e: E) -> Log {
    Log {
        address,
        data: e.encode_log_data(),
    }
}

/// A staking record (`s/t` total stake, `s/r` reward-per-share accumulator, `s/d` carried
/// remainder; see the staking module's keys).
fn staking_value(kv: &MemKv, key: &[u8]) -> U256 {
    kv.value(key).map(U256::from_be_slice).unwrap_or_default()
}

/// The accumulator and remainder after one reward deposit per amount, each carrying its
/// remainder into the next (what the staking module does for one deposit).
fn deposits(total: U256, mut acc: U256, mut rest: U256, amounts: &[U256]) -> (U256, U256) {
    for a in amounts.iter().filter(|a| !a.is_zero()) {
        let scaled = *a * SCALE + rest;
        acc += scaled / total;
        rest = scaled % total;
    }
    (acc, rest)
}

/// What settling `records` (receipts `first`, `first + 1`, …) must pay and log, from the split.
struct Expected {
    logs: Vec<Log>,
    /// Balance changes of the payees (contributors, owner, treasury, RLHF, stakers pool).
    paid: std::collections::BTreeMap<Address, U256>,
    fees: Vec<U256>,
    /// Each receipt's deposit into the stakers pool.
    stakers: Vec<U256>,
}

/// A payment from the inference module: its `Transfer` log (none for 0) and the payee's gain.
fn pay(e: &mut Expected, to: Address, value: U256) {
    *e.paid.entry(to).or_default() += value;
    if !value.is_zero() {
        e.logs.push(log(
            BANK,
            IBank::Transfer {
                from: INFERENCE,
                to,
                value,
            },
        ));
    }
}

fn expected(w: &World, records: &[IInference::InferenceRecord], first: u64) -> Expected {
    let p = &w.genesis.params;
    let contributor = |id: u64| w.addr([1, 1, 2, 3][id as usize - 1]);
    let owner = w.addr(OWNER);
    let mut e = Expected {
        logs: Vec::new(),
        paid: Default::default(),
        fees: Vec::new(),
        stakers: Vec::new(),
    };
    let part = |fee: U256, bps: u16| fee * U256::from(bps) / U256::from(BPS);
    for (i, r) in records.iter().enumerate() {
        let id = first + i as u64;
        let fee = p.price_per_prompt_token * U256::from(r.promptTokens)
            + p.price_per_completion_token * U256::from(r.completionTokens);
        e.fees.push(fee);
        let s = &p.fee_split;
        let (platform, stakers, pool) = (
            part(fee, s.platform_bps),
            part(fee, s.stakers_bps),
            part(fee, s.contributors_bps),
        );
        let mut contributors = U256::ZERO;
        for a in &r.top {
            let amount = pool * U256::from(a.weightPpm) / U256::from(PPM);
            contributors += amount;
            let to = contributor(a.contributionId);
            pay(&mut e, to, amount);
            e.logs.push(log(
                INFERENCE,
                IInference::ContributorPaid {
                    receiptId: id,
                    contributionId: a.contributionId,
                    contributor: to,
                    amount,
                },
            ));
        }
        let to_owner = fee - platform - stakers - contributors;
        pay(&mut e, TREASURY, platform);
        pay(&mut e, owner, to_owner);
        let cut = part(stakers, p.rlhf.rlhf_fee_bps);
        assert!(!cut.is_zero(), "the test needs an RLHF slice");
        pay(&mut e, RLHF, cut);
        e.logs.push(log(
            RLHF,
            IRlhf::RewardsFunded {
                receiptId: id,
                from: INFERENCE,
                amount: cut,
            },
        ));
        *e.paid.entry(STAKING).or_default() += stakers - cut;
        e.stakers.push(stakers - cut);
        e.logs.push(log(
            INFERENCE,
            IInference::FeeSettled {
                receiptId: id,
                platform,
                modelOwner: to_owner,
                stakers: stakers - cut,
                contributors,
            },
        ));
    }
    e
}

/// The payees' and the inference module's balances, and the RLHF pool.
fn snapshot(w: &World) -> Vec<(Address, U256)> {
    let mut who: Vec<Address> = CONTRIBUTORS.iter().map(|&i| w.addr(i)).collect();
    who.extend([w.addr(OWNER), TREASURY, RLHF, STAKING, INFERENCE]);
    let mut s: Vec<(Address, U256)> = who.iter().map(|&a| (a, w.balance(a))).collect();
    s.push((Address::ZERO, w.view(RLHF, IRlhf::rewardPoolCall {})));
    s
}

#[test]
fn a_batch_with_repeated_contributions_pays_and_logs_each_record_by_the_split() {
    let mut w = world();
    let before = snapshot(&w);
    let rs = records(&w);
    let first = w.view(INFERENCE, IInference::receiptCountCall {}) + 1;
    let exp = expected(&w, &rs, first);
    let [total, acc, rest] = [b"s/t", b"s/r", b"s/d"].map(|k| staking_value(&w.kv, k));
    assert!(
        !acc.is_zero() && !rest.is_zero(),
        "rewards were deposited before, leaving a remainder"
    );
    let out = call(
        &mut w,
        OPERATOR,
        INFERENCE,
        IInference::recordInferencesCall {
            records: rs.clone(),
            settleNow: true,
        },
    );
    // The stakers pool: the gas deposit (made before the call), then one per receipt.
    let gas = U256::from(out.gas_used) * U256::from(out.gas_price);
    let (acc, rest) = deposits(total, acc, rest, &[&[gas], &exp.stakers[..]].concat());
    assert_eq!(
        [b"s/r", b"s/d"].map(|k| staking_value(&w.kv, k)),
        [acc, rest],
        "reward accumulator and carried remainder"
    );

    // Logs: each record's InferenceRecorded and InferenceRequest, then each settlement's.
    let recorded = 2 * rs.len();
    assert_eq!(
        out.logs[recorded..],
        exp.logs[..],
        "settlement logs, in order"
    );
    for (i, r) in rs.iter().enumerate() {
        assert_eq!(
            out.logs[2 * i + 1],
            log(
                INFERENCE,
                IInference::InferenceRequest {
                    requestId: r.requestId,
                    receiptId: first + i as u64,
                },
            )
        );
    }

    // Balances: every payee got exactly its sum; the inference module paid out every fee; the
    // stakers pool also got this transaction's gas.
    let fees: U256 = exp.fees.iter().sum();
    for ((a, b0), (_, b1)) in before.iter().zip(snapshot(&w)) {
        let want = match *a {
            INFERENCE => *b0 - fees,
            STAKING => *b0 + exp.paid[&STAKING] + gas,
            Address::ZERO => *b0 + exp.paid[&RLHF],
            _ => *b0 + exp.paid[a],
        };
        assert_eq!(b1, want, "balance of {a}");
    }
    // Receipts: written once each, settled, with the fee each caller's credit paid.
    let mut credit = [open(100), open(100)];
    for (i, r) in rs.iter().enumerate() {
        let got = inference::receipt(&w.kv, first + i as u64).unwrap();
        assert!(got.settled, "receipt {} settled", got.id);
        assert_eq!(
            (got.fee, got.caller, &got.top),
            (exp.fees[i], r.caller, &r.top)
        );
        credit[i % 2] -= exp.fees[i];
    }
    for (k, &c) in CALLERS.iter().enumerate() {
        let a = w.addr(c);
        assert_eq!(
            w.view(INFERENCE, IInference::creditOfCall { account: a }),
            credit[k]
        );
    }
}

#[test]
fn settling_recorded_receipts_later_pays_the_same_as_settling_at_once() {
    let mut at_once = world();
    let rs = records(&at_once);
    let first = at_once.view(INFERENCE, IInference::receiptCountCall {}) + 1;
    let gas1 = {
        let out = call(
            &mut at_once,
            OPERATOR,
            INFERENCE,
            IInference::recordInferencesCall {
                records: rs.clone(),
                settleNow: true,
            },
        );
        U256::from(out.gas_used) * U256::from(out.gas_price)
    };

    let mut later = world();
    let mut gas2 = U256::ZERO;
    let out = call(
        &mut later,
        OPERATOR,
        INFERENCE,
        IInference::recordInferencesCall {
            records: rs.clone(),
            settleNow: false,
        },
    );
    gas2 += U256::from(out.gas_used) * U256::from(out.gas_price);
    let ids: Vec<u64> = (first..first + rs.len() as u64)
        .chain([first + 1])
        .collect();
    let out = call(
        &mut later,
        OPERATOR,
        INFERENCE,
        IInference::settleCall { receiptIds: ids },
    );
    gas2 += U256::from(out.gas_used) * U256::from(out.gas_price);
    let exp = expected(&later, &rs, first);
    assert_eq!(
        out.logs, exp.logs,
        "settle logs each receipt once, in order"
    );

    for ((a, b1), (_, b2)) in snapshot(&at_once).into_iter().zip(snapshot(&later)) {
        if a == STAKING {
            assert_eq!(b1 - gas1, b2 - gas2, "stakers pool, less gas");
        } else {
            assert_eq!(b1, b2, "balance of {a}");
        }
    }
    for id in first..first + rs.len() as u64 {
        assert_eq!(
            inference::receipt(&at_once.kv, id).unwrap(),
            inference::receipt(&later.kv, id).unwrap()
        );
    }
}
