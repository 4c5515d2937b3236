//! `report.json`, the evidence a governance proposal can cite: the full scenario, what was run
//! on it (one run, a sweep over seeds and parameter values, or a threshold search), the results
//! and the SHA-256 of the results. Every run is deterministic per seed, so anyone can re-run the
//! recorded job ([`verify`]) and check that it gives the same results, and that the results in
//! the file are the ones hashed. `gov propose --evidence report.json` records the SHA-256 of
//! the report file itself ([`file_sha256`]) in the proposal's description.
//!
//! The results hash is SHA-256 over the results' compact JSON as `serde_json` writes a
//! `Value`. Fractional numbers in the results are rounded to 15 significant digits first: a
//! decimal that short reads back into exactly the same `f64` (serde_json's default parser is
//! only exact on that fast path), so a report read back from its file hashes the same.

use crate::{
    plot::Phase,
    report::{DayRow, Summary},
    scenario::Scenario,
    sweep::{self, Grid, Threshold},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The report format's name and version.
pub const FORMAT: &str = "openledger-sim-report/1";

/// One swept parameter: its dotted path and its values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Axis {
    pub param: String,
    pub values: Vec<f64>,
}

/// What was run on the scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Job {
    /// One run with the scenario's seed.
    Run,
    /// Every value of `x` (and of `y`: the grid) over `seeds` seeds from the scenario's seed.
    Sweep {
        x: Axis,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        y: Option<Axis>,
        seeds: u32,
    },
    /// The threshold search of `param` in `lo..hi`.
    Threshold {
        param: String,
        lo: f64,
        hi: f64,
        iterations: u32,
        seeds: u32,
    },
}

/// A job's results, with what the plots need.
pub enum Computed {
    Run {
        summary: Box<Summary>,
        rows: Vec<DayRow>,
    },
    Sweep(Grid),
    Threshold(Threshold),
}

impl Computed {
    /// The results recorded in the report.
    pub fn results(&self) -> Result<Value, String> {
        match self {
            Computed::Run { summary, .. } => serde_json::to_value(summary),
            Computed::Sweep(g) => serde_json::to_value(&g.points),
            Computed::Threshold(t) => serde_json::to_value(t),
        }
        .map(canonical)
        .map_err(|e| format!("serialising the results: {e}"))
    }
}

/// `v` with every fractional number rounded to 15 significant digits (see the module docs).
fn canonical(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let r: f64 = format!("{x:.14e}").parse().unwrap_or(x);
            serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(canonical).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, canonical(v))).collect()),
        other => other,
    }
}

impl Job {
    /// Runs the job on `sc` (in parallel where it has several runs).
    pub fn compute(&self, sc: &Scenario) -> Result<Computed, String> {
        match self {
            Job::Run => {
                let (summary, rows) = sweep::run_full(sc)?;
                Ok(Computed::Run {
                    summary: Box::new(summary),
                    rows,
                })
            }
            Job::Sweep { x, y, seeds } => Ok(Computed::Sweep(sweep::grid(
                sc,
                (&x.param, &x.values),
                y.as_ref().map(|a| (a.param.as_str(), a.values.as_slice())),
                *seeds,
            )?)),
            Job::Threshold {
                param,
                lo,
                hi,
                iterations,
                seeds,
            } => Ok(Computed::Threshold(sweep::threshold(
                sc,
                param,
                *lo,
                *hi,
                *iterations,
                *seeds,
            )?)),
        }
    }

    /// The seeds the job runs.
    pub fn seeds(&self, sc: &Scenario) -> Vec<u64> {
        let n = match self {
            Job::Run => 1,
            Job::Sweep { seeds, .. } | Job::Threshold { seeds, .. } => *seeds,
        };
        (0..n as u64).map(|i| sc.seed.wrapping_add(i)).collect()
    }

    /// The phase diagram of a two-parameter sweep.
    pub fn phase(&self, c: &Computed) -> Option<Phase> {
        match (self, c) {
            (Job::Sweep { x, y: Some(y), .. }, Computed::Sweep(g)) => {
                Some(g.phase((&x.param, &x.values), (&y.param, &y.values)))
            }
            _ => None,
        }
    }
}

/// The report file's contents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    pub format: String,
    pub job: Job,
    pub scenario: Scenario,
    /// The seeds run (the scenario's seed and the ones after it).
    pub seeds: Vec<u64>,
    pub results: Value,
    /// `sha256:<hex>` of the results (see the module documentation).
    pub results_sha256: String,
}

/// `sha256:<hex>` of a JSON value's compact text.
pub fn value_sha256(v: &Value) -> String {
    format!("sha256:{}", hex(&Sha256::digest(v.to_string().as_bytes())))
}

/// `sha256:<hex>` of a file's bytes (what a proposal records).
pub fn file_sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Evidence {
    /// The report of `job` on `sc` with its computed results.
    pub fn new(job: Job, sc: &Scenario, computed: &Computed) -> Result<Evidence, String> {
        let results = computed.results()?;
        Ok(Evidence {
            format: FORMAT.into(),
            seeds: job.seeds(sc),
            job,
            scenario: sc.clone(),
            results_sha256: value_sha256(&results),
            results,
        })
    }

    /// The report as pretty JSON (what `report.json` holds).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads a report and checks, without re-running anything, that it is in this format, that
    /// its scenario is valid and that its results hash to the recorded hash.
    pub fn read(text: &str) -> Result<Evidence, String> {
        let ev: Evidence = serde_json::from_str(text)
            .map_err(|e| format!("not a simulator report ({FORMAT}): {e}"))?;
        if ev.format != FORMAT {
            return Err(format!(
                "the report's format is {:?}; this simulator reads {FORMAT:?}",
                ev.format
            ));
        }
        ev.scenario
            .validate()
            .map_err(|e| format!("the report's scenario: {e}"))?;
        let h = value_sha256(&ev.results);
        if h != ev.results_sha256 {
            return Err(format!(
                "the report's results were changed after it was written: they hash to {h}, the report records {}",
                ev.results_sha256
            ));
        }
        Ok(ev)
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub results_sha256: String,
    pub runs: usize,
}

/// Reads a report, re-runs its job on its scenario and checks that the results are the recorded
/// ones. The error says which check failed and, for a different re-run, the first field where
/// the results differ.
pub fn verify(text: &str) -> Result<Verified, String> {
    let ev = Evidence::read(text)?;
    let computed = ev.job.compute(&ev.scenario)?;
    let again = computed.results()?;
    let h = value_sha256(&again);
    if h != ev.results_sha256 {
        let at = first_difference(&ev.results, &again, String::from("results"))
            .unwrap_or_else(|| "results".into());
        return Err(format!(
            "re-running the report's job gives different results (hash {h}, recorded {}); first difference at {at}",
            ev.results_sha256
        ));
    }
    let runs = match &ev.job {
        Job::Run => 1,
        Job::Sweep { x, y, seeds } => {
            x.values.len() * y.as_ref().map_or(1, |y| y.values.len()) * *seeds as usize
        }
        Job::Threshold { .. } => match &computed {
            Computed::Threshold(t) => t.tried.iter().map(|t| t.2 as usize).sum(),
            _ => 0,
        },
    };
    Ok(Verified {
        results_sha256: h,
        runs,
    })
}

/// The path of the first place where two JSON values differ, with both values.
fn first_difference(a: &Value, b: &Value, path: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(va, vb, format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k} (not in the re-run)")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k} (only in the re-run)"))
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_difference(va, vb, format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len())
                .then(|| format!("{path} ({} entries recorded, {} re-run)", x.len(), y.len()))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: recorded {a}, re-run {b}")),
    }
}
