//! `openledger stake …`: stake, unstake, withdraw, claim rewards, delegate voting power, and
//! show stake and votes (now, at a past timestamp, or as a checkpoint history).

use crate::commands::Session;
use alloy_primitives::{Address, U256};
use alloy_sol_types::SolCall;
use anyhow::{Context, Result};
use clap::Subcommand;
use openledger_types::{
    abi::IStaking,
    modules,
    units::{format_open, parse_open},
};

/// Most checkpoints `stake votes --history` prints (the latest ones).
const HISTORY_SHOWN: u32 = 50;

#[derive(Subcommand)]
pub enum StakeCmd {
    /// Stake OPEN.
    Add {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Start unbonding part of your stake (unbonding stake has no votes).
    Unstake {
        #[arg(value_parser = parse_open)]
        amount: U256,
    },
    /// Withdraw unbonded OPEN after the cooldown.
    Withdraw,
    /// Claim staking rewards.
    Claim,
    /// Show stake, rewards, unbonding and votes of an address or key (default: --from).
    Show { who: Option<String> },
    /// Count your stake's votes for ADDRESS (an address or key name; yourself to take them
    /// back; 0x0000000000000000000000000000000000000000 for nobody). Rewards stay yours.
    Delegate { delegatee: String },
    /// Voting power of an address or key (default: --from): now, or at the end of a past
    /// timestamp with --at.
    Votes {
        who: Option<String>,
        /// A past timestamp (unix seconds): the votes and total stake when it ended.
        #[arg(long)]
        at: Option<u64>,
        /// List the voting-power checkpoints (the latest 50).
        #[arg(long)]
        history: bool,
    },
}

/// Runs a `stake` subcommand.
pub fn run(s: &Session, c: StakeCmd) -> Result<()> {
    let m = modules::STAKING;
    match c {
        StakeCmd::Add { amount } => s.call(m, amount, IStaking::stakeCall {}.abi_encode()),
        StakeCmd::Unstake { amount } => s.call(
            m,
            U256::ZERO,
            IStaking::requestUnstakeCall { amount }.abi_encode(),
        ),
        StakeCmd::Withdraw => s.call(m, U256::ZERO, IStaking::withdrawCall {}.abi_encode()),
        StakeCmd::Claim => s.call(m, U256::ZERO, IStaking::claimRewardsCall {}.abi_encode()),
        StakeCmd::Show { who } => show(s, s.me_or(&who)?),
        StakeCmd::Delegate { delegatee } => {
            let delegatee = s.address_of(&delegatee)?;
            s.call(
                m,
                U256::ZERO,
                IStaking::delegateCall { delegatee }.abi_encode(),
            )
        }
        StakeCmd::Votes { who, at, history } => votes(s, s.me_or(&who)?, at, history),
    }
}

/// Calls a staking view.
fn view<C: SolCall>(s: &Session, call: C) -> Result<C::Return> {
    let out = s.rpc()?.view(modules::STAKING, call.abi_encode())?;
    C::abi_decode_returns(&out).with_context(|| format!("decoding {}'s return", C::SIGNATURE))
}

fn show(s: &Session, a: Address) -> Result<()> {
    let stake = view(s, IStaking::stakeOfCall { staker: a })?;
    let rewards = view(s, IStaking::pendingRewardsCall { staker: a })?;
    let unb = view(s, IStaking::unbondingOfCall { staker: a })?;
    let total = view(s, IStaking::totalStakedCall {})?;
    let votes = view(s, IStaking::getVotesCall { account: a })?;
    let delegatee = view(s, IStaking::delegatesCall { account: a })?;
    println!("{a}");
    println!(
        "  staked     {} OPEN (of {} OPEN in total)",
        format_open(stake),
        format_open(total)
    );
    println!("  rewards    {} OPEN", format_open(rewards));
    println!(
        "  unbonding  {} OPEN, released at {}",
        format_open(unb.amount),
        unb.releaseTime
    );
    println!("  votes      {} OPEN", format_open(votes));
    println!("  delegates  {}", describe_delegatee(a, delegatee));
    Ok(())
}

fn describe_delegatee(a: Address, d: Address) -> String {
    if d == a {
        format!("{d} (itself)")
    } else if d == Address::ZERO {
        format!("{d} (nobody: the stake's votes count for no one)")
    } else {
        d.to_string()
    }
}

fn votes(s: &Session, a: Address, at: Option<u64>, history: bool) -> Result<()> {
    let delegatee = view(s, IStaking::delegatesCall { account: a })?;
    println!("{a}");
    match at {
        None => {
            let votes = view(s, IStaking::getVotesCall { account: a })?;
            let clock = view(s, IStaking::clockCall {})?;
            println!("  votes      {} OPEN (now, {clock})", format_open(votes));
        }
        Some(t) => {
            let timepoint = U256::from(t);
            let votes = view(
                s,
                IStaking::getPastVotesCall {
                    account: a,
                    timepoint,
                },
            )
            .with_context(|| format!("votes at {t} (a timestamp must be over to be read)"))?;
            let total = view(s, IStaking::getPastTotalSupplyCall { timepoint })?;
            println!(
                "  votes      {} OPEN at the end of {t} (of {} OPEN staked then)",
                format_open(votes),
                format_open(total)
            );
        }
    }
    println!("  delegates  {}", describe_delegatee(a, delegatee));
    if history {
        let n = view(s, IStaking::numCheckpointsCall { account: a })?;
        println!("  checkpoints ({n}, from timestamp on):");
        for pos in n.saturating_sub(HISTORY_SHOWN)..n {
            let c = view(s, IStaking::checkpointsCall { account: a, pos })?;
            println!(
                "    {:>12}  {} OPEN",
                c.key.to::<u64>(),
                format_open(c.value.to::<U256>())
            );
        }
    }
    Ok(())
}
