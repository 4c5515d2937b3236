//! `openledger factory submit | jobs | cancel`: training jobs run by the node
//! (`/v1/factory/jobs`, see `crate::factory_jobs`). Submitting and cancelling are signed by the
//! `--from` key (a fresh nonce and the body's hash, so the node refuses a replay); reading a
//! job on a permissioned datanet is signed too when `--from` is given. `jobs ID --follow`
//! streams the job's progress (Server-Sent Events) until it ends, reconnecting when the node
//! restarts.

use crate::commands::Session;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use openledger_factory::TrainConfig;
use openledger_types::request_auth;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct SubmitArgs {
    /// All settings as TOML (LLaMA-Factory names, as for `factory train`); its datasets must
    /// name datanets (`datanet = "ID@VERSION"`): the node reads no local file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A datanet version to train on, ID@VERSION (ID alone: the latest); repeatable.
    #[arg(long = "datanet")]
    datanets: Vec<String>,
    /// The base model, by the name (or path) the node knows it by (default: the node's first).
    #[arg(long)]
    base: Option<String>,
    /// Follow the job's progress until it ends.
    #[arg(long)]
    follow: bool,
}

#[derive(Args)]
pub struct JobsArgs {
    /// One job: its details (or its progress with --follow).
    id: Option<u64>,
    /// Stream the job's progress until it ends.
    #[arg(long, requires = "id")]
    follow: bool,
    /// Print JSON (with --follow: one event per line).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CancelArgs {
    /// The job to cancel (it stops at the end of its current step, keeping its checkpoint).
    id: u64,
}

/// Longest line of an event stream read.
const MAX_EVENT_LINE: u64 = 4 << 20;

/// A client of the node's job routes.
struct Client {
    base: String,
    chain_id: u64,
    signer: Option<PrivateKeySigner>,
    agent: ureq::Agent,
}

impl Client {
    /// Signs with the --from key when one is given; `required`: refuses to go on without.
    fn new(s: &Session, required: bool) -> Result<Client> {
        let rest = s.rest(true)?;
        if required && rest.signer.is_none() {
            bail!("this request is signed: name your key with --from (openledger --from KEY factory …)");
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Ok(Client {
            base: rest.base,
            chain_id: rest.chain_id,
            signer: rest.signer,
            agent: ureq::Agent::new_with_config(config),
        })
    }

    /// A fresh `Authorization` header for `METHOD path` with `body`, when a key is at hand.
    fn auth(&self, method: &str, path: &str, body: &[u8]) -> Result<Option<String>> {
        let Some(signer) = &self.signer else {
            return Ok(None);
        };
        let time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let hash = request_auth::body_hash(body);
        let msg = request_auth::message(self.chain_id, method, path, time, &nonce, &hash);
        let sig = signer.sign_message_sync(msg.as_bytes())?;
        Ok(Some(request_auth::header(
            signer.address(),
            time,
            &nonce,
            &hash,
            &sig,
        )))
    }

    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow!(
            "cannot reach the node at {}: {e} (is `openledger node` running?)",
            self.base
        )
    }

    fn answer(&self, path: &str, mut resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the node's answer to {path}"))?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        match v["error"].as_str() {
            Some(e) => bail!("{e} (HTTP {})", status.as_u16()),
            None if status.as_u16() == 404 => {
                bail!("{path}: HTTP 404 (does this node run training jobs? upgrade it)")
            }
            None => bail!("{path}: HTTP {status}"),
        }
    }

    fn get(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        if let Some(a) = self.auth("GET", path, b"")? {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| self.unreachable(e))?;
        self.answer(path, resp)
    }

    fn post(&self, path: &str, body: &[u8]) -> Result<Value> {
        let mut req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json");
        if let Some(a) = self.auth("POST", path, body)? {
            req = req.header("Authorization", a);
        }
        let resp = req.send(body).map_err(|e| self.unreachable(e))?;
        self.answer(path, resp)
    }
}

/// The submission body: the TOML config as JSON (settings left out stay out, so the node's
/// defaults apply) and the datanet versions.
fn submission(args: &SubmitArgs) -> Result<Value> {
    let mut config = serde_json::Map::new();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // Refuses unknown keys and bad types here, with the file's name.
        TrainConfig::from_toml(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Value::Object(o) = serde_json::to_value(table)? {
            config = o;
        }
    }
    if let Some(b) = &args.base {
        config.insert("base_model".into(), b.clone().into());
    }
    Ok(json!({"config": config, "datanets": args.datanets}))
}

pub fn submit(s: &Session, args: &SubmitArgs) -> Result<()> {
    let body = serde_json::to_vec(&submission(args)?)?;
    let client = Client::new(s, true)?;
    let job = client
        .post("/v1/factory/jobs", &body)
        .context("submitting the training job")?;
    let id = job["id"].as_u64().unwrap_or_default();
    eprintln!(
        "job {id} queued on the node: follow it with `openledger factory jobs {id} --follow`"
    );
    println!("{}", serde_json::to_string_pretty(&job)?);
    if args.follow {
        follow(&client, id, false)?;
    }
    Ok(())
}

pub fn cancel(s: &Session, args: &CancelArgs) -> Result<()> {
    let client = Client::new(s, true)?;
    let job = client.post(&format!("/v1/factory/jobs/{}/cancel", args.id), b"")?;
    println!("{}", serde_json::to_string_pretty(&job)?);
    Ok(())
}

pub fn jobs(s: &Session, args: &JobsArgs) -> Result<()> {
    // Signed when --from is given (the progress of jobs on permissioned datanets).
    let client = Client::new(s, false)?;
    match (args.id, args.follow) {
        (Some(id), true) => follow(&client, id, args.json),
        (Some(id), false) => {
            let job = client.get(&format!("/v1/factory/jobs/{id}"))?;
            println!("{}", serde_json::to_string_pretty(&job)?);
            Ok(())
        }
        (None, _) => {
            let list = client.get("/v1/factory/jobs")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            print_list(&list);
            Ok(())
        }
    }
}

fn print_list(list: &Value) {
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no training jobs on this node");
        return;
    }
    println!(
        "{:>5}  {:<10} {:>13}  {:>8}  {:<42}  DATANETS",
        "ID", "STATUS", "STEP", "LOSS", "SUBMITTER"
    );
    for j in rows {
        let total = j["total_steps"]
            .as_u64()
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into());
        let datanets: Vec<String> = j["datanets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| format!("{}@{}", d["id"], d["version"]))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:>5}  {:<10} {:>13}  {:>8}  {:<42}  {}",
            j["id"],
            j["status"].as_str().unwrap_or("?"),
            format!("{}/{total}", j["step"]),
            j["loss"]
                .as_f64()
                .map(|l| format!("{l:.4}"))
                .unwrap_or_else(|| "-".into()),
            j["submitter"].as_str().unwrap_or("?"),
            datanets.join(",")
        );
    }
}

/// One event as a line for a person.
fn describe(v: &Value, total: &mut Option<u64>) -> Option<String> {
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let of_total = |step: &Value, total: &Option<u64>| match total {
        Some(t) => format!("{step}/{t}"),
        None => step.to_string(),
    };
    Some(match v["event"].as_str()? {
        "status" => {
            if let Some(t) = v["total_steps"].as_u64() {
                *total = Some(t);
            }
            let mut line = format!(
                "job {}: {} at step {}",
                v["job"],
                v["status"].as_str().unwrap_or("?"),
                of_total(&v["step"], total)
            );
            if let Some(o) = v["outcome"].as_str() {
                line.push_str(&format!(" ({o})"));
            }
            if let Some(e) = v["error"].as_str() {
                line.push_str(&format!(": {e}"));
            }
            line
        }
        "started" => {
            *total = v["total_steps"].as_u64();
            format!(
                "training {} LoRA parameters on {} examples ({} held out, {} rejected), {} steps{}",
                v["trainable_params"],
                v["train_examples"],
                v["val_examples"],
                v["rejected"],
                v["total_steps"],
                match v["start_step"].as_u64() {
                    Some(s) if s > 0 => format!(", resuming at step {s}"),
                    _ => String::new(),
                }
            )
        }
        "step" => format!(
            "step {} · loss {:.4} · lr {:.2e} · {:.0} tok/s",
            of_total(&v["step"], total),
            f("loss"),
            f("lr"),
            f("tokens_per_s")
        ),
        "eval" => format!(
            "step {} · validation loss {:.4} · perplexity {:.2}",
            v["step"],
            f("val_loss"),
            f("val_ppl")
        ),
        "samples" => {
            let phase = v["phase"].as_str().unwrap_or("?");
            let lines: Vec<String> = v["samples"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| format!("sample ({phase} training): → {:?}", s["generated"]))
                        .collect()
                })
                .unwrap_or_default();
            if lines.is_empty() {
                return None;
            }
            lines.join("\n")
        }
        "checkpoint" => format!("checkpoint at step {}", v["step"]),
        "note" => v["message"].as_str().unwrap_or_default().to_string(),
        _ => return None,
    })
}

/// What a follower has shown, so a reconnection's replay is not shown twice.
#[derive(Default)]
struct Seen {
    last_step: Option<u64>,
    evals: HashSet<u64>,
    phases: HashSet<String>,
    status: Option<(String, u64)>,
}

impl Seen {
    /// Whether `v` is new (and remembers it).
    fn fresh(&mut self, v: &Value) -> bool {
        let step = v["step"].as_u64();
        match v["event"].as_str() {
            Some("step") => {
                if step.is_some_and(|s| Some(s) <= self.last_step) {
                    return false;
                }
                self.last_step = step.max(self.last_step);
            }
            Some("eval") => return step.is_some_and(|s| self.evals.insert(s)),
            Some("samples") => {
                return v["phase"]
                    .as_str()
                    .is_some_and(|p| self.phases.insert(p.to_string()))
            }
            Some("status") => {
                let now = (
                    v["status"].as_str().unwrap_or_default().to_string(),
                    step.unwrap_or_default(),
                );
                if self.status.as_ref() == Some(&now) {
                    return false;
                }
                self.status = Some(now);
            }
            _ => {}
        }
        true
    }
}

/// Streams job `id`'s events until a final status; reconnects when the stream ends early.
fn follow(client: &Client, id: u64, json: bool) -> Result<()> {
    let path = format!("/v1/factory/jobs/{id}/events");
    let mut seen = Seen::default();
    let mut total = None;
    let mut failures = 0;
    loop {
        let mut req = client
            .agent
            .get(format!("{}{path}", client.base))
            .header("Accept", "text/event-stream");
        if let Some(a) = client.auth("GET", &path, b"")? {
            req = req.header("Authorization", a);
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                failures += 1;
                if failures > 60 {
                    return Err(client.unreachable(e));
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if !resp.status().is_success() {
            client.answer(&path, resp)?;
            bail!("{path}: the node did not stream the job's events");
        }
        failures = 0;
        let mut reader = std::io::BufReader::new(resp.into_body().into_reader());
        let mut data = String::new();
        loop {
            let mut line = String::new();
            let n = (&mut reader)
                .take(MAX_EVENT_LINE)
                .read_line(&mut line)
                .unwrap_or(0);
            if n == 0 {
                break;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.trim_start());
                continue;
            }
            if !line.is_empty() || data.is_empty() {
                continue;
            }
            let v: Value = match serde_json::from_str(&std::mem::take(&mut data)) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if !seen.fresh(&v) {
                continue;
            }
            if json {
                println!("{v}");
            } else if let Some(text) = describe(&v, &mut total) {
                println!("{text}");
            }
            if v["event"] == "status" {
                match v["status"].as_str() {
                    Some("done") | Some("cancelled") => return Ok(()),
                    Some("failed") => bail!(
                        "job {id} failed: {}",
                        v["error"].as_str().unwrap_or("see the node's log")
                    ),
                    _ => {}
                }
            }
        }
        // The stream ended before the job did (the node restarted, or the hour is up).
        std::thread::sleep(Duration::from_secs(1));
    }
}
