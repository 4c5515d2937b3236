//! The outputs people look at and the evidence governance cites: a run writes a self-contained
//! HTML report (inline SVG, nothing fetched from elsewhere) and non-empty PNG/SVG plots; a
//! two-parameter sweep writes the phase diagram; `report.json` verifies when untouched, and is
//! refused when its results were edited (with or without a matching hash) or when its scenario
//! no longer gives those results.

use openledger_sim::{
    evidence::{value_sha256, verify, Axis, Evidence},
    write_job, write_outputs, Job, Scenario, Sim,
};
use serde_json::Value;
use std::path::Path;

/// A small, quick market (a subsidy for the first days, then demand).
const SMALL: &str = r#"
name = "test report"
days = 16
seed = 5
[subsidy]
initial_open = 500.0
days = 6
[chain]
price_per_prompt_token_open = 0.00005
price_per_completion_token_open = 0.0001
[contributors]
max = 30
initial = 6
arrival_per_day = 1.0
[users]
max = 60
initial = 4
arrival_per_day = 3.0
requests_per_day = 2.0
reference_price_open = 0.035
[stakers]
count = 3
"#;

fn small() -> Scenario {
    Scenario::parse(SMALL, "test").expect("a valid scenario")
}

fn run_into(dir: &Path) -> String {
    let mut sim = Sim::new(&small(), false).unwrap();
    sim.run().unwrap();
    write_outputs(dir, &sim).unwrap();
    std::fs::read_to_string(dir.join("report.json")).unwrap()
}

fn assert_plot(dir: &Path, stem: &str) {
    let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 2000,
        "{stem}.png"
    );
    let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
    assert!(svg.contains("<svg") && svg.len() > 2000, "{stem}.svg");
}

fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "<script",
        "<link",
        "url(",
        "@import",
    ] {
        assert!(
            !lower.contains(bad),
            "the report refers outside itself: {bad}"
        );
    }
}

#[test]
fn a_run_writes_plots_and_a_self_contained_html_report() {
    let dir = tempfile::tempdir().unwrap();
    run_into(dir.path());
    assert_plot(dir.path(), "timeseries");
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("<svg"), "plots are inlined");
    assert!(html.contains("Classification rule") && html.contains("takes off when"));
    assert!(
        html.contains("test report") && html.contains("[subsidy]"),
        "the scenario"
    );
    assert!(
        html.contains("stall") || html.contains("take-off"),
        "the result"
    );
    assert!(
        html.contains("inferences per day"),
        "the series are labelled"
    );
}

#[test]
fn verify_accepts_an_untouched_report_and_refuses_edited_results() {
    let dir = tempfile::tempdir().unwrap();
    let text = run_into(dir.path());
    let ok = verify(&text).expect("an untouched report verifies");
    assert!(ok.results_sha256.starts_with("sha256:"));

    let mut v: Value = serde_json::from_str(&text).unwrap();
    let inferences = v["results"]["totals"]["inferences"].as_u64().unwrap();
    v["results"]["totals"]["inferences"] = (inferences + 1000).into();
    let edited = serde_json::to_string_pretty(&v).unwrap();
    let e = verify(&edited).unwrap_err();
    assert!(e.contains("changed after it was written"), "{e}");
    assert!(
        Evidence::read(&edited).is_err(),
        "gov --evidence refuses it too"
    );

    // Edited results with a matching hash: the re-run gives other results, and says where.
    v["results_sha256"] = value_sha256(&v["results"]).into();
    let forged = serde_json::to_string_pretty(&v).unwrap();
    Evidence::read(&forged).expect("internally consistent");
    let e = verify(&forged).unwrap_err();
    assert!(e.contains("different results"), "{e}");
    assert!(e.contains("results.totals.inferences"), "{e}");

    // The same results claimed for another seed.
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["scenario"]["seed"] = 6.into();
    let e = verify(&serde_json::to_string(&v).unwrap()).unwrap_err();
    assert!(e.contains("different results"), "{e}");
}

#[test]
fn a_two_parameter_sweep_draws_the_phase_diagram() {
    let dir = tempfile::tempdir().unwrap();
    let mut sc = small();
    sc.days = 8;
    sc.subsidy.days = 3;
    let job = Job::Sweep {
        x: Axis {
            param: "subsidy.initial_open".into(),
            values: vec![0.0, 400.0],
        },
        y: Some(Axis {
            param: "chain.contributors_bps".into(),
            values: vec![4000.0, 5000.0, 6000.0],
        }),
        seeds: 2,
    };
    // contributors_bps must keep the split summing to 10,000.
    let e = job.compute(&sc).map(|_| ()).unwrap_err();
    assert!(e.contains("bps"), "{e}");
    let job = Job::Sweep {
        x: Axis {
            param: "subsidy.initial_open".into(),
            values: vec![0.0, 400.0],
        },
        y: Some(Axis {
            param: "users.reference_price_open".into(),
            values: vec![0.01, 0.035, 0.1],
        }),
        seeds: 2,
    };
    let computed = job.compute(&sc).unwrap();
    let ev = write_job(dir.path(), job, &sc, &computed).unwrap();
    assert_plot(dir.path(), "phase");
    assert_plot(dir.path(), "timeseries");
    let points = ev.results.as_array().unwrap();
    assert_eq!(points.len(), 6, "2 × 3 grid");
    assert!(points.iter().all(|p| p["runs"] == 2));
    assert_eq!(points[1]["value"], 0.0);
    assert_eq!(points[1]["value2"], 0.035);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html
        .contains("Take-off probability over subsidy.initial_open and users.reference_price_open"));
    let csv = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
    assert!(csv.starts_with("subsidy.initial_open,users.reference_price_open,seed,"));
    assert_eq!(csv.lines().count(), 1 + 12);
    let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
    verify(&text).expect("a sweep's report verifies");
}
