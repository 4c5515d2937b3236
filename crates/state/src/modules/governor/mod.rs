//! The governor (0x…1007): OpenZeppelin 5.x Governor semantics and ABI (`contracts/IGovernor.sol`)
//! as a native module: GovernorCountingSimple, votes from staking's checkpoints
//! (GovernorVotes, GovernorVotesQuorumFraction), a built-in timelock with a grace period
//! (GovernorTimelockCompound) and GovernorStorage's by-id calls. Executed proposals call other
//! modules with the governor as sender; the governed setters (`IParams.setParams`,
//! `IParams.setParam`, `IBank.treasuryGrant`) accept no other sender.
//!
//! Timepoints are block timestamps (seconds). A proposal made at `t` has its snapshot at
//! `t + voting_delay_secs` and its deadline `voting_period_secs` later; votes are read at the
//! snapshot, so stake added after it cannot vote. Its actions are checked when it is proposed
//! (modules only, calldata that decodes, no value), and run atomically when it is executed: if
//! any call fails, the whole `execute` is refused and nothing is applied.

pub mod sig;
mod store;

pub use store::{ProposalActions, ProposalCore};

use crate::{
    error::ExecResult,
    modules::{self, staking},
    Ctx, ExecError,
};
use alloy_primitives::{keccak256, Address, Bytes, FixedBytes, B256, U256};
use alloy_sol_types::{SolCall, SolValue};
use openledger_types::{
    abi::IGovernor::{self, ProposalState},
    modules::{self as addr, GOVERNOR},
};
use store::state_name;

/// The counting mode of GovernorCountingSimple.
pub const COUNTING_MODE: &str = "support=bravo&quorum=for,abstain";
/// ERC-6372 clock mode: timestamps.
pub const CLOCK_MODE: &str = "mode=timestamp";

/// OZ's `hashProposal`: keccak256(abi.encode(targets, values, calldatas, descriptionHash)).
pub fn hash_proposal(
    targets: &[Address],
    values: &[U256],
    calldatas: &[Bytes],
    description_hash: B256,
) -> U256 {
    let encoded = (
        targets.to_vec(),
        values.to_vec(),
        calldatas.to_vec(),
        description_hash,
    )
        .abi_encode_params();
    U256::from_be_bytes(keccak256(encoded).0)
}

/// The state of proposal `id` now (refused when it does not exist).
pub fn proposal_state(
    state: &dyn crate::StateRead,
    id: U256,
    now: u64,
) -> ExecResult<ProposalState> {
    let p = store::existing(state, id)?;
    store::state_at(state, &p, now)
}

fn unexpected(id: U256, now: ProposalState, wanted: &str) -> ExecError {
    ExecError::Invalid(format!(
        "proposal {id} is {}; this needs it {wanted}",
        state_name(now)
    ))
}

/// Executes a governor call.
pub fn call(ctx: &mut Ctx, call: IGovernor::IGovernorCalls) -> ExecResult<Vec<u8>> {
    use IGovernor::IGovernorCalls as C;
    let now = ctx.env.timestamp;
    let g = &ctx.params.governance;
    Ok(match call {
        C::supportsInterface(c) => supports_interface(c.interfaceId).abi_encode(),
        C::clock(_) => IGovernor::clockCall::abi_encode_returns(&clock(now)),
        C::CLOCK_MODE(_) => CLOCK_MODE.abi_encode(),
        C::eip712Domain(_) => IGovernor::eip712DomainCall::abi_encode_returns(
            &IGovernor::eip712DomainReturn {
                fields: FixedBytes([0x0f]),
                name: sig::NAME.into(),
                version: sig::VERSION.into(),
                chainId: U256::from(ctx.env.chain_id),
                verifyingContract: GOVERNOR,
                salt: B256::ZERO,
                extensions: Vec::new(),
            },
        ),
        C::name(_) => sig::NAME.abi_encode(),
        C::version(_) => sig::VERSION.abi_encode(),
        C::COUNTING_MODE(_) => COUNTING_MODE.abi_encode(),
        C::hashProposal(c) => {
            hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash).abi_encode()
        }
        C::getProposalId(c) => {
            hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash).abi_encode()
        }
        C::state(c) => IGovernor::stateCall::abi_encode_returns(&proposal_state(
            &ctx.state,
            c.proposalId,
            now,
        )?),
        C::proposalThreshold(_) => g.proposal_threshold.abi_encode(),
        C::proposalSnapshot(c) => core_or_zero(ctx, c.proposalId, |p| p.voteStart)?,
        C::proposalDeadline(c) => core_or_zero(ctx, c.proposalId, |p| p.voteEnd)?,
        C::proposalEta(c) => core_or_zero(ctx, c.proposalId, |p| p.eta)?,
        C::proposalProposer(c) => store::core(&ctx.state, c.proposalId)?
            .map(|p| p.proposer)
            .unwrap_or_default()
            .abi_encode(),
        C::proposalNeedsQueuing(_) => true.abi_encode(),
        C::votingDelay(_) => U256::from(g.voting_delay_secs).abi_encode(),
        C::votingPeriod(_) => U256::from(g.voting_period_secs).abi_encode(),
        C::quorum(c) => {
            let t = past_timepoint(c.timepoint, now)?;
            store::quorum_at(&ctx.state, t, g.quorum_bps)?.abi_encode()
        }
        C::getVotes(c) => {
            let t = past_timepoint(c.timepoint, now)?;
            staking::past_votes(&ctx.state, &c.account, t)?.abi_encode()
        }
        C::getVotesWithParams(c) => {
            let t = past_timepoint(c.timepoint, now)?;
            staking::past_votes(&ctx.state, &c.account, t)?.abi_encode()
        }
        C::hasVoted(c) => store::vote_of(&ctx.state, c.proposalId, &c.account)?
            .is_some()
            .abi_encode(),
        C::BALLOT_TYPEHASH(_) => {
            keccak256("Ballot(uint256 proposalId,uint8 support,address voter,uint256 nonce)")
                .abi_encode()
        }
        C::EXTENDED_BALLOT_TYPEHASH(_) => keccak256(
            "ExtendedBallot(uint256 proposalId,uint8 support,address voter,uint256 nonce,string reason,bytes params)",
        )
        .abi_encode(),
        C::nonces(c) => store::nonce(&ctx.state, &c.owner)?.abi_encode(),
        C::proposalVotes(c) => {
            let p = store::existing(&ctx.state, c.proposalId)?;
            (p.againstVotes, p.forVotes, p.abstainVotes).abi_encode_params()
        }
        C::proposalCount(_) => U256::from(store::count(&ctx.state)?).abi_encode(),
        C::proposalDetails(c) => {
            let a = store::actions(&ctx.state, c.proposalId)?;
            (a.targets, a.values, a.calldatas, a.descriptionHash).abi_encode_params()
        }
        C::proposalDetailsAt(c) => {
            let index = u64::try_from(c.index).map_err(|_| {
                ExecError::NotFound(format!("proposal index {} (too large)", c.index))
            })?;
            let id = store::id_at(&ctx.state, index)?;
            let a = store::actions(&ctx.state, id)?;
            (id, a.targets, a.values, a.calldatas, a.descriptionHash).abi_encode_params()
        }
        C::proposalDescription(c) => store::actions(&ctx.state, c.proposalId)?
            .description
            .abi_encode(),

        C::propose(c) => propose(ctx, c.targets, c.values, c.calldatas, c.description)?.abi_encode(),
        C::castVote(c) => {
            let voter = ctx.sender;
            cast(ctx, c.proposalId, voter, c.support, String::new(), Bytes::new())?.abi_encode()
        }
        C::castVoteWithReason(c) => {
            let voter = ctx.sender;
            cast(ctx, c.proposalId, voter, c.support, c.reason, Bytes::new())?.abi_encode()
        }
        C::castVoteWithReasonAndParams(c) => {
            let voter = ctx.sender;
            cast(ctx, c.proposalId, voter, c.support, c.reason, c.params)?.abi_encode()
        }
        C::castVoteBySig(c) => {
            let nonce = store::use_nonce(&mut ctx.state, &c.voter)?;
            let digest =
                sig::ballot_digest(ctx.env.chain_id, c.proposalId, c.support, c.voter, nonce);
            sig::check(c.voter, digest, &c.signature)?;
            cast(ctx, c.proposalId, c.voter, c.support, String::new(), Bytes::new())?.abi_encode()
        }
        C::castVoteWithReasonAndParamsBySig(c) => {
            let nonce = store::use_nonce(&mut ctx.state, &c.voter)?;
            let digest = sig::extended_ballot_digest(
                ctx.env.chain_id,
                sig::ExtendedBallot {
                    proposalId: c.proposalId,
                    support: c.support,
                    voter: c.voter,
                    nonce,
                    reason: c.reason.clone(),
                    params: c.params.clone(),
                },
            );
            sig::check(c.voter, digest, &c.signature)?;
            cast(ctx, c.proposalId, c.voter, c.support, c.reason, c.params)?.abi_encode()
        }
        C::queue_0(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            queue(ctx, id)?.abi_encode()
        }
        C::queue_1(c) => {
            queue(ctx, c.proposalId)?;
            Vec::new()
        }
        C::execute_0(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            execute(ctx, id)?.abi_encode()
        }
        C::execute_1(c) => {
            execute(ctx, c.proposalId)?;
            Vec::new()
        }
        C::cancel_0(c) => {
            let id = hash_proposal(&c.targets, &c.values, &c.calldatas, c.descriptionHash);
            cancel(ctx, id)?.abi_encode()
        }
        C::cancel_1(c) => {
            cancel(ctx, c.proposalId)?;
            Vec::new()
        }
    })
}

/// `clock()`: the block timestamp as uint48 (saturated; a real timestamp is far below 2^48).
fn clock(now: u64) -> alloy_primitives::aliases::U48 {
    alloy_primitives::aliases::U48::saturating_from(now)
}

/// A timepoint for a past lookup: OZ's votes refuse the present and the future
/// (ERC5805FutureLookup), whose votes can still change.
fn past_timepoint(t: U256, now: u64) -> ExecResult<u64> {
    match u64::try_from(t) {
        Ok(t) if t < now => Ok(t),
        _ => Err(ExecError::Invalid(format!(
            "timepoint {t} is not in the past (the clock is {now}): votes are only final for past timestamps"
        ))),
    }
}

/// A number from a proposal's core, or 0 when there is no such proposal (as OZ's views).
fn core_or_zero(ctx: &Ctx, id: U256, f: impl Fn(&ProposalCore) -> u64) -> ExecResult<Vec<u8>> {
    Ok(U256::from(store::core(&ctx.state, id)?.map(|p| f(&p)).unwrap_or(0)).abi_encode())
}

/// ERC-165: IERC165 and IGovernor (its id with and without `getProposalId`, added in OZ 5.1).
fn supports_interface(id: FixedBytes<4>) -> bool {
    const GOVERNOR_FUNCTIONS: [&[u8; 4]; 26] = [
        &IGovernor::nameCall::SELECTOR,
        &IGovernor::versionCall::SELECTOR,
        &IGovernor::COUNTING_MODECall::SELECTOR,
        &IGovernor::hashProposalCall::SELECTOR,
        &IGovernor::stateCall::SELECTOR,
        &IGovernor::proposalThresholdCall::SELECTOR,
        &IGovernor::proposalSnapshotCall::SELECTOR,
        &IGovernor::proposalDeadlineCall::SELECTOR,
        &IGovernor::proposalProposerCall::SELECTOR,
        &IGovernor::proposalEtaCall::SELECTOR,
        &IGovernor::proposalNeedsQueuingCall::SELECTOR,
        &IGovernor::votingDelayCall::SELECTOR,
        &IGovernor::votingPeriodCall::SELECTOR,
        &IGovernor::quorumCall::SELECTOR,
        &IGovernor::getVotesCall::SELECTOR,
        &IGovernor::getVotesWithParamsCall::SELECTOR,
        &IGovernor::hasVotedCall::SELECTOR,
        &IGovernor::proposeCall::SELECTOR,
        &IGovernor::queue_0Call::SELECTOR,
        &IGovernor::execute_0Call::SELECTOR,
        &IGovernor::cancel_0Call::SELECTOR,
        &IGovernor::castVoteCall::SELECTOR,
        &IGovernor::castVoteWithReasonCall::SELECTOR,
        &IGovernor::castVoteWithReasonAndParamsCall::SELECTOR,
        &IGovernor::castVoteBySigCall::SELECTOR,
        &IGovernor::castVoteWithReasonAndParamsBySigCall::SELECTOR,
    ];
    let xor = |acc: [u8; 4], s: &[u8; 4]| std::array::from_fn(|i| acc[i] ^ s[i]);
    let v5_0 = GOVERNOR_FUNCTIONS.iter().fold([0u8; 4], |a, s| xor(a, s));
    let latest = xor(v5_0, &IGovernor::getProposalIdCall::SELECTOR);
    let erc165 = [0x01, 0xff, 0xc9, 0xa7];
    [erc165, v5_0, latest].contains(&id.0)
}

/// OZ's frontrunning protection: a description ending in `#proposer=0x…` may only be proposed
/// by that address.
fn check_description_proposer(description: &str, proposer: Address) -> ExecResult<()> {
    let b = description.as_bytes();
    if b.len() < 52 || &b[b.len() - 52..b.len() - 42] != b"#proposer=" {
        return Ok(());
    }
    let tail = &description[description.len() - 42..];
    match tail.parse::<Address>() {
        Ok(a) if a != proposer => Err(ExecError::Unauthorized(format!(
            "the description reserves this proposal for {a} (it ends in #proposer={tail}); you are {proposer}"
        ))),
        _ => Ok(()),
    }
}

/// Checks a proposal's actions: 1 to `proposal_max_actions` calls of equal-length lists, each to
/// a module other than the governor, with calldata that decodes and a value of 0.
fn check_actions(
    ctx: &Ctx,
    targets: &[Address],
    values: &[U256],
    calldatas: &[Bytes],
) -> ExecResult<()> {
    let g = &ctx.params.governance;
    let n = targets.len();
    if n == 0 || n != values.len() || n != calldatas.len() {
        return Err(ExecError::Invalid(format!(
            "a proposal needs targets, values and calldatas of the same non-zero length; got {n} targets, {} values, {} calldatas",
            values.len(),
            calldatas.len()
        )));
    }
    if n as u64 > g.proposal_max_actions as u64 {
        return Err(ExecError::Invalid(format!(
            "a proposal may make at most {} calls (proposal_max_actions); this one makes {n}",
            g.proposal_max_actions
        )));
    }
    for (i, ((target, value), data)) in targets.iter().zip(values).zip(calldatas).enumerate() {
        let call = i + 1;
        if !value.is_zero() {
            return Err(ExecError::Invalid(format!(
                "call {call} sends {value} wei: the governor holds no OPEN, so every value must be 0 (pay from the treasury with IBank.treasuryGrant)"
            )));
        }
        if *target == GOVERNOR {
            return Err(ExecError::Invalid(format!(
                "call {call} targets the governor itself; its settings are parameters: call IParams.setParam on 0x…1006"
            )));
        }
        if addr::name_of(target).is_none() {
            return Err(ExecError::Invalid(format!(
                "call {call} targets {target}, which is not a module; a proposal calls native modules (pay an account with IBank.treasuryGrant)"
            )));
        }
        if data.len() as u64 > g.proposal_max_calldata_bytes {
            return Err(ExecError::Invalid(format!(
                "call {call} has {} bytes of calldata, the limit is {} (proposal_max_calldata_bytes)",
                data.len(),
                g.proposal_max_calldata_bytes
            )));
        }
        modules::check_calldata(target, data).map_err(|e| {
            ExecError::Invalid(format!("call {call} to {target} does not decode: {e}"))
        })?;
    }
    Ok(())
}

fn propose(
    ctx: &mut Ctx,
    targets: Vec<Address>,
    values: Vec<U256>,
    calldatas: Vec<Bytes>,
    description: String,
) -> ExecResult<U256> {
    let proposer = ctx.sender;
    let now = ctx.env.timestamp;
    let g = ctx.params.governance.clone();
    ctx.check_len("the description", &description)?;
    check_description_proposer(&description, proposer)?;
    if !g.proposal_threshold.is_zero() {
        let votes = staking::past_votes(&ctx.state, &proposer, now.saturating_sub(1))?;
        if votes < g.proposal_threshold {
            return Err(ExecError::Unauthorized(format!(
                "proposing needs {} wei of votes (proposal_threshold), {proposer} had {votes} wei one second ago; stake (or get delegated) more and wait a second",
                g.proposal_threshold
            )));
        }
    }
    check_actions(ctx, &targets, &values, &calldatas)?;
    let description_hash = keccak256(description.as_bytes());
    let id = hash_proposal(&targets, &values, &calldatas, description_hash);
    if let Some(p) = store::core(&ctx.state, id)? {
        let s = store::state_at(&ctx.state, &p, now)?;
        return Err(ExecError::Invalid(format!(
            "proposal {id} already exists ({}); change the description to propose the same calls again",
            state_name(s)
        )));
    }
    let snapshot = now.saturating_add(g.voting_delay_secs);
    let deadline = snapshot.saturating_add(g.voting_period_secs);
    let core = ProposalCore {
        proposer,
        voteStart: snapshot,
        voteEnd: deadline,
        quorumBps: g.quorum_bps,
        eta: 0,
        expiresAt: 0,
        executed: false,
        canceled: false,
        againstVotes: U256::ZERO,
        forVotes: U256::ZERO,
        abstainVotes: U256::ZERO,
        index: 0,
    };
    let actions = ProposalActions {
        targets: targets.clone(),
        values: values.clone(),
        calldatas: calldatas.clone(),
        descriptionHash: description_hash,
        description: description.clone(),
    };
    store::insert(&mut ctx.state, id, core, &actions)?;
    ctx.emit(
        GOVERNOR,
        &IGovernor::ProposalCreated {
            proposalId: id,
            proposer,
            signatures: vec![String::new(); targets.len()],
            targets,
            values,
            calldatas,
            voteStart: U256::from(snapshot),
            voteEnd: U256::from(deadline),
            description,
        },
    );
    Ok(id)
}

/// Counts `voter`'s vote on proposal `id` (GovernorCountingSimple) and emits `VoteCast`, or
/// `VoteCastWithParams` when `params` is not empty. Returns the weight counted.
fn cast(
    ctx: &mut Ctx,
    id: U256,
    voter: Address,
    support: u8,
    reason: String,
    params: Bytes,
) -> ExecResult<U256> {
    ctx.check_len("the reason", &reason)?;
    if params.len() as u64 > ctx.params.max_string_bytes {
        return Err(ExecError::Invalid(format!(
            "the vote params are {} bytes, the limit is {} (max_string_bytes)",
            params.len(),
            ctx.params.max_string_bytes
        )));
    }
    let now = ctx.env.timestamp;
    let mut p = store::existing(&ctx.state, id)?;
    let s = store::state_at(&ctx.state, &p, now)?;
    if s != ProposalState::Active {
        let when = match s {
            ProposalState::Pending => format!("; voting opens after {}", p.voteStart),
            _ => String::new(),
        };
        return Err(ExecError::Invalid(format!(
            "proposal {id} is {}; votes are cast only while it is Active{when}",
            state_name(s)
        )));
    }
    if let Some(prior) = store::vote_of(&ctx.state, id, &voter)? {
        return Err(ExecError::Invalid(format!(
            "{voter} already voted on proposal {id} (support {prior})"
        )));
    }
    let weight = staking::past_votes(&ctx.state, &voter, p.voteStart)?;
    let tally = match support {
        0 => &mut p.againstVotes,
        1 => &mut p.forVotes,
        2 => &mut p.abstainVotes,
        other => {
            return Err(ExecError::Invalid(format!(
                "support {other} is not a vote: 0 = against, 1 = for, 2 = abstain"
            )))
        }
    };
    // Votes at one timepoint never sum past the fixed supply.
    *tally = tally.saturating_add(weight);
    store::put_core(&mut ctx.state, id, &p);
    store::put_vote(&mut ctx.state, id, &voter, support);
    if params.is_empty() {
        ctx.emit(
            GOVERNOR,
            &IGovernor::VoteCast {
                voter,
                proposalId: id,
                support,
                weight,
                reason,
            },
        );
    } else {
        ctx.emit(
            GOVERNOR,
            &IGovernor::VoteCastWithParams {
                voter,
                proposalId: id,
                support,
                weight,
                reason,
                params,
            },
        );
    }
    Ok(weight)
}

fn queue(ctx: &mut Ctx, id: U256) -> ExecResult<U256> {
    let now = ctx.env.timestamp;
    let mut p = store::existing(&ctx.state, id)?;
    let s = store::state_at(&ctx.state, &p, now)?;
    if s != ProposalState::Succeeded {
        return Err(unexpected(
            id,
            s,
            "Succeeded (voting over, quorum reached, more for than against)",
        ));
    }
    let g = &ctx.params.governance;
    p.eta = now.saturating_add(g.timelock_delay_secs);
    p.expiresAt = p.eta.saturating_add(g.timelock_grace_secs);
    store::put_core(&mut ctx.state, id, &p);
    ctx.emit(
        GOVERNOR,
        &IGovernor::ProposalQueued {
            proposalId: id,
            etaSeconds: U256::from(p.eta),
        },
    );
    Ok(id)
}

fn execute(ctx: &mut Ctx, id: U256) -> ExecResult<U256> {
    let now = ctx.env.timestamp;
    let mut p = store::existing(&ctx.state, id)?;
    let s = store::state_at(&ctx.state, &p, now)?;
    if s != ProposalState::Queued {
        return Err(unexpected(id, s, "Queued (queue it once it has Succeeded)"));
    }
    if now < p.eta {
        return Err(ExecError::Invalid(format!(
            "proposal {id} is in the timelock until {} (unix seconds); it is now {now}",
            p.eta
        )));
    }
    // Marked executed before its calls run, as OZ does against reentrancy.
    p.executed = true;
    store::put_core(&mut ctx.state, id, &p);
    let a = store::actions(&ctx.state, id)?;
    let (sender, value) = (ctx.sender, ctx.value);
    ctx.sender = GOVERNOR;
    ctx.value = U256::ZERO;
    let n = a.targets.len();
    let mut result = Ok(());
    for (i, (target, data)) in a.targets.iter().zip(&a.calldatas).enumerate() {
        if let Err(e) = modules::dispatch(ctx, *target, data) {
            let what = modules::function_name(target, data).unwrap_or("?");
            let module = addr::name_of(target).unwrap_or("?");
            result = Err(match e {
                ExecError::Storage(s) => ExecError::Storage(s),
                e => ExecError::Invalid(format!(
                    "proposal {id}: call {} of {n} ({module}.{what}) failed, so nothing was executed: {e}",
                    i + 1
                )),
            });
            break;
        }
    }
    ctx.sender = sender;
    ctx.value = value;
    result?;
    ctx.emit(GOVERNOR, &IGovernor::ProposalExecuted { proposalId: id });
    Ok(id)
}

fn cancel(ctx: &mut Ctx, id: U256) -> ExecResult<U256> {
    let now = ctx.env.timestamp;
    let mut p = store::existing(&ctx.state, id)?;
    let s = store::state_at(&ctx.state, &p, now)?;
    if s != ProposalState::Pending || ctx.sender != p.proposer {
        return Err(ExecError::Unauthorized(format!(
            "proposal {id} can be canceled only by its proposer {} and only while Pending (until {}); it is {} and you are {}",
            p.proposer,
            p.voteStart,
            state_name(s),
            ctx.sender
        )));
    }
    p.canceled = true;
    store::put_core(&mut ctx.state, id, &p);
    ctx.emit(GOVERNOR, &IGovernor::ProposalCanceled { proposalId: id });
    Ok(id)
}
