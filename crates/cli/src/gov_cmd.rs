//! `openledger gov`: governance through the governor at 0x…1007 (OpenZeppelin Governor
//! semantics): propose parameter changes, treasury grants and module calls, vote, queue,
//! execute, cancel, and show or list proposals with their state and votes.

mod build;

use crate::commands::Session;
use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_sol_types::{SolCall, SolEvent, SolEventInterface, SolInterface};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use openledger_types::{
    abi::{IAgent, IBank, IDatanet, IGovernor, IInference, IModel, IParams, IRlhf, IStaking},
    modules::{self, GOVERNOR},
    units::format_open,
    Params,
};
use serde_json::Value;

#[derive(Subcommand)]
pub enum GovCmd {
    /// Propose calls the governor makes once the proposal passes: parameter changes
    /// (--set), treasury grants (--grant), other module calls (--call). Prints its id.
    Propose {
        /// A parameter change KEY=VALUE (repeatable): fee_split.contributors_bps=6000,
        /// min_stake=2.5, call_gas.createDatanet=90000. Keys as in `openledger params`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// A treasury grant ADDRESS=AMOUNT in OPEN (repeatable); its reason is the description.
        #[arg(long = "grant", value_name = "ADDRESS=AMOUNT")]
        grant: Vec<String>,
        /// Any module call: TARGET:SIGNATURE[:JSON_ARGS] or TARGET:0xCALLDATA (repeatable), e.g.
        /// 'params:setParam(string,string):["min_stake","\"2\""]'.
        #[arg(long = "call", value_name = "TARGET:SIGNATURE[:ARGS]")]
        call: Vec<String>,
        /// What the proposal does and why (its id depends on it).
        #[arg(long)]
        description: String,
        /// A simulator report.json (`openledger sim run|sweep|threshold`) this proposal cites:
        /// its results hash is checked and the file's SHA-256 is appended to the description
        /// as a last line `evidence: sha256:<hex>`.
        #[arg(long, value_name = "REPORT_JSON")]
        evidence: Option<std::path::PathBuf>,
        /// Print the calls and the id without sending anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Vote on an active proposal with your stake at its snapshot.
    Vote {
        id: String,
        #[arg(value_enum)]
        support: Support,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Queue a succeeded proposal into the timelock.
    Queue { id: String },
    /// Execute a queued proposal once its timelock has passed.
    Execute { id: String },
    /// Cancel your own proposal while it is still pending.
    Cancel { id: String },
    /// A proposal: state, times, votes, quorum and its calls decoded.
    Show { id: String },
    /// The latest proposals with their state.
    List {
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Support {
    Against,
    For,
    Abstain,
}

/// Runs a `gov` subcommand.
pub fn run(s: &Session, c: GovCmd) -> Result<()> {
    match c {
        GovCmd::Propose {
            set,
            grant,
            call,
            description,
            evidence,
            dry_run,
        } => {
            let description = match evidence {
                Some(path) => with_evidence(description, &path)?,
                None => description,
            };
            propose(s, &set, &grant, &call, description, dry_run)
        }
        GovCmd::Vote {
            id,
            support,
            reason,
        } => {
            let id = parse_id(&id)?;
            let support = support as u8;
            let data = match reason {
                Some(reason) => IGovernor::castVoteWithReasonCall {
                    proposalId: id,
                    support,
                    reason,
                }
                .abi_encode(),
                None => IGovernor::castVoteCall {
                    proposalId: id,
                    support,
                }
                .abi_encode(),
            };
            send(s, data)
        }
        GovCmd::Queue { id } => send(
            s,
            IGovernor::queue_1Call {
                proposalId: parse_id(&id)?,
            }
            .abi_encode(),
        ),
        GovCmd::Execute { id } => send(
            s,
            IGovernor::execute_1Call {
                proposalId: parse_id(&id)?,
            }
            .abi_encode(),
        ),
        GovCmd::Cancel { id } => send(
            s,
            IGovernor::cancel_1Call {
                proposalId: parse_id(&id)?,
            }
            .abi_encode(),
        ),
        GovCmd::Show { id } => show(s, parse_id(&id)?),
        GovCmd::List { limit } => list(s, limit),
    }
}

/// The description with a last line `evidence: sha256:<hex>` naming the report file, once the
/// report's own results hash checks out (re-running it is `openledger sim verify`).
fn with_evidence(description: String, path: &std::path::Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        anyhow!(
            "{} is not a simulator report (not UTF-8 text)",
            path.display()
        )
    })?;
    openledger_sim::evidence::Evidence::read(text)
        .map_err(|e| anyhow!("--evidence {}: {e}", path.display()))?;
    let hash = openledger_sim::evidence::file_sha256(&bytes);
    println!("evidence {hash} ({})", path.display());
    Ok(format!("{}\nevidence: {hash}", description.trim_end()))
}

/// The `sha256:<hex>` of a description's last line `evidence: …`, if it has one.
fn evidence_of(description: &str) -> Option<&str> {
    description
        .lines()
        .last()?
        .strip_prefix("evidence: ")
        .filter(|h| h.starts_with("sha256:"))
}

/// A proposal id in decimal (as printed) or 0x hex.
fn parse_id(text: &str) -> Result<U256> {
    let t = text.trim();
    let r = match t.strip_prefix("0x") {
        Some(h) => U256::from_str_radix(h, 16),
        None => U256::from_str_radix(t, 10),
    };
    r.map_err(|e| anyhow!("{t:?} is not a proposal id (decimal or 0x hex): {e}"))
}

fn view<C: SolCall>(s: &Session, call: C) -> Result<C::Return> {
    let out = s.rpc()?.view(GOVERNOR, call.abi_encode())?;
    C::abi_decode_returns(&out).context("decoding the governor's answer")
}

fn propose(
    s: &Session,
    sets: &[String],
    grants: &[String],
    calls: &[String],
    description: String,
    dry_run: bool,
) -> Result<()> {
    let mut actions = Vec::new();
    if !sets.is_empty() {
        let out = s
            .rpc()?
            .view(modules::PARAMS, IParams::paramsJsonCall {}.abi_encode())?;
        let json = IParams::paramsJsonCall::abi_decode_returns(&out)?;
        let current: Params =
            serde_json::from_str(&json).context("reading the parameters in force")?;
        actions.extend(build::set_params(&current, sets)?);
    }
    for g in grants {
        actions.push(build::grant(g, &description)?);
    }
    for c in calls {
        actions.push(build::call(c)?);
    }
    if actions.is_empty() {
        bail!("a proposal needs at least one --set, --grant or --call");
    }
    let targets: Vec<Address> = actions.iter().map(|a| a.target).collect();
    let values = vec![U256::ZERO; actions.len()];
    let calldatas: Vec<Bytes> = actions.iter().map(|a| a.calldata.clone()).collect();
    let id = openledger_state::modules::governor::hash_proposal(
        &targets,
        &values,
        &calldatas,
        keccak256(description.as_bytes()),
    );
    println!("proposal {id}");
    for (i, a) in actions.iter().enumerate() {
        println!("  call {}  {}", i + 1, a.summary);
    }
    if dry_run {
        for (i, a) in actions.iter().enumerate() {
            println!("  calldata {}  {} {}", i + 1, a.target, a.calldata);
        }
        return Ok(());
    }
    send(
        s,
        IGovernor::proposeCall {
            targets,
            values,
            calldatas,
            description,
        }
        .abi_encode(),
    )
}

/// Sends a governor call from --from and prints the receipt's governance events.
fn send(s: &Session, data: Vec<u8>) -> Result<()> {
    let signer = s.signer()?;
    let r = s.rpc()?.send(&signer, GOVERNOR, U256::ZERO, data)?;
    println!(
        "transaction {} in block {}",
        r["transactionHash"].as_str().unwrap_or("?"),
        quantity(&r["blockNumber"])
    );
    for log in r["logs"].as_array().into_iter().flatten() {
        if let Some(line) = describe(log) {
            println!("  {line}");
        }
    }
    Ok(())
}

fn quantity(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default()
}

/// A governance-related log in words.
fn describe(log: &Value) -> Option<String> {
    let address: Address = serde_json::from_value(log["address"].clone()).ok()?;
    let topics: Vec<B256> = serde_json::from_value(log["topics"].clone()).ok()?;
    let data: Bytes = serde_json::from_value(log["data"].clone()).ok()?;
    use IGovernor::IGovernorEvents as E;
    match address {
        GOVERNOR => Some(match E::decode_raw_log(&topics, &data).ok()? {
            E::ProposalCreated(e) => format!(
                "ProposalCreated {} by {}: voting after {} until {}",
                e.proposalId, e.proposer, e.voteStart, e.voteEnd
            ),
            E::VoteCast(e) => format!(
                "VoteCast by {}: {} with {} OPEN",
                e.voter,
                support_name(e.support),
                format_open(e.weight)
            ),
            E::VoteCastWithParams(e) => format!(
                "VoteCast by {}: {} with {} OPEN",
                e.voter,
                support_name(e.support),
                format_open(e.weight)
            ),
            E::ProposalQueued(e) => {
                format!(
                    "ProposalQueued {}: executable from {}",
                    e.proposalId, e.etaSeconds
                )
            }
            E::ProposalExecuted(e) => format!("ProposalExecuted {}", e.proposalId),
            E::ProposalCanceled(e) => format!("ProposalCanceled {}", e.proposalId),
        }),
        modules::PARAMS => IParams::ParamsChanged::decode_raw_log(topics.iter().copied(), &data)
            .ok()
            .map(|e| format!("ParamsChanged {}", e.key)),
        modules::BANK => IBank::TreasuryGrant::decode_raw_log(topics.iter().copied(), &data)
            .ok()
            .map(|e| {
                format!(
                    "TreasuryGrant {} OPEN to {} ({})",
                    format_open(e.amount),
                    e.to,
                    e.reason
                )
            }),
        _ => None,
    }
}

fn support_name(s: u8) -> &'static str {
    match s {
        0 => "against",
        1 => "for",
        2 => "abstain",
        _ => "?",
    }
}

fn state_name(s: IGovernor::ProposalState) -> &'static str {
    use IGovernor::ProposalState as S;
    match s {
        S::Pending => "Pending",
        S::Active => "Active",
        S::Canceled => "Canceled",
        S::Defeated => "Defeated",
        S::Succeeded => "Succeeded",
        S::Queued => "Queued",
        S::Expired => "Expired",
        S::Executed => "Executed",
        _ => "?",
    }
}

fn show(s: &Session, id: U256) -> Result<()> {
    let state = view(s, IGovernor::stateCall { proposalId: id })?;
    let now = view(s, IGovernor::clockCall {})?.to::<u64>();
    let proposer = view(s, IGovernor::proposalProposerCall { proposalId: id })?;
    let snapshot = view(s, IGovernor::proposalSnapshotCall { proposalId: id })?;
    let deadline = view(s, IGovernor::proposalDeadlineCall { proposalId: id })?;
    let eta = view(s, IGovernor::proposalEtaCall { proposalId: id })?;
    let votes = view(s, IGovernor::proposalVotesCall { proposalId: id })?;
    let details = view(s, IGovernor::proposalDetailsCall { proposalId: id })?;
    let description = view(s, IGovernor::proposalDescriptionCall { proposalId: id })?;
    println!("proposal {id}");
    println!("  state        {}", state_name(state));
    println!("  proposer     {proposer}");
    println!("  description  {description}");
    if let Some(hash) = evidence_of(&description) {
        println!(
            "  evidence     {hash} (SHA-256 of a simulator report.json: `sha256sum` the file, then `openledger sim verify` it)"
        );
    }
    println!("  snapshot     {snapshot}{}", relative(snapshot, now));
    println!("  deadline     {deadline}{}", relative(deadline, now));
    if !eta.is_zero() {
        println!("  eta          {eta}{}", relative(eta, now));
    }
    println!(
        "  votes        for {} / against {} / abstain {} OPEN",
        format_open(votes.forVotes),
        format_open(votes.againstVotes),
        format_open(votes.abstainVotes)
    );
    if snapshot < U256::from(now) {
        let q = view(
            s,
            IGovernor::quorumCall {
                timepoint: snapshot,
            },
        )?;
        println!("  quorum       {} OPEN of for + abstain", format_open(q));
    }
    for (i, (target, data)) in details.targets.iter().zip(&details.calldatas).enumerate() {
        println!("  call {}       {}", i + 1, decode_call(target, data));
    }
    Ok(())
}

fn relative(t: U256, now: u64) -> String {
    let t = t.to::<u64>();
    if t >= now {
        format!(" (in {} s)", t - now)
    } else {
        format!(" ({} s ago)", now - t)
    }
}

/// A module call in words: `module.function { args }`.
fn decode_call(target: &Address, data: &[u8]) -> String {
    let module = modules::name_of(target).unwrap_or("?");
    let args = match *target {
        modules::PARAMS => dbg_call::<IParams::IParamsCalls>(data),
        modules::BANK => dbg_call::<IBank::IBankCalls>(data),
        modules::STAKING => dbg_call::<IStaking::IStakingCalls>(data),
        modules::DATANET => dbg_call::<IDatanet::IDatanetCalls>(data),
        modules::MODEL => dbg_call::<IModel::IModelCalls>(data),
        modules::INFERENCE => dbg_call::<IInference::IInferenceCalls>(data),
        modules::RLHF => dbg_call::<IRlhf::IRlhfCalls>(data),
        modules::AGENT => dbg_call::<IAgent::IAgentCalls>(data),
        _ => format!("0x{}", alloy_primitives::hex::encode(data)),
    };
    format!("{module} {args}")
}

fn dbg_call<C: SolInterface + std::fmt::Debug>(data: &[u8]) -> String {
    C::abi_decode(data)
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|e| format!("undecodable calldata: {e}"))
}

fn list(s: &Session, limit: u64) -> Result<()> {
    let count = view(s, IGovernor::proposalCountCall {})?.to::<u64>();
    if count == 0 {
        println!("no proposals yet (openledger gov propose …)");
        return Ok(());
    }
    for index in (count.saturating_sub(limit)..count).rev() {
        let d = view(
            s,
            IGovernor::proposalDetailsAtCall {
                index: U256::from(index),
            },
        )?;
        let state = view(
            s,
            IGovernor::stateCall {
                proposalId: d.proposalId,
            },
        )?;
        let description = view(
            s,
            IGovernor::proposalDescriptionCall {
                proposalId: d.proposalId,
            },
        )?;
        let first = description.lines().next().unwrap_or_default();
        println!(
            "{:<9} {}  {}",
            state_name(state),
            d.proposalId,
            first.chars().take(80).collect::<String>()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_is_the_descriptions_last_line_and_only_a_checked_report_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("report.json");
        std::fs::write(&bad, "{\"format\":\"something else\"}").unwrap();
        let e = with_evidence("Raise the contributors' share".into(), &bad).unwrap_err();
        assert!(e.to_string().contains("not a simulator report"), "{e}");
        let mut sc = openledger_sim::Scenario {
            days: 8,
            ..Default::default()
        };
        (sc.contributors.initial, sc.contributors.max) = (5, 10);
        (sc.users.initial, sc.users.max) = (5, 10);
        let job = openledger_sim::Job::Run;
        let computed = job.compute(&sc).unwrap();
        let out = dir.path().join("run");
        openledger_sim::write_job(&out, job, &sc, &computed).unwrap();
        let report = out.join("report.json");
        let d = with_evidence("Raise the share\n".into(), &report).unwrap();
        let hash = openledger_sim::evidence::file_sha256(&std::fs::read(&report).unwrap());
        assert_eq!(d, format!("Raise the share\nevidence: {hash}"));
        assert_eq!(evidence_of(&d), Some(hash.as_str()));
        assert_eq!(evidence_of("a\nevidence: sha256:ab12"), Some("sha256:ab12"));
        assert_eq!(evidence_of("evidence: sha256:ab12\nmore"), None);
        assert_eq!(evidence_of("no evidence"), None);
    }
}
