//! The supply-conservation checks the chain's property tests make, re-derived over a simulated
//! state: the sum of all balances is the recorded supply, and the recorded supply plus what was
//! burned is the genesis supply; every module holds what it owes (staking: stakes, unbonding
//! OPEN and unpaid rewards, within rounding dust; inference: callers' credit plus the escrow of
//! unsettled receipts; model: open proposals' escrow and bounties; RLHF: its reward pool; the
//! others nothing).

use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use openledger_state::{
    executor::simulate_call,
    modules::{bank, inference, model::proposals},
    Env, MemKv,
};
use openledger_types::{
    abi::{IInference, IRlhf, IStaking},
    genesis::total_supply,
    modules, Params,
};
use serde::Serialize;

/// What the checks found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SupplyCheck {
    /// Sum of every account's balance, in OPEN (decimal string, exact).
    pub sum_of_balances: String,
    /// The recorded supply.
    pub supply: String,
    pub burned: String,
    /// Staking module balance above what it owes (rounding dust of the reward accumulator), wei.
    pub staking_dust_wei: String,
    /// Every check passed.
    pub ok: bool,
    /// The checks that failed, in words.
    pub failures: Vec<String>,
}

fn view<C: SolCall>(
    kv: &MemKv,
    params: &Params,
    env: &Env,
    to: Address,
    c: C,
) -> Option<C::Return> {
    let (out, _, _) = simulate_call(
        kv,
        env,
        params,
        Address::ZERO,
        to,
        U256::ZERO,
        &c.abi_encode(),
    )
    .ok()?;
    C::abi_decode_returns(&out).ok()
}

/// Runs every check over `kv`; `accounts` are every account that may stake or hold credit.
pub fn check(kv: &MemKv, params: &Params, env: &Env, accounts: &[Address]) -> SupplyCheck {
    let mut failures = Vec::new();
    let mut sum = U256::ZERO;
    for (k, v) in kv.prefix(b"a") {
        if k.len() != 21 || v.len() != 40 {
            failures.push(format!("a malformed account record under key {k:02x?}"));
            continue;
        }
        sum += U256::from_be_slice(&v[8..]);
    }
    let supply = openledger_state::codec::get_u256(kv, bank::SUPPLY_KEY).unwrap_or_default();
    let burned: U256 = view(
        kv,
        params,
        env,
        modules::STAKING,
        IStaking::totalBurnedCall {},
    )
    .unwrap_or_default();
    if sum != supply {
        failures.push(format!(
            "the sum of all balances ({sum} wei) is not the recorded supply ({supply} wei)"
        ));
    }
    if supply + burned != total_supply() {
        failures.push("the recorded supply plus what was burned is not the genesis supply".into());
    }
    let bal = |a: &Address| bank::account(kv, a).map(|a| a.balance).unwrap_or_default();
    for m in [
        modules::BANK,
        modules::DATANET,
        modules::PARAMS,
        modules::GOVERNOR,
        modules::AGENT,
    ] {
        // The simulator uses no agent stake, so that module holds nothing either.
        if !bal(&m).is_zero() {
            failures.push(format!(
                "module {} holds {} wei but owes nothing",
                modules::name_of(&m).unwrap_or_default(),
                bal(&m)
            ));
        }
    }
    // RLHF: exactly its reward pool.
    let pool: U256 =
        view(kv, params, env, modules::RLHF, IRlhf::rewardPoolCall {}).unwrap_or_default();
    if bal(&modules::RLHF) != pool {
        failures.push(format!(
            "the RLHF module holds {} wei but its reward pool is {pool} wei",
            bal(&modules::RLHF)
        ));
    }
    match proposals::owed(kv) {
        Ok(owed) if owed == bal(&modules::MODEL) => {}
        Ok(owed) => failures.push(format!(
            "the model module holds {} wei but owes {owed} wei",
            bal(&modules::MODEL)
        )),
        Err(e) => failures.push(format!("reading model proposals: {e}")),
    }
    // Staking.
    let total: U256 = view(
        kv,
        params,
        env,
        modules::STAKING,
        IStaking::totalStakedCall {},
    )
    .unwrap_or_default();
    let (mut stakes, mut owed) = (U256::ZERO, U256::ZERO);
    let mut credit = U256::ZERO;
    for a in accounts {
        let s: U256 = view(
            kv,
            params,
            env,
            modules::STAKING,
            IStaking::stakeOfCall { staker: *a },
        )
        .unwrap_or_default();
        stakes += s;
        owed += s;
        owed += view(
            kv,
            params,
            env,
            modules::STAKING,
            IStaking::unbondingOfCall { staker: *a },
        )
        .map(|u| u.amount)
        .unwrap_or_default();
        owed += view(
            kv,
            params,
            env,
            modules::STAKING,
            IStaking::pendingRewardsCall { staker: *a },
        )
        .unwrap_or_default();
        credit += view(
            kv,
            params,
            env,
            modules::INFERENCE,
            IInference::creditOfCall { account: *a },
        )
        .unwrap_or_default();
    }
    if stakes != total {
        failures.push(format!(
            "the agents' stakes add up to {stakes} wei but the total stake is {total} wei"
        ));
    }
    let pool = bal(&modules::STAKING);
    let dust = pool.checked_sub(owed);
    match dust {
        None => failures.push(format!(
            "the staking module holds {pool} wei but owes {owed} wei"
        )),
        // Rounding dust of the reward accumulator: allow up to 10^-6 OPEN.
        Some(d) if d > U256::from(1_000_000_000_000u64) => failures.push(format!(
            "the staking module keeps {d} wei more than it owes"
        )),
        Some(_) => {}
    }
    // Inference: credit plus unsettled escrow.
    let count = openledger_state::codec::get_u64(kv, b"i/n").unwrap_or_default();
    let mut escrow = U256::ZERO;
    for id in 1..=count {
        match inference::receipt(kv, id) {
            Ok(r) if !r.settled => escrow += r.fee,
            Ok(_) => {}
            Err(e) => failures.push(format!("reading receipt {id}: {e}")),
        }
    }
    if bal(&modules::INFERENCE) != credit + escrow {
        failures.push(format!(
            "the inference module holds {} wei but owes {credit} wei of credit plus {escrow} wei of escrow",
            bal(&modules::INFERENCE)
        ));
    }
    SupplyCheck {
        sum_of_balances: openledger_types::units::format_open(sum),
        supply: openledger_types::units::format_open(supply),
        burned: openledger_types::units::format_open(burned),
        staking_dust_wei: dust.unwrap_or_default().to_string(),
        ok: failures.is_empty(),
        failures,
    }
}
