//! Voting power and slashing of the staking module, as governance relies on them: stake added
//! after a timepoint does not count at it (no flash votes), delegation moves votes and keeps
//! their history, unbonding stake has no votes, only the governor may slash, and a slash to
//! the treasury or to the burn keeps the supply accounting balanced.

mod common;

use alloy_primitives::{Address, Log, U256};
use alloy_sol_types::{SolCall, SolEvent};
use common::World;
use openledger_state::{
    executor::simulate_call,
    modules::{self, staking},
    Ctx, ExecError, Overlay,
};
use openledger_types::{
    abi::{IBank, IStaking},
    genesis::total_supply,
    modules::{BANK, GOVERNOR, STAKING, TREASURY},
    params::SlashDestination,
    units::one_open,
};

fn open(n: u64) -> U256 {
    U256::from(n) * one_open()
}

fn world(tune: impl FnOnce(&mut openledger_types::Params)) -> World {
    World::new("votes user", 4, 1_000_000, |p| {
        p.unstake_cooldown_secs = 20;
        tune(p)
    })
}

fn stake(w: &mut World, who: usize, amount: U256) {
    w.send(who, STAKING, amount, IStaking::stakeCall {}.abi_encode())
        .unwrap();
}

fn votes(w: &World, who: Address) -> U256 {
    w.view(STAKING, IStaking::getVotesCall { account: who })
}

/// `getPastVotes` through `eth_call`, keeping its refusal.
fn past_votes(w: &World, who: Address, t: u64) -> Result<U256, ExecError> {
    let data = IStaking::getPastVotesCall {
        account: who,
        timepoint: U256::from(t),
    }
    .abi_encode();
    let params = &w.genesis.params;
    simulate_call(&w.kv, &w.env, params, who, STAKING, U256::ZERO, &data)
        .map(|(out, _, _)| IStaking::getPastVotesCall::abi_decode_returns(&out).unwrap())
}

fn past_total(w: &World, t: u64) -> U256 {
    w.view(
        STAKING,
        IStaking::getPastTotalSupplyCall {
            timepoint: U256::from(t),
        },
    )
}

/// Moves the clock on by `secs` (a new block).
fn wait(w: &mut World, secs: u64) {
    w.env.timestamp += secs;
    w.env.block_number += 1;
}

/// Runs a staking call with the governor as sender (as the governor's `execute` does) and
/// commits it when accepted; returns the return data and the logs.
fn as_governor(w: &mut World, data: Vec<u8>) -> Result<(Vec<u8>, Vec<Log>), ExecError> {
    let mut ctx = Ctx {
        state: Overlay::new(&w.kv),
        env: &w.env,
        params: &w.genesis.params,
        sender: GOVERNOR,
        value: U256::ZERO,
        logs: Vec::new(),
    };
    let out = modules::dispatch(&mut ctx, STAKING, &data)?;
    let logs = std::mem::take(&mut ctx.logs);
    let writes = ctx.state.into_writes();
    w.kv.apply(writes);
    Ok((out, logs))
}

fn slash_call(staker: Address, amount: U256) -> Vec<u8> {
    IStaking::slashCall {
        staker,
        amount,
        reason: "double-signed ratings".into(),
    }
    .abi_encode()
}

/// The sum of every account balance in state.
fn sum_of_balances(w: &World) -> U256 {
    w.kv.prefix(b"a")
        .map(|(_, v)| U256::from_be_slice(&v[8..]))
        .fold(U256::ZERO, |a, b| a + b)
}

fn decode<E: SolEvent>(logs: &[Log]) -> Vec<E> {
    logs.iter()
        .filter_map(|l| E::decode_log_data(&l.data).ok())
        .collect()
}

#[test]
fn stake_added_after_a_timepoint_does_not_count_at_it() {
    let mut w = world(|_| {});
    let (a, b) = (w.addr(0), w.addr(1));
    let t0 = w.env.timestamp;
    stake(&mut w, 0, open(100));
    wait(&mut w, 10);
    let snapshot = w.env.timestamp - 1;
    let t1 = w.env.timestamp;
    stake(&mut w, 1, open(500));
    stake(&mut w, 0, open(1));
    wait(&mut w, 10);

    assert_eq!(past_votes(&w, a, t0 - 1).unwrap(), U256::ZERO);
    assert_eq!(past_votes(&w, a, t0).unwrap(), open(100));
    assert_eq!(past_votes(&w, a, snapshot).unwrap(), open(100));
    assert_eq!(
        past_votes(&w, b, snapshot).unwrap(),
        U256::ZERO,
        "stake added after the snapshot has no votes at it"
    );
    assert_eq!(past_total(&w, snapshot), open(100));
    assert_eq!(past_votes(&w, b, t1).unwrap(), open(500));
    assert_eq!(past_votes(&w, a, t1).unwrap(), open(101));
    assert_eq!(past_total(&w, t1), open(601));
    assert_eq!(votes(&w, b), open(500));
    assert_eq!(
        w.view(STAKING, IStaking::numCheckpointsCall { account: a }),
        2,
        "two changes at one timestamp make one checkpoint"
    );
}

#[test]
fn a_timepoint_not_yet_over_is_refused() {
    let mut w = world(|_| {});
    stake(&mut w, 0, open(100));
    let now = w.env.timestamp;
    for t in [now, now + 1, u64::MAX] {
        match past_votes(&w, w.addr(0), t) {
            Err(ExecError::Invalid(m)) => {
                assert!(m.contains("ERC5805FutureLookup"), "{m}")
            }
            other => panic!("timepoint {t} at clock {now}: expected a refusal, got {other:?}"),
        }
    }
    let clock = w.view(STAKING, IStaking::clockCall {});
    assert_eq!(clock.to::<u64>(), now);
    assert_eq!(
        w.view(STAKING, IStaking::CLOCK_MODECall {}),
        "mode=timestamp"
    );
}

#[test]
fn delegation_moves_votes_and_keeps_their_history() {
    let mut w = world(|_| {});
    let (a, b, c) = (w.addr(0), w.addr(1), w.addr(2));
    assert_eq!(
        w.view(STAKING, IStaking::delegatesCall { account: a }),
        a,
        "stake counts for the staker until it delegates"
    );
    stake(&mut w, 0, open(100));
    stake(&mut w, 1, open(10));
    wait(&mut w, 5);
    let before = w.env.timestamp - 1;

    let raw = w.sign(
        0,
        w.nonce(0),
        STAKING,
        U256::ZERO,
        IStaking::delegateCall { delegatee: b }.abi_encode(),
    );
    let tx = openledger_state::verify_raw(&raw, common::CHAIN_ID, 1 << 20).unwrap();
    let out = openledger_state::apply_tx(&w.kv, &w.env, &w.genesis.params, &tx).unwrap();
    w.kv.apply(out.writes);
    assert_eq!(
        decode::<IStaking::DelegateChanged>(&out.logs),
        vec![IStaking::DelegateChanged {
            delegator: a,
            fromDelegate: a,
            toDelegate: b
        }]
    );
    assert_eq!(
        decode::<IStaking::DelegateVotesChanged>(&out.logs),
        vec![
            IStaking::DelegateVotesChanged {
                delegate: a,
                previousVotes: open(100),
                newVotes: U256::ZERO
            },
            IStaking::DelegateVotesChanged {
                delegate: b,
                previousVotes: open(10),
                newVotes: open(110)
            }
        ]
    );
    assert_eq!(w.view(STAKING, IStaking::delegatesCall { account: a }), b);
    assert_eq!((votes(&w, a), votes(&w, b)), (U256::ZERO, open(110)));
    assert_eq!(
        w.view(STAKING, IStaking::stakeOfCall { staker: a }),
        open(100),
        "delegating moves votes, never stake"
    );

    // Later stake follows the delegation; unbonding stake leaves it.
    stake(&mut w, 0, open(20));
    assert_eq!(votes(&w, b), open(130));
    w.call(
        0,
        STAKING,
        IStaking::requestUnstakeCall { amount: open(50) },
    )
    .unwrap();
    assert_eq!(votes(&w, b), open(80), "unbonding stake has no votes");
    wait(&mut w, 5);
    let after = w.env.timestamp - 1;

    // Re-delegate to c, then to nobody: votes move, the total stays the stake.
    w.call(0, STAKING, IStaking::delegateCall { delegatee: c })
        .unwrap();
    assert_eq!((votes(&w, b), votes(&w, c)), (open(10), open(70)));
    wait(&mut w, 5);
    w.call(
        0,
        STAKING,
        IStaking::delegateCall {
            delegatee: Address::ZERO,
        },
    )
    .unwrap();
    assert_eq!(votes(&w, c), U256::ZERO);
    assert_eq!(votes(&w, Address::ZERO), U256::ZERO, "nobody holds votes");
    wait(&mut w, 5);
    let undelegated = w.env.timestamp - 1;
    w.call(0, STAKING, IStaking::delegateCall { delegatee: a })
        .unwrap();
    assert_eq!(
        votes(&w, a),
        open(70),
        "delegating to oneself restores the votes"
    );
    wait(&mut w, 1);

    // History: each account's votes at each past timepoint.
    assert_eq!(past_votes(&w, a, before).unwrap(), open(100));
    assert_eq!(past_votes(&w, b, before).unwrap(), open(10));
    assert_eq!(past_votes(&w, a, after).unwrap(), U256::ZERO);
    assert_eq!(past_votes(&w, b, after).unwrap(), open(80));
    assert_eq!(past_votes(&w, c, after).unwrap(), U256::ZERO);
    assert_eq!(past_votes(&w, c, after + 5).unwrap(), open(70));
    assert_eq!(past_votes(&w, c, undelegated).unwrap(), U256::ZERO);
    assert_eq!(past_total(&w, before), open(110));
    assert_eq!(past_total(&w, after), open(80));
    assert_eq!(
        past_total(&w, undelegated),
        open(80),
        "the total counts stake delegated to nobody"
    );
    let n: u32 = w.view(STAKING, IStaking::numCheckpointsCall { account: b });
    let cps: Vec<_> = (0..n)
        .map(|pos| w.view(STAKING, IStaking::checkpointsCall { account: b, pos }))
        .map(|c| (c.key.to::<u64>(), c.value.to::<U256>()))
        .collect();
    assert_eq!(
        cps,
        vec![
            (1_000, open(10)),
            (1_005, open(80)),
            (1_010, open(10))
        ],
        "b's checkpoints: its own stake, the delegation (+100, +20, -50 in one second), the re-delegation"
    );
}

#[test]
fn rewards_stay_with_the_staker_who_delegates() {
    let mut w = world(|_| {});
    let b = w.addr(1);
    stake(&mut w, 0, open(100));
    stake(&mut w, 1, open(100));
    w.call(0, STAKING, IStaking::delegateCall { delegatee: b })
        .unwrap();
    let pending = |w: &World, i| -> U256 {
        w.view(STAKING, IStaking::pendingRewardsCall { staker: w.addr(i) })
    };
    let before = (pending(&w, 0), pending(&w, 1));
    // Gas fees of these calls flow into the pool, shared by stake (equal), not by votes.
    for _ in 0..5 {
        w.call(
            2,
            BANK,
            IBank::transferCall {
                to: b,
                amount: U256::from(1u64),
            },
        )
        .unwrap();
    }
    let gained = (pending(&w, 0) - before.0, pending(&w, 1) - before.1);
    assert!(!gained.0.is_zero());
    assert!(
        gained.0.abs_diff(gained.1) <= U256::from(1u64),
        "equal stakes earn equally whoever holds the votes: {gained:?}"
    );
}

#[test]
fn only_the_governor_may_slash() {
    let mut w = world(|_| {});
    let a = w.addr(0);
    stake(&mut w, 0, open(100));
    match w.call(
        1,
        STAKING,
        IStaking::slashCall {
            staker: a,
            amount: open(10),
            reason: "grief".into(),
        },
    ) {
        Err(ExecError::Unauthorized(m)) => assert!(m.contains("governor"), "{m}"),
        other => panic!("a staker slashing another: expected a refusal, got {other:?}"),
    }
    match w.call(
        0,
        STAKING,
        IStaking::slashCall {
            staker: a,
            amount: open(10),
            reason: "self".into(),
        },
    ) {
        Err(ExecError::Unauthorized(_)) => {}
        other => panic!("a staker slashing itself: expected a refusal, got {other:?}"),
    }
    assert_eq!(
        w.view(STAKING, IStaking::stakeOfCall { staker: a }),
        open(100)
    );
}

#[test]
fn a_slash_to_the_treasury_takes_stake_then_unbonding_and_moves_votes() {
    let mut w = world(|_| {});
    let (a, b) = (w.addr(0), w.addr(1));
    stake(&mut w, 0, open(100));
    w.call(0, STAKING, IStaking::delegateCall { delegatee: b })
        .unwrap();
    w.call(
        0,
        STAKING,
        IStaking::requestUnstakeCall { amount: open(40) },
    )
    .unwrap();
    wait(&mut w, 3);
    let treasury = w.balance(TREASURY);
    let pool = w.balance(STAKING);

    let (out, logs) = as_governor(&mut w, slash_call(a, open(70))).unwrap();
    assert_eq!(
        IStaking::slashCall::abi_decode_returns(&out).unwrap(),
        open(70)
    );
    assert_eq!(
        w.view(STAKING, IStaking::stakeOfCall { staker: a }),
        U256::ZERO
    );
    let unb = w.view(STAKING, IStaking::unbondingOfCall { staker: a });
    assert_eq!(
        unb.amount,
        open(30),
        "60 from stake, then 10 from unbonding"
    );
    assert_eq!(votes(&w, b), U256::ZERO, "slashed stake loses its votes");
    assert_eq!(w.view(STAKING, IStaking::totalStakedCall {}), U256::ZERO);
    assert_eq!(w.balance(TREASURY) - treasury, open(70));
    assert_eq!(pool - w.balance(STAKING), open(70));
    let slashed = decode::<IStaking::Slashed>(&logs);
    assert_eq!(slashed.len(), 1);
    assert_eq!((slashed[0].amount, slashed[0].burned), (open(70), false));
    assert_eq!(sum_of_balances(&w), total_supply());

    // Asking for more than is left slashes what is left.
    let (out, _) = as_governor(&mut w, slash_call(a, open(1_000))).unwrap();
    assert_eq!(
        IStaking::slashCall::abi_decode_returns(&out).unwrap(),
        open(30)
    );
    // And a withdrawal finds nothing.
    wait(&mut w, 30);
    assert!(w.call(0, STAKING, IStaking::withdrawCall {}).is_err());
    assert!(
        as_governor(&mut w, slash_call(a, U256::ZERO)).is_err(),
        "a zero slash is refused"
    );
}

#[test]
fn a_burning_slash_lowers_the_supply_and_balances() {
    let mut w = world(|p| p.slash_destination = SlashDestination::Burn);
    let a = w.addr(0);
    stake(&mut w, 0, open(100));
    let treasury = w.balance(TREASURY);
    let (_, logs) = as_governor(&mut w, slash_call(a, open(25))).unwrap();
    let supply: U256 = w.view(BANK, IBank::totalSupplyCall {});
    assert_eq!(supply, total_supply() - open(25));
    assert_eq!(w.view(STAKING, IStaking::totalBurnedCall {}), open(25));
    assert_eq!(sum_of_balances(&w), supply, "balances add up to the supply");
    assert_eq!(w.balance(TREASURY), treasury, "a burn pays nobody");
    assert_eq!(
        decode::<IBank::Transfer>(&logs),
        vec![IBank::Transfer {
            from: STAKING,
            to: Address::ZERO,
            value: open(25)
        }],
        "a burn is logged as a transfer to address(0)"
    );
    assert!(decode::<IStaking::Slashed>(&logs)[0].burned);
    assert_eq!(votes(&w, a), open(75));
}

#[test]
fn other_modules_slash_through_the_rust_api() {
    let mut w = world(|_| {});
    let a = w.addr(0);
    stake(&mut w, 0, open(10));
    let mut ctx = Ctx {
        state: Overlay::new(&w.kv),
        env: &w.env,
        params: &w.genesis.params,
        sender: openledger_types::modules::RLHF,
        value: U256::ZERO,
        logs: Vec::new(),
    };
    let slashed = staking::slash(&mut ctx, &a, open(4), "outlier rating").unwrap();
    assert_eq!(slashed, open(4));
    assert_eq!(staking::votes(&ctx.state, &a).unwrap(), open(6));
    assert_eq!(staking::stake_of(&ctx.state, &a).unwrap(), open(6));
    let nobody = Address::repeat_byte(9);
    assert_eq!(
        staking::slash(&mut ctx, &nobody, open(4), "x").unwrap(),
        U256::ZERO,
        "slashing an account without stake takes nothing"
    );
    let long = "x".repeat(w.genesis.params.max_string_bytes as usize + 1);
    assert!(staking::slash(&mut ctx, &a, open(1), &long).is_err());
}

#[test]
fn stake_from_before_voting_checkpoints_can_still_leave() {
    let mut w = world(|_| {});
    let a = w.addr(0);
    stake(&mut w, 0, open(100));
    // State of an older release: stake recorded, no voting checkpoints.
    let checkpoints: Vec<Vec<u8>> =
        w.kv.sorted()
            .map(|(k, _)| k)
            .filter(|k| {
                k.starts_with(b"s/k")
                    || k.starts_with(b"s/n")
                    || k.starts_with(b"s/K")
                    || k.starts_with(b"s/N")
            })
            .map(<[u8]>::to_vec)
            .collect();
    assert!(!checkpoints.is_empty());
    for k in checkpoints {
        w.kv.remove(&k);
    }
    assert_eq!(votes(&w, a), U256::ZERO);
    w.call(
        0,
        STAKING,
        IStaking::requestUnstakeCall { amount: open(40) },
    )
    .expect("unstaking stake that never had votes");
    assert_eq!(votes(&w, a), U256::ZERO);
    stake(&mut w, 0, open(5));
    assert_eq!(votes(&w, a), open(5), "new stake counts");
    assert_eq!(w.view(STAKING, IStaking::totalStakedCall {}), open(65));
    wait(&mut w, 1);
    assert_eq!(
        past_total(&w, w.env.timestamp - 1),
        open(65),
        "the total is checkpointed whole"
    );
}
