//! Serving and paying: the builder registers the base model by its file's hash and publishes
//! the adapter (`factory publish`: provenance, attribution index); stakers stake; the app
//! deposits inference credit and binds an API key; then each round asks the planted-fact
//! questions over the OpenAI API, checks every generated answer's attribution, waits for the
//! operator to record and settle its receipt, and records who earned what.

use super::{accounts, report, train, Ctx};
use alloy_primitives::{Address, B256, U256};
use alloy_signer::SignerSync;
use anyhow::{anyhow, bail, Context, Result};
use openledger_node::openlora::api_keys;
use openledger_types::{
    abi::{IInference, IParams},
    modules,
    units::format_open,
};
use serde_json::{json, Value};
use sha2::Digest;
use std::path::Path;
use std::time::{Duration, Instant};

/// The adapter's on-chain name (the OpenAI API's `model`).
pub const ADAPTER: &str = "beekeeper";

/// Registers the base model, publishes the adapter, stakes, funds the app and makes its key.
pub fn publish_and_prepare(ctx: &mut Ctx, job: &Path, model: &Path) -> Result<()> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let hash = format!("0x{:x}", sha2::Sha256::digest(&bytes));
    println!("  builder registers the base model SmolLM2-135M-Instruct by its file's SHA-256");
    ctx.ol(
        Some("builder"),
        &[
            "model",
            "register-base",
            "SmolLM2-135M-Instruct",
            "--hash",
            &hash,
        ],
    )?;
    println!(
        "\n  builder publishes the adapter {ADAPTER:?} with its provenance and attribution index"
    );
    let job_s = job.display().to_string();
    ctx.ol(
        Some("builder"),
        &["factory", "publish", &job_s, "--name", ADAPTER],
    )?;
    let id = ctx.view(
        modules::MODEL,
        openledger_types::abi::IModel::adapterByNameCall {
            name: ADAPTER.into(),
        },
    )?;
    if id == 0 {
        bail!("the adapter {ADAPTER:?} is not registered after publishing");
    }
    ctx.report.adapter_id = id;
    println!("\n  stakers stake (their stake is their vote), validators stake and join RLHF");
    for (name, amount) in [("staker1", "15000"), ("staker2", "8000")] {
        ctx.ol(Some(name), &["stake", "add", amount])?;
    }
    for v in ["validator1", "validator2", "validator3"] {
        ctx.ol(Some(v), &["stake", "add", "1000"])?;
        ctx.ol(Some(v), &["rlhf", "join"])?;
    }
    println!("\n  app deposits 20 OPEN of inference credit and binds an API key");
    ctx.ol(Some("app"), &["inference", "deposit", "20"])?;
    ctx.report.api_key = Some(new_api_key(ctx, "app", U256::from(20u64) * one())?);
    Ok(())
}

fn one() -> U256 {
    openledger_types::units::one_open()
}

/// Approves the node's operator for `allowance` and binds a fresh API key to `name`.
fn new_api_key(ctx: &Ctx, name: &str, allowance: U256) -> Result<String> {
    let signer = ctx.signer(name)?;
    let info = http_json("GET", &format!("{}/v1/openlora", ctx.url), None, None)?;
    let operator: Address = info["operator"]
        .as_str()
        .context("the node has no OpenLoRA operator")?
        .parse()?;
    let chain_id = info["chain_id"].as_u64().context("the node's chain id")?;
    ctx.send(
        name,
        modules::INFERENCE,
        U256::ZERO,
        alloy_sol_types::SolCall::abi_encode(&IInference::approveOperatorCall {
            operator,
            allowance,
        }),
    )?;
    let key = format!(
        "{}{}",
        api_keys::KEY_PREFIX,
        alloy_primitives::hex::encode(rand::random::<[u8; 32]>())
    );
    let key_hash = api_keys::key_hash(&key);
    let issued_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let msg = api_keys::binding_message(chain_id, operator, &key_hash, issued_at);
    let sig = signer.sign_message_sync(msg.as_bytes())?;
    http_json(
        "POST",
        &format!("{}/v1/api-keys", ctx.url),
        None,
        Some(json!({
            "address": signer.address(),
            "key_hash": key_hash,
            "issued_at": issued_at,
            "signature": format!("0x{}", alloy_primitives::hex::encode(sig.as_bytes())),
        })),
    )?;
    println!(
        "  API key {}… bound to app {}",
        &key[..12],
        signer.address()
    );
    Ok(key)
}

/// A JSON request to the node; an error status becomes an error with the node's message.
fn http_json(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> Result<Value> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build(),
    );
    let resp = match (method, body) {
        ("GET", _) => agent.get(url).call(),
        (_, Some(b)) => {
            let mut r = agent.post(url);
            if let Some(k) = bearer {
                r = r.header("Authorization", &format!("Bearer {k}"));
            }
            r.send_json(&b)
        }
        _ => agent.post(url).send_empty(),
    };
    let mut resp = resp.map_err(|e| anyhow!("{method} {url}: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_json()
        .unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{method} {url}: HTTP {status}: {v}");
    }
    Ok(v)
}

/// The governed parameters as JSON.
pub fn params(ctx: &Ctx) -> Result<Value> {
    let json = ctx.view(modules::PARAMS, IParams::paramsJsonCall {})?;
    serde_json::from_str(&json).context("reading the parameters in force")
}

/// One round: every question asked, checked, settled; balances before and after.
pub fn round(ctx: &mut Ctx, n: u64) -> Result<()> {
    let key = ctx.report.api_key.clone().context("internal: no API key")?;
    let split = params(ctx)?["fee_split"].clone();
    println!("  fee split in force: {split}");
    let before = accounts::balances(ctx)?;
    let operator = ctx
        .accounts
        .0
        .iter()
        .find(|a| a.role == accounts::Role::Operator)
        .map(|a| a.address)
        .context("internal: no operator account")?;
    let mut answers = Vec::new();
    for q in train::questions() {
        println!("\n  app asks: {:?}", q.prompt);
        let t = Instant::now();
        let v = http_json(
            "POST",
            &format!("{}/v1/chat/completions", ctx.url),
            Some(&key),
            Some(json!({
                "model": ADAPTER,
                "temperature": 0,
                "max_tokens": train::MAX_ANSWER_TOKENS,
                "messages": [{ "role": "user", "content": q.prompt }],
            })),
        )?;
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .context("the answer has no choices[0].message.content")?
            .to_string();
        let attribution = v["attribution"].clone();
        println!("  answer ({:.1} s): {text:?}", t.elapsed().as_secs_f64());
        let a = check_answer(ctx, &q, &text, &attribution)?;
        let request: B256 = attribution["receipt"]["request_id"]
            .as_str()
            .context("the answer's attribution has no receipt.request_id")?
            .parse()
            .context("the receipt's request id")?;
        let receipt = wait_settled(ctx, operator, request)?;
        println!(
            "  receipt {} recorded by the operator and settled: fee {} OPEN",
            receipt.id,
            format_open(receipt.fee)
        );
        answers.push(report::AnswerReport {
            round: n,
            prompt: q.prompt.clone(),
            expected_contributor: q.contributor.to_string(),
            phrase: q.phrase.to_string(),
            answer: text,
            contributions: a,
            coverage: attribution["coverage"].as_f64().unwrap_or(0.0),
            receipt_id: receipt.id,
            fee_wei: receipt.fee.to_string(),
            attribution,
        });
    }
    let after = accounts::balances(ctx)?;
    println!("\n  OPEN before and after round {n}:");
    accounts::print_table(ctx, ["before", "after"], &before, &after);
    ctx.report.rounds.push(report::RoundReport::new(
        n,
        split,
        &ctx.accounts,
        &before,
        &after,
        answers,
    ));
    Ok(())
}

/// Checks that the answer states its fact and that its attribution gives the most weight to
/// the contributor whose fact it is; returns the contributions with their names and spans.
fn check_answer(
    ctx: &Ctx,
    q: &train::Question,
    text: &str,
    attribution: &Value,
) -> Result<Vec<report::Attributed>> {
    let mut out = Vec::new();
    for c in attribution["contributions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let address: Address = c["contributor"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("an attributed contribution has no contributor")?;
        let spans = c["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["text"].as_str().map(str::to_string))
            .collect();
        out.push(report::Attributed {
            contribution_id: c["contribution_id"].as_u64().unwrap_or_default(),
            contributor: ctx
                .accounts
                .name_of(address)
                .unwrap_or("someone else")
                .to_string(),
            address,
            weight: c["weight"].as_f64().unwrap_or(0.0),
            spans,
        });
    }
    for a in &out {
        println!(
            "    attributed to {} (contribution {}): weight {:.3}; spans {:?}",
            a.contributor, a.contribution_id, a.weight, a.spans
        );
    }
    if let Some(why) = super::checks::answer_failure(q, text, &out) {
        bail!("{why}; attribution: {attribution}");
    }
    Ok(out)
}

/// Waits (bounded) until the operator has recorded the request's receipt and it is settled.
fn wait_settled(ctx: &Ctx, operator: Address, request: B256) -> Result<IInference::Receipt> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let id = ctx.view(
            modules::INFERENCE,
            IInference::receiptOfRequestCall {
                operator,
                requestId: request,
            },
        )?;
        if id != 0 {
            let r = ctx.view(
                modules::INFERENCE,
                IInference::getReceiptCall { receiptId: id },
            )?;
            if r.settled {
                return Ok(r);
            }
        }
        if Instant::now() > deadline {
            bail!("the operator did not record and settle request {request} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
