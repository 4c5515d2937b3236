//! `openledger sim calibrate` on SmolLM2: a tiny calibration (two subset sizes, two
//! ModelFactory steps each) writes the fitted curve as a scenario `[quality]` section that the
//! simulator reads back, with the points and the command in calibration.json; the base model's
//! loss is the same held-out set's for both sizes.

mod common;

use common::{openlora::model_path, sample, Env};
use openledger_sim::Scenario;
use serde_json::Value;

#[test]
fn a_tiny_calibration_writes_a_fit_the_simulator_reads_back() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cal");
    let text = env.ok(&[
        "sim",
        "calibrate",
        "--data",
        sample("qa/erin.jsonl").to_str().unwrap(),
        "--base-model",
        model_path().to_str().unwrap(),
        "--sizes",
        "1,16",
        "--val",
        "4",
        "--steps",
        "2",
        "--batch",
        "8",
        "--cutoff",
        "64",
        "--learning-rate",
        "0.002",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(text.contains("L(n) = "), "{text}");

    let toml = std::fs::read_to_string(out.join("quality.toml")).unwrap();
    assert!(
        toml.contains("sim calibrate"),
        "the command is recorded:\n{toml}"
    );
    let sc = Scenario::parse(&toml, "quality.toml").expect("a valid scenario [quality] section");
    let cal: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("calibration.json")).unwrap())
            .unwrap();
    let f = &cal["fit"];
    assert_eq!(sc.quality.a, f["a"].as_f64().unwrap());
    assert_eq!(sc.quality.b, f["b"].as_f64().unwrap());
    assert_eq!(sc.quality.c, 0.3, "two sizes hold c at 0.3");
    let pts = cal["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    // The same held-out rows (batched in another order, so equal to float rounding).
    let (i0, i1) = (
        pts[0]["initial_val_loss"].as_f64().unwrap(),
        pts[1]["initial_val_loss"].as_f64().unwrap(),
    );
    assert!((i0 - i1).abs() < 1e-6 * i0, "{i0} vs {i1}");
    assert_eq!(
        sc.quality.base_loss,
        pts[0]["initial_val_loss"].as_f64().unwrap()
    );
    assert!(pts.iter().all(|p| p["steps"] == 2), "{pts:?}");
    // The curve passes through both measured points (two points, two free parameters).
    for p in pts {
        let n = p["rows"].as_f64().unwrap();
        let l = sc.quality.a + sc.quality.b * n.powf(-sc.quality.c);
        assert!((l - p["val_loss"].as_f64().unwrap()).abs() < 1e-9, "{p}");
    }
}
