//! OpenLoRA payments from the terminal: `openledger api-key new|revoke` (API keys for the
//! node's OpenAI API, bound to the `--from` account by a signature, with the operator's
//! allowance approved on chain) and `openledger rewards ADDRESS` (what an address earned as
//! contributor, model owner, staker and platform, from the chain's logs and views).

use crate::commands::Session;
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_signer::SignerSync;
use alloy_sol_types::{SolCall, SolEvent};
use anyhow::{anyhow, bail, Context, Result};
use openledger_node::openlora::api_keys;
use openledger_types::{
    abi::{IInference, IModel, IStaking},
    modules, request_auth,
    units::{format_open, parse_open},
};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(clap::Subcommand)]
pub enum ApiKeyCmd {
    /// Create an API key for the node's OpenAI API, acting for the --from account: approves the
    /// node's operator to spend up to --allowance of your inference credit (when it may spend
    /// less), binds the key to your account with a signature and prints it once (last line).
    New {
        /// The most the operator may take from your credit, in OPEN.
        #[arg(long, value_parser = parse_open, default_value = "1")]
        allowance: U256,
    },
    /// Revoke an API key (the key itself, or its hash 0x…), signed by the --from account.
    Revoke { key: String },
}

#[derive(clap::Args)]
pub struct RewardsArgs {
    /// The address (or key name) whose earnings to show.
    pub address: String,
    /// Print JSON (amounts in wei, as decimal strings).
    #[arg(long)]
    pub json: bool,
}

/// Most adapters scanned for an owner's receipts.
const MAX_ADAPTERS: u64 = 10_000;

fn now() -> Result<u64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// The JSON answer of a node route, or its error message.
fn answer(
    path: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value> {
    let mut resp = resp.map_err(|e| {
        anyhow!("cannot reach the node for {path}: {e} (is `openledger node` running?)")
    })?;
    let status = resp.status();
    let v: Value = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_json()
        .unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(v);
    }
    match v["error"].as_str() {
        Some(e) => bail!("{e}"),
        None if status.as_u16() == 404 => {
            bail!("{path}: HTTP 404 (this node has no OpenLoRA payments routes; upgrade it)")
        }
        None => bail!("{path}: HTTP {status}"),
    }
}

pub fn api_key(s: &Session, c: ApiKeyCmd) -> Result<()> {
    match c {
        ApiKeyCmd::New { allowance } => new_key(s, allowance),
        ApiKeyCmd::Revoke { key } => revoke(s, &key),
    }
}

fn new_key(s: &Session, wanted: U256) -> Result<()> {
    let signer = s.signer()?;
    let me = signer.address();
    let rpc = s.rpc()?;
    let base = rpc.url.trim_end_matches('/').to_string();
    let info = answer(
        "/v1/openlora",
        agent().get(format!("{base}/v1/openlora")).call(),
    )?;
    let operator: Address = match info.get("operator") {
        Some(Value::String(a)) => a.parse().context("the node's operator address")?,
        _ => bail!(
            "this node has no operator key, so it charges nothing and issues no API keys (set \
             [serve] operator in its config.toml)"
        ),
    };
    let chain_id = info["chain_id"]
        .as_u64()
        .ok_or_else(|| anyhow!("the node did not say its chain id (upgrade it)"))?;
    let allowed = U256::abi_decode_view(
        &rpc.view(
            modules::INFERENCE,
            IInference::allowanceCall {
                account: me,
                operator,
            }
            .abi_encode(),
        )?,
    )?;
    if allowed < wanted && me != operator {
        let r = rpc.send(
            &signer,
            modules::INFERENCE,
            U256::ZERO,
            IInference::approveOperatorCall {
                operator,
                allowance: wanted,
            }
            .abi_encode(),
        )?;
        eprintln!(
            "approved operator {operator} to spend up to {} OPEN of your inference credit \
             (transaction {})",
            format_open(wanted),
            r["transactionHash"].as_str().unwrap_or("?")
        );
    }
    let credit = U256::abi_decode_view(&rpc.view(
        modules::INFERENCE,
        IInference::creditOfCall { account: me }.abi_encode(),
    )?)?;
    if credit.is_zero() {
        eprintln!(
            "note: {me} has no inference credit yet; calls are refused (402) until you deposit \
             some: openledger --from KEY inference deposit AMOUNT"
        );
    }
    let key = format!(
        "{}{}",
        api_keys::KEY_PREFIX,
        hex(&rand::random::<[u8; 32]>())
    );
    let key_hash = api_keys::key_hash(&key);
    let issued_at = now()?;
    let msg = api_keys::binding_message(chain_id, operator, &key_hash, issued_at);
    let sig = signer.sign_message_sync(msg.as_bytes())?;
    let body = json!({
        "address": me,
        "key_hash": key_hash,
        "issued_at": issued_at,
        "signature": format!("0x{}", hex(&sig.as_bytes())),
    });
    answer(
        "/v1/api-keys",
        agent().post(format!("{base}/v1/api-keys")).send_json(&body),
    )?;
    eprintln!(
        "API key for {me} (keep it secret: the node stores only its hash; revoke it with \
         `openledger --from KEY api-key revoke KEY`):"
    );
    println!("{key}");
    Ok(())
}

fn revoke(s: &Session, key: &str) -> Result<()> {
    let hash: B256 = match key.strip_prefix("0x") {
        Some(_) => key.parse().context("a key hash is 0x + 64 hex digits")?,
        None => api_keys::key_hash(key),
    };
    let signer = s.signer()?;
    let rpc = s.rpc()?;
    let chain_id = quantity(&rpc.call("eth_chainId", json!([]))?);
    let path = format!("/v1/api-keys/{hash}");
    let time = now()?;
    let nonce = format!("{:032x}", rand::random::<u128>());
    let body = request_auth::body_hash(b"");
    let msg = request_auth::message(chain_id, "DELETE", &path, time, &nonce, &body);
    let sig = signer.sign_message_sync(msg.as_bytes())?;
    let auth = request_auth::header(signer.address(), time, &nonce, &body, &sig);
    let base = rpc.url.trim_end_matches('/');
    answer(
        &path,
        agent()
            .delete(format!("{base}{path}"))
            .header("Authorization", auth)
            .call(),
    )?;
    println!("revoked API key {hash}");
    Ok(())
}

/// A JSON-RPC quantity ("0x…") as a number.
fn quantity(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decoding of a view's single return value.
trait DecodeView: Sized {
    fn abi_decode_view(b: &Bytes) -> Result<Self>;
}

impl DecodeView for U256 {
    fn abi_decode_view(b: &Bytes) -> Result<Self> {
        <U256 as alloy_sol_types::SolValue>::abi_decode(b).context("decoding a view's answer")
    }
}

/// Every log of `event` from `address` matching `topics` after the signature, read in pages of
/// blocks that fit the node's `max_log_range` and `max_log_results` (halved while it refuses).
fn all_logs(s: &Session, address: Address, event: B256, topics: Vec<Value>) -> Result<Vec<Value>> {
    let rpc = s.rpc()?;
    let head = quantity(&rpc.call("eth_blockNumber", json!([]))?);
    let mut topic_list = vec![json!(event)];
    topic_list.extend(topics);
    let mut out = Vec::new();
    let (mut from, mut step) = (0u64, 10_000u64);
    while from <= head {
        let to = head.min(from.saturating_add(step - 1));
        let filter = json!([{
            "address": address,
            "fromBlock": format!("0x{from:x}"),
            "toBlock": format!("0x{to:x}"),
            "topics": topic_list,
        }]);
        match rpc.call("eth_getLogs", filter) {
            Ok(Value::Array(logs)) => {
                out.extend(logs);
                from = to + 1;
            }
            Ok(other) => bail!("eth_getLogs returned {other}"),
            Err(e) if step > 1 && e.to_string().contains("narrow") => step /= 2,
            Err(e) => return Err(e.context("reading logs")),
        }
    }
    Ok(out)
}

fn decode<E: SolEvent>(log: &Value) -> Result<E> {
    let topics: Vec<B256> = serde_json::from_value(log["topics"].clone())?;
    let data: Bytes = serde_json::from_value(log["data"].clone())?;
    E::decode_raw_log(topics, &data).context("decoding a log")
}

fn topic(a: Address) -> Value {
    json!(a.into_word())
}

/// What an address earned, in wei.
#[derive(Default)]
struct Earnings {
    contributor: U256,
    contributor_payments: usize,
    owner: U256,
    owner_receipts: usize,
    adapters: Vec<u64>,
    claimed: U256,
    pending: U256,
    platform: Option<U256>,
}

pub fn rewards(s: &Session, a: RewardsArgs) -> Result<()> {
    let who: Address = match a.address.parse() {
        Ok(addr) => addr,
        Err(_) => crate::wallet::key_address(&s.cli_home.keystore().join(&a.address))
            .with_context(|| format!("{:?} is neither an address nor a key name", a.address))?,
    };
    let e = earnings(s, who)?;
    if a.json {
        println!(
            "{}",
            json!({
                "address": who,
                "contributor": { "wei": e.contributor.to_string(), "payments": e.contributor_payments },
                "model_owner": { "wei": e.owner.to_string(), "receipts": e.owner_receipts, "adapters": e.adapters },
                "staker": { "claimed_wei": e.claimed.to_string(), "pending_wei": e.pending.to_string() },
                "platform_wei": e.platform.map(|p| p.to_string()),
            })
        );
        return Ok(());
    }
    println!("earnings of {who}");
    println!(
        "  contributor   {} OPEN ({} payments)",
        format_open(e.contributor),
        e.contributor_payments
    );
    println!(
        "  model owner   {} OPEN ({} settled receipts of {} adapters)",
        format_open(e.owner),
        e.owner_receipts,
        e.adapters.len()
    );
    println!(
        "  staker        {} OPEN claimed, {} OPEN pending",
        format_open(e.claimed),
        format_open(e.pending)
    );
    match e.platform {
        Some(p) => println!(
            "  platform      {} OPEN (treasury share of inference fees)",
            format_open(p)
        ),
        None => println!("  platform      - (only the treasury earns the platform share)"),
    }
    Ok(())
}

fn earnings(s: &Session, who: Address) -> Result<Earnings> {
    let rpc = s.rpc()?;
    let mut e = Earnings::default();
    // As a contributor: ContributorPaid logs naming it.
    for log in all_logs(
        s,
        modules::INFERENCE,
        IInference::ContributorPaid::SIGNATURE_HASH,
        vec![Value::Null, Value::Null, topic(who)],
    )? {
        let p: IInference::ContributorPaid = decode(&log)?;
        e.contributor += p.amount;
        e.contributor_payments += 1;
    }
    // As a model owner: the owner's share of settled receipts of its adapters.
    let count = IModel::adapterCountCall::abi_decode_returns(
        &rpc.view(modules::MODEL, IModel::adapterCountCall {}.abi_encode())?,
    )?;
    for id in 1..=count.min(MAX_ADAPTERS) {
        let out = rpc.view(
            modules::MODEL,
            IModel::getAdapterCall { adapterId: id }.abi_encode(),
        )?;
        if IModel::getAdapterCall::abi_decode_returns(&out)?.owner == who {
            e.adapters.push(id);
        }
    }
    let fees = if e.adapters.is_empty() && who != modules::TREASURY {
        Vec::new()
    } else {
        all_logs(
            s,
            modules::INFERENCE,
            IInference::FeeSettled::SIGNATURE_HASH,
            vec![],
        )?
    };
    if !e.adapters.is_empty() {
        let mut receipts = HashSet::new();
        for log in all_logs(
            s,
            modules::INFERENCE,
            IInference::InferenceRecorded::SIGNATURE_HASH,
            vec![],
        )? {
            let r: IInference::InferenceRecorded = decode(&log)?;
            if e.adapters.contains(&r.adapterId) {
                receipts.insert(r.receiptId);
            }
        }
        for log in &fees {
            let f: IInference::FeeSettled = decode(log)?;
            if receipts.contains(&f.receiptId) {
                e.owner += f.modelOwner;
                e.owner_receipts += 1;
            }
        }
    }
    // As the platform: the treasury's share of every settled fee.
    if who == modules::TREASURY {
        let mut p = U256::ZERO;
        for log in &fees {
            p += decode::<IInference::FeeSettled>(log)?.platform;
        }
        e.platform = Some(p);
    }
    // As a staker: rewards claimed, and pending.
    for log in all_logs(
        s,
        modules::STAKING,
        IStaking::RewardsClaimed::SIGNATURE_HASH,
        vec![topic(who)],
    )? {
        e.claimed += decode::<IStaking::RewardsClaimed>(&log)?.amount;
    }
    e.pending = U256::abi_decode_view(&rpc.view(
        modules::STAKING,
        IStaking::pendingRewardsCall { staker: who }.abi_encode(),
    )?)?;
    Ok(e)
}
