//! ModelFactory jobs on the node (`/v1/factory/jobs`, `openledger factory submit | jobs |
//! cancel`) on a dev chain whose datanet 1 holds alice's sample rows, training a tiny model the
//! test builds (allowed by `[factory] base_models`):
//!
//! - only a signed request by an allowed account is queued (unsigned 401, replayed 401, not
//!   allowed 403), a bad hyperparameter is refused with the trainer's message (400), a
//!   permissioned datanet without a grant is refused (403), an oversized body too (413), all
//!   before anything is queued;
//! - one job trains at a time: a second waits, a third is refused while the queue is full (429);
//! - the progress stream replays the job's log and follows it live to `done`; list and detail
//!   report it; a cancel by someone else is refused (403), by the submitter it stops the job
//!   within a step and keeps its checkpoint;
//! - a node killed (SIGKILL) mid-job resumes the job from its checkpoint at restart, runs the
//!   job queued behind it, and the resumed job's adapter is bit-identical to the uninterrupted
//!   run of the same config.

mod common;

#[path = "../../factory/tests/common/mod.rs"]
mod tiny;

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use common::{sample, Env};
use openledger_types::request_auth;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_openledger");
/// How long any wait in these tests may last before it fails (a hang, not a timing check).
const PATIENCE: Duration = Duration::from_secs(300);

fn dev_signer(i: usize) -> PrivateKeySigner {
    let key = alloy_primitives::keccak256(format!("openledger dev key {i}"));
    PrivateKeySigner::from_bytes(&key).unwrap()
}

/// A dev chain whose node trains the tiny model for dev1 and dev2 (dev9 operates), with datanet
/// 1 (alice's rows, version 1) and a permissioned datanet 2 of dev0's.
struct Chain {
    env: Env,
    work: tempfile::TempDir,
    chain_id: u64,
}

impl Chain {
    fn new(max_queued: usize) -> Chain {
        let env = Env::new();
        let work = tempfile::tempdir().unwrap();
        let model = tiny::tiny_model(&work.path().join("tiny"));
        let path = env.home.join("config.toml");
        let mut config: toml::Table =
            toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let factory = config["factory"].as_table_mut().unwrap();
        assert_eq!(
            factory["enabled"].as_bool(),
            Some(true),
            "init --dev turns jobs on"
        );
        assert_eq!(
            factory["allow"].as_array().unwrap().len(),
            10,
            "init --dev allows the dev accounts"
        );
        factory.insert(
            "base_models".into(),
            toml::Value::Array(vec![model.display().to_string().into()]),
        );
        factory.insert(
            "allow".into(),
            toml::Value::Array(
                [1, 2]
                    .map(|i| dev_signer(i).address().to_string().into())
                    .to_vec(),
            ),
        );
        factory.insert("max_queued".into(), (max_queued as i64).into());
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        Chain {
            env,
            work,
            chain_id: 6736,
        }
    }

    fn datanets(&self) {
        let env = &self.env;
        env.ok(&[
            "--from",
            "dev0",
            "datanet",
            "create",
            "Urban beekeeping",
            "--summary",
            "bees",
        ]);
        env.ok(&[
            "--from",
            "dev1",
            "datanet",
            "contribute",
            "1",
            sample("alice.jsonl").to_str().unwrap(),
        ]);
        env.ok(&["--from", "dev0", "datanet", "approve", "1"]);
        env.ok(&[
            "--from",
            "dev0",
            "datanet",
            "create",
            "Private bees",
            "--summary",
            "p",
            "--permissioned",
        ]);
        env.ok(&[
            "--from",
            "dev0",
            "datanet",
            "contribute",
            "2",
            sample("alice.jsonl").to_str().unwrap(),
        ]);
        env.ok(&["--from", "dev0", "datanet", "approve", "2"]);
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.env.port)
    }

    /// The Authorization header of `who` for `METHOD path` with `body`.
    fn auth(&self, who: &PrivateKeySigner, method: &str, path: &str, body: &[u8]) -> String {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let hash = request_auth::body_hash(body);
        let msg = request_auth::message(self.chain_id, method, path, time, &nonce, &hash);
        let sig = who.sign_message_sync(msg.as_bytes()).unwrap();
        request_auth::header(who.address(), time, &nonce, &hash, &sig)
    }

    /// `POST path` with `body` and the given Authorization header: (status, JSON).
    fn post_raw(&self, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn submit_as(&self, who: &PrivateKeySigner, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        let auth = self.auth(who, "POST", "/v1/factory/jobs", &bytes);
        self.post_raw("/v1/factory/jobs", Some(&auth), &bytes)
    }

    fn get(&self, path: &str) -> Value {
        let mut resp = ureq::get(self.url(path)).call().unwrap();
        resp.body_mut().read_json().unwrap()
    }

    fn job(&self, id: u64) -> Value {
        self.get(&format!("/v1/factory/jobs/{id}"))
    }

    /// Waits until job `id` satisfies `ok`; returns its detail.
    fn wait_for(&self, id: u64, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let j = self.job(id);
            if ok(&j) {
                return j;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never became {what}: {j}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A job TOML for `factory submit --config`: the tiny model, `steps` steps, checkpoints
    /// every 10.
    fn job_toml(&self, name: &str, steps: u64) -> PathBuf {
        let path = self.work.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "base_model = \"tiny\"\nlora_rank = 4\nlora_target = \"q,v\"\nlearning_rate = 0.01\n\
                 max_steps = {steps}\nper_device_train_batch_size = 2\ncutoff_len = 32\nval_size = 4.0\n\
                 eval_steps = 50\nsave_steps = 10\nlogging_steps = 5\nsample_prompts = 1\nsample_max_tokens = 4\n"
            ),
        )
        .unwrap();
        path
    }

    fn submit(&self, from: &str, config: &Path, datanet: &str) -> u64 {
        let out = self.env.ok(&[
            "--from",
            from,
            "factory",
            "submit",
            "--config",
            config.to_str().unwrap(),
            "--datanet",
            datanet,
        ]);
        let job: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(job["status"], "queued", "{job}");
        job["id"].as_u64().unwrap()
    }

    /// `openledger factory jobs ID --follow --json`, started now, read to its end.
    fn follow(&self, id: u64) -> std::thread::JoinHandle<(bool, Vec<Value>, String)> {
        let mut child = Command::new(BIN)
            .arg("--home")
            .arg(&self.env.home)
            .args(["--rpc", &self.url("")])
            .args(["factory", "jobs", &id.to_string(), "--follow", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let events: Vec<Value> = BufReader::new(out)
                .lines()
                .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
                .collect();
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            (status.success(), events, err)
        })
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn jobs_are_signed_allowed_checked_queued_streamed_and_cancelled() {
    let c = Chain::new(1);
    let _node = c.env.start();
    c.datanets();
    let (dev1, dev2, dev5) = (dev_signer(1), dev_signer(2), dev_signer(5));
    let good =
        json!({"config": {"max_steps": 5, "lora_rank": 4, "cutoff_len": 32}, "datanets": ["1@1"]});
    let bytes = serde_json::to_vec(&good).unwrap();

    // Unsigned, by an account the operator did not allow, and replayed: refused.
    let (status, v) = c.post_raw("/v1/factory/jobs", None, &bytes);
    assert_eq!(status, 401, "{v}");
    let (status, v) = c.submit_as(&dev5, &good);
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("[factory] allow"),
        "{v}"
    );
    let auth = c.auth(&dev1, "POST", "/v1/factory/jobs", &bytes);
    let bad = json!({"config": {"lora_rank": 0}, "datanets": ["1@1"]});
    let (status, v) = c.post_raw(
        "/v1/factory/jobs",
        Some(&auth),
        &serde_json::to_vec(&bad).unwrap(),
    );
    assert_eq!(status, 401, "a signature covers its body: {v}");
    let (status, v) = c.post_raw("/v1/factory/jobs", Some(&auth), &bytes);
    assert_eq!(status, 401, "a signed request is used once: {v}");

    // Bad settings, a datanet without a grant, a model the node does not offer, too much.
    let (status, v) = c.submit_as(&dev1, &bad);
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("lora_rank is 0"),
        "{v}"
    );
    let (status, v) = c.submit_as(
        &dev1,
        &json!({"config": {"cutoff_len": 32}, "datanets": ["2@1"]}),
    );
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no access to permissioned datanet 2"),
        "{v}"
    );
    let (status, v) = c.submit_as(
        &dev1,
        &json!({"config": {"base_model": "/etc/passwd"}, "datanets": ["1"]}),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = c.submit_as(
        &dev1,
        &json!({"config": {"datasets": [{"path": "/etc/passwd"}]}, "datanets": ["1"]}),
    );
    assert_eq!(status, 400, "{v}");
    let huge = json!({"config": {"lora_target": "q,".repeat(40_000)}, "datanets": ["1"]});
    let (status, v) = c.submit_as(&dev1, &huge);
    assert_eq!(status, 413, "{v}");
    let err = c.env.fails(&[
        "--from",
        "dev1",
        "factory",
        "submit",
        "--datanet",
        "1",
        "--base",
        "nope",
    ]);
    assert!(err.contains("not one this node trains on"), "{err}");
    assert_eq!(c.get("/v1/factory/jobs"), json!([]), "nothing was queued");

    // One job trains at a time; one more may wait; the queue is then full.
    let long = c.job_toml("long", 90_000);
    let short = c.job_toml("short", 30);
    let first = c.submit("dev1", &long, "1@1");
    c.wait_for(first, "running past its first checkpoint", |j| {
        j["status"] == "running" && j["paths"]["checkpoint"].is_string()
    });
    let second = c.submit("dev2", &short, "1");
    assert_eq!(c.job(second)["status"], "queued");
    assert_eq!(
        c.job(second)["datanets"],
        json!([{"id": 1, "version": 1}]),
        "the latest version, fixed at submission"
    );
    let follower = c.follow(second);
    let (status, v) = c.submit_as(&dev2, &good);
    assert_eq!(status, 429, "{v}");

    // Cancel: not by another submitter; by the submitter, within a step, keeping a checkpoint.
    let err = c
        .env
        .fails(&["--from", "dev2", "factory", "cancel", &first.to_string()]);
    assert!(err.contains("may not cancel"), "{err}");
    c.env
        .ok(&["--from", "dev1", "factory", "cancel", &first.to_string()]);
    let cancelled = c.wait_for(first, "cancelled", |j| j["status"] == "cancelled");
    let step = cancelled["step"].as_u64().unwrap();
    assert!((10..90_000).contains(&step), "{cancelled}");
    let checkpoint = PathBuf::from(cancelled["paths"]["checkpoint"].as_str().unwrap());
    assert!(
        checkpoint.ends_with(format!("step-{step:08}")),
        "the stop checkpointed: {cancelled}"
    );
    assert!(
        cancelled["paths"]["adapter"].is_null(),
        "a cancelled job has no final adapter"
    );

    // The queued job ran next; its follower saw it from `queued` to `done`, live.
    let (ok, events, err) = follower.join().unwrap();
    assert!(ok, "{err}");
    let k = kinds(&events);
    assert_eq!(events[0]["status"], "queued", "{k:?}");
    assert_eq!(events.last().unwrap()["status"], "done", "{k:?}");
    for want in [
        "started",
        "step",
        "eval",
        "samples",
        "checkpoint",
        "finished",
    ] {
        assert!(k.iter().any(|e| e == want), "no {want} event: {k:?}");
    }
    assert!(events.iter().all(|e| e["job"] == second), "{events:?}");
    let done = c.job(second);
    assert_eq!(done["status"], "done");
    assert_eq!(done["outcome"], "finished");
    assert_eq!(
        (done["step"].as_u64(), done["total_steps"].as_u64()),
        (Some(30), Some(30))
    );
    assert!(done["metrics"]["adapter_hash"].is_string(), "{done}");
    assert!(Path::new(done["paths"]["adapter"].as_str().unwrap())
        .join("adapter_model.safetensors")
        .is_file());
    assert_eq!(done["config"]["datasets"][0]["datanet"], "1@1", "{done}");
    assert_eq!(done["submitter"], json!(dev2.address()));

    // A follower that comes after the end gets the log replayed, then the final status.
    let (ok, replay, err) = c.follow(second).join().unwrap();
    assert!(ok, "{err}");
    let logged: Vec<u64> = replay
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        logged,
        vec![5, 10, 15, 20, 25, 30],
        "log.jsonl's lines: {replay:?}"
    );
    assert_eq!(replay.last().unwrap()["status"], "done");

    // The list, newest first, and the CLI's table.
    let list = c.get("/v1/factory/jobs");
    let statuses: Vec<(u64, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["id"].as_u64().unwrap(), j["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, vec![(second, "done"), (first, "cancelled")]);
    let table = c.env.ok(&["factory", "jobs"]);
    assert!(
        table.contains("cancelled") && table.contains("30/30"),
        "{table}"
    );
    let err = c
        .env
        .fails(&["--from", "dev2", "factory", "cancel", &second.to_string()]);
    assert!(err.contains("already ended"), "{err}");
}

#[test]
fn progress_of_a_job_on_a_permissioned_datanet_is_only_for_those_with_access() {
    let c = Chain::new(4);
    let _node = c.env.start();
    c.datanets();
    c.env.ok(&[
        "--from",
        "dev0",
        "datanet",
        "grant-access",
        "2",
        &dev_signer(1).address().to_string(),
    ]);
    let id = c.submit("dev1", &c.job_toml("private", 10), "2@1");
    c.wait_for(id, "done", |j| j["status"] == "done");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let path = format!("/v1/factory/jobs/{id}/events");
    let status = agent.get(c.url(&path)).call().unwrap().status().as_u16();
    assert_eq!(status, 401, "unsigned");
    let auth = c.auth(&dev_signer(2), "GET", &path, b"");
    let status = agent
        .get(c.url(&path))
        .header("Authorization", &auth)
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 403, "no grant");
    let out = c.env.ok(&[
        "--from",
        "dev1",
        "factory",
        "jobs",
        &id.to_string(),
        "--follow",
    ]);
    assert!(out.contains("done at step 10"), "{out}");
}

/// The job's record on disk.
fn status_file(env: &Env, id: u64) -> Value {
    let path = env.home.join(format!("data/factory/jobs/{id}/status.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The step of the job's newest checkpoint (`checkpoints/LATEST`).
fn latest_checkpoint(env: &Env, id: u64) -> Option<u64> {
    let latest = env
        .home
        .join(format!("data/factory/jobs/{id}/train/checkpoints/LATEST"));
    let name = std::fs::read_to_string(latest).ok()?;
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Stops the node as Ctrl-C would (SIGTERM) and waits until its process has exited.
fn terminate(node: common::NodeProc) {
    let pid = node.pid();
    // SAFETY: signals our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + PATIENCE;
    // An exited child stays a zombie (state Z) until it is reaped when `node` drops.
    while std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the node did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stopped_or_killed_node_resumes_the_running_job_from_its_checkpoint_with_the_same_adapter() {
    let c = Chain::new(4);
    let node = c.env.start();
    c.datanets();
    let config = c.job_toml("resumable", 1000);
    let first = c.submit("dev1", &config, "1@1");
    // The same job again, queued behind: the uninterrupted run to compare with.
    let second = c.submit("dev1", &config, "1@1");
    // Follows the first job through the node's deaths.
    let follower = c.follow(first);
    let deadline = Instant::now() + PATIENCE;
    while latest_checkpoint(&c.env, first).is_none() {
        assert!(Instant::now() < deadline, "no checkpoint was written");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(node); // SIGKILL
    let status = status_file(&c.env, first);
    assert_eq!(
        status["status"], "running",
        "the job must still run when the node dies (raise its max_steps): {status}"
    );
    let killed_at = status["step"].as_u64().unwrap();
    assert!(killed_at < 1000, "{status}");
    assert_eq!(status_file(&c.env, second)["status"], "queued");

    // Restarted, the node resumes the job from its checkpoint ...
    let node = c.env.start();
    let running = c.wait_for(first, "training again", |j| {
        j["resumed_from"].is_u64() && j["step"].as_u64() > j["resumed_from"].as_u64()
    });
    let from = running["resumed_from"].as_u64().unwrap();
    assert!(
        from >= 10 && from >= killed_at,
        "resumed from {from}, killed after step {killed_at}"
    );
    // ... and a node stopped with SIGTERM (while a progress stream is open) checkpoints where
    // the job stands and leaves it to resume.
    let mut stream = ureq::get(c.url(&format!("/v1/factory/jobs/{first}/events")))
        .call()
        .unwrap();
    let mut open = BufReader::new(stream.body_mut().as_reader());
    let mut line = String::new();
    open.read_line(&mut line).unwrap();
    assert!(line.starts_with("event: status"), "{line}");
    terminate(node);
    drop(open);
    let status = status_file(&c.env, first);
    assert_eq!(
        status["status"], "running",
        "the job must still run when the node stops (raise its max_steps): {status}"
    );
    let stopped_at = status["step"].as_u64().unwrap();
    assert_eq!(
        latest_checkpoint(&c.env, first),
        Some(stopped_at),
        "{status}"
    );
    assert!(stopped_at > from, "{status}");

    let _node = c.env.start();
    let resumed = c.wait_for(first, "done after the restart", |j| j["status"] == "done");
    assert_eq!(resumed["resumed_from"].as_u64(), Some(stopped_at));
    assert_eq!(resumed["step"].as_u64(), Some(1000));
    let reference = c.wait_for(second, "done", |j| j["status"] == "done");
    assert!(reference["resumed_from"].is_null());
    assert_eq!(
        resumed["metrics"]["adapter_hash"], reference["metrics"]["adapter_hash"],
        "the resumed adapter differs from the uninterrupted run's"
    );
    let weights = |j: &Value| {
        std::fs::read(
            Path::new(j["paths"]["adapter"].as_str().unwrap()).join("adapter_model.safetensors"),
        )
        .unwrap()
    };
    assert_eq!(weights(&resumed), weights(&reference));

    // The follower, reconnecting across the restarts, saw the job to its end, each step once.
    let (ok, events, err) = follower.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(events.last().unwrap()["status"], "done");
    let starts: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| e["start_step"].as_u64().unwrap())
        .collect();
    // (When it connects depends on how fast it reconnects: it may miss whole runs.)
    assert!(
        starts.iter().all(|s| [0, from, stopped_at].contains(s)),
        "{starts:?}"
    );
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{starts:?}");
    let steps: Vec<u64> = events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&1000));
}
