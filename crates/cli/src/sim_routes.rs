//! The simulator on the node, for the dashboard's Simulator page:
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/sim/example` | a small scenario (TOML) to start from |
//! | `POST /v1/sim/run` | `{"scenario": "<TOML>", "seed": N?}`: runs it once and answers its report |
//!
//! A run answers `summary` (the outcome: `take-off` or `stall` with its reasons, totals, the
//! supply check), `rows` (one per simulated day), `plot_svg` (the time-series plot),
//! `report_html` (the self-contained HTML report) and `results_sha256`; the same files are left
//! in `<home>/data/sim/last/` (as `openledger sim run --out` writes them).
//!
//! Bounded, since a run holds a core until it ends and cannot be stopped halfway: the body is at
//! most [`MAX_BODY`] bytes; a scenario at most [`Limits`] (days, contributors, users, stakers,
//! datanets, validators, and the work they make: the most inference requests and RLHF ratings
//! the whole run could simulate; 400 naming the field past one); it starts from a fresh chain
//! (a `start` read from a chain is for `openledger sim run --from-chain`); and one run at a time
//! (429 with `Retry-After` while one runs), the slot held until the run's work ends even when
//! the client hangs up or the request times out. Every run replaces the files of the one
//! before, so `last/` holds one run's files. Sweeps and threshold searches stay on the command
//! line (`openledger sim sweep|threshold`).

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    routing::{get, post},
    Json, Router,
};
use openledger_node::datanets::ApiError;
use openledger_sim::{write_job, Computed, Job, Scenario};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Largest request body (a scenario is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// The scenario `GET /v1/sim/example` answers.
const EXAMPLE: &str = include_str!("../../../scenarios/quick.toml");

/// The largest scenario the node runs.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_days: u64,
    pub max_contributors: u32,
    pub max_users: u32,
    pub max_stakers: u32,
    pub max_datanets: u32,
    pub max_validators: u32,
    /// Most inference requests the run could simulate: `days × users.max × requests_per_day`.
    pub max_requests: f64,
    /// Most RLHF ratings the run could simulate: `days × rounds_per_day × validators.count`.
    pub max_ratings: f64,
}

impl Default for Limits {
    /// The shipped `scenarios/year.toml` fits (365 days, 2,000 contributors, 8,000 users
    /// making up to 1.46 million requests, 10 validators).
    fn default() -> Self {
        Limits {
            max_days: 365,
            max_contributors: 2_000,
            max_users: 10_000,
            max_stakers: 500,
            max_datanets: 20,
            max_validators: 64,
            max_requests: 3_000_000.0,
            max_ratings: 250_000.0,
        }
    }
}

impl Limits {
    /// Refuses a scenario past a limit, naming the field.
    fn check(&self, sc: &Scenario) -> Result<(), ApiError> {
        let over = |field: &str, got: u64, max: u64| {
            Err(ApiError::BadRequest(format!(
                "{field} = {got} is over this node's limit of {max} for a run from the dashboard; run bigger scenarios with `openledger sim run`"
            )))
        };
        if sc.days > self.max_days {
            return over("days", sc.days, self.max_days);
        }
        let checks = [
            (
                "contributors.max",
                sc.contributors.max,
                self.max_contributors,
            ),
            ("users.max", sc.users.max, self.max_users),
            ("stakers.count", sc.stakers.count, self.max_stakers),
            ("datanets.count", sc.datanets.count, self.max_datanets),
            ("validators.count", sc.validators.count, self.max_validators),
        ];
        for (field, got, max) in checks {
            if got > max {
                return over(field, got.into(), max.into());
            }
        }
        let days = sc.days as f64;
        let work = [
            (
                "users.requests_per_day",
                "inference requests",
                days * f64::from(sc.users.max) * sc.users.requests_per_day,
                self.max_requests,
            ),
            (
                "validators.rounds_per_day",
                "RLHF ratings",
                days * sc.validators.rounds_per_day * f64::from(sc.validators.count),
                self.max_ratings,
            ),
        ];
        for (field, what, got, max) in work {
            if got.is_nan() || got > max {
                return Err(ApiError::BadRequest(format!(
                    "{field}: this scenario could simulate {got:.0} {what} (days × population × rate), over this node's limit of {max:.0} for a run from the dashboard; lower the rate, the population or the days, or run it with `openledger sim run`"
                )));
            }
        }
        if sc.start.is_some() {
            return Err(ApiError::BadRequest(
                "start: a run from the dashboard starts from a fresh chain; run from a chain's state with `openledger sim run --from-chain`".into(),
            ));
        }
        Ok(())
    }
}

/// The simulator service: where runs write, their limits, the one-run-at-a-time slot.
pub struct SimService {
    dir: PathBuf,
    limits: Limits,
    slot: Arc<Semaphore>,
}

impl SimService {
    /// Runs write their files into `dir/last`.
    pub fn new(dir: PathBuf, limits: Limits) -> Arc<SimService> {
        Arc::new(SimService {
            dir,
            limits,
            slot: Arc::new(Semaphore::new(1)),
        })
    }
}

/// The routes over `dir` (`<home>/data/sim`) with the default limits.
pub fn router(dir: PathBuf) -> Router {
    routes(SimService::new(dir, Limits::default()))
}

/// The routes of `svc`.
pub fn routes(svc: Arc<SimService>) -> Router {
    Router::new()
        .route("/v1/sim/example", get(example))
        .route(
            "/v1/sim/run",
            post(run).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .with_state(svc)
}

async fn example() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/toml; charset=utf-8",
        )],
        EXAMPLE,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    scenario: String,
    #[serde(default)]
    seed: Option<u64>,
}

async fn run(State(svc): State<Arc<SimService>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"scenario\": \"<scenario TOML>\", \"seed\": N}}: {e}"
        ))
    })?;
    let mut sc = Scenario::parse(&req.scenario, "the scenario")
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if let Some(seed) = req.seed {
        sc.seed = seed;
    }
    svc.limits.check(&sc)?;
    let permit = svc.slot.clone().try_acquire_owned().map_err(|_| {
        ApiError::RateLimited(
            "a simulation is running on this node already (one at a time); retry when it ends"
                .into(),
            5,
        )
    })?;
    let out = svc.dir.join("last");
    // The slot moves into the blocking task: a run cannot be stopped, so it is held until the
    // run ends even if this request is dropped (client gone, request timeout).
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        simulate(&sc, &out)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the simulation task failed: {e}")))?;
    answer.map(Json)
}

/// Runs `sc` once, writes its files into `out` (replacing an earlier run's) and returns the
/// report as JSON.
fn simulate(sc: &Scenario, out: &std::path::Path) -> Result<Value, ApiError> {
    let internal = |e: String| ApiError::Internal(format!("simulation: {e}"));
    if out.exists() {
        std::fs::remove_dir_all(out)
            .map_err(|e| internal(format!("clearing {}: {e}", out.display())))?;
    }
    let computed = Job::Run.compute(sc).map_err(ApiError::BadRequest)?;
    let ev = write_job(out, Job::Run, sc, &computed).map_err(internal)?;
    let Computed::Run { summary, rows } = computed else {
        return Err(internal("a run gave no summary".into()));
    };
    let read = |name: &str| {
        let p = out.join(name);
        std::fs::read_to_string(&p).map_err(|e| internal(format!("reading {}: {e}", p.display())))
    };
    Ok(json!({
        "summary": summary,
        "rows": rows,
        "plot_svg": read("timeseries.svg")?,
        "report_html": read("report.html")?,
        "results_sha256": ev.results_sha256,
        "dir": out.display().to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "name = \"t\"\ndays = 10\nseed = 3\n[contributors]\nmax = 20\ninitial = 4\n[users]\nmax = 20\ninitial = 4\n[stakers]\ncount = 3\n";

    /// Serves `svc` on a free local port; returns its base URL.
    fn serve(svc: Arc<SimService>) -> (tokio::runtime::Runtime, String) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt.spawn(async move { axum::serve(listener, routes(svc)).await });
        (rt, url)
    }

    fn post(url: &str, body: &str) -> (u16, Value, Option<String>) {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut resp = agent
            .post(format!("{url}/v1/sim/run"))
            .header("content-type", "application/json")
            .send(body)
            .unwrap();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v = resp.body_mut().read_json().unwrap_or(Value::Null);
        (resp.status().as_u16(), v, retry)
    }

    #[test]
    fn a_run_answers_its_report_and_leaves_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, url) = serve(SimService::new(dir.path().into(), Limits::default()));
        let body = json!({"scenario": SMALL, "seed": 9}).to_string();
        let (status, v, _) = post(&url, &body);
        assert_eq!(status, 200, "{v}");
        let label = v["summary"]["outcome"]["label"].as_str().unwrap();
        assert!(label == "take-off" || label == "stall", "{label}");
        assert_eq!(v["summary"]["seed"], 9);
        assert_eq!(v["rows"].as_array().unwrap().len(), 10);
        assert!(v["plot_svg"].as_str().unwrap().contains("<svg"));
        assert!(v["report_html"].as_str().unwrap().contains("<html"));
        assert!(v["results_sha256"].as_str().unwrap().starts_with("sha256:"));
        assert!(dir.path().join("last/report.json").is_file());
        // The same scenario and seed give the same results.
        let (_, again, _) = post(&url, &body);
        assert_eq!(again["results_sha256"], v["results_sha256"]);
    }

    #[test]
    fn scenarios_past_the_limits_or_malformed_are_refused_with_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let (_rt, url) = serve(SimService::new(dir.path().into(), Limits::default()));
        let long = SMALL.replace("days = 10", "days = 366");
        let (status, v, _) = post(&url, &json!({ "scenario": long }).to_string());
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("days = 366"), "{v}");
        let crowd = SMALL.replace(
            "max = 20\ninitial = 4\n[stakers]",
            "max = 20000\ninitial = 4\n[stakers]",
        );
        let (status, v, _) = post(&url, &json!({ "scenario": crowd }).to_string());
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("users.max"), "{v}");
        let (status, v, _) = post(&url, &json!({"scenario": "days = \"many\""}).to_string());
        assert_eq!(status, 400);
        assert!(v["error"].as_str().unwrap().contains("days"), "{v}");
        let (status, _, _) = post(&url, "not json");
        assert_eq!(status, 400);
        let big = json!({ "scenario": "#".repeat(MAX_BODY) }).to_string();
        let (status, _, _) = post(&url, &big);
        assert_eq!(status, 413);
        assert!(!dir.path().join("last").exists());
    }

    #[test]
    fn a_second_run_while_one_runs_is_told_to_retry() {
        let dir = tempfile::tempdir().unwrap();
        let svc = SimService::new(dir.path().into(), Limits::default());
        let (_rt, url) = serve(svc.clone());
        let held = svc.slot.try_acquire().unwrap();
        let (status, v, retry) = post(&url, &json!({ "scenario": SMALL }).to_string());
        assert_eq!(status, 429, "{v}");
        assert_eq!(retry.as_deref(), Some("5"));
        drop(held);
        let (status, _, _) = post(&url, &json!({ "scenario": SMALL }).to_string());
        assert_eq!(status, 200);
    }

    #[test]
    fn the_work_a_run_could_do_is_bounded() {
        let limits = Limits::default();
        let year = Scenario::parse(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scenarios/year.toml"
            ))
            .unwrap(),
            "year.toml",
        )
        .unwrap();
        limits.check(&year).expect("the shipped year scenario runs");
        // Within every population limit, yet 365 × 10,000 × 10,000 requests: days of CPU.
        let flood = SMALL.replace("days = 10", "days = 365").replace(
            "max = 20\ninitial = 4\n[stakers]",
            "max = 10000\ninitial = 4\nrequests_per_day = 10000.0\n[stakers]",
        );
        let sc = Scenario::parse(&flood, "t").unwrap();
        let e = limits.check(&sc).unwrap_err().to_string();
        assert!(e.contains("users.requests_per_day"), "{e}");
        let ratings = format!("{SMALL}[validators]\ncount = 256\nrounds_per_day = 1000.0\n");
        let e = limits
            .check(&Scenario::parse(&ratings, "t").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("validators."), "{e}");
    }

    #[test]
    fn a_dropped_request_keeps_the_slot_until_its_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let svc = SimService::new(dir.path().into(), Limits::default());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // A run long enough to be cut off while it works.
        let long = SMALL
            .replace("days = 10", "days = 60")
            .replace("max = 20", "max = 100");
        let body = Bytes::from(json!({ "scenario": long }).to_string());
        rt.block_on(async {
            let task = tokio::spawn(run(State(svc.clone()), body));
            while svc.slot.available_permits() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            task.abort(); // the client hung up
            let _ = task.await;
            assert_eq!(
                svc.slot.available_permits(),
                0,
                "the run still works, so a second one must wait for it"
            );
            while svc.slot.available_permits() == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        });
        assert!(dir.path().join("last/report.json").is_file());
    }
}
