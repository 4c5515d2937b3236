//! The validator and agent loops: an RLHF round rewards the validators that agree with the
//! consensus and slashes the one that deviates; reveals must match a commitment; a validator
//! that commits and stays silent is slashed; an agent past the free daily volume needs agent
//! stake, and governance can slash it; a model proposal's bounty goes to a qualifying adapter's
//! owner, or back to the treasury when the proposal expires.

mod common;
mod loops;

use alloy_primitives::{B256, U256};
use common::World;
use loops::*;
use openledger_state::ExecError;
use openledger_types::{
    abi::{IAgent, IBank, IModel, IRlhf, IStaking},
    modules::{AGENT, BANK, MODEL, RLHF, STAKING, TREASURY},
    params::SlashDestination,
};

/// User 0 owns the datanet and adapter 1 and pays for inference; users 1..=4 are validators
/// with 2,000 OPEN staked each; user 5 stays outside.
const OWNER: usize = 0;
const OUTSIDER: usize = 5;

fn world(tune: impl FnOnce(&mut openledger_types::Params)) -> World {
    let mut w = World::new("rlhf agent", 6, 100_000, tune);
    datanet_and_base(&mut w, OWNER);
    adapter(&mut w, OWNER, "helper");
    deposit(&mut w, OWNER, open(100));
    for v in 1..=4 {
        stake_and_join(&mut w, v, open(2_000));
    }
    w
}

fn stake_of(w: &World, who: usize) -> U256 {
    w.view(
        STAKING,
        IStaking::stakeOfCall {
            staker: w.addr(who),
        },
    )
}

fn pool(w: &World) -> U256 {
    w.view(RLHF, IRlhf::rewardPoolCall {})
}

fn refused(r: Result<impl std::fmt::Debug, ExecError>, needle: &str) {
    match r {
        Err(e) => assert!(e.to_string().contains(needle), "{needle:?} not in: {e}"),
        Ok(v) => panic!("accepted ({v:?}); expected a refusal mentioning {needle:?}"),
    }
}

#[test]
fn an_rlhf_round_rewards_agreeing_validators_and_slashes_an_outlier() {
    let mut w = world(|_| {});
    // Two paid inferences, settled: the RLHF slice of the stakers' share funds the pool.
    let a = record(&mut w, OWNER, 1, 400, 600).unwrap();
    let b = record(&mut w, OWNER, 1, 400, 700).unwrap();
    w.call(
        OWNER,
        openledger_types::modules::INFERENCE,
        openledger_types::abi::IInference::settleCall {
            receiptIds: vec![a, b],
        },
    )
    .unwrap();
    let p = w.genesis.params.clone();
    let fees = [a, b].map(|id| {
        openledger_state::modules::inference::receipt(&w.kv, id)
            .unwrap()
            .fee
    });
    let expected_pool: U256 = fees
        .iter()
        .map(|f| {
            let stakers = *f * U256::from(p.fee_split.stakers_bps) / U256::from(10_000u64);
            stakers * U256::from(p.rlhf.rlhf_fee_bps) / U256::from(10_000u64)
        })
        .sum();
    assert!(!expected_pool.is_zero());
    assert_eq!(
        pool(&w),
        expected_pool,
        "the pool holds the RLHF slice of both fees"
    );
    assert_eq!(
        w.balance(RLHF),
        expected_pool,
        "the module holds exactly its pool"
    );

    // Validators 1-3 agree that answer A is good and better than B; validator 4 also prefers
    // A but scores it far below the others.
    let round = open_round(&mut w, OUTSIDER, a, b).unwrap();
    let ratings = [(1, 8000u16, 1u8), (2, 7500, 1), (3, 8200, 1), (4, 1000, 1)];
    for &(v, s, pr) in &ratings {
        commit(&mut w, v, round, s, pr).unwrap();
    }
    past_commit(&mut w, round);
    for &(v, s, pr) in &ratings {
        reveal(&mut w, v, round, s, pr).unwrap();
    }
    past_reveal(&mut w, round);
    let before: Vec<U256> = (0..6).map(|i| w.balance(w.addr(i))).collect();
    let (treasury, stake4, pool_before) = (w.balance(TREASURY), stake_of(&w, 4), pool(&w));
    w.call(OUTSIDER, RLHF, IRlhf::finalizeRoundCall { roundId: round })
        .unwrap();

    let r = w.view(RLHF, IRlhf::getRoundCall { roundId: round });
    assert_eq!(r.status, 1, "finalized with a consensus");
    assert_eq!(
        r.consensusScoreBps, 7500,
        "the lower median of 1000, 7500, 8000, 8200"
    );
    assert_eq!(r.consensusPreferred, 1, "three of four prefer A");
    let each = pool_before * U256::from(p.rlhf.rlhf_round_reward_bps)
        / U256::from(10_000u64)
        / U256::from(3u64);
    assert!(!each.is_zero());
    for (v, was) in before.iter().enumerate().take(4).skip(1) {
        assert_eq!(
            w.balance(w.addr(v)) - *was,
            each,
            "agreeing validator {v} earns an equal share of the round's reward"
        );
    }
    assert_eq!(w.balance(w.addr(4)), before[4], "the outlier earns nothing");
    let slashed = U256::from(2_000u64) * loops::open(1) * U256::from(p.rlhf.rlhf_slash_bps)
        / U256::from(10_000u64);
    assert_eq!(
        stake_of(&w, 4),
        stake4 - slashed,
        "the outlier loses rlhf_slash_bps of its stake"
    );
    assert_eq!(
        w.balance(TREASURY) - treasury,
        slashed,
        "slashed stake goes to the treasury"
    );
    assert_eq!(pool(&w), pool_before - each * U256::from(3u64));
    assert_eq!(w.balance(RLHF), pool(&w));

    // The decided pair is a preference (prompt, chosen A, rejected B); A's adapter is scored.
    assert_eq!(w.view(RLHF, IRlhf::preferenceCountCall {}), 1);
    let pref = w.view(RLHF, IRlhf::getPreferenceCall { index: 1 });
    assert_eq!((pref.chosenReceipt, pref.rejectedReceipt), (a, b));
    assert_eq!(pref.promptHash, text_hash(&format!("prompt of {a}")));
    assert_eq!(pref.chosenOutputHash, text_hash(&format!("answer {a}")));
    let score = w.view(RLHF, IRlhf::adapterScoreCall { adapterId: 1 });
    assert_eq!((score.rounds, score.meanScoreBps), (1, 7500));

    // The round is closed: no second finalize, and the pair is not rated twice.
    refused(
        w.call(OUTSIDER, RLHF, IRlhf::finalizeRoundCall { roundId: round }),
        "already finalized",
    );
    refused(open_round(&mut w, OUTSIDER, b, a), "already rated");

    // A preference against the majority deviates too, whatever the score; an abstention on the
    // preference is neither paid nor slashed.
    let c = record(&mut w, OWNER, 1, 10, 10).unwrap();
    let d = record(&mut w, OWNER, 1, 10, 10).unwrap();
    let round = open_round(&mut w, OUTSIDER, c, d).unwrap();
    let ratings = [(1, 5000u16, 2u8), (2, 5000, 2), (3, 5000, 0), (4, 5000, 1)];
    for &(v, s, pr) in &ratings {
        commit(&mut w, v, round, s, pr).unwrap();
    }
    past_commit(&mut w, round);
    for &(v, s, pr) in &ratings {
        reveal(&mut w, v, round, s, pr).unwrap();
    }
    past_reveal(&mut w, round);
    let before: Vec<U256> = (0..6).map(|i| w.balance(w.addr(i))).collect();
    let stakes: Vec<U256> = (0..6).map(|i| stake_of(&w, i)).collect();
    w.call(OUTSIDER, RLHF, IRlhf::finalizeRoundCall { roundId: round })
        .unwrap();
    let r = w.view(RLHF, IRlhf::getRoundCall { roundId: round });
    assert_eq!((r.consensusScoreBps, r.consensusPreferred), (5000, 2));
    assert!(
        stake_of(&w, 4) < stakes[4],
        "the opposite preference is slashed"
    );
    assert_eq!(w.balance(w.addr(4)), before[4]);
    assert_eq!(stake_of(&w, 3), stakes[3], "an abstention is not slashed");
    assert_eq!(w.balance(w.addr(3)), before[3], "nor paid");
    for v in 1..=2 {
        assert!(
            w.balance(w.addr(v)) > before[v],
            "majority validator {v} is paid"
        );
        assert_eq!(stake_of(&w, v), stakes[v]);
    }
    let pref = w.view(RLHF, IRlhf::getPreferenceCall { index: 2 });
    assert_eq!(
        (pref.chosenReceipt, pref.rejectedReceipt),
        (d, c),
        "B was chosen"
    );
}

#[test]
fn a_reveal_without_a_matching_commit_is_refused() {
    let mut w = world(|_| {});
    let a = record(&mut w, OWNER, 1, 10, 10).unwrap();
    let round = open_round(&mut w, OUTSIDER, a, 0).unwrap();
    refused(
        commit(&mut w, OUTSIDER, round, 5000, 0),
        "not an RLHF validator",
    );
    refused(
        commit(&mut w, OWNER, round, 5000, 0),
        "not an RLHF validator",
    );
    commit(&mut w, 1, round, 6000, 0).unwrap();
    commit(&mut w, 2, round, 6000, 0).unwrap();
    refused(commit(&mut w, 1, round, 9000, 0), "already committed");
    refused(reveal(&mut w, 1, round, 6000, 0), "takes reveals from");
    past_commit(&mut w, round);
    refused(commit(&mut w, 3, round, 6000, 0), "took commitments until");
    // Validator 3 never committed; validator 1 tries to reveal another score than it committed.
    refused(reveal(&mut w, 3, round, 6000, 0), "made no commitment");
    refused(reveal(&mut w, 1, round, 9000, 0), "does not match");
    refused(
        w.call(
            1,
            RLHF,
            IRlhf::revealRatingCall {
                roundId: round,
                scoreBps: 6000,
                preferred: 0,
                salt: B256::repeat_byte(9),
            },
        ),
        "does not match",
    );
    refused(reveal(&mut w, 1, round, 6000, 1), "preference");
    reveal(&mut w, 1, round, 6000, 0).unwrap();
    refused(reveal(&mut w, 1, round, 6000, 0), "already revealed");
    refused(
        w.call(OUTSIDER, RLHF, IRlhf::finalizeRoundCall { roundId: round }),
        "can be finalized from",
    );

    // Validator 2 stays silent: the round is void (1 reveal of the 3 needed) and the silent
    // validator is slashed all the same; the one that revealed is neither paid nor slashed.
    past_reveal(&mut w, round);
    let (stake1, stake2) = (stake_of(&w, 1), stake_of(&w, 2));
    w.call(OUTSIDER, RLHF, IRlhf::finalizeRoundCall { roundId: round })
        .unwrap();
    let r = w.view(RLHF, IRlhf::getRoundCall { roundId: round });
    assert_eq!((r.status, r.reveals), (2, 1), "void: too few reveals");
    assert_eq!(stake_of(&w, 1), stake1);
    let bps = w.genesis.params.rlhf.rlhf_no_reveal_slash_bps;
    assert_eq!(
        stake_of(&w, 2),
        stake2 - stake2 * U256::from(bps) / U256::from(10_000u64),
        "committing and staying silent is slashed"
    );
    let score = w.view(RLHF, IRlhf::adapterScoreCall { adapterId: 1 });
    assert_eq!(score.rounds, 0, "a void round does not score the adapter");
}

#[test]
fn adapter_owners_and_thin_stakes_cannot_rate() {
    let mut w = world(|_| {});
    // Validator 1 registers an adapter and serves a receipt with it: it may not rate that.
    let own = adapter(&mut w, 1, "validators-own");
    deposit(&mut w, 1, open(1));
    let mine = record(&mut w, 1, own, 5, 5).unwrap();
    let round = open_round(&mut w, OUTSIDER, mine, 0).unwrap();
    refused(
        commit(&mut w, 1, round, 10_000, 0),
        "do not rate their own outputs",
    );
    // A validator whose stake fell below the minimum cannot commit.
    w.call(
        2,
        STAKING,
        IStaking::requestUnstakeCall {
            amount: open(1_500),
        },
    )
    .unwrap();
    refused(
        commit(&mut w, 2, round, 5000, 0),
        "RLHF validators need at least",
    );
    refused(
        w.call(OUTSIDER, RLHF, IRlhf::joinValidatorsCall {}),
        "RLHF validators need at least",
    );
}

#[test]
fn an_agent_over_the_free_volume_needs_stake() {
    let mut w = world(|p| p.agent.agent_free_tokens_per_day = 1_000);
    let me = w.addr(OWNER);
    record(&mut w, OWNER, 1, 300, 300).unwrap();
    let u = w.view(AGENT, IAgent::usageOfCall { account: me });
    assert_eq!(
        (u.tokensToday, u.freeTokensPerDay, u.staked),
        (600, 1_000, false)
    );
    // 600 + 600 > 1,000 free tokens, and no agent stake: refused, with what to do.
    let before = w.view(
        openledger_types::modules::INFERENCE,
        openledger_types::abi::IInference::receiptCountCall {},
    );
    refused(record(&mut w, OWNER, 1, 300, 300), "free tokens");
    refused(
        record(&mut w, OWNER, 1, 300, 300),
        "openledger agent register",
    );
    assert_eq!(
        w.view(
            openledger_types::modules::INFERENCE,
            openledger_types::abi::IInference::receiptCountCall {},
        ),
        before,
        "nothing was recorded"
    );
    // Stake needs registration; a stake below the minimum does not lift the limit.
    refused(
        w.send(
            OWNER,
            AGENT,
            open(1),
            IAgent::stakeAgentCall {}.abi_encode_vec(),
        ),
        "registerAgent first",
    );
    w.call(
        OWNER,
        AGENT,
        IAgent::registerAgentCall {
            metadata: "ipfs://my-agent".into(),
        },
    )
    .unwrap();
    w.send(
        OWNER,
        AGENT,
        open(999),
        IAgent::stakeAgentCall {}.abi_encode_vec(),
    )
    .unwrap();
    refused(record(&mut w, OWNER, 1, 300, 300), "free tokens");
    w.send(
        OWNER,
        AGENT,
        open(1),
        IAgent::stakeAgentCall {}.abi_encode_vec(),
    )
    .unwrap();
    record(&mut w, OWNER, 1, 300, 300).unwrap();
    let u = w.view(AGENT, IAgent::usageOfCall { account: me });
    assert_eq!((u.tokensToday, u.staked), (1_200, true));
    assert_eq!(w.balance(AGENT), open(1_000));
    assert_eq!(w.view(AGENT, IAgent::totalAgentStakeCall {}), open(1_000));

    // Unstaking drops it below the minimum again; the next UTC day starts from zero.
    w.call(OWNER, AGENT, IAgent::unstakeAgentCall { amount: open(1) })
        .unwrap();
    refused(record(&mut w, OWNER, 1, 300, 300), "free tokens");
    w.env.timestamp += 86_400;
    record(&mut w, OWNER, 1, 300, 300).unwrap();
    let u = w.view(AGENT, IAgent::usageOfCall { account: me });
    assert_eq!(u.tokensToday, 600);
    refused(
        w.call(OWNER, AGENT, IAgent::withdrawAgentStakeCall {}),
        "released at",
    );
    w.env.timestamp += w.genesis.params.agent.agent_unstake_cooldown_secs;
    let bal = w.balance(me);
    w.call(OWNER, AGENT, IAgent::withdrawAgentStakeCall {})
        .unwrap();
    assert!(
        w.balance(me) > bal,
        "the unbonded OPEN came back (less gas)"
    );
    assert_eq!(w.balance(AGENT), open(999));
}

#[test]
fn governance_slashes_a_misbehaving_agent() {
    let mut w = world(|_| {});
    let agent = w.addr(OUTSIDER);
    w.call(
        OUTSIDER,
        AGENT,
        IAgent::registerAgentCall {
            metadata: "spam bot".into(),
        },
    )
    .unwrap();
    w.send(
        OUTSIDER,
        AGENT,
        open(1_500),
        IAgent::stakeAgentCall {}.abi_encode_vec(),
    )
    .unwrap();
    w.call(
        OUTSIDER,
        AGENT,
        IAgent::unstakeAgentCall { amount: open(500) },
    )
    .unwrap();
    let slash = |amount| IAgent::slashAgentCall {
        agent,
        amount,
        reason: "flooded the network".into(),
    };
    refused(w.call(OWNER, AGENT, slash(open(100))), "only the governor");
    refused(
        w.call(OUTSIDER, AGENT, slash(open(100))),
        "only the governor",
    );

    // The governor takes the stake first, then unbonding OPEN, to the treasury.
    let treasury = w.balance(TREASURY);
    as_governor(&mut w, AGENT, slash(open(1_200))).unwrap();
    let g = w.view(AGENT, IAgent::getAgentCall { agent });
    assert_eq!((g.stake, g.unbonding), (U256::ZERO, open(300)));
    assert_eq!(w.balance(TREASURY) - treasury, open(1_200));
    assert_eq!(w.balance(AGENT), open(300));

    // Governed burn: the supply shrinks by what is slashed, and balances still add up to it.
    w.genesis.params.slash_destination = SlashDestination::Burn;
    let supply: U256 = w.view(BANK, IBank::totalSupplyCall {});
    as_governor(&mut w, AGENT, slash(open(1_000))).unwrap();
    assert_eq!(
        w.balance(AGENT),
        U256::ZERO,
        "only 300 OPEN were left to slash"
    );
    let after: U256 = w.view(BANK, IBank::totalSupplyCall {});
    assert_eq!(supply - after, open(300));
    refused(as_governor(&mut w, AGENT, slash(open(1))), "no agent stake");
}

/// Proposal 1 is fulfilled by an adapter rated above its target; proposal 2 expires with its
/// bounty back in the treasury and its escrow refunded less the slash; proposal 3 lapses
/// unapproved with its escrow refunded in full.
#[test]
fn a_model_proposal_bounty_is_paid_on_a_qualifying_adapter_and_returned_on_expiry() {
    let mut w = world(|p| p.model_proposal.model_proposal_min_rated_rounds = 2);
    let p = w.genesis.params.model_proposal.clone();
    let propose = |name: &str, target| IModel::proposeModelCall {
        name: name.into(),
        description: "a beekeeping assistant".into(),
        datanetId: 1,
        targetScoreBps: target,
    };
    refused(
        w.send(
            OUTSIDER,
            MODEL,
            open(1),
            propose("cheap", 7000).abi_encode_vec(),
        ),
        "escrows at least",
    );
    refused(
        w.send(
            OUTSIDER,
            MODEL,
            open(100),
            IModel::proposeModelCall {
                datanetId: 9,
                ..propose("x", 1)
            }
            .abi_encode_vec(),
        ),
        "datanet 9",
    );
    for name in ["bees", "wax", "honey"] {
        w.send(
            OUTSIDER,
            MODEL,
            open(100),
            propose(name, 7000).abi_encode_vec(),
        )
        .unwrap();
    }
    assert_eq!(
        w.balance(MODEL),
        open(300),
        "the escrows sit in the model module"
    );

    w.env.timestamp += 10;
    let approve = |id, bounty| IModel::approveModelProposalCall {
        proposalId: id,
        bounty,
    };
    refused(
        w.call(OWNER, MODEL, approve(1, open(5_000))),
        "only the governor",
    );
    let treasury = w.balance(TREASURY);
    as_governor(&mut w, MODEL, approve(1, open(5_000))).unwrap();
    as_governor(&mut w, MODEL, approve(2, open(2_000))).unwrap();
    refused(
        as_governor(&mut w, MODEL, approve(1, open(1))),
        "not awaiting approval",
    );
    assert_eq!(
        treasury - w.balance(TREASURY),
        open(7_000),
        "bounties reserved from the treasury"
    );
    assert_eq!(w.balance(MODEL), open(7_300));

    // Adapter 1 predates the approval; adapter 2 (by user 4) is new but not rated yet.
    w.env.timestamp += 10;
    let fresh = adapter(&mut w, 4, "bees-v2");
    let claim = |adapter| IModel::claimModelBountyCall {
        proposalId: 1,
        adapterId: adapter,
    };
    refused(
        w.call(OUTSIDER, MODEL, claim(1)),
        "registered after the approval",
    );
    refused(
        w.call(OUTSIDER, MODEL, claim(fresh)),
        "over 0 counted rounds",
    );
    // Two rated rounds on its receipts: 8000 and 6500, mean 7250 >= 7000 (validator 4 owns it
    // and may not rate it, so validators 1-3 do).
    let r1 = record(&mut w, OWNER, fresh, 10, 10).unwrap();
    let r2 = record(&mut w, OWNER, fresh, 10, 10).unwrap();
    full_round(
        &mut w,
        OUTSIDER,
        r1,
        0,
        &[(1, 8000, 0), (2, 8000, 0), (3, 8100, 0)],
    );
    refused(
        w.call(OUTSIDER, MODEL, claim(fresh)),
        "over 1 counted rounds",
    );
    full_round(
        &mut w,
        OUTSIDER,
        r2,
        0,
        &[(1, 6500, 0), (2, 6400, 0), (3, 6600, 0)],
    );
    let score = w.view(RLHF, IRlhf::adapterScoreCall { adapterId: fresh });
    assert_eq!((score.rounds, score.meanScoreBps), (2, 7250));
    let (owner_before, proposer_before) = (w.balance(w.addr(4)), w.balance(w.addr(OUTSIDER)));
    w.call(OWNER, MODEL, claim(fresh)).unwrap();
    assert_eq!(
        w.balance(w.addr(4)) - owner_before,
        open(5_000),
        "the adapter owner gets the bounty"
    );
    assert_eq!(
        w.balance(w.addr(OUTSIDER)) - proposer_before,
        open(100),
        "the proposer's escrow is refunded"
    );
    let got = w.view(MODEL, IModel::getModelProposalCall { proposalId: 1 });
    assert_eq!((got.status, got.adapterId), (2, fresh));
    refused(w.call(OWNER, MODEL, claim(fresh)), "no bounty to claim");

    // Proposal 2 runs out of time: bounty back, escrow refunded less the governed slash.
    let expire = |id| IModel::expireModelProposalCall { proposalId: id };
    refused(w.call(OWNER, MODEL, expire(2)), "cannot expire");
    w.env.timestamp += p.model_proposal_duration_secs;
    let (treasury, proposer) = (w.balance(TREASURY), w.balance(w.addr(OUTSIDER)));
    w.call(OWNER, MODEL, expire(2)).unwrap();
    let slashed = open(100) * U256::from(p.model_proposal_slash_bps) / U256::from(10_000u64);
    assert_eq!(w.balance(TREASURY) - treasury, open(2_000) + slashed);
    assert_eq!(w.balance(w.addr(OUTSIDER)) - proposer, open(100) - slashed);
    // Proposal 3 was never approved; its approval window is long over: refunded in full.
    let proposer = w.balance(w.addr(OUTSIDER));
    w.call(OWNER, MODEL, expire(3)).unwrap();
    assert_eq!(w.balance(w.addr(OUTSIDER)) - proposer, open(100));
    assert_eq!(
        w.balance(MODEL),
        U256::ZERO,
        "the module owes nothing and holds nothing"
    );
    refused(
        as_governor(&mut w, MODEL, approve(3, open(1))),
        "not awaiting approval",
    );
}

trait EncodeVec {
    fn abi_encode_vec(&self) -> Vec<u8>;
}
impl<C: alloy_sol_types::SolCall> EncodeVec for C {
    fn abi_encode_vec(&self) -> Vec<u8> {
        self.abi_encode()
    }
}

/// The governor itself (0x…1007) drives the governed calls: one proposal, voted by staked
/// validators, queued and executed after the timelock, slashes an agent, approves a model
/// proposal with a treasury bounty and retunes an RLHF parameter.
#[test]
fn a_passed_governance_proposal_slashes_an_agent_approves_a_bounty_and_tunes_rlhf() {
    use openledger_types::{
        abi::{IGovernor, IParams},
        modules::{GOVERNOR, PARAMS},
        params::GovernanceParams,
    };
    let mut w = world(|p| {
        p.governance = GovernanceParams {
            voting_delay_secs: 10,
            voting_period_secs: 100,
            proposal_threshold: open(1_000),
            timelock_delay_secs: 10,
            ..GovernanceParams::default()
        }
    });
    let agent = w.addr(OUTSIDER);
    w.call(
        OUTSIDER,
        AGENT,
        IAgent::registerAgentCall {
            metadata: "spam bot".into(),
        },
    )
    .unwrap();
    w.send(
        OUTSIDER,
        AGENT,
        open(1_000),
        IAgent::stakeAgentCall {}.abi_encode_vec(),
    )
    .unwrap();
    w.send(
        OUTSIDER,
        MODEL,
        open(100),
        IModel::proposeModelCall {
            name: "bees".into(),
            description: String::new(),
            datanetId: 1,
            targetScoreBps: 7000,
        }
        .abi_encode_vec(),
    )
    .unwrap();
    w.env.timestamp += 1;

    let calls: Vec<(alloy_primitives::Address, Vec<u8>)> = vec![
        (
            AGENT,
            IAgent::slashAgentCall {
                agent,
                amount: open(400),
                reason: "flooded the network".into(),
            }
            .abi_encode_vec(),
        ),
        (
            MODEL,
            IModel::approveModelProposalCall {
                proposalId: 1,
                bounty: open(3_000),
            }
            .abi_encode_vec(),
        ),
        (
            PARAMS,
            IParams::setParamCall {
                key: "rlhf_tolerance_bps".into(),
                jsonValue: "2000".into(),
            }
            .abi_encode_vec(),
        ),
    ];
    let targets: Vec<_> = calls.iter().map(|c| c.0).collect();
    let values = vec![U256::ZERO; calls.len()];
    let calldatas: Vec<alloy_primitives::Bytes> = calls.into_iter().map(|c| c.1.into()).collect();
    let description = "slash the spam agent, fund the bee model, loosen RLHF tolerance";
    w.call(
        1,
        GOVERNOR,
        IGovernor::proposeCall {
            targets: targets.clone(),
            values: values.clone(),
            calldatas: calldatas.clone(),
            description: description.into(),
        },
    )
    .unwrap();
    let id = w.view(
        GOVERNOR,
        IGovernor::hashProposalCall {
            targets,
            values,
            calldatas,
            descriptionHash: alloy_primitives::keccak256(description),
        },
    );
    w.env.timestamp += 11;
    for v in 1..=3 {
        w.call(
            v,
            GOVERNOR,
            IGovernor::castVoteCall {
                proposalId: id,
                support: 1,
            },
        )
        .unwrap();
    }
    w.env.timestamp += 100;
    w.call(1, GOVERNOR, IGovernor::queue_1Call { proposalId: id })
        .unwrap();
    w.env.timestamp += 10;
    let treasury = w.balance(TREASURY);
    w.call(4, GOVERNOR, IGovernor::execute_1Call { proposalId: id })
        .unwrap();

    let g = w.view(AGENT, IAgent::getAgentCall { agent });
    assert_eq!(g.stake, open(600), "the agent lost 400 of its 1,000 OPEN");
    let p = w.view(MODEL, IModel::getModelProposalCall { proposalId: 1 });
    assert_eq!(
        (p.status, p.bounty),
        (1, open(3_000)),
        "approved with its bounty"
    );
    assert_eq!(
        treasury - w.balance(TREASURY),
        open(3_000) - open(400),
        "the bounty left the treasury, the slash came in"
    );
    let params = openledger_state::modules::params::load(&w.kv).unwrap();
    assert_eq!(params.rlhf.rlhf_tolerance_bps, 2000);
}
