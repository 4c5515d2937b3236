//! Helpers for the validator and agent loop tests: a served adapter with paid receipts, RLHF
//! rounds driven through commit and reveal, and calls made as the governor (0x…1007), the way
//! an executed proposal makes them.

#![allow(dead_code)]

use crate::common::World;
use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolCall;
use openledger_state::{modules, Ctx, ExecError, Overlay};
use openledger_types::{
    abi::{IDatanet, IInference, IModel, IRlhf, IStaking},
    modules::{DATANET, GOVERNOR, INFERENCE, MODEL, RLHF, STAKING},
    units::one_open,
};

/// `n` whole OPEN.
pub fn open(n: u64) -> U256 {
    U256::from(n) * one_open()
}

/// Datanet 1 (owned by `owner`) with one approved contribution, and base model 1.
pub fn datanet_and_base(w: &mut World, owner: usize) {
    w.call(owner, DATANET, crate::common::public_datanet("beekeeping"))
        .unwrap();
    w.call(
        owner,
        DATANET,
        IDatanet::contributeCall {
            datanetId: 1,
            rowsRoot: keccak256(b"rows"),
            rowCount: 3,
            byteSize: 300,
            score: 9000,
            metadataUri: String::new(),
        },
    )
    .unwrap();
    w.call(owner, DATANET, IDatanet::approveCall { contributionId: 1 })
        .unwrap();
    w.call(
        owner,
        MODEL,
        IModel::registerBaseModelCall {
            modelHash: keccak256(b"base"),
            name: "base".into(),
        },
    )
    .unwrap();
}

/// Registers an adapter on datanet 1 version 1 as `who`; returns its id.
pub fn adapter(w: &mut World, who: usize, name: &str) -> u64 {
    w.call(
        who,
        MODEL,
        IModel::registerAdapterCall {
            baseModelId: 1,
            name: name.into(),
            datanetIds: vec![1],
            datanetVersions: vec![1],
            trainingConfigHash: keccak256(b"config"),
            adapterHash: keccak256(name.as_bytes()),
            attributionIndexRoot: B256::ZERO,
        },
    )
    .unwrap();
    w.view(MODEL, IModel::adapterCountCall {})
}

/// Deposits `amount` of inference credit for `who`.
pub fn deposit(w: &mut World, who: usize, amount: U256) {
    w.send(
        who,
        INFERENCE,
        amount,
        IInference::depositCall {}.abi_encode(),
    )
    .unwrap();
}

/// `who` records (and pays for) an inference of its own on `adapter`; returns the receipt id.
pub fn record(
    w: &mut World,
    who: usize,
    adapter: u64,
    prompt: u32,
    completion: u32,
) -> Result<u64, ExecError> {
    let caller = w.addr(who);
    w.call(
        who,
        INFERENCE,
        IInference::recordInferenceCall {
            caller,
            adapterId: adapter,
            promptTokens: prompt,
            completionTokens: completion,
            top: vec![],
            attributionRoot: B256::ZERO,
        },
    )?;
    Ok(w.view(INFERENCE, IInference::receiptCountCall {}))
}

/// Stakes `amount` OPEN for `who` in the staking module and joins the RLHF validators.
pub fn stake_and_join(w: &mut World, who: usize, amount: U256) {
    w.send(who, STAKING, amount, IStaking::stakeCall {}.abi_encode())
        .unwrap();
    w.call(who, RLHF, IRlhf::joinValidatorsCall {}).unwrap();
}

/// The hash a round commits to for a text.
pub fn text_hash(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

/// `who` opens a round on `a` (and `b`, 0 for none) with hashes of placeholder texts.
pub fn open_round(w: &mut World, who: usize, a: u64, b: u64) -> Result<u64, ExecError> {
    w.call(
        who,
        RLHF,
        IRlhf::openRoundCall {
            receiptA: a,
            receiptB: b,
            promptHash: text_hash(&format!("prompt of {a}")),
            outputHashA: text_hash(&format!("answer {a}")),
            outputHashB: if b == 0 {
                B256::ZERO
            } else {
                text_hash(&format!("answer {b}"))
            },
        },
    )?;
    Ok(w.view(RLHF, IRlhf::roundCountCall {}))
}

/// A validator's salt in a test round.
pub fn salt(who: usize, round: u64) -> B256 {
    keccak256(format!("salt {who} {round}"))
}

/// `who` commits a rating.
pub fn commit(
    w: &mut World,
    who: usize,
    round: u64,
    score: u16,
    preferred: u8,
) -> Result<(), ExecError> {
    let commitment = w.view(
        RLHF,
        IRlhf::commitmentOfCall {
            roundId: round,
            validator: w.addr(who),
            scoreBps: score,
            preferred,
            salt: salt(who, round),
        },
    );
    w.call(
        who,
        RLHF,
        IRlhf::commitRatingCall {
            roundId: round,
            commitment,
        },
    )
}

/// `who` reveals a rating.
pub fn reveal(
    w: &mut World,
    who: usize,
    round: u64,
    score: u16,
    preferred: u8,
) -> Result<(), ExecError> {
    w.call(
        who,
        RLHF,
        IRlhf::revealRatingCall {
            roundId: round,
            scoreBps: score,
            preferred,
            salt: salt(who, round),
        },
    )
}

/// Moves the clock past a round's commit window.
pub fn past_commit(w: &mut World, round: u64) {
    let r = w.view(RLHF, IRlhf::getRoundCall { roundId: round });
    w.env.timestamp = w.env.timestamp.max(r.commitEnd);
    w.env.block_number += 1;
}

/// Moves the clock past a round's reveal window.
pub fn past_reveal(w: &mut World, round: u64) {
    let r = w.view(RLHF, IRlhf::getRoundCall { roundId: round });
    w.env.timestamp = w.env.timestamp.max(r.revealEnd);
    w.env.block_number += 1;
}

/// A whole round on `a`/`b`: every (validator, score, preference) commits and reveals, then
/// `finalizer` finalizes it. Returns the round id.
pub fn full_round(
    w: &mut World,
    finalizer: usize,
    a: u64,
    b: u64,
    ratings: &[(usize, u16, u8)],
) -> u64 {
    let round = open_round(w, finalizer, a, b).unwrap();
    for &(v, s, p) in ratings {
        commit(w, v, round, s, p).unwrap();
    }
    past_commit(w, round);
    for &(v, s, p) in ratings {
        reveal(w, v, round, s, p).unwrap();
    }
    past_reveal(w, round);
    w.call(finalizer, RLHF, IRlhf::finalizeRoundCall { roundId: round })
        .unwrap();
    round
}

/// Executes `call` on module `to` with the governor as sender, as an executed proposal does,
/// and commits its writes when accepted.
pub fn as_governor<C: SolCall>(w: &mut World, to: Address, call: C) -> Result<Vec<u8>, ExecError> {
    let params = w.genesis.params.clone();
    let env = w.env.clone();
    let mut ctx = Ctx {
        state: Overlay::new(&w.kv),
        env: &env,
        params: &params,
        sender: GOVERNOR,
        value: U256::ZERO,
        logs: Vec::new(),
    };
    let out = modules::dispatch(&mut ctx, to, &call.abi_encode())?;
    let writes = ctx.state.into_writes();
    w.kv.apply(writes);
    Ok(out)
}
