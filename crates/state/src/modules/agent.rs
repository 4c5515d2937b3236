//! AI agent staking: every account that pays for inference may use a governed free volume of
//! tokens per UTC day; beyond it, the inference module refuses to record its calls unless it is
//! a registered agent with at least the governed agent stake here. The governor may slash a
//! misbehaving agent (to the treasury or burned, as `slash_destination` says).
//!
//! Metering is O(1) per receipt: one record per caller holding the current UTC day and the
//! tokens used in it, overwritten when the day changes. All agent stake and unbonding OPEN sits
//! in this module's balance, which always equals [`total_held`].
//!
//! Keys: `g/a`++address → `IAgent.Agent`; `g/u`++address → UTC day (8 bytes BE) ++ tokens used
//! that day (8 bytes BE); `g/t` → all stake plus all unbonding.

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    modules::staking,
    Ctx, ExecError,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_types::{
    abi::IAgent::{self, Agent},
    modules::{AGENT, GOVERNOR, TREASURY},
    params::SlashDestination,
    units::format_open,
    Params,
};

const TOTAL: &[u8] = b"g/t";
const SECS_PER_DAY: u64 = 86_400;

fn agent_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"g/a", a.as_slice()])
}

fn usage_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"g/u", a.as_slice()])
}

/// `a`'s agent record (unregistered and empty when absent).
pub fn agent(state: &dyn StateRead, a: &Address) -> Result<Agent, StorageError> {
    Ok(
        codec::get_sol::<Agent>(state, &agent_key(a))?.unwrap_or(Agent {
            registered: false,
            metadata: String::new(),
            stake: U256::ZERO,
            unbonding: U256::ZERO,
            releaseTime: 0,
            registeredAt: 0,
        }),
    )
}

/// All OPEN the module holds for agents (stakes plus unbonding).
pub fn total_held(state: &dyn StateRead) -> Result<U256, StorageError> {
    codec::get_u256(state, TOTAL)
}

fn add_total(ctx: &mut Ctx, plus: U256, minus: U256) -> ExecResult<()> {
    let t = total_held(&ctx.state)?
        .checked_add(plus)
        .and_then(|t| t.checked_sub(minus))
        .ok_or_else(|| {
            StorageError("corrupt agent totals: the held total under- or overflows".into())
        })?;
    codec::put_u256(&mut ctx.state, TOTAL.to_vec(), t);
    Ok(())
}

/// The UTC day of a timestamp.
pub fn day_of(timestamp: u64) -> u64 {
    timestamp / SECS_PER_DAY
}

/// Tokens `a` used on UTC day `day`.
pub fn tokens_used(state: &dyn StateRead, a: &Address, day: u64) -> Result<u64, StorageError> {
    match state.get_ref(&usage_key(a))? {
        None => Ok(0),
        Some(v) if v.len() == 16 => {
            let stored_day = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            let tokens = u64::from_be_bytes(v[8..].try_into().expect("8 bytes"));
            Ok(if stored_day == day { tokens } else { 0 })
        }
        Some(_) => Err(StorageError(format!("corrupt agent usage record for {a}"))),
    }
}

/// Whether `a` holds enough agent stake to go beyond the free volume.
pub fn is_staked(state: &dyn StateRead, params: &Params, a: &Address) -> ExecResult<bool> {
    let g = agent(state, a)?;
    Ok(g.registered && g.stake >= params.agent.agent_min_stake)
}

/// Checks, without recording anything, that `caller` may use `tokens` more tokens at
/// `timestamp`: within the day's free volume, or as a staked agent. Returns the tokens the
/// day's usage would reach.
pub fn check_volume(
    state: &dyn StateRead,
    params: &Params,
    timestamp: u64,
    caller: &Address,
    tokens: u64,
) -> ExecResult<u64> {
    let used = tokens_used(state, caller, day_of(timestamp))?;
    check_more(state, params, timestamp, caller, used, tokens, &mut None)
}

/// [`check_volume`] for a caller who has used `used` tokens today so far (read once by a caller
/// that meters many inferences in one call); `staked` holds [`is_staked`] once it was needed
/// (the inference module changes no agent stake, so it holds for the whole call).
pub fn check_more(
    state: &dyn StateRead,
    params: &Params,
    timestamp: u64,
    caller: &Address,
    used: u64,
    tokens: u64,
    staked: &mut Option<bool>,
) -> ExecResult<u64> {
    let after = used.saturating_add(tokens);
    let free = params.agent.agent_free_tokens_per_day;
    if after <= free {
        return Ok(after);
    }
    let ok = match *staked {
        Some(ok) => ok,
        None => *staked.insert(is_staked(state, params, caller)?),
    };
    if !ok {
        let (day, g) = (day_of(timestamp), agent(state, caller)?);
        return Err(ExecError::Unauthorized(format!(
            "{caller} has used {used} of its {free} free tokens today (UTC day {day}) and this \
             inference needs {tokens} more: calling models beyond the free volume takes an \
             agent stake of at least {} OPEN ({caller} is {}registered as an agent and has {} \
             OPEN staked as one). Register and stake with `openledger agent register` and \
             `openledger agent stake AMOUNT`, or wait for the next UTC day",
            format_open(params.agent.agent_min_stake),
            if g.registered { "" } else { "not " },
            format_open(g.stake)
        )));
    }
    Ok(after)
}

/// Writes that `caller` has used `tokens` tokens on the UTC day of `timestamp` (the inference
/// module meters each receipt with [`check_more`] and writes each caller's total once per call).
pub fn record_usage(state: &mut Overlay, timestamp: u64, caller: &Address, tokens: u64) {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&day_of(timestamp).to_be_bytes());
    v.extend_from_slice(&tokens.to_be_bytes());
    state.put(usage_key(caller), v);
}

/// Slashes up to `amount` of `who`'s agent stake, then of its unbonding OPEN; returns what was
/// slashed.
fn slash(ctx: &mut Ctx, who: Address, amount: U256, reason: String) -> ExecResult<U256> {
    ctx.check_len("the slashing reason", &reason)?;
    let mut g = agent(&ctx.state, &who)?;
    let from_stake = amount.min(g.stake);
    let from_unbonding = (amount - from_stake).min(g.unbonding);
    let slashed = from_stake + from_unbonding;
    if slashed.is_zero() {
        return Err(ExecError::Invalid(format!(
            "{who} has no agent stake or unbonding OPEN to slash"
        )));
    }
    g.stake -= from_stake;
    g.unbonding -= from_unbonding;
    if g.unbonding.is_zero() {
        g.releaseTime = 0;
    }
    codec::put_sol(&mut ctx.state, agent_key(&who), &g);
    add_total(ctx, U256::ZERO, slashed)?;
    let burned = ctx.params.slash_destination == SlashDestination::Burn;
    if burned {
        staking::burn(ctx, AGENT, slashed)?;
    } else {
        ctx.transfer(AGENT, TREASURY, slashed)?;
    }
    ctx.emit(
        AGENT,
        &IAgent::AgentSlashed {
            agent: who,
            amount: slashed,
            burned,
            reason,
        },
    );
    Ok(slashed)
}

/// Executes an agent call.
pub fn call(ctx: &mut Ctx, call: IAgent::IAgentCalls) -> ExecResult<Vec<u8>> {
    use IAgent::IAgentCalls as C;
    let me = ctx.sender;
    Ok(match call {
        C::registerAgent(c) => {
            ctx.check_len("metadata", &c.metadata)?;
            let mut g = agent(&ctx.state, &me)?;
            if !g.registered {
                g.registered = true;
                g.registeredAt = ctx.env.timestamp;
            }
            g.metadata = c.metadata.clone();
            codec::put_sol(&mut ctx.state, agent_key(&me), &g);
            ctx.emit(
                AGENT,
                &IAgent::AgentRegistered {
                    agent: me,
                    metadata: c.metadata,
                },
            );
            Vec::new()
        }
        C::stakeAgent(_) => {
            let amount = ctx.value;
            if amount.is_zero() {
                return Err(ExecError::Invalid(
                    "stakeAgent needs OPEN sent with the call".into(),
                ));
            }
            let mut g = agent(&ctx.state, &me)?;
            if !g.registered {
                return Err(ExecError::Invalid(format!(
                    "{me} is not a registered agent: call registerAgent first (`openledger agent register`)"
                )));
            }
            g.stake = g
                .stake
                .checked_add(amount)
                .ok_or_else(|| ExecError::Invalid(format!("a stake of {amount} wei overflows")))?;
            codec::put_sol(&mut ctx.state, agent_key(&me), &g);
            add_total(ctx, amount, U256::ZERO)?;
            ctx.emit(
                AGENT,
                &IAgent::AgentStaked {
                    agent: me,
                    amount,
                    totalStake: g.stake,
                },
            );
            Vec::new()
        }
        C::unstakeAgent(c) => {
            let mut g = agent(&ctx.state, &me)?;
            if c.amount.is_zero() || c.amount > g.stake {
                return Err(ExecError::Invalid(format!(
                    "cannot unstake {} wei: your agent stake is {} wei",
                    c.amount, g.stake
                )));
            }
            g.stake -= c.amount;
            g.unbonding = g.unbonding.checked_add(c.amount).ok_or_else(|| {
                ExecError::Invalid(format!("unbonding {} more wei overflows", c.amount))
            })?;
            g.releaseTime = ctx
                .env
                .timestamp
                .saturating_add(ctx.params.agent.agent_unstake_cooldown_secs);
            codec::put_sol(&mut ctx.state, agent_key(&me), &g);
            ctx.emit(
                AGENT,
                &IAgent::AgentUnstakeRequested {
                    agent: me,
                    amount: c.amount,
                    releaseTime: g.releaseTime,
                },
            );
            Vec::new()
        }
        C::withdrawAgentStake(_) => {
            let mut g = agent(&ctx.state, &me)?;
            if g.unbonding.is_zero() {
                return Err(ExecError::Invalid(
                    "no agent stake is unbonding; call unstakeAgent first".into(),
                ));
            }
            if ctx.env.timestamp < g.releaseTime {
                return Err(ExecError::Invalid(format!(
                    "unbonding agent stake is released at {} (unix seconds); it is now {}",
                    g.releaseTime, ctx.env.timestamp
                )));
            }
            let amount = std::mem::take(&mut g.unbonding);
            g.releaseTime = 0;
            codec::put_sol(&mut ctx.state, agent_key(&me), &g);
            add_total(ctx, U256::ZERO, amount)?;
            ctx.transfer(AGENT, me, amount)?;
            ctx.emit(AGENT, &IAgent::AgentWithdrawn { agent: me, amount });
            IAgent::withdrawAgentStakeCall::abi_encode_returns(&amount)
        }
        C::slashAgent(c) => {
            if me != GOVERNOR {
                return Err(ExecError::Unauthorized(format!(
                    "only the governor ({GOVERNOR}) may slash an agent, through a passed proposal; {me} called"
                )));
            }
            let slashed = slash(ctx, c.agent, c.amount, c.reason)?;
            IAgent::slashAgentCall::abi_encode_returns(&slashed)
        }
        C::getAgent(c) => agent(&ctx.state, &c.agent)?.abi_encode(),
        C::usageOf(c) => {
            let day = day_of(ctx.env.timestamp);
            IAgent::usageOfCall::abi_encode_returns(&IAgent::usageOfReturn {
                day,
                tokensToday: tokens_used(&ctx.state, &c.account, day)?,
                freeTokensPerDay: ctx.params.agent.agent_free_tokens_per_day,
                staked: is_staked(&ctx.state, ctx.params, &c.account)?,
            })
        }
        C::totalAgentStake(_) => total_held(&ctx.state)?.abi_encode(),
    })
}
