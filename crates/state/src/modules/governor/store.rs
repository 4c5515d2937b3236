//! The governor's records: proposals (their core, their actions and description), votes cast,
//! the proposal index and the signature nonces; and a proposal's state at a given time.
//!
//! Keys: `g/p` ++ id (32 bytes) → [`ProposalCore`]; `g/a` ++ id → [`ProposalActions`];
//! `g/v` ++ id ++ voter → the support cast + 1 (1 byte); `g/c` → the proposal count;
//! `g/i` ++ index (8 bytes BE) → id; `g/o` ++ account → its EIP-712 nonce.

use crate::{
    codec,
    error::{ExecResult, StorageError},
    kv::{Overlay, StateRead},
    modules::staking,
    ExecError,
};
use alloy_primitives::{Address, U256};
use alloy_sol_types::sol;
use openledger_types::{abi::IGovernor::ProposalState, params::BPS};

sol! {
    /// What the governor keeps of a proposal to decide its state.
    struct ProposalCore {
        address proposer;
        /// The snapshot: votes are read at this timestamp; voting opens just after it.
        uint64 voteStart;
        /// The deadline: the last second of voting.
        uint64 voteEnd;
        /// The quorum fraction in force at creation, in basis points of all votes.
        uint16 quorumBps;
        /// When it may be executed (0: not queued).
        uint64 eta;
        /// From this second on a queued proposal is Expired (eta + the grace period at queuing).
        uint64 expiresAt;
        bool executed;
        bool canceled;
        uint256 againstVotes;
        uint256 forVotes;
        uint256 abstainVotes;
        /// Its position in the proposal list (0 = first).
        uint64 index;
    }

    /// The calls a proposal makes, and its description (GovernorStorage).
    struct ProposalActions {
        address[] targets;
        uint256[] values;
        bytes[] calldatas;
        bytes32 descriptionHash;
        string description;
    }
}

const COUNT: &[u8] = b"g/c";

fn core_key(id: U256) -> Vec<u8> {
    codec::key(&[b"g/p", &id.to_be_bytes::<32>()])
}

fn actions_key(id: U256) -> Vec<u8> {
    codec::key(&[b"g/a", &id.to_be_bytes::<32>()])
}

fn vote_key(id: U256, voter: &Address) -> Vec<u8> {
    codec::key(&[b"g/v", &id.to_be_bytes::<32>(), voter.as_slice()])
}

fn index_key(i: u64) -> Vec<u8> {
    codec::key(&[b"g/i", &i.to_be_bytes()])
}

fn nonce_key(a: &Address) -> Vec<u8> {
    codec::key(&[b"g/o", a.as_slice()])
}

/// The refusal for an id no proposal has.
pub fn nonexistent(id: U256) -> ExecError {
    ExecError::NotFound(format!(
        "proposal {id} (no proposal has this id; ids are hashProposal(targets, values, calldatas, keccak256(description)))"
    ))
}

/// A proposal's core, if it exists.
pub fn core(state: &dyn StateRead, id: U256) -> Result<Option<ProposalCore>, StorageError> {
    codec::get_sol(state, &core_key(id))
}

/// A proposal's core, refused when it does not exist.
pub fn existing(state: &dyn StateRead, id: U256) -> ExecResult<ProposalCore> {
    core(state, id)?.ok_or_else(|| nonexistent(id))
}

pub fn put_core(state: &mut Overlay, id: U256, p: &ProposalCore) {
    codec::put_sol(state, core_key(id), p);
}

/// A proposal's actions and description, refused when it does not exist.
pub fn actions(state: &dyn StateRead, id: U256) -> ExecResult<ProposalActions> {
    codec::get_sol(state, &actions_key(id))?.ok_or_else(|| nonexistent(id))
}

/// Records a new proposal and appends it to the list; returns its index.
pub fn insert(
    state: &mut Overlay,
    id: U256,
    mut p: ProposalCore,
    a: &ProposalActions,
) -> ExecResult<u64> {
    let index = codec::get_u64(state, COUNT)?;
    p.index = index;
    put_core(state, id, &p);
    codec::put_sol(state, actions_key(id), a);
    codec::put_sol(state, index_key(index), &id);
    codec::put_u64(state, COUNT.to_vec(), index + 1);
    Ok(index)
}

/// How many proposals were ever made.
pub fn count(state: &dyn StateRead) -> Result<u64, StorageError> {
    codec::get_u64(state, COUNT)
}

/// The id of proposal number `index` (0 = first).
pub fn id_at(state: &dyn StateRead, index: u64) -> ExecResult<U256> {
    codec::get_sol::<U256>(state, &index_key(index))?.ok_or_else(|| {
        ExecError::NotFound(format!(
            "proposal index {index} (there are {} proposals)",
            count(state).unwrap_or(0)
        ))
    })
}

/// The support `voter` cast on proposal `id`, if any.
pub fn vote_of(
    state: &dyn StateRead,
    id: U256,
    voter: &Address,
) -> Result<Option<u8>, StorageError> {
    match state.get(&vote_key(id, voter))?.as_deref() {
        None => Ok(None),
        Some([v @ 1..=3]) => Ok(Some(v - 1)),
        Some(_) => Err(StorageError(format!(
            "corrupt vote record of {voter} on proposal {id}"
        ))),
    }
}

pub fn put_vote(state: &mut Overlay, id: U256, voter: &Address, support: u8) {
    state.put(vote_key(id, voter), vec![support + 1]);
}

/// `account`'s next EIP-712 nonce.
pub fn nonce(state: &dyn StateRead, account: &Address) -> Result<U256, StorageError> {
    codec::get_u256(state, &nonce_key(account))
}

/// Returns `account`'s current nonce and advances it (OZ's `_useNonce`).
pub fn use_nonce(state: &mut Overlay, account: &Address) -> ExecResult<U256> {
    let n = nonce(state, account)?;
    let next = n
        .checked_add(U256::from(1u8))
        .ok_or_else(|| ExecError::Invalid(format!("the nonce of {account} is exhausted")))?;
    codec::put_u256(state, nonce_key(account), next);
    Ok(n)
}

/// `bps` of all votes at `timepoint` (OZ's `quorum(timepoint)`, rounded down).
pub fn quorum_at(state: &dyn StateRead, timepoint: u64, bps: u16) -> Result<U256, StorageError> {
    let total = staking::past_total_votes(state, timepoint)?;
    // The total stake is at most the fixed supply (< 2^90), so the product cannot overflow.
    Ok(total.saturating_mul(U256::from(bps)) / U256::from(BPS))
}

/// The state of proposal `p` at time `now` (OZ's `Governor.state` with
/// GovernorTimelockCompound's Expired).
pub fn state_at(state: &dyn StateRead, p: &ProposalCore, now: u64) -> ExecResult<ProposalState> {
    Ok(if p.executed {
        ProposalState::Executed
    } else if p.canceled {
        ProposalState::Canceled
    } else if p.voteStart >= now {
        ProposalState::Pending
    } else if p.voteEnd >= now {
        ProposalState::Active
    } else if !succeeded(state, p)? {
        ProposalState::Defeated
    } else if p.eta == 0 {
        ProposalState::Succeeded
    } else if now >= p.expiresAt {
        ProposalState::Expired
    } else {
        ProposalState::Queued
    })
}

/// Whether the vote reached quorum (for + abstain) and for beat against.
fn succeeded(state: &dyn StateRead, p: &ProposalCore) -> ExecResult<bool> {
    let quorum = quorum_at(state, p.voteStart, p.quorumBps)?;
    let counted = p.forVotes.saturating_add(p.abstainVotes);
    Ok(quorum <= counted && p.forVotes > p.againstVotes)
}

/// A state's name, for messages.
pub fn state_name(s: ProposalState) -> &'static str {
    match s {
        ProposalState::Pending => "Pending",
        ProposalState::Active => "Active",
        ProposalState::Canceled => "Canceled",
        ProposalState::Defeated => "Defeated",
        ProposalState::Succeeded => "Succeeded",
        ProposalState::Queued => "Queued",
        ProposalState::Expired => "Expired",
        ProposalState::Executed => "Executed",
        _ => "unknown",
    }
}
